//! Stories of time going wrong in the simulator: nodes that read their own drifting clocks,
//! clocks that change speed, and nodes frozen by a pause (a GC pause, SIGSTOP) that wake up and
//! act on what they believed before.

use lockstep::sim::scenario::{self, Format, Scenario};
use std::path::Path;

mod common;

fn yaml(text: &str) -> Scenario {
    scenario::parse_str(text, Format::Yaml, "story.yaml").unwrap_or_else(|error| panic!("{error}"))
}

/// Runs `scenario` with a full trace, returning the report and the trace as text.
fn traced_run(scenario: &Scenario) -> (lockstep::sim::report::RunReport, String) {
    let (report, trace) = common::run_traced(scenario);
    (report, String::from_utf8(trace).expect("UTF-8"))
}

/// The trace lines of `kind` (e.g. `"timer"`) that mention every one of `words`.
fn lines_with<'a>(trace: &'a str, words: &[&str]) -> Vec<&'a str> {
    trace
        .lines()
        .filter(|line| words.iter().all(|word| line.contains(word)))
        .collect()
}

/// The true time, in ns, of a trace line.
fn time_of(line: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    value["t"].as_u64().expect("every line has a time")
}

#[test]
fn the_paused_leader_scenario_passes_and_is_byte_identical_for_its_seed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/13-paused-leader.yaml");
    let scenario = scenario::load_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let (report, first) = traced_run(&scenario);
    assert!(report.passed, "{}", report.render());
    let (_, second) = traced_run(&scenario);
    assert!(first == second, "two runs of one seed diverged");
    // s1 slept through its leadership: a newer leader was elected during the pause.
    assert!(
        report.leader_timeline.len() >= 2,
        "{:?}",
        report.leader_timeline
    );
    // It woke up still leading term 1 and acted on it first: its heartbeat of term 1 left
    // at the very moment it resumed, before it read the newer term waiting for it.
    let resumed = lines_with(&first, &["\"fault\"", "resume s1: "]);
    assert_eq!(resumed.len(), 1, "one pause of s1 ends");
    let woke_at = time_of(resumed[0]);
    let stale_heartbeats: Vec<&str> = lines_with(&first, &["\"from\":\"s1\"", "append_entries"])
        .into_iter()
        .filter(|line| time_of(line) == woke_at && line.contains("\"term\":1,"))
        .collect();
    assert!(
        !stale_heartbeats.is_empty(),
        "s1 sent nothing of term 1 when it woke"
    );
}

#[test]
fn nothing_reaches_a_paused_node_until_it_wakes_and_then_everything_does_in_order() {
    let scenario = yaml(
        "name: frozen follower\n\
         description: s3 sleeps for 2 s\n\
         duration: 6s\n\
         cluster: {servers: 3, clients: 1, leader: s1}\n\
         events:\n\
         \x20 - {at: 1s, pause: {node: s3, for: 2s}}\n\
         \x20 - {at: 1500ms, client: c1, op: preempt, lock: a, expect: granted}\n",
    );
    let (report, trace) = traced_run(&scenario);
    assert!(report.passed, "{}", report.render());
    let deliveries_to_s3: Vec<u64> = lines_with(&trace, &["\"kind\":\"deliver\"", "\"to\":\"s3\""])
        .into_iter()
        .map(time_of)
        .collect();
    let (one_s, three_s) = (1_000_000_000, 3_000_000_000);
    assert!(
        deliveries_to_s3
            .iter()
            .all(|&at| at <= one_s || at >= three_s),
        "s3 was handed a message while it slept"
    );
    let at_wake = deliveries_to_s3.iter().filter(|&&at| at == three_s).count();
    assert!(
        at_wake >= 10,
        "the heartbeats of two seconds wait for s3 and arrive when it wakes, got {at_wake}"
    );
    // Its timers did not fire while it slept either.
    let s3_timers_asleep = lines_with(&trace, &["\"kind\":\"timer\"", "\"node\":\"s3\""])
        .into_iter()
        .map(time_of)
        .filter(|&at| at > one_s && at < three_s)
        .count();
    assert_eq!(s3_timers_asleep, 0);
}

