//! Everything that crosses a wire: identifiers, client requests and replies, peer (Raft)
//! messages, and the commands stored in the replicated log.
//!
//! These types are plain data. They carry no behaviour that could differ between the simulator
//! and a real deployment, so the same bytes mean the same thing in both.

use crate::node::lock_table::WriteKind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A server's identity, `s1`, `s2`, ... Fixed for the life of the cluster.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(pub u32);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A cluster-unique client identity, assigned by the replicated state on `Hello`.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// Where a server sends a reply to a client: an opaque handle chosen by the driver (a client
/// index in the simulator, a connection id over TCP). Servers pass it along, never interpret it.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientAddr(pub u64);

/// A registered client's secret: 128 bits that the leader draws from its seeded RNG when it
/// appends the client's registration, replicated with it so that every later leader can check
/// it. Every request after `hello` must carry it.
///
/// The value travels in the log, in snapshots and in peer frames, so it serializes (as 32
/// lowercase hex digits). It never shows in `Debug` or `Display`, so that no log line or panic
/// message can leak it, and it compares in constant time ([`subtle`]), so that a wrong guess
/// takes as long as a nearly right one.
#[derive(Copy, Clone, Eq)]
pub struct ClientSecret([u8; CLIENT_SECRET_BYTES]);

/// Bytes in a [`ClientSecret`].
pub const CLIENT_SECRET_BYTES: usize = 16;

impl ClientSecret {
    pub const fn from_bytes(bytes: [u8; CLIENT_SECRET_BYTES]) -> ClientSecret {
        ClientSecret(bytes)
    }

    /// The secret as 32 lowercase hex digits: the one way to show it, for the wire and for the
    /// single line that hands it to its client's operator.
    pub fn to_hex(&self) -> String {
        self.hex_digits().as_str().to_string()
    }

    /// The 32 lowercase hex digits on the stack: every forwarded request serializes the
    /// secret, so this path allocates nothing.
    fn hex_digits(&self) -> HexDigits {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 2 * CLIENT_SECRET_BYTES];
        for (pair, byte) in digits.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        HexDigits(digits)
    }

    /// Reads 32 hex digits (either case). The error says what is wrong, never echoing the text.
    pub fn parse_hex(text: &str) -> Result<ClientSecret, String> {
        if text.len() != 2 * CLIENT_SECRET_BYTES {
            return Err(format!(
                "a client secret is {} hex digits; this one has {} characters",
                2 * CLIENT_SECRET_BYTES,
                text.chars().count()
            ));
        }
        // Digits only, byte by byte: a sign or a space is no digit, so that no two spellings
        // (other than the letters' case) name one secret.
        let mut bytes = [0u8; CLIENT_SECRET_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            match (hex_value(pair[0]), hex_value(pair[1])) {
                (Some(high), Some(low)) => *byte = (high << 4) | low,
                _ => {
                    return Err(
                        "a client secret is made of hex digits 0-9 and a-f only".to_string()
                    );
                }
            }
        }
        Ok(ClientSecret(bytes))
    }
}

/// A secret's 32 hex digits, ASCII by construction.
struct HexDigits([u8; 2 * CLIENT_SECRET_BYTES]);

impl HexDigits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// The value of one hex digit (either case), or `None` for any other byte.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl ClientSecret {
    /// Whether a request carrying `given` proves the identity registered with `issued`: both
    /// present and equal, compared in constant time. A registration without a secret (from
    /// before secrets existed) is proved by nothing.
    pub fn proves(given: Option<ClientSecret>, issued: Option<ClientSecret>) -> bool {
        matches!((given, issued), (Some(given), Some(issued)) if given == issued)
    }
}

impl PartialEq for ClientSecret {
    fn eq(&self, other: &ClientSecret) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

impl Serialize for ClientSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.hex_digits().as_str())
    }
}

