//! The lock client: registers with the cluster, runs operations one at a time, retries on
//! silence or refusal against the next server, and gives up after the operation's timeout.
//!
//! # Calling contract
//! - Feed every input through [`Client::step`] with the current time; carry out the returned
//!   [`ClientOutput`]s in order.
//! - `SetTimer { timer, at }` replaces the previous deadline of that timer; late or spurious
//!   timer inputs are harmless.
//! - Operations run strictly one at a time, in invocation order. A retry reuses the operation's
//!   sequence number, so the cluster applies it at most once and answers the retry with the
//!   original outcome.
//! - An operation that is not answered before its timeout completes with
//!   [`ClientError::TimedOut`]: its effect is unknown, it may or may not have been applied.
//! - With `ClientConfig::session_ttl`, the client registers a session with that TTL, renews
//!   it on its own with a keepalive every TTL/3 (timer `Keepalive`), and keeps its own lease
//!   by [`LeaseRule`]: `LeaseRenewed` when an acknowledged keepalive extends it, `Jeopardy`
//!   when a renewal failed while the lease still holds, `Expired` when the lease ran out
//!   (timer `LeaseEnd`) or a server answered `session_expired`. After `Expired` the client
//!   forgets its id and the next operation says hello again. Without a TTL none of this
//!   happens: the client behaves exactly as it did before sessions.

use super::messages::{
    Claim, ClientId, ClientReply, ClientRequest, ClientSecret, LogIndex, Operation, Outcome,
    ReplyBody, RequestBody, ServerId, ServiceError, Term,
};
use super::time::Time;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Every server, in the order the client tries them.
    pub servers: Vec<ServerId>,
    /// The server tried first.
    pub first_server: ServerId,
    /// Default time an operation may take before it completes as unknown.
    pub operation_timeout: Duration,
    /// Silence after which a request is sent again, to the next server.
    pub retry_interval: Duration,
    /// Wait after an error reply before trying the next server.
    pub error_backoff: Duration,
    /// Operations queued behind the running one before new ones are refused.
    pub queue_max: usize,
    /// Register with a session of this TTL and keep it alive; `None`: a session that never
    /// expires (the default, and every client before sessions).
    pub session_ttl: Option<Duration>,
    /// The bound on clock rate error the lease allows for (0.01: 1%). See [`LeaseRule`].
    pub max_clock_drift: f64,
    /// Taken off the lease besides the drift. See [`LeaseRule`].
    pub lease_margin: Duration,
}

/// The client's lease rule: how long a client may believe its session lives, on its own
/// clock. The simulator's `lease_safety` checker evaluates exactly this rule.
///
/// **A client believes its session lives at its own time `t` iff `t < s + ttl × (1 −
/// max_clock_drift) − margin`, where `s` is the time, on its own clock, at which it sent the
/// latest request whose acknowledgement renewed the session: a keepalive answered
/// `kept_alive`, or the hello answered with the welcome that created the session.** It counts
/// from the *send*, not from the answer: the server may have renewed the session the moment the
/// request arrived, so everything after the send is already spent. Each keepalive is sent with
/// a new seq, so an answer names exactly one send.
///
/// Why it is safe: a server expires a session no earlier than `ttl` of true time after it
/// received the renewal (it stretches its wait by `1 + max_clock_drift`), and it received it
/// after `s`. A client clock running at most `max_clock_drift` slow measures those `ttl` of
/// true time as at least `ttl × (1 − max_clock_drift)`. So while the rule holds, the session
/// has not expired on the server, provided every clock's rate stays within the bound.
/// Other requests (writes) renew the session on the server too, but do not extend this
/// lease: a write may be answered from a deduplication cache without any confirmation.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LeaseRule {
    pub ttl: Duration,
    pub max_clock_drift: f64,
    pub margin: Duration,
}

impl LeaseRule {
    /// How long after the send of an acknowledged renewal the client believes its session.
    pub fn believed_for(&self) -> Duration {
        let shrunk = self.ttl.as_secs_f64() * (1.0 - self.max_clock_drift);
        Duration::from_secs_f64(shrunk.max(0.0)).saturating_sub(self.margin)
    }

    /// The end of the lease granted by an acknowledged renewal sent at `sent_at`.
    pub fn valid_until(&self, sent_at: Time) -> Time {
        sent_at + self.believed_for()
    }
}

impl ClientConfig {
    pub fn new(servers: Vec<ServerId>, first_server: ServerId) -> ClientConfig {
        ClientConfig {
            servers,
            first_server,
            operation_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_millis(500),
            error_backoff: Duration::from_millis(100),
            queue_max: 10_000,
            session_ttl: None,
            max_clock_drift: 0.01,
            lease_margin: Duration::from_millis(100),
        }
    }

    /// The lease rule of this client, when it has a session TTL.
    pub fn lease_rule(&self) -> Option<LeaseRule> {
        self.session_ttl.map(|ttl| LeaseRule {
            ttl,
            max_clock_drift: self.max_clock_drift,
            margin: self.lease_margin,
        })
    }
}

/// Why an operation has no outcome.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ClientError {
    /// No answer before the timeout: the operation may or may not have taken effect.
    #[error("no answer before the operation's timeout; the effect is unknown")]
    TimedOut,
    /// The client's queue was full; the operation was never sent.
    #[error("the client's operation queue is full")]
    QueueFull,
    /// The cluster refused the request for good: retrying it cannot help. It had no effect.
    #[error("the cluster refused the request: {0}")]
    Refused(Refused),
    /// The client's own lease ran out while the operation ran: it may or may not have taken
    /// effect, and the client no longer holds a session to find out with.
    #[error("the client's lease ran out while the operation ran; the effect is unknown")]
    LeaseExpired,
}

/// Why the cluster refused a request for good (the errors a client must not retry).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refused {
    #[error("bad request")]
    BadRequest,
    #[error("unknown client id")]
    UnknownClient,
    #[error("wrong or missing secret")]
    Unauthorized,
    #[error("seq reused for another operation")]
    SeqReused,
    #[error("the client's session expired")]
    SessionExpired,
}

