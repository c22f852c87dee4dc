use std::path::Path;

use super::*;

/// A self-signed certificate and its key, written as cert.pem and key.pem in `dir`.
fn write_cert(dir: &Path) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
}

fn load(text: &str) -> Result<WebConfig, WebConfigError> {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    std::fs::write(
        dir.path().join("ca.pem"),
        std::fs::read(dir.path().join("cert.pem")).unwrap(),
    )
    .unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, text).unwrap();
    WebConfig::load(&path)
}

fn error(text: &str) -> String {
    load(text).expect_err("must be rejected").to_string()
}

const TLS: &str = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";

#[test]
fn an_empty_file_turns_nothing_on() {
    let config = load("# nothing yet\n").unwrap();
    assert!(config.tls().is_none());
    assert!(config.basic_auth().is_none());
    assert!(config.headers().is_empty());
}

#[test]
fn the_toolkit_format_loads_with_relative_paths_and_every_honoured_key() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let text = format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  \
         min_version: TLS13\n  max_version: TLS13\nbasic_auth_users:\n  prometheus: {hash}\n\
         http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
    );
    let config = load(&text).unwrap();
    let tls = config.tls().unwrap();
    assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(!config.http2());
    assert_eq!(config.basic_auth().unwrap().len(), 1);
    assert_eq!(config.headers()["x-frame-options"], "deny");
    // The web config, the certificate, the key and the client CA are watched.
    assert_eq!(config.sources.len(), 4);
}

#[test]
fn keys_rustls_cannot_honour_are_named() {
    for key in [
        "cipher_suites: [TLS_AES_128_GCM_SHA256]",
        "curve_preferences: [X25519]",
        "prefer_server_cipher_suites: true",
        "client_allowed_sans: [a.example]",
    ] {
        let name = key.split(':').next().unwrap();
        let err = error(&format!("{TLS}  {key}\n"));
        assert!(
            err.contains(&format!("`tls_server_config.{name}` is not supported")),
            "{err}"
        );
    }
    let err = error(&format!("{TLS}  min_version: TLS11\n"));
    assert!(
        err.contains("`tls_server_config.min_version` is not supported"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let err = error("basic_auth_user:\n  a: b\n");
    assert!(err.contains("basic_auth_user"), "{err}");
    let err = error(&format!("{TLS}  cert_fil: x\n"));
    assert!(err.contains("cert_fil"), "{err}");
    let err = error(&format!("{TLS}  client_auth_type: Sometimes\n"));
    assert!(err.contains("Sometimes"), "{err}");
}

#[test]
fn inconsistent_settings_are_named() {
    let cases = [
        (
            format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
            "tls_server_config.client_auth_type",
        ),
        (
            format!("{TLS}  client_ca_file: ca.pem\n"),
            "tls_server_config.client_ca_file",
        ),
        (
            format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"),
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  key_file: key.pem\n".to_string(),
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n".to_string(),
            "tls_server_config.cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n".to_string(),
            "tls_server_config.cert_file",
        ),
        (
            "http_server_config:\n  headers:\n    Content-Type: text/html\n".to_string(),
            "http_server_config.headers.Content-Type",
        ),
    ];
    for (text, key) in cases {
        let err = error(&text);
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn inline_certificates_are_accepted() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let indent = |pem: String| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let text = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}",
        indent(certified.cert.pem()),
        indent(certified.signing_key.serialize_pem())
    );
    assert!(load(&text).unwrap().tls().is_some());
}
