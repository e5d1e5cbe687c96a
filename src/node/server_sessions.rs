//! Sessions on the server: keepalives, deadlines, silent marks, expiry and lock-delay.
//!
//! What is replicated and what is not (docs/design.md, "Sessions and leases", has the
//! argument):
//! - The log holds the decisions: a session's TTL (in `Register`), its expiry (`Expire`), and
//!   the rare facts a later leader needs to expire a dead client's session on time
//!   (`MarkSilent`, `Revive`).
//! - Deadlines are the leader's volatile business, on its own clock. A keepalive costs no log
//!   entry and no fsync: the leader answers it after a heartbeat round, started after it
//!   arrived, confirms it still leads (as a read-index read does).
//! - Every duration the leader measures is converted conservatively for clock drift
//!   (`ServerConfig::max_clock_drift`): a wait is stretched by `1 + drift`, a measured silence
//!   shrunk by it.
//!
//! This is a child module of `server` so that it can keep the server's fields private; it must
//! never read a clock: `now` comes with every call.

use super::{ReadWaiter, ReplyRoute, Role, Server, ServerConfig};
use crate::node::coverage::Branch;
use crate::node::messages::{
    ClientId, ClientSecret, Command, LockName, LogIndex, ReplyBody, ServiceError, SilentSession,
};
use crate::node::time::{Time, duration_nanos};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

/// A session's deadline as the leader tracks it.
///
/// Invariant (the safety argument rests on it): every renewal that any leader acknowledged
/// without a later `Revive` in this leader's log was received no later, in true time, than
/// `offset` before the true time at which this leader's clock read `anchor`. The deadline is
/// therefore `anchor + (ttl - offset) × (1 + drift)` on this leader's clock.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaderSession {
    ttl: Duration,
    anchor: Time,
    offset: Duration,
    /// A silent mark of the current silence is in the log (this leader's, or an earlier one it
    /// holds the receipt time of): no need to mark again until the next renewal.
    marked: bool,
    /// This leader appended the session's expire; it waits to commit.
    expire_appended: bool,
}

/// A keepalive whose leadership round is confirmed, waiting for this server to apply
/// `serve_index` (the log's end when it arrived, or the revive it needed).
#[derive(Clone, Debug)]
pub(super) struct KeepaliveWaiter {
    pub(super) route: ReplyRoute,
    pub(super) seq: u64,
    pub(super) client: ClientId,
    pub(super) serve_index: LogIndex,
    /// The revive this keepalive waits for, once it needed one.
    pub(super) revive: Option<LogIndex>,
}

/// The server's session state: `receipts` on every server, the rest on the leader only.
#[derive(Clone, Debug, Default)]
pub(super) struct SessionState {
    /// Leader only: deadlines, once `ready`.
    leaders: BTreeMap<ClientId, LeaderSession>,
    /// Leader only: this leader applied its own first entry, so the table holds every
    /// committed session decision and deadlines are set up.
    ready: bool,
    /// Leader only: when this server became leader, and the index of its no-op.
    takeover_at: Time,
    noop_index: LogIndex,
    /// Leader only: when each lock freed by expiry may be granted again (its clock).
    lock_delay_until: BTreeMap<LockName, Time>,
    /// Leader only: when deadlines and silences are next looked at.
    next_tick: Time,
    /// Leader only: keepalives confirmed by a round, waiting for their serve index.
    pub(super) keepalives: Vec<KeepaliveWaiter>,
    /// Every server: its own clock when it appended each `MarkSilent` entry to its log.
    /// Volatile: a restarted server has none and falls back to its takeover time.
    receipts: BTreeMap<LogIndex, Time>,
    /// The last tracked session `check_session_invariants` paired with the table: it checks
    /// a window of [`SESSION_CHECKS_PER_STEP`] after this one each step. Only the checker
    /// reads it; a `Cell` so that checking stays `&self`.
    check_cursor: Cell<Option<ClientId>>,
}

