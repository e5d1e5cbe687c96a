//! Random whole scenarios, for the explorer and the property tests (swarm testing: each seed
//! switches fault kinds on and off and picks its own rates, as FoundationDB's simulator and
//! TigerBeetle's VOPR do).
//!
//! A [`Shape`] is a scenario described by plain numbers. The explorer draws one from a seed;
//! proptest generates and shrinks them. [`Shape::build`] turns it into a [`Scenario`] that goes
//! through the scenario file format and back, so a failing case printed as YAML replays exactly.
//!
//! Every run has two phases. The safety phase (`safety_seconds`) runs the workload under the
//! shape's faults. Then the network heals and calms down (no loss, no duplicates, base latency),
//! every crashed server restarts, and each client sends a linearizable check that must be
//! answered (`expect: answered`): the liveness phase. After `duration` the runner lets replicas
//! settle and checks convergence.

use super::rng::{Stream, Streams};
use super::rogue::{AttackKind, ROGUES_MAX, RogueSpec};
use super::scenario::{self, Format, Scenario};
use super::scenario_yaml::{duration_text, rogues_text};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;
use std::time::Duration;

/// The election timeout (min, spread) in ms of shapes that do not draw a narrow one.
const ELECTION_TIMEOUT_DEFAULT_MS: (u32, u32) = (150, 150);
/// How often an election bounce crashes and restarts its server.
const ELECTION_BOUNCES: u64 = 20;
/// Length of the liveness phase that follows the safety phase.
pub const LIVENESS_PHASE: Duration = Duration::from_secs(4);
/// When, into the liveness phase, each client's probe starts.
const PROBE_DELAY: Duration = Duration::from_millis(1_500);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(2_500);
/// The narrowest election timeout spread, as a multiple of the base latency's maximum.
///
/// Raft elects a leader only when the randomized timeouts spread the servers' candidacies
/// further apart than a vote takes to travel (§5.2, §9.3): otherwise every server pre-votes,
/// stands and votes for itself before any other candidate's request arrives, round after
/// round. Seed 22333 (4 servers, 170-171ms, latency 5-6ms) split the vote for 77 terms that
/// way. A spread of one round trip at the slowest base latency still splits many votes, which
/// is what a narrow spread is for, but the first server to time out wins within a few rounds
/// (median 2, at most 14 of 200 seeds on that configuration), well inside the liveness phase.
/// The latency tail is left out: like loss, it is rare enough that Raft rides it out.
const ELECTION_SPREAD_PER_LATENCY: u32 = 2;

/// One fault, with node and server numbers taken modulo the cluster's size so that a shape
/// stays valid when shrinking removes servers or clients.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    Crash {
        server: u32,
    },
    CrashLeader,
    Restart {
        server: u32,
    },
    RestartAll,
    /// Bit i set puts node i (servers first, then clients) in the second group.
    Partition {
        mask: u64,
    },
    Isolate {
        node: u32,
    },
    IsolateLeader,
    /// One-way: everything from `from` to the nodes whose bit is set is dropped.
    Cut {
        from: u32,
        to_mask: u64,
    },
    Heal,
    Network {
        drop_permille: u32,
        latency_max_ms: u32,
    },
    /// Crash a server and restart it `gap_ms` later: the quick bounce that finds state a
    /// server should have persisted and did not (a vote, a log entry).
    Bounce {
        server: u32,
        gap_ms: u32,
    },
    /// Crash the leader; from `delay_ms` later, bounce `server` (down `gap_ms`) every 20 ms,
    /// twenty times, all through the election the crash starts: every vote it casts must
    /// survive its next restart.
    ElectionBounce {
        server: u32,
        delay_ms: u32,
        gap_ms: u32,
    },
    /// Crash `server` inside its next step of more than `after_effects` effects, and restart
    /// it `restart_ms` after that crash.
    StepCrash {
        server: u32,
        after_effects: u32,
        restart_ms: u32,
    },
    /// Crash the leader and restart every crashed server `leader_down_ms` later, so that an
    /// election follows with every server in it; from `delay_ms` after the crash, every 20 ms
    /// ten times, arm a crash of `server` inside its next step of more than `after_effects`
    /// effects, restarting it `restart_ms` after it fires. Cuts the vote steps an election is
    /// made of between two of their effects, and brings the voter back while the election
    /// still runs.
    ElectionStepCrash {
        server: u32,
        leader_down_ms: u32,
        delay_ms: u32,
        after_effects: u32,
        restart_ms: u32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When, as a fraction of the safety phase in thousandths (0..1000).
    pub at_permille: u32,
    pub kind: FaultKind,
}

/// A scenario as plain numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub seed: u64,
    pub servers: u32,
    pub clients: u32,
    pub safety_seconds: u32,
    pub latency_min_ms: u32,
    pub latency_spread_ms: u32,
    /// (probability in thousandths, maximum in ms) of a long latency tail.
    pub tail: Option<(u32, u32)>,
    pub drop_permille: u32,
    pub duplicate_permille: u32,
    pub faults: Vec<Fault>,
    pub workload_ops: u32,
    pub locks: u32,
    /// Weights of preempt, release and check.
    pub mix: (u32, u32, u32),
    pub linearizable_percent: u32,
    pub think_max_ms: u32,
    /// Election timeout (min, spread) in ms. A narrow spread makes split votes, and so
    /// repeated elections in quick succession, common. Random shapes keep the spread at least
    /// [`election_spread_floor_ms`] of their latency, so that the liveness phase can be won.
    pub election_timeout_ms: (u32, u32),
    /// Entries per AppendEntries: small batches make followers lag in steps.
    pub append_batch: u32,
    /// Applied entries kept before a snapshot compacts them (`None`: never). Small values
    /// make lagging followers catch up by snapshot.
    pub snapshot_entries: Option<u32>,
    /// Rogue clients attacking the servers directly (`None`: none).
    pub rogues: Option<RogueShape>,
    /// Disk faults: (torn writes in thousandths, corrupt records in millionths), `None` for a
    /// disk that keeps what it is given.
    pub disk: Option<(u32, u32)>,
    /// BUGGIFY's chance per decision point in thousandths, `None` for a server that takes
    /// only the paths a healthy run makes likely.
    pub buggify_permille: Option<u32>,
    /// Time faults and sessions (`None`: perfect clocks, no pauses, sessions that never
    /// expire).
    pub time: Option<TimeShape>,
    /// Blocking acquires in the workload: (weight against the mix's others, longest wait in
    /// ms); `None`: none.
    pub acquire: Option<(u32, u32)>,
    /// Shared claims in the workload: (percent of preempts and acquires that claim shared,
    /// permits they name, 0 for none); `None`: every claim exclusive.
    pub shared: Option<(u32, u32)>,
    /// Watchers (`sim::watch`), drawn from a stream of their own: empty in most seeds.
    pub watches: Vec<WatchShape>,
}