impl Refused {
    /// The permanent refusal `error` is, if it is one.
    pub fn of(error: &ServiceError) -> Option<Refused> {
        match error {
            ServiceError::BadRequest { .. } => Some(Refused::BadRequest),
            ServiceError::UnknownClient { .. } => Some(Refused::UnknownClient),
            ServiceError::Unauthorized => Some(Refused::Unauthorized),
            ServiceError::SeqReused { .. } => Some(Refused::SeqReused),
            ServiceError::SessionExpired { .. } => Some(Refused::SessionExpired),
            ServiceError::LockDelayed { .. }
            | ServiceError::QueueFull { .. }
            | ServiceError::Unavailable
            | ServiceError::Overloaded
            | ServiceError::StaleRequest
            | ServiceError::NotLeader { .. } => None,
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientTimer {
    /// Resend the in-flight request, to the next server.
    Retry,
    /// The running operation has used up its time.
    OperationTimeout,
    /// Sessions: send the next keepalive, or resend one that went unanswered.
    Keepalive,
    /// Sessions: the lease ends now, unless renewed since.
    LeaseEnd,
}

#[derive(Clone, Debug)]
pub enum ClientInput {
    /// Queue an operation. `tag` is the caller's name for it, echoed in `Started`/`Completed`.
    Invoke {
        tag: u64,
        op: Operation,
        timeout: Option<Duration>,
    },
    Reply {
        from: ServerId,
        reply: ClientReply,
    },
    Timer(ClientTimer),
}

#[must_use = "a client's effects must be carried out by the driver"]
#[derive(Clone, Debug)]
pub enum ClientOutput {
    Send {
        to: ServerId,
        request: ClientRequest,
    },
    SetTimer {
        timer: ClientTimer,
        at: Time,
    },
    /// The cluster assigned this client its id.
    Registered {
        client: ClientId,
    },
    /// Operation `tag` was taken off the queue and its first request is on its way: its call
    /// time, for histories.
    Started {
        tag: u64,
        seq: u64,
    },
    /// Operation `tag` finished. Its return time is now.
    Completed {
        tag: u64,
        result: Result<Outcome, ClientError>,
        /// The log index the answer reflects (the reply's `index`: a write's own entry, or the
        /// applied index a check was answered at); `None` when there is no answer. Histories
        /// record it so that a checker can see a read older than what its client had seen.
        index: Option<LogIndex>,
    },
    /// Sessions: an acknowledged renewal extended the lease; the client believes its session
    /// lives until `valid_until` on its own clock ([`LeaseRule`]).
    LeaseRenewed {
        client: ClientId,
        valid_until: Time,
    },
    /// Sessions: a renewal failed (no answer within the retry interval, or an error) while the
    /// lease still holds, until `valid_until`. Once per failing spell; the next renewal ends it.
    Jeopardy {
        client: ClientId,
        valid_until: Time,
    },
    /// Sessions: the client no longer believes in its session: its lease ran out, or a server
    /// answered `session_expired`. The locks it held are lost (the cluster frees them); the
    /// next operation registers a new client.
    Expired {
        client: ClientId,
    },
}

/// A keepalive on its way: answers are matched to their send by seq.
#[derive(Copy, Clone, Debug)]
struct KeepaliveSent {
    seq: u64,
    sent_at: Time,
}

/// Most recent keepalive sends remembered, so that a late answer still extends the lease from
/// its own send.
const KEEPALIVES_REMEMBERED_MAX: usize = 4;

#[derive(Clone, Debug)]
struct Queued {
    tag: u64,
    op: Operation,
    timeout: Duration,
}

#[derive(Clone, Debug)]
struct Running {
    tag: u64,
    op: Operation,
    seq: u64,
    deadline: Time,
    /// The term the latest attempt carried.
    sent_term: Term,
}

pub struct Client {
    config: ClientConfig,
    rng: ChaCha8Rng,
    id: Option<ClientId>,
    /// The secret the welcome gave, sent with every request after it.
    secret: Option<ClientSecret>,
    /// The nonce of the hello in flight, while registering.
    hello_nonce: Option<u64>,
    queue: VecDeque<Queued>,
    running: Option<Running>,
    /// An acquire whose cancel is running, as (tag, seq): it completes with its own answer if
    /// one comes first, else with what the cancel learns (`cancelled`, or unknown when the
    /// cancel found no wait: the acquire was decided, and a retry of it would be stale).
    cancelled_acquire: Option<(u64, u64)>,
    /// Index into `config.servers` of the server currently talked to.
    server_position: usize,
    /// Last sequence number used; operations use 1, 2, ... and hello uses 0.
    last_seq: u64,
    /// The newest applied index of any answer this client accepted: sent with every request so
    /// that local checks never read an older state (monotonic reads).
    seen_index: LogIndex,
    /// The highest server term seen in any reply. Writes carry it: only the leader of exactly
    /// this term appends them (see `ClientRequest::term`).
    term: Term,
    retry_deadline: Option<Time>,
    /// Sessions: when the current hello nonce was first sent (the lease of its welcome counts
    /// from there).
    hello_sent_at: Option<Time>,
    /// Sessions: the lease's end by [`LeaseRule`], while registered with a TTL.
    lease_until: Option<Time>,
    /// Sessions: when the keepalive timer is due.
    keepalive_at: Option<Time>,
    /// Sessions: recent keepalive sends, newest last; the last is in flight if `awaiting`.
    keepalives: VecDeque<KeepaliveSent>,
    awaiting_keepalive: bool,
    /// Sessions: `Jeopardy` was emitted and no renewal came since.
    in_jeopardy: bool,
    out: Vec<ClientOutput>,
}

impl Client {
    /// `rng_seed` seeds the hello nonces; the driver derives it.
    pub fn new(config: ClientConfig, rng_seed: u64) -> Client {
        let server_position = config
            .servers
            .iter()
            .position(|&s| s == config.first_server)
            .expect("the first server is one of the servers");
        Client {
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            id: None,
            secret: None,
            hello_nonce: None,
            queue: VecDeque::new(),
            running: None,
            cancelled_acquire: None,
            server_position,
            last_seq: 0,
            seen_index: 0,
            term: 0,
            retry_deadline: None,
            hello_sent_at: None,
            lease_until: None,
            keepalive_at: None,
            keepalives: VecDeque::new(),
            awaiting_keepalive: false,
            in_jeopardy: false,
            out: Vec::new(),
            config,
        }
    }

    #[must_use = "a client's effects must be carried out by the driver"]
    pub fn step(&mut self, now: Time, input: ClientInput) -> Vec<ClientOutput> {
        debug_assert!(
            self.out.is_empty(),
            "outputs left over from a previous step"
        );
        let seq_before = self.last_seq;
        match input {
            ClientInput::Invoke { tag, op, timeout } => {
                let timeout = timeout.unwrap_or(self.config.operation_timeout);
                if self.queue.len() >= self.config.queue_max {
                    self.out.push(ClientOutput::Completed {
                        tag,
                        result: Err(ClientError::QueueFull),
                        index: None,
                    });
                } else if self.cancels_running_acquire(&op) {
                    self.interrupt_with_cancel(now, Queued { tag, op, timeout });
                } else {
                    self.queue.push_back(Queued { tag, op, timeout });
                }
            }
            ClientInput::Reply { from, reply } => self.on_reply(now, from, reply),
            ClientInput::Timer(ClientTimer::Retry) => {
                if self.retry_deadline.is_some_and(|at| now >= at) {
                    self.rotate_server();
                    self.send_request(now);
                }
            }
            ClientInput::Timer(ClientTimer::OperationTimeout) => {
                if self.running.as_ref().is_some_and(|r| now >= r.deadline) {
                    self.finish(Err(ClientError::TimedOut), None);
                }
            }
            ClientInput::Timer(ClientTimer::Keepalive) => self.on_keepalive_timer(now),
            ClientInput::Timer(ClientTimer::LeaseEnd) => {
                if self.lease_until.is_some_and(|until| now >= until) {
                    self.lose_session(Err(ClientError::LeaseExpired));
                }
            }
        }
        if self.running.is_none() {
            self.start_next(now);
        }
        assert!(
            self.last_seq >= seq_before,
            "client: sequence numbers went backwards"
        );
        assert!(
            self.queue.len() <= self.config.queue_max,
            "client: queue beyond its bound"
        );
        assert!(
            self.running.is_some() || self.queue.is_empty(),
            "client: idle with operations queued"
        );
        assert!(
            self.lease_until.is_none() || (self.id.is_some() && self.config.session_ttl.is_some()),
            "client: a lease without a registered session"
        );
        assert!(
            self.keepalives.len() <= KEEPALIVES_REMEMBERED_MAX,
            "client: remembered keepalives beyond their bound"
        );
        std::mem::take(&mut self.out)
    }

    /// Sessions: until when this client believes its session lives ([`LeaseRule`]); `None`
    /// without a session TTL or before registering.
    pub fn lease_valid_until(&self) -> Option<Time> {
        self.lease_until
    }

    /// Sessions: whether, at `now` on its own clock, this client believes its session lives.
    pub fn believes_session_alive(&self, now: Time) -> bool {
        self.lease_until.is_some_and(|until| now < until)
    }

    /// The id the cluster assigned, once registered.
    pub fn id(&self) -> Option<ClientId> {
        self.id
    }

    /// True while an operation runs or waits.
    pub fn is_busy(&self) -> bool {
        self.running.is_some()
    }

    /// The server this client currently talks to.
    pub fn current_server(&self) -> ServerId {
        self.config.servers[self.server_position]
    }

    fn on_reply(&mut self, now: Time, from: ServerId, reply: ClientReply) {
        let _ = from; // Any server's answer is as good as the one we asked last.
        if self.id.is_some() && self.keepalives.iter().any(|k| k.seq == reply.seq) {
            self.term = self.term.max(reply.term);
            self.on_keepalive_reply(now, reply);
            return;
        }
        if let (Some((tag, seq)), ReplyBody::Outcome(outcome)) =
            (self.cancelled_acquire, &reply.body)
            && reply.seq == seq
            && !matches!(outcome, Outcome::Cancelled | Outcome::NotWaiting)
            && outcome_fits(
                &Operation::Acquire {
                    lock: "-".into(),
                    wait_ms: 0,
                    claim: Claim::EXCLUSIVE,
                },
                outcome,
            )
        {
            // The acquire was decided before the cancel reached it: that is its answer.
            self.cancelled_acquire = None;
            self.seen_index = self.seen_index.max(reply.index);
            let result = Ok(*outcome);
            let index = Some(reply.index);
            self.out
                .push(ClientOutput::Completed { tag, result, index });
            return;
        }
        let Some(running) = &self.running else {
            return; // A late reply to an operation that already finished.
        };
        if self.id.is_some() && running.op.is_write() && reply.term < running.sent_term {
            // An answer to an earlier attempt, sent before we knew of a newer term. Only the
            // current attempt's answer may count: a leader refuses a preempt without a log
            // entry only for a request of its own term, and an older attempt's refusal says
            // nothing about whether the newer attempt was appended.
            return;
        }
        let new_term = reply.term > self.term;
        self.term = self.term.max(reply.term);
        match reply.body {
            ReplyBody::Welcome {
                nonce,
                client,
                secret,
            } => {
                if self.id.is_none() && self.hello_nonce == Some(nonce) {
                    self.seen_index = self.seen_index.max(reply.index);
                    self.id = Some(client);
                    self.secret = Some(secret);
                    self.hello_nonce = None;
                    self.out.push(ClientOutput::Registered { client });
                    if let Some(sent_at) = self.hello_sent_at.take() {
                        self.start_lease(now, sent_at);
                    }
                    self.send_request(now);
                }
            }
            // A keepalive's answer whose send was forgotten (or a stray one): nothing to learn.
            ReplyBody::KeptAlive { .. } => {}
            ReplyBody::Error(ServiceError::SessionExpired { .. })
                if self.id.is_some() && reply.seq == running.seq =>
            {
                self.lose_session(Err(ClientError::Refused(Refused::SessionExpired)));
            }
            ReplyBody::Outcome(outcome) => {
                // An outcome that does not answer the operation (a preempt answered `free`) is a
                // malformed reply: ignore it, the retry or the timeout follows.
                if self.id.is_some()
                    && reply.seq == running.seq
                    && outcome_fits(&running.op, &outcome)
                {
                    self.seen_index = self.seen_index.max(reply.index);
                    self.finish(Ok(outcome), Some(reply.index));
                }
            }
            ReplyBody::Error(ServiceError::NotLeader { leader, .. })
                if new_term && self.id.is_some() && reply.seq == running.seq =>
            {
                // We named an old term: resend at once with the new one, to its leader.
                if let Some(position) =
                    leader.and_then(|leader| self.config.servers.iter().position(|&s| s == leader))
                {
                    self.server_position = position;
                }
                self.send_request(now);
            }
            ReplyBody::Error(error)
                if self.id.is_some()
                    && reply.seq == running.seq
                    && Refused::of(&error).is_some() =>
            {
                let refused = Refused::of(&error).expect("matched just above");
                self.finish(Err(ClientError::Refused(refused)), None);
            }
            ReplyBody::Error(_) => {
                let expected_seq = if self.id.is_some() { running.seq } else { 0 };
                if reply.seq == expected_seq {
                    // The server cannot serve us now: back off, then try the next one (the
                    // retry timer rotates, exactly as after silence, only sooner).
                    let at = now + self.config.error_backoff;
                    self.retry_deadline = Some(at);
                    self.out.push(ClientOutput::SetTimer {
                        timer: ClientTimer::Retry,
                        at,
                    });
                }
            }
        }
    }

    fn start_next(&mut self, now: Time) {
        let Some(queued) = self.queue.pop_front() else {
            return;
        };
        self.last_seq += 1;
        let deadline = now + queued.timeout;
        self.running = Some(Running {
            tag: queued.tag,
            op: queued.op,
            seq: self.last_seq,
            deadline,
            sent_term: self.term,
        });
        self.out.push(ClientOutput::Started {
            tag: queued.tag,
            seq: self.last_seq,
        });
        self.out.push(ClientOutput::SetTimer {
            timer: ClientTimer::OperationTimeout,
            at: deadline,
        });
        self.send_request(now);
    }

    /// Sends the hello (while unregistered) or the running operation to the current server.
    fn send_request(&mut self, now: Time) {
        let term = self.term;
        let Some(running) = &mut self.running else {
            self.retry_deadline = None;
            return;
        };
        running.sent_term = term;
        let running = &*running;
        let request = match self.id {
            None => {
                if self.hello_nonce.is_none() {
                    // A new hello: its welcome's lease counts from this first send.
                    self.hello_sent_at = Some(now);
                }
                let nonce = *self.hello_nonce.get_or_insert_with(|| self.rng.random());
                let ttl_ms = self
                    .config
                    .session_ttl
                    .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
                ClientRequest {
                    seq: 0,
                    seen_index: self.seen_index,
                    term: self.term,
                    body: RequestBody::Hello { nonce, ttl_ms },
                }
            }
            Some(client) => ClientRequest {
                seq: running.seq,
                seen_index: self.seen_index,
                term: self.term,
                body: RequestBody::Op {
                    client,
                    secret: self.secret,
                    op: running.op.clone(),
                },
            },
        };
        self.out.push(ClientOutput::Send {
            to: self.current_server(),
            request,
        });
        let at = now + self.config.retry_interval;
        self.retry_deadline = Some(at);
        self.out.push(ClientOutput::SetTimer {
            timer: ClientTimer::Retry,
            at,
        });
    }

    /// Whether `op` is a cancel of the acquire that runs now: it must not wait behind it.
    fn cancels_running_acquire(&self, op: &Operation) -> bool {
        let Operation::Cancel { lock } = op else {
            return false;
        };
        self.id.is_some()
            && self.cancelled_acquire.is_none()
            && self
                .running
                .as_ref()
                .is_some_and(|r| matches!(&r.op, Operation::Acquire { lock: l, .. } if l == lock))
    }

    /// Sends `cancel` at once, with a new seq, ahead of the queue; the running acquire waits
    /// for its outcome aside (`cancelled_acquire`).
    fn interrupt_with_cancel(&mut self, now: Time, cancel: Queued) {
        let acquire = self.running.take().expect("an acquire runs");
        self.cancelled_acquire = Some((acquire.tag, acquire.seq));
        self.queue.push_front(cancel);
        self.start_next(now);
    }

    fn finish(&mut self, result: Result<Outcome, ClientError>, index: Option<LogIndex>) {
        let running = self
            .running
            .take()
            .expect("finishing with an operation running");
        if let (Operation::Cancel { .. }, Some((tag, _))) = (&running.op, self.cancelled_acquire) {
            // The cancel's answer says what became of the acquire it interrupted.
            self.cancelled_acquire = None;
            let (acquire_result, acquire_index) = match result {
                Ok(Outcome::Cancelled) => (Ok(Outcome::Cancelled), index),
                Err(ClientError::Refused(refused)) => (Err(ClientError::Refused(refused)), None),
                _ => (Err(ClientError::TimedOut), None),
            };
            self.out.push(ClientOutput::Completed {
                tag,
                result: acquire_result,
                index: acquire_index,
            });
        }
        self.retry_deadline = None;
        if self.id.is_none() {
            // The hello never came back; a later operation starts a fresh one.
            self.hello_nonce = None;
            self.hello_sent_at = None;
        }
        self.out.push(ClientOutput::Completed {
            tag: running.tag,
            result,
            index,
        });
    }

    fn rotate_server(&mut self) {
        self.server_position = (self.server_position + 1) % self.config.servers.len();
    }

    // ----- sessions -----

    /// A welcome created the session: the lease counts from the hello's first send.
    fn start_lease(&mut self, now: Time, hello_sent_at: Time) {
        let (Some(rule), Some(client)) = (self.config.lease_rule(), self.id) else {
            return;
        };
        self.keepalives.clear();
        self.awaiting_keepalive = false;
        self.in_jeopardy = false;
        self.extend_lease(client, rule.valid_until(hello_sent_at));
        self.schedule_keepalive(hello_sent_at + rule.ttl / 3, now);
    }

    fn extend_lease(&mut self, client: ClientId, valid_until: Time) {
        let until = self
            .lease_until
            .map_or(valid_until, |at| at.max(valid_until));
        self.lease_until = Some(until);
        self.out.push(ClientOutput::LeaseRenewed {
            client,
            valid_until: until,
        });
        self.out.push(ClientOutput::SetTimer {
            timer: ClientTimer::LeaseEnd,
            at: until,
        });
    }

    /// The keepalive timer at `at`, but not before `now`.
    fn schedule_keepalive(&mut self, at: Time, now: Time) {
        let at = at.max(now);
        self.keepalive_at = Some(at);
        self.out.push(ClientOutput::SetTimer {
            timer: ClientTimer::Keepalive,
            at,
        });
    }

    fn on_keepalive_timer(&mut self, now: Time) {
        if self.keepalive_at.is_none_or(|at| now < at) || self.lease_until.is_none() {
            return;
        }
        if self.awaiting_keepalive {
            // The last keepalive went unanswered for a retry interval: the next server.
            self.renewal_failed(now);
            self.rotate_server();
        }
        self.send_keepalive(now);
    }

    /// Sends a keepalive with a fresh seq, so that its answer names this very send.
    fn send_keepalive(&mut self, now: Time) {
        let Some(client) = self.id else {
            return;
        };
        self.last_seq += 1;
        let seq = self.last_seq;
        if self.keepalives.len() >= KEEPALIVES_REMEMBERED_MAX {
            self.keepalives.pop_front();
        }
        self.keepalives
            .push_back(KeepaliveSent { seq, sent_at: now });
        self.awaiting_keepalive = true;
        let request = ClientRequest {
            seq,
            seen_index: self.seen_index,
            term: self.term,
            body: RequestBody::Keepalive {
                client,
                secret: self.secret,
            },
        };
        self.out.push(ClientOutput::Send {
            to: self.current_server(),
            request,
        });
        self.schedule_keepalive(now + self.config.retry_interval, now);
    }

    fn on_keepalive_reply(&mut self, now: Time, reply: ClientReply) {
        let sent = *self
            .keepalives
            .iter()
            .find(|k| k.seq == reply.seq)
            .expect("matched by the caller");
        let (Some(rule), Some(client)) = (self.config.lease_rule(), self.id) else {
            return;
        };
        let newest = self.keepalives.back().is_some_and(|k| k.seq == sent.seq);
        match reply.body {
            ReplyBody::KeptAlive { .. } => {
                self.in_jeopardy = false;
                self.extend_lease(client, rule.valid_until(sent.sent_at));
                if newest {
                    self.awaiting_keepalive = false;
                    self.schedule_keepalive(sent.sent_at + rule.ttl / 3, now);
                }
            }
            ReplyBody::Error(ServiceError::SessionExpired { .. }) => {
                self.lose_session(Err(ClientError::Refused(Refused::SessionExpired)));
            }
            ReplyBody::Error(_) if newest && self.awaiting_keepalive => {
                // Refused for now (no leader, overloaded): the next server after a pause.
                self.awaiting_keepalive = false;
                self.renewal_failed(now);
                self.rotate_server();
                self.schedule_keepalive(now + self.config.error_backoff, now);
            }
            ReplyBody::Error(_) | ReplyBody::Welcome { .. } | ReplyBody::Outcome(_) => {}
        }
    }

    /// A renewal failed: `Jeopardy` once, while the lease still holds.
    fn renewal_failed(&mut self, now: Time) {
        let (Some(client), Some(until)) = (self.id, self.lease_until) else {
            return;
        };
        if !self.in_jeopardy && now < until {
            self.in_jeopardy = true;
            self.out.push(ClientOutput::Jeopardy {
                client,
                valid_until: until,
            });
        }
    }

    /// The session is over for this client: its lease ran out or a server said it expired.
    /// It forgets its identity (the next operation says hello again); a running operation ends
    /// with `result` unless it is only a hello.
    fn lose_session(&mut self, result: Result<Outcome, ClientError>) {
        let Some(client) = self.id.take() else {
            return;
        };
        self.secret = None;
        self.lease_until = None;
        self.keepalive_at = None;
        self.keepalives.clear();
        self.awaiting_keepalive = false;
        self.in_jeopardy = false;
        self.out.push(ClientOutput::Expired { client });
        if self.running.is_some() {
            self.finish(result, None);
        }
    }
}

/// True if `outcome` is a possible answer to `op`.
pub fn outcome_fits(op: &Operation, outcome: &Outcome) -> bool {
    matches!(
        (op, outcome),
        (
            Operation::Preempt { .. },
            Outcome::Granted { .. } | Outcome::HeldBy { .. } | Outcome::PermitsMismatch { .. }
        ) | (
            Operation::Release { .. },
            Outcome::Released | Outcome::NotOwner
        ) | (
            Operation::Check { .. },
            Outcome::Free | Outcome::Owner { .. } | Outcome::Shared { .. }
        ) | (
            Operation::Acquire { .. },
            Outcome::Granted { .. }
                | Outcome::HeldBy { .. }
                | Outcome::TimedOut
                | Outcome::Cancelled
                | Outcome::PermitsMismatch { .. }
        ) | (
            Operation::Cancel { .. },
            Outcome::Cancelled | Outcome::NotWaiting
        )
    )
}

#[cfg(test)]
#[path = "client_mutation_tests.rs"]
mod mutation_kills;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::messages::{ClientId, ServiceError};

    fn servers() -> Vec<ServerId> {
        vec![ServerId(1), ServerId(2), ServerId(3)]
    }

    /// `ms` milliseconds after time zero. Shared with the mutation stories.
    pub(super) fn at_ms(ms: u64) -> Time {
        Time::ZERO + Duration::from_millis(ms)
    }

    /// An exclusive preempt of `lock`. Shared with the mutation stories.
    pub(super) fn preempt(lock: &str) -> Operation {
        Operation::Preempt {
            lock: lock.into(),
            claim: Claim::EXCLUSIVE,
        }
    }

    fn sends(outputs: &[ClientOutput]) -> Vec<(ServerId, ClientRequest)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                ClientOutput::Send { to, request } => Some((*to, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// What the batch completed: (operation, result). Shared with the mutation stories.
    pub(super) fn completed(outputs: &[ClientOutput]) -> Vec<(u64, Result<Outcome, ClientError>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                ClientOutput::Completed { tag, result, .. } => Some((*tag, *result)),
                _ => None,
            })
            .collect()
    }

    /// A client that has registered as client#9 through s2 and has operation 1 (`preempt a`)
    /// in flight to s2.
    fn registered_client_with_preempt_in_flight() -> Client {
        let mut client = Client::new(ClientConfig::new(servers(), ServerId(2)), 5);
        let outputs = client.step(
            at_ms(0),
            ClientInput::Invoke {
                tag: 1,
                op: preempt("a"),
                timeout: None,
            },
        );
        let [(to, hello)] = &sends(&outputs)[..] else {
            panic!("one hello expected: {outputs:?}")
        };
        assert_eq!(*to, ServerId(2), "the client starts with its first server");
        let RequestBody::Hello { nonce, .. } = hello.body else {
            panic!("registers first")
        };
        let welcome = ClientReply {
            index: 0,
            term: 0,
            seq: 0,
            body: ReplyBody::Welcome {
                nonce,
                client: ClientId(9),
                secret: SECRET,
            },
        };
        let outputs = client.step(
            at_ms(10),
            ClientInput::Reply {
                from: ServerId(2),
                reply: welcome,
            },
        );
        assert!(outputs.iter().any(|o| matches!(
            o,
            ClientOutput::Registered {
                client: ClientId(9)
            }
        )));
        let [(_, request)] = &sends(&outputs)[..] else {
            panic!("the operation follows the welcome")
        };
        assert_eq!(request.seq, 1);
        assert_eq!(
            request.body,
            RequestBody::Op {
                client: ClientId(9),
                secret: Some(SECRET),
                op: preempt("a")
            },
            "every request after the welcome carries its secret"
        );
        client
    }

    /// The secret the test cluster's welcome hands out.
    const SECRET: crate::node::ClientSecret = crate::node::ClientSecret::from_bytes([9; 16]);

    #[test]
    fn a_new_client_registers_then_sends_its_operation_and_completes_on_the_answer() {
        let mut client = registered_client_with_preempt_in_flight();
        let answer = ClientReply {
            index: 0,
            term: 0,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::Granted { token: 4 }),
        };
        let outputs = client.step(
            at_ms(20),
            ClientInput::Reply {
                from: ServerId(2),
                reply: answer,
            },
        );
        assert_eq!(
            completed(&outputs),
            vec![(1, Ok(Outcome::Granted { token: 4 }))]
        );
        assert!(!client.is_busy());
    }

    #[test]
    fn every_request_carries_the_newest_state_the_client_has_seen() {
        let mut client = registered_client_with_preempt_in_flight();
        let answer = ClientReply {
            index: 12,
            term: 0,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::Granted { token: 12 }),
        };
        let _ = client.step(
            at_ms(20),
            ClientInput::Reply {
                from: ServerId(2),
                reply: answer,
            },
        );
        let check = Operation::Check {
            lock: "a".into(),
            consistency: Default::default(),
        };
        let outputs = client.step(
            at_ms(30),
            ClientInput::Invoke {
                tag: 2,
                op: check,
                timeout: None,
            },
        );
        let [(_, request)] = &sends(&outputs)[..] else {
            panic!("the check is sent")
        };
        assert_eq!(
            request.seen_index, 12,
            "a lagging replica must not answer from before 12"
        );
    }

