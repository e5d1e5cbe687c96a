//! Closed-loop load over TCP, behind `lockstep bench --servers HOST:PORT,...`.
//!
//! A bench tool, and a client of the cluster: it lives beside `client` rather than in `net`,
//! which holds the servers' side and must never depend on `client`. It must never be used by a
//! server or the simulator.
//!
//! Every client is a task with its own connection and client id, preempting and (when granted)
//! releasing as fast as the cluster answers: one operation in flight per client. All tasks run
//! on one thread of a current-thread tokio runtime. A thread per client (the blocking
//! `lockstep::client`) would cost a context switch per operation; on the 2-core machine that
//! runs the servers too, that CPU came out of the cluster being measured (the 64-client run
//! spent a quarter of the machine in the load generator).
//!
//! The retry rules are the client library's: the same seq for every attempt of an operation,
//! the reply judged by `client::judge_line`, a newer term adopted, `unavailable` backed off,
//! silence retried at the next server, and an operation given up after its timeout.
//!
//! With sessions on (`LoadPlan::ttl`), every client registers with that TTL and sends a
//! `keepalive` every TTL/3 between its operations, as the client library's background renewal
//! does. Its writes renew the session on the leader too, so the keepalives are not needed to
//! keep it alive under this load; they are sent anyway so that the figures include what a
//! real session costs (the load of a client whose operations are sparse).
//!
//! Latencies go into a fixed-size log-linear [`Histogram`] per client (at most 3% error,
//! constant memory however long the run), merged at the end. No per-operation samples are
//! kept.
//!
//! With blocking acquires on (`LoadPlan::acquire`), every client takes its lock with an
//! `acquire` that waits in the lock's line instead of a preempt, and releases it once granted:
//! on one lock, each release hands the lock to the head of the line in the same log entry. It
//! also counts, for every grant, how many grants this bench saw go to others while that
//! acquire waited (the hand-offs it waited through): with a fair line and N clients, at most
//! N - 1, give or take a grant that was on its way back when the acquire was sent.
//!
//! [`keepalive`] is the other workload: many sessions, renewing only.

pub mod keepalive;

use crate::client::{
    ACQUIRE_RESEND_AFTER, ClientOptions, Credential, ResponseLines, Verdict, judge_line,
};
use crate::net::alarm::Alarm;
use crate::net::protocol::{Answer, WireOp, WireRequest, encode_request_into};
use crate::net::tls::ClientTls;
use crate::net::tls::stream::NetStream;
use crate::node::{Claim, LockName, LogIndex, Outcome, Term};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read from a socket at once. Responses are short; one read usually holds one.
const READ_CHUNK_BYTES: usize = 4 * 1024;
/// How long a bench acquire waits in line: far beyond what a fair line of even a thousand
/// clients needs, so that a `timeout` means something is wrong (it is counted as a failure).
const ACQUIRE_WAIT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// `host:port` of every server; client `i` starts at server `i % len` and moves on from
    /// there when one does not answer.
    pub servers: Vec<String>,
    pub clients: u32,
    pub duration: Duration,
    /// Uncontended: locks per client, used in turn. Ignored when contended.
    pub locks: u32,
    /// All clients on one lock.
    pub contended: bool,
    /// Speak TLS to the servers (each client its own TLS connection); `None` plain TCP.
    pub tls: Option<ClientTls>,
    /// Sessions on: every client registers with this TTL and keeps its session alive with a
    /// keepalive every TTL/3. `None`: sessions that never expire, and no keepalives.
    pub ttl: Option<Duration>,
    /// Blocking acquires (waiting in the lock's line) instead of preempts.
    pub acquire: bool,
}

/// Counters every client bumps as it goes, for a progress display.
#[derive(Default, Debug)]
pub struct Progress {
    pub pairs: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    /// Acquires granted so far, by every client: how an acquire counts the hand-offs it
    /// waited through.
    pub acquire_grants: AtomicU64,
}

