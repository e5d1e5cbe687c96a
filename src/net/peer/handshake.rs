//! How a server recognises a peer connection and decides whether to talk to it, as pure code.
//!
//! A peer connection opens with a preamble: the magic `LSTEPPEER` and the peer protocol
//! version as a big-endian `u32`. A handshake frame follows ([`PeerFrame::Handshake`]) naming
//! the cluster, the sender and the server it meant to reach. The acceptor answers
//! [`PeerFrame::Accepted`] or [`PeerFrame::Refused`] with the reason, then closes on refusal.
//! Clients share the listening port: anything that does not start with the magic is the
//! client protocol (a JSON line starts with `{` or whitespace, never with `L`).
//!
//! This module must never touch a socket; the transport calls it.

use super::frame::{PeerFrame, encode_peer_frame};
use crate::node::ServerId;
use serde::{Deserialize, Serialize};

/// The first bytes of every peer connection.
pub const PEER_MAGIC: &[u8; 9] = b"LSTEPPEER";

/// The peer protocol version this build speaks. Change it whenever frames change meaning.
pub const PEER_PROTOCOL_VERSION: u32 = 1;

/// Bytes of the preamble: the magic and the version.
pub const PREAMBLE_BYTES: usize = PEER_MAGIC.len() + 4;

/// Longest cluster id, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = 128;

/// What the first bytes of an accepted connection say it is.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Sniffed {
    /// It starts with the magic: a peer.
    Peer,
    /// It cannot be a peer: the client protocol.
    Client,
    /// Every byte so far matches the magic, but not all of it has arrived.
    NeedMore,
}

/// Classifies a connection from its first bytes (possibly fewer than the magic).
pub fn sniff(first_bytes: &[u8]) -> Sniffed {
    let compared = first_bytes.len().min(PEER_MAGIC.len());
    if first_bytes[..compared] != PEER_MAGIC[..compared] {
        Sniffed::Client
    } else if compared == PEER_MAGIC.len() {
        Sniffed::Peer
    } else {
        Sniffed::NeedMore
    }
}

/// Reads the version from a preamble; `None` when the magic is wrong.
pub fn decode_preamble(preamble: &[u8; PREAMBLE_BYTES]) -> Option<u32> {
    if &preamble[..PEER_MAGIC.len()] != PEER_MAGIC {
        return None;
    }
    let version = &preamble[PEER_MAGIC.len()..];
    Some(u32::from_be_bytes(version.try_into().expect("four bytes")))
}

/// The connector's introduction.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Handshake {
    pub version: u32,
    pub cluster_id: String,
    pub from: ServerId,
    /// The server the connector meant to reach, so that a misconfigured address is caught.
    pub to: ServerId,
}

/// Why an acceptor refuses a peer.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not a lockstep peer (bad magic)")]
    BadMagic,
    #[error("not a lockstep peer handshake: {0}")]
    Malformed(String),
    #[error("peer protocol version {theirs}, but this server speaks version {ours}")]
    Version { ours: u32, theirs: u32 },
    #[error("cluster id {theirs:?}, but this server belongs to cluster {ours:?}")]
    Cluster { ours: String, theirs: String },
    #[error("sender {from} is not a member of this cluster")]
    UnknownSender { from: ServerId },
    #[error("sender {from} claims this server's own id")]
    FromSelf { from: ServerId },
    #[error("the connection was meant for {intended}, but this is {me}")]
    WrongReceiver { intended: ServerId, me: ServerId },
}

impl Handshake {
    /// This build's handshake from `from` to `to`.
    pub fn new(cluster_id: &str, from: ServerId, to: ServerId) -> Handshake {
        assert_ne!(from, to, "a server never connects to itself");
        Handshake {
            version: PEER_PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            from,
            to,
        }
    }

    /// What the connector sends first: the preamble, then this handshake as a frame.
    pub fn encode_opening(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREAMBLE_BYTES + 128);
        out.extend_from_slice(PEER_MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        encode_peer_frame(&PeerFrame::Handshake(self.clone()), &mut out)
            .expect("a handshake is small");
        assert!(out.len() > PREAMBLE_BYTES, "the opening holds a frame");
        out
    }

