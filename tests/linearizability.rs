//! Client-observed histories, each a short story with its verdict: what the linearizability
//! checker must accept, what it must reject, and what it must leave to the monotonic-reads check.
//! Times in the stories are milliseconds.

use lockstep::node::{Claim, Consistency};
use lockstep::sim::history::{
    HistoryOp, HistoryOpKind, HistoryProblem, HistoryResult, read_jsonl, write_jsonl,
};
use lockstep::sim::linearizability::{
    LINEARIZABILITY, LinearizabilityReport, LinearizabilityViolation, MONOTONIC_READS,
    check_history, synthetic_history,
};

const MS: u64 = 1_000_000;

fn op(
    client: u32,
    kind: HistoryOpKind,
    consistency: Option<Consistency>,
    call_ms: u64,
    return_ms: Option<u64>,
    result: HistoryResult,
) -> HistoryOp {
    HistoryOp {
        client,
        op: kind,
        lock: "a".into(),
        consistency,
        call_ns: call_ms * MS,
        return_ns: return_ms.map(|ms| ms * MS),
        result,
        index: None,
        claim: Claim::EXCLUSIVE,
    }
}

fn preempt(client: u32, call_ms: u64, return_ms: u64, result: HistoryResult) -> HistoryOp {
    op(
        client,
        HistoryOpKind::Preempt,
        None,
        call_ms,
        Some(return_ms),
        result,
    )
}

fn release(client: u32, call_ms: u64, return_ms: u64, result: HistoryResult) -> HistoryOp {
    op(
        client,
        HistoryOpKind::Release,
        None,
        call_ms,
        Some(return_ms),
        result,
    )
}

fn check(client: u32, call_ms: u64, return_ms: u64, result: HistoryResult) -> HistoryOp {
    let linearizable = Some(Consistency::Linearizable);
    op(
        client,
        HistoryOpKind::Check,
        linearizable,
        call_ms,
        Some(return_ms),
        result,
    )
}

fn local_check(client: u32, call_ms: u64, return_ms: u64, result: HistoryResult) -> HistoryOp {
    let local = Some(Consistency::Local);
    op(
        client,
        HistoryOpKind::Check,
        local,
        call_ms,
        Some(return_ms),
        result,
    )
}

/// An operation whose client never learned the result.
fn unknown(client: u32, kind: HistoryOpKind, call_ms: u64) -> HistoryOp {
    op(client, kind, None, call_ms, None, HistoryResult::Unknown)
}

fn granted(token: u64) -> HistoryResult {
    HistoryResult::Granted { token }
}

fn held_by(owner: u32) -> HistoryResult {
    HistoryResult::HeldBy { owner }
}

fn owner(owner: u32, token: u64) -> HistoryResult {
    HistoryResult::Owner {
        owner,
        token: Some(token),
    }
}

const RELEASED: HistoryResult = HistoryResult::Released;
const FREE: HistoryResult = HistoryResult::Free;

/// The single non-linearizable window of a report that must have exactly one violation.
fn only_window(report: &LinearizabilityReport) -> &[HistoryOp] {
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    match &report.violations[0] {
        LinearizabilityViolation::NotLinearizable { lock, window, .. } => {
            assert!(
                window.iter().all(|op| &op.lock == lock),
                "one lock per window"
            );
            window
        }
        other => panic!("expected a linearizability violation, got {other}"),
    }
}

fn assert_linearizable(history: &[HistoryOp]) {
    let report = check_history(history);
    assert!(report.passed(), "{:#?}", report.violations);
    assert_eq!(report.operations_checked, history.len());
}

#[test]
fn a_linearizable_read_that_sees_the_owner_after_its_release_returned_is_stale() {
    let history = [
        preempt(1, 0, 1, granted(1)),
        release(1, 2, 3, RELEASED),
        check(2, 4, 5, owner(1, 1)), // the release returned at 3: c1 no longer holds `a`
    ];
    let report = check_history(&history);
    let window = only_window(&report);
    assert_eq!(
        window,
        &history[1..],
        "the grant before the release is not needed to see it"
    );
    let shown = report.violations[0].to_string();
    assert!(
        shown.starts_with("linearizability violated on lock `a`"),
        "{shown}"
    );
    assert!(
        shown.contains("c2 check at 5.000ms: owner c1 (token 1)"),
        "{shown}"
    );
    assert!(
        shown.contains("2.000ms .. 3.000ms"),
        "one line per operation: {shown}"
    );
    assert_eq!(report.violations[0].invariant(), LINEARIZABILITY);
}

