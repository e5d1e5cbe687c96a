//! Properties over random whole scenarios: whatever the cluster, network, faults and workload,
//! every safety invariant holds, the healed cluster answers every client, and replicas converge.
//!
//! proptest shrinks a failing case to fewer servers, clients, faults and operations, and the
//! failure message carries the case as a ready-to-run scenario file (seed included):
//! save it and `lockstep run` replays it exactly.
//!
//! CI runs the same 64 cases every time. Set `LOCKSTEP_PROPTEST_CASES` (or proptest's own
//! `PROPTEST_CASES`) for longer runs and `LOCKSTEP_PROPTEST_SEED` for other cases, e.g.
//! `LOCKSTEP_PROPTEST_CASES=5000 LOCKSTEP_PROPTEST_SEED=7 cargo test --release --test properties`.

mod common;

use lockstep::sim::explore;
use lockstep::sim::swarm::{
    Fault, FaultKind, RogueShape, Shape, TimeShape, WatchShape, election_spread_floor_ms,
};
use proptest::prelude::*;

fn fault_kind() -> impl Strategy<Value = FaultKind> {
    prop_oneof![
        (0..7u32).prop_map(|server| FaultKind::Crash { server }),
        Just(FaultKind::CrashLeader),
        (0..7u32).prop_map(|server| FaultKind::Restart { server }),
        Just(FaultKind::RestartAll),
        any::<u64>().prop_map(|mask| FaultKind::Partition { mask }),
        (0..27u32).prop_map(|node| FaultKind::Isolate { node }),
        Just(FaultKind::IsolateLeader),
        (0..27u32, any::<u64>()).prop_map(|(from, to_mask)| FaultKind::Cut { from, to_mask }),
        Just(FaultKind::Heal),
        (0..7u32, 1..50u32).prop_map(|(server, gap_ms)| FaultKind::Bounce { server, gap_ms }),
        (0..7u32, 0..100u32, 1..5u32).prop_map(|(server, delay_ms, gap_ms)| {
            FaultKind::ElectionBounce {
                server,
                delay_ms,
                gap_ms,
            }
        }),
        (0..150u32, 1..100u32).prop_map(|(drop_permille, latency_max_ms)| FaultKind::Network {
            drop_permille,
            latency_max_ms
        }),
        (0..7u32, 0..6u32, 1..300u32).prop_map(|(server, after_effects, restart_ms)| {
            FaultKind::StepCrash {
                server,
                after_effects,
                restart_ms,
            }
        }),
        (0..7u32, 1..30u32, 0..100u32, 0..6u32, 1..15u32).prop_map(
            |(server, leader_down_ms, delay_ms, after_effects, restart_ms)| {
                FaultKind::ElectionStepCrash {
                    server,
                    leader_down_ms,
                    delay_ms,
                    after_effects,
                    restart_ms,
                }
            }
        ),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    (0..1000u32, fault_kind()).prop_map(|(at_permille, kind)| Fault { at_permille, kind })
}

/// `Shape`'s `acquire`, `shared` and `watches`, drawn together.
type WaitingAndSharing = (Option<(u32, u32)>, Option<(u32, u32)>, Vec<WatchShape>);

/// A watcher: when it starts (thousandths of the safety phase), its client, the lock `w<N>` it
/// watches or every workload lock, and whether it starts from index 1 or from now.
fn watch() -> impl Strategy<Value = WatchShape> {
    (
        0..500u32,
        0..20u32,
        proptest::option::of(0..6u32),
        any::<bool>(),
    )
        .prop_map(|(at_permille, client, lock, from_start)| WatchShape {
            at_permille,
            client,
            lock,
            from_start,
        })
}

/// The waiting and sharing half of a workload (issue 12): perhaps blocking acquires (their
/// weight against the mix and their longest wait in ms), perhaps shared claims (the percent of
/// claims that are shared, and the permits they name, 0 for a readers-writer lock), and up to
/// three watchers. Each is absent in some cases, so that shrinking can drop it.
fn waiting_and_sharing() -> impl Strategy<Value = WaitingAndSharing> {
    (
        proptest::option::of((1..=10u32, 0..=3_000u32)),
        proptest::option::of((20..=80u32, prop_oneof![Just(0u32), 1..=4u32])),
        proptest::collection::vec(watch(), 0..=3),
    )
}

prop_compose! {
    /// 1 to 7 servers, 1 to 20 clients, a random network, up to 12 faults of every kind
    /// (symmetric and one-way partitions, isolating the leader, crashes and restarts, crashes
    /// inside a step, network changes), perhaps faulty disks, perhaps BUGGIFY, and a random
    /// workload, with blocking acquires, shared claims and watchers in some cases.
    fn shape()(
        seed in any::<u64>(),
        servers in 1..=7u32,
        clients in 1..=20u32,
        latency_min_ms in 0..5u32,
        latency_spread_ms in 1..30u32,
        tail in proptest::option::of((1..50u32, 50..400u32)),
        drop_permille in 0..100u32,
        duplicate_permille in 0..100u32,
        faults in proptest::collection::vec(fault(), 0..12),
        workload_ops in 0..600u32,
        locks in 1..6u32,
        mix in (1..10u32, 1..10u32, 0..10u32),
        linearizable_percent in 0..=100u32,
        think_max_ms in 1..60u32,
        election_timeout_ms in prop_oneof![Just((150u32, 150u32)), (100..200u32, 1..20u32)],
        append_batch in prop_oneof![Just(64u32), 1..4u32],
        snapshot_entries in proptest::option::of(2..40u32),
        rogues in proptest::option::of((1..3u32, 1..40u32)),
        disk in proptest::option::of((0..=1000u32, 0..500u32)),
        buggify_permille in proptest::option::of(1..=100u32),
        time in proptest::option::of((
            0..=200u32,
            proptest::option::of((1_000..=4_000u32, 0..=1_000u32)),
            proptest::collection::vec((0..1000u32, 0..64u32, 100..=4_000u32), 0..3),
        )),
        waiting_and_sharing in waiting_and_sharing(),
    ) -> Shape {
        // As in the explorer: a spread below a round trip can split the vote for good, and
        // then the liveness phase would fail a protocol Raft promises nothing for.
        let (election_min_ms, election_spread_ms) = election_timeout_ms;
        let spread_floor_ms =
            election_spread_floor_ms(latency_min_ms + latency_spread_ms);
        let (acquire, shared, watches) = waiting_and_sharing;
        Shape {
            seed,
            servers,
            clients,
            safety_seconds: 6,
            latency_min_ms,
            latency_spread_ms,
            tail,
            drop_permille,
            duplicate_permille,
            faults,
            workload_ops,
            locks,
            mix,
            linearizable_percent,
            think_max_ms,
            election_timeout_ms: (
                election_min_ms,
                election_spread_ms.max(spread_floor_ms),
            ),
            append_batch,
            snapshot_entries,
            // Rogues with every attack kind on; shrinking tries first without them.
            rogues: rogues.map(|(count, rate_per_second)| RogueShape {
                count,
                rate_per_second,
                mix: [1; lockstep::sim::rogue::AttackKind::ALL.len()],
            }),
            disk,
            buggify_permille,
            // Drifting clocks, sessions and pauses, as in the explorer's swarm.
            time: time.map(|(drift_per_10k, sessions_ms, pauses)| TimeShape {
                drift_per_10k,
                sessions_ms,
                pauses,
            }),
            acquire,
            shared,
            watches,
        }
    }
}

/// Writes a failing case's client history (the `--history` format) beside the build, and says
/// where.
fn write_history(report: &lockstep::sim::report::RunReport) -> String {
    let directory = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("properties");
    let path = directory.join(format!("{}.history.jsonl", report.seed));
    let written = std::fs::create_dir_all(&directory).and_then(|()| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        lockstep::sim::history::write_jsonl(&report.history, &mut out)?;
        std::io::Write::flush(&mut out)
    });
    match written {
        Ok(()) => format!("\nits client history: {}", path.display()),
        Err(error) => format!(
            "\n(could not write its history to {}: {error})",
            path.display()
        ),
    }
}

proptest! {
    // Deterministic: the same 64 cases on every run and machine, unless asked otherwise.
    #![proptest_config(common::proptest_config(64, 0x10c5))]

    #[test]
    fn every_invariant_holds_and_the_healed_cluster_serves_every_client(shape in shape()) {
        let scenario = shape.build();
        let (report, failure) = explore::judge(&scenario);
        let history = match &failure {
            Some(_) => write_history(&report),
            None => String::new(),
        };
        prop_assert!(
            failure.is_none(),
            "{}\n\nreplay it: save the scenario below as case.yaml and run \
             `lockstep run case.yaml`{history}\n\n{}\n{}",
            failure.as_ref().map_or(String::new(), |f| format!("{}: {}", f.kind, f.message)),
            scenario.to_yaml(),
            report.render()
        );
        prop_assert!(report.invariants.iter().all(|invariant| invariant.held));
    }
}
