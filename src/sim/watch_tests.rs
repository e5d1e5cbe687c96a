//! `watch_streams` catches what a watch must never do: skip a committed change (a gap), tell
//! one twice, tell them out of order, or start from a state the log never had. Each story
//! hands the checker a committed log and a fabricated stream; the last ones run the shipped
//! failover scenario.

use super::*;
use crate::node::watch::WatchEvent;
use crate::node::{Claim, Holder, LogIndex};

fn lock(name: &str) -> LockName {
    LockName::from(name)
}

const C1: ClientId = ClientId(1);
const C2: ClientId = ClientId(2);

/// Two clients; c1 takes a (3); c2 queues for it (4); c1's release hands it to c2 (5); c1
/// takes b (6).
fn committed_log() -> Vec<Command> {
    let register = Command::Register {
        nonce: 1,
        secret: None,
        ttl_ms: None,
    };
    vec![
        register.clone(),
        register,
        Command::Preempt {
            client: C1,
            seq: 1,
            lock: lock("a"),
            claim: Claim::EXCLUSIVE,
        },
        Command::Acquire {
            client: C2,
            seq: 1,
            lock: lock("a"),
            wait_ms: 10_000,
            claim: Claim::EXCLUSIVE,
        },
        Command::Release {
            client: C1,
            seq: 2,
            lock: lock("a"),
        },
        Command::Preempt {
            client: C1,
            seq: 3,
            lock: lock("b"),
            claim: Claim::EXCLUSIVE,
        },
    ]
}

fn check(replies: Vec<WatchReply>, target: WatchTarget) -> Result<u64, String> {
    let log = committed_log();
    let stream = Stream {
        name: "watch 1 of c3".into(),
        target,
        first_from: None,
        replies: replies.into_iter().map(|reply| (1, reply)).collect(),
    };
    let committed = |index: LogIndex| log.get(usize::try_from(index).ok()? - 1);
    check_streams(committed, &[stream])
}

fn on_a() -> WatchTarget {
    WatchTarget::Lock(lock("a"))
}

fn start_at_two() -> WatchReply {
    WatchReply::Current {
        id: 1,
        index: 2,
        state: vec![LockState {
            lock: lock("a"),
            view: LockView::default(),
        }],
        compacted: None,
    }
}

fn event(index: LogIndex, changes: Vec<(&str, Change)>) -> WatchReply {
    let changes = changes
        .into_iter()
        .map(|(name, change)| LockChange {
            lock: lock(name),
            change,
        })
        .collect();
    WatchReply::Event {
        id: 1,
        event: WatchEvent { index, changes },
    }
}

/// The three events the log makes for lock a, as a correct server tells them.
fn true_events() -> [WatchReply; 3] {
    [
        event(
            3,
            vec![(
                "a",
                Change::Granted {
                    owner: C1,
                    token: 3,
                },
            )],
        ),
        event(4, vec![("a", Change::Queue { waiters: 1 })]),
        event(
            5,
            vec![
                ("a", Change::Released { owner: C1 }),
                (
                    "a",
                    Change::Granted {
                        owner: C2,
                        token: 5,
                    },
                ),
                ("a", Change::Queue { waiters: 0 }),
            ],
        ),
    ]
}

#[test]
fn the_true_stream_of_a_lock_passes_and_every_event_is_counted() {
    let [granted, queued, handed] = true_events();
    let replies = vec![start_at_two(), granted, queued, handed];
    assert_eq!(check(replies, on_a()), Ok(3));
}

#[test]
fn a_fabricated_gap_is_caught_and_named() {
    let [granted, _, handed] = true_events();
    let replies = vec![start_at_two(), granted, handed];
    let message = check(replies, on_a()).expect_err("index 4 was skipped");
    assert!(message.contains("a gap"), "{message}");
    assert!(message.contains("at 4"), "{message}");
}

#[test]
fn a_fabricated_duplicate_is_caught() {
    let [granted, queued, handed] = true_events();
    let replies = vec![start_at_two(), granted, queued.clone(), queued, handed];
    let message = check(replies, on_a()).expect_err("index 4 twice");
    assert!(message.contains("event 4 again"), "{message}");
}

#[test]
fn a_fabricated_reorder_is_caught() {
    let [granted, queued, handed] = true_events();
    let replies = vec![start_at_two(), granted, handed, queued];
    let message = check(replies, on_a()).expect_err("5 before 4");
    // 5 arriving before 4 is a gap at 5 already: any reorder is caught at its first event
    // out of place.
    assert!(message.contains("sent event 5 after 3"), "{message}");
    let [granted, queued, handed] = true_events();
    let replies = vec![start_at_two(), granted.clone(), queued, handed, granted];
    let message = check(replies, on_a()).expect_err("3 after 5");
    assert!(
        message.contains("event 3 out of order, after 5"),
        "{message}"
    );
}

