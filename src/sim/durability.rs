//! The `acknowledged_writes_survive` checker: no write a client was told succeeded is lost
//! while fewer than a majority of its copies were damaged on disk.
//!
//! This is the promise of protocol-aware recovery (issue 14; Alagappan et al., FAST 2018): a
//! server whose log is damaged repairs it from a leader rather than trusting what is left
//! (`Server`, "Repair of a damaged log"). The checker judges the end of a run against two
//! records kept along the way: which writes were acknowledged, at which log index and term,
//! and which servers' disks lost a copy of which entry to damage (the simulated disk reports
//! what each recovery dropped). A write whose copies were damaged on a majority of the
//! servers is excused: no protocol keeps data that most of its copies lost. Any other must:
//! - be what every live server that committed its index holds there, and
//! - still be held by some server, in its log or under its snapshot.
//!
//! It never panics on what it judges; a violation is a value. Nothing here iterates a hash
//! map.

use super::checkers::Violation;
use crate::node::{ClientId, LogIndex, RaftLog, ServerId, Term, Time};
use std::collections::{BTreeMap, BTreeSet};

pub const ACKNOWLEDGED_WRITES_SURVIVE: &str = "acknowledged_writes_survive";

/// Acknowledged writes and damaged copies, judged at the end of a run.
///
/// Calling contract: [`AcknowledgedWrites::observe_ack`] for every write a client learned the
/// outcome of (after the mutual-exclusion checker accepted it), with the index and term its
/// request committed at; [`AcknowledgedWrites::observe_damage`] for every recovery that
/// dropped entries; [`AcknowledgedWrites::check`] once, at the end.
#[derive(Clone, Debug, Default)]
pub struct AcknowledgedWrites {
    /// Per (index, term) of an acknowledged write: the first client told, and its seq.
    acknowledged: BTreeMap<(LogIndex, Term), (ClientId, u64)>,
    /// Per (index, term): the servers whose disk lost their copy of that entry to damage.
    damaged: BTreeMap<(LogIndex, Term), BTreeSet<ServerId>>,
}

/// One server at the end of a run, as the checker sees it.
#[derive(Clone, Copy, Debug)]
pub struct FinalReplica<'a> {
    pub id: ServerId,
    /// The running server's log, or a down server's durable one.
    pub log: &'a RaftLog,
    /// The commit index of a running server; `None` for one that is down.
    pub commit_index: Option<LogIndex>,
}

/// What [`AcknowledgedWrites::check`] judged.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Judged {
    /// Acknowledged writes checked.
    pub checked: u64,
    /// Acknowledged writes excused: a majority of servers lost their copy.
    pub excused: u64,
}

impl AcknowledgedWrites {
    pub fn new() -> AcknowledgedWrites {
        AcknowledgedWrites::default()
    }

    /// A client was told that its write `(client, seq)`, committed at `(index, term)`, took
    /// effect.
    pub fn observe_ack(&mut self, client: ClientId, seq: u64, index: LogIndex, term: Term) {
        assert!(index >= 1, "acknowledged writes: index 0 holds no write");
        self.acknowledged
            .entry((index, term))
            .or_insert((client, seq));
    }

    /// A recovery of `server`'s disk dropped these entries, each as (index, term).
    pub fn observe_damage(&mut self, server: ServerId, dropped: &[(LogIndex, Term)]) {
        for &copy in dropped {
            self.damaged.entry(copy).or_default().insert(server);
        }
    }

    /// Servers whose copy of the entry at `(index, term)` was damaged, in id order.
    pub fn damaged_copies(&self, index: LogIndex, term: Term) -> Vec<ServerId> {
        self.damaged
            .get(&(index, term))
            .map_or_else(Vec::new, |servers| servers.iter().copied().collect())
    }

    /// Judges every acknowledged write against the replicas at the end of the run, in a
    /// cluster of `servers_total` servers.
    pub fn check(
        &self,
        now: Time,
        servers_total: usize,
        replicas: &[FinalReplica],
    ) -> Result<Judged, Violation> {
        assert!(servers_total >= 1, "acknowledged writes: a cluster");
        let majority = servers_total / 2 + 1;
        let mut judged = Judged::default();
        for (&(index, term), &(client, seq)) in &self.acknowledged {
            let damaged = self.damaged_copies(index, term);
            if damaged.len() >= majority {
                judged.excused += 1;
                continue;
            }
            judged.checked += 1;
            let write = format!(
                "{client} seq {seq}, acknowledged as written at index {index} (term {term})"
            );
            let damage = describe_damage(&damaged, servers_total);
            for replica in replicas {
                let Some(commit_index) = replica.commit_index else {
                    continue;
                };
                if commit_index < index || index < replica.log.base_index() {
                    continue;
                }
                let holds = replica.log.term_at(index);
                if holds != Some(term) {
                    let holds = holds.map_or("nothing".to_string(), |t| format!("term {t}"));
                    let message = format!(
                        "{write}, is lost: {}, which committed through index {commit_index}, \
                         holds {holds} there; {damage}",
                        replica.id
                    );
                    return Err(Violation::new(ACKNOWLEDGED_WRITES_SURVIVE, now, message));
                }
            }
            let held = replicas.iter().any(|replica| {
                index <= replica.log.base_index() || replica.log.term_at(index) == Some(term)
            });
            if !held {
                let message = format!("{write}, is lost: no server holds it any more; {damage}");
                return Err(Violation::new(ACKNOWLEDGED_WRITES_SURVIVE, now, message));
            }
        }
        Ok(judged)
    }
}

