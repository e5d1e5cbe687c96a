//! `lockstep explore`: flags, progress and tables. The explorer itself is
//! `lockstep::sim::explore`; slicing, the shard result file and merging are
//! `lockstep::sim::shard`. This file only parses flags, prints, and picks the exit code.

use crate::{EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS};
use clap::Args;
use lockstep::sim::explore::{
    self, ExploreOptions, ExploreSummary, FirstFailure, MinimizeBudget, Progress, SeedResult,
};
use lockstep::sim::guidance::{self, FirstReach, GuidanceSettings};
use lockstep::sim::shard::{self, ExploreConfig, MergedSummary, SeedRange, Shard, ShardContext};
use lockstep::sim::swarm::SwarmBounds;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ExploreArgs {
    /// How many seeds to run (with --shard: in all shards together).
    #[arg(long, value_name = "N", required_unless_present = "merge")]
    seeds: Option<u64>,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    from: u64,
    /// Run only shard K of N equal slices of the range, K counting from 0 (0/4 to 3/4), as
    /// Kubernetes numbers JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Combine shard results written by `explore --json` into one summary instead of
    /// running seeds. Exit 0 no failure, 1 failures, 2 unusable or incomplete input.
    #[arg(
        long,
        value_name = "FILE",
        num_args = 1..,
        conflicts_with_all = [
            "seeds", "from", "shard", "jobs", "servers", "duration", "out", "minimize_runs",
            "minimize_time", "print_scenarios", "no_guidance", "guidance_batch"
        ]
    )]
    merge: Vec<PathBuf>,
    /// Worker threads (default: every core). Each simulation stays single-threaded.
    #[arg(long, value_name = "J")]
    jobs: Option<usize>,
    /// Range of cluster sizes, e.g. 3..5 or 5.
    #[arg(long, value_name = "A..B", default_value = "1..7", value_parser = parse_server_range)]
    servers: (u32, u32),
    /// Length of the safety phase under faults (the liveness phase adds 4s).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = crate::parse_duration_flag)]
    duration: std::time::Duration,
    /// Where to write each failing seed's minimized scenario, as <seed>.yaml, with the
    /// original run's history (<seed>.history.jsonl) and the minimized run's timeline, a
    /// self-contained HTML page with the failing step highlighted (<seed>.html).
    #[arg(long, value_name = "DIR", default_value = "failures")]
    out: PathBuf,
    /// Re-runs a minimization may spend on one failing seed.
    #[arg(long, value_name = "RUNS", default_value_t = 300)]
    minimize_runs: usize,
    /// Wall time a minimization may spend on one failing seed (0s: one candidate). Whichever
    /// of this and --minimize-runs runs out first stops it; the smallest failing scenario so
    /// far is written.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_minimize_time)]
    minimize_time: std::time::Duration,
    /// Print every seed's configuration and verdict, not only failures.
    #[arg(long)]
    verbose: bool,
    /// Print the result as JSON (the shard result format in README) on stdout; per-seed
    /// lines go to stderr.
    #[arg(long)]
    json: bool,
    /// Print each seed's scenario as YAML instead of running it (to see what a seed does, or
    /// to keep it as a scenario file). This is the seed's own draw: a seed that guidance
    /// guides runs another configuration, written to its failure file if it fails.
    #[arg(long)]
    print_scenarios: bool,
    /// Turn coverage guidance off: every seed runs the configuration its own number draws.
    /// With guidance (the default) the range runs in batches (--guidance-batch); after the
    /// first, 30% of each batch's seeds run a mutation of an earlier seed's configuration
    /// that reached a rare protocol branch (one fewer than 5% of seeds so far took). Which
    /// seeds are guided, and how, depends only on --from, --seeds, --shard and the flags that
    /// shape seeds, never on --jobs: a run (or a shard) is reproducible from its command line.
    #[arg(long)]
    no_guidance: bool,
    /// Seeds per guidance batch: what guidance learns from a batch is used from the next one
    /// on, and every seed of a batch finishes before the next starts.
    #[arg(long, value_name = "N", default_value_t = guidance::BATCH_SEEDS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    guidance_batch: u64,
}