/// One watcher of a swarm seed.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchShape {
    /// When it starts, in thousandths of the safety phase.
    pub at_permille: u32,
    /// Its client (1-based, modulo the clients).
    pub client: u32,
    /// The lock `w<N>` it watches, or `None` for every workload lock (`prefix: w`).
    pub lock: Option<u32>,
    /// It starts from index 1 (everything, or `compacted`) instead of from now.
    pub from_start: bool,
}

/// Time faults and sessions as plain numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeShape {
    /// Clock drift bound in ten-thousandths (`clock: {drift}`): every node's rate is drawn
    /// within it, and the protocol is configured for it.
    pub drift_per_10k: u32,
    /// Session TTL and lock-delay in ms (`sessions`), if sessions expire at all.
    pub sessions_ms: Option<(u32, u32)>,
    /// Pauses: (when, in thousandths of the safety phase; which node, servers first then
    /// clients, modulo their count; how long in ms). Each ends by the end of the safety phase.
    pub pauses: Vec<(u32, u32, u32)>,
}
#[derive(Clone, Debug, PartialEq)]
pub struct RogueShape {
    pub count: u32,
    pub rate_per_second: u32,
    /// Weight per attack kind, in `AttackKind::ALL` order.
    pub mix: [u32; AttackKind::ALL.len()],
}

/// The share of seeds the explorer gives rogue clients.
const ROGUE_SEED_PROBABILITY: f64 = 0.3;
/// The share of seeds the explorer gives crashes inside a step.
pub const STEP_CRASH_SEED_PROBABILITY: f64 = 0.5;
/// The share of the seeds with crashes inside a step that also get election step crashes.
const ELECTION_STEP_CRASH_SHARE: f64 = 0.7;
/// The share of seeds the explorer gives faulty disks.
pub const DISK_SEED_PROBABILITY: f64 = 0.3;
/// The share of seeds whose servers BUGGIFY (`node::server::Buggify`).
pub const BUGGIFY_SEED_PROBABILITY: f64 = 0.3;
/// The share of seeds with drifting clocks, pauses and expiring sessions.
pub const TIME_SEED_PROBABILITY: f64 = 0.3;
/// Share of seeds whose workload draws blocking acquires.
pub const ACQUIRE_SEED_PROBABILITY: f64 = 0.3;
/// Share of seeds whose workload claims shared locks or semaphores.
pub const SHARED_SEED_PROBABILITY: f64 = 0.3;
/// Share of seeds with watchers.
pub const WATCH_SEED_PROBABILITY: f64 = 0.3;
/// How often an election step crash arms its crash inside a step.
const ELECTION_STEP_CRASHES: u64 = 10;
/// The effect counts an election step crash cuts after. A vote that moves its voter to a new
/// term is five effects (persist the term, set the timer, persist the vote, set the timer,
/// send the answer: in some order) and one in a term already known three: 1 to 4 cut each of
/// them strictly inside (0 would be a crash before the step, which bounces do already).
const ELECTION_STEP_CRASH_EFFECTS: std::ops::RangeInclusive<u32> = 1..=4;

/// Bounds for the explorer's random shapes.
#[derive(Clone, Debug)]
pub struct SwarmBounds {
    pub servers_min: u32,
    pub servers_max: u32,
    /// Length of the safety phase.
    pub safety: Duration,
}

impl Default for SwarmBounds {
    fn default() -> SwarmBounds {
        SwarmBounds {
            servers_min: 1,
            servers_max: 7,
            safety: Duration::from_secs(10),
        }
    }
}

