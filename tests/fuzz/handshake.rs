//! Fuzz target for the peer handshake: what any process that reaches a server's peer port can
//! make its acceptor believe, and what a rogue listener can make its connector believe.
//!
//! A case is a program ([`Script`]): a header that picks the side under test (acceptor s2, or
//! connector s1 calling s2), whether it holds the cluster secret, which secret the other end
//! holds (the same, another, or none) and the nonces; then up to [`DELIVERIES_MAX`] frames to
//! deliver. A frame is one of the honest peer's frames (so an exchange can be replayed,
//! reordered, duplicated or cut short), a mutation of one (flipped bits in a nonce or proof,
//! another cluster, version or server id, a dropped or added nonce or proof), a random frame of
//! any kind, a recorded proof of another session under the real secret, the side's own frame
//! reflected back, a proof forged with the other end's key for this very session, or raw bytes.
//! Half the cases carry them over the wire: the preamble (maybe wrong) and the frames as one
//! byte stream, cut into reads at the case's cut points, through `sniff`, `decode_preamble`,
//! the frame decoder at the transport's handshake limit and `decode_peer_frame`.
//!
//! What must hold, besides never panicking:
//! - acceptance means the proof: a side with a secret that accepts was delivered a proof equal
//!   to HMAC-SHA256 under its secret of the documented transcript (recomputed here with the
//!   `hmac` crate, not through `ClusterSecret`) for exactly the peer's claimed id, this
//!   cluster, the connector's nonce and its own nonce; without a secret, it accepted exactly
//!   one well-formed handshake (or acceptance) and nothing else;
//! - a wrong secret never leads to acceptance: every proof the rogue can produce is under its
//!   own key, recorded from another session, reflected or random, so a side with a secret
//!   accepts only when the other end holds that same secret;
//! - the proofs the side itself sends are the documented HMACs, and the acceptor sends its own
//!   proof only when it accepts;
//! - every refusal and failure is bounded in length and never contains the secret (as text or
//!   as hex), nor does the state machine's `Debug`.

use crate::harness::{self, Case, Materialized, Script, Target};
use hmac::{Hmac, KeyInit, Mac};
use lockstep::net::peer::frame::{FrameDecoder, PeerFrame, decode_peer_frame, encode_peer_frame};
use lockstep::net::peer::handshake::{
    AcceptorHandshake, AcceptorStep, CLUSTER_ID_BYTES_MAX, ClusterSecret, ConnectorFailure,
    ConnectorHandshake, ConnectorStep, Handshake, NONCE_BYTES, Nonce, PEER_MAGIC,
    PEER_PROTOCOL_VERSION, PREAMBLE_BYTES, PROOF_BYTES, Proof, REFUSAL_REASON_CHARS_MAX, Refusal,
    Side, Sniffed, Transcript, decode_preamble, sniff,
};
use lockstep::node::{PeerMessage, ServerId};
use sha2::Sha256;
use std::sync::Arc;

const CLUSTER: &str = "lockstep";
const SERVERS: [ServerId; 3] = [ServerId(1), ServerId(2), ServerId(3)];
/// The server under test when it accepts, and the one the connector under test calls.
const ACCEPTOR: ServerId = ServerId(2);
/// The connector under test.
const CONNECTOR: ServerId = ServerId(1);
const SHARED: &[u8] = b"correct horse battery staple, thirty-two bytes at least";
const OTHER: &[u8] = b"a different secret of another cluster, also long enough";
/// The transport's limit on a frame during the handshake (`HANDSHAKE_FRAME_BYTES_MAX` in
/// `src/net/peer/transport.rs`, private there).
const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;
/// Frames a case delivers at most. Either side reaches a verdict within two.
const DELIVERIES_MAX: usize = 8;
/// Longest refusal or failure message of the state machines, in bytes: a refusal quotes at
/// most [`CLUSTER_ID_BYTES_MAX`] characters of the other side's text, the connector at most
/// [`REFUSAL_REASON_CHARS_MAX`] characters of the acceptor's reason.
const MESSAGE_BYTES_MAX: usize = 4 * REFUSAL_REASON_CHARS_MAX + 256;
/// A refusal for a frame that does not decode quotes the decoder's error, which may quote the
/// frame (at most the handshake frame limit).
const DECODE_REFUSAL_BYTES_MAX: usize = HANDSHAKE_FRAME_BYTES_MAX + 512;

type HmacSha256 = Hmac<Sha256>;

/// A cluster secret one end holds.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Key {
    Missing,
    Shared,
    Other,
}

impl Key {
    fn bytes(self) -> Option<&'static [u8]> {
        match self {
            Key::Missing => None,
            Key::Shared => Some(SHARED),
            Key::Other => Some(OTHER),
        }
    }

    fn secret(self) -> Option<Arc<ClusterSecret>> {
        self.bytes().map(|key| {
            Arc::new(ClusterSecret::from_file_content(key).expect("fuzz: a valid secret"))
        })
    }
}

