//! Stories about watches (docs/design.md, "Watches"): what a grant, a release, an expiry and a
//! queue change tell a watcher; prefix watches; resuming from an index on another server with
//! no gap and no repeat; the `compacted` answer; the bound on a slow watcher; and a follower
//! serving a watch from its own applied state.
//!
//! The first stories drive a bare `LockTable` and `WatchState` entry by entry, as a server's
//! apply loop does; the last ones drive servers through the in-test `Network`.

use super::*;
use crate::node::watch::{
    Change, LockChange, LockState, LockView, WATCH_EVENTS_UNACKNOWLEDGED_MAX,
    WATCH_HISTORY_CHANGES_MAX, WATCH_PREFIX_BYTES_MAX, WATCHES_PER_CONNECTION_MAX, WatchCancel,
    WatchCredential, WatchEvent, WatchInput, WatchRefusal, WatchReply, WatchState, WatchTarget,
    lock_changes,
};
use crate::node::{Claim, ClientSecret, Holder, LockTable};

const WATCHER: ClientAddr = ClientAddr(201);

/// A lock table applied entry by entry, with the watches a server would keep beside it.
struct Replica {
    table: LockTable,
    watches: WatchState,
    out: Vec<ServerOutput>,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            table: LockTable::new(),
            watches: WatchState::new(0),
            out: Vec::new(),
        }
    }

    /// Applies `command` at the next index, as `Server::apply_committed` does; returns it.
    fn apply(&mut self, command: Command) -> LogIndex {
        let index = self.table.applied_index() + 1;
        let before = WatchState::touched_views(&self.table, &command);
        let _ = self.table.apply(index, &command);
        (self.watches).on_applied(index, &command, before, &self.table, &mut self.out);
        self.watches.check_invariants(index);
        index
    }

    /// Registers a client with a session of one second; returns its id.
    fn register(&mut self) -> ClientId {
        let _ = self.apply(Command::Register {
            nonce: 1,
            secret: None,
            ttl_ms: Some(1_000),
        });
        ClientId(self.table.client_count())
    }

    fn input(&mut self, input: WatchInput) {
        self.watches.on_input(input, &self.table, &mut self.out);
        self.watches.check_invariants(self.table.applied_index());
    }

    fn watch(&mut self, id: u64, target: WatchTarget, from_index: Option<LogIndex>) {
        self.input(WatchInput::Start {
            from: WATCHER,
            id,
            target,
            from_index,
            credential: None,
        });
    }

    /// What the watchers were told since the last call.
    fn told(&mut self) -> Vec<WatchReply> {
        std::mem::take(&mut self.out)
            .into_iter()
            .map(|output| match output {
                ServerOutput::Watch { to, reply } => {
                    assert_eq!(to, WATCHER, "only one watcher in these stories");
                    reply
                }
                other => panic!("only watch replies expected, got {other:?}"),
            })
            .collect()
    }
}

fn on(name: &str) -> WatchTarget {
    WatchTarget::Lock(lock(name))
}

fn preempt_by(client: ClientId, seq: u64, name: &str) -> Command {
    Command::Preempt {
        client,
        seq,
        lock: lock(name),
        claim: Claim::EXCLUSIVE,
    }
}

fn release_by(client: ClientId, seq: u64, name: &str) -> Command {
    Command::Release {
        client,
        seq,
        lock: lock(name),
    }
}

fn acquire_by(client: ClientId, seq: u64, name: &str) -> Command {
    Command::Acquire {
        client,
        seq,
        lock: lock(name),
        wait_ms: 60_000,
        claim: Claim::EXCLUSIVE,
    }
}

fn change(name: &str, change: Change) -> LockChange {
    LockChange {
        lock: lock(name),
        change,
    }
}

fn event(id: u64, index: LogIndex, changes: Vec<LockChange>) -> WatchReply {
    WatchReply::Event {
        id,
        event: WatchEvent { index, changes },
    }
}

fn free(name: &str) -> LockState {
    LockState {
        lock: lock(name),
        view: LockView::default(),
    }
}

// ----- what each change tells a watcher -----

