//! Stories that plant a broken watch state by hand, which no sequence of inputs can make, and
//! show that the server's check after every step finds it (docs/mutation-testing.md).

use super::*;

/// A watch with a cursor past `applied` and `unacknowledged` events out, planted on the
/// connection at address 7 as watch 1.
fn state_with_watch(applied: LogIndex, unacknowledged: &[LogIndex]) -> WatchState {
    let mut state = WatchState::new(applied);
    let watch = Watch {
        target: WatchTarget::Lock(LockName::from("a")),
        next_index: applied + 1,
        unacknowledged: unacknowledged.iter().copied().collect(),
        last_sent: unacknowledged.last().copied().unwrap_or(0),
    };
    state.watches.insert((ClientAddr(7), 1), watch);
    state
}

/// Events go out one per index, in index order, so a watch's unacknowledged events are
/// strictly increasing: an index twice means one change was sent twice. The check takes
/// events at 8 and 10 and refuses 10 twice. (Mutant: `a < b` in that check made `<=`.)
#[test]
#[should_panic(expected = "watch 1: unacknowledged out of order")]
fn the_watch_check_refuses_an_event_index_unacknowledged_twice() {
    state_with_watch(10, &[8, 10]).check_invariants(10);
    state_with_watch(10, &[10, 10]).check_invariants(10);
}
