//! What to fetch when, and what has already been recorded, per target and pipeline.
//!
//! One poll = one batch status call per chunk of pipeline ids (the latest run's state and
//! stages), a run-detail call the first time a v5 pipeline is seen (for its name), and a run
//! history read for each pipeline where a run may have completed since the last poll (the
//! latest run changed or completed). The history read goes back to the last run recorded, so
//! runs that started and finished between two polls are found too. Every completed run is
//! observed in the histograms exactly once.

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

/// Detail and history reads in flight at once within one poll of one target.
const CONCURRENCY: usize = 8;
/// Runs per history page.
const HISTORY_PAGE: u64 = 20;
/// History pages read per pipeline and poll at most.
const MAX_HISTORY_PAGES: u64 = 10;
/// Unfinished runs other than the latest remembered per pipeline (older ones are given up).
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
    /// The latest run as of the last batch status, and whether it had completed.
    latest: Option<RunKey>,
    latest_completed: bool,
    /// The run history must be read: something may have completed since the last read.
    needs_scan: bool,
    /// The history has been read once (the first read only looks back `backfill_window`).
    scanned: bool,
    /// Runs seen unfinished in the history that are not the latest (parallel runs).
    unfinished: BTreeSet<u64>,
    recorded: RecordedRuns,
    /// Highest run number recorded or passed over.
    settled: u64,
    /// Run number behind the `last_run_*` gauges.
    last_completed: Option<u64>,
}

impl PipelineState {
    /// History reads stop at this run number: everything at or below it is settled.
    fn floor(&self) -> u64 {
        match self.unfinished.first() {
            Some(oldest) => self.settled.min(oldest.saturating_sub(1)),
            None => self.settled,
        }
    }
}