/// A watch without `from` starts with the lock's state now; a grant, an enqueue, and a release
/// that hands the lock to the head of the queue follow, each with the index of its entry. The
/// hand-over is one event: released, granted to the head with the release's index as token,
/// and the queue one shorter.
#[test]
fn a_grant_a_queue_change_and_a_hand_over_reach_a_watch_of_the_lock_with_their_indexes() {
    let mut replica = Replica::new();
    let holder = replica.register();
    let waiter = replica.register();
    replica.watch(1, on("a"), None);
    let started = WatchReply::Current {
        id: 1,
        index: 2,
        state: vec![free("a")],
        compacted: None,
    };
    assert_eq!(replica.told(), vec![started]);

    let granted_at = replica.apply(preempt_by(holder, 1, "a"));
    let grant = Change::Granted {
        owner: holder,
        token: granted_at,
    };
    assert_eq!(
        replica.told(),
        vec![event(1, granted_at, vec![change("a", grant)])]
    );

    let queued_at = replica.apply(acquire_by(waiter, 1, "a"));
    let queue_of_one = change("a", Change::Queue { waiters: 1 });
    assert_eq!(
        replica.told(),
        vec![event(1, queued_at, vec![queue_of_one])]
    );

    let released_at = replica.apply(release_by(holder, 2, "a"));
    let hand_over = vec![
        change("a", Change::Released { owner: holder }),
        change(
            "a",
            Change::Granted {
                owner: waiter,
                token: released_at,
            },
        ),
        change("a", Change::Queue { waiters: 0 }),
    ];
    assert_eq!(replica.told(), vec![event(1, released_at, hand_over)]);
}

/// An expiry frees every lock of the session: a watcher hears `expired`, not `released`, for
/// each, at the expiry's index. A plain release with nobody waiting is `released` alone.
#[test]
fn an_expiry_tells_expired_for_every_lock_of_the_session_and_a_release_tells_released() {
    let mut replica = Replica::new();
    let doomed = replica.register();
    let other = replica.register();
    let _ = replica.apply(preempt_by(doomed, 1, "a"));
    let _ = replica.apply(preempt_by(other, 1, "b"));
    replica.watch(1, WatchTarget::Prefix(String::new()), None);
    let _ = replica.told();

    let expired_at = replica.apply(Command::Expire { client: doomed });
    let expired = change("a", Change::Expired { owner: doomed });
    assert_eq!(replica.told(), vec![event(1, expired_at, vec![expired])]);

    let released_at = replica.apply(release_by(other, 2, "b"));
    let released = change("b", Change::Released { owner: other });
    assert_eq!(replica.told(), vec![event(1, released_at, vec![released])]);
}

/// A client's newer write leaves the queue it waited in: a preempt of another lock is a queue
/// change of the lock it stopped waiting for, which a watcher of that lock hears.
#[test]
fn a_waiter_that_moves_on_shortens_the_queue_it_left() {
    let mut replica = Replica::new();
    let holder = replica.register();
    let waiter = replica.register();
    let _ = replica.apply(preempt_by(holder, 1, "a"));
    let _ = replica.apply(acquire_by(waiter, 1, "a"));
    replica.watch(1, on("a"), None);
    let _ = replica.told();
    let moved_at = replica.apply(preempt_by(waiter, 2, "elsewhere"));
    let shorter = change("a", Change::Queue { waiters: 0 });
    assert_eq!(replica.told(), vec![event(1, moved_at, vec![shorter])]);
}

/// The one function that names changes: nothing for an unchanged view, and a lost holder is
/// expired only under an expiry.
#[test]
fn lock_changes_names_nothing_for_an_unchanged_lock_and_expired_only_for_an_expiry() {
    let held = LockView {
        holders: vec![Holder {
            owner: ClientId(1),
            token: 3,
        }],
        waiters: 2,
    };
    let noop = Command::Noop;
    assert_eq!(lock_changes(&noop, &held, &held), vec![]);
    let expire = Command::Expire {
        client: ClientId(1),
    };
    let freed = LockView::default();
    assert_eq!(
        lock_changes(&expire, &held, &freed),
        vec![
            Change::Expired { owner: ClientId(1) },
            Change::Queue { waiters: 0 }
        ]
    );
    assert_eq!(
        lock_changes(&noop, &held, &freed)[0],
        Change::Released { owner: ClientId(1) }
    );
}

// ----- credentials -----

