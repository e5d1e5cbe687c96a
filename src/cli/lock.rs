//! `lockstep lock NAME -- COMMAND...`: run a command while holding a lock, like `flock`,
//! `etcdctl lock` or `consul lock`.
//!
//! Takes the lock (retrying with a capped, jittered back-off while another client holds it,
//! for up to `--wait`, forever by default), runs the command with the fencing token in its
//! environment, and releases the lock when the command ends, fails, or lockstep is
//! interrupted. It must never leave the lock held behind it while it can still reach the
//! cluster: every path out after a grant goes through [`HeldLock`], whose `Drop` releases.

use super::client::{
    CLIENT_ENV, Connect, EXIT_ERROR, parse_duration, parse_lock_name, register_if_new,
};
use clap::Args;
use lockstep::client::{Client, Error, Preempt, Release};
use rand::RngExt;
use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The lock was not acquired within `--wait` (EX_TEMPFAIL from sysexits.h: try again later).
pub const EXIT_NOT_ACQUIRED: u8 = 75;
/// The command exists but cannot be run (as shells do).
pub const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The command was not found (as shells do).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Interrupted (SIGINT or SIGTERM) before the command started: 128 + SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// First pause after `held_by`; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(25);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How often the waits look at the interrupt flag and the child.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// After an interrupt, how long the command has to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);

#[derive(Args)]
#[command(after_help = "Examples:
  lockstep lock backup --servers 127.0.0.1:7001,127.0.0.1:7002 -- ./backup.sh --full
  lockstep lock deploy --servers 10.0.0.1:7100 --wait 30s -- make deploy
  LOCKSTEP_CLIENT=7:SECRET lockstep lock deploy --servers 10.0.0.1:7100 -- make deploy

Without a credential (--client ID:SECRET, --client-file PATH or LOCKSTEP_CLIENT=ID:SECRET),
lockstep registers a new client and prints its credential once, on stderr, before it waits
for the lock: keep it to release the lock by hand if lockstep is killed. Command-line
arguments are visible to other users in `ps`: prefer LOCKSTEP_CLIENT or --client-file.

The command sees LOCKSTEP_FENCING_TOKEN (the grant's fencing token: pass it to every resource
the lock protects), LOCKSTEP_LOCK and LOCKSTEP_CLIENT_ID, but not LOCKSTEP_CLIENT: the secret
stays with lockstep. The lock is released when the command exits, whatever its status. On
SIGINT or SIGTERM, lockstep sends the command SIGTERM, waits for it (SIGKILL after 10s),
releases the lock and exits.