/// Most tracked sessions paired with the table after one step. A simulation's few dozen are
/// all checked every step; a server with 10,000 live sessions checks a rotating window, so
/// that the check costs the same per step whatever the number of sessions (checking them all
/// cost 83% of a leader's CPU at 10,000 sessions renewing) and still visits each one every
/// `sessions / SESSION_CHECKS_PER_STEP` steps.
const SESSION_CHECKS_PER_STEP: usize = 64;
/// Most sessions one `MarkSilent` entry carries; the rest wait for the next heartbeat.
const SILENT_MARKS_PER_ENTRY_MAX: usize = 1_024;
/// Most expires one heartbeat appends.
const EXPIRES_PER_TICK_MAX: usize = 1_024;
/// Past this many receipts, those no session's mark refers to are dropped.
const RECEIPTS_MAX: usize = 1_024;

/// `duration` stretched by the drift bound: waiting this long on a clock whose rate is within
/// `1 ± drift` lasts at least `duration` of true time.
pub fn stretch(duration: Duration, drift: f64) -> Duration {
    Duration::from_nanos((duration_nanos(duration) as f64 * (1.0 + drift)).ceil() as u64)
}

/// `duration`, measured on a clock whose rate is within `1 ± drift`, shrunk to the true time
/// it at least lasted.
pub fn shrink(duration: Duration, drift: f64) -> Duration {
    Duration::from_nanos((duration_nanos(duration) as f64 / (1.0 + drift)).floor() as u64)
}

/// Why a hello's `ttl_ms` is refused, if it is: outside the server's bounds.
pub(super) fn bad_ttl(ttl_ms: Option<u64>, config: &ServerConfig) -> Option<String> {
    let ttl_ms = ttl_ms?;
    let min_ms = config.session_ttl_min.as_millis();
    let max_ms = config.session_ttl_max.as_millis();
    (!(min_ms..=max_ms).contains(&u128::from(ttl_ms))).then(|| {
        format!("ttl_ms {ttl_ms} is outside this server's session TTL bounds, {min_ms} to {max_ms}")
    })
}

#[cfg(test)]
impl Server {
    /// Tests only: tracks a deadline for `client` whatever the table holds: the corruption
    /// `check_sessions_tracked_are_live` exists to catch.
    pub(super) fn track_session_unchecked(&mut self, client: ClientId, ttl: Duration, now: Time) {
        self.sessions
            .leaders
            .insert(client, LeaderSession::fresh(ttl, now));
    }
}

impl LeaderSession {
    fn fresh(ttl: Duration, now: Time) -> LeaderSession {
        LeaderSession {
            ttl,
            anchor: now,
            offset: Duration::ZERO,
            marked: false,
            expire_appended: false,
        }
    }

    /// When this leader may expire the session, on its own clock.
    fn deadline(&self, drift: f64) -> Time {
        self.anchor + stretch(self.ttl.saturating_sub(self.offset), drift)
    }

    /// How long, in true time at least, no renewal has been received.
    fn silence(&self, now: Time, drift: f64) -> Duration {
        self.offset + shrink(now.saturating_since(self.anchor), drift)
    }
}

impl Server {
    // ----- keepalives -----

    /// Leader: a keepalive from `client`. Answered `KeptAlive` once a round started after it
    /// arrived confirms this server still leads and the log's end at arrival is applied; a
    /// session marked silent is first revived through the log.
    pub(super) fn on_keepalive(
        &mut self,
        now: Time,
        route: ReplyRoute,
        seq: u64,
        client: ClientId,
        secret: Option<ClientSecret>,
    ) {
        if let Err(error) = self.authenticate(client, secret) {
            self.coverage.hit(Branch::ProposeUnauthenticated);
            self.reply(route, seq, ReplyBody::Error(error));
            return;
        }
        if self.table.session_expired(client) {
            self.coverage.hit(Branch::KeepaliveSessionExpired);
            let body = ReplyBody::Error(ServiceError::SessionExpired { client });
            self.reply(route, seq, body);
            return;
        }
        if !self.sessions.ready {
            // Deadlines are not set up yet, so this renewal could not be recorded: an answer
            // now could outlive what a later leader knows. The client retries in a moment.
            self.coverage.hit(Branch::KeepaliveBeforeReady);
            self.reply(route, seq, ReplyBody::Error(ServiceError::Unavailable));
            return;
        }
        if self.pending_read_count() >= self.config.pending_reads_max {
            self.reply(route, seq, ReplyBody::Error(ServiceError::Overloaded));
            return;
        }
        self.renew_session(client, now);
        self.coverage.hit(Branch::KeepaliveRoundStarted);
        let waiter = KeepaliveWaiter {
            route,
            seq,
            client,
            serve_index: self.log.last_index(),
            revive: None,
        };
        self.start_read(now, ReadWaiter::Keepalive(waiter));
    }