/// A watch from the wire names its client and secret: a wrong secret and a client id no
/// applied registration issued are refused, with nothing registered; the right secret starts
/// the watch. A stop is answered even for an id with no watch.
#[test]
fn a_watch_with_credentials_is_authenticated_like_a_check() {
    let mut replica = Replica::new();
    let secret = ClientSecret::from_bytes([7; 16]);
    let _ = replica.apply(Command::Register {
        nonce: 1,
        secret: Some(secret),
        ttl_ms: None,
    });
    let client = ClientId(replica.table.client_count());
    let mut start = |id, client, secret| {
        replica.input(WatchInput::Start {
            from: WATCHER,
            id,
            target: on("a"),
            from_index: None,
            credential: Some(WatchCredential { client, secret }),
        });
        replica.told()
    };
    let wrong = Some(ClientSecret::from_bytes([8; 16]));
    let refused = |id, refusal| vec![WatchReply::Refused { id, refusal }];
    assert_eq!(
        start(1, client, wrong),
        refused(1, WatchRefusal::Unauthorized)
    );
    assert_eq!(
        start(2, client, None),
        refused(2, WatchRefusal::Unauthorized)
    );
    let stranger = ClientId(9);
    let unknown = WatchRefusal::UnknownClient { client: stranger };
    assert_eq!(start(3, stranger, Some(secret)), refused(3, unknown));
    let started = start(4, client, Some(secret));
    assert!(
        matches!(started.as_slice(), [WatchReply::Current { id: 4, .. }]),
        "{started:?}"
    );
    assert_eq!(
        replica.watches.watch_count(),
        1,
        "only the authenticated one"
    );

    replica.input(WatchInput::Stop {
        from: WATCHER,
        id: 1,
    });
    let stopped = WatchReply::Cancelled {
        id: 1,
        reason: WatchCancel::Stopped,
    };
    assert_eq!(replica.told(), vec![stopped]);
    assert_eq!(replica.watches.watch_count(), 1, "watch 4 untouched");
}

// ----- shared holders -----

fn claim_by(client: ClientId, seq: u64, name: &str, claim: Claim, wait_ms: u64) -> Command {
    Command::Acquire {
        client,
        seq,
        lock: lock(name),
        wait_ms,
        claim,
    }
}

fn granted(owner: ClientId, token: LogIndex) -> LockChange {
    change("a", Change::Granted { owner, token })
}

/// Readers share a lock: each grant, release and expiry of one of them is its own change, the
/// others untouched; the writer queued behind them is granted when the last leaves; its release
/// hands the lock to the two readers queued behind it in one entry: one `granted` each, with
/// the same token, in client order, then the queue.
#[test]
fn every_shared_holder_that_comes_or_goes_is_its_own_change() {
    let mut replica = Replica::new();
    let [r1, r2, writer, r3, r4] = [(); 5].map(|()| replica.register());
    replica.watch(1, on("a"), None);
    let _ = replica.told();

    let first_at = replica.apply(claim_by(r1, 1, "a", Claim::SHARED, 0));
    let second_at = replica.apply(claim_by(r2, 1, "a", Claim::SHARED, 0));
    assert_eq!(
        replica.told(),
        vec![
            event(1, first_at, vec![granted(r1, first_at)]),
            event(1, second_at, vec![granted(r2, second_at)]),
        ]
    );
    let _ = replica.apply(claim_by(writer, 1, "a", Claim::EXCLUSIVE, 60_000));
    let _ = replica.apply(claim_by(r3, 1, "a", Claim::SHARED, 60_000));
    let _ = replica.apply(claim_by(r4, 1, "a", Claim::SHARED, 60_000));
    let _ = replica.told();

    let released_at = replica.apply(release_by(r1, 2, "a"));
    let released = change("a", Change::Released { owner: r1 });
    assert_eq!(replica.told(), vec![event(1, released_at, vec![released])]);
    let expired_at = replica.apply(Command::Expire { client: r2 });
    let expired = change("a", Change::Expired { owner: r2 });
    assert_eq!(replica.told(), vec![event(1, expired_at, vec![expired])]);
    let handed_at = replica.apply(Command::HandOver { lock: lock("a") });
    let two_left = change("a", Change::Queue { waiters: 2 });
    assert_eq!(
        replica.told(),
        vec![event(
            1,
            handed_at,
            vec![granted(writer, handed_at), two_left]
        )]
    );

    let run_at = replica.apply(release_by(writer, 2, "a"));
    let run = vec![
        change("a", Change::Released { owner: writer }),
        granted(r3, run_at),
        granted(r4, run_at),
        change("a", Change::Queue { waiters: 0 }),
    ];
    assert_eq!(replica.told(), vec![event(1, run_at, run)]);
}

