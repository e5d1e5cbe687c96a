//! The peer transport over tokio TCP: one outbound connection per peer that carries this
//! server's messages to it, and inbound connections that carry each peer's messages here.
//!
//! Raft tolerates loss, so the transport never blocks the node and never grows without bound:
//! each peer has a bounded queue, a full queue drops the newest message (counted), and
//! messages queued while a peer is unreachable are dropped (counted) rather than delivered late.
//! Connections are one-way after the handshake: the connector writes frames, the acceptor
//! reads them. A pair of servers therefore holds two connections, one in each direction.
//!
//! This module must never call into the node: inbound messages leave through the `deliver`
//! callback the driver gives it.

use super::frame::{FrameDecoder, PeerFrame, decode_peer_frame, encode_peer_frame};
use super::handshake::{Handshake, PREAMBLE_BYTES, Refusal, decode_preamble};
use crate::node::{PeerMessage, ServerId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Who this server is among its peers: what a handshake is checked against.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub cluster_id: String,
    pub me: ServerId,
    /// Every server of the cluster, this one included.
    pub servers: Vec<ServerId>,
}

/// Where the node's `Send` effects go: one bounded queue per peer.
///
/// Contract: [`PeerSender::send`] never blocks, so the node task and the log thread may call it.
#[derive(Clone, Debug)]
pub struct PeerSender {
    queues: BTreeMap<ServerId, mpsc::Sender<PeerMessage>>,
    dropped: Arc<BTreeMap<ServerId, AtomicU64>>,
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
    let mut queues = BTreeMap::new();
    for (&peer, address) in peers {
        let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
        queues.insert(peer, sender);
        let connector = Connector {
            handshake: Handshake::new(&identity.cluster_id, identity.me, peer),
            address: address.clone(),
            queue: receiver,
            dropped: Arc::clone(&dropped),
        };
        tokio::spawn(connector.run());
    }
    PeerSender { queues, dropped }
}

/// One peer's outbound side.
struct Connector {
    handshake: Handshake,
    address: String,
    queue: mpsc::Receiver<PeerMessage>,
    dropped: Arc<BTreeMap<ServerId, AtomicU64>>,
}

impl Connector {
    async fn run(mut self) {
        let peer = self.handshake.to;
        let mut delay = RECONNECT_DELAY_MIN;
        let mut failures_in_a_row: u64 = 0;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    tracing::info!(peer = %peer, address = %self.address, "connected to peer");
                    delay = RECONNECT_DELAY_MIN;
                    failures_in_a_row = 0;
                    let reason = self.pump(stream).await;
                    let Some(reason) = reason else { return };
                    tracing::info!(peer = %peer, address = %self.address, %reason,
                        "lost the connection to peer");
                }
                Err(ConnectError::Refused(reason)) => {
                    tracing::warn!(peer = %peer, address = %self.address, %reason,
                        "peer refused our handshake");
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
        self.dropped[&self.handshake.to].fetch_add(dropped, Ordering::Relaxed);
        true
    }

    async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let attempt = async {
            let mut stream = TcpStream::connect(&self.address)
                .await
                .map_err(|error| ConnectError::Failed(error.to_string()))?;
            let _ = stream.set_nodelay(true);
            stream
                .write_all(&self.handshake.encode_opening())
                .await
                .map_err(|error| ConnectError::Failed(error.to_string()))?;
            match read_one_frame(&mut stream).await {
                Ok(PeerFrame::Accepted) => Ok(stream),
                Ok(PeerFrame::Refused { reason }) => Err(ConnectError::Refused(reason)),
                Ok(other) => Err(ConnectError::Failed(format!(
                    "unexpected answer to the handshake: {other:?}"
                ))),
                Err(reason) => Err(ConnectError::Failed(reason)),
            }
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
    async fn pump(&mut self, stream: TcpStream) -> Option<String> {
        let (mut reader, mut writer) = stream.into_split();
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
            buffer.clear();
            if buffer.capacity() > 4 * WRITE_BATCH_BYTES_MAX {
                buffer = Vec::with_capacity(64 * 1024);
            }
        }
    }

