//! The steps of a poll, in order (see [`TargetPoller::steady`]): discover (the pipeline list,
//! when due), list the unnamed (on a cold start without discovery), read the status, note each
//! pipeline's latest run, name new pipelines, show the status, mark absent pipelines, and scan
//! the histories where a run may have completed.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::StreamExt;
use futures_util::stream;

use super::{TargetPoller, log_api_error};
use crate::codearts::model::{PipelineInfo, Run};
use crate::codearts::{Client, Error};
use crate::config::{Deployment, ShardingConfig, StatusApi, TargetConfig};
use crate::recording::{FromStatus, HISTORY_PAGE, HistoryRead, MAX_HISTORY_PAGES, RunKey, Step};
use crate::store::{PipelineState, TargetState};

/// Detail and history reads in flight at once within one poll of one target.
pub(super) const CONCURRENCY: usize = 8;
/// Up to this many unknown pipeline names are read by run detail; more, by the pipeline list.
const NAMES_BY_DETAIL: usize = 4;
/// History reads per group: only one group of histories is held at once.
const SCAN_GROUP: usize = 64;

/// One pipeline's history read to make.
pub(super) type Scan = (String, HistoryRead);

/// One pipeline's history read made: what it asked for, and the runs it kept.
pub(super) type History = (String, HistoryRead, Vec<Run>);

/// A run detail to read: pipeline, run number, and how to name the run.
pub(super) type WantedDetail = (String, u64, RunKey);

/// Run details of the runs about to be recorded, by run number (for their jobs).
pub(super) type Details = HashMap<u64, Run>;

/// The latest run of each pipeline of a pipeline list, by id (`None`: it never ran).
type Listed = HashMap<String, Option<Run>>;

/// What the batch status said in one poll.
struct Status {
    /// The latest run of each pipeline answered.
    latest: Vec<Run>,
    /// Pipelines of chunks that failed: not answered, but not gone either.
    unanswered: HashSet<String>,
}

impl TargetPoller {
    /// Everything a poll must finish within its deadline; returns whether it all succeeded.
    pub(super) async fn steady(&self, state: &mut TargetState) -> bool {
        let (mut ok, listed) = self.discover(state).await;
        let mut tracked = tracked(&self.target, &state.discovered, &self.settings.sharding);
        self.leave_to_others(state, &mut tracked);
        let listed = match listed {
            Some(listed) => Some(listed),
            None => self.list_unnamed(state, &tracked).await,
        };
        let (status, read) = self.read_status(&tracked, listed).await;
        ok &= read;
        let (names_wanted, shown) = self.note_latest(state, &status.latest);
        ok &= self.name_new(state, names_wanted).await;
        self.show_status(state, &status.latest, &shown);
        self.mark_absent(state, &tracked, &status);
        // Completed runs come from the history, read only where something may have completed,
        // and only of pipelines the batch status just answered: others may be gone. First
        // reads are the backfill's.
        let now = self.now();
        let window = self.target.backfill_window;
        let mut seen = HashSet::new();
        let reads: Vec<Scan> = status
            .latest
            .iter()
            .filter(|run| seen.insert(run.pipeline_id.as_str()))
            .filter_map(|run| {
                let pipeline = state.pipelines.get(&run.pipeline_id)?;
                pipeline.series.as_ref()?;
                let read = pipeline.ledger.history_read(now, window)?;
                (!read.first).then(|| (run.pipeline_id.clone(), read))
            })
            .collect();
        for group in reads.chunks(SCAN_GROUP) {
            ok &= self.scan_group(state, group).await;
        }
        self.resolve_lead_times(state).await;
        // What the status settled and the lead times found; and what an earlier commit failed
        // to write.
        self.store.commit(self.label(), state).await;
        ok
    }

    /// The `[[deployments]]` entry pipeline `pipeline_id` deploys with, by its name and its
    /// tags (as discovery read them), once it has series.
    fn deployment(&self, state: &TargetState, pipeline_id: &str) -> Option<Deployment> {
        let series = state.pipelines.get(pipeline_id)?.series.as_ref()?;
        let tags = state
            .discovered_tags
            .get(pipeline_id)
            .map_or(&[][..], Vec::as_slice);
        self.store
            .deployment_of(pipeline_id, series.pipeline_name(), tags)
    }

