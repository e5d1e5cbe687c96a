//! The sequential model and its search for locks that some operation claims in shared mode or
//! with permits (docs/design.md, "Shared locks and semaphores"): many holders at once, each with
//! its own token. Locks that only ever see plain exclusive claims keep the single-holder model
//! and its tuned search (the parent module); a lock goes through here as soon as one operation
//! on it carries a claim or a `shared` or `permits_mismatch` answer.
//!
//! The model, per lock: holders in grant order (each with its mode and token), the permits
//! declared while the lock is held, and token bounds. It knows the lock table's rules:
//! - a claim is granted only if it fits (exclusive: nobody holds the lock; shared: no exclusive
//!   holder and fewer holders than the capacity, the declared permits or 64), with a token
//!   above every earlier grant's, except that shared holders handed the lock by one entry share
//!   that entry's index; a holder claiming again gets its own token back, whatever the mode;
//! - `held_by` names a holder, the earliest-granted one, and never answers a holder;
//! - `permits_mismatch` answers a claim naming permits other than those in force;
//! - a release frees the releasing holder's unit only; `check` answers `owner` for an exclusive
//!   holder, `shared` with the count of shared holders, `free` for none.
//!
//! What it does not know is the queue (an acquire is a claim that may take effect at any point
//! before it returns): a lock with waiters refuses claims that fit (no claim jumps the line), and
//! a name in use only through waiters has declared permits the model cannot see. So `held_by`
//! is accepted whenever the lock has other holders, and `permits_mismatch` on a lock without
//! holders whenever the claim named permits. Both only make the model more permissive: it
//! never calls a history of the lock table wrong; it may miss a wrong refusal.
//!
//! The search is Wing–Gong with memoization (Lowe): place an operation whose call comes before
//! every unplaced required return, in any order, never an optional one whose window closed;
//! remember (placed set, state) pairs and never explore one twice. Bounded like the parent's by
//! [`Budget`]: out of steps, memory or time is inconclusive, never a verdict.

use super::{
    Action, Budget, CheckLimits, HoldToken, LinearizedStep, LockHistory, LockVerdict, LockView,
    PartialLinearization, Role, Start, Verdict, WindowFound, boundary, distinct,
};
use crate::node::{Claim, Mode};
use crate::sim::history::{HistoryOp, HistoryOpKind, HistoryResult};
use std::collections::HashSet;

/// One holder of a shared-model lock.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct SharedHold {
    owner: u32,
    token: HoldToken,
    mode: Mode,
}

/// The permits a claim would face now. A declaration stands while the name is in use, by
/// holders or by waiters; the model does not see waiters, so once the last holder leaves it no
/// longer knows whether the name is free (the next claim declares afresh) or still in use.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
enum Declared {
    /// Never used: the next claim declares its permits.
    Fresh,
    /// In use with these permits (`None`: a plain lock).
    Known(Option<u32>),
    /// Free, or in use through waiters with permits the history does not show.
    Unseen,
}

/// One lock of the sequential lock table, with modes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct SharedState {
    /// By owner: one exclusive holder, or shared holders within the capacity. Not in grant
    /// order, so that the order in which concurrent grants are tried does not make states that
    /// differ only in it (tokens say who came first, where it matters).
    holds: Vec<SharedHold>,
    permits: Declared,
    /// Every token granted from here on is at least this, but for [`Self::run_token`].
    token_next_min: u128,
    /// The token of the latest grant when it was shared and nothing freed a unit since: other
    /// shared holders handed the lock by the same entry carry it too.
    run_token: Option<u128>,
}

/// An operation with its answer, as the shared model sees it.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum SharedAction {
    Grant {
        token: u64,
        claim: Claim,
    },
    Refuse {
        owner: u32,
        claim: Claim,
    },
    Mismatch {
        permits: Option<u32>,
        claim: Claim,
    },
    Release,
    NotOwner,
    SeeFree,
    SeeOwner {
        owner: u32,
        token: Option<u64>,
    },
    SeeShared {
        holders: u32,
    },
    /// A preempt or acquire whose result is unknown: it took the lock, if it fit, or not.
    MaybeClaim {
        claim: Claim,
    },
    MaybeRelease,
    Expire,
}

impl SharedAction {
    /// The answered operation; `None` for an unknown result or an acquire that had no effect.
    fn answered(op: &HistoryOp) -> Option<SharedAction> {
        let claim = op.claim;
        match (op.op, op.result) {
            (HistoryOpKind::Acquire | HistoryOpKind::Cancel, _) if Action::no_effect(op) => None,
            (_, HistoryResult::Unknown) => None,
            (_, HistoryResult::Granted { token }) => Some(SharedAction::Grant { token, claim }),
            (_, HistoryResult::HeldBy { owner }) => Some(SharedAction::Refuse { owner, claim }),
            (_, HistoryResult::PermitsMismatch { permits }) => {
                Some(SharedAction::Mismatch { permits, claim })
            }
            (_, HistoryResult::Released) => Some(SharedAction::Release),
            (_, HistoryResult::NotOwner) => Some(SharedAction::NotOwner),
            (_, HistoryResult::Free) => Some(SharedAction::SeeFree),
            (_, HistoryResult::Owner { owner, token }) => {
                Some(SharedAction::SeeOwner { owner, token })
            }
            (_, HistoryResult::Shared { holders }) => Some(SharedAction::SeeShared { holders }),
            (_, HistoryResult::Expired) => Some(SharedAction::Expire),
            (kind, result) => unreachable!("validated: {} never answers {kind:?}", result.name()),
        }
    }

