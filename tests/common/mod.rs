//! Helpers that several integration-test binaries share: running the built `lockstep`, scratch
//! directories that remove themselves, real server processes on free ports under guards that
//! kill them, the log entries storage stories write, and simulator runs traced to memory.
//!
//! Each test binary compiles this module and uses only a part of it, hence the `allow` below.
#![allow(dead_code)]

pub mod cluster;

use lockstep::node::{Claim, ClientId, Command, Entry, PersistOp, ServerId, Term};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command as Process, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the built binary with `args` and waits for it.
pub fn lockstep(args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .expect("run lockstep")
}

/// Output bytes as text, for assertions and failure messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory removed when the test ends, pass or fail. Named after the test binary,
/// the story and this process, so that test binaries and runs never share one.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let crate_name = env!("CARGO_CRATE_NAME");
        let dir = std::env::temp_dir().join(format!(
            "lockstep-{crate_name}-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// Writes `text` to the file `name` in the directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process this test started; dropping it thaws it (a test may have frozen it with SIGSTOP),
/// kills it and reaps it, so that it never outlives a failed assertion.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        signal(self.0.id(), libc::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` to process `pid`; a pid that no longer exists is no error.
pub fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) touches no memory; `pid` is a process the test started.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Loopback ports that were free a moment ago (all bound at once, so they differ). Another
/// process may take one before a server binds it: callers retry on new ports.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("bound").port())
        .collect()
}

/// `lockstep server` number `index` (s1, s2, ...) of the cluster whose client ports are
/// `client_ports`, listening on its own and naming the others as peers, with no stdin or
/// stdout. The caller adds the data directory, stderr and any other flag.
pub fn server_command(index: usize, client_ports: &[u16]) -> Process {
    let mut command = Process::new(env!("CARGO_BIN_EXE_lockstep"));
    command
        .args(["server", "--id", &format!("s{}", index + 1)])
        .args(["--listen", &format!("127.0.0.1:{}", client_ports[index])])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (peer, port) in client_ports.iter().enumerate() {
        if peer != index {
            command.args(["--peer", &format!("s{}=127.0.0.1:{port}", peer + 1)]);
        }
    }
    command
}

/// True once every server accepts connections on its port; false as soon as one has exited (a
/// port taken before it bound: start again on new ports). Panics past `deadline`.
pub fn all_listening(servers: &mut [Guarded], ports: &[u16], deadline: Duration) -> bool {
    let give_up_at = Instant::now() + deadline;
    for (server, port) in servers.iter_mut().zip(ports) {
        let address = SocketAddr::from(([127, 0, 0, 1], *port));
        // Bounded by the deadline.
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Ok(Some(_)) = server.0.try_wait() {
                return false;
            }
            assert!(
                Instant::now() < give_up_at,
                "127.0.0.1:{port} never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    true
}

/// A preempt of `lock` by `client` (seq `client * 10`), in `term`.
pub fn preempt(term: Term, client: u64, lock: &str) -> Entry {
    Entry {
        term,
        command: Command::Preempt {
            client: ClientId(client),
            seq: client * 10,
            lock: lock.into(),
            claim: Claim::EXCLUSIVE,
        },
    }
}

pub fn noop(term: Term) -> Entry {
    Entry {
        term,
        command: Command::Noop,
    }
}

/// The hard state of a server that voted for `s<server>` in `term`.
pub fn vote(term: Term, server: u32) -> PersistOp {
    PersistOp::HardState {
        term,
        voted_for: Some(ServerId(server)),
        recovering: false,
    }
}

pub fn append(first_index: u64, entries: Vec<Entry>) -> PersistOp {
    PersistOp::Append {
        first_index,
        entries,
    }
}

/// The proptest configuration of the property binaries: the same cases on every run and machine
/// (a fixed ChaCha seed, no failure files), `default_cases` of them unless
/// `LOCKSTEP_PROPTEST_CASES` (or proptest's own `PROPTEST_CASES`) asks for more, and other
/// cases when `LOCKSTEP_PROPTEST_SEED` names another seed.
pub fn proptest_config(default_cases: u32, default_seed: u64) -> proptest::test_runner::Config {
    let cases = ["LOCKSTEP_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .unwrap_or(default_cases);
    let seed = std::env::var("LOCKSTEP_PROPTEST_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default_seed);
    proptest::test_runner::Config {
        cases,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// A trace sink a test can read back after the run.
#[derive(Clone, Default)]
struct SharedBuffer(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `scenario` in the simulator with every event traced to memory: its report and the
/// trace's JSON Lines.
pub fn run_traced(
    scenario: &lockstep::sim::scenario::Scenario,
) -> (lockstep::sim::report::RunReport, Vec<u8>) {
    let buffer = SharedBuffer::default();
    let options = lockstep::sim::runner::RunOptions {
        trace: Some(Box::new(buffer.clone())),
        ..lockstep::sim::runner::RunOptions::default()
    };
    let report =
        lockstep::sim::runner::run(scenario, options).expect("an in-memory trace cannot fail");
    (report, buffer.0.take())
}
