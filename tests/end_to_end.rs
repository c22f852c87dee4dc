//! The exporter against the simulator, over HTTP, compared with the simulator's truth.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    get, get_json, parse_metrics, select, stable_scrape, start_exporter, start_simulator, value,
    wait_for_status_200,
};
use serde_json::Value;

/// A config polling every `interval` seconds.
fn config(sim_url: &str, targets: &Value, interval: u32) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[codearts]
endpoint = "{sim_url}"
timeout = "5s"
[auth]
method = "token"
token = "codearts-simulator-token"
"#
    );
    let projects = targets.as_array().expect("targets");
    for (index, project) in projects.iter().enumerate() {
        let ids: Vec<String> = project["pipeline_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| format!("{id}"))
            .collect();
        // First project through the v5 batch API, the second through v3: both paths are checked.
        let api = if index % 2 == 0 { "v5" } else { "v3" };
        text.push_str(&format!(
            "[[targets]]\nname = \"t{index}\"\nproject_id = {}\npipeline_ids = [{}]\ninterval = \"{interval}s\"\nstatus_api = \"{api}\"\nchunk_size = 3\n",
            project["project_id"],
            ids.join(", ")
        ));
    }
    text
}

/// Project and pipeline ids as the simulator's truth lists them.
fn targets_of(truth: &Value) -> Value {
    let mut by_project: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let project = pipeline["project_id"]
            .as_str()
            .expect("project")
            .to_string();
        by_project
            .entry(project)
            .or_default()
            .push(pipeline["pipeline_id"].clone());
    }
    Value::Array(
        by_project
            .into_iter()
            .map(|(project, ids)| serde_json::json!({"project_id": project, "pipeline_ids": ids}))
            .collect(),
    )
}

fn completed_live_runs(truth: &Value, since_ms: f64) -> usize {
    truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["runs"].as_array().expect("runs").iter())
        .filter(|r| r["end_ms"].as_f64().unwrap_or(0.0) >= since_ms)
        .count()
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

    let mut checked_runs = 0;
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let id = pipeline["pipeline_id"].as_str().expect("id");
        let name = pipeline["name"].as_str().expect("name");
        let labels = [("pipeline_id", id)];

        // Exactly one state is hot, and the name label is the pipeline's (non-ASCII) name.
        let states = select(&samples, "codearts_pipeline_status", &labels);
        assert_eq!(states.len(), 6, "{name}: one series per state");
        assert_eq!(
            states.iter().filter(|s| s.value == 1.0).count(),
            1,
            "{name}: one-hot"
        );
        assert!(states.iter().all(|s| s.labels["pipeline_name"] == name));

        let last_number = value(&samples, "codearts_pipeline_last_run_number", &labels)
            .unwrap_or_else(|| panic!("{name}: no last_run_number"));
        let runs: Vec<&Value> = pipeline["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["run_number"].as_f64().expect("number") <= last_number)
            .collect();
        let last = runs
            .last()
            .unwrap_or_else(|| panic!("{name}: run {last_number} not in truth"));
        assert_eq!(last["run_number"].as_f64(), Some(last_number));

        // The last completed run, to the second.
        let result = last["result"].as_str().expect("result");
        for candidate in ["success", "error", "aborted"] {
            let hot = value(
                &samples,
                "codearts_pipeline_last_run_result",
                &[("pipeline_id", id), ("result", candidate)],
            );
            assert_eq!(
                hot,
                Some(if candidate == result { 1.0 } else { 0.0 }),
                "{name}: last result {candidate}"
            );
        }
        let duration = value(
            &samples,
            "codearts_pipeline_last_run_duration_seconds",
            &labels,
        )
        .expect("duration");
        assert!(
            (duration - last["duration_seconds"].as_f64().expect("d")).abs() < 1.0,
            "{name}: duration"
        );
        let start = value(
            &samples,
            "codearts_pipeline_last_run_start_timestamp_seconds",
            &labels,
        )
        .expect("start");
        assert!(
            (start - last["start_ms"].as_f64().expect("s") / 1000.0).abs() < 1.0,
            "{name}: start"
        );
        let end = value(
            &samples,
            "codearts_pipeline_last_run_end_timestamp_seconds",
            &labels,
        )
        .expect("end");
        assert!(
            (end - last["end_ms"].as_f64().expect("e") / 1000.0).abs() < 1.0,
            "{name}: end"
        );
        for stage in last["stages"].as_array().expect("stages") {
            let stage_name = stage["name"].as_str().expect("stage name");
            let got = value(
                &samples,
                "codearts_pipeline_stage_last_duration_seconds",
                &[("pipeline_id", id), ("stage", stage_name)],
            )
            .unwrap_or_else(|| panic!("{name}/{stage_name}: no last duration"));
            assert!((got - stage["duration_seconds"].as_f64().expect("d")).abs() < 1.0);
        }

        // Histograms: one observation per completed run in the window, per result; none twice.
        let recorded: Vec<&&Value> = runs
            .iter()
            .filter(|r| r["end_ms"].as_f64().expect("end") >= window_start_ms)
            .collect();
        for candidate in ["success", "error", "aborted"] {
            let expected = recorded.iter().filter(|r| r["result"] == candidate).count() as f64;
            let count = value(
                &samples,
                "codearts_pipeline_run_duration_seconds_count",
                &[("pipeline_id", id), ("result", candidate)],
            )
            .unwrap_or(0.0);
            assert_eq!(count, expected, "{name}: runs with result {candidate}");
            let counted = value(
                &samples,
                "codearts_pipeline_runs_total",
                &[("pipeline_id", id), ("result", candidate)],
            )
            .unwrap_or(0.0);
            assert_eq!(
                counted, count,
                "{name}: runs_total equals the histogram's _count"
            );
            let expected_sum: f64 = recorded
                .iter()
                .filter(|r| r["result"] == candidate)
                .map(|r| r["duration_seconds"].as_f64().expect("d"))
                .sum();
            let sum = value(
                &samples,
                "codearts_pipeline_run_duration_seconds_sum",
                &[("pipeline_id", id), ("result", candidate)],
            )
            .unwrap_or(0.0);
            assert!(
                (sum - expected_sum).abs() < 0.01 * recorded.len() as f64 + 0.01,
                "{name}: sum {candidate}"
            );
        }
        let mut expected_stage_counts: BTreeMap<(String, String), f64> = BTreeMap::new();
        for run in &recorded {
            for stage in run["stages"].as_array().expect("stages") {
                let key = (
                    stage["name"].as_str().expect("n").to_string(),
                    stage["result"].as_str().unwrap_or("").to_string(),
                );
                *expected_stage_counts.entry(key).or_default() += 1.0;
            }
        }
        let stage_counts: BTreeMap<(String, String), f64> = select(
            &samples,
            "codearts_pipeline_stage_duration_seconds_count",
            &labels,
        )
        .into_iter()
        .map(|s| {
            (
                (s.labels["stage"].clone(), s.labels["result"].clone()),
                s.value,
            )
        })
        .collect();
        assert_eq!(
            stage_counts, expected_stage_counts,
            "{name}: stage observations"
        );
        if !recorded.is_empty() {
            assert_eq!(
                value(&samples, "codearts_pipeline_runs_missed_total", &labels),
                Some(0.0),
                "{name}: no run may be missed"
            );
        }
        checked_runs += recorded.len();
    }
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
