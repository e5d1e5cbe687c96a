//! `lockstep explore`: swarm testing over many seeds, in parallel, with minimization of every
//! failure down to a small scenario file that `lockstep run` replays.
//!
//! Each seed is one single-threaded, deterministic simulation; parallelism only runs several
//! seeds at once. A seed's verdict never depends on which worker ran it.

use super::guidance::{Corpus, FirstReaches, GuidanceSettings, Guided};
use super::history::HistoryOp;
use super::linearizability::{self, LINEARIZABILITY, LinearizabilityViolation, MONOTONIC_READS};
use super::report::{ExpectationResult, RunReport};
use super::runner::{self, RunOptions};
use super::scenario::{self, Action, Expect, FinalState, Format, IsolateTarget, Scenario};
use super::swarm::{Shape, SwarmBounds};
use crate::net::Endpoint;
use crate::node::ServerId;
use crate::node::coverage::Coverage;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why a run failed: an invariant's name, `liveness` or `expectation`, and the details.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Failure {
    pub kind: String,
    pub message: String,
}

/// Runs `scenario` and judges it: safety invariants, liveness probes, expectations.
pub fn judge(scenario: &Scenario) -> (RunReport, Option<Failure>) {
    let report = runner::run(scenario, RunOptions::default()).expect("no trace, so no I/O error");
    let failure = failure_of(&report);
    (report, failure)
}

fn failure_of(report: &RunReport) -> Option<Failure> {
    if let Some(violation) = &report.violation {
        return Some(Failure {
            kind: violation.invariant.clone(),
            message: violation.message.clone(),
        });
    }
    // Raft promises progress only while a majority can vote. When disk damage has left more
    // than a minority unable to start or still repairing a log (which needs a leader the rest
    // cannot elect), the liveness probes cannot be answered and are not judged; safety still
    // is.
    let unable = report.refused_to_start.len() + report.repairing_at_end.len();
    let majority_lost = unable as u32 > report.servers.saturating_sub(1) / 2;
    let excused = |e: &&ExpectationResult| majority_lost && e.expected == "answered";
    let unmet: Vec<_> = report
        .expectations
        .iter()
        .filter(|e| !e.met && !excused(e))
        .collect();
    let first = unmet.first()?;
    let kind = if first.expected == "answered" {
        "liveness"
    } else {
        "expectation"
    };
    let message = format!(
        "{} ({}): expected {}, got {}{}",
        first.place,
        first.what,
        first.expected,
        first.actual,
        if unmet.len() > 1 {
            format!(" (and {} more)", unmet.len() - 1)
        } else {
            String::new()
        }
    );
    Some(Failure {
        kind: kind.into(),
        message,
    })
}

/// The outcome of one seed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub description: String,
    pub failure: Option<Failure>,
    pub simulated_ms: f64,
    /// The simulated time exactly, so that totals do not depend on the order seeds finish in.
    pub simulated_ns: u64,
    pub events: u64,
    pub wall_ms: f64,
    /// Where the minimized failing scenario was written.
    pub written_to: Option<PathBuf>,
    /// Size of the failing scenario before and after minimization.
    pub minimized: Option<(ScenarioSize, ScenarioSize)>,
    /// What minimizing it spent, and whether a budget cut it short.
    pub minimization: Option<Minimization>,
    /// The protocol branches its run took (not in the JSON: summed into the summary).
    #[serde(skip)]
    pub coverage: Coverage,
    /// Set when coverage guidance chose this seed's configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guided: Option<Guided>,
    /// The swarm shape the seed ran, when its scenario came from one: what guidance keeps.
    #[serde(skip)]
    pub shape: Option<Shape>,
}

/// What one failure's minimization spent.
#[derive(Copy, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minimization {
    pub runs: u64,
    pub wall_seconds: f64,
    /// Which budget stopped it while it still had candidates to try; `None` if none did.
    pub cut_short: Option<CutShort>,
}

/// How big a scenario is, for reporting what minimization achieved.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSize {
    pub events: usize,
    pub servers: u32,
    pub clients: u32,
    pub workload_ops: u32,
    pub rogues: u32,
}

impl ScenarioSize {
    pub fn of(scenario: &Scenario) -> ScenarioSize {
        ScenarioSize {
            events: scenario.events.len(),
            servers: scenario.cluster.servers,
            clients: scenario.cluster.clients,
            workload_ops: scenario.workload.as_ref().map_or(0, |w| w.ops),
            rogues: scenario.rogues.as_ref().map_or(0, |r| r.clients),
        }
    }
}

impl std::fmt::Display for ScenarioSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events, {} servers, {} clients, {} workload ops, {} rogues",
            self.events, self.servers, self.clients, self.workload_ops, self.rogues
        )
    }
}

// ----- minimization -----

/// What one failure's minimization may spend. Whichever runs out first stops it, and the
/// smallest scenario that still failed so far is kept.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MinimizeBudget {
    /// Candidate runs (0: the failing scenario is written as it is).
    pub runs_max: usize,
    /// Wall time. It is looked at between candidates and a candidate in progress is never cut,
    /// so a minimization overruns it by at most one candidate's run, and the first candidate
    /// always runs (with 0: exactly one). A message storm that hits the simulator's event
    /// bound makes every candidate as slow as the seed itself, which is why this exists.
    pub wall_max: Duration,
}

/// Why a minimization stopped while it still had candidates to try.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutShort {
    /// `--minimize-runs` ran out.
    Runs,
    /// `--minimize-time` ran out.
    Time,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl std::fmt::Display for CutShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CutShort::Runs => "the run budget (--minimize-runs)",
            CutShort::Time => "the time budget (--minimize-time)",
            CutShort::Interrupted => "an interrupt",
        })
    }
}

/// The outcome of [`minimize`].
#[derive(Clone, Debug)]
pub struct Minimized {
    /// The smallest scenario found that still fails the same way (the original if none).
    pub scenario: Scenario,
    pub runs: usize,
    pub wall: Duration,
    /// `None` when minimization ran until nothing smaller failed.
    pub cut_short: Option<CutShort>,
}

/// Shrinks a failing scenario: first ends it just after its failure ([`Minimizer::truncate`]),
/// then delta debugging removes events, workload operations, clients and servers, re-running
/// each candidate and keeping it only if it still fails the same way. Stops when `budget` runs
/// out or `stop` is set, keeping the best so far. `failing` is the report of `scenario`'s own
/// run, which says where its failure was sealed without running it again.
pub fn minimize(
    scenario: Scenario,
    failing: &RunReport,
    kind: &str,
    budget: MinimizeBudget,
    stop: &AtomicBool,
) -> Minimized {
    let mut minimizer = Minimizer {
        kind: kind.to_string(),
        runs: 0,
        budget,
        start: Instant::now(),
        cut_short: None,
        stop,
    };
    let mut best = minimizer.truncate(scenario, failing);
    loop {
        let before = ScenarioSize::of(&best);
        best = minimizer.events(best);
        best = minimizer.workload(best);
        best = minimizer.clients(best);
        best = minimizer.rogues(best);
        best = minimizer.servers(best);
        // A pass that shrank nothing ends it; otherwise another pass may shrink more, and a
        // budget spent here did cut it short.
        if ScenarioSize::of(&best) == before || minimizer.exhausted() {
            assert!(minimizer.runs <= budget.runs_max, "the run budget holds");
            return Minimized {
                scenario: best,
                runs: minimizer.runs,
                wall: minimizer.start.elapsed(),
                cut_short: minimizer.cut_short,
            };
        }
    }
}

