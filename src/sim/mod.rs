//! The deterministic simulator: event queue and simulated clock, the cluster it drives,
//! faults, workload generation, checkers, scenario files and the runner behind `lockstep run`.
//!
//! Everything here is single-threaded and seeded. One ChaCha stream per subsystem is derived
//! from the scenario seed ([`rng::Streams`]), so the same scenario and seed give a byte-identical
//! trace, and turning one knob does not reshuffle another subsystem's randomness. Nothing here
//! may read a clock or iterate a hash map.

pub mod bench;
pub mod checkers;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod durability;
pub mod explore;
pub mod fairness;
pub mod guidance;
pub mod history;
pub mod lease;
pub mod linearizability;
pub mod queue;
pub mod report;
pub mod resource;
pub mod rng;
pub mod rogue;
pub mod runner;
pub mod scenario;
pub mod scenario_yaml;
pub mod session_expiry;
pub mod shard;
pub mod swarm;
pub mod timeline;
pub mod trace;
pub mod watch;
pub mod workload;

/// Serialises a `Duration` as fractional milliseconds (for reports and traces).
pub mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64() * 1_000.0)
    }
}
