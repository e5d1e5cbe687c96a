//! One chaos run, from an empty directory to a verdict:
//!
//! 1. **Set up**: the output directory, a cluster secret, free ports, a proxy on every peer
//!    link, and the server processes, each dialling its peers through the proxies. Every
//!    client registers once the cluster answers.
//! 2. **Run**: the clients run their random operations for the whole duration while the
//!    nemesis plays the seeded schedule one fault at a time: apply, hold, heal, then wait for
//!    every server the fault touched to rejoin (measured from the outside by
//!    [`super::probe::await_rejoin`], at most [`REJOIN_WAIT_MAX`]); the rest of the schedule
//!    shifts by that wait, so its gaps stay as drawn. A server that dies on its own is
//!    recorded and restarted.
//! 3. **End**: the clients stop, every server is restarted (SIGTERM, then a start from its
//!    data directory), and every lock is read linearizably through every server.
//! 4. **Judge**: the history, the fault log and a summary are written, and
//!    [`super::verdict::judge`] runs the checks.
//!
//! The calling contract: call [`run`] from a thread that lives until it returns (the servers'
//! parent-death signal follows it), and set `stop` to end the run early (Ctrl-C); the servers
//! are killed whatever happens, including a panic here.

use super::Clock;
use super::probe::{self, pinned_client};
use super::processes::{ServerSpec, ServerState, Servers};
use super::proxy::{LinkProxy, LinkRules};
use super::schedule::{self, Action, NemesisKind, PlannedFault, Target, names, server_name};
use super::verdict::{self, CheckOutcome, RunFindings};
use super::workload::{self, ClientPlan, LiveCounters, Observed, Recorded};
use crate::client::{Client, ClientOptions, Credential};
use crate::node::{Claim, ClientId, Consistency};
use crate::sim::history::{HistoryOp, HistoryOpKind, HistoryResult};
use crate::sim::linearizability::LinearizabilityReport;
use crate::sim::timeline;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const SERVERS_MAX: usize = 9;
pub const CLIENTS_MAX: u32 = 256;
pub const LOCKS_MAX: u32 = 10_000;
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// How long a healed server may take to rejoin before that is a liveness failure. Generous:
/// the peer transport promises about an election timeout plus a reconnection delay (well
/// under 2 s), and a restart adds recovery on a machine the whole cluster shares.
pub const REJOIN_WAIT_MAX: Duration = Duration::from_secs(15);
/// How long the cluster may take to start, elect and register every client.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final reads through one server may take.
const FINAL_READS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long servers may take to stop on SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the end-of-run linearizability search may take before it answers "undecided".
const CHECK_TIME_MAX: Duration = Duration::from_secs(600);
/// Fault-log events kept in memory for the timeline (a 10-minute run records about 600).
const FAULT_EVENTS_KEPT_MAX: usize = 100_000;
/// How often the nemesis looks at the servers and reports progress.
const TICK: Duration = Duration::from_millis(50);
/// Quiet time kept after the last fault, before the end of the run.
const QUIET_END: Duration = Duration::from_secs(1);
/// Restarts of servers that died on their own, per server; past it they stay down.
const UNEXPECTED_RESTARTS_MAX: u32 = 3;
/// Failed operations described in the findings; the rest are counted.
const FAILURES_LISTED_MAX: usize = 100;
/// Server ports are drawn from here, below Linux's ephemeral range (32768-60999), so that a
/// port left free by a killed server is not taken by some outgoing connection meanwhile.
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// The cluster id the servers share.
const CLUSTER_ID: &str = "lockstep-chaos";
/// Separates the proxy's loss stream from the schedule's, both drawn from the seed.
const PROXY_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub servers: usize,
    pub clients: u32,
    pub locks: u32,
    pub duration: Duration,
    pub seed: u64,
    pub nemesis: Vec<NemesisKind>,
    /// Created for the run; it must not exist or be empty.
    pub out_dir: PathBuf,
    /// The `lockstep` binary the servers run.
    pub executable: PathBuf,
    /// Passed to every server, so that runs of any length also exercise snapshots.
    pub snapshot_entries: u64,
}

impl ChaosConfig {
    /// Every problem with the numbers, named by flag.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=SERVERS_MAX).contains(&self.servers) {
            return Err(format!(
                "--servers {}: must be 1 to {SERVERS_MAX}",
                self.servers
            ));
        }
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            return Err(format!(
                "--clients {}: must be 1 to {CLIENTS_MAX}",
                self.clients
            ));
        }
        if !(1..=LOCKS_MAX).contains(&self.locks) {
            return Err(format!("--locks {}: must be 1 to {LOCKS_MAX}", self.locks));
        }
        if self.duration < Duration::from_secs(5) || self.duration > DURATION_MAX {
            return Err(format!("--duration {:?}: must be 5s to 24h", self.duration));
        }
        if self.snapshot_entries == 0 {
            return Err("--snapshot-entries 0: must be at least 1".into());
        }
        Ok(())
    }

    fn lock_names(&self) -> Vec<String> {
        (1..=self.locks).map(|lock| format!("w{lock}")).collect()
    }
}

/// Why a run could not take place at all.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The configuration or the output directory: nothing was started.
    #[error("{0}")]
    Setup(String),
    /// The servers did not start, elect a leader or register the clients in time.
    #[error("the cluster did not start: {0}")]
    ClusterStart(String),
    /// `stop` was set before the clients were registered: nothing ran.
    #[error("interrupted while starting the cluster")]
    Interrupted,
}

/// Where the run stands, for a progress display.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub duration: Duration,
    pub operations: u64,
    pub unknown: u64,
    pub faults: u64,
    /// The fault in force, described.
    pub active: Option<String>,
}

/// Hears how the run goes. Every method is called on the thread that called [`run`].
pub trait Observer {
    fn phase(&mut self, _phase: &str) {}
    fn event(&mut self, _event: &FaultEvent) {}
    fn progress(&mut self, _progress: &Progress) {}
}

