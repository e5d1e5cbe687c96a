//! Real server processes over real TCP: the built `lockstep` binary, three of them on free
//! 127.0.0.1 ports, spoken to with raw NDJSON.
//!
//! Story: a client says hello through s1, takes lock `a` through s2 (a follower forwards it to
//! the leader, or s2 leads), and a linearizable check through s3 sees the grant. The leader is
//! killed with SIGKILL; a new leader answers and still knows the grant. The killed server
//! restarts from its data directory and answers for the grant too.
//!
//! Every spawned process is killed and reaped by a guard, even when an assertion fails. The
//! test never asserts on timing: every wait polls up to a generous deadline.

use lockstep::client::{Check, Client, ClientOptions, Preempt};
use lockstep::node::Consistency;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One server process; dropping it kills and reaps it.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: PathBuf,
    ports: Vec<u16>,
    /// Flags every server gets besides its identity, address, peers and data directory.
    extra_args: Vec<String>,
    /// Flags only server i gets, after `extra_args` (empty for most tests).
    server_args: Vec<Vec<String>>,
    /// Index i is s(i+1); `None` while that server is down.
    servers: Vec<Option<ServerProcess>>,
}

impl Cluster {
    /// Starts three servers on free ports. A port taken between choosing and binding makes a
    /// server exit at once; then the whole cluster is retried on new ports.
    fn start(name: &str) -> Cluster {
        Cluster::start_with(name, &[])
    }

    /// Like `start`, with `extra_args` on every server's command line.
    fn start_with(name: &str, extra_args: &[&str]) -> Cluster {
        Cluster::start_each(name, extra_args, &[])
    }

    /// Like `start_with`, and `server_args[i]` on the command line of server i as well.
    fn start_each(name: &str, extra_args: &[&str], server_args: &[&[&str]]) -> Cluster {
        Cluster::start_prepared(name, extra_args, server_args, &|_| {})
    }

    /// Like `start_each`, with `prepare` run on the new cluster's directories before any server
    /// starts (to lay down data directories as an earlier cluster left them, say).
    fn start_prepared(
        name: &str,
        extra_args: &[&str],
        server_args: &[&[&str]],
        prepare: &dyn Fn(&Cluster),
    ) -> Cluster {
        for _attempt in 0..5 {
            let dir = scratch_dir(name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut cluster = Cluster {
                dir,
                ports: free_ports(3),
                extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
                server_args: server_args
                    .iter()
                    .map(|args| args.iter().map(|arg| arg.to_string()).collect())
                    .collect(),
                servers: Vec::new(),
            };
            prepare(&cluster);
            for index in 0..3 {
                let process = cluster.spawn(index);
                cluster.servers.push(Some(process));
            }
            if cluster.wait_until_listening() {
                return cluster;
            }
        }
        panic!("could not start a cluster on free ports after 5 attempts");
    }

    fn spawn(&self, index: usize) -> ServerProcess {
        let id = format!("s{}", index + 1);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(index))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        command
            .args(["server", "--id", &id])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[index])])
            .arg("--data-dir")
            .arg(self.dir.join(&id))
            .args(&self.extra_args)
            .args(self.server_args.get(index).into_iter().flatten())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (peer, port) in self.ports.iter().enumerate() {
            if peer != index {
                command.args(["--peer", &format!("s{}=127.0.0.1:{port}", peer + 1)]);
            }
        }
        ServerProcess {
            child: command.spawn().expect("the lockstep binary starts"),
        }
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("s{}.log", index + 1))
    }

    /// True once every running server accepts connections; false if one exited.
    fn wait_until_listening(&mut self) -> bool {
        let deadline = Instant::now() + DEADLINE;
        for index in 0..self.servers.len() {
            let Some(process) = self.servers[index].as_mut() else {
                continue;
            };
            let address = SocketAddr::from(([127, 0, 0, 1], self.ports[index]));
            loop {
                if let Ok(Some(_)) = process.child.try_wait() {
                    return false;
                }
                if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                    break;
                }
                assert!(Instant::now() < deadline, "s{} never listened", index + 1);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        true
    }

    /// The server that most recently logged winning an election (highest term).
    fn latest_leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for index in 0..self.servers.len() {
            let log = std::fs::read_to_string(self.log_path(index)).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains("is now the leader")) {
                let term = line
                    .split("term=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(term) = term
                    && best.is_none_or(|(t, _)| term > t)
                {
                    best = Some((term, index));
                }
            }
        }
        best.map(|(_, index)| index)
    }

    fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.join(format!("s{}", index + 1))
    }

    /// The client addresses, as `lockstep client --servers` takes them.
    fn addresses(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A library client talking to every server.
    fn client(&self) -> Client {
        let servers = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let options = ClientOptions {
            operation_timeout: DEADLINE,
            ..ClientOptions::default()
        };
        Client::new(servers, options).expect("valid addresses")
    }

    /// Restarts server `index` from its data directory and waits until it listens.
    fn restart(&mut self, index: usize) {
        let process = self.spawn(index);
        self.servers[index] = Some(process);
        assert!(
            self.wait_until_listening(),
            "s{} restarts\n{}",
            index + 1,
            self.logs()
        );
    }

    /// Removes the cluster's directory once the test passed (a failing test keeps the logs).
    fn finish(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn logs(&self) -> String {
        (0..self.servers.len())
            .map(|i| {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                format!("--- s{} ---\n{log}", i + 1)
            })
            .collect()
    }
}

/// A directory of the test target's scratch space named after `name`, this process and the
/// clock, so that tests and runs never share one.
fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()))
}

/// A server of one, s1, on `port` with its data in `data_dir`, output discarded.
fn lone_server(port: u16, data_dir: &Path, extra_args: &[&str]) -> ServerProcess {
    ServerProcess {
        child: Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args([
                "server",
                "--id",
                "s1",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra_args)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    }
}

/// Ports that were free a moment ago (all bound at once, so they differ).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One NDJSON connection.
struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(port: u16) -> std::io::Result<Connection> {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    fn read_reply(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&line).map_err(|e| std::io::Error::other(format!("{e}: {line}")))
    }

    fn request(&mut self, request: &Value) -> std::io::Result<Value> {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        self.send_raw(&line)?;
        self.read_reply()
    }
}

/// Sends `request` to `port` until it gets an `ok`, resending the same seq after errors,
/// timeouts and refused connections. Adopts a `term` the cluster reports, when it does.
fn until_ok(port: u16, mut request: Value, what: &str, cluster: &Cluster) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        match Connection::open(port).and_then(|mut c| c.request(&request)) {
            Ok(reply) if reply.get("ok").is_some() => return reply,
            Ok(reply) => {
                if let Some(term) = reply.get("term").and_then(Value::as_u64)
                    && term > 0
                {
                    request["term"] = json!(term);
                }
                last = reply.to_string();
            }
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what}: no ok answer within {DEADLINE:?}; last: {last}\n{}",
        cluster.logs()
    );
}

#[test]
fn three_servers_serve_survive_a_leader_kill_and_restart_from_disk() {
    let mut cluster = Cluster::start("smoke");
    let ports = cluster.ports.clone();

    let welcome = until_ok(
        ports[0],
        json!({"seq": 1, "op": "hello", "version": 2}),
        "hello via s1",
        &cluster,
    );
    assert_eq!(welcome["ok"], "welcome");
    let client = welcome["client"].as_u64().expect("a client id");
    let secret = welcome["secret"].clone();

    let preempt = json!({"seq": 1, "op": "preempt", "version": 2, "client": client,
                         "secret": secret, "lock": "a"});
    let granted = until_ok(ports[1], preempt, "preempt via s2", &cluster);
    assert_eq!(granted["ok"], "granted", "{granted}");
    let token = granted["token"].as_u64().expect("a fencing token");

    let check = |seq: u64| {
        json!({"seq": seq, "op": "check", "version": 2, "client": client, "secret": secret,
               "lock": "a", "consistency": "linearizable"})
    };
    let owner = until_ok(ports[2], check(2), "linearizable check via s3", &cluster);
    assert_eq!(owner["ok"], "owner", "{owner}");
    assert_eq!(owner["owner"].as_u64(), Some(client));
    assert_eq!(owner["token"].as_u64(), Some(token));

    // Kill the leader without warning.
    let leader = cluster
        .latest_leader()
        .expect("some server logged winning an election");
    cluster.servers[leader] = None;
    let survivor = (leader + 1) % 3;

    let after_kill = until_ok(
        ports[survivor],
        check(3),
        "check after the leader died",
        &cluster,
    );
    assert_holds(&after_kill, client, token);

    // A write needs a new leader: a second client is refused the held lock.
    let other = until_ok(
        ports[survivor],
        json!({"seq": 1, "op": "hello", "version": 2}),
        "hello 2",
        &cluster,
    );
    let other_secret = other["secret"].clone();
    let other = other["client"].as_u64().unwrap();
    let preempt = json!({"seq": 1, "op": "preempt", "version": 2, "client": other,
                         "secret": other_secret, "lock": "a"});
    let refused = until_ok(
        ports[survivor],
        preempt,
        "preempt by another client",
        &cluster,
    );
    assert_eq!(refused["ok"], "held_by", "{refused}");
    assert_eq!(refused["owner"].as_u64(), Some(client));

    // The killed server comes back from its data directory and answers for the grant.
    let restarted = cluster.spawn(leader);
    cluster.servers[leader] = Some(restarted);
    assert!(
        cluster.wait_until_listening(),
        "the killed server restarts\n{}",
        cluster.logs()
    );
    let from_disk = until_ok(
        ports[leader],
        check(4),
        "check via the restarted server",
        &cluster,
    );
    assert_holds(&from_disk, client, token);
    let restart_log = std::fs::read_to_string(cluster.log_path(leader)).unwrap();
    assert!(
        restart_log.contains("fresh=false"),
        "the restart recovered its data directory\n{restart_log}"
    );

    cluster.finish();
}

