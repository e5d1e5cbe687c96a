//! The server process: one `lockstep::node::Server`, its write-ahead log, and the network
//! around it, on one listening port shared by peers and clients.
//!
//! # Threads
//! - The **network thread** (the main thread, driving a tokio current-thread runtime) runs the
//!   listener, one task per client connection (and one writer each), the peer transport, and
//!   the **node task** ([`node_loop`]), which owns the `Server` and steps it in rounds. None of
//!   its tasks ever blocks on the disk. It also waits for SIGINT/SIGTERM.
//! - The **log thread** ([`node_loop::LogWriter`]) owns the `Wal`. It alone writes the disk,
//!   in batches with one fsync each (group commit), and carries out the effects that wait
//!   for it.
//!
//! With `--metrics`, the network thread also serves Prometheus metrics over HTTP
//! (`net::metrics`). The node task, the log thread and the client connections record into one
//! shared `ServerMetrics` whether or not anyone scrapes it: `status` requests read the same.
//!
//! Inputs reach the node through one bounded queue. Outputs leave through per-peer bounded
//! queues and per-connection bounded queues, each fed without blocking.
//!
//! # Startup and shutdown
//! [`start`] opens and recovers the data directory, decodes the snapshot, builds the node and
//! binds the port before anything is served; every problem there is a [`StartError`]. A stop
//! request lets the node task finish its round (whose sync covers everything it answered)
//! and returns.

pub mod clients;
pub mod config;
mod job_queue;
pub mod node_loop;

pub use config::{ConfigError, ConfigOverrides, ServerProcessConfig};

use crate::net::metrics::{NodeState, ServerMetrics};
use crate::net::peer::{self, PeerFrame, PeerIdentity, Sniffed};
use crate::net::protocol::{ErrorCode, ErrorReply, encode_error};
use crate::node::{
    DurableState, PeerMessage, RaftLog, Server, ServerConfig, ServerInput, Snapshot,
};
use crate::storage::{SNAPSHOT_FILE_NAME, StorageError, Wal, WalOptions};
use clients::{ClientContext, ClientRegistry};
use node_loop::{Clock, NodeLoop};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Inputs waiting for the node task. A full queue answers clients `overloaded` and drops
/// peer messages.
pub const INPUT_QUEUE_MAX: usize = 16_384;
/// Open connections, peers and clients together; more are closed on accept.
pub const CONNECTIONS_MAX: usize = 8_192;
/// With TLS: how long an inbound connection may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// With TLS: how long a plaintext connection is read, to tell a peer from a client and say why
/// it is refused, before it is closed.
const PLAINTEXT_REFUSAL_TIME: Duration = Duration::from_secs(2);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be opened or recovered (it names file and offset).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The snapshot file exists but is not a lockstep snapshot this build can read.
    #[error("{}: {problem}", .path.display())]
    Snapshot { path: PathBuf, problem: String },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The `--metrics` address could not be bound (taken, or not an address of this machine).
    #[error("cannot serve metrics on {address} (--metrics): {source}")]
    Metrics {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why a running server stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("storage failed, refusing to keep serving: {0}")]
    Storage(#[from] StorageError),
    #[error("the node task or the log thread panicked")]
    NodePanicked,
}

/// The snapshot encoding in the data directory: `node::Snapshot` as JSON.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    serde_json::to_vec(snapshot).expect("snapshots serialise")
}

/// What the data directory held, ready to build a node from.
struct Recovered {
    wal: Wal,
    durable: DurableState,
    created: bool,
}