/// One line of the fault log (`faults.jsonl`): what the nemesis did, or saw, and when.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultEvent {
    /// Nanoseconds on the run's clock, the history's clock.
    pub time: u64,
    /// `start`, `heal`, `rejoined`, `not_rejoined`, `unexpected_exit`, `restart_failed`,
    /// `final_restart`.
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The servers it is about.
    pub servers: Vec<String>,
    pub detail: String,
    /// `rejoined`: milliseconds from the heal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<f64>,
}

/// How long one healed server took to rejoin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rejoin {
    pub fault: u32,
    pub kind: &'static str,
    pub server: String,
    /// Milliseconds from the heal to its first linearizable answer; `None` if it gave none
    /// within [`REJOIN_WAIT_MAX`] (or the run was interrupted first).
    pub after_ms: Option<f64>,
}

/// Operations answered out of those called, in one kind of window.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub answered: u64,
    pub total: u64,
    /// The longest an answered operation took, in milliseconds.
    pub longest_answer_ms: u64,
}

impl Availability {
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| 100.0 * self.answered as f64 / self.total as f64)
    }
}

/// Everything a run found; `summary.json` holds it as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// `lockstep-chaos/1`.
    pub format: &'static str,
    pub seed: u64,
    pub servers: usize,
    pub clients: u32,
    pub locks: u32,
    pub duration_ms: u64,
    pub nemesis: Vec<&'static str>,
    pub out_dir: PathBuf,
    /// Ctrl-C ended the run early: no final restart and reads, and no verdict.
    pub interrupted: bool,
    pub wall_seconds: f64,
    /// The clients' operations (the final reads not included), by result.
    pub operations: u64,
    pub operations_by_result: BTreeMap<&'static str, u64>,
    /// Operations with no answer (timed out, or no server reachable).
    pub unknown: u64,
    pub faults_by_kind: BTreeMap<&'static str, u64>,
    /// Operations called while a fault was in force (applied, not yet healed).
    pub availability_with_faults: Availability,
    pub availability_without_faults: Availability,
    pub rejoins: Vec<Rejoin>,
    /// Final linearizable reads answered (every lock through every server).
    pub final_reads: u64,
    pub proxy_connections: u64,
    /// Connection directions a cut or a loss broke.
    pub proxy_broken_directions: u64,
    pub checks: Vec<CheckOutcome>,
    /// `clean`, `anomalies` or `interrupted`.
    pub verdict: &'static str,
}

impl ChaosReport {
    pub fn clean(&self) -> bool {
        self.verdict == "clean"
    }
}

/// The files of a run.
struct OutPaths {
    dir: PathBuf,
    history: PathBuf,
    faults: PathBuf,
    timeline: PathBuf,
    summary: PathBuf,
    logs: PathBuf,
    data: PathBuf,
    secret: PathBuf,
}

impl OutPaths {
    /// Creates the directory (which must not exist, or be empty: old data directories would
    /// make the new history wrong) with its `logs` and `data`, and a cluster secret.
    fn create(dir: &Path) -> Result<OutPaths, ChaosError> {
        let setup = |problem: String| ChaosError::Setup(format!("{}: {problem}", dir.display()));
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            return Err(setup(
                "exists and is not empty; give --out a new directory (a run's data directories \
                 must start empty)"
                    .into(),
            ));
        }
        let paths = OutPaths {
            dir: dir.to_path_buf(),
            history: dir.join("history.jsonl"),
            faults: dir.join("faults.jsonl"),
            timeline: dir.join("timeline.html"),
            summary: dir.join("summary.json"),
            logs: dir.join("logs"),
            data: dir.join("data"),
            secret: dir.join("cluster-secret"),
        };
        for created in [&paths.logs, &paths.data] {
            std::fs::create_dir_all(created).map_err(|e| setup(format!("cannot create: {e}")))?;
        }
        write_secret(&paths.secret).map_err(|e| setup(format!("cannot write the secret: {e}")))?;
        Ok(paths)
    }
}

fn write_secret(path: &Path) -> std::io::Result<()> {
    let mut random = [0u8; 32];
    rand::fill(&mut random[..]);
    let text: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut options = std::fs::File::options();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

/// `count` loopback addresses on ports that were free a moment ago, consecutive from a random
/// base in [`SERVER_PORTS`].
fn choose_ports(count: usize) -> Result<Vec<SocketAddr>, ChaosError> {
    let span = SERVER_PORTS.end - SERVER_PORTS.start - count as u16;
    // Bounded: a few dozen tries.
    for _ in 0..64 {
        let base = SERVER_PORTS.start + rand::random_range(0..span);
        let addresses: Vec<SocketAddr> = (0..count as u16)
            .map(|offset| SocketAddr::from(([127, 0, 0, 1], base + offset)))
            .collect();
        if addresses
            .iter()
            .all(|address| std::net::TcpListener::bind(address).is_ok())
        {
            return Ok(addresses);
        }
    }
    Err(ChaosError::ClusterStart(format!(
        "no {count} free consecutive ports in {SERVER_PORTS:?}"
    )))
}

fn server_specs(
    config: &ChaosConfig,
    paths: &OutPaths,
    addresses: &[SocketAddr],
    proxy: &LinkProxy,
) -> Vec<ServerSpec> {
    (0..addresses.len())
        .map(|server| {
            let name = server_name(server);
            let mut args: Vec<OsString> = vec![
                "server".into(),
                "--id".into(),
                name.clone().into(),
                "--listen".into(),
                addresses[server].to_string().into(),
                "--data-dir".into(),
                paths.data.join(&name).into(),
                "--cluster-id".into(),
                CLUSTER_ID.into(),
                "--cluster-secret-file".into(),
                paths.secret.clone().into(),
                "--snapshot-entries".into(),
                config.snapshot_entries.to_string().into(),
            ];
            for peer in (0..addresses.len()).filter(|&peer| peer != server) {
                args.push("--peer".into());
                args.push(format!("{}={}", server_name(peer), proxy.address(server, peer)).into());
            }
            ServerSpec {
                log: paths.logs.join(format!("{name}.log")),
                name,
                address: addresses[server],
                args,
            }
        })
        .collect()
}

/// A fault in force, and how to undo it.
struct ActiveFault {
    number: u32,
    kind: NemesisKind,
    applied_ns: u64,
    undo: Undo,
    /// The servers whose rejoin is measured after the heal.
    affected: Vec<usize>,
}

enum Undo {
    Restart(Vec<usize>),
    Resume(Vec<usize>),
    Network,
}

/// Who everyone is, once registered.
struct Identities {
    /// Each chaos client's plan and library client.
    clients: Vec<(ClientPlan, Client)>,
    /// The history's number for every client id chaos registered for the history.
    numbers: BTreeMap<ClientId, u32>,
    /// Per server: the credential of its rejoin probe, and of its final reader.
    probes: Vec<Credential>,
    readers: Vec<Credential>,
    finder: Credential,
}

struct Run<'a> {
    config: &'a ChaosConfig,
    clock: Clock,
    paths: OutPaths,
    proxy: LinkProxy,
    servers: Servers,
    observer: &'a mut dyn Observer,
    stop: &'a AtomicBool,
    fault_log: std::io::BufWriter<std::fs::File>,
    /// What `fault_log` holds, for the timeline; at most [`FAULT_EVENTS_KEPT_MAX`].
    fault_events: Vec<FaultEvent>,
    findings: RunFindings,
    faults_by_kind: BTreeMap<&'static str, u64>,
    windows: Vec<(u64, u64)>,
    rejoins: Vec<Rejoin>,
    active: Option<String>,
    finder: Option<Credential>,
    finder_seq: u64,
    probes: Vec<Credential>,
    unexpected_restarts: Vec<u32>,
}

