//! Scrapes of /metrics against a running exporter: one rendering shared between polls, gzip.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::harness::{start_exporter, start_simulator};
use common::{get_json, sum, wait_for_status_200};

/// Every line of the pipeline families, sorted.
fn pipeline_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("codearts_pipeline_"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn renders(text: &str) -> String {
    text.lines()
        .find(|line| line.starts_with("codearts_exporter_metrics_renders_total "))
        .expect("renders counter")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_between_polls_share_one_rendering_and_gzip_is_the_same_text() {
    let sim = start_simulator(12, 1, 5, 60.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let project = truth["pipelines"][0]["project_id"].clone();
    let ids: Vec<String> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| p["pipeline_id"].to_string())
        .collect();
    // One poll at start-up, the next in an hour: every scrape below falls between two polls.
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[codearts]\nendpoint = \"{}\"\n[auth]\nmethod = \"token\"\ntoken = \"codearts-simulator-token\"\n[[targets]]\nproject_id = {project}\npipeline_ids = [{}]\ninterval = \"1h\"\n",
        sim.url,
        ids.join(", ")
    );
    let exporter = start_exporter(&config).await;
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    // The backfill records behind the first poll; after it nothing changes for an hour.
    exporter
        .scrape_until(Duration::from_secs(60), "the backfill to end", |s| {
            sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0
        })
        .await;

    let client = reqwest::Client::new();
    let url = format!("{}/metrics", exporter.url);
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut plain = String::new();
    for _ in 0..10 {
        plain = client
            .get(&url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        seen.push(renders(&plain));
    }
    let elapsed = started.elapsed();
    seen.dedup();
    // A rendering is redone at most every 5 s for the process metrics, not per scrape.
    let allowed = 1 + elapsed.as_secs() as usize / 5 + 1;
    assert!(
        seen.len() <= allowed,
        "10 scrapes in {elapsed:?} rendered {} times: {seen:?}",
        seen.len()
    );

    let response = client
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("gzip scrape");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let compressed = response.bytes().await.expect("body");
    let mut inflated = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut inflated)
        .expect("valid gzip");
    assert!(compressed.len() < inflated.len());
    let lines = pipeline_lines(&inflated);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("codearts_pipeline_status{")),
        "no pipeline series in the gzip body"
    );
    assert_eq!(lines, pipeline_lines(&plain), "gzip and text bodies differ");
    exporter.stop().await;
}