struct Minimizer<'a> {
    kind: String,
    runs: usize,
    budget: MinimizeBudget,
    start: Instant,
    /// Set by the first [`Minimizer::exhausted`] that found a budget spent.
    cut_short: Option<CutShort>,
    stop: &'a AtomicBool,
}

impl Minimizer<'_> {
    /// True once a budget is spent. It is asked only where a candidate is about to be tried,
    /// so the first budget it finds spent is the one that cut minimization short.
    fn exhausted(&mut self) -> bool {
        if self.cut_short.is_none() {
            self.cut_short = if self.stop.load(Ordering::Relaxed) {
                Some(CutShort::Interrupted)
            } else if self.runs >= self.budget.runs_max {
                Some(CutShort::Runs)
            } else if self.runs > 0 && self.start.elapsed() >= self.budget.wall_max {
                Some(CutShort::Time)
            } else {
                None
            };
        }
        self.cut_short.is_some()
    }

    /// True if `candidate` is a valid scenario that still fails the same way.
    fn still_fails(&mut self, candidate: &Scenario) -> bool {
        if self.exhausted() {
            return false;
        }
        // Only scenarios that a file could express count: round-trip through the format.
        let Ok(valid) = scenario::parse_str(&candidate.to_yaml(), Format::Yaml, "candidate") else {
            return false;
        };
        self.runs += 1;
        let (_, failure) = judge(&valid);
        failure.is_some_and(|failure| failure.kind == self.kind)
    }

    /// Ends the scenario just after its failure, when the failure has a moment: a safety
    /// invariant breaks at one step, and a history checker's verdict is sealed once the last
    /// answer of its failing window has returned. Nothing before that moment depends on the
    /// duration (the heal at its end, the end of the workload and rogues, the settle phase and
    /// the liveness probes all come later), so the cut run fails the same way; what came after
    /// is gone from the file, and the failing window is where the run ends. This is what makes a
    /// linearizability failure small: delta debugging then works on the events up to it only.
    /// Liveness and expectation failures have no such moment and are left whole.
    fn truncate(&mut self, best: Scenario, failing: &RunReport) -> Scenario {
        let Some(moment) = failure_moment(failing, &self.kind) else {
            return best;
        };
        let Some(candidate) = truncated(&best, moment) else {
            return best;
        };
        if self.still_fails(&candidate) {
            candidate
        } else {
            best
        }
    }

    /// ddmin over the event list: try dropping chunks, halving the chunk size on no progress.
    ///
    /// The liveness phase (the heal, the restarts and the probes from its start on) is never
    /// removed: without it a liveness failure would "minimize" to a cluster that is simply
    /// never repaired.
    fn events(&mut self, mut best: Scenario) -> Scenario {
        let has_probes = best.events.iter().any(|event| {
            matches!(
                event.action,
                Action::ClientOp {
                    expect: Some(Expect::Answered),
                    ..
                }
            )
        });
        let protected_from = if has_probes {
            best.duration.saturating_sub(super::swarm::LIVENESS_PHASE)
        } else {
            best.duration + Duration::from_nanos(1)
        };
        let protected: Vec<scenario::ScheduledEvent> = best
            .events
            .iter()
            .filter(|e| e.at >= protected_from)
            .cloned()
            .collect();
        best.events.retain(|e| e.at < protected_from);
        let with_protected = |mut scenario: Scenario| {
            scenario.events.extend(protected.iter().cloned());
            scenario
        };
        let mut chunks = 2usize;
        while !best.events.is_empty() && !self.exhausted() {
            let length = best.events.len();
            let chunk = length.div_ceil(chunks);
            let mut progressed = false;
            let mut start = 0;
            while start < best.events.len() && !self.exhausted() {
                let end = (start + chunk).min(best.events.len());
                let mut candidate = best.clone();
                candidate.events.drain(start..end);
                if self.still_fails(&with_protected(candidate.clone())) {
                    best = candidate;
                    progressed = true;
                } else {
                    start = end;
                }
            }
            if !progressed {
                if chunk == 1 {
                    break;
                }
                chunks = (chunks * 2).min(best.events.len().max(1));
            }
        }
        with_protected(best)
    }

    fn workload(&mut self, mut best: Scenario) -> Scenario {
        let mut without = best.clone();
        without.workload = None;
        if self.still_fails(&without) {
            return without;
        }
        while let Some(ops) = best.workload.as_ref().map(|w| w.ops).filter(|&ops| ops > 1) {
            let mut candidate = best.clone();
            if let Some(workload) = &mut candidate.workload {
                workload.ops = ops / 2;
            }
            if !self.still_fails(&candidate) {
                break;
            }
            best = candidate;
        }
        best
    }

    fn clients(&mut self, mut best: Scenario) -> Scenario {
        let mut client = best.cluster.clients;
        while client >= 1 && best.cluster.clients > 1 && !self.exhausted() {
            let candidate = without_client(&best, client);
            if self.still_fails(&candidate) {
                best = candidate;
            }
            client -= 1;
        }
        best
    }

    /// Drops the rogues, or some of them. Events naming a rogue that goes are dropped too.
    fn rogues(&mut self, mut best: Scenario) -> Scenario {
        while let Some(count) = best.rogues.as_ref().map(|r| r.clients) {
            if self.exhausted() {
                break;
            }
            let candidate = with_rogues(&best, count - 1);
            if !self.still_fails(&candidate) {
                break;
            }
            best = candidate;
        }
        best
    }

    fn servers(&mut self, mut best: Scenario) -> Scenario {
        let mut server = best.cluster.servers;
        while server >= 1 && best.cluster.servers > 1 && !self.exhausted() {
            let candidate = without_server(&best, server);
            if self.still_fails(&candidate) {
                best = candidate;
            }
            server -= 1;
        }
        best
    }
}

/// When the failure of kind `kind` in `report` was sealed: the violation's step for a safety
/// invariant, the last return in the failing window for the history checkers; `None` for
/// liveness and expectations.
fn failure_moment(report: &RunReport, kind: &str) -> Option<Duration> {
    match kind {
        "liveness" | "expectation" => None,
        LINEARIZABILITY | MONOTONIC_READS => history_failure_moment(&report.history, kind),
        _ => {
            let at_ms = report.violation.as_ref()?.at_ms;
            (at_ms.is_finite() && at_ms >= 0.0).then(|| Duration::from_secs_f64(at_ms / 1e3))
        }
    }
}

