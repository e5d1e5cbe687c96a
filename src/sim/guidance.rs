//! Coverage guidance for the explorer: seeds whose run reached a rare protocol branch get
//! their configuration drawn again, mutated, for a share of later seeds, in the manner of a
//! coverage-guided fuzzer (AFL keeps the inputs that found new edges; FairFuzz aims at the
//! rarely hit ones).
//!
//! It must never make a run depend on threads or timing. So the explorer runs its range in
//! batches, and the [`Corpus`] (which configurations reached which rare branch, and how many
//! seeds reached each branch) changes only at the barrier between two batches, fed with the
//! batch's outcomes in seed order. A seed's configuration is then a pure function of the seed
//! and of the outcomes of every seed in earlier batches of the same range: the same
//! `--from/--seeds` (and `--shard`, whose slice is the range) give the same configurations
//! and verdicts with any `--jobs`. A shard guides itself from its own slice only.
//!
//! Guidance only chooses configurations the swarm could have drawn pieces of: a guided shape
//! is a corpus shape with the seed's own randomness, some of its knob groups replaced by the
//! seed's own draw. It never bends a rule the swarm keeps (the election spread floor, the
//! fault budget).

use super::rng::{Stream, Streams};
use super::swarm::{Shape, SwarmBounds, election_spread_floor_ms};
use crate::node::coverage::{Branch, Coverage};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Seeds per batch unless `--guidance-batch` says otherwise.
pub const BATCH_SEEDS_DEFAULT: u64 = 1_000;
/// The share of each batch after the first that guidance draws, in percent.
pub const GUIDED_PERCENT_DEFAULT: u32 = 30;
/// A branch is rare while fewer than this share of the seeds so far reached it, in percent...
const RARE_PERCENT: u64 = 5;
/// ... or while at most this many seeds did, so that a short run has rare branches too.
const RARE_SEEDS_MIN: u64 = 2;
/// Shapes kept per branch: the first seeds (in seed order) that reached it while it was rare.
const EXEMPLARS_PER_BRANCH: usize = 8;
/// A guided shape gains a fault only while it has fewer than this: mutations of mutations
/// must not grow a schedule without bound.
const GUIDED_FAULTS_MAX: usize = 40;

/// How the explorer guides, when it does. Part of what decides each seed's verdict, so shard
/// results merge only when it is equal.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidanceSettings {
    /// Seeds between two barriers; the corpus changes only at a barrier.
    pub batch_seeds: u64,
    /// The share of each batch after the first whose configuration guidance draws.
    pub guided_percent: u32,
}

impl Default for GuidanceSettings {
    fn default() -> GuidanceSettings {
        GuidanceSettings {
            batch_seeds: BATCH_SEEDS_DEFAULT,
            guided_percent: GUIDED_PERCENT_DEFAULT,
        }
    }
}

/// Where a guided seed's configuration came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guided {
    /// The corpus seed whose shape was mutated.
    pub parent: u64,
    /// The rare branch that parent reached, which this seed was drawn to reach again.
    pub target: String,
}

/// One configuration kept for a branch.
#[derive(Clone, Debug)]
struct Exemplar {
    seed: u64,
    shape: Shape,
}

/// What the explorer knows at a barrier: how many seeds reached each branch, and the shapes
/// of the first seeds that reached a branch while it was rare.
///
/// Calling contract: [`Corpus::record`] MUST be called at batch barriers only, once per seed,
/// in seed order; [`Corpus::guide`] reads it, and MAY be called from any thread in between.
#[derive(Clone, Debug)]
pub struct Corpus {
    seeds_recorded: u64,
    /// Per branch (in `Branch::ALL` order): seeds whose run took it at least once.
    seeds_reaching: Vec<u64>,
    exemplars: Vec<Vec<Exemplar>>,
    last_seed: Option<u64>,
}

impl Default for Corpus {
    fn default() -> Corpus {
        Corpus {
            seeds_recorded: 0,
            seeds_reaching: vec![0; Branch::ALL.len()],
            exemplars: vec![Vec::new(); Branch::ALL.len()],
            last_seed: None,
        }
    }
}

/// True when `reaching` seeds of `recorded` is few: see [`RARE_PERCENT`].
fn few(reaching: u64, recorded: u64) -> bool {
    reaching <= RARE_SEEDS_MIN || reaching.saturating_mul(100) < recorded * RARE_PERCENT
}

impl Corpus {
    /// True while `branch` has been reached, by few seeds.
    fn rare(&self, branch: Branch) -> bool {
        let reaching = self.seeds_reaching[branch as usize];
        reaching > 0 && few(reaching, self.seeds_recorded)
    }

