//! HTTPS for the ledger (`[server] tls_cert_file` and `tls_key_file`): rustls on ring, no
//! OpenSSL. The files are read once, when `serve` starts; a bad file stops it with a message
//! naming the key, the file and what is wrong with it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate chain and key files of `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The configuration file that named them (for messages).
    pub source_name: String,
    /// PEM: the server's certificate first, then the intermediates, if any.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {key} ({}): {problem}", path.display())]
pub struct TlsSetupError {
    /// The configuration file.
    pub source_name: String,
    /// `[server] tls_cert_file` or `[server] tls_key_file`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

impl TlsFiles {
    fn err(&self, key: &'static str, path: &Path, problem: impl Into<String>) -> TlsSetupError {
        TlsSetupError {
            source_name: self.source_name.clone(),
            key,
            path: path.to_owned(),
            problem: problem.into(),
        }
    }

    /// The server's TLS configuration: TLS 1.2 and 1.3 with rustls' safe defaults, HTTP/1.1
    /// announced by ALPN, no client certificates (terminals authenticate with their token).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        const CERT: &str = "[server] tls_cert_file";
        const KEY: &str = "[server] tls_key_file";
        let cert_pem = std::fs::read(&self.cert_file)
            .map_err(|e| self.err(CERT, &self.cert_file, format!("cannot read it: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(CERT, &self.cert_file, format!("not PEM certificates: {e}")))?;
        if chain.is_empty() {
            return Err(self.err(
                CERT,
                &self.cert_file,
                "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            ));
        }
        let key_pem = std::fs::read(&self.key_file)
            .map_err(|e| self.err(KEY, &self.key_file, format!("cannot read it: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            self.err(
                KEY,
                &self.key_file,
                format!("no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----): {e}"),
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.err(CERT, &self.cert_file, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => self.err(
                    KEY,
                    &self.key_file,
                    format!("does not go with the certificate of tls_cert_file: {e}"),
                ),
                other => self.err(
                    CERT,
                    &self.cert_file,
                    format!("cannot be served with the key of tls_key_file: {other}"),
                ),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
