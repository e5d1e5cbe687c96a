//! Stories that kill mutants of `src/node/client.rs` which survived every other test
//! (docs/mutation-testing.md). They drive the client only through `Client::step` and read
//! only its outputs and public observers. Each cites the mutant it was written for.

use super::tests::{at_ms, completed, preempt};
use super::{Client, ClientConfig, ClientError, ClientInput, ClientOutput, ClientTimer, Refused};
use crate::node::messages::{
    Claim, ClientId, ClientReply, ClientSecret, Consistency, LogIndex, Operation, Outcome,
    ReplyBody, RequestBody, ServerId, ServiceError,
};
use crate::node::time::Time;
use std::time::Duration;

/// The secret the welcomes below hand out.
const SECRET: ClientSecret = ClientSecret::from_bytes([7; 16]);
/// The session TTL of the stories with a session: renewals are due every TTL/3 = 1 s.
const TTL: Duration = Duration::from_secs(3);

fn reply_from_s2(client: &mut Client, at: u64, reply: ClientReply) -> Vec<ClientOutput> {
    let from = ServerId(2);
    client.step(at_ms(at), ClientInput::Reply { from, reply })
}

/// The requests the batch sends: (server, seq, whether it is a keepalive).
fn sent(outputs: &[ClientOutput]) -> Vec<(ServerId, u64, bool)> {
    let pick = |output: &ClientOutput| match output {
        ClientOutput::Send { to, request } => Some((
            *to,
            request.seq,
            matches!(request.body, RequestBody::Keepalive { .. }),
        )),
        _ => None,
    };
    outputs.iter().filter_map(pick).collect()
}

fn lease_renewed_until(outputs: &[ClientOutput]) -> Option<Time> {
    outputs.iter().find_map(|output| match output {
        ClientOutput::LeaseRenewed { valid_until, .. } => Some(*valid_until),
        _ => None,
    })
}

/// A client of s1..s3 (s2 first) with a session of `ttl`, asked at 0 ms to run `op`: not yet
/// registered, it has sent its hello; returns it with that hello's nonce.
fn saying_hello(ttl: Option<Duration>, op: Operation) -> (Client, u64) {
    let mut config = ClientConfig::new(vec![ServerId(1), ServerId(2), ServerId(3)], ServerId(2));
    config.session_ttl = ttl;
    let mut client = Client::new(config, 5);
    let invoke = ClientInput::Invoke {
        tag: 1,
        op,
        timeout: None,
    };
    let outputs = client.step(at_ms(0), invoke);
    let nonce = outputs
        .iter()
        .find_map(|output| match output {
            ClientOutput::Send { request, .. } => match request.body {
                RequestBody::Hello { nonce, .. } => Some(nonce),
                _ => None,
            },
            _ => None,
        })
        .expect("an unregistered client says hello first");
    (client, nonce)
}

/// The welcome of client#9, answering the hello that carried `nonce`.
fn welcome(nonce: u64) -> ClientReply {
    ClientReply {
        index: 1,
        term: 1,
        seq: 0,
        body: ReplyBody::Welcome {
            nonce,
            client: ClientId(9),
            secret: SECRET,
        },
    }
}

/// An answer in term 1 to operation `seq`, reflecting the state at `index`.
fn answer(seq: u64, index: LogIndex, outcome: Outcome) -> ClientReply {
    ClientReply {
        index,
        term: 1,
        seq,
        body: ReplyBody::Outcome(outcome),
    }
}

/// A refusal in term 1 of operation `seq`.
fn refusal(seq: u64, error: ServiceError) -> ClientReply {
    ClientReply {
        index: 1,
        term: 1,
        seq,
        body: ReplyBody::Error(error),
    }
}

/// An acquire of `b` that may wait 10 s.
fn acquire_b() -> Operation {
    Operation::Acquire {
        lock: "b".into(),
        wait_ms: 10_000,
        claim: Claim::EXCLUSIVE,
    }
}

/// The user asks, as operation `tag`, to cancel a wait for `b`.
fn cancel_b(tag: u64) -> ClientInput {
    ClientInput::Invoke {
        tag,
        op: Operation::Cancel { lock: "b".into() },
        timeout: None,
    }
}

/// Client#9 of a three-server cluster, welcomed through s2 at 40 ms (its hello left at 0 ms),
/// with `op` (operation 1, seq 1) sent right after the welcome. With `ttl`, it keeps a
/// session of that TTL.
fn welcomed_client(ttl: Option<Duration>, op: Operation) -> Client {
    let (mut client, nonce) = saying_hello(ttl, op);
    let outputs = reply_from_s2(&mut client, 40, welcome(nonce));
    assert_eq!(sent(&outputs), vec![(ServerId(2), 1, false)]);
    client
}

