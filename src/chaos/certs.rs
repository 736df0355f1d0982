//! Peer certificates for a chaos run with `--peer-tls`: a CA and one peer certificate for
//! loopback, written under the run's directory, and the `serve` flags that use them (mutual
//! TLS, the CA's certificates only, one allowed common name). Made here with rcgen; never
//! used outside a chaos run.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// The common name every member's peer certificate carries.
const PEER_CN: &str = "chaos-member";

/// `extra` with the peer TLS flags of a CA and certificate made in `dir/certs`.
pub fn with_peer_tls(mut extra: Vec<String>, dir: &Path) -> Result<Vec<String>, String> {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| format!("{}: {e}", certs.display()))?;
    let err = |e: rcgen::Error| format!("making peer certificates: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "chaos-ca");
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, PEER_CN);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    let write = |name: &str, pem: String| {
        let path = certs.join(name);
        std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<_, String>(path.to_string_lossy().into_owned())
    };
    let ca_file = write("ca.pem", ca.pem())?;
    let cert_file = write("peer.crt", cert.pem())?;
    let key_file = write("peer.key", key.serialize_pem())?;
    extra.extend([
        "--peer-cert-file".to_string(),
        cert_file,
        "--peer-key-file".to_string(),
        key_file,
        "--peer-trusted-ca-file".to_string(),
        ca_file,
        "--peer-client-cert-auth".to_string(),
        "--peer-cert-allowed-cn".to_string(),
        PEER_CN.to_string(),
    ]);
    Ok(extra)
}
