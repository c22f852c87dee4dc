//! Native histograms as a real Prometheus 2.42 stores them: the exporter against the simulator,
//! scraped by a Prometheus started with `--enable-feature=native-histograms` (which asks for
//! the protobuf exposition) and by one without it (the text formats), both on loopback.
//!
//! - For every pipeline and result, `histogram_count` and `histogram_sum` of the run duration
//!   equal the simulator's truth for the runs up to the last one recorded, and
//!   `histogram_quantile(0.5, …)` is within 5% of the true median; per stage, the count equals
//!   the truth's stage observations.
//! - No `_bucket`, `_sum` or `_count` series exist for a native family, while the exporter's
//!   own histograms stay classic.
//! - Both Prometheus instances hold the same series of every other family: the protobuf
//!   exposition has the text format's names and labels.
//! - With exemplar storage on, the native histograms keep the runs of their buckets' exemplars.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::prometheus::{Prometheus, require_tool};
use common::{config, get_json, targets_of};
use serde_json::Value;

/// The families stored as native histograms.
const NATIVE: [&str; 8] = [
    "codearts_pipeline_run_duration_seconds",
    "codearts_pipeline_run_queue_seconds",
    "codearts_pipeline_run_pause_seconds",
    "codearts_pipeline_stage_duration_seconds",
    "codearts_pipeline_job_duration_seconds",
    "codearts_pipeline_recovery_seconds",
    "codearts_deployment_lead_time_seconds",
    "codearts_deployment_recovery_seconds",
];

/// A Prometheus scraping `target` every second, with `extra` arguments.
fn prometheus(dir: &std::path::Path, target: &str, extra: &[&str]) -> Prometheus {
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: codearts\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    Prometheus::start_with(dir, &config, extra)
}

/// The result of an instant query at `time` (Unix seconds), as (labels, value) pairs.
async fn query_at(
    prometheus: &Prometheus,
    promql: &str,
    time: f64,
) -> Vec<(BTreeMap<String, String>, f64)> {
    let data = prometheus.query_at(promql, time).await;
    data["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .map(|item| {
            let labels = item["metric"]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            // A native histogram sample has `histogram` instead of `value`.
            let value = match item["value"][1].as_str() {
                Some(v) => v.parse::<f64>().expect("a number"),
                None => {
                    assert!(item["histogram"].is_array(), "{item}");
                    f64::NAN
                }
            };
            (labels, value)
        })
        .collect()
}

/// Values of `promql` at `time` by the given labels' values.
async fn by(
    prometheus: &Prometheus,
    promql: &str,
    time: f64,
    keys: &[&str],
) -> BTreeMap<Vec<String>, f64> {
    query_at(prometheus, promql, time)
        .await
        .into_iter()
        .map(|(labels, value)| {
            let key = keys
                .iter()
                .map(|k| labels.get(*k).cloned().unwrap_or_default())
                .collect();
            (key, value)
        })
        .collect()
}