    /// The operation as one that may or may not have taken effect; `None` for what has no
    /// effect either way.
    fn maybe(op: &HistoryOp) -> Option<SharedAction> {
        if Action::no_effect(op) {
            return None;
        }
        match op.op {
            HistoryOpKind::Preempt | HistoryOpKind::Acquire => {
                Some(SharedAction::MaybeClaim { claim: op.claim })
            }
            HistoryOpKind::Release => Some(SharedAction::MaybeRelease),
            HistoryOpKind::Check | HistoryOpKind::Cancel => None,
            HistoryOpKind::Expire => unreachable!("validated: an expiry is never unknown"),
        }
    }
}

impl SharedState {
    /// A lock nobody ever touched.
    const INITIAL: SharedState = SharedState {
        holds: Vec::new(),
        permits: Declared::Fresh,
        token_next_min: 0,
        run_token: None,
    };

    /// The state after `client` performs `action`, or `None` if the lock table could not have
    /// answered that way in this state.
    fn step(&self, client: u32, action: SharedAction) -> Option<SharedState> {
        let mine = self.holds.iter().position(|hold| hold.owner == client);
        match action {
            SharedAction::Grant { token, claim } => match mine {
                // Claiming a lock you hold answers your own token, in whatever mode.
                Some(at) => self.with_token(at, token),
                None if self.mismatch(claim) || !self.fits(claim) => None,
                None => self
                    .token_fresh(token, claim.mode)
                    .then(|| self.granted(client, HoldToken::Known(token), claim)),
            },
            SharedAction::Refuse { owner, claim } => (mine.is_none()
                && owner != client
                && !self.mismatch(claim)
                && self.may_be_earliest(owner))
            .then(|| self.learning(claim.permits)),
            SharedAction::Mismatch { permits, claim } => {
                let named = claim.permits?;
                let in_force = match self.permits {
                    // Nobody ever used the name: the claim would have declared its permits.
                    Declared::Fresh => false,
                    Declared::Known(declared) => {
                        declared != Some(named) && permits.is_none_or(|p| declared == Some(p))
                    }
                    Declared::Unseen => permits != Some(named),
                };
                let learned = if self.holds.is_empty() { None } else { permits };
                (mine.is_none() && in_force).then(|| self.learning(learned))
            }
            SharedAction::Release => mine.map(|at| self.without(at)),
            SharedAction::NotOwner => mine.is_none().then(|| self.clone()),
            SharedAction::SeeFree => self.holds.is_empty().then(|| self.clone()),
            SharedAction::SeeOwner { owner, token } => {
                let [hold] = self.holds.as_slice() else {
                    return None;
                };
                if hold.owner != owner || hold.mode != Mode::Exclusive {
                    return None;
                }
                token.map_or_else(|| Some(self.clone()), |token| self.with_token(0, token))
            }
            SharedAction::SeeShared { holders } => {
                let all_shared = self.holds.iter().all(|hold| hold.mode == Mode::Shared);
                let count = u32::try_from(self.holds.len()).unwrap_or(u32::MAX);
                (all_shared && count > 0 && count == holders).then(|| self.clone())
            }
            SharedAction::MaybeClaim { claim } => {
                if mine.is_some() || self.mismatch(claim) || !self.fits(claim) {
                    return Some(self.clone());
                }
                // Any token: the search places an unknown claim only when an answer needs it
                // (`SharedSearch::needed`), which may be long after it took effect, when the
                // bounds of that moment no longer tell what its token was.
                Some(self.granted(client, HoldToken::AtLeast(0), claim))
            }
            SharedAction::MaybeRelease | SharedAction::Expire => {
                Some(mine.map_or_else(|| self.clone(), |at| self.without(at)))
            }
        }
    }

    /// A claim naming permits other than those known to be in force.
    fn mismatch(&self, claim: Claim) -> bool {
        match self.permits {
            Declared::Known(declared) => claim.permits.is_some() && claim.permits != declared,
            Declared::Fresh | Declared::Unseen => false,
        }
    }

    /// The state once an answer showed that `permits` (when named) are in force on a held
    /// lock: a claim of a held lock that was not refused `permits_mismatch` named them.
    fn learning(&self, permits: Option<u32>) -> SharedState {
        let mut after = self.clone();
        if let (Some(permits), Declared::Unseen, false) =
            (permits, self.permits, self.holds.is_empty())
        {
            after.permits = Declared::Known(Some(permits));
        }
        after
    }

    /// Whether `claim` fits beside the holders: exclusive takes the whole capacity, shared one
    /// unit of it. Unseen permits are the claim's own (a claim naming others would have been
    /// refused), or the most a lock allows.
    fn fits(&self, claim: Claim) -> bool {
        if self.holds.is_empty() {
            return true;
        }
        let all_shared = self.holds.iter().all(|hold| hold.mode == Mode::Shared);
        let capacity = match self.permits {
            Declared::Known(declared) => Claim::capacity(declared),
            Declared::Fresh | Declared::Unseen => Claim::capacity(claim.permits),
        };
        claim.mode == Mode::Shared && all_shared && self.holds.len() < capacity as usize
    }

