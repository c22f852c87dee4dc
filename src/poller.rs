//! What to fetch when, and what has already been recorded, per target and pipeline.
//!
//! One poll = a refresh of the project's pipeline list when discovery is on and
//! `discover_every` has passed; one batch status call per chunk of pipeline ids (the latest
//! run's state and stages); a run-detail call the first time a v5 pipeline is seen, unless
//! discovery named it; and a run history read for each pipeline where a run may have completed
//! since the last poll (the latest run changed or completed). The history read goes back to the
//! last run recorded, so runs that started and finished between two polls are found too. Every
//! completed run is observed in the histograms exactly once; with `metrics.jobs` the detail of
//! each run about to be recorded is read for its jobs. Pipelines no longer polled, or no longer
//! answered by the batch status, lose their series after `gc_after`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::clock::unix_now;
use crate::codearts::model::{PipelineInfo, Run};
use crate::codearts::{Client, Error, RunSelector};
use crate::config::{ShardingConfig, StatusApi, TargetConfig};
use crate::metrics::{Metrics, PipelineSeries};
use crate::schedule::{Heartbeat, Schedule};

/// Detail and history reads in flight at once within one poll of one target.
const CONCURRENCY: usize = 8;
/// Up to this many unknown pipeline names are read by run detail; more, by the pipeline list.
const NAMES_BY_DETAIL: usize = 4;
/// History reads per group (see `scan_group`).
const SCAN_GROUP: usize = 64;
/// Runs per history page.
const HISTORY_PAGE: u64 = 20;
/// History pages read per pipeline and poll at most.
const MAX_HISTORY_PAGES: u64 = 10;
/// Unfinished runs other than the latest remembered per pipeline (older ones are given up).
const MAX_UNFINISHED: usize = 16;
/// Recorded run numbers remembered per pipeline; anything older counts as recorded.
const MAX_RECORDED: usize = 64;

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

/// What the poller knows about one target.
#[derive(Debug, Default)]
struct TargetState {
    pipelines: HashMap<String, PipelineState>,
    /// Pipelines kept by the last successful discovery: id → name.
    discovered: BTreeMap<String, String>,
    /// When discovery last succeeded.
    discovered_at: Option<Instant>,
}

/// What the poller knows about one pipeline.
#[derive(Debug, Default)]
struct PipelineState {
    series: Option<PipelineSeries>,
    /// When the pipeline was first polled, Unix seconds: its first history read records the
    /// runs that ended within `backfill_window` before it (whenever that read happens).
    first_seen: f64,
    /// Since when the pipeline is no longer polled or no longer answered by the batch status.
    absent_since: Option<Instant>,
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
    /// Runs that ended before this are not recorded: before the window at first sight, and
    /// further back than the window later (those count as missed).
    fn cutoff(&self, window: Duration) -> f64 {
        let from = if self.scanned {
            unix_now()
        } else {
            self.first_seen
        };
        from - window.as_secs_f64()
    }

    /// History reads stop at this run number: everything at or below it is settled.
    fn floor(&self) -> u64 {
        match self.unfinished.first() {
            Some(oldest) => self.settled.min(oldest.saturating_sub(1)),
            None => self.settled,
        }
    }

    /// Whether `run`, found in the history, is observed now (not before, never again).
    fn will_record(&self, run: &Run, cutoff: f64) -> bool {
        run.is_completed()
            && run
                .run_number
                .is_some_and(|number| !self.recorded.contains(number))
            && run.end.is_some_and(|end| end >= cutoff)
    }
}

/// Run details of the runs about to be recorded, by run number (for their jobs).
type Details = HashMap<u64, Run>;

/// One history read to do.
#[derive(Debug, Clone)]
struct Scan {
    pipeline_id: String,
    /// Runs at or below this number are settled.
    floor: u64,
    /// The pipeline's first read (the backfill).
    first: bool,
    /// Runs that ended before this are not recorded.
    cutoff: f64,
}

/// What the exporter's start-up fixes for every poller (a reload keeps it).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// When polling of the targets began, Unix seconds: the exporter's start, or the reload
    /// that added a target. The backfill window of the pipelines polled first counts back from it.
    pub started_at: f64,
    /// Read the run detail of each recorded run for its jobs (`metrics.jobs`).
    pub record_jobs: bool,
    /// The share of the pipelines this replica polls.
    pub sharding: ShardingConfig,
}

