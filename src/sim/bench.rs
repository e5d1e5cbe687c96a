//! `lockstep bench`: how fast the simulator runs the standard workload, with every checker on.
//!
//! Speed is measured here, never asserted in tests: a timed test flakes on a busy machine.

use super::runner::{self, RunOptions};
use super::scenario::{ClusterSpec, Mix, Scenario, Timing, WorkloadSpec};
use crate::net::NetworkParams;
use crate::node::ServerId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub simulated_seconds: u64,
    pub servers: u32,
    pub clients: u32,
    pub locks: u32,
    pub drop: f64,
    pub repeat: u32,
    pub seed: u64,
}

impl BenchOptions {
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(1..=3_600).contains(&self.simulated_seconds) {
            problems.push(format!(
                "--seconds {} is outside 1..=3600",
                self.simulated_seconds
            ));
        }
        if !(1..=15).contains(&self.servers) {
            problems.push(format!("--servers {} is outside 1..=15", self.servers));
        }
        if !(1..=1_000).contains(&self.clients) {
            problems.push(format!("--clients {} is outside 1..=1000", self.clients));
        }
        if !(1..=10_000).contains(&self.locks) {
            problems.push(format!("--locks {} is outside 1..=10000", self.locks));
        }
        if !(0.0..=1.0).contains(&self.drop) {
            problems.push(format!("--drop {} is outside [0, 1]", self.drop));
        }
        if !(1..=100).contains(&self.repeat) {
            problems.push(format!("--repeat {} is outside 1..=100", self.repeat));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The standard scenario: every client runs random operations over the locks for the whole
    /// duration, on a lossy network.
    pub fn scenario(&self, seed: u64) -> Scenario {
        let connect: BTreeMap<u32, ServerId> = (1..=self.clients)
            .map(|c| (c, ServerId((c - 1) % self.servers + 1)))
            .collect();
        let duration = Duration::from_secs(self.simulated_seconds);
        Scenario {
            name: "bench-standard".into(),
            description: format!(
                "{} servers, {} clients, {} locks, {}% drop, {} s simulated",
                self.servers,
                self.clients,
                self.locks,
                self.drop * 100.0,
                self.simulated_seconds
            ),
            seed,
            duration,
            settle: Duration::from_secs(10),
            cluster: ClusterSpec {
                servers: self.servers,
                clients: self.clients,
                leader: None,
                connect,
            },
            network: NetworkParams {
                latency_min: Duration::from_millis(1),
                latency_max: Duration::from_millis(10),
                tail: None,
                drop: self.drop,
                duplicate: 0.0,
            },
            disk: crate::sim::disk::DiskFaults::default(),
            buggify: None,
            clock_drift: None,
            sessions: None,
            timing: Timing::default(),
            events: Vec::new(),
            workload: Some(WorkloadSpec {
                clients: (1..=self.clients).collect(),
                // More than the clients can issue in the duration: they stay busy throughout.
                ops: self.clients.saturating_mul(
                    u32::try_from(self.simulated_seconds * 200).unwrap_or(u32::MAX),
                ),
                locks: self.locks,
                mix: Mix {
                    preempt: 0.4,
                    release: 0.4,
                    check: 0.2,
                    linearizable: 0.25,
                    acquire: 0.0,
                    acquire_wait_ms: 0,
                    shared: 0.0,
                    permits: None,
                },
                think_min: Duration::from_millis(1),
                think_max: Duration::from_millis(20),
            }),
            rogues: None,
            expect_final: BTreeMap::new(),
            expect_violations: Default::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchRun {
    pub seed: u64,
    pub passed: bool,
    pub wall_seconds: f64,
    pub simulated_seconds: f64,
    pub deliveries: u64,
    pub events: u64,
    pub operations: u64,
    pub deliveries_per_second: f64,
    pub events_per_second: f64,
    /// Simulated time over wall time.
    pub speedup: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub description: String,
    pub runs: Vec<BenchRun>,
    pub all_passed: bool,
    pub best_deliveries_per_second: f64,
    pub median_deliveries_per_second: f64,
    pub median_speedup: f64,
}

/// Runs the standard scenario `repeat` times; `progress` gets a line after each run.
pub fn run(options: &BenchOptions, mut progress: impl FnMut(String)) -> BenchResult {
    let mut runs = Vec::new();
    for offset in 0..u64::from(options.repeat) {
        let seed = options.seed + offset;
        let scenario = options.scenario(seed);
        let report =
            runner::run(&scenario, RunOptions::default()).expect("no trace, so no I/O error");
        let wall_seconds = report.wall_ms / 1e3;
        let run = BenchRun {
            seed,
            passed: report.passed,
            wall_seconds,
            simulated_seconds: report.simulated_ms / 1e3,
            deliveries: report.network.delivered,
            events: report.events_processed,
            operations: report.ops.issued,
            deliveries_per_second: report.network.delivered as f64 / wall_seconds,
            events_per_second: report.events_processed as f64 / wall_seconds,
            speedup: report.simulated_ms / report.wall_ms,
        };
        progress(format!(
            "run {}/{} (seed {seed}): {:.0} deliveries/s, {:.0}x real time{}",
            offset + 1,
            options.repeat,
            run.deliveries_per_second,
            run.speedup,
            if run.passed {
                String::new()
            } else {
                format!(" -- FAILED: {}", report.verdict_line())
            }
        ));
        runs.push(run);
    }
    let mut rates: Vec<f64> = runs.iter().map(|r| r.deliveries_per_second).collect();
    rates.sort_by(f64::total_cmp);
    let mut speedups: Vec<f64> = runs.iter().map(|r| r.speedup).collect();
    speedups.sort_by(f64::total_cmp);
    BenchResult {
        description: options.scenario(options.seed).description,
        all_passed: runs.iter().all(|r| r.passed),
        best_deliveries_per_second: rates.last().copied().unwrap_or(0.0),
        median_deliveries_per_second: rates[rates.len() / 2],
        median_speedup: speedups[speedups.len() / 2],
        runs,
    }
}

impl BenchResult {
    pub fn render(&self) -> String {
        let mut out = format!("standard workload: {}\n", self.description);
        for run in &self.runs {
            let _ = writeln!(
                out,
                "  seed {:>3}: {:>10.0} deliveries/s  {:>8.0} events/s  {:>6.1}x real time  {} deliveries in {:.2}s wall{}",
                run.seed,
                run.deliveries_per_second,
                run.events_per_second,
                run.speedup,
                run.deliveries,
                run.wall_seconds,
                if run.passed { "" } else { "  FAILED" }
            );
        }
        let _ = writeln!(
            out,
            "best {:.0} deliveries/s, median {:.0} deliveries/s, median {:.1}x real time",
            self.best_deliveries_per_second, self.median_deliveries_per_second, self.median_speedup
        );
        out
    }
}

/// One linearizability-checker measurement.
#[derive(Clone, Debug, Serialize)]
pub struct LinearizabilityBench {
    pub case: String,
    pub operations: usize,
    pub locks: usize,
    pub clients: u32,
    pub seconds: f64,
    pub verdict_ok: bool,
    pub target_seconds: f64,
}

/// The two targets: 100,000 operations over 100 locks in under 1 s, and 2,000 operations on
/// one hot lock with 20 clients in under 10 s. Both histories are valid, so the checker must
/// search all the way to "linearizable".
pub fn linearizability_suite(seed: u64) -> Vec<LinearizabilityBench> {
    let cases = [
        ("100k ops, 100 locks, 50 clients", 100_000, 100, 50, 1.0),
        ("2k ops, 1 hot lock, 20 clients", 2_000, 1, 20, 10.0),
    ];
    cases
        .iter()
        .map(|&(case, operations, locks, clients, target_seconds)| {
            let (report, elapsed) = super::linearizability::bench(operations, locks, clients, seed);
            LinearizabilityBench {
                case: case.to_string(),
                operations,
                locks,
                clients,
                seconds: elapsed.as_secs_f64(),
                verdict_ok: report.passed(),
                target_seconds,
            }
        })
        .collect()
}

/// Explorer throughput: seeds per second for 10-second simulated runs of 5 servers.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreBench {
    pub seeds: u64,
    pub jobs: usize,
    pub wall_seconds: f64,
    pub seeds_per_second: f64,
    pub simulated_seconds_per_wall_second: f64,
    pub failures: u64,
}

pub fn explore_suite(seeds: u64, jobs: usize) -> ExploreBench {
    use super::explore::{self, ExploreOptions};
    use super::swarm::SwarmBounds;
    let options = ExploreOptions {
        seeds,
        from: 1_000_000,
        jobs,
        bounds: SwarmBounds {
            servers_min: 5,
            servers_max: 5,
            safety: Duration::from_secs(10),
        },
        out_dir: std::env::temp_dir().join("lockstep-bench-failures"),
        minimize: explore::MinimizeBudget {
            runs_max: 0,
            wall_max: Duration::ZERO,
        },
        scenario_of: explore::swarm_scenario,
        guidance: None,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let summary = explore::explore(&options, &stop, |_| {});
    ExploreBench {
        seeds: summary.seeds_run,
        jobs,
        wall_seconds: summary.wall_seconds,
        seeds_per_second: summary.seeds_run as f64 / summary.wall_seconds.max(1e-9),
        simulated_seconds_per_wall_second: summary.simulated_seconds
            / summary.wall_seconds.max(1e-9),
        failures: summary.seeds_failed,
    }
}