/// HMAC-SHA256 of the transcript as `Transcript`'s documentation lays it out, computed here
/// independently of `ClusterSecret`.
fn expected_proof(key: &[u8], prover: Side, transcript: &Transcript<'_>) -> Proof {
    let mut message = Vec::new();
    message.extend_from_slice(b"lockstep peer handshake\0");
    message.extend_from_slice(&PEER_PROTOCOL_VERSION.to_be_bytes());
    message.push(match prover {
        Side::Connector => 1,
        Side::Acceptor => 2,
    });
    let cluster_id = transcript.cluster_id.as_bytes();
    message.extend_from_slice(&u32::try_from(cluster_id.len()).unwrap().to_be_bytes());
    message.extend_from_slice(cluster_id);
    message.extend_from_slice(&transcript.connector.0.to_be_bytes());
    message.extend_from_slice(&transcript.acceptor.0.to_be_bytes());
    message.extend_from_slice(&transcript.connector_nonce.0);
    message.extend_from_slice(&transcript.acceptor_nonce.0);
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(&message);
    Proof(mac.finalize().into_bytes().into())
}

/// A nonce that depends on every bit of `seed` and differs from byte to byte.
fn nonce_from(seed: u8) -> Nonce {
    let mut bytes = [0u8; NONCE_BYTES];
    for (at, byte) in bytes.iter_mut().enumerate() {
        *byte = seed ^ (at as u8).wrapping_mul(0x3d);
    }
    Nonce(bytes)
}

/// What the header of a case says.
#[derive(Clone, Debug)]
struct Setup {
    /// The connector is under test (else the acceptor).
    connector_under_test: bool,
    /// The side under test's secret: shared or none.
    own: Key,
    /// The other end's secret.
    peer: Key,
    /// Frames go over the wire (preamble, framing, cut into reads) rather than as values.
    wire: bool,
    /// The preamble's version, or `None` for a bad magic.
    preamble_version: Option<u32>,
    own_nonce: Nonce,
    peer_nonce: Nonce,
    /// Who the honest connector is, when the acceptor is under test.
    claimed: ServerId,
}

impl Setup {
    fn read(script: &mut Script<'_>) -> Setup {
        let header = script.byte();
        let own_nonce = nonce_from(script.byte());
        let peer_nonce = nonce_from(script.byte());
        Setup {
            connector_under_test: header & 1 == 1,
            own: if header & 2 == 0 {
                Key::Missing
            } else {
                Key::Shared
            },
            peer: [Key::Missing, Key::Shared, Key::Other, Key::Shared]
                [usize::from(header >> 2) & 3],
            wire: header & 0x10 != 0,
            preamble_version: match (header >> 5) & 3 {
                0 | 1 => Some(PEER_PROTOCOL_VERSION),
                2 => Some(1),
                _ => None,
            },
            own_nonce,
            peer_nonce,
            claimed: if header & 0x80 == 0 {
                ServerId(1)
            } else {
                ServerId(3)
            },
        }
    }

    /// The nonce the side under test draws, in the slot of its role, and the acceptor's and
    /// connector's ids.
    fn connector_and_acceptor(&self) -> (ServerId, ServerId) {
        if self.connector_under_test {
            (CONNECTOR, ACCEPTOR)
        } else {
            (self.claimed, ACCEPTOR)
        }
    }
}

/// One delivery to the side under test.
#[derive(Clone, Debug)]
enum Delivery {
    Frame(PeerFrame),
    /// Bytes that may or may not be a frame's payload (as a value) or frames (on the wire).
    Raw(Vec<u8>),
}

/// An honest exchange between the two ends as the header configures them: the frames each
/// sends, in order.
struct Exchange {
    /// The other end's frames: what an honest peer sends the side under test.
    honest: Vec<PeerFrame>,
    /// The side under test's own frames in that exchange.
    own: Vec<PeerFrame>,
}

fn opening_frame(opening: &[u8]) -> PeerFrame {
    let preamble: [u8; PREAMBLE_BYTES] = opening[..PREAMBLE_BYTES].try_into().unwrap();
    assert_eq!(decode_preamble(&preamble), Some(PEER_PROTOCOL_VERSION));
    let payloads = FrameDecoder::new()
        .feed(&opening[PREAMBLE_BYTES..])
        .expect("fuzz: the opening frames");
    assert_eq!(payloads.len(), 1, "fuzz: the opening holds one frame");
    decode_peer_frame(&payloads[0]).expect("fuzz: the opening decodes")
}

