//! Rogue clients: simulated attackers that bypass `node::Client` and send well-formed but
//! hostile requests, and the malformed ones a typed request can carry, straight to servers.
//!
//! A rogue knows what any network user could know: the ids in honest requests and answers (ids
//! are not secret), honest requests' operations, seqs, terms and indexes, and whatever the
//! servers answer it. It never learns an honest client's secret: what it sniffs is stored as
//! [`Sniffed`], which has no field to hold one. It registers identities of its own (a hello
//! like anyone's) and attacks with and without them; see [`AttackKind`].
//!
//! All its randomness comes from its own stream (`Stream::Rogue`), so adding rogues to a
//! scenario does not reshuffle any other subsystem. Nothing here judges an answer: that is the
//! `rogue_isolation` checker's job. Every list a rogue keeps is bounded.

use crate::node::{
    ACQUIRE_WAIT_MS_MAX, CLIENT_SECRET_BYTES, Claim, ClientId, ClientReply, ClientRequest,
    ClientSecret, Consistency, LOCK_NAME_BYTES_MAX, LockName, LogIndex, Operation, Outcome,
    ReplyBody, RequestBody, ServerId, Term,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

#[path = "rogue_watch.rs"]
mod watch_and_modes;
pub use watch_and_modes::{RogueWatch, RogueWatchLine, WATCH_CONNECTION};

/// Most rogues a scenario may have.
pub const ROGUES_MAX: u32 = 16;
/// Highest attack rate of one rogue, in requests per second.
pub const ROGUE_RATE_MAX: f64 = 1_000.0;
/// Most requests one rogue sends in a run; it falls silent after that.
pub const ROGUE_REQUESTS_MAX: u64 = 100_000;
/// Identities a rogue registers for itself: one for its ordinary requests, one it burns on
/// huge seqs (after `u64::MAX` every later seq of that identity is stale).
const IDENTITIES_WANTED: usize = 2;
/// Welcomes a rogue keeps; later ones (answers to repeated hellos) are ignored.
const IDENTITIES_MAX: usize = 4;
/// A rogue without its identities says hello again every this many requests.
const HELLO_EVERY_REQUESTS: u64 = 8;
/// Honest requests a rogue remembers (the most recent ones).
const SNIFFED_MAX: usize = 64;
/// Honest lock names a rogue remembers.
const HONEST_LOCKS_MAX: usize = 32;
/// A rogue's own earliest requests, kept for replay from "much earlier".
const OWN_EARLY_MAX: usize = 16;
/// A rogue's own most recent requests, kept for replay and seq reuse.
const OWN_RECENT_MAX: usize = 64;
/// Longest wait of a queue write the rogue sends under its own identity and means to be
/// served: short, so that a waiter of its own never outlives a run (absurd waits excepted,
/// which must be refused before the log).
const OWN_WAIT_MS_MAX: u64 = 500;

/// The attacks a rogue draws from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttackKind {
    /// An id no hello issued (0, `u64::MAX`, far-off ids, the next few ids), with a missing or
    /// random secret.
    UnknownId,
    /// An honest client's id with a missing or random secret.
    ForgedId,
    /// An honest request replayed verbatim, its secret stripped or replaced by a random one or
    /// by the rogue's own.
    ReplayHonest,
    /// A seq already used, with another operation or lock: the rogue's own (under its own
    /// identity), or an honest client's (under that client's id, without its secret).
    ReusedSeq,
    /// `u64::MAX` and seqs near it, under the rogue's burner identity.
    HugeSeq,
    /// Stale, future and extreme terms, and `seen_index` 0 or huge.
    WildFields,
    /// Lock names that are empty, exactly at [`LOCK_NAME_BYTES_MAX`], or over it.
    BadName,
    /// One of the rogue's own requests replayed verbatim, from much earlier or recently.
    ReplayOwn,
    /// The blocking acquire's writes, `acquire` and `cancel`: on honest locks as an honest
    /// client (forged or missing secret) or as an id no hello issued, under a seq the rogue or
    /// an honest client already used for another write, and under its own identity with an
    /// absurd wait (over [`ACQUIRE_WAIT_MS_MAX`], up to `u64::MAX`).
    QueueWrite,
    /// `watch` and `unwatch` lines (`node::watch`): watches of honest names and prefixes under
    /// ids no hello issued or honest ids with a missing or random secret; unwatches of honest
    /// watchers' ids; and under its own identity, on its one long-lived watch connection,
    /// watches with honest watchers' ids, from index 0 or a huge one, more than a connection
    /// may hold, and with bad targets (empty, over the limit). See `rogue_watch.rs`.
    Watch,
    /// Preempts and acquires with a mode and permits: shared claims and permits 0, 1, 64, 65
    /// and `u32::MAX`, or an honest lock's declared permits give or take one, under forged and
    /// unknown ids; under its own identity, permits out of bounds, claims that mismatch its own
    /// semaphore's permits, claims that would turn its own exclusive hold shared, and seqs
    /// reused with another mode or other permits. See `rogue_watch.rs`.
    ModeClaim,
}