/// A change dropped inside one index is a gap too: the hand-over without its grant.
#[test]
fn an_event_missing_one_of_its_changes_is_caught() {
    let [granted, queued, _] = true_events();
    let partial = event(
        5,
        vec![
            ("a", Change::Released { owner: C1 }),
            ("a", Change::Queue { waiters: 0 }),
        ],
    );
    let replies = vec![start_at_two(), granted, queued, partial];
    let message = check(replies, on_a()).expect_err("the grant is missing");
    assert!(message.contains("the committed log changed"), "{message}");
}

#[test]
fn a_start_from_a_state_the_log_never_had_is_caught() {
    let wrong = WatchReply::Current {
        id: 1,
        index: 3,
        state: vec![LockState {
            lock: lock("a"),
            view: LockView::default(),
        }],
        compacted: Some(1),
    };
    let message = check(vec![wrong], on_a()).expect_err("a was held at 3");
    assert!(message.contains("gave the state at 3"), "{message}");
}

#[test]
fn an_event_at_an_index_nobody_applied_is_caught() {
    let beyond = event(9, vec![("a", Change::Queue { waiters: 3 })]);
    let message = check(vec![start_at_two(), beyond], on_a()).expect_err("9 is not in the log");
    assert!(message.contains("no server applied"), "{message}");
}

/// A resume in the middle (`resumed`) does not move what the watcher knows: the stream must go
/// on from the last event it heard. A compacted `current` does, with the state it gives.
#[test]
fn a_resumed_stream_passes_and_a_compacted_restart_passes_with_the_true_state() {
    let [granted, queued, handed] = true_events();
    let resumed = WatchReply::Resumed { id: 1, index: 5 };
    let replies = vec![start_at_two(), granted, resumed, queued, handed];
    assert_eq!(check(replies, on_a()), Ok(3));

    let held_by_c2 = WatchReply::Current {
        id: 1,
        index: 5,
        state: vec![LockState {
            lock: lock("a"),
            view: LockView {
                holders: vec![Holder {
                    owner: C2,
                    token: 5,
                }],
                waiters: 0,
            },
        }],
        compacted: Some(4),
    };
    let [granted, ..] = true_events();
    let replies = vec![start_at_two(), granted, held_by_c2];
    assert_eq!(check(replies, on_a()), Ok(1));
}

/// A prefix watch hears every lock under it: b's grant at 6 belongs in a stream of all locks.
#[test]
fn a_prefix_stream_that_leaves_out_a_lock_under_it_has_a_gap() {
    let everything = WatchTarget::Prefix(String::new());
    let start = WatchReply::Current {
        id: 1,
        index: 4,
        state: vec![LockState {
            lock: lock("a"),
            view: LockView {
                holders: vec![Holder {
                    owner: C1,
                    token: 3,
                }],
                waiters: 1,
            },
        }],
        compacted: None,
    };
    let [_, _, handed] = true_events();
    let b = event(
        6,
        vec![(
            "b",
            Change::Granted {
                owner: C1,
                token: 6,
            },
        )],
    );
    let replies = vec![start.clone(), handed.clone(), b];
    assert_eq!(check(replies, everything.clone()), Ok(2));
    let b = event(
        6,
        vec![(
            "b",
            Change::Granted {
                owner: C1,
                token: 6,
            },
        )],
    );
    let message = check(vec![start, b], everything).expect_err("5 is missing");
    assert!(message.contains("a gap"), "{message}");
}

// ----- shared holders -----

/// Two readers share a (3, 4); c1 releases its hold (5); c2 keeps its own.
fn shared_log() -> Vec<Command> {
    let register = Command::Register {
        nonce: 1,
        secret: None,
        ttl_ms: None,
    };
    let shared = |client| Command::Preempt {
        client,
        seq: 1,
        lock: lock("a"),
        claim: Claim::SHARED,
    };
    let release = Command::Release {
        client: C1,
        seq: 2,
        lock: lock("a"),
    };
    vec![register.clone(), register, shared(C1), shared(C2), release]
}

fn check_shared(replies: Vec<WatchReply>) -> Result<u64, String> {
    let log = shared_log();
    let stream = Stream {
        name: "watch 1 of c3".into(),
        target: on_a(),
        first_from: None,
        replies: replies.into_iter().map(|reply| (1, reply)).collect(),
    };
    let committed = |index: LogIndex| log.get(usize::try_from(index).ok()? - 1);
    check_streams(committed, &[stream])
}