fn honest_exchange(setup: &Setup) -> Exchange {
    let (connector_id, acceptor_id) = setup.connector_and_acceptor();
    let (connector_key, acceptor_key, connector_nonce, acceptor_nonce) =
        if setup.connector_under_test {
            (setup.own, setup.peer, setup.own_nonce, setup.peer_nonce)
        } else {
            (setup.peer, setup.own, setup.peer_nonce, setup.own_nonce)
        };
    let mut connector = ConnectorHandshake::new(
        CLUSTER,
        connector_id,
        acceptor_id,
        connector_key.secret(),
        connector_nonce,
    );
    let mut acceptor = AcceptorHandshake::new(
        CLUSTER,
        acceptor_id,
        &SERVERS,
        acceptor_key.secret(),
        acceptor_nonce,
    );
    let mut to_acceptor = vec![opening_frame(&connector.opening())];
    let mut to_connector = Vec::new();
    // Bounded: the longest exchange has two rounds.
    for _round in 0..2 {
        let frame = to_acceptor.last().expect("a frame").clone();
        let (answer, acceptor_done) = match acceptor.on_frame(frame) {
            AcceptorStep::Send(answer) => (answer, false),
            AcceptorStep::Accept { answer, .. } => (answer, true),
            AcceptorStep::Refuse(refusal) => (
                PeerFrame::Refused {
                    reason: refusal.to_string(),
                },
                true,
            ),
        };
        to_connector.push(answer.clone());
        match connector.on_frame(answer) {
            Ok(ConnectorStep::Send(frame)) if !acceptor_done => to_acceptor.push(frame),
            _ => break,
        }
    }
    if setup.connector_under_test {
        Exchange {
            honest: to_connector,
            own: to_acceptor,
        }
    } else {
        Exchange {
            honest: to_acceptor,
            own: to_connector,
        }
    }
}

fn random_nonce(script: &mut Script<'_>) -> Nonce {
    Nonce(script.bytes(NONCE_BYTES).try_into().unwrap())
}

fn random_proof(script: &mut Script<'_>) -> Proof {
    Proof(script.bytes(PROOF_BYTES).try_into().unwrap())
}

fn random_server(script: &mut Script<'_>) -> ServerId {
    match script.byte() % 8 {
        0 => ServerId(0),
        4 => ServerId(u32::MAX),
        5 => ServerId(script.u32()),
        choice => ServerId(u32::from(choice)),
    }
}

fn random_cluster(script: &mut Script<'_>) -> String {
    match script.byte() % 4 {
        0 => CLUSTER.to_string(),
        1 => "staging".to_string(),
        2 => format!("{CLUSTER}\0"),
        _ => script.text(2 * CLUSTER_ID_BYTES_MAX),
    }
}

fn random_version(script: &mut Script<'_>) -> u32 {
    match script.byte() % 4 {
        0 => 1,
        1 => PEER_PROTOCOL_VERSION + 1,
        2 => u32::MAX,
        _ => script.u32(),
    }
}

