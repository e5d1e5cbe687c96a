//! Talking to the other servers of a cluster over TCP.
//!
//! - [`frame`]: length-prefixed frames and what they carry, as a pure codec.
//! - [`handshake`]: the preamble that tells peers from clients on a shared port, and the
//!   handshake that keeps servers of other clusters, versions or ids out and, with a cluster
//!   secret, authenticates both sides by mutual HMAC challenge-response. Pure.
//! - [`transport`]: the tokio tasks that carry the node's peer messages.

pub mod frame;
pub mod handshake;
pub mod transport;

pub use frame::{FRAME_BYTES_MAX, FrameDecoder, FrameError, PeerFrame};
pub use handshake::{Handshake, PEER_MAGIC, PEER_PROTOCOL_VERSION, Refusal, Sniffed, sniff};
pub use transport::{
    PeerIdentity, PeerSender, PeerTiming, refuse_inbound, serve_inbound, spawn_outbound,
};