/// The last return time among the answers that make `history` fail `kind`: its first violation
/// of that kind, as the checker reports it.
pub fn history_failure_moment(history: &[HistoryOp], kind: &str) -> Option<Duration> {
    let report = linearizability::check_history(history);
    let violation = report.violations.iter().find(|v| v.invariant() == kind)?;
    let last_return = match violation {
        LinearizabilityViolation::NotLinearizable { window, .. } => {
            window.iter().filter_map(|op| op.return_ns).max()
        }
        LinearizabilityViolation::NonMonotonicRead { later, .. }
        | LinearizabilityViolation::StaleRead { later, .. } => later.return_ns,
    }?;
    Some(Duration::from_nanos(last_return))
}

/// `scenario` ended at the first whole millisecond after `moment` (one more millisecond of
/// margin, since a violation's time is reported in fractional milliseconds), without the events
/// from then on; `None` if that is not shorter.
pub fn truncated(scenario: &Scenario, moment: Duration) -> Option<Scenario> {
    let whole_ms = u64::try_from(moment.as_millis()).ok()?;
    let end = Duration::from_millis(whole_ms.checked_add(2)?);
    if end >= scenario.duration {
        return None;
    }
    let mut cut = scenario.clone();
    cut.duration = end;
    cut.events.retain(|event| event.at < end);
    Some(cut)
}

/// Renumbers endpoints after removing `removed`; `None` for the removed one itself.
fn renumber(endpoint: Endpoint, removed: Endpoint) -> Option<Endpoint> {
    match (endpoint, removed) {
        (a, b) if a == b => None,
        (Endpoint::Client(n), Endpoint::Client(k)) if n > k => Some(Endpoint::Client(n - 1)),
        (Endpoint::Server(ServerId(n)), Endpoint::Server(ServerId(k))) if n > k => {
            Some(Endpoint::Server(ServerId(n - 1)))
        }
        (other, _) => Some(other),
    }
}

fn renumber_all(endpoints: &[Endpoint], removed: Endpoint) -> Vec<Endpoint> {
    endpoints
        .iter()
        .filter_map(|&e| renumber(e, removed))
        .collect()
}

/// Rewrites the node-naming events after removing `removed`; `None` drops the event.
fn renumber_action(action: &Action, removed: Endpoint) -> Option<Action> {
    let server = |id: ServerId| match renumber(Endpoint::Server(id), removed)? {
        Endpoint::Server(id) => Some(id),
        Endpoint::Client(_) | Endpoint::Rogue(_) => None,
    };
    Some(match action {
        Action::Crash(scenario::CrashTarget::Server(id)) => {
            Action::Crash(scenario::CrashTarget::Server(server(*id)?))
        }
        Action::Restart(scenario::RestartTarget::Server(id)) => {
            Action::Restart(scenario::RestartTarget::Server(server(*id)?))
        }
        Action::CrashInStep {
            server: id,
            after_effects,
            restart_after,
        } => Action::CrashInStep {
            server: server(*id)?,
            after_effects: *after_effects,
            restart_after: *restart_after,
        },
        Action::Corrupt { server: id, entry } => Action::Corrupt {
            server: server(*id)?,
            entry: *entry,
        },
        Action::Partition(groups) => {
            let groups: Vec<Vec<Endpoint>> = groups
                .iter()
                .map(|g| renumber_all(g, removed))
                .filter(|g| !g.is_empty())
                .collect();
            if groups.is_empty() {
                return None;
            }
            Action::Partition(groups)
        }
        Action::Isolate(IsolateTarget::Node(endpoint)) => {
            Action::Isolate(IsolateTarget::Node(renumber(*endpoint, removed)?))
        }
        Action::Cut { from, to } => {
            let to = renumber_all(to, removed);
            if to.is_empty() {
                return None;
            }
            Action::Cut {
                from: renumber(*from, removed)?,
                to,
            }
        }
        other => other.clone(),
    })
}

/// The scenario with only rogues `r1..r{count}` (none at 0); events naming the others go.
fn with_rogues(scenario: &Scenario, count: u32) -> Scenario {
    let mut next = scenario.clone();
    let gone = |endpoint: &Endpoint| matches!(endpoint, Endpoint::Rogue(n) if *n > count);
    next.events.retain(|event| match &event.action {
        Action::Partition(groups) => !groups.iter().flatten().any(gone),
        Action::Isolate(IsolateTarget::Node(endpoint)) => !gone(endpoint),
        Action::Cut { from, to } => !gone(from) && !to.iter().any(gone),
        _ => true,
    });
    match (&mut next.rogues, count) {
        (_, 0) => next.rogues = None,
        (Some(rogues), _) => rogues.clients = count,
        (None, _) => unreachable!("only a scenario with rogues loses some"),
    }
    next
}

/// The scenario without client `k` (1-based): its events and references go, later clients move
/// down by one.
pub fn without_client(scenario: &Scenario, k: u32) -> Scenario {
    let mut next = scenario.clone();
    let removed = Endpoint::Client(k);
    let shift = |n: u32| if n > k { n - 1 } else { n };
    next.cluster.clients -= 1;
    next.cluster.connect = scenario
        .cluster
        .connect
        .iter()
        .filter(|(client, _)| **client != k)
        .map(|(client, server)| (shift(*client), *server))
        .collect();
    next.events = scenario
        .events
        .iter()
        .filter_map(|event| {
            let action = match &event.action {
                Action::ClientOp { client, .. } if *client == k => return None,
                Action::Watch { client, .. } if *client == k => return None,
                Action::Watch {
                    client,
                    target,
                    from,
                } => Action::Watch {
                    client: shift(*client),
                    target: target.clone(),
                    from: *from,
                },
                Action::ClientOp {
                    client,
                    op,
                    lock,
                    consistency,
                    timeout,
                    expect,
                    claim,
                } => {
                    let expect = match expect {
                        Some(Expect::HeldBy(n) | Expect::Owner(n)) if *n == k => None,
                        Some(Expect::HeldBy(n)) => Some(Expect::HeldBy(shift(*n))),
                        Some(Expect::Owner(n)) => Some(Expect::Owner(shift(*n))),
                        other => *other,
                    };
                    Action::ClientOp {
                        client: shift(*client),
                        op: *op,
                        lock: lock.clone(),
                        consistency: *consistency,
                        timeout: *timeout,
                        expect,
                        claim: *claim,
                    }
                }
                other => renumber_action(other, removed)?,
            };
            Some(scenario::ScheduledEvent {
                at: event.at,
                action,
                index: event.index,
            })
        })
        .collect();
    if let Some(workload) = &mut next.workload {
        workload.clients = workload
            .clients
            .iter()
            .filter(|&&c| c != k)
            .map(|&c| shift(c))
            .collect();
        if workload.clients.is_empty() {
            next.workload = None;
        }
    }
    next.expect_final = scenario
        .expect_final
        .iter()
        .filter(|(_, state)| **state != FinalState::HeldBy(k))
        .map(|(lock, state)| {
            let state = match state {
                FinalState::HeldBy(n) => FinalState::HeldBy(shift(*n)),
                FinalState::Free => FinalState::Free,
            };
            (lock.clone(), state)
        })
        .collect();
    next
}

