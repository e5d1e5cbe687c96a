//! What a server tells its operators: the Prometheus metrics that `--metrics` serves over
//! HTTP, and the state a `status` request reports (docs/operations.md lists every metric).
//!
//! Who writes what, each from its own thread or task, none waiting on another:
//! - the **node task** publishes the node's state after every round ([`ServerMetrics::publish`]:
//!   role, term, leader, indexes) and counts leader changes;
//! - the **log thread** times every fsync, counts snapshots and publishes the log file's size;
//! - **client connections** count every answer by kind (grants, releases, refusals by reason)
//!   and time every request, from its line being read to its answer being written.
//!
//! The scrape ([`serve`]) and `status` answers only read. Nothing here may slow the hot path
//! noticeably: counters are atomics whose handles are resolved once, at start (a labelled
//! family's lookup takes a lock; no request ever does one), the node's state is copied under a
//! lock only in rounds that changed it, and a histogram's mutex is contended only by a scrape.
//!
//! The HTTP side serves `GET /metrics` in the OpenMetrics text format (which Prometheus reads
//! natively) with hyper, one request per connection, a bounded number of connections at once.

use crate::net::peer::transport::PeerLinks;
use crate::net::protocol::{ErrorCode, ServerStatus, WireOp, role_name};
use crate::node::{Consistency, LogIndex, Outcome, Role, Server, ServerId, ServiceError, Term};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every metric's name starts with this and an underscore.
pub const METRIC_PREFIX: &str = "lockstep";
/// The scrape's content type: OpenMetrics text, which Prometheus asks for and reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapes served at once; more connections are closed on accept.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// Longest a metrics connection may stay open: one request, a few kilobytes of answer.
pub const METRICS_CONNECTION_TIME_MAX: Duration = Duration::from_secs(10);
/// Upper bounds of the client request latency buckets, in seconds: a local check on an idle
/// server takes tens of microseconds, a write a fsync and a round trip (a millisecond or so),
/// a request during an election seconds.
const REQUEST_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
    0.256, 0.512, 1.024, 4.096,
];
/// Upper bounds of the fsync latency buckets, in seconds: tens of microseconds on a fast SSD
/// with a write cache, milliseconds on a disk that flushes for real.
const FSYNC_BUCKETS_SECONDS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_4, 0.000_8, 0.001_6, 0.003_2, 0.006_4, 0.012_8,
    0.025_6, 0.051_2, 0.102_4, 1.0,
];

/// The node's state as the node task last published it: one round's values, never a mix.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct NodeState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<ServerId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    /// The last entry in the log, committed or not.
    pub last_index: LogIndex,
    /// The last index the snapshot covers; the log holds the entries after it.
    pub snapshot_index: LogIndex,
}

impl NodeState {
    /// Reads a server through its observation accessors; the node is not changed.
    pub fn of(server: &Server) -> NodeState {
        NodeState {
            role: server.role(),
            term: server.term(),
            leader: server.leader(),
            commit_index: server.commit_index(),
            applied_index: server.last_applied(),
            last_index: server.log().last_index(),
            snapshot_index: server.log().base_index(),
        }
    }
}

/// Why a request was not served as asked, as the `reason` label of `lockstep_refusals_total`
/// writes it: the two refusing outcomes, then every error code.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Refusal {
    HeldBy,
    NotOwner,
    NotLeader,
    Unavailable,
    Overloaded,
    StaleRequest,
    BadRequest,
    UnsupportedVersion,
    UnknownClient,
    Unauthorized,
    SeqReused,
    SessionExpired,
    LockDelayed,
    QueueFull,
    PermitsMismatch,
}

impl Refusal {
    pub const ALL: [Refusal; 15] = [
        Refusal::HeldBy,
        Refusal::NotOwner,
        Refusal::NotLeader,
        Refusal::Unavailable,
        Refusal::Overloaded,
        Refusal::StaleRequest,
        Refusal::BadRequest,
        Refusal::UnsupportedVersion,
        Refusal::UnknownClient,
        Refusal::Unauthorized,
        Refusal::SeqReused,
        Refusal::SessionExpired,
        Refusal::LockDelayed,
        Refusal::QueueFull,
        Refusal::PermitsMismatch,
    ];