/// A watch started on a lock held shared gets every holder in its starting state, in token
/// order, by name and under a prefix.
#[test]
fn the_starting_state_of_a_shared_lock_lists_every_holder() {
    let mut replica = Replica::new();
    let [r1, r2] = [(); 2].map(|()| replica.register());
    let first_at = replica.apply(claim_by(r1, 1, "a", Claim::SHARED, 0));
    let second_at = replica.apply(claim_by(r2, 1, "a", Claim::SHARED, 0));
    let holders = vec![
        Holder {
            owner: r1,
            token: first_at,
        },
        Holder {
            owner: r2,
            token: second_at,
        },
    ];
    let state = vec![LockState {
        lock: lock("a"),
        view: LockView {
            holders,
            waiters: 0,
        },
    }];
    for (id, target) in [(1, on("a")), (2, WatchTarget::Prefix(String::new()))] {
        replica.watch(id, target, None);
        let current = WatchReply::Current {
            id,
            index: second_at,
            state: state.clone(),
            compacted: None,
        };
        assert_eq!(replica.told(), vec![current]);
    }
}

/// `lock_changes` on shared views: holders that stay are no change; those that leave come
/// before those that arrive, each in token-then-owner order.
#[test]
fn lock_changes_lists_leavers_then_arrivals_in_token_then_owner_order() {
    let holder = |owner, token| Holder {
        owner: ClientId(owner),
        token,
    };
    let before = LockView {
        holders: vec![holder(4, 3), holder(2, 5), holder(1, 7)],
        waiters: 0,
    };
    let after = LockView {
        holders: vec![holder(2, 5), holder(3, 9), holder(6, 9)],
        waiters: 0,
    };
    assert_eq!(
        lock_changes(&Command::Noop, &before, &after),
        vec![
            Change::Released { owner: ClientId(4) },
            Change::Released { owner: ClientId(1) },
            Change::Granted {
                owner: ClientId(3),
                token: 9
            },
            Change::Granted {
                owner: ClientId(6),
                token: 9
            },
        ]
    );
}

// ----- prefixes -----

/// A prefix watch hears every lock under it, several in one event when one entry changes
/// several, and nothing of the locks outside it; its starting state lists what is held.
#[test]
fn a_prefix_watch_hears_every_lock_under_it_and_nothing_else() {
    let mut replica = Replica::new();
    let client = replica.register();
    let _ = replica.apply(preempt_by(client, 1, "w1"));
    replica.watch(1, WatchTarget::Prefix("w".into()), None);
    let held = LockState {
        lock: lock("w1"),
        view: LockView {
            holders: vec![Holder {
                owner: client,
                token: 2,
            }],
            waiters: 0,
        },
    };
    let state = vec![held];
    let current = WatchReply::Current {
        id: 1,
        index: 2,
        state,
        compacted: None,
    };
    assert_eq!(replica.told(), vec![current]);

    let _ = replica.apply(preempt_by(client, 2, "x1"));
    assert_eq!(replica.told(), vec![], "x1 is not under w");
    let granted_at = replica.apply(preempt_by(client, 3, "w2"));
    let grant = Change::Granted {
        owner: client,
        token: granted_at,
    };
    assert_eq!(
        replica.told(),
        vec![event(1, granted_at, vec![change("w2", grant)])]
    );
    let expired_at = replica.apply(Command::Expire { client });
    let both = vec![
        change("w1", Change::Expired { owner: client }),
        change("w2", Change::Expired { owner: client }),
    ];
    assert_eq!(replica.told(), vec![event(1, expired_at, both)]);
}

// ----- resuming -----

/// etcd's watch revision: `from` N replays the kept changes at N and after, in order, then the
/// live ones. A client that saw index L resumes from L + 1 and hears neither L again nor a gap.
#[test]
fn a_watch_from_an_index_replays_from_exactly_there_then_goes_on_live() {
    let mut replica = Replica::new();
    let client = replica.register();
    let first = replica.apply(preempt_by(client, 1, "a"));
    let second = replica.apply(release_by(client, 2, "a"));
    let third = replica.apply(preempt_by(client, 3, "a"));
    replica.watch(1, on("a"), Some(second + 1));
    let grant = |token| Change::Granted {
        owner: client,
        token,
    };
    assert_eq!(
        replica.told(),
        vec![
            WatchReply::Resumed {
                id: 1,
                index: third
            },
            event(1, third, vec![change("a", grant(third))]),
        ],
        "nothing before {}, so not {first} nor {second}",
        second + 1
    );
    let fourth = replica.apply(release_by(client, 4, "a"));
    let released = change("a", Change::Released { owner: client });
    assert_eq!(replica.told(), vec![event(1, fourth, vec![released])]);
}

