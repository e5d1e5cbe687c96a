//! The timeline's structure, checked without a browser: the JSON blob parses, it has the lanes,
//! messages, roles, faults and operations of the run, the failing step is set, and the file
//! names no address. (tests/html_timeline.rs loads the same pages in headless Chromium.)

use super::*;
use crate::node::Claim;
use crate::sim::history::{HistoryOp, HistoryOpKind, HistoryResult};
use crate::sim::linearizability::check_history;
use crate::sim::runner::{self, RunOptions};
use crate::sim::scenario::{self, Format, Scenario};
use serde_json::Value;

/// The JSON blob of a page, parsed.
fn blob(page: &str) -> Value {
    let start_tag = "<script type=\"application/json\" id=\"timeline-data\">";
    let start = page.find(start_tag).expect("the blob's element") + start_tag.len();
    let end = start + page[start..].find("</script>").expect("the blob ends");
    serde_json::from_str(&page[start..end]).expect("the blob is JSON")
}

fn assert_names_no_address(page: &str) {
    let lower = page.to_lowercase();
    for scheme in ["http://", "https://", "//cdn", "src=\"", "href=\""] {
        assert!(!lower.contains(scheme), "the page contains {scheme:?}");
    }
}

/// c1 takes `a` and holds it; c2's preempt is scripted to be granted, which it cannot be.
const FAILING_SCENARIO: &str = "
name: unmet-expectation
description: 'c2 expects a lock that c1 holds (see https://example.org/why): the expectation fails.'
seed: 3
duration: 4s
cluster: {servers: 3, clients: 2}
network: {latency: {min: 1ms, max: 5ms}, drop: 0.02, duplicate: 0.02}
events:
  - {at: 500ms, client: c1, op: preempt, lock: a, expect: granted}
  - {at: 1s, crash: leader}
  - {at: 1500ms, client: c2, op: preempt, lock: a, expect: granted}
  - {at: 2s, restart: all}
  - {at: 2500ms, partition: [[s1], [s2, s3, c1, c2]]}
  - {at: 3s, heal: all}
";

fn failing_scenario() -> Scenario {
    scenario::parse_str(FAILING_SCENARIO, Format::Yaml, "test.yaml").expect("a valid scenario")
}

fn run_keeping_trace(scenario: &Scenario) -> crate::sim::report::RunReport {
    let options = RunOptions {
        keep_trace_events: Some(EVENTS_MAX),
        ..RunOptions::default()
    };
    runner::run(scenario, options).expect("no trace file, no I/O")
}

