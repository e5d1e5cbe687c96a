//! The client wire protocol: newline-delimited JSON over TCP, one request per line and one
//! response per line, as a pure codec.
//!
//! This module turns bytes into requests and replies into bytes, for servers and for Rust
//! clients alike. It must never touch a socket, a clock or a thread, and bad input must never
//! panic it: every line that breaks the protocol becomes a typed [`WireError`], which the
//! server answers as a `bad_request` (or `unsupported_version`) response and then carries on.
//! `docs/PROTOCOL.md` is the reference for the format; the two MUST change together.
//!
//! Server side, per connection:
//! 1. [`LineDecoder::feed`] the bytes read; it yields [`LineEvent`]s with bounded memory.
//! 2. [`decode_request`] each line, then [`WireRequest::into_client_request`] for the node.
//! 3. [`encode_reply_with`] each `ClientReply` the node produces, with a lookup from server id
//!    to client address so that a `not_leader` names where the leader listens;
//!    [`encode_error`] the refusals the front end decides itself (a bad line, a version
//!    mismatch).
//!
//! Client side: [`encode_request`] (or [`encode_request_into`] a reused buffer), then
//! [`LineDecoder`] and [`decode_reply`] on what comes back.
//!
//! Watches (the `watch` module): `watch` and `unwatch` decode to [`WireOp::Watch`], which the
//! front end hands the node as a `WatchInput`; the server's watch lines, which carry the
//! watch's id instead of a seq, are [`encode_watch_reply`] and [`decode_watch_line`].
//!
//! One request never reaches the node: `status` ([`WireOp::Status`]) asks the answering server
//! about itself (role, term, indexes, uptime), and the server's front end answers it from what
//! the node task last published ([`WireReply::status`]). It needs no client id or secret: it
//! tells nothing about locks or clients.
//!
//! Terms: a request carries the highest server term its client has seen (`"term"`, default 0)
//! and every response the node produces carries the replying server's term. A write is
//! appended only by the leader of exactly the request's term; see `ClientRequest::term` for why
//! and docs/PROTOCOL.md for the client's side of the rule.
//!
//! The client id travels in every lock request (`"client":7`) instead of being bound to the
//! connection: locks belong to the client id, and a client that reconnects, or retries on
//! another server after a timeout, must present the same (client, seq) pair for its retry to
//! be exactly-once. Each line is therefore self-contained and a server keeps no session state
//! per connection.

use crate::node::{
    Claim, ClientId, ClientReply, ClientRequest, ClientSecret, Consistency, LockName, LogIndex,
    Mode, Operation, Outcome, PERMITS_MAX, ReplyBody, RequestBody, Role, ServerId, ServiceError,
    Term,
};

/// Longest wait an `acquire` may ask for: the node's own bound, which scenario files share.
pub use crate::node::ACQUIRE_WAIT_MS_MAX;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

mod watch;
pub use watch::{
    WatchRequest, decode_watch_line, encode_watch_reply, end_name as watch_end_name, is_watch_line,
};

/// The protocol version this codec speaks. A request without `version` means version 1, which
/// is refused: version 2 added the client secret.
pub const PROTOCOL_VERSION: u32 = 2;

/// Longest line, in bytes, not counting its newline. Longer lines are refused and discarded.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Longest lock name, in bytes: the node's own limit, which scenario files share.
pub use crate::node::LOCK_NAME_BYTES_MAX;

/// Most bytes of one overlong line the [`LineDecoder`] skips while looking for its newline.
/// A peer that sends more than this without a newline is not speaking the protocol, and the
/// connection is not worth keeping.
pub const OVERLONG_LINE_BYTES_MAX: u64 = 1024 * 1024;

/// Most characters of the client's own text (a field name, an unknown op) quoted back in an
/// error message, so that a reply stays short whatever the request held.
const QUOTED_CHARS_MAX: usize = 48;

// ----- requests -----

/// One request line, decoded. Mirrors `ClientRequest`; see [`WireRequest::into_client_request`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WireRequest {
    /// Chosen by the client; the response echoes it. Reused for a retry.
    pub seq: u64,
    /// The highest `index` the client has seen in an `ok` response (0 if none).
    pub seen_index: LogIndex,
    /// The highest `term` the client has seen in any response (0 if none).
    pub term: Term,
    pub op: WireOp,
}

/// What a request line asks for: the `op` field and the fields that go with it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WireOp {
    /// `"op":"hello"`: asks for a client id. `nonce` (default 0) is echoed in the welcome.
    /// `ttl_ms` (optional) asks for a session that expires without renewals.
    Hello { nonce: u64, ttl_ms: Option<u64> },
    /// `"op":"keepalive"`: renews the client's session.
    Keepalive {
        client: ClientId,
        secret: Option<ClientSecret>,
    },
    /// `"op":"preempt"`: takes the lock at once or is refused. `claim` is the optional `mode`
    /// and `permits` fields (docs/PROTOCOL.md, "Shared locks and semaphores").
    Preempt {
        client: ClientId,
        secret: Option<ClientSecret>,
        lock: LockName,
        claim: Claim,
    },
    Release {
        client: ClientId,
        secret: Option<ClientSecret>,
        lock: LockName,
    },
    Check {
        client: ClientId,
        secret: Option<ClientSecret>,
        lock: LockName,
        consistency: Consistency,
    },
    /// `"op":"acquire"`: the blocking acquire. Granted at once when free; otherwise queued for
    /// at most `wait_ms` (0 tries once, like a preempt; at most [`ACQUIRE_WAIT_MS_MAX`]). The
    /// answer comes when the wait is decided, possibly much later.
    Acquire {
        client: ClientId,
        secret: Option<ClientSecret>,
        lock: LockName,
        wait_ms: u64,
        claim: Claim,
    },
    /// `"op":"cancel"`: stops the client's wait for `lock`.
    Cancel {
        client: ClientId,
        secret: Option<ClientSecret>,
        lock: LockName,
    },
    /// `"op":"status"`: how the answering server is doing. It takes no other field (`seen_index`
    /// and `term` are accepted and ignored) and is answered by the server itself, never
    /// forwarded and never seen by the node.
    Status,
    /// `"op":"watch"` or `"op":"unwatch"`: a watch on this connection (docs/PROTOCOL.md,
    /// "watch"). The front end hands it to the node as a `WatchInput`, never as a request.
    Watch(WatchRequest),
}

impl WireOp {
    /// The `op` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            WireOp::Hello { .. } => "hello",
            WireOp::Keepalive { .. } => "keepalive",
            WireOp::Preempt { .. } => "preempt",
            WireOp::Release { .. } => "release",
            WireOp::Check { .. } => "check",
            WireOp::Acquire { .. } => "acquire",
            WireOp::Cancel { .. } => "cancel",
            WireOp::Status => "status",
            WireOp::Watch(watch) => watch.op_name(),
        }
    }

    /// True for the requests that go through the log and are carried out only by the leader
    /// of the request's term: their answers from an older term are not the current attempt's.
    pub fn is_lock_write(&self) -> bool {
        matches!(
            self,
            WireOp::Preempt { .. }
                | WireOp::Release { .. }
                | WireOp::Acquire { .. }
                | WireOp::Cancel { .. }
        )
    }
}

impl WireRequest {
    /// The node's request, or `None` for a `status`, which the server's front end answers
    /// itself, and for a `watch` or `unwatch`, which it hands the node as a `WatchInput`. The client id comes from the line itself, so the conversion needs nothing from
    /// the connection.
    pub fn into_client_request(self) -> Option<ClientRequest> {
        let body = match self.op {
            WireOp::Status | WireOp::Watch(_) => return None,
            WireOp::Hello { nonce, ttl_ms } => RequestBody::Hello { nonce, ttl_ms },
            WireOp::Keepalive { client, secret } => RequestBody::Keepalive { client, secret },
            WireOp::Preempt {
                client,
                secret,
                lock,
                claim,
            } => RequestBody::Op {
                client,
                secret,
                op: Operation::Preempt { lock, claim },
            },
            WireOp::Release {
                client,
                secret,
                lock,
            } => RequestBody::Op {
                client,
                secret,
                op: Operation::Release { lock },
            },
            WireOp::Check {
                client,
                secret,
                lock,
                consistency,
            } => RequestBody::Op {
                client,
                secret,
                op: Operation::Check { lock, consistency },
            },
            WireOp::Acquire {
                client,
                secret,
                lock,
                wait_ms,
                claim,
            } => RequestBody::Op {
                client,
                secret,
                op: Operation::Acquire {
                    lock,
                    wait_ms,
                    claim,
                },
            },
            WireOp::Cancel {
                client,
                secret,
                lock,
            } => RequestBody::Op {
                client,
                secret,
                op: Operation::Cancel { lock },
            },
        };
        Some(ClientRequest {
            seq: self.seq,
            seen_index: self.seen_index,
            term: self.term,
            body,
        })
    }
}

/// A node request that protocol version 2 has no line for.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("`{op}` has no request line in protocol version 2 yet (issue 12, section 4)")]
pub struct NotOnTheWire {
    pub op: &'static str,
}

impl TryFrom<ClientRequest> for WireRequest {
    type Error = NotOnTheWire;

    /// For a Rust client that runs the node's `Client` state machine over TCP. Every node
    /// request has a line today; the error stays for operations the node learns before the
    /// wire does.
    fn try_from(request: ClientRequest) -> Result<WireRequest, NotOnTheWire> {
        let op = match request.body {
            RequestBody::Hello { nonce, ttl_ms } => WireOp::Hello { nonce, ttl_ms },
            RequestBody::Keepalive { client, secret } => WireOp::Keepalive { client, secret },
            RequestBody::Op { client, secret, op } => match op {
                Operation::Preempt { lock, claim } => WireOp::Preempt {
                    client,
                    secret,
                    lock,
                    claim,
                },
                Operation::Release { lock } => WireOp::Release {
                    client,
                    secret,
                    lock,
                },
                Operation::Check { lock, consistency } => WireOp::Check {
                    client,
                    secret,
                    lock,
                    consistency,
                },
                Operation::Acquire {
                    lock,
                    wait_ms,
                    claim,
                } => WireOp::Acquire {
                    client,
                    secret,
                    lock,
                    wait_ms,
                    claim,
                },
                Operation::Cancel { lock } => WireOp::Cancel {
                    client,
                    secret,
                    lock,
                },
            },
        };
        Ok(WireRequest {
            seq: request.seq,
            seen_index: request.seen_index,
            term: request.term,
            op,
        })
    }
}

// ----- replies -----

/// One response line, decoded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WireReply {
    /// `"ok"`: the service decided. `index` is the applied log index the answer reflects,
    /// `term` the replying server's term (0 from a server that does not send terms).
    Ok {
        seq: u64,
        index: LogIndex,
        term: Term,
        answer: Answer,
    },
    /// `"error"`: the request was not served; the code says what to do next.
    Error(ErrorReply),
}

impl WireReply {
    /// The echoed `seq`; `None` only for an error about a line whose seq could not be read.
    pub fn seq(&self) -> Option<u64> {
        match self {
            WireReply::Ok { seq, .. } => Some(*seq),
            WireReply::Error(error) => error.seq,
        }
    }

    /// The replying server's term: 0 when the response did not state one (a front-end refusal
    /// such as `bad_request`, or a server that predates terms).
    pub fn term(&self) -> Term {
        match self {
            WireReply::Ok { term, .. } => *term,
            WireReply::Error(error) => error.term.unwrap_or(0),
        }
    }
}

