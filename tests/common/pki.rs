//! Certificates for TLS tests, made in the test: a CA, server and client certificates it
//! signs, and a web configuration that uses them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::Proc;

/// A certificate authority for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { issuer }
    }

    /// The CA's certificate (PEM).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA, and its key:
    /// (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        // Its own subject: one equal to the CA's would read as self-signed to OpenSSL.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names.join(" "));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes this CA's certificate as `ca.pem` and a server certificate for 127.0.0.1 and
    /// localhost as `server.pem`/`server-key.pem` in `dir`.
    pub fn write_server_files(&self, dir: &Path) {
        let (cert, key) = self.issue(&["127.0.0.1", "localhost"]);
        std::fs::write(dir.join("ca.pem"), self.pem()).expect("write ca.pem");
        std::fs::write(dir.join("server.pem"), cert).expect("write server.pem");
        std::fs::write(dir.join("server-key.pem"), key).expect("write server-key.pem");
    }
}

/// A bcrypt hash of `password` at the lowest cost (tests need no strength).
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt")
}

/// Writes `web.yml` in `dir`: TLS with server.pem/server-key.pem, extra `tls` lines (indented
/// under `tls_server_config`), and basic auth for `user` with `password` when given.
pub fn write_web_config(dir: &Path, tls: &str, user: Option<(&str, &str)>) -> PathBuf {
    let mut text =
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n".to_string();
    for line in tls.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    if let Some((user, password)) = user {
        text.push_str(&format!(
            "basic_auth_users:\n  {user}: {}\n",
            bcrypt_hash(password)
        ));
    }
    let path = dir.join("web.yml");
    std::fs::write(&path, text).expect("write web.yml");
    path
}

/// Starts the demo (simulator + exporter) with the web configuration `web`; returns the
/// process and the exporter's `host:port`.
pub fn start_secured_demo(web: &Path) -> (Proc, String) {
    let web = web.to_str().expect("utf-8 path");
    let (proc, line) = Proc::start(
        &[
            "--web.config.file",
            web,
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--pipelines",
            "4",
            "--projects",
            "1",
        ],
        &[],
        |line| line.contains("metrics at "),
    );
    let addr = line
        .split("metrics at https://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("the demo does not announce https: {line}"))
        .to_string();
    (proc, addr)
}
