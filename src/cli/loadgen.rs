//! The TCP load generator behind `lockstep bench --servers HOST:PORT,...`: closed-loop clients
//! against a real cluster, each a thread with its own `lockstep::client::Client`, preempting
//! and (when granted) releasing as fast as the cluster answers.
//!
//! Latencies go into a fixed-size log-linear histogram per thread (at most 3% error, constant
//! memory however long the run), merged at the end. It must never hold more than that: no
//! per-operation samples are kept.

use super::client::{ServerList, error_kind, parse_server_list};
use indicatif::{ProgressBar, ProgressStyle};
use lockstep::client::{Client, ClientOptions, Error, Preempt, Release};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Most client threads.
pub const CLIENTS_MAX: u32 = 1_024;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(3_600);

/// `bench --servers`: a simulated cluster's size (the simulator suites), or the addresses of a
/// real cluster (the TCP load generator).
#[derive(Clone, Debug)]
pub enum BenchServers {
    Simulated(u32),
    Tcp(ServerList),
}

pub fn parse_bench_servers(text: &str) -> Result<BenchServers, String> {
    if let Ok(count) = text.parse::<u32>() {
        return Ok(BenchServers::Simulated(count));
    }
    parse_server_list(text).map(BenchServers::Tcp)
}

/// What to run.
pub struct LoadOptions {
    pub servers: Vec<String>,
    pub clients: u32,
    pub duration: Duration,
    /// Uncontended: locks per client, used in turn. Ignored when contended.
    pub locks: u32,
    /// All clients on one lock.
    pub contended: bool,
    pub json: bool,
}

impl LoadOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(format!("--clients must be within 1..={CLIENTS_MAX}"));
        }
        if self.locks == 0 {
            return Err("--locks must be at least 1".into());
        }
        if self.duration < Duration::from_secs(1) || self.duration > DURATION_MAX {
            return Err("--duration must be within 1s..=60m".into());
        }
        Ok(())
    }
}

// ----- latency histogram -----

/// Sub-buckets per power of two: 32, so a bucket is at most 1/32 (3%) of its values wide.
const SUB_BUCKET_BITS: u32 = 5;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values below this are counted exactly.
const EXACT_BELOW: u64 = 2 * SUB_BUCKETS as u64;
const BUCKETS: usize = EXACT_BELOW as usize + (64 - 6) * SUB_BUCKETS;

/// Latencies in microseconds, log-linear buckets, fixed memory.
#[derive(Clone)]
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

// ----- the run -----