#[test]
fn the_same_stale_read_as_a_local_check_is_not_held_to_linearizability() {
    let history = [
        preempt(1, 0, 1, granted(1)),
        release(1, 2, 3, RELEASED),
        local_check(2, 4, 5, owner(1, 1)),
    ];
    assert_linearizable(&history);
}

#[test]
fn a_local_check_that_shows_its_client_an_older_token_breaks_monotonic_reads() {
    let history = [
        preempt(1, 0, 1, granted(7)),
        local_check(2, 2, 3, owner(1, 7)),
        release(1, 4, 5, RELEASED),
        preempt(3, 6, 7, granted(9)),
        check(2, 8, 9, owner(3, 9)),
        local_check(2, 10, 11, owner(1, 7)), // c2 already saw token 9: time went backwards
    ];
    let report = check_history(&history);
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    let violation = &report.violations[0];
    assert_eq!(violation.invariant(), MONOTONIC_READS);
    assert_eq!(
        violation,
        &LinearizabilityViolation::NonMonotonicRead {
            client: 2,
            lock: "a".into(),
            earlier: history[4].clone(),
            later: history[5].clone(),
        }
    );
    let shown = violation.to_string();
    assert!(shown.contains("c2 saw lock `a` go backwards"), "{shown}");
    assert!(shown.contains("token 9"), "{shown}");
}

/// `op` as answered at log index `index`.
fn at(index: u64, op: HistoryOp) -> HistoryOp {
    HistoryOp {
        index: Some(index),
        ..op
    }
}

#[test]
fn a_stale_free_after_the_clients_own_grant_breaks_read_your_writes() {
    // c1 takes the lock at index 7, then asks a lagging replica, which answers from index 5:
    // `free` has no token to compare, so only the index shows the read went backwards.
    let history = [
        at(7, preempt(1, 0, 1, granted(7))),
        at(5, local_check(1, 2, 3, FREE)),
    ];
    let report = check_history(&history);
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    let violation = &report.violations[0];
    assert_eq!(violation.invariant(), MONOTONIC_READS);
    assert_eq!(
        violation,
        &LinearizabilityViolation::StaleRead {
            client: 1,
            earlier: history[0].clone(),
            later: history[1].clone(),
        }
    );
    let shown = violation.to_string();
    assert!(shown.contains("c1 read a state older"), "{shown}");
    assert!(
        shown.contains("log index 7") && shown.contains("index 5"),
        "{shown}"
    );
}

#[test]
fn without_indexes_the_same_stale_free_goes_unseen() {
    // What the checker could see before histories carried `index`: nothing.
    let history = [preempt(1, 0, 1, granted(7)), local_check(1, 2, 3, FREE)];
    assert!(check_history(&history).passed());
}

#[test]
fn a_local_check_older_than_what_its_client_saw_on_another_lock_is_stale() {
    // c2 saw index 9 on lock `b`; a later local check of `a` answered at index 4 is older.
    let mut seen = at(9, preempt(2, 0, 1, granted(9)));
    seen.lock = "b".into();
    let history = [seen, at(4, local_check(2, 2, 3, owner(1, 3)))];
    let report = check_history(&history);
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    assert!(matches!(
        report.violations[0],
        LinearizabilityViolation::StaleRead { client: 2, .. }
    ));
}

#[test]
fn reads_that_keep_up_with_what_their_client_saw_pass() {
    let history = [
        at(7, preempt(1, 0, 1, granted(7))),
        at(7, local_check(1, 2, 3, owner(1, 7))),
        at(8, release(1, 4, 5, RELEASED)),
        at(8, local_check(1, 6, 7, FREE)),
        // Another client's older view is its own business.
        at(6, local_check(2, 6, 7, FREE)),
        // A read overlapping the release is not held to the release's index.
        at(7, local_check(1, 4, 9, owner(1, 7))),
    ];
    let report = check_history(&history);
    assert!(report.passed(), "{:#?}", report.violations);
}

