//! Certificates for the TLS tests, made with rcgen: a CA, and the server, client and peer
//! certificates it signs, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA and what it signed, written as PEM files.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        let cn = self
            .cert
            .params()
            .distinguished_name
            .get(&DnType::CommonName)
            .map(|v| match v {
                rcgen::DnValue::Utf8String(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap();
        self.dir.join(format!("{cn}.pem"))
    }

    /// Signs a certificate for `cn` (a server's for 127.0.0.1 when `server`); its files.
    pub fn issue(&self, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let usage = if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        };
        self.sign(cn, server, vec![usage])
    }

    /// Signs a peer certificate for `cn`: for 127.0.0.1, served and presented when dialing.
    pub fn issue_peer(&self, cn: &str) -> (PathBuf, PathBuf) {
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(cn, true, usages)
    }

    fn sign(
        &self,
        cn: &str,
        for_loopback: bool,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> (PathBuf, PathBuf) {
        let names = if for_loopback {
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{cn}.crt")),
            self.dir.join(format!("{cn}.key")),
        );
        // A running member reloads its files when they change: signing over another
        // certificate's files would swap the member's identity mid-test.
        assert!(
            !c.exists() && !k.exists(),
            "{} exists already: issue it in another directory",
            c.display()
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}
