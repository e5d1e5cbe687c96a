//! `lockstep lock NAME -- COMMAND...`: run a command while holding a lock, like `flock`,
//! `etcdctl lock` or `consul lock`.
//!
//! Takes the lock with the protocol's blocking `acquire` (waiting in the lock's fair FIFO line
//! while another client holds it, for up to `--wait`, forever by default: no polling), runs
//! the command with the fencing token in its
//! environment, and releases the lock when the command ends, fails, or lockstep is
//! interrupted. It must never leave the lock held behind it while it can still reach the
//! cluster: every path out after a grant goes through [`HeldLock`], whose `Drop` releases.
//!
//! A new client registers with a session (15 s TTL by default) that a [`SessionKeeper`] renews
//! in the background, so that a `lockstep lock` killed with SIGKILL frees its lock once the
//! cluster expires the session. When the lease is lost (it ran out by the client's own rule
//! without a renewal, or the cluster answered `session_expired`), it says why, stops the
//! command (`--on-lost`, `--kill-after`) and exits [`EXIT_LEASE_LOST`] without releasing:
//! the lock may already be someone else's.
//!
//! `--shared` and `--permits N` take the lock as a reader (beside other readers, never beside a
//! writer) or as one of N holders of a semaphore (docs/design.md, "Shared locks and
//! semaphores"); every mode waits in the same fair line.

use super::client::{
    CLIENT_ENV, Connect, EXIT_ERROR, Ttl, parse_duration, parse_lock_name, parse_ttl,
    register_if_new, shown,
};
use clap::{Args, ValueEnum};
use lockstep::client::{
    Acquire, Check, Claim, Client, Error, LeaseState, Lost, Mode, PERMITS_MAX, Release,
    SessionKeeper,
};
use lockstep::net::protocol::{ACQUIRE_WAIT_MS_MAX, ErrorCode};
use lockstep::node::Consistency;
use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The lock was not acquired within `--wait` (EX_TEMPFAIL from sysexits.h: try again later).
pub const EXIT_NOT_ACQUIRED: u8 = 75;
/// The session's lease was lost (while waiting for the lock or while the command ran): the
/// command was stopped and the lock not released.
pub const EXIT_LEASE_LOST: u8 = 76;
/// The lock is in use with other permits than `--permits` named (or with permits, when none
/// were named): EX_CONFIG from sysexits.h, since waiting will not fix it while others use the
/// lock under their permits.
pub const EXIT_PERMITS_MISMATCH: u8 = 78;
/// The command exists but cannot be run (as shells do).
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The command was not found (as shells do).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Interrupted (SIGINT or SIGTERM) before the command started: 128 + SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// How often the command's wait looks at the interrupt flag and the child.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The session TTL of a new client without `--ttl`: Consul's `consul lock` session is 15 s;
/// short enough that a killed run frees its lock soon, long enough to ride out a leader
/// election and a loaded machine.
const TTL_DEFAULT: Duration = Duration::from_secs(15);

/// What to do to the command when the lease is lost.
#[derive(Copy, Clone, PartialEq, Eq, Debug, ValueEnum)]
pub enum OnLost {
    /// SIGTERM, then SIGKILL after --kill-after: the command may clean up.
    Term,
    /// SIGKILL at once: nothing more happens under a lock that may be someone else's.
    Kill,
}

#[derive(Args)]
#[command(after_help = "Examples:
  lockstep lock backup --servers 127.0.0.1:7001,127.0.0.1:7002 -- ./backup.sh --full
  lockstep lock deploy --servers 10.0.0.1:7100 --wait 30s -- make deploy
  LOCKSTEP_CLIENT=7:SECRET lockstep lock deploy --servers 10.0.0.1:7100 -- make deploy
  lockstep lock catalog --shared --servers 10.0.0.1:7100 -- ./read-catalog.sh
  lockstep lock catalog --servers 10.0.0.1:7100 -- ./rewrite-catalog.sh
  lockstep lock gpu --permits 4 --servers 10.0.0.1:7100 -- ./train.sh