/// Polls one target on its schedule; owns the state of its pipelines.
pub struct TargetPoller {
    target: TargetConfig,
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    schedule: Schedule,
    /// How long one poll may take before it is cut short.
    poll_timeout: Duration,
    /// Moved by each poll start; the watchdog reads it.
    heartbeat: Heartbeat,
    state: Mutex<TargetState>,
    ready: AtomicBool,
    /// Set when a reload replaced this poller: a poll still scheduled must not run.
    retired: AtomicBool,
}

/// What one poller hands to its successor on a reload: its pipelines' state and series.
pub struct Handover {
    state: TargetState,
    ready: bool,
}

impl Handover {
    /// Removes every pipeline series of the handed-over target.
    pub fn remove_series(mut self, metrics: &Metrics) {
        for pipeline in self.state.pipelines.values_mut() {
            if let Some(series) = pipeline.series.as_mut() {
                series.remove(metrics);
            }
        }
    }
}

impl TargetPoller {
    /// A poller for `target` whose polls may take `poll_timeout` each.
    pub fn new(
        target: TargetConfig,
        client: Client,
        metrics: Arc<Metrics>,
        settings: Settings,
        poll_timeout: Duration,
    ) -> Self {
        metrics.target_registered(target.label());
        Self::with_state(
            target,
            client,
            metrics,
            settings,
            poll_timeout,
            Handover {
                state: TargetState::default(),
                ready: false,
            },
        )
    }

    /// A poller that carries on from a retired one (after a reload): the runs it recorded stay
    /// recorded and its series are kept.
    pub fn resume(
        target: TargetConfig,
        client: Client,
        metrics: Arc<Metrics>,
        settings: Settings,
        poll_timeout: Duration,
        handover: Handover,
    ) -> Self {
        Self::with_state(target, client, metrics, settings, poll_timeout, handover)
    }

    fn with_state(
        target: TargetConfig,
        client: Client,
        metrics: Arc<Metrics>,
        settings: Settings,
        poll_timeout: Duration,
        handover: Handover,
    ) -> Self {
        let schedule = target.poll_schedule();
        let heartbeat = Heartbeat::new(schedule.stall_after(chrono::Utc::now(), poll_timeout));
        TargetPoller {
            target,
            client,
            metrics,
            settings,
            schedule,
            poll_timeout,
            heartbeat,
            state: Mutex::new(handover.state),
            ready: AtomicBool::new(handover.ready),
            retired: AtomicBool::new(false),
        }
    }

    /// Stops this poller once its poll in flight (if any) ends, and hands over its state.
    pub async fn retire(&self) -> Handover {
        let mut state = self.state.lock().await;
        self.retired.store(true, Ordering::Relaxed);
        Handover {
            state: std::mem::take(&mut *state),
            ready: self.is_ready(),
        }
    }

    /// The target's configuration.
    pub fn target(&self) -> &TargetConfig {
        &self.target
    }