    /// Leader: answers the confirmed keepalives whose serve index is applied.
    pub(super) fn serve_keepalives(&mut self) {
        let applied = self.table.applied_index();
        if self.role != Role::Leader
            || self
                .sessions
                .keepalives
                .iter()
                .all(|k| k.serve_index > applied)
        {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sessions.keepalives)
            .into_iter()
            .partition(|k| k.serve_index <= applied);
        self.sessions.keepalives = waiting;
        for keepalive in ready {
            self.decide_keepalive(keepalive);
        }
    }

    fn decide_keepalive(&mut self, mut keepalive: KeepaliveWaiter) {
        let (route, seq, client) = (keepalive.route, keepalive.seq, keepalive.client);
        let session = self.table.session(client);
        if session.is_some_and(|session| session.expired.is_some()) {
            self.coverage.hit(Branch::KeepaliveSessionExpired);
            let body = ReplyBody::Error(ServiceError::SessionExpired { client });
            self.reply(route, seq, body);
            return;
        }
        let marked = session.is_some_and(|session| session.silent.is_some());
        if marked && keepalive.revive.is_none() {
            // A mark this renewal came after: a later leader that saw only the mark would
            // count the deadline from before this renewal. Revive first, answer once the
            // revive is applied (it is committed in this leader's term, after the arrival).
            let pending = self.pending_revive(client);
            let Some(index) =
                pending.or_else(|| self.append_session_entry(Command::Revive { client }))
            else {
                self.reply(route, seq, ReplyBody::Error(ServiceError::Overloaded));
                return;
            };
            self.coverage.hit(Branch::KeepaliveRevived);
            keepalive.revive = Some(index);
            keepalive.serve_index = keepalive.serve_index.max(index);
            self.sessions.keepalives.push(keepalive);
            return;
        }
        self.coverage.hit(Branch::KeepaliveAcknowledged);
        let ttl_ms = session.map(|session| session.ttl_ms);
        self.reply(route, seq, ReplyBody::KeptAlive { ttl_ms });
    }

    /// A revive of `client` in the unapplied log (this leader's own: it is ready).
    fn pending_revive(&self, client: ClientId) -> Option<LogIndex> {
        self.log
            .entries_after(self.table.applied_index())
            .find(|(_, entry)| entry.command == Command::Revive { client })
            .map(|(index, _)| index)
    }

    /// Leader: a renewal from `client` received at `now` (a keepalive, or any write): its
    /// deadline restarts. Volatile only; extending a deadline is always safe.
    pub(super) fn renew_session(&mut self, client: ClientId, now: Time) {
        if let Some(session) = self.sessions.leaders.get_mut(&client)
            && !session.expire_appended
        {
            session.anchor = now;
            session.offset = Duration::ZERO;
            session.marked = false;
        }
    }

    // ----- leadership -----

    /// A new leader: no deadlines until it has applied its own no-op at `noop_index`.
    pub(super) fn sessions_on_leadership(&mut self, now: Time, noop_index: LogIndex) {
        let receipts = std::mem::take(&mut self.sessions.receipts);
        self.sessions = SessionState {
            takeover_at: now,
            noop_index,
            receipts,
            ..SessionState::default()
        };
    }

