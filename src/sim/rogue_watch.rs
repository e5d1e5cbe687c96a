//! The rogue's attacks on watches and on modes ([`AttackKind::Watch`],
//! [`AttackKind::ModeClaim`]): added after the others, and drawn from the rogue's own stream
//! only when a mix gives them weight, so that a mix without them draws what it drew before.
//!
//! A watch line is no request: servers take it as a [`crate::node::watch::WatchInput`], keyed by
//! the connection it came on. A rogue's watch line goes either on a connection of its own,
//! closed right after (as if it opened one for the line), or on its one long-lived watch
//! connection ([`WATCH_CONNECTION`], always to the same server), where its own watches live,
//! their ids collide and their count passes the per-connection bound. It never reaches an honest watcher's connection: no
//! network user can write on another's TCP connection.

#[cfg(test)]
use super::AttackKind;
use super::Rogue;
use crate::node::watch::{WATCHES_PER_CONNECTION_MAX, WatchTarget};
use crate::node::{
    Claim, ClientId, ClientRequest, ClientSecret, LOCK_NAME_BYTES_MAX, LockName, LogIndex, Mode,
    Operation, PERMITS_MAX, RequestBody,
};
use rand::RngExt;
use std::sync::Arc;

/// The connection number of a rogue's long-lived watch connection: above every connection a
/// request line gets (those count the rogue's requests, at most `ROGUE_REQUESTS_MAX`).
pub const WATCH_CONNECTION: u32 = u32::MAX;
/// The watch ids a rogue uses on its watch connection: a few more than a connection may hold,
/// so that `too_many_watches` and `id_in_use` both come up. Honest watchers in the simulator
/// use id 1.
const WATCH_IDS_MAX: u64 = WATCHES_PER_CONNECTION_MAX as u64 + 4;

/// A rogue's watch line and the connection it goes on.
#[derive(Clone, Debug)]
pub struct RogueWatch {
    /// On the rogue's long-lived watch connection; else on a connection of its own, closed
    /// right after the line.
    pub long_lived: bool,
    pub line: RogueWatchLine,
}

/// A `watch` or an `unwatch`, as a rogue sends it.
#[derive(Clone, Debug)]
pub enum RogueWatchLine {
    Start {
        id: u64,
        target: WatchTarget,
        from_index: Option<LogIndex>,
        client: ClientId,
        secret: Option<ClientSecret>,
    },
    /// `unwatch` takes no credential: it names an id on its own connection.
    Stop { id: u64 },
}

impl Rogue {
    /// A watch line that must change nothing of anyone else's.
    pub(super) fn watch_attack(&mut self) -> Option<RogueWatch> {
        match self.rng.random_range(0..6) {
            0 => Some(self.watch_as_unknown_id()),
            1 => self.watch_as_forged_id(),
            2 => Some(self.unwatch_honest_ids()),
            3 => self.watch_bad_target(),
            _ => self.watch_own(),
        }
    }

    /// A watch of an honest name or prefix under an id no hello issued: `unknown_client`.
    fn watch_as_unknown_id(&mut self) -> RogueWatch {
        let client = match self.rng.random_range(0..4) {
            0 => 0,
            1 => u64::MAX,
            2 => (1 << 32) + self.rng.random_range(0..1_000u64),
            _ => self
                .client_id_seen
                .saturating_add(self.rng.random_range(1..=3)),
        };
        let secret = self.random_or_missing_secret();
        self.fresh_watch(ClientId(client), secret)
    }

    /// A watch of an honest name or prefix as an honest client, without its secret:
    /// `unauthorized` (or `unknown_client` from a server that has not applied its hello).
    fn watch_as_forged_id(&mut self) -> Option<RogueWatch> {
        let client = match self.pick_sniffed() {
            Some(sniffed) if self.rng.random_bool(0.7) => sniffed.client,
            _ if self.client_id_seen > 0 => {
                ClientId(self.rng.random_range(1..=self.client_id_seen))
            }
            _ => return None,
        };
        let secret = self.random_or_missing_secret();
        Some(self.fresh_watch(client, secret))
    }

