//! `lockstep watch NAME`: print every committed change of a lock (or of every lock under a
//! prefix) as it happens, like `etcdctl watch`: the library's [`Watch`], which resumes on
//! another server across a failover without a gap or a repeat.
//!
//! It only reads: it never holds or releases anything. It never prints a secret (a credential
//! it registers goes to stderr once, like every client command's).

use super::client::{Connect, EXIT_ERROR, EXIT_OK, EXIT_REFUSED, Ttl, register_if_new};
use clap::Args;
use lockstep::client::{Change, Error, LockChange, LockState, Watch, WatchEvent, WatchTarget};
use lockstep::node::watch::WATCH_PREFIX_BYTES_MAX;
use lockstep::node::{LOCK_NAME_BYTES_MAX, LogIndex};
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// No server served the watch for `--timeout` (at the start, or after losing one).
pub const EXIT_UNREACHABLE: u8 = 3;

/// How often the watch looks at the interrupt flag while it waits for changes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Args)]
#[command(after_help = "Examples:
  lockstep watch printer --servers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
  lockstep watch jobs/ --prefix --json --servers 10.0.0.1:7100
  lockstep watch printer --from 1200 --servers 10.0.0.1:7100

Prints, as they are committed, the changes of lock NAME (with --prefix: of every lock whose
name starts with NAME; --prefix '' for every lock), one line per change:
  at 26: printer is held by client 7 (token 21), 0 waiting
  27 printer: released by client 7
  28 printer: granted to client 9 with token 28
  31 printer: expired, client 9's session ended
  33 printer: 2 waiting
The number first is the log index of the entry that made the change. Without --from, the
first lines give the state at the index the watch starts from; with --from N, the changes of
index N and later come first (or, if the cluster no longer keeps them, a line saying so and
the state now). To resume where an earlier watch stopped, pass --from the index after the
last one it printed.

--json prints JSON Lines instead, one object per change with the fields index, lock, change
(granted, released, expired or queue) and owner, token or waiters; and one object per state
with index, state (current, or compacted with kept_after) and locks (each with lock, holders
and waiters). No line carries a secret.

The watch is served by any server (a follower too) and moves to another when its server goes
away, resuming from the index after the last change it printed: nothing is missed or printed
twice. Without a credential (--client, --client-file or LOCKSTEP_CLIENT) it registers a new
client (a watch shows what a check shows, so the cluster asks who is watching) and prints its
credential once on stderr.

Exit codes: 0 stopped by SIGINT or SIGTERM; 1 the cluster refused the watch (unauthorized, an
unknown client id); 2 bad flags or input; 3 no server served the watch for --timeout.")]
pub struct WatchArgs {
    /// The lock to watch; with --prefix, the prefix of the locks to watch.
    pub name: String,
    /// Watch every lock whose name starts with NAME (an empty NAME: every lock).
    #[arg(long)]
    pub prefix: bool,
    /// Start from this log index (its changes and every later one) instead of the state now:
    /// the index after the last one an earlier watch printed.
    #[arg(long, value_name = "INDEX")]
    pub from: Option<LogIndex>,
    /// Print JSON Lines (one object per change or state) instead of sentences.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: Connect,
}

pub fn run(args: WatchArgs) -> u8 {
    let target = match target(&args) {
        Ok(target) => target,
        Err(problem) => {
            eprintln!("error: {problem}");
            return EXIT_ERROR;
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    if let Err(error) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("lockstep: warning: SIGINT and SIGTERM will end the watch abruptly: {error}");
    }
    let mut client = match args.connect.client_with_session(None, Ttl::Never) {
        Ok(client) => client,
        Err(error) => return failed(&error),
    };
    if let Err(error) = register_if_new(&mut client) {
        return failed(&error);
    }
    let watch = match client.watch(target, args.from) {
        Ok(watch) => watch,
        Err(error) => return failed(&error),
    };
    follow(watch, args.json, &interrupted)
}

/// What `NAME`, `--prefix` and `--from` ask to watch.
fn target(args: &WatchArgs) -> Result<WatchTarget, String> {
    if args.prefix {
        if args.name.len() > WATCH_PREFIX_BYTES_MAX {
            return Err(format!(
                "the prefix is {} bytes, above the limit of {WATCH_PREFIX_BYTES_MAX}",
                args.name.len()
            ));
        }
        return Ok(WatchTarget::Prefix(args.name.clone()));
    }
    if args.name.is_empty() {
        return Err(
            "the lock name is empty (to watch every lock, pass --prefix with an empty NAME)".into(),
        );
    }
    if args.name.len() > LOCK_NAME_BYTES_MAX {
        return Err(format!(
            "the lock name is {} bytes, above the limit of {LOCK_NAME_BYTES_MAX}",
            args.name.len()
        ));
    }
    Ok(WatchTarget::Lock(args.name.as_str().into()))
}

/// Prints the watch's items until an interrupt (0), or a failure (its code).
fn follow(mut watch: Watch, json: bool, interrupted: &AtomicBool) -> u8 {
    let mut out = std::io::stdout().lock();
    // Bounded by the interrupt flag: each round waits at most POLL_INTERVAL.
    while !interrupted.load(Ordering::SeqCst) {
        let item = match watch.poll(Instant::now() + POLL_INTERVAL) {
            Ok(Some(item)) => item,
            Ok(None) => continue,
            Err(error) => return failed(&error),
        };
        let lines = match json {
            true => json_lines(&item),
            false => sentences(&item),
        };
        for line in lines {
            // A closed stdout (`| head`) ends the watch quietly: nobody reads any more.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return EXIT_OK;
            }
        }
    }
    EXIT_OK
}