impl Shape {
    /// The shape the explorer runs for `seed`: which fault kinds are on, their rate, the
    /// network and the workload all come from the seed's own stream.
    pub fn random(seed: u64, bounds: &SwarmBounds) -> Shape {
        let mut rng: ChaCha8Rng = Streams::new(seed).rng_for(Stream::Swarm);
        let servers = rng.random_range(bounds.servers_min..=bounds.servers_max);
        let clients = rng.random_range(1..=8u32);
        let safety_seconds = u32::try_from(bounds.safety.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        let mut kinds_on: Vec<u32> = (0..5).filter(|_| rng.random_bool(0.5)).collect();
        if kinds_on.is_empty() && rng.random_bool(0.8) {
            kinds_on.push(rng.random_range(0..5));
        }
        let rate_per_second = rng.random_range(0.2..1.5);
        let fault_count = if kinds_on.is_empty() {
            0
        } else {
            (f64::from(safety_seconds) * rate_per_second).round() as u32
        };
        let nodes = servers + clients;
        let faults = (0..fault_count)
            .map(|_| {
                let family = kinds_on[rng.random_range(0..kinds_on.len())];
                let kind = random_fault(&mut rng, family, servers, nodes);
                Fault {
                    at_permille: rng.random_range(0..1000),
                    kind,
                }
            })
            .collect();
        let think_max_ms = rng.random_range(5..=80);
        let latency_min_ms = rng.random_range(0..=5);
        let latency_spread_ms = rng.random_range(1..=40);
        let spread_floor_ms = election_spread_floor_ms(latency_min_ms + latency_spread_ms);
        let mut shape = Shape {
            seed,
            servers,
            clients,
            safety_seconds,
            latency_min_ms,
            latency_spread_ms,
            tail: rng
                .random_bool(0.3)
                .then(|| (rng.random_range(5..=50), rng.random_range(100..=500))),
            drop_permille: if rng.random_bool(0.5) {
                rng.random_range(0..=100)
            } else {
                0
            },
            duplicate_permille: if rng.random_bool(0.5) {
                rng.random_range(0..=100)
            } else {
                0
            },
            faults,
            // Enough operations to keep every client busy through the safety phase.
            workload_ops: clients * safety_seconds * 1_000 / (think_max_ms / 2 + 20),
            locks: rng.random_range(1..=8),
            mix: (
                rng.random_range(1..=10),
                rng.random_range(1..=10),
                rng.random_range(0..=10),
            ),
            linearizable_percent: rng.random_range(0..=100),
            think_max_ms,
            election_timeout_ms: if rng.random_bool(0.3) {
                let min = rng.random_range(100..=200);
                let spread = rng.random_range(1..=20);
                (min, spread.max(spread_floor_ms))
            } else {
                ELECTION_TIMEOUT_DEFAULT_MS
            },
            append_batch: if rng.random_bool(0.5) {
                rng.random_range(1..=4)
            } else {
                64
            },
            // Drawn last, so that every other choice for a seed is what it was before
            // snapshots existed.
            snapshot_entries: rng.random_bool(0.3).then(|| rng.random_range(2..=40)),
            rogues: None,
            disk: None,
            buggify_permille: None,
            time: None,
            acquire: None,
            shared: None,
            watches: Vec::new(),
        };
        // Drawn after everything else, for the same reason. The spread floor makes split
        // votes rarer, and a split vote with a restart inside it is what shows a server
        // forgetting its vote; half the narrow shapes get one more election bounce to win
        // those chances back, whichever fault kinds they switched on.
        let narrow = shape.election_timeout_ms != ELECTION_TIMEOUT_DEFAULT_MS;
        if narrow && rng.random_bool(0.5) {
            shape.faults.push(Fault {
                at_permille: rng.random_range(0..1000),
                kind: random_election_bounce(&mut rng, servers),
            });
        }
        // Drawn after everything else, so that every other choice for a seed is what it was
        // before rogues existed. Half the rogue seeds attack with every kind, the other half
        // with a few kinds, so that a rare kind is not always drowned by the common ones.
        if rng.random_bool(ROGUE_SEED_PROBABILITY) {
            // The kinds from before watches are drawn from this stream as they were; the later
            // ones from a stream of their own, so that every draw here is what it was.
            let before = AttackKind::KINDS_BEFORE_WATCHES;
            let mut mix = [1; AttackKind::ALL.len()];
            let few = rng.random_bool(0.5);
            if few {
                for weight in &mut mix[..before] {
                    *weight = if rng.random_bool(0.4) {
                        rng.random_range(1..=5)
                    } else {
                        0
                    };
                }
                if mix[..before].iter().all(|weight| *weight == 0) {
                    mix[rng.random_range(0..before)] = 1;
                }
            }
            let mut later = Streams::new(seed).rng_for(Stream::RogueSwarm);
            for weight in &mut mix[before..] {
                *weight = match few {
                    false => 1,
                    true if later.random_bool(0.4) => later.random_range(1..=5),
                    true => 0,
                };
            }
            shape.rogues = Some(RogueShape {
                count: rng.random_range(1..=3),
                rate_per_second: rng.random_range(5..=60),
                mix,
            });
        }
        // Drawn after everything else, so that every other choice for a seed is what it was
        // before crashes inside a step and faulty disks existed.
        if rng.random_bool(STEP_CRASH_SEED_PROBABILITY) {
            draw_step_crashes(&mut rng, &mut shape);
        }
        if rng.random_bool(DISK_SEED_PROBABILITY) {
            shape.disk = Some((rng.random_range(100..=1000), rng.random_range(10..=500)));
        }
        // Drawn last, so that every other choice is what it was before BUGGIFY existed: from
        // a rare nudge (0.5% of decisions) to a server that misbehaves often (10%).
        if rng.random_bool(BUGGIFY_SEED_PROBABILITY) {
            shape.buggify_permille = Some(rng.random_range(5..=100));
        }
        // Drawn after BUGGIFY, for the same reason.
        if rng.random_bool(TIME_SEED_PROBABILITY) {
            shape.time = Some(draw_time(&mut rng));
        }
        // Drawn last, so that every other choice is what it was before acquires existed.
        if rng.random_bool(ACQUIRE_SEED_PROBABILITY) {
            shape.acquire = Some((rng.random_range(1..=10), rng.random_range(0..=3_000)));
        }
        // Drawn last, so that every other choice is what it was before shared locks existed.
        // Half the sharing seeds are semaphores of 1 to 4 permits, half readers-writer locks.
        if rng.random_bool(SHARED_SEED_PROBABILITY) {
            let permits = if rng.random_bool(0.5) {
                rng.random_range(1..=4)
            } else {
                0
            };
            shape.shared = Some((rng.random_range(20..=80), permits));
        }
        // From a stream of their own, so that every swarm draw above is what it was before
        // watches existed.
        shape.watches = draw_watches(&mut Streams::new(seed).rng_for(Stream::Watch));
        shape
    }

    /// Which fault families a shape uses, for its one-line description.
    fn fault_families(&self) -> Vec<&'static str> {
        let mut families: Vec<&'static str> = self
            .faults
            .iter()
            .map(|fault| match fault.kind {
                FaultKind::Crash { .. } | FaultKind::CrashLeader => "crash",
                FaultKind::Restart { .. } | FaultKind::RestartAll => "restart",
                FaultKind::Partition { .. } => "partition",
                FaultKind::Isolate { .. } | FaultKind::IsolateLeader => "isolate",
                FaultKind::Cut { .. } => "one-way cut",
                FaultKind::Heal => "heal",
                FaultKind::Network { .. } => "network change",
                FaultKind::Bounce { .. } | FaultKind::ElectionBounce { .. } => "bounce",
                FaultKind::StepCrash { .. } | FaultKind::ElectionStepCrash { .. } => {
                    "crash inside a step"
                }
            })
            .collect();
        families.sort_unstable();
        families.dedup();
        families
    }

