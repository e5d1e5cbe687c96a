//! Protocol tables for [`Server`]: each test drives one server by hand, or a few through the
//! tiny in-test [`Network`], with explicit virtual time, and asserts on the effects the server
//! returns and on its observers. Each test cites the rule it checks: a section of the Raft paper
//! (§5.x) or of the Raft thesis (thesis §x.y).
//!
//! Like the code under test, these tests never read a clock and never iterate a hash map.

use super::{Role, Server, ServerConfig, ServerInput, ServerOutput, ServerTimer};
use crate::node::lock_table::Holder;
use crate::node::log::{DurableState, PersistOp, RaftLog};
use crate::node::messages::{
    ApplyResult, Claim, ClientAddr, ClientId, ClientReply, ClientRequest, ClientSecret, Command,
    Consistency, Entry, LOCK_NAME_BYTES_MAX, LockName, LogIndex, Operation, Outcome, PeerMessage,
    ReplyBody, RequestBody, ServerId, ServiceError, Term,
};
use crate::node::time::Time;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

// ----- client secrets -----
//
// Every request after hello proves its client with the secret its welcome gave. The stories
// below are about other rules, so the helpers carry secrets for them: every welcome a test sees
// is remembered here, and `op` sends the remembered secret of its client. A story about
// secrets themselves builds its requests by hand.

thread_local! {
    static SECRETS: RefCell<BTreeMap<ClientId, ClientSecret>> = const { RefCell::new(BTreeMap::new()) };
}

/// The secret a hand-written log registers client `id` with (and remembers for `op`).
fn secret_for(id: ClientId) -> ClientSecret {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&id.0.to_le_bytes());
    bytes[8] = 0x5e;
    let secret = ClientSecret::from_bytes(bytes);
    SECRETS.with(|secrets| secrets.borrow_mut().insert(id, secret));
    secret
}

fn remember_welcome(reply: &ClientReply) {
    if let ReplyBody::Welcome { client, secret, .. } = &reply.body {
        SECRETS.with(|secrets| secrets.borrow_mut().insert(*client, *secret));
    }
}

fn known_secret(client: ClientId) -> Option<ClientSecret> {
    SECRETS.with(|secrets| secrets.borrow().get(&client).copied())
}

const S1: ServerId = ServerId(1);
const S2: ServerId = ServerId(2);
const S3: ServerId = ServerId(3);

/// The connection a test client talks through; servers only echo it.
const CLIENT: ClientAddr = ClientAddr(7);
/// A second connection of the same client, as after a reconnect.
const CLIENT_AGAIN: ClientAddr = ClientAddr(8);

/// A time by which any first election timer has expired: servers boot at zero and their
/// election timeouts are 150-300 ms.
const FIRST_ELECTION_MS: u64 = 300;

// ----- time, servers and logs -----

fn ms(millis: u64) -> Time {
    Time::ZERO + Duration::from_millis(millis)
}

fn cluster(server_count: u32) -> Vec<ServerId> {
    (1..=server_count).map(ServerId).collect()
}

fn config(id: ServerId, server_count: u32) -> ServerConfig {
    ServerConfig::new(id, cluster(server_count))
}

/// Boots `id` at time zero from `durable`, as a driver does with the disk it recovered.
fn boot_from(id: ServerId, server_count: u32, durable: DurableState) -> Server {
    let seed = u64::from(id.0);
    let (server, outputs) = Server::new(config(id, server_count), durable, seed, Time::ZERO);
    assert_eq!(server.role(), Role::Follower, "{id} boots as a follower");
    assert!(
        timer_at(&outputs, ServerTimer::Election).is_some(),
        "{id} arms its election timer"
    );
    server
}

/// Boots `id` for the first time, with an empty disk.
fn boot(id: ServerId, server_count: u32) -> Server {
    boot_from(id, server_count, DurableState::default())
}

fn noop(term: Term) -> Entry {
    Entry {
        term,
        command: Command::Noop,
    }
}

/// A term-1 log: the leader's no-op (1), `owner`'s registration (2), its grant of lock `a` (3).
fn register_and_grant_a(owner: ClientId) -> Vec<Entry> {
    let command = Command::Preempt {
        client: owner,
        seq: 1,
        lock: lock("a"),
        claim: Claim::EXCLUSIVE,
    };
    vec![
        noop(1),
        Entry {
            term: 1,
            command: Command::Register {
                nonce: 9,
                secret: Some(secret_for(owner)),
                ttl_ms: None,
            },
        },
        Entry { term: 1, command },
    ]
}

/// A disk whose snapshot (index 1, term 1) holds `owner`'s registration, and no leader known:
/// a replica that knows the client but cannot reach anyone.
fn disk_with_registered(owner: ClientId) -> DurableState {
    let mut table = crate::node::LockTable::new();
    let register = Command::Register {
        nonce: 9,
        secret: Some(secret_for(owner)),
        ttl_ms: None,
    };
    assert_eq!(
        table.apply(1, &register),
        ApplyResult::Registered { client: owner }
    );
    let snapshot = crate::node::Snapshot {
        last_included_index: 1,
        last_included_term: 1,
        table,
    };
    DurableState {
        term: 1,
        voted_for: None,
        log: RaftLog::rebased(1, 1, RaftLog::new()),
        snapshot: Some(std::sync::Arc::new(snapshot)),
        recovering: false,
    }
}

fn noops(terms: &[Term]) -> Vec<Entry> {
    terms.iter().map(|&term| noop(term)).collect()
}

/// A disk holding `term`, `voted_for` and a log of no-ops of the given terms.
fn disk(term: Term, voted_for: Option<ServerId>, log_terms: &[Term]) -> DurableState {
    let mut log = RaftLog::new();
    log.truncate_and_append(1, &noops(log_terms));
    DurableState {
        term,
        voted_for,
        log,
        snapshot: None,
        recovering: false,
    }
}

fn terms_of(server: &Server) -> Vec<Term> {
    server.log().iter().map(|(_, entry)| entry.term).collect()
}

fn lock(name: &str) -> LockName {
    LockName::from(name)
}

// ----- reading a batch of outputs -----

fn sent(outputs: &[ServerOutput]) -> Vec<(ServerId, PeerMessage)> {
    let pick = |output: &ServerOutput| match output {
        ServerOutput::Send { to, msg } => Some((*to, msg.clone())),
        _ => None,
    };
    outputs.iter().filter_map(pick).collect()
}

/// Replies with their `index` and `term` zeroed: most stories are about the answer, not the
/// state index and term it reflects (`replies_reflect_the_state_they_answer_from` and the
/// term stories check those).
fn replies(outputs: &[ServerOutput]) -> Vec<(ClientAddr, ClientReply)> {
    let pick = |output: &ServerOutput| match output {
        ServerOutput::Reply { to, reply } => Some((
            {
                remember_welcome(reply);
                *to
            },
            ClientReply {
                index: 0,
                term: 0,
                ..reply.clone()
            },
        )),
        _ => None,
    };
    outputs.iter().filter_map(pick).collect()
}

fn persisted(outputs: &[ServerOutput]) -> Vec<PersistOp> {
    let pick = |output: &ServerOutput| match output {
        ServerOutput::Persist(op) => Some(op.clone()),
        _ => None,
    };
    outputs.iter().filter_map(pick).collect()
}

fn applied(outputs: &[ServerOutput]) -> Vec<(LogIndex, ApplyResult)> {
    let pick = |output: &ServerOutput| match output {
        ServerOutput::Applied { index, result, .. } => Some((*index, *result)),
        _ => None,
    };
    outputs.iter().filter_map(pick).collect()
}

/// The last deadline the batch set for `timer` (a later `SetTimer` replaces an earlier one).
fn timer_at(outputs: &[ServerOutput], timer: ServerTimer) -> Option<Time> {
    let pick = |output: &ServerOutput| match output {
        ServerOutput::SetTimer { timer: set, at } if *set == timer => Some(*at),
        _ => None,
    };
    outputs.iter().rev().find_map(pick)
}

/// Where in the batch the first output `wanted` accepts is.
fn position_of(outputs: &[ServerOutput], wanted: impl Fn(&ServerOutput) -> bool) -> usize {
    outputs
        .iter()
        .position(wanted)
        .expect("the batch holds the expected output")
}

/// The heartbeat round of every AppendEntries in the batch, with its destination.
fn append_rounds(outputs: &[ServerOutput]) -> Vec<(ServerId, u64)> {
    let pick = |(to, msg): (ServerId, PeerMessage)| match msg {
        PeerMessage::AppendEntries { round, .. } => Some((to, round)),
        _ => None,
    };
    sent(outputs).into_iter().filter_map(pick).collect()
}

// ----- inputs -----

fn peer(from: ServerId, msg: PeerMessage) -> ServerInput {
    ServerInput::Peer { from, msg }
}

fn timer(timer: ServerTimer) -> ServerInput {
    ServerInput::Timer(timer)
}

fn request_vote(term: Term, last_log_index: LogIndex, last_log_term: Term) -> PeerMessage {
    PeerMessage::RequestVote {
        term,
        last_log_index,
        last_log_term,
    }
}

fn pre_vote(term: Term, last_log_index: LogIndex, last_log_term: Term) -> PeerMessage {
    PeerMessage::PreVote {
        term,
        last_log_index,
        last_log_term,
    }
}

fn vote(term: Term, granted: bool) -> PeerMessage {
    PeerMessage::VoteResponse { term, granted }
}

fn pre_vote_answer(term: Term, granted: bool) -> PeerMessage {
    PeerMessage::PreVoteResponse { term, granted }
}

/// AppendEntries of heartbeat round 0 whose entries follow `(prev_log_index, prev_log_term)`.
fn append(
    term: Term,
    (prev_log_index, prev_log_term): (LogIndex, Term),
    entries: Vec<Entry>,
    leader_commit: LogIndex,
) -> PeerMessage {
    PeerMessage::AppendEntries {
        term,
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
        round: 0,
        urgent: true,
    }
}

/// A follower's acknowledgement: its log matches the leader's up to `match_index`.
fn append_ok(term: Term, match_index: LogIndex, round: u64) -> PeerMessage {
    PeerMessage::AppendResponse {
        term,
        success: true,
        match_index,
        conflict_index: 0,
        conflict_term: None,
        round,
    }
}

fn append_refused(
    term: Term,
    conflict_index: LogIndex,
    conflict_term: Option<Term>,
) -> PeerMessage {
    PeerMessage::AppendResponse {
        term,
        success: false,
        match_index: 0,
        conflict_index,
        conflict_term,
        round: 0,
    }
}

/// A leader's InstallSnapshot in `term` of `table` as of `(index, term)` of its log, in its
/// heartbeat round `round`.
fn install_snapshot(
    term: Term,
    (last_included_index, last_included_term): (LogIndex, Term),
    table: crate::node::LockTable,
    round: u64,
) -> PeerMessage {
    let snapshot = crate::node::messages::Snapshot {
        last_included_index,
        last_included_term,
        table,
    };
    PeerMessage::InstallSnapshot {
        term,
        snapshot: std::sync::Arc::new(snapshot),
        round,
    }
}

fn from_client(from: ClientAddr, request: ClientRequest) -> ServerInput {
    ServerInput::Client { from, request }
}

fn hello(nonce: u64) -> ClientRequest {
    ClientRequest {
        seq: 0,
        seen_index: 0,
        term: 0,
        body: RequestBody::Hello {
            nonce,
            ttl_ms: None,
        },
    }
}

/// A request of `client` that names term 1: the term of the leaders these stories elect,
/// unless they say otherwise (see `in_term`).
fn op(client: ClientId, seq: u64, op: Operation) -> ClientRequest {
    ClientRequest {
        seq,
        seen_index: 0,
        term: 1,
        body: RequestBody::Op {
            client,
            secret: known_secret(client),
            op,
        },
    }
}

/// `request`, naming `term` as the client's idea of the current term.
fn in_term(term: Term, request: ClientRequest) -> ClientRequest {
    ClientRequest { term, ..request }
}

fn preempt(name: &str) -> Operation {
    Operation::Preempt {
        lock: lock(name),
        claim: Claim::EXCLUSIVE,
    }
}

fn release(name: &str) -> Operation {
    Operation::Release { lock: lock(name) }
}

fn check(name: &str, consistency: Consistency) -> Operation {
    Operation::Check {
        lock: lock(name),
        consistency,
    }
}

fn outcome(seq: u64, outcome: Outcome) -> ClientReply {
    ClientReply {
        seq,
        index: 0,
        term: 0,
        body: ReplyBody::Outcome(outcome),
    }
}

fn refusal(seq: u64, error: ServiceError) -> ClientReply {
    ClientReply {
        seq,
        index: 0,
        term: 0,
        body: ReplyBody::Error(error),
    }
}

// ----- leaders, by hand -----

/// Wins an election for `server` at `now`: its election timer fires, then its peers in id order
/// grant the pre-vote and the vote until it holds a majority. Returns every output, in order.
fn win_election(server: &mut Server, now: Time, server_count: u32) -> Vec<ServerOutput> {
    let mut outputs = server.step(now, timer(ServerTimer::Election));
    assert_eq!(
        server.role(),
        Role::PreCandidate,
        "the election timer starts a pre-vote"
    );
    let term = server.term() + 1;
    let peers: Vec<ServerId> = cluster(server_count)
        .into_iter()
        .filter(|&p| p != server.id())
        .collect();
    for &voter in &peers {
        if server.role() == Role::PreCandidate {
            outputs.extend(server.step(now, peer(voter, pre_vote_answer(term, true))));
        }
    }
    assert_eq!(
        server.role(),
        Role::Candidate,
        "a majority of pre-votes starts the election"
    );
    assert_eq!(server.term(), term);
    for &voter in &peers {
        if server.role() == Role::Candidate {
            outputs.extend(server.step(now, peer(voter, vote(term, true))));
        }
    }
    assert_eq!(
        server.role(),
        Role::Leader,
        "a majority of votes makes a leader"
    );
    outputs
}

/// s1 as the term-1 leader of a three-server cluster, elected at `FIRST_ELECTION_MS`, with its
/// no-op (index 1) committed by s2's acknowledgement of round 0.
fn leader_of_three() -> Server {
    let mut leader = boot(S1, 3);
    let now = ms(FIRST_ELECTION_MS);
    let election = win_election(&mut leader, now, 3);
    assert_eq!(
        persisted(&election).last(),
        Some(&PersistOp::Append {
            first_index: 1,
            entries: vec![noop(1)]
        })
    );
    let outputs = leader.step(now, peer(S2, append_ok(1, 1, 0)));
    assert_eq!(leader.commit_index(), 1);
    assert_eq!(applied(&outputs), vec![(1, ApplyResult::Nothing)]);
    leader
}

