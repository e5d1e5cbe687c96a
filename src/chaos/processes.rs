//! The real `lockstep server` processes of a chaos run: started, killed with SIGKILL, paused
//! with SIGSTOP, resumed, restarted from their data directories, and always reaped.
//!
//! Every server is a child of this process, in its own process group (a terminal's Ctrl-C
//! reaches only chaos, which stops them), and on Linux asks the kernel to SIGKILL it if the
//! thread that started it dies: a chaos run killed with SIGKILL leaves no server behind.
//! Dropping [`Servers`] kills and reaps every child. Start them all from one long-lived thread
//! (chaos uses its main thread), since the kernel's parent-death signal follows the thread.
//!
//! Each server's stderr (its log) is appended to one file per server across all its lives,
//! with a line from chaos before each start, so the whole story of a server reads in order.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What chaos last did to a server.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum ServerState {
    Running,
    /// SIGSTOPped: alive, its sockets open, answering nothing.
    Paused,
    /// Not running: killed, stopped, or dead on its own.
    Down,
}

/// How to start one server.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub name: String,
    /// Its client and peer port.
    pub address: SocketAddr,
    /// Everything after `lockstep`: `server --id ... --listen ... --peer ... --data-dir ...`.
    pub args: Vec<OsString>,
    pub log: PathBuf,
}

struct Member {
    spec: ServerSpec,
    child: Option<Child>,
    state: ServerState,
    /// Starts so far, the first included.
    starts: u32,
}

/// The cluster's processes.
pub struct Servers {
    executable: PathBuf,
    members: Vec<Member>,
}

/// A server that exited without chaos stopping it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnexpectedExit {
    pub server: usize,
    pub status: String,
}

impl Servers {
    /// Nothing is started yet.
    pub fn new(executable: PathBuf, specs: Vec<ServerSpec>) -> Servers {
        let members = specs
            .into_iter()
            .map(|spec| Member {
                spec,
                child: None,
                state: ServerState::Down,
                starts: 0,
            })
            .collect();
        Servers {
            executable,
            members,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn name(&self, server: usize) -> &str {
        &self.members[server].spec.name
    }

    pub fn address(&self, server: usize) -> SocketAddr {
        self.members[server].spec.address
    }

    pub fn state(&self, server: usize) -> ServerState {
        self.members[server].state
    }

    pub fn log_path(&self, server: usize) -> &Path {
        &self.members[server].spec.log
    }

    /// Starts server `server` (which must be down), its log appended to. `at` is written into
    /// the log with the reason, on chaos's clock.
    pub fn start(&mut self, server: usize, at: Duration, why: &str) -> Result<(), String> {
        let member = &mut self.members[server];
        assert_eq!(
            member.state,
            ServerState::Down,
            "{}: started while not down",
            member.spec.name
        );
        let name = member.spec.name.clone();
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&member.spec.log)
            .map_err(|e| format!("{}: cannot open the log: {e}", member.spec.log.display()))?;
        member.starts += 1;
        let _ = writeln!(
            log,
            "=== chaos at {:.3}s: starting {name} (start {}): {why} ===",
            at.as_secs_f64(),
            member.starts
        );
        let mut command = Command::new(&self.executable);
        command
            .args(&member.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        die_with_this_thread(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        member.child = Some(child);
        member.state = ServerState::Running;
        Ok(())
    }

    /// SIGKILL and reap. A paused server dies too (SIGKILL needs no SIGCONT).
    pub fn kill(&mut self, server: usize) {
        let member = &mut self.members[server];
        if let Some(mut child) = member.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        member.state = ServerState::Down;
    }

    /// SIGSTOP: the process keeps its sockets and memory but runs no instruction.
    pub fn pause(&mut self, server: usize) {
        let member = &mut self.members[server];
        assert_eq!(
            member.state,
            ServerState::Running,
            "{}: paused while not running",
            member.spec.name
        );
        if let Some(child) = &member.child {
            signal(child, libc::SIGSTOP);
            member.state = ServerState::Paused;
        }
    }

    /// SIGCONT a paused server.
    pub fn resume(&mut self, server: usize) {
        let member = &mut self.members[server];
        if member.state != ServerState::Paused {
            return;
        }
        if let Some(child) = &member.child {
            signal(child, libc::SIGCONT);
        }
        member.state = ServerState::Running;
    }

    /// Asks every running server to stop (SIGCONT first for a paused one, then SIGTERM) and
    /// waits up to `grace` for each, then kills what is left. Servers stopped this way flushed
    /// everything they acknowledged. Returns the servers that did not stop cleanly (exit code
    /// 0) on their own: the status they ended with, or that they had to be killed.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<UnexpectedExit> {
        for member in &mut self.members {
            if let Some(child) = &member.child {
                if member.state == ServerState::Paused {
                    signal(child, libc::SIGCONT);
                }
                signal(child, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        let mut unclean = Vec::new();
        for (server, member) in self.members.iter_mut().enumerate() {
            if let Some(mut child) = member.child.take() {
                // Bounded by the deadline, then a kill.
                let status = loop {
                    match child.try_wait() {
                        Ok(Some(status)) if status.success() => break None,
                        Ok(Some(status)) => break Some(describe(status)),
                        Err(error) => break Some(error.to_string()),
                        Ok(None) if Instant::now() >= deadline => {
                            signal(&child, libc::SIGKILL);
                            let _ = child.wait();
                            break Some(format!("still running {grace:?} after SIGTERM; killed"));
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    }
                };
                if let Some(status) = status {
                    unclean.push(UnexpectedExit { server, status });
                }
            }
            member.state = ServerState::Down;
        }
        unclean
    }

    /// Servers chaos believes alive that have exited: each is reaped and marked down.
    pub fn reap_unexpected(&mut self) -> Vec<UnexpectedExit> {
        let mut exits = Vec::new();
        for (server, member) in self.members.iter_mut().enumerate() {
            let Some(child) = &mut member.child else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                exits.push(UnexpectedExit {
                    server,
                    status: describe(status),
                });
                member.child = None;
                member.state = ServerState::Down;
            }
        }
        exits
    }

    /// Waits until `server` accepts TCP connections, or `deadline`. Errors name the log.
    pub fn wait_listening(&mut self, server: usize, deadline: Instant) -> Result<(), String> {
        let address = self.members[server].spec.address;
        // Bounded by the deadline.
        loop {
            if let Some(exit) = self
                .reap_unexpected()
                .into_iter()
                .find(|e| e.server == server)
            {
                return Err(format!(
                    "{} exited while starting ({}); see {}",
                    self.name(server),
                    exit.status,
                    self.log_path(server).display()
                ));
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not accept connections on {address} in time; see {}",
                    self.name(server),
                    self.log_path(server).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for server in 0..self.members.len() {
            self.kill(server);
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid we spawned and have not reaped (the child is still held), so
    // it cannot name another process; it touches no memory.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Its own process group (a terminal's Ctrl-C reaches only chaos), and on Linux a SIGKILL
/// from the kernel when the starting thread dies.
fn die_with_this_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls are made: prctl(2) and
        // getppid(2), which allocate nothing and take no lock.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl: then nobody would ever signal.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
}
