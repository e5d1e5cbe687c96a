//! `lockstep explore --shard K/N` and `--merge` as a batch system drives them: every shard is
//! its own process writing `--json` to a file, and a last step merges the files.
//!
//! The shards of one fixture run once per test binary (a `OnceLock`); each test copies what
//! it needs into its own directory, so tests stay independent of each other's edits.

mod common;

use common::{lockstep, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The range every test splits: 90 seeds of a 1 s safety phase, in 3 shards of 30.
const SEEDS: &str = "90";
const DURATION: &str = "1s";
const SHARDS: u64 = 3;

fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// A fresh directory for one test under Cargo's per-target scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("explore-shards-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Starts `lockstep explore --json` for one shard (or the whole range) with stdout going to
/// `json`, as a batch job's shell redirect does.
fn spawn_explore(json: &Path, extra: &[&str]) -> std::process::Child {
    let file = std::fs::File::create(json).expect("create the result file");
    let out = json.with_extension("failures");
    let mut args = vec![
        "explore",
        "--seeds",
        SEEDS,
        "--duration",
        DURATION,
        "--jobs",
        "1",
        "--json",
        "--out",
        path_text(&out),
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(&args)
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lockstep explore")
}

fn finish(child: std::process::Child, what: &str) {
    let output = child.wait_with_output().expect("wait for lockstep explore");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}: no seed of the fixture fails: {}",
        text(&output.stderr)
    );
}

struct Fixture {
    /// `shard-K.json` for K in 0..3, each written by its own process.
    shards: Vec<PathBuf>,
    /// The same 90 seeds in one unsharded process.
    whole: PathBuf,
}

/// Runs the three shards and the unsharded run once, as four concurrent processes.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch("fixture");
        let shards: Vec<PathBuf> = (0..SHARDS)
            .map(|k| dir.join(format!("shard-{k}.json")))
            .collect();
        let whole = dir.join("whole.json");
        let labels: Vec<String> = (0..SHARDS).map(|k| format!("{k}/{SHARDS}")).collect();
        let mut children: Vec<(String, std::process::Child)> = shards
            .iter()
            .zip(&labels)
            .map(|(json, label)| (label.clone(), spawn_explore(json, &["--shard", label])))
            .collect();
        children.push(("whole".into(), spawn_explore(&whole, &[])));
        for (what, child) in children {
            finish(child, &what);
        }
        Fixture { shards, whole }
    })
}