    /// The label value: the outcome's or error code's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::HeldBy => "held_by",
            Refusal::NotOwner => "not_owner",
            Refusal::NotLeader => "not_leader",
            Refusal::Unavailable => "unavailable",
            Refusal::Overloaded => "overloaded",
            Refusal::StaleRequest => "stale_request",
            Refusal::BadRequest => "bad_request",
            Refusal::UnsupportedVersion => "unsupported_version",
            Refusal::UnknownClient => "unknown_client",
            Refusal::Unauthorized => "unauthorized",
            Refusal::SeqReused => "seq_reused",
            Refusal::SessionExpired => "session_expired",
            Refusal::LockDelayed => "lock_delayed",
            Refusal::QueueFull => "queue_full",
            Refusal::PermitsMismatch => "permits_mismatch",
        }
    }

    /// The refusal an error response with `code` makes.
    pub fn of_code(code: &ErrorCode) -> Refusal {
        match code {
            ErrorCode::NotLeader { .. } => Refusal::NotLeader,
            ErrorCode::Unavailable => Refusal::Unavailable,
            ErrorCode::Overloaded => Refusal::Overloaded,
            ErrorCode::StaleRequest => Refusal::StaleRequest,
            ErrorCode::BadRequest => Refusal::BadRequest,
            ErrorCode::UnsupportedVersion { .. } => Refusal::UnsupportedVersion,
            ErrorCode::UnknownClient => Refusal::UnknownClient,
            ErrorCode::Unauthorized => Refusal::Unauthorized,
            ErrorCode::SeqReused => Refusal::SeqReused,
            ErrorCode::SessionExpired => Refusal::SessionExpired,
            ErrorCode::LockDelayed { .. } => Refusal::LockDelayed,
            ErrorCode::QueueFull { .. } => Refusal::QueueFull,
            ErrorCode::PermitsMismatch { .. } => Refusal::PermitsMismatch,
        }
    }

    /// The refusal the node's error makes (the same code on the wire).
    pub fn of_service_error(error: &ServiceError) -> Refusal {
        match error {
            ServiceError::NotLeader { .. } => Refusal::NotLeader,
            ServiceError::Unavailable => Refusal::Unavailable,
            ServiceError::Overloaded => Refusal::Overloaded,
            ServiceError::QueueFull { .. } => Refusal::QueueFull,
            ServiceError::StaleRequest => Refusal::StaleRequest,
            ServiceError::BadRequest { .. } => Refusal::BadRequest,
            ServiceError::UnknownClient { .. } => Refusal::UnknownClient,
            ServiceError::Unauthorized => Refusal::Unauthorized,
            ServiceError::SeqReused { .. } => Refusal::SeqReused,
            ServiceError::SessionExpired { .. } => Refusal::SessionExpired,
            ServiceError::LockDelayed { .. } => Refusal::LockDelayed,
        }
    }
}

/// What a timed request asked for, as the `op` label of the latency histogram writes it.
/// Local and linearizable checks are apart: one is answered from the replica, the other waits
/// for a round of heartbeats.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum RequestKind {
    Hello,
    Preempt,
    Release,
    CheckLocal,
    CheckLinearizable,
    Keepalive,
    /// Timed from the line to the decision: a queued acquire's time includes its wait.
    Acquire,
    Cancel,
}

