//! Exploring past one machine: `explore --shard K/N` slices a seed range, `explore --json`
//! writes a [`ShardResult`], and `explore --merge` combines shard results into one
//! [`MergedSummary`].
//!
//! Nothing here schedules anything: a batch system (a Kubernetes Indexed Job, a Slurm array)
//! starts the shards, and the merge only reads the files they wrote. The merge must never make
//! a partial or mixed set of results look like a complete run: files that do not parse, that
//! come from different configurations or builds, or that overlap are refused
//! ([`MergeError`]); seeds nobody ran are reported as missing ([`MergedSummary::missing`]).

use super::explore::{ExploreSummary, FirstFailure, Minimization, ScenarioSize, SeedResult};
use super::guidance::{FirstReach, GuidanceSettings};
use crate::node::coverage::Coverage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The `format` field of a shard result; bumped when a field changes meaning.
pub const SHARD_FORMAT: &str = "lockstep-explore-shard/1";
/// The `format` field of a merged summary.
pub const MERGED_FORMAT: &str = "lockstep-explore-merged/1";
/// At most this many shards in one range.
pub const SHARDS_MAX: u64 = 100_000;
/// A shard result file larger than this is refused rather than read.
pub const RESULT_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

// ----- slicing -----

/// Shard `index` of `count`, counted from 0 (`0/3`, `1/3`, `2/3`), as Kubernetes numbers an
/// Indexed Job's pods in `JOB_COMPLETION_INDEX`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// A contiguous range of seeds: `from..from + seeds`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeedRange {
    pub from: u64,
    pub seeds: u64,
}

impl SeedRange {
    /// One past the last seed.
    pub fn end(self) -> u64 {
        self.from.saturating_add(self.seeds)
    }
}

impl fmt::Display for SeedRange {
    /// Both ends included, as people count: `seeds 30 to 59`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seeds {
            0 => write!(f, "no seeds"),
            1 => write!(f, "seed {}", self.from),
            _ => write!(f, "seeds {} to {}", self.from, self.end() - 1),
        }
    }
}