/// Polls one target on its schedule; owns the state of its pipelines.
pub struct TargetPoller {
    target: TargetConfig,
    client: Client,
    metrics: Arc<Metrics>,
    /// The exporter's start, Unix seconds.
    started_at: f64,
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
        TargetPoller {
            target,
            client,
            metrics,
            started_at,
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
        latest_runs.retain(|run| self.target.pipeline_ids.contains(&run.pipeline_id));

        // What changed since the last poll, and which names are still unknown.
        let mut names_wanted = Vec::new();
        for run in &latest_runs {
            let Some(key) = RunKey::of(run) else {
                tracing::warn!(target = self.label(), pipeline_id = %run.pipeline_id, "latest run has neither id nor number");
                continue;
            };
            let pipeline = state.entry(run.pipeline_id.clone()).or_default();
            let changed = pipeline.latest.as_ref() != Some(&key);
            let newly_completed = run.is_completed() && !pipeline.latest_completed;
            if changed || newly_completed || !pipeline.unfinished.is_empty() {
                pipeline.needs_scan = true;
            }
            pipeline.latest = Some(key.clone());
            pipeline.latest_completed = run.is_completed();
            if pipeline.series.is_none() {
                match &run.pipeline_name {
                    Some(name) => pipeline.series = Some(self.new_series(&run.pipeline_id, name)),
                    // The v5 status carries no name: the run detail does.
                    None => names_wanted.push((run.pipeline_id.clone(), key)),
                }
            }
        }
        let client = &self.client;
        let project_id = self.target.project_id.as_str();
        let named: Vec<(String, Result<Run, Error>)> = stream::iter(names_wanted)
            .map(|(pipeline_id, key)| async move {
                let result = match key.selector() {
                    Some(selector) => client.run_detail(project_id, &pipeline_id, selector).await,
                    None => Err(Error::Setup("run without id or number".into())),
                };
                (pipeline_id, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (pipeline_id, result) in named {
            match result {
                Ok(detail) => {
                    let name = detail.pipeline_name.unwrap_or_else(|| pipeline_id.clone());
                    let series = self.new_series(&pipeline_id, &name);
                    if let Some(pipeline) = state.get_mut(&pipeline_id) {
                        pipeline.series = Some(series);
                    }
                }
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "run detail (pipeline name) failed");
                }
            }
        }

        // The latest run's state and stages come with the batch status.
        for run in &latest_runs {
            let Some(series) = state
                .get_mut(&run.pipeline_id)
                .and_then(|p| p.series.as_mut())
            else {
                continue;
            };
            series.set_state(&self.metrics, run.state);
            if !run.stages.is_empty() {
                series.set_stage_states(&self.metrics, run);
            }
        }

        // Completed runs come from the history, read only where something may have completed.
        let scans: Vec<(String, u64, bool)> = state
            .iter()
            .filter(|(_, p)| p.needs_scan && p.series.is_some())
            .map(|(id, p)| (id.clone(), p.floor(), !p.scanned))
            .collect();
        let cutoff = self.cutoff();
        let scanned: Vec<(String, Result<Vec<Run>, Error>)> = stream::iter(scans)
            .map(|(pipeline_id, floor, first)| async move {
                let result = self.read_history(&pipeline_id, floor, first, cutoff).await;
                (pipeline_id, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (pipeline_id, result) in scanned {
            let Some(pipeline) = state.get_mut(&pipeline_id) else {
                continue;
            };
            match result {
                Ok(runs) => {
                    if !self.apply_history(pipeline, runs, cutoff) {
                        tracing::warn!(target = self.label(), %pipeline_id, "run history lacks the latest run; reading it again next poll");
                    }
                }
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "run history failed");
                }
            }
        }
        ok
    }

    fn new_series(&self, pipeline_id: &str, name: &str) -> PipelineSeries {
        PipelineSeries::new(&self.target.project_id, pipeline_id, name)
    }

    /// Runs that ended before this are not recorded: before the window at start-up, and
    /// further back than the window later (those count as missed).
    fn cutoff(&self) -> f64 {
        let window = self.target.backfill_window.as_secs_f64();
        (unix_now() - window).max(self.started_at - window)
    }

    /// Reads the history newest first down to run `floor` (or, the first time, to the cutoff).
    async fn read_history(
        &self,
        pipeline_id: &str,
        floor: u64,
        first: bool,
        cutoff: f64,
    ) -> Result<Vec<Run>, Error> {
        let mut runs: Vec<Run> = Vec::new();
        for page in 0..MAX_HISTORY_PAGES {
            let offset = page * HISTORY_PAGE;
            let (batch, total) = self
                .client
                .run_history(&self.target.project_id, pipeline_id, offset, HISTORY_PAGE)
                .await?;
            let last_page = batch.len() < HISTORY_PAGE as usize || offset + HISTORY_PAGE >= total;
            let reached_floor = batch
                .iter()
                .any(|run| run.run_number.is_some_and(|n| n <= floor));
            let reached_cutoff = batch
                .iter()
                .any(|run| run.is_completed() && run.end.is_some_and(|end| end < cutoff));
            runs.extend(batch);
            let found_completed = runs.iter().any(Run::is_completed);
            let done = if first {
                // The first read also looks for the last completed run, for `last_run_*`.
                reached_cutoff && found_completed
            } else {
                reached_floor || reached_cutoff
            };
            if done || last_page {
                break;
            }
        }
        runs.retain(|run| run.run_number.is_some_and(|n| n > floor));
        Ok(runs)
    }

    /// Records the completed runs of a history read once each, oldest first; false when the
    /// read lacked the latest run (it is read again next poll).
    fn apply_history(&self, pipeline: &mut PipelineState, mut runs: Vec<Run>, cutoff: f64) -> bool {
        let floor = pipeline.floor();
        let Some(series) = pipeline.series.as_mut() else {
            return true;
        };
        let m = &*self.metrics;
        let latest_number = pipeline.latest.as_ref().and_then(|k| k.number);
        // The history must reach the latest run; an empty or stale answer is read again.
        let complete = latest_number.is_none_or(|latest| {
            latest <= floor || runs.iter().any(|run| run.run_number == Some(latest))
        });
        runs.sort_by_key(|run| run.run_number);
        runs.dedup_by_key(|run| run.run_number);
        for run in &runs {
            let Some(number) = run.run_number else {
                continue;
            };
            if !run.is_completed() {
                if Some(number) != latest_number {
                    pipeline.unfinished.insert(number);
                    while pipeline.unfinished.len() > MAX_UNFINISHED {
                        pipeline.unfinished.pop_first();
                    }
                }
                continue;
            }
            pipeline.unfinished.remove(&number);
            if !pipeline.recorded.contains(number) {
                if run.end.is_some_and(|end| end >= cutoff) {
                    series.observe_completed(m, run);
                    tracing::debug!(pipeline_id = %run.pipeline_id, run_number = number, result = ?run.result, "run recorded");
                } else if pipeline.scanned {
                    // Completed while we watched, but found too late to record.
                    series.missed(m);
                    tracing::warn!(pipeline_id = %run.pipeline_id, run_number = number, "run older than backfill_window when found; not recorded");
                }
                pipeline.recorded.insert(number);
            }
            pipeline.settled = pipeline.settled.max(number);
            if pipeline.last_completed.is_none_or(|last| number >= last) {
                series.set_last_completed(m, run);
                pipeline.last_completed = Some(number);
            }
        }
        if complete {
            pipeline.needs_scan = false;
            pipeline.scanned = true;
        }
        complete
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
    fn the_history_floor_stays_below_unfinished_runs() {
        let mut pipeline = PipelineState {
            settled: 9,
            ..PipelineState::default()
        };
        assert_eq!(pipeline.floor(), 9);
        pipeline.unfinished.insert(7);
        assert_eq!(pipeline.floor(), 6);
    }
}
