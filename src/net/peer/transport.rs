//! The peer transport over tokio TCP: one outbound connection per peer that carries this
//! server's messages to it, and inbound connections that carry each peer's messages here.
//!
//! Raft tolerates loss, so the transport never blocks the node and never grows without bound:
//! each peer has a bounded queue, a full queue drops the newest message (counted), and
//! messages queued while a peer is unreachable are dropped (counted) rather than delivered late.
//! Connections are one-way after the handshake: the connector writes frames, the acceptor
//! reads them. A pair of servers therefore holds two connections, one in each direction.
//!
//! With TLS ([`PeerIdentity::tls`]), the connector runs TLS over the TCP connection before the
//! handshake, presenting this server's certificate and verifying the peer's for the host of its
//! address; the acceptor's side of TLS is the listener's (`net::runtime`), which hands
//! [`serve_inbound`] the decrypted stream. The handshake runs inside TLS either way.
//!
//! This module must never call into the node: inbound messages leave through the `deliver`
//! callback the driver gives it.

use super::frame::{
    FRAME_BYTES_MAX, FrameDecoder, PeerFrame, decode_peer_frame, encode_peer_frame,
};
use super::handshake::{
    AcceptorHandshake, AcceptorStep, ClusterSecret, ConnectorFailure, ConnectorHandshake,
    ConnectorStep, NONCE_BYTES, Nonce, PEER_PROTOCOL_VERSION, PREAMBLE_BYTES, Refusal,
    decode_preamble,
};
use crate::net::tls::stream::NetStream;
use crate::node::{PeerMessage, ServerId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Messages waiting for one peer's connection.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4_096;
/// First reconnection delay; it doubles after each failure up to [`RECONNECT_DELAY_MAX`].
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);
/// How long a connect or a handshake may take before the attempt counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes encoded into one write before it is flushed, so one burst cannot hold a huge buffer.
const WRITE_BATCH_BYTES_MAX: usize = 1024 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Largest frame either side reads before the handshake is done: a handshake, challenge,
/// proof or answer is a few hundred bytes, and an unauthenticated caller gets no more.
const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;
/// Frames a handshake takes from the other side at most: the handshake and the proof (the
/// acceptor), or the challenge and the acceptance (the connector).
const HANDSHAKE_FRAMES_MAX: usize = 2;

/// Who this server is among its peers: what a handshake is checked against.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub cluster_id: String,
    pub me: ServerId,
    /// Every server of the cluster, this one included.
    pub servers: Vec<ServerId>,
    /// The cluster secret both sides of every handshake must prove; `None` runs
    /// unauthenticated (and refuses peers that have one).
    pub secret: Option<Arc<ClusterSecret>>,
    /// Connect to peers over TLS with this configuration (which presents this server's
    /// certificate); `None` connects in plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A fresh handshake nonce from `rand`'s thread RNG: a ChaCha12 CSPRNG seeded, and
/// periodically reseeded, from the operating system.
fn fresh_nonce() -> Nonce {
    let mut bytes = [0u8; NONCE_BYTES];
    rand::fill(&mut bytes[..]);
    Nonce(bytes)
}

/// Where the node's `Send` effects go: one bounded queue per peer.
///
/// Contract: [`PeerSender::send`] never blocks, so the node task and the log thread may call it.
#[derive(Clone, Debug)]
pub struct PeerSender {
    queues: BTreeMap<ServerId, mpsc::Sender<PeerMessage>>,
    dropped: Arc<BTreeMap<ServerId, AtomicU64>>,
    /// Per peer, whether its outbound connection is up (handshake done).
    connected: Arc<BTreeMap<ServerId, AtomicBool>>,
}

/// What the outbound side of each peer link is doing, for operators (metrics): read-only, and
/// holding no queue, so it keeps no connector task alive.
#[derive(Clone, Debug)]
pub struct PeerLinks {
    dropped: Arc<BTreeMap<ServerId, AtomicU64>>,
    connected: Arc<BTreeMap<ServerId, AtomicBool>>,
}

impl PeerLinks {
    /// Every configured peer, in order.
    pub fn peers(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.connected.keys().copied()
    }

    /// Whether this server's connection to `peer` is up: connected, and the handshake done.
    pub fn is_connected(&self, peer: ServerId) -> bool {
        self.connected
            .get(&peer)
            .is_some_and(|up| up.load(Ordering::Relaxed))
    }