    /// Whether a new grant in `mode` may carry `token`.
    fn token_fresh(&self, token: u64, mode: Mode) -> bool {
        let token = u128::from(token);
        token >= self.token_next_min || (mode == Mode::Shared && self.run_token == Some(token))
    }

    fn granted(&self, client: u32, token: HoldToken, claim: Claim) -> SharedState {
        let mut after = self.learning(claim.permits);
        after.permits = match self.permits {
            Declared::Fresh => Declared::Known(claim.permits),
            // Taken while free, it declared the claim's permits; while waiters kept the name in
            // use, theirs stand, and they match any the claim named.
            Declared::Unseen if claim.permits.is_some() => Declared::Known(claim.permits),
            _ => after.permits,
        };
        let at = after.holds.partition_point(|hold| hold.owner < client);
        after.holds.insert(
            at,
            SharedHold {
                owner: client,
                token,
                mode: claim.mode,
            },
        );
        match token {
            HoldToken::Known(token) => {
                let token = u128::from(token);
                after.token_next_min = after.token_next_min.max(token + 1);
                after.run_token = (claim.mode == Mode::Shared).then_some(token);
            }
            HoldToken::AtLeast(_) => {}
        }
        after
    }

    /// The hold at `at` answers with `token`: fix an unseen token to it, or compare.
    fn with_token(&self, at: usize, token: u64) -> Option<SharedState> {
        match self.holds[at].token {
            HoldToken::Known(known) => (known == token).then(|| self.clone()),
            HoldToken::AtLeast(token_min) if u128::from(token) >= token_min => {
                let mut after = self.clone();
                after.holds[at].token = HoldToken::Known(token);
                after.token_next_min = after.token_next_min.max(u128::from(token) + 1);
                Some(after)
            }
            HoldToken::AtLeast(_) => None,
        }
    }

    /// The lock once the hold at `at` is gone: after the last one, whether the name is still in
    /// use (by waiters) is unseen; any freed unit ends a run of shared grants.
    fn without(&self, at: usize) -> SharedState {
        let mut after = self.clone();
        after.holds.remove(at);
        if after.holds.is_empty() {
            after.permits = Declared::Unseen;
        }
        after.run_token = None;
        after
    }

    /// Whether `owner` holds the lock and may be the earliest-granted holder: tokens rise in
    /// grant order (holders granted by one entry share it), so no other holder's token may be
    /// known to be lower.
    fn may_be_earliest(&self, owner: u32) -> bool {
        let Some(hold) = self.holds.iter().find(|hold| hold.owner == owner) else {
            return false;
        };
        !self
            .holds
            .iter()
            .any(|other| known_lower(other.token, hold.token))
    }

    pub(super) fn view(&self) -> LockView {
        match self.holds.as_slice() {
            [] => LockView::Free,
            [hold] if hold.mode == Mode::Exclusive => LockView::Held {
                owner: hold.owner,
                token: known(hold.token),
            },
            holds => LockView::Shared {
                holders: holds
                    .iter()
                    .map(|hold| (hold.owner, known(hold.token)))
                    .collect(),
                permits: match self.permits {
                    Declared::Known(permits) => permits,
                    Declared::Fresh | Declared::Unseen => None,
                },
            },
        }
    }
}

fn known(token: HoldToken) -> Option<u64> {
    match token {
        HoldToken::Known(token) => Some(token),
        HoldToken::AtLeast(_) => None,
    }
}

/// Whether `first` is certainly lower than `second`.
fn known_lower(first: HoldToken, second: HoldToken) -> bool {
    match (first, second) {
        (HoldToken::Known(a), HoldToken::Known(b)) => a < b,
        (HoldToken::Known(a), HoldToken::AtLeast(min)) => u128::from(a) < min,
        (HoldToken::AtLeast(_), _) => false,
    }
}

/// One operation of a shared search problem.
#[derive(Copy, Clone, Debug)]
struct SharedOp {
    client: u32,
    action: SharedAction,
    call_ns: u64,
    /// `None` for an operation whose result nobody learned: it may take effect any time after
    /// its call.
    return_ns: Option<u64>,
    required: bool,
}

/// The operations a search places, in call order, with their positions in the lock history.
struct SharedProblem {
    ops: Vec<SharedOp>,
    origins: Vec<usize>,
}

impl SharedProblem {
    fn new(ops: &[&HistoryOp], roles: &[Role]) -> SharedProblem {
        assert_eq!(ops.len(), roles.len(), "one role per operation");
        let mut problem = SharedProblem {
            ops: Vec::with_capacity(ops.len()),
            origins: Vec::with_capacity(ops.len()),
        };
        for (origin, (op, &role)) in ops.iter().zip(roles).enumerate() {
            if role == Role::Excluded {
                continue;
            }
            let (action, required) = match SharedAction::answered(op) {
                Some(action) => (Some(action), role == Role::Required),
                None => (SharedAction::maybe(op), false),
            };
            if let Some(action) = action {
                problem.ops.push(SharedOp {
                    client: op.client,
                    action,
                    call_ns: op.call_ns,
                    return_ns: op.return_ns,
                    required,
                });
                problem.origins.push(origin);
            }
        }
        debug_assert!(problem.ops.is_sorted_by_key(|op| op.call_ns), "call order");
        problem
    }
}

