//! The sink client's TLS settings: `sink.ca_file` (a PEM bundle that
//! replaces the built-in web roots for this sink) and `sink.client_cert_file`
//! with `sink.client_key_file` (a PEM chain and key presented to the ITSM,
//! for mutual TLS). The files are read and parsed when the sink is built, so
//! `check` and startup name the field and file of one that is unreadable or
//! holds no usable PEM.

use std::path::{Path, PathBuf};

use reqwest::ClientBuilder;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::SinkBuildError;
use crate::config::SinkConfig;

/// What is wrong with one of the TLS files.
#[derive(Debug, thiserror::Error)]
pub enum SinkTlsError {
    #[error("{field}: cannot read `{}`: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: `{}` is not a PEM file of certificates: {message}", path.display())]
    Certs { field: &'static str, path: PathBuf, message: String },
    #[error("{field}: `{}` holds no PEM certificate", path.display())]
    NoCert { field: &'static str, path: PathBuf },
    #[error("sink.client_key_file: `{}` holds no PEM private key: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("sink.client_cert_file and sink.client_key_file: set both or neither (only {given} is set)")]
    HalfIdentity { given: &'static str },
}

/// `builder` with `cfg`'s CA bundle and client identity, when set.
pub(super) fn configure(mut builder: ClientBuilder, cfg: &SinkConfig) -> Result<ClientBuilder, SinkBuildError> {
    if let Some(path) = &cfg.ca_file {
        let field = "sink.ca_file";
        let pem = read(field, path)?;
        builder = builder.tls_built_in_root_certs(false);
        for der in certs(field, path, &pem)? {
            let cert = reqwest::Certificate::from_der(der.as_ref()).map_err(|e| SinkTlsError::Certs {
                field,
                path: path.clone(),
                message: super::error_chain(&e),
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&cfg.client_cert_file, &cfg.client_key_file) {
        (None, None) => {}
        (Some(_), None) => return Err(SinkTlsError::HalfIdentity { given: "sink.client_cert_file" }.into()),
        (None, Some(_)) => return Err(SinkTlsError::HalfIdentity { given: "sink.client_key_file" }.into()),
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read("sink.client_cert_file", cert_path)?;
            certs("sink.client_cert_file", cert_path, &cert_pem)?;
            let key_pem = read("sink.client_key_file", key_path)?;
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| SinkTlsError::Key { path: key_path.clone(), message: e.to_string() })?;
            let mut both = cert_pem;
            both.push(b'\n');
            both.extend_from_slice(&key_pem);
            let identity = reqwest::Identity::from_pem(&both).map_err(|e| {
                SinkBuildError::Client(format!("sink.client_cert_file and sink.client_key_file: {}", super::error_chain(&e)))
            })?;
            builder = builder.identity(identity);
        }
    }
    Ok(builder)
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, SinkTlsError> {
    std::fs::read(path).map_err(|source| SinkTlsError::Read { field, path: path.to_owned(), source })
}

fn certs(field: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, SinkTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SinkTlsError::Certs { field, path: path.to_owned(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(SinkTlsError::NoCert { field, path: path.to_owned() });
    }
    Ok(certs)
}
