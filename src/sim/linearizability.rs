//! Judges a client-observed [history](super::history) against the sequential lock table: is
//! there one order of the operations, consistent with real time, in which every answer is what
//! a single lock table would have said? This is the Wing–Gong search with Lowe's just-in-time
//! linearization, as Porcupine does it, checked lock by lock (P-compositionality), plus a
//! per-client monotonic-reads check for `local` checks, which promise no linearizability.
//!
//! What it must never do: hang, or let hash-map iteration order decide a verdict. Every search
//! has a step budget and a memo budget ([`CheckLimits`]), and may have a wall-clock deadline;
//! running out of any is reported as an inconclusive lock, never as a pass or a violation. The
//! deadline is the only input that reads a clock, and it can only stop a search, never steer
//! one: without it, or before it passes, the same history always gets the same verdict. The memo is a hash map that is only
//! inserted into and probed, never iterated. Violations are values for a report, not panics; only
//! an operation that breaks [`HistoryOp`]'s own invariants (a caller bug) panics.
//!
//! The sequential model, per lock. The state is free or held by `(owner, token)`, plus a lower
//! bound for the next fencing token:
//! - preempt of a free lock: `granted` with any token above every token granted before;
//! - preempt of one's own lock: `granted` with the same token (an idempotent retry);
//! - preempt of another's lock: `held_by` that owner;
//! - release by the owner: `released`, the lock is free; by anyone else: `not_owner`;
//! - check: `free`, or `owner` with the holder (and its token, when the answer carries one).
//!
//! An operation whose result is unknown may take effect at any time after its call, or never.
//! An unknown preempt that takes a free lock gives its client the lock under a token nobody has
//! seen; a later `granted` or `owner` answer naming that hold fixes the token.

mod shared;

use super::history::{ClientNames, HistoryOp, HistoryOpKind, HistoryResult, milliseconds};
use crate::node::{Claim, Consistency};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Some order of the non-local operations on each lock, consistent with real time, explains
/// every answer.
pub const LINEARIZABILITY: &str = "linearizability";
/// A client's `local` checks never show it a lock's history going backwards.
pub const MONOTONIC_READS: &str = "monotonic_reads";

/// Bounds on the search: two per lock, and one wall-clock deadline for the whole history.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// Search steps for deciding one lock. Finding the smallest window of a lock that failed gets
    /// the same number again, shared by all the searches it runs.
    pub steps_max_per_lock: u64,
    /// Memoised (state, linearized set) pairs one search may hold; bounds memory.
    pub memo_entries_max_per_lock: usize,
    /// When to give up on the whole history. Every search looks at the clock once per
    /// [`DEADLINE_CHECK_INTERVAL_STEPS`] steps (and at its first), so it stops within that many
    /// steps of the deadline; the locks not decided by then are inconclusive and
    /// [`LinearizabilityReport::timed_out`] is set. `None`: no deadline, and no clock is read.
    pub deadline: Option<Instant>,
}

impl Default for CheckLimits {
    fn default() -> CheckLimits {
        CheckLimits {
            steps_max_per_lock: 50_000_000,
            memo_entries_max_per_lock: 5_000_000,
            deadline: None,
        }
    }
}

/// How many search steps pass between two looks at the clock when there is a deadline: rare
/// enough that reading the clock costs nothing measurable (a step is tens of nanoseconds), often
/// enough that a search overruns its deadline by well under a millisecond.
pub const DEADLINE_CHECK_INTERVAL_STEPS: u64 = 1_024;

/// The verdict on a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizabilityReport {
    /// Distinct locks in the history.
    pub locks_checked: usize,
    /// Every operation in the history: `local` checks go to the monotonic-reads check, the rest
    /// to the linearizability search.
    pub operations_checked: usize,
    /// Violations, linearizability first (by lock name), then monotonic reads (by client, lock).
    pub violations: Vec<LinearizabilityViolation>,
    /// Locks whose search ran out of budget or time: neither proven linearizable nor proven
    /// not. By name, like every list here.
    pub inconclusive_locks: Vec<String>,
    /// The deadline ([`CheckLimits::deadline`]) passed before every lock was decided. The locks
    /// left are in `inconclusive_locks`; violations found before it are still reported.
    pub timed_out: bool,
}

impl LinearizabilityReport {
    /// No violation and nothing inconclusive.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.inconclusive_locks.is_empty()
    }
}

/// One thing wrong with a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinearizabilityViolation {
    /// No order of `window` (a part of the lock's operations, see [`check_history`] for which)
    /// consistent with real time explains every answer in it.
    NotLinearizable {
        lock: String,
        window: Vec<HistoryOp>,
        explanation: String,
        /// Where in `window` the answer that cannot be placed is: the operation whose return
        /// ends the window.
        culprit: usize,
        /// How far the search of the window got before it had to give up, as Porcupine shows
        /// it: the longest order it found that explains a prefix of the window's answers.
        furthest: PartialLinearization,
    },
    /// `later`, a local check by `client`, reported a holder with an older fencing token than one
    /// the client had already seen in `earlier`.
    NonMonotonicRead {
        client: u32,
        lock: String,
        earlier: HistoryOp,
        later: HistoryOp,
    },
    /// `later`, a local check by `client`, was answered at an older log index than the client
    /// had already seen answered in `earlier` (on any lock; its own write makes this
    /// read-your-writes). Only histories with the optional `index` field can show it; it catches
    /// a stale `free`, which has no token to compare.
    StaleRead {
        client: u32,
        earlier: HistoryOp,
        later: HistoryOp,
    },
}

impl LinearizabilityViolation {
    /// The name of the property this breaks: [`LINEARIZABILITY`] or [`MONOTONIC_READS`].
    pub fn invariant(&self) -> &'static str {
        match self {
            LinearizabilityViolation::NotLinearizable { .. } => LINEARIZABILITY,
            LinearizabilityViolation::NonMonotonicRead { .. }
            | LinearizabilityViolation::StaleRead { .. } => MONOTONIC_READS,
        }
    }
}

/// What a lock looks like to a partial linearization: free, or held by a client under a token
/// (`None`: a token nobody saw, granted by a preempt whose result is unknown), or held in
/// shared mode by several clients, each under its own token.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LockView {
    Free,
    Held {
        owner: u32,
        token: Option<u64>,
    },
    /// Shared holders in grant order, and the declared permits (`None`: a plain lock).
    Shared {
        holders: Vec<(u32, Option<u64>)>,
        permits: Option<u32>,
    },
}

impl LockView {
    fn of(state: LockState) -> LockView {
        match state.holder {
            None => LockView::Free,
            Some(Hold { owner, token }) => LockView::Held {
                owner,
                token: match token {
                    HoldToken::Known(token) => Some(token),
                    HoldToken::AtLeast(_) => None,
                },
            },
        }
    }

    /// `free`, `held by c1 (token 4)`, `held by c1 (token unseen)`, `shared by c1 (token 4),
    /// c2 (token unseen) of 3 permits`, with names from `names`.
    pub fn render(&self, names: &ClientNames) -> String {
        let token_text = |token: Option<u64>| match token {
            Some(token) => format!("token {token}"),
            None => "token unseen".to_string(),
        };
        match self {
            LockView::Free => "free".into(),
            LockView::Shared { holders, permits } => {
                let holders: Vec<String> = holders
                    .iter()
                    .map(|&(owner, token)| format!("{} ({})", names.name(owner), token_text(token)))
                    .collect();
                let permits =
                    permits.map_or(String::new(), |permits| format!(" of {permits} permits"));
                format!("shared by {}{permits}", holders.join(", "))
            }
            LockView::Held { owner, token } => {
                format!("held by {} ({})", names.name(*owner), token_text(*token))
            }
        }
    }
}

/// One operation placed by a partial linearization, and the lock after it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinearizedStep {
    pub op: HistoryOp,
    /// False for an operation that only may have taken effect (its result is unknown, or it was
    /// still running at the window's edge): the search assumed it did, here.
    pub required: bool,
    pub after: LockView,
}

/// The furthest a search for a linearization of a failing window got: the order of operations
/// that explained the most of the window's answers before no next answer could be placed, from
/// the starting state it tried that got furthest. Porcupine shows the same thing, to say where
/// explaining the history breaks down. Deterministic: the same window always gives the same one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartialLinearization {
    /// The state the search started from: free at the beginning of a history, or the state
    /// (among those a mid-history window may start from) that got furthest.
    pub start: LockView,
    /// Placed operations, in linearization order.
    pub steps: Vec<LinearizedStep>,
    /// The answers of the window left unexplained, in call order: none of them can come next.
    pub unplaced: Vec<HistoryOp>,
    /// The search ran out of budget before it had tried every order: a longer one may exist.
    pub cut_short: bool,
}

impl LinearizabilityViolation {
    /// The violation as the simulator prints it, with clients by their names in `names`.
    pub fn render(&self, names: &ClientNames) -> String {
        match self {
            LinearizabilityViolation::NotLinearizable {
                lock,
                window,
                explanation,
                ..
            } => {
                let mut text =
                    format!("{LINEARIZABILITY} violated on lock `{lock}`: {explanation}");
                for op in window {
                    text.push_str(&format!("\n    {}", op.named(names)));
                }
                text
            }
            LinearizabilityViolation::NonMonotonicRead {
                client,
                lock,
                earlier,
                later,
            } => {
                let seen = observed_token(earlier).map_or("?".into(), |token| token.to_string());
                format!(
                    "{MONOTONIC_READS} violated: {} saw lock `{lock}` go backwards. It had seen \
                     token {seen} in\n    {}\nand then its local check\n    {}\nreported a holder \
                     with an older token",
                    names.name(*client),
                    earlier.named(names),
                    later.named(names),
                )
            }
            LinearizabilityViolation::StaleRead {
                client,
                earlier,
                later,
            } => {
                let index = |op: &HistoryOp| op.index.map_or("?".into(), |i| i.to_string());
                format!(
                    "{MONOTONIC_READS} violated: {} read a state older than one it had seen. \
                     It had seen log index {} in\n    {}\nand then its local check\n    {}\nwas \
                     answered at index {}",
                    names.name(*client),
                    index(earlier),
                    earlier.named(names),
                    later.named(names),
                    index(later),
                )
            }
        }
    }
}

impl fmt::Display for LinearizabilityViolation {
    /// With the simulator's names (`c3` for client 3).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(ClientNames::simulator()))
    }
}

/// Checks `ops` with the default [`CheckLimits`].
///
/// The window of a non-linearizable lock is the smallest this finds, in this sense:
/// 1. Its end: the earliest return time T such that the lock's operations that returned by T
///    cannot be linearized. Operations called by T that had not returned by then may or may not
///    have taken effect (with their real answers if they did). That is the first moment the
///    history went wrong; the answer returned at T is the one that could not be placed, and it
///    is always in the window. Failure is monotone in T, so T is found by binary search.
/// 2. Its start: the latest call time S, at or before that answer's call, such that the
///    operations called in [S, T] still cannot be linearized *from any state of the lock* (free,
///    or held by any client named there, under any token). Operations called before S that were
///    still running at S may or may not have taken effect (between their call and return), and
///    so may operations with unknown results called before S, at any time. Failure is monotone
///    in S too: binary search again. When no S after the first call fails, the window starts at
///    the beginning, from the lock's real initial state (free).
///
/// Earlier unknown operations are why a window can reach back further than its answers seem to
/// need: a later start could be explained by one of them taking effect late, the whole history
/// cannot (it must have taken effect early). The explanation names them.
///
/// The window lists the answers that must be explained and the operations with unknown results
/// called in it. Operations that merely might have taken effect are considered but not listed:
/// leaving out what might have helped cannot make a failing window pass. So a window is a
/// self-contained proof: as a history of its own, it fails.
pub fn check_history(ops: &[HistoryOp]) -> LinearizabilityReport {
    check_history_with(ops, &CheckLimits::default())
}

/// [`check_history`] with explicit limits.
///
/// # Panics
/// If an operation breaks [`HistoryOp`]'s invariants ([`HistoryOp::validate`]): that is a bug in
/// whoever built it; [`super::history::read_jsonl`] never produces one.
pub fn check_history_with(ops: &[HistoryOp], limits: &CheckLimits) -> LinearizabilityReport {
    check_named_history(ops, ClientNames::simulator(), limits)
}

/// [`check_history_with`] for a history whose clients have names of their own: explanations
/// name clients by `names`.
///
/// # Panics
/// As [`check_history_with`].
pub fn check_named_history(
    ops: &[HistoryOp],
    names: &ClientNames,
    limits: &CheckLimits,
) -> LinearizabilityReport {
    assert!(
        limits.steps_max_per_lock > 0,
        "a search needs at least one step"
    );
    assert!(
        limits.memo_entries_max_per_lock > 0,
        "a search needs room to remember"
    );
    for (position, op) in ops.iter().enumerate() {
        if let Err(problem) = op.validate() {
            panic!("history operation {position} is malformed ({problem}): {op:?}");
        }
    }
    let mut by_lock: BTreeMap<&str, Vec<&HistoryOp>> = BTreeMap::new();
    for op in ops {
        by_lock.entry(op.lock.as_str()).or_default().push(op);
    }
    let mut violations = Vec::new();
    let mut inconclusive_locks = Vec::new();
    let mut timed_out = false;
    for (lock, lock_ops) in &by_lock {
        // Once the deadline has passed, no search could take a step: the rest are undecided.
        if timed_out {
            inconclusive_locks.push((*lock).to_string());
            continue;
        }
        let history = LockHistory::new(lock_ops, names);
        // A lock anyone claims shared or with permits needs the model with many holders; the
        // others keep the single-holder one, whose search is tuned for it.
        let verdict = if lock_ops.iter().any(|op| claims_sharing(op)) {
            shared::check(&history, limits)
        } else {
            history.check(limits)
        };
        match verdict {
            LockVerdict::Linearizable => {}
            LockVerdict::Inconclusive => {
                // Out of steps or memo, or out of time: only the clock can tell which.
                timed_out = limits
                    .deadline
                    .is_some_and(|deadline| Instant::now() >= deadline);
                inconclusive_locks.push((*lock).to_string());
            }
            LockVerdict::NotLinearizable(found) => {
                violations.push(LinearizabilityViolation::NotLinearizable {
                    lock: (*lock).to_string(),
                    window: found.window,
                    explanation: found.explanation,
                    culprit: found.culprit,
                    furthest: found.furthest,
                });
            }
        }
    }
    violations.extend(monotonic_read_violations(ops));
    LinearizabilityReport {
        locks_checked: by_lock.len(),
        operations_checked: ops.len(),
        violations,
        inconclusive_locks,
        timed_out,
    }
}

