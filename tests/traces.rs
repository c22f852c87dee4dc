//! Traces of completed runs, as a collector receives them: the exporter against the simulator
//! with `[traces]` set, and a test OTLP receiver that decodes with `opentelemetry-proto`.
//!
//! 1. Every recorded run arrives as exactly one trace whose spans (run, queue, stages, jobs),
//!    times, attributes and ids are the simulator's truth; the configured header is sent and
//!    its secret value shows nowhere.
//! 2. A collector that is down, then throttles, then hangs, then takes, receives every trace
//!    once; traces it refuses (400) are counted as dropped and never sent again.
//! 3. Past `max_pending_runs` the oldest traces are dropped and counted.
//! 4. Pending traces survive a SIGKILL in the state file and are delivered after the restart,
//!    with the same ids and content; a delivered trace is not sent again after a restart.
//! 5. `demo --traces-endpoint` sends the demo's traces to that receiver (as the compose file's
//!    traces variant does to Jaeger); an endpoint the configuration would refuse is refused.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use codearts_exporter::traces::ids::RunKey;
use common::otlp::{self, Answer, Receiver};
use common::{Sample, config, get_json, select, sum, targets_of, value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;

/// The header value the collector is sent; it must show nowhere else.
const SECRET: &str = "Bearer trace-secret-4711";

/// `common::config` polling every second, with jobs read, traces to `endpoint` and `extra`
/// lines in `[traces]`.
fn traces_config(sim_url: &str, truth: &Value, endpoint: &str, extra: &str) -> String {
    let mut text = config(sim_url, &targets_of(truth), 1);
    text.push_str(&format!(
        "[metrics]\njobs = true\n[traces]\nendpoint = \"{endpoint}\"\ntimeout = \"1s\"\n\
         headers = {{ \"Authorization\" = \"{SECRET}\" }}\n{extra}\n"
    ));
    text
}

fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or(0.0)
}

fn runs_total(samples: &[Sample]) -> f64 {
    sum(samples, "codearts_pipeline_runs_total", &[])
}

fn pending(samples: &[Sample]) -> f64 {
    counter(samples, "codearts_exporter_traces_pending", &[])
}

fn exported(samples: &[Sample]) -> f64 {
    counter(samples, "codearts_exporter_traces_exported_total", &[])
}

fn exports(samples: &[Sample], result: &str) -> f64 {
    counter(
        samples,
        "codearts_exporter_trace_exports_total",
        &[("result", result)],
    )
}

fn dropped(samples: &[Sample], reason: &str) -> f64 {
    counter(
        samples,
        "codearts_exporter_traces_dropped_total",
        &[("reason", reason)],
    )
}

/// Every recorded run's trace delivered, as one scrape shows it.
fn all_delivered(samples: &[Sample]) -> bool {
    pending(samples) == 0.0 && exported(samples) == runs_total(samples)
}

/// The truth's runs by trace id, with their pipeline.
fn truth_by_trace(truth: &Value) -> HashMap<String, (Value, Value)> {
    let mut runs = HashMap::new();
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let (project, id) = (
            pipeline["project_id"].as_str().expect("project"),
            pipeline["pipeline_id"].as_str().expect("pipeline"),
        );
        for run in pipeline["runs"].as_array().expect("runs") {
            let key = RunKey {
                project_id: project,
                pipeline_id: id,
                run: run["run_id"].as_str().expect("run id"),
            };
            runs.insert(key.trace_id_hex(), (pipeline.clone(), run.clone()));
        }
    }
    runs
}

fn nanos(ms: &Value) -> u64 {
    ms.as_u64().expect("ms") * 1_000_000
}

/// The result attribute CodeArts' result maps to.
fn result_value(result: &Value) -> &'static str {
    match result.as_str() {
        Some("success") => "success",
        Some("error") => "failure",
        Some("aborted") => "cancellation",
        other => panic!("no result {other:?}"),
    }
}

