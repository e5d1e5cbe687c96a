//! `lockstep run`: play scenario files through the simulator and print what happened.
//!
//! This file only finds and loads the files, writes the trace and history files the flags ask
//! for, and prints each report; the simulation is `lockstep::sim::runner`. It must never change
//! what a run does or prints: `run` output is what people diff between commits.

use crate::{EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS};
use clap::Args;
use lockstep::sim::report::RunReport;
use lockstep::sim::runner::{self, RunOptions};
use lockstep::sim::scenario::{self, Scenario};
use lockstep::sim::timeline;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// Scenario files, or directories whose *.yaml, *.yml and *.json files are run in name order.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Override every scenario's seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Write every simulation event as JSON Lines to FILE (one header line per scenario).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write the history the clients observed as JSON Lines (format in README). With several
    /// scenarios, each goes to FILE with the scenario's name before the extension.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Write each scenario's timeline as one self-contained HTML page: servers and clients
    /// against simulated time, messages, roles and terms, faults, operations by result, and
    /// the failing step highlighted. A PATH ending in .html is the file (with several
    /// scenarios, each gets its name before the extension); any other PATH is a directory,
    /// created if needed, holding <scenario name>.html. Keeps every event in memory while the
    /// scenario runs (up to two million), so only a run that asks for it pays.
    #[arg(long, value_name = "DIR_OR_FILE")]
    html: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> u8 {
    let mut scenarios: Vec<(PathBuf, Scenario)> = Vec::new();
    let mut bad_input = false;
    for path in &args.paths {
        match scenario::scenario_files(path) {
            Ok(files) if files.is_empty() => {
                eprintln!(
                    "error: {}: no scenario files (*.yaml, *.yml, *.json) there",
                    path.display()
                );
                bad_input = true;
            }
            Ok(files) => {
                for file in files {
                    match scenario::load_file(&file) {
                        Ok(loaded) => scenarios.push((file, loaded)),
                        Err(error) => {
                            eprintln!("error: {error}");
                            bad_input = true;
                        }
                    }
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                bad_input = true;
            }
        }
    }
    if bad_input {
        return EXIT_BAD_INPUT;
    }
    let mut trace_file = match &args.trace {
        Some(path) => match File::create(path) {
            Ok(file) => Some((path.clone(), file)),
            Err(error) => {
                eprintln!(
                    "error: {}: cannot create the trace file: {error}",
                    path.display()
                );
                return EXIT_BAD_INPUT;
            }
        },
        None => None,
    };
    let mut reports: Vec<RunReport> = Vec::new();
    let scenario_count = scenarios.len();
    for (path, loaded) in scenarios {
        let loaded = match args.seed {
            Some(seed) => loaded.with_seed(seed),
            None => loaded,
        };
        let mut options = RunOptions::default();
        if args.html.is_some() {
            options.keep_trace_events = Some(timeline::EVENTS_MAX);
        }
        if let Some((trace_path, file)) = &mut trace_file {
            let header = serde_json::json!({
                "t": 0, "kind": "run", "scenario": loaded.name, "file": path.display().to_string(),
                "seed": loaded.seed,
            });
            let cloned = writeln!(file, "{header}").and_then(|()| file.try_clone());
            match cloned {
                Ok(handle) => options.trace = Some(Box::new(BufWriter::new(handle))),
                Err(error) => {
                    eprintln!(
                        "error: {}: cannot write the trace: {error}",
                        trace_path.display()
                    );
                    return EXIT_BAD_INPUT;
                }
            }
        }
        let report = match runner::run(&loaded, options) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("error: {}: {error}", path.display());
                return EXIT_BAD_INPUT;
            }
        };
        if let Some(history_path) = &args.history {
            let target = history_file(history_path, &report.name, scenario_count);
            if let Err(error) = write_history(&target, &report) {
                eprintln!(
                    "error: {}: cannot write the history: {error}",
                    target.display()
                );
                return EXIT_BAD_INPUT;
            }
        }
        if let Some(html_path) = &args.html {
            let target = html_file(html_path, &report.name, scenario_count);
            if let Err(error) = write_timeline(&target, &loaded, &report) {
                eprintln!(
                    "error: {}: cannot write the timeline: {error}",
                    target.display()
                );
                return EXIT_BAD_INPUT;
            }
            if !args.json {
                println!("timeline: {}", target.display());
            }
        }
        if !args.json {
            println!("{}", report.render());
            println!("{}  [{}]\n", report.verdict_line(), path.display());
        }
        reports.push(report);
    }
    let all_passed = reports.iter().all(|r| r.passed);
    if args.json {
        let summary = serde_json::json!({ "passed": all_passed, "scenarios": reports });
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("reports serialise")
        );
    } else if reports.len() > 1 {
        let passed = reports.iter().filter(|r| r.passed).count();
        println!("{passed} of {} scenarios passed", reports.len());
    }
    if all_passed { EXIT_PASS } else { EXIT_FAIL }
}

/// `FILE` for one scenario; `FILE` with `.<scenario name>` before its extension for several.
fn history_file(path: &std::path::Path, scenario: &str, scenario_count: usize) -> PathBuf {
    if scenario_count <= 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(extension) => format!("{stem}.{scenario}.{}", extension.to_string_lossy()),
        None => format!("{stem}.{scenario}"),
    };
    path.with_file_name(name)
}

fn write_history(path: &std::path::Path, report: &RunReport) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    lockstep::sim::history::write_jsonl(&report.history, &mut out)?;
    lockstep::sim::watch::write_jsonl(&report.watch_history, &mut out)?;
    out.flush()
}

/// Where `--html PATH` puts one scenario's page: PATH itself when it ends in `.html` (or
/// `.htm`), with the scenario's name before the extension when there are several; otherwise
/// `PATH/<scenario name>.html`.
fn html_file(path: &std::path::Path, scenario: &str, scenario_count: usize) -> PathBuf {
    let is_file = path
        .extension()
        .is_some_and(|extension| extension == "html" || extension == "htm");
    if is_file {
        history_file(path, scenario, scenario_count)
    } else {
        path.join(format!("{scenario}.html"))
    }
}

fn write_timeline(
    path: &std::path::Path,
    scenario: &Scenario,
    report: &RunReport,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    timeline::write_html(path, &timeline::from_run(scenario, report))
}