/// Whether `op` belongs to a shared lock or a semaphore, which [`shared`] models.
fn claims_sharing(op: &HistoryOp) -> bool {
    !op.claim.is_default()
        || matches!(
            op.result,
            HistoryResult::Shared { .. } | HistoryResult::PermitsMismatch { .. }
        )
}

// ---------------------------------------------------------------------------------------------
// The sequential model.

/// The fencing token of a hold.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
enum HoldToken {
    Known(u64),
    /// Granted by an operation whose result nobody learned: some token at least this.
    AtLeast(u128),
}

#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
struct Hold {
    owner: u32,
    token: HoldToken,
}

/// One lock of the sequential lock table.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
struct LockState {
    holder: Option<Hold>,
    /// Every token granted from here on is at least this. `u128`, so that a token of `u64::MAX`
    /// still has a successor.
    token_next_min: u128,
}

impl LockState {
    /// A lock nobody ever touched.
    const INITIAL: LockState = LockState {
        holder: None,
        token_next_min: 0,
    };

    /// Every state a lock could be in before a window that starts mid-history, up to
    /// permissiveness: free, or held by one of `clients` under a token nobody has seen, with the
    /// lowest possible token bounds. Holders not named in the window need no state of their own:
    /// free allows everything such a holder would.
    fn any(clients: &BTreeSet<u32>) -> Vec<LockState> {
        let held = clients.iter().map(|&owner| LockState {
            holder: Some(Hold {
                owner,
                token: HoldToken::AtLeast(0),
            }),
            token_next_min: 1,
        });
        std::iter::once(LockState::INITIAL).chain(held).collect()
    }

    fn held_by(self, client: u32) -> bool {
        self.holder.is_some_and(|hold| hold.owner == client)
    }

    /// `token` names the current hold: fix an unseen token to it, or compare with the known one.
    fn with_token(self, token: u64) -> Option<LockState> {
        let hold = self.holder?;
        match hold.token {
            HoldToken::Known(known) => (known == token).then_some(self),
            HoldToken::AtLeast(min) if u128::from(token) >= min => Some(LockState {
                holder: Some(Hold {
                    owner: hold.owner,
                    token: HoldToken::Known(token),
                }),
                token_next_min: self.token_next_min.max(u128::from(token) + 1),
            }),
            HoldToken::AtLeast(_) => None,
        }
    }

    /// The state after `client` performs `action`, or `None` if the lock table could not have
    /// answered that way in this state.
    fn step(self, client: u32, action: Action) -> Option<LockState> {
        let free = LockState {
            holder: None,
            token_next_min: self.token_next_min,
        };
        match (action, self.holder) {
            (Action::Grant { token }, None) => (u128::from(token) >= self.token_next_min)
                .then_some(LockState {
                    holder: Some(Hold {
                        owner: client,
                        token: HoldToken::Known(token),
                    }),
                    token_next_min: u128::from(token) + 1,
                }),
            (Action::Grant { token }, Some(hold)) if hold.owner == client => self.with_token(token),
            (Action::Refuse { owner }, Some(hold)) => {
                (hold.owner == owner && owner != client).then_some(self)
            }
            (Action::Release, Some(hold)) if hold.owner == client => Some(free),
            (Action::NotOwner, _) => (!self.held_by(client)).then_some(self),
            (Action::SeeFree, None) => Some(self),
            (Action::SeeOwner { owner, token }, Some(hold)) if hold.owner == owner => match token {
                Some(token) => self.with_token(token),
                None => Some(self),
            },
            (Action::MaybePreempt, None) => Some(LockState {
                holder: Some(Hold {
                    owner: client,
                    token: HoldToken::AtLeast(self.token_next_min),
                }),
                token_next_min: self.token_next_min + 1,
            }),
            (Action::MaybeRelease, Some(hold)) if hold.owner == client => Some(free),
            // An expiry frees what the expired session held, and nothing else.
            (Action::Expire, Some(hold)) if hold.owner == client => Some(free),
            (Action::Expire, _) => Some(self),
            (Action::MaybePreempt | Action::MaybeRelease, _) => Some(self),
            (
                Action::Grant { .. }
                | Action::Refuse { .. }
                | Action::Release
                | Action::SeeFree
                | Action::SeeOwner { .. },
                _,
            ) => None,
        }
    }
}

/// An operation with its answer, as the model sees it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Action {
    Grant {
        token: u64,
    },
    Refuse {
        owner: u32,
    },
    Release,
    NotOwner,
    SeeFree,
    SeeOwner {
        owner: u32,
        token: Option<u64>,
    },
    /// A preempt that may or may not have taken effect.
    MaybePreempt,
    /// A release that may or may not have taken effect.
    MaybeRelease,
    /// The cluster expired the client's session.
    Expire,
}

impl Action {
    /// The answered operation; `None` for an unknown result.
    fn answered(op: &HistoryOp) -> Option<Action> {
        match (op.op, op.result) {
            (HistoryOpKind::Preempt | HistoryOpKind::Acquire, HistoryResult::Granted { token }) => {
                Some(Action::Grant { token })
            }
            (HistoryOpKind::Preempt | HistoryOpKind::Acquire, HistoryResult::HeldBy { owner }) => {
                Some(Action::Refuse { owner })
            }
            (HistoryOpKind::Release, HistoryResult::Released) => Some(Action::Release),
            (HistoryOpKind::Release, HistoryResult::NotOwner) => Some(Action::NotOwner),
            (HistoryOpKind::Check, HistoryResult::Free) => Some(Action::SeeFree),
            (HistoryOpKind::Check, HistoryResult::Owner { owner, token }) => {
                Some(Action::SeeOwner { owner, token })
            }
            (HistoryOpKind::Expire, HistoryResult::Expired) => Some(Action::Expire),
            // No effect on the lock: nothing to place (`maybe` agrees).
            (HistoryOpKind::Acquire | HistoryOpKind::Cancel, _) if Action::no_effect(op) => None,
            (_, HistoryResult::Unknown) => None,
            (kind, result) => unreachable!("validated: {} never answers {kind:?}", result.name()),
        }
    }

    /// The operation as one that may or may not have taken effect; `None` for a check, which
    /// has no effect either way.
    fn maybe(op: &HistoryOp) -> Option<Action> {
        if Action::no_effect(op) {
            return None;
        }
        match op.op {
            // An acquire is a preempt that may take effect at any point before it returns.
            HistoryOpKind::Preempt | HistoryOpKind::Acquire => Some(Action::MaybePreempt),
            HistoryOpKind::Release => Some(Action::MaybeRelease),
            HistoryOpKind::Check | HistoryOpKind::Cancel => None,
            HistoryOpKind::Expire => unreachable!("validated: an expiry is never unknown"),
        }
    }