fn read_json(path: &Path) -> Value {
    let written = std::fs::read_to_string(path).expect("read a result file");
    serde_json::from_str(&written).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Copies fixture files into `dir`, so that a test may edit them.
fn copy_into(dir: &Path, files: &[&PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|file| {
            let copy = dir.join(file.file_name().expect("a file name"));
            std::fs::copy(file, &copy).expect("copy a result file");
            copy
        })
        .collect()
}

fn merge(files: &[&Path], json: bool) -> Output {
    let mut args = vec!["explore", "--merge"];
    args.extend(files.iter().map(|f| path_text(f)));
    if json {
        args.push("--json");
    }
    lockstep(&args)
}

#[test]
fn three_shard_processes_merge_to_exactly_what_one_unsharded_run_finds() {
    let fixture = fixture();
    for (k, file) in fixture.shards.iter().enumerate() {
        let shard = read_json(file);
        assert_eq!(shard["format"], "lockstep-explore-shard/1");
        assert_eq!(shard["shard"]["index"], k as u64);
        assert_eq!(shard["range"]["from"], 30 * k as u64, "shard {k}");
        assert_eq!(shard["range"]["seeds"], 30);
        assert_eq!(shard["seeds_run"], 30);
        assert_eq!(shard["config"]["seeds"], 90);
    }
    let paths: Vec<&Path> = fixture.shards.iter().map(PathBuf::as_path).collect();
    let output = merge(&paths, true);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let merged: Value = serde_json::from_slice(&output.stdout).expect("the merge prints JSON");
    let whole = read_json(&fixture.whole);
    assert_eq!(merged["format"], "lockstep-explore-merged/1");
    assert_eq!(merged["incomplete"], false);
    assert_eq!(merged["missing"], Value::Array(vec![]));
    assert_eq!(merged["seeds_expected"], 90);
    // The same seeds give the same results, whichever process ran them; wall time differs.
    for field in [
        "seeds_run",
        "seeds_failed",
        "simulated_ns",
        "events",
        "failures_by_invariant",
        "coverage",
    ] {
        assert_eq!(merged[field], whole[field], "{field}");
    }
    // Protocol coverage adds up across shards exactly as over one run: leaders were elected.
    assert!(
        merged["coverage"]["leader.elected"]
            .as_u64()
            .expect("counted")
            >= 90,
        "{}",
        merged["coverage"]
    );
    assert_eq!(merged["seeds_run"], 90);
    assert!(merged["events"].as_u64().expect("events") > 90 * 1_000);
    let seeds_and_invariants = |failures: &Value| -> Vec<(Value, Value)> {
        let failures = failures.as_array().expect("failures").iter();
        failures
            .map(|f| (f["seed"].clone(), f["invariant"].clone()))
            .collect()
    };
    assert_eq!(
        seeds_and_invariants(&merged["failures"]),
        seeds_and_invariants(&whole["failures"])
    );
    let longest = merged["wall_seconds_longest_shard"]
        .as_f64()
        .expect("a number");
    let shard_walls: Vec<f64> = fixture
        .shards
        .iter()
        .map(|f| read_json(f)["wall_seconds"].as_f64().expect("a number"))
        .collect();
    assert_eq!(longest, shard_walls.iter().copied().fold(0.0, f64::max));
    // Within a rounding error: the figures go through JSON text, whose float parsing is not
    // guaranteed to round-trip to the last bit.
    let seeds_per_second = merged["seeds_per_second"].as_f64().expect("a number");
    let expected = 90.0 / longest;
    assert!(
        (seeds_per_second - expected).abs() <= expected * 1e-12,
        "{seeds_per_second} against {expected}"
    );

    let table = merge(&paths, false);
    let stdout = text(&table.stdout);
    assert_eq!(table.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("PASS: 90 seeds in 3 shard(s), no failure"),
        "{stdout}"
    );
    assert!(stdout.contains("90 of 90"), "{stdout}");
    assert!(stdout.contains("protocol coverage"), "{stdout}");
    for shard in ["0/3", "1/3", "2/3"] {
        assert!(stdout.contains(shard), "a row for shard {shard}: {stdout}");
    }
}

#[test]
fn a_merge_with_a_shard_missing_lists_the_missing_seeds_and_exits_two() {
    let fixture = fixture();
    let output = merge(&[&fixture.shards[0], &fixture.shards[2]], false);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("INCOMPLETE: 60 of 90 seeds"), "{stdout}");
    assert!(stdout.contains("missing seeds 30 to 59"), "{stdout}");
    assert!(
        stderr.contains("seeds 30 to 59 (30 of 90 seeds)"),
        "{stderr}"
    );
    assert!(stderr.contains("run --shard 1/3 again"), "{stderr}");
    let output = merge(&[&fixture.shards[0], &fixture.shards[2]], true);
    assert_eq!(output.status.code(), Some(2));
    let merged: Value = serde_json::from_slice(&output.stdout).expect("JSON even when incomplete");
    assert_eq!(merged["incomplete"], true);
    assert_eq!(merged["missing"][0]["from"], 30);
    assert_eq!(merged["missing"][0]["seeds"], 30);
    assert_eq!(merged["missing_shards"][0]["index"], 1);
}

#[test]
fn overlapping_results_are_refused_with_the_seeds_counted_twice() {
    let fixture = fixture();
    let twice = merge(&[&fixture.shards[1], &fixture.shards[1]], false);
    assert_eq!(twice.status.code(), Some(2));
    assert!(twice.stdout.is_empty(), "no summary for a refused merge");
    let stderr = text(&twice.stderr);
    assert!(stderr.contains("both ran seeds 30 to 59"), "{stderr}");
    let mixed = merge(&[&fixture.whole, &fixture.shards[2]], false);
    assert_eq!(mixed.status.code(), Some(2));
    let stderr = text(&mixed.stderr);
    assert!(stderr.contains("(shard 0/1)"), "{stderr}");
    assert!(
        stderr.contains("(shard 2/3) both ran seeds 60 to 89"),
        "{stderr}"
    );
}

