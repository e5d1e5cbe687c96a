//! Commands that run a real deployment: `lockstep server` and `lockstep cluster up`. These
//! only parse and call; the server itself lives in `lockstep::net::runtime`.

pub mod cluster;
pub mod server;
