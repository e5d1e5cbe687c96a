//! Network models.
//!
//! - [`sim`]: the seeded simulated network (latency with a long tail, drop, duplicate, reorder,
//!   partitions, one-way cuts). It decides the fate of each message; the simulator's event queue
//!   carries it out.
//! - [`protocol`]: the client wire protocol (newline-delimited JSON), as a pure codec.

pub mod protocol;
pub mod sim;

pub use sim::{Endpoint, LatencyTail, NetworkParams, SimNetwork, Transmission};
