//! Watching locks from the library: [`Client::watch`] and the [`Watch`] iterator
//! (docs/PROTOCOL.md, "watch"; docs/design.md, "Watches").
//!
//! ```no_run
//! use lockstep::client::{Client, ClientOptions, WatchEvent, WatchTarget};
//! let servers = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
//! let mut client = Client::new(servers, ClientOptions::default())?;
//! for item in client.watch(WatchTarget::Lock("printer".into()), None)? {
//!     match item? {
//!         WatchEvent::State { index, locks, .. } => println!("at {index}: {locks:?}"),
//!         WatchEvent::Changes { index, changes } => println!("{index}: {changes:?}"),
//!     }
//! }
//! # Ok::<(), lockstep::client::Error>(())
//! ```
//!
//! # Calling contract
//! - A `Watch` has a connection of its own, apart from its `Client`'s, and is used from one
//!   thread. It blocks in [`Iterator::next`] until the next item; [`Watch::poll`] waits at most
//!   until a deadline instead (to look at a stop flag between waits).
//! - Items come in log order, each index once: a broken connection, a server that goes away or
//!   a watch the server ends (`fell_behind`) make the watch reconnect, to the same server once
//!   and then the next listed one, and resume `from` the index after the last item it yielded.
//!   Every server computes the same changes per index, so nothing is missed or repeated.
//! - When the server no longer keeps the changes it needs (`compacted`), the next item is a
//!   [`WatchEvent::State`] with `compacted` set: the state to start from again.
//! - No server for [`ClientOptions::operation_timeout`] yields one `Err`; the next call tries
//!   again. A refusal that cannot change (`unauthorized`, a target the server refuses, a client
//!   id still unknown after the operation timeout) yields its `Err` and then the iterator ends.
//! - Every [`WATCH_KEEPALIVE_EVERY`] of silence ([`Watch::set_keepalive_every`]) the watch
//!   sends a `status`, so that the server's idle timeout never closes a quiet watch. A server
//!   that does not answer it within the attempt timeout (paused, hung, cut off) or answers that
//!   it knows no leader (a follower cut off from the cluster, whose changes may have stopped) is
//!   left for the next one, where the watch resumes: quiet must mean no changes.

use super::connection::{Connection, ConnectionError};
use super::{Client, ClientOptions, Credential, Error, Unreachable, note_unreachable, pause};
use crate::net::protocol::{
    Answer, ErrorCode, ServerStatus, WatchRequest, WireOp, WireReply, WireRequest, decode_reply,
    decode_watch_line, encode_request, is_watch_line,
};
pub use crate::node::watch::{Change, LockChange, LockState, LockView, WatchTarget};
use crate::node::watch::{WATCH_PREFIX_BYTES_MAX, WatchCancel, WatchRefusal, WatchReply};
use crate::node::{LogIndex, Role};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Silence after which a watch sends a `status` to keep its connection from the server's idle
/// timeout (300 s by default).
pub const WATCH_KEEPALIVE_EVERY: Duration = Duration::from_secs(30);

/// What a watch yields, in log order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WatchEvent {
    /// The state of what the watch covers at log index `index`; the changes after it follow.
    /// The first item of a watch started without `from`. With `compacted: Some(kept_after)`,
    /// the server no longer kept the changes the watch needed (at or below `kept_after`): they
    /// are lost to this watch, and this state replaces them.
    State {
        index: LogIndex,
        locks: Vec<LockState>,
        compacted: Option<LogIndex>,
    },
    /// What the log entry at `index` changed of the covered locks, in lock-name order.
    Changes {
        index: LogIndex,
        changes: Vec<LockChange>,
    },
}

impl WatchEvent {
    /// The log index the item is at.
    pub fn index(&self) -> LogIndex {
        match self {
            WatchEvent::State { index, .. } | WatchEvent::Changes { index, .. } => *index,
        }
    }
}