    /// Adds one seed's outcome: the branches its run took, and its shape if it had one (a
    /// seed whose scenario did not come from the swarm can count but not be mutated).
    pub fn record(&mut self, seed: u64, coverage: &Coverage, shape: Option<&Shape>) {
        assert!(
            self.last_seed.is_none_or(|last| last < seed),
            "seed {seed} recorded out of seed order (last {:?})",
            self.last_seed
        );
        self.last_seed = Some(seed);
        // Rarity as it stood before this seed, so that a first reach always counts as rare.
        let rare_before = |corpus: &Corpus, branch: Branch| {
            few(
                corpus.seeds_reaching[branch as usize],
                corpus.seeds_recorded,
            )
        };
        for (branch, count) in coverage.iter() {
            if count == 0 {
                continue;
            }
            let kept = &self.exemplars[branch as usize];
            if let Some(shape) = shape
                && kept.len() < EXEMPLARS_PER_BRANCH
                && rare_before(self, branch)
            {
                self.exemplars[branch as usize].push(Exemplar {
                    seed,
                    shape: shape.clone(),
                });
            }
            self.seeds_reaching[branch as usize] += 1;
        }
        self.seeds_recorded += 1;
    }

    /// Seeds recorded so far.
    pub fn seeds_recorded(&self) -> u64 {
        self.seeds_recorded
    }

    /// The configuration guidance gives `seed`, or `None` if the seed keeps its own draw:
    /// for `100 - guided_percent` percent of seeds, and for every seed while no rare branch
    /// has a shape kept. A rare branch is chosen with weight inversely proportional to the
    /// seeds that reached it, then one of its shapes, then a mutation of that shape; all from
    /// the seed's own guidance stream.
    pub fn guide(
        &self,
        seed: u64,
        settings: GuidanceSettings,
        bounds: &SwarmBounds,
    ) -> Option<(Shape, Guided)> {
        let mut rng: ChaCha8Rng = Streams::new(seed).rng_for(Stream::Guidance);
        let share = f64::from(settings.guided_percent.min(100)) / 100.0;
        if !rng.random_bool(share) {
            return None;
        }
        // Weight 1/reaching, scaled to integers: the sum stays far below u64::MAX since there
        // are fewer than 128 branches and the scale is at most the seeds recorded.
        let weights: Vec<(Branch, u64)> = Branch::ALL
            .iter()
            .filter(|&&branch| self.rare(branch) && !self.exemplars[branch as usize].is_empty())
            .map(|&branch| {
                let reaching = self.seeds_reaching[branch as usize];
                (branch, (self.seeds_recorded / reaching).max(1))
            })
            .collect();
        let total: u64 = weights.iter().map(|(_, weight)| weight).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rng.random_range(0..total);
        let (target, _) = *weights
            .iter()
            .find(|(_, weight)| {
                let inside = pick < *weight;
                pick = pick.saturating_sub(*weight);
                inside
            })
            .expect("the pick is below the total");
        let kept = &self.exemplars[target as usize];
        let parent = &kept[rng.random_range(0..kept.len())];
        let shape = mutate(&parent.shape, seed, bounds, &mut rng);
        Some((
            shape,
            Guided {
                parent: parent.seed,
                target: target.name().to_string(),
            },
        ))
    }
}

/// A child of `parent` for `seed`: the parent's configuration with the seed's own simulation
/// randomness (network fates, workload, jitter), and up to two knob groups taken from the
/// seed's own swarm draw or, for the fault schedule, one fault added, dropped or moved.
/// Keeps the rules [`Shape::random`] keeps: servers within `bounds`, an election spread no
/// narrower than the latency allows, a bounded fault list.
pub fn mutate(parent: &Shape, seed: u64, bounds: &SwarmBounds, rng: &mut ChaCha8Rng) -> Shape {
    let donor = Shape::random(seed, bounds);
    let mut child = parent.clone();
    child.seed = seed;
    child.servers = child.servers.clamp(bounds.servers_min, bounds.servers_max);
    for _ in 0..rng.random_range(0..=2) {
        match rng.random_range(0..8) {
            0 => child.servers = donor.servers,
            1 => {
                child.latency_min_ms = donor.latency_min_ms;
                child.latency_spread_ms = donor.latency_spread_ms;
                child.tail = donor.tail;
                child.drop_permille = donor.drop_permille;
                child.duplicate_permille = donor.duplicate_permille;
            }
            2 => mutate_faults(&mut child, &donor, rng),
            3 => {
                // The workload's numbers belong together: ops follow from clients and think.
                child.clients = donor.clients;
                child.workload_ops = donor.workload_ops;
                child.locks = donor.locks;
                child.mix = donor.mix;
                child.linearizable_percent = donor.linearizable_percent;
                child.think_max_ms = donor.think_max_ms;
                child.acquire = donor.acquire;
                child.watches = donor.watches.clone();
            }
            4 => child.election_timeout_ms = donor.election_timeout_ms,
            5 => {
                child.append_batch = donor.append_batch;
                child.snapshot_entries = donor.snapshot_entries;
            }
            6 => {
                child.disk = donor.disk;
                child.buggify_permille = donor.buggify_permille;
            }
            _ => child.rogues = donor.rogues.clone(),
        }
    }
    let latency_max_ms = child.latency_min_ms + child.latency_spread_ms;
    let floor_ms = election_spread_floor_ms(latency_max_ms);
    child.election_timeout_ms.1 = child.election_timeout_ms.1.max(floor_ms);
    assert!(child.faults.len() <= GUIDED_FAULTS_MAX.max(parent.faults.len()));
    assert!((bounds.servers_min..=bounds.servers_max).contains(&child.servers));
    child
}