#[test]
fn a_read_stale_by_both_token_and_index_is_reported_once() {
    let history = [
        at(7, preempt(1, 0, 1, granted(7))),
        at(8, release(1, 2, 3, RELEASED)),
        at(9, preempt(3, 4, 5, granted(9))),
        at(9, check(2, 6, 7, owner(3, 9))),
        at(7, local_check(2, 8, 9, owner(1, 7))),
    ];
    let report = check_history(&history);
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    assert!(matches!(
        report.violations[0],
        LinearizabilityViolation::NonMonotonicRead { .. }
    ));
}

#[test]
fn two_overlapping_grants_to_different_clients_are_not_linearizable() {
    let history = [preempt(1, 0, 5, granted(1)), preempt(2, 1, 4, granted(2))];
    let report = check_history(&history);
    assert_eq!(only_window(&report), &history);
}

#[test]
fn a_grant_after_another_clients_grant_returned_needs_a_release_in_between() {
    let without_release = [preempt(1, 0, 1, granted(1)), preempt(2, 2, 3, granted(2))];
    assert_eq!(
        only_window(&check_history(&without_release)),
        &without_release
    );

    let with_release = [
        preempt(1, 0, 1, granted(1)),
        release(1, 2, 3, RELEASED),
        preempt(2, 4, 5, granted(2)),
    ];
    assert_linearizable(&with_release);
}

#[test]
fn an_unknown_preempt_is_assumed_to_have_happened_when_a_later_answer_needs_it() {
    let history = [
        unknown(1, HistoryOpKind::Preempt, 0),
        preempt(2, 5, 6, held_by(1)),
    ];
    assert_linearizable(&history);
}

#[test]
fn an_unknown_release_may_also_not_have_happened() {
    let history = [
        preempt(1, 0, 1, granted(1)),
        unknown(1, HistoryOpKind::Release, 2),
        check(2, 5, 6, owner(1, 1)),
    ];
    assert_linearizable(&history);
}

#[test]
fn a_free_lock_needs_a_release_that_could_have_happened() {
    let never_released = [preempt(1, 0, 1, granted(1)), check(2, 5, 6, FREE)];
    assert_eq!(
        only_window(&check_history(&never_released)),
        &never_released
    );

    let maybe_released = [
        preempt(1, 0, 1, granted(1)),
        unknown(1, HistoryOpKind::Release, 2),
        check(2, 5, 6, FREE),
    ];
    assert_linearizable(&maybe_released);
}

#[test]
fn a_repeated_preempt_by_the_owner_keeps_its_token() {
    let same_token = [preempt(1, 0, 1, granted(4)), preempt(1, 2, 3, granted(4))];
    assert_linearizable(&same_token);

    let new_token = [preempt(1, 0, 1, granted(4)), preempt(1, 2, 3, granted(5))];
    assert_eq!(only_window(&check_history(&new_token)), &new_token);
}

#[test]
fn fencing_tokens_never_go_down_across_owners() {
    let history = [
        preempt(1, 0, 1, granted(5)),
        release(1, 2, 3, RELEASED),
        preempt(2, 4, 5, granted(3)),
    ];
    let window = only_window(&check_history(&history)).to_vec();
    assert!(
        window.contains(&history[2]),
        "the lower grant is the answer that cannot be placed"
    );
}

#[test]
fn an_unknown_grant_still_uses_up_a_token() {
    // Nobody learned c3's token, but c4 saw c3 holding the lock: c3's grant happened, with a
    // token above 5. c2's later grant must exceed that, so 6 cannot be right; 7 can.
    let history = [
        preempt(1, 0, 1, granted(5)),
        release(1, 2, 3, RELEASED),
        unknown(3, HistoryOpKind::Preempt, 4),
        check(
            4,
            6,
            7,
            HistoryResult::Owner {
                owner: 3,
                token: None,
            },
        ),
        release(3, 8, 9, RELEASED),
        preempt(2, 10, 11, granted(6)),
    ];
    let report = check_history(&history);
    let window = only_window(&report);
    assert!(window.contains(&history[5]), "{}", report.violations[0]);

    let mut fixed = history.clone();
    fixed[5].result = granted(7);
    assert_linearizable(&fixed);
}

