//! What Prometheus reads of the exporter's counters across restarts, and which target counts a
//! pipeline two targets reach. Prometheus reads a counter sample lower than the one before as a
//! reset and takes the new value whole (so a count taken back by a restart is counted twice),
//! and never counts what a series' first sample already holds.
//!
//! 1. A simulator completes about a run a second over four pipelines while an exporter
//!    *process* (real signals) with a state file is SIGTERMed during a poll, started again on
//!    the same port, SIGKILLed during a later poll whose history reads the simulator holds, and
//!    started again; a real Prometheus scrapes it every second throughout. Prometheus' raw
//!    samples, summed as `increase()` sums them, must then count every run once: no reset, none
//!    twice, none lost.
//! 2. The same scenario without a state file is not exact: the check of 1 finds problems, so
//!    it can fail.
//! 3. A pipeline one target lists and another discovers is counted once, by the listing
//!    target. (Two targets that both list it are refused at load:
//!    `config_errors.rs`, `a_pipeline_listed_by_two_targets_names_both_and_the_pipeline`.)
//!
//! Needs `prometheus` and `promtool` on PATH (`scripts/install-prometheus`).

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::prometheus::{Prometheus, require_tool};
use common::{
    Exporter, Sample, Sim, config, get_json, request, scrape, select, simulator_config,
    stable_scrape, start_exporter, start_simulator, targets_of, value,
};
use serde_json::{Value, json};

/// The targets `common::config` makes of two projects: t0 polls through v5, t1 through v3.
const TARGETS: [&str; 2] = ["t0", "t1"];
/// About one run completes a second over the four pipelines at this speed.
const SPEED: f64 = 750.0;
/// How long the simulator holds each history read while a kill is to land in one.
const SLOW_HISTORY_MS: u64 = 2000;
/// Long enough for runs to complete while the exporter is away (more than a poll interval).
const DOWNTIME: Duration = Duration::from_secs(8);
/// How long the exporter runs before the first kill and after the last start.
const RUNNING: Duration = Duration::from_secs(10);
/// Every wait for a condition ends here at the latest (a loaded machine is slow, not stuck).
const PATIENCE: Duration = Duration::from_secs(60);
/// The range of the raw-sample queries: longer than the whole test.
const RANGE: &str = "15m";
/// The counters whose raw samples are summed.
const COUNTERS: [&str; 2] = [
    "codearts_pipeline_runs_total",
    "codearts_pipeline_run_duration_seconds_count",
];

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after [`PATIENCE`].
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port below the kernel's ephemeral range: while the exporter is down, no
/// connection or `bind(0)` of another process is given it, so the exporter gets it back.
fn port_kept_while_down() -> u16 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_from: u16 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .unwrap_or(32768);
    let below = ephemeral_from.saturating_sub(10_000).max(1024);
    let span = ephemeral_from - below;
    // Tests of this binary run side by side: each call starts from another place.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let offset = ((std::process::id() + call * 997) % u32::from(span)) as u16;
    (0..span)
        .map(|step| below + (offset + step) % span)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// The config of `common::config` (interval 2 s) on `127.0.0.1:port`, with a 20 s backfill
/// window and the state file `state` if any.
fn exporter_config(sim: &Sim, truth: &Value, port: u16, state: Option<&Path>) -> String {
    let mut text = config(&sim.url, &targets_of(truth), 2)
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "chunk_size = 3\n",
            "chunk_size = 3\nbackfill_window = \"20s\"\n",
        );
    if let Some(path) = state {
        text.push_str(&format!("[state]\npath = \"{}\"\n", path.display()));
    }
    text
}

fn prometheus_config(port: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: codearts-exporter\n    static_configs:\n      \
         - targets: [\"127.0.0.1:{port}\"]\n"
    )
}

async fn set_faults(sim: &Sim, faults: Option<Value>) {
    let url = format!("{}/_sim/faults", sim.url);
    let (status, body) = match &faults {
        Some(faults) => request("POST", &url, Some(faults)).await,
        None => request("DELETE", &url, None).await,
    };
    assert_eq!(status, 200, "{body}");
}

