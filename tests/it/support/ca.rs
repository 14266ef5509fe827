//! Test certificate authorities made with rcgen: a CA, server certificates
//! for 127.0.0.1 and localhost, and client certificates, written as PEM.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA, written as `<name>-ca.pem` in `dir`; returns it, its key and the path.
pub fn make_ca(dir: &Path, name: &str) -> (rcgen::Certificate, KeyPair, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, format!("triaged test CA {name}"));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    (cert, key, path)
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`, written
/// as `server.pem` and `server.key` in `dir`.
pub fn server_cert(dir: &Path, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    signed(dir, "server", params, ca, ca_key)
}

/// A client certificate (`CN=name`, client authentication) signed by `ca`,
/// written as `<name>.pem` and `<name>.key` in `dir`.
pub fn client_cert(dir: &Path, name: &str, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    signed(dir, name, params, ca, ca_key)
}

fn signed(dir: &Path, name: &str, params: CertificateParams, ca: &rcgen::Certificate, ca_key: &KeyPair) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}