/// s2 acknowledges everything up to `index` (round 0) to `leader`.
fn commit_through(leader: &mut Server, index: LogIndex, now: Time) -> Vec<ServerOutput> {
    let term = leader.term();
    let outputs = leader.step(now, peer(S2, append_ok(term, index, 0)));
    assert_eq!(
        leader.commit_index(),
        index,
        "s1 and s2 are a majority of three"
    );
    outputs
}

/// Registers a client through `leader` and returns the id the replicated state handed out.
fn register(leader: &mut Server, now: Time) -> ClientId {
    let outputs = leader.step(now, from_client(CLIENT, hello(42)));
    assert!(
        replies(&outputs).is_empty(),
        "a hello is answered once committed, not before"
    );
    let index = leader.log().last_index();
    let outputs = commit_through(leader, index, now);
    match replies(&outputs).as_slice() {
        [
            (
                CLIENT,
                ClientReply {
                    seq: 0,
                    body:
                        ReplyBody::Welcome {
                            nonce: 42, client, ..
                        },
                    ..
                },
            ),
        ] => *client,
        other => panic!("expected one welcome, got {other:?}"),
    }
}

// ----- a tiny network of servers, in the style of raft-rs's `Network` and quinn's `Pair` -----

/// A message on its way from one server to another.
#[derive(Clone, Debug)]
struct Envelope {
    from: ServerId,
    to: ServerId,
    msg: PeerMessage,
}

/// Messages one network may deliver before a test is declared stuck.
const DELIVERIES_MAX: usize = 10_000;
/// Timers one `run_until` may fire before a test is declared stuck.
const TIMER_FIRINGS_MAX: usize = 1_000;

/// Owns a few servers and their disks, carries out their outputs, and delivers their messages
/// one at a time in FIFO order under virtual time. Timers fire only when a test asks.
struct Network {
    now: Time,
    configs: BTreeMap<ServerId, ServerConfig>,
    servers: BTreeMap<ServerId, Server>,
    /// Each server's disk: its `Persist` outputs replayed through `DurableState::apply`.
    disks: BTreeMap<ServerId, DurableState>,
    timers: BTreeMap<(ServerId, ServerTimer), Time>,
    in_flight: VecDeque<Envelope>,
    /// Servers cut off from everyone: messages to or from them are dropped.
    isolated: BTreeSet<ServerId>,
    replies: Vec<(ClientAddr, ClientReply)>,
    /// What each server told its watchers, in order.
    watch_replies: Vec<(ServerId, ClientAddr, crate::node::watch::WatchReply)>,
    deliveries: usize,
    boots: u64,
}

impl Network {
    fn new(server_count: u32) -> Network {
        let disks = (1..=server_count)
            .map(|_| DurableState::default())
            .collect();
        Network::from_disks(disks, |_| {})
    }

    /// Servers s1, s2, ... booted at time zero from `disks`, each config adjusted by `tune`.
    fn from_disks(disks: Vec<DurableState>, tune: impl Fn(&mut ServerConfig)) -> Network {
        let server_count = u32::try_from(disks.len()).expect("a small cluster");
        let mut network = Network {
            now: Time::ZERO,
            configs: BTreeMap::new(),
            servers: BTreeMap::new(),
            disks: BTreeMap::new(),
            timers: BTreeMap::new(),
            in_flight: VecDeque::new(),
            isolated: BTreeSet::new(),
            replies: Vec::new(),
            watch_replies: Vec::new(),
            deliveries: 0,
            boots: 0,
        };
        for (id, disk) in cluster(server_count).into_iter().zip(disks) {
            let mut config = config(id, server_count);
            tune(&mut config);
            network.configs.insert(id, config);
            network.disks.insert(id, disk);
            network.boot(id);
        }
        network
    }

    /// (Re)starts `id` from its disk, as after a crash: everything volatile is gone.
    fn boot(&mut self, id: ServerId) {
        self.boots += 1;
        let config = self.configs[&id].clone();
        let (server, outputs) = Server::new(config, self.disks[&id].clone(), self.boots, self.now);
        self.timers.retain(|(owner, _), _| *owner != id);
        self.servers.insert(id, server);
        self.carry_out(id, &outputs);
    }

    fn server_mut(&mut self, id: ServerId) -> &mut Server {
        self.servers.get_mut(&id).expect("a server of the network")
    }

    fn server(&self, id: ServerId) -> &Server {
        &self.servers[&id]
    }

    fn disk(&self, id: ServerId) -> &DurableState {
        &self.disks[&id]
    }

    fn isolate(&mut self, id: ServerId) {
        self.isolated.insert(id);
    }

    fn heal(&mut self) {
        self.isolated.clear();
    }

    /// The servers that currently believe they lead, with their terms.
    fn leaders(&self) -> Vec<(ServerId, Term)> {
        let leading = self
            .servers
            .values()
            .filter(|server| server.role() == Role::Leader);
        leading.map(|server| (server.id(), server.term())).collect()
    }

    fn carry_out(&mut self, id: ServerId, outputs: &[ServerOutput]) {
        for output in outputs {
            match output {
                ServerOutput::Persist(op) => self.disks.get_mut(&id).expect("a disk").apply(op),
                ServerOutput::PersistSnapshot(snapshot) => self
                    .disks
                    .get_mut(&id)
                    .expect("a disk")
                    .install_snapshot(snapshot.clone()),
                ServerOutput::Send { to, msg } => {
                    let envelope = Envelope {
                        from: id,
                        to: *to,
                        msg: msg.clone(),
                    };
                    self.in_flight.push_back(envelope);
                }
                ServerOutput::Reply { to, reply } => {
                    remember_welcome(reply);
                    self.replies.push((*to, reply.clone()))
                }
                ServerOutput::SetTimer { timer, at } => {
                    self.timers.insert((id, *timer), *at);
                }
                ServerOutput::Watch { to, reply } => {
                    self.watch_replies.push((id, *to, reply.clone()));
                }
                ServerOutput::Applied { .. } | ServerOutput::Woken { .. } => {}
            }
        }
    }

    fn step(&mut self, id: ServerId, input: ServerInput) -> Vec<ServerOutput> {
        let now = self.now;
        let outputs = self
            .servers
            .get_mut(&id)
            .expect("a server of this network")
            .step(now, input);
        self.carry_out(id, &outputs);
        outputs
    }

    /// Moves virtual time to `id`'s deadline for `which` (never backwards) and fires it.
    /// The timer is disarmed as it fires; the server re-arms it if it still wants it.
    fn fire(&mut self, id: ServerId, which: ServerTimer) -> Vec<ServerOutput> {
        let at = self
            .timers
            .remove(&(id, which))
            .expect("the timer is armed");
        self.now = self.now.max(at);
        self.step(id, timer(which))
    }

    /// Runs virtual time forward to `end`: fires every timer due by then in deadline order
    /// (ties by server and timer), delivering all messages after each.
    fn run_until(&mut self, end: Time) {
        for _ in 0..TIMER_FIRINGS_MAX {
            let due = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= end)
                .min_by_key(|(key, at)| (**at, **key));
            let Some((&(id, which), _)) = due else {
                self.now = self.now.max(end);
                return;
            };
            let _ = self.fire(id, which);
            let _ = self.deliver_all();
        }
        panic!("network: more than {TIMER_FIRINGS_MAX} timers before {end}");
    }

    /// Delivers the oldest message in flight (dropping it if either end is isolated).
    fn deliver_next(&mut self) -> Option<Envelope> {
        let envelope = self.in_flight.pop_front()?;
        self.deliveries += 1;
        assert!(
            self.deliveries <= DELIVERIES_MAX,
            "network: busy after {DELIVERIES_MAX} messages"
        );
        if !self.isolated.contains(&envelope.from) && !self.isolated.contains(&envelope.to) {
            let _ = self.step(envelope.to, peer(envelope.from, envelope.msg.clone()));
        }
        Some(envelope)
    }

    /// Delivers until nothing is in flight; returns the trace of what was delivered.
    fn deliver_all(&mut self) -> Vec<Envelope> {
        let mut trace = Vec::new();
        while let Some(envelope) = self.deliver_next() {
            trace.push(envelope);
        }
        trace
    }

    fn elect(&mut self, id: ServerId) {
        let _ = self.fire(id, ServerTimer::Election);
        let _ = self.deliver_all();
        assert_eq!(
            self.server(id).role(),
            Role::Leader,
            "{id} wins the election"
        );
    }

    fn heartbeat(&mut self, leader: ServerId) {
        let outputs = self.fire(leader, ServerTimer::Heartbeat);
        assert!(!sent(&outputs).is_empty(), "{leader} heartbeats as leader");
        let _ = self.deliver_all();
    }

    /// A client request to `id`, then every message it causes; returns the replies.
    fn client(&mut self, id: ServerId, request: ClientRequest) -> Vec<(ClientAddr, ClientReply)> {
        let _ = self.step(id, from_client(CLIENT, request));
        let _ = self.deliver_all();
        std::mem::take(&mut self.replies)
    }

    /// Sends `hello` (a hello request) to server `id`, which must answer it with one welcome;
    /// returns the client id it gave.
    fn welcome(&mut self, id: ServerId, hello: ClientRequest) -> ClientId {
        match self.client(id, hello).as_slice() {
            [(_, reply)] => match reply.body {
                ReplyBody::Welcome { client, .. } => client,
                ref other => panic!("a welcome expected, got {other:?}"),
            },
            other => panic!("one welcome expected, got {other:?}"),
        }
    }
}

// ----- §5.2 and §5.4.1: votes -----

/// Raft §5.2 and figure 2: a follower grants its vote to the first candidate of a term, and the
/// vote reaches the disk before the answer leaves (the calling contract of `ServerOutput`).
#[test]
fn a_vote_is_granted_and_persisted_before_it_is_sent() {
    let mut voter = boot(S3, 3);
    let outputs = voter.step(ms(10), peer(S1, request_vote(1, 0, 0)));
    assert_eq!(voter.term(), 1);
    assert_eq!(voter.voted_for(), Some(S1));
    assert_eq!(sent(&outputs), vec![(S1, vote(1, true))]);
    let vote_persisted = position_of(&outputs, |output| {
        let voted = PersistOp::HardState {
            term: 1,
            voted_for: Some(S1),
            recovering: false,
        };
        matches!(output, ServerOutput::Persist(op) if *op == voted)
    });
    let vote_sent = position_of(&outputs, |output| {
        matches!(
            output,
            ServerOutput::Send {
                msg: PeerMessage::VoteResponse { .. },
                ..
            }
        )
    });
    assert!(
        vote_persisted < vote_sent,
        "the vote is durable before it is announced"
    );
    // Granting restarts the election timer, giving the candidate time to win.
    assert!(timer_at(&outputs, ServerTimer::Election).is_some());
}

/// Raft §5.2: "each server will vote for at most one candidate in a given term". A second
/// candidate is refused; the same candidate asking again (its answer lost) is granted again.
#[test]
fn a_second_candidate_in_the_same_term_is_refused() {
    let mut voter = boot(S3, 3);
    let first = voter.step(ms(10), peer(S1, request_vote(1, 0, 0)));
    assert_eq!(sent(&first), vec![(S1, vote(1, true))]);

    let second = voter.step(ms(11), peer(S2, request_vote(1, 0, 0)));
    assert_eq!(sent(&second), vec![(S2, vote(1, false))]);
    assert!(
        persisted(&second).is_empty(),
        "a refusal changes nothing durable"
    );
    assert_eq!(voter.voted_for(), Some(S1));

    let repeated = voter.step(ms(12), peer(S1, request_vote(1, 0, 0)));
    assert_eq!(sent(&repeated), vec![(S1, vote(1, true))]);
    assert_eq!(voter.voted_for(), Some(S1));
}

/// Raft §5.1: a request from a stale term is refused, and the answer carries the newer term so
/// that the stale candidate steps down.
#[test]
fn a_request_vote_from_a_stale_term_is_refused_with_the_newer_term() {
    let mut voter = boot_from(S3, 3, disk(2, None, &[]));
    let outputs = voter.step(ms(10), peer(S1, request_vote(1, 0, 0)));
    assert_eq!(sent(&outputs), vec![(S1, vote(2, false))]);
    assert!(persisted(&outputs).is_empty());
    assert_eq!(voter.term(), 2);
    assert_eq!(voter.voted_for(), None);
}

/// Raft §5.1: a higher term seen in a RequestVote makes the receiver adopt it (with no vote),
/// whether or not it then grants the vote.
#[test]
fn a_higher_term_request_vote_makes_a_follower_adopt_the_term() {
    let mut voter = boot_from(S3, 3, disk(1, Some(S1), &[1]));
    let outputs = voter.step(ms(10), peer(S2, request_vote(2, 1, 1)));
    assert_eq!(
        persisted(&outputs),
        vec![
            PersistOp::HardState {
                term: 2,
                voted_for: None,
                recovering: false,
            },
            PersistOp::HardState {
                term: 2,
                voted_for: Some(S2),
                recovering: false,
            },
        ]
    );
    assert_eq!(sent(&outputs), vec![(S2, vote(2, true))]);
    assert_eq!((voter.term(), voter.voted_for()), (2, Some(S2)));

    // A candidate of term 3 whose log is behind: the term is adopted, the vote refused.
    let outputs = voter.step(ms(20), peer(S1, request_vote(3, 0, 0)));
    assert_eq!(
        persisted(&outputs),
        vec![PersistOp::HardState {
            term: 3,
            voted_for: None,
            recovering: false,
        }]
    );
    assert_eq!(sent(&outputs), vec![(S1, vote(3, false))]);
    assert_eq!((voter.term(), voter.voted_for()), (3, None));
}

