//! The simulation trace: every delivery, drop, timer, fault, role change and client operation.
//!
//! Two consumers. The recent-events ring is always kept (cheap, compact events) so that a
//! violation report can show what happened just before it. The JSON Lines writer, for
//! `--trace FILE` and the determinism tests, serialises each event with its message payload.

use crate::net::Endpoint;
use crate::node::{ClientReply, ClientRequest, PeerMessage, Term, Time};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;

/// What travels between endpoints.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    Peer(PeerMessage),
    Request(ClientRequest),
    Reply(ClientReply),
}

impl Payload {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::Peer(msg) => msg.kind_name(),
            Payload::Request(_) => "client_request",
            Payload::Reply(_) => "client_reply",
        }
    }
}

/// One trace event, compact enough to keep the last few in memory at all times.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEvent {
    /// A message was handed to the network; `fate` says what the network decided.
    Send {
        from: Endpoint,
        to: Endpoint,
        msg: &'static str,
        fate: &'static str,
    },
    Deliver {
        from: Endpoint,
        to: Endpoint,
        msg: &'static str,
    },
    /// A message in flight was lost because its target crashed or got partitioned meanwhile.
    LostInFlight {
        from: Endpoint,
        to: Endpoint,
        msg: &'static str,
        reason: &'static str,
    },
    Timer {
        node: Endpoint,
        timer: &'static str,
    },
    Role {
        server: Endpoint,
        role: &'static str,
        term: Term,
    },
    Fault {
        fault: String,
    },
    OpStart {
        client: Endpoint,
        tag: u64,
        op: &'static str,
        lock: String,
        seq: u64,
    },
    OpDone {
        client: Endpoint,
        tag: u64,
        op: &'static str,
        lock: String,
        result: String,
    },
    Phase {
        phase: &'static str,
    },
    /// A write reached the fenced resource (`sim::resource`), which accepted or rejected it.
    ResourceWrite {
        client: Endpoint,
        lock: String,
        token: u64,
        verdict: String,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    t: u64,
    #[serde(flatten)]
    event: &'a TraceEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

/// What a trace shows in place of a client secret.
pub const REDACTED: &str = "<redacted>";

/// A payload as the trace shows it: every client secret replaced by [`REDACTED`]. Secrets
/// travel in welcomes, requests, registrations in the log and snapshot tables; a trace is a
/// file people share, so none of them may reach it.
fn redacted(payload: &Payload) -> serde_json::Value {
    let mut value = serde_json::to_value(payload).expect("payloads serialize");
    redact_secrets(&mut value);
    value
}

/// Replaces the value of every `secret` field, and every value of a `secrets` map, in place.
/// The recursion follows the payload's own nesting, which its types bound.
fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &mut *field) {
                    ("secret", serde_json::Value::String(text)) => *text = REDACTED.to_string(),
                    ("secrets", serde_json::Value::Object(secrets)) => {
                        for secret in secrets.values_mut() {
                            *secret = serde_json::Value::String(REDACTED.to_string());
                        }
                    }
                    _ => redact_secrets(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

/// Every event of a run, kept in memory for a timeline (`--html`), up to a bound.
#[derive(Clone, Debug, Default)]
pub struct KeptTrace {
    /// In the order they happened.
    pub events: Vec<(Time, TraceEvent)>,
    /// Events past the bound, not kept.
    pub dropped: u64,
}

/// Records trace events: the ring of recent ones, optionally every one as JSON Lines, and
/// optionally every one in memory ([`Recorder::keep_events`]).
pub struct Recorder {
    recent: VecDeque<(Time, TraceEvent)>,
    recent_max: usize,
    writer: Option<Box<dyn Write>>,
    write_error: Option<std::io::Error>,
    written_count: u64,
    /// `None` unless a timeline asked for the events: a run without one pays a branch.
    kept: Option<KeptTrace>,
    kept_max: usize,
}

impl Recorder {
    pub fn new(writer: Option<Box<dyn Write>>) -> Recorder {
        Recorder {
            recent: VecDeque::new(),
            recent_max: 40,
            writer,
            write_error: None,
            written_count: 0,
            kept: None,
            kept_max: 0,
        }
    }

    /// Keeps every event from now on in memory, up to `events_max` of them (later ones are
    /// counted, not kept), for [`Recorder::take_kept`].
    pub fn keep_events(&mut self, events_max: usize) {
        self.kept = Some(KeptTrace::default());
        self.kept_max = events_max;
    }

    /// The events kept since [`Recorder::keep_events`]; `None` if it was never called.
    pub fn take_kept(&mut self) -> Option<KeptTrace> {
        self.kept.take()
    }

    /// True when every event is being written out, so callers can skip building payloads.
    pub fn is_writing(&self) -> bool {
        self.writer.is_some()
    }

    pub fn record(&mut self, now: Time, event: TraceEvent, payload: Option<&Payload>) {
        if let Some(writer) = &mut self.writer {
            let line = Line {
                t: now.as_nanos(),
                event: &event,
                payload: payload.map(redacted),
            };
            let result = serde_json::to_writer(&mut *writer, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| writer.write_all(b"\n"));
            match result {
                Ok(()) => self.written_count += 1,
                Err(error) => {
                    // Stop writing, and report the error when the run ends.
                    self.write_error = Some(error);
                    self.writer = None;
                }
            }
        }
        if let Some(kept) = &mut self.kept {
            if kept.events.len() < self.kept_max {
                kept.events.push((now, event.clone()));
            } else {
                kept.dropped += 1;
            }
        }
        if self.recent.len() == self.recent_max {
            self.recent.pop_front();
        }
        self.recent.push_back((now, event));
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &(Time, TraceEvent)> {
        self.recent.iter()
    }

    /// Flushes the writer and returns the first write error, if any.
    pub fn finish(&mut self) -> Result<u64, std::io::Error> {
        if let Some(error) = self.write_error.take() {
            return Err(error);
        }
        if let Some(writer) = &mut self.writer {
            writer.flush()?;
        }
        Ok(self.written_count)
    }
}

/// Renders a recent event as one human-readable line for failure reports.
pub fn describe(at: Time, event: &TraceEvent) -> String {
    let text = match event {
        TraceEvent::Send {
            from,
            to,
            msg,
            fate,
        } => format!("{from} -> {to} {msg} ({fate})"),
        TraceEvent::Deliver { from, to, msg } => format!("{from} -> {to} {msg} delivered"),
        TraceEvent::LostInFlight {
            from,
            to,
            msg,
            reason,
        } => {
            format!("{from} -> {to} {msg} lost in flight ({reason})")
        }
        TraceEvent::Timer { node, timer } => format!("{node} timer {timer}"),
        TraceEvent::Role { server, role, term } => format!("{server} is {role} in term {term}"),
        TraceEvent::Fault { fault } => format!("fault: {fault}"),
        TraceEvent::OpStart {
            client,
            op,
            lock,
            seq,
            ..
        } => {
            format!("{client} starts {op} {lock} (seq {seq})")
        }
        TraceEvent::OpDone {
            client,
            op,
            lock,
            result,
            ..
        } => {
            format!("{client} {op} {lock} -> {result}")
        }
        TraceEvent::Phase { phase } => format!("phase: {phase}"),
        TraceEvent::ResourceWrite {
            client,
            lock,
            token,
            verdict,
        } => format!("{client} writes {lock} with token {token} to the resource: {verdict}"),
    };
    format!("{at:>14}  {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{
        ClientId, ClientSecret, Command, Entry, LockTable, ReplyBody, RequestBody, Snapshot,
    };
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn no_client_secret_reaches_the_trace_file() {
        let secret = ClientSecret::from_bytes([0xab; 16]);
        let hex = secret.to_hex();
        let register = Command::Register {
            nonce: 1,
            secret: Some(secret),
            ttl_ms: None,
        };
        let mut table = LockTable::new();
        let _ = table.apply(1, &register);
        let payloads = [
            Payload::Reply(ClientReply {
                seq: 0,
                index: 1,
                term: 1,
                body: ReplyBody::Welcome {
                    nonce: 1,
                    client: ClientId(1),
                    secret,
                },
            }),
            Payload::Request(ClientRequest {
                seq: 1,
                seen_index: 1,
                term: 1,
                body: RequestBody::Op {
                    client: ClientId(1),
                    secret: Some(secret),
                    op: crate::node::Operation::Release { lock: "a".into() },
                },
            }),
            Payload::Peer(PeerMessage::AppendEntries {
                term: 1,
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    term: 1,
                    command: register,
                }],
                leader_commit: 0,
                round: 0,
                urgent: true,
            }),
            Payload::Peer(PeerMessage::InstallSnapshot {
                term: 1,
                snapshot: Arc::new(Snapshot {
                    last_included_index: 1,
                    last_included_term: 1,
                    table,
                }),
                round: 0,
            }),
        ];
        let out = Shared::default();
        let mut recorder = Recorder::new(Some(Box::new(out.clone())));
        for payload in &payloads {
            let event = TraceEvent::Phase { phase: "test" };
            recorder.record(Time::ZERO, event, Some(payload));
        }
        recorder.finish().expect("written");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), payloads.len());
        assert!(
            !text.contains(&hex),
            "a secret leaked into the trace:\n{text}"
        );
        assert_eq!(
            text.matches(REDACTED).count(),
            payloads.len(),
            "each payload shows where its secret was:\n{text}"
        );
    }
}
