//! Coverage against the simulator over HTTP: discovery and the end of pipelines, restarts,
//! jobs, queue time, run labels, and what a poll costs in API requests.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use codearts_exporter::simulator::SimOptions;
use common::harness::{now_ms, start_exporter, start_simulator, start_simulator_with};
use common::{
    Sample, get_json, polled, scrape_until, select, send_json, simulator_config, stable_scrape,
    sum, value, wait_for_status_200,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A TOML string literal.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("json string")
}

fn pipelines(truth: &Value) -> &Vec<Value> {
    truth["pipelines"].as_array().expect("pipelines")
}

/// The values of `name` for pipeline `id`, by the values of three of their labels.
fn by_labels(
    samples: &[Sample],
    name: &str,
    id: &str,
    keys: [&str; 3],
) -> BTreeMap<(String, String, String), f64> {
    select(samples, name, &[("pipeline_id", id)])
        .iter()
        .map(|s| {
            let label = |key: &str| s.labels[key].clone();
            ((label(keys[0]), label(keys[1]), label(keys[2])), s.value)
        })
        .collect()
}

fn counter_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    select(samples, name, labels).iter().map(|s| s.value).sum()
}

/// Discovery finds pipelines created while it runs and forgets deleted ones; include,
/// exclude and tags filter; configured ids are polled whatever the filters say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_created_and_deleted_pipelines_through_its_filters() {
    let sim = start_simulator(8, 2, 21, 60.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let by_project = |project: &str| -> Vec<(String, String)> {
        pipelines(&truth)
            .iter()
            .filter(|p| p["project_id"] == project)
            .map(|p| {
                (
                    p["pipeline_id"].as_str().expect("id").to_string(),
                    p["name"].as_str().expect("name").to_string(),
                )
            })
            .collect()
    };
    let project_a = pipelines(&truth)[0]["project_id"]
        .as_str()
        .expect("project")
        .to_string();
    let project_b = pipelines(&truth)
        .iter()
        .map(|p| p["project_id"].as_str().expect("project"))
        .find(|p| *p != project_a)
        .expect("second project")
        .to_string();
    let a = by_project(&project_a);
    assert_eq!(a.len(), 4);
    // a[0]: configured but excluded; a[1]: not included; a[2], a[3]: discovered.
    let include = format!(
        "^(?:{}|{}|{}|新的.*)$",
        regex::escape(&a[0].1),
        regex::escape(&a[2].1),
        regex::escape(&a[3].1)
    );
    let exclude = format!("^{}$|verboten", regex::escape(&a[0].1));

    // Project B: only pipelines tagged "e2e-tag", of which there is one.
    let sim_pipelines = format!("{}/_sim/pipelines", sim.url);
    let (status, tagged) = send_json(
        "POST",
        &sim_pipelines,
        &json!({"name": "Tagged 流水线", "project_id": project_b, "tags": ["e2e-tag", "x"]}),
    )
    .await;
    assert_eq!(status, 200, "{tagged}");
    let tagged_id = tagged["pipeline_id"].as_str().expect("id").to_string();
    let (status, _) = send_json(
        "POST",
        &sim_pipelines,
        &json!({"name": "Untagged", "project_id": project_b, "tags": ["x"]}),
    )
    .await;
    assert_eq!(status, 200);

    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[[targets]]\nname = \"a\"\nproject_id = \"{project_a}\"\npipeline_ids = [\"{}\"]\n\
         interval = \"1s\"\ndiscover = true\ninclude = {}\nexclude = {}\n\
         discover_every = \"1s\"\ngc_after = \"1s\"\n\
         [[targets]]\nname = \"b\"\nproject_id = \"{project_b}\"\ninterval = \"1s\"\n\
         discover = true\ntags = [\"e2e-tag\"]\ndiscover_every = \"1s\"\ngc_after = \"1s\"\n",
        a[0].0,
        quoted(&include),
        quoted(&exclude)
    ));
    let exporter = start_exporter(&config).await;
    let metrics_url = format!("{}/metrics", exporter.url);
    wait_for_status_200(&format!("{}/readyz", exporter.url), WAIT).await;

    let expected_a: BTreeSet<String> = [&a[0].0, &a[2].0, &a[3].0].into_iter().cloned().collect();
    let samples = scrape_until(&metrics_url, WAIT, "the first discovery", |s| {
        polled(s, &project_a) == expected_a && polled(s, &project_b).len() == 1
    })
    .await;
    assert_eq!(polled(&samples, &project_b), BTreeSet::from([tagged_id]));
    // Names come from the pipeline list (no run-detail request needed for them).
    for (id, name) in [&a[0], &a[2], &a[3]] {
        let states = select(&samples, "codearts_pipeline_status", &[("pipeline_id", id)]);
        assert_eq!(states.len(), 6, "{name}: one series per state, polled once");
        assert!(states.iter().all(|s| s.labels["pipeline_name"] == *name));
    }
    assert!(
        value(
            &samples,
            "codearts_exporter_api_requests_total",
            &[("api", "pipeline_list"), ("code", "200")]
        )
        .expect("pipeline list requests")
            >= 2.0
    );

    // A pipeline created in CodeArts is polled after the next discovery; one the filters
    // reject never is.
    let (_, added) = send_json(
        "POST",
        &sim_pipelines,
        &json!({"name": "新的 pipeline", "project_id": project_a}),
    )
    .await;
    let added_id = added["pipeline_id"].as_str().expect("id").to_string();
    let (_, rejected) = send_json(
        "POST",
        &sim_pipelines,
        &json!({"name": "新的 verboten pipeline", "project_id": project_a}),
    )
    .await;
    let rejected_id = rejected["pipeline_id"].as_str().expect("id").to_string();
    let samples = scrape_until(&metrics_url, WAIT, "the created pipeline", |s| {
        polled(s, &project_a).contains(&added_id)
    })
    .await;
    assert_eq!(
        value(
            &samples,
            "codearts_pipeline_status",
            &[("pipeline_id", &added_id), ("status", "waiting")]
        )
        .map(|_| ()),
        Some(()),
        "the new pipeline has a state"
    );
    assert!(
        select(
            &samples,
            "codearts_pipeline_status",
            &[("pipeline_id", &added_id)]
        )
        .iter()
        .all(|s| s.labels["pipeline_name"] == "新的 pipeline")
    );

    // A deleted pipeline loses every series after gc_after.
    let (status, _) = send_json(
        "DELETE",
        &format!("{sim_pipelines}/{}", a[2].0),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    let deleted = a[2].0.clone();
    let samples = scrape_until(&metrics_url, WAIT, "the deleted pipeline to go", |s| {
        s.iter()
            .all(|sample| sample.labels.get("pipeline_id") != Some(&deleted))
    })
    .await;
    let mut expected_a = expected_a;
    expected_a.remove(&a[2].0);
    expected_a.insert(added_id);
    assert_eq!(polled(&samples, &project_a), expected_a);
    assert!(
        samples
            .iter()
            .all(|s| s.labels.get("pipeline_id") != Some(&rejected_id)),
        "a pipeline the filters reject is never polled"
    );
    for target in ["a", "b"] {
        assert_eq!(
            value(
                &samples,
                "codearts_exporter_target_up",
                &[("target", target)]
            ),
            Some(1.0),
            "{target}"
        );
    }
    exporter.stop().await;
}