impl<'de> Deserialize<'de> for ClientSecret {
    /// Reads the digits where the deserializer holds them, without copying them into a
    /// `String` first: every request a follower forwards carries a secret.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ClientSecret, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ClientSecret;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ClientSecret, E> {
                ClientSecret::parse_hex(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Longest lock name, in bytes. The wire codec and scenario files use this very constant.
pub const LOCK_NAME_BYTES_MAX: usize = 256;

/// Most waiters one lock's queue holds; one more acquire is refused `queue_full`.
pub const QUEUE_WAITERS_PER_LOCK_MAX: usize = 1_024;

/// Longest wait an acquire may ask for, in milliseconds: one hour. A longer one is refused
/// `bad_request` before anything reaches the log. Why a bound at all: a waiter whose client
/// went away (its connection closed, its process killed without a session TTL) keeps its place
/// until its wait runs out, so the bound is how long a forgotten waiter can hold up a queue.
/// An hour is far beyond any wait worth blocking a thread for; a client that means to wait
/// longer acquires again when its wait runs out (`lockstep lock` does so without `--wait`).
pub const ACQUIRE_WAIT_MS_MAX: u64 = 3_600_000;

/// Most holders one lock has at once, and so the capacity of a lock that declared no permits
/// (docs/design.md, "Shared locks and semaphores").
pub const SHARED_HOLDERS_PER_LOCK_MAX: u32 = 64;

/// Largest `permits` a claim may name: a semaphore never holds more than a plain lock can.
pub const PERMITS_MAX: u32 = SHARED_HOLDERS_PER_LOCK_MAX;

/// How a holder holds a lock: alone, or together with other shared holders.
#[derive(
    Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Takes the lock's whole capacity: one holder (a writer). All there was before modes.
    #[default]
    Exclusive,
    /// Takes one unit of the capacity (a reader, or one permit of a semaphore).
    Shared,
}

impl Mode {
    pub fn is_exclusive(&self) -> bool {
        *self == Mode::Exclusive
    }

    /// The mode as the wire and the docs name it, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

/// What a preempt or an acquire claims: its mode, and the permits it declares the lock to have
/// (docs/design.md, "Shared locks and semaphores"). The default, exclusive with no permits, is
/// the claim every request made before modes existed; it is left out of serialized entries so
/// they read and write as before.
///
/// Contract: `permits`, when given, MUST be within `1..=PERMITS_MAX` to be appended; apply
/// rejects any other value (`Rejection::BadPermits`) rather than trusting it.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Claim {
    #[serde(default, skip_serializing_if = "Mode::is_exclusive")]
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
}

impl Claim {
    /// Exclusive, no permits: a plain lock, as before modes.
    pub const EXCLUSIVE: Claim = Claim {
        mode: Mode::Exclusive,
        permits: None,
    };

    /// Shared, no permits: a reader of a readers-writer lock.
    pub const SHARED: Claim = Claim {
        mode: Mode::Shared,
        permits: None,
    };

    /// One permit of a semaphore of `permits`.
    pub fn semaphore(permits: u32) -> Claim {
        Claim {
            mode: Mode::Shared,
            permits: Some(permits),
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Claim::EXCLUSIVE
    }

    /// Whether the declared permits, if any, are within the limits.
    pub fn permits_are_valid(&self) -> bool {
        self.permits
            .is_none_or(|permits| (1..=PERMITS_MAX).contains(&permits))
    }

    /// How many units a lock declared with `permits` has: its permits, or the holder bound.
    pub fn capacity(permits: Option<u32>) -> u32 {
        permits.unwrap_or(SHARED_HOLDERS_PER_LOCK_MAX)
    }
}

/// A lock's name. Shared, because the same name travels through log entries, messages and the
/// lock table many times.
pub type LockName = Arc<str>;

/// Raft term.
pub type Term = u64;

/// Position in the replicated log, starting at 1. Index 0 means "before the first entry".
pub type LogIndex = u64;

/// How fresh a `check` must be.
#[derive(
    Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Answered from the receiving server's own replica: fast, may lag (the seed design).
    #[default]
    Local,
    /// Answered only after the leader confirmed its leadership (read index) and the answering
    /// server applied up to that index.
    Linearizable,
}

/// What a client asks the lock service to do.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Operation {
    Preempt {
        lock: LockName,
        #[serde(default, skip_serializing_if = "Claim::is_default")]
        claim: Claim,
    },
    Release {
        lock: LockName,
    },
    Check {
        lock: LockName,
        consistency: Consistency,
    },
    /// A blocking acquire (docs/design.md, "Fair blocking acquire"): granted at once if free;
    /// otherwise queued in FIFO order for at most `wait_ms` (0: refused at once, like a
    /// preempt).
    Acquire {
        lock: LockName,
        wait_ms: u64,
        #[serde(default, skip_serializing_if = "Claim::is_default")]
        claim: Claim,
    },
    /// Stops the client's wait for `lock`: its acquire is answered `cancelled`.
    Cancel {
        lock: LockName,
    },
}