    /// Leadership lost: keepalives waiting are told to retry; deadlines are forgotten.
    pub(super) fn sessions_on_abdication(&mut self) -> Vec<KeepaliveWaiter> {
        self.sessions.leaders.clear();
        self.sessions.lock_delay_until.clear();
        self.sessions.ready = false;
        std::mem::take(&mut self.sessions.keepalives)
    }

    /// Leader, after applying: once its own no-op is applied, every committed decision of
    /// earlier leaders is in the table. Each live session's deadline then starts at the
    /// takeover (always safe: every renewal an earlier leader acknowledged arrived before it),
    /// or, when the session is marked silent and this server noted when it appended the mark,
    /// from that receipt minus the silence the mark states, whichever ends sooner.
    pub(super) fn maybe_ready_sessions(&mut self, now: Time) {
        if self.role != Role::Leader
            || self.sessions.ready
            || self.table.applied_index() < self.sessions.noop_index
        {
            return;
        }
        self.coverage.hit(Branch::SessionsReady);
        self.sessions.ready = true;
        let drift = self.config.max_clock_drift;
        let takeover = self.sessions.takeover_at;
        let mut leaders = BTreeMap::new();
        for (&client, session) in self.table.sessions() {
            if session.expired.is_some() {
                continue;
            }
            let ttl = Duration::from_millis(session.ttl_ms);
            let mut tracked = LeaderSession::fresh(ttl, takeover);
            let receipt = session
                .silent
                .and_then(|mark| Some((mark, *self.sessions.receipts.get(&mark.index)?)));
            if let Some((mark, receipt)) = receipt {
                let from_mark = LeaderSession {
                    anchor: receipt,
                    offset: Duration::from_millis(mark.silent_ms),
                    marked: true,
                    ..tracked
                };
                if from_mark.deadline(drift) <= tracked.deadline(drift) {
                    self.coverage.hit(Branch::SessionsFromSilentMark);
                    tracked = from_mark;
                }
            }
            leaders.insert(client, tracked);
        }
        self.sessions.leaders = leaders;
        // Lock-delay restarts for every lock still listed: an expire this leader did not see
        // applied took effect no later than now, when it has applied it.
        let delay_end = now + stretch(self.config.lock_delay, drift);
        self.sessions.lock_delay_until = self
            .table
            .freed_by_expiry()
            .keys()
            .map(|lock| (lock.clone(), delay_end))
            .collect();
    }

    // ----- the heartbeat's work: marks and expiries -----

    /// Leader, at every step but at most once per heartbeat interval: appends an expire for
    /// every session past its deadline, and one silent mark for the sessions that went silent
    /// for half their TTL (longer than a healthy client's renewal interval of TTL/3, so that
    /// marks, and the revives they cost, are rare). Every step, not only the heartbeat timer:
    /// a leader busy with read rounds keeps pushing its heartbeat deadline back, and a flood
    /// of keepalives must not starve expiry.
    pub(super) fn tick_sessions(&mut self, now: Time) {
        if self.role != Role::Leader
            || !self.sessions.ready
            || self.sessions.leaders.is_empty()
            || now < self.sessions.next_tick
        {
            return;
        }
        self.sessions.next_tick = now + self.config.heartbeat_interval;
        let drift = self.config.max_clock_drift;
        self.sessions
            .lock_delay_until
            .retain(|_, until| now < *until);
        let due: Vec<ClientId> = self
            .sessions
            .leaders
            .iter()
            .filter(|(_, s)| !s.expire_appended && now >= s.deadline(drift))
            .map(|(&client, _)| client)
            .take(EXPIRES_PER_TICK_MAX)
            .collect();
        for client in due {
            if self
                .append_session_entry(Command::Expire { client })
                .is_none()
            {
                return;
            }
            self.coverage.hit(Branch::SessionsExpireAppended);
            // A cluster of one commits and applies the expire as it appends it, and applying
            // it ends the session: then there is nothing left to mark.
            if let Some(session) = self.sessions.leaders.get_mut(&client) {
                session.expire_appended = true;
            }
        }
        let silent: Vec<SilentSession> = self
            .sessions
            .leaders
            .iter()
            .filter(|(_, s)| !s.expire_appended && !s.marked && s.silence(now, drift) >= s.ttl / 2)
            .map(|(&client, s)| SilentSession {
                client,
                silent_ms: u64::try_from(s.silence(now, drift).as_millis()).unwrap_or(u64::MAX),
            })
            .take(SILENT_MARKS_PER_ENTRY_MAX)
            .collect();
        if silent.is_empty() {
            return;
        }
        let clients: Vec<ClientId> = silent.iter().map(|s| s.client).collect();
        if self
            .append_session_entry(Command::MarkSilent { sessions: silent })
            .is_some()
        {
            self.coverage.hit(Branch::SessionsMarkedSilent);
            for client in clients {
                // As above: a mark a cluster of one applied at once may have changed the map.
                if let Some(session) = self.sessions.leaders.get_mut(&client) {
                    session.marked = true;
                }
            }
        }
    }

