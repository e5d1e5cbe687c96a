//! A blocking Rust client for a lockstep cluster over TCP: the wire protocol of
//! docs/PROTOCOL.md with the retry rules of the simulator's client (`node::client`).
//!
//! ```no_run
//! use lockstep::client::{Client, ClientOptions, Preempt};
//! let servers = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
//! let mut client = Client::new(servers, ClientOptions::default())?;
//! if let Preempt::Granted { token } = client.preempt("printer")? {
//!     println!("client {} holds printer with fencing token {token}", client.client_id().unwrap().0);
//!     client.release("printer")?;
//! }
//! # Ok::<(), lockstep::client::Error>(())
//! ```
//!
//! # Calling contract
//! - One operation at a time: every method takes `&mut self` and returns once the operation
//!   is answered, refused, or out of time. A process that wants concurrency uses one `Client`
//!   per thread; each registers its own client id, and locks belong to client ids.
//! - Each operation gets a new, higher seq; its retries reuse it, so the cluster applies it at
//!   most once. Retries go to the next listed server after [`ClientOptions::attempt_timeout`]
//!   of silence, a lost connection, or (after [`ClientOptions::error_backoff`]) an
//!   `unavailable` or `overloaded`. A `not_leader` with a newer term makes the client adopt
//!   the term and resend at once, to the leader's address when the reply names it. A waiting
//!   [`Client::acquire`] is silent by design: it resends only after [`ACQUIRE_RESEND_AFTER`].
//! - Replies whose seq is not the running operation's are ignored (late answers to earlier
//!   operations). For the writes (preempt, release, acquire, cancel), replies whose term is
//!   below the one the current attempt carried are ignored too: they answer an earlier attempt (docs/PROTOCOL.md, Terms).
//! - [`Error::TimedOut`] after [`ClientOptions::operation_timeout`] (for an acquire, its wait
//!   plus that): for a write that was sent, the effect is unknown. Retrying it is a *new*
//!   operation with a new seq.
//!
//! It must never panic on anything a server sends: a malformed response is
//! [`Error::Protocol`].

mod acquire;
mod connection;
mod keepalive;
mod modes;
mod status;
mod watch;

use crate::net::protocol::{
    Answer, ErrorCode, LOCK_NAME_BYTES_MAX, WireErrorKind, WireOp, WireReply, WireRequest,
    decode_reply, encode_request_into,
};
pub use crate::net::tls::ClientTls;
/// What a preempt or an acquire claims: see [`Client::preempt_with`].
pub use crate::node::{Claim, Mode, PERMITS_MAX};
use crate::node::{ClientId, ClientSecret, Consistency, LockName, LogIndex, Outcome, Term};
pub use acquire::{ACQUIRE_RESEND_AFTER, Acquire, Cancel};
pub(crate) use connection::ResponseLines;
use connection::{Connection, ConnectionError};
pub use keepalive::{LeaseState, Lost, SessionKeeper};
pub use status::{StatusReport, server_status};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
pub use watch::{
    Change, LockChange, LockState, LockView, WATCH_KEEPALIVE_EVERY, Watch, WatchEvent, WatchTarget,
};

/// Most server addresses a client keeps: the listed ones plus leaders named by `not_leader`.
pub const SERVERS_MAX: usize = 64;

/// Timeouts and the identity to use. `Default` follows the simulator's client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one TCP connect may take.
    pub connect_timeout: Duration,
    /// Silence after which the request is sent again, to the next server.
    pub attempt_timeout: Duration,
    /// How long an operation (registration included) may take before it fails as
    /// [`Error::TimedOut`].
    pub operation_timeout: Duration,
    /// Pause after `unavailable`, `overloaded` or a round of unreachable servers.
    pub error_backoff: Duration,
    /// Act as this existing client instead of registering a new one (to release a lock an
    /// earlier process took, say). Sequence numbers then start from the wall clock in
    /// microseconds, so that they exceed every seq the id used before (see [`Client::new`]).
    pub credential: Option<Credential>,
    /// Speak TLS to every server, verifying its certificate against this CA (see
    /// [`ClientTls`]); `None` speaks plain TCP.
    pub tls: Option<ClientTls>,
    /// Register with a session of this TTL: the cluster releases this client's locks once it
    /// has heard no renewal for that long. Keep it alive with [`Client::keepalive`] every
    /// TTL/3, or in the background with [`Client::keep_session_alive`] (any write renews it
    /// on the server too, but only a keepalive's answer extends [`Client::lease`]). `None`
    /// (the default): a session that never expires.
    pub session_ttl: Option<Duration>,
    /// The clock drift bound the lease is shortened by (`ClientConfig::max_clock_drift`).
    pub max_clock_drift: f64,
    /// Taken off the lease besides the drift (`ClientConfig::lease_margin`).
    pub lease_margin: Duration,
}

/// A client's identity as the cluster issued it: the id and the secret that proves it. Written
/// `ID:SECRET` (`7:3f0c...`, 32 hex digits after the colon) on command lines and in files.
///
/// `Debug` hides the secret; [`Credential::to_argument`] is the one way to show it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct Credential {
    pub id: ClientId,
    pub secret: ClientSecret,
}

