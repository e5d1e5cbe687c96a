//! Optional TLS for the TCP deployment: reading PEM files and building the rustls
//! configurations that servers, peers, the client library and the load generator use.
//!
//! What is verified where (docs/operations.md, "TLS", says it for operators):
//! - A server with TLS speaks only TLS on its one port. It presents `--tls-cert` to everyone.
//!   Client certificates are optional for client connections (clients prove themselves with
//!   their secret) but, when one is presented, it must chain to `--tls-ca` or the handshake
//!   fails. A connection that then identifies as a peer (the peer magic, read inside TLS) must
//!   have presented a verified certificate, or it is refused.
//! - A server connecting to a peer presents its own certificate as its client certificate and
//!   verifies the peer's certificate against `--tls-ca`, for the host of the peer's address.
//! - A client verifies the server's certificate against the CA it was given, for the host of
//!   the address it dials, or for one fixed name ([`ClientTls::with_server_name`]).
//!
//! Only the `ring` provider is compiled in; it is named explicitly, so no process-wide default
//! provider is needed. Nothing here does I/O on sockets: [`stream`] holds the tokio side.

pub mod generate;
pub mod stream;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest PEM file read: certificates and keys are a few KiB, a CA bundle a few hundred.
pub const PEM_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// A TLS file that cannot be used, and why. Displays as `FILE: problem`.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsFileError {
    pub path: PathBuf,
    pub problem: String,
}

fn file_error(path: &Path, problem: impl Into<String>) -> TlsFileError {
    TlsFileError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The one crypto provider this build uses: *ring*'s. rustls 0.23.48 deprecated it because
/// it has no post-quantum key exchange (X25519MLKEM768, which aws-lc-rs offers); it is kept
/// because it builds with a C compiler alone, where aws-lc-rs needs a larger native build.
/// Switching is this one function and the `ring` features in Cargo.toml.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole PEM file, refusing what is not a regular file or is absurdly large.
fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsFileError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| file_error(path, format!("cannot read the {what}: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if !metadata.is_file() {
        return Err(file_error(
            path,
            format!("the {what} is not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(file_error(
            path,
            format!("the {what} is larger than {PEM_FILE_BYTES_MAX} bytes"),
        ));
    }
    Ok(bytes)
}

/// Every `CERTIFICATE` block of a PEM file, in order; at least one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read_pem_file(path, "certificate file")?;
    let mut certificates = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let certificate =
            item.map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(file_error(
            path,
            "holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)",
        ));
    }
    Ok(certificates)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read_pem_file(path, "private key file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(
            path,
            "holds no PEM private key (a `-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or \
             `EC PRIVATE KEY` block)",
        ),
        other => file_error(path, format!("not a PEM private key file: {other}")),
    })
}

/// The trust anchors of a CA file: every certificate in it must parse as one.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsFileError> {
    let certificates = load_certificates(path)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| {
            file_error(
                path,
                format!(
                    "certificate {} is not a usable CA certificate: {e}",
                    index + 1
                ),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// A server's TLS: what it accepts with, and what it connects to its peers with.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
    /// For every inbound connection: this server's certificate; client certificates optional
    /// but verified against the CA when presented.
    pub acceptor: Arc<ServerConfig>,
    /// For outbound peer connections: verifies the peer against the CA and presents this
    /// server's certificate as the client certificate.
    pub peer_connector: Arc<ClientConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// Compares where the material came from, not the keys.
impl PartialEq for ServerTls {
    fn eq(&self, other: &ServerTls) -> bool {
        (&self.cert_path, &self.key_path, &self.ca_path)
            == (&other.cert_path, &other.key_path, &other.ca_path)
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// Reads and checks the three files: the key must match the certificate, and the
    /// certificate must chain to the CA and be usable as a client certificate too (its peers
    /// verify it as one), so that a mistake shows at start-up rather than as refused peers.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        ca_path: &Path,
    ) -> Result<ServerTls, TlsFileError> {
        let chain = load_certificates(cert_path)?;
        let key = load_private_key(key_path)?;
        let roots = load_roots(ca_path)?;
        let provider = provider();
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_error(ca_path, format!("cannot verify clients with it: {e}")))?;
        // Our own certificate, checked as our peers will check it.
        client_verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| {
                file_error(
                    cert_path,
                    format!(
                        "the certificate does not verify against the CA in {} as a client \
                         certificate, as peers will check it: {e} (it must be signed by that \
                         CA, be valid now, and allow the clientAuth and serverAuth key usages)",
                        ca_path.display()
                    ),
                )
            })?;
        let key_problem = |e: rustls::Error| match e {
            rustls::Error::InconsistentKeys(_) => file_error(
                key_path,
                format!(
                    "the private key does not match the certificate in {}",
                    cert_path.display()
                ),
            ),
            other => file_error(
                key_path,
                format!(
                    "cannot use the private key with the certificate in {}: {other}",
                    cert_path.display()
                ),
            ),
        };
        let mut acceptor = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error(cert_path, e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(key_problem)?;
        // Nobody resumes sessions here: connections are long-lived.
        acceptor.send_tls13_tickets = 0;
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| file_error(ca_path, format!("cannot verify servers with it: {e}")))?;
        let peer_connector = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error(cert_path, e.to_string()))?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(key_problem)?;
        Ok(ServerTls {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            ca_path: ca_path.to_path_buf(),
            acceptor: Arc::new(acceptor),
            peer_connector: Arc::new(peer_connector),
        })
    }
}

/// TLS for a client of the cluster (the client library, `lockstep client` and `lock`, the TCP
/// load generator): the CA that server certificates must chain to, and how servers are named.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// Verify every server's certificate for this name instead of the host of its address.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the certificates in the PEM file at `ca_path`, and no others.
    pub fn from_ca_file(ca_path: &Path) -> Result<ClientTls, TlsFileError> {
        let roots = load_roots(ca_path)?;
        Ok(ClientTls::from_roots(roots))
    }

    /// Trusts `roots`.
    pub fn from_roots(roots: Arc<RootCertStore>) -> ClientTls {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientTls::from_config(Arc::new(config))
    }

    /// Uses a rustls configuration as it is (a client certificate, other roots).
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
        }
    }

    /// Verifies every server's certificate for `name` (a DNS name or an IP address) instead
    /// of the host of the address dialled.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, String> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The name to verify the certificate of the server at `address` (`host:port`) for.
    pub fn server_name_for(&self, address: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name_of(address),
        }
    }
}

/// A DNS name or an IP address, as a certificate must name it.
pub fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("{name:?} is neither a DNS name nor an IP address"))
}

/// The host of `host:port` (`[v6]:port` too), as the name its certificate must carry.
pub fn server_name_of(address: &str) -> Result<ServerName<'static>, String> {
    let Some((host, _port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not host:port"));
    };
    parse_server_name(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_of_the_address() {
        assert_eq!(
            server_name_of("127.0.0.1:7001").unwrap(),
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
        );
        assert_eq!(
            server_name_of("[::1]:7001").unwrap(),
            ServerName::IpAddress(std::net::Ipv6Addr::LOCALHOST.into())
        );
        assert_eq!(
            server_name_of("locks.example.com:7001").unwrap().to_str(),
            "locks.example.com"
        );
        assert!(server_name_of("nohost").is_err());
        assert!(parse_server_name("not a name").is_err());
    }
}