/// One client's results, or all clients' once merged.
#[derive(Default, Clone, Debug)]
pub struct Tally {
    pub preempt_granted: Histogram,
    pub preempt_refused: Histogram,
    /// Acquires granted, from the first send to the grant (the wait in line included).
    pub acquire_granted: Histogram,
    /// For every granted acquire, the grants to other clients this bench saw while it waited:
    /// a count, not microseconds.
    pub handoffs_waited: Histogram,
    pub release: Histogram,
    /// Keepalives answered `kept_alive` (sessions on only).
    pub keepalive: Histogram,
    /// Releases answered `not_owner`: the lock was lost, which the bench never expects.
    pub not_owner: u64,
    /// Failed operations by kind: `timed_out`, `protocol`, or the code of a refusal for good
    /// (`session_expired`, `unauthorized`, ...).
    pub errors: BTreeMap<&'static str, u64>,
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.preempt_granted.merge(&other.preempt_granted);
        self.preempt_refused.merge(&other.preempt_refused);
        self.acquire_granted.merge(&other.acquire_granted);
        self.handoffs_waited.merge(&other.handoffs_waited);
        self.release.merge(&other.release);
        self.keepalive.merge(&other.keepalive);
        self.not_owner += other.not_owner;
        for (kind, count) in &other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }

    pub fn failures(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.not_owner
    }

    /// Grants of either kind: with every client on one lock, the hand-offs.
    pub fn grants(&self) -> u64 {
        self.preempt_granted.count() + self.acquire_granted.count()
    }
}

/// A finished run.
#[derive(Debug)]
pub struct LoadResult {
    /// Every registered client's tally, merged.
    pub total: Tally,
    /// From the moment every client had registered to the end of the last operation.
    pub measured: Duration,
    /// How long registration took before the clock started.
    pub setup: Duration,
    /// Why each client that could not register failed.
    pub registration_failures: Vec<String>,
}

/// Runs `plan` on a current-thread runtime in the calling thread. `on_start` is called once
/// every client has registered (or failed to), when the measured period begins.
pub fn run(
    plan: &LoadPlan,
    progress: Arc<Progress>,
    on_start: impl FnOnce(Instant) + Send + 'static,
) -> std::io::Result<LoadResult> {
    assert!(!plan.servers.is_empty(), "load: no servers");
    assert!(plan.clients > 0, "load: no clients");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    runtime.block_on(async move {
        let barrier = Arc::new(tokio::sync::Barrier::new(plan.clients as usize));
        let (clock_sender, clock) = tokio::sync::watch::channel(None::<Instant>);
        let clock_sender = Arc::new(clock_sender);
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..plan.clients {
            let mut servers = plan.servers.clone();
            servers.rotate_left(index as usize % plan.servers.len());
            let names: Vec<LockName> = if plan.contended {
                vec![LockName::from("bench-hot")]
            } else {
                (0..plan.locks)
                    .map(|k| LockName::from(format!("bench-{index}-{k}").as_str()))
                    .collect()
            };
            let (barrier, progress, mut clock, clock_sender) = (
                barrier.clone(),
                progress.clone(),
                clock.clone(),
                clock_sender.clone(),
            );
            let (duration, acquire) = (plan.duration, plan.acquire);
            let (tls, ttl) = (plan.tls.clone(), plan.ttl);
            tasks.spawn(async move {
                let mut session = Session::new(servers, tls, ttl);
                let registered = session.register().await;
                // The first client through the barrier starts the clock for all.
                if barrier.wait().await.is_leader() {
                    let _ = clock_sender.send(Some(Instant::now()));
                }
                let start = clock_start(&mut clock).await;
                match registered {
                    Ok(()) => Ok(session
                        .closed_loop(&names, start + duration, acquire, &progress)
                        .await),
                    Err(reason) => Err(reason),
                }
            });
        }
        let start = clock_start(&mut clock.clone()).await;
        on_start(start);
        let mut total = Tally::default();
        let mut registration_failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("a load client panicked") {
                Ok(tally) => total.merge(&tally),
                Err(reason) => registration_failures.push(reason),
            }
        }
        Ok(LoadResult {
            total,
            measured: start.elapsed(),
            setup: start - started,
            registration_failures,
        })
    })
}

/// When the measured period began: set once every client has registered. The sender lives
/// until `run` returns, so the wait ends.
async fn clock_start(clock: &mut tokio::sync::watch::Receiver<Option<Instant>>) -> Instant {
    match clock.wait_for(Option::is_some).await {
        Ok(start) => start.expect("waited for a start"),
        Err(_) => unreachable!("load: the clock's sender outlives every waiter"),
    }
}

