//! The exporter against the simulator, over HTTP, compared with the simulator's truth.

mod common;

use std::time::{Duration, Instant};

use common::{
    compare_with_truth, completed_live_runs, config, get, get_json, parse_metrics, select,
    stable_scrape, start_exporter, start_simulator, targets_of, value, wait_for_status_200,
};

/// Polls often: each run is seen by many polls, mostly while it runs and once completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_completed_run_is_counted_once_and_matches_the_truth() {
    check_against_truth(120.0, 1, 7).await;
}

/// Polls slower than runs change: a run is often superseded by the next between two polls,
/// so its completion is only found by fetching it by id afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_superseded_between_polls_are_still_counted_once() {
    // The simulator keeps each run the latest for ≥ 10 nominal minutes = 3 s at speed 200,
    // longer than the 2 s interval, so every run is seen at least once.
    check_against_truth(200.0, 2, 11).await;
}

/// Polls far slower than runs: several runs start and finish between two polls, and only
/// the run history can find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_start_and_finish_between_polls_are_counted_from_the_history() {
    check_against_truth(600.0, 6, 13).await;
}

async fn check_against_truth(speed: f64, interval: u32, seed: u64) {
    let sim = start_simulator(10, 2, seed, speed);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let sim_started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let exporter = start_exporter(&config(&sim.url, &targets_of(&truth), interval), &[]);
    let metrics_url = format!("{}/metrics", exporter.url);

    let (status, _) = get(&format!("{}/healthz", exporter.url)).await;
    assert_eq!(status, 200);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    let (status, _) = get(&format!("{}/nope", exporter.url)).await;
    assert_eq!(status, 404);

    // Let several runs complete, seen by many polls each.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
        if completed_live_runs(&truth, sim_started_ms) >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the simulator completed too few runs"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Two more polls, so the exporter has seen those runs.
    tokio::time::sleep(Duration::from_secs(2 * u64::from(interval) + 1)).await;

    let samples = stable_scrape(&metrics_url).await;
    // Truth after the scrape: it holds every run the scrape can know about.
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let window_start_ms = sim_started_ms - 3_600_000.0;

    let checked_runs = compare_with_truth(&samples, &truth, window_start_ms);
    assert!(checked_runs >= 20, "only {checked_runs} runs were compared");

    // The exporter's own families.
    for target in ["t0", "t1"] {
        assert_eq!(
            value(
                &samples,
                "codearts_exporter_target_up",
                &[("target", target)]
            ),
            Some(1.0)
        );
        let last_poll = value(
            &samples,
            "codearts_exporter_last_successful_poll_timestamp_seconds",
            &[("target", target)],
        )
        .expect("last poll");
        assert!(last_poll * 1000.0 > sim_started_ms);
        assert!(
            value(
                &samples,
                "codearts_exporter_poll_duration_seconds_count",
                &[("target", target)]
            )
            .expect("polls")
                >= 3.0
        );
        assert!(
            value(
                &samples,
                "codearts_exporter_polls_skipped_total",
                &[("target", target)]
            )
            .is_some()
        );
    }
    for api in ["v5_status", "v3_status", "run_detail"] {
        assert!(
            value(
                &samples,
                "codearts_exporter_api_requests_total",
                &[("api", api), ("code", "200")]
            )
            .expect("requests")
                > 0.0
        );
        assert!(
            value(
                &samples,
                "codearts_exporter_api_request_duration_seconds_count",
                &[("api", api)]
            )
            .is_some()
        );
    }
    assert_eq!(
        select(&samples, "codearts_exporter_build_info", &[]).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_reported_and_the_exporter_stays_up() {
    let sim = start_simulator(2, 1, 3, 60.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let config =
        config(&sim.url, &targets_of(&truth), 1).replace("codearts-simulator-token", "wrong-token");
    let mut exporter = start_exporter(&config, &[]);
    let metrics_url = format!("{}/metrics", exporter.url);

    let deadline = Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let samples = parse_metrics(&get(&metrics_url).await.1);
        if value(
            &samples,
            "codearts_exporter_api_requests_total",
            &[("api", "v5_status"), ("code", "401")],
        )
        .is_some()
        {
            break samples;
        }
        assert!(Instant::now() < deadline, "no 401 was counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        value(&samples, "codearts_exporter_target_up", &[("target", "t0")]),
        Some(0.0)
    );
    assert!(select(&samples, "codearts_pipeline_status", &[]).is_empty());
    let (status, body) = get(&format!("{}/readyz", exporter.url)).await;
    assert_eq!(status, 503);
    assert!(body.contains("t0"), "{body}");
    let (status, _) = get(&format!("{}/healthz", exporter.url)).await;
    assert_eq!(status, 200);
    assert!(exporter.proc.output().contains("token rejected or expired"));
    assert!(
        !exporter.proc.output().contains("wrong-token"),
        "the token leaked into the logs"
    );

    // Graceful shutdown on SIGTERM: exit code 0.
    let status = exporter.proc.terminate();
    assert_eq!(status.code(), Some(0), "{}", exporter.proc.output());
}