fn flip(bytes: &mut [u8], script: &mut Script<'_>) {
    let bit = usize::from(script.byte()) % (8 * bytes.len());
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn random_frame(script: &mut Script<'_>) -> PeerFrame {
    match script.byte() % 7 {
        0 => PeerFrame::Handshake(Handshake {
            version: if script.bool() {
                PEER_PROTOCOL_VERSION
            } else {
                random_version(script)
            },
            cluster_id: random_cluster(script),
            from: random_server(script),
            to: random_server(script),
            nonce: script.bool().then(|| random_nonce(script)),
        }),
        1 => PeerFrame::Challenge {
            nonce: random_nonce(script),
        },
        2 => PeerFrame::Proof {
            proof: random_proof(script),
        },
        3 => PeerFrame::Accepted {
            proof: script.bool().then(|| random_proof(script)),
        },
        4 => PeerFrame::Refused {
            reason: script.text(3 * REFUSAL_REASON_CHARS_MAX / 2),
        },
        // Only after a handshake: during one it is as out of place as a Raft message.
        5 => PeerFrame::Keepalive,
        _ => PeerFrame::Message(PeerMessage::VoteResponse {
            term: script.u64(),
            granted: script.bool(),
        }),
    }
}

/// One field of `frame` changed.
fn mutate(frame: &PeerFrame, script: &mut Script<'_>) -> PeerFrame {
    let mut frame = frame.clone();
    match &mut frame {
        PeerFrame::Handshake(hello) => match script.byte() % 6 {
            0 => hello.version = random_version(script),
            1 => hello.cluster_id = random_cluster(script),
            2 => hello.from = random_server(script),
            3 => hello.to = random_server(script),
            4 => match &mut hello.nonce {
                Some(nonce) => flip(&mut nonce.0, script),
                None => hello.nonce = Some(random_nonce(script)),
            },
            _ => hello.nonce = None,
        },
        PeerFrame::Challenge { nonce } => flip(&mut nonce.0, script),
        PeerFrame::Proof { proof } => flip(&mut proof.0, script),
        PeerFrame::Accepted { proof } => match (proof.as_mut(), script.byte() % 3) {
            (Some(proof), 0) => flip(&mut proof.0, script),
            (Some(_), 1) => *proof = None,
            _ => *proof = Some(random_proof(script)),
        },
        PeerFrame::Refused { reason } => *reason = script.text(REFUSAL_REASON_CHARS_MAX),
        PeerFrame::Message(_) | PeerFrame::Keepalive => {}
    }
    frame
}

/// The live session's transcript as the side under test will check it, assuming the rogue
/// uses `peer_nonce` (and, for the acceptor under test, claims `setup.claimed`).
fn live_nonces(setup: &Setup, peer_nonce: Nonce) -> (Nonce, Nonce) {
    if setup.connector_under_test {
        (setup.own_nonce, peer_nonce)
    } else {
        (peer_nonce, setup.own_nonce)
    }
}

/// A proof, wrapped as the frame the side under test takes proofs in.
fn proof_frame(setup: &Setup, proof: Proof, as_other_kind: bool) -> PeerFrame {
    if setup.connector_under_test != as_other_kind {
        PeerFrame::Accepted { proof: Some(proof) }
    } else {
        PeerFrame::Proof { proof }
    }
}

/// A genuine proof under the real (shared) secret, recorded from another session: the side
/// under test's own nonce in it is another one (its nonce is fresh), and maybe more differs.
fn recorded_proof(setup: &Setup, script: &mut Script<'_>) -> PeerFrame {
    let (mut connector, mut acceptor) = setup.connector_and_acceptor();
    let (mut connector_nonce, mut acceptor_nonce) = live_nonces(setup, nonce_from(script.byte()));
    let mut stale = nonce_from(script.byte());
    if stale == setup.own_nonce {
        stale.0[0] ^= 1;
    }
    if setup.connector_under_test {
        connector_nonce = stale;
    } else {
        acceptor_nonce = stale;
    }
    let mut cluster_id = CLUSTER;
    match script.byte() % 4 {
        0 => cluster_id = "staging",
        1 => (connector, acceptor) = (acceptor, connector),
        2 => connector = ServerId(3),
        _ => {}
    }
    let prover = if script.bool() {
        Side::Connector
    } else {
        Side::Acceptor
    };
    let transcript = Transcript {
        cluster_id,
        connector,
        acceptor,
        connector_nonce: &connector_nonce,
        acceptor_nonce: &acceptor_nonce,
    };
    let proof = expected_proof(SHARED, prover, &transcript);
    proof_frame(setup, proof, script.byte().is_multiple_of(4))
}

/// What the rogue can forge with its own key for the live session, as it would go on: the
/// proof for the nonce pair it chose (its own nonce, or a chosen challenge).
fn forged_proof(setup: &Setup, script: &mut Script<'_>) -> PeerFrame {
    let peer_nonce = if script.bool() {
        setup.peer_nonce
    } else {
        nonce_from(script.byte())
    };
    let Some(key) = setup.peer.bytes() else {
        return proof_frame(setup, random_proof(script), false);
    };
    let (connector, acceptor) = setup.connector_and_acceptor();
    let (connector_nonce, acceptor_nonce) = live_nonces(setup, peer_nonce);
    let transcript = Transcript {
        cluster_id: CLUSTER,
        connector,
        acceptor,
        connector_nonce: &connector_nonce,
        acceptor_nonce: &acceptor_nonce,
    };
    let prover = if setup.connector_under_test {
        Side::Acceptor
    } else {
        Side::Connector
    };
    proof_frame(setup, expected_proof(key, prover, &transcript), false)
}

/// The side under test's own frame sent back to it, as the kind of frame it expects.
fn reflected(frame: &PeerFrame) -> PeerFrame {
    match frame {
        PeerFrame::Proof { proof } => PeerFrame::Accepted {
            proof: Some(*proof),
        },
        PeerFrame::Accepted { proof: Some(proof) } => PeerFrame::Proof { proof: *proof },
        PeerFrame::Challenge { nonce } => PeerFrame::Handshake(Handshake {
            version: PEER_PROTOCOL_VERSION,
            cluster_id: CLUSTER.to_string(),
            from: ServerId(1),
            to: ACCEPTOR,
            nonce: Some(*nonce),
        }),
        PeerFrame::Handshake(hello) => match hello.nonce {
            Some(nonce) => PeerFrame::Challenge { nonce },
            None => PeerFrame::Accepted { proof: None },
        },
        other => other.clone(),
    }
}

fn deliveries(setup: &Setup, exchange: &Exchange, script: &mut Script<'_>) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    while !script.is_done() && deliveries.len() < DELIVERIES_MAX {
        let delivery = match script.byte() % 7 {
            0 => Delivery::Frame(script.pick(&exchange.honest).clone()),
            1 => {
                let frame = script.pick(&exchange.honest).clone();
                Delivery::Frame(mutate(&frame, script))
            }
            2 => Delivery::Frame(random_frame(script)),
            3 => Delivery::Frame(recorded_proof(setup, script)),
            4 => Delivery::Frame(reflected(&script.pick(&exchange.own).clone())),
            5 => {
                let length = usize::from(script.byte());
                Delivery::Raw(script.bytes(length))
            }
            _ => Delivery::Frame(forged_proof(setup, script)),
        };
        deliveries.push(delivery);
    }
    deliveries
}

