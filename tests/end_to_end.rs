//! The exporter against the simulator, over HTTP, compared with the simulator's truth: both in
//! the test's runtime, and once the binary as a process.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::{Duration, Instant};

use codearts_exporter::simulator::SimOptions;
use common::harness::{
    Exporter, sim_options, start_exporter, start_simulator, start_simulator_with, test_log,
};
use common::{
    Sample, compare_with_truth, completed_live_runs, config, get, get_json, select, stable_scrape,
    sum, targets_of, value, wait_for_status_200,
};

/// Waits until every target in `targets` has completed two more polls: the second started
/// after this call, so it saw everything that had happened by then.
async fn two_more_polls(exporter: &Exporter, targets: &[&str]) {
    let polls = |s: &[Sample], target: &str| {
        value(
            s,
            "codearts_exporter_poll_duration_seconds_count",
            &[("target", target)],
        )
        .unwrap_or(0.0)
    };
    let now = common::scrape(&exporter.url).await;
    let before: Vec<f64> = targets.iter().map(|t| polls(&now, t)).collect();
    exporter
        .scrape_until(Duration::from_secs(60), "two more polls", |s| {
            targets
                .iter()
                .zip(&before)
                .all(|(target, before)| polls(s, target) >= before + 2.0)
        })
        .await;
}

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
    let sim = start_simulator(10, 2, seed, speed).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let sim_started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let exporter = start_exporter(&config(&sim.url, &targets_of(&truth), interval)).await;
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
    two_more_polls(&exporter, &["t0", "t1"]).await;

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
    // Pipeline names of the v5 target come from the project's pipeline list (more than a few
    // are wanted at start-up).
    for api in ["v5_status", "v3_status", "run_list", "pipeline_list"] {
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
    exporter.stop().await;
}

/// Pipelines whose latest run ended before the backfill window when the exporter starts have
/// nothing to record: their last run comes from the batch status, with no history read, and
/// their later runs are recorded as any other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_idle_since_before_the_window_are_not_read_back_at_start() {
    // Runs take a third of the time: many pipelines are idle at the start, some for longer
    // than the 20 s window, and run again within the test.
    let pipelines = 24;
    let sim = start_simulator_with(SimOptions {
        running_share: Some(0.3),
        ..sim_options(pipelines, 2, 5, 60.0)
    })
    .await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    // Both targets on v5, whose status carries the stage times; polls 5 s apart, so few polls
    // add their own history reads to the backfill's before the backfill ends.
    let config = config(&sim.url, &targets_of(&truth), 5)
        .replace("status_api = \"v3\"", "status_api = \"v5\"")
        .replace(
            "chunk_size = 3\n",
            "chunk_size = 3\nbackfill_window = \"20s\"\n",
        );
    let exporter = start_exporter(&config).await;
    // The exporter's start, where its backfill window counts back from.
    let started_ms = exporter.started_ms;
    let metrics_url = format!("{}/metrics", exporter.url);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;

    // The backfill read the history of the pipelines running or recently finished only.
    let samples = exporter
        .scrape_until(Duration::from_secs(60), "the backfill to end", |s| {
            sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0
        })
        .await;
    let read_back = sum(
        &samples,
        "codearts_exporter_api_requests_total",
        &[("api", "run_list")],
    );
    assert!(
        read_back > 0.0 && read_back < pipelines as f64,
        "{read_back} history reads for {pipelines} pipelines"
    );
    // Every pipeline that had completed a run before the exporter started shows it.
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let completed = pipeline["runs"].as_array().expect("runs");
        if let Some(last) = completed.last() {
            let id = pipeline["pipeline_id"].as_str().expect("id");
            let number = value(
                &samples,
                "codearts_pipeline_last_run_number",
                &[("pipeline_id", id)],
            )
            .unwrap_or_else(|| panic!("{id}: no last run"));
            assert!(number >= last["run_number"].as_f64().expect("number"));
        }
    }

    // Later runs of every pipeline are recorded once each.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
        if completed_live_runs(&truth, started_ms) >= 12 {
            break;
        }
        assert!(Instant::now() < deadline, "too few runs completed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Two more polls, so the exporter has seen those runs.
    two_more_polls(&exporter, &["t0", "t1"]).await;
    let samples = stable_scrape(&metrics_url).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let checked = compare_with_truth(&samples, &truth, started_ms - 20_000.0);
    assert!(checked >= 12, "only {checked} runs were compared");
    exporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_reported_and_the_exporter_stays_up() {
    let sim = start_simulator(2, 1, 3, 60.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let config =
        config(&sim.url, &targets_of(&truth), 1).replace("codearts-simulator-token", "wrong-token");
    let exporter = start_exporter(&config).await;

    let samples = exporter
        .scrape_until(Duration::from_secs(30), "a 401 counted", |s| {
            value(
                s,
                "codearts_exporter_api_requests_total",
                &[("api", "v5_status"), ("code", "401")],
            )
            .is_some()
        })
        .await;
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
    let log = test_log();
    assert!(log.contains("token rejected or expired"), "{log}");
    assert!(
        !log.contains("wrong-token"),
        "the token leaked into the logs"
    );
    exporter.stop().await;
}

/// The binary as a process: `simulate`, and `run` with a flag, serve over loopback; `run`
/// exports pipeline series (those of its shard) and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_pipeline_series_and_exits_0_on_sigterm() {
    let sim = common::start_simulator(8, 1, 3, 60.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let config = config(&sim.url, &targets_of(&truth), 1);
    let mut exporter = common::start_exporter_with(&config, &[], &["--shard", "0/2"]);
    let pipelines = |s: &[Sample]| select(s, "codearts_pipeline_status", &[]).len() / 6;
    let samples = exporter
        .scrape_until(Duration::from_secs(30), "pipeline series", |s| {
            pipelines(s) > 0
        })
        .await;
    assert!(
        pipelines(&samples) < 8,
        "--shard 0/2 polls part of the pipelines"
    );
    let status = exporter.proc.terminate();
    assert_eq!(status.code(), Some(0), "{}", exporter.proc.output());
    assert!(exporter.proc.output().contains("shutting down"));
}
