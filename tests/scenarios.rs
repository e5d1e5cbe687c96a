//! Every shipped scenario passes, and a run is a pure function of its scenario and seed.

use lockstep::net::sim::Endpoint;
use lockstep::sim::runner::{self, RunOptions};
use lockstep::sim::scenario::{self, Scenario};
use lockstep::sim::trace::TraceEvent;
use std::path::Path;

mod common;

fn shipped(file: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(file);
    scenario::load_file(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `scenario` with a full trace and returns the trace bytes.
fn traced_run(scenario: &Scenario) -> Vec<u8> {
    let (report, trace) = common::run_traced(scenario);
    assert!(
        report.trace_events_written > 1_000,
        "the trace records every event"
    );
    trace
}

#[test]
fn every_shipped_scenario_passes_with_every_expectation_met() {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let files = scenario::scenario_files(&directory).expect("scenarios/ is readable");
    assert!(
        files.len() >= 10,
        "ten scenarios ship, found {}",
        files.len()
    );
    for file in files {
        let loaded = scenario::load_file(&file).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            !loaded.description.trim().is_empty(),
            "{} says what it shows",
            file.display()
        );
        let report = runner::run(&loaded, RunOptions::default()).expect("no trace, no I/O");
        assert!(report.passed, "{}\n{}", file.display(), report.render());
        assert!(report.violation.is_none());
        let local_reads = report
            .history
            .iter()
            .filter(|op| op.consistency == Some(lockstep::node::Consistency::Local))
            .count();
        for invariant in &report.invariants {
            // A scenario that shows a limit names the checker it expects to fail.
            assert!(
                invariant.held != invariant.expected_to_fail,
                "{}: {}",
                file.display(),
                invariant.name
            );
            // Monotonic reads is about local checks, and fenced writes judges each write the
            // resource accepted: a scenario without any has nothing to check.
            let expected_checks = match invariant.name.as_str() {
                "monotonic_reads" => local_reads > 0,
                "fenced_writes" => {
                    assert_eq!(invariant.checks, report.resource_writes.accepted);
                    report.resource_writes.accepted > 0
                }
                _ => true,
            };
            assert_eq!(
                invariant.checks > 0,
                expected_checks,
                "{}: {}",
                file.display(),
                invariant.name
            );
        }
        let names: Vec<&str> = report.invariants.iter().map(|i| i.name.as_str()).collect();
        assert!(names.contains(&"linearizability") && names.contains(&"monotonic_reads"));
        // Every answer carries the log index it reflects, which sharpens monotonic reads.
        assert!(
            report
                .history
                .iter()
                .filter(|op| op.op != lockstep::sim::history::HistoryOpKind::Expire)
                .all(|op| op.index.is_some() == op.return_ns.is_some()),
            "{}: an answered operation without its index",
            file.display()
        );
        assert_eq!(report.expectations_met(), report.expectations.len());
    }
}

#[test]
fn the_same_scenario_and_seed_give_a_byte_identical_trace() {
    let scenario = shipped("02-leader-crash-after-grant.yaml");
    let first = traced_run(&scenario);
    let second = traced_run(&scenario);
    assert_eq!(first.len(), second.len());
    assert!(first == second, "two runs of one seed diverged");
}

#[test]
fn different_seeds_give_different_traces() {
    let scenario = shipped("05-flaky-network.yaml");
    let seed_five = traced_run(&scenario);
    let seed_six = traced_run(&scenario.clone().with_seed(6));
    assert_ne!(seed_five, seed_six);
}

#[test]
fn the_trace_is_json_lines_with_deliveries_faults_timers_and_operations() {
    let trace = traced_run(&shipped("02-leader-crash-after-grant.yaml"));
    let text = String::from_utf8(trace).expect("the trace is UTF-8");
    let mut kinds = std::collections::BTreeSet::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
        assert!(
            event["t"].is_u64(),
            "every event has a simulated time: {line}"
        );
        kinds.insert(
            event["kind"]
                .as_str()
                .expect("every event has a kind")
                .to_string(),
        );
    }
    for kind in [
        "send", "deliver", "timer", "role", "fault", "op_start", "op_done",
    ] {
        assert!(
            kinds.contains(kind),
            "the trace has {kind} events: {kinds:?}"
        );
    }
}