impl Credential {
    /// `ID:SECRET`, as [`str::parse`] reads it back: for the one line that hands a new
    /// credential to its operator.
    pub fn to_argument(&self) -> String {
        format!("{}:{}", self.id.0, self.secret.to_hex())
    }
}

impl std::str::FromStr for Credential {
    type Err = String;

    /// Reads `ID:SECRET`. Errors say what is wrong without repeating the secret.
    fn from_str(text: &str) -> Result<Credential, String> {
        let text = text.trim();
        let Some((id, secret)) = text.split_once(':') else {
            return Err(
                "a client credential is ID:SECRET, the id and the 32 hex digits that \
                 registration printed, joined by a colon"
                    .to_string(),
            );
        };
        let id: u64 = id.parse().map_err(|_| {
            format!("the client id before the colon must be a whole number from 1; got `{id}`")
        })?;
        if id == 0 {
            return Err("client ids start at 1".to_string());
        }
        let secret = ClientSecret::parse_hex(secret)?;
        Ok(Credential {
            id: ClientId(id),
            secret,
        })
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_millis(500),
            operation_timeout: Duration::from_secs(5),
            error_backoff: Duration::from_millis(100),
            credential: None,
            tls: None,
            session_ttl: None,
            max_clock_drift: 0.01,
            lease_margin: Duration::from_millis(100),
        }
    }
}

/// The answer to a keepalive: the session lives, and this client may believe so until
/// `valid_until` on its own clock (the lease rule of `node::client::LeaseRule`, counted from
/// when the keepalive was first sent).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct KeptAlive {
    /// The session's TTL; `None` for a session that never expires.
    pub ttl: Option<Duration>,
    /// `None` for a session that never expires.
    pub valid_until: Option<Instant>,
}

/// The answer to a preempt.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Preempt {
    /// You hold the lock; `token` is its fencing token.
    Granted { token: LogIndex },
    /// Another client holds it, or (shared or semaphore) the holders leave no room for your
    /// claim, or others wait in its line before you: `owner` is its earliest-granted holder.
    HeldBy { owner: ClientId },
    /// The lock is in use with other permits than your claim named (`None`: a plain lock).
    /// Nothing changed; see [`Client::preempt_with`].
    PermitsMismatch { permits: Option<u32> },
}

/// The answer to a release.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Release {
    Released,
    /// You did not hold the lock; nothing changed.
    NotOwner,
}

/// The answer to a check.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Check {
    Free,
    /// Held exclusively by `owner`, granted with fencing token `token`.
    Owner {
        owner: ClientId,
        token: LogIndex,
    },
    /// Held in shared mode by `holders` clients; `permits` as declared (`None`: a plain
    /// readers-writer lock). Each holder learned its own token from its grant.
    Shared {
        holders: u32,
        permits: Option<u32>,
    },
}

/// A server that could not be reached, and why.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Unreachable {
    pub address: String,
    pub reason: String,
}

/// Why an operation has no answer.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments (a server address, a lock name); nothing was sent.
    #[error("{0}")]
    InvalidInput(String),
    /// No server accepted a connection before the operation's timeout; nothing was sent.
    #[error("no server could be reached: {}", describe_unreachable(tried))]
    NoServerReachable { tried: Vec<Unreachable> },
    /// No answer before the operation's timeout. With `effect_unknown`, a preempt or release
    /// was sent and may or may not have taken effect.
    #[error(
        "no answer within {timeout:?}; {}",
        if *effect_unknown {
            "the operation may or may not have taken effect"
        } else {
            "nothing was changed"
        }
    )]
    TimedOut {
        effect_unknown: bool,
        timeout: Duration,
    },
    /// The cluster refused the request for good: `bad_request`, `stale_request`,
    /// `unsupported_version`, or one of the refusals of who is asking (`unknown_client`,
    /// `unauthorized`) and of a reused seq (`seq_reused`). Retrying it unchanged gets the same
    /// answer, so the client never does. The message is the server's, followed for the last
    /// three by what to do about it on this side ([`rejection_advice`]).
    #[error(
        "the server refused the request ({}): {message}{}",
        code.name(),
        rejection_advice(code)
    )]
    Rejected { code: ErrorCode, message: String },
    /// A server broke the protocol (a malformed line, a welcome of another version).
    #[error("protocol error from {server}: {message}")]
    Protocol { server: String, message: String },
}

/// What a user of this client does about a refusal the server's message can only describe
/// from its side: the server cannot know where the credential came from.
pub fn rejection_advice(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::UnknownClient => {
            ". This cluster never issued this client id: a credential is only valid on the \
             cluster that registered it (check the id for a typo, and that the cluster's data \
             was not wiped), or register a new client by leaving the credential out"
        }
        ErrorCode::Unauthorized => {
            ". The secret is not the one this client id was registered with: pass the ID:SECRET \
             that registration printed, unchanged, or register a new client by leaving the \
             credential out"
        }
        ErrorCode::SeqReused => {
            ". Another process is probably acting as this client at the same time, with seqs \
             that collide with this one's: give every process its own client"
        }
        ErrorCode::SessionExpired => {
            ". The cluster heard no keepalive within the session's TTL and released this \
             client's locks: register a new client (leave the credential out) and take them \
             again; their new fencing tokens will be larger"
        }
        ErrorCode::PermitsMismatch { .. } => {
            ". Every claim on a lock in use must name the permits it was declared with, or none"
        }
        ErrorCode::NotLeader { .. }
        | ErrorCode::LockDelayed { .. }
        | ErrorCode::QueueFull { .. }
        | ErrorCode::Unavailable
        | ErrorCode::Overloaded
        | ErrorCode::StaleRequest
        | ErrorCode::BadRequest
        | ErrorCode::UnsupportedVersion { .. } => "",
    }
}

