//! The nemesis schedule: which fault happens when, to whom, and for how long, drawn from the
//! seed before the run starts. Pure: no clock, no processes, no sockets.
//!
//! The same seed, cluster size, duration and nemesis list always give the same schedule
//! ([`plan`]), which `lockstep chaos --print-schedule` prints without running anything. What
//! the schedule cannot fix in advance is who leads when a fault begins: a fault aimed at "the
//! leader" is resolved at run time, and falls back to the server drawn for it here when no
//! leader can be found.
//!
//! Faults never overlap: each is applied, held, healed, and followed by a quiet gap. Kinds
//! are dealt like cards from a deck reshuffled whenever it runs out, so a run of at least as
//! many faults as enabled kinds applies every kind.

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::time::Duration;

/// One kind of fault, as named on the command line (`--nemesis kill,pause,...`).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum NemesisKind {
    /// SIGKILL one random server; restart it from its data directory when healed.
    Kill,
    /// SIGKILL the leader; restart it when healed.
    KillLeader,
    /// SIGKILL a random majority; restart them when healed.
    KillMajority,
    /// SIGKILL every server; restart them all when healed.
    KillAll,
    /// SIGSTOP one random server; SIGCONT when healed.
    Pause,
    /// SIGSTOP the leader; SIGCONT when healed.
    PauseLeader,
    /// Split the servers into two random groups that cannot reach each other.
    Partition,
    /// Cut the leader off from every other server.
    IsolateLeader,
    /// One-way: nothing one random server sends reaches some of the others.
    Cut,
    /// Every peer link of one random server is slowed down.
    Delay,
    /// Every peer link of one random server loses bytes, which breaks the connection they
    /// were on (TCP cannot skip a lost byte); new connections are made and lost again.
    Drop,
}

impl NemesisKind {
    pub const ALL: [NemesisKind; 11] = [
        NemesisKind::Kill,
        NemesisKind::KillLeader,
        NemesisKind::KillMajority,
        NemesisKind::KillAll,
        NemesisKind::Pause,
        NemesisKind::PauseLeader,
        NemesisKind::Partition,
        NemesisKind::IsolateLeader,
        NemesisKind::Cut,
        NemesisKind::Delay,
        NemesisKind::Drop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::KillLeader => "kill-leader",
            NemesisKind::KillMajority => "kill-majority",
            NemesisKind::KillAll => "kill-all",
            NemesisKind::Pause => "pause",
            NemesisKind::PauseLeader => "pause-leader",
            NemesisKind::Partition => "partition",
            NemesisKind::IsolateLeader => "isolate-leader",
            NemesisKind::Cut => "cut",
            NemesisKind::Delay => "delay",
            NemesisKind::Drop => "drop",
        }
    }

    /// How long a fault of this kind is held: kills long enough for an election without the
    /// victim, pauses longer than the peers' silence bound, network faults long enough for
    /// both sides to give up their links.
    fn hold_range_ms(self) -> (u64, u64) {
        match self {
            NemesisKind::Kill | NemesisKind::KillLeader => (1_000, 4_000),
            NemesisKind::KillMajority | NemesisKind::KillAll => (500, 3_000),
            NemesisKind::Pause | NemesisKind::PauseLeader => (500, 3_000),
            NemesisKind::Partition | NemesisKind::IsolateLeader | NemesisKind::Cut => {
                (1_000, 5_000)
            }
            NemesisKind::Delay | NemesisKind::Drop => (2_000, 5_000),
        }
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Groups accepted by [`parse_nemesis_list`] besides the kinds' own names.
pub const NEMESIS_GROUPS: [(&str, &[NemesisKind]); 4] = [
    ("all", &NemesisKind::ALL),
    (
        "kills",
        &[
            NemesisKind::Kill,
            NemesisKind::KillLeader,
            NemesisKind::KillMajority,
            NemesisKind::KillAll,
        ],
    ),
    ("pauses", &[NemesisKind::Pause, NemesisKind::PauseLeader]),
    (
        "network",
        &[
            NemesisKind::Partition,
            NemesisKind::IsolateLeader,
            NemesisKind::Cut,
            NemesisKind::Delay,
            NemesisKind::Drop,
        ],
    ),
];

/// Reads `kill,pause,partition` (kinds and groups, comma-separated) into the distinct kinds,
/// in [`NemesisKind::ALL`] order. `none` (alone) is the empty list: a run without faults.
pub fn parse_nemesis_list(text: &str) -> Result<Vec<NemesisKind>, String> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut kinds = std::collections::BTreeSet::new();
    for word in text.split(',').map(str::trim) {
        if word.is_empty() {
            return Err(format!("{text:?}: an empty nemesis name"));
        }
        if let Some(kind) = NemesisKind::ALL.iter().find(|kind| kind.name() == word) {
            kinds.insert(*kind);
        } else if let Some((_, group)) = NEMESIS_GROUPS.iter().find(|(name, _)| *name == word) {
            kinds.extend(group.iter().copied());
        } else {
            let known: Vec<&str> = NemesisKind::ALL.iter().map(|kind| kind.name()).collect();
            let groups: Vec<&str> = NEMESIS_GROUPS.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "unknown nemesis `{word}`; the kinds are {}, the groups {}, or `none`",
                known.join(", "),
                groups.join(", ")
            ));
        }
    }
    Ok(kinds.into_iter().collect())
}