/// Checks one received run against its truth: resource, root span, queue span, one span per
/// stage and per job, each with its exact times, parent and result.
fn check_run(received: &ResourceSpans, pipeline: &Value, run: &Value) {
    let name = pipeline["name"].as_str().expect("name");
    let attr = |key| otlp::resource_attribute(received, key);
    assert_eq!(attr("service.name"), Some("codearts-exporter"));
    assert_eq!(attr("cicd.pipeline.name"), Some(name));
    assert_eq!(attr("cicd.pipeline.run.id"), run["run_id"].as_str());
    assert_eq!(
        attr("codearts.pipeline.id"),
        pipeline["pipeline_id"].as_str()
    );
    assert_eq!(attr("codearts.project.id"), pipeline["project_id"].as_str());
    assert_eq!(attr("vcs.ref.head.name"), run["target_branch"].as_str());
    assert_eq!(attr("vcs.ref.head.revision"), run["commit_id"].as_str());

    let spans = otlp::spans(received);
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{name}: one root span");
    let root = roots[0];
    assert_eq!(root.name, format!("RUN {name}"));
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.start_time_unix_nano, nanos(&run["start_ms"]));
    assert_eq!(root.end_time_unix_nano, nanos(&run["end_ms"]));
    assert_eq!(
        otlp::attribute(&root.attributes, "cicd.pipeline.result"),
        Some(result_value(&run["result"]))
    );
    let failed = run["result"] == "error";
    assert_eq!(
        otlp::attribute(&root.attributes, "error.type").is_some(),
        failed,
        "error.type on failure only"
    );

    let children = |parent: &[u8]| -> Vec<_> {
        spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .copied()
            .collect()
    };
    let under_root = children(&root.span_id);
    let stages = run["stages"].as_array().expect("stages");
    let first_stage = stages.iter().map(|s| nanos(&s["start_ms"])).min();
    let queue: Vec<_> = under_root
        .iter()
        .filter(|s| s.name == format!("QUEUE {name}"))
        .collect();
    match first_stage {
        Some(first) if first > nanos(&run["start_ms"]) => {
            assert_eq!(queue.len(), 1, "{name}: a queue span");
            assert_eq!(queue[0].start_time_unix_nano, nanos(&run["start_ms"]));
            assert_eq!(queue[0].end_time_unix_nano, first);
        }
        _ => assert!(queue.is_empty(), "{name}: no wait, no queue span"),
    }
    let key = RunKey {
        project_id: pipeline["project_id"].as_str().expect("project"),
        pipeline_id: pipeline["pipeline_id"].as_str().expect("pipeline"),
        run: run["run_id"].as_str().expect("run id"),
    };
    let mut jobs = 0;
    for stage in stages {
        let stage_name = stage["name"].as_str().expect("stage name");
        let stage_id = stage["id"].as_str().expect("stage id");
        let found: Vec<_> = under_root.iter().filter(|s| s.name == stage_name).collect();
        assert_eq!(found.len(), 1, "{name}: one span for stage {stage_name}");
        let span = found[0];
        assert_eq!(span.start_time_unix_nano, nanos(&stage["start_ms"]));
        assert_eq!(span.end_time_unix_nano, nanos(&stage["end_ms"]));
        // Named by the stage's CodeArts id, in its span id and its task run id.
        assert_eq!(span.span_id, key.span_id("stage", &[stage_id]).to_vec());
        assert_eq!(
            otlp::attribute(&span.attributes, "cicd.pipeline.task.run.id"),
            Some(stage_id)
        );
        if !stage["result"].is_null() {
            assert_eq!(
                otlp::attribute(&span.attributes, "cicd.pipeline.task.run.result"),
                Some(result_value(&stage["result"])),
                "{name}/{stage_name}"
            );
        }
        let job_spans = children(&span.span_id);
        let truth_jobs = stage["jobs"].as_array().expect("jobs");
        assert_eq!(
            job_spans.len(),
            truth_jobs.len(),
            "{name}/{stage_name}: jobs"
        );
        for job in truth_jobs {
            let job_name = job["name"].as_str().expect("job name");
            let span = job_spans
                .iter()
                .find(|s| s.name == job_name)
                .unwrap_or_else(|| panic!("{name}/{stage_name}: no span for job {job_name}"));
            assert_eq!(span.start_time_unix_nano, nanos(&job["start_ms"]));
            assert_eq!(span.end_time_unix_nano, nanos(&job["end_ms"]));
            assert_eq!(
                otlp::attribute(&span.attributes, "cicd.pipeline.task.name"),
                Some(job_name)
            );
            let job_id = job["id"].as_str().expect("job id");
            assert_eq!(
                span.span_id,
                key.span_id("job", &[stage_id, job_id]).to_vec()
            );
            assert_eq!(
                otlp::attribute(&span.attributes, "cicd.pipeline.task.run.id"),
                Some(job_id)
            );
            jobs += 1;
        }
    }
    assert_eq!(
        spans.len(),
        1 + queue.len() + stages.len() + jobs,
        "{name}: no other span"
    );
}