/// Every series name and label set of the exporter's families that are not native histograms,
/// as one Prometheus stores them at `time`.
async fn other_series(prometheus: &Prometheus, time: f64) -> BTreeSet<String> {
    let native: Vec<String> = NATIVE
        .iter()
        .flat_map(|n| {
            [
                format!("{n}_bucket"),
                format!("{n}_sum"),
                format!("{n}_count"),
            ]
        })
        .collect();
    query_at(prometheus, "{__name__=~\"codearts_.+\"}", time)
        .await
        .into_iter()
        .filter(|(labels, _)| {
            !native.contains(&labels["__name__"]) && !NATIVE.contains(&labels["__name__"].as_str())
        })
        .map(|(mut labels, _)| {
            // Prometheus 2.42 writes `le` from the protobuf exposition as OpenMetrics does
            // (`1.0`) and keeps the text format's as written (`1`): compared as numbers.
            if let Some(le) = labels.get_mut("le") {
                *le = le
                    .parse::<f64>()
                    .map_or(le.clone(), |bound| bound.to_string());
            }
            format!("{labels:?}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stores_native_histograms_that_match_the_truth() {
    require_tool("prometheus");
    let sim = common::harness::start_simulator(6, 2, 31, 400.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let sim_started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let mut text = config(&sim.url, &targets_of(&truth), 1);
    text.push_str("[metrics]\njobs = true\n");
    let exporter = common::harness::start_exporter(&text).await;
    let target = exporter.url.trim_start_matches("http://").to_string();
    let native_dir = tempfile::tempdir().expect("tempdir");
    let classic_dir = tempfile::tempdir().expect("tempdir");
    let mut native = prometheus(
        native_dir.path(),
        &target,
        &["--enable-feature=native-histograms,exemplar-storage"],
    );
    let mut classic = prometheus(classic_dir.path(), &target, &[]);
    native.wait_ready().await;
    classic.wait_ready().await;

    // Enough runs in both, and the same scrape seen by both (they scrape on their own clocks:
    // compare once the exporter has had no new run between their last scrapes).
    let deadline = Instant::now() + Duration::from_secs(120);
    let counted = "sum(histogram_count(codearts_pipeline_run_duration_seconds))";
    loop {
        let now = common::harness::now_ms() / 1000.0;
        let runs = query_at(&native, counted, now)
            .await
            .first()
            .map_or(0.0, |(_, v)| *v);
        if runs >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {runs} runs in native histograms; prometheus log:\n{}",
            native.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // One instant: every series of the native Prometheus comes from its last scrape there.
    let at = common::harness::now_ms() / 1000.0;
    let last_numbers = by(
        &native,
        "codearts_pipeline_last_run_number",
        at,
        &["pipeline_id"],
    )
    .await;
    let keys = ["pipeline_id", "result"];
    let counts = by(
        &native,
        "histogram_count(codearts_pipeline_run_duration_seconds)",
        at,
        &keys,
    )
    .await;
    let sums = by(
        &native,
        "histogram_sum(codearts_pipeline_run_duration_seconds)",
        at,
        &keys,
    )
    .await;
    let medians = by(
        &native,
        "histogram_quantile(0.5, codearts_pipeline_run_duration_seconds)",
        at,
        &keys,
    )
    .await;
    let stage_counts = by(
        &native,
        "histogram_count(codearts_pipeline_stage_duration_seconds)",
        at,
        &["pipeline_id", "stage"],
    )
    .await;
    // The truth after the query holds every run the scrape can know about.
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let window_start_ms = sim_started_ms - 3_600_000.0;
    let mut compared = 0;
    let mut medians_compared = 0;
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let id = pipeline["pipeline_id"].as_str().expect("id").to_string();
        let Some(last) = last_numbers.get(&vec![id.clone()]) else {
            continue;
        };
        let recorded: Vec<&Value> = pipeline["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["run_number"].as_f64().expect("number") <= *last)
            .filter(|r| r["end_ms"].as_f64().expect("end") >= window_start_ms)
            .collect();
        for result in ["success", "error", "aborted"] {
            let mut durations: Vec<f64> = recorded
                .iter()
                .filter(|r| r["result"] == result)
                .map(|r| {
                    (r["end_ms"].as_f64().expect("end") - r["start_ms"].as_f64().expect("start"))
                        / 1000.0
                })
                .collect();
            let key = vec![id.clone(), result.to_string()];
            let count = counts.get(&key).copied().unwrap_or(0.0);
            assert_eq!(
                count,
                durations.len() as f64,
                "{id} {result}: histogram_count"
            );
            let sum = sums.get(&key).copied().unwrap_or(0.0);
            let expected: f64 = durations.iter().sum();
            assert!(
                (sum - expected).abs() < 1e-6 * (1.0 + durations.len() as f64),
                "{id} {result}: histogram_sum {sum}, truth {expected}"
            );
            compared += durations.len();
            if durations.is_empty() {
                continue;
            }
            // Between the two middle values (one when odd), within 5%.
            durations.sort_by(f64::total_cmp);
            let n = durations.len();
            let (low, high) = (durations[(n - 1) / 2], durations[n / 2]);
            let median = medians[&key];
            assert!(
                median >= low * 0.95 && median <= high * 1.05,
                "{id} {result}: histogram_quantile(0.5) = {median}, true median {low}..{high}"
            );
            medians_compared += 1;
        }
        let mut stages: BTreeMap<String, f64> = BTreeMap::new();
        for run in &recorded {
            for stage in run["stages"].as_array().expect("stages") {
                *stages
                    .entry(stage["name"].as_str().expect("name").to_string())
                    .or_default() += 1.0;
            }
        }
        for (stage, expected) in stages {
            let got = stage_counts
                .get(&vec![id.clone(), stage.clone()])
                .copied()
                .unwrap_or(0.0);
            assert_eq!(got, expected, "{id}/{stage}: stage observations");
        }
    }
    assert!(
        compared >= 20 && medians_compared >= 6,
        "{compared} runs, {medians_compared} medians"
    );

    // Native families have no classic series there; the exporter's own histogram is classic.
    for family in NATIVE {
        for suffix in ["_bucket", "_sum", "_count"] {
            let classic_series = query_at(&native, &format!("{family}{suffix}"), at).await;
            assert!(
                classic_series.is_empty(),
                "{family}{suffix} stored: {classic_series:?}"
            );
        }
    }
    for family in [
        "codearts_pipeline_run_queue_seconds",
        "codearts_pipeline_job_duration_seconds",
        "codearts_pipeline_recovery_seconds",
    ] {
        let present = query_at(&native, &format!("histogram_count({family})"), at).await;
        assert!(!present.is_empty(), "{family}: no native histogram");
    }
    let own = query_at(
        &native,
        "codearts_exporter_api_request_duration_seconds_bucket",
        at,
    )
    .await;
    assert!(!own.is_empty(), "the exporter's own histogram is classic");
    // The classic Prometheus has the classic series, and no native ones.
    assert!(
        !query_at(
            &classic,
            "codearts_pipeline_run_duration_seconds_bucket",
            at
        )
        .await
        .is_empty()
    );
    assert!(
        query_at(
            &classic,
            "histogram_count(codearts_pipeline_run_duration_seconds)",
            at
        )
        .await
        .is_empty()
    );

    // Every other family: the same series in both (same names and labels). Compared where
    // both have scraped since the last change of the label sets (a new stage, say): retried.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = common::harness::now_ms() / 1000.0;
        let (from_protobuf, from_text) = (
            other_series(&native, now).await,
            other_series(&classic, now).await,
        );
        if from_protobuf == from_text {
            assert!(from_text.len() > 100, "{} series", from_text.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series only from protobuf: {:?}\nseries only from text: {:?}",
            from_protobuf.difference(&from_text).collect::<Vec<_>>(),
            from_text.difference(&from_protobuf).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Exemplars come along: Prometheus takes a native histogram's from its classic buckets.
    let exemplars = native
        .query_exemplars(
            "codearts_pipeline_run_duration_seconds",
            at - 3600.0,
            at + 60.0,
        )
        .await;
    assert!(
        !exemplars.is_empty() && exemplars.iter().all(|e| e["labels"]["run_id"].is_string()),
        "{exemplars:?}"
    );
    assert!(!native.log().contains("level=error"), "{}", native.log());
}