#[test]
fn an_operation_handed_to_a_paused_client_starts_only_when_the_client_wakes() {
    let scenario = yaml(
        "name: frozen client\n\
         description: c1 is handed a preempt while it sleeps\n\
         duration: 6s\n\
         cluster: {servers: 3, clients: 1, leader: s1}\n\
         events:\n\
         \x20 - {at: 1s, pause: {node: c1, for: 2s}}\n\
         \x20 - {at: 1500ms, client: c1, op: preempt, lock: a, expect: granted}\n",
    );
    let (report, _) = traced_run(&scenario);
    assert!(report.passed, "{}", report.render());
    let preempt = &report.history[0];
    assert_eq!(
        preempt.call_ns, 3_000_000_000,
        "the call happens when the client wakes, not when it was asked"
    );
}

#[test]
fn a_server_whose_clock_runs_twice_as_fast_times_out_first_and_leads_the_next_term() {
    let scenario = yaml(
        "name: fast clock\n\
         description: s3's clock runs at double speed when the leader dies\n\
         duration: 4s\n\
         cluster: {servers: 3, clients: 0, leader: s1}\n\
         events:\n\
         \x20 - {at: 500ms, clock: {node: s3, rate: 2}}\n\
         \x20 - {at: 1s, crash: s1}\n",
    );
    let (report, trace) = traced_run(&scenario);
    assert!(report.passed, "{}", report.render());
    assert!(
        report
            .leader_timeline
            .iter()
            .any(|line| line.contains("s3 (term 2)")),
        "{:?}",
        report.leader_timeline
    );
    // s3's election timeout (150 to 300 ms on its clock) passed in half that true time.
    let first_campaign = lines_with(&trace, &["\"kind\":\"timer\"", "\"timer\":\"election\""])
        .into_iter()
        .find(|line| time_of(line) > 1_000_000_000)
        .expect("someone campaigned");
    assert!(
        first_campaign.contains("\"node\":\"s3\""),
        "{first_campaign}"
    );
    assert!(time_of(first_campaign) <= 1_150_000_000, "{first_campaign}");
}

#[test]
fn drifting_clocks_change_the_run_but_one_seed_still_gives_one_trace() {
    let text = |clock: &str| {
        format!(
            "name: drift\n\
             description: a workload under drifting clocks\n\
             seed: 3\n\
             duration: 5s\n\
             cluster: {{servers: 3, clients: 3}}\n\
             {clock}\
             workload: {{clients: [c1, c2, c3], ops: 300, locks: 3}}\n"
        )
    };
    let drifting = yaml(&text("clock: {drift: 0.05}\n"));
    let (report, first) = traced_run(&drifting);
    assert!(report.passed, "{}", report.render());
    let (_, second) = traced_run(&drifting);
    assert!(first == second, "two runs of one seed diverged");
    let (_, perfect) = traced_run(&yaml(&text("")));
    assert!(first != perfect, "clocks within 5% moved nothing");
}

#[test]
fn a_paused_client_writes_to_the_resource_when_it_wakes_with_the_token_it_held() {
    let scenario = yaml(
        "name: frozen writer\n\
         description: c1 takes locks and writes under them, and sleeps for 2 s\n\
         seed: 4\n\
         duration: 5s\n\
         cluster: {servers: 3, clients: 1, leader: s1}\n\
         events:\n\
         \x20 - {at: 1s, pause: {node: c1, for: 2s}}\n\
         workload: {clients: [c1], ops: 400, locks: 2, mix: {preempt: 0.8, release: 0.1, check: 0.1}}\n",
    );
    let (report, trace) = traced_run(&scenario);
    assert!(report.passed, "{}", report.render());
    assert!(
        report.resource_writes.accepted > 10,
        "c1 worked under its locks"
    );
    let writes: Vec<u64> = lines_with(&trace, &["\"kind\":\"resource_write\"", "\"c1\""])
        .into_iter()
        .map(time_of)
        .collect();
    // Latency is at most 10 ms: nothing c1 sent can arrive well inside its sleep.
    let (asleep, awake) = (1_010_000_000, 3_000_000_000);
    assert!(
        writes.iter().all(|&at| at <= asleep || at >= awake),
        "c1 wrote while it slept"
    );
    // When it wakes it finishes what it was doing (an operation's answer waited for it, or a
    // write it was about to send leaves now) and goes on writing under the locks it held.
    let after_waking = writes
        .iter()
        .filter(|&&at| (awake..awake + 200_000_000).contains(&at))
        .count();
    assert!(after_waking >= 1, "c1 went back to work when it woke");
}