    /// When this target polls.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// How long the target's schedule is past the time by which a poll should have started.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.heartbeat.overdue()
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
                target_name = self.label(),
                "previous poll still running; skipping this one"
            );
            self.metrics.poll_skipped(self.label());
            return;
        };
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        self.heartbeat.beat(
            self.schedule
                .stall_after(chrono::Utc::now(), self.poll_timeout),
        );
        self.metrics.poll_started(self.label(), unix_now());
        let started = Instant::now();
        let steady =
            tokio::time::timeout_at(started + self.poll_timeout, self.poll_steady(&mut state));
        let ok = match steady.await {
            Ok((ok, backfill)) => {
                // The first history reads (the backfill of a cold start, or of pipelines found
                // later) may take minutes at scale: they are not cut short, and end this poll.
                let mut backfilled = true;
                for group in backfill.chunks(SCAN_GROUP) {
                    backfilled &= self.scan_group(&mut state.pipelines, group).await;
                }
                ok && backfilled
            }
            Err(_) => {
                // Whatever finished before the cut is recorded; the rest is read next poll.
                tracing::warn!(
                    target_name = self.label(),
                    poll_timeout = ?self.poll_timeout,
                    "poll cut short at its poll_timeout; counted as failed"
                );
                self.metrics.poll_timed_out(self.label());
                false
            }
        };
        let elapsed = started.elapsed();
        self.metrics
            .poll_finished(self.label(), elapsed, ok, unix_now());
        if ok {
            self.ready.store(true, Ordering::Relaxed);
        }
        tracing::debug!(
            target_name = self.label(),
            ok,
            elapsed_ms = elapsed.as_millis() as u64,
            "poll finished"
        );
    }

    /// Discovery, batch status, names and the history reads of pipelines already backfilled:
    /// everything a poll must finish within its deadline. Returns whether it all succeeded, and
    /// the first history reads still to do.
    async fn poll_steady(&self, target_state: &mut TargetState) -> (bool, Vec<Scan>) {
        let mut ok = true;
        // Until the target's first successful poll, pipelines count as seen at its start.
        let first_seen = if self.is_ready() {
            unix_now()
        } else {
            self.settings.started_at
        };
        if self.target.discover && self.discovery_due(target_state) {
            match self.client.list_pipelines(&self.target.project_id).await {
                Ok(pipelines) => self.apply_discovery(target_state, pipelines),
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "pipeline list (discovery) failed");
                }
            }
        }
        let tracked = tracked(
            &self.target,
            &target_state.discovered,
            &self.settings.sharding,
        );
        let tracked_set: HashSet<&str> = tracked.iter().map(String::as_str).collect();
        let discovered = &target_state.discovered;
        let state = &mut target_state.pipelines;

        let mut latest_runs = Vec::new();
        // Pipelines of chunks that failed: not answered, but not gone either.
        let mut unanswered: HashSet<String> = HashSet::new();
        // One chunk after the other: a 429 with Retry-After then holds back the next request,
        // rather than finding others already on their way.
        for chunk in tracked.chunks(self.target.chunk_size) {
            let result = self.batch_status(chunk).await;
            match result {
                Ok(runs) => latest_runs.extend(runs),
                Err(err) => {
                    ok = false;
                    unanswered.extend(chunk.iter().cloned());
                    log_api_error(self.label(), &err, "batch status failed");
                }
            }
        }
        latest_runs.retain(|run| tracked_set.contains(run.pipeline_id.as_str()));

        // What changed since the last poll, and which names are still unknown.
        let window = self.target.backfill_window;
        let mut names_wanted = Vec::new();
        // First seen with a latest run that ended before the cutoff: nothing in its history
        // would be recorded, and that run is its last completed one, so no history read,
        // provided the status carries the stage times too (v5 does, v3 does not).
        let mut settled_by_status: HashSet<String> = HashSet::new();
        for run in &latest_runs {
            let Some(key) = RunKey::of(run) else {
                tracing::warn!(target_name = self.label(), pipeline_id = %run.pipeline_id, "latest run has neither id nor number");
                continue;
            };
            let pipeline = state
                .entry(run.pipeline_id.clone())
                .or_insert_with(|| PipelineState {
                    first_seen,
                    ..PipelineState::default()
                });
            if pipeline.latest.is_none()
                && !pipeline.scanned
                && run.is_completed()
                && run.run_number.is_some()
                && run.end.is_some_and(|end| end < pipeline.cutoff(window))
                && run
                    .stages
                    .iter()
                    .all(|stage| stage.result.is_none() || stage.duration().is_some())
            {
                settled_by_status.insert(run.pipeline_id.clone());
            }
            let may_have_completed = history_may_have_news(
                pipeline.latest.as_ref(),
                pipeline.latest_completed,
                &key,
                run.is_completed(),
                pipeline.scanned.then_some(pipeline.settled),
            );
            if may_have_completed || !pipeline.unfinished.is_empty() {
                pipeline.needs_scan = true;
            }
            pipeline.latest = Some(key.clone());
            pipeline.latest_completed = run.is_completed();
            if pipeline.series.is_none() {
                let name = run
                    .pipeline_name
                    .as_ref()
                    .or_else(|| discovered.get(&run.pipeline_id));
                match name {
                    Some(name) => pipeline.series = Some(self.new_series(&run.pipeline_id, name)),
                    // The v5 status carries no name: discovery or the run detail does.
                    None => names_wanted.push((run.pipeline_id.clone(), key)),
                }
            }
        }
        // Many names wanted (v5 pipelines listed by id, at start-up): the project's pipeline
        // list names 50 per request, a run detail one.
        if names_wanted.len() > NAMES_BY_DETAIL {
            let listed = self
                .client
                .list_pipelines_within(&self.target.project_id, names_wanted.len() as u64)
                .await;
            match listed {
                Ok(Some(pipelines)) => {
                    let names: HashMap<String, String> =
                        pipelines.into_iter().map(|p| (p.id, p.name)).collect();
                    names_wanted.retain(|(pipeline_id, _)| match names.get(pipeline_id) {
                        Some(name) => {
                            let series = self.new_series(pipeline_id, name);
                            if let Some(pipeline) = state.get_mut(pipeline_id) {
                                pipeline.series = Some(series);
                            }
                            false
                        }
                        None => true,
                    });
                }
                Ok(None) => {}
                // The run details below still name them.
                Err(err) => log_api_error(self.label(), &err, "pipeline list (names) failed"),
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
            let Some(pipeline) = state.get_mut(&run.pipeline_id) else {
                continue;
            };
            let Some(series) = pipeline.series.as_mut() else {
                continue;
            };
            series.set_state(&self.metrics, run.state);
            if !run.stages.is_empty() {
                series.set_stage_states(&self.metrics, run);
            }
            if settled_by_status.contains(&run.pipeline_id)
                && let Some(number) = run.run_number
            {
                series.set_last_completed(&self.metrics, run);
                pipeline.last_completed = Some(number);
                pipeline.settled = number;
                pipeline.needs_scan = false;
                pipeline.scanned = true;
            }
        }

        // Completed runs come from the history, read only where something may have completed.
        // Only pipelines the batch status just answered: others may be gone.
        let answered: HashSet<&str> = latest_runs.iter().map(|r| r.pipeline_id.as_str()).collect();
        let (backfill, steady): (Vec<Scan>, Vec<Scan>) = state
            .iter()
            .filter(|(id, p)| p.needs_scan && p.series.is_some() && answered.contains(id.as_str()))
            .map(|(id, p)| Scan {
                pipeline_id: id.clone(),
                floor: p.floor(),
                first: !p.scanned,
                cutoff: p.cutoff(window),
            })
            .partition(|scan| scan.first);
        self.collect_absent(state, &tracked_set, &answered, &unanswered);
        // A group at a time, so that only one group of histories is held at once.
        for group in steady.chunks(SCAN_GROUP) {
            ok &= self.scan_group(state, group).await;
        }
        (ok, backfill)
    }

    /// Reads the histories of `group` and records what they hold; false when a read failed.
    /// Each pipeline's history is recorded whole or not at all, so a poll cut short between two
    /// reads loses nothing and records nothing twice.
    async fn scan_group(&self, state: &mut HashMap<String, PipelineState>, group: &[Scan]) -> bool {
        let mut ok = true;
        let cutoffs: HashMap<&str, f64> = group
            .iter()
            .map(|scan| (scan.pipeline_id.as_str(), scan.cutoff))
            .collect();
        let scanned: Vec<(String, Result<Vec<Run>, Error>)> = stream::iter(group.iter().cloned())
            .map(|scan| async move {
                let result = self
                    .read_history(&scan.pipeline_id, scan.floor, scan.first, scan.cutoff)
                    .await;
                (scan.pipeline_id, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut histories = Vec::with_capacity(scanned.len());
        for (pipeline_id, result) in scanned {
            match result {
                Ok(runs) => histories.push((pipeline_id, runs)),
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "run history failed");
                }
            }
        }
        let mut details = if self.settings.record_jobs {
            let (details, fetched) = self.read_details(state, &histories, &cutoffs).await;
            ok &= fetched;
            details
        } else {
            HashMap::new()
        };
        for (pipeline_id, runs) in histories {
            let Some(pipeline) = state.get_mut(&pipeline_id) else {
                continue;
            };
            let pipeline_details = match details.remove(&pipeline_id) {
                Some(Some(found)) => found,
                // A detail failed: nothing of this pipeline is recorded before it can be whole.
                Some(None) => continue,
                None => Details::new(),
            };
            let cutoff = cutoffs
                .get(pipeline_id.as_str())
                .copied()
                .unwrap_or(f64::MAX);
            if !self.apply_history(pipeline, runs, cutoff, &pipeline_details) {
                tracing::warn!(target_name = self.label(), %pipeline_id, "run history lacks the latest run; reading it again next poll");
            }
        }
        ok
    }

    /// The latest run of each of `chunk`'s pipelines, from the target's batch status API.
    async fn batch_status(&self, chunk: &[String]) -> Result<Vec<Run>, Error> {
        match self.target.status_api {
            StatusApi::V5 => self.client.v5_status(&self.target.project_id, chunk).await,
            StatusApi::V3 => self.client.v3_status(chunk).await,
        }
    }

    /// Whether the pipeline list must be read again.
    fn discovery_due(&self, state: &TargetState) -> bool {
        state
            .discovered_at
            .is_none_or(|at| at.elapsed() >= self.target.discover_every)
    }

    /// Keeps the pipelines the target's filters select.
    fn apply_discovery(&self, state: &mut TargetState, pipelines: Vec<PipelineInfo>) {
        let listed = pipelines.len();
        let kept: BTreeMap<String, String> = pipelines
            .into_iter()
            .filter(|p| selects(&self.target, p))
            .map(|p| (p.id, p.name))
            .collect();
        let added = kept
            .keys()
            .filter(|id| !state.discovered.contains_key(*id))
            .count();
        let dropped = state
            .discovered
            .keys()
            .filter(|id| !kept.contains_key(*id))
            .count();
        if added > 0 || dropped > 0 {
            tracing::info!(
                target_name = self.label(),
                listed,
                kept = kept.len(),
                added,
                dropped,
                "discovered pipelines changed"
            );
        }
        state.discovered = kept;
        state.discovered_at = Some(Instant::now());
    }

    /// Reads the run detail of every run about to be recorded. Per pipeline: the details, or
    /// `None` when one failed; and whether every read succeeded.
    async fn read_details(
        &self,
        state: &HashMap<String, PipelineState>,
        histories: &[(String, Vec<Run>)],
        cutoffs: &HashMap<&str, f64>,
    ) -> (HashMap<String, Option<Details>>, bool) {
        let mut wanted: Vec<(String, u64, RunKey)> = Vec::new();
        for (pipeline_id, runs) in histories {
            let Some(pipeline) = state.get(pipeline_id) else {
                continue;
            };
            let cutoff = cutoffs
                .get(pipeline_id.as_str())
                .copied()
                .unwrap_or(f64::MAX);
            for run in runs.iter().filter(|run| pipeline.will_record(run, cutoff)) {
                if let (Some(number), Some(key)) = (run.run_number, RunKey::of(run)) {
                    wanted.push((pipeline_id.clone(), number, key));
                }
            }
        }
        let client = &self.client;
        let project_id = self.target.project_id.as_str();
        let fetched: Vec<(String, u64, Result<Run, Error>)> = stream::iter(wanted)
            .map(|(pipeline_id, number, key)| async move {
                let result = match key.selector() {
                    Some(selector) => client.run_detail(project_id, &pipeline_id, selector).await,
                    None => Err(Error::Setup("run without id or number".into())),
                };
                (pipeline_id, number, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut details: HashMap<String, Option<Details>> = HashMap::new();
        let mut all_ok = true;
        for (pipeline_id, number, result) in fetched {
            let entry = details
                .entry(pipeline_id)
                .or_insert_with(|| Some(Details::new()));
            match result {
                Ok(detail) => {
                    if let Some(found) = entry {
                        found.insert(number, detail);
                    }
                }
                Err(err) => {
                    all_ok = false;
                    *entry = None;
                    log_api_error(self.label(), &err, "run detail (jobs) failed");
                }
            }
        }
        (details, all_ok)
    }

    /// Starts the grace period of pipelines no longer polled or no longer answered, and removes
    /// the series of those whose grace period is over.
    fn collect_absent(
        &self,
        state: &mut HashMap<String, PipelineState>,
        tracked: &HashSet<&str>,
        answered: &HashSet<&str>,
        unanswered: &HashSet<String>,
    ) {
        let now = Instant::now();
        state.retain(|id, pipeline| {
            let present = tracked.contains(id.as_str())
                && (answered.contains(id.as_str()) || unanswered.contains(id));
            if present {
                pipeline.absent_since = None;
                return true;
            }
            let since = *pipeline.absent_since.get_or_insert(now);
            if now.duration_since(since) < self.target.gc_after {
                return true;
            }
            if let Some(series) = pipeline.series.as_mut() {
                series.remove(&self.metrics);
            }
            tracing::info!(target_name = self.label(), pipeline_id = %id, "pipeline gone; its series are removed");
            false
        });
    }

    fn new_series(&self, pipeline_id: &str, name: &str) -> PipelineSeries {
        PipelineSeries::new(&self.target.project_id, pipeline_id, name)
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
        if first {
            // Of the runs that ended before the cutoff only the newest counts (`last_run_*`).
            let ended_before =
                |run: &Run| run.is_completed() && run.end.is_some_and(|end| end < cutoff);
            let newest_before = runs
                .iter()
                .filter(|run| ended_before(run))
                .filter_map(|run| run.run_number)
                .max();
            runs.retain(|run| !ended_before(run) || run.run_number == newest_before);
        }
        Ok(runs)
    }

    /// Records the completed runs of a history read once each, oldest first; `details` holds
    /// the run details (for jobs) of the runs recorded now, when jobs are observed. False when
    /// the read lacked the latest run (it is read again next poll).
    fn apply_history(
        &self,
        pipeline: &mut PipelineState,
        mut runs: Vec<Run>,
        cutoff: f64,
        details: &Details,
    ) -> bool {
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
                if Some(number) == latest_number {
                    // The batch status follows the latest run; its completion triggers a read.
                    pipeline.unfinished.remove(&number);
                } else {
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
                    if let Some(detail) = details.get(&number) {
                        series.observe_jobs(m, detail);
                    }
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

/// Whether a run may have completed since the last poll, given the latest run then (and
/// whether it had completed) and now, and the highest run number settled (recorded or passed
/// over) once the history has been read. A latest run that directly follows the settled ones
/// hides nothing: any run in between would have a number in between.
fn history_may_have_news(
    previous: Option<&RunKey>,
    previous_completed: bool,
    latest: &RunKey,
    completed: bool,
    settled: Option<u64>,
) -> bool {
    if let (Some(settled), Some(now)) = (settled, latest.number) {
        return if completed {
            now > settled
        } else {
            now > settled + 1
        };
    }
    let changed = previous != Some(latest);
    if completed && (changed || !previous_completed) {
        return true;
    }
    let successor = previous_completed
        && previous
            .and_then(|p| p.number)
            .zip(latest.number)
            .is_some_and(|(before, now)| now == before + 1);
    changed && !successor
}

/// Whether discovery keeps `pipeline`: `include` matches its name, `exclude` does not, and it
/// carries one of `tags` (each filter only when set).
fn selects(target: &TargetConfig, pipeline: &PipelineInfo) -> bool {
    target
        .include
        .as_ref()
        .is_none_or(|p| p.is_match(&pipeline.name))
        && !target
            .exclude
            .as_ref()
            .is_some_and(|p| p.is_match(&pipeline.name))
        && (target.tags.is_empty() || pipeline.tags.iter().any(|t| target.tags.contains(t)))
}

/// The pipelines to poll: the configured ids, then discovered ones, each once.
fn tracked(
    target: &TargetConfig,
    discovered: &BTreeMap<String, String>,
    sharding: &ShardingConfig,
) -> Vec<String> {
    let mut seen = HashSet::new();
    target
        .pipeline_ids
        .iter()
        .chain(discovered.keys())
        .filter(|id| sharding.owns(id))
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

fn log_api_error(target_name: &str, err: &Error, what: &str) {
    match err {
        Error::Unauthorized { .. } => {
            tracing::error!(target_name, error = %err, "{what}: check auth.token")
        }
        _ => tracing::warn!(target_name, kind = err.kind(), error = %err, "{what}"),
    }
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

    fn target(extra: &str) -> TargetConfig {
        let text = format!(
            "[auth]\nmethod = \"token\"\ntoken = \"t\"\n[[targets]]\n\
             project_id = \"0123456789abcdef0123456789abcdef\"\ninterval = \"1s\"\n{extra}\n"
        );
        match crate::config::Config::from_toml(&text) {
            Ok(mut config) => config.targets.remove(0),
            Err(err) => panic!("{err}"),
        }
    }

    fn info(id: &str, name: &str, tags: &[&str]) -> PipelineInfo {
        PipelineInfo {
            id: id.into(),
            name: name.into(),
            tags: tags.iter().map(|t| (*t).to_string()).collect(),
        }
    }

    #[test]
    fn discovery_filters_by_name_and_tags() {
        let all = target("discover = true");
        assert!(selects(&all, &info("a", "anything", &[])));
        let named = target("discover = true\ninclude = \"^订单\"\nexclude = \"(?i)nightly\"");
        assert!(selects(&named, &info("a", "订单服务-build", &[])));
        assert!(!selects(&named, &info("b", "订单服务-Nightly", &[])));
        assert!(!selects(&named, &info("c", "支付-订单", &[])));
        let tagged = target("discover = true\ntags = [\"backend\", \"发布\"]");
        assert!(selects(&tagged, &info("a", "x", &["frontend", "发布"])));
        assert!(!selects(&tagged, &info("b", "x", &["frontend"])));
        assert!(!selects(&tagged, &info("c", "x", &[])));
    }

    #[test]
    fn configured_and_discovered_ids_are_polled_once_each() {
        let ids = [
            "11111111111111111111111111111111",
            "22222222222222222222222222222222",
            "33333333333333333333333333333333",
        ];
        let config = target(&format!(
            "discover = true\npipeline_ids = [\"{}\", \"{}\"]",
            ids[1], ids[0]
        ));
        let discovered: BTreeMap<String, String> = [ids[0], ids[2]]
            .iter()
            .map(|id| ((*id).to_string(), format!("name of {id}")))
            .collect();
        let everything = ShardingConfig::default();
        assert_eq!(
            tracked(&config, &discovered, &everything),
            [ids[1], ids[0], ids[2]]
        );
        assert_eq!(
            tracked(&config, &BTreeMap::new(), &everything),
            [ids[1], ids[0]]
        );
    }

    #[test]
    fn the_history_is_read_only_when_a_run_may_have_completed() {
        let key = |number: u64| RunKey {
            id: Some(format!("run-{number}")),
            number: Some(number),
        };
        // Before the first read nothing is settled; the previous poll's latest run decides.
        let read = |previous: Option<(u64, bool)>, now: (u64, bool)| {
            let previous_key = previous.map(|(n, _)| key(n));
            history_may_have_news(
                previous_key.as_ref(),
                previous.is_some_and(|(_, done)| done),
                &key(now.0),
                now.1,
                None,
            )
        };
        // First sight: read (back to the window).
        assert!(read(None, (5, false)));
        assert!(read(None, (5, true)));
        // Nothing changed.
        assert!(!read(Some((5, false)), (5, false)));
        assert!(!read(Some((5, true)), (5, true)));
        // The latest run completed.
        assert!(read(Some((5, false)), (5, true)));
        // The next run started after a completed one: nothing to record yet.
        assert!(!read(Some((5, true)), (6, false)));
        // ... or already completed too.
        assert!(read(Some((5, true)), (6, true)));
        // The previous one completed unseen, or runs happened in between.
        assert!(read(Some((5, false)), (6, false)));
        assert!(read(Some((5, true)), (7, false)));
        // Without run numbers nothing can be ruled out.
        let unnumbered = RunKey {
            id: Some("b".into()),
            number: None,
        };
        let previous = RunKey {
            id: Some("a".into()),
            number: None,
        };
        assert!(history_may_have_news(
            Some(&previous),
            true,
            &unnumbered,
            false,
            Some(4),
        ));
        // Once read, the runs settled decide, whatever the previous poll saw.
        let read_settled = |settled: u64, now: (u64, bool)| {
            history_may_have_news(Some(&key(5)), false, &key(now.0), now.1, Some(settled))
        };
        // Run 6 completed and was recorded by a read that saw 7 start: nothing new.
        assert!(!read_settled(6, (7, false)));
        // Run 7 completed since.
        assert!(read_settled(6, (7, true)));
        // Run 7 started and completed unseen; 8 runs now.
        assert!(read_settled(6, (8, false)));
        // The latest run was recorded already.
        assert!(!read_settled(7, (7, true)));
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