/// Counters every thread bumps, for the progress bar.
#[derive(Default)]
struct Progress {
    pairs: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// One thread's results.
#[derive(Default)]
struct ThreadResult {
    preempt_granted: Histogram,
    preempt_refused: Histogram,
    release: Histogram,
    /// A release answered `not_owner`: the lock was lost, which the bench never expects.
    not_owner: u64,
    /// Failed operations by error kind.
    errors: BTreeMap<&'static str, u64>,
    registration_failed: Option<Error>,
}

pub fn run(options: &LoadOptions) -> u8 {
    if let Err(problem) = options.validate() {
        eprintln!("error: {problem}");
        return 2;
    }
    let progress = Arc::new(Progress::default());
    // Every client registers before the clock starts, so registration is not measured.
    let barrier = Arc::new(Barrier::new(options.clients as usize + 1));
    let started = Instant::now();
    let mut threads = Vec::new();
    for index in 0..options.clients {
        let mut servers = options.servers.clone();
        servers.rotate_left(index as usize % options.servers.len());
        let (barrier, progress) = (barrier.clone(), progress.clone());
        let (duration, locks, contended) = (options.duration, options.locks, options.contended);
        threads.push(std::thread::spawn(move || {
            client_loop(
                index, servers, &barrier, &progress, duration, locks, contended,
            )
        }));
    }
    barrier.wait();
    let clock = Instant::now();
    show_progress(options.duration, &progress, clock);
    let mut total = ThreadResult::default();
    let mut registration_errors = Vec::new();
    for thread in threads {
        let result = thread.join().expect("a load thread panicked");
        if let Some(error) = result.registration_failed {
            registration_errors.push(error);
            continue;
        }
        total.preempt_granted.merge(&result.preempt_granted);
        total.preempt_refused.merge(&result.preempt_refused);
        total.release.merge(&result.release);
        total.not_owner += result.not_owner;
        for (kind, count) in result.errors {
            *total.errors.entry(kind).or_default() += count;
        }
    }
    let measured = clock.elapsed();
    if registration_errors.len() == options.clients as usize {
        eprintln!(
            "error: no client could register: {}",
            registration_errors[0]
        );
        return 2;
    }
    let report = Report {
        total: &total,
        measured,
        registration_failures: registration_errors.len(),
        setup: clock - started,
    };
    if options.json {
        println!("{}", report.json(options));
    } else {
        println!("{}", report.render(options));
    }
    let failures = total.errors.values().sum::<u64>() + total.not_owner;
    if failures > 0 || !registration_errors.is_empty() {
        1
    } else {
        0
    }
}

fn show_progress(duration: Duration, progress: &Progress, clock: Instant) {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    // Bounded by the run's duration.
    while clock.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
        let seconds = clock.elapsed().as_secs_f64().max(1e-9);
        let pairs = progress.pairs.load(Ordering::Relaxed);
        bar.set_position(clock.elapsed().as_secs().min(duration.as_secs()));
        bar.set_message(format!(
            "{:.0} pairs/s, {} refused, {} errors",
            pairs as f64 / seconds,
            progress.refused.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
}

fn client_loop(
    index: u32,
    servers: Vec<String>,
    barrier: &Barrier,
    progress: &Progress,
    duration: Duration,
    locks: u32,
    contended: bool,
) -> ThreadResult {
    let mut result = ThreadResult::default();
    let client = Client::new(servers, ClientOptions::default());
    let registered = client.and_then(|mut client| client.register().map(|_| client));
    barrier.wait();
    let mut client = match registered {
        Ok(client) => client,
        Err(error) => {
            result.registration_failed = Some(error);
            return result;
        }
    };
    // Lock names are made once, so the loop does not format a name per operation.
    let names: Vec<String> = if contended {
        vec!["bench-hot".to_string()]
    } else {
        (0..locks).map(|k| format!("bench-{index}-{k}")).collect()
    };
    let end = Instant::now() + duration;
    let mut turn = 0usize;
    let fail = |result: &mut ThreadResult, error: &Error| {
        *result.errors.entry(error_kind(error)).or_default() += 1;
        progress.errors.fetch_add(1, Ordering::Relaxed);
    };
    // Bounded by the run's end: every operation ends within its own timeout.
    while Instant::now() < end {
        let name = &names[turn % names.len()];
        turn = turn.wrapping_add(1);
        let start = Instant::now();
        match client.preempt(name) {
            Ok(Preempt::Granted { .. }) => result.preempt_granted.record(micros(start)),
            Ok(Preempt::HeldBy { .. }) => {
                result.preempt_refused.record(micros(start));
                progress.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(error) => {
                fail(&mut result, &error);
                continue;
            }
        }
        let start = Instant::now();
        match client.release(name) {
            Ok(Release::Released) => {
                result.release.record(micros(start));
                progress.pairs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Release::NotOwner) => result.not_owner += 1,
            Err(error) => fail(&mut result, &error),
        }
    }
    result
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

struct Report<'a> {
    total: &'a ThreadResult,
    measured: Duration,
    registration_failures: usize,
    setup: Duration,
}

impl Report<'_> {
    fn rate(&self, count: u64) -> f64 {
        count as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    fn latencies(&self) -> [(&'static str, &Histogram); 3] {
        [
            ("preempt granted", &self.total.preempt_granted),
            ("preempt refused", &self.total.preempt_refused),
            ("release", &self.total.release),
        ]
    }

    fn render(&self, options: &LoadOptions) -> String {
        use tabled::builder::Builder;
        use tabled::settings::Style;
        let total = self.total;
        let mut summary = Builder::default();
        let shape = if options.contended {
            format!("{} clients on one lock (contended)", options.clients)
        } else {
            format!(
                "{} clients, {} locks each (uncontended)",
                options.clients, options.locks
            )
        };
        summary.push_record(["workload".to_string(), shape]);
        summary.push_record([
            "servers".to_string(),
            format!("{} ({})", options.servers.len(), options.servers.join(", ")),
        ]);
        summary.push_record([
            "measured".to_string(),
            format!(
                "{:.1}s (registration took {:.1}s before)",
                self.measured.as_secs_f64(),
                self.setup.as_secs_f64()
            ),
        ]);
        summary.push_record([
            "pairs/s (granted preempt + release)".to_string(),
            format!("{:.0}", self.rate(total.release.count())),
        ]);
        summary.push_record([
            "hand-offs/s (grants)".to_string(),
            format!("{:.0}", self.rate(total.preempt_granted.count())),
        ]);
        summary.push_record([
            "refused preempts/s".to_string(),
            format!("{:.0}", self.rate(total.preempt_refused.count())),
        ]);
        summary.push_record(["failures".to_string(), self.failures()]);
        let mut summary = summary.build();
        summary.with(Style::rounded());
        let mut latency = Builder::default();
        latency.push_record(["operation", "count", "p50", "p90", "p99", "max"].map(String::from));
        for (name, histogram) in self.latencies() {
            let ms = |micros: u64| format!("{:.2}ms", micros as f64 / 1_000.0);
            latency.push_record([
                name.to_string(),
                histogram.count().to_string(),
                ms(histogram.quantile(0.50)),
                ms(histogram.quantile(0.90)),
                ms(histogram.quantile(0.99)),
                ms(histogram.max()),
            ]);
        }
        let mut latency = latency.build();
        latency.with(Style::rounded());
        format!("{summary}\n{latency}")
    }

    fn failures(&self) -> String {
        let mut parts: Vec<String> = self
            .total
            .errors
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        if self.total.not_owner > 0 {
            parts.push(format!(
                "{} releases answered not_owner",
                self.total.not_owner
            ));
        }
        if self.registration_failures > 0 {
            parts.push(format!(
                "{} clients could not register",
                self.registration_failures
            ));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    fn json(&self, options: &LoadOptions) -> serde_json::Value {
        let total = self.total;
        let latency: serde_json::Map<String, serde_json::Value> = self
            .latencies()
            .iter()
            .map(|(name, histogram)| {
                let ms = |micros: u64| micros as f64 / 1_000.0;
                (
                    name.replace(' ', "_"),
                    json!({"count": histogram.count(), "p50_ms": ms(histogram.quantile(0.5)),
                           "p90_ms": ms(histogram.quantile(0.9)),
                           "p99_ms": ms(histogram.quantile(0.99)), "max_ms": ms(histogram.max())}),
                )
            })
            .collect();
        json!({
            "servers": options.servers, "clients": options.clients,
            "contended": options.contended, "locks": options.locks,
            "seconds": self.measured.as_secs_f64(),
            "pairs_per_second": self.rate(total.release.count()),
            "grants_per_second": self.rate(total.preempt_granted.count()),
            "refused_per_second": self.rate(total.preempt_refused.count()),
            "errors": total.errors, "not_owner": total.not_owner,
            "registration_failures": self.registration_failures,
            "latency": latency,
        })
    }
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

    #[test]
    fn bench_servers_are_a_count_or_addresses() {
        assert!(matches!(
            parse_bench_servers("5"),
            Ok(BenchServers::Simulated(5))
        ));
        assert!(matches!(
            parse_bench_servers("127.0.0.1:7001,127.0.0.1:7002"),
            Ok(BenchServers::Tcp(list)) if list.0.len() == 2
        ));
        assert!(parse_bench_servers("five").is_err());
    }
}