    /// An operation that changed no holder whatever happened: a cancel, and an acquire that
    /// timed out or was cancelled (the table never grants such a waiter).
    fn no_effect(op: &HistoryOp) -> bool {
        match op.op {
            HistoryOpKind::Cancel => true,
            HistoryOpKind::Acquire => {
                matches!(
                    op.result,
                    HistoryResult::TimedOut | HistoryResult::Cancelled
                )
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One lock's history, and the problems (which operations must or may be placed) built from it.

/// What one operation is in a search problem.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Role {
    /// Its answer must be explained: it is placed between its call and return.
    Required,
    /// It may have taken effect, between its call and its return, or never. With its real answer
    /// if it has one; an unknown one may take effect at any time after its call.
    Optional,
    /// Not part of the problem.
    Excluded,
}

/// Where a search starts.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Start {
    /// The lock as nobody touched it.
    Initial,
    /// Any state ([`LockState::any`]): for windows that begin mid-history.
    Any,
}

enum LockVerdict {
    Linearizable,
    NotLinearizable(WindowFound),
    Inconclusive,
}

/// The smallest failing window of a lock, and what to show about it.
struct WindowFound {
    window: Vec<HistoryOp>,
    explanation: String,
    /// Position in `window` of the answer that cannot be placed.
    culprit: usize,
    furthest: PartialLinearization,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Verdict {
    Linearizable,
    NotLinearizable,
    Inconclusive,
}

/// The non-local operations on one lock, in call order.
struct LockHistory<'a> {
    ops: Vec<&'a HistoryOp>,
    /// For explanations only.
    names: &'a ClientNames,
}

impl<'a> LockHistory<'a> {
    fn new(lock_ops: &[&'a HistoryOp], names: &'a ClientNames) -> LockHistory<'a> {
        let mut ops: Vec<&HistoryOp> = lock_ops
            .iter()
            .copied()
            .filter(|op| op.consistency != Some(Consistency::Local))
            .collect();
        // Stable, and fully ordered on what matters, so equal inputs give equal problems.
        ops.sort_by_key(|op| (op.call_ns, op.return_ns.unwrap_or(u64::MAX), op.client));
        LockHistory { ops, names }
    }

    fn check(&self, limits: &CheckLimits) -> LockVerdict {
        let roles = self.roles_as_of(u64::MAX);
        let mut budget = Budget::new(limits);
        match self.judge(&roles, Start::Initial, &mut budget) {
            Verdict::Linearizable => LockVerdict::Linearizable,
            Verdict::Inconclusive => LockVerdict::Inconclusive,
            Verdict::NotLinearizable => LockVerdict::NotLinearizable(self.smallest_window(limits)),
        }
    }

    /// Operations that returned by `horizon_ns` must be explained; those called by then but not
    /// returned may or may not have taken effect; later ones do not exist yet.
    fn roles_as_of(&self, horizon_ns: u64) -> Vec<Role> {
        self.ops
            .iter()
            .map(|op| match op.return_ns {
                Some(return_ns) if return_ns <= horizon_ns => Role::Required,
                _ if op.call_ns <= horizon_ns => Role::Optional,
                _ => Role::Excluded,
            })
            .collect()
    }

    /// The operations of [`Self::roles_as_of`] called at or after `start_ns`. Operations called
    /// before it and still running at `start_ns` may or may not have taken effect; those that
    /// returned before it are gone (their effect is in the unknown starting state).
    fn roles_window(&self, horizon_ns: u64, start_ns: u64) -> Vec<Role> {
        let mut roles = self.roles_as_of(horizon_ns);
        for (role, op) in roles.iter_mut().zip(&self.ops) {
            if op.call_ns >= start_ns || *role == Role::Excluded {
                continue;
            }
            *role = match op.return_ns {
                Some(return_ns) if return_ns < start_ns => Role::Excluded,
                _ => Role::Optional,
            };
        }
        roles
    }

    /// Whether some order explains the problem `roles` describes, from some state of `start`.
    fn judge(&self, roles: &[Role], start: Start, budget: &mut Budget) -> Verdict {
        let problem = Problem::new(&self.ops, roles);
        let initials = match start {
            Start::Initial => vec![LockState::INITIAL],
            Start::Any => LockState::any(&problem.clients()),
        };
        let mut verdict = Verdict::NotLinearizable;
        for initial in initials {
            match Search::new(&problem).run(initial, budget) {
                Verdict::Linearizable => return Verdict::Linearizable,
                Verdict::Inconclusive => verdict = Verdict::Inconclusive,
                Verdict::NotLinearizable => {}
            }
        }
        verdict
    }

    fn fails(&self, roles: &[Role], start: Start, budget: &mut Budget) -> bool {
        self.judge(roles, start, budget) == Verdict::NotLinearizable
    }

    /// The window of a lock whose whole history failed; see [`check_history`] for what
    /// "smallest" means. Searches that run out of budget count as not failing, so the window
    /// only ever shrinks to something proven to fail.
    fn smallest_window(&self, limits: &CheckLimits) -> WindowFound {
        let mut budget = Budget::new(limits);
        // 1. The first return time at which the history fails. The last one fails: operations
        //    called after every return cannot help explain any answer.
        let returns = distinct(self.ops.iter().filter_map(|op| op.return_ns));
        assert!(
            !returns.is_empty(),
            "a failing lock has an answer that could not be placed"
        );
        // The last return time is known to fail, so only the ones before it are searched.
        let first_failing = boundary(returns.len() - 1, |index| {
            !self.fails(
                &self.roles_as_of(returns[index]),
                Start::Initial,
                &mut budget,
            )
        });
        let horizon_ns = returns[first_failing];
        let culprit = (0..self.ops.len())
            .rfind(|&index| self.ops[index].return_ns == Some(horizon_ns))
            .expect("an operation returned at the failing time");

        // 2. The latest start that still fails from any state. Index 0 is the beginning of the
        //    history, which fails from the real initial state (step 1).
        let starts = distinct(self.ops[..=culprit].iter().map(|op| op.call_ns));
        let last_failing = boundary(starts.len(), |index| {
            index == 0
                || self.fails(
                    &self.roles_window(horizon_ns, starts[index]),
                    Start::Any,
                    &mut budget,
                )
        }) - 1;
        let start_ns = starts[last_failing];
        let (roles, start) = if last_failing == 0 {
            (self.roles_as_of(horizon_ns), Start::Initial)
        } else {
            (self.roles_window(horizon_ns, start_ns), Start::Any)
        };
        assert_eq!(
            roles[culprit],
            Role::Required,
            "the window holds the answer it cannot place"
        );
        let late = match starts.get(last_failing + 1) {
            Some(&next_start_ns) if last_failing > 0 => {
                self.late_unknowns(horizon_ns, start_ns, next_start_ns, &mut budget)
            }
            _ => Vec::new(),
        };
        let (window, explanation) = self.describe_window(&roles, start, start_ns, culprit, &late);
        let culprit_op = self.ops[culprit];
        let culprit = window
            .iter()
            .position(|op| op == culprit_op)
            .expect("the window holds the answer it cannot place");
        // A budget of its own: the window is small, and what the searches above spent must not
        // leave it with nothing to show.
        let furthest = self.furthest(&roles, start, &mut Budget::new(limits));
        WindowFound {
            window,
            explanation,
            culprit,
            furthest,
        }
    }

    /// The partial linearization of the problem `roles` describes that explains the most
    /// required answers, over every state `start` allows (the first of equals, in the order
    /// [`LockState::any`] lists them).
    fn furthest(&self, roles: &[Role], start: Start, budget: &mut Budget) -> PartialLinearization {
        let problem = Problem::new(&self.ops, roles);
        let initials = match start {
            Start::Initial => vec![LockState::INITIAL],
            Start::Any => LockState::any(&problem.clients()),
        };
        let mut best: Option<(LockState, Furthest)> = None;
        let mut cut_short = false;
        for initial in initials {
            let mut search = Search::new(&problem);
            search.furthest = Some(Furthest::default());
            let verdict = search.run(initial, budget);
            cut_short |= verdict == Verdict::Inconclusive;
            let found = search.furthest.take().expect("recording");
            if best
                .as_ref()
                .is_none_or(|(_, seen)| found.required_placed > seen.required_placed)
            {
                best = Some((initial, found));
            }
        }
        let (initial, found) = best.expect("at least one starting state");
        let placed: BTreeSet<u32> = found.steps.iter().map(|&(op, _)| op).collect();
        let steps = found
            .steps
            .iter()
            .map(|&(op, after)| LinearizedStep {
                op: self.ops[problem.origins[op as usize]].clone(),
                required: problem.ops[op as usize].required,
                after: LockView::of(after),
            })
            .collect();
        let unplaced = (0..problem.ops.len())
            .filter(|&op| problem.ops[op].required && !placed.contains(&(op as u32)))
            .map(|op| self.ops[problem.origins[op]].clone())
            .collect();
        PartialLinearization {
            start: LockView::of(initial),
            steps,
            unplaced,
            cut_short,
        }
    }

    /// Why the window cannot start at `next_start_ns`, when the reason is operations with
    /// unknown results called before `start_ns`: a smallest set of them that, taking effect
    /// late, explains the window from `next_start_ns` on. Empty if they are not the reason, or
    /// the budget ran out.
    fn late_unknowns(
        &self,
        horizon_ns: u64,
        start_ns: u64,
        next_start_ns: u64,
        budget: &mut Budget,
    ) -> Vec<usize> {
        let mut roles = self.roles_window(horizon_ns, next_start_ns);
        let earlier: Vec<usize> = (0..roles.len())
            .filter(|&index| roles[index] == Role::Optional && self.ops[index].call_ns < start_ns)
            .filter(|&index| self.has_unknown_effect(index))
            .collect();
        let mut without = roles.clone();
        earlier
            .iter()
            .for_each(|&index| without[index] = Role::Excluded);
        if earlier.is_empty() || !self.fails(&without, Start::Any, budget) {
            return Vec::new();
        }
        for &index in &earlier {
            roles[index] = Role::Excluded;
            if self.judge(&roles, Start::Any, budget) != Verdict::Linearizable {
                roles[index] = Role::Optional;
            }
        }
        let late: Vec<usize> = earlier
            .into_iter()
            .filter(|&index| roles[index] == Role::Optional)
            .collect();
        // Taken together they explained it; if the budget ran out while leaving them out one by
        // one, the set may not be the smallest, but it is still a set that explains it.
        late
    }

    /// A preempt or release whose result is unknown: something that may have changed the lock.
    fn has_unknown_effect(&self, index: usize) -> bool {
        let op = self.ops[index];
        op.result == HistoryResult::Unknown && op.op != HistoryOpKind::Check
    }

    /// The window shown: the answers that must be explained, and the preempts and releases with
    /// unknown results called in it. Operations that merely might have taken effect (still
    /// running at the window's start or when the culprit returned, or unknown since before it)
    /// are considered but not listed: leaving out what might have helped cannot make a failing
    /// window pass. `late` are earlier unknown operations that would explain a later start.
    fn describe_window(
        &self,
        roles: &[Role],
        start: Start,
        start_ns: u64,
        culprit: usize,
        late: &[usize],
    ) -> (Vec<HistoryOp>, String) {
        let shown = |index: usize| match roles[index] {
            Role::Required => true,
            Role::Optional => self.has_unknown_effect(index) && self.ops[index].call_ns >= start_ns,
            Role::Excluded => false,
        };
        let window: Vec<HistoryOp> = (0..roles.len())
            .filter(|&index| shown(index))
            .map(|index| self.ops[index].clone())
            .collect();
        let from = match start {
            Start::Initial => "from the lock's initial state (free)",
            Start::Any => {
                "from any state of the lock (free, or held by any client named here, under any \
                 token)"
            }
        };
        let culprit = self.ops[culprit];
        let mut explanation = format!(
            "no order of these {} operations that respects real time explains every answer, \
             starting {from}. The answer that cannot be placed: {} {} at {}: {}.",
            window.len(),
            self.names.name(culprit.client),
            culprit.op.name(),
            culprit.return_ns.map_or("never".into(), milliseconds),
            culprit.result.named(self.names),
        );
        if window.iter().any(|op| op.result == HistoryResult::Unknown) {
            explanation
                .push_str(" Operations with unknown results may or may not have taken effect.");
        }
        if !late.is_empty() {
            let named: Vec<String> = late
                .iter()
                .map(|&index| {
                    let op = self.ops[index];
                    format!(
                        "{} {} called at {}",
                        self.names.name(op.client),
                        op.op.name(),
                        milliseconds(op.call_ns)
                    )
                })
                .collect();
            explanation.push_str(&format!(
                " It cannot start later: what follows its first call would be explained if {}, \
                 whose result{} unknown, had taken effect late; the whole history cannot be \
                 explained that way.",
                named.join(" and "),
                if named.len() == 1 { " is" } else { "s are" },
            ));
        }
        (window, explanation)
    }
}

/// The distinct values, ascending.
fn distinct(values: impl Iterator<Item = u64>) -> Vec<u64> {
    values.collect::<BTreeSet<u64>>().into_iter().collect()
}

/// How many leading indices of `0..count` satisfy `before`, by binary search: `before` must
/// hold up to some index and not from there on.
fn boundary(count: usize, mut before: impl FnMut(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        if before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

// ---------------------------------------------------------------------------------------------
// The search.

struct Budget {
    steps_left: u64,
    memo_entries_max: usize,
    deadline: Option<Instant>,
    /// Steps taken, for spacing looks at the clock.
    steps_taken: u64,
}

impl Budget {
    fn new(limits: &CheckLimits) -> Budget {
        Budget {
            steps_left: limits.steps_max_per_lock,
            memo_entries_max: limits.memo_entries_max_per_lock,
            deadline: limits.deadline,
            steps_taken: 0,
        }
    }

    /// Takes one step, or says why none is left. Reads the clock only with a deadline, and then
    /// only every [`DEADLINE_CHECK_INTERVAL_STEPS`] steps: the verdict of a search that finishes
    /// before its deadline does not depend on the clock at all.
    fn take_step(&mut self) -> bool {
        if self.steps_left == 0 {
            return false;
        }
        if let Some(deadline) = self.deadline
            && self
                .steps_taken
                .is_multiple_of(DEADLINE_CHECK_INTERVAL_STEPS)
            && Instant::now() >= deadline
        {
            // Spent, so that every later search sharing this budget stops at once too.
            self.steps_left = 0;
            return false;
        }
        self.steps_left -= 1;
        self.steps_taken += 1;
        true
    }
}

/// One operation of a search problem.
#[derive(Copy, Clone, Debug)]
struct ProblemOp {
    client: u32,
    action: Action,
    call_ns: u64,
    /// The latest time it can take effect; `None` for an operation whose client never learned
    /// its result.
    return_ns: Option<u64>,
    /// It must be placed. Otherwise it may be placed (between call and return) or never.
    required: bool,
}

/// Operations to place, in call order.
struct Problem {
    ops: Vec<ProblemOp>,
    /// Per operation: its position in the lock's history it was built from.
    origins: Vec<usize>,
}

impl Problem {
    fn new(ops: &[&HistoryOp], roles: &[Role]) -> Problem {
        assert_eq!(ops.len(), roles.len(), "one role per operation");
        let mut problem_ops = Vec::with_capacity(ops.len());
        let mut origins = Vec::with_capacity(ops.len());
        for (origin, (op, &role)) in ops.iter().zip(roles).enumerate() {
            if role == Role::Excluded {
                continue;
            }
            // An answered operation keeps its answer even when optional: if it takes effect in
            // the problem, it does so as it really did. An unknown answer is never required.
            let (action, required) = match Action::answered(op) {
                Some(action) => (Some(action), role == Role::Required),
                None => (Action::maybe(op), false),
            };
            if let Some(action) = action {
                problem_ops.push(ProblemOp {
                    client: op.client,
                    action,
                    call_ns: op.call_ns,
                    return_ns: op.return_ns,
                    required,
                });
                origins.push(origin);
            }
        }
        debug_assert!(
            problem_ops.is_sorted_by_key(|op| op.call_ns),
            "in call order"
        );
        Problem {
            ops: problem_ops,
            origins,
        }
    }

    /// Every client named in the problem, as caller or owner.
    fn clients(&self) -> BTreeSet<u32> {
        let mut clients = BTreeSet::new();
        for op in &self.ops {
            clients.insert(op.client);
            match op.action {
                Action::Refuse { owner } | Action::SeeOwner { owner, .. } => {
                    clients.insert(owner);
                }
                _ => {}
            }
        }
        clients
    }
}

const HEAD: u32 = 0;
const NONE: u32 = u32::MAX;

/// A call or return of a required operation, in the search's linked list.
#[derive(Copy, Clone, Debug)]
struct Entry {
    op: u32,
    time_ns: u64,
    is_call: bool,
    /// The call's return entry, or the return's call entry.
    partner: u32,
}

/// Which candidates the search is trying: required operations first, then optional ones, so
/// that an operation that might not have happened is assumed only when nothing else works.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Phase {
    /// `cursor` is an entry of the linked list.
    Required,
    /// `cursor` is a position in [`Walk::candidates`].
    Optional,
}

/// Where the search is: the lock's state, what has been placed, and the next candidate.
struct Walk {
    state: LockState,
    stack: Vec<Frame>,
    phase: Phase,
    cursor: u32,
    /// In the optional phase: calls after this cannot be placed yet (a required operation that
    /// returned by then is still unplaced).
    frontier_ns: u64,
    /// In the optional phase: the optional operations worth trying
    /// ([`Search::optional_candidates`]).
    candidates: Vec<u32>,
}

/// What one step of the search leads to.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Next {
    Go,
    /// Nothing is left to take back: no order works.
    Exhausted,
    MemoFull,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Placement {
    Placed,
    /// A configuration already visited allows everything this one would.
    Dominated,
    MemoFull,
}

/// A placed operation, and what to restore when it is taken back.
#[derive(Copy, Clone, Debug)]
struct Frame {
    op: u32,
    phase: Phase,
    /// Where the walk was: the call entry (required) or the optional position.
    cursor: u32,
    frontier_ns: u64,
    state_before: LockState,
    first_open_before: u32,
    end_before: u32,
    placed_call_max_before: u64,
    /// A free read: the operation left the state as it was and closed no optional operation's
    /// window, so it is never worth taking back on its own.
    read_only: bool,
}

/// The exact half of a memoised configuration: which required operations are placed, and who
/// holds the lock. Required operations are numbered in call order; every one below
/// `first_open` is placed, so only the bit words from `first_open` to the last placed one are
/// stored.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct MemoKey {
    first_open: u32,
    required_words: Box<[u64]>,
    /// The holder and its token, `None` for a token nobody has seen (its bound is in
    /// [`MemoTail`]).
    holder: Option<(u32, Option<u64>)>,
}

/// The ordered half of a memoised configuration. One configuration dominates another with the
/// same [`MemoKey`] when it allows at least as much: token bounds no higher, and a subset of the
/// optional operations placed (an optional operation never has to be placed, so placing fewer
/// never hurts).
#[derive(Clone, PartialEq, Eq, Debug)]
struct MemoTail {
    token_next_min: u128,
    /// The bound of an unseen hold token; 0 otherwise.
    token_at_least: u128,
    /// Slots of the placed optional operations, sorted.
    optional: Box<[u32]>,
}

impl MemoTail {
    fn dominates(&self, other: &MemoTail) -> bool {
        self.token_next_min <= other.token_next_min
            && self.token_at_least <= other.token_at_least
            && is_sorted_subset(&self.optional, &other.optional)
    }
}

/// Whether every element of `small` is in `large`; both sorted ascending.
fn is_sorted_subset(small: &[u32], large: &[u32]) -> bool {
    if small.len() > large.len() {
        return false;
    }
    let mut rest = large.iter();
    small
        .iter()
        .all(|wanted| rest.by_ref().any(|candidate| candidate == wanted))
}

/// FxHash: fast, and the same on every run (the memo is never iterated, but equal runs should
/// also take equal time).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The optional operations of a problem, by what they can change. Reads are in none of the
/// lists: they never change the state, so they are never worth placing.
struct OptionalIndex {
    /// Preempts with unknown results, per client, in call order.
    maybe_preempts: BTreeMap<u32, Vec<u32>>,
    /// Answered grants (that may have happened before the window), in call order.
    grants: Vec<u32>,
    /// Operations that can change a lock their client holds (releases, and grants that fix an
    /// unseen token), per client, in call order.
    holder_changes: BTreeMap<u32, Vec<u32>>,
    /// Owner answers with a token (they can fix an unseen token), in call order.
    token_answers: Vec<u32>,
    /// Those with a return time (whose window can close).
    windowed: Vec<u32>,
}

impl OptionalIndex {
    fn new(ops: &[ProblemOp]) -> OptionalIndex {
        let mut index = OptionalIndex {
            maybe_preempts: BTreeMap::new(),
            grants: Vec::new(),
            holder_changes: BTreeMap::new(),
            token_answers: Vec::new(),
            windowed: Vec::new(),
        };
        for (position, op) in ops.iter().enumerate().filter(|(_, op)| !op.required) {
            let position = position as u32;
            if op.return_ns.is_some() {
                index.windowed.push(position);
            }
            match op.action {
                Action::MaybePreempt => {
                    index
                        .maybe_preempts
                        .entry(op.client)
                        .or_default()
                        .push(position);
                }
                Action::Grant { .. } => {
                    index.grants.push(position);
                    index
                        .holder_changes
                        .entry(op.client)
                        .or_default()
                        .push(position);
                }
                Action::Release | Action::MaybeRelease => {
                    index
                        .holder_changes
                        .entry(op.client)
                        .or_default()
                        .push(position);
                }
                Action::SeeOwner { token: Some(_), .. } => index.token_answers.push(position),
                _ => {}
            }
        }
        index
    }
}

/// Lowe's just-in-time linearization over a doubly linked list of the required operations'
/// calls and returns.
///
/// At each configuration the required candidates are the calls before the first return entry
/// still in the list: placing one lifts its call and return out of the list; taking it back puts
/// them back (dancing links). Optional operations are kept apart, in call order, so that the
/// ones that may never happen (unknown results) do not lengthen every scan: one is a candidate
/// when its call is not after that first return, and its window is open (nothing placed was
/// called after it returned). Optional candidates are tried only when no required one works.
///
/// The memo skips every configuration that one already visited dominates ([`MemoTail`]): a
/// visited configuration has either failed, or is an ancestor still being explored, which can
/// then do without the detour (an unknown preempt, then its unknown release) that led back to a
/// weaker copy of it. Two more prunings, sound for the same reason:
/// - a free read (a required candidate that leaves the state unchanged and closes no optional
///   operation's window) is never taken back in favour of another candidate: if the rest fails
///   with the read placed now, it fails without it too, since everything that must precede the
///   read already has been placed;
/// - an optional operation that would not change the state is not placed (placing it never
///   helps; it can always stay unplaced).
struct Search<'p> {
    ops: &'p [ProblemOp],
    /// Per operation: its number among required or among optional operations.
    slot: Vec<u32>,
    entries: Vec<Entry>,
    next: Vec<u32>,
    prev: Vec<u32>,
    optional: OptionalIndex,
    /// Per operation: the client a required answer needs to be holding the lock.
    needs_holder: Vec<Option<u32>>,
    required_count: u32,
    required_open: u32,
    required_bits: Vec<u64>,
    /// The lowest required slot not placed.
    first_open: u32,
    /// One past the highest required slot placed.
    end: u32,
    optional_placed: Vec<bool>,
    /// Slots of placed optional operations, in placing order.
    optional_linearized: Vec<u32>,
    /// The latest call among placed operations: optional operations that returned before it
    /// can no longer be placed.
    placed_call_max: u64,
    memo: HashMap<MemoKey, Vec<MemoTail>, BuildHasherDefault<FxHasher>>,
    memo_entries: usize,
    /// When set, the search keeps the configuration that placed the most required operations
    /// (for [`PartialLinearization`]). Off in every search but the one that describes a window:
    /// copying the stack at each new best would cost the big searches time.
    furthest: Option<Furthest>,
}

/// The deepest configuration a recording search reached: placed operations (problem
/// positions), each with the state after it.
#[derive(Default)]
struct Furthest {
    required_placed: u32,
    steps: Vec<(u32, LockState)>,
}

impl<'p> Search<'p> {
    fn new(problem: &'p Problem) -> Search<'p> {
        let ops = &problem.ops;
        assert!(
            ops.len() < (u32::MAX / 2) as usize,
            "operation numbers fit in u32"
        );
        let (mut slot, mut required_count, mut optional_count) = (Vec::new(), 0u32, 0u32);
        for op in ops {
            let count = if op.required {
                &mut required_count
            } else {
                &mut optional_count
            };
            slot.push(*count);
            *count += 1;
        }
        let entries = Search::entry_list(ops);
        let count = entries.len() as u32;
        let needs_holder = ops
            .iter()
            .map(|op| match op.action {
                _ if !op.required => None,
                Action::Refuse { owner } | Action::SeeOwner { owner, .. } => Some(owner),
                Action::Release => Some(op.client),
                _ => None,
            })
            .collect();
        Search {
            ops,
            slot,
            entries,
            next: (0..count)
                .map(|entry| if entry + 1 < count { entry + 1 } else { NONE })
                .collect(),
            prev: (0..count).map(|entry| entry.saturating_sub(1)).collect(),
            optional: OptionalIndex::new(ops),
            needs_holder,
            required_count,
            required_open: required_count,
            required_bits: vec![0; (required_count as usize).div_ceil(64)],
            first_open: 0,
            end: 0,
            optional_placed: vec![false; optional_count as usize],
            optional_linearized: Vec::new(),
            placed_call_max: 0,
            memo: HashMap::default(),
            memo_entries: 0,
            furthest: None,
        }
    }

    /// The head sentinel, then the calls and returns of the required operations in time order;
    /// calls before returns at the same instant, so that touching operations count as
    /// concurrent.
    fn entry_list(ops: &[ProblemOp]) -> Vec<Entry> {
        let mut timeline: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * ops.len());
        for (index, op) in ops.iter().enumerate().filter(|(_, op)| op.required) {
            let return_ns = op.return_ns.expect("a required operation has returned");
            debug_assert!(return_ns >= op.call_ns, "validated: returns follow calls");
            timeline.push((op.call_ns, false, index as u32));
            timeline.push((return_ns, true, index as u32));
        }
        timeline.sort_unstable();
        let mut entries = Vec::with_capacity(timeline.len() + 1);
        entries.push(Entry {
            op: NONE,
            time_ns: 0,
            is_call: false,
            partner: NONE,
        });
        let mut call_entry = vec![NONE; ops.len()];
        for (time_ns, is_return, op) in timeline {
            let entry = entries.len() as u32;
            let mut partner = NONE;
            if is_return {
                partner = call_entry[op as usize];
                assert_ne!(partner, NONE, "a call comes before its return");
                entries[partner as usize].partner = entry;
            } else {
                call_entry[op as usize] = entry;
            }
            entries.push(Entry {
                op,
                time_ns,
                is_call: !is_return,
                partner,
            });
        }
        entries
    }