/// Runs chaos as `config` says; see the module documentation. `stop` ends it early.
pub fn run(
    config: &ChaosConfig,
    observer: &mut dyn Observer,
    stop: &AtomicBool,
) -> Result<ChaosReport, ChaosError> {
    config.check().map_err(ChaosError::Setup)?;
    let started = Instant::now();
    let paths = OutPaths::create(&config.out_dir)?;
    let clock = Clock::start();
    let addresses = choose_ports(config.servers)?;
    let proxy = LinkProxy::start(&addresses, config.seed ^ PROXY_STREAM)
        .map_err(|e| ChaosError::ClusterStart(format!("cannot start the peer proxies: {e}")))?;
    let specs = server_specs(config, &paths, &addresses, &proxy);
    let fault_log = std::fs::File::create(&paths.faults)
        .map(std::io::BufWriter::new)
        .map_err(|e| ChaosError::Setup(format!("{}: {e}", paths.faults.display())))?;
    let mut run = Run {
        config,
        clock,
        servers: Servers::new(config.executable.clone(), specs),
        paths,
        proxy,
        observer,
        stop,
        fault_log,
        fault_events: Vec::new(),
        findings: RunFindings::default(),
        faults_by_kind: BTreeMap::new(),
        windows: Vec::new(),
        rejoins: Vec::new(),
        active: None,
        finder: None,
        // Above the seq of the finder's registration, whatever the client library uses.
        finder_seq: 1_000,
        probes: Vec::new(),
        unexpected_restarts: vec![0; config.servers],
    };
    run.observer.phase("starting the cluster");
    run.start_cluster()?;
    let identities = run.register_everyone()?;
    run.finder = Some(identities.finder);
    run.probes = identities.probes.clone();
    let plan = schedule::plan(
        config.seed,
        config.servers,
        config.duration,
        &config.nemesis,
    );
    run.observer.phase("running");
    let recorded = run.run_workload(identities.clients, &plan);
    let interrupted = stop.load(Ordering::Relaxed);
    let final_reads = if interrupted {
        Vec::new()
    } else {
        run.final_restart_and_reads(&identities.readers)
    };
    run.stop_servers(interrupted);
    run.observer.phase("checking");
    Ok(run.conclude(
        recorded,
        final_reads,
        &identities.numbers,
        interrupted,
        started,
    ))
}