/// The side under test.
enum Under {
    Acceptor(AcceptorHandshake),
    Connector(ConnectorHandshake),
}

/// How the side's handshake ended.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    /// The acceptor accepted `from`, answering `answer`.
    Accepted { from: ServerId, answer: PeerFrame },
    /// The connector established the connection.
    Established,
    /// Refused (acceptor) or failed (connector), with the message it logs or sends.
    Refused(String),
}

/// What happened to the side under test.
#[derive(Debug, Default)]
struct Run {
    /// Frames it took, in order.
    delivered: Vec<PeerFrame>,
    /// Frames it sent, in order (for the connector, its opening handshake first).
    sent: Vec<PeerFrame>,
    verdict: Option<Verdict>,
    /// Why the connection closed before the state machine said anything (a bad preamble or
    /// frame, as the transport refuses it), if it did.
    closed: Option<String>,
    /// Characters of the acceptor's refusal reason the connector kept for its log.
    kept_reason_chars: usize,
}

impl Under {
    fn new(setup: &Setup) -> Under {
        if setup.connector_under_test {
            Under::Connector(ConnectorHandshake::new(
                CLUSTER,
                CONNECTOR,
                ACCEPTOR,
                setup.own.secret(),
                setup.own_nonce,
            ))
        } else {
            Under::Acceptor(AcceptorHandshake::new(
                CLUSTER,
                ACCEPTOR,
                &SERVERS,
                setup.own.secret(),
                setup.own_nonce,
            ))
        }
    }

    fn debug(&self) -> String {
        match self {
            Under::Acceptor(acceptor) => format!("{acceptor:?}"),
            Under::Connector(connector) => format!("{connector:?}"),
        }
    }

    /// Hands `frame` to the side, unless it already reached its verdict.
    fn take(&mut self, frame: PeerFrame, run: &mut Run) {
        if run.verdict.is_some() || run.closed.is_some() {
            return;
        }
        run.delivered.push(frame.clone());
        match self {
            Under::Acceptor(acceptor) => match acceptor.on_frame(frame) {
                AcceptorStep::Send(answer) => run.sent.push(answer),
                AcceptorStep::Accept { answer, from } => {
                    run.sent.push(answer.clone());
                    run.verdict = Some(Verdict::Accepted { from, answer });
                }
                AcceptorStep::Refuse(refusal) => {
                    run.verdict = Some(Verdict::Refused(refusal.to_string()))
                }
            },
            Under::Connector(connector) => match connector.on_frame(frame) {
                Ok(ConnectorStep::Send(answer)) => run.sent.push(answer),
                Ok(ConnectorStep::Established) => run.verdict = Some(Verdict::Established),
                Err(failure) => {
                    if let ConnectorFailure::Refused(reason) = &failure {
                        run.kept_reason_chars = reason.chars().count();
                    }
                    run.verdict = Some(Verdict::Refused(failure.to_string()));
                }
            },
        }
    }
}

fn encode(frame: &PeerFrame, out: &mut Vec<u8>) {
    encode_peer_frame(frame, out).expect("fuzz: a handshake frame encodes");
}

/// What `sniff` must say of `first_bytes`, by its documentation.
fn reference_sniff(first_bytes: &[u8]) -> Sniffed {
    if first_bytes.starts_with(PEER_MAGIC) {
        Sniffed::Peer
    } else if PEER_MAGIC.starts_with(first_bytes) {
        Sniffed::NeedMore
    } else {
        Sniffed::Client
    }
}

fn check_sniff(first_bytes: &[u8]) -> Result<(), String> {
    let sniffed = sniff(first_bytes);
    if sniffed != reference_sniff(first_bytes) {
        return Err(format!(
            "sniff({}) = {sniffed:?}",
            harness::hex(first_bytes)
        ));
    }
    if let Ok(preamble) = <[u8; PREAMBLE_BYTES]>::try_from(first_bytes) {
        let version = u32::from_be_bytes(preamble[PEER_MAGIC.len()..].try_into().unwrap());
        let expected = first_bytes.starts_with(PEER_MAGIC).then_some(version);
        if decode_preamble(&preamble) != expected {
            return Err(format!(
                "decode_preamble({}) = {:?}",
                harness::hex(first_bytes),
                decode_preamble(&preamble)
            ));
        }
    }
    Ok(())
}