    fn run(&mut self, initial: LockState, budget: &mut Budget) -> Verdict {
        let mut walk = Walk {
            state: initial,
            stack: Vec::new(),
            phase: Phase::Required,
            cursor: self.next[HEAD as usize],
            frontier_ns: 0,
            candidates: Vec::new(),
        };
        loop {
            if self.required_open == 0 {
                return Verdict::Linearizable;
            }
            if !budget.take_step() {
                return Verdict::Inconclusive;
            }
            let next = match walk.phase {
                Phase::Required => self.required_step(&mut walk, budget),
                Phase::Optional => self.optional_step(&mut walk, budget),
            };
            match next {
                Next::Go => {}
                Next::Exhausted => return Verdict::NotLinearizable,
                Next::MemoFull => return Verdict::Inconclusive,
            }
        }
    }

    /// Tries the required candidate under the cursor; at the first return entry, moves on to
    /// the optional candidates.
    fn required_step(&mut self, walk: &mut Walk, budget: &Budget) -> Next {
        let entry = walk.cursor;
        if entry == NONE || !self.entries[entry as usize].is_call {
            // NONE only once every required operation is placed, which `run` checks first.
            assert_ne!(
                entry, NONE,
                "an unplaced required operation has a return entry"
            );
            walk.phase = Phase::Optional;
            walk.frontier_ns = self.entries[entry as usize].time_ns;
            walk.candidates = self.optional_candidates(walk.state, walk.frontier_ns);
            walk.cursor = 0;
            return Next::Go;
        }
        let op_index = self.entries[entry as usize].op;
        let op = self.ops[op_index as usize];
        let Some(after) = walk.state.step(op.client, op.action) else {
            walk.cursor = self.next[entry as usize];
            return Next::Go;
        };
        // An expiry that changes nothing here may free the lock if placed later, after its
        // session took it: unlike a read, placing it now is not always as good as later.
        let read_only =
            after == walk.state && op.action != Action::Expire && !self.closes_a_window(op.call_ns);
        match self.place(walk, budget, op_index, after, read_only) {
            Placement::Placed => Next::Go,
            Placement::MemoFull => Next::MemoFull,
            Placement::Dominated if !read_only => {
                walk.cursor = self.next[entry as usize];
                Next::Go
            }
            // The read could be placed here and the rest fails (placing a required read changes
            // the required set, so what dominates it is no ancestor: it failed). So does this.
            Placement::Dominated => self.backtrack(walk),
        }
    }

    /// Tries the optional candidate under the cursor; past the last one, backtracks.
    fn optional_step(&mut self, walk: &mut Walk, budget: &Budget) -> Next {
        let Some(&op_index) = walk.candidates.get(walk.cursor as usize) else {
            return self.backtrack(walk);
        };
        walk.cursor += 1;
        let op = self.ops[op_index as usize];
        let Some(after) = walk.state.step(op.client, op.action) else {
            return Next::Go;
        };
        if after == walk.state {
            return Next::Go;
        }
        match self.place(walk, budget, op_index, after, false) {
            Placement::Placed | Placement::Dominated => Next::Go,
            Placement::MemoFull => Next::MemoFull,
        }
    }

    /// The optional operations worth trying in `state` when calls up to `frontier_ns` may be
    /// placed: unplaced, window open, and able to change the state. Two more cuts, both sound:
    /// - a preempt with an unknown result counts only if a required candidate needs its client
    ///   to hold the lock: otherwise it can wait until one does (nothing placed meanwhile needs
    ///   the lock held by its client, so all of it works on a free lock too, and an unknown
    ///   result has no window to close);
    /// - of a client's callable unknown preempts (or unknown releases), only the earliest is
    ///   tried: they are interchangeable, and trying each would explore the same futures again.
    fn optional_candidates(&self, state: LockState, frontier_ns: u64) -> Vec<u32> {
        let callable = |list: &[u32]| {
            let end = list.partition_point(|&op| self.ops[op as usize].call_ns <= frontier_ns);
            let mut seen_unknown = [false; 2];
            list[..end]
                .iter()
                .copied()
                .filter(|&op| self.optional_is_open(op))
                .filter(|&op| match self.ops[op as usize].action {
                    Action::MaybePreempt => !std::mem::replace(&mut seen_unknown[0], true),
                    Action::MaybeRelease => !std::mem::replace(&mut seen_unknown[1], true),
                    _ => true,
                })
                .collect::<Vec<u32>>()
        };
        let mut pool = Vec::new();
        match state.holder {
            None => {
                pool.extend(callable(&self.optional.grants));
                for client in self.holders_needed() {
                    if let Some(list) = self.optional.maybe_preempts.get(&client) {
                        pool.extend(callable(list));
                    }
                }
            }
            Some(hold) => {
                if let Some(list) = self.optional.holder_changes.get(&hold.owner) {
                    pool.extend(callable(list));
                }
                if matches!(hold.token, HoldToken::AtLeast(_)) {
                    pool.extend(callable(&self.optional.token_answers));
                }
            }
        }
        pool.sort_unstable();
        pool.dedup();
        pool
    }

    /// Whether the optional operation `op` is unplaced and its window still open.
    fn optional_is_open(&self, op: u32) -> bool {
        let problem_op = self.ops[op as usize];
        let open = problem_op
            .return_ns
            .is_none_or(|ns| ns >= self.placed_call_max);
        open && !self.optional_placed[self.slot[op as usize] as usize]
    }

