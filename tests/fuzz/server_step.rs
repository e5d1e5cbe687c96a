//! Fuzz target for `Server::step` fed hostile client requests: what any process that reaches a
//! server's client port can do to a running cluster and to the other clients' locks.
//!
//! Each case builds a real cluster of 1 or 3 [`Server`]s on a tiny deterministic network
//! written here against the public API (messages delivered in order, timers fired in deadline
//! order, virtual time), elects a leader and registers one or two honest clients, which keep
//! the secrets their welcomes gave them. Then a program ([`Script`]) interleaves honest
//! operations (preempt, release and checks of two locks, each answered before the next) with
//! hostile requests sent to any server from connections of their own:
//! - seqs 0, `u64::MAX`, random, and the honest clients' last and next;
//! - terms and `seen_index` values 0, current, off by one, huge and random;
//! - client ids 0, honest, rogue (registered by a hostile hello), never issued, `u64::MAX`;
//! - secrets missing, random, another client's, and a rogue's own;
//! - lock names empty, at and over `LOCK_NAME_BYTES_MAX` in bytes, non-ASCII, random;
//! - hellos with random nonces, and verbatim replays of an honest client's earlier requests;
//! - request lines (mutated, or random bytes) through `decode_request` and
//!   `into_client_request` (a `status` line never reaches the node, so it is dropped).
//!
//! What must hold after every step, besides never panicking (the servers assert their own
//! invariants on every step):
//! - the first `Applied` output at each index equals what an independent `LockTable` gives for
//!   the same entry, and every other server's `Applied` at that index is identical;
//! - a replica whose applied index equals that independent table's holds the same locks;
//! - no reply to a hostile request is an `Outcome` for an honest client's id unless the request
//!   carried that client's secret, and no welcome to one names an honest id or secret;
//! - an entry that changes who holds a lock that an honest client holds or gets is that
//!   client's own request, with a seq, operation and lock it sent;
//! - after every operation, the locks the honest clients hold are exactly what their own
//!   answers said (a model), and every answer to an honest operation agrees with the lock table
//!   of the server that gave it.

