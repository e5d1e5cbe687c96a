//! The blocking acquire and its cancel, over TCP (docs/PROTOCOL.md, `acquire`).
//!
//! An acquire that waits is silent until its wait is decided, so silence does not mean a lost
//! request here: the client resends the same seq only every [`ACQUIRE_RESEND_AFTER`] (to
//! the next server, in case the one it waits on lost its leadership or the forward was lost),
//! and gives up only `wait` plus [`ClientOptions::operation_timeout`] after it started. Every
//! resend is the same seq, so it finds the client's place in the line (or its decision) and
//! never takes a second one.
//!
//! [`ClientOptions::operation_timeout`]: super::ClientOptions::operation_timeout

use super::{Check, Client, Credential, Error, Pace, Release};
use crate::net::protocol::{ACQUIRE_WAIT_MS_MAX, Answer, WireOp};
use crate::node::{Claim, Consistency, LockName, LogIndex, Outcome};
use std::time::{Duration, Instant};

/// Silence after which a waiting acquire is sent again (same seq): long enough that a wait
/// costs the cluster next to nothing, short enough that a wait parked on a deposed leader
/// moves on to the new one within a couple of seconds.
pub const ACQUIRE_RESEND_AFTER: Duration = Duration::from_secs(2);

/// The answer to an acquire.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Acquire {
    /// You hold the lock, at once or after waiting in its line; `token` is its fencing token.
    Granted { token: LogIndex },
    /// Only with a wait of zero: another client holds the lock (or, for a shared claim, the
    /// holders leave no room); `owner` is its earliest-granted holder.
    HeldBy { owner: crate::node::ClientId },
    /// The lock is in use with other permits than the claim named (`None`: a plain lock). Not
    /// queued; nothing changed. See [`Client::preempt_with`].
    PermitsMismatch { permits: Option<u32> },
    /// The wait ran out before the lock came to you: you left the line and will not be
    /// granted by this acquire.
    TimedOut,
    /// The wait was stopped: by [`Client::acquire_until`]'s stop condition, or by a `cancel`
    /// or another write of this client id from elsewhere.
    Cancelled,
}

/// The answer to a cancel.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Cancel {
    /// It took this client out of the lock's line; the waiting acquire is answered
    /// `cancelled`.
    Cancelled,
    /// This client was not waiting for that lock: nothing changed.
    NotWaiting,
}

impl Client {
    /// Takes lock `name`, waiting in its fair (FIFO) line for up to `wait` while another
    /// client holds it (zero tries once, like [`Client::preempt`]). Blocks until the wait is
    /// decided. With a session TTL, a [`super::SessionKeeper`] renews the session for as long
    /// as the wait lasts, so that waiting longer than the TTL does not expire it.
    ///
    /// Errors: `wait` over one hour ([`ACQUIRE_WAIT_MS_MAX`]) is [`Error::InvalidInput`];
    /// `session_expired` is an [`Error::Rejected`]; no decision within `wait` plus the
    /// operation timeout is [`Error::TimedOut`] (the client may still be in the line until
    /// its wait runs out on the cluster, or may even have been granted).
    pub fn acquire(&mut self, name: &str, wait: Duration) -> Result<Acquire, Error> {
        self.acquire_with(name, wait, Claim::EXCLUSIVE)
    }

    /// [`Client::acquire`] under `claim`: [`Claim::SHARED`] waits to read beside other
    /// readers, [`Claim::semaphore`]`(n)` for one of `n` permits (see
    /// [`Client::preempt_with`]). One FIFO line serves every mode: a shared claim queued behind
    /// a waiting writer waits for it, so writers are not starved. Each holder granted gets its
    /// own token; shared waiters handed the lock by one release share that release's index.
    pub fn acquire_with(
        &mut self,
        name: &str,
        wait: Duration,
        claim: Claim,
    ) -> Result<Acquire, Error> {
        let _keeper = match self.options.session_ttl {
            Some(_) if !wait.is_zero() => Some(self.keep_session_alive()?),
            _ => None,
        };
        self.acquire_with_until(name, wait, claim, &mut || false)
    }

