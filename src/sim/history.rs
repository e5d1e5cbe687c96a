//! The client-observed history of a run: every lock operation a client called, when it called
//! it, when (and whether) it learned the result, and what that result was. This is what the
//! linearizability checker ([`super::linearizability`]) judges, and what `--history FILE` writes
//! as JSON Lines, one operation per line, times in simulated nanoseconds:
//!
//! ```text
//! {"client":"c1","op":"preempt","lock":"a","call":1000000,"return":4200000,"result":"granted","token":12}
//! {"client":"c2","op":"check","lock":"a","consistency":"linearizable","call":6000000,"return":7100000,"result":"owner","owner":"c1","token":12}
//! {"client":"c1","op":"release","lock":"a","call":8000000,"return":null,"result":"unknown"}
//! ```
//!
//! `"return": null` with `"result": "unknown"` marks an operation whose outcome the client never
//! learned (timeout, crash, or still running at the end): it may or may not have taken effect.
//!
//! What this module must never do: panic on input. A bad line is a [`HistoryError`] naming the
//! line and the problem. Writing checks every operation with the same rules as reading (a pair
//! assertion), so whatever [`write_jsonl`] accepts, [`read_jsonl`] reads back unchanged.

use crate::node::Consistency;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a client asked for.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum HistoryOpKind {
    Preempt,
    Release,
    Check,
}

impl HistoryOpKind {
    pub fn name(self) -> &'static str {
        match self {
            HistoryOpKind::Preempt => "preempt",
            HistoryOpKind::Release => "release",
            HistoryOpKind::Check => "check",
        }
    }

    fn parse(name: &str) -> Option<HistoryOpKind> {
        match name {
            "preempt" => Some(HistoryOpKind::Preempt),
            "release" => Some(HistoryOpKind::Release),
            "check" => Some(HistoryOpKind::Check),
            _ => None,
        }
    }
}

/// What the client learned. Owners are client numbers (`c3` is 3), as in [`HistoryOp::client`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub enum HistoryResult {
    /// Preempt: the client holds the lock under fencing token `token`.
    Granted { token: u64 },
    /// Preempt: `owner` holds the lock.
    HeldBy { owner: u32 },
    /// Release: the lock is free now.
    Released,
    /// Release: the caller did not hold the lock.
    NotOwner,
    /// Check: nobody holds the lock.
    Free,
    /// Check: `owner` holds the lock, under `token` when the answer carried it.
    Owner { owner: u32, token: Option<u64> },
    /// The client never learned the result: the operation may or may not have taken effect.
    Unknown,
}

impl HistoryResult {
    pub fn name(self) -> &'static str {
        match self {
            HistoryResult::Granted { .. } => "granted",
            HistoryResult::HeldBy { .. } => "held_by",
            HistoryResult::Released => "released",
            HistoryResult::NotOwner => "not_owner",
            HistoryResult::Free => "free",
            HistoryResult::Owner { .. } => "owner",
            HistoryResult::Unknown => "unknown",
        }
    }

    /// Whether an operation of `kind` can answer this.
    pub fn fits(self, kind: HistoryOpKind) -> bool {
        match self {
            HistoryResult::Granted { .. } | HistoryResult::HeldBy { .. } => {
                kind == HistoryOpKind::Preempt
            }
            HistoryResult::Released | HistoryResult::NotOwner => kind == HistoryOpKind::Release,
            HistoryResult::Free | HistoryResult::Owner { .. } => kind == HistoryOpKind::Check,
            HistoryResult::Unknown => true,
        }
    }
}

