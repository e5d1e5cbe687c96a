//! The TCP load generator behind `lockstep bench --servers HOST:PORT,...`: closed-loop clients
//! against a real cluster (`lockstep::loadgen`), preempting (or with `--acquire`, waiting in
//! the lock's line with blocking acquires) and (when granted) releasing as fast as the cluster
//! answers, with sessions on if `--ttl` asks; or, with
//! `--keepalive-sessions`, many sessions that only renew ([`keepalive`]).
//!
//! Latencies go into a fixed-size log-linear histogram per client (at most 3% error, constant
//! memory however long the run), merged at the end. It must never hold more than that: no
//! per-operation samples are kept.
//!
//! With `--metrics`, the servers' CPU time is read from their metrics endpoints
//! (`lockstep_process_cpu_seconds_total`) when the measured period starts and ends, and divided
//! by the operations answered: a figure a shared machine disturbs much less than a rate.

pub mod keepalive;

use super::client::{ServerList, parse_server_list};
use indicatif::{ProgressBar, ProgressStyle};
use lockstep::loadgen::{self, Histogram, LoadPlan, LoadResult, Progress, Tally};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Most client threads.
pub const CLIENTS_MAX: u32 = 1_024;
/// Longest run.
pub const DURATION_MAX: Duration = Duration::from_secs(3_600);
/// Longest `--ttl`: the servers' default `--session-ttl-max`.
pub const TTL_MAX: Duration = Duration::from_secs(3_600);
/// How long reading one server's metrics or status may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// `--tls-ca` and `--tls-server-name`.
    pub tls: super::client::TlsFlags,
    /// `--ttl`: sessions on, with this TTL.
    pub ttl: Option<Duration>,
    /// `--metrics`: the servers' metrics addresses, for their CPU time.
    pub metrics: Vec<String>,
    /// `--acquire`: blocking acquires instead of preempts.
    pub acquire: bool,
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
        validate_ttl(self.ttl)
    }
}

/// `--ttl` within 1s..=60m (the servers' default bounds; under 1 s the flag's parser refuses).
pub fn validate_ttl(ttl: Option<Duration>) -> Result<(), String> {
    match ttl {
        Some(ttl) if ttl < Duration::from_secs(1) || ttl > TTL_MAX => {
            Err("--ttl must be within 1s..=60m".into())
        }
        _ => Ok(()),
    }
}

/// The CPU seconds the servers behind `metrics` have used so far, summed: each one's
/// `lockstep_process_cpu_seconds_total`. `Err` names the server that did not say.
pub fn servers_cpu_seconds(metrics: &[String]) -> Result<f64, String> {
    metrics.iter().try_fold(0.0, |sum, address| {
        let text = scrape(address).map_err(|problem| format!("--metrics {address}: {problem}"))?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("lockstep_process_cpu_seconds_total "))
            .ok_or_else(|| {
                format!(
                    "--metrics {address}: no lockstep_process_cpu_seconds_total \
                     (a server older than this bench?)"
                )
            })?;
        let seconds: f64 = value.trim().parse().map_err(|_| {
            format!("--metrics {address}: lockstep_process_cpu_seconds_total is {value:?}")
        })?;
        Ok(sum + seconds)
    })
}

/// `GET /metrics` over plain HTTP/1.0, answered by one response that ends when the server
/// closes the connection (it keeps none alive).
fn scrape(address: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let socket = address
        .to_socket_addrs()
        .map_err(|error| error.to_string())?
        .next()
        .ok_or("no address")?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, PROBE_TIMEOUT)
        .map_err(|error| format!("cannot connect: {error}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .and_then(|()| write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n"))
        .map_err(|error| format!("sending failed: {error}"))?;
    let mut text = String::new();
    // Bounded by the read timeout and the server's bounded answer.
    stream
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|error| format!("reading failed: {error}"))?;
    match text.lines().next() {
        Some(status) if status.contains(" 200 ") => Ok(text),
        status => Err(format!("answered {:?}", status.unwrap_or(""))),
    }
}

/// The servers' CPU seconds at the start of a measured period, to subtract at its end.
pub struct CpuMeter {
    metrics: Vec<String>,
    before: Option<Result<f64, String>>,
    bench_before: f64,
}

impl CpuMeter {
    pub fn new(metrics: &[String]) -> CpuMeter {
        CpuMeter {
            metrics: metrics.to_vec(),
            before: None,
            bench_before: 0.0,
        }
    }

    /// Reads the servers' CPU time (if `--metrics` named them) and this process's own.
    pub fn start(&mut self) {
        if !self.metrics.is_empty() {
            self.before = Some(servers_cpu_seconds(&self.metrics));
        }
        self.bench_before = lockstep::net::metrics::process_cpu_seconds();
    }

