//! `lockstep client`: one operation against a real cluster, answered in plain words or JSON,
//! and the flag parsers that `lockstep lock` and the TCP bench share with it.
//!
//! Exit codes: 0 the operation succeeded (granted, released, checked), 1 it was refused (held
//! by another client, not the owner), 2 an error (bad input, unreachable, timeout, refusal).

use clap::{Args, Subcommand};
use lockstep::client::{self, Check, Client, ClientOptions, Credential, Error, Preempt, Release};
use lockstep::net::protocol::ErrorCode;
use lockstep::node::Consistency;
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable that holds a credential, `ID:SECRET`, when neither `--client` nor
/// `--client-file` is given.
pub const CLIENT_ENV: &str = "LOCKSTEP_CLIENT";

/// Most bytes read from a `--client-file` (a credential is under 64): a path such as
/// `/dev/zero` must not fill memory.
const CLIENT_FILE_BYTES_MAX: u64 = 4096;

pub const EXIT_OK: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// `--servers`: a checked, comma-separated `host:port` list.
#[derive(Clone, Debug)]
pub struct ServerList(pub Vec<String>);

pub fn parse_server_list(text: &str) -> Result<ServerList, String> {
    client::parse_servers(text).map(ServerList)
}

/// A lock name within the protocol's limits (1 to 256 bytes).
pub fn parse_lock_name(text: &str) -> Result<String, String> {
    client::validate_lock_name(text)?;
    Ok(text.to_string())
}

/// A duration such as `500ms`, `5s` or `2m`; a bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    lockstep::sim::scenario::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration (a number with ms, s or m: 5s)"))
}

/// The text of `--client`, kept as given until [`Connect::credential`] reads it: a value
/// parser's error would be printed by clap with the value in it, and the value holds a secret.
/// `Debug` hides it.
#[derive(Clone)]
pub struct CredentialText(String);

impl std::fmt::Debug for CredentialText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialText(<redacted>)")
    }
}

/// `--client ID:SECRET`: taken as it is; read by [`Connect::credential`].
pub fn credential_text(text: &str) -> Result<CredentialText, String> {
    Ok(CredentialText(text.to_string()))
}

/// Where a run's credential came from.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum CredentialSource {
    Flag,
    File,
    Environment,
}

/// The first line of a credential file, refusing anything that is not one `ID:SECRET` line.
fn read_credential_file(path: &std::path::Path) -> Result<Credential, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|error| format!("cannot open it: {error}"))?;
    warn_if_others_can_read(&file, path);
    let mut bytes = Vec::new();
    file.take(CLIENT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read it: {error}"))?;
    if bytes.len() as u64 > CLIENT_FILE_BYTES_MAX {
        return Err(format!(
            "it is over {CLIENT_FILE_BYTES_MAX} bytes; it must hold one line, ID:SECRET"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    match lines.as_slice() {
        [line] => line.parse(),
        [] => Err("it is empty; it must hold one line, ID:SECRET".to_string()),
        more => Err(format!(
            "it holds {} lines; it must hold one line, ID:SECRET (in {shown})",
            more.len()
        )),
    }
}

/// A credential file that other users can read gives the client away: say so (as ssh does for
/// keys), but go on.
#[cfg(unix)]
fn warn_if_others_can_read(file: &std::fs::File, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = file.metadata()
        && metadata.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "lockstep: warning: {} can be read by other users, who can then act as its \
             client; chmod 600 it",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_read(_file: &std::fs::File, _path: &std::path::Path) {}

/// The one line that hands a newly registered client's credential to its operator, on stderr
/// and never again in the run: stdout (and `--json`) may be logged or piped on.
pub fn announce_registration(credential: &Credential) {
    let argument = credential.to_argument();
    eprintln!(
        "lockstep: registered as client {id}; to act as it again (to release its locks), pass \
         --client {argument} or set {CLIENT_ENV}={argument}. Keep it secret: whoever has it can \
         act as this client. It is not shown again.",
        id = credential.id.0
    );
}

/// A timeout: a duration of at least 1 ms.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration < Duration::from_millis(1) => {
            Err(format!("{text:?} is too short: at least 1ms"))
        }
        duration => Ok(duration),
    }
}

/// `--ttl`: the TTL of the session a new client registers with, or none.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Ttl {
    /// The cluster releases the client's locks once it has heard no renewal for this long.
    Expires(Duration),
    /// A session that never expires: the locks stay until released.
    Never,
}

