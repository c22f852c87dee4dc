//! Delivery (DORA) metrics against the simulator's truth: every deployment counted once by
//! environment and result, every lead time (from the commit's time in CodeArts Repo to the end
//! of the successful deployment) observed once and exactly, the reasons of unknown lead times,
//! the time to restore after a red streak, one Repo call per commit, and a Repo outage that
//! loses no lead time once it ends.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use codearts_exporter::simulator::SimOptions;
use common::harness::{Exporter, Sim, start_exporter, start_simulator_with, test_log};
use common::{Sample, get_json, request, scrape, select, sum, value};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(50);

/// `codearts_deployment_lead_time_seconds` buckets (docs/metrics.md).
const LEAD_TIME_BUCKETS: [f64; 9] = [
    300.0, 900.0, 3600.0, 14400.0, 86400.0, 259200.0, 604800.0, 1209600.0, 2592000.0,
];
/// `codearts_deployment_recovery_seconds` buckets (docs/metrics.md).
const RECOVERY_BUCKETS: [f64; 7] = [300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0, 604800.0];

const REASONS: [&str; 5] = [
    "no_commit_id",
    "no_repository_id",
    "commit_not_found",
    "repo_error",
    "unparsable_time",
];

/// A simulator of 2 ordinary and 6 deployment pipelines in 2 projects, fast enough that each
/// deployment pipeline's fail, fail, succeed streak ends within seconds.
async fn start_world(seed: u64) -> Sim {
    start_simulator_with(SimOptions {
        pipelines: 2,
        deploy_pipelines: 6,
        projects: 2,
        seed,
        speed: 600.0,
        ..SimOptions::default()
    })
    .await
}

/// The exporter's configuration: every pipeline of the truth polled every second (project 0
/// through v5, project 1 through v3), a backfill window longer than the simulator's history
/// (26 h), Repo at the simulator, and production and staging deployments by name.
fn exporter_config(sim_url: &str, truth: &Value) -> String {
    let mut by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pipeline in pipelines(truth) {
        by_project
            .entry(str_of(pipeline, "project_id"))
            .or_default()
            .push(format!("\"{}\"", str_of(pipeline, "pipeline_id")));
    }
    let mut text = format!(
        "[codearts]\nendpoint = \"{sim_url}\"\nrepo_endpoint = \"{sim_url}\"\ntimeout = \"5s\"\n\
         max_retries = 1\nretry_backoff = \"50ms\"\nmax_retry_wait = \"1s\"\n\
         [auth]\nmethod = \"token\"\ntoken = \"codearts-simulator-token\"\n"
    );
    for (index, (project, ids)) in by_project.iter().enumerate() {
        let api = if index % 2 == 0 { "v5" } else { "v3" };
        text.push_str(&format!(
            "[[targets]]\nname = \"t{index}\"\nproject_id = \"{project}\"\npipeline_ids = [{}]\n\
             interval = \"1s\"\nstatus_api = \"{api}\"\nbackfill_window = \"30h\"\n",
            ids.join(", ")
        ));
    }
    text.push_str(
        "[[deployments]]\nenvironment = \"production\"\ninclude = \"-deploy-prod$\"\n\
         [[deployments]]\nenvironment = \"staging\"\ninclude = \"-deploy-staging$\"\n",
    );
    text
}

fn pipelines(truth: &Value) -> &Vec<Value> {
    truth["pipelines"].as_array().expect("pipelines")
}

fn str_of(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
        .to_string()
}

fn f64_of(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

/// A deployment pipeline of the truth, and what it should have given the exporter.
struct DeployPipeline {
    id: String,
    name: String,
    environment: &'static str,
    /// Number of the run under way when the simulator started: it and the next fail, the
    /// third succeeds.
    live_number: f64,
}

/// The deployment pipelines of the truth, with the environment their name deploys to.
fn deploy_pipelines(truth: &Value) -> Vec<DeployPipeline> {
    let started = f64_of(truth, "started_at_ms");
    pipelines(truth)
        .iter()
        .filter(|p| !p["deploy_environment"].is_null())
        .map(|p| {
            let environment = match p["deploy_environment"].as_str() {
                Some("prod") => "production",
                Some("staging") => "staging",
                other => panic!("unexpected environment {other:?}"),
            };
            // History runs ended hours before the start; the live run is the next.
            let history = runs(p)
                .iter()
                .filter(|r| f64_of(r, "end_ms") < started)
                .map(|r| f64_of(r, "run_number"))
                .fold(0.0, f64::max);
            DeployPipeline {
                id: str_of(p, "pipeline_id"),
                name: str_of(p, "name"),
                environment,
                live_number: history + 1.0,
            }
        })
        .collect()
}

fn runs(pipeline: &Value) -> &Vec<Value> {
    pipeline["runs"].as_array().expect("runs")
}

fn truth_pipeline<'a>(truth: &'a Value, id: &str) -> &'a Value {
    pipelines(truth)
        .iter()
        .find(|p| p["pipeline_id"] == id)
        .unwrap_or_else(|| panic!("pipeline {id} not in the truth"))
}