impl Shard {
    /// The whole range as one shard: what an explore without `--shard` runs.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `K/N`. K counts from 0 and must be below N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let Some((index, count)) = text.split_once('/') else {
            return Err(format!(
                "--shard {text:?} is not K/N (for example 0/4: the first of four shards)"
            ));
        };
        let number = |part: &str, what: &str| {
            part.parse::<u64>()
                .map_err(|_| format!("--shard {text:?}: {what} {part:?} is not a whole number"))
        };
        let shard = Shard {
            index: number(index, "K")?,
            count: number(count, "N")?,
        };
        if shard.count == 0 || shard.count > SHARDS_MAX {
            return Err(format!(
                "--shard {text:?}: N must be within 1..={SHARDS_MAX}"
            ));
        }
        if shard.index >= shard.count {
            return Err(format!(
                "--shard {text:?}: K counts from 0, so it must be below N: the shards of {n} \
                 are 0/{n} to {last}/{n}",
                n = shard.count,
                last = shard.count - 1
            ));
        }
        Ok(shard)
    }

    /// This shard's slice of `range`. The slices of `0/N .. N-1/N` cover `range` exactly once,
    /// in order, and differ in size by at most one seed (the larger ones come last).
    pub fn slice(self, range: SeedRange) -> SeedRange {
        assert!(self.index < self.count, "shard {self} is out of range");
        assert!(self.count <= SHARDS_MAX);
        // u128: `index * seeds` overflows u64 for large seed counts.
        let boundary = |k: u64| u128::from(k) * u128::from(range.seeds) / u128::from(self.count);
        let start = boundary(self.index);
        let end = boundary(self.index + 1);
        let start = u64::try_from(start).expect("below seeds");
        let end = u64::try_from(end).expect("below seeds");
        assert!(start <= end && end <= range.seeds);
        SeedRange {
            from: range.from + start,
            seeds: end - start,
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

// ----- the shard result file -----

/// What decides each seed's verdict. Shard results merge only when this is equal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreConfig {
    /// The build that ran the seeds (the package version).
    pub version: String,
    /// The whole range, before slicing.
    pub from: u64,
    pub seeds: u64,
    pub servers_min: u32,
    pub servers_max: u32,
    /// Length of the safety phase, exactly.
    pub duration_ns: u64,
    /// Coverage guidance, `null` when off. Absent in files written before guidance existed,
    /// which were unguided. With guidance a shard guides itself from its own slice: a shard's
    /// result depends on the whole command line, `--shard` included, never on `--jobs`.
    #[serde(default)]
    pub guidance: Option<GuidanceSettings>,
}

/// One failing seed, as a shard writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardFailure {
    pub seed: u64,
    /// The invariant that broke, or `liveness` or `expectation`.
    pub invariant: String,
    pub message: String,
    /// The seed's configuration line.
    pub configuration: String,
    pub simulated_ns: u64,
    pub events: u64,
    pub wall_ms: f64,
    /// The minimized scenario, on the shard's machine (`host`); absent if writing it failed.
    pub written_to: Option<PathBuf>,
    /// The scenario's size before and after minimization.
    pub minimized_from: Option<ScenarioSize>,
    pub minimized_to: Option<ScenarioSize>,
    /// `{runs, wall_seconds, cut_short}`; absent in files written before it was added.
    #[serde(default)]
    pub minimization: Option<Minimization>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantCount {
    pub invariant: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowestSeed {
    pub seed: u64,
    pub wall_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalOfFirstFailure {
    pub seed: u64,
    /// Seeds finished when it arrived (minimizing of earlier failures included).
    pub seeds_run: u64,
    pub wall_seconds: f64,
}

impl ArrivalOfFirstFailure {
    fn of(first: &FirstFailure) -> ArrivalOfFirstFailure {
        ArrivalOfFirstFailure {
            seed: first.seed,
            seeds_run: first.seeds_run,
            wall_seconds: first.wall_seconds,
        }
    }
}

/// What `lockstep explore --json` prints: the result of one shard (or of a whole run, which is
/// shard `0/1`). The format is documented in README ("Exploring on many machines").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardResult {
    /// Always [`SHARD_FORMAT`].
    pub format: String,
    pub config: ExploreConfig,
    pub shard: Shard,
    /// This shard's slice of `config`'s range.
    pub range: SeedRange,
    /// The machine the shard ran on, where its failure files are.
    pub host: Option<String>,
    /// Where failing seeds were written (absolute).
    pub out_dir: PathBuf,
    pub jobs: u64,
    /// Seeds finished: all of `range` unless interrupted, and then exactly the first
    /// `seeds_run` of it.
    pub seeds_run: u64,
    pub seeds_failed: u64,
    pub interrupted: bool,
    pub simulated_ns: u64,
    pub events: u64,
    pub wall_seconds: f64,
    /// `seeds_run / wall_seconds`.
    pub seeds_per_second: f64,
    /// Most frequent first.
    pub failures_by_invariant: Vec<InvariantCount>,
    /// The first failure to arrive (by wall time, not by seed), minimizing included: its own
    /// and that of failures before it. Kept as it always was; the two below exclude it.
    pub first_failure_arrived: Option<ArrivalOfFirstFailure>,
    /// The first failure found in wall time, counted up to the end of its run, before any
    /// minimizing. Fields added after `lockstep-explore-shard/1` first shipped: absent (and
    /// read as null) in older files.
    #[serde(default)]
    pub first_failure_found: Option<ArrivalOfFirstFailure>,
    /// The failure with the lowest seed; `seeds_run` is its place in `range`.
    #[serde(default)]
    pub first_failure_by_seed: Option<ArrivalOfFirstFailure>,
    /// Wall time spent minimizing, summed over failures.
    #[serde(default)]
    pub minimize_wall_seconds: f64,
    pub slowest_seed: Option<SlowestSeed>,
    /// In seed order.
    pub failures: Vec<ShardFailure>,
    /// How often each protocol branch was taken over the shard's seeds, by name. Added after
    /// the format first shipped: absent (and read as nothing reached) in older files.
    #[serde(default)]
    pub coverage: Coverage,
    /// Seeds whose configuration coverage guidance chose (0 when off or in older files).
    #[serde(default)]
    pub seeds_guided: u64,
    /// Per branch reached, the lowest seed of the slice that took it, and whether guidance
    /// chose that seed's configuration (absent in older files).
    #[serde(default)]
    pub first_reached: Vec<FirstReach>,
}

/// Where a shard ran and what it ran, for [`ShardResult::from_summary`].
#[derive(Clone, Debug)]
pub struct ShardContext {
    pub config: ExploreConfig,
    pub shard: Shard,
    pub host: Option<String>,
    pub out_dir: PathBuf,
    pub jobs: u64,
}

impl ShardResult {
    pub fn from_summary(context: ShardContext, summary: &ExploreSummary) -> ShardResult {
        let range = context.shard.slice(SeedRange {
            from: context.config.from,
            seeds: context.config.seeds,
        });
        assert!(
            summary.seeds_run <= range.seeds,
            "a shard runs only its slice"
        );
        assert!(summary.interrupted || summary.seeds_run == range.seeds);
        assert_eq!(summary.seeds_failed, summary.failures.len() as u64);
        ShardResult {
            format: SHARD_FORMAT.into(),
            config: context.config,
            shard: context.shard,
            range,
            host: context.host,
            out_dir: context.out_dir,
            jobs: context.jobs,
            seeds_run: summary.seeds_run,
            seeds_failed: summary.seeds_failed,
            interrupted: summary.interrupted,
            simulated_ns: summary.simulated_ns,
            events: summary.events,
            wall_seconds: summary.wall_seconds,
            seeds_per_second: rate(summary.seeds_run, summary.wall_seconds),
            failures_by_invariant: summary
                .failures_by_kind
                .iter()
                .map(|(invariant, count)| InvariantCount {
                    invariant: invariant.clone(),
                    count: *count,
                })
                .collect(),
            first_failure_arrived: summary
                .first_failure_arrived
                .as_ref()
                .map(ArrivalOfFirstFailure::of),
            first_failure_found: summary
                .first_failure_found
                .as_ref()
                .map(ArrivalOfFirstFailure::of),
            first_failure_by_seed: summary
                .first_failure_by_seed
                .as_ref()
                .map(ArrivalOfFirstFailure::of),
            minimize_wall_seconds: summary.minimize_wall_seconds,
            slowest_seed: summary
                .slowest_seed
                .map(|(seed, wall_ms)| SlowestSeed { seed, wall_ms }),
            failures: summary.failures.iter().map(ShardFailure::of).collect(),
            coverage: summary.coverage.clone(),
            seeds_guided: summary.seeds_guided,
            first_reached: summary.first_reaches.list(),
        }
    }

    /// Checks what one file can say about itself; `Err` is why the file cannot be trusted.
    fn check_consistent(&self) -> Result<(), String> {
        if self.shard.count == 0 || self.shard.count > SHARDS_MAX {
            return Err(format!("shard count {} is out of range", self.shard.count));
        }
        if self.shard.index >= self.shard.count {
            return Err(format!("shard {} has K not below N", self.shard));
        }
        let expected = self.shard.slice(SeedRange {
            from: self.config.from,
            seeds: self.config.seeds,
        });
        if expected.seeds == 0 {
            return Err(format!(
                "shard {} of {} seeds is empty (more shards than seeds)",
                self.shard, self.config.seeds
            ));
        }
        if self.range != expected {
            return Err(format!(
                "shard {} of {} should hold {expected}, but says {}",
                self.shard,
                SeedRange {
                    from: self.config.from,
                    seeds: self.config.seeds
                },
                self.range
            ));
        }
        if self.seeds_run > self.range.seeds {
            return Err(format!(
                "{} seeds run in a slice of {}",
                self.seeds_run, self.range.seeds
            ));
        }
        if !self.interrupted && self.seeds_run != self.range.seeds {
            return Err(format!(
                "{} of {} seeds run, yet not interrupted",
                self.seeds_run, self.range.seeds
            ));
        }
        if self.seeds_failed != self.failures.len() as u64 {
            return Err(format!(
                "seeds_failed is {} but {} failures are listed",
                self.seeds_failed,
                self.failures.len()
            ));
        }
        // Pair check: the explorer chose the lowest failing seed as it ran; the list must agree.
        let lowest = self.failures.iter().map(|f| f.seed).min();
        if let Some(first) = &self.first_failure_by_seed
            && Some(first.seed) != lowest
        {
            return Err(format!(
                "first_failure_by_seed is seed {}, but the lowest failing seed is {lowest:?}",
                first.seed
            ));
        }
        let ran = SeedRange {
            from: self.range.from,
            seeds: self.seeds_run,
        };
        if let Some(stray) = self
            .failures
            .iter()
            .find(|f| !(ran.from..ran.end()).contains(&f.seed))
        {
            return Err(format!(
                "failing seed {} is outside the seeds it ran ({ran})",
                stray.seed
            ));
        }
        Ok(())
    }
}

impl ShardFailure {
    fn of(result: &SeedResult) -> ShardFailure {
        let failure = result
            .failure
            .as_ref()
            .expect("only failing seeds are listed as failures");
        ShardFailure {
            seed: result.seed,
            invariant: failure.kind.clone(),
            message: failure.message.clone(),
            configuration: result.description.clone(),
            simulated_ns: result.simulated_ns,
            events: result.events,
            wall_ms: result.wall_ms,
            written_to: result.written_to.clone(),
            minimized_from: result.minimized.map(|(from, _)| from),
            minimized_to: result.minimized.map(|(_, to)| to),
            minimization: result.minimization,
        }
    }
}

fn rate(seeds: u64, wall_seconds: f64) -> f64 {
    seeds as f64 / wall_seconds.max(1e-9)
}

/// The name of this machine, for finding a shard's failure files later; `None` if unknown.
pub fn host_name() -> Option<String> {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

// ----- merging -----

/// Why shard results cannot be merged. Every variant is bad input (exit 2).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give the shard result files")]
    NoFiles,
    #[error("{} file(s) cannot be read as shard results:\n{}", .0.len(), lines(.0))]
    Unreadable(Vec<String>),
    #[error(
        "{file} and {other} come from different explore configurations ({difference}); \
         merge only shards of one `lockstep explore` command line and build"
    )]
    DifferentConfig {
        file: String,
        other: String,
        difference: String,
    },
    #[error(
        "{file} (shard {shard}) and {other} (shard {other_shard}) both ran {overlap}; \
         a merge would count them twice"
    )]
    Overlap {
        file: String,
        shard: Shard,
        other: String,
        other_shard: Shard,
        overlap: SeedRange,
    },
}

