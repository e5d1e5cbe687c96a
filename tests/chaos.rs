//! `lockstep chaos` as a user runs it: the built binary, real server processes on loopback,
//! every nemesis, and the files and verdict it leaves.
//!
//! Stories:
//! - a short run under every kind of fault is clean and leaves its history (which `lockstep
//!   check` accepts), its fault log, its summary and every server's log; and the nemesis did
//!   something;
//! - after partitions, isolations and one-way cuts, every healed server rejoins within a
//!   generous bound (the measured figures are in README; a test asserts only the bound);
//! - the end-of-run checks catch a non-linearizable history, a fencing token going back and a
//!   panic in a server log;
//! - bad flags exit 2 before anything starts; Ctrl-C ends a run with exit 4; and neither
//!   Ctrl-C nor a SIGKILL of chaos itself leaves a server running.
//!
//! Runs that start processes hold one lock, so that they never share the two cores with each
//! other. Every chaos process is killed on drop, and its servers die with it (the kernel's
//! parent-death signal), even when an assertion fails.

mod common;

use common::{Scratch, text};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One chaos run at a time.
static MACHINE: Mutex<()> = Mutex::new(());

fn machine() -> std::sync::MutexGuard<'static, ()> {
    MACHINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `lockstep chaos` process; dropping it kills and reaps it.
struct ChaosProcess {
    child: Option<Child>,
}

impl ChaosProcess {
    fn start(args: &[&str]) -> ChaosProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .arg("chaos")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lockstep chaos");
        ChaosProcess { child: Some(child) }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("a running chaos")
    }

    /// Waits for the exit, at most `limit`; returns the code, stdout and stderr.
    fn finish(mut self, limit: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + limit;
        // Bounded by the deadline. Output is read only at the end: chaos writes little, far
        // less than a pipe holds, unless it fails.
        while self.child().try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "lockstep chaos ran past {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let child = self.child.take().expect("a running chaos");
        let output = child.wait_with_output().expect("chaos output");
        (
            output.status.code(),
            text(&output.stdout),
            text(&output.stderr),
        )
    }

    fn signal(&mut self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child().id()).unwrap();
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for ChaosProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn summary(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// Runs chaos with `args` into `out` and returns the summary, asserting a clean exit.
fn clean_run(out: &Path, args: &[&str], limit: Duration) -> Value {
    let out_arg = out.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--out", &out_arg]);
    let (code, stdout, stderr) = ChaosProcess::start(&all).finish(limit);
    assert_eq!(code, Some(0), "chaos was not clean\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS chaos"), "{stdout}");
    summary(out)
}

#[test]
fn a_short_run_under_every_nemesis_is_clean_and_leaves_its_files() {
    let _machine = machine();
    let scratch = Scratch::new("every-nemesis");
    let out = scratch.0.join("run");
    // Seed 47 deals a one-way cut, a kill of a majority, a kill of every server and (if
    // waiting for rejoins left time) a pause of the leader within 15 s.
    let report = clean_run(
        &out,
        &["--duration", "15s", "--seed", "47", "--nemesis", "all"],
        Duration::from_secs(240),
    );
    for file in [
        "history.jsonl",
        "faults.jsonl",
        "summary.json",
        "timeline.html",
        "cluster-secret",
    ] {
        assert!(out.join(file).is_file(), "{file} is missing");
    }
    // The timeline is self-contained and draws the run: its servers, and its faults as spans.
    let page = std::fs::read_to_string(out.join("timeline.html")).unwrap();
    assert!(page.contains("lockstep chaos: seed 47"));
    assert!(!page.contains("http://") && !page.contains("https://"));
    for server in ["\"s1\"", "\"s2\"", "\"s3\""] {
        assert!(page.contains(server), "no lane for {server}");
    }
    assert!(page.contains("\"source\":\"chaos\""));
    // Answers carry the log index they reflect, so stale reads of a real cluster show.
    let history_text = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    assert!(
        history_text.contains("\"index\":"),
        "no index in the history"
    );
    for server in 1..=3 {
        let log = std::fs::read_to_string(out.join(format!("logs/s{server}.log"))).unwrap();
        assert!(log.contains("server starting"), "s{server}'s log: {log}");
    }
    // The nemesis did something, of several kinds, and the clients worked through it.
    let faults = report["faults_by_kind"].as_object().unwrap();
    let total: u64 = faults.values().map(|count| count.as_u64().unwrap()).sum();
    assert!(total >= 3 && faults.len() >= 3, "faults: {faults:?}");
    assert!(report["operations"].as_u64().unwrap() > 100, "{report}");
    let fault_log = std::fs::read_to_string(out.join("faults.jsonl")).unwrap();
    let starts = fault_log
        .lines()
        .filter(|l| l.contains("\"event\":\"start\""))
        .count();
    assert_eq!(starts as u64, total, "{fault_log}");
    // Every heal was followed by a measured rejoin, and every lock read through every server.
    for rejoin in report["rejoins"].as_array().unwrap() {
        assert!(rejoin["after_ms"].is_number(), "{rejoin}");
    }
    assert_eq!(report["final_reads"], 3 * 4);
    // The history is in the documented format: `lockstep check` reads and passes it.
    let history = out.join("history.jsonl").display().to_string();
    let checked = common::lockstep(&["check", &history]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stderr));
}