fn describe_unreachable(tried: &[Unreachable]) -> String {
    let parts: Vec<String> = tried
        .iter()
        .map(|unreachable| format!("{} ({})", unreachable.address, unreachable.reason))
        .collect();
    parts.join(", ")
}

/// Checks a `host:port` address without resolving it.
pub fn validate_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not host:port (no port)"));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{address:?} is not host:port (bad host)"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{address:?}: write an IPv6 address in brackets, like [::1]:7001"
        ));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "{address:?} is not host:port (the port must be 1 to 65535)"
        )),
        Ok(_) => Ok(()),
    }
}

/// Splits a comma-separated `host:port` list (`127.0.0.1:7001,127.0.0.1:7002`), checking
/// each address.
pub fn parse_servers(text: &str) -> Result<Vec<String>, String> {
    let servers: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        return Err("no server addresses given (expected host:port,host:port,...)".into());
    }
    if servers.len() > SERVERS_MAX {
        return Err(format!("{} servers; at most {SERVERS_MAX}", servers.len()));
    }
    for server in &servers {
        validate_address(server)?;
    }
    Ok(servers)
}

/// Checks a lock name against the protocol's limits (1 to 256 bytes).
pub fn validate_lock_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the lock name is empty".into());
    }
    if name.len() > LOCK_NAME_BYTES_MAX {
        return Err(format!(
            "the lock name is {} bytes, above the limit of {LOCK_NAME_BYTES_MAX}",
            name.len()
        ));
    }
    Ok(())
}

/// What a wait for the running attempt's answer came to.
enum AttemptEnd {
    Answered {
        index: LogIndex,
        answer: Answer,
    },
    /// Nothing before the attempt's deadline: next server.
    Silence,
    /// The connection broke: drop it; next server (or the same one if the connection was old).
    Broken,
    /// `not_leader` with a newer term, adopted: resend at once (the position may have moved).
    Redirected,
    /// `unavailable`, `overloaded`, or a `not_leader` that names no newer term: back off, then
    /// the next server.
    BackOff,
    /// The caller's stop condition held while the attempt waited (see [`Pace::stop`]).
    Stopped,
}

/// How an exchange waits for its answer. Every operation but a waiting acquire resends after
/// [`ClientOptions::attempt_timeout`] of silence and cannot be stopped.
pub(crate) struct Pace<'a> {
    /// Silence after which the same seq is sent again, to the next server.
    resend_after: Duration,
    /// Looked at every [`STOP_POLL_INTERVAL`] while waiting; once true, the exchange ends
    /// without an answer.
    stop: Option<&'a mut dyn FnMut() -> bool>,
}

/// How often a stoppable wait looks at its stop condition.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(20);

pub struct Client {
    options: ClientOptions,
    /// The listed servers, then leaders' addresses learnt from `not_leader`. At most
    /// [`SERVERS_MAX`].
    servers: Vec<String>,
    /// One connection slot per entry of `servers`, reused across operations.
    connections: Vec<Option<Connection>>,
    /// Index into `servers` of the server talked to now.
    position: usize,
    /// Who this client is, once registered (or as given in the options).
    credential: Option<Credential>,
    /// Last sequence number used; every operation (hello included) takes the next.
    last_seq: u64,
    /// Highest `index` of any accepted `ok` answer: sent as `seen_index` (monotonic reads).
    seen_index: LogIndex,
    /// The `index` of the last `ok` answer: the state that answer reflects.
    last_answer_index: Option<LogIndex>,
    /// Highest `term` of any reply: sent as `term`.
    term: Term,
    /// Until when the session is believed alive (see [`Client::lease`]).
    lease: Option<Instant>,
    /// The request line being sent, reused to avoid an allocation per attempt.
    line: Vec<u8>,
}

