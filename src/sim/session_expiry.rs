//! The `session_expiry` checker: sessions expire neither too early nor too late.
//!
//! - **Never early.** A session never expires before its guarantee: TTL of true time after the
//!   send of its last acknowledged renewal (a keepalive answered `kept_alive`, or the hello
//!   whose welcome created it). The servers promise TTL after they *received* the renewal,
//!   which came after the send, as long as every clock's rate stays within the drift bound
//!   (`docs/design.md`, "Sessions and leases"); the client's own lease ends before that. Writes
//!   renew a session on the leader too, but give the client no lease, so they do not count.
//! - **Not too late**, checked once the run has settled: a session whose client fell silent
//!   (paused, or gone) must have expired within the stated bound after it fell silent or after
//!   the faults stopped, whichever is later, if a majority of servers was up at the end.
//!
//! Times are true (simulated) time; sessions are the cluster's client ids.

use super::checkers::{SESSION_EXPIRY, Violation};
use crate::node::{ClientId, Time};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the checker knows of one session.
#[derive(Copy, Clone, Debug)]
struct SessionRecord {
    /// The scenario's number of the client the session belongs to.
    client: u32,
    /// True send time of its latest acknowledged renewal.
    renewed_sent_at: Time,
    /// True time of the last request the client sent under this session (any kind).
    last_request_at: Time,
    expired_at: Option<Time>,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct SessionExpiry {
    ttl: Duration,
    /// Renewals sent, by (client, seq): when, and the session a keepalive renews (a hello's
    /// session is named by its welcome).
    pending: BTreeMap<(u32, u64), (Time, Option<ClientId>)>,
    sessions: BTreeMap<ClientId, SessionRecord>,
    /// Expiries committed before any acknowledgement of their session reached its client (a
    /// welcome delayed past the end of the session it created): judged when one does.
    expired_early_seen: BTreeMap<ClientId, Time>,
}

/// Requests remembered while they wait for an answer, per run. Old ones are forgotten first:
/// a renewal answered that late only makes the checker more lenient.
const PENDING_MAX: usize = 100_000;

impl SessionExpiry {
    pub fn new(ttl: Duration) -> SessionExpiry {
        SessionExpiry {
            ttl,
            pending: BTreeMap::new(),
            sessions: BTreeMap::new(),
            expired_early_seen: BTreeMap::new(),
        }
    }

    /// Client `client` sent a hello (`session` `None`) or a keepalive of `session` with `seq`
    /// at `now`. A resend of the same seq keeps the first send: an answer may come from any.
    pub fn observe_renewal_sent(
        &mut self,
        now: Time,
        client: u32,
        seq: u64,
        session: Option<ClientId>,
    ) {
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_first();
        }
        self.pending.entry((client, seq)).or_insert((now, session));
    }

    /// Client `client` sent any request under session `session` at `now`.
    pub fn observe_request(&mut self, now: Time, session: ClientId) {
        if let Some(record) = self.sessions.get_mut(&session) {
            record.last_request_at = record.last_request_at.max(now);
        }
    }

    /// The answer to client `client`'s request `seq` acknowledged a renewal: a welcome that
    /// created session `welcomed`, or `kept_alive` (`welcomed` `None`) for the session the
    /// keepalive named.
    pub fn observe_renewal_acknowledged(
        &mut self,
        client: u32,
        seq: u64,
        welcomed: Option<ClientId>,
    ) -> Result<(), Violation> {
        let Some(&(sent_at, renewed)) = self.pending.get(&(client, seq)) else {
            return Ok(());
        };
        let Some(session) = welcomed.or(renewed) else {
            return Ok(());
        };
        let record = self.sessions.entry(session).or_insert(SessionRecord {
            client,
            renewed_sent_at: sent_at,
            last_request_at: sent_at,
            expired_at: None,
        });
        record.renewed_sent_at = record.renewed_sent_at.max(sent_at);
        record.last_request_at = record.last_request_at.max(sent_at);
        // The session may have ended before this answer arrived: judge that expiry now.
        match self.expired_early_seen.remove(&session) {
            Some(expired_at) => self.observe_expired(expired_at, session),
            None => Ok(()),
        }
    }

    /// The cluster committed the expiry of `session` at `now`.
    pub fn observe_expired(&mut self, now: Time, session: ClientId) -> Result<(), Violation> {
        let Some(record) = self.sessions.get_mut(&session) else {
            // No acknowledgement of it has reached its client yet; one may still come.
            self.expired_early_seen.entry(session).or_insert(now);
            return Ok(());
        };
        if record.expired_at.is_some() {
            return Ok(());
        }
        record.expired_at = Some(now);
        let guarantee = record.renewed_sent_at + self.ttl;
        if now < guarantee {
            return Err(Violation {
                invariant: SESSION_EXPIRY,
                at: now,
                message: format!(
                    "the session of c{} ({session}) expired at {now}, before its guarantee at \
                     {guarantee}: TTL {:?} after the send of its last acknowledged renewal at {}",
                    record.client, self.ttl, record.renewed_sent_at
                ),
            });
        }
        Ok(())
    }