    /// The clients that required candidates need to be holding the lock.
    fn holders_needed(&self) -> BTreeSet<u32> {
        let mut clients = BTreeSet::new();
        let mut entry = self.next[HEAD as usize];
        while entry != NONE && self.entries[entry as usize].is_call {
            clients.extend(self.needs_holder[self.entries[entry as usize].op as usize]);
            entry = self.next[entry as usize];
        }
        clients
    }

    /// Whether placing an operation called at `call_ns` would close the window of an optional
    /// operation still open (one that returned before that call).
    fn closes_a_window(&self, call_ns: u64) -> bool {
        self.optional.windowed.iter().any(|&index| {
            let op = self.ops[index as usize];
            let return_ns = op.return_ns.expect("windowed operations have returned");
            !self.optional_placed[self.slot[index as usize] as usize]
                && return_ns >= self.placed_call_max
                && return_ns < call_ns
        })
    }

    /// Places `op`, leaving the lock in `after`, unless a configuration already visited
    /// dominates the result. The walk then starts over from the first candidate.
    fn place(
        &mut self,
        walk: &mut Walk,
        budget: &Budget,
        op: u32,
        after: LockState,
        read_only: bool,
    ) -> Placement {
        let frame = Frame {
            op,
            phase: walk.phase,
            cursor: walk.cursor,
            frontier_ns: walk.frontier_ns,
            state_before: walk.state,
            first_open_before: self.first_open,
            end_before: self.end,
            placed_call_max_before: self.placed_call_max,
            read_only,
        };
        self.mark(op);
        if !self.remember(after) {
            self.unmark(&frame);
            return Placement::Dominated;
        }
        if self.memo_entries > budget.memo_entries_max {
            return Placement::MemoFull;
        }
        if walk.phase == Phase::Required {
            self.lift(walk.cursor);
        }
        walk.stack.push(frame);
        walk.state = after;
        walk.phase = Phase::Required;
        walk.cursor = self.next[HEAD as usize];
        self.record_furthest(walk);
        Placement::Placed
    }

    /// With recording on, keeps the walk's placements if they explain more required answers
    /// than any configuration before: the first such configuration wins, so the result depends
    /// only on the problem.
    fn record_furthest(&mut self, walk: &Walk) {
        let required_placed = self.required_count - self.required_open;
        let Some(furthest) = &mut self.furthest else {
            return;
        };
        if required_placed <= furthest.required_placed {
            return;
        }
        furthest.required_placed = required_placed;
        furthest.steps.clear();
        for (position, frame) in walk.stack.iter().enumerate() {
            let after = walk
                .stack
                .get(position + 1)
                .map_or(walk.state, |next| next.state_before);
            furthest.steps.push((frame.op, after));
        }
    }

    /// Takes back placed operations up to and including the latest one that changed the state
    /// (the others are never worth taking back on their own), and moves the cursor past it.
    fn backtrack(&mut self, walk: &mut Walk) -> Next {
        while let Some(frame) = walk.stack.pop() {
            if frame.phase == Phase::Required {
                self.unlift(frame.cursor);
            }
            self.unmark(&frame);
            walk.state = frame.state_before;
            if frame.read_only {
                continue;
            }
            walk.phase = frame.phase;
            walk.frontier_ns = frame.frontier_ns;
            walk.cursor = match frame.phase {
                Phase::Required => self.next[frame.cursor as usize],
                Phase::Optional => {
                    // The configuration is back to what it was: so are the candidates. The
                    // frame's cursor already points past its operation.
                    walk.candidates = self.optional_candidates(walk.state, walk.frontier_ns);
                    frame.cursor
                }
            };
            return Next::Go;
        }
        Next::Exhausted
    }

    fn mark(&mut self, op: u32) {
        let slot = self.slot[op as usize];
        let problem_op = self.ops[op as usize];
        self.placed_call_max = self.placed_call_max.max(problem_op.call_ns);
        if !problem_op.required {
            debug_assert!(!self.optional_placed[slot as usize], "placed once");
            self.optional_placed[slot as usize] = true;
            self.optional_linearized.push(slot);
            return;
        }
        let (word, bit) = ((slot / 64) as usize, slot % 64);
        debug_assert_eq!(self.required_bits[word] & (1 << bit), 0, "placed once");
        self.required_bits[word] |= 1 << bit;
        self.required_open -= 1;
        self.end = self.end.max(slot + 1);
        while self.first_open < self.required_count && self.is_marked(self.first_open) {
            self.first_open += 1;
        }
    }

    fn unmark(&mut self, frame: &Frame) {
        let slot = self.slot[frame.op as usize];
        self.placed_call_max = frame.placed_call_max_before;
        if !self.ops[frame.op as usize].required {
            let popped = self.optional_linearized.pop();
            assert_eq!(
                popped,
                Some(slot),
                "optional operations are taken back last-in first-out"
            );
            self.optional_placed[slot as usize] = false;
            return;
        }
        debug_assert!(self.is_marked(slot), "taken back once");
        self.required_bits[(slot / 64) as usize] &= !(1 << (slot % 64));
        self.required_open += 1;
        self.first_open = frame.first_open_before;
        self.end = frame.end_before;
    }

    fn is_marked(&self, slot: u32) -> bool {
        self.required_bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    /// Records the configuration reached by placing operations with `state` as the result,
    /// unless one already visited dominates it. Returns whether it was new.
    fn remember(&mut self, state: LockState) -> bool {
        let (key, tail) = self.memo_key(state);
        let tails = self.memo.entry(key).or_default();
        if tails.iter().any(|seen| seen.dominates(&tail)) {
            return false;
        }
        let before = tails.len();
        tails.retain(|seen| !tail.dominates(seen));
        let dropped = before - tails.len();
        tails.push(tail);
        self.memo_entries = self.memo_entries + 1 - dropped;
        true
    }

    fn memo_key(&self, state: LockState) -> (MemoKey, MemoTail) {
        let mut words = Vec::new();
        if self.end > self.first_open {
            let (low, high) = (
                (self.first_open / 64) as usize,
                ((self.end - 1) / 64) as usize,
            );
            words.extend_from_slice(&self.required_bits[low..=high]);
        }
        let mut optional = self.optional_linearized.clone();
        optional.sort_unstable();
        let (holder, token_at_least) = match state.holder {
            None => (None, 0),
            Some(Hold {
                owner,
                token: HoldToken::Known(token),
            }) => (Some((owner, Some(token))), 0),
            Some(Hold {
                owner,
                token: HoldToken::AtLeast(min),
            }) => (Some((owner, None)), min),
        };
        let key = MemoKey {
            first_open: self.first_open,
            required_words: words.into(),
            holder,
        };
        let tail = MemoTail {
            token_next_min: state.token_next_min,
            token_at_least,
            optional: optional.into(),
        };
        (key, tail)
    }

    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let partner = self.entries[call as usize].partner;
        if partner != NONE {
            self.unlink(partner);
        }
    }

    /// Exactly undoes [`Self::lift`], in reverse order.
    fn unlift(&mut self, call: u32) {
        let partner = self.entries[call as usize].partner;
        if partner != NONE {
            self.relink(partner);
        }
        self.relink(call);
    }

    fn unlink(&mut self, entry: u32) {
        let (before, after) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[before as usize] = after;
        if after != NONE {
            self.prev[after as usize] = before;
        }
    }

    fn relink(&mut self, entry: u32) {
        let (before, after) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[before as usize] = entry;
        if after != NONE {
            self.prev[after as usize] = entry;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Monotonic reads for local checks.

/// The fencing token an operation showed its client: its own grant, or an owner answer.
fn observed_token(op: &HistoryOp) -> Option<u64> {
    match op.result {
        HistoryResult::Granted { token } => Some(token),
        HistoryResult::Owner { token, .. } => token,
        _ => None,
    }
}

/// Both monotonic-read rules: fencing tokens per client and lock, then log indexes per client.
fn monotonic_read_violations(ops: &[HistoryOp]) -> Vec<LinearizabilityViolation> {
    let mut violations = token_read_violations(ops);
    let already: Vec<&HistoryOp> = violations
        .iter()
        .filter_map(|violation| match violation {
            LinearizabilityViolation::NonMonotonicRead { later, .. } => Some(later),
            _ => None,
        })
        .collect();
    let stale: Vec<LinearizabilityViolation> = stale_read_violations(ops)
        .into_iter()
        .filter(|violation| match violation {
            LinearizabilityViolation::StaleRead { later, .. } => !already.contains(&later),
            _ => true,
        })
        .collect();
    violations.extend(stale);
    violations
}

/// Per client, across locks, for operations that carry the optional `index`: once the client
/// has seen an answer at log index i (and that answer had returned), a later local check must
/// be answered at index i or later. The servers promise this (a local check carries the
/// highest index its client has seen, and a replica behind it waits), so a read older than
/// that is a stale read even when it shows no token, as a stale `free` does. Reports the first
/// such read per client, against the answer with the highest index seen before it.
fn stale_read_violations(ops: &[HistoryOp]) -> Vec<LinearizabilityViolation> {
    let mut by_client: BTreeMap<u32, Vec<&HistoryOp>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.index.is_some()) {
        by_client.entry(op.client).or_default().push(op);
    }
    by_client
        .into_iter()
        .filter_map(|(client, client_ops)| {
            let (earlier, later) = first_backwards_read(&client_ops, |op| op.index)?;
            Some(LinearizabilityViolation::StaleRead {
                client,
                earlier: earlier.clone(),
                later: later.clone(),
            })
        })
        .collect()
}

/// Per client and lock: once the client has seen token t (and that answer had returned), a
/// later local check must not report a holder with a token below t. Reports the first such read
/// per client and lock, against the observation of the highest token seen before it.
fn token_read_violations(ops: &[HistoryOp]) -> Vec<LinearizabilityViolation> {
    let mut by_client_lock: BTreeMap<(u32, &str), Vec<&HistoryOp>> = BTreeMap::new();
    for op in ops {
        by_client_lock
            .entry((op.client, op.lock.as_str()))
            .or_default()
            .push(op);
    }
    by_client_lock
        .into_iter()
        .filter_map(|((client, lock), client_ops)| {
            let (earlier, later) = first_backwards_read(&client_ops, observed_token)?;
            Some(LinearizabilityViolation::NonMonotonicRead {
                client,
                lock: lock.to_string(),
                earlier: earlier.clone(),
                later: later.clone(),
            })
        })
        .collect()
}

/// The first local check among one client's `ops` whose `value` (a token, a log index) is below
/// the highest `value` of an answer that returned strictly before the check was called, with
/// that answer: `(earlier, later)`. Operations without a value neither raise the bar nor are
/// judged.
fn first_backwards_read<'a>(
    ops: &[&'a HistoryOp],
    value: impl Fn(&HistoryOp) -> Option<u64>,
) -> Option<(&'a HistoryOp, &'a HistoryOp)> {
    // (time, 0 = local read at its call / 1 = observation at its return, position): at equal
    // times a read comes first, so it sees only observations that returned strictly before it.
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        let Some(return_ns) = op.return_ns else {
            continue;
        };
        if value(op).is_some() {
            events.push((return_ns, 1, position));
        }
        if op.consistency == Some(Consistency::Local) {
            events.push((op.call_ns, 0, position));
        }
    }
    events.sort_unstable();
    let mut highest: Option<(u64, &'a HistoryOp)> = None;
    for (_, kind, position) in events {
        let op = ops[position];
        match (kind, value(op), highest) {
            (0, Some(read), Some((seen, earlier))) if read < seen => return Some((earlier, op)),
            (1, Some(seen_now), _) if highest.is_none_or(|(seen, _)| seen_now > seen) => {
                highest = Some((seen_now, op));
            }
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Synthetic histories and the benchmark.

/// Longest time from an operation's call to its effect, and from its effect to its return.
const SYNTHETIC_SPAN_NS: u64 = 2_000_000;
/// Longest pause between a client's operations.
const SYNTHETIC_THINK_NS: u64 = 500_000;
/// How long a client waits for an answer before giving up on it (the result is then unknown).
const SYNTHETIC_TIMEOUT_NS: u64 = 5_000_000;
const SYNTHETIC_UNKNOWN_PROBABILITY: f64 = 0.03;

#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum SyntheticEvent {
    Call { client: u32 },
    Apply { op: usize },
    Return { op: usize },
}

/// A valid, linearizable random history of `ops` operations over `locks` locks (`l1`, `l2`,
/// ...) by `clients` clients, made by simulating one real lock table.
///
/// Each client runs one operation at a time; operations of different clients overlap freely.
/// Every operation takes effect at a random point between its call and its return (its
/// linearization point). About 3% time out: the client learns nothing, and half of those took
/// effect anyway. Checks are half local, half linearizable; local ones read the real table, so
/// they are monotonic too. Returned in call order.
///
/// # Panics
/// If `locks` or `clients` is zero.
pub fn synthetic_history(ops: usize, locks: usize, clients: u32, seed: u64) -> Vec<HistoryOp> {
    assert!(locks > 0, "a synthetic history needs a lock");
    assert!(clients > 0, "a synthetic history needs a client");
    let mut run = SyntheticRun {
        ops_max: ops,
        rng: ChaCha8Rng::seed_from_u64(seed),
        table: vec![None; locks],
        token_next: 1,
        history: Vec::with_capacity(ops),
        planned: Vec::with_capacity(ops),
        queue: BinaryHeap::new(),
        sequence: 0,
    };
    for client in 1..=clients {
        let at = run.rng.random_range(0..=SYNTHETIC_THINK_NS);
        run.schedule(at, SyntheticEvent::Call { client });
    }
    // Each operation schedules at most three events, so this bounds the loop.
    let mut events_left = 3 * ops + clients as usize;
    while let Some(Reverse((now, _, event))) = run.queue.pop() {
        assert!(events_left > 0, "the synthetic simulation ends");
        events_left -= 1;
        match event {
            SyntheticEvent::Call { client } => run.call(client, now),
            SyntheticEvent::Apply { op } => run.apply(op),
            SyntheticEvent::Return { op } => run.finish(op, now),
        }
    }
    let mut history = run.history;
    debug_assert!(
        history.iter().all(|op| op.validate().is_ok()),
        "every operation is valid"
    );
    history.sort_by_key(|op| (op.call_ns, op.client));
    history
}

/// The simulation behind [`synthetic_history`]: one real lock table, and clients that call,
/// take effect and return on a seeded schedule.
struct SyntheticRun {
    ops_max: usize,
    rng: ChaCha8Rng,
    /// Per lock: the holder and its token.
    table: Vec<Option<(u32, u64)>>,
    token_next: u64,
    history: Vec<HistoryOp>,
    /// Per operation: its lock, when it returns, and whether the client learns the answer.
    planned: Vec<(usize, u64, bool)>,
    /// (time, sequence, event): the sequence keeps equal times in scheduling order.
    queue: BinaryHeap<Reverse<(u64, u64, SyntheticEvent)>>,
    sequence: u64,
}

impl SyntheticRun {
    fn schedule(&mut self, at: u64, event: SyntheticEvent) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, event)));
    }

