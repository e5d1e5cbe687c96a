//! Stories of bad scenario files: each one must be refused with the right kind of error, and the
//! message must point at the place an author has to fix.

use lockstep::sim::scenario::{
    Format, Scenario, ScenarioError, load_file, parse_str, scenario_files,
};
use std::path::PathBuf;

/// A valid five-server, three-client scenario to which each story adds its mistake.
const VALID_HEAD: &str = "\
name: story
description: a scenario with one mistake
duration: 20s
cluster: {servers: 5, clients: 3}
";

fn yaml(text: &str) -> Result<Scenario, ScenarioError> {
    parse_str(text, Format::Yaml, "story.yaml")
}

fn with_events(events: &str) -> String {
    format!("{VALID_HEAD}events:\n{events}")
}

/// The problems of an `Invalid` error; fails the test on any other outcome.
fn problems_of(result: Result<Scenario, ScenarioError>) -> Vec<String> {
    match result {
        Err(ScenarioError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected an Invalid error, got: {other}"),
        Ok(scenario) => panic!("expected an Invalid error, got a scenario: {scenario:?}"),
    }
}

/// Line, column and message of a `Syntax` error; fails the test on any other outcome.
fn syntax_of(result: Result<Scenario, ScenarioError>) -> (u64, u64, String) {
    match result {
        Err(ScenarioError::Syntax {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        Err(other) => panic!("expected a Syntax error, got: {other}"),
        Ok(scenario) => panic!("expected a Syntax error, got a scenario: {scenario:?}"),
    }
}

fn assert_single_problem(problems: &[String], place: &str, words: &str) {
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    assert!(
        problems[0].starts_with(&format!("{place}: ")),
        "{:?} is not at {place}",
        problems[0]
    );
    assert!(
        problems[0].contains(words),
        "{:?} does not say {words:?}",
        problems[0]
    );
}

/// A file under the temporary directory with a name no other test run uses; removed on drop.
struct TemporaryFile {
    path: PathBuf,
}

impl TemporaryFile {
    fn new(file_name: &str, text: &str) -> TemporaryFile {
        let unique = format!(
            "lockstep-scenario-errors-{}-{file_name}",
            std::process::id()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::write(&path, text).expect("the temporary directory is writable");
        TemporaryFile { path }
    }
}

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn the_valid_head_alone_loads_so_each_story_fails_only_for_its_own_mistake() {
    let scenario = yaml(VALID_HEAD).expect("the shared head is valid");
    assert_eq!(scenario.cluster.servers, 5);
    assert_eq!(scenario.cluster.clients, 3);
}

#[test]
fn crashing_s9_in_a_five_server_cluster_is_refused_at_that_event() {
    let text = with_events("  - {at: 1s, crash: s1}\n  - {at: 2s, crash: s9}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[1].crash",
        "\"s9\" is not in this cluster",
    );
    assert!(
        problems[0].contains("s1..s5, leader or all"),
        "{problems:?}"
    );
}

#[test]
fn a_client_operation_by_c4_with_three_clients_is_refused() {
    let text = with_events("  - {at: 1s, client: c4, op: preempt, lock: a}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].client",
        "\"c4\" is not in this cluster",
    );
    assert!(problems[0].contains("c1..c3"), "{problems:?}");
}

#[test]
fn a_duration_in_hours_is_not_understood() {
    let text = with_events("  - {at: 1h, heal: all}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "events[0].at", "\"1h\" is not a duration");
    assert!(problems[0].contains("ms, s or m"), "{problems:?}");
}

#[test]
fn a_negative_duration_is_not_a_duration() {
    let text = with_events("  - {at: 1s, heal: all}\n  - {at: -1s, heal: all}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[1].at",
        "\"-1s\" is not a duration (use a number with ms, s or m, e.g. 250ms)",
    );
}

#[test]
fn a_bare_number_as_a_time_is_refused_for_want_of_a_unit() {
    let text = with_events("  - {at: 5, heal: all}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "events[0].at", "5 needs a unit");
}

#[test]
fn a_drop_probability_above_one_is_refused() {
    let text = format!("{VALID_HEAD}network: {{drop: 1.5}}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "network.drop", "1.5 is not a probability");
}

#[test]
fn a_negative_probability_in_a_mid_run_network_change_is_refused() {
    let text = with_events("  - {at: 4s, network: {duplicate: -0.1}}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].network.duplicate",
        "-0.1 is not a probability",
    );
}

#[test]
fn a_crash_cannot_carry_an_expectation() {
    let text = with_events("  - {at: 3s, crash: leader, expect: granted}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].expect",
        "crash events take no expect (only client operations do)",
    );
}

#[test]
fn an_event_after_the_end_of_the_run_is_refused_with_both_times() {
    let text = with_events(
        "  - {at: 1s, heal: all}\n  - {at: 2s, heal: all}\n  - {at: 3s, heal: all}\n  \
         - {at: 4s, heal: all}\n  - {at: 25s, heal: all}\n",
    );
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[4].at",
        "25s is after the scenario's duration 20s",
    );
}

#[test]
fn a_consistency_on_a_preempt_is_refused() {
    let text =
        with_events("  - {at: 1s, client: c1, op: preempt, lock: a, consistency: linearizable}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].consistency",
        "only a check takes a consistency (this is a preempt)",
    );
}

#[test]
fn an_expectation_that_the_operation_cannot_answer_is_refused() {
    let text = with_events("  - {at: 1s, client: c1, op: release, lock: a, expect: granted}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].expect",
        "a release cannot answer granted",
    );
}

#[test]
fn an_event_with_both_a_crash_and_a_partition_is_refused() {
    let text =
        with_events("  - {at: 1s, heal: all}\n  - {at: 2s, crash: s1, partition: [[s1], [s2]]}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[1]",
        "has both crash and partition; an event takes exactly one action",
    );
}

#[test]
fn an_operation_without_a_client_is_refused() {
    let text = with_events("  - {at: 1s, op: preempt, lock: a}\n");
    let problems = problems_of(yaml(&text));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("events[0].op: given without client"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("events[0].lock: given without client"),
        "{problems:?}"
    );
}

#[test]
fn a_server_in_two_partition_groups_is_refused() {
    let text = with_events("  - {at: 1s, partition: [[s1, s2], [s2, s3]]}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "events[0].partition[1][0]", "s2 is listed twice");
}

#[test]
fn an_unknown_key_is_a_syntax_error_at_its_line_and_column() {
    let text = format!("{VALID_HEAD}events:\n  - {{at: 1s, crahs: s1}}\n");
    let (line, column, message) = syntax_of(yaml(&text));
    assert_eq!((line, column), (6, 14));
    assert!(message.starts_with("unknown field `crahs`"), "{message:?}");
    assert!(
        !message.contains("line"),
        "the position is in line and column, not the message"
    );
}

#[test]
fn an_unknown_top_level_key_names_the_keys_that_exist() {
    let text = format!("{VALID_HEAD}bogus: 1\n");
    let (line, column, message) = syntax_of(yaml(&text));
    assert_eq!((line, column), (5, 1));
    assert!(
        message.starts_with("unknown field `bogus`, expected one of"),
        "{message:?}"
    );
}

#[test]
fn a_yaml_syntax_error_reports_line_and_column() {
    let text = "name: story\ndescription: [unclosed\nduration: 20s\n";
    let error = yaml(text).expect_err("an unclosed flow sequence is not YAML");
    let shown = error.to_string();
    let (line, column, _) = syntax_of(Err(error));
    assert!(
        line >= 2,
        "the error is on line 2 or later, got {line}:{column}"
    );
    assert!(
        shown.starts_with(&format!("story.yaml:{line}:{column}: ")),
        "{shown:?}"
    );
}

#[test]
fn a_json_syntax_error_reports_line_and_column() {
    let text = "{\"name\": \"story\",\n \"description\": \"d\" \"duration\": \"20s\"}";
    let result = parse_str(text, Format::Json, "story.json");
    let (line, column, message) = syntax_of(result);
    assert_eq!((line, column), (2, 21));
    assert_eq!(message, "expected `,` or `}`");
}

#[test]
fn an_unknown_json_key_is_a_syntax_error_too() {
    let text = "{\"name\": \"story\",\n \"seeed\": 7}";
    let (line, _, message) = syntax_of(parse_str(text, Format::Json, "story.json"));
    assert_eq!(line, 2);
    assert!(message.starts_with("unknown field `seeed`"), "{message:?}");
}

#[test]
fn several_problems_in_one_file_are_listed_at_once() {
    let text = "\
name: ''
description: several mistakes
duration: 20s
cluster: {servers: 16, clients: 3}
network: {drop: 2}
events:
  - {at: 1s, client: c4, op: preempt, lock: a}
  - {at: 30s, heal: all}
workload: {clients: [c1], ops: 0, locks: 4, mix: {preempt: 1, release: 1, check: -1}}
expect_final: {a: c7}
";
    let problems = problems_of(yaml(text));
    let places = [
        "name: ",
        "cluster.servers: 16 is out of range (1..=15)",
        "network.drop: ",
        "events[0].client: ",
        "events[1].at: 30s is after",
        "workload.ops: 0 is out of range (1..=1000000)",
        "workload.mix.check: ",
        "expect_final.a: ",
    ];
    for place in places {
        assert!(
            problems.iter().any(|problem| problem.starts_with(place)),
            "{place}: {problems:#?}"
        );
    }
    assert_eq!(problems.len(), places.len(), "{problems:#?}");
}

#[test]
fn an_empty_file_lists_every_required_key() {
    let problems = problems_of(yaml(""));
    for place in [
        "name: missing",
        "description: missing",
        "duration: missing",
        "cluster: missing",
    ] {
        assert!(
            problems.iter().any(|problem| problem.starts_with(place)),
            "{place}: {problems:#?}"
        );
    }
}

#[test]
fn the_invalid_error_names_the_file_and_counts_its_problems() {
    let error = yaml(&format!("{VALID_HEAD}network: {{drop: 2, duplicate: 3}}\n"))
        .expect_err("both probabilities are out of range");
    let shown = error.to_string();
    assert!(
        shown.starts_with("story.yaml: 2 problem(s):\n  - network.drop: "),
        "{shown}"
    );
}

#[test]
fn a_file_with_an_unknown_extension_is_refused_by_name() {
    let file = TemporaryFile::new("story.toml", VALID_HEAD);
    let problems = problems_of(load_file(&file.path));
    assert_single_problem(&problems, "extension", "\".toml\" is not a scenario format");
}

#[test]
fn a_yaml_file_on_disk_reports_its_own_path_and_position() {
    let file = TemporaryFile::new("bad-key.yaml", &format!("{VALID_HEAD}bogus: 1\n"));
    let error = load_file(&file.path).expect_err("bogus is no key");
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{}:5:1: ", file.path.display())),
        "{shown}"
    );
}

#[test]
fn a_json_file_on_disk_loads_like_its_yaml_twin() {
    let json = r#"{"name": "story", "description": "d", "duration": "20s",
                   "cluster": {"servers": 5, "clients": 3}}"#;
    let file = TemporaryFile::new("twin.json", json);
    let from_json = load_file(&file.path).expect("the json twin is valid");
    let from_yaml = yaml(&VALID_HEAD.replace("a scenario with one mistake", "d")).expect("valid");
    assert_eq!(from_json, from_yaml);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = std::env::temp_dir().join("lockstep-scenario-errors-no-such-file.yaml");
    match load_file(&path) {
        Err(ScenarioError::Io { path: shown, .. }) => assert_eq!(shown, path.display().to_string()),
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(matches!(
        scenario_files(&path),
        Err(ScenarioError::Io { .. })
    ));
}

#[test]
fn a_directory_lists_its_scenario_files_sorted_and_skips_the_rest() {
    let directory = std::env::temp_dir().join(format!(
        "lockstep-scenario-errors-dir-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(directory.join("nested.yaml")).expect("temporary directory");
    for name in ["b.yml", "a.yaml", "c.json", "notes.txt"] {
        std::fs::write(directory.join(name), "").expect("temporary file");
    }
    let files = scenario_files(&directory);
    let _ = std::fs::remove_dir_all(&directory);
    let names: Vec<String> = files
        .expect("the directory exists")
        .iter()
        .filter_map(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .collect();
    assert_eq!(names, ["a.yaml", "b.yml", "c.json"]);
}

#[test]
fn a_network_change_that_leaves_latency_min_above_max_is_refused_at_that_change() {
    let text = format!(
        "{VALID_HEAD}network: {{latency: {{min: 1ms, max: 10ms}}}}\nevents:\n  \
         - {{at: 4s, network: {{latency: {{max: 30ms}}}}}}\n  \
         - {{at: 2s, network: {{latency: {{min: 20ms}}}}}}\n"
    );
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[1].network",
        "leaves latency min 20ms above max 10ms from 2s on",
    );
}

#[test]
fn a_file_with_more_events_than_the_limit_is_refused_with_the_limit() {
    let events = "  - {at: 1s, heal: all}\n".repeat(100_001);
    let problems = problems_of(yaml(&with_events(&events)));
    assert_single_problem(
        &problems,
        "events",
        "100001 events are above the limit of 100000",
    );
}

#[test]
fn a_rogue_mix_with_an_unknown_attack_kind_names_the_kinds_that_exist() {
    let text = format!("{VALID_HEAD}rogues: {{clients: 2, rate: 20/s, mix: {{forge: 1}}}}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "rogues.mix.forge", "is not an attack kind");
    assert!(problems[0].contains("forged_id"), "{problems:?}");
}

#[test]
fn a_rogue_rate_without_per_second_or_out_of_range_is_refused_at_its_place() {
    let text = format!("{VALID_HEAD}rogues: {{clients: 2, rate: 20}}\n");
    assert_single_problem(&problems_of(yaml(&text)), "rogues.rate", "is not a rate");
    let text = format!("{VALID_HEAD}rogues: {{clients: 2, rate: 0/s}}\n");
    assert_single_problem(&problems_of(yaml(&text)), "rogues.rate", "out of range");
    let text = format!("{VALID_HEAD}rogues: {{clients: 99, rate: 5/s}}\n");
    assert_single_problem(&problems_of(yaml(&text)), "rogues.clients", "out of range");
}

#[test]
fn an_unknown_key_in_rogues_is_a_syntax_error_and_all_zero_weights_are_refused() {
    let text = format!("{VALID_HEAD}rogues: {{clients: 1, rate: 5/s, burst: 3}}\n");
    let (line, _, message) = syntax_of(yaml(&text));
    assert_eq!(line, 5);
    assert!(message.contains("unknown field `burst`"), "{message:?}");
    let text = format!("{VALID_HEAD}rogues: {{clients: 1, rate: 5/s, mix: {{huge_seq: 0}}}}\n");
    assert_single_problem(&problems_of(yaml(&text)), "rogues.mix", "sum to 0");
}

#[test]
fn a_rogue_may_be_partitioned_but_only_the_rogues_that_exist() {
    let text = format!(
        "{VALID_HEAD}rogues: {{clients: 2, rate: 5/s}}\nevents:\n  - {{at: 1s, partition: [[s1, r2], [s2, r3]]}}\n"
    );
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].partition[1][1]",
        "not in this cluster",
    );
    assert!(problems[0].contains("r1..r2"), "{problems:?}");
    let without = with_events("  - {at: 1s, isolate: r1}\n");
    assert_single_problem(
        &problems_of(yaml(&without)),
        "events[0].isolate",
        "not in this cluster",
    );
}

#[test]
fn a_crash_inside_a_step_loads_with_its_server_and_effect_count() {
    let text = with_events("  - {at: 3s, crash: {node: s2, after_effects: 2}}\n");
    let scenario = yaml(&text).expect("a valid crash inside a step");
    assert_eq!(
        scenario.events[0].action,
        lockstep::sim::scenario::Action::CrashInStep {
            server: lockstep::node::ServerId(2),
            after_effects: 2,
            restart_after: None,
        }
    );
    let text =
        with_events("  - {at: 3s, crash: {node: s2, after_effects: 0, restart_after: 5ms}}\n");
    let scenario = yaml(&text).expect("a crash inside a step with its restart");
    assert_eq!(
        scenario.events[0].action,
        lockstep::sim::scenario::Action::CrashInStep {
            server: lockstep::node::ServerId(2),
            after_effects: 0,
            restart_after: Some(std::time::Duration::from_millis(5)),
        }
    );
    let unitless =
        with_events("  - {at: 3s, crash: {node: s2, after_effects: 0, restart_after: 5}}\n");
    assert_single_problem(
        &problems_of(yaml(&unitless)),
        "events[0].crash.restart_after",
        "5 needs a unit",
    );
}

#[test]
fn a_crash_inside_a_step_with_a_negative_count_or_an_unknown_server_is_refused() {
    let negative = with_events("  - {at: 3s, crash: {node: s2, after_effects: -1}}\n");
    assert_single_problem(
        &problems_of(yaml(&negative)),
        "events[0].crash.after_effects",
        "-1 is out of range (0..=100000)",
    );
    let unknown = with_events("  - {at: 3s, crash: {node: s9, after_effects: 1}}\n");
    let problems = problems_of(yaml(&unknown));
    assert_single_problem(
        &problems,
        "events[0].crash.node",
        "\"s9\" is not in this cluster",
    );
    assert!(problems[0].contains("s1..s5"), "{problems:?}");
    let leader = with_events("  - {at: 3s, crash: {node: leader, after_effects: 1}}\n");
    assert_single_problem(
        &problems_of(yaml(&leader)),
        "events[0].crash.node",
        "\"leader\" is not a valid name here (expected s1..s5)",
    );
    let missing = with_events("  - {at: 3s, crash: {node: s1}}\n");
    assert_single_problem(
        &problems_of(yaml(&missing)),
        "events[0].crash.after_effects",
        "missing",
    );
}

#[test]
fn an_unknown_key_in_a_crash_inside_a_step_is_a_syntax_error_at_its_place() {
    let text = with_events("  - {at: 3s, crash: {node: s2, after: 2}}\n");
    let (line, _, message) = syntax_of(yaml(&text));
    assert_eq!(line, 6);
    assert!(message.contains("unknown field `after`"), "{message:?}");
}

#[test]
fn a_corrupt_event_needs_a_server_and_an_entry_from_one() {
    let valid = with_events("  - {at: 3s, corrupt: {node: s2, entry: 120}}\n");
    let scenario = yaml(&valid).expect("a valid corrupt event");
    assert_eq!(
        scenario.events[0].action,
        lockstep::sim::scenario::Action::Corrupt {
            server: lockstep::node::ServerId(2),
            entry: 120,
        }
    );
    let zero = with_events("  - {at: 3s, corrupt: {node: s2, entry: 0}}\n");
    assert_single_problem(
        &problems_of(yaml(&zero)),
        "events[0].corrupt.entry",
        "0 is not a log index (entries are numbered from 1)",
    );
    let client = with_events("  - {at: 3s, corrupt: {node: c1, entry: 4}}\n");
    assert_single_problem(
        &problems_of(yaml(&client)),
        "events[0].corrupt.node",
        "\"c1\" is not a valid name here",
    );
    let bare = with_events("  - {at: 3s, corrupt: {entry: 4}}\n");
    assert_single_problem(
        &problems_of(yaml(&bare)),
        "events[0].corrupt.node",
        "missing",
    );
    let both = with_events("  - {at: 3s, corrupt: {node: s1, entry: 4}, crash: s1}\n");
    assert_single_problem(
        &problems_of(yaml(&both)),
        "events[0]",
        "has both crash and corrupt",
    );
}

#[test]
fn disk_fault_probabilities_must_lie_in_zero_to_one() {
    let text = format!("{VALID_HEAD}disk: {{torn_write: 1.5, corrupt: -0.001}}\n");
    let problems = problems_of(yaml(&text));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("disk.torn_write: 1.5 is not a probability"));
    assert!(problems[1].starts_with("disk.corrupt: -0.001 is not a probability"));
    let unknown = format!("{VALID_HEAD}disk: {{torn: 0.1}}\n");
    let (line, _, message) = syntax_of(yaml(&unknown));
    assert_eq!(line, 5);
    assert!(message.contains("unknown field `torn`"), "{message:?}");
    let valid = format!("{VALID_HEAD}disk: {{torn_write: 0.01, corrupt: 0.001}}\n");
    let disk = yaml(&valid).expect("valid disk faults").disk;
    assert_eq!((disk.torn_write, disk.corrupt), (0.01, 0.001));
}

#[test]
fn buggify_is_a_probability_too() {
    let text = format!("{VALID_HEAD}buggify: 2\n");
    assert_single_problem(
        &problems_of(yaml(&text)),
        "buggify",
        "2 is not a probability",
    );
    let valid = format!("{VALID_HEAD}buggify: 0.05\n");
    assert_eq!(yaml(&valid).expect("valid buggify").buggify, Some(0.05));
    let absent = yaml(VALID_HEAD).expect("valid without it");
    assert_eq!(absent.buggify, None, "off unless asked for");
}

#[test]
fn a_clock_drift_beyond_one_half_is_refused_with_its_bounds() {
    let text = format!("{VALID_HEAD}clock: {{drift: 0.7}}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "clock.drift", "use a fraction in [0, 0.5]");
}

#[test]
fn a_clock_without_its_drift_is_refused() {
    let text = format!("{VALID_HEAD}clock: {{}}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(&problems, "clock.drift", "missing");
}

#[test]
fn a_clock_rate_of_three_is_refused_with_the_range_of_rates() {
    let text = with_events("  - {at: 1s, clock: {node: s2, rate: 3}}\n");
    let problems = problems_of(yaml(&text));
    assert_single_problem(
        &problems,
        "events[0].clock.rate",
        "use a number in [0.5, 2]",
    );
}

#[test]
fn a_pause_of_nothing_and_a_pause_of_a_rogue_are_refused_each_at_its_place() {
    let text = format!(
        "{VALID_HEAD}rogues: {{clients: 1, rate: 5/s}}\nevents:\n  - {{at: 1s, pause: {{node: s1, for: 0ms}}}}\n  \
         - {{at: 2s, pause: {{node: r1, for: 1s}}}}\n"
    );
    let problems = problems_of(yaml(&text));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("events[0].pause.for: 0ms pauses nothing"));
    assert!(
        problems[1].starts_with("events[1].pause.node: ") && problems[1].contains("r1"),
        "{problems:#?}"
    );
}

#[test]
fn a_pause_needs_a_node_and_a_length() {
    let text = with_events("  - {at: 1s, pause: {}}\n");
    let problems = problems_of(yaml(&text));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].starts_with("events[0].pause.node: missing"));
    assert!(problems[1].starts_with("events[0].pause.for: missing"));
}

#[test]
fn expect_violations_names_only_known_checkers_each_once() {
    let text = format!("{VALID_HEAD}expect_violations: [convergence, lease_safty, convergence]\n");
    let problems = problems_of(yaml(&text));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("expect_violations[1]: \"lease_safty\" is not a checker")
            && problems[0].contains("mutual_exclusion"),
        "{problems:#?}"
    );
    assert!(problems[1].starts_with("expect_violations[2]: convergence is listed twice"));
}

/// The blocking acquire's fields: an acquire must say how long it waits, only an acquire
/// takes a wait, a wait has a bound, and each operation only expects its own answers.
#[test]
fn acquire_and_cancel_mistakes_are_named_at_their_place() {
    let missing = yaml(&with_events(
        "  - {at: 1s, client: c1, op: acquire, lock: a}\n",
    ));
    assert_single_problem(
        &problems_of(missing),
        "events[0].wait",
        "how long it may wait",
    );
    let misplaced = yaml(&with_events(
        "  - {at: 1s, client: c1, op: preempt, lock: a, wait: 2s}\n",
    ));
    assert_single_problem(&problems_of(misplaced), "events[0].wait", "only an acquire");
    let too_long = yaml(&with_events(
        "  - {at: 1s, client: c1, op: acquire, lock: a, wait: 2h}\n",
    ));
    assert!(
        problems_of(too_long)
            .iter()
            .any(|p| p.starts_with("events[0].wait: "))
    );
    let wrong_answer = yaml(&with_events(
        "  - {at: 1s, client: c1, op: cancel, lock: a, expect: granted}\n",
    ));
    assert_single_problem(
        &problems_of(wrong_answer),
        "events[0].expect",
        "cancelled, not_waiting",
    );
    let fine = yaml(&with_events(
        "  - {at: 1s, client: c1, op: acquire, lock: a, wait: 0s, expect: timeout}\n  - {at: \
         2s, client: c1, op: cancel, lock: a, expect: not_waiting}\n",
    ));
    assert!(fine.is_ok(), "{fine:?}");
}

/// A watch names a lock or a prefix, not both; `from` is a log index; it expects nothing; and
/// only a watch takes a prefix.
#[test]
fn a_watch_with_both_targets_a_zero_from_an_expect_or_a_prefix_elsewhere_is_refused() {
    let both = "  - {at: 1s, client: c1, op: watch, lock: a, prefix: w}\n";
    let problems = problems_of(yaml(&with_events(both)));
    assert_single_problem(&problems, "events[0]", "a lock or a prefix, not both");

    let zero = "  - {at: 1s, client: c1, op: watch, lock: a, from: 0}\n";
    let problems = problems_of(yaml(&with_events(zero)));
    assert_single_problem(&problems, "events[0].from", "not a log index");

    let expecting = "  - {at: 1s, client: c1, op: watch, prefix: w, expect: granted}\n";
    let problems = problems_of(yaml(&with_events(expecting)));
    assert_single_problem(&problems, "events[0].expect", "a watch takes no expect");

    let stray = "  - {at: 1s, client: c1, op: preempt, lock: a, prefix: w}\n";
    let problems = problems_of(yaml(&with_events(stray)));
    assert_single_problem(&problems, "events[0].prefix", "only a watch takes a prefix");

    let neither = "  - {at: 1s, client: c1, op: watch}\n";
    let problems = problems_of(yaml(&with_events(neither)));
    assert_single_problem(&problems, "events[0]", "needs a lock or a prefix");
}

/// A watch round-trips through the YAML the minimizer writes.
#[test]
fn a_watch_survives_the_yaml_round_trip() {
    let events = "  - {at: 1s, client: c2, op: watch, prefix: w, from: 4}\n  \
                  - {at: 2s, client: c3, op: watch, lock: a}\n";
    let scenario = yaml(&with_events(events)).expect("valid");
    let again = yaml(&scenario.to_yaml()).expect("its own YAML reads back");
    assert_eq!(again.events, scenario.events);
}