/// Delivers the frames as values; raw bytes that decode as a payload become a frame, others
/// are dropped.
fn run_values(setup: &Setup, deliveries: &[Delivery]) -> (Under, Run) {
    let mut under = Under::new(setup);
    let mut run = Run::default();
    if let Under::Connector(connector) = &under {
        run.sent.push(opening_frame(&connector.opening()));
    }
    for delivery in deliveries {
        match delivery {
            Delivery::Frame(frame) => under.take(frame.clone(), &mut run),
            Delivery::Raw(bytes) => {
                if let Ok(frame) = decode_peer_frame(bytes) {
                    under.take(frame, &mut run);
                }
            }
        }
    }
    (under, run)
}

/// Sends the frames over the wire, cut into reads at the case's cut points, and reads them as
/// the transport does: the acceptor sniffs and checks the preamble first.
fn run_wire(setup: &Setup, deliveries: &[Delivery], case: &Case) -> Result<(Under, Run), String> {
    let mut stream = Vec::new();
    if !setup.connector_under_test {
        match setup.preamble_version {
            Some(_) => stream.extend_from_slice(PEER_MAGIC),
            None => stream.extend_from_slice(b"LSTEPPEAR"),
        }
        stream.extend_from_slice(&setup.preamble_version.unwrap_or(2).to_be_bytes());
    }
    for delivery in deliveries {
        match delivery {
            Delivery::Frame(frame) => encode(frame, &mut stream),
            Delivery::Raw(bytes) => stream.extend_from_slice(bytes),
        }
    }
    let mut under = Under::new(setup);
    let mut run = Run::default();
    if let Under::Connector(connector) = &under {
        run.sent.push(opening_frame(&connector.opening()));
    }
    let mut first_bytes = Vec::new();
    let mut decoder = FrameDecoder::with_limit(HANDSHAKE_FRAME_BYTES_MAX);
    let mut preamble_done = setup.connector_under_test;
    for piece in harness::pieces(case, &stream) {
        let mut piece: &[u8] = piece;
        if !preamble_done {
            first_bytes.extend_from_slice(piece);
            check_sniff(&first_bytes[..first_bytes.len().min(PREAMBLE_BYTES)])?;
            if sniff(&first_bytes) == Sniffed::Client {
                run.closed = Some("not a peer".into());
                break;
            }
            if first_bytes.len() < PREAMBLE_BYTES {
                continue;
            }
            let preamble: [u8; PREAMBLE_BYTES] = first_bytes[..PREAMBLE_BYTES].try_into().unwrap();
            let refusal = match decode_preamble(&preamble) {
                None => Some(Refusal::BadMagic),
                Some(PEER_PROTOCOL_VERSION) => None,
                Some(theirs) => Some(Refusal::Version {
                    ours: PEER_PROTOCOL_VERSION,
                    theirs,
                }),
            };
            if let Some(refusal) = refusal {
                run.closed = Some(refusal.to_string());
                break;
            }
            preamble_done = true;
            let rest = first_bytes.split_off(PREAMBLE_BYTES);
            piece = &[];
            feed(&mut decoder, &rest, &mut under, &mut run);
        }
        feed(&mut decoder, piece, &mut under, &mut run);
        if run.verdict.is_some() || run.closed.is_some() {
            break;
        }
    }
    Ok((under, run))
}

fn feed(decoder: &mut FrameDecoder, bytes: &[u8], under: &mut Under, run: &mut Run) {
    if run.verdict.is_some() || run.closed.is_some() {
        return;
    }
    let payloads = match decoder.feed(bytes) {
        Ok(payloads) => payloads,
        Err(error) => {
            run.closed = Some(Refusal::Malformed(error.to_string()).to_string());
            return;
        }
    };
    for payload in payloads {
        match decode_peer_frame(&payload) {
            Ok(frame) => under.take(frame, run),
            Err(error) => {
                run.closed = Some(Refusal::Malformed(error.to_string()).to_string());
                return;
            }
        }
        if run.verdict.is_some() || run.closed.is_some() {
            return;
        }
    }
}

/// Whether `text` shows the secret `key`, as it is or in hex.
fn shows(text: &str, key: &[u8]) -> bool {
    let key_text = String::from_utf8_lossy(key);
    let key_hex = harness::hex(key);
    text.contains(key_text.as_ref())
        || text.to_ascii_lowercase().contains(&key_hex)
        || text.contains(&key_text[..16])
}

fn check_message(what: &str, message: &str, bytes_max: usize) -> Result<(), String> {
    if message.len() > bytes_max {
        return Err(format!(
            "{what} of {} bytes (at most {bytes_max}): {:?}...",
            message.len(),
            &message.chars().take(80).collect::<String>()
        ));
    }
    for key in [SHARED, OTHER] {
        if shows(message, key) {
            return Err(format!("{what} shows a secret: {message:?}"));
        }
    }
    Ok(())
}

