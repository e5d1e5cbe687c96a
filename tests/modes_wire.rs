//! Shared locks and semaphores over TCP, against three real `lockstep server` processes on free
//! 127.0.0.1 ports: the library's `preempt_with` and `acquire_with`, the raw protocol lines,
//! and `lockstep lock --shared` / `--permits`.
//!
//! Stories:
//! - two readers hold one lock at once, each with a token of its own (a check, from the library
//!   and from `lockstep client check`, counts them); a writer waits behind them, a reader that
//!   comes after the writer does not overtake it, and the writer is granted once both readers
//!   released;
//! - a semaphore of 3 holds three clients, refuses a fourth (`held_by`), refuses other permits
//!   (`permits_mismatch`, also to an acquire, which is then not queued), and hands a freed
//!   permit to the fourth waiting in line;
//! - over raw lines: the same seq with another claim is `seq_reused`, the same claim is the
//!   remembered answer, and permits over the bound are a `bad_request` naming it;
//! - two `lockstep lock --shared` run their commands at the same time while a `lockstep lock`
//!   without `--shared` waits until both have exited; a `--permits` that disagrees exits 78.
//!
//! Order is established without sleeping on a guess: a waiter is known to be in line once the
//! leader's commit index has moved past its `Acquire` entry (nothing else writes meanwhile),
//! and a command is known to run once it has written its file. Every process is killed and
//! reaped by a guard even when an assertion fails; no assertion is on timing.

mod common;

use common::cluster::Cluster;
use common::{Guarded as Process, Scratch};
use lockstep::client::{Acquire, Check, Claim, Client, Error, Preempt, Release};
use lockstep::node::Consistency;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const LONG_WAIT: Duration = Duration::from_secs(60);

/// A client registered now, so that registering does not count as the next write.
fn registered(cluster: &Cluster) -> Client {
    let mut client = cluster.client(None);
    client.register().expect("registered");
    client
}

/// `client` acquiring `lock` under `claim` for [`LONG_WAIT`] on a thread of its own; the join
/// gives the answer and the client back.
fn waiting(mut client: Client, lock: &'static str, claim: Claim) -> JoinHandle<(Client, Acquire)> {
    std::thread::spawn(move || {
        let answer = client
            .acquire_with(lock, LONG_WAIT, claim)
            .expect("the acquire is decided");
        (client, answer)
    })
}

