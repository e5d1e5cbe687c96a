//! `lockstep bench` with sessions: the flags that turn sessions on (`--ttl`) and the keepalive
//! workload (`--keepalive-sessions`), refused with exit 2 and the flag's name when they make no
//! sense, and a small keepalive run against three real server processes whose report adds up.
//!
//! Story of the run: 200 sessions with a 3 s TTL renew every second for 4 s. Every keepalive
//! sent is answered or counted as refused, none is refused, no session expires, and the
//! leader's log gains nothing meanwhile, unless the report itself says why (a renewal sent
//! after a long silence, or a new leader). Nothing is asserted about how fast: figures go to
//! README from a release build.
//!
//! Every spawned server is killed and reaped by its guard, even when an assertion fails.

mod common;

use common::{Guarded, Scratch, all_listening, free_ports, lockstep, server_command, text};
use serde_json::Value;
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::Duration;

/// Runs `bench` with `args` against a port nobody listens on, which it must refuse before
/// dialling; returns its exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let nobody = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("an address").to_string()
    };
    let mut all = vec!["bench", "--servers", &nobody, "--duration", "1s"];
    all.extend_from_slice(args);
    let output = lockstep(&all);
    (output.status.code(), text(&output.stderr))
}

#[test]
fn session_flags_that_make_no_sense_exit_2_naming_the_flag() {
    let cases: [(&[&str], &str); 10] = [
        (&["--ttl", "banana"], "--ttl"),
        (&["--ttl", "500ms"], "--ttl"),
        (&["--ttl", "61m"], "--ttl must be within 1s..=60m"),
        (
            &["--keepalive-sessions", "0", "--ttl", "3s"],
            "--keepalive-sessions must be within",
        ),
        (
            &["--keepalive-sessions", "100001", "--ttl", "3s"],
            "--keepalive-sessions must be within",
        ),
        (
            &["--keepalive-sessions", "10"],
            "--keepalive-sessions needs --ttl",
        ),
        (
            &[
                "--keepalive-sessions",
                "10",
                "--ttl",
                "3s",
                "--connections",
                "0",
            ],
            "--connections must be within",
        ),
        (&["--connections", "4"], "--connections applies only"),
        (
            &["--keepalive-sessions", "10", "--ttl", "3s", "--contended"],
            "--contended",
        ),
        (&["--metrics", "no-port"], "--metrics"),
    ];
    for (args, named) in cases {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
    }
    // The simulator's bench has no sessions to measure: the flags are refused, not ignored.
    for flag in [
        &["--ttl", "3s"][..],
        &["--keepalive-sessions", "5"],
        &["--metrics", "127.0.0.1:9101"],
    ] {
        let mut args = vec!["bench", "--servers", "3"];
        args.extend_from_slice(flag);
        let output = lockstep(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag:?}: {stderr}");
        assert!(
            stderr.contains(flag[0]) && stderr.contains("real cluster"),
            "{flag:?}: {stderr}"
        );
    }
}

/// Three servers on free ports, each serving metrics too, with their data in `scratch`.
struct Cluster {
    client_ports: Vec<u16>,
    metrics_ports: Vec<u16>,
    _servers: Vec<Guarded>,
}

impl Cluster {
    /// A port taken between choosing and binding makes a server exit at once; then the whole
    /// cluster is started again on new ports.
    fn start(scratch: &Scratch, extra_args: &[&str]) -> Cluster {
        for attempt in 0..5 {
            let ports = free_ports(6);
            let (client_ports, metrics_ports) = (ports[..3].to_vec(), ports[3..].to_vec());
            let mut servers: Vec<Guarded> = (0..3)
                .map(|index| {
                    let data = scratch.0.join(format!("attempt-{attempt}-s{}", index + 1));
                    Guarded(spawn_server(
                        index,
                        &client_ports,
                        metrics_ports[index],
                        data,
                        extra_args,
                    ))
                })
                .collect();
            if all_listening(&mut servers, &client_ports, Duration::from_secs(60)) {
                return Cluster {
                    client_ports,
                    metrics_ports,
                    _servers: servers,
                };
            }
        }
        panic!("could not start a cluster on free ports after 5 attempts");
    }

