//! One seeded ChaCha root per simulation, with a separate derived stream per subsystem.
//!
//! Each stream's seed is drawn from the root generator switched to a stream number that names
//! the subsystem (ChaCha's native stream selection), so a stream depends only on the scenario
//! seed and its own name: adding a fault knob, a server or a workload client leaves every other
//! stream's numbers untouched.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The subsystems that draw random numbers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stream {
    Network,
    Faults,
    /// The random workload of one client (1-based client number).
    Workload(u32),
    /// One server incarnation: election jitter. A restarted server gets a fresh stream.
    Server {
        number: u32,
        incarnation: u32,
    },
    /// One client: hello nonces.
    Client(u32),
    /// The explorer's choice of configuration and fault schedule for a seed.
    Swarm,
    /// One rogue client (1-based): its attacks, their timing and their targets.
    Rogue(u32),
    /// The fates (loss, duplication, latency) of rogue traffic, both ways, so that adding
    /// rogues leaves every honest message's fate as it was.
    RogueNetwork,
    /// The servers' disks: which unsynced batches tear at a crash and where, which records
    /// read back corrupt.
    Disk,
    /// One server incarnation's BUGGIFY decisions (`node::server::Buggify`), apart from its
    /// election jitter so that turning BUGGIFY on changes nothing else.
    Buggify {
        number: u32,
        incarnation: u32,
    },
    /// Every node's clock rate and offset (`clock: {drift}`), drawn once at the start.
    Clock,
    /// The latency of writes to the fenced resource, apart from the network's stream so that
    /// the writes change no message's fate.
    Resource,
    /// The explorer's coverage guidance for a seed: whether it is guided, and how
    /// (`sim::guidance`), apart from `Swarm` so that a seed's own draw stays what it was.
    Guidance,
    /// The explorer's watchers for a seed (`sim::swarm`), apart from `Swarm` for the same
    /// reason.
    Watch,
    /// The explorer's weights for the attack kinds added after watches (`sim::swarm`), apart
    /// from `Swarm` so that a seed's other draws stay what they were.
    RogueSwarm,
}

impl Stream {
    fn number(self) -> u64 {
        match self {
            Stream::Network => 1,
            Stream::Faults => 2,
            Stream::Workload(client) => (3 << 48) | u64::from(client),
            Stream::Server {
                number,
                incarnation,
            } => (4 << 48) | (u64::from(number) << 24) | u64::from(incarnation),
            Stream::Client(client) => (5 << 48) | u64::from(client),
            Stream::Swarm => 6 << 48,
            Stream::Rogue(rogue) => (7 << 48) | u64::from(rogue),
            Stream::RogueNetwork => 8 << 48,
            Stream::Disk => 9 << 48,
            Stream::Buggify {
                number,
                incarnation,
            } => (10 << 48) | (u64::from(number) << 24) | u64::from(incarnation),
            Stream::Clock => 11 << 48,
            Stream::Resource => 12 << 48,
            Stream::Guidance => 13 << 48,
            Stream::Watch => 14 << 48,
            Stream::RogueSwarm => 15 << 48,
        }
    }
}

/// The root of a simulation's randomness.
#[derive(Clone, Debug)]
pub struct Streams {
    root: ChaCha8Rng,
}

impl Streams {
    pub fn new(seed: u64) -> Streams {
        Streams {
            root: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The seed of `stream`'s generator.
    pub fn seed_for(&self, stream: Stream) -> u64 {
        let mut root = self.root.clone();
        root.set_stream(stream.number());
        root.next_u64()
    }

    /// A generator for `stream`.
    pub fn rng_for(&self, stream: Stream) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed_for(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_only_on_seed_and_name() {
        let a = Streams::new(7);
        let b = Streams::new(7);
        assert_eq!(a.seed_for(Stream::Network), b.seed_for(Stream::Network));
        assert_ne!(a.seed_for(Stream::Network), a.seed_for(Stream::Faults));
        assert_ne!(
            a.seed_for(Stream::Workload(1)),
            a.seed_for(Stream::Workload(2))
        );
        let first = Stream::Server {
            number: 1,
            incarnation: 0,
        };
        let restarted = Stream::Server {
            number: 1,
            incarnation: 1,
        };
        assert_ne!(a.seed_for(first), a.seed_for(restarted));
        assert_ne!(a.seed_for(Stream::Rogue(1)), a.seed_for(Stream::Rogue(2)));
        assert_ne!(a.seed_for(Stream::Rogue(1)), a.seed_for(Stream::Client(1)));
        assert_ne!(
            a.seed_for(Stream::RogueNetwork),
            a.seed_for(Stream::Network)
        );
        assert_ne!(a.seed_for(Stream::Disk), a.seed_for(Stream::Faults));
        assert_ne!(
            Streams::new(8).seed_for(Stream::Network),
            a.seed_for(Stream::Network)
        );
    }
}
