//! The peer transport over tokio TCP: one outbound connection per peer that carries this
//! server's messages to it, and inbound connections that carry each peer's messages here.
//!
//! Raft tolerates loss, so the transport never blocks the node and never grows without bound:
//! each peer has a bounded queue, a full queue drops the newest message (counted), and
//! messages queued while a peer is unreachable are dropped (counted) rather than delivered late.
//! Raft messages flow one way after the handshake: the connector writes them, the acceptor
//! reads them. A pair of servers therefore holds two connections, one in each direction.
//!
//! **Silent links are dropped.** A connection cut by the network (a partition, a paused
//! process) shows no error: TCP retransmits into the void with a growing back-off, writes keep
//! landing in the kernel's buffer, and reads simply wait. A link that waited on that back-off
//! after the network healed kept a server out of its cluster for seconds. So both sides of
//! every link speak at least once per [`PeerTiming::keepalive_interval`] (the connector a
//! [`PeerFrame::Keepalive`] when it has nothing else to write, the acceptor a keepalive back
//! every interval), and each side drops a link on which nothing arrived for
//! [`PeerTiming::silence_max`] or whose writes made no progress for as long. The connector then
//! redials at once, and every attempt (connect, TLS, handshake) is cut short at
//! [`PeerTiming::attempt_timeout`], so that a healed link is back within one attempt and one
//! reconnection delay.
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
/// How long an acceptor waits for a connector to finish the handshake. The connector's own
/// bound is [`PeerTiming::attempt_timeout`]; this one only protects the acceptor from callers
/// that never finish, so it can be generous.
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

/// How fast the transport notices a dead link and redials it. Every figure is tied to the
/// heartbeat interval ([`PeerTiming::for_heartbeat`]), so that a link is judged on the same
/// clock as the leader that uses it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct PeerTiming {
    /// A side that has written nothing for this long writes a [`PeerFrame::Keepalive`].
    pub keepalive_interval: Duration,
    /// A link on which nothing arrived for this long, or whose writes made no progress for this
    /// long, is dropped; the connector then redials it.
    pub silence_max: Duration,
    /// Longest connect, TLS and handshake attempt of the connector.
    pub attempt_timeout: Duration,
    /// First reconnection delay; it doubles after each failed attempt up to
    /// `reconnect_delay_max`, and starts again from here once a link is established.
    pub reconnect_delay_min: Duration,
    pub reconnect_delay_max: Duration,
}

/// Keepalives per silence bound: a link is dropped after this many keepalive intervals without
/// a frame. Six heartbeats are the default election timeout's upper end, so a leader's
/// followers notice a dead link about when they would start an election anyway.
pub const KEEPALIVES_PER_SILENCE: u32 = 6;
/// Heartbeats a connector's attempt may take: ten (half a second by default) is a hundred
/// times a loopback handshake, and well below the kernel's first SYN retransmission (1 s), so
/// that an attempt made while the network was cut never waits on the kernel.
pub const HEARTBEATS_PER_ATTEMPT: u32 = 10;
/// Heartbeats of the longest reconnection delay.
pub const HEARTBEATS_PER_RECONNECT_DELAY_MAX: u32 = 10;

impl PeerTiming {
    /// The timing for a cluster whose leaders send heartbeats every `heartbeat`.
    pub fn for_heartbeat(heartbeat: Duration) -> PeerTiming {
        assert!(!heartbeat.is_zero(), "peer timing: a zero heartbeat");
        let timing = PeerTiming {
            keepalive_interval: heartbeat,
            silence_max: heartbeat * KEEPALIVES_PER_SILENCE,
            attempt_timeout: heartbeat * HEARTBEATS_PER_ATTEMPT,
            reconnect_delay_min: heartbeat,
            reconnect_delay_max: heartbeat * HEARTBEATS_PER_RECONNECT_DELAY_MAX,
        };
        // A link must hear several keepalives before it may be judged silent, or one late
        // keepalive would drop a healthy link.
        assert!(timing.silence_max >= timing.keepalive_interval * 3);
        assert!(timing.reconnect_delay_min <= timing.reconnect_delay_max);
        timing
    }
}