impl Operation {
    pub fn lock(&self) -> &LockName {
        match self {
            Operation::Preempt { lock, .. } | Operation::Release { lock } => lock,
            Operation::Check { lock, .. } => lock,
            Operation::Acquire { lock, .. } | Operation::Cancel { lock } => lock,
        }
    }

    /// An acquire's wait; `None` for every other operation.
    pub fn acquire_wait(&self) -> Option<std::time::Duration> {
        match self {
            Operation::Acquire { wait_ms, .. } => Some(std::time::Duration::from_millis(*wait_ms)),
            _ => None,
        }
    }

    /// True for the operations that go through the log: all but `check`.
    pub fn is_write(&self) -> bool {
        !matches!(self, Operation::Check { .. })
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Operation::Preempt { .. } => "preempt",
            Operation::Release { .. } => "release",
            Operation::Check { .. } => "check",
            Operation::Acquire { .. } => "acquire",
            Operation::Cancel { .. } => "cancel",
        }
    }
}

/// The answer to an operation, as the lock table decided it.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// Preempt succeeded. `token` is the log index of the grant: a fencing token, strictly
    /// increasing per lock.
    Granted { token: LogIndex },
    /// Preempt refused: another client holds the lock.
    HeldBy { owner: ClientId },
    /// Release succeeded.
    Released,
    /// Release refused: the caller does not hold the lock.
    NotOwner,
    /// Check: nobody holds the lock.
    Free,
    /// Check: `owner` holds the lock, granted with fencing token `token`.
    Owner { owner: ClientId, token: LogIndex },
    /// Acquire: waiting in the lock's queue. Only the deduplication table holds it; the client
    /// hears the decision that follows (`granted`, `timed_out`, `cancelled`).
    Queued,
    /// Acquire: the wait ran out on the leader's clock, committed; never granted after.
    TimedOut,
    /// Acquire stopped by its client's cancel (or any newer write of that client); also the
    /// answer to a cancel that stopped one.
    Cancelled,
    /// Cancel: the client was not waiting for that lock.
    NotWaiting,
    /// Preempt or acquire refused: the lock is in use with other permits declared (`None`: a
    /// plain lock, no permits). Nothing changed.
    PermitsMismatch { permits: Option<u32> },
    /// Check: `holders` clients hold the lock in shared mode; `permits` as declared.
    Shared { holders: u32, permits: Option<u32> },
}