use crate::harness::{self, Case, Materialized, Script, Target};
use lockstep::net::protocol::decode_request;
use lockstep::node::{
    ApplyResult, Claim, ClientAddr, ClientId, ClientReply, ClientRequest, ClientSecret, Command,
    Consistency, Entry, Holder, LOCK_NAME_BYTES_MAX, LockName, LockTable, LogIndex, Operation,
    Outcome, PeerMessage, ReplyBody, RequestBody, Role, Server, ServerConfig, ServerId,
    ServerInput, ServerOutput, ServerTimer, Term, Time, WriteKind,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The locks honest clients use. Hostile requests use them too, and others.
const LOCKS: [&str; 2] = ["a", "b"];
/// Operations a case runs at most, honest and hostile.
const OPERATIONS_MAX: usize = 24;
/// Peer messages one delivery round may carry before the network is declared runaway.
const DELIVERIES_MAX: usize = 20_000;
/// Timer firings one `advance` may do.
const FIRINGS_MAX: usize = 200;
/// Connections of honest clients; hostile requests come from 1000 up.
const HONEST_ADDRS: [ClientAddr; 2] = [ClientAddr(1), ClientAddr(2)];
const HOSTILE_ADDR_FIRST: u64 = 1000;
/// How long virtual time runs after each operation: two heartbeats, so that every replica
/// hears the leader's commit index and reads are confirmed.
const SETTLE: Duration = Duration::from_millis(120);

/// An honest client (connected as `HONEST_ADDRS[i]`): it keeps its secret, uses increasing seqs and waits for every answer.
#[derive(Clone, Debug)]
struct Honest {
    id: ClientId,
    secret: ClientSecret,
    seq: u64,
    seen_index: LogIndex,
    /// Every request it sent (for replays).
    requests: Vec<ClientRequest>,
}

impl Honest {
    /// Whether this client sent the write `(seq, kind, lock)`.
    fn sent(&self, seq: u64, kind: WriteKind, lock: &str) -> bool {
        self.requests.iter().any(|request| {
            let RequestBody::Op { op, .. } = &request.body else {
                return false;
            };
            let sent_kind = match op {
                Operation::Preempt { .. } => WriteKind::Preempt,
                Operation::Release { .. } => WriteKind::Release,
                Operation::Acquire { .. } => WriteKind::Acquire,
                Operation::Cancel { .. } => WriteKind::Cancel,
                Operation::Check { .. } => return false,
            };
            request.seq == seq && sent_kind == kind && **op.lock() == *lock
        })
    }
}

/// The honest operation waiting for its answer, and the answer once it came.
#[derive(Debug)]
struct Outstanding {
    client: usize,
    request: ClientRequest,
    /// The answer, the server that gave it and that server's holder of the lock then.
    answer: Option<(ClientReply, ServerId, Option<Holder>)>,
}

struct Cluster {
    now: Time,
    servers: BTreeMap<ServerId, Server>,
    timers: BTreeMap<(ServerId, ServerTimer), Time>,
    in_flight: VecDeque<(ServerId, ServerId, PeerMessage)>,
    honest: Vec<Honest>,
    outstanding: Option<Outstanding>,
    /// Locks the honest clients hold, by their own answers.
    model: BTreeMap<LockName, ClientId>,
    /// Hostile requests by connection.
    hostile: BTreeMap<ClientAddr, ClientRequest>,
    /// Credentials rogue clients got from their welcomes.
    rogues: Vec<(ClientId, ClientSecret)>,
    /// The first `Applied` seen at each index.
    applied: BTreeMap<LogIndex, (Entry, ApplyResult)>,
    /// An independent replica: every first `Applied` entry, applied again here.
    shadow: LockTable,
    /// Hello nonces for honest registrations.
    next_nonce: u64,
}

fn secret_hex(secret: &ClientSecret) -> String {
    secret.to_hex()
}

impl Cluster {
    /// Servers s1..=s`size` booted at time zero.
    fn new(size: u32) -> Cluster {
        let ids: Vec<ServerId> = (1..=size).map(ServerId).collect();
        let mut cluster = Cluster {
            now: Time::ZERO,
            servers: BTreeMap::new(),
            timers: BTreeMap::new(),
            in_flight: VecDeque::new(),
            honest: Vec::new(),
            outstanding: None,
            model: BTreeMap::new(),
            hostile: BTreeMap::new(),
            rogues: Vec::new(),
            applied: BTreeMap::new(),
            shadow: LockTable::new(),
            next_nonce: 77,
        };
        for &id in &ids {
            let config = ServerConfig::new(id, ids.clone());
            let durable = Default::default();
            let (server, outputs) = Server::new(config, durable, u64::from(id.0), Time::ZERO);
            cluster.servers.insert(id, server);
            cluster
                .carry_out(id, outputs)
                .expect("fuzz: booting changes no lock");
        }
        cluster
    }

    fn leader(&self) -> Option<ServerId> {
        let mut leaders = self
            .servers
            .values()
            .filter(|server| server.role() == Role::Leader);
        let leader = leaders.next()?;
        // Two leaders of different terms can coexist briefly; the highest term leads.
        let best = leaders.fold(leader, |best, other| {
            if other.term() > best.term() {
                other
            } else {
                best
            }
        });
        Some(best.id())
    }

    fn term(&self) -> Term {
        self.leader()
            .map_or(0, |leader| self.servers[&leader].term())
    }

    fn step(&mut self, id: ServerId, input: ServerInput) -> Result<(), String> {
        let server = self.servers.get_mut(&id).expect("fuzz: a server");
        let outputs = server.step(self.now, input);
        self.carry_out(id, outputs)?;
        self.check_replicas()
    }

    fn carry_out(&mut self, id: ServerId, outputs: Vec<ServerOutput>) -> Result<(), String> {
        for output in outputs {
            match output {
                ServerOutput::Persist(_) | ServerOutput::PersistSnapshot(_) => {}
                ServerOutput::Send { to, msg } => self.in_flight.push_back((id, to, msg)),
                ServerOutput::SetTimer { timer, at } => {
                    self.timers.insert((id, timer), at);
                }
                ServerOutput::Reply { to, reply } => self.on_reply(id, to, reply)?,
                ServerOutput::Applied {
                    index,
                    entry,
                    result,
                } => self.on_applied(id, index, entry, result)?,
                ServerOutput::Woken { .. } | ServerOutput::Watch { .. } => {}
            }
        }
        Ok(())
    }

    fn honest_id(&self, client: ClientId) -> Option<&Honest> {
        self.honest.iter().find(|honest| honest.id == client)
    }

    fn on_reply(
        &mut self,
        from: ServerId,
        to: ClientAddr,
        reply: ClientReply,
    ) -> Result<(), String> {
        if let Some(request) = self.hostile.get(&to) {
            if reply.seq != request.seq {
                return Err(format!("{from} answered {request:?} with {reply:?}"));
            }
            match (&request.body, &reply.body) {
                (RequestBody::Op { client, secret, .. }, ReplyBody::Outcome(_)) => {
                    if let Some(honest) = self.honest_id(*client)
                        && *secret != Some(honest.secret)
                    {
                        return Err(format!(
                            "{from} answered a hostile {request:?} for honest {client} with \
                             {reply:?}, though it did not carry that client's secret"
                        ));
                    }
                }
                (_, ReplyBody::Welcome { client, secret, .. }) => {
                    let leaked = self
                        .honest
                        .iter()
                        .any(|honest| honest.id == *client || honest.secret == *secret);
                    if leaked {
                        return Err(format!(
                            "{from} welcomed a hostile hello as an honest client: {client}"
                        ));
                    }
                    self.rogues.push((*client, *secret));
                }
                _ => {}
            }
            return Ok(());
        }
        let Some(outstanding) = &mut self.outstanding else {
            return Err(format!(
                "{from} sent {reply:?} to {to:?}, which asked nothing"
            ));
        };
        if to != HONEST_ADDRS[outstanding.client]
            || reply.seq != outstanding.request.seq
            || outstanding.answer.is_some()
        {
            return Err(format!(
                "{from} sent {reply:?} to {to:?} while {outstanding:?} waits"
            ));
        }
        let holder = match &outstanding.request.body {
            RequestBody::Op { op, .. } => self.servers[&from].lock_table().holder(op.lock()),
            RequestBody::Hello { .. } | RequestBody::Keepalive { .. } => None,
        };
        outstanding.answer = Some((reply, from, holder));
        Ok(())
    }

    /// Who among the honest clients holds which lock, in `table`.
    fn honest_locks(&self, table: &LockTable) -> BTreeMap<LockName, ClientId> {
        table
            .locks()
            .iter()
            .filter(|(_, holder)| self.honest_id(holder.owner).is_some())
            .map(|(lock, holder)| (lock.clone(), holder.owner))
            .collect()
    }

    fn on_applied(
        &mut self,
        from: ServerId,
        index: LogIndex,
        entry: Entry,
        result: ApplyResult,
    ) -> Result<(), String> {
        if let Some((first_entry, first_result)) = self.applied.get(&index) {
            if (first_entry, first_result) != (&entry, &result) {
                return Err(format!(
                    "{from} applied {entry:?} -> {result:?} at {index}, another replica \
                     {first_entry:?} -> {first_result:?}"
                ));
            }
            return Ok(());
        }
        if index != self.shadow.applied_index() + 1 {
            return Err(format!(
                "{from} applied index {index} first, after {}",
                self.shadow.applied_index()
            ));
        }
        let before = self.honest_locks(&self.shadow);
        let expected = self.shadow.apply(index, &entry.command);
        if expected != result {
            return Err(format!(
                "{from} applied {entry:?} at {index} as {result:?}, an independent replica as \
                 {expected:?}"
            ));
        }
        let after = self.honest_locks(&self.shadow);
        if before != after {
            let by_its_client = match &entry.command {
                Command::Preempt {
                    client, seq, lock, ..
                } => self
                    .honest_id(*client)
                    .is_some_and(|honest| honest.sent(*seq, WriteKind::Preempt, lock)),
                Command::Release { client, seq, lock } => self
                    .honest_id(*client)
                    .is_some_and(|honest| honest.sent(*seq, WriteKind::Release, lock)),
                Command::Acquire {
                    client, seq, lock, ..
                } => self
                    .honest_id(*client)
                    .is_some_and(|honest| honest.sent(*seq, WriteKind::Acquire, lock)),
                // These clients never acquire: nothing is ever queued to time out or hand over.
                Command::Cancel { .. } | Command::Timeout { .. } | Command::HandOver { .. } => {
                    false
                }
                Command::Noop
                | Command::Register { .. }
                | Command::Expire { .. }
                | Command::MarkSilent { .. }
                | Command::Revive { .. } => false,
            };
            if !by_its_client {
                return Err(format!(
                    "{entry:?} at {index} changed the honest clients' locks from {before:?} to \
                     {after:?}, and is no request of theirs"
                ));
            }
        }
        self.applied.insert(index, (entry, result));
        Ok(())
    }

    /// Replicas that applied as far as the independent one hold the same locks.
    fn check_replicas(&self) -> Result<(), String> {
        for server in self.servers.values() {
            let table = server.lock_table();
            if table.applied_index() == self.shadow.applied_index()
                && table.locks() != self.shadow.locks()
            {
                return Err(format!(
                    "{} holds {:?} at {}, an independent replica {:?}",
                    server.id(),
                    table.locks(),
                    table.applied_index(),
                    self.shadow.locks()
                ));
            }
        }
        Ok(())
    }

    /// Delivers every message in flight, and those they cause.
    fn deliver(&mut self) -> Result<(), String> {
        for _ in 0..DELIVERIES_MAX {
            let Some((from, to, msg)) = self.in_flight.pop_front() else {
                return Ok(());
            };
            self.step(to, ServerInput::Peer { from, msg })?;
        }
        Err(format!("more than {DELIVERIES_MAX} messages in one round"))
    }

    /// Runs virtual time forward by `span`: fires the timers due, in deadline order, and
    /// delivers everything after each.
    fn advance(&mut self, span: Duration) -> Result<(), String> {
        self.deliver()?;
        let end = self.now + span;
        for _ in 0..FIRINGS_MAX {
            let due = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= end)
                .min_by_key(|((id, timer), at)| (**at, *id, *timer))
                .map(|(key, at)| (*key, *at));
            let Some(((id, timer), at)) = due else {
                self.now = end;
                return Ok(());
            };
            self.timers.remove(&(id, timer));
            self.now = self.now.max(at);
            self.step(id, ServerInput::Timer(timer))?;
            self.deliver()?;
        }
        Err(format!("more than {FIRINGS_MAX} timer firings in {span:?}"))
    }

    /// Sends an honest request and runs the cluster until it is answered.
    fn ask(
        &mut self,
        client: usize,
        to: ServerId,
        request: ClientRequest,
    ) -> Result<ClientReply, String> {
        let addr = HONEST_ADDRS[client];
        if let Some(honest) = self.honest.get_mut(client) {
            honest.requests.push(request.clone());
        }
        self.outstanding = Some(Outstanding {
            client,
            request: request.clone(),
            answer: None,
        });
        self.step(
            to,
            ServerInput::Client {
                from: addr,
                request: request.clone(),
            },
        )?;
        // Bounded: a few heartbeats at most.
        for _ in 0..10 {
            if self
                .outstanding
                .as_ref()
                .is_some_and(|o| o.answer.is_some())
            {
                break;
            }
            self.advance(Duration::from_millis(20))?;
        }
        let outstanding = self.outstanding.take().expect("fuzz: outstanding");
        let Some((reply, from, holder)) = outstanding.answer else {
            return Err(format!("no answer to honest {request:?} sent to {to}"));
        };
        self.check_answer(client, &request, &reply, from, holder)?;
        self.settle()?;
        Ok(reply)
    }

    /// Lets every replica catch up, then compares the honest locks with the model.
    fn settle(&mut self) -> Result<(), String> {
        self.advance(SETTLE)?;
        let honest_locks = self.honest_locks(&self.shadow);
        if honest_locks != self.model {
            return Err(format!(
                "the honest clients hold {honest_locks:?}, their answers say {:?}",
                self.model
            ));
        }
        Ok(())
    }

    /// The answer to an honest operation is what the lock table says, and it updates the
    /// model of what the honest clients hold.
    fn check_answer(
        &mut self,
        client: usize,
        request: &ClientRequest,
        reply: &ClientReply,
        from: ServerId,
        holder: Option<Holder>,
    ) -> Result<(), String> {
        let RequestBody::Op { op, .. } = &request.body else {
            return Ok(());
        };
        let me = self.honest[client].id;
        let honest = &mut self.honest[client];
        honest.seen_index = honest.seen_index.max(reply.index);
        let ReplyBody::Outcome(outcome) = reply.body else {
            return Err(format!(
                "honest {request:?} to {from} was answered {reply:?}"
            ));
        };
        let lock = op.lock().clone();
        let modelled = self.model.get(&lock).copied();
        let fits = match (op, outcome) {
            (Operation::Preempt { .. }, Outcome::Granted { token }) => {
                let fits = holder == Some(Holder { owner: me, token })
                    && modelled.is_none_or(|owner| owner == me);
                self.model.insert(lock, me);
                fits
            }
            (Operation::Preempt { .. }, Outcome::HeldBy { owner }) => {
                owner != me
                    && holder.is_some_and(|holder| holder.owner == owner)
                    && modelled == self.honest_id(owner).map(|honest| honest.id)
            }
            (Operation::Release { .. }, Outcome::Released) => {
                let fits = modelled == Some(me) && holder.is_none_or(|holder| holder.owner != me);
                self.model.remove(&lock);
                fits
            }
            (Operation::Release { .. }, Outcome::NotOwner) => {
                modelled != Some(me) && holder.is_none_or(|holder| holder.owner != me)
            }
            (Operation::Check { .. }, Outcome::Free) => holder.is_none() && modelled.is_none(),
            (Operation::Check { .. }, Outcome::Owner { owner, token }) => {
                holder == Some(Holder { owner, token })
                    && modelled == self.honest_id(owner).map(|honest| honest.id)
            }
            _ => false,
        };
        if !fits {
            return Err(format!(
                "honest {request:?} to {from} was answered {outcome:?}; that server's table \
                 says {holder:?}, the honest clients' answers {modelled:?}"
            ));
        }
        Ok(())
    }

    /// A hostile request from a connection of its own to `to`, and a while to run.
    fn hostile(&mut self, to: ServerId, request: ClientRequest) -> Result<(), String> {
        let addr = ClientAddr(HOSTILE_ADDR_FIRST + self.hostile.len() as u64);
        self.hostile.insert(addr, request.clone());
        self.step(
            to,
            ServerInput::Client {
                from: addr,
                request,
            },
        )?;
        self.settle()
    }

    /// Elects a leader and registers `clients` honest clients.
    fn start(size: u32, clients: usize) -> Result<Cluster, String> {
        let mut cluster = Cluster::new(size);
        // Bounded: the first election ends within a few election timeouts.
        for _ in 0..10 {
            cluster.advance(Duration::from_millis(300))?;
            if cluster.leader().is_some() {
                break;
            }
        }
        let Some(leader) = cluster.leader() else {
            return Err("no leader elected".into());
        };
        for client in 0..clients {
            cluster.next_nonce += 1;
            let request = ClientRequest {
                seq: 1,
                seen_index: 0,
                term: cluster.term(),
                body: RequestBody::Hello {
                    nonce: cluster.next_nonce,
                    ttl_ms: None,
                },
            };
            let reply = cluster.ask(client, leader, request.clone())?;
            let ReplyBody::Welcome {
                client: id, secret, ..
            } = reply.body
            else {
                return Err(format!("hello answered {reply:?}"));
            };
            cluster.honest.push(Honest {
                id,
                secret,
                seq: 1,
                seen_index: reply.index,
                requests: vec![request],
            });
        }
        Ok(cluster)
    }

    fn server_ids(&self) -> Vec<ServerId> {
        self.servers.keys().copied().collect()
    }
}

