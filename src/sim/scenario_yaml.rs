//! Writing a [`Scenario`] back out as a scenario file.
//!
//! The explorer and the property tests print every failing case this way, so that
//! `lockstep run` replays it exactly: the written file must load back into an equal scenario
//! (the round-trip test below holds that for every shipped scenario).

use super::rogue::{AttackKind, RogueSpec};
use super::scenario::{
    Action, CrashTarget, Expect, FinalState, IsolateTarget, OpKind, RestartTarget, Scenario,
};
use crate::net::Endpoint;
use crate::node::{Consistency, Mode};
use std::fmt::Write as _;
use std::time::Duration;

/// A duration in the file syntax: whole milliseconds as `250ms`, anything finer as exact
/// fractional seconds.
pub fn duration_text(duration: Duration) -> String {
    if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}.{:09}s", duration.as_secs(), duration.subsec_nanos())
    }
}

/// A string as a double-quoted scalar. JSON escaping is valid YAML, but JSON leaves raw some
/// characters that YAML does not allow in a document (DEL, the C1 controls but NEL, U+FFFE,
/// U+FFFF; and a byte order mark, allowed only before a document): those become `\u` escapes,
/// or a name from a JSON scenario would make `to_yaml` write a file that does not load.
fn quoted(text: &str) -> String {
    let json = serde_json::to_string(text).expect("a string always serialises");
    let mut out = String::with_capacity(json.len());
    for character in json.chars() {
        if yaml_printable(character) {
            out.push(character);
        } else {
            let _ = write!(out, "\\u{:04X}", u32::from(character));
        }
    }
    out
}

/// Whether YAML 1.2 lets `character` stand for itself in a double-quoted scalar (its
/// `c-printable`, less the byte order mark). JSON escaping has already removed the C0 controls.
fn yaml_printable(character: char) -> bool {
    matches!(character,
        '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}'
        | '\u{10000}'..)
        && character != '\u{feff}'
}

