//! TLS settings and the HTTP clients that use them (rustls with the `ring` provider).
//!
//! A cluster has its own small CA (`cube tls init`): the manager and every worker serve with a
//! certificate it signed, and whoever calls them (the manager calling a worker, a worker
//! enrolling with the manager, the CLI) trusts that CA only, so a certificate from another CA or
//! for another name is refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS settings could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsError {
    /// The file or setting.
    pub what: String,
    /// What is wrong with it.
    pub reason: String,
}

fn error(what: impl Into<String>, reason: impl ToString) -> TlsError {
    TlsError {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client's TLS settings: the CA it trusts. Compared by identity.
#[derive(Clone)]
pub struct ClientTls(Arc<rustls::ClientConfig>);

impl ClientTls {
    /// Trusts the CA certificate(s) in the PEM file at `ca`, and nothing else.
    pub fn from_ca_file(ca: &Path) -> Result<ClientTls, TlsError> {
        let what = ca.display().to_string();
        let pem = std::fs::read(ca).map_err(|e| error(&what, e))?;
        ClientTls::from_ca_pem(&pem, &what)
    }

    /// Trusts the CA certificate(s) in `pem`.
    pub fn from_ca_pem(pem: &[u8], what: &str) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| error(what, e))?;
            roots.add(cert).map_err(|e| error(what, e))?;
        }
        if roots.is_empty() {
            return Err(error(what, "no certificate in it"));
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(what, e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls(Arc::new(config)))
    }
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A server's TLS settings from its certificate chain and private key (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let cert_what = cert.display().to_string();
    let key_what = key.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| error(&cert_what, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(&cert_what, e))?;
    if chain.is_empty() {
        return Err(error(cert_what, "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| error(&key_what, e))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&cert_what, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| error(cert_what, e))
}

/// An HTTP client that follows no redirects, with `tls` for `https://` addresses (without it,
/// an `https://` address fails to connect rather than trusting anything). `timeout` bounds
/// each request, or nothing when `None`.
pub fn http_client(tls: Option<&ClientTls>, timeout: Option<Duration>) -> awc::Client {
    let mut connector = awc::Connector::new();
    if let Some(tls) = tls {
        let mut config = (*tls.0).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        connector = connector.rustls_0_23(Arc::new(config));
    }
    let builder = awc::Client::builder()
        .connector(connector)
        .disable_redirects();
    match timeout {
        Some(t) => builder.timeout(t).finish(),
        None => builder.disable_timeout().finish(),
    }
}