fn shared_grant(owner: ClientId, token: LogIndex) -> WatchReply {
    event(token, vec![("a", Change::Granted { owner, token })])
}

/// The replay sees shared holders: the true stream (one grant per reader, then one reader's
/// release) passes, and a stream that leaves out the second reader's grant has a gap.
#[test]
fn a_missing_shared_grant_is_caught() {
    let released = event(5, vec![("a", Change::Released { owner: C1 })]);
    let whole = vec![
        start_at_two(),
        shared_grant(C1, 3),
        shared_grant(C2, 4),
        released.clone(),
    ];
    assert_eq!(check_shared(whole), Ok(3));
    let missing = vec![start_at_two(), shared_grant(C1, 3), released];
    let message = check_shared(missing).expect_err("c2's grant at 4 is missing");
    assert!(message.contains("a gap"), "{message}");
    assert!(message.contains(r#""owner":2"#), "{message}");
}

/// A starting state that names one reader of a lock two hold is a state the log never had.
#[test]
fn a_start_that_hides_a_shared_holder_is_caught() {
    let holder = |owner, token| Holder { owner, token };
    let start = |holders| WatchReply::Current {
        id: 1,
        index: 4,
        state: vec![LockState {
            lock: lock("a"),
            view: LockView {
                holders,
                waiters: 0,
            },
        }],
        compacted: None,
    };
    let both = vec![holder(C1, 3), holder(C2, 4)];
    assert_eq!(check_shared(vec![start(both)]), Ok(0));
    let message = check_shared(vec![start(vec![holder(C1, 3)])]).expect_err("c2 hidden");
    assert!(message.contains("the committed log has"), "{message}");
}

// ----- the shipped scenario -----

fn shipped_failover() -> crate::sim::report::RunReport {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/20-watch-through-failover.yaml"
    );
    let scenario = crate::sim::scenario::load_file(std::path::Path::new(path)).expect("it loads");
    crate::sim::runner::run(&scenario, crate::sim::runner::RunOptions::default()).expect("runs")
}

fn lines_of(report: &crate::sim::report::RunReport, client: &str) -> Vec<Value> {
    let of_client = |line: &&Value| line["client"] == client;
    report
        .watch_history
        .iter()
        .filter(of_client)
        .cloned()
        .collect()
}

/// Scenario 20: c3's watch breaks with the leader's crash and resumes on s2 from the index
/// after the last event it heard; the hand-over reaches it there, once; every stream passes.
#[test]
fn a_watch_survives_failover_without_a_gap() {
    let report = shipped_failover();
    assert!(report.passed, "{}", report.render());
    let held = report.invariants.iter().find(|i| i.name == WATCH_STREAMS);
    assert!(
        held.is_some_and(|i| i.held && i.checks >= 5),
        "{:?}",
        report.invariants
    );
    let c3 = lines_of(&report, "c3");
    let broken = c3
        .iter()
        .position(|l| l["kind"] == "broken")
        .expect("the crash broke it");
    let before: Vec<u64> = (c3[..broken].iter())
        .filter(|l| l["kind"] == "event")
        .map(|l| l["index"].as_u64().expect("an index"))
        .collect();
    let last_heard = *before.last().expect("events before the crash");
    let resumed = (c3[broken..].iter())
        .find(|l| l["kind"] == "start" && l["server"] != "s1")
        .expect("a resume on another server");
    assert_eq!(resumed["from"], last_heard + 1, "{resumed}");
    let hand_over = (c3[broken..].iter())
        .filter(|l| l["kind"] == "event")
        .filter(|l| l["changes"].as_array().is_some_and(|c| c.len() == 3))
        .count();
    assert_eq!(hand_over, 1, "the hand-over, once: {c3:#?}");
}

/// The history's watch lines read back: `lockstep check` skips them, and the file written
/// with them is still a valid history.
#[test]
fn watch_lines_go_after_the_operations_and_lockstep_check_skips_them() {
    let report = shipped_failover();
    let mut out = Vec::new();
    crate::sim::history::write_jsonl(&report.history, &mut out).expect("writes");
    write_jsonl(&report.watch_history, &mut out).expect("writes");
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(text.contains(r#""op":"watch""#));
    let read = crate::sim::history::read_history(&text).expect("reads back");
    assert_eq!(read.ops, report.history);
    assert!(read.unknown_fields.is_empty(), "{:?}", read.unknown_fields);
}