/// The body of an `ok` response.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Answer {
    /// `"ok":"welcome"`: the answer to hello, with the secret every later request carries.
    Welcome {
        client: ClientId,
        nonce: u64,
        secret: ClientSecret,
    },
    /// `"ok":"granted"`, `"held_by"`, `"released"`, `"not_owner"`, `"free"`, `"owner"`, and
    /// for the blocking acquire `"timeout"` (`Outcome::TimedOut`), `"cancelled"` and
    /// `"not_waiting"`.
    Outcome(Outcome),
    /// `"ok":"status"`: the answer to status. The reply's `term` is the server's term and its
    /// `index` the server's applied index.
    Status(ServerStatus),
    /// `"ok":"kept_alive"`: the answer to keepalive, with the session's `ttl_ms` (absent for a
    /// session that never expires).
    KeptAlive { ttl_ms: Option<u64> },
}

/// What a server says about itself in answer to `status`, besides its term and applied index
/// (the reply's `term` and `index`). A snapshot of one moment: every field comes from the same
/// round of the node task.
///
/// Decoding checks what always holds of one server: `snapshot_index <= applied <= commit_index
/// <= last_index`, where applied is the reply's `index`.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct ServerStatus {
    /// Which server answered.
    pub server: ServerId,
    pub role: Role,
    /// The leader of the server's term, when it knows one (itself, if it leads).
    pub leader: Option<ServerId>,
    /// The highest log index the server knows to be committed.
    pub commit_index: LogIndex,
    /// The index of the last entry in the server's log, committed or not.
    pub last_index: LogIndex,
    /// The last index the server's snapshot covers (0 without one); its log holds the entries
    /// after it, `last_index - snapshot_index` of them.
    pub snapshot_index: LogIndex,
    /// The size of the server's write-ahead log file, in bytes.
    pub log_bytes: u64,
    /// How long the server process has been serving, in milliseconds.
    pub uptime_ms: u64,
}

impl ServerStatus {
    /// Entries held in the log after the snapshot.
    pub fn log_entries(&self) -> u64 {
        self.last_index.saturating_sub(self.snapshot_index)
    }
}

/// A role as the `role` field of a status reply writes it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre_candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// The role a `role` field names, if any.
pub fn parse_role(name: &str) -> Option<Role> {
    [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ]
    .into_iter()
    .find(|&role| role_name(role) == name)
}

/// An `error` response. `seq` is `None` only when the request's seq could not be read.
///
/// `message` and `NotLeader::leader_address` MUST keep the encoded line within
/// [`LINE_BYTES_MAX`]; every constructor here does.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ErrorReply {
    pub seq: Option<u64>,
    /// The replying server's term. Present on every refusal the node decides; absent on the
    /// front end's own refusals of a line (`bad_request`, `unsupported_version`), which never
    /// reached the node.
    pub term: Option<Term>,
    pub code: ErrorCode,
    /// For people: what went wrong and what to do. Clients act on `code`, never on this text.
    pub message: String,
}

/// Every error code a response may carry, with the fields that go with it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ErrorCode {
    /// The request named another term than the current leader's (the response's `term`).
    /// Adopt that term and resend the same seq, to `leader` when it is named.
    NotLeader {
        /// The leader of the response's term, when this server knows it.
        leader: Option<ServerId>,
        /// `host:port` of the leader's client listener, when this server knows it.
        leader_address: Option<String>,
    },
    /// No leader known, or this replica lags behind the request's `seen_index`.
    Unavailable,
    /// Too much work in flight: back off.
    Overloaded,
    /// A newer request of this client was already applied; this one never will be.
    StaleRequest,
    /// The line breaks the protocol: fix the request.
    BadRequest,
    /// The request asked for a protocol version this server does not speak.
    UnsupportedVersion { supported: u32 },
    /// No hello issued the request's client id. Nothing was applied: say hello.
    UnknownClient,
    /// The request's secret is missing or wrong for its client id. Nothing was applied.
    Unauthorized,
    /// The client already used this seq for another operation, lock or claim (mode and
    /// permits). Nothing was applied:
    /// a retry repeats its operation exactly, a new operation takes a new seq.
    SeqReused,
    /// The client's session expired and its locks were released. Nothing was applied: say
    /// hello again for a new id.
    SessionExpired,
    /// The lock was freed by an expired session less than the server's lock-delay ago.
    /// Nothing was applied: retry the same seq after `retry_after_ms`.
    LockDelayed { retry_after_ms: u64 },
    /// The lock's queue already holds `waiters_max` waiters: the acquire was not queued and
    /// nothing changed. Retryable after a back-off (the queue drains as waiters are served),
    /// but about this lock, not this server: another server gives the same answer.
    QueueFull { waiters_max: u32 },
    /// A preempt or acquire named other `permits` than the lock's, which is in use: `permits`
    /// is the declaration in force (`None`: a plain lock, no permits). Decided by the lock
    /// table and remembered under the seq like `held_by`, so a retry of the same seq gets it
    /// again; a new request (new seq) with matching permits, or once the lock is free, may
    /// succeed.
    PermitsMismatch { permits: Option<u32> },
}

impl ErrorCode {
    /// The `error` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorCode::NotLeader { .. } => "not_leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StaleRequest => "stale_request",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion { .. } => "unsupported_version",
            ErrorCode::UnknownClient => "unknown_client",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::SeqReused => "seq_reused",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::LockDelayed { .. } => "lock_delayed",
            ErrorCode::QueueFull { .. } => "queue_full",
            ErrorCode::PermitsMismatch { .. } => "permits_mismatch",
        }
    }
}

/// How a server front end finds the client address (`host:port`) of a server id, to put it
/// in a `not_leader` response. The node knows only ids; the front end knows the addresses.
pub type AddressLookup<'a> = &'a dyn Fn(ServerId) -> Option<String>;

/// Longest node-supplied reason (a `BadRequest`'s), in characters, quoted in a message.
const REASON_CHARS_MAX: usize = 200;

impl ErrorReply {
    /// The node's refusal of request `seq`, from a server in `term`, with a message that says
    /// what the client should do. `leader_address` names the leader's client listener in a
    /// `not_leader`.
    pub fn from_service_error(
        seq: u64,
        term: Term,
        error: &ServiceError,
        leader_address: AddressLookup<'_>,
    ) -> ErrorReply {
        // The node's own texts name one cause each; on the wire, say every cause the code
        // covers and the client's next step.
        let (code, message) = match error {
            ServiceError::Unavailable => (
                ErrorCode::Unavailable,
                "this server cannot serve the request now (it knows no leader, or its replica \
                 is behind your seen_index); retry the same seq after a pause, here or on \
                 another server"
                    .to_string(),
            ),
            ServiceError::Overloaded => (
                ErrorCode::Overloaded,
                "this server has too much work in flight; back off, then retry the same seq"
                    .to_string(),
            ),
            ServiceError::StaleRequest => (
                ErrorCode::StaleRequest,
                "a newer request of this client was already applied, so this one never will \
                 be; send new requests with a higher seq"
                    .to_string(),
            ),
            ServiceError::NotLeader {
                leader,
                term: leader_term,
            } => {
                let address = leader.and_then(leader_address);
                return ErrorReply::not_leader(seq, *leader_term, *leader, address);
            }
            ServiceError::BadRequest { reason } => (
                ErrorCode::BadRequest,
                format!(
                    "the request breaks a limit: {}; fix the request, do not retry it unchanged",
                    cut(reason, REASON_CHARS_MAX)
                ),
            ),
            ServiceError::UnknownClient { client } => (
                ErrorCode::UnknownClient,
                format!(
                    "no hello issued client id {}; nothing was done. Say hello to get an id and \
                     its secret",
                    client.0
                ),
            ),
            ServiceError::Unauthorized => (
                ErrorCode::Unauthorized,
                "the request's `secret` is missing or is not the one issued with its client id; \
                 nothing was done. Send the secret your welcome gave"
                    .to_string(),
            ),
            ServiceError::SeqReused { seq } => (
                ErrorCode::SeqReused,
                format!(
                    "seq {seq} was already used by this client for another operation, lock or \
                     claim; nothing was done. A retry repeats its operation exactly; a new \
                     operation takes a new, higher seq"
                ),
            ),
            ServiceError::SessionExpired { client } => (
                ErrorCode::SessionExpired,
                format!(
                    "the session of client id {} expired and its locks were released; nothing \
                     was done. Say hello again for a new id",
                    client.0
                ),
            ),
            ServiceError::QueueFull { waiters_max } => (
                ErrorCode::QueueFull {
                    waiters_max: *waiters_max,
                },
                format!(
                    "the lock's queue already holds {waiters_max} waiters; nothing was done. \
                     Back off, then retry the same seq (any server gives the same answer until \
                     the queue drains)"
                ),
            ),
            ServiceError::LockDelayed { retry_after_ms } => (
                ErrorCode::LockDelayed {
                    retry_after_ms: *retry_after_ms,
                },
                format!(
                    "the lock was freed by an expired session and is held back for the server's \
                     lock-delay; nothing was done. Retry the same seq in {retry_after_ms} ms"
                ),
            ),
        };
        ErrorReply {
            seq: Some(seq),
            term: Some(term),
            code,
            message,
        }
    }

    /// The lock table's `permits_mismatch` outcome as the wire carries it: an error, since
    /// the client asked for something that cannot be had under those permits, and a retry of
    /// the same request never changes that (docs/PROTOCOL.md, "Shared locks and semaphores").
    pub fn permits_mismatch(seq: u64, term: Term, permits: Option<u32>) -> ErrorReply {
        let declared = match permits {
            Some(permits) => format!("a semaphore of {permits} permits"),
            None => "a plain lock (no permits)".to_string(),
        };
        ErrorReply {
            seq: Some(seq),
            term: Some(term),
            code: ErrorCode::PermitsMismatch { permits },
            message: format!(
                "the lock is in use as {declared}, and your claim named other permits; nothing \
                 was done. Claim with the lock's permits (or none), or wait until it is free; a \
                 retry of this seq gets this answer again"
            ),
        }
    }

    /// A write named another term than the current leader's: `term` is current, led by
    /// `leader` (at `leader_address`) when known. The client adopts `term` and resends.
    pub fn not_leader(
        seq: u64,
        term: Term,
        leader: Option<ServerId>,
        leader_address: Option<String>,
    ) -> ErrorReply {
        let place = match (leader, &leader_address) {
            (Some(leader), Some(address)) => {
                format!("to server {} at {}", leader.0, quoted(address))
            }
            (Some(leader), None) => format!("to server {} or through any server", leader.0),
            (None, _) => "here or to another server; no leader is known here yet".to_string(),
        };
        ErrorReply {
            seq: Some(seq),
            term: Some(term),
            code: ErrorCode::NotLeader {
                leader,
                leader_address: leader.and(leader_address),
            },
            message: format!(
                "the request did not name the current leader's term; resend the same seq with \
                 term {term} {place}"
            ),
        }
    }
}

impl From<WireError> for ErrorReply {
    /// How a server answers a line that breaks the protocol.
    fn from(error: WireError) -> ErrorReply {
        let code = match error.kind {
            WireErrorKind::Malformed => ErrorCode::BadRequest,
            WireErrorKind::UnsupportedVersion => ErrorCode::UnsupportedVersion {
                supported: PROTOCOL_VERSION,
            },
        };
        ErrorReply {
            seq: error.seq,
            term: None,
            code,
            message: error.message,
        }
    }
}

