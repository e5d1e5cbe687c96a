//! Watches over TCP, against three real `lockstep server` processes on free 127.0.0.1 ports:
//! the `watch` and `unwatch` lines typed raw, the library's [`Watch`] iterator, and
//! `lockstep watch`.
//!
//! Stories:
//! - a watch typed on a raw connection to a follower sees a grant and a release with their
//!   indexes; `unwatch` stops it; a wrong secret is refused `unauthorized`, an empty lock name
//!   `bad_request`;
//! - a rogue's watch as another client (wrong secret) or as an id no hello issued is refused,
//!   and its `unwatch` of that client's watch id stops nothing of that client's;
//! - the library's watch yields the starting state, then a grant, a release, a second grant and
//!   that holder's expiry, in log order;
//! - the server the library watches through is killed mid-stream: the watch resumes on another
//!   server, and the indexes it yields go on without a gap or a repeat; paused (SIGSTOP), it
//!   does not answer the watch's `status` after a silence, and the watch resumes elsewhere;
//! - a server restarted from its snapshot answers a watch from index 1 `compacted`;
//! - a closed connection's watches end, freeing a full server;
//! - a watcher that stops reading while thousands of events come is held back, the server
//!   serves everyone else meanwhile, and the watcher then gets every event once, in order;
//! - `lockstep watch` prints a grant and a release another client makes, in order, and exits 0
//!   on SIGTERM; it exits with its own codes for a bad flag and an unreachable cluster.
//!
//! Every process is killed and reaped by a guard even when an assertion fails; nothing is
//! asserted about timing (waits are for what must happen, bounded by a generous deadline).

mod common;

use common::cluster::{CLUSTER_DEADLINE, Cluster};
use common::{Guarded as Process, free_ports};
use lockstep::client::{
    Change, Client, ClientOptions, Preempt, Release, Watch, WatchEvent, WatchTarget, server_status,
};
use lockstep::node::Role;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

const DEADLINE: Duration = CLUSTER_DEADLINE;

fn registered(cluster: &Cluster, ttl: Option<Duration>) -> Client {
    let mut client = cluster.client(ttl);
    client.register().expect("registered");
    client
}

fn granted(client: &mut Client, lock: &str) -> u64 {
    match client.preempt(lock) {
        Ok(Preempt::Granted { token }) => token,
        other => panic!("{lock} should be free: {other:?}"),
    }
}

/// The next item of `watch`, which must come.
fn next_item(watch: &mut Watch) -> WatchEvent {
    let item = watch.poll(Instant::now() + DEADLINE);
    item.expect("the watch goes on")
        .expect("an item before the deadline")
}

/// The next changes of `watch`: each item's changes, flattened, until `count` are in.
fn next_changes(watch: &mut Watch, count: usize) -> Vec<(u64, Change)> {
    let mut seen = Vec::new();
    // Bounded by `count` and the deadline of each item.
    while seen.len() < count {
        match next_item(watch) {
            WatchEvent::Changes { index, changes } => {
                seen.extend(changes.into_iter().map(|change| (index, change.change)));
            }
            state => panic!("a state in the middle of a live watch: {state:?}"),
        }
    }
    seen
}

// ----- the raw protocol -----

/// A connection that types lines and reads them back, like `nc`.
struct Typed {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Typed {
    fn open(address: &str) -> Typed {
        let stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("a read timeout");
        Typed {
            reader: BufReader::new(stream.try_clone().expect("a second handle")),
            writer: stream,
        }
    }

    fn type_line(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("typed");
    }

    fn read_line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a line comes");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON line: {line:?}"))
    }

    /// The next watch line (skipping responses).
    fn read_watch_line(&mut self) -> serde_json::Value {
        // Bounded by the read timeout: each round reads a line or fails.
        loop {
            let line = self.read_line();
            if line.get("watch").is_some() {
                return line;
            }
        }
    }
}