/// Why an attempt ended without an answer.
enum AttemptEnd {
    Answered(LogIndex, Answer),
    /// Nothing before the attempt's deadline, or the connection broke: next server.
    Moved,
    /// `not_leader` with a newer term: resend at once.
    Redirected,
    /// `unavailable`, `overloaded`, or no connection: pause, then the next server.
    BackOff,
}

/// One closed-loop client: its connection, id, seqs and term. The keepalive workload uses one
/// for a connection that carries many client ids (`hello` and `exchange` only).
struct Session {
    options: ClientOptions,
    servers: Vec<String>,
    position: usize,
    connection: Option<Connection>,
    credential: Option<Credential>,
    last_seq: u64,
    seen_index: LogIndex,
    term: Term,
    line: Vec<u8>,
    /// What went wrong last with a server, for the report when registration fails.
    last_problem: Option<String>,
    /// The session TTL asked for at registration; `None` for a session that never expires.
    ttl: Option<Duration>,
    /// The attempts' deadlines, one timer for all of them: nearly every attempt is answered
    /// long before its deadline, so nearly none touches the timer wheel.
    alarm: Alarm,
}

impl Session {
    fn new(servers: Vec<String>, tls: Option<ClientTls>, ttl: Option<Duration>) -> Session {
        Session {
            options: ClientOptions {
                tls,
                ..ClientOptions::default()
            },
            servers,
            position: 0,
            connection: None,
            credential: None,
            last_seq: 0,
            seen_index: 0,
            term: 0,
            line: Vec::with_capacity(256),
            last_problem: None,
            ttl,
            alarm: Alarm::new(),
        }
    }

    async fn register(&mut self) -> Result<(), String> {
        let credential = self.hello().await?;
        self.credential = Some(credential);
        Ok(())
    }

    /// Registers a new client id, with this session's TTL. The connection's seqs, term and
    /// index serve every id it registers: a seq only has to grow per client id.
    async fn hello(&mut self) -> Result<Credential, String> {
        let hello = WireOp::Hello {
            nonce: rand::random(),
            ttl_ms: self.ttl.map(|ttl| ttl.as_millis() as u64),
        };
        match self.exchange(&hello).await {
            Ok(Answer::Welcome { client, secret, .. }) => Ok(Credential { id: client, secret }),
            Ok(answer @ (Answer::Outcome(_) | Answer::Status(_) | Answer::KeptAlive { .. })) => {
                unreachable!("load: {answer:?} accepted for a hello")
            }
            Err(kind) => Err(match &self.last_problem {
                Some(problem) => format!("registration failed ({kind}); last problem: {problem}"),
                None => format!("registration failed ({kind})"),
            }),
        }
    }

