//! The simulated cluster: server and client state machines, their disks, the network between
//! them, and the checkers watching every step.
//!
//! The cluster is the simulator's driver for `node`: it feeds inputs with the simulated time,
//! carries out every effect in order (persist before send), routes messages through
//! [`SimNetwork`], and schedules deliveries and timers on the event queue. It never decides
//! anything the protocol should decide.
//!
//! It follows the node contract to the letter and no further: effects are carried out one at a
//! time, in order, and a crash may fall between any two of them ([`Action::CrashInStep`]). A
//! `Persist` is written to the server's [`SimDisk`] when it is carried out and synced before the
//! first later effect that is not a persist (group commit); a message leaves only when its
//! `Send` is carried out. Whatever the protocol sends before the state it depends on is durable,
//! a crash here can lose.
//!
//! [`Action::CrashInStep`]: super::scenario::Action::CrashInStep

use super::checkers::{
    self, ElectionSafety, MutualExclusion, RogueIsolation, StateMachineSafety, Violation,
};
use super::clock::{NodeClock, RATE_ONE_PPB};
use super::disk::{DiskFaults, Recovery, SimDisk};
use super::durability::{ACKNOWLEDGED_WRITES_SURVIVE, AcknowledgedWrites, FinalReplica};
use super::queue::{EventQueue, QueueFull};
use super::resource::{FencedResource, FencedWrites, ResourceWrite, WriteVerdict};
use super::rng::{Stream, Streams};
use super::rogue::{
    AttackKind, Rogue, RogueSpec, RogueWatch, RogueWatchLine, Sent, WATCH_CONNECTION,
};
use super::session_expiry::SessionExpiry;
use super::trace::{Payload, Recorder, TraceEvent};
use crate::net::{Endpoint, NetworkParams, SimNetwork, Transmission};
use crate::node::client::Client;
use crate::node::coverage::Coverage;
use crate::node::server::Buggify;
use crate::node::watch::{WatchCredential, WatchInput, WatchReply};
use crate::node::{
    Claim, ClientAddr, ClientConfig, ClientError, ClientId, ClientInput, ClientOutput, ClientReply,
    ClientTimer, LockName, LogIndex, Operation, Outcome, PeerMessage, PersistOp, ReplyBody,
    RequestBody, Role, Server, ServerConfig, ServerId, ServerInput, ServerOutput, ServerTimer,
    Time,
};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::time::Duration;

thread_local! {
    /// True while this thread runs a node step inside `catch_unwind`.
    static IN_NODE_STEP: Cell<bool> = const { Cell::new(false) };
}

/// Runs a node step, catching a failed invariant assertion so that the run reports it as a
/// `node_assertion` violation instead of crashing.
fn node_step<R>(step: impl FnOnce() -> R) -> std::thread::Result<R> {
    install_quiet_node_panics();
    IN_NODE_STEP.with(|flag| flag.set(true));
    let result = catch_unwind(AssertUnwindSafe(step));
    IN_NODE_STEP.with(|flag| flag.set(false));
    result
}

/// A node's failed assertion is reported in the run's verdict, with its message; printing it
/// to stderr as well (as the default panic hook does) would scatter it across progress output.
/// Every other panic still goes to the previous hook.
fn install_quiet_node_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_NODE_STEP.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Everything that can be scheduled on the simulation's event queue.
#[derive(Clone, Debug)]
pub enum Event {
    Deliver {
        from: Endpoint,
        to: Endpoint,
        incarnation: u32,
        /// The rogue connection a rogue's request came from or a reply goes back to: each
        /// rogue request has its own, as if it opened a connection per request.
        connection: Option<u32>,
        payload: Payload,
    },
    /// A rogue client sends its next hostile request.
    RogueAttack(u32),
    ServerTimer {
        server: u32,
        timer: ServerTimer,
        incarnation: u32,
    },
    ClientTimer {
        client: u32,
        timer: ClientTimer,
    },
    /// A scenario event, by position in `Scenario::events`.
    Script(usize),
    /// Restart a server that a crash inside a step took down, if it is still down from that
    /// crash (`incarnation` is the one the crash ended).
    RestartAfterCrash {
        server: u32,
        incarnation: u32,
    },
    /// A workload client is ready for its next random operation.
    WorkloadNext(u32),
    /// A paused node's pause may be over: it acts on what waited for it.
    Resume(Endpoint),
    /// A client's write reaches the fenced resource.
    ResourceWrite(ResourceWrite),
    /// The scenario's duration is over.
    EndOfDuration,
    /// Periodic check, after the duration, of whether the run has settled.
    SettleCheck,
    /// A watcher acknowledges what it heard and looks at its connection (`sim::watch`).
    WatchTick(u32),
}

/// How the cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub servers: u32,
    pub clients: u32,
    pub initial_leader: Option<ServerId>,
    /// Client number -> first server. Must name every client.
    pub connect: BTreeMap<u32, ServerId>,
    pub network: NetworkParams,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub client_retry: Duration,
    pub append_batch: usize,
    /// Applied entries a server keeps before it snapshots and compacts its log; `None` never.
    pub snapshot_entries: Option<u64>,
    /// Rogue clients `r1..rN`, which attack once [`Cluster::start_rogues`] is called.
    pub rogues: Option<RogueSpec>,
    /// How the servers' disks misbehave.
    pub disk: DiskFaults,
    /// BUGGIFY's chance per decision point in every server; `None`: off.
    pub buggify: Option<f64>,
    /// `clock: {drift: D}`: every server and client reads its own clock, at a rate drawn
    /// within 1 ± D and from an offset drawn within the first hour. `None`: every node reads
    /// true time, as before clocks existed.
    pub clock_drift: Option<f64>,
    /// Checkers whose violations the scenario expects: recorded, and the run goes on.
    pub expected_violations: BTreeSet<&'static str>,
    /// Every client's session TTL (`sessions.ttl`); `None`: sessions never expire.
    pub session_ttl: Option<Duration>,
    /// Every server's lock-delay (`sessions.lock_delay`).
    pub lock_delay: Duration,
    /// Tests only: servers repairing a damaged log vote anyway (see `RunOptions`).
    pub unsafe_recovering_votes: bool,
}

/// A client's later sessions are named in histories by its number plus this, once per
/// session before: above every scenario client number ([`super::scenario::CLIENTS_MAX`]).
pub const SESSION_NAME_STRIDE: u32 = 1_000;

/// Client addresses of rogue requests have this bit set, the rogue number in bits 32..63 and
/// the connection number below: honest clients' addresses are their small client numbers.
const ROGUE_ADDRESS_BIT: u64 = 1 << 63;

fn rogue_address(rogue: u32, connection: u32) -> ClientAddr {
    ClientAddr(ROGUE_ADDRESS_BIT | (u64::from(rogue) << 32) | u64::from(connection))
}

/// The (rogue, connection) of a rogue address, `None` for an honest client's.
fn rogue_of(address: ClientAddr) -> Option<(u32, u32)> {
    if address.0 & ROGUE_ADDRESS_BIT == 0 {
        return None;
    }
    let rogue = ((address.0 & !ROGUE_ADDRESS_BIT) >> 32) as u32;
    Some((rogue, address.0 as u32))
}

/// What the rogues did, for the summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RogueStats {
    /// Requests sent, per attack kind (`hello` for their own registrations).
    pub sent: BTreeMap<&'static str, u64>,
    /// Answers received: refusals and other errors, welcomes, outcomes.
    pub errors: u64,
    pub welcomes: u64,
    pub outcomes: u64,
    /// Watch lines: refusals of rogues' watches, other lines to them (starts, events, ends),
    /// and rogue watch lines that found their server down or cut off.
    #[serde(skip_serializing_if = "is_zero")]
    pub watch_refusals: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub watch_lines: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub watch_lines_lost: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// The rogues and what watches them.
struct Rogues {
    spec: RogueSpec,
    rogues: Vec<Rogue>,
    /// Fates of rogue traffic, apart from the network's own stream.
    network_rng: ChaCha8Rng,
    /// Rogues send nothing from this time on.
    until: Time,
    isolation: RogueIsolation,
    stats: RogueStats,
}

/// Counters for the run summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NetworkStats {
    pub sent: u64,
    pub delivered: u64,
    /// Lost at random.
    pub dropped: u64,
    /// Stopped by a partition, isolation or cut (at send time or in flight).
    pub blocked: u64,
    /// Lost because the target crashed while they were in flight.
    pub lost_to_crash: u64,
    pub duplicated: u64,
}

/// What a client reported, for the runner to act on.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    Started {
        client: u32,
        tag: u64,
        seq: u64,
    },
    /// The client stopped believing in its session (its lease ran out, or a server said
    /// `session_expired`): it believes it holds nothing any more.
    SessionLost {
        client: u32,
    },
    Completed {
        client: u32,
        tag: u64,
        result: Result<Outcome, ClientError>,
        /// The log index the answer reflects, if there was an answer.
        index: Option<LogIndex>,
    },
}

struct ServerSlot {
    config: ServerConfig,
    node: Option<Server>,
    disk: SimDisk,
    incarnation: u32,
    /// Current deadline per timer (Election, Heartbeat); stale queue entries are skipped.
    timers: [Option<Deadline>; 2],
    /// What the server believes the time is; it survives crashes, as a machine's clock does.
    clock: NodeClock,
    pause: Pause,
    last_role: Option<(Role, u64)>,
    /// An armed crash inside a step.
    crash_in_step: Option<ArmedCrash>,
    /// Why the server refused to start from its disk (corruption in the middle of its log).
    /// It stays down for good.
    refused: Option<String>,
}

/// A crash inside a step waiting for its step: the next one with more than `after_effects`
/// effects is cut after exactly that many; the server restarts `restart_after` later, if set.
#[derive(Copy, Clone, Debug)]
struct ArmedCrash {
    after_effects: u32,
    restart_after: Option<Duration>,
}