fn random_secret(script: &mut Script<'_>) -> ClientSecret {
    ClientSecret::from_bytes(script.bytes(16).try_into().unwrap())
}

fn hostile_lock(script: &mut Script<'_>) -> LockName {
    let name = match script.byte() % 10 {
        0 | 1 => LOCKS[0].to_string(),
        2 => LOCKS[1].to_string(),
        3 => String::new(),
        4 => "x".repeat(LOCK_NAME_BYTES_MAX),
        5 => "x".repeat(LOCK_NAME_BYTES_MAX + 1),
        6 => "\u{e9}".repeat(LOCK_NAME_BYTES_MAX / 2),
        7 => "\u{e9}".repeat(LOCK_NAME_BYTES_MAX / 2 + 1),
        8 => "a\0".to_string(),
        _ => script.text(LOCK_NAME_BYTES_MAX + 8),
    };
    LockName::from(name)
}

fn hostile_operation(script: &mut Script<'_>) -> Operation {
    let lock = hostile_lock(script);
    match script.byte() % 4 {
        0 => Operation::Preempt {
            lock,
            claim: Claim::EXCLUSIVE,
        },
        1 => Operation::Release { lock },
        2 => Operation::Check {
            lock,
            consistency: Consistency::Local,
        },
        _ => Operation::Check {
            lock,
            consistency: Consistency::Linearizable,
        },
    }
}