#[test]
fn a_shard_of_another_configuration_is_refused_and_named() {
    let fixture = fixture();
    let dir = scratch("config");
    let smaller = dir.join("shard-1-smaller.json");
    finish(
        spawn_explore(&smaller, &["--shard", "1/3", "--servers", "3"]),
        "1/3 on 3 servers",
    );
    let output = merge(&[&fixture.shards[0], &smaller, &fixture.shards[2]], false);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("different explore configurations (servers: 1..7 vs 3..3)"),
        "{stderr}"
    );
    assert!(stderr.contains("shard-1-smaller.json"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_and_foreign_files_are_refused_each_with_its_reason() {
    let fixture = fixture();
    let dir = scratch("corrupt");
    let copies = copy_into(&dir, &[&fixture.shards[0], &fixture.shards[1]]);
    let written = std::fs::read_to_string(&copies[1]).expect("read");
    std::fs::write(&copies[1], &written[..written.len() / 2]).expect("cut the file short");
    let table = dir.join("table.txt");
    std::fs::write(&table, "PASS: 30 seeds, no failure\n").expect("write");
    let absent = dir.join("absent.json");
    let output = merge(&[&copies[0], &copies[1], &table, &absent], false);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("3 file(s) cannot be read as shard results"),
        "{stderr}"
    );
    assert!(stderr.contains("shard-1.json: not JSON"), "{stderr}");
    assert!(stderr.contains("table.txt: not JSON"), "{stderr}");
    assert!(stderr.contains("absent.json: cannot read it"), "{stderr}");
    assert!(
        !stderr.contains("shard-0.json"),
        "the good file is not blamed: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failure_in_one_shard_makes_the_merge_fail_and_says_where_its_files_are() {
    // No seed of the fixture fails on a correct build, so one shard's file is given a failure
    // as a shard would write it.
    let fixture = fixture();
    let dir = scratch("failure");
    let copies = copy_into(&dir, &fixture.shards.iter().collect::<Vec<_>>());
    let mut shard: Value = read_json(&copies[1]);
    shard["seeds_failed"] = 1.into();
    shard["failures_by_invariant"] =
        serde_json::json!([{"invariant": "mutual_exclusion", "count": 1}]);
    shard["failures"] = serde_json::json!([{
        "seed": 42, "invariant": "mutual_exclusion", "message": "lock w1 granted twice",
        "configuration": "3 servers", "simulated_ns": 5000000000u64, "events": 900,
        "wall_ms": 12.5, "written_to": "/results/failures/42.yaml",
        "minimized_from": null, "minimized_to": null
    }]);
    std::fs::write(&copies[1], shard.to_string()).expect("write");
    let paths: Vec<&Path> = copies.iter().map(PathBuf::as_path).collect();
    let output = merge(&paths, false);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("FAIL: 1 of 90 seeds failed in 3 shard(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL seed 42 (shard 1/3): mutual_exclusion: lock w1 granted twice"),
        "{stdout}"
    );
    let host = shard["host"].as_str().unwrap_or("?");
    assert!(
        stdout.contains(&format!("written to {host}:/results/failures/42.yaml")),
        "{stdout}"
    );
    let merged: Value = serde_json::from_slice(&merge(&paths, true).stdout).expect("JSON");
    assert_eq!(merged["first_failure_seed"], 42);
    assert_eq!(merged["failures"][0]["shard"]["index"], 1);
    assert_eq!(merged["failures_by_invariant"][0]["count"], 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_shard_flags_exit_two_with_a_reason_before_running_anything() {
    let cases: [(&[&str], &str); 7] = [
        (&["--seeds", "9", "--shard", "3/3"], "K counts from 0"),
        (&["--seeds", "9", "--shard", "0/0"], "N must be within"),
        (&["--seeds", "9", "--shard", "x/3"], "is not a whole number"),
        (&["--seeds", "9", "--shard", "2"], "is not K/N"),
        (&["--seeds", "3", "--shard", "0/5"], "5 shards for 3 seeds"),
        (
            &["--seeds", "9", "--merge", "a.json"],
            "cannot be used with",
        ),
        (&["--merge"], "a value is required"),
    ];
    for (flags, reason) in cases {
        let mut args = vec!["explore"];
        args.extend_from_slice(flags);
        let output = lockstep(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_shard_prints_only_its_own_slice_of_scenarios() {
    let output = lockstep(&[
        "explore",
        "--seeds",
        "10",
        "--from",
        "100",
        "--shard",
        "2/3",
        "--print-scenarios",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let names: Vec<String> = text(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("name: "))
        .map(|name| name.trim_matches('"').to_string())
        .collect();
    assert_eq!(names, ["swarm-106", "swarm-107", "swarm-108", "swarm-109"]);
}

// ----- the batch-system files in docs/, run locally as their pods and tasks would -----

fn docs_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

/// PATH with this build's `lockstep` first, as the image or the cluster nodes would have it.
fn path_with_lockstep() -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_lockstep"));
    let dir = binary.parent().expect("the binary's directory");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `program args` with `env`, and returns its exit code and output.
fn run_script(program: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(program);
    command.args(args).env("PATH", path_with_lockstep());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run a docs script")
}

/// The small range the docs scripts run here: 3 shards of 10 seeds.
fn small_range(results: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SHARDS", "3".into()),
        ("SEEDS", "30".into()),
        ("FROM", "500".into()),
        ("DURATION", "1s".into()),
        ("RESULTS", results.display().to_string()),
    ]
}

fn assert_complete_summary(results: &Path, merge: &Output) {
    let stdout = text(&merge.stdout);
    assert_eq!(
        merge.status.code(),
        Some(0),
        "{stdout}{}",
        text(&merge.stderr)
    );
    assert!(
        stdout.contains("PASS: 30 seeds in 3 shard(s), no failure"),
        "{stdout}"
    );
    let summary = read_json(&results.join("summary.json"));
    assert_eq!(summary["seeds_run"], 30);
    assert_eq!(summary["config"]["from"], 500);
    assert_eq!(summary["incomplete"], false);
    let leftovers = std::fs::read_dir(results)
        .expect("list results")
        .filter(|entry| {
            let name = entry.as_ref().expect("an entry").file_name();
            name.to_string_lossy().ends_with(".partial")
        });
    assert_eq!(
        leftovers.count(),
        0,
        "every shard moved its result into place"
    );
}

#[test]
fn the_slurm_script_runs_its_array_tasks_and_merges_them() {
    let results = scratch("slurm");
    let script = docs_file("explore-slurm.sh");
    let script = path_text(&script);
    // An array written 1-3: the script counts K from the array's first index.
    for task in 1..=3 {
        let mut env = small_range(&results);
        env.push(("SLURM_ARRAY_TASK_ID", task.to_string()));
        env.push(("SLURM_ARRAY_TASK_MIN", "1".into()));
        let output = run_script("bash", &[script], &env);
        assert_eq!(
            output.status.code(),
            Some(0),
            "task {task}: {}",
            text(&output.stderr)
        );
        assert!(results.join(format!("shard-{}.json", task - 1)).exists());
    }
    let merge = run_script("bash", &[script, "merge"], &small_range(&results));
    assert_complete_summary(&results, &merge);
    let _ = std::fs::remove_dir_all(results);
}

/// The `sh -c` script of the container in the manifest's Job named `job`, and its env.
fn pod_script(manifest: &[Value], job: &str) -> (String, Vec<(String, String)>) {
    let found = manifest
        .iter()
        .find(|doc| doc["kind"] == "Job" && doc["metadata"]["name"] == job);
    let spec = &found.unwrap_or_else(|| panic!("a Job named {job}"))["spec"];
    let container = &spec["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0], "/bin/sh");
    assert_eq!(container["command"][1], "-c");
    let script = container["command"][2]
        .as_str()
        .expect("a script")
        .to_string();
    let env = container["env"].as_array().expect("env").iter();
    let env = env.map(|variable| {
        let name = variable["name"].as_str().expect("a name").to_string();
        (
            name,
            variable["value"].as_str().expect("a value").to_string(),
        )
    });
    (script, env.collect())
}

#[test]
fn the_kubernetes_indexed_job_runs_its_pods_scripts_and_merges_them() {
    let text_of_manifest =
        std::fs::read_to_string(docs_file("explore-kubernetes.yaml")).expect("the manifest");
    let manifest: Vec<Value> =
        serde_saphyr::from_multiple(&text_of_manifest).expect("the manifest is YAML");
    let (shard_script, shard_env) = pod_script(&manifest, "lockstep-explore");
    let shards = manifest
        .iter()
        .find(|doc| doc["spec"]["completionMode"] == "Indexed");
    let completions = &shards.expect("an Indexed Job")["spec"]["completions"];
    let shards_env = shard_env.iter().find(|(name, _)| name == "SHARDS");
    assert_eq!(
        shards_env.map(|(_, value)| value.parse::<u64>().expect("a number")),
        completions.as_u64(),
        "SHARDS must equal completions"
    );
    let (merge_script, _) = pod_script(&manifest, "lockstep-explore-merge");
    // The pods' scripts as written, with the small range instead of the manifest's.
    let results = scratch("kubernetes");
    std::fs::create_dir_all(&results).expect("the volume");
    for index in 0..3 {
        let mut env = small_range(&results);
        env.push(("JOB_COMPLETION_INDEX", index.to_string()));
        let output = run_script("sh", &["-c", &shard_script], &env);
        assert_eq!(
            output.status.code(),
            Some(0),
            "pod {index}: {}",
            text(&output.stderr)
        );
    }
    let merge = run_script("sh", &["-c", &merge_script], &small_range(&results));
    assert_complete_summary(&results, &merge);
    let _ = std::fs::remove_dir_all(results);
}