impl From<&ClientReply> for WireReply {
    /// The node's reply as it goes on the wire, without leader addresses
    /// (see [`WireReply::from_node`]). Error responses carry no `index`.
    fn from(reply: &ClientReply) -> WireReply {
        WireReply::from_node(reply, &|_| None)
    }
}

impl WireReply {
    /// A server's answer to `status` request `seq`: it is in `term` and has applied everything
    /// up to `applied_index`.
    pub fn status(
        seq: u64,
        term: Term,
        applied_index: LogIndex,
        status: ServerStatus,
    ) -> WireReply {
        WireReply::Ok {
            seq,
            index: applied_index,
            term,
            answer: Answer::Status(status),
        }
    }

    /// The node's reply as it goes on the wire; a `not_leader` names the leader's client
    /// address when `leader_address` knows it. Error responses carry no `index`.
    pub fn from_node(reply: &ClientReply, leader_address: AddressLookup<'_>) -> WireReply {
        let answer = match &reply.body {
            ReplyBody::Welcome {
                nonce,
                client,
                secret,
            } => Answer::Welcome {
                client: *client,
                nonce: *nonce,
                secret: *secret,
            },
            ReplyBody::Outcome(Outcome::PermitsMismatch { permits }) => {
                return WireReply::Error(ErrorReply::permits_mismatch(
                    reply.seq, reply.term, *permits,
                ));
            }
            ReplyBody::Outcome(outcome) => Answer::Outcome(*outcome),
            ReplyBody::KeptAlive { ttl_ms } => Answer::KeptAlive { ttl_ms: *ttl_ms },
            ReplyBody::Error(error) => {
                return WireReply::Error(ErrorReply::from_service_error(
                    reply.seq,
                    reply.term,
                    error,
                    leader_address,
                ));
            }
        };
        WireReply::Ok {
            seq: reply.seq,
            index: reply.index,
            term: reply.term,
            answer,
        }
    }
}

// ----- decode errors -----

/// A line that breaks the protocol. It never makes the connection unusable: lines are framed
/// by newlines, so the next line starts afresh. A server answers it with
/// `encode_error(&ErrorReply::from(error))`.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// The line's seq, when it could be read; echoed in the error response.
    pub seq: Option<u64>,
    pub kind: WireErrorKind,
    /// What is wrong, for people.
    pub message: String,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum WireErrorKind {
    /// Not JSON, not an object, an unknown op, a missing, mistyped or unknown field, a line too
    /// long. Answered `bad_request`.
    Malformed,
    /// A version other than [`PROTOCOL_VERSION`]. Answered `unsupported_version`.
    UnsupportedVersion,
}

impl WireError {
    fn malformed(seq: Option<u64>, message: impl Into<String>) -> WireError {
        WireError {
            seq,
            kind: WireErrorKind::Malformed,
            message: message.into(),
        }
    }

    /// For [`LineEvent::TooLong`].
    pub fn line_too_long() -> WireError {
        WireError::malformed(
            None,
            format!(
                "a line is longer than {LINE_BYTES_MAX} bytes; it was discarded up to its \
                 newline"
            ),
        )
    }

    /// For [`LineEvent::Abandoned`]: the last words before the server closes the connection.
    pub fn line_abandoned() -> WireError {
        WireError::malformed(
            None,
            format!(
                "{OVERLONG_LINE_BYTES_MAX} bytes without a newline; this is not the lockstep \
                 protocol, closing the connection"
            ),
        )
    }
}

// ----- encoding -----

/// Every field a request line may hold, in the order they are written. Absent ones are
/// omitted. Requests are decoded field by field instead (`RequestReader`), for the messages.
#[derive(Default, Serialize)]
struct RequestFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<ClientSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<Consistency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seen_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
}

/// Every field a response line may hold, in the order they are written. Absent ones are
/// omitted. Decoding ignores fields not listed here, so that a server may add fields within a
/// version. Text borrows from the reply being encoded, or from the line being decoded where it
/// holds no escapes: every answer passes through here, at both ends.
#[derive(Default, Serialize, Deserialize)]
struct ReplyFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        borrow,
        deserialize_with = "borrowed_text"
    )]
    ok: Option<Cow<'a, str>>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        borrow,
        deserialize_with = "borrowed_text"
    )]
    error: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<ClientSecret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holders: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        borrow,
        deserialize_with = "borrowed_text"
    )]
    leader_address: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<u64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        borrow,
        deserialize_with = "borrowed_text"
    )]
    message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        borrow,
        deserialize_with = "borrowed_text"
    )]
    role: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiters_max: Option<u32>,
}

/// One line: the JSON object and its newline.
fn write_line(fields: &impl Serialize) -> Vec<u8> {
    let mut line = Vec::new();
    append_line(fields, &mut line);
    line
}

/// Appends one line, the JSON object and its newline, to `out`.
fn append_line(fields: &impl Serialize, out: &mut Vec<u8>) {
    let start = out.len();
    serde_json::to_writer(&mut *out, fields).expect("a struct of numbers and strings serializes");
    // Pair assertion with the line decoder: compact JSON escapes every newline in a string, so
    // the only newline is the one that ends the line.
    assert!(
        !out[start..].contains(&b'\n'),
        "protocol: an encoded line holds a raw newline"
    );
    out.push(b'\n');
}

/// A request line for the server, with its trailing newline. Every request carries
/// `"version":PROTOCOL_VERSION`; `seen_index` and `term` are written only when they are not 0.
///
/// The encoder does not check the request: a lock name over [`LOCK_NAME_BYTES_MAX`] is
/// written as is, and the server answers `bad_request`.
#[must_use]
pub fn encode_request(request: &WireRequest) -> Vec<u8> {
    let mut line = Vec::new();
    encode_request_into(request, &mut line);
    line
}

/// [`encode_request`] appended to `out`, so that a client can reuse one buffer for every
/// request it sends.
pub fn encode_request_into(request: &WireRequest, out: &mut Vec<u8>) {
    let mut fields = RequestFields {
        seq: Some(request.seq),
        op: Some(request.op.name()),
        seen_index: (request.seen_index != 0).then_some(request.seen_index),
        term: (request.term != 0).then_some(request.term),
        version: Some(PROTOCOL_VERSION),
        ..RequestFields::default()
    };
    match &request.op {
        WireOp::Status => {}
        WireOp::Watch(watch) => return watch::encode_watch_request(request, watch, out),
        WireOp::Hello { nonce, ttl_ms } => {
            fields.nonce = Some(*nonce);
            fields.ttl_ms = *ttl_ms;
        }
        WireOp::Keepalive { client, secret } => {
            fields.client = Some(client.0);
            fields.secret = *secret;
        }
        WireOp::Preempt {
            client,
            secret,
            lock,
            claim,
        } => {
            fields.client = Some(client.0);
            fields.secret = *secret;
            fields.lock = Some(lock);
            write_claim(&mut fields, *claim);
        }
        WireOp::Release {
            client,
            secret,
            lock,
        }
        | WireOp::Cancel {
            client,
            secret,
            lock,
        } => {
            fields.client = Some(client.0);
            fields.secret = *secret;
            fields.lock = Some(lock);
        }
        WireOp::Acquire {
            client,
            secret,
            lock,
            wait_ms,
            claim,
        } => {
            fields.client = Some(client.0);
            fields.secret = *secret;
            fields.lock = Some(lock);
            fields.wait_ms = Some(*wait_ms);
            write_claim(&mut fields, *claim);
        }
        WireOp::Check {
            client,
            secret,
            lock,
            consistency,
        } => {
            fields.client = Some(client.0);
            fields.secret = *secret;
            fields.lock = Some(lock);
            fields.consistency = Some(*consistency);
        }
    }
    append_line(&fields, out);
}

/// A claim's fields: none for the default (exclusive, no permits), so that a plain request
/// reads as before modes; otherwise `mode` always, since `permits` alone reads as shared.
fn write_claim(fields: &mut RequestFields, claim: Claim) {
    if claim.is_default() {
        return;
    }
    fields.mode = Some(claim.mode);
    fields.permits = claim.permits;
}

/// The node's reply as a response line, with its trailing newline. A `not_leader` names no
/// leader address; a server front end uses [`encode_reply_with`].
#[must_use]
pub fn encode_reply(reply: &ClientReply) -> Vec<u8> {
    encode_wire_reply(&WireReply::from(reply))
}

/// The node's reply as a response line, with its trailing newline. A `not_leader` that names
/// a leader gets `leader_address` from the lookup, for example
/// `encode_reply_with(&reply, &|id| peers.get(&id).cloned())`.
#[must_use]
pub fn encode_reply_with(reply: &ClientReply, leader_address: AddressLookup<'_>) -> Vec<u8> {
    encode_wire_reply(&WireReply::from_node(reply, leader_address))
}

/// A refusal as a response line, with its trailing newline.
#[must_use]
pub fn encode_error(error: &ErrorReply) -> Vec<u8> {
    let mut fields = ReplyFields {
        seq: error.seq,
        term: error.term,
        error: Some(Cow::Borrowed(error.code.name())),
        message: Some(Cow::Borrowed(&error.message)),
        ..ReplyFields::default()
    };
    match &error.code {
        ErrorCode::NotLeader {
            leader,
            leader_address,
        } => {
            fields.leader = leader.map(|leader| leader.0);
            fields.leader_address = leader_address.as_deref().map(Cow::Borrowed);
        }
        ErrorCode::UnsupportedVersion { supported } => fields.version = Some(*supported),
        ErrorCode::LockDelayed { retry_after_ms } => fields.retry_after_ms = Some(*retry_after_ms),
        ErrorCode::QueueFull { waiters_max } => fields.waiters_max = Some(*waiters_max),
        ErrorCode::PermitsMismatch { permits } => fields.permits = *permits,
        ErrorCode::SessionExpired
        | ErrorCode::Unavailable
        | ErrorCode::Overloaded
        | ErrorCode::StaleRequest
        | ErrorCode::BadRequest
        | ErrorCode::UnknownClient
        | ErrorCode::Unauthorized
        | ErrorCode::SeqReused => {}
    }
    let line = write_line(&fields);
    assert!(
        line.len() <= LINE_BYTES_MAX,
        "protocol: a {}-byte {} response is over the line limit",
        line.len(),
        error.code.name()
    );
    line
}

/// Any response line, with its trailing newline.
#[must_use]
pub fn encode_wire_reply(reply: &WireReply) -> Vec<u8> {
    let (seq, index, term, answer) = match reply {
        WireReply::Error(error) => return encode_error(error),
        WireReply::Ok {
            seq,
            index,
            term,
            answer,
        } => (*seq, *index, *term, answer),
    };
    if let Answer::Outcome(Outcome::PermitsMismatch { permits }) = answer {
        // An error on the wire, whichever way it reached the encoder.
        return encode_error(&ErrorReply::permits_mismatch(seq, term, *permits));
    }
    let mut fields = ReplyFields {
        seq: Some(seq),
        index: Some(index),
        term: Some(term),
        ..ReplyFields::default()
    };
    let ok = match *answer {
        Answer::Welcome {
            client,
            nonce,
            secret,
        } => {
            fields.client = Some(client.0);
            fields.nonce = Some(nonce);
            fields.secret = Some(secret);
            fields.version = Some(PROTOCOL_VERSION);
            "welcome"
        }
        Answer::Outcome(outcome) => outcome_fields(&mut fields, outcome),
        Answer::Status(status) => {
            fields.server = Some(status.server.0);
            fields.role = Some(Cow::Borrowed(role_name(status.role)));
            fields.leader = status.leader.map(|leader| leader.0);
            fields.commit_index = Some(status.commit_index);
            fields.last_index = Some(status.last_index);
            fields.snapshot_index = Some(status.snapshot_index);
            fields.log_bytes = Some(status.log_bytes);
            fields.uptime_ms = Some(status.uptime_ms);
            "status"
        }
        Answer::KeptAlive { ttl_ms } => {
            fields.ttl_ms = ttl_ms;
            "kept_alive"
        }
    };
    fields.ok = Some(Cow::Borrowed(ok));
    write_line(&fields)
}