fn describe_damage(damaged: &[ServerId], servers_total: usize) -> String {
    if damaged.is_empty() {
        return "no copy of it was damaged".to_string();
    }
    let names: Vec<String> = damaged.iter().map(ToString::to_string).collect();
    format!(
        "its copies were damaged on {} of {servers_total} servers ({}), fewer than a majority",
        damaged.len(),
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::log::log_of_terms;

    const S1: ServerId = ServerId(1);
    const S2: ServerId = ServerId(2);
    const S3: ServerId = ServerId(3);

    /// c1's write at index 3 of term 2: acknowledged, then s2's copy is damaged.
    fn one_write_damaged_on(servers: &[ServerId]) -> AcknowledgedWrites {
        let mut writes = AcknowledgedWrites::new();
        writes.observe_ack(ClientId(1), 4, 3, 2);
        for &server in servers {
            writes.observe_damage(server, &[(3, 2), (4, 2)]);
        }
        writes
    }

    #[test]
    fn a_write_every_committed_replica_holds_survives() {
        let writes = one_write_damaged_on(&[S2]);
        let whole = log_of_terms(&[1, 1, 2]);
        let short = log_of_terms(&[1, 1]);
        let replicas = [
            FinalReplica {
                id: S1,
                log: &whole,
                commit_index: Some(3),
            },
            FinalReplica {
                id: S2,
                log: &short,
                commit_index: Some(2),
            },
            FinalReplica {
                id: S3,
                log: &whole,
                commit_index: None,
            },
        ];
        let judged = writes.check(Time::ZERO, 3, &replicas).expect("it survives");
        assert_eq!(
            judged,
            Judged {
                checked: 1,
                excused: 0
            }
        );
    }

    /// The violation a repairing server that votes can cause: a leader without the write was
    /// elected and committed its own entry at the write's index.
    #[test]
    fn a_write_overwritten_at_its_index_is_reported_lost_naming_the_damage() {
        let writes = one_write_damaged_on(&[S2]);
        let overwritten = log_of_terms(&[1, 1, 3]);
        let replicas = [
            FinalReplica {
                id: S1,
                log: &overwritten,
                commit_index: Some(3),
            },
            FinalReplica {
                id: S2,
                log: &overwritten,
                commit_index: Some(3),
            },
        ];
        let violation = writes.check(Time::ZERO, 3, &replicas).unwrap_err();
        assert_eq!(violation.invariant, ACKNOWLEDGED_WRITES_SURVIVE);
        assert!(
            violation.message.contains("index 3 (term 2)"),
            "{}",
            violation.message
        );
        assert!(
            violation.message.contains("s1, which committed"),
            "{}",
            violation.message
        );
        assert!(
            violation.message.contains("damaged on 1 of 3 servers (s2)"),
            "{}",
            violation.message
        );
    }

    #[test]
    fn a_write_no_server_holds_any_more_is_reported_lost() {
        let writes = one_write_damaged_on(&[S2]);
        let short = log_of_terms(&[1, 1]);
        let replicas = [
            FinalReplica {
                id: S1,
                log: &short,
                commit_index: Some(2),
            },
            FinalReplica {
                id: S2,
                log: &short,
                commit_index: None,
            },
        ];
        let violation = writes.check(Time::ZERO, 3, &replicas).unwrap_err();
        assert!(
            violation.message.contains("no server holds it"),
            "{}",
            violation.message
        );
    }

    /// A snapshot past the write's index holds it: only committed entries are compacted.
    #[test]
    fn a_snapshot_covering_the_index_holds_the_write() {
        let writes = one_write_damaged_on(&[]);
        let compacted = RaftLog::rebased(5, 2, RaftLog::new());
        let replicas = [FinalReplica {
            id: S1,
            log: &compacted,
            commit_index: None,
        }];
        let judged = writes
            .check(Time::ZERO, 1, &replicas)
            .expect("under the snapshot");
        assert_eq!(judged.checked, 1);
    }

    /// Damage on a majority of the copies excuses the loss: no protocol keeps what most of its
    /// copies lost.
    #[test]
    fn a_write_damaged_on_a_majority_is_excused() {
        let writes = one_write_damaged_on(&[S2, S3]);
        let short = log_of_terms(&[1, 1]);
        let replicas = [FinalReplica {
            id: S1,
            log: &short,
            commit_index: Some(2),
        }];
        let judged = writes.check(Time::ZERO, 3, &replicas).expect("excused");
        assert_eq!(
            judged,
            Judged {
                checked: 0,
                excused: 1
            }
        );
        assert_eq!(writes.damaged_copies(3, 2), vec![S2, S3]);
    }
}
