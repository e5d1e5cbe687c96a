//! Client connections: newline-delimited JSON in, the node's replies out.
//!
//! Each connection gets a fresh [`ClientAddr`], a reader (this task) that turns lines into
//! `ServerInput::Client`s, and a writer task that encodes replies and flushes whenever its
//! queue is momentarily empty. Bad input never ends the server: every bad line gets a
//! structured error and the connection stays open while the line decoder says it is usable.
//! A connection that sends nothing for the idle timeout is closed.
//!
//! A `status` request never reaches the node: the reader answers it from what the node task
//! last published ([`ServerMetrics`]). A `watch` or `unwatch` reaches it as a `WatchInput`,
//! not a request, and its lines come back through the same queue (the `watch` module).
//!
//! Every answer is counted ([`ServerMetrics::record_outcome`], `record_refusal`), and every
//! request the node serves is timed from its line being read to its answer reaching the
//! writer; the two tasks share a small per-connection table of request times for that.
//!
//! Everything is bounded: the node's input queue (a full one answers `overloaded` at once),
//! each connection's reply queue (a reply that does not fit is dropped; the client times out
//! and retries the same seq, which is exactly-once), the table of request times, and the
//! number of connections.

use crate::net::alarm::Alarm;
use crate::net::metrics::{Refusal, RequestKind, ServerMetrics};
use crate::net::protocol::{
    ErrorReply, LineDecoder, LineEvent, WireError, WireReply, decode_request, encode_error,
    encode_reply_with, encode_wire_reply,
};
use crate::node::{ClientAddr, ClientReply, ReplyBody, ServerId, ServerInput, ServiceError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

mod watch;
pub use watch::deliver_watch_reply;

/// Replies and error lines waiting for one connection's writer.
pub const REPLY_QUEUE_MAX: usize = 4_096;
/// After a client closes its sending side, how long its answers may still take to come back.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(10);
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Requests of one connection whose read time is kept for the latency histogram. A request the
/// node never answers (a forward lost between servers) stays until newer ones push it out.
const TIMED_REQUESTS_MAX: usize = 1_024;
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// What a connection's writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// The node's reply to one of this connection's requests.
    Reply(ClientReply),
    /// A line the front end answered itself (a bad request, overloaded), newline included.
    Line(Vec<u8>),
    /// A watch line for one of this connection's watches (`watch` module).
    Watch(crate::node::watch::WatchReply),
}

/// Open connections by address, for the node task's replies.
#[derive(Clone, Default, Debug)]
pub struct ClientRegistry {
    connections: Arc<Mutex<HashMap<ClientAddr, mpsc::Sender<Outgoing>>>>,
    /// Connections a watch line did not fit: their writers close them (`watch` module).
    watch_overflows: Arc<Mutex<std::collections::BTreeSet<ClientAddr>>>,
}

impl ClientRegistry {
    /// The node task and the log thread take this once per batch; connection tasks only briefly, to join or
    /// leave.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<ClientAddr, mpsc::Sender<Outgoing>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What every client connection shares.
#[derive(Debug)]
pub struct ClientContext {
    pub inputs: mpsc::Sender<ServerInput>,
    pub registry: ClientRegistry,
    pub idle_timeout: Duration,
    pub next_addr: AtomicU64,
    pub overloaded_answers: AtomicU64,
    /// The node's current term, published by the node task after every batch: the refusals
    /// this front end makes itself carry it, so that clients do not ignore them as answers
    /// from an older term.
    pub term: Arc<AtomicU64>,
    /// Every server's client address (its one listening address), for `not_leader` redirects.
    pub addresses: BTreeMap<ServerId, String>,
    /// Answers counted, requests timed, and the state `status` answers from.
    pub metrics: Arc<ServerMetrics>,
}

/// When each of a connection's requests handed to the node was read, oldest first, until its
/// answer reaches the writer. The reader pushes and the writer takes; both are tasks on the
/// network thread, so its lock is never contended.
#[derive(Default, Debug)]
struct RequestTimes {
    waiting: VecDeque<(u64, RequestKind, Instant)>,
}

impl RequestTimes {
    fn push(&mut self, seq: u64, kind: RequestKind, read_at: Instant) {
        if self.waiting.len() >= TIMED_REQUESTS_MAX {
            self.waiting.pop_front();
        }
        self.waiting.push_back((seq, kind, read_at));
        assert!(self.waiting.len() <= TIMED_REQUESTS_MAX);
    }

