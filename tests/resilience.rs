//! The exporter against a simulator that injects faults: it stays up and ready, pipeline series
//! keep their last good values while polls fail, the request, retry and error counters say
//! what happened, `Retry-After` is honoured, and once the faults stop every completed run is
//! counted exactly once (compared with the simulator's truth).

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::{Duration, Instant};

use codearts_exporter::simulator::SimOptions;
use codearts_exporter::simulator::faults::FaultSpec;
use common::harness::{
    Exporter, Sim, sim_options, start_exporter, start_simulator, start_simulator_with, test_log,
};
use common::{
    Sample, compare_with_truth, config, get, get_json, pipeline_samples, request, scrape,
    stable_scrape, sum, targets_of, value, wait_for_status_200,
};
use serde_json::{Value, json};

const TARGETS: [&str; 2] = ["t0", "t1"];

/// A simulator with 10 pipelines in 2 projects (t0 polled through v5, t1 through v3) and an
/// exporter polling every second with short time-outs and fast retries, ready.
async fn start(seed: u64) -> (Sim, Exporter, f64) {
    let sim = start_simulator(10, 2, seed, 120.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    // Polls may run 10 s, so that calls fail for good (after their retries) before a poll is
    // cut short: these tests count the client's retries and errors.
    let text = config(&sim.url, &targets_of(&truth), 1)
        .replace(
            "timeout = \"5s\"",
            "timeout = \"1s\"\nmax_retries = 1\nretry_backoff = \"50ms\"\nmax_retry_wait = \"3s\"",
        )
        .replace(
            "interval = \"1s\"",
            "interval = \"1s\"\npoll_timeout = \"10s\"",
        );
    let exporter = start_exporter(&text).await;
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    // Ready once every first poll ended, which set the backfill's gauge: its reads, which
    // record behind the polls, are over before any outage begins.
    exporter
        .scrape_until(Duration::from_secs(60), "the backfill to end", |s| {
            sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0
        })
        .await;
    (sim, exporter, started_ms)
}

fn per_target(samples: &[Sample], name: &str) -> Vec<f64> {
    TARGETS
        .iter()
        .map(|t| value(samples, name, &[("target", t)]).unwrap_or(f64::NAN))
        .collect()
}

fn all_up(samples: &[Sample]) -> bool {
    per_target(samples, "codearts_exporter_target_up") == [1.0, 1.0]
}

async fn set_faults(sim: &Sim, faults: Value) {
    let (status, body) = request("POST", &format!("{}/_sim/faults", sim.url), Some(&faults)).await;
    assert_eq!(status, 200, "{body}");
}

async fn clear_faults(sim: &Sim) {
    let (status, body) = request("DELETE", &format!("{}/_sim/faults", sim.url), None).await;
    assert_eq!(status, 200, "{body}");
}

/// Scrapes until every target has ended two more polls than `since` shows.
async fn two_more_polls(exporter: &Exporter, since: &[Sample], what: &str) -> Vec<Sample> {
    let polls = per_target(since, "codearts_exporter_poll_duration_seconds_count");
    exporter
        .scrape_until(Duration::from_secs(30), what, |s| {
            per_target(s, "codearts_exporter_poll_duration_seconds_count")
                .iter()
                .zip(&polls)
                .all(|(n, p)| *n >= p + 2.0)
        })
        .await
}

/// Waits until every target has finished a successful poll that started after now.
async fn recovered(exporter: &Exporter) -> Vec<Sample> {
    let before = scrape(&exporter.url).await;
    let last_ok = per_target(
        &before,
        "codearts_exporter_last_successful_poll_timestamp_seconds",
    );
    let polls = per_target(&before, "codearts_exporter_poll_duration_seconds_count");
    exporter
        .scrape_until(Duration::from_secs(60), "recovery", |s| {
            let now_ok = per_target(
                s,
                "codearts_exporter_last_successful_poll_timestamp_seconds",
            );
            let now_polls = per_target(s, "codearts_exporter_poll_duration_seconds_count");
            all_up(s)
                && now_ok.iter().zip(&last_ok).all(|(n, b)| n > b)
                && now_polls.iter().zip(&polls).all(|(n, b)| *n >= b + 2.0)
        })
        .await
}

/// Sets `faults` so that every poll fails, and checks the exporter through it: up and ready,
/// targets down, pipeline series and the last successful poll frozen over a whole failed poll.
/// Clears the faults (unless they end by themselves) and waits for recovery. Returns the
/// scrapes before and during the outage.
async fn outage(
    sim: &Sim,
    exporter: &Exporter,
    what: &str,
    faults: Value,
    clear: bool,
) -> (Vec<Sample>, Vec<Sample>) {
    let before = exporter
        .scrape_until(Duration::from_secs(30), what, all_up)
        .await;
    set_faults(sim, faults).await;
    let failed = exporter
        .scrape_until(Duration::from_secs(30), what, |s| {
            per_target(s, "codearts_exporter_target_up") == [0.0, 0.0]
        })
        .await;
    let polls = per_target(&failed, "codearts_exporter_poll_duration_seconds_count");
    // Any poll that ends from now on ran entirely under the faults.
    let during = exporter
        .scrape_until(Duration::from_secs(30), what, |s| {
            per_target(s, "codearts_exporter_poll_duration_seconds_count")
                .iter()
                .zip(&polls)
                .all(|(n, p)| n > p)
        })
        .await;
    assert_eq!(
        pipeline_samples(&during),
        pipeline_samples(&failed),
        "{what}: pipeline series changed during the outage"
    );
    assert!(!pipeline_samples(&during).is_empty());
    assert_eq!(
        per_target(&during, "codearts_exporter_target_up"),
        [0.0, 0.0],
        "{what}"
    );
    let last_ok = "codearts_exporter_last_successful_poll_timestamp_seconds";
    assert_eq!(
        per_target(&during, last_ok),
        per_target(&failed, last_ok),
        "{what}: last successful poll moved"
    );
    for path in ["/readyz", "/healthz"] {
        let (status, body) = get(&format!("{}{path}", exporter.url)).await;
        assert_eq!(status, 200, "{what}: {path} {body}");
    }
    if clear {
        clear_faults(sim).await;
    }
    recovered(exporter).await;
    (before, during)
}

/// `name{labels}` grew between two scrapes.
fn grew(before: &[Sample], after: &[Sample], name: &str, labels: &[(&str, &str)]) -> bool {
    sum(after, name, labels) > sum(before, name, labels)
}

/// After the faults: every completed run in the window is counted once, none lost.
async fn matches_the_truth(sim: &Sim, exporter: &Exporter, started_ms: f64) {
    clear_faults(sim).await;
    recovered(exporter).await;
    let samples = stable_scrape(&format!("{}/metrics", exporter.url)).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let compared = compare_with_truth(&samples, &truth, started_ms - 3_600_000.0);
    assert!(compared >= 10, "only {compared} runs compared");
}

const REQUESTS: &str = "codearts_exporter_api_requests_total";
const RETRIES: &str = "codearts_exporter_api_retries_total";
const ERRORS: &str = "codearts_exporter_api_errors_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_time_outs_and_dropped_connections_leave_the_last_values() {
    let (sim, exporter, started_ms) = start(21).await;

    let five_xx = json!({"faults": [
        {"kind": "error", "status": 500, "share": 0.34},
        {"kind": "error", "status": 502, "share": 0.33},
        {"kind": "error", "status": 503, "share": 0.33},
    ]});
    let (before, during) = outage(&sim, &exporter, "5xx", five_xx, true).await;
    for code in ["500", "502", "503"] {
        assert!(
            grew(&before, &during, REQUESTS, &[("code", code)]),
            "{code}"
        );
    }
    for api in ["v5_status", "v3_status"] {
        let labels = [("api", api), ("reason", "server_error")];
        assert!(grew(&before, &during, RETRIES, &labels), "{api}");
        assert!(grew(
            &before,
            &during,
            ERRORS,
            &[("api", api), ("kind", "http")]
        ));
    }

    // Held 3 s by the simulator, given up after 1 s by the exporter.
    let hang = json!({"faults": [{"kind": "timeout", "latency_ms": 3000}]});
    let (before, during) = outage(&sim, &exporter, "time-outs", hang, true).await;
    assert!(grew(&before, &during, REQUESTS, &[("code", "timeout")]));
    assert!(grew(&before, &during, RETRIES, &[("reason", "timeout")]));
    assert!(grew(&before, &during, ERRORS, &[("kind", "transport")]));

    let drop = json!({"faults": [{"kind": "drop"}]});
    let (before, during) = outage(&sim, &exporter, "dropped connections", drop, true).await;
    assert!(grew(&before, &during, REQUESTS, &[("code", "error")]));
    assert!(grew(&before, &during, RETRIES, &[("reason", "error")]));
    assert!(grew(&before, &during, ERRORS, &[("kind", "transport")]));
    assert_eq!(
        sum(&during, ERRORS, &[("kind", "decode")]),
        sum(&before, ERRORS, &[("kind", "decode")]),
        "a cut body is a transport error, not a decode error"
    );

    matches_the_truth(&sim, &exporter, started_ms).await;
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_and_rejected_credentials_leave_the_last_values() {
    let (sim, exporter, started_ms) = start(22).await;

    let malformed = json!({"faults": [{"kind": "malformed"}]});
    let (before, during) = outage(&sim, &exporter, "malformed JSON", malformed, true).await;
    assert!(grew(
        &before,
        &during,
        ERRORS,
        &[("api", "v5_status"), ("kind", "decode")]
    ));
    assert!(grew(
        &before,
        &during,
        ERRORS,
        &[("api", "v3_status"), ("kind", "decode")]
    ));
    assert_eq!(
        sum(&during, RETRIES, &[]),
        sum(&before, RETRIES, &[]),
        "a body that does not decode is not retried"
    );
    let log = test_log();
    assert!(
        log.contains("cannot decode the response (HTTP 200)") && log.contains("body starts with"),
        "the log names the status and shows the body:\n{log}"
    );

    let shape = json!({"faults": [{"kind": "wrong_shape"}]});
    let (before, during) = outage(&sim, &exporter, "wrong shape", shape, true).await;
    assert!(grew(&before, &during, ERRORS, &[("kind", "decode")]));
    assert!(test_log().contains("expected a JSON array, got an object"));

    // Credentials rejected for a while; the period ends by itself.
    let rejected = json!({"faults": [{"kind": "unauthorized", "for": "12s"}]});
    let (before, during) = outage(&sim, &exporter, "401", rejected, false).await;
    assert!(grew(&before, &during, REQUESTS, &[("code", "401")]));
    assert!(grew(&before, &during, ERRORS, &[("kind", "auth")]));
    assert!(test_log().contains("token rejected or expired"));

    // Empty answers everywhere: nothing to update, nothing lost, the target stays up. `before`
    // is taken once a poll that began before the faults has ended, since it may record runs.
    set_faults(&sim, json!({"faults": [{"kind": "empty"}]})).await;
    let set = scrape(&exporter.url).await;
    let before = two_more_polls(&exporter, &set, "empty").await;
    let during = two_more_polls(&exporter, &before, "empty").await;
    assert!(all_up(&during));
    let runs = |s: &[Sample]| sum(s, "codearts_pipeline_runs_total", &[]);
    assert_eq!(runs(&during), runs(&before), "no run appears from nothing");

    // Empty run histories only: states move on, runs wait until the history is readable.
    set_faults(
        &sim,
        json!({"faults": [{"api": "run_list", "kind": "empty"}]}),
    )
    .await;
    let first = recovered(&exporter).await;
    let second = recovered(&exporter).await;
    assert_eq!(
        runs(&second),
        runs(&first),
        "runs recorded from an empty history"
    );

    matches_the_truth(&sim, &exporter, started_ms).await;
    exporter.stop().await;
}

/// The first request after `index` in `log` (by arrival) for the same API.
fn next_after(log: &[Value], index: usize) -> Option<&Value> {
    let api = &log[index]["api"];
    let t = log[index]["t_ms"].as_i64()?;
    log.iter()
        .filter(|r| &r["api"] == api && r["t_ms"].as_i64().is_some_and(|x| x >= t))
        .filter(|r| !std::ptr::eq(*r, &log[index]))
        .min_by_key(|r| r["t_ms"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_random_faults_lose_no_run() {
    let (sim, exporter, started_ms) = start(23).await;
    let before = scrape(&exporter.url).await;
    let (status, _) = request("DELETE", &format!("{}/_sim/requests", sim.url), None).await;
    assert_eq!(status, 200);
    set_faults(
        &sim,
        json!({"faults": [
            {"api": "v5_status", "kind": "throttle", "count": 1, "retry_after": 2},
            {"api": "v3_status", "kind": "throttle", "count": 1, "retry_after": 2,
             "retry_after_form": "date"},
            {"api": "run_list", "kind": "throttle", "count": 2},
        ]}),
    )
    .await;
    // Until both status requests were retried.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = get_json(&format!("{}/_sim/requests", sim.url)).await["requests"]
            .as_array()
            .expect("requests")
            .clone();
        let throttled: Vec<usize> = (0..log.len())
            .filter(|&i| log[i]["fault"] == "throttle" && log[i]["retry_after"].is_string())
            .collect();
        if throttled.len() == 2 && throttled.iter().all(|&i| next_after(&log, i).is_some()) {
            break log;
        }
        assert!(Instant::now() < deadline, "no retries seen: {log:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (index, throttled) in log.iter().enumerate() {
        let Some(header) = throttled["retry_after"].as_str() else {
            continue;
        };
        let t0 = throttled["t_ms"].as_i64().expect("t_ms");
        let not_before = match header.parse::<i64>() {
            Ok(seconds) => t0 + seconds * 1000,
            Err(_) => {
                let date = httpdate::parse_http_date(header).expect("an HTTP date");
                let since_epoch = date.duration_since(std::time::UNIX_EPOCH).expect("epoch");
                i64::try_from(since_epoch.as_millis()).expect("ms")
            }
        };
        let next = next_after(&log, index).expect("a retry");
        let t1 = next["t_ms"].as_i64().expect("t_ms");
        // A few ms of slack for clock reading granularity.
        assert!(
            t1 >= not_before - 5,
            "{} retried {} ms after a 429 with Retry-After {header:?} ({} ms asked)",
            throttled["api"],
            t1 - t0,
            not_before - t0
        );
    }
    let after = scrape(&exporter.url).await;
    for api in ["v5_status", "v3_status"] {
        assert!(grew(
            &before,
            &after,
            REQUESTS,
            &[("api", api), ("code", "429")]
        ));
        assert!(grew(
            &before,
            &after,
            RETRIES,
            &[("api", api), ("reason", "throttled")]
        ));
    }
    let (_, faults) = get(&format!("{}/_sim/faults", sim.url)).await;
    let faults: Value = serde_json::from_str(&faults).expect("json");
    assert_eq!(faults["faults"][0]["hits"], 1);

    // A while of random faults of every kind, 30% of the requests.
    set_faults(
        &sim,
        json!({"seed": 5, "faults": [
            {"kind": "error", "status": 503, "share": 0.05},
            {"kind": "throttle", "retry_after": 1, "share": 0.05},
            {"kind": "timeout", "latency_ms": 2000, "share": 0.04},
            {"kind": "drop", "share": 0.04},
            {"kind": "malformed", "share": 0.04},
            {"kind": "wrong_shape", "share": 0.03},
            {"kind": "empty", "share": 0.03},
            {"kind": "unauthorized", "share": 0.02},
            {"kind": "latency", "latency_ms": 50, "share": 0.2},
        ]}),
    )
    .await;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for path in ["/readyz", "/healthz"] {
            let (status, body) = get(&format!("{}{path}", exporter.url)).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = scrape(&exporter.url).await;
    assert!(grew(&after, &during, REQUESTS, &[]));
    matches_the_truth(&sim, &exporter, started_ms).await;
    exporter.stop().await;
    // Panics of the exporter's tasks are in the log too.
    let log = test_log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_failing_at_start_up_is_retried_until_a_token_comes() {
    // Faults set from the start: the first two logins fail with a 503.
    let faults =
        r#"{"faults": [{"api": "iam_token", "kind": "error", "status": 503, "count": 2}]}"#;
    let sim = start_simulator_with(SimOptions {
        faults: FaultSpec::from_json(faults.as_bytes()).expect("a fault spec"),
        ..sim_options(4, 1, 24, 60.0)
    })
    .await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let endpoint = format!("endpoint = \"{}\"", sim.url);
    let text = config(&sim.url, &targets_of(&truth), 1)
        .replace(&endpoint, &format!("{endpoint}\niam_{endpoint}"))
        .replace(
            "method = \"token\"\ntoken = \"codearts-simulator-token\"",
            "method = \"password\"\nusername = \"demo-user\"\npassword = \"demo-password\"\n\
             domain = \"demo-account\"\nproject_name = \"cn-north-4\"",
        );
    let exporter = start_exporter(&text).await;
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    let samples = scrape(&exporter.url).await;
    let refresh = "codearts_exporter_auth_refresh_total";
    assert_eq!(
        value(&samples, refresh, &[("result", "failure")]),
        Some(2.0)
    );
    assert_eq!(
        value(&samples, refresh, &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, ERRORS, &[("api", "iam_token"), ("kind", "http")]),
        Some(2.0)
    );
    let log = get_json(&format!("{}/_sim/requests?api=iam_token", sim.url)).await;
    let codes: Vec<i64> = log["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["status"].as_i64())
        .collect();
    assert_eq!(codes, [503, 503, 201]);
    assert!(!test_log().contains("demo-password"));
    exporter.stop().await;
}