fn lines(items: &[String]) -> String {
    items
        .iter()
        .map(|item| format!("  {item}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failing seed in the merged summary, with the shard and machine that hold its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedFailure {
    pub shard: Shard,
    pub host: Option<String>,
    #[serde(flatten)]
    pub failure: ShardFailure,
}

/// One shard's line in the merged summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardLine {
    pub file: PathBuf,
    pub shard: Shard,
    pub range: SeedRange,
    pub host: Option<String>,
    pub out_dir: PathBuf,
    pub jobs: u64,
    pub seeds_run: u64,
    pub seeds_failed: u64,
    pub interrupted: bool,
    pub wall_seconds: f64,
    pub seeds_per_second: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedSlowestSeed {
    pub seed: u64,
    pub wall_ms: f64,
    pub shard: Shard,
}

/// What `lockstep explore --merge FILES... --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedSummary {
    /// Always [`MERGED_FORMAT`].
    pub format: String,
    pub config: ExploreConfig,
    /// True when some seeds of the range were not run (`missing`); the merge then exits 2.
    pub incomplete: bool,
    /// The seed ranges no file ran, in order.
    pub missing: Vec<SeedRange>,
    /// When every file has the same N: the shards `K/N` to run again (absent, or interrupted).
    /// Empty when nothing is missing or when files of different N were merged.
    pub missing_shards: Vec<Shard>,
    pub seeds_expected: u64,
    pub seeds_run: u64,
    pub seeds_failed: u64,
    pub simulated_ns: u64,
    pub events: u64,
    /// The longest shard's wall time: the run's length when every shard runs at once.
    pub wall_seconds_longest_shard: f64,
    /// Every shard's wall time added up: the machine time spent.
    pub wall_seconds_sum: f64,
    /// `seeds_run / wall_seconds_longest_shard`.
    pub seeds_per_second: f64,
    /// Every shard's own `seeds_run / wall_seconds`, added up.
    pub seeds_per_second_sum: f64,
    /// Most frequent first, then by name.
    pub failures_by_invariant: Vec<InvariantCount>,
    /// The failure with the lowest seed (`failures[0]`), independent of timing.
    pub first_failure_seed: Option<u64>,
    pub slowest_seed: Option<MergedSlowestSeed>,
    /// By range.
    pub shards: Vec<ShardLine>,
    /// In seed order.
    pub failures: Vec<MergedFailure>,
    /// Every shard's protocol coverage added up.
    #[serde(default)]
    pub coverage: Coverage,
    /// Seeds guided, over every shard.
    #[serde(default)]
    pub seeds_guided: u64,
    /// Per branch, the lowest seed of any shard that took it.
    #[serde(default)]
    pub first_reached: Vec<FirstReach>,
}

/// The shards `K/N` whose slices hold missing seeds, when every shard has the same N.
fn shards_to_rerun(shards: &[ShardLine], missing: &[SeedRange]) -> Vec<Shard> {
    let Some(count) = shards.first().map(|line| line.shard.count) else {
        return Vec::new();
    };
    if missing.is_empty() || shards.iter().any(|line| line.shard.count != count) {
        return Vec::new();
    }
    let complete: std::collections::BTreeSet<u64> = shards
        .iter()
        .filter(|line| !line.interrupted)
        .map(|line| line.shard.index)
        .collect();
    (0..count)
        .filter(|index| !complete.contains(index))
        .map(|index| Shard { index, count })
        .collect()
}

/// `ranges` for people, at most ten of them and how many more.
pub fn describe_ranges(ranges: &[SeedRange]) -> String {
    const SHOWN_MAX: usize = 10;
    let mut shown: Vec<String> = ranges
        .iter()
        .take(SHOWN_MAX)
        .map(|r| r.to_string())
        .collect();
    if ranges.len() > SHOWN_MAX {
        shown.push(format!("and {} more ranges", ranges.len() - SHOWN_MAX));
    }
    shown.join(", ")
}

/// Reads one shard result file. `Err` says why it is not one, naming the file.
pub fn read_shard_result(path: &Path) -> Result<ShardResult, String> {
    let name = path.display();
    let size = std::fs::metadata(path)
        .map_err(|error| format!("{name}: cannot read it: {error}"))?
        .len();
    if size > RESULT_FILE_BYTES_MAX {
        return Err(format!(
            "{name}: {size} bytes is more than a shard result may hold ({RESULT_FILE_BYTES_MAX})"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("{name}: cannot read it: {error}"))?;
    parse_shard_result(&text).map_err(|problem| format!("{name}: {problem}"))
}

/// Parses and checks the text of a shard result.
pub fn parse_shard_result(text: &str) -> Result<ShardResult, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
        format!("not JSON ({error}); was the shard cut short, or is this its table output?")
    })?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(SHARD_FORMAT) => {}
        Some(MERGED_FORMAT) => {
            return Err("a merged summary, not a shard result; merge the shard files".into());
        }
        Some(other) => {
            return Err(format!(
                "format {other:?}, but this build reads {SHARD_FORMAT:?}"
            ));
        }
        None => {
            return Err(format!(
                "no \"format\": {SHARD_FORMAT:?}; not written by `lockstep explore --json`"
            ));
        }
    }
    let result: ShardResult = serde_json::from_value(value)
        .map_err(|error| format!("not a valid shard result: {error}"))?;
    result
        .check_consistent()
        .map_err(|problem| format!("inconsistent shard result: {problem}"))?;
    Ok(result)
}