Modes: without --shared, lockstep holds the lock alone (a writer). With --shared, it holds it
beside any number of other --shared holders (readers, up to 64), but never beside a writer:
in the examples, any number of read-catalog.sh run together, and rewrite-catalog.sh runs
alone. With --permits N the lock is a semaphore of N: at most N holders at once, each taking
one permit (--permits implies --shared; add --exclusive to take all N permits at once, say for
maintenance). Every mode waits in the same fair line, in arrival order: a writer waiting
behind readers is not overtaken by readers that come after it. Every holder gets its own
fencing token. While a lock is in use, every --permits must name the same N (and a lock used
without --permits takes none): a different N is refused at once, exit 78.

Without a credential (--client ID:SECRET, --client-file PATH or LOCKSTEP_CLIENT=ID:SECRET),
lockstep registers a new client and prints its credential once, on stderr, before it waits
for the lock: keep it to release the lock by hand if lockstep is killed and its session
never expires (--ttl none). Command-line
arguments are visible to other users in `ps`: prefer LOCKSTEP_CLIENT or --client-file.

The command sees LOCKSTEP_FENCING_TOKEN (the grant's fencing token: pass it to every resource
the lock protects), LOCKSTEP_LOCK and LOCKSTEP_CLIENT_ID, but not LOCKSTEP_CLIENT: the secret
stays with lockstep. The lock is released when the command exits, whatever its status. On
SIGINT or SIGTERM, lockstep sends the command SIGTERM, waits for it (SIGKILL after
--kill-after), releases the lock and exits.

Sessions: a new client registers with a session of --ttl (15s by default) that lockstep renews
every TTL/3 while it waits and while the command runs. If lockstep is killed (SIGKILL, a
crash, a dead machine), the cluster expires the session about one TTL later and frees the lock
for the next client, with a larger fencing token. If the lease is lost while the command runs
(no renewal acknowledged before the lease ran out by lockstep's own clock, or the cluster
answered session_expired), lockstep says why on stderr, stops the command (--on-lost: SIGTERM
then SIGKILL after --kill-after, or SIGKILL at once), does not release the lock (it may already
be another client's) and exits 76. --ttl none: a session that never expires (a killed run then
holds the lock until someone releases it with its credential).

