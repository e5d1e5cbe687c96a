//! A real three-server cluster for integration tests: three `lockstep server` processes on
//! free 127.0.0.1 ports, each with its data directory and its stderr log (at `RUST_LOG=info`)
//! in a scratch directory, started until every server listens and a leader commits.
//!
//! Calling contract:
//! - [`Cluster::start`] returns only once a registration was answered, so a leader was
//!   elected and commits. It panics, naming the reason and showing the servers' logs, when
//!   no leader comes within [`CLUSTER_DEADLINE`]; a port taken between choosing and binding
//!   (a server exits at once) starts the whole cluster again on new ports, at most five times.
//! - Dropping the cluster, also when a test's assertion fails, thaws (`SIGCONT`) every server
//!   a test froze, kills and reaps it, then removes the scratch directory.
//! - Every wait here polls up to [`CLUSTER_DEADLINE`] and never asserts on timing.
//!
//! Servers are `s1` to `s3`; [`Cluster::addresses`] lists them in that order.

use super::{Guarded, Scratch, all_listening, free_ports, server_command, signal};
use lockstep::client::{Client, ClientOptions, server_status};
use lockstep::node::Role;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long any wait of the cluster (start, a leader, a commit) may take before the test
/// fails, and the operation timeout of the clients it makes. Generous: the machine is shared.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(60);

/// The servers of one test. Fields are private: tests use the methods, so that the guard
/// order (servers killed before their directory is removed) holds.
pub struct Cluster {
    // Declared first, dropped first: the servers die before their directory goes.
    servers: Vec<Guarded>,
    ports: Vec<u16>,
    dir: Scratch,
    /// Given to every server, also when restarted.
    flags: Vec<String>,
}

impl Cluster {
    /// Three servers with a leader, in a scratch directory named after `name` (unique per
    /// test in a binary).
    pub fn start(name: &str) -> Cluster {
        Cluster::start_with(name, &[])
    }

    /// [`Cluster::start`] with `flags` given to every server.
    pub fn start_with(name: &str, flags: &[&str]) -> Cluster {
        for attempt in 0..5 {
            let dir = Scratch::new(&format!("{name}-{attempt}"));
            let ports = free_ports(3);
            let servers = (0..3).map(|index| spawn_server(&dir.0, &ports, index, flags));
            let mut cluster = Cluster {
                servers: servers.collect(),
                ports,
                dir,
                flags: flags.iter().map(ToString::to_string).collect(),
            };
            if all_listening(&mut cluster.servers, &cluster.ports, CLUSTER_DEADLINE) {
                cluster.wait_for_a_leader();
                return cluster;
            }
        }
        panic!("could not start a cluster on free ports after 5 attempts");
    }

    /// A registration answered: a leader was elected and commits.
    fn wait_for_a_leader(&self) {
        let mut client = self.client(None);
        if let Err(error) = client.register() {
            panic!(
                "no leader within {CLUSTER_DEADLINE:?}: {error}\n{}",
                self.logs()
            );
        }
    }