#[test]
fn concurrent_operations_may_take_effect_in_another_order_than_they_were_called() {
    // c2 asks first, but c1's preempt (called later, overlapping) took effect first.
    let history = [
        preempt(2, 0, 10, held_by(1)),
        check(3, 1, 9, owner(1, 1)),
        preempt(1, 2, 4, granted(1)),
        check(4, 3, 8, FREE), // and this check took effect before c1's preempt
    ];
    assert_linearizable(&history);
}

#[test]
fn a_hundred_valid_operations_before_a_stale_read_stay_out_of_its_window() {
    let mut history = Vec::new();
    for round in 0..50u64 {
        let (client, start, token) = (round as u32 % 3 + 1, round * 10, round + 1);
        history.push(preempt(client, start, start + 2, granted(token)));
        history.push(release(client, start + 4, start + 6, RELEASED));
    }
    history.push(check(3, 600, 601, owner(2, 50))); // c2 released token 50 at 496
    let report = check_history(&history);
    let window = only_window(&report);
    assert_eq!(window, &[history[99].clone(), history[100].clone()]);
}

const EXAMPLE: &str = r#"{"client":"c1","op":"preempt","lock":"a","call":1000000,"return":4200000,"result":"granted","token":12}
{"client":"c2","op":"preempt","lock":"a","call":1500000,"return":5000000,"result":"held_by","owner":"c1"}
{"client":"c2","op":"check","lock":"a","consistency":"linearizable","call":6000000,"return":7100000,"result":"owner","owner":"c1","token":12}
{"client":"c3","op":"check","lock":"a","consistency":"local","call":6100000,"return":6300000,"result":"free"}
{"client":"c1","op":"release","lock":"a","call":8000000,"return":null,"result":"unknown"}
"#;

#[test]
fn the_example_history_round_trips_and_is_linearizable() {
    let ops = read_jsonl(EXAMPLE).expect("the example reads");
    assert_eq!(ops.len(), 5);
    let mut written = Vec::new();
    write_jsonl(&ops, &mut written).expect("writes");
    assert_eq!(String::from_utf8(written).expect("utf-8"), EXAMPLE);
    assert_linearizable(&ops);
}

#[test]
fn bad_history_lines_are_errors_with_their_line_numbers() {
    let cases = [
        ("not json", 1),
        (
            r#"{"client":"c1","op":"unlock","lock":"a","call":1,"return":2,"result":"released"}"#,
            1,
        ),
        (
            "\n\n{\"client\":\"c1\",\"op\":\"release\",\"lock\":\"a\",\"call\":1,\"return\":2,\"result\":\"free\"}",
            3,
        ),
    ];
    for (text, line) in cases {
        let error = read_jsonl(text).expect_err(text);
        assert_eq!(error.line, line, "{error}");
        assert!(
            error.to_string().starts_with(&format!("line {line}: ")),
            "{error}"
        );
    }
    let late = format!(
        "{EXAMPLE}{}",
        r#"{"client":"c1","op":"preempt","lock":"a","call":9,"return":8,"result":"granted","token":1}"#
    );
    let error = read_jsonl(&late).expect_err("returns before its call");
    assert_eq!(error.line, 6);
    assert_eq!(
        error.problem,
        HistoryProblem::ReturnBeforeCall {
            call_ns: 9,
            return_ns: 8
        }
    );
}