/// Fills in an outcome's fields; returns the `ok` value.
fn outcome_fields(fields: &mut ReplyFields, outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Granted { token } => {
            fields.token = Some(token);
            "granted"
        }
        Outcome::HeldBy { owner } => {
            fields.owner = Some(owner.0);
            "held_by"
        }
        Outcome::Released => "released",
        Outcome::NotOwner => "not_owner",
        Outcome::Free => "free",
        Outcome::Owner { owner, token } => {
            fields.owner = Some(owner.0);
            fields.token = Some(token);
            "owner"
        }
        // The blocking acquire's answers, to an acquire or a cancel only. `queued` never
        // reaches a client (the node parks a queued acquire's answer until it is decided); it
        // is written all the same, so that encoding is total.
        Outcome::Queued => "queued",
        Outcome::TimedOut => "timeout",
        Outcome::Cancelled => "cancelled",
        Outcome::NotWaiting => "not_waiting",
        // Sent as an error (`encode_wire_reply` takes it first); written here all the same,
        // so that this function is total.
        Outcome::PermitsMismatch { permits } => {
            fields.permits = permits;
            "permits_mismatch"
        }
        // A check of a lock held in shared mode: how many hold it, and its declared permits.
        Outcome::Shared { holders, permits } => {
            fields.holders = Some(holders);
            fields.permits = permits;
            "shared"
        }
    }
}

// ----- decoding requests -----

/// Decodes one request line (with or without its newline).
///
/// Every problem is a [`WireError`] whose message names the field and what it should be, and
/// which carries the seq whenever the line had a readable one. The version is checked right
/// after the seq, so a client of another version hears about the version, not about a field
/// it did not expect.
///
/// Two decoders share the work. Every line goes first through a typed one
/// ([`decode_well_formed`]) that reads the fields straight into place and only says yes or no;
/// a line it does not take goes through the careful one ([`decode_with_reasons`]), which
/// decides again from scratch and says what is wrong. The careful one alone decides every
/// refusal, so the messages are its own; the typed one is the fast path every well-formed
/// request takes. The two MUST agree on every line the typed one takes (a test feeds both
/// generated lines); a field the typed one does not know sends its line down the careful path.
pub fn decode_request(line: &[u8]) -> Result<WireRequest, WireError> {
    check_line(line)?;
    match decode_well_formed(line) {
        Some(request) => Ok(request),
        None => decode_with_reasons(line),
    }
}

/// [`decode_request`] through the careful decoder alone. For tests and fuzz targets that check
/// that the fast path changes no answer: both functions MUST return the same for every line.
#[doc(hidden)]
pub fn decode_request_carefully(line: &[u8]) -> Result<WireRequest, WireError> {
    check_line(line)?;
    decode_with_reasons(line)
}

/// What both decoders refuse before reading any JSON: a line over the limit, an empty line.
fn check_line(line: &[u8]) -> Result<(), WireError> {
    let content = line.strip_suffix(b"\n").unwrap_or(line);
    if content.len() > LINE_BYTES_MAX {
        return Err(WireError::line_too_long());
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(WireError::malformed(
            None,
            r#"empty line: send one JSON object per line, like {"seq":1,"op":"hello"}"#,
        ));
    }
    Ok(())
}

/// The careful decoder: the line as a JSON object of `Value`s, read field by field so that
/// every refusal names its field. Slower than [`decode_well_formed`] (a map of owned values per
/// line), and taken only by lines that one refused.
fn decode_with_reasons(line: &[u8]) -> Result<WireRequest, WireError> {
    let map = match serde_json::from_slice::<UniqueKeys>(line) {
        Ok(UniqueKeys {
            duplicate: Some(key),
            ..
        }) => {
            return Err(WireError::malformed(
                None,
                format!(
                    "the field {} appears twice; send each field once",
                    quoted(&key)
                ),
            ));
        }
        Ok(UniqueKeys { map, .. }) => map,
        Err(error) => {
            // Say what the line is instead, when it is JSON but not an object.
            let value: Value = serde_json::from_slice(line)
                .map_err(|error| WireError::malformed(None, format!("not valid JSON: {error}")))?;
            if !value.is_object() {
                return Err(WireError::malformed(
                    None,
                    format!(
                        r#"a request is one JSON object, like {{"seq":1,"op":"hello"}}; got {}"#,
                        describe(&value)
                    ),
                ));
            }
            return Err(WireError::malformed(None, error.to_string()));
        }
    };
    let mut reader = RequestReader { map, seq: None };
    let seq = reader.seq()?;
    reader.version()?;
    let op = reader.op()?;
    let seen_index = reader.whole_number("seen_index", "the highest index you have seen")?;
    let term = reader.whole_number("term", "the highest term you have seen")?;
    let request = WireRequest {
        seq,
        seen_index: seen_index.unwrap_or(0),
        term: term.unwrap_or(0),
        op,
    };
    reader.finish(&request.op)?;
    Ok(request)
}

// ----- the typed request decoder -----

/// The fast path of [`decode_request`]: the request if the line is one well-formed request,
/// `None` for anything else, without saying why (the careful decoder says that).
///
/// It takes a line only if [`decode_with_reasons`] would decode it to the very same request:
/// one JSON object, each field at most once and known, of the right JSON type (never `null`),
/// `version` 2, and exactly the fields its op takes with the values they allow.
fn decode_well_formed(line: &[u8]) -> Option<WireRequest> {
    let fields: TypedFields<'_> = serde_json::from_slice(line).ok()?;
    fields.into_request()
}

/// Every field a request may hold. To add one: a variant here, a slot in [`TypedFields`] and a
/// rule in [`TypedFields::into_request`], besides the careful decoder's `RequestReader`.
#[derive(Copy, Clone, Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum TypedField {
    Seq,
    Op,
    Version,
    Client,
    Secret,
    Lock,
    Consistency,
    WaitMs,
    Mode,
    Permits,
    Nonce,
    TtlMs,
    SeenIndex,
    Term,
}

/// A request's fields as the line holds them, borrowed from it where the JSON has no escapes.
/// Only the typed decoder fills this: refused on an unknown or doubled field, or a value of
/// another JSON type (serde_json's own errors, which nobody reads: the line goes to the
/// careful decoder).
#[derive(Default)]
struct TypedFields<'a> {
    seq: Option<u64>,
    op: Option<Cow<'a, str>>,
    version: Option<u64>,
    client: Option<u64>,
    secret: Option<Cow<'a, str>>,
    lock: Option<Cow<'a, str>>,
    consistency: Option<Cow<'a, str>>,
    wait_ms: Option<u64>,
    mode: Option<Cow<'a, str>>,
    permits: Option<u64>,
    nonce: Option<u64>,
    ttl_ms: Option<u64>,
    seen_index: Option<u64>,
    term: Option<u64>,
}

impl<'a> TypedFields<'a> {
    /// The claim the `mode` and `permits` fields make, by the careful decoder's rules
    /// ([`RequestReader::claim`]), or `None` if it would refuse them.
    fn claim(&self) -> Option<Claim> {
        let permits = match self.permits {
            None => None,
            Some(permits) => Some(
                u32::try_from(permits)
                    .ok()
                    .filter(|permits| (1..=PERMITS_MAX).contains(permits))?,
            ),
        };
        let mode = match self.mode.as_deref() {
            None if permits.is_some() => Mode::Shared,
            None | Some("exclusive") => Mode::Exclusive,
            Some("shared") => Mode::Shared,
            Some(_) => return None,
        };
        Some(Claim { mode, permits })
    }