/// A live watch: see the module documentation.
pub struct Watch {
    servers: Vec<String>,
    position: usize,
    options: ClientOptions,
    credential: Credential,
    target: WatchTarget,
    /// Where to resume: the index after the last item yielded (or the caller's `from`);
    /// `None` before the first state of a watch started from now.
    resume_from: Option<LogIndex>,
    connection: Option<Live>,
    /// Items read and not yet yielded.
    ready: VecDeque<WatchEvent>,
    /// The seq of the last request sent; also the id of the last watch started.
    last_seq: u64,
    /// Since when no server has served the watch, and what each said.
    unserved_since: Option<Instant>,
    tried: Vec<Unreachable>,
    /// Set once a refusal ends the watch for good.
    finished: bool,
    /// Whether the next connection reopens the same server after a break.
    connection_retry: bool,
    /// Silence after which the server is asked for its `status`.
    keepalive_every: Duration,
    /// A server said it never issued the client id: once no server served the watch for the
    /// operation timeout, this is the error (the id is unknown everywhere, not just on a
    /// follower that lags).
    unknown_client: Option<Error>,
}

/// The connection a watch is served on.
struct Live {
    connection: Connection,
    /// The seq of the watch request, which is also the watch's id.
    id: u64,
    /// Whether the server answered the start (`current`, `compacted` or `resumed`).
    started: bool,
    /// When anything last came, or the watch request left.
    heard_at: Instant,
    /// The seq of the `status` sent for silence and not answered yet, and when it left.
    status_asked: Option<(u64, Instant)>,
    /// Whether this connection was reopened on the same server after a break (the next break
    /// moves on).
    retried: bool,
}

/// What one line meant to the watch.
enum Next {
    Continue,
    /// Drop the connection and resume, on the same server if `same_server`.
    Reconnect {
        same_server: bool,
        reason: String,
    },
    /// Back off, then resume on the next server.
    Elsewhere {
        reason: String,
    },
    /// The watch cannot go on.
    Fail(Error),
}

impl Client {
    /// Watches `target` from index `from` (changes at indexes >= it; `None`: from the current
    /// state), on a connection of its own. Registers first if needed. Returns once a server
    /// has started the watch; `Err` if none did within the operation timeout, or the target is
    /// refused.
    pub fn watch(&mut self, target: WatchTarget, from: Option<LogIndex>) -> Result<Watch, Error> {
        match &target {
            WatchTarget::Lock(name) => super::validate_lock_name(name),
            WatchTarget::Prefix(prefix) if prefix.len() > WATCH_PREFIX_BYTES_MAX => Err(format!(
                "the prefix is {} bytes, above the limit of {WATCH_PREFIX_BYTES_MAX}",
                prefix.len()
            )),
            WatchTarget::Prefix(_) => Ok(()),
        }
        .map_err(Error::InvalidInput)?;
        let deadline = Instant::now() + self.options.operation_timeout;
        let credential = self.ensure_registered(deadline)?;
        let mut watch = Watch {
            servers: self.servers.clone(),
            position: self.position,
            options: self.options.clone(),
            credential,
            target,
            resume_from: from,
            connection: None,
            ready: VecDeque::new(),
            last_seq: 0,
            unserved_since: None,
            tried: Vec::new(),
            finished: false,
            connection_retry: false,
            unknown_client: None,
            keepalive_every: WATCH_KEEPALIVE_EVERY,
        };
        // Bounded by the operation timeout: `poll` fails once no server served it that long.
        while !watch.connection.as_ref().is_some_and(|live| live.started) {
            if let Some(item) = watch.poll_once(Instant::now() + self.options.attempt_timeout)? {
                watch.ready.push_front(item); // for the caller's first `next`
            }
        }
        Ok(watch)
    }
}

impl Watch {
    /// The index after the last item yielded: where the watch resumes (`None` before its first
    /// state, for a watch started from now).
    pub fn resume_from(&self) -> Option<LogIndex> {
        self.resume_from
    }