#[test]
fn the_optional_index_round_trips_and_is_refused_where_it_cannot_be() {
    let line = r#"{"client":"c1","op":"check","lock":"a","consistency":"local","call":1,"return":2,"result":"free","index":41}"#;
    let ops = read_jsonl(line).expect("an index reads");
    assert_eq!(ops[0].index, Some(41));
    let mut written = Vec::new();
    write_jsonl(&ops, &mut written).expect("writes");
    assert_eq!(
        String::from_utf8(written).expect("utf-8"),
        format!("{line}\n")
    );

    let unanswered = r#"{"client":"c1","op":"release","lock":"a","call":1,"return":null,"result":"unknown","index":3}"#;
    let error = read_jsonl(unanswered).expect_err("an unknown result reflects no index");
    assert_eq!(error.problem, HistoryProblem::IndexWithoutAnswer(3));
    assert!(error.to_string().contains("field `index`"), "{error}");

    let negative = r#"{"client":"c1","op":"release","lock":"a","call":1,"return":2,"result":"released","index":-1}"#;
    let error = read_jsonl(negative).expect_err("a negative index");
    assert!(error.to_string().contains("field `index`"), "{error}");
}

#[test]
fn synthetic_histories_are_always_judged_linearizable() {
    for seed in 0..8 {
        for (ops, locks, clients) in [(3_000, 5, 8), (800, 1, 12)] {
            let history = synthetic_history(ops, locks, clients, seed);
            let report = check_history(&history);
            assert!(
                report.passed(),
                "seed {seed}, {locks} locks: {:#?}",
                report.violations
            );
            assert_eq!(report.locks_checked, locks);
        }
    }
}

/// The first operation at or after the middle of `history` that `pick` accepts.
fn middle_position(history: &[HistoryOp], pick: impl Fn(&HistoryOp) -> bool) -> usize {
    (history.len() / 2..history.len())
        .find(|&i| pick(&history[i]))
        .expect("such an operation")
}

#[test]
fn a_flipped_held_by_owner_in_a_synthetic_history_is_caught() {
    for seed in 0..8 {
        let mut history = synthetic_history(600, 1, 3, seed);
        let position = middle_position(&history, |op| {
            matches!(op.result, HistoryResult::HeldBy { .. })
        });
        let HistoryResult::HeldBy { owner } = history[position].result else {
            unreachable!()
        };
        // The one client that is neither the caller nor the holder.
        let other = 6 - owner - history[position].client;
        history[position].result = held_by(other);
        let report = check_history(&history);
        let window = only_window(&report);
        assert!(
            window.contains(&history[position]),
            "seed {seed}: {}",
            report.violations[0]
        );
    }
}

#[test]
fn a_reused_token_in_a_synthetic_history_is_caught() {
    for seed in 0..8 {
        let mut history = synthetic_history(600, 1, 3, seed);
        let position = middle_position(&history, |op| {
            matches!(op.result, HistoryResult::Granted { .. })
        });
        let HistoryResult::Granted { token } = history[position].result else {
            unreachable!()
        };
        // The token of the latest grant of another hold before it.
        let earlier = history[..position]
            .iter()
            .rev()
            .find_map(|op| match op.result {
                HistoryResult::Granted { token: earlier } if earlier < token => Some(earlier),
                _ => None,
            })
            .expect("an earlier grant");
        history[position].result = granted(earlier);
        let report = check_history(&history);
        let window = only_window(&report);
        assert!(
            window.contains(&history[position]),
            "seed {seed}: {}",
            report.violations[0]
        );
    }
}

/// The history the explorer wrote for seed 296481 (main 542cdb9, `explore --seeds 100000 --from
/// 200000`), flagged on lock `w3` by a search cut that never tried c3's unanswered claim of 4
/// permits: only that claim's declaration, kept by c1001's wait through c3's expiry, explains
/// later claims of 4 permits hearing `held_by c1001`. The history is legal.
#[test]
fn seed_296481s_hand_over_after_an_expiry_is_linearizable() {
    let text = include_str!("explorer-finds/296481.history.jsonl");
    let ops = read_jsonl(text).expect("the explorer's history reads");
    let report = check_history(&ops);
    // Passed: no violation, and no lock left without a verdict.
    assert!(
        report.passed(),
        "{:?} {:?}",
        report.violations.first().map(|v| v.to_string()),
        report.inconclusive_locks
    );
}