    /// [`Client::acquire`] that also ends when `stop` returns true (looked at every 20 ms
    /// while waiting): it then cancels the wait and returns how the acquire ended, which is
    /// [`Acquire::Cancelled`], or [`Acquire::Granted`] / [`Acquire::TimedOut`] if the wait was
    /// decided before the cancel reached the line. Keeps no session alive: the caller runs
    /// its own [`super::SessionKeeper`] (and may stop on its lease, say).
    pub fn acquire_until(
        &mut self,
        name: &str,
        wait: Duration,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Acquire, Error> {
        self.acquire_with_until(name, wait, Claim::EXCLUSIVE, stop)
    }

    /// [`Client::acquire_until`] under `claim` (see [`Client::acquire_with`]).
    pub fn acquire_with_until(
        &mut self,
        name: &str,
        wait: Duration,
        claim: Claim,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Acquire, Error> {
        super::modes::check_claim(claim)?;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        if wait_ms > ACQUIRE_WAIT_MS_MAX {
            return Err(Error::InvalidInput(format!(
                "a wait of {wait:?} is over the protocol's limit of {ACQUIRE_WAIT_MS_MAX} ms (one \
                 hour); acquire again when a wait runs out"
            )));
        }
        super::validate_lock_name(name).map_err(Error::InvalidInput)?;
        let deadline = Instant::now() + wait + self.options.operation_timeout;
        let credential = self.ensure_registered(deadline)?;
        let lock = LockName::from(name);
        let op = WireOp::Acquire {
            client: credential.id,
            secret: Some(credential.secret),
            lock: lock.clone(),
            wait_ms,
            claim,
        };
        let seq = self.next_seq();
        let pace = Pace {
            resend_after: self.options.attempt_timeout.max(ACQUIRE_RESEND_AFTER),
            stop: Some(stop),
        };
        let answered = match self.exchange_paced(&op, seq, deadline, pace) {
            // The time it had was the wait and the operation timeout, not the latter alone.
            Err(Error::TimedOut { effect_unknown, .. }) => Err(Error::TimedOut {
                effect_unknown,
                timeout: wait + self.options.operation_timeout,
            }),
            other => other,
        };
        let answered = match answered {
            Err(error) => match super::modes::permits_mismatch(&error) {
                Some(permits) => return Ok(Acquire::PermitsMismatch { permits }),
                None => return Err(error),
            },
            Ok(answered) => answered,
        };
        match answered {
            Some((_, Answer::Outcome(outcome))) => Ok(acquired(outcome)),
            Some((_, answer)) => unreachable!("client: {answer:?} accepted for an acquire"),
            None => self.cancel_stopped_wait(credential, name),
        }
    }

    /// Takes this client out of lock `name`'s line. Another thread or process acting as the
    /// same client id uses it to stop a waiting [`Client::acquire`] (which then returns
    /// [`Acquire::Cancelled`]); a wait of this very `Client` is stopped with
    /// [`Client::acquire_until`].
    pub fn cancel(&mut self, name: &str) -> Result<Cancel, Error> {
        let op = |Credential { id, secret }, lock| WireOp::Cancel {
            client: id,
            secret: Some(secret),
            lock,
        };
        match self.run(name, op)? {
            Outcome::Cancelled => Ok(Cancel::Cancelled),
            Outcome::NotWaiting => Ok(Cancel::NotWaiting),
            other => unreachable!("client: {other:?} was accepted as a cancel's answer"),
        }
    }

    /// The stop condition ended a wait: cancel it, and if the cancel found no wait (it was
    /// decided first, and a retry of the acquire would now be stale), find out from the lock
    /// itself whether it was granted. This client runs one operation at a time, so nobody
    /// released a lock it was granted in between.
    fn cancel_stopped_wait(
        &mut self,
        credential: Credential,
        name: &str,
    ) -> Result<Acquire, Error> {
        match self.cancel(name)? {
            Cancel::Cancelled => Ok(Acquire::Cancelled),
            Cancel::NotWaiting => match self.check(name, Consistency::Linearizable)? {
                Check::Owner { owner, token } if owner == credential.id => {
                    Ok(Acquire::Granted { token })
                }
                Check::Owner { .. } | Check::Free => Ok(Acquire::TimedOut),
                // A check of a shared lock counts its holders without naming them: give back
                // a grant that may have come just before the cancel, as the stop asked.
                Check::Shared { .. } => match self.release(name)? {
                    Release::Released => Ok(Acquire::Cancelled),
                    Release::NotOwner => Ok(Acquire::TimedOut),
                },
            },
        }
    }
}

/// An acquire's answer as the library gives it; `judge_line` accepts no other outcome.
fn acquired(outcome: Outcome) -> Acquire {
    match outcome {
        Outcome::Granted { token } => Acquire::Granted { token },
        Outcome::HeldBy { owner } => Acquire::HeldBy { owner },
        Outcome::TimedOut => Acquire::TimedOut,
        Outcome::Cancelled => Acquire::Cancelled,
        other => unreachable!("client: {other:?} was accepted as an acquire's answer"),
    }
}