    /// One line saying what this shape does.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} servers, {} clients, latency {}-{}ms",
            self.servers,
            self.clients,
            self.latency_min_ms,
            self.latency_min_ms + self.latency_spread_ms
        );
        if let Some((probability, max)) = self.tail {
            let _ = write!(
                text,
                " (tail {:.1}% to {max}ms)",
                f64::from(probability) / 10.0
            );
        }
        let _ = write!(
            text,
            ", drop {:.1}%, duplicate {:.1}%",
            f64::from(self.drop_permille) / 10.0,
            f64::from(self.duplicate_permille) / 10.0
        );
        let families = self.fault_families();
        if families.is_empty() {
            text.push_str(", no faults");
        } else {
            let _ = write!(
                text,
                ", faults: {} ({} events)",
                families.join(" + "),
                self.faults.len()
            );
        }
        let _ = write!(
            text,
            ", workload {} ops on {} locks (mix {}/{}/{}, {}% of checks linearizable)",
            self.workload_ops,
            self.locks,
            self.mix.0,
            self.mix.1,
            self.mix.2,
            self.linearizable_percent
        );
        let (election_min, election_spread) = self.election_timeout_ms;
        let _ = write!(
            text,
            ", election timeout {}-{}ms, {} entries per append",
            election_min,
            election_min + election_spread,
            self.append_batch
        );
        if let Some(entries) = self.snapshot_entries {
            let _ = write!(text, ", snapshot every {entries} entries");
        }
        if let Some((weight, wait_ms)) = self.acquire {
            let _ = write!(
                text,
                ", acquires (weight {weight}, waits up to {wait_ms}ms)"
            );
        }
        if let Some((percent, permits)) = self.shared {
            let _ = write!(text, ", {percent}% shared claims");
            if permits > 0 {
                let _ = write!(text, " of {permits} permits");
            }
        }
        if !self.watches.is_empty() {
            let _ = write!(text, ", {} watcher(s)", self.watches.len());
        }
        if let Some((torn_permille, corrupt_per_million)) = self.disk {
            let _ = write!(
                text,
                ", disk: {:.1}% of cut batches torn, {:.3}% of records corrupt",
                f64::from(torn_permille.min(1000)) / 10.0,
                f64::from(corrupt_per_million.min(1_000_000)) / 10_000.0
            );
        }
        if let Some(permille) = self.buggify_permille {
            let _ = write!(
                text,
                ", buggify {:.1}%",
                f64::from(permille.min(1000)) / 10.0
            );
        }
        if let Some(time) = &self.time {
            let _ = write!(
                text,
                ", clocks within {:.2}%",
                f64::from(time.drift_per_10k) / 100.0
            );
            if let Some((ttl_ms, lock_delay_ms)) = time.sessions_ms {
                let _ = write!(
                    text,
                    ", sessions of {ttl_ms}ms (lock-delay {lock_delay_ms}ms)"
                );
            }
            if !time.pauses.is_empty() {
                let _ = write!(text, ", {} pause(s)", time.pauses.len());
            }
        }
        if let Some(rogues) = &self.rogues {
            let kinds: Vec<&str> = AttackKind::ALL
                .iter()
                .zip(rogues.mix)
                .filter(|(_, weight)| *weight > 0)
                .map(|(kind, _)| kind.name())
                .collect();
            let _ = write!(
                text,
                ", {} rogue(s) at {}/s ({})",
                rogues.count,
                rogues.rate_per_second,
                kinds.join(", ")
            );
        }
        text
    }

    /// The scenario, as the scenario file that `lockstep run` would load.
    pub fn build(&self) -> Scenario {
        let text = self.to_yaml();
        match scenario::parse_str(&text, Format::Yaml, "swarm scenario") {
            Ok(built) => built,
            Err(error) => panic!("a swarm shape produced an invalid scenario: {error}\n{text}"),
        }
    }

    fn to_yaml(&self) -> String {
        let servers = self.servers.max(1);
        let clients = self.clients.max(1);
        let safety = Duration::from_secs(u64::from(self.safety_seconds.max(1)));
        let duration = safety + LIVENESS_PHASE;
        let latency_min = Duration::from_millis(u64::from(self.latency_min_ms));
        let latency_max =
            latency_min + Duration::from_millis(u64::from(self.latency_spread_ms.max(1)));
        let mut out = String::new();
        let _ = writeln!(out, "name: \"swarm-{}\"", self.seed);
        let _ = writeln!(
            out,
            "description: {}",
            serde_json::to_string(&self.describe()).expect("string")
        );
        let _ = writeln!(out, "seed: {}", self.seed);
        let _ = writeln!(out, "duration: {}", duration_text(duration));
        let _ = writeln!(out, "cluster: {{servers: {servers}, clients: {clients}}}");
        let _ = write!(
            out,
            "network: {{latency: {{min: {}, max: {}",
            duration_text(latency_min),
            duration_text(latency_max)
        );
        if let Some((probability, max_ms)) = self.tail {
            let tail_max = Duration::from_millis(u64::from(max_ms)).max(latency_max);
            let _ = write!(
                out,
                ", tail: {{probability: {}, max: {}}}",
                f64::from(probability.min(1000)) / 1000.0,
                duration_text(tail_max)
            );
        }
        let _ = writeln!(
            out,
            "}}, drop: {}, duplicate: {}}}",
            f64::from(self.drop_permille.min(1000)) / 1000.0,
            f64::from(self.duplicate_permille.min(1000)) / 1000.0
        );
        let election_min_ms = u64::from(self.election_timeout_ms.0.clamp(60, 2_000));
        let election_min = Duration::from_millis(election_min_ms);
        let election_max =
            election_min + Duration::from_millis(u64::from(self.election_timeout_ms.1));
        let _ = writeln!(
            out,
            "timing: {{election_timeout: {{min: {}, max: {}}}, heartbeat: 30ms, append_batch: {}{}}}",
            duration_text(election_min),
            duration_text(election_max),
            self.append_batch.clamp(1, 1_024),
            self.snapshot_entries
                .map_or(String::new(), |entries| format!(
                    ", snapshot_entries: {}",
                    entries.clamp(1, 1_000_000)
                ))
        );
        if let Some((torn_permille, corrupt_per_million)) = self.disk {
            let _ = writeln!(
                out,
                "disk: {{torn_write: {}, corrupt: {}}}",
                f64::from(torn_permille.min(1000)) / 1000.0,
                f64::from(corrupt_per_million.min(1_000_000)) / 1_000_000.0
            );
        }
        if let Some(permille) = self.buggify_permille {
            let _ = writeln!(out, "buggify: {}", f64::from(permille.min(1000)) / 1000.0);
        }
        let mut events: Vec<(Duration, String)> = Vec::new();
        if let Some(time) = &self.time {
            time.write(&mut out, &mut events, servers, clients, safety);
        }
        for fault in &self.faults {
            let at = safety.mul_f64(f64::from(fault.at_permille.min(999)) / 1000.0);
            if let FaultKind::ElectionBounce {
                server,
                delay_ms,
                gap_ms,
            } = fault.kind
            {
                let server = server % servers + 1;
                let gap = Duration::from_millis(u64::from(gap_ms.clamp(1, 15)));
                events.push((at, "crash: leader".to_string()));
                for bounce in 0..ELECTION_BOUNCES {
                    let offset = u64::from(delay_ms.min(2_000)) + bounce * 20;
                    let down = (at + Duration::from_millis(offset)).min(safety);
                    events.push((down, format!("crash: s{server}")));
                    events.push(((down + gap).min(safety), format!("restart: s{server}")));
                }
            } else if let FaultKind::ElectionStepCrash {
                server,
                leader_down_ms,
                delay_ms,
                after_effects,
                restart_ms,
            } = fault.kind
            {
                let server = server % servers + 1;
                let leader_down = Duration::from_millis(u64::from(leader_down_ms.clamp(1, 1_000)));
                events.push((at, "crash: leader".to_string()));
                events.push(((at + leader_down).min(safety), "restart: all".to_string()));
                for round in 0..ELECTION_STEP_CRASHES {
                    let offset = u64::from(delay_ms.min(2_000)) + round * 20;
                    let armed = (at + Duration::from_millis(offset)).min(safety);
                    events.push((armed, step_crash_text(server, after_effects, restart_ms)));
                }
            } else if let FaultKind::StepCrash {
                server,
                after_effects,
                restart_ms,
            } = fault.kind
            {
                let server = server % servers + 1;
                events.push((at, step_crash_text(server, after_effects, restart_ms)));
            } else if let FaultKind::Bounce { server, gap_ms } = fault.kind {
                let server = server % servers + 1;
                let gap = Duration::from_millis(u64::from(gap_ms.clamp(1, 1_000)));
                events.push((at, format!("crash: s{server}")));
                events.push(((at + gap).min(safety), format!("restart: s{server}")));
            } else if let Some(text) = fault_text(&fault.kind, servers, clients, latency_min) {
                events.push((at, text));
            }
        }
        // The liveness phase runs on a repaired cluster: no partitions, every server up, and
        // a clean network at the shape's base latency.
        events.push((safety, "heal: all".into()));
        events.push((safety, "restart: all".into()));
        let calm = format!(
            "network: {{latency: {{min: {}, max: {}}}, drop: 0, duplicate: 0}}",
            duration_text(latency_min),
            duration_text(latency_max)
        );
        events.push((safety, calm));
        for client in 1..=clients {
            let probe = format!(
                "client: c{client}, op: check, lock: w1, consistency: linearizable, timeout: {}, expect: answered",
                duration_text(PROBE_TIMEOUT)
            );
            events.push((safety + PROBE_DELAY, probe));
        }
        for watch in &self.watches {
            let at = safety.mul_f64(f64::from(watch.at_permille.min(999)) / 1000.0);
            let client = watch.client % clients + 1;
            let target = match watch.lock {
                Some(lock) => format!("lock: w{}", lock % self.locks.clamp(1, 64) + 1),
                None => "prefix: w".to_string(),
            };
            let from = if watch.from_start { ", from: 1" } else { "" };
            events.push((at, format!("client: c{client}, op: watch, {target}{from}")));
        }
        events.sort_by_key(|(at, _)| *at);
        let _ = writeln!(out, "events:");
        for (at, text) in events {
            let _ = writeln!(out, "  - {{at: {}, {text}}}", duration_text(at));
        }
        let client_list: Vec<String> = (1..=clients).map(|c| format!("c{c}")).collect();
        let (preempt, release, check) = self.mix;
        let weights = if preempt + release + check == 0 {
            (1, 1, 1)
        } else {
            (preempt, release, check)
        };
        let acquire = match self.acquire {
            Some((weight, wait_ms)) => {
                let wait = duration_text(Duration::from_millis(u64::from(wait_ms)));
                format!(", acquire: {weight}, acquire_wait: {wait}")
            }
            None => String::new(),
        };
        let shared = match self.shared {
            Some((percent, 0)) => format!(", shared: {}", f64::from(percent) / 100.0),
            Some((percent, permits)) => {
                format!(
                    ", shared: {}, permits: {permits}",
                    f64::from(percent) / 100.0
                )
            }
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "workload: {{clients: [{}], ops: {}, locks: {}, mix: {{preempt: {}, release: {}, check: {}, linearizable: {}{acquire}{shared}}}, think: {{min: 1ms, max: {}}}}}",
            client_list.join(", "),
            self.workload_ops.clamp(1, scenario::WORKLOAD_OPS_MAX),
            self.locks.clamp(1, 64),
            weights.0,
            weights.1,
            weights.2,
            f64::from(self.linearizable_percent.min(100)) / 100.0,
            duration_text(Duration::from_millis(u64::from(self.think_max_ms.max(1))))
        );
        if let Some(rogues) = &self.rogues {
            let mut mix = rogues.mix.map(f64::from);
            if mix.iter().all(|weight| *weight <= 0.0) {
                mix = RogueSpec::EVEN_MIX;
            }
            let spec = RogueSpec {
                clients: rogues.count.clamp(1, ROGUES_MAX),
                rate_per_second: f64::from(rogues.rate_per_second.clamp(1, 1_000)),
                mix,
                // Quiet from the liveness phase on (see `RogueSpec::until`).
                until: Some(Duration::from_secs(u64::from(self.safety_seconds.max(1)))),
            };
            let _ = writeln!(out, "{}", rogues_text(&spec));
        }
        out
    }
}