/// A timer's deadline on its node's own clock, and the true time its clock reaches it (which
/// a rate change moves).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Deadline {
    local: Time,
    at: Time,
}

/// A node frozen the way a GC pause or SIGSTOP freezes a process: it takes no steps, its
/// timers do not fire, and what arrives for it waits, in order, until `until`.
#[derive(Clone, Debug, Default)]
struct Pause {
    until: Option<Time>,
    held: VecDeque<Held>,
}

/// Something that arrived for a paused node.
#[derive(Clone, Debug)]
enum Held {
    Message {
        from: Endpoint,
        incarnation: u32,
        connection: Option<u32>,
        payload: Payload,
    },
    /// A write to the fenced resource that a paused client was about to send: it leaves when
    /// the client wakes, with the token it held before it slept.
    Write {
        id: ClientId,
        lock: LockName,
        token: LogIndex,
        script: Option<usize>,
    },
    /// A keepalive the scenario asked a paused client for.
    Keepalive,
    /// An operation the application handed a paused client.
    Invoke {
        tag: u64,
        op: Operation,
        timeout: Option<Duration>,
    },
}

/// Most messages and operations that wait for one paused node; more are dropped, as a full
/// socket buffer drops them, and counted.
const HELD_MAX: usize = 100_000;

impl Pause {
    fn is_paused(&self, now: Time) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

/// What [`Cluster::restart`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    /// The server was down and started from its disk.
    Started,
    /// The server was running; nothing happened.
    Running,
    /// The server's disk is corrupt in the middle of its log: it does not start, now or later.
    Refused(String),
}

struct ClientSlot {
    node: Client,
    timers: [Option<Deadline>; 4],
    clock: NodeClock,
    pause: Pause,
    /// The operation each running tag performs and its seq, to feed acknowledgements to the
    /// mutual-exclusion checker.
    running: Option<(u64, u64)>,
    ops: BTreeMap<u64, Operation>,
}

pub struct Cluster {
    pub queue: EventQueue<Event>,
    streams: Streams,
    network: SimNetwork,
    servers: Vec<ServerSlot>,
    clients: Vec<ClientSlot>,
    election_safety: ElectionSafety,
    state_machine_safety: StateMachineSafety,
    mutual_exclusion: MutualExclusion,
    acknowledged_writes: AcknowledgedWrites,
    pub recorder: Recorder,
    pub network_stats: NetworkStats,
    /// The run's watchers (`sim::watch`); none unless the scenario watches.
    pub watchers: super::watch::SimWatchers,
    /// Observations fed to the checkers, for the summary.
    pub checks_performed: BTreeMap<&'static str, u64>,
    pub max_term: u64,
    /// Leaders seen, in order of first appearance: (when, term, server).
    pub leaders: Vec<(Time, u64, ServerId)>,
    client_numbers: BTreeMap<ClientId, u32>,
    /// Per cluster-assigned id: which of its client's sessions it is (0 for the first).
    session_ordinals: BTreeMap<ClientId, u32>,
    /// The id each client's requests carried, by (client, seq): an operation is the act of
    /// the session it was sent under.
    request_identity: BTreeMap<(u32, u64), ClientId>,
    pub client_events: Vec<ClientEvent>,
    violation: Option<Violation>,
    /// See [`ClusterSpec::expected_violations`].
    expected_violations: BTreeSet<&'static str>,
    /// The first violation of each expected checker, in the order they came.
    expected_seen: BTreeMap<&'static str, Violation>,
    pub events_processed: u64,
    rogues: Option<Rogues>,
    disk_faults: DiskFaults,
    /// Tears and corruption, apart from every other stream.
    disk_rng: ChaCha8Rng,
    /// BUGGIFY's chance per decision point in every server incarnation; `None`: off.
    buggify: Option<f64>,
    session_ttl: Option<Duration>,
    /// `session_expiry`, in runs with sessions.
    session_expiry: Option<SessionExpiry>,
    /// Faults the cluster applied on its own (a crash inside a step firing, what a recovery
    /// repaired or refused), for the runner's fault list. Already in the trace.
    fault_notes: Vec<(Time, String)>,
    /// The protocol branches taken by server incarnations that are gone (crashed); see
    /// [`Cluster::coverage`].
    coverage_of_the_gone: Coverage,
    /// Sessions the cluster expired, as first committed: when, whose, and the locks each
    /// expiry freed (by the reference model), for the history.
    pub expiries: Vec<(Time, ClientId, Vec<LockName>)>,
    /// What the locks protect, and the checker that judges it.
    pub resource: FencedResource,
    /// What the resource said to each scripted write that reached it, by its number.
    pub scripted_write_verdicts: BTreeMap<usize, WriteVerdict>,
    fenced_writes: FencedWrites,
    /// Latencies of writes to the resource, apart from every other stream.
    resource_rng: ChaCha8Rng,
}

/// Every server timer, in slot order: what a wake-up or a clock change walks through.
const SERVER_TIMERS: [ServerTimer; 2] = [ServerTimer::Election, ServerTimer::Heartbeat];
/// Every client timer, in slot order.
const CLIENT_TIMERS: [ClientTimer; 4] = [
    ClientTimer::Retry,
    ClientTimer::OperationTimeout,
    ClientTimer::Keepalive,
    ClientTimer::LeaseEnd,
];

fn timer_slot(timer: ServerTimer) -> usize {
    match timer {
        ServerTimer::Election => 0,
        ServerTimer::Heartbeat => 1,
    }
}

fn client_timer_slot(timer: ClientTimer) -> usize {
    match timer {
        ClientTimer::Retry => 0,
        ClientTimer::OperationTimeout => 1,
        ClientTimer::Keepalive => 2,
        ClientTimer::LeaseEnd => 3,
    }
}

/// Every server's clock, then every client's: perfect ones without `clock_drift`; with it,
/// rates within 1 ± drift and offsets within the first hour, from their own stream.
fn draw_clocks(spec: &ClusterSpec, streams: &Streams) -> Vec<NodeClock> {
    let nodes = (spec.servers + spec.clients) as usize;
    let Some(drift) = spec.clock_drift else {
        return vec![NodeClock::default(); nodes];
    };
    let mut rng = streams.rng_for(Stream::Clock);
    let spread_ppb = (drift * RATE_ONE_PPB as f64).round() as u64;
    (0..nodes)
        .map(|_| {
            let rate_ppb = rng.random_range(RATE_ONE_PPB - spread_ppb..=RATE_ONE_PPB + spread_ppb);
            let offset = Duration::from_nanos(rng.random_range(0..3_600_000_000_000));
            NodeClock::new(offset, rate_ppb)
        })
        .collect()
}

fn server_endpoint(number: u32) -> Endpoint {
    Endpoint::Server(ServerId(number))
}

impl Cluster {
    /// Builds and boots the cluster at time zero.
    pub fn new(
        spec: &ClusterSpec,
        seed: u64,
        recorder: Recorder,
        queue_max: usize,
    ) -> Result<Cluster, QueueFull> {
        let streams = Streams::new(seed);
        let mut clocks = draw_clocks(spec, &streams).into_iter();
        let server_ids: Vec<ServerId> = (1..=spec.servers).map(ServerId).collect();
        let servers = server_ids
            .iter()
            .map(|&id| {
                let mut config = ServerConfig::new(id, server_ids.clone());
                config.election_timeout_min = spec.election_timeout_min;
                config.election_timeout_max = spec.election_timeout_max;
                config.heartbeat_interval = spec.heartbeat_interval;
                config.initial_leader = spec.initial_leader;
                config.append_entries_max = spec.append_batch;
                config.snapshot_entries_min = spec.snapshot_entries;
                config.lock_delay = spec.lock_delay;
                // The drift bound the protocol allows for is the one the scenario states.
                if let Some(drift) = spec.clock_drift {
                    config.max_clock_drift = drift;
                }
                config.unsafe_recovering_votes = spec.unsafe_recovering_votes;
                ServerSlot {
                    config,
                    node: None,
                    disk: SimDisk::new(spec.servers > 1),
                    incarnation: 0,
                    timers: [None; 2],
                    clock: clocks.next().expect("a clock per server"),
                    pause: Pause::default(),
                    last_role: None,
                    crash_in_step: None,
                    refused: None,
                }
            })
            .collect();
        let clients = (1..=spec.clients)
            .map(|number| {
                let mut config = ClientConfig::new(server_ids.clone(), spec.connect[&number]);
                config.operation_timeout = spec.client_timeout;
                config.retry_interval = spec.client_retry;
                config.error_backoff = (spec.client_retry / 5).max(Duration::from_millis(1));
                config.session_ttl = spec.session_ttl;
                if let Some(drift) = spec.clock_drift {
                    config.max_clock_drift = drift;
                }
                let seed = streams.seed_for(Stream::Client(number));
                ClientSlot {
                    node: Client::new(config, seed),
                    timers: [None; 4],
                    clock: clocks.next().expect("a clock per client"),
                    pause: Pause::default(),
                    running: None,
                    ops: BTreeMap::new(),
                }
            })
            .collect();
        let network = SimNetwork::new(spec.network, streams.seed_for(Stream::Network));
        let rogues = spec.rogues.as_ref().map(|rogue_spec| Rogues {
            spec: rogue_spec.clone(),
            rogues: (1..=rogue_spec.clients)
                .map(|n| {
                    Rogue::new(
                        n,
                        spec.servers,
                        rogue_spec,
                        streams.rng_for(Stream::Rogue(n)),
                    )
                })
                .collect(),
            network_rng: streams.rng_for(Stream::RogueNetwork),
            until: Time::ZERO,
            isolation: RogueIsolation::new(),
            stats: RogueStats::default(),
        });
        let disk_rng = streams.rng_for(Stream::Disk);
        let resource_rng = streams.rng_for(Stream::Resource);
        let mut cluster = Cluster {
            queue: EventQueue::new(queue_max),
            streams,
            network,
            servers,
            clients,
            election_safety: ElectionSafety::new(),
            state_machine_safety: StateMachineSafety::new(),
            mutual_exclusion: MutualExclusion::new(),
            acknowledged_writes: AcknowledgedWrites::new(),
            recorder,
            network_stats: NetworkStats::default(),
            checks_performed: BTreeMap::new(),
            watchers: super::watch::SimWatchers::default(),
            max_term: 0,
            leaders: Vec::new(),
            client_numbers: BTreeMap::new(),
            session_ordinals: BTreeMap::new(),
            request_identity: BTreeMap::new(),
            client_events: Vec::new(),
            violation: None,
            expected_violations: spec.expected_violations.clone(),
            expected_seen: BTreeMap::new(),
            events_processed: 0,
            rogues,
            disk_faults: spec.disk,
            disk_rng,
            fault_notes: Vec::new(),
            coverage_of_the_gone: Coverage::default(),
            buggify: spec.buggify,
            session_ttl: spec.session_ttl,
            session_expiry: spec.session_ttl.map(SessionExpiry::new),
            expiries: Vec::new(),
            resource: FencedResource::default(),
            scripted_write_verdicts: BTreeMap::new(),
            fenced_writes: FencedWrites::default(),
            resource_rng,
        };
        for number in 1..=spec.servers {
            cluster.boot_server(number)?;
        }
        Ok(cluster)
    }