/// Opens and recovers the data directory: logs every repair, checks the snapshot.
fn recover(config: &ServerProcessConfig) -> Result<Recovered, StartError> {
    let (wal, recovery) = Wal::open_with(
        &config.data_dir,
        WalOptions::for_server(config.peers.len() + 1),
    )?;
    for warning in &recovery.warnings {
        tracing::warn!("recovery: {warning}");
    }
    if recovery.state.recovering {
        tracing::warn!(
            term = recovery.state.term,
            "recovery: the log is being repaired from peers: this server votes for no one and \
             stands for no election until a leader has given back what the damage took"
        );
    }
    let snapshot = match &recovery.snapshot {
        None => None,
        Some(stored) => {
            let path = config.data_dir.join(SNAPSHOT_FILE_NAME);
            let decoded: Snapshot =
                serde_json::from_slice(&stored.data).map_err(|e| StartError::Snapshot {
                    path: path.clone(),
                    problem: format!("does not decode as a lockstep snapshot: {e}"),
                })?;
            let position = (decoded.last_included_index, decoded.last_included_term);
            let base = (recovery.log_base.index, recovery.log_base.term);
            let stored_at = (stored.last_included.index, stored.last_included.term);
            if position != base || position != stored_at {
                return Err(StartError::Snapshot {
                    path,
                    problem: format!(
                        "holds the state at (index, term) {position:?}, but the file header says \
                         {stored_at:?} and the log starts after {base:?}"
                    ),
                });
            }
            Some(Arc::new(decoded))
        }
    };
    if snapshot.is_none() {
        assert_eq!(
            recovery.log_base.index, 0,
            "storage: a base without a snapshot"
        );
    }
    let durable = DurableState {
        term: recovery.state.term,
        voted_for: recovery.state.voted_for,
        log: RaftLog::rebased(
            recovery.log_base.index,
            recovery.log_base.term,
            recovery.state.log,
        ),
        snapshot,
        recovering: recovery.state.recovering,
    };
    Ok(Recovered {
        wal,
        durable,
        created: recovery.created,
    })
}

/// A started server: recovered, bound, its node built. [`RunningServer::run`] serves.
pub struct RunningServer {
    config: ServerProcessConfig,
    runtime: tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    /// Bound when `config.metrics` names an address.
    metrics_listener: Option<std::net::TcpListener>,
    recovered: Recovered,
}

