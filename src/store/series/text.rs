//! The pipeline families in the Prometheus text format, written straight from the store's
//! compact series (see [`super`] for why they bypass the `prometheus` crate). Beside the data on
//! purpose: a new field of [`PipelineData`] does not compile until it is written here.

use std::fmt::Display;
use std::io::{self, Write};

use super::{
    Buckets, Counted, Hist, LastRun, Layout, PipelineData, SeriesTable, lock, push_escaped,
};
use crate::codearts::model::{RunResult, RunState};

impl SeriesTable {
    /// Writes every pipeline family in the text format.
    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        write(self, out)
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
    FailingSince,
    Recovery,
    Deployments,
    LeadTime,
    LeadTimeUnknown,
    Restore,
}

impl Family {
    const ALL: [Family; 23] = [
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
        // Every field named, none left out with `..`: a field added to the data does not
        // compile until it is written (or said to be written elsewhere).
        let PipelineData {
            labels,
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
        match self.family {
            Family::Status => {
                if let Some(state) = *state {
                    for candidate in RunState::ALL {
                        let hot = u8::from(candidate == state);
                        self.sample("", labels, &[("status", candidate.as_str())], hot)?;
                    }
                }
            }
            Family::LastResult => {
                if let Some(result) = *last_result {
                    for candidate in RunResult::ALL {
                        let hot = u8::from(candidate == result);
                        self.sample("", labels, &[("result", candidate.as_str())], hot)?;
                    }
                }
            }
            Family::LastDuration | Family::LastStart | Family::LastEnd | Family::LastNumber => {
                let value = match self.family {
                    Family::LastDuration => last_duration,
                    Family::LastStart => last_start,
                    Family::LastEnd => last_end,
                    _ => last_number,
                };
                if let Some(value) = *value {
                    self.sample("", labels, &[], Num(value))?;
                }
            }
            Family::LastInfo => {
                if let Some(url) = last_url {
                    self.sample("", labels, &[("detail_url", url)], 1)?;
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
                    if self.family == Family::Runs {
                        self.sample("", labels, &extra, hist.count)?;
                    } else {
                        self.histogram(labels, &extra, &layout.run, hist)?;
                    }
                }
            }
            Family::RunsMissed => {
                if let Some(missed) = *missed {
                    self.sample("", labels, &[], missed)?;
                }
            }
            Family::RunQueue => {
                if let Some(hist) = queue {
                    self.histogram(labels, &[], &layout.queue, hist)?;
                }
            }
            Family::RunPause => {
                if let Some(hist) = pause {
                    self.histogram(labels, &[], &layout.pause, hist)?;
                }
            }
            Family::StageStatus => {
                for (stage, state) in stage_states {
                    for candidate in RunState::ALL {
                        let hot = u8::from(candidate == *state);
                        let extra = [("stage", stage.as_str()), ("status", candidate.as_str())];
                        self.sample("", labels, &extra, hot)?;
                    }
                }
            }
            Family::StageLastDuration => {
                for (stage, duration) in stage_last {
                    self.sample("", labels, &[("stage", stage)], Num(*duration))?;
                }
            }
            Family::StageDuration => {
                for (stage, stats) in stages {
                    self.histogram(labels, &[("stage", stage)], &layout.stage, &stats.duration)?;
                }
            }
            Family::StageFailures => {
                for (stage, stats) in stages {
                    self.sample("", labels, &[("stage", stage)], stats.failures)?;
                }
            }
            Family::JobDuration => {
                for ((stage, job, result), hist) in jobs {
                    let extra = [
                        ("stage", stage.as_str()),
                        ("job", job.as_str()),
                        ("result", result.as_str()),
                    ];
                    self.histogram(labels, &extra, &layout.job, hist)?;
                }
            }
            Family::FailingSince => {
                // With the recovery histogram: once a run is recorded.
                if recovery.is_some() {
                    self.sample("", labels, &[], Num(failing_since.unwrap_or(0.0)))?;
                }
            }
            Family::Recovery => {
                if let Some(hist) = recovery {
                    self.histogram(labels, &[], &layout.recovery, hist)?;
                }
            }
            Family::Deployments => {
                for ((environment, result), count) in deployments {
                    let extra = [
                        ("environment", environment.as_str()),
                        ("result", result.as_str()),
                    ];
                    self.sample("", labels, &extra, count)?;
                }
            }
            Family::LeadTime | Family::Restore => {
                let (hists, buckets) = if self.family == Family::LeadTime {
                    (lead_time, &layout.lead_time)
                } else {
                    (restore, &layout.restore)
                };
                for (environment, hist) in hists {
                    self.histogram(labels, &[("environment", environment)], buckets, hist)?;
                }
            }
            Family::LeadTimeUnknown => {
                for ((environment, reason), count) in lead_time_unknown {
                    let extra = [
                        ("environment", environment.as_str()),
                        ("reason", reason.as_str()),
                    ];
                    self.sample("", labels, &extra, count)?;
                }
            }
        }
        Ok(())
    }
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
}