fn names(endpoints: &[Endpoint]) -> String {
    endpoints
        .iter()
        .map(Endpoint::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An expectation as the file writes it (`{held_by: c1}`); reports show it the same way.
pub fn expect_text(expect: Expect) -> String {
    match expect {
        Expect::Granted => "granted".into(),
        Expect::HeldBy(n) => format!("{{held_by: c{n}}}"),
        Expect::Released => "released".into(),
        Expect::NotOwner => "not_owner".into(),
        Expect::Free => "free".into(),
        Expect::Owner(n) => format!("{{owner: c{n}}}"),
        Expect::Unknown => "unknown".into(),
        Expect::Answered => "answered".into(),
        Expect::SessionExpired => "session_expired".into(),
        Expect::TimedOut => "timeout".into(),
        Expect::Cancelled => "cancelled".into(),
        Expect::NotWaiting => "not_waiting".into(),
        Expect::PermitsMismatch => "permits_mismatch".into(),
        Expect::Shared => "shared".into(),
    }
}

/// The `rogues` line: clients, rate and every attack kind's weight, so that it loads back
/// into an equal spec.
pub fn rogues_text(rogues: &RogueSpec) -> String {
    // A kind added after watches is written only when it is on, so that the text of a mix
    // without it is what it was.
    let weights: Vec<String> = (AttackKind::ALL.iter().zip(rogues.mix).enumerate())
        .filter(|(at, (_, weight))| *at < AttackKind::KINDS_BEFORE_WATCHES || *weight > 0.0)
        .map(|(_, (kind, weight))| format!("{}: {weight}", kind.name()))
        .collect();
    let until = rogues
        .until
        .map(|until| format!(", until: {}", duration_text(until)))
        .unwrap_or_default();
    format!(
        "rogues: {{clients: {}, rate: {}/s, mix: {{{}}}{until}}}",
        rogues.clients,
        rogues.rate_per_second,
        weights.join(", ")
    )
}

fn action_text(action: &Action) -> String {
    match action {
        Action::Keepalive { client } => format!("client: c{client}, op: keepalive"),
        Action::Watch {
            client,
            target,
            from,
        } => {
            let mut text = match target {
                crate::node::watch::WatchTarget::Lock(lock) => {
                    format!("client: c{client}, op: watch, lock: {}", quoted(lock))
                }
                crate::node::watch::WatchTarget::Prefix(prefix) => {
                    format!("client: c{client}, op: watch, prefix: {}", quoted(prefix))
                }
            };
            if let Some(from) = from {
                let _ = write!(text, ", from: {from}");
            }
            text
        }
        Action::Write {
            client,
            lock,
            expect,
        } => {
            let mut text = format!("client: c{client}, op: write, lock: {}", quoted(lock));
            if let Some(expect) = expect {
                let _ = write!(text, ", expect: {}", expect.name());
            }
            text
        }
        Action::ClientOp {
            client,
            op,
            lock,
            consistency,
            timeout,
            expect,
            claim,
        } => {
            let op_name = super::scenario::op_name(*op);
            let mut text = format!("client: c{client}, op: {op_name}, lock: {}", quoted(lock));
            // Written only when not the default, so that scenarios without claims read as
            // before; the mode always, since `permits` alone reads as shared.
            if !claim.is_default() {
                let mode = match claim.mode {
                    Mode::Exclusive => "exclusive",
                    Mode::Shared => "shared",
                };
                let _ = write!(text, ", mode: {mode}");
            }
            if let Some(permits) = claim.permits {
                let _ = write!(text, ", permits: {permits}");
            }
            if *op == OpKind::Check {
                let level = match consistency {
                    Consistency::Local => "local",
                    Consistency::Linearizable => "linearizable",
                };
                let _ = write!(text, ", consistency: {level}");
            }
            if let OpKind::Acquire { wait_ms } = op {
                let wait = std::time::Duration::from_millis(*wait_ms);
                let _ = write!(text, ", wait: {}", duration_text(wait));
            }
            if let Some(timeout) = timeout {
                let _ = write!(text, ", timeout: {}", duration_text(*timeout));
            }
            if let Some(expect) = expect {
                let _ = write!(text, ", expect: {}", expect_text(*expect));
            }
            text
        }
        Action::Crash(CrashTarget::Server(id)) => format!("crash: {id}"),
        Action::Crash(CrashTarget::Leader) => "crash: leader".into(),
        Action::Crash(CrashTarget::All) => "crash: all".into(),
        Action::CrashInStep {
            server,
            after_effects,
            restart_after,
        } => {
            let mut text = format!("crash: {{node: {server}, after_effects: {after_effects}");
            if let Some(after) = restart_after {
                let _ = write!(text, ", restart_after: {}", duration_text(*after));
            }
            text.push('}');
            text
        }
        Action::Corrupt { server, entry } => format!("corrupt: {{node: {server}, entry: {entry}}}"),
        Action::Restart(RestartTarget::Server(id)) => format!("restart: {id}"),
        Action::Restart(RestartTarget::All) => "restart: all".into(),
        Action::Partition(groups) => {
            let groups: Vec<String> = groups.iter().map(|g| format!("[{}]", names(g))).collect();
            format!("partition: [{}]", groups.join(", "))
        }
        Action::Isolate(IsolateTarget::Node(endpoint)) => format!("isolate: {endpoint}"),
        Action::Isolate(IsolateTarget::Leader) => "isolate: leader".into(),
        Action::Cut { from, to } => format!("cut: {{from: {from}, to: [{}]}}", names(to)),
        Action::Heal => "heal: all".into(),
        Action::Network(change) => {
            let mut parts = Vec::new();
            let mut latency = Vec::new();
            if let Some(min) = change.latency_min {
                latency.push(format!("min: {}", duration_text(min)));
            }
            if let Some(max) = change.latency_max {
                latency.push(format!("max: {}", duration_text(max)));
            }
            if !latency.is_empty() {
                parts.push(format!("latency: {{{}}}", latency.join(", ")));
            }
            if let Some(drop) = change.drop {
                parts.push(format!("drop: {drop}"));
            }
            if let Some(duplicate) = change.duplicate {
                parts.push(format!("duplicate: {duplicate}"));
            }
            format!("network: {{{}}}", parts.join(", "))
        }
        Action::Pause { node, length } => {
            format!("pause: {{node: {node}, for: {}}}", duration_text(*length))
        }
        Action::ClockRate { node, rate_ppb } => format!(
            "clock: {{node: {node}, rate: {}}}",
            *rate_ppb as f64 / crate::sim::clock::RATE_ONE_PPB as f64
        ),
    }
}

impl Scenario {
    /// The scenario as a YAML scenario file that loads back into an equal scenario, except for
    /// each event's `index` (its position in the file, kept for messages): events are written
    /// in the order they run, so a file that lists them out of time order is renumbered.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "name: {}", quoted(&self.name));
        let _ = writeln!(out, "description: {}", quoted(&self.description));
        let _ = writeln!(out, "seed: {}", self.seed);
        let _ = writeln!(out, "duration: {}", duration_text(self.duration));
        let _ = writeln!(out, "settle: {}", duration_text(self.settle));
        let cluster = &self.cluster;
        let connect: Vec<String> = cluster
            .connect
            .iter()
            .map(|(c, s)| format!("c{c}: {s}"))
            .collect();
        let _ = write!(
            out,
            "cluster: {{servers: {}, clients: {}",
            cluster.servers, cluster.clients
        );
        if let Some(leader) = cluster.leader {
            let _ = write!(out, ", leader: {leader}");
        }
        if !connect.is_empty() {
            let _ = write!(out, ", connect: {{{}}}", connect.join(", "));
        }
        let _ = writeln!(out, "}}");
        let network = &self.network;
        let _ = write!(
            out,
            "network: {{latency: {{min: {}, max: {}",
            duration_text(network.latency_min),
            duration_text(network.latency_max)
        );
        if let Some(tail) = network.tail {
            let _ = write!(
                out,
                ", tail: {{probability: {}, max: {}}}",
                tail.probability,
                duration_text(tail.max)
            );
        }
        let _ = writeln!(
            out,
            "}}, drop: {}, duplicate: {}}}",
            network.drop, network.duplicate
        );
        if self.disk.any() {
            let _ = writeln!(
                out,
                "disk: {{torn_write: {}, corrupt: {}}}",
                self.disk.torn_write, self.disk.corrupt
            );
        }
        if let Some(chance) = self.buggify {
            let _ = writeln!(out, "buggify: {chance}");
        }
        if let Some(sessions) = self.sessions {
            let _ = writeln!(
                out,
                "sessions: {{ttl: {}, lock_delay: {}}}",
                duration_text(sessions.ttl),
                duration_text(sessions.lock_delay)
            );
        }
        if let Some(drift) = self.clock_drift {
            let _ = writeln!(out, "clock: {{drift: {drift}}}");
        }
        let timing = &self.timing;
        let _ = writeln!(
            out,
            "timing: {{election_timeout: {{min: {}, max: {}}}, heartbeat: {}, client_timeout: {}, \
             client_retry: {}, append_batch: {}{}}}",
            duration_text(timing.election_timeout_min),
            duration_text(timing.election_timeout_max),
            duration_text(timing.heartbeat_interval),
            duration_text(timing.client_timeout),
            duration_text(timing.client_retry),
            timing.append_batch,
            timing
                .snapshot_entries
                .map_or(String::new(), |entries| format!(
                    ", snapshot_entries: {entries}"
                ))
        );
        if self.events.is_empty() {
            let _ = writeln!(out, "events: []");
        } else {
            let _ = writeln!(out, "events:");
            for event in &self.events {
                let _ = writeln!(
                    out,
                    "  - {{at: {}, {}}}",
                    duration_text(event.at),
                    action_text(&event.action)
                );
            }
        }
        if let Some(workload) = &self.workload {
            let clients: Vec<String> = workload.clients.iter().map(|c| format!("c{c}")).collect();
            let mix = workload.mix;
            // Acquires only when drawn, so that older scenarios write back as they did.
            let acquire = if mix.acquire > 0.0 {
                let wait = Duration::from_millis(mix.acquire_wait_ms);
                format!(
                    ", acquire: {}, acquire_wait: {}",
                    mix.acquire,
                    duration_text(wait)
                )
            } else {
                String::new()
            };
            // Shared claims likewise only when drawn.
            let shared = match (mix.shared > 0.0, mix.permits) {
                (false, _) => String::new(),
                (true, None) => format!(", shared: {}", mix.shared),
                (true, Some(permits)) => format!(", shared: {}, permits: {permits}", mix.shared),
            };
            let _ = writeln!(
                out,
                "workload: {{clients: [{}], ops: {}, locks: {}, mix: {{preempt: {}, release: {}, \
                 check: {}, linearizable: {}{acquire}{shared}}}, think: {{min: {}, max: {}}}}}",
                clients.join(", "),
                workload.ops,
                workload.locks,
                mix.preempt,
                mix.release,
                mix.check,
                mix.linearizable,
                duration_text(workload.think_min),
                duration_text(workload.think_max)
            );
        }
        if let Some(rogues) = &self.rogues {
            let _ = writeln!(out, "{}", rogues_text(rogues));
        }
        if !self.expect_final.is_empty() {
            let finals: Vec<String> = self
                .expect_final
                .iter()
                .map(|(lock, state)| match state {
                    FinalState::Free => format!("{}: free", quoted(lock)),
                    FinalState::HeldBy(n) => format!("{}: c{n}", quoted(lock)),
                })
                .collect();
            let _ = writeln!(out, "expect_final: {{{}}}", finals.join(", "));
        }
        if !self.expect_violations.is_empty() {
            let names: Vec<&str> = self.expect_violations.iter().copied().collect();
            let _ = writeln!(out, "expect_violations: [{}]", names.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::{self, Format};
    use std::path::Path;

    /// Positions in the file are renumbered by writing (events come out sorted).
    fn renumbered(mut scenario: Scenario) -> Scenario {
        for (position, event) in scenario.events.iter_mut().enumerate() {
            event.index = position;
        }
        scenario
    }

    #[test]
    fn every_shipped_scenario_survives_a_round_trip_through_yaml() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for file in scenario::scenario_files(&directory).unwrap() {
            let original = scenario::load_file(&file).unwrap();
            let written = original.to_yaml();
            let reloaded = scenario::parse_str(&written, Format::Yaml, "written.yaml")
                .unwrap_or_else(|error| panic!("{}: {error}\n{written}", file.display()));
            assert_eq!(
                renumbered(reloaded),
                renumbered(original),
                "{}",
                file.display()
            );
        }
    }

    /// Found by the scenario fuzz target: a JSON scenario whose description held a DEL
    /// character loaded, but its YAML rendering did not.
    #[test]
    fn characters_yaml_does_not_print_are_escaped_and_survive_a_round_trip() {
        let awkward =
            "del \u{7f} c1 \u{80}\u{9f} nel \u{85} bom \u{feff} \u{fffe}\u{ffff} \u{1} \u{1f600}";
        let json = format!(
            r#"{{"name": {name}, "description": {name}, "duration": "1s",
                "cluster": {{"servers": 3, "clients": 1}},
                "events": [{{"at": "1ms", "client": "c1", "op": "preempt", "lock": {name}}}],
                "expect_final": {{{name}: "c1"}}}}"#,
            name = serde_json::to_string(awkward).unwrap()
        );
        let original = scenario::parse_str(&json, Format::Json, "awkward.json").unwrap();
        assert_eq!(original.name, awkward);
        let written = original.to_yaml();
        for character in [
            '\u{7f}', '\u{80}', '\u{9f}', '\u{feff}', '\u{fffe}', '\u{ffff}',
        ] {
            assert!(
                !written.contains(character),
                "{character:?} written raw:\n{written}"
            );
        }
        let reloaded = scenario::parse_str(&written, Format::Yaml, "written.yaml")
            .unwrap_or_else(|error| panic!("{error}\n{written}"));
        assert_eq!(renumbered(reloaded), renumbered(original));
    }

    #[test]
    fn durations_are_written_exactly() {
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            duration_text(Duration::from_nanos(1_000_000_001)),
            "1.000000001s"
        );
        let fine = Duration::from_nanos(2_500_123);
        assert_eq!(scenario::parse_duration(&duration_text(fine)), Some(fine));
    }
}