    /// The CPU seconds used since `start`: the servers' (`None` without `--metrics`, `Err` if a
    /// server did not say) and the bench's own.
    pub fn finish(&self) -> (Option<Result<f64, String>>, f64) {
        let bench = lockstep::net::metrics::process_cpu_seconds() - self.bench_before;
        let servers = self.before.as_ref().map(|before| {
            let before = before.clone()?;
            Ok(servers_cpu_seconds(&self.metrics)? - before)
        });
        (servers, bench)
    }
}

/// The CPU figures of a report: seconds and microseconds per operation, or why there are none.
pub fn cpu_json(cpu: &(Option<Result<f64, String>>, f64), operations: u64) -> serde_json::Value {
    let per = |seconds: f64| (operations > 0).then(|| seconds * 1e6 / operations as f64);
    let (servers, bench) = cpu;
    let servers = match servers {
        None => json!(null),
        Some(Err(problem)) => json!({"error": problem}),
        Some(Ok(seconds)) => json!({"seconds": seconds, "us_per_operation": per(*seconds)}),
    };
    json!({"servers": servers, "bench": {"seconds": bench, "us_per_operation": per(*bench)}})
}

/// The CPU figures for people.
pub fn cpu_text(cpu: &(Option<Result<f64, String>>, f64), operations: u64, what: &str) -> String {
    let per = |seconds: f64| {
        if operations == 0 {
            "-".to_string()
        } else {
            format!("{:.1} µs per {what}", seconds * 1e6 / operations as f64)
        }
    };
    let (servers, bench) = cpu;
    let servers = match servers {
        None => "not measured (--metrics)".to_string(),
        Some(Err(problem)) => format!("unknown: {problem}"),
        Some(Ok(seconds)) => format!("{seconds:.2}s, {}", per(*seconds)),
    };
    format!("servers {servers}; this bench {bench:.2}s, {}", per(*bench))
}

// ----- the run -----

/// Runs the TCP load generator against a real cluster and prints its report.
pub fn run(options: &LoadOptions) -> u8 {
    if let Err(problem) = options.validate() {
        eprintln!("error: {problem}");
        return 2;
    }
    let tls = match options.tls.load() {
        Ok(tls) => tls,
        Err(problem) => {
            eprintln!("error: {problem}");
            return 2;
        }
    };
    let plan = LoadPlan {
        servers: options.servers.clone(),
        clients: options.clients,
        duration: options.duration,
        locks: options.locks,
        contended: options.contended,
        tls,
        ttl: options.ttl,
        acquire: options.acquire,
    };
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));
    let (start_sender, start) = std::sync::mpsc::channel();
    let display = {
        let (progress, done, duration) = (progress.clone(), done.clone(), options.duration);
        let mut meter = CpuMeter::new(&options.metrics);
        std::thread::spawn(move || {
            let clock = start.recv().ok()?;
            // Here, not in the runtime's thread: the clients are running already.
            meter.start();
            show_progress(duration, &progress, &done, clock);
            Some(meter)
        })
    };
    let result = loadgen::run(&plan, progress, move |clock| {
        let _ = start_sender.send(clock);
    });
    done.store(true, Ordering::Relaxed);
    let meter = display.join().ok().flatten();
    let cpu = meter.map(|meter| meter.finish());
    let result = match result {
        Ok(result) => result,
        Err(error) => {
            eprintln!("error: could not start the load generator: {error}");
            return 2;
        }
    };
    if result.registration_failures.len() == options.clients as usize {
        eprintln!(
            "error: no client could register: {}",
            result.registration_failures[0]
        );
        return 2;
    }
    let report = Report {
        result: &result,
        cpu,
    };
    if options.json {
        println!("{}", report.json(options));
    } else {
        println!("{}", report.render(options));
    }
    if result.total.failures() > 0 || !result.registration_failures.is_empty() {
        1
    } else {
        0
    }
}