impl fmt::Display for HistoryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryResult::Granted { token } => write!(f, "granted (token {token})"),
            HistoryResult::HeldBy { owner } => write!(f, "held_by c{owner}"),
            HistoryResult::Owner {
                owner,
                token: Some(token),
            } => {
                write!(f, "owner c{owner} (token {token})")
            }
            HistoryResult::Owner { owner, token: None } => write!(f, "owner c{owner}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One operation as its client saw it.
///
/// Invariants (checked by [`HistoryOp::validate`] on both reading and writing): the result fits
/// the op; `consistency` is set on checks and only on checks; `return_ns` is `None` exactly when
/// the result is `Unknown`, and otherwise not before `call_ns`; `client` and owners are at least 1;
/// the lock name is not empty.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(into = "RawLine", try_from = "RawLine")]
pub struct HistoryOp {
    /// The client's number: `c1` is 1.
    pub client: u32,
    pub op: HistoryOpKind,
    pub lock: String,
    /// Checks only.
    pub consistency: Option<Consistency>,
    /// When the client called the operation, in simulated nanoseconds.
    pub call_ns: u64,
    /// When the client learned the result; `None` if it never did.
    pub return_ns: Option<u64>,
    pub result: HistoryResult,
}

impl HistoryOp {
    /// Whether the operation obeys the invariants written on the type.
    pub fn validate(&self) -> Result<(), HistoryProblem> {
        if self.client == 0 {
            return Err(HistoryProblem::BadClient("c0".into()));
        }
        if self.lock.is_empty() {
            return Err(HistoryProblem::EmptyLock);
        }
        match (self.op, self.consistency) {
            (HistoryOpKind::Check, None) => return Err(HistoryProblem::MissingConsistency),
            (HistoryOpKind::Preempt | HistoryOpKind::Release, Some(_)) => {
                return Err(HistoryProblem::ConsistencyOnNonCheck(self.op.name()));
            }
            _ => {}
        }
        if !self.result.fits(self.op) {
            return Err(HistoryProblem::ResultDoesNotFitOp {
                op: self.op.name(),
                result: self.result.name().into(),
            });
        }
        if let HistoryResult::HeldBy { owner: 0 } | HistoryResult::Owner { owner: 0, .. } =
            self.result
        {
            return Err(HistoryProblem::BadOwner("c0".into()));
        }
        match (self.result, self.return_ns) {
            (HistoryResult::Unknown, Some(return_ns)) => {
                Err(HistoryProblem::UnknownWithReturn(return_ns))
            }
            (HistoryResult::Unknown, None) => Ok(()),
            (known, None) => Err(HistoryProblem::KnownWithoutReturn(known.name())),
            (_, Some(return_ns)) if return_ns < self.call_ns => {
                Err(HistoryProblem::ReturnBeforeCall {
                    call_ns: self.call_ns,
                    return_ns,
                })
            }
            (_, Some(_)) => Ok(()),
        }
    }
}

impl fmt::Display for HistoryOp {
    /// `6.000ms .. 7.100ms  c2 check a (linearizable): owner c1 (token 12)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = milliseconds(self.call_ns);
        let ret = match self.return_ns {
            Some(return_ns) => milliseconds(return_ns),
            None => "never".into(),
        };
        write!(
            f,
            "{call:>12} .. {ret:<12} c{} {} {}",
            self.client,
            self.op.name(),
            self.lock
        )?;
        match self.consistency {
            Some(Consistency::Linearizable) => f.write_str(" (linearizable)")?,
            Some(Consistency::Local) => f.write_str(" (local)")?,
            None => {}
        }
        write!(f, ": {}", self.result)
    }
}

/// Simulated nanoseconds as milliseconds with three decimals (`4.200ms`).
pub fn milliseconds(nanos: u64) -> String {
    format!("{}.{:03}ms", nanos / 1_000_000, nanos % 1_000_000 / 1_000)
}