/// The number of the last run the exporter recorded for pipeline `id`, 0 before any.
fn last_number(samples: &[Sample], id: &str) -> f64 {
    value(
        samples,
        "codearts_pipeline_last_run_number",
        &[("pipeline_id", id)],
    )
    .unwrap_or(0.0)
}

/// Successful deployments the exporter counted whose lead time is neither observed nor known
/// to be unknown: they wait for Repo.
fn awaiting(samples: &[Sample], id: &str) -> f64 {
    let labels = [("pipeline_id", id)];
    sum(
        samples,
        "codearts_deployments_total",
        &[("pipeline_id", id), ("result", "success")],
    ) - sum(
        samples,
        "codearts_deployment_lead_time_seconds_count",
        &labels,
    ) - sum(
        samples,
        "codearts_deployment_lead_time_unknown_total",
        &labels,
    )
}

/// What the truth says the exporter should show for one deployment pipeline, from its runs up
/// to the last one the exporter recorded (all in the backfill window).
#[derive(Debug, Default)]
struct Expected {
    deployments: BTreeMap<&'static str, u64>,
    lead_times: Vec<f64>,
    unknown: BTreeMap<&'static str, u64>,
    recoveries: Vec<f64>,
    failing_since: f64,
    /// (repository, commit) of each successful deployment with both ids.
    commits: Vec<(String, String)>,
}

fn expected(pipeline: &Value, last_number: f64) -> Expected {
    let mut expected = Expected::default();
    let mut failing_since: Option<f64> = None;
    for run in runs(pipeline)
        .iter()
        .filter(|r| f64_of(r, "run_number") <= last_number)
    {
        let end = f64_of(run, "end_ms") / 1000.0;
        let result = match run["result"].as_str() {
            Some("success") => "success",
            Some("error") => "error",
            Some("aborted") => "aborted",
            other => panic!("run without a result: {other:?} in {run}"),
        };
        *expected.deployments.entry(result).or_insert(0) += 1;
        match result {
            "error" => {
                failing_since.get_or_insert(end);
            }
            "success" => {
                if let Some(since) = failing_since.take() {
                    expected.recoveries.push(end - since);
                }
                let reason = match (
                    run["commit_id"].as_str(),
                    run["codehub_id"].as_str(),
                    run["committed_ms"].as_f64(),
                ) {
                    (None, _, _) => Some("no_commit_id"),
                    (_, None, _) => Some("no_repository_id"),
                    (Some(commit), Some(repository), committed) => {
                        expected
                            .commits
                            .push((repository.to_string(), commit.to_string()));
                        match committed {
                            Some(committed) => {
                                expected.lead_times.push(end - committed / 1000.0);
                                None
                            }
                            None => Some("commit_not_found"),
                        }
                    }
                };
                if let Some(reason) = reason {
                    *expected.unknown.entry(reason).or_insert(0) += 1;
                }
            }
            _ => {}
        }
    }
    expected.failing_since = failing_since.unwrap_or(0.0);
    expected
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-6 * want.abs().max(1.0)
}