/// Check-quorum's leader stickiness (thesis §4.2.3): a follower that heard from its leader
/// within the minimum election timeout ignores a higher-term RequestVote entirely, without
/// adopting the term; once that lease has passed, it adopts the term and votes.
#[test]
fn a_follower_in_its_leader_lease_ignores_a_higher_term_request_vote() {
    let mut follower = boot(S2, 3);
    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 0)));
    assert_eq!(follower.leader(), Some(S1));

    // 90 ms after the leader's message: within the 150 ms lease.
    let outputs = follower.step(ms(100), peer(S3, request_vote(2, 1, 1)));
    assert!(
        outputs.is_empty(),
        "ignored: no answer, no persist, no timer: {outputs:?}"
    );
    assert_eq!((follower.term(), follower.voted_for()), (1, None));
    assert_eq!(follower.leader(), Some(S1));

    // 190 ms after: the leader is presumed gone.
    let outputs = follower.step(ms(200), peer(S3, request_vote(2, 1, 1)));
    assert_eq!(sent(&outputs), vec![(S3, vote(2, true))]);
    assert_eq!((follower.term(), follower.voted_for()), (2, Some(S3)));
    assert_eq!(follower.leader(), None);
}

/// Check-quorum: a leader does not let a higher-term candidate depose it while it leads.
#[test]
fn a_leader_ignores_a_higher_term_request_vote() {
    let mut leader = leader_of_three();
    let outputs = leader.step(ms(FIRST_ELECTION_MS + 10), peer(S3, request_vote(5, 9, 1)));
    assert!(outputs.is_empty(), "ignored: {outputs:?}");
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.term(), 1);
}

/// Thesis §9.6: granting a pre-vote changes nothing at the voter, neither term, vote nor
/// election timer; so the real vote of that term is still free afterwards.
#[test]
fn a_pre_vote_is_granted_without_changing_term_vote_or_timer() {
    let mut voter = boot(S2, 3);
    let outputs = voter.step(ms(10), peer(S1, pre_vote(1, 0, 0)));
    assert_eq!(sent(&outputs), vec![(S1, pre_vote_answer(1, true))]);
    assert!(persisted(&outputs).is_empty());
    assert_eq!(timer_at(&outputs, ServerTimer::Election), None);
    assert_eq!((voter.term(), voter.voted_for()), (0, None));

    let outputs = voter.step(ms(11), peer(S3, request_vote(1, 0, 0)));
    assert_eq!(
        sent(&outputs),
        vec![(S3, vote(1, true))],
        "the vote of term 1 is still free"
    );
}

/// Thesis §9.6: a pre-vote is refused while the voter is in its leader lease, and for a
/// candidate whose log is behind (§5.4.1); a refusal carries the voter's own term.
#[test]
fn a_pre_vote_is_refused_within_the_leader_lease_and_for_a_log_behind() {
    let mut voter = boot(S2, 3);
    let _ = voter.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 0)));

    let in_lease = voter.step(ms(100), peer(S3, pre_vote(2, 1, 1)));
    assert_eq!(sent(&in_lease), vec![(S3, pre_vote_answer(1, false))]);

    let behind = voter.step(ms(200), peer(S3, pre_vote(2, 0, 0)));
    assert_eq!(sent(&behind), vec![(S3, pre_vote_answer(1, false))]);

    let after_lease = voter.step(ms(200), peer(S3, pre_vote(2, 1, 1)));
    assert_eq!(sent(&after_lease), vec![(S3, pre_vote_answer(2, true))]);
    assert_eq!(
        (voter.term(), voter.voted_for()),
        (1, None),
        "pre-votes change no state"
    );
    assert_eq!(voter.leader(), Some(S1));
}

/// Raft §5.4.1: "if the logs have last entries with different terms, then the log with the later
/// term is more up-to-date; if the logs end with the same term, the longer log is".
#[test]
fn a_vote_goes_only_to_a_candidate_whose_log_is_at_least_as_up_to_date() {
    // The voter's log ends at index 3 with term 2.
    let cases: [(&str, LogIndex, Term, bool); 5] = [
        ("a later last term wins even with a shorter log", 1, 3, true),
        ("an identical last entry wins", 3, 2, true),
        ("the same last term and a longer log wins", 4, 2, true),
        ("the same last term and a shorter log loses", 2, 2, false),
        (
            "an earlier last term loses even with a longer log",
            9,
            1,
            false,
        ),
    ];
    for (story, last_log_index, last_log_term, granted) in cases {
        let mut voter = boot_from(S3, 3, disk(2, None, &[1, 1, 2]));
        let outputs = voter.step(
            ms(10),
            peer(S1, request_vote(3, last_log_index, last_log_term)),
        );
        assert_eq!(sent(&outputs), vec![(S1, vote(3, granted))], "{story}");
        assert_eq!(voter.voted_for(), granted.then_some(S1), "{story}");
    }
}

// ----- §5.3: AppendEntries at the follower -----

/// Raft §5.3: a follower refuses entries whose predecessor it does not have, and hints the
/// leader to its first missing index.
#[test]
fn append_entries_beyond_the_log_is_refused_with_the_next_missing_index() {
    let mut follower = boot_from(S2, 3, disk(1, None, &[1, 1]));
    let outputs = follower.step(ms(10), peer(S1, append(1, (5, 1), noops(&[1]), 0)));
    assert_eq!(sent(&outputs), vec![(S1, append_refused(1, 3, None))]);
    assert!(persisted(&outputs).is_empty());
    assert_eq!(terms_of(&follower), vec![1, 1]);
    assert_eq!(
        follower.leader(),
        Some(S1),
        "a refusal still recognises the leader"
    );

    // The same entry after a predecessor it has is accepted.
    let outputs = follower.step(ms(11), peer(S1, append(1, (2, 1), noops(&[1]), 0)));
    assert_eq!(sent(&outputs), vec![(S1, append_ok(1, 3, 0))]);
    assert_eq!(terms_of(&follower), vec![1, 1, 1]);
}

/// Raft §5.3 with the conflict optimisation: when the term at `prev_log_index` differs, the
/// follower names its conflicting term and the first index it holds of that term.
#[test]
fn append_entries_with_a_mismatched_prev_term_is_refused_with_the_conflicting_term() {
    let mut follower = boot_from(S2, 3, disk(2, None, &[1, 2, 2, 2]));
    let outputs = follower.step(ms(10), peer(S1, append(3, (4, 3), noops(&[3]), 0)));
    assert_eq!(sent(&outputs), vec![(S1, append_refused(3, 2, Some(2)))]);
    assert_eq!(
        persisted(&outputs),
        vec![PersistOp::HardState {
            term: 3,
            voted_for: None,
            recovering: false,
        }]
    );
    assert_eq!(
        terms_of(&follower),
        vec![1, 2, 2, 2],
        "nothing is truncated on a refusal"
    );

    // A heartbeat whose predecessor matches is accepted and truncates nothing.
    let outputs = follower.step(ms(11), peer(S1, append(3, (1, 1), Vec::new(), 0)));
    assert_eq!(sent(&outputs), vec![(S1, append_ok(3, 1, 0))]);
    assert_eq!(terms_of(&follower), vec![1, 2, 2, 2]);
}

/// Raft §5.3: "if an existing entry conflicts with a new one, delete the existing entry and all
/// that follow it", then append; the change is persisted before it is acknowledged.
#[test]
fn a_conflicting_suffix_is_replaced_and_persisted_before_the_acknowledgement() {
    let mut follower = boot_from(S2, 3, disk(2, None, &[1, 1, 2, 2]));
    let outputs = follower.step(ms(10), peer(S1, append(3, (2, 1), noops(&[3, 3]), 0)));
    let replaced = PersistOp::Append {
        first_index: 3,
        entries: noops(&[3, 3]),
    };
    assert_eq!(
        persisted(&outputs),
        vec![
            PersistOp::HardState {
                term: 3,
                voted_for: None,
                recovering: false,
            },
            replaced.clone(),
        ]
    );
    assert_eq!(terms_of(&follower), vec![1, 1, 3, 3]);
    assert_eq!(sent(&outputs), vec![(S1, append_ok(3, 4, 0))]);
    let append_persisted = position_of(
        &outputs,
        |output| matches!(output, ServerOutput::Persist(op) if *op == replaced),
    );
    let acknowledged = position_of(&outputs, |output| {
        matches!(output, ServerOutput::Send { .. })
    });
    assert!(
        append_persisted < acknowledged,
        "the entries are durable before the ack"
    );
}

/// Raft §5.3: only a conflict truncates. A duplicated or delayed AppendEntries whose entries
/// the follower already holds leaves the log (and the disk) alone, and only new entries are
/// persisted.
#[test]
fn a_duplicate_or_old_append_entries_does_not_truncate_matching_entries() {
    let mut follower = boot_from(S2, 3, disk(1, None, &[1, 1, 1, 1]));
    let old = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1, 1]), 0)));
    assert!(persisted(&old).is_empty(), "nothing to write: {old:?}");
    assert_eq!(
        terms_of(&follower),
        vec![1, 1, 1, 1],
        "the matching suffix survives"
    );
    assert_eq!(sent(&old), vec![(S1, append_ok(1, 2, 0))]);

    // Overlapping: indexes 3 and 4 are already there, index 5 is new.
    let overlapping = follower.step(ms(11), peer(S1, append(1, (2, 1), noops(&[1, 1, 1]), 0)));
    assert_eq!(
        persisted(&overlapping),
        vec![PersistOp::Append {
            first_index: 5,
            entries: noops(&[1])
        }]
    );
    assert_eq!(terms_of(&follower), vec![1, 1, 1, 1, 1]);
    assert_eq!(sent(&overlapping), vec![(S1, append_ok(1, 5, 0))]);
}

/// Raft figure 2: "if leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of
/// last new entry)". Entries past those the message vouches for are not committed, even when
/// the follower holds them.
#[test]
fn the_follower_commit_index_is_the_leader_commit_capped_at_the_last_new_entry() {
    let mut follower = boot_from(S2, 3, disk(1, None, &[1, 1, 1, 1]));
    let outputs = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1, 1]), 1)));
    assert_eq!(
        follower.commit_index(),
        1,
        "the leader's commit is below the last new entry"
    );
    assert_eq!(applied(&outputs), vec![(1, ApplyResult::Nothing)]);

    let outputs = follower.step(ms(11), peer(S1, append(1, (0, 0), noops(&[1, 1]), 4)));
    assert_eq!(
        follower.commit_index(),
        2,
        "capped at index 2, the last entry it vouches for"
    );
    assert_eq!(applied(&outputs), vec![(2, ApplyResult::Nothing)]);

    let outputs = follower.step(ms(12), peer(S1, append(1, (4, 1), Vec::new(), 4)));
    assert_eq!(follower.commit_index(), 4);
    assert_eq!(follower.last_applied(), 4);
    assert_eq!(applied(&outputs).len(), 2);

    // A delayed message with an older leader commit never moves the commit index back.
    let _ = follower.step(ms(13), peer(S1, append(1, (0, 0), noops(&[1]), 1)));
    assert_eq!(follower.commit_index(), 4);
}

/// Raft §5.1: AppendEntries from a stale term is refused with the newer term, without taking
/// the sender as leader; the stale leader learns the term from the answer and steps down.
#[test]
fn append_entries_from_a_stale_term_is_refused_and_its_leader_steps_down() {
    let mut follower = boot_from(S2, 3, disk(2, None, &[]));
    let outputs = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 0)));
    assert_eq!(sent(&outputs), vec![(S1, append_refused(2, 1, None))]);
    assert_eq!(follower.leader(), None);
    assert_eq!(follower.log().last_index(), 0);
    assert_eq!(
        timer_at(&outputs, ServerTimer::Election),
        None,
        "no election timer reset"
    );

    let mut stale_leader = leader_of_three();
    let outputs = stale_leader.step(
        ms(FIRST_ELECTION_MS + 10),
        peer(S2, append_refused(2, 1, None)),
    );
    assert_eq!(stale_leader.role(), Role::Follower);
    assert_eq!(stale_leader.term(), 2);
    assert_eq!(
        persisted(&outputs),
        vec![PersistOp::HardState {
            term: 2,
            voted_for: None,
            recovering: false,
        }]
    );
}

// ----- §5.3: log repair by the leader -----

/// Raft §5.3: after a refusal the leader moves that follower's next index back, using the
/// conflict hint (skipping a whole term it does not have, or jumping past the last entry of a
/// term it does have), and resends at once.
#[test]
fn after_a_refusal_the_leader_moves_back_and_resends() {
    /// One refusal and the AppendEntries it must cause.
    struct BackOff {
        story: &'static str,
        conflict_index: LogIndex,
        conflict_term: Option<Term>,
        resend_prev: (LogIndex, Term),
        resend_terms: &'static [Term],
    }
    // The leader's log: [1, 1, 3, 3, 4, 4], plus the no-op of term 5 at index 7.
    let cases = [
        BackOff {
            story: "a short follower: resend from its first missing index",
            conflict_index: 2,
            conflict_term: None,
            resend_prev: (1, 1),
            resend_terms: &[1, 3, 3, 4, 4, 5],
        },
        BackOff {
            story: "a conflicting term the leader lacks: skip it whole",
            conflict_index: 3,
            conflict_term: Some(2),
            resend_prev: (2, 1),
            resend_terms: &[3, 3, 4, 4, 5],
        },
        BackOff {
            story: "a conflicting term the leader has: resume after its last entry",
            conflict_index: 3,
            conflict_term: Some(3),
            resend_prev: (4, 3),
            resend_terms: &[4, 4, 5],
        },
    ];
    for BackOff {
        story,
        conflict_index,
        conflict_term,
        resend_prev,
        resend_terms,
    } in cases
    {
        let mut leader = boot_from(S1, 3, disk(4, None, &[1, 1, 3, 3, 4, 4]));
        let election = win_election(&mut leader, ms(FIRST_ELECTION_MS), 3);
        let first_try = append(5, (6, 4), noops(&[5]), 0);
        assert!(
            sent(&election).contains(&(S2, first_try)),
            "{story}: first try"
        );

        let outputs = leader.step(
            ms(FIRST_ELECTION_MS + 1),
            peer(S2, append_refused(5, conflict_index, conflict_term)),
        );
        let resend = append(5, resend_prev, noops(resend_terms), 0);
        assert_eq!(sent(&outputs), vec![(S2, resend)], "{story}");
        assert_eq!(
            leader.commit_index(),
            0,
            "{story}: a refusal commits nothing"
        );
    }
}