    /// `client` calls its next operation, unless the history is complete.
    fn call(&mut self, client: u32, now: u64) {
        if self.history.len() == self.ops_max {
            return;
        }
        let index = self.history.len();
        let ((op, consistency), lock) = synthetic_op(&mut self.rng, &self.table, client);
        self.history.push(HistoryOp {
            client,
            op,
            lock: format!("l{}", lock + 1),
            consistency,
            call_ns: now,
            return_ns: None,
            result: HistoryResult::Unknown,
            index: None,
            claim: Claim::EXCLUSIVE,
        });
        let apply_at = now + self.rng.random_range(0..=SYNTHETIC_SPAN_NS);
        let return_at = apply_at + self.rng.random_range(0..=SYNTHETIC_SPAN_NS);
        let think = self.rng.random_range(0..=SYNTHETIC_THINK_NS);
        let times_out = self.rng.random_bool(SYNTHETIC_UNKNOWN_PROBABILITY);
        self.planned.push((lock, return_at, !times_out));
        if !times_out || self.rng.random_bool(0.5) {
            self.schedule(apply_at, SyntheticEvent::Apply { op: index });
        }
        if times_out {
            self.schedule(
                now + SYNTHETIC_TIMEOUT_NS + think,
                SyntheticEvent::Call { client },
            );
        }
    }

    /// The operation takes effect: its linearization point.
    fn apply(&mut self, op: usize) {
        let (lock, return_at, answered) = self.planned[op];
        let result = synthetic_apply(
            &mut self.table[lock],
            &mut self.token_next,
            &self.history[op],
        );
        if answered {
            self.history[op].result = result;
            self.schedule(return_at, SyntheticEvent::Return { op });
        }
    }