    /// Sessions that fell silent and are still live: (session, client, silent since).
    fn silent(&self) -> impl Iterator<Item = (ClientId, SessionRecord)> + '_ {
        self.sessions
            .iter()
            .filter(|(_, record)| record.expired_at.is_none())
            .map(|(session, record)| (*session, *record))
    }

    /// Whether some live session is no longer renewed (`renewing(client, session)` false) and
    /// so must expire: the run should not settle before it does.
    pub fn awaits_expiry(&self, renewing: impl Fn(u32, ClientId) -> bool) -> bool {
        self.silent()
            .any(|(session, record)| !renewing(record.client, session))
    }

    /// At the end of a settled run at `now`: every session whose client is not renewing it
    /// (`renewing(client, session)` false) must have expired by `bound` after it fell silent or
    /// after `faults_stopped`, whichever is later.
    pub fn check_liveness(
        &self,
        now: Time,
        faults_stopped: Time,
        bound: Duration,
        renewing: impl Fn(u32, ClientId) -> bool,
    ) -> Result<(), Violation> {
        for (session, record) in self.silent() {
            if renewing(record.client, session) {
                continue;
            }
            let due = record.last_request_at.max(faults_stopped) + bound;
            if due <= now {
                return Err(Violation {
                    invariant: SESSION_EXPIRY,
                    at: now,
                    message: format!(
                        "the session of c{} ({session}), silent since {}, had not expired by \
                         {now}, {:?} past the stated bound of {bound:?} after it fell silent or \
                         the faults stopped",
                        record.client,
                        record.last_request_at,
                        now.saturating_since(due)
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Time {
        Time::from_duration(Duration::from_millis(millis))
    }

    fn checker_with_renewal_sent_at(sent_ms: u64) -> SessionExpiry {
        let mut checker = SessionExpiry::new(Duration::from_secs(3));
        checker.observe_renewal_sent(ms(sent_ms), 1, 7, None);
        checker
            .observe_renewal_acknowledged(1, 7, Some(ClientId(4)))
            .unwrap();
        checker
    }

    #[test]
    fn an_expiry_after_the_guarantee_is_fine() {
        let mut checker = checker_with_renewal_sent_at(1_000);
        checker.observe_expired(ms(4_000), ClientId(4)).unwrap();
    }

    #[test]
    fn an_expiry_before_ttl_after_the_last_acknowledged_send_is_caught() {
        let mut checker = checker_with_renewal_sent_at(1_000);
        let violation = checker
            .observe_expired(ms(3_999), ClientId(4))
            .expect_err("one millisecond early");
        assert_eq!(violation.invariant, SESSION_EXPIRY);
        assert!(
            violation.message.contains("before its guarantee"),
            "{violation:?}"
        );
    }

    #[test]
    fn an_unacknowledged_keepalive_guarantees_nothing() {
        let mut checker = checker_with_renewal_sent_at(1_000);
        checker.observe_renewal_sent(ms(2_000), 1, 8, Some(ClientId(4))); // never answered
        checker.observe_expired(ms(4_000), ClientId(4)).unwrap();
    }

    #[test]
    fn a_welcome_that_arrives_after_its_session_ended_is_judged_then() {
        let mut checker = SessionExpiry::new(Duration::from_secs(3));
        checker.observe_renewal_sent(ms(1_000), 1, 7, None);
        checker.observe_expired(ms(3_500), ClientId(4)).unwrap();
        let violation = checker
            .observe_renewal_acknowledged(1, 7, Some(ClientId(4)))
            .expect_err("expired 0.5 s before its guarantee");
        assert!(
            violation.message.contains("before its guarantee"),
            "{violation:?}"
        );
        let never_renewed = |_, _| false;
        checker
            .check_liveness(ms(60_000), ms(0), Duration::from_secs(4), never_renewed)
            .expect("it did expire");
    }

    #[test]
    fn a_silent_session_that_never_expires_is_caught_once_the_bound_has_passed() {
        let checker = checker_with_renewal_sent_at(1_000);
        let bound = Duration::from_millis(3_700);
        let not_renewing = |_, _| false;
        checker
            .check_liveness(ms(5_000), ms(2_000), bound, not_renewing)
            .expect("not due yet: the faults stopped at 2 s");
        let violation = checker
            .check_liveness(ms(5_800), ms(2_000), bound, not_renewing)
            .expect_err("due at 5.7 s");
        assert!(
            violation.message.contains("had not expired"),
            "{violation:?}"
        );
        checker
            .check_liveness(ms(9_000), ms(2_000), bound, |_, _| true)
            .expect("a client still renewing is not silent");
    }
}
