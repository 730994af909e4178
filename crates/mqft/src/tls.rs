//! The rustls client settings behind the TLS options rumqttc's simple
//! configuration cannot express: a directory of CA certificates
//! ([`Tls::ca_path`]), one pinned TLS version ([`Tls::version`]), and no
//! verification at all ([`Tls::insecure`]).
//!
//! Without any of those, [`crate::mqtt`] hands rumqttc the PEM files as they are
//! and this module is not used.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::Tls;
use crate::Error;

/// A TLS protocol version to speak, and no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl FromStr for TlsVersion {
    type Err = Error;
    /// Accepts `tlsv1.2` and `tlsv1.3` (`mosquitto_pub --tls-version`'s spelling),
    /// and `1.2`, `1.3`. Older versions are refused: rustls does not speak them.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().trim_start_matches("tlsv").trim_start_matches("tls") {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            "1" | "1.0" | "1.1" => Err(Error::usage(format!(
                "TLS version '{s}' is not supported (it is insecure): use tlsv1.2 or tlsv1.3"
            ))),
            _ => Err(Error::usage(format!("unknown TLS version '{s}': use tlsv1.2 or tlsv1.3"))),
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "tlsv1.2",
            TlsVersion::Tls13 => "tlsv1.3",
        })
    }
}

/// Whether `tls` needs [`client_config`] rather than rumqttc's simple settings.
pub(crate) fn needs_own_config(tls: &Tls) -> bool {
    tls.ca_path.is_some() || tls.insecure || tls.version.is_some()
}

/// The rustls client configuration for `tls`. Reads the files, so it can fail.
pub(crate) fn client_config(tls: &Tls) -> Result<ClientConfig, Error> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| Error::io("read", path, e));
    let mut roots = RootCertStore::empty();
    if let Some(file) = &tls.ca_file {
        let added = add_pem_certs(&mut roots, &read(file)?);
        if added == 0 {
            return Err(Error::usage(format!("no CA certificate (PEM) in {}", file.display())));
        }
    }
    if let Some(dir) = &tls.ca_path {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
        let mut added = 0;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("read directory", dir, e))?.path();
            // Every file that holds PEM certificates counts, whatever its name
            // (c_rehash's `<hash>.0` links or `*.crt`); anything else is skipped.
            if let Ok(pem) = std::fs::read(&path) {
                added += add_pem_certs(&mut roots, &pem);
            }
        }
        if added == 0 {
            return Err(Error::usage(format!("no CA certificate (PEM) in any file of {}", dir.display())));
        }
    }
    // Neither given: the system's CA certificates, as rustls-native-certs finds
    // them (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the platform's store), the same
    // as without these flags. Not needed when nothing is verified.
    if tls.ca_file.is_none() && tls.ca_path.is_none() && !tls.insecure {
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if roots.is_empty() {
            return Err(Error::usage("no CA file given and no system CA certificates found; set a CA file"));
        }
    }

    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.version {
        None => rustls::DEFAULT_VERSIONS,
        Some(TlsVersion::Tls12) => &[&rustls::version::TLS12],
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_protocol_versions(versions).with_root_certificates(roots);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::usage(format!("bad client certificate {}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(Error::usage(format!("no certificate (PEM) in {}", cert.display())));
            }
            let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| Error::usage(format!("no private key (PEM) in {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| Error::usage(format!("client certificate and key do not fit: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::usage("a client certificate needs both a certificate and a key file")),
    };
    if tls.insecure {
        let provider = Arc::clone(config.crypto_provider());
        config.dangerous().set_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)));
    }
    Ok(config)
}

/// Adds the certificates in `pem` to `roots`; returns how many it took. Blocks
/// that are not certificates, and certificates rustls cannot use as trust
/// anchors, are skipped.
fn add_pem_certs(roots: &mut RootCertStore, pem: &[u8]) -> usize {
    let certs = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok);
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    added
}

/// `Tls::insecure`: trusts any certificate for any host name. The handshake's
/// signatures are still checked (they prove the server holds the key of the
/// certificate it showed, whoever that is), so the connection is encrypted, but
/// not authenticated: anyone on the path can pose as the broker.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_versions_parse_in_mosquitto_spelling() {
        assert_eq!("tlsv1.2".parse::<TlsVersion>().unwrap(), TlsVersion::Tls12);
        assert_eq!("TLSv1.3".parse::<TlsVersion>().unwrap(), TlsVersion::Tls13);
        assert_eq!("1.3".parse::<TlsVersion>().unwrap(), TlsVersion::Tls13);
        let old = "tlsv1.1".parse::<TlsVersion>().unwrap_err().to_string();
        assert!(old.contains("not supported"), "{old}");
        assert!("tlsv2".parse::<TlsVersion>().is_err());
    }
}