    /// Leader: appends a session entry nobody waits on, unless the uncommitted entries are at
    /// their bound (then the heartbeat tries again).
    pub(super) fn append_session_entry(&mut self, command: Command) -> Option<LogIndex> {
        if self.log.last_index() - self.commit_index >= self.config.uncommitted_entries_max {
            self.coverage.hit(Branch::SessionsAppendDeferred);
            return None;
        }
        let index = self.append_as_leader(command);
        self.advance_commit();
        if self.role == Role::Leader {
            for peer in self.peers() {
                if self.progress[&peer].next_index <= index {
                    self.send_append(peer);
                }
            }
        }
        Some(index)
    }

    // ----- what every server notes, and what the leader does on apply -----

    /// Notes when this server appended a `MarkSilent` to its log (as leader or follower).
    pub(super) fn note_appended(&mut self, index: LogIndex, command: &Command, now: Time) {
        if matches!(command, Command::MarkSilent { .. }) {
            self.sessions.receipts.insert(index, now);
        }
    }

    /// The log was cut back to before `first_index`: receipts of entries it held there no
    /// longer describe the entries that will be there.
    pub(super) fn forget_receipts_from(&mut self, first_index: LogIndex) {
        let _ = self.sessions.receipts.split_off(&first_index);
    }

    /// A snapshot replaced a log that did not hold its last entry: every receipt may describe
    /// an entry that is not the committed one.
    pub(super) fn forget_all_receipts(&mut self) {
        self.sessions.receipts.clear();
    }

    /// Leader, for each entry it applies once ready: new sessions start their deadline now,
    /// ended ones are dropped, and the locks an expire freed start their lock-delay.
    pub(super) fn on_session_entry_applied(&mut self, command: &Command, now: Time) {
        if self.role != Role::Leader || !self.sessions.ready {
            return;
        }
        match command {
            Command::Register {
                ttl_ms: Some(_), ..
            } => {
                let client = ClientId(self.table.client_count());
                if let Some(session) = self.table.session(client) {
                    let ttl = Duration::from_millis(session.ttl_ms);
                    self.sessions
                        .leaders
                        .insert(client, LeaderSession::fresh(ttl, now));
                }
            }
            Command::Expire { client } => {
                self.sessions.leaders.remove(client);
                let Some(expired) = self
                    .table
                    .session(*client)
                    .and_then(|session| session.expired.as_ref())
                else {
                    return;
                };
                let until = now + stretch(self.config.lock_delay, self.config.max_clock_drift);
                for lock in &expired.released {
                    self.sessions.lock_delay_until.insert(lock.clone(), until);
                }
            }
            _ => {}
        }
    }