/// Why a line is not a history operation.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HistoryProblem {
    #[error("not a history line: {0}")]
    BadJson(String),
    #[error("client `{0}` is not a client name (c1, c2, ...)")]
    BadClient(String),
    #[error("owner `{0}` is not a client name (c1, c2, ...)")]
    BadOwner(String),
    #[error("unknown op `{0}` (expected preempt, release or check)")]
    UnknownOp(String),
    #[error(
        "unknown result `{0}` (expected granted, held_by, released, not_owner, free, owner or \
         unknown)"
    )]
    UnknownResult(String),
    #[error("unknown consistency `{0}` (expected local or linearizable)")]
    UnknownConsistency(String),
    #[error("result `{result}` does not fit op `{op}`")]
    ResultDoesNotFitOp { op: &'static str, result: String },
    #[error("result `{result}` needs the field `{field}`")]
    MissingField {
        result: &'static str,
        field: &'static str,
    },
    #[error("the field `{field}` does not belong to result `{result}`")]
    UnexpectedField {
        result: &'static str,
        field: &'static str,
    },
    #[error("a check needs `consistency` (local or linearizable)")]
    MissingConsistency,
    #[error("`consistency` belongs to checks, not to `{0}`")]
    ConsistencyOnNonCheck(&'static str),
    #[error("return {return_ns} comes before call {call_ns}")]
    ReturnBeforeCall { call_ns: u64, return_ns: u64 },
    #[error("result `unknown` needs `\"return\": null`, not {0}")]
    UnknownWithReturn(u64),
    #[error("result `{0}` needs a return time (only `unknown` has `\"return\": null`)")]
    KnownWithoutReturn(&'static str),
    #[error("the lock name is empty")]
    EmptyLock,
}

/// A line of a history file that could not be read. `line` counts from 1.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct HistoryError {
    pub line: usize,
    pub problem: HistoryProblem,
}

/// Writes one JSON object per operation, each followed by a newline.
///
/// An operation that breaks [`HistoryOp`]'s invariants is refused with
/// [`std::io::ErrorKind::InvalidInput`] before anything of it is written, so that a file this
/// writes always reads back.
pub fn write_jsonl(ops: &[HistoryOp], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for (position, op) in ops.iter().enumerate() {
        if let Err(problem) = op.validate() {
            let message = format!("history operation {position} ({op:?}): {problem}");
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                message,
            ));
        }
        serde_json::to_writer(&mut *out, &RawLine::from(op.clone()))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a JSON Lines history. Blank lines are skipped; every other line must be one operation.
/// Stops at the first bad line.
pub fn read_jsonl(text: &str) -> Result<Vec<HistoryOp>, HistoryError> {
    let mut ops = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op = parse_line(line).map_err(|problem| HistoryError {
            line: index + 1,
            problem,
        })?;
        debug_assert!(op.validate().is_ok(), "a parsed operation is valid");
        ops.push(op);
    }
    Ok(ops)
}

fn parse_line(line: &str) -> Result<HistoryOp, HistoryProblem> {
    let raw: RawLine = serde_json::from_str(line).map_err(|error| {
        // serde_json says "at line 1 column N"; within one line only the column means anything.
        let text = error.to_string();
        let message = text
            .rfind(" at line ")
            .map_or(text.as_str(), |end| &text[..end]);
        HistoryProblem::BadJson(format!("{message} (column {})", error.column()))
    })?;
    HistoryOp::try_from(raw)
}

/// One line exactly as it is written: field order here is the order in the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    client: String,
    op: String,
    lock: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consistency: Option<String>,
    call: u64,
    #[serde(rename = "return")]
    return_ns: Option<u64>,
    result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<u64>,
}

impl From<HistoryOp> for RawLine {
    fn from(op: HistoryOp) -> RawLine {
        let (owner, token) = match op.result {
            HistoryResult::Granted { token } => (None, Some(token)),
            HistoryResult::HeldBy { owner } => (Some(owner), None),
            HistoryResult::Owner { owner, token } => (Some(owner), token),
            _ => (None, None),
        };
        RawLine {
            client: format!("c{}", op.client),
            op: op.op.name().into(),
            lock: op.lock,
            consistency: op
                .consistency
                .map(|consistency| consistency_name(consistency).into()),
            call: op.call_ns,
            return_ns: op.return_ns,
            result: op.result.name().into(),
            owner: owner.map(|owner| format!("c{owner}")),
            token,
        }
    }
}

impl TryFrom<RawLine> for HistoryOp {
    type Error = HistoryProblem;

    fn try_from(raw: RawLine) -> Result<HistoryOp, HistoryProblem> {
        let client = parse_client(&raw.client)
            .ok_or_else(|| HistoryProblem::BadClient(raw.client.clone()))?;
        let op = HistoryOpKind::parse(&raw.op).ok_or(HistoryProblem::UnknownOp(raw.op))?;
        let consistency = match raw.consistency.as_deref() {
            None => None,
            Some("local") => Some(Consistency::Local),
            Some("linearizable") => Some(Consistency::Linearizable),
            Some(other) => return Err(HistoryProblem::UnknownConsistency(other.into())),
        };
        let result = parse_result(&raw.result, raw.owner.as_deref(), raw.token)?;
        let history_op = HistoryOp {
            client,
            op,
            lock: raw.lock,
            consistency,
            call_ns: raw.call,
            return_ns: raw.return_ns,
            result,
        };
        history_op.validate()?;
        Ok(history_op)
    }
}

