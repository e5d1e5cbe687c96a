//! `lockstep status --servers A,B,C`: one row per server, as `etcdctl endpoint status -w table`
//! prints them: id, address, role, term, the leader it knows, commit and applied index, log
//! entries, lag behind the leader, uptime. `--json` prints the same as one JSON object.
//!
//! Every listed server is asked at once (`lockstep::client::server_status`, one thread each),
//! so that one silent server costs one timeout, not one per server. An unreachable server gets
//! a row that says so, never an abort. It only asks and prints: the answers come from the
//! servers' `status` request (docs/PROTOCOL.md).
//!
//! **Lag** is the leader's commit index minus this server's applied index (0 if the server is
//! ahead): how many committed entries the server has yet to apply, as the leader's answer
//! shows them. The answers are taken a few milliseconds apart, so a busy cluster shows a few
//! entries of lag on healthy servers too. Without an answer from a leader, lag is unknown.

use crate::cli::client::{ServerList, TlsFlags, parse_server_list, parse_timeout};
use clap::Args;
use lockstep::client::{StatusReport, server_status};
use lockstep::net::protocol::role_name;
use lockstep::node::{Role, ServerId};
use serde_json::{Value, json};
use std::time::Duration;

/// Every server answered, and one of them leads.
pub const EXIT_HEALTHY: u8 = 0;
/// At least one server did not answer; its row says why.
pub const EXIT_UNREACHABLE: u8 = 1;
/// Bad flags (an unusable address, TLS file or timeout).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Every server answered, but none of them leads (an election, or no majority).
pub const EXIT_NO_LEADER: u8 = 3;

#[derive(Args)]
#[command(after_help = "Examples:
  lockstep status --servers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  lockstep status --servers 127.0.0.1:7001,127.0.0.1:7002 --json
  lockstep status --servers 10.0.0.1:7001,10.0.0.2:7001 --tls-ca tls/ca.pem

Columns: id; address (as listed); role (follower, pre_candidate, candidate, leader); term; \
leader (the leader this server knows, - if none); commit index (the highest index it knows \
committed); applied index (applied to its lock table); log entries (held in its log after its \
snapshot); lag (the leader's commit index minus this server's applied index: committed \
entries it has yet to apply, 0 if none; - without an answer from a leader. The servers are \
asked at once but answer a few milliseconds apart, so a busy cluster shows a little lag on \
healthy servers); uptime (of the server process).

A server that does not answer within --timeout gets a row saying unreachable, and the reason \
is printed under the table. Status asks for no client credential: it tells nothing about \
locks or clients.

Exit codes: 0 every server answered and one of them is the leader; 1 at least one server did \
not answer (its row says unreachable); 2 bad flags; 3 every server answered but none leads \
(an election in progress, or no majority).")]
pub struct StatusArgs {
    /// The servers to ask, comma-separated client addresses; one row each, in this order.
    #[arg(long, value_name = "HOST:PORT,...", value_parser = parse_server_list)]
    pub servers: ServerList,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// How long each server may take to answer, connecting included.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// One listed server and what it answered.
#[derive(Clone, Debug)]
pub struct Row {
    pub address: String,
    pub answer: Result<StatusReport, String>,
}

/// The rows, with the leader found among them.
#[derive(Clone, Debug)]
pub struct Summary {
    pub rows: Vec<Row>,
    /// The row of the server that leads: of those that say they lead, the one in the highest
    /// term (a deposed leader may not know it yet).
    pub leader: Option<usize>,
}

impl Summary {
    pub fn new(rows: Vec<Row>) -> Summary {
        let leader = rows
            .iter()
            .enumerate()
            .filter_map(|(at, row)| row.answer.as_ref().ok().map(|report| (at, report)))
            .filter(|(_, report)| report.status.role == Role::Leader)
            .max_by_key(|(_, report)| report.term)
            .map(|(at, _)| at);
        Summary { rows, leader }
    }

    fn leader_report(&self) -> Option<&StatusReport> {
        self.leader
            .and_then(|at| self.rows[at].answer.as_ref().ok())
    }

    /// The leader's commit index minus `report`'s applied index, 0 if it is ahead; `None`
    /// without a leader's answer.
    pub fn lag(&self, report: &StatusReport) -> Option<u64> {
        let leader = self.leader_report()?;
        Some(
            leader
                .status
                .commit_index
                .saturating_sub(report.applied_index),
        )
    }

    pub fn exit_code(&self) -> u8 {
        if self.rows.iter().any(|row| row.answer.is_err()) {
            EXIT_UNREACHABLE
        } else if self.leader.is_none() {
            EXIT_NO_LEADER
        } else {
            EXIT_HEALTHY
        }
    }
}

/// `3d04h`, `2h05m`, `4m09s`, `12.3s`: the two largest units, as people read an uptime.
pub fn format_uptime(uptime_ms: u64) -> String {
    let seconds = uptime_ms / 1_000;
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{:02}s", seconds % 60)
    } else {
        format!("{}.{}s", seconds, uptime_ms % 1_000 / 100)
    }
}