#[test]
fn a_broken_expectation_fails_the_run_and_names_the_event() {
    let mut scenario = shipped("01-seed-walkthrough.yaml");
    // c2 really gets `held_by c1` at 1s; claim it gets the lock instead.
    let event = scenario
        .events
        .iter_mut()
        .find(|event| event.index == 1)
        .expect("the walk-through has a second event");
    if let lockstep::sim::scenario::Action::ClientOp { expect, .. } = &mut event.action {
        *expect = Some(lockstep::sim::scenario::Expect::Granted);
    }
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace, no I/O");
    assert!(!report.passed);
    let unmet: Vec<_> = report.expectations.iter().filter(|e| !e.met).collect();
    assert_eq!(unmet.len(), 1);
    assert_eq!(unmet[0].place, "events[1]");
    assert_eq!(unmet[0].actual, "held_by c1");
    assert!(
        report
            .verdict_line()
            .starts_with("FAIL seed-walkthrough (seed 1)")
    );
}

/// The snapshot scenario must really make the leader send a snapshot: the follower it isolates
/// misses entries that every other log has compacted away by the time it returns.
#[test]
fn the_follower_behind_the_compaction_point_catches_up_by_snapshot() {
    let scenario = shipped("10-follower-behind-snapshot.yaml");
    let trace = String::from_utf8(traced_run(&scenario)).expect("traces are UTF-8");
    let snapshots_delivered_to_s3 = trace
        .lines()
        .filter(|line| {
            line.contains(r#""kind":"deliver""#)
                && line.contains(r#""to":"s3""#)
                && line.contains(r#""msg":"install_snapshot""#)
        })
        .count();
    assert!(
        snapshots_delivered_to_s3 >= 1,
        "s3 rejoins behind the compaction point and must be sent a snapshot"
    );
    let report = runner::run(&scenario, RunOptions::default()).expect("runs");
    assert!(report.passed, "{}", report.render());
}

#[test]
fn rogue_clients_attacking_through_a_crash_and_a_partition_leave_honest_locks_intact() {
    let scenario = shipped("11-rogue-clients.yaml");
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
    let rogues = report.rogues.as_ref().expect("the scenario has rogues");
    let sent: u64 = rogues.sent.values().sum();
    assert!(sent > 500, "two rogues at 25/s for 20s: {sent}");
    assert!(
        rogues.sent.len() >= 9,
        "every attack kind and hello: {rogues:?}"
    );
    assert!(
        rogues.errors > sent / 2,
        "most hostile requests are refused"
    );
    let isolation = report
        .invariants
        .iter()
        .find(|invariant| invariant.name == "rogue_isolation")
        .expect("listed when there are rogues");
    assert!(isolation.held && isolation.checks > 500);
    // Rogue operations are not client operations: the history holds the honest ones only.
    assert!(report.history.iter().all(|op| op.client <= 3));
}

/// Scenario 23: rogues that watch and claim modes. Every watch refusal of the node is
/// reached, the honest watchers' streams are judged and hold, and nothing the rogues did
/// shows in the honest history or the final state.
#[test]
fn rogues_attacking_watches_and_modes_reach_every_watch_refusal_and_change_nothing() {
    use lockstep::node::coverage::Branch;
    let scenario = shipped("23-rogue-watches-and-modes.yaml");
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
    let rogues = report.rogues.as_ref().expect("the scenario has rogues");
    assert!(
        rogues.sent.get("watch").is_some_and(|&n| n > 200),
        "{rogues:?}"
    );
    assert!(
        rogues.sent.get("mode_claim").is_some_and(|&n| n > 200),
        "{rogues:?}"
    );
    assert!(
        rogues.watch_refusals > 100 && rogues.watch_lines > 100,
        "{rogues:?}"
    );
    for branch in [
        Branch::WatchRefusedUnauthorized,
        Branch::WatchRefusedUnknownClient,
        Branch::WatchRefusedBadTarget,
        Branch::WatchRefusedIdInUse,
        Branch::WatchRefusedTooManyWatches,
    ] {
        assert!(
            report.coverage.count(branch) > 0,
            "{} never reached",
            branch.name()
        );
    }
    for name in ["rogue_isolation", "watch_streams", "mutual_exclusion"] {
        let invariant = (report.invariants.iter())
            .find(|invariant| invariant.name == name)
            .expect("listed");
        assert!(invariant.held && invariant.checks > 100, "{invariant:?}");
    }
    assert!(report.history.iter().all(|op| op.client <= 5));
}

#[test]
fn a_run_with_rogues_is_byte_identical_for_one_seed() {
    let scenario = shipped("11-rogue-clients.yaml");
    let first = traced_run(&scenario);
    assert!(
        first == traced_run(&scenario),
        "two runs of one seed diverged"
    );
    let text = String::from_utf8(first).expect("UTF-8");
    assert!(text.contains("\"from\":\"r1\""), "rogue traffic is traced");
}

#[test]
fn adding_rogues_leaves_the_honest_workload_and_the_first_honest_messages_as_they_were() {
    // Rogues draw from their own streams. Until the first rogue message, a run with rogues
    // is the run without them, message for message.
    let with = shipped("11-rogue-clients.yaml");
    let mut without = with.clone();
    without.rogues = None;
    let lines = |scenario: &Scenario| {
        let trace = String::from_utf8(traced_run(scenario)).expect("UTF-8");
        trace.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let (with_lines, without_lines) = (lines(&with), lines(&without));
    let first_rogue = with_lines
        .iter()
        .position(|line| line.contains("\"r1\"") || line.contains("\"r2\""))
        .expect("rogues sent something");
    assert!(
        first_rogue > 5,
        "the rogues start after a gap: {first_rogue}"
    );
    assert_eq!(with_lines[..first_rogue], without_lines[..first_rogue]);
}

/// Scenario 12 must really do what it says: the leader's append is cut after its write and the
/// tear loses it, a voter is cut after writing its new term, and s4 cuts a log damaged in the
/// middle and is repaired by a leader, all in a run that is byte-identical for its seed.
#[test]
fn crashes_inside_steps_and_a_damaged_log_do_what_scenario_12_says() {
    use lockstep::node::coverage::Branch;
    let scenario = shipped("12-crash-inside-step.yaml");
    let first = traced_run(&scenario);
    assert!(
        first == traced_run(&scenario),
        "two runs of one seed diverged"
    );
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
    let fault = |words: &[&str]| {
        report
            .faults
            .iter()
            .any(|fault| words.iter().all(|word| fault.contains(word)))
    };
    assert!(
        fault(&[
            "s1 crashed inside a step, after 1 of",
            "carried out: persist entry"
        ]),
        "{:#?}",
        report.faults
    );
    assert!(fault(&["s1's disk: torn write: 0 of 1 unsynced record"]));
    assert!(fault(&[
        "s3 crashed inside a step",
        "carried out: persist term 2;"
    ]));
    assert!(fault(&["s3 recovered its disk: truncated a torn tail"]));
    assert!(fault(&[
        "s4 recovered its disk: cut the log before damage",
        "record 3 (entry 3)"
    ]));
    assert!(fault(&["s4 recovered its disk: repairing from peers"]));
    assert!(
        report.refused_to_start.is_empty(),
        "{:?}",
        report.refused_to_start
    );
    assert!(report.repairing_at_end.is_empty(), "s4 was repaired");
    assert!(report.coverage.count(Branch::RecoveryCompleted) >= 1);
    let text = String::from_utf8(first).expect("UTF-8");
    assert!(
        text.contains(r#""kind":"fault","fault":"s1 crashed inside a step"#),
        "the cut is in the trace"
    );
}

/// s2's last record is the grant c1 was told about, committed by s1 and s2 alone (s3 is cut
/// off), and it rots on s2's disk. The real log cannot tell a rotted last record from a torn
/// one; truncated as torn, it would let s2 vote for a log without the grant. Instead s2 cuts
/// its log and repairs it from peers, voting for no one meanwhile: s3 cannot be elected
/// without the grant, and once s1 is back it leads, repairs s2, and the grant survives.
const DAMAGED_TAIL: &str = "\
name: damaged-tail
description: s2's last record, the grant c1 heard, rots; s2 repairs it from peers.
seed: 1
duration: 8s
cluster: {servers: 3, clients: 2, leader: s1, connect: {c1: s1, c2: s1}}
network: {latency: {min: 1ms, max: 5ms}}
events:
  - {at: 1s, isolate: s3}
  - {at: 2s, client: c1, op: preempt, lock: a, expect: granted}
  - {at: 3s, crash: s1}
  - {at: 3s, crash: s2}
  - {at: 3100ms, corrupt: {node: s2, entry: 3}}
  - {at: 3200ms, heal: all}
  - {at: 3200ms, restart: s2}
  - {at: 5s, restart: s1}
  - {at: 7s, client: c2, op: check, lock: a, consistency: linearizable, expect: {owner: c1}}
";

#[test]
fn a_damaged_last_record_is_repaired_from_peers_and_the_acknowledged_grant_survives() {
    use lockstep::node::coverage::Branch;
    let scenario = scenario::parse_str(DAMAGED_TAIL, scenario::Format::Yaml, "damaged-tail.yaml")
        .unwrap_or_else(|error| panic!("{error}"));
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
    assert!(
        report
            .faults
            .iter()
            .any(|fault| fault.contains("s2 recovered its disk: cut the log before damage")),
        "{:#?}",
        report.faults
    );
    assert!(report.coverage.count(Branch::VoteRefusedRecovering) >= 1);
    assert!(report.coverage.count(Branch::RecoveryCompleted) >= 1);
    let survive = report
        .invariants
        .iter()
        .find(|invariant| invariant.name == "acknowledged_writes_survive")
        .expect("the checker ran");
    assert!(survive.checks > 0, "{}", report.render());
}

/// The same run with the repair rule switched off (a test-only switch): s2 votes with a log
/// that lost the grant, a leader without it is elected, and the grant is gone. The first
/// checker to see it is leader completeness, at the election.
#[test]
fn with_the_repair_rule_off_the_same_damage_loses_the_acknowledged_grant() {
    let scenario = scenario::parse_str(DAMAGED_TAIL, scenario::Format::Yaml, "damaged-tail.yaml")
        .unwrap_or_else(|error| panic!("{error}"));
    let options = RunOptions {
        unsafe_recovering_votes: true,
        ..RunOptions::default()
    };
    let report = runner::run(&scenario, options).expect("no trace");
    let violation = report.violation.as_ref().expect("the lost grant is seen");
    assert_eq!(
        violation.invariant,
        "leader_completeness",
        "{}",
        report.render()
    );
    assert!(violation.message.contains("without committed index 3"));
}

/// The protocol coverage a run reports sums every server incarnation: a leader elected before
/// everyone crashed still counts after the restart, beside the one elected after it.
#[test]
fn coverage_counts_what_crashed_servers_did_before_they_crashed() {
    use lockstep::node::coverage::Branch;
    let report = runner::run(&shipped("07-crash-all-restart.yaml"), RunOptions::default())
        .expect("no trace, no I/O");
    assert!(report.passed, "{}", report.render());
    let elected = report.coverage.count(Branch::LeaderElected);
    assert!(
        elected >= 2,
        "leaders elected before and after the crash: {elected}"
    );
    assert!(report.coverage.count(Branch::VoteGranted) >= 2);
    assert_eq!(
        report.coverage.count(Branch::BuggifyResent),
        0,
        "no BUGGIFY unless the scenario asks for it"
    );
}

/// `buggify: P` makes every server take rare but legal paths, and the run still passes: the
/// walkthrough's expectations all hold with its servers resending, skipping heartbeats,
/// cutting batches short and timing out early.
#[test]
fn a_buggified_walkthrough_still_meets_every_expectation() {
    use lockstep::node::coverage::Branch;
    let mut scenario = shipped("01-seed-walkthrough.yaml");
    scenario.buggify = Some(0.2);
    // Through the file format too: the key reads back.
    let reread = scenario::parse_str(&scenario.to_yaml(), scenario::Format::Yaml, "buggified")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(reread.buggify, Some(0.2));
    let report = runner::run(&reread, RunOptions::default()).expect("no trace, no I/O");
    assert!(report.passed, "{}", report.render());
    for branch in [
        Branch::BuggifyResent,
        Branch::BuggifySkippedHeartbeat,
        Branch::BuggifySpuriousElectionTimer,
    ] {
        assert!(report.coverage.count(branch) > 0, "{}", branch.name());
    }
}

/// Scenario 21's twenty waiters are granted in the order they asked, and the leader crash
/// really falls in the middle of the line: some were granted by the first leader, the rest by
/// the one elected after the crash, each grant's token larger than the one before.
#[test]
fn twenty_waiters_are_served_in_the_order_they_asked_across_the_leader_crash() {
    use lockstep::sim::history::{HistoryOpKind, HistoryResult};
    let scenario = shipped("21-twenty-waiters-through-leader-crash.yaml");
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
    assert_eq!(
        report.leaders_elected, 2,
        "one leader crash, one new leader"
    );
    let mut acquires: Vec<_> = report
        .history
        .iter()
        .filter(|op| op.op == HistoryOpKind::Acquire)
        .collect();
    acquires.sort_by_key(|op| op.call_ns);
    let clients: Vec<u32> = acquires.iter().map(|op| op.client).collect();
    assert_eq!(
        clients,
        (2..=21).collect::<Vec<u32>>(),
        "c2 to c21 asked in turn"
    );
    let tokens: Vec<u64> = acquires
        .iter()
        .map(|op| match op.result {
            HistoryResult::Granted { token } => token,
            ref other => panic!("c{} was not granted: {other:?}", op.client),
        })
        .collect();
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "grants in asking order, tokens {tokens:?}"
    );
    let crash_ns = 5_000_000_000;
    let granted_before_crash = acquires
        .iter()
        .filter(|op| op.return_ns.expect("granted") < crash_ns)
        .count();
    assert!(
        (1..20).contains(&granted_before_crash),
        "the crash falls mid-line: {granted_before_crash} of 20 granted before it"
    );
}

/// Seed 296481, minimized by the explorer (tests/explorer-finds/296481.yaml): a shared claim
/// unanswered, its session expired, a plain acquire handed the lock behind it. The shared model's
/// search once called the history wrong; it is legal, and the run passes.
#[test]
fn explorer_find_296481_a_hand_over_after_an_expiry_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/explorer-finds/296481.yaml");
    let scenario = scenario::load_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace, no I/O");
    assert!(report.passed, "{}", report.render());
}

/// Explorer find, seed 281259 (tests/explorer-finds/281259.yaml has the story): a term that
/// only the log held, kept whole by a crash inside a step, must survive damage found in an
/// earlier record at a later start, as `Wal::open` makes it survive by writing the hard-state
/// file. Before the fix s5 came back repairing at its leader's own term and was never repaired
/// (convergence failed with s5 at applied index 0); now it repairs one term above it.
#[test]
fn explorer_find_281259_a_repairing_server_comes_back_above_the_term_it_acknowledged_in() {
    use lockstep::node::coverage::Branch;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/explorer-finds/281259.yaml");
    let scenario = scenario::load_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
    assert!(
        report.faults.iter().any(|fault| fault
            .contains("s5 recovered its disk: repairing from peers: term 3, 46 entries kept")),
        "s5 repairs from the term it acknowledged entries in: {:#?}",
        report.faults
    );
    assert!(report.coverage.count(Branch::RecoveryCompleted) >= 1);
}

/// Explorer find, seed 324037 (tests/explorer-finds/324037.yaml has the story): a rogue's
/// acquire under an older seq than the one it waits with applies to nothing, and the leader
/// must keep the deadline of the waiter it has, not of the stale entry. Before the fix s3
/// failed its queue invariant ("keeps a wait deadline for client#9, which does not wait").
#[test]
fn explorer_find_324037_a_stale_acquire_leaves_the_waiters_deadline_alone() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/explorer-finds/324037.yaml");
    let scenario = scenario::load_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let report = runner::run(&scenario, RunOptions::default()).expect("no trace");
    assert!(report.passed, "{}", report.render());
}

/// Rogues stop at `rogues.until`: the swarm sets it where its liveness phase starts, so that
/// the liveness probes judge a cluster the faults left alone. A flood of writes under the
/// rogues' own identities is load, and with one entry per append it once kept a client's
/// keepalive waiting past its lease in the liveness phase (explorer seed 324232).
#[test]
fn rogues_fall_silent_at_their_until_time() {
    let text = "name: rogues-until\ndescription: rogues stop at one second\nseed: 5\nduration: 3s\nsettle: 2s\n\
                cluster: {servers: 3, clients: 2}\n\
                workload: {clients: [c1, c2], ops: 40, locks: 2}\n\
                rogues: {clients: 2, rate: 50/s, until: 1s}\n";
    let scenario = scenario::parse_str(text, scenario::Format::Yaml, "rogues-until.yaml")
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        scenario.to_yaml().contains("until: 1000ms"),
        "{}",
        scenario.to_yaml()
    );
    let options = RunOptions {
        keep_trace_events: Some(1_000_000),
        ..RunOptions::default()
    };
    let report = runner::run(&scenario, options).expect("no trace file");
    assert!(report.passed, "{}", report.render());
    let trace = report.trace.expect("kept");
    let rogue_sends: Vec<_> = (trace.events.iter())
        .filter_map(|(at, event)| match event {
            TraceEvent::Send {
                from: Endpoint::Rogue(_),
                ..
            } => Some(at.as_nanos()),
            _ => None,
        })
        .collect();
    let until_ns = 1_000_000_000;
    assert!(
        rogue_sends.iter().filter(|at| **at < until_ns).count() > 20,
        "the rogues attack before their until time: {} sends",
        rogue_sends.len()
    );
    assert_eq!(
        rogue_sends.iter().filter(|at| **at >= until_ns).count(),
        0,
        "nothing from a rogue once its until time has come"
    );
}