/// A new exporter after a restart records only runs that ended within `backfill_window`
/// before its start: runs the old one recorded, or that ended while none ran, are not
/// counted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_exporter_does_not_count_old_runs_again() {
    const WINDOW_MS: f64 = 12_000.0;
    let sim = start_simulator(5, 1, 31, 600.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let project = pipelines(&truth)[0]["project_id"]
        .as_str()
        .expect("project")
        .to_string();
    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[[targets]]\nproject_id = \"{project}\"\ninterval = \"1s\"\ndiscover = true\n\
         backfill_window = \"{}s\"\n",
        WINDOW_MS / 1000.0
    ));
    let total_runs = |s: &[Sample]| counter_sum(s, "codearts_pipeline_runs_total", &[]);

    // The first exporter records some runs, then stops.
    let first = start_exporter(&config).await;
    scrape_until(
        &format!("{}/metrics", first.url),
        WAIT,
        "the first exporter to record runs",
        |s| total_runs(s) >= 3.0,
    )
    .await;
    let stopped_ms = now_ms();
    first.stop().await;

    // Runs end while no exporter runs, long enough ago that the next one must not count them.
    let deadline = Instant::now() + WAIT;
    loop {
        let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
        let old = pipelines(&truth)
            .iter()
            .flat_map(|p| p["runs"].as_array().expect("runs"))
            .filter(|r| {
                let end = r["end_ms"].as_f64().expect("end");
                end > stopped_ms && end < now_ms() - WINDOW_MS - 1000.0
            })
            .count();
        if old >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "too few runs ended in the gap");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The second exporter's first poll is held up (its pipeline list answers 3 s late), as
    // on a loaded machine: the window still counts back from the exporter's start, not from
    // whenever the first history read happens.
    let delay = json!({"faults": [
        {"kind": "latency", "api": "pipeline_list", "latency_ms": 3000, "count": 1}
    ]});
    let (status, body) = send_json("POST", &format!("{}/_sim/faults", sim.url), &delay).await;
    assert_eq!(status, 200, "{body}");
    let second = start_exporter(&config).await;
    let before_start_ms = second.started_ms;
    let after_start_ms = now_ms();
    let metrics_url = format!("{}/metrics", second.url);
    scrape_until(
        &metrics_url,
        WAIT,
        "the second exporter to record runs",
        |s| total_runs(s) >= 3.0,
    )
    .await;
    let samples = stable_scrape(&metrics_url).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;

    let mut not_counted_again = 0;
    for pipeline in pipelines(&truth) {
        let id = pipeline["pipeline_id"].as_str().expect("id");
        let Some(last) = value(
            &samples,
            "codearts_pipeline_last_run_number",
            &[("pipeline_id", id)],
        ) else {
            continue;
        };
        let runs: Vec<f64> = pipeline["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["run_number"].as_f64().expect("number") <= last)
            .map(|r| r["end_ms"].as_f64().expect("end"))
            .collect();
        let ended_since = |ms: f64| runs.iter().filter(|end| **end >= ms).count() as f64;
        // The exporter's start lies between the instant taken just before `run` and the one
        // after it first answered.
        let at_least = ended_since(after_start_ms - WINDOW_MS);
        let at_most = ended_since(before_start_ms - WINDOW_MS);
        let counted = counter_sum(
            &samples,
            "codearts_pipeline_runs_total",
            &[("pipeline_id", id)],
        );
        assert!(
            at_least <= counted && counted <= at_most,
            "{id}: counted {counted}, expected between {at_least} and {at_most}"
        );
        not_counted_again += runs
            .iter()
            .filter(|end| **end >= stopped_ms - 60_000.0 && **end < before_start_ms - WINDOW_MS)
            .count();
    }
    assert!(
        not_counted_again >= 3,
        "only {not_counted_again} old runs were left out"
    );
    second.stop().await;
}