/// The peer transport's promise, from the outside: a server cut off from the others rejoins
/// (answers a linearizable check itself) within about an election timeout plus a reconnection
/// delay of the heal. Asserted against a bound several times that; before keepalives, a link
/// cut this way never came back at all.
#[test]
fn after_partitions_isolations_and_cuts_every_server_rejoins_within_the_bound() {
    let _machine = machine();
    let scratch = Scratch::new("rejoin");
    let out = scratch.0.join("run");
    let report = clean_run(
        &out,
        &["--duration", "30s", "--seed", "3", "--nemesis", "network"],
        Duration::from_secs(300),
    );
    let rejoins = report["rejoins"].as_array().unwrap();
    assert!(rejoins.len() >= 3, "{rejoins:?}");
    for rejoin in rejoins {
        let after_ms = rejoin["after_ms"].as_f64().expect("rejoined");
        assert!(
            after_ms < 5_000.0,
            "rejoined only after {after_ms} ms: {rejoin}"
        );
    }
}

#[test]
fn the_end_of_run_checks_catch_a_bad_history_a_token_going_back_and_a_panic() {
    use lockstep::chaos::verdict::{RunFindings, judge};
    // c2 is granted w1 while c1 holds it, under a lower token.
    let history = r#"{"client":"c1","op":"preempt","lock":"w1","call":10,"return":20,"result":"granted","token":5}
{"client":"c2","op":"preempt","lock":"w1","call":30,"return":40,"result":"granted","token":4}
"#;
    let logs = vec![(
        "s2".to_string(),
        "thread 'lockstep-log' panicked at src/storage/wal.rs:1:1:\n".to_string(),
    )];
    let checks = judge(
        history,
        &logs,
        &RunFindings::default(),
        Duration::from_secs(10),
    );
    let failed: Vec<&str> = checks
        .iter()
        .filter(|check| !check.passed)
        .map(|check| check.name)
        .collect();
    assert_eq!(failed, ["linearizability", "fencing_tokens", "server_logs"]);
}

#[test]
fn bad_flags_exit_2_before_anything_starts() {
    let scratch = Scratch::new("bad-flags");
    std::fs::write(scratch.0.join("old-run.txt"), "a previous run").unwrap();
    let busy = scratch.0.display().to_string();
    for (args, named) in [
        (vec!["--servers", "0"], "--servers 0"),
        (vec!["--duration", "1s"], "too short"),
        (vec!["--nemesis", "kill,meteor"], "`meteor`"),
        (vec!["--out", busy.as_str()], "not empty"),
    ] {
        let output = common::lockstep(&[&["chaos"], args.as_slice()].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    // Nothing was written into the directory that was refused.
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 1);
}

#[test]
fn the_schedule_a_seed_gives_is_printed_without_running_and_the_same_twice() {
    let args = ["chaos", "--seed", "7", "--print-schedule", "--servers", "5"];
    let first = common::lockstep(&args);
    assert_eq!(first.status.code(), Some(0));
    let schedule = text(&first.stdout);
    assert!(schedule.contains("seed 7, 5 servers"), "{schedule}");
    assert!(schedule.lines().count() > 10, "{schedule}");
    assert_eq!(text(&common::lockstep(&args).stdout), schedule);
}

/// Processes whose command line names `dir`: the servers of a run into it.
#[cfg(target_os = "linux")]
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(command_line) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&command_line).contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// Waits until the run into `out` has its servers up (s1 logged its start).
fn wait_for_servers(out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    // Bounded by the deadline.
    while !std::fs::read_to_string(out.join("logs/s3.log"))
        .is_ok_and(|log| log.contains("server starting"))
    {
        assert!(Instant::now() < deadline, "the servers never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(target_os = "linux")]
fn assert_no_server_left(out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    // Bounded by the deadline: the kernel delivers the parent-death signal at once.
    loop {
        let left = processes_naming(out);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "servers left running: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_ends_a_run_with_exit_4_and_stops_every_server() {
    let _machine = machine();
    let scratch = Scratch::new("interrupted");
    let out = scratch.0.join("run");
    let out_arg = out.display().to_string();
    let mut chaos = ChaosProcess::start(&["--duration", "60s", "--seed", "1", "--out", &out_arg]);
    wait_for_servers(&out);
    std::thread::sleep(Duration::from_secs(3));
    chaos.signal(libc::SIGINT);
    let (code, stdout, stderr) = chaos.finish(Duration::from_secs(60));
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    assert!(stdout.contains("INTERRUPTED"), "{stdout}");
    assert_eq!(summary(&out)["verdict"], "interrupted");
    assert_no_server_left(&out);
}

#[cfg(target_os = "linux")]
#[test]
fn a_sigkill_of_chaos_itself_takes_its_servers_down_with_it() {
    let _machine = machine();
    let scratch = Scratch::new("killed");
    let out = scratch.0.join("run");
    let out_arg = out.display().to_string();
    let mut chaos = ChaosProcess::start(&["--duration", "60s", "--seed", "1", "--out", &out_arg]);
    wait_for_servers(&out);
    assert!(!processes_naming(&out).is_empty(), "the servers run");
    chaos.signal(libc::SIGKILL);
    drop(chaos);
    assert_no_server_left(&out);
}
