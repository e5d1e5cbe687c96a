//! `lockstep cluster up`: a whole cluster of real `lockstep server` processes on this machine,
//! for trying lockstep out and for benchmarks. It only starts, watches and stops children.

use clap::{Args, Subcommand};
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const EXIT_STOPPED: u8 = 0;
const EXIT_CHILD_DIED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const SERVERS_MAX: u16 = 9;
/// How long each server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long servers may take to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The cluster secret every server is given, in the cluster's directory.
const SECRET_FILE_NAME: &str = "cluster-secret";
/// Random bytes in a generated secret; written as twice as many hex digits.
const SECRET_RANDOM_BYTES: usize = 32;
/// With `--tls`: the directory (in the cluster's) of the CA certificate and the servers'.
const TLS_DIR_NAME: &str = "tls";

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a cluster of real server processes on 127.0.0.1 and watch over it until Ctrl-C.
    ///
    /// Each server is a `lockstep server` child process listening on BASE_PORT, BASE_PORT+1,
    /// ... with its data in DIR/s1, DIR/s2, ... and its log in DIR/s1.log, DIR/s2.log, ...
    /// Peers authenticate with the cluster secret in DIR/cluster-secret, generated (mode 0600)
    /// on the first start and reused after.
    /// With --tls, every connection is TLS: a new CA (its key kept in memory only) signs a
    /// certificate for each server, written with its key to DIR/tls/sN.pem and DIR/tls/sN.key
    /// at every start; clients pass --tls-ca DIR/tls/ca.pem.
    /// With --metrics-base-port, sN serves Prometheus metrics at
    /// http://127.0.0.1:METRICS_BASE_PORT+N-1/metrics.
    /// Ctrl-C (or SIGTERM) stops every server and exits 0. If a server dies on its own, the
    /// others are stopped and the exit code is 1. Exit code 2: bad flags, a port is taken, or
    /// the cluster secret or the TLS files cannot be written.
    #[command(after_help = "\
Examples:
  lockstep cluster up                       # 3 servers on 7001-7003, data in a temp dir
  lockstep cluster up --servers 5 --dir ./cluster --base-port 9001
  lockstep cluster up --tls --dir ./cluster # TLS everywhere; CA in ./cluster/tls/ca.pem
  lockstep cluster up --metrics-base-port 9101   # s1's metrics on 127.0.0.1:9101/metrics
  RUST_LOG=debug lockstep cluster up        # the servers log at debug level")]
    Up(UpArgs),
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many servers (1 to 9).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub servers: u16,
    /// Directory for data (DIR/sN), logs (DIR/sN.log) and the cluster secret
    /// (DIR/cluster-secret) [default: a new directory under the system temp dir].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Port of s1; sN listens on BASE_PORT+N-1.
    #[arg(long, default_value_t = 7001, value_name = "PORT")]
    pub base_port: u16,
    /// Cluster id passed to every server.
    #[arg(long, default_value = "lockstep", value_name = "NAME")]
    pub cluster_id: String,
    /// Passed to every server (see `lockstep server --help`).
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<u64>,
    /// Serve TLS (mutual for peers) with certificates made for this run in DIR/tls.
    #[arg(long)]
    pub tls: bool,
    /// Serve each server's Prometheus metrics: sN on 127.0.0.1:PORT+N-1 (`--metrics` of
    /// `lockstep server`) [default: no metrics].
    #[arg(long, value_name = "PORT")]
    pub metrics_base_port: Option<u16>,
}

pub fn run(command: ClusterCommand) -> u8 {
    match command {
        ClusterCommand::Up(args) => up(args),
    }
}

/// Where the servers listen: for clients and peers, and for metrics if asked.
struct Plan {
    addresses: Vec<SocketAddr>,
    /// Empty without `--metrics-base-port`.
    metrics: Vec<SocketAddr>,
}

/// One child server.
struct Member {
    name: String,
    address: SocketAddr,
    metrics: Option<SocketAddr>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Child,
}

