//! Keeping a session alive in the background while a [`Client`] does its work: a
//! [`SessionKeeper`] owns a thread with its own connections, acting as the same client (same
//! id and secret), that renews the session every TTL/3 and tells its owner how the lease
//! stands: alive until a time, in jeopardy, or lost.
//!
//! The lease is the client's own, by `node::client::LeaseRule` (counted from the send of the
//! last acknowledged keepalive, shortened by the drift bound and a margin). Losing it is
//! decided here, on this process's monotonic clock, and never undone: a holder that stopped
//! believing must not start again on a late answer. This module must never block its owner:
//! every wait is bounded, and [`SessionKeeper::state`] only reads.

use super::{Client, ClientOptions, Credential, Error, KeptAlive};
use crate::net::protocol::ErrorCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Renewals per TTL: a keepalive every TTL/3 leaves two more chances before the lease ends.
const RENEWALS_PER_TTL: u32 = 3;

/// How a session's lease stands, on this process's clock.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LeaseState {
    /// The last renewal was acknowledged; the session may be believed alive until `until`.
    Alive { until: Instant },
    /// The last renewal failed (`failure` says why), but the lease still holds until `until`.
    /// The keeper keeps trying.
    Jeopardy { until: Instant, failure: String },
    /// The session has no TTL: it never expires, and nothing needs renewing.
    Unbounded,
    /// The lease is over for good: stop acting as the holder of this client's locks.
    Lost(Lost),
}

/// Why a lease was lost.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Lost {
    /// By the client's own rule the lease ran out, at `at`, before a renewal was acknowledged.
    /// The cluster may not have expired the session yet (the rule is conservative), but nothing
    /// any longer says it has not. `failure` is the last renewal's error, if one failed.
    LeaseRanOut {
        at: Instant,
        failure: Option<String>,
    },
    /// The cluster answered `session_expired`: it has released this client's locks.
    SessionExpired,
    /// The cluster refused the renewal for good (`unauthorized`, `unknown_client`, ...).
    Refused { message: String },
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::LeaseRanOut { failure, .. } => {
                write!(
                    f,
                    "the session's lease ran out by this client's own clock (its TTL, \
                     shortened by the clock drift bound and a margin) with no renewal \
                     acknowledged"
                )?;
                match failure {
                    Some(failure) => write!(f, "; the last renewal failed: {failure}"),
                    None => Ok(()),
                }
            }
            Lost::SessionExpired => write!(
                f,
                "the cluster answered session_expired: it heard no renewal within the TTL \
                 and released this client's locks"
            ),
            Lost::Refused { message } => {
                write!(f, "the cluster refused to renew the session: {message}")
            }
        }
    }
}

/// What the keeper knows, shared between its thread and its owner. Pure: every method takes
/// `now`, so that the rules are tested without a clock or a cluster.
#[derive(Clone, Debug)]
struct Record {
    /// Until when the lease holds; `None` for a session without a TTL.
    until: Option<Instant>,
    /// The last renewal's error, cleared by the next acknowledged one.
    failure: Option<String>,
    /// Set once, never cleared.
    lost: Option<Lost>,
    /// Acknowledged renewals since the keeper started.
    renewals: u64,
}

impl Record {
    fn new(kept: KeptAlive) -> Record {
        Record {
            until: kept.valid_until,
            failure: None,
            lost: None,
            renewals: 0,
        }
    }

    /// The lease as it stands at `now`; notes the loss if the lease has just run out.
    fn state(&mut self, now: Instant) -> LeaseState {
        if let Some(lost) = &self.lost {
            return LeaseState::Lost(lost.clone());
        }
        let Some(until) = self.until else {
            return LeaseState::Unbounded;
        };
        if now >= until {
            self.lose(Lost::LeaseRanOut {
                at: until,
                failure: self.failure.clone(),
            });
            return self.state(now);
        }
        match &self.failure {
            None => LeaseState::Alive { until },
            Some(failure) => LeaseState::Jeopardy {
                until,
                failure: failure.clone(),
            },
        }
    }

    /// A renewal answered at `now` grants the lease until `valid_until`. It comes too late if
    /// the lease had already run out: the owner may have stopped believing by then.
    fn renewed(&mut self, valid_until: Option<Instant>, now: Instant) {
        if let LeaseState::Lost(_) = self.state(now) {
            return;
        }
        self.renewals += 1;
        self.failure = None;
        // A lease never moves back: a slow answer to an earlier send grants less than the
        // lease already held.
        self.until = match (self.until, valid_until) {
            (Some(held), Some(granted)) => Some(held.max(granted)),
            (_, granted) => granted,
        };
    }

    /// A renewal failed: jeopardy while the lease holds, or lost for good on a refusal.
    fn failed(&mut self, error: &Error) {
        match error {
            Error::Rejected {
                code: ErrorCode::SessionExpired,
                ..
            } => self.lose(Lost::SessionExpired),
            Error::Rejected { .. } => self.lose(Lost::Refused {
                message: error.to_string(),
            }),
            _ => self.failure = Some(error.to_string()),
        }
    }