/// Each received run's trace id, checking no run arrived twice.
fn distinct_traces(runs: &[ResourceSpans]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for run in runs {
        let id = otlp::trace_id(run);
        assert!(seen.insert(id.clone()), "trace {id} received twice");
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_run_arrives_once_as_a_trace_of_its_stages_and_jobs() {
    let sim = common::harness::start_simulator(6, 2, 21, 400.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let receiver = Receiver::start().await;
    let text = traces_config(&sim.url, &truth, &receiver.endpoint(), "");
    let exporter = common::harness::start_exporter(&text).await;
    let samples = exporter
        .scrape_until(Duration::from_secs(90), "a dozen runs traced", |s| {
            runs_total(s) >= 12.0 && all_delivered(s)
        })
        .await;
    // What the scrape counts was taken before it; the receiver may hold more since.
    let received = receiver.taken_runs();
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let by_trace = truth_by_trace(&truth);
    let traced = distinct_traces(&received);

    let mut numbers: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for run in &received {
        let id = otlp::trace_id(run);
        let (pipeline, truth_run) = by_trace
            .get(&id)
            .unwrap_or_else(|| panic!("trace {id} is no run of the truth"));
        check_run(run, pipeline, truth_run);
        numbers
            .entry(pipeline["pipeline_id"].as_str().expect("id").to_string())
            .or_default()
            .insert(truth_run["run_number"].as_u64().expect("number"));
    }
    // Per pipeline, the runs up to the last one the scrape shows are exactly those it counts.
    for (pipeline_id, numbers) in &numbers {
        let labels = [("pipeline_id", pipeline_id.as_str())];
        let last = value(&samples, "codearts_pipeline_last_run_number", &labels).unwrap_or(0.0);
        let counted = sum(&samples, "codearts_pipeline_runs_total", &labels);
        let traced_up_to_last = numbers.iter().filter(|n| **n as f64 <= last).count();
        assert_eq!(traced_up_to_last as f64, counted, "pipeline {pipeline_id}");
    }
    assert!(traced.len() as f64 >= runs_total(&samples));
    assert_eq!(exports(&samples, "rejected"), 0.0);

    // The header went to the collector, and its value nowhere else.
    let requests = receiver.received();
    assert!(
        requests
            .iter()
            .all(|r| r.headers.get("authorization").map(String::as_str) == Some(SECRET))
    );
    let (_, body) = common::get(&format!("{}/metrics", exporter.url)).await;
    assert!(!body.contains("trace-secret"), "the secret on /metrics");
    exporter.stop().await;
    assert!(
        !common::harness::test_log().contains("trace-secret"),
        "the secret in the log"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreliable_collector_gets_every_trace_once_and_refused_ones_never_again() {
    let sim = common::harness::start_simulator(6, 2, 22, 500.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let mut receiver = Receiver::down().await;
    let text = traces_config(&sim.url, &truth, &receiver.endpoint(), "");
    let exporter = common::harness::start_exporter(&text).await;
    let wait = Duration::from_secs(90);

    // Down: nothing answers, traces wait.
    exporter
        .scrape_until(wait, "exports failing while down", |s| {
            exports(s, "unreachable") >= 2.0 && pending(s) >= 3.0
        })
        .await;
    // Up, but throttling: retried after its Retry-After.
    receiver.answer(Answer::Status(429, Some(1)));
    receiver.up().await;
    exporter
        .scrape_until(wait, "throttled", |s| exports(s, "throttled") >= 1.0)
        .await;
    // Hanging: the time-out cuts the request, and it is retried.
    receiver.answer(Answer::Hang);
    let before = common::scrape(&exporter.url).await;
    exporter
        .scrape_until(wait, "a hanging collector timed out", |s| {
            exports(s, "unreachable") > exports(&before, "unreachable")
        })
        .await;
    receiver.answer(Answer::Take);
    let samples = exporter
        .scrape_until(wait, "every trace delivered", all_delivered)
        .await;
    assert!(exports(&samples, "success") >= 1.0);
    distinct_traces(&receiver.taken_runs());

    // Refusing: what it refuses is dropped, counted, and never sent again.
    receiver.answer(Answer::Status(400, None));
    let refused_from = receiver.received().len();
    let samples = exporter
        .scrape_until(wait, "traces refused", |s| {
            dropped(s, "rejected") >= 2.0 && pending(s) == 0.0
        })
        .await;
    receiver.answer(Answer::Take);
    let refused_until = receiver.received().len();
    let refused: BTreeSet<String> = receiver.received()[refused_from..refused_until]
        .iter()
        .flat_map(|r| r.runs.iter().map(otlp::trace_id))
        .collect();
    assert!(refused.len() as f64 >= dropped(&samples, "rejected"));
    exporter
        .scrape_until(wait, "more runs delivered", |s| {
            exported(s) > exported(&samples) + 2.0 && pending(s) == 0.0
        })
        .await;
    let later: Vec<_> = receiver.received()[refused_until..]
        .iter()
        .flat_map(|r| r.runs.iter().map(otlp::trace_id))
        .collect();
    assert!(!later.is_empty());
    for id in &later {
        assert!(!refused.contains(id), "refused trace {id} sent again");
    }
    // Every run was delivered once or refused once: none twice, none lost.
    let samples = common::scrape(&exporter.url).await;
    let taken = distinct_traces(&receiver.taken_runs());
    assert!(taken.is_disjoint(&refused));
    assert!(
        (taken.len() + refused.len()) as f64 >= runs_total(&samples),
        "every recorded run was delivered or refused"
    );
    assert_eq!(dropped(&samples, "overflow"), 0.0);
    exporter.stop().await;
    receiver.down_now().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_oldest_traces_are_dropped_and_counted() {
    let sim = common::harness::start_simulator(6, 2, 23, 500.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let receiver = Receiver::down().await;
    let text = traces_config(
        &sim.url,
        &truth,
        &receiver.endpoint(),
        "max_pending_runs = 3",
    );
    let exporter = common::harness::start_exporter(&text).await;
    let samples = exporter
        .scrape_until(Duration::from_secs(90), "traces dropped", |s| {
            dropped(s, "overflow") >= 2.0
        })
        .await;
    assert_eq!(pending(&samples), 3.0);
    // Every recorded run is pending or dropped.
    assert!(dropped(&samples, "overflow") + pending(&samples) >= runs_total(&samples));
    exporter.stop().await;
    sim.stop().await;
}

/// The process scenario: pending traces in the state file across a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_traces_survive_a_kill_and_delivered_ones_are_not_sent_again() {
    let sim = common::start_simulator(4, 2, 24, 500.0);
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Status(503, None));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = traces_config(&sim.url, &truth, &receiver.endpoint(), "");
    text.push_str(&format!(
        "[state]\npath = \"{}\"\n",
        dir.path().join("state.db").display()
    ));
    let wait = Duration::from_secs(90);

    let mut first = common::start_exporter(&text, &[]);
    first
        .scrape_until(wait, "traces pending", |s| {
            pending(s) >= 3.0 && exports(s, "server_error") >= 1.0
        })
        .await;
    first.proc.kill();
    // Everything sent so far was refused with 503: each of it is still pending.
    let refused: HashMap<String, ResourceSpans> = receiver
        .received()
        .into_iter()
        .flat_map(|r| r.runs)
        .map(|run| (otlp::trace_id(&run), run))
        .collect();
    assert!(!refused.is_empty());

    receiver.answer(Answer::Take);
    let mut second = common::start_exporter(&text, &[]);
    second
        .scrape_until(wait, "the kept traces delivered", |s| {
            pending(s) == 0.0 && exported(s) >= refused.len() as f64
        })
        .await;
    let taken = receiver.taken_runs();
    distinct_traces(&taken);
    for (id, before) in &refused {
        let after = taken
            .iter()
            .find(|run| otlp::trace_id(run) == *id)
            .unwrap_or_else(|| panic!("pending trace {id} lost across the kill"));
        assert_eq!(
            after, before,
            "trace {id}: the same spans and ids after the restart"
        );
    }
    assert!(second.proc.terminate().success());

    // Delivered before the stop: not sent again by the next process.
    let delivered = receiver.taken_runs().len();
    let third = common::start_exporter(&text, &[]);
    let samples = third
        .scrape_until(wait, "two more runs delivered", |s| exported(s) >= 2.0)
        .await;
    let taken = receiver.taken_runs();
    distinct_traces(&taken);
    assert!(taken.len() > delivered);
    assert_eq!(
        select(&samples, "codearts_exporter_traces_pending", &[]).len(),
        1
    );
    drop(third);
}

/// A real Prometheus storing exemplars: each run duration bucket's exemplar names the trace the
/// collector received for that run, with the run's duration and end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_leads_from_a_bucket_to_the_trace_of_its_run() {
    use common::prometheus::{Prometheus, promtool, require_tool};
    require_tool("prometheus");
    require_tool("promtool");
    let sim = common::harness::start_simulator(6, 2, 25, 400.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let receiver = Receiver::start().await;
    let text = traces_config(&sim.url, &truth, &receiver.endpoint(), "");
    let exporter = common::harness::start_exporter(&text).await;
    let target = exporter.url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: codearts\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    let mut prometheus =
        Prometheus::start_with(dir.path(), &config, &["--enable-feature=exemplar-storage"]);
    prometheus.wait_ready().await;

    let exemplars_of = |buckets: &'static str| {
        let now = common::harness::now_ms() / 1000.0;
        prometheus.query_exemplars(buckets, now - 600.0, now + 600.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let (runs, stages) = loop {
        let runs = exemplars_of("codearts_pipeline_run_duration_seconds_bucket").await;
        let stages = exemplars_of("codearts_pipeline_stage_duration_seconds_bucket").await;
        if runs.len() >= 5 && !stages.is_empty() {
            break (runs, stages);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exemplars stored; prometheus log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Delivery runs beside the scrapes: wait until the collector has every trace scraped.
    exporter
        .scrape_until(Duration::from_secs(60), "traces delivered", all_delivered)
        .await;
    let taken: HashMap<String, ResourceSpans> = receiver
        .taken_runs()
        .into_iter()
        .map(|run| (otlp::trace_id(&run), run))
        .collect();
    for exemplar in runs.iter().chain(&stages) {
        let labels = &exemplar["labels"];
        let trace_id = labels["trace_id"].as_str().expect("a trace_id label");
        assert_eq!(trace_id.len(), 32);
        let run = taken
            .get(trace_id)
            .unwrap_or_else(|| panic!("exemplar {exemplar} names no trace the collector got"));
        assert_eq!(
            labels["run_id"].as_str(),
            otlp::resource_attribute(run, "cicd.pipeline.run.id")
        );
    }
    for exemplar in &runs {
        let run = &taken[exemplar["labels"]["trace_id"].as_str().expect("id")];
        let root = otlp::spans(run)
            .into_iter()
            .find(|s| s.parent_span_id.is_empty())
            .expect("a root span");
        let duration = (root.end_time_unix_nano - root.start_time_unix_nano) as f64 / 1e9;
        let value: f64 = exemplar["value"]
            .as_str()
            .expect("value")
            .parse()
            .expect("a number");
        assert!((value - duration).abs() < 1e-6, "{exemplar}: {duration}");
        let at = exemplar["timestamp"].as_f64().expect("timestamp");
        assert!(
            (at - root.end_time_unix_nano as f64 / 1e9).abs() < 1e-3,
            "{exemplar}"
        );
    }
    // The text format, without exemplars, stays clean for promtool.
    let (_, body) = common::get(&format!("{}/metrics", exporter.url)).await;
    assert!(!body.contains("trace_id"));
    let lint = promtool(&["check", "metrics"], Some(&body));
    assert!(lint.trim().is_empty(), "promtool check metrics:\n{lint}");
    drop(prometheus);
    exporter.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sends_its_traces_to_the_endpoint_it_is_given() {
    let receiver = Receiver::start().await;
    let endpoint = receiver.endpoint();
    let args = [
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--traces-endpoint",
        &endpoint,
    ];
    let (exporter, line) =
        common::Proc::start(&args, &[], |line| line.contains("metrics at http://"));
    let addr = line
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("exporter address in the demo's line");
    let samples = common::scrape_until(
        &format!("http://{addr}/metrics"),
        Duration::from_secs(60),
        "the demo's first delivered traces",
        |samples| exported(samples) > 0.0,
    )
    .await;
    // Counted once the receiver has answered: every trace counted was taken here, once.
    let taken = receiver.taken_runs();
    assert!(
        taken.len() as f64 >= exported(&samples),
        "{} taken, {} exported; log:\n{}",
        taken.len(),
        exported(&samples),
        exporter.output()
    );
    distinct_traces(&taken);
    for run in &taken {
        assert_eq!(
            otlp::resource_attribute(run, "service.name"),
            Some("codearts-exporter")
        );
        assert!(otlp::resource_attribute(run, "cicd.pipeline.name").is_some());
    }
    drop(exporter);

    // An endpoint `[traces] endpoint` would refuse is a usage error naming the flag.
    let output = std::process::Command::new(common::binary())
        .args(["demo", "--listen", "127.0.0.1:0", "--traces-endpoint"])
        .arg("ftp://collector:4318")
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--traces-endpoint"), "{stderr}");
    assert!(stderr.contains("traces.endpoint"), "{stderr}");
}
