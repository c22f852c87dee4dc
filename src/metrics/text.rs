//! The pipeline families in the Prometheus text format, written straight from the store's
//! compact series (see [`crate::store::series`] for why they bypass the `prometheus` crate).

use std::fmt::Display;
use std::io::{self, Write};

use crate::codearts::model::{RunResult, RunState};
use crate::store::series::{Buckets, Hist, Layout, PipelineData, SeriesTable, lock, push_escaped};

/// Writes every pipeline family of `registry` in the text format.
pub fn write(registry: &SeriesTable, out: &mut dyn Write) -> io::Result<()> {
    // Pollers keep updating while this writes; each pipeline is locked only briefly.
    let all = registry.pipelines();
    let layout = registry.layout();
    for family in Family::ALL {
        if family == Family::StageStatus && !layout.stage_status {
            continue;
        }
        let mut writer = FamilyWriter {
            out: &mut *out,
            family,
            started: false,
        };
        for data in &all {
            writer.pipeline(&lock(data), layout)?;
        }
    }
    Ok(())
}

/// A number as the text format writes it (`+Inf`, `-Inf`, `NaN` included).
struct Num(f64);

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
enum Family {
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
}

impl Family {
    const ALL: [Family; 17] = [
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
    ];

    /// Name, type and help.
    fn describe(self) -> (&'static str, &'static str, &'static str) {
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
        }
    }
}

/// Writes the series of one family, its `# HELP` and `# TYPE` before the first.
struct FamilyWriter<'a> {
    out: &'a mut dyn Write,
    family: Family,
    started: bool,
}

impl FamilyWriter<'_> {
    /// One sample: `name{pipeline labels,extra labels} value`. Extra label values are escaped.
    fn sample(
        &mut self,
        suffix: &str,
        labels: &str,
        extra: &[(&str, &str)],
        value: impl Display,
    ) -> io::Result<()> {
        let (name, kind, help) = self.family.describe();
        if !self.started {
            writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}")?;
            self.started = true;
        }
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
        writeln!(self.out, "}} {value}")
    }

    /// The `_bucket`, `_sum` and `_count` series of a histogram.
    fn histogram(
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
        for (index, le) in buckets.le.iter().enumerate() {
            cumulative += hist.counts.get(index).copied().unwrap_or(0);
            with_le[last].1 = le;
            self.sample("_bucket", labels, &with_le, cumulative)?;
        }
        with_le[last].1 = "+Inf";
        self.sample("_bucket", labels, &with_le, hist.count)?;
        self.sample("_sum", labels, extra, Num(hist.sum))?;
        self.sample("_count", labels, extra, hist.count)
    }

    /// Every series of this family for one pipeline.
    fn pipeline(&mut self, data: &PipelineData, layout: &Layout) -> io::Result<()> {
        let labels = data.labels.as_str();
        match self.family {
            Family::Status => {
                if let Some(state) = data.state {
                    for candidate in RunState::ALL {
                        let hot = u8::from(candidate == state);
                        self.sample("", labels, &[("status", candidate.as_str())], hot)?;
                    }
                }
            }
            Family::LastResult => {
                if let Some(result) = data.last_result {
                    for candidate in RunResult::ALL {
                        let hot = u8::from(candidate == result);
                        self.sample("", labels, &[("result", candidate.as_str())], hot)?;
                    }
                }
            }
            Family::LastDuration | Family::LastStart | Family::LastEnd | Family::LastNumber => {
                let value = match self.family {
                    Family::LastDuration => data.last.duration,
                    Family::LastStart => data.last.start,
                    Family::LastEnd => data.last.end,
                    _ => data.last.number,
                };
                if let Some(value) = value {
                    self.sample("", labels, &[], Num(value))?;
                }
            }
            Family::LastInfo => {
                if let Some(url) = &data.last_url {
                    self.sample("", labels, &[("detail_url", url)], 1)?;
                }
            }
            Family::RunDuration | Family::Runs => {
                for (values, hist) in &data.runs {
                    let extra: Vec<(&str, &str)> = layout
                        .run_label_names
                        .iter()
                        .copied()
                        .zip(values.iter().map(String::as_str))
                        .collect();
                    if self.family == Family::Runs {
                        self.sample("", labels, &extra, hist.count)?;
                    } else {
                        self.histogram(labels, &extra, &layout.run, hist)?;
                    }
                }
            }
            Family::RunsMissed => {
                if let Some(missed) = data.missed {
                    self.sample("", labels, &[], missed)?;
                }
            }
            Family::RunQueue => {
                if let Some(hist) = &data.queue {
                    self.histogram(labels, &[], &layout.queue, hist)?;
                }
            }
            Family::RunPause => {
                if let Some(hist) = &data.pause {
                    self.histogram(labels, &[], &layout.pause, hist)?;
                }
            }
            Family::StageStatus => {
                for (stage, state) in &data.stage_states {
                    for candidate in RunState::ALL {
                        let hot = u8::from(candidate == *state);
                        let extra = [("stage", stage.as_str()), ("status", candidate.as_str())];
                        self.sample("", labels, &extra, hot)?;
                    }
                }
            }
            Family::StageLastDuration => {
                for (stage, duration) in &data.stage_last {
                    self.sample("", labels, &[("stage", stage)], Num(*duration))?;
                }
            }
            Family::StageDuration => {
                for (stage, stats) in &data.stages {
                    self.histogram(labels, &[("stage", stage)], &layout.stage, &stats.duration)?;
                }
            }
            Family::StageFailures => {
                for (stage, stats) in &data.stages {
                    self.sample("", labels, &[("stage", stage)], stats.failures)?;
                }
            }
            Family::JobDuration => {
                for ((stage, job, result), hist) in &data.jobs {
                    let extra = [
                        ("stage", stage.as_str()),
                        ("job", job.as_str()),
                        ("result", result.as_str()),
                    ];
                    self.histogram(labels, &extra, &layout.job, hist)?;
                }
            }
        }
        Ok(())
    }
}