    fn list(ports: &[u16]) -> String {
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        addresses.join(",")
    }
}

fn spawn_server(
    index: usize,
    client_ports: &[u16],
    metrics_port: u16,
    data: std::path::PathBuf,
    extra_args: &[&str],
) -> Child {
    let mut command = server_command(index, client_ports);
    command
        .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
        .arg("--data-dir")
        .arg(data)
        .args(extra_args)
        .stderr(Stdio::null());
    command.spawn().expect("the lockstep binary starts")
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[test]
fn two_hundred_sessions_renewing_every_second_are_all_answered_and_add_nothing_to_the_log() {
    let scratch = Scratch::new("keepalive-run");
    let cluster = Cluster::start(&scratch, &[]);
    let output = lockstep(&[
        "bench",
        "--servers",
        &Cluster::list(&cluster.client_ports),
        "--metrics",
        &Cluster::list(&cluster.metrics_ports),
        "--keepalive-sessions",
        "200",
        "--connections",
        "4",
        "--ttl",
        "3s",
        "--duration",
        "4s",
        "--json",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");

    assert_eq!(count(&report, "registered"), 200, "{report}");
    assert_eq!(count(&report, "registration_failures"), 0);
    // Every session has four places in 4 s of a 1 s period, whatever the machine's speed: a
    // late renewal is sent late, never skipped.
    let sent = count(&report, "keepalives_sent");
    assert!(sent >= 800, "{sent} keepalives sent: {report}");
    let refused: u64 = report["refused"]
        .as_object()
        .expect("refusals by kind")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(
        count(&report, "keepalives_answered") + refused,
        sent,
        "every keepalive answered or refused: {report}"
    );
    assert_eq!(refused, 0, "{report}");
    assert_eq!(count(&report, "session_expired"), 0);
    assert_eq!(count(&report, "sessions_lost"), 0);

    // Keepalives cost no log entry. Entries may only come from what the report explains: a
    // renewal after a long silence (a silent mark and a revive) or a new leader's no-op.
    let log = &report["log"];
    let appended = log["entries_appended"]
        .as_u64()
        .unwrap_or_else(|| panic!("a leader at both ends: {log}"));
    let explained = count(&report, "late_renewals") > 0 || log["leader_changed"] == true;
    assert!(
        appended == 0 || explained,
        "{appended} entries appended from keepalives alone: {report}"
    );
    assert!(
        log["leader_before"]["last_index"].as_u64() >= Some(200),
        "every registration is in the log: {log}"
    );

    // The servers' CPU came from their metrics, over the renewal phase.
    let cpu = &report["cpu_per_keepalive"]["servers"];
    assert!(cpu["seconds"].as_f64() > Some(0.0), "{report}");
    assert!(cpu["us_per_operation"].as_f64() > Some(0.0), "{report}");
}

#[test]
fn the_lock_load_with_sessions_on_renews_them_and_says_so() {
    let scratch = Scratch::new("load-with-sessions");
    let cluster = Cluster::start(&scratch, &[]);
    let output = lockstep(&[
        "bench",
        "--servers",
        &Cluster::list(&cluster.client_ports),
        "--clients",
        "2",
        "--locks",
        "2",
        "--ttl",
        "3s",
        "--duration",
        "3s",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["ttl_ms"], 3_000, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    // A keepalive at most once a second per client, never more, however fast the loop runs.
    let keepalives = report["latency"]["keepalive"]["count"]
        .as_u64()
        .expect("a count");
    assert!(keepalives <= 2 * 3, "{report}");
    assert_eq!(
        report["cpu_per_pair"]["servers"],
        Value::Null,
        "no --metrics, no servers' CPU"
    );
}

#[test]
fn sessions_the_servers_refuse_are_reported_with_the_refusal_and_exit_2() {
    let scratch = Scratch::new("ttl-refused");
    let cluster = Cluster::start(&scratch, &["--session-ttl-max", "2s"]);
    let output = lockstep(&[
        "bench",
        "--servers",
        &Cluster::list(&cluster.client_ports),
        "--keepalive-sessions",
        "5",
        "--ttl",
        "3s",
        "--duration",
        "1s",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no session could register") && stderr.contains("bad_request"),
        "{stderr}"
    );
}
