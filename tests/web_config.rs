//! The web configuration file (`--web.config.file`) on a running exporter: TLS only, basic
//! auth on every path but /healthz, extra headers, client certificates, `healthcheck` over TLS,
//! certificates swapped on disk served after a reload (connections open before it kept), a
//! changed file reloaded without a signal, and a malformed file refused with exit code 2 naming
//! the key.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::pki::{Ca, start_secured_demo, write_web_config};
use common::{Proc, Sample, binary, parse_metrics, value};

/// A client that trusts only `ca_pem`.
fn client(ca_pem: &str) -> reqwest::Client {
    client_with(ca_pem, None)
}

fn client_with(ca_pem: &str, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca"))
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().expect("client")
}

fn send_hangup(proc: &Proc) {
    let status = Command::new("kill")
        .args(["-HUP", &proc.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Scrapes `base` (as user prometheus) until the web configuration's reload families meet
/// `done` (up to 30 s): they are written just after the reload's log line.
async fn web_reloads(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .basic_auth("prometheus", Some("s3cret"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        let samples = parse_metrics(&text);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reloads(samples: &[Sample], result: &str) -> f64 {
    let name = "codearts_exporter_web_config_reload_total";
    value(samples, name, &[("result", result)]).unwrap_or(f64::NAN)
}

fn last_reload_ok(samples: &[Sample]) -> Option<f64> {
    value(
        samples,
        "codearts_exporter_web_config_last_reload_successful",
        &[],
    )
}

/// Runs `healthcheck` with `args`; returns its exit code.
fn healthcheck(args: &[&str]) -> i32 {
    let output = Command::new(binary())
        .arg("healthcheck")
        .args(args)
        .output()
        .expect("run healthcheck");
    output.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_guard_every_path_but_healthz_and_certificates_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_ca = Ca::new("first CA");
    first_ca.write_server_files(dir.path());
    let web = write_web_config(dir.path(), "", Some(("prometheus", "s3cret")));
    let mut text = std::fs::read_to_string(&web).expect("read web.yml");
    text.push_str("http_server_config:\n  headers:\n    X-Frame-Options: deny\n");
    std::fs::write(&web, &text).expect("write web.yml");
    let good_web = dir.path().join("good-web.yml");
    std::fs::write(&good_web, text).expect("keep web.yml");
    let (proc, addr) = start_secured_demo(&web);
    let base = format!("https://{addr}");

    // Plain HTTP on the TLS port gets no HTTP answer: the handshake fails and the connection
    // is closed.
    let mut plain = std::net::TcpStream::connect(&addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .is_err()
    );

    let trusting_first = client(&first_ca.pem());
    let response = trusting_first
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii");
    assert!(challenge.starts_with("Basic "), "{challenge}");
    assert_eq!(response.headers()["x-frame-options"], "deny");

    for (user, password) in [("prometheus", "wrong"), ("someone", "s3cret")] {
        let response = trusting_first
            .get(format!("{base}/metrics"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 401, "{user}:{password}");
    }
    let response = trusting_first
        .get(format!("{base}/metrics"))
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-frame-options"], "deny");
    let body = response.text().await.expect("body");
    assert!(body.contains("codearts_"), "{body}");

    // Probes need no credentials for /healthz, and only for it.
    let healthz = trusting_first
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(healthz.status(), 200);
    let readyz = trusting_first
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(readyz.status(), 401);

    // `healthcheck` over TLS: with the CA it trusts the exporter; without, it does not.
    let ca_file = dir.path().join("ca.pem");
    let url = format!("{base}/healthz");
    assert_eq!(
        healthcheck(&["--url", &url, "--ca-file", ca_file.to_str().expect("path")]),
        0
    );
    assert_eq!(healthcheck(&["--url", &url]), 1);
    assert_eq!(healthcheck(&["--url", &url, "--insecure"]), 0);

    // A certificate of another CA swapped on disk is served after SIGHUP; the connection
    // opened before the reload stays up (the first client's pooled connection still works).
    let second_ca = Ca::new("second CA");
    let (cert, key) = second_ca.issue(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.path().join("server-key.pem"), key).expect("write key");
    std::fs::write(dir.path().join("server.pem"), cert).expect("write cert");
    send_hangup(&proc);
    let trusting_second = client(&second_ca.pem());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = trusting_second.get(format!("{base}/healthz")).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the swapped certificate is not served:\n{}",
            proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proc.output_when("the reload", |out| {
        out.contains("web configuration reloaded")
    });
    let kept = trusting_first
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("the connection opened before the reload is kept");
    assert_eq!(kept.status(), 200);
    // (A reload that read the key and the certificate half-written would count a failure.)
    let swapped = web_reloads(&trusting_second, &base, "a reload counted", |s| {
        reloads(s, "success") >= 1.0 && last_reload_ok(s) == Some(1.0)
    })
    .await;
    let failed_before = reloads(&swapped, "failure");
    let fresh_first = client(&first_ca.pem());
    assert!(
        fresh_first
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err(),
        "a new connection still gets the old certificate"
    );

    // A bad file is rejected and the running settings stay.
    std::fs::write(&web, "tls_server_config:\n  cipher_suites: [x]\n").expect("write web.yml");
    send_hangup(&proc);
    proc.output_when("the rejected reload", |out| {
        out.contains("web configuration reload rejected")
            && out.contains("tls_server_config.cipher_suites")
    });
    let response = trusting_second
        .get(format!("{base}/metrics"))
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    web_reloads(&trusting_second, &base, "the rejection counted", |s| {
        reloads(s, "failure") >= failed_before + 1.0 && last_reload_ok(s) == Some(0.0)
    })
    .await;

    // A changed file is reloaded without a signal (it is compared every 5 s).
    let mut text = std::fs::read_to_string(&good_web).expect("read the good web.yml");
    text = text.replace("X-Frame-Options: deny", "X-Frame-Options: sameorigin");
    std::fs::write(&web, text).expect("write web.yml");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = trusting_second.get(format!("{base}/healthz")).send().await;
        if answer.is_ok_and(|r| {
            r.headers()
                .get("x-frame-options")
                .is_some_and(|v| v == "sameorigin")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed file was not reloaded:\n{}",
            proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    web_reloads(&trusting_second, &base, "the good reload counted", |s| {
        reloads(s, "failure") >= failed_before + 1.0 && last_reload_ok(s) == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_client_certificate_must_be_given_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("CA");
    ca.write_server_files(dir.path());
    let web = write_web_config(
        dir.path(),
        "client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: ca.pem\nmin_version: TLS13",
        None,
    );
    let (_proc, addr) = start_secured_demo(&web);
    let url = format!("https://{addr}/healthz");

    assert!(client(&ca.pem()).get(&url).send().await.is_err());
    let (cert, key) = Ca::new("a stranger").issue(&["client"]);
    let stranger = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("id");
    assert!(
        client_with(&ca.pem(), Some(stranger))
            .get(&url)
            .send()
            .await
            .is_err()
    );
    let (cert, key) = ca.issue(&["client"]);
    let identity = format!("{cert}{key}");
    let known = reqwest::Identity::from_pem(identity.as_bytes()).expect("id");
    let response = client_with(&ca.pem(), Some(known))
        .get(&url)
        .send()
        .await
        .expect("GET with a client certificate");
    assert_eq!(response.status(), 200);

    let identity_file = dir.path().join("client.pem");
    std::fs::write(&identity_file, identity).expect("write client.pem");
    let ca_file = dir.path().join("ca.pem");
    let ca_arg = ca_file.to_str().expect("path");
    assert_eq!(healthcheck(&["--url", &url, "--ca-file", ca_arg]), 1);
    let identity_arg = identity_file.to_str().expect("path");
    assert_eq!(
        healthcheck(&[
            "--url",
            &url,
            "--ca-file",
            ca_arg,
            "--client-cert-file",
            identity_arg
        ]),
        0
    );
}

#[test]
fn a_malformed_web_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    Ca::new("CA").write_server_files(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        common::simulator_config("http://127.0.0.1:9").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nweb_config_file = \"web.yml\"",
        ) + &format!(
            "[[targets]]\nproject_id = \"{id}\"\npipeline_ids = [\"{id}\"]\ninterval = \"30s\"\n",
            id = "0123456789abcdef0123456789abcdef"
        ),
    )
    .expect("write config");
    // Runs the binary; a web configuration accepted by mistake would run the exporter, so it
    // is stopped after 30 s and the test fails.
    let run = |args: &[&str]| {
        let mut child = Command::new(binary())
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the binary");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} still runs after 30 s: the web configuration was accepted");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("output");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let config_arg = config.to_str().expect("path");
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  \
             curve_preferences: [X25519]\n",
            "tls_server_config.curve_preferences",
        ),
        ("basic_auth_user:\n  prometheus: x\n", "basic_auth_user"),
        (
            "basic_auth_users:\n  prometheus: not-a-hash\n",
            "basic_auth_users.prometheus",
        ),
    ];
    for (text, key) in cases {
        let web = dir.path().join("web.yml");
        std::fs::write(&web, text).expect("write web.yml");
        for args in [
            vec!["run", "--config", config_arg],
            vec!["check-config", "--config", config_arg],
            vec![
                "--web.config.file",
                web.to_str().expect("path"),
                "demo",
                "--listen",
                "127.0.0.1:0",
            ],
        ] {
            let (code, _, stderr) = run(&args);
            assert_eq!(code, 2, "{args:?} with {text}: {stderr}");
            assert!(
                stderr.contains(key),
                "{args:?} does not name {key}: {stderr}"
            );
        }
    }
    let hash = common::pki::bcrypt_hash("pw");
    std::fs::write(
        dir.path().join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .expect("write web.yml");
    let (code, stdout, stderr) = run(&["check-config", "--config", config_arg]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("TLS on, basic auth users: 1"), "{stdout}");
    assert!(
        !stdout.contains(&hash),
        "check-config printed a hash: {stdout}"
    );
}
