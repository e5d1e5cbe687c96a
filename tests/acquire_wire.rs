//! The blocking acquire over TCP, against three real `lockstep server` processes on free
//! 127.0.0.1 ports: the library's `acquire`, `acquire_until` and `cancel`, and `lockstep lock
//! --wait`, which uses them.
//!
//! Stories:
//! - two waiters on a held lock are served in the order they joined its line, each by the
//!   release before it, with rising fencing tokens;
//! - a wait that runs out is answered `timeout`; a stopped wait is cancelled, and so is a wait
//!   that another process acting as the same client cancels;
//! - a client that talks only to a follower still hears its late grant: the follower forwarded
//!   the acquire and relays the answer to the connection that asked;
//! - a waiter with a one-second session waits several TTLs and is granted, not expired;
//! - two `lockstep lock --wait` on one lock run their commands one after the other, in the
//!   order they queued; one whose wait runs out exits 75 naming the holder; one interrupted
//!   while it waits leaves the line and exits 130;
//! - `bench --contended --acquire` serves a fair line and reports it.
//!
//! Order is established without sleeping on a guess: a waiter is known to be in line once the
//! leader's commit index has moved past its `Acquire` entry (nothing else writes meanwhile).
//! Every process is killed and reaped by a guard even when an assertion fails; no assertion is
//! on timing.

mod common;

use common::cluster::{Cluster, client_of};
use common::{Guarded as Process, Scratch};
use lockstep::client::{Acquire, Cancel, Check, Client, ClientOptions, Preempt, Release};
use lockstep::net::protocol::ErrorCode;
use lockstep::node::Consistency;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const LONG_WAIT: Duration = Duration::from_secs(60);

/// A client registered now, so that registering does not count as the next write.
fn registered(cluster: &Cluster, ttl: Option<Duration>) -> Client {
    let mut client = cluster.client(ttl);
    client.register().expect("registered");
    client
}

/// `client` acquiring `lock` for [`LONG_WAIT`] on a thread of its own; the join gives the
/// answer and the client back.
fn waiting(mut client: Client, lock: &'static str) -> JoinHandle<(Client, Acquire)> {
    std::thread::spawn(move || {
        let answer = client
            .acquire(lock, LONG_WAIT)
            .expect("the acquire is decided");
        (client, answer)
    })
}