/// Each target's last poll start, when that poll has not ended (no failure is injected while
/// this is asked, so a poll that ended has succeeded).
fn polls_in_flight(samples: &[Sample]) -> BTreeSet<(String, u64)> {
    TARGETS
        .iter()
        .filter_map(|target| {
            let labels = [("target", *target)];
            let started = value(
                samples,
                "codearts_exporter_last_poll_start_timestamp_seconds",
                &labels,
            )?;
            let ended = value(
                samples,
                "codearts_exporter_last_successful_poll_timestamp_seconds",
                &labels,
            )
            .unwrap_or(0.0);
            (started > ended).then(|| (target.to_string(), started.to_bits()))
        })
        .collect()
}

/// Returns once a poll has been in flight for 300 ms: with the history reads held
/// [`SLOW_HISTORY_MS`], it is then waiting for them, and goes on for a while yet.
async fn wait_for_a_slow_poll(exporter: &Exporter) {
    wait_for("a poll in flight for 300 ms", || async {
        let first = polls_in_flight(&scrape(&exporter.url).await);
        if first.is_empty() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = polls_in_flight(&scrape(&exporter.url).await);
        first.intersection(&second).next().map(|_| ())
    })
    .await
}

/// Returns once every target has succeeded a poll that started after `after_s` (and the
/// backfill is done): that poll read every run that completed before `after_s`.
async fn wait_for_polls_after(exporter: &Exporter, after_s: f64) -> Vec<Sample> {
    wait_for("a successful poll of every target", || async {
        let samples = scrape(&exporter.url).await;
        let done = TARGETS.iter().all(|target| {
            let labels = [("target", *target)];
            let started = value(
                &samples,
                "codearts_exporter_last_poll_start_timestamp_seconds",
                &labels,
            );
            let succeeded = value(
                &samples,
                "codearts_exporter_last_successful_poll_timestamp_seconds",
                &labels,
            );
            matches!((started, succeeded), (Some(s), Some(ok)) if s > after_s && ok >= s)
        }) && common::sum(
            &samples,
            "codearts_exporter_backfill_pending_pipelines",
            &[],
        ) == 0.0;
        done.then_some(samples)
    })
    .await
}

/// Returns once Prometheus has scraped the exporter successfully at a time after `after_s`.
async fn wait_for_a_scrape_after(prometheus: &Prometheus, after_s: f64) {
    wait_for("Prometheus to scrape the exporter", || async {
        let data = prometheus.query("up").await;
        let sample = &data["result"][0]["value"];
        let at = sample[0].as_f64()?;
        let up = sample[1].as_str()?;
        (at > after_s && up == "1").then_some(())
    })
    .await
}

/// Completed runs in the truth that ended in `[from_ms, to_ms)`.
fn runs_ended_between(truth: &Value, from_ms: f64, to_ms: f64) -> usize {
    truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["runs"].as_array().expect("runs"))
        .filter(|r| {
            let end = r["end_ms"].as_f64().unwrap_or(0.0);
            end >= from_ms && end < to_ms
        })
        .count()
}

/// The latest completed run number of each pipeline in the truth.
fn latest_numbers(truth: &Value) -> BTreeMap<String, f64> {
    truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| {
            let latest = p["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .filter_map(|r| r["run_number"].as_f64())
                .fold(0.0, f64::max);
            (p["pipeline_id"].as_str().expect("id").to_string(), latest)
        })
        .collect()
}

/// One counter series as Prometheus stored it: (pipeline id, result) → `[timestamp, value]`s.
type Stored = BTreeMap<(String, String), Vec<(f64, f64)>>;