    fn fresh_watch(&mut self, client: ClientId, secret: Option<ClientSecret>) -> RogueWatch {
        let target = self.honest_target();
        let from_index = self.wild_from_index();
        RogueWatch {
            long_lived: false,
            line: RogueWatchLine::Start {
                id: self.rng.random_range(1..=4),
                target,
                from_index,
                client,
                secret,
            },
        }
    }

    /// An `unwatch` of the ids honest watchers use (and a few others), on either connection:
    /// it stops at most a watch of the rogue's own.
    fn unwatch_honest_ids(&mut self) -> RogueWatch {
        let id = match self.rng.random_range(0..4) {
            0 | 1 => 1,
            2 => self.rng.random_range(1..=WATCH_IDS_MAX),
            _ => u64::MAX,
        };
        RogueWatch {
            long_lived: self.rng.random_bool(0.5),
            line: RogueWatchLine::Stop { id },
        }
    }

    /// Its own watch of an empty name or a name or prefix over the limit: `bad_target`.
    fn watch_bad_target(&mut self) -> Option<RogueWatch> {
        let own = *self.identities.first()?;
        let prefix = format!("r{}.", self.number);
        let long = |length: usize| format!("{prefix}{}", "x".repeat(length - prefix.len()));
        let target = match self.rng.random_range(0..4) {
            0 => WatchTarget::Lock(Arc::from("")),
            1 => WatchTarget::Lock(Arc::from(long(LOCK_NAME_BYTES_MAX + 1).as_str())),
            2 => WatchTarget::Prefix(long(LOCK_NAME_BYTES_MAX + 1)),
            _ => WatchTarget::Prefix(long(16 * LOCK_NAME_BYTES_MAX)),
        };
        let long_lived = self.rng.random_bool(0.5);
        let id = self.rng.random_range(1..=WATCH_IDS_MAX);
        Some(RogueWatch {
            long_lived,
            line: RogueWatchLine::Start {
                id,
                target,
                from_index: None,
                client: own.client,
                secret: Some(own.secret),
            },
        })
    }

    /// Its own watch, on its watch connection, with an id honest watchers use or one already
    /// live there, from index 0 or a huge one: served like anyone's, or `id_in_use`, or
    /// `too_many_watches` past the connection's bound.
    fn watch_own(&mut self) -> Option<RogueWatch> {
        let own = *self.identities.get(self.rng.random_range(0..2))?;
        let target = if self.rng.random_bool(0.2) {
            WatchTarget::Lock(self.own_lock())
        } else {
            self.honest_target()
        };
        let id = self.rng.random_range(1..=WATCH_IDS_MAX);
        let from_index = self.wild_from_index();
        Some(RogueWatch {
            long_lived: true,
            line: RogueWatchLine::Start {
                id,
                target,
                from_index,
                client: own.client,
                secret: Some(own.secret),
            },
        })
    }

    /// An honest lock by name, or a prefix of one (down to the empty prefix: every lock).
    fn honest_target(&mut self) -> WatchTarget {
        let lock = self.honest_lock();
        if self.rng.random_bool(0.5) {
            return WatchTarget::Lock(lock);
        }
        let mut cut = self.rng.random_range(0..=lock.len());
        while !lock.is_char_boundary(cut) {
            cut -= 1;
        }
        WatchTarget::Prefix(lock[..cut].to_string())
    }

    fn wild_from_index(&mut self) -> Option<LogIndex> {
        match self.rng.random_range(0..5) {
            0 => None,
            1 => Some(0),
            2 => Some(u64::MAX),
            3 => Some(self.index_seen.saturating_add(1_000)),
            _ => Some(self.index_seen),
        }
    }

    // ----- modes and permits -----

    /// A preempt or acquire with a mode and permits that must change nothing it may not.
    pub(super) fn mode_claim(&mut self) -> Option<ClientRequest> {
        match self.rng.random_range(0..6) {
            0 => self.forged_claim(),
            1 => self.unknown_id_claim(),
            2 => self.own_claim_out_of_bounds(),
            3 | 4 => self.own_claim(),
            _ => self.claim_under_reused_seq(),
        }
    }