    /// The request these fields make, by the careful decoder's rules, or `None` if it would
    /// refuse them.
    fn into_request(self) -> Option<WireRequest> {
        if self.version? != u64::from(PROTOCOL_VERSION) {
            return None;
        }
        let claim_fields = self.mode.is_some() || self.permits.is_some();
        let lock_fields = self.client.is_some()
            || self.secret.is_some()
            || self.lock.is_some()
            || self.consistency.is_some()
            || self.wait_ms.is_some()
            || claim_fields;
        let hello_fields = self.nonce.is_some() || self.ttl_ms.is_some();
        let op = match self.op.as_deref()? {
            "hello" if !lock_fields => WireOp::Hello {
                nonce: self.nonce.unwrap_or(0),
                ttl_ms: self.ttl_ms,
            },
            "status" if !lock_fields && !hello_fields => WireOp::Status,
            "keepalive"
                if !hello_fields
                    && !claim_fields
                    && self.lock.is_none()
                    && self.consistency.is_none()
                    && self.wait_ms.is_none() =>
            {
                WireOp::Keepalive {
                    client: ClientId(self.client.filter(|&client| client != 0)?),
                    secret: match self.secret.as_deref() {
                        None => None,
                        Some(text) => Some(ClientSecret::parse_hex(text).ok()?),
                    },
                }
            }
            name @ ("preempt" | "release" | "check" | "acquire" | "cancel") if !hello_fields => {
                let client = ClientId(self.client.filter(|&client| client != 0)?);
                let secret = match self.secret.as_deref() {
                    None => None,
                    Some(text) => Some(ClientSecret::parse_hex(text).ok()?),
                };
                let lock = self.lock.as_deref()?;
                if lock.is_empty() || lock.len() > LOCK_NAME_BYTES_MAX {
                    return None;
                }
                let lock = LockName::from(lock);
                if name != "acquire" && self.wait_ms.is_some() {
                    return None;
                }
                if !matches!(name, "acquire" | "preempt") && claim_fields {
                    return None;
                }
                let claim = self.claim()?;
                match name {
                    "acquire" if self.consistency.is_none() => WireOp::Acquire {
                        client,
                        secret,
                        lock,
                        wait_ms: self.wait_ms.filter(|&wait| wait <= ACQUIRE_WAIT_MS_MAX)?,
                        claim,
                    },
                    "cancel" if self.consistency.is_none() => WireOp::Cancel {
                        client,
                        secret,
                        lock,
                    },
                    "preempt" if self.consistency.is_none() => WireOp::Preempt {
                        client,
                        secret,
                        lock,
                        claim,
                    },
                    "release" if self.consistency.is_none() => WireOp::Release {
                        client,
                        secret,
                        lock,
                    },
                    "check" => WireOp::Check {
                        client,
                        secret,
                        lock,
                        consistency: match self.consistency.as_deref() {
                            None => Consistency::default(),
                            Some("local") => Consistency::Local,
                            Some("linearizable") => Consistency::Linearizable,
                            Some(_) => return None,
                        },
                    },
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(WireRequest {
            seq: self.seq?,
            seen_index: self.seen_index.unwrap_or(0),
            term: self.term.unwrap_or(0),
            op,
        })
    }
}

impl<'de> Deserialize<'de> for TypedFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TypedFields<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a request object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<TypedFields<'de>, A::Error> {
                let mut fields = TypedFields::default();
                // Bounded: a field seen twice ends the loop with an error, so at most one round
                // per field.
                while let Some(field) = access.next_key::<TypedField>()? {
                    match field {
                        TypedField::Seq => fill(&mut fields.seq, &mut access)?,
                        TypedField::Op => fill_text(&mut fields.op, &mut access)?,
                        TypedField::Version => fill(&mut fields.version, &mut access)?,
                        TypedField::Client => fill(&mut fields.client, &mut access)?,
                        TypedField::Secret => fill_text(&mut fields.secret, &mut access)?,
                        TypedField::Lock => fill_text(&mut fields.lock, &mut access)?,
                        TypedField::Consistency => {
                            fill_text(&mut fields.consistency, &mut access)?;
                        }
                        TypedField::WaitMs => fill(&mut fields.wait_ms, &mut access)?,
                        TypedField::Mode => fill_text(&mut fields.mode, &mut access)?,
                        TypedField::Permits => fill(&mut fields.permits, &mut access)?,
                        TypedField::Nonce => fill(&mut fields.nonce, &mut access)?,
                        TypedField::TtlMs => fill(&mut fields.ttl_ms, &mut access)?,
                        TypedField::SeenIndex => fill(&mut fields.seen_index, &mut access)?,
                        TypedField::Term => fill(&mut fields.term, &mut access)?,
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Reads a whole number into an empty slot. A `null`, a second copy, or any other JSON type
/// is an error: the careful decoder refuses each of them.
fn fill<'de, A: serde::de::MapAccess<'de>>(
    slot: &mut Option<u64>,
    access: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(serde::de::Error::custom("a field appears twice"));
    }
    *slot = Some(access.next_value()?);
    Ok(())
}

/// Reads a string into an empty slot, borrowed from the line when it holds no escapes.
fn fill_text<'de, A: serde::de::MapAccess<'de>>(
    slot: &mut Option<Cow<'de, str>>,
    access: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(serde::de::Error::custom("a field appears twice"));
    }
    *slot = Some(access.next_value::<Text<'de>>()?.0);
    Ok(())
}

/// An optional string field, borrowed from the line when it holds no escapes. (serde's own
/// `#[serde(borrow)]` borrows a `Cow<str>` field, but not an `Option<Cow<str>>` one.)
fn borrowed_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<Text<'de>>::deserialize(deserializer)?.map(|text| text.0))
}

/// A JSON string, borrowed when the deserializer can lend it. (`Cow<str>`'s own `Deserialize`
/// always copies.)
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_string())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A request's top-level object, refused if a field appears twice: JSON parsers disagree on
/// which copy wins (serde_json keeps the last), so a line that says two things is refused
/// rather than read one way here and another way by whoever logged or checked it.
/// `duplicate` names the first field seen twice; the line is read to its end all the same, so
/// that a line that is not JSON is still called that.
struct UniqueKeys {
    map: Map<String, Value>,
    duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<UniqueKeys, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut map = Map::new();
                let mut duplicate = None;
                // Bounded by the line limit: every key costs bytes of the line.
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        access.next_value::<serde::de::IgnoredAny>()?;
                        duplicate.get_or_insert(key);
                        continue;
                    }
                    let value: Value = access.next_value()?;
                    map.insert(key, value);
                }
                Ok(UniqueKeys { map, duplicate })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Reads a request's fields one by one, removing each, so that what is left is unknown.
struct RequestReader {
    map: Map<String, Value>,
    /// Set once the seq is read; every later error echoes it.
    seq: Option<u64>,
}

/// What each op takes besides the fields every request takes.
fn op_fields(op: &str) -> &'static str {
    match op {
        "hello" => "nonce, ttl_ms",
        "keepalive" => "client, secret",
        "check" => "client, secret, lock, consistency",
        "preempt" => "client, secret, lock, mode, permits",
        "acquire" => "client, secret, lock, wait_ms, mode, permits",
        "status" => "nothing else",
        "watch" => watch::WATCH_FIELDS,
        "unwatch" => watch::UNWATCH_FIELDS,
        _ => "client, secret, lock",
    }
}

const COMMON_FIELDS: &str = "seq, op, version, seen_index, term";
const OP_NAMES: &str =
    "hello, keepalive, preempt, release, check, acquire, cancel, status, watch or unwatch";

impl RequestReader {
    fn error(&self, message: String) -> WireError {
        WireError::malformed(self.seq, message)
    }

    fn seq(&mut self) -> Result<u64, WireError> {
        let seq = self.whole_number("seq", "the number the response echoes")?;
        let seq = seq.ok_or_else(|| {
            self.error(
                "missing `seq` (a whole number of your choice; the response echoes it)".into(),
            )
        })?;
        self.seq = Some(seq);
        Ok(seq)
    }

    /// A missing version means version 1, which is no longer served.
    fn version(&mut self) -> Result<(), WireError> {
        let version = self.whole_number("version", "the protocol version")?;
        match version {
            Some(version) if version == u64::from(PROTOCOL_VERSION) => Ok(()),
            None | Some(1) => Err(WireError {
                seq: self.seq,
                kind: WireErrorKind::UnsupportedVersion,
                message: format!(
                    "this server speaks version {PROTOCOL_VERSION} of the protocol, not version 1 \
                     (a request without `version` is version 1). Version 2 proves who a client \
                     is: the welcome to hello carries a `secret`, and every later request must \
                     carry it in a `secret` field. Send \"version\":{PROTOCOL_VERSION} on every \
                     request"
                ),
            }),
            Some(version) => Err(WireError {
                seq: self.seq,
                kind: WireErrorKind::UnsupportedVersion,
                message: format!(
                    "this server speaks version {PROTOCOL_VERSION} of the protocol, not version \
                     {version}"
                ),
            }),
        }
    }

    fn op(&mut self) -> Result<WireOp, WireError> {
        let name = match self.map.remove("op") {
            None => return Err(self.error(format!("missing `op` (one of {OP_NAMES})"))),
            Some(Value::String(name)) => name,
            Some(other) => {
                let got = describe(&other);
                return Err(self.error(format!("`op` must be one of {OP_NAMES}; got {got}")));
            }
        };
        let op = match name.as_str() {
            "hello" => {
                let nonce = self.whole_number("nonce", "a number the welcome echoes")?;
                let ttl_ms = self.whole_number("ttl_ms", "the session's TTL in milliseconds")?;
                return Ok(WireOp::Hello {
                    nonce: nonce.unwrap_or(0),
                    ttl_ms,
                });
            }
            "keepalive" => {
                let client = self.client("keepalive")?;
                let secret = self.secret()?;
                return Ok(WireOp::Keepalive { client, secret });
            }
            "status" => return Ok(WireOp::Status),
            "watch" => return self.watch_op(),
            "unwatch" => return self.unwatch_op(),
            "preempt" | "release" | "check" | "acquire" | "cancel" => name,
            _ => {
                let got = quoted(&name);
                return Err(self.error(format!("unknown op {got} (expected {OP_NAMES})")));
            }
        };
        let client = self.client(&op)?;
        let secret = self.secret()?;
        let lock = self.lock(&op)?;
        Ok(match op.as_str() {
            "preempt" => WireOp::Preempt {
                client,
                secret,
                lock,
                claim: self.claim()?,
            },
            "release" => WireOp::Release {
                client,
                secret,
                lock,
            },
            "acquire" => WireOp::Acquire {
                client,
                secret,
                lock,
                wait_ms: self.wait_ms()?,
                claim: self.claim()?,
            },
            "cancel" => WireOp::Cancel {
                client,
                secret,
                lock,
            },
            _ => WireOp::Check {
                client,
                secret,
                lock,
                consistency: self.consistency()?,
            },
        })
    }

    /// The client's secret: 32 hex digits. A missing one is left to the server, which answers
    /// `unauthorized` as it does a wrong one. The message never quotes what was sent: it may be
    /// somebody's secret with a typo.
    fn secret(&mut self) -> Result<Option<ClientSecret>, WireError> {
        const WHAT: &str = "the 32 hex digits of the secret your welcome gave";
        match self.map.remove("secret") {
            None => Ok(None),
            Some(Value::String(text)) => ClientSecret::parse_hex(&text)
                .map(Some)
                .map_err(|problem| self.error(format!("`secret` must be {WHAT}: {problem}"))),
            Some(_) => Err(self.error(format!("`secret` must be a string, {WHAT}"))),
        }
    }

    fn client(&mut self, op: &str) -> Result<ClientId, WireError> {
        const WHAT: &str = "the id hello gave you, a whole number from 1";
        match self.whole_number("client", WHAT)? {
            None => Err(self.error(format!("{op} needs `client` ({WHAT})"))),
            Some(0) => Err(self.error(format!("`client` must be {WHAT}; got 0"))),
            Some(client) => Ok(ClientId(client)),
        }
    }

    fn lock(&mut self, op: &str) -> Result<LockName, WireError> {
        let name = match self.map.remove("lock") {
            Some(Value::String(name)) => name,
            None => {
                return Err(self.error(format!(
                    "{op} needs `lock` (the lock's name, a string of 1 to {LOCK_NAME_BYTES_MAX} \
                     bytes)"
                )));
            }
            Some(other) => {
                let got = describe(&other);
                return Err(self.error(format!("`lock` must be a string; got {got}")));
            }
        };
        if name.is_empty() {
            return Err(self.error("`lock` cannot be empty".into()));
        }
        if name.len() > LOCK_NAME_BYTES_MAX {
            return Err(self.error(format!(
                "`lock` is {} bytes, above the limit of {LOCK_NAME_BYTES_MAX}",
                name.len()
            )));
        }
        Ok(Arc::from(name))
    }

    /// An acquire's required wait, in milliseconds, at most [`ACQUIRE_WAIT_MS_MAX`].
    fn wait_ms(&mut self) -> Result<u64, WireError> {
        const WHAT: &str = "how long to wait in the lock's queue, in milliseconds (0 tries once)";
        match self.whole_number("wait_ms", WHAT)? {
            None => Err(self.error(format!("acquire needs `wait_ms` ({WHAT})"))),
            Some(wait_ms) if wait_ms > ACQUIRE_WAIT_MS_MAX => Err(self.error(format!(
                "`wait_ms` is {wait_ms}, above the limit of {ACQUIRE_WAIT_MS_MAX} (one hour); \
                 wait at most that long, and acquire again if the wait runs out"
            ))),
            Some(wait_ms) => Ok(wait_ms),
        }
    }

    /// A preempt's or acquire's claim: `mode` (`exclusive`, the default, or `shared`) and
    /// `permits` (1 to [`PERMITS_MAX`]), both optional. `permits` without a `mode` is shared,
    /// since taking one permit is what a semaphore claim is (docs/design.md, "Shared locks and
    /// semaphores"). Out-of-range permits are refused here, before anything reaches the log.
    fn claim(&mut self) -> Result<Claim, WireError> {
        const PERMITS: &str = "how many holders the lock allows at once (a semaphore)";
        let permits = match self.whole_number("permits", PERMITS)? {
            None => None,
            Some(permits) => match u32::try_from(permits) {
                Ok(permits) if (1..=PERMITS_MAX).contains(&permits) => Some(permits),
                _ => {
                    return Err(self.error(format!(
                        "`permits` is {permits}; it must be 1 to {PERMITS_MAX}, the most holders \
                         a lock has at once"
                    )));
                }
            },
        };
        let mode = match self.map.remove("mode") {
            None if permits.is_some() => Mode::Shared,
            None => Mode::Exclusive,
            Some(Value::String(text)) if text == "exclusive" => Mode::Exclusive,
            Some(Value::String(text)) if text == "shared" => Mode::Shared,
            Some(other) => {
                let got = describe(&other);
                return Err(self.error(format!(
                    r#"`mode` must be "exclusive" (one holder) or "shared" (many); got {got}"#
                )));
            }
        };
        Ok(Claim { mode, permits })
    }