/// The result named `name`, with exactly the fields that result carries.
fn parse_result(
    name: &str,
    owner: Option<&str>,
    token: Option<u64>,
) -> Result<HistoryResult, HistoryProblem> {
    let (result, takes_owner, takes_token): (&'static str, bool, bool) = match name {
        "granted" => ("granted", false, true),
        "held_by" => ("held_by", true, false),
        "released" => ("released", false, false),
        "not_owner" => ("not_owner", false, false),
        "free" => ("free", false, false),
        "owner" => ("owner", true, true),
        "unknown" => ("unknown", false, false),
        other => return Err(HistoryProblem::UnknownResult(other.into())),
    };
    if owner.is_some() && !takes_owner {
        return Err(HistoryProblem::UnexpectedField {
            result,
            field: "owner",
        });
    }
    if token.is_some() && !takes_token {
        return Err(HistoryProblem::UnexpectedField {
            result,
            field: "token",
        });
    }
    let owner = match owner {
        Some(name) => {
            Some(parse_client(name).ok_or_else(|| HistoryProblem::BadOwner(name.into()))?)
        }
        None if takes_owner => {
            return Err(HistoryProblem::MissingField {
                result,
                field: "owner",
            });
        }
        None => None,
    };
    Ok(match (result, owner, token) {
        ("granted", _, Some(token)) => HistoryResult::Granted { token },
        ("granted", _, None) => {
            return Err(HistoryProblem::MissingField {
                result,
                field: "token",
            });
        }
        ("held_by", Some(owner), _) => HistoryResult::HeldBy { owner },
        ("owner", Some(owner), token) => HistoryResult::Owner { owner, token },
        ("released", ..) => HistoryResult::Released,
        ("not_owner", ..) => HistoryResult::NotOwner,
        ("free", ..) => HistoryResult::Free,
        _ => HistoryResult::Unknown,
    })
}