Exit codes: the command's own; 128+N if a signal N killed it; 75 the lock was not acquired
within --wait (the message names the holder); 76 the session's lease was lost (the command was
stopped, the lock not released); 78 the lock is in use with other permits than --permits
named (the message says which); 126 the command cannot be executed; 127 the command was not
found; 130 interrupted while waiting for the lock; 2 any other error (bad input such as a
malformed credential or --ttl, no server reachable, timeout, a refusal such as unauthorized
or a TTL outside the servers' bounds, --permits outside 1 to 64, --shared with --exclusive).")]
pub struct LockArgs {
    /// The lock to hold while the command runs.
    #[arg(value_parser = parse_lock_name)]
    pub name: String,
    #[command(flatten)]
    pub connect: Connect,
    /// How long to wait for the lock while another client holds it (0 tries once), in the
    /// lock's fair line: a blocking acquire, served in the order the waiters came, woken only
    /// when the lock is handed to it (no polling). Default: wait forever, like flock (in
    /// one-hour acquires, the protocol's longest wait, each joining the line again at its end).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Hold the lock shared: beside other --shared holders (readers), never beside a writer
    /// (a run without --shared). See "Modes" below.
    #[arg(long, conflicts_with = "exclusive")]
    pub shared: bool,
    /// Hold the lock alone (the default). With --permits, takes all N permits at once.
    #[arg(long)]
    pub exclusive: bool,
    /// The lock is a semaphore of N permits (1 to 64): at most N holders at once, each taking
    /// one. Implies --shared unless --exclusive is given. Every holder must name the same N.
    #[arg(long, value_name = "N", value_parser = parse_permits)]
    pub permits: Option<u32>,
    /// The TTL of the new client's session (`15s`, `2m`), or `none` for a session that never
    /// expires. Default: 15s. Only for a new client: refused with a credential, whose session
    /// keeps the TTL it was registered with (and is kept alive all the same).
    #[arg(long, value_name = "DURATION|none", value_parser = parse_ttl)]
    pub ttl: Option<Ttl>,
    /// What to do to the command when the session's lease is lost.
    #[arg(long, value_enum, value_name = "ACTION", default_value = "term")]
    pub on_lost: OnLost,
    /// How long the command has, after SIGTERM (on SIGINT/SIGTERM to lockstep, or a lost
    /// lease with --on-lost term), to exit before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub kill_after: Duration,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `--permits`: a whole number from 1 to [`PERMITS_MAX`].
fn parse_permits(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(permits) if (1..=PERMITS_MAX).contains(&permits) => Ok(permits),
        _ => Err(format!(
            "`{text}` is not a number of permits: a semaphore has 1 to {PERMITS_MAX} permits"
        )),
    }
}

impl LockArgs {
    /// What the flags claim: `--permits` alone is one permit (shared), as on the wire.
    pub fn claim(&self) -> Claim {
        let mode = if self.shared || (self.permits.is_some() && !self.exclusive) {
            Mode::Shared
        } else {
            Mode::Exclusive
        };
        Claim {
            mode,
            permits: self.permits,
        }
    }
}

/// How acquiring ended.
enum Acquired {
    Granted {
        token: u64,
    },
    /// Not granted within `--wait`; `holder` says who held it when the wait ran out.
    NotWithin {
        holder: String,
    },
    /// The lock is in use with these permits (`None`: none), not those claimed.
    PermitsMismatch {
        permits: Option<u32>,
    },
    Interrupted,
    /// The session's lease was lost while waiting.
    LeaseLost(Lost),
    Failed(Error),
}

/// How the command ended.
enum CommandEnd {
    /// It ended (or could not start): exit with this code and release the lock.
    Exited(u8),
    /// The lease was lost while it ran (the reason is on stderr already); it was stopped
    /// and ended with `status`.
    LeaseLost { status: ExitStatus },
}

/// A granted lock. Dropping it releases the lock (best effort, within the operation timeout).
struct HeldLock<'a> {
    client: &'a mut Client,
    name: &'a str,
    released: bool,
}

impl HeldLock<'_> {
    /// Releases now and says what happened on stderr if it did not work.
    fn release(mut self) {
        self.release_once();
    }

    /// Leaves the lock to the cluster: after a lost lease it may already be another client's,
    /// and a release could only fail or, worse, look like it succeeded.
    fn abandon(mut self) {
        self.released = true;
    }

    fn release_once(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let id = self.client.client_id().map_or(0, |id| id.0);
        match self.client.release(self.name) {
            Ok(Release::Released) => {}
            Ok(Release::NotOwner) => eprintln!(
                "lockstep: warning: `{}` was no longer held by client {id} at release",
                self.name
            ),
            Err(error) => eprintln!(
                "lockstep: warning: could not release `{}` ({error}); release it with: lockstep \
                 client --servers {} --client {id}:SECRET release {} (SECRET: client {id}'s \
                 secret, as registration printed it)",
                self.name,
                self.client.servers().join(","),
                self.name
            ),
        }
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        self.release_once();
    }
}

pub fn run(args: LockArgs) -> u8 {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    if let Err(error) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("lockstep: warning: signals will not release the lock: {error}");
    }
    let (mut client, keeper) = match start_session(&args) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let acquired = acquire(
        &mut client,
        (&args.name, args.claim()),
        args.wait,
        &interrupted,
        &keeper,
    );
    let token = match granted_token(acquired, &mut client, &args) {
        Ok(token) => token,
        Err(code) => return code,
    };
    if let LeaseState::Lost(lost) = keeper.state() {
        // Granted just as the lease ran out: nothing may run under it, and the lock may be
        // someone else's by now, so it is not released either.
        eprintln!(
            "lockstep: the session's lease was lost as `{}` was granted: {lost}; the command \
             was not started and the lock not released",
            args.name
        );
        return EXIT_LEASE_LOST;
    }
    let client_id = client.client_id().map_or(0, |id| id.0);
    let held = HeldLock {
        client: &mut client,
        name: &args.name,
        released: false,
    };
    match run_command(&args, token, client_id, &interrupted, &keeper) {
        CommandEnd::Exited(code) => {
            // Released while the keeper still renews: the session is alive for the release.
            held.release();
            code
        }
        CommandEnd::LeaseLost { status } => {
            held.abandon();
            // Why was said when it happened (`Watch::say_lost`); this is how it ended.
            eprintln!(
                "lockstep: the command ended ({status}) after the lease was lost; `{}` was not \
                 released (the cluster frees it when it expires the session); exiting \
                 {EXIT_LEASE_LOST}",
                args.name
            );
            EXIT_LEASE_LOST
        }
    }
}