impl Ttl {
    pub fn duration(self) -> Option<Duration> {
        match self {
            Ttl::Expires(ttl) => Some(ttl),
            Ttl::Never => None,
        }
    }
}

/// `--ttl DURATION` (`15s`, `2m`) or `--ttl none`.
pub fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Ttl::Never);
    }
    let duration = parse_duration(text)
        .map_err(|problem| format!("{problem}, or `none` for a session that never expires"))?;
    if duration < Duration::from_millis(1) {
        return Err(format!(
            "{text:?} is too short: a session TTL is at least 1ms (servers accept 1s to 1h \
             unless configured otherwise); `none` asks for a session that never expires"
        ));
    }
    Ok(Ttl::Expires(duration))
}

impl CredentialSource {
    /// Where the credential came from, as the operator wrote it.
    pub fn flag(self) -> &'static str {
        match self {
            CredentialSource::Flag => "--client",
            CredentialSource::File => "--client-file",
            CredentialSource::Environment => CLIENT_ENV,
        }
    }
}

/// The connection flags every client-side command takes.
#[derive(Args, Clone, Debug)]
pub struct Connect {
    /// The cluster's client addresses, comma-separated; tried in this order.
    #[arg(long, value_name = "HOST:PORT,...", value_parser = parse_server_list)]
    pub servers: ServerList,
    /// Act as this existing client: its id and secret, as registration printed them (locks
    /// belong to clients: to release a lock another run took, pass the credential it
    /// printed). Other users can see command-line arguments (in `ps`): prefer
    /// LOCKSTEP_CLIENT=ID:SECRET in the environment, or --client-file. Without any of the
    /// three, a new client is registered and its credential printed once, on stderr.
    #[arg(
        long,
        value_name = "ID:SECRET",
        value_parser = credential_text,
        conflicts_with = "client_file"
    )]
    pub client: Option<CredentialText>,
    /// Act as the client whose credential this file holds: one line, ID:SECRET. Keep the
    /// file readable by you only (chmod 600).
    #[arg(long, value_name = "PATH")]
    pub client_file: Option<PathBuf>,
    /// How long one operation may take, retries included.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The drift bound the servers run with (their --max-clock-drift), as a fraction (0.01) or
    /// a percentage (1%): the lease this client believes after a renewal is shortened by it.
    /// Give the same bound as the servers: a smaller one makes the client trust its lease
    /// longer than the servers promise it.
    #[arg(
        long,
        value_name = "FRACTION",
        default_value = "0.01",
        value_parser = lockstep::net::runtime::config::parse_clock_drift
    )]
    pub max_clock_drift: u32,
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// `--tls-ca` and `--tls-server-name`, shared with the TCP bench.
#[derive(Args, Clone, Debug)]
pub struct TlsFlags {
    /// Speak TLS, trusting server certificates signed by the CA(s) in this PEM file, for
    /// servers whose --tls-cert it signed. Each certificate is verified for the host of the
    /// address dialled (an IP or DNS name it must carry) unless --tls-server-name is given.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: verify every server's certificate for this DNS name or IP instead of
    /// the host of its address.
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl TlsFlags {
    /// The TLS the flags ask for; `Err` names the unusable file or name.
    pub fn load(&self) -> Result<Option<client::ClientTls>, String> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let tls = client::ClientTls::from_ca_file(ca).map_err(|e| format!("--tls-ca {e}"))?;
        match &self.tls_server_name {
            None => Ok(Some(tls)),
            Some(name) => tls
                .with_server_name(name)
                .map(Some)
                .map_err(|e| format!("--tls-server-name: {e}")),
        }
    }
}

