//! Every subcommand, one module each; `main.rs` only parses the command line and dispatches
//! here. They only parse flags, print, and call the library: the server lives in
//! `lockstep::net::runtime`, the client in `lockstep::client`, the TCP load generator in
//! `lockstep::loadgen`, the simulator and explorer in `lockstep::sim`.
//! - `server`, `cluster up`: run servers.
//! - `client`, `lock`: talk to them; `watch`: follow a lock's changes.
//! - `bench`: measure the simulator's suites, or (`bench --servers`, in `loadgen`) load a real
//!   cluster.
//! - `run`: play scenario files through the simulator (`lockstep::sim::runner`).
//! - `explore`: flags and tables around `lockstep::sim::explore` and `lockstep::sim::shard`.
//! - `check`: judge a history, from the simulator or from anywhere else.
//! - `status`: ask every server of a cluster how it is doing (`lockstep::client::server_status`).
//! - `chaos`: a real cluster under a nemesis, its history checked (`lockstep::chaos`).

pub mod bench;
#[cfg(unix)]
pub mod chaos;
pub mod check;
pub mod client;
pub mod cluster;
pub mod explore;
pub mod loadgen;
pub mod lock;
pub mod run;
pub mod server;
pub mod status;
pub mod watch;

use std::process::Child;

/// Asks a child process to stop (SIGTERM), so that it can clean up; callers kill it after a
/// grace period. Without Unix signals this does nothing and the grace period simply passes.
#[cfg(unix)]
pub fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet, so it cannot name another
    // process; it touches no memory.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

#[cfg(not(unix))]
pub fn terminate(child: &Child) {
    let _ = child;
}
