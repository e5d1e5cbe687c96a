//! Fuzz target for the scenario parser: YAML and JSON files written by people, the shipped
//! ones mutated and random bytes.
//!
//! A file is refused with a place an author can find (a line and column for syntax, a field
//! path for a value), or it loads into a scenario that survives its own YAML rendering.

use crate::harness::{self, Target};
use lockstep::sim::scenario::{Format, Scenario, ScenarioError, parse_str};
use std::path::Path;

/// Every file in `scenarios/`, with its format.
fn shipped_scenarios() -> Vec<(Vec<u8>, Format)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("fuzz: scenarios/ is readable")
        .map(|entry| entry.expect("fuzz: a directory entry").path())
        .filter_map(|path| Format::from_path(&path).map(|format| (path, format)))
        .collect();
    files.sort_by(|(a, _), (b, _)| a.cmp(b));
    files
        .into_iter()
        .map(|(path, format)| (std::fs::read(&path).expect("fuzz: a scenario file"), format))
        .collect()
}

/// The file's top-level fields, where every place starts (`file` for the file as a whole).
const TOP_LEVEL_PLACES: &[&str] = &[
    "file",
    "name",
    "description",
    "seed",
    "duration",
    "settle",
    "cluster",
    "network",
    "timing",
    "events",
    "workload",
    "expect_final",
];

/// A problem is `place: what`, where the place is a path from a top-level field, such as
/// `events[3].client` (a path may hold a map key from the file, spaces and all).
fn check_problem(problem: &str) -> Result<(), String> {
    if problem.starts_with("(and ") && problem.ends_with(" more problems not listed)") {
        return Ok(());
    }
    let place = problem.split_once(": ").map_or("", |(place, _)| place);
    let field = place.split(['.', '[']).next().unwrap_or("");
    if TOP_LEVEL_PLACES.contains(&field) {
        Ok(())
    } else {
        Err(format!("a problem without a place: {problem:?}"))
    }
}

/// Events are written sorted by time, so their positions in the file (kept for messages) are
/// renumbered by a round trip; everything else must survive it.
fn renumbered(mut scenario: Scenario) -> Scenario {
    for (position, event) in scenario.events.iter_mut().enumerate() {
        event.index = position;
    }
    scenario
}

fn check_text(text: &str, format: Format) -> Result<(), String> {
    let path = match format {
        Format::Yaml => "fuzz.yaml",
        Format::Json => "fuzz.json",
    };
    match parse_str(text, format, path) {
        Ok(scenario) => {
            let yaml = scenario.to_yaml();
            match parse_str(&yaml, Format::Yaml, "rendered.yaml") {
                Ok(again) if renumbered(again.clone()) == renumbered(scenario) => Ok(()),
                Ok(again) => Err(format!("rendered as\n{yaml}\nit loads as {again:?}")),
                Err(error) => Err(format!("rendered as\n{yaml}\nit is refused: {error}")),
            }
        }
        Err(ScenarioError::Syntax {
            path: named,
            line,
            column,
            message,
        }) => {
            if named != path || message.trim().is_empty() {
                return Err(format!("syntax error {named}:{line}:{column}: {message:?}"));
            }
            if line == 0 {
                return Err(format!("a syntax error without a line: {message}"));
            }
            Ok(())
        }
        Err(ScenarioError::Invalid {
            path: named,
            problems,
        }) => {
            if named != path || problems.is_empty() {
                return Err(format!("refused {named} with problems {problems:?}"));
            }
            problems
                .iter()
                .try_for_each(|problem| check_problem(problem))
        }
        Err(error @ ScenarioError::Io { .. }) => Err(format!("parsing text read a file: {error}")),
    }
}

const DICTIONARY: &[&str] = &[
    "\n",
    "\n  ",
    "\n- ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "<<: ",
    "~",
    "null",
    "true",
    "-1",
    "0.5",
    "1e400",
    "NaN",
    ".inf",
    "18446744073709551616",
    "99999999999999999999ms",
    "0ms",
    "1.5s",
    "2m",
    "60m",
    "s1",
    "c1",
    "servers: ",
    "clients: ",
    "at: ",
    "events:",
    "expect_final:",
    "workload:",
    "network:",
    "timing:",
    "op: ",
    "lock: ",
    "crash: ",
    "restart: ",
    "partition: ",
    "isolate: ",
    "heal",
    "\"at\":",
    "\"events\":",
];

/// Deep nesting is where a recursive parser overflows its stack, which no panic handler
/// catches: too deep for random edits to reach, so tried here directly.
#[test]
fn scenario_parser_survives_deep_nesting() {
    let depth = 100_000;
    let texts = [
        format!("events: {}", "[".repeat(depth)),
        format!("events: {}", "{a: ".repeat(depth)),
        format!(
            "events:\n{}",
            (0..depth)
                .map(|level| format!("{}- \n", " ".repeat(level % 64)))
                .collect::<String>()
        ),
        format!("&a [{}]", "*a, ".repeat(depth)),
    ];
    for text in &texts {
        check_text(text, Format::Yaml).unwrap();
    }
    let json = format!("{{\"events\": {}", "[".repeat(depth));
    check_text(&json, Format::Json).unwrap();
}

#[test]
fn scenario_parser() {
    let shipped = shipped_scenarios();
    assert!(
        shipped.len() >= 2,
        "fuzz: scenarios/ holds the shipped files"
    );
    for (bytes, format) in &shipped {
        let text = std::str::from_utf8(bytes).expect("fuzz: a shipped scenario is UTF-8");
        parse_str(text, *format, "shipped").expect("fuzz: a shipped scenario loads");
        check_text(text, *format).unwrap();
    }
    let corpus: Vec<Vec<u8>> = shipped.iter().map(|(bytes, _)| bytes.clone()).collect();
    let target = Target {
        name: "scenario_parser",
        corpus: &corpus,
        random_bytes_max: 256,
        random_prefix: b"name: fuzz\nduration: 1s\ncluster: {servers: 3, clients: 2}\n",
        dictionary: DICTIONARY,
    };
    harness::fuzz(&target, |_, materialized| {
        // The parser takes text; a file that is not UTF-8 is refused before it (by
        // `load_file`), so invalid bytes become replacement characters here.
        let text = String::from_utf8_lossy(&materialized.bytes);
        match materialized.base {
            Some(base) => check_text(&text, shipped[base].1),
            None => {
                check_text(&text, Format::Yaml)?;
                check_text(&text, Format::Json)
            }
        }
    });
}
