//! Metric families, and how a run becomes samples.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

use crate::codearts::model::{Run, RunResult, RunState};
use crate::codearts::{Api, RequestObserver};
use crate::config::{MetricsConfig, RunLabel};

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

/// `trigger_type` label values: the reference's vocabulary (3.2), lower-cased, plus `other`.
const TRIGGER_TYPES: [(&str, &str); 7] = [
    ("manual", "manual"),
    ("scheduler", "scheduler"),
    ("mr", "mr"),
    ("push", "push"),
    ("createtag", "create_tag"),
    ("issue", "issue"),
    ("note", "note"),
];
/// Label value of anything outside a bounded vocabulary.
const OTHER: &str = "other";

/// The `trigger_type` label of a run's trigger: a known value, or `other`.
pub fn trigger_label(trigger: Option<&str>) -> &'static str {
    let Some(trigger) = trigger else {
        return OTHER;
    };
    let key: String = trigger
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    TRIGGER_TYPES
        .iter()
        .find(|(raw, _)| *raw == key)
        .map_or(OTHER, |(_, label)| label)
}

/// Which extra labels runs get, and the branches kept as values.
#[derive(Debug, Clone)]
struct RunLabels {
    /// Label names in exposition order.
    names: Vec<&'static str>,
    trigger: bool,
    branch: bool,
    branches: BTreeSet<String>,
}

impl RunLabels {
    fn new(config: &MetricsConfig) -> RunLabels {
        let trigger = config.run_labels.contains(&RunLabel::TriggerType);
        let branch = config.run_labels.contains(&RunLabel::Branch);
        // A fixed order whatever the configuration lists first.
        let names = [(trigger, RunLabel::TriggerType), (branch, RunLabel::Branch)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, label)| label.as_str())
            .collect();
        RunLabels {
            names,
            trigger,
            branch,
            branches: config.branches.iter().cloned().collect(),
        }
    }

    /// The values of the extra labels of `run`, in the order of `names`.
    fn values(&self, run: &Run) -> Vec<String> {
        let mut values = Vec::with_capacity(2);
        if self.trigger {
            values.push(trigger_label(run.trigger.as_deref()).to_string());
        }
        if self.branch {
            let branch = run
                .branch
                .as_deref()
                .filter(|b| self.branches.contains(*b))
                .unwrap_or(OTHER);
            values.push(branch.to_string());
        }
        values
    }
}