impl Run<'_> {
    fn record(&mut self, event: FaultEvent) {
        self.observer.event(&event);
        if self.fault_events.len() < FAULT_EVENTS_KEPT_MAX {
            self.fault_events.push(event.clone());
        }
        let mut line = serde_json::to_vec(&event).expect("a fault event serialises");
        line.push(b'\n');
        // The log is for people and tools after the run: a failed write must not end it.
        let _ = self.fault_log.write_all(&line);
        let _ = self.fault_log.flush();
    }

    fn event(&self, event: &'static str, servers: &[usize], detail: String) -> FaultEvent {
        FaultEvent {
            time: self.clock.now_ns(),
            event,
            fault: None,
            kind: None,
            servers: servers.iter().map(|&s| server_name(s)).collect(),
            detail,
            after_ms: None,
        }
    }

    /// Starts every server and waits until each listens.
    fn start_cluster(&mut self) -> Result<(), ChaosError> {
        for server in 0..self.servers.len() {
            self.servers
                .start(server, self.clock.elapsed(), "the first start")
                .map_err(ChaosError::ClusterStart)?;
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for server in 0..self.servers.len() {
            self.servers
                .wait_listening(server, deadline)
                .map_err(ChaosError::ClusterStart)?;
        }
        Ok(())
    }

    /// Registers the chaos clients (each starting at a different server), and one rejoin
    /// probe, one final reader and one leader finder per cluster.
    fn register_everyone(&mut self) -> Result<Identities, ChaosError> {
        let all: Vec<String> = (0..self.servers.len())
            .map(|s| self.servers.address(s).to_string())
            .collect();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let stop = self.stop;
        let register = |first: usize, options: ClientOptions| -> Result<Client, ChaosError> {
            let mut servers = all.clone();
            servers.rotate_left(first % all.len());
            let mut client = Client::new(servers, options).map_err(|e| {
                ChaosError::ClusterStart(format!("a client could not be made: {e}"))
            })?;
            // Bounded by the deadline: each attempt waits at most an operation timeout.
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(ChaosError::Interrupted);
                }
                match client.register() {
                    Ok(_) => return Ok(client),
                    Err(error) if Instant::now() >= deadline => {
                        return Err(ChaosError::ClusterStart(format!(
                            "no client could register within {STARTUP_TIMEOUT:?}: {error}"
                        )));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        };
        let mut numbers = BTreeMap::new();
        let mut clients = Vec::new();
        for number in 1..=self.config.clients {
            let client = register(number as usize - 1, worker_options())?;
            numbers.insert(client.client_id().expect("registered"), number);
            let plan = ClientPlan {
                number,
                locks: self.config.lock_names(),
                seed: self
                    .config
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(u64::from(number)),
                think_ms: (0, 20),
            };
            clients.push((plan, client));
        }
        let mut probes = Vec::new();
        let mut readers = Vec::new();
        for server in 0..self.servers.len() {
            let probe = register(server, ClientOptions::default())?;
            probes.push(probe.credential().expect("registered"));
            let reader = register(server, ClientOptions::default())?;
            let number = self.config.clients + 1 + server as u32;
            numbers.insert(reader.client_id().expect("registered"), number);
            readers.push(reader.credential().expect("registered"));
        }
        let finder = register(0, ClientOptions::default())?
            .credential()
            .expect("registered");
        Ok(Identities {
            clients,
            numbers,
            probes,
            readers,
            finder,
        })
    }

    /// The clients on their threads, the nemesis on this one, until the duration is up.
    fn run_workload(
        &mut self,
        clients: Vec<(ClientPlan, Client)>,
        plan: &[PlannedFault],
    ) -> Vec<Recorded> {
        let counters = LiveCounters::default();
        let clients_stop = AtomicBool::new(false);
        let clock = self.clock;
        std::thread::scope(|scope| {
            let handles: Vec<_> = clients
                .into_iter()
                .map(|(plan, client)| {
                    let (counters, clients_stop) = (&counters, &clients_stop);
                    std::thread::Builder::new()
                        .name(format!("chaos-c{}", plan.number))
                        .spawn_scoped(scope, move || {
                            workload::run_client(client, &plan, &clock, clients_stop, counters)
                        })
                        .expect("spawning a chaos client")
                })
                .collect();
            self.nemesis(plan, &counters);
            clients_stop.store(true, Ordering::Relaxed);
            self.observer.phase("letting the clients finish");
            let mut recorded: Vec<Recorded> = Vec::new();
            for handle in handles {
                recorded.extend(handle.join().expect("a chaos client panicked"));
            }
            recorded
        })
    }

    /// Plays the schedule, one fault at a time; returns at the end of the duration or on stop.
    fn nemesis(&mut self, plan: &[PlannedFault], counters: &LiveCounters) {
        // How far behind the schedule the run is, from waiting for rejoins.
        let mut shift = Duration::ZERO;
        for fault in plan {
            let start = fault.at + shift;
            if start + fault.hold + QUIET_END > self.config.duration
                || !self.wait_until(start, counters)
            {
                break;
            }
            let active = self.apply(fault);
            let held = self.wait_until(self.clock.elapsed() + fault.hold, counters);
            let (heal_at, affected) = self.heal(active);
            self.await_rejoins(fault, heal_at, &affected, counters);
            let planned_end = fault.heal_at() + shift;
            shift += self.clock.elapsed().saturating_sub(planned_end);
            if !held {
                break;
            }
        }
        self.wait_until(self.config.duration, counters);
    }

    /// Waits until `target` on the run's clock, looking after the servers and reporting
    /// progress; false if `stop` was set first.
    fn wait_until(&mut self, target: Duration, counters: &LiveCounters) -> bool {
        // Bounded by `target`.
        while self.clock.elapsed() < target {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            self.tick(counters);
            let left = target.saturating_sub(self.clock.elapsed());
            std::thread::sleep(left.min(TICK));
        }
        !self.stop.load(Ordering::Relaxed)
    }

    /// Restarts servers that died on their own (recording each), and reports progress.
    fn tick(&mut self, counters: &LiveCounters) {
        for exit in self.servers.reap_unexpected() {
            let detail = format!(
                "{} exited on its own ({})",
                server_name(exit.server),
                exit.status
            );
            self.findings.unexpected_exits.push(detail.clone());
            let event = self.event("unexpected_exit", &[exit.server], detail);
            self.record(event);
            if self.unexpected_restarts[exit.server] < UNEXPECTED_RESTARTS_MAX {
                self.unexpected_restarts[exit.server] += 1;
                self.restart(exit.server, "a restart after it exited on its own");
            }
        }
        let progress = Progress {
            elapsed: self.clock.elapsed(),
            duration: self.config.duration,
            operations: counters.operations.load(Ordering::Relaxed),
            unknown: counters.unknown.load(Ordering::Relaxed),
            faults: self.faults_by_kind.values().sum(),
            active: self.active.clone(),
        };
        self.observer.progress(&progress);
    }

    /// Stops every server with SIGTERM; one that does not stop cleanly, or had already died
    /// on its own, is a finding (unless the run was interrupted, when anything goes).
    fn stop_servers(&mut self, interrupted: bool) {
        let mut unclean: Vec<String> = self
            .servers
            .reap_unexpected()
            .into_iter()
            .map(|exit| {
                format!(
                    "{} exited on its own ({})",
                    server_name(exit.server),
                    exit.status
                )
            })
            .collect();
        unclean.extend(self.servers.stop_all(STOP_GRACE).into_iter().map(|exit| {
            format!(
                "{} did not stop cleanly on SIGTERM ({})",
                server_name(exit.server),
                exit.status
            )
        }));
        if !interrupted {
            self.findings.unexpected_exits.extend(unclean);
        }
    }

    fn restart(&mut self, server: usize, why: &str) {
        if let Err(problem) = self.servers.start(server, self.clock.elapsed(), why) {
            self.findings.liveness.push(problem.clone());
            let event = self.event("restart_failed", &[server], problem);
            self.record(event);
        }
    }

    /// The servers a target names now; a note for the fault log when it named the leader.
    fn resolve(&mut self, target: &Target) -> (Vec<usize>, String) {
        match target {
            Target::Servers(servers) => (servers.clone(), String::new()),
            Target::Leader { fallback } => {
                let running: Vec<(usize, SocketAddr)> = (0..self.servers.len())
                    .filter(|&s| self.servers.state(s) == ServerState::Running)
                    .map(|s| (s, self.servers.address(s)))
                    .collect();
                let finder = self.finder.expect("registered before the nemesis");
                match probe::find_leader(&running, finder, &mut self.finder_seq) {
                    Some(leader) => (vec![leader], " (the leader)".into()),
                    None => (
                        vec![*fallback],
                        " (no leader found: the drawn server)".into(),
                    ),
                }
            }
        }
    }

    /// Carries out `fault` and records it.
    fn apply(&mut self, fault: &PlannedFault) -> ActiveFault {
        let servers = self.servers.len();
        let (undo, affected, detail) = match &fault.action {
            Action::Kill(target) => {
                let (victims, note) = self.resolve(target);
                let victims: Vec<usize> = victims
                    .into_iter()
                    .filter(|&v| self.servers.state(v) != ServerState::Down)
                    .collect();
                for &victim in &victims {
                    self.servers.kill(victim);
                }
                let detail = format!("SIGKILL {}{note}", names(&victims));
                (Undo::Restart(victims.clone()), victims, detail)
            }
            Action::Pause(target) => {
                let (victims, note) = self.resolve(target);
                let victims: Vec<usize> = victims
                    .into_iter()
                    .filter(|&v| self.servers.state(v) == ServerState::Running)
                    .collect();
                for &victim in &victims {
                    self.servers.pause(victim);
                }
                let detail = format!("SIGSTOP {}{note}", names(&victims));
                (Undo::Resume(victims.clone()), victims, detail)
            }
            action => {
                let (isolated, note) = match action {
                    Action::Isolate(target) => {
                        let (chosen, note) = self.resolve(target);
                        (chosen.first().copied(), note)
                    }
                    _ => (None, String::new()),
                };
                let rules = LinkRules::for_action(action, servers, isolated)
                    .expect("every other action is about the network");
                self.proxy.set_rules(rules);
                let detail = match isolated {
                    Some(isolated) => format!("isolate {}{note}", server_name(isolated)),
                    None => action.to_string(),
                };
                (
                    Undo::Network,
                    network_affected(action, servers, isolated),
                    detail,
                )
            }
        };
        *self.faults_by_kind.entry(fault.kind.name()).or_default() += 1;
        self.active = Some(format!("{} #{}: {detail}", fault.kind, fault.number));
        let mut event = self.event("start", &affected, detail);
        event.fault = Some(fault.number);
        event.kind = Some(fault.kind.name());
        let applied_ns = event.time;
        self.record(event);
        ActiveFault {
            number: fault.number,
            kind: fault.kind,
            applied_ns,
            undo,
            affected,
        }
    }

    /// Undoes `active` and records it; returns when it was healed and whom to watch rejoin.
    fn heal(&mut self, active: ActiveFault) -> (Instant, Vec<usize>) {
        let detail = match &active.undo {
            Undo::Restart(victims) => {
                for &victim in victims {
                    self.restart(victim, &format!("the heal of fault {}", active.number));
                }
                format!("restart {}", names(victims))
            }
            Undo::Resume(victims) => {
                for &victim in victims {
                    self.servers.resume(victim);
                }
                format!("SIGCONT {}", names(victims))
            }
            Undo::Network => {
                self.proxy.heal();
                "the network is whole again".to_string()
            }
        };
        let heal_at = Instant::now();
        self.active = None;
        let mut event = self.event("heal", &active.affected, detail);
        event.fault = Some(active.number);
        event.kind = Some(active.kind.name());
        self.windows.push((active.applied_ns, event.time));
        self.record(event);
        (heal_at, active.affected)
    }

    /// Measures how long each of `affected` takes to rejoin after `heal_at`, waiting for all
    /// of them (at most [`REJOIN_WAIT_MAX`]).
    fn await_rejoins(
        &mut self,
        fault: &PlannedFault,
        heal_at: Instant,
        affected: &[usize],
        counters: &LiveCounters,
    ) {
        let cancel = Arc::new(AtomicBool::new(false));
        let probes: Vec<(usize, std::thread::JoinHandle<Option<Instant>>)> = affected
            .iter()
            .map(|&server| {
                let (address, credential) = (self.servers.address(server), self.probes[server]);
                let cancel = Arc::clone(&cancel);
                let deadline = heal_at + REJOIN_WAIT_MAX;
                let handle = std::thread::spawn(move || {
                    probe::await_rejoin(address, credential, &cancel, deadline)
                });
                (server, handle)
            })
            .collect();
        // Bounded by the probes' deadline.
        while probes.iter().any(|(_, handle)| !handle.is_finished()) {
            if self.stop.load(Ordering::Relaxed) {
                cancel.store(true, Ordering::Relaxed);
            }
            self.tick(counters);
            std::thread::sleep(Duration::from_millis(5));
        }
        for (server, handle) in probes {
            let rejoined = handle.join().expect("a rejoin probe panicked");
            self.note_rejoin(fault, server, heal_at, rejoined);
        }
    }

    fn note_rejoin(
        &mut self,
        fault: &PlannedFault,
        server: usize,
        heal_at: Instant,
        at: Option<Instant>,
    ) {
        let after_ms = at.map(|at| at.duration_since(heal_at).as_secs_f64() * 1000.0);
        self.rejoins.push(Rejoin {
            fault: fault.number,
            kind: fault.kind.name(),
            server: server_name(server),
            after_ms,
        });
        let mut event = match after_ms {
            Some(after_ms) => {
                let mut event = self.event("rejoined", &[server], format!("after {after_ms:.0}ms"));
                event.after_ms = Some(after_ms);
                event
            }
            None if self.stop.load(Ordering::Relaxed) => {
                self.event("not_rejoined", &[server], "the run was interrupted".into())
            }
            None => {
                let detail = format!(
                    "{} did not rejoin within {REJOIN_WAIT_MAX:?} of the heal of fault {} ({})",
                    server_name(server),
                    fault.number,
                    fault.kind
                );
                self.findings.liveness.push(detail.clone());
                self.event("not_rejoined", &[server], detail)
            }
        };
        event.fault = Some(fault.number);
        event.kind = Some(fault.kind.name());
        self.record(event);
    }

    /// Restarts every server from its data directory and reads every lock through each.
    fn final_restart_and_reads(&mut self, readers: &[Credential]) -> Vec<Recorded> {
        self.observer.phase("restarting every server");
        self.proxy.heal();
        self.stop_servers(false);
        let everyone: Vec<usize> = (0..self.servers.len()).collect();
        let event = self.event(
            "final_restart",
            &everyone,
            "SIGTERM, then a start from disk".into(),
        );
        self.record(event);
        for server in 0..self.servers.len() {
            self.restart(server, "the final restart");
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for server in 0..self.servers.len() {
            if let Err(problem) = self.servers.wait_listening(server, deadline) {
                self.findings.liveness.push(problem);
            }
        }
        self.observer
            .phase("reading every lock through every server");
        let mut reads = Vec::new();
        for (server, &reader) in readers.iter().enumerate() {
            if self.servers.state(server) != ServerState::Running {
                continue;
            }
            let number = self.config.clients + 1 + server as u32;
            reads.extend(self.final_reads(server, number, reader));
        }
        reads
    }

    fn final_reads(&mut self, server: usize, number: u32, reader: Credential) -> Vec<Recorded> {
        let deadline = Instant::now() + FINAL_READS_TIMEOUT;
        let mut client = pinned_client(self.servers.address(server), reader);
        let mut reads = Vec::new();
        for lock in self.config.lock_names() {
            // Bounded by the deadline: each attempt waits at most an operation timeout.
            let read = loop {
                let call_ns = self.clock.now_ns();
                match workload::check(&mut client, &lock, Consistency::Linearizable) {
                    Ok(observed) => break Some((call_ns, observed)),
                    Err(_) if Instant::now() >= deadline || self.stop.load(Ordering::Relaxed) => {
                        break None;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            let Some((call_ns, observed)) = read else {
                self.findings.liveness.push(format!(
                    "{} did not answer a linearizable read of {lock} within \
                     {FINAL_READS_TIMEOUT:?} of the final restart",
                    server_name(server)
                ));
                continue;
            };
            reads.push(Recorded {
                client: number,
                op: HistoryOpKind::Check,
                lock,
                consistency: Some(Consistency::Linearizable),
                call_ns,
                return_ns: Some(self.clock.now_ns()),
                observed,
                error: None,
                index: client.last_answer_index(),
            });
        }
        reads
    }

    /// Writes the history and the summary, runs the checks, and builds the report.
    fn conclude(
        mut self,
        mut recorded: Vec<Recorded>,
        final_reads: Vec<Recorded>,
        numbers: &BTreeMap<ClientId, u32>,
        interrupted: bool,
        started: Instant,
    ) -> ChaosReport {
        recorded.sort_by_key(|op| (op.call_ns, op.client));
        let mut history = to_history(&recorded, numbers, &mut self.findings);
        history.extend(to_history(&final_reads, numbers, &mut self.findings));
        self.note_failed_operations(&recorded);
        let mut text = Vec::new();
        crate::sim::history::write_jsonl(&history, &mut text)
            .expect("chaos records valid operations");
        if let Err(error) = std::fs::write(&self.paths.history, &text) {
            self.findings.client_errors.push(format!(
                "the history could not be written to {}: {error}",
                self.paths.history.display()
            ));
        }
        let logs = self.read_logs();
        let text = String::from_utf8(text).expect("JSON is UTF-8");
        let (checks, verdict_report) =
            verdict::judge_with_report(&text, &logs, &self.findings, CHECK_TIME_MAX);
        self.write_timeline(&history, verdict_report.as_ref());
        let report = self.report(&recorded, final_reads.len(), checks, interrupted, started);
        let summary = serde_json::to_vec_pretty(&report).expect("a report serialises");
        let _ = std::fs::write(&self.paths.summary, summary);
        report
    }

    /// `timeline.html` in the output directory: a lane per server and client, the faults as
    /// spans on the servers they hit, rejoins and restarts as markers, and the history's
    /// verdict (a linearizability failure's window and furthest linearization). A timeline that
    /// cannot be written is a finding, like a history that cannot.
    fn write_timeline(&mut self, history: &[HistoryOp], verdict: Option<&LinearizabilityReport>) {
        let names = crate::sim::history::ClientNames::simulator();
        let title = format!("lockstep chaos: seed {}", self.config.seed);
        let mut input = timeline::TimelineInput::new(&title, history, names);
        input.source = "chaos".into();
        input.subtitle = format!(
            "{} servers, {} clients, {} locks, nemesis {}: {} operations, {} faults",
            self.config.servers,
            self.config.clients,
            self.config.locks,
            self.config
                .nemesis
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
                .join(","),
            history.len(),
            self.faults_by_kind.values().sum::<u64>()
        );
        input.servers = (0..self.config.servers).map(server_name).collect();
        input.origin_ns = Some(0);
        input.end_ns = Some(self.clock.now_ns());
        (input.faults, input.markers) = fault_spans(&self.fault_events, self.clock.now_ns());
        input.verdict = verdict;
        input.notes.push(
            "A real cluster: no messages are drawn (the peer links are TCP streams through \
             chaos's proxies), only what the clients saw and what the nemesis did."
                .into(),
        );
        if self.fault_events.len() == FAULT_EVENTS_KEPT_MAX {
            input.notes.push(format!(
                "Only the first {FAULT_EVENTS_KEPT_MAX} fault events are drawn; faults.jsonl has all."
            ));
        }
        let page = timeline::build(input);
        if let Err(error) = timeline::write_html(&self.paths.timeline, &page) {
            self.findings.client_errors.push(format!(
                "the timeline could not be written to {}: {error}",
                self.paths.timeline.display()
            ));
        }
    }

    fn note_failed_operations(&mut self, recorded: &[Recorded]) {
        let failed: Vec<&Recorded> = recorded
            .iter()
            .filter(|op| op.observed == Observed::Failed)
            .collect();
        for op in failed.iter().take(FAILURES_LISTED_MAX) {
            self.findings.client_errors.push(format!(
                "c{} {} {} at {:.3}s: {}",
                op.client,
                op.op.name(),
                op.lock,
                op.call_ns as f64 / 1e9,
                op.error.as_deref().unwrap_or("failed")
            ));
        }
        if failed.len() > FAILURES_LISTED_MAX {
            self.findings.client_errors.push(format!(
                "... and {} more failed operations",
                failed.len() - FAILURES_LISTED_MAX
            ));
        }
    }

    fn read_logs(&self) -> Vec<(String, String)> {
        (0..self.servers.len())
            .map(|server| {
                let log = std::fs::read(self.servers.log_path(server)).unwrap_or_default();
                (
                    server_name(server),
                    String::from_utf8_lossy(&log).into_owned(),
                )
            })
            .collect()
    }

    fn report(
        &self,
        recorded: &[Recorded],
        final_reads: usize,
        checks: Vec<CheckOutcome>,
        interrupted: bool,
        started: Instant,
    ) -> ChaosReport {
        let mut by_result: BTreeMap<&'static str, u64> = BTreeMap::new();
        for op in recorded {
            *by_result.entry(op.observed.name()).or_default() += 1;
        }
        let (with_faults, without_faults) = availability(recorded, &self.windows);
        let counters = self.proxy.counters();
        let verdict = if interrupted {
            "interrupted"
        } else if checks.iter().all(|check| check.passed) {
            "clean"
        } else {
            "anomalies"
        };
        ChaosReport {
            format: "lockstep-chaos/1",
            seed: self.config.seed,
            servers: self.config.servers,
            clients: self.config.clients,
            locks: self.config.locks,
            duration_ms: u64::try_from(self.config.duration.as_millis()).unwrap_or(u64::MAX),
            nemesis: self.config.nemesis.iter().map(|kind| kind.name()).collect(),
            out_dir: self.paths.dir.clone(),
            interrupted,
            wall_seconds: started.elapsed().as_secs_f64(),
            operations: recorded.len() as u64,
            unknown: recorded
                .iter()
                .filter(|op| !op.observed.is_answer())
                .count() as u64,
            operations_by_result: by_result,
            faults_by_kind: self.faults_by_kind.clone(),
            availability_with_faults: with_faults,
            availability_without_faults: without_faults,
            rejoins: self.rejoins.clone(),
            final_reads: final_reads as u64,
            proxy_connections: counters.connections.load(Ordering::Relaxed),
            proxy_broken_directions: counters.broken.load(Ordering::Relaxed),
            checks,
            verdict,
        }
    }
}

fn worker_options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(200),
        attempt_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(3),
        error_backoff: Duration::from_millis(50),
        ..ClientOptions::default()
    }
}

/// The servers a network fault cuts off from a majority: whose rejoin is worth measuring.
fn network_affected(action: &Action, servers: usize, isolated: Option<usize>) -> Vec<usize> {
    let majority = servers / 2 + 1;
    match action {
        Action::Partition { groups } => {
            let minority: Vec<usize> = groups
                .iter()
                .filter(|group| group.len() < majority)
                .flatten()
                .copied()
                .collect();
            let mut minority = minority;
            minority.sort_unstable();
            minority
        }
        Action::Isolate(_) => isolated.into_iter().collect(),
        Action::Cut { from, to } => {
            let mut touched = to.clone();
            touched.push(*from);
            touched.sort_unstable();
            touched
        }
        Action::Delay { server, .. } | Action::Drop { server, .. } => vec![*server],
        Action::Kill(_) | Action::Pause(_) => Vec::new(),
    }
}

/// The history's operations, owners named by their client numbers. An owner id no chaos
/// client has is itself a finding, and gets a number of its own.
fn to_history(
    recorded: &[Recorded],
    numbers: &BTreeMap<ClientId, u32>,
    findings: &mut RunFindings,
) -> Vec<HistoryOp> {
    let base = numbers.values().max().copied().unwrap_or(0) + 1;
    let mut strangers: BTreeMap<ClientId, u32> = BTreeMap::new();
    let mut number_of = |id: ClientId, findings: &mut RunFindings| -> u32 {
        if let Some(&number) = numbers.get(&id) {
            return number;
        }
        let next = base + strangers.len() as u32;
        *strangers.entry(id).or_insert_with(|| {
            findings.client_errors.push(format!(
                "a lock was reported held by client id {}, which is no chaos client",
                id.0
            ));
            next
        })
    };
    recorded
        .iter()
        .map(|op| {
            let result = match op.observed {
                Observed::Granted { token } => HistoryResult::Granted { token },
                Observed::HeldBy { owner } => HistoryResult::HeldBy {
                    owner: number_of(owner, findings),
                },
                Observed::Released => HistoryResult::Released,
                Observed::NotOwner => HistoryResult::NotOwner,
                Observed::Free => HistoryResult::Free,
                Observed::Owner { owner, token } => HistoryResult::Owner {
                    owner: number_of(owner, findings),
                    token: Some(token),
                },
                Observed::TimedOut | Observed::Unreachable | Observed::Failed => {
                    HistoryResult::Unknown
                }
            };
            HistoryOp {
                client: op.client,
                op: op.op,
                lock: op.lock.clone(),
                consistency: op.consistency,
                call_ns: op.call_ns,
                return_ns: op.return_ns,
                result,
                index: op.index,
                claim: Claim::EXCLUSIVE,
            }
        })
        .collect()
}

/// Answered out of called, for operations called inside a fault window and outside.
/// `windows` are `(applied, healed)` in order and never overlap.
fn availability(recorded: &[Recorded], windows: &[(u64, u64)]) -> (Availability, Availability) {
    let mut with_faults = Availability::default();
    let mut without_faults = Availability::default();
    for op in recorded {
        // The last window that began at or before the call.
        let position = windows.partition_point(|&(applied, _)| applied <= op.call_ns);
        let inside = position > 0 && op.call_ns <= windows[position - 1].1;
        let tally = if inside {
            &mut with_faults
        } else {
            &mut without_faults
        };
        tally.total += 1;
        if let Some(return_ns) = op.return_ns {
            tally.answered += 1;
            let took_ms = (return_ns - op.call_ns) / 1_000_000;
            tally.longest_answer_ms = tally.longest_answer_ms.max(took_ms);
        }
    }
    (with_faults, without_faults)
}

/// The fault log as the timeline draws it: each `start` paired with its `heal` as a span on the
/// servers it named (kills as `crash`, pauses as `pause`, network faults by their kind), and
/// everything else (rejoins, unexpected exits, the final restart) as markers. A fault never
/// healed lasts to `end_ns`.
fn fault_spans(
    events: &[FaultEvent],
    end_ns: u64,
) -> (Vec<timeline::FaultSpan>, Vec<timeline::Marker>) {
    let mut open: BTreeMap<u32, timeline::FaultSpan> = BTreeMap::new();
    let mut spans = Vec::new();
    let mut markers = Vec::new();
    for event in events {
        match (event.event, event.fault) {
            ("start", Some(number)) => {
                let kind = event.kind.unwrap_or("fault");
                let drawn = if kind.starts_with("kill") {
                    "crash"
                } else if kind.starts_with("pause") {
                    "pause"
                } else if kind.starts_with("isolate") {
                    "isolate"
                } else {
                    kind
                };
                let span = timeline::FaultSpan {
                    kind: drawn.to_string(),
                    label: format!("#{number} {kind}: {}", event.detail),
                    start_ns: event.time,
                    end_ns: None,
                    nodes: event.servers.clone(),
                };
                open.insert(number, span);
            }
            ("heal", Some(number)) => {
                if let Some(mut span) = open.remove(&number) {
                    span.end_ns = Some(event.time);
                    spans.push(span);
                }
            }
            _ => markers.push(timeline::Marker {
                at_ns: event.time,
                kind: event.event.to_string(),
                label: format!(
                    "{} {}: {}",
                    event.event,
                    event.servers.join(","),
                    event.detail
                ),
            }),
        }
    }
    spans.extend(open.into_values().map(|mut span| {
        span.end_ns = Some(end_ns);
        span
    }));
    (spans, markers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call_ns: u64, observed: Observed) -> Recorded {
        Recorded {
            client: 1,
            op: HistoryOpKind::Preempt,
            lock: "w1".into(),
            consistency: None,
            call_ns,
            return_ns: observed.is_answer().then_some(call_ns + 1),
            observed,
            error: None,
            index: None,
        }
    }

    fn fault_event(
        time: u64,
        event: &'static str,
        fault: Option<u32>,
        kind: &'static str,
    ) -> FaultEvent {
        FaultEvent {
            time,
            event,
            fault,
            kind: fault.map(|_| kind),
            servers: vec!["s2".into()],
            detail: "what happened".into(),
            after_ms: None,
        }
    }

    #[test]
    fn the_fault_log_becomes_spans_from_start_to_heal_and_markers_for_the_rest() {
        let events = [
            fault_event(10, "start", Some(1), "kill-leader"),
            fault_event(20, "heal", Some(1), "kill-leader"),
            fault_event(25, "rejoined", None, ""),
            fault_event(30, "start", Some(2), "partition"),
        ];
        let (spans, markers) = fault_spans(&events, 99);
        let drawn: Vec<(&str, u64, Option<u64>)> = spans
            .iter()
            .map(|span| (span.kind.as_str(), span.start_ns, span.end_ns))
            .collect();
        assert_eq!(
            drawn,
            vec![("crash", 10, Some(20)), ("partition", 30, Some(99))],
            "a kill is drawn as a crash; a fault never healed lasts to the end"
        );
        assert_eq!(spans[0].nodes, vec!["s2".to_string()]);
        assert_eq!(markers.len(), 1);
        assert_eq!(
            (markers[0].at_ns, markers[0].kind.as_str()),
            (25, "rejoined")
        );
    }

    #[test]
    fn availability_counts_operations_by_the_window_they_were_called_in() {
        let windows = [(100, 200), (500, 600)];
        let recorded = [
            op(50, Observed::Released),
            op(100, Observed::TimedOut),
            op(150, Observed::Released),
            op(300, Observed::Unreachable),
            op(600, Observed::TimedOut),
            op(601, Observed::NotOwner),
        ];
        let (with_faults, without_faults) = availability(&recorded, &windows);
        assert_eq!((with_faults.answered, with_faults.total), (1, 3));
        assert_eq!((without_faults.answered, without_faults.total), (2, 3));
    }

    #[test]
    fn only_the_cut_off_side_of_a_partition_is_watched_rejoining() {
        let partition = Action::Partition {
            groups: [vec![2], vec![0, 1]],
        };
        assert_eq!(network_affected(&partition, 3, None), vec![2]);
        // Two halves of four: neither has a majority, so both are watched.
        let halves = Action::Partition {
            groups: [vec![0, 3], vec![1, 2]],
        };
        assert_eq!(network_affected(&halves, 4, None), vec![0, 1, 2, 3]);
        let cut = Action::Cut {
            from: 1,
            to: vec![0],
        };
        assert_eq!(network_affected(&cut, 3, None), vec![0, 1]);
    }

    #[test]
    fn an_owner_that_is_no_chaos_client_is_a_finding() {
        let numbers: BTreeMap<ClientId, u32> = [(ClientId(7), 1)].into_iter().collect();
        let recorded = [
            op(1, Observed::HeldBy { owner: ClientId(7) }),
            op(
                2,
                Observed::HeldBy {
                    owner: ClientId(99),
                },
            ),
        ];
        let mut findings = RunFindings::default();
        let history = to_history(&recorded, &numbers, &mut findings);
        assert_eq!(history[0].result, HistoryResult::HeldBy { owner: 1 });
        assert_eq!(history[1].result, HistoryResult::HeldBy { owner: 2 });
        assert_eq!(findings.client_errors.len(), 1);
        assert!(findings.client_errors[0].contains("client id 99"));
    }

    #[test]
    fn bad_numbers_are_refused_by_flag() {
        let config = ChaosConfig {
            servers: 3,
            clients: 12,
            locks: 4,
            duration: Duration::from_secs(60),
            seed: 1,
            nemesis: NemesisKind::ALL.to_vec(),
            out_dir: PathBuf::from("unused"),
            executable: PathBuf::from("lockstep"),
            snapshot_entries: 1000,
        };
        assert!(config.check().is_ok());
        let servers = ChaosConfig {
            servers: 10,
            ..config.clone()
        };
        assert!(servers.check().unwrap_err().starts_with("--servers 10"));
        let short = ChaosConfig {
            duration: Duration::from_secs(1),
            ..config.clone()
        };
        assert!(short.check().unwrap_err().starts_with("--duration"));
        let locks = ChaosConfig { locks: 0, ..config };
        assert!(locks.check().unwrap_err().starts_with("--locks 0"));
    }
}