fn parse_server_range(text: &str) -> Result<(u32, u32), String> {
    let (low, high) = match text.split_once("..") {
        Some((low, high)) => (low, high.trim_start_matches('=')),
        None => (text, text),
    };
    let number = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not a range like 3..5"))
    };
    let (low, high) = (number(low)?, number(high)?);
    if low == 0 || high > lockstep::sim::scenario::SERVERS_MAX || low > high {
        return Err(format!(
            "{text:?}: servers must be within 1..{} and low <= high",
            lockstep::sim::scenario::SERVERS_MAX
        ));
    }
    Ok((low, high))
}

/// A minimization budget: any duration from 0 up to a day (longer is surely a typo).
fn parse_minimize_time(text: &str) -> Result<std::time::Duration, String> {
    const MINIMIZE_TIME_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3_600);
    match lockstep::sim::scenario::parse_duration(text) {
        Some(duration) if duration <= MINIMIZE_TIME_MAX => Ok(duration),
        Some(_) => Err(format!("{text:?} is longer than a day")),
        None => Err(format!(
            "{text:?} is not a duration (use a number with ms, s or m)"
        )),
    }
}

pub fn run(args: ExploreArgs) -> u8 {
    if !args.merge.is_empty() {
        return run_merge(&args.merge, args.json);
    }
    let seeds = args.seeds.expect("clap requires --seeds without --merge");
    match plan(&args, seeds) {
        Ok((options, context)) => run_seeds(&args, options, context),
        Err(problem) => {
            eprintln!("error: {problem}");
            EXIT_BAD_INPUT
        }
    }
}