    /// As an honest client without its secret, a claim on an honest lock with any mode and
    /// permits, those the lock declared give or take one among them: `unauthorized`.
    fn forged_claim(&mut self) -> Option<ClientRequest> {
        let mut request = self.forged_id()?;
        request.body = self.as_wild_claim(request.body);
        Some(request)
    }

    fn unknown_id_claim(&mut self) -> Option<ClientRequest> {
        let mut request = self.unknown_id()?;
        request.body = self.as_wild_claim(request.body);
        Some(request)
    }

    fn as_wild_claim(&mut self, body: RequestBody) -> RequestBody {
        let RequestBody::Op { client, secret, op } = body else {
            return body;
        };
        let claim = self.wild_claim();
        let op = self.claim_op(op.lock().clone(), claim, crate::node::ACQUIRE_WAIT_MS_MAX);
        RequestBody::Op { client, secret, op }
    }

    /// Any mode with permits none, 0, 1, 64, 65, `u32::MAX`, or a sniffed honest lock's
    /// permits give or take one.
    fn wild_claim(&mut self) -> Claim {
        let declared = self.pick_sniffed().and_then(|sniffed| match sniffed.op {
            Operation::Preempt { claim, .. } | Operation::Acquire { claim, .. } => claim.permits,
            _ => None,
        });
        let permits = match (self.rng.random_range(0..8), declared) {
            (0, _) => None,
            (1, _) => Some(0),
            (2, _) => Some(1),
            (3, _) => Some(PERMITS_MAX),
            (4, _) => Some(PERMITS_MAX + 1),
            (5, _) => Some(u32::MAX),
            (6, Some(permits)) => Some(permits.saturating_add(1)),
            (_, declared) => declared.map(|permits| permits.saturating_sub(1)),
        };
        let mode = match self.rng.random_bool(0.7) {
            true => Mode::Shared,
            false => Mode::Exclusive,
        };
        Claim { mode, permits }
    }

    /// A preempt, or an acquire with a wait up to `wait_ms_max`, of `lock` with `claim`.
    fn claim_op(&mut self, lock: LockName, claim: Claim, wait_ms_max: u64) -> Operation {
        if self.rng.random_bool(0.5) {
            Operation::Preempt { lock, claim }
        } else {
            let wait_ms = self.rng.random_range(0..=wait_ms_max);
            Operation::Acquire {
                lock,
                wait_ms,
                claim,
            }
        }
    }

    /// Its own claim with permits 0, 65 or `u32::MAX`: refused before the log (`bad_request`).
    fn own_claim_out_of_bounds(&mut self) -> Option<ClientRequest> {
        let own = *self.identities.first()?;
        let permits = match self.rng.random_range(0..3) {
            0 => 0,
            1 => PERMITS_MAX + 1,
            _ => u32::MAX,
        };
        let mode = match self.rng.random_bool(0.5) {
            true => Mode::Shared,
            false => Mode::Exclusive,
        };
        let claim = Claim {
            mode,
            permits: Some(permits),
        };
        // Its own locks only: a later attack reuses this seq with valid permits, which must
        // not make it a holder of an honest lock (that would be a client's right, and would
        // leave the honest history incomplete).
        let lock = self.own_lock();
        let op = self.claim_op(lock, claim, super::OWN_WAIT_MS_MAX);
        let seq = self.fresh_seq();
        let request = self.op_request(seq, own.client, Some(own.secret), op);
        self.remember_own(&request);
        Some(request)
    }