/// A well-formed request whose every field the rogue chose.
fn hostile_request(cluster: &Cluster, script: &mut Script<'_>) -> ClientRequest {
    let honest = script.pick(&cluster.honest).clone();
    let rogue = cluster.rogues.last().copied();
    let issued = cluster.shadow.client_count();
    let seq = match script.byte() % 6 {
        0 => 0,
        1 => u64::MAX,
        2 => honest.seq,
        3 => honest.seq + 1,
        4 => 1,
        _ => script.u64(),
    };
    let term = match script.byte() % 6 {
        0 => 0,
        1 | 2 => cluster.term(),
        3 => cluster.term() + 1,
        4 => u64::MAX,
        _ => script.u64(),
    };
    let applied = cluster.shadow.applied_index();
    let seen_index = match script.byte() % 5 {
        0 | 1 => 0,
        2 => applied,
        3 => u64::MAX,
        _ => script.u64() % (applied + 1_000_000),
    };
    if script.byte() % 8 == 7 {
        return ClientRequest {
            seq,
            seen_index,
            term,
            body: RequestBody::Hello {
                nonce: script.u64(),
                ttl_ms: None,
            },
        };
    }
    let client = match script.byte() % 8 {
        0 | 1 => honest.id,
        2 => ClientId(0),
        3 => rogue.map_or(ClientId(issued + 1), |(id, _)| id),
        4 => ClientId(issued + 1),
        5 => ClientId(u64::MAX),
        6 => ClientId(issued + 1 + u64::from(script.byte())),
        _ => ClientId(script.u64()),
    };
    let other_honest = cluster
        .honest
        .iter()
        .find(|other| other.id != client)
        .map(|other| other.secret);
    let secret = match script.byte() % 5 {
        0 => None,
        1 => Some(random_secret(script)),
        2 => other_honest.or_else(|| rogue.map(|(_, secret)| secret)),
        // The rogue's own secret: right for its own id, wrong for anyone else's.
        3 => rogue.map(|(_, secret)| secret),
        _ => {
            // The honest client's secret with one bit flipped.
            let mut hex = secret_hex(&honest.secret).into_bytes();
            let at = usize::from(script.byte()) % hex.len();
            hex[at] = if hex[at] == b'0' { b'1' } else { b'0' };
            ClientSecret::parse_hex(std::str::from_utf8(&hex).unwrap()).ok()
        }
    };
    // Never the very credential of an honest client: that is a replay, below.
    let secret = match (cluster.honest_id(client), secret) {
        (Some(owner), Some(given)) if owner.secret == given => None,
        (_, secret) => secret,
    };
    ClientRequest {
        seq,
        seen_index,
        term,
        body: RequestBody::Op {
            client,
            secret,
            op: hostile_operation(script),
        },
    }
}