/// Every raw sample of `metric` Prometheus holds (an instant query of a range vector).
async fn raw_samples(prometheus: &Prometheus, metric: &str) -> Stored {
    let data = prometheus.query(&format!("{metric}[{RANGE}]")).await;
    assert_eq!(data["resultType"], "matrix", "{data}");
    let mut stored = Stored::new();
    for series in data["result"].as_array().expect("result") {
        let key = (
            series["metric"]["pipeline_id"]
                .as_str()
                .expect("pipeline_id")
                .to_string(),
            series["metric"]["result"]
                .as_str()
                .expect("result")
                .to_string(),
        );
        let points = series["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|point| {
                let at = point[0].as_f64().expect("timestamp");
                let value: f64 = point[1].as_str().expect("value").parse().expect("number");
                (at, value)
            })
            .collect();
        assert!(
            stored.insert(key.clone(), points).is_none(),
            "{metric}: two series for {key:?}"
        );
    }
    stored
}

/// `resets(metric[RANGE])` per (pipeline id, result).
async fn prometheus_resets(
    prometheus: &Prometheus,
    metric: &str,
) -> BTreeMap<(String, String), f64> {
    let data = prometheus
        .query(&format!("resets({metric}[{RANGE}])"))
        .await;
    data["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|series| {
            let key = (
                series["metric"]["pipeline_id"]
                    .as_str()
                    .expect("id")
                    .to_string(),
                series["metric"]["result"]
                    .as_str()
                    .expect("result")
                    .to_string(),
            );
            let resets = series["value"][1]
                .as_str()
                .expect("value")
                .parse()
                .expect("number");
            (key, resets)
        })
        .collect()
}

/// The increase between the first and the last sample as `increase()` counts it without
/// extrapolation: each rise whole, and after a drop (a reset) the new value whole.
fn summed_increase(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|pair| {
            let (before, after) = (pair[0].1, pair[1].1);
            if after >= before {
                after - before
            } else {
                after
            }
        })
        .sum()
}

/// What the end of a scenario compares: the truth, and what the frozen exporter shows.
struct Ending {
    truth: Value,
    /// When the simulator started, epoch ms: every live run ended after it.
    sim_started_ms: f64,
    /// When the status reads were made to fail (nothing is recorded after it), epoch ms.
    frozen_ms: f64,
    /// The exporter's `/metrics` once frozen.
    frozen: Vec<Sample>,
    /// The latest completed run of each pipeline just before the last successful polls.
    latest_before: BTreeMap<String, f64>,
}

