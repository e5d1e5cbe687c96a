//! Looking at the cluster from the outside, as a client does: who leads, and whether a given
//! server has rejoined.
//!
//! - [`find_leader`] sends each server a write naming term 0, which no leader has: a follower
//!   answers `not_leader` naming the leader it follows, and the leader names itself. The
//!   highest term named wins. The write never reaches the log.
//! - [`await_rejoin`] asks one server, and only that server, for a linearizable check until
//!   it answers. A follower answers one only after the leader confirmed its leadership with a
//!   majority (read index) and the follower applied everything up to it: answering means it
//!   knows the current leader, hears from it, and applies. That is what rejoining is.

use crate::client::{Client, ClientOptions, Credential};
use crate::net::protocol::{
    ErrorCode, WireOp, WireReply, WireRequest, decode_reply, encode_request,
};
use crate::node::{Claim, Consistency, LockName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one server may take to answer the leader question.
const LEADER_QUESTION_TIMEOUT: Duration = Duration::from_millis(300);
/// Longest reply line read.
const REPLY_BYTES_MAX: u64 = 64 * 1024;
/// The lock the rejoin probe reads: never written, so reading it disturbs nothing.
pub const PROBE_LOCK: &str = "chaos-rejoin-probe";

/// Asks the servers at `addresses` (index, address) who leads; returns the index of the
/// leader named with the highest term, if any server named one. `seq` must grow with every
/// call; `credential` is a registered client's (the leader checks it before the term).
pub fn find_leader(
    addresses: &[(usize, SocketAddr)],
    credential: Credential,
    seq: &mut u64,
) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for &(_, address) in addresses {
        *seq += 1;
        let Some((term, leader)) = ask_leader(address, credential, *seq) else {
            continue;
        };
        if best.is_none_or(|(best_term, _)| term > best_term) {
            best = Some((term, leader));
        }
    }
    best.map(|(_, leader)| leader)
}

/// One server's answer: `(term, leader index)`.
fn ask_leader(address: SocketAddr, credential: Credential, seq: u64) -> Option<(u64, usize)> {
    let request = WireRequest {
        seq,
        seen_index: 0,
        term: 0,
        op: WireOp::Preempt {
            client: credential.id,
            secret: Some(credential.secret),
            lock: LockName::from(PROBE_LOCK),
            claim: Claim::EXCLUSIVE,
        },
    };
    let mut stream = TcpStream::connect_timeout(&address, LEADER_QUESTION_TIMEOUT).ok()?;
    stream
        .set_read_timeout(Some(LEADER_QUESTION_TIMEOUT))
        .ok()?;
    stream
        .set_write_timeout(Some(LEADER_QUESTION_TIMEOUT))
        .ok()?;
    stream.write_all(&encode_request(&request)).ok()?;
    let mut line = Vec::new();
    BufReader::new(stream.take(REPLY_BYTES_MAX))
        .read_until(b'\n', &mut line)
        .ok()?;
    match decode_reply(&line).ok()? {
        WireReply::Error(error) => match error.code {
            ErrorCode::NotLeader {
                leader: Some(leader),
                ..
            } if leader.0 >= 1 => Some((error.term?, leader.0 as usize - 1)),
            _ => None,
        },
        WireReply::Ok { .. } => None,
    }
}

/// A client that talks to `address` only, acting as `credential`, with short timeouts: a
/// probe wants to know soon, and tries again.
pub fn pinned_client(address: SocketAddr, credential: Credential) -> Client {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(200),
        attempt_timeout: Duration::from_millis(150),
        operation_timeout: Duration::from_millis(500),
        error_backoff: Duration::from_millis(20),
        credential: Some(credential),
        ..ClientOptions::default()
    };
    Client::new(vec![address.to_string()], options).expect("a loopback address and a credential")
}

/// Asks the server at `address` for a linearizable check of [`PROBE_LOCK`] until it answers
/// one itself; returns when it did, or `None` if `cancel` was set or `deadline` passed first.
pub fn await_rejoin(
    address: SocketAddr,
    credential: Credential,
    cancel: &AtomicBool,
    deadline: Instant,
) -> Option<Instant> {
    // Bounded by the deadline: every round waits at most an operation timeout.
    while !cancel.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut client = pinned_client(address, credential);
        let answered = client.check(PROBE_LOCK, Consistency::Linearizable).is_ok();
        // A check is never redirected, but an answer from anywhere else would not count.
        if answered && client.servers().len() == 1 {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