fn token(answer: Acquire) -> u64 {
    match answer {
        Acquire::Granted { token } => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn two_waiters_are_served_in_the_order_they_queued_each_by_the_release_before_it() {
    let cluster = Cluster::start("acquire-fifo");
    let mut holder = registered(&cluster, None);
    let Ok(Preempt::Granted { token: first }) = holder.preempt("printer") else {
        panic!("a free lock is granted");
    };
    let early = cluster.until_committed_past(|| waiting(registered(&cluster, None), "printer"));
    let late = cluster.until_committed_past(|| waiting(registered(&cluster, None), "printer"));

    assert_eq!(holder.release("printer"), Ok(Release::Released));
    let (mut early, early_answer) = early.join().expect("the early waiter's thread");
    let early_token = token(early_answer);
    assert!(early_token > first, "{early_token} after {first}");
    // The release handed the lock over in its own entry: the early waiter holds it now, and
    // the late one is still in line behind it.
    assert_eq!(
        holder.check("printer", Consistency::Linearizable),
        Ok(Check::Owner {
            owner: early.client_id().expect("registered"),
            token: early_token
        })
    );

    assert_eq!(early.release("printer"), Ok(Release::Released));
    let (late, late_answer) = late.join().expect("the late waiter's thread");
    let late_token = token(late_answer);
    assert!(late_token > early_token, "{late_token} after {early_token}");
    assert_eq!(
        holder.check("printer", Consistency::Linearizable),
        Ok(Check::Owner {
            owner: late.client_id().expect("registered"),
            token: late_token
        })
    );
}

#[test]
fn a_wait_that_runs_out_is_a_timeout_and_a_stopped_or_cancelled_wait_is_cancelled() {
    let cluster = Cluster::start("acquire-timeout");
    let mut holder = registered(&cluster, None);
    assert!(matches!(
        holder.preempt("door"),
        Ok(Preempt::Granted { .. })
    ));
    let mut waiter = registered(&cluster, None);

    assert_eq!(
        waiter.acquire("door", Duration::from_millis(300)),
        Ok(Acquire::TimedOut)
    );
    assert!(matches!(
        waiter.acquire("door", Duration::ZERO),
        Ok(Acquire::HeldBy { .. })
    ));

    // Stopped from this very client once its acquire is in line: it cancels.
    let before = cluster.commit_index();
    let mut stop = || cluster.commit_index() > before;
    assert_eq!(
        waiter.acquire_until("door", LONG_WAIT, &mut stop),
        Ok(Acquire::Cancelled)
    );

    // Cancelled by another process acting as the same client.
    let credential = waiter.credential().expect("registered");
    let blocked = cluster.until_committed_past(|| waiting(waiter, "door"));
    let same_client = ClientOptions {
        credential: Some(credential),
        operation_timeout: DEADLINE,
        ..ClientOptions::default()
    };
    let mut other = Client::new(cluster.addresses(), same_client).expect("valid addresses");
    assert_eq!(other.cancel("door"), Ok(Cancel::Cancelled));
    let (_, answer) = blocked.join().expect("the waiter's thread");
    assert_eq!(answer, Acquire::Cancelled);
    assert_eq!(other.cancel("door"), Ok(Cancel::NotWaiting));
    // Nothing of this touched the holder.
    assert!(matches!(
        holder.check("door", Consistency::Linearizable),
        Ok(Check::Owner { owner, .. }) if Some(owner) == holder.client_id()
    ));
}

#[test]
fn a_client_of_a_follower_hears_its_late_grant_through_the_follower() {
    let cluster = Cluster::start("acquire-follower");
    let (_, follower) = cluster.leader_and_follower();
    let mut holder = registered(&cluster, None);
    assert!(matches!(
        holder.preempt("scanner"),
        Ok(Preempt::Granted { .. })
    ));
    let mut only_follower = client_of(vec![follower], None);
    only_follower
        .register()
        .expect("registered through the follower");

    let waiter = cluster.until_committed_past(|| waiting(only_follower, "scanner"));
    assert_eq!(holder.release("scanner"), Ok(Release::Released));
    let (waiter, answer) = waiter.join().expect("the waiter's thread");
    let granted = token(answer);
    assert_eq!(
        holder.check("scanner", Consistency::Linearizable),
        Ok(Check::Owner {
            owner: waiter.client_id().expect("registered"),
            token: granted
        })
    );
}

#[test]
fn a_waiter_with_a_one_second_session_waits_several_ttls_and_is_granted_not_expired() {
    let cluster = Cluster::start("acquire-session");
    let mut holder = registered(&cluster, None);
    assert!(matches!(
        holder.preempt("stapler"),
        Ok(Preempt::Granted { .. })
    ));
    let ttl = Duration::from_secs(1);
    let waiter =
        cluster.until_committed_past(|| waiting(registered(&cluster, Some(ttl)), "stapler"));
    // Four TTLs in line: without renewals the session would have expired, and the wait with
    // it (`session_expired`).
    std::thread::sleep(ttl * 4);
    assert_eq!(holder.release("stapler"), Ok(Release::Released));
    let (mut waiter, answer) = waiter.join().expect("the waiter's thread");
    token(answer);
    assert_eq!(waiter.release("stapler"), Ok(Release::Released));
    let expired = waiter.preempt("stapler");
    assert!(
        !matches!(
            expired,
            Err(lockstep::client::Error::Rejected {
                code: ErrorCode::SessionExpired,
                ..
            })
        ),
        "{expired:?}"
    );
}

// ----- `lockstep lock --wait` -----

/// Starts `lockstep lock` with `args` in the background, its stderr to `stderr`.
fn lock_in_background(args: &[&str], stderr: &Path) -> Process {
    let log = std::fs::File::create(stderr).expect("a stderr file");
    Process(
        Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .arg("lock")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("lockstep starts"),
    )
}

/// Waits for `process` to exit by itself; its exit code.
fn exit_code(process: &mut Process, what: &str) -> Option<i32> {
    let give_up_at = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = process.0.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(Instant::now() < give_up_at, "{what} never exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_lock_commands_waiting_on_one_lock_run_in_the_order_they_queued() {
    let cluster = Cluster::start("lock-wait-order");
    let scratch = Scratch::new("lock-wait-order-files");
    let order = scratch.0.join("order.txt");
    let mut holder = registered(&cluster, None);
    assert!(matches!(
        holder.preempt("deploy"),
        Ok(Preempt::Granted { .. })
    ));
    let servers = cluster.servers_flag();
    // Each run appends its name and fencing token to `order.txt` while it holds the lock.
    let start = |name: &str| {
        let credential = registered(&cluster, None)
            .credential()
            .expect("registered")
            .to_argument();
        let script = format!(
            "echo \"{name} $LOCKSTEP_FENCING_TOKEN\" >> '{}'",
            order.display()
        );
        let stderr = scratch.0.join(format!("{name}.stderr"));
        let args = [
            "deploy",
            "--servers",
            &servers,
            "--wait",
            "60s",
            "--",
            "sh",
            "-c",
        ];
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        command
            .arg("lock")
            .args(args)
            .arg(&script)
            .env("LOCKSTEP_CLIENT", credential)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&stderr).expect("a file")));
        // With a credential nothing is registered: the first entry it writes is its acquire.
        cluster.until_committed_past(|| Process(command.spawn().expect("lockstep starts")))
    };
    let mut first = start("first");
    let mut second = start("second");

    assert_eq!(holder.release("deploy"), Ok(Release::Released));
    assert_eq!(exit_code(&mut first, "the first lock"), Some(0));
    assert_eq!(exit_code(&mut second, "the second lock"), Some(0));
    let runs = std::fs::read_to_string(&order).expect("both commands ran");
    let runs: Vec<(&str, u64)> = runs
        .lines()
        .map(|line| {
            let (name, token) = line.split_once(' ').expect("name and token");
            (name, token.parse().expect("a token"))
        })
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0].0, runs[1].0), ("first", "second"), "{runs:?}");
    assert!(runs[0].1 < runs[1].1, "tokens rise: {runs:?}");
    assert_eq!(
        holder.check("deploy", Consistency::Linearizable),
        Ok(Check::Free),
        "each run released the lock when its command ended"
    );
}