fn check_run(setup: &Setup, under: &Under, run: &Run) -> Result<(), String> {
    if let Some(closed) = &run.closed {
        check_message(
            "a refusal of a bad preamble or frame",
            closed,
            DECODE_REFUSAL_BYTES_MAX,
        )?;
    }
    for key in [SHARED, OTHER] {
        if shows(&under.debug(), key) {
            return Err("the state machine's Debug shows the secret".into());
        }
    }
    let (connector, acceptor) = if setup.connector_under_test {
        (CONNECTOR, ACCEPTOR)
    } else {
        // Whoever the accepted handshake claimed; checked below.
        match &run.verdict {
            Some(Verdict::Accepted { from, .. }) => (*from, ACCEPTOR),
            _ => (setup.claimed, ACCEPTOR),
        }
    };
    // The proofs the side sends are the documented ones, for the nonces it was given.
    for frame in &run.sent {
        let (proof, prover, transcript_nonces) = match frame {
            PeerFrame::Proof { proof } => {
                let challenge = run.delivered.iter().find_map(|frame| match frame {
                    PeerFrame::Challenge { nonce } => Some(*nonce),
                    _ => None,
                });
                let Some(challenge) = challenge else {
                    return Err(format!("sent a proof without a challenge: {run:?}"));
                };
                (proof, Side::Connector, (setup.own_nonce, challenge))
            }
            PeerFrame::Accepted { proof: Some(proof) } => {
                let Some(PeerFrame::Handshake(Handshake {
                    nonce: Some(nonce), ..
                })) = run.delivered.first()
                else {
                    return Err(format!("sent a proof without a handshake: {run:?}"));
                };
                (proof, Side::Acceptor, (*nonce, setup.own_nonce))
            }
            _ => continue,
        };
        let Some(key) = setup.own.bytes() else {
            return Err(format!("sent a proof without a secret: {frame:?}"));
        };
        let transcript = Transcript {
            cluster_id: CLUSTER,
            connector,
            acceptor,
            connector_nonce: &transcript_nonces.0,
            acceptor_nonce: &transcript_nonces.1,
        };
        if *proof != expected_proof(key, prover, &transcript) {
            return Err(format!(
                "sent {frame:?}, not the documented HMAC of {transcript:?}"
            ));
        }
    }
    if run.kept_reason_chars > REFUSAL_REASON_CHARS_MAX {
        return Err(format!(
            "the connector kept {} characters of a refusal reason",
            run.kept_reason_chars
        ));
    }
    match &run.verdict {
        None => Ok(()),
        Some(Verdict::Refused(message)) => check_message("a refusal", message, MESSAGE_BYTES_MAX),
        Some(Verdict::Accepted { from, answer }) => check_accepted(setup, run, *from, answer),
        Some(Verdict::Established) => check_established(setup, run),
    }
}

/// The acceptor accepted `from`: it holds the proof for exactly that session.
fn check_accepted(
    setup: &Setup,
    run: &Run,
    from: ServerId,
    answer: &PeerFrame,
) -> Result<(), String> {
    let Some(PeerFrame::Handshake(hello)) = run.delivered.first() else {
        return Err(format!("accepted without a handshake first: {run:?}"));
    };
    let well_formed = hello.version == PEER_PROTOCOL_VERSION
        && hello.cluster_id == CLUSTER
        && hello.from == from
        && SERVERS.contains(&from)
        && from != ACCEPTOR
        && hello.to == ACCEPTOR;
    if !well_formed {
        return Err(format!("accepted {from} after the handshake {hello:?}"));
    }
    let Some(key) = setup.own.bytes() else {
        if hello.nonce.is_some()
            || run.delivered.len() != 1
            || *answer != (PeerFrame::Accepted { proof: None })
        {
            return Err(format!("accepted without a secret: {run:?}"));
        }
        return Ok(());
    };
    let (Some(connector_nonce), [_, PeerFrame::Proof { proof }]) =
        (hello.nonce, run.delivered.as_slice())
    else {
        return Err(format!(
            "accepted {from} without a nonce and a proof: {run:?}"
        ));
    };
    let transcript = Transcript {
        cluster_id: CLUSTER,
        connector: from,
        acceptor: ACCEPTOR,
        connector_nonce: &connector_nonce,
        acceptor_nonce: &setup.own_nonce,
    };
    if *proof != expected_proof(key, Side::Connector, &transcript) {
        return Err(format!(
            "accepted {from} on {proof:?}, not the HMAC of {transcript:?}"
        ));
    }
    if setup.peer != setup.own {
        return Err(format!(
            "accepted {from}, whose end holds {:?} where this side holds {:?}: {run:?}",
            setup.peer, setup.own
        ));
    }
    Ok(())
}