/// The first field in which two configurations differ, as `name: a vs b`.
fn config_difference(a: &ExploreConfig, b: &ExploreConfig) -> Option<String> {
    let fields = [
        ("version", a.version.clone(), b.version.clone()),
        ("from", a.from.to_string(), b.from.to_string()),
        ("seeds", a.seeds.to_string(), b.seeds.to_string()),
        (
            "servers",
            format!("{}..{}", a.servers_min, a.servers_max),
            format!("{}..{}", b.servers_min, b.servers_max),
        ),
        (
            "duration",
            format!("{:?}", std::time::Duration::from_nanos(a.duration_ns)),
            format!("{:?}", std::time::Duration::from_nanos(b.duration_ns)),
        ),
        (
            "guidance",
            guidance_text(a.guidance),
            guidance_text(b.guidance),
        ),
    ];
    let difference = fields.into_iter().find(|(_, x, y)| x != y);
    difference.map(|(name, x, y)| format!("{name}: {x} vs {y}"))
}

/// Guidance settings as a configuration difference names them.
fn guidance_text(guidance: Option<GuidanceSettings>) -> String {
    guidance.map_or("off".into(), |settings| {
        format!(
            "{}% of batches of {}",
            settings.guided_percent, settings.batch_seeds
        )
    })
}