impl Client {
    /// A client for the cluster at `servers` (`host:port` each), tried in this order. Nothing
    /// is connected yet: the first operation connects and, without
    /// [`ClientOptions::credential`], registers with `hello`.
    ///
    /// With a credential, seqs start at the wall clock in microseconds since 1970. The cluster
    /// remembers the last write seq of every client id and answers a lower one
    /// `stale_request` (or, for an equal one, the old answer). A process acting as an id that
    /// an earlier process used cannot know that process's last seq, but the clock has moved on
    /// since: microseconds exceed one seq per operation unless the earlier process ran over a
    /// million operations a second, or the clock was set back.
    pub fn new(servers: Vec<String>, options: ClientOptions) -> Result<Client, Error> {
        if servers.is_empty() {
            return Err(Error::InvalidInput("no server addresses given".into()));
        }
        if servers.len() > SERVERS_MAX {
            return Err(Error::InvalidInput(format!(
                "{} servers; at most {SERVERS_MAX}",
                servers.len()
            )));
        }
        for server in &servers {
            validate_address(server).map_err(Error::InvalidInput)?;
        }
        for (name, value) in [
            ("connect timeout", options.connect_timeout),
            ("attempt timeout", options.attempt_timeout),
            ("operation timeout", options.operation_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::InvalidInput(format!("the {name} is zero")));
            }
        }
        let last_seq = match options.credential {
            Some(Credential {
                id: ClientId(0), ..
            }) => {
                return Err(Error::InvalidInput("client ids start at 1".into()));
            }
            Some(_) => wall_clock_micros(),
            None => 0,
        };
        Ok(Client {
            connections: servers.iter().map(|_| None).collect(),
            servers,
            position: 0,
            credential: options.credential,
            last_seq,
            seen_index: 0,
            last_answer_index: None,
            term: 0,
            lease: None,
            line: Vec::with_capacity(512),
            options,
        })
    }

    /// The client id, once registered (or as given in the options).
    pub fn client_id(&self) -> Option<ClientId> {
        self.credential.map(|credential| credential.id)
    }

    /// The id and secret, once registered (or as given in the options). Keep the secret to
    /// yourself: whoever has it can act as this client.
    pub fn credential(&self) -> Option<Credential> {
        self.credential
    }

    /// Renews this client's session (registering first if needed) and returns the lease the
    /// answer grants, counted from when the keepalive was first sent, not from the answer.
    /// `session_expired` is an [`Error::Rejected`]: say hello again with a new `Client`.
    pub fn keepalive(&mut self) -> Result<KeptAlive, Error> {
        let deadline = Instant::now() + self.options.operation_timeout;
        let credential = self.ensure_registered(deadline)?;
        let op = WireOp::Keepalive {
            client: credential.id,
            secret: Some(credential.secret),
        };
        let seq = self.next_seq();
        let sent_at = Instant::now();
        let (_, answer) = self.exchange(&op, seq, deadline)?;
        let Answer::KeptAlive { ttl_ms } = answer else {
            unreachable!("client: {answer:?} accepted for a keepalive")
        };
        let ttl = ttl_ms.map(Duration::from_millis);
        let valid_until = ttl.map(|ttl| {
            let lease = crate::node::client::LeaseRule {
                ttl,
                max_clock_drift: self.options.max_clock_drift,
                margin: self.options.lease_margin,
            };
            sent_at + lease.believed_for()
        });
        self.lease = valid_until.or(self.lease);
        Ok(KeptAlive { ttl, valid_until })
    }

    /// Renews the session now (registering first if needed) and starts a [`SessionKeeper`]
    /// that keeps renewing it from a thread of its own, as this same client, while this
    /// `Client` goes on with one operation at a time. The first renewal's refusal
    /// (`session_expired`, `unauthorized`) is returned here. For a session without a TTL the
    /// keeper starts no thread and reports [`LeaseState::Unbounded`].
    pub fn keep_session_alive(&mut self) -> Result<SessionKeeper, Error> {
        let kept = self.keepalive()?;
        let credential = self
            .credential
            .expect("a keepalive is answered only to a registered client");
        SessionKeeper::start(self.servers.clone(), &self.options, credential, kept)
    }

    /// Until when this client may believe its session lives, by its last acknowledged
    /// keepalive (or registration); `None` before any, or without a TTL.
    pub fn lease(&self) -> Option<Instant> {
        self.lease
    }

    /// The highest server term seen in any reply.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The highest applied index seen in an `ok` answer.
    pub fn seen_index(&self) -> LogIndex {
        self.seen_index
    }

    /// The `index` of the last `ok` answer (the log index its state reflects): what a history
    /// records as the answer's `index`. Unlike [`Client::seen_index`] it can go down, which is
    /// exactly what a checker of stale reads must see.
    pub fn last_answer_index(&self) -> Option<LogIndex> {
        self.last_answer_index
    }

    /// The server addresses known: the listed ones, then leaders learnt from redirects.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The sequence number of the latest operation.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Registers now, if not yet registered, and returns the client id.
    pub fn register(&mut self) -> Result<ClientId, Error> {
        let deadline = Instant::now() + self.options.operation_timeout;
        self.ensure_registered(deadline)
            .map(|credential| credential.id)
    }

    /// Tries to take lock `name` exclusively (one holder). [`Client::preempt_with`] takes it
    /// shared, or one permit of a semaphore.
    pub fn preempt(&mut self, name: &str) -> Result<Preempt, Error> {
        self.preempt_with(name, Claim::EXCLUSIVE)
    }

    /// Gives lock `name` back.
    pub fn release(&mut self, name: &str) -> Result<Release, Error> {
        let op = |Credential { id, secret }, lock| WireOp::Release {
            client: id,
            secret: Some(secret),
            lock,
        };
        match self.run(name, op)? {
            Outcome::Released => Ok(Release::Released),
            Outcome::NotOwner => Ok(Release::NotOwner),
            other => unreachable!("client: {other:?} was accepted as a release's answer"),
        }
    }

    /// Who holds lock `name`.
    pub fn check(&mut self, name: &str, consistency: Consistency) -> Result<Check, Error> {
        let op = |Credential { id, secret }, lock| WireOp::Check {
            client: id,
            secret: Some(secret),
            lock,
            consistency,
        };
        match self.run(name, op)? {
            Outcome::Free => Ok(Check::Free),
            Outcome::Owner { owner, token } => Ok(Check::Owner { owner, token }),
            Outcome::Shared { holders, permits } => Ok(Check::Shared { holders, permits }),
            other => unreachable!("client: {other:?} was accepted as a check's answer"),
        }
    }

    fn run(
        &mut self,
        name: &str,
        make: impl FnOnce(Credential, LockName) -> WireOp,
    ) -> Result<Outcome, Error> {
        validate_lock_name(name).map_err(Error::InvalidInput)?;
        let deadline = Instant::now() + self.options.operation_timeout;
        let credential = self.ensure_registered(deadline)?;
        let op = make(credential, LockName::from(name));
        let seq = self.next_seq();
        match self.exchange(&op, seq, deadline)? {
            (_, Answer::Outcome(outcome)) => Ok(outcome),
            (
                _,
                answer @ (Answer::Welcome { .. } | Answer::Status(_) | Answer::KeptAlive { .. }),
            ) => {
                unreachable!("client: {answer:?} accepted for {op:?}")
            }
        }
    }

    fn ensure_registered(&mut self, deadline: Instant) -> Result<Credential, Error> {
        if let Some(credential) = self.credential {
            return Ok(credential);
        }
        let ttl = self.options.session_ttl;
        let hello = WireOp::Hello {
            nonce: rand::random(),
            ttl_ms: ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        };
        let seq = self.next_seq();
        let sent_at = Instant::now();
        let (_, answer) = self.exchange(&hello, seq, deadline)?;
        if let Some(ttl) = ttl {
            let lease = crate::node::client::LeaseRule {
                ttl,
                max_clock_drift: self.options.max_clock_drift,
                margin: self.options.lease_margin,
            };
            self.lease = Some(sent_at + lease.believed_for());
        }
        let Answer::Welcome { client, secret, .. } = answer else {
            unreachable!("client: an outcome accepted for a hello")
        };
        let credential = Credential { id: client, secret };
        self.credential = Some(credential);
        Ok(credential)
    }

    fn next_seq(&mut self) -> u64 {
        let before = self.last_seq;
        self.last_seq = self.last_seq.checked_add(1).expect("seq beyond u64");
        assert!(self.last_seq > before, "client: seqs must increase");
        self.last_seq
    }

    /// Sends `op` as `seq` until it is answered, refused, or `deadline` passes.
    fn exchange(
        &mut self,
        op: &WireOp,
        seq: u64,
        deadline: Instant,
    ) -> Result<(LogIndex, Answer), Error> {
        let pace = Pace {
            resend_after: self.options.attempt_timeout,
            stop: None,
        };
        let answered = self.exchange_paced(op, seq, deadline, pace)?;
        Ok(answered.expect("an exchange without a stop condition ends answered or failed"))
    }

    /// [`Client::exchange`] at `pace`: `None` when its stop condition ended it unanswered.
    fn exchange_paced(
        &mut self,
        op: &WireOp,
        seq: u64,
        deadline: Instant,
        mut pace: Pace<'_>,
    ) -> Result<Option<(LogIndex, Answer)>, Error> {
        let mut sent = false;
        let mut unreachable: Vec<Unreachable> = Vec::new();
        let mut failed_connects = 0usize;
        // Bounded by the deadline: every round sends and waits, or sleeps, or (after a
        // redirect or a broken old connection) resends at once, which happens at most once per
        // newer term or per server connection.
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.gave_up(op, sent, unreachable));
            }
            let attempt_term = self.term;
            let request = WireRequest {
                seq,
                seen_index: self.seen_index,
                term: attempt_term,
                op: op.clone(),
            };
            self.line.clear();
            encode_request_into(&request, &mut self.line);
            let position = self.position;
            let reused = match self.send_line(position, deadline) {
                Ok(reused) => reused,
                Err(reason) => {
                    note_unreachable(&mut unreachable, &self.servers[position], reason);
                    self.rotate();
                    failed_connects += 1;
                    if failed_connects.is_multiple_of(self.servers.len()) {
                        pause(self.options.error_backoff, deadline);
                    }
                    continue;
                }
            };
            sent = true;
            let attempt_deadline = deadline.min(now + pace.resend_after);
            let stop = pace.stop.as_deref_mut();
            match self.await_answer(position, (op, seq, attempt_term), attempt_deadline, stop)? {
                AttemptEnd::Answered { index, answer } => return Ok(Some((index, answer))),
                AttemptEnd::Stopped => return Ok(None),
                AttemptEnd::Redirected => failed_connects = 0,
                AttemptEnd::Silence => {
                    failed_connects = 0;
                    self.rotate();
                }
                AttemptEnd::Broken => {
                    self.connections[position] = None;
                    // A reused connection the server had closed (idle timeout, restart):
                    // retry the same server once on a fresh one. A fresh one that broke counts
                    // as a failed connect, so that servers that all accept and hang up are
                    // tried in rounds with a pause between, not in a busy loop.
                    if !reused {
                        note_unreachable(
                            &mut unreachable,
                            &self.servers[position],
                            "the server closed the connection".into(),
                        );
                        self.rotate();
                        failed_connects += 1;
                        if failed_connects.is_multiple_of(self.servers.len()) {
                            pause(self.options.error_backoff, deadline);
                        }
                    }
                }
                AttemptEnd::BackOff => {
                    failed_connects = 0;
                    pause(self.options.error_backoff, deadline);
                    self.rotate();
                }
            }
        }
    }

    fn gave_up(&self, op: &WireOp, sent: bool, tried: Vec<Unreachable>) -> Error {
        if !sent && !tried.is_empty() {
            return Error::NoServerReachable { tried };
        }
        let is_write = op.is_lock_write();
        Error::TimedOut {
            effect_unknown: sent && is_write,
            timeout: self.options.operation_timeout,
        }
    }

    /// Sends `self.line` to the server at `position`, connecting first if needed. Returns
    /// whether an existing connection was reused.
    fn send_line(&mut self, position: usize, deadline: Instant) -> Result<bool, String> {
        let reused = self.connections[position].is_some();
        if !reused {
            let address = &self.servers[position];
            let timeout = self
                .options
                .connect_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let connection = Connection::open(address, timeout, self.options.tls.as_ref())
                .map_err(|e| e.to_string())?;
            self.connections[position] = Some(connection);
        }
        let connection = self.connections[position]
            .as_mut()
            .expect("a connection was just opened");
        match connection.send(&self.line, deadline) {
            Ok(()) => Ok(reused),
            Err(ConnectionError::Broken(reason) | ConnectionError::Protocol(reason)) => {
                self.connections[position] = None;
                Err(reason)
            }
        }
    }

    /// Reads the server at `position` until the attempt is answered, `attempt_deadline`, or
    /// (looked at every [`STOP_POLL_INTERVAL`]) `stop` holds.
    fn await_answer(
        &mut self,
        position: usize,
        (op, seq, attempt_term): (&WireOp, u64, Term),
        attempt_deadline: Instant,
        mut stop: Option<&mut (dyn FnMut() -> bool + '_)>,
    ) -> Result<AttemptEnd, Error> {
        // Bounded by the deadline (each receive waits at most until it) and by the
        // connection's queue of lines.
        loop {
            if stop.as_mut().is_some_and(|stop| stop()) {
                return Ok(AttemptEnd::Stopped);
            }
            let slice_deadline = match stop {
                Some(_) => attempt_deadline.min(Instant::now() + STOP_POLL_INTERVAL),
                None => attempt_deadline,
            };
            let connection = self.connections[position]
                .as_mut()
                .expect("awaiting an answer on an open connection");
            let line = match connection.receive(slice_deadline) {
                Ok(Some(line)) => line,
                Ok(None) if Instant::now() < attempt_deadline => continue,
                Ok(None) => return Ok(AttemptEnd::Silence),
                Err(ConnectionError::Broken(_)) => return Ok(AttemptEnd::Broken),
                Err(ConnectionError::Protocol(message)) => {
                    self.connections[position] = None;
                    return Err(self.protocol_error(position, message));
                }
            };
            let verdict = match judge_line(&line, op, seq, attempt_term) {
                Ok(verdict) => verdict,
                Err(message) => {
                    self.connections[position] = None;
                    return Err(self.protocol_error(position, message));
                }
            };
            self.term = self.term.max(verdict.term().unwrap_or(0));
            match verdict {
                Verdict::NotOurs => continue,
                Verdict::Answered { index, answer, .. } => {
                    self.seen_index = self.seen_index.max(index);
                    self.last_answer_index = Some(index);
                    return Ok(AttemptEnd::Answered { index, answer });
                }
                Verdict::Redirect { leader_address, .. } => {
                    if let Some(address) = leader_address {
                        self.move_to(&address);
                    }
                    return Ok(AttemptEnd::Redirected);
                }
                Verdict::BackOff { .. } => return Ok(AttemptEnd::BackOff),
                Verdict::Rejected { code, message } => {
                    return Err(Error::Rejected { code, message });
                }
            }
        }
    }

    fn protocol_error(&self, position: usize, message: String) -> Error {
        Error::Protocol {
            server: self.servers[position].clone(),
            message,
        }
    }

    /// Talks to `address` next: a listed server, or a leader learnt from a redirect (added if
    /// there is room and the address is well-formed; otherwise the client stays put).
    fn move_to(&mut self, address: &str) {
        if let Some(position) = self.servers.iter().position(|s| s == address) {
            self.position = position;
            return;
        }
        if self.servers.len() < SERVERS_MAX && validate_address(address).is_ok() {
            self.servers.push(address.to_string());
            self.connections.push(None);
            self.position = self.servers.len() - 1;
        }
        assert_eq!(self.servers.len(), self.connections.len());
    }

    fn rotate(&mut self) {
        self.position = (self.position + 1) % self.servers.len();
    }
}