    /// A missing consistency means local, the node's default.
    fn consistency(&mut self) -> Result<Consistency, WireError> {
        match self.map.remove("consistency") {
            None => Ok(Consistency::default()),
            Some(Value::String(text)) if text == "local" => Ok(Consistency::Local),
            Some(Value::String(text)) if text == "linearizable" => Ok(Consistency::Linearizable),
            Some(other) => {
                let got = describe(&other);
                Err(self.error(format!(
                    r#"`consistency` must be "local" or "linearizable"; got {got}"#
                )))
            }
        }
    }

    /// An optional field holding a whole number in 0..=u64::MAX.
    fn whole_number(&mut self, name: &str, what: &str) -> Result<Option<u64>, WireError> {
        let Some(value) = self.map.remove(name) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(number) => Ok(Some(number)),
            None => Err(self.error(format!(
                "`{name}` must be {what}, a whole number from 0 to {}; got {}",
                u64::MAX,
                describe(&value)
            ))),
        }
    }

    /// Refuses fields nobody asked for: a typo (`consistancy`) must not pass silently.
    fn finish(self, op: &WireOp) -> Result<(), WireError> {
        let Some(unknown) = self.map.keys().next() else {
            return Ok(());
        };
        let name = op.name();
        Err(self.error(format!(
            "unknown field {} for {name} (it takes {COMMON_FIELDS}, {})",
            quoted(unknown),
            op_fields(name)
        )))
    }
}