    /// Drops receipts no mark in force refers to, once there are many.
    pub(super) fn prune_receipts(&mut self) {
        if self.sessions.receipts.len() <= RECEIPTS_MAX {
            return;
        }
        let applied = self.table.applied_index();
        let referenced: std::collections::BTreeSet<LogIndex> = self
            .table
            .sessions()
            .values()
            .filter_map(|session| session.silent.map(|mark| mark.index))
            .collect();
        self.sessions
            .receipts
            .retain(|index, _| *index > applied || referenced.contains(index));
    }

    // ----- lock-delay -----

    /// Leader: how long `lock` must still wait before it may be granted, if it was freed by an
    /// expiry less than `lock_delay` ago. Grants happen at apply, which knows no time, so this
    /// gate is the leader's, before the log.
    pub(super) fn lock_delay_remaining(&self, lock: &str, now: Time) -> Option<Duration> {
        if self.config.lock_delay.is_zero() || !self.table.freed_by_expiry().contains_key(lock) {
            return None;
        }
        match self.sessions.lock_delay_until.get(lock) {
            Some(until) if now < *until => Some(until.saturating_since(now)),
            Some(_) => None,
            // Not set up yet (this leader is not ready): wait the whole delay.
            None if !self.sessions.ready => Some(self.config.lock_delay),
            None => None,
        }
    }

    /// The refusal of a preempt of a lock still in its lock-delay.
    pub(super) fn lock_delayed(&mut self, remaining: Duration) -> ReplyBody {
        self.coverage.hit(Branch::ProposeLockDelayed);
        let retry_after_ms = u64::try_from(remaining.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        ReplyBody::Error(ServiceError::LockDelayed { retry_after_ms })
    }

    /// Leader only, for tests and checkers: when this leader may expire `client`'s session.
    pub fn session_deadline(&self, client: ClientId) -> Option<Time> {
        self.sessions
            .leaders
            .get(&client)
            .map(|session| session.deadline(self.config.max_clock_drift))
    }

    /// For tests: how many silent-mark receipts this server keeps (memory the node bounds).
    #[cfg(test)]
    pub(super) fn receipt_count(&self) -> usize {
        self.sessions.receipts.len()
    }

    /// Whether this server (leader) has set up its session deadlines.
    pub fn sessions_ready(&self) -> bool {
        self.sessions.ready
    }

    pub(super) fn check_session_invariants(&self) {
        let id = self.config.id;
        if self.role != Role::Leader {
            assert!(
                self.sessions.leaders.is_empty() && self.sessions.keepalives.is_empty(),
                "{id}: a non-leader keeps session deadlines or keepalives"
            );
            assert!(
                !self.sessions.ready,
                "{id}: a non-leader with sessions ready"
            );
        }
        // Pair assertion with apply: a tracked session is live in the table.
        self.check_sessions_tracked_are_live();
        assert!(
            self.sessions
                .receipts
                .keys()
                .next_back()
                .is_none_or(|&index| index <= self.log.last_index()),
            "{id}: a silent-mark receipt beyond the log"
        );
    }

    /// Pairs tracked sessions with the table: all of them when there are at most
    /// [`SESSION_CHECKS_PER_STEP`], else the next window after the cursor, wrapping around,
    /// and moves the cursor to the window's last.
    fn check_sessions_tracked_are_live(&self) {
        let id = self.config.id;
        let live = |client: ClientId| {
            assert!(
                self.table
                    .session(client)
                    .is_some_and(|session| session.expired.is_none()),
                "{id}: tracks a deadline for {client}, which has no live session"
            );
        };
        let leaders = &self.sessions.leaders;
        if leaders.len() <= SESSION_CHECKS_PER_STEP {
            leaders.keys().for_each(|client| live(*client));
            return;
        }
        let tail = match self.sessions.check_cursor.get() {
            Some(cursor) => leaders.range((Bound::Excluded(cursor), Bound::Unbounded)),
            None => leaders.range(..),
        };
        let mut last = None;
        for (client, _) in tail.chain(leaders.range(..)).take(SESSION_CHECKS_PER_STEP) {
            live(*client);
            last = Some(*client);
        }
        self.sessions.check_cursor.set(last);
    }
}
