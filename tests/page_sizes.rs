//! Sizes the default `codearts.max_response_bytes` against the largest legitimate answers,
//! measured on the simulator with pipelines of 14 stages on average (12 to 16) and 1 to 4 jobs
//! per stage: a v5 batch status of 50 pipelines, a pipeline-list page of 50, a run history page
//! of 20 runs and a run detail with its jobs. Then checks that decoding an answer as large as the
//! cap stays within 20 MiB of memory. `cargo test --test page_sizes -- --nocapture` prints the
//! figures.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codearts_exporter::codearts::{Api, Client, ErrorKind, RequestObserver, RetryReason};
use codearts_exporter::config::{AuthConfig, CodeArtsConfig};
use codearts_exporter::simulator::{self, SimOptions, Simulator};
use serde_json::{Value, json};

/// Pages as the exporter asks for them: 50 ids per batch status (the default `chunk_size`),
/// 50 pipelines per list page, 20 runs per history page.
const PIPELINES: usize = 50;
const HISTORY_PAGE: usize = 20;
/// The default cap must be at least this many times the largest page.
const MARGIN: u64 = 5;
/// Reading and decoding an answer as large as the cap may raise the peak RSS by this much.
const DECODE_BUDGET_KIB: u64 = 20 * 1024;

/// Requests to the simulator's v5 APIs, as raw JSON.
struct Pages {
    base: String,
    project: String,
    token: String,
    http: reqwest::Client,
}

impl Pages {
    /// Sends a request; returns the body's size in bytes and its JSON.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u64, Value) {
        let url = format!("{}/v5/{}/api/pipelines{path}", self.base, self.project);
        let mut request = self
            .http
            .request(method, &url)
            .header("x-auth-token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(response.status(), 200, "{url}");
        let bytes = response.bytes().await.expect("a body");
        let json = serde_json::from_slice(&bytes).expect("JSON");
        (bytes.len() as u64, json)
    }
}

/// Ignores what the client reports.
struct Unobserved;

impl RequestObserver for Unobserved {
    fn request_done(&self, _api: Api, _code: &str, _elapsed: Duration) {}
    fn retried(&self, _api: Api, _reason: RetryReason) {}
    fn failed(&self, _api: Api, _kind: ErrorKind) {}
    fn auth_refresh(&self, _ok: bool) {}
}

/// A field of /proc/self/status in KiB, e.g. `VmHWM`.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_cap_is_several_times_the_largest_page() {
    // Fast enough that every pipeline has a full history page within seconds.
    let sim = Arc::new(Simulator::new(SimOptions {
        pipelines: PIPELINES,
        projects: 1,
        stages: Some(14),
        speed: 300_000.0,
        ..SimOptions::default()
    }));
    let (project, ids) = sim.targets().remove(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let token = sim.static_token().to_string();
    tokio::spawn(simulator::serve(listener, sim, std::future::pending()));
    let pages = Pages {
        base,
        project: project.clone(),
        token,
        http: reqwest::Client::new(),
    };

    let post = reqwest::Method::POST;
    let (status_bytes, status) = pages.call(post.clone(), "/status", Some(json!(ids))).await;
    let entries = status.as_array().expect("an array").clone();
    assert_eq!(entries.len(), PIPELINES);
    let (list_bytes, list) = pages
        .call(
            post.clone(),
            "/list",
            // As the exporter asks: pipelines of both versions.
            Some(json!({"offset": 0, "limit": 50, "query_new": false})),
        )
        .await;
    assert_eq!(list["pipelines"].as_array().map(Vec::len), Some(PIPELINES));

    let mut history_bytes = 0;
    let mut detail_bytes = 0;
    for id in &ids {
        let history = format!("/{id}/pipeline-runs/list");
        let page = json!({"offset": 0, "limit": HISTORY_PAGE});
        let deadline = Instant::now() + Duration::from_secs(60);
        let (bytes, runs) = loop {
            let (bytes, runs) = pages.call(post.clone(), &history, Some(page.clone())).await;
            if runs["pipeline_runs"].as_array().map(Vec::len) == Some(HISTORY_PAGE) {
                break (bytes, runs);
            }
            assert!(Instant::now() < deadline, "{id}: no full history page");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        history_bytes = history_bytes.max(bytes);
        // The newest few runs: a detail's size depends on the pipeline more than on the run.
        for run in runs["pipeline_runs"]
            .as_array()
            .expect("runs")
            .iter()
            .take(3)
        {
            let run_id = run["pipeline_run_id"].as_str().expect("run id");
            let detail = format!("/{id}/pipeline-runs/detail?pipeline_run_id={run_id}");
            let (bytes, _) = pages.call(reqwest::Method::GET, &detail, None).await;
            detail_bytes = detail_bytes.max(bytes);
        }
    }

    let cap = CodeArtsConfig::default().max_response_bytes;
    println!("largest answers, 14 stages on average (12 to 16), 1 to 4 jobs per stage:");
    for (what, bytes) in [
        ("v5 batch status, 50 pipelines", status_bytes),
        ("pipeline list, page of 50", list_bytes),
        ("run history, page of 20 runs", history_bytes),
        ("run detail with jobs", detail_bytes),
    ] {
        println!("  {what:<32} {bytes:>9} bytes");
    }
    let largest = [status_bytes, list_bytes, history_bytes, detail_bytes]
        .into_iter()
        .max()
        .unwrap_or(0);
    println!(
        "default max_response_bytes {cap}: {:.1} times the largest",
        cap as f64 / largest as f64
    );
    assert!(
        cap >= MARGIN * largest,
        "the default cap {cap} is less than {MARGIN} times the largest page ({largest} bytes)"
    );

    // A batch status answer of these entries, as large as the cap allows, read and decoded by
    // the client: the most memory one legitimate answer can cost.
    let mut body = String::from("[");
    for entry in entries.iter().cycle() {
        let entry = entry.to_string();
        if (body.len() + entry.len() + 2) as u64 > cap {
            break;
        }
        if body.len() > 1 {
            body.push(',');
        }
        body.push_str(&entry);
    }
    body.push(']');
    let body = bytes::Bytes::from(body);
    let body_len = body.len();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(codearts_exporter::http::serve(
        listener,
        move |_request| {
            let body = body.clone();
            async move {
                codearts_exporter::http::response(hyper::StatusCode::OK, "application/json", body)
            }
        },
        std::future::pending(),
    ));
    let config = CodeArtsConfig {
        endpoint: Some(endpoint),
        ..CodeArtsConfig::default()
    };
    let client =
        Client::new(&config, &AuthConfig::token("t"), Arc::new(Unobserved)).expect("client");
    // Writing 5 resets VmHWM to the current RSS (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = proc_status_kib("VmHWM");
    let runs = client.v5_status(&project, &ids).await.expect("decodes");
    let grown = proc_status_kib("VmHWM") - before;
    println!(
        "an answer of {body_len} bytes ({} entries): peak RSS +{grown} KiB to read and decode",
        runs.len()
    );
    assert!(
        grown < DECODE_BUDGET_KIB,
        "decoding {body_len} bytes raised the peak RSS by {grown} KiB"
    );
}