/// What one response line means to the attempt that sent `op` as `seq` with `attempt_term`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    /// A late answer to an earlier operation or attempt, or one that does not fit the
    /// operation: ignore it and keep waiting.
    NotOurs,
    /// The operation's answer. Adopt `term` if newer and raise `seen_index` to `index`.
    Answered {
        index: LogIndex,
        answer: Answer,
        term: Term,
    },
    /// `not_leader` with a newer term: adopt it and resend the same seq at once, to
    /// `leader_address` when named.
    Redirect {
        term: Term,
        leader_address: Option<String>,
    },
    /// `unavailable`, `overloaded`, or a `not_leader` naming no newer term: adopt `term` if
    /// newer, back off, then resend the same seq elsewhere.
    BackOff { term: Term },
    /// Refused for good (`stale_request`, `bad_request`, `unsupported_version`,
    /// `unknown_client`, `unauthorized`, `seq_reused`): never retried.
    Rejected { code: ErrorCode, message: String },
}

impl Verdict {
    /// The replying server's term, for the client to adopt if newer: every verdict on a reply
    /// that answers the running attempt carries one.
    pub(crate) fn term(&self) -> Option<Term> {
        match self {
            Verdict::Answered { term, .. }
            | Verdict::Redirect { term, .. }
            | Verdict::BackOff { term } => Some(*term),
            Verdict::NotOurs | Verdict::Rejected { .. } => None,
        }
    }
}

