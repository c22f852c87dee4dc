//! The three authentication methods against the simulator, which checks them for real.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::{Duration, Instant};

use common::{
    Exporter, Sim, get, get_json, parse_metrics, select, start_exporter, sum, value,
    wait_for_status_200,
};

/// Credentials the simulator accepts (its defaults).
const SIM_AK: &str = "SIMULATORAK000000001";
const SIM_SK: &str = "simulator-secret-key-0000000000000000000";
const SIM_USER: &str = "demo-user";
const SIM_PASSWORD: &str = "demo-password";
const SIM_DOMAIN: &str = "demo-account";

/// One target with every pipeline of the first project.
fn config(sim: &Sim, truth: &serde_json::Value, auth: &str) -> String {
    let project = &truth["pipelines"][0]["project_id"];
    let pipelines: Vec<String> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .filter(|p| &p["project_id"] == project)
        .map(|p| p["pipeline_id"].to_string())
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[codearts]
endpoint = "{url}"
iam_endpoint = "{url}"
timeout = "5s"
[auth]
{auth}
[[targets]]
name = "t0"
project_id = {project}
pipeline_ids = [{pipelines}]
interval = "1s"
"#,
        url = sim.url,
        pipelines = pipelines.join(", "),
    )
}

async fn scrape(exporter: &Exporter) -> Vec<common::Sample> {
    parse_metrics(&get(&format!("{}/metrics", exporter.url)).await.1)
}

/// Batch status requests answered with `code`, if any were.
fn status_requests(samples: &[common::Sample], code: &str) -> Option<f64> {
    value(
        samples,
        "codearts_exporter_api_requests_total",
        &[("api", "v5_status"), ("code", code)],
    )
}

/// Waits until three batch status requests have succeeded.
async fn three_polls(exporter: &Exporter) -> Vec<common::Sample> {
    exporter
        .scrape_until(Duration::from_secs(30), "three polls", |s| {
            status_requests(s, "200").is_some_and(|n| n >= 3.0)
        })
        .await
}

/// Waits for the first 401 of the batch status; the target is down then, as it never polled.
async fn rejected(exporter: &Exporter) {
    let samples = exporter
        .scrape_until(Duration::from_secs(30), "a 401", |s| {
            status_requests(s, "401").is_some()
        })
        .await;
    assert_eq!(
        value(&samples, "codearts_exporter_target_up", &[("target", "t0")]),
        Some(0.0)
    );
}

