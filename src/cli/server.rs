//! `lockstep server`: one server of a cluster, as one OS process.

use clap::Args;
use lockstep::net::runtime::config::{self, ConfigOverrides, parse_duration, parse_peer};
use lockstep::net::runtime::{self, StartError};
use lockstep::node::ServerId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Exit codes of `lockstep server`.
pub const EXIT_STOPPED: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_CONFIG: u8 = 2;
pub const EXIT_STORAGE_REFUSED: u8 = 3;
pub const EXIT_METRICS_UNAVAILABLE: u8 = 4;

#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  # a three-server cluster on one machine, one terminal each
  lockstep server --id s1 --listen 127.0.0.1:7001 --peer s2=127.0.0.1:7002 \\
      --peer s3=127.0.0.1:7003 --data-dir data/s1
  lockstep server --id s2 --listen 127.0.0.1:7002 --peer s1=127.0.0.1:7001 \\
      --peer s3=127.0.0.1:7003 --data-dir data/s2
  ...
  # the same cluster from one shared file
  lockstep server --config cluster.yaml --id s1
  # peers authenticated by a shared secret (give every server the same file)
  head -c 32 /dev/urandom | base64 > secret && chmod 600 secret
  lockstep server --config cluster.yaml --id s1 --cluster-secret-file secret
  # TLS on every connection, mutual for peers (see docs/operations.md, TLS)
  lockstep server --config cluster.yaml --id s1 --cluster-secret-file secret \\
      --tls-cert tls/s1.pem --tls-key tls/s1.key --tls-ca tls/ca.pem
  # Prometheus metrics at http://127.0.0.1:9101/metrics (see docs/operations.md, Metrics)
  lockstep server --config cluster.yaml --id s1 --metrics 127.0.0.1:9101

Logs go to stderr; set the level with RUST_LOG (default info, e.g. RUST_LOG=debug).
SIGINT or SIGTERM stops the server cleanly: everything it acknowledged is already on disk.
A server with peers whose log is damaged (a record that fails its checksum) cuts the log
there, says at WARN what it dropped, and repairs it from its peers, voting for no one until
a leader has (docs/operations.md, Data directory); a server alone refuses to start instead.

Exit codes: 0 stopped by a signal, 1 failed while serving (a storage error), 2 bad flags or
configuration (or the port is taken), 3 the data directory was refused at startup (damage
it cannot repair, another process holds it, an unreadable snapshot), 4 the --metrics address
cannot be served (its port is taken, or it is not an address of this machine).")]
pub struct ServerArgs {
    /// This server's id: s1, S1 or 1. With --config, it picks this process's entry.
    #[arg(long, value_name = "ID", value_parser = config::parse_server_id)]
    pub id: ServerId,
    /// IP:PORT to listen on, for peers and clients alike.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Another server of the cluster, as ID=HOST:PORT. Repeat for each peer.
    #[arg(long = "peer", value_name = "ID=HOST:PORT", value_parser = parse_peer)]
    pub peers: Vec<(ServerId, String)>,
    /// Where this server keeps its write-ahead log and snapshot (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Servers refuse peers of another cluster id [default: lockstep].
    #[arg(long, value_name = "NAME")]
    pub cluster_id: Option<String>,
    /// Compact the log into a snapshot once this many applied entries are held; 0 never
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub snapshot_entries: Option<u64>,
    /// Close client connections that send nothing for this long [default: 300s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub client_idle_timeout: Option<Duration>,
    /// A file holding the cluster secret (at least 32 bytes after trimming whitespace; e.g.
    /// `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`). Every server of the
    /// cluster needs the same one: peers prove it to each other in the handshake, and a
    /// server with a secret refuses peers without it. Without one, peers are unauthenticated.
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// TLS: this server's certificate chain (PEM). With --tls-key and --tls-ca (all three or
    /// none), the port speaks only TLS. The certificate must name the host that clients and
    /// peers dial (an IP or DNS subject alternative name), chain to --tls-ca, and allow the
    /// serverAuth and clientAuth key usages (it is also this server's client certificate
    /// towards its peers).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA certificate(s) (PEM) that peers' certificates must chain to. Peers must
    /// present a certificate from it; clients need none, but one they present must verify.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Serve Prometheus metrics (OpenMetrics text) at http://IP:PORT/metrics: role, term,
    /// indexes, log size, snapshots, grants, releases, refusals by reason, request and fsync
    /// latency histograms, peer connections, leader changes. Plain HTTP with no
    /// authentication: listen on loopback or a private interface. Port 0 picks a free port,
    /// which the server logs.
    #[arg(long, value_name = "IP:PORT", value_parser = config::parse_metrics_address)]
    pub metrics: Option<SocketAddr>,
    /// Sessions: the shortest TTL a client's hello may ask for [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub session_ttl_min: Option<Duration>,
    /// Sessions: the longest TTL a client's hello may ask for [default: 3600s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub session_ttl_max: Option<Duration>,
    /// Sessions: after a client's session expires, grant the locks it held to nobody for this
    /// long (Chubby's and Consul's lock-delay; a lock released explicitly is never delayed).
    /// Clients then hear `lock_delayed` [default: 0s, off].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_delay)]
    pub lock_delay: Option<Duration>,
    /// Sessions: the bound on every clock's rate error, as a fraction (0.01) or a percentage
    /// (1%). Session deadlines are stretched by it; clients must assume the same bound for
    /// their leases [default: 0.01].
    #[arg(long, value_name = "FRACTION", value_parser = config::parse_clock_drift)]
    pub max_clock_drift: Option<u32>,
    /// A YAML file describing the cluster (see docs/operations.md). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Sends `tracing` output to stderr, at the level RUST_LOG says (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn run(args: ServerArgs) -> u8 {
    init_logging();
    let overrides = ConfigOverrides {
        config_file: args.config,
        id: Some(args.id),
        listen: args.listen,
        peers: args.peers,
        data_dir: args.data_dir,
        cluster_id: args.cluster_id,
        snapshot_entries: args.snapshot_entries,
        client_idle_timeout: args.client_idle_timeout,
        cluster_secret_file: args.cluster_secret_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_ca: args.tls_ca,
        metrics: args.metrics,
        session_ttl_min: args.session_ttl_min,
        session_ttl_max: args.session_ttl_max,
        lock_delay: args.lock_delay,
        max_clock_drift_ppm: args.max_clock_drift,
    };
    let config = match config::resolve(&overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_BAD_CONFIG;
        }
    };
    let server = match runtime::start(config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: {error}");
            return match error {
                StartError::Storage(_) | StartError::Snapshot { .. } => EXIT_STORAGE_REFUSED,
                StartError::Listen { .. } => EXIT_BAD_CONFIG,
                StartError::Metrics { .. } => EXIT_METRICS_UNAVAILABLE,
                StartError::Runtime(_) => EXIT_FAILED,
            };
        }
    };
    match server.run() {
        Ok(()) => {
            tracing::info!("stopped");
            EXIT_STOPPED
        }
        // The runtime already logged why, at error level.
        Err(_) => EXIT_FAILED,
    }
}