/// Checks the flags and works out this process's slice of seeds.
fn plan(args: &ExploreArgs, seeds: u64) -> Result<(ExploreOptions, ShardContext), String> {
    if seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    if args.from.checked_add(seeds).is_none() {
        return Err(format!(
            "--from {} --seeds {seeds} runs past the last seed",
            args.from
        ));
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 || jobs > 1_024 {
        return Err(format!("--jobs {jobs} is outside 1..=1024"));
    }
    let shard = args.shard.unwrap_or(Shard::WHOLE);
    if shard.count > seeds {
        return Err(format!(
            "--shard {shard}: {} shards for {seeds} seeds would leave some empty; use at most \
             {seeds}",
            shard.count
        ));
    }
    let slice = shard.slice(SeedRange {
        from: args.from,
        seeds,
    });
    let out_dir = std::path::absolute(&args.out)
        .map_err(|error| format!("--out {}: {error}", args.out.display()))?;
    let bounds = SwarmBounds {
        servers_min: args.servers.0,
        servers_max: args.servers.1,
        safety: args.duration,
    };
    let guidance = (!args.no_guidance).then_some(GuidanceSettings {
        batch_seeds: args.guidance_batch,
        ..GuidanceSettings::default()
    });
    let context = ShardContext {
        config: ExploreConfig {
            version: env!("CARGO_PKG_VERSION").into(),
            from: args.from,
            seeds,
            servers_min: args.servers.0,
            servers_max: args.servers.1,
            duration_ns: u64::try_from(args.duration.as_nanos()).expect("at most an hour"),
            guidance,
        },
        shard,
        host: shard::host_name(),
        out_dir: out_dir.clone(),
        jobs: jobs as u64,
    };
    let options = ExploreOptions {
        seeds: slice.seeds,
        from: slice.from,
        jobs,
        bounds,
        out_dir,
        minimize: MinimizeBudget {
            runs_max: args.minimize_runs,
            wall_max: args.minimize_time,
        },
        scenario_of: explore::swarm_scenario,
        guidance,
    };
    Ok((options, context))
}

fn run_seeds(args: &ExploreArgs, options: ExploreOptions, context: ShardContext) -> u8 {
    use indicatif::{ProgressBar, ProgressStyle};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    if args.print_scenarios {
        for seed in options.from..options.from + options.seeds {
            let shape = lockstep::sim::swarm::Shape::random(seed, &options.bounds);
            println!("---\n{}", shape.build().to_yaml());
        }
        return EXIT_PASS;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(error) = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)) {
        eprintln!("warning: Ctrl-C will not stop cleanly: {error}");
    }
    let bar = ProgressBar::new(options.seeds);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} seeds, {per_sec}, {msg} (eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message("0 failed");
    // Without a terminal the bar draws nothing: a batch job's log gets a line now and then.
    let mut plain = PlainProgress::new(Instant::now(), PLAIN_PROGRESS_EVERY);
    // With --json, stdout carries only the JSON document, so that it can go to a file.
    let say = |line: String| {
        if !bar.is_hidden() {
            bar.println(line);
        } else if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let mut failed = 0u64;
    let summary = explore::explore(&options, &stop, |progress| match progress {
        // A failure is printed when found; minimizing it may take up to the budget.
        Progress::Found {
            seed,
            description,
            failure,
        } => {
            failed += 1;
            bar.set_message(format!("{failed} failed"));
            say(format!(
                "FAIL seed {seed}: {}: {}\n         config: {description}",
                failure.kind, failure.message
            ));
        }
        Progress::Finished(result) => {
            bar.inc(1);
            if bar.is_hidden()
                && let Some(line) =
                    plain.tick(Instant::now(), bar.position(), options.seeds, failed)
            {
                eprintln!("{line}");
            }
            if result.failure.is_some() {
                say(render_minimized(result));
            } else if args.verbose {
                say(format!("ok   seed {}: {}", result.seed, result.description));
            }
        }
    });
    bar.finish_and_clear();
    let whole = SeedRange {
        from: context.config.from,
        seeds: context.config.seeds,
    };
    let sharded = args.shard.map(|shard| (shard, whole));
    if args.json {
        let result = shard::ShardResult::from_summary(context, &summary);
        println!(
            "{}",
            serde_json::to_string_pretty(&result).expect("the result serialises")
        );
    } else {
        println!("{}", render_summary(&summary, &options, sharded));
    }
    if summary.seeds_failed > 0 {
        EXIT_FAIL
    } else {
        EXIT_PASS
    }
}

/// How often a run without a terminal reports its progress.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Progress as plain lines, for runs whose stderr is no terminal (a Kubernetes or Slurm job's
/// log, a pipe), where the bar draws nothing: one line per `every` of wall time, at the first
/// seed finished after each mark.
struct PlainProgress {
    started: Instant,
    every: Duration,
    next: Duration,
}

impl PlainProgress {
    fn new(started: Instant, every: Duration) -> PlainProgress {
        PlainProgress {
            started,
            every,
            next: every,
        }
    }

    /// The line to print now, if a mark has passed since the last one.
    fn tick(&mut self, now: Instant, done: u64, seeds: u64, failed: u64) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.next {
            return None;
        }
        // Marks missed while one seed ran long are skipped, not printed in a burst.
        while self.next <= elapsed {
            self.next += self.every;
        }
        let per_s = done as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
        let left = seeds.saturating_sub(done);
        let eta = if per_s > 0.0 {
            format!("{:.0}s", left as f64 / per_s)
        } else {
            "?".to_string()
        };
        Some(format!(
            "progress: {done}/{seeds} seeds in {:.0}s, {per_s:.1} seeds/s, {failed} failed, eta {eta}",
            elapsed.as_secs_f64()
        ))
    }
}

/// The lines that follow a failure once it is minimized and written.
fn render_minimized(result: &SeedResult) -> String {
    let mut text = format!("     seed {}:", result.seed);
    if let Some(spent) = &result.minimization {
        text.push_str(&format!(
            " minimized in {} runs, {:.1}s",
            spent.runs, spent.wall_seconds
        ));
    }
    if let Some((from, to)) = &result.minimized {
        text.push_str(&format!(", from {from} to {to}"));
    }
    if let Some(why) = result.minimization.and_then(|spent| spent.cut_short) {
        text.push_str(&format!("\n         minimizing cut short by {why}"));
    }
    match &result.written_to {
        Some(path) => text.push_str(&format!(
            "\n         replay: lockstep run {}\n         timeline: {}",
            path.display(),
            path.with_extension("html").display()
        )),
        None => {
            let failure = result.failure.as_ref().expect("only failures are rendered");
            text.push_str(&format!("\n         not written: {}", failure.message));
        }
    }
    text
}

/// A first-failure line: where it was and how long finding it took, minimizing excluded.
fn render_first(first: &FirstFailure, order: &str) -> String {
    format!(
        "seed {} {order}, after {} seeds, {:.1}s wall",
        first.seed, first.seeds_run, first.wall_seconds
    )
}