/// Client#9 with a 3 s session whose first operation (a local check) was answered at 45 ms:
/// idle, its lease running from the hello's send at 0 ms, its first keepalive due at 1 s.
fn client_with_session() -> Client {
    let check = Operation::Check {
        lock: "a".into(),
        consistency: Consistency::Local,
    };
    let mut client = welcomed_client(Some(TTL), check);
    let _ = reply_from_s2(&mut client, 45, answer(1, 1, Outcome::Free));
    assert!(!client.is_busy());
    client
}

/// The client learns its id from the welcome, and says so: `Client::id` is what the simulator
/// and the TCP driver record in histories and name in traces. A `session_expired` that does
/// not answer the running request (a late answer to an earlier one) ends nothing: only the
/// running request's answer speaks for the session the client holds now. (Mutants: `Client::id`
/// made `None`; `self.id.is_some() && reply.seq == running.seq` in `on_reply`'s
/// `session_expired` arm made `||`.)
#[test]
fn a_session_expired_answer_to_another_request_than_the_running_one_ends_nothing() {
    let mut client = welcomed_client(None, preempt("a"));
    assert_eq!(client.id(), Some(ClientId(9)));
    let late = refusal(
        0,
        ServiceError::SessionExpired {
            client: ClientId(9),
        },
    );
    let outputs = reply_from_s2(&mut client, 50, late);
    assert!(outputs.is_empty(), "nothing to do: {outputs:?}");
    assert_eq!(client.id(), Some(ClientId(9)), "still registered");
    assert!(client.is_busy(), "the preempt still waits for its answer");
    // The running request's own answer does end the session.
    let expired = refusal(
        1,
        ServiceError::SessionExpired {
            client: ClientId(9),
        },
    );
    let outputs = reply_from_s2(&mut client, 60, expired);
    assert!(outputs.iter().any(|output| matches!(
        output,
        ClientOutput::Completed {
            tag: 1,
            result: Err(ClientError::Refused(Refused::SessionExpired)),
            ..
        }
    )));
    assert_eq!(client.id(), None);
}

/// The contract lets late and spurious timers arrive: the keepalive timer is judged against
/// the deadline the client set, not against its arrival. One that fires before the renewal is
/// due (a deadline since replaced) sends nothing; one that fires after it (a busy driver)
/// still sends the renewal. (Mutants: `now < at` in `on_keepalive_timer` made `now > at`; the
/// `||` after it made `&&`.)
#[test]
fn a_keepalive_timer_sends_only_once_the_renewal_is_due_however_late_it_fires() {
    let mut client = client_with_session();
    let early = client.step(at_ms(900), ClientInput::Timer(ClientTimer::Keepalive));
    assert!(sent(&early).is_empty(), "not due until 1 s: {early:?}");
    let late = client.step(at_ms(1_200), ClientInput::Timer(ClientTimer::Keepalive));
    assert_eq!(sent(&late), vec![(ServerId(2), 2, true)]);
}

/// `LeaseRule`: a renewal counts from its own send, even when its answer comes after a retry
/// went out. The client remembers its last few keepalives (four), so the first one's answer,
/// arriving after the retry, still renews the lease from 1 s: 1 s + 3 s × 0.99 − 100 ms. An
/// error answering that older keepalive, by contrast, says nothing about the retry still on
/// its way: the client neither moves to another server nor backs off. (Mutants: `>=` in
/// `send_keepalive`'s bound made `<`, which remembered only the newest send; the match guard
/// `newest && self.awaiting_keepalive` in `on_keepalive_reply` made `true`.)
#[test]
fn a_late_answer_to_an_earlier_keepalive_renews_from_its_send_and_a_late_error_changes_nothing() {
    let mut client = client_with_session();
    let first = client.step(at_ms(1_000), ClientInput::Timer(ClientTimer::Keepalive));
    assert_eq!(sent(&first), vec![(ServerId(2), 2, true)]);
    // Unanswered for a retry interval: the renewal goes to the next server.
    let retry = client.step(at_ms(1_500), ClientInput::Timer(ClientTimer::Keepalive));
    assert_eq!(sent(&retry), vec![(ServerId(3), 3, true)]);

    let refused = refusal(2, ServiceError::Unavailable);
    let outputs = reply_from_s2(&mut client, 1_550, refused);
    assert!(outputs.is_empty(), "the retry still runs: {outputs:?}");

    let kept_alive = ClientReply {
        index: 1,
        term: 1,
        seq: 2,
        body: ReplyBody::KeptAlive {
            ttl_ms: Some(3_000),
        },
    };
    let outputs = reply_from_s2(&mut client, 1_600, kept_alive);
    assert_eq!(lease_renewed_until(&outputs), Some(at_ms(3_870)));
    assert_eq!(client.lease_valid_until(), Some(at_ms(3_870)));
    // The retry still waits: its own silence moves on to s1.
    let next = client.step(at_ms(2_000), ClientInput::Timer(ClientTimer::Keepalive));
    assert_eq!(sent(&next), vec![(ServerId(1), 4, true)]);
}