/// Judges one response line for the running attempt: the retry rules of docs/PROTOCOL.md,
/// shared by this client and the TCP load generator. `Err` is a protocol error: the line
/// does not decode, or it reports that the server could not read our request line.
pub(crate) fn judge_line(
    line: &[u8],
    op: &WireOp,
    seq: u64,
    attempt_term: Term,
) -> Result<Verdict, String> {
    let reply = decode_reply(line).map_err(|error| match error.kind {
        WireErrorKind::Malformed | WireErrorKind::UnsupportedVersion => error.message,
    })?;
    match reply.seq() {
        Some(reply_seq) if reply_seq == seq => {}
        // A late answer to an earlier operation, or to another attempt of it that a server
        // still held: not ours.
        Some(_) => return Ok(Verdict::NotOurs),
        None => {
            let message = match &reply {
                WireReply::Error(error) => error.message.clone(),
                WireReply::Ok { .. } => String::new(),
            };
            return Err(format!(
                "the server could not read a request line: {message}"
            ));
        }
    }
    let is_write = op.is_lock_write();
    let term = reply.term();
    if is_write && term < attempt_term {
        // Answers an attempt sent before we knew of `attempt_term`: only the current
        // attempt's answer counts (docs/PROTOCOL.md, Terms, rule 3).
        return Ok(Verdict::NotOurs);
    }
    let newer_term = term > attempt_term;
    Ok(match reply {
        // Does not answer this operation (a preempt answered `free`, a welcome with another
        // nonce): ignore it; the retry or the timeout follows.
        WireReply::Ok { answer, .. } if !answer_fits(op, &answer) => Verdict::NotOurs,
        WireReply::Ok { index, answer, .. } => Verdict::Answered {
            index,
            answer,
            term,
        },
        WireReply::Error(error) => match error.code {
            ErrorCode::NotLeader { leader_address, .. } if newer_term => Verdict::Redirect {
                term,
                leader_address,
            },
            // Lock-delay ends in `retry_after_ms`; backing off and retrying the same seq until
            // then costs a request per backoff, within the operation's timeout.
            ErrorCode::NotLeader { .. }
            | ErrorCode::Unavailable
            | ErrorCode::Overloaded
            | ErrorCode::LockDelayed { .. }
            | ErrorCode::QueueFull { .. } => Verdict::BackOff { term },
            code @ (ErrorCode::StaleRequest
            | ErrorCode::BadRequest
            | ErrorCode::UnsupportedVersion { .. }
            | ErrorCode::UnknownClient
            | ErrorCode::Unauthorized
            | ErrorCode::SessionExpired
            | ErrorCode::PermitsMismatch { .. }
            | ErrorCode::SeqReused) => Verdict::Rejected {
                code,
                message: error.message,
            },
        },
    })
}