/// The first failure, both ways, and what minimizing spent; nothing when nothing failed.
fn push_first_failure_rows(builder: &mut tabled::builder::Builder, summary: &ExploreSummary) {
    if let (Some(by_seed), Some(found)) =
        (&summary.first_failure_by_seed, &summary.first_failure_found)
    {
        builder.push_record([
            "first failure\n(minimizing excluded)".to_string(),
            format!(
                "{}\n{}",
                render_first(by_seed, "by seed order"),
                render_first(found, "by wall time")
            ),
        ]);
        let cut_short = summary
            .failures
            .iter()
            .filter(|r| r.minimization.is_some_and(|m| m.cut_short.is_some()))
            .count();
        builder.push_record([
            "minimizing".to_string(),
            format!(
                "{:.1}s wall over {} failure(s), {cut_short} cut short by a budget",
                summary.minimize_wall_seconds, summary.seeds_failed
            ),
        ]);
    }
}

fn render_summary(
    summary: &ExploreSummary,
    options: &ExploreOptions,
    sharded: Option<(Shard, SeedRange)>,
) -> String {
    use tabled::builder::Builder;
    use tabled::settings::Style;
    let mut builder = Builder::default();
    if let Some((shard, whole)) = sharded {
        let slice = SeedRange {
            from: options.from,
            seeds: options.seeds,
        };
        builder.push_record(["shard".to_string(), format!("{shard}: {slice}, of {whole}")]);
    }
    let rate = summary.seeds_run as f64 / summary.wall_seconds.max(1e-9);
    builder.push_record([
        "seeds run".to_string(),
        format!(
            "{}{} in {:.1}s wall ({rate:.1} seeds/s)",
            summary.seeds_run,
            if summary.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            summary.wall_seconds
        ),
    ]);
    builder.push_record([
        "simulated".to_string(),
        format!(
            "{:.0}s, {} events",
            summary.simulated_seconds, summary.events
        ),
    ]);
    let failures = if summary.failures_by_kind.is_empty() {
        "none".to_string()
    } else {
        summary
            .failures_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    builder.push_record(["failures by invariant".to_string(), failures]);
    push_first_failure_rows(&mut builder, summary);
    if let Some((seed, wall_ms)) = summary.slowest_seed {
        builder.push_record([
            "slowest seed".to_string(),
            format!("{seed} ({wall_ms:.0}ms wall)"),
        ]);
    }
    builder.push_record([
        "protocol coverage".to_string(),
        coverage_text(&summary.coverage, summary.seeds_run),
    ]);
    builder.push_record([
        "coverage guidance".to_string(),
        guidance_text(
            summary.guidance,
            summary.seeds_guided,
            summary.seeds_run,
            &summary.first_reaches.list(),
            options.from,
        ),
    ]);
    let mut table = builder.build();
    table.with(Style::rounded());
    let verdict = if summary.seeds_failed == 0 && summary.interrupted {
        format!(
            "PASS so far: {} seeds, no failure (interrupted)",
            summary.seeds_run
        )
    } else if summary.seeds_failed == 0 {
        format!("PASS: {} seeds, no failure", summary.seeds_run)
    } else {
        format!(
            "FAIL: {} of {} seeds failed",
            summary.seeds_failed, summary.seeds_run
        )
    };
    format!("{table}\n{verdict}")
}

/// `64 of 76 branches reached; never: a.b, c.d, ...`: the node's coverage counters summed over
/// every seed, naming each branch no seed took (README lists the ones believed unreachable).
fn coverage_text(coverage: &lockstep::node::coverage::Coverage, seeds_run: u64) -> String {
    let total = lockstep::node::coverage::Branch::ALL.len();
    if seeds_run == 0 {
        return format!("no seed run ({total} branches counted)");
    }
    let unreached = coverage.unreached();
    let reached = total - unreached.len();
    if unreached.is_empty() {
        return format!("all {total} branches reached");
    }
    let names: Vec<&str> = unreached.iter().map(|branch| branch.name()).collect();
    format!(
        "{reached} of {total} branches reached; never:\n{}",
        names.join("\n")
    )
}

/// Whether guidance was on, how many seeds it guided, the seeds it took to reach every branch
/// the run reached, and the branches a guided seed was the first (lowest seed) to reach.
fn guidance_text(
    settings: Option<GuidanceSettings>,
    seeds_guided: u64,
    seeds_run: u64,
    first_reached: &[FirstReach],
    from: u64,
) -> String {
    let mut text = match settings {
        None => "off (--no-guidance)".to_string(),
        Some(settings) => format!(
            "{seeds_guided} of {seeds_run} seeds guided ({}% of each batch of {} after the \
             first)",
            settings.guided_percent, settings.batch_seeds
        ),
    };
    if let Some(last) = first_reached.iter().max_by_key(|reach| reach.seed) {
        text.push_str(&format!(
            "\nevery branch reached was reached within {} seeds (last: {} at seed {})",
            last.seed - from + 1,
            last.branch,
            last.seed
        ));
    }
    let by_guided: Vec<String> = first_reached
        .iter()
        .filter_map(|reach| {
            let guided = reach.guided.as_ref()?;
            Some(format!(
                "{} (seed {}, from seed {})",
                reach.branch, reach.seed, guided.parent
            ))
        })
        .collect();
    if !by_guided.is_empty() {
        text.push_str(&format!(
            "\nfirst reached by a guided seed:\n{}",
            by_guided.join("\n")
        ));
    }
    text
}

// ----- --merge -----

fn run_merge(files: &[PathBuf], json: bool) -> u8 {
    let merged = match shard::merge(files) {
        Ok(merged) => merged,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_BAD_INPUT;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&merged).expect("the summary serialises")
        );
    } else {
        println!("{}", render_merged(&merged));
    }
    if merged.incomplete {
        // Exit 2 even when failures were found: a partial set must never pass for a run.
        eprintln!(
            "error: incomplete: no shard result covers {} ({} of {} seeds); {}",
            shard::describe_ranges(&merged.missing),
            merged.seeds_expected - merged.seeds_run,
            merged.seeds_expected,
            rerun_advice(&merged)
        );
        return EXIT_BAD_INPUT;
    }
    if merged.seeds_failed > 0 {
        EXIT_FAIL
    } else {
        EXIT_PASS
    }
}