/// The scenario without server `k` (1-based): events naming it go, clients connected to it move
/// to s1, later servers move down by one.
pub fn without_server(scenario: &Scenario, k: u32) -> Scenario {
    let mut next = scenario.clone();
    let removed = Endpoint::Server(ServerId(k));
    let shift = |id: ServerId| if id.0 > k { ServerId(id.0 - 1) } else { id };
    next.cluster.servers -= 1;
    next.cluster.leader = scenario.cluster.leader.filter(|id| id.0 != k).map(shift);
    next.cluster.connect = scenario
        .cluster
        .connect
        .iter()
        .map(|(client, server)| {
            (
                *client,
                if server.0 == k {
                    ServerId(1)
                } else {
                    shift(*server)
                },
            )
        })
        .collect();
    next.events = scenario
        .events
        .iter()
        .filter_map(|event| {
            let action = renumber_action(&event.action, removed)?;
            Some(scenario::ScheduledEvent {
                at: event.at,
                action,
                index: event.index,
            })
        })
        .collect();
    next
}

// ----- the parallel explorer -----

/// A seed's configuration, ready to run.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub scenario: Scenario,
    /// The configuration line printed for it.
    pub description: String,
    /// The swarm shape it was built from; `None` for a scenario made another way, which
    /// guidance can count but not mutate.
    pub shape: Option<Shape>,
    pub guided: Option<Guided>,
}

impl Drawn {
    /// The scenario of `shape`, described.
    pub fn of_shape(shape: Shape, guided: Option<Guided>) -> Drawn {
        let mut description = shape.describe();
        if let Some(guided) = &guided {
            description.push_str(&format!(
                "; guided: seed {}'s configuration mutated, toward {}",
                guided.parent, guided.target
            ));
        }
        Drawn {
            scenario: shape.build(),
            description,
            shape: Some(shape),
            guided,
        }
    }
}

/// Builds seed `seed`'s own (unguided) configuration from `bounds`.
pub type ScenarioOf = fn(seed: u64, bounds: &SwarmBounds) -> Drawn;

/// The swarm's scenario for a seed: what every real exploration runs.
pub fn swarm_scenario(seed: u64, bounds: &SwarmBounds) -> Drawn {
    Drawn::of_shape(Shape::random(seed, bounds), None)
}

/// The configuration `seed` runs: guidance's, if `corpus` guides it, else its own draw.
pub fn draw(seed: u64, options: &ExploreOptions, corpus: &Corpus) -> Drawn {
    let guided = options
        .guidance
        .and_then(|settings| corpus.guide(seed, settings, &options.bounds));
    match guided {
        Some((shape, guided)) => Drawn::of_shape(shape, Some(guided)),
        None => (options.scenario_of)(seed, &options.bounds),
    }
}

#[derive(Clone, Debug)]
pub struct ExploreOptions {
    pub seeds: u64,
    pub from: u64,
    pub jobs: usize,
    pub bounds: SwarmBounds,
    pub out_dir: PathBuf,
    /// What a minimization may spend per failing seed.
    pub minimize: MinimizeBudget,
    /// [`swarm_scenario`], except in tests that need a chosen seed to fail.
    pub scenario_of: ScenarioOf,
    /// Coverage guidance (`sim::guidance`); `None` runs every seed's own draw, with no
    /// barrier between batches.
    pub guidance: Option<GuidanceSettings>,
}

/// When a failure was found, not counting time spent minimizing it or any other failure.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FirstFailure {
    pub seed: u64,
    /// Seeds finished by then, this one included.
    pub seeds_run: u64,
    /// Wall-clock seconds from the start of the exploration.
    pub wall_seconds: f64,
}

/// Totals over an exploration.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExploreSummary {
    pub seeds_run: u64,
    pub seeds_failed: u64,
    /// Exact total of simulated time; `simulated_seconds` is derived from it at the end.
    pub simulated_ns: u64,
    pub simulated_seconds: f64,
    pub events: u64,
    pub wall_seconds: f64,
    /// (failure kind, count), most frequent first.
    pub failures_by_kind: Vec<(String, u64)>,
    /// (seed, wall ms) of the slowest seed, its run only (minimizing excluded).
    pub slowest_seed: Option<(u64, f64)>,
    /// The first failure found in wall time: how quickly exploration finds a bug. Seeds and
    /// seconds up to the moment its run ended, before minimizing it. No minimization can be
    /// counted in it: every minimization starts after a failure is found, so after this one.
    pub first_failure_found: Option<FirstFailure>,
    /// The failure with the lowest seed: `seeds_run` is its place in the range (how many seeds
    /// a run with one job would need), `wall_seconds` when it was found, before minimizing.
    pub first_failure_by_seed: Option<FirstFailure>,
    /// The first failure to be reported finished, minimizing included (its own and earlier
    /// ones'), as `first_failure_arrived` has always said in the shard result.
    pub first_failure_arrived: Option<FirstFailure>,
    /// Wall time spent minimizing, summed over failures (they may overlap with `jobs` > 1).
    pub minimize_wall_seconds: f64,
    pub interrupted: bool,
    pub failures: Vec<SeedResult>,
    /// The protocol branches taken, summed over every seed run.
    #[serde(skip)]
    pub coverage: Coverage,
    /// How the run was guided (`None`: it was not).
    pub guidance: Option<GuidanceSettings>,
    /// Seeds whose configuration guidance chose.
    pub seeds_guided: u64,
    /// The lowest seed that took each branch, and whether it was guided.
    #[serde(skip)]
    pub first_reaches: FirstReaches,
}

/// What [`explore`] tells its caller as seeds run.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A seed failed. Reported at once, before it is minimized (which may take up to the
    /// budget), so that a slow failure such as a `simulation_bound` storm is seen without
    /// waiting; a [`Progress::Finished`] for the same seed follows.
    Found {
        seed: u64,
        description: &'a str,
        failure: &'a Failure,
    },
    /// A seed is done: run, and if it failed minimized and written.
    Finished(&'a SeedResult),
}

/// A seed's run and verdict, before any minimization.
struct Verdict {
    scenario: Scenario,
    report: RunReport,
    result: SeedResult,
}

fn run_unminimized(seed: u64, drawn: Drawn) -> Verdict {
    let Drawn {
        scenario,
        description,
        shape,
        guided,
    } = drawn;
    let start = Instant::now();
    let (report, failure) = judge(&scenario);
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let result = SeedResult {
        seed,
        description,
        failure,
        simulated_ms: report.simulated_ms,
        simulated_ns: report.simulated_ns,
        events: report.events_processed,
        wall_ms,
        written_to: None,
        minimized: None,
        minimization: None,
        coverage: report.coverage.clone(),
        guided,
        shape,
    };
    Verdict {
        scenario,
        report,
        result,
    }
}

/// Runs one seed's own draw (unguided): see [`run_drawn`].
pub fn run_seed(
    seed: u64,
    options: &ExploreOptions,
    stop: &AtomicBool,
    on_found: impl FnOnce(&SeedResult),
) -> SeedResult {
    let drawn = (options.scenario_of)(seed, &options.bounds);
    run_drawn(seed, drawn, options, stop, on_found)
}