/// True if `answer` answers `op` (the welcome with our nonce for a hello).
fn answer_fits(op: &WireOp, answer: &Answer) -> bool {
    match (op, answer) {
        (WireOp::Hello { nonce, .. }, Answer::Welcome { nonce: echoed, .. }) => nonce == echoed,
        (WireOp::Keepalive { .. }, Answer::KeptAlive { .. }) => true,
        (WireOp::Preempt { .. }, Answer::Outcome(outcome)) => {
            matches!(outcome, Outcome::Granted { .. } | Outcome::HeldBy { .. })
        }
        (WireOp::Release { .. }, Answer::Outcome(outcome)) => {
            matches!(outcome, Outcome::Released | Outcome::NotOwner)
        }
        (WireOp::Check { .. }, Answer::Outcome(outcome)) => matches!(
            outcome,
            Outcome::Free | Outcome::Owner { .. } | Outcome::Shared { .. }
        ),
        (WireOp::Acquire { .. }, Answer::Outcome(outcome)) => matches!(
            outcome,
            Outcome::Granted { .. }
                | Outcome::HeldBy { .. }
                | Outcome::TimedOut
                | Outcome::Cancelled
        ),
        (WireOp::Cancel { .. }, Answer::Outcome(outcome)) => {
            matches!(outcome, Outcome::Cancelled | Outcome::NotWaiting)
        }
        (WireOp::Status, Answer::Status(_)) => true,
        _ => false,
    }
}