Exit codes: the command's own; 128+N if a signal N killed it; 75 the lock was not acquired
within --wait (the message names the holder); 126 the command cannot be executed; 127 the
command was not found; 130 interrupted while waiting for the lock; 2 any other error (bad
input such as a malformed credential, no server reachable, timeout, a refusal such as
unauthorized).")]
pub struct LockArgs {
    /// The lock to hold while the command runs.
    #[arg(value_parser = parse_lock_name)]
    pub name: String,
    #[command(flatten)]
    pub connect: Connect,
    /// How long to wait for the lock while another client holds it (0 tries once).
    /// Default: wait forever, like flock.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// How acquiring ended.
enum Acquired {
    Granted {
        token: u64,
    },
    /// Still held by `holder` when `--wait` ran out.
    NotWithin {
        holder: u64,
    },
    Interrupted,
    Failed(Error),
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
    let mut client = match args.connect.client() {
        Ok(client) => client,
        Err(error) => {
            eprintln!("lockstep: error: {error}");
            return EXIT_ERROR;
        }
    };
    // Before the wait, so that the operator has the credential even if lockstep is killed
    // while it holds the lock.
    if let Err(error) = register_if_new(&mut client) {
        eprintln!("lockstep: error: registering a client: {error}");
        return EXIT_ERROR;
    }
    let acquired = acquire(&mut client, &args.name, args.wait, &interrupted);
    let token = match acquired {
        Acquired::Granted { token } => token,
        Acquired::NotWithin { holder } => {
            eprintln!(
                "lockstep: `{}` not acquired within {:?}: client {holder} holds it",
                args.name,
                args.wait.unwrap_or_default()
            );
            return EXIT_NOT_ACQUIRED;
        }
        Acquired::Interrupted => {
            eprintln!("lockstep: interrupted while waiting for `{}`", args.name);
            return EXIT_INTERRUPTED;
        }
        Acquired::Failed(error) => {
            if let Error::TimedOut {
                effect_unknown: true,
                ..
            } = error
            {
                // The last preempt may have been granted: give the lock back to be sure.
                drop(HeldLock {
                    client: &mut client,
                    name: &args.name,
                    released: false,
                });
            }
            eprintln!("lockstep: error: taking `{}`: {error}", args.name);
            return EXIT_ERROR;
        }
    };
    let client_id = client.client_id().map_or(0, |id| id.0);
    let held = HeldLock {
        client: &mut client,
        name: &args.name,
        released: false,
    };
    let code = run_command(&args, token, client_id, &interrupted);
    held.release();
    code
}

/// Preempts with a new seq each round until granted, `wait` runs out, or an interrupt.
fn acquire(
    client: &mut Client,
    name: &str,
    wait: Option<Duration>,
    interrupted: &AtomicBool,
) -> Acquired {
    let give_up_at = wait.map(|wait| Instant::now() + wait);
    let mut pause = RETRY_PAUSE_MIN;
    let mut rng = rand::rng();
    // Bounded by `wait` (forever without it, like flock) and by the interrupt flag.
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return Acquired::Interrupted;
        }
        let holder = match client.preempt(name) {
            Ok(Preempt::Granted { token }) => return Acquired::Granted { token },
            Ok(Preempt::HeldBy { owner }) => owner.0,
            Err(error) => return Acquired::Failed(error),
        };
        let now = Instant::now();
        if give_up_at.is_some_and(|at| now >= at) {
            return Acquired::NotWithin { holder };
        }
        // Jitter spreads waiting clients apart, so that a release is not met by a stampede.
        let jittered = pause.mul_f64(rng.random_range(0.5..1.0));
        let until = give_up_at.map_or(now + jittered, |at| at.min(now + jittered));
        while Instant::now() < until && !interrupted.load(Ordering::SeqCst) {
            std::thread::sleep(POLL_INTERVAL.min(until.saturating_duration_since(Instant::now())));
        }
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

/// Runs the command to its end; returns the exit code lockstep should exit with.
fn run_command(args: &LockArgs, token: u64, client_id: u64, interrupted: &AtomicBool) -> u8 {
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
            return match error.kind() {
                std::io::ErrorKind::NotFound => {
                    eprintln!("lockstep: {shown}: command not found");
                    EXIT_NOT_FOUND
                }
                _ => {
                    eprintln!("lockstep: {shown}: cannot execute: {error}");
                    EXIT_CANNOT_EXECUTE
                }
            };
        }
    };
    match wait_for(child, interrupted) {
        Ok(status) => exit_code(status),
        Err(error) => {
            eprintln!("lockstep: waiting for the command failed: {error}");
            EXIT_ERROR
        }
    }
}

/// Waits for the child; after an interrupt, terminates it (SIGTERM, then SIGKILL after the
/// grace period) and still waits, so that the lock is released only once it is gone.
fn wait_for(mut child: Child, interrupted: &AtomicBool) -> std::io::Result<ExitStatus> {
    let mut terminated_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if interrupted.load(Ordering::SeqCst) {
            match terminated_at {
                None => {
                    super::terminate(&child);
                    terminated_at = Some(Instant::now());
                }
                Some(at) if at.elapsed() >= TERMINATE_GRACE => {
                    child.kill()?;
                    return child.wait();
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(POLL_INTERVAL);
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