    /// The server the watch is connected to now, if any.
    pub fn server(&self) -> Option<&str> {
        self.connection
            .as_ref()
            .map(|_| self.servers[self.position].as_str())
    }

    /// Asks the server for its `status` after `every` of silence (default
    /// [`WATCH_KEEPALIVE_EVERY`]): how soon a paused server or a cut-off follower is left.
    /// Keep it under the servers' client idle timeout (300 s by default).
    pub fn set_keepalive_every(&mut self, every: Duration) {
        assert!(!every.is_zero(), "watch: a zero keepalive interval");
        self.keepalive_every = every;
    }

    /// The next item, waiting at most until `deadline`: `Ok(None)` if none came by then.
    pub fn poll(&mut self, deadline: Instant) -> Result<Option<WatchEvent>, Error> {
        if self.finished {
            return Ok(None);
        }
        let result = self.poll_once(deadline);
        if let Err(error) = &result
            && !matches!(
                error,
                Error::NoServerReachable { .. } | Error::TimedOut { .. }
            )
        {
            self.finished = true;
            self.connection = None;
        }
        result
    }

    fn poll_once(&mut self, deadline: Instant) -> Result<Option<WatchEvent>, Error> {
        // Bounded by the deadline: every round reads until it (or a keepalive), or connects
        // within the connect timeout, or backs off.
        loop {
            if let Some(item) = self.ready.pop_front() {
                self.resume_from = Some(item.index() + 1);
                return Ok(Some(item));
            }
            self.check_unserved()?;
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let next = match self.connection.is_some() {
                true => self.read(deadline),
                false => self.start(),
            };
            match next {
                Next::Continue => {}
                Next::Reconnect {
                    same_server,
                    reason,
                } => self.drop_connection(same_server, reason),
                Next::Elsewhere { reason } => {
                    self.drop_connection(false, reason);
                    pause(self.options.error_backoff, deadline);
                }
                Next::Fail(error) => return Err(error),
            }
        }
    }

    /// Fails once no server served the watch for the operation timeout; the next poll tries
    /// again from scratch.
    fn check_unserved(&mut self) -> Result<(), Error> {
        let Some(since) = self.unserved_since else {
            return Ok(());
        };
        if since.elapsed() < self.options.operation_timeout {
            return Ok(());
        }
        self.unserved_since = None;
        let tried = std::mem::take(&mut self.tried);
        if let Some(unknown) = self.unknown_client.take() {
            return Err(unknown);
        }
        Err(match tried.is_empty() {
            true => Error::TimedOut {
                effect_unknown: false,
                timeout: self.options.operation_timeout,
            },
            false => Error::NoServerReachable { tried },
        })
    }

    fn drop_connection(&mut self, same_server: bool, reason: String) {
        let retried = self.connection.take().is_some_and(|live| live.retried);
        note_unreachable(&mut self.tried, &self.servers[self.position], reason);
        self.unserved_since.get_or_insert_with(Instant::now);
        if !same_server || retried {
            self.position = (self.position + 1) % self.servers.len();
        }
        // A reconnection to the same server counts once; the next break moves on.
        self.connection_retry = same_server && !retried;
    }

    /// Opens a connection to the current server and sends the watch request.
    fn start(&mut self) -> Next {
        let address = &self.servers[self.position];
        let tls = self.options.tls.as_ref();
        let connection = match Connection::open(address, self.options.connect_timeout, tls) {
            Ok(connection) => connection,
            Err(error) => {
                return Next::Elsewhere {
                    reason: error.to_string(),
                };
            }
        };
        self.last_seq += 1;
        let request = WireRequest {
            seq: self.last_seq,
            seen_index: 0,
            term: 0,
            op: WireOp::Watch(WatchRequest::Start {
                client: self.credential.id,
                secret: Some(self.credential.secret),
                id: self.last_seq,
                target: self.target.clone(),
                from: self.resume_from,
            }),
        };
        let mut live = Live {
            connection,
            id: self.last_seq,
            started: false,
            heard_at: Instant::now(),
            status_asked: None,
            retried: std::mem::take(&mut self.connection_retry),
        };
        let deadline = Instant::now() + self.options.attempt_timeout;
        if let Err(error) = live.connection.send(&encode_request(&request), deadline) {
            return Next::Elsewhere {
                reason: describe(error),
            };
        }
        self.connection = Some(live);
        Next::Continue
    }

