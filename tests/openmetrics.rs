//! OpenMetrics with exemplars, negotiated by Prometheus' `Accept` header, against a running
//! exporter polling the simulator.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::Duration;

use common::exposition::parse_openmetrics;
use common::harness::{start_exporter, start_simulator};
use common::{get_json, sum, wait_for_status_200};

/// What Prometheus 2.42 sends on every scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The default `metrics.run_duration_buckets`.
const RUN_BUCKETS: [f64; 8] = [60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_gets_openmetrics_whose_run_exemplars_are_runs_that_ended_in_their_bucket() {
    let sim = start_simulator(6, 1, 7, 600.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let project = truth["pipelines"][0]["project_id"].clone();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[codearts]\nendpoint = \"{}\"\n[auth]\nmethod = \"token\"\ntoken = \"codearts-simulator-token\"\n[[targets]]\nproject_id = {project}\ndiscover = true\ninterval = \"1s\"\n",
        sim.url
    );
    let exporter = start_exporter(&config).await;
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    exporter
        .scrape_until(Duration::from_secs(60), "runs recorded", |s| {
            sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0
                && sum(s, "codearts_pipeline_runs_total", &[]) > 0.0
        })
        .await;

    let client = reqwest::Client::new();
    let url = format!("{}/metrics", exporter.url);
    let answer = client
        .get(&url)
        .header("Accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .expect("scrape");
    assert_eq!(
        answer.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = answer.text().await.expect("body");
    assert!(body.ends_with("# EOF\n"));
    let samples = parse_openmetrics(&body);

    // The simulator's runs by (pipeline, run id): duration and end, seconds.
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let mut runs = std::collections::BTreeMap::new();
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let id = pipeline["pipeline_id"].as_str().expect("id").to_string();
        for run in pipeline["runs"].as_array().into_iter().flatten() {
            if let Some(run_id) = run["run_id"].as_str() {
                runs.insert((id.clone(), run_id.to_string()), run.clone());
            }
        }
    }
    let mut checked = 0;
    for sample in samples
        .iter()
        .filter(|s| s.sample.name == "codearts_pipeline_run_duration_seconds_bucket")
    {
        let Some(exemplar) = &sample.exemplar else {
            continue;
        };
        let pipeline = &sample.sample.labels["pipeline_id"];
        let run_id = &exemplar.labels["run_id"];
        let run = runs
            .get(&(pipeline.clone(), run_id.clone()))
            .unwrap_or_else(|| {
                panic!("exemplar run {run_id} of {pipeline} is no run of the truth")
            });
        let le = match sample.sample.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            le => le.parse().expect("le"),
        };
        // The bucket below: the default run buckets' bound before `le`.
        let below = RUN_BUCKETS
            .iter()
            .copied()
            .filter(|bound| *bound < le)
            .fold(f64::NEG_INFINITY, f64::max);
        let duration = run["duration_seconds"].as_f64().expect("duration");
        let end = run["end_ms"].as_f64().expect("end") / 1000.0;
        assert!(
            duration <= le && duration > below,
            "{run_id} took {duration}s, outside bucket {le}"
        );
        assert!((exemplar.value - duration).abs() < 1e-6, "{run_id}");
        assert_eq!(exemplar.timestamp, Some(end), "{run_id}");
        // Traces are off: run_id alone.
        assert_eq!(exemplar.labels.len(), 1);
        checked += 1;
    }
    assert!(checked > 0, "no run bucket has an exemplar:\n{body}");

    // Without OpenMetrics in Accept: the text format, as before.
    let text = client.get(&url).send().await.expect("scrape");
    assert_eq!(
        text.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = text.text().await.expect("body");
    assert!(!text.contains("# EOF") && !text.contains(" # {"));
}