/// The narrowest election timeout spread that still lets a cluster whose messages take up to
/// `latency_max_ms` elect a leader: see [`ELECTION_SPREAD_PER_LATENCY`].
pub fn election_spread_floor_ms(latency_max_ms: u32) -> u32 {
    let floor = latency_max_ms.saturating_mul(ELECTION_SPREAD_PER_LATENCY);
    assert!(
        floor >= latency_max_ms,
        "the floor covers one trip at least"
    );
    floor
}

/// An event that arms a crash of `server` inside its next step of more than `after_effects`
/// effects, and restarts it `restart_ms` after the crash.
fn step_crash_text(server: u32, after_effects: u32, restart_ms: u32) -> String {
    format!(
        "crash: {{node: s{server}, after_effects: {}, restart_after: {}}}",
        after_effects.min(scenario::AFTER_EFFECTS_MAX),
        duration_text(Duration::from_millis(u64::from(restart_ms.clamp(1, 1_000))))
    )
}

/// One to three crashes inside a step at random times, and, for seven seeds in ten, one to
/// three election step crashes: a vote sent before its persist is lost only by a cut inside
/// a vote step, during an election, whose voter is back before the election is over.
/// Time faults for a seed: a drift bound up to 2% (nodes' rates drawn within it), sessions
/// of 1 to 4 s with a lock-delay up to 1 s in most, and up to three pauses of a server or
/// client for up to 4 s.
/// The watchers of a seed: none in most, one to three in [`WATCH_SEED_PROBABILITY`] of them.
fn draw_watches(rng: &mut ChaCha8Rng) -> Vec<WatchShape> {
    if !rng.random_bool(WATCH_SEED_PROBABILITY) {
        return Vec::new();
    }
    (0..rng.random_range(1..=3u32))
        .map(|_| WatchShape {
            at_permille: rng.random_range(0..500),
            client: rng.random_range(0..8),
            lock: rng.random_bool(0.5).then(|| rng.random_range(0..8)),
            from_start: rng.random_bool(0.3),
        })
        .collect()
}

