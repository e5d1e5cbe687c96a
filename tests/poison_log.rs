//! Apply is total: a data directory whose log already holds entries no leader should have
//! appended (a preempt by a client id no hello issued, a lock name over the limit, a seq
//! reused for another operation) still starts, commits them as refusals, and serves.
//!
//! Story: before lockstep checked its inputs, one line from any client,
//! `{"op":"preempt","client":999999,...}`, was appended, committed, and panicked every server
//! that applied it, at every restart. Here three data directories are written with the storage
//! API as such a cluster left them; three real servers start from them, elect a leader, apply
//! the poison, and serve a new client, before and after all of them restart.
//!
//! Every spawned process is killed and reaped by a guard, even when an assertion fails. No
//! assertion is on timing: every wait polls up to a generous deadline.

use lockstep::client::{Check, Client, ClientOptions, Preempt};
use lockstep::node::{ClientId, ClientSecret, Command, Consistency, Entry, PersistOp, ServerId};
use lockstep::storage::Wal;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const SERVERS: usize = 3;

/// The three servers; dropping it kills and reaps every one still running.
struct Servers {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Servers {
    fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.join(format!("s{}", index + 1))
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("s{}.log", index + 1))
    }

    fn spawn(&mut self, index: usize) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(index))
            .unwrap();
        let mut command = Process::new(env!("CARGO_BIN_EXE_lockstep"));
        command
            .args(["server", "--id", &format!("s{}", index + 1)])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[index])])
            .arg("--data-dir")
            .arg(self.data_dir(index))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (peer, port) in self.ports.iter().enumerate() {
            if peer != index {
                command.args(["--peer", &format!("s{}=127.0.0.1:{port}", peer + 1)]);
            }
        }
        self.children[index] = Some(command.spawn().expect("the lockstep binary starts"));
    }

    /// Kills every server, then starts each again from its data directory.
    fn restart_all(&mut self) {
        for child in self.children.iter_mut() {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for index in 0..SERVERS {
            self.spawn(index);
        }
    }

    fn client(&self) -> Client {
        let servers = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let options = ClientOptions {
            operation_timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        };
        Client::new(servers, options).expect("valid addresses")
    }

    /// Every server still running (none exited, as one that panicked would), and what they
    /// logged so far.
    fn assert_all_running(&mut self) {
        for (index, child) in self.children.iter_mut().enumerate() {
            let child = child.as_mut().expect("started");
            let status = child.try_wait().expect("waitable");
            assert!(
                status.is_none(),
                "s{} exited ({status:?})\n{}",
                index + 1,
                std::fs::read_to_string(self.log_path(index)).unwrap_or_default()
            );
        }
        for index in 0..SERVERS {
            let log = std::fs::read_to_string(self.log_path(index)).unwrap_or_default();
            assert!(!log.contains("panicked"), "s{} panicked\n{log}", index + 1);
        }
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()))
}

fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

/// The log a cluster of the old code could have written, in term 1 under leader s1: a no-op,
/// client#1's registration and its grant of `held`, then three entries that no leader appends
/// any more.
fn poisoned_log() -> Vec<Entry> {
    let at_term_1 = |command| Entry { term: 1, command };
    vec![
        at_term_1(Command::Noop),
        at_term_1(Command::Register {
            nonce: 1,
            secret: Some(ClientSecret::from_bytes([0x11; 16])),
        }),
        at_term_1(Command::Preempt {
            client: ClientId(1),
            seq: 1,
            lock: "held".into(),
        }),
        // The poison line: a client id no hello issued.
        at_term_1(Command::Preempt {
            client: ClientId(999_999),
            seq: 2,
            lock: "ghost".into(),
        }),
        // A lock name over the protocol's limit.
        at_term_1(Command::Preempt {
            client: ClientId(1),
            seq: 2,
            lock: "x".repeat(300).into(),
        }),
        // Client#1's seq 1 again, for another operation.
        at_term_1(Command::Release {
            client: ClientId(1),
            seq: 1,
            lock: "held".into(),
        }),
    ]
}

fn write_poisoned_data_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (mut wal, _) = Wal::open(dir).expect("a fresh data directory opens");
    wal.append(&[
        PersistOp::HardState {
            term: 1,
            voted_for: Some(ServerId(1)),
        },
        PersistOp::Append {
            first_index: 1,
            entries: poisoned_log(),
        },
    ])
    .expect("the storage API appends");
    wal.sync().expect("and syncs");
}

/// Polls `attempt` until it returns `Some`, or fails the test with `what`.
fn eventually<T>(what: &str, mut attempt: impl FnMut() -> Result<Option<T>, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    let mut last = String::new();
    while Instant::now() < deadline {
        match attempt() {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(problem) => last = problem,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {DEADLINE:?}; last: {last}");
}

/// A new client takes lock `fresh` and sees `held` with its owner, `ghost` free.
fn assert_serves(servers: &Servers, lock: &str) {
    let mut client = servers.client();
    let token = eventually(&format!("a grant of `{lock}`"), || {
        match client.preempt(lock) {
            Ok(Preempt::Granted { token }) => Ok(Some(token)),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(token > 6, "granted after the poisoned entries, at {token}");
    let check = |name| client_check(&mut servers.client(), name);
    assert_eq!(
        check("held"),
        Check::Owner {
            owner: ClientId(1),
            token: 3
        },
        "the old grant stands: the reused seq released nothing"
    );
    assert_eq!(
        check("ghost"),
        Check::Free,
        "the unknown client got nothing"
    );
}

fn client_check(client: &mut Client, name: &str) -> Check {
    eventually(&format!("a linearizable check of `{name}`"), || {
        client
            .check(name, Consistency::Linearizable)
            .map(Some)
            .map_err(|error| error.to_string())
    })
}

#[test]
fn a_cluster_whose_logs_hold_poisoned_entries_starts_applies_them_as_refusals_and_serves() {
    let dir = scratch_dir("poisoned-log");
    let mut servers = Servers {
        ports: free_ports(SERVERS),
        children: (0..SERVERS).map(|_| None).collect(),
        dir,
    };
    for index in 0..SERVERS {
        write_poisoned_data_dir(&servers.data_dir(index));
    }
    for index in 0..SERVERS {
        servers.spawn(index);
    }
    for port in servers.ports.clone() {
        eventually(&format!("port {port} listening"), || {
            Ok(TcpStream::connect(("127.0.0.1", port)).ok())
        });
    }
    assert_serves(&servers, "fresh");
    servers.assert_all_running();

    // Replay repeats the poison at every start: it must be harmless every time.
    servers.restart_all();
    assert_serves(&servers, "fresh-after-restart");
    servers.assert_all_running();

    let dir = servers.dir.clone();
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}