impl RequestKind {
    pub const ALL: [RequestKind; 8] = [
        RequestKind::Hello,
        RequestKind::Preempt,
        RequestKind::Release,
        RequestKind::CheckLocal,
        RequestKind::CheckLinearizable,
        RequestKind::Keepalive,
        RequestKind::Acquire,
        RequestKind::Cancel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Hello => "hello",
            RequestKind::Preempt => "preempt",
            RequestKind::Release => "release",
            RequestKind::CheckLocal => "check_local",
            RequestKind::CheckLinearizable => "check_linearizable",
            RequestKind::Keepalive => "keepalive",
            RequestKind::Acquire => "acquire",
            RequestKind::Cancel => "cancel",
        }
    }

    /// The kind of a request the node serves; `None` for `status`, which the front end
    /// answers at once and is not timed.
    pub fn of(op: &WireOp) -> Option<RequestKind> {
        match op {
            WireOp::Hello { .. } => Some(RequestKind::Hello),
            WireOp::Keepalive { .. } => Some(RequestKind::Keepalive),
            WireOp::Preempt { .. } => Some(RequestKind::Preempt),
            WireOp::Release { .. } => Some(RequestKind::Release),
            WireOp::Acquire { .. } => Some(RequestKind::Acquire),
            WireOp::Cancel { .. } => Some(RequestKind::Cancel),
            WireOp::Check {
                consistency: Consistency::Local,
                ..
            } => Some(RequestKind::CheckLocal),
            WireOp::Check {
                consistency: Consistency::Linearizable,
                ..
            } => Some(RequestKind::CheckLinearizable),
            WireOp::Status | WireOp::Watch(_) => None,
        }
    }
}

/// The node task's side of [`ServerMetrics::publish`]: what it published last, so that a round
/// that changed nothing takes no lock, and the last leader it knew, to count changes.
#[derive(Debug)]
pub struct Publisher {
    last: NodeState,
    leader_known: Option<(ServerId, Term)>,
}

impl Publisher {
    /// For a node whose state `initial` was given to [`ServerMetrics::new`].
    pub fn new(initial: NodeState) -> Publisher {
        Publisher {
            last: initial,
            leader_known: initial.leader.map(|leader| (leader, initial.term)),
        }
    }
}

/// What the collector reads at scrape time and `status` answers read.
#[derive(Debug)]
struct Published {
    server: ServerId,
    started: Instant,
    started_unix_seconds: f64,
    state: Mutex<NodeState>,
    /// The write-ahead log file's size, published by the log thread after each write.
    log_bytes: AtomicU64,
    /// The peer links, known once the transport started.
    peers: Mutex<Option<PeerLinks>>,
}