    /// Drops from `tracked` the pipelines another target records or lists (one ledger per
    /// pipeline): the target that lists a pipeline in its `pipeline_ids` records it; among
    /// targets that discover it, the first to poll it, as long as it has it. Logged once per
    /// pipeline.
    fn leave_to_others(&self, state: &mut TargetState, tracked: &mut Vec<String>) {
        let project_id = self.target.project_id.as_str();
        tracked.retain(|id| {
            let mine = self.store.may_record(project_id, id, self.label());
            if !mine && state.left_to_others.insert(id.clone()) {
                tracing::info!(
                    target_name = self.label(),
                    pipeline_id = %id,
                    project_id,
                    "pipeline polled by another target of the project; this one leaves it"
                );
            }
            mine
        });
    }

    /// Reads the project's pipeline list when discovery is on and due; false when that failed.
    /// With the v5 status, also the latest run of every pipeline listed (by id; `None` for one
    /// that never ran): the list carries it, so those need no status call this poll.
    async fn discover(&self, state: &mut TargetState) -> (bool, Option<Listed>) {
        if !self.target.discover {
            // Discovery switched off by a reload: its gauge goes.
            self.slot.series(|series| series.discovery_off());
            return (true, None);
        }
        let due = state
            .discovered_at
            .is_none_or(|at| at.elapsed() >= self.target.discover_every);
        if !due {
            return (true, None);
        }
        let listed = self
            .client
            .list_pipelines(&self.target.project_id, self.target.include_disabled)
            .await;
        match listed {
            Ok(mut pipelines) => {
                let latest = (self.target.status_api == StatusApi::V5).then(|| {
                    pipelines
                        .iter_mut()
                        .map(|p| (p.id.clone(), p.latest.take()))
                        .collect()
                });
                self.apply_discovery(state, pipelines);
                (true, latest)
            }
            Err(err) => {
                log_api_error(self.label(), &err, "pipeline list (discovery) failed");
                (false, None)
            }
        }
    }

    /// Keeps the pipelines the target's filters select.
    fn apply_discovery(&self, state: &mut TargetState, pipelines: Vec<PipelineInfo>) {
        let listed = pipelines.len();
        let mut tags = HashMap::new();
        let kept: BTreeMap<String, String> = pipelines
            .into_iter()
            .filter(|p| selects(&self.target, p))
            .map(|p| {
                tags.insert(p.id.clone(), p.tags);
                (p.id, p.name)
            })
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
        // Said when discovery first comes back empty, not at every discovery: the gauge and
        // its alert carry a lasting problem.
        let newly_empty = state.discovered_at.is_none() || !state.discovered.is_empty();
        if kept.is_empty() && newly_empty {
            self.warn_nothing_discovered(listed);
        }
        self.slot.series(|series| series.set_discovered(kept.len()));
        state.discovered = kept;
        state.discovered_tags = tags;
        state.discovered_at = Some(tokio::time::Instant::now());
    }

    /// Why discovery may have found nothing, and what to do about it.
    fn warn_nothing_discovered(&self, listed: usize) {
        let project_id = self.target.project_id.as_str();
        if listed == 0 {
            // The service answers an identity outside the CodeArts project with an empty list,
            // not an error (reference 5.4).
            tracing::warn!(
                target_name = self.label(),
                project_id,
                "discovery found no pipeline: the pipeline list of the project is empty. If the \
                 project does have pipelines, the IAM user of [auth] is most likely not a member \
                 of this CodeArts project (the service then answers an empty list, and \
                 DEVPIPE.00011412 to single-pipeline calls): add the user to the project's \
                 members in CodeArts, and check targets.project_id"
            );
        } else {
            tracing::warn!(
                target_name = self.label(),
                project_id,
                listed,
                "discovery found no pipeline: the project lists pipelines but none passes the \
                 target's filters; check include, exclude, tags and include_disabled"
            );
        }
    }

