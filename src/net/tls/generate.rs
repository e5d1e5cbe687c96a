//! Making a private CA and the certificates it signs, for `lockstep cluster up --tls` and the
//! tests (rcgen, ECDSA P-256). Production clusters bring their own (docs/operations.md, "TLS").

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct IssuedPem {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA that lives in memory only: its key is never written anywhere.
pub struct GeneratedCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl GeneratedCa {
    /// A fresh self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<GeneratedCa, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = name(common_name);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        Ok(GeneratedCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// The CA certificate: what `--tls-ca` takes.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for a server reachable as each of `names` (IP addresses or DNS names),
    /// good for serving TLS and for connecting to peers with it (serverAuth and clientAuth).
    pub fn issue_server(&self, common_name: &str, names: &[String]) -> Result<IssuedPem, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| format!("{names:?}: not certificate names: {e}"))?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign a certificate for {common_name}: {e}"))?;
        Ok(IssuedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::{ServerTls, load_certificates};

    #[test]
    fn issued_certificates_load_as_a_servers_tls() {
        let directory = crate::storage::test_directory::TestDirectory::new("tls-generate");
        let ca = GeneratedCa::new("test CA").unwrap();
        let server = ca
            .issue_server("s1", &["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let (cert, key, ca_path) = (
            directory.path().join("s1.pem"),
            directory.path().join("s1.key"),
            directory.path().join("ca.pem"),
        );
        std::fs::write(&cert, &server.cert_pem).unwrap();
        std::fs::write(&key, &server.key_pem).unwrap();
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        assert_eq!(load_certificates(&cert).unwrap().len(), 1);
        ServerTls::load(&cert, &key, &ca_path).expect("a generated certificate loads");
    }
}