/// Whom a fault strikes. Servers are numbered from 0 (`s1` is 0).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Target {
    /// These servers, drawn in advance.
    Servers(Vec<usize>),
    /// The leader when the fault begins; `fallback` if none can be found then.
    Leader { fallback: usize },
}

/// What a planned fault does.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action {
    /// SIGKILL, then a restart from disk at the heal.
    Kill(Target),
    /// SIGSTOP, then SIGCONT at the heal.
    Pause(Target),
    /// No peer link between the two groups carries anything, either way.
    Partition { groups: [Vec<usize>; 2] },
    /// The target can reach no other server, and none can reach it.
    Isolate(Target),
    /// Nothing `from` sends reaches any of `to`; the other way is untouched.
    Cut { from: usize, to: Vec<usize> },
    /// Every byte on `server`'s peer links, both ways, arrives `delay_ms` late.
    Delay { server: usize, delay_ms: u64 },
    /// Every chunk of bytes on `server`'s peer links, both ways, is lost with this
    /// probability (in thousandths), breaking its connection.
    Drop { server: usize, per_mille: u32 },
}

/// One fault of the schedule.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlannedFault {
    /// 1, 2, ...: how the fault log names it.
    pub number: u32,
    pub kind: NemesisKind,
    /// When it begins, from the start of the run.
    pub at: Duration,
    /// How long it lasts before it is healed.
    pub hold: Duration,
    pub action: Action,
}

impl PlannedFault {
    pub fn heal_at(&self) -> Duration {
        self.at + self.hold
    }
}

/// Quiet time at the start of a run (the cluster and clients settle in) and between faults.
const WARM_UP_MS: u64 = 2_000;
const GAP_MS: (u64, u64) = (500, 2_000);
/// Quiet time kept at the end of the run, after the last heal.
const QUIET_END_MS: u64 = 1_000;
/// Most faults one schedule holds (a day of the shortest faults is far fewer).
pub const FAULTS_MAX: usize = 100_000;

/// The schedule for a run of `duration` over `servers` servers with the given kinds, from
/// `seed`. Every fault ends at least a second before `duration`.
pub fn plan(
    seed: u64,
    servers: usize,
    duration: Duration,
    kinds: &[NemesisKind],
) -> Vec<PlannedFault> {
    assert!(servers >= 1, "a schedule needs a server");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let end_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut deck: Vec<NemesisKind> = Vec::new();
    let mut at_ms = WARM_UP_MS.min(end_ms / 5);
    // Bounded by FAULTS_MAX and by the run's end.
    while faults.len() < FAULTS_MAX {
        if deck.is_empty() {
            deck = kinds.to_vec();
            deck.shuffle(&mut rng);
        }
        let kind = deck.pop().expect("a refilled deck");
        let (hold_min, hold_max) = kind.hold_range_ms();
        let hold_ms = rng.random_range(hold_min..=hold_max);
        if at_ms + hold_ms + QUIET_END_MS > end_ms {
            break;
        }
        let number = u32::try_from(faults.len() + 1).expect("bounded by FAULTS_MAX");
        faults.push(PlannedFault {
            number,
            kind,
            at: Duration::from_millis(at_ms),
            hold: Duration::from_millis(hold_ms),
            action: draw_action(kind, servers, &mut rng),
        });
        at_ms += hold_ms + rng.random_range(GAP_MS.0..=GAP_MS.1);
    }
    faults
}