fn up(args: UpArgs) -> u8 {
    let plan = match plan_addresses(&args) {
        Ok(plan) => plan,
        Err(problem) => {
            eprintln!("error: {problem}");
            return EXIT_BAD_INPUT;
        }
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        std::env::temp_dir().join(format!("lockstep-cluster-{stamp}-{}", std::process::id()))
    });
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: cannot create: {error}", dir.display());
        return EXIT_BAD_INPUT;
    }
    let secret = match ensure_secret(&dir) {
        Ok(secret) => secret,
        Err(problem) => {
            eprintln!("error: {problem}");
            return EXIT_BAD_INPUT;
        }
    };
    let tls = if args.tls {
        match write_tls_files(&dir, &plan.addresses) {
            Ok(tls) => Some(tls),
            Err(problem) => {
                eprintln!("error: {problem}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    if let Err(error) = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed)) {
        eprintln!("warning: Ctrl-C will not stop the cluster cleanly: {error}");
    }
    let mut members = Vec::new();
    for index in 0..plan.addresses.len() {
        match spawn_member(&args, &dir, &secret, tls.as_deref(), &plan, index) {
            Ok(member) => members.push(member),
            Err(problem) => {
                eprintln!("error: {problem}");
                stop_all(&mut members);
                return EXIT_CHILD_DIED;
            }
        }
    }
    if let Err(problem) = wait_until_listening(&mut members, &stop) {
        eprintln!("error: {problem}");
        stop_all(&mut members);
        return EXIT_CHILD_DIED;
    }
    print_summary(&members, &dir, &secret, tls.as_deref());
    let code = watch(&mut members, &stop);
    stop_all(&mut members);
    code
}

/// The cluster secret file in `dir`: the one already there (a restart of the same cluster),
/// or a new random one, readable by this user only. The servers check its content.
fn ensure_secret(dir: &Path) -> Result<PathBuf, String> {
    use std::io::Write;
    let path = dir.join(SECRET_FILE_NAME);
    if path.exists() {
        return Ok(path);
    }
    let mut random = [0u8; SECRET_RANDOM_BYTES];
    rand::fill(&mut random[..]);
    let mut text: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    text.push('\n');
    let mut options = File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let cannot =
        |e: std::io::Error| format!("{}: cannot write the cluster secret: {e}", path.display());
    let mut file = options.open(&path).map_err(cannot)?;
    file.write_all(text.as_bytes()).map_err(cannot)?;
    file.sync_all().map_err(cannot)?;
    Ok(path)
}

/// Makes a CA and a certificate per server (for its IP and `localhost`) in `dir/tls`, fresh
/// at every start: `ca.pem`, and `sN.pem` with `sN.key` (mode 0600). The CA's key is never
/// written, so nothing else can be signed by it later. Returns the directory.
fn write_tls_files(dir: &Path, addresses: &[SocketAddr]) -> Result<PathBuf, String> {
    use lockstep::net::tls::generate::GeneratedCa;
    let tls_dir = dir.join(TLS_DIR_NAME);
    let cannot = |path: &Path, e: std::io::Error| format!("{}: cannot write: {e}", path.display());
    std::fs::create_dir_all(&tls_dir).map_err(|e| cannot(&tls_dir, e))?;
    let ca = GeneratedCa::new("lockstep cluster up CA")?;
    let write = |name: &str, text: &str, private: bool| -> Result<(), String> {
        use std::io::Write;
        let path = tls_dir.join(name);
        let _ = std::fs::remove_file(&path);
        let mut options = File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&path).map_err(|e| cannot(&path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| cannot(&path, e))
    };
    write("ca.pem", ca.cert_pem(), false)?;
    for (index, address) in addresses.iter().enumerate() {
        let name = format!("s{}", index + 1);
        let names = [address.ip().to_string(), "localhost".to_string()];
        let issued = ca.issue_server(&name, &names)?;
        write(&format!("{name}.pem"), &issued.cert_pem, false)?;
        write(&format!("{name}.key"), &issued.key_pem, true)?;
    }
    Ok(tls_dir)
}

/// The servers' addresses, and their metrics addresses if asked, each checked free now (a
/// server started later may still lose a race for it; its log then says so).
fn plan_addresses(args: &UpArgs) -> Result<Plan, String> {
    if args.servers == 0 || args.servers > SERVERS_MAX {
        return Err(format!(
            "--servers {}: must be 1 to {SERVERS_MAX}",
            args.servers
        ));
    }
    let addresses = free_ports(args.base_port, args.servers, "--base-port")?;
    let metrics = match args.metrics_base_port {
        None => Vec::new(),
        Some(base) => {
            let metrics = free_ports(base, args.servers, "--metrics-base-port")?;
            if let Some(both) = metrics.iter().find(|address| addresses.contains(address)) {
                return Err(format!(
                    "--metrics-base-port {base}: port {} is also a server's port",
                    both.port()
                ));
            }
            metrics
        }
    };
    Ok(Plan { addresses, metrics })
}

/// `count` ports on 127.0.0.1 from `base`, each free now; `flag` names where `base` came from.
fn free_ports(base: u16, count: u16, flag: &str) -> Result<Vec<SocketAddr>, String> {
    let last = u32::from(base) + u32::from(count) - 1;
    if base == 0 || last > u32::from(u16::MAX) {
        return Err(format!(
            "{flag} {base}: ports {base}..={last} do not all exist"
        ));
    }
    let mut addresses = Vec::new();
    for offset in 0..count {
        let address = SocketAddr::from(([127, 0, 0, 1], base + offset));
        if let Err(error) = TcpListener::bind(address) {
            return Err(format!(
                "port {} (for s{}) is taken: {error}; choose another {flag}",
                address.port(),
                offset + 1
            ));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

fn spawn_member(
    args: &UpArgs,
    dir: &Path,
    secret: &Path,
    tls: Option<&Path>,
    plan: &Plan,
    index: usize,
) -> Result<Member, String> {
    let addresses = &plan.addresses;
    let metrics = plan.metrics.get(index).copied();
    let name = format!("s{}", index + 1);
    let data_dir = dir.join(&name);
    let log = dir.join(format!("{name}.log"));
    let executable =
        std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("{}: cannot open the log: {e}", log.display()))?;
    let mut command = Command::new(executable);
    command
        .arg("server")
        .args(["--id", &name])
        .args(["--listen", &addresses[index].to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--cluster-id", &args.cluster_id])
        .arg("--cluster-secret-file")
        .arg(secret);
    for (peer, address) in addresses.iter().enumerate() {
        if peer != index {
            command.args(["--peer", &format!("s{}={address}", peer + 1)]);
        }
    }
    if let Some(entries) = args.snapshot_entries {
        command.args(["--snapshot-entries", &entries.to_string()]);
    }
    if let Some(metrics) = metrics {
        command.args(["--metrics", &metrics.to_string()]);
    }
    if let Some(tls) = tls {
        command
            .arg("--tls-cert")
            .arg(tls.join(format!("{name}.pem")))
            .arg("--tls-key")
            .arg(tls.join(format!("{name}.key")))
            .arg("--tls-ca")
            .arg(tls.join("ca.pem"));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
    // Their own process group: a terminal's Ctrl-C reaches only us, and we stop them in order.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Member {
        name,
        address: addresses[index],
        metrics,
        data_dir,
        log,
        child,
    })
}

fn wait_until_listening(members: &mut [Member], stop: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for member in members.iter_mut() {
        // Bounded by the deadline.
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err("interrupted while starting".into());
            }
            if let Ok(Some(status)) = member.child.try_wait() {
                return Err(format!(
                    "{} exited during startup ({}); see {}",
                    member.name,
                    describe(status),
                    member.log.display()
                ));
            }
            if TcpStream::connect_timeout(&member.address, POLL_INTERVAL).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not accept connections on {} within {STARTUP_TIMEOUT:?}; see {}",
                    member.name,
                    member.address,
                    member.log.display()
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    Ok(())
}

fn print_summary(members: &[Member], dir: &Path, secret: &Path, tls: Option<&Path>) {
    use tabled::builder::Builder;
    use tabled::settings::Style;
    let with_metrics = members.iter().any(|member| member.metrics.is_some());
    let mut builder = Builder::default();
    let mut header = vec!["id", "address", "data dir", "pid"];
    if with_metrics {
        header.push("metrics");
    }
    builder.push_record(header);
    for member in members {
        let mut row = vec![
            member.name.clone(),
            member.address.to_string(),
            member.data_dir.display().to_string(),
            member.child.id().to_string(),
        ];
        if let Some(metrics) = member.metrics {
            row.push(format!("http://{metrics}/metrics"));
        }
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::rounded());
    let servers: Vec<String> = members.iter().map(|m| m.address.to_string()).collect();
    let ca_flag = tls.map_or_else(String::new, |tls| {
        format!(" --tls-ca {}", tls.join("ca.pem").display())
    });
    println!("{table}");
    println!("logs: {}/sN.log (one per server)", dir.display());
    println!(
        "peers authenticate with the cluster secret in {}",
        secret.display()
    );
    match tls {
        None => println!(
            "try:  lockstep client --servers {} preempt NAME",
            servers.join(",")
        ),
        Some(tls) => {
            let ca = tls.join("ca.pem");
            println!(
                "every connection is TLS (mutual for peers); the CA is {}",
                ca.display()
            );
            println!(
                "try:  lockstep client --servers {} --tls-ca {} preempt NAME",
                servers.join(","),
                ca.display()
            );
        }
    }
    println!(
        "status: lockstep status --servers {}{ca_flag}",
        servers.join(",")
    );
    println!("Ctrl-C stops the cluster.");
}

/// Waits for Ctrl-C (exit 0) or a child that dies on its own (exit 1).
fn watch(members: &mut [Member], stop: &AtomicBool) -> u8 {
    // Bounded by the signal or a child's death.
    loop {
        if stop.load(Ordering::Relaxed) {
            println!("stopping the cluster");
            return EXIT_STOPPED;
        }
        for member in members.iter_mut() {
            if let Ok(Some(status)) = member.child.try_wait() {
                eprintln!(
                    "error: {} (pid {}) exited on its own ({}); see {}. Stopping the others.",
                    member.name,
                    member.child.id(),
                    describe(status),
                    member.log.display()
                );
                return EXIT_CHILD_DIED;
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// SIGTERM to every running child, then SIGKILL after the grace period; waits for all.
fn stop_all(members: &mut [Member]) {
    for member in members.iter_mut() {
        if matches!(member.child.try_wait(), Ok(None)) {
            super::terminate(&member.child);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for member in members.iter_mut() {
        // Bounded by the deadline, then a kill.
        loop {
            match member.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!(
                        "{} did not stop within {STOP_GRACE:?}; killing it",
                        member.name
                    );
                    let _ = member.child.kill();
                    let _ = member.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(base_port: u16, metrics_base_port: Option<u16>) -> UpArgs {
        UpArgs {
            servers: 3,
            dir: None,
            base_port,
            cluster_id: "lockstep".into(),
            snapshot_entries: None,
            tls: false,
            metrics_base_port,
        }
    }

    /// A port that was free a moment ago, with two more free after it.
    fn free_base() -> u16 {
        // Bounded: a handful of tries finds three free ports in a row on any test machine.
        for _ in 0..50 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if port < 60_000 && free_ports(port, 6, "test").is_ok() {
                return port;
            }
        }
        panic!("no six free ports in a row");
    }

    #[test]
    fn metrics_ports_follow_their_own_base_and_may_not_overlap_the_servers() {
        let base = free_base();
        let plan = plan_addresses(&args(base, Some(base + 3))).expect("six free ports");
        assert_eq!(plan.addresses[2].port(), base + 2);
        assert_eq!(
            plan.metrics
                .iter()
                .map(SocketAddr::port)
                .collect::<Vec<_>>(),
            [base + 3, base + 4, base + 5]
        );
        assert!(
            plan_addresses(&args(base, None))
                .unwrap()
                .metrics
                .is_empty()
        );
        let Err(problem) = plan_addresses(&args(base, Some(base + 1))) else {
            panic!("overlapping ports were planned");
        };
        assert!(problem.contains("is also a server's port"), "{problem}");
        let Err(problem) = plan_addresses(&args(base, Some(0))) else {
            panic!("port 0 was planned");
        };
        assert!(problem.starts_with("--metrics-base-port 0:"), "{problem}");
    }
}
