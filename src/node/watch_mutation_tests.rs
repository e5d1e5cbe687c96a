//! Stories that kill mutants of `src/node/watch.rs` which survived every other test
//! (docs/mutation-testing.md). Like the first stories of `watch_tests`, they drive a bare
//! `LockTable` and `WatchState` entry by entry through that module's `Replica`. Each cites the
//! mutant it was written for.

use super::*;

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