    /// Messages to `peer` dropped so far (queue full or peer unreachable).
    pub fn dropped(&self, peer: ServerId) -> u64 {
        self.dropped
            .get(&peer)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }
}

impl PeerSender {
    /// Queues `msg` for `to`. A full queue drops it and counts the drop: Raft retries what
    /// matters (heartbeats, log repair), and the node must never wait on the network.
    pub fn send(&self, to: ServerId, msg: PeerMessage) {
        let queue = self
            .queues
            .get(&to)
            .unwrap_or_else(|| panic!("the node sent to {to}, which is not a configured peer"));
        if queue.try_send(msg).is_err() {
            self.dropped[&to].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages to `peer` dropped so far (queue full or peer unreachable).
    pub fn dropped(&self, peer: ServerId) -> u64 {
        self.dropped
            .get(&peer)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// The links' state, without the queues.
    pub fn links(&self) -> PeerLinks {
        PeerLinks {
            dropped: Arc::clone(&self.dropped),
            connected: Arc::clone(&self.connected),
        }
    }
}

/// Starts one connector task per peer on the current tokio runtime and returns the sender the
/// node loop uses. `peers` maps each other server to its `host:port`.
pub fn spawn_outbound(identity: &PeerIdentity, peers: &BTreeMap<ServerId, String>) -> PeerSender {
    assert!(
        !peers.contains_key(&identity.me),
        "a server is not its own peer"
    );
    let dropped: Arc<BTreeMap<ServerId, AtomicU64>> =
        Arc::new(peers.keys().map(|&id| (id, AtomicU64::new(0))).collect());
    let connected: Arc<BTreeMap<ServerId, AtomicBool>> = Arc::new(
        peers
            .keys()
            .map(|&id| (id, AtomicBool::new(false)))
            .collect(),
    );
    let mut queues = BTreeMap::new();
    for (&peer, address) in peers {
        let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
        queues.insert(peer, sender);
        let connector = Connector {
            identity: identity.clone(),
            peer,
            address: address.clone(),
            queue: receiver,
            dropped: Arc::clone(&dropped),
            connected: Arc::clone(&connected),
        };
        tokio::spawn(connector.run());
    }
    PeerSender {
        queues,
        dropped,
        connected,
    }
}

/// One peer's outbound side.
struct Connector {
    identity: PeerIdentity,
    peer: ServerId,
    address: String,
    queue: mpsc::Receiver<PeerMessage>,
    dropped: Arc<BTreeMap<ServerId, AtomicU64>>,
    connected: Arc<BTreeMap<ServerId, AtomicBool>>,
}

impl Connector {
    async fn run(mut self) {
        let peer = self.peer;
        let mut delay = RECONNECT_DELAY_MIN;
        let mut failures_in_a_row: u64 = 0;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    tracing::info!(peer = %peer, address = %self.address, "connected to peer");
                    delay = RECONNECT_DELAY_MIN;
                    failures_in_a_row = 0;
                    self.connected[&peer].store(true, Ordering::Relaxed);
                    let reason = self.pump(stream).await;
                    self.connected[&peer].store(false, Ordering::Relaxed);
                    let Some(reason) = reason else { return };
                    tracing::info!(peer = %peer, address = %self.address, %reason,
                        "lost the connection to peer");
                }
                Err(ConnectError::Refused(reason)) => {
                    tracing::warn!(peer = %peer, address = %self.address, %reason,
                        "peer refused our handshake; retrying with backoff");
                }
                Err(ConnectError::Distrusted(reason)) => {
                    tracing::warn!(peer = %peer, address = %self.address, %reason,
                        "refusing the peer: it failed the handshake; retrying with backoff");
                }
                Err(ConnectError::Tls(reason)) => {
                    tracing::warn!(peer = %peer, address = %self.address, %reason,
                        "TLS with the peer failed; retrying with backoff");
                }
                Err(ConnectError::Failed(reason)) => {
                    failures_in_a_row += 1;
                    // The first failure is news; the rest of an outage is noise.
                    if failures_in_a_row == 1 {
                        tracing::info!(peer = %peer, address = %self.address, %reason,
                            "cannot reach peer; retrying with backoff");
                    } else {
                        tracing::debug!(peer = %peer, %reason, failures_in_a_row, "cannot reach peer");
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_DELAY_MAX);
            if !self.drop_queued() {
                return;
            }
        }
    }

    /// Drops what queued up while the peer was unreachable; false once the node is gone.
    fn drop_queued(&mut self) -> bool {
        let mut dropped = 0u64;
        // Bounded by the queue's capacity plus what arrives meanwhile; stop at twice that.
        for _ in 0..2 * PEER_QUEUE_MESSAGES_MAX {
            match self.queue.try_recv() {
                Ok(_) => dropped += 1,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
        self.dropped[&self.peer].fetch_add(dropped, Ordering::Relaxed);
        true
    }

    async fn connect(&self) -> Result<NetStream, ConnectError> {
        let failed = |error: std::io::Error| ConnectError::Failed(error.to_string());
        let attempt = async {
            let stream = TcpStream::connect(&self.address).await.map_err(failed)?;
            let _ = stream.set_nodelay(true);
            let mut stream = match &self.identity.tls {
                None => NetStream::Plain(stream),
                Some(config) => {
                    let name = crate::net::tls::server_name_of(&self.address)
                        .map_err(ConnectError::Failed)?;
                    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                    match connector.connect(name, stream).await {
                        Ok(tls) => NetStream::TlsClient(Box::new(tls)),
                        // A certificate or an alert: a configuration problem, worth a warning.
                        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                            return Err(ConnectError::Tls(error.to_string()));
                        }
                        Err(error) => return Err(failed(error)),
                    }
                }
            };
            let mut handshake = ConnectorHandshake::new(
                &self.identity.cluster_id,
                self.identity.me,
                self.peer,
                self.identity.secret.clone(),
                fresh_nonce(),
            );
            stream
                .write_all(&handshake.opening())
                .await
                .map_err(failed)?;
            stream.flush().await.map_err(failed)?;
            let mut reader = HandshakeReader::new(Vec::new());
            for _ in 0..HANDSHAKE_FRAMES_MAX {
                let frame = reader
                    .next_frame(&mut stream)
                    .await
                    .map_err(ConnectError::Failed)?;
                match handshake.on_frame(frame) {
                    Ok(ConnectorStep::Send(frame)) => {
                        write_frame(&mut stream, &frame).await.map_err(failed)?
                    }
                    // The acceptor sends nothing after its acceptance, so the reader holds
                    // nothing that is lost here.
                    Ok(ConnectorStep::Established) => return Ok(stream),
                    Err(ConnectorFailure::Refused(reason)) => {
                        return Err(ConnectError::Refused(reason));
                    }
                    Err(failure) => return Err(ConnectError::Distrusted(failure.to_string())),
                }
            }
            Err(ConnectError::Distrusted(format!(
                "no verdict after {HANDSHAKE_FRAMES_MAX} frames"
            )))
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Failed(format!(
                "no handshake within {HANDSHAKE_TIMEOUT:?}"
            ))),
        }
    }

    /// Writes queued messages until the connection fails (`Some(reason)`) or the node is gone
    /// (`None`). Writes everything that is ready in one go: one syscall per burst.
    async fn pump(&mut self, stream: NetStream) -> Option<String> {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buffer = Vec::with_capacity(64 * 1024);
        let mut probe = [0u8; 64];
        loop {
            let first = tokio::select! {
                message = self.queue.recv() => message?,
                read = reader.read(&mut probe) => {
                    // The acceptor never writes after `Accepted`: any read is the end.
                    return Some(match read {
                        Ok(0) => "the peer closed the connection".to_string(),
                        Ok(_) => "the peer sent bytes on an outbound connection".to_string(),
                        Err(error) => error.to_string(),
                    });
                }
            };
            self.encode(first, &mut buffer);
            while buffer.len() < WRITE_BATCH_BYTES_MAX {
                match self.queue.try_recv() {
                    Ok(message) => self.encode(message, &mut buffer),
                    Err(_) => break,
                }
            }
            if let Err(error) = writer.write_all(&buffer).await {
                return Some(error.to_string());
            }
            if let Err(error) = writer.flush().await {
                return Some(error.to_string());
            }
            buffer.clear();
            if buffer.capacity() > 4 * WRITE_BATCH_BYTES_MAX {
                buffer = Vec::with_capacity(64 * 1024);
            }
        }
    }

    fn encode(&self, message: PeerMessage, buffer: &mut Vec<u8>) {
        let kind = message.kind_name();
        if let Err(error) = encode_peer_frame(&PeerFrame::Message(message), buffer) {
            tracing::warn!(peer = %self.peer, kind, %error, "dropped a message too large to send");
            self.dropped[&self.peer].fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum ConnectError {
    /// The peer answered and said no: a configuration problem, logged at warn.
    Refused(String),
    /// The peer failed our side of the handshake (no proof, or a wrong one): logged at warn.
    Distrusted(String),
    /// TLS failed: a certificate the other side or we did not accept. Logged at warn.
    Tls(String),
    /// No connection or no answer.
    Failed(String),
}

/// Reads the frames of a handshake, from either side, under [`HANDSHAKE_FRAME_BYTES_MAX`].
struct HandshakeReader {
    decoder: FrameDecoder,
    /// Bytes read but not yet fed to the decoder (the first bytes the listener sniffed).
    unfed: Vec<u8>,
    /// Frames decoded but not yet taken.
    frames: VecDeque<Vec<u8>>,
}

impl HandshakeReader {
    fn new(unfed: Vec<u8>) -> HandshakeReader {
        HandshakeReader {
            decoder: FrameDecoder::with_limit(HANDSHAKE_FRAME_BYTES_MAX),
            unfed,
            frames: VecDeque::new(),
        }
    }

    /// The next frame. Bounded by the handshake timeout around the caller and the frame
    /// limit: every round reads at least one byte or ends.
    async fn next_frame<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<PeerFrame, String> {
        let mut chunk = [0u8; 1024];
        loop {
            if !self.unfed.is_empty() {
                let frames = self
                    .decoder
                    .feed(&self.unfed)
                    .map_err(|error| error.to_string())?;
                self.unfed.clear();
                self.frames.extend(frames);
            }
            if let Some(payload) = self.frames.pop_front() {
                return decode_peer_frame(&payload).map_err(|error| error.to_string());
            }
            let read = stream
                .read(&mut chunk)
                .await
                .map_err(|error| error.to_string())?;
            if read == 0 {
                return Err("the peer closed the connection during the handshake".into());
            }
            self.unfed.extend_from_slice(&chunk[..read]);
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame: &PeerFrame,
) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    encode_peer_frame(frame, &mut bytes).expect("handshake frames are small");
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// Serves an inbound peer connection whose first bytes (`already_read`, at least the magic)
/// the listener consumed: runs the acceptor's side of the handshake, then hands every message
/// to `deliver` until the connection ends. Returns why it ended, for the log; a refused
/// handshake's reason starts with `refused`.
pub async fn serve_inbound<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    already_read: Vec<u8>,
    identity: Arc<PeerIdentity>,
    deliver: impl Fn(ServerId, PeerMessage),
) -> String {
    let handshake = AcceptorHandshake::new(
        &identity.cluster_id,
        identity.me,
        &identity.servers,
        identity.secret.clone(),
        fresh_nonce(),
    );
    let accepted = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        accept_handshake(&mut stream, already_read, handshake),
    )
    .await;
    let (from, mut decoder) = match accepted {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(AcceptEnd::Refused(refusal))) => {
            return refuse_inbound(&mut stream, refusal.to_string()).await;
        }
        Ok(Err(AcceptEnd::Failed(reason))) => return reason,
        Err(_) => return format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
    };
    tracing::info!(peer = %from, "accepted a connection from peer");
    // Authenticated (or, without a secret, as trusted as it gets): now the full frame size.
    decoder.raise_limit(FRAME_BYTES_MAX);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // Bounded by the connection's life; every round reads at least one byte or ends.
    loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) => {
                return match decoder.finish() {
                    Ok(()) => format!("{from} closed the connection"),
                    Err(error) => format!("{from}: {error}"),
                };
            }
            Ok(read) => read,
            Err(error) => return format!("{from}: {error}"),
        };
        let payloads = match decoder.feed(&chunk[..read]) {
            Ok(payloads) => payloads,
            Err(error) => return format!("{from}: {error}"),
        };
        for payload in payloads {
            match decode_peer_frame(&payload) {
                Ok(PeerFrame::Message(message)) => deliver(from, message),
                Ok(other) => return format!("{from}: unexpected frame {other:?}"),
                Err(error) => return format!("{from}: {error}"),
            }
        }
    }
}

/// How an acceptor's handshake ended other than in acceptance.
enum AcceptEnd {
    /// Tell the connector why, and log it at warn.
    Refused(Refusal),
    /// The connection broke: nobody to tell.
    Failed(String),
}

/// Checks the preamble and runs the acceptor's side of the handshake. Returns the accepted
/// peer, and the decoder holding whatever partial frame followed the handshake.
async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mut bytes: Vec<u8>,
    mut handshake: AcceptorHandshake,
) -> Result<(ServerId, FrameDecoder), AcceptEnd> {
    let mut chunk = [0u8; PREAMBLE_BYTES];
    // Bounded: each round reads at least one byte, and the preamble is 13 bytes.
    while bytes.len() < PREAMBLE_BYTES {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| AcceptEnd::Failed(error.to_string()))?;
        if read == 0 {
            return Err(AcceptEnd::Failed("closed during the preamble".into()));
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
    let preamble: [u8; PREAMBLE_BYTES] = bytes[..PREAMBLE_BYTES].try_into().expect("len");
    let version = decode_preamble(&preamble).ok_or(AcceptEnd::Refused(Refusal::BadMagic))?;
    if version != PEER_PROTOCOL_VERSION {
        return Err(AcceptEnd::Refused(Refusal::Version {
            ours: PEER_PROTOCOL_VERSION,
            theirs: version,
        }));
    }
    let mut reader = HandshakeReader::new(bytes.split_off(PREAMBLE_BYTES));
    for _ in 0..HANDSHAKE_FRAMES_MAX {
        let frame = reader
            .next_frame(stream)
            .await
            .map_err(|reason| AcceptEnd::Refused(Refusal::Malformed(reason)))?;
        // The connector waits for each answer before it sends again, so a frame already
        // queued behind this one broke the protocol.
        if !reader.frames.is_empty() {
            return Err(AcceptEnd::Refused(Refusal::Malformed(
                "a frame sent before the previous one was answered".into(),
            )));
        }
        match handshake.on_frame(frame) {
            AcceptorStep::Send(frame) => write_frame(stream, &frame)
                .await
                .map_err(|error| AcceptEnd::Failed(error.to_string()))?,
            AcceptorStep::Accept { answer, from } => {
                write_frame(stream, &answer)
                    .await
                    .map_err(|error| AcceptEnd::Failed(format!("{from}: {error}")))?;
                return Ok((from, reader.decoder));
            }
            AcceptorStep::Refuse(refusal) => return Err(AcceptEnd::Refused(refusal)),
        }
    }
    unreachable!("an acceptor handshake reaches a verdict within {HANDSHAKE_FRAMES_MAX} frames")
}

/// Longest refusal reason sent or logged, in characters. A reason may quote what the caller
/// sent (a decoder's error does), which is the caller's text up to a whole handshake frame.
pub const REFUSAL_CHARS_MAX: usize = 512;

/// Says why, politely, and closes. Returns the reason for the log.
pub async fn refuse_inbound<S: AsyncWrite + Unpin>(stream: &mut S, reason: String) -> String {
    let reason = if reason.chars().count() > REFUSAL_CHARS_MAX {
        let mut cut: String = reason.chars().take(REFUSAL_CHARS_MAX).collect();
        cut.push('…');
        cut
    } else {
        reason
    };
    let frame = PeerFrame::Refused {
        reason: reason.clone(),
    };
    let _ = write_frame(stream, &frame).await;
    let _ = stream.shutdown().await;
    format!("refused: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::peer::frame::{FrameDecoder, decode_peer_frame};
    use tokio::io::AsyncReadExt;

    /// A refusal that quotes a caller's whole frame is cut short before it is sent or logged.
    #[test]
    fn a_refusal_reason_is_cut_to_its_bound_before_it_is_sent() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
            let quoted = "x".repeat(4096);
            let logged = refuse_inbound(&mut ours, format!("bad frame: {quoted}")).await;
            assert!(logged.chars().count() <= REFUSAL_CHARS_MAX + "refused: …".len());
            let mut sent = Vec::new();
            theirs.read_to_end(&mut sent).await.unwrap();
            let frames = FrameDecoder::new().feed(&sent).unwrap();
            match decode_peer_frame(&frames[0]).unwrap() {
                PeerFrame::Refused { reason } => {
                    assert_eq!(reason.chars().count(), REFUSAL_CHARS_MAX + 1);
                    assert!(reason.starts_with("bad frame: xxx") && reason.ends_with('…'));
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        });
    }
}