impl Connect {
    /// The credential to act as: `--client`, else `--client-file`, else `LOCKSTEP_CLIENT` (an
    /// empty one counts as unset); `None` registers a new client. Errors name where the bad
    /// credential came from, never its secret.
    pub fn credential(&self) -> Result<Option<(Credential, CredentialSource)>, String> {
        if let Some(CredentialText(text)) = &self.client {
            let credential = text
                .parse()
                .map_err(|problem| format!("--client: {problem}"))?;
            return Ok(Some((credential, CredentialSource::Flag)));
        }
        if let Some(path) = &self.client_file {
            let credential = read_credential_file(path)
                .map_err(|problem| format!("--client-file {}: {problem}", path.display()))?;
            return Ok(Some((credential, CredentialSource::File)));
        }
        match std::env::var_os(CLIENT_ENV) {
            None => Ok(None),
            Some(value) if value.is_empty() => Ok(None),
            Some(value) => {
                let credential = value
                    .to_str()
                    .ok_or_else(|| "it is not UTF-8 text".to_string())
                    .and_then(str::parse)
                    .map_err(|problem| format!("{CLIENT_ENV}: {problem}"))?;
                Ok(Some((credential, CredentialSource::Environment)))
            }
        }
    }

    /// A client for `--servers`, acting as the given credential if any; call
    /// [`register_if_new`] before its first operation. Without a credential it registers with
    /// the session TTL `ttl` asks for, or `default` without `--ttl`. A `--ttl` given with a credential is refused: nothing is
    /// registered then, and the session keeps the TTL it was registered with.
    pub fn client_with_session(&self, ttl: Option<Ttl>, default: Ttl) -> Result<Client, Error> {
        let credential = self.credential().map_err(Error::InvalidInput)?;
        if let (Some(ttl), Some((credential, source))) = (ttl, credential) {
            let shown = match ttl {
                Ttl::Expires(duration) => shown(duration),
                Ttl::Never => "none".to_string(),
            };
            return Err(Error::InvalidInput(format!(
                "--ttl {shown}: the TTL is chosen when a new client registers, but this run \
                 acts as existing client {} (its credential came from {}), whose session \
                 keeps the TTL it was registered with. Leave --ttl out, or leave the \
                 credential out to register a new client with this TTL",
                credential.id.0,
                source.flag()
            )));
        }
        let options = ClientOptions {
            operation_timeout: self.timeout,
            credential: credential.map(|(credential, _)| credential),
            tls: self.tls.load().map_err(Error::InvalidInput)?,
            session_ttl: ttl.unwrap_or(default).duration(),
            // Parts per million, as `parse_clock_drift` reads it.
            max_clock_drift: f64::from(self.max_clock_drift) / 1_000_000.0,
            ..ClientOptions::default()
        };
        Client::new(self.servers.0.clone(), options)
    }
}

/// Registers `client` if it has no credential yet, and hands the new credential to the
/// operator, once, on stderr. A `bad_request` to the hello is the TTL (the only thing in a
/// hello a server judges): the refusal then names `--ttl`.
pub fn register_if_new(client: &mut Client) -> Result<(), Error> {
    if client.credential().is_some() {
        return Ok(());
    }
    client.register().map_err(|error| match error {
        Error::Rejected {
            code: code @ ErrorCode::BadRequest,
            message,
        } => Error::Rejected {
            code,
            message: format!("--ttl: {message}"),
        },
        other => other,
    })?;
    let credential = client
        .credential()
        .expect("a registered client has a credential");
    announce_registration(&credential);
    Ok(())
}