    /// `127.0.0.1:PORT` of s1, s2 and s3, in that order.
    pub fn addresses(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The addresses as one comma-separated list, as `--servers` takes them.
    pub fn servers_flag(&self) -> String {
        self.addresses().join(",")
    }

    /// A library client of every server, registering (on its first write, or `register`)
    /// with a session of `ttl` (none: a session that never expires); its operations time out
    /// after [`CLUSTER_DEADLINE`].
    pub fn client(&self, ttl: Option<Duration>) -> Client {
        client_of(self.addresses(), ttl)
    }

    /// The server that leads now and one that follows it, by their own `status`: waits until
    /// one says it leads and another names a leader.
    pub fn leader_and_follower(&self) -> (String, String) {
        let give_up_at = Instant::now() + CLUSTER_DEADLINE;
        // Bounded by the deadline.
        loop {
            let reports: Vec<_> = self
                .addresses()
                .into_iter()
                .filter_map(|address| {
                    let report = server_status(&address, None, Duration::from_secs(2)).ok()?;
                    Some((address, report.status.role, report.status.leader))
                })
                .collect();
            let leader = reports.iter().find(|(_, role, _)| *role == Role::Leader);
            let follower = reports
                .iter()
                .find(|(_, role, leader)| *role == Role::Follower && leader.is_some());
            if let (Some(leader), Some(follower)) = (leader, follower) {
                return (leader.0.clone(), follower.0.clone());
            }
            assert!(
                Instant::now() < give_up_at,
                "no settled leader: {reports:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader's commit index now.
    pub fn commit_index(&self) -> u64 {
        let (leader, _) = self.leader_and_follower();
        server_status(&leader, None, Duration::from_secs(5))
            .expect("the leader answers status")
            .status
            .commit_index
    }

    /// Runs `start`, then waits until the leader committed something past what it had before:
    /// the entry `start` caused, when nothing else writes meanwhile (a waiter's `Acquire`, so
    /// that the next waiter is known to queue behind it).
    pub fn until_committed_past<T>(&self, start: impl FnOnce() -> T) -> T {
        let before = self.commit_index();
        let started = start();
        let give_up_at = Instant::now() + CLUSTER_DEADLINE;
        // Bounded by the deadline.
        while self.commit_index() <= before {
            assert!(
                Instant::now() < give_up_at,
                "nothing new reached the log past index {before}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        started
    }

    /// Freezes every server (SIGSTOP), as a partition from the clients would look: the kernel
    /// accepts connections and nobody answers. Dropping the cluster thaws them.
    pub fn freeze(&self) {
        for server in &self.servers {
            signal(server.0.id(), libc::SIGSTOP);
        }
    }

    /// Waits until the server at `address` has applied `index` (a follower knows a client only
    /// once it applied the client's registration).
    pub fn until_applied(&self, address: &str, index: u64) {
        let give_up_at = Instant::now() + CLUSTER_DEADLINE;
        // Bounded by the deadline.
        while server_status(address, None, Duration::from_secs(2))
            .map_or(true, |report| report.applied_index < index)
        {
            assert!(
                Instant::now() < give_up_at,
                "{address} never applied {index}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pauses the server listening at `address` (SIGSTOP): its connections stay open and
    /// silent. Dropping the cluster thaws it.
    pub fn pause(&self, address: &str) {
        signal(self.servers[self.position(address)].0.id(), libc::SIGSTOP);
    }

    /// Kills the server listening at `address`, and reaps it.
    pub fn kill(&mut self, address: &str) {
        let position = self.position(address);
        let server = &mut self.servers[position].0;
        server.kill().expect("kill the server");
        server.wait().expect("reap the server");
    }

    /// Starts the server at `address` again (killed before, by [`Cluster::kill`]) on its data
    /// directory, and waits until it listens.
    pub fn restart(&mut self, address: &str) {
        let position = self.position(address);
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.servers[position] = spawn_server(&self.dir.0, &self.ports, position, &flags);
        assert!(
            all_listening(
                &mut self.servers[position..=position],
                &self.ports[position..=position],
                CLUSTER_DEADLINE
            ),
            "{address} did not listen again\n{}",
            self.logs()
        );
    }

    /// Which of s1 to s3 listens at `address`.
    fn position(&self, address: &str) -> usize {
        (self.addresses().iter())
            .position(|listed| listed == address)
            .expect("a listed server")
    }

    /// Every server's stderr log, for failure messages.
    pub fn logs(&self) -> String {
        (1..=3)
            .map(|id| {
                let log = std::fs::read_to_string(self.dir.0.join(format!("s{id}.log")));
                format!("--- s{id} ---\n{}", log.unwrap_or_default())
            })
            .collect()
    }
}

/// A library client of `servers` only (one follower, say), as [`Cluster::client`] makes them.
pub fn client_of(servers: Vec<String>, ttl: Option<Duration>) -> Client {
    let options = ClientOptions {
        operation_timeout: CLUSTER_DEADLINE,
        session_ttl: ttl,
        ..ClientOptions::default()
    };
    Client::new(servers, options).expect("valid addresses")
}

/// Server `index` (s1 is 0) of the cluster on `ports`, with `flags`, its data directory and
/// its stderr log in `dir`.
fn spawn_server(dir: &Path, ports: &[u16], index: usize, flags: &[&str]) -> Guarded {
    let id = format!("s{}", index + 1);
    let log = std::fs::File::create(dir.join(format!("{id}.log"))).expect("a log file");
    let mut command = server_command(index, ports);
    command
        .args(flags)
        .arg("--data-dir")
        .arg(dir.join(&id))
        .env("RUST_LOG", "info")
        .stderr(Stdio::from(log));
    Guarded(command.spawn().expect("the lockstep binary starts"))
}
