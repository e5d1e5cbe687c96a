//! Sessions in the real deployment: three `lockstep server` processes on free 127.0.0.1 ports,
//! the library's background keepalive, `lockstep lock` keeping its session alive and acting
//! when the lease is lost, `lockstep client keepalive` and `--ttl`.
//!
//! Stories:
//! - a `SessionKeeper` keeps a 2 s session alive for several TTLs while its client only holds
//!   a lock; the lock stays held and the client releases it at the end;
//! - with every server frozen (SIGSTOP), a keeper reports its lease lost when it runs out;
//! - a `lockstep lock --ttl 2s` killed with SIGKILL frees its lock: a second `lockstep lock
//!   --wait 30s` gets it with a larger fencing token;
//! - with every server frozen, `lockstep lock --ttl 2s` sends its command SIGTERM (or, with
//!   `--on-lost kill`, SIGKILL) and exits 76;
//! - `lockstep client --ttl` and `client keepalive` end to end, and bad `--ttl` values refused.
//!
//! Every process is killed and reaped by a guard even when an assertion fails, frozen servers
//! are thawed (SIGCONT) first, and the orphaned command of a killed `lockstep lock` is killed
//! too. No assertion is on timing: every wait polls up to a generous deadline.

mod common;

use common::cluster::Cluster;
use common::{Guarded as Process, Scratch, signal, text};
use lockstep::client::{LeaseState, Lost, Preempt, Release};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// A process that is not this test's child (the command of a killed `lockstep lock`, adopted
/// by init): dropping it kills it.
struct Orphan(u32);

impl Drop for Orphan {
    fn drop(&mut self) {
        signal(self.0, libc::SIGKILL);
    }
}

/// Runs `lockstep` with `args` to its end.
fn lockstep(args: &[&str]) -> Output {
    common::lockstep(args)
}

/// Starts `lockstep` with `args` in the background, its stderr to `stderr`.
fn lockstep_in_background(args: &[&str], stderr: &Path) -> Process {
    let log = std::fs::File::create(stderr).expect("a stderr file");
    Process(
        Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("lockstep starts"),
    )
}

/// Waits until `path` exists, while `process` runs.
fn wait_for_file(path: &Path, process: &mut Process, stderr: &Path) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(content) = std::fs::read_to_string(path)
            && !content.is_empty()
        {
            return content;
        }
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!(
                "lockstep ended ({status}) before {} was written: {}",
                path.display(),
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `process` to exit by itself; its exit code.
fn wait_for_exit(process: &mut Process, what: &str) -> Option<i32> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = process.0.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "{what} never exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `ID:SECRET` that a registration printed on stderr.
fn credential_in(stderr: &str) -> String {
    stderr
        .split("--client ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no credential in: {stderr}"))
        .to_string()
}

fn scratch_path(scratch: &Scratch, name: &str) -> PathBuf {
    scratch.0.join(name)
}