    /// Every protocol branch taken so far, summed over every server incarnation, the crashed
    /// ones included (a server that panicked took its counts with it).
    pub fn coverage(&self) -> Coverage {
        let mut total = self.coverage_of_the_gone.clone();
        for slot in &self.servers {
            if let Some(node) = &slot.node {
                total.add(node.coverage());
            }
        }
        total
    }

    /// The first safety violation seen that the scenario did not expect, if any. The run
    /// stops at it.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// The first violation of each checker the scenario expects to fail, by checker name.
    pub fn expected_violations_seen(&self) -> &BTreeMap<&'static str, Violation> {
        &self.expected_seen
    }

    /// Records a violation. One of a checker the scenario expects to fail is kept apart and
    /// does not stop the run; any other stops it (the first one is kept).
    pub fn report_violation(&mut self, violation: Violation) {
        if self.expected_violations.contains(violation.invariant) {
            self.expected_seen
                .entry(violation.invariant)
                .or_insert(violation);
            return;
        }
        if self.violation.is_none() {
            self.violation = Some(violation);
        }
    }

    pub fn now(&self) -> Time {
        self.queue.now()
    }

    pub fn network(&mut self) -> &mut SimNetwork {
        &mut self.network
    }

    pub fn server_count(&self) -> u32 {
        self.servers.len() as u32
    }

    pub fn is_up(&self, number: u32) -> bool {
        self.servers[(number - 1) as usize].node.is_some()
    }

    /// Servers that refused to start from a corrupt disk, with the reason, in id order.
    pub fn refused_servers(&self) -> Vec<(u32, String)> {
        (1..=self.server_count())
            .filter_map(|number| {
                let reason = self.servers[(number - 1) as usize].refused.clone()?;
                Some((number, reason))
            })
            .collect()
    }

    /// Faults the cluster applied on its own since the last call, with their times.
    pub fn take_fault_notes(&mut self) -> Vec<(Time, String)> {
        std::mem::take(&mut self.fault_notes)
    }

    /// Records a fault the cluster applied on its own: in the trace now, and for the runner.
    /// The incarnation of server `number` if a watch can be served there now: it is up and
    /// not paused (`sim::watch`).
    pub fn watchable_incarnation(&self, number: u32) -> Option<u32> {
        let slot = &self.servers[(number - 1) as usize];
        let paused = self.is_paused(server_endpoint(number));
        slot.node
            .as_ref()
            .filter(|_| !paused)
            .map(|_| slot.incarnation)
    }

    /// Hands a watcher's input to server `number` (`sim::watch`); nothing if it is down.
    pub fn step_watch(
        &mut self,
        number: u32,
        input: crate::node::watch::WatchInput,
    ) -> Result<(), QueueFull> {
        self.step_server(number, ServerInput::Watch(input))
    }

    /// The command committed at `index`, as the first server to apply it reported it.
    pub fn committed_command(&self, index: LogIndex) -> Option<&crate::node::Command> {
        let committed = self.state_machine_safety.committed(index);
        committed.map(|(entry, _)| &entry.command)
    }

    pub(crate) fn note_fault(&mut self, description: String) {
        let now = self.now();
        let event = TraceEvent::Fault {
            fault: description.clone(),
        };
        self.recorder.record(now, event, None);
        self.fault_notes.push((now, description));
    }

    pub fn server(&self, number: u32) -> Option<&Server> {
        self.servers[(number - 1) as usize].node.as_ref()
    }

    /// Live servers, in id order.
    pub fn live_servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter().filter_map(|slot| slot.node.as_ref())
    }

    /// The live server that leads the highest term, if any.
    pub fn current_leader(&self) -> Option<u32> {
        self.live_servers()
            .filter(|server| server.role() == Role::Leader)
            .max_by_key(|server| server.term())
            .map(|server| server.id().0)
    }

    /// The scenario name (`cN`) of a cluster-assigned client id, if known.
    pub fn client_number(&self, id: ClientId) -> Option<u32> {
        self.client_numbers.get(&id).copied()
    }

    /// The claim that a committed grant of `lock` with `token` to scenario client `client`
    /// (under any of its sessions) holds the lock in, as the reference model decided it.
    pub fn granted_claim(&self, client: u32, lock: &str, token: LogIndex) -> Claim {
        self.client_numbers
            .iter()
            .filter(|(_, number)| **number == client)
            .map(|(id, _)| self.mutual_exclusion.granted_claim(lock, *id, token))
            .find(|claim| !claim.is_default())
            .unwrap_or(Claim::EXCLUSIVE)
    }

    pub fn client_is_busy(&self, client: u32) -> bool {
        self.clients[(client - 1) as usize].node.is_busy()
    }

    pub fn stream_rng(&self, stream: Stream) -> rand_chacha::ChaCha8Rng {
        self.streams.rng_for(stream)
    }

    /// What the rogues sent and heard, if the cluster has any.
    pub fn rogue_stats(&self) -> Option<&RogueStats> {
        self.rogues.as_ref().map(|rogues| &rogues.stats)
    }

    /// Lets the rogues attack, each from a gap drawn from its own stream, until `until`.
    pub fn start_rogues(&mut self, until: Time) -> Result<(), QueueFull> {
        let Some(rogues) = self.rogues.as_mut() else {
            return Ok(());
        };
        rogues.until = until;
        let rate = rogues.spec.rate_per_second;
        let mut starts = Vec::with_capacity(rogues.rogues.len());
        for rogue in &mut rogues.rogues {
            starts.push((rogue.number(), rogue.gap_nanos(rate)));
        }
        for (number, gap) in starts {
            let at = self.now() + Duration::from_nanos(gap);
            self.queue.push(at, Event::RogueAttack(number))?;
        }
        Ok(())
    }

    /// Rogue `number` sends its next request and schedules the one after.
    fn rogue_attack(&mut self, number: u32) -> Result<(), QueueFull> {
        let now = self.now();
        let Some(rogues) = self.rogues.as_mut() else {
            unreachable!("a rogue attack is scheduled only for a cluster with rogues");
        };
        let rate = rogues.spec.rate_per_second;
        let rogue = &mut rogues.rogues[(number - 1) as usize];
        if now >= rogues.until || rogue.is_spent() {
            return Ok(());
        }
        let connection = u32::try_from(rogue.sent()).expect("bounded by ROGUE_REQUESTS_MAX");
        let attack = rogue.next_attack();
        let next = now + Duration::from_nanos(rogue.gap_nanos(rate));
        let kind = attack.kind.map_or("hello", AttackKind::name);
        *rogues.stats.sent.entry(kind).or_insert(0) += 1;
        let request = match attack.sent {
            Sent::Request(request) => request,
            Sent::Watch(watch) => {
                self.rogue_watch(number, attack.to.0, connection, watch)?;
                return self.queue.push(next, Event::RogueAttack(number));
            }
        };
        rogues
            .isolation
            .observe_rogue_request(number, connection, &request);
        self.transmit(
            Endpoint::Rogue(number),
            Endpoint::Server(attack.to),
            Payload::Request(request),
            Some(connection),
        )?;
        self.queue.push(next, Event::RogueAttack(number))
    }

    /// Rogue `number`'s watch line reaches `server` at once, if it is up and reachable, as a
    /// watcher's does (`sim::watch`): on the rogue's watch connection, or on a connection of
    /// its own (number `connection`) that closes right after.
    fn rogue_watch(
        &mut self,
        number: u32,
        server: u32,
        connection: u32,
        watch: RogueWatch,
    ) -> Result<(), QueueFull> {
        let connection = if watch.long_lived {
            WATCH_CONNECTION
        } else {
            connection
        };
        let reachable = (self.network)
            .can_deliver(Endpoint::Rogue(number), server_endpoint(server))
            && self.watchable_incarnation(server).is_some();
        let Some(rogues) = self.rogues.as_mut() else {
            unreachable!("a rogue watches only in a cluster with rogues");
        };
        if !reachable {
            rogues.stats.watch_lines_lost += 1;
            return Ok(());
        }
        let from = rogue_address(number, connection);
        let input = match watch.line {
            RogueWatchLine::Start {
                id,
                target,
                from_index,
                client,
                secret,
            } => {
                let start = (number, server, connection, id);
                (rogues.isolation).observe_rogue_watch_start(start, client, secret, &target);
                WatchInput::Start {
                    from,
                    id,
                    target,
                    from_index,
                    credential: Some(WatchCredential { client, secret }),
                }
            }
            RogueWatchLine::Stop { id } => WatchInput::Stop { from, id },
        };
        self.step_watch(server, input)?;
        if !watch.long_lived && self.watchable_incarnation(server).is_some() {
            self.step_watch(server, WatchInput::Closed { from })?;
        }
        Ok(())
    }

    /// A watch line from `server` to rogue `number`'s `connection`: the checker judges it.
    fn rogue_watch_reply(&mut self, server: u32, number: u32, connection: u32, reply: &WatchReply) {
        let now = self.now();
        let Some(rogues) = self.rogues.as_mut() else {
            unreachable!("watch lines reach rogues only in a cluster with rogues");
        };
        match reply {
            WatchReply::Refused { .. } => rogues.stats.watch_refusals += 1,
            _ => rogues.stats.watch_lines += 1,
        }
        let start = (number, server, connection, reply.id());
        let verdict = (rogues.isolation).observe_rogue_watch_reply(now, start, reply);
        self.count_check(checkers::ROGUE_ISOLATION);
        if let Err(violation) = verdict {
            self.report_violation(violation);
        }
    }

    /// A reply reached rogue `number` on `connection`: the rogue learns from it, the checker
    /// judges it.
    fn rogue_reply(&mut self, number: u32, connection: u32, reply: ClientReply) {
        let now = self.now();
        let Some(rogues) = self.rogues.as_mut() else {
            unreachable!("replies reach rogues only in a cluster with rogues");
        };
        match &reply.body {
            ReplyBody::Welcome { client, secret, .. } => {
                rogues.stats.welcomes += 1;
                rogues
                    .isolation
                    .observe_rogue_welcome(number, *client, *secret);
            }
            ReplyBody::Outcome(_) | ReplyBody::KeptAlive { .. } => rogues.stats.outcomes += 1,
            ReplyBody::Error(_) => rogues.stats.errors += 1,
        }
        rogues.rogues[(number - 1) as usize].on_reply(&reply);
        let verdict = rogues
            .isolation
            .observe_rogue_reply(now, number, connection, &reply);
        self.count_check(checkers::ROGUE_ISOLATION);
        if let Err(violation) = verdict {
            self.report_violation(violation);
        }
    }

    /// An honest client sent `request`: every rogue sees it, without its secret, and the
    /// checker notes who sent which write.
    fn sniff(&mut self, request: &crate::node::ClientRequest) {
        let Some(rogues) = self.rogues.as_mut() else {
            return;
        };
        rogues.isolation.observe_honest_request(request);
        if let RequestBody::Op { client, op, .. } = &request.body {
            for rogue in &mut rogues.rogues {
                rogue.sniff(*client, request.seq, request.term, request.seen_index, op);
            }
        }
    }

    fn count_check(&mut self, invariant: &'static str) {
        *self.checks_performed.entry(invariant).or_insert(0) += 1;
    }

    // ----- faults -----

    /// Crashes a server: its volatile state is gone, messages in flight to it will be dropped,
    /// its disk stays, less what a torn write loses. A crash inside a step still armed for it
    /// is cancelled.
    pub fn crash(&mut self, number: u32) {
        let slot = &mut self.servers[(number - 1) as usize];
        slot.crash_in_step = None;
        if let Some(node) = slot.node.take() {
            self.coverage_of_the_gone.add(node.coverage());
            slot.incarnation += 1;
            slot.timers = [None; 2];
            // What waited for it dies with the process; a stale Resume finds nothing to do.
            slot.pause = Pause::default();
            slot.last_role = None;
            if let Some(tear) = slot.disk.crash(self.disk_faults, &mut self.disk_rng) {
                self.note_fault(format!("s{number}'s disk: {tear}"));
            }
        }
    }

    /// Arms a crash inside a step: the next step of server `number` with more than
    /// `after_effects` effects is cut after exactly that many, and the server restarts
    /// `restart_after` later if that is set. Replaces a crash already armed. Returns false,
    /// arming nothing, if the server is down.
    pub fn arm_crash_in_step(
        &mut self,
        number: u32,
        after_effects: u32,
        restart_after: Option<Duration>,
    ) -> bool {
        let slot = &mut self.servers[(number - 1) as usize];
        if slot.node.is_none() {
            return false;
        }
        slot.crash_in_step = Some(ArmedCrash {
            after_effects,
            restart_after,
        });
        true
    }

    /// Damages the record of server `number`'s log that holds entry `entry`: which record, or
    /// why none holds it.
    pub fn corrupt(&mut self, number: u32, entry: u64) -> Result<String, String> {
        self.servers[(number - 1) as usize]
            .disk
            .corrupt_entry(entry)
    }

    /// Restarts a crashed server from its disk; cancels a crash inside a step still armed for
    /// it either way.
    pub fn restart(&mut self, number: u32) -> Result<Restart, QueueFull> {
        let slot = &mut self.servers[(number - 1) as usize];
        if let Some(armed) = slot.crash_in_step.take() {
            self.note_fault(format!(
                "crash of s{number} inside a step cancelled by its restart: no step with more \
                 than {} effect(s) came",
                armed.after_effects
            ));
        }
        if self.is_up(number) {
            return Ok(Restart::Running);
        }
        if let Some(reason) = &self.servers[(number - 1) as usize].refused {
            return Ok(Restart::Refused(reason.clone()));
        }
        self.boot_server(number)?;
        match &self.servers[(number - 1) as usize].refused {
            Some(reason) => Ok(Restart::Refused(reason.clone())),
            None => Ok(Restart::Started),
        }
    }

    /// Starts a server from what its disk recovers, as `Wal::open` would, or leaves it down
    /// for good if the disk is corrupt in the middle of its log.
    fn boot_server(&mut self, number: u32) -> Result<(), QueueFull> {
        let now = self.server_now(number);
        let index = (number - 1) as usize;
        let recovery = self.servers[index]
            .disk
            .recover(self.disk_faults, &mut self.disk_rng);
        let state = match recovery {
            Recovery::Started {
                state,
                repairs,
                dropped,
            } => {
                for repair in repairs {
                    self.note_fault(format!("s{number} recovered its disk: {repair}"));
                }
                self.acknowledged_writes
                    .observe_damage(ServerId(number), &dropped);
                state
            }
            Recovery::Refused { reason } => {
                self.note_fault(format!(
                    "s{number} refuses to start and stays down: {reason}"
                ));
                self.servers[index].refused = Some(reason);
                return Ok(());
            }
        };
        let slot = &mut self.servers[index];
        let seed = self.streams.seed_for(Stream::Server {
            number,
            incarnation: slot.incarnation,
        });
        let mut config = slot.config.clone();
        if let Some(chance) = self.buggify {
            let seed = self.streams.seed_for(Stream::Buggify {
                number,
                incarnation: slot.incarnation,
            });
            config.buggify = Some(Buggify { seed, chance });
        }
        let result = node_step(|| Server::new(config, state, seed, now));
        match result {
            Ok((server, outputs)) => {
                self.servers[index].node = Some(server);
                let crashed = self.carry_out_server_outputs(number, outputs)?;
                assert!(!crashed, "a restart cancels any crash armed inside a step");
                self.observe_server(number);
            }
            Err(panic) => self.report_node_panic(Endpoint::Server(ServerId(number)), panic),
        }
        Ok(())
    }

    // ----- the event loop's work -----

    /// Handles a delivery or timer event.
    pub fn handle(&mut self, event: Event) -> Result<(), QueueFull> {
        self.events_processed += 1;
        match event {
            Event::Deliver {
                from,
                to,
                incarnation,
                connection,
                payload,
            } => self.deliver(from, to, incarnation, connection, payload),
            Event::RogueAttack(number) => self.rogue_attack(number),
            Event::RestartAfterCrash {
                server,
                incarnation,
            } => {
                let slot = &self.servers[(server - 1) as usize];
                // Restarted, and perhaps crashed again, by something else meanwhile: that
                // restart was this one.
                if slot.node.is_some() || slot.incarnation != incarnation {
                    return Ok(());
                }
                if self.restart(server)? == Restart::Started {
                    self.note_fault(format!("restart s{server} after its crash inside a step"));
                }
                Ok(())
            }
            Event::ServerTimer {
                server,
                timer,
                incarnation,
            } => {
                let now = self.now();
                let slot = &self.servers[(server - 1) as usize];
                let armed = slot.timers[timer_slot(timer)];
                if slot.incarnation != incarnation || armed.is_none_or(|armed| armed.at != now) {
                    return Ok(()); // Superseded, or set by a previous incarnation.
                }
                if slot.pause.is_paused(now) {
                    return Ok(()); // It stays armed, and fires when the server resumes.
                }
                self.fire_server_timer(server, timer)
            }
            Event::ClientTimer { client, timer } => {
                let now = self.now();
                let slot = &self.clients[(client - 1) as usize];
                let armed = slot.timers[client_timer_slot(timer)];
                if armed.is_none_or(|armed| armed.at != now) || slot.pause.is_paused(now) {
                    return Ok(());
                }
                self.fire_client_timer(client, timer)
            }
            Event::Resume(node) => self.resume(node),
            Event::WatchTick(watcher) => super::watch::tick(self, watcher),
            Event::ResourceWrite(write) => {
                self.resource_write_arrives(&write);
                Ok(())
            }
            Event::Script(_)
            | Event::WorkloadNext(_)
            | Event::EndOfDuration
            | Event::SettleCheck => {
                unreachable!("the runner handles scenario events itself")
            }
        }
    }

    fn fire_server_timer(&mut self, server: u32, timer: ServerTimer) -> Result<(), QueueFull> {
        self.servers[(server - 1) as usize].timers[timer_slot(timer)] = None;
        let name = match timer {
            ServerTimer::Election => "election",
            ServerTimer::Heartbeat => "heartbeat",
        };
        let event = TraceEvent::Timer {
            node: server_endpoint(server),
            timer: name,
        };
        self.recorder.record(self.now(), event, None);
        self.step_server(server, ServerInput::Timer(timer))
    }

    fn fire_client_timer(&mut self, client: u32, timer: ClientTimer) -> Result<(), QueueFull> {
        self.clients[(client - 1) as usize].timers[client_timer_slot(timer)] = None;
        let name = match timer {
            ClientTimer::Retry => "retry",
            ClientTimer::OperationTimeout => "operation_timeout",
            ClientTimer::Keepalive => "keepalive",
            ClientTimer::LeaseEnd => "lease_end",
        };
        let event = TraceEvent::Timer {
            node: Endpoint::Client(client),
            timer: name,
        };
        self.recorder.record(self.now(), event, None);
        self.step_client(client, ClientInput::Timer(timer))
    }

    // ----- time faults: pauses and clock rates -----

    fn pause_of(&mut self, node: Endpoint) -> &mut Pause {
        match node {
            Endpoint::Server(id) => &mut self.servers[(id.0 - 1) as usize].pause,
            Endpoint::Client(number) => &mut self.clients[(number - 1) as usize].pause,
            Endpoint::Rogue(_) => unreachable!("rogues are never paused"),
        }
    }

    /// Freezes `node` (a server or client) for `length` from now, or longer if it is already
    /// paused past that. A server that is down stays down; the pause is skipped and says so.
    pub fn pause(&mut self, node: Endpoint, length: Duration) -> Result<String, QueueFull> {
        if let Endpoint::Server(id) = node
            && !self.is_up(id.0)
        {
            return Ok(format!("pause {node}: it is down, skipped"));
        }
        let until = self.now() + length;
        let pause = self.pause_of(node);
        let until = pause.until.map_or(until, |earlier| earlier.max(until));
        pause.until = Some(until);
        self.queue.push(until, Event::Resume(node))?;
        Ok(format!(
            "pause {node} for {} (until {})",
            super::runner::format_duration(Time::from_duration(length)),
            super::runner::format_duration(until)
        ))
    }

    /// Ends `node`'s pause if it is due (a longer pause may have replaced it): the node's
    /// timers that passed fire first, the way a thread frozen mid-work carries on before it
    /// reads its sockets; then what arrived for it, in order.
    fn resume(&mut self, node: Endpoint) -> Result<(), QueueFull> {
        let now = self.now();
        let pause = self.pause_of(node);
        if pause.until.is_none_or(|until| until > now) {
            return Ok(());
        }
        pause.until = None;
        let held = std::mem::take(&mut pause.held);
        self.note_fault(format!(
            "resume {node}: {} message(s), write(s) and operation(s) waited for it",
            held.len()
        ));
        match node {
            Endpoint::Server(id) => {
                for timer in SERVER_TIMERS {
                    let slot = &self.servers[(id.0 - 1) as usize];
                    if slot.timers[timer_slot(timer)].is_some_and(|armed| armed.at <= now) {
                        self.fire_server_timer(id.0, timer)?;
                    }
                }
            }
            Endpoint::Client(number) => {
                for timer in CLIENT_TIMERS {
                    let slot = &self.clients[(number - 1) as usize];
                    if slot.timers[client_timer_slot(timer)].is_some_and(|armed| armed.at <= now) {
                        self.fire_client_timer(number, timer)?;
                    }
                }
            }
            Endpoint::Rogue(_) => unreachable!("rogues are never paused"),
        }
        for item in held {
            match item {
                Held::Message {
                    from,
                    incarnation,
                    connection,
                    payload,
                } => self.deliver_now(from, node, incarnation, connection, payload)?,
                Held::Write {
                    id,
                    lock,
                    token,
                    script,
                } => self.send_write(id, lock, token, script)?,
                Held::Keepalive => {
                    let Endpoint::Client(client) = node else {
                        unreachable!("clients keep their sessions alive")
                    };
                    self.keepalive(client)?;
                }
                Held::Invoke { tag, op, timeout } => {
                    let Endpoint::Client(client) = node else {
                        unreachable!("operations are handed to clients")
                    };
                    self.step_client(client, ClientInput::Invoke { tag, op, timeout })?;
                }
            }
        }
        Ok(())
    }

    /// Whether `node` is paused now (rogues never are).
    fn is_paused(&self, node: Endpoint) -> bool {
        let now = self.now();
        match node {
            Endpoint::Server(id) => self.servers[(id.0 - 1) as usize].pause.is_paused(now),
            Endpoint::Client(number) => self.clients[(number - 1) as usize].pause.is_paused(now),
            Endpoint::Rogue(_) => false,
        }
    }

    /// Holds `item` for paused `node` until it resumes. Beyond [`HELD_MAX`] items the newest
    /// is dropped, as a full socket buffer drops it.
    fn hold(&mut self, node: Endpoint, item: Held) {
        let pause = self.pause_of(node);
        if pause.held.len() < HELD_MAX {
            pause.held.push_back(item);
        } else {
            self.network_stats.dropped += 1;
        }
    }

    /// From now on `node`'s clock runs at `rate_ppb` parts per billion; its armed timers move
    /// to when its clock now reaches them. Returns what happened, for the fault list.
    pub fn set_clock_rate(&mut self, node: Endpoint, rate_ppb: u64) -> Result<String, QueueFull> {
        let now = self.now();
        match node {
            Endpoint::Server(id) => {
                let slot = &mut self.servers[(id.0 - 1) as usize];
                slot.clock.set_rate(now, rate_ppb);
                for timer in SERVER_TIMERS {
                    let slot = &mut self.servers[(id.0 - 1) as usize];
                    let Some(armed) = slot.timers[timer_slot(timer)].as_mut() else {
                        continue;
                    };
                    armed.at = slot.clock.true_time_of(armed.local, now);
                    let event = Event::ServerTimer {
                        server: id.0,
                        timer,
                        incarnation: slot.incarnation,
                    };
                    self.queue.push(armed.at, event)?;
                }
            }
            Endpoint::Client(number) => {
                let slot = &mut self.clients[(number - 1) as usize];
                slot.clock.set_rate(now, rate_ppb);
                for timer in CLIENT_TIMERS {
                    let slot = &mut self.clients[(number - 1) as usize];
                    let Some(armed) = slot.timers[client_timer_slot(timer)].as_mut() else {
                        continue;
                    };
                    armed.at = slot.clock.true_time_of(armed.local, now);
                    let event = Event::ClientTimer {
                        client: number,
                        timer,
                    };
                    self.queue.push(armed.at, event)?;
                }
            }
            Endpoint::Rogue(_) => unreachable!("rogues have no clock of their own"),
        }
        Ok(format!(
            "{node}'s clock runs at {} of true time",
            rate_ppb as f64 / RATE_ONE_PPB as f64
        ))
    }

    // ----- the fenced resource -----

    /// Client `client` (1-based), believing it holds `lock` with fencing token `token`, writes
    /// to the resource. The write travels for a latency within the network's range (it is not
    /// subject to partitions: the resource is another service). A paused client sends it when
    /// it wakes. A client that never registered has no identity to write with, and writes
    /// nothing.
    pub fn write_resource(
        &mut self,
        client: u32,
        lock: LockName,
        token: LogIndex,
        script: Option<usize>,
    ) -> Result<(), QueueFull> {
        let Some(id) = self.clients[(client - 1) as usize].node.id() else {
            return Ok(());
        };
        if self.is_paused(Endpoint::Client(client)) {
            // It leaves when the client wakes, under the identity it was decided with, even if
            // the client learns then that its session is gone: it was decided before.
            let held = Held::Write {
                id,
                lock,
                token,
                script,
            };
            self.hold(Endpoint::Client(client), held);
            return Ok(());
        }
        self.send_write(id, lock, token, script)
    }

    fn send_write(
        &mut self,
        id: ClientId,
        lock: LockName,
        token: LogIndex,
        script: Option<usize>,
    ) -> Result<(), QueueFull> {
        let params = self.network.params();
        let spread = crate::node::time::duration_nanos(params.latency_max - params.latency_min);
        let latency =
            params.latency_min + Duration::from_nanos(self.resource_rng.random_range(0..=spread));
        let write = ResourceWrite {
            client: id,
            lock,
            token,
            script,
        };
        self.queue
            .push(self.now() + latency, Event::ResourceWrite(write))
    }

    fn resource_write_arrives(&mut self, write: &ResourceWrite) {
        let now = self.now();
        let verdict = self.resource.write(write);
        if let Some(script) = write.script {
            self.scripted_write_verdicts.insert(script, verdict);
        }
        let writer = self.client_numbers.get(&write.client).copied();
        let event = TraceEvent::ResourceWrite {
            client: Endpoint::Client(writer.unwrap_or(0)),
            lock: write.lock.to_string(),
            token: write.token,
            verdict: match verdict {
                WriteVerdict::Accepted => "accepted".to_string(),
                WriteVerdict::Rejected { highest } => {
                    format!("rejected, token {highest} was accepted before")
                }
            },
        };
        self.recorder.record(now, event, None);
        if verdict == WriteVerdict::Accepted {
            self.count_check(checkers::FENCED_WRITES);
            if let Err(violation) = self.fenced_writes.observe_accepted(now, write) {
                self.report_violation(violation);
            }
        }
    }

    /// Notes a request a client sends: the session an operation is sent under (for the
    /// history), and for `session_expiry` renewals by seq and the last request of each
    /// session.
    fn observe_client_request(&mut self, client: u32, request: &crate::node::ClientRequest) {
        let now = self.now();
        if let RequestBody::Op { client: id, .. } = &request.body {
            self.request_identity.insert((client, request.seq), *id);
        }
        let Some(checker) = self.session_expiry.as_mut() else {
            return;
        };
        match &request.body {
            RequestBody::Hello { .. } => {
                checker.observe_renewal_sent(now, client, request.seq, None);
            }
            RequestBody::Keepalive { client: id, .. } => {
                checker.observe_renewal_sent(now, client, request.seq, Some(*id));
                checker.observe_request(now, *id);
            }
            RequestBody::Op { client: id, .. } => checker.observe_request(now, *id),
        }
    }

    /// The session (cluster-assigned id) client `client`'s request `seq` was sent under, if
    /// it was ever sent.
    pub fn request_identity(&self, client: u32, seq: u64) -> Option<ClientId> {
        self.request_identity.get(&(client, seq)).copied()
    }

    /// The name a session has in the history: its client's number for the client's first
    /// session, plus [`SESSION_NAME_STRIDE`] for each later one (c1's second session is
    /// c1001), so that the history tells a client's sessions apart as the cluster does.
    pub fn history_client(&self, id: ClientId) -> Option<u32> {
        let number = self.client_numbers.get(&id)?;
        let ordinal = self.session_ordinals.get(&id).copied().unwrap_or(0);
        ordinal
            .checked_mul(SESSION_NAME_STRIDE)
            .and_then(|offset| offset.checked_add(*number))
    }

    /// Whether client `client` is still renewing session `session`: it runs (not paused),
    /// the session is its current one, and it believes in it.
    pub fn client_renewing(&self, client: u32, session: ClientId) -> bool {
        let slot = &self.clients[(client - 1) as usize];
        !slot.pause.is_paused(self.now())
            && slot.node.id() == Some(session)
            && self.client_believes_in_session(client)
    }

    /// Whether some session nobody renews any more has yet to expire (the run should not
    /// settle before it does).
    pub fn sessions_await_expiry(&self) -> bool {
        self.session_expiry.as_ref().is_some_and(|checker| {
            checker.awaits_expiry(|client, session| self.client_renewing(client, session))
        })
    }

    /// Whether the reference model still has waiters in a queue (the run should not settle
    /// before the leader decides them).
    pub fn waiters_remain(&self) -> bool {
        !self.mutual_exclusion.waiters().is_empty()
    }

    /// `waiters_decided`, at the end of a settled run: no waiter is left in a queue. Judges
    /// nothing in a run where nobody ever waited.
    pub fn check_waiters_decided(&mut self) {
        if !self.mutual_exclusion.queues_used() {
            return;
        }
        let now = self.now();
        self.count_check(crate::sim::fairness::WAITERS_DECIDED);
        if let Err(violation) = self.mutual_exclusion.check_all_decided(now) {
            self.report_violation(violation);
        }
    }

    /// `session_expiry`'s liveness half, at the end of a settled run: see
    /// [`SessionExpiry::check_liveness`].
    pub fn check_sessions_expired(&mut self, faults_stopped: Time, bound: Duration) {
        let now = self.now();
        let Some(checker) = self.session_expiry.as_ref() else {
            return;
        };
        let verdict = checker.check_liveness(now, faults_stopped, bound, |client, session| {
            self.client_renewing(client, session)
        });
        self.count_check(checkers::SESSION_EXPIRY);
        if let Err(violation) = verdict {
            self.report_violation(violation);
        }
    }

    /// Whether client `client` believes, now and by its own clock and its lease rule, that
    /// its session lives. Without a session TTL every client believes so for ever.
    pub fn client_believes_in_session(&self, client: u32) -> bool {
        let slot = &self.clients[(client - 1) as usize];
        self.session_ttl.is_none() || slot.node.believes_session_alive(self.client_now(client))
    }

    /// Client `client` renews its session now, besides the renewals it sends on its own; a
    /// paused client does so when it wakes.
    pub fn keepalive(&mut self, client: u32) -> Result<(), QueueFull> {
        if self.is_paused(Endpoint::Client(client)) {
            self.hold(Endpoint::Client(client), Held::Keepalive);
            return Ok(());
        }
        self.step_client(client, ClientInput::Timer(ClientTimer::Keepalive))
    }

    /// What server `number`'s own clock reads now.
    fn server_now(&self, number: u32) -> Time {
        self.servers[(number - 1) as usize].clock.local(self.now())
    }

    /// What client `number`'s own clock reads now.
    pub fn client_now(&self, number: u32) -> Time {
        self.clients[(number - 1) as usize].clock.local(self.now())
    }

    fn deliver(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        incarnation: u32,
        connection: Option<u32>,
        payload: Payload,
    ) -> Result<(), QueueFull> {
        if !self.network.can_deliver(from, to) {
            self.network_stats.blocked += 1;
            let event = TraceEvent::LostInFlight {
                from,
                to,
                msg: payload.kind_name(),
                reason: "partitioned",
            };
            self.recorder.record(self.now(), event, None);
            return Ok(());
        }
        if self.is_paused(to) {
            let held = Held::Message {
                from,
                incarnation,
                connection,
                payload,
            };
            self.hold(to, held);
            return Ok(());
        }
        self.deliver_now(from, to, incarnation, connection, payload)
    }

    /// Hands a message that got through the network to its target, unless the target crashed
    /// since it was sent.
    fn deliver_now(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        incarnation: u32,
        connection: Option<u32>,
        payload: Payload,
    ) -> Result<(), QueueFull> {
        let now = self.now();
        let msg = payload.kind_name();
        let lost_because = if let Endpoint::Server(id) = to
            && let slot = &self.servers[(id.0 - 1) as usize]
            && (slot.node.is_none() || slot.incarnation != incarnation)
        {
            self.network_stats.lost_to_crash += 1;
            Some("target crashed")
        } else {
            None
        };
        if let Some(reason) = lost_because {
            let event = TraceEvent::LostInFlight {
                from,
                to,
                msg,
                reason,
            };
            self.recorder.record(now, event, None);
            return Ok(());
        }
        self.network_stats.delivered += 1;
        let traced_payload = if self.recorder.is_writing() {
            Some(&payload)
        } else {
            None
        };
        self.recorder
            .record(now, TraceEvent::Deliver { from, to, msg }, traced_payload);
        match (to, payload) {
            (Endpoint::Server(id), Payload::Peer(msg)) => {
                let Endpoint::Server(sender) = from else {
                    unreachable!("peer messages come from servers")
                };
                self.step_server(id.0, ServerInput::Peer { from: sender, msg })
            }
            (Endpoint::Server(id), Payload::Request(request)) => match (from, connection) {
                (Endpoint::Client(client), None) => {
                    let input = ServerInput::Client {
                        from: ClientAddr(u64::from(client)),
                        request,
                    };
                    self.step_server(id.0, input)
                }
                (Endpoint::Rogue(rogue), Some(connection)) => {
                    let input = ServerInput::Client {
                        from: rogue_address(rogue, connection),
                        request,
                    };
                    self.step_server_as(id.0, input, Some(rogue))
                }
                _ => unreachable!("requests come from clients, and rogues' on a connection"),
            },
            (Endpoint::Rogue(rogue), Payload::Reply(reply)) => {
                let connection = connection.expect("a reply to a rogue names its connection");
                self.rogue_reply(rogue, connection, reply);
                Ok(())
            }
            (Endpoint::Client(client), Payload::Reply(reply)) => {
                let Endpoint::Server(sender) = from else {
                    unreachable!("replies come from servers")
                };
                if let Some(checker) = self.session_expiry.as_mut() {
                    let verdict = match &reply.body {
                        ReplyBody::Welcome { client: id, .. } => {
                            checker.observe_renewal_acknowledged(client, reply.seq, Some(*id))
                        }
                        ReplyBody::KeptAlive { .. } => {
                            checker.observe_renewal_acknowledged(client, reply.seq, None)
                        }
                        _ => Ok(()),
                    };
                    if let Err(violation) = verdict {
                        self.report_violation(violation);
                    }
                }
                self.step_client(
                    client,
                    ClientInput::Reply {
                        from: sender,
                        reply,
                    },
                )
            }
            (to, payload) => unreachable!("{} cannot be delivered to {to}", payload.kind_name()),
        }
    }

    /// Hands `op` to client `client` (1-based), tagged `tag`.
    pub fn invoke(
        &mut self,
        client: u32,
        tag: u64,
        op: Operation,
        timeout: Option<Duration>,
    ) -> Result<(), QueueFull> {
        self.clients[(client - 1) as usize]
            .ops
            .insert(tag, op.clone());
        if self.is_paused(Endpoint::Client(client)) {
            self.hold(Endpoint::Client(client), Held::Invoke { tag, op, timeout });
            return Ok(());
        }
        self.step_client(client, ClientInput::Invoke { tag, op, timeout })
    }

    fn step_server(&mut self, number: u32, input: ServerInput) -> Result<(), QueueFull> {
        self.step_server_as(number, input, None)
    }

    /// Steps a server; `rogue` names the rogue whose request `input` carries, if one does, so
    /// that a server stopped by a rogue's request is reported as rogue isolation broken.
    fn step_server_as(
        &mut self,
        number: u32,
        input: ServerInput,
        rogue: Option<u32>,
    ) -> Result<(), QueueFull> {
        let now = self.server_now(number);
        let index = (number - 1) as usize;
        let Some(server) = self.servers[index].node.as_mut() else {
            return Ok(());
        };
        match node_step(|| server.step(now, input)) {
            Ok(outputs) => {
                if !self.carry_out_server_outputs(number, outputs)? {
                    self.observe_server(number);
                }
            }
            Err(panic) => {
                self.servers[index].node = None;
                match rogue {
                    None => self.report_node_panic(server_endpoint(number), panic),
                    Some(rogue) => {
                        let message = format!(
                            "s{number} stopped on a failed assertion while handling a request \
                             of r{rogue}: {}",
                            panic_message(panic.as_ref())
                        );
                        self.report_violation(Violation {
                            invariant: checkers::ROGUE_ISOLATION,
                            at: self.now(),
                            message,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn report_node_panic(&mut self, node: Endpoint, panic: Box<dyn std::any::Any + Send>) {
        let message = panic_message(panic.as_ref());
        self.report_violation(Violation {
            invariant: "node_assertion",
            at: self.now(),
            message: format!("{node} failed an internal assertion: {message}"),
        });
    }

    /// Carries out a server's effects in order, as the node contract says: each `Persist` is
    /// written, and the disk syncs before the first later effect that is not a persist (and at
    /// the end of the step). With a crash inside a step armed and more effects than it lets
    /// through, carries out exactly that many and crashes the server there. Returns true if
    /// it crashed.
    fn carry_out_server_outputs(
        &mut self,
        number: u32,
        outputs: Vec<ServerOutput>,
    ) -> Result<bool, QueueFull> {
        let index = (number - 1) as usize;
        let armed = self.servers[index].crash_in_step;
        let cut = armed
            .map(|armed| armed.after_effects as usize)
            .filter(|&after_effects| outputs.len() > after_effects);
        let cut_description = cut.map(|carried| describe_cut(number, &outputs, carried));
        if cut.is_some() {
            self.servers[index].crash_in_step = None;
        }
        let carried_max = cut.unwrap_or(outputs.len());
        for output in outputs.into_iter().take(carried_max) {
            if cut.is_some() {
                self.observe_sent(number, &output);
            }
            self.carry_out_server_output(number, output)?;
        }
        if let Some(description) = cut_description {
            self.note_fault(description);
            self.crash(number);
            if let Some(after) = armed.and_then(|armed| armed.restart_after) {
                let incarnation = self.servers[index].incarnation;
                let event = Event::RestartAfterCrash {
                    server: number,
                    incarnation,
                };
                self.queue.push(self.now() + after, event)?;
            }
            return Ok(true);
        }
        self.sync_disk(index);
        Ok(false)
    }

    fn sync_disk(&mut self, index: usize) {
        self.servers[index].disk.sync();
    }

    /// A step cut short is not observed through the server's state, which dies with it; what
    /// it sent is what the world saw. A granted vote that left is a vote cast, and an append
    /// that left came from a leader of its term.
    fn observe_sent(&mut self, number: u32, output: &ServerOutput) {
        let ServerOutput::Send { to, msg } = output else {
            return;
        };
        let (now, id) = (self.now(), ServerId(number));
        let verdict = match msg {
            PeerMessage::VoteResponse {
                term,
                granted: true,
            } => {
                self.count_check(checkers::ONE_VOTE_PER_TERM);
                self.election_safety.observe_vote(now, id, *term, Some(*to))
            }
            PeerMessage::AppendEntries { term, .. } | PeerMessage::InstallSnapshot { term, .. } => {
                self.count_check(checkers::ELECTION_SAFETY);
                self.election_safety.observe(now, id, Role::Leader, *term)
            }
            _ => Ok(()),
        };
        if let Err(violation) = verdict {
            self.report_violation(violation);
        }
    }

    fn carry_out_server_output(
        &mut self,
        number: u32,
        output: ServerOutput,
    ) -> Result<(), QueueFull> {
        let index = (number - 1) as usize;
        let from = server_endpoint(number);
        match output {
            ServerOutput::Persist(op) => {
                self.servers[index].disk.write(op);
                return Ok(());
            }
            ServerOutput::PersistSnapshot(snapshot) => {
                self.servers[index].disk.install_snapshot(snapshot);
                return Ok(());
            }
            _ => self.sync_disk(index),
        }
        match output {
            ServerOutput::Persist(_) | ServerOutput::PersistSnapshot(_) => {
                unreachable!("persists were carried out above")
            }
            ServerOutput::Send { to, msg } => {
                self.transmit(from, Endpoint::Server(to), Payload::Peer(msg), None)?;
            }
            ServerOutput::Reply { to, reply } => match rogue_of(to) {
                Some((rogue, connection)) => {
                    let to = Endpoint::Rogue(rogue);
                    self.transmit(from, to, Payload::Reply(reply), Some(connection))?;
                }
                None => {
                    let client =
                        u32::try_from(to.0).expect("simulated client addresses are client numbers");
                    let to = Endpoint::Client(client);
                    self.transmit(from, to, Payload::Reply(reply), None)?;
                }
            },
            ServerOutput::SetTimer { timer, at: local } => {
                let now = self.now();
                let slot = &mut self.servers[index];
                let at = slot.clock.true_time_of(local, now);
                slot.timers[timer_slot(timer)] = Some(Deadline { local, at });
                let incarnation = slot.incarnation;
                self.queue.push(
                    at,
                    Event::ServerTimer {
                        server: number,
                        timer,
                        incarnation,
                    },
                )?;
            }
            ServerOutput::Applied {
                index: log_index,
                entry,
                result,
            } => self.observe_applied(number, log_index, &entry, &result),
            ServerOutput::Woken {
                index: log_index,
                woken,
            } => {
                let now = self.now();
                self.count_check(crate::sim::fairness::FIFO_FAIRNESS);
                self.count_check(crate::sim::fairness::NO_GRANT_AFTER_EXPIRY);
                self.fenced_writes.observe_woken(&woken);
                let verdict = self.mutual_exclusion.observe_woken(now, log_index, &woken);
                if let Err(violation) = verdict {
                    self.report_violation(violation);
                }
            }
            ServerOutput::Watch { to, reply } if rogue_of(to).is_some() => {
                let (rogue, connection) = rogue_of(to).expect("matched");
                self.rogue_watch_reply(number, rogue, connection, &reply);
            }
            ServerOutput::Watch { to, reply } => {
                let now = self.now();
                if let Some(rogues) = self.rogues.as_ref() {
                    let verdict = rogues.isolation.observe_honest_watch_reply(now, &reply);
                    if let Err(violation) = verdict {
                        self.report_violation(violation);
                    }
                }
                let (now, network) = (self.now(), &self.network);
                let reachable = |client| network.can_deliver(from, Endpoint::Client(client));
                self.watchers.on_reply(now, number, to, reply, reachable);
            }
        }
        Ok(())
    }

    /// Feeds an applied entry to the checkers that judge committed entries.
    fn observe_applied(
        &mut self,
        number: u32,
        log_index: u64,
        entry: &crate::node::Entry,
        result: &crate::node::ApplyResult,
    ) {
        let now = self.now();
        self.count_check(checkers::STATE_MACHINE_SAFETY);
        let id = ServerId(number);
        match self
            .state_machine_safety
            .observe_applied(now, id, log_index, entry, result)
        {
            Ok(true) => {
                if let crate::node::Command::Expire { client } = &entry.command
                    && matches!(result, crate::node::ApplyResult::Expired { .. })
                {
                    let freed = self.mutual_exclusion.locks_held_by(*client);
                    self.expiries.push((now, *client, freed));
                    if let Some(checker) = self.session_expiry.as_mut() {
                        let verdict = checker.observe_expired(now, *client);
                        self.count_check(checkers::SESSION_EXPIRY);
                        if let Err(violation) = verdict {
                            self.report_violation(violation);
                        }
                    }
                }
                self.count_check(checkers::MUTUAL_EXCLUSION);
                if let Err(violation) =
                    self.mutual_exclusion
                        .observe_committed(now, log_index, &entry.command, result)
                {
                    self.report_violation(violation);
                }
                self.fenced_writes
                    .observe_committed(log_index, &entry.command, result);
                if let Some(rogues) = self.rogues.as_mut() {
                    let verdict =
                        rogues
                            .isolation
                            .observe_committed(now, log_index, &entry.command, result);
                    self.count_check(checkers::ROGUE_ISOLATION);
                    if let Err(violation) = verdict {
                        self.report_violation(violation);
                    }
                }
            }
            Ok(false) => {}
            Err(violation) => self.report_violation(violation),
        }
    }

    /// Feeds the checkers what a server's step changed.
    fn observe_server(&mut self, number: u32) {
        let now = self.now();
        let index = (number - 1) as usize;
        let Some(server) = self.servers[index].node.as_ref() else {
            return;
        };
        let (role, term, id) = (server.role(), server.term(), server.id());
        let vote = server.voted_for();
        let (applied, digest) = (server.last_applied(), server.lock_table().locks_digest());
        self.count_check(checkers::ELECTION_SAFETY);
        if let Err(violation) = self.election_safety.observe(now, id, role, term) {
            self.report_violation(violation);
        }
        self.count_check(checkers::ONE_VOTE_PER_TERM);
        if let Err(violation) = self.election_safety.observe_vote(now, id, term, vote) {
            self.report_violation(violation);
        }
        self.count_check(checkers::STATE_MACHINE_SAFETY);
        if let Err(violation) = self
            .state_machine_safety
            .observe_lock_map(now, id, applied, digest)
        {
            self.report_violation(violation);
        }
        self.max_term = self.max_term.max(term);
        if self.servers[index].last_role != Some((role, term)) {
            self.servers[index].last_role = Some((role, term));
            if role == Role::Leader {
                self.leaders.push((now, term, id));
                self.count_check(checkers::LEADER_COMPLETENESS);
                let server = self.servers[index].node.as_ref().expect("checked above");
                let completeness = self.state_machine_safety.check_leader_completeness(
                    now,
                    id,
                    term,
                    server.log(),
                );
                if let Err(violation) = completeness {
                    self.report_violation(violation);
                }
            }
            let role_name = match role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre_candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            };
            let event = TraceEvent::Role {
                server: Endpoint::Server(id),
                role: role_name,
                term,
            };
            self.recorder.record(now, event, None);
        }
    }

    fn step_client(&mut self, client: u32, input: ClientInput) -> Result<(), QueueFull> {
        let now = self.client_now(client);
        let index = (client - 1) as usize;
        let node = &mut self.clients[index].node;
        let outputs = match node_step(|| node.step(now, input)) {
            Ok(outputs) => outputs,
            Err(panic) => {
                self.report_node_panic(Endpoint::Client(client), panic);
                return Ok(());
            }
        };
        for output in outputs {
            match output {
                ClientOutput::Send { to, request } => {
                    self.sniff(&request);
                    self.observe_client_request(client, &request);
                    self.transmit(
                        Endpoint::Client(client),
                        Endpoint::Server(to),
                        Payload::Request(request),
                        None,
                    )?;
                }
                ClientOutput::SetTimer { timer, at: local } => {
                    let slot = &mut self.clients[index];
                    let at = slot.clock.true_time_of(local, self.queue.now());
                    slot.timers[client_timer_slot(timer)] = Some(Deadline { local, at });
                    self.queue.push(at, Event::ClientTimer { client, timer })?;
                }
                ClientOutput::Registered { client: id } => {
                    if self.client_numbers.insert(id, client).is_none() {
                        let ordinal = self
                            .client_numbers
                            .values()
                            .filter(|&&number| number == client)
                            .count()
                            - 1;
                        self.session_ordinals.insert(id, ordinal as u32);
                    }
                }
                ClientOutput::Started { tag, seq } => {
                    self.clients[index].running = Some((tag, seq));
                    self.client_events
                        .push(ClientEvent::Started { client, tag, seq });
                }
                ClientOutput::Completed { tag, result, index } => {
                    self.acknowledge(client, tag, &result);
                    self.client_events.push(ClientEvent::Completed {
                        client,
                        tag,
                        result,
                        index,
                    });
                }
                // Sessions are not configured in the simulator yet: these never occur there.
                ClientOutput::LeaseRenewed { .. } | ClientOutput::Jeopardy { .. } => {}
                ClientOutput::Expired { .. } => {
                    self.client_events.push(ClientEvent::SessionLost { client });
                }
            }
        }
        Ok(())
    }

    /// Feeds a client's acknowledged outcome to the mutual-exclusion checker.
    fn acknowledge(&mut self, client: u32, tag: u64, result: &Result<Outcome, ClientError>) {
        let slot = &mut self.clients[(client - 1) as usize];
        let op = slot.ops.remove(&tag);
        // An operation refused from the queue (QueueFull) completes without ever running.
        let seq = match slot.running {
            Some((running_tag, seq)) if running_tag == tag => {
                slot.running = None;
                Some(seq)
            }
            _ => None,
        };
        let (Ok(outcome), Some(seq), Some(op), Some(id)) = (result, seq, op, slot.node.id()) else {
            return;
        };
        self.count_check(checkers::MUTUAL_EXCLUSION);
        let now = self.now();
        if let Err(violation) = self
            .mutual_exclusion
            .observe_ack(now, id, seq, &op, outcome)
        {
            self.report_violation(violation);
            return;
        }
        // A write's outcome comes from its committed entry (a refusal by read has none).
        let committed = self.mutual_exclusion.committed_index(id, seq);
        let is_write = !matches!(op, Operation::Check { .. });
        if let (true, Some(index)) = (is_write, committed) {
            let (entry, _) = self
                .state_machine_safety
                .committed(index)
                .expect("a committed request was applied");
            let term = entry.term;
            self.acknowledged_writes.observe_ack(id, seq, index, term);
        }
    }

    /// Judges the acknowledged writes against the servers' logs now (the end of a run).
    pub fn check_acknowledged_writes(&mut self) -> Result<(), Violation> {
        let now = self.now();
        let replicas: Vec<FinalReplica> = (1..=self.server_count())
            .map(|number| {
                let slot = &self.servers[(number - 1) as usize];
                match &slot.node {
                    Some(node) => FinalReplica {
                        id: ServerId(number),
                        log: node.log(),
                        commit_index: Some(node.commit_index()),
                    },
                    None => FinalReplica {
                        id: ServerId(number),
                        log: &slot.disk.state().log,
                        commit_index: None,
                    },
                }
            })
            .collect();
        let judged = self
            .acknowledged_writes
            .check(now, self.servers.len(), &replicas)?;
        // One check per acknowledged write judged (the excused are not checks).
        *self
            .checks_performed
            .entry(ACKNOWLEDGED_WRITES_SURVIVE)
            .or_insert(0) += judged.checked;
        Ok(())
    }

    /// Servers whose disk says they are still repairing a damaged log, in id order.
    pub fn unrepaired_servers(&self) -> Vec<u32> {
        (1..=self.server_count())
            .filter(|&number| {
                let slot = &self.servers[(number - 1) as usize];
                slot.refused.is_none() && slot.disk.state().recovering
            })
            .collect()
    }

    /// Hands a message to the network and schedules its deliveries. Rogue traffic (to or from
    /// a rogue, on `connection`) draws its fate from its own stream.
    fn transmit(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        payload: Payload,
        connection: Option<u32>,
    ) -> Result<(), QueueFull> {
        let now = self.now();
        self.network_stats.sent += 1;
        let msg = payload.kind_name();
        let incarnation = match to {
            Endpoint::Server(id) => self.servers[(id.0 - 1) as usize].incarnation,
            Endpoint::Client(_) | Endpoint::Rogue(_) => 0,
        };
        let traced_payload = if self.recorder.is_writing() {
            Some(&payload)
        } else {
            None
        };
        let transmission = match (&mut self.rogues, connection) {
            (Some(rogues), Some(_)) => {
                self.network
                    .transmit_drawing_from(&mut rogues.network_rng, from, to)
            }
            _ => self.network.transmit(from, to),
        };
        let fate = match &transmission {
            Transmission::Blocked => {
                self.network_stats.blocked += 1;
                "blocked"
            }
            Transmission::Dropped => {
                self.network_stats.dropped += 1;
                "dropped"
            }
            Transmission::Delivered {
                duplicate_delay: Some(_),
                ..
            } => "duplicated",
            Transmission::Delivered {
                duplicate_delay: None,
                ..
            } => "in_flight",
        };
        let event = TraceEvent::Send {
            from,
            to,
            msg,
            fate,
        };
        self.recorder.record(now, event, traced_payload);
        if let Transmission::Delivered {
            delay,
            duplicate_delay,
        } = transmission
        {
            if let Some(duplicate_delay) = duplicate_delay {
                self.network_stats.duplicated += 1;
                let copy = Event::Deliver {
                    from,
                    to,
                    incarnation,
                    connection,
                    payload: payload.clone(),
                };
                self.queue.push(now + duplicate_delay, copy)?;
            }
            self.queue.push(
                now + delay,
                Event::Deliver {
                    from,
                    to,
                    incarnation,
                    connection,
                    payload,
                },
            )?;
        }
        Ok(())
    }

    /// All live replicas against each other, for the end of a run.
    pub fn check_convergence(&mut self) -> Result<(), Violation> {
        self.count_check(checkers::CONVERGENCE);
        let now = self.now();
        let replicas: Vec<(ServerId, &crate::node::LockTable)> = self
            .live_servers()
            .map(|server| (server.id(), server.lock_table()))
            .collect();
        checkers::check_convergence(now, &replicas)
    }

    /// True when every live replica has applied everything any of them committed and all hold
    /// the same lock map.
    pub fn is_converged(&self) -> bool {
        let commit = self
            .live_servers()
            .map(Server::commit_index)
            .max()
            .unwrap_or(0);
        let mut digests = self
            .live_servers()
            .map(|server| server.lock_table().locks_digest());
        let first = digests.next();
        self.live_servers()
            .all(|server| server.last_applied() == commit)
            && digests.all(|digest| Some(digest) == first)
    }

    pub fn election_terms_with_leader(&self) -> usize {
        self.election_safety.terms_with_leader()
    }

    pub fn committed_count(&self) -> usize {
        self.state_machine_safety.committed_count()
    }
}

/// What a crash inside a step did: which effects were carried out and which were lost.
fn describe_cut(number: u32, outputs: &[ServerOutput], carried: usize) -> String {
    /// Effects named per list; longer lists end with a count.
    const NAMED_MAX: usize = 6;
    let list = |effects: &[ServerOutput]| {
        let mut names: Vec<String> = effects.iter().take(NAMED_MAX).map(effect_name).collect();
        if effects.len() > NAMED_MAX {
            names.push(format!("{} more", effects.len() - NAMED_MAX));
        }
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let (done, lost) = outputs.split_at(carried);
    format!(
        "s{number} crashed inside a step, after {carried} of its {} effects (carried out: {}; \
         lost: {})",
        outputs.len(),
        list(done),
        list(lost)
    )
}

/// One effect in a few words, for the fault list and the trace.
fn effect_name(output: &ServerOutput) -> String {
    match output {
        ServerOutput::Persist(PersistOp::HardState {
            term, voted_for, ..
        }) => match voted_for {
            Some(vote) => format!("persist term {term} vote {vote}"),
            None => format!("persist term {term}"),
        },
        ServerOutput::Persist(PersistOp::Append {
            first_index,
            entries,
        }) => match entries.len() {
            0 => format!("persist truncation at {first_index}"),
            1 => format!("persist entry {first_index}"),
            count => format!(
                "persist entries {first_index}-{}",
                first_index + count as u64 - 1
            ),
        },
        ServerOutput::PersistSnapshot(snapshot) => {
            format!("persist snapshot to {}", snapshot.last_included_index)
        }
        ServerOutput::Send { to, msg } => format!("send {} to {to}", msg.kind_name()),
        ServerOutput::Reply { .. } => "reply to a client".to_string(),
        ServerOutput::SetTimer { timer, .. } => match timer {
            ServerTimer::Election => "set election timer".to_string(),
            ServerTimer::Heartbeat => "set heartbeat timer".to_string(),
        },
        ServerOutput::Applied { index, .. } => format!("apply entry {index}"),
        ServerOutput::Woken { index, woken } => {
            format!("wake {} (entry {index})", woken.client)
        }
        ServerOutput::Watch { reply, .. } => format!("watch reply to watch {}", reply.id()),
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string())
}
