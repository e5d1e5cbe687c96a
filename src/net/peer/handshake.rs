//! How a server recognises a peer connection and decides whether to talk to it, as pure code.
//!
//! A peer connection opens with a preamble: the magic `LSTEPPEER` and the peer protocol
//! version as a big-endian `u32`. Frames follow ([`PeerFrame`]). Clients share the listening
//! port: anything that does not start with the magic is the client protocol (a JSON line starts
//! with `{` or whitespace, never with `L`).
//!
//! # The handshake (peer protocol version 2)
//! Without a cluster secret on either side, one round trip:
//!
//! ```text
//! connector                                   acceptor
//!   preamble, Handshake{cluster, from, to, nonce: null}  ──▶
//!                                  ◀──  Accepted{proof: null} | Refused{reason}
//! ```
//!
//! With a cluster secret, mutual challenge-response. Each side draws a fresh 256-bit nonce, and
//! each proves knowledge of the secret with an HMAC-SHA256 over a transcript that binds both
//! nonces, the cluster id, both server ids and which side is proving ([`Transcript`]):
//!
//! ```text
//!   preamble, Handshake{cluster, from, to, nonce: Nc}  ──▶
//!                                  ◀──  Challenge{nonce: Na}            | Refused
//!   Proof{HMAC(secret, connector ‖ transcript)}        ──▶
//!                                  ◀──  Accepted{proof: HMAC(secret, acceptor ‖ transcript)}
//!                                                                       | Refused
//! ```
//!
//! The acceptor proves itself only after the connector has, so a caller without the secret
//! never gets a proof computed for it; and the connector verifies the acceptor's proof before
//! it sends any Raft message. A side with a secret refuses a side without one, and the other
//! way round, each with a reason that names the problem. The secret itself never leaves the
//! process, and no refusal says anything about it beyond "wrong" or "missing".
//!
//! The handshake authenticates the two servers at the start of a connection. It does not
//! protect the bytes that follow from someone who can rewrite the TCP stream; that takes TLS.
//!
//! This module must never touch a socket, a clock or a random source: the transport calls it,
//! and hands it the nonces it drew.

use super::frame::{PeerFrame, encode_peer_frame};
use crate::node::ServerId;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

/// The first bytes of every peer connection.
pub const PEER_MAGIC: &[u8; 9] = b"LSTEPPEER";

/// The peer protocol version this build speaks. Change it whenever frames change meaning.
/// Version 2 added the nonce, the challenge and the proofs of the cluster secret; version 3
/// added keepalives both ways after the handshake (`PeerFrame::Keepalive`), which a version 2
/// server would take for a broken connection.
pub const PEER_PROTOCOL_VERSION: u32 = 3;

/// Bytes of the preamble: the magic and the version.
pub const PREAMBLE_BYTES: usize = PEER_MAGIC.len() + 4;

/// Longest cluster id, in bytes.
pub const CLUSTER_ID_BYTES_MAX: usize = 128;

/// Bytes of a handshake nonce: 256 bits, drawn fresh for every connection attempt.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof: one HMAC-SHA256 output.
pub const PROOF_BYTES: usize = 32;

/// Shortest cluster secret, in bytes after trimming whitespace.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 32;

/// Longest cluster secret, in bytes after trimming whitespace.
pub const CLUSTER_SECRET_BYTES_MAX: usize = 1024;

/// Longest refusal reason from the other side that is kept for a log line, in characters.
pub const REFUSAL_REASON_CHARS_MAX: usize = 512;

/// Domain separation: these proofs are for this purpose and this protocol version only.
const TRANSCRIPT_LABEL: &[u8] = b"lockstep peer handshake\0";

type HmacSha256 = Hmac<Sha256>;

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

/// The shared secret of a cluster's servers. It only ever keys an HMAC: it is never sent,
/// logged, serialised or printed (`Debug` shows its length only).
#[derive(Clone)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

/// Why the content of a cluster secret file is not a usable secret.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "holds {bytes} bytes after trimming whitespace; a cluster secret needs at least \
         {CLUSTER_SECRET_BYTES_MIN} (generate one with: head -c 32 /dev/urandom | base64)"
    )]
    TooShort { bytes: usize },
    #[error(
        "holds {bytes} bytes after trimming whitespace; a cluster secret may have at most \
         {CLUSTER_SECRET_BYTES_MAX}"
    )]
    TooLong { bytes: usize },
}

impl ClusterSecret {
    /// The secret a file holds: its content with leading and trailing ASCII whitespace (a final
    /// newline, say) removed, used as bytes as it is. It must be
    /// [`CLUSTER_SECRET_BYTES_MIN`]..=[`CLUSTER_SECRET_BYTES_MAX`] bytes long.
    pub fn from_file_content(content: &[u8]) -> Result<ClusterSecret, SecretError> {
        let key = content.trim_ascii();
        if key.len() < CLUSTER_SECRET_BYTES_MIN {
            return Err(SecretError::TooShort { bytes: key.len() });
        }
        if key.len() > CLUSTER_SECRET_BYTES_MAX {
            return Err(SecretError::TooLong { bytes: key.len() });
        }
        Ok(ClusterSecret { key: key.to_vec() })
    }