/// Adds one of the donor's faults, drops one, or moves one in time.
fn mutate_faults(child: &mut Shape, donor: &Shape, rng: &mut ChaCha8Rng) {
    match rng.random_range(0..3) {
        0 if !donor.faults.is_empty() && child.faults.len() < GUIDED_FAULTS_MAX => {
            let fault = donor.faults[rng.random_range(0..donor.faults.len())].clone();
            child.faults.push(fault);
        }
        1 if !child.faults.is_empty() => {
            let index = rng.random_range(0..child.faults.len());
            child.faults.remove(index);
        }
        _ if !child.faults.is_empty() => {
            let index = rng.random_range(0..child.faults.len());
            child.faults[index].at_permille = rng.random_range(0..1000);
        }
        _ => {}
    }
}

/// The first seed (lowest number) whose run took a branch, and whether guidance chose its
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstReach {
    pub branch: String,
    pub seed: u64,
    /// Set when the seed was guided.
    pub guided: Option<Guided>,
}

/// Per branch, the lowest seed that took it. Order independent (a minimum), so it is kept as
/// results arrive from any thread.
#[derive(Clone, Debug, Default)]
pub struct FirstReaches {
    firsts: Vec<Option<(u64, Option<Guided>)>>,
}

impl FirstReaches {
    /// Notes that `seed` (guided as `guided` says) took the branches `coverage` counts.
    pub fn note(&mut self, seed: u64, coverage: &Coverage, guided: Option<&Guided>) {
        if self.firsts.is_empty() {
            self.firsts = vec![None; Branch::ALL.len()];
        }
        for (branch, count) in coverage.iter() {
            let first = &mut self.firsts[branch as usize];
            if count > 0 && first.as_ref().is_none_or(|(known, _)| seed < *known) {
                *first = Some((seed, guided.cloned()));
            }
        }
    }

