//! Asking one server how it is doing: the `status` request of docs/PROTOCOL.md, sent to exactly
//! the server named, never retried elsewhere (an operator wants that server's own answer).
//!
//! ```no_run
//! use std::time::Duration;
//! let report = lockstep::client::server_status("127.0.0.1:7001", None, Duration::from_secs(2))?;
//! println!("{} is {:?} in term {}", report.status.server, report.status.role, report.term);
//! # Ok::<(), String>(())
//! ```

use super::connection::{Connection, ConnectionError};
use crate::net::protocol::{
    Answer, ServerStatus, WireOp, WireReply, WireRequest, decode_reply, encode_request,
};
use crate::net::tls::ClientTls;
use crate::node::{LogIndex, Term};
use std::time::{Duration, Instant};

/// The seq of the one request a status query sends.
const STATUS_SEQ: u64 = 1;

/// One server's answer to `status`.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct StatusReport {
    /// The server's current term.
    pub term: Term,
    /// The last log index the server applied to its lock table.
    pub applied_index: LogIndex,
    pub status: ServerStatus,
}

/// Sends `status` to `address` and waits up to `timeout` (connecting included) for its answer.
/// `Err` says, for people, why there is none: unreachable, silent, refused (a server that
/// predates `status` refuses it as an unknown op), or a reply that breaks the protocol.
pub fn server_status(
    address: &str,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<StatusReport, String> {
    assert!(!timeout.is_zero(), "status: a zero timeout");
    let deadline = Instant::now() + timeout;
    let mut connection = Connection::open(address, timeout, tls)
        .map_err(|error| format!("cannot connect: {error}"))?;
    let request = WireRequest {
        seq: STATUS_SEQ,
        seen_index: 0,
        term: 0,
        op: WireOp::Status,
    };
    connection
        .send(&encode_request(&request), deadline)
        .map_err(describe)?;
    // Bounded by the deadline: `receive` never blocks past it.
    loop {
        let Some(line) = connection.receive(deadline).map_err(describe)? else {
            return Err(format!("no answer within {timeout:?}"));
        };
        match decode_reply(&line).map_err(|error| format!("a bad reply: {error}"))? {
            WireReply::Ok {
                seq: STATUS_SEQ,
                index,
                term,
                answer: Answer::Status(status),
            } => {
                return Ok(StatusReport {
                    term,
                    applied_index: index,
                    status,
                });
            }
            WireReply::Error(error) if error.seq.is_none_or(|seq| seq == STATUS_SEQ) => {
                return Err(format!(
                    "refused ({}): {}",
                    error.code.name(),
                    error.message
                ));
            }
            // Not ours: a server answers each request once, so this is noise; keep reading.
            _ => {}
        }
    }
}

fn describe(error: ConnectionError) -> String {
    match error {
        ConnectionError::Broken(reason) | ConnectionError::Protocol(reason) => reason,
    }
}