fn draw_time(rng: &mut ChaCha8Rng) -> TimeShape {
    let sessions_ms = rng
        .random_bool(0.8)
        .then(|| (rng.random_range(1_000..=4_000), rng.random_range(0..=1_000)));
    let pauses = (0..rng.random_range(0..=3))
        .map(|_| {
            (
                rng.random_range(0..1000),
                rng.random_range(0..64),
                rng.random_range(100..=4_000),
            )
        })
        .collect();
    TimeShape {
        drift_per_10k: rng.random_range(0..=200),
        sessions_ms,
        pauses,
    }
}

impl TimeShape {
    /// Its top-level keys into `out`, its pauses into `events`.
    fn write(
        &self,
        out: &mut String,
        events: &mut Vec<(Duration, String)>,
        servers: u32,
        clients: u32,
        safety: Duration,
    ) {
        let drift = f64::from(self.drift_per_10k.min(5_000)) / 10_000.0;
        let _ = writeln!(out, "clock: {{drift: {drift}}}");
        if let Some((ttl_ms, lock_delay_ms)) = self.sessions_ms {
            let _ = writeln!(
                out,
                "sessions: {{ttl: {}ms, lock_delay: {}ms}}",
                ttl_ms.clamp(1_000, 3_600_000),
                lock_delay_ms.min(3_600_000)
            );
        }
        for &(at_permille, node, for_ms) in &self.pauses {
            let at = safety.mul_f64(f64::from(at_permille.min(999)) / 1000.0);
            // A pause ends by the end of the safety phase, so that the liveness phase runs
            // with every node awake.
            let length = Duration::from_millis(u64::from(for_ms.max(1))).min(safety - at);
            if length.is_zero() {
                continue;
            }
            let node = node % (servers + clients);
            let name = if node < servers {
                format!("s{}", node + 1)
            } else {
                format!("c{}", node - servers + 1)
            };
            let pause = format!("pause: {{node: {name}, for: {}}}", duration_text(length));
            events.push((at, pause));
        }
    }
}