    fn lose(&mut self, lost: Lost) {
        if self.lost.is_none() {
            self.lost = Some(lost);
        }
    }
}

/// The state the keeper's thread and its owner share.
struct Shared {
    record: Mutex<Record>,
    /// Set by `Drop`; the thread ends at its next look.
    stop: Mutex<bool>,
    /// Wakes the thread from its wait between renewals when `stop` is set.
    wake: Condvar,
}

/// Keeps a client's session alive from a thread of its own, and tells how the lease stands.
/// Start one with [`Client::keep_session_alive`].
///
/// # Calling contract
/// - The keeper acts as the same client as the [`Client`] it came from (same id and secret)
///   over its own connections, so the client stays free for one operation at a time, as
///   always. Keepalives carry no seq rule on the server, so the two never collide.
/// - It renews every TTL/3 after the previous answer; a failed renewal is retried after the
///   client's `error_backoff`, each renewal bounded by the smaller of TTL/3 and the client's
///   `operation_timeout`.
/// - Before acting as the holder of a lock (writing to what it protects), the owner SHOULD
///   look at [`SessionKeeper::state`]: act only while it is `Alive` or `Jeopardy` (or
///   `Unbounded`), and pass the fencing token anyway, since a lease cannot promise what a
///   paused process does after looking.
/// - `Lost` is final: the keeper stops, and the client's id is done with (after
///   `session_expired` the cluster refuses it; say hello again with a new `Client`). The
///   keeper never releases locks itself: after a loss they may already be someone else's.
/// - Dropping the keeper stops its thread and joins it: at most one renewal's bound (above).
pub struct SessionKeeper {
    shared: Arc<Shared>,
    ttl: Option<Duration>,
    thread: Option<JoinHandle<()>>,
}

