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
}

#[derive(Serialize)]
struct Line<'a> {
    t: u64,
    #[serde(flatten)]
    event: &'a TraceEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Payload>,
}

/// Records trace events: the ring of recent ones, and optionally every one as JSON Lines.
pub struct Recorder {
    recent: VecDeque<(Time, TraceEvent)>,
    recent_max: usize,
    writer: Option<Box<dyn Write>>,
    write_error: Option<std::io::Error>,
    written_count: u64,
}

impl Recorder {
    pub fn new(writer: Option<Box<dyn Write>>) -> Recorder {
        Recorder {
            recent: VecDeque::new(),
            recent_max: 40,
            writer,
            write_error: None,
            written_count: 0,
        }
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
                payload,
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
    };
    format!("{at:>14}  {text}")
}