/// Which shards to run again, for the incomplete-merge error.
fn rerun_advice(merged: &MergedSummary) -> String {
    const SHOWN_MAX: usize = 20;
    if merged.missing_shards.is_empty() {
        return "run the seeds again with the same flags and merge again".into();
    }
    let mut shards: Vec<String> = merged
        .missing_shards
        .iter()
        .take(SHOWN_MAX)
        .map(|s| s.to_string())
        .collect();
    if merged.missing_shards.len() > SHOWN_MAX {
        shards.push(format!(
            "and {} more",
            merged.missing_shards.len() - SHOWN_MAX
        ));
    }
    format!("run --shard {} again and merge again", shards.join(", "))
}

fn render_merged(merged: &MergedSummary) -> String {
    use tabled::builder::Builder;
    use tabled::settings::Style;
    let mut builder = Builder::default();
    let whole = SeedRange {
        from: merged.config.from,
        seeds: merged.config.seeds,
    };
    builder.push_record([
        "range".to_string(),
        format!(
            "{whole}, servers {}..{}, {}s safety phase, build {}",
            merged.config.servers_min,
            merged.config.servers_max,
            merged.config.duration_ns as f64 / 1e9,
            merged.config.version
        ),
    ]);
    let completeness = if merged.incomplete {
        format!(
            " of {} - INCOMPLETE, missing {}",
            merged.seeds_expected,
            shard::describe_ranges(&merged.missing)
        )
    } else {
        format!(" of {}", merged.seeds_expected)
    };
    builder.push_record([
        "seeds run".to_string(),
        format!("{}{completeness}", merged.seeds_run),
    ]);
    builder.push_record([
        "simulated".to_string(),
        format!(
            "{:.0}s, {} events",
            merged.simulated_ns as f64 / 1e9,
            merged.events
        ),
    ]);
    builder.push_record([
        "wall time".to_string(),
        format!(
            "{:.1}s longest shard, {:.1}s all {} shards together",
            merged.wall_seconds_longest_shard,
            merged.wall_seconds_sum,
            merged.shards.len()
        ),
    ]);
    builder.push_record([
        "seeds/s".to_string(),
        format!(
            "{:.1} (seeds over the longest shard's wall time); shards' own rates sum to {:.1}",
            merged.seeds_per_second, merged.seeds_per_second_sum
        ),
    ]);
    let failures = if merged.failures_by_invariant.is_empty() {
        "none".to_string()
    } else {
        let counts: Vec<String> = merged
            .failures_by_invariant
            .iter()
            .map(|count| format!("{}: {}", count.invariant, count.count))
            .collect();
        counts.join("\n")
    };
    builder.push_record(["failures by invariant".to_string(), failures]);
    if let Some(first) = merged.failures.first() {
        builder.push_record([
            "first failure".to_string(),
            format!(
                "seed {} ({}), by seed order",
                first.failure.seed, first.failure.invariant
            ),
        ]);
    }
    if let Some(slowest) = &merged.slowest_seed {
        builder.push_record([
            "slowest seed".to_string(),
            format!(
                "{} ({:.0}ms wall, shard {})",
                slowest.seed, slowest.wall_ms, slowest.shard
            ),
        ]);
    }
    builder.push_record([
        "protocol coverage".to_string(),
        coverage_text(&merged.coverage, merged.seeds_run),
    ]);
    builder.push_record([
        "coverage guidance".to_string(),
        guidance_text(
            merged.config.guidance,
            merged.seeds_guided,
            merged.seeds_run,
            &merged.first_reached,
            merged.config.from,
        ),
    ]);
    let mut table = builder.build();
    table.with(Style::rounded());
    format!(
        "{table}\n{}{}{}",
        render_shards(merged),
        render_failures(merged),
        merged_verdict(merged)
    )
}