    /// Every branch reached, in `Branch::ALL` order.
    pub fn list(&self) -> Vec<FirstReach> {
        Branch::ALL
            .iter()
            .zip(&self.firsts)
            .filter_map(|(branch, first)| {
                let (seed, guided) = first.clone()?;
                Some(FirstReach {
                    branch: branch.name().to_string(),
                    seed,
                    guided,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage_of(branches: &[Branch]) -> Coverage {
        let mut coverage = Coverage::default();
        for &branch in branches {
            coverage.hit(branch);
        }
        coverage
    }

    /// A corpus of 100 seeds that all elected a leader, and one, seed 7, that also refused a
    /// vote to a candidate whose log was behind.
    fn corpus_with_one_rare_seed(bounds: &SwarmBounds) -> Corpus {
        let mut corpus = Corpus::default();
        for seed in 0..100 {
            let mut branches = vec![Branch::LeaderElected];
            if seed == 7 {
                branches.push(Branch::VoteRefusedLogBehind);
            }
            let shape = Shape::random(seed, bounds);
            corpus.record(seed, &coverage_of(&branches), Some(&shape));
        }
        corpus
    }

    #[test]
    fn guided_seeds_mutate_the_one_seed_that_reached_a_rare_branch() {
        let bounds = SwarmBounds::default();
        let corpus = corpus_with_one_rare_seed(&bounds);
        assert!(corpus.rare(Branch::VoteRefusedLogBehind));
        assert!(!corpus.rare(Branch::LeaderElected), "every seed reached it");
        let settings = GuidanceSettings::default();
        let guided: Vec<(u64, Shape, Guided)> = (1_000..2_000)
            .filter_map(|seed| {
                let (shape, guided) = corpus.guide(seed, settings, &bounds)?;
                Some((seed, shape, guided))
            })
            .collect();
        // 30% of 1,000 seeds, give or take the binomial spread.
        assert!((250..350).contains(&guided.len()), "{}", guided.len());
        let parent = Shape::random(7, &bounds);
        for (seed, shape, guided) in &guided {
            assert_eq!(guided.parent, 7);
            assert_eq!(guided.target, "vote.refused_log_behind");
            assert_eq!(shape.seed, *seed, "the seed's own simulation randomness");
            assert_ne!(
                shape,
                &Shape::random(*seed, &bounds),
                "not the seed's own draw"
            );
        }
        // Most children keep most of the parent: at most two knob groups change.
        let same_cluster = guided
            .iter()
            .filter(|(_, shape, _)| shape.servers == parent.servers)
            .count();
        assert!(same_cluster * 10 > guided.len() * 7, "{same_cluster}");
    }

    #[test]
    fn a_corpus_with_no_rare_branch_leaves_every_seed_its_own_draw() {
        let bounds = SwarmBounds::default();
        let empty = Corpus::default();
        assert!((0..200).all(|seed| {
            empty
                .guide(seed, GuidanceSettings::default(), &bounds)
                .is_none()
        }));
        let mut common = Corpus::default();
        for seed in 0..50 {
            let shape = Shape::random(seed, &bounds);
            common.record(seed, &coverage_of(&[Branch::LeaderElected]), Some(&shape));
        }
        assert!((0..200).all(|seed| {
            common
                .guide(seed, GuidanceSettings::default(), &bounds)
                .is_none()
        }));
    }

    #[test]
    fn a_seed_without_a_shape_counts_but_is_never_a_parent() {
        let bounds = SwarmBounds::default();
        let mut corpus = Corpus::default();
        corpus.record(0, &coverage_of(&[Branch::ApplyRejected]), None);
        for seed in 1..100 {
            let shape = Shape::random(seed, &bounds);
            corpus.record(seed, &coverage_of(&[Branch::LeaderElected]), Some(&shape));
        }
        assert_eq!(corpus.seeds_recorded(), 100);
        assert!(corpus.rare(Branch::ApplyRejected));
        assert!((0..200).all(|seed| {
            corpus
                .guide(seed, GuidanceSettings::default(), &bounds)
                .is_none()
        }));
    }

    #[test]
    #[should_panic(expected = "out of seed order")]
    fn recording_out_of_seed_order_is_a_bug() {
        let mut corpus = Corpus::default();
        corpus.record(5, &Coverage::default(), None);
        corpus.record(4, &Coverage::default(), None);
    }

    /// Mutations of mutations keep what the swarm promises: a cluster inside the bounds, an
    /// election spread a leader can be elected with, a bounded fault list, a valid scenario.
    #[test]
    fn mutated_shapes_keep_the_swarms_rules_over_generations() {
        let bounds = SwarmBounds {
            servers_min: 2,
            servers_max: 6,
            ..SwarmBounds::default()
        };
        let mut rng: ChaCha8Rng = Streams::new(99).rng_for(Stream::Guidance);
        let mut shape = Shape::random(1, &bounds);
        for generation in 0..300u64 {
            shape = mutate(&shape, 10_000 + generation, &bounds, &mut rng);
            let latency_max_ms = shape.latency_min_ms + shape.latency_spread_ms;
            assert!(
                shape.election_timeout_ms.1 >= 2 * latency_max_ms,
                "{generation}"
            );
            assert!((2..=6).contains(&shape.servers), "{generation}");
            assert!(shape.faults.len() <= GUIDED_FAULTS_MAX, "{generation}");
            if generation % 50 == 0 {
                let scenario = shape.build();
                assert_eq!(scenario.seed, 10_000 + generation);
                assert_eq!(scenario.cluster.servers, shape.servers);
            }
        }
    }

    #[test]
    fn the_lowest_seed_to_reach_a_branch_is_kept_whatever_order_results_arrive_in() {
        let mut firsts = FirstReaches::default();
        let guided = Guided {
            parent: 3,
            target: "apply.rejected".into(),
        };
        firsts.note(40, &coverage_of(&[Branch::ApplyRejected]), Some(&guided));
        firsts.note(
            12,
            &coverage_of(&[Branch::LeaderElected, Branch::ApplyRejected]),
            None,
        );
        firsts.note(30, &coverage_of(&[Branch::ApplyRejected]), Some(&guided));
        let list = firsts.list();
        assert_eq!(list.len(), 2);
        assert!(
            list.iter()
                .all(|reach| reach.seed == 12 && reach.guided.is_none())
        );
    }
}