/// A client may resume on a replica behind the one it came from: from N beyond what that
/// replica applied, it hears nothing until the replica reaches N, and never an index below N.
#[test]
fn a_watch_resumed_on_a_replica_behind_it_never_hears_an_index_below_its_from() {
    let mut replica = Replica::new();
    let client = replica.register();
    replica.watch(1, on("a"), Some(4));
    assert_eq!(
        replica.told(),
        vec![WatchReply::Resumed { id: 1, index: 1 }]
    );
    let _ = replica.apply(preempt_by(client, 1, "a"));
    let _ = replica.apply(release_by(client, 2, "a"));
    assert_eq!(
        replica.told(),
        vec![],
        "2 and 3 come before the watch's from"
    );
    let fourth = replica.apply(preempt_by(client, 3, "a"));
    let grant = Change::Granted {
        owner: client,
        token: fourth,
    };
    assert_eq!(
        replica.told(),
        vec![event(1, fourth, vec![change("a", grant)])]
    );
}

/// From an index whose changes the ring no longer holds, the answer says so and gives the
/// current state to start from, with its index; events after that index follow.
#[test]
fn a_watch_from_a_compacted_index_gets_the_current_state_and_says_compacted() {
    let mut replica = Replica::new();
    let client = replica.register();
    // Each preempt or release is one change; enough of them push the first out of the ring.
    let rounds = WATCH_HISTORY_CHANGES_MAX / 2 + 1;
    for round in 0..rounds as u64 {
        let _ = replica.apply(preempt_by(client, 2 * round + 1, "a"));
        let _ = replica.apply(release_by(client, 2 * round + 2, "a"));
    }
    let kept_after = replica.watches.kept_after();
    assert!(kept_after > 2, "the ring dropped the first changes");
    let applied = replica.table.applied_index();
    replica.watch(1, on("a"), Some(2));
    let current = WatchReply::Current {
        id: 1,
        index: applied,
        state: vec![free("a")],
        compacted: Some(kept_after),
    };
    assert_eq!(replica.told(), vec![current]);
    let next = replica.apply(preempt_by(client, 2 * rounds as u64 + 1, "a"));
    assert!(matches!(
        &replica.told()[..],
        [WatchReply::Event { event, .. }] if event.index == next
    ));
    // At the bound itself: the change at `kept_after` is gone too, so a watch from it is told
    // `compacted`; from the index after it, the ring holds everything, and the watch resumes.
    // (Mutant: `first > self.kept_after` in `WatchState::start` made `>=`, which resumed a
    // watch over the missing change.)
    let kept_after = replica.watches.kept_after();
    replica.watch(2, on("a"), Some(kept_after));
    assert!(matches!(
        &replica.told()[..],
        [WatchReply::Current { id: 2, compacted: Some(k), .. }] if *k == kept_after
    ));
    replica.watch(3, on("a"), Some(kept_after + 1));
    assert!(matches!(
        &replica.told()[..],
        [WatchReply::Resumed { id: 3, .. }, ..]
    ));
}

// ----- bounds -----