    /// Reads the connection until `deadline` or a keepalive is due.
    fn read(&mut self, deadline: Instant) -> Next {
        let live = self.connection.as_mut().expect("reading a live watch");
        let attempt_timeout = self.options.attempt_timeout;
        let quiet_until = match (live.started, live.status_asked) {
            (false, _) => live.heard_at + attempt_timeout,
            (true, Some((_, asked_at))) => asked_at + attempt_timeout,
            (true, None) => live.heard_at + self.keepalive_every,
        };
        let line = match live.connection.receive(deadline.min(quiet_until)) {
            Ok(Some(line)) => line,
            Ok(None) if Instant::now() < quiet_until => return Next::Continue,
            Ok(None) if !live.started || live.status_asked.is_some() => {
                let what = if live.started {
                    "a status"
                } else {
                    "the watch"
                };
                return Next::Elsewhere {
                    reason: format!("no answer to {what} within {attempt_timeout:?}"),
                };
            }
            Ok(None) => return self.keep_alive(),
            Err(error) => {
                return Next::Reconnect {
                    same_server: true,
                    reason: describe(error),
                };
            }
        };
        live.heard_at = Instant::now();
        if is_watch_line(&line) {
            match decode_watch_line(&line) {
                Ok(reply) => self.on_watch_line(reply),
                Err(error) => Next::Fail(self.protocol_error(error.message)),
            }
        } else {
            self.on_response(&line)
        }
    }

    /// Sends a `status`: its answer shows the server is alive and knows a leader.
    fn keep_alive(&mut self) -> Next {
        self.last_seq += 1;
        let request = WireRequest {
            seq: self.last_seq,
            seen_index: 0,
            term: 0,
            op: WireOp::Status,
        };
        let live = self.connection.as_mut().expect("a live watch");
        live.status_asked = Some((self.last_seq, Instant::now()));
        let deadline = Instant::now() + self.options.attempt_timeout;
        match live.connection.send(&encode_request(&request), deadline) {
            Ok(()) => Next::Continue,
            Err(error) => Next::Reconnect {
                same_server: true,
                reason: describe(error),
            },
        }
    }

    fn on_watch_line(&mut self, reply: WatchReply) -> Next {
        let live = self.connection.as_mut().expect("a live watch");
        if reply.id() != live.id {
            return Next::Continue; // an earlier watch's line: not ours
        }
        match reply {
            WatchReply::Current {
                index,
                state,
                compacted,
                ..
            } => {
                live.started = true;
                self.served();
                self.ready.push_back(WatchEvent::State {
                    index,
                    locks: state,
                    compacted,
                });
            }
            WatchReply::Resumed { .. } => {
                live.started = true;
                self.served();
            }
            WatchReply::Event { event, .. } => {
                // Never before where the watch resumes: nothing twice, whatever a server sends.
                let fresh = self.resume_from.is_none_or(|from| event.index >= from);
                let after_queued = self
                    .ready
                    .back()
                    .is_none_or(|last| event.index > last.index());
                if live.started && fresh && after_queued {
                    self.ready.push_back(WatchEvent::Changes {
                        index: event.index,
                        changes: event.changes,
                    });
                }
            }
            WatchReply::Cancelled {
                reason: WatchCancel::FellBehind { kept_after },
                ..
            } => {
                return Next::Reconnect {
                    same_server: true,
                    reason: format!("fell behind (the server keeps changes after {kept_after})"),
                };
            }
            WatchReply::Cancelled { .. } => {
                return Next::Reconnect {
                    same_server: true,
                    reason: "the server stopped the watch".into(),
                };
            }
            WatchReply::Refused { refusal, .. } => return self.on_refusal(refusal),
        }
        Next::Continue
    }

