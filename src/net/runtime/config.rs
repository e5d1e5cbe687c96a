//! What one server process needs to know, from command-line flags and an optional YAML file.
//!
//! The file describes the whole cluster so that every server can share it; `--id` picks this
//! process's entry, and flags override what the file says. Every problem is a [`ConfigError`]
//! naming its place (a flag, or `FILE: servers.s4`) and what is wrong with it.
//!
//! ```yaml
//! cluster_id: prod-locks        # default "lockstep"
//! data_dir: /var/lib/lockstep   # root: each server uses <data_dir>/<id> unless it names its own
//! snapshot_entries: 100000      # 0 never compacts
//! client_idle_timeout: 300s
//! cluster_secret_file: secret   # relative to this file; every server needs the same secret
//! tls_cert: tls/s1.pem          # TLS: all three or none, relative to this file; usually
//! tls_key: tls/s1.key           # given per server with --tls-cert and --tls-key instead
//! tls_ca: tls/ca.pem
//! servers:
//!   s1: 10.0.0.1:7001
//!   s2: 10.0.0.2:7001
//!   s3: {address: 10.0.0.3:7001, data_dir: /srv/lockstep, metrics: 10.0.0.3:9101}
//! ```

use crate::net::peer::handshake::{CLUSTER_SECRET_BYTES_MAX, ClusterSecret};
use crate::net::tls::ServerTls;
use crate::node::ServerId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const CLUSTER_ID_DEFAULT: &str = "lockstep";
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 100_000;
pub const CLIENT_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Largest cluster a server accepts.
pub const SERVERS_MAX: usize = 9;

/// Everything a server process runs with, checked.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServerProcessConfig {
    pub id: ServerId,
    /// The one port for peers and clients.
    pub listen: SocketAddr,
    /// Every other server and its `host:port`.
    pub peers: BTreeMap<ServerId, String>,
    pub data_dir: PathBuf,
    pub cluster_id: String,
    /// Applied entries kept in the log before compacting them into a snapshot; `None` never.
    pub snapshot_entries_min: Option<u64>,
    pub client_idle_timeout: Duration,
    /// The secret peers must prove in the handshake; `None` leaves peers unauthenticated.
    pub cluster_secret: Option<LoadedSecret>,
    /// TLS on every connection (mutual for peers); `None` serves plain TCP.
    pub tls: Option<ServerTls>,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Session settings, checked.
    pub sessions: SessionSettings,
}

/// The server's session settings (docs/design.md, "Sessions and leases").
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct SessionSettings {
    /// The TTLs a hello may ask for.
    pub ttl_min: Duration,
    pub ttl_max: Duration,
    /// How long a lock freed by an expiry is granted to nobody.
    pub lock_delay: Duration,
    /// The clock drift bound, in parts per million (10,000 is 1%).
    pub max_clock_drift_ppm: u32,
}

impl Default for SessionSettings {
    fn default() -> SessionSettings {
        SessionSettings {
            ttl_min: Duration::from_secs(1),
            ttl_max: Duration::from_secs(3_600),
            lock_delay: Duration::ZERO,
            max_clock_drift_ppm: 10_000,
        }
    }
}

impl SessionSettings {
    /// Sets them on a node configuration.
    pub fn apply_to(&self, config: &mut crate::node::ServerConfig) {
        config.session_ttl_min = self.ttl_min;
        config.session_ttl_max = self.ttl_max;
        config.lock_delay = self.lock_delay;
        config.max_clock_drift = f64::from(self.max_clock_drift_ppm) / 1_000_000.0;
    }
}

/// Reads a drift bound written as a fraction (`0.01`) or a percentage (`1%`), below 10%.
pub fn parse_clock_drift(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a drift bound (a fraction like 0.01, or 1%)");
    let trimmed = text.trim();
    let fraction = match trimmed.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => trimmed.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..0.1).contains(&fraction) {
        return Err(format!(
            "{text:?}: the drift bound must be at least 0 and below 0.1 (10%)"
        ));
    }
    Ok((fraction * 1_000_000.0).round() as u32)
}

