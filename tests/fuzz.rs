//! Fuzzing on the stable toolchain: every input that comes from outside a server (its data
//! directory, its peers, its clients, scenario files) fed random bytes and mutations of valid
//! inputs, with a property for each beyond "did not panic".
//!
//! `cargo test --test fuzz` runs a short, fixed set of cases per target; see `harness` for
//! the knobs that run them for as long as you like, and README's "Fuzzing" for the commands.

mod common;
#[path = "fuzz/handshake.rs"]
mod handshake;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/peer_frame.rs"]
mod peer_frame;
#[path = "fuzz/protocol.rs"]
mod protocol;
#[path = "fuzz/scenario.rs"]
mod scenario;
#[path = "fuzz/server_step.rs"]
mod server_step;
#[path = "fuzz/storage.rs"]
mod storage;