fn show_progress(duration: Duration, progress: &Progress, done: &AtomicBool, clock: Instant) {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    // Bounded by the run's duration, or its end if sooner (no client could register).
    while clock.elapsed() < duration && !done.load(Ordering::Relaxed) {
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

struct Report<'a> {
    result: &'a LoadResult,
    /// The servers' and the bench's CPU seconds over the measured period.
    cpu: Option<(Option<Result<f64, String>>, f64)>,
}

impl Report<'_> {
    fn total(&self) -> &Tally {
        &self.result.total
    }

    fn rate(&self, count: u64) -> f64 {
        count as f64 / self.result.measured.as_secs_f64().max(1e-9)
    }

    fn latencies(&self) -> [(&'static str, &Histogram); 5] {
        [
            ("preempt granted", &self.total().preempt_granted),
            ("preempt refused", &self.total().preempt_refused),
            ("acquire granted", &self.total().acquire_granted),
            ("release", &self.total().release),
            ("keepalive", &self.total().keepalive),
        ]
    }

    /// Every request answered: what the servers' CPU is divided by, besides pairs.
    fn answered(&self) -> u64 {
        self.latencies().iter().map(|(_, h)| h.count()).sum()
    }

    fn render(&self, options: &LoadOptions) -> String {
        use tabled::builder::Builder;
        use tabled::settings::Style;
        let total = self.total();
        let mut summary = Builder::default();
        let shape = if options.contended {
            format!("{} clients on one lock (contended)", options.clients)
        } else {
            format!(
                "{} clients, {} locks each (uncontended)",
                options.clients, options.locks
            )
        };
        let shape = if options.acquire {
            format!("{shape}, blocking acquire + release")
        } else {
            format!("{shape}, preempt + release")
        };
        summary.push_record(["workload".to_string(), shape]);
        summary.push_record([
            "servers".to_string(),
            format!("{} ({})", options.servers.len(), options.servers.join(", ")),
        ]);
        summary.push_record([
            "TLS".to_string(),
            match &options.tls.tls_ca {
                Some(ca) => format!("on (CA {})", ca.display()),
                None => "off".to_string(),
            },
        ]);
        summary.push_record([
            "sessions".to_string(),
            match options.ttl {
                Some(ttl) => format!("TTL {ttl:?}, a keepalive every {:?}", ttl / 3),
                None => "never expire (no --ttl)".to_string(),
            },
        ]);
        summary.push_record([
            "measured".to_string(),
            format!(
                "{:.1}s (registration took {:.1}s before)",
                self.result.measured.as_secs_f64(),
                self.result.setup.as_secs_f64()
            ),
        ]);
        summary.push_record([
            "pairs/s (granted preempt + release)".to_string(),
            format!("{:.0}", self.rate(total.release.count())),
        ]);
        summary.push_record([
            "hand-offs/s (grants)".to_string(),
            format!("{:.0}", self.rate(total.grants())),
        ]);
        if options.acquire {
            let waited = &total.handoffs_waited;
            summary.push_record([
                "hand-offs an acquire waited through".to_string(),
                format!(
                    "max {}, p99 {}, p50 {} (fair: at most clients - 1 = {})",
                    waited.max(),
                    waited.quantile(0.99),
                    waited.quantile(0.5),
                    options.clients.saturating_sub(1)
                ),
            ]);
        }
        summary.push_record([
            "refused preempts/s".to_string(),
            format!("{:.0}", self.rate(total.preempt_refused.count())),
        ]);
        if let Some(cpu) = &self.cpu {
            summary.push_record([
                "CPU per pair".to_string(),
                cpu_text(cpu, total.release.count(), "pair"),
            ]);
            summary.push_record([
                "CPU per hand-off".to_string(),
                cpu_text(cpu, total.grants(), "hand-off"),
            ]);
            summary.push_record([
                "CPU per request answered".to_string(),
                cpu_text(cpu, self.answered(), "request"),
            ]);
        }
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
            .total()
            .errors
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        if self.total().not_owner > 0 {
            parts.push(format!(
                "{} releases answered not_owner",
                self.total().not_owner
            ));
        }
        if !self.result.registration_failures.is_empty() {
            parts.push(format!(
                "{} clients could not register",
                self.result.registration_failures.len()
            ));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    fn json(&self, options: &LoadOptions) -> serde_json::Value {
        let total = self.total();
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
            "tls": options.tls.tls_ca.is_some(),
            "ttl_ms": options.ttl.map(|ttl| ttl.as_millis() as u64),
            "seconds": self.result.measured.as_secs_f64(),
            "pairs_per_second": self.rate(total.release.count()),
            "acquire": options.acquire,
            "grants_per_second": self.rate(total.grants()),
            "handoffs_waited": json!({"max": total.handoffs_waited.max(),
                "p99": total.handoffs_waited.quantile(0.99),
                "p50": total.handoffs_waited.quantile(0.5),
                "acquires": total.handoffs_waited.count()}),
            "refused_per_second": self.rate(total.preempt_refused.count()),
            "errors": total.errors, "not_owner": total.not_owner,
            "registration_failures": self.result.registration_failures.len(),
            "latency": latency,
            "requests_answered": self.answered(),
            "cpu_per_pair": self.cpu.as_ref().map(|cpu| cpu_json(cpu, total.release.count())),
            "cpu_per_handoff": self.cpu.as_ref().map(|cpu| cpu_json(cpu, total.grants())),
            "cpu_per_request": self.cpu.as_ref().map(|cpu| cpu_json(cpu, self.answered())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