/// A `watch` request line as a person would type it.
fn watch_request(seq: u64, client: u64, secret: &str, id: u64, lock: &str) -> String {
    let who = format!(r#""client":{client},"secret":"{secret}""#);
    format!(r#"{{"seq":{seq},"op":"watch","version":2,{who},"id":{id},"lock":"{lock}"}}"#)
}

/// On a raw connection to a follower: a watch starts from the current state, hears a grant
/// and a release with their log indexes, and stops on `unwatch`; a wrong secret and an empty
/// lock name are refused, each in its own way.
#[test]
fn a_watch_typed_on_a_follower_hears_a_grant_and_a_release_then_stops() {
    let cluster = Cluster::start("watch-raw");
    let mut holder = registered(&cluster, None);
    let credential = holder.credential().expect("registered");
    let (client, secret) = (credential.id.0, credential.secret.to_hex());
    let follower = cluster.leader_and_follower().1;
    let registered_at = holder.last_answer_index().expect("the welcome's index");
    cluster.until_applied(&follower, registered_at);
    let mut typed = Typed::open(&follower);

    typed.type_line(&watch_request(1, client, &secret, 5, "printer"));
    let start = typed.read_watch_line();
    assert_eq!(start["watch"], 5, "{start}");
    assert_eq!(start["start"], "current", "{start}");
    assert_eq!(
        start["state"],
        serde_json::json!([{"lock": "printer", "holders": [], "waiters": 0}])
    );

    let token = granted(&mut holder, "printer");
    let grant = typed.read_watch_line();
    let expected = serde_json::json!([
        {"lock": "printer", "change": "granted", "owner": client, "token": token}
    ]);
    assert_eq!(grant["changes"], expected, "{grant}");
    assert_eq!(grant["index"], token, "a grant's token is its index");
    assert_eq!(holder.release("printer"), Ok(Release::Released));
    let release = typed.read_watch_line();
    let expected = serde_json::json!([{"lock": "printer", "change": "released", "owner": client}]);
    assert_eq!(release["changes"], expected, "{release}");
    assert!(release["index"].as_u64() > Some(token), "{release}");

    typed.type_line(r#"{"seq":2,"op":"unwatch","version":2,"id":5}"#);
    assert_eq!(
        typed.read_watch_line(),
        serde_json::json!({"watch": 5, "end": "stopped"})
    );
    let wrong = "0".repeat(32);
    typed.type_line(&watch_request(3, client, &wrong, 6, "printer"));
    assert_eq!(
        typed.read_watch_line(),
        serde_json::json!({"watch": 6, "end": "unauthorized"})
    );
    typed.type_line(&watch_request(4, client, &secret, 7, ""));
    let refused = typed.read_line();
    assert_eq!(refused["seq"], 4, "{refused}");
    assert_eq!(refused["error"], "bad_request", "{refused}");
}

/// A rogue on a connection of its own attacks c1's watch: it watches as c1 with a wrong
/// secret (`unauthorized`) and as a client no hello issued (`unknown_client`), and sends
/// `unwatch` with the id of c1's watch, which stops nothing but a watch of its own connection
/// (`stopped`, for an id it never had). c1's watch hears every change before and after, and
/// the rogue's connection hears none of them.
#[test]
fn a_forged_watch_and_unwatch_are_refused_and_the_honest_watch_keeps_streaming() {
    let cluster = Cluster::start("watch-forged");
    let mut honest = registered(&cluster, None);
    let credential = honest.credential().expect("registered");
    let (client, secret) = (credential.id.0, credential.secret.to_hex());
    let (leader, _) = cluster.leader_and_follower();
    let mut watcher = Typed::open(&leader);
    watcher.type_line(&watch_request(1, client, &secret, 5, "printer"));
    assert_eq!(watcher.read_watch_line()["start"], "current");
    let first = granted(&mut honest, "printer");
    assert_eq!(watcher.read_watch_line()["index"], first);

    let mut rogue = Typed::open(&leader);
    let wrong = "0".repeat(32);
    rogue.type_line(&watch_request(1, client, &wrong, 5, "printer"));
    assert_eq!(
        rogue.read_watch_line(),
        serde_json::json!({"watch": 5, "end": "unauthorized"})
    );
    let stranger = client + 1_000;
    rogue.type_line(&watch_request(2, stranger, &wrong, 6, ""));
    let refused = rogue.read_line();
    assert_eq!(
        refused["error"], "bad_request",
        "an empty name is refused first: {refused}"
    );
    let prefix = format!(
        r#"{{"seq":3,"op":"watch","version":2,"client":{stranger},"secret":"{wrong}","id":6,"prefix":""}}"#
    );
    rogue.type_line(&prefix);
    assert_eq!(
        rogue.read_watch_line(),
        serde_json::json!({"watch": 6, "end": "unknown_client", "client": stranger})
    );
    rogue.type_line(r#"{"seq":4,"op":"unwatch","version":2,"id":5}"#);
    assert_eq!(
        rogue.read_watch_line(),
        serde_json::json!({"watch": 5, "end": "stopped"})
    );

    // c1's watch goes on: the release and the next grant reach it, in order.
    assert_eq!(honest.release("printer"), Ok(Release::Released));
    let second = granted(&mut honest, "printer");
    let release = watcher.read_watch_line();
    let expected = serde_json::json!([{"lock": "printer", "change": "released", "owner": client}]);
    assert_eq!(
        (&release["watch"], &release["changes"]),
        (&5.into(), &expected)
    );
    let grant = watcher.read_watch_line();
    assert_eq!(
        (&grant["watch"], &grant["index"]),
        (&5.into(), &second.into())
    );
    // And the rogue heard none of it: the next line on its connection is its status answer.
    rogue.type_line(r#"{"seq":5,"op":"status","version":2}"#);
    let answer = rogue.read_line();
    assert_eq!(answer["seq"], 5, "no watch line for the rogue: {answer}");
}

/// A connection to `address` whose socket asks the kernel for a receive buffer of 4 KiB, so
/// that a watcher that stops reading fills its own side at once. (The server's side is the
/// kernel's to size: Linux grows it up to `tcp_wmem`'s maximum, 4 MiB by default, which holds
/// tens of thousands of events before the server's bound of events in flight holds the watch.)
fn connect_with_a_small_receive_buffer(address: &str) -> Typed {
    use std::os::fd::FromRawFd;
    let address: std::net::SocketAddrV4 = address.parse().expect("an IPv4 address");
    let size: libc::c_int = 4096;
    let socket_address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a fresh socket, options and address passed with their own sizes, and the
    // descriptor handed to the TcpStream that owns (and closes) it from then on.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "a socket");
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF set");
        let connected = libc::connect(
            fd,
            (&raw const socket_address).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connected to {address}");
        TcpStream::from_raw_fd(fd)
    };
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("a read timeout");
    Typed {
        reader: BufReader::new(stream.try_clone().expect("a second handle")),
        writer: stream,
    }
}

/// A watcher that stops reading (PROTOCOL.md, `watch`, "a slow reader") while 3,000 locks under
/// its prefix are granted: far more than its own receive buffer holds, so the events wait on
/// the server's side, in the kernel's send buffer and, once that is full, at the node's bound
/// of events in flight. Meanwhile the cluster goes on serving everyone else (every preempt is
/// granted), and when the watcher reads again it gets every grant, once, in log order: never
/// dropped, and never ended (the 3,000 changes fit the 16,384 a server keeps, so it does not
/// fall behind).
#[test]
fn a_watcher_that_stops_reading_is_held_back_and_then_gets_every_event_in_order() {
    const LOCKS: u64 = 3_000;
    let cluster = Cluster::start("watch-slow-reader");
    let mut holder = registered(&cluster, None);
    let credential = holder.credential().expect("registered");
    let (client, secret) = (credential.id.0, credential.secret.to_hex());
    let _ = granted(&mut holder, "warm-up");
    let (leader, _) = cluster.leader_and_follower();
    let mut watcher = connect_with_a_small_receive_buffer(&leader);
    let prefix = format!(
        r#"{{"seq":1,"op":"watch","version":2,"client":{client},"secret":"{secret}","id":1,"prefix":"job-"}}"#
    );
    watcher.type_line(&prefix);
    assert_eq!(watcher.read_watch_line()["start"], "current");

    // The watcher reads nothing from here on, while the library client (which retries
    // through a change of leader) grants every job lock.
    for job in 0..LOCKS {
        let _ = granted(&mut holder, &format!("job-{job}"));
    }

    let mut granted_jobs = std::collections::BTreeSet::new();
    let mut last_index = 0;
    // Bounded by LOCKS events, each read within the read timeout.
    while granted_jobs.len() < LOCKS as usize {
        let line = watcher.read_watch_line();
        let index = line["index"]
            .as_u64()
            .unwrap_or_else(|| panic!("an event: {line}"));
        assert!(
            index > last_index,
            "in log order, none twice: {index} after {last_index}"
        );
        last_index = index;
        for change in line["changes"].as_array().expect("changes") {
            assert_eq!(change["change"], "granted", "{change}");
            let lock = change["lock"].as_str().expect("a lock").to_string();
            assert!(granted_jobs.insert(lock.clone()), "{lock} heard twice");
        }
    }
    let expected: std::collections::BTreeSet<String> =
        (0..LOCKS).map(|job| format!("job-{job}")).collect();
    assert_eq!(granted_jobs, expected);
}

// ----- the library -----

/// The library's watch: the starting state (free), then a grant, a release, a second grant
/// and, once its holder falls silent past its one-second session, that holder's expiry, each
/// at a higher index than the one before.
#[test]
fn the_library_watch_yields_a_grant_a_release_and_an_expiry_in_log_order() {
    let cluster = Cluster::start("watch-library");
    let mut watcher = registered(&cluster, None);
    let mut watch = watcher
        .watch(WatchTarget::Lock("printer".into()), None)
        .expect("a server starts the watch");
    let WatchEvent::State {
        locks, compacted, ..
    } = next_item(&mut watch)
    else {
        panic!("a watch from now starts with the state");
    };
    assert_eq!(compacted, None);
    assert!(
        locks.iter().all(|lock| lock.view.holders.is_empty()),
        "{locks:?}"
    );

    let mut holder = registered(&cluster, Some(Duration::from_secs(1)));
    let owner = holder.client_id().expect("registered");
    let first = granted(&mut holder, "printer");
    assert_eq!(holder.release("printer"), Ok(Release::Released));
    let second = granted(&mut holder, "printer");
    drop(holder); // silent from now on: its session expires

    let seen = next_changes(&mut watch, 4);
    let changes: Vec<Change> = seen.iter().map(|(_, change)| *change).collect();
    assert_eq!(
        changes,
        vec![
            Change::Granted {
                owner,
                token: first
            },
            Change::Released { owner },
            Change::Granted {
                owner,
                token: second
            },
            Change::Expired { owner },
        ]
    );
    let indexes: Vec<u64> = seen.iter().map(|(index, _)| *index).collect();
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "{indexes:?}"
    );
    assert_eq!(indexes[0], first);
    assert_eq!(indexes[2], second);
}

/// The server the watch is served by is killed between two grants: the watch resumes on
/// another server from the index after the last item it yielded, and what it yields after
/// goes on in order with nothing missed or repeated: every grant and release of the story,
/// exactly once.
#[test]
fn the_library_watch_resumes_on_another_server_when_its_server_dies() {
    let mut cluster = Cluster::start("watch-failover");
    let mut watcher = registered(&cluster, None);
    let mut watch = watcher
        .watch(WatchTarget::Prefix("job-".into()), None)
        .expect("a server starts the watch");
    assert!(matches!(next_item(&mut watch), WatchEvent::State { .. }));
    let mut holder = registered(&cluster, None);
    let owner = holder.client_id().expect("registered");

    let before = granted(&mut holder, "job-1");
    let heard = next_changes(&mut watch, 1);
    assert_eq!(heard[0].0, before);
    let watched_on = watch.server().expect("connected").to_string();
    cluster.kill(&watched_on);

    // Written while the watch has no server, or a new one: it must hear each exactly once.
    let mut expected = vec![(
        before,
        Change::Granted {
            owner,
            token: before,
        },
    )];
    for lock in ["job-2", "job-3"] {
        let token = granted(&mut holder, lock);
        expected.push((token, Change::Granted { owner, token }));
    }
    assert_eq!(holder.release("job-1"), Ok(Release::Released));
    let after = next_changes(&mut watch, 3);
    assert_ne!(watch.server(), Some(watched_on.as_str()), "it moved on");
    let mut all = heard;
    all.extend(after);
    assert_eq!(all[..3], expected[..], "{}", cluster.logs());
    assert_eq!(all[3].1, Change::Released { owner });
    let indexes: Vec<u64> = all.iter().map(|(index, _)| *index).collect();
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, none twice: {indexes:?}"
    );
}

/// A paused server (SIGSTOP) keeps the watch's connection open and says nothing: after a
/// second of silence the watch asks it for its status, hears no answer, and resumes on another
/// server, where the release made meanwhile reaches it, once.
#[test]
fn the_library_watch_leaves_a_paused_server_and_resumes_on_another() {
    let cluster = Cluster::start("watch-paused");
    let mut watcher = registered(&cluster, None);
    let mut watch = watcher
        .watch(WatchTarget::Lock("printer".into()), None)
        .expect("a server starts the watch");
    watch.set_keepalive_every(Duration::from_secs(1));
    assert!(matches!(next_item(&mut watch), WatchEvent::State { .. }));
    let mut holder = registered(&cluster, None);
    let owner = holder.client_id().expect("registered");
    let token = granted(&mut holder, "printer");
    let grant = Change::Granted { owner, token };
    assert_eq!(next_changes(&mut watch, 1), vec![(token, grant)]);

    let paused = watch.server().expect("connected").to_string();
    cluster.pause(&paused);
    assert_eq!(holder.release("printer"), Ok(Release::Released));
    let released = next_changes(&mut watch, 1);
    assert_eq!(released[0].1, Change::Released { owner }, "{released:?}");
    assert!(released[0].0 > token, "{released:?}");
    assert_ne!(
        watch.server(),
        Some(paused.as_str()),
        "it left the paused server"
    );
}

// ----- lockstep watch -----

/// The lines a child prints on stdout, read on a thread of their own so that a silent child
/// fails the test at the deadline instead of hanging it.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("a piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

fn next_json(lines: &std::sync::mpsc::Receiver<String>) -> serde_json::Value {
    let line = lines
        .recv_timeout(DEADLINE)
        .expect("a line before the deadline");
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("a JSON line: {line:?}"))
}

/// `lockstep watch printer --json`: the state first, then another client's grant and release
/// of `printer`, in order, with their indexes; SIGTERM ends it with status 0. A client id the
/// cluster never issued is refused: exit 1.
#[test]
fn lockstep_watch_prints_a_grant_and_a_release_in_order_and_exits_0_on_sigterm() {
    let cluster = Cluster::start("watch-cli");
    let servers = cluster.addresses().join(",");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lockstep"));
    command
        .args(["watch", "printer", "--json", "--servers", &servers])
        .env_remove("LOCKSTEP_CLIENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watcher = Process(command.spawn().expect("lockstep watch starts"));
    let lines = stdout_lines(&mut watcher.0);
    let state = next_json(&lines);
    assert_eq!(state["state"], "current", "{state}");
    assert_eq!(
        state["locks"],
        serde_json::json!([{"lock": "printer", "holders": [], "waiters": 0}])
    );

    let mut other = registered(&cluster, None);
    let owner = other.client_id().expect("registered").0;
    let token = granted(&mut other, "printer");
    assert_eq!(other.release("printer"), Ok(Release::Released));
    let grant = next_json(&lines);
    let expected = serde_json::json!({
        "index": token, "lock": "printer", "change": "granted", "owner": owner, "token": token
    });
    assert_eq!(grant, expected);
    let release = next_json(&lines);
    assert_eq!(release["change"], "released", "{release}");
    assert_eq!(release["owner"], owner, "{release}");
    assert!(release["index"].as_u64() > Some(token), "{release}");

    common::signal(watcher.0.id(), libc::SIGTERM);
    let status = watcher.0.wait().expect("it ends");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(
        watcher.0.stderr.as_mut().expect("a piped stderr"),
        &mut stderr,
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("registered as client"), "{stderr}");

    let stranger = format!("70:{}", "0".repeat(32));
    let refused = common::lockstep(&[
        "watch",
        "printer",
        "--servers",
        &servers,
        "--client",
        &stranger,
        "--timeout",
        "2s",
    ]);
    let stderr = common::text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown_client"), "{stderr}");
}

/// A bad flag is exit 2, naming it; a cluster nobody answers for is exit 3 after --timeout.
#[test]
fn lockstep_watch_exits_2_on_a_bad_flag_and_3_on_an_unreachable_cluster() {
    let bad = common::lockstep(&[
        "watch",
        "printer",
        "--from",
        "soon",
        "--servers",
        "127.0.0.1:1",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", common::text(&bad.stderr));
    assert!(common::text(&bad.stderr).contains("--from"));
    let empty = common::lockstep(&["watch", "", "--servers", "127.0.0.1:1"]);
    assert_eq!(
        empty.status.code(),
        Some(2),
        "{}",
        common::text(&empty.stderr)
    );
    assert!(common::text(&empty.stderr).contains("the lock name is empty"));

    let port = free_ports(1)[0]; // free a moment ago: nobody listens there
    let address = format!("127.0.0.1:{port}");
    let credential = format!("7:{}", "0".repeat(32));
    let unreachable = common::lockstep(&[
        "watch",
        "printer",
        "--servers",
        &address,
        "--client",
        &credential,
        "--timeout",
        "1s",
    ]);
    let stderr = common::text(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no server could be reached"), "{stderr}");
}

/// A closed connection's watches end on the server: 64 connections holding 16 watches each
/// fill the server (1,024: a 65th connection's watch is refused `too_many_watches` with that
/// max); once they close, 64 new connections get their 16 each again.
#[test]
fn a_closed_connections_watches_end_so_the_server_serves_new_ones() {
    let cluster = Cluster::start("watch-close");
    let mut holder = registered(&cluster, None);
    let credential = holder.credential().expect("registered");
    let (client, secret) = (credential.id.0, credential.secret.to_hex());
    let _ = holder
        .preempt("printer")
        .expect("the leader knows the client");
    let leader = (cluster.addresses().into_iter())
        .find(|address| {
            server_status(address, None, Duration::from_secs(2))
                .is_ok_and(|report| report.status.role == Role::Leader)
        })
        .expect("a leader");
    let watch_line = |id: u64| watch_request(id, client, &secret, id, "printer");
    let mut full: Vec<Typed> = (0..64).map(|_| Typed::open(&leader)).collect();
    for connection in &mut full {
        for id in 0..16 {
            connection.type_line(&watch_line(id));
        }
        for id in 0..16 {
            let start = connection.read_watch_line();
            assert_eq!(
                (&start["watch"], &start["start"]),
                (&id.into(), &"current".into())
            );
        }
    }
    let mut one_more = Typed::open(&leader);
    one_more.type_line(&watch_line(0));
    let refused = one_more.read_watch_line();
    assert_eq!(
        refused,
        serde_json::json!({"watch": 0, "end": "too_many_watches", "max": 1024})
    );
    drop(full);

    // The server hears of each close from the connection's reader, in its own time: a watch
    // refused for the server's bound meanwhile is asked for again, until the deadline.
    let give_up_at = Instant::now() + DEADLINE;
    let mut refilled = Vec::new();
    for _ in 0..64 {
        let mut connection = Typed::open(&leader);
        for id in 0..16 {
            // Bounded by the deadline.
            loop {
                connection.type_line(&watch_line(id));
                let start = connection.read_watch_line();
                if start["start"] == "current" {
                    break;
                }
                assert_eq!(start["max"], 1024, "{start}");
                assert!(Instant::now() < give_up_at, "closed watches never ended");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        refilled.push(connection); // open until the test ends
    }
    assert_eq!(refilled.len(), 64);
}

/// A server restarted from its snapshot keeps no change at or below it: the library's watch
/// from index 1 on that server gets the state to start from, marked compacted, as a typed item,
/// and every lock in it is one the story's client took; the watch then goes on live.
#[test]
fn a_library_watch_from_an_index_the_server_no_longer_keeps_starts_from_a_compacted_state() {
    let flags: &'static [&'static str] = &["--snapshot-entries", "4"];
    let mut cluster = Cluster::start_with("watch-compacted", flags);
    let mut holder = registered(&cluster, None);
    let owner = holder.client_id().expect("registered");
    for lock in ["a", "b", "c", "d", "e", "f"] {
        let _ = granted(&mut holder, lock);
    }
    let last = holder.last_answer_index().expect("an answer");
    let restarted = cluster.addresses()[2].clone();
    cluster.until_applied(&restarted, last);
    cluster.kill(&restarted);
    cluster.restart(&restarted);

    let options = ClientOptions {
        operation_timeout: DEADLINE,
        credential: holder.credential(),
        ..ClientOptions::default()
    };
    let mut watcher = Client::new(vec![restarted], options).expect("an address");
    let mut watch = watcher
        .watch(WatchTarget::Prefix(String::new()), Some(1))
        .expect("the restarted server starts the watch");
    let WatchEvent::State {
        index,
        locks,
        compacted: Some(kept_after),
    } = next_item(&mut watch)
    else {
        panic!("a watch from 1 on a server restarted from a snapshot is compacted");
    };
    assert!(
        kept_after >= 4 && kept_after <= index,
        "{kept_after} {index}"
    );
    for lock in &locks {
        let holders: Vec<_> = lock.view.holders.iter().map(|h| h.owner).collect();
        assert_eq!(holders, vec![owner], "{locks:?}");
    }
    // Then live, from after the state: the grants the server applied while it caught up (if
    // it was behind), then a new one, each once and in order.
    let token = granted(&mut holder, "g");
    let mut after = Vec::new();
    // Bounded by the story's seven grants and each item's deadline.
    while after.last().is_none_or(|(at, _)| *at < token) {
        after.extend(next_changes(&mut watch, 1));
        assert!(after.len() <= 7, "{after:?}");
    }
    assert_eq!(
        after.last(),
        Some(&(token, Change::Granted { owner, token }))
    );
    let indexes: Vec<u64> = after.iter().map(|(at, _)| *at).collect();
    assert!(indexes[0] > index, "{indexes:?} after {index}");
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "{indexes:?}"
    );
    let grants = after
        .iter()
        .all(|(_, change)| matches!(change, Change::Granted { .. }));
    assert!(grants, "{after:?}");
}