fn render_shards(merged: &MergedSummary) -> String {
    use tabled::builder::Builder;
    use tabled::settings::Style;
    let mut builder = Builder::default();
    builder.push_record([
        "shard", "seeds", "run", "failed", "wall", "seeds/s", "host", "file",
    ]);
    for line in &merged.shards {
        builder.push_record([
            line.shard.to_string(),
            line.range.to_string(),
            format!(
                "{}{}",
                line.seeds_run,
                if line.interrupted {
                    " (interrupted)"
                } else {
                    ""
                }
            ),
            line.seeds_failed.to_string(),
            format!("{:.1}s", line.wall_seconds),
            format!("{:.1}", line.seeds_per_second),
            line.host.clone().unwrap_or_else(|| "?".into()),
            line.file.display().to_string(),
        ]);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    format!("{table}\n")
}

fn render_failures(merged: &MergedSummary) -> String {
    let mut text = String::new();
    for failure in &merged.failures {
        let host = failure.host.as_deref().unwrap_or("?");
        let place = failure.failure.written_to.as_ref().map_or_else(
            || "not written".to_string(),
            |path| format!("{host}:{}", path.display()),
        );
        text.push_str(&format!(
            "FAIL seed {} (shard {}): {}: {}\n         config: {}\n         written to {place}\n",
            failure.failure.seed,
            failure.shard,
            failure.failure.invariant,
            failure.failure.message.lines().next().unwrap_or(""),
            failure.failure.configuration,
        ));
    }
    text
}

fn merged_verdict(merged: &MergedSummary) -> String {
    let shards = merged.shards.len();
    if merged.incomplete {
        format!(
            "INCOMPLETE: {} of {} seeds run in {shards} shard(s), {} failed; seeds are missing",
            merged.seeds_run, merged.seeds_expected, merged.seeds_failed
        )
    } else if merged.seeds_failed == 0 {
        format!(
            "PASS: {} seeds in {shards} shard(s), no failure",
            merged.seeds_run
        )
    } else {
        format!(
            "FAIL: {} of {} seeds failed in {shards} shard(s)",
            merged.seeds_failed, merged.seeds_run
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep::sim::explore::{CutShort, Failure, Minimization};

    /// A batch job's log hears from a long run every 30 s: one line at the first seed after
    /// each mark, with the rate and what is left; none between marks, and no burst for marks
    /// a long seed ran past.
    #[test]
    fn without_a_terminal_progress_is_a_line_every_thirty_seconds() {
        let started = Instant::now();
        let at = |secs: u64| started + Duration::from_secs(secs);
        let mut plain = PlainProgress::new(started, PLAIN_PROGRESS_EVERY);
        assert_eq!(plain.tick(at(29), 2_900, 100_000, 0), None);
        assert_eq!(
            plain.tick(at(30), 3_000, 100_000, 1).as_deref(),
            Some("progress: 3000/100000 seeds in 30s, 100.0 seeds/s, 1 failed, eta 970s")
        );
        assert_eq!(plain.tick(at(45), 4_500, 100_000, 1), None);
        // One seed ran from 50 s to 95 s: the marks at 60 s and 90 s give one line.
        assert!(plain.tick(at(95), 5_000, 100_000, 1).is_some());
        assert_eq!(plain.tick(at(110), 6_000, 100_000, 1), None);
        assert!(plain.tick(at(120), 6_100, 100_000, 1).is_some());
    }

    #[test]
    fn the_summary_gives_the_first_failure_both_ways_and_what_minimizing_spent() {
        let failing = SeedResult {
            seed: 102,
            description: "3 servers".into(),
            failure: Some(Failure {
                kind: "liveness".into(),
                message: "c1 was not answered".into(),
            }),
            simulated_ms: 1.0,
            simulated_ns: 1_000_000,
            events: 10,
            wall_ms: 2.0,
            written_to: Some(PathBuf::from("/out/102.yaml")),
            minimized: None,
            minimization: Some(Minimization {
                runs: 4,
                wall_seconds: 30.5,
                cut_short: Some(CutShort::Time),
            }),
            coverage: Default::default(),
            guided: None,
            shape: None,
        };
        let first = |seed, seeds_run, wall_seconds| FirstFailure {
            seed,
            seeds_run,
            wall_seconds,
        };
        let summary = ExploreSummary {
            seeds_run: 10,
            seeds_failed: 1,
            wall_seconds: 40.0,
            first_failure_found: Some(first(102, 2, 1.5)),
            first_failure_by_seed: Some(first(102, 3, 1.5)),
            first_failure_arrived: Some(first(102, 9, 32.0)),
            minimize_wall_seconds: 30.5,
            failures: vec![failing.clone()],
            ..ExploreSummary::default()
        };
        let options = plan_for_test();
        let table = render_summary(&summary, &options, None);
        assert!(table.contains("(minimizing excluded)"), "{table}");
        assert!(table.contains("seed 102 by seed order, after 3 seeds, 1.5s wall"));
        assert!(table.contains("seed 102 by wall time, after 2 seeds, 1.5s wall"));
        assert!(table.contains("30.5s wall over 1 failure(s), 1 cut short by a budget"));
        assert!(
            !table.contains("after 9 seeds"),
            "the arrival figure is JSON only"
        );
        let lines = render_minimized(&failing);
        assert!(lines.contains("minimized in 4 runs, 30.5s"), "{lines}");
        assert!(lines.contains("cut short by the time budget (--minimize-time)"));
        assert!(lines.contains("replay: lockstep run /out/102.yaml"));
        assert!(lines.contains("timeline: /out/102.html"));
    }

    #[test]
    fn the_summary_names_every_protocol_branch_no_seed_reached() {
        use lockstep::node::coverage::Branch;
        let mut summary = ExploreSummary {
            seeds_run: 3,
            ..ExploreSummary::default()
        };
        for &branch in Branch::ALL {
            if branch != Branch::ProposeOverloaded && branch != Branch::ApplyRejected {
                summary.coverage.hit(branch);
            }
        }
        let text = coverage_text(&summary.coverage, summary.seeds_run);
        let total = Branch::ALL.len();
        assert!(
            text.starts_with(&format!("{} of {total} branches reached", total - 2)),
            "{text}"
        );
        assert!(text.contains("propose.overloaded") && text.contains("apply.rejected"));
        assert!(!text.contains("vote.granted"), "{text}");
        summary.coverage.hit(Branch::ProposeOverloaded);
        summary.coverage.hit(Branch::ApplyRejected);
        assert_eq!(
            coverage_text(&summary.coverage, summary.seeds_run),
            format!("all {total} branches reached")
        );
    }

    fn plan_for_test() -> ExploreOptions {
        ExploreOptions {
            seeds: 10,
            from: 100,
            jobs: 1,
            bounds: SwarmBounds::default(),
            out_dir: PathBuf::from("/out"),
            minimize: MinimizeBudget {
                runs_max: 300,
                wall_max: std::time::Duration::from_secs(30),
            },
            scenario_of: explore::swarm_scenario,
            guidance: None,
        }
    }
}