fn draw_step_crashes(rng: &mut ChaCha8Rng, shape: &mut Shape) {
    let servers = shape.servers;
    for _ in 0..rng.random_range(1..=3) {
        shape.faults.push(Fault {
            at_permille: rng.random_range(0..1000),
            kind: FaultKind::StepCrash {
                server: rng.random_range(0..servers),
                after_effects: rng.random_range(0..=5),
                restart_ms: rng.random_range(1..=300),
            },
        });
    }
    if rng.random_bool(ELECTION_STEP_CRASH_SHARE) {
        for _ in 0..rng.random_range(1..=3) {
            shape.faults.push(Fault {
                at_permille: rng.random_range(0..1000),
                kind: random_election_step_crash(rng, servers),
            });
        }
    }
}

fn random_election_step_crash(rng: &mut ChaCha8Rng, servers: u32) -> FaultKind {
    FaultKind::ElectionStepCrash {
        server: rng.random_range(0..servers),
        leader_down_ms: rng.random_range(1..=30),
        delay_ms: rng.random_range(0..=100),
        after_effects: rng.random_range(ELECTION_STEP_CRASH_EFFECTS),
        restart_ms: rng.random_range(1..=5),
    }
}

fn random_election_bounce(rng: &mut ChaCha8Rng, servers: u32) -> FaultKind {
    FaultKind::ElectionBounce {
        server: rng.random_range(0..servers),
        delay_ms: rng.random_range(0..=100),
        gap_ms: rng.random_range(1..=5),
    }
}

fn random_fault(rng: &mut ChaCha8Rng, family: u32, servers: u32, nodes: u32) -> FaultKind {
    let all_nodes_mask = if nodes >= 64 {
        u64::MAX
    } else {
        (1u64 << nodes) - 1
    };
    match family {
        0 => match rng.random_range(0..6) {
            5 => random_election_bounce(rng, servers),
            0 => FaultKind::CrashLeader,
            1 => FaultKind::RestartAll,
            3 => FaultKind::Bounce {
                server: rng.random_range(0..servers),
                gap_ms: rng.random_range(1..=50),
            },
            2 => FaultKind::Restart {
                server: rng.random_range(0..servers),
            },
            _ => FaultKind::Crash {
                server: rng.random_range(0..servers),
            },
        },
        1 => match rng.random_range(0..3) {
            0 => FaultKind::Heal,
            _ => FaultKind::Partition {
                mask: rng.random::<u64>() & all_nodes_mask,
            },
        },
        2 => FaultKind::Cut {
            from: rng.random_range(0..nodes),
            to_mask: rng.random::<u64>() & all_nodes_mask,
        },
        3 => match rng.random_range(0..3) {
            0 => FaultKind::IsolateLeader,
            1 => FaultKind::Heal,
            _ => FaultKind::Isolate {
                node: rng.random_range(0..nodes),
            },
        },
        _ => FaultKind::Network {
            drop_permille: rng.random_range(0..=150),
            latency_max_ms: rng.random_range(1..=100),
        },
    }
}

/// Node `i` of a cluster: servers first, then clients.
fn node_name(index: u32, servers: u32, clients: u32) -> String {
    let index = index % (servers + clients);
    if index < servers {
        format!("s{}", index + 1)
    } else {
        format!("c{}", index - servers + 1)
    }
}