/// A cluster secret read from its file.
#[derive(Clone, Debug)]
pub struct LoadedSecret {
    pub path: PathBuf,
    pub secret: Arc<ClusterSecret>,
    /// The file's permission bits when group or others may read it (worth a warning), else
    /// `None`.
    pub readable_by_others: Option<u32>,
}

/// Compares where the secrets came from, never the secrets themselves.
impl PartialEq for LoadedSecret {
    fn eq(&self, other: &LoadedSecret) -> bool {
        self.path == other.path && self.readable_by_others == other.readable_by_others
    }
}

impl Eq for LoadedSecret {}

/// Reads the cluster secret in `path` (see [`ClusterSecret::from_file_content`] for the
/// format). Every problem names the file.
pub fn load_cluster_secret(path: &Path) -> Result<LoadedSecret, ConfigError> {
    use std::io::Read;
    let place = || path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| error(place(), format!("cannot read the cluster secret file: {e}")))?;
    let metadata = file
        .metadata()
        .map_err(|e| error(place(), format!("cannot read the cluster secret file: {e}")))?;
    if !metadata.is_file() {
        return Err(error(
            place(),
            "the cluster secret file is not a regular file",
        ));
    }
    // Read one byte past the longest secret plus generous whitespace, so that a huge file is
    // refused without reading it all.
    let bytes_max = 2 * CLUSTER_SECRET_BYTES_MAX as u64;
    let mut content = Vec::new();
    file.take(bytes_max + 1)
        .read_to_end(&mut content)
        .map_err(|e| error(place(), format!("cannot read the cluster secret file: {e}")))?;
    if content.len() as u64 > bytes_max {
        return Err(error(
            place(),
            format!("the cluster secret file is larger than {bytes_max} bytes"),
        ));
    }
    let secret = ClusterSecret::from_file_content(&content).map_err(|problem| {
        error(
            place(),
            format!("not a usable cluster secret: it {problem}"),
        )
    })?;
    Ok(LoadedSecret {
        path: path.to_path_buf(),
        secret: Arc::new(secret),
        readable_by_others: group_or_other_readable(&metadata),
    })
}

#[cfg(unix)]
fn group_or_other_readable(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn group_or_other_readable(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}

impl ServerProcessConfig {
    /// Every server of the cluster, this one included, in order.
    pub fn servers(&self) -> Vec<ServerId> {
        let mut servers: Vec<ServerId> = self.peers.keys().copied().collect();
        servers.push(self.id);
        servers.sort();
        servers
    }
}

/// What the command line said; `None` and empty mean "not given".
#[derive(Clone, Default, Debug)]
pub struct ConfigOverrides {
    pub config_file: Option<PathBuf>,
    pub id: Option<ServerId>,
    pub listen: Option<SocketAddr>,
    pub peers: Vec<(ServerId, String)>,
    pub data_dir: Option<PathBuf>,
    pub cluster_id: Option<String>,
    pub snapshot_entries: Option<u64>,
    pub client_idle_timeout: Option<Duration>,
    pub cluster_secret_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub session_ttl_min: Option<Duration>,
    pub session_ttl_max: Option<Duration>,
    pub lock_delay: Option<Duration>,
    /// Parts per million, from [`parse_clock_drift`].
    pub max_clock_drift_ppm: Option<u32>,
}

/// A configuration problem: where, and what.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConfigError {
    pub place: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn error(place: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        place: place.into(),
        problem: problem.into(),
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    cluster_id: Option<String>,
    data_dir: Option<PathBuf>,
    snapshot_entries: Option<u64>,
    client_idle_timeout: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    servers: BTreeMap<String, ServerEntry>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum ServerEntry {
    Address(String),
    Detailed(DetailedEntry),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct DetailedEntry {
    address: String,
    data_dir: Option<PathBuf>,
    /// `IP:PORT` to serve this server's metrics on.
    metrics: Option<String>,
}

/// One server's entry in the file, checked.
struct FileServer {
    address: String,
    data_dir: Option<PathBuf>,
    metrics: Option<SocketAddr>,
}

/// `s1`, `S1` or `1`.
pub fn parse_server_id(text: &str) -> Result<ServerId, String> {
    let digits = text
        .strip_prefix('s')
        .or_else(|| text.strip_prefix('S'))
        .unwrap_or(text);
    match digits.parse::<u32>() {
        Ok(0) => Err(format!("{text:?}: server ids start at s1")),
        Ok(number) => Ok(ServerId(number)),
        Err(_) => Err(format!("{text:?} is not a server id (like s1, S1 or 1)")),
    }
}

/// `s2=127.0.0.1:7002`.
pub fn parse_peer(text: &str) -> Result<(ServerId, String), String> {
    let Some((id, address)) = text.split_once('=') else {
        return Err(format!(
            "{text:?} is not ID=HOST:PORT (like s2=127.0.0.1:7002)"
        ));
    };
    let id = parse_server_id(id)?;
    check_address(address)?;
    Ok((id, address.to_string()))
}

/// `--metrics` and a server entry's `metrics`: `IP:PORT` to listen on (port 0 picks a free
/// one, which the server logs).
pub fn parse_metrics_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not IP:PORT to serve metrics on (like 127.0.0.1:9101; a host name \
             will not do)"
        )
    })
}