    /// On a v5 target where many tracked pipelines have no name yet (a cold start without
    /// discovery): the pipeline list, which names them and carries their latest runs, when it
    /// takes fewer requests than they are. Names it cannot give come from run details later.
    async fn list_unnamed(&self, state: &TargetState, tracked: &[String]) -> Option<Listed> {
        if self.target.status_api != StatusApi::V5 {
            return None;
        }
        let unnamed = tracked
            .iter()
            .filter(|id| !state.discovered.contains_key(*id))
            .filter(|id| state.pipelines.get(*id).is_none_or(|p| p.series.is_none()))
            .count();
        if unnamed <= NAMES_BY_DETAIL {
            return None;
        }
        let listed = self
            .client
            .list_pipelines_within(&self.target.project_id, unnamed as u64)
            .await;
        match listed {
            Ok(pipelines) => Some(
                pipelines?
                    .into_iter()
                    .map(|pipeline| (pipeline.id, pipeline.latest))
                    .collect(),
            ),
            Err(err) => {
                log_api_error(self.label(), &err, "pipeline list (names) failed");
                None
            }
        }
    }

    /// The latest run of every tracked pipeline: from the pipeline list just read for those it
    /// listed, else one batch status call per chunk; and whether every call succeeded.
    async fn read_status(&self, tracked: &[String], listed: Option<Listed>) -> (Status, bool) {
        let mut ok = true;
        let mut listed = listed.unwrap_or_default();
        let mut latest = Vec::new();
        let mut unanswered = HashSet::new();
        let mut to_ask = Vec::new();
        for id in tracked {
            match listed.remove(id) {
                // A pipeline that never ran: the batch status would not answer it either.
                Some(run) => latest.extend(run),
                None => to_ask.push(id.clone()),
            }
        }
        // One chunk after the other: a 429 with Retry-After then holds back the next request,
        // rather than finding others already on their way.
        for chunk in to_ask.chunks(self.target.chunk_size) {
            let result = match self.target.status_api {
                StatusApi::V5 => self.client.v5_status(&self.target.project_id, chunk).await,
                StatusApi::V3 => self.client.v3_status(chunk).await,
            };
            match result {
                Ok(runs) => latest.extend(runs),
                Err(err) => {
                    ok = false;
                    unanswered.extend(chunk.iter().cloned());
                    log_api_error(self.label(), &err, "batch status failed");
                }
            }
        }
        let tracked: HashSet<&str> = tracked.iter().map(String::as_str).collect();
        latest.retain(|run| tracked.contains(run.pipeline_id.as_str()));
        (Status { latest, unanswered }, ok)
    }

    /// Tells each pipeline's ledger its latest run, creating the pipelines seen for the first
    /// time. Returns the pipelines whose name is still unknown, and what the status shows of
    /// each pipeline's last completed run.
    fn note_latest(
        &self,
        state: &mut TargetState,
        latest: &[Run],
    ) -> (Vec<(String, RunKey)>, HashMap<String, FromStatus>) {
        // Until the target's first successful poll, pipelines count as seen at its start.
        let now = self.now();
        let first_seen = if self.is_ready() {
            now
        } else {
            self.settings.started_at
        };
        let window = self.target.backfill_window;
        let mut names_wanted = Vec::new();
        let mut shown = HashMap::new();
        for run in latest {
            let Some(key) = RunKey::of(run) else {
                tracing::warn!(target_name = self.label(), pipeline_id = %run.pipeline_id, "latest run has neither id nor number");
                continue;
            };
            if !state.pipelines.contains_key(&run.pipeline_id) {
                // One ledger per pipeline: a pipeline another target records is left to it.
                let claimed =
                    self.store
                        .claim(&self.target.project_id, &run.pipeline_id, self.label());
                let Ok(claim) = claimed else {
                    continue;
                };
                let pipeline = PipelineState {
                    claim: Some(claim),
                    ..PipelineState::new(first_seen)
                };
                state.pipelines.insert(run.pipeline_id.clone(), pipeline);
            }
            let Some(pipeline) = state.pipelines.get_mut(&run.pipeline_id) else {
                continue;
            };
            if let Some(from) = pipeline.ledger.saw_latest(run, key.clone(), now, window) {
                shown.insert(run.pipeline_id.clone(), from);
            }
            if pipeline.series.is_none() {
                let name = run
                    .pipeline_name
                    .as_ref()
                    .or_else(|| state.discovered.get(&run.pipeline_id));
                match name {
                    Some(name) => {
                        pipeline.series = Some(self.store.new_series(
                            &self.target.project_id,
                            &run.pipeline_id,
                            name,
                        ));
                    }
                    // The v5 status carries no name: discovery or the run detail does.
                    None => names_wanted.push((run.pipeline_id.clone(), key)),
                }
            }
        }
        (names_wanted, shown)
    }