/// Checks a histogram of pipeline `id` and `environment` against the values it should hold:
/// count, sum, and every bucket.
fn check_histogram(
    samples: &[Sample],
    family: &str,
    id: &str,
    environment: &str,
    bounds: &[f64],
    values: &[f64],
    what: &str,
) {
    let labels = [("pipeline_id", id), ("environment", environment)];
    let count = value(samples, &format!("{family}_count"), &labels);
    assert_eq!(
        count,
        Some(values.len() as f64),
        "{what}: {family}_count; expected values {values:?}"
    );
    let got_sum = value(samples, &format!("{family}_sum"), &labels).expect("sum");
    let want_sum: f64 = values.iter().sum();
    assert!(
        close(got_sum, want_sum),
        "{what}: {family}_sum {got_sum}, expected {want_sum} (values {values:?})"
    );
    let buckets = select(samples, &format!("{family}_bucket"), &labels);
    assert_eq!(buckets.len(), bounds.len() + 1, "{what}: {family} buckets");
    for bucket in buckets {
        let le = &bucket.labels["le"];
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("le")
        };
        assert!(
            bound.is_infinite() || bounds.contains(&bound),
            "{what}: unexpected bucket le={le}"
        );
        let want = values.iter().filter(|v| **v <= bound).count() as f64;
        assert_eq!(
            bucket.value, want,
            "{what}: {family}_bucket le={le} (values {values:?})"
        );
    }
}