/// The grant's fencing token, or the exit code after saying on stderr why there is none.
fn granted_token(acquired: Acquired, client: &mut Client, args: &LockArgs) -> Result<u64, u8> {
    match acquired {
        Acquired::Granted { token } => Ok(token),
        Acquired::NotWithin { holder } => {
            eprintln!(
                "lockstep: `{}` not acquired within {}: {holder}",
                args.name,
                shown(args.wait.unwrap_or_default())
            );
            Err(EXIT_NOT_ACQUIRED)
        }
        Acquired::PermitsMismatch { permits } => {
            let declared = match permits {
                Some(permits) => format!("as a semaphore of {permits} permits"),
                None => "without permits".to_string(),
            };
            let asked = match args.permits {
                Some(permits) => format!("--permits {permits}"),
                None => "no --permits".to_string(),
            };
            eprintln!(
                "lockstep: `{}` is in use {declared}, and this run named {asked}: every holder \
                 of a lock in use must name the same permits; nothing was taken",
                args.name
            );
            Err(EXIT_PERMITS_MISMATCH)
        }
        Acquired::Interrupted => {
            eprintln!("lockstep: interrupted while waiting for `{}`", args.name);
            Err(EXIT_INTERRUPTED)
        }
        Acquired::LeaseLost(lost) => {
            eprintln!(
                "lockstep: the session's lease was lost while waiting for `{}`: {lost}",
                args.name
            );
            Err(EXIT_LEASE_LOST)
        }
        Acquired::Failed(error) => {
            if let Error::TimedOut {
                effect_unknown: true,
                ..
            } = error
            {
                // The last preempt may have been granted: give the lock back to be sure.
                drop(HeldLock {
                    client,
                    name: &args.name,
                    released: false,
                });
            }
            eprintln!("lockstep: error: taking `{}`: {error}", args.name);
            Err(EXIT_ERROR)
        }
    }
}

/// Registers a new client (with `--ttl`, 15 s by default), or takes the credential given, and
/// starts keeping its session alive. `Err` is the exit code, after saying why on stderr.
fn start_session(args: &LockArgs) -> Result<(Client, SessionKeeper), u8> {
    let mut client = args
        .connect
        .client_with_session(args.ttl, Ttl::Expires(TTL_DEFAULT))
        .map_err(|error| {
            eprintln!("lockstep: error: {error}");
            EXIT_ERROR
        })?;
    // Before the wait, so that the operator has the credential even if lockstep is killed
    // while it holds the lock.
    if let Err(error) = register_if_new(&mut client) {
        eprintln!("lockstep: error: registering a client: {error}");
        return Err(EXIT_ERROR);
    }
    // From before the wait: a long wait must not let the session lapse.
    match client.keep_session_alive() {
        Ok(keeper) => Ok((client, keeper)),
        Err(Error::Rejected {
            code: ErrorCode::SessionExpired,
            ..
        }) => {
            eprintln!(
                "lockstep: the session's lease was lost before waiting for `{}`: {}",
                args.name,
                Lost::SessionExpired
            );
            Err(EXIT_LEASE_LOST)
        }
        Err(error) => {
            eprintln!("lockstep: error: keeping the session alive: {error}");
            Err(EXIT_ERROR)
        }
    }
}

