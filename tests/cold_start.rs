//! A cold start against the simulator over HTTP: every pipeline's state and last run are shown
//! after one round of status calls, the exporter is ready then, and the backfill of the runs
//! within `backfill_window` comes behind, recording each run once.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::Duration;

use codearts_exporter::simulator::SimOptions;
use common::harness::{sim_options, start_exporter, start_simulator_with};
use common::{
    Sample, compare_with_truth, config, get, get_json, parse_metrics, select, stable_scrape, sum,
    targets_of, value,
};

/// Pipelines in each of the two projects.
const PIPELINES: usize = 40;

fn backfill_pending(samples: &[Sample]) -> f64 {
    sum(samples, "codearts_exporter_backfill_pending_pipelines", &[])
}

/// The state each pipeline shows, by pipeline id.
fn states(samples: &[Sample]) -> Vec<(String, String)> {
    select(samples, "codearts_pipeline_status", &[])
        .iter()
        .filter(|s| s.value == 1.0)
        .map(|s| (s.labels["pipeline_id"].clone(), s.labels["status"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_last_runs_come_first_and_the_backfill_records_every_run_once() {
    // Fast runs: many pipelines ran within the minute before the start, so they need a
    // backfill read, and some run again while the backfill goes on; most are idle at the start.
    let sim = start_simulator_with(SimOptions {
        running_share: Some(0.15),
        ..sim_options(2 * PIPELINES, 2, 31, 60.0)
    })
    .await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    // Six requests a second for everything: the polls of both targets need two or three, the
    // backfill of up to 80 pipelines takes what is left, over many polls.
    let config = config(&sim.url, &targets_of(&truth), 2)
        .replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\nmax_requests_per_second = 6",
        )
        .replace(
            "chunk_size = 3\n",
            "chunk_size = 20\nbackfill_window = \"60s\"\n",
        );
    let exporter = start_exporter(&config).await;
    let started_ms = exporter.started_ms;
    let metrics_url = format!("{}/metrics", exporter.url);

    // Ready once both targets' first round of status calls is done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = get(&format!("{}/readyz", exporter.url)).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = parse_metrics(&get(&metrics_url).await.1);
    assert!(
        backfill_pending(&ready) > 0.0,
        "ready only once the backfill was done: it must not wait for it"
    );
    // Every pipeline shows its state; every one of the v5 target whose latest run has completed
    // shows that run as its last, before any history read of it (the v3 status has no stage
    // times: there the history read brings the last run).
    let shown = states(&ready);
    assert_eq!(shown.len(), 2 * PIPELINES, "one state per pipeline");
    let v5_project = targets_of(&truth)[0]["project_id"].clone();
    let v5: Vec<&str> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .filter(|p| p["project_id"] == v5_project)
        .filter_map(|p| p["pipeline_id"].as_str())
        .collect();
    let truth_now = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let mut completed = 0;
    for (id, state) in &shown {
        if state != "completed" || !v5.contains(&id.as_str()) {
            continue;
        }
        completed += 1;
        let number = value(
            &ready,
            "codearts_pipeline_last_run_number",
            &[("pipeline_id", id)],
        )
        .unwrap_or_else(|| panic!("{id} shows no last run when ready"));
        let runs = truth_now["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["pipeline_id"] == id.as_str())
            .and_then(|p| p["runs"].as_array())
            .expect("runs of a known pipeline");
        assert!(
            runs.iter()
                .any(|r| r["run_number"].as_f64() == Some(number)),
            "{id}: last run {number} is not a completed run"
        );
    }
    assert!(
        completed > PIPELINES / 2,
        "only {completed} idle pipelines of the v5 target: {shown:?}"
    );

    // The backfill ends, then two more polls see what completed meanwhile.
    let done = exporter
        .scrape_until(Duration::from_secs(240), "the backfill to end", |s| {
            backfill_pending(s) == 0.0
        })
        .await;
    let reads = sum(
        &done,
        "codearts_exporter_api_requests_total",
        &[("api", "run_list")],
    );
    assert!(reads > 0.0, "the backfill read no history");
    let polls = |s: &[Sample]| sum(s, "codearts_exporter_poll_duration_seconds_count", &[]);
    let before = polls(&done);
    exporter
        .scrape_until(Duration::from_secs(60), "two more polls", |s| {
            polls(s) >= before + 4.0
        })
        .await;
    let samples = stable_scrape(&metrics_url).await;
    let mut truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    // A pipeline without a last run is one whose first run ever ended after the last poll
    // began (or has not ended): nothing to compare yet.
    let last_poll_start = select(
        &samples,
        "codearts_exporter_last_poll_start_timestamp_seconds",
        &[],
    )
    .iter()
    .map(|s| s.value)
    .fold(f64::INFINITY, f64::min);
    if let Some(pipelines) = truth["pipelines"].as_array_mut() {
        pipelines.retain(|p| {
            let id = p["pipeline_id"].as_str().expect("id");
            let shown = value(
                &samples,
                "codearts_pipeline_last_run_number",
                &[("pipeline_id", id)],
            )
            .is_some();
            if !shown {
                let runs = p["runs"].as_array().expect("runs");
                assert!(
                    runs.iter()
                        .all(|r| r["end_ms"].as_f64().expect("end") / 1000.0
                            >= last_poll_start - 1.0),
                    "{id} shows no last run, but one ended before the last poll: {runs:?}"
                );
            }
            shown
        });
    }
    // Runs that completed while the backfill went on are among those compared.
    let during = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["runs"].as_array().into_iter().flatten())
        .filter(|r| r["end_ms"].as_f64().is_some_and(|end| end > started_ms))
        .count();
    assert!(during > 0, "no run completed during the test");
    let checked = compare_with_truth(&samples, &truth, started_ms - 60_000.0);
    assert!(checked >= PIPELINES, "only {checked} runs compared");
    exporter.stop().await;
}

/// A poll that reads the pipeline list (for discovery, or for the names of a cold start
/// without it) takes each listed pipeline's state from the list's `latest_run`: the first poll
/// needs no batch status call at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_reads_the_pipeline_list_takes_the_states_from_it() {
    for discover in [true, false] {
        let sim = start_simulator_with(sim_options(12, 1, 41, 60.0)).await;
        let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
        let project = truth["pipelines"][0]["project_id"].clone();
        let pipelines = if discover {
            "discover = true".to_string()
        } else {
            // One project: its ids, as a TOML array.
            format!("pipeline_ids = {}", targets_of(&truth)[0]["pipeline_ids"])
        };
        // One poll only (the next is a minute away).
        let config = format!(
            "{}[[targets]]\nname = \"t0\"\nproject_id = {project}\n{pipelines}\ninterval = \"60s\"\n",
            common::simulator_config(&sim.url)
        );
        let exporter = start_exporter(&config).await;
        let polled = exporter
            .scrape_until(Duration::from_secs(60), "the first poll", |s| {
                sum(s, "codearts_exporter_poll_duration_seconds_count", &[]) >= 1.0
            })
            .await;
        let requests = |api: &str| {
            sum(
                &polled,
                "codearts_exporter_api_requests_total",
                &[("api", api)],
            )
        };
        assert!(requests("pipeline_list") >= 1.0, "discover = {discover}");
        assert_eq!(
            requests("v5_status"),
            0.0,
            "discover = {discover}: the states came from the list"
        );
        // Every pipeline that has run shows its state, named, as the status would have it.
        let after = get_json(&format!("{}/_sim/truth", sim.url)).await;
        let ran = after["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .filter(|p| p["runs"].as_array().is_some_and(|r| !r.is_empty()))
            .count();
        let shown = states(&polled).len();
        assert!(
            shown >= ran && shown > 0,
            "discover = {discover}: {shown} states for {ran} pipelines that ran"
        );
        assert_eq!(requests("run_detail"), 0.0, "no name was read one by one");
        exporter.stop().await;
    }
}