/// Recovers storage and binds the port (and the metrics port). Nothing is served yet.
pub fn start(config: ServerProcessConfig) -> Result<RunningServer, StartError> {
    let recovered = recover(&config)?;
    let listener =
        std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Listen {
            address: config.listen,
            source,
        })?;
    listener
        .set_nonblocking(true)
        .map_err(StartError::Runtime)?;
    let metrics_listener = match config.metrics {
        None => None,
        Some(address) => {
            let bound = std::net::TcpListener::bind(address)
                .and_then(|bound| bound.set_nonblocking(true).map(|()| bound))
                .map_err(|source| StartError::Metrics { address, source })?;
            Some(bound)
        }
    };
    // One thread for the sockets and the node: see the module documentation.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    Ok(RunningServer {
        config,
        runtime,
        listener,
        metrics_listener,
        recovered,
    })
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_address(&self) -> std::net::SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The bound metrics address, if metrics are served.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|listener| listener.local_addr().expect("a bound listener"))
    }

    /// Serves until SIGINT/SIGTERM (`Ok`) or a storage failure (`Err`).
    pub fn run(self) -> Result<(), RunError> {
        let metrics_address = self.metrics_address();
        let RunningServer {
            config,
            runtime,
            listener,
            metrics_listener,
            recovered,
        } = self;
        let clock = Clock::start();
        let durable = &recovered.durable;
        tracing::info!(
            id = %config.id,
            listen = %config.listen,
            peers = ?config.peers,
            data_dir = %config.data_dir.display(),
            cluster_id = %config.cluster_id,
            fresh = recovered.created,
            term = durable.term,
            voted_for = ?durable.voted_for,
            last_index = durable.log.last_index(),
            snapshot_index = durable.snapshot.as_ref().map_or(0, |s| s.last_included_index),
            peer_authentication = if config.cluster_secret.is_some() { "cluster secret" } else { "none" },
            tls = if config.tls.is_some() { "on (mutual for peers)" } else { "off" },
            metrics = ?metrics_address,
            "server starting"
        );
        warn_about_peer_authentication(&config);
        let mut node_config = ServerConfig::new(config.id, config.servers());
        node_config.snapshot_entries_min = config.snapshot_entries_min;
        config.sessions.apply_to(&mut node_config);
        // The log thread writes in the background and reports what is durable.
        node_config.durability_reported = true;
        let peer_timing = peer::PeerTiming::for_heartbeat(node_config.heartbeat_interval);
        let (server, initial) =
            Server::with_seed(node_config, recovered.durable, node_seed(), clock.now());
        let metrics = Arc::new(ServerMetrics::new(config.id, NodeState::of(&server)));
        let (input_sender, input_receiver) = tokio::sync::mpsc::channel(INPUT_QUEUE_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let registry = ClientRegistry::default();
        let term = Arc::new(AtomicU64::new(server.term()));
        let mut addresses = config.peers.clone();
        addresses.insert(config.id, config.listen.to_string());
        let identity = Arc::new(PeerIdentity {
            cluster_id: config.cluster_id.clone(),
            me: config.id,
            servers: config.servers(),
            secret: config
                .cluster_secret
                .as_ref()
                .map(|loaded| Arc::clone(&loaded.secret)),
            tls: config
                .tls
                .as_ref()
                .map(|tls| Arc::clone(&tls.peer_connector)),
            timing: peer_timing,
        });
        let _guard = runtime.enter();
        let peers = peer::spawn_outbound(&identity, &config.peers);
        metrics.watch_peers(peers.links());
        let (node_loop, log_writer) = NodeLoop::new(
            server,
            recovered.wal,
            input_receiver,
            peers,
            registry.clone(),
            clock,
            Arc::clone(&stop),
            Arc::clone(&term),
            Arc::clone(&metrics),
        );
        let log_thread = std::thread::Builder::new()
            .name("lockstep-log".into())
            .spawn(move || log_writer.run())
            .expect("spawning the log thread");
        let mut node_task = runtime.spawn(node_loop.run(initial));
        let context = Arc::new(ClientContext {
            inputs: input_sender.clone(),
            registry,
            idle_timeout: config.client_idle_timeout,
            next_addr: AtomicU64::new(1),
            overloaded_answers: AtomicU64::new(0),
            term,
            addresses,
            metrics: Arc::clone(&metrics),
        });
        if let (Some(listener), Some(address)) = (metrics_listener, metrics_address) {
            let listener = TcpListener::from_std(listener).expect("inside the runtime");
            tracing::info!(%address, "serving metrics at http://{address}/metrics");
            runtime.spawn(crate::net::metrics::serve(listener, Arc::clone(&metrics)));
        }
        let listener = TcpListener::from_std(listener).expect("inside the runtime");
        let acceptor = config
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(Arc::clone(&tls.acceptor)));
        runtime.spawn(accept_loop(
            listener,
            context,
            identity,
            input_sender,
            acceptor,
        ));
        // A JoinHandle yields its result once: whoever sees the node task end keeps it.
        let node = match runtime.block_on(wait_for_stop(&mut node_task)) {
            Some(ended) => ended,
            None => {
                tracing::info!("stopping on signal");
                stop.store(true, Ordering::Relaxed);
                // The node task ends within one idle wait.
                runtime.block_on(node_task)
            }
        };
        stop.store(true, Ordering::Relaxed);
        // The node task has ended; dropping its job queue lets the log thread finish what it
        // holds and end too.
        let log = log_thread.join();
        let result = match (node, log) {
            (Err(_), _) | (_, Err(_)) => Err(RunError::NodePanicked),
            (Ok(()), Ok(Err(error))) => {
                tracing::error!("storage failed, stopping: {error}");
                Err(RunError::Storage(error))
            }
            (Ok(()), Ok(Ok(()))) => Ok(()),
        };
        runtime.shutdown_timeout(std::time::Duration::from_millis(500));
        result
    }
}

/// Says loudly what a missing or exposed cluster secret means. Neither stops the server: a
/// cluster without a secret is a choice (a laptop, a test), and `ssh`-style strictness about
/// file modes would turn a warning into an outage.
fn warn_about_peer_authentication(config: &ServerProcessConfig) {
    match &config.cluster_secret {
        None => tracing::warn!(
            listen = %config.listen,
            "PEER CONNECTIONS ARE UNAUTHENTICATED: no --cluster-secret-file, so anyone who can \
             reach this port can join the cluster as a member (any server id) and vote, \
             append and overwrite locks; give every server the same secret \
             (see docs/operations.md)"
        ),
        Some(loaded) => {
            if let Some(mode) = loaded.readable_by_others {
                tracing::warn!(
                    file = %loaded.path.display(),
                    mode = format!("{mode:04o}"),
                    "the cluster secret file is readable by group or others; \
                     chmod 600 it"
                );
            }
        }
    }
}