/// The connector established its connection: the acceptor proved the secret for exactly this
/// session.
fn check_established(setup: &Setup, run: &Run) -> Result<(), String> {
    let Some(key) = setup.own.bytes() else {
        if run.delivered != [PeerFrame::Accepted { proof: None }] {
            return Err(format!("established without a secret: {run:?}"));
        }
        return Ok(());
    };
    let [
        PeerFrame::Challenge { nonce },
        PeerFrame::Accepted { proof: Some(proof) },
    ] = run.delivered.as_slice()
    else {
        return Err(format!(
            "established without a challenge and a proof: {run:?}"
        ));
    };
    let transcript = Transcript {
        cluster_id: CLUSTER,
        connector: CONNECTOR,
        acceptor: ACCEPTOR,
        connector_nonce: &setup.own_nonce,
        acceptor_nonce: nonce,
    };
    if *proof != expected_proof(key, Side::Acceptor, &transcript) {
        return Err(format!(
            "established on {proof:?}, not the HMAC of {transcript:?}"
        ));
    }
    if setup.peer != setup.own {
        return Err(format!(
            "established with an end that holds {:?} where this side holds {:?}: {run:?}",
            setup.peer, setup.own
        ));
    }
    Ok(())
}

fn check_case(case: &Case, materialized: &Materialized) -> Result<(), String> {
    let bytes = &materialized.bytes;
    check_sniff(&bytes[..bytes.len().min(PREAMBLE_BYTES)])?;
    let mut script = Script::new(bytes);
    let setup = Setup::read(&mut script);
    let exchange = honest_exchange(&setup);
    let deliveries = deliveries(&setup, &exchange, &mut script);
    let (under, run) = if setup.wire {
        run_wire(&setup, &deliveries, case)?
    } else {
        run_values(&setup, &deliveries)
    };
    check_run(&setup, &under, &run)
        .map_err(|error| format!("{error}\nsetup: {setup:?}\ndeliveries: {deliveries:?}"))
}

/// Honest exchanges for every configuration, and a few hostile ones, as scripts.
fn corpus() -> Vec<Vec<u8>> {
    let mut corpus = Vec::new();
    for header in 0..32u8 {
        // Honest frames 0 and 1 in order, then again with the second one twice.
        corpus.push(vec![header, 0x11, 0x22, 0, 0, 0, 1]);
        corpus.push(vec![header | 0x80, 0x33, 0x44, 0, 0, 0, 1, 0, 1]);
    }
    // With the shared secret on both ends: a recorded proof, a reflection, a forgery, a
    // bit-flipped proof, and raw bytes after the handshake.
    for side in [0x0e_u8, 0x0f, 0x1e, 0x1f] {
        corpus.push(vec![side, 0x11, 0x22, 0, 0, 3, 5, 5, 1, 0]);
        corpus.push(vec![side, 0x11, 0x22, 0, 0, 4, 1, 4, 0]);
        corpus.push(vec![side, 0x11, 0x22, 0, 0, 6, 1, 0]);
        corpus.push(vec![side, 0x11, 0x22, 0, 0, 1, 1, 0, 77]);
        corpus.push(vec![
            side, 0x11, 0x22, 0, 0, 5, 6, b'{', b'"', b'a', b'c', b'c', b'"',
        ]);
    }
    corpus
}

#[test]
fn peer_handshake() {
    // The oracle's HMAC agrees with the real exchange: honest ends that share the secret
    // establish, and their proofs pass `check_run`.
    for header in [0x02_u8, 0x03, 0x06, 0x07, 0x12, 0x13] {
        let bytes = [header, 0x11, 0x22, 0, 0, 0, 1];
        let mut script = Script::new(&bytes);
        let setup = Setup::read(&mut script);
        let exchange = honest_exchange(&setup);
        let deliveries = deliveries(&setup, &exchange, &mut script);
        let (under, run) = run_values(&setup, &deliveries);
        let expected = setup.own == setup.peer;
        assert_eq!(
            matches!(
                run.verdict,
                Some(Verdict::Accepted { .. } | Verdict::Established)
            ),
            expected,
            "{setup:?}: {run:?}"
        );
        check_run(&setup, &under, &run).unwrap();
    }
    let corpus = corpus();
    let target = Target {
        name: "peer_handshake",
        corpus: &corpus,
        random_bytes_max: 96,
        random_prefix: &[0x1e, 0x11, 0x22],
        dictionary: &[
            "\0\0",
            "\0\u{1}",
            "\u{3}",
            "\u{4}\0",
            "\u{6}\u{1}",
            "\u{1}\0\u{4}",
        ],
    };
    harness::fuzz(&target, check_case);
}