/// Compares what Prometheus stored of [`COUNTERS`] with the truth; returns the problems found
/// (none when every run is counted once) and prints the numbers.
async fn check_counts(prometheus: &Prometheus, ending: &Ending) -> Vec<String> {
    let mut problems = Vec::new();
    // The last run each pipeline recorded: the frozen exporter read everything up to it.
    let last_recorded: BTreeMap<String, f64> = ending
        .latest_before
        .keys()
        .map(|id| {
            let number = value(
                &ending.frozen,
                "codearts_pipeline_last_run_number",
                &[("pipeline_id", id)],
            )
            .unwrap_or(0.0);
            (id.clone(), number)
        })
        .collect();
    for (id, latest) in &ending.latest_before {
        if last_recorded[id] < *latest {
            problems.push(format!(
                "{id}: run {latest} completed before the last polls, the exporter recorded up \
                 to {} only",
                last_recorded[id]
            ));
        }
        let missed = value(
            &ending.frozen,
            "codearts_pipeline_runs_missed_total",
            &[("pipeline_id", id)],
        );
        if missed.is_some_and(|missed| missed != 0.0) {
            problems.push(format!("{id}: runs_missed_total is {missed:?}"));
        }
    }
    // The runs the exporter counted by the end, per (pipeline, result): every live run (the
    // simulator's history ended hours before it started, out of the 20 s window) up to the
    // last one recorded.
    let mut truth_counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    for pipeline in ending.truth["pipelines"].as_array().expect("pipelines") {
        let id = pipeline["pipeline_id"].as_str().expect("id");
        for run in pipeline["runs"].as_array().expect("runs") {
            let end = run["end_ms"].as_f64().expect("end");
            let number = run["run_number"].as_f64().expect("number");
            if end >= ending.sim_started_ms && end < ending.frozen_ms && number <= last_recorded[id]
            {
                let result = run["result"].as_str().expect("result").to_string();
                *truth_counts.entry((id.to_string(), result)).or_default() += 1.0;
            }
        }
    }

    for metric in COUNTERS {
        let stored = raw_samples(prometheus, metric).await;
        let resets = prometheus_resets(prometheus, metric).await;
        eprintln!(
            "{metric}: per (pipeline, result): first sample (s after the simulator's start), \
             baseline, summed increase, last, truth counted, truth after the baseline, resets"
        );
        let keys: BTreeSet<&(String, String)> = stored.keys().chain(truth_counts.keys()).collect();
        let (mut total_increase, mut total_expected, mut total_resets, mut hidden) =
            (0.0, 0.0, 0.0, 0.0);
        for key in keys {
            let points = stored.get(key).map_or(&[][..], Vec::as_slice);
            let truth = truth_counts.get(key).copied().unwrap_or(0.0);
            // The baseline is the series' first sample: `increase()` never counts what it
            // already holds. Most series start with the first scrape; one first seen later
            // (a result a pipeline had not had yet) first appears at 1 or more, and those
            // runs are not Prometheus' to count. The comparison is by count, not by end time:
            // "runs that ended after the first sample" is not exact, since a run that ended
            // just before a scrape may be recorded only by the next poll, and the exporter's
            // first backfill holds, at its first sample, runs that ended before it started.
            // The runs counted after the baseline are the truth's runs counted by the end less
            // the baseline's: a counter that counted one twice or lost one, or went back at a
            // restart (read as a reset, and counted again), gives another sum.
            let (first_at, baseline) = points.first().copied().unwrap_or((0.0, 0.0));
            let last = points.last().map_or(0.0, |point| point.1);
            let increase = summed_increase(points);
            let expected = truth - baseline;
            let own_resets = points.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64;
            let reset_count = resets.get(key).copied().unwrap_or(0.0);
            eprintln!(
                "  {} {:7}: {:6.1} {:3} {:4} {:4} {:4} {:4} {}",
                &key.0[..8],
                key.1,
                first_at - ending.sim_started_ms / 1000.0,
                baseline,
                increase,
                last,
                truth,
                expected,
                reset_count
            );
            total_increase += increase;
            total_expected += expected;
            total_resets += reset_count;
            hidden += baseline;
            if increase != expected {
                problems.push(format!(
                    "{metric} {key:?}: Prometheus counted {increase} after its baseline of \
                     {baseline}, the truth has {expected} runs after it ({truth} in all; \
                     samples {points:?})"
                ));
            }
            if reset_count != 0.0 || own_resets != 0.0 {
                problems.push(format!(
                    "{metric} {key:?}: {reset_count} resets (by resets()), {own_resets} in the \
                     raw samples {points:?}"
                ));
            }
            let shown = value(
                &ending.frozen,
                metric,
                &[("pipeline_id", &key.0), ("result", &key.1)],
            )
            .unwrap_or(0.0);
            if last != shown {
                problems.push(format!(
                    "{metric} {key:?}: Prometheus' last sample is {last}, the frozen exporter \
                     shows {shown}"
                ));
            }
        }
        eprintln!(
            "{metric}: truth after the baselines {total_expected}, summed increase \
             {total_increase}, resets {total_resets}, held by the baselines {hidden}"
        );
    }
    problems
}