/// The driver owns randomness. The node's seed draws election jitter and the secrets of the
/// clients it registers, so it comes from the operating system's generator (through rand's
/// thread generator, a CSPRNG seeded from it), 256 bits, fresh at every start: a seed anyone
/// could guess (a clock, a process id) would let them compute other clients' secrets.
fn node_seed() -> [u8; 32] {
    rand::random()
}

/// `None` on a signal; the node task's result when it ended by itself (a stop request from
/// the log thread after a storage error, or a panic).
async fn wait_for_stop(
    node_task: &mut tokio::task::JoinHandle<()>,
) -> Option<Result<(), tokio::task::JoinError>> {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        () = terminate => None,
        ended = node_task => Some(ended),
    }
}

async fn accept_loop(
    listener: TcpListener,
    context: Arc<ClientContext>,
    identity: Arc<PeerIdentity>,
    inputs: tokio::sync::mpsc::Sender<ServerInput>,
    acceptor: Option<TlsAcceptor>,
) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let peer_drops = Arc::new(AtomicU64::new(0));
    // Bounded by the process's life.
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%remote, "too many connections ({CONNECTIONS_MAX}); closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let context = Arc::clone(&context);
        let identity = Arc::clone(&identity);
        let inputs = inputs.clone();
        let peer_drops = Arc::clone(&peer_drops);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let peer = PeerSide {
                identity,
                inputs,
                peer_drops,
                clients: context.registry.clone(),
            };
            match acceptor {
                None => serve_connection(stream, remote, context, peer).await,
                Some(acceptor) => {
                    serve_tls_connection(stream, remote, context, peer, acceptor).await;
                }
            }
        });
    }
}

/// What serving an inbound peer connection needs.
struct PeerSide {
    identity: Arc<PeerIdentity>,
    inputs: tokio::sync::mpsc::Sender<ServerInput>,
    peer_drops: Arc<AtomicU64>,
    /// Where a leader's answer to a forwarded request goes straight to (see [`relay`]).
    clients: ClientRegistry,
}

/// Reads until the first bytes tell a peer from a client, within `timeout` per read. `None`
/// if the connection closed, failed or stayed silent first.
async fn sniff_connection<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Option<(Sniffed, Vec<u8>)> {
    let mut first = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: the magic is 9 bytes, and each round reads at least one.
    loop {
        match peer::sniff(&first) {
            Sniffed::NeedMore => {}
            kind => return Some((kind, first)),
        }
        match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => first.extend_from_slice(&chunk[..read]),
            _ => return None,
        }
    }
}

/// Serves a plain TCP connection (a server without TLS) as a peer or a client.
async fn serve_connection(
    mut stream: TcpStream,
    remote: std::net::SocketAddr,
    context: Arc<ClientContext>,
    peer: PeerSide,
) {
    let Some((kind, first)) = sniff_connection(&mut stream, context.idle_timeout).await else {
        return;
    };
    if kind == Sniffed::Client {
        let (reader, writer) = stream.into_split();
        clients::serve_client(reader, writer, first, context).await;
        return;
    }
    serve_peer(stream, first, remote, peer).await;
}

/// Serves a connection to a server with TLS: only TLS is spoken. A plaintext connection is
/// refused (see [`refuse_plaintext`]); after the TLS handshake, the first bytes inside it tell a
/// peer from a client, and a peer must have presented a certificate that verified against the
/// CA (the TLS handshake already failed for one that did not).
async fn serve_tls_connection(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    context: Arc<ClientContext>,
    peer: PeerSide,
    acceptor: TlsAcceptor,
) {
    let mut first_byte = [0u8; 1];
    match tokio::time::timeout(context.idle_timeout, stream.peek(&mut first_byte)).await {
        Ok(Ok(1)) => {}
        // Closed, failed or silent before a byte: a port probe, nothing to say.
        _ => return,
    }
    if first_byte[0] != TLS_HANDSHAKE_RECORD {
        refuse_plaintext(stream, remote).await;
        return;
    }
    let mut stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(%remote, %error, "TLS handshake failed; connection refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "no TLS handshake within {TLS_HANDSHAKE_TIMEOUT:?}; closing");
            return;
        }
    };
    // The verifier accepted any certificate presented: present means verified.
    let certified = stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|chain| !chain.is_empty());
    let Some((kind, first)) = sniff_connection(&mut stream, context.idle_timeout).await else {
        return;
    };
    if kind == Sniffed::Client {
        let (reader, writer) = tokio::io::split(stream);
        clients::serve_client(reader, writer, first, context).await;
        return;
    }
    if !certified {
        let reason = peer::refuse_inbound(
            &mut stream,
            "this server takes peers only with a client certificate signed by its CA: give \
             the connecting server --tls-cert, --tls-key and --tls-ca"
                .into(),
        )
        .await;
        tracing::warn!(%remote, %reason, "peer connection refused: no client certificate");
        return;
    }
    serve_peer(stream, first, remote, peer).await;
}