#[derive(Args)]
#[command(after_help = "Examples:
  lockstep client --servers 127.0.0.1:7001,127.0.0.1:7002 preempt printer
  LOCKSTEP_CLIENT=7:SECRET lockstep client --servers 127.0.0.1:7001 release printer
  lockstep client --servers 127.0.0.1:7001 --client-file ~/.lockstep-client release printer
  lockstep client --servers 127.0.0.1:7001 check printer --linearizable
  lockstep client --servers 127.0.0.1:7001 --json preempt printer
  lockstep client --servers 127.0.0.1:7001 --ttl 30s preempt printer
  LOCKSTEP_CLIENT=7:SECRET lockstep client --servers 127.0.0.1:7001 keepalive

Without a credential (--client ID:SECRET, --client-file PATH or LOCKSTEP_CLIENT=ID:SECRET),
each run registers a new client and prints its credential once, on stderr: keep it to act
as that client again. The secret never appears on stdout, --json included. Command-line
arguments are visible to other users in `ps`: prefer LOCKSTEP_CLIENT or --client-file.

Sessions: by default a new client's session never expires, because a script that takes a lock
with one command and releases it with another has nobody renewing in between. With --ttl 30s
the cluster releases the client's locks once it has heard nothing from it for 30s: renew with
`keepalive` (every TTL/3) for as long as the locks are needed.

Exit codes: 0 granted, released, checked or kept alive; 1 refused (held by another client, not the owner);
2 error (bad input such as a malformed credential, no server reachable, timeout, a refusal
such as bad_request, unknown_client, unauthorized or session_expired).")]
pub struct ClientArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Register the new client with a session of this TTL (`30s`, `2m`): once the cluster
    /// hears nothing from it for that long, its locks are released. `none`, the default: a
    /// session that never expires. Only for a new client: refused with a credential.
    #[arg(long, value_name = "DURATION|none", value_parser = parse_ttl)]
    pub ttl: Option<Ttl>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub operation: ClientOperation,
}

#[derive(Subcommand)]
pub enum ClientOperation {
    /// Try to take a lock; prints the fencing token on a grant.
    Preempt {
        #[arg(value_parser = parse_lock_name)]
        name: String,
    },
    /// Give a lock back (only the client holding it can).
    Release {
        #[arg(value_parser = parse_lock_name)]
        name: String,
    },
    /// Who holds a lock.
    Check {
        #[arg(value_parser = parse_lock_name)]
        name: String,
        /// Ask the leader to confirm the answer is current (slower); default: the answering
        /// server's own replica.
        #[arg(long)]
        linearizable: bool,
    },
    /// Renew the client's session; prints its TTL and how long this client may believe it
    /// lives (counted from the keepalive's send, shortened by the 1% clock drift bound and a
    /// 100ms margin).
    Keepalive,
}

impl ClientOperation {
    fn name(&self) -> (&'static str, Option<&str>) {
        match self {
            ClientOperation::Preempt { name } => ("preempt", Some(name)),
            ClientOperation::Release { name } => ("release", Some(name)),
            ClientOperation::Check { name, .. } => ("check", Some(name)),
            ClientOperation::Keepalive => ("keepalive", None),
        }
    }
}

/// What the operation came to, for printing.
struct Report {
    code: u8,
    sentence: String,
    json: serde_json::Value,
}

pub fn run(args: ClientArgs) -> u8 {
    let (op, lock) = args.operation.name();
    let report = match args.connect.client_with_session(args.ttl, Ttl::Never) {
        Ok(mut client) => perform(&mut client, &args),
        Err(error) => error_report(&error),
    };
    if args.json {
        let mut object = json!({"op": op});
        if let Some(lock) = lock {
            object["lock"] = json!(lock);
        }
        for (key, value) in report.json.as_object().expect("reports are objects") {
            object[key] = value.clone();
        }
        println!("{object}");
    } else if report.code == EXIT_ERROR {
        eprintln!("error: {}", report.sentence);
    } else {
        println!("{}", report.sentence);
    }
    report.code
}