    /// The acceptor's verdict: may `self.from` talk to server `me` of `cluster_id`, whose
    /// members are `servers` (`me` included)?
    pub fn check(
        &self,
        cluster_id: &str,
        me: ServerId,
        servers: &[ServerId],
    ) -> Result<(), Refusal> {
        assert!(
            servers.contains(&me),
            "the acceptor is a member of its cluster"
        );
        if self.version != PEER_PROTOCOL_VERSION {
            return Err(Refusal::Version {
                ours: PEER_PROTOCOL_VERSION,
                theirs: self.version,
            });
        }
        if self.cluster_id != cluster_id {
            return Err(Refusal::Cluster {
                ours: cluster_id.to_string(),
                theirs: quoted_prefix(&self.cluster_id),
            });
        }
        if self.from == me {
            return Err(Refusal::FromSelf { from: self.from });
        }
        if !servers.contains(&self.from) {
            return Err(Refusal::UnknownSender { from: self.from });
        }
        if self.to != me {
            return Err(Refusal::WrongReceiver {
                intended: self.to,
                me,
            });
        }
        Ok(())
    }
}

/// A bounded copy of text the other side chose, for a log line.
fn quoted_prefix(text: &str) -> String {
    text.chars().take(CLUSTER_ID_BYTES_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::peer::frame::{FrameDecoder, decode_peer_frame};

    const SERVERS: [ServerId; 3] = [ServerId(1), ServerId(2), ServerId(3)];

    #[test]
    fn sniffing_tells_peers_from_clients_on_the_first_bytes() {
        assert_eq!(sniff(b"LSTEPPEER\0\0\0\x01"), Sniffed::Peer);
        assert_eq!(sniff(b"LSTEP"), Sniffed::NeedMore);
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(b"{\"seq\":1,\"op\":\"hello\"}\n"), Sniffed::Client);
        assert_eq!(sniff(b"LSTEPX"), Sniffed::Client);
        assert_eq!(sniff(b"\n"), Sniffed::Client);
    }

    #[test]
    fn the_opening_decodes_to_the_preamble_and_the_handshake() {
        let handshake = Handshake::new("lockstep", ServerId(1), ServerId(2));
        let opening = handshake.encode_opening();
        let preamble: [u8; PREAMBLE_BYTES] = opening[..PREAMBLE_BYTES].try_into().unwrap();
        assert_eq!(decode_preamble(&preamble), Some(PEER_PROTOCOL_VERSION));
        let frames = FrameDecoder::new()
            .feed(&opening[PREAMBLE_BYTES..])
            .unwrap();
        assert_eq!(
            decode_peer_frame(&frames[0]).unwrap(),
            PeerFrame::Handshake(handshake.clone())
        );
        assert_eq!(handshake.check("lockstep", ServerId(2), &SERVERS), Ok(()));
    }

    #[test]
    fn a_bad_magic_is_not_a_preamble() {
        let mut preamble = [0u8; PREAMBLE_BYTES];
        preamble[..9].copy_from_slice(b"LSTEPPEAR");
        assert_eq!(decode_preamble(&preamble), None);
    }

    #[test]
    fn another_version_is_refused() {
        let mut handshake = Handshake::new("lockstep", ServerId(1), ServerId(2));
        handshake.version = PEER_PROTOCOL_VERSION + 1;
        assert_eq!(
            handshake.check("lockstep", ServerId(2), &SERVERS),
            Err(Refusal::Version {
                ours: PEER_PROTOCOL_VERSION,
                theirs: PEER_PROTOCOL_VERSION + 1
            })
        );
    }

    #[test]
    fn another_cluster_is_refused_and_named() {
        let handshake = Handshake::new("staging", ServerId(1), ServerId(2));
        let refusal = handshake
            .check("lockstep", ServerId(2), &SERVERS)
            .unwrap_err();
        assert!(matches!(refusal, Refusal::Cluster { .. }));
        assert!(refusal.to_string().contains("\"staging\""));
    }

    #[test]
    fn unknown_self_and_misaddressed_senders_are_refused() {
        let unknown = Handshake::new("lockstep", ServerId(9), ServerId(2));
        assert_eq!(
            unknown.check("lockstep", ServerId(2), &SERVERS),
            Err(Refusal::UnknownSender { from: ServerId(9) })
        );
        let from_self = Handshake::new("lockstep", ServerId(2), ServerId(1));
        assert_eq!(
            from_self.check("lockstep", ServerId(2), &SERVERS),
            Err(Refusal::FromSelf { from: ServerId(2) })
        );
        let misaddressed = Handshake::new("lockstep", ServerId(1), ServerId(3));
        assert_eq!(
            misaddressed.check("lockstep", ServerId(2), &SERVERS),
            Err(Refusal::WrongReceiver {
                intended: ServerId(3),
                me: ServerId(2)
            })
        );
    }
}