impl AttackKind {
    /// The kinds from before watches and modes existed: a mix that leaves the others out
    /// draws exactly what it drew then, so such scenarios keep their traces.
    pub const KINDS_BEFORE_WATCHES: usize = 9;

    /// Appended kinds go at the end, so that weights and scenario files keep their meaning.
    pub const ALL: [AttackKind; 11] = [
        AttackKind::UnknownId,
        AttackKind::ForgedId,
        AttackKind::ReplayHonest,
        AttackKind::ReusedSeq,
        AttackKind::HugeSeq,
        AttackKind::WildFields,
        AttackKind::BadName,
        AttackKind::ReplayOwn,
        AttackKind::QueueWrite,
        AttackKind::Watch,
        AttackKind::ModeClaim,
    ];

    /// The name scenario files use.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::UnknownId => "unknown_id",
            AttackKind::ForgedId => "forged_id",
            AttackKind::ReplayHonest => "replay_honest",
            AttackKind::ReusedSeq => "reused_seq",
            AttackKind::HugeSeq => "huge_seq",
            AttackKind::WildFields => "wild_fields",
            AttackKind::BadName => "bad_name",
            AttackKind::ReplayOwn => "replay_own",
            AttackKind::QueueWrite => "queue_write",
            AttackKind::Watch => "watch",
            AttackKind::ModeClaim => "mode_claim",
        }
    }

    pub fn from_name(name: &str) -> Option<AttackKind> {
        AttackKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// The rogues of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct RogueSpec {
    /// Rogues `r1..rN`.
    pub clients: u32,
    /// Requests per second, per rogue (on average; gaps are drawn uniformly from half to one
    /// and a half of the mean).
    pub rate_per_second: f64,
    /// Weight of each attack kind, in [`AttackKind::ALL`] order. At least one is above 0.
    pub mix: [f64; AttackKind::ALL.len()],
    /// Rogues send nothing from this time on (`rogues.until`); `None`: until the end of the
    /// duration, like the workload. The swarm stops them where its liveness phase starts: a
    /// flood of writes under a rogue's own identity is a load, and the liveness phase judges
    /// a cluster that the faults have left alone.
    pub until: Option<Duration>,
}

impl RogueSpec {
    /// The mix of a scenario that names none: every kind from before watches and modes,
    /// equally often (so that its trace is what it was then); `watch` and `mode_claim` are
    /// named to be drawn.
    pub const EVEN_MIX: [f64; AttackKind::ALL.len()] = {
        let mut mix = [0.0; AttackKind::ALL.len()];
        let mut kind = 0;
        while kind < AttackKind::KINDS_BEFORE_WATCHES {
            mix[kind] = 1.0;
            kind += 1;
        }
        mix
    };
    /// Every attack kind, equally often.
    pub const ALL_KINDS_MIX: [f64; AttackKind::ALL.len()] = [1.0; AttackKind::ALL.len()];
}

/// An honest request as a rogue saw it: everything but the secret, which it cannot see.
#[derive(Clone, Debug)]
pub struct Sniffed {
    client: ClientId,
    seq: u64,
    term: Term,
    seen_index: LogIndex,
    op: Operation,
}

/// A rogue's own identity: an id and the secret its welcome gave.
#[derive(Copy, Clone, Debug)]
struct Identity {
    client: ClientId,
    secret: ClientSecret,
}

/// What a rogue sends: a request line, or a watch line, which servers take apart from
/// requests (`node::watch`).
#[derive(Clone, Debug)]
pub enum Sent {
    Request(ClientRequest),
    Watch(RogueWatch),
}

/// One line a rogue sends.
#[derive(Clone, Debug)]
pub struct Attack {
    /// `None` for a hello: the rogue registering an identity of its own.
    pub kind: Option<AttackKind>,
    pub to: ServerId,
    pub sent: Sent,
}