#[test]
fn a_keeper_holds_a_two_second_session_for_several_ttls_and_the_lock_stays_held() {
    let cluster = Cluster::start("keeper-alive");
    let ttl = Duration::from_secs(2);
    let mut holder = cluster.client(Some(ttl));
    let Ok(Preempt::Granted { .. }) = holder.preempt("kept") else {
        panic!("a free lock is granted");
    };
    let keeper = holder.keep_session_alive().expect("a live session");
    assert_eq!(keeper.ttl(), Some(ttl));
    // Nine renewals are three TTLs: without them the session would have expired twice over.
    let deadline = Instant::now() + DEADLINE;
    while keeper.renewals() < 9 {
        match keeper.state() {
            LeaseState::Alive { .. } | LeaseState::Jeopardy { .. } => {}
            other => panic!("the lease while renewing: {other:?}\n{}", cluster.logs()),
        }
        assert!(Instant::now() < deadline, "nine renewals never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    let owner = holder.client_id().expect("registered");
    let mut other = cluster.client(None);
    assert_eq!(
        other.preempt("kept").expect("an answer"),
        Preempt::HeldBy { owner },
        "the kept session still holds its lock"
    );
    assert_eq!(
        holder.release("kept").expect("an answer"),
        Release::Released
    );
    drop(keeper);
}

#[test]
fn a_keeper_reports_its_lease_lost_when_no_server_answers_until_it_runs_out() {
    let cluster = Cluster::start("keeper-lost");
    let mut holder = cluster.client(Some(Duration::from_secs(2)));
    let keeper = holder.keep_session_alive().expect("a live session");
    let LeaseState::Alive { until } = keeper.state() else {
        panic!("alive after a renewal: {:?}", keeper.state());
    };
    cluster.freeze();
    let deadline = Instant::now() + DEADLINE;
    let lost = loop {
        if let LeaseState::Lost(lost) = keeper.state() {
            break lost;
        }
        assert!(Instant::now() < deadline, "the lease was never lost");
        std::thread::sleep(Duration::from_millis(20));
    };
    let Lost::LeaseRanOut { at, .. } = &lost else {
        panic!("lost by the client's own rule: {lost:?}");
    };
    assert!(
        *at >= until,
        "a lease ends no earlier than it was granted until"
    );
    assert!(lost.to_string().contains("ran out"), "{lost}");
    drop(keeper); // returns: every renewal is bounded
}

#[test]
fn a_keeper_for_a_session_without_ttl_is_unbounded_and_an_expired_session_is_refused() {
    let cluster = Cluster::start("keeper-ends");
    let mut forever = cluster.client(None);
    let keeper = forever.keep_session_alive().expect("a session");
    assert_eq!(keeper.state(), LeaseState::Unbounded);
    assert_eq!(keeper.ttl(), None);

    let mut doomed = cluster.client(Some(Duration::from_secs(1)));
    let Ok(Preempt::Granted { .. }) = doomed.preempt("doomed") else {
        panic!("a free lock is granted");
    };
    // Nobody renews: once another client gets the lock, the session has expired.
    let mut next = cluster.client(None);
    let deadline = Instant::now() + DEADLINE;
    while let Ok(Preempt::HeldBy { .. }) = next.preempt("doomed") {
        assert!(Instant::now() < deadline, "the session never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    match doomed.keep_session_alive() {
        Err(lockstep::client::Error::Rejected { code, .. }) => {
            assert_eq!(code.name(), "session_expired");
        }
        Err(error) => panic!("keeping an expired session: {error}"),
        Ok(keeper) => panic!("keeping an expired session: {:?}", keeper.state()),
    }
}

#[test]
fn a_lock_command_killed_with_sigkill_frees_its_lock_for_the_next_with_a_larger_token() {
    let cluster = Cluster::start("lock-killed");
    let scratch = Scratch::new("lock-killed-files");
    let servers = cluster.servers_flag();
    let (pid_file, token_file) = (
        scratch_path(&scratch, "pid"),
        scratch_path(&scratch, "token"),
    );
    let script = format!(
        "echo $$ > {pid}; echo \"$LOCKSTEP_FENCING_TOKEN\" > {token}.tmp; \
         mv {token}.tmp {token}; exec sleep 300",
        pid = pid_file.display(),
        token = token_file.display()
    );
    let stderr = scratch_path(&scratch, "first.stderr");
    let mut first = lockstep_in_background(
        &[
            "lock",
            "printer",
            "--servers",
            &servers,
            "--ttl",
            "2s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &stderr,
    );
    let first_token: u64 = wait_for_file(&token_file, &mut first, &stderr)
        .trim()
        .parse()
        .expect("a numeric token");
    let pid = std::fs::read_to_string(&pid_file).expect("the command wrote its pid");
    let _orphan = Orphan(pid.trim().parse().expect("a pid"));
    first.0.kill().expect("SIGKILL lockstep");
    first.0.wait().expect("reaped");
    let killed_at = Instant::now();

    let second = lockstep(&[
        "lock",
        "printer",
        "--servers",
        &servers,
        "--wait",
        "30s",
        "--",
        "sh",
        "-c",
        "echo \"$LOCKSTEP_FENCING_TOKEN\"",
    ]);
    assert_eq!(
        second.status.code(),
        Some(0),
        "the lock came free within 30s: {}\n{}",
        text(&second.stderr),
        cluster.logs()
    );
    // A figure for the reader, not an assertion: TTL × 1.01 plus a heartbeat and a commit.
    eprintln!(
        "the lock came free {:?} after the kill",
        killed_at.elapsed()
    );
    let second_token: u64 = text(&second.stdout).trim().parse().expect("a token");
    assert!(
        second_token > first_token,
        "fencing token {second_token} after {first_token}"
    );
}

/// A command that writes `ready`, then, on SIGTERM, `terminated` to `stopped` and exits.
fn trapping_script(ready: &Path, stopped: &Path) -> String {
    format!(
        "trap 'echo terminated > {stopped}; exit 0' TERM; echo ready > {ready}; \
         while :; do sleep 0.1; done",
        stopped = stopped.display(),
        ready = ready.display()
    )
}

#[test]
fn a_lock_command_whose_lease_is_lost_stops_its_command_as_on_lost_says_and_exits_76() {
    let cluster = Cluster::start("lock-lost");
    let scratch = Scratch::new("lock-lost-files");
    let servers = cluster.servers_flag();
    // `printer` with the default --on-lost term, `plotter` with --on-lost kill.
    let mut runs = Vec::new();
    for (lock, on_lost) in [("printer", "term"), ("plotter", "kill")] {
        let ready = scratch_path(&scratch, &format!("{lock}.ready"));
        let stopped = scratch_path(&scratch, &format!("{lock}.stopped"));
        let stderr = scratch_path(&scratch, &format!("{lock}.stderr"));
        let script = trapping_script(&ready, &stopped);
        let mut process = lockstep_in_background(
            &[
                "lock",
                lock,
                "--servers",
                &servers,
                "--ttl",
                "2s",
                "--on-lost",
                on_lost,
                "--kill-after",
                "30s",
                "--",
                "sh",
                "-c",
                &script,
            ],
            &stderr,
        );
        wait_for_file(&ready, &mut process, &stderr);
        runs.push((lock, process, stopped, stderr));
    }
    cluster.freeze();
    for (lock, process, stopped, stderr) in &mut runs {
        let code = wait_for_exit(process, lock);
        let said = std::fs::read_to_string(&*stderr).unwrap_or_default();
        assert_eq!(code, Some(76), "{lock}: the lease-lost exit code: {said}");
        assert!(
            said.contains(&format!("lost the lease on `{lock}`")),
            "{said}"
        );
        assert!(said.contains("not released"), "{said}");
        let trapped = std::fs::read_to_string(&*stopped).unwrap_or_default();
        if *lock == "printer" {
            assert_eq!(trapped.trim(), "terminated", "SIGTERM ran the trap: {said}");
            assert!(said.contains("sending the command SIGTERM"), "{said}");
        } else {
            assert_eq!(trapped, "", "SIGKILL leaves no time for a trap: {said}");
            assert!(said.contains("killing the command (SIGKILL)"), "{said}");
        }
    }
}

#[test]
fn ttl_and_client_keepalive_work_end_to_end_and_bad_ttls_are_refused_naming_the_flag() {
    let cluster = Cluster::start("ttl-flags");
    let servers = cluster.servers_flag();

    // A new client with a 5 s session; keepalive reports the TTL and the lease left.
    let taken = lockstep(&[
        "client",
        "--servers",
        &servers,
        "--ttl",
        "5s",
        "preempt",
        "t",
    ]);
    assert_eq!(taken.status.code(), Some(0), "{}", text(&taken.stderr));
    let credential = credential_in(&text(&taken.stderr));
    let kept = lockstep(&[
        "client",
        "--servers",
        &servers,
        "--client",
        &credential,
        "--json",
        "keepalive",
    ]);
    assert_eq!(kept.status.code(), Some(0), "{}", text(&kept.stderr));
    let json: Value = serde_json::from_slice(&kept.stdout).expect("one JSON object");
    assert_eq!(json["op"], "keepalive");
    assert_eq!(json["result"], "kept_alive");
    assert_eq!(json["ttl_ms"], 5_000);
    // 5 s less 1% drift less the 100 ms margin, counted from the send: at most 4,850 ms.
    let lease_ms = json["lease_ms"].as_u64().expect("a lease");
    assert!(lease_ms <= 4_850, "{json}");
    let plain = lockstep(&[
        "client",
        "--servers",
        &servers,
        "--client",
        &credential,
        "keepalive",
    ]);
    let said = text(&plain.stdout);
    assert!(said.contains("TTL is 5s"), "{said}");
    assert!(said.contains("believe it alive for"), "{said}");
    // Servers that allow 9% of drift: the client shortens its lease by as much, to at most
    // 5 s × 0.91 − 100 ms = 4,450 ms (at 1% it would be some 4,850).
    let wide = lockstep(&[
        "client",
        "--servers",
        &servers,
        "--client",
        &credential,
        "--max-clock-drift",
        "9%",
        "--json",
        "keepalive",
    ]);
    let json: Value = serde_json::from_slice(&wide.stdout).expect("one JSON object");
    let lease_ms = json["lease_ms"].as_u64().expect("a lease");
    assert!(lease_ms <= 4_450, "{json}");

    // `client` keeps no TTL by default; `lock` registers with 15 s unless told otherwise.
    let forever = lockstep(&["client", "--servers", &servers, "keepalive"]);
    assert!(
        text(&forever.stdout).contains("never expires"),
        "{}",
        text(&forever.stdout)
    );
    for (ttl_args, expected) in [
        (&[][..], Value::from(15_000)),
        (&["--ttl", "none"][..], Value::Null),
    ] {
        let mut args = vec!["lock", "l", "--servers", &servers];
        args.extend_from_slice(ttl_args);
        args.extend_from_slice(&["--", "true"]);
        let run = lockstep(&args);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        let credential = credential_in(&text(&run.stderr));
        let kept = lockstep(&[
            "client",
            "--servers",
            &servers,
            "--client",
            &credential,
            "--json",
            "keepalive",
        ]);
        let json: Value = serde_json::from_slice(&kept.stdout).expect("one JSON object");
        assert_eq!(json["ttl_ms"], expected, "lock {ttl_args:?}: {json}");
    }

    // Refusals: exit 2, naming --ttl.
    let with_credential = lockstep(&[
        "client",
        "--servers",
        &servers,
        "--client",
        &credential,
        "--ttl",
        "5s",
        "keepalive",
    ]);
    let below_bounds = lockstep(&[
        "client",
        "--servers",
        &servers,
        "--ttl",
        "500ms",
        "keepalive",
    ]);
    let lock_with_credential = lockstep(&[
        "lock",
        "l",
        "--servers",
        &servers,
        "--client",
        &credential,
        "--ttl",
        "5s",
        "--",
        "true",
    ]);
    for (output, what) in [
        (&with_credential, "existing client"),
        (&below_bounds, "bounds"),
        (&lock_with_credential, "existing client"),
    ] {
        let said = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert!(said.contains("--ttl"), "{said}");
        assert!(said.contains(what), "{said}");
    }
    for bad in ["10%", "0.1", "2", "lots"] {
        let output = lockstep(&[
            "client",
            "--servers",
            "127.0.0.1:1",
            "--max-clock-drift",
            bad,
            "keepalive",
        ]);
        let said = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {said}");
        assert!(said.contains("--max-clock-drift"), "{bad}: {said}");
    }
    for bad in ["bogus", "0", "5", "0.5us"] {
        for command in [
            &[
                "lock",
                "l",
                "--servers",
                "127.0.0.1:1",
                "--ttl",
                bad,
                "--",
                "true",
            ][..],
            &[
                "client",
                "--servers",
                "127.0.0.1:1",
                "--ttl",
                bad,
                "keepalive",
            ][..],
        ] {
            let output = lockstep(command);
            let said = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command:?}: {said}");
            assert!(said.contains("--ttl"), "{command:?}: {said}");
        }
    }
}
