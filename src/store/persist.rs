//! How the store keeps its state across restarts, and who records each pipeline.
//!
//! Write ahead, as Prometheus' own TSDB does: what a poll or the backfill records is committed
//! to the state file first and shown on `/metrics` after ([`Store::commit`]), so a SIGKILL at
//! any instant can never make a counter go back after the restart (which Prometheus would read
//! as a reset and count twice). Without a state file a commit only shows what was recorded.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::durable::{Row, StateFile, TraceChanges};
use super::series::lock;
use super::{Owners, PipelineState, Store, StoreError, TargetState};
use crate::config::{MetricsConfig, TracesConfig};

/// A target's claim on a pipeline, released when dropped (with the pipeline's state).
#[derive(Debug)]
pub struct Claim {
    owners: Owners,
    key: (String, String),
    target: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut owners = lock(&self.owners);
        // A target that lists the pipeline may have taken it over meanwhile.
        if owners.get(&self.key) == Some(&self.target) {
            owners.remove(&self.key);
        }
    }
}

impl Store {
    /// A store laid out by `[metrics]` that keeps its state in the file at `path` (when given)
    /// for a configuration of `projects`, and the traces of the runs it records with `traces`:
    /// what the file kept is restored as each target takes its slot, and its pending traces
    /// await delivery again. A file that cannot be trusted or opened is logged and counted, and
    /// the store starts without it.
    pub fn open(
        config: &MetricsConfig,
        path: Option<&Path>,
        projects: &BTreeSet<String>,
        traces: Option<&TracesConfig>,
    ) -> Result<Store, StoreError> {
        let mut store = Store::with_traces(config, traces)?;
        let Some(path) = path else {
            tracing::warn!(
                "no state file (state.path): a restart may record the runs of the last \
                 backfill_window again, which Prometheus then counts twice; set state.path \
                 to keep counts exact across restarts"
            );
            return Ok(store);
        };
        let opened = StateFile::open(path, projects, &store.series.layout_fingerprint());
        for err in &opened.errors {
            store.state_families.failed(err);
        }
        if let Some(file) = opened.file {
            tracing::info!(
                path = %path.display(),
                pipelines = opened.pipelines.len(),
                traces_pending = opened.traces.len(),
                "state file opened; counts go on from it"
            );
            store.file = Some(Arc::new(file));
        }
        match &store.outbox {
            Some(outbox) => outbox.admit(opened.traces),
            // Traces kept by a run with [traces] and none wanted now: forgotten at the next
            // commit.
            None => lock(&store.dropped_traces).extend(opened.traces.iter().map(|t| t.seq)),
        }
        let mut restored: HashMap<String, Vec<_>> = HashMap::new();
        for pipeline in opened.pipelines {
            restored
                .entry(pipeline.target.clone())
                .or_default()
                .push(pipeline);
        }
        store.restored = std::sync::Mutex::new(restored);
        Ok(store)
    }

    /// Gives target `label` what the state file kept of it (once, as its slot is created).
    pub(super) fn restore(&self, label: &str, state: &mut TargetState) {
        let Some(pipelines) = lock(&self.restored).remove(label) else {
            return;
        };
        for stored in pipelines {
            let Ok(claim) = self.claim(&stored.project_id, &stored.pipeline_id, label) else {
                // Listed by another target now: that one records it from here on.
                self.forget(label, stored.project_id, stored.pipeline_id);
                continue;
            };
            let mut series =
                self.new_series(&stored.project_id, &stored.pipeline_id, &stored.series.name);
            series.restore(stored.series);
            state.pipelines.insert(
                stored.pipeline_id,
                PipelineState {
                    series: Some(series),
                    ledger: stored.ledger.resumed(),
                    absent_since: None,
                    dirty: false,
                    claim: Some(claim),
                    traces: Vec::new(),
                },
            );
        }
    }

    /// Forgets what the state file kept of targets no longer configured (after every target of
    /// the configuration has taken its slot).
    pub fn forget_unclaimed(&self) {
        let left: Vec<_> = lock(&self.restored).drain().collect();
        for (target, pipelines) in left {
            tracing::info!(
                target_name = %target,
                pipelines = pipelines.len(),
                "the state file kept a target that is no longer configured; forgotten"
            );
            for pipeline in pipelines {
                self.forget(&target, pipeline.project_id, pipeline.pipeline_id);
            }
        }
    }

    /// Removes target `target`'s row of a pipeline from the state file at the next commit.
    pub(super) fn forget(&self, target: &str, project_id: String, pipeline_id: String) {
        if self.file.is_some() {
            lock(&self.removed).push((target.to_string(), project_id, pipeline_id));
        }
    }

    /// Sets which target lists each pipeline in its `pipeline_ids` (project, pipeline →
    /// target): those record them, whatever other targets discover.
    pub fn set_listed(&self, listed: HashMap<(String, String), String>) {
        *lock(&self.listed) = listed;
    }