/// Raft §5.3, as a story: s2 led term 2 and wrote entries no one else has; s1 wins term 3
/// without it. s2 refuses s1's first AppendEntries, s1 backs off past s2's term-2 entries, and
/// s2's log, in memory and on disk, ends equal to the leader's.
#[test]
fn a_leader_repairs_a_follower_log_that_diverged_in_an_old_term() {
    let disks = vec![
        disk(2, None, &[1, 1, 1]),
        disk(2, None, &[1, 1, 2, 2, 2]),
        disk(2, None, &[1, 1, 1]),
    ];
    let mut network = Network::from_disks(disks, |_| {});
    let _ = network.fire(S1, ServerTimer::Election);
    let trace = network.deliver_all();
    assert_eq!(
        network.server(S1).role(),
        Role::Leader,
        "s3's vote elects s1"
    );
    assert_eq!(network.server(S1).term(), 3);

    let refusal = trace
        .iter()
        .position(|envelope| envelope.from == S2 && envelope.msg == append_refused(3, 3, Some(2)))
        .expect("s2 refuses at index 3, where it holds term 2");
    let resend = trace[refusal..]
        .iter()
        .find(|envelope| envelope.to == S2)
        .expect("s1 resends to s2 after the refusal");
    // Whether s3's acknowledgement reached s1 before the refusal (and so the leader commit
    // carried) depends only on delivery order; the repair does not.
    let repair = match &resend.msg {
        PeerMessage::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            ..
        } => (*prev_log_index, *prev_log_term, entries.clone()),
        other => panic!("expected AppendEntries, got {other:?}"),
    };
    assert_eq!(
        repair,
        (2, 1, noops(&[1, 3])),
        "back past s2's term-2 entries"
    );

    let leader_log = network.server(S1).log().clone();
    assert_eq!(terms_of(network.server(S1)), vec![1, 1, 1, 3]);
    assert_eq!(
        network.server(S2).log(),
        &leader_log,
        "s2's term-2 entries are gone"
    );
    assert_eq!(
        network.disk(S2).log,
        leader_log,
        "and gone from its disk too"
    );

    network.heartbeat(S1);
    assert_eq!(network.server(S2).commit_index(), 4);
    assert_eq!(network.server(S3).commit_index(), 4);
}

// ----- which followers a leader counts on -----

/// Per peer, whether the AppendEntries in `outputs` were marked urgent.
fn urgency(outputs: &[ServerOutput]) -> Vec<(ServerId, bool)> {
    sent(outputs)
        .into_iter()
        .filter_map(|(to, msg)| match msg {
            PeerMessage::AppendEntries { urgent, .. } => Some((to, urgent)),
            _ => None,
        })
        .collect()
}

/// A leader of three needs one follower's acknowledgement besides its own. It marks urgent
/// only the appends to the follower furthest along; when that one falls behind, the other
/// takes its place, so a silent follower holds commits up only until the other answers.
#[test]
fn a_leader_marks_urgent_only_the_appends_of_the_followers_it_counts_on() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 1);
    // s2 acknowledged the no-op, s3 nothing yet: s2 is the one counted on.
    let outputs = leader.step(now, from_client(CLIENT, hello(1)));
    assert_eq!(urgency(&outputs), vec![(S2, true), (S3, false)]);

    // s2 goes quiet; s3 answers (late, as a follower holding its flush does) and overtakes.
    let outputs = leader.step(now, peer(S3, append_ok(1, 2, 0)));
    assert_eq!(leader.commit_index(), 2, "s1 and s3 commit without s2");
    let outputs = [
        outputs,
        leader.step(now, from_client(CLIENT_AGAIN, hello(2))),
    ]
    .concat();
    assert_eq!(urgency(&outputs), vec![(S2, false), (S3, true)]);
}

/// A leader of five counts on two followers; on a tie in progress, the lower ids.
#[test]
fn a_leader_of_five_counts_on_two_followers() {
    let mut leader = boot(S1, 5);
    let outputs = win_election(&mut leader, ms(FIRST_ELECTION_MS), 5);
    let urgent: Vec<ServerId> = urgency(&outputs)
        .into_iter()
        .filter_map(|(to, urgent)| urgent.then_some(to))
        .collect();
    assert_eq!(urgent, vec![S2, S3]);
}

// ----- §5.4.2: committing entries from previous terms -----

/// Raft §5.4.2 and figure 8: "Raft never commits log entries from previous terms by counting
/// replicas". s1 wrote a Register at index 2 in term 2; elected in term 3 (s3 cut off, one
/// entry per AppendEntries), it replicates that entry to s2, a majority, and still does not
/// commit it. Both commit together when s2 also holds s1's term-3 no-op.
#[test]
fn an_old_term_entry_on_a_majority_commits_only_with_a_current_term_entry() {
    let mut leader_disk = disk(2, Some(S1), &[1]);
    let register = Entry {
        term: 2,
        command: Command::Register {
            nonce: 5,
            secret: Some(secret_for(ClientId(1))),
            ttl_ms: None,
        },
    };
    leader_disk.log.truncate_and_append(2, &[register]);
    let disks = vec![leader_disk, disk(2, Some(S1), &[1]), disk(2, None, &[1])];
    let mut network = Network::from_disks(disks, |config| config.append_entries_max = 1);
    network.isolate(S3);
    let _ = network.fire(S1, ServerTimer::Election);

    let mut old_entry_on_majority = false;
    while let Some(envelope) = network.deliver_next() {
        let old_entry_acknowledged = envelope.to == S1
            && matches!(
                envelope.msg,
                PeerMessage::AppendResponse {
                    success: true,
                    match_index: 2,
                    ..
                }
            );
        if old_entry_acknowledged {
            old_entry_on_majority = true;
            let leader = network.server(S1);
            assert_eq!(terms_of(leader), vec![1, 2, 3]);
            assert_eq!(
                leader.commit_index(),
                0,
                "index 2 is on s1 and s2 but from term 2"
            );
            assert_eq!(leader.lock_table().client_count(), 0);
        }
    }
    assert!(
        old_entry_on_majority,
        "the story reaches the figure-8 state"
    );
    let leader = network.server(S1);
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(
        leader.commit_index(),
        3,
        "the term-3 no-op commits, and index 2 with it"
    );
    assert_eq!(
        leader.lock_table().client_count(),
        1,
        "the old Register is applied"
    );
    assert_eq!(terms_of(network.server(S2)), vec![1, 2, 3]);
}

/// Raft §5.3: an entry is committed once the leader stored it on a majority; one follower of
/// four is not enough, and a repeated acknowledgement from it does not count twice.
#[test]
fn a_leader_commits_only_when_a_majority_holds_its_entry() {
    let mut leader = boot(S1, 5);
    let now = ms(FIRST_ELECTION_MS);
    let _ = win_election(&mut leader, now, 5);
    let _ = leader.step(now, peer(S2, append_ok(1, 1, 0)));
    let _ = leader.step(now, peer(S2, append_ok(1, 1, 0)));
    assert_eq!(leader.commit_index(), 0, "s1 and s2 are two of five");
    let outputs = leader.step(now, peer(S3, append_ok(1, 1, 0)));
    assert_eq!(leader.commit_index(), 1, "s1, s2 and s3 are three of five");
    assert_eq!(applied(&outputs), vec![(1, ApplyResult::Nothing)]);
}

/// The calling contract lets a driver stop between any two effects. A grant's answer must
/// come after the `Applied` that reports its entry applied, or a driver that stops between
/// them (the simulator's crash inside a step) has told a client about an entry that, as far
/// as anyone watching the effects knows, was never committed. Found by the explorer: the
/// mutual-exclusion checker saw an acknowledgement before its commit.
#[test]
fn an_entry_is_reported_applied_before_the_answer_it_justifies() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(client, 1, preempt("a"))));
    let outputs = commit_through(&mut leader, 3, now);
    let reported = position_of(&outputs, |output| {
        matches!(output, ServerOutput::Applied { index: 3, .. })
    });
    let answered = position_of(
        &outputs,
        |output| matches!(output, ServerOutput::Reply { to, .. } if *to == CLIENT),
    );
    assert!(
        reported < answered,
        "Applied at {reported}, the answer at {answered}: {outputs:?}"
    );
}

// ----- thesis §6.3: exactly-once client requests -----

/// Thesis §6.3: a retry of a request already applied is answered from the session table with
/// the original outcome and appends nothing; the client's next request is appended as usual.
#[test]
fn a_retry_after_commit_is_answered_from_the_session_without_a_new_entry() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(client, 1, preempt("a"))));
    let outputs = commit_through(&mut leader, 3, now);
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, outcome(1, Outcome::Granted { token: 3 }))]
    );

    // The reply was lost; the client retries the same seq over a new connection.
    let retry = leader.step(now, from_client(CLIENT_AGAIN, op(client, 1, preempt("a"))));
    assert_eq!(
        replies(&retry),
        vec![(CLIENT_AGAIN, outcome(1, Outcome::Granted { token: 3 }))]
    );
    assert!(persisted(&retry).is_empty(), "no new entry: {retry:?}");
    assert!(sent(&retry).is_empty(), "nothing to replicate");
    assert_eq!(leader.log().last_index(), 3);

    let next = leader.step(now, from_client(CLIENT, op(client, 2, release("a"))));
    let command = Command::Release {
        client,
        seq: 2,
        lock: lock("a"),
    };
    assert_eq!(
        persisted(&next),
        vec![PersistOp::Append {
            first_index: 4,
            entries: vec![Entry { term: 1, command }]
        }]
    );
}

/// Thesis §6.3: a retry that arrives before the original committed is appended again; applying
/// the second copy reports a duplicate with the same outcome, both connections get that same
/// answer, and the lock is granted once.
#[test]
fn a_retry_before_commit_is_appended_again_but_applied_once() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    let first = leader.step(now, from_client(CLIENT, op(client, 1, preempt("a"))));
    let retry = leader.step(now, from_client(CLIENT_AGAIN, op(client, 1, preempt("a"))));
    assert!(replies(&first).is_empty() && replies(&retry).is_empty());
    assert!(matches!(
        persisted(&retry).as_slice(),
        [PersistOp::Append { first_index: 4, .. }]
    ));

    let outputs = commit_through(&mut leader, 4, now);
    let granted = Outcome::Granted { token: 3 };
    assert_eq!(
        applied(&outputs),
        vec![
            (
                3,
                ApplyResult::Outcome {
                    outcome: granted,
                    duplicate: false
                }
            ),
            (
                4,
                ApplyResult::Outcome {
                    outcome: granted,
                    duplicate: true
                }
            ),
        ]
    );
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT, outcome(1, granted)),
            (CLIENT_AGAIN, outcome(1, granted))
        ]
    );
    assert_eq!(
        leader.lock_table().holder("a"),
        Some(Holder {
            owner: client,
            token: 3
        })
    );
    assert_eq!(leader.lock_table().locks().len(), 1);
}

/// Thesis §6.3: a request older than the client's latest applied one had its chance; it gets
/// `StaleRequest`, at once if the leader already knows, or when applied if it was appended
/// after its successor (a delayed copy), in which case it has no effect.
#[test]
fn a_request_older_than_the_latest_applied_one_is_refused_as_stale() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    // Seq 2 reaches the leader first; a delayed copy of seq 1 follows it into the log.
    let _ = leader.step(now, from_client(CLIENT, op(client, 2, preempt("b"))));
    let _ = leader.step(now, from_client(CLIENT_AGAIN, op(client, 1, preempt("a"))));
    let outputs = commit_through(&mut leader, 4, now);
    assert_eq!(
        applied(&outputs),
        vec![
            (
                3,
                ApplyResult::Outcome {
                    outcome: Outcome::Granted { token: 3 },
                    duplicate: false
                }
            ),
            (4, ApplyResult::Stale),
        ]
    );
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT, outcome(2, Outcome::Granted { token: 3 })),
            (CLIENT_AGAIN, refusal(1, ServiceError::StaleRequest)),
        ]
    );
    assert_eq!(
        leader.lock_table().holder("a"),
        None,
        "the stale preempt had no effect"
    );

    let late = leader.step(now, from_client(CLIENT, op(client, 1, preempt("a"))));
    assert_eq!(
        replies(&late),
        vec![(CLIENT, refusal(1, ServiceError::StaleRequest))]
    );
    assert!(
        persisted(&late).is_empty(),
        "a known-stale request is not appended"
    );
    assert_eq!(leader.log().last_index(), 4);
}

// ----- thesis §6.4: read-index reads -----

/// Thesis §6.4: a linearizable check at the leader is answered only once a majority has
/// acknowledged a heartbeat round started after the check arrived; an acknowledgement of an
/// earlier round does not confirm the leadership the read relies on.
#[test]
fn a_linearizable_check_at_the_leader_waits_for_a_majority_to_ack_a_later_round() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 10);
    let client = register(&mut leader, now);
    let read = op(client, 5, check("a", Consistency::Linearizable));
    let outputs = leader.step(now, from_client(CLIENT, read));
    assert!(
        replies(&outputs).is_empty(),
        "no answer before the round is acknowledged"
    );
    assert_eq!(
        append_rounds(&outputs),
        vec![(S2, 1), (S3, 1)],
        "a new round starts at once"
    );

    let old_round = leader.step(now, peer(S2, append_ok(1, 1, 0)));
    assert!(
        replies(&old_round).is_empty(),
        "round 0 began before the read"
    );

    let confirmed = leader.step(now, peer(S2, append_ok(1, 1, 1)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, outcome(5, Outcome::Free))]
    );
    assert_eq!(leader.pending_request_count(), 0);
}

/// Thesis §6.4: until it commits an entry of its own term, a new leader's commit index may lag
/// what earlier leaders acknowledged, so reads wait; after its no-op commits, a confirming
/// round starts and the read is answered once a majority acknowledges it.
#[test]
fn a_new_leader_defers_reads_until_it_commits_an_entry_of_its_term() {
    // Its disk holds client#1's registration (index 1, term 1); it wins term 2.
    let mut leader = boot_from(S1, 3, disk_with_registered(ClientId(1)));
    let now = ms(FIRST_ELECTION_MS);
    let _ = win_election(&mut leader, now, 3);
    let read = op(ClientId(1), 3, check("a", Consistency::Linearizable));
    let outputs = leader.step(now, from_client(CLIENT, read));
    assert!(replies(&outputs).is_empty());
    assert_eq!(leader.pending_request_count(), 1);

    let committed = leader.step(now, peer(S2, append_ok(2, 2, 0)));
    assert_eq!(leader.commit_index(), 2, "its term-2 no-op");
    assert!(
        replies(&committed).is_empty(),
        "the commit alone does not confirm leadership"
    );
    assert_eq!(append_rounds(&committed), vec![(S2, 1), (S3, 1)]);

    let confirmed = leader.step(now, peer(S3, append_ok(2, 2, 1)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, outcome(3, Outcome::Free))]
    );
}

