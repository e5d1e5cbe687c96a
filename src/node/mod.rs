//! The lock service's protocol as pure state machines: servers (Raft with pre-vote and
//! check-quorum), the client, the replicated lock table and the messages between them.
//!
//! This module must never touch a socket, thread, clock or unseeded random source, and must
//! never depend on hash-map iteration order. Every entry point takes `now` and returns effects;
//! the driver (simulator or TCP runtime) carries them out. That is what lets the simulator prove
//! the very code that serves real clients.

pub mod client;
pub mod coverage;
pub mod lock_table;
pub mod log;
pub mod messages;
pub mod server;
pub mod time;
pub mod watch;

pub use client::{
    Client, ClientConfig, ClientError, ClientInput, ClientOutput, ClientTimer, Refused,
};
pub use lock_table::{Decision, Holder, LastRequest, LockTable, Settled, Waiter, Woken, WriteKind};
pub use log::{DurableState, PersistOp, RaftLog};
pub use messages::*;
pub use server::{Role, Server, ServerConfig, ServerInput, ServerOutput, ServerTimer};
pub use time::Time;
