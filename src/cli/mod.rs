//! The subcommands that talk to a real cluster over TCP.

pub mod client;
pub mod loadgen;
pub mod lock;
