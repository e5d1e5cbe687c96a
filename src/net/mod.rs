//! Network models.
//!
//! - [`sim`]: the seeded simulated network (latency with a long tail, drop, duplicate, reorder,
//!   partitions, one-way cuts). It decides the fate of each message; the simulator's event queue
//!   carries it out.
//! - [`protocol`]: the client wire protocol (newline-delimited JSON), as a pure codec.
//! - [`peer`]: server-to-server frames, handshake and the tokio peer transport.
//! - [`tls`]: optional TLS (rustls): PEM files, the server's, peers' and clients'
//!   configurations, and a tokio stream with or without TLS.
//! - [`metrics`]: what a server tells operators: Prometheus metrics over HTTP (`--metrics`)
//!   and the state a `status` request reports.
//! - [`alarm`]: one lazily re-armed timer for deadlines that nearly never fire (idle
//!   connections, the load generator's attempts).
//! - [`runtime`]: the server process: the node and its write-ahead log on one thread, clients
//!   and peers on tokio, all on one listening port.

pub mod alarm;
pub mod metrics;
pub mod peer;
pub mod protocol;
pub mod runtime;
pub mod sim;
pub mod tls;

pub use sim::{Endpoint, LatencyTail, NetworkParams, SimNetwork, Transmission};