/// A client request. `seq` is chosen by the client; replies echo it. A retry reuses the seq,
/// which is what makes retries exactly-once.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientRequest {
    pub seq: u64,
    /// The newest state (applied log index) this client has seen an answer from. A local check
    /// is answered only from a replica that has applied at least this far, so a client that
    /// moves to a lagging server never sees a lock's history go backwards (monotonic reads).
    #[serde(default)]
    pub seen_index: LogIndex,
    /// The leader term this client believes current (the highest `term` it has seen in a
    /// reply). A write is appended only by the leader of exactly this term; any other server
    /// answers `NotLeader` with the current term, and the client resends with it. Together
    /// with the client ignoring replies from terms older than its request, this is what lets a
    /// leader refuse a preempt with a read instead of a log append (see `Server`).
    #[serde(default)]
    pub term: Term,
    pub body: RequestBody,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestBody {
    /// First contact: asks the cluster for a client id. `nonce` lets the client recognise the
    /// answer; a retried hello may allocate a second id, which is harmless (it owns nothing).
    /// `ttl_ms` asks for a session that expires after that long without a renewal (within the
    /// server's `session_ttl_min..=session_ttl_max`); `None` is a session that never expires.
    Hello {
        nonce: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// Renews the client's session. Costs no log entry in the common case: the leader answers
    /// it after a heartbeat round confirms it still leads (see `Server`), with `KeptAlive`.
    Keepalive {
        client: ClientId,
        #[serde(default)]
        secret: Option<ClientSecret>,
    },
    /// A lock operation by a registered client, which proves who it is with the secret its
    /// welcome gave it. `None` (a request that carries none) is answered `Unauthorized`, as a
    /// wrong one is.
    Op {
        client: ClientId,
        #[serde(default)]
        secret: Option<ClientSecret>,
        op: Operation,
    },
}

/// A server's reply to a client request, echoing the request's `seq`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientReply {
    pub seq: u64,
    /// The applied log index the answer reflects (for a write, at least its own entry).
    #[serde(default)]
    pub index: LogIndex,
    /// The replying server's current term. A client ignores replies from a term older than
    /// the `term` of its request: they answer an attempt it has already given up on.
    #[serde(default)]
    pub term: Term,
    pub body: ReplyBody,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody {
    /// The client's id, and the secret every later request of it must carry.
    Welcome {
        nonce: u64,
        client: ClientId,
        secret: ClientSecret,
    },
    Outcome(Outcome),
    /// The answer to a keepalive: the session lives, and lived when the leader that answered
    /// was still the leader after it received the keepalive. `ttl_ms` is the session's TTL
    /// (`None`: the session never expires).
    KeptAlive {
        ttl_ms: Option<u64>,
    },
    Error(ServiceError),
}

/// Why a server could not serve a request. All of these are retryable elsewhere or later.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ServiceError {
    /// No leader could serve the request through this server right now: it knows no leader
    /// (an election is under way), leadership changed while the request waited, or this replica
    /// did not catch up in time for a local check. Retry, possibly on another server.
    #[error("no leader could serve this request here right now; retry, possibly elsewhere")]
    Unavailable,
    #[error("the leader's queue of uncommitted work is full")]
    Overloaded,
    #[error("the request's sequence number is older than the client's latest applied one")]
    StaleRequest,
    /// The write named another term than the current leader's. `leader` (when known) leads
    /// in `term`: resend the same seq with this term, there or through any server.
    #[error("the request's term is not the current leader's; resend with term {term}")]
    NotLeader {
        leader: Option<ServerId>,
        term: Term,
    },
    /// The request breaks a limit the wire codec also enforces (an empty or overlong lock
    /// name). Never retried: the request must change.
    #[error("the request is malformed: {reason}")]
    BadRequest { reason: String },
    /// No `hello` ever issued this client id. Nothing was applied. Never retried: say hello.
    #[error("no hello issued {client}; say hello to get a client id")]
    UnknownClient { client: ClientId },
    /// The request's secret is missing, or is not the one its client id was issued with.
    /// Nothing was applied. Never retried: use the secret the welcome gave.
    #[error("the request's secret is missing or is not the one issued with its client id")]
    Unauthorized,
    /// This client already used `seq` for another operation or another lock. A retry must
    /// repeat its operation exactly; a new operation needs a new, higher seq. Nothing was
    /// applied.
    #[error("seq {seq} was already used by this client for another operation")]
    SeqReused { seq: u64 },
    /// The client's session expired (a replicated decision: its locks were released). Nothing
    /// was applied. Never retried with this id: say hello again for a new one.
    #[error("the session of {client} expired; its locks were released; say hello again")]
    SessionExpired { client: ClientId },
    /// The lock was freed by a session's expiry less than the server's `lock_delay` ago, and
    /// is not granted to anyone until the delay has passed. Nothing was applied. Retry the same
    /// seq after `retry_after_ms`.
    #[error("the lock was freed by an expired session; retry after {retry_after_ms} ms")]
    LockDelayed { retry_after_ms: u64 },
    #[error("the lock's queue already holds {waiters_max} waiters; retry later")]
    QueueFull { waiters_max: u32 },
}