#[test]
fn a_lock_command_whose_wait_runs_out_exits_75_naming_the_holder() {
    let cluster = Cluster::start("lock-wait-timeout");
    let scratch = Scratch::new("lock-wait-timeout-files");
    let mut holder = registered(&cluster, None);
    assert!(matches!(
        holder.preempt("deploy"),
        Ok(Preempt::Granted { .. })
    ));
    let holder_id = holder.client_id().expect("registered").0;
    let servers = cluster.servers_flag();
    let ran = scratch.0.join("ran");
    let stderr = scratch.0.join("lock.stderr");
    let touch = format!("touch '{}'", ran.display());
    let args = [
        "deploy",
        "--servers",
        &servers,
        "--wait",
        "1s",
        "--",
        "sh",
        "-c",
        &touch,
    ];
    let mut waiter = lock_in_background(&args, &stderr);
    assert_eq!(exit_code(&mut waiter, "lockstep lock"), Some(75));
    let said = std::fs::read_to_string(&stderr).expect("stderr");
    assert!(
        said.contains(&format!(
            "`deploy` not acquired within 1s: client {holder_id} holds it"
        )),
        "{said}"
    );
    assert!(!ran.exists(), "the command never ran");
}

// ----- `lockstep bench --contended --acquire` -----

#[test]
fn the_acquire_bench_hands_one_lock_round_a_fair_line_and_reports_it() {
    let cluster = Cluster::start("acquire-bench");
    let servers = cluster.servers_flag();
    let clients = 4u64;
    let args = [
        "bench",
        "--servers",
        &servers,
        "--contended",
        "--acquire",
        "--clients",
        "4",
        "--duration",
        "2s",
        "--json",
    ];
    let output = common::lockstep(&args);
    let stdout = common::text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        common::text(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["acquire"], true);
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(
        report["grants_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    let waited = &report["handoffs_waited"];
    let acquires = waited["acquires"].as_u64().expect("a count");
    assert!(acquires > clients, "every client went round: {report}");
    assert_eq!(
        report["latency"]["preempt_refused"]["count"], 0,
        "nothing polls: {report}"
    );
    // In a FIFO line of four, an acquire waits behind the three others at most once each;
    // a grant still on its way back when the acquire was sent may be counted too, hence the
    // slack. A line that let anyone jump it would starve someone far beyond this.
    let most = waited["max"].as_u64().expect("a maximum");
    assert!(most <= 2 * (clients - 1), "{report}");
}

#[test]
fn a_lock_command_interrupted_while_waiting_leaves_the_line_and_exits_130() {
    let cluster = Cluster::start("lock-wait-interrupt");
    let scratch = Scratch::new("lock-wait-interrupt-files");
    let mut holder = registered(&cluster, None);
    assert!(matches!(
        holder.preempt("deploy"),
        Ok(Preempt::Granted { .. })
    ));
    let servers = cluster.servers_flag();
    let credential = registered(&cluster, None)
        .credential()
        .expect("registered")
        .to_argument();
    let ran = scratch.0.join("ran");
    let touch = format!("touch '{}'", ran.display());
    let stderr = scratch.0.join("lock.stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    command
        .args(["lock", "deploy", "--servers", &servers, "--wait", "60s"])
        .args(["--", "sh", "-c", &touch])
        .env("LOCKSTEP_CLIENT", credential)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&stderr).expect("a file")));
    // With a credential, the first entry it writes is its acquire: then it is in line.
    let mut waiter = cluster.until_committed_past(|| Process(command.spawn().expect("starts")));

    common::signal(waiter.0.id(), libc::SIGINT);
    assert_eq!(exit_code(&mut waiter, "lockstep lock"), Some(130));
    // It left the line: the release hands the lock to nobody.
    assert_eq!(holder.release("deploy"), Ok(Release::Released));
    assert_eq!(
        holder.check("deploy", Consistency::Linearizable),
        Ok(Check::Free),
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    assert!(!ran.exists(), "the command never ran");
}