impl SessionKeeper {
    /// A keeper for `credential`'s session, whose last renewal (by the caller) was `kept`.
    /// Without a TTL there is nothing to renew and no thread is started.
    pub(super) fn start(
        servers: Vec<String>,
        options: &ClientOptions,
        credential: Credential,
        kept: KeptAlive,
    ) -> Result<SessionKeeper, Error> {
        let shared = Arc::new(Shared {
            record: Mutex::new(Record::new(kept)),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let Some(ttl) = kept.ttl else {
            return Ok(SessionKeeper {
                shared,
                ttl: None,
                thread: None,
            });
        };
        // Whole milliseconds, so that messages that quote it read as an operator writes it.
        let interval = Duration::from_millis(
            u64::try_from((ttl / RENEWALS_PER_TTL).as_millis()).unwrap_or(u64::MAX),
        )
        .max(Duration::from_millis(1));
        let renewal_timeout = options
            .operation_timeout
            .min(interval)
            .max(Duration::from_millis(1));
        let keeper_options = ClientOptions {
            operation_timeout: renewal_timeout,
            attempt_timeout: options.attempt_timeout.min(renewal_timeout),
            credential: Some(credential),
            ..options.clone()
        };
        let client = Client::new(servers, keeper_options)?;
        let backoff = options.error_backoff.max(Duration::from_millis(1));
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("lockstep-keepalive".into())
            .spawn(move || renew_until_stopped(client, &thread_shared, interval, backoff))
            .map_err(|error| {
                Error::InvalidInput(format!("cannot start the keepalive thread: {error}"))
            })?;
        Ok(SessionKeeper {
            shared,
            ttl: Some(ttl),
            thread: Some(thread),
        })
    }

    /// How the lease stands now.
    pub fn state(&self) -> LeaseState {
        lock(&self.shared.record).state(Instant::now())
    }

    /// The session's TTL, as the cluster reported it; `None` for a session that never expires.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Renewals acknowledged since the keeper started (the first, by the caller, not counted).
    pub fn renewals(&self) -> u64 {
        lock(&self.shared.record).renewals
    }
}

impl Drop for SessionKeeper {
    fn drop(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panic in the thread is a bug already reported on stderr; the owner goes on.
            let _ = thread.join();
        }
    }
}

/// The keeper's thread: renew, note the answer, wait, until stopped or the lease is lost.
/// Bounded by `stop` and by the loss, which comes at the latest when the lease runs out.
fn renew_until_stopped(mut client: Client, shared: &Shared, interval: Duration, backoff: Duration) {
    let mut next_at = Instant::now() + interval;
    loop {
        if !wait_until(shared, next_at) {
            return;
        }
        let result = client.keepalive();
        let now = Instant::now();
        let mut record = lock(&shared.record);
        next_at = match &result {
            Ok(kept) => {
                record.renewed(kept.valid_until, now);
                now + interval
            }
            Err(error) => {
                record.failed(error);
                now + backoff
            }
        };
        if let LeaseState::Lost(_) | LeaseState::Unbounded = record.state(now) {
            return;
        }
    }
}

/// Waits until `at` or a stop; true if it is time to renew, false if stopped.
fn wait_until(shared: &Shared, at: Instant) -> bool {
    let mut stopped = lock(&shared.stop);
    // Bounded by `at`: spurious wake-ups loop back to a shorter wait.
    loop {
        if *stopped {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        stopped = shared
            .wake
            .wait_timeout(stopped, at - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// The mutex's guard, also after a panic elsewhere: the record stays meaningful, since every
/// change to it is a single assignment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(ttl_ms: u64, until: Instant) -> KeptAlive {
        KeptAlive {
            ttl: Some(Duration::from_millis(ttl_ms)),
            valid_until: Some(until),
        }
    }

    fn timed_out() -> Error {
        Error::TimedOut {
            effect_unknown: false,
            timeout: Duration::from_millis(500),
        }
    }

    #[test]
    fn a_renewed_lease_is_alive_until_its_end_then_lost_for_good() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut record = Record::new(kept(3_000, start + 3 * second));
        assert_eq!(
            record.state(start),
            LeaseState::Alive {
                until: start + 3 * second
            }
        );
        record.renewed(Some(start + 4 * second), start + second);
        assert_eq!(record.renewals, 1);
        assert_eq!(
            record.state(start + 3 * second),
            LeaseState::Alive {
                until: start + 4 * second
            }
        );
        let LeaseState::Lost(Lost::LeaseRanOut { at, failure: None }) =
            record.state(start + 4 * second)
        else {
            panic!("the lease ends at its end: {:?}", record.state(start));
        };
        assert_eq!(at, start + 4 * second);
        // An answer that arrives after the end does not bring the lease back.
        record.renewed(Some(start + 9 * second), start + 5 * second);
        assert!(matches!(
            record.state(start + 5 * second),
            LeaseState::Lost(_)
        ));
        assert_eq!(record.renewals, 1);
    }

    #[test]
    fn a_failed_renewal_is_jeopardy_while_the_lease_holds_and_names_the_failure_when_it_ends() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut record = Record::new(kept(3_000, start + 3 * second));
        record.failed(&timed_out());
        let LeaseState::Jeopardy { until, failure } = record.state(start + second) else {
            panic!("jeopardy: {:?}", record.state(start + second));
        };
        assert_eq!(until, start + 3 * second);
        assert!(failure.contains("no answer"), "{failure}");
        // A renewal that gets through ends the jeopardy.
        record.renewed(Some(start + 5 * second), start + 2 * second);
        assert_eq!(
            record.state(start + 2 * second),
            LeaseState::Alive {
                until: start + 5 * second
            }
        );
        record.failed(&timed_out());
        let LeaseState::Lost(lost) = record.state(start + 6 * second) else {
            panic!("lost after the end");
        };
        assert!(
            matches!(&lost, Lost::LeaseRanOut { failure: Some(f), .. } if f.contains("no answer"))
        );
        assert!(
            lost.to_string().contains("the last renewal failed"),
            "{lost}"
        );
    }

    #[test]
    fn session_expired_and_refusals_lose_the_lease_at_once_while_other_errors_do_not() {
        let start = Instant::now();
        let until = start + Duration::from_secs(10);
        let mut record = Record::new(kept(10_000, until));
        record.failed(&Error::NoServerReachable { tried: vec![] });
        assert!(matches!(record.state(start), LeaseState::Jeopardy { .. }));
        record.failed(&Error::Rejected {
            code: ErrorCode::SessionExpired,
            message: "expired".into(),
        });
        assert_eq!(record.state(start), LeaseState::Lost(Lost::SessionExpired));
        // The first loss is the one reported.
        record.failed(&Error::Rejected {
            code: ErrorCode::Unauthorized,
            message: "no".into(),
        });
        assert_eq!(record.state(start), LeaseState::Lost(Lost::SessionExpired));

        let mut refused = Record::new(kept(10_000, until));
        refused.failed(&Error::Rejected {
            code: ErrorCode::Unauthorized,
            message: "wrong secret".into(),
        });
        let LeaseState::Lost(Lost::Refused { message }) = refused.state(start) else {
            panic!("a refusal loses the lease");
        };
        assert!(message.contains("unauthorized"), "{message}");
    }

    #[test]
    fn a_slow_answer_never_moves_the_lease_back_and_a_session_without_ttl_is_unbounded() {
        let start = Instant::now();
        let mut record = Record::new(kept(3_000, start + Duration::from_secs(3)));
        record.renewed(Some(start + Duration::from_secs(2)), start);
        assert_eq!(
            record.state(start),
            LeaseState::Alive {
                until: start + Duration::from_secs(3)
            }
        );
        let mut forever = Record::new(KeptAlive {
            ttl: None,
            valid_until: None,
        });
        assert_eq!(
            forever.state(start + Duration::from_secs(86_400)),
            LeaseState::Unbounded
        );
    }
}
