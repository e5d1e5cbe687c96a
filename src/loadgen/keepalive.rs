//! The keepalive workload behind `lockstep bench --servers ... --keepalive-sessions N --ttl D`:
//! many live sessions that only renew, to show what heartbeat load costs a cluster.
//!
//! Two phases, with a hook between them so that the caller can read the servers' state (their
//! log's end, their CPU time) exactly where the renewals begin and end:
//! 1. **Registration.** `sessions` client ids, each with a `hello` asking for `ttl`, spread over
//!    `connections` connections (session `i` on connection `i % connections`). Sessions belong
//!    to client ids, not to connections, so one connection carries many; the connection's seqs
//!    grow for every id on it, which is all the protocol asks (a seq must grow per client id).
//! 2. **Renewal.** For `duration`, every session sends a keepalive every TTL/3, the client
//!    library's interval. The sends are spread evenly: session `i` of `n` renews at
//!    `start + (i / n) × TTL/3 + k × TTL/3`, so the cluster sees a steady `3n / TTL` keepalives
//!    a second, not bursts. A session's first renewal comes no later than TTL/3 after its own
//!    registration, so a slow registration phase cannot leave early sessions silent.
//!
//! Each connection has one request in flight, as in the closed loop; with the defaults (16
//! connections) that carries 10,000 sessions at a 30 s TTL (1,000 keepalives a second) while
//! a keepalive takes up to 16 ms. A renewal sent late because its connection was still waiting
//! is counted, with how late: a session silent for half its TTL or more is marked silent by
//! the leader (a `MarkSilent` entry) and revived on its next keepalive (a `Revive` entry), so
//! late renewals are what explains log entries during the renewal phase.
//!
//! Retry rules, seqs and terms are the closed loop's ([`Session::exchange`]).

use super::{Histogram, Session};
use crate::client::Credential;
use crate::net::protocol::{Answer, WireOp};
use crate::net::tls::ClientTls;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct KeepalivePlan {
    /// `host:port` of every server; connection `c` starts at server `c % len`.
    pub servers: Vec<String>,
    /// Live sessions, each its own client id. At least 1.
    pub sessions: u32,
    /// Connections the sessions are spread over, at most `sessions`. At least 1.
    pub connections: u32,
    /// Every session's TTL; renewals come every TTL/3. At least 3 ms, so that the period is
    /// not zero.
    pub ttl: Duration,
    /// How long the renewal phase lasts.
    pub duration: Duration,
    pub tls: Option<ClientTls>,
}

impl KeepalivePlan {
    /// The renewal interval: TTL/3.
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }
}

/// The two moments a caller hears about, from the runtime's thread while every connection
/// waits: the hook should be quick (it delays the renewals that follow `Registered`).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Phase {
    /// Every session has registered (or failed to); renewals start when the hook returns.
    Registered,
    /// Every connection has finished its last renewal.
    Renewed,
}

/// Counters the connections bump as they go, for a progress display.
#[derive(Default, Debug)]
pub struct KeepaliveProgress {
    pub registered: AtomicU64,
    pub answered: AtomicU64,
    pub refused: AtomicU64,
}

/// One connection's results, or all connections' once merged.
#[derive(Default, Clone, Debug)]
pub struct KeepaliveTally {
    pub registered: u64,
    /// Why each session that could not register failed.
    pub registration_failures: Vec<String>,
    /// Keepalives sent (each under its own seq, retried within its timeout).
    pub sent: u64,
    /// Keepalives answered `kept_alive`: their latency, from the first send to the answer.
    pub answered: Histogram,
    /// Keepalives not answered `kept_alive`, by kind: `timed_out`, `protocol`, or the code of a
    /// refusal for good (`session_expired`, ...). Every sent keepalive is answered or here.
    pub refused: BTreeMap<&'static str, u64>,
    /// How much later than scheduled each keepalive was sent (its connection was busy).
    pub lateness: Histogram,
    /// Renewals sent after the session had been silent (since its previous send, or its
    /// registration) for 45% of its TTL or more: near the leader's TTL/2 threshold for a
    /// silent mark, so each may cost a `MarkSilent` and a `Revive` entry.
    pub late_renewals: u64,
    /// Sessions dropped from the schedule after a refusal for good (`session_expired`,
    /// `unknown_client`, `unauthorized`): renewing them again could only be refused again.
    pub sessions_lost: u64,
}

