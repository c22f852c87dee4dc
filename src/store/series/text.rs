//! The pipeline families in the Prometheus text format, or in OpenMetrics with exemplars,
//! written straight from the store's compact series (see [`super`] for why they bypass the
//! `prometheus` crate). Beside the data on purpose: a new field of [`PipelineData`] does not
//! compile until it is written here.

use std::fmt::Display;
use std::io::{self, Write};

use super::{
    Buckets, Counted, Exemplar, Hist, LastRun, Layout, PipelineData, SeriesTable, lock,
    push_escaped,
};
use crate::codearts::model::{RunResult, RunState};
use crate::traces::ids::RunKey;

/// OpenMetrics' bound on an exemplar's label names and values together, in characters.
const EXEMPLAR_LABEL_CHARS: usize = 128;

impl SeriesTable {
    /// Writes every pipeline family in the text format.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        write(self, out)
    }

    /// Writes every pipeline family in OpenMetrics, buckets with their exemplars; the caller
    /// ends the exposition (`# EOF`) after its own families.
    pub fn write_openmetrics(&self, out: &mut dyn Write) -> io::Result<()> {
        let all = self.pipelines_with_ids();
        let layout = self.layout();
        for family in Family::ALL {
            if family == Family::StageStatus && !layout.stage_status {
                continue;
            }
            let mut writer = FamilyWriter {
                out: &mut *out,
                family,
                started: false,
                openmetrics: true,
                exemplars: None,
            };
            for ((project_id, pipeline_id), data) in &all {
                writer.exemplars = Some(Exemplars {
                    project_id,
                    pipeline_id,
                    trace_ids: layout.exemplar_trace_ids,
                });
                write_pipeline(&mut writer, family, &lock(data), layout)?;
            }
        }
        Ok(())
    }
}

/// Writes every pipeline family of `table` in the text format.
fn write(table: &SeriesTable, out: &mut dyn Write) -> io::Result<()> {
    // Pollers keep updating while this writes; each pipeline is locked only briefly.
    let all = table.pipelines();
    let layout = table.layout();
    for family in Family::ALL {
        if family == Family::StageStatus && !layout.stage_status {
            continue;
        }
        let mut writer = FamilyWriter {
            out: &mut *out,
            family,
            started: false,
            openmetrics: false,
            exemplars: None,
        };
        for data in &all {
            write_pipeline(&mut writer, family, &lock(data), layout)?;
        }
    }
    Ok(())
}

/// How one pipeline's exemplars name their runs (OpenMetrics and protobuf).
pub(super) struct Exemplars<'a> {
    /// The pipeline's project.
    pub(super) project_id: &'a str,
    /// The pipeline.
    pub(super) pipeline_id: &'a str,
    /// Whether exemplars carry `trace_id` (traces are exported).
    pub(super) trace_ids: bool,
}

impl Exemplars<'_> {
    /// ` # {trace_id="…",run_id="…"} value timestamp`, within OpenMetrics' 128 characters of
    /// label names and values. A run id too long for them is left out (the trace id alone
    /// still leads to the run); without trace ids, such a run has no exemplar.
    fn write(&self, out: &mut dyn Write, exemplar: &Exemplar) -> io::Result<()> {
        let (trace, with_run) = self.labels(exemplar);
        if trace.is_none() && !with_run {
            return Ok(());
        }
        out.write_all(b" # {")?;
        if let Some(trace) = &trace {
            write!(out, "trace_id=\"{trace}\"")?;
        }
        if with_run {
            if trace.is_some() {
                out.write_all(b",")?;
            }
            out.write_all(b"run_id=\"")?;
            write_escaped(out, &exemplar.run)?;
            out.write_all(b"\"")?;
        }
        write!(out, "}} {} {}", Num(exemplar.value), Num(exemplar.end))
    }

    /// The exemplar's labels: its trace id (when traces are exported), and whether its run id
    /// fits beside it; neither means no exemplar.
    pub(super) fn labels(&self, exemplar: &Exemplar) -> (Option<String>, bool) {
        let run = &*exemplar.run;
        let trace = self.trace_ids.then(|| {
            RunKey {
                project_id: self.project_id,
                pipeline_id: self.pipeline_id,
                run,
            }
            .trace_id_hex()
        });
        let trace_chars = trace.as_ref().map_or(0, |id| "trace_id".len() + id.len());
        let with_run = trace_chars + "run_id".len() + run.chars().count() <= EXEMPLAR_LABEL_CHARS;
        (trace, with_run)
    }
}

