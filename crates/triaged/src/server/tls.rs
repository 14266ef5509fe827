//! `[http.tls]`: the listener's certificate chain and key, read from PEM
//! files at start-up (and by `triaged check`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls.cert: cannot read certificates from `{}`: {message}", path.display())]
    Cert { path: PathBuf, message: String },
    #[error("http.tls.cert: `{}` holds no certificate", path.display())]
    NoCert { path: PathBuf },
    #[error("http.tls.key: cannot read a private key from `{}`: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("http.tls: the certificate and key do not make a server configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The acceptor for `cfg`'s certificate and key (HTTP/1.1 only).
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert { path: cfg.cert.clone(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert { path: cfg.cert.clone() });
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| TlsError::Key { path: cfg.key.clone(), message: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
}