impl Published {
    fn state(&self) -> NodeState {
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One server's metrics and published state. Shared (`Arc`) by the node task, the log thread,
/// client connections and the HTTP task.
///
/// Contract: the node task calls [`ServerMetrics::publish`] after every round, before it yields;
/// the other writers call their recording methods as things happen. Every method is cheap and
/// never blocks for longer than a scrape's copy of one value.
#[derive(Debug)]
pub struct ServerMetrics {
    published: Arc<Published>,
    registry: Registry,
    leader_changes: Counter,
    snapshots: Counter,
    grants: Counter,
    releases: Counter,
    /// Indexed like [`Refusal::ALL`].
    refusals: Vec<Counter>,
    /// Indexed like [`RequestKind::ALL`].
    request_seconds: Vec<Histogram>,
    fsync_seconds: Histogram,
}

impl ServerMetrics {
    /// Metrics for server `server`, whose node starts in `initial`.
    pub fn new(server: ServerId, initial: NodeState) -> ServerMetrics {
        let published = Arc::new(Published {
            server,
            started: Instant::now(),
            started_unix_seconds: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            state: Mutex::new(initial),
            log_bytes: AtomicU64::new(0),
            peers: Mutex::new(None),
        });
        let mut registry = Registry::with_prefix(METRIC_PREFIX);
        registry.register(
            "server",
            "This server's id and the lockstep version it runs",
            Info::new(vec![
                ("id", server.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        registry.register_collector(Box::new(StateCollector {
            published: Arc::clone(&published),
        }));
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let leader_changes = counter(
            &mut registry,
            "leader_changes",
            "Times this server learned of a new leader (another server, or a new term)",
        );
        let snapshots = counter(
            &mut registry,
            "snapshots",
            "Snapshots this server wrote: its own compactions and snapshots a leader sent it",
        );
        let grants = counter(
            &mut registry,
            "grants",
            "Preempts this server answered granted (a retry answered from the exactly-once \
             cache counts again)",
        );
        let releases = counter(
            &mut registry,
            "releases",
            "Releases this server answered released",
        );
        let refusals = refusal_counters(&mut registry);
        let request_seconds = request_histograms(&mut registry);
        let fsync_seconds = Histogram::new(FSYNC_BUCKETS_SECONDS);
        registry.register_with_unit(
            "fsync_duration",
            "Time of each fsync of the write-ahead log (one per group of log writes)",
            Unit::Seconds,
            fsync_seconds.clone(),
        );
        ServerMetrics {
            published,
            registry,
            leader_changes,
            snapshots,
            grants,
            releases,
            refusals,
            request_seconds,
            fsync_seconds,
        }
    }

    /// Reports the peer links' state from now on.
    pub fn watch_peers(&self, links: PeerLinks) {
        *self
            .published
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(links);
    }

    /// The node task, after a round: publishes `state` if it changed since it last did, and
    /// counts a leader change.
    ///
    /// A leader change is a leader known in a new term, or another leader: a leader lost and
    /// found again in the same term is no change.
    pub fn publish(&self, publisher: &mut Publisher, state: NodeState) {
        if state == publisher.last {
            return;
        }
        // Pair assertions with the status decoder (`protocol::decode_status`), which refuses
        // a reply that breaks either: what is published must be what one server can be.
        assert!(
            state.snapshot_index <= state.applied_index
                && state.applied_index <= state.commit_index
                && state.commit_index <= state.last_index,
            "metrics: {} published indexes out of order: {state:?}",
            self.published.server
        );
        assert!(
            state.role != Role::Leader || state.leader == Some(self.published.server),
            "metrics: {} leads but names {:?} as leader",
            self.published.server,
            state.leader
        );
        if let Some(leader) = state.leader
            && publisher.leader_known != Some((leader, state.term))
        {
            publisher.leader_known = Some((leader, state.term));
            self.leader_changes.inc();
        }
        publisher.last = state;
        *self
            .published
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
    }

    /// What the node task published last.
    pub fn state(&self) -> NodeState {
        self.published.state()
    }

    /// This server's answer to `status`, besides its term and applied index.
    pub fn status(&self, state: &NodeState) -> ServerStatus {
        ServerStatus {
            server: self.published.server,
            role: state.role,
            leader: state.leader,
            commit_index: state.commit_index,
            last_index: state.last_index,
            snapshot_index: state.snapshot_index,
            log_bytes: self.published.log_bytes.load(Ordering::Relaxed),
            uptime_ms: u64::try_from(self.published.started.elapsed().as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// The log thread: an fsync took `duration`.
    pub fn record_fsync(&self, duration: Duration) {
        self.fsync_seconds.observe(duration.as_secs_f64());
    }

    /// The log thread: a snapshot was written.
    pub fn record_snapshot(&self) {
        self.snapshots.inc();
    }

    /// The log thread: the log file now holds `bytes`.
    pub fn publish_log_bytes(&self, bytes: u64) {
        self.published.log_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A client connection: an answer with `outcome` went out.
    pub fn record_outcome(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Granted { .. } => {
                self.grants.inc();
            }
            Outcome::Released => {
                self.releases.inc();
            }
            Outcome::HeldBy { .. } => self.record_refusal(Refusal::HeldBy),
            Outcome::NotOwner => self.record_refusal(Refusal::NotOwner),
            // An outcome in the node, an error code on the wire: counted under its code's name.
            Outcome::PermitsMismatch { .. } => self.record_refusal(Refusal::PermitsMismatch),
            Outcome::Shared { .. }
            | Outcome::Free
            | Outcome::Owner { .. }
            | Outcome::Queued
            | Outcome::TimedOut
            | Outcome::Cancelled
            | Outcome::NotWaiting => {}
        }
    }

    /// A client connection: a request was refused.
    pub fn record_refusal(&self, refusal: Refusal) {
        let at = Refusal::ALL
            .iter()
            .position(|&known| known == refusal)
            .expect("every refusal is in ALL");
        self.refusals[at].inc();
    }

    /// A client connection: a request of `kind` was answered `elapsed` after its line was
    /// read.
    pub fn record_request(&self, kind: RequestKind, elapsed: Duration) {
        let at = RequestKind::ALL
            .iter()
            .position(|&known| known == kind)
            .expect("every kind is in ALL");
        self.request_seconds[at].observe(elapsed.as_secs_f64());
    }

    /// Every metric in the OpenMetrics text format, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// `lockstep_refusals_total{reason}`, one handle per reason, resolved now.
fn refusal_counters(registry: &mut Registry) -> Vec<Counter> {
    let family =
        prometheus_client::metrics::family::Family::<[(&str, &str); 1], Counter>::default();
    registry.register(
        "refusals",
        "Requests this server answered without doing what they asked, by reason: held_by and \
         not_owner outcomes, and every error code",
        family.clone(),
    );
    Refusal::ALL
        .iter()
        .map(|refusal| family.get_or_create(&[("reason", refusal.name())]).clone())
        .collect()
}

/// `lockstep_client_request_duration_seconds{op}`, one handle per kind, resolved now.
fn request_histograms(registry: &mut Registry) -> Vec<Histogram> {
    let family = prometheus_client::metrics::family::Family::<[(&str, &str); 1], Histogram>::new_with_constructor(
        || Histogram::new(REQUEST_BUCKETS_SECONDS),
    );
    registry.register_with_unit(
        "client_request_duration",
        "Time from a client request's line being read to its answer being taken by the \
         connection's writer, by operation (status requests are not timed)",
        Unit::Seconds,
        family.clone(),
    );
    RequestKind::ALL
        .iter()
        .map(|kind| family.get_or_create(&[("op", kind.name())]).clone())
        .collect()
}

/// Reads the published state at scrape time, so that the node task only ever stores it.
#[derive(Debug)]
struct StateCollector {
    published: Arc<Published>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.published.state();
        encode_role(&mut encoder, state.role)?;
        let log_bytes = self.published.log_bytes.load(Ordering::Relaxed);
        for (name, help, unit, value) in state_gauges(&state, log_bytes) {
            let metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        let start = encoder.encode_descriptor(
            "start_time",
            "When this server process started, in seconds since the Unix epoch.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.published.started_unix_seconds).encode(start)?;
        let cpu = encoder.encode_descriptor(
            "process_cpu",
            "CPU time this server process has used, user and system, in seconds.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(process_cpu_seconds()).encode(cpu)?;
        let peers = self
            .published
            .peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(peers) = peers {
            encode_peers(&mut encoder, &peers)?;
        }
        Ok(())
    }
}

/// CPU seconds (user and system) the whole process has used so far, read at scrape time: what
/// `lockstep bench --metrics` divides by the operations it had answered. 0 if the OS will not say.
pub fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage(2) writes a whole `rusage` into the pointer it is given, which points
    // at one, and reads nothing from it.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return 0.0;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and zeroed() had initialised it).
    let usage = unsafe { usage.assume_init() };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `lockstep_role{role}`: 1 for the role the server has, 0 for the others, so that
/// `lockstep_role{role="leader"} == 1` selects the leader.
fn encode_role(encoder: &mut DescriptorEncoder, role: Role) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "role",
        "This server's Raft role: 1 for the role it has, 0 for the others.",
        None,
        MetricType::Gauge,
    )?;
    for candidate in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        let labels = [("role", role_name(candidate))];
        ConstGauge::new(i64::from(candidate == role)).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Every unlabelled gauge of the node's state: name (after the prefix), help, unit, value.
fn state_gauges(
    state: &NodeState,
    log_bytes: u64,
) -> [(&'static str, &'static str, Option<Unit>, u64); 8] {
    [
        ("term", "This server's current term.", None, state.term),
        (
            "leader_id",
            "The number of the leader this server knows (2 for s2), 0 if none.",
            None,
            state.leader.map_or(0, |leader| u64::from(leader.0)),
        ),
        (
            "commit_index",
            "The highest log index this server knows to be committed.",
            None,
            state.commit_index,
        ),
        (
            "applied_index",
            "The highest log index this server has applied to its lock table.",
            None,
            state.applied_index,
        ),
        (
            "log_last_index",
            "The index of the last entry in this server's log, committed or not.",
            None,
            state.last_index,
        ),
        (
            "log_entries",
            "Entries held in this server's log after its snapshot.",
            None,
            state.last_index.saturating_sub(state.snapshot_index),
        ),
        (
            "snapshot_index",
            "The last log index this server's snapshot covers, 0 without one.",
            None,
            state.snapshot_index,
        ),
        (
            "log",
            "The size of this server's write-ahead log file.",
            Some(Unit::Bytes),
            log_bytes,
        ),
    ]
}

/// `lockstep_peer_connected{peer}` and `lockstep_peer_messages_dropped_total{peer}`.
fn encode_peers(encoder: &mut DescriptorEncoder, peers: &PeerLinks) -> Result<(), std::fmt::Error> {
    let names: Vec<(ServerId, String)> =
        peers.peers().map(|peer| (peer, peer.to_string())).collect();
    let mut connected = encoder.encode_descriptor(
        "peer_connected",
        "1 while this server's connection to the peer is up (connected and authenticated), \
         0 while it is being redialed.",
        None,
        MetricType::Gauge,
    )?;
    for (peer, name) in &names {
        let labels = [("peer", name.as_str())];
        ConstGauge::new(i64::from(peers.is_connected(*peer)))
            .encode(connected.encode_family(&labels)?)?;
    }
    let mut dropped = encoder.encode_descriptor(
        "peer_messages_dropped",
        "Messages to the peer dropped because its queue was full or it was unreachable \
         (Raft resends what matters).",
        None,
        MetricType::Counter,
    )?;
    for (peer, name) in &names {
        let labels = [("peer", name.as_str())];
        ConstCounter::new(peers.dropped(*peer)).encode(dropped.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The answer to one HTTP request: the metrics for `GET /metrics` (and `HEAD`), a short
/// refusal for anything else.
pub fn respond<B>(metrics: &ServerMetrics, request: &Request<B>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this lockstep server serves its metrics at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /metrics\n",
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// Serves `/metrics` on `listener` until the runtime stops. Runs on the server's network
/// runtime; a scrape costs one encoding of a few kilobytes.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<ServerMetrics>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS_MAX));
    // Bounded by the process's life.
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(%remote, "metrics: {METRICS_CONNECTIONS_MAX} scrapes at once; closing");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&metrics, &request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(METRICS_CONNECTION_TIME_MAX, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%remote, %error, "metrics: connection failed"),
                Err(_) => tracing::debug!(%remote, "metrics: connection took too long; closed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(role: Role, term: Term, leader: Option<u32>) -> NodeState {
        NodeState {
            role,
            term,
            leader: leader.map(ServerId),
            commit_index: 7,
            applied_index: 6,
            last_index: 9,
            snapshot_index: 2,
        }
    }

    /// The value of the unlabelled sample `name` in a scrape.
    fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
    }

    #[test]
    fn a_leader_change_is_a_new_leader_or_a_new_term_never_the_same_one_found_again() {
        let metrics = ServerMetrics::new(ServerId(1), state(Role::Follower, 1, None));
        let mut last = Publisher::new(state(Role::Follower, 1, None));
        let changes = || metrics.leader_changes.get();
        metrics.publish(&mut last, state(Role::Follower, 1, Some(2)));
        assert_eq!(changes(), 1, "s2 found in term 1");
        metrics.publish(&mut last, state(Role::Follower, 1, None));
        metrics.publish(&mut last, state(Role::Follower, 1, Some(2)));
        assert_eq!(
            changes(),
            1,
            "lost and found again in the same term: no change"
        );
        metrics.publish(&mut last, state(Role::Candidate, 2, None));
        metrics.publish(&mut last, state(Role::Leader, 2, Some(1)));
        assert_eq!(changes(), 2, "this server won term 2");
        metrics.publish(&mut last, state(Role::Follower, 3, Some(1)));
        assert_eq!(changes(), 3, "the same server again, but a new term");
        assert_eq!(metrics.state(), state(Role::Follower, 3, Some(1)));
    }

    #[test]
    fn the_scrape_shows_the_published_state_with_one_role_set() {
        let metrics = ServerMetrics::new(ServerId(3), state(Role::Follower, 1, None));
        let mut last = Publisher::new(metrics.state());
        metrics.publish(&mut last, state(Role::Leader, 4, Some(3)));
        metrics.publish_log_bytes(4096);
        let text = metrics.encode();
        assert!(
            text.contains("lockstep_role{role=\"leader\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lockstep_role{role=\"follower\"} 0\n"),
            "{text}"
        );
        assert_eq!(sample(&text, "lockstep_term"), Some("4"), "{text}");
        assert_eq!(sample(&text, "lockstep_leader_id"), Some("3"));
        assert_eq!(sample(&text, "lockstep_commit_index"), Some("7"));
        assert_eq!(sample(&text, "lockstep_applied_index"), Some("6"));
        assert_eq!(sample(&text, "lockstep_log_entries"), Some("7"));
        assert_eq!(sample(&text, "lockstep_log_bytes"), Some("4096"));
        assert!(text.contains("lockstep_server_info{id=\"s3\","), "{text}");
        let cpu: f64 = sample(&text, "lockstep_process_cpu_seconds_total")
            .expect("the process's CPU time")
            .parse()
            .expect("a number of seconds");
        assert!(cpu > 0.0, "a test process that ran has used CPU: {cpu}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn answers_are_counted_by_kind_and_refusals_by_reason() {
        let metrics = ServerMetrics::new(ServerId(1), state(Role::Follower, 1, None));
        metrics.record_outcome(&Outcome::Granted { token: 3 });
        metrics.record_outcome(&Outcome::Granted { token: 5 });
        metrics.record_outcome(&Outcome::Released);
        metrics.record_outcome(&Outcome::HeldBy {
            owner: crate::node::ClientId(2),
        });
        metrics.record_outcome(&Outcome::Free);
        metrics.record_refusal(Refusal::of_code(&ErrorCode::Unauthorized));
        metrics.record_refusal(Refusal::of_service_error(&ServiceError::SeqReused {
            seq: 1,
        }));
        metrics.record_request(RequestKind::Preempt, Duration::from_micros(300));
        metrics.record_fsync(Duration::from_micros(120));
        metrics.record_snapshot();
        let text = metrics.encode();
        assert_eq!(sample(&text, "lockstep_grants_total"), Some("2"), "{text}");
        assert_eq!(sample(&text, "lockstep_releases_total"), Some("1"));
        assert_eq!(sample(&text, "lockstep_snapshots_total"), Some("1"));
        for (reason, count) in [
            ("held_by", 1),
            ("not_owner", 0),
            ("unauthorized", 1),
            ("seq_reused", 1),
        ] {
            let line = format!("lockstep_refusals_total{{reason=\"{reason}\"}} {count}\n");
            assert!(text.contains(&line), "{line}{text}");
        }
        assert!(
            text.contains(
                "lockstep_client_request_duration_seconds_bucket{le=\"0.0005\",op=\"preempt\"} 1\n"
            ) || text.contains(
                "lockstep_client_request_duration_seconds_bucket{op=\"preempt\",le=\"0.0005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("lockstep_client_request_duration_seconds_count{op=\"preempt\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lockstep_fsync_duration_seconds_count 1\n"),
            "{text}"
        );
    }

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        let metrics = ServerMetrics::new(ServerId(1), state(Role::Follower, 1, None));
        let request = |method: Method, path: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap()
        };
        let ok = respond(&metrics, &request(Method::GET, "/metrics"));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[hyper::header::CONTENT_TYPE], CONTENT_TYPE);
        let missing = respond(&metrics, &request(Method::GET, "/"));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let post = respond(&metrics, &request(Method::POST, "/metrics"));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[hyper::header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn every_refusal_and_kind_has_its_own_label() {
        let names: std::collections::BTreeSet<&str> =
            Refusal::ALL.iter().map(|refusal| refusal.name()).collect();
        assert_eq!(names.len(), Refusal::ALL.len());
        let kinds: std::collections::BTreeSet<&str> =
            RequestKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(kinds.len(), RequestKind::ALL.len());
    }
}
