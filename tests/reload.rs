//! Configuration reloads on a running exporter: a valid file takes effect without a restart and
//! without recounting runs; an invalid one is rejected and the running configuration stays.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::time::Duration;

use common::{
    Sample, get, get_json, parse_metrics, scrape_until, simulator_config, stable_scrape,
    start_exporter, start_simulator, value, wait_for_status_200,
};
use serde_json::Value;

fn config(sim_url: &str, targets: &[(&str, &str, &[&str])]) -> String {
    let mut text = simulator_config(sim_url);
    for (name, project, ids) in targets {
        let ids: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
        text.push_str(&format!(
            "[[targets]]\nname = \"{name}\"\nproject_id = \"{project}\"\npipeline_ids = [{}]\n\
             interval = \"1s\"\ngc_after = \"2s\"\n",
            ids.join(", ")
        ));
    }
    text
}

/// Runs of `pipeline` the exporter must have recorded, given the last run number it shows:
/// completed, no newer than that run, ended inside the backfill window (1 h) of its start.
fn expected_runs(truth: &Value, pipeline: &str, last_number: f64, window_start_ms: f64) -> f64 {
    truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .filter(|p| p["pipeline_id"] == pipeline)
        .flat_map(|p| p["runs"].as_array().expect("runs").iter())
        .filter(|r| r["run_number"].as_f64().expect("number") <= last_number)
        .filter(|r| {
            r["end_ms"]
                .as_f64()
                .is_some_and(|end| end >= window_start_ms)
        })
        .count() as f64
}

fn runs_counted(samples: &[Sample], pipeline: &str) -> f64 {
    ["success", "error", "aborted"]
        .iter()
        .filter_map(|result| {
            value(
                samples,
                "codearts_pipeline_runs_total",
                &[("pipeline_id", pipeline), ("result", result)],
            )
        })
        .sum()
}