impl KeepaliveTally {
    pub fn merge(&mut self, other: &KeepaliveTally) {
        self.registered += other.registered;
        self.registration_failures
            .extend(other.registration_failures.iter().cloned());
        self.sent += other.sent;
        self.answered.merge(&other.answered);
        for (kind, count) in &other.refused {
            *self.refused.entry(kind).or_default() += count;
        }
        self.lateness.merge(&other.lateness);
        self.late_renewals += other.late_renewals;
        self.sessions_lost += other.sessions_lost;
    }

    pub fn refusals(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Keepalives refused because the session had expired.
    pub fn session_expired(&self) -> u64 {
        self.refused.get("session_expired").copied().unwrap_or(0)
    }
}

/// A finished run.
#[derive(Debug)]
pub struct KeepaliveResult {
    pub total: KeepaliveTally,
    /// How long registration took.
    pub registration: Duration,
    /// The renewal phase: from its start to `duration` later, or the end of the last keepalive
    /// if that came after.
    pub measured: Duration,
}

/// One session on a connection: its credential, when it is due next and when it last spoke.
struct Slot {
    credential: Credential,
    /// Its share of the period: where in each TTL/3 it renews.
    offset: Duration,
    last_sent: Instant,
}

/// Runs `plan` on a current-thread runtime in the calling thread, calling `at_phase` at the end
/// of each phase.
pub fn run(
    plan: &KeepalivePlan,
    progress: Arc<KeepaliveProgress>,
    mut at_phase: impl FnMut(Phase),
) -> std::io::Result<KeepaliveResult> {
    assert!(!plan.servers.is_empty(), "keepalive: no servers");
    assert!(
        plan.sessions > 0 && (1..=plan.sessions).contains(&plan.connections),
        "keepalive: {} sessions on {} connections",
        plan.sessions,
        plan.connections
    );
    assert!(!plan.period().is_zero(), "keepalive: a TTL under 3 ms");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let mut registering = tokio::task::JoinSet::new();
        for connection in 0..plan.connections {
            let mut servers = plan.servers.clone();
            servers.rotate_left(connection as usize % plan.servers.len());
            let session = Session::new(servers, plan.tls.clone(), Some(plan.ttl));
            let (plan, progress) = (plan.clone(), progress.clone());
            registering.spawn(register_share(plan, connection, session, progress));
        }
        let mut shares = Vec::new();
        let mut total = KeepaliveTally::default();
        while let Some(joined) = registering.join_next().await {
            let (session, slots, tally) = joined.expect("a keepalive connection panicked");
            total.merge(&tally);
            shares.push((session, slots));
        }
        let registration = started.elapsed();
        at_phase(Phase::Registered);
        let start = Instant::now();
        let end = start + plan.duration;
        let mut renewing = tokio::task::JoinSet::new();
        for (session, slots) in shares {
            let (period, progress) = (plan.period(), progress.clone());
            renewing.spawn(renew_share(session, slots, period, start, end, progress));
        }
        while let Some(joined) = renewing.join_next().await {
            total.merge(&joined.expect("a keepalive connection panicked"));
        }
        let measured = start.elapsed();
        at_phase(Phase::Renewed);
        Ok(KeepaliveResult {
            total,
            registration,
            measured,
        })
    })
}

/// Registers the sessions of `connection` (`connection`, `connection + connections`, ...), one
/// after another on its one connection.
async fn register_share(
    plan: KeepalivePlan,
    connection: u32,
    mut session: Session,
    progress: Arc<KeepaliveProgress>,
) -> (Session, Vec<Slot>, KeepaliveTally) {
    let mut tally = KeepaliveTally::default();
    let mut slots = Vec::new();
    let sessions = u64::from(plan.sessions);
    // Bounded by the share's size; every hello ends within its timeout.
    for index in (u64::from(connection)..sessions).step_by(plan.connections as usize) {
        match session.hello().await {
            Ok(credential) => {
                tally.registered += 1;
                progress.registered.fetch_add(1, Ordering::Relaxed);
                slots.push(Slot {
                    credential,
                    offset: share_of_period(index, sessions, plan.period()),
                    last_sent: Instant::now(),
                });
            }
            Err(reason) => tally.registration_failures.push(reason),
        }
    }
    (session, slots, tally)
}

