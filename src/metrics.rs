//! Metric families, and how a run becomes samples.

use std::collections::BTreeSet;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::codearts::model::{Run, RunResult, RunState};
use crate::codearts::{Api, RequestObserver};
use crate::config::MetricsConfig;

/// Labels on every pipeline series, in this order.
const PIPELINE_LABELS: [&str; 3] = ["project_id", "pipeline_id", "pipeline_name"];

/// Every `reason` of `codearts_exporter_api_retries_total`.
const RETRY_REASONS: [&str; 6] = [
    "throttled",
    "server_error",
    "timeout",
    "connect",
    "error",
    "unauthorized",
];

/// Every `kind` of `codearts_exporter_api_errors_total` (see `codearts::Error::kind`).
const ERROR_KINDS: [&str; 3] = ["http", "transport", "decode"];

/// Buckets of the API request latency histogram (seconds).
const API_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of the poll duration histogram (seconds).
const POLL_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Could not create or register a metric family (a programming error, reported at start-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric family the exporter exposes, in one registry.
pub struct Metrics {
    registry: Registry,
    status: GaugeVec,
    last_result: GaugeVec,
    last_duration: GaugeVec,
    last_start: GaugeVec,
    last_end: GaugeVec,
    last_number: GaugeVec,
    run_duration: HistogramVec,
    runs: IntCounterVec,
    runs_missed: IntCounterVec,
    stage_status: GaugeVec,
    stage_last_duration: GaugeVec,
    stage_duration: HistogramVec,
    api_requests: IntCounterVec,
    api_request_duration: HistogramVec,
    api_retries: IntCounterVec,
    api_errors: IntCounterVec,
    auth_refreshes: IntCounterVec,
    poll_duration: HistogramVec,
    target_up: GaugeVec,
    last_successful_poll: GaugeVec,
    polls_skipped: IntCounterVec,
}

fn with_pipeline_labels(extra: &[&'static str]) -> Vec<&'static str> {
    PIPELINE_LABELS.iter().chain(extra).copied().collect()
}

impl Metrics {
    /// Creates and registers every family; buckets come from `[metrics]`.
    pub fn new(config: &MetricsConfig) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let gauge =
            |name: &str, help: &str, extra: &[&'static str]| -> Result<GaugeVec, MetricsError> {
                let vec = GaugeVec::new(Opts::new(name, help), &with_pipeline_labels(extra))?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let status = gauge(
            "codearts_pipeline_status",
            "State of the pipeline's latest run, one-hot (waiting, running, verifying, suspending, completed, unknown).",
            &["status"],
        )?;
        let last_result = gauge(
            "codearts_pipeline_last_run_result",
            "Result of the last completed run, one-hot (success, error, aborted).",
            &["result"],
        )?;
        let last_duration = gauge(
            "codearts_pipeline_last_run_duration_seconds",
            "Duration of the last completed run.",
            &[],
        )?;
        let last_start = gauge(
            "codearts_pipeline_last_run_start_timestamp_seconds",
            "Start time of the last completed run, Unix seconds.",
            &[],
        )?;
        let last_end = gauge(
            "codearts_pipeline_last_run_end_timestamp_seconds",
            "End time of the last completed run, Unix seconds.",
            &[],
        )?;
        let last_number = gauge(
            "codearts_pipeline_last_run_number",
            "Run number of the last completed run.",
            &[],
        )?;
        let stage_status = gauge(
            "codearts_pipeline_stage_status",
            "State of each stage of the latest run, one-hot.",
            &["stage", "status"],
        )?;
        let stage_last_duration = gauge(
            "codearts_pipeline_stage_last_duration_seconds",
            "Duration of each stage that ran in the last completed run.",
            &["stage"],
        )?;
        let histogram = |name: &str,
                         help: &str,
                         buckets: &[f64],
                         labels: &[&str]|
         -> Result<HistogramVec, MetricsError> {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let vec = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let run_duration = histogram(
            "codearts_pipeline_run_duration_seconds",
            "Duration of completed runs, one observation per run.",
            &config.run_duration_buckets,
            &with_pipeline_labels(&["result"]),
        )?;
        let stage_duration = histogram(
            "codearts_pipeline_stage_duration_seconds",
            "Duration of stages that ran, one observation per stage of each completed run.",
            &config.stage_duration_buckets,
            &with_pipeline_labels(&["stage", "result"]),
        )?;
        let runs = IntCounterVec::new(
            Opts::new(
                "codearts_pipeline_runs_total",
                "Completed runs recorded since the exporter started (equals the run duration histogram's _count).",
            ),
            &with_pipeline_labels(&["result"]),
        )?;
        registry.register(Box::new(runs.clone()))?;
        let runs_missed = IntCounterVec::new(
            Opts::new(
                "codearts_pipeline_runs_missed_total",
                "Completed runs found in the history only after they fell out of backfill_window; not recorded.",
            ),
            &with_pipeline_labels(&[]),
        )?;
        registry.register(Box::new(runs_missed.clone()))?;
        let api_request_duration = histogram(
            "codearts_exporter_api_request_duration_seconds",
            "Latency of requests to the CodeArts API.",
            &API_BUCKETS,
            &["api"],
        )?;
        let poll_duration = histogram(
            "codearts_exporter_poll_duration_seconds",
            "Duration of polls of a target; _count is the number of polls.",
            &POLL_BUCKETS,
            &["target"],
        )?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let api_requests = counter(
            "codearts_exporter_api_requests_total",
            "Requests to the CodeArts API by HTTP status code (or timeout, connect, error).",
            &["api", "code"],
        )?;
        let api_retries = counter(
            "codearts_exporter_api_retries_total",
            "Requests to the CodeArts API retried, by reason.",
            &["api", "reason"],
        )?;
        let api_errors = counter(
            "codearts_exporter_api_errors_total",
            "Calls to the CodeArts API that failed after any retries, by kind (http: an error status; transport: time-out or connection; decode: unreadable body or list entry).",
            &["api", "kind"],
        )?;
        // Known label sets start at 0, so rate() and alerts see them before the first retry.
        for api in Api::ALL {
            for reason in RETRY_REASONS {
                api_retries.with_label_values(&[api.as_str(), reason]);
            }
            for kind in ERROR_KINDS {
                api_errors.with_label_values(&[api.as_str(), kind]);
            }
        }
        let auth_refreshes = counter(
            "codearts_exporter_auth_refresh_total",
            "Attempts to obtain an IAM token (method password), by result.",
            &["result"],
        )?;
        let polls_skipped = counter(
            "codearts_exporter_polls_skipped_total",
            "Polls not started because the previous poll of the target was still running.",
            &["target"],
        )?;
        let target_gauge = |name: &str, help: &str| -> Result<GaugeVec, MetricsError> {
            let vec = GaugeVec::new(Opts::new(name, help), &["target"])?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let target_up = target_gauge(
            "codearts_exporter_target_up",
            "1 when the last poll of the target succeeded, else 0.",
        )?;
        let last_successful_poll = target_gauge(
            "codearts_exporter_last_successful_poll_timestamp_seconds",
            "End of the last successful poll of the target, Unix seconds.",
        )?;
        let build_info = GaugeVec::new(
            Opts::new(
                "codearts_exporter_build_info",
                "Build of the exporter; the value is always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            status,
            last_result,
            last_duration,
            last_start,
            last_end,
            last_number,
            run_duration,
            runs,
            runs_missed,
            stage_status,
            stage_last_duration,
            stage_duration,
            api_requests,
            api_request_duration,
            api_retries,
            api_errors,
            auth_refreshes,
            poll_duration,
            target_up,
            last_successful_poll,
            polls_skipped,
        })
    }

    /// The text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(64 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        buffer
    }

    /// Records the end of a poll of `target`.
    pub fn poll_finished(&self, target: &str, elapsed: Duration, ok: bool, now_seconds: f64) {
        self.poll_duration
            .with_label_values(&[target])
            .observe(elapsed.as_secs_f64());
        self.target_up
            .with_label_values(&[target])
            .set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.last_successful_poll
                .with_label_values(&[target])
                .set(now_seconds);
        }
    }

    /// Counts a poll that was skipped because the previous one still ran.
    pub fn poll_skipped(&self, target: &str) {
        self.polls_skipped.with_label_values(&[target]).inc();
    }

    /// Creates the target's series before its first poll (down until proven up).
    pub fn target_registered(&self, target: &str) {
        self.target_up.with_label_values(&[target]).set(0.0);
        self.polls_skipped.with_label_values(&[target]);
    }
}

impl RequestObserver for Metrics {
    fn request_done(&self, api: Api, code: &str, elapsed: Duration) {
        self.api_requests
            .with_label_values(&[api.as_str(), code])
            .inc();
        self.api_request_duration
            .with_label_values(&[api.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    fn retried(&self, api: Api, reason: &str) {
        self.api_retries
            .with_label_values(&[api.as_str(), reason])
            .inc();
    }

    fn failed(&self, api: Api, kind: &'static str) {
        self.api_errors
            .with_label_values(&[api.as_str(), kind])
            .inc();
    }

    fn auth_refresh(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.auth_refreshes.with_label_values(&[result]).inc();
    }
}

/// The series of one pipeline, and which label sets it has created (so they can be removed).
#[derive(Debug)]
pub struct PipelineSeries {
    labels: [String; 3],
    has_status: bool,
    has_last_run: bool,
    has_missed: bool,
    current_stages: BTreeSet<String>,
    last_stages: BTreeSet<String>,
    run_results: BTreeSet<RunResult>,
    stage_results: BTreeSet<(String, RunResult)>,
}

impl PipelineSeries {
    /// A handle for one pipeline; creates no series until something is set.
    pub fn new(project_id: &str, pipeline_id: &str, pipeline_name: &str) -> PipelineSeries {
        PipelineSeries {
            labels: [
                project_id.to_string(),
                pipeline_id.to_string(),
                pipeline_name.to_string(),
            ],
            has_status: false,
            has_last_run: false,
            has_missed: false,
            current_stages: BTreeSet::new(),
            last_stages: BTreeSet::new(),
            run_results: BTreeSet::new(),
            stage_results: BTreeSet::new(),
        }
    }

    /// The `pipeline_name` label value.
    pub fn pipeline_name(&self) -> &str {
        &self.labels[2]
    }

    fn values<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        self.labels
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect()
    }

    /// Sets the one-hot state of the latest run.
    pub fn set_state(&mut self, m: &Metrics, state: RunState) {
        for candidate in RunState::ALL {
            m.status
                .with_label_values(&self.values(&[candidate.as_str()]))
                .set(one_hot(candidate == state));
        }
        self.has_status = true;
    }

    /// Sets the one-hot state of each stage of the latest run (stages no longer there disappear).
    pub fn set_stage_states(&mut self, m: &Metrics, run: &Run) {
        let stages: BTreeSet<String> = run.stages.iter().map(|s| s.name.clone()).collect();
        for gone in self.current_stages.difference(&stages) {
            for candidate in RunState::ALL {
                let _ = m
                    .stage_status
                    .remove_label_values(&self.values(&[gone, candidate.as_str()]));
            }
        }
        for stage in &run.stages {
            for candidate in RunState::ALL {
                m.stage_status
                    .with_label_values(&self.values(&[&stage.name, candidate.as_str()]))
                    .set(one_hot(candidate == stage.state));
            }
        }
        self.current_stages = stages;
    }

    /// Sets the `last_run_*` gauges and per-stage last durations from a completed run.
    pub fn set_last_completed(&mut self, m: &Metrics, run: &Run) {
        if let Some(result) = run.result {
            for candidate in RunResult::ALL {
                m.last_result
                    .with_label_values(&self.values(&[candidate.as_str()]))
                    .set(one_hot(candidate == result));
            }
        }
        let gauges = [
            (&m.last_duration, run.duration()),
            (&m.last_start, run.start),
            (&m.last_end, run.end),
            (&m.last_number, run.run_number.map(|n| n as f64)),
        ];
        for (gauge, value) in gauges {
            match value {
                Some(value) => gauge.with_label_values(&self.values(&[])).set(value),
                None => {
                    let _ = gauge.remove_label_values(&self.values(&[]));
                }
            }
        }
        self.has_last_run = true;
        let ran: BTreeSet<String> = run
            .stages
            .iter()
            .filter(|s| s.duration().is_some())
            .map(|s| s.name.clone())
            .collect();
        for gone in self.last_stages.difference(&ran) {
            let _ = m
                .stage_last_duration
                .remove_label_values(&self.values(&[gone]));
        }
        for stage in &run.stages {
            if let Some(duration) = stage.duration() {
                m.stage_last_duration
                    .with_label_values(&self.values(&[&stage.name]))
                    .set(duration);
            }
        }
        self.last_stages = ran;
    }

    /// Observes a completed run (and each stage that ran) in the histograms. Call once per run.
    pub fn observe_completed(&mut self, m: &Metrics, run: &Run) {
        let (Some(result), Some(duration)) = (run.result, run.duration()) else {
            return;
        };
        m.run_duration
            .with_label_values(&self.values(&[result.as_str()]))
            .observe(duration);
        m.runs
            .with_label_values(&self.values(&[result.as_str()]))
            .inc();
        if self.run_results.insert(result) {
            // The missed counter appears with the first run, so it reads 0 rather than absent.
            m.runs_missed.with_label_values(&self.values(&[]));
        }
        for stage in &run.stages {
            if let (Some(stage_result), Some(duration)) = (stage.result, stage.duration()) {
                m.stage_duration
                    .with_label_values(&self.values(&[&stage.name, stage_result.as_str()]))
                    .observe(duration);
                self.stage_results
                    .insert((stage.name.clone(), stage_result));
            }
        }
    }

    /// Counts a completed run that was found too late to be recorded.
    pub fn missed(&mut self, m: &Metrics) {
        m.runs_missed.with_label_values(&self.values(&[])).inc();
        self.has_missed = true;
    }

    /// Removes every series of this pipeline.
    pub fn remove(&mut self, m: &Metrics) {
        if self.has_status {
            for candidate in RunState::ALL {
                let _ = m
                    .status
                    .remove_label_values(&self.values(&[candidate.as_str()]));
            }
        }
        for stage in &self.current_stages {
            for candidate in RunState::ALL {
                let _ = m
                    .stage_status
                    .remove_label_values(&self.values(&[stage, candidate.as_str()]));
            }
        }
        if self.has_last_run {
            for candidate in RunResult::ALL {
                let _ = m
                    .last_result
                    .remove_label_values(&self.values(&[candidate.as_str()]));
            }
            for gauge in [&m.last_duration, &m.last_start, &m.last_end, &m.last_number] {
                let _ = gauge.remove_label_values(&self.values(&[]));
            }
        }
        for stage in &self.last_stages {
            let _ = m
                .stage_last_duration
                .remove_label_values(&self.values(&[stage]));
        }
        for result in &self.run_results {
            let _ = m
                .run_duration
                .remove_label_values(&self.values(&[result.as_str()]));
            let _ = m.runs.remove_label_values(&self.values(&[result.as_str()]));
        }
        if self.has_missed || !self.run_results.is_empty() {
            let _ = m.runs_missed.remove_label_values(&self.values(&[]));
        }
        for (stage, result) in &self.stage_results {
            let _ = m
                .stage_duration
                .remove_label_values(&self.values(&[stage, result.as_str()]));
        }
        *self = PipelineSeries::new(&self.labels[0], &self.labels[1], &self.labels[2]);
    }
}

fn one_hot(active: bool) -> f64 {
    if active { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codearts::model::StageRun;

    fn stage(
        name: &str,
        state: RunState,
        result: Option<RunResult>,
        times: Option<(f64, f64)>,
    ) -> StageRun {
        StageRun {
            name: name.into(),
            state,
            result,
            start: times.map(|t| t.0),
            end: times.map(|t| t.1),
        }
    }

    fn failed_run() -> Run {
        Run {
            pipeline_id: "p".into(),
            pipeline_name: Some("Pipe \"one\" 流水线".into()),
            run_id: Some("r".into()),
            run_number: Some(7),
            state: RunState::Completed,
            result: Some(RunResult::Error),
            start: Some(1000.0),
            end: Some(1100.5),
            detail_url: None,
            stages: vec![
                stage(
                    "构建",
                    RunState::Completed,
                    Some(RunResult::Success),
                    Some((1000.0, 1040.0)),
                ),
                stage(
                    "test",
                    RunState::Completed,
                    Some(RunResult::Error),
                    Some((1040.0, 1100.5)),
                ),
                stage("deploy", RunState::Waiting, None, None),
                stage("skipped", RunState::Completed, None, None),
            ],
        }
    }

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).expect("utf-8")
    }

    /// The value of the series of `family` whose labels include `labels` (histograms: `_count`/`_sum`).
    fn sample(m: &Metrics, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (base, part) = match family.rsplit_once('_') {
            Some((base, part @ ("count" | "sum"))) => (base, Some(part)),
            _ => (family, None),
        };
        let mut labels = labels.to_vec();
        labels.extend([
            ("project_id", "proj"),
            ("pipeline_id", "p"),
            ("pipeline_name", NAME),
        ]);
        let families = m.registry.gather();
        let mf = families.iter().find(|mf| mf.name() == base)?;
        let metric = mf.get_metric().iter().find(|metric| {
            labels.iter().all(|(k, v)| {
                metric
                    .get_label()
                    .iter()
                    .any(|pair| pair.name() == *k && pair.value() == *v)
            })
        })?;
        Some(match part {
            Some("count") => metric.get_histogram().get_sample_count() as f64,
            Some(_) => metric.get_histogram().get_sample_sum(),
            None => metric.get_gauge().get_value(),
        })
    }

    fn counter(m: &Metrics, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels = labels.to_vec();
        labels.extend([
            ("project_id", "proj"),
            ("pipeline_id", "p"),
            ("pipeline_name", NAME),
        ]);
        let families = m.registry.gather();
        let mf = families.iter().find(|mf| mf.name() == family)?;
        mf.get_metric()
            .iter()
            .find(|metric| {
                labels.iter().all(|(k, v)| {
                    metric
                        .get_label()
                        .iter()
                        .any(|pair| pair.name() == *k && pair.value() == *v)
                })
            })
            .map(|metric| metric.get_counter().get_value())
    }

    const NAME: &str = "Pipe \"one\" 流水线";

    #[test]
    fn a_completed_run_becomes_the_documented_samples() {
        let m = Metrics::new(&MetricsConfig::default()).expect("metrics");
        let mut series = PipelineSeries::new("proj", "p", "Pipe \"one\" 流水线");
        let run = failed_run();
        series.set_state(&m, run.state);
        series.set_stage_states(&m, &run);
        series.set_last_completed(&m, &run);
        series.observe_completed(&m, &run);

        assert_eq!(
            sample(&m, "codearts_pipeline_status", &[("status", "completed")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_status", &[("status", "running")]),
            Some(0.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_status", &[("status", "unknown")]),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_last_run_result",
                &[("result", "error")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_last_run_result",
                &[("result", "success")]
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_last_run_duration_seconds", &[]),
            Some(100.5)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_last_run_number", &[]),
            Some(7.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_last_run_end_timestamp_seconds", &[]),
            Some(1100.5)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_run_duration_seconds_count",
                &[("result", "error")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_run_duration_seconds_sum",
                &[("result", "error")]
            ),
            Some(100.5)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_duration_seconds_count",
                &[("stage", "构建"), ("result", "success")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_duration_seconds_sum",
                &[("stage", "test"), ("result", "error")]
            ),
            Some(60.5)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_status",
                &[("stage", "deploy"), ("status", "waiting")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_last_duration_seconds",
                &[("stage", "test")]
            ),
            Some(60.5)
        );
        assert_eq!(
            counter(&m, "codearts_pipeline_runs_total", &[("result", "error")]),
            Some(1.0)
        );
        assert_eq!(
            counter(&m, "codearts_pipeline_runs_missed_total", &[]),
            Some(0.0)
        );
        series.missed(&m);
        assert_eq!(
            counter(&m, "codearts_pipeline_runs_missed_total", &[]),
            Some(1.0)
        );
        // Stages that never ran have no duration anywhere.
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_duration_seconds_count",
                &[("stage", "deploy")]
            ),
            None
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_last_duration_seconds",
                &[("stage", "skipped")]
            ),
            None
        );
    }

    #[test]
    fn stage_changes_and_removal_leave_no_stale_series() {
        let m = Metrics::new(&MetricsConfig::default()).expect("metrics");
        let mut series = PipelineSeries::new("proj", "p", "Pipe \"one\" 流水线");
        let run = failed_run();
        series.set_state(&m, run.state);
        series.set_stage_states(&m, &run);
        series.set_last_completed(&m, &run);
        series.observe_completed(&m, &run);

        let mut renamed = run.clone();
        renamed.stages.truncate(1);
        series.set_stage_states(&m, &renamed);
        series.set_last_completed(&m, &renamed);
        assert_eq!(
            sample(&m, "codearts_pipeline_stage_status", &[("stage", "deploy")]),
            None
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_last_duration_seconds",
                &[("stage", "test")]
            ),
            None
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_last_duration_seconds",
                &[("stage", "构建")]
            ),
            Some(40.0)
        );

        series.remove(&m);
        let all = text(&m);
        assert!(!all.contains("pipeline_id=\"p\""), "left over:\n{all}");
    }

    #[test]
    fn exporter_families_are_present() {
        let m = Metrics::new(&MetricsConfig::default()).expect("metrics");
        m.target_registered("t");
        m.request_done(Api::V5Status, "200", Duration::from_millis(20));
        m.retried(Api::RunDetail, "throttled");
        m.failed(Api::RunList, "decode");
        m.poll_finished("t", Duration::from_millis(30), true, 1234.0);
        m.poll_skipped("t");
        let all = text(&m);
        for needle in [
            "codearts_exporter_build_info{version=",
            "codearts_exporter_api_requests_total{api=\"v5_status\",code=\"200\"} 1",
            "codearts_exporter_api_retries_total{api=\"run_detail\",reason=\"throttled\"} 1",
            "codearts_exporter_api_errors_total{api=\"run_list\",kind=\"decode\"} 1",
            "codearts_exporter_api_errors_total{api=\"v5_status\",kind=\"transport\"} 0",
            "codearts_exporter_api_request_duration_seconds_count{api=\"v5_status\"} 1",
            "codearts_exporter_poll_duration_seconds_count{target=\"t\"} 1",
            "codearts_exporter_target_up{target=\"t\"} 1",
            "codearts_exporter_last_successful_poll_timestamp_seconds{target=\"t\"} 1234",
            "codearts_exporter_polls_skipped_total{target=\"t\"} 1",
        ] {
            assert!(all.contains(needle), "missing {needle}");
        }
    }
}