/// A request line, from a template with the rogue's choices or from random bytes, through the
/// wire codec; `None` when it does not decode.
fn hostile_line(cluster: &Cluster, script: &mut Script<'_>) -> Option<ClientRequest> {
    let honest = script.pick(&cluster.honest).clone();
    let mut line = if script.byte().is_multiple_of(4) {
        let length = usize::from(script.byte());
        script.bytes(length)
    } else {
        let op = *script.pick(&["preempt", "release", "check", "hello"]);
        let secret = match script.byte() % 3 {
            0 => format!(",\"secret\":\"{}\"", secret_hex(&random_secret(script))),
            1 => String::new(),
            _ => format!(",\"secret\":\"{}\"", "0".repeat(32)),
        };
        format!(
            "{{\"seq\":{},\"op\":\"{op}\",\"version\":2,\"client\":{}{secret},\"lock\":\"{}\",\
             \"term\":{},\"seen_index\":{}}}",
            script.u64() % 100,
            honest.id.0,
            LOCKS[usize::from(script.byte()) % 2],
            cluster.term(),
            script.byte(),
        )
        .into_bytes()
    };
    // A few bytes overwritten.
    for _ in 0..script.byte() % 4 {
        if line.is_empty() {
            break;
        }
        let at = usize::from(script.byte()) % line.len();
        line[at] = script.byte();
    }
    decode_request(&line)
        .ok()
        .and_then(|request| request.into_client_request())
}

