//! Chaos's clients: threads that each run one `lockstep::client::Client` (the real client
//! library, its retries and timeouts included) through random preempts, releases and checks,
//! and record every operation on the run's one clock.
//!
//! An operation is recorded when it is called, with its call time, and completed with its
//! return time and result. What the library cannot answer is recorded as unknown: a timeout
//! after the request was sent (it may have taken effect), and also a timeout before anything
//! could be sent and a refusal for good, which took no effect but are kept, harmlessly, as
//! unknown rather than dropped, and counted apart in the summary.

use super::Clock;
use crate::client::{Check, Client, Error, Preempt, Release};
use crate::node::{ClientId, Consistency, LogIndex};
use crate::sim::history::HistoryOpKind;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Operations one client records at most; a client that reaches it stops (a day of chaos
/// at the usual rate is far fewer).
pub const OPERATIONS_PER_CLIENT_MAX: usize = 5_000_000;

/// What a client learned, owners as the cluster's client ids.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Observed {
    Granted {
        token: LogIndex,
    },
    HeldBy {
        owner: ClientId,
    },
    Released,
    NotOwner,
    Free,
    Owner {
        owner: ClientId,
        token: LogIndex,
    },
    /// Sent, and no answer before the operation's timeout: may or may not have taken effect.
    TimedOut,
    /// No server could be reached; nothing was sent.
    Unreachable,
    /// Refused for good (`Error::Rejected`) or a server broke the protocol: a bug somewhere.
    Failed,
}

impl Observed {
    /// The summary's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Observed::Granted { .. } => "granted",
            Observed::HeldBy { .. } => "held_by",
            Observed::Released => "released",
            Observed::NotOwner => "not_owner",
            Observed::Free => "free",
            Observed::Owner { .. } => "owner",
            Observed::TimedOut => "unknown (timed out)",
            Observed::Unreachable => "unknown (no server reachable)",
            Observed::Failed => "failed (rejected or protocol error)",
        }
    }

    /// Whether the client got a definite answer.
    pub fn is_answer(self) -> bool {
        !matches!(
            self,
            Observed::TimedOut | Observed::Unreachable | Observed::Failed
        )
    }
}

/// One operation as a chaos client saw it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Recorded {
    /// The history's client number: `c1` is 1.
    pub client: u32,
    pub op: HistoryOpKind,
    pub lock: String,
    pub consistency: Option<Consistency>,
    /// Nanoseconds on the run's clock.
    pub call_ns: u64,
    /// `None` exactly when the result is not an answer.
    pub return_ns: Option<u64>,
    pub observed: Observed,
    /// What went wrong, for a failed operation.
    pub error: Option<String>,
    /// The log index the answer reflects (`None` without an answer), for stale-read checks.
    pub index: Option<u64>,
}

/// Counters shared by every client, for the progress display.
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub operations: AtomicU64,
    pub unknown: AtomicU64,
}

/// What one client does.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// 1, 2, ...: its history name is `c<number>`.
    pub number: u32,
    /// Lock names the client picks from.
    pub locks: Vec<String>,
    /// Seeds the client's choices: operation, lock and think time.
    pub seed: u64,
    /// Pause between operations, drawn uniformly.
    pub think_ms: (u64, u64),
}

/// Runs random operations through `client` until `stop`, and returns them in order.
pub fn run_client(
    mut client: Client,
    plan: &ClientPlan,
    clock: &Clock,
    stop: &AtomicBool,
    counters: &LiveCounters,
) -> Vec<Recorded> {
    assert!(!plan.locks.is_empty(), "a chaos client needs locks");
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let mut recorded = Vec::new();
    // Locks this client was last told it holds: most releases go to them, so that locks
    // change hands often instead of being released mostly by clients that do not hold them.
    let mut held: Vec<String> = Vec::new();
    // Bounded by the stop flag and by OPERATIONS_PER_CLIENT_MAX.
    while !stop.load(Ordering::Relaxed) && recorded.len() < OPERATIONS_PER_CLIENT_MAX {
        let roll = rng.random_range(0..100);
        let lock = if (35..70).contains(&roll) && !held.is_empty() && rng.random_bool(0.8) {
            held[rng.random_range(0..held.len())].clone()
        } else {
            plan.locks[rng.random_range(0..plan.locks.len())].clone()
        };
        let operation = perform(&mut client, plan.number, roll, lock, clock);
        match operation.observed {
            Observed::Granted { .. } if !held.contains(&operation.lock) => {
                held.push(operation.lock.clone());
            }
            Observed::Released | Observed::NotOwner | Observed::HeldBy { .. } => {
                held.retain(|lock| *lock != operation.lock);
            }
            _ => {}
        }
        counters.operations.fetch_add(1, Ordering::Relaxed);
        if !operation.observed.is_answer() {
            counters.unknown.fetch_add(1, Ordering::Relaxed);
        }
        recorded.push(operation);
        let think = rng.random_range(plan.think_ms.0..=plan.think_ms.1);
        std::thread::sleep(Duration::from_millis(think));
    }
    recorded
}

/// One operation, chosen by `roll` (0 to 99): 35% preempt, 35% release, 15% local check,
/// 15% linearizable check.
fn perform(client: &mut Client, number: u32, roll: u32, lock: String, clock: &Clock) -> Recorded {
    let call_ns = clock.now_ns();
    let (op, consistency, result) = match roll {
        0..35 => {
            let result = client.preempt(&lock).map(|answer| match answer {
                Preempt::Granted { token } => Observed::Granted { token },
                Preempt::HeldBy { owner } => Observed::HeldBy { owner },
                // The workload claims no permits, so the cluster has no reason to say this.
                Preempt::PermitsMismatch { .. } => Observed::Failed,
            });
            (HistoryOpKind::Preempt, None, result)
        }
        35..70 => {
            let result = client.release(&lock).map(|answer| match answer {
                Release::Released => Observed::Released,
                Release::NotOwner => Observed::NotOwner,
            });
            (HistoryOpKind::Release, None, result)
        }
        _ => {
            let consistency = if roll < 85 {
                Consistency::Local
            } else {
                Consistency::Linearizable
            };
            (
                HistoryOpKind::Check,
                Some(consistency),
                check(client, &lock, consistency),
            )
        }
    };
    let return_ns = clock.now_ns();
    let (observed, error) = match result {
        Ok(observed) => (observed, None),
        Err(error) => (unanswered(&error), Some(error.to_string())),
    };
    Recorded {
        client: number,
        op,
        lock,
        consistency,
        call_ns,
        return_ns: observed.is_answer().then_some(return_ns),
        observed,
        error: error.filter(|_| observed == Observed::Failed),
        // The answer's own index: only an answered operation has one.
        index: client.last_answer_index().filter(|_| observed.is_answer()),
    }
}

/// A check through `client`, as an observation.
pub fn check(client: &mut Client, lock: &str, consistency: Consistency) -> Result<Observed, Error> {
    client.check(lock, consistency).map(|answer| match answer {
        Check::Free => Observed::Free,
        Check::Owner { owner, token } => Observed::Owner { owner, token },
        // The workload takes every lock exclusively: a shared holder is a bug somewhere.
        Check::Shared { .. } => Observed::Failed,
    })
}

/// What an error means for the history.
pub fn unanswered(error: &Error) -> Observed {
    match error {
        Error::TimedOut { .. } => Observed::TimedOut,
        Error::NoServerReachable { .. } => Observed::Unreachable,
        Error::Rejected { .. } | Error::Protocol { .. } | Error::InvalidInput(_) => {
            Observed::Failed
        }
    }
}
