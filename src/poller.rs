//! What to fetch when, and what has already been recorded, per target and pipeline.
//!
//! One poll = one batch status call per chunk of pipeline ids, then a run-detail call for
//! each run that is new, still going, or was seen unfinished and has since been superseded.
//! Every completed run is observed in the histograms exactly once.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::codearts::model::Run;
use crate::codearts::{Client, Error, RunSelector};
use crate::config::{Schedule, StatusApi, TargetConfig};
use crate::metrics::{Metrics, PipelineSeries};

/// Detail calls in flight at once within one poll of one target.
const DETAIL_CONCURRENCY: usize = 8;
/// Superseded-but-unfinished runs remembered per pipeline (older ones are given up).
const MAX_UNFINISHED: usize = 16;
/// Recorded run numbers remembered per pipeline; anything older counts as recorded.
const MAX_RECORDED: usize = 64;

/// Could not set up the schedule.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    /// tokio-cron-scheduler refused a job or could not start.
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
}

/// Identifies a run: by id (v5) or by number (v3).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RunKey {
    id: Option<String>,
    number: Option<u64>,
}

impl RunKey {
    fn of(run: &Run) -> Option<RunKey> {
        if run.run_id.is_none() && run.run_number.is_none() {
            return None;
        }
        Some(RunKey {
            id: run.run_id.clone(),
            number: run.run_number,
        })
    }

    fn selector(&self) -> Option<RunSelector<'_>> {
        match (&self.id, self.number) {
            (Some(id), _) => Some(RunSelector::Id(id)),
            (None, Some(n)) => Some(RunSelector::Number(n)),
            (None, None) => None,
        }
    }
}

/// Run numbers already observed in the histograms, bounded.
#[derive(Debug, Default)]
struct RecordedRuns {
    numbers: BTreeSet<u64>,
    /// Every number at or below this is considered recorded.
    floor: u64,
}

impl RecordedRuns {
    fn contains(&self, number: u64) -> bool {
        number <= self.floor || self.numbers.contains(&number)
    }

    fn insert(&mut self, number: u64) {
        self.numbers.insert(number);
        while self.numbers.len() > MAX_RECORDED {
            if let Some(oldest) = self.numbers.pop_first() {
                self.floor = self.floor.max(oldest);
            }
        }
    }
}

/// What the poller knows about one pipeline.
#[derive(Debug, Default)]
struct PipelineState {
    series: Option<PipelineSeries>,
    /// The latest run as of the last batch status.
    latest: Option<RunKey>,
    /// True once the latest run has been seen completed and fully applied.
    latest_done: bool,
    /// Earlier runs seen unfinished whose completion is still to be recorded.
    unfinished: Vec<RunKey>,
    recorded: RecordedRuns,
    /// Run number behind the `last_run_*` gauges.
    last_completed: Option<u64>,
}

/// Why a run detail is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The pipeline's latest run.
    Latest,
    /// An earlier run that was seen unfinished.
    Superseded,
    /// The run before the latest, fetched once at start-up to fill `last_run_*`.
    Previous,
}

/// Polls one target on its schedule; owns the state of its pipelines.
pub struct TargetPoller {
    target: TargetConfig,
    client: Client,
    metrics: Arc<Metrics>,
    /// Runs that ended before this (exporter start − backfill window) are not observed.
    record_after: f64,
    state: Mutex<HashMap<String, PipelineState>>,
    ready: AtomicBool,
}