#[test]
fn bad_client_input_gets_errors_and_a_peer_of_another_cluster_is_refused() {
    let cluster = Cluster::start("bad-input");
    let port = cluster.ports[0];
    let mut connection = Connection::open(port).unwrap();

    connection.send_raw(b"this is not json\n").unwrap();
    let reply = connection.read_reply().unwrap();
    assert_eq!(reply["error"], "bad_request", "{reply}");

    connection
        .send_raw(b"{\"seq\":5,\"op\":\"fly\",\"version\":2}\n")
        .unwrap();
    let reply = connection.read_reply().unwrap();
    assert_eq!(reply["error"], "bad_request", "{reply}");
    assert_eq!(reply["seq"], 5);

    let mut long_line = vec![b'x'; 70 * 1024];
    long_line.push(b'\n');
    connection.send_raw(&long_line).unwrap();
    let reply = connection.read_reply().unwrap();
    assert_eq!(reply["error"], "bad_request", "{reply}");

    // The same connection still serves a good request.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let reply = connection
            .request(&json!({"seq": 9, "op": "hello", "version": 2}))
            .unwrap();
        if reply["ok"] == "welcome" {
            break;
        }
        assert!(Instant::now() < deadline, "no welcome: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A server of another cluster is told why it is refused.
    use lockstep::net::peer::frame::{FrameDecoder, PeerFrame, decode_peer_frame};
    use lockstep::net::peer::handshake::Handshake;
    use lockstep::node::ServerId;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let opening = Handshake::new("another-cluster", ServerId(2), ServerId(1)).encode_opening();
    stream.write_all(&opening).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let frames = FrameDecoder::new().feed(&answer).unwrap();
    match decode_peer_frame(&frames[0]).unwrap() {
        PeerFrame::Refused { reason } => assert!(reason.contains("cluster"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let _ = stream.shutdown(Shutdown::Both);

    cluster.finish();
}

/// Runs the binary to completion with a deadline; returns its exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = ServerProcess {
        child: Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{args:?} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Stdout, then stderr. Both are short, far below a pipe's buffer, so polling for the
    // exit before reading cannot deadlock.
    let mut output = String::new();
    child
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    (status.code(), output)
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let (code, stderr) = run_to_exit(&["server", "--id", "s1", "--data-dir", "unused"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
    let (code, stderr) = run_to_exit(&[
        "server",
        "--id",
        "s1",
        "--listen",
        "127.0.0.1:1",
        "--data-dir",
        "unused",
        "--peer",
        "s1=127.0.0.1:2",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("own peer"), "{stderr}");
}

#[test]
fn a_log_corrupt_in_the_middle_refuses_to_start_and_names_file_and_offset() {
    let dir = scratch_dir("corrupt");
    let data_dir = dir.join("s1");
    let data_dir_text = data_dir.display().to_string();
    // A one-server cluster elects itself and writes a few records.
    let mut answered = false;
    for _attempt in 0..5 {
        let port = free_ports(1)[0];
        let server = lone_server(port, &data_dir, &[]);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline && !answered {
            let reply = Connection::open(port)
                .and_then(|mut c| c.request(&json!({"seq": 1, "op": "hello", "version": 2})));
            answered = reply.is_ok_and(|r| r["ok"] == "welcome");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(server);
        if answered {
            break;
        }
    }
    assert!(answered, "a one-server cluster answers hello");
    let wal = data_dir.join("wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    // Header (32 bytes), then the first record's length and checksum (8): damage its payload.
    assert!(bytes.len() > 100, "several records were written");
    bytes[32 + 8 + 2] ^= 0xff;
    std::fs::write(&wal, &bytes).unwrap();

    let (code, stderr) = run_to_exit(&[
        "server",
        "--id",
        "s1",
        "--listen",
        "127.0.0.1:1",
        "--data-dir",
        &data_dir_text,
    ]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(&wal.display().to_string()), "{stderr}");
    assert!(stderr.contains("offset 32"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_idle_client_connection_is_closed_after_the_idle_timeout() {
    let dir = scratch_dir("idle");
    for _attempt in 0..5 {
        let port = free_ports(1)[0];
        let mut server = lone_server(port, &dir.join("s1"), &["--client-idle-timeout", "1s"]);
        let deadline = Instant::now() + DEADLINE;
        let connection = loop {
            if let Ok(connection) = Connection::open(port) {
                break Some(connection);
            }
            if server.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break None; // lost the port race: try another port
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(mut connection) = connection else {
            continue;
        };
        // Send nothing: the server closes the connection (EOF), long before our deadline.
        connection
            .writer
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut byte = [0u8; 1];
        let read = connection.reader.get_mut().read(&mut byte);
        assert!(
            matches!(read, Ok(0)),
            "expected the server to close: {read:?}"
        );
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    panic!("could not start a server on a free port after 5 attempts");
}

/// `reply` (an `owner` answer to a check) names `client` with fencing token `token`.
fn assert_holds(reply: &Value, client: u64, token: u64) {
    assert_eq!(reply["owner"].as_u64(), Some(client), "{reply}");
    assert_eq!(reply["token"].as_u64(), Some(token), "{reply}");
}

/// Who holds `lock`, asked with a linearizable check through `client`.
fn holder(client: &mut Client, lock: &str) -> Option<(u64, u64)> {
    match client.check(lock, Consistency::Linearizable) {
        Ok(Check::Owner { owner, token }) => Some((owner.0, token)),
        Ok(Check::Free) => None,
        Ok(shared @ Check::Shared { .. }) => panic!("nobody here claims {lock} shared: {shared:?}"),
        Err(error) => panic!("check of {lock}: {error}"),
    }
}

fn grant(client: &mut Client, lock: &str) -> u64 {
    match client.preempt(lock) {
        Ok(Preempt::Granted { token }) => token,
        other => panic!("preempt of {lock}: {other:?}"),
    }
}

/// Every server dies at once (SIGKILL, no warning) and comes back from its data directory:
/// every acknowledged grant, its fencing token and the deduplication table survive, so a
/// retry of an already applied request still gets its original answer.
#[test]
fn restarting_every_server_recovers_locks_and_sessions_from_disk() {
    let mut cluster = Cluster::start("restart-all");
    let mut alice = cluster.client();
    let mut bob = cluster.client();
    let a = grant(&mut alice, "a");
    let b = grant(&mut bob, "b");
    let bob_preempt_seq = bob.last_seq();
    let c = grant(&mut alice, "c");
    assert!(matches!(
        alice.release("c"),
        Ok(lockstep::client::Release::Released)
    ));
    let alice_id = alice.client_id().expect("registered").0;
    let bob_id = bob.client_id().expect("registered").0;

    for index in 0..3 {
        cluster.servers[index] = None;
    }
    for index in 0..3 {
        cluster.restart(index);
    }

    let mut observer = cluster.client();
    assert_eq!(holder(&mut observer, "a"), Some((alice_id, a)));
    assert_eq!(holder(&mut observer, "b"), Some((bob_id, b)));
    assert_eq!(
        holder(&mut observer, "c"),
        None,
        "c was released before the crash (token {c})"
    );

    // A late retry of Bob's preempt of `b` (his latest request) is answered from the
    // recovered session table, with the original token and no second grant.
    let bob_secret = bob.credential().expect("registered").secret.to_hex();
    let retry = json!({"seq": bob_preempt_seq, "op": "preempt", "version": 2, "client": bob_id,
                       "secret": bob_secret, "lock": "b"});
    let answer = until_ok(
        cluster.ports[0],
        retry,
        "retry of bob's first preempt",
        &cluster,
    );
    assert_eq!(answer["ok"], "granted", "{answer}");
    assert_eq!(answer["token"].as_u64(), Some(b));
    for index in 0..3 {
        let log = std::fs::read_to_string(cluster.log_path(index)).unwrap();
        assert!(
            log.contains("fresh=false"),
            "s{} recovered\n{log}",
            index + 1
        );
    }
    cluster.finish();
}

/// A crash in the middle of an append leaves a torn record at the end of the log. On start
/// the server finds it, cuts the log there with a warning naming the file and offset, and,
/// since it cannot tell a torn record from a rotted one that it had acknowledged, repairs its
/// log from its peers: it catches up with the cluster and answers for the locks.
#[test]
fn a_torn_final_wal_record_is_truncated_on_start() {
    let mut cluster = Cluster::start("torn-tail");
    let mut client = cluster.client();
    let token = grant(&mut client, "a");
    let credential = client.credential().expect("registered");
    let owner = credential.id.0;
    let leader = cluster.latest_leader().expect("a leader");
    let victim = (leader + 1) % 3;
    cluster.servers[victim] = None;

    // Half a record where the next append would go: a length and a checksum promising 40
    // payload bytes, and 3 of them. (The log's file is preallocated; the records end where
    // the first zero length is.)
    let wal_path = cluster.data_dir(victim).join("wal");
    let mut bytes = std::fs::read(&wal_path).unwrap();
    let mut end = 32; // the file header
    while end + 8 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        end += 8 + length;
    }
    let torn = [40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'{', b'"', b'h'];
    if bytes.len() < end + torn.len() {
        bytes.resize(end + torn.len(), 0);
    }
    bytes[end..end + torn.len()].copy_from_slice(&torn);
    std::fs::write(&wal_path, &bytes).unwrap();

    cluster.restart(victim);
    let log = std::fs::read_to_string(cluster.log_path(victim)).unwrap();
    let warning = format!("damaged record at byte offset {end}");
    assert!(log.contains(&warning), "the cut is reported\n{log}");
    assert!(log.contains("repairing from peers"), "{log}");

    // The restarted server serves: a local check through it alone sees the grant once it
    // has caught up (the client's seen_index makes it wait until it has).
    let mut through_victim = Client::new(
        vec![format!("127.0.0.1:{}", cluster.ports[victim])],
        ClientOptions {
            credential: Some(credential),
            operation_timeout: DEADLINE,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match through_victim.check("a", Consistency::Local) {
            Ok(Check::Owner { owner: o, token: t }) => {
                assert_eq!((o.0, t), (owner, token));
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "never caught up: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    cluster.finish();
}

/// Protocol-aware recovery, for real: a follower's log rots in the middle, in a record of
/// entries the cluster committed. Where a lone server must refuse to start, this one cuts its
/// log before the damage, says at WARN what it dropped (file, offset, indexes), votes for no
/// one while a leader gives back what it lost, and says so when it is repaired. The cluster
/// keeps every lock throughout, and the server serves them again.
#[test]
fn a_followers_wal_corrupt_in_the_middle_is_repaired_from_its_peers() {
    let mut cluster = Cluster::start("repair-middle");
    let mut alice = cluster.client();
    let a = grant(&mut alice, "a");
    let b = grant(&mut alice, "b");
    let c = grant(&mut alice, "c");
    let credential = alice.credential().expect("registered");
    let owner = credential.id.0;
    let leader = cluster.latest_leader().expect("a leader");
    let victim = (leader + 1) % 3;
    cluster.servers[victim] = None;

    // Damage the payload of the log's second record (an append, the grants are after it).
    let wal_path = cluster.data_dir(victim).join("wal");
    let mut bytes = std::fs::read(&wal_path).unwrap();
    let first_length = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
    let second = 32 + 8 + first_length;
    let second_length = u32::from_le_bytes(bytes[second..second + 4].try_into().unwrap()) as usize;
    assert!(
        bytes[second + 8 + second_length..]
            .iter()
            .any(|&byte| byte != 0),
        "records follow the damaged one: it is in the middle"
    );
    bytes[second + 8 + 1] ^= 0xff;
    std::fs::write(&wal_path, &bytes).unwrap();

    cluster.restart(victim);
    let log = std::fs::read_to_string(cluster.log_path(victim)).unwrap();
    let cut = format!("damaged record at byte offset {second}");
    assert!(log.contains(&cut), "the cut is reported\n{log}");
    assert!(log.contains(&wal_path.display().to_string()), "{log}");
    assert!(
        log.contains("a valid record followed at byte offset"),
        "{log}"
    );
    assert!(log.contains("votes for no one"), "{log}");

    let mut observer = cluster.client();
    assert_eq!(holder(&mut observer, "a"), Some((owner, a)));
    assert_eq!(holder(&mut observer, "b"), Some((owner, b)));
    assert_eq!(holder(&mut observer, "c"), Some((owner, c)));
    wait_for_log(&cluster, victim, "repaired its damaged log");

    // Repaired, it serves the locks itself: a local check through it alone sees the grants.
    let mut through_victim = Client::new(
        vec![format!("127.0.0.1:{}", cluster.ports[victim])],
        ClientOptions {
            credential: Some(credential),
            operation_timeout: DEADLINE,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        match through_victim.check("c", Consistency::Local) {
            Ok(Check::Owner { owner: o, token: t }) => {
                assert_eq!((o.0, t), (owner, c));
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "never caught up: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    cluster.finish();
}

/// With compaction on, a server that was down while the cluster committed many entries
/// comes back behind the compaction point: the leader sends it the snapshot, and it writes
/// one of its own to disk.
#[test]
fn a_server_back_from_the_dead_catches_up_by_snapshot() {
    let mut cluster = Cluster::start_with("snapshot", &["--snapshot-entries", "20"]);
    let mut client = cluster.client();
    let leader = cluster.latest_leader().unwrap_or(0);
    let victim = (leader + 1) % 3;
    cluster.servers[victim] = None;
    let mut token = 0;
    for round in 0..30 {
        token = grant(&mut client, "a");
        if round < 29 {
            assert!(matches!(
                client.release("a"),
                Ok(lockstep::client::Release::Released)
            ));
        }
    }
    cluster.restart(victim);
    let snapshot = cluster.data_dir(victim).join("snapshot");
    let deadline = Instant::now() + DEADLINE;
    while !snapshot.exists() {
        assert!(
            Instant::now() < deadline,
            "no snapshot at {}\n{}",
            snapshot.display(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let owner = client.client_id().unwrap().0;
    let mut observer = cluster.client();
    assert_eq!(holder(&mut observer, "a"), Some((owner, token)));
    // And it serves from the installed state after a restart of its own.
    cluster.servers[victim] = None;
    cluster.restart(victim);
    let log = std::fs::read_to_string(cluster.log_path(victim)).unwrap();
    assert!(log.contains("snapshot_index="), "{log}");
    cluster.finish();
}

/// `lockstep client` against a real cluster: a grant exits 0, a refusal 1.
#[test]
fn the_client_command_exits_0_for_a_grant_and_1_for_a_refusal() {
    let cluster = Cluster::start("client-cli");
    let servers = cluster.addresses();
    let (code, output) = run_to_exit(&["client", "--servers", &servers, "preempt", "door"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("fencing token"), "{output}");
    let (code, output) = run_to_exit(&["client", "--servers", &servers, "preempt", "door"]);
    assert_eq!(code, Some(1), "another client is refused: {output}");
    assert!(output.contains("held"), "{output}");
    let (code, output) = run_to_exit(&["client", "--servers", &servers, "release", "door"]);
    assert_eq!(code, Some(1), "a non-owner cannot release: {output}");
    cluster.finish();
}

/// `lockstep lock` holds the lock while its command runs (the command sees the fencing token
/// and, asking the cluster itself, finds the lock held), releases it afterwards even when
/// the command fails, and exits with the command's code.
#[test]
fn the_lock_command_runs_a_command_under_the_lock_and_releases_it() {
    let cluster = Cluster::start("lock-cli");
    let servers = cluster.addresses();
    let scratch = cluster.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let script = format!(
        "echo \"$LOCKSTEP_FENCING_TOKEN\" > {token}; \
         {binary} client --servers {servers} check printer --linearizable > {inside}; exit 3",
        token = scratch.join("token").display(),
        inside = scratch.join("inside").display(),
        binary = env!("CARGO_BIN_EXE_lockstep"),
    );
    let (code, output) = run_to_exit(&[
        "lock",
        "printer",
        "--servers",
        &servers,
        "--wait",
        "30s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, Some(3), "the command's own exit code: {output}");
    let token = std::fs::read_to_string(scratch.join("token")).unwrap();
    let token: u64 = token.trim().parse().expect("a numeric fencing token");
    let inside = std::fs::read_to_string(scratch.join("inside")).unwrap();
    assert!(
        inside.contains(&format!("fencing token {token}")),
        "inside the command the lock is held with its token: {inside}"
    );

    let mut observer = cluster.client();
    assert_eq!(
        holder(&mut observer, "printer"),
        None,
        "released after the command failed"
    );
    cluster.finish();
}

/// A cluster secret file with `content`, readable by its owner only, in a scratch directory
/// of its own (so that `Cluster::start_with` may remove and remake the cluster's).
fn secret_file(name: &str, content: &str) -> PathBuf {
    let dir = scratch_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cluster-secret");
    std::fs::write(&path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

const SECRET: &str = "c2VjcmV0IG9mIHRoZSBjbHVzdGVyIHVuZGVyIHRlc3QsIDMyKyBieXRlcw==\n";
const OTHER_SECRET: &str = "b3RoZXIgY2x1c3RlcidzIHNlY3JldCwgYWxzbyAzMiBieXRlcyBvciBtb3Jl\n";

/// Polls server `index`'s log until it holds `needle`; panics with every log at the deadline.
fn wait_for_log(cluster: &Cluster, index: usize, needle: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = std::fs::read_to_string(cluster.log_path(index)).unwrap_or_default();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "s{} never logged {needle:?}\n{}",
            index + 1,
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three servers sharing a cluster secret prove it to each other, elect a leader and serve.
#[test]
fn a_cluster_with_a_shared_secret_elects_a_leader_and_serves() {
    let secret = secret_file("shared-secret-file", SECRET);
    let secret_arg = secret.display().to_string();
    let cluster = Cluster::start_with("shared-secret", &["--cluster-secret-file", &secret_arg]);
    let mut client = cluster.client();
    let token = grant(&mut client, "door");
    let owner = client.client_id().expect("registered").0;
    assert!(cluster.latest_leader().is_some(), "{}", cluster.logs());
    let mut observer = cluster.client();
    assert_eq!(holder(&mut observer, "door"), Some((owner, token)));
    for index in 0..3 {
        let log = wait_for_log(&cluster, index, "accepted a connection from peer");
        assert!(
            log.contains("peer_authentication=\"cluster secret\""),
            "s{} runs authenticated\n{log}",
            index + 1
        );
        assert!(!log.contains("UNAUTHENTICATED"), "{log}");
        assert!(!log.contains("peer connection refused"), "{log}");
        assert!(!log.contains("refused our handshake"), "{log}");
    }
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
    cluster.finish();
}

/// Opens a raw peer connection to `port` and sends `opening`; returns the stream.
fn raw_peer(port: u16, opening: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(opening).unwrap();
    stream
}

/// Reads one frame from a raw peer connection.
fn read_frame(stream: &mut TcpStream) -> lockstep::net::peer::PeerFrame {
    use lockstep::net::peer::frame::{FrameDecoder, decode_peer_frame};
    let mut decoder = FrameDecoder::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "the server closed without a frame");
        if let Some(payload) = decoder.feed(&chunk[..read]).unwrap().first() {
            return decode_peer_frame(payload).unwrap();
        }
    }
}

/// A process without the secret claims to be s2, with no proof and with a wrong one. s1
/// refuses it both times, says why, logs it at WARN with the caller's address, and the
/// cluster keeps serving with its lock intact.
#[test]
fn a_forged_peer_without_the_secret_is_refused_and_the_cluster_keeps_serving() {
    use lockstep::net::peer::PeerFrame;
    use lockstep::net::peer::handshake::{Handshake, Nonce, PROOF_BYTES, Proof};
    use lockstep::node::ServerId;
    let secret = secret_file("forged-peer-secret", SECRET);
    let secret_arg = secret.display().to_string();
    let cluster = Cluster::start_with("forged-peer", &["--cluster-secret-file", &secret_arg]);
    let mut client = cluster.client();
    let token = grant(&mut client, "vault");
    let owner = client.client_id().expect("registered").0;
    let port = cluster.ports[0];

    // No proof at all: the old, unauthenticated handshake.
    let unauthenticated = Handshake::new("lockstep", ServerId(2), ServerId(1));
    let mut stream = raw_peer(port, &unauthenticated.encode_opening());
    let caller = stream.local_addr().unwrap();
    match read_frame(&mut stream) {
        PeerFrame::Refused { reason } => assert!(reason.contains("requires"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let log = wait_for_log(&cluster, 0, &caller.to_string());
    let line = log
        .lines()
        .find(|l| l.contains(&caller.to_string()))
        .unwrap();
    assert!(line.contains("WARN") && line.contains("refused"), "{line}");
    let _ = stream.shutdown(Shutdown::Both);

    // A challenge answered with a made-up proof.
    let mut forged = Handshake::new("lockstep", ServerId(2), ServerId(1));
    forged.nonce = Some(Nonce([7; 32]));
    let mut stream = raw_peer(port, &forged.encode_opening());
    let caller = stream.local_addr().unwrap();
    assert!(matches!(
        read_frame(&mut stream),
        PeerFrame::Challenge { .. }
    ));
    let mut proof_frame = Vec::new();
    lockstep::net::peer::frame::encode_peer_frame(
        &PeerFrame::Proof {
            proof: Proof([0x5a; PROOF_BYTES]),
        },
        &mut proof_frame,
    )
    .unwrap();
    stream.write_all(&proof_frame).unwrap();
    match read_frame(&mut stream) {
        PeerFrame::Refused { reason } => {
            assert!(reason.contains("failed to prove"), "{reason}");
            assert!(!reason.contains(SECRET.trim()), "the secret never leaks");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // And the connection is closed after the refusal.
    let mut rest = Vec::new();
    assert!(matches!(stream.read_to_end(&mut rest), Ok(0)), "{rest:?}");
    let log = wait_for_log(&cluster, 0, &caller.to_string());
    let line = log
        .lines()
        .find(|l| l.contains(&caller.to_string()))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("failed to prove"),
        "{line}"
    );

    // The cluster serves on, with the lock where it was.
    let mut observer = cluster.client();
    assert_eq!(holder(&mut observer, "vault"), Some((owner, token)));
    assert!(grant(&mut observer, "another") > token);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
    cluster.finish();
}

/// s3 holds another cluster's secret. s1 and s2 refuse it and serve without it; s3 refuses
/// them too, never follows a leader, and its log receives no entry.
#[test]
fn a_server_with_a_different_secret_never_joins() {
    let secret = secret_file("split-secret", SECRET);
    let other = secret_file("split-other-secret", OTHER_SECRET);
    let secret_arg = secret.display().to_string();
    let other_arg = other.display().to_string();
    let right: &[&str] = &["--cluster-secret-file", &secret_arg];
    let wrong: &[&str] = &["--cluster-secret-file", &other_arg];
    let cluster = Cluster::start_each("split-secret", &[], &[right, right, wrong]);

    // s1 and s2 are a majority: they serve.
    let majority = vec![
        format!("127.0.0.1:{}", cluster.ports[0]),
        format!("127.0.0.1:{}", cluster.ports[1]),
    ];
    let options = ClientOptions {
        operation_timeout: DEADLINE,
        ..ClientOptions::default()
    };
    let mut client = Client::new(majority, options).unwrap();
    let token = grant(&mut client, "gate");
    let owner = client.client_id().expect("registered").0;

    // Both sides of both directions say why.
    for index in 0..2 {
        let log = wait_for_log(&cluster, index, "s3 failed to prove the cluster secret");
        assert!(log.contains("WARN"), "{log}");
    }
    wait_for_log(&cluster, 2, "s1 failed to prove the cluster secret");
    wait_for_log(&cluster, 2, "s2 failed to prove the cluster secret");
    wait_for_log(&cluster, 2, "refused our handshake");

    let mut observer = Client::new(
        vec![format!("127.0.0.1:{}", cluster.ports[1])],
        ClientOptions {
            operation_timeout: DEADLINE,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    assert_eq!(holder(&mut observer, "gate"), Some((owner, token)));
    let outsider = std::fs::read_to_string(cluster.log_path(2)).unwrap();
    assert!(!outsider.contains("follows leader"), "{outsider}");
    assert!(!outsider.contains("is now the leader"), "{outsider}");
    assert!(
        !outsider.contains("accepted a connection from peer"),
        "{outsider}"
    );
    for path in [&secret, &other] {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
    cluster.finish();
}

/// A secret file that is missing or too short stops the server at start with exit code 2,
/// naming the file.
#[test]
fn a_bad_cluster_secret_file_exits_2_and_names_the_file() {
    let short = secret_file("short-secret", "too short\n");
    let short_arg = short.display().to_string();
    let missing_arg = short.with_file_name("missing").display().to_string();
    for (path, problem) in [(&short_arg, "at least 32"), (&missing_arg, "cannot read")] {
        let (code, stderr) = run_to_exit(&[
            "server",
            "--id",
            "s1",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "unused",
            "--cluster-secret-file",
            path,
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(path.as_str()), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(short.parent().unwrap());
}

// ----- hostile clients (issue 10) -----

/// Sends the raw line (as `nc` would) that `line` writes for a term to `port`, starting with
/// `term`, until the answer is decided: it waits out `unavailable` and `overloaded` (an
/// election under way) and adopts the newer term a `not_leader` names, as a client must.
fn until_decided_raw(
    port: u16,
    line: &dyn Fn(u64) -> String,
    mut term: u64,
    what: &str,
    cluster: &Cluster,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut bytes = line(term).into_bytes();
        bytes.push(b'\n');
        let reply = Connection::open(port).and_then(|mut connection| {
            connection.send_raw(&bytes)?;
            connection.read_reply()
        });
        match reply {
            Ok(reply) => match reply["error"].as_str() {
                Some("unavailable" | "overloaded") => last = reply.to_string(),
                Some("not_leader") if reply["term"].as_u64().unwrap_or(0) > term => {
                    term = reply["term"].as_u64().unwrap_or(0);
                    continue;
                }
                Some("not_leader") => last = reply.to_string(),
                _ => return reply,
            },
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what}: no decided answer within {DEADLINE:?}; last: {last}\n{}",
        cluster.logs()
    );
}

/// Like `until_decided_raw` for a request built as JSON (its `term` is where it starts).
fn until_decided(port: u16, request: Value, what: &str, cluster: &Cluster) -> Value {
    let start = request["term"].as_u64().unwrap_or(0);
    let line = move |term: u64| {
        let mut request = request.clone();
        request["term"] = json!(term);
        request.to_string()
    };
    until_decided_raw(port, &line, start, what, cluster)
}

/// A client that talks to server `index` only, acting as `credential`.
fn client_of_one(
    cluster: &Cluster,
    index: usize,
    credential: lockstep::client::Credential,
) -> Client {
    Client::new(
        vec![format!("127.0.0.1:{}", cluster.ports[index])],
        ClientOptions {
            credential: Some(credential),
            operation_timeout: DEADLINE,
            ..ClientOptions::default()
        },
    )
    .expect("a valid address")
}

/// No server exited, and none wrote a secret it was handed to its log.
fn assert_alive_and_discreet(cluster: &mut Cluster, secrets: &[String]) {
    for (index, server) in cluster.servers.iter_mut().enumerate() {
        let server = server.as_mut().expect("every server is up");
        assert!(
            matches!(server.child.try_wait(), Ok(None)),
            "s{} exited\n{}",
            index + 1,
            cluster_logs(&cluster.dir)
        );
    }
    let logs = cluster.logs();
    for secret in secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret in the logs\n{logs}"
        );
    }
}

/// The logs of the cluster in `dir`, for a message written while the cluster is borrowed.
fn cluster_logs(dir: &Path) -> String {
    (1..=3)
        .map(|n| {
            let log = std::fs::read_to_string(dir.join(format!("s{n}.log"))).unwrap_or_default();
            format!("--- s{n} ---\n{log}")
        })
        .collect()
}

/// The line that killed every server of a version 1 cluster, for good: a preempt by a client
/// id no hello issued. Each server now answers `unknown_client`, keeps serving, and a full
/// restart replays nothing harmful: every lock is where it was.
#[test]
fn the_poison_line_is_refused_everywhere_and_the_cluster_restarts_with_every_lock() {
    let mut cluster = Cluster::start("poison");
    let mut alice = cluster.client();
    let a = grant(&mut alice, "a");
    let b = grant(&mut alice, "b");
    let credential = alice.credential().expect("registered");
    let alice_id = credential.id.0;
    let term = alice.term();
    let poison = |term: u64| {
        format!(
            r#"{{"seq":2,"op":"preempt","client":999999,"lock":"ghost","term":{term},"version":2,"secret":"{}"}}"#,
            "0123456789abcdef0123456789abcdef"
        )
    };
    for index in 0..3 {
        let port = cluster.ports[index];
        let reply = until_decided_raw(port, &poison, term, "the poison line", &cluster);
        assert_eq!(
            reply["error"],
            "unknown_client",
            "via s{}: {reply}",
            index + 1
        );
        assert_eq!(reply["seq"], 2, "{reply}");
    }
    // Every server still serves, each on its own.
    for index in 0..3 {
        let mut through = client_of_one(&cluster, index, credential);
        assert_eq!(
            holder(&mut through, "a"),
            Some((alice_id, a)),
            "via s{}",
            index + 1
        );
        assert_eq!(holder(&mut through, "ghost"), None, "via s{}", index + 1);
    }
    assert_alive_and_discreet(&mut cluster, &[credential.secret.to_hex()]);

    for index in 0..3 {
        cluster.servers[index] = None;
    }
    for index in 0..3 {
        cluster.restart(index);
    }
    let mut observer = cluster.client();
    assert_eq!(holder(&mut observer, "a"), Some((alice_id, a)));
    assert_eq!(holder(&mut observer, "b"), Some((alice_id, b)));
    assert_eq!(holder(&mut observer, "ghost"), None);
    // Writes too: the restarted cluster grants, and refuses the poison again.
    let ghost = grant(&mut observer, "ghost");
    assert!(ghost > b, "a new grant after the restart: {ghost} > {b}");
    let port = cluster.ports[0];
    let reply = until_decided_raw(port, &poison, term, "the poison line again", &cluster);
    assert_eq!(reply["error"], "unknown_client", "{reply}");
    for index in 0..3 {
        let log = std::fs::read_to_string(cluster.log_path(index)).unwrap();
        assert!(
            log.contains("fresh=false"),
            "s{} recovered\n{log}",
            index + 1
        );
    }
    assert_alive_and_discreet(&mut cluster, &[credential.secret.to_hex()]);
    cluster.finish();
}

/// A release in another client's name, a seq reused for another operation or lock, and a
/// line with a field given twice: each is refused with its code, and no lock moves.
#[test]
fn forged_releases_reused_seqs_and_duplicated_fields_change_nothing() {
    let mut cluster = Cluster::start("hostile");
    let ports = cluster.ports.clone();
    let mut alice = cluster.client();
    let a = grant(&mut alice, "a");
    let alice_credential = alice.credential().expect("registered");
    let alice_id = alice_credential.id.0;
    let term = alice.term();

    // (b) Mallory, a client of her own, releases Alice's lock with her own secret, with a
    // made-up one, and with none.
    let mut mallory = cluster.client();
    mallory.register().expect("mallory registers");
    let mallory_secret = mallory.credential().expect("registered").secret.to_hex();
    let forged_secrets = [
        Some(mallory_secret.clone()),
        Some("00000000000000000000000000000000".to_string()),
        None,
    ];
    for (at, secret) in forged_secrets.iter().enumerate() {
        let mut release = json!({"seq": 100 + at, "op": "release", "version": 2,
                                 "client": alice_id, "lock": "a", "term": term});
        if let Some(secret) = secret {
            release["secret"] = json!(secret);
        }
        let reply = until_decided(ports[at % 3], release, "a forged release", &cluster);
        assert_eq!(reply["error"], "unauthorized", "{reply}");
        assert_eq!(
            holder(&mut alice, "a"),
            Some((alice_id, a)),
            "after {reply}"
        );
    }
    // The library says the same, and does not retry.
    let forged: lockstep::client::Credential = format!("{alice_id}:{mallory_secret}")
        .parse()
        .expect("well-formed");
    let mut forger = Client::new(
        cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect(),
        ClientOptions {
            credential: Some(forged),
            operation_timeout: DEADLINE,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    match forger.release("a") {
        Err(lockstep::client::Error::Rejected { code, .. }) => {
            assert_eq!(code, lockstep::net::protocol::ErrorCode::Unauthorized);
        }
        other => panic!("a forged release through the library: {other:?}"),
    }
    assert_eq!(holder(&mut alice, "a"), Some((alice_id, a)));

    // (c) Carol, speaking raw lines, takes `c` under seq 2, then reuses seq 2.
    let welcome = until_ok(
        ports[0],
        json!({"seq": 1, "op": "hello", "version": 2}),
        "carol's hello",
        &cluster,
    );
    let carol = welcome["client"].as_u64().expect("an id");
    let carol_secret = welcome["secret"].as_str().expect("a secret").to_string();
    let carol_op = |op: &str, lock: &str| {
        json!({"seq": 2, "op": op, "version": 2, "client": carol, "secret": carol_secret,
               "lock": lock, "term": term})
    };
    let granted = until_ok(
        ports[1],
        carol_op("preempt", "c"),
        "carol's preempt",
        &cluster,
    );
    assert_eq!(granted["ok"], "granted", "{granted}");
    // The same request again is answered exactly as the first time, index included.
    let replayed = until_ok(
        ports[2],
        carol_op("preempt", "c"),
        "carol's retry",
        &cluster,
    );
    assert_eq!(
        (&replayed["ok"], &replayed["token"], &replayed["index"]),
        (&granted["ok"], &granted["token"], &granted["index"]),
        "{replayed} replays {granted}"
    );
    let token = granted["token"].as_u64().expect("a token");
    let mut observer = cluster.client();
    for (op, lock) in [("release", "c"), ("preempt", "d"), ("release", "d")] {
        let reply = until_decided(ports[0], carol_op(op, lock), "a reused seq", &cluster);
        assert_eq!(reply["error"], "seq_reused", "{op} {lock}: {reply}");
        assert_eq!(reply["seq"], 2, "{reply}");
        assert_eq!(
            holder(&mut observer, "c"),
            Some((carol, token)),
            "after {op} {lock}"
        );
        assert_eq!(holder(&mut observer, "d"), None, "after {op} {lock}");
    }

    // (d) A field given twice: a lock named twice in Carol's release, and a seq twice.
    let doubled = [
        format!(
            r#"{{"seq":3,"op":"release","version":2,"client":{carol},"secret":"{carol_secret}","lock":"d","lock":"c","term":{term}}}"#
        ),
        format!(
            r#"{{"seq":3,"op":"release","version":2,"client":{carol},"client":{alice_id},"secret":"{carol_secret}","lock":"a","term":{term}}}"#
        ),
        r#"{"seq":3,"seq":4,"op":"hello","version":2}"#.to_string(),
    ];
    for line in &doubled {
        let mut connection = Connection::open(ports[1]).unwrap();
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        connection.send_raw(&bytes).unwrap();
        let reply = connection.read_reply().unwrap();
        assert_eq!(reply["error"], "bad_request", "{line}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or("")
                .contains("appears twice"),
            "{reply}"
        );
        assert!(!reply.to_string().contains(&carol_secret), "{reply}");
        // The connection stays usable.
        let reply = connection
            .request(
                &json!({"seq": 7, "op": "check", "version": 2, "client": carol,
                             "secret": carol_secret, "lock": "c", "seen_index": token}),
            )
            .unwrap();
        assert!(
            reply["ok"] == "owner" || reply["error"] == "unavailable",
            "{reply}"
        );
    }
    assert_eq!(holder(&mut observer, "c"), Some((carol, token)));
    assert_eq!(holder(&mut observer, "a"), Some((alice_id, a)));
    assert_alive_and_discreet(
        &mut cluster,
        &[
            alice_credential.secret.to_hex(),
            mallory_secret,
            carol_secret.clone(),
        ],
    );
    cluster.finish();
}

// ----- TLS (issue 10) -----

/// A CA made for one test, the certificates it signed, and where their PEM files are: in a
/// scratch directory of their own (so that `Cluster::start_each` may remove and remake the
/// cluster's). `sN.pem`/`sN.key` are server N's, for 127.0.0.1 and localhost.
struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    fn new(name: &str, servers: usize) -> TestPki {
        use lockstep::net::tls::generate::GeneratedCa;
        let dir = scratch_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, text: &str| std::fs::write(dir.join(file), text).unwrap();
        let names = ["127.0.0.1".to_string(), "localhost".to_string()];
        let ca = GeneratedCa::new("lockstep test CA").unwrap();
        write("ca.pem", ca.cert_pem());
        for index in 1..=servers {
            let issued = ca.issue_server(&format!("s{index}"), &names).unwrap();
            write(&format!("s{index}.pem"), &issued.cert_pem);
            write(&format!("s{index}.key"), &issued.key_pem);
        }
        // Another CA, and a server certificate it signed for the same names.
        let other = GeneratedCa::new("another CA").unwrap();
        write("other-ca.pem", other.cert_pem());
        let alien = other.issue_server("s2", &names).unwrap();
        write("alien.pem", &alien.cert_pem);
        write("alien.key", &alien.key_pem);
        TestPki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ca` for server `index` (0-based).
    fn server_flags(&self, index: usize) -> Vec<String> {
        let id = format!("s{}", index + 1);
        vec![
            "--tls-cert".into(),
            self.path(&format!("{id}.pem")),
            "--tls-key".into(),
            self.path(&format!("{id}.key")),
            "--tls-ca".into(),
            self.path("ca.pem"),
        ]
    }

    fn client_tls(&self) -> lockstep::client::ClientTls {
        lockstep::client::ClientTls::from_ca_file(&self.dir.join("ca.pem")).unwrap()
    }

    /// A raw TLS connection to `port` that trusts the test CA, presenting `client_cert` (a
    /// `(cert, key)` pair of file stems) or no certificate.
    fn raw_tls(
        &self,
        port: u16,
        client_cert: Option<(&str, &str)>,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        use lockstep::net::tls::{load_certificates, load_private_key, load_roots, provider};
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(load_roots(&self.dir.join("ca.pem")).unwrap());
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    load_certificates(&self.dir.join(cert)).unwrap(),
                    load_private_key(&self.dir.join(key)).unwrap(),
                )
                .unwrap(),
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        rustls::StreamOwned::new(connection, socket)
    }

    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts three servers with TLS (and a cluster secret: TLS does not replace it).
fn tls_cluster(name: &str, pki: &TestPki) -> Cluster {
    let secret = secret_file(&format!("{name}-secret"), SECRET);
    let secret_arg = secret.display().to_string();
    let flags: Vec<Vec<String>> = (0..3).map(|index| pki.server_flags(index)).collect();
    let flags: Vec<Vec<&str>> = flags
        .iter()
        .map(|each| each.iter().map(String::as_str).collect())
        .collect();
    let flags: Vec<&[&str]> = flags.iter().map(Vec::as_slice).collect();
    let cluster = Cluster::start_each(name, &["--cluster-secret-file", &secret_arg], &flags);
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
    cluster
}

/// A library client speaking TLS to every server of `cluster`.
fn tls_client(cluster: &Cluster, pki: &TestPki) -> Client {
    let servers = cluster
        .ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let options = ClientOptions {
        operation_timeout: DEADLINE,
        tls: Some(pki.client_tls()),
        ..ClientOptions::default()
    };
    Client::new(servers, options).expect("valid addresses")
}

/// Three servers with TLS, mutual between peers, elect a leader and serve the library and
/// `lockstep client --tls-ca`; a client that trusts another CA, or verifies another name,
/// fails with an error that says so.
#[test]
fn a_tls_cluster_elects_a_leader_and_serves_clients_that_trust_its_ca() {
    let pki = TestPki::new("tls-cluster-pki", 3);
    let cluster = tls_cluster("tls-cluster", &pki);
    let mut client = tls_client(&cluster, &pki);
    let token = grant(&mut client, "door");
    let owner = client.client_id().expect("registered").0;
    assert!(cluster.latest_leader().is_some(), "{}", cluster.logs());
    for index in 0..3 {
        let log = wait_for_log(&cluster, index, "accepted a connection from peer");
        assert!(log.contains("tls=\"on (mutual for peers)\""), "{log}");
        assert!(!log.contains("TLS handshake failed"), "{log}");
        assert!(!log.contains("peer connection refused"), "{log}");
    }

    let servers = cluster.addresses();
    let ca = pki.path("ca.pem");
    let (code, output) = run_to_exit(&[
        "client",
        "--servers",
        &servers,
        "--tls-ca",
        &ca,
        "preempt",
        "window",
    ]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("fencing token"), "{output}");
    // Certificates name localhost too.
    let (code, output) = run_to_exit(&[
        "client",
        "--servers",
        &servers,
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "localhost",
        "--json",
        "check",
        "door",
        "--linearizable",
    ]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains(&format!("\"owner\":{owner}")), "{output}");

    // The wrong CA, and a name the certificates do not carry: clear errors, exit 2.
    let other_ca = pki.path("other-ca.pem");
    let (code, output) = run_to_exit(&[
        "client",
        "--servers",
        &servers,
        "--tls-ca",
        &other_ca,
        "--timeout",
        "2s",
        "check",
        "door",
    ]);
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("TLS handshake failed") && output.contains("UnknownIssuer"),
        "{output}"
    );
    let (code, output) = run_to_exit(&[
        "client",
        "--servers",
        &servers,
        "--tls-ca",
        &ca,
        "--tls-server-name",
        "locks.example.com",
        "--timeout",
        "2s",
        "check",
        "door",
    ]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("not valid for name"), "{output}");
    // A CA file that is not one.
    let (code, output) = run_to_exit(&[
        "client",
        "--servers",
        &servers,
        "--tls-ca",
        &pki.path("s1.key"),
        "check",
        "door",
    ]);
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("s1.key") && output.contains("no PEM certificate"),
        "{output}"
    );

    let mut observer = tls_client(&cluster, &pki);
    assert_eq!(holder(&mut observer, "door"), Some((owner, token)));
    pki.remove();
    cluster.finish();
}

/// The caller's address once `cluster`'s s1 logged it, and that line.
fn log_line_naming(cluster: &Cluster, caller: SocketAddr) -> String {
    let log = wait_for_log(cluster, 0, &caller.to_string());
    log.lines()
        .find(|line| line.contains(&caller.to_string()))
        .unwrap()
        .to_string()
}

/// On a TLS server: a plaintext client line gets one error line and changes nothing; a
/// plaintext peer is told TLS is required; a TLS peer without a client certificate, or with
/// one from another CA, is refused. Each is logged at WARN with its address, and the cluster
/// serves on with its lock intact.
#[test]
fn a_tls_cluster_refuses_plaintext_and_peers_without_a_certificate_from_its_ca() {
    use lockstep::net::peer::PeerFrame;
    use lockstep::net::peer::frame::{FrameDecoder, decode_peer_frame};
    use lockstep::net::peer::handshake::Handshake;
    use lockstep::node::ServerId;
    let pki = TestPki::new("tls-refusals-pki", 3);
    let cluster = tls_cluster("tls-refusals", &pki);
    let mut client = tls_client(&cluster, &pki);
    let token = grant(&mut client, "vault");
    let owner = client.client_id().expect("registered").0;
    let port = cluster.ports[0];

    // A plaintext client: a hello and a preempt in one write.
    let mut plain = Connection::open(port).unwrap();
    let caller = plain.writer.local_addr().unwrap();
    plain
        .send_raw(
            b"{\"version\":2,\"seq\":1,\"op\":\"hello\"}\n\
              {\"version\":2,\"seq\":2,\"op\":\"preempt\",\"client\":1,\"lock\":\"vault\",\"term\":1}\n",
        )
        .unwrap();
    let reply = plain.read_reply().unwrap();
    assert_eq!(reply["error"], "bad_request", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("requires TLS"),
        "{reply}"
    );
    assert!(plain.read_reply().is_err(), "one line, then the end");
    let line = log_line_naming(&cluster, caller);
    assert!(
        line.contains("WARN") && line.contains("plaintext"),
        "{line}"
    );

    // A plaintext peer.
    let opening = Handshake::new("lockstep", ServerId(2), ServerId(1)).encode_opening();
    let mut stream = raw_peer(port, &opening);
    let caller = stream.local_addr().unwrap();
    match read_frame(&mut stream) {
        PeerFrame::Refused { reason } => assert!(reason.contains("requires TLS"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let line = log_line_naming(&cluster, caller);
    assert!(
        line.contains("WARN") && line.contains("plaintext peer"),
        "{line}"
    );

    // A TLS peer without a client certificate.
    let mut tls = pki.raw_tls(port, None);
    tls.write_all(&opening).unwrap();
    tls.flush().unwrap();
    let caller = tls.sock.local_addr().unwrap();
    let mut decoder = FrameDecoder::new();
    let mut chunk = [0u8; 4096];
    let frame = loop {
        let read = tls.read(&mut chunk).unwrap();
        assert!(read > 0, "the server closed without a frame");
        if let Some(payload) = decoder.feed(&chunk[..read]).unwrap().first() {
            break decode_peer_frame(payload).unwrap();
        }
    };
    match frame {
        PeerFrame::Refused { reason } => {
            assert!(reason.contains("client certificate"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let line = log_line_naming(&cluster, caller);
    assert!(
        line.contains("WARN") && line.contains("no client certificate"),
        "{line}"
    );

    // A TLS peer whose certificate another CA signed: the TLS handshake fails, so not a
    // byte of the peer protocol is read or answered.
    let mut tls = pki.raw_tls(port, Some(("alien.pem", "alien.key")));
    let caller = tls.sock.local_addr().unwrap();
    let _ = tls.write_all(&opening).and_then(|()| tls.flush());
    let mut rest = Vec::new();
    match tls.read_to_end(&mut rest) {
        Err(error) => assert!(
            error.to_string().contains("alert")
                || error.kind() == std::io::ErrorKind::ConnectionReset,
            "{error}"
        ),
        Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
    }
    let line = log_line_naming(&cluster, caller);
    assert!(
        line.contains("WARN") && line.contains("TLS handshake failed"),
        "{line}"
    );

    // The cluster serves on, with the lock where it was.
    let mut observer = tls_client(&cluster, &pki);
    assert_eq!(holder(&mut observer, "vault"), Some((owner, token)));
    assert!(grant(&mut observer, "another") > token);
    for index in 0..3 {
        let log = std::fs::read_to_string(cluster.log_path(index)).unwrap();
        assert!(!log.contains("panicked"), "{log}");
    }
    pki.remove();
    cluster.finish();
}

/// s3's certificate is signed by another CA: s1 and s2 refuse it in TLS and serve without
/// it, and it never follows a leader.
#[test]
fn a_tls_server_with_a_certificate_from_another_ca_never_joins() {
    let pki = TestPki::new("tls-alien-pki", 2);
    let secret = secret_file("tls-alien-secret", SECRET);
    let secret_arg = secret.display().to_string();
    let alien = [
        "--tls-cert".to_string(),
        pki.path("alien.pem"),
        "--tls-key".into(),
        pki.path("alien.key"),
        "--tls-ca".into(),
        pki.path("other-ca.pem"),
    ];
    let flags: Vec<Vec<String>> = vec![pki.server_flags(0), pki.server_flags(1), alien.to_vec()];
    let flags: Vec<Vec<&str>> = flags
        .iter()
        .map(|each| each.iter().map(String::as_str).collect())
        .collect();
    let flags: Vec<&[&str]> = flags.iter().map(Vec::as_slice).collect();
    let cluster = Cluster::start_each("tls-alien", &["--cluster-secret-file", &secret_arg], &flags);
    let majority = vec![
        format!("127.0.0.1:{}", cluster.ports[0]),
        format!("127.0.0.1:{}", cluster.ports[1]),
    ];
    let options = ClientOptions {
        operation_timeout: DEADLINE,
        tls: Some(pki.client_tls()),
        ..ClientOptions::default()
    };
    let mut client = Client::new(majority, options).unwrap();
    grant(&mut client, "gate");
    for index in 0..2 {
        wait_for_log(&cluster, index, "TLS handshake failed");
    }
    wait_for_log(&cluster, 2, "TLS with the peer failed");
    let outsider = std::fs::read_to_string(cluster.log_path(2)).unwrap();
    assert!(!outsider.contains("follows leader"), "{outsider}");
    assert!(
        !outsider.contains("accepted a connection from peer"),
        "{outsider}"
    );
    let _ = std::fs::remove_dir_all(secret.parent().unwrap());
    pki.remove();
    cluster.finish();
}

/// TLS flags that do not go together, or files that cannot be used, stop the server at start
/// with exit code 2, naming what is missing or the file.
#[test]
fn bad_tls_flags_exit_2_and_name_the_file() {
    let pki = TestPki::new("tls-bad-flags", 2);
    let base = [
        "server",
        "--id",
        "s1",
        "--listen",
        "127.0.0.1:1",
        "--data-dir",
        "unused",
    ];
    let (cert, key, ca) = (pki.path("s1.pem"), pki.path("s1.key"), pki.path("ca.pem"));
    let other_key = pki.path("s2.key");
    let cases: [(Vec<&str>, &str, &str); 3] = [
        (vec!["--tls-cert", &cert], "--tls-key", "missing"),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &other_key,
                "--tls-ca",
                &ca,
            ],
            &other_key,
            "does not match",
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key, "--tls-ca", &ca],
            &key,
            "no PEM certificate",
        ),
    ];
    for (flags, names, problem) in cases {
        let mut args = base.to_vec();
        args.extend(flags);
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(names), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    pki.remove();
}

// ----- apply is total (issue 10) -----

/// The log a cluster of the old code could have written in term 1 under leader s1: a no-op,
/// client#1's registration and its grant of `held` (index 3), then three entries no leader
/// appends any more: a preempt by a client id no hello issued (the poison line), a lock name
/// over the limit, and client#1's seq 1 again for another operation.
fn poisoned_log() -> Vec<lockstep::node::Entry> {
    use lockstep::node::{Claim, ClientId, ClientSecret, Command as Cmd, Entry};
    let at_term_1 = |command| Entry { term: 1, command };
    vec![
        at_term_1(Cmd::Noop),
        at_term_1(Cmd::Register {
            nonce: 1,
            secret: Some(ClientSecret::from_bytes([0x11; 16])),
            ttl_ms: None,
        }),
        at_term_1(Cmd::Preempt {
            client: ClientId(1),
            seq: 1,
            lock: "held".into(),
            claim: Claim::EXCLUSIVE,
        }),
        at_term_1(Cmd::Preempt {
            client: ClientId(999_999),
            seq: 2,
            lock: "ghost".into(),
            claim: Claim::EXCLUSIVE,
        }),
        at_term_1(Cmd::Preempt {
            client: ClientId(1),
            seq: 2,
            lock: "x".repeat(300).into(),
            claim: Claim::EXCLUSIVE,
        }),
        at_term_1(Cmd::Release {
            client: ClientId(1),
            seq: 1,
            lock: "held".into(),
        }),
    ]
}

/// Writes `poisoned_log` into the data directory `dir` with the storage API.
fn write_poisoned_data_dir(dir: &Path) {
    use lockstep::node::{PersistOp, ServerId};
    std::fs::create_dir_all(dir).unwrap();
    let (mut wal, _) = lockstep::storage::Wal::open(dir).expect("a fresh data directory opens");
    wal.append(&[
        PersistOp::HardState {
            term: 1,
            voted_for: Some(ServerId(1)),
            recovering: false,
        },
        PersistOp::Append {
            first_index: 1,
            entries: poisoned_log(),
        },
    ])
    .expect("the storage API appends");
    wal.sync().expect("and syncs");
}

/// A new client takes `lock` after the poisoned entries; `held` keeps its owner and token (the
/// reused seq released nothing) and `ghost` is free (the unknown client got nothing).
fn assert_serves_after_the_poison(cluster: &Cluster, lock: &str) {
    let mut client = cluster.client();
    let token = grant(&mut client, lock);
    assert!(token > 6, "granted after the poisoned entries, at {token}");
    assert_eq!(holder(&mut client, "held"), Some((1, 3)));
    assert_eq!(holder(&mut client, "ghost"), None);
}

/// Apply is total: before lockstep checked its inputs, one line from any client,
/// `{"op":"preempt","client":999999,...}`, was appended, committed, and panicked every server
/// that applied it, at every restart. Three real servers start from data directories holding
/// such entries (written with the storage API), elect a leader, apply them as refusals, and
/// serve, before and after all of them restart.
#[test]
fn a_cluster_whose_logs_hold_poisoned_entries_applies_them_as_refusals_and_serves() {
    let prepare = |cluster: &Cluster| {
        for index in 0..3 {
            write_poisoned_data_dir(&cluster.data_dir(index));
        }
    };
    let mut cluster = Cluster::start_prepared("poisoned-log", &[], &[], &prepare);
    assert_serves_after_the_poison(&cluster, "fresh");
    // Replay repeats the poison at every start: it must be harmless every time.
    for index in 0..3 {
        cluster.servers[index] = None;
    }
    for index in 0..3 {
        cluster.restart(index);
    }
    assert_serves_after_the_poison(&cluster, "fresh-after-restart");
    let logs = cluster.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    cluster.finish();
}

// ----- metrics and status -----

/// The metrics address server `index` logged (its `--metrics 127.0.0.1:0` picked a port).
fn metrics_address(cluster: &Cluster, index: usize) -> SocketAddr {
    let needle = "serving metrics at http://";
    let log = wait_for_log(cluster, index, needle);
    let after = log.split(needle).nth(1).expect("the needle is in the log");
    let address = after.split("/metrics").next().expect("a path follows");
    address
        .parse()
        .unwrap_or_else(|_| panic!("s{} logged {address:?} as its metrics address", index + 1))
}

/// `GET /metrics` over a plain TCP connection; the body of a 200 answer.
fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .unwrap_or_else(|error| panic!("cannot connect to the metrics at {address}: {error}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "a whole exposition:\n{body}");
    body.to_string()
}

/// The value of `sample` (its name and labels exactly as the exposition writes them) in a
/// scrape; 0 when it is absent.
fn sample(scrape: &str, sample: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// Scrapes every server until `settled` holds of all the scrapes together; returns them.
fn scrape_until(
    addresses: &[SocketAddr],
    what: &str,
    cluster: &Cluster,
    settled: &dyn Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let scrapes: Vec<String> = addresses.iter().map(|&address| scrape(address)).collect();
        if settled(&scrapes) {
            return scrapes;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never settled\n{}\n{}",
            scrapes.join("\n"),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw NDJSON client with one connection per server that never gives up on a line it sent:
/// it reads each answer (waiting up to the test's deadline), so every answer a server sends is
/// read exactly once and counted here by kind, to be compared with what the servers counted.
struct CountingClient {
    connections: std::collections::BTreeMap<u16, Connection>,
    /// By `ok` value or `error` code.
    answers: std::collections::BTreeMap<String, u64>,
}

impl CountingClient {
    fn new() -> CountingClient {
        CountingClient {
            connections: Default::default(),
            answers: Default::default(),
        }
    }

    fn ask(&mut self, port: u16, request: &Value) -> Value {
        let connection = self.connections.entry(port).or_insert_with(|| {
            let connection = Connection::open(port).expect("the server listens");
            connection.writer.set_read_timeout(Some(DEADLINE)).unwrap();
            connection
        });
        let reply = connection
            .request(request)
            .unwrap_or_else(|error| panic!("no answer to {request} from port {port}: {error}"));
        let kind = reply["ok"]
            .as_str()
            .or(reply["error"].as_str())
            .unwrap_or("?");
        *self.answers.entry(kind.to_string()).or_default() += 1;
        reply
    }

    /// Sends `request` until it is decided, starting at `port`: after `unavailable` or
    /// `overloaded` it waits and resends there; after `not_leader` it adopts the term and
    /// resends to the leader's port when the answer names it. Returns the decided answer and
    /// the port that gave it.
    fn until_decided(&mut self, mut port: u16, mut request: Value) -> (Value, u16) {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let reply = self.ask(port, &request);
            match reply["error"].as_str() {
                None => return (reply, port),
                Some("unavailable" | "overloaded") => {}
                Some("not_leader") => {
                    request["term"] = reply["term"].clone();
                    if let Some(address) = reply["leader_address"].as_str() {
                        port = address.rsplit(':').next().unwrap().parse().unwrap();
                    }
                    continue;
                }
                Some(_) => return (reply, port),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{request}: not decided within {DEADLINE:?}");
    }

    fn count(&self, kind: &str) -> f64 {
        self.answers.get(kind).copied().unwrap_or(0) as f64
    }
}

/// What the servers counted, summed over every scrape.
fn total(scrapes: &[String], name: &str) -> f64 {
    scrapes.iter().map(|scrape| sample(scrape, name)).sum()
}

/// The one server whose role gauge says leader, if exactly one does and every server names it.
fn agreed_leader(scrapes: &[String]) -> Option<usize> {
    let leaders: Vec<usize> = (0..scrapes.len())
        .filter(|&at| sample(&scrapes[at], "lockstep_role{role=\"leader\"}") == 1.0)
        .collect();
    let [leader] = leaders[..] else {
        return None;
    };
    let id = (leader + 1) as f64;
    scrapes
        .iter()
        .all(|scrape| sample(scrape, "lockstep_leader_id") == id)
        .then_some(leader)
}

/// Story: three servers serve metrics. Once a leader is agreed, every scrape says so (role,
/// leader id, term, peers connected, a leader change seen). A client takes five locks, releases
/// two, is refused a held one and releases one it does not hold; the servers' counters of
/// grants, releases and refusals grow by exactly the answers the client read, the request
/// histograms count them, fsyncs were timed, and small snapshots were taken. `lockstep status`
/// then shows the same leader in its table and JSON with equal commit indexes once settled,
/// and after a follower is killed it shows that server unreachable and exits 1, while the
/// leader's metrics show the peer link down.
#[test]
fn metrics_and_status_show_what_the_cluster_does() {
    let mut cluster = Cluster::start_with(
        "metrics",
        &["--metrics", "127.0.0.1:0", "--snapshot-entries", "8"],
    );
    let ports = cluster.ports.clone();
    let metrics: Vec<SocketAddr> = (0..3).map(|i| metrics_address(&cluster, i)).collect();
    let settled = scrape_until(
        &metrics,
        "a leader every server agrees on",
        &cluster,
        &|s| {
            agreed_leader(s).is_some()
                && s.iter().all(|scrape| {
                    sample(scrape, "lockstep_peer_connected{peer=\"s1\"}")
                        + sample(scrape, "lockstep_peer_connected{peer=\"s2\"}")
                        + sample(scrape, "lockstep_peer_connected{peer=\"s3\"}")
                        == 2.0
                })
        },
    );
    let leader = agreed_leader(&settled).unwrap();
    for scrape in &settled {
        assert!(
            sample(scrape, "lockstep_leader_changes_total") >= 1.0,
            "{scrape}"
        );
        assert_eq!(
            sample(scrape, "lockstep_term"),
            sample(&settled[leader], "lockstep_term")
        );
        assert!(sample(scrape, "lockstep_start_time_seconds") > 1.0e9);
    }

    let mut client = CountingClient::new();
    let hello = json!({"seq": 1, "op": "hello", "version": 2});
    let (welcome, _) = client.until_decided(ports[leader], hello.clone());
    let (owner, secret) = (welcome["client"].clone(), welcome["secret"].clone());
    let op = |seq: u64, op: &str, lock: &str| {
        json!({"seq": seq, "op": op, "version": 2, "client": owner, "secret": secret,
               "lock": lock, "term": welcome["term"]})
    };
    let mut port = ports[leader];
    let mut seq = 1;
    let mut step = |client: &mut CountingClient, request: Value, expected: &str| {
        let (reply, answered_by) = client.until_decided(port, request);
        assert_eq!(reply["ok"], expected, "{reply}");
        port = answered_by;
    };
    for lock in ["a", "b", "c", "d", "e"] {
        seq += 1;
        step(&mut client, op(seq, "preempt", lock), "granted");
    }
    for lock in ["a", "b"] {
        seq += 1;
        step(&mut client, op(seq, "release", lock), "released");
    }
    seq += 1;
    step(&mut client, op(seq, "release", "zzz"), "not_owner");
    let (other, _) = client.until_decided(ports[leader], hello);
    let refused = json!({"seq": 2, "op": "preempt", "version": 2, "client": other["client"],
                         "secret": other["secret"], "lock": "c", "term": welcome["term"]});
    step(&mut client, refused, "held_by");

    // Every server has compacted (8 entries per snapshot) and applied what was committed.
    let after = scrape_until(&metrics, "snapshots and equal indexes", &cluster, &|s| {
        s.iter().all(|scrape| {
            sample(scrape, "lockstep_snapshots_total") >= 1.0
                && sample(scrape, "lockstep_applied_index")
                    == sample(&s[0], "lockstep_commit_index")
                && sample(scrape, "lockstep_commit_index") == sample(&s[0], "lockstep_commit_index")
        })
    });
    let grew = |name: &str| total(&after, name) - total(&settled, name);
    assert_eq!(grew("lockstep_grants_total"), client.count("granted"));
    assert_eq!(client.count("granted"), 5.0);
    assert_eq!(grew("lockstep_releases_total"), 2.0);
    for reason in [
        "held_by",
        "not_owner",
        "not_leader",
        "unavailable",
        "overloaded",
    ] {
        let name = format!("lockstep_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(grew(&name), client.count(reason), "{name}");
    }
    assert_eq!(grew("lockstep_refusals_total{reason=\"held_by\"}"), 1.0);
    assert!(
        grew("lockstep_client_request_duration_seconds_count{op=\"preempt\"}") >= 6.0,
        "every preempt answered was timed"
    );
    assert!(grew("lockstep_client_request_duration_seconds_count{op=\"hello\"}") >= 2.0);
    for scrape in &after {
        assert!(sample(scrape, "lockstep_fsync_duration_seconds_count") >= 1.0);
        assert!(sample(scrape, "lockstep_snapshot_index") >= 8.0, "{scrape}");
        assert!(sample(scrape, "lockstep_log_bytes") > 0.0);
        assert_eq!(
            sample(scrape, "lockstep_log_entries"),
            sample(scrape, "lockstep_log_last_index") - sample(scrape, "lockstep_snapshot_index")
        );
    }
    let leader_id = format!("s{}", leader + 1);

    // The table: a row per server, one leader, the one the metrics name.
    let servers = cluster.addresses();
    let (code, table) = run_to_exit(&["status", "--servers", &servers]);
    assert_eq!(code, Some(0), "{table}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| line.contains("127.0.0.1:"))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(
        rows.iter().filter(|row| row.contains(" leader ")).count(),
        1,
        "{table}"
    );
    assert!(
        table.contains(&format!("leader: {leader_id} (term ")),
        "{table}"
    );
    for (index, row) in rows.iter().enumerate() {
        assert!(row.contains(&format!("s{}", index + 1)), "{table}");
        assert!(
            row.contains(&format!("127.0.0.1:{}", ports[index])),
            "{table}"
        );
    }

    // The JSON, once settled: every server answered, names the same leader, and has applied
    // everything the leader committed.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let (code, output) = run_to_exit(&["status", "--servers", &servers, "--json"]);
        assert_eq!(code, Some(0), "{output}");
        let status: Value = serde_json::from_str(output.trim()).expect("one JSON object");
        let rows = status["servers"].as_array().expect("servers").clone();
        let commit = &rows[leader]["commit_index"];
        if rows
            .iter()
            .all(|row| &row["commit_index"] == commit && row["lag"] == 0)
        {
            break status;
        }
        assert!(Instant::now() < deadline, "never settled: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["leader"], leader_id.as_str(), "{status}");
    for (index, row) in status["servers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(row["id"], format!("s{}", index + 1));
        assert_eq!(row["reachable"], true);
        assert_eq!(row["leader"], leader_id.as_str(), "{status}");
        assert_eq!(row["applied_index"], row["commit_index"], "{status}");
        assert_eq!(
            row["role"],
            if index == leader {
                "leader"
            } else {
                "follower"
            },
            "{status}"
        );
    }

    // A follower dies: status still answers, with a row saying so and exit code 1.
    let victim = (leader + 1) % 3;
    cluster.servers[victim] = None;
    let (code, table) = run_to_exit(&["status", "--servers", &servers]);
    assert_eq!(code, Some(1), "{table}");
    let row = table
        .lines()
        .find(|line| line.contains(&format!("127.0.0.1:{} ", ports[victim])))
        .unwrap_or_else(|| panic!("a row for the dead server\n{table}"));
    assert!(row.contains("unreachable"), "{table}");
    assert!(
        table.contains(&format!("unreachable: 127.0.0.1:{}: ", ports[victim])),
        "{table}"
    );
    assert!(table.contains(&format!("leader: {leader_id} ")), "{table}");
    let link = format!("lockstep_peer_connected{{peer=\"s{}\"}}", victim + 1);
    scrape_until(
        &metrics[leader..=leader],
        "the leader sees the link down",
        &cluster,
        &|s| sample(&s[0], &link) == 0.0,
    );
    cluster.finish();
}

#[test]
fn a_metrics_address_that_cannot_be_served_exits_4_and_a_malformed_one_exits_2() {
    let dir = scratch_dir("metrics-taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    let port = free_ports(1)[0];
    let (code, output) = run_to_exit(&[
        "server",
        "--id",
        "s1",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.join("s1").to_str().unwrap(),
        "--metrics",
        &taken_address,
    ]);
    assert_eq!(code, Some(4), "{output}");
    assert!(
        output.contains(&format!(
            "cannot serve metrics on {taken_address} (--metrics)"
        )),
        "{output}"
    );
    let (code, output) = run_to_exit(&[
        "server",
        "--id",
        "s1",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.join("s1").to_str().unwrap(),
        "--metrics",
        "localhost:9101",
    ]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("--metrics"), "{output}");
    assert!(
        output.contains("is not IP:PORT to serve metrics on"),
        "{output}"
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(dir);
}

/// Sessions over real TCP, on the servers' monotonic clocks. A client registered with a 1 s
/// TTL takes lock `a`, renews once, and dies (it never renews again). The leader expires its
/// session by a replicated entry; another client polling for `a` gets it with a larger fencing
/// token, and the dead client's id is refused `session_expired` from then on.
#[test]
fn a_dead_clients_session_expires_and_another_client_takes_its_lock_with_a_larger_token() {
    let cluster = Cluster::start("session-expiry");
    let servers: Vec<String> = cluster
        .ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let options = ClientOptions {
        operation_timeout: DEADLINE,
        session_ttl: Some(Duration::from_secs(1)),
        ..ClientOptions::default()
    };
    let mut doomed = Client::new(servers.clone(), options).expect("valid addresses");
    let first_token = grant(&mut doomed, "a");
    let kept = doomed.keepalive().expect("a live session is kept alive");
    assert_eq!(kept.ttl, Some(Duration::from_secs(1)));
    assert!(kept.valid_until.is_some(), "a lease with a TTL");
    let credential = doomed.credential().expect("registered");
    drop(doomed); // dies: no more keepalives

    let mut other = cluster.client();
    let started = Instant::now();
    let second_token = loop {
        match other.preempt("a") {
            Ok(Preempt::Granted { token }) => break token,
            Ok(Preempt::HeldBy { owner }) => assert_eq!(owner, credential.id),
            Ok(other @ Preempt::PermitsMismatch { .. }) => panic!("no permits named: {other:?}"),
            Err(error) => panic!("preempt of a: {error}"),
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the dead client's lock never came free\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        second_token > first_token,
        "fencing token {second_token} after {first_token}"
    );
    let as_dead = ClientOptions {
        operation_timeout: DEADLINE,
        credential: Some(credential),
        ..ClientOptions::default()
    };
    let mut ghost = Client::new(servers, as_dead).expect("valid addresses");
    match ghost.keepalive() {
        Err(lockstep::client::Error::Rejected { code, .. }) => {
            assert_eq!(code.name(), "session_expired");
        }
        other => panic!("the dead client's keepalive: {other:?}"),
    }
    cluster.finish();
}
