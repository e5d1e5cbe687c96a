//! `lockstep check HISTORY.jsonl` as its users meet it: a simulator history that passes,
//! hand-written histories that do not, histories from other tools with their own client names
//! and fields, bad input named by line and field, and a history too hard for its timeout.

mod common;

use common::{Scratch, lockstep};
use std::path::Path;
use std::process::Output;

/// `lockstep check` on `history` written to a scratch file, plus `flags`.
fn check(scratch: &Scratch, history: &str, flags: &[&str]) -> (Output, String, String) {
    let path = scratch.file("history.jsonl", history);
    let mut args = vec!["check"];
    args.extend_from_slice(flags);
    let path = path.display().to_string();
    args.push(&path);
    let output = lockstep(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// One history line. `rest` is everything after `lock` (times, result, and so on).
fn line(client: &str, op: &str, lock: &str, rest: &str) -> String {
    format!(r#"{{"client":"{client}","op":"{op}","lock":"{lock}",{rest}}}"#)
}

/// c1 takes `a` and gives it back; c2 then takes it.
fn clean_history() -> String {
    [
        line(
            "c1",
            "preempt",
            "a",
            r#""call":1,"return":2,"result":"granted","token":1"#,
        ),
        line(
            "c1",
            "release",
            "a",
            r#""call":3,"return":4,"result":"released""#,
        ),
        line(
            "c2",
            "preempt",
            "a",
            r#""call":5,"return":6,"result":"granted","token":2"#,
        ),
    ]
    .join("\n")
}

#[test]
fn a_history_the_simulator_wrote_for_a_shipped_scenario_is_linearizable() {
    let scratch = Scratch::new("simulator");
    let history = scratch.0.join("run.jsonl");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join("02-leader-crash-after-grant.yaml");
    let run = lockstep(&[
        "run",
        &scenario.display().to_string(),
        "--history",
        &history.display().to_string(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let written = std::fs::read_to_string(&history).expect("run wrote the history");
    let operations = written.lines().count();
    assert!(operations > 50, "a real run: {operations} operations");

    let output = lockstep(&["check", &history.display().to_string()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout.contains(&format!("{operations} operations")),
        "{stdout}"
    );
    assert!(stdout.contains("3 clients"), "{stdout}");
    assert!(
        stdout.contains("linearizable, monotonic reads hold"),
        "{stdout}"
    );
    assert!(output.stderr.is_empty(), "no warning for our own format");
}

#[test]
fn two_overlapping_grants_to_different_clients_are_not_linearizable() {
    let scratch = Scratch::new("overlap");
    let history = [
        line(
            "c1",
            "preempt",
            "free-lock",
            r#""call":1,"return":2,"result":"granted","token":1"#,
        ),
        line(
            "c1",
            "preempt",
            "a",
            r#""call":10,"return":40,"result":"granted","token":5"#,
        ),
        line(
            "c2",
            "preempt",
            "a",
            r#""call":20,"return":30,"result":"granted","token":6"#,
        ),
    ]
    .join("\n");
    let (output, stdout, _) = check(&scratch, &history, &[]);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("linearizability violated on lock `a`"),
        "{stdout}"
    );
    assert!(!stdout.contains("lock `free-lock`"), "{stdout}");
    assert!(
        stdout.contains("c1 preempt a: granted (token 5)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("c2 preempt a: granted (token 6)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("NOT LINEARIZABLE: 1 violation(s)"),
        "{stdout}"
    );
}

#[test]
fn a_stale_linearizable_read_is_not_linearizable_and_its_window_is_small() {
    let scratch = Scratch::new("stale");
    let mut lines = vec![];
    // Twenty clean rounds on `a` before the stale read: none of them belongs in its window.
    for round in 0..20u64 {
        let at = round * 100;
        let token = round + 1;
        lines.push(line(
            "c1",
            "preempt",
            "a",
            &format!(
                r#""call":{at},"return":{},"result":"granted","token":{token}"#,
                at + 10
            ),
        ));
        lines.push(line(
            "c1",
            "release",
            "a",
            &format!(
                r#""call":{},"return":{},"result":"released""#,
                at + 20,
                at + 30
            ),
        ));
    }
    lines.push(line(
        "c2",
        "check",
        "a",
        r#""consistency":"linearizable","call":5000,"return":5010,"result":"owner","owner":"c1","token":20"#,
    ));
    let (output, stdout, _) = check(&scratch, &lines.join("\n"), &[]);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("linearizability violated on lock `a`"),
        "{stdout}"
    );
    let window: Vec<&str> = stdout
        .lines()
        .filter(|text| text.starts_with("    "))
        .collect();
    assert!(
        window.len() <= 3,
        "the window is the stale read and the release it missed, not the whole history: {window:?}"
    );
    assert!(
        window
            .iter()
            .any(|op| op.contains("c2 check a (linearizable): owner c1 (token 20)")),
        "{stdout}"
    );

    let (output, json, _) = check(&scratch, &lines.join("\n"), &["--json"]);
    assert_eq!(output.status.code(), Some(1));
    let verdict: serde_json::Value = serde_json::from_str(&json).expect("--json is JSON");
    assert_eq!(verdict["verdict"], "not_linearizable");
    assert_eq!(verdict["violations"][0]["lock"], "a");
    assert_eq!(verdict["violations"][0]["invariant"], "linearizability");
    let last = verdict["violations"][0]["window"]
        .as_array()
        .expect("a window")
        .last()
        .expect("not empty")
        .clone();
    assert_eq!(
        last["client"], "c2",
        "window lines are in the history format"
    );
    assert_eq!(last["call"], 5000);
}

#[test]
fn foreign_client_names_are_accepted_and_shown_as_written() {
    let scratch = Scratch::new("foreign");
    let clean = clean_history()
        .replace("\"c1\"", "\"alice\"")
        .replace("\"c2\"", "\"node-7\"");
    let (output, stdout, stderr) = check(&scratch, &clean, &[]);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 clients"), "{stdout}");

    let overlapping = [
        line(
            "alice",
            "preempt",
            "a",
            r#""call":10,"return":40,"result":"granted","token":5"#,
        ),
        line(
            "node-7",
            "preempt",
            "a",
            r#""call":20,"return":30,"result":"held_by","owner":"bob""#,
        ),
    ]
    .join("\n");
    let (output, stdout, _) = check(&scratch, &overlapping, &[]);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("node-7 preempt a: held_by bob"),
        "names as the history wrote them: {stdout}"
    );
}

#[test]
fn unknown_fields_are_warned_about_once_by_name_and_accepted() {
    let scratch = Scratch::new("fields");
    let history = clean_history()
        .replace(r#""lock":"a","#, r#""lock":"a","node":"s1","#)
        .replace(r#""token":2"#, r#""token":2,"latency_ms":4"#);
    let (output, stdout, stderr) = check(&scratch, &history, &[]);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one warning: {stderr}");
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert!(stderr.contains("`node` (first on line 1)"), "{stderr}");
    assert!(
        stderr.contains("`latency_ms` (first on line 3)"),
        "{stderr}"
    );
}

#[test]
fn bad_input_exits_2_naming_the_line_and_the_field() {
    let scratch = Scratch::new("bad");
    let good = clean_history();
    let cases = [
        ("this is not json".to_string(), ":1: not JSON"),
        (
            line(
                "c1",
                "preempt",
                "a",
                r#""return":2,"result":"granted","token":1"#,
            ),
            ":1: field `call`: missing",
        ),
        (
            line(
                "c1",
                "preempt",
                "a",
                r#""call":9,"return":2,"result":"granted","token":1"#,
            ),
            ":1: field `return`: return 2 comes before call 9",
        ),
        (
            line(
                "c1",
                "grab",
                "a",
                r#""call":1,"return":2,"result":"granted","token":1"#,
            ),
            ":1: field `op`: unknown op `grab`",
        ),
        (
            line("c1", "preempt", "a", r#""call":1,"return":2,"result":"ok""#),
            ":1: field `result`: unknown result `ok`",
        ),
        (
            line(
                "",
                "preempt",
                "a",
                r#""call":1,"return":2,"result":"granted","token":1"#,
            ),
            ":1: field `client`: the client's name is empty",
        ),
        (
            line(
                "c1",
                "preempt",
                "a",
                r#""call":"soon","return":2,"result":"granted","token":1"#,
            ),
            ":1: field `call`: expected a whole number",
        ),
    ];
    for (bad, expected) in cases {
        // After three good lines and a blank one, so the line number is 5.
        let history = format!("{good}\n\n{bad}\n");
        let expected = expected.replacen(":1:", "history.jsonl:5:", 1);
        let (output, stdout, stderr) = check(&scratch, &history, &[]);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stdout}{stderr}");
        assert!(
            stderr.contains(&expected),
            "{bad}: wanted {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let missing = lockstep(&["check", "/nonexistent/history.jsonl"]);
    assert_eq!(missing.status.code(), Some(2));
    let binary = scratch.0.join("binary.jsonl");
    std::fs::write(&binary, [good.as_bytes(), b"\n\xff\xfe\n"].concat()).expect("write");
    let output = lockstep(&["check", &binary.display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("binary.jsonl:4: not UTF-8"));
}

/// Client `clients + 1` is seen holding the lock but never asked for it, while every other
/// client may have taken and given it back, in any order, all at once: proving that no order
/// works means trying every subset of the other clients' reads, 2^clients configurations.
fn exponential_history(clients: u32) -> String {
    let mut lines = Vec::new();
    for client in 1..=clients + 1 {
        let name = format!("node-{client}");
        lines.push(line(
            &name,
            "check",
            "hot",
            &format!(
                r#""consistency":"linearizable","call":0,"return":1000,"result":"owner","owner":"{name}""#
            ),
        ));
        if client <= clients {
            for op in ["preempt", "release"] {
                lines.push(line(
                    &name,
                    op,
                    "hot",
                    r#""call":0,"return":null,"result":"unknown""#,
                ));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn a_history_too_hard_for_its_timeout_is_unknown_not_a_verdict() {
    let scratch = Scratch::new("timeout");
    // The same shape with 4 clients is decided at once: the search is right, only slow.
    let (output, stdout, _) = check(&scratch, &exponential_history(4), &[]);
    assert_eq!(output.status.code(), Some(1), "{stdout}");

    // 2^40 configurations: no machine decides them in 1ms, nor reaches the step bound first
    // (50 million steps), so the answer is the timeout's whatever the load.
    let (output, stdout, _) = check(&scratch, &exponential_history(40), &["--timeout", "1ms"]);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("UNKNOWN; timed out after 1ms"), "{stdout}");
    assert!(stdout.contains("1 of 1 locks undecided (hot)"), "{stdout}");

    let (output, json, _) = check(
        &scratch,
        &exponential_history(40),
        &["--timeout", "1ms", "--json"],
    );
    assert_eq!(output.status.code(), Some(3));
    let verdict: serde_json::Value = serde_json::from_str(&json).expect("--json is JSON");
    assert_eq!(verdict["verdict"], "unknown");
    assert_eq!(verdict["timed_out"], true);
    assert_eq!(verdict["undecided_locks"], serde_json::json!(["hot"]));
}

#[test]
fn a_generated_history_passes_and_json_gives_the_summary() {
    let generated = lockstep(&["check", "--generate", "2000", "--locks", "7", "--seed", "3"]);
    assert_eq!(generated.status.code(), Some(0));
    let history = String::from_utf8(generated.stdout).expect("utf-8");
    assert_eq!(history.lines().count(), 2_000);
    let again = lockstep(&["check", "--generate", "2000", "--locks", "7", "--seed", "3"]);
    assert_eq!(again.stdout, history.as_bytes(), "seeded: the same history");
    let scratch = Scratch::new("generated");
    let (output, json, stderr) = check(&scratch, &history, &["--json", "--timeout", "10m"]);
    assert_eq!(output.status.code(), Some(0), "{json}{stderr}");
    let verdict: serde_json::Value = serde_json::from_str(&json).expect("--json is JSON");
    assert_eq!(verdict["verdict"], "linearizable");
    assert_eq!(verdict["operations"], 2_000);
    assert_eq!(verdict["locks"], 7);
    assert_eq!(verdict["clients"], 50);
    assert_eq!(verdict["timed_out"], false);
}

#[test]
fn help_explains_the_format_and_the_exit_codes() {
    let output = lockstep(&["check", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--timeout",
        "--json",
        "any non-empty name",
        "Exit codes: 0",
        "3 unknown",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
}