impl TargetPoller {
    /// A poller for `target`; `started_at` is the exporter's start, Unix seconds.
    pub fn new(
        target: TargetConfig,
        client: Client,
        metrics: Arc<Metrics>,
        started_at: f64,
    ) -> Self {
        metrics.target_registered(target.label());
        let record_after = started_at - target.backfill_window.as_secs_f64();
        TargetPoller {
            target,
            client,
            metrics,
            record_after,
            state: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }

    /// True once a poll of this target has succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The `target` label.
    pub fn label(&self) -> &str {
        self.target.label()
    }

    /// Runs one poll, unless the previous one is still running (then counts a skip).
    pub async fn poll(&self) {
        let Ok(mut state) = self.state.try_lock() else {
            tracing::warn!(
                target = self.label(),
                "previous poll still running; skipping this one"
            );
            self.metrics.poll_skipped(self.label());
            return;
        };
        let started = Instant::now();
        let ok = self.poll_locked(&mut state).await;
        let elapsed = started.elapsed();
        self.metrics
            .poll_finished(self.label(), elapsed, ok, unix_now());
        if ok {
            self.ready.store(true, Ordering::Relaxed);
        }
        tracing::debug!(
            target = self.label(),
            ok,
            elapsed_ms = elapsed.as_millis() as u64,
            "poll finished"
        );
    }

    async fn poll_locked(&self, state: &mut HashMap<String, PipelineState>) -> bool {
        let mut ok = true;
        let mut latest_runs = Vec::new();
        for chunk in self.target.pipeline_ids.chunks(self.target.chunk_size) {
            let result = match self.target.status_api {
                StatusApi::V5 => self.client.v5_status(&self.target.project_id, chunk).await,
                StatusApi::V3 => self.client.v3_status(chunk).await,
            };
            match result {
                Ok(runs) => latest_runs.extend(runs),
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "batch status failed");
                }
            }
        }

        let mut wanted: Vec<(String, RunKey, Purpose)> = Vec::new();
        for run in &latest_runs {
            if !self.target.pipeline_ids.contains(&run.pipeline_id) {
                continue;
            }
            let Some(key) = RunKey::of(run) else {
                tracing::warn!(target = self.label(), pipeline_id = %run.pipeline_id, "latest run has neither id nor number");
                continue;
            };
            let pipeline = state.entry(run.pipeline_id.clone()).or_default();
            if pipeline.latest.as_ref() != Some(&key) {
                if let Some(previous) = pipeline.latest.take() {
                    if !pipeline.latest_done {
                        remember_unfinished(pipeline, previous);
                    }
                } else if !run.is_completed() {
                    // First sight of a pipeline that is busy: fetch the run before it for `last_run_*`.
                    if let Some(n) = run.run_number.filter(|n| *n > 1) {
                        let previous = RunKey {
                            id: None,
                            number: Some(n - 1),
                        };
                        wanted.push((run.pipeline_id.clone(), previous, Purpose::Previous));
                    }
                }
                pipeline.latest = Some(key.clone());
                pipeline.latest_done = false;
            }
            if let Some(series) = pipeline.series.as_mut() {
                series.set_state(&self.metrics, run.state);
            }
            if !pipeline.latest_done {
                wanted.push((run.pipeline_id.clone(), key, Purpose::Latest));
            }
            for earlier in &pipeline.unfinished {
                wanted.push((
                    run.pipeline_id.clone(),
                    earlier.clone(),
                    Purpose::Superseded,
                ));
            }
        }

        let client = &self.client;
        let project_id = self.target.project_id.as_str();
        let mut fetched: Vec<(String, RunKey, Purpose, Result<Run, Error>)> = stream::iter(wanted)
            .map(|(pipeline_id, key, purpose)| async move {
                let result = match key.selector() {
                    Some(selector) => client.run_detail(project_id, &pipeline_id, selector).await,
                    None => Err(Error::Setup("run without id or number".into())),
                };
                (pipeline_id, key, purpose, result)
            })
            .buffer_unordered(DETAIL_CONCURRENCY)
            .collect()
            .await;
        // Oldest first, so that the newest completed run is the one left in `last_run_*`.
        fetched.sort_by_key(|(_, _, purpose, result)| {
            let number = result.as_ref().ok().and_then(|r| r.run_number).unwrap_or(0);
            (number, *purpose == Purpose::Latest)
        });