    /// Whether target `label` may record pipeline `pipeline_id` of `project_id`: no other
    /// target lists it or records it already.
    pub fn may_record(&self, project_id: &str, pipeline_id: &str, label: &str) -> bool {
        self.owner(project_id, pipeline_id)
            .is_none_or(|owner| owner == label)
    }

    /// The target that records (or lists) a pipeline, if any.
    fn owner(&self, project_id: &str, pipeline_id: &str) -> Option<String> {
        let key = (project_id.to_string(), pipeline_id.to_string());
        if let Some(lister) = lock(&self.listed).get(&key) {
            return Some(lister.clone());
        }
        lock(&self.owners).get(&key).cloned()
    }

    /// Claims a pipeline for target `label`; `Err` names the target that has it. A target
    /// that lists the pipeline takes it over from one that discovered it.
    pub fn claim(&self, project_id: &str, pipeline_id: &str, label: &str) -> Result<Claim, String> {
        let key = (project_id.to_string(), pipeline_id.to_string());
        let listed_here = match lock(&self.listed).get(&key) {
            Some(lister) if lister != label => return Err(lister.clone()),
            Some(_) => true,
            None => false,
        };
        let mut owners = lock(&self.owners);
        match owners.get(&key) {
            Some(owner) if owner != label && !listed_here => Err(owner.clone()),
            _ => {
                owners.insert(key.clone(), label.to_string());
                Ok(Claim {
                    owners: self.owners.clone(),
                    key,
                    target: label.to_string(),
                })
            }
        }
    }

    /// Commits what target `label`'s pipelines recorded (and the removals since the last
    /// commit) to the state file, then shows it on `/metrics`. A failed commit shows nothing
    /// new: it is counted, and made again by the next commit, with whatever was recorded since.
    pub async fn commit(&self, label: &str, state: &mut TargetState) {
        let dirty: Vec<&String> = state
            .pipelines
            .iter()
            .filter(|(_, pipeline)| pipeline.dirty)
            .map(|(id, _)| id)
            .collect();
        // The traces of the runs recorded, in the order recorded; cheap clones of their bodies.
        let bodies: Vec<bytes::Bytes> = dirty
            .iter()
            .filter_map(|id| state.pipelines.get(*id))
            .flat_map(|pipeline| pipeline.traces.iter().cloned())
            .collect();
        let added = match &self.outbox {
            Some(outbox) => outbox.stamp(bodies),
            None => Vec::new(),
        };
        if let Some(file) = &self.file {
            let removed = std::mem::take(&mut *lock(&self.removed));
            let settled = self.take_settled();
            if dirty.is_empty() && removed.is_empty() && settled.is_empty() {
                return;
            }
            let rows: Vec<Row> = dirty
                .iter()
                .filter_map(|id| {
                    let pipeline = state.pipelines.get(*id)?;
                    let series = pipeline.series.as_ref()?;
                    Row::new(
                        label,
                        series.project_id(),
                        id,
                        &pipeline.ledger,
                        &series.stored(),
                    )
                })
                .collect();
            let file = file.clone();
            let (count, bytes) = (rows.len(), rows.iter().map(Row::bytes).sum::<usize>());
            let traces = TraceChanges { added, settled };
            let written = tokio::task::spawn_blocking(move || {
                (file.write(&rows, &removed, &traces), removed, traces)
            })
            .await;
            match written {
                Ok((Ok(seconds), removed, traces)) => {
                    self.state_families
                        .committed(seconds, crate::clock::unix_now());
                    // The benchmark reads these.
                    tracing::debug!(
                        target_name = label,
                        rows = count,
                        bytes,
                        removed = removed.len(),
                        traces = traces.added.len(),
                        seconds,
                        "state committed"
                    );
                    if let Some(outbox) = &self.outbox {
                        outbox.admit(traces.added);
                    }
                }
                Ok((Err(err), removed, traces)) => {
                    self.state_families.failed(&err);
                    lock(&self.removed).extend(removed);
                    self.untake_settled(traces.settled);
                    return;
                }
                Err(err) => {
                    tracing::error!(error = %err, "state file commit did not finish");
                    return;
                }
            }
        } else if let Some(outbox) = &self.outbox {
            outbox.admit(added);
        }
        for pipeline in state.pipelines.values_mut().filter(|p| p.dirty) {
            if let Some(series) = pipeline.series.as_mut() {
                series.publish();
            }
            pipeline.traces.clear();
            pipeline.dirty = false;
        }
    }