/// A command in the replicated log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Appended by every new leader, so that it can commit entries of earlier terms (Raft §5.4.2)
    /// and serve read-index reads.
    Noop,
    /// Allocates the next client id, issued with `secret`. `None` only in entries written
    /// before secrets existed: such a client can never prove who it is.
    Register {
        nonce: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<ClientSecret>,
        /// The session's TTL; `None` (and every entry from before sessions) never expires.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    Preempt {
        client: ClientId,
        seq: u64,
        lock: LockName,
        /// Absent (exclusive, no permits) in every entry written before modes.
        #[serde(default, skip_serializing_if = "Claim::is_default")]
        claim: Claim,
    },
    Release {
        client: ClientId,
        seq: u64,
        lock: LockName,
    },
    /// The leader decided that `client`'s session expired: applying it releases every lock the
    /// client holds and refuses the client's later requests (`SessionExpired`). An expire for
    /// a client that is unknown, has no TTL or has already expired changes nothing.
    Expire { client: ClientId },
    /// The leader heard no renewal from these sessions for at least `silent_ms` each (true
    /// time, converted down for clock drift). Every server notes, in volatile memory, its own
    /// clock when it appended this entry; a later leader counts such a session's deadline
    /// from there instead of from its own takeover. See docs/design.md, "Sessions".
    MarkSilent { sessions: Vec<SilentSession> },
    /// A renewal of a session marked silent. A leader acknowledges such a renewal only once
    /// this entry is committed, so that a later leader never trusts a mark an acknowledged
    /// renewal came after.
    Revive { client: ClientId },
    /// A blocking acquire: grants a free lock, refuses a held one when `wait_ms` is 0, and
    /// otherwise enqueues the client at the tail of the lock's FIFO queue.
    Acquire {
        client: ClientId,
        seq: u64,
        lock: LockName,
        wait_ms: u64,
        /// Absent (exclusive, no permits) in every entry written before modes.
        #[serde(default, skip_serializing_if = "Claim::is_default")]
        claim: Claim,
    },
    /// The leader's decision that the waiter (`client`, `seq`) on `lock` waited long enough.
    /// Applies to nothing if the waiter was granted or left the queue first.
    Timeout {
        client: ClientId,
        seq: u64,
        lock: LockName,
    },
    /// A client's request to stop waiting for `lock`.
    Cancel {
        client: ClientId,
        seq: u64,
        lock: LockName,
    },
    /// The leader's hand-over of a lock freed by expiry to the head of its queue, once its
    /// lock-delay passed. Applies to nothing if the lock is held or has no waiters.
    HandOver { lock: LockName },
}

impl Command {
    /// A preempt's or acquire's claim; the default (exclusive, no permits) for anything else.
    pub fn claim_or_default(&self) -> Claim {
        match self {
            Command::Preempt { claim, .. } | Command::Acquire { claim, .. } => *claim,
            _ => Claim::EXCLUSIVE,
        }
    }

    /// The client write this entry carries: who asked, under which seq, what, and for which
    /// lock. `None` for the entries no client's write is (no-ops, registrations, and the
    /// leader's session and queue decisions).
    pub fn client_write(&self) -> Option<(ClientId, u64, WriteKind, &LockName)> {
        match self {
            Command::Preempt {
                client, seq, lock, ..
            } => Some((*client, *seq, WriteKind::Preempt, lock)),
            Command::Release { client, seq, lock } => {
                Some((*client, *seq, WriteKind::Release, lock))
            }
            Command::Acquire {
                client, seq, lock, ..
            } => Some((*client, *seq, WriteKind::Acquire, lock)),
            Command::Cancel { client, seq, lock } => Some((*client, *seq, WriteKind::Cancel, lock)),
            Command::Noop
            | Command::Register { .. }
            | Command::Expire { .. }
            | Command::MarkSilent { .. }
            | Command::Revive { .. }
            | Command::Timeout { .. }
            | Command::HandOver { .. } => None,
        }
    }
}

/// One session in a [`Command::MarkSilent`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct SilentSession {
    pub client: ClientId,
    /// No renewal reached the marking leader for at least this long, in true time.
    pub silent_ms: u64,
}

/// One log entry.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub command: Command,
}

/// What applying a command produced.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyResult {
    /// Noop: nothing to report.
    Nothing,
    Registered {
        client: ClientId,
    },
    Outcome {
        outcome: Outcome,
        duplicate: bool,
    },
    /// A request older than the client's latest applied one: it had no effect.
    Stale,
    /// A request no leader should have appended (an unknown client, a reused seq, a lock name
    /// over the limit), found in the log all the same: it is refused here too, identically on
    /// every replica, and changes nothing. Apply is total: a committed entry never panics.
    Rejected {
        rejection: Rejection,
    },
    /// An expire ended `client`'s session and released `released` locks (their names are in
    /// the table: `LockTable::expired_session`). Every replica computes the same list.
    Expired {
        client: ClientId,
        released: u32,
    },
}

/// Why applying a command refused it. See [`ApplyResult::Rejected`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The client id was never issued by a committed registration.
    UnknownClient,
    /// The client's last applied request had this seq, with another operation or lock.
    SeqReused,
    /// The lock name is empty or longer than [`LOCK_NAME_BYTES_MAX`].
    BadLockName,
    /// The client's session expired earlier in the log.
    SessionExpired,
    /// The lock's queue already holds [`QUEUE_WAITERS_PER_LOCK_MAX`] waiters.
    QueueFull,
    /// The claim's permits are outside `1..=PERMITS_MAX`.
    BadPermits,
}