/// A watcher that does not acknowledge is sent at most the bound, then waits in the ring;
/// acknowledging lets the rest come, in order. One that stays behind until the ring drops what
/// it has not been sent is cancelled with a typed reason: the server buffers nothing for it.
#[test]
fn a_slow_watcher_gets_the_bound_then_waits_and_is_cancelled_once_the_ring_leaves_it() {
    let mut replica = Replica::new();
    let client = replica.register();
    replica.watch(1, on("a"), None);
    let _ = replica.told();
    let bound = WATCH_EVENTS_UNACKNOWLEDGED_MAX as u64;
    for seq in 1..=bound + 10 {
        let _ = replica.apply(preempt_by(client, 2 * seq - 1, "a"));
        let _ = replica.apply(release_by(client, 2 * seq, "a"));
    }
    let sent = replica.told();
    assert_eq!(sent.len(), WATCH_EVENTS_UNACKNOWLEDGED_MAX);
    let WatchReply::Event { event: last, .. } = sent.last().expect("events") else {
        panic!("events only");
    };
    let through = last.index;
    replica.input(WatchInput::Acknowledge {
        from: WATCHER,
        id: 1,
        through,
    });
    let more = replica.told();
    assert!(!more.is_empty(), "acknowledged: the next ones come");
    assert!(
        more.iter()
            .all(|reply| matches!(reply, WatchReply::Event { event, .. } if event.index > through))
    );

    for seq in 0..WATCH_HISTORY_CHANGES_MAX as u64 {
        let _ = replica.apply(preempt_by(client, 1_000 + 2 * seq, "a"));
        let _ = replica.apply(release_by(client, 1_001 + 2 * seq, "a"));
    }
    let told = replica.told();
    let [WatchReply::Cancelled { id: 1, reason }] = &told[..] else {
        panic!("one cancel expected, at the first drop past it; got {told:?}");
    };
    let WatchCancel::FellBehind { kept_after } = *reason else {
        panic!("fell behind expected, got {reason:?}");
    };
    assert!(
        kept_after > through,
        "the ring dropped what it was not sent"
    );
    assert_eq!(replica.watches.watch_count(), 0);
}

/// A connection holds at most its bound of watches; a reused id, an empty lock name and an
/// overlong prefix are refused with nothing registered; a stopped watch says so.
#[test]
fn refusals_register_nothing_and_a_stop_is_answered() {
    let mut replica = Replica::new();
    for id in 0..WATCHES_PER_CONNECTION_MAX as u64 {
        replica.watch(id, on("a"), None);
    }
    let _ = replica.told();
    let extra = WATCHES_PER_CONNECTION_MAX as u64;
    replica.watch(extra, on("a"), None);
    let max = WATCHES_PER_CONNECTION_MAX as u32;
    let too_many = WatchRefusal::TooManyWatches { max };
    assert_eq!(
        replica.told(),
        vec![WatchReply::Refused {
            id: extra,
            refusal: too_many
        }]
    );
    replica.input(WatchInput::Stop {
        from: WATCHER,
        id: 0,
    });
    let stopped = WatchReply::Cancelled {
        id: 0,
        reason: WatchCancel::Stopped,
    };
    assert_eq!(replica.told(), vec![stopped]);
    replica.watch(1, on("b"), None);
    let in_use = WatchReply::Refused {
        id: 1,
        refusal: WatchRefusal::IdInUse,
    };
    assert_eq!(replica.told(), vec![in_use]);
    // The names' bounds, one byte past each (a lock name and a prefix of 257 bytes) and at
    // each exactly (256: watched). The codec refuses such lines before the node; the node
    // refuses them again, since a driver may not. (Mutant: `name.len() > LOCK_NAME_BYTES_MAX`
    // in `WatchTarget::problem` made `==`.)
    let over = LOCK_NAME_BYTES_MAX + 1;
    replica.watch(0, on(""), None);
    replica.watch(0, WatchTarget::Prefix("p".repeat(300)), None);
    replica.watch(0, on(&"n".repeat(over)), None);
    replica.watch(
        0,
        WatchTarget::Prefix("p".repeat(WATCH_PREFIX_BYTES_MAX + 1)),
        None,
    );
    let refusals = replica.told();
    assert!(refusals.iter().all(|reply| matches!(
        reply,
        WatchReply::Refused {
            refusal: WatchRefusal::BadTarget { .. },
            ..
        }
    )));
    assert_eq!(refusals.len(), 4);
    replica.input(WatchInput::Closed { from: WATCHER });
    assert_eq!(replica.told(), vec![], "a closed connection hears nothing");
    assert_eq!(replica.watches.watch_count(), 0);
    replica.watch(0, on(&"n".repeat(LOCK_NAME_BYTES_MAX)), None);
    replica.watch(
        1,
        WatchTarget::Prefix("p".repeat(WATCH_PREFIX_BYTES_MAX)),
        None,
    );
    let started = replica.told();
    assert!(
        !started
            .iter()
            .any(|reply| matches!(reply, WatchReply::Refused { .. })),
        "{started:?}"
    );
    assert_eq!(
        replica.watches.watch_count(),
        2,
        "both names at their bound are watched"
    );
}