    /// The proof that `prover` knows this secret, for the handshake `transcript` describes.
    pub fn prove(&self, prover: Side, transcript: &Transcript<'_>) -> Proof {
        let bytes: [u8; PROOF_BYTES] = self.mac(prover, transcript).finalize().into_bytes().into();
        Proof(bytes)
    }

    /// Whether `proof` is `prover`'s proof for `transcript` under this secret, compared in
    /// constant time.
    pub fn verify(&self, prover: Side, transcript: &Transcript<'_>, proof: &Proof) -> bool {
        self.mac(prover, transcript).verify_slice(&proof.0).is_ok()
    }

    fn mac(&self, prover: Side, transcript: &Transcript<'_>) -> HmacSha256 {
        assert!(
            self.key.len() >= CLUSTER_SECRET_BYTES_MIN,
            "cluster secret: a key shorter than the minimum"
        );
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        transcript.feed(prover, &mut mac);
        mac
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.key.len())
    }
}

/// Which end of a connection: the server that connected, or the one that accepted.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Side {
    Connector,
    Acceptor,
}

impl Side {
    fn label(self) -> u8 {
        match self {
            Side::Connector => 1,
            Side::Acceptor => 2,
        }
    }
}

/// Everything one handshake's proofs are bound to. Its encoding is injective: every field has
/// a fixed length or a length prefix, so no two transcripts feed the HMAC the same bytes.
///
/// `PROOF = HMAC-SHA256(secret, "lockstep peer handshake\0" ‖ version (u32 BE) ‖ prover (u8:
/// 1 connector, 2 acceptor) ‖ cluster id length (u32 BE) ‖ cluster id ‖ connector id (u32 BE)
/// ‖ acceptor id (u32 BE) ‖ connector nonce (32 bytes) ‖ acceptor nonce (32 bytes))`.
///
/// - the prover byte keeps a proof from being reflected back to the side that made it;
/// - the ids, in their roles, keep it from being replayed to, or for, another server;
/// - each side's own fresh nonce keeps an old proof from being replayed to it;
/// - the cluster id and version keep it from serving another cluster or protocol.
#[derive(Copy, Clone, Debug)]
pub struct Transcript<'a> {
    pub cluster_id: &'a str,
    pub connector: ServerId,
    pub acceptor: ServerId,
    pub connector_nonce: &'a Nonce,
    pub acceptor_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn feed(&self, prover: Side, mac: &mut HmacSha256) {
        assert!(
            self.cluster_id.len() <= CLUSTER_ID_BYTES_MAX,
            "transcript: a cluster id over the limit"
        );
        let cluster_id_bytes = u32::try_from(self.cluster_id.len()).expect("bounded above");
        mac.update(TRANSCRIPT_LABEL);
        mac.update(&PEER_PROTOCOL_VERSION.to_be_bytes());
        mac.update(&[prover.label()]);
        mac.update(&cluster_id_bytes.to_be_bytes());
        mac.update(self.cluster_id.as_bytes());
        mac.update(&self.connector.0.to_be_bytes());
        mac.update(&self.acceptor.0.to_be_bytes());
        mac.update(&self.connector_nonce.0);
        mac.update(&self.acceptor_nonce.0);
    }
}

/// A handshake nonce: sent as exactly 64 lowercase or uppercase hex digits.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_BYTES]);

/// A proof of the cluster secret: sent as exactly 64 hex digits.
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Proof(pub [u8; PROOF_BYTES]);

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", to_hex(&self.0))
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proof({})", to_hex(&self.0))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// Exactly `2 * N` hex digits, or why not.
fn from_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    if text.len() != 2 * N {
        return Err(format!(
            "{} characters where {} hex digits belong",
            text.len(),
            2 * N
        ));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("a character that is not a hex digit".to_string()),
    };
    let mut bytes = [0u8; N];
    for (index, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        bytes[index] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(bytes)
}

macro_rules! hex_serde {
    ($type:ident, $bytes:expr) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&to_hex(&self.0))
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$type, D::Error> {
                // The frame limit bounds this string.
                let text = String::deserialize(deserializer)?;
                from_hex::<{ $bytes }>(&text)
                    .map($type)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_serde!(Nonce, NONCE_BYTES);
hex_serde!(Proof, PROOF_BYTES);

/// The connector's introduction.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Handshake {
    pub version: u32,
    pub cluster_id: String,
    pub from: ServerId,
    /// The server the connector meant to reach, so that a misconfigured address is caught.
    pub to: ServerId,
    /// The connector's challenge to the acceptor; present exactly when the connector has a
    /// cluster secret and expects the acceptor to prove it too.
    #[serde(default)]
    pub nonce: Option<Nonce>,
}

/// Why an acceptor refuses a peer. None of these says anything about the secret beyond
/// "missing" or "wrong".
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
    #[error(
        "{from} has no cluster secret, but this server requires one: give every server the \
         same --cluster-secret-file"
    )]
    SecretMissing { from: ServerId },
    #[error(
        "{from} uses a cluster secret, but this server has none: give every server the same \
         --cluster-secret-file"
    )]
    SecretNotConfigured { from: ServerId },
    #[error("{from} failed to prove the cluster secret: the two servers hold different secrets")]
    WrongProof { from: ServerId },
}

