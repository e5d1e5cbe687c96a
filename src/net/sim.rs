//! The seeded simulated network.
//!
//! It never moves a message itself: [`SimNetwork::transmit`] decides whether a message is lost
//! and with which delays its copies arrive; the simulator schedules the deliveries. Reordering
//! follows from random latency. Connectivity (partitions, isolation, one-way cuts) is checked
//! both when a message is sent and again when it would arrive, so a partition also catches
//! messages already in flight.
//!
//! All randomness comes from the stream the simulator hands in; nothing here may read a clock.

use crate::node::ServerId;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// A node on the simulated network: a server, a scenario client `cN` or a rogue client `rN`
/// (both 1-based). A rogue bypasses `node::Client` and sends hostile requests straight to the
/// servers (`sim::rogue`).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub enum Endpoint {
    Server(ServerId),
    Client(u32),
    Rogue(u32),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Server(id) => write!(f, "{id}"),
            Endpoint::Client(n) => write!(f, "c{n}"),
            Endpoint::Rogue(n) => write!(f, "r{n}"),
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Endpoint> for String {
    fn from(endpoint: Endpoint) -> String {
        endpoint.to_string()
    }
}

/// An occasional much slower delivery: with `probability`, latency is drawn from
/// `[latency_max, max]` instead.
#[derive(Copy, Clone, PartialEq, Debug, Serialize)]
pub struct LatencyTail {
    pub probability: f64,
    #[serde(with = "crate::sim::duration_ms")]
    pub max: Duration,
}

/// Per-message fault parameters.
#[derive(Copy, Clone, PartialEq, Debug, Serialize)]
pub struct NetworkParams {
    #[serde(with = "crate::sim::duration_ms")]
    pub latency_min: Duration,
    #[serde(with = "crate::sim::duration_ms")]
    pub latency_max: Duration,
    pub tail: Option<LatencyTail>,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice (each copy with its own latency).
    pub duplicate: f64,
}

impl Default for NetworkParams {
    fn default() -> NetworkParams {
        NetworkParams {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(10),
            tail: None,
            drop: 0.0,
            duplicate: 0.0,
        }
    }
}

/// What happens to one message.
#[derive(Clone, PartialEq, Debug)]
pub enum Transmission {
    /// Sender and receiver cannot talk (partition, isolation, cut).
    Blocked,
    /// Lost at random.
    Dropped,
    /// Arrives after `delay`, and a duplicate after `duplicate_delay` if one was made.
    Delivered {
        delay: Duration,
        duplicate_delay: Option<Duration>,
    },
}

#[derive(Clone, Debug)]
pub struct SimNetwork {
    params: NetworkParams,
    rng: ChaCha8Rng,
    /// Partition groups: endpoints in different groups cannot talk. Unlisted endpoints talk to all.
    group_of: BTreeMap<Endpoint, usize>,
    /// Endpoints that can talk to nobody.
    isolated: BTreeSet<Endpoint>,
    /// One-way cuts: (from, to) pairs that drop everything.
    cuts: BTreeSet<(Endpoint, Endpoint)>,
}

impl SimNetwork {
    pub fn new(params: NetworkParams, rng_seed: u64) -> SimNetwork {
        assert_valid(&params);
        SimNetwork {
            params,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            group_of: BTreeMap::new(),
            isolated: BTreeSet::new(),
            cuts: BTreeSet::new(),
        }
    }

    pub fn params(&self) -> &NetworkParams {
        &self.params
    }

    /// Changes the per-message parameters from now on.
    pub fn set_params(&mut self, params: NetworkParams) {
        assert_valid(&params);
        self.params = params;
    }

    /// Splits the listed endpoints into groups that cannot talk to each other, replacing any
    /// earlier partition. Isolations and cuts stay.
    pub fn partition(&mut self, groups: &[Vec<Endpoint>]) {
        self.group_of.clear();
        for (group, members) in groups.iter().enumerate() {
            for &member in members {
                let previous = self.group_of.insert(member, group);
                assert!(
                    previous.is_none(),
                    "{member} listed in two partition groups"
                );
            }
        }
    }

    pub fn isolate(&mut self, endpoint: Endpoint) {
        self.isolated.insert(endpoint);
    }

    /// Drops everything sent from `from` to each of `to` (one way).
    pub fn cut(&mut self, from: Endpoint, to: &[Endpoint]) {
        for &target in to {
            self.cuts.insert((from, target));
        }
    }

    /// Removes every partition, isolation and cut.
    pub fn heal(&mut self) {
        self.group_of.clear();
        self.isolated.clear();
        self.cuts.clear();
    }

    /// True when no partition, isolation or cut is in force.
    pub fn is_healed(&self) -> bool {
        self.group_of.is_empty() && self.isolated.is_empty() && self.cuts.is_empty()
    }