/// A JSON value as an error message names it.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) if number.as_i64().is_some_and(|n| n < 0) => {
            format!("the negative number {number}")
        }
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) => format!("the string {}", quoted(text)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Text from elsewhere (the node's reason for a refusal), cut short.
fn cut(text: &str, chars_max: usize) -> String {
    let mut shown: String = text.chars().take(chars_max).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// The client's own text, quoted and cut short.
fn quoted(text: &str) -> String {
    let mut shown: String = text.chars().take(QUOTED_CHARS_MAX).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    format!("`{shown}`")
}

// ----- decoding replies -----

/// Decodes one response line (with or without its newline), for a client.
///
/// A reply that breaks the protocol is a [`WireError`]; a welcome for another protocol
/// version is one of kind `UnsupportedVersion`. Unknown fields are ignored, so that a server
/// may add fields within a version.
pub fn decode_reply(line: &[u8]) -> Result<WireReply, WireError> {
    let fields: ReplyFields = serde_json::from_slice(line)
        .map_err(|error| WireError::malformed(None, format!("malformed reply: {error}")))?;
    match (fields.ok.as_deref(), fields.error.as_deref()) {
        (Some(ok), None) => decode_ok(ok, &fields),
        (None, Some(error)) => decode_error(error, &fields),
        _ => Err(WireError::malformed(
            fields.seq,
            "malformed reply: it must hold exactly one of `ok` and `error`",
        )),
    }
}

fn decode_ok(ok: &str, fields: &ReplyFields) -> Result<WireReply, WireError> {
    let missing = |name: &str| {
        WireError::malformed(
            fields.seq,
            format!("malformed reply: {} needs `{name}`", quoted(ok)),
        )
    };
    let seq = fields.seq.ok_or_else(|| missing("seq"))?;
    let index = fields.index.ok_or_else(|| missing("index"))?;
    let owner = || fields.owner.map(ClientId).ok_or_else(|| missing("owner"));
    let token = || fields.token.ok_or_else(|| missing("token"));
    let outcome = match ok {
        "welcome" => return decode_welcome(seq, index, fields),
        "kept_alive" => {
            return Ok(WireReply::Ok {
                seq,
                index,
                term: fields.term.unwrap_or(0),
                answer: Answer::KeptAlive {
                    ttl_ms: fields.ttl_ms,
                },
            });
        }
        "status" => return decode_status(seq, index, fields),
        "granted" => Outcome::Granted { token: token()? },
        "held_by" => Outcome::HeldBy { owner: owner()? },
        "released" => Outcome::Released,
        "not_owner" => Outcome::NotOwner,
        "free" => Outcome::Free,
        "owner" => Outcome::Owner {
            owner: owner()?,
            token: token()?,
        },
        "queued" => Outcome::Queued,
        "timeout" => Outcome::TimedOut,
        "cancelled" => Outcome::Cancelled,
        "not_waiting" => Outcome::NotWaiting,
        "shared" => Outcome::Shared {
            holders: fields.holders.ok_or_else(|| missing("holders"))?,
            permits: fields.permits,
        },
        _ => {
            let message = format!("malformed reply: unknown ok value {}", quoted(ok));
            return Err(WireError::malformed(Some(seq), message));
        }
    };
    Ok(WireReply::Ok {
        seq,
        index,
        term: fields.term.unwrap_or(0),
        answer: Answer::Outcome(outcome),
    })
}

fn decode_welcome(seq: u64, index: LogIndex, fields: &ReplyFields) -> Result<WireReply, WireError> {
    let missing = |name: &str| {
        WireError::malformed(
            Some(seq),
            format!("malformed reply: welcome needs `{name}`"),
        )
    };
    let version = fields.version.ok_or_else(|| missing("version"))?;
    if version != PROTOCOL_VERSION {
        return Err(WireError {
            seq: Some(seq),
            kind: WireErrorKind::UnsupportedVersion,
            message: format!(
                "the server speaks version {version} of the protocol; this client speaks \
                 version {PROTOCOL_VERSION}"
            ),
        });
    }
    let client = fields.client.ok_or_else(|| missing("client"))?;
    let nonce = fields.nonce.ok_or_else(|| missing("nonce"))?;
    let secret = fields.secret.ok_or_else(|| missing("secret"))?;
    Ok(WireReply::Ok {
        seq,
        index,
        term: fields.term.unwrap_or(0),
        answer: Answer::Welcome {
            client: ClientId(client),
            nonce,
            secret,
        },
    })
}

/// A status reply: every field present, a known role, and indexes in the order one server's
/// always are.
fn decode_status(seq: u64, index: LogIndex, fields: &ReplyFields) -> Result<WireReply, WireError> {
    let malformed = |problem: String| {
        WireError::malformed(Some(seq), format!("malformed reply: status {problem}"))
    };
    let missing = |name: &str| malformed(format!("needs `{name}`"));
    let role_text = fields.role.as_deref().ok_or_else(|| missing("role"))?;
    let role = parse_role(role_text)
        .ok_or_else(|| malformed(format!("names an unknown role {}", quoted(role_text))))?;
    let status = ServerStatus {
        server: ServerId(fields.server.ok_or_else(|| missing("server"))?),
        role,
        leader: fields.leader.map(ServerId),
        commit_index: fields.commit_index.ok_or_else(|| missing("commit_index"))?,
        last_index: fields.last_index.ok_or_else(|| missing("last_index"))?,
        snapshot_index: fields
            .snapshot_index
            .ok_or_else(|| missing("snapshot_index"))?,
        log_bytes: fields.log_bytes.ok_or_else(|| missing("log_bytes"))?,
        uptime_ms: fields.uptime_ms.ok_or_else(|| missing("uptime_ms"))?,
    };
    let term = fields.term.ok_or_else(|| missing("term"))?;
    let ordered = status.snapshot_index <= index
        && index <= status.commit_index
        && status.commit_index <= status.last_index;
    if !ordered {
        return Err(malformed(format!(
            "has indexes out of order: snapshot {} <= applied {index} <= commit {} <= last {} \
             does not hold",
            status.snapshot_index, status.commit_index, status.last_index
        )));
    }
    if role == Role::Leader && status.leader != Some(status.server) {
        return Err(malformed(
            "says the server leads but names another leader".to_string(),
        ));
    }
    Ok(WireReply::status(seq, term, index, status))
}

fn decode_error(error: &str, fields: &ReplyFields) -> Result<WireReply, WireError> {
    let missing = |name: &str| {
        WireError::malformed(
            fields.seq,
            format!("malformed reply: error {} needs `{name}`", quoted(error)),
        )
    };
    let code = match error {
        "not_leader" => ErrorCode::NotLeader {
            leader: fields.leader.map(ServerId),
            leader_address: fields.leader_address.as_deref().map(str::to_string),
        },
        "unavailable" => ErrorCode::Unavailable,
        "overloaded" => ErrorCode::Overloaded,
        "stale_request" => ErrorCode::StaleRequest,
        "bad_request" => ErrorCode::BadRequest,
        "unknown_client" => ErrorCode::UnknownClient,
        "unauthorized" => ErrorCode::Unauthorized,
        "seq_reused" => ErrorCode::SeqReused,
        "session_expired" => ErrorCode::SessionExpired,
        "queue_full" => ErrorCode::QueueFull {
            waiters_max: fields.waiters_max.ok_or_else(|| missing("waiters_max"))?,
        },
        "lock_delayed" => ErrorCode::LockDelayed {
            retry_after_ms: fields
                .retry_after_ms
                .ok_or_else(|| missing("retry_after_ms"))?,
        },
        "permits_mismatch" => ErrorCode::PermitsMismatch {
            permits: fields.permits,
        },
        "unsupported_version" => ErrorCode::UnsupportedVersion {
            supported: fields.version.ok_or_else(|| missing("version"))?,
        },
        _ => {
            let message = format!("malformed reply: unknown error code {}", quoted(error));
            return Err(WireError::malformed(fields.seq, message));
        }
    };
    let message = fields.message.as_deref().map(str::to_string);
    let message = message.ok_or_else(|| missing("message"))?;
    Ok(WireReply::Error(ErrorReply {
        seq: fields.seq,
        term: fields.term,
        code,
        message,
    }))
}

// ----- framing -----

/// What the bytes fed to a [`LineDecoder`] amount to, in order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LineEvent {
    /// A complete line, without its newline. Decode it.
    Line(Vec<u8>),
    /// A line went over [`LINE_BYTES_MAX`]. It is discarded up to its newline without being
    /// buffered. Answer `ErrorReply::from(WireError::line_too_long())`; the connection stays
    /// usable and the next line decodes normally. Emitted once per overlong line, as soon as
    /// the limit is crossed.
    TooLong,
    /// An overlong line ran past [`OVERLONG_LINE_BYTES_MAX`] without a newline. The peer is not
    /// speaking this protocol: answer `WireError::line_abandoned()` and close the connection.
    /// The decoder ignores every later byte.
    Abandoned,
}

/// Splits a byte stream into lines, with bounded memory: it never holds more than the line
/// limit, however the bytes arrive. One per connection, in each direction that reads.
///
/// Contract: feed bytes in the order they were read. Events come out in stream order.
#[derive(Clone, Debug)]
pub struct LineDecoder {
    line_bytes_max: usize,
    overlong_line_bytes_max: u64,
    /// The current line's bytes so far; never longer than `line_bytes_max`.
    buffer: Vec<u8>,
    state: FrameState,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum FrameState {
    /// Collecting a line into the buffer.
    Reading,
    /// Skipping an overlong line up to its newline; `line_bytes` seen of it so far.
    Discarding { line_bytes: u64 },
    /// Gave up on the stream.
    Abandoned,
}

impl Default for LineDecoder {
    fn default() -> LineDecoder {
        LineDecoder::new()
    }
}

impl LineDecoder {
    /// A decoder with the protocol's limits.
    pub fn new() -> LineDecoder {
        LineDecoder::with_limits(LINE_BYTES_MAX, OVERLONG_LINE_BYTES_MAX)
    }

    /// A decoder with other limits, for tests and tools. `overlong_line_bytes_max` MUST be
    /// above `line_bytes_max`.
    pub fn with_limits(line_bytes_max: usize, overlong_line_bytes_max: u64) -> LineDecoder {
        assert!(line_bytes_max > 0, "line decoder: a line limit of 0 bytes");
        assert!(
            overlong_line_bytes_max > line_bytes_max as u64,
            "line decoder: the overlong limit {overlong_line_bytes_max} is not above the line \
             limit {line_bytes_max}"
        );
        LineDecoder {
            line_bytes_max,
            overlong_line_bytes_max,
            buffer: Vec::new(),
            state: FrameState::Reading,
        }
    }

    /// Takes the next bytes of the stream; returns the events they complete.
    #[must_use]
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LineEvent> {
        let mut events = Vec::new();
        self.feed_into(bytes, &mut events);
        events
    }

    /// [`LineDecoder::feed`], appending the events to `events`, so that a connection reuses one
    /// vector for every read.
    pub fn feed_into(&mut self, mut bytes: &[u8], events: &mut Vec<LineEvent>) {
        // Bounded: every round consumes at least one byte.
        while !bytes.is_empty() {
            let (segment, ends_line, rest) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], true, &bytes[at + 1..]),
                None => (bytes, false, &bytes[bytes.len()..]),
            };
            self.take_segment(segment, ends_line, events);
            bytes = rest;
        }
        self.check_invariants();
    }

    /// Gives back a line this decoder returned, once read, so that its allocation holds the
    /// next line instead of a fresh one. Kept only while no line is being gathered and when its
    /// allocation is within the line limit, so the memory bound stands.
    pub fn recycle(&mut self, mut line: Vec<u8>) {
        if self.buffer.capacity() == 0
            && self.state == FrameState::Reading
            && line.capacity() <= self.line_bytes_max
        {
            line.clear();
            self.buffer = line;
        }
        self.check_invariants();
    }

    /// A stretch of bytes without a newline, and whether a newline followed it.
    fn take_segment(&mut self, segment: &[u8], ends_line: bool, events: &mut Vec<LineEvent>) {
        let line_bytes = match self.state {
            FrameState::Abandoned => return,
            FrameState::Reading if self.buffer.len() + segment.len() <= self.line_bytes_max => {
                self.extend_buffer(segment);
                if ends_line {
                    events.push(LineEvent::Line(std::mem::take(&mut self.buffer)));
                }
                return;
            }
            FrameState::Reading => {
                // Crossing the limit: drop what was kept, free its memory, say so once.
                let line_bytes = (self.buffer.len() + segment.len()) as u64;
                self.buffer = Vec::new();
                events.push(LineEvent::TooLong);
                line_bytes
            }
            FrameState::Discarding { line_bytes } => line_bytes + segment.len() as u64,
        };
        // The overlong limit is judged before the newline: a line past it is abandoned
        // whether its newline came in the same read or a later one, so that the verdict never
        // depends on how the bytes were split.
        self.state = if line_bytes > self.overlong_line_bytes_max {
            events.push(LineEvent::Abandoned);
            FrameState::Abandoned
        } else if ends_line {
            FrameState::Reading
        } else {
            FrameState::Discarding { line_bytes }
        };
    }

    /// Appends without letting the allocation grow past the line limit (a plain extend may
    /// double the capacity).
    fn extend_buffer(&mut self, segment: &[u8]) {
        let needed = self.buffer.len() + segment.len();
        assert!(
            needed <= self.line_bytes_max,
            "line decoder: extending past the limit"
        );
        if needed > self.buffer.capacity() {
            let target = (self.buffer.capacity() * 2).clamp(needed, self.line_bytes_max);
            self.buffer.reserve_exact(target - self.buffer.len());
        }
        self.buffer.extend_from_slice(segment);
    }

    fn check_invariants(&self) {
        assert!(
            self.buffer.len() <= self.line_bytes_max,
            "line decoder: {} bytes buffered, over the limit of {}",
            self.buffer.len(),
            self.line_bytes_max
        );
        if self.state != FrameState::Reading {
            assert!(
                self.buffer.is_empty(),
                "line decoder: bytes buffered while {:?}",
                self.state
            );
        }
    }

    /// False once the decoder gave up on the stream ([`LineEvent::Abandoned`]).
    pub fn is_usable(&self) -> bool {
        self.state != FrameState::Abandoned
    }

    /// True between a line's first byte and its newline. A request cut off by the end of the
    /// stream is never answered: it was never a whole line.
    pub fn is_mid_line(&self) -> bool {
        !self.buffer.is_empty() || matches!(self.state, FrameState::Discarding { .. })
    }

    /// Bytes of the current line held in memory.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes allocated for the current line; never above the line limit.
    pub fn buffer_capacity_bytes(&self) -> usize {
        self.buffer.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_cuts_long_client_text_short() {
        assert_eq!(quoted("consistancy"), "`consistancy`");
        let long = "x".repeat(10_000);
        let shown = quoted(&long);
        assert!(shown.chars().count() <= QUOTED_CHARS_MAX + 3, "{shown}");
        assert!(shown.ends_with("…`"));
        // Cutting counts characters, so a multi-byte name is never split inside a character.
        assert_eq!(
            quoted(&"é".repeat(100)).chars().count(),
            QUOTED_CHARS_MAX + 3
        );
    }

    #[test]
    fn values_are_described_as_a_person_would() {
        assert_eq!(describe(&serde_json::json!(-1)), "the negative number -1");
        assert_eq!(describe(&serde_json::json!(1.5)), "the number 1.5");
        assert_eq!(describe(&serde_json::json!("7")), "the string `7`");
        assert_eq!(describe(&serde_json::json!(null)), "null");
        assert_eq!(describe(&serde_json::json!([1])), "an array");
        assert_eq!(describe(&serde_json::json!({})), "an object");
    }

    #[test]
    fn the_buffer_allocation_never_outgrows_the_limit() {
        let mut decoder = LineDecoder::with_limits(100, 1_000);
        for _ in 0..99 {
            let events = decoder.feed(b"x");
            assert!(events.is_empty());
            assert!(decoder.buffer_capacity_bytes() <= 100);
        }
        assert_eq!(decoder.feed(b"x\n"), vec![LineEvent::Line(vec![b'x'; 100])]);
        assert!(!decoder.is_mid_line());
    }

    #[test]
    fn a_recycled_line_holds_the_next_one_and_never_breaks_the_bound() {
        let mut decoder = LineDecoder::with_limits(100, 1_000);
        let mut events = Vec::new();
        decoder.feed_into(b"first\nsec", &mut events);
        assert_eq!(events, vec![LineEvent::Line(b"first".to_vec())]);
        // Mid-line: the decoder keeps its own buffer, and the given one goes.
        let Some(LineEvent::Line(first)) = events.pop() else {
            unreachable!("one line above")
        };
        decoder.recycle(first);
        decoder.feed_into(b"ond\n", &mut events);
        assert_eq!(events, vec![LineEvent::Line(b"second".to_vec())]);
        // Between lines: the next line is gathered in the given allocation.
        let Some(LineEvent::Line(second)) = events.pop() else {
            unreachable!("one line above")
        };
        let allocation = second.as_ptr();
        decoder.recycle(second);
        assert!(!decoder.is_mid_line(), "a recycled line is emptied");
        decoder.feed_into(b"third\n", &mut events);
        assert!(matches!(&events[..], [LineEvent::Line(line)] if line.as_ptr() == allocation));
        // An allocation past the line limit is not kept.
        decoder.recycle(Vec::with_capacity(101));
        assert_eq!(decoder.buffer_capacity_bytes(), 0);
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_and_one_byte_more_does_not() {
        let mut decoder = LineDecoder::with_limits(4, 100);
        assert_eq!(
            decoder.feed(b"abcd\n"),
            vec![LineEvent::Line(b"abcd".to_vec())]
        );
        assert_eq!(decoder.feed(b"abcde\n"), vec![LineEvent::TooLong]);
        assert_eq!(decoder.state, FrameState::Reading);
    }

    #[test]
    fn an_endless_line_is_abandoned_once_and_everything_after_is_ignored() {
        let mut decoder = LineDecoder::with_limits(4, 10);
        assert_eq!(decoder.feed(b"0123456"), vec![LineEvent::TooLong]);
        assert!(decoder.is_usable());
        assert!(decoder.is_mid_line());
        assert_eq!(decoder.feed(b"789a"), vec![LineEvent::Abandoned]);
        assert!(!decoder.is_usable());
        assert!(decoder.feed(b"\n{}\n").is_empty());
    }

    /// A secret's digits, for lines written by hand.
    const SECRET_HEX: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn well_formed_requests_take_the_typed_path_and_read_the_same_there() {
        let secret = ClientSecret::parse_hex(SECRET_HEX).ok();
        let lock = LockName::from("printer");
        let (client, seq) = (ClientId(7), 12);
        let ops = [
            WireOp::Hello {
                nonce: 0,
                ttl_ms: None,
            },
            WireOp::Hello {
                nonce: u64::MAX,
                ttl_ms: Some(3_000),
            },
            WireOp::Keepalive { client, secret },
            WireOp::Status,
            WireOp::Preempt {
                client,
                secret,
                lock: lock.clone(),
                claim: Claim::EXCLUSIVE,
            },
            WireOp::Preempt {
                client,
                secret,
                lock: lock.clone(),
                claim: Claim::SHARED,
            },
            WireOp::Preempt {
                client,
                secret,
                lock: lock.clone(),
                claim: Claim {
                    mode: Mode::Exclusive,
                    permits: Some(PERMITS_MAX),
                },
            },
            WireOp::Release {
                client,
                secret: None,
                lock: lock.clone(),
            },
            WireOp::Check {
                client,
                secret,
                lock: LockName::from("x".repeat(LOCK_NAME_BYTES_MAX)),
                consistency: Consistency::Linearizable,
            },
            WireOp::Acquire {
                client,
                secret,
                lock: lock.clone(),
                wait_ms: 0,
                claim: Claim::EXCLUSIVE,
            },
            WireOp::Acquire {
                client,
                secret,
                lock: lock.clone(),
                wait_ms: ACQUIRE_WAIT_MS_MAX,
                claim: Claim::semaphore(1),
            },
            WireOp::Cancel {
                client,
                secret,
                lock: lock.clone(),
            },
        ];
        for op in ops {
            let request = WireRequest {
                seq,
                seen_index: 40,
                term: 3,
                op,
            };
            let line = encode_request(&request);
            assert_eq!(decode_well_formed(&line), Some(request.clone()), "{line:?}");
            assert_eq!(decode_with_reasons(&line), Ok(request));
        }
        // Escapes, upper-case digits, spaces and a CRLF: still well formed, still typed.
        let line = format!(
            "{{ \"s\\u0065q\" : 5, \"op\":\"check\", \"client\":7, \"lock\":\"a\\nb\", \
             \"secret\":\"{}\", \"consistency\":\"local\", \"version\":2 }}\r\n",
            SECRET_HEX.to_uppercase()
        );
        let typed = decode_well_formed(line.as_bytes()).expect("typed");
        assert_eq!(decode_with_reasons(line.as_bytes()), Ok(typed.clone()));
        assert_eq!(typed.seq, 5);
        assert!(matches!(typed.op, WireOp::Check { ref lock, .. } if &**lock == "a\nb"));
    }

    #[test]
    fn the_typed_path_leaves_every_refusal_to_the_careful_one() {
        let lines = [
            // Each field at most once, known, of its type, never null.
            r#"{"seq":1,"seq":1,"op":"hello","version":2}"#,
            r#"{"seq":1,"op":"hello","version":2,"nonce":null}"#,
            r#"{"seq":1,"op":"hello","version":2,"extra":1}"#,
            r#"{"seq":"1","op":"hello","version":2}"#,
            r#"{"seq":1.0,"op":"hello","version":2}"#,
            r#"{"seq":-0,"op":"hello","version":2}"#,
            r#"{"seq":18446744073709551616,"op":"hello","version":2}"#,
            // Version 2 only, and present.
            r#"{"seq":1,"op":"hello"}"#,
            r#"{"seq":1,"op":"hello","version":3}"#,
            // Exactly the fields the op takes.
            r#"{"seq":1,"op":"hello","version":2,"client":7}"#,
            r#"{"seq":1,"op":"status","version":2,"nonce":1}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":"a","nonce":1}"#,
            r#"{"seq":1,"op":"release","version":2,"client":7,"lock":"a","consistency":"local"}"#,
            r#"{"seq":1,"op":"check","version":2,"client":7,"lock":"a","consistency":"fresh"}"#,
            r#"{"seq":1,"op":"grab","version":2,"client":7,"lock":"a"}"#,
            r#"{"seq":1,"op":"acquire","version":2,"client":7,"lock":"a"}"#,
            r#"{"seq":1,"op":"acquire","version":2,"client":7,"lock":"a","wait_ms":3600001}"#,
            r#"{"seq":1,"op":"acquire","version":2,"client":7,"lock":"a","wait_ms":-1}"#,
            r#"{"seq":1,"op":"acquire","version":2,"client":7,"lock":"a","wait_ms":"1s"}"#,
            r#"{"seq":1,"op":"cancel","version":2,"client":7,"lock":"a","wait_ms":5}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":"a","wait_ms":5}"#,
            r#"{"seq":1,"op":"keepalive","version":2,"client":7,"wait_ms":5}"#,
            r#"{"seq":1,"op":"cancel","version":2,"client":7}"#,
            r#"{"op":"status","version":2}"#,
            // The values they allow.
            r#"{"seq":1,"op":"preempt","version":2,"client":0,"lock":"a"}"#,
            r#"{"seq":1,"op":"preempt","version":2,"lock":"a"}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":""}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":"a","secret":"+f"}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":"a","secret":7}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":"a","permits":0}"#,
            r#"{"seq":1,"op":"acquire","version":2,"client":7,"lock":"a","wait_ms":0,"permits":65}"#,
            r#"{"seq":1,"op":"preempt","version":2,"client":7,"lock":"a","mode":"Shared"}"#,
            r#"{"seq":1,"op":"check","version":2,"client":7,"lock":"a","mode":"shared"}"#,
            r#"{"seq":1,"op":"cancel","version":2,"client":7,"lock":"a","permits":2}"#,
            r#"{"seq":1,"op":"keepalive","version":2,"client":7,"mode":"shared"}"#,
            // Not one object.
            r#"[{"seq":1,"op":"hello","version":2}]"#,
            r#"{"seq":1,"op":"hello","version":2} {}"#,
            r#"{"seq":1,"op":"hello","version":2"#,
        ];
        for line in lines {
            assert_eq!(decode_well_formed(line.as_bytes()), None, "{line}");
            let error = decode_request(line.as_bytes()).expect_err(line);
            assert_eq!(Err(error), decode_with_reasons(line.as_bytes()), "{line}");
        }
        let long = format!(
            r#"{{"seq":1,"op":"preempt","version":2,"client":7,"lock":"{}"}}"#,
            "x".repeat(LOCK_NAME_BYTES_MAX + 1)
        );
        assert_eq!(decode_well_formed(long.as_bytes()), None);
    }

    /// Keys and values, right and wrong, for lines made of them.
    fn field_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let keys = prop::sample::select(vec![
            "seq",
            "op",
            "version",
            "client",
            "secret",
            "lock",
            "consistency",
            "wait_ms",
            "mode",
            "permits",
            "nonce",
            "ttl_ms",
            "seen_index",
            "term",
            "s\\u0065q",
            "Seq",
            "ttl",
            "",
        ]);
        let long_lock = format!("\"{}\"", "y".repeat(LOCK_NAME_BYTES_MAX));
        let longer_lock = format!("\"{}\"", "y".repeat(LOCK_NAME_BYTES_MAX + 1));
        let values = prop::sample::select(vec![
            "0".to_string(),
            "1".into(),
            "2".into(),
            "7".into(),
            "18446744073709551615".into(),
            "18446744073709551616".into(),
            "-1".into(),
            "-0".into(),
            "2.0".into(),
            "1e1".into(),
            "null".into(),
            "true".into(),
            "[]".into(),
            "{\"seq\":1}".into(),
            "\"hello\"".into(),
            "\"status\"".into(),
            "\"preempt\"".into(),
            "\"release\"".into(),
            "\"check\"".into(),
            "\"acquire\"".into(),
            "\"cancel\"".into(),
            "3600000".into(),
            "3600001".into(),
            "64".into(),
            "65".into(),
            "4294967297".into(),
            "\"shared\"".into(),
            "\"exclusive\"".into(),
            "\"Hello\"".into(),
            "\"local\"".into(),
            "\"linearizable\"".into(),
            "\"a\"".into(),
            "\"l\\u006fck\"".into(),
            "\"\"".into(),
            "\"é\"".into(),
            format!("\"{SECRET_HEX}\""),
            format!("\"{}\"", SECRET_HEX.to_uppercase()),
            format!("\"{}\"", &SECRET_HEX[1..]),
            format!("\"+{}\"", &SECRET_HEX[1..]),
            long_lock,
            longer_lock,
        ]);
        (keys, values).prop_map(|(key, value)| format!("\"{key}\":{value}"))
    }

    /// One known field, present with probability `present`, with its valid value most of the
    /// time and otherwise one of the values at the edge of what it allows.
    fn known_field(
        key: &'static str,
        present: f64,
        values: Vec<String>,
    ) -> impl proptest::strategy::Strategy<Value = Option<String>> {
        use proptest::prelude::*;
        let valid = values[0].clone();
        let value = prop_oneof![
            3 => Just(valid),
            1 => prop::sample::select(values),
        ];
        prop::option::weighted(
            present,
            value.prop_map(move |value| format!("\"{key}\":{value}")),
        )
    }

    /// A request line: every known field maybe, with valid or edge values, and then a few
    /// fields more (unknown, doubled, of the wrong type), in a shuffled order.
    fn line_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let text = |texts: &[&str]| -> Vec<String> {
            texts.iter().map(|text| format!("\"{text}\"")).collect()
        };
        let numbers = |numbers: &[&str]| -> Vec<String> {
            numbers.iter().map(|number| number.to_string()).collect()
        };
        let secrets = [
            SECRET_HEX.to_string(),
            SECRET_HEX.to_uppercase(),
            SECRET_HEX[1..].to_string(),
            format!("+{}", &SECRET_HEX[1..]),
        ];
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let locks = [
            "a".to_string(),
            String::new(),
            "l\\u006fck".to_string(),
            "y".repeat(LOCK_NAME_BYTES_MAX),
            "y".repeat(LOCK_NAME_BYTES_MAX + 1),
        ];
        let locks: Vec<&str> = locks.iter().map(String::as_str).collect();
        let ops = text(&[
            "preempt",
            "hello",
            "status",
            "release",
            "check",
            "keepalive",
            "acquire",
            "cancel",
            "Hello",
            "grab",
        ]);
        let big = ["18446744073709551615", "18446744073709551616"];
        let known = (
            known_field(
                "seq",
                0.95,
                numbers(&["3", "0", big[0], big[1], "-1", "2.0"]),
            ),
            known_field("op", 0.95, ops),
            known_field("version", 0.95, numbers(&["2", "1", "3", "null"])),
            known_field("client", 0.6, numbers(&["7", "0", big[0], "\"7\""])),
            known_field("secret", 0.6, text(&secrets)),
            known_field("lock", 0.6, text(&locks)),
            known_field(
                "consistency",
                0.3,
                text(&["linearizable", "local", "fresh"]),
            ),
            known_field(
                "wait_ms",
                0.3,
                numbers(&["1000", "0", "3600000", "3600001", big[0], "-5"]),
            ),
            known_field("nonce", 0.3, numbers(&["9", "0", "null", "-0"])),
            known_field("ttl_ms", 0.3, numbers(&["3000", "0", "null", big[0]])),
            known_field("seen_index", 0.3, numbers(&["4", big[0], "1e1"])),
            known_field("term", 0.3, numbers(&["2", "0", "[]"])),
        );
        // Apart, since proptest's tuples stop at twelve.
        let claim = (
            known_field("mode", 0.3, text(&["shared", "exclusive", "reader"])),
            known_field("permits", 0.3, numbers(&["3", "0", "64", "65", "-1"])),
        );
        let extra = proptest::collection::vec(field_strategy(), 0..2);
        let fields = (known, claim, extra)
            .prop_map(|(known, (mode, permits), extra)| {
                let (
                    seq,
                    op,
                    version,
                    client,
                    secret,
                    lock,
                    consistency,
                    wait,
                    nonce,
                    ttl,
                    seen,
                    term,
                ) = known;
                [
                    seq,
                    op,
                    version,
                    client,
                    secret,
                    lock,
                    consistency,
                    wait,
                    nonce,
                    ttl,
                    seen,
                    term,
                    mode,
                    permits,
                ]
                .into_iter()
                .flatten()
                .chain(extra)
                .collect::<Vec<String>>()
            })
            .prop_shuffle();
        (fields, any::<bool>()).prop_map(|(fields, newline)| {
            let end = if newline { "\n" } else { "" };
            format!("{{{}}}{end}", fields.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 4_000,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            rng_seed: proptest::test_runner::RngSeed::Fixed(10),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Whatever the typed decoder takes, the careful one reads the same, and the answer of
        /// `decode_request` is the careful decoder's on every line.
        #[test]
        fn both_decoders_agree_on_generated_lines(line in line_strategy()) {
            let careful = decode_with_reasons(line.as_bytes());
            if let Some(typed) = decode_well_formed(line.as_bytes()) {
                proptest::prop_assert_eq!(Ok(typed), careful.clone(), "{}", line);
            }
            proptest::prop_assert_eq!(decode_request(line.as_bytes()), careful, "{}", line);
        }
    }

    #[test]
    fn reply_text_is_borrowed_from_the_line_unless_escaped() {
        let line = br#"{"seq":1,"error":"bad_request","message":"a \"quoted\" word"}"#;
        let fields: ReplyFields<'_> = serde_json::from_slice(line).expect("a reply");
        assert!(matches!(fields.error, Some(Cow::Borrowed("bad_request"))));
        assert!(
            matches!(fields.message, Some(Cow::Owned(ref text)) if text == r#"a "quoted" word"#)
        );
        assert!(fields.ok.is_none() && fields.role.is_none());
        let error = serde_json::from_slice::<ReplyFields<'_>>(br#"{"ok":7}"#).err();
        assert!(error.is_some_and(|error| error.to_string().contains("expected a string")));
    }

    #[test]
    fn every_encoded_error_fits_on_a_line() {
        let long_address = "h".repeat(1_000);
        let reply = ErrorReply::not_leader(1, 3, Some(ServerId(2)), Some(long_address));
        let line = encode_error(&reply);
        assert!(line.len() <= LINE_BYTES_MAX);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