/// Runs one seed's configuration; on failure calls `on_found` at once, then minimizes the
/// scenario within the budget and writes it out.
pub fn run_drawn(
    seed: u64,
    drawn: Drawn,
    options: &ExploreOptions,
    stop: &AtomicBool,
    on_found: impl FnOnce(&SeedResult),
) -> SeedResult {
    let Verdict {
        scenario,
        report,
        mut result,
    } = run_unminimized(seed, drawn);
    let Some(failure) = result.failure.clone() else {
        return result;
    };
    on_found(&result);
    let minimized = minimize(
        scenario.clone(),
        &report,
        &failure.kind,
        options.minimize,
        stop,
    );
    assert!(minimized.runs <= options.minimize.runs_max);
    let (from, to) = (
        ScenarioSize::of(&scenario),
        ScenarioSize::of(&minimized.scenario),
    );
    result.minimized = Some((from, to));
    result.minimization = Some(Minimization {
        runs: minimized.runs as u64,
        wall_seconds: minimized.wall.as_secs_f64(),
        cut_short: minimized.cut_short,
    });
    let path = options.out_dir.join(format!("{seed}.yaml"));
    let cut_short = minimized.cut_short.map_or(String::new(), |why| {
        format!(" (cut short by {why}: smaller may still fail)")
    });
    let header = format!(
        "# lockstep explore: seed {seed} failed {}: {}\n\
         # minimized in {} runs, {}, from {from} to {to}{cut_short}\n\
         # replay: lockstep run {}\n",
        failure.kind,
        failure.message.lines().next().unwrap_or(""),
        minimized.runs,
        human_duration(minimized.wall),
        path.display()
    );
    // The original run's client history too, for external checkers and timelines.
    let history_path = options.out_dir.join(format!("{seed}.history.jsonl"));
    let html_path = options.out_dir.join(format!("{seed}.html"));
    let written = std::fs::create_dir_all(&options.out_dir)
        .and_then(|()| {
            let text = format!("{header}{}", minimized.scenario.to_yaml());
            std::fs::write(&path, text)
        })
        .and_then(|()| {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&history_path)?);
            super::history::write_jsonl(&report.history, &mut out)?;
            super::watch::write_jsonl(&report.watch_history, &mut out)?;
            std::io::Write::flush(&mut out)
        })
        .and_then(|()| write_timeline(&minimized.scenario, &html_path));
    match written {
        Ok(()) => result.written_to = Some(path),
        Err(error) => {
            result.failure = Some(Failure {
                kind: failure.kind,
                message: format!(
                    "{} (and writing {} failed: {error})",
                    failure.message,
                    path.display()
                ),
            })
        }
    }
    result
}

/// The timeline of the minimized scenario, the run `lockstep run <seed>.yaml` replays: one
/// more run of a small scenario, keeping its events this time.
fn write_timeline(scenario: &Scenario, path: &std::path::Path) -> std::io::Result<()> {
    let options = RunOptions {
        keep_trace_events: Some(super::timeline::EVENTS_MAX),
        ..RunOptions::default()
    };
    let report = runner::run(scenario, options).expect("no trace file, so no I/O error");
    super::timeline::write_html(path, &super::timeline::from_run(scenario, &report))
}

/// What a worker sends the thread that keeps the totals.
enum Message {
    Found {
        result: SeedResult,
        found_at: Duration,
    },
    Finished(SeedResult),
}

/// The totals, kept on the calling thread as messages arrive.
struct Tally {
    from: u64,
    summary: ExploreSummary,
    by_kind: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn new(from: u64) -> Tally {
        Tally {
            from,
            summary: ExploreSummary::default(),
            by_kind: std::collections::BTreeMap::new(),
        }
    }

    /// A seed failed `found_at` after the start; it is not yet minimized, nor finished.
    fn found(&mut self, seed: u64, found_at: Duration) {
        assert!(seed >= self.from, "seed {seed} is in the range");
        // Seeds finished before its run ended, and itself. Seeds that finish while it (or any
        // later failure) is being minimized arrive after this and are not counted.
        let first = FirstFailure {
            seed,
            seeds_run: self.summary.seeds_run + 1,
            wall_seconds: found_at.as_secs_f64(),
        };
        let summary = &mut self.summary;
        if summary
            .first_failure_found
            .as_ref()
            .is_none_or(|f| first.wall_seconds < f.wall_seconds)
        {
            summary.first_failure_found = Some(first.clone());
        }
        if summary
            .first_failure_by_seed
            .as_ref()
            .is_none_or(|f| seed < f.seed)
        {
            summary.first_failure_by_seed = Some(FirstFailure {
                seeds_run: seed - self.from + 1,
                ..first
            });
        }
    }

    /// A seed is done, `arrived_at` after the start.
    fn finished(&mut self, result: SeedResult, arrived_at: Duration) {
        let summary = &mut self.summary;
        summary.seeds_run += 1;
        summary.coverage.add(&result.coverage);
        summary
            .first_reaches
            .note(result.seed, &result.coverage, result.guided.as_ref());
        summary.seeds_guided += u64::from(result.guided.is_some());
        summary.simulated_ns = summary.simulated_ns.saturating_add(result.simulated_ns);
        summary.events += result.events;
        if summary
            .slowest_seed
            .is_none_or(|(_, ms)| result.wall_ms > ms)
        {
            summary.slowest_seed = Some((result.seed, result.wall_ms));
        }
        let Some(failure) = &result.failure else {
            return;
        };
        assert!(
            summary.first_failure_found.is_some(),
            "seed {} was reported found before finished",
            result.seed
        );
        if summary.first_failure_arrived.is_none() {
            summary.first_failure_arrived = Some(FirstFailure {
                seed: result.seed,
                seeds_run: summary.seeds_run,
                wall_seconds: arrived_at.as_secs_f64(),
            });
        }
        summary.seeds_failed += 1;
        summary.minimize_wall_seconds += result.minimization.map_or(0.0, |m| m.wall_seconds);
        *self.by_kind.entry(failure.kind.clone()).or_insert(0) += 1;
        summary.failures.push(result);
    }

    fn into_summary(self) -> ExploreSummary {
        let mut summary = self.summary;
        summary.failures.sort_by_key(|r| r.seed);
        summary.failures_by_kind = self.by_kind.into_iter().collect();
        summary
            .failures_by_kind
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        summary.simulated_seconds = summary.simulated_ns as f64 / 1e9;
        assert_eq!(summary.seeds_failed, summary.failures.len() as u64);
        summary
    }
}