/// Says why the watch cannot go on, and returns its exit code.
fn failed(error: &Error) -> u8 {
    eprintln!("error: {error}");
    match error {
        Error::InvalidInput(_) => EXIT_ERROR,
        Error::NoServerReachable { .. } | Error::TimedOut { .. } => EXIT_UNREACHABLE,
        Error::Rejected { .. } => EXIT_REFUSED,
        Error::Protocol { .. } => EXIT_ERROR,
    }
}

/// The sentences of one item, one per change or covered lock.
pub fn sentences(item: &WatchEvent) -> Vec<String> {
    match item {
        WatchEvent::State {
            index,
            locks,
            compacted,
        } => {
            let mut lines = Vec::new();
            if let Some(kept_after) = compacted {
                lines.push(format!(
                    "at {index}: the cluster no longer keeps the changes at or below \
                     {kept_after}; the state now:"
                ));
            }
            if locks.is_empty() {
                lines.push(format!("at {index}: no lock held or waited for"));
            }
            lines.extend(
                locks
                    .iter()
                    .map(|lock| format!("at {index}: {}", state(lock))),
            );
            lines
        }
        WatchEvent::Changes { index, changes } => (changes.iter())
            .map(|change| format!("{index} {}", sentence(change)))
            .collect(),
    }
}

fn state(lock: &LockState) -> String {
    let name = &*lock.lock;
    let waiting = lock.view.waiters;
    match lock.view.holders.as_slice() {
        [] => format!("{name} is free, {waiting} waiting"),
        [one] => format!(
            "{name} is held by client {} (token {}), {waiting} waiting",
            one.owner.0, one.token
        ),
        many => {
            let holders: Vec<String> = (many.iter())
                .map(|h| format!("client {} (token {})", h.owner.0, h.token))
                .collect();
            format!(
                "{name} is held shared by {}, {waiting} waiting",
                holders.join(", ")
            )
        }
    }
}

fn sentence(change: &LockChange) -> String {
    let name = &*change.lock;
    match change.change {
        Change::Granted { owner, token } => {
            format!("{name}: granted to client {} with token {token}", owner.0)
        }
        Change::Released { owner } => format!("{name}: released by client {}", owner.0),
        Change::Expired { owner } => {
            format!("{name}: expired, client {}'s session ended", owner.0)
        }
        Change::Queue { waiters } => format!("{name}: {waiters} waiting"),
    }
}

/// The JSON Lines of one item: stable fields, no secret.
pub fn json_lines(item: &WatchEvent) -> Vec<String> {
    match item {
        WatchEvent::State {
            index,
            locks,
            compacted,
        } => {
            let mut object = json!({"index": index, "state": "current", "locks": locks});
            if let Some(kept_after) = compacted {
                object["state"] = json!("compacted");
                object["kept_after"] = json!(kept_after);
            }
            vec![object.to_string()]
        }
        WatchEvent::Changes { index, changes } => (changes.iter())
            .map(|change| {
                let mut object = json!({"index": index});
                let fields = serde_json::to_value(change).expect("a change serializes");
                for (key, value) in fields.as_object().expect("a change is an object") {
                    object[key] = value.clone();
                }
                object.to_string()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep::client::LockView;
    use lockstep::node::{ClientId, Holder};

    fn printer_change(change: Change) -> WatchEvent {
        let lock = "printer".into();
        WatchEvent::Changes {
            index: 28,
            changes: vec![LockChange { lock, change }],
        }
    }

    /// Each kind of change reads as one sentence and one JSON object with stable fields.
    #[test]
    fn every_change_prints_as_a_sentence_and_a_json_line() {
        let owner = ClientId(9);
        let cases = [
            (
                Change::Granted { owner, token: 28 },
                "28 printer: granted to client 9 with token 28",
                r#"{"change":"granted","index":28,"lock":"printer","owner":9,"token":28}"#,
            ),
            (
                Change::Released { owner },
                "28 printer: released by client 9",
                r#"{"change":"released","index":28,"lock":"printer","owner":9}"#,
            ),
            (
                Change::Expired { owner },
                "28 printer: expired, client 9's session ended",
                r#"{"change":"expired","index":28,"lock":"printer","owner":9}"#,
            ),
            (
                Change::Queue { waiters: 2 },
                "28 printer: 2 waiting",
                r#"{"change":"queue","index":28,"lock":"printer","waiters":2}"#,
            ),
        ];
        for (change, sentence, json) in cases {
            let item = printer_change(change);
            assert_eq!(sentences(&item), vec![sentence.to_string()]);
            assert_eq!(json_lines(&item), vec![json.to_string()]);
        }
    }

    /// A compacted state says so first, then lists each lock; shared holders are all named.
    #[test]
    fn a_compacted_state_says_so_and_names_every_holder() {
        let holder = |owner, token| Holder {
            owner: ClientId(owner),
            token,
        };
        let locks = vec![LockState {
            lock: "printer".into(),
            view: LockView {
                holders: vec![holder(7, 21), holder(9, 22)],
                waiters: 1,
            },
        }];
        let item = WatchEvent::State {
            index: 30,
            locks,
            compacted: Some(20),
        };
        let printed = sentences(&item);
        assert!(printed[0].contains("no longer keeps the changes at or below 20"));
        assert_eq!(
            printed[1],
            "at 30: printer is held shared by client 7 (token 21), client 9 (token 22), \
             1 waiting"
        );
        let json = &json_lines(&item)[0];
        assert!(json.contains(r#""state":"compacted""#), "{json}");
        assert!(json.contains(r#""kept_after":20"#), "{json}");
    }
}