fn perform(client: &mut Client, args: &ClientArgs) -> Report {
    if let Err(error) = register_if_new(client) {
        return error_report(&error);
    }
    let result = match &args.operation {
        ClientOperation::Preempt { name } => client.preempt(name).map(|p| preempted(name, p)),
        ClientOperation::Release { name } => client.release(name).map(|r| released(name, r)),
        ClientOperation::Check { name, linearizable } => {
            let consistency = if *linearizable {
                Consistency::Linearizable
            } else {
                Consistency::Local
            };
            client.check(name, consistency).map(|c| checked(name, c))
        }
        ClientOperation::Keepalive => client
            .keepalive()
            .map(|kept| kept_alive(kept, std::time::Instant::now())),
    };
    let mut report = result.unwrap_or_else(|error| error_report(&error));
    let id = client.client_id();
    if let Some(id) = id {
        report.json["client"] = json!(id.0);
        if report.code != EXIT_ERROR {
            report.sentence = format!("{} (you are client id {})", report.sentence, id.0);
        }
    }
    let given = matches!(args.connect.credential(), Ok(Some(_)));
    if let ClientOperation::Release { .. } = &args.operation
        && !given
        && report.code == EXIT_REFUSED
    {
        report.sentence.push_str(
            "\nnote: without a credential this run registered a new client, which owns no \
             locks; pass the credential of the client that took the lock (--client ID:SECRET, \
             --client-file or LOCKSTEP_CLIENT)",
        );
    }
    if let (ClientOperation::Preempt { name }, Some(id)) = (&args.operation, client.client_id())
        && report.code == EXIT_OK
    {
        // The secret is not repeated here: stdout may be logged.
        report.sentence.push_str(&format!(
            "\nrelease it with: lockstep client --servers {} --client {}:SECRET release {name} \
             (SECRET: client {}'s secret, as registration printed it)",
            args.connect.servers.0.join(","),
            id.0,
            id.0
        ));
    }
    report
}

fn preempted(name: &str, preempt: Preempt) -> Report {
    match preempt {
        Preempt::Granted { token } => Report {
            code: EXIT_OK,
            sentence: format!("granted: you hold `{name}` with fencing token {token}"),
            json: json!({"result": "granted", "token": token}),
        },
        Preempt::HeldBy { owner } => Report {
            code: EXIT_REFUSED,
            sentence: format!(
                "held: client {} holds `{name}`; you did not get it",
                owner.0
            ),
            json: json!({"result": "held_by", "owner": owner.0}),
        },
        // This command claims no permits; said plainly all the same, should a cluster say it.
        Preempt::PermitsMismatch { permits } => Report {
            code: EXIT_REFUSED,
            sentence: format!(
                "permits mismatch: `{name}` is in use with {}; you did not get it",
                permits_shown(permits)
            ),
            json: json!({"result": "permits_mismatch", "permits": permits}),
        },
    }
}

/// Declared permits as a sentence says them.
fn permits_shown(permits: Option<u32>) -> String {
    match permits {
        Some(permits) => format!("{permits} permits"),
        None => "no permits (a plain lock)".to_string(),
    }
}

fn released(name: &str, release: Release) -> Report {
    match release {
        Release::Released => Report {
            code: EXIT_OK,
            sentence: format!("released: you no longer hold `{name}`"),
            json: json!({"result": "released"}),
        },
        Release::NotOwner => Report {
            code: EXIT_REFUSED,
            sentence: format!("not owner: you did not hold `{name}`; nothing changed"),
            json: json!({"result": "not_owner"}),
        },
    }
}