/// `c7` is 7. Rejects `c0`, leading zeros and anything else, so that names round-trip.
fn parse_client(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('c')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn consistency_name(consistency: Consistency) -> &'static str {
    match consistency {
        Consistency::Local => "local",
        Consistency::Linearizable => "linearizable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the module's specification, one operation of each interesting shape.
    const EXAMPLE: &str = r#"{"client":"c1","op":"preempt","lock":"a","call":1000000,"return":4200000,"result":"granted","token":12}
{"client":"c2","op":"preempt","lock":"a","call":1500000,"return":5000000,"result":"held_by","owner":"c1"}
{"client":"c2","op":"check","lock":"a","consistency":"linearizable","call":6000000,"return":7100000,"result":"owner","owner":"c1","token":12}
{"client":"c3","op":"check","lock":"a","consistency":"local","call":6100000,"return":6300000,"result":"free"}
{"client":"c1","op":"release","lock":"a","call":8000000,"return":null,"result":"unknown"}
"#;

    fn problem_of(line: &str) -> HistoryProblem {
        match read_jsonl(line) {
            Err(error) => {
                assert_eq!(error.line, 1, "{error}");
                error.problem
            }
            Ok(ops) => panic!("{line} was accepted as {ops:?}"),
        }
    }

    #[test]
    fn the_example_reads_and_writes_back_byte_for_byte() {
        let ops = read_jsonl(EXAMPLE).expect("the example reads");
        assert_eq!(ops.len(), 5);
        assert_eq!(ops[0].result, HistoryResult::Granted { token: 12 });
        assert_eq!(
            ops[2].result,
            HistoryResult::Owner {
                owner: 1,
                token: Some(12)
            }
        );
        assert_eq!(ops[3].consistency, Some(Consistency::Local));
        assert_eq!(ops[4].return_ns, None);
        let mut written = Vec::new();
        write_jsonl(&ops, &mut written).expect("writes to memory");
        assert_eq!(String::from_utf8(written).expect("utf-8"), EXAMPLE);
    }

    #[test]
    fn an_owner_answer_without_a_token_is_read() {
        let line = r#"{"client":"c2","op":"check","lock":"a","consistency":"local","call":1,"return":2,"result":"owner","owner":"c1"}"#;
        let ops = read_jsonl(line).expect("reads");
        assert_eq!(
            ops[0].result,
            HistoryResult::Owner {
                owner: 1,
                token: None
            }
        );
    }

    #[test]
    fn bad_lines_name_their_line_and_problem() {
        let text = format!("{EXAMPLE}\n{{\"client\":\"c1\"");
        let error = read_jsonl(&text).expect_err("a truncated line");
        assert_eq!(error.line, 7, "the blank line 6 is skipped but counted");
        assert!(
            matches!(error.problem, HistoryProblem::BadJson(_)),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("line 7: not a history line"),
            "{error}"
        );
    }

    /// A line by c1 on lock `a` with the given op, result, times and extra fields.
    fn line(op: &str, result: &str, times: &str, extra: &str) -> String {
        format!(r#"{{"client":"c1","op":"{op}","lock":"a",{times},"result":"{result}"{extra}}}"#)
    }

    #[test]
    fn every_kind_of_bad_line_is_refused_with_its_reason() {
        use HistoryProblem::*;
        let done = r#""call":5,"return":9"#;
        let cases = [
            (line("grab", "released", done, ""), UnknownOp("grab".into())),
            (line("release", "ok", done, ""), UnknownResult("ok".into())),
            (
                line("release", "free", done, ""),
                ResultDoesNotFitOp {
                    op: "release",
                    result: "free".into(),
                },
            ),
            (
                line("preempt", "granted", done, ""),
                MissingField {
                    result: "granted",
                    field: "token",
                },
            ),
            (
                line("preempt", "held_by", done, ""),
                MissingField {
                    result: "held_by",
                    field: "owner",
                },
            ),
            (line("check", "free", done, ""), MissingConsistency),
            (
                line("release", "released", done, r#","consistency":"local""#),
                ConsistencyOnNonCheck("release"),
            ),
            (
                line("release", "released", r#""call":9,"return":5"#, ""),
                ReturnBeforeCall {
                    call_ns: 9,
                    return_ns: 5,
                },
            ),
            (line("release", "unknown", done, ""), UnknownWithReturn(9)),
            (
                line("release", "released", r#""call":5,"return":null"#, ""),
                KnownWithoutReturn("released"),
            ),
            (
                line("release", "released", done, r#","token":3"#),
                UnexpectedField {
                    result: "released",
                    field: "token",
                },
            ),
            (
                line("preempt", "held_by", done, r#","owner":"s2""#),
                BadOwner("s2".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(problem_of(&text), expected, "{text}");
        }
        let server = line("release", "released", done, "").replace("c1", "s1");
        assert_eq!(problem_of(&server), BadClient("s1".into()));
        let extra = line("release", "released", done, r#","extra":1"#);
        assert!(
            matches!(problem_of(&extra), BadJson(_)),
            "unknown fields are refused"
        );
    }

    #[test]
    fn client_names_round_trip_or_are_refused() {
        assert_eq!(parse_client("c1"), Some(1));
        assert_eq!(parse_client("c4294967295"), Some(u32::MAX));
        for bad in ["c0", "c01", "c", "1", "c-1", "c1x", "c4294967296", "C1"] {
            assert_eq!(parse_client(bad), None, "{bad}");
        }
    }

    #[test]
    fn writing_refuses_an_operation_that_could_not_be_read_back() {
        let op = HistoryOp {
            client: 1,
            op: HistoryOpKind::Release,
            lock: "a".into(),
            consistency: None,
            call_ns: 1,
            return_ns: Some(2),
            result: HistoryResult::Free,
        };
        let mut written = Vec::new();
        let error = write_jsonl(&[op], &mut written).expect_err("free does not answer a release");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            written.is_empty(),
            "nothing of a refused operation is written"
        );
    }

    #[test]
    fn operations_display_with_milliseconds() {
        let ops = read_jsonl(EXAMPLE).expect("reads");
        let shown = ops[2].to_string();
        assert!(shown.contains("6.000ms .. 7.100ms"), "{shown}");
        assert!(
            shown.ends_with("c2 check a (linearizable): owner c1 (token 12)"),
            "{shown}"
        );
        assert!(ops[4].to_string().contains("never"), "{}", ops[4]);
    }
}