/// `trigger_type` label of a trigger, as docs/metrics.md documents it.
fn trigger_label(trigger: &str) -> &'static str {
    match trigger {
        "Manual" => "manual",
        "Scheduler" => "scheduler",
        "MR" => "mr",
        "Push" => "push",
        "CreateTag" => "create_tag",
        "Issue" => "issue",
        "Note" => "note",
        _ => "other",
    }
}

/// Jobs (one run-detail request per run), queue time and run labels against the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queue_time_and_run_labels_match_the_truth() {
    let sim = start_simulator(6, 1, 17, 300.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let sim_started_ms = truth["started_at_ms"].as_f64().expect("start");
    let project = pipelines(&truth)[0]["project_id"]
        .as_str()
        .expect("project")
        .to_string();
    let ids: Vec<String> = pipelines(&truth)
        .iter()
        .map(|p| p["pipeline_id"].to_string())
        .collect();
    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[metrics]\njobs = true\njob_duration_buckets = [0.05, 0.1, 0.5, 1, 5]\n\
         queue_duration_buckets = [0.05, 0.1, 0.5, 1]\n\
         run_labels = [\"branch\", \"trigger_type\"]\nbranches = [\"main\", \"master\"]\n\
         [[targets]]\nproject_id = \"{project}\"\npipeline_ids = [{}]\ninterval = \"1s\"\n\
         status_api = \"v3\"\n",
        ids.join(", ")
    ));
    let exporter = start_exporter(&config).await;
    let metrics_url = format!("{}/metrics", exporter.url);
    scrape_until(&metrics_url, WAIT, "12 recorded runs", |s| {
        counter_sum(s, "codearts_pipeline_runs_total", &[]) >= 12.0
    })
    .await;
    let samples = stable_scrape(&metrics_url).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;

    let mut runs_checked = 0;
    let mut jobs_checked = 0;
    for pipeline in pipelines(&truth) {
        let id = pipeline["pipeline_id"].as_str().expect("id");
        let name = pipeline["name"].as_str().expect("name");
        let Some(last) = value(
            &samples,
            "codearts_pipeline_last_run_number",
            &[("pipeline_id", id)],
        ) else {
            continue;
        };
        let recorded: Vec<&Value> = pipeline["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| {
                r["run_number"].as_f64().expect("number") <= last
                    && r["end_ms"].as_f64().expect("end") >= sim_started_ms - 3_600_000.0
            })
            .collect();

        // Run labels: bounded values, one series per combination, counts as in the truth.
        let mut expected: BTreeMap<(String, String, String), f64> = BTreeMap::new();
        for run in &recorded {
            let branch = run["target_branch"]
                .as_str()
                .filter(|b| ["main", "master"].contains(b))
                .unwrap_or("other");
            let key = (
                trigger_label(run["trigger_type"].as_str().unwrap_or("")).to_string(),
                branch.to_string(),
                run["result"].as_str().expect("result").to_string(),
            );
            *expected.entry(key).or_default() += 1.0;
        }
        let counted = by_labels(
            &samples,
            "codearts_pipeline_runs_total",
            id,
            ["trigger_type", "branch", "result"],
        );
        assert_eq!(counted, expected, "{name}: runs by trigger, branch, result");
        for ((trigger, branch, result), count) in &counted {
            let histogram = value(
                &samples,
                "codearts_pipeline_run_duration_seconds_count",
                &[
                    ("pipeline_id", id),
                    ("trigger_type", trigger),
                    ("branch", branch),
                    ("result", result),
                ],
            );
            assert_eq!(
                histogram,
                Some(*count),
                "{name}: histogram has the labels too"
            );
        }

        // Queue time: one observation per run, to the second (stage times may be whole seconds).
        let queued: Vec<f64> = recorded
            .iter()
            .filter_map(|r| r["queue_seconds"].as_f64())
            .collect();
        let labels = [("pipeline_id", id)];
        assert_eq!(
            value(
                &samples,
                "codearts_pipeline_run_queue_seconds_count",
                &labels
            )
            .unwrap_or(0.0),
            queued.len() as f64,
            "{name}: queue observations"
        );
        let queue_sum =
            value(&samples, "codearts_pipeline_run_queue_seconds_sum", &labels).unwrap_or(0.0);
        assert!(
            (queue_sum - queued.iter().sum::<f64>()).abs() <= queued.len() as f64 + 0.01,
            "{name}: queue sum {queue_sum} vs {queued:?}"
        );

        // Jobs: one observation per job that ran, per recorded run.
        let mut expected_jobs: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
        for run in &recorded {
            for stage in run["stages"].as_array().expect("stages") {
                for job in stage["jobs"].as_array().expect("jobs") {
                    let key = (
                        stage["name"].as_str().expect("stage").to_string(),
                        job["name"].as_str().expect("job").to_string(),
                        job["result"].as_str().expect("result").to_string(),
                    );
                    let entry = expected_jobs.entry(key).or_default();
                    entry.0 += 1.0;
                    entry.1 += job["duration_seconds"].as_f64().expect("duration");
                }
            }
        }
        let observed = by_labels(
            &samples,
            "codearts_pipeline_job_duration_seconds_count",
            id,
            ["stage", "job", "result"],
        );
        let expected_counts: BTreeMap<(String, String, String), f64> = expected_jobs
            .iter()
            .map(|(key, (count, _))| (key.clone(), *count))
            .collect();
        assert_eq!(observed, expected_counts, "{name}: job observations");
        for ((stage, job, result), (_, sum)) in &expected_jobs {
            let got = value(
                &samples,
                "codearts_pipeline_job_duration_seconds_sum",
                &[
                    ("pipeline_id", id),
                    ("stage", stage),
                    ("job", job),
                    ("result", result),
                ],
            )
            .expect("job sum");
            assert!(
                (got - sum).abs() < 0.01,
                "{name}/{stage}/{job}: {got} vs {sum}"
            );
        }
        runs_checked += recorded.len();
        jobs_checked += expected_jobs
            .values()
            .map(|(count, _)| *count as usize)
            .sum::<usize>();
    }
    assert!(runs_checked >= 12, "only {runs_checked} runs compared");
    assert!(
        jobs_checked >= runs_checked,
        "only {jobs_checked} jobs compared"
    );
    // One run detail per recorded run, and v3 gives names: no other detail request.
    let details = value(
        &samples,
        "codearts_exporter_api_requests_total",
        &[("api", "run_detail"), ("code", "200")],
    )
    .expect("run details");
    assert!(
        details >= runs_checked as f64,
        "{details} details for {runs_checked} runs"
    );
    exporter.stop().await;
}