/// Who the answers that may come next need to be holding ([`SharedSearch::needed`]).
#[derive(Default)]
struct Needed {
    clients: Vec<u32>,
    /// Any client's unknown claim may be needed: a `shared` answer counts more holders than
    /// there are, or the name is fresh and a claim's declaration may explain what comes next
    /// (a `permits_mismatch`, or a refusal or grant that a plain declaration would rule out).
    anyone: bool,
}

impl Needed {
    fn holds(&self, client: u32) -> bool {
        self.anyone || self.clients.contains(&client)
    }
}

/// A placed operation and what to restore when it is taken back.
struct SharedFrame {
    op: usize,
    state_before: SharedState,
    placed_call_max_before: u64,
    /// A free read ([`SharedSearch::free_read`]): never worth trying anything else in its place.
    forced: bool,
}

/// A configuration already explored: which operations are placed, and the lock after them.
#[derive(PartialEq, Eq, Hash)]
struct SharedMemoKey {
    placed: Box<[u64]>,
    state: SharedState,
}

/// The depth-first search of one problem from one state.
struct SharedSearch<'p> {
    ops: &'p [SharedOp],
    placed: Vec<u64>,
    required_left: usize,
    placed_call_max: u64,
    memo: HashSet<SharedMemoKey>,
    /// With recording on: the placements that explained the most required answers, each with
    /// the state after it.
    furthest: Option<(usize, Vec<(usize, SharedState)>)>,
}