/// Like [`parse_duration`], and zero (`0`, `0s`, `0ms`) too: for a delay that may be off.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "0" | "0s" | "0ms" | "0m" => Ok(Duration::ZERO),
        _ => parse_duration(text),
    }
}

/// `300s`, `1500ms`, `5m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (a number with ms, s or m, like 300s)");
    let text_trimmed = text.trim();
    let (number, unit_ms) = if let Some(n) = text_trimmed.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text_trimmed.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text_trimmed.strip_suffix('m') {
        (n, 60_000)
    } else {
        return Err(bad());
    };
    let number: u64 = number.trim().parse().map_err(|_| bad())?;
    let millis = number.checked_mul(unit_ms).ok_or_else(bad)?;
    if millis == 0 {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(Duration::from_millis(millis))
}

fn check_address(address: &str) -> Result<(), String> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "{address:?} is not HOST:PORT (like 127.0.0.1:7002)"
        )),
    }
}

/// Reads the file named in `overrides` (if any) and combines it with the flags.
pub fn resolve(overrides: &ConfigOverrides) -> Result<ServerProcessConfig, ConfigError> {
    let file = match &overrides.config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| error(path.display().to_string(), format!("cannot read: {e}")))?;
            Some((path.clone(), parse_file(path, &text)?))
        }
        None => None,
    };
    combine(
        overrides,
        file.as_ref().map(|(path, file)| (path.as_path(), file)),
    )
}

fn parse_file(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    serde_saphyr::from_str::<ConfigFile>(text)
        .map_err(|e| error(path.display().to_string(), e.to_string()))
}

/// The file's servers with checked ids and addresses.
fn file_servers(
    path: &Path,
    file: &ConfigFile,
) -> Result<BTreeMap<ServerId, FileServer>, ConfigError> {
    let mut servers = BTreeMap::new();
    for (key, entry) in &file.servers {
        let place = format!("{}: servers.{key}", path.display());
        let id = parse_server_id(key).map_err(|problem| error(&place, problem))?;
        let server = match entry {
            ServerEntry::Address(address) => FileServer {
                address: address.clone(),
                data_dir: None,
                metrics: None,
            },
            ServerEntry::Detailed(detailed) => FileServer {
                address: detailed.address.clone(),
                data_dir: detailed.data_dir.clone(),
                metrics: match &detailed.metrics {
                    None => None,
                    Some(text) => Some(
                        parse_metrics_address(text)
                            .map_err(|problem| error(format!("{place}.metrics"), problem))?,
                    ),
                },
            },
        };
        check_address(&server.address).map_err(|problem| error(&place, problem))?;
        if servers.insert(id, server).is_some() {
            return Err(error(place, format!("{id} is listed twice")));
        }
    }
    Ok(servers)
}

/// TLS needs all three files or none: one or two alone is a mistake, never a silent plain TCP.
fn load_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Option<ServerTls>, ConfigError> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => ServerTls::load(&cert, &key, &ca)
            .map(Some)
            .map_err(|e| error(e.path.display().to_string(), e.problem)),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                (cert.is_none(), "--tls-cert (tls_cert)"),
                (key.is_none(), "--tls-key (tls_key)"),
                (ca.is_none(), "--tls-ca (tls_ca)"),
            ]
            .into_iter()
            .filter_map(|(missing, name)| missing.then_some(name))
            .collect();
            Err(error(
                "TLS",
                format!(
                    "--tls-cert, --tls-key and --tls-ca go together (flags or config keys); \
                     missing {}",
                    missing.join(" and ")
                ),
            ))
        }
    }
}