/// `help` escaped for OpenMetrics, which escapes `"` in HELP too (the text format does not).
fn openmetrics_help(help: &str) -> String {
    let mut escaped = String::with_capacity(help.len());
    push_escaped(&mut escaped, help);
    escaped
}

/// A number as the text format writes it (`+Inf`, `-Inf`, `NaN` included).
#[derive(Clone, Copy)]
pub(super) struct Num(pub(super) f64);

/// A sample's value: written as the text formats write it, sent as a number in protobuf.
pub(super) trait SampleValue: Display + Copy {
    /// The value as a number.
    fn number(self) -> f64;
}

impl SampleValue for u64 {
    fn number(self) -> f64 {
        self as f64
    }
}

impl SampleValue for u8 {
    fn number(self) -> f64 {
        f64::from(self)
    }
}

impl SampleValue for Num {
    fn number(self) -> f64 {
        self.0
    }
}

/// Where [`write_pipeline`] puts a pipeline's samples of one family: a text format, or the
/// protobuf exposition.
pub(super) trait Sink {
    /// One sample: the pipeline's labels (`labels`, as the text formats write them), then
    /// `extra`.
    fn sample(
        &mut self,
        labels: &str,
        extra: &[(&str, &str)],
        value: impl SampleValue,
    ) -> io::Result<()>;

    /// One histogram of `buckets`.
    fn histogram(
        &mut self,
        labels: &str,
        extra: &[(&str, &str)],
        buckets: &Buckets,
        hist: &Hist,
    ) -> io::Result<()>;
}