    /// The earliest request with `seq` still waiting. Answers come nearly in order, so the
    /// search nearly always stops at the front.
    fn take(&mut self, seq: u64) -> Option<(RequestKind, Instant)> {
        let at = self
            .waiting
            .iter()
            .position(|&(waiting, ..)| waiting == seq)?;
        self.waiting
            .remove(at)
            .map(|(_, kind, read_at)| (kind, read_at))
    }
}

type SharedTimes = Arc<Mutex<RequestTimes>>;

fn lock_times(times: &SharedTimes) -> MutexGuard<'_, RequestTimes> {
    times
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext {
    fn address_of(&self, server: ServerId) -> Option<String> {
        self.addresses.get(&server).cloned()
    }
}

/// Serves one client connection, given as its two halves (a TCP stream's own halves, or a TLS
/// stream split in two), whose first bytes the listener already read.
pub async fn serve_client<R, W>(
    reader: R,
    writer: W,
    already_read: Vec<u8>,
    context: Arc<ClientContext>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let addr = ClientAddr(context.next_addr.fetch_add(1, Ordering::Relaxed));
    let (sender, receiver) = mpsc::channel(REPLY_QUEUE_MAX);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let times = SharedTimes::default();
    let previous = context.registry.lock().insert(addr, sender.clone());
    assert!(previous.is_none(), "client address {addr:?} reused");
    let writer_task = tokio::spawn(write_replies(
        addr,
        writer,
        receiver,
        Arc::clone(&in_flight),
        Arc::clone(&times),
        Arc::clone(&context),
    ));
    let mut connection = Connection {
        addr,
        sender,
        context: Arc::clone(&context),
        in_flight: Arc::clone(&in_flight),
        times,
        watched: false,
    };
    let end = connection.read_requests(reader, already_read).await;
    tracing::debug!(client = addr.0, ?end, "client connection ending");
    if end == End::HalfClosed {
        // The client stopped sending but may still read: let its answers come back.
        let deadline = Instant::now() + HALF_CLOSED_GRACE;
        while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    context.registry.lock().remove(&addr);
    connection.close_watches().await;
    drop(connection);
    // The writer ends once the queue is drained and every sender is gone.
    let _ = writer_task.await;
}

/// A connection's idle timeout, on one [`Alarm`]: a read only notes the time, and the alarm,
/// when it fires, sleeps on to the last read's deadline if there was one since. (A fresh
/// `tokio::time::timeout` around every read put each request through the timer wheel twice,
/// to insert and to remove it.)
struct IdleTimer {
    timeout: Duration,
    last_activity: Instant,
    alarm: Alarm,
}

impl IdleTimer {
    fn new(timeout: Duration) -> IdleTimer {
        IdleTimer {
            timeout,
            last_activity: Instant::now(),
            alarm: Alarm::new(),
        }
    }

    fn note_activity(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Completes once `timeout` has passed since the last activity. Cancel-safe. No read
    /// happens while this future runs, so the deadline it waits for stands.
    async fn expired(&mut self) {
        self.alarm.until(self.last_activity + self.timeout).await;
    }
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum End {
    HalfClosed,
    Idle,
    Abandoned,
    Failed,
    WriterGone,
}

struct Connection {
    addr: ClientAddr,
    sender: mpsc::Sender<Outgoing>,
    context: Arc<ClientContext>,
    /// Requests handed to the node and not yet answered.
    in_flight: Arc<AtomicUsize>,
    times: SharedTimes,
    /// Whether a watch was ever asked for here: the node is told when the connection closes.
    watched: bool,
}

impl Connection {
    async fn read_requests<R: AsyncRead + Unpin>(&mut self, mut reader: R, first: Vec<u8>) -> End {
        let mut decoder = LineDecoder::new();
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut bytes = first;
        let mut idle = IdleTimer::new(self.context.idle_timeout);
        let mut events = Vec::new();
        // Bounded by the connection's life: each round reads at least one byte or ends.
        loop {
            decoder.feed_into(&bytes, &mut events);
            for event in events.drain(..) {
                if let Some(end) = self.on_event(event, &mut decoder).await {
                    return end;
                }
            }
            if !decoder.is_usable() {
                return End::Abandoned;
            }
            let read = tokio::select! {
                biased;
                read = reader.read(&mut chunk) => read,
                () = idle.expired() => return End::Idle,
            };
            let read = match read {
                Ok(0) => return End::HalfClosed,
                Ok(read) => read,
                Err(_) => return End::Failed,
            };
            idle.note_activity();
            bytes.clear();
            bytes.extend_from_slice(&chunk[..read]);
        }
    }

    /// Answers or hands on one line; the line's allocation goes back to `decoder` for the next.
    async fn on_event(&mut self, event: LineEvent, decoder: &mut LineDecoder) -> Option<End> {
        let line = match event {
            LineEvent::Line(line) => line,
            LineEvent::TooLong => {
                return self
                    .answer(&ErrorReply::from(WireError::line_too_long()))
                    .await;
            }
            LineEvent::Abandoned => {
                let _ = self
                    .answer(&ErrorReply::from(WireError::line_abandoned()))
                    .await;
                return Some(End::Abandoned);
            }
        };
        let read_at = Instant::now();
        let decoded = decode_request(&line);
        decoder.recycle(line);
        let request = match decoded {
            Ok(request) => request,
            Err(error) => return self.answer(&ErrorReply::from(error)).await,
        };
        let seq = request.seq;
        if let crate::net::protocol::WireOp::Watch(watch) = request.op {
            return self.on_watch(seq, watch).await;
        }
        let kind = RequestKind::of(&request.op);
        let Some(request) = request.into_client_request() else {
            return self.answer_status(seq).await;
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let input = ServerInput::Client {
            from: self.addr,
            request,
        };
        let refusal = match self.context.inputs.try_send(input) {
            Ok(()) => {
                // No await since the send: the answer cannot have been written yet.
                if let Some(kind) = kind {
                    lock_times(&self.times).push(seq, kind, read_at);
                }
                return None;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.context
                    .overloaded_answers
                    .fetch_add(1, Ordering::Relaxed);
                ServiceError::Overloaded
            }
            // The node loop is gone: the process is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => ServiceError::Unavailable,
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let term = self.context.term.load(Ordering::Relaxed);
        let lookup = |server| self.context.address_of(server);
        let error = ErrorReply::from_service_error(seq, term, &refusal, &lookup);
        self.answer(&error).await
    }

    async fn answer(&self, error: &ErrorReply) -> Option<End> {
        self.context
            .metrics
            .record_refusal(Refusal::of_code(&error.code));
        self.send_line(encode_error(error)).await
    }

    /// Answers `status` request `seq` from what the node task last published.
    async fn answer_status(&self, seq: u64) -> Option<End> {
        let metrics = &self.context.metrics;
        let state = metrics.state();
        let reply = WireReply::status(seq, state.term, state.applied_index, metrics.status(&state));
        self.send_line(encode_wire_reply(&reply)).await
    }

    async fn send_line(&self, line: Vec<u8>) -> Option<End> {
        match self.sender.send(Outgoing::Line(line)).await {
            Ok(()) => None,
            Err(_) => Some(End::WriterGone),
        }
    }
}

/// Counts a node reply by what it says, and times the request it answers.
fn record_reply(metrics: &ServerMetrics, times: &SharedTimes, reply: &ClientReply) {
    match &reply.body {
        ReplyBody::Outcome(outcome) => metrics.record_outcome(outcome),
        ReplyBody::Error(error) => metrics.record_refusal(Refusal::of_service_error(error)),
        ReplyBody::Welcome { .. } | ReplyBody::KeptAlive { .. } => {}
    }
    if let Some((kind, read_at)) = lock_times(times).take(reply.seq) {
        metrics.record_request(kind, read_at.elapsed());
    }
}

/// Writes everything that is ready in one go, then flushes when the queue is momentarily empty.
async fn write_replies<W: AsyncWrite + Unpin>(
    addr: ClientAddr,
    mut writer: W,
    mut receiver: mpsc::Receiver<Outgoing>,
    in_flight: Arc<AtomicUsize>,
    times: SharedTimes,
    context: Arc<ClientContext>,
) {
    let lookup = |server| context.address_of(server);
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut watch_acknowledgements = watch::WatchAcknowledgements::default();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            match outgoing {
                Outgoing::Reply(reply) => {
                    // Saturating: a reply the node sends twice must not wrap the count.
                    let _ = in_flight
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                    record_reply(&context.metrics, &times, &reply);
                    buffer.extend_from_slice(&encode_reply_with(&reply, &lookup));
                }
                Outgoing::Line(line) => buffer.extend_from_slice(&line),
                Outgoing::Watch(reply) => {
                    watch_acknowledgements.note(&reply);
                    buffer.extend_from_slice(&crate::net::protocol::encode_watch_reply(&reply));
                }
            }
            if buffer.len() < WRITE_BATCH_BYTES_MAX {
                next = receiver.try_recv().ok();
            }
        }
        // The flush pushes out what TLS still holds; on plain TCP it does nothing.
        if writer.write_all(&buffer).await.is_err() || writer.flush().await.is_err() {
            // The client is gone; the reader notices on its own.
            return;
        }
        buffer.clear();
        if !watch_acknowledgements.send(&context, addr).await {
            break; // a watch line was lost: the connection ends so that its client resumes
        }
    }
    let _ = writer.shutdown().await;
}