fn has_pipeline(samples: &[Sample], pipeline: &str) -> bool {
    samples
        .iter()
        .any(|s| s.labels.get("pipeline_id").map(String::as_str) == Some(pipeline))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_takes_effect_without_recounting_and_a_broken_one_is_rejected() {
    let sim = start_simulator(6, 1, 21, 300.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let window_start_ms = truth["started_at_ms"].as_f64().expect("started_at_ms") - 3_600_000.0;
    let pipelines: Vec<String> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| p["pipeline_id"].as_str().expect("id").to_string())
        .collect();
    let project = truth["pipelines"][0]["project_id"]
        .as_str()
        .expect("project")
        .to_string();
    let [kept, dropped, added, other, ..] = pipelines.as_slice() else {
        panic!("six pipelines expected");
    };
    let before = config(&sim.url, &[("a", &project, &[kept, dropped])]);
    let exporter = start_exporter(&before, &[]);
    let metrics_url = format!("{}/metrics", exporter.url);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;

    // Some runs of `kept` recorded before the reload.
    let samples = scrape_until(&metrics_url, Duration::from_secs(60), "runs of kept", |s| {
        runs_counted(s, kept) >= 2.0
    })
    .await;
    let counted_before = runs_counted(&samples, kept);
    assert!(has_pipeline(&samples, dropped));

    // Target a keeps one pipeline, drops one and gains one; target b is new.
    let after = config(
        &sim.url,
        &[("a", &project, &[kept, added]), ("b", &project, &[other])],
    );
    std::fs::write(&exporter.config_path, after).expect("rewrite config");
    // Waited for together: a scrape reads family by family, so one that shows a pipeline of
    // target b may still show b's `target_up` from before its first poll ended.
    let samples = scrape_until(&metrics_url, Duration::from_secs(30), "the reload", |s| {
        value(
            s,
            "codearts_exporter_config_reload_total",
            &[("result", "success")],
        ) == Some(1.0)
            && has_pipeline(s, added)
            && has_pipeline(s, other)
            && !has_pipeline(s, dropped)
            && value(s, "codearts_exporter_target_up", &[("target", "b")]) == Some(1.0)
    })
    .await;
    assert!(
        runs_counted(&samples, kept) >= counted_before,
        "histograms restarted"
    );

    // A broken file is rejected; polling goes on with the running configuration.
    std::fs::write(&exporter.config_path, "[[targets]]\nproject_id = 12\n").expect("rewrite");
    let samples = scrape_until(
        &metrics_url,
        Duration::from_secs(30),
        "the rejection, counted and shown",
        |s| {
            value(
                s,
                "codearts_exporter_config_reload_total",
                &[("result", "failure")],
            ) == Some(1.0)
                && value(s, "codearts_exporter_config_last_reload_successful", &[]) == Some(0.0)
        },
    )
    .await;
    let polled_at = value(
        &samples,
        "codearts_exporter_last_successful_poll_timestamp_seconds",
        &[("target", "a")],
    )
    .expect("last poll");
    scrape_until(
        &metrics_url,
        Duration::from_secs(30),
        "a poll after the rejection",
        |s| {
            value(
                s,
                "codearts_exporter_last_successful_poll_timestamp_seconds",
                &[("target", "a")],
            )
            .is_some_and(|t| t > polled_at)
        },
    )
    .await;

    // Every run of `kept` counted exactly once across the reload.
    let samples = stable_scrape(&metrics_url).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let last_number = value(
        &samples,
        "codearts_pipeline_last_run_number",
        &[("pipeline_id", kept)],
    )
    .expect("last run number");
    assert_eq!(
        runs_counted(&samples, kept),
        expected_runs(&truth, kept, last_number, window_start_ms),
        "runs of the kept pipeline"
    );

    // SIGHUP reloads too (the file is valid again), and warns about the legacy status API as
    // the start does.
    let valid = config(&sim.url, &[("a", &project, &[kept, added])]) + "status_api = \"v3\"\n";
    std::fs::write(&exporter.config_path, valid).expect("rewrite config");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &exporter.proc.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    scrape_until(
        &metrics_url,
        Duration::from_secs(30),
        "the SIGHUP reload",
        |s| {
            value(
                s,
                "codearts_exporter_config_reload_total",
                &[("result", "success")],
            )
            .is_some_and(|n| n >= 2.0)
                && value(s, "codearts_exporter_config_last_reload_successful", &[]) == Some(1.0)
        },
    )
    .await;

    let (status, _) = get(&format!("{}/readyz", exporter.url)).await;
    assert_eq!(status, 200);
    exporter
        .proc
        .output_when("a reload on SIGHUP and a rejected one", |log| {
            log.contains("\"SIGHUP\"") && log.contains("configuration reload rejected")
        });
    exporter
        .proc
        .output_when("the reload's warning about the v3 status API", |log| {
            log.contains("targets[0].status_api = \\\"v3\\\": the legacy batch status API")
        });
    assert!(parse_metrics(&get(&metrics_url).await.1).len() > 10);
}

/// Reloads that arrive while polls are in flight (history reads held 3 s by the simulator) cut
/// those polls; the new pollers carry on, and every run is still counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_in_the_middle_of_polls_lose_and_recount_nothing() {
    let sim = start_simulator(8, 2, 23, 300.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let window_start_ms = truth["started_at_ms"].as_f64().expect("started_at_ms") - 3_600_000.0;
    let text = common::config(&sim.url, &common::targets_of(&truth), 1);
    let exporter = start_exporter(&text, &[]);
    let metrics_url = format!("{}/metrics", exporter.url);
    wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;

    let slow = serde_json::json!({"seed": 4, "faults": [
        {"kind": "latency", "api": "run_list", "latency_ms": 3000, "share": 0.5}
    ]});
    let (status, body) =
        common::request("POST", &format!("{}/_sim/faults", sim.url), Some(&slow)).await;
    assert_eq!(status, 200, "{body}");
    // A SIGHUP about every 1.5 s, while some history read is nearly always in flight. Counters
    // never go back: a reload hands every target's state and series to its new poller.
    let total = |s: &[Sample]| common::sum(s, "codearts_pipeline_runs_total", &[]);
    let mut counted = total(&parse_metrics(&get(&metrics_url).await.1));
    for reloads in 1..=6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = std::process::Command::new("kill")
            .args(["-HUP", &exporter.proc.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
        let samples = scrape_until(&metrics_url, Duration::from_secs(30), "the reload", |s| {
            value(
                s,
                "codearts_exporter_config_reload_total",
                &[("result", "success")],
            ) == Some(f64::from(reloads))
        })
        .await;
        assert!(total(&samples) >= counted, "runs_total went back");
        counted = total(&samples);
    }
    // Six reloads, and at least one found a poll or the backfill reading.
    exporter
        .proc
        .output_when("six SIGHUP reloads, one cutting reads", |log| {
            log.matches("\"reason\":\"SIGHUP\"").count() == 6
                && (log.contains("schedule stopped; the poll in flight is cut")
                    || log.contains("schedule stopped; the backfill reads in flight are cut"))
        });
    let (status, body) = common::request("DELETE", &format!("{}/_sim/faults", sim.url), None).await;
    assert_eq!(status, 200, "{body}");

    // Quick answers again: two more successful polls of each target, then the truth.
    let polls = |s: &[Sample], target: &str| {
        value(
            s,
            "codearts_exporter_poll_duration_seconds_count",
            &[("target", target)],
        )
        .unwrap_or(0.0)
    };
    let up = |s: &[Sample]| {
        ["t0", "t1"]
            .iter()
            .all(|t| value(s, "codearts_exporter_target_up", &[("target", t)]) == Some(1.0))
    };
    let now = scrape_until(&metrics_url, Duration::from_secs(60), "both targets up", up).await;
    let counted = [polls(&now, "t0"), polls(&now, "t1")];
    scrape_until(
        &metrics_url,
        Duration::from_secs(60),
        "two more polls",
        |s| up(s) && polls(s, "t0") >= counted[0] + 2.0 && polls(s, "t1") >= counted[1] + 2.0,
    )
    .await;
    let samples = stable_scrape(&metrics_url).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let compared = common::compare_with_truth(&samples, &truth, window_start_ms);
    assert!(compared > 0, "no run compared");
}