impl Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_nan() {
            f.write_str("NaN")
        } else if self.0.is_infinite() {
            f.write_str(if self.0 > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Writes `value` escaped as a label value.
fn write_escaped(out: &mut dyn Write, value: &str) -> io::Result<()> {
    if !value.contains(['\\', '"', '\n']) {
        return out.write_all(value.as_bytes());
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    push_escaped(&mut escaped, value);
    out.write_all(escaped.as_bytes())
}

/// The pipeline families, in exposition order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Status,
    LastResult,
    LastDuration,
    LastStart,
    LastEnd,
    LastNumber,
    LastInfo,
    RunDuration,
    Runs,
    RunsMissed,
    RunQueue,
    RunPause,
    StageStatus,
    StageLastDuration,
    StageDuration,
    StageFailures,
    JobDuration,
    FailingSince,
    Recovery,
    Deployments,
    LeadTime,
    LeadTimeUnknown,
    Restore,
}

impl Family {
    pub(super) const ALL: [Family; 23] = [
        Family::Status,
        Family::LastResult,
        Family::LastDuration,
        Family::LastStart,
        Family::LastEnd,
        Family::LastNumber,
        Family::LastInfo,
        Family::RunDuration,
        Family::Runs,
        Family::RunsMissed,
        Family::RunQueue,
        Family::RunPause,
        Family::StageStatus,
        Family::StageLastDuration,
        Family::StageDuration,
        Family::StageFailures,
        Family::JobDuration,
        Family::FailingSince,
        Family::Recovery,
        Family::Deployments,
        Family::LeadTime,
        Family::LeadTimeUnknown,
        Family::Restore,
    ];

    /// Name, type and help.
    pub(super) fn describe(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Family::Status => (
                "codearts_pipeline_status",
                "gauge",
                "State of the pipeline's latest run, one-hot (waiting, running, verifying, suspending, completed, unknown).",
            ),
            Family::LastResult => (
                "codearts_pipeline_last_run_result",
                "gauge",
                "Result of the last completed run, one-hot (success, error, aborted).",
            ),
            Family::LastDuration => (
                "codearts_pipeline_last_run_duration_seconds",
                "gauge",
                "Duration of the last completed run.",
            ),
            Family::LastStart => (
                "codearts_pipeline_last_run_start_timestamp_seconds",
                "gauge",
                "Start time of the last completed run, Unix seconds.",
            ),
            Family::LastEnd => (
                "codearts_pipeline_last_run_end_timestamp_seconds",
                "gauge",
                "End time of the last completed run, Unix seconds.",
            ),
            Family::LastNumber => (
                "codearts_pipeline_last_run_number",
                "gauge",
                "Run number of the last completed run.",
            ),
            Family::LastInfo => (
                "codearts_pipeline_last_run_info",
                "gauge",
                "Always 1: the console link of the last completed run, for dashboard tables.",
            ),
            Family::RunDuration => (
                "codearts_pipeline_run_duration_seconds",
                "histogram",
                "Duration of completed runs, one observation per run.",
            ),
            Family::Runs => (
                "codearts_pipeline_runs_total",
                "counter",
                "Completed runs recorded since the exporter started (equals the run duration histogram's _count).",
            ),
            Family::RunsMissed => (
                "codearts_pipeline_runs_missed_total",
                "counter",
                "Completed runs found in the history only after they fell out of backfill_window; not recorded.",
            ),
            Family::RunQueue => (
                "codearts_pipeline_run_queue_seconds",
                "histogram",
                "Time from a run's start to its first stage's start (initialisation and waiting for an executor), one observation per completed run.",
            ),
            Family::RunPause => (
                "codearts_pipeline_run_pause_seconds",
                "histogram",
                "Time a completed run spent paused (manual reviews, suspensions), from its run detail's pause_time; one observation per run recorded with metrics.jobs.",
            ),
            Family::StageStatus => (
                "codearts_pipeline_stage_status",
                "gauge",
                "State of each stage of the latest run, one-hot (metrics.stage_status).",
            ),
            Family::StageLastDuration => (
                "codearts_pipeline_stage_last_duration_seconds",
                "gauge",
                "Duration of each stage that ran in the last completed run.",
            ),
            Family::StageDuration => (
                "codearts_pipeline_stage_duration_seconds",
                "histogram",
                "Duration of stages that ran, one observation per stage of each completed run, whatever its result.",
            ),
            Family::StageFailures => (
                "codearts_pipeline_stage_failures_total",
                "counter",
                "Completed runs in which the stage failed (result error), per stage that ran.",
            ),
            Family::JobDuration => (
                "codearts_pipeline_job_duration_seconds",
                "histogram",
                "Duration of jobs that ran, one observation per job of each completed run (metrics.jobs).",
            ),
            Family::FailingSince => (
                "codearts_pipeline_failing_since_timestamp_seconds",
                "gauge",
                "When the pipeline's current red streak began (the end of its first failed run), Unix seconds; 0 when its last recorded run was not a failure.",
            ),
            Family::Recovery => (
                "codearts_pipeline_recovery_seconds",
                "histogram",
                "Time from red to green: from the end of the first failed run of a streak to the end of the next successful run.",
            ),
            Family::Deployments => (
                "codearts_deployments_total",
                "counter",
                "Completed deployment runs (pipelines of a [[deployments]] environment) by result.",
            ),
            Family::LeadTime => (
                "codearts_deployment_lead_time_seconds",
                "histogram",
                "Lead time for changes: from the deployed commit's committed_date to the end of the successful deployment run.",
            ),
            Family::LeadTimeUnknown => (
                "codearts_deployment_lead_time_unknown_total",
                "counter",
                "Successful deployments whose lead time is unknown, by reason (no_commit_id, no_repository_id, commit_not_found, repo_error, unparsable_time).",
            ),
            Family::Restore => (
                "codearts_deployment_recovery_seconds",
                "histogram",
                "Failed-deployment recovery time: from the end of the first failed deployment of a streak to the end of the next successful one.",
            ),
        }
    }
}

/// Writes the series of one family, its `# HELP` and `# TYPE` before the first.
struct FamilyWriter<'a, 'b> {
    out: &'a mut dyn Write,
    family: Family,
    started: bool,
    /// OpenMetrics rather than the text format.
    openmetrics: bool,
    /// How the current pipeline's exemplars name their runs (OpenMetrics only).
    exemplars: Option<Exemplars<'b>>,
}

impl Sink for FamilyWriter<'_, '_> {
    fn sample(
        &mut self,
        labels: &str,
        extra: &[(&str, &str)],
        value: impl SampleValue,
    ) -> io::Result<()> {
        self.sample_with("", labels, extra, value, None)
    }

    fn histogram(
        &mut self,
        labels: &str,
        extra: &[(&str, &str)],
        buckets: &Buckets,
        hist: &Hist,
    ) -> io::Result<()> {
        self.write_histogram(labels, extra, buckets, hist)
    }
}

impl FamilyWriter<'_, '_> {
    /// The `# HELP` and `# TYPE` lines. OpenMetrics names a counter family without the
    /// `_total` its samples end with, and escapes `"` in HELP.
    fn header(&mut self) -> io::Result<()> {
        let (name, kind, help) = self.family.describe();
        if !self.openmetrics {
            return writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        let family = match kind {
            "counter" => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let help = openmetrics_help(help);
        writeln!(self.out, "# HELP {family} {help}\n# TYPE {family} {kind}")
    }

    /// A sample, followed in OpenMetrics by its exemplar when it has one.
    fn sample_with(
        &mut self,
        suffix: &str,
        labels: &str,
        extra: &[(&str, &str)],
        value: impl Display,
        exemplar: Option<&Exemplar>,
    ) -> io::Result<()> {
        if !self.started {
            self.header()?;
            self.started = true;
        }
        let (name, _, _) = self.family.describe();
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(suffix.as_bytes())?;
        self.out.write_all(b"{")?;
        self.out.write_all(labels.as_bytes())?;
        for (key, value) in extra {
            self.out.write_all(b",")?;
            self.out.write_all(key.as_bytes())?;
            self.out.write_all(b"=\"")?;
            write_escaped(self.out, value)?;
            self.out.write_all(b"\"")?;
        }
        let (Some(pipeline), Some(exemplar)) = (&self.exemplars, exemplar) else {
            return writeln!(self.out, "}} {value}");
        };
        write!(self.out, "}} {value}")?;
        pipeline.write(self.out, exemplar)?;
        self.out.write_all(b"\n")
    }

    /// The `_bucket`, `_sum` and `_count` series of a histogram; in OpenMetrics each bucket
    /// with its exemplar.
    fn write_histogram(
        &mut self,
        labels: &str,
        extra: &[(&str, &str)],
        buckets: &Buckets,
        hist: &Hist,
    ) -> io::Result<()> {
        let mut with_le: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + 1);
        with_le.extend_from_slice(extra);
        with_le.push(("le", ""));
        let last = with_le.len() - 1;
        let mut cumulative = 0;
        let openmetrics = self.exemplars.is_some();
        let exemplar = |index: usize| hist.exemplar(index).filter(|_| openmetrics);
        for (index, le) in buckets.le.iter().enumerate() {
            cumulative += hist.counts.get(index).copied().unwrap_or(0);
            with_le[last].1 = le;
            self.sample_with("_bucket", labels, &with_le, cumulative, exemplar(index))?;
        }
        with_le[last].1 = "+Inf";
        let inf = exemplar(buckets.le.len());
        self.sample_with("_bucket", labels, &with_le, hist.count, inf)?;
        self.sample_with("_sum", labels, extra, Num(hist.sum), None)?;
        self.sample_with("_count", labels, extra, hist.count, None)
    }
}

/// Puts every series of `family` for one pipeline into `sink`.
pub(super) fn write_pipeline(
    sink: &mut impl Sink,
    family: Family,
    data: &PipelineData,
    layout: &Layout,
) -> io::Result<()> {
    // Every field named, none left out with `..`: a field added to the data does not
    // compile until it is written (or said to be written elsewhere).
    let PipelineData {
        labels,
        // The protobuf exposition's (`labels` has it escaped).
        name: _,
        state,
        stage_states,
        last,
        counted,
        // Not shown until committed and published.
        pending: _,
    } = data;
    let LastRun {
        result: last_result,
        duration: last_duration,
        start: last_start,
        end: last_end,
        number: last_number,
        url: last_url,
        stages: stage_last,
    } = last;
    let Counted {
        runs,
        missed,
        queue,
        pause,
        stages,
        jobs,
        failing_since,
        recovery,
        deployments,
        deploy_failing_since: _,
        restore,
        lead_time,
        lead_time_unknown,
        // Not shown: they wait for their commit's time.
        awaiting_commit: _,
    } = counted;
    let labels = labels.as_str();
    match family {
        Family::Status => {
            if let Some(state) = *state {
                for candidate in RunState::ALL {
                    let hot = u8::from(candidate == state);
                    sink.sample(labels, &[("status", candidate.as_str())], hot)?;
                }
            }
        }
        Family::LastResult => {
            if let Some(result) = *last_result {
                for candidate in RunResult::ALL {
                    let hot = u8::from(candidate == result);
                    sink.sample(labels, &[("result", candidate.as_str())], hot)?;
                }
            }
        }
        Family::LastDuration | Family::LastStart | Family::LastEnd | Family::LastNumber => {
            let value = match family {
                Family::LastDuration => last_duration,
                Family::LastStart => last_start,
                Family::LastEnd => last_end,
                _ => last_number,
            };
            if let Some(value) = *value {
                sink.sample(labels, &[], Num(value))?;
            }
        }
        Family::LastInfo => {
            if let Some(url) = last_url {
                sink.sample(labels, &[("detail_url", url)], 1u8)?;
            }
        }
        Family::RunDuration | Family::Runs => {
            for (values, hist) in runs {
                let extra: Vec<(&str, &str)> = layout
                    .run_label_names
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                if family == Family::Runs {
                    sink.sample(labels, &extra, hist.count)?;
                } else {
                    sink.histogram(labels, &extra, &layout.run, hist)?;
                }
            }
        }
        Family::RunsMissed => {
            if let Some(missed) = *missed {
                sink.sample(labels, &[], missed)?;
            }
        }
        Family::RunQueue => {
            if let Some(hist) = queue {
                sink.histogram(labels, &[], &layout.queue, hist)?;
            }
        }
        Family::RunPause => {
            if let Some(hist) = pause {
                sink.histogram(labels, &[], &layout.pause, hist)?;
            }
        }
        Family::StageStatus => {
            for (stage, state) in stage_states {
                for candidate in RunState::ALL {
                    let hot = u8::from(candidate == *state);
                    let extra = [("stage", stage.as_str()), ("status", candidate.as_str())];
                    sink.sample(labels, &extra, hot)?;
                }
            }
        }
        Family::StageLastDuration => {
            for (stage, duration) in stage_last {
                sink.sample(labels, &[("stage", stage)], Num(*duration))?;
            }
        }
        Family::StageDuration => {
            for (stage, stats) in stages {
                let duration = &stats.duration;
                sink.histogram(labels, &[("stage", stage)], &layout.stage, duration)?;
            }
        }
        Family::StageFailures => {
            for (stage, stats) in stages {
                sink.sample(labels, &[("stage", stage)], stats.failures)?;
            }
        }
        Family::JobDuration => {
            for ((stage, job, result), hist) in jobs {
                let extra = [
                    ("stage", stage.as_str()),
                    ("job", job.as_str()),
                    ("result", result.as_str()),
                ];
                sink.histogram(labels, &extra, &layout.job, hist)?;
            }
        }
        Family::FailingSince => {
            // With the recovery histogram: once a run is recorded.
            if recovery.is_some() {
                sink.sample(labels, &[], Num(failing_since.unwrap_or(0.0)))?;
            }
        }
        Family::Recovery => {
            if let Some(hist) = recovery {
                sink.histogram(labels, &[], &layout.recovery, hist)?;
            }
        }
        Family::Deployments => {
            for ((environment, result), count) in deployments {
                let extra = [
                    ("environment", environment.as_str()),
                    ("result", result.as_str()),
                ];
                sink.sample(labels, &extra, *count)?;
            }
        }
        Family::LeadTime | Family::Restore => {
            let (hists, buckets) = if family == Family::LeadTime {
                (lead_time, &layout.lead_time)
            } else {
                (restore, &layout.restore)
            };
            for (environment, hist) in hists {
                let extra = [("environment", environment.as_str())];
                sink.histogram(labels, &extra, buckets, hist)?;
            }
        }
        Family::LeadTimeUnknown => {
            for ((environment, reason), count) in lead_time_unknown {
                let extra = [
                    ("environment", environment.as_str()),
                    ("reason", reason.as_str()),
                ];
                sink.sample(labels, &extra, *count)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codearts::model::{JobRun, Run};
    use crate::config::MetricsConfig;
    use crate::store::Store;

    /// The place of each family in [`Family::ALL`]; exhaustive, so a new family must be given
    /// one, and the test below then finds it missing from `ALL` until it is added there.
    fn ordinal(family: Family) -> usize {
        match family {
            Family::Status => 0,
            Family::LastResult => 1,
            Family::LastDuration => 2,
            Family::LastStart => 3,
            Family::LastEnd => 4,
            Family::LastNumber => 5,
            Family::LastInfo => 6,
            Family::RunDuration => 7,
            Family::Runs => 8,
            Family::RunsMissed => 9,
            Family::RunQueue => 10,
            Family::RunPause => 11,
            Family::StageStatus => 12,
            Family::StageLastDuration => 13,
            Family::StageDuration => 14,
            Family::StageFailures => 15,
            Family::JobDuration => 16,
            Family::FailingSince => 17,
            Family::Recovery => 18,
            Family::Deployments => 19,
            Family::LeadTime => 20,
            Family::LeadTimeUnknown => 21,
            Family::Restore => 22,
        }
    }

    #[test]
    fn every_family_is_listed_and_written() {
        let listed: Vec<usize> = Family::ALL.into_iter().map(ordinal).collect();
        assert_eq!(listed, (0..Family::ALL.len()).collect::<Vec<_>>());

        // One pipeline with every value set: each family must show at least one sample.
        let config = MetricsConfig {
            stage_status: true,
            ..MetricsConfig::default()
        };
        let store = Store::new(&config).expect("store");
        let mut series = store.new_series("p", "id", "name");
        // Run::example has one stage, "build", that started 1 s after the run.
        let mut run = Run::example("id", "run-1".into(), 1, 100.0, Some(160.0));
        run.result = Some(RunResult::Error);
        run.detail_url = Some("https://console.example/run-1".into());
        run.pause = Some(5.0);
        run.stages[0].result = Some(RunResult::Error);
        run.stages[0].jobs = vec![JobRun {
            id: None,
            name: "compile".into(),
            state: RunState::Completed,
            result: Some(RunResult::Success),
            start: Some(110.0),
            end: Some(140.0),
        }];
        series.set_state(run.state);
        series.set_stage_states(&run);
        series.set_last_completed(&run);
        series.observe_completed(&run);
        series.observe_deployment(&run, "production", None, None, 0.0);
        series.observe_jobs(&run);
        series.observe_pause(&run);
        series.missed(1);
        series.publish();
        let mut out = Vec::new();
        store.series().write_text(&mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        for family in Family::ALL {
            let (name, _, _) = family.describe();
            assert!(
                text.lines()
                    .any(|line| line.starts_with(name) && !line.starts_with('#')),
                "no sample of {name}"
            );
        }
    }

    use std::sync::Arc;

    use super::super::exposition::{OmSample, parse_openmetrics};
    use super::super::{Series, Stored};

    /// Runs as (run id, duration, end), observed in this order: r2 ends after r1 in the same
    /// run bucket (le=60), r0 lands there last but ended first, r3 is past every bound.
    const RUNS: [(&str, f64, f64); 4] = [
        ("r1", 30.0, 1030.0),
        ("r2", 45.0, 2045.0),
        ("r3", 10_000.0, 13_000.0),
        ("r0", 50.0, 550.0),
    ];

    /// A table (exemplars with trace ids when `trace_ids`) and the handle that keeps its one
    /// pipeline, with [`RUNS`] recorded: runs, their stage and job, and their deployments'
    /// lead time (the commit was made at 500).
    fn recorded(trace_ids: bool) -> (Arc<SeriesTable>, Series) {
        let table = Arc::new(SeriesTable::new(&MetricsConfig::default(), trace_ids));
        let mut series = Series::new(&table, "proj", "pipe", "Pipe");
        for (number, (id, duration, end)) in RUNS.into_iter().enumerate() {
            let mut run = Run::example(
                "pipe",
                id.into(),
                number as u64 + 1,
                end - duration,
                Some(end),
            );
            run.stages[0].jobs = vec![JobRun {
                id: None,
                name: "compile".into(),
                state: RunState::Completed,
                result: Some(RunResult::Success),
                start: Some(1.0),
                end: Some(11.0),
            }];
            run.detail_url = Some(format!("https://console.example/{id}"));
            series.set_last_completed(&run);
            series.observe_completed(&run);
            series.observe_jobs(&run);
            series.observe_deployment(&run, "production", Some("c"), Some("repo"), 0.0);
        }
        series.resolve_commit("repo", "c", Ok(500.0));
        series.publish();
        (table, series)
    }

    fn openmetrics(table: &SeriesTable) -> String {
        let mut out = Vec::new();
        table.write_openmetrics(&mut out).expect("write");
        out.extend_from_slice(b"# EOF\n");
        String::from_utf8(out).expect("utf-8")
    }

    fn text(table: &SeriesTable) -> String {
        let mut out = Vec::new();
        table.write_text(&mut out).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    /// The exemplar of the bucket `le` of the family `name`, as (run id, value, timestamp).
    fn exemplar_of(samples: &[OmSample], name: &str, le: &str) -> Option<(String, f64, f64)> {
        let bucket = format!("{name}_bucket");
        let sample = samples
            .iter()
            .find(|s| {
                s.sample.name == bucket && s.sample.labels.get("le").map(String::as_str) == Some(le)
            })
            .unwrap_or_else(|| panic!("no bucket {le} of {name}"));
        let exemplar = sample.exemplar.as_ref()?;
        let run = exemplar.labels.get("run_id").cloned().unwrap_or_default();
        Some((
            run,
            exemplar.value,
            exemplar.timestamp.expect("a timestamp"),
        ))
    }

    #[test]
    fn openmetrics_buckets_carry_their_latest_run_with_its_trace() {
        let (table, _series) = recorded(true);
        let om = openmetrics(&table);
        // Strictly valid: the parser checks names, types, suffixes, +Inf, exemplar syntax,
        // the 128 characters and that each exemplar lies inside its bucket.
        let samples = parse_openmetrics(&om);
        assert!(
            om.contains("# TYPE codearts_pipeline_runs counter\n"),
            "{om}"
        );
        assert!(om.contains("\ncodearts_pipeline_runs_total{"), "{om}");
        assert!(om.contains("# TYPE codearts_pipeline_last_run_info gauge\n"));
        let run = "codearts_pipeline_run_duration_seconds";
        // The later of two runs in a bucket, not the last observed.
        assert_eq!(
            exemplar_of(&samples, run, "60"),
            Some(("r2".into(), 45.0, 2045.0))
        );
        assert_eq!(exemplar_of(&samples, run, "120"), None);
        assert_eq!(
            exemplar_of(&samples, run, "+Inf"),
            Some(("r3".into(), 10_000.0, 13_000.0))
        );
        // Stages and jobs: the run's end is the timestamp.
        let stage = "codearts_pipeline_stage_duration_seconds";
        assert_eq!(
            exemplar_of(&samples, stage, "30"),
            Some(("r3".into(), 1.0, 13_000.0))
        );
        let job = "codearts_pipeline_job_duration_seconds";
        assert_eq!(
            exemplar_of(&samples, job, "10"),
            Some(("r3".into(), 10.0, 13_000.0))
        );
        // Lead time: the deployment run, at its end.
        let lead = "codearts_deployment_lead_time_seconds";
        assert_eq!(
            exemplar_of(&samples, lead, "3600"),
            Some(("r2".into(), 1545.0, 2045.0))
        );
        assert_eq!(
            exemplar_of(&samples, lead, "300"),
            Some(("r0".into(), 50.0, 550.0))
        );
        // The trace of the run, as the traces name it.
        for sample in &samples {
            if let Some(exemplar) = &sample.exemplar {
                let run = &exemplar.labels["run_id"];
                let key = RunKey {
                    project_id: "proj",
                    pipeline_id: "pipe",
                    run,
                };
                assert_eq!(exemplar.labels["trace_id"], key.trace_id_hex());
                assert_eq!(exemplar.labels.len(), 2);
            }
        }
        // Only the run, stage, job and lead time histograms have exemplars.
        let with: std::collections::BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.exemplar.is_some())
            .map(|s| s.family.0.as_str())
            .collect();
        assert_eq!(with, [lead, job, run, stage].into_iter().collect());

        // Without traces: run_id alone.
        let (plain, _series) = recorded(false);
        let samples = parse_openmetrics(&openmetrics(&plain));
        let exemplars: Vec<_> = samples.iter().filter_map(|s| s.exemplar.as_ref()).collect();
        assert!(!exemplars.is_empty());
        assert!(exemplars.iter().all(|e| e.labels.keys().eq(["run_id"])));
    }

    /// `stored` without any exemplar: what a state file from before them holds.
    fn without_exemplars(stored: &Stored) -> Stored {
        super::super::without_field(stored, "exemplars")
    }

    #[test]
    fn the_text_format_is_the_same_with_exemplars_or_without() {
        let (table, series) = recorded(true);
        let with = text(&table);
        assert!(!with.contains(" # "), "{with}");
        let stored = series.stored();
        let json = serde_json::to_string(&stored).expect("json");
        assert!(json.contains("\"exemplars\""), "exemplars are kept: {json}");
        let bare = Arc::new(SeriesTable::new(&MetricsConfig::default(), true));
        let mut restored = Series::new(&bare, "proj", "pipe", "Pipe");
        restored.restore(without_exemplars(&stored));
        assert_eq!(text(&bare), with);
        // Without them, OpenMetrics shows none (and stays valid).
        let om = openmetrics(&bare);
        assert!(parse_openmetrics(&om).iter().all(|s| s.exemplar.is_none()));
    }

    #[test]
    fn exemplars_survive_the_state_store_encoding() {
        let (table, series) = recorded(true);
        // What the state store writes and reads back (serde_json, see `durable`).
        let json = serde_json::to_string(&series.stored()).expect("json");
        let stored: Stored = serde_json::from_str(&json).expect("decode");
        let other = Arc::new(SeriesTable::new(&MetricsConfig::default(), true));
        let mut restored = Series::new(&other, "proj", "pipe", "Pipe");
        restored.restore(stored);
        assert_eq!(openmetrics(&other), openmetrics(&table));
        assert_eq!(text(&other), text(&table));
    }

    #[test]
    fn exemplar_labels_stay_within_128_characters() {
        let write = |trace_ids: bool, run: String| {
            let pipeline = Exemplars {
                project_id: "proj",
                pipeline_id: "pipe",
                trace_ids,
            };
            let exemplar = Exemplar {
                bucket: 0,
                run: run.into(),
                value: 1.5,
                end: 2.25,
            };
            let mut out = Vec::new();
            pipeline.write(&mut out, &exemplar).expect("write");
            String::from_utf8(out).expect("utf-8")
        };
        // trace_id and its 32 digits are 40 characters, run_id 6: 82 are left for the run.
        let at_limit = "流".repeat(82);
        let trace = |run: &str| {
            RunKey {
                project_id: "proj",
                pipeline_id: "pipe",
                run,
            }
            .trace_id_hex()
        };
        assert_eq!(
            write(true, at_limit.clone()),
            format!(
                " # {{trace_id=\"{}\",run_id=\"{at_limit}\"}} 1.5 2.25",
                trace(&at_limit)
            )
        );
        let over = "x".repeat(83);
        assert_eq!(
            write(true, over.clone()),
            format!(" # {{trace_id=\"{}\"}} 1.5 2.25", trace(&over))
        );
        // Without traces, run_id alone: 122 characters fit, more make no exemplar.
        let fits = "y".repeat(122);
        assert_eq!(
            write(false, fits.clone()),
            format!(" # {{run_id=\"{fits}\"}} 1.5 2.25")
        );
        assert_eq!(write(false, "y".repeat(123)), "");
        // Escaped as a label value.
        assert_eq!(
            write(false, "a\"b".into()),
            " # {run_id=\"a\\\"b\"} 1.5 2.25"
        );
    }
}