/// The scenario of 1 and 2 (see the module doc), with or without a state file; returns the
/// problems [`check_counts`] finds.
async fn restart_scenario(keep_state: bool) -> Vec<String> {
    require_tool("prometheus");
    require_tool("promtool");
    let began = Instant::now();
    let phase = |name: &str| eprintln!("[{:5.1} s] {name}", began.elapsed().as_secs_f64());

    let sim = start_simulator(4, 2, 7, SPEED);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let sim_started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.db");
    let port = port_kept_while_down();
    let text = exporter_config(&sim, &truth, port, keep_state.then_some(state.as_path()));
    let mut prometheus = Prometheus::start(dir.path(), &prometheus_config(port));
    let mut exporter = start_exporter(&text, &[]);
    prometheus.wait_ready().await;
    phase("simulator, exporter and Prometheus started");

    // Polled and scraped for a while.
    let first_start_s = now_s();
    tokio::time::sleep(RUNNING).await;
    wait_for_polls_after(&exporter, first_start_s).await;
    wait_for_a_scrape_after(&prometheus, now_s()).await;

    // SIGTERM while a poll waits for its history reads.
    set_faults(
        &sim,
        Some(json!({"faults": [
            {"kind": "latency", "api": "run_list", "latency_ms": SLOW_HISTORY_MS}
        ]})),
    )
    .await;
    wait_for_a_slow_poll(&exporter).await;
    let status = exporter.proc.terminate();
    let down_ms = now_s() * 1000.0;
    assert!(status.success(), "SIGTERM: {status}");
    exporter.proc.output_when("that SIGTERM cut a poll", |log| {
        log.contains("schedule stopped; the poll in flight is cut")
    });
    phase("SIGTERM during a poll");
    tokio::time::sleep(DOWNTIME).await;

    // Started again with the history reads still slow. Its first polls record what completed
    // meanwhile and Prometheus scrapes it: a restart that took any of that back would show as
    // a reset. Then SIGKILLed while a later poll waits for its history reads.
    let up_ms = now_s() * 1000.0;
    let mut exporter = start_exporter(&text, &[]);
    phase("started again");
    let during = get_json(&format!("{}/_sim/truth", sim.url)).await;
    assert!(
        runs_ended_between(&during, down_ms, up_ms) > 0,
        "no run completed while the exporter was down"
    );
    wait_for_polls_after(&exporter, up_ms / 1000.0).await;
    wait_for_a_scrape_after(&prometheus, now_s()).await;
    wait_for_a_slow_poll(&exporter).await;
    let status = exporter.proc.kill();
    let down_ms = now_s() * 1000.0;
    assert!(!status.success(), "SIGKILL: {status}");
    phase("SIGKILL during a poll");
    tokio::time::sleep(DOWNTIME).await;

    // Started again with quick answers; runs a while, then every target polls once more and
    // the status reads fail from then on: nothing more is recorded, Prometheus scrapes the
    // frozen counts a few times.
    set_faults(&sim, None).await;
    let up_ms = now_s() * 1000.0;
    let exporter = start_exporter(&text, &[]);
    phase("started again");
    let during = get_json(&format!("{}/_sim/truth", sim.url)).await;
    assert!(
        runs_ended_between(&during, down_ms, up_ms) > 0,
        "no run completed while the exporter was down"
    );
    tokio::time::sleep(RUNNING).await;
    let before = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let latest_before = latest_numbers(&before);
    wait_for_polls_after(
        &exporter,
        before["now_ms"].as_f64().expect("now_ms") / 1000.0,
    )
    .await;
    set_faults(
        &sim,
        Some(json!({"faults": [
            {"kind": "error", "api": "v5_status"},
            {"kind": "error", "api": "v3_status"}
        ]})),
    )
    .await;
    // Every status read from here on fails: every run recorded ended before this.
    let frozen_ms = now_s() * 1000.0;
    let frozen = wait_for("a failed poll of every target", || async {
        let samples = scrape(&exporter.url).await;
        TARGETS
            .iter()
            .all(|target| {
                let labels = [("target", *target)];
                value(&samples, "codearts_exporter_target_up", &labels) == Some(0.0)
                    && value(
                        &samples,
                        "codearts_exporter_last_poll_start_timestamp_seconds",
                        &labels,
                    )
                    .is_some_and(|started| started * 1000.0 > frozen_ms)
            })
            .then_some(samples)
    })
    .await;
    wait_for_a_scrape_after(&prometheus, now_s() + 3.0).await;
    assert_eq!(
        common::pipeline_samples(&scrape(&exporter.url).await),
        common::pipeline_samples(&frozen),
        "the counts moved after the status reads failed"
    );
    phase("frozen and scraped");

    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let ending = Ending {
        truth,
        sim_started_ms,
        frozen_ms,
        frozen,
        latest_before,
    };
    let problems = check_counts(&prometheus, &ending).await;
    phase("compared");
    drop(exporter);
    drop(prometheus);
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_file_prometheus_counts_every_run_once_across_sigterm_and_sigkill() {
    let problems = restart_scenario(true).await;
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_file_prometheus_counts_runs_twice_across_restarts() {
    let problems = restart_scenario(false).await;
    assert!(
        !problems.is_empty(),
        "without a state file the restarts went unnoticed: the check cannot fail"
    );
    eprintln!(
        "{} problems, as expected:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The runs of `pipeline` in the truth that ended after `since_ms`, up to run `last`, by
/// result.
fn truth_by_result(
    truth: &Value,
    pipeline: &str,
    since_ms: f64,
    last: f64,
) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    let runs = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .find(|p| p["pipeline_id"] == pipeline)
        .and_then(|p| p["runs"].as_array())
        .expect("the pipeline's runs");
    for run in runs {
        if run["end_ms"].as_f64().expect("end") >= since_ms
            && run["run_number"].as_f64().expect("number") <= last
        {
            *counts
                .entry(run["result"].as_str().expect("result").to_string())
                .or_default() += 1.0;
        }
    }
    counts
}

/// `codearts_pipeline_runs_total` of `pipeline`, by result.
fn counted_by_result(samples: &[Sample], pipeline: &str) -> BTreeMap<String, f64> {
    select(
        samples,
        "codearts_pipeline_runs_total",
        &[("pipeline_id", pipeline)],
    )
    .iter()
    // Results with no run yet show 0 (the series exist before their first run).
    .filter(|s| s.value > 0.0)
    .map(|s| (s.labels["result"].clone(), s.value))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_one_target_lists_and_another_discovers_is_counted_once() {
    let sim = start_simulator(3, 1, 11, SPEED);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let sim_started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let project = truth["pipelines"][0]["project_id"]
        .as_str()
        .expect("project")
        .to_string();
    let ids: Vec<String> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| p["pipeline_id"].as_str().expect("id").to_string())
        .collect();
    let listed = ids[0].clone();
    // The default backfill window (1 h) holds every live run and none of the history.
    let text = format!(
        "{}[[targets]]\nname = \"a\"\nproject_id = \"{project}\"\npipeline_ids = [\"{listed}\"]\n\
         interval = \"2s\"\n\
         [[targets]]\nname = \"b\"\nproject_id = \"{project}\"\ndiscover = true\ninterval = \"2s\"\n",
        simulator_config(&sim.url)
    );
    let exporter = start_exporter(&text, &[]);
    let metrics_url = format!("{}/metrics", exporter.url);

    // Some runs of the listed pipeline recorded, and several polls of the discovering target.
    exporter
        .scrape_until(PATIENCE, "runs of the listed pipeline", |samples| {
            counted_by_result(samples, &listed).values().sum::<f64>() >= 4.0
                && value(
                    samples,
                    "codearts_exporter_poll_duration_seconds_count",
                    &[("target", "b")],
                )
                .is_some_and(|polls| polls >= 3.0)
        })
        .await;
    let samples = stable_scrape(&metrics_url).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    // Every pipeline counted once: the listed one by a, the others by b (+1 a run, not +2).
    for id in &ids {
        let last = value(
            &samples,
            "codearts_pipeline_last_run_number",
            &[("pipeline_id", id)],
        )
        .unwrap_or_else(|| panic!("{id}: no last run"));
        let counted = counted_by_result(&samples, id);
        let expected = truth_by_result(&truth, id, sim_started_ms, last);
        eprintln!("{id}: counted {counted:?}, truth {expected:?}");
        assert_eq!(
            counted, expected,
            "{id}: runs_total by result up to run {last}"
        );
    }
    // b leaves the listed pipeline to a, and says so once.
    let output = exporter.proc.output();
    let left: Vec<&str> = output
        .lines()
        .filter(|line| {
            line.contains("pipeline polled by another target of the project; this one leaves it")
        })
        .collect();
    assert_eq!(left.len(), 1, "one line for the listed pipeline: {left:#?}");
    assert!(
        left[0].contains(&format!("\"pipeline_id\":\"{listed}\""))
            && left[0].contains("\"target_name\":\"b\""),
        "{}",
        left[0]
    );
}