/// Jeopardy means "the lease still holds but a renewal failed": a renewal refused while the
/// lease holds (a millisecond before its end) announces it, with the lease's end; one refused
/// at the very instant the lease ends announces nothing, since the lease is over, not in
/// danger (the `LeaseEnd` timer due at that instant ends the session). The hello left at 0 ms,
/// so the lease ends at 3 s x 0.99 - 100 ms = 2,870 ms. (Mutant: `now < until` in
/// `renewal_failed` made `<=`.)
#[test]
fn a_renewal_refused_at_the_instant_the_lease_ends_is_no_jeopardy() {
    let lease_end = at_ms(2_870);
    for (refused_at_ms, jeopardy) in [(2_869, Some(lease_end)), (2_870, None)] {
        let mut client = client_with_session();
        let keepalive = client.step(at_ms(1_000), ClientInput::Timer(ClientTimer::Keepalive));
        assert_eq!(sent(&keepalive), vec![(ServerId(2), 2, true)]);
        let refused = refusal(2, ServiceError::Overloaded);
        let outputs = reply_from_s2(&mut client, refused_at_ms, refused);
        let announced = outputs.iter().find_map(|output| match output {
            ClientOutput::Jeopardy { valid_until, .. } => Some(*valid_until),
            _ => None,
        });
        assert_eq!(
            announced, jeopardy,
            "refused at {refused_at_ms} ms: {outputs:?}"
        );
    }
}

/// Only a write's answer must come from the attempt's term or later (an older attempt's
/// refusal says nothing of whether the newer attempt was appended). A check is a read: an
/// answer from a replica still in an older term is as good as any, and the client takes it.
/// (Mutant: `Operation::is_write` made `true`, which made the client drop it and wait for a
/// retry.)
#[test]
fn a_check_takes_an_answer_from_a_replica_still_in_an_older_term() {
    let check = Operation::Check {
        lock: "a".into(),
        consistency: Consistency::Local,
    };
    let mut client = welcomed_client(None, check);
    let from_term_0 = ClientReply {
        index: 1,
        term: 0,
        seq: 1,
        body: ReplyBody::Outcome(Outcome::Free),
    };
    let outputs = reply_from_s2(&mut client, 50, from_term_0);
    assert!(outputs.iter().any(|output| matches!(
        output,
        ClientOutput::Completed {
            tag: 1,
            result: Ok(Outcome::Free),
            ..
        }
    )));
    assert!(!client.is_busy());
}

/// A welcome names the hello it answers by its nonce, and a client takes only the one that
/// answers its own hello: a welcome carrying another nonce (a late answer to a hello this
/// client no longer waits for, or one meant for another connection) registers nothing and
/// sends nothing; the client's own welcome, after it, registers it. (Mutant:
/// `self.id.is_none() && self.hello_nonce == Some(nonce)` in `on_reply` made `||`, which took
/// any welcome while unregistered, and with it another registration's id.)
#[test]
fn a_welcome_for_another_hello_is_ignored() {
    let check = Operation::Check {
        lock: "a".into(),
        consistency: Consistency::Local,
    };
    let (mut client, nonce) = saying_hello(None, check);
    let welcome = |nonce, client| ClientReply {
        index: 1,
        term: 1,
        seq: 0,
        body: ReplyBody::Welcome {
            nonce,
            client,
            secret: SECRET,
        },
    };
    let outputs = reply_from_s2(&mut client, 30, welcome(nonce.wrapping_add(1), ClientId(4)));
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(client.id(), None);

    let outputs = reply_from_s2(&mut client, 40, welcome(nonce, ClientId(9)));
    assert!(
        outputs.iter().any(|output| matches!(
            output,
            ClientOutput::Registered { client } if *client == ClientId(9)
        )),
        "{outputs:?}"
    );
    assert_eq!(client.id(), Some(ClientId(9)));
    assert_eq!(sent(&outputs), vec![(ServerId(2), 1, false)]);
}