/// Keeps one reason per address (the latest), in the order first seen.
fn note_unreachable(tried: &mut Vec<Unreachable>, address: &str, reason: String) {
    match tried.iter_mut().find(|u| u.address == address) {
        Some(entry) => entry.reason = reason,
        None => tried.push(Unreachable {
            address: address.to_string(),
            reason,
        }),
    }
}

/// Sleeps `duration`, but not past `deadline`.
fn pause(duration: Duration, deadline: Instant) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(duration.min(remaining));
}

/// Microseconds since 1970: the first seq of a process acting as an existing client id.
fn wall_clock_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        assert!(validate_address("127.0.0.1:7001").is_ok());
        assert!(validate_address("db-3.internal:80").is_ok());
        assert!(validate_address("[::1]:7001").is_ok());
        for bad in [
            "127.0.0.1",
            ":7001",
            "host:",
            "host:0",
            "host:99999",
            "::1:7001",
            "a b:1",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_servers(" 127.0.0.1:1, 127.0.0.1:2 ,"),
            Ok(vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()])
        );
        assert!(parse_servers("").is_err());
        assert!(parse_servers(",").is_err());
        assert!(parse_servers("127.0.0.1:1,nope").is_err());
    }

    #[test]
    fn lock_names_are_1_to_256_bytes() {
        assert!(validate_lock_name("a").is_ok());
        assert!(validate_lock_name(&"x".repeat(256)).is_ok());
        assert!(validate_lock_name("").is_err());
        assert!(validate_lock_name(&"x".repeat(257)).is_err());
    }

    #[test]
    fn a_client_acting_as_an_existing_id_starts_its_seqs_at_the_clock() {
        let options = ClientOptions {
            credential: Some(Credential {
                id: ClientId(7),
                secret: ClientSecret::from_bytes([7; 16]),
            }),
            ..ClientOptions::default()
        };
        let client = Client::new(vec!["127.0.0.1:1".into()], options).expect("valid");
        // 2020-01-01 in microseconds: any seq an earlier process used is far below the clock.
        assert!(client.last_seq() > 1_577_836_800_000_000);
        assert_eq!(client.client_id(), Some(ClientId(7)));
        let fresh =
            Client::new(vec!["127.0.0.1:1".into()], ClientOptions::default()).expect("valid");
        assert_eq!(fresh.last_seq(), 0);
        assert_eq!(fresh.client_id(), None);
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_is_sent() {
        assert!(matches!(
            Client::new(vec![], ClientOptions::default()),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            Client::new(vec!["nope".into()], ClientOptions::default()),
            Err(Error::InvalidInput(_))
        ));
        let options = ClientOptions {
            credential: Some(Credential {
                id: ClientId(0),
                secret: ClientSecret::from_bytes([7; 16]),
            }),
            ..ClientOptions::default()
        };
        assert!(Client::new(vec!["127.0.0.1:1".into()], options).is_err());
        let mut client =
            Client::new(vec!["127.0.0.1:1".into()], ClientOptions::default()).expect("valid");
        assert!(matches!(client.preempt(""), Err(Error::InvalidInput(_))));
        let long = "x".repeat(257);
        assert!(matches!(client.release(&long), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn a_credential_reads_as_id_colon_secret_and_never_shows_its_secret_in_debug() {
        let credential: Credential = "7:000102030405060708090a0b0c0d0e0f".parse().expect("valid");
        assert_eq!(credential.id, ClientId(7));
        assert_eq!(
            credential.to_argument(),
            "7:000102030405060708090a0b0c0d0e0f"
        );
        assert!(!format!("{credential:?}").contains("0a0b0c"));
        for bad in [
            "7",
            "0:000102030405060708090a0b0c0d0e0f",
            "x:00",
            "7:xyz",
            "7:0001",
        ] {
            let error = bad.parse::<Credential>().expect_err(bad);
            assert!(!error.is_empty());
        }
        let error = "7:zz0102030405060708090a0b0c0d0e0f"
            .parse::<Credential>()
            .unwrap_err();
        assert!(
            !error.contains("zz01"),
            "the error never repeats the secret: {error}"
        );
    }

    #[test]
    fn answers_fit_only_their_operation() {
        let lock: LockName = "a".into();
        let preempt = WireOp::Preempt {
            client: ClientId(1),
            secret: None,
            lock: lock.clone(),
            claim: Claim::SHARED,
        };
        assert!(answer_fits(
            &preempt,
            &Answer::Outcome(Outcome::Granted { token: 1 })
        ));
        assert!(!answer_fits(&preempt, &Answer::Outcome(Outcome::Free)));
        let check = WireOp::Check {
            client: ClientId(1),
            secret: None,
            lock,
            consistency: Consistency::Local,
        };
        let shared = Answer::Outcome(Outcome::Shared {
            holders: 2,
            permits: None,
        });
        assert!(answer_fits(&check, &shared), "a check may find readers");
        assert!(
            !answer_fits(&preempt, &shared),
            "a preempt never answers with a count"
        );
        let hello = WireOp::Hello {
            nonce: 5,
            ttl_ms: None,
        };
        let welcome = |nonce| Answer::Welcome {
            client: ClientId(1),
            nonce,
            secret: ClientSecret::from_bytes([1; 16]),
        };
        assert!(answer_fits(&hello, &welcome(5)));
        assert!(!answer_fits(&hello, &welcome(6)));
    }
}
