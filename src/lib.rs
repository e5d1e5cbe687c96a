//! lockstep: a distributed lock service whose whole protocol lives in pure, event-driven state
//! machines (`node`), proven under faults by a seeded deterministic simulator (`sim`, `net`).
//!
//! The crate is laid out like the machine it tests:
//! - [`node`]: servers (Raft roles), the client, the replicated lock table and the messages.
//!   Pure: no sockets, threads, clocks or unseeded randomness. Time comes in as an argument and
//!   effects go out as values.
//! - [`net`]: network models and transports: the seeded simulated network, the client wire
//!   protocol, and the peer transport and server runtime over TCP. It never depends on
//!   [`client`]: servers do not call clients.
//! - [`sim`]: event queue and clock, cluster, faults, workload, checkers, scenario files and the
//!   runner behind `lockstep run`.
//! - [`storage`]: the write-ahead log and snapshots that keep a real server's durable state on
//!   disk.
//! - [`client`]: a blocking TCP client for a real cluster, with the simulator client's retry
//!   rules (used by `lockstep client` and `lockstep lock`).
//! - [`loadgen`]: the closed-loop TCP load generator behind `lockstep bench --servers`, a bench
//!   tool built on the wire protocol and judging replies with [`client`]'s rules.
//! - [`chaos`]: `lockstep chaos`, Jepsen for lockstep: real server processes, real clients
//!   through [`client`], a nemesis of kills, pauses and network faults, and a checked history.

#[cfg(unix)]
pub mod chaos;
pub mod client;
pub mod loadgen;
pub mod net;
pub mod node;
pub mod sim;
pub mod storage;
