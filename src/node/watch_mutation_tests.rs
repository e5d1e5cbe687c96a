//! Stories that kill mutants of `src/node/watch.rs` (and of the server's watch plumbing)
//! which survived every other test (docs/mutation-testing.md). Like the stories of
//! `watch_tests`, most drive a bare `LockTable` and `WatchState` entry by entry through that
//! module's `Replica`; the last drives servers through the in-test `Network`. Each cites the
//! mutant it was written for.

use super::*;
use crate::node::coverage::Branch;

/// The watch history holds up to `WATCH_HISTORY_CHANGES_MAX` changes: at exactly the bound it
/// drops nothing, and a watch may still resume from the very first change; one change more
/// drops the oldest entry, and only it. (Mutant: `self.ring_changes > WATCH_HISTORY_CHANGES_MAX`
/// in `on_applied`'s trimming loop made `>=`, which dropped the oldest entry at the bound.)
#[test]
fn the_watch_history_holds_exactly_its_bound_of_changes() {
    let mut replica = Replica::new();
    let client = replica.register();
    let mut seq = 0;
    let mut one_change = |replica: &mut Replica| {
        seq += 1;
        let command = if seq % 2 == 1 {
            preempt_by(client, seq, "a")
        } else {
            release_by(client, seq, "a")
        };
        replica.apply(command)
    };
    let first = one_change(&mut replica);
    for _ in 1..WATCH_HISTORY_CHANGES_MAX {
        let _ = one_change(&mut replica);
    }
    assert_eq!(
        replica.watches.kept_after(),
        0,
        "at the bound nothing is dropped"
    );
    let _ = one_change(&mut replica);
    assert_eq!(
        replica.watches.kept_after(),
        first,
        "one past it, the oldest goes"
    );
}

/// Every reply names the watch it answers, whatever its kind: a connection multiplexes its
/// watches by that id, and the wire codec and the client library route each line by it.
/// (Mutant: `WatchReply::id` made `0`; the integration tests of the codec also catch it.)
#[test]
fn every_watch_reply_names_its_watch() {
    let id = 42;
    let replies = [
        WatchReply::Current {
            id,
            index: 3,
            state: Vec::new(),
            compacted: None,
        },
        WatchReply::Resumed { id, index: 3 },
        WatchReply::Event {
            id,
            event: WatchEvent {
                index: 4,
                changes: Vec::new(),
            },
        },
        WatchReply::Cancelled {
            id,
            reason: WatchCancel::Stopped,
        },
        WatchReply::Refused {
            id,
            refusal: WatchRefusal::IdInUse,
        },
    ];
    for reply in &replies {
        assert_eq!(reply.id(), id, "{reply:?}");
    }
}

/// The explorer's coverage names every watch refusal a server makes (README, "Protocol
/// coverage"), each by its reason: a reused id is `watch.refused_id_in_use` and an empty
/// lock name `watch.refused_bad_target`, and a watch that starts counts no refusal.
/// (Mutant: `Server::count_watch_refusals` made `()`.)
#[test]
fn a_server_counts_each_watch_refusal_by_its_reason() {
    let mut network = Network::new(3);
    network.elect(S1);
    let started = start_watch(&mut network, S1, None);
    assert!(matches!(started[..], [WatchReply::Current { .. }]));
    let again = start_watch(&mut network, S1, None);
    let in_use = WatchReply::Refused {
        id: 1,
        refusal: WatchRefusal::IdInUse,
    };
    assert_eq!(again, vec![in_use]);
    let empty_name = WatchInput::Start {
        from: WATCHER,
        id: 2,
        target: on(""),
        from_index: None,
        credential: None,
    };
    let _ = network.step(S1, ServerInput::Watch(empty_name));
    let told = watch_replies_of(&mut network, S1);
    assert!(
        matches!(
            told[..],
            [WatchReply::Refused {
                id: 2,
                refusal: WatchRefusal::BadTarget { .. }
            }]
        ),
        "{told:?}"
    );
    let coverage = network.server(S1).coverage();
    let counts = [
        Branch::WatchRefusedIdInUse,
        Branch::WatchRefusedBadTarget,
        Branch::WatchRefusedUnauthorized,
        Branch::WatchRefusedUnknownClient,
        Branch::WatchRefusedTooManyWatches,
    ]
    .map(|branch| coverage.count(branch));
    assert_eq!(counts, [1, 1, 0, 0, 0]);
}

/// One entry can carry more changes than the whole history's bound: the expiry of a client
/// holding 16,385 locks releases them all at once. The history then keeps that entry alone
/// (the newest always stays), dropping everything older, so a watch that has heard all the
/// older entries it covers goes on: a watch of one of the locks hears it expire, and a
/// watch of a lock nobody touched stays live and hears nothing. (Mutants: `ring.len() > 1`
/// in `on_applied`'s trimming loop made `>= 1`, which dropped the newest entry too; and a
/// caught-up watch's cursor `applied + 1` in `pump` made `applied * 1`, which left it on the
/// last entry it had seen, so that dropping that entry cancelled the watch as fallen behind.)
#[test]
fn an_entry_bigger_than_the_history_stays_and_caught_up_watches_go_on() {
    let mut replica = Replica::new();
    let client = replica.register();
    replica.watch(1, on("l1"), None);
    replica.watch(2, on("a"), None);
    let locks = WATCH_HISTORY_CHANGES_MAX as u64 + 1;
    let mut last = 0;
    for seq in 1..=locks {
        last = replica.apply(preempt_by(client, seq, &format!("l{seq}")));
    }
    let _ = replica.told();
    let expire = replica.apply(Command::Expire { client });
    assert_eq!(
        replica.watches.kept_after(),
        last,
        "everything before the expiry dropped, the expiry kept"
    );
    let expired = change("l1", Change::Expired { owner: client });
    assert_eq!(replica.told(), vec![event(1, expire, vec![expired])]);
    assert_eq!(replica.watches.watch_count(), 2, "both watches go on");
}