fn leader_name(leader: Option<ServerId>) -> String {
    leader.map_or_else(|| "-".to_string(), |leader| leader.to_string())
}

/// The table, then a line naming the leader (or saying there is none) and one line per
/// server that did not answer.
pub fn render_table(summary: &Summary) -> String {
    use tabled::builder::Builder;
    use tabled::settings::Style;
    let mut builder = Builder::default();
    builder.push_record([
        "id",
        "address",
        "role",
        "term",
        "leader",
        "commit index",
        "applied index",
        "log entries",
        "lag",
        "uptime",
    ]);
    for row in &summary.rows {
        let cells = match &row.answer {
            Ok(report) => {
                let status = &report.status;
                vec![
                    status.server.to_string(),
                    row.address.clone(),
                    role_name(status.role).to_string(),
                    report.term.to_string(),
                    leader_name(status.leader),
                    status.commit_index.to_string(),
                    report.applied_index.to_string(),
                    status.log_entries().to_string(),
                    summary
                        .lag(report)
                        .map_or_else(|| "-".to_string(), |lag| lag.to_string()),
                    format_uptime(status.uptime_ms),
                ]
            }
            Err(_) => {
                let mut cells = vec!["-".to_string(); 10];
                cells[1] = row.address.clone();
                cells[2] = "unreachable".to_string();
                cells
            }
        };
        builder.push_record(cells);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    let mut text = format!("{table}\n");
    match summary.leader_report() {
        Some(leader) => text.push_str(&format!(
            "leader: {} (term {}, commit index {})\n",
            leader.status.server, leader.term, leader.status.commit_index
        )),
        None => text.push_str("leader: none of the servers that answered leads\n"),
    }
    for row in &summary.rows {
        if let Err(reason) = &row.answer {
            text.push_str(&format!("unreachable: {}: {reason}\n", row.address));
        }
    }
    text
}

/// The same as the table, as one JSON object.
pub fn render_json(summary: &Summary) -> Value {
    let servers: Vec<Value> = summary
        .rows
        .iter()
        .map(|row| match &row.answer {
            Ok(report) => {
                let status = &report.status;
                json!({
                    "address": row.address,
                    "reachable": true,
                    "id": status.server.to_string(),
                    "role": role_name(status.role),
                    "term": report.term,
                    "leader": status.leader.map(|leader| leader.to_string()),
                    "commit_index": status.commit_index,
                    "applied_index": report.applied_index,
                    "last_index": status.last_index,
                    "snapshot_index": status.snapshot_index,
                    "log_entries": status.log_entries(),
                    "log_bytes": status.log_bytes,
                    "lag": summary.lag(report),
                    "uptime_seconds": status.uptime_ms as f64 / 1_000.0,
                })
            }
            Err(reason) => json!({
                "address": row.address,
                "reachable": false,
                "error": reason,
            }),
        })
        .collect();
    let leader = summary.leader_report();
    json!({
        "leader": leader.map(|report| report.status.server.to_string()),
        "term": leader.map(|report| report.term),
        "servers": servers,
    })
}

/// Asks every server at once; the rows come back in the listed order.
fn ask_all(
    servers: &[String],
    tls: Option<&lockstep::client::ClientTls>,
    timeout: Duration,
) -> Vec<Row> {
    std::thread::scope(|scope| {
        let asking: Vec<_> = servers
            .iter()
            .map(|address| scope.spawn(move || server_status(address, tls, timeout)))
            .collect();
        servers
            .iter()
            .zip(asking)
            .map(|(address, thread)| Row {
                address: address.clone(),
                answer: thread
                    .join()
                    .unwrap_or_else(|_| Err("the query thread panicked".to_string())),
            })
            .collect()
    })
}

pub fn run(args: StatusArgs) -> u8 {
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(problem) => {
            eprintln!("error: {problem}");
            return EXIT_BAD_INPUT;
        }
    };
    let summary = Summary::new(ask_all(&args.servers.0, tls.as_ref(), args.timeout));
    if args.json {
        println!("{}", render_json(&summary));
    } else {
        print!("{}", render_table(&summary));
    }
    summary.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep::net::protocol::ServerStatus;

    fn report(
        server: u32,
        role: Role,
        term: u64,
        leader: Option<u32>,
        commit: u64,
        applied: u64,
    ) -> StatusReport {
        StatusReport {
            term,
            applied_index: applied,
            status: ServerStatus {
                server: ServerId(server),
                role,
                leader: leader.map(ServerId),
                commit_index: commit,
                last_index: commit + 2,
                snapshot_index: 10,
                log_bytes: 4096,
                uptime_ms: 3_723_000,
            },
        }
    }

    fn row(port: u16, answer: Result<StatusReport, String>) -> Row {
        Row {
            address: format!("127.0.0.1:{port}"),
            answer,
        }
    }

    /// s2 leads with commit 50; s1 has applied 44 of it, s3 everything.
    fn healthy() -> Vec<Row> {
        vec![
            row(7001, Ok(report(1, Role::Follower, 3, Some(2), 48, 44))),
            row(7002, Ok(report(2, Role::Leader, 3, Some(2), 50, 50))),
            row(7003, Ok(report(3, Role::Follower, 3, Some(2), 50, 50))),
        ]
    }

    #[test]
    fn the_leader_is_found_and_lag_is_its_commit_index_minus_each_applied_index() {
        let summary = Summary::new(healthy());
        assert_eq!(summary.leader, Some(1));
        let lags: Vec<Option<u64>> = summary
            .rows
            .iter()
            .map(|row| summary.lag(row.answer.as_ref().unwrap()))
            .collect();
        assert_eq!(lags, [Some(6), Some(0), Some(0)]);
        assert_eq!(summary.exit_code(), EXIT_HEALTHY);
    }

    #[test]
    fn a_server_ahead_of_the_leaders_answer_has_no_lag() {
        let mut rows = healthy();
        rows[2].answer = Ok(report(3, Role::Follower, 3, Some(2), 53, 53));
        let summary = Summary::new(rows);
        assert_eq!(
            summary.lag(summary.rows[2].answer.as_ref().unwrap()),
            Some(0)
        );
    }

    #[test]
    fn of_two_servers_that_say_they_lead_the_one_in_the_higher_term_does() {
        let mut rows = healthy();
        rows[0].answer = Ok(report(1, Role::Leader, 2, Some(1), 40, 40));
        let summary = Summary::new(rows);
        assert_eq!(summary.leader, Some(1), "s2 in term 3, not s1 in term 2");
    }

    #[test]
    fn the_table_has_a_row_per_server_and_names_the_leader() {
        let table = render_table(&Summary::new(healthy()));
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].contains("commit index") && lines[1].contains("lag"),
            "{table}"
        );
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|line| line.contains("127.0.0.1:"))
            .collect();
        assert_eq!(rows.len(), 3, "{table}");
        let cells = |line: &str| -> Vec<String> {
            line.split('│')
                .map(|cell| cell.trim().to_string())
                .filter(|cell| !cell.is_empty())
                .collect()
        };
        assert_eq!(
            cells(rows[0]),
            [
                "s1",
                "127.0.0.1:7001",
                "follower",
                "3",
                "s2",
                "48",
                "44",
                "40",
                "6",
                "1h02m"
            ]
        );
        assert_eq!(cells(rows[1])[2], "leader");
        assert!(
            table.contains("leader: s2 (term 3, commit index 50)\n"),
            "{table}"
        );
    }

    #[test]
    fn an_unreachable_server_gets_a_row_its_reason_and_exit_code_1() {
        let mut rows = healthy();
        rows[2].answer = Err("cannot connect: Connection refused (os error 111)".into());
        let summary = Summary::new(rows);
        let table = render_table(&summary);
        let line = table
            .lines()
            .find(|line| line.contains("127.0.0.1:7003"))
            .unwrap();
        assert!(line.contains("unreachable"), "{table}");
        assert!(
            table.contains("unreachable: 127.0.0.1:7003: cannot connect: Connection refused"),
            "{table}"
        );
        assert_eq!(summary.exit_code(), EXIT_UNREACHABLE);
        let json = render_json(&summary);
        assert_eq!(json["servers"][2]["reachable"], false);
        assert_eq!(
            json["servers"][2]["error"],
            "cannot connect: Connection refused (os error 111)"
        );
        assert_eq!(json["leader"], "s2", "the others still name the leader");
    }

    #[test]
    fn servers_that_all_answer_without_a_leader_exit_3_with_unknown_lag() {
        let rows = vec![
            row(7001, Ok(report(1, Role::Candidate, 4, None, 50, 50))),
            row(7002, Ok(report(2, Role::Follower, 4, None, 50, 50))),
        ];
        let summary = Summary::new(rows);
        assert_eq!(summary.exit_code(), EXIT_NO_LEADER);
        let table = render_table(&summary);
        assert!(
            table.contains("leader: none of the servers that answered leads"),
            "{table}"
        );
        let json = render_json(&summary);
        assert_eq!(json["leader"], Value::Null);
        assert_eq!(json["servers"][0]["lag"], Value::Null);
        assert_eq!(json["servers"][0]["leader"], Value::Null);
    }

    #[test]
    fn the_json_holds_what_the_table_shows() {
        let json = render_json(&Summary::new(healthy()));
        assert_eq!(json["leader"], "s2");
        assert_eq!(json["term"], 3);
        let first = &json["servers"][0];
        assert_eq!(first["id"], "s1");
        assert_eq!(first["role"], "follower");
        assert_eq!(first["leader"], "s2");
        assert_eq!(first["commit_index"], 48);
        assert_eq!(first["applied_index"], 44);
        assert_eq!(first["log_entries"], 40);
        assert_eq!(first["lag"], 6);
        assert_eq!(first["uptime_seconds"], 3723.0);
    }

    #[test]
    fn uptimes_read_as_people_read_them() {
        assert_eq!(format_uptime(12_345), "12.3s");
        assert_eq!(format_uptime(249_000), "4m09s");
        assert_eq!(format_uptime(7_500_000), "2h05m");
        assert_eq!(format_uptime(277_200_000), "3d05h");
    }
}