/// Explores `options.seeds` seeds on `options.jobs` threads; `on_progress` sees each failure
/// as it is found and each result as it arrives (on the calling thread). Stops early, cleanly,
/// when `stop` is set.
///
/// With guidance the range runs in batches of `batch_seeds`: every seed of a batch finishes
/// before the next batch starts, and only then does the corpus learn the batch's outcomes, in
/// seed order. So which configuration a seed runs never depends on `jobs` or on timing.
pub fn explore(
    options: &ExploreOptions,
    stop: &AtomicBool,
    mut on_progress: impl FnMut(Progress<'_>),
) -> ExploreSummary {
    let start = Instant::now();
    let mut tally = Tally::new(options.from);
    let mut corpus = Corpus::default();
    let batch_seeds = options
        .guidance
        .map_or(options.seeds, |settings| settings.batch_seeds)
        .max(1);
    let mut seeds_taken = 0u64;
    let mut batch_from = 0u64;
    while batch_from < options.seeds && !stop.load(Ordering::Relaxed) {
        let batch = batch_from..(batch_from.saturating_add(batch_seeds)).min(options.seeds);
        let batch_length = batch.end - batch.start;
        let run = run_batch(
            options,
            batch,
            &corpus,
            stop,
            start,
            &mut tally,
            &mut on_progress,
        );
        seeds_taken += run.seeds_taken;
        if options.guidance.is_some() {
            let mut outcomes = run.outcomes;
            outcomes.sort_by_key(|outcome| outcome.seed);
            for outcome in &outcomes {
                corpus.record(outcome.seed, &outcome.coverage, outcome.shape.as_ref());
            }
        }
        if run.seeds_taken < batch_length {
            break;
        }
        batch_from = batch_from.saturating_add(batch_seeds);
    }
    let mut summary = tally.into_summary();
    summary.wall_seconds = start.elapsed().as_secs_f64();
    summary.guidance = options.guidance;
    // Every offset a worker took was run to the end and reported, and a batch starts only
    // once the one before it was whole, so the seeds run are exactly `from..from + seeds_run`,
    // even when interrupted: a shard result relies on it to say which seeds an interrupted
    // shard left out.
    assert_eq!(
        summary.seeds_run, seeds_taken,
        "seeds run form a prefix of the range"
    );
    summary.interrupted = stop.load(Ordering::Relaxed) && summary.seeds_run < options.seeds;
    summary
}

/// What guidance learns from one seed at the barrier.
struct Outcome {
    seed: u64,
    coverage: Coverage,
    shape: Option<Shape>,
}

/// One batch's run: how many of its seeds were taken (all, unless interrupted), and what
/// each finished seed reached.
struct BatchRun {
    seeds_taken: u64,
    outcomes: Vec<Outcome>,
}

/// Runs the offsets `batch` of the range on `options.jobs` threads, drawing configurations
/// from `corpus`, which stays as it is until every one of them is done.
fn run_batch(
    options: &ExploreOptions,
    batch: std::ops::Range<u64>,
    corpus: &Corpus,
    stop: &AtomicBool,
    start: Instant,
    tally: &mut Tally,
    on_progress: &mut impl FnMut(Progress<'_>),
) -> BatchRun {
    let next_offset = AtomicU64::new(batch.start);
    let (sender, receiver) = mpsc::channel::<Message>();
    let mut outcomes = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            let sender = sender.clone();
            let (next_offset, batch_end) = (&next_offset, batch.end);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let offset = next_offset.fetch_add(1, Ordering::Relaxed);
                    if offset >= batch_end {
                        break;
                    }
                    let seed = options.from + offset;
                    let drawn = draw(seed, options, corpus);
                    let result = run_drawn(seed, drawn, options, stop, |found| {
                        // Should the receiver be gone, the send of the result below says so.
                        let _ = sender.send(Message::Found {
                            result: found.clone(),
                            found_at: start.elapsed(),
                        });
                    });
                    if sender.send(Message::Finished(result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for message in receiver {
            match message {
                Message::Found { result, found_at } => {
                    let failure = result.failure.as_ref().expect("a found seed failed");
                    tally.found(result.seed, found_at);
                    on_progress(Progress::Found {
                        seed: result.seed,
                        description: &result.description,
                        failure,
                    });
                }
                Message::Finished(mut result) => {
                    on_progress(Progress::Finished(&result));
                    if options.guidance.is_some() {
                        outcomes.push(Outcome {
                            seed: result.seed,
                            coverage: result.coverage.clone(),
                            shape: result.shape.take(),
                        });
                    }
                    tally.finished(result, start.elapsed());
                }
            }
        }
    });
    let seeds_taken = next_offset.load(Ordering::Relaxed).min(batch.end) - batch.start;
    BatchRun {
        seeds_taken,
        outcomes,
    }
}

/// A wall-clock duration for humans.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 120.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{:.1}min", seconds / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Claim;
    use crate::sim::scenario::parse_str;

    fn scenario(text: &str) -> Scenario {
        parse_str(text, Format::Yaml, "test.yaml").unwrap_or_else(|error| panic!("{error}"))
    }

    /// A scenario with one deliberately wrong expectation buried among harmless events.
    const WRONG_AMONG_NOISE: &str = "\
name: noisy
description: c2 expects to be granted a lock c1 holds
duration: 6s
cluster: {servers: 5, clients: 3}
events:
  - {at: 500ms, client: c3, op: preempt, lock: x}
  - {at: 1s, client: c1, op: preempt, lock: a}
  - {at: 1200ms, isolate: s5}
  - {at: 1500ms, client: c3, op: check, lock: x}
  - {at: 2s, client: c2, op: preempt, lock: a, expect: granted}
  - {at: 2500ms, heal: all}
  - {at: 3s, client: c3, op: release, lock: x}
workload: {clients: [c3], ops: 40, locks: 2}
";

    /// Three servers whose logs are damaged in the middle at entry 2 on `damaged`, crashed and
    /// restarted, then a liveness probe.
    fn with_damaged_logs(damaged: &[u32]) -> Scenario {
        let mut lines = vec![
            "name: damaged".to_string(),
            "description: logs damaged in the middle".to_string(),
            "duration: 8s".to_string(),
            "cluster: {servers: 3, clients: 1, leader: s1}".to_string(),
            "workload: {clients: [c1], ops: 20, locks: 2}".to_string(),
            "events:".to_string(),
        ];
        for server in damaged {
            lines.push(format!(
                "  - {{at: 2s, corrupt: {{node: s{server}, entry: 2}}}}"
            ));
            lines.push(format!("  - {{at: 2s, crash: s{server}}}"));
        }
        lines.push("  - {at: 3s, restart: all}".to_string());
        lines.push(
            "  - {at: 4s, client: c1, op: check, lock: a, consistency: linearizable, \
             timeout: 2s, expect: answered}"
                .to_string(),
        );
        scenario(&lines.join("\n"))
    }

    /// Raft promises progress only with a majority that can vote. One server of three
    /// repairing its damaged log leaves a majority, which elects a leader that repairs it, and
    /// the probe must be answered; two leave none (a repairing server does not vote), and the
    /// explorer does not judge the probe, while the same run fails `lockstep run`'s
    /// expectation as written.
    #[test]
    fn liveness_is_judged_only_while_a_majority_can_vote() {
        use crate::node::coverage::Branch;
        let (report, failure) = judge(&with_damaged_logs(&[3]));
        assert_eq!(failure, None, "{}", report.render());
        assert!(report.repairing_at_end.is_empty(), "{:?}", report.faults);
        assert_eq!(report.coverage.count(Branch::RecoveryCompleted), 1);
        let (report, failure) = judge(&with_damaged_logs(&[2, 3]));
        assert_eq!(report.repairing_at_end, ["s2", "s3"], "{:?}", report.faults);
        assert!(!report.passed, "the probe itself went unanswered");
        assert_eq!(failure, None, "{}", report.render());
        assert!(
            report
                .faults
                .iter()
                .any(|f| f.contains("convergence not judged")),
            "{:?}",
            report.faults
        );
    }

    #[test]
    fn minimizing_keeps_only_what_the_failure_needs() {
        let original = scenario(WRONG_AMONG_NOISE);
        let (report, failure) = judge(&original);
        let failure = failure.expect("c2 cannot be granted a held lock");
        assert_eq!(failure.kind, "expectation");
        let stop = AtomicBool::new(false);
        let budget = MinimizeBudget {
            runs_max: 200,
            wall_max: Duration::from_secs(3_600),
        };
        let Minimized {
            scenario: minimized,
            runs,
            cut_short,
            ..
        } = minimize(original.clone(), &report, &failure.kind, budget, &stop);
        assert!(runs > 0 && runs <= 200);
        assert_eq!(cut_short, None, "it ran until nothing smaller failed");
        let (_, still) = judge(&minimized);
        assert_eq!(
            still.map(|f| f.kind),
            Some("expectation".to_string()),
            "it still fails"
        );
        // c1's grant and c2's wrong expectation are all the failure needs.
        assert_eq!(minimized.events.len(), 2, "{}", minimized.to_yaml());
        assert!(minimized.workload.is_none());
        assert_eq!(minimized.cluster.clients, 2, "c3 only made noise");
        assert_eq!(minimized.cluster.servers, 1);
    }

    #[test]
    fn a_scenario_is_cut_just_after_the_moment_of_its_failure() {
        let original = scenario(WRONG_AMONG_NOISE);
        let cut = truncated(&original, Duration::from_micros(1_999_500)).expect("shorter");
        assert_eq!(cut.duration, Duration::from_millis(2_001));
        let times: Vec<u64> = cut.events.iter().map(|e| e.at.as_millis() as u64).collect();
        assert_eq!(times, vec![500, 1_000, 1_200, 1_500, 2_000]);
        assert!(
            truncated(&original, Duration::from_millis(5_999)).is_none(),
            "not shorter"
        );
        // The cut scenario is one a file can express.
        scenario::parse_str(&cut.to_yaml(), Format::Yaml, "cut").expect("valid");
    }

    #[test]
    fn a_history_failure_is_sealed_when_the_last_answer_of_its_window_returns() {
        use crate::sim::history::{HistoryOpKind, HistoryResult};
        let op = |client, call_ns, return_ns, token| HistoryOp {
            client,
            op: HistoryOpKind::Preempt,
            lock: "a".into(),
            consistency: None,
            call_ns,
            return_ns: Some(return_ns),
            result: HistoryResult::Granted { token },
            index: None,
            claim: Claim::EXCLUSIVE,
        };
        // Two overlapping grants to different clients: the window is both, ending at 9 ms; a
        // later, unrelated grant on another lock does not move the moment.
        let mut later = op(3, 20_000_000, 21_000_000, 5);
        later.lock = "b".into();
        let history = [
            op(1, 0, 5_000_000, 1),
            op(2, 1_000_000, 9_000_000, 2),
            later,
        ];
        assert_eq!(
            history_failure_moment(&history, LINEARIZABILITY),
            Some(Duration::from_millis(9))
        );
        assert_eq!(history_failure_moment(&history, MONOTONIC_READS), None);
        assert_eq!(history_failure_moment(&history[2..], LINEARIZABILITY), None);
    }

    #[test]
    fn removing_a_client_renumbers_the_rest_and_drops_what_named_it() {
        let original = scenario(WRONG_AMONG_NOISE);
        let without_c1 = without_client(&original, 1);
        assert_eq!(without_c1.cluster.clients, 2);
        // c2's expectation is now c1's, c3's events are c2's, c1's preempt is gone.
        let clients: Vec<u32> = without_c1
            .events
            .iter()
            .filter_map(|e| match e.action {
                Action::ClientOp { client, .. } => Some(client),
                _ => None,
            })
            .collect();
        assert_eq!(clients, vec![2, 2, 1, 2]);
        assert_eq!(without_c1.workload.as_ref().unwrap().clients, vec![2]);
        let without_s5 = without_server(&original, 5);
        assert_eq!(without_s5.cluster.servers, 4);
        assert!(
            !without_s5
                .events
                .iter()
                .any(|e| matches!(e.action, Action::Isolate(_)))
        );
        assert!(without_s5.cluster.connect.values().all(|s| s.0 <= 4));
    }

    #[test]
    fn a_passing_seed_writes_nothing_and_reports_its_configuration() {
        let options = ExploreOptions {
            seeds: 1,
            from: 3,
            jobs: 1,
            bounds: SwarmBounds::default(),
            out_dir: std::env::temp_dir().join("lockstep-explore-test-unused"),
            minimize: MinimizeBudget {
                runs_max: 10,
                wall_max: Duration::from_secs(30),
            },
            scenario_of: swarm_scenario,
            guidance: None,
        };
        let result = run_seed(3, &options, &AtomicBool::new(false), |found| {
            panic!("seed 3 passes, yet {found:?} was reported")
        });
        assert!(result.failure.is_none(), "{:?}", result.failure);
        assert!(result.written_to.is_none());
        assert!(result.description.contains("servers"));
        assert!(
            result.simulated_ms >= 14_000.0,
            "safety and liveness phases both ran"
        );
    }

    fn noisy_failure() -> (Scenario, RunReport, String) {
        let original = scenario(WRONG_AMONG_NOISE);
        let (report, failure) = judge(&original);
        let kind = failure.expect("c2 cannot be granted a held lock").kind;
        (original, report, kind)
    }

    fn budget(runs_max: usize, wall_max: Duration) -> MinimizeBudget {
        MinimizeBudget { runs_max, wall_max }
    }

    #[test]
    fn a_run_budget_of_zero_or_one_stops_minimizing_there_and_says_so() {
        let (original, report, kind) = noisy_failure();
        let stop = AtomicBool::new(false);
        let hour = Duration::from_secs(3_600);
        let none = minimize(original.clone(), &report, &kind, budget(0, hour), &stop);
        assert_eq!(none.runs, 0);
        assert_eq!(none.cut_short, Some(CutShort::Runs));
        assert_eq!(
            none.scenario.to_yaml(),
            original.to_yaml(),
            "written as it failed"
        );
        let one = minimize(original.clone(), &report, &kind, budget(1, hour), &stop);
        assert_eq!(one.runs, 1);
        assert_eq!(one.cut_short, Some(CutShort::Runs));
        let (_, still) = judge(&one.scenario);
        assert_eq!(
            still.map(|f| f.kind),
            Some(kind),
            "the best so far still fails"
        );
    }

    #[test]
    fn a_time_budget_of_zero_stops_after_the_first_candidate() {
        let (original, report, kind) = noisy_failure();
        let stop = AtomicBool::new(false);
        let zero = budget(300, Duration::ZERO);
        let minimized = minimize(original.clone(), &report, &kind, zero, &stop);
        assert_eq!(minimized.runs, 1, "the run budget had 299 more");
        assert_eq!(minimized.cut_short, Some(CutShort::Time));
        // ddmin's first candidate drops the first half of the events, c1's grant among them,
        // so it passes and the original is what is kept.
        assert_eq!(minimized.scenario.to_yaml(), original.to_yaml());
        let (_, still) = judge(&minimized.scenario);
        assert_eq!(still.map(|f| f.kind), Some(kind));
    }

    #[test]
    fn an_interrupt_stops_minimizing_before_any_run() {
        let (original, report, kind) = noisy_failure();
        let stop = AtomicBool::new(true);
        let minute = budget(300, Duration::from_secs(60));
        let minimized = minimize(original, &report, &kind, minute, &stop);
        assert_eq!(minimized.runs, 0);
        assert_eq!(minimized.cut_short, Some(CutShort::Interrupted));
    }

    fn finished(seed: u64, failure: Option<&str>) -> SeedResult {
        SeedResult {
            seed,
            description: "test".into(),
            failure: failure.map(|kind| Failure {
                kind: kind.into(),
                message: "broken".into(),
            }),
            simulated_ms: 1.0,
            simulated_ns: 1_000_000,
            events: 10,
            wall_ms: 1.0,
            written_to: None,
            minimized: None,
            minimization: failure.map(|_| Minimization {
                runs: 300,
                wall_seconds: 30.0,
                cut_short: Some(CutShort::Time),
            }),
            coverage: Coverage::default(),
            guided: None,
            shape: None,
        }
    }

    #[test]
    fn the_first_failure_figures_exclude_seeds_finished_while_it_is_minimized() {
        let seconds = Duration::from_secs;
        let mut tally = Tally::new(100);
        tally.finished(finished(100, None), seconds(1));
        tally.finished(finished(101, None), seconds(1));
        // Seed 103 fails at 2s; its worker minimizes it for 30s while the others finish
        // three seeds, and then seed 102 fails too.
        tally.found(103, seconds(2));
        tally.finished(finished(104, None), seconds(3));
        tally.finished(finished(105, None), seconds(4));
        tally.found(102, seconds(5));
        tally.finished(finished(106, None), seconds(6));
        tally.finished(finished(103, Some("liveness")), seconds(32));
        tally.finished(finished(102, Some("mutual_exclusion")), seconds(35));
        let summary = tally.into_summary();
        let found = summary.first_failure_found.expect("found");
        assert_eq!(
            (found.seed, found.seeds_run, found.wall_seconds),
            (103, 3, 2.0)
        );
        let by_seed = summary.first_failure_by_seed.expect("found");
        assert_eq!(
            (by_seed.seed, by_seed.seeds_run),
            (102, 3),
            "102 is third of the range"
        );
        assert_eq!(
            by_seed.wall_seconds, 5.0,
            "found at 5s, not when written at 35s"
        );
        // The old figure, kept in the shard result, counts what minimizing let finish.
        let arrived = summary.first_failure_arrived.expect("arrived");
        assert_eq!((arrived.seed, arrived.seeds_run), (103, 6));
        assert_eq!(summary.seeds_failed, 2);
        assert_eq!(summary.minimize_wall_seconds, 60.0);
        let seeds: Vec<u64> = summary.failures.iter().map(|r| r.seed).collect();
        assert_eq!(seeds, vec![102, 103]);
    }

    const QUIET: &str = "\
name: quiet
description: one client takes one free lock
duration: 1s
cluster: {servers: 1, clients: 1}
events:
  - {at: 200ms, client: c1, op: preempt, lock: a, expect: granted}
";

    /// Seed 2 fails (an expectation); every other seed passes quickly.
    fn seed_two_fails(seed: u64, _: &SwarmBounds) -> Drawn {
        let (scenario, description) = match seed {
            2 => (scenario(WRONG_AMONG_NOISE), "noisy"),
            _ => (scenario(QUIET), "quiet"),
        };
        Drawn {
            scenario,
            description: description.into(),
            shape: None,
            guided: None,
        }
    }

    #[test]
    fn a_failure_is_reported_when_found_and_written_when_its_budget_runs_out() {
        let out_dir =
            std::env::temp_dir().join(format!("lockstep-explore-found-{}", std::process::id()));
        let options = ExploreOptions {
            seeds: 5,
            from: 0,
            jobs: 1,
            bounds: SwarmBounds::default(),
            out_dir: out_dir.clone(),
            minimize: budget(300, Duration::ZERO),
            scenario_of: seed_two_fails,
            guidance: None,
        };
        let mut seen = Vec::new();
        let summary = explore(&options, &AtomicBool::new(false), |progress| {
            seen.push(match progress {
                Progress::Found { seed, failure, .. } => format!("found {seed} {}", failure.kind),
                Progress::Finished(result) => format!("finished {}", result.seed),
            })
        });
        let expected = [
            "finished 0",
            "finished 1",
            "found 2 expectation",
            "finished 2",
            "finished 3",
            "finished 4",
        ];
        assert_eq!(seen, expected, "found before it is minimized, once");
        assert_eq!((summary.seeds_run, summary.seeds_failed), (5, 1));
        let found = summary.first_failure_found.clone().expect("seed 2 failed");
        let by_seed = summary
            .first_failure_by_seed
            .clone()
            .expect("seed 2 failed");
        let arrived = summary
            .first_failure_arrived
            .clone()
            .expect("seed 2 failed");
        assert_eq!((found.seed, found.seeds_run), (2, 3));
        assert_eq!((by_seed.seed, by_seed.seeds_run), (2, 3));
        // Found, then minimized, then arrived: an order, not a timing.
        let minimization = summary.failures[0].minimization.expect("minimized");
        assert_eq!(minimization.runs, 1);
        assert_eq!(minimization.cut_short, Some(CutShort::Time));
        assert!(found.wall_seconds + minimization.wall_seconds <= arrived.wall_seconds);
        let written = summary.failures[0].written_to.clone().expect("written");
        let text = std::fs::read_to_string(&written).expect("the failure file");
        assert!(text.contains("in 1 runs"), "{text}");
        assert!(
            text.contains("cut short by the time budget (--minimize-time)"),
            "{text}"
        );
        let replayed = scenario(&text);
        assert_eq!(
            judge(&replayed).1.map(|f| f.kind).as_deref(),
            Some("expectation")
        );
        // Its timeline beside it, with the failing step marked.
        let page = std::fs::read_to_string(written.with_extension("html")).expect("the timeline");
        assert!(
            page.contains("\"invariant\":\"expectation\""),
            "the failing step is marked"
        );
        let _ = std::fs::remove_dir_all(out_dir);
    }
}