/// One rogue client.
pub struct Rogue {
    number: u32,
    servers: u32,
    rng: ChaCha8Rng,
    mix: [f64; AttackKind::ALL.len()],
    identities: Vec<Identity>,
    hello_nonces: Vec<u64>,
    /// The next fresh seq of the main identity.
    next_seq: u64,
    own_early: Vec<ClientRequest>,
    own_recent: VecDeque<ClientRequest>,
    sniffed: VecDeque<Sniffed>,
    honest_locks: Vec<LockName>,
    /// The highest term, applied index and client id this rogue has seen anywhere.
    term_seen: Term,
    index_seen: LogIndex,
    client_id_seen: u64,
    sent: u64,
}

impl Rogue {
    pub fn new(number: u32, servers: u32, spec: &RogueSpec, rng: ChaCha8Rng) -> Rogue {
        assert!(number >= 1, "rogues are numbered from 1");
        assert!(servers >= 1, "a rogue needs a server to attack");
        assert!(
            spec.mix.iter().any(|weight| *weight > 0.0),
            "validation keeps one attack kind on"
        );
        Rogue {
            number,
            servers,
            rng,
            mix: spec.mix,
            identities: Vec::new(),
            hello_nonces: Vec::new(),
            next_seq: 1,
            own_early: Vec::new(),
            own_recent: VecDeque::new(),
            sniffed: VecDeque::new(),
            honest_locks: Vec::new(),
            term_seen: 0,
            index_seen: 0,
            client_id_seen: 0,
            sent: 0,
        }
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    /// Requests sent so far; also the connection number of the next one.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// True once the rogue has used up [`ROGUE_REQUESTS_MAX`].
    pub fn is_spent(&self) -> bool {
        self.sent >= ROGUE_REQUESTS_MAX
    }

    /// Time until the next attack, for a mean rate of `rate_per_second`.
    pub fn gap_nanos(&mut self, rate_per_second: f64) -> u64 {
        assert!(
            rate_per_second > 0.0 && rate_per_second <= ROGUE_RATE_MAX,
            "validation bounds the rate"
        );
        let mean_nanos = 1e9 / rate_per_second;
        let factor = self.rng.random_range(0.5..1.5);
        (mean_nanos * factor).max(1.0) as u64
    }

    /// What an honest client sent, minus its secret (the caller hands over no secret).
    pub fn sniff(
        &mut self,
        client: ClientId,
        seq: u64,
        term: Term,
        index: LogIndex,
        op: &Operation,
    ) {
        self.client_id_seen = self.client_id_seen.max(client.0);
        self.term_seen = self.term_seen.max(term);
        self.index_seen = self.index_seen.max(index);
        if self.honest_locks.len() < HONEST_LOCKS_MAX && !self.honest_locks.contains(op.lock()) {
            self.honest_locks.push(op.lock().clone());
        }
        if self.sniffed.len() == SNIFFED_MAX {
            self.sniffed.pop_front();
        }
        self.sniffed.push_back(Sniffed {
            client,
            seq,
            term,
            seen_index: index,
            op: op.clone(),
        });
    }

    /// Learns what an answer tells: terms, indexes, ids named as owners, and its own welcomes.
    pub fn on_reply(&mut self, reply: &ClientReply) {
        self.term_seen = self.term_seen.max(reply.term);
        self.index_seen = self.index_seen.max(reply.index);
        match &reply.body {
            ReplyBody::Welcome {
                nonce,
                client,
                secret,
            } => {
                self.client_id_seen = self.client_id_seen.max(client.0);
                let ours = self.hello_nonces.contains(nonce);
                let known = self.identities.iter().any(|i| i.client == *client);
                if ours && !known && self.identities.len() < IDENTITIES_MAX {
                    self.identities.push(Identity {
                        client: *client,
                        secret: *secret,
                    });
                }
            }
            ReplyBody::Outcome(Outcome::HeldBy { owner } | Outcome::Owner { owner, .. }) => {
                self.client_id_seen = self.client_id_seen.max(owner.0);
            }
            ReplyBody::Outcome(_) | ReplyBody::KeptAlive { .. } | ReplyBody::Error(_) => {}
        }
    }

    /// The next request to send.
    pub fn next_attack(&mut self) -> Attack {
        assert!(!self.is_spent(), "a spent rogue sends nothing");
        let to = ServerId(self.rng.random_range(1..=self.servers));
        let wants_identity = self.identities.len() < IDENTITIES_WANTED;
        let (kind, sent) = if wants_identity && self.sent.is_multiple_of(HELLO_EVERY_REQUESTS) {
            (None, Sent::Request(self.hello()))
        } else {
            let kind = self.draw_kind();
            match self.attack(kind) {
                Some(sent) => (Some(kind), sent),
                None => {
                    let request = self.unknown_id().expect("always possible");
                    (Some(AttackKind::UnknownId), Sent::Request(request))
                }
            }
        };
        self.sent += 1;
        // Its watch connection goes to one server, where its watches pile up past the bound.
        let to = match &sent {
            Sent::Watch(watch) if watch.long_lived => {
                ServerId(1 + (self.number - 1) % self.servers)
            }
            _ => to,
        };
        Attack { kind, to, sent }
    }

    fn draw_kind(&mut self) -> AttackKind {
        let total: f64 = self.mix.iter().sum();
        let mut draw = self.rng.random_range(0.0..total);
        for (kind, weight) in AttackKind::ALL.into_iter().zip(self.mix) {
            if draw < weight {
                return kind;
            }
            draw -= weight;
        }
        // Rounding left a sliver past the last weight: the last kind that is on.
        let last_on = AttackKind::ALL
            .into_iter()
            .zip(self.mix)
            .rfind(|(_, weight)| *weight > 0.0);
        last_on.expect("one kind is on").0
    }

    /// The request of attack `kind`, or `None` if the rogue lacks what it needs (an identity,
    /// sniffed traffic) yet.
    fn attack(&mut self, kind: AttackKind) -> Option<Sent> {
        let request = match kind {
            AttackKind::UnknownId => self.unknown_id(),
            AttackKind::ForgedId => self.forged_id(),
            AttackKind::ReplayHonest => self.replay_honest(),
            AttackKind::ReusedSeq => self.reused_seq(),
            AttackKind::HugeSeq => self.huge_seq(),
            AttackKind::WildFields => self.wild_fields(),
            AttackKind::BadName => self.bad_name(),
            AttackKind::ReplayOwn => self.replay_own(),
            AttackKind::QueueWrite => self.queue_write(),
            AttackKind::Watch => return self.watch_attack().map(Sent::Watch),
            AttackKind::ModeClaim => self.mode_claim(),
        };
        request.map(Sent::Request)
    }

    fn hello(&mut self) -> ClientRequest {
        let nonce = self.rng.random();
        if self.hello_nonces.len() < IDENTITIES_MAX * 4 {
            self.hello_nonces.push(nonce);
        }
        let seq = self.rng_seq();
        self.request(
            seq,
            RequestBody::Hello {
                nonce,
                ttl_ms: None,
            },
        )
    }

    fn unknown_id(&mut self) -> Option<ClientRequest> {
        let seen = self.client_id_seen;
        let client = match self.rng.random_range(0..5) {
            0 => 0,
            1 => u64::MAX,
            2 => (1 << 32) + self.rng.random_range(0..1_000u64),
            // Ids just past the highest seen: not issued yet, though they may be by the time
            // the request arrives (then it is a forged id, equally refused).
            _ => seen.saturating_add(self.rng.random_range(1..=3)),
        };
        let secret = self.random_or_missing_secret();
        let op = self.honest_op();
        let seq = self.rng_seq();
        Some(self.op_request(seq, ClientId(client), secret, op))
    }

    fn forged_id(&mut self) -> Option<ClientRequest> {
        let (client, seq) = match self.pick_sniffed() {
            Some(sniffed) if self.rng.random_bool(0.7) => {
                let seq = match self.rng.random_range(0..3) {
                    0 => sniffed.seq,
                    1 => sniffed.seq.saturating_add(1),
                    _ => self.rng_seq(),
                };
                (sniffed.client, seq)
            }
            // Ids are small and dense: guessing one is as good as sniffing it.
            _ if self.client_id_seen > 0 => {
                let client = ClientId(self.rng.random_range(1..=self.client_id_seen));
                (client, self.rng_seq())
            }
            _ => return None,
        };
        let secret = self.random_or_missing_secret();
        let op = self.honest_op();
        Some(self.op_request(seq, client, secret, op))
    }

    fn replay_honest(&mut self) -> Option<ClientRequest> {
        let sniffed = self.pick_sniffed()?;
        let secret = match (self.rng.random_range(0..3), self.identities.first()) {
            (0, Some(own)) => Some(own.secret),
            _ => self.random_or_missing_secret(),
        };
        Some(ClientRequest {
            seq: sniffed.seq,
            seen_index: sniffed.seen_index,
            term: sniffed.term,
            body: RequestBody::Op {
                client: sniffed.client,
                secret,
                op: sniffed.op,
            },
        })
    }

    fn reused_seq(&mut self) -> Option<ClientRequest> {
        let own_write = self
            .pick_own()
            .filter(|request| matches!(&request.body, RequestBody::Op { op, .. } if op.is_write()));
        if let Some(earlier) = own_write.filter(|_| self.rng.random_bool(0.5)) {
            let RequestBody::Op { client, secret, op } = earlier.body else {
                unreachable!("filtered to writes");
            };
            let other = self.other_write(&op, true);
            let request = self.op_request(earlier.seq, client, secret, other);
            return Some(request);
        }
        let sniffed = self.pick_sniffed()?;
        let other = self.other_write(&sniffed.op, false);
        let secret = self.random_or_missing_secret();
        Some(self.op_request(sniffed.seq, sniffed.client, secret, other))
    }

    fn huge_seq(&mut self) -> Option<ClientRequest> {
        let burner = *self.identities.get(1).or(self.identities.first())?;
        let seq = match self.rng.random_range(0..4) {
            0 => u64::MAX,
            1 => u64::MAX - 1,
            2 => u64::MAX - self.rng.random_range(0..16u64),
            _ => 1 << 63,
        };
        let op = self.own_op();
        let request = self.op_request(seq, burner.client, Some(burner.secret), op);
        Some(request)
    }

    fn wild_fields(&mut self) -> Option<ClientRequest> {
        let own = *self.identities.first()?;
        let op = if self.rng.random_bool(0.5) {
            let lock = self.any_lock();
            let consistency = if self.rng.random_bool(0.5) {
                Consistency::Local
            } else {
                Consistency::Linearizable
            };
            Operation::Check { lock, consistency }
        } else {
            self.own_op()
        };
        let seq = self.fresh_seq();
        let mut request = self.op_request(seq, own.client, Some(own.secret), op);
        request.term = match self.rng.random_range(0..5) {
            0 => 0,
            1 => self.term_seen.saturating_sub(self.rng.random_range(1..=3)),
            2 => self
                .term_seen
                .saturating_add(self.rng.random_range(1..=1_000)),
            3 => u64::MAX,
            _ => self.term_seen,
        };
        request.seen_index = match self.rng.random_range(0..4) {
            0 => 0,
            1 => u64::MAX,
            2 => self.index_seen.saturating_add(1_000),
            _ => self.index_seen,
        };
        self.remember_own(&request);
        Some(request)
    }

    fn bad_name(&mut self) -> Option<ClientRequest> {
        let own = *self.identities.first()?;
        let prefix = format!("r{}.", self.number);
        let padding = |length: usize| "x".repeat(length.saturating_sub(prefix.len()));
        let name = match self.rng.random_range(0..5) {
            0 => String::new(),
            1 => format!("{prefix}{}", padding(LOCK_NAME_BYTES_MAX)),
            2 => format!("{prefix}{}", padding(LOCK_NAME_BYTES_MAX + 1)),
            3 => format!("{prefix}{}", padding(16 * LOCK_NAME_BYTES_MAX)),
            // 255 bytes and a two-byte character: 257 bytes in 256 characters.
            _ => format!("{prefix}{}é", padding(LOCK_NAME_BYTES_MAX - 1)),
        };
        let lock: LockName = Arc::from(name.as_str());
        let op = match self.rng.random_range(0..3) {
            0 => Operation::Preempt {
                lock,
                claim: Claim::EXCLUSIVE,
            },
            1 => Operation::Release { lock },
            _ => Operation::Check {
                lock,
                consistency: Consistency::Local,
            },
        };
        let seq = self.fresh_seq();
        let request = self.op_request(seq, own.client, Some(own.secret), op);
        self.remember_own(&request);
        Some(request)
    }

    /// Half the time an ordinary write of its own (which later attacks replay and reuse the
    /// seq of), else one of its own requests again, verbatim.
    fn replay_own(&mut self) -> Option<ClientRequest> {
        let own = *self.identities.first()?;
        if self.rng.random_bool(0.5)
            && let Some(earlier) = self.pick_own()
        {
            return Some(earlier);
        }
        let op = self.own_op();
        let seq = self.fresh_seq();
        let request = self.op_request(seq, own.client, Some(own.secret), op);
        self.remember_own(&request);
        Some(request)
    }

    /// An `acquire` or `cancel` that must change nothing: forged, of an unknown id, under a
    /// reused seq, or with an absurd wait.
    fn queue_write(&mut self) -> Option<ClientRequest> {
        match self.rng.random_range(0..4) {
            0 => {
                let mut request = self.forged_id()?;
                request.body = self.as_queue_write(request.body);
                Some(request)
            }
            1 => {
                let mut request = self.unknown_id()?;
                request.body = self.as_queue_write(request.body);
                Some(request)
            }
            2 => self.reused_seq_queue_write(),
            _ => self.absurd_wait(),
        }
    }

    /// `body`'s operation turned into an acquire (with any wait, absurd ones included) or a
    /// cancel of the same lock, under the same id and secret.
    fn as_queue_write(&mut self, body: RequestBody) -> RequestBody {
        let RequestBody::Op { client, secret, op } = body else {
            return body;
        };
        let lock = op.lock().clone();
        let op = if self.rng.random_bool(0.7) {
            let wait_ms = match self.rng.random_range(0..4) {
                0 => 0,
                1 => self.rng.random_range(1..=10_000),
                2 => ACQUIRE_WAIT_MS_MAX,
                _ => u64::MAX,
            };
            Operation::Acquire {
                lock,
                wait_ms,
                claim: Claim::EXCLUSIVE,
            }
        } else {
            Operation::Cancel { lock }
        };
        RequestBody::Op { client, secret, op }
    }

    /// An acquire or cancel under a seq already used for another write: one of its own (under
    /// its own identity, on its own locks), or an honest client's (under that client's id,
    /// without its secret).
    fn reused_seq_queue_write(&mut self) -> Option<ClientRequest> {
        let own_write = self
            .pick_own()
            .filter(|request| matches!(&request.body, RequestBody::Op { op, .. } if op.is_write()));
        if let Some(earlier) = own_write.filter(|_| self.rng.random_bool(0.5)) {
            let RequestBody::Op { client, secret, op } = earlier.body else {
                unreachable!("filtered to writes");
            };
            let other = self.other_queue_write(&op, true);
            return Some(self.op_request(earlier.seq, client, secret, other));
        }
        let sniffed = self.pick_sniffed()?;
        let other = self.other_queue_write(&sniffed.op, false);
        let secret = self.random_or_missing_secret();
        Some(self.op_request(sniffed.seq, sniffed.client, secret, other))
    }

    /// An acquire or cancel that differs from `op` in kind or lock. On its own locks when
    /// `own` (with a short wait, so that its own waiter never outlives a run), else on honest
    /// ones.
    fn other_queue_write(&mut self, op: &Operation, own: bool) -> Operation {
        let mut lock = if own {
            self.own_lock()
        } else {
            self.honest_lock()
        };
        let wait_ms = self.rng.random_range(0..=OWN_WAIT_MS_MAX);
        match op {
            Operation::Acquire { lock: used, .. } if *used == lock => Operation::Cancel { lock },
            Operation::Cancel { lock: used } if *used == lock => Operation::Acquire {
                lock,
                wait_ms,
                claim: Claim::EXCLUSIVE,
            },
            Operation::Acquire { .. } | Operation::Cancel { .. } => {
                lock = Arc::from(format!("{lock}.other").as_str());
                Operation::Acquire {
                    lock,
                    wait_ms,
                    claim: Claim::EXCLUSIVE,
                }
            }
            Operation::Preempt { .. } | Operation::Release { .. } | Operation::Check { .. } => {
                if self.rng.random_bool(0.5) {
                    Operation::Acquire {
                        lock,
                        wait_ms,
                        claim: Claim::EXCLUSIVE,
                    }
                } else {
                    Operation::Cancel { lock }
                }
            }
        }
    }

    /// Its own acquire, fresh seq, with a wait over the protocol's bound: refused before the
    /// log (`bad_request`), never queued.
    fn absurd_wait(&mut self) -> Option<ClientRequest> {
        let own = *self.identities.first()?;
        let wait_ms = match self.rng.random_range(0..3) {
            0 => ACQUIRE_WAIT_MS_MAX + 1,
            1 => ACQUIRE_WAIT_MS_MAX.saturating_mul(24 * 365),
            _ => u64::MAX,
        };
        let lock = self.any_lock();
        let seq = self.fresh_seq();
        let op = Operation::Acquire {
            lock,
            wait_ms,
            claim: Claim::EXCLUSIVE,
        };
        let request = self.op_request(seq, own.client, Some(own.secret), op);
        self.remember_own(&request);
        Some(request)
    }

    // ----- building blocks -----

    fn request(&self, seq: u64, body: RequestBody) -> ClientRequest {
        ClientRequest {
            seq,
            seen_index: self.index_seen,
            term: self.term_seen,
            body,
        }
    }

    fn op_request(
        &self,
        seq: u64,
        client: ClientId,
        secret: Option<ClientSecret>,
        op: Operation,
    ) -> ClientRequest {
        self.request(seq, RequestBody::Op { client, secret, op })
    }

    fn rng_seq(&mut self) -> u64 {
        self.rng.random_range(1..=1_000)
    }

    fn fresh_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A secret no client was issued (but for a chance of 2^-128), or none at all.
    fn random_or_missing_secret(&mut self) -> Option<ClientSecret> {
        if self.rng.random_bool(0.5) {
            return None;
        }
        let mut bytes = [0u8; CLIENT_SECRET_BYTES];
        self.rng.fill(&mut bytes[..]);
        Some(ClientSecret::from_bytes(bytes))
    }

    fn pick_sniffed(&mut self) -> Option<Sniffed> {
        if self.sniffed.is_empty() {
            return None;
        }
        let at = self.rng.random_range(0..self.sniffed.len());
        Some(self.sniffed[at].clone())
    }

    fn pick_own(&mut self) -> Option<ClientRequest> {
        let early = self.own_early.len();
        let total = early + self.own_recent.len();
        if total == 0 {
            return None;
        }
        let at = self.rng.random_range(0..total);
        Some(if at < early {
            self.own_early[at].clone()
        } else {
            self.own_recent[at - early].clone()
        })
    }

    fn remember_own(&mut self, request: &ClientRequest) {
        if self.own_early.len() < OWN_EARLY_MAX {
            self.own_early.push(request.clone());
            return;
        }
        if self.own_recent.len() == OWN_RECENT_MAX {
            self.own_recent.pop_front();
        }
        self.own_recent.push_back(request.clone());
    }

    /// A lock honest clients use (as sniffed), or `w1` before any was seen.
    fn honest_lock(&mut self) -> LockName {
        if self.honest_locks.is_empty() {
            return Arc::from("w1");
        }
        let at = self.rng.random_range(0..self.honest_locks.len());
        self.honest_locks[at].clone()
    }

    /// One of this rogue's own locks: honest histories never touch them, so what the rogue
    /// does to them under its own identity cannot make an honest history non-linearizable.
    fn own_lock(&mut self) -> LockName {
        let name = if self.rng.random_bool(0.5) { "a" } else { "b" };
        Arc::from(format!("r{}.{name}", self.number).as_str())
    }

    fn any_lock(&mut self) -> LockName {
        if self.rng.random_bool(0.5) {
            self.honest_lock()
        } else {
            self.own_lock()
        }
    }

    /// Any operation on an honest lock: what an impostor would try.
    fn honest_op(&mut self) -> Operation {
        let lock = self.honest_lock();
        match self.rng.random_range(0..5) {
            0 | 1 => Operation::Release { lock },
            2 | 3 => Operation::Preempt {
                lock,
                claim: Claim::EXCLUSIVE,
            },
            _ => Operation::Check {
                lock,
                consistency: Consistency::Linearizable,
            },
        }
    }

    /// A write on the rogue's own locks.
    fn own_op(&mut self) -> Operation {
        let lock = self.own_lock();
        if self.rng.random_bool(0.5) {
            Operation::Preempt {
                lock,
                claim: Claim::EXCLUSIVE,
            }
        } else {
            Operation::Release { lock }
        }
    }

    /// A write that differs from `op` in kind or lock. On its own locks when `own`, else on
    /// honest ones.
    fn other_write(&mut self, op: &Operation, own: bool) -> Operation {
        let lock = op.lock().clone();
        match (op, self.rng.random_bool(0.5)) {
            (Operation::Preempt { .. } | Operation::Acquire { .. }, true) => {
                Operation::Release { lock }
            }
            (Operation::Release { .. } | Operation::Cancel { .. }, true)
            | (Operation::Check { .. }, _) => Operation::Preempt {
                lock,
                claim: Claim::EXCLUSIVE,
            },
            (_, false) => {
                let mut other = if own {
                    self.own_lock()
                } else {
                    self.honest_lock()
                };
                if other == lock {
                    other = Arc::from(format!("{lock}.other").as_str());
                }
                match op {
                    Operation::Preempt { .. } => Operation::Preempt {
                        lock: other,
                        claim: Claim::EXCLUSIVE,
                    },
                    _ => Operation::Release { lock: other },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ServiceError;
    use rand::SeedableRng;

    pub(super) fn rogue(seed: u64, mix: [f64; AttackKind::ALL.len()]) -> Rogue {
        let spec = RogueSpec {
            clients: 1,
            rate_per_second: 20.0,
            mix,
            until: None,
        };
        Rogue::new(1, 3, &spec, ChaCha8Rng::seed_from_u64(seed))
    }

    pub(super) fn welcome(rogue: &mut Rogue, client: u64) {
        let nonce = *rogue.hello_nonces.last().expect("a hello was sent");
        rogue.on_reply(&ClientReply {
            seq: 1,
            index: 3,
            term: 2,
            body: ReplyBody::Welcome {
                nonce,
                client: ClientId(client),
                secret: ClientSecret::from_bytes([client as u8; CLIENT_SECRET_BYTES]),
            },
        });
    }

    #[test]
    fn a_rogue_says_hello_first_and_then_attacks_with_what_it_learned() {
        let mut rogue = rogue(5, RogueSpec::ALL_KINDS_MIX);
        let first = rogue.next_attack();
        assert!(first.kind.is_none(), "the first request is a hello");
        assert!(matches!(
            first.sent,
            Sent::Request(ClientRequest {
                body: RequestBody::Hello { .. },
                ..
            })
        ));
        welcome(&mut rogue, 7);
        rogue.sniff(
            ClientId(2),
            11,
            2,
            9,
            &Operation::Release {
                lock: Arc::from("w3"),
            },
        );
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let attack = rogue.next_attack();
            assert!((1..=3).contains(&attack.to.0));
            kinds.insert(attack.kind);
            let secret = match &attack.sent {
                Sent::Request(ClientRequest {
                    body: RequestBody::Op { client, secret, .. },
                    ..
                }) => Some((*client, *secret)),
                Sent::Watch(RogueWatch {
                    line: RogueWatchLine::Start { client, secret, .. },
                    ..
                }) => Some((*client, *secret)),
                _ => None,
            };
            if let Some((client, secret)) = secret
                && client == ClientId(2)
            {
                // It was never given client#2's secret, so it can never send it.
                let honest = ClientSecret::from_bytes([2; CLIENT_SECRET_BYTES]);
                assert!(secret.is_none_or(|secret| secret != honest));
            }
        }
        assert!(
            kinds.len() >= AttackKind::ALL.len(),
            "every kind is drawn: {kinds:?}"
        );
    }

    #[test]
    fn huge_seqs_and_bad_names_are_what_they_say() {
        let mut huge = rogue(1, {
            let mut mix = [0.0; AttackKind::ALL.len()];
            mix[4] = 1.0;
            mix
        });
        let _ = huge.next_attack();
        welcome(&mut huge, 4);
        for _ in 0..50 {
            let attack = huge.next_attack();
            if let (Some(AttackKind::HugeSeq), Sent::Request(request)) = (attack.kind, attack.sent)
            {
                assert!(request.seq >= 1 << 63, "{}", request.seq);
            }
        }
        let mut names = rogue(2, {
            let mut mix = [0.0; AttackKind::ALL.len()];
            mix[6] = 1.0;
            mix
        });
        let _ = names.next_attack();
        welcome(&mut names, 4);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..100 {
            if let Sent::Request(ClientRequest {
                body: RequestBody::Op { op, .. },
                ..
            }) = names.next_attack().sent
            {
                lengths.insert(op.lock().len());
            }
        }
        for length in [0, LOCK_NAME_BYTES_MAX, LOCK_NAME_BYTES_MAX + 1] {
            assert!(lengths.contains(&length), "{length} not among {lengths:?}");
        }
    }

    #[test]
    fn answers_teach_terms_indexes_and_ids_but_not_other_clients_welcomes() {
        let mut rogue = rogue(3, RogueSpec::EVEN_MIX);
        let _ = rogue.next_attack();
        rogue.on_reply(&ClientReply {
            seq: 1,
            index: 40,
            term: 6,
            body: ReplyBody::Welcome {
                nonce: 12345,
                client: ClientId(9),
                secret: ClientSecret::from_bytes([9; CLIENT_SECRET_BYTES]),
            },
        });
        assert!(
            rogue.identities.is_empty(),
            "not its nonce, not its identity"
        );
        rogue.on_reply(&ClientReply {
            seq: 2,
            index: 41,
            term: 7,
            body: ReplyBody::Error(ServiceError::Unauthorized),
        });
        assert_eq!(
            (rogue.term_seen, rogue.index_seen, rogue.client_id_seen),
            (7, 41, 9)
        );
    }
}