/// An honest client's next operation.
fn honest_operation(cluster: &mut Cluster, script: &mut Script<'_>) -> Result<(), String> {
    let client = usize::from(script.byte()) % cluster.honest.len();
    let lock = LockName::from(*script.pick(&LOCKS));
    let op = match script.byte() % 5 {
        0 | 1 => Operation::Preempt {
            lock,
            claim: Claim::EXCLUSIVE,
        },
        2 | 3 => Operation::Release { lock },
        choice => Operation::Check {
            lock,
            consistency: if choice % 2 == 0 {
                Consistency::Local
            } else {
                Consistency::Linearizable
            },
        },
    };
    let Some(leader) = cluster.leader() else {
        return Err("no leader".into());
    };
    // Writes go to the leader; checks to any server, which must have caught up.
    let to = if op.is_write() {
        leader
    } else {
        *script.pick(&cluster.server_ids())
    };
    let term = cluster.term();
    let honest = &mut cluster.honest[client];
    honest.seq += 1;
    let request = ClientRequest {
        seq: honest.seq,
        seen_index: honest.seen_index,
        term,
        body: RequestBody::Op {
            client: honest.id,
            secret: Some(honest.secret),
            op,
        },
    };
    cluster.ask(client, to, request).map(|_| ())
}

fn check_case(_case: &Case, materialized: &Materialized) -> Result<(), String> {
    let mut script = Script::new(&materialized.bytes);
    let header = script.byte();
    let size = if header & 1 == 0 { 1 } else { 3 };
    let clients = if header & 2 == 0 { 1 } else { 2 };
    let mut cluster = Cluster::start(size, clients)?;
    let mut operations = 0;
    while !script.is_done() && operations < OPERATIONS_MAX {
        operations += 1;
        let to = *script.pick(&cluster.server_ids());
        match script.byte() % 8 {
            0 | 1 => honest_operation(&mut cluster, &mut script)?,
            2..=5 => {
                let request = hostile_request(&cluster, &mut script);
                cluster.hostile(to, request)?;
            }
            6 => {
                if let Some(request) = hostile_line(&cluster, &mut script) {
                    cluster.hostile(to, request)?;
                }
            }
            _ => {
                // A verbatim replay of an honest client's earlier request: it carries the
                // secret, and must change nothing.
                let honest = script.pick(&cluster.honest).clone();
                let request = script.pick(&honest.requests).clone();
                cluster.hostile(to, request)?;
            }
        }
    }
    Ok(())
}

