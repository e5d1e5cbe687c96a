//! Watches on a client connection (docs/PROTOCOL.md, "watch"; docs/design.md, "Watches").
//!
//! The reader hands a `watch` or `unwatch` line to the node as a [`WatchInput`] (never as a
//! client request); the node task writes the node's [`WatchReply`]s to the connection's queue
//! ([`deliver_watch_reply`]); the writer encodes them and, once a batch is written to the
//! socket, acknowledges the events it held ([`WatchAcknowledgements`]), which lets the node
//! send more: a watcher that does not read is held at the node's bound of unacknowledged
//! events, and past it cancelled `fell_behind`, never buffered without end. A connection that
//! closes ends its watches (`WatchInput::Closed`).
//!
//! A watch reply never waits for the disk: it comes from applied, so committed, state.
//!
//! The one loss this side could cause is a watch line that does not fit the connection's
//! reply queue (a client that pipelines thousands of requests and reads nothing). A stream
//! must never skip an event silently, so the connection is then marked and its writer closes
//! it after what it holds: the client sees the connection end and resumes `from` the index
//! after the last event it read, on this server or another.

use super::{ClientRegistry, Connection, End, Outgoing};
use crate::net::protocol::{ErrorReply, WatchRequest};
use crate::node::watch::{WatchCredential, WatchInput, WatchReply};
use crate::node::{ClientAddr, LogIndex, ServerInput, ServiceError};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// The node's input for a watch request read on connection `from`.
pub fn watch_input(from: ClientAddr, request: WatchRequest) -> WatchInput {
    match request {
        WatchRequest::Start {
            client,
            secret,
            id,
            target,
            from: from_index,
        } => WatchInput::Start {
            from,
            id,
            target,
            from_index,
            credential: Some(WatchCredential { client, secret }),
        },
        WatchRequest::Stop { id } => WatchInput::Stop { from, id },
    }
}

impl Connection {
    /// Hands a watch request to the node; a full input queue answers `overloaded` with the
    /// request's seq, as for any request.
    pub(super) async fn on_watch(&mut self, seq: u64, request: WatchRequest) -> Option<End> {
        if matches!(request, WatchRequest::Start { .. }) {
            self.watched = true;
        }
        let input = ServerInput::Watch(watch_input(self.addr, request));
        let refusal = match self.context.inputs.try_send(input) {
            Ok(()) => return None,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.context
                    .overloaded_answers
                    .fetch_add(1, Ordering::Relaxed);
                ServiceError::Overloaded
            }
            Err(mpsc::error::TrySendError::Closed(_)) => ServiceError::Unavailable,
        };
        let term = self.context.term.load(Ordering::Relaxed);
        let lookup = |server| self.context.address_of(server);
        let error = ErrorReply::from_service_error(seq, term, &refusal, &lookup);
        self.answer(&error).await
    }

    /// The connection is closing: the node drops its watches (without a word: nobody reads).
    /// Waits for room in the node's queue, since a lost `Closed` would keep the watches
    /// counted against the server's bound.
    pub(super) async fn close_watches(&self) {
        if self.watched {
            let input = ServerInput::Watch(WatchInput::Closed { from: self.addr });
            let _ = self.context.inputs.send(input).await;
        }
    }
}

/// Node task: queues `reply` for connection `to`. A connection already gone is fine (the
/// reader told, or will tell, the node it closed); one whose queue is full is marked, and its
/// writer closes it (see the module documentation).
pub fn deliver_watch_reply(clients: &ClientRegistry, to: ClientAddr, reply: WatchReply) {
    let connections = clients.lock();
    let Some(connection) = connections.get(&to) else {
        return;
    };
    if connection.try_send(Outgoing::Watch(reply)).is_err() {
        drop(connections);
        tracing::warn!(
            client = to.0,
            "a watch line did not fit the connection's queue: closing it so that its client \
             resumes"
        );
        clients.mark_watch_overflow(to);
    }
}

impl ClientRegistry {
    fn mark_watch_overflow(&self, connection: ClientAddr) {
        let mut overflows = (self.watch_overflows.lock()).unwrap_or_else(|p| p.into_inner());
        overflows.insert(connection);
    }

    /// Whether a watch line for `connection` was dropped; forgets it, since the connection
    /// then closes.
    fn watch_overflowed(&self, connection: ClientAddr) -> bool {
        let mut overflows = (self.watch_overflows.lock()).unwrap_or_else(|p| p.into_inner());
        overflows.remove(&connection)
    }
}

/// Writer: the highest event index of each watch in the batch being written, to acknowledge
/// once the batch has left.
#[derive(Default, Debug)]
pub struct WatchAcknowledgements {
    through: BTreeMap<u64, LogIndex>,
    /// Whether this connection ever carried a watch line (only then can it overflow).
    watched: bool,
}

impl WatchAcknowledgements {
    /// Notes a reply put into the batch.
    pub fn note(&mut self, reply: &WatchReply) {
        self.watched = true;
        if let WatchReply::Event { id, event } = reply {
            let through = self.through.entry(*id).or_default();
            assert!(event.index > *through, "watch {id}: events out of order");
            *through = event.index;
        }
    }