        for (pipeline_id, key, purpose, result) in fetched {
            let Some(pipeline) = state.get_mut(&pipeline_id) else {
                continue;
            };
            match result {
                Ok(run) => self.apply(pipeline, &key, purpose, &run),
                Err(Error::Http { status: 404, .. }) if purpose != Purpose::Latest => {
                    // An older run that no longer exists (deleted): nothing left to record.
                    tracing::info!(target = self.label(), %pipeline_id, run = ?key, "run not found; forgetting it");
                    pipeline.unfinished.retain(|k| k != &key);
                }
                Err(err) => {
                    if purpose != Purpose::Previous {
                        ok = false;
                    }
                    log_api_error(self.label(), &err, "run detail failed");
                }
            }
        }
        ok
    }

    /// Applies a fetched run detail to the pipeline's state and series.
    fn apply(&self, pipeline: &mut PipelineState, key: &RunKey, purpose: Purpose, run: &Run) {
        let m = &*self.metrics;
        let name = run
            .pipeline_name
            .clone()
            .unwrap_or_else(|| run.pipeline_id.clone());
        let series = match pipeline.series.as_mut() {
            Some(series) if series.pipeline_name() == name => series,
            _ => {
                if let Some(mut old) = pipeline.series.take() {
                    tracing::info!(pipeline_id = %run.pipeline_id, old = old.pipeline_name(), new = %name, "pipeline renamed; its series start over");
                    old.remove(m);
                }
                pipeline.series.insert(PipelineSeries::new(
                    &self.target.project_id,
                    &run.pipeline_id,
                    &name,
                ))
            }
        };
        let is_latest = purpose == Purpose::Latest && pipeline.latest.as_ref() == Some(key);
        if is_latest {
            series.set_state(m, run.state);
            series.set_stage_states(m, run);
        }
        if !run.is_completed() {
            return;
        }
        if let Some(number) = run.run_number {
            if !pipeline.recorded.contains(number) {
                // Runs seen unfinished ended after we started watching; others must be recent enough.
                let seen_running = purpose == Purpose::Superseded;
                let recent = run.end.is_some_and(|end| end >= self.record_after);
                if seen_running || recent {
                    series.observe_completed(m, run);
                    tracing::debug!(pipeline_id = %run.pipeline_id, run_number = number, result = ?run.result, "run recorded");
                }
                pipeline.recorded.insert(number);
            }
            if pipeline.last_completed.is_none_or(|last| number >= last) {
                series.set_last_completed(m, run);
                pipeline.last_completed = Some(number);
            }
        }
        pipeline.unfinished.retain(|k| k != key);
        if is_latest {
            pipeline.latest_done = true;
        }
    }
}

fn remember_unfinished(pipeline: &mut PipelineState, key: RunKey) {
    if pipeline.unfinished.contains(&key) {
        return;
    }
    pipeline.unfinished.push(key);
    if pipeline.unfinished.len() > MAX_UNFINISHED {
        let dropped = pipeline.unfinished.remove(0);
        tracing::warn!(run = ?dropped, "too many unfinished runs; giving up on the oldest");
    }
}

fn log_api_error(target: &str, err: &Error, what: &str) {
    match err {
        Error::Unauthorized { .. } => {
            tracing::error!(target, error = %err, "{what}: check auth.token")
        }
        _ => tracing::warn!(target, kind = err.kind(), error = %err, "{what}"),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Starts every target: one immediate poll each, then on its own schedule.
pub async fn start(pollers: &[Arc<TargetPoller>]) -> Result<JobScheduler, PollerError> {
    let scheduler = JobScheduler::new().await?;
    for poller in pollers {
        let immediate = poller.clone();
        tokio::spawn(async move { immediate.poll().await });
        let scheduled = poller.clone();
        let run = move |_id, _scheduler| {
            let poller = scheduled.clone();
            Box::pin(async move {
                // Each poll in its own task: a slow target never delays another.
                tokio::spawn(async move { poller.poll().await });
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        };
        let job = match poller.target.poll_schedule() {
            Schedule::Cron(cron) => Job::new_async(cron.as_str(), run)?,
            Schedule::Every(every) => {
                Job::new_repeated_async(every.max(Duration::from_secs(1)), run)?
            }
        };
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_runs_stay_bounded_and_remember_everything_older() {
        let mut recorded = RecordedRuns::default();
        for n in 1..=200 {
            assert!(!recorded.contains(n));
            recorded.insert(n);
            assert!(recorded.contains(n));
        }
        assert_eq!(recorded.numbers.len(), MAX_RECORDED);
        assert!(recorded.contains(1));
        assert!(!recorded.contains(201));
    }

    #[test]
    fn unfinished_runs_stay_bounded() {
        let mut pipeline = PipelineState::default();
        for n in 0..40 {
            remember_unfinished(
                &mut pipeline,
                RunKey {
                    id: None,
                    number: Some(n),
                },
            );
        }
        remember_unfinished(
            &mut pipeline,
            RunKey {
                id: None,
                number: Some(39),
            },
        );
        assert_eq!(pipeline.unfinished.len(), MAX_UNFINISHED);
        assert_eq!(
            pipeline.unfinished[0].number,
            Some(40 - MAX_UNFINISHED as u64)
        );
    }
}