impl Handshake {
    /// This build's handshake from `from` to `to`, without a nonce (no cluster secret).
    pub fn new(cluster_id: &str, from: ServerId, to: ServerId) -> Handshake {
        assert_ne!(from, to, "a server never connects to itself");
        Handshake {
            version: PEER_PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            from,
            to,
            nonce: None,
        }
    }

    /// What the connector sends first: the preamble, then this handshake as a frame.
    pub fn encode_opening(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREAMBLE_BYTES + 256);
        out.extend_from_slice(PEER_MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        encode_peer_frame(&PeerFrame::Handshake(self.clone()), &mut out)
            .expect("a handshake is small");
        assert!(out.len() > PREAMBLE_BYTES, "the opening holds a frame");
        out
    }

    /// The acceptor's verdict on who is calling: may `self.from` talk to server `me` of
    /// `cluster_id`, whose members are `servers` (`me` included)? The secret is checked
    /// afterwards, by [`AcceptorHandshake`].
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
                theirs: quoted_prefix(&self.cluster_id, CLUSTER_ID_BYTES_MAX),
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
fn quoted_prefix(text: &str, chars_max: usize) -> String {
    text.chars().take(chars_max).collect()
}

/// What the acceptor does after a frame of the handshake.
#[must_use]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AcceptorStep {
    /// Send this frame (the challenge) and feed the connector's next frame.
    Send(PeerFrame),
    /// Send this frame (`Accepted`); the connection now carries `from`'s Raft messages.
    Accept { answer: PeerFrame, from: ServerId },
    /// Send `Refused` with this reason, log it with the remote address, and close.
    Refuse(Refusal),
}

/// The acceptor's side of one handshake, fed the connector's frames in order.
///
/// Contract: call [`AcceptorHandshake::on_frame`] with each frame until it returns `Accept` or
/// `Refuse`, and never after that. `nonce` MUST be fresh from a cryptographic RNG for every
/// connection: it is what keeps a recorded proof from being replayed.
#[derive(Debug)]
pub struct AcceptorHandshake {
    cluster_id: String,
    me: ServerId,
    servers: Vec<ServerId>,
    secret: Option<Arc<ClusterSecret>>,
    nonce: Nonce,
    state: AcceptorState,
}

#[derive(Debug)]
enum AcceptorState {
    AwaitingHandshake,
    AwaitingProof {
        from: ServerId,
        connector_nonce: Nonce,
    },
    Finished,
}

impl AcceptorHandshake {
    pub fn new(
        cluster_id: &str,
        me: ServerId,
        servers: &[ServerId],
        secret: Option<Arc<ClusterSecret>>,
        nonce: Nonce,
    ) -> AcceptorHandshake {
        assert!(
            servers.contains(&me),
            "the acceptor is a member of its cluster"
        );
        AcceptorHandshake {
            cluster_id: cluster_id.to_string(),
            me,
            servers: servers.to_vec(),
            secret,
            nonce,
            state: AcceptorState::AwaitingHandshake,
        }
    }

    /// Takes the connector's next frame.
    pub fn on_frame(&mut self, frame: PeerFrame) -> AcceptorStep {
        let state = std::mem::replace(&mut self.state, AcceptorState::Finished);
        let step = match (state, frame) {
            (AcceptorState::AwaitingHandshake, PeerFrame::Handshake(hello)) => {
                self.on_handshake(&hello)
            }
            (AcceptorState::AwaitingHandshake, other) => AcceptorStep::Refuse(Refusal::Malformed(
                format!("{} before a handshake", frame_kind(&other)),
            )),
            (
                AcceptorState::AwaitingProof {
                    from,
                    connector_nonce,
                },
                PeerFrame::Proof { proof },
            ) => self.on_proof(from, &connector_nonce, &proof),
            (AcceptorState::AwaitingProof { .. }, other) => AcceptorStep::Refuse(
                Refusal::Malformed(format!("{} where a proof belongs", frame_kind(&other))),
            ),
            (AcceptorState::Finished, _) => {
                panic!("acceptor handshake: a frame after the verdict")
            }
        };
        assert_eq!(
            matches!(self.state, AcceptorState::AwaitingProof { .. }),
            matches!(step, AcceptorStep::Send(_)),
            "acceptor handshake: awaits a proof exactly when it sent a challenge"
        );
        step
    }

    fn on_handshake(&mut self, hello: &Handshake) -> AcceptorStep {
        if let Err(refusal) = hello.check(&self.cluster_id, self.me, &self.servers) {
            return AcceptorStep::Refuse(refusal);
        }
        let from = hello.from;
        match (&self.secret, hello.nonce) {
            (None, None) => AcceptorStep::Accept {
                answer: PeerFrame::Accepted { proof: None },
                from,
            },
            (Some(_), None) => AcceptorStep::Refuse(Refusal::SecretMissing { from }),
            (None, Some(_)) => AcceptorStep::Refuse(Refusal::SecretNotConfigured { from }),
            (Some(_), Some(connector_nonce)) => {
                self.state = AcceptorState::AwaitingProof {
                    from,
                    connector_nonce,
                };
                AcceptorStep::Send(PeerFrame::Challenge { nonce: self.nonce })
            }
        }
    }