    fn on_refusal(&mut self, refusal: WatchRefusal) -> Next {
        match refusal {
            WatchRefusal::TooManyWatches { max } => Next::Elsewhere {
                reason: format!("too many watches (at most {max})"),
            },
            // A follower that has not applied this client's registration yet, or a client id
            // this cluster never issued: the operation timeout tells them apart.
            WatchRefusal::UnknownClient { client } => {
                let message = format!("no hello issued client id {} on this cluster", client.0);
                self.unknown_client = Some(Error::Rejected {
                    code: ErrorCode::UnknownClient,
                    message,
                });
                Next::Elsewhere {
                    reason: format!("client {} is unknown to this server", client.0),
                }
            }
            WatchRefusal::Unauthorized => Next::Fail(Error::Rejected {
                code: ErrorCode::Unauthorized,
                message: "the secret is not the one this client id was registered with".into(),
            }),
            WatchRefusal::BadTarget { reason } => Next::Fail(Error::InvalidInput(reason)),
            WatchRefusal::IdInUse => {
                Next::Fail(self.protocol_error("a fresh watch id was said to be in use".into()))
            }
        }
    }

    /// A response line: to the watch request (a refusal of it), or to a keepalive.
    fn on_response(&mut self, line: &[u8]) -> Next {
        let id = self.connection.as_ref().expect("a live watch").id;
        let reply = match decode_reply(line) {
            Ok(reply) => reply,
            Err(error) => return Next::Fail(self.protocol_error(error.message)),
        };
        let error = match reply {
            WireReply::Error(error) => error,
            WireReply::Ok {
                seq,
                answer: Answer::Status(status),
                ..
            } => return self.on_status(seq, status),
            WireReply::Ok { .. } => return Next::Continue, // not ours
        };
        if error.seq != Some(id) {
            return Next::Continue;
        }
        match error.code {
            ErrorCode::Unavailable | ErrorCode::Overloaded => Next::Elsewhere {
                reason: error.message,
            },
            code => Next::Fail(Error::Rejected {
                code,
                message: error.message,
            }),
        }
    }

    /// The answer to a `status` sent for silence: the server is alive; it is left if it knows
    /// no leader, since a follower cut off from the cluster applies nothing new.
    fn on_status(&mut self, seq: u64, status: ServerStatus) -> Next {
        let live = self.connection.as_mut().expect("a live watch");
        if live.status_asked.is_none_or(|(asked, _)| asked != seq) {
            return Next::Continue; // an earlier keepalive's
        }
        live.status_asked = None;
        if status.role != Role::Leader && status.leader.is_none() {
            return Next::Elsewhere {
                reason: "the server knows no leader, so its changes may have stopped".into(),
            };
        }
        Next::Continue
    }

    fn served(&mut self) {
        self.unserved_since = None;
        self.unknown_client = None;
        self.tried.clear();
    }

    fn protocol_error(&self, message: String) -> Error {
        Error::Protocol {
            server: self.servers[self.position].clone(),
            message,
        }
    }
}

impl Iterator for Watch {
    type Item = Result<WatchEvent, Error>;

    /// Blocks until the next item; see the module documentation.
    fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        // Bounded only by the watch's life: a watch waits for changes as long as it is used.
        loop {
            if self.finished {
                return None;
            }
            let far = Instant::now() + Duration::from_secs(3_600);
            match self.poll(far) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

fn describe(error: ConnectionError) -> String {
    match error {
        ConnectionError::Broken(reason) | ConnectionError::Protocol(reason) => reason,
    }
}