fn granted(answer: Result<Preempt, Error>) -> u64 {
    match answer {
        Ok(Preempt::Granted { token }) => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn two_readers_hold_at_once_and_a_writer_waits_for_both_and_is_not_overtaken() {
    let cluster = Cluster::start("modes-readers");
    let mut first = registered(&cluster);
    let mut second = registered(&cluster);
    let first_token = granted(first.preempt_with("catalog", Claim::SHARED));
    let second_token = granted(second.preempt_with("catalog", Claim::SHARED));
    assert!(
        second_token > first_token,
        "each reader has its own token: {first_token} then {second_token}"
    );
    let mut observer = registered(&cluster);
    assert_eq!(
        observer.check("catalog", Consistency::Linearizable),
        Ok(Check::Shared {
            holders: 2,
            permits: None
        })
    );

    // `lockstep client check` says the same, in a sentence and in JSON.
    let servers = cluster.addresses().join(",");
    let checked = common::lockstep(&[
        "client",
        "--servers",
        &servers,
        "--json",
        "check",
        "catalog",
        "--linearizable",
    ]);
    let json: serde_json::Value =
        serde_json::from_slice(&checked.stdout).expect("one JSON object on stdout");
    assert_eq!(json["result"], "shared", "{json}");
    assert_eq!(json["holders"], 2, "{json}");
    let sentence = common::lockstep(&["client", "--servers", &servers, "check", "catalog"]);
    let sentence = common::text(&sentence.stdout);
    assert!(
        sentence.contains("held shared: 2 client(s) hold `catalog` together"),
        "{sentence}"
    );

    let mut writer = registered(&cluster);
    assert_eq!(
        writer.preempt("catalog"),
        Ok(Preempt::HeldBy {
            owner: first.client_id().expect("registered")
        }),
        "a writer is refused while readers hold it, naming the earliest reader"
    );
    let writer = cluster.until_committed_past(|| waiting(writer, "catalog", Claim::EXCLUSIVE));
    let mut late_reader = registered(&cluster);
    assert!(
        matches!(
            late_reader.preempt_with("catalog", Claim::SHARED),
            Ok(Preempt::HeldBy { .. })
        ),
        "a reader that comes after the waiting writer does not overtake it"
    );

    assert_eq!(first.release("catalog"), Ok(Release::Released));
    assert_eq!(
        observer.check("catalog", Consistency::Linearizable),
        Ok(Check::Shared {
            holders: 1,
            permits: None
        }),
        "one reader left: the writer still waits"
    );
    assert_eq!(second.release("catalog"), Ok(Release::Released));
    let (writer, answer) = writer.join().expect("the writer's thread");
    let Acquire::Granted {
        token: writer_token,
    } = answer
    else {
        panic!("the writer is granted once both readers left: {answer:?}");
    };
    assert!(
        writer_token > second_token,
        "{writer_token} after {second_token}"
    );
    assert_eq!(
        observer.check("catalog", Consistency::Linearizable),
        Ok(Check::Owner {
            owner: writer.client_id().expect("registered"),
            token: writer_token
        })
    );
}

#[test]
fn a_semaphore_of_three_holds_three_refuses_a_fourth_and_other_permits() {
    let cluster = Cluster::start("modes-semaphore");
    let mut holders: Vec<Client> = (0..3).map(|_| registered(&cluster)).collect();
    let tokens: Vec<u64> = holders
        .iter_mut()
        .map(|holder| granted(holder.preempt_with("gpu", Claim::semaphore(3))))
        .collect();
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "three holders, three tokens of their own: {tokens:?}"
    );
    let mut fourth = registered(&cluster);
    assert_eq!(
        fourth.check("gpu", Consistency::Linearizable),
        Ok(Check::Shared {
            holders: 3,
            permits: Some(3)
        })
    );
    assert_eq!(
        fourth.preempt_with("gpu", Claim::semaphore(3)),
        Ok(Preempt::HeldBy {
            owner: holders[0].client_id().expect("registered")
        })
    );
    assert_eq!(
        fourth.preempt_with("gpu", Claim::semaphore(2)),
        Ok(Preempt::PermitsMismatch { permits: Some(3) })
    );
    assert_eq!(
        fourth.acquire_with("gpu", LONG_WAIT, Claim::semaphore(4)),
        Ok(Acquire::PermitsMismatch { permits: Some(3) }),
        "a mismatched acquire is answered at once, not queued"
    );
    assert!(
        matches!(
            fourth.preempt_with("gpu", Claim::semaphore(0)),
            Err(Error::InvalidInput(_))
        ),
        "permits 0 never leave the client"
    );

    let fourth = cluster.until_committed_past(|| waiting(fourth, "gpu", Claim::semaphore(3)));
    assert_eq!(holders[1].release("gpu"), Ok(Release::Released));
    let (fourth, answer) = fourth.join().expect("the fourth client's thread");
    let Acquire::Granted {
        token: fourth_token,
    } = answer
    else {
        panic!("the freed permit goes to the waiter: {answer:?}");
    };
    assert!(fourth_token > tokens[2]);
    let mut observer = registered(&cluster);
    assert_eq!(
        observer.check("gpu", Consistency::Linearizable),
        Ok(Check::Shared {
            holders: 3,
            permits: Some(3)
        })
    );
    // Still three holders: the first, the third and the fourth, whose release works.
    let mut fourth = fourth;
    assert_eq!(fourth.release("gpu"), Ok(Release::Released));
}

/// One connection speaking raw lines to one server.
struct Line {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Line {
    fn open(address: &str) -> Line {
        let writer = TcpStream::connect(address).expect("the server listens");
        writer
            .set_read_timeout(Some(DEADLINE))
            .expect("a read timeout");
        let reader = BufReader::new(writer.try_clone().expect("a second handle"));
        Line { reader, writer }
    }

    /// Sends `line` and returns the response, parsed.
    fn exchange(&mut self, line: &str) -> serde_json::Value {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("the line is sent");
        let mut response = String::new();
        self.reader
            .read_line(&mut response)
            .expect("a response line");
        serde_json::from_str(&response).unwrap_or_else(|_| panic!("JSON: {response}"))
    }
}

#[test]
fn over_raw_lines_a_claim_is_part_of_its_seq_and_permits_are_bounded_before_the_log() {
    let cluster = Cluster::start("modes-lines");
    let mut line = Line::open(&cluster.leader_and_follower().0);
    let welcome = line.exchange(r#"{"seq":1,"op":"hello","version":2}"#);
    let client = welcome["client"].as_u64().expect("a client id");
    let secret = welcome["secret"].as_str().expect("a secret").to_string();
    let term = welcome["term"].as_u64().expect("a term");
    let request = |seq: u64, fields: &str| {
        format!(
            r#"{{"seq":{seq},"op":"preempt","version":2,"client":{client},"secret":"{secret}","lock":"shelf","term":{term}{fields}}}"#
        )
    };

    let shared = line.exchange(&request(2, r#","mode":"shared""#));
    assert_eq!(shared["ok"], "granted", "{shared}");
    let again = line.exchange(&request(2, r#","mode":"shared""#));
    assert_eq!(
        again, shared,
        "the same claim under the same seq: the remembered answer"
    );
    let exclusive = line.exchange(&request(2, ""));
    assert_eq!(exclusive["error"], "seq_reused", "{exclusive}");
    let semaphore = line.exchange(&request(2, r#","permits":2"#));
    assert_eq!(semaphore["error"], "seq_reused", "{semaphore}");

    let over = line.exchange(&request(3, r#","permits":65"#));
    assert_eq!(over["error"], "bad_request", "{over}");
    assert!(
        over["message"]
            .as_str()
            .is_some_and(|message| message.contains("1 to 64")),
        "{over}"
    );
    assert!(
        over.get("term").is_none(),
        "refused by the front end: {over}"
    );
    let check = line.exchange(&format!(
        r#"{{"seq":3,"op":"check","version":2,"client":{client},"secret":"{secret}","lock":"shelf","consistency":"linearizable"}}"#
    ));
    assert_eq!(check["ok"], "shared", "{check}");
    assert_eq!(check["holders"], 1, "{check}");
    assert!(check.get("permits").is_none(), "{check}");
}

// ----- `lockstep lock --shared` and `--permits` -----

fn exit_code(process: &mut Process, what: &str) -> Option<i32> {
    let give_up_at = Instant::now() + DEADLINE;
    // Bounded by the deadline.
    loop {
        if let Some(status) = process.0.try_wait().expect("try_wait") {
            return status.code();
        }
        assert!(Instant::now() < give_up_at, "{what} never exited");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` exists (a command wrote it), or panics past the deadline.
fn until_exists(path: &Path, what: &str) {
    let give_up_at = Instant::now() + DEADLINE;
    // Bounded by the deadline.
    while !path.exists() {
        assert!(Instant::now() < give_up_at, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `lockstep lock NAME FLAGS -- sh -c SCRIPT` acting as a newly registered client (so that its
/// first entry is its acquire), stderr to `NAME-LABEL.stderr` in `scratch`.
fn lock_command(
    cluster: &Cluster,
    scratch: &Scratch,
    (lock, label): (&str, &str),
    flags: &[&str],
    script: &str,
) -> Command {
    let credential = registered(cluster)
        .credential()
        .expect("registered")
        .to_argument();
    let stderr = scratch.0.join(format!("{lock}-{label}.stderr"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    command
        .args(["lock", lock, "--servers", &cluster.addresses().join(",")])
        .args(flags)
        .args(["--", "sh", "-c", script])
        .env("LOCKSTEP_CLIENT", credential)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(stderr).expect("a file")));
    command
}

#[test]
fn two_shared_lock_commands_run_together_while_an_exclusive_one_waits_for_both() {
    let cluster = Cluster::start("modes-lock-cli");
    let scratch = Scratch::new("modes-lock-cli-files");
    let path = |name: &str| scratch.0.join(name);
    let log = path("log");
    // A reader says it started, holds until `release` exists, then logs its token and exits.
    let reader_script = |name: &str| {
        format!(
            "touch '{started}'; while [ ! -e '{release}' ]; do sleep 0.02; done; \
             echo \"{name} $LOCKSTEP_FENCING_TOKEN\" >> '{log}'",
            started = path(&format!("{name}.started")).display(),
            release = path("release").display(),
            log = log.display()
        )
    };
    let mut readers: Vec<Process> = ["first", "second"]
        .iter()
        .map(|name| {
            let mut command = lock_command(
                &cluster,
                &scratch,
                ("catalog", name),
                &["--shared", "--wait", "60s"],
                &reader_script(name),
            );
            Process(command.spawn().expect("lockstep starts"))
        })
        .collect();
    // Both commands run at once: neither can finish before `release` exists.
    until_exists(&path("first.started"), "the first reader's command");
    until_exists(&path("second.started"), "the second reader's command");

    let writer_script = format!(
        "echo \"writer $LOCKSTEP_FENCING_TOKEN\" >> '{}'",
        log.display()
    );
    let mut writer = lock_command(
        &cluster,
        &scratch,
        ("catalog", "writer"),
        &["--wait", "60s"],
        &writer_script,
    );
    let mut writer = cluster.until_committed_past(|| Process(writer.spawn().expect("starts")));
    assert!(
        !log.exists(),
        "the writer is in line behind two readers, so nothing has run to its end"
    );
    std::fs::write(path("release"), "").expect("the release file");
    for (reader, name) in readers.iter_mut().zip(["first reader", "second reader"]) {
        assert_eq!(exit_code(reader, name), Some(0));
    }
    assert_eq!(exit_code(&mut writer, "the writer"), Some(0));

    let runs = std::fs::read_to_string(&log).expect("every command logged");
    let runs: Vec<(&str, u64)> = runs
        .lines()
        .map(|line| {
            let (name, token) = line.split_once(' ').expect("name and token");
            (name, token.parse().expect("a token"))
        })
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(
        runs[2].0, "writer",
        "the writer ran after both readers: {runs:?}"
    );
    assert_ne!(
        runs[0].1, runs[1].1,
        "each reader had its own token: {runs:?}"
    );
    assert!(
        runs[2].1 > runs[0].1.max(runs[1].1),
        "the writer's token exceeds the readers': {runs:?}"
    );
    let mut observer = registered(&cluster);
    assert_eq!(
        observer.check("catalog", Consistency::Linearizable),
        Ok(Check::Free),
        "every run released the lock when its command ended"
    );
}

#[test]
fn a_lock_command_whose_permits_disagree_with_the_lock_in_use_exits_78_and_runs_nothing() {
    let cluster = Cluster::start("modes-lock-mismatch");
    let scratch = Scratch::new("modes-lock-mismatch-files");
    let mut holder = registered(&cluster);
    let _ = granted(holder.preempt_with("gpu", Claim::semaphore(3)));
    let ran = scratch.0.join("ran");
    let touch = format!("touch '{}'", ran.display());
    for (flags, label) in [
        (&["--permits", "2"][..], "two"),
        (&["--permits", "4", "--exclusive"][..], "four"),
    ] {
        let mut command = lock_command(&cluster, &scratch, ("gpu", label), flags, &touch);
        let mut run = Process(command.spawn().expect("lockstep starts"));
        assert_eq!(
            exit_code(&mut run, "the mismatched lock"),
            Some(78),
            "{flags:?}"
        );
        let stderr = std::fs::read_to_string(scratch.0.join(format!("gpu-{label}.stderr")))
            .expect("its stderr");
        assert!(
            stderr.contains("in use as a semaphore of 3 permits"),
            "{flags:?}: {stderr}"
        );
    }
    assert!(!ran.exists(), "no command ran");
}

#[test]
fn bad_mode_flags_are_refused_before_any_server_is_asked() {
    for (flags, expected) in [
        (&["--permits", "0"][..], "a semaphore has 1 to 64 permits"),
        (&["--permits", "65"][..], "a semaphore has 1 to 64 permits"),
        (
            &["--permits", "many"][..],
            "a semaphore has 1 to 64 permits",
        ),
        (&["--shared", "--exclusive"][..], "cannot be used with"),
    ] {
        let mut args = vec!["lock", "gpu", "--servers", "127.0.0.1:1"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "true"]);
        let output = common::lockstep(&args);
        let stderr = common::text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}