    fn on_proof(&self, from: ServerId, connector_nonce: &Nonce, proof: &Proof) -> AcceptorStep {
        let secret = self
            .secret
            .as_ref()
            .expect("a challenge was sent, so a secret is held");
        let transcript = Transcript {
            cluster_id: &self.cluster_id,
            connector: from,
            acceptor: self.me,
            connector_nonce,
            acceptor_nonce: &self.nonce,
        };
        if !secret.verify(Side::Connector, &transcript, proof) {
            return AcceptorStep::Refuse(Refusal::WrongProof { from });
        }
        let answer = PeerFrame::Accepted {
            proof: Some(secret.prove(Side::Acceptor, &transcript)),
        };
        AcceptorStep::Accept { answer, from }
    }
}

/// What the connector does after a frame of the handshake.
#[must_use]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConnectorStep {
    /// Send this frame (the proof) and feed the acceptor's next frame.
    Send(PeerFrame),
    /// The acceptor is who it should be: Raft messages may follow.
    Established,
}

/// Why the connector gives up on this connection. It closes and retries with backoff.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConnectorFailure {
    /// The acceptor said no, and why (bounded to [`REFUSAL_REASON_CHARS_MAX`] characters).
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error(
        "the peer accepted without proving the cluster secret (has it none configured?); \
         this server requires it"
    )]
    AcceptorUnauthenticated,
    #[error(
        "the peer challenged this server for a cluster secret, but this server has none: give \
         every server the same --cluster-secret-file"
    )]
    SecretNotConfigured,
    #[error("the peer failed to prove the cluster secret: the two servers hold different secrets")]
    WrongProof,
    #[error("not a lockstep handshake answer: {0}")]
    Unexpected(String),
}

/// The connector's side of one handshake, fed the acceptor's frames in order.
///
/// Contract: send [`ConnectorHandshake::opening`], then call
/// [`ConnectorHandshake::on_frame`] with each answer until it returns `Established` or an
/// error, and never after that. Send no Raft message before `Established`. `nonce` MUST be
/// fresh from a cryptographic RNG for every attempt.
#[derive(Debug)]
pub struct ConnectorHandshake {
    hello: Handshake,
    secret: Option<Arc<ClusterSecret>>,
    state: ConnectorState,
}

#[derive(Debug)]
enum ConnectorState {
    AwaitingAnswer,
    AwaitingAcceptance { acceptor_nonce: Nonce },
    Finished,
}

impl ConnectorHandshake {
    pub fn new(
        cluster_id: &str,
        from: ServerId,
        to: ServerId,
        secret: Option<Arc<ClusterSecret>>,
        nonce: Nonce,
    ) -> ConnectorHandshake {
        let mut hello = Handshake::new(cluster_id, from, to);
        hello.nonce = secret.is_some().then_some(nonce);
        ConnectorHandshake {
            hello,
            secret,
            state: ConnectorState::AwaitingAnswer,
        }
    }

    /// The server this handshake is meant to reach.
    pub fn peer(&self) -> ServerId {
        self.hello.to
    }

    /// The preamble and the handshake frame: what the connector sends first.
    pub fn opening(&self) -> Vec<u8> {
        self.hello.encode_opening()
    }

    /// Takes the acceptor's next frame.
    pub fn on_frame(&mut self, frame: PeerFrame) -> Result<ConnectorStep, ConnectorFailure> {
        let state = std::mem::replace(&mut self.state, ConnectorState::Finished);
        if let PeerFrame::Refused { reason } = &frame {
            assert!(
                !matches!(state, ConnectorState::Finished),
                "connector handshake: a frame after the verdict"
            );
            let reason = quoted_prefix(reason, REFUSAL_REASON_CHARS_MAX);
            return Err(ConnectorFailure::Refused(reason));
        }
        match (state, &self.secret, frame) {
            (ConnectorState::Finished, _, _) => {
                panic!("connector handshake: a frame after the verdict")
            }
            (ConnectorState::AwaitingAnswer, None, PeerFrame::Accepted { proof: None }) => {
                Ok(ConnectorStep::Established)
            }
            (ConnectorState::AwaitingAnswer, None, PeerFrame::Challenge { .. }) => {
                Err(ConnectorFailure::SecretNotConfigured)
            }
            (ConnectorState::AwaitingAnswer, Some(_), PeerFrame::Accepted { .. }) => {
                Err(ConnectorFailure::AcceptorUnauthenticated)
            }
            (ConnectorState::AwaitingAnswer, Some(secret), PeerFrame::Challenge { nonce }) => {
                let proof = secret.prove(Side::Connector, &self.transcript(&nonce));
                self.state = ConnectorState::AwaitingAcceptance {
                    acceptor_nonce: nonce,
                };
                Ok(ConnectorStep::Send(PeerFrame::Proof { proof }))
            }
            (
                ConnectorState::AwaitingAcceptance { acceptor_nonce },
                Some(secret),
                PeerFrame::Accepted { proof: Some(proof) },
            ) => {
                let transcript = self.transcript(&acceptor_nonce);
                if secret.verify(Side::Acceptor, &transcript, &proof) {
                    Ok(ConnectorStep::Established)
                } else {
                    Err(ConnectorFailure::WrongProof)
                }
            }
            (ConnectorState::AwaitingAcceptance { .. }, _, PeerFrame::Accepted { proof: None }) => {
                Err(ConnectorFailure::AcceptorUnauthenticated)
            }
            (_, _, other) => Err(ConnectorFailure::Unexpected(format!(
                "{} in answer to the handshake",
                frame_kind(&other)
            ))),
        }
    }