// ----- servers -----

fn start_watch(
    network: &mut Network,
    server: ServerId,
    from_index: Option<LogIndex>,
) -> Vec<WatchReply> {
    let start = WatchInput::Start {
        from: WATCHER,
        id: 1,
        target: on("a"),
        from_index,
        credential: None,
    };
    let _ = network.step(server, ServerInput::Watch(start));
    watch_replies_of(network, server)
}

fn watch_replies_of(network: &mut Network, server: ServerId) -> Vec<WatchReply> {
    let all = std::mem::take(&mut network.watch_replies);
    let (wanted, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|(s, ..)| *s == server);
    network.watch_replies = others;
    wanted.into_iter().map(|(_, _, reply)| reply).collect()
}

fn registered(network: &mut Network) -> ClientId {
    network.welcome(S1, hello(9))
}

/// A follower serves a watch from its own applied state: it says nothing of the grant the
/// leader committed until it has applied it itself (the next heartbeat tells it the commit),
/// and then tells the very index and token the leader's log holds.
#[test]
fn a_follower_serves_a_watch_from_its_applied_state_at_the_leaders_index() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = registered(&mut network);
    network.heartbeat(S1);
    let _ = start_watch(&mut network, S2, None);
    let _ = network.client(S1, op(client, 1, preempt("a")));
    let index = network.server(S1).commit_index();
    assert!(network.server(S2).last_applied() < index);
    assert_eq!(
        watch_replies_of(&mut network, S2),
        vec![],
        "not applied yet"
    );
    network.heartbeat(S1);
    let grant = Change::Granted {
        owner: client,
        token: index,
    };
    assert_eq!(
        watch_replies_of(&mut network, S2),
        vec![event(1, index, vec![change("a", grant)])]
    );
}

/// Failover without a gap: a watcher that heard index L from one server resumes on another
/// from L + 1 and hears the next change once; from L, it would hear L again, the same event
/// the first server sent, since every replica computes the same changes.
#[test]
fn a_watch_resumed_on_another_server_continues_without_a_gap_or_a_repeat() {
    let mut network = Network::new(3);
    network.elect(S1);
    let client = registered(&mut network);
    let _ = start_watch(&mut network, S1, None);
    let _ = network.client(S1, op(client, 1, preempt("a")));
    let heard = watch_replies_of(&mut network, S1);
    let [WatchReply::Event { event: first, .. }] = &heard[..] else {
        panic!("one event expected, got {heard:?}");
    };
    network.heartbeat(S1);
    let replayed = start_watch(&mut network, S3, Some(first.index));
    assert_eq!(replayed[1], heard[0], "every replica tells the same event");
    let resumed = start_watch(&mut network, S2, Some(first.index + 1));
    assert!(matches!(resumed[..], [WatchReply::Resumed { .. }]));
    let _ = network.client(S1, op(client, 2, release("a")));
    network.heartbeat(S1);
    let next = watch_replies_of(&mut network, S2);
    let released = change("a", Change::Released { owner: client });
    let release_index = network.server(S1).commit_index();
    assert_eq!(next, vec![event(1, release_index, vec![released])]);
}

/// A snapshot installed on a follower skips entries whose changes it never computed: a live
/// watch there cannot go on gap-free, so it is cancelled and its client resumes.
#[test]
fn a_follower_installing_a_snapshot_cancels_the_watches_it_can_no_longer_serve() {
    let mut network = Network::from_disks(vec![DurableState::default(); 3], |config| {
        config.snapshot_entries_min = Some(2);
    });
    network.elect(S1);
    let client = registered(&mut network);
    network.heartbeat(S1);
    let _ = start_watch(&mut network, S3, None);
    network.isolate(S3);
    for seq in 1..=3 {
        let _ = network.client(S1, op(client, 2 * seq - 1, preempt("a")));
        let _ = network.client(S1, op(client, 2 * seq, release("a")));
    }
    network.heal();
    network.heartbeat(S1);
    network.heartbeat(S1);
    let told = watch_replies_of(&mut network, S3);
    assert!(
        matches!(
            told.last(),
            Some(WatchReply::Cancelled {
                reason: WatchCancel::FellBehind { .. },
                ..
            })
        ),
        "got {told:?}"
    );
}

#[path = "watch_mutation_tests.rs"]
mod mutation_kills;