/// API requests per poll, by API, between two scrapes several polls apart.
async fn requests_per_poll(speed: f64, seed: u64) -> (f64, BTreeMap<String, f64>) {
    let sim = start_simulator(20, 1, seed, speed).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let project = pipelines(&truth)[0]["project_id"]
        .as_str()
        .expect("project")
        .to_string();
    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[[targets]]\nname = \"t\"\nproject_id = \"{project}\"\ninterval = \"1s\"\n\
         chunk_size = 10\ndiscover = true\ndiscover_every = \"1h\"\n"
    ));
    let exporter = start_exporter(&config).await;
    let metrics_url = format!("{}/metrics", exporter.url);
    let polls = |s: &[Sample]| {
        value(
            s,
            "codearts_exporter_poll_duration_seconds_count",
            &[("target", "t")],
        )
        .unwrap_or(0.0)
    };
    // The first polls name every pipeline and the backfill reads each once: measure after
    // them (the backfill's gauge waited for on its own: it is set just after the poll count).
    scrape_until(&metrics_url, WAIT, "two polls", |s| polls(s) >= 2.0).await;
    let start = scrape_until(&metrics_url, WAIT, "the backfill to end", |s| {
        sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0
    })
    .await;
    let end = scrape_until(&metrics_url, WAIT, "eight more polls", |s| {
        polls(s) >= polls(&start) + 8.0
    })
    .await;
    let by_api = |s: &[Sample]| -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for sample in select(s, "codearts_exporter_api_requests_total", &[]) {
            *sums.entry(sample.labels["api"].clone()).or_default() += sample.value;
        }
        sums
    };
    let (before, after) = (by_api(&start), by_api(&end));
    let delta: BTreeMap<String, f64> = after
        .iter()
        .map(|(api, n)| (api.clone(), n - before.get(api).copied().unwrap_or(0.0)))
        .collect();
    exporter.stop().await;
    (polls(&end) - polls(&start), delta)
}