/// Merges shard results read from `files`. Refuses unreadable files, mixed configurations and
/// overlapping shards; seeds that no file ran make the summary `incomplete`.
pub fn merge(files: &[PathBuf]) -> Result<MergedSummary, MergeError> {
    if files.is_empty() {
        return Err(MergeError::NoFiles);
    }
    let mut results = Vec::with_capacity(files.len());
    let mut unreadable = Vec::new();
    for file in files {
        match read_shard_result(file) {
            Ok(result) => results.push((file.clone(), result)),
            Err(problem) => unreadable.push(problem),
        }
    }
    if !unreadable.is_empty() {
        return Err(MergeError::Unreadable(unreadable));
    }
    merge_results(results)
}

/// Merges shard results already read, each with the file it came from.
pub fn merge_results(
    mut results: Vec<(PathBuf, ShardResult)>,
) -> Result<MergedSummary, MergeError> {
    let Some((first_file, first)) = results.first() else {
        return Err(MergeError::NoFiles);
    };
    let config = first.config.clone();
    for (file, result) in &results {
        if let Some(difference) = config_difference(&config, &result.config) {
            return Err(MergeError::DifferentConfig {
                file: first_file.display().to_string(),
                other: file.display().to_string(),
                difference,
            });
        }
    }
    results.sort_by_key(|(_, result)| (result.range.from, result.range.seeds));
    let missing = coverage_gaps(&results, &config)?;
    Ok(summarize(config, missing, results))
}

/// Refuses overlapping shards, and returns the seed ranges no shard ran. `results` is sorted
/// by range start.
fn coverage_gaps(
    results: &[(PathBuf, ShardResult)],
    config: &ExploreConfig,
) -> Result<Vec<SeedRange>, MergeError> {
    let mut missing = Vec::new();
    let mut covered_to = config.from;
    // The file whose slice reaches `covered_to`, to name it when the next one overlaps.
    let mut reached_by: Option<&(PathBuf, ShardResult)> = None;
    for entry in results {
        let (file, result) = entry;
        assert!(result.range.seeds > 0, "checked when read");
        // Overlap is judged on slices, not on the seeds run: the same shard twice is refused
        // even when one copy was interrupted early.
        if let Some((other, earlier)) = reached_by
            && result.range.from < covered_to
        {
            let overlap_end = covered_to.min(result.range.end());
            return Err(MergeError::Overlap {
                file: other.display().to_string(),
                shard: earlier.shard,
                other: file.display().to_string(),
                other_shard: result.shard,
                overlap: SeedRange {
                    from: result.range.from,
                    seeds: overlap_end - result.range.from,
                },
            });
        }
        if result.range.from > covered_to {
            missing.push(SeedRange {
                from: covered_to,
                seeds: result.range.from - covered_to,
            });
        }
        let ran_end = result.range.from + result.seeds_run;
        if ran_end < result.range.end() {
            missing.push(SeedRange {
                from: ran_end,
                seeds: result.range.end() - ran_end,
            });
        }
        covered_to = result.range.end();
        reached_by = Some(entry);
    }
    let whole_end = config.from + config.seeds;
    assert!(covered_to <= whole_end, "every slice lies inside the range");
    if covered_to < whole_end {
        missing.push(SeedRange {
            from: covered_to,
            seeds: whole_end - covered_to,
        });
    }
    Ok(missing)
}

fn summarize(
    config: ExploreConfig,
    missing: Vec<SeedRange>,
    results: Vec<(PathBuf, ShardResult)>,
) -> MergedSummary {
    let sum = |field: fn(&ShardResult) -> u64| {
        let values = results.iter().map(|(_, result)| field(result));
        values.fold(0u64, u64::saturating_add)
    };
    let (seeds_run, seeds_failed) = (sum(|r| r.seeds_run), sum(|r| r.seeds_failed));
    let (simulated_ns, events) = (sum(|r| r.simulated_ns), sum(|r| r.events));
    let walls = results.iter().map(|(_, result)| result.wall_seconds);
    let wall_seconds_longest_shard = walls.clone().fold(0f64, f64::max);
    let wall_seconds_sum: f64 = walls.sum();
    let rates = results
        .iter()
        .map(|(_, r)| rate(r.seeds_run, r.wall_seconds));
    let seeds_per_second_sum: f64 = rates.sum();
    let failures_by_invariant = invariant_counts(&results);
    let slowest_seed = slowest_of(&results);
    let mut coverage = Coverage::default();
    for (_, result) in &results {
        coverage.add(&result.coverage);
    }
    let seeds_guided = sum(|r| r.seeds_guided);
    let first_reached = earliest_reaches(&results);
    let mut failures: Vec<MergedFailure> = results
        .iter()
        .flat_map(|(_, result)| {
            result.failures.iter().map(|failure| MergedFailure {
                shard: result.shard,
                host: result.host.clone(),
                failure: failure.clone(),
            })
        })
        .collect();
    failures.sort_by_key(|f| f.failure.seed);
    assert_eq!(
        seeds_failed,
        failures.len() as u64,
        "each shard was checked"
    );
    let shards: Vec<ShardLine> = results.into_iter().map(ShardLine::of).collect();
    let missing_shards = shards_to_rerun(&shards, &missing);
    let seeds_missing: u64 = missing.iter().map(|range| range.seeds).sum();
    assert_eq!(
        seeds_run + seeds_missing,
        config.seeds,
        "every seed is run or missing"
    );
    MergedSummary {
        format: MERGED_FORMAT.into(),
        incomplete: !missing.is_empty(),
        missing,
        missing_shards,
        seeds_expected: config.seeds,
        config,
        seeds_run,
        seeds_failed,
        simulated_ns,
        events,
        wall_seconds_longest_shard,
        wall_seconds_sum,
        seeds_per_second: rate(seeds_run, wall_seconds_longest_shard),
        seeds_per_second_sum,
        failures_by_invariant,
        first_failure_seed: failures.first().map(|f| f.failure.seed),
        slowest_seed,
        shards,
        failures,
        coverage,
        seeds_guided,
        first_reached,
    }
}