/// Renews every slot of one connection on its schedule until `end`.
async fn renew_share(
    mut session: Session,
    mut slots: Vec<Slot>,
    period: Duration,
    start: Instant,
    end: Instant,
    progress: Arc<KeepaliveProgress>,
) -> KeepaliveTally {
    let mut tally = KeepaliveTally::default();
    let ttl = period * 3;
    // Earliest due first. A first renewal comes at its place in the period, or TTL/3 after the
    // session registered if that is sooner.
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = slots
        .iter()
        .enumerate()
        .map(|(at, slot)| Reverse((first_due(start + slot.offset, slot.last_sent, period), at)))
        .collect();
    // Bounded by `end`: every round moves one slot's due time on by a whole period, or drops
    // the slot, and every keepalive ends within its timeout.
    while let Some(Reverse((when, at))) = due.pop() {
        if when >= end {
            continue;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(when)).await;
        let sent = Instant::now();
        let slot = &mut slots[at];
        tally.lateness.record(micros_between(when, sent));
        if (sent - slot.last_sent).as_secs_f64() >= ttl.as_secs_f64() * 0.45 {
            tally.late_renewals += 1;
        }
        slot.last_sent = sent;
        tally.sent += 1;
        let Credential { id: client, secret } = slot.credential;
        let secret = Some(secret);
        match session
            .exchange(&WireOp::Keepalive { client, secret })
            .await
        {
            Ok(Answer::KeptAlive { .. }) => {
                tally.answered.record(micros_between(sent, Instant::now()));
                progress.answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => unreachable!("keepalive: {other:?} accepted for a keepalive"),
            Err(kind) => {
                *tally.refused.entry(kind).or_default() += 1;
                progress.refused.fetch_add(1, Ordering::Relaxed);
                if matches!(kind, "session_expired" | "unknown_client" | "unauthorized") {
                    tally.sessions_lost += 1;
                    continue;
                }
            }
        }
        due.push(Reverse((next_due(when, start + slot.offset, period), at)));
    }
    // The phase lasts its whole duration even when this connection's last renewal came early:
    // the servers' CPU is read at its end and divided by the keepalives of the whole phase.
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    tally
}

/// Where in each period session `index` of `sessions` renews: `index / sessions` of it.
fn share_of_period(index: u64, sessions: u64, period: Duration) -> Duration {
    period.mul_f64(index as f64 / sessions as f64)
}

/// A session's first renewal: at `place`, its share of the first period, or a period after it
/// registered if that is sooner, so that no session stays silent longer than a period however
/// long registration took.
fn first_due(place: Instant, registered_at: Instant, period: Duration) -> Instant {
    place.min(registered_at + period)
}

/// After a renewal due `when`: the session's next place in the period, whatever this one's
/// delay (a first renewal brought forward goes back to `place`, the first of its places).
fn next_due(when: Instant, place: Instant, period: Duration) -> Instant {
    if when < place { place } else { when + period }
}

fn micros_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_are_spread_over_the_period_and_none_waits_longer_than_one() {
        let plan = KeepalivePlan {
            servers: vec!["127.0.0.1:1".into()],
            sessions: 4,
            connections: 1,
            ttl: Duration::from_secs(30),
            duration: Duration::from_secs(60),
            tls: None,
        };
        let period = plan.period();
        assert_eq!(period, Duration::from_secs(10));
        let start = Instant::now() + Duration::from_secs(100);
        // Four sessions take the period's quarters.
        let places: Vec<Instant> = (0..4)
            .map(|i| start + share_of_period(i, 4, period))
            .collect();
        for pair in places.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(2_500));
        }
        assert!(
            places[3] < start + period,
            "every place within the first period"
        );
        // Registered just before the start: each renews first at its place...
        let just_before = start - Duration::from_millis(100);
        for &place in &places {
            assert_eq!(first_due(place, just_before, period), place);
        }
        // ...but one registered 8 s before the start cannot wait for its place at 7.5 s.
        let early = start - Duration::from_secs(8);
        assert_eq!(first_due(places[3], early, period), early + period);
        // After that early renewal, the session goes back to its place, then every period
        // from there, however late a renewal was sent.
        let first = early + period;
        assert_eq!(next_due(first, places[3], period), places[3]);
        assert_eq!(next_due(places[3], places[3], period), places[3] + period);
    }
}