fn assert_no_secret(exporter: &Exporter, metrics: &str, secrets: &[&str]) {
    let logs = exporter.proc.output();
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "secret {secret:?} in the logs:\n{logs}"
        );
        assert!(!metrics.contains(secret), "secret {secret:?} in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aksk_requests_are_signed_and_accepted() {
    let sim = common::start_simulator_with(2, 1, 5, 60.0, &[]);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let auth = format!(
        "method = \"aksk\"\nak = \"{SIM_AK}\"\nsk = \"{SIM_SK}\"\nproject_id = \"0123456789abcdef0123456789abcdef\"\nsecurity_token = \"temporary-security-token-xyz\""
    );
    let exporter = start_exporter(&config(&sim, &truth, &auth), &[("RUST_LOG", "debug")]);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    let samples = scrape(&exporter).await;
    assert!(!select(&samples, "codearts_pipeline_status", &[]).is_empty());
    assert!(status_requests(&samples, "200").is_some());
    let metrics = get(&format!("{}/metrics", exporter.url)).await.1;
    assert_no_secret(
        &exporter,
        &metrics,
        &[SIM_SK, "temporary-security-token-xyz"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_key_gives_a_clear_error() {
    let sim = common::start_simulator_with(2, 1, 5, 60.0, &[]);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let auth = format!("method = \"aksk\"\nak = \"{SIM_AK}\"\nsk = \"not-the-right-secret-key\"");
    let exporter = start_exporter(&config(&sim, &truth, &auth), &[("RUST_LOG", "debug")]);
    rejected(&exporter).await;
    let (status, _) = get(&format!("{}/readyz", exporter.url)).await;
    assert_eq!(status, 503);
    let output = exporter.proc.output();
    assert!(
        output.contains("either the signature") && output.contains("X-Project-Id"),
        "{output}"
    );
    let metrics = get(&format!("{}/metrics", exporter.url)).await.1;
    assert_no_secret(&exporter, &metrics, &["not-the-right-secret-key"]);
}

/// AK/SK without `auth.project_id`: the IAM project id is looked up once from IAM, as the
/// vendor SDK does, and sent (signed) with every request, so a service that insists on it
/// accepts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aksk_looks_up_the_project_id_once_and_sends_it() {
    let sim = common::start_simulator_with(2, 1, 5, 60.0, &["--require-project-id"]);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let auth = format!("method = \"aksk\"\nak = \"{SIM_AK}\"\nsk = \"{SIM_SK}\"");
    let exporter = start_exporter(&config(&sim, &truth, &auth), &[]);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    // Several polls later, still one lookup.
    let samples = three_polls(&exporter).await;
    assert_eq!(
        value(
            &samples,
            "codearts_exporter_api_requests_total",
            &[("api", "iam_projects"), ("code", "200")]
        ),
        Some(1.0)
    );
    assert!(
        select(&samples, "codearts_exporter_api_requests_total", &[])
            .iter()
            .all(|s| s.labels["code"] != "401"),
        "no request refused"
    );
    assert!(
        exporter
            .proc
            .output()
            .contains("looked up the IAM project id")
    );
}

/// When the lookup fails, requests go without `X-Project-Id` (which a service that does not
/// insist on it accepts), and the reason is logged once; a service that insists answers 401,
/// whose message names both possible causes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_project_id_lookup_falls_back_to_no_header() {
    let faults = r#"{"faults": [{"kind": "error", "api": "iam_projects", "status": 503}]}"#;
    let auth = format!("method = \"aksk\"\nak = \"{SIM_AK}\"\nsk = \"{SIM_SK}\"");

    let lenient = common::start_simulator_with(2, 1, 5, 60.0, &["--faults", faults]);
    let truth = get_json(&format!("{}/_sim/truth", lenient.url)).await;
    let exporter = start_exporter(&config(&lenient, &truth, &auth), &[]);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    three_polls(&exporter).await;
    let output = exporter.proc.output();
    let warnings = output
        .lines()
        .filter(|line| line.contains("cannot look up the IAM project id"))
        .count();
    assert_eq!(warnings, 1, "{output}");
    assert!(output.contains("HTTP 503"), "the reason: {output}");

    let strict =
        common::start_simulator_with(2, 1, 5, 60.0, &["--faults", faults, "--require-project-id"]);
    let truth = get_json(&format!("{}/_sim/truth", strict.url)).await;
    let exporter = start_exporter(&config(&strict, &truth, &auth), &[]);
    rejected(&exporter).await;
    let output = exporter.proc.output_when("the 401's hint", |output| {
        output.contains("x-project-id is missing") && output.contains("either the signature")
    });
    assert!(output.contains("X-Project-Id"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_tokens_are_renewed_before_they_expire_without_a_gap() {
    // Tokens live 4 s: over 12 s the exporter must renew several times and never fail a poll.
    let sim = common::start_simulator_with(12, 1, 5, 60.0, &["--token-lifetime", "4s"]);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let auth = format!(
        "method = \"password\"\nusername = \"{SIM_USER}\"\npassword = \"{SIM_PASSWORD}\"\ndomain = \"{SIM_DOMAIN}\"\nproject_name = \"cn-north-4\""
    );
    let exporter = start_exporter(&config(&sim, &truth, &auth), &[("RUST_LOG", "debug")]);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    let pipelines = select(&scrape(&exporter).await, "codearts_pipeline_status", &[]).len() / 6;
    assert!(pipelines >= 4);
    // Three token lifetimes, and at least 20 scrapes however slow each is.
    let until = Instant::now() + Duration::from_secs(12);
    let mut scrapes = 0;
    while Instant::now() < until || scrapes < 20 {
        let samples = scrape(&exporter).await;
        assert_eq!(
            value(&samples, "codearts_exporter_target_up", &[("target", "t0")]),
            Some(1.0),
            "a poll failed"
        );
        assert_eq!(
            select(&samples, "codearts_pipeline_status", &[]).len(),
            6 * pipelines,
            "pipeline series vanished"
        );
        scrapes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let samples = scrape(&exporter).await;
    let renewals = value(
        &samples,
        "codearts_exporter_auth_refresh_total",
        &[("result", "success")],
    )
    .expect("refresh counter");
    assert!(
        renewals >= 3.0,
        "only {renewals} tokens in 12 s of 4 s tokens"
    );
    assert!(status_requests(&samples, "401").is_none());
    let metrics = get(&format!("{}/metrics", exporter.url)).await.1;
    assert_no_secret(&exporter, &metrics, &[SIM_PASSWORD]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_renewed_once_and_the_request_retried() {
    let sim = common::start_simulator_with(2, 1, 5, 60.0, &[]);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let auth = format!(
        "method = \"password\"\nusername = \"{SIM_USER}\"\npassword = \"{SIM_PASSWORD}\"\ndomain = \"{SIM_DOMAIN}\"\niam_project_id = \"0123456789abcdef0123456789abcdef\""
    );
    let exporter = start_exporter(&config(&sim, &truth, &auth), &[]);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    let revoked = reqwest::Client::new()
        .post(format!("{}/_sim/revoke-tokens", sim.url))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    // The requests that meet the revoked token (a poll's, and the backfill's history reads in
    // flight at the same moment) are each retried once, with one new token.
    let unauthorized_retries = |s: &[common::Sample]| {
        sum(
            s,
            "codearts_exporter_api_retries_total",
            &[("reason", "unauthorized")],
        )
    };
    let samples = exporter
        .scrape_until(Duration::from_secs(30), "a retry after a 401", |s| {
            unauthorized_retries(s) >= 1.0
                && sum(
                    s,
                    "codearts_exporter_api_requests_total",
                    &[("code", "401")],
                ) == unauthorized_retries(s)
                && value(
                    s,
                    "codearts_exporter_auth_refresh_total",
                    &[("result", "success")],
                ) == Some(2.0)
        })
        .await;
    // The 401 was answered by a renewal and a retry, so the poll succeeded.
    assert_eq!(
        sum(
            &samples,
            "codearts_exporter_api_requests_total",
            &[("code", "401")]
        ),
        unauthorized_retries(&samples)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = scrape(&exporter).await;
    assert_eq!(
        value(&samples, "codearts_exporter_target_up", &[("target", "t0")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gives_a_clear_error_and_backs_off() {
    let sim = common::start_simulator_with(2, 1, 5, 60.0, &[]);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let auth = format!(
        "method = \"password\"\nusername = \"{SIM_USER}\"\npassword = \"wrong-password-123\"\ndomain = \"{SIM_DOMAIN}\"\nproject_name = \"cn-north-4\""
    );
    let exporter = start_exporter(&config(&sim, &truth, &auth), &[("RUST_LOG", "debug")]);
    let samples = exporter
        .scrape_until(Duration::from_secs(30), "a failed refresh", |s| {
            value(
                s,
                "codearts_exporter_auth_refresh_total",
                &[("result", "failure")],
            )
            .is_some()
        })
        .await;
    assert_eq!(
        value(&samples, "codearts_exporter_target_up", &[("target", "t0")]),
        Some(0.0)
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = scrape(&exporter).await;
    // Polls every second, but IAM attempts back off: 1 s, 2 s, 4 s ...
    let failures = value(
        &samples,
        "codearts_exporter_auth_refresh_total",
        &[("result", "failure")],
    )
    .expect("failures");
    let polls = value(
        &samples,
        "codearts_exporter_poll_duration_seconds_count",
        &[("target", "t0")],
    )
    .expect("polls");
    assert!(
        failures < polls,
        "{failures} IAM calls for {polls} polls: no backoff"
    );
    exporter.proc.output_when("the IAM refusal", |logs| {
        logs.contains("IAM refused the credentials")
    });
    let metrics = get(&format!("{}/metrics", exporter.url)).await.1;
    assert_no_secret(&exporter, &metrics, &["wrong-password-123"]);
}