/// Thesis §6.4: a follower asks its leader for a read index and answers only once it has
/// applied up to it; meanwhile a local check is answered at once from its lagging replica.
#[test]
fn a_follower_forwards_a_linearizable_check_and_answers_after_applying_the_read_index() {
    let mut follower = boot(S2, 3);
    let owner = ClientId(1);
    // The registration (index 2) is committed; the grant (index 3) is not, yet.
    let _ = follower.step(
        ms(10),
        peer(S1, append(1, (0, 0), register_and_grant_a(owner), 2)),
    );

    let local = follower.step(
        ms(11),
        from_client(CLIENT, op(owner, 5, check("a", Consistency::Local))),
    );
    assert_eq!(
        replies(&local),
        vec![(CLIENT, outcome(5, Outcome::Free))],
        "stale but fast"
    );

    let read = op(owner, 6, check("a", Consistency::Linearizable));
    let outputs = follower.step(ms(12), from_client(CLIENT, read));
    assert!(replies(&outputs).is_empty());
    let id = match sent(&outputs).as_slice() {
        [(S1, PeerMessage::ReadIndexRequest { id })] => *id,
        other => panic!("expected one read-index request to s1, got {other:?}"),
    };

    let index = PeerMessage::ReadIndexResponse { id, index: Some(3) };
    let outputs = follower.step(ms(13), peer(S1, index));
    assert!(replies(&outputs).is_empty(), "nothing applied yet");
    let outputs = follower.step(ms(14), peer(S1, append(1, (3, 1), Vec::new(), 2)));
    assert!(replies(&outputs).is_empty(), "applied 2 of read index 3");
    let outputs = follower.step(ms(15), peer(S1, append(1, (3, 1), Vec::new(), 3)));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, outcome(6, Outcome::Owner { owner, token: 3 }))]
    );
}

/// Thesis §6.4: a follower that cannot get a read index tells its client to retry elsewhere:
/// when it knows no leader, when the leader cannot confirm, and when the leader changes.
#[test]
fn a_follower_fails_a_linearizable_check_it_cannot_confirm() {
    let mut follower = boot(S2, 3);
    let read = |seq| op(ClientId(1), seq, check("a", Consistency::Linearizable));
    let outputs = follower.step(ms(5), from_client(CLIENT, read(1)));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(1, ServiceError::Unavailable))]
    );
    assert!(sent(&outputs).is_empty(), "no leader to ask");

    let _ = follower.step(ms(10), peer(S1, append(1, (0, 0), Vec::new(), 0)));
    let id_of = |outputs: &[ServerOutput]| match sent(outputs).as_slice() {
        [(S1, PeerMessage::ReadIndexRequest { id })] => *id,
        other => panic!("expected one read-index request to s1, got {other:?}"),
    };
    let first = id_of(&follower.step(ms(11), from_client(CLIENT, read(2))));
    let refused = PeerMessage::ReadIndexResponse {
        id: first,
        index: None,
    };
    let outputs = follower.step(ms(12), peer(S1, refused));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(2, ServiceError::Unavailable))]
    );

    let second = id_of(&follower.step(ms(13), from_client(CLIENT, read(3))));
    let outputs = follower.step(ms(200), peer(S3, append(2, (0, 0), Vec::new(), 0)));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(3, ServiceError::Unavailable))]
    );
    let late = PeerMessage::ReadIndexResponse {
        id: second,
        index: Some(0),
    };
    let outputs = follower.step(ms(201), peer(S1, late));
    assert!(
        replies(&outputs).is_empty(),
        "a late answer to an abandoned read is dropped"
    );
    assert_eq!(follower.pending_request_count(), 0);
}

/// Thesis §6.4: a leader deposed while reads wait for confirmation fails them: its own client
/// gets `Unavailable` and a follower's read-index request gets `index: None`.
#[test]
fn a_deposed_leader_fails_waiting_reads_with_unavailable() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 10);
    let read = op(ClientId(1), 4, check("a", Consistency::Linearizable));
    let waiting = leader.step(now, from_client(CLIENT, read));
    let remote = leader.step(now, peer(S2, PeerMessage::ReadIndexRequest { id: 9 }));
    assert!(replies(&waiting).is_empty());
    assert!(
        !sent(&remote)
            .iter()
            .any(|(_, msg)| matches!(msg, PeerMessage::ReadIndexResponse { .. }))
    );
    assert_eq!(leader.pending_request_count(), 2);

    let outputs = leader.step(now, peer(S3, append(2, (0, 0), Vec::new(), 0)));
    assert_eq!(leader.role(), Role::Follower);
    assert_eq!(leader.leader(), Some(S3));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(4, ServiceError::Unavailable))]
    );
    let refused = PeerMessage::ReadIndexResponse { id: 9, index: None };
    assert!(sent(&outputs).contains(&(S2, refused)));
    assert_eq!(leader.pending_request_count(), 0);
}

/// A local check (the seed design's consistency) is answered at once from the receiving
/// replica, even with no leader known; a linearizable one there cannot be.
#[test]
fn a_local_check_is_answered_at_once_from_the_replica() {
    let mut server = boot_from(S3, 3, disk_with_registered(ClientId(1)));
    let local = server.step(
        ms(5),
        from_client(CLIENT, op(ClientId(1), 1, check("a", Consistency::Local))),
    );
    assert_eq!(replies(&local), vec![(CLIENT, outcome(1, Outcome::Free))]);
    assert!(sent(&local).is_empty(), "no leader involved");
    let read = op(ClientId(1), 2, check("a", Consistency::Linearizable));
    let linearizable = server.step(ms(6), from_client(CLIENT, read));
    assert_eq!(
        replies(&linearizable),
        vec![(CLIENT, refusal(2, ServiceError::Unavailable))]
    );
}

/// Monotonic reads: a client that has seen index 3 asks a replica that has applied only 1.
/// The replica waits until it catches up rather than answer from the past; a replica that does
/// not catch up in time refuses, so the client moves on instead of reading backwards.
#[test]
fn a_local_check_waits_for_the_replica_to_reach_what_its_client_has_seen() {
    let mut follower = boot(S2, 3);
    let owner = ClientId(1);
    let _ = follower.step(
        ms(10),
        peer(S1, append(1, (0, 0), register_and_grant_a(owner), 1)),
    );
    assert_eq!(follower.last_applied(), 1);

    let mut behind = op(owner, 2, check("a", Consistency::Local));
    behind.seen_index = 3;
    let waiting = follower.step(ms(11), from_client(CLIENT, behind));
    assert!(
        replies(&waiting).is_empty(),
        "applied 1, the client has seen 3: wait"
    );

    let caught_up = follower.step(ms(12), peer(S1, append(1, (3, 1), Vec::new(), 3)));
    let answers: Vec<ClientReply> = caught_up
        .iter()
        .filter_map(|output| match output {
            ServerOutput::Reply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(
        answers[0].body,
        ReplyBody::Outcome(Outcome::Owner { owner, token: 3 })
    );
    assert_eq!(
        answers[0].index, 3,
        "the reply says which state it reflects"
    );

    let mut far_ahead = op(owner, 3, check("a", Consistency::Local));
    far_ahead.seen_index = 50;
    assert!(replies(&follower.step(ms(20), from_client(CLIENT, far_ahead))).is_empty());
    let still_behind = follower.step(ms(100), peer(S1, append(1, (3, 1), Vec::new(), 3)));
    assert!(replies(&still_behind).is_empty(), "still within the wait");
    let gave_up = follower.step(ms(400), peer(S1, append(1, (3, 1), Vec::new(), 3)));
    assert_eq!(
        replies(&gave_up),
        vec![(CLIENT, refusal(3, ServiceError::Unavailable))]
    );
}

// ----- check-quorum -----

/// Check-quorum (thesis §6.2): a leader that heard from a majority during an election timeout
/// keeps leading; one that heard from no one for a whole timeout steps down on its timer.
#[test]
fn a_leader_that_hears_from_no_majority_for_an_election_timeout_steps_down() {
    let mut leader = boot(S1, 3);
    let election = win_election(&mut leader, ms(FIRST_ELECTION_MS), 3);
    let first_check = timer_at(&election, ServerTimer::Election).expect("a check-quorum timer");
    let _ = leader.step(ms(FIRST_ELECTION_MS + 10), peer(S2, append_ok(1, 1, 0)));

    let outputs = leader.step(first_check, timer(ServerTimer::Election));
    assert_eq!(
        leader.role(),
        Role::Leader,
        "s2 answered: s1 and s2 are a majority"
    );
    let second_check = timer_at(&outputs, ServerTimer::Election).expect("the next check");
    assert!(second_check > first_check);

    let _ = leader.step(second_check, timer(ServerTimer::Election));
    assert_eq!(
        leader.role(),
        Role::Follower,
        "nobody answered for a whole timeout"
    );
    assert_eq!(leader.term(), 1, "stepping down is not a new term");
    assert_eq!(leader.leader(), None);
    let write = leader.step(
        second_check,
        from_client(CLIENT, op(ClientId(1), 1, preempt("a"))),
    );
    assert_eq!(
        replies(&write),
        vec![(CLIENT, refusal(1, ServiceError::Unavailable))]
    );
}

/// Check-quorum, as a story under virtual time: a leader cut off from everyone steps down
/// within two election timeouts, and the majority side elects a leader of the next term, which
/// the old leader follows once the partition heals.
#[test]
fn an_isolated_leader_steps_down_and_the_majority_elects_another() {
    let mut network = Network::new(3);
    network.elect(S1);
    network.isolate(S1);
    let end = network.now + Duration::from_secs(1);
    network.run_until(end);
    assert_eq!(
        network.server(S1).role(),
        Role::PreCandidate,
        "it stepped down, then timed out"
    );
    assert_eq!(network.server(S1).term(), 1, "its pre-votes went nowhere");
    let [(new_leader, 2)] = network.leaders()[..] else {
        panic!("expected one leader of term 2, got {:?}", network.leaders());
    };
    assert_ne!(new_leader, S1);

    network.heal();
    let end = network.now + Duration::from_millis(500);
    network.run_until(end);
    assert_eq!(network.leaders(), vec![(new_leader, 2)]);
    assert_eq!(network.server(S1).leader(), Some(new_leader));
    assert_eq!(network.server(S1).log(), network.server(new_leader).log());
}

/// Thesis §9.6: pre-vote keeps a partitioned server from raising its term, so when it rejoins
/// it does not depose a healthy leader (whose followers refuse it within their lease).
#[test]
fn a_partitioned_server_does_not_raise_its_term_or_disrupt_the_leader_on_rejoining() {
    let mut network = Network::new(3);
    network.elect(S1);
    network.isolate(S3);
    let end = network.now + Duration::from_secs(2);
    network.run_until(end);
    assert_eq!(
        network.server(S3).role(),
        Role::PreCandidate,
        "it keeps trying"
    );
    assert_eq!(network.server(S3).term(), 1, "but never won a pre-vote");
    assert_eq!(network.leaders(), vec![(S1, 1)], "s1 and s2 carry on");

    network.heal();
    let end = network.now + Duration::from_secs(1);
    network.run_until(end);
    assert_eq!(network.leaders(), vec![(S1, 1)], "no election happened");
    assert_eq!(network.server(S3).role(), Role::Follower);
    assert_eq!(network.server(S3).leader(), Some(S1));
}

// ----- crash and restart -----

/// Raft figure 2: term, vote and log are persistent; commit index and the state machine are
/// volatile, rebuilt once the leader says again what is committed.
#[test]
fn a_restarted_server_keeps_term_vote_and_log_and_rebuilds_commit_and_locks() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = ClientId(1);
    // Replies carry the applied index they reflect (the registration is entry 2, the grant 3)
    // and the term of the leader that answered.
    let answers = network.client(S1, hello(42));
    let secret = known_secret(client).expect("the welcome gave client#1 a secret");
    let welcome = ClientReply {
        seq: 0,
        index: 2,
        term: 1,
        body: ReplyBody::Welcome {
            nonce: 42,
            client,
            secret,
        },
    };
    assert_eq!(answers, vec![(CLIENT, welcome)]);
    let granted = ClientReply {
        index: 3,
        term: 1,
        ..outcome(1, Outcome::Granted { token: 3 })
    };
    assert_eq!(
        network.client(S1, op(client, 1, preempt("a"))),
        vec![(CLIENT, granted)]
    );
    network.heartbeat(S1);

    let held = Some(Holder {
        owner: client,
        token: 3,
    });
    let before = network.server(S2);
    assert_eq!(
        (before.commit_index(), before.lock_table().holder("a")),
        (3, held)
    );
    let (term, vote, log) = (before.term(), before.voted_for(), before.log().clone());
    assert_eq!((term, vote), (1, Some(S1)));

    network.boot(S2);
    let after = network.server(S2);
    assert_eq!(
        (after.term(), after.voted_for(), after.log()),
        (term, vote, &log)
    );
    assert_eq!(
        (after.commit_index(), after.last_applied()),
        (0, 0),
        "volatile state is lost"
    );
    assert_eq!(after.lock_table().holder("a"), None);
    assert_eq!(after.lock_table().client_count(), 0);

    network.heartbeat(S1);
    let rebuilt = network.server(S2);
    assert_eq!(rebuilt.commit_index(), 3);
    assert_eq!(
        rebuilt.lock_table().holder("a"),
        held,
        "the same grant, the same token"
    );
    assert_eq!(rebuilt.lock_table(), network.server(S1).lock_table());
}

/// Raft figure 2: `votedFor` is persistent, so a voter that crashed after voting cannot vote
/// for someone else in that term once restarted.
#[test]
fn a_vote_survives_a_crash() {
    let mut voter = boot(S3, 3);
    let outputs = voter.step(ms(10), peer(S1, request_vote(1, 0, 0)));
    let mut recovered = DurableState::default();
    for op in persisted(&outputs) {
        recovered.apply(&op);
    }
    assert_eq!((recovered.term, recovered.voted_for), (1, Some(S1)));

    let mut restarted = boot_from(S3, 3, recovered);
    assert_eq!((restarted.term(), restarted.voted_for()), (1, Some(S1)));
    let other = restarted.step(ms(20), peer(S2, request_vote(1, 0, 0)));
    assert_eq!(sent(&other), vec![(S2, vote(1, false))]);
    let same = restarted.step(ms(21), peer(S1, request_vote(1, 0, 0)));
    assert_eq!(sent(&same), vec![(S1, vote(1, true))]);
}

// ----- timers -----

/// The calling contract of `Server`: an early or spurious timer is harmless. An election timer
/// before its deadline does nothing; at the deadline, the pre-vote starts.
#[test]
fn an_election_timer_before_its_deadline_changes_nothing() {
    let (mut server, boot_outputs) =
        Server::new(config(S1, 3), DurableState::default(), 1, Time::ZERO);
    let deadline = timer_at(&boot_outputs, ServerTimer::Election).expect("an election timer");
    let early = Time::from_nanos(deadline.as_nanos() - 1);

    let outputs = server.step(early, timer(ServerTimer::Election));
    assert!(outputs.is_empty(), "spurious: {outputs:?}");
    assert_eq!((server.role(), server.term()), (Role::Follower, 0));

    let outputs = server.step(deadline, timer(ServerTimer::Election));
    assert_eq!(server.role(), Role::PreCandidate);
    assert_eq!(
        sent(&outputs),
        vec![(S2, pre_vote(1, 0, 0)), (S3, pre_vote(1, 0, 0))]
    );
}

/// The calling contract of `Server`: a leader's early check-quorum timer does not depose it
/// even though nobody answered yet; heartbeat timers do nothing at a follower or before their
/// deadline, and send AppendEntries at it.
#[test]
fn early_leader_timers_and_heartbeats_at_a_follower_are_harmless() {
    let mut leader = boot(S1, 3);
    let election = win_election(&mut leader, ms(FIRST_ELECTION_MS), 3);
    let check_at = timer_at(&election, ServerTimer::Election).expect("a check-quorum timer");
    let heartbeat_at = timer_at(&election, ServerTimer::Heartbeat).expect("a heartbeat timer");

    let early_check = leader.step(
        Time::from_nanos(check_at.as_nanos() - 1),
        timer(ServerTimer::Election),
    );
    assert!(early_check.is_empty());
    assert_eq!(leader.role(), Role::Leader);
    let early_beat = leader.step(
        Time::from_nanos(heartbeat_at.as_nanos() - 1),
        timer(ServerTimer::Heartbeat),
    );
    assert!(early_beat.is_empty());
    let beat = leader.step(heartbeat_at, timer(ServerTimer::Heartbeat));
    assert_eq!(append_rounds(&beat), vec![(S2, 0), (S3, 0)]);

    let mut follower = boot(S2, 3);
    let outputs = follower.step(ms(1_000), timer(ServerTimer::Heartbeat));
    assert!(outputs.is_empty(), "a follower has no heartbeat to send");
    assert_eq!(follower.role(), Role::Follower);
}

// ----- the term rule and refusals by read -----

/// s1 leads term 1 of three servers; client 1 holds lock `a` (granted at index 3, committed)
/// and client 2 is registered (index 4). Returns the leader and the two clients.
fn leader_with_a_held_lock() -> (Server, ClientId, ClientId) {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let holder = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(holder, 1, preempt("a"))));
    let granted = commit_through(&mut leader, 3, now);
    assert_eq!(
        replies(&granted),
        vec![(CLIENT, outcome(1, Outcome::Granted { token: 3 }))]
    );
    let contender = register(&mut leader, now);
    (leader, holder, contender)
}