    /// Preempt (or with `acquire`, acquire and wait), and release when granted, until `end`.
    async fn closed_loop(
        &mut self,
        names: &[LockName],
        end: Instant,
        acquire: bool,
        progress: &Progress,
    ) -> Tally {
        let Credential { id: client, secret } =
            self.credential.expect("load: a registered session");
        let secret = Some(secret);
        let mut tally = Tally::default();
        let mut turn = 0usize;
        let mut next_keepalive = self.ttl.map(|ttl| Instant::now() + ttl / 3);
        // Bounded by `end`: every operation ends within its own timeout.
        while Instant::now() < end {
            if next_keepalive.is_some_and(|due| Instant::now() >= due) {
                next_keepalive = self.ttl.map(|ttl| Instant::now() + ttl / 3);
                self.keep_alive(&mut tally, progress).await;
            }
            let lock = names[turn % names.len()].clone();
            turn = turn.wrapping_add(1);
            if acquire {
                if !self.acquire(&lock, &mut tally, progress).await {
                    continue;
                }
                self.release(lock, &mut tally, progress).await;
                continue;
            }
            let start = Instant::now();
            let preempt = WireOp::Preempt {
                client,
                secret,
                lock: lock.clone(),
                claim: Claim::EXCLUSIVE,
            };
            match self.exchange(&preempt).await {
                Ok(Answer::Outcome(Outcome::Granted { .. })) => {
                    tally.preempt_granted.record(micros(start));
                }
                Ok(Answer::Outcome(Outcome::HeldBy { .. })) => {
                    tally.preempt_refused.record(micros(start));
                    progress.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Ok(other) => unreachable!("load: {other:?} accepted for a preempt"),
                Err(kind) => {
                    *tally.errors.entry(kind).or_default() += 1;
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            self.release(lock, &mut tally, progress).await;
        }
        tally
    }

    /// One blocking acquire of `lock`, waiting in its line; true once granted. Counts the
    /// grants to others it waited through.
    async fn acquire(&mut self, lock: &LockName, tally: &mut Tally, progress: &Progress) -> bool {
        let Credential { id: client, secret } =
            self.credential.expect("load: a registered session");
        let start = Instant::now();
        let grants_before = progress.acquire_grants.load(Ordering::Relaxed);
        let acquire = WireOp::Acquire {
            client,
            secret: Some(secret),
            lock: lock.clone(),
            wait_ms: ACQUIRE_WAIT.as_millis() as u64,
            claim: Claim::EXCLUSIVE,
        };
        let pace = (
            ACQUIRE_RESEND_AFTER,
            ACQUIRE_WAIT + self.options.operation_timeout,
        );
        let failure = match self.exchange_paced(&acquire, pace).await {
            Ok(Answer::Outcome(Outcome::Granted { .. })) => {
                tally.acquire_granted.record(micros(start));
                let grants_now = progress.acquire_grants.fetch_add(1, Ordering::Relaxed);
                tally.handoffs_waited.record(grants_now - grants_before);
                return true;
            }
            // Not granted within a minute of a fair line: counted as a failure.
            Ok(Answer::Outcome(Outcome::TimedOut)) => "acquire_timeout",
            Ok(Answer::Outcome(Outcome::Cancelled)) => "acquire_cancelled",
            Ok(Answer::Outcome(Outcome::HeldBy { .. })) => {
                unreachable!("load: held_by answers only an acquire that does not wait")
            }
            Ok(other) => unreachable!("load: {other:?} accepted for an acquire"),
            Err(kind) => kind,
        };
        *tally.errors.entry(failure).or_default() += 1;
        progress.errors.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Gives `lock` back after a grant.
    async fn release(&mut self, lock: LockName, tally: &mut Tally, progress: &Progress) {
        let Credential { id: client, secret } =
            self.credential.expect("load: a registered session");
        let start = Instant::now();
        let release = WireOp::Release {
            client,
            secret: Some(secret),
            lock,
        };
        match self.exchange(&release).await {
            Ok(Answer::Outcome(Outcome::Released)) => {
                tally.release.record(micros(start));
                progress.pairs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Answer::Outcome(Outcome::NotOwner)) => tally.not_owner += 1,
            Ok(other) => unreachable!("load: {other:?} accepted for a release"),
            Err(kind) => {
                *tally.errors.entry(kind).or_default() += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One keepalive of this client's session, between two of its operations.
    async fn keep_alive(&mut self, tally: &mut Tally, progress: &Progress) {
        let Credential { id: client, secret } =
            self.credential.expect("load: a registered session");
        let secret = Some(secret);
        let start = Instant::now();
        match self.exchange(&WireOp::Keepalive { client, secret }).await {
            Ok(Answer::KeptAlive { .. }) => tally.keepalive.record(micros(start)),
            Ok(other) => unreachable!("load: {other:?} accepted for a keepalive"),
            Err(kind) => {
                *tally.errors.entry(kind).or_default() += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends `op` under a new seq until it is answered, refused, or out of time. The error is
    /// a kind for the tally.
    async fn exchange(&mut self, op: &WireOp) -> Result<Answer, &'static str> {
        let pace = (self.options.attempt_timeout, self.options.operation_timeout);
        self.exchange_paced(op, pace).await
    }

    /// [`Session::exchange`] that resends after `attempt_timeout` of silence and gives up
    /// after `operation_timeout`: longer ones for an acquire, whose wait is silent.
    async fn exchange_paced(
        &mut self,
        op: &WireOp,
        (attempt_timeout, operation_timeout): (Duration, Duration),
    ) -> Result<Answer, &'static str> {
        self.last_seq += 1;
        let seq = self.last_seq;
        let deadline = Instant::now() + operation_timeout;
        // Bounded by the deadline: every round sends and waits, or pauses, or (after a
        // redirect) resends at once, which a newer term allows only finitely often.
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err("timed_out");
            }
            let attempt_term = self.term;
            self.line.clear();
            encode_request_into(
                &WireRequest {
                    seq,
                    seen_index: self.seen_index,
                    term: attempt_term,
                    op: op.clone(),
                },
                &mut self.line,
            );
            let attempt_deadline = deadline.min(now + attempt_timeout);
            match self
                .attempt(op, seq, attempt_term, attempt_deadline)
                .await?
            {
                AttemptEnd::Answered(index, answer) => {
                    self.seen_index = self.seen_index.max(index);
                    return Ok(answer);
                }
                AttemptEnd::Redirected => {}
                AttemptEnd::Moved => self.next_server(),
                AttemptEnd::BackOff => {
                    let pause = self
                        .options
                        .error_backoff
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                    self.next_server();
                }
            }
        }
    }

    /// Drops the connection and moves to the next listed server.
    fn next_server(&mut self) {
        self.connection = None;
        self.position = (self.position + 1) % self.servers.len();
    }

    /// Sends `self.line` on the current server's connection (opening it if needed) and reads
    /// until the attempt ends.
    async fn attempt(
        &mut self,
        op: &WireOp,
        seq: u64,
        attempt_term: Term,
        attempt_deadline: Instant,
    ) -> Result<AttemptEnd, &'static str> {
        let until = tokio::time::Instant::from_std(attempt_deadline);
        if self.connection.is_none() {
            let address = &self.servers[self.position];
            let opening = Connection::open(address, self.options.tls.as_ref());
            match tokio::time::timeout_at(until, opening).await {
                Ok(Ok(connection)) => self.connection = Some(connection),
                // Unreachable or slow to accept: the next server, after a pause so that a
                // cluster that is down is not dialled in a busy loop.
                Ok(Err(error)) => {
                    self.last_problem = Some(format!("{address}: {error}"));
                    return Ok(AttemptEnd::BackOff);
                }
                Err(_) => {
                    self.last_problem = Some(format!("{address}: connecting timed out"));
                    return Ok(AttemptEnd::BackOff);
                }
            }
        }
        let address = &self.servers[self.position];
        let connection = self.connection.as_mut().expect("opened above");
        let written = match connection.stream.write_all(&self.line).await {
            Ok(()) => connection.stream.flush().await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            self.last_problem = Some(format!("{address}: sending failed: {error}"));
            return Ok(AttemptEnd::Moved);
        }
        // Bounded by the attempt's deadline and the connection's queue of lines.
        loop {
            let received = tokio::select! {
                biased;
                received = connection.receive() => Some(received),
                () = self.alarm.until(attempt_deadline) => None,
            };
            let line = match received {
                None => {
                    self.last_problem = Some(format!("{address}: no answer in time"));
                    return Ok(AttemptEnd::Moved);
                }
                Some(Err(ConnectionError::Broken)) => {
                    self.last_problem = Some(format!("{address}: the connection closed"));
                    return Ok(AttemptEnd::Moved);
                }
                Some(Err(ConnectionError::Protocol)) => return Err("protocol"),
                Some(Ok(line)) => line,
            };
            let verdict = judge_line(&line, op, seq, attempt_term).map_err(|_| "protocol")?;
            self.term = self.term.max(verdict.term().unwrap_or(0));
            return match verdict {
                Verdict::NotOurs => continue,
                Verdict::Answered { index, answer, .. } => Ok(AttemptEnd::Answered(index, answer)),
                // The server this client talks to forwards to the leader: stay, so that the
                // load stays spread over the servers as planned.
                Verdict::Redirect { .. } => Ok(AttemptEnd::Redirected),
                Verdict::BackOff { .. } => Ok(AttemptEnd::BackOff),
                // By its code, so that a report can tell `session_expired` from the rest.
                Verdict::Rejected { code, .. } => Err(code.name()),
            };
        }
    }
}

enum ConnectionError {
    Broken,
    Protocol,
}

struct Connection {
    stream: NetStream,
    lines: ResponseLines,
    buffer: Box<[u8]>,
}

impl Connection {
    async fn open(address: &str, tls: Option<&ClientTls>) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        // A request is one small write that must leave at once.
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => NetStream::Plain(stream),
            Some(tls) => {
                let name = tls.server_name_for(address).map_err(|problem| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, problem)
                })?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls.config()));
                let stream = connector.connect(name, stream).await.map_err(|error| {
                    std::io::Error::new(error.kind(), format!("TLS handshake failed: {error}"))
                })?;
                NetStream::TlsClient(Box::new(stream))
            }
        };
        Ok(Connection {
            stream,
            lines: ResponseLines::default(),
            buffer: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        })
    }

    async fn receive(&mut self) -> Result<Vec<u8>, ConnectionError> {
        // Bounded by the caller's timeout: every round reads at least one byte or returns.
        loop {
            if let Some(line) = self.lines.pop() {
                return Ok(line);
            }
            let read = match self.stream.read(&mut self.buffer).await {
                Ok(0) | Err(_) => return Err(ConnectionError::Broken),
                Ok(read) => read,
            };
            self.lines
                .feed(&self.buffer[..read])
                .map_err(|_| ConnectionError::Protocol)?;
        }
    }
}