fn draw_action(kind: NemesisKind, servers: usize, rng: &mut ChaCha8Rng) -> Action {
    let one = rng.random_range(0..servers);
    let majority = servers / 2 + 1;
    match kind {
        NemesisKind::Kill => Action::Kill(Target::Servers(vec![one])),
        NemesisKind::KillLeader => Action::Kill(Target::Leader { fallback: one }),
        NemesisKind::KillMajority => {
            Action::Kill(Target::Servers(some_servers(servers, majority, rng)))
        }
        NemesisKind::KillAll => Action::Kill(Target::Servers((0..servers).collect())),
        NemesisKind::Pause => Action::Pause(Target::Servers(vec![one])),
        NemesisKind::PauseLeader => Action::Pause(Target::Leader { fallback: one }),
        NemesisKind::Partition => {
            // One server up to half of them (two equal halves leave no majority), and the
            // rest. A cluster of one has nothing to split.
            let minority = if servers == 1 {
                0
            } else {
                rng.random_range(1..=servers / 2)
            };
            let small = some_servers(servers, minority, rng);
            let large = (0..servers).filter(|s| !small.contains(s)).collect();
            Action::Partition {
                groups: [small, large],
            }
        }
        NemesisKind::IsolateLeader => Action::Isolate(Target::Leader { fallback: one }),
        NemesisKind::Cut => {
            let others: Vec<usize> = (0..servers).filter(|&s| s != one).collect();
            let count = if others.is_empty() {
                0
            } else {
                rng.random_range(1..=others.len())
            };
            let mut to = some_of(&others, count, rng);
            to.sort_unstable();
            Action::Cut { from: one, to }
        }
        NemesisKind::Delay => Action::Delay {
            server: one,
            delay_ms: rng.random_range(10..=150),
        },
        NemesisKind::Drop => Action::Drop {
            server: one,
            per_mille: rng.random_range(20..=200),
        },
    }
}

/// `count` distinct servers of `0..servers`, sorted.
fn some_servers(servers: usize, count: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let all: Vec<usize> = (0..servers).collect();
    let mut chosen = some_of(&all, count, rng);
    chosen.sort_unstable();
    chosen
}

fn some_of(items: &[usize], count: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    assert!(count <= items.len(), "choosing more than there is");
    let mut shuffled = items.to_vec();
    shuffled.shuffle(rng);
    shuffled.truncate(count);
    shuffled
}

/// `s1`, `s2`, ... for server indexes 0, 1, ...
pub fn server_name(index: usize) -> String {
    format!("s{}", index + 1)
}