/// A write names the term its client believes current. The leader appends only writes of its
/// own term: a write naming an older one may be a late copy of an attempt an earlier leader
/// answered, so it is sent back with the current term and leader instead.
#[test]
fn a_write_naming_another_term_is_answered_not_leader_with_the_current_term() {
    let (mut leader, holder, _) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let stale = in_term(0, op(holder, 2, release("a")));
    let outputs = leader.step(now, from_client(CLIENT, stale));
    let not_leader = ServiceError::NotLeader {
        leader: Some(S1),
        term: 1,
    };
    assert_eq!(replies(&outputs), vec![(CLIENT, refusal(2, not_leader))]);
    assert!(persisted(&outputs).is_empty(), "nothing appended");

    // A follower says the same without bothering the leader.
    let mut follower = boot(S2, 3);
    let _ = follower.step(now, peer(S1, append(1, (0, 0), vec![noop(1)], 0)));
    let outputs = follower.step(
        now,
        from_client(CLIENT, in_term(0, op(holder, 2, release("a")))),
    );
    let not_leader = ServiceError::NotLeader {
        leader: Some(S1),
        term: 1,
    };
    assert_eq!(replies(&outputs), vec![(CLIENT, refusal(2, not_leader))]);
    assert!(sent(&outputs).is_empty(), "no forward to the leader");
}

/// The contended case: a preempt of a lock someone else holds changes nothing, so the leader
/// answers it with a leadership-confirmed read (a heartbeat round acknowledged by a majority)
/// and no log entry, hence no fsync.
#[test]
fn a_preempt_of_a_held_lock_is_refused_with_a_confirmed_read_and_no_log_entry() {
    let (mut leader, holder, contender) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let last_index = leader.log().last_index();
    let outputs = leader.step(now, from_client(CLIENT, op(contender, 1, preempt("a"))));
    assert!(persisted(&outputs).is_empty(), "no entry: {outputs:?}");
    assert!(
        replies(&outputs).is_empty(),
        "not before leadership is confirmed"
    );
    let round = append_rounds(&outputs)[0].1;

    let confirmed = leader.step(now, peer(S2, append_ok(1, last_index, round)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, outcome(1, Outcome::HeldBy { owner: holder }))]
    );
    assert!(persisted(&confirmed).is_empty());
    assert_eq!(leader.log().last_index(), last_index, "the log never grew");

    // A copy of the refused request gets the same answer, and an older one is stale: neither
    // may ever be appended, or the contender would get the lock it was told it lost.
    let copy = leader.step(
        now,
        from_client(CLIENT_AGAIN, op(contender, 1, preempt("a"))),
    );
    assert_eq!(
        replies(&copy),
        vec![(CLIENT_AGAIN, outcome(1, Outcome::HeldBy { owner: holder }))]
    );
    let _ = leader.step(now, from_client(CLIENT, op(contender, 3, preempt("a"))));
    let confirmed = leader.step(now, peer(S2, append_ok(1, last_index, round + 1)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, outcome(3, Outcome::HeldBy { owner: holder }))]
    );
    let older = leader.step(now, from_client(CLIENT, op(contender, 2, preempt("a"))));
    assert_eq!(
        replies(&older),
        vec![(CLIENT, refusal(2, ServiceError::StaleRequest))]
    );
    assert!(persisted(&older).is_empty());
}

/// A contender is nearly always waiting for its refusal's read round when the holder lets go.
/// The release hands the lock straight to it: the grant is appended right behind the release,
/// so both commit in one replication round (one fsync per hand-off, not two), and the round
/// the contender waited for decides nothing any more.
#[test]
fn a_release_hands_the_lock_to_a_contender_still_waiting_for_its_refusal() {
    let (mut leader, holder, contender) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let outputs = leader.step(now, from_client(CLIENT, op(contender, 1, preempt("a"))));
    let round = append_rounds(&outputs)[0].1;
    assert!(persisted(&outputs).is_empty(), "refused by read so far");

    let outputs = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, release("a"))));
    let grant_index = leader.log().last_index();
    let release = Command::Release {
        client: holder,
        seq: 2,
        lock: lock("a"),
    };
    let grant = Command::Preempt {
        client: contender,
        seq: 1,
        lock: lock("a"),
        claim: Claim::EXCLUSIVE,
    };
    assert_eq!(
        persisted(&outputs),
        vec![
            PersistOp::Append {
                first_index: grant_index - 1,
                entries: vec![Entry {
                    term: 1,
                    command: release
                }]
            },
            PersistOp::Append {
                first_index: grant_index,
                entries: vec![Entry {
                    term: 1,
                    command: grant
                }]
            }
        ],
        "the preempt is appended right behind the release"
    );

    // s2 acknowledges both entries and the round: the lock changes hands in one round.
    let outputs = leader.step(now, peer(S2, append_ok(1, grant_index, round)));
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT_AGAIN, outcome(2, Outcome::Released)),
            (CLIENT, outcome(1, Outcome::Granted { token: grant_index }))
        ]
    );
}

/// With several contenders waiting, the one that asked first gets the lock; the others are
/// refused once the grant commits, naming the new holder, and their refusals append nothing.
#[test]
fn a_release_hands_the_lock_to_the_earliest_contender_and_refuses_the_rest() {
    const THIRD: ClientAddr = ClientAddr(9);
    let (mut leader, holder, first) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS);
    let second = register(&mut leader, now);
    let now = ms(FIRST_ELECTION_MS + 5);
    let outputs = leader.step(now, from_client(CLIENT, op(first, 1, preempt("a"))));
    let round = append_rounds(&outputs)[0].1;
    let _ = leader.step(now, from_client(THIRD, op(second, 1, preempt("a"))));

    let _ = leader.step(now, from_client(CLIENT_AGAIN, op(holder, 2, release("a"))));
    let grant_index = leader.log().last_index();
    let outputs = leader.step(now, peer(S2, append_ok(1, grant_index, round)));
    assert_eq!(
        replies(&outputs),
        vec![
            (CLIENT_AGAIN, outcome(2, Outcome::Released)),
            (CLIENT, outcome(1, Outcome::Granted { token: grant_index })),
            (THIRD, outcome(1, Outcome::HeldBy { owner: first }))
        ]
    );
    assert_eq!(
        leader.log().last_index(),
        grant_index,
        "the refusal appended nothing"
    );
}

/// Reads that arrive while a confirming round is in flight cannot use it (its messages left
/// before they arrived), so they gather for the next round, which starts once the round in
/// flight is confirmed: one round at a time, however fast refused preempts arrive.
#[test]
fn reads_arriving_during_a_round_share_the_next_one() {
    const THIRD: ClientAddr = ClientAddr(9);
    let (mut leader, holder, first) = leader_with_a_held_lock();
    let second = register(&mut leader, ms(FIRST_ELECTION_MS));
    let last_index = leader.log().last_index();
    let outputs = leader.step(
        ms(FIRST_ELECTION_MS + 5),
        from_client(CLIENT, op(first, 1, preempt("a"))),
    );
    let round = append_rounds(&outputs)[0].1;

    let later = ms(FIRST_ELECTION_MS + 6);
    let outputs = leader.step(later, from_client(THIRD, op(second, 1, preempt("a"))));
    assert!(
        append_rounds(&outputs).is_empty(),
        "no second round while one is in flight"
    );

    // The first round is confirmed: its read is answered and the next round starts.
    let outputs = leader.step(later, peer(S2, append_ok(1, last_index, round)));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, outcome(1, Outcome::HeldBy { owner: holder }))]
    );
    let next_rounds = append_rounds(&outputs);
    assert_eq!(next_rounds.len(), 2, "one AppendEntries per peer");
    assert!(next_rounds.iter().all(|&(_, r)| r == round + 1));

    // An acknowledgement of the old round confirms nothing for the later read.
    let outputs = leader.step(later, peer(S3, append_ok(1, last_index, round)));
    assert!(replies(&outputs).is_empty());
    let outputs = leader.step(later, peer(S3, append_ok(1, last_index, round + 1)));
    assert_eq!(
        replies(&outputs),
        vec![(THIRD, outcome(1, Outcome::HeldBy { owner: holder }))]
    );
}

/// A leader that loses its term before confirming a refusal tells the client to retry
/// elsewhere; it never answers from a leadership it no longer has.
#[test]
fn a_refusal_not_yet_confirmed_when_the_leader_steps_down_is_answered_unavailable() {
    let (mut leader, _, contender) = leader_with_a_held_lock();
    let now = ms(FIRST_ELECTION_MS + 5);
    let _ = leader.step(now, from_client(CLIENT, op(contender, 1, preempt("a"))));
    let deposed = leader.step(now, peer(S2, append(2, (0, 0), vec![], 0)));
    assert_eq!(leader.role(), Role::Follower);
    assert_eq!(
        replies(&deposed),
        vec![(CLIENT, refusal(1, ServiceError::Unavailable))]
    );
}

/// Lock names have a limit; the wire codec enforces it, and so does the node.
#[test]
fn a_lock_name_over_the_limit_is_a_bad_request() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS);
    let client = register(&mut leader, now);
    let long = "x".repeat(LOCK_NAME_BYTES_MAX + 1);
    let outputs = leader.step(now, from_client(CLIENT, op(client, 1, preempt(&long))));
    let bad = ServiceError::BadRequest {
        reason: format!(
            "the lock name is {} bytes long; the limit is {LOCK_NAME_BYTES_MAX}",
            LOCK_NAME_BYTES_MAX + 1
        ),
    };
    assert_eq!(replies(&outputs), vec![(CLIENT, refusal(1, bad))]);
    assert!(persisted(&outputs).is_empty());
}

// ----- §7: snapshots and log compaction -----

/// Three servers that snapshot every 3 applied entries, s1 leading and s3 cut off, and the
/// client s1 welcomed (entry 2).
fn snapshotting_with_s3_cut_off() -> (Network, ClientId) {
    let mut network = Network::from_disks(vec![DurableState::default(); 3], |config| {
        config.snapshot_entries_min = Some(3);
    });
    network.elect(S1);
    network.isolate(S3);
    let client = network.welcome(S1, hello(42));
    (network, client)
}