fn combine(
    overrides: &ConfigOverrides,
    file: Option<(&Path, &ConfigFile)>,
) -> Result<ServerProcessConfig, ConfigError> {
    let id = overrides
        .id
        .ok_or_else(|| error("--id", "required: which server this process is (like s1)"))?;
    let mut listen = overrides.listen;
    let mut peers = BTreeMap::new();
    let mut data_dir = overrides.data_dir.clone();
    let mut cluster_id = overrides.cluster_id.clone();
    let mut snapshot_entries = overrides.snapshot_entries;
    let mut idle_timeout = overrides.client_idle_timeout;
    let mut secret_file = overrides.cluster_secret_file.clone();
    let mut tls_cert = overrides.tls_cert.clone();
    let mut tls_key = overrides.tls_key.clone();
    let mut tls_ca = overrides.tls_ca.clone();
    let mut metrics = overrides.metrics;
    if let Some((path, file)) = file {
        let servers = file_servers(path, file)?;
        let Some(FileServer {
            address: own_address,
            data_dir: own_data_dir,
            metrics: own_metrics,
        }) = servers.get(&id)
        else {
            return Err(error(
                format!("{}: servers", path.display()),
                format!("no entry for {id} (given by --id)"),
            ));
        };
        let relative_to_file = |dir: &Path| path.parent().unwrap_or(Path::new(".")).join(dir);
        if listen.is_none() {
            let parsed = own_address.parse::<SocketAddr>().map_err(|_| {
                error(
                    format!("{}: servers.{id}", path.display()),
                    format!("{own_address:?} must be IP:PORT to listen on (or pass --listen)"),
                )
            })?;
            listen = Some(parsed);
        }
        for (&peer, server) in &servers {
            if peer != id {
                peers.insert(peer, server.address.clone());
            }
        }
        metrics = metrics.or(*own_metrics);
        data_dir = data_dir
            .or_else(|| own_data_dir.as_deref().map(relative_to_file))
            .or_else(|| {
                file.data_dir
                    .as_deref()
                    .map(|root| relative_to_file(root).join(id.to_string()))
            });
        cluster_id = cluster_id.or_else(|| file.cluster_id.clone());
        secret_file =
            secret_file.or_else(|| file.cluster_secret_file.as_deref().map(relative_to_file));
        tls_cert = tls_cert.or_else(|| file.tls_cert.as_deref().map(relative_to_file));
        tls_key = tls_key.or_else(|| file.tls_key.as_deref().map(relative_to_file));
        tls_ca = tls_ca.or_else(|| file.tls_ca.as_deref().map(relative_to_file));
        snapshot_entries = snapshot_entries.or(file.snapshot_entries);
        if idle_timeout.is_none()
            && let Some(text) = &file.client_idle_timeout
        {
            let place = format!("{}: client_idle_timeout", path.display());
            idle_timeout = Some(parse_duration(text).map_err(|p| error(place, p))?);
        }
    }
    for (peer, address) in &overrides.peers {
        if *peer == id {
            return Err(error(
                format!("--peer {peer}={address}"),
                "a server is not its own peer",
            ));
        }
        peers.insert(*peer, address.clone());
    }
    let listen =
        listen.ok_or_else(|| error("--listen", "required (or a --config entry for this --id)"))?;
    let data_dir = data_dir
        .ok_or_else(|| error("--data-dir", "required (or data_dir in the --config file)"))?;
    let cluster_id = cluster_id.unwrap_or_else(|| CLUSTER_ID_DEFAULT.to_string());
    if cluster_id.is_empty() || cluster_id.len() > crate::net::peer::handshake::CLUSTER_ID_BYTES_MAX
    {
        return Err(error("cluster id", "must be 1 to 128 bytes"));
    }
    if peers.len() + 1 > SERVERS_MAX {
        return Err(error(
            "peers",
            format!("{} servers; at most {SERVERS_MAX}", peers.len() + 1),
        ));
    }
    let snapshot_entries = snapshot_entries.unwrap_or(SNAPSHOT_ENTRIES_DEFAULT);
    let cluster_secret = match &secret_file {
        Some(path) => Some(load_cluster_secret(path)?),
        None => None,
    };
    let tls = load_tls(tls_cert, tls_key, tls_ca)?;
    let sessions = resolve_sessions(overrides)?;
    let config = ServerProcessConfig {
        id,
        listen,
        peers,
        data_dir,
        cluster_id,
        snapshot_entries_min: (snapshot_entries > 0).then_some(snapshot_entries),
        client_idle_timeout: idle_timeout.unwrap_or(CLIENT_IDLE_TIMEOUT_DEFAULT),
        cluster_secret,
        tls,
        metrics,
        sessions,
    };
    assert!(
        !config.peers.contains_key(&config.id),
        "config: self as peer"
    );
    assert!(
        config.client_idle_timeout > Duration::ZERO,
        "config: zero idle timeout"
    );
    Ok(config)
}