/// Per branch, the lowest seed over every shard that took it, in the order branches are
/// declared (the order each shard lists them in).
fn earliest_reaches(results: &[(PathBuf, ShardResult)]) -> Vec<FirstReach> {
    let mut earliest: BTreeMap<String, FirstReach> = BTreeMap::new();
    for reach in results.iter().flat_map(|(_, r)| &r.first_reached) {
        let known = earliest.get(&reach.branch);
        if known.is_none_or(|known| reach.seed < known.seed) {
            earliest.insert(reach.branch.clone(), reach.clone());
        }
    }
    crate::node::coverage::Branch::ALL
        .iter()
        .filter_map(|branch| earliest.remove(branch.name()))
        .collect()
}

/// Failures by invariant over all shards, most frequent first, then by name.
fn invariant_counts(results: &[(PathBuf, ShardResult)]) -> Vec<InvariantCount> {
    let mut by_invariant: BTreeMap<String, u64> = BTreeMap::new();
    for count in results.iter().flat_map(|(_, r)| &r.failures_by_invariant) {
        *by_invariant.entry(count.invariant.clone()).or_insert(0) += count.count;
    }
    let mut counts: Vec<InvariantCount> = by_invariant
        .into_iter()
        .map(|(invariant, count)| InvariantCount { invariant, count })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.invariant.cmp(&b.invariant)));
    counts
}

/// The seed with the largest wall time in any shard; the earlier shard wins a tie.
fn slowest_of(results: &[(PathBuf, ShardResult)]) -> Option<MergedSlowestSeed> {
    let mut slowest_seed: Option<MergedSlowestSeed> = None;
    for (_, result) in results {
        if let Some(slowest) = &result.slowest_seed
            && slowest_seed
                .as_ref()
                .is_none_or(|s| slowest.wall_ms > s.wall_ms)
        {
            slowest_seed = Some(MergedSlowestSeed {
                seed: slowest.seed,
                wall_ms: slowest.wall_ms,
                shard: result.shard,
            });
        }
    }
    slowest_seed
}