/// The answer to a keepalive: the TTL, and for how long from `now` the lease may be believed.
fn kept_alive(kept: client::KeptAlive, now: std::time::Instant) -> Report {
    let (Some(ttl), Some(until)) = (kept.ttl, kept.valid_until) else {
        return Report {
            code: EXIT_OK,
            sentence: "kept alive: the session has no TTL; it never expires".to_string(),
            json: json!({"result": "kept_alive", "ttl_ms": null, "lease_ms": null}),
        };
    };
    let lease = until.saturating_duration_since(now);
    Report {
        code: EXIT_OK,
        sentence: format!(
            "kept alive: the session's TTL is {}; you may believe it alive for {} more \
             (counted from this keepalive's send, less the clock drift bound and a margin): \
             renew before then",
            shown(ttl),
            shown(lease)
        ),
        json: json!({"result": "kept_alive", "ttl_ms": ttl.as_millis(),
                     "lease_ms": lease.as_millis()}),
    }
}

/// A duration the way an operator writes one: `15s`, `1.5s`, `250ms`.
pub fn shown(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis >= 1_000 && millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else if millis >= 1_000 {
        format!("{:.3}s", duration.as_secs_f64())
    } else {
        format!("{millis}ms")
    }
}

fn checked(name: &str, check: Check) -> Report {
    match check {
        Check::Free => Report {
            code: EXIT_OK,
            sentence: format!("free: nobody holds `{name}`"),
            json: json!({"result": "free"}),
        },
        Check::Owner { owner, token } => Report {
            code: EXIT_OK,
            sentence: format!(
                "held: client {} holds `{name}` with fencing token {token}",
                owner.0
            ),
            json: json!({"result": "owner", "owner": owner.0, "token": token}),
        },
        Check::Shared { holders, permits } => Report {
            code: EXIT_OK,
            sentence: format!(
                "held shared: {holders} client(s) hold `{name}` together ({})",
                permits_shown(permits)
            ),
            json: json!({"result": "shared", "holders": holders, "permits": permits}),
        },
    }
}

/// A short machine name for each error, for `--json`.
pub fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::InvalidInput(_) => "invalid_input",
        Error::NoServerReachable { .. } => "no_server_reachable",
        Error::TimedOut { .. } => "timed_out",
        Error::Rejected { .. } => "rejected",
        Error::Protocol { .. } => "protocol",
    }
}

fn error_report(error: &Error) -> Report {
    let mut json = json!({"result": "error", "error": error_kind(error),
                          "message": error.to_string()});
    match error {
        Error::TimedOut { effect_unknown, .. } => json["effect_unknown"] = json!(effect_unknown),
        Error::Rejected { code, .. } => json["code"] = json!(code.name()),
        _ => {}
    }
    Report {
        code: EXIT_ERROR,
        sentence: error.to_string(),
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_refuse_what_a_server_would_refuse() {
        assert!(parse_server_list("").is_err());
        assert!(parse_server_list("localhost").is_err());
        assert_eq!(
            parse_server_list("127.0.0.1:1,127.0.0.1:2").map(|list| list.0.len()),
            Ok(2)
        );
        assert!(parse_lock_name("").is_err());
        assert!(parse_lock_name(&"x".repeat(257)).is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_timeout("0s").is_err());
    }

    #[test]
    fn a_ttl_is_a_duration_of_at_least_a_millisecond_or_none() {
        assert_eq!(parse_ttl("15s"), Ok(Ttl::Expires(Duration::from_secs(15))));
        assert_eq!(parse_ttl("none"), Ok(Ttl::Never));
        assert_eq!(parse_ttl("NONE"), Ok(Ttl::Never));
        for bad in ["0", "0s", "0.5ms", "15", "forever", ""] {
            let error = parse_ttl(bad).expect_err(bad);
            assert!(error.contains("none"), "{bad}: {error}");
        }
        assert_eq!(shown(Duration::from_secs(15)), "15s");
        assert_eq!(shown(Duration::from_millis(2_500)), "2.500s");
        assert_eq!(shown(Duration::from_millis(250)), "250ms");
    }
}
