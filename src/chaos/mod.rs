//! `lockstep chaos`: Jepsen for lockstep, on real processes. A local cluster of real
//! `lockstep server` processes, real clients through [`crate::client`], and a nemesis that
//! kills, pauses and cuts them apart, then a verdict on what the clients saw.
//!
//! - [`schedule`]: the seeded, printable fault schedule (pure).
//! - [`proxy`]: the TCP proxies on every peer link, through which partitions, one-way cuts,
//!   delays and losses happen.
//! - [`processes`]: the server processes: start, SIGKILL, SIGSTOP/SIGCONT, restart, reap.
//! - [`workload`]: the clients and the history they record.
//! - [`probe`]: who leads, and whether a healed server rejoined, asked from the outside.
//! - [`verdict`]: the end-of-run checks (pure): linearizability and monotonic reads as
//!   `lockstep check` runs them, fencing tokens, panics in the server logs.
//! - [`run`]: the run itself, tying them together.
//!
//! It sits beside [`crate::client`] and [`crate::loadgen`] as a client of the cluster: it uses
//! the client library and the wire protocol, and starts servers only as processes. Nothing in
//! `net` or `node` may depend on it. It never runs in the simulator, and never reaches beyond
//! loopback.

pub mod probe;
pub mod processes;
pub mod proxy;
pub mod run;
pub mod schedule;
pub mod verdict;
pub mod workload;

pub use run::{ChaosConfig, ChaosError, ChaosReport, FaultEvent, Observer, Progress, run};

use std::time::{Duration, Instant};

/// The run's one monotonic clock: every operation and every fault is stamped in nanoseconds
/// since the run began.
#[derive(Copy, Clone, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// `instant` on this clock (0 for instants before the start).
    pub fn ns_at(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.start).as_nanos();
        u64::try_from(nanos).expect("a run shorter than 584 years")
    }
}