    /// Its own claim on its own locks: shared or exclusive, declaring 1, 2, 3 or 64 permits or
    /// none. Claims on its semaphore that name other permits than the declared ones get
    /// `permits_mismatch`; a shared claim on a lock it holds exclusively gets its exclusive
    /// grant again, never a shared one.
    fn own_claim(&mut self) -> Option<ClientRequest> {
        let own = *self.identities.first()?;
        let lock = if self.rng.random_bool(0.5) {
            Arc::from(format!("r{}.s", self.number).as_str())
        } else {
            self.own_lock()
        };
        let permits = match self.rng.random_range(0..5) {
            0 => None,
            1 => Some(1),
            2 => Some(2),
            3 => Some(3),
            _ => Some(PERMITS_MAX),
        };
        let mode = match self.rng.random_bool(0.7) {
            true => Mode::Shared,
            false => Mode::Exclusive,
        };
        let op = self.claim_op(lock, Claim { mode, permits }, super::OWN_WAIT_MS_MAX);
        let seq = self.fresh_seq();
        let request = self.op_request(seq, own.client, Some(own.secret), op);
        self.remember_own(&request);
        Some(request)
    }

    /// A claim under a seq already used for a claim of the same lock, with another mode or
    /// other permits: its own (`seq_reused`), or an honest client's, without its secret
    /// (`unauthorized`).
    fn claim_under_reused_seq(&mut self) -> Option<ClientRequest> {
        let own_claim = self.pick_own().filter(|request| {
            matches!(&request.body, RequestBody::Op { op, .. }
                if matches!(op, Operation::Preempt { .. } | Operation::Acquire { .. }))
        });
        if let Some(earlier) = own_claim.filter(|_| self.rng.random_bool(0.6)) {
            let RequestBody::Op { client, secret, op } = earlier.body else {
                unreachable!("filtered to claims");
            };
            let op = other_claim(&op);
            return Some(self.op_request(earlier.seq, client, secret, op));
        }
        let sniffed = self.pick_sniffed()?;
        let op = match &sniffed.op {
            Operation::Preempt { .. } | Operation::Acquire { .. } => other_claim(&sniffed.op),
            other => Operation::Preempt {
                lock: other.lock().clone(),
                claim: Claim::SHARED,
            },
        };
        let secret = self.random_or_missing_secret();
        Some(self.op_request(sniffed.seq, sniffed.client, secret, op))
    }
}

