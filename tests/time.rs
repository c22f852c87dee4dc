//! Time going wrong, against real processes: the exporter stopped (SIGSTOP) and continued, and
//! an API that hangs. Polling must resume at once after a pause, a hung poll must be cut at its
//! deadline and take the target down, and no run may be lost or counted twice on the way.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Exporter, Sample, Sim, compare_with_truth, get_json, request, simulator_config, stable_scrape,
    start_exporter, start_simulator, sum, targets_of, value,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One target per project of the simulator, each with `schedule` (a TOML line), named t0, t1…
fn config_with(sim: &Sim, truth: &Value, client: &str, schedules: &[&str]) -> String {
    let mut text = simulator_config(&sim.url).replace("timeout = \"5s\"", client);
    let targets = targets_of(truth);
    for (index, (project, schedule)) in targets
        .as_array()
        .expect("targets")
        .iter()
        .zip(schedules)
        .enumerate()
    {
        text.push_str(&format!(
            "[[targets]]\nname = \"t{index}\"\nproject_id = {}\npipeline_ids = {}\n{schedule}\n",
            project["project_id"], project["pipeline_ids"]
        ));
    }
    text
}

fn signal(exporter: &Exporter, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &exporter.proc.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

fn of_target(samples: &[Sample], name: &str, target: &str) -> f64 {
    value(samples, name, &[("target", target)]).unwrap_or(f64::NAN)
}

#[tokio::test]
async fn a_stopped_exporter_polls_again_as_soon_as_it_continues() {
    const PERIOD_S: f64 = 2.0;
    let sim = start_simulator(6, 2, 41, 120.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let text = config_with(
        &sim,
        &truth,
        "timeout = \"5s\"",
        &["interval = \"2s\"", "schedule = \"*/2 * * * * *\""],
    );
    let exporter = start_exporter(&text, &[]);
    let polls =
        |s: &[Sample], t: &str| of_target(s, "codearts_exporter_poll_duration_seconds_count", t);
    exporter
        .scrape_until(WAIT, "three polls of each target", |s| {
            polls(s, "t0") >= 3.0 && polls(s, "t1") >= 3.0
        })
        .await;

    // Stopped for five periods, as a frozen container or a paused VM would be.
    signal(&exporter, "STOP");
    std::thread::sleep(Duration::from_secs_f64(5.0 * PERIOD_S));
    let continued_s = now_s();
    signal(&exporter, "CONT");

    let started = |s: &[Sample], t: &str| {
        of_target(s, "codearts_exporter_last_poll_start_timestamp_seconds", t)
    };
    let samples = exporter
        .scrape_until(WAIT, "a poll of each target after SIGCONT", |s| {
            started(s, "t0") >= continued_s && started(s, "t1") >= continued_s
        })
        .await;
    // At once, or at worst by the next tick: far sooner than the stop lasted. A period more
    // for a loaded machine to schedule the continued process.
    for target in ["t0", "t1"] {
        let after = started(&samples, target) - continued_s;
        assert!(
            after <= 3.0 * PERIOD_S,
            "{target}: first poll {after:.1} s after SIGCONT"
        );
    }
    // And it goes on polling on its schedule.
    let resumed = [polls(&samples, "t0"), polls(&samples, "t1")];
    exporter
        .scrape_until(WAIT, "two more polls of each target", |s| {
            polls(s, "t0") >= resumed[0] + 2.0 && polls(s, "t1") >= resumed[1] + 2.0
        })
        .await;

    // No run lost or counted twice by the pause, the cut polls or the resumed ones.
    let samples = stable_scrape(&format!("{}/metrics", exporter.url)).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let checked = compare_with_truth(&samples, &truth, started_ms - 3_600_000.0);
    assert!(checked > 0, "no run compared");
}

#[tokio::test]
async fn a_hung_api_takes_the_target_down_within_its_poll_timeout() {
    // The client gives up on a request after 1 s; a poll may take 2 s. The defaults of retries
    // (3, with backoff) would keep a poll going for far longer than that.
    const INTERVAL_S: f64 = 1.0;
    const POLL_TIMEOUT_S: f64 = 2.0;
    let sim = start_simulator(6, 2, 43, 120.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let text = config_with(
        &sim,
        &truth,
        "timeout = \"1s\"",
        &[
            "interval = \"1s\"\npoll_timeout = \"2s\"",
            "interval = \"1s\"\npoll_timeout = \"2s\"",
        ],
    );
    let exporter = start_exporter(&text, &[]);
    let up = |s: &[Sample], t: &str| of_target(s, "codearts_exporter_target_up", t);
    let before = exporter
        .scrape_until(WAIT, "both targets up", |s| {
            up(s, "t0") == 1.0 && up(s, "t1") == 1.0
        })
        .await;
    let statuses = |s: &[Sample]| -> Vec<Sample> {
        s.iter()
            .filter(|s| s.name == "codearts_pipeline_status" && s.value == 1.0)
            .cloned()
            .collect()
    };
    assert_eq!(statuses(&before).len(), 6, "every pipeline has a state");

    // Every request hangs for a minute.
    let faults = json!({"faults": [{"kind": "timeout", "latency_ms": 60_000}]});
    let (status, body) = request("POST", &format!("{}/_sim/faults", sim.url), Some(&faults)).await;
    assert_eq!(status, 200, "{body}");
    let hung = Instant::now();
    let down = exporter
        .scrape_until(WAIT, "both targets down", |s| {
            up(s, "t0") == 0.0 && up(s, "t1") == 0.0
        })
        .await;
    let took = hung.elapsed().as_secs_f64();
    // A poll begun before the hang may still succeed; the next begins within the interval and
    // is cut at its deadline. Retries alone would take over 5 s (three more 1 s time-outs and
    // their backoff); 1.5 s are left for scheduling and scrapes on a loaded machine.
    assert!(
        took <= INTERVAL_S + POLL_TIMEOUT_S + 1.5,
        "target_up went to 0 {took:.1} s after the API hung"
    );
    // A cut is counted before `target_up` goes to 0, and `scrape_until` returns a scrape that
    // shows every write made before those it waited for.
    for target in ["t0", "t1"] {
        assert!(
            of_target(&down, "codearts_exporter_polls_timed_out_total", target) >= 1.0,
            "{target}: no poll counted as timed out"
        );
    }
    // The last good values stay.
    assert_eq!(statuses(&down).len(), 6, "every pipeline keeps its state");

    let (status, body) = request("DELETE", &format!("{}/_sim/faults", sim.url), None).await;
    assert_eq!(status, 200, "{body}");
    exporter
        .scrape_until(WAIT, "both targets up again", |s| {
            up(s, "t0") == 1.0 && up(s, "t1") == 1.0
        })
        .await;
}

#[tokio::test]
async fn polls_cut_short_lose_no_run_and_count_none_twice() {
    let sim = start_simulator(8, 2, 47, 300.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let started_ms = truth["started_at_ms"].as_f64().expect("started_at_ms");
    let schedule = "interval = \"1s\"\npoll_timeout = \"2s\"";
    let text = config_with(&sim, &truth, "timeout = \"2s\"", &[schedule, schedule]);
    let exporter = start_exporter(&text, &[]);
    let up = |s: &[Sample], t: &str| of_target(s, "codearts_exporter_target_up", t);
    exporter
        .scrape_until(WAIT, "both targets up", |s| {
            up(s, "t0") == 1.0 && up(s, "t1") == 1.0
        })
        .await;
    // The backfill's reads have no deadline to cut; the polls make every read once it is done.
    exporter
        .scrape_until(WAIT, "the backfill to end", |s| {
            sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0
        })
        .await;

    // Half the history reads answer after 3 s, past the poll's deadline: polls are cut
    // between reads, some histories recorded and some not.
    let faults = json!({"seed": 3, "faults": [
        {"kind": "latency", "api": "run_list", "latency_ms": 3000, "share": 0.5}
    ]});
    let (status, body) = request("POST", &format!("{}/_sim/faults", sim.url), Some(&faults)).await;
    assert_eq!(status, 200, "{body}");
    let cut = |s: &[Sample]| {
        of_target(s, "codearts_exporter_polls_timed_out_total", "t0")
            + of_target(s, "codearts_exporter_polls_timed_out_total", "t1")
    };
    exporter
        // About 10 s: only polls that read a history with a slow answer are cut.
        .scrape_until(2 * WAIT, "five polls cut short", |s| cut(s) >= 5.0)
        .await;
    let (status, body) = request("DELETE", &format!("{}/_sim/faults", sim.url), None).await;
    assert_eq!(status, 200, "{body}");

    // Once the answers are quick again, every run is in the histograms exactly once.
    let polls =
        |s: &[Sample], t: &str| of_target(s, "codearts_exporter_poll_duration_seconds_count", t);
    let now = exporter
        .scrape_until(WAIT, "both targets up again", |s| {
            up(s, "t0") == 1.0 && up(s, "t1") == 1.0
        })
        .await;
    let counted = [polls(&now, "t0"), polls(&now, "t1")];
    exporter
        .scrape_until(WAIT, "two more successful polls", |s| {
            polls(s, "t0") >= counted[0] + 2.0
                && polls(s, "t1") >= counted[1] + 2.0
                && up(s, "t0") == 1.0
                && up(s, "t1") == 1.0
        })
        .await;
    let samples = stable_scrape(&format!("{}/metrics", exporter.url)).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let checked = compare_with_truth(&samples, &truth, started_ms - 3_600_000.0);
    assert!(checked > 0, "no run compared");
}
