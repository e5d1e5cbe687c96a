//! `lockstep run` as an operator meets it: exit codes, verdict lines, errors, JSON and traces.

mod common;

use common::{Scratch, lockstep, text};
use std::path::Path;

fn shipped(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(file)
        .display()
        .to_string()
}

const PASSING: &str = "\
name: tiny
description: one grant on a quiet three-server cluster
duration: 3s
cluster: {servers: 3, clients: 1}
events:
  - {at: 1s, client: c1, op: preempt, lock: a, expect: granted}
expect_final: {a: c1}
";

#[test]
fn a_passing_scenario_prints_its_table_and_a_pass_line_and_exits_zero() {
    let scratch = Scratch::new("pass");
    let file = scratch.file("tiny.yaml", PASSING);
    let output = lockstep(&["run", file.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("PASS tiny (seed 0)"), "{stdout}");
    for row in [
        "operations",
        "latency (simulated)",
        "messages",
        "terms / leaders",
        "invariants",
    ] {
        assert!(
            stdout.contains(row),
            "the summary has a {row} row: {stdout}"
        );
    }
}

#[test]
fn an_unmet_expectation_exits_one_with_a_fail_line_naming_the_seed() {
    let scratch = Scratch::new("fail");
    let file = scratch.file(
        "wrong.yaml",
        &PASSING.replace("expect_final: {a: c1}", "expect_final: {a: free}"),
    );
    let output = lockstep(&["run", file.to_str().unwrap(), "--seed", "42"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL tiny (seed 42): 1 expectation(s) not met"),
        "{stdout}"
    );
    assert!(stdout.contains("UNMET  expect_final.a"), "{stdout}");
}

#[test]
fn a_yaml_syntax_error_exits_two_with_file_line_and_column() {
    let scratch = Scratch::new("syntax");
    let file = scratch.file("broken.yaml", "name: x\nduration: [3s\n");
    let output = lockstep(&["run", file.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains(&format!("{}:", file.display())), "{stderr}");
    assert!(stderr.contains(":2:"), "the error names line 2: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn semantic_errors_are_all_listed_at_once_and_exit_two() {
    let scratch = Scratch::new("semantic");
    let bad = PASSING
        .replace("{at: 1s, client: c1", "{at: 9s, client: c7")
        .replace("duration: 3s", "duration: 3s\nnetwork: {drop: 1.5}");
    let file = scratch.file("bad.json.yaml", &bad);
    let output = lockstep(&["run", file.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for place in ["events[0].at", "events[0].client", "network.drop"] {
        assert!(stderr.contains(place), "the errors name {place}: {stderr}");
    }
}

#[test]
fn a_missing_path_or_an_empty_directory_exits_two() {
    let scratch = Scratch::new("missing");
    let output = lockstep(&["run", "/no/such/scenario.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("/no/such/scenario.yaml"));
    let output = lockstep(&["run", scratch.0.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no scenario files"));
}

#[test]
fn bad_flags_exit_two_with_usage() {
    let output = lockstep(&["run", "--seed", "minus-one", "x.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--seed"));
    let output = lockstep(&["bench", "--servers", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--servers 0 is outside"));
}

#[test]
fn json_output_is_one_document_with_every_summary_figure() {
    let output = lockstep(&["run", &shipped("01-seed-walkthrough.yaml"), "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(summary["passed"], true);
    let report = &summary["scenarios"][0];
    assert_eq!(report["name"], "seed-walkthrough");
    assert_eq!(report["ops"]["issued"], 13);
    assert!(report["network"]["delivered"].as_u64().unwrap() > 0);
    assert!(
        report["invariants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["held"] == true)
    );
}

#[test]
fn trace_writes_json_lines_with_a_header_per_scenario() {
    let scratch = Scratch::new("trace");
    let trace = scratch.0.join("trace.jsonl");
    let output = lockstep(&[
        "run",
        &shipped("01-seed-walkthrough.yaml"),
        &shipped("07-crash-all-restart.yaml"),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    let written = std::fs::read_to_string(&trace).expect("the trace file exists");
    let headers: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON line"))
        .filter(|event| event["kind"] == "run")
        .collect();
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[1]["scenario"], "every-server-crashes-and-restarts");
    assert!(written.lines().count() > 1_000);
}

#[test]
fn explore_runs_seeds_and_prints_a_summary_table() {
    let scratch = Scratch::new("explore");
    let out = scratch.0.join("failures");
    let output = lockstep(&[
        "explore",
        "--seeds",
        "3",
        "--jobs",
        "2",
        "--duration",
        "3s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("PASS: 3 seeds, no failure"), "{stdout}");
    for row in [
        "seeds run",
        "simulated",
        "failures by invariant",
        "slowest seed",
    ] {
        assert!(
            stdout.contains(row),
            "the summary has a {row} row: {stdout}"
        );
    }
    assert!(!out.exists(), "nothing failed, so nothing is written");
}

#[test]
fn explore_refuses_bad_arguments_with_exit_two() {
    for args in [
        vec!["explore", "--seeds", "3", "--servers", "0..3"],
        vec!["explore", "--seeds", "3", "--servers", "5..3"],
        vec!["explore", "--seeds", "3", "--duration", "soon"],
        vec!["explore", "--seeds", "0"],
        vec!["explore", "--seeds", "3", "--minimize-time", "soon"],
        vec!["explore", "--seeds", "3", "--minimize-time", "1500m"],
        vec!["explore"],
    ] {
        let output = lockstep(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(!text(&output.stderr).is_empty());
    }
}

#[test]
fn a_seed_printed_as_a_scenario_replays_with_lockstep_run() {
    let scratch = Scratch::new("print");
    let output = lockstep(&[
        "explore",
        "--seeds",
        "1",
        "--from",
        "11",
        "--print-scenarios",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let yaml = text(&output.stdout);
    let file = scratch.file("seed-11.yaml", yaml.trim_start_matches("---\n"));
    let replay = lockstep(&["run", file.to_str().unwrap()]);
    let stdout = text(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("PASS swarm-11 (seed 11)"), "{stdout}");
}

/// `lockstep check --generate ... | head -c 16`: the reader goes away long before the 12 MB
/// end, and the writer ends quietly, as any Unix filter does, never with a panic about a broken
/// pipe. (`run`, `explore` and `check` share the rule.)
#[test]
fn a_reader_that_stops_early_ends_the_output_without_a_panic() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["check", "--generate", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockstep starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("the report starts");
    drop(stdout); // The reader closes the pipe, like `head`.
    let output = child.wait_with_output().expect("lockstep ends");
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