    pub fn can_deliver(&self, from: Endpoint, to: Endpoint) -> bool {
        if from == to {
            return true;
        }
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return false;
        }
        if self.cuts.contains(&(from, to)) {
            return false;
        }
        match (self.group_of.get(&from), self.group_of.get(&to)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Decides the fate of one message sent now from `from` to `to`.
    ///
    /// Draws the same number of random values whatever the connectivity, so that a partition
    /// does not reshuffle the fate of every later message.
    pub fn transmit(&mut self, from: Endpoint, to: Endpoint) -> Transmission {
        let deliverable = self.can_deliver(from, to);
        fate(&mut self.rng, &self.params, deliverable)
    }

    /// [`SimNetwork::transmit`] with the fate drawn from `rng` instead of the network's own
    /// stream: the same parameters and connectivity, but traffic the caller keeps apart (rogue
    /// clients') leaves the fates of every other message exactly as they were.
    pub fn transmit_drawing_from(
        &self,
        rng: &mut ChaCha8Rng,
        from: Endpoint,
        to: Endpoint,
    ) -> Transmission {
        fate(rng, &self.params, self.can_deliver(from, to))
    }
}

/// One message's fate. Draws the same values whether or not it can be delivered.
fn fate(rng: &mut ChaCha8Rng, params: &NetworkParams, deliverable: bool) -> Transmission {
    let lost = rng.random_bool(params.drop);
    let duplicated = rng.random_bool(params.duplicate);
    let delay = latency(rng, params);
    let duplicate_delay = latency(rng, params);
    if !deliverable {
        return Transmission::Blocked;
    }
    if lost {
        return Transmission::Dropped;
    }
    Transmission::Delivered {
        delay,
        duplicate_delay: duplicated.then_some(duplicate_delay),
    }
}

fn latency(rng: &mut ChaCha8Rng, params: &NetworkParams) -> Duration {
    let in_tail = rng.random_bool(params.tail.map_or(0.0, |tail| tail.probability));
    let (low, high) = match params.tail {
        Some(tail) if in_tail => (params.latency_max, tail.max.max(params.latency_max)),
        _ => (params.latency_min, params.latency_max),
    };
    let span = crate::node::time::duration_nanos(high - low);
    low + Duration::from_nanos(rng.random_range(0..=span))
}

fn assert_valid(params: &NetworkParams) {
    assert!(
        params.latency_min <= params.latency_max,
        "network: latency min above max"
    );
    assert!(
        (0.0..=1.0).contains(&params.drop),
        "network: drop probability outside [0, 1]"
    );
    assert!(
        (0.0..=1.0).contains(&params.duplicate),
        "network: duplicate probability outside [0, 1]"
    );
    if let Some(tail) = params.tail {
        assert!(
            (0.0..=1.0).contains(&tail.probability),
            "network: tail probability outside [0, 1]"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> Endpoint {
        Endpoint::Server(ServerId(n))
    }

    fn c(n: u32) -> Endpoint {
        Endpoint::Client(n)
    }

    #[test]
    fn a_partition_splits_listed_endpoints_and_leaves_unlisted_ones_connected() {
        let mut net = SimNetwork::new(NetworkParams::default(), 1);
        net.partition(&[vec![s(1), s(2)], vec![s(3), c(1)]]);
        assert!(net.can_deliver(s(1), s(2)));
        assert!(!net.can_deliver(s(1), s(3)));
        assert!(!net.can_deliver(c(1), s(2)));
        assert!(net.can_deliver(c(1), s(3)));
        assert!(
            net.can_deliver(s(4), s(1)) && net.can_deliver(s(3), s(4)),
            "s4 is unlisted"
        );
        net.heal();
        assert!(net.can_deliver(s(1), s(3)));
        assert!(net.is_healed());
    }

    #[test]
    fn a_cut_is_one_way_and_isolation_is_total() {
        let mut net = SimNetwork::new(NetworkParams::default(), 1);
        net.cut(s(1), &[s(2), s(3)]);
        assert!(!net.can_deliver(s(1), s(2)));
        assert!(
            net.can_deliver(s(2), s(1)),
            "the reverse direction still works"
        );
        net.isolate(s(4));
        assert!(!net.can_deliver(s(4), s(5)) && !net.can_deliver(c(2), s(4)));
        assert_eq!(net.transmit(s(4), s(5)), Transmission::Blocked);
    }

    #[test]
    fn drop_and_duplicate_rates_follow_their_probabilities_and_latency_stays_in_range() {
        let params = NetworkParams {
            latency_min: Duration::from_millis(2),
            latency_max: Duration::from_millis(9),
            tail: None,
            drop: 0.2,
            duplicate: 0.1,
        };
        let mut net = SimNetwork::new(params, 42);
        let (mut dropped, mut duplicated) = (0, 0);
        for _ in 0..10_000 {
            match net.transmit(s(1), s(2)) {
                Transmission::Dropped => dropped += 1,
                Transmission::Delivered {
                    delay,
                    duplicate_delay,
                } => {
                    assert!(delay >= params.latency_min && delay <= params.latency_max);
                    duplicated += usize::from(duplicate_delay.is_some());
                }
                Transmission::Blocked => panic!("nothing is partitioned"),
            }
        }
        assert!(
            (1_800..2_200).contains(&dropped),
            "dropped {dropped} of 10000 at p=0.2"
        );
        assert!(
            (600..1_000).contains(&duplicated),
            "duplicated {duplicated} of ~8000 at p=0.1"
        );
    }

    #[test]
    fn the_long_tail_stretches_some_latencies_beyond_the_maximum() {
        let params = NetworkParams {
            tail: Some(LatencyTail {
                probability: 0.5,
                max: Duration::from_millis(500),
            }),
            ..NetworkParams::default()
        };
        let mut net = SimNetwork::new(params, 7);
        let slow = (0..1_000)
            .filter(|_| match net.transmit(s(1), s(2)) {
                Transmission::Delivered { delay, .. } => delay > params.latency_max,
                _ => false,
            })
            .count();
        assert!(
            (350..650).contains(&slow),
            "{slow} of 1000 in the tail at p=0.5"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let params = NetworkParams {
            drop: 0.3,
            duplicate: 0.3,
            ..NetworkParams::default()
        };
        let mut a = SimNetwork::new(params, 9);
        let mut b = SimNetwork::new(params, 9);
        for _ in 0..100 {
            assert_eq!(a.transmit(s(1), c(1)), b.transmit(s(1), c(1)));
        }
    }
}
