//! Random workload generation: each workload client draws its operations from its own seeded
//! stream, so the operations a client issues do not depend on network timing or on any other
//! client.

use super::scenario::WorkloadSpec;
use crate::node::{Claim, Consistency, LockName, LogIndex, Mode, Operation, Outcome};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;

/// Probability that a release targets a lock the client believes it holds (otherwise a random
/// one): keeps grants and releases alternating, which is where the interesting races are.
const RELEASE_OWN_LOCK_PROBABILITY: f64 = 0.8;

/// One client's share of the random workload.
pub struct WorkloadClient {
    pub client: u32,
    remaining: u32,
    rng: ChaCha8Rng,
    /// The locks this client believes it holds, with the fencing token of each grant.
    held: BTreeMap<LockName, LogIndex>,
    locks: Vec<LockName>,
    spec: WorkloadSpec,
}

impl WorkloadClient {
    /// Splits `spec.ops` among its clients as evenly as possible, earlier clients first.
    pub fn for_spec(
        spec: &WorkloadSpec,
        mut rng_for: impl FnMut(u32) -> ChaCha8Rng,
    ) -> Vec<WorkloadClient> {
        let count = spec.clients.len() as u32;
        assert!(count > 0, "a workload has at least one client");
        let locks: Vec<LockName> = (1..=spec.locks)
            .map(|k| LockName::from(format!("w{k}")))
            .collect();
        spec.clients
            .iter()
            .enumerate()
            .map(|(position, &client)| WorkloadClient {
                client,
                remaining: spec.ops / count + u32::from((position as u32) < spec.ops % count),
                rng: rng_for(client),
                held: BTreeMap::new(),
                locks: locks.clone(),
                spec: spec.clone(),
            })
            .collect()
    }

    /// The locks this client believes it holds, with their fencing tokens: what it writes to
    /// the fenced resource with.
    pub fn held(&self) -> impl Iterator<Item = (&LockName, LogIndex)> {
        self.held.iter().map(|(lock, token)| (lock, *token))
    }

    /// The client's session ended: it believes it holds nothing.
    pub fn forget_all(&mut self) {
        self.held.clear();
    }

    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Time to wait before the next operation.
    pub fn think(&mut self) -> Duration {
        let min = self.spec.think_min;
        let max = self.spec.think_max;
        min + Duration::from_nanos(
            self.rng
                .random_range(0..=crate::node::time::duration_nanos(max - min)),
        )
    }

    /// The next operation, or `None` when this client's share is used up.
    pub fn next_op(&mut self) -> Option<Operation> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mix = self.spec.mix;
        let total = mix.preempt + mix.release + mix.check + mix.acquire;
        let draw = self.rng.random_range(0.0..total);
        let random_lock = self.locks[self.rng.random_range(0..self.locks.len())].clone();
        let op = if draw < mix.preempt {
            let claim = self.draw_claim();
            Operation::Preempt {
                lock: random_lock,
                claim,
            }
        } else if draw < mix.preempt + mix.release {
            let own = (!self.held.is_empty() && self.rng.random_bool(RELEASE_OWN_LOCK_PROBABILITY))
                .then(|| {
                    let position = self.rng.random_range(0..self.held.len());
                    self.held.keys().nth(position).cloned()
                })
                .flatten();
            Operation::Release {
                lock: own.unwrap_or(random_lock),
            }
        } else if draw >= mix.preempt + mix.release + mix.check {
            // Only with an acquire weight: without one, no draw reaches here.
            let wait_ms = self.rng.random_range(0..=mix.acquire_wait_ms);
            let claim = self.draw_claim();
            Operation::Acquire {
                lock: random_lock,
                wait_ms,
                claim,
            }
        } else {
            let consistency = if self.rng.random_bool(mix.linearizable.clamp(0.0, 1.0)) {
                Consistency::Linearizable
            } else {
                Consistency::Local
            };
            Operation::Check {
                lock: random_lock,
                consistency,
            }
        };
        Some(op)
    }

    /// A preempt's or acquire's claim: shared (naming the mix's permits) for the mix's
    /// `shared` fraction. Draws nothing when that fraction is 0, so that workloads without
    /// modes draw exactly what they did before modes existed.
    fn draw_claim(&mut self) -> Claim {
        let mix = self.spec.mix;
        if mix.shared <= 0.0 || !self.rng.random_bool(mix.shared.min(1.0)) {
            return Claim::EXCLUSIVE;
        }
        Claim {
            mode: Mode::Shared,
            permits: mix.permits,
        }
    }

    /// Learns from an outcome which locks the client holds.
    pub fn observe(&mut self, op: &Operation, outcome: &Outcome) {
        match (op, outcome) {
            (
                Operation::Preempt { lock, .. } | Operation::Acquire { lock, .. },
                Outcome::Granted { token },
            ) => {
                self.held.insert(lock.clone(), *token);
            }
            (Operation::Release { lock }, Outcome::Released | Outcome::NotOwner)
            | (
                Operation::Preempt { lock, .. } | Operation::Acquire { lock, .. },
                Outcome::HeldBy { .. } | Outcome::TimedOut | Outcome::Cancelled,
            ) => {
                self.held.remove(lock);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Mix;
    use rand::SeedableRng;

    fn spec(clients: Vec<u32>, ops: u32) -> WorkloadSpec {
        WorkloadSpec {
            clients,
            ops,
            locks: 3,
            mix: Mix {
                preempt: 0.4,
                release: 0.4,
                check: 0.2,
                linearizable: 0.5,
                acquire: 0.0,
                acquire_wait_ms: 0,
                shared: 0.0,
                permits: None,
            },
            think_min: Duration::from_millis(10),
            think_max: Duration::from_millis(20),
        }
    }

    #[test]
    fn operations_are_shared_evenly_and_each_client_stops_at_its_share() {
        let mut clients = WorkloadClient::for_spec(&spec(vec![1, 2, 3], 10), |c| {
            ChaCha8Rng::seed_from_u64(u64::from(c))
        });
        let shares: Vec<u32> = clients.iter().map(WorkloadClient::remaining).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        let first = &mut clients[0];
        for _ in 0..4 {
            let op = first.next_op().expect("within its share");
            assert!(op.lock().starts_with('w'));
            let think = first.think();
            assert!(think >= Duration::from_millis(10) && think <= Duration::from_millis(20));
        }
        assert_eq!(first.next_op(), None);
    }

    #[test]
    fn a_client_draws_the_same_operations_from_the_same_stream() {
        let draw = || {
            let mut client =
                WorkloadClient::for_spec(&spec(vec![1], 50), |_| ChaCha8Rng::seed_from_u64(9))
                    .remove(0);
            (0..50)
                .map(|_| client.next_op().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }
}
