//! The subcommands of a real deployment. They only parse flags and call the library: the
//! server lives in `lockstep::net::runtime`, the client in `lockstep::client`.
//! - `server`, `cluster up`: run servers.
//! - `client`, `lock`, and `bench --servers`: talk to them.

pub mod client;
pub mod cluster;
pub mod loadgen;
pub mod lock;
pub mod server;