/// `op` (a preempt or an acquire) with the other mode, or other permits, and nothing else
/// changed.
fn other_claim(op: &Operation) -> Operation {
    let flip = |claim: Claim| match (claim.mode, claim.permits) {
        (Mode::Exclusive, permits) => Claim {
            mode: Mode::Shared,
            permits,
        },
        (Mode::Shared, None) => Claim {
            mode: Mode::Shared,
            permits: Some(2),
        },
        (Mode::Shared, Some(permits)) => Claim {
            mode: Mode::Shared,
            permits: Some(if permits <= 1 { 2 } else { permits - 1 }),
        },
    };
    match op {
        Operation::Preempt { lock, claim } => Operation::Preempt {
            lock: lock.clone(),
            claim: flip(*claim),
        },
        Operation::Acquire {
            lock,
            wait_ms,
            claim,
        } => Operation::Acquire {
            lock: lock.clone(),
            wait_ms: *wait_ms,
            claim: flip(*claim),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{rogue, welcome};
    use super::*;
    use crate::sim::rogue::{RogueSpec, Sent};

    fn only(kind: AttackKind) -> [f64; AttackKind::ALL.len()] {
        let mut mix = [0.0; AttackKind::ALL.len()];
        mix[AttackKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("a kind")] = 1.0;
        mix
    }

    #[test]
    fn a_mix_without_the_new_kinds_draws_what_it_drew_before_them() {
        // The draw of a kind uses the sum of the weights and walks them in order: weights of
        // 0 at the end change neither, so the stream is consumed exactly as before.
        let mut with = rogue(9, RogueSpec::EVEN_MIX);
        let mut all = rogue(9, RogueSpec::ALL_KINDS_MIX);
        let kinds = |rogue: &mut Rogue| (0..300).map(|_| rogue.draw_kind()).collect::<Vec<_>>();
        let drawn = kinds(&mut with);
        assert!(
            drawn
                .iter()
                .all(|kind| !matches!(kind, AttackKind::Watch | AttackKind::ModeClaim))
        );
        assert_ne!(drawn, kinds(&mut all), "the new kinds change the draw");
    }

    #[test]
    fn watch_attacks_cover_forged_ids_unwatches_bad_targets_and_the_connection_bound() {
        let mut rogue = rogue(17, only(AttackKind::Watch));
        let _ = rogue.next_attack();
        welcome(&mut rogue, 7);
        let _ = rogue.next_attack();
        welcome(&mut rogue, 8);
        rogue.sniff(
            ClientId(2),
            11,
            2,
            9,
            &Operation::Release {
                lock: Arc::from("w3"),
            },
        );
        let (mut forged, mut unknown, mut stops, mut bad, mut own_ids) = (0, 0, 0, 0, Vec::new());
        for _ in 0..600 {
            let Sent::Watch(watch) = rogue.next_attack().sent else {
                continue;
            };
            match watch.line {
                RogueWatchLine::Stop { .. } => stops += 1,
                RogueWatchLine::Start {
                    client,
                    secret,
                    target,
                    id,
                    ..
                } => {
                    let issued = |id: u64| ClientSecret::from_bytes([id as u8; 16]);
                    let own = [7, 8]
                        .into_iter()
                        .any(|id| client == ClientId(id) && secret == Some(issued(id)));
                    if own {
                        match &target {
                            WatchTarget::Lock(name) if name.is_empty() => bad += 1,
                            WatchTarget::Lock(name) if name.len() > LOCK_NAME_BYTES_MAX => bad += 1,
                            WatchTarget::Prefix(p) if p.len() > LOCK_NAME_BYTES_MAX => bad += 1,
                            _ if watch.long_lived => own_ids.push(id),
                            _ => panic!("its own good watches go on its watch connection"),
                        }
                    } else {
                        assert!(
                            !watch.long_lived,
                            "forged watches go on connections of their own"
                        );
                        if (1..=8).contains(&client.0) {
                            forged += 1;
                        } else {
                            unknown += 1;
                        }
                    }
                }
            }
        }
        assert!(forged > 0 && unknown > 0 && stops > 0 && bad > 0);
        own_ids.sort_unstable();
        own_ids.dedup();
        assert!(own_ids.contains(&1), "honest watchers' id 1");
        assert!(own_ids.len() > WATCHES_PER_CONNECTION_MAX, "past the bound");
    }

    #[test]
    fn mode_claims_name_every_permit_bound_and_reuse_seqs_with_another_claim() {
        let mut rogue = rogue(23, only(AttackKind::ModeClaim));
        let _ = rogue.next_attack();
        welcome(&mut rogue, 7);
        rogue.sniff(
            ClientId(2),
            11,
            2,
            9,
            &Operation::Preempt {
                lock: Arc::from("s1"),
                claim: Claim::semaphore(3),
            },
        );
        let mut permits = std::collections::BTreeSet::new();
        let mut seqs_by_own_lock = std::collections::BTreeMap::new();
        let mut reused_with_other_claim = 0;
        for _ in 0..800 {
            let Sent::Request(request) = rogue.next_attack().sent else {
                panic!("mode claims are requests");
            };
            let RequestBody::Op { client, op, .. } = request.body else {
                continue;
            };
            let claim = match &op {
                Operation::Preempt { claim, .. } | Operation::Acquire { claim, .. } => *claim,
                _ => continue,
            };
            permits.insert(claim.permits);
            if client == ClientId(7) {
                let key = (request.seq, op.lock().clone());
                if let Some(earlier) = seqs_by_own_lock.insert(key, claim)
                    && earlier != claim
                {
                    reused_with_other_claim += 1;
                }
            }
        }
        for expected in [0, 1, 2, 4, PERMITS_MAX, PERMITS_MAX + 1, u32::MAX] {
            assert!(
                permits.contains(&Some(expected)),
                "{expected} in {permits:?}"
            );
        }
        assert!(reused_with_other_claim > 0);
    }
}