/// A cancel interrupts only an acquire that is on its way. Before the welcome the client has
/// no id and the acquire has not left, so there is no wait to stop: the cancel queues behind
/// it, and after the welcome the acquire goes first, as seq 1. (Mutant: `id.is_some() &&
/// cancelled_acquire.is_none() && running is that acquire` in `cancels_running_acquire` made
/// `... || running is that acquire`, which put the cancel first and set the acquire aside
/// unsent.)
#[test]
fn a_cancel_invoked_before_the_welcome_waits_behind_the_acquire_it_names() {
    let acquire = acquire_b();
    let (mut client, nonce) = saying_hello(None, acquire.clone());
    let outputs = client.step(at_ms(10), cancel_b(2));
    assert_eq!(sent(&outputs), vec![], "nothing leaves before the welcome");
    let outputs = reply_from_s2(&mut client, 40, welcome(nonce));
    let requests: Vec<(u64, RequestBody)> = outputs
        .iter()
        .filter_map(|output| match output {
            ClientOutput::Send { request, .. } => Some((request.seq, request.body.clone())),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&requests[..], [(1, RequestBody::Op { op, .. })] if *op == acquire),
        "the acquire leaves first: {requests:?}"
    );
}

/// Only an acquire can be interrupted by a cancel: a cancel invoked while a preempt runs is an
/// ordinary operation, and waits its turn behind it. (Mutant: `id.is_some() &&
/// cancelled_acquire.is_none()` in `cancels_running_acquire` made `||`, which let a
/// registered client's cancel jump any running operation.)
#[test]
fn a_cancel_invoked_while_a_preempt_runs_waits_its_turn() {
    let mut client = welcomed_client(None, preempt("b"));
    let outputs = client.step(at_ms(50), cancel_b(2));
    assert_eq!(sent(&outputs), vec![], "the preempt still runs");
    let granted = answer(1, 2, Outcome::Granted { token: 2 });
    let outputs = reply_from_s2(&mut client, 60, granted);
    assert_eq!(
        sent(&outputs),
        vec![(ServerId(2), 2, false)],
        "then the cancel"
    );
}

/// A cancel races the acquire it interrupts: if the acquire's own answer comes first, and it
/// is a decision (here `granted`), that is the acquire's answer, at once; the cancel then
/// finds no wait (`not_waiting`) and completes on its own. (Mutant: `!matches!(outcome,
/// Cancelled | NotWaiting)` in `on_reply` made `matches!`, which ignored the grant, so the
/// acquire ended unknown though the client held the lock.)
#[test]
fn an_acquire_granted_before_its_cancel_arrives_completes_with_its_grant() {
    let mut client = welcomed_client(None, acquire_b());
    let outputs = client.step(at_ms(50), cancel_b(2));
    assert_eq!(
        sent(&outputs),
        vec![(ServerId(2), 2, false)],
        "the cancel leaves"
    );
    let granted = answer(1, 2, Outcome::Granted { token: 2 });
    let outputs = reply_from_s2(&mut client, 60, granted);
    assert_eq!(
        completed(&outputs),
        vec![(1, Ok(Outcome::Granted { token: 2 }))]
    );
    let not_waiting = answer(2, 3, Outcome::NotWaiting);
    let outputs = reply_from_s2(&mut client, 70, not_waiting);
    assert_eq!(completed(&outputs), vec![(2, Ok(Outcome::NotWaiting))]);
}

/// A cancel refused for good (here `unauthorized`: the server does not take this client's
/// secret) says the same of the acquire it interrupted, which went out under that secret too:
/// both complete with the refusal, and the user does not take the acquire for merely timed
/// out, to be retried. (Mutant: the `Err(ClientError::Refused(refused))` arm of `finish`'s
/// cancel branch deleted, which ended the acquire `timed_out`.)
#[test]
fn a_cancel_refused_for_good_ends_its_acquire_with_the_same_refusal() {
    let mut client = welcomed_client(None, acquire_b());
    let outputs = client.step(at_ms(50), cancel_b(2));
    assert_eq!(sent(&outputs), vec![(ServerId(2), 2, false)]);
    let refused = refusal(2, ServiceError::Unauthorized);
    let outputs = reply_from_s2(&mut client, 60, refused);
    let unauthorized = || Err(ClientError::Refused(Refused::Unauthorized));
    assert_eq!(
        completed(&outputs),
        vec![(1, unauthorized()), (2, unauthorized())]
    );
}