    fn encode(&self, message: PeerMessage, buffer: &mut Vec<u8>) {
        let kind = message.kind_name();
        if let Err(error) = encode_peer_frame(&PeerFrame::Message(message), buffer) {
            tracing::warn!(peer = %self.handshake.to, kind, %error, "dropped a message too large to send");
            self.dropped[&self.handshake.to].fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum ConnectError {
    /// The peer answered and said no: a configuration problem, logged at warn.
    Refused(String),
    /// No connection or no answer.
    Failed(String),
}

/// Reads exactly one frame (the handshake's answer). The acceptor sends nothing after it, so
/// reading a little past it loses nothing.
async fn read_one_frame(stream: &mut TcpStream) -> Result<PeerFrame, String> {
    let mut decoder = FrameDecoder::new();
    let mut chunk = [0u8; 1024];
    // Bounded by the handshake timeout around the caller.
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| error.to_string())?;
        if read == 0 {
            return Err("the peer closed the connection during the handshake".into());
        }
        let mut frames = decoder.feed(&chunk[..read]).map_err(|e| e.to_string())?;
        if !frames.is_empty() {
            return decode_peer_frame(&frames.remove(0)).map_err(|e| e.to_string());
        }
    }
}

/// Serves an inbound peer connection whose first bytes (`already_read`, at least the magic)
/// the listener consumed: checks the handshake, answers it, then hands every message to
/// `deliver` until the connection ends. Returns why it ended, for the log.
pub async fn serve_inbound(
    mut stream: TcpStream,
    already_read: Vec<u8>,
    identity: Arc<PeerIdentity>,
    deliver: impl Fn(ServerId, PeerMessage),
) -> String {
    let (handshake, leftover) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake(&mut stream, already_read))
            .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(refusal)) => return refuse(&mut stream, refusal.to_string()).await,
            Err(_) => return format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
        };
    if let Err(refusal) = handshake.check(&identity.cluster_id, identity.me, &identity.servers) {
        return refuse(&mut stream, refusal.to_string()).await;
    }
    let from = handshake.from;
    let mut answer = Vec::new();
    encode_peer_frame(&PeerFrame::Accepted, &mut answer).expect("small");
    if let Err(error) = stream.write_all(&answer).await {
        return format!("{from}: {error}");
    }
    tracing::info!(peer = %from, "accepted a connection from peer");
    let mut decoder = FrameDecoder::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut pending = leftover;
    // Bounded by the connection's life; every round reads at least one byte or ends.
    loop {
        let payloads = match decoder.feed(&pending) {
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
        pending.clear();
        pending.extend_from_slice(&chunk[..read]);
    }
}

/// Reads the preamble and the handshake frame. Returns the handshake and any bytes after it.
async fn read_handshake(
    stream: &mut TcpStream,
    mut bytes: Vec<u8>,
) -> Result<(Handshake, Vec<u8>), Refusal> {
    let mut chunk = [0u8; 4096];
    let mut decoder = FrameDecoder::with_limit(4096);
    let mut preamble_checked = false;
    // Bounded by the handshake timeout around the caller and the decoder's limit.
    loop {
        if !preamble_checked && bytes.len() >= PREAMBLE_BYTES {
            let preamble: [u8; PREAMBLE_BYTES] = bytes[..PREAMBLE_BYTES].try_into().expect("len");
            let version = decode_preamble(&preamble).ok_or(Refusal::BadMagic)?;
            if version != super::handshake::PEER_PROTOCOL_VERSION {
                return Err(Refusal::Version {
                    ours: super::handshake::PEER_PROTOCOL_VERSION,
                    theirs: version,
                });
            }
            preamble_checked = true;
            bytes.drain(..PREAMBLE_BYTES);
        }
        if preamble_checked {
            // The handshake is the one frame the connector sends before our answer, so a
            // frame decoded here is it, and nothing can follow it yet.
            let frames = decoder
                .feed(&bytes)
                .map_err(|error| Refusal::Malformed(error.to_string()))?;
            bytes.clear();
            if let Some(payload) = frames.first() {
                return match decode_peer_frame(payload) {
                    Ok(PeerFrame::Handshake(handshake)) => Ok((handshake, Vec::new())),
                    Ok(other) => Err(Refusal::Malformed(format!("{other:?} before a handshake"))),
                    Err(error) => Err(Refusal::Malformed(error.to_string())),
                };
            }
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| Refusal::Malformed(error.to_string()))?;
        if read == 0 {
            return Err(Refusal::Malformed("closed during the handshake".into()));
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
}

/// Says why, politely, and closes. Returns the reason for the log.
async fn refuse(stream: &mut TcpStream, reason: String) -> String {
    let mut answer = Vec::new();
    let frame = PeerFrame::Refused {
        reason: reason.clone(),
    };
    encode_peer_frame(&frame, &mut answer).expect("small");
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
    format!("refused: {reason}")
}