/// A plaintext connection to a server with TLS: logged at warn and closed, after one line that
/// says why (a peer frame to a peer, an error line to a client).
async fn refuse_plaintext(mut stream: TcpStream, remote: std::net::SocketAddr) {
    let reason = "this server requires TLS on every connection";
    let kind = sniff_connection(&mut stream, PLAINTEXT_REFUSAL_TIME).await;
    let answer = match kind {
        Some((Sniffed::Peer, _)) => {
            tracing::warn!(%remote, "plaintext peer connection refused: this server requires TLS");
            let mut bytes = Vec::new();
            let frame = PeerFrame::Refused {
                reason: format!(
                    "{reason}: give the connecting server --tls-cert, --tls-key and --tls-ca"
                ),
            };
            peer::frame::encode_peer_frame(&frame, &mut bytes).expect("a short frame");
            bytes
        }
        _ => {
            tracing::warn!(%remote, "plaintext client connection refused: this server requires TLS");
            encode_error(&ErrorReply {
                seq: None,
                term: None,
                code: ErrorCode::BadRequest,
                message: format!(
                    "{reason}: connect with TLS (lockstep client --tls-ca CA.pem); nothing \
                     was done"
                ),
            })
        }
    };
    let _ = tokio::time::timeout(PLAINTEXT_REFUSAL_TIME, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Read what the other side still sends until it closes, so that closing with unread
        // bytes does not reset the connection before the answer is read. Bounded by the
        // timeout around it.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Hands a leader's answer to a forwarded request (`PeerMessage::ForwardReply`) straight to
/// the client's connection, as the node would; gives any other message back for the node.
///
/// Why: the node passes a `ForwardReply` through unchanged (`Server::step` turns it into the
/// `Reply` it carries, whatever its state), and the answer comes from a committed entry, so it
/// depends on nothing of this server's. Through the node it waited for the node task's next
/// round, behind whatever else that round stepped (the append that carries the same commit,
/// typically): a task hop and a round on the chain of every hand-off to a client of a
/// follower. Answers on one connection may come back in any order (docs/PROTOCOL.md,
/// pipelining), so overtaking a reply the node still holds is allowed.
fn relay(clients: &ClientRegistry, msg: PeerMessage) -> Option<PeerMessage> {
    match msg {
        PeerMessage::ForwardReply { client, reply } => {
            // A connection gone or full drops the answer, as the node's delivery does: the
            // client retries.
            let _ = node_loop::deliver_replies(clients, vec![(client, reply)]);
            None
        }
        other => Some(other),
    }
}

/// Serves an inbound peer connection, plain or TLS, whose first bytes `first` were read.
async fn serve_peer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    first: Vec<u8>,
    remote: std::net::SocketAddr,
    peer: PeerSide,
) {
    let PeerSide {
        identity,
        inputs,
        peer_drops,
        clients,
    } = peer;
    let deliver = move |from, msg| {
        let Some(msg) = relay(&clients, msg) else {
            return;
        };
        if inputs.try_send(ServerInput::Peer { from, msg }).is_err() {
            // Raft tolerates loss; a full queue means the node is behind.
            let dropped = peer_drops.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "node input queue full: dropping peer messages");
            }
        }
    };
    let reason = peer::serve_inbound(stream, first, identity, deliver).await;
    if reason.starts_with("refused") {
        tracing::warn!(%remote, %reason, "peer connection refused");
    } else {
        tracing::info!(%remote, %reason, "peer connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Command, Entry, LockTable, PersistOp, ServerId};
    use std::collections::BTreeMap;

    /// A leader's answer to a forwarded request goes straight to the client's connection; every
    /// other peer message, and an answer for a connection that is gone, reaches nobody but the
    /// node (or nobody at all).
    #[test]
    fn a_forwarded_answer_is_relayed_to_its_connection_without_the_node() {
        use crate::node::{ClientAddr, ClientReply, Outcome, ReplyBody};
        let clients = ClientRegistry::default();
        let (connection, mut written) = tokio::sync::mpsc::channel(4);
        clients.lock().insert(ClientAddr(7), connection);
        let reply = ClientReply {
            seq: 3,
            index: 12,
            term: 2,
            body: ReplyBody::Outcome(Outcome::Granted { token: 12 }),
        };
        let forwarded = PeerMessage::ForwardReply {
            client: ClientAddr(7),
            reply: reply.clone(),
        };
        assert_eq!(relay(&clients, forwarded), None, "not for the node");
        match written.try_recv() {
            Ok(clients::Outgoing::Reply(relayed)) => assert_eq!(relayed, reply),
            _ => panic!("the answer did not reach the connection"),
        }
        let gone = PeerMessage::ForwardReply {
            client: ClientAddr(8),
            reply,
        };
        assert_eq!(relay(&clients, gone), None, "dropped: the client retries");
        assert!(
            written.try_recv().is_err(),
            "nothing for another connection"
        );
        let vote = PeerMessage::VoteResponse {
            term: 2,
            granted: true,
        };
        assert_eq!(relay(&clients, vote.clone()), Some(vote), "the node's");
    }

    fn config_for(data_dir: PathBuf) -> ServerProcessConfig {
        ServerProcessConfig {
            id: ServerId(1),
            listen: "127.0.0.1:0".parse().unwrap(),
            peers: BTreeMap::new(),
            data_dir,
            cluster_id: "lockstep".into(),
            snapshot_entries_min: None,
            client_idle_timeout: std::time::Duration::from_secs(300),
            cluster_secret: None,
            tls: None,
            metrics: None,
            sessions: Default::default(),
        }
    }

    /// A data directory whose log holds two entries and whose snapshot (`bytes`) covers the
    /// first.
    fn directory_with_snapshot(name: &str, bytes: impl FnOnce(&Snapshot) -> Vec<u8>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lockstep-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut wal, _) = Wal::open(&dir).unwrap();
        let entry = Entry {
            term: 1,
            command: Command::Noop,
        };
        wal.append(&[
            PersistOp::HardState {
                term: 1,
                voted_for: Some(ServerId(1)),
                recovering: false,
            },
            PersistOp::Append {
                first_index: 1,
                entries: vec![entry.clone(), entry],
            },
        ])
        .unwrap();
        let snapshot = Snapshot {
            last_included_index: 1,
            last_included_term: 1,
            table: LockTable::new(),
        };
        wal.write_snapshot(&bytes(&snapshot), 1, 1).unwrap();
        dir
    }

    #[test]
    fn recovery_rebuilds_the_log_after_the_snapshot() {
        let dir = directory_with_snapshot("recover", encode_snapshot);
        let recovered = recover(&config_for(dir.clone())).unwrap();
        let durable = recovered.durable;
        assert_eq!(durable.term, 1);
        assert_eq!(durable.log.base_index(), 1);
        assert_eq!(durable.log.last_index(), 2);
        assert_eq!(durable.snapshot.unwrap().last_included_index, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_snapshot_that_does_not_decode_is_a_startup_error_naming_the_file() {
        let dir = directory_with_snapshot("bad-snapshot", |_| b"not a snapshot".to_vec());
        let Err(error) = recover(&config_for(dir.clone())) else {
            panic!("an undecodable snapshot was accepted");
        };
        let text = error.to_string();
        assert!(
            text.contains(&dir.join(SNAPSHOT_FILE_NAME).display().to_string()),
            "{text}"
        );
        assert!(matches!(error, StartError::Snapshot { .. }));
        let _ = std::fs::remove_dir_all(dir);
    }
}