    /// The client learns the answer and, after a pause, calls its next operation.
    fn finish(&mut self, op: usize, now: u64) {
        assert!(self.planned[op].2, "only answered operations return");
        self.history[op].return_ns = Some(now);
        let client = self.history[op].client;
        let next_call = now + self.rng.random_range(0..=SYNTHETIC_THINK_NS);
        self.schedule(next_call, SyntheticEvent::Call { client });
    }
}

/// The next operation a synthetic client calls: preempt 40%, release 30% (of a lock it holds,
/// mostly), check 30% (half local). Returns the operation and its lock's number.
fn synthetic_op(
    rng: &mut ChaCha8Rng,
    table: &[Option<(u32, u64)>],
    client: u32,
) -> ((HistoryOpKind, Option<Consistency>), usize) {
    let random_lock = rng.random_range(0..table.len());
    let draw = rng.random_range(0..10);
    if draw < 4 {
        return ((HistoryOpKind::Preempt, None), random_lock);
    }
    if draw < 7 {
        let held: Vec<usize> = (0..table.len())
            .filter(|&lock| table[lock].is_some_and(|(owner, _)| owner == client))
            .collect();
        let lock = if !held.is_empty() && rng.random_bool(0.8) {
            held[rng.random_range(0..held.len())]
        } else {
            random_lock
        };
        return ((HistoryOpKind::Release, None), lock);
    }
    let consistency = if rng.random_bool(0.5) {
        Consistency::Local
    } else {
        Consistency::Linearizable
    };
    ((HistoryOpKind::Check, Some(consistency)), random_lock)
}

/// What the one real lock table answers to `op` at its linearization point.
fn synthetic_apply(
    entry: &mut Option<(u32, u64)>,
    token_next: &mut u64,
    op: &HistoryOp,
) -> HistoryResult {
    match (op.op, *entry) {
        (HistoryOpKind::Preempt | HistoryOpKind::Acquire, None) => {
            *entry = Some((op.client, *token_next));
            *token_next += 1;
            HistoryResult::Granted {
                token: *token_next - 1,
            }
        }
        (HistoryOpKind::Preempt | HistoryOpKind::Acquire, Some((owner, token)))
            if owner == op.client =>
        {
            HistoryResult::Granted { token }
        }
        (HistoryOpKind::Preempt | HistoryOpKind::Acquire, Some((owner, _))) => {
            HistoryResult::HeldBy { owner }
        }
        (HistoryOpKind::Cancel, _) => HistoryResult::NotWaiting,
        (HistoryOpKind::Release, Some((owner, _))) if owner == op.client => {
            *entry = None;
            HistoryResult::Released
        }
        (HistoryOpKind::Release, _) => HistoryResult::NotOwner,
        (HistoryOpKind::Check, None) => HistoryResult::Free,
        (HistoryOpKind::Check, Some((owner, token))) => HistoryResult::Owner {
            owner,
            token: Some(token),
        },
        (HistoryOpKind::Expire, Some((owner, _))) if owner == op.client => {
            *entry = None;
            HistoryResult::Expired
        }
        (HistoryOpKind::Expire, _) => HistoryResult::Expired,
    }
}

/// Generates [`synthetic_history`] (not timed) and times [`check_history`] on it, in wall-clock
/// time. Speed is measured here, never asserted in a test.
pub fn bench(
    ops: usize,
    locks: usize,
    clients: u32,
    seed: u64,
) -> (LinearizabilityReport, Duration) {
    let history = synthetic_history(ops, locks, clients, seed);
    let started = Instant::now();
    let report = check_history(&history);
    (report, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_op(
        (client, kind, claim): (u32, HistoryOpKind, Claim),
        (call_ns, return_ns): (u64, u64),
        result: HistoryResult,
    ) -> HistoryOp {
        HistoryOp {
            client,
            op: kind,
            lock: "shelf".into(),
            consistency: (kind == HistoryOpKind::Check).then_some(Consistency::Linearizable),
            call_ns,
            return_ns: Some(return_ns),
            result,
            index: None,
            claim,
        }
    }

    /// Two readers together, a writer queued behind them and granted on the last release (a
    /// run of two readers after it sharing one token), a check counting them, and a semaphore
    /// refusing a claim of other permits: every answer is the lock table's.
    #[test]
    fn a_shared_lock_whose_history_the_lock_table_explains_passes() {
        use HistoryOpKind::{Acquire, Check, Preempt, Release};
        let (reader, writer) = (Claim::SHARED, Claim::EXCLUSIVE);
        let history = vec![
            claim_op(
                (1, Preempt, reader),
                (0, 5),
                HistoryResult::Granted { token: 3 },
            ),
            claim_op(
                (2, Preempt, reader),
                (10, 15),
                HistoryResult::Granted { token: 4 },
            ),
            claim_op(
                (4, Check, writer),
                (16, 18),
                HistoryResult::Shared { holders: 2 },
            ),
            // The writer waits from 20 to 45, granted by c2's release at index 9.
            claim_op(
                (3, Acquire, writer),
                (20, 45),
                HistoryResult::Granted { token: 9 },
            ),
            claim_op((1, Release, writer), (25, 30), HistoryResult::Released),
            claim_op(
                (5, Preempt, reader),
                (32, 34),
                HistoryResult::HeldBy { owner: 2 },
            ),
            claim_op((2, Release, writer), (35, 40), HistoryResult::Released),
            // Two readers waiting behind the writer are handed the lock by its release, in one
            // entry: the same token.
            claim_op(
                (1, Acquire, reader),
                (50, 70),
                HistoryResult::Granted { token: 12 },
            ),
            claim_op(
                (2, Acquire, reader),
                (51, 71),
                HistoryResult::Granted { token: 12 },
            ),
            claim_op((3, Release, writer), (55, 60), HistoryResult::Released),
            claim_op(
                (4, Check, writer),
                (72, 74),
                HistoryResult::Shared { holders: 2 },
            ),
            claim_op((1, Release, writer), (75, 76), HistoryResult::Released),
            claim_op((2, Release, writer), (77, 78), HistoryResult::Released),
            claim_op((4, Check, writer), (79, 80), HistoryResult::Free),
            claim_op(
                (1, Preempt, Claim::semaphore(2)),
                (90, 91),
                HistoryResult::Granted { token: 20 },
            ),
            claim_op(
                (2, Preempt, Claim::semaphore(3)),
                (92, 93),
                HistoryResult::PermitsMismatch { permits: Some(2) },
            ),
            claim_op(
                (2, Preempt, Claim::semaphore(2)),
                (94, 95),
                HistoryResult::Granted { token: 22 },
            ),
            claim_op(
                (3, Preempt, Claim::semaphore(2)),
                (96, 97),
                HistoryResult::HeldBy { owner: 1 },
            ),
        ];
        let report = check_history(&history);
        assert!(report.passed(), "{report:#?}");
        assert_eq!(report.operations_checked, history.len());
    }

    /// The same lock with one answer changed at a time: each change is something no lock table
    /// could have said, and each is flagged, at the answer that cannot be placed.
    #[test]
    fn shared_histories_the_lock_table_cannot_explain_are_flagged() {
        use HistoryOpKind::{Check, Preempt, Release};
        let semaphore = Claim::semaphore(2);
        let granted = |token| HistoryResult::Granted { token };
        let stories: [(&str, Vec<HistoryOp>, usize); 6] = [
            (
                "three holders of a semaphore of two",
                vec![
                    claim_op((1, Preempt, semaphore), (0, 5), granted(3)),
                    claim_op((2, Preempt, semaphore), (10, 15), granted(4)),
                    claim_op((3, Preempt, semaphore), (20, 25), granted(5)),
                ],
                2,
            ),
            (
                "a writer holding while a reader holds",
                vec![
                    claim_op((1, Preempt, Claim::SHARED), (0, 5), granted(3)),
                    claim_op((2, Preempt, Claim::EXCLUSIVE), (10, 15), granted(4)),
                ],
                1,
            ),
            (
                "a release by a client that holds nothing",
                vec![
                    claim_op((1, Preempt, Claim::SHARED), (0, 5), granted(3)),
                    claim_op(
                        (2, Release, Claim::EXCLUSIVE),
                        (10, 15),
                        HistoryResult::Released,
                    ),
                ],
                1,
            ),
            (
                "a mismatch for the permits in force",
                vec![
                    claim_op((1, Preempt, semaphore), (0, 5), granted(3)),
                    claim_op(
                        (2, Preempt, semaphore),
                        (10, 15),
                        HistoryResult::PermitsMismatch { permits: Some(2) },
                    ),
                ],
                1,
            ),
            (
                "held_by naming a later reader, not the earliest",
                vec![
                    claim_op((1, Preempt, Claim::SHARED), (0, 5), granted(3)),
                    claim_op((2, Preempt, Claim::SHARED), (10, 15), granted(4)),
                    claim_op(
                        (3, Preempt, Claim::EXCLUSIVE),
                        (20, 25),
                        HistoryResult::HeldBy { owner: 2 },
                    ),
                ],
                2,
            ),
            (
                "a count of holders that is off",
                vec![
                    claim_op((1, Preempt, Claim::SHARED), (0, 5), granted(3)),
                    claim_op((2, Preempt, Claim::SHARED), (10, 15), granted(4)),
                    claim_op(
                        (3, Check, Claim::EXCLUSIVE),
                        (20, 25),
                        HistoryResult::Shared { holders: 3 },
                    ),
                ],
                2,
            ),
        ];
        for (story, history, culprit) in stories {
            let report = check_history(&history);
            let [
                LinearizabilityViolation::NotLinearizable {
                    window,
                    culprit: found,
                    furthest,
                    ..
                },
            ] = report.violations.as_slice()
            else {
                panic!("{story}: one violation expected: {report:#?}");
            };
            assert_eq!(window[*found], history[culprit], "{story}");
            assert_eq!(
                furthest.unplaced,
                vec![history[culprit].clone()],
                "{story}: everything before the culprit is explained"
            );
        }
    }

    /// A semaphore's furthest linearization shows its holders, as a report prints them.
    #[test]
    fn a_shared_failure_shows_the_holders_it_got_to() {
        let semaphore = Claim::semaphore(2);
        let history = vec![
            claim_op(
                (1, HistoryOpKind::Preempt, semaphore),
                (0, 5),
                HistoryResult::Granted { token: 3 },
            ),
            claim_op(
                (2, HistoryOpKind::Preempt, semaphore),
                (10, 15),
                HistoryResult::Granted { token: 4 },
            ),
            claim_op(
                (3, HistoryOpKind::Preempt, semaphore),
                (20, 25),
                HistoryResult::Granted { token: 5 },
            ),
        ];
        let report = check_history(&history);
        let Some(LinearizabilityViolation::NotLinearizable { furthest, .. }) =
            report.violations.first()
        else {
            panic!("three holders of two permits: {report:#?}");
        };
        let last = furthest.steps.last().expect("two grants placed");
        assert_eq!(
            last.after.render(ClientNames::simulator()),
            "shared by c1 (token 3), c2 (token 4) of 2 permits"
        );
    }

    fn expiry_story(expire_at_ns: u64) -> Vec<HistoryOp> {
        let op = |client, kind, call_ns, return_ns, result| HistoryOp {
            client,
            op: kind,
            lock: "a".into(),
            consistency: None,
            call_ns,
            return_ns: Some(return_ns),
            result,
            index: None,
            claim: Claim::EXCLUSIVE,
        };
        vec![
            op(
                1,
                HistoryOpKind::Preempt,
                0,
                10,
                HistoryResult::Granted { token: 1 },
            ),
            op(
                2,
                HistoryOpKind::Preempt,
                20,
                30,
                HistoryResult::Granted { token: 5 },
            ),
            op(
                1,
                HistoryOpKind::Expire,
                expire_at_ns,
                expire_at_ns,
                HistoryResult::Expired,
            ),
        ]
    }

    /// c1 holds a from 0; c2's acquire waits from 20 and is granted token 5 at 90. It is a
    /// preempt that may take effect at any point before it returns: c1's release at 50-60
    /// explains it. Without that release, the grant is a violation. A timed-out acquire and a
    /// cancel took no effect, whatever the lock's state.
    fn acquire_story(release: bool) -> Vec<HistoryOp> {
        let op = |client, kind, call_ns, return_ns, result| HistoryOp {
            client,
            op: kind,
            lock: "a".into(),
            consistency: None,
            call_ns,
            return_ns: Some(return_ns),
            result,
            index: None,
            claim: Claim::EXCLUSIVE,
        };
        let mut ops = vec![
            op(
                1,
                HistoryOpKind::Preempt,
                0,
                10,
                HistoryResult::Granted { token: 1 },
            ),
            op(
                2,
                HistoryOpKind::Acquire,
                20,
                90,
                HistoryResult::Granted { token: 5 },
            ),
            op(3, HistoryOpKind::Acquire, 25, 80, HistoryResult::TimedOut),
            op(3, HistoryOpKind::Cancel, 85, 88, HistoryResult::NotWaiting),
        ];
        if release {
            ops.push(op(
                1,
                HistoryOpKind::Release,
                50,
                60,
                HistoryResult::Released,
            ));
        }
        ops
    }

    #[test]
    fn an_acquire_granted_after_the_holders_release_is_linearizable_and_one_without_is_not() {
        let report = check_history(&acquire_story(true));
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        let report = check_history(&acquire_story(false));
        assert_eq!(
            report.violations.len(),
            1,
            "c2 was granted a while c1 still held it"
        );
    }

    #[test]
    fn an_expiry_frees_the_expired_sessions_lock_so_the_next_grant_is_explained() {
        let report = check_history(&expiry_story(15));
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }

    #[test]
    fn a_grant_before_the_expiry_that_freed_the_lock_is_caught() {
        let report = check_history(&expiry_story(40));
        assert_eq!(
            report.violations.len(),
            1,
            "c2 was granted a while c1 held it"
        );
    }

    /// Found by the explorer (seed 1596): an expiry that would change nothing where it is
    /// first tried must not be placed there as a read would be, because the unknown preempt
    /// of its session may yet take the lock before it, and only then does the expiry free it
    /// for the next grant.
    #[test]
    fn an_expiry_inside_a_refusal_frees_the_lock_an_unknown_preempt_took_before_it() {
        let op = |client, kind, call_ns, return_ns, result| HistoryOp {
            client,
            op: kind,
            lock: "w6".into(),
            consistency: None,
            call_ns,
            return_ns,
            result,
            index: None,
            claim: Claim::EXCLUSIVE,
        };
        let history = vec![
            op(6, HistoryOpKind::Preempt, 40, None, HistoryResult::Unknown),
            op(
                2,
                HistoryOpKind::Preempt,
                50,
                Some(200),
                HistoryResult::HeldBy { owner: 6 },
            ),
            op(
                6,
                HistoryOpKind::Expire,
                100,
                Some(100),
                HistoryResult::Expired,
            ),
            op(
                9,
                HistoryOpKind::Preempt,
                300,
                Some(310),
                HistoryResult::Granted { token: 217 },
            ),
        ];
        let report = check_history(&history);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }

    #[test]
    fn an_expiry_of_a_session_that_holds_nothing_changes_nothing() {
        let free = state(None, 5);
        let held = state(Some((1, 4)), 5);
        assert_eq!(free.step(1, Action::Expire), Some(free));
        assert_eq!(held.step(2, Action::Expire), Some(held));
        assert_eq!(held.step(1, Action::Expire), Some(state(None, 5)));
    }

    fn state(owner: Option<(u32, u64)>, token_next_min: u128) -> LockState {
        LockState {
            holder: owner.map(|(owner, token)| Hold {
                owner,
                token: HoldToken::Known(token),
            }),
            token_next_min,
        }
    }

    /// The model, rule by rule, as the module documentation states it.
    #[test]
    fn the_model_answers_like_one_lock_table() {
        let free = state(None, 5);
        let held = state(Some((1, 4)), 5);
        let table: [(LockState, u32, Action, Option<LockState>); 16] = [
            (
                free,
                1,
                Action::Grant { token: 5 },
                Some(state(Some((1, 5)), 6)),
            ),
            (
                free,
                1,
                Action::Grant { token: 9 },
                Some(state(Some((1, 9)), 10)),
            ),
            (free, 1, Action::Grant { token: 4 }, None), // tokens only grow
            (held, 1, Action::Grant { token: 4 }, Some(held)), // idempotent re-grant
            (held, 1, Action::Grant { token: 7 }, None), // a re-grant keeps its token
            (held, 2, Action::Grant { token: 7 }, None), // mutual exclusion
            (held, 2, Action::Refuse { owner: 1 }, Some(held)),
            (held, 1, Action::Refuse { owner: 1 }, None), // one's own lock is granted
            (free, 2, Action::Refuse { owner: 1 }, None),
            (held, 1, Action::Release, Some(free)),
            (held, 2, Action::Release, None),
            (held, 2, Action::NotOwner, Some(held)),
            (held, 1, Action::NotOwner, None),
            (
                held,
                3,
                Action::SeeOwner {
                    owner: 1,
                    token: Some(4),
                },
                Some(held),
            ),
            (
                held,
                3,
                Action::SeeOwner {
                    owner: 1,
                    token: Some(3),
                },
                None,
            ),
            (held, 3, Action::SeeFree, None),
        ];
        for (before, client, action, after) in table {
            assert_eq!(
                before.step(client, action),
                after,
                "c{client} {action:?} in {before:?}"
            );
        }
    }

    #[test]
    fn an_unseen_token_is_fixed_by_the_first_answer_that_names_it() {
        let taken = state(None, 5)
            .step(2, Action::MaybePreempt)
            .expect("takes a free lock");
        assert_eq!(
            taken.holder,
            Some(Hold {
                owner: 2,
                token: HoldToken::AtLeast(5)
            })
        );
        assert_eq!(
            taken.step(2, Action::Grant { token: 4 }),
            None,
            "below earlier tokens"
        );
        assert_eq!(
            taken.step(2, Action::Grant { token: 8 }),
            Some(state(Some((2, 8)), 9))
        );
        let fixed = taken.step(
            3,
            Action::SeeOwner {
                owner: 2,
                token: Some(6),
            },
        );
        assert_eq!(fixed, Some(state(Some((2, 6)), 7)));
        assert_eq!(
            taken.step(3, Action::MaybePreempt),
            Some(taken),
            "held: no effect"
        );
        assert_eq!(taken.step(2, Action::MaybeRelease), Some(state(None, 6)));
    }

    #[test]
    fn the_memo_forgets_placement_order_and_skips_dominated_configurations() {
        let ops: Vec<ProblemOp> = (0..3)
            .map(|client| ProblemOp {
                client: client + 1,
                action: Action::MaybePreempt,
                call_ns: 0,
                return_ns: None,
                required: false,
            })
            .collect();
        let problem = Problem {
            origins: (0..ops.len()).collect(),
            ops,
        };
        let mut search = Search::new(&problem);
        search.optional_linearized = vec![2, 0];
        let one = search.memo_key(LockState::INITIAL);
        search.optional_linearized = vec![0, 2];
        assert!(one == search.memo_key(LockState::INITIAL));

        // Free, nothing placed, dominates free after an unknown preempt and its release.
        search.optional_linearized = vec![];
        assert!(search.remember(LockState::INITIAL));
        search.optional_linearized = vec![0, 2];
        assert!(!search.remember(state(None, 1)), "dominated: skipped");
        search.optional_linearized = vec![1];
        assert!(
            !search.remember(LockState::INITIAL),
            "dominated by the empty set"
        );
        assert_eq!(search.memo_entries, 1);
        assert!(is_sorted_subset(&[1, 4], &[0, 1, 3, 4]));
        assert!(!is_sorted_subset(&[1, 5], &[0, 1, 3, 4]));
    }

    #[test]
    fn a_tiny_budget_is_inconclusive_not_a_verdict() {
        let history = synthetic_history(200, 1, 5, 3);
        let limits = CheckLimits {
            steps_max_per_lock: 10,
            memo_entries_max_per_lock: 1_000,
            deadline: None,
        };
        let report = check_history_with(&history, &limits);
        assert_eq!(report.inconclusive_locks, vec!["l1".to_string()]);
        assert!(
            report
                .violations
                .iter()
                .all(|v| v.invariant() == MONOTONIC_READS)
        );
        assert!(!report.passed());
    }

    /// Client `clients + 1` is seen holding the lock but never asked for it, while every other
    /// client may have taken and given it back, in any order: proving that no order works means
    /// trying every subset of the other clients' reads, 2^clients configurations.
    fn exponential_history(clients: u32) -> Vec<HistoryOp> {
        let op = |client, op, result, return_ns| HistoryOp {
            client,
            op,
            lock: "hot".into(),
            consistency: (op == HistoryOpKind::Check).then_some(Consistency::Linearizable),
            call_ns: 0,
            return_ns,
            result,
            index: None,
            claim: Claim::EXCLUSIVE,
        };
        let mut history = Vec::new();
        for client in 1..=clients + 1 {
            let owner = HistoryResult::Owner {
                owner: client,
                token: None,
            };
            history.push(op(client, HistoryOpKind::Check, owner, Some(1_000)));
            if client <= clients {
                history.push(op(
                    client,
                    HistoryOpKind::Preempt,
                    HistoryResult::Unknown,
                    None,
                ));
                history.push(op(
                    client,
                    HistoryOpKind::Release,
                    HistoryResult::Unknown,
                    None,
                ));
            }
        }
        history
    }

    #[test]
    fn a_passed_deadline_leaves_every_lock_inconclusive_and_says_so() {
        let history = synthetic_history(300, 3, 6, 5);
        let limits = CheckLimits {
            deadline: Some(Instant::now()),
            ..CheckLimits::default()
        };
        let report = check_history_with(&history, &limits);
        assert!(report.timed_out);
        assert_eq!(report.inconclusive_locks, vec!["l1", "l2", "l3"]);
        assert!(report.violations.is_empty(), "{report:?}");
    }

    #[test]
    fn a_deadline_that_does_not_pass_changes_no_verdict() {
        let far = CheckLimits {
            deadline: Some(Instant::now() + Duration::from_secs(3_600)),
            ..CheckLimits::default()
        };
        let small = exponential_history(4);
        for history in [synthetic_history(2_000, 3, 8, 9), small] {
            let with = check_history_with(&history, &far);
            assert!(!with.timed_out);
            assert_eq!(with, check_history(&history));
        }
    }

    #[test]
    fn the_exponential_history_is_refused_when_small_and_stops_at_a_deadline_when_large() {
        let small = check_history(&exponential_history(4));
        assert_eq!(small.violations.len(), 1, "{small:?}");
        assert_eq!(small.violations[0].invariant(), LINEARIZABILITY);
        let limits = CheckLimits {
            deadline: Some(Instant::now() + Duration::from_millis(1)),
            ..CheckLimits::default()
        };
        // 2^40 configurations: no machine gets through them in a millisecond, nor through the
        // step budget first.
        let report = check_history_with(&exponential_history(40), &limits);
        assert!(report.timed_out, "{report:?}");
        assert_eq!(report.inconclusive_locks, vec!["hot"]);
    }

    #[test]
    fn synthetic_histories_are_deterministic_and_sized() {
        let one = synthetic_history(500, 4, 6, 11);
        assert_eq!(one, synthetic_history(500, 4, 6, 11));
        assert_eq!(one.len(), 500);
        assert!(one.is_sorted_by_key(|op| op.call_ns));
        let unknown = one
            .iter()
            .filter(|op| op.result == HistoryResult::Unknown)
            .count();
        assert!(
            (1..50).contains(&unknown),
            "a few percent unknown: {unknown}"
        );
    }

    #[test]
    fn small_synthetic_histories_pass() {
        for seed in 0..20 {
            let report = check_history(&synthetic_history(300, 2, 6, seed));
            assert!(report.passed(), "seed {seed}: {report:?}");
        }
    }

    /// Every order of every subset that contains the required operations: the definition of
    /// linearizability, for problems small enough to enumerate.
    fn brute_force(problem: &Problem, initial: LockState) -> bool {
        fn extend(ops: &[ProblemOp], placed: &mut Vec<bool>, state: LockState) -> bool {
            if (0..ops.len()).all(|i| placed[i] || !ops[i].required) {
                return true;
            }
            for candidate in 0..ops.len() {
                let this = ops[candidate];
                // Required operations that returned before this call must come before it, and
                // nothing placed before it may have been called after it returned.
                let ready = !placed[candidate]
                    && (0..ops.len()).all(|other| {
                        let must_precede = ops[other].required
                            && ops[other].return_ns.is_some_and(|r| r < this.call_ns);
                        let called_after = this.return_ns.is_some_and(|r| r < ops[other].call_ns);
                        if placed[other] {
                            !called_after
                        } else {
                            !must_precede
                        }
                    });
                if !ready {
                    continue;
                }
                if let Some(after) = state.step(this.client, this.action) {
                    placed[candidate] = true;
                    if extend(ops, placed, after) {
                        return true;
                    }
                    placed[candidate] = false;
                }
            }
            false
        }
        extend(&problem.ops, &mut vec![false; problem.ops.len()], initial)
    }

    /// A random, usually broken, history of one lock: short intervals, few clients, few tokens.
    fn random_history(rng: &mut ChaCha8Rng, ops: usize) -> Vec<HistoryOp> {
        (0..ops)
            .map(|_| {
                let client = rng.random_range(1..=3);
                let call_ns = rng.random_range(0..20);
                let kind = [
                    HistoryOpKind::Preempt,
                    HistoryOpKind::Release,
                    HistoryOpKind::Check,
                ][rng.random_range(0..3)];
                let owner = rng.random_range(1..=3);
                let token = rng.random_range(1..=3);
                let result = match (kind, rng.random_range(0..5)) {
                    (_, 0) => HistoryResult::Unknown,
                    (HistoryOpKind::Preempt, 1 | 2) => HistoryResult::Granted { token },
                    (HistoryOpKind::Preempt, _) => HistoryResult::HeldBy { owner },
                    (HistoryOpKind::Release, 1 | 2) => HistoryResult::Released,
                    (HistoryOpKind::Release, _) => HistoryResult::NotOwner,
                    (HistoryOpKind::Check, 1) => HistoryResult::Free,
                    (HistoryOpKind::Check, 2) => HistoryResult::Owner { owner, token: None },
                    (HistoryOpKind::Check, _) => HistoryResult::Owner {
                        owner,
                        token: Some(token),
                    },
                    (HistoryOpKind::Expire | HistoryOpKind::Acquire | HistoryOpKind::Cancel, _) => {
                        unreachable!("not drawn")
                    }
                };
                let return_ns =
                    (result != HistoryResult::Unknown).then(|| call_ns + rng.random_range(0..8));
                let consistency =
                    (kind == HistoryOpKind::Check).then_some(Consistency::Linearizable);
                HistoryOp {
                    client,
                    op: kind,
                    lock: "a".into(),
                    consistency,
                    call_ns,
                    return_ns,
                    result,
                    index: None,
                    claim: Claim::EXCLUSIVE,
                }
            })
            .collect()
    }

    #[test]
    fn the_search_agrees_with_brute_force_on_small_random_histories() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut linearizable, mut not) = (0, 0);
        for round in 0..3_000 {
            let count = rng.random_range(1..=7);
            let ops = random_history(&mut rng, count);
            let refs: Vec<&HistoryOp> = ops.iter().collect();
            let history = LockHistory::new(&refs, ClientNames::simulator());
            let roles: Vec<Role> = (0..history.ops.len())
                .map(|_| match rng.random_range(0..10) {
                    0..6 => Role::Required,
                    6..9 => Role::Optional,
                    _ => Role::Excluded,
                })
                .collect();
            let problem = Problem::new(&history.ops, &roles);
            let unseen = LockState {
                holder: Some(Hold {
                    owner: 1,
                    token: HoldToken::AtLeast(1),
                }),
                token_next_min: 2,
            };
            for initial in [LockState::INITIAL, state(Some((2, 2)), 3), unseen] {
                let expected = brute_force(&problem, initial);
                let mut budget = Budget::new(&CheckLimits::default());
                let verdict = Search::new(&problem).run(initial, &mut budget);
                let found = verdict == Verdict::Linearizable;
                assert_ne!(verdict, Verdict::Inconclusive);
                assert_eq!(
                    found, expected,
                    "round {round} from {initial:?}: {:#?}",
                    problem.ops
                );
                if expected {
                    linearizable += 1
                } else {
                    not += 1
                }
            }
        }
        assert!(
            linearizable > 500 && not > 500,
            "{linearizable} linearizable, {not} not"
        );
    }

