//! Client connections: newline-delimited JSON in, the node's replies out.
//!
//! Each connection gets a fresh [`ClientAddr`], a reader (this task) that turns lines into
//! `ServerInput::Client`s, and a writer task that encodes replies and flushes whenever its
//! queue is momentarily empty. Bad input never ends the server: every bad line gets a
//! structured error and the connection stays open while the line decoder says it is usable.
//! A connection that sends nothing for the idle timeout is closed.
//!
//! Everything is bounded: the node's input queue (a full one answers `overloaded` at once),
//! each connection's reply queue (a reply that does not fit is dropped; the client times out
//! and retries the same seq, which is exactly-once), and the number of connections.

use crate::net::protocol::{
    ErrorReply, LineDecoder, LineEvent, WireError, decode_request, encode_error, encode_reply_with,
};
use crate::node::{ClientAddr, ClientReply, ServerId, ServerInput, ServiceError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Replies and error lines waiting for one connection's writer.
pub const REPLY_QUEUE_MAX: usize = 4_096;
/// After a client closes its sending side, how long its answers may still take to come back.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(10);
const READ_CHUNK_BYTES: usize = 16 * 1024;
const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;

/// What a connection's writer sends.
#[derive(Debug)]
pub enum Outgoing {
    /// The node's reply to one of this connection's requests.
    Reply(ClientReply),
    /// A line the front end answered itself (a bad request, overloaded), newline included.
    Line(Vec<u8>),
}

/// Open connections by address, for the node task's replies.
#[derive(Clone, Default, Debug)]
pub struct ClientRegistry {
    connections: Arc<Mutex<HashMap<ClientAddr, mpsc::Sender<Outgoing>>>>,
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
    let previous = context.registry.lock().insert(addr, sender.clone());
    assert!(previous.is_none(), "client address {addr:?} reused");
    let writer_task = tokio::spawn(write_replies(
        writer,
        receiver,
        Arc::clone(&in_flight),
        Arc::clone(&context),
    ));
    let mut connection = Connection {
        addr,
        sender,
        context: Arc::clone(&context),
        in_flight: Arc::clone(&in_flight),
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
    drop(connection);
    // The writer ends once the queue is drained and every sender is gone.
    let _ = writer_task.await;
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
}

impl Connection {
    async fn read_requests<R: AsyncRead + Unpin>(&mut self, mut reader: R, first: Vec<u8>) -> End {
        let mut decoder = LineDecoder::new();
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let mut bytes = first;
        // Bounded by the connection's life: each round reads at least one byte or ends.
        loop {
            for event in decoder.feed(&bytes) {
                if let Some(end) = self.on_event(event).await {
                    return end;
                }
            }
            if !decoder.is_usable() {
                return End::Abandoned;
            }
            let read = tokio::time::timeout(self.context.idle_timeout, reader.read(&mut chunk));
            let read = match read.await {
                Err(_) => return End::Idle,
                Ok(Ok(0)) => return End::HalfClosed,
                Ok(Ok(read)) => read,
                Ok(Err(_)) => return End::Failed,
            };
            bytes.clear();
            bytes.extend_from_slice(&chunk[..read]);
        }
    }

    async fn on_event(&mut self, event: LineEvent) -> Option<End> {
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
        let request = match decode_request(&line) {
            Ok(request) => request.into_client_request(),
            Err(error) => return self.answer(&ErrorReply::from(error)).await,
        };
        let seq = request.seq;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let input = ServerInput::Client {
            from: self.addr,
            request,
        };
        let refusal = match self.context.inputs.try_send(input) {
            Ok(()) => return None,
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
        match self.sender.send(Outgoing::Line(encode_error(error))).await {
            Ok(()) => None,
            Err(_) => Some(End::WriterGone),
        }
    }
}

/// Writes everything that is ready in one go, then flushes when the queue is momentarily empty.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut receiver: mpsc::Receiver<Outgoing>,
    in_flight: Arc<AtomicUsize>,
    context: Arc<ClientContext>,
) {
    let lookup = |server| context.address_of(server);
    let mut buffer = Vec::with_capacity(16 * 1024);
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            match outgoing {
                Outgoing::Reply(reply) => {
                    // Saturating: a reply the node sends twice must not wrap the count.
                    let _ = in_flight
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                    buffer.extend_from_slice(&encode_reply_with(&reply, &lookup));
                }
                Outgoing::Line(line) => buffer.extend_from_slice(&line),
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
    }
    let _ = writer.shutdown().await;
}