impl Rejection {
    /// The rejection as entries and traces name it (its serialized form), for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Rejection::UnknownClient => "unknown_client",
            Rejection::SeqReused => "seq_reused",
            Rejection::BadLockName => "bad_lock_name",
            Rejection::SessionExpired => "session_expired",
            Rejection::QueueFull => "queue_full",
            Rejection::BadPermits => "bad_permits",
        }
    }

    /// The error a client hears for a request its entry was rejected for.
    pub fn service_error(self, client: ClientId, seq: u64) -> ServiceError {
        match self {
            Rejection::UnknownClient => ServiceError::UnknownClient { client },
            Rejection::SeqReused => ServiceError::SeqReused { seq },
            Rejection::BadLockName => ServiceError::BadRequest {
                reason: format!("the lock name must be 1 to {LOCK_NAME_BYTES_MAX} bytes long"),
            },
            Rejection::SessionExpired => ServiceError::SessionExpired { client },
            Rejection::QueueFull => ServiceError::QueueFull {
                waiters_max: QUEUE_WAITERS_PER_LOCK_MAX as u32,
            },
            Rejection::BadPermits => ServiceError::BadRequest {
                reason: format!("permits must be 1 to {PERMITS_MAX}"),
            },
        }
    }
}

/// Messages between servers. The `term` fields follow Raft (§5.1): a higher term seen anywhere
/// makes the receiver a follower of that term.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerMessage {
    /// Pre-vote (Raft thesis §9.6): "would you vote for me in `term`?" Changes no state.
    PreVote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    PreVoteResponse {
        term: Term,
        granted: bool,
    },
    RequestVote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    VoteResponse {
        term: Term,
        granted: bool,
    },
    AppendEntries {
        term: Term,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        /// Heartbeat round, echoed in the response. Read-index reads wait for a majority to
        /// acknowledge a round started after the read arrived.
        round: u64,
        /// Whether the leader counts on this follower's acknowledgement to commit. A driver
        /// may hold the durability (and so the acknowledgement) of a non-urgent append for a
        /// short, bounded while, to share one disk flush with what follows; an urgent one is
        /// flushed at once. Only timing depends on it: an acknowledgement still leaves only
        /// once what it promises is durable. Absent (from an older peer) means urgent.
        #[serde(default = "urgent_by_default")]
        urgent: bool,
    },
    AppendResponse {
        term: Term,
        success: bool,
        /// On success: the follower's log matches the leader's up to here.
        match_index: LogIndex,
        /// On failure: where the leader should try next (conflict optimisation, Raft §5.3).
        conflict_index: LogIndex,
        /// On failure: the term of the follower's conflicting entry, if it had one there.
        conflict_term: Option<Term>,
        round: u64,
    },
    /// A follower hands a client request to the leader. The reply comes back as `ForwardReply`.
    Forward {
        client: ClientAddr,
        request: ClientRequest,
    },
    ForwardReply {
        client: ClientAddr,
        reply: ClientReply,
    },
    /// A follower asks the leader for a confirmed read index on behalf of a linearizable check.
    ReadIndexRequest {
        id: u64,
    },
    /// `index: None` means the leader could not confirm (it lost leadership); the follower
    /// tells its client to retry.
    ReadIndexResponse {
        id: u64,
        index: Option<LogIndex>,
    },
    /// Raft §7: the leader no longer has the entries a follower needs, so it sends its
    /// snapshot instead. Answered with an `AppendResponse` whose `match_index` is the
    /// snapshot's last included index.
    InstallSnapshot {
        term: Term,
        snapshot: Arc<Snapshot>,
        round: u64,
    },
}

/// The replicated state up to and including `last_included_index`: what a server keeps in
/// place of the log entries it compacted away.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub last_included_index: LogIndex,
    pub last_included_term: Term,
    /// The lock table (locks, sessions, next client id) after applying every entry up to
    /// `last_included_index`.
    pub table: crate::node::LockTable,
}

fn urgent_by_default() -> bool {
    true
}