/// Waits in the lock's line (blocking acquires, one hour at most each, the protocol's bound)
/// until granted, `wait` runs out, an interrupt, or the session's lease is lost. An interrupt
/// or a lost lease cancels the wait at once.
fn acquire(
    client: &mut Client,
    (name, claim): (&str, Claim),
    wait: Option<Duration>,
    interrupted: &AtomicBool,
    keeper: &SessionKeeper,
) -> Acquired {
    let give_up_at = wait.map(|wait| Instant::now() + wait);
    let longest = Duration::from_millis(ACQUIRE_WAIT_MS_MAX);
    let mut stop =
        || interrupted.load(Ordering::SeqCst) || matches!(keeper.state(), LeaseState::Lost(_));
    // Bounded by `wait` (forever without it, like flock), the interrupt flag and the lease:
    // each round is one acquire of at most an hour.
    loop {
        let remaining =
            give_up_at.map_or(longest, |at| at.saturating_duration_since(Instant::now()));
        // The round waits all that is left, unless that is over the protocol's bound (or,
        // without --wait, forever).
        let last_round = give_up_at.is_some() && remaining <= longest;
        let remaining = remaining.min(longest);
        let answer = match client.acquire_with_until(name, remaining, claim, &mut stop) {
            Ok(answer) => answer,
            Err(Error::Rejected {
                code: ErrorCode::SessionExpired,
                ..
            }) => return Acquired::LeaseLost(Lost::SessionExpired),
            Err(error) => return Acquired::Failed(error),
        };
        if stop() {
            return stopped(client, name, answer, interrupted, keeper);
        }
        match answer {
            Acquire::Granted { token } => return Acquired::Granted { token },
            Acquire::HeldBy { owner } => {
                return Acquired::NotWithin {
                    holder: format!("client {} holds it (the earliest, if several do)", owner.0),
                };
            }
            Acquire::PermitsMismatch { permits } => return Acquired::PermitsMismatch { permits },
            Acquire::TimedOut if last_round => {
                return Acquired::NotWithin {
                    holder: holder(client, name),
                };
            }
            // An hour-long round ran out: join the line again.
            Acquire::TimedOut => {}
            Acquire::Cancelled => {
                return Acquired::Failed(Error::InvalidInput(
                    "the wait was cancelled by another process acting as this client".into(),
                ));
            }
        }
    }
}

/// The wait ended because of an interrupt or a lost lease. A grant that came first is given
/// back after an interrupt (nothing will run under it), and left alone after a lost lease (it
/// may be someone else's by now).
fn stopped(
    client: &mut Client,
    name: &str,
    answer: Acquire,
    interrupted: &AtomicBool,
    keeper: &SessionKeeper,
) -> Acquired {
    if let LeaseState::Lost(lost) = keeper.state() {
        return Acquired::LeaseLost(lost);
    }
    if let Acquire::Granted { .. } = answer
        && interrupted.load(Ordering::SeqCst)
    {
        HeldLock {
            client,
            name,
            released: false,
        }
        .release();
    }
    Acquired::Interrupted
}

/// Who holds `name` now, for the message after a wait ran out (best effort).
fn holder(client: &mut Client, name: &str) -> String {
    match client.check(name, Consistency::Local) {
        Ok(Check::Owner { owner, .. }) => format!("client {} holds it", owner.0),
        Ok(Check::Shared { holders, .. }) => format!("{holders} client(s) hold it shared"),
        Ok(Check::Free) | Err(_) => "it was just released, but not to this client".to_string(),
    }
}

