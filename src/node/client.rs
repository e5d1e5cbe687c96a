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

use super::messages::{
    ClientId, ClientReply, ClientRequest, ClientSecret, LogIndex, Operation, Outcome, ReplyBody,
    RequestBody, ServerId, ServiceError, Term,
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
        }
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
}

impl Refused {
    /// The permanent refusal `error` is, if it is one.
    pub fn of(error: &ServiceError) -> Option<Refused> {
        match error {
            ServiceError::BadRequest { .. } => Some(Refused::BadRequest),
            ServiceError::UnknownClient { .. } => Some(Refused::UnknownClient),
            ServiceError::Unauthorized => Some(Refused::Unauthorized),
            ServiceError::SeqReused { .. } => Some(Refused::SeqReused),
            ServiceError::Unavailable
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
}

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
            server_position,
            last_seq: 0,
            seen_index: 0,
            term: 0,
            retry_deadline: None,
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
        std::mem::take(&mut self.out)
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
                    self.send_request(now);
                }
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
                let nonce = *self.hello_nonce.get_or_insert_with(|| self.rng.random());
                ClientRequest {
                    seq: 0,
                    seen_index: self.seen_index,
                    term: self.term,
                    body: RequestBody::Hello { nonce },
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

    fn finish(&mut self, result: Result<Outcome, ClientError>, index: Option<LogIndex>) {
        let running = self
            .running
            .take()
            .expect("finishing with an operation running");
        self.retry_deadline = None;
        if self.id.is_none() {
            // The hello never came back; a later operation starts a fresh one.
            self.hello_nonce = None;
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
}

/// True if `outcome` is a possible answer to `op`.
pub fn outcome_fits(op: &Operation, outcome: &Outcome) -> bool {
    matches!(
        (op, outcome),
        (
            Operation::Preempt { .. },
            Outcome::Granted { .. } | Outcome::HeldBy { .. }
        ) | (
            Operation::Release { .. },
            Outcome::Released | Outcome::NotOwner
        ) | (
            Operation::Check { .. },
            Outcome::Free | Outcome::Owner { .. }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::messages::{ClientId, ServiceError};

    fn servers() -> Vec<ServerId> {
        vec![ServerId(1), ServerId(2), ServerId(3)]
    }

    fn at_ms(ms: u64) -> Time {
        Time::ZERO + Duration::from_millis(ms)
    }

    fn preempt(lock: &str) -> Operation {
        Operation::Preempt { lock: lock.into() }
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

    fn completed(outputs: &[ClientOutput]) -> Vec<(u64, Result<Outcome, ClientError>)> {
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
        let RequestBody::Hello { nonce } = hello.body else {
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
}
