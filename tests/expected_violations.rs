//! Stories of `expect_violations`: a scenario that shows a limit honestly passes only when
//! exactly the checkers it names fail, and every other checker is still judged.

use lockstep::sim::runner::{self, RunOptions};
use lockstep::sim::scenario::{self, Format};

/// s3 is cut off for the whole run and given no time to catch up, so the replicas cannot
/// converge: a limit of the run, not a bug, that `convergence` reports.
fn cut_off_until_the_end(expect_violations: &str) -> lockstep::sim::report::RunReport {
    let text = format!(
        "name: cut off until the end\n\
         description: s3 misses everything and gets no time to catch up\n\
         duration: 3s\n\
         settle: 1ms\n\
         cluster: {{servers: 3, clients: 1, leader: s1}}\n\
         events:\n\
         \x20 - {{at: 500ms, isolate: s3}}\n\
         workload: {{clients: [c1], ops: 50, locks: 2}}\n\
         {expect_violations}"
    );
    let scenario = scenario::parse_str(&text, Format::Yaml, "story.yaml")
        .unwrap_or_else(|error| panic!("{error}"));
    runner::run(&scenario, RunOptions::default()).expect("no trace to write")
}

#[test]
fn without_an_expectation_the_limit_fails_the_run() {
    let report = cut_off_until_the_end("");
    assert!(!report.passed);
    let violation = report.violation.expect("a violation");
    assert_eq!(violation.invariant, "convergence");
}

#[test]
fn expecting_exactly_the_failing_checker_passes_and_still_judges_the_others() {
    let report = cut_off_until_the_end("expect_violations: [convergence]\n");
    assert!(report.passed, "{}", report.render());
    assert!(report.violation.is_none());
    let convergence = report
        .invariants
        .iter()
        .find(|i| i.name == "convergence")
        .expect("listed");
    assert!(!convergence.held && convergence.expected_to_fail);
    let others_held = report
        .invariants
        .iter()
        .filter(|i| i.name != "convergence")
        .all(|i| i.held && i.checks > 0 || i.name == "monotonic_reads");
    assert!(others_held, "{}", report.render());
    assert!(
        report
            .render()
            .contains("expected violation convergence at")
    );
}

#[test]
fn expecting_a_checker_that_holds_fails_the_run_and_says_which() {
    let report = cut_off_until_the_end("expect_violations: [convergence, mutual_exclusion]\n");
    assert!(!report.passed);
    assert!(
        report
            .verdict_line()
            .contains("mutual_exclusion held but the scenario expects a violation"),
        "{}",
        report.verdict_line()
    );
}

#[test]
fn an_unexpected_violation_still_fails_a_run_that_expects_another() {
    let report = cut_off_until_the_end("expect_violations: [mutual_exclusion]\n");
    assert!(!report.passed);
    assert_eq!(
        report.violation.expect("a violation").invariant,
        "convergence"
    );
}