/// The session flags over their defaults; the TTL range must not be empty.
fn resolve_sessions(overrides: &ConfigOverrides) -> Result<SessionSettings, ConfigError> {
    let defaults = SessionSettings::default();
    let settings = SessionSettings {
        ttl_min: overrides.session_ttl_min.unwrap_or(defaults.ttl_min),
        ttl_max: overrides.session_ttl_max.unwrap_or(defaults.ttl_max),
        lock_delay: overrides.lock_delay.unwrap_or(defaults.lock_delay),
        max_clock_drift_ppm: overrides
            .max_clock_drift_ppm
            .unwrap_or(defaults.max_clock_drift_ppm),
    };
    if settings.ttl_min.is_zero() {
        return Err(error("--session-ttl-min", "must be above 0"));
    }
    if settings.ttl_min > settings.ttl_max {
        return Err(error(
            "--session-ttl-min",
            format!(
                "{:?} is above --session-ttl-max {:?}",
                settings.ttl_min, settings.ttl_max
            ),
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "cluster_id: prod\n\
        data_dir: /data\n\
        snapshot_entries: 500\n\
        client_idle_timeout: 30s\n\
        servers:\n  s1: 127.0.0.1:7001\n  s2: 127.0.0.1:7002\n  \
        s3: {address: 127.0.0.1:7003, data_dir: /srv/three}\n";

    fn with_file(overrides: ConfigOverrides) -> Result<ServerProcessConfig, ConfigError> {
        let path = Path::new("/etc/lockstep/cluster.yaml");
        let file = parse_file(path, FILE).unwrap();
        combine(&overrides, Some((path, &file)))
    }

    #[test]
    fn server_ids_read_with_or_without_the_s() {
        assert_eq!(parse_server_id("s1"), Ok(ServerId(1)));
        assert_eq!(parse_server_id("S12"), Ok(ServerId(12)));
        assert_eq!(parse_server_id("3"), Ok(ServerId(3)));
        assert!(parse_server_id("s0").is_err());
        assert!(parse_server_id("x1").is_err());
        assert_eq!(
            parse_peer("s2=127.0.0.1:7002"),
            Ok((ServerId(2), "127.0.0.1:7002".into()))
        );
        assert!(parse_peer("s2:127.0.0.1:7002").is_err());
        assert!(parse_peer("s2=127.0.0.1").is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("300").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn the_file_gives_each_server_its_entry_and_the_others_as_peers() {
        let config = with_file(ConfigOverrides {
            id: Some(ServerId(1)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(
            config.peers.keys().copied().collect::<Vec<_>>(),
            [ServerId(2), ServerId(3)]
        );
        assert_eq!(config.data_dir, PathBuf::from("/data/s1"));
        assert_eq!(config.cluster_id, "prod");
        assert_eq!(config.snapshot_entries_min, Some(500));
        assert_eq!(config.client_idle_timeout, Duration::from_secs(30));
        let third = with_file(ConfigOverrides {
            id: Some(ServerId(3)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(third.data_dir, PathBuf::from("/srv/three"));
    }

    #[test]
    fn a_server_entry_may_name_its_metrics_address_and_the_flag_overrides_it() {
        let text = "servers:\n  s1: {address: 127.0.0.1:7001, metrics: 127.0.0.1:9101}\n  \
                    s2: 127.0.0.1:7002\n";
        let path = Path::new("/etc/lockstep/cluster.yaml");
        let file = parse_file(path, text).unwrap();
        let for_server = |id: u32, metrics: Option<&str>| {
            let overrides = ConfigOverrides {
                id: Some(ServerId(id)),
                data_dir: Some("/tmp/data".into()),
                metrics: metrics.map(|text| text.parse().unwrap()),
                ..Default::default()
            };
            combine(&overrides, Some((path, &file))).unwrap().metrics
        };
        assert_eq!(for_server(1, None), Some("127.0.0.1:9101".parse().unwrap()));
        assert_eq!(for_server(2, None), None, "s2 serves no metrics");
        assert_eq!(
            for_server(1, Some("127.0.0.1:9999")),
            Some("127.0.0.1:9999".parse().unwrap())
        );
        let bad = "servers:\n  s1: {address: 127.0.0.1:7001, metrics: localhost:9101}\n";
        let Err(error) = parse_file(path, bad).and_then(|file| file_servers(path, &file)) else {
            panic!("a host name was taken as a metrics address");
        };
        assert_eq!(
            error.place,
            "/etc/lockstep/cluster.yaml: servers.s1.metrics"
        );
        assert!(error.problem.contains("is not IP:PORT"), "{error}");
    }

    #[test]
    fn flags_override_the_file() {
        let config = with_file(ConfigOverrides {
            id: Some(ServerId(2)),
            listen: Some("0.0.0.0:9002".parse().unwrap()),
            peers: vec![(ServerId(3), "10.0.0.3:9003".into())],
            data_dir: Some("/tmp/two".into()),
            cluster_id: Some("test".into()),
            snapshot_entries: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9002".parse().unwrap());
        assert_eq!(config.peers[&ServerId(3)], "10.0.0.3:9003");
        assert_eq!(config.peers[&ServerId(1)], "127.0.0.1:7001");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/two"));
        assert_eq!(config.cluster_id, "test");
        assert_eq!(config.snapshot_entries_min, None);
    }

    #[test]
    fn problems_name_their_place() {
        let missing = with_file(ConfigOverrides {
            id: Some(ServerId(4)),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(missing.place, "/etc/lockstep/cluster.yaml: servers");
        assert!(missing.problem.contains("s4"));
        let path = Path::new("c.yaml");
        let unknown_key = parse_file(path, "servers: {s1: 127.0.0.1:1}\nbogus: 1\n").unwrap_err();
        assert!(
            unknown_key.to_string().starts_with("c.yaml: "),
            "{unknown_key}"
        );
        let bad_id = parse_file(path, "servers: {x: 127.0.0.1:1}\n").unwrap();
        let bad_id = combine(
            &ConfigOverrides {
                id: Some(ServerId(1)),
                ..Default::default()
            },
            Some((path, &bad_id)),
        )
        .unwrap_err();
        assert_eq!(bad_id.place, "c.yaml: servers.x");
        let self_peer = combine(
            &ConfigOverrides {
                id: Some(ServerId(1)),
                listen: Some("127.0.0.1:1".parse().unwrap()),
                data_dir: Some("d".into()),
                peers: vec![(ServerId(1), "127.0.0.1:2".into())],
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(self_peer.place.starts_with("--peer"));
        let no_id = combine(&ConfigOverrides::default(), None).unwrap_err();
        assert_eq!(no_id.place, "--id");
    }

    fn write_secret(directory: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, content).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    fn minimal(secret_file: Option<PathBuf>) -> ConfigOverrides {
        ConfigOverrides {
            id: Some(ServerId(1)),
            listen: Some("127.0.0.1:1".parse().unwrap()),
            data_dir: Some("d".into()),
            cluster_secret_file: secret_file,
            ..Default::default()
        }
    }

    #[test]
    fn the_cluster_secret_comes_from_the_flag_or_the_file_relative_to_it() {
        let directory = crate::storage::test_directory::TestDirectory::new("config-secret");
        let secret = "k".repeat(44);
        write_secret(directory.path(), "secret", &format!("{secret}\n"), 0o600);
        let flag_path = write_secret(directory.path(), "flag-secret", &secret, 0o600);
        let config_path = directory.path().join("cluster.yaml");
        let text = "cluster_secret_file: secret\nservers: {s1: 127.0.0.1:7001}\n";
        let file = parse_file(&config_path, text).unwrap();
        let overrides = ConfigOverrides {
            id: Some(ServerId(1)),
            data_dir: Some("d".into()),
            ..Default::default()
        };
        let from_file = combine(&overrides, Some((&config_path, &file))).unwrap();
        let loaded = from_file.cluster_secret.expect("a secret");
        assert_eq!(loaded.path, directory.path().join("secret"));
        assert_eq!(loaded.readable_by_others, None);
        let flag_wins = combine(
            &ConfigOverrides {
                cluster_secret_file: Some(flag_path.clone()),
                ..overrides
            },
            Some((&config_path, &file)),
        )
        .unwrap();
        assert_eq!(flag_wins.cluster_secret.unwrap().path, flag_path);
        assert_eq!(combine(&minimal(None), None).unwrap().cluster_secret, None);
    }

    #[test]
    fn a_bad_cluster_secret_file_is_a_config_error_naming_the_file() {
        let directory = crate::storage::test_directory::TestDirectory::new("config-bad-secret");
        let missing = directory.path().join("nowhere");
        let problem = combine(&minimal(Some(missing.clone())), None).unwrap_err();
        assert_eq!(problem.place, missing.display().to_string());
        assert!(problem.problem.contains("cannot read"), "{problem}");

        let short = write_secret(directory.path(), "short", "too short\n", 0o600);
        let problem = combine(&minimal(Some(short.clone())), None).unwrap_err();
        assert_eq!(problem.place, short.display().to_string());
        assert!(problem.problem.contains("at least 32"), "{problem}");

        let huge = write_secret(directory.path(), "huge", &"k".repeat(1_000_000), 0o600);
        let problem = combine(&minimal(Some(huge)), None).unwrap_err();
        assert!(problem.problem.contains("larger than"), "{problem}");

        let problem = combine(&minimal(Some(directory.path().to_path_buf())), None).unwrap_err();
        assert!(problem.problem.contains("not a regular file"), "{problem}");
    }

    #[cfg(unix)]
    #[test]
    fn a_cluster_secret_readable_by_others_is_loaded_and_flagged() {
        let directory = crate::storage::test_directory::TestDirectory::new("config-open-secret");
        let open = write_secret(directory.path(), "open", &"k".repeat(32), 0o644);
        let config = combine(&minimal(Some(open)), None).unwrap();
        assert_eq!(
            config.cluster_secret.unwrap().readable_by_others,
            Some(0o644)
        );
    }

    /// A CA, two server certificates it signed and one from another CA, as files.
    struct TlsFiles {
        directory: crate::storage::test_directory::TestDirectory,
    }

    impl TlsFiles {
        fn new(name: &str) -> TlsFiles {
            use crate::net::tls::generate::GeneratedCa;
            let directory = crate::storage::test_directory::TestDirectory::new(name);
            let ca = GeneratedCa::new("config test CA").unwrap();
            let other = GeneratedCa::new("another CA").unwrap();
            let names = ["127.0.0.1".to_string()];
            let write = |file: &str, text: &str| {
                std::fs::write(directory.path().join(file), text).unwrap();
            };
            write("ca.pem", ca.cert_pem());
            for (stem, issuer) in [("s1", &ca), ("s2", &ca), ("alien", &other)] {
                let issued = issuer.issue_server(stem, &names).unwrap();
                write(&format!("{stem}.pem"), &issued.cert_pem);
                write(&format!("{stem}.key"), &issued.key_pem);
            }
            write("garbage.pem", "this is not PEM at all\n");
            TlsFiles { directory }
        }

        fn path(&self, file: &str) -> PathBuf {
            self.directory.path().join(file)
        }

        fn overrides(&self, cert: &str, key: &str, ca: &str) -> ConfigOverrides {
            ConfigOverrides {
                tls_cert: Some(self.path(cert)),
                tls_key: Some(self.path(key)),
                tls_ca: Some(self.path(ca)),
                ..minimal(None)
            }
        }
    }

    #[test]
    fn tls_comes_from_the_flags_or_the_file_relative_to_it() {
        let files = TlsFiles::new("config-tls");
        let config = combine(&files.overrides("s1.pem", "s1.key", "ca.pem"), None).unwrap();
        let tls = config.tls.expect("TLS configured");
        assert_eq!(tls.cert_path, files.path("s1.pem"));
        assert_eq!(combine(&minimal(None), None).unwrap().tls, None);

        let config_path = files.path("cluster.yaml");
        let text = "tls_cert: s1.pem\ntls_key: s1.key\ntls_ca: ca.pem\n\
                    servers: {s1: 127.0.0.1:7001}\n";
        let file = parse_file(&config_path, text).unwrap();
        let overrides = ConfigOverrides {
            id: Some(ServerId(1)),
            data_dir: Some("d".into()),
            ..Default::default()
        };
        let from_file = combine(&overrides, Some((&config_path, &file))).unwrap();
        assert_eq!(from_file.tls.unwrap().key_path, files.path("s1.key"));
        // A flag overrides its key alone.
        let flag_wins = combine(
            &ConfigOverrides {
                tls_cert: Some(files.path("s2.pem")),
                tls_key: Some(files.path("s2.key")),
                ..overrides
            },
            Some((&config_path, &file)),
        )
        .unwrap();
        let tls = flag_wins.tls.unwrap();
        assert_eq!(tls.cert_path, files.path("s2.pem"));
        assert_eq!(tls.ca_path, files.path("ca.pem"));
    }

    #[test]
    fn tls_needs_all_three_files_and_says_which_are_missing() {
        let files = TlsFiles::new("config-tls-partial");
        let only_cert = ConfigOverrides {
            tls_cert: Some(files.path("s1.pem")),
            ..minimal(None)
        };
        let problem = combine(&only_cert, None).unwrap_err();
        assert_eq!(problem.place, "TLS");
        assert!(problem.problem.contains("--tls-key"), "{problem}");
        assert!(problem.problem.contains("--tls-ca"), "{problem}");
        let no_ca = ConfigOverrides {
            tls_ca: None,
            ..files.overrides("s1.pem", "s1.key", "ca.pem")
        };
        let problem = combine(&no_ca, None).unwrap_err();
        assert!(problem.problem.contains("missing --tls-ca"), "{problem}");
        assert!(!problem.problem.contains("missing --tls-cert"), "{problem}");
    }

    #[test]
    fn a_bad_tls_file_is_a_config_error_naming_the_file() {
        let files = TlsFiles::new("config-tls-bad");
        let check = |overrides: ConfigOverrides, file: &str, words: &str| {
            let problem = combine(&overrides, None).unwrap_err();
            assert_eq!(
                problem.place,
                files.path(file).display().to_string(),
                "{problem}"
            );
            assert!(problem.problem.contains(words), "{problem}");
        };
        check(
            files.overrides("missing.pem", "s1.key", "ca.pem"),
            "missing.pem",
            "cannot read",
        );
        check(
            files.overrides("s1.pem", "s1.key", "missing.pem"),
            "missing.pem",
            "cannot read",
        );
        check(
            files.overrides("garbage.pem", "s1.key", "ca.pem"),
            "garbage.pem",
            "no PEM certificate",
        );
        check(
            files.overrides("s1.pem", "garbage.pem", "ca.pem"),
            "garbage.pem",
            "no PEM private key",
        );
        check(
            files.overrides("s1.pem", "s1.key", "garbage.pem"),
            "garbage.pem",
            "no PEM certificate",
        );
        // A key given as the certificate, and a certificate as the key.
        check(
            files.overrides("s1.key", "s1.key", "ca.pem"),
            "s1.key",
            "no PEM certificate",
        );
        check(
            files.overrides("s1.pem", "s1.pem", "ca.pem"),
            "s1.pem",
            "no PEM private key",
        );
        check(
            files.overrides("s1.pem", "s2.key", "ca.pem"),
            "s2.key",
            "does not match the certificate",
        );
        check(
            files.overrides("alien.pem", "alien.key", "ca.pem"),
            "alien.pem",
            "does not verify against the CA",
        );
        check(
            files.overrides("s1.pem", "s1.key", "."),
            ".",
            "not a regular file",
        );
    }
}