/// A quiet project costs one batch status request per chunk of ids and poll, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_project_costs_one_status_request_per_chunk_and_poll() {
    // At speed 0.01 nothing completes while the test runs.
    let (polls, delta) = requests_per_poll(0.01, 41).await;
    let total: f64 = delta.values().sum();
    eprintln!(
        "quiet project, 20 pipelines, chunk_size 10: {polls} polls, {total} requests ({:.2}/poll): {delta:?}",
        total / polls
    );
    // 2 chunks per poll; a poll in flight at either scrape moves the count by its 2 requests.
    assert!(
        (total - 2.0 * polls).abs() <= 2.0,
        "{total} requests in {polls} polls"
    );
    assert_eq!(delta.get("run_list").copied().unwrap_or(0.0), 0.0);
    assert_eq!(delta.get("run_detail").copied().unwrap_or(0.0), 0.0);
}

/// A busy project adds one history read per pipeline whose runs changed, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_project_adds_one_history_read_per_changed_pipeline() {
    let (polls, delta) = requests_per_poll(600.0, 43).await;
    let total: f64 = delta.values().sum();
    eprintln!(
        "busy project, 20 pipelines, chunk_size 10, speed 600: {polls} polls, {total} requests ({:.2}/poll): {delta:?}",
        total / polls
    );
    let status = delta.get("v5_status").copied().unwrap_or(0.0);
    assert!(
        (status - 2.0 * polls).abs() <= 2.0,
        "{status} status requests"
    );
    let history = delta.get("run_list").copied().unwrap_or(0.0);
    assert!(history > 0.0, "runs completed, so histories were read");
    // At most one page per pipeline and poll (fewer than 20 runs happen between two polls).
    assert!(
        history <= 20.0 * (polls + 1.0),
        "{history} history requests"
    );
    assert_eq!(delta.get("run_detail").copied().unwrap_or(0.0), 0.0);
}