/// Sub-buckets per power of two: 32, so a bucket is at most 1/32 (3%) of its values wide.
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values below this are counted exactly.
const EXACT_BELOW: u64 = 2 * SUB_BUCKETS as u64;
const BUCKETS: usize = EXACT_BELOW as usize + (64 - 6) * SUB_BUCKETS;

/// Latencies in microseconds, log-linear buckets, fixed memory.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            max: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < EXACT_BELOW {
        return value as usize;
    }
    let top_bit = 63 - value.leading_zeros(); // 6 or more
    let shift = top_bit - SUB_BUCKET_BITS;
    let sub = ((value >> shift) as usize) & (SUB_BUCKETS - 1);
    EXACT_BELOW as usize + (top_bit as usize - 6) * SUB_BUCKETS + sub
}

/// The highest value that falls in `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    if bucket < EXACT_BELOW as usize {
        return bucket as u64;
    }
    let past = bucket - EXACT_BELOW as usize;
    let top_bit = (past / SUB_BUCKETS) as u32 + 6;
    let sub = (past % SUB_BUCKETS) as u64;
    let shift = top_bit - SUB_BUCKET_BITS;
    // In u128: the top bucket's end is 2^64 - 1, and its next start would overflow u64.
    let next_start = u128::from(SUB_BUCKETS as u64 + sub + 1) << shift;
    u64::try_from(next_start - 1).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket_of(micros)] += 1;
        self.count += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at quantile `q` (0..=1), as its bucket's upper end (never above the maximum).
    pub fn quantile(&self, q: f64) -> u64 {
        assert!((0.0..=1.0).contains(&q), "quantile {q} outside 0..=1");
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(bucket).min(self.max);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_upper_end_is_within_3_percent() {
        for value in (0..10_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let bucket = bucket_of(value);
            assert!(bucket < BUCKETS, "{value}");
            let high = bucket_high(bucket);
            assert!(high >= value, "{value} above its bucket's end {high}");
            assert!(
                (high - value) as f64 <= value as f64 / 32.0 + 1.0,
                "{value}: bucket end {high} too far"
            );
        }
        let mut previous = 0;
        for bucket in 1..BUCKETS {
            assert!(bucket_high(bucket) > previous, "bucket {bucket}");
            previous = bucket_high(bucket);
        }
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.99), 0);
        for micros in 1..=1_000 {
            histogram.record(micros);
        }
        let p50 = histogram.quantile(0.5);
        assert!((500..=516).contains(&p50), "{p50}");
        let p99 = histogram.quantile(0.99);
        assert!((990..=1_000).contains(&p99), "{p99}");
        assert_eq!(histogram.quantile(1.0), 1_000);
        let mut other = Histogram::default();
        other.record(50_000);
        histogram.merge(&other);
        assert_eq!(histogram.max(), 50_000);
        assert_eq!(histogram.count(), 1_001);
    }
}