    /// Gives the pipelines in `wanted` their names (and so their series): from the project's
    /// pipeline list when many are wanted (50 a request), else from a run detail each. False
    /// when a read failed.
    async fn name_new(&self, state: &mut TargetState, mut wanted: Vec<(String, RunKey)>) -> bool {
        let project_id = self.target.project_id.as_str();
        let name = |state: &mut TargetState, pipeline_id: &str, name: &str| {
            let series = self.store.new_series(project_id, pipeline_id, name);
            if let Some(pipeline) = state.pipelines.get_mut(pipeline_id) {
                pipeline.series = Some(series);
            }
        };
        if wanted.len() > NAMES_BY_DETAIL {
            let listed = self
                .client
                .list_pipelines_within(project_id, wanted.len() as u64)
                .await;
            match listed {
                Ok(Some(pipelines)) => {
                    let names: HashMap<String, String> =
                        pipelines.into_iter().map(|p| (p.id, p.name)).collect();
                    wanted.retain(|(pipeline_id, _)| match names.get(pipeline_id) {
                        Some(found) => {
                            name(state, pipeline_id, found);
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
        let named: Vec<(String, Result<Run, Error>)> = stream::iter(wanted)
            .map(|(pipeline_id, key)| async move {
                let result = client
                    .run_detail(project_id, &pipeline_id, key.selector())
                    .await;
                (pipeline_id, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut ok = true;
        for (pipeline_id, result) in named {
            match result {
                Ok(detail) => {
                    let found = detail.pipeline_name.unwrap_or_else(|| pipeline_id.clone());
                    name(state, &pipeline_id, &found);
                }
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "run detail (pipeline name) failed");
                }
            }
        }
        ok
    }

    /// Sets each pipeline's state and stage gauges from its latest run, and its `last_run_*`
    /// gauges when that run is the last completed one: a cold start shows them at once, before
    /// any history is read.
    fn show_status(
        &self,
        state: &mut TargetState,
        latest: &[Run],
        shown: &HashMap<String, FromStatus>,
    ) {
        let deployments: HashMap<&str, Deployment> = latest
            .iter()
            .filter_map(|run| {
                Some((
                    run.pipeline_id.as_str(),
                    self.deployment(state, &run.pipeline_id)?,
                ))
            })
            .collect();
        for run in latest {
            let Some(pipeline) = state.pipelines.get_mut(&run.pipeline_id) else {
                continue;
            };
            let Some(series) = pipeline.series.as_mut() else {
                continue;
            };
            series.set_state(run.state);
            if !run.stages.is_empty() {
                series.set_stage_states(run);
            }
            if let Some(deployment) = deployments.get(run.pipeline_id.as_str()) {
                series.declare_environment(deployment.environment());
            }
            if let Some(&from) = shown.get(&run.pipeline_id) {
                series.set_last_completed(run);
                pipeline.ledger.shown_by_status(from);
                pipeline.dirty = true;
            }
        }
    }

    /// Starts the grace period of pipelines no longer polled or no longer answered (the
    /// garbage collector removes them when it ends), and ends it for those back.
    fn mark_absent(&self, state: &mut TargetState, tracked: &[String], status: &Status) {
        let tracked: HashSet<&str> = tracked.iter().map(String::as_str).collect();
        let answered: HashSet<&str> = status
            .latest
            .iter()
            .map(|run| run.pipeline_id.as_str())
            .collect();
        let now = tokio::time::Instant::now();
        for (id, pipeline) in state.pipelines.iter_mut() {
            let present = tracked.contains(id.as_str())
                && (answered.contains(id.as_str()) || status.unanswered.contains(id));
            if present {
                pipeline.absent_since = None;
            } else {
                pipeline.absent_since.get_or_insert(now);
            }
        }
    }

    /// Reads the histories of `group` and records what they hold; false when a read failed.
    async fn scan_group(&self, state: &mut TargetState, group: &[Scan]) -> bool {
        let (histories, mut ok) = self.read_histories(&self.client, group).await;
        let details = if self.settings.record_jobs {
            let wanted = details_wanted(state, &histories);
            let (details, fetched) = self.read_details(&self.client, wanted).await;
            ok &= fetched;
            details
        } else {
            HashMap::new()
        };
        self.record_histories(state, histories, details).await;
        ok
    }

    /// Reads the histories of `group` through `client`: those read, and whether all were.
    pub(super) async fn read_histories(
        &self,
        client: &Client,
        group: &[Scan],
    ) -> (Vec<History>, bool) {
        let scanned: Vec<(String, HistoryRead, Result<Vec<Run>, Error>)> =
            stream::iter(group.iter().cloned())
                .map(|(pipeline_id, read)| async move {
                    let result = self.read_history(client, &pipeline_id, read).await;
                    (pipeline_id, read, result)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut ok = true;
        let mut histories = Vec::with_capacity(scanned.len());
        for (pipeline_id, read, result) in scanned {
            match result {
                Ok(runs) => histories.push((pipeline_id, read, runs)),
                Err(err) => {
                    ok = false;
                    log_api_error(self.label(), &err, "run history failed");
                }
            }
        }
        (histories, ok)
    }

    /// Records what `histories` hold. Each pipeline's history is recorded whole or not at all
    /// (a pipeline whose run detail failed waits for its next read), so a poll cut short
    /// between two reads loses nothing and records nothing twice.
    pub(super) async fn record_histories(
        &self,
        state: &mut TargetState,
        histories: Vec<History>,
        mut details: HashMap<String, Option<Details>>,
    ) {
        let now = self.now();
        for (pipeline_id, read, mut runs) in histories {
            let deployment = self.deployment(state, &pipeline_id);
            let Some(pipeline) = state.pipelines.get_mut(&pipeline_id) else {
                continue;
            };
            let pipeline_details = match details.remove(&pipeline_id) {
                Some(Some(found)) => found,
                Some(None) => continue,
                None => Details::new(),
            };
            let recorded = Recording {
                cutoff: read.cutoff,
                details: &pipeline_details,
                deployment: deployment.as_ref(),
                now,
                traces: self.store.outbox().is_some(),
            };
            if !record(pipeline, &mut runs, recorded) {
                tracing::warn!(target_name = self.label(), %pipeline_id, "run history lacks the latest run; reading it again next poll");
            }
        }
        self.store.commit(self.label(), state).await;
    }

    /// Reads the history newest first, page by page, as far back as `read` needs.
    async fn read_history(
        &self,
        client: &Client,
        pipeline_id: &str,
        read: HistoryRead,
    ) -> Result<Vec<Run>, Error> {
        let mut runs: Vec<Run> = Vec::new();
        for page in 0..MAX_HISTORY_PAGES {
            let offset = page * HISTORY_PAGE;
            let (batch, total) = client
                .run_history(&self.target.project_id, pipeline_id, offset, HISTORY_PAGE)
                .await?;
            let last_page = batch.len() < HISTORY_PAGE as usize || offset + HISTORY_PAGE >= total;
            let before = runs.len();
            runs.extend(batch);
            if last_page || read.has_enough(&runs, &runs[before..]) {
                break;
            }
        }
        Ok(read.keep(runs))
    }

    /// Reads the run details in `wanted` through `client`. Per pipeline: the details, or `None`
    /// when one failed; and whether every read succeeded.
    pub(super) async fn read_details(
        &self,
        client: &Client,
        wanted: Vec<WantedDetail>,
    ) -> (HashMap<String, Option<Details>>, bool) {
        let project_id = self.target.project_id.as_str();
        let fetched: Vec<(String, u64, Result<Run, Error>)> = stream::iter(wanted)
            .map(|(pipeline_id, number, key)| async move {
                let result = client
                    .run_detail(project_id, &pipeline_id, key.selector())
                    .await;
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
}

/// The run details to read for `histories`: every run about to be recorded (for its jobs).
pub(super) fn details_wanted(state: &TargetState, histories: &[History]) -> Vec<WantedDetail> {
    let mut wanted = Vec::new();
    for (pipeline_id, read, runs) in histories {
        let Some(pipeline) = state.pipelines.get(pipeline_id) else {
            continue;
        };
        for run in runs
            .iter()
            .filter(|run| pipeline.ledger.will_record(run, read.cutoff))
        {
            if let (Some(number), Some(key)) = (run.run_number, RunKey::of(run)) {
                wanted.push((pipeline_id.clone(), number, key));
            }
        }
    }
    wanted
}

/// How one pipeline's history read is recorded.
struct Recording<'a> {
    /// Runs that ended before this are not recorded.
    cutoff: f64,
    /// The run details of the runs about to be recorded (for their jobs).
    details: &'a Details,
    /// The environment it deploys to, if any.
    deployment: Option<&'a Deployment>,
    /// The time of the recording, Unix seconds.
    now: f64,
    /// Whether each recorded run's trace is built (`[traces]`).
    traces: bool,
}

/// Records the completed runs of a history read once each, oldest first, with their jobs when
/// `details` has them. False when the read lacked the latest run (it is read again next poll).
fn record(pipeline: &mut PipelineState, runs: &mut Vec<Run>, recording: Recording<'_>) -> bool {
    let Recording {
        cutoff,
        details,
        deployment,
        now,
        traces,
    } = recording;
    let Some(series) = pipeline.series.as_mut() else {
        return true;
    };
    let pipeline_id = runs.first().map(|run| run.pipeline_id.clone());
    let applied = pipeline.ledger.apply_history(runs, cutoff);
    // Committed (and then shown) at the end of the read's batch.
    pipeline.dirty = true;
    if applied.unseen > 0 {
        series.missed(applied.unseen);
        tracing::warn!(pipeline_id = ?pipeline_id, runs = applied.unseen, "runs completed while the exporter was away are no longer in the history; counted as missed");
    }
    for step in applied.steps {
        match step {
            Step::Observe(run) => {
                series.observe_completed(run);
                if let Some(deployment) =
                    deployment.filter(|d| d.counts_branch(run.branch.as_deref()))
                {
                    series.observe_deployment(
                        run,
                        deployment.environment(),
                        run.commit_id.as_deref(),
                        run.codehub_id.as_deref(),
                        now,
                    );
                }
                let detail = run.run_number.and_then(|n| details.get(&n));
                if let Some(detail) = detail {
                    series.observe_jobs(detail);
                    series.observe_pause(detail);
                }
                if traces
                    && let Some(trace) = crate::traces::otlp::run_trace(
                        series.project_id(),
                        series.pipeline_name(),
                        run,
                        detail,
                    )
                {
                    pipeline.traces.push(trace);
                }
                tracing::debug!(pipeline_id = %run.pipeline_id, run_number = ?run.run_number, result = ?run.result, "run recorded");
            }
            Step::Missed(run) => {
                series.missed(1);
                tracing::warn!(pipeline_id = %run.pipeline_id, run_number = ?run.run_number, "run older than backfill_window when found; not recorded");
            }
            Step::Last(run) => series.set_last_completed(run),
        }
    }
    applied.complete
}

/// Whether discovery keeps `pipeline`: `include` matches its name, `exclude` does not, it
/// carries one of `tags` (each filter only when set), and it is enabled unless
/// `include_disabled`. The list was asked without disabled pipelines already; an entry marked
/// `banned` is dropped all the same, whatever the service made of the request.
fn selects(target: &TargetConfig, pipeline: &PipelineInfo) -> bool {
    (target.include_disabled || !pipeline.disabled)
        && target
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

#[cfg(test)]
mod tests {
    use super::*;

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
            disabled: false,
            latest: None,
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
        let disabled = PipelineInfo {
            disabled: true,
            ..info("d", "x", &["backend"])
        };
        assert!(!selects(&tagged, &disabled));
        assert!(!selects(&all, &disabled));
        let with_disabled = target("discover = true\ninclude_disabled = true");
        assert!(selects(&with_disabled, &disabled));
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
}