/// A leader that snapshots every 3 applied entries compacts its log and makes the snapshot
/// durable; a follower whose next entry is compacted away is sent the snapshot, installs it,
/// persists it before acknowledging, and ends with the leader's lock table.
#[test]
fn a_follower_behind_the_compaction_point_installs_the_leaders_snapshot() {
    let (mut network, client) = snapshotting_with_s3_cut_off();
    let granted = network.client(S1, op(client, 1, preempt("a")));
    assert_eq!(
        granted,
        vec![(
            CLIENT,
            ClientReply {
                index: 3,
                term: 1,
                ..outcome(1, Outcome::Granted { token: 3 })
            }
        )]
    );
    let _ = network.client(S1, op(client, 2, preempt("b")));
    assert!(
        network.server(S1).log().base_index() >= 3,
        "the leader compacted its log"
    );
    assert_eq!(
        network
            .disk(S1)
            .snapshot
            .as_ref()
            .map(|s| s.last_included_index),
        Some(network.server(S1).log().base_index()),
        "and made the snapshot durable"
    );

    network.heal();
    network.heartbeat(S1);
    let follower = network.server(S3);
    assert_eq!(follower.lock_table(), network.server(S1).lock_table());
    assert!(
        follower.log().base_index() >= 3,
        "s3 installed the snapshot"
    );
    // Counted as installed, not as already covered. (Mutant: `index > self.commit_index` in
    // `on_install_snapshot`'s coverage made `<`.)
    let coverage = follower.coverage();
    assert_eq!(
        coverage.count(crate::node::coverage::Branch::InstallSnapshotInstalled),
        1
    );
    assert_eq!(
        coverage.count(crate::node::coverage::Branch::InstallSnapshotAlreadyCovered),
        0
    );
    assert_eq!(
        network
            .disk(S3)
            .snapshot
            .as_ref()
            .map(|s| s.last_included_index),
        Some(follower.log().base_index()),
        "and persisted it"
    );

    // A restart rebuilds the state machine from the snapshot on disk.
    network.boot(S3);
    assert_eq!(
        network.server(S3).lock_table().holder("a").map(|h| h.owner),
        Some(client)
    );
}

/// Reads that reach the leader at the same instant (a driver steps a batch of inputs at one
/// `now`) share one confirming round instead of broadcasting one each; a read a moment later
/// starts its own.
#[test]
fn reads_arriving_together_share_one_confirming_round() {
    let mut leader = leader_of_three();
    let now = ms(FIRST_ELECTION_MS + 10);
    let client = register(&mut leader, now);
    let read = |seq| op(client, seq, check("a", Consistency::Linearizable));
    let first = leader.step(now, from_client(CLIENT, read(1)));
    assert_eq!(append_rounds(&first), vec![(S2, 1), (S3, 1)]);
    let second = leader.step(now, from_client(CLIENT_AGAIN, read(2)));
    assert!(
        append_rounds(&second).is_empty(),
        "joins round 1: {second:?}"
    );

    let confirmed = leader.step(now, peer(S2, append_ok(1, 1, 1)));
    assert_eq!(
        replies(&confirmed),
        vec![
            (CLIENT, outcome(1, Outcome::Free)),
            (CLIENT_AGAIN, outcome(2, Outcome::Free))
        ]
    );

    let later = leader.step(now + Duration::from_micros(1), from_client(CLIENT, read(3)));
    assert_eq!(append_rounds(&later), vec![(S2, 2), (S3, 2)]);
}

// ----- durability reported by the driver (Raft thesis §10.2.1) -----

/// A driver that writes in the background tells the server what is durable. The leader then
/// replicates before its own write is done but counts itself toward a majority only for
/// entries reported durable: an entry one follower holds commits once the leader's copy is
/// durable too, or once a second follower holds it.
#[test]
fn a_leader_counts_its_own_entries_toward_a_majority_only_once_they_are_durable() {
    let mut config = config(S1, 3);
    config.durability_reported = true;
    let (mut leader, _) = Server::new(config, DurableState::default(), 1, Time::ZERO);
    let now = ms(FIRST_ELECTION_MS);
    let election = win_election(&mut leader, now, 3);
    let persists = election
        .iter()
        .filter(|output| {
            matches!(
                output,
                ServerOutput::Persist(_) | ServerOutput::PersistSnapshot(_)
            )
        })
        .count() as u64;

    let acked = leader.step(now, peer(S2, append_ok(1, 1, 0)));
    assert_eq!(leader.commit_index(), 0, "only s2 holds the no-op durably");
    assert!(applied(&acked).is_empty());

    let durable = leader.step(now, ServerInput::Persisted { through: persists });
    assert_eq!(leader.commit_index(), 1, "s1 and s2: a majority");
    assert_eq!(applied(&durable), vec![(1, ApplyResult::Nothing)]);

    // Without the leader's own report, two followers are a majority by themselves.
    let _ = leader.step(now, from_client(CLIENT, hello(7)));
    let _ = leader.step(now, peer(S2, append_ok(1, 2, 0)));
    assert_eq!(leader.commit_index(), 1);
    let _ = leader.step(now, peer(S3, append_ok(1, 2, 0)));
    assert_eq!(leader.commit_index(), 2);
}

/// How many of `outputs` a driver numbers as persists: the server's reports name them by count.
fn persist_outputs(outputs: &[ServerOutput]) -> u64 {
    let persists = outputs.iter().filter(|output| {
        matches!(
            output,
            ServerOutput::Persist(_) | ServerOutput::PersistSnapshot(_)
        )
    });
    persists.count() as u64
}

/// The driver numbers every `Persist` and `PersistSnapshot` in order, and reports durability
/// by that number; a snapshot is one of them. After a snapshot, a report through the first of
/// two appends makes that one durable and not the second: a follower's acknowledgement of the
/// second does not commit it while the leader's own copy is not durable. (Mutant: the
/// snapshot's `persist_count += 1` in `maybe_compact` made `-=`, which numbered the appends
/// after it two lower than the driver did, so a report covered appends it did not name.)
#[test]
fn after_a_snapshot_a_durability_report_covers_exactly_the_persists_it_counts() {
    let mut config = config(S1, 3);
    config.durability_reported = true;
    config.snapshot_entries_min = Some(3);
    let (mut leader, _) = Server::new(config, DurableState::default(), 1, Time::ZERO);
    let now = ms(FIRST_ELECTION_MS);
    let mut numbered = persist_outputs(&win_election(&mut leader, now, 3));
    let mut snapshots = 0;
    for nonce in 1..=6 {
        let mut outputs = leader.step(now, from_client(CLIENT, hello(nonce)));
        numbered += persist_outputs(&outputs);
        let durable = leader.step(now, ServerInput::Persisted { through: numbered });
        numbered += persist_outputs(&durable);
        outputs.extend(durable);
        let last = leader.log().last_index();
        let acked = leader.step(now, peer(S2, append_ok(1, last, 0)));
        numbered += persist_outputs(&acked);
        outputs.extend(acked);
        assert_eq!(leader.commit_index(), last);
        snapshots += outputs
            .iter()
            .filter(|output| matches!(output, ServerOutput::PersistSnapshot(_)))
            .count();
    }
    assert!(snapshots > 0, "the leader snapshotted");
    let committed = leader.commit_index();
    numbered += persist_outputs(&leader.step(now, from_client(CLIENT, hello(100))));
    let first = numbered;
    numbered += persist_outputs(&leader.step(now, from_client(CLIENT, hello(101))));
    assert_eq!(numbered, first + 1, "one persist per append");
    let (x, y) = (committed + 1, committed + 2);
    assert_eq!(leader.log().last_index(), y);
    let _ = leader.step(now, ServerInput::Persisted { through: first });
    let _ = leader.step(now, peer(S2, append_ok(1, y, 0)));
    assert_eq!(
        leader.commit_index(),
        x,
        "the second append is not durable at s1 yet"
    );
    let _ = leader.step(now, ServerInput::Persisted { through: numbered });
    assert_eq!(leader.commit_index(), y);
}

// ----- hostile clients (issue 10): refused before the log, and nothing changes -----

/// `request` carrying `secret` instead of the one its client was issued.
fn with_secret(secret: Option<ClientSecret>, request: ClientRequest) -> ClientRequest {
    let RequestBody::Op { client, op, .. } = request.body else {
        panic!("only operations carry secrets")
    };
    ClientRequest {
        body: RequestBody::Op { client, secret, op },
        ..request
    }
}

/// A leader of three that registered a client and granted it lock `a` (committed); returns
/// the leader, the client and the grant's index.
fn leader_with_a_granted_lock(now: Time) -> (Server, ClientId, LogIndex) {
    let mut leader = leader_of_three();
    let owner = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(owner, 1, preempt("a"))));
    let grant = leader.log().last_index();
    let outputs = commit_through(&mut leader, grant, now);
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, outcome(1, Outcome::Granted { token: grant }))]
    );
    (leader, owner, grant)
}

/// The poison line of issue 10: a preempt naming a client id no hello issued. The leader
/// answers `unknown_client` and appends nothing, so no replica ever applies it.
#[test]
fn a_write_by_a_client_id_no_hello_issued_is_refused_before_the_log() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let (mut leader, _, grant) = leader_with_a_granted_lock(now);
    let guessed = Some(ClientSecret::from_bytes([0x42; 16]));
    for ghost in [ClientId(999_999), ClientId(0), ClientId(2)] {
        let poison = with_secret(guessed, op(ghost, 2, preempt("ghost")));
        let outputs = leader.step(now, from_client(CLIENT, poison));
        assert_eq!(
            replies(&outputs),
            vec![(
                CLIENT,
                refusal(2, ServiceError::UnknownClient { client: ghost })
            )]
        );
        assert!(persisted(&outputs).is_empty(), "nothing reaches the log");
    }
    assert_eq!(leader.log().last_index(), grant);
}

/// Issue 10, item 2: a release naming another client's id, with a wrong secret or none, is
/// `unauthorized`; the lock stays with its owner. So is a check: it learns nothing.
#[test]
fn a_request_with_a_wrong_or_missing_secret_is_unauthorized_and_changes_nothing() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let (mut leader, owner, grant) = leader_with_a_granted_lock(now);
    let forged = [None, Some(ClientSecret::from_bytes([0; 16]))];
    for (seq, secret) in (2..).zip(forged) {
        let release = with_secret(secret, op(owner, seq, release("a")));
        let outputs = leader.step(now, from_client(CLIENT, release));
        assert_eq!(
            replies(&outputs),
            vec![(CLIENT, refusal(seq, ServiceError::Unauthorized))]
        );
        assert!(persisted(&outputs).is_empty(), "nothing reaches the log");
        let peek = with_secret(secret, op(owner, seq, check("a", Consistency::Local)));
        let outputs = leader.step(now, from_client(CLIENT, peek));
        assert_eq!(
            replies(&outputs),
            vec![(CLIENT, refusal(seq, ServiceError::Unauthorized))]
        );
    }
    assert_eq!(leader.log().last_index(), grant);
    assert_eq!(
        leader.lock_table().holder("a"),
        Some(Holder {
            owner,
            token: grant
        })
    );
    // The owner's own secret still works.
    let outputs = leader.step(now, from_client(CLIENT, op(owner, 4, release("a"))));
    assert!(
        replies(&outputs).is_empty(),
        "appended, answered once committed"
    );
    assert_eq!(leader.log().last_index(), grant + 1);
}

/// Found by the explorer's rogues (`mode_claim`; seeds 157 and 344 of a 20,000-seed run on the
/// branch that added them): a seq still in the unapplied log, sent again with another mode or
/// other permits, was attached to that entry (or appended beside it) and could be told its
/// outcome, a reader's grant answering a writer. PROTOCOL.md: the same seq with another claim
/// is `seq_reused`, before the log as once applied.
#[test]
fn a_seq_in_the_log_reused_with_another_claim_is_refused_not_told_that_entrys_answer() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let mut leader = leader_of_three();
    let owner = register(&mut leader, now);
    let claim_of = |claim: Claim| Operation::Preempt {
        lock: LockName::from("a"),
        claim,
    };
    let _ = leader.step(
        now,
        from_client(CLIENT, op(owner, 10, claim_of(Claim::SHARED))),
    );
    let shared = leader.log().last_index();
    for other in [preempt("a"), claim_of(Claim::semaphore(3))] {
        let outputs = leader.step(now, from_client(CLIENT, op(owner, 10, other)));
        assert_eq!(
            replies(&outputs),
            vec![(CLIENT, refusal(10, ServiceError::SeqReused { seq: 10 }))]
        );
    }
    assert_eq!(
        leader.log().last_index(),
        shared,
        "nothing appended beside it"
    );
    let acquire_of = |claim: Claim| Operation::Acquire {
        lock: LockName::from("b"),
        wait_ms: 1_000,
        claim,
    };
    let _ = leader.step(
        now,
        from_client(CLIENT, op(owner, 11, acquire_of(Claim::semaphore(2)))),
    );
    let queued = leader.log().last_index();
    let other = acquire_of(Claim::semaphore(3));
    let outputs = leader.step(now, from_client(CLIENT, op(owner, 11, other)));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(11, ServiceError::SeqReused { seq: 11 }))]
    );
    assert_eq!(leader.log().last_index(), queued);
    // The same claim again is a retry: it waits for that entry's answer, appending nothing.
    let outputs = leader.step(
        now,
        from_client(CLIENT, op(owner, 11, acquire_of(Claim::semaphore(2)))),
    );
    assert!(replies(&outputs).is_empty());
    assert_eq!(leader.log().last_index(), queued);
}

/// Issue 10, item 3: a client reusing seq 10 for a release was answered `granted` and nothing
/// was released. A seq names one request, whether it is still in the log or already applied.
#[test]
fn a_seq_reused_for_another_operation_is_refused_in_the_log_and_after_it() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let mut leader = leader_of_three();
    let owner = register(&mut leader, now);
    let _ = leader.step(now, from_client(CLIENT, op(owner, 10, preempt("a"))));
    let grant = leader.log().last_index();
    let reused = leader.step(now, from_client(CLIENT, op(owner, 10, release("a"))));
    assert_eq!(
        replies(&reused),
        vec![(CLIENT, refusal(10, ServiceError::SeqReused { seq: 10 }))],
        "while the preempt is still in the log"
    );
    assert_eq!(leader.log().last_index(), grant, "not appended next to it");
    let _ = commit_through(&mut leader, grant, now);
    for reuse in [release("a"), preempt("b")] {
        let outputs = leader.step(now, from_client(CLIENT, op(owner, 10, reuse)));
        assert_eq!(
            replies(&outputs),
            vec![(CLIENT, refusal(10, ServiceError::SeqReused { seq: 10 }))],
            "once applied"
        );
    }
    assert_eq!(
        leader.lock_table().holder("a"),
        Some(Holder {
            owner,
            token: grant
        })
    );
    assert_eq!(leader.lock_table().holder("b"), None);
}