impl PeerMessage {
    /// A short name for traces and statistics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            PeerMessage::PreVote { .. } => "pre_vote",
            PeerMessage::PreVoteResponse { .. } => "pre_vote_response",
            PeerMessage::RequestVote { .. } => "request_vote",
            PeerMessage::VoteResponse { .. } => "vote_response",
            PeerMessage::AppendEntries { .. } => "append_entries",
            PeerMessage::AppendResponse { .. } => "append_response",
            PeerMessage::Forward { .. } => "forward",
            PeerMessage::ForwardReply { .. } => "forward_reply",
            PeerMessage::ReadIndexRequest { .. } => "read_index_request",
            PeerMessage::ReadIndexResponse { .. } => "read_index_response",
            PeerMessage::InstallSnapshot { .. } => "install_snapshot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's clients wait for an acquire's answer as long as it asked to wait:
    /// `acquire_wait` is that wait, and no other operation has one. (Mutant: its
    /// `Operation::Acquire` arm deleted.)
    #[test]
    fn only_an_acquire_has_a_wait() {
        let acquire = Operation::Acquire {
            lock: "a".into(),
            wait_ms: 1_500,
            claim: Claim::EXCLUSIVE,
        };
        assert_eq!(
            acquire.acquire_wait(),
            Some(std::time::Duration::from_millis(1_500))
        );
        let preempt = Operation::Preempt {
            lock: "a".into(),
            claim: Claim::EXCLUSIVE,
        };
        assert_eq!(preempt.acquire_wait(), None);
        assert_eq!(Operation::Cancel { lock: "a".into() }.acquire_wait(), None);
    }

    /// Entries and snapshots written before modes existed hold no `mode`, and those written
    /// now leave it out when it is the default (exclusive), so both read and write as before:
    /// only a shared claim names its mode. (Mutant: `Mode::is_exclusive` made `false`, which
    /// wrote `"mode":"exclusive"` into every claim that declares permits.)
    #[test]
    fn a_claim_names_its_mode_only_when_shared() {
        let exclusive_of_three = Claim {
            mode: Mode::Exclusive,
            permits: Some(3),
        };
        let written = serde_json::to_value(exclusive_of_three).expect("a claim serializes");
        assert_eq!(written, serde_json::json!({ "permits": 3 }));
        let written = serde_json::to_value(Claim::semaphore(3)).expect("a claim serializes");
        assert_eq!(
            written,
            serde_json::json!({ "mode": "shared", "permits": 3 })
        );
        let read: Claim = serde_json::from_value(serde_json::json!({})).expect("an old claim");
        assert_eq!(read, Claim::EXCLUSIVE);
    }

