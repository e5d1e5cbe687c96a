//! Stories that kill mutants of `src/node/lock_table.rs` which survived every other test
//! (docs/mutation-testing.md). Each cites the mutant it was written for.

use super::*;

/// c1 (client#1) registered at index 1 and c2 at 2; c1 holds `a` from index 3, token 3.
fn table_with_a_held_by_c1() -> LockTable {
    let mut table = LockTable::new();
    for (index, client) in [(1, 1u8), (2, 2)] {
        let register = Command::Register {
            nonce: 7,
            secret: Some(ClientSecret::from_bytes([client; 16])),
            ttl_ms: None,
        };
        let _ = table.apply(index, &register);
    }
    let preempt = Command::Preempt {
        client: ClientId(1),
        seq: 1,
        lock: LockName::from("a"),
        claim: Claim::EXCLUSIVE,
    };
    let granted = table.apply(3, &preempt);
    assert!(
        matches!(
            granted,
            ApplyResult::Outcome {
                outcome: Outcome::Granted { token: 3 },
                ..
            }
        ),
        "{granted:?}"
    );
    table
}

/// c2's first request: a preempt of `lock`.
fn c2_preempts(lock: &str) -> Command {
    Command::Preempt {
        client: ClientId(2),
        seq: 1,
        lock: LockName::from(lock),
        claim: Claim::EXCLUSIVE,
    }
}

/// A broken invariant is a bug, and the table finds it at the next apply that touches the
/// lock, whatever that apply is: here a holder whose token lies beyond the applied index (a
/// grant from the future), which no apply can make, so the story plants it by hand, then c2
/// asks for the lock. Without the check after every apply, the table would answer `held_by`
/// from a corrupt holder and carry on. (Mutant: `LockTable::check_invariants` made `()`.)
#[test]
#[should_panic(expected = "lock table: a has token 99 beyond applied index 4")]
fn the_table_checks_the_lock_an_apply_touched_and_panics_on_a_holder_from_the_future() {
    let mut table = table_with_a_held_by_c1();
    table.locks.get_mut("a").expect("c1 holds a").token = 99;
    let _ = table.apply(4, &c2_preempts("a"));
}

/// The same for a lock's line: after every apply that touches a lock with waiters, the table
/// checks the line against the holders and its index of who waits where. A holder that also
/// waits in its own lock's line cannot be made by any apply, so the story plants one (kept in
/// the index, so that only the line's own check can see it), then c2's retry touches the lock.
/// (Mutant: `LockTable::check_queue` made `()`.)
#[test]
#[should_panic(expected = "lock table: holder client#1 queued on a")]
fn the_table_checks_a_touched_locks_line_and_panics_on_a_holder_waiting_in_it() {
    let mut table = table_with_a_held_by_c1();
    let acquire = Command::Acquire {
        client: ClientId(2),
        seq: 1,
        lock: LockName::from("a"),
        wait_ms: 60_000,
        claim: Claim::EXCLUSIVE,
    };
    let queued = table.apply(4, &acquire);
    assert!(
        matches!(
            queued,
            ApplyResult::Outcome {
                outcome: Outcome::Queued,
                ..
            }
        ),
        "{queued:?}"
    );
    let holder_in_line = Waiter {
        client: ClientId(1),
        seq: 2,
        wait_ms: 60_000,
        enqueued_at: 4,
        mode: Mode::Exclusive,
    };
    let line = table.queues.get_mut("a").expect("c2 waits for a");
    line.push_back(holder_in_line);
    table.waiting.insert(ClientId(1), LockName::from("a"));
    let _ = table.apply(5, &acquire);
}

/// The same for what a lock declares: after every apply that touches a lock, the table checks
/// its shared holders and its declared permits against their bounds. A count of permits out
/// of range cannot be declared through any apply (the claim is refused before it reaches the
/// log), so the story plants one, 0 on c1's `a`, then c2's preempt of `a` touches it. (Mutant:
/// `LockTable::check_shared_invariants` made `()`.)
#[test]
#[should_panic(expected = "lock table: a declares permits 0, out of range")]
fn the_table_checks_a_touched_locks_declared_permits_and_panics_on_a_count_out_of_range() {
    let mut table = table_with_a_held_by_c1();
    table.permits.insert(LockName::from("a"), 0);
    let _ = table.apply(4, &c2_preempts("a"));
}

/// The table keeps a digest of every holding, updated by each grant and release (the
/// simulator compares replicas by it). In debug builds each apply also derives it afresh
/// from the maps, while the table is small enough for that to be cheap: a digest that drifted
/// (planted here, since no apply can make one) panics at the next apply, whatever lock it
/// touches. (Written with the bound on that re-check, against its `<=` made `>`.)
#[test]
#[should_panic(expected = "lock table: incremental digest drifted from the map")]
fn a_small_table_rechecks_its_digest_at_every_apply() {
    let mut table = table_with_a_held_by_c1();
    table.locks_digest ^= 1;
    let _ = table.apply(4, &c2_preempts("b"));
}