/// Scripts: honest work alone, and honest work mixed with each kind of hostile request.
fn corpus() -> Vec<Vec<u8>> {
    let mut corpus = Vec::new();
    for header in 0..4u8 {
        // Honest: preempt a, check a, release a, preempt b by the second client.
        corpus.push(vec![
            header, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 2, 0, 0, 1, 1, 0,
        ]);
        // A hostile release of the honest lock with a wrong secret, then a hostile preempt,
        // then a line, then a replay.
        corpus.push(vec![
            header, 0, 0, 0, 0, 0, 0, 2, 0, 3, 1, 0, 0, 1, 1, 2, 1, 0, 1, 1, 0, 3, 0, 0, 2, 0, 0,
            2, 0, 0, 0, 1, 0, 0, 0, 6, 0, 1, 0, 0, 0, 7, 7, 0, 1,
        ]);
    }
    corpus
}

#[test]
fn server_step() {
    // The honest part of the corpus runs clean and answers as expected.
    let mut cluster = Cluster::start(3, 2).unwrap();
    let leader = cluster.leader().unwrap();
    let honest = cluster.honest[0].clone();
    let preempt = ClientRequest {
        seq: 2,
        seen_index: honest.seen_index,
        term: cluster.term(),
        body: RequestBody::Op {
            client: honest.id,
            secret: Some(honest.secret),
            op: Operation::Preempt {
                lock: LockName::from("a"),
                claim: Claim::EXCLUSIVE,
            },
        },
    };
    let reply = cluster.ask(0, leader, preempt.clone()).unwrap();
    assert!(matches!(
        reply.body,
        ReplyBody::Outcome(Outcome::Granted { .. })
    ));
    // A forged release by the second client's secret is refused and changes nothing.
    let forged = ClientRequest {
        seq: 3,
        body: RequestBody::Op {
            client: honest.id,
            secret: Some(cluster.honest[1].secret),
            op: Operation::Release {
                lock: LockName::from("a"),
            },
        },
        ..preempt
    };
    cluster.hostile(leader, forged).unwrap();
    assert_eq!(cluster.model.len(), 1);
    assert!(cluster.applied.len() >= 4, "{:?}", cluster.applied);
    let corpus = corpus();
    let target = Target {
        name: "server_step",
        corpus: &corpus,
        random_bytes_max: 320,
        random_prefix: &[3],
        dictionary: &["\0\0\0\0", "\u{2}", "\u{7}\0", "\u{6}\u{1}"],
    };
    harness::fuzz(&target, check_case);
}