    /// After a batch was written: tells the node its events left. Waits for room in the
    /// node's queue: an acknowledgement lost would stall the watch for good. False when the
    /// connection must close (its queue overflowed a watch line, or the node is gone).
    pub async fn send(&mut self, context: &super::ClientContext, from: ClientAddr) -> bool {
        for (id, through) in std::mem::take(&mut self.through) {
            let input = ServerInput::Watch(WatchInput::Acknowledge { from, id, through });
            if context.inputs.send(input).await.is_err() {
                return false;
            }
        }
        !(self.watched && context.registry.watch_overflowed(from))
    }
}

#[cfg(test)]
mod tests {
    //! The connection's writer acknowledges a watch's events only once they are written to the
    //! socket, and closes a connection whose queue a watch line did not fit. Driven through a
    //! 64-byte in-memory pipe on a current-thread runtime: the writer blocks on the full pipe
    //! until the test reads, so nothing depends on timing.

    use super::super::{ClientContext, ClientRegistry, Outgoing, write_replies};
    use crate::net::metrics::{NodeState, ServerMetrics};
    use crate::node::watch::{Change, LockChange, WatchEvent, WatchInput, WatchReply};
    use crate::node::{ClientAddr, ClientId, Role, ServerId, ServerInput};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    const CONNECTION: ClientAddr = ClientAddr(3);

    fn context(inputs: mpsc::Sender<ServerInput>) -> Arc<ClientContext> {
        let initial = NodeState {
            role: Role::Follower,
            term: 1,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            snapshot_index: 0,
        };
        Arc::new(ClientContext {
            inputs,
            registry: ClientRegistry::default(),
            idle_timeout: Duration::from_secs(300),
            next_addr: AtomicU64::new(1),
            overloaded_answers: AtomicU64::new(0),
            term: Arc::new(AtomicU64::new(1)),
            addresses: BTreeMap::new(),
            metrics: Arc::new(ServerMetrics::new(ServerId(1), initial)),
        })
    }

    fn event(index: u64) -> Outgoing {
        let change = Change::Released { owner: ClientId(7) };
        let changes = vec![LockChange {
            lock: "printer".into(),
            change,
        }];
        Outgoing::Watch(WatchReply::Event {
            id: 1,
            event: WatchEvent { index, changes },
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    }

    /// Lets every other task run until it waits.
    async fn settle() {
        for _ in 0..64 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn events_are_acknowledged_only_once_written_to_the_socket() {
        runtime().block_on(async {
            let (inputs, mut node) = mpsc::channel(16);
            let context = context(inputs);
            let (socket, mut client_side) = tokio::io::duplex(64);
            let (queue, receiver) = mpsc::channel(16);
            let in_flight = Arc::new(AtomicUsize::new(0));
            let writer = tokio::spawn(write_replies(
                CONNECTION,
                socket,
                receiver,
                in_flight,
                Arc::default(),
                Arc::clone(&context),
            ));
            for index in [5, 6, 9] {
                queue.send(event(index)).await.expect("queued");
            }
            settle().await;
            assert!(
                node.try_recv().is_err(),
                "nothing acknowledged while the pipe is full"
            );

            let mut read = vec![0u8; 4096];
            let mut text = String::new();
            // Bounded: three short lines.
            while text.matches('\n').count() < 3 {
                let count = client_side.read(&mut read).await.expect("reads");
                text.push_str(std::str::from_utf8(&read[..count]).expect("UTF-8"));
            }
            settle().await;
            let acknowledged = node.try_recv().expect("acknowledged once written");
            let expected = WatchInput::Acknowledge {
                from: CONNECTION,
                id: 1,
                through: 9,
            };
            assert!(
                matches!(&acknowledged, ServerInput::Watch(input) if *input == expected),
                "{acknowledged:?}"
            );
            assert!(
                node.try_recv().is_err(),
                "one acknowledgement per watch and batch"
            );
            drop(queue);
            writer.await.expect("the writer ends with its queue");
        });
    }

    #[test]
    fn a_connection_whose_queue_overflowed_a_watch_line_is_closed() {
        runtime().block_on(async {
            let (inputs, _node) = mpsc::channel(16);
            let context = context(inputs);
            let (socket, mut client_side) = tokio::io::duplex(4096);
            let (queue, receiver) = mpsc::channel(1);
            context.registry.lock().insert(CONNECTION, queue.clone());
            let writer = tokio::spawn(write_replies(
                CONNECTION,
                socket,
                receiver,
                Arc::new(AtomicUsize::new(0)),
                Arc::default(),
                Arc::clone(&context),
            ));
            // The queue holds one line; the node task's second does not fit and is dropped.
            let full = (0..2).map(|index| match event(index + 1) {
                Outgoing::Watch(reply) => reply,
                _ => unreachable!("an event"),
            });
            for reply in full {
                super::deliver_watch_reply(&context.registry, CONNECTION, reply);
            }
            settle().await;
            let mut written = Vec::new();
            client_side
                .read_to_end(&mut written)
                .await
                .expect("the writer closes the connection");
            let text = String::from_utf8(written).expect("UTF-8");
            assert_eq!(text.lines().count(), 1, "only the line that fit: {text}");
            assert!(text.contains(r#""index":1"#), "{text}");
            drop(queue);
            context.registry.lock().remove(&CONNECTION);
            writer.await.expect("the writer ended");
        });
    }
}