/// Issue 10, item 7: a replayed answer is exactly the original, index included.
#[test]
fn a_retry_is_answered_with_the_index_of_the_original_answer() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let (mut leader, owner, grant) = leader_with_a_granted_lock(now);
    // The log moves on: another client registers.
    let _ = register(&mut leader, now);
    assert!(leader.last_applied() > grant);
    let retry = leader.step(now, from_client(CLIENT, op(owner, 1, preempt("a"))));
    let answers: Vec<&ClientReply> = retry
        .iter()
        .filter_map(|output| match output {
            ServerOutput::Reply { reply, .. } => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(
        answers,
        vec![&ClientReply {
            seq: 1,
            index: grant,
            term: 1,
            body: ReplyBody::Outcome(Outcome::Granted { token: grant }),
        }]
    );
}

/// Secrets come from the server's own seeded stream: the same seed issues the same secrets
/// (determinism), another seed others, and two registrations never share one.
#[test]
fn each_registration_gets_its_own_secret_from_the_seeded_stream() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let secrets_of = |seed: [u8; 32]| {
        let (mut leader, _) =
            Server::with_seed(config(S1, 1), DurableState::default(), seed, Time::ZERO);
        let _ = leader.step(now, timer(ServerTimer::Election));
        assert_eq!(leader.role(), Role::Leader, "a lone server elects itself");
        (1..=2)
            .map(|nonce| {
                let outputs = leader.step(now, from_client(CLIENT, hello(nonce)));
                match replies(&outputs).as_slice() {
                    [
                        (
                            _,
                            ClientReply {
                                body: ReplyBody::Welcome { secret, .. },
                                ..
                            },
                        ),
                    ] => *secret,
                    other => panic!("expected a welcome, got {other:?}"),
                }
            })
            .collect::<Vec<_>>()
    };
    let first = secrets_of([1; 32]);
    assert_ne!(first[0], first[1]);
    assert_eq!(secrets_of([1; 32]), first);
    assert_ne!(secrets_of([2; 32]), first);
}

/// A preempt of a held lock waits for a read round to be refused without a log entry. Its
/// client, meanwhile, sends a release under the same seq, which is appended. The preempt's
/// answer is then `seq_reused`, not the release's outcome.
#[test]
fn a_preempt_waiting_to_be_refused_whose_seq_was_reused_meanwhile_hears_seq_reused() {
    let now = ms(FIRST_ELECTION_MS + 10);
    let (mut leader, _, _) = leader_with_a_granted_lock(now);
    let bob = register(&mut leader, now);
    let waiting = leader.step(now, from_client(CLIENT, op(bob, 5, preempt("a"))));
    assert!(replies(&waiting).is_empty(), "waits for a confirming round");
    let round = match append_rounds(&waiting).as_slice() {
        [(S2, round), (S3, _)] => *round,
        other => panic!("expected a read round to both followers, got {other:?}"),
    };
    let reused = leader.step(now, from_client(CLIENT_AGAIN, op(bob, 5, release("a"))));
    assert!(
        replies(&reused).is_empty(),
        "appended: nothing says it is reused yet"
    );
    let release_index = leader.log().last_index();
    // The round is confirmed before the release commits: the release is still in the log.
    let confirmed = leader.step(now, peer(S2, append_ok(1, release_index - 1, round)));
    assert_eq!(
        replies(&confirmed),
        vec![(CLIENT, refusal(5, ServiceError::SeqReused { seq: 5 }))]
    );
    let committed = leader.step(now, peer(S2, append_ok(1, release_index, round)));
    assert_eq!(
        replies(&committed),
        vec![(CLIENT_AGAIN, outcome(5, Outcome::NotOwner))],
        "the release answers only itself"
    );
}

// ----- buggify and coverage -----

/// A server booted at time zero from an empty disk, with buggify at `chance`.
fn boot_buggified(id: ServerId, chance: f64) -> Server {
    let mut config = config(id, 3);
    config.buggify = Some(super::Buggify { seed: 11, chance });
    let (server, _) = Server::new(config, DurableState::default(), u64::from(id.0), Time::ZERO);
    server
}

/// Buggify at chance 0 takes no rare path: the same seed gives the same effects as without it.
#[test]
fn buggify_that_never_fires_changes_nothing() {
    let mut plain = boot(S2, 3);
    let mut quiet = boot_buggified(S2, 0.0);
    for (at, input) in [
        (10, peer(S1, append(1, (0, 0), noops(&[1, 1]), 1))),
        (20, peer(S3, request_vote(2, 2, 1))),
        (FIRST_ELECTION_MS * 3, timer(ServerTimer::Election)),
    ] {
        let ours = format!("{:?}", plain.step(ms(at), input.clone()));
        let theirs = format!("{:?}", quiet.step(ms(at), input));
        assert_eq!(ours, theirs);
    }
    assert_eq!(
        quiet
            .coverage()
            .count(crate::node::coverage::Branch::BuggifyResent),
        0
    );
}

/// At chance 1 every message goes out twice, as a network may duplicate it anyway, and the
/// coverage counters say so.
#[test]
fn buggify_that_always_fires_resends_every_message() {
    let mut follower = boot_buggified(S2, 1.0);
    let outputs = follower.step(ms(10), peer(S1, append(1, (0, 0), noops(&[1]), 0)));
    let messages = sent(&outputs);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], messages[1]);
    let coverage = follower.coverage();
    use crate::node::coverage::Branch;
    assert_eq!(coverage.count(Branch::BuggifyResent), 1);
    assert_eq!(coverage.count(Branch::AppendEntriesAppended), 1);
    assert_eq!(coverage.count(Branch::AppendEntriesHeartbeat), 0);
}

/// The coverage counters name the situation: a refused vote for a stale log is counted as
/// such, not as any refusal.
#[test]
fn coverage_counts_a_vote_refused_for_a_log_behind() {
    use crate::node::coverage::Branch;
    let mut voter = boot_from(S2, 3, disk(1, None, &[1, 1, 1]));
    let _ = voter.step(ms(500), peer(S3, request_vote(2, 1, 1)));
    assert_eq!(voter.coverage().count(Branch::VoteRefusedLogBehind), 1);
    assert_eq!(voter.coverage().count(Branch::VoteGranted), 0);
    let _ = voter.step(ms(501), peer(S1, request_vote(2, 3, 1)));
    assert_eq!(voter.coverage().count(Branch::VoteGranted), 1);
}

/// The leader's bound on reads waiting to be confirmed: past `pending_reads_max`, a preempt it
/// would refuse by read is answered `overloaded` at once (the client backs off and retries)
/// instead of growing the queue. The explorer never queues that many (see README's coverage
/// table), so this story is where the branch runs.
#[test]
fn past_the_pending_reads_bound_a_preempt_of_a_held_lock_is_answered_overloaded() {
    use crate::node::coverage::Branch;
    let now = ms(FIRST_ELECTION_MS + 10);
    let (mut leader, _, _) = leader_with_a_granted_lock(now);
    let bob = register(&mut leader, now);
    let bound = leader.config.pending_reads_max as u64;
    for seq in 2..2 + bound {
        let waiting = leader.step(now, from_client(CLIENT, op(bob, seq, preempt("a"))));
        assert!(replies(&waiting).is_empty(), "seq {seq} waits for its read");
    }
    let over = 2 + bound;
    let outputs = leader.step(now, from_client(CLIENT, op(bob, over, preempt("a"))));
    assert_eq!(
        replies(&outputs),
        vec![(CLIENT, refusal(over, ServiceError::Overloaded))]
    );
    assert!(persisted(&outputs).is_empty(), "nothing reaches the log");
    assert_eq!(leader.coverage().count(Branch::ProposeOverloaded), 1);
}

// ----- repair of a damaged log (protocol-aware recovery) -----

/// A disk whose log was found damaged and cut short: term 2, a vote for s1, entries of terms
/// [1, 1] left of what was [1, 1, 2].
fn damaged_disk() -> DurableState {
    DurableState {
        recovering: true,
        ..disk(2, Some(S1), &[1, 1])
    }
}

/// A server whose log was damaged may have lost entries it acknowledged, so its log no longer
/// speaks for them: it starts a term up (persisted before anything else), grants no pre-vote
/// and no vote, and never stands for election.
#[test]
fn a_server_repairing_a_damaged_log_starts_a_term_up_and_refuses_every_vote() {
    use crate::node::coverage::Branch;
    let (mut s3, outputs) = Server::new(config(S3, 3), damaged_disk(), 3, Time::ZERO);
    let raised = PersistOp::HardState {
        term: 3,
        voted_for: None,
        recovering: true,
    };
    assert_eq!(persisted(&outputs), vec![raised]);
    assert_eq!(
        position_of(&outputs, |o| matches!(o, ServerOutput::Persist(_))),
        0
    );
    assert!((s3.term(), s3.is_recovering()) == (3, true));

    // A candidate whose log is ahead of everything s3 holds still gets nothing.
    let outputs = s3.step(ms(400), peer(S1, pre_vote(4, 9, 3)));
    assert_eq!(sent(&outputs), vec![(S1, pre_vote_answer(3, false))]);
    let outputs = s3.step(ms(400), peer(S1, request_vote(4, 9, 3)));
    assert_eq!(sent(&outputs), vec![(S1, vote(4, false))]);
    let adopted = PersistOp::HardState {
        term: 4,
        voted_for: None,
        recovering: true,
    };
    assert_eq!(
        persisted(&outputs),
        vec![adopted],
        "the term, still repairing"
    );

    let outputs = s3.step(ms(2_000), timer(ServerTimer::Election));
    assert!(sent(&outputs).is_empty(), "no pre-vote asked for");
    assert_eq!(s3.role(), Role::Follower);
    assert!(
        timer_at(&outputs, ServerTimer::Election).is_some(),
        "waits on"
    );
    for branch in [
        Branch::RecoveryStarted,
        Branch::PreVoteRefusedRecovering,
        Branch::VoteRefusedRecovering,
        Branch::ElectionSkippedRecovering,
    ] {
        assert_eq!(s3.coverage().count(branch), 1, "{}", branch.name());
    }
}

/// The repair ends when the commit index reaches an entry of the repair's term or later: a
/// leader elected after the damage held every entry committed before it, and a follower only
/// commits what it verified against that leader's log. Until then, entries of older terms
/// arriving and committing do not end it.
#[test]
fn a_repair_ends_once_an_entry_of_a_term_after_the_damage_commits() {
    use crate::node::coverage::Branch;
    let (mut s3, _) = Server::new(config(S3, 3), damaged_disk(), 3, Time::ZERO);
    // s1 leads term 4 with [1, 1, 2, 4]; its first try does not match s3's shorter log.
    let outputs = s3.step(ms(10), peer(S1, append(4, (3, 2), noops(&[4]), 4)));
    assert_eq!(sent(&outputs), vec![(S1, append_refused(4, 3, None))]);
    let outputs = s3.step(ms(20), peer(S1, append(4, (2, 1), noops(&[2, 4]), 3)));
    assert_eq!(sent(&outputs), vec![(S1, append_ok(4, 4, 0))]);
    assert_eq!(s3.commit_index(), 3);
    assert!(
        s3.is_recovering(),
        "index 3 is of term 2, before the damage"
    );
    // Out of s1's lease, s2 asks for a vote in term 5 with a log like s1's.
    let outputs = s3.step(ms(400), peer(S2, request_vote(5, 4, 4)));
    assert_eq!(sent(&outputs), vec![(S2, vote(5, false))]);

    let outputs = s3.step(ms(410), peer(S1, append(4, (4, 4), vec![], 4)));
    assert!(
        s3.is_recovering(),
        "a stale term-4 message after term 5: no leader yet"
    );
    assert_eq!(sent(&outputs), vec![(S1, append_refused(5, 5, None))]);
    let outputs = s3.step(ms(420), peer(S2, append(5, (4, 4), noops(&[5]), 5)));
    assert!(!s3.is_recovering());
    assert_eq!(terms_of(&s3), vec![1, 1, 2, 4, 5]);
    let cleared = PersistOp::HardState {
        term: 5,
        voted_for: None,
        recovering: false,
    };
    assert_eq!(persisted(&outputs).last(), Some(&cleared));
    assert_eq!(s3.coverage().count(Branch::RecoveryCompleted), 1);
    let outputs = s3.step(ms(1_000), peer(S1, request_vote(6, 5, 5)));
    assert_eq!(sent(&outputs), vec![(S1, vote(6, true))], "votes again");
}

/// The test-only switch turns the rule off: the same damaged server votes at once. The
/// simulator's `acknowledged_writes_survive` test uses it to show what the rule prevents.
#[test]
fn with_the_unsafe_switch_a_repairing_server_votes_as_if_its_log_were_whole() {
    let mut unsafe_config = config(S3, 3);
    unsafe_config.unsafe_recovering_votes = true;
    let (mut s3, _) = Server::new(unsafe_config, damaged_disk(), 3, Time::ZERO);
    let outputs = s3.step(ms(400), peer(S1, request_vote(4, 2, 1)));
    assert_eq!(sent(&outputs), vec![(S1, vote(4, true))]);
}
// ----- helpers shared by the session and queue stories -----

/// The first index of `server`'s log whose entry `wanted` holds for.
fn find_entry(server: &Server, wanted: impl Fn(&Command) -> bool) -> Option<LogIndex> {
    let log = server.log();
    (log.base_index() + 1..=log.last_index())
        .find(|&index| log.entry(index).is_some_and(|entry| wanted(&entry.command)))
}

/// How many entries of `server`'s log `wanted` holds for.
fn count_entries(server: &Server, wanted: impl Fn(&Command) -> bool) -> usize {
    let log = server.log();
    (log.base_index() + 1..=log.last_index())
        .filter(|&index| log.entry(index).is_some_and(|entry| wanted(&entry.command)))
        .count()
}

/// Runs virtual time in `step_ms` steps until `done` holds, at most until `end`; returns the
/// time it first held.
fn run_until_true(
    network: &mut Network,
    end: Time,
    step_ms: u64,
    mut done: impl FnMut(&Network) -> bool,
) -> Option<Time> {
    while network.now < end {
        let next = (network.now + Duration::from_millis(step_ms)).min(end);
        network.run_until(next);
        if done(network) {
            return Some(network.now);
        }
    }
    None
}

/// Stories written to kill mutants that cargo-mutants found surviving (README, "Mutation
/// testing"), kept apart so that they read as one list.
#[path = "server_mutation_tests.rs"]
mod mutation_kills;
#[path = "watch_tests.rs"]
mod watch_tests;

#[path = "queue_tests.rs"]
mod queues;
#[path = "session_tests.rs"]
mod sessions;
#[path = "shared_tests.rs"]
mod shared;
#[path = "step_mutation_tests.rs"]
mod step_mutation_kills;