    /// An AppendEntries from an older peer, which knows no `urgent`, is urgent: it is flushed
    /// at once, as every append was before the field existed.
    #[test]
    fn an_append_entries_without_urgent_reads_as_urgent() {
        let json = r#"{"append_entries":{"term":2,"prev_log_index":0,"prev_log_term":0,
            "entries":[],"leader_commit":0,"round":7}}"#;
        let message: PeerMessage = serde_json::from_str(json).expect("an older peer's append");
        assert!(
            matches!(
                message,
                PeerMessage::AppendEntries {
                    urgent: true,
                    round: 7,
                    ..
                }
            ),
            "{message:?}"
        );
    }

    #[test]
    fn a_secret_reads_back_from_its_hex_and_never_shows_in_debug() {
        let secret = ClientSecret::from_bytes([0xa5; CLIENT_SECRET_BYTES]);
        let hex = secret.to_hex();
        assert_eq!(hex.len(), 2 * CLIENT_SECRET_BYTES);
        assert_eq!(ClientSecret::parse_hex(&hex), Ok(secret));
        assert_eq!(
            ClientSecret::parse_hex(&hex.to_uppercase()),
            Ok(secret),
            "either case"
        );
        assert!(!format!("{secret:?}").contains("a5a5"));
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<ClientSecret>(&json).unwrap(), secret);
        // An escaped digit is still the digit; a number is no secret.
        let escaped = format!("\"\\u00{:x}{}\"", hex.as_bytes()[0], &hex[1..]);
        assert_eq!(
            serde_json::from_str::<ClientSecret>(&escaped).unwrap(),
            secret
        );
        let error = serde_json::from_str::<ClientSecret>("7").unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
    }

    #[test]
    fn every_byte_value_spells_as_two_lowercase_digits_and_reads_back() {
        for first in (0..=255u8).step_by(16) {
            let bytes: [u8; CLIENT_SECRET_BYTES] =
                std::array::from_fn(|at| first.wrapping_add(at as u8));
            let secret = ClientSecret::from_bytes(bytes);
            let spelled: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            assert_eq!(secret.to_hex(), spelled);
            assert_eq!(ClientSecret::parse_hex(&spelled), Ok(secret));
            assert_eq!(ClientSecret::parse_hex(&spelled.to_uppercase()), Ok(secret));
        }
    }

    #[test]
    fn only_32_hex_digits_make_a_secret() {
        let refused = [
            String::new(),
            "0".repeat(31),
            "0".repeat(33),
            format!("+f{}", "0".repeat(30)),
            format!("-0{}", "0".repeat(30)),
            format!("0x{}", "0".repeat(30)),
            format!("zz{}", "0".repeat(30)),
            format!("é{}", "0".repeat(30)),
            // The bytes either side of each digit range.
            format!("0{}/", "0".repeat(30)),
            format!("0{}:", "0".repeat(30)),
            format!("0{}@", "0".repeat(30)),
            format!("0{}G", "0".repeat(30)),
            format!("0{}`", "0".repeat(30)),
            format!("0{}g", "0".repeat(30)),
        ];
        for text in refused {
            let error = ClientSecret::parse_hex(&text).expect_err(&text);
            assert!(!error.contains(&text) || text.is_empty(), "{error}");
        }
    }

    /// Checker messages name modes and rejections as the wire does, not by their Rust names.
    #[test]
    fn modes_and_rejections_are_named_as_serialized() {
        for mode in [Mode::Exclusive, Mode::Shared] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.name());
        }
        for rejection in [
            Rejection::UnknownClient,
            Rejection::SeqReused,
            Rejection::BadLockName,
            Rejection::SessionExpired,
            Rejection::QueueFull,
            Rejection::BadPermits,
        ] {
            assert_eq!(serde_json::to_value(rejection).unwrap(), rejection.name());
        }
    }

    /// Traces, statistics and the TCP transport's metrics name a peer message by
    /// `kind_name`; it must be the name the message carries on the wire, one per kind, so
    /// that a trace line and a captured frame agree. (Mutant: `kind_name` made `"xyzzy"`.)
    #[test]
    fn a_peer_message_is_named_as_on_the_wire() {
        let request = ClientRequest {
            seq: 1,
            seen_index: 0,
            term: 1,
            body: RequestBody::Hello {
                nonce: 5,
                ttl_ms: None,
            },
        };
        let reply = ClientReply {
            seq: 1,
            index: 0,
            term: 1,
            body: ReplyBody::Error(ServiceError::Unavailable),
        };
        let snapshot = Snapshot {
            last_included_index: 0,
            last_included_term: 0,
            table: crate::node::LockTable::new(),
        };
        let (term, client) = (1, ClientAddr(7));
        let messages = [
            PeerMessage::PreVote {
                term,
                last_log_index: 0,
                last_log_term: 0,
            },
            PeerMessage::PreVoteResponse {
                term,
                granted: true,
            },
            PeerMessage::RequestVote {
                term,
                last_log_index: 0,
                last_log_term: 0,
            },
            PeerMessage::VoteResponse {
                term,
                granted: true,
            },
            PeerMessage::AppendEntries {
                term,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: Vec::new(),
                leader_commit: 0,
                round: 0,
                urgent: true,
            },
            PeerMessage::AppendResponse {
                term,
                success: true,
                match_index: 0,
                conflict_index: 0,
                conflict_term: None,
                round: 0,
            },
            PeerMessage::Forward { client, request },
            PeerMessage::ForwardReply { client, reply },
            PeerMessage::ReadIndexRequest { id: 1 },
            PeerMessage::ReadIndexResponse { id: 1, index: None },
            PeerMessage::InstallSnapshot {
                term,
                snapshot: Arc::new(snapshot),
                round: 0,
            },
        ];
        let mut names = std::collections::BTreeSet::new();
        for message in &messages {
            let wire = serde_json::to_value(message).expect("serializes");
            let tags: Vec<&String> = wire
                .as_object()
                .expect("one tagged object")
                .keys()
                .collect();
            assert_eq!(tags, vec![message.kind_name()], "{message:?}");
            names.insert(message.kind_name());
        }
        assert_eq!(names.len(), messages.len(), "one name per kind");
    }
}