#[test]
fn a_failing_run_gives_a_page_with_every_lane_its_events_and_the_failing_step() {
    let scenario = failing_scenario();
    let report = run_keeping_trace(&scenario);
    assert!(!report.passed, "the scenario is built to fail");
    let page = render_html(&from_run(&scenario, &report));
    assert_names_no_address(&page);
    let model = blob(&page);
    assert_eq!(model["format"], FORMAT);
    let lanes: Vec<(&str, &str)> = model["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lane| {
            (
                lane["name"].as_str().unwrap(),
                lane["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lanes,
        [
            ("s1", "server"),
            ("s2", "server"),
            ("s3", "server"),
            ("c1", "client"),
            ("c2", "client")
        ]
    );
    for rows in ["messages", "roles", "ops", "faults", "markers"] {
        assert!(
            !model[rows].as_array().unwrap().is_empty(),
            "the run has {rows}"
        );
    }
    let fates: Vec<&str> = model["fates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fate| fate.as_str().unwrap())
        .collect();
    let delivered = fates.iter().position(|&f| f == "delivered").unwrap() as u64;
    assert!(
        model["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row[5] == delivered && row[1].as_u64() >= row[0].as_u64()),
        "delivered messages arrive after they are sent"
    );
    let kinds: Vec<&str> = model["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fault| fault["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"crash") && kinds.contains(&"partition"),
        "{kinds:?}"
    );
    // The failing step: c2's preempt, on c2's lane.
    let failure = &model["failure"];
    assert_eq!(failure["invariant"], "expectation");
    let op = failure["op"].as_u64().expect("the step is an operation") as usize;
    assert_eq!(failure["step_id"], format!("op-{op}"));
    assert_eq!(failure["lane"], 4, "c2's lane");
    let row = &model["ops"][op];
    assert_eq!(
        model["op_kinds"][row[1].as_u64().unwrap() as usize],
        "preempt"
    );
    assert_eq!(row[0], 4);
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("expected granted"),
        "{failure}"
    );
    // The description's URL survived as text, escaped.
    assert!(
        model["subtitle"]
            .as_str()
            .unwrap()
            .contains("https://example.org/why")
    );
}

#[test]
fn the_same_run_gives_the_same_page_byte_for_byte() {
    let scenario = failing_scenario();
    let first = render_html(&from_run(&scenario, &run_keeping_trace(&scenario)));
    let second = render_html(&from_run(&scenario, &run_keeping_trace(&scenario)));
    assert!(first == second, "two runs of one seed draw the same page");
}

#[test]
fn a_run_that_keeps_no_trace_keeps_nothing_and_still_gives_a_page() {
    let scenario = failing_scenario();
    let report = runner::run(&scenario, RunOptions::default()).expect("runs");
    assert!(report.trace.is_none(), "nothing kept unless asked");
    let model = blob(&render_html(&from_run(&scenario, &report)));
    assert!(model["messages"].as_array().unwrap().is_empty());
    assert!(!model["ops"].as_array().unwrap().is_empty());
    assert!(
        model["notes"][0]
            .as_str()
            .unwrap()
            .contains("No trace was kept")
    );
}

fn op(
    client: u32,
    kind: HistoryOpKind,
    call_ns: u64,
    return_ns: Option<u64>,
    result: HistoryResult,
) -> HistoryOp {
    HistoryOp {
        client,
        op: kind,
        lock: "a".into(),
        consistency: (kind == HistoryOpKind::Check)
            .then_some(crate::node::Consistency::Linearizable),
        call_ns,
        return_ns,
        result,
        index: None,
        claim: Claim::EXCLUSIVE,
    }
}

/// c1 holds `a` (token 1) and never lets go; c2 is granted it anyway.
fn double_grant() -> Vec<HistoryOp> {
    vec![
        op(
            1,
            HistoryOpKind::Preempt,
            1_000,
            Some(2_000),
            HistoryResult::Granted { token: 1 },
        ),
        op(
            3,
            HistoryOpKind::Preempt,
            2_500,
            None,
            HistoryResult::Unknown,
        ),
        op(
            2,
            HistoryOpKind::Check,
            3_000,
            Some(4_000),
            HistoryResult::Owner {
                owner: 1,
                token: Some(1),
            },
        ),
        op(
            2,
            HistoryOpKind::Preempt,
            5_000,
            Some(6_000),
            HistoryResult::Granted { token: 2 },
        ),
    ]
}

#[test]
fn a_history_that_cannot_be_linearized_shows_its_window_and_how_far_an_order_got() {
    let history = double_grant();
    let verdict = check_history(&history);
    assert!(!verdict.passed());
    let names = crate::sim::history::ClientNames::simulator();
    let page = render_html(&from_history("double grant", &history, names, &verdict));
    assert_names_no_address(&page);
    let model = blob(&page);
    let lanes: Vec<&str> = model["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lane| lane["name"].as_str().unwrap())
        .collect();
    assert_eq!(lanes, ["c1", "c2", "c3"], "client lanes only");
    assert!(model["messages"].as_array().unwrap().is_empty());
    let window = &model["window"];
    assert_eq!(window["lock"], "a");
    // Ids are call order; c2's grant (called last) is id 3, and it cannot be placed.
    assert_eq!(window["culprit"], 3);
    assert_eq!(model["failure"]["step_id"], "op-3");
    assert_eq!(model["failure"]["invariant"], "linearizability");
    assert_eq!(
        model["failure"]["at_ns"],
        6_000 - 1_000,
        "the culprit's return"
    );
    assert_eq!(model["origin_ns"], 1_000, "time zero is the first call");
    let steps = window["furthest"]["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{window}");
    assert_eq!(steps.last().unwrap()["after"], "held by c1 (token 1)");
    assert_eq!(window["furthest"]["unplaced"], serde_json::json!([3]));
}

#[test]
fn fault_lines_become_spans_until_their_end_and_anything_else_a_marker() {
    let lines: Vec<(u64, String)> = [
        (10, "crash s2 (the leader)"),
        (20, "partition [s1] | [s2 s3]"),
        (30, "isolate c1"),
        (40, "heal all"),
        (50, "restart s2"),
        (60, "network latency 1ms..5ms, drop 0.1, duplicate 0"),
        (70, "crash leader: no leader right now, skipped"),
        (80, "pause s3"),
    ]
    .iter()
    .map(|(at, line)| (*at, line.to_string()))
    .collect();
    let (spans, markers) = parse_faults(&lines);
    let summary: Vec<(&str, u64, Option<u64>, Vec<&str>)> = spans
        .iter()
        .map(|span| {
            let nodes = span.nodes.iter().map(String::as_str).collect();
            (span.kind.as_str(), span.start_ns, span.end_ns, nodes)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("crash", 10, Some(50), vec!["s2"]),
            ("partition", 20, Some(40), vec![]),
            ("isolate", 30, Some(40), vec!["c1"]),
            ("pause", 80, None, vec!["s3"]),
        ]
    );
    let marked: Vec<u64> = markers.iter().map(|marker| marker.at_ns).collect();
    assert_eq!(
        marked,
        [40, 60, 70],
        "the heal, the network change, the skipped crash"
    );
}

#[test]
fn arrivals_pair_with_the_oldest_send_on_their_link_and_every_fate_is_kept() {
    use crate::net::Endpoint;
    use crate::node::{ServerId, Time};
    use crate::sim::trace::TraceEvent;
    let (s1, s2) = (Endpoint::Server(ServerId(1)), Endpoint::Server(ServerId(2)));
    let send = |fate| TraceEvent::Send {
        from: s1,
        to: s2,
        msg: "append_entries",
        fate,
    };
    let deliver = TraceEvent::Deliver {
        from: s1,
        to: s2,
        msg: "append_entries",
    };
    let events = vec![
        (Time::from_nanos(1), send("in_flight")),
        (Time::from_nanos(2), send("duplicated")),
        (Time::from_nanos(3), send("dropped")),
        (Time::from_nanos(4), send("blocked")),
        (Time::from_nanos(5), deliver.clone()),
        (Time::from_nanos(6), deliver.clone()),
        (
            Time::from_nanos(7),
            TraceEvent::LostInFlight {
                from: s1,
                to: s2,
                msg: "append_entries",
                reason: "target crashed",
            },
        ),
        (Time::from_nanos(8), send("in_flight")),
    ];
    let from = simulator::from_trace(&events).messages;
    let rows: Vec<(u64, Option<u64>, Fate)> = from
        .iter()
        .map(|m| (m.send_ns, m.arrive_ns, m.fate))
        .collect();
    assert_eq!(
        rows,
        [
            (1, Some(5), Fate::Delivered),
            (2, Some(6), Fate::Duplicated),
            (2, Some(7), Fate::LostCrashed),
            (3, None, Fate::Dropped),
            (4, None, Fate::Blocked),
            (8, None, Fate::InFlight),
        ]
    );
}

#[test]
fn overlapping_operations_of_one_client_stack_in_rows() {
    let history = vec![
        op(
            1,
            HistoryOpKind::Preempt,
            0,
            Some(10),
            HistoryResult::Granted { token: 1 },
        ),
        op(1, HistoryOpKind::Check, 5, Some(8), HistoryResult::Free),
        op(1, HistoryOpKind::Release, 9, None, HistoryResult::Unknown),
        op(1, HistoryOpKind::Check, 12, Some(13), HistoryResult::Free),
    ];
    let names = crate::sim::history::ClientNames::simulator();
    let timeline = build(TimelineInput::new("rows", &history, names));
    let rows: Vec<u32> = timeline.ops.iter().map(|row| row.7).collect();
    assert_eq!(rows, [0, 1, 1, 0]);
    assert_eq!(timeline.lanes[0].rows, 2);
    let drawn_until: Vec<u64> = timeline.ops.iter().map(|row| row.8).collect();
    assert_eq!(
        drawn_until,
        [10, 8, 12, 13],
        "the unknown release is drawn until the client's next call"
    );
}

#[test]
fn a_crashed_server_is_down_until_it_restarts_as_a_follower() {
    let names = crate::sim::history::ClientNames::simulator();
    let mut input = TimelineInput::new("crash", &[], names);
    input.servers = vec!["s1".into(), "s2".into()];
    let role = |at_ns, server: &str, role: &str, term| RoleChange {
        at_ns,
        server: server.into(),
        role: role.into(),
        term,
    };
    input.roles = vec![
        role(0, "s1", "leader", 1),
        role(0, "s2", "follower", 1),
        // What s2 reports at the instant it restarts wins over what the restart implies.
        role(40, "s2", "candidate", 2),
    ];
    let crash = |server: &str, start_ns, end_ns| FaultSpan {
        kind: "crash".into(),
        label: format!("crash {server}"),
        start_ns,
        end_ns,
        nodes: vec![server.into()],
    };
    input.faults = vec![crash("s1", 10, Some(20)), crash("s2", 30, Some(40))];
    input.origin_ns = Some(0);
    let timeline = build(input);
    let roles: Vec<(u64, &str, &str, u64)> = timeline
        .roles
        .iter()
        .map(|row| {
            let lane = timeline.lanes[row.1 as usize].name.as_str();
            (
                row.0,
                lane,
                timeline.role_names[row.2 as usize].as_str(),
                row.3,
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            (0, "s1", "leader", 1),
            (0, "s2", "follower", 1),
            (10, "s1", "down", 1),
            (20, "s1", "follower", 1),
            (30, "s2", "down", 1),
            (40, "s2", "follower", 1),
            (40, "s2", "candidate", 2),
        ]
    );
}

#[test]
fn an_undecided_history_is_not_drawn_as_a_clean_one() {
    use crate::sim::linearizability::{CheckLimits, check_history_with, synthetic_history};
    let history = synthetic_history(200, 1, 5, 3);
    let limits = CheckLimits {
        steps_max_per_lock: 10,
        ..CheckLimits::default()
    };
    let verdict = check_history_with(&history, &limits);
    assert!(verdict.violations.is_empty() && !verdict.passed());
    let names = crate::sim::history::ClientNames::simulator();
    let model = blob(&render_html(&from_history(
        "undecided",
        &history,
        names,
        &verdict,
    )));
    assert!(model["failure"].is_null());
    assert_eq!(model["undecided_locks"], serde_json::json!(["l1"]));
    assert!(model["subtitle"].as_str().unwrap().contains("undecided"));
}