/// `s1 s3` for server indexes 0 and 2.
pub(super) fn names(servers: &[usize]) -> String {
    servers
        .iter()
        .map(|&s| server_name(s))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Servers(servers) => f.write_str(&names(servers)),
            Target::Leader { fallback } => {
                write!(f, "the leader (else {})", server_name(*fallback))
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Kill(target) => write!(f, "SIGKILL {target}, restart at the heal"),
            Action::Pause(target) => write!(f, "SIGSTOP {target}, SIGCONT at the heal"),
            Action::Partition { groups } => {
                write!(f, "partition {} | {}", names(&groups[0]), names(&groups[1]))
            }
            Action::Isolate(target) => write!(f, "isolate {target}"),
            Action::Cut { from, to } => {
                write!(f, "cut {} -> {} (one way)", server_name(*from), names(to))
            }
            Action::Delay { server, delay_ms } => {
                write!(
                    f,
                    "delay {}'s peer links by {delay_ms}ms",
                    server_name(*server)
                )
            }
            Action::Drop { server, per_mille } => write!(
                f,
                "drop {}.{}% of chunks on {}'s peer links",
                per_mille / 10,
                per_mille % 10,
                server_name(*server)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let kinds = NemesisKind::ALL;
        let first = plan(7, 5, Duration::from_secs(120), &kinds);
        assert_eq!(first, plan(7, 5, Duration::from_secs(120), &kinds));
        assert_ne!(first, plan(8, 5, Duration::from_secs(120), &kinds));
        assert!(first.len() >= kinds.len(), "{} faults", first.len());
    }

    #[test]
    fn faults_never_overlap_and_end_a_second_before_the_run() {
        for seed in 0..50 {
            let faults = plan(seed, 3, Duration::from_secs(60), &NemesisKind::ALL);
            for pair in faults.windows(2) {
                assert!(pair[0].heal_at() < pair[1].at, "{pair:?}");
            }
            let last = faults.last().expect("a minute holds faults");
            assert!(last.heal_at() + Duration::from_secs(1) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn every_enabled_kind_is_dealt_once_per_round_of_the_deck() {
        // In the kinds' own order, which is how a sorted round comes out.
        let kinds = [
            NemesisKind::Kill,
            NemesisKind::Pause,
            NemesisKind::Partition,
        ];
        let faults = plan(3, 3, Duration::from_secs(300), &kinds);
        assert!(faults.len() >= 3 * kinds.len(), "{} faults", faults.len());
        for round in faults
            .chunks(kinds.len())
            .filter(|c| c.len() == kinds.len())
        {
            let mut dealt: Vec<NemesisKind> = round.iter().map(|f| f.kind).collect();
            dealt.sort();
            assert_eq!(dealt, kinds.to_vec());
        }
    }

    #[test]
    fn targets_are_real_servers_and_groups_split_the_cluster() {
        for servers in 1..=9 {
            for seed in 0..20 {
                for fault in plan(seed, servers, Duration::from_secs(100), &NemesisKind::ALL) {
                    match &fault.action {
                        Action::Kill(Target::Servers(s)) | Action::Pause(Target::Servers(s)) => {
                            assert!(!s.is_empty() && s.iter().all(|&i| i < servers));
                        }
                        Action::Partition { groups } => {
                            let mut all: Vec<usize> = groups.iter().flatten().copied().collect();
                            all.sort_unstable();
                            assert_eq!(all, (0..servers).collect::<Vec<_>>());
                            if servers > 1 {
                                assert!(!groups[0].is_empty() && !groups[1].is_empty());
                                assert!(groups[0].len() <= groups[1].len());
                            }
                        }
                        Action::Cut { from, to } => {
                            assert!(*from < servers && !to.contains(from));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn a_kill_of_a_majority_takes_a_majority() {
        for fault in plan(
            11,
            5,
            Duration::from_secs(300),
            &[NemesisKind::KillMajority],
        ) {
            let Action::Kill(Target::Servers(victims)) = fault.action else {
                panic!("a majority kill names its victims");
            };
            assert_eq!(victims.len(), 3);
        }
    }

    #[test]
    fn nemesis_lists_take_kinds_and_groups_and_refuse_the_rest() {
        assert_eq!(
            parse_nemesis_list("pause,kill").unwrap(),
            vec![NemesisKind::Kill, NemesisKind::Pause]
        );
        assert_eq!(
            parse_nemesis_list("all").unwrap(),
            NemesisKind::ALL.to_vec()
        );
        assert_eq!(parse_nemesis_list("kills,kill").unwrap().len(), 4);
        assert!(parse_nemesis_list("none").unwrap().is_empty());
        let error = parse_nemesis_list("kill,lightning").unwrap_err();
        assert!(
            error.contains("`lightning`") && error.contains("partition"),
            "{error}"
        );
        assert!(parse_nemesis_list("kill,,pause").is_err());
    }

    #[test]
    fn no_kinds_plan_no_faults() {
        assert!(plan(1, 3, Duration::from_secs(60), &[]).is_empty());
    }
}