/// Runs the command to its end, watching the lease and the interrupt flag.
fn run_command(
    args: &LockArgs,
    token: u64,
    client_id: u64,
    interrupted: &AtomicBool,
    keeper: &SessionKeeper,
) -> CommandEnd {
    let (program, arguments) = args.command.split_first().expect("clap requires a command");
    let spawned = Command::new(program)
        .args(arguments)
        .env("LOCKSTEP_FENCING_TOKEN", token.to_string())
        .env("LOCKSTEP_LOCK", &args.name)
        .env("LOCKSTEP_CLIENT_ID", client_id.to_string())
        // The credential stays with lockstep: the command acts through the fencing token.
        .env_remove(CLIENT_ENV)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let shown = program.to_string_lossy();
            return CommandEnd::Exited(match error.kind() {
                std::io::ErrorKind::NotFound => {
                    eprintln!("lockstep: {shown}: command not found");
                    EXIT_NOT_FOUND
                }
                _ => {
                    eprintln!("lockstep: {shown}: cannot execute: {error}");
                    EXIT_CANNOT_EXECUTE
                }
            });
        }
    };
    let watch = Watch {
        interrupted,
        keeper,
        on_lost: args.on_lost,
        kill_after: args.kill_after,
        lock: &args.name,
    };
    match watch.wait_for(child) {
        Ok(end) => end,
        Err(error) => {
            eprintln!("lockstep: waiting for the command failed: {error}");
            CommandEnd::Exited(EXIT_ERROR)
        }
    }
}

/// What the wait for the command watches besides the command itself.
struct Watch<'a> {
    interrupted: &'a AtomicBool,
    keeper: &'a SessionKeeper,
    on_lost: OnLost,
    kill_after: Duration,
    lock: &'a str,
}

impl Watch<'_> {
    /// Waits for the child. After an interrupt it terminates it (SIGTERM, then SIGKILL after
    /// `kill_after`) and still waits, so that the lock is released only once it is gone. After
    /// a lost lease it stops it as `on_lost` says, and the lock is not released.
    fn wait_for(&self, mut child: Child) -> std::io::Result<CommandEnd> {
        let mut terminated_at: Option<Instant> = None;
        let mut lost: Option<Lost> = None;
        let mut in_jeopardy = false;
        // Bounded by the child: once terminated, SIGKILL follows after `kill_after`.
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(match lost {
                    Some(_) => CommandEnd::LeaseLost { status },
                    None => CommandEnd::Exited(exit_code(status)),
                });
            }
            let state = self.keeper.state();
            self.say_jeopardy(&state, &mut in_jeopardy);
            if lost.is_none()
                && let LeaseState::Lost(now_lost) = state
            {
                self.say_lost(&now_lost);
                lost = Some(now_lost);
                if self.on_lost == OnLost::Kill {
                    child.kill()?;
                    continue;
                }
            }
            let stop = lost.is_some() || self.interrupted.load(Ordering::SeqCst);
            match terminated_at {
                None if stop => {
                    super::terminate(&child);
                    terminated_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() >= self.kill_after => {
                    child.kill()?;
                    let status = child.wait()?;
                    return Ok(match lost {
                        Some(_) => CommandEnd::LeaseLost { status },
                        None => CommandEnd::Exited(exit_code(status)),
                    });
                }
                _ => {}
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Warns once when renewals start failing, and says so when one gets through again: the
    /// operator sees trouble coming before the command is stopped.
    fn say_jeopardy(&self, state: &LeaseState, in_jeopardy: &mut bool) {
        match state {
            LeaseState::Jeopardy { until, failure } if !*in_jeopardy => {
                *in_jeopardy = true;
                eprintln!(
                    "lockstep: warning: renewing the session failed ({failure}); the lease on \
                     `{}` holds for {} more, and lockstep keeps trying",
                    self.lock,
                    shown(until.saturating_duration_since(Instant::now()))
                );
            }
            LeaseState::Alive { .. } if *in_jeopardy => {
                *in_jeopardy = false;
                eprintln!(
                    "lockstep: the session was renewed again; the lease on `{}` holds",
                    self.lock
                );
            }
            _ => {}
        }
    }

    fn say_lost(&self, lost: &Lost) {
        let action = match self.on_lost {
            OnLost::Term => format!(
                "sending the command SIGTERM (SIGKILL after {})",
                shown(self.kill_after)
            ),
            OnLost::Kill => "killing the command (SIGKILL)".to_string(),
        };
        eprintln!(
            "lockstep: lost the lease on `{}`: {lost}; {action}. The lock is not released: it \
             may already be another client's",
            self.lock
        );
    }
}

/// The command's exit code, or 128 + the signal that killed it, as shells report it.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(EXIT_ERROR);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(EXIT_ERROR);
        }
    }
    EXIT_ERROR
}