    #[test]
    fn silence_makes_the_client_resend_the_same_seq_to_the_next_server() {
        let mut client = registered_client_with_preempt_in_flight();
        // Early (spurious) retry timer: nothing happens.
        assert!(sends(&client.step(at_ms(100), ClientInput::Timer(ClientTimer::Retry))).is_empty());
        let outputs = client.step(at_ms(510), ClientInput::Timer(ClientTimer::Retry));
        let [(to, request)] = &sends(&outputs)[..] else {
            panic!("one resend expected")
        };
        assert_eq!(*to, ServerId(3), "rotates to the next server");
        assert_eq!(
            request.seq, 1,
            "a retry reuses the sequence number: exactly-once"
        );
    }

    /// A refusal no retry can change (a forged or forgotten identity, a reused seq, a bad
    /// request) ends the operation at once, with no effect, instead of retrying to the timeout.
    #[test]
    fn a_permanent_refusal_ends_the_operation_without_a_retry() {
        let refusals = [
            (ServiceError::Unauthorized, Refused::Unauthorized),
            (
                ServiceError::UnknownClient {
                    client: ClientId(9),
                },
                Refused::UnknownClient,
            ),
            (ServiceError::SeqReused { seq: 1 }, Refused::SeqReused),
            (
                ServiceError::BadRequest {
                    reason: "too long".into(),
                },
                Refused::BadRequest,
            ),
        ];
        for (error, refused) in refusals {
            let mut client = registered_client_with_preempt_in_flight();
            let reply = ClientReply {
                index: 0,
                term: 0,
                seq: 1,
                body: ReplyBody::Error(error),
            };
            let outputs = client.step(
                at_ms(20),
                ClientInput::Reply {
                    from: ServerId(2),
                    reply,
                },
            );
            assert_eq!(
                completed(&outputs),
                vec![(1, Err(ClientError::Refused(refused)))]
            );
            assert!(sends(&outputs).is_empty(), "no retry");
            assert!(!client.is_busy());
        }
    }