/// Could not create or register a metric family (a programming error, reported at start-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric family the exporter exposes, in one registry.
pub struct Metrics {
    registry: Registry,
    /// Bumped when a poll ends (or state changes outside a poll): cached renderings expire.
    version: AtomicU64,
    renders: IntCounter,
    status: GaugeVec,
    last_result: GaugeVec,
    last_duration: GaugeVec,
    last_start: GaugeVec,
    last_end: GaugeVec,
    last_number: GaugeVec,
    last_info: GaugeVec,
    run_duration: HistogramVec,
    runs: IntCounterVec,
    runs_missed: IntCounterVec,
    run_queue: HistogramVec,
    run_labels: RunLabels,
    stage_status: GaugeVec,
    stage_last_duration: GaugeVec,
    stage_duration: HistogramVec,
    job_duration: HistogramVec,
    api_requests: IntCounterVec,
    api_request_duration: HistogramVec,
    api_retries: IntCounterVec,
    api_errors: IntCounterVec,
    auth_refreshes: IntCounterVec,
    poll_duration: HistogramVec,
    target_up: GaugeVec,
    last_successful_poll: GaugeVec,
    polls_skipped: IntCounterVec,
    config_reloads: IntCounterVec,
    config_reload_ok: Gauge,
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
        let last_info = gauge(
            "codearts_pipeline_last_run_info",
            "Always 1: the console link of the last completed run, for dashboard tables.",
            &["detail_url"],
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
        let run_labels = RunLabels::new(config);
        let mut run_extra = run_labels.names.clone();
        run_extra.push("result");
        let run_duration = histogram(
            "codearts_pipeline_run_duration_seconds",
            "Duration of completed runs, one observation per run.",
            &config.run_duration_buckets,
            &with_pipeline_labels(&run_extra),
        )?;
        let run_queue = histogram(
            "codearts_pipeline_run_queue_seconds",
            "Time from a run's start to its first stage's start (initialisation and waiting for an executor), one observation per completed run.",
            &config.queue_duration_buckets,
            &with_pipeline_labels(&[]),
        )?;
        let job_duration = histogram(
            "codearts_pipeline_job_duration_seconds",
            "Duration of jobs that ran, one observation per job of each completed run (metrics.jobs).",
            &config.job_duration_buckets,
            &with_pipeline_labels(&["stage", "job", "result"]),
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
            &with_pipeline_labels(&run_extra),
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
        let renders = IntCounter::new(
            "codearts_exporter_metrics_renders_total",
            "Renderings of /metrics; scrapes between changes share one.",
        )?;
        registry.register(Box::new(renders.clone()))?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "codearts_exporter_config_reload_total",
                "Configuration reloads (SIGHUP or a changed file) by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        let config_reload_ok = Gauge::new(
            "codearts_exporter_config_last_reload_successful",
            "1 when the last configuration reload succeeded (or none happened), else 0.",
        )?;
        registry.register(Box::new(config_reload_ok.clone()))?;
        config_reload_ok.set(1.0);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            version: AtomicU64::new(0),
            renders,
            status,
            last_result,
            last_duration,
            last_start,
            last_end,
            last_number,
            last_info,
            run_duration,
            runs,
            runs_missed,
            run_queue,
            run_labels,
            stage_status,
            stage_last_duration,
            stage_duration,
            job_duration,
            api_requests,
            api_request_duration,
            api_retries,
            api_errors,
            auth_refreshes,
            poll_duration,
            target_up,
            last_successful_poll,
            polls_skipped,
            config_reloads,
            config_reload_ok,
        })
    }

    /// The text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        self.renders.inc();
        let mut buffer = Vec::with_capacity(64 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        buffer
    }

    /// Changes with every [`Metrics::changed`]; a rendering of an older version is stale.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Marks the metrics changed. Polls call it when they end, so a scrape sees whole polls and
    /// scrapes between polls share one rendering.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
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
        self.changed();
    }

    /// Counts a poll that was skipped because the previous one still ran.
    pub fn poll_skipped(&self, target: &str) {
        self.polls_skipped.with_label_values(&[target]).inc();
        self.changed();
    }

    /// Counts a configuration reload.
    pub fn config_reloaded(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
        self.config_reload_ok.set(if ok { 1.0 } else { 0.0 });
        self.changed();
    }

    /// Removes the series of a target that left the configuration.
    pub fn target_removed(&self, target: &str) {
        let _ = self.target_up.remove_label_values(&[target]);
        let _ = self.last_successful_poll.remove_label_values(&[target]);
        let _ = self.polls_skipped.remove_label_values(&[target]);
        let _ = self.poll_duration.remove_label_values(&[target]);
        self.changed();
    }

    /// Creates the target's series before its first poll (down until proven up).
    pub fn target_registered(&self, target: &str) {
        self.target_up.with_label_values(&[target]).set(0.0);
        self.polls_skipped.with_label_values(&[target]);
        self.changed();
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
    /// `detail_url` label of the info series, so a new run's link replaces the old one.
    last_url: Option<String>,
    has_queue: bool,
    current_stages: BTreeSet<String>,
    last_stages: BTreeSet<String>,
    /// Values after the pipeline labels of each run series created (run labels, result).
    run_series: BTreeSet<Vec<String>>,
    stage_results: BTreeSet<(String, RunResult)>,
    job_results: BTreeSet<(String, String, RunResult)>,
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
            last_url: None,
            has_queue: false,
            current_stages: BTreeSet::new(),
            last_stages: BTreeSet::new(),
            run_series: BTreeSet::new(),
            stage_results: BTreeSet::new(),
            job_results: BTreeSet::new(),
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
        if run.detail_url != self.last_url {
            self.remove_last_info(m);
            if let Some(url) = &run.detail_url {
                m.last_info.with_label_values(&self.values(&[url])).set(1.0);
            }
            self.last_url = run.detail_url.clone();
        }
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
        let mut extra = m.run_labels.values(run);
        extra.push(result.as_str().to_string());
        let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        m.run_duration
            .with_label_values(&self.values(&extra_refs))
            .observe(duration);
        m.runs.with_label_values(&self.values(&extra_refs)).inc();
        if self.run_series.is_empty() {
            // The missed counter appears with the first run, so it reads 0 rather than absent.
            m.runs_missed.with_label_values(&self.values(&[]));
        }
        self.run_series.insert(extra);
        if let Some(queue) = run.queue() {
            m.run_queue
                .with_label_values(&self.values(&[]))
                .observe(queue);
            self.has_queue = true;
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

    /// Observes each job that ran in `detail` (the run detail of a run recorded once).
    pub fn observe_jobs(&mut self, m: &Metrics, detail: &Run) {
        for stage in &detail.stages {
            for job in &stage.jobs {
                if let (Some(result), Some(duration)) = (job.result, job.duration()) {
                    m.job_duration
                        .with_label_values(&self.values(&[&stage.name, &job.name, result.as_str()]))
                        .observe(duration);
                    self.job_results
                        .insert((stage.name.clone(), job.name.clone(), result));
                }
            }
        }
    }

    /// Counts a completed run that was found too late to be recorded.
    pub fn missed(&mut self, m: &Metrics) {
        m.runs_missed.with_label_values(&self.values(&[])).inc();
        self.has_missed = true;
    }

    fn remove_last_info(&self, m: &Metrics) {
        if let Some(url) = &self.last_url {
            let _ = m.last_info.remove_label_values(&self.values(&[url]));
        }
    }

    /// Removes every series of this pipeline.
    pub fn remove(&mut self, m: &Metrics) {
        self.remove_last_info(m);
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
        for extra in &self.run_series {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            let _ = m.run_duration.remove_label_values(&self.values(&extra));
            let _ = m.runs.remove_label_values(&self.values(&extra));
        }
        if self.has_missed || !self.run_series.is_empty() {
            let _ = m.runs_missed.remove_label_values(&self.values(&[]));
        }
        if self.has_queue {
            let _ = m.run_queue.remove_label_values(&self.values(&[]));
        }
        for (stage, result) in &self.stage_results {
            let _ = m
                .stage_duration
                .remove_label_values(&self.values(&[stage, result.as_str()]));
        }
        for (stage, job, result) in &self.job_results {
            let _ =
                m.job_duration
                    .remove_label_values(&self.values(&[stage, job, result.as_str()]));
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
            jobs: Vec::new(),
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
            detail_url: Some("https://console.example/run/7".into()),
            trigger: Some("Push".into()),
            branch: Some("feature/x".into()),
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
            None if mf.get_field_type() == prometheus::proto::MetricType::COUNTER => {
                metric.get_counter().get_value()
            }
            None => metric.get_gauge().get_value(),
        })
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
            sample(
                &m,
                "codearts_pipeline_last_run_info",
                &[("detail_url", "https://console.example/run/7")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_runs_total", &[("result", "error")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_runs_missed_total", &[]),
            Some(0.0)
        );
        series.missed(&m);
        assert_eq!(
            sample(&m, "codearts_pipeline_runs_missed_total", &[]),
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
        renamed.detail_url = Some("https://console.example/run/8".into());
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

        let all = text(&m);
        assert!(
            all.contains("run/8") && !all.contains("run/7"),
            "one info series, the newest link:\n{all}"
        );

        series.remove(&m);
        let all = text(&m);
        assert!(!all.contains("pipeline_id=\"p\""), "left over:\n{all}");
    }

    #[test]
    fn trigger_types_map_to_a_fixed_vocabulary() {
        let cases = [
            (Some("Manual"), "manual"),
            (Some("Scheduler"), "scheduler"),
            (Some("MR"), "mr"),
            (Some("Push"), "push"),
            (Some("CreateTag"), "create_tag"),
            (Some("Issue"), "issue"),
            (Some("Note"), "note"),
            (Some(" push "), "push"),
            (Some("Webhook"), "other"),
            (Some(""), "other"),
            (None, "other"),
        ];
        for (raw, label) in cases {
            assert_eq!(trigger_label(raw), label, "{raw:?}");
        }
    }

    #[test]
    fn run_labels_are_added_with_bounded_values() {
        let config = MetricsConfig {
            run_labels: vec![RunLabel::Branch, RunLabel::TriggerType],
            branches: vec!["main".into()],
            ..MetricsConfig::default()
        };
        let m = Metrics::new(&config).expect("metrics");
        let mut series = PipelineSeries::new("proj", "p", NAME);
        let mut run = failed_run();
        series.observe_completed(&m, &run);
        run.run_number = Some(8);
        run.branch = Some("main".into());
        run.trigger = Some("Scheduler".into());
        series.observe_completed(&m, &run);
        run.run_number = Some(9);
        run.branch = None;
        run.trigger = Some("SomethingNew".into());
        series.observe_completed(&m, &run);
        for (trigger, branch) in [("push", "other"), ("scheduler", "main"), ("other", "other")] {
            let labels = [
                ("trigger_type", trigger),
                ("branch", branch),
                ("result", "error"),
            ];
            assert_eq!(
                sample(&m, "codearts_pipeline_runs_total", &labels),
                Some(1.0),
                "{labels:?}"
            );
            assert_eq!(
                sample(&m, "codearts_pipeline_run_duration_seconds_count", &labels),
                Some(1.0),
                "{labels:?}"
            );
        }
        let all = text(&m);
        assert_eq!(
            all.lines()
                .filter(|l| l.starts_with("codearts_pipeline_runs_total{"))
                .count(),
            3
        );
        series.remove(&m);
        assert!(!text(&m).contains("pipeline_id=\"p\""));

        // Without run labels, the families keep their plain label set.
        let m = Metrics::new(&MetricsConfig::default()).expect("metrics");
        let mut series = PipelineSeries::new("proj", "p", NAME);
        series.observe_completed(&m, &failed_run());
        assert_eq!(
            sample(&m, "codearts_pipeline_runs_total", &[("result", "error")]),
            Some(1.0)
        );
        let all = text(&m);
        assert!(!all.contains("trigger_type="));
    }

    #[test]
    fn jobs_and_queue_time_are_observed_and_removed() {
        use crate::codearts::model::JobRun;
        let m = Metrics::new(&MetricsConfig::default()).expect("metrics");
        let mut series = PipelineSeries::new("proj", "p", NAME);
        let mut run = failed_run();
        run.start = Some(990.0);
        series.observe_completed(&m, &run);
        assert_eq!(
            sample(&m, "codearts_pipeline_run_queue_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_run_queue_seconds_sum", &[]),
            Some(10.0)
        );
        let job = |name: &str, result: Option<RunResult>, times: Option<(f64, f64)>| JobRun {
            name: name.into(),
            state: RunState::Completed,
            result,
            start: times.map(|t| t.0),
            end: times.map(|t| t.1),
        };
        run.stages[0].jobs = vec![
            job(
                "Maven构建",
                Some(RunResult::Success),
                Some((1000.0, 1030.0)),
            ),
            job(
                "Docker 镜像",
                Some(RunResult::Success),
                Some((1030.0, 1040.0)),
            ),
        ];
        run.stages[1].jobs = vec![
            job("JUnit", Some(RunResult::Error), Some((1040.0, 1100.5))),
            job("never ran", None, None),
        ];
        series.observe_jobs(&m, &run);
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_job_duration_seconds_sum",
                &[
                    ("stage", "构建"),
                    ("job", "Maven构建"),
                    ("result", "success")
                ]
            ),
            Some(30.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_job_duration_seconds_count",
                &[("stage", "test"), ("job", "JUnit"), ("result", "error")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_job_duration_seconds_count",
                &[("job", "never ran")]
            ),
            None
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