/// Counts pipeline list requests.
#[derive(Default)]
struct CountingObserver(AtomicUsize);

impl codearts_exporter::codearts::RequestObserver for CountingObserver {
    fn request_done(&self, api: codearts_exporter::codearts::Api, _code: &str, _: Duration) {
        if api == codearts_exporter::codearts::Api::PipelineList {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn retried(
        &self,
        _: codearts_exporter::codearts::Api,
        _: codearts_exporter::codearts::RetryReason,
    ) {
    }
    fn failed(
        &self,
        _: codearts_exporter::codearts::Api,
        _: codearts_exporter::codearts::ErrorKind,
    ) {
    }
    fn auth_refresh(&self, _: bool) {}
}

/// The pipeline list is read page by page until its total, every pipeline once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_list_is_read_page_by_page_to_its_total() {
    let sim = start_simulator_with(SimOptions {
        pipelines: 120,
        projects: 1,
        ..SimOptions::default()
    })
    .await;
    let codearts = codearts_exporter::config::CodeArtsConfig {
        endpoint: Some(sim.url.clone()),
        ..Default::default()
    };
    let auth = codearts_exporter::config::AuthConfig::token(sim.simulator.static_token());
    let observer = Arc::new(CountingObserver::default());
    let client = codearts_exporter::codearts::Client::new(&codearts, &auth, observer.clone())
        .expect("client");
    let (project, ids) = sim.simulator.targets().remove(0);
    let listed = client.list_pipelines(&project, false).await.expect("list");
    let listed_ids: BTreeSet<&str> = listed.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(listed.len(), 120);
    assert_eq!(listed_ids, ids.iter().map(String::as_str).collect());
    assert!(listed.iter().all(|p| !p.name.is_empty() && p.name != p.id));
    // 120 pipelines at 50 a page.
    assert_eq!(observer.0.load(Ordering::Relaxed), 3);
    sim.stop().await;
}