    fn transcript<'a>(&'a self, acceptor_nonce: &'a Nonce) -> Transcript<'a> {
        Transcript {
            cluster_id: &self.hello.cluster_id,
            connector: self.hello.from,
            acceptor: self.hello.to,
            connector_nonce: self
                .hello
                .nonce
                .as_ref()
                .expect("a secret comes with a nonce"),
            acceptor_nonce,
        }
    }
}

/// A frame's name for an error message, without its content.
fn frame_kind(frame: &PeerFrame) -> &'static str {
    match frame {
        PeerFrame::Handshake(_) => "a handshake",
        PeerFrame::Challenge { .. } => "a challenge",
        PeerFrame::Proof { .. } => "a proof",
        PeerFrame::Accepted { .. } => "an acceptance",
        PeerFrame::Refused { .. } => "a refusal",
        PeerFrame::Message(_) => "a Raft message",
        PeerFrame::Keepalive => "a keepalive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::peer::frame::{FrameDecoder, decode_peer_frame};

    const SERVERS: [ServerId; 3] = [ServerId(1), ServerId(2), ServerId(3)];

    fn secret(text: &str) -> Option<Arc<ClusterSecret>> {
        Some(Arc::new(
            ClusterSecret::from_file_content(text.as_bytes()).unwrap(),
        ))
    }

    fn shared() -> Option<Arc<ClusterSecret>> {
        secret("correct horse battery staple, thirty-two bytes at least")
    }

    fn other() -> Option<Arc<ClusterSecret>> {
        secret("a different secret of another cluster, also long enough")
    }

    fn nonce(byte: u8) -> Nonce {
        Nonce([byte; NONCE_BYTES])
    }

    /// Server 1 connecting to server 2 with nonce 0x11; server 2 challenging with 0x22.
    fn pair(
        connector_secret: Option<Arc<ClusterSecret>>,
        acceptor_secret: Option<Arc<ClusterSecret>>,
    ) -> (ConnectorHandshake, AcceptorHandshake) {
        let connector = ConnectorHandshake::new(
            "lockstep",
            ServerId(1),
            ServerId(2),
            connector_secret,
            nonce(0x11),
        );
        let acceptor = AcceptorHandshake::new(
            "lockstep",
            ServerId(2),
            &SERVERS,
            acceptor_secret,
            nonce(0x22),
        );
        (connector, acceptor)
    }

    /// The outcome on both sides of a whole exchange: the acceptor's verdict (the peer it
    /// accepted) and the connector's.
    fn drive(
        connector: &mut ConnectorHandshake,
        acceptor: &mut AcceptorHandshake,
    ) -> (Result<ServerId, Refusal>, Result<(), ConnectorFailure>) {
        let mut to_acceptor = PeerFrame::Handshake(connector.hello.clone());
        // Bounded: the longest exchange has two rounds.
        for _round in 0..2 {
            let (answer, acceptor_verdict) = match acceptor.on_frame(to_acceptor) {
                AcceptorStep::Send(frame) => (frame, None),
                AcceptorStep::Accept { answer, from } => (answer, Some(Ok(from))),
                AcceptorStep::Refuse(refusal) => (
                    PeerFrame::Refused {
                        reason: refusal.to_string(),
                    },
                    Some(Err(refusal)),
                ),
            };
            match (connector.on_frame(answer), acceptor_verdict) {
                (Ok(ConnectorStep::Send(frame)), None) => to_acceptor = frame,
                (Ok(ConnectorStep::Established), Some(verdict)) => return (verdict, Ok(())),
                (Err(failure), Some(verdict)) => return (verdict, Err(failure)),
                (connector_step, acceptor_verdict) => {
                    panic!("out of step: {connector_step:?} / {acceptor_verdict:?}")
                }
            }
        }
        panic!("a handshake of more than two rounds")
    }

    #[test]
    fn sniffing_tells_peers_from_clients_on_the_first_bytes() {
        assert_eq!(sniff(b"LSTEPPEER\0\0\0\x02"), Sniffed::Peer);
        assert_eq!(sniff(b"LSTEP"), Sniffed::NeedMore);
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        assert_eq!(sniff(b"{\"seq\":1,\"op\":\"hello\"}\n"), Sniffed::Client);
        assert_eq!(sniff(b"LSTEPX"), Sniffed::Client);
        assert_eq!(sniff(b"\n"), Sniffed::Client);
    }

    #[test]
    fn the_opening_decodes_to_the_preamble_and_the_handshake() {
        let (connector, _) = pair(shared(), shared());
        let opening = connector.opening();
        let preamble: [u8; PREAMBLE_BYTES] = opening[..PREAMBLE_BYTES].try_into().unwrap();
        assert_eq!(decode_preamble(&preamble), Some(PEER_PROTOCOL_VERSION));
        let frames = FrameDecoder::new()
            .feed(&opening[PREAMBLE_BYTES..])
            .unwrap();
        let PeerFrame::Handshake(hello) = decode_peer_frame(&frames[0]).unwrap() else {
            panic!("the opening holds a handshake");
        };
        assert_eq!(hello, connector.hello);
        assert_eq!(hello.nonce, Some(nonce(0x11)));
        assert_eq!(hello.check("lockstep", ServerId(2), &SERVERS), Ok(()));
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
        handshake.version = 1;
        assert_eq!(
            handshake.check("lockstep", ServerId(2), &SERVERS),
            Err(Refusal::Version {
                ours: PEER_PROTOCOL_VERSION,
                theirs: 1
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

    #[test]
    fn without_secrets_one_round_trip_establishes_the_connection() {
        let (mut connector, mut acceptor) = pair(None, None);
        assert_eq!(connector.hello.nonce, None, "no challenge without a secret");
        assert_eq!(
            drive(&mut connector, &mut acceptor),
            (Ok(ServerId(1)), Ok(()))
        );
    }

    #[test]
    fn the_same_secret_on_both_sides_establishes_the_connection_both_ways_proven() {
        let (mut connector, mut acceptor) = pair(shared(), shared());
        assert_eq!(
            drive(&mut connector, &mut acceptor),
            (Ok(ServerId(1)), Ok(()))
        );
    }

    #[test]
    fn a_wrong_secret_is_refused_by_the_acceptor() {
        let (mut connector, mut acceptor) = pair(other(), shared());
        let (acceptor_verdict, connector_verdict) = drive(&mut connector, &mut acceptor);
        assert_eq!(
            acceptor_verdict,
            Err(Refusal::WrongProof { from: ServerId(1) })
        );
        let Err(ConnectorFailure::Refused(reason)) = connector_verdict else {
            panic!("the connector hears the refusal: {connector_verdict:?}");
        };
        assert!(reason.contains("different secrets"), "{reason}");
    }

    #[test]
    fn an_acceptor_with_a_wrong_secret_is_refused_by_the_connector() {
        // The acceptor cannot check the connector's proof either, so a real one refuses first;
        // a forged acceptor that accepts anyway, with a proof under its own key, is caught.
        let (mut connector, _) = pair(shared(), shared());
        let PeerFrame::Handshake(hello) = decode_opening_frame(&connector.opening()) else {
            panic!("a handshake")
        };
        let step = connector.on_frame(PeerFrame::Challenge { nonce: nonce(0x22) });
        assert!(matches!(
            step,
            Ok(ConnectorStep::Send(PeerFrame::Proof { .. }))
        ));
        let forged_transcript = Transcript {
            cluster_id: "lockstep",
            connector: ServerId(1),
            acceptor: ServerId(2),
            connector_nonce: hello.nonce.as_ref().unwrap(),
            acceptor_nonce: &nonce(0x22),
        };
        let forged = other().unwrap().prove(Side::Acceptor, &forged_transcript);
        assert_eq!(
            connector.on_frame(PeerFrame::Accepted {
                proof: Some(forged)
            }),
            Err(ConnectorFailure::WrongProof)
        );
    }

    fn decode_opening_frame(opening: &[u8]) -> PeerFrame {
        let frames = FrameDecoder::new()
            .feed(&opening[PREAMBLE_BYTES..])
            .unwrap();
        decode_peer_frame(&frames[0]).unwrap()
    }

    /// The acceptor's challenge for a connection from 1 with the connector nonce 0x11.
    fn challenged(acceptor: &mut AcceptorHandshake, connector_nonce: Nonce) -> Nonce {
        let mut hello = Handshake::new("lockstep", ServerId(1), ServerId(2));
        hello.nonce = Some(connector_nonce);
        match acceptor.on_frame(PeerFrame::Handshake(hello)) {
            AcceptorStep::Send(PeerFrame::Challenge { nonce }) => nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn a_reflected_proof_is_refused() {
        let key = shared().unwrap();
        // The acceptor's own kind of proof, for this very transcript, sent back as the
        // connector's: the prover byte differs.
        let (_, mut acceptor) = pair(None, shared());
        let acceptor_nonce = challenged(&mut acceptor, nonce(0x11));
        let transcript = Transcript {
            cluster_id: "lockstep",
            connector: ServerId(1),
            acceptor: ServerId(2),
            connector_nonce: &nonce(0x11),
            acceptor_nonce: &acceptor_nonce,
        };
        let reflected = key.prove(Side::Acceptor, &transcript);
        assert_eq!(
            acceptor.on_frame(PeerFrame::Proof { proof: reflected }),
            AcceptorStep::Refuse(Refusal::WrongProof { from: ServerId(1) })
        );
        // Server 2's proof as a connector to 1, reflected to server 2 as 1's proof, even with
        // the nonces the attacker chose mirrored: the ids are bound in their roles.
        let (_, mut acceptor) = pair(None, shared());
        let acceptor_nonce = challenged(&mut acceptor, nonce(0x11));
        let mirrored = Transcript {
            cluster_id: "lockstep",
            connector: ServerId(2),
            acceptor: ServerId(1),
            connector_nonce: &acceptor_nonce,
            acceptor_nonce: &nonce(0x11),
        };
        let from_two = key.prove(Side::Connector, &mirrored);
        assert_eq!(
            acceptor.on_frame(PeerFrame::Proof { proof: from_two }),
            AcceptorStep::Refuse(Refusal::WrongProof { from: ServerId(1) })
        );
    }

    #[test]
    fn a_proof_for_another_server_id_is_refused() {
        let key = shared().unwrap();
        let (_, mut acceptor) = pair(None, shared());
        let acceptor_nonce = challenged(&mut acceptor, nonce(0x11));
        // A genuine proof by server 3 to server 2, presented by a connection claiming to be 1.
        let by_three = Transcript {
            cluster_id: "lockstep",
            connector: ServerId(3),
            acceptor: ServerId(2),
            connector_nonce: &nonce(0x11),
            acceptor_nonce: &acceptor_nonce,
        };
        assert_eq!(
            acceptor.on_frame(PeerFrame::Proof {
                proof: key.prove(Side::Connector, &by_three)
            }),
            AcceptorStep::Refuse(Refusal::WrongProof { from: ServerId(1) })
        );
        // And 1's genuine proof for server 3 (the acceptor id differs) is no good at 2.
        let (_, mut acceptor) = pair(None, shared());
        let acceptor_nonce = challenged(&mut acceptor, nonce(0x11));
        let to_three = Transcript {
            cluster_id: "lockstep",
            connector: ServerId(1),
            acceptor: ServerId(3),
            connector_nonce: &nonce(0x11),
            acceptor_nonce: &acceptor_nonce,
        };
        assert_eq!(
            acceptor.on_frame(PeerFrame::Proof {
                proof: key.prove(Side::Connector, &to_three)
            }),
            AcceptorStep::Refuse(Refusal::WrongProof { from: ServerId(1) })
        );
    }

    #[test]
    fn a_replayed_proof_fails_against_a_new_nonce() {
        // A recorded exchange: the proof that passed for acceptor nonce 0x22.
        let (mut connector, mut acceptor) = pair(shared(), shared());
        let acceptor_nonce = challenged(&mut acceptor, nonce(0x11));
        let Ok(ConnectorStep::Send(PeerFrame::Proof { proof: recorded })) =
            connector.on_frame(PeerFrame::Challenge {
                nonce: acceptor_nonce,
            })
        else {
            panic!("the connector proves itself");
        };
        assert!(matches!(
            acceptor.on_frame(PeerFrame::Proof { proof: recorded }),
            AcceptorStep::Accept {
                from: ServerId(1),
                ..
            }
        ));
        // Replayed, with the same connector nonce, against a fresh acceptor nonce.
        let mut fresh =
            AcceptorHandshake::new("lockstep", ServerId(2), &SERVERS, shared(), nonce(0x33));
        assert_eq!(challenged(&mut fresh, nonce(0x11)), nonce(0x33));
        assert_eq!(
            fresh.on_frame(PeerFrame::Proof { proof: recorded }),
            AcceptorStep::Refuse(Refusal::WrongProof { from: ServerId(1) })
        );
    }

    #[test]
    fn a_proof_from_another_cluster_id_is_refused() {
        let key = shared().unwrap();
        let (_, mut acceptor) = pair(None, shared());
        let acceptor_nonce = challenged(&mut acceptor, nonce(0x11));
        let staging = Transcript {
            cluster_id: "staging",
            connector: ServerId(1),
            acceptor: ServerId(2),
            connector_nonce: &nonce(0x11),
            acceptor_nonce: &acceptor_nonce,
        };
        assert_eq!(
            acceptor.on_frame(PeerFrame::Proof {
                proof: key.prove(Side::Connector, &staging)
            }),
            AcceptorStep::Refuse(Refusal::WrongProof { from: ServerId(1) })
        );
    }

    #[test]
    fn a_secret_on_one_side_only_is_refused_with_a_reason_on_both() {
        let (mut connector, mut acceptor) = pair(None, shared());
        let (acceptor_verdict, connector_verdict) = drive(&mut connector, &mut acceptor);
        assert_eq!(
            acceptor_verdict,
            Err(Refusal::SecretMissing { from: ServerId(1) })
        );
        let Err(ConnectorFailure::Refused(reason)) = connector_verdict else {
            panic!("the connector hears why: {connector_verdict:?}");
        };
        assert!(reason.contains("requires"), "{reason}");
        assert!(reason.contains("--cluster-secret-file"), "{reason}");

        let (mut connector, mut acceptor) = pair(shared(), None);
        let (acceptor_verdict, connector_verdict) = drive(&mut connector, &mut acceptor);
        assert_eq!(
            acceptor_verdict,
            Err(Refusal::SecretNotConfigured { from: ServerId(1) })
        );
        let Err(ConnectorFailure::Refused(reason)) = connector_verdict else {
            panic!("the connector hears why: {connector_verdict:?}");
        };
        assert!(reason.contains("has none"), "{reason}");
    }

    #[test]
    fn a_connector_with_a_secret_refuses_an_acceptor_that_does_not_prove_it() {
        // A forged acceptor that accepts at once, skipping the challenge.
        let (mut connector, _) = pair(shared(), None);
        assert_eq!(
            connector.on_frame(PeerFrame::Accepted { proof: None }),
            Err(ConnectorFailure::AcceptorUnauthenticated)
        );
        // One that challenges, takes the proof, and then accepts without its own.
        let (mut connector, _) = pair(shared(), None);
        let step = connector.on_frame(PeerFrame::Challenge { nonce: nonce(0x22) });
        assert!(matches!(step, Ok(ConnectorStep::Send(_))));
        assert_eq!(
            connector.on_frame(PeerFrame::Accepted { proof: None }),
            Err(ConnectorFailure::AcceptorUnauthenticated)
        );
        // A connector without a secret that is challenged says why it cannot answer.
        let (mut connector, _) = pair(None, None);
        assert_eq!(
            connector.on_frame(PeerFrame::Challenge { nonce: nonce(0x22) }),
            Err(ConnectorFailure::SecretNotConfigured)
        );
    }

    #[test]
    fn frames_out_of_order_are_refused() {
        let (_, mut acceptor) = pair(None, shared());
        assert!(matches!(
            acceptor.on_frame(PeerFrame::Proof {
                proof: Proof([0; PROOF_BYTES])
            }),
            AcceptorStep::Refuse(Refusal::Malformed(_))
        ));
        let (_, mut acceptor) = pair(None, shared());
        challenged(&mut acceptor, nonce(0x11));
        assert!(matches!(
            acceptor.on_frame(PeerFrame::Accepted { proof: None }),
            AcceptorStep::Refuse(Refusal::Malformed(_))
        ));
        let (mut connector, _) = pair(shared(), shared());
        assert!(matches!(
            connector.on_frame(PeerFrame::Proof {
                proof: Proof([0; PROOF_BYTES])
            }),
            Err(ConnectorFailure::Unexpected(_))
        ));
    }

    #[test]
    fn a_long_refusal_reason_is_cut_for_the_log() {
        let (mut connector, _) = pair(None, None);
        let Err(ConnectorFailure::Refused(reason)) = connector.on_frame(PeerFrame::Refused {
            reason: "x".repeat(10_000),
        }) else {
            panic!("a refusal");
        };
        assert_eq!(reason.chars().count(), REFUSAL_REASON_CHARS_MAX);
    }

    #[test]
    fn nonces_and_proofs_are_exactly_64_hex_digits_on_the_wire() {
        let text = serde_json::to_string(&nonce(0xab)).unwrap();
        assert_eq!(text, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Nonce>(&text).unwrap(), nonce(0xab));
        let upper = format!("\"{}\"", "AB".repeat(32));
        assert_eq!(
            serde_json::from_str::<Proof>(&upper).unwrap(),
            Proof([0xab; 32])
        );
        for bad in [
            String::new(),
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}zz", "ab".repeat(31)),
            format!("{}é", "a".repeat(62)),
        ] {
            let json = serde_json::to_string(&bad).unwrap();
            assert!(serde_json::from_str::<Nonce>(&json).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Proof>(&json).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Nonce>("[1,2,3]").is_err());
    }

    #[test]
    fn a_secret_file_is_trimmed_and_must_be_32_to_1024_bytes() {
        let padded = format!("  {}\n", "k".repeat(32));
        let secret = ClusterSecret::from_file_content(padded.as_bytes()).unwrap();
        assert_eq!(secret.key, vec![b'k'; 32]);
        assert_eq!(
            ClusterSecret::from_file_content(format!("{}\n", "k".repeat(31)).as_bytes())
                .unwrap_err(),
            SecretError::TooShort { bytes: 31 }
        );
        assert_eq!(
            ClusterSecret::from_file_content(b" \n\t").unwrap_err(),
            SecretError::TooShort { bytes: 0 }
        );
        assert_eq!(
            ClusterSecret::from_file_content(&[b'k'; 1025]).unwrap_err(),
            SecretError::TooLong { bytes: 1025 }
        );
        assert!(ClusterSecret::from_file_content(&[0xff; 1024]).is_ok());
        // Debug never shows the key.
        assert_eq!(format!("{secret:?}"), "ClusterSecret(32 bytes, redacted)");
    }

    #[test]
    fn proofs_are_hmac_sha256_of_the_documented_transcript() {
        // An independent computation of the layout written on `Transcript`.
        let key = b"0123456789abcdef0123456789abcdef";
        let secret = ClusterSecret::from_file_content(key).unwrap();
        let transcript = Transcript {
            cluster_id: "lockstep",
            connector: ServerId(1),
            acceptor: ServerId(2),
            connector_nonce: &nonce(0x11),
            acceptor_nonce: &nonce(0x22),
        };
        let mut message = Vec::new();
        message.extend_from_slice(b"lockstep peer handshake\0");
        // The peer protocol version.
        message.extend_from_slice(&3u32.to_be_bytes());
        message.push(1);
        message.extend_from_slice(&8u32.to_be_bytes());
        message.extend_from_slice(b"lockstep");
        message.extend_from_slice(&1u32.to_be_bytes());
        message.extend_from_slice(&2u32.to_be_bytes());
        message.extend_from_slice(&[0x11; 32]);
        message.extend_from_slice(&[0x22; 32]);
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(&message);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(secret.prove(Side::Connector, &transcript), Proof(expected));
        assert!(secret.verify(Side::Connector, &transcript, &Proof(expected)));
        assert_ne!(secret.prove(Side::Acceptor, &transcript), Proof(expected));
    }
}
