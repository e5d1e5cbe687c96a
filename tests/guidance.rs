//! Coverage-guided exploration stays reproducible: a seed's configuration depends on its
//! number and on what earlier batches of the same range reached, never on how many threads
//! ran them or in which order they finished.

mod common;

use common::{Scratch, lockstep, text};
use lockstep::sim::explore::{self, ExploreOptions, MinimizeBudget, Progress};
use lockstep::sim::guidance::GuidanceSettings;
use lockstep::sim::swarm::SwarmBounds;
use serde_json::Value;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// What one seed did, as far as a run can tell from outside.
#[derive(Debug, PartialEq)]
struct SeedLine {
    seed: u64,
    description: String,
    failure: Option<String>,
    events: u64,
    coverage: String,
    guided: bool,
}

/// 40 seeds of a 1 s safety phase, guided in batches of 10, on `jobs` threads: every seed's
/// line in seed order, and how many were guided.
fn explore_lines(jobs: usize, guidance: Option<GuidanceSettings>) -> (Vec<SeedLine>, u64) {
    let options = ExploreOptions {
        seeds: 40,
        from: 500,
        jobs,
        bounds: SwarmBounds {
            safety: Duration::from_secs(1),
            ..SwarmBounds::default()
        },
        out_dir: std::env::temp_dir().join(format!("lockstep-guidance-{}", std::process::id())),
        minimize: MinimizeBudget {
            runs_max: 0,
            wall_max: Duration::ZERO,
        },
        scenario_of: explore::swarm_scenario,
        guidance,
    };
    let mut lines = Vec::new();
    let summary = explore::explore(&options, &AtomicBool::new(false), |progress| {
        if let Progress::Finished(result) = progress {
            lines.push(SeedLine {
                seed: result.seed,
                description: result.description.clone(),
                failure: result.failure.as_ref().map(|f| f.kind.clone()),
                events: result.events,
                coverage: format!("{:?}", result.coverage),
                guided: result.guided.is_some(),
            });
        }
    });
    assert_eq!(summary.seeds_run, 40);
    lines.sort_by_key(|line| line.seed);
    (lines, summary.seeds_guided)
}

const BATCHES_OF_TEN: GuidanceSettings = GuidanceSettings {
    batch_seeds: 10,
    guided_percent: 30,
};

#[test]
fn one_thread_and_three_threads_guide_the_same_seeds_to_the_same_runs() {
    let (one_thread, guided) = explore_lines(1, Some(BATCHES_OF_TEN));
    let (three_threads, guided_again) = explore_lines(3, Some(BATCHES_OF_TEN));
    assert_eq!(one_thread, three_threads);
    assert_eq!(guided, guided_again);
    // The first batch has nothing to learn from; later ones guide about 30% of their seeds.
    assert!(one_thread[..10].iter().all(|line| !line.guided));
    assert!((3..=18).contains(&guided), "{guided} of 30 seeds guided");
    for line in one_thread.iter().filter(|line| line.guided) {
        assert!(
            line.description.contains("guided: seed 5"),
            "names its parent from the range: {}",
            line.description
        );
    }
    // A seed guidance left alone runs exactly its own draw, as with guidance off.
    let (unguided, none) = explore_lines(2, None);
    assert_eq!(none, 0);
    for (with, without) in one_thread.iter().zip(&unguided) {
        if !with.guided {
            assert_eq!(with, without);
        } else {
            assert_ne!(with.description, without.description, "seed {}", with.seed);
        }
    }
}

/// Runs `lockstep explore` on 30 seeds of 1 s in batches of 10 and reads its JSON result.
fn explore_json(scratch: &Scratch, name: &str, extra: &[&str]) -> Value {
    let out = scratch.file(&format!("{name}.keep"), "");
    let out_dir = out.with_extension("failures");
    let mut args = vec![
        "explore",
        "--seeds",
        "30",
        "--from",
        "900",
        "--duration",
        "1s",
        "--guidance-batch",
        "10",
        "--json",
        "--out",
        out_dir.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    let output = lockstep(&args);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("explore --json prints JSON")
}

#[test]
fn the_command_line_reports_guidance_the_same_with_any_number_of_jobs() {
    let scratch = Scratch::new("guidance-cli");
    let one = explore_json(&scratch, "one", &["--jobs", "1"]);
    let two = explore_json(&scratch, "two", &["--jobs", "2"]);
    for field in [
        "seeds_guided",
        "first_reached",
        "coverage",
        "events",
        "simulated_ns",
    ] {
        assert_eq!(one[field], two[field], "{field}");
    }
    assert_eq!(one["config"]["guidance"]["batch_seeds"], 10);
    assert_eq!(one["config"]["guidance"]["guided_percent"], 30);
    assert!(one["seeds_guided"].as_u64().expect("a count") > 0);
    let firsts = one["first_reached"].as_array().expect("a list");
    assert!(
        firsts
            .iter()
            .any(|reach| reach["branch"] == "leader.elected" && reach["seed"] == 900),
        "the first seed elects a leader: {firsts:?}"
    );
    let off = explore_json(&scratch, "off", &["--jobs", "2", "--no-guidance"]);
    assert_eq!(off["config"]["guidance"], Value::Null);
    assert_eq!(off["seeds_guided"], 0);
    // Results of a guided and an unguided run are not one run's shards: merging refuses.
    let files = [
        scratch.file("a.json", &one.to_string()),
        scratch.file("b.json", &off.to_string()),
    ];
    let merged = lockstep(&[
        "explore",
        "--merge",
        files[0].to_str().expect("UTF-8"),
        files[1].to_str().expect("UTF-8"),
    ]);
    assert_eq!(merged.status.code(), Some(2));
    assert!(text(&merged.stderr).contains("guidance: 30% of batches of 10 vs off"));
}

#[test]
fn the_summary_table_says_how_many_seeds_were_guided() {
    let output = lockstep(&[
        "explore",
        "--seeds",
        "20",
        "--duration",
        "1s",
        "--guidance-batch",
        "10",
        "--jobs",
        "2",
        "--out",
        std::env::temp_dir()
            .join("lockstep-guidance-table")
            .to_str()
            .expect("UTF-8"),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("coverage guidance"), "{stdout}");
    assert!(
        stdout.contains("of 20 seeds guided (30% of each batch of 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("every branch reached was reached within"),
        "{stdout}"
    );
    let zero = lockstep(&["explore", "--seeds", "5", "--guidance-batch", "0"]);
    assert_eq!(
        zero.status.code(),
        Some(2),
        "a batch of no seeds is refused"
    );
}