    /// Removes the traces settled (delivered or dropped) since the last commit from the state
    /// file now, so a restart does not send a delivered trace again. A failed write is counted,
    /// and made again by the next commit.
    pub async fn commit_settled_traces(&self) {
        let Some(file) = &self.file else {
            self.take_settled();
            return;
        };
        let settled = self.take_settled();
        if settled.is_empty() {
            return;
        }
        let file = file.clone();
        let traces = TraceChanges {
            added: Vec::new(),
            settled,
        };
        let written =
            tokio::task::spawn_blocking(move || (file.write(&[], &[], &traces), traces)).await;
        match written {
            Ok((Ok(seconds), _)) => self
                .state_families
                .committed(seconds, crate::clock::unix_now()),
            Ok((Err(err), traces)) => {
                self.state_families.failed(&err);
                self.untake_settled(traces.settled);
            }
            Err(err) => tracing::error!(error = %err, "state file commit did not finish"),
        }
    }

    /// The traces settled since the last commit, and those the state file kept for nobody.
    fn take_settled(&self) -> Vec<i64> {
        let mut settled = std::mem::take(&mut *lock(&self.dropped_traces));
        if let Some(outbox) = &self.outbox {
            settled.extend(outbox.take_settled());
        }
        settled
    }

    /// Gives back what [`Store::take_settled`] took, after a failed commit.
    fn untake_settled(&self, settled: Vec<i64>) {
        match &self.outbox {
            Some(outbox) => outbox.untake_settled(settled),
            None => lock(&self.dropped_traces).extend(settled),
        }
    }

    /// Commits whatever every target recorded and has not committed (a poll cut between its
    /// record and its commit): the last write of an orderly stop.
    pub async fn commit_all(&self) {
        let slots: Vec<(String, Arc<super::TargetSlot>)> = lock(&self.targets)
            .iter()
            .map(|(label, slot)| (label.clone(), slot.clone()))
            .collect();
        for (label, slot) in slots {
            let mut state = self.write(&slot).await;
            self.commit(&label, &mut state).await;
        }
        self.commit_removals().await;
    }

    /// Commits the removals since the last commit (after a garbage collection).
    pub async fn commit_removals(&self) {
        self.commit("", &mut TargetState::default()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codearts::model::Run;
    use crate::metrics::Metrics;

    const PROJECT: &str = "proj";

    fn open(path: &Path) -> (Arc<Store>, Metrics) {
        let projects = [PROJECT.to_string()].into_iter().collect();
        let store = Arc::new(
            Store::open(&MetricsConfig::default(), Some(path), &projects, None).expect("store"),
        );
        let metrics = Metrics::new(&store).expect("metrics");
        (store, metrics)
    }

    /// The value of the sample that starts with `prefix` in a rendering.
    fn value(metrics: &Metrics, prefix: &str) -> Option<f64> {
        String::from_utf8(metrics.render())
            .expect("utf-8")
            .lines()
            .find_map(|line| line.strip_prefix(prefix)?.trim().parse().ok())
    }

    #[tokio::test]
    async fn a_runs_trace_enters_the_outbox_with_its_commit_and_stays_until_settled() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let projects: BTreeSet<String> = [PROJECT.to_string()].into_iter().collect();
        let traces = TracesConfig::new("http://127.0.0.1:4318");
        let open_with_traces = || {
            Store::open(
                &MetricsConfig::default(),
                Some(&path),
                &projects,
                Some(&traces),
            )
            .expect("store")
        };
        let store = open_with_traces();
        let outbox = store.outbox().expect("an outbox").clone();
        let slot = store.target("t", Duration::from_secs(60));
        let mut state = store.write(&slot).await;
        let mut pipeline = PipelineState::new(0.0);
        pipeline.series = Some(store.new_series(PROJECT, "a", "A"));
        pipeline
            .traces
            .push(bytes::Bytes::from_static(b"trace of run 1"));
        pipeline.dirty = true;
        state.pipelines.insert("a".into(), pipeline);

        // Not committed: not pending, and kept with the pipeline for the next commit.
        store.file.as_ref().expect("a file").refuse_writes(true);
        store.commit("t", &mut state).await;
        assert!(outbox.is_empty());
        assert_eq!(state.pipelines["a"].traces.len(), 1);
        store.file.as_ref().expect("a file").refuse_writes(false);
        store.commit("t", &mut state).await;
        assert_eq!(outbox.len(), 1);
        assert!(state.pipelines["a"].traces.is_empty());
        drop(state);
        drop(slot);
        drop(store);

        // Kept across a restart; once settled, gone for the next one.
        let store = open_with_traces();
        let outbox = store.outbox().expect("an outbox").clone();
        let pending = outbox.oldest(10, 1 << 20);
        assert_eq!(pending.len(), 1);
        assert_eq!(&pending[0].body[..], b"trace of run 1");
        outbox.settle(&pending, None);
        store.commit_settled_traces().await;
        drop(store);
        assert!(open_with_traces().outbox().expect("an outbox").is_empty());
    }

    const RUNS: &str = "codearts_pipeline_runs_total{project_id=\"proj\",pipeline_id=\"a\",pipeline_name=\"A\",result=\"success\"}";
    const WRITE_ERRORS: &str = "codearts_exporter_state_errors_total{kind=\"write\"}";

    #[tokio::test]
    async fn nothing_is_shown_before_it_is_committed_and_commits_survive_a_restart() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let (store, metrics) = open(&path);
        let slot = store.target("t", Duration::from_secs(60));
        {
            let mut state = store.write(&slot).await;
            let mut pipeline = PipelineState::new(0.0);
            pipeline.claim = Some(store.claim(PROJECT, "a", "t").expect("free"));
            let mut series = store.new_series(PROJECT, "a", "A");
            series.observe_completed(&Run::example("a", "run-1".into(), 1, 100.0, Some(130.0)));
            pipeline.series = Some(series);
            pipeline.dirty = true;
            state.pipelines.insert("a".into(), pipeline);
            assert_eq!(
                value(&metrics, RUNS),
                None,
                "recorded, not committed: not shown"
            );

            // A commit that fails shows nothing and is counted; the next one makes up for it.
            store.file.as_ref().expect("a file").refuse_writes(true);
            store.commit("t", &mut state).await;
            assert_eq!(value(&metrics, RUNS), None, "not committed: not shown");
            assert_eq!(value(&metrics, WRITE_ERRORS), Some(1.0));
            store.file.as_ref().expect("a file").refuse_writes(false);
            store.commit("t", &mut state).await;
            assert_eq!(value(&metrics, RUNS), Some(1.0), "committed: shown");
            assert!(
                value(
                    &metrics,
                    "codearts_exporter_state_last_commit_timestamp_seconds"
                )
                .is_some_and(|at| at > 0.0)
            );
        }
        drop(slot);
        drop(metrics);
        drop(store);

        // The next process starts from the file: the count goes on, the ledger is resumed.
        let (store, metrics) = open(&path);
        assert_eq!(
            value(&metrics, RUNS),
            None,
            "restored as the target takes its slot"
        );
        let slot = store.target("t", Duration::from_secs(60));
        assert_eq!(value(&metrics, RUNS), Some(1.0), "restored before any poll");
        let state = store.write(&slot).await;
        let pipeline = state.pipelines.get("a").expect("restored");
        assert!(pipeline.claim.is_some());
        assert!(
            !store.may_record(PROJECT, "a", "other"),
            "claimed on restore"
        );
    }

