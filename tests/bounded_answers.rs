//! The exporter against answers of 300 MB, as a misbehaving proxy could send: each is abandoned
//! at `codearts.max_response_bytes`, counted once as `too_large` and logged once with its size,
//! not retried; the peak RSS stays within 20 MiB of the steady one, and every pipeline keeps its
//! values. `cargo test --test bounded_answers -- --nocapture` prints the memory figures.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::{Duration, Instant};

use common::{
    Exporter, Sample, Sim, config, get_json, request, scrape, select, start_exporter,
    start_simulator, sum, targets_of, value, wait_for_status_200,
};
use serde_json::{Value, json};

const TARGETS: [&str; 2] = ["t0", "t1"];
const ERRORS: &str = "codearts_exporter_api_errors_total";
const RETRIES: &str = "codearts_exporter_api_retries_total";
/// Oversized answers per batch status API (t0 polls through v5, t1 through v3).
const OVERSIZED: u64 = 3;
/// The default `codearts.max_response_bytes`.
const CAP: u64 = 1 << 20;
/// How much the peak RSS may grow while the oversized answers come.
const BUDGET_KIB: u64 = 20 * 1024;

/// A field of /proc/PID/status in KiB, e.g. `VmHWM` (the peak RSS).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn per_target(samples: &[Sample], name: &str) -> Vec<f64> {
    TARGETS
        .iter()
        .map(|t| value(samples, name, &[("target", t)]).unwrap_or(f64::NAN))
        .collect()
}

/// Every pipeline of `ids` has its one-hot state, and the last values of its latest run.
fn every_pipeline_has_values(samples: &[Sample], ids: &[String]) -> bool {
    ids.iter().all(|id| {
        let labels = [("pipeline_id", id.as_str())];
        let hot = select(samples, "codearts_pipeline_status", &labels)
            .iter()
            .filter(|s| s.value == 1.0)
            .count();
        hot == 1 && value(samples, "codearts_pipeline_last_run_number", &labels).is_some()
    })
}

/// Waits until every target has finished `polls` more polls than in `since`, the last one
/// successful.
async fn polled(exporter: &Exporter, since: &[Sample], polls: f64, what: &str) -> Vec<Sample> {
    let counted = per_target(since, "codearts_exporter_poll_duration_seconds_count");
    exporter
        .scrape_until(Duration::from_secs(60), what, |s| {
            let now = per_target(s, "codearts_exporter_poll_duration_seconds_count");
            per_target(s, "codearts_exporter_target_up") == [1.0, 1.0]
                && now.iter().zip(&counted).all(|(n, c)| *n >= c + polls)
        })
        .await
}

/// Waits until every fault rule of the simulator has hit `count` times, or the peak RSS of
/// `pid` has grown past the budget since `steady_kib` (as it did before answers were capped);
/// returns the peak RSS.
async fn faults_spent_or_memory_gone(sim: &Sim, count: u64, pid: u32, steady_kib: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let peak_kib = proc_status_kib(pid, "VmHWM");
        let faults = get_json(&format!("{}/_sim/faults", sim.url)).await;
        let rules = faults["faults"].as_array().expect("rules").clone();
        if rules.iter().all(|rule| rule["hits"] == count) || peak_kib - steady_kib >= BUDGET_KIB {
            return peak_kib;
        }
        assert!(Instant::now() < deadline, "faults not spent: {faults}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_300_mb_are_abandoned_at_the_cap() {
    let sim = start_simulator(10, 2, 31, 120.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let ids: Vec<String> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .filter(|p| !p["runs"].as_array().expect("runs").is_empty())
        .map(|p| p["pipeline_id"].as_str().expect("id").to_string())
        .collect();
    assert!(ids.len() >= 5, "too few pipelines with runs: {ids:?}");
    let exporter = start_exporter(&config(&sim.url, &targets_of(&truth), 1), &[]);
    let pid = exporter.proc.pid();
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    let ready = exporter
        .scrape_until(Duration::from_secs(30), "every pipeline", |s| {
            every_pipeline_has_values(s, &ids)
        })
        .await;
    // A few more polls, so that the peak is the steady one.
    let before = polled(&exporter, &ready, 3.0, "steady polls").await;
    let steady_kib = proc_status_kib(pid, "VmHWM");

    let faults = json!({"faults": [
        {"api": "v5_status", "kind": "oversized", "count": OVERSIZED},
        {"api": "v3_status", "kind": "oversized", "count": OVERSIZED, "content_length": true},
    ]});
    let (status, body) = request("POST", &format!("{}/_sim/faults", sim.url), Some(&faults)).await;
    assert_eq!(status, 200, "{body}");
    let within_budget = |peak_kib: u64, when: &str| {
        println!(
            "exporter VmHWM: steady {:.1} MiB, {when} {:.1} MiB (+{:.1} MiB)",
            steady_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0,
            (peak_kib - steady_kib) as f64 / 1024.0
        );
        assert!(
            peak_kib - steady_kib < BUDGET_KIB,
            "the peak RSS grew from {steady_kib} KiB to {peak_kib} KiB"
        );
    };
    let peak_kib = faults_spent_or_memory_gone(&sim, OVERSIZED, pid, steady_kib).await;
    within_budget(peak_kib, "once the answers of 300 MB were sent");
    // Polls that started after the last oversized answer: those answers are dealt with.
    let after = polled(&exporter, &scrape(&exporter.url).await, 2.0, "recovery").await;
    within_budget(
        proc_status_kib(pid, "VmHWM"),
        "after the polls that followed",
    );
    for api in ["v5_status", "v3_status"] {
        let labels = [("api", api), ("kind", "too_large")];
        assert_eq!(
            sum(&after, ERRORS, &labels) - sum(&before, ERRORS, &labels),
            OVERSIZED as f64,
            "{api}: one error per oversized answer"
        );
    }
    assert_eq!(
        sum(&after, RETRIES, &[]),
        sum(&before, RETRIES, &[]),
        "oversized answers are not retried"
    );
    assert!(every_pipeline_has_values(&after, &ids));

    // Logged once each, with the size: the bytes read (chunked) or the announced length.
    let log = exporter.proc.output_when("every oversized answer", |log| {
        let lines = log.lines().filter(|line| line.contains("\"too_large\""));
        lines.count() as u64 >= 2 * OVERSIZED
    });
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| line.contains("\"too_large\""))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert_eq!(lines.len() as u64, 2 * OVERSIZED, "{log}");
    let errors: Vec<&str> = lines
        .iter()
        .map(|line| line["error"].as_str().expect("an error field"))
        .collect();
    let announced = format!(
        "v3_status: answer of at least 300000000 bytes is over \
         codearts.max_response_bytes ({CAP}); abandoned"
    );
    assert_eq!(
        errors.iter().filter(|e| **e == announced).count() as u64,
        OVERSIZED,
        "{errors:#?}"
    );
    // Chunked: abandoned within one chunk (the simulator's 64 KiB) of the cap.
    let read: Vec<u64> = errors
        .iter()
        .filter_map(|e| e.strip_prefix("v5_status: answer of at least "))
        .filter_map(|e| {
            e.strip_suffix(&format!(
                " bytes is over codearts.max_response_bytes ({CAP}); abandoned"
            ))
        })
        .map(|size| size.parse().expect("a size"))
        .collect();
    assert_eq!(read.len() as u64, OVERSIZED, "{errors:#?}");
    assert!(
        read.iter()
            .all(|&size| size > CAP && size <= CAP + 64 * 1024),
        "{read:?}"
    );
}