impl ShardLine {
    fn of((file, result): (PathBuf, ShardResult)) -> ShardLine {
        ShardLine {
            file,
            shard: result.shard,
            range: result.range,
            host: result.host,
            out_dir: result.out_dir,
            jobs: result.jobs,
            seeds_run: result.seeds_run,
            seeds_failed: result.seeds_failed,
            interrupted: result.interrupted,
            wall_seconds: result.wall_seconds,
            seeds_per_second: result.seeds_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: u64, seeds: u64) -> SeedRange {
        SeedRange { from, seeds }
    }

    #[test]
    fn slices_cover_the_range_exactly_once_when_n_does_not_divide_it() {
        for (from, seeds) in [(0, 90), (7, 10), (1_000, 1), (3, 101), (u64::MAX - 50, 50)] {
            for count in 1..=seeds.min(13) {
                let slices: Vec<SeedRange> = (0..count)
                    .map(|index| Shard { index, count }.slice(range(from, seeds)))
                    .collect();
                assert_eq!(slices[0].from, from);
                assert_eq!(slices.last().unwrap().end(), from + seeds);
                for pair in slices.windows(2) {
                    assert_eq!(pair[0].end(), pair[1].from, "no gap, no overlap");
                }
                let sizes: Vec<u64> = slices.iter().map(|s| s.seeds).collect();
                let (low, high) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(high - low <= 1, "equal slices: {sizes:?}");
                assert!(*low >= 1, "N <= seeds leaves no slice empty");
            }
        }
        // 10 seeds in 3 shards: 3, 3, 4.
        let sizes: Vec<u64> = (0..3)
            .map(|index| Shard { index, count: 3 }.slice(range(0, 10)).seeds)
            .collect();
        assert_eq!(sizes, vec![3, 3, 4]);
        // A huge range does not overflow.
        let last = Shard { index: 6, count: 7 }.slice(range(0, u64::MAX));
        assert_eq!(last.end(), u64::MAX);
    }

    #[test]
    fn shard_flags_parse_from_zero_and_refuse_the_rest_with_reasons() {
        assert_eq!(Shard::parse("0/1"), Ok(Shard::WHOLE));
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        let refusals = [
            ("3/3", "K counts from 0"),
            ("0/0", "N must be within"),
            ("0/100001", "N must be within"),
            ("a/3", "K \"a\" is not a whole number"),
            ("1/x", "N \"x\" is not a whole number"),
            ("-1/3", "is not a whole number"),
            (" 1/3", "is not a whole number"),
            ("1/3/4", "is not a whole number"),
            ("2", "is not K/N"),
            ("", "is not K/N"),
        ];
        for (text, reason) in refusals {
            let problem = Shard::parse(text).expect_err(text);
            assert!(problem.contains(reason), "{text}: {problem}");
        }
    }

    fn config() -> ExploreConfig {
        ExploreConfig {
            version: "0.1.0".into(),
            from: 100,
            seeds: 90,
            servers_min: 3,
            servers_max: 5,
            duration_ns: 1_000_000_000,
            guidance: None,
        }
    }

    fn failure(seed: u64, invariant: &str) -> ShardFailure {
        ShardFailure {
            seed,
            invariant: invariant.into(),
            message: format!("seed {seed} broke {invariant}"),
            configuration: "3 servers".into(),
            simulated_ns: 5,
            events: 7,
            wall_ms: 1.0,
            written_to: Some(PathBuf::from(format!("/out/{seed}.yaml"))),
            minimized_from: None,
            minimized_to: None,
            minimization: None,
        }
    }

    /// A consistent result of shard `index/count` of [`config`] in which `failing` failed.
    fn result(index: u64, count: u64, failing: &[(u64, &str)]) -> ShardResult {
        let shard = Shard { index, count };
        let config = config();
        let range = shard.slice(range(config.from, config.seeds));
        let mut by_invariant: BTreeMap<String, u64> = BTreeMap::new();
        for (_, invariant) in failing {
            *by_invariant.entry(invariant.to_string()).or_default() += 1;
        }
        ShardResult {
            format: SHARD_FORMAT.into(),
            config,
            shard,
            range,
            host: Some(format!("node-{index}")),
            out_dir: PathBuf::from("/out"),
            jobs: 2,
            seeds_run: range.seeds,
            seeds_failed: failing.len() as u64,
            interrupted: false,
            simulated_ns: range.seeds * 1_000,
            events: range.seeds * 10,
            wall_seconds: (index + 1) as f64,
            seeds_per_second: range.seeds as f64 / (index + 1) as f64,
            failures_by_invariant: by_invariant
                .into_iter()
                .map(|(invariant, count)| InvariantCount { invariant, count })
                .collect(),
            first_failure_arrived: None,
            first_failure_found: None,
            first_failure_by_seed: None,
            minimize_wall_seconds: 0.0,
            coverage: Coverage::default(),
            seeds_guided: 0,
            first_reached: Vec::new(),
            slowest_seed: Some(SlowestSeed {
                seed: range.from,
                wall_ms: 10.0 * (index + 1) as f64,
            }),
            failures: failing
                .iter()
                .map(|(seed, inv)| failure(*seed, inv))
                .collect(),
        }
    }

    fn files(results: Vec<ShardResult>) -> Vec<(PathBuf, ShardResult)> {
        let named = results.into_iter().enumerate();
        named
            .map(|(i, r)| (PathBuf::from(format!("shard-{i}.json")), r))
            .collect()
    }

    #[test]
    fn a_merge_adds_up_the_shards_and_orders_failures_by_seed() {
        let results = vec![
            result(2, 3, &[(181, "mutual_exclusion"), (170, "liveness")]),
            result(0, 3, &[(105, "mutual_exclusion")]),
            result(1, 3, &[]),
        ];
        let merged = merge_results(files(results)).expect("three shards of one run");
        assert!(!merged.incomplete);
        assert!(merged.missing.is_empty() && merged.missing_shards.is_empty());
        assert_eq!((merged.seeds_expected, merged.seeds_run), (90, 90));
        assert_eq!(merged.seeds_failed, 3);
        assert_eq!(merged.simulated_ns, 90_000);
        assert_eq!(merged.events, 900);
        let seeds: Vec<u64> = merged.failures.iter().map(|f| f.failure.seed).collect();
        assert_eq!(seeds, vec![105, 170, 181]);
        assert_eq!(merged.first_failure_seed, Some(105));
        assert_eq!(merged.failures[0].shard, Shard { index: 0, count: 3 });
        assert_eq!(merged.failures[0].host.as_deref(), Some("node-0"));
        assert_eq!(
            merged.failures_by_invariant[0].invariant,
            "mutual_exclusion"
        );
        assert_eq!(merged.failures_by_invariant[0].count, 2);
        assert_eq!(merged.failures_by_invariant[1].invariant, "liveness");
        // Shard k took k+1 seconds for 30 seeds.
        assert_eq!(merged.wall_seconds_longest_shard, 3.0);
        assert_eq!(merged.wall_seconds_sum, 6.0);
        assert_eq!(merged.seeds_per_second, 30.0);
        assert_eq!(merged.seeds_per_second_sum, 30.0 + 15.0 + 10.0);
        let slowest = merged.slowest_seed.expect("every shard has one");
        assert_eq!((slowest.seed, slowest.shard.index), (160, 2));
        let order: Vec<u64> = merged.shards.iter().map(|s| s.shard.index).collect();
        assert_eq!(order, vec![0, 1, 2], "shards listed by range");
    }

    #[test]
    fn a_missing_or_interrupted_shard_makes_the_merge_incomplete_and_names_it() {
        let merged = merge_results(files(vec![result(0, 3, &[]), result(2, 3, &[])])).unwrap();
        assert!(merged.incomplete);
        assert_eq!(merged.missing, vec![range(130, 30)]);
        assert_eq!(merged.missing_shards, vec![Shard { index: 1, count: 3 }]);
        assert_eq!(merged.seeds_run, 60);

        let mut cut_short = result(1, 3, &[]);
        cut_short.interrupted = true;
        cut_short.seeds_run = 12;
        let merged =
            merge_results(files(vec![result(0, 3, &[]), cut_short, result(2, 3, &[])])).unwrap();
        assert_eq!(merged.missing, vec![range(142, 18)]);
        assert_eq!(merged.missing_shards, vec![Shard { index: 1, count: 3 }]);

        let merged = merge_results(files(vec![result(1, 3, &[])])).unwrap();
        assert_eq!(merged.missing, vec![range(100, 30), range(160, 30)]);
        assert_eq!(
            describe_ranges(&merged.missing),
            "seeds 100 to 129, seeds 160 to 189"
        );
    }

    #[test]
    fn results_of_another_configuration_or_build_are_refused() {
        let mut other_build = result(1, 3, &[]);
        other_build.config.version = "0.2.0".into();
        let mut other_duration = result(1, 3, &[]);
        other_duration.config.duration_ns = 2_000_000_000;
        let mut other_servers = result(1, 3, &[]);
        other_servers.config.servers_max = 7;
        let cases = [
            (other_build, "version: 0.1.0 vs 0.2.0"),
            (other_duration, "duration: 1s vs 2s"),
            (other_servers, "servers: 3..5 vs 3..7"),
        ];
        for (odd, difference) in cases {
            let error = merge_results(files(vec![result(0, 3, &[]), odd])).expect_err(difference);
            assert!(
                matches!(&error, MergeError::DifferentConfig { difference: d, .. } if d == difference),
                "{error}"
            );
        }
    }

    #[test]
    fn a_file_is_read_only_if_it_is_a_consistent_shard_result() {
        let good = serde_json::to_string(&result(1, 3, &[(140, "liveness")])).unwrap();
        assert_eq!(
            parse_shard_result(&good),
            Ok(result(1, 3, &[(140, "liveness")]))
        );
        let cut = &good[..good.len() / 2];
        assert!(parse_shard_result(cut).unwrap_err().starts_with("not JSON"));
        let value = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
            edit(&mut value);
            parse_shard_result(&value.to_string())
        };
        type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
        let refusals: [(Edit, &str); 7] = [
            (&|v| v["format"] = MERGED_FORMAT.into(), "a merged summary"),
            (
                &|v| v["format"] = "lockstep-explore-shard/9".into(),
                "this build reads",
            ),
            (
                &|v| drop(v.as_object_mut().unwrap().remove("format")),
                "no \"format\"",
            ),
            (
                &|v| drop(v.as_object_mut().unwrap().remove("events")),
                "missing field `events`",
            ),
            (
                &|v| v["range"]["from"] = 131.into(),
                "should hold seeds 130 to 159",
            ),
            (
                &|v| v["seeds_run"] = 29.into(),
                "29 of 30 seeds run, yet not interrupted",
            ),
            (
                &|v| v["seeds_failed"] = 0.into(),
                "seeds_failed is 0 but 1 failures",
            ),
        ];
        for (edit, reason) in refusals {
            let problem = value(edit).expect_err(reason);
            assert!(problem.contains(reason), "{reason}: {problem}");
        }
        let wrong_first = value(&|v| {
            v["first_failure_by_seed"] =
                serde_json::json!({"seed": 141, "seeds_run": 12, "wall_seconds": 1.0});
        });
        assert!(
            wrong_first
                .unwrap_err()
                .contains("first_failure_by_seed is seed 141, but the lowest failing seed")
        );
        // Files written before the minimization fields existed still read, as unknown.
        let older = value(&|v| {
            let object = v.as_object_mut().unwrap();
            for added in [
                "first_failure_found",
                "first_failure_by_seed",
                "minimize_wall_seconds",
            ] {
                assert!(object.remove(added).is_some(), "{added} is written");
            }
            let failure = v["failures"][0].as_object_mut().unwrap();
            assert!(failure.remove("minimization").is_some());
        });
        let older = older.expect("an older file reads");
        assert_eq!(older.first_failure_by_seed, None);
        assert_eq!(older.failures[0].minimization, None);
        let stray = value(&|v| v["failures"][0]["seed"] = 170.into());
        assert!(stray.unwrap_err().contains("failing seed 170 is outside"));
    }

    #[test]
    fn overlapping_shards_are_refused_with_the_seeds_they_share() {
        let twice = merge_results(files(vec![result(1, 3, &[]), result(1, 3, &[])]));
        assert!(
            matches!(twice, Err(MergeError::Overlap { overlap, .. }) if overlap == range(130, 30)),
            "{twice:?}"
        );
        // Shards of different N may tile the range, but not overlap it.
        let tiles = vec![result(0, 2, &[]), result(3, 6, &[]), result(5, 6, &[])];
        let merged = merge_results(files(tiles)).expect("0/2, 3/6 and 5/6 tile all but 4/6");
        assert_eq!(merged.missing, vec![range(160, 15)]);
        assert!(
            merged.missing_shards.is_empty(),
            "no single N to name shards by"
        );
        let overlapping = vec![result(1, 3, &[]), result(0, 2, &[])];
        let error = merge_results(files(overlapping)).expect_err("0/2 and 1/3 share seeds");
        assert_eq!(
            error.to_string(),
            "shard-1.json (shard 0/2) and shard-0.json (shard 1/3) both ran seeds 130 to \
             144; a merge would count them twice"
        );
    }
}