    #[tokio::test]
    async fn a_pipeline_is_recorded_by_one_target_and_a_listing_target_wins() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let first = store.claim(PROJECT, "a", "discovers-1").expect("free");
        assert_eq!(
            store.claim(PROJECT, "a", "discovers-2").expect_err("taken"),
            "discovers-1"
        );
        assert!(!store.may_record(PROJECT, "a", "discovers-2"));
        // A target that lists it takes it over; the discoverer leaves it.
        store.set_listed([((PROJECT.to_string(), "a".to_string()), "lists".to_string())].into());
        assert!(!store.may_record(PROJECT, "a", "discovers-1"));
        let listing = store.claim(PROJECT, "a", "lists").expect("taken over");
        // The discoverer's claim, dropped later (its pipeline collected), leaves the lister's.
        drop(first);
        assert!(store.may_record(PROJECT, "a", "lists"));
        assert_eq!(store.owner(PROJECT, "a").as_deref(), Some("lists"));
        drop(listing);
        store.set_listed(HashMap::new());
        assert_eq!(store.owner(PROJECT, "a"), None, "free again");
    }

    #[tokio::test]
    async fn targets_no_longer_configured_leave_the_state_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        {
            let (store, _metrics) = open(&path);
            for label in ["kept", "dropped"] {
                let slot = store.target(label, Duration::from_secs(60));
                let mut state = store.write(&slot).await;
                let mut pipeline = PipelineState::new(0.0);
                let mut series = store.new_series(PROJECT, label, label);
                series.observe_completed(&Run::example(label, "run-1".into(), 1, 1.0, Some(2.0)));
                pipeline.series = Some(series);
                pipeline.dirty = true;
                state.pipelines.insert(label.into(), pipeline);
                store.commit(label, &mut state).await;
            }
        }
        {
            let (store, _metrics) = open(&path);
            let _kept = store.target("kept", Duration::from_secs(60));
            store.forget_unclaimed();
            store.commit_removals().await;
        }
        let projects = [PROJECT.to_string()].into_iter().collect();
        let left = StateFile::open(&path, &projects, "any").pipelines;
        let targets: Vec<&str> = left.iter().map(|p| p.target.as_str()).collect();
        assert_eq!(targets, ["kept"]);
    }
}