    #[test]
    fn an_error_reply_makes_the_client_back_off_and_try_the_next_server() {
        let mut client = registered_client_with_preempt_in_flight();
        let refusal = ClientReply {
            index: 0,
            term: 0,
            seq: 1,
            body: ReplyBody::Error(ServiceError::Unavailable),
        };
        let outputs = client.step(
            at_ms(20),
            ClientInput::Reply {
                from: ServerId(2),
                reply: refusal,
            },
        );
        assert!(sends(&outputs).is_empty(), "backs off before resending");
        let outputs = client.step(at_ms(120), ClientInput::Timer(ClientTimer::Retry));
        let [(to, request)] = &sends(&outputs)[..] else {
            panic!("one resend expected")
        };
        assert_eq!(*to, ServerId(3), "the very next server, none skipped");
        assert_eq!(request.seq, 1);
    }

    #[test]
    fn no_answer_before_the_timeout_completes_as_unknown_and_the_next_operation_starts() {
        let mut client = registered_client_with_preempt_in_flight();
        let outputs = client.step(
            at_ms(30),
            ClientInput::Invoke {
                tag: 2,
                op: Operation::Release { lock: "a".into() },
                timeout: None,
            },
        );
        assert!(
            sends(&outputs).is_empty(),
            "one operation at a time: the release waits"
        );
        let outputs = client.step(
            at_ms(5_000),
            ClientInput::Timer(ClientTimer::OperationTimeout),
        );
        assert_eq!(completed(&outputs), vec![(1, Err(ClientError::TimedOut))]);
        let [(_, request)] = &sends(&outputs)[..] else {
            panic!("the release starts")
        };
        assert_eq!(request.seq, 2, "the next operation takes the next seq");
        // A late answer to the abandoned preempt is ignored.
        let late = ClientReply {
            index: 0,
            term: 0,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::Granted { token: 4 }),
        };
        let outputs = client.step(
            at_ms(5_001),
            ClientInput::Reply {
                from: ServerId(1),
                reply: late,
            },
        );
        assert!(completed(&outputs).is_empty());
        assert!(client.is_busy());
    }

    #[test]
    fn a_reply_that_does_not_answer_the_operation_is_ignored() {
        let mut client = registered_client_with_preempt_in_flight();
        let nonsense = ClientReply {
            index: 0,
            term: 0,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::Free),
        };
        let outputs = client.step(
            at_ms(20),
            ClientInput::Reply {
                from: ServerId(2),
                reply: nonsense,
            },
        );
        assert!(
            completed(&outputs).is_empty(),
            "`free` does not answer a preempt"
        );
        assert!(client.is_busy());
    }

    #[test]
    fn a_full_queue_refuses_new_operations_without_sending_them() {
        let mut config = ClientConfig::new(servers(), ServerId(1));
        config.queue_max = 1;
        let mut client = Client::new(config, 1);
        let _ = client.step(
            at_ms(0),
            ClientInput::Invoke {
                tag: 1,
                op: preempt("a"),
                timeout: None,
            },
        );
        let _ = client.step(
            at_ms(0),
            ClientInput::Invoke {
                tag: 2,
                op: preempt("b"),
                timeout: None,
            },
        );
        let outputs = client.step(
            at_ms(0),
            ClientInput::Invoke {
                tag: 3,
                op: preempt("c"),
                timeout: None,
            },
        );
        assert_eq!(completed(&outputs), vec![(3, Err(ClientError::QueueFull))]);
    }

    /// A client learns the current term from replies. Told `not_leader` with a newer term, it
    /// resends the same seq at once with that term, to the named leader; from then on an
    /// answer from an older term is one for the attempt it gave up on, and is ignored.
    #[test]
    fn a_newer_term_is_adopted_and_answers_from_older_terms_are_ignored() {
        let mut client = registered_client_with_preempt_in_flight();
        let redirect = ClientReply {
            index: 0,
            term: 4,
            seq: 1,
            body: ReplyBody::Error(ServiceError::NotLeader {
                leader: Some(ServerId(3)),
                term: 4,
            }),
        };
        let outputs = client.step(
            at_ms(20),
            ClientInput::Reply {
                from: ServerId(2),
                reply: redirect,
            },
        );
        let [(to, resent)] = &sends(&outputs)[..] else {
            panic!("the same request goes out again at once: {outputs:?}")
        };
        assert_eq!(*to, ServerId(3), "to the leader the refusal named");
        assert_eq!((resent.seq, resent.term), (1, 4));

        let late = ClientReply {
            index: 6,
            term: 3,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::HeldBy { owner: ClientId(2) }),
        };
        let outputs = client.step(
            at_ms(30),
            ClientInput::Reply {
                from: ServerId(1),
                reply: late,
            },
        );
        assert!(
            completed(&outputs).is_empty(),
            "term 3 answered an old attempt"
        );

        let current = ClientReply {
            index: 7,
            term: 4,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::Granted { token: 7 }),
        };
        let outputs = client.step(
            at_ms(40),
            ClientInput::Reply {
                from: ServerId(3),
                reply: current,
            },
        );
        assert_eq!(
            completed(&outputs),
            vec![(1, Ok(Outcome::Granted { token: 7 }))]
        );
    }

    // ----- sessions: the client's own lease -----

    const TTL: Duration = Duration::from_secs(3);

    fn lease_events(outputs: &[ClientOutput]) -> Vec<ClientOutput> {
        outputs
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    ClientOutput::LeaseRenewed { .. }
                        | ClientOutput::Jeopardy { .. }
                        | ClientOutput::Expired { .. }
                )
            })
            .cloned()
            .collect()
    }

    fn lease_renewed_until(outputs: &[ClientOutput]) -> Option<Time> {
        outputs.iter().find_map(|o| match o {
            ClientOutput::LeaseRenewed { valid_until, .. } => Some(*valid_until),
            _ => None,
        })
    }

    fn reply(step: &mut Client, at: u64, reply: ClientReply) -> Vec<ClientOutput> {
        step.step(
            at_ms(at),
            ClientInput::Reply {
                from: ServerId(2),
                reply,
            },
        )
    }

    fn kept_alive(seq: u64) -> ClientReply {
        ClientReply {
            seq,
            index: 0,
            term: 0,
            body: ReplyBody::KeptAlive {
                ttl_ms: Some(3_000),
            },
        }
    }

    /// A client with a 3 s session, whose hello left at 0 ms and was welcomed at 40 ms as
    /// client#9, with no operation left to run.
    fn client_with_session() -> (Client, Vec<ClientOutput>) {
        let mut config = ClientConfig::new(servers(), ServerId(2));
        config.session_ttl = Some(TTL);
        let mut client = Client::new(config, 5);
        let invoke = ClientInput::Invoke {
            tag: 1,
            op: Operation::Check {
                lock: "a".into(),
                consistency: crate::node::Consistency::Local,
            },
            timeout: None,
        };
        let outputs = client.step(at_ms(0), invoke);
        let [(_, hello)] = &sends(&outputs)[..] else {
            panic!("one hello expected")
        };
        let RequestBody::Hello { nonce, ttl_ms } = hello.body else {
            panic!("registers first")
        };
        assert_eq!(ttl_ms, Some(3_000), "the hello asks for the TTL");
        let welcome = ClientReply {
            index: 1,
            term: 1,
            seq: 0,
            body: ReplyBody::Welcome {
                nonce,
                client: ClientId(9),
                secret: SECRET,
            },
        };
        let outputs = reply(&mut client, 40, welcome);
        let answer = ClientReply {
            index: 1,
            term: 1,
            seq: 1,
            body: ReplyBody::Outcome(Outcome::Free),
        };
        let _ = reply(&mut client, 45, answer);
        (client, outputs)
    }

    /// `LeaseRule`: the lease of an acknowledged renewal counts from its send, shortened by
    /// the drift bound and the margin: 3 s × 0.99 − 100 ms = 2,870 ms after the send.
    #[test]
    fn the_lease_counts_from_the_send_of_the_acknowledged_request_not_from_its_answer() {
        let (mut client, outputs) = client_with_session();
        assert_eq!(
            lease_renewed_until(&outputs),
            Some(at_ms(2_870)),
            "the welcome's lease counts from the hello's send at 0 ms, not the answer at 40"
        );
        assert_eq!(client.lease_valid_until(), Some(at_ms(2_870)));
        // The first renewal is due TTL/3 after that send.
        let outputs = client.step(at_ms(1_000), ClientInput::Timer(ClientTimer::Keepalive));
        let [(_, request)] = &sends(&outputs)[..] else {
            panic!("a keepalive at TTL/3: {outputs:?}")
        };
        assert_eq!(
            request.body,
            RequestBody::Keepalive {
                client: ClientId(9),
                secret: Some(SECRET)
            }
        );
        // Answered 400 ms later: the lease runs from 1,000 ms, the send.
        let outputs = reply(&mut client, 1_400, kept_alive(request.seq));
        assert_eq!(lease_renewed_until(&outputs), Some(at_ms(3_870)));
        assert!(client.believes_session_alive(at_ms(3_869)));
        assert!(!client.believes_session_alive(at_ms(3_870)));
        // The next renewal is due TTL/3 after this one's send.
        assert!(outputs.iter().any(|o| matches!(
            o,
            ClientOutput::SetTimer { timer: ClientTimer::Keepalive, at } if *at == at_ms(2_000)
        )));
    }

    /// Every keepalive takes a fresh seq, past the operations' ones, so that an answer names
    /// the very send whose lease it grants (the lease counts from that send).
    #[test]
    fn every_keepalive_takes_a_fresh_seq() {
        let (mut client, _) = client_with_session();
        let first = client.step(at_ms(1_000), ClientInput::Timer(ClientTimer::Keepalive));
        let again = client.step(at_ms(1_500), ClientInput::Timer(ClientTimer::Keepalive));
        let seqs: Vec<u64> = [first, again]
            .iter()
            .map(|outputs| sends(outputs)[0].1.seq)
            .collect();
        assert_eq!(seqs, vec![2, 3], "the session's check took seq 1");
    }

    /// Renewals that fail put the client in jeopardy (once) while its lease holds; when the
    /// lease runs out it reports `Expired`, forgets its id, and its next operation says hello.
    #[test]
    fn failing_renewals_bring_jeopardy_then_expiry_and_a_new_hello() {
        let (mut client, _) = client_with_session();
        let outputs = client.step(at_ms(1_000), ClientInput::Timer(ClientTimer::Keepalive));
        assert_eq!(sends(&outputs).len(), 1);
        // Silence for a retry interval (500 ms): jeopardy, and a keepalive to the next server.
        let outputs = client.step(at_ms(1_500), ClientInput::Timer(ClientTimer::Keepalive));
        assert_eq!(
            lease_events(&outputs)
                .iter()
                .map(|o| format!("{o:?}"))
                .collect::<Vec<_>>(),
            vec![format!(
                "{:?}",
                ClientOutput::Jeopardy {
                    client: ClientId(9),
                    valid_until: at_ms(2_870)
                }
            )]
        );
        assert_eq!(sends(&outputs)[0].0, ServerId(3), "the next server");
        let outputs = client.step(at_ms(2_000), ClientInput::Timer(ClientTimer::Keepalive));
        assert!(lease_events(&outputs).is_empty(), "jeopardy once per spell");
        let outputs = client.step(at_ms(2_870), ClientInput::Timer(ClientTimer::LeaseEnd));
        assert!(matches!(
            lease_events(&outputs)[..],
            [ClientOutput::Expired {
                client: ClientId(9)
            }]
        ));
        assert_eq!(client.id(), None);
        assert!(!client.believes_session_alive(at_ms(2_870)));
        let outputs = client.step(
            at_ms(2_900),
            ClientInput::Invoke {
                tag: 2,
                op: preempt("a"),
                timeout: None,
            },
        );
        assert!(matches!(
            sends(&outputs)[..],
            [(
                _,
                ClientRequest {
                    body: RequestBody::Hello { .. },
                    ..
                }
            )]
        ));
    }

    /// A server's `session_expired` ends the session at once, whatever the lease says, and
    /// the running operation is refused for good.
    #[test]
    fn session_expired_from_the_cluster_ends_the_session_at_once() {
        let (mut client, _) = client_with_session();
        let outputs = client.step(
            at_ms(100),
            ClientInput::Invoke {
                tag: 2,
                op: preempt("a"),
                timeout: None,
            },
        );
        let seq = sends(&outputs)[0].1.seq;
        let expired = ClientReply {
            seq,
            index: 0,
            term: 1,
            body: ReplyBody::Error(ServiceError::SessionExpired {
                client: ClientId(9),
            }),
        };
        let outputs = reply(&mut client, 120, expired);
        assert_eq!(
            completed(&outputs),
            vec![(2, Err(ClientError::Refused(Refused::SessionExpired)))]
        );
        assert!(matches!(
            lease_events(&outputs)[..],
            [ClientOutput::Expired {
                client: ClientId(9)
            }]
        ));
        assert_eq!(client.lease_valid_until(), None);
    }

    /// A client without a TTL sends no keepalives and keeps no lease: exactly as before.
    #[test]
    fn a_client_without_a_ttl_has_no_lease_and_sends_no_keepalive() {
        let mut client = registered_client_with_preempt_in_flight();
        assert_eq!(client.lease_valid_until(), None);
        let outputs = client.step(at_ms(5_000), ClientInput::Timer(ClientTimer::Keepalive));
        assert!(sends(&outputs).is_empty());
        assert!(lease_events(&outputs).is_empty());
    }

    /// A leader that has stepped down answers `not leader` in the term the client already
    /// knows: that is not news of a new leader, so the client backs off and rotates as after
    /// any error, instead of hammering the same answer at once (only a newer term redirects).
    #[test]
    fn not_leader_in_a_term_already_known_backs_off_instead_of_resending_at_once() {
        let mut client = registered_client_with_preempt_in_flight();
        let redirect = |term| ClientReply {
            index: 0,
            term,
            seq: 1,
            body: ReplyBody::Error(ServiceError::NotLeader {
                leader: Some(ServerId(1)),
                term,
            }),
        };
        let outputs = client.step(
            at_ms(20),
            ClientInput::Reply {
                from: ServerId(2),
                reply: redirect(4),
            },
        );
        assert_eq!(sends(&outputs).len(), 1, "term 4 is news: resent at once");
        let outputs = client.step(
            at_ms(30),
            ClientInput::Reply {
                from: ServerId(1),
                reply: redirect(4),
            },
        );
        assert!(sends(&outputs).is_empty(), "term 4 again: {outputs:?}");
        assert!(outputs.iter().any(|o| matches!(
            o,
            ClientOutput::SetTimer {
                timer: ClientTimer::Retry,
                ..
            }
        )));
    }

    /// A cancel does not wait behind the acquire it stops: it leaves at once with its own seq,
    /// and the acquire completes with what the cancel learns. A cancel that finds no wait
    /// leaves the acquire unknown: it was decided first, and a retry of it would be stale.
    #[test]
    fn a_cancel_interrupts_the_running_acquire_and_decides_its_answer() {
        let mut client = registered_client_with_preempt_in_flight();
        let granted = ClientReply {
            seq: 1,
            index: 3,
            term: 1,
            body: ReplyBody::Outcome(Outcome::Granted { token: 3 }),
        };
        let from = ServerId(2);
        let _ = client.step(
            at_ms(20),
            ClientInput::Reply {
                from,
                reply: granted,
            },
        );
        let acquire = Operation::Acquire {
            lock: "b".into(),
            wait_ms: 10_000,
            claim: Claim::EXCLUSIVE,
        };
        let invoke = |tag, op| ClientInput::Invoke {
            tag,
            op,
            timeout: None,
        };
        let outputs = client.step(at_ms(30), invoke(2, acquire.clone()));
        assert_eq!(sends(&outputs)[0].1.seq, 2, "the acquire is sent");
        let cancel = Operation::Cancel { lock: "b".into() };
        let outputs = client.step(at_ms(40), invoke(3, cancel.clone()));
        let sent = sends(&outputs);
        assert_eq!(sent.len(), 1, "the cancel leaves at once: {outputs:?}");
        assert_eq!(sent[0].1.seq, 3);
        assert!(matches!(&sent[0].1.body, RequestBody::Op { op, .. } if *op == cancel));
        let cancelled = ClientReply {
            seq: 3,
            index: 5,
            term: 1,
            body: ReplyBody::Outcome(Outcome::Cancelled),
        };
        let outputs = client.step(
            at_ms(50),
            ClientInput::Reply {
                from,
                reply: cancelled,
            },
        );
        assert_eq!(
            completed(&outputs),
            vec![(2, Ok(Outcome::Cancelled)), (3, Ok(Outcome::Cancelled))]
        );
        // Again, but the acquire was decided before the cancel reached it.
        let _ = client.step(at_ms(60), invoke(4, acquire));
        let _ = client.step(at_ms(70), invoke(5, cancel));
        let not_waiting = ClientReply {
            seq: 5,
            index: 7,
            term: 1,
            body: ReplyBody::Outcome(Outcome::NotWaiting),
        };
        let outputs = client.step(
            at_ms(80),
            ClientInput::Reply {
                from,
                reply: not_waiting,
            },
        );
        assert_eq!(
            completed(&outputs),
            vec![
                (4, Err(ClientError::TimedOut)),
                (5, Ok(Outcome::NotWaiting))
            ]
        );
    }
}