/// Waits until the exporter has recorded, for every deployment pipeline, at least the run
/// `min_number(pipeline)` and has no lead time waiting for Repo; returns that scrape. After
/// `deadline` it returns the last scrape all the same, so that the comparisons say what is
/// wrong (a pipeline that never recorded its runs fails here).
async fn settled(
    exporter: &Exporter,
    deploys: &[DeployPipeline],
    min_number: impl Fn(&DeployPipeline) -> f64,
    deadline: Instant,
) -> Vec<Sample> {
    loop {
        let samples = scrape(&exporter.url).await;
        let recorded = deploys
            .iter()
            .all(|d| last_number(&samples, &d.id) >= min_number(d));
        let resolved = deploys.iter().all(|d| awaiting(&samples, &d.id) == 0.0);
        if recorded && resolved || Instant::now() > deadline {
            for d in deploys {
                assert!(
                    last_number(&samples, &d.id) >= min_number(d),
                    "{}: run {} never recorded; log:\n{}",
                    d.name,
                    min_number(d),
                    test_log()
                );
            }
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Compares deployments, lead times, unknown lead times and recoveries of every deployment
/// pipeline with the truth; returns what was expected, by pipeline.
fn compare_deployments(
    samples: &[Sample],
    truth: &Value,
    deploys: &[DeployPipeline],
) -> Vec<Expected> {
    let mut all = Vec::new();
    for d in deploys {
        let pipeline = truth_pipeline(truth, &d.id);
        let want = expected(pipeline, last_number(samples, &d.id));
        let labels = [("pipeline_id", d.id.as_str())];
        let env = [
            ("pipeline_id", d.id.as_str()),
            ("environment", d.environment),
        ];
        let what = format!("{} ({})", d.name, d.environment);

        // 1. Every deployment counted once, by result, under its environment only.
        let series = select(samples, "codearts_deployments_total", &labels);
        assert_eq!(series.len(), 3, "{what}: one series per result");
        for s in &series {
            assert_eq!(s.labels["environment"], d.environment, "{what}");
            let result = s.labels["result"].as_str();
            assert_eq!(
                s.value,
                want.deployments.get(result).copied().unwrap_or(0) as f64,
                "{what}: deployments_total{{result=\"{result}\"}}; expected {:?}",
                want.deployments
            );
        }

        // 2. Each lead time observed once, exactly, in the right bucket.
        check_histogram(
            samples,
            "codearts_deployment_lead_time_seconds",
            &d.id,
            d.environment,
            &LEAD_TIME_BUCKETS,
            &want.lead_times,
            &what,
        );

        // 4. Unknown lead times, by reason.
        for reason in REASONS {
            let mut labels = env.to_vec();
            labels.push(("reason", reason));
            assert_eq!(
                value(
                    samples,
                    "codearts_deployment_lead_time_unknown_total",
                    &labels
                ),
                Some(want.unknown.get(reason).copied().unwrap_or(0) as f64),
                "{what}: lead_time_unknown_total{{reason=\"{reason}\"}}; expected {:?}",
                want.unknown
            );
        }

        // 3. Time to restore after each red streak, and the current streak's start.
        check_histogram(
            samples,
            "codearts_deployment_recovery_seconds",
            &d.id,
            d.environment,
            &RECOVERY_BUCKETS,
            &want.recoveries,
            &what,
        );
        let failing_since = value(
            samples,
            "codearts_pipeline_failing_since_timestamp_seconds",
            &labels,
        )
        .expect("failing_since");
        assert!(
            close(failing_since, want.failing_since),
            "{what}: failing_since {failing_since}, expected {}",
            want.failing_since
        );
        all.push(want);
    }
    all
}

/// The `repo_commit` requests the simulator logged, by status.
async fn repo_requests(sim: &Sim) -> BTreeMap<u64, usize> {
    let log = get_json(&format!("{}/_sim/requests?api=repo_commit", sim.url)).await;
    let mut by_status = BTreeMap::new();
    for entry in log["requests"].as_array().expect("requests") {
        *by_status
            .entry(entry["status"].as_u64().expect("status"))
            .or_insert(0) += 1;
    }
    by_status
}

/// Deployments, lead times, unknown lead times and recoveries match the truth, and Repo is
/// asked once per commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_lead_times_and_recoveries_match_the_truth() {
    // A world whose deployments include, by the time every streak has recovered, a live
    // redeploy of a commit deployed seconds before (a later poll: only the cache spares its
    // call) and successful deployments whose run names no commit.
    let sim = start_world(979).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let deploys = deploy_pipelines(&truth);
    assert_eq!(deploys.len(), 6);
    let exporter = start_exporter(&exporter_config(&sim.url, &truth)).await;

    // Up to the recovery of every pipeline (the live run and the next fail, the third
    // succeeds); then scrapes until two in a row show the same recorded runs with nothing
    // waiting, with the Repo request log read between them: no call of a deployment outside
    // that scrape can be in the log (a deployment is shown before its commit is asked).
    // Past the deadline the comparisons run on the last scrape, and say what is wrong.
    let deadline = Instant::now() + WAIT;
    let (samples, requests) = loop {
        let before = settled(&exporter, &deploys, |d| d.live_number + 2.0, deadline).await;
        let requests = repo_requests(&sim).await;
        let after = settled(&exporter, &deploys, |d| d.live_number + 2.0, deadline).await;
        let numbers =
            |s: &[Sample]| -> Vec<f64> { deploys.iter().map(|d| last_number(s, &d.id)).collect() };
        if numbers(&before) == numbers(&after) || Instant::now() > deadline {
            break (after, requests);
        }
    };
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let expected = compare_deployments(&samples, &truth, &deploys);

    // 3. The fail, fail, succeed streak from the start: one recovery, from the end of the first
    // failure to the end of the success, the first of the pipeline.
    for (d, want) in deploys.iter().zip(&expected) {
        let pipeline = truth_pipeline(&truth, &d.id);
        let streak: Vec<&Value> = runs(pipeline)
            .iter()
            .filter(|r| {
                let n = f64_of(r, "run_number");
                n >= d.live_number && n <= d.live_number + 2.0
            })
            .collect();
        let results: Vec<&str> = streak
            .iter()
            .map(|r| r["result"].as_str().unwrap())
            .collect();
        assert_eq!(results, ["error", "error", "success"], "{}", d.name);
        let length = (f64_of(streak[2], "end_ms") - f64_of(streak[0], "end_ms")) / 1000.0;
        assert!(
            want.recoveries.first().is_some_and(|r| close(*r, length)),
            "{}: first recovery {:?}, expected {length}",
            d.name,
            want.recoveries
        );
        // Green after the recovery, unless a later deployment failed since.
        let last = runs(pipeline)
            .iter()
            .rfind(|r| f64_of(r, "run_number") <= last_number(&samples, &d.id))
            .expect("last run");
        if last["result"] == "success" {
            assert_eq!(
                value(
                    &samples,
                    "codearts_pipeline_failing_since_timestamp_seconds",
                    &[("pipeline_id", d.id.as_str())]
                ),
                Some(0.0),
                "{}: green again",
                d.name
            );
        }
    }

    // 4. The one commit Repo does not know, on its pipeline; the pipeline without a repository.
    let unknown = &truth["unknown_commit"];
    let unknown_pipeline = str_of(unknown, "pipeline_id");
    let not_found: Vec<(String, f64)> = select(
        &samples,
        "codearts_deployment_lead_time_unknown_total",
        &[("reason", "commit_not_found")],
    )
    .iter()
    .filter(|s| s.value > 0.0)
    .map(|s| (s.labels["pipeline_id"].clone(), s.value))
    .collect();
    assert_eq!(not_found, [(unknown_pipeline, 1.0)]);
    let outside: Vec<&DeployPipeline> = deploys
        .iter()
        .filter(|d| truth_pipeline(&truth, &d.id)["codehub_id"].is_null())
        .collect();
    assert_eq!(
        outside.len(),
        1,
        "one pipeline builds outside CodeArts Repo"
    );
    let no_repository = value(
        &samples,
        "codearts_deployment_lead_time_unknown_total",
        &[
            ("pipeline_id", &outside[0].id),
            ("reason", "no_repository_id"),
        ],
    );
    assert!(
        no_repository.is_some_and(|n| n >= 1.0),
        "{}: successful deployments without a repository: {no_repository:?}",
        outside[0].name
    );

    // 5. One Repo call per (repository, commit): redeploys share it; none failed.
    let commits: Vec<&(String, String)> = expected.iter().flat_map(|e| &e.commits).collect();
    let distinct: BTreeSet<&(String, String)> = commits.iter().copied().collect();
    let calls: usize = requests.values().sum();
    assert_eq!(
        calls,
        distinct.len(),
        "repo_commit requests by status {requests:?}; {} deployments of {} commits",
        commits.len(),
        distinct.len()
    );
    assert_eq!(
        requests.get(&404),
        Some(&1),
        "the unknown commit: {requests:?}"
    );
    assert!(
        commits.len() > distinct.len(),
        "a redeploy to check the cache with"
    );
    let no_commit: u64 = expected
        .iter()
        .filter_map(|e| e.unknown.get("no_commit_id"))
        .sum();
    assert!(no_commit > 0, "a deployment without a commit id to check");
    eprintln!(
        "compared {} deployments, {} lead times, {} redeployed commits",
        expected
            .iter()
            .map(|e| e.deployments.values().sum::<u64>())
            .sum::<u64>(),
        expected.iter().map(|e| e.lead_times.len()).sum::<usize>(),
        commits.len() - distinct.len()
    );
    exporter.stop().await;
    sim.stop().await;
}

/// A Repo outage from before the exporter starts: deployments are counted, their lead times
/// wait (none observed, none given up) while every commit call fails, and once Repo answers
/// again every lead time appears, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_outage_loses_no_lead_time() {
    let sim = start_world(1449).await;
    let outage = json!({"faults": [{"api": "repo_commit", "kind": "error", "status": 503}]});
    let (status, body) = request("POST", &format!("{}/_sim/faults", sim.url), Some(&outage)).await;
    assert_eq!(status, 200, "{body}");
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let deploys = deploy_pipelines(&truth);
    let exporter = start_exporter(&exporter_config(&sim.url, &truth)).await;

    // Through the outage: deployments recorded (the history's successes at least), commit
    // calls failing for good, and not one lead time, nor one given up.
    let errors = |s: &[Sample]| {
        sum(
            s,
            "codearts_exporter_api_errors_total",
            &[("api", "repo_commit")],
        )
    };
    let lead_times = |s: &[Sample]| sum(s, "codearts_deployment_lead_time_seconds_count", &[]);
    let mut first_errors = None;
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(&exporter.url).await;
        assert_eq!(lead_times(&samples), 0.0, "a lead time during the outage");
        assert_eq!(
            sum(
                &samples,
                "codearts_deployment_lead_time_unknown_total",
                &[("reason", "repo_error")]
            ),
            0.0,
            "a lead time given up during the outage"
        );
        let waiting: f64 = deploys.iter().map(|d| awaiting(&samples, &d.id)).sum();
        let errors = errors(&samples);
        let recorded = deploys
            .iter()
            .all(|d| last_number(&samples, &d.id) >= d.live_number + 2.0);
        match first_errors {
            None if errors > 0.0 => first_errors = Some(errors),
            // Retried at a later poll, still failing, with every streak recorded.
            Some(first) if errors > first && recorded && waiting > 0.0 => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the outage never showed: {errors} errors, {waiting} waiting; log:\n{}",
            test_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = repo_requests(&sim).await;
    assert!(
        during.keys().all(|status| *status == 503),
        "only failures during the outage: {during:?}"
    );

    let (status, body) = request("DELETE", &format!("{}/_sim/faults", sim.url), None).await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + WAIT;
    let samples = settled(&exporter, &deploys, |d| d.live_number + 2.0, deadline).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let expected = compare_deployments(&samples, &truth, &deploys);
    let lead_times: usize = expected.iter().map(|e| e.lead_times.len()).sum();
    assert!(lead_times > 0, "lead times to compare");
    assert!(
        sum(
            &samples,
            "codearts_exporter_api_errors_total",
            &[("api", "repo_commit")]
        ) >= 2.0
    );
    exporter.stop().await;
    sim.stop().await;
}