impl<'p> SharedSearch<'p> {
    fn new(problem: &'p SharedProblem) -> SharedSearch<'p> {
        SharedSearch {
            ops: &problem.ops,
            placed: vec![0; problem.ops.len().div_ceil(64)],
            required_left: problem.ops.iter().filter(|op| op.required).count(),
            placed_call_max: 0,
            memo: HashSet::new(),
            furthest: None,
        }
    }

    fn is_placed(&self, op: usize) -> bool {
        self.placed[op / 64] & (1 << (op % 64)) != 0
    }

    fn flip(&mut self, op: usize) {
        self.placed[op / 64] ^= 1 << (op % 64);
    }

    /// The earliest return among unplaced required operations: nothing called after it may be
    /// placed before that operation is.
    fn frontier_ns(&self) -> u64 {
        (0..self.ops.len())
            .filter(|&op| self.ops[op].required && !self.is_placed(op))
            .filter_map(|op| self.ops[op].return_ns)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A required answer that can be placed now without changing the state or closing any
    /// optional operation's window (its call is no later than one already placed). Placing it
    /// now is as good as placing it later: whatever order places it later, moving it here
    /// breaks no real-time order and leaves every later step as it was. So the search places it
    /// without trying alternatives in its place.
    fn free_read(&self, state: &SharedState) -> Option<usize> {
        let frontier_ns = self.frontier_ns();
        (0..self.ops.len())
            .take_while(|&op| self.ops[op].call_ns <= frontier_ns)
            .find(|&op| {
                let candidate = self.ops[op];
                candidate.required
                    && !self.is_placed(op)
                    && candidate.call_ns <= self.placed_call_max
                    && state.step(candidate.client, candidate.action).as_ref() == Some(state)
            })
    }

    /// What the required answers that may come next need of holders. An unknown claim is tried
    /// only for them: placed where nothing needs it, its hold could only stand in the way
    /// (a claim fits less, `free` and `owner` answers fail), so it can wait until something
    /// needs it, or never take effect. Tokens do not tell against waiting: an unknown claim's
    /// token is any ([`SharedAction::MaybeClaim`]).
    ///
    /// Except on a never-used name: there a claim also declares the name's permits, and once its
    /// hold is gone (an expiry, a release) the name is [`Declared::Unseen`], in use by waiters
    /// the model cannot see, not fresh. That is more permissive than fresh, not less: a plain
    /// grant no longer declares the name plain, so a later claim naming permits is not owed a
    /// `permits_mismatch`. Seed 296481: c3's unknown shared claim of 4 permits, expired; c1's
    /// unknown plain acquire, waiting behind it, handed the lock at the expiry; then a claim of
    /// 4 permits answered `held_by c1`. No answer needs c3 to hold, yet only its declaration
    /// explains that one. So while the name is fresh, every unknown claim is tried.
    fn needed(&self, state: &SharedState, frontier_ns: u64) -> Needed {
        let mut needed = Needed {
            anyone: state.permits == Declared::Fresh,
            ..Needed::default()
        };
        for op in (0..self.ops.len()).take_while(|&op| self.ops[op].call_ns <= frontier_ns) {
            let candidate = self.ops[op];
            if !candidate.required || self.is_placed(op) {
                continue;
            }
            match candidate.action {
                SharedAction::Grant { .. } | SharedAction::Release => {
                    needed.clients.push(candidate.client);
                }
                SharedAction::Refuse { owner, .. } | SharedAction::SeeOwner { owner, .. } => {
                    needed.clients.push(owner);
                }
                SharedAction::SeeShared { holders } if holders as usize > state.holds.len() => {
                    needed.anyone = true;
                }
                _ => {}
            }
        }
        needed
    }

    /// The next operation from `from` on that can be placed in `state`, with the state after
    /// it, and not yet explored in this configuration.
    fn next_candidate(
        &mut self,
        state: &SharedState,
        from: usize,
        budget: &Budget,
    ) -> Result<Option<(usize, SharedState)>, ()> {
        let frontier_ns = self.frontier_ns();
        let needed = self.needed(state, frontier_ns);
        // Unknown operations of one client with one action are interchangeable: the earliest
        // called can take effect whenever a later one could. Only the earliest is tried.
        let mut unknown_seen: Vec<(u32, SharedAction)> = Vec::new();
        for op in 0..self.ops.len() {
            let candidate = self.ops[op];
            if candidate.call_ns > frontier_ns {
                break;
            }
            if candidate.return_ns.is_none() && !self.is_placed(op) {
                if matches!(candidate.action, SharedAction::MaybeClaim { .. })
                    && !needed.holds(candidate.client)
                {
                    continue;
                }
                let key = (candidate.client, candidate.action);
                if unknown_seen.contains(&key) {
                    continue;
                }
                unknown_seen.push(key);
            }
            if op < from {
                continue;
            }
            let window_open = candidate
                .return_ns
                .is_none_or(|return_ns| return_ns >= self.placed_call_max);
            if self.is_placed(op) || (!candidate.required && !window_open) {
                continue;
            }
            let Some(after) = state.step(candidate.client, candidate.action) else {
                continue;
            };
            if !candidate.required && after == *state {
                // Placing it changes nothing: leaving it unplaced is as good.
                continue;
            }
            self.flip(op);
            let key = SharedMemoKey {
                placed: self.placed.clone().into(),
                state: after.clone(),
            };
            self.flip(op);
            if !self.memo.insert(key) {
                continue;
            }
            if self.memo.len() > budget.memo_entries_max {
                return Err(());
            }
            return Ok(Some((op, after)));
        }
        Ok(None)
    }

    fn run(&mut self, initial: SharedState, budget: &mut Budget) -> Verdict {
        let mut state = initial;
        let mut stack: Vec<SharedFrame> = Vec::new();
        let mut from = 0;
        // Bounded by the budget: every round takes a step.
        loop {
            if self.required_left == 0 {
                return Verdict::Linearizable;
            }
            if !budget.take_step() {
                return Verdict::Inconclusive;
            }
            let free_read = if from == 0 {
                self.free_read(&state)
            } else {
                None
            };
            let next = match free_read {
                Some(op) => Ok(Some((op, state.clone()))),
                None => self.next_candidate(&state, from, budget),
            };
            match next {
                Err(()) => return Verdict::Inconclusive,
                Ok(Some((op, after))) => {
                    stack.push(SharedFrame {
                        op,
                        state_before: std::mem::replace(&mut state, after),
                        placed_call_max_before: self.placed_call_max,
                        forced: free_read.is_some(),
                    });
                    self.flip(op);
                    self.placed_call_max = self.placed_call_max.max(self.ops[op].call_ns);
                    if self.ops[op].required {
                        self.required_left -= 1;
                    }
                    self.record_furthest(&stack, &state);
                    from = 0;
                }
                Ok(None) => {
                    // Takes back free reads along with what came before them: nothing else was
                    // worth trying in their place.
                    loop {
                        let Some(frame) = stack.pop() else {
                            return Verdict::NotLinearizable;
                        };
                        self.flip(frame.op);
                        if self.ops[frame.op].required {
                            self.required_left += 1;
                        }
                        self.placed_call_max = frame.placed_call_max_before;
                        state = frame.state_before;
                        from = frame.op + 1;
                        if !frame.forced {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn record_furthest(&mut self, stack: &[SharedFrame], state: &SharedState) {
        let Some((best, _)) = &self.furthest else {
            return;
        };
        let required = self.ops.iter().filter(|op| op.required).count() - self.required_left;
        if required <= *best {
            return;
        }
        let steps = stack
            .iter()
            .enumerate()
            .map(|(position, frame)| {
                let after = stack
                    .get(position + 1)
                    .map_or(state, |next| &next.state_before);
                (frame.op, after.clone())
            })
            .collect();
        self.furthest = Some((required, steps));
    }
}

/// Whether some order explains the lock's operations `roles` picks, from the initial state.
fn judge(history: &LockHistory<'_>, roles: &[Role], budget: &mut Budget) -> Verdict {
    let problem = SharedProblem::new(&history.ops, roles);
    SharedSearch::new(&problem).run(SharedState::INITIAL, budget)
}

/// The verdict on a lock with shared or semaphore claims, and for a failing one its window:
/// the operations up to the first return that cannot be explained, from the lock's initial
/// state (the windows of the single-holder model also start later; this one always starts at
/// the beginning).
pub(super) fn check(history: &LockHistory<'_>, limits: &CheckLimits) -> LockVerdict {
    let mut budget = Budget::new(limits);
    match judge(history, &history.roles_as_of(u64::MAX), &mut budget) {
        Verdict::Linearizable => return LockVerdict::Linearizable,
        Verdict::Inconclusive => return LockVerdict::Inconclusive,
        Verdict::NotLinearizable => {}
    }
    // A budget of its own, as the single-holder model gives its window search.
    let mut budget = Budget::new(limits);
    let returns = distinct(history.ops.iter().filter_map(|op| op.return_ns));
    assert!(!returns.is_empty(), "a failing lock has an answer");
    // Failure is monotone in the horizon; budget running out counts as not failing.
    let first_failing = boundary(returns.len() - 1, |index| {
        judge(history, &history.roles_as_of(returns[index]), &mut budget)
            != Verdict::NotLinearizable
    });
    let horizon_ns = returns[first_failing];
    let roles = history.roles_as_of(horizon_ns);
    let culprit = (0..history.ops.len())
        .rfind(|&index| history.ops[index].return_ns == Some(horizon_ns))
        .expect("an operation returned at the failing time");
    let (window, explanation) = history.describe_window(&roles, Start::Initial, 0, culprit, &[]);
    let culprit_op = history.ops[culprit];
    let culprit = window
        .iter()
        .position(|op| op == culprit_op)
        .expect("the window holds the answer it cannot place");
    let furthest = furthest(history, &roles, &mut Budget::new(limits));
    LockVerdict::NotLinearizable(WindowFound {
        window,
        explanation,
        culprit,
        furthest,
    })
}

/// The partial linearization of `roles` that explains the most required answers.
fn furthest(
    history: &LockHistory<'_>,
    roles: &[Role],
    budget: &mut Budget,
) -> PartialLinearization {
    let problem = SharedProblem::new(&history.ops, roles);
    let mut search = SharedSearch::new(&problem);
    search.furthest = Some((0, Vec::new()));
    let verdict = search.run(SharedState::INITIAL, budget);
    let (_, found) = search.furthest.take().expect("recording");
    let placed: Vec<usize> = found.iter().map(|(op, _)| *op).collect();
    let steps = found
        .into_iter()
        .map(|(op, after)| LinearizedStep {
            op: history.ops[problem.origins[op]].clone(),
            required: problem.ops[op].required,
            after: after.view(),
        })
        .collect();
    let unplaced = (0..problem.ops.len())
        .filter(|op| problem.ops[*op].required && !placed.contains(op))
        .map(|op| history.ops[problem.origins[op]].clone())
        .collect();
    PartialLinearization {
        start: SharedState::INITIAL.view(),
        steps,
        unplaced,
        cut_short: verdict == Verdict::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ApplyResult, ClientId, Command, Decision, LockTable, Outcome};
    use crate::sim::linearizability::check_history;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A history of the real lock table: random claims, releases, checks and waiting acquires
    /// by four clients, applied one entry at a time. Each operation spans its entry (a waiting
    /// acquire, from its entry to the one that granted it), plus a random overlap, so the search
    /// has orders to choose from. What the table said is what the history says.
    fn table_history(rng: &mut ChaCha8Rng, entries: u64) -> Vec<HistoryOp> {
        let mut table = LockTable::new();
        for nonce in 1..=4 {
            let register = Command::Register {
                nonce,
                secret: None,
                ttl_ms: None,
            };
            let _ = table.apply(nonce, &register);
        }
        let claims = [Claim::EXCLUSIVE, Claim::SHARED, Claim::semaphore(2)];
        let mut history = Vec::new();
        let mut waiting: Vec<Option<HistoryOp>> = vec![None; 5];
        for index in 5..5 + entries {
            let client = rng.random_range(1..=4u32);
            let at_ns = index * 10;
            let call_ns = at_ns - rng.random_range(0..25).min(at_ns);
            if waiting[client as usize].is_some() {
                // A waiting client runs one operation at a time: the entry is another's no-op.
                let _ = table.apply(index, &Command::Noop);
                continue;
            }
            let claim = claims[rng.random_range(0..claims.len())];
            let (client_id, seq, lock) = (ClientId(u64::from(client)), index, "l".into());
            let (kind, command) = match rng.random_range(0..10) {
                0..3 => (
                    HistoryOpKind::Preempt,
                    Command::Preempt {
                        client: client_id,
                        seq,
                        lock,
                        claim,
                    },
                ),
                3..5 => (
                    HistoryOpKind::Acquire,
                    Command::Acquire {
                        client: client_id,
                        seq,
                        lock,
                        wait_ms: 1_000,
                        claim,
                    },
                ),
                5..8 => (
                    HistoryOpKind::Release,
                    Command::Release {
                        client: client_id,
                        seq,
                        lock,
                    },
                ),
                _ => (HistoryOpKind::Check, Command::Noop),
            };
            let op = |result, return_ns: Option<u64>, claim| HistoryOp {
                client,
                op: kind,
                lock: "l".into(),
                consistency: (kind == HistoryOpKind::Check)
                    .then_some(crate::node::Consistency::Linearizable),
                call_ns,
                return_ns,
                result,
                index: None,
                claim,
            };
            let outcome = match table.apply(index, &command) {
                _ if kind == HistoryOpKind::Check => table.check("l"),
                ApplyResult::Outcome { outcome, .. } => outcome,
                other => panic!("the table refused {command:?}: {other:?}"),
            };
            let claim = if matches!(kind, HistoryOpKind::Preempt | HistoryOpKind::Acquire) {
                claim
            } else {
                Claim::EXCLUSIVE
            };
            let result = match outcome {
                Outcome::Queued => {
                    waiting[client as usize] = Some(op(HistoryResult::Unknown, None, claim));
                    None
                }
                Outcome::Granted { token } => Some(HistoryResult::Granted { token }),
                Outcome::HeldBy { owner } => Some(HistoryResult::HeldBy {
                    owner: owner.0 as u32,
                }),
                Outcome::PermitsMismatch { permits } => {
                    Some(HistoryResult::PermitsMismatch { permits })
                }
                Outcome::Released => Some(HistoryResult::Released),
                Outcome::NotOwner => Some(HistoryResult::NotOwner),
                Outcome::Free => Some(HistoryResult::Free),
                Outcome::Owner { owner, token } => Some(HistoryResult::Owner {
                    owner: owner.0 as u32,
                    token: Some(token),
                }),
                Outcome::Shared { holders, .. } => Some(HistoryResult::Shared { holders }),
                Outcome::Cancelled => Some(HistoryResult::Cancelled),
                other => panic!("not drawn: {other:?}"),
            };
            if let Some(result) = result {
                history.push(op(result, Some(at_ns + rng.random_range(1..25)), claim));
            }
            // Waiters the entry granted hear it now.
            for woken in table.last_woken() {
                let Decision::Granted { token } = woken.decision else {
                    continue;
                };
                let slot = &mut waiting[woken.client.0 as usize];
                let mut acquire = slot.take().expect("a granted waiter was waiting");
                acquire.result = HistoryResult::Granted { token };
                acquire.return_ns = Some(at_ns + rng.random_range(1..25));
                history.push(acquire);
            }
        }
        // Still waiting at the end: unknown, as a client that gave up would record it.
        history.extend(waiting.into_iter().flatten());
        history.sort_by_key(|op| op.call_ns);
        history
    }

    /// Soundness against the lock table itself: whatever the table answers, in any overlap of
    /// the operations' spans, the model explains. Then one changed answer per history (a grant
    /// of token 1) is flagged in most of them: the model is not permissive to the point of
    /// accepting anything.
    #[test]
    fn every_history_the_lock_table_writes_passes_and_a_changed_grant_is_caught() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (mut changed, mut caught) = (0, 0);
        for _ in 0..300 {
            let entries = rng.random_range(5..40);
            let history = table_history(&mut rng, entries);
            let report = check_history(&history);
            assert!(
                report.passed(),
                "{:#?}\n{}",
                report.violations.first().map(|v| v.to_string()),
                history
                    .iter()
                    .map(|op| format!(
                        "c{} {:?} {:?}/{:?} [{}, {:?}] {:?}",
                        op.client,
                        op.op,
                        op.claim.mode,
                        op.claim.permits,
                        op.call_ns,
                        op.return_ns,
                        op.result
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            let grants: Vec<usize> = (0..history.len())
                .filter(|&at| matches!(history[at].result, HistoryResult::Granted { .. }))
                .collect();
            let Some(&at) = grants.get(rng.random_range(0..grants.len().max(1))) else {
                continue;
            };
            let mut wrong = history.clone();
            wrong[at].result = HistoryResult::Granted { token: 1 };
            changed += 1;
            caught += usize::from(!check_history(&wrong).passed());
        }
        assert!(changed > 100, "{changed} histories changed");
        // Not all: token 1 on a lock's first grant breaks nothing unless a later answer shows
        // the real token (259 of 299 are caught with this seed).
        assert!(
            caught * 5 >= changed * 4,
            "{caught} of {changed} changed grants caught"
        );
    }

    fn state(holds: &[(u32, u64, Mode)], permits: Option<u32>) -> SharedState {
        let mut state = SharedState::INITIAL;
        for &(owner, token, mode) in holds {
            let claim = Claim { mode, permits };
            state = state.granted(owner, HoldToken::Known(token), claim);
        }
        state
    }

    fn grant(token: u64, claim: Claim) -> SharedAction {
        SharedAction::Grant { token, claim }
    }

    /// The rules of docs/design.md, "Shared locks and semaphores", one step each.
    #[test]
    fn the_model_grants_what_fits_and_answers_as_the_lock_table_does() {
        let readers = state(&[(1, 4, Mode::Shared), (2, 5, Mode::Shared)], None);
        let semaphore = state(&[(1, 4, Mode::Shared), (2, 5, Mode::Shared)], Some(2));
        let writer = state(&[(1, 4, Mode::Exclusive)], None);
        let table: [(&SharedState, u32, SharedAction, bool); 18] = [
            (&readers, 3, grant(6, Claim::SHARED), true),
            (&readers, 3, grant(6, Claim::EXCLUSIVE), false),
            (&readers, 3, grant(3, Claim::SHARED), false),
            // Handed over by one entry: a second reader shares the first one's token.
            (&readers, 3, grant(5, Claim::SHARED), true),
            (&readers, 2, grant(5, Claim::EXCLUSIVE), true),
            (&readers, 2, grant(7, Claim::SHARED), false),
            (&semaphore, 3, grant(6, Claim::semaphore(2)), false),
            (&writer, 2, grant(6, Claim::SHARED), false),
            (
                &readers,
                3,
                SharedAction::Refuse {
                    owner: 1,
                    claim: Claim::EXCLUSIVE,
                },
                true,
            ),
            (
                &readers,
                3,
                SharedAction::Refuse {
                    owner: 2,
                    claim: Claim::EXCLUSIVE,
                },
                false,
            ),
            (
                &readers,
                1,
                SharedAction::Refuse {
                    owner: 2,
                    claim: Claim::EXCLUSIVE,
                },
                false,
            ),
            (
                &semaphore,
                3,
                SharedAction::Mismatch {
                    permits: Some(2),
                    claim: Claim::semaphore(3),
                },
                true,
            ),
            (
                &semaphore,
                3,
                SharedAction::Mismatch {
                    permits: Some(2),
                    claim: Claim::semaphore(2),
                },
                false,
            ),
            (
                &semaphore,
                3,
                SharedAction::Mismatch {
                    permits: None,
                    claim: Claim::SHARED,
                },
                false,
            ),
            (&readers, 3, SharedAction::SeeShared { holders: 2 }, true),
            (&readers, 3, SharedAction::SeeShared { holders: 3 }, false),
            (
                &readers,
                3,
                SharedAction::SeeOwner {
                    owner: 1,
                    token: Some(4),
                },
                false,
            ),
            (
                &writer,
                3,
                SharedAction::SeeOwner {
                    owner: 1,
                    token: Some(4),
                },
                true,
            ),
        ];
        for (at, (before, client, action, allowed)) in table.into_iter().enumerate() {
            assert_eq!(
                before.step(client, action).is_some(),
                allowed,
                "row {at}: {action:?} by c{client} in {before:?}"
            );
        }
        let released = readers
            .step(1, SharedAction::Release)
            .expect("a holder releases");
        assert_eq!(released.holds.len(), 1, "the other reader keeps its hold");
        assert!(
            released.step(3, grant(5, Claim::SHARED)).is_none(),
            "a release ends the run: no later grant shares the old token"
        );
        let empty = semaphore
            .step(1, SharedAction::Release)
            .and_then(|state| state.step(2, SharedAction::Release))
            .expect("both release");
        assert_eq!(
            empty,
            SharedState {
                token_next_min: 6,
                permits: Declared::Unseen,
                ..SharedState::INITIAL
            }
        );
        assert!(
            empty.step(3, grant(6, Claim::semaphore(3))).is_some(),
            "a free name takes new permits"
        );
    }

    /// Seed 296481's lock `w3`, cut to its story (times in ms): c3's shared claim of 4 permits
    /// goes unanswered (its session expires at 100); c1's plain acquire waits behind it,
    /// unanswered; at c3's expiry the table hands c1 the lock; claims of 4 permits then hear
    /// `held_by c1`, not `permits_mismatch`, because c3 declared 4 and c1's wait kept the name
    /// in use. No answer needs c3 to hold, yet only c3's claim explains them.
    fn hand_over_after_an_expiry(with_c3_claim: bool) -> Vec<HistoryOp> {
        let op = |client, kind, claim, call_ms: u64, return_ms: Option<u64>, result| HistoryOp {
            client,
            op: kind,
            lock: "w3".into(),
            consistency: None,
            call_ns: call_ms * 1_000_000,
            return_ns: return_ms.map(|ms| ms * 1_000_000),
            result,
            index: None,
            claim,
        };
        let four = Claim {
            mode: Mode::Shared,
            permits: Some(4),
        };
        let mut history = Vec::new();
        if with_c3_claim {
            history.push(op(
                3,
                HistoryOpKind::Preempt,
                four,
                1,
                None,
                HistoryResult::Unknown,
            ));
        }
        history.extend([
            op(
                4,
                HistoryOpKind::Acquire,
                four,
                20,
                None,
                HistoryResult::Unknown,
            ),
            op(
                1,
                HistoryOpKind::Acquire,
                Claim::EXCLUSIVE,
                30,
                None,
                HistoryResult::Unknown,
            ),
            op(
                3,
                HistoryOpKind::Expire,
                Claim::EXCLUSIVE,
                100,
                Some(100),
                HistoryResult::Expired,
            ),
            op(
                5,
                HistoryOpKind::Preempt,
                four,
                110,
                Some(140),
                HistoryResult::HeldBy { owner: 1 },
            ),
            op(
                6,
                HistoryOpKind::Preempt,
                Claim::EXCLUSIVE,
                120,
                Some(130),
                HistoryResult::HeldBy { owner: 1 },
            ),
        ]);
        history
    }

    #[test]
    fn an_unknown_claim_that_declared_the_permits_explains_a_hand_over_after_its_expiry() {
        let report = check_history(&hand_over_after_an_expiry(true));
        assert!(
            report.passed(),
            "{:?}",
            report.violations.first().map(|v| v.to_string())
        );
    }

    /// Without c3's claim, nobody declared 4 permits before c1's plain grant did declare the
    /// name plain: the claim of 4 permits was owed `permits_mismatch`.
    #[test]
    fn without_that_claim_the_same_refusal_of_four_permits_is_a_violation() {
        let report = check_history(&hand_over_after_an_expiry(false));
        assert!(!report.passed(), "a refusal no declaration explains");
        let violation = report
            .violations
            .first()
            .expect("one violation")
            .to_string();
        assert!(violation.contains("c5 preempt"), "{violation}");
    }
}