impl Default for PeerTiming {
    /// The timing for the node's default heartbeat (`node::ServerConfig::new`).
    fn default() -> PeerTiming {
        let defaults = crate::node::ServerConfig::new(ServerId(1), vec![ServerId(1)]);
        PeerTiming::for_heartbeat(defaults.heartbeat_interval)
    }
}

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
    /// Keepalives, the silence bound and reconnection, on both sides of every link.
    pub timing: PeerTiming,
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
        let timing = self.identity.timing;
        let mut delay = timing.reconnect_delay_min;
        let mut failures_in_a_row: u64 = 0;
        loop {
            match self.connect().await {
                Ok((stream, leftover)) => {
                    tracing::info!(peer = %peer, address = %self.address, "connected to peer");
                    delay = timing.reconnect_delay_min;
                    failures_in_a_row = 0;
                    self.connected[&peer].store(true, Ordering::Relaxed);
                    let reason = self.pump(stream, leftover).await;
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
            delay = (delay * 2).min(timing.reconnect_delay_max);
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

    async fn connect(&self) -> Result<(NetStream, HandshakeReader), ConnectError> {
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
                    // The acceptor's keepalives may follow its acceptance at once: the reader
                    // keeps what it read of them, for the keepalive reader.
                    Ok(ConnectorStep::Established) => return Ok((stream, reader)),
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
        let timeout = self.identity.timing.attempt_timeout;
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Failed(format!(
                "no connection and handshake within {timeout:?}"
            ))),
        }
    }

    /// Writes queued messages until the connection fails (`Some(reason)`) or the node is gone
    /// (`None`). Writes everything that is ready in one go: one syscall per burst. Meanwhile
    /// it reads the acceptor's keepalives, and gives the link up when they stop
    /// ([`PeerTiming::silence_max`]).
    async fn pump(&mut self, stream: NetStream, leftover: HandshakeReader) -> Option<String> {
        let timing = self.identity.timing;
        let (reader, mut writer) = tokio::io::split(stream);
        let listening = hear_keepalives(reader, leftover, timing);
        tokio::pin!(listening);
        let mut buffer = Vec::with_capacity(64 * 1024);
        // Bounded by the connection's life: every round writes, or ends.
        loop {
            let idle = tokio::time::sleep(timing.keepalive_interval);
            let first = tokio::select! {
                message = self.queue.recv() => Some(message?),
                reason = &mut listening => return Some(reason),
                () = idle => None,
            };
            match first {
                Some(message) => {
                    self.encode(message, &mut buffer);
                    while buffer.len() < WRITE_BATCH_BYTES_MAX {
                        match self.queue.try_recv() {
                            Ok(message) => self.encode(message, &mut buffer),
                            Err(_) => break,
                        }
                    }
                }
                // Nothing to say for a whole interval: say that we are here.
                None => encode_peer_frame(&PeerFrame::Keepalive, &mut buffer)
                    .expect("a keepalive is a few bytes"),
            }
            // The acceptor's keepalives keep arriving while a long write is in progress.
            let written = tokio::select! {
                written = write_with_progress(&mut writer, &buffer, timing.silence_max) => written,
                reason = &mut listening => return Some(reason),
            };
            if let Err(reason) = written {
                return Some(reason);
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

/// Writes `bytes` and flushes, giving up when no byte could be written for `stall_max`: a peer
/// that stopped reading (paused, or cut off with its buffers full) is as gone as a silent one,
/// and a slow but moving transfer (a large snapshot) is not cut short.
async fn write_with_progress<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut bytes: &[u8],
    stall_max: Duration,
) -> Result<(), String> {
    // Bounded: every round writes at least one byte, or ends.
    while !bytes.is_empty() {
        match tokio::time::timeout(stall_max, writer.write(bytes)).await {
            Err(_) => return Err(format!("no write progress within {stall_max:?}")),
            Ok(Err(error)) => return Err(error.to_string()),
            Ok(Ok(0)) => return Err("the connection accepts no more bytes".into()),
            Ok(Ok(written)) => bytes = &bytes[written..],
        }
    }
    match tokio::time::timeout(stall_max, writer.flush()).await {
        Err(_) => Err(format!("no write progress within {stall_max:?}")),
        Ok(result) => result.map_err(|error| error.to_string()),
    }
}

/// The connector's read side: reads the acceptor's keepalives until the link fails or falls
/// silent for [`PeerTiming::silence_max`], and returns why. The acceptor sends nothing else
/// after its acceptance, so any other frame ends the link too. `leftover` holds what the
/// handshake read past the acceptance.
async fn hear_keepalives<R: AsyncRead + Unpin>(
    mut reader: R,
    leftover: HandshakeReader,
    timing: PeerTiming,
) -> String {
    let HandshakeReader {
        mut decoder,
        unfed,
        frames,
    } = leftover;
    let mut pending: Vec<Vec<u8>> = frames.into();
    match decoder.feed(&unfed) {
        Ok(payloads) => pending.extend(payloads),
        Err(error) => return format!("the peer broke the framing: {error}"),
    }
    for payload in pending {
        match decode_peer_frame(&payload) {
            Ok(PeerFrame::Keepalive) => {}
            Ok(other) => return format!("the peer sent {other:?} on an outbound connection"),
            Err(error) => return error.to_string(),
        }
    }
    let mut chunk = [0u8; 256];
    // Bounded by the connection's life: every round reads at least one byte, or ends.
    loop {
        let read = match tokio::time::timeout(timing.silence_max, reader.read(&mut chunk)).await {
            Err(_) => return format!("nothing from the peer for {:?}", timing.silence_max),
            Ok(Ok(0)) => return "the peer closed the connection".to_string(),
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return error.to_string(),
        };
        let payloads = match decoder.feed(&chunk[..read]) {
            Ok(payloads) => payloads,
            Err(error) => return format!("the peer broke the framing: {error}"),
        };
        for payload in payloads {
            match decode_peer_frame(&payload) {
                Ok(PeerFrame::Keepalive) => {}
                Ok(other) => return format!("the peer sent {other:?} on an outbound connection"),
                Err(error) => return error.to_string(),
            }
        }
    }
}

/// The acceptor's write side: a keepalive every [`PeerTiming::keepalive_interval`], until a
/// write makes no progress for [`PeerTiming::silence_max`] or fails; returns why.
async fn send_keepalives<W: AsyncWrite + Unpin>(mut writer: W, timing: PeerTiming) -> String {
    let mut keepalive = Vec::new();
    encode_peer_frame(&PeerFrame::Keepalive, &mut keepalive).expect("a keepalive is a few bytes");
    // The first keepalive one interval after the acceptance, never glued to it.
    let start = tokio::time::Instant::now() + timing.keepalive_interval;
    let mut ticks = tokio::time::interval_at(start, timing.keepalive_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded by the connection's life.
    loop {
        ticks.tick().await;
        if let Err(reason) = write_with_progress(&mut writer, &keepalive, timing.silence_max).await
        {
            return reason;
        }
    }
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
    let timing = identity.timing;
    let (reader, writer) = tokio::io::split(stream);
    tokio::select! {
        reason = read_messages(reader, from, decoder, timing, deliver) => reason,
        reason = send_keepalives(writer, timing) => format!("{from}: {reason}"),
    }
}

/// The acceptor's read side: hands every message to `deliver` until the connection ends or
/// nothing arrives for [`PeerTiming::silence_max`]; returns why.
async fn read_messages<R: AsyncRead + Unpin>(
    mut reader: R,
    from: ServerId,
    mut decoder: FrameDecoder,
    timing: PeerTiming,
    deliver: impl Fn(ServerId, PeerMessage),
) -> String {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // Bounded by the connection's life; every round reads at least one byte or ends.
    loop {
        let read = match tokio::time::timeout(timing.silence_max, reader.read(&mut chunk)).await {
            Err(_) => return format!("nothing from {from} for {:?}", timing.silence_max),
            Ok(Ok(0)) => {
                return match decoder.finish() {
                    Ok(()) => format!("{from} closed the connection"),
                    Err(error) => format!("{from}: {error}"),
                };
            }
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return format!("{from}: {error}"),
        };
        let payloads = match decoder.feed(&chunk[..read]) {
            Ok(payloads) => payloads,
            Err(error) => return format!("{from}: {error}"),
        };
        for payload in payloads {
            match decode_peer_frame(&payload) {
                Ok(PeerFrame::Message(message)) => deliver(from, message),
                Ok(PeerFrame::Keepalive) => {}
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two servers of one cluster without a secret, s1 and s2, with a quick heartbeat.
    fn identity(me: u32, heartbeat_ms: u64) -> PeerIdentity {
        PeerIdentity {
            cluster_id: "lockstep".into(),
            me: ServerId(me),
            servers: vec![ServerId(1), ServerId(2)],
            secret: None,
            tls: None,
            timing: PeerTiming::for_heartbeat(Duration::from_millis(heartbeat_ms)),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Reads frames from `stream` until one arrives, through `decoder`.
    async fn next_frame(
        stream: &mut tokio::io::DuplexStream,
        decoder: &mut FrameDecoder,
    ) -> PeerFrame {
        let mut chunk = [0u8; 1024];
        loop {
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the acceptor closed");
            if let Some(payload) = decoder.feed(&chunk[..read]).unwrap().first() {
                return decode_peer_frame(payload).unwrap();
            }
        }
    }

    /// s2 dials s1 and is accepted. While s2 keeps talking (keepalives every few ms), s1 keeps
    /// the link, and s1 itself sends keepalives back; once s2 falls silent, s1 drops the link
    /// and says why.
    ///
    /// Under tokio's paused clock: the seconds of talk and silence pass at once, and no busy
    /// machine can stretch them.
    #[test]
    fn an_acceptor_keeps_a_talking_link_and_drops_a_silent_one() {
        let paused = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        paused.block_on(async {
            let (acceptor_end, mut connector_end) = tokio::io::duplex(64 * 1024);
            // A heartbeat of 200 ms: a silence bound of 1.2 s.
            let s1 = Arc::new(identity(1, 200));
            let served = tokio::spawn(serve_inbound(acceptor_end, Vec::new(), s1, |_, _| {}));
            let connector =
                ConnectorHandshake::new("lockstep", ServerId(2), ServerId(1), None, fresh_nonce());
            connector_end.write_all(&connector.opening()).await.unwrap();
            let mut decoder = FrameDecoder::new();
            assert!(matches!(
                next_frame(&mut connector_end, &mut decoder).await,
                PeerFrame::Accepted { proof: None }
            ));
            let mut keepalive = Vec::new();
            encode_peer_frame(&PeerFrame::Keepalive, &mut keepalive).unwrap();
            // Twice the silence bound (1.2 s) of talking: the link stays, and s1 speaks too.
            for _ in 0..250 {
                connector_end.write_all(&keepalive).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!served.is_finished(), "s1 dropped a link that kept talking");
            assert_eq!(
                next_frame(&mut connector_end, &mut decoder).await,
                PeerFrame::Keepalive
            );
            // Silence. Keep reading so that s1's keepalives never fill the pipe.
            let drained = tokio::spawn(async move {
                let mut sink = [0u8; 1024];
                while connector_end
                    .read(&mut sink)
                    .await
                    .is_ok_and(|read| read > 0)
                {}
            });
            let reason = tokio::time::timeout(Duration::from_secs(30), served)
                .await
                .expect("s1 never dropped the silent link")
                .unwrap();
            assert!(reason.contains("nothing from s2"), "{reason}");
            drained.abort();
        });
    }

    /// s2's connector reaches s1, which accepts and then says nothing ever again (a link cut
    /// without a word, as a partition or a paused process leaves it). s2 gives the link up
    /// and dials again by itself: a second connection arrives.
    #[test]
    fn a_connector_redials_a_link_whose_acceptor_falls_silent() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            let s2 = identity(2, 20);
            let peers: BTreeMap<ServerId, String> = [(ServerId(1), address)].into_iter().collect();
            let _sender = spawn_outbound(&s2, &peers);
            let s1 = identity(1, 20);
            let mut silent_links = Vec::new();
            for _ in 0..2 {
                let accepted = tokio::time::timeout(Duration::from_secs(30), listener.accept());
                let (mut stream, _) = accepted.await.expect("s2 never dialled (again)").unwrap();
                let handshake =
                    AcceptorHandshake::new(&s1.cluster_id, s1.me, &s1.servers, None, fresh_nonce());
                let Ok((from, _)) = accept_handshake(&mut stream, Vec::new(), handshake).await
                else {
                    panic!("s2's handshake failed");
                };
                assert_eq!(from, ServerId(2));
                // Held open, never written to again.
                silent_links.push(stream);
            }
        });
    }

    #[test]
    fn peer_timing_is_tied_to_the_heartbeat() {
        let timing = PeerTiming::for_heartbeat(Duration::from_millis(50));
        assert_eq!(timing.keepalive_interval, Duration::from_millis(50));
        assert_eq!(timing.silence_max, Duration::from_millis(300));
        assert_eq!(timing.attempt_timeout, Duration::from_millis(500));
        assert_eq!(timing.reconnect_delay_max, Duration::from_millis(500));
        assert_eq!(PeerTiming::default(), timing);
    }

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