/// A fault as an event action, or `None` where it would be empty (a partition with one side).
fn fault_text(
    kind: &FaultKind,
    servers: u32,
    clients: u32,
    latency_min: Duration,
) -> Option<String> {
    let nodes = servers + clients;
    let in_mask = |mask: u64, index: u32| index < 64 && mask & (1 << index) != 0;
    Some(match kind {
        FaultKind::Crash { server } => format!("crash: s{}", server % servers + 1),
        FaultKind::CrashLeader => "crash: leader".into(),
        FaultKind::Restart { server } => format!("restart: s{}", server % servers + 1),
        FaultKind::RestartAll => "restart: all".into(),
        FaultKind::Partition { mask } => {
            let (second, first): (Vec<u32>, Vec<u32>) =
                (0..nodes).partition(|&i| in_mask(*mask, i));
            if first.is_empty() || second.is_empty() {
                return None;
            }
            let group = |members: &[u32]| {
                members
                    .iter()
                    .map(|&i| node_name(i, servers, clients))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("partition: [[{}], [{}]]", group(&first), group(&second))
        }
        FaultKind::Isolate { node } => format!("isolate: {}", node_name(*node, servers, clients)),
        FaultKind::IsolateLeader => "isolate: leader".into(),
        FaultKind::Cut { from, to_mask } => {
            let from = from % nodes;
            let targets: Vec<String> = (0..nodes)
                .filter(|&i| i != from && in_mask(*to_mask, i))
                .map(|i| node_name(i, servers, clients))
                .collect();
            if targets.is_empty() {
                return None;
            }
            format!(
                "cut: {{from: {}, to: [{}]}}",
                node_name(from, servers, clients),
                targets.join(", ")
            )
        }
        FaultKind::Heal => "heal: all".into(),
        FaultKind::Bounce { .. }
        | FaultKind::ElectionBounce { .. }
        | FaultKind::StepCrash { .. }
        | FaultKind::ElectionStepCrash { .. } => {
            unreachable!("a bounce or crash inside a step is several events, written by the caller")
        }
        FaultKind::Network {
            drop_permille,
            latency_max_ms,
        } => {
            let max = Duration::from_millis(u64::from(*latency_max_ms)).max(latency_min);
            format!(
                "network: {{latency: {{max: {}}}, drop: {}}}",
                duration_text(max),
                f64::from((*drop_permille).min(1000)) / 1000.0
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::{Action, Expect};

    #[test]
    fn every_random_shape_builds_a_valid_scenario_with_a_liveness_phase() {
        for seed in 0..200 {
            let shape = Shape::random(seed, &SwarmBounds::default());
            let scenario = shape.build();
            assert_eq!(scenario.seed, seed);
            assert_eq!(scenario.duration, Duration::from_secs(10) + LIVENESS_PHASE);
            let probes = scenario
                .events
                .iter()
                .filter(|e| {
                    matches!(
                        e.action,
                        Action::ClientOp {
                            expect: Some(Expect::Answered),
                            ..
                        }
                    )
                })
                .count();
            assert_eq!(
                probes as u32, shape.clients,
                "one liveness probe per client"
            );
            assert!(
                scenario
                    .events
                    .iter()
                    .any(|e| e.action == Action::Heal && e.at == Duration::from_secs(10))
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_shape_and_seeds_differ() {
        let bounds = SwarmBounds::default();
        assert_eq!(Shape::random(7, &bounds), Shape::random(7, &bounds));
        let distinct: std::collections::BTreeSet<String> = (0..50)
            .map(|seed| Shape::random(seed, &bounds).describe())
            .collect();
        assert!(distinct.len() > 45, "configurations vary per seed");
    }

    #[test]
    fn every_random_election_timeout_spreads_wider_than_a_round_trip() {
        let mut narrow = 0;
        for seed in 0..2_000 {
            let shape = Shape::random(seed, &SwarmBounds::default());
            let latency_max_ms = shape.latency_min_ms + shape.latency_spread_ms;
            let (_, spread) = shape.election_timeout_ms;
            assert!(
                spread >= 2 * latency_max_ms,
                "seed {seed}: {}",
                shape.describe()
            );
            if shape.election_timeout_ms != ELECTION_TIMEOUT_DEFAULT_MS {
                narrow += 1;
            }
        }
        assert!(narrow > 400, "narrow spreads are still drawn: {narrow}");
    }

    /// Seed 22333 drew 170-171ms on 4 servers with latency 5-6ms: every server timed out
    /// within 1ms of the others and voted for itself, for 77 terms, so the liveness phase
    /// failed a protocol that was never given the spread Raft needs. With the floor, the same
    /// seed still draws a spread narrow enough to split votes, and its cluster serves every
    /// client once repaired.
    #[test]
    fn seed_22333_elects_a_leader_in_the_liveness_phase() {
        let shape = Shape::random(22_333, &SwarmBounds::default());
        assert_eq!(shape.servers, 4);
        assert_eq!((shape.latency_min_ms, shape.latency_spread_ms), (5, 1));
        assert_eq!(shape.election_timeout_ms, (170, 12), "raised from (170, 1)");
        let (report, failure) = crate::sim::explore::judge(&shape.build());
        assert_eq!(failure, None, "{}", report.render());
        let probes: Vec<_> = report
            .expectations
            .iter()
            .filter(|expectation| expectation.expected == "answered")
            .collect();
        assert_eq!(probes.len(), shape.clients as usize);
        assert!(probes.iter().all(|probe| probe.met));
        assert!(report.leaders_elected >= 1);
    }

    /// The shares the README states: crashes inside a step for half the seeds, seven in ten
    /// of them inside elections too, and faulty disks for about three in ten.
    #[test]
    fn crashes_inside_a_step_and_faulty_disks_are_drawn_for_their_share_of_seeds() {
        let seeds = 4_000;
        let (mut step_crashes, mut in_elections, mut disks) = (0, 0, 0);
        for seed in 0..seeds {
            let shape = Shape::random(seed, &SwarmBounds::default());
            let kinds = || shape.faults.iter().map(|fault| &fault.kind);
            if kinds().any(|kind| matches!(kind, FaultKind::StepCrash { .. })) {
                step_crashes += 1;
            }
            if kinds().any(|kind| matches!(kind, FaultKind::ElectionStepCrash { .. })) {
                in_elections += 1;
            }
            if shape.disk.is_some() {
                disks += 1;
                // Building is slow in a debug build: a few show the disk reaches the scenario.
                if disks <= 10 {
                    let scenario = shape.build();
                    assert!(scenario.disk.any(), "seed {seed}: {}", shape.describe());
                }
            }
        }
        let share = |count: u32| f64::from(count) / seeds as f64;
        assert!(
            (0.47..0.53).contains(&share(step_crashes)),
            "{step_crashes}"
        );
        assert!(
            (0.32..0.38).contains(&share(in_elections)),
            "{in_elections}"
        );
        assert!((0.27..0.33).contains(&share(disks)), "{disks}");
    }

    #[test]
    fn node_numbers_wrap_so_a_shrunk_cluster_stays_valid() {
        let mut shape = Shape::random(
            3,
            &SwarmBounds {
                servers_min: 5,
                servers_max: 5,
                ..SwarmBounds::default()
            },
        );
        shape.faults = vec![
            Fault {
                at_permille: 100,
                kind: FaultKind::Crash { server: 4 },
            },
            Fault {
                at_permille: 200,
                kind: FaultKind::Cut {
                    from: 9,
                    to_mask: u64::MAX,
                },
            },
            Fault {
                at_permille: 300,
                kind: FaultKind::Partition { mask: 0b1 },
            },
        ];
        shape.servers = 1;
        shape.clients = 1;
        let scenario = shape.build();
        assert_eq!(scenario.cluster.servers, 1);
        assert!(
            scenario
                .events
                .iter()
                .any(|e| matches!(e.action, Action::Crash(_)))
        );
    }
}