    #[test]
    fn every_reported_window_fails_on_its_own() {
        // (`smallest_window` itself asserts that the window holds the answer it cannot place.)
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut windows = 0;
        for _ in 0..1_000 {
            let count = rng.random_range(2..=12);
            let ops = random_history(&mut rng, count);
            for violation in check_history(&ops).violations {
                let LinearizabilityViolation::NotLinearizable { window, .. } = violation else {
                    continue;
                };
                windows += 1;
                assert!(!window.is_empty());
                let again = check_history(&window);
                assert!(
                    again
                        .violations
                        .iter()
                        .any(|v| v.invariant() == LINEARIZABILITY),
                    "the window alone must fail: {window:#?}"
                );
            }
        }
        assert!(windows > 100, "{windows} windows");
    }

    fn answered(
        client: u32,
        op: HistoryOpKind,
        call_ns: u64,
        return_ns: u64,
        result: HistoryResult,
    ) -> HistoryOp {
        HistoryOp {
            client,
            op,
            lock: "a".into(),
            consistency: (op == HistoryOpKind::Check).then_some(Consistency::Linearizable),
            call_ns,
            return_ns: Some(return_ns),
            result,
            index: None,
            claim: Claim::EXCLUSIVE,
        }
    }

    /// c1 is granted `a`, and later c2 is granted it too, with nobody releasing it between:
    /// the search gets as far as c1's grant, and c2's cannot follow.
    #[test]
    fn the_furthest_partial_linearization_stops_before_the_answer_that_cannot_be_placed() {
        let history = vec![
            answered(
                1,
                HistoryOpKind::Preempt,
                10,
                20,
                HistoryResult::Granted { token: 1 },
            ),
            answered(
                2,
                HistoryOpKind::Check,
                30,
                40,
                HistoryResult::Owner {
                    owner: 1,
                    token: Some(1),
                },
            ),
            answered(
                2,
                HistoryOpKind::Preempt,
                50,
                60,
                HistoryResult::Granted { token: 2 },
            ),
        ];
        let report = check_history(&history);
        let [
            LinearizabilityViolation::NotLinearizable {
                window,
                culprit,
                furthest,
                ..
            },
        ] = &report.violations[..]
        else {
            panic!("one violation: {report:?}");
        };
        assert_eq!(
            window[*culprit], history[2],
            "c2's grant is what cannot be placed"
        );
        let placed: Vec<(&HistoryOp, LockView)> = furthest
            .steps
            .iter()
            .map(|step| (&step.op, step.after.clone()))
            .collect();
        let held = LockView::Held {
            owner: 1,
            token: Some(1),
        };
        // The window starts mid-history (c2's check needs no earlier grant): from c1 holding
        // `a` under a token nobody saw, the check fixes the token.
        assert_eq!(
            furthest.start,
            LockView::Held {
                owner: 1,
                token: None
            }
        );
        assert_eq!(placed, vec![(&history[1], held.clone())]);
        assert_eq!(furthest.unplaced, vec![history[2].clone()]);
        assert!(!furthest.cut_short);
        assert_eq!(
            furthest.start.render(ClientNames::simulator()),
            "held by c1 (token unseen)"
        );
        assert_eq!(
            held.render(ClientNames::simulator()),
            "held by c1 (token 1)"
        );
    }

    /// The lock state a [`LockView`] start stands for, as [`LockState::any`] builds it.
    fn state_of_start(view: LockView) -> LockState {
        match view {
            LockView::Free => LockState::INITIAL,
            LockView::Held { owner, token: None } => LockState {
                holder: Some(Hold {
                    owner,
                    token: HoldToken::AtLeast(0),
                }),
                token_next_min: 1,
            },
            LockView::Held { token: Some(_), .. } | LockView::Shared { .. } => {
                panic!("a single-holder search starts from one unseen token or none")
            }
        }
    }

    /// A pair assertion on what the search records: replaying the furthest partial
    /// linearization through the model gives the states it reports, and none of the answers it
    /// left unexplained could have come next (else the search would have got further).
    #[test]
    fn every_furthest_partial_linearization_replays_and_cannot_be_extended() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let mut checked = 0;
        let mut extended_somewhere = 0;
        for _ in 0..1_000 {
            let count = rng.random_range(2..=12);
            let ops = random_history(&mut rng, count);
            for violation in check_history(&ops).violations {
                let LinearizabilityViolation::NotLinearizable {
                    window, furthest, ..
                } = violation
                else {
                    continue;
                };
                assert!(!furthest.cut_short);
                let mut state = state_of_start(furthest.start.clone());
                for step in &furthest.steps {
                    let action = Action::answered(&step.op)
                        .or_else(|| Action::maybe(&step.op))
                        .expect("a placed operation acts");
                    state = state
                        .step(step.op.client, action)
                        .unwrap_or_else(|| panic!("step {step:?} fails to replay: {window:#?}"));
                    assert_eq!(LockView::of(state), step.after, "{window:#?}");
                }
                assert!(
                    !furthest.unplaced.is_empty(),
                    "a failing window has an answer left"
                );
                let first_return = furthest
                    .unplaced
                    .iter()
                    .filter_map(|op| op.return_ns)
                    .min()
                    .expect("unplaced answers have returned");
                for op in &furthest.unplaced {
                    assert!(window.contains(op), "unplaced answers are the window's");
                    if op.call_ns <= first_return {
                        let action = Action::answered(op).expect("an answer");
                        assert_eq!(
                            state.step(op.client, action),
                            None,
                            "{op:?} could come next after {furthest:#?}"
                        );
                    }
                }
                extended_somewhere += usize::from(!furthest.steps.is_empty());
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked} windows");
        assert!(extended_somewhere > 50, "{extended_somewhere} with steps");
    }

    #[test]
    fn boundary_counts_the_leading_indices_that_hold() {
        for count in 0..6 {
            for holding in 0..=count {
                assert_eq!(
                    boundary(count, |index| index < holding),
                    holding,
                    "{holding} of {count}"
                );
            }
        }
        assert_eq!(distinct([5, 1, 5, 3].into_iter()), vec![1, 3, 5]);
    }

    /// A read that could be placed first must still be taken back when placing it would close
    /// the window of an optional operation that has to come before it.
    #[test]
    fn a_read_that_closes_an_optional_window_is_not_placed_for_good() {
        let op = |client, action, call_ns, return_ns, required| ProblemOp {
            client,
            action,
            call_ns,
            return_ns: Some(return_ns),
            required,
        };
        // c1 holds token 5. Its release may have happened (by 5), c1's new grant (token 6) needs
        // it to have, and c2's read of owner c1 must then come after both.
        let problem = Problem {
            ops: vec![
                op(1, Action::Release, 0, 5, false),
                op(1, Action::Grant { token: 6 }, 1, 10, true),
                op(
                    2,
                    Action::SeeOwner {
                        owner: 1,
                        token: None,
                    },
                    6,
                    10,
                    true,
                ),
            ],
            origins: vec![0, 1, 2],
        };
        let held = state(Some((1, 5)), 6);
        assert!(brute_force(&problem, held), "release, grant, read");
        let mut budget = Budget::new(&CheckLimits::default());
        assert_eq!(
            Search::new(&problem).run(held, &mut budget),
            Verdict::Linearizable
        );
    }

    /// Timings for the two performance targets; run with
    /// `cargo test --release --lib linearizability -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: prints timings, asserts only verdicts"]
    fn benchmark_prints_timings() {
        for (ops, locks, clients) in [(100_000, 100, 50), (2_000, 1, 20), (20_000, 1, 20)] {
            for seed in 1..=3 {
                let (report, elapsed) = bench(ops, locks, clients, seed);
                println!(
                    "{ops} ops, {locks} locks, {clients} clients, seed {seed}: {:.3}s",
                    elapsed.as_secs_f64()
                );
                assert!(report.passed(), "{report:?}");
            }
        }
        // A broken hot lock: the search must exhaust, then find the smallest window.
        for seed in 1..=3 {
            let mut history = synthetic_history(2_000, 1, 20, seed);
            let position = (1_000..history.len())
                .find(|&i| matches!(history[i].result, HistoryResult::HeldBy { .. }))
                .expect("a refused preempt");
            history[position].result = HistoryResult::HeldBy { owner: 21 };
            let started = Instant::now();
            let report = check_history(&history);
            println!(
                "2000 ops, 1 lock, 20 clients, seed {seed}, one answer broken: {:.3}s, \
                 window of {}",
                started.elapsed().as_secs_f64(),
                match &report.violations[..] {
                    [LinearizabilityViolation::NotLinearizable { window, .. }] => window.len(),
                    other => panic!("{other:?}"),
                }
            );
        }
    }
}
