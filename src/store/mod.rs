//! Every target's and pipeline's state, in one place: what the pollers know (discovered
//! pipelines, each pipeline's [`RunLedger`]) together with the series they write.
//!
//! Pollers write, one poll of a target at a time, under a [`PollGuard`]; the target's backfill
//! writes between polls' steps under a [`WriteGuard`]; a scrape reads the series through
//! the [`SeriesTable`]; the garbage collector ([`Store::collect_garbage`]) removes what is gone.
//! A pipeline's series are released when its state is dropped, so removing a pipeline, or a
//! whole target, is removing it from here. A target's state outlives its poller: after a
//! configuration reload the new poller of the same target finds it here, so no run is recorded
//! twice and no histogram restarts.

mod commit_times;
mod deployments;
pub mod durable;
mod gc;
pub mod outbox;
mod persist;
pub mod series;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{MetricsConfig, TracesConfig};
use crate::recording::RunLedger;
use crate::schedule::Heartbeat;
use durable::{StateFamilies, StateFile, StoredPipeline};
use outbox::Outbox;
pub use persist::Claim;
use series::{Series, SeriesTable, lock};
use target::{TargetFamilies, TargetSeries};

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A metric family could not be created (a programming error, reported at start-up).
    #[error("cannot set up the store's families: {0}")]
    Families(#[from] prometheus::Error),
}

/// Which pipeline each target records: one ledger per pipeline across the exporter.
type Owners = Arc<Mutex<HashMap<(String, String), String>>>;

/// What is known of one pipeline.
#[derive(Debug)]
pub struct PipelineState {
    /// Its series; none until its name is known.
    pub series: Option<Series>,
    /// Which runs are recorded, and what to read next.
    pub ledger: RunLedger,
    /// Since when it is no longer polled or no longer answered by the batch status; the
    /// garbage collector removes it after its target's `gc_after`.
    pub absent_since: Option<Instant>,
    /// Its ledger or series changed since the last commit (see [`Store::commit`]).
    pub dirty: bool,
    /// This target's claim on the pipeline: no other target records it while held.
    pub claim: Option<Claim>,
    /// The encoded traces of runs recorded since the last commit (with `[traces]`); they enter
    /// the outbox with the commit.
    pub traces: Vec<bytes::Bytes>,
}

impl PipelineState {
    /// A pipeline first polled at `first_seen` (Unix seconds).
    pub fn new(first_seen: f64) -> PipelineState {
        PipelineState {
            series: None,
            ledger: RunLedger::new(first_seen),
            absent_since: None,
            dirty: false,
            claim: None,
            traces: Vec::new(),
        }
    }
}

/// What is known of one target.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Its pipelines, by id.
    pub pipelines: HashMap<String, PipelineState>,
    /// Pipelines kept by the last successful discovery: id → name.
    pub discovered: BTreeMap<String, String>,
    /// The tags of the pipelines the last discovery kept, by id (deployment environments may
    /// select by tag).
    pub discovered_tags: HashMap<String, Vec<String>>,
    /// When discovery last succeeded.
    pub discovered_at: Option<Instant>,
    /// Pipelines it reaches but leaves to the target that records them (logged once).
    pub left_to_others: std::collections::BTreeSet<String>,
}

impl TargetState {
    /// The pipelines whose first history read (the backfill) is still to come: the one
    /// definition behind the backfill's choice and the `backfill_pending` gauge.
    pub fn backfill_pending(&self) -> impl Iterator<Item = (&String, &PipelineState)> {
        self.pipelines
            .iter()
            .filter(|(_, pipeline)| pipeline.series.is_some() && pipeline.ledger.wants_backfill())
    }
}

/// One target's place in the store, shared by its successive pollers: its state, its own
/// series and its heartbeat, all removed together by the garbage collector.
#[derive(Debug)]
pub struct TargetSlot {
    state: tokio::sync::Mutex<TargetState>,
    /// The target's own series; taken (and so removed) when the target leaves the store,
    /// whoever still holds the slot.
    series: Mutex<Option<TargetSeries>>,
    /// Moved by each poll start; the watchdog reads it.
    pub heartbeat: Heartbeat,
    /// A poll of the target is running (one at a time; the backfill may still write).
    polling: AtomicBool,
    /// A poll of the target has succeeded.
    ready: AtomicBool,
    /// The grace period of its absent pipelines, and of the target itself once retired.
    gc_after: Mutex<Duration>,
    /// Since when the target is out of the configuration.
    retired_at: Mutex<Option<Instant>>,
}

impl TargetSlot {
    fn new(gc_after: Duration, series: TargetSeries) -> TargetSlot {
        TargetSlot {
            state: tokio::sync::Mutex::new(TargetState::default()),
            series: Mutex::new(Some(series)),
            heartbeat: Heartbeat::new(Duration::ZERO),
            polling: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            gc_after: Mutex::new(gc_after),
            retired_at: Mutex::new(None),
        }
    }

    /// True once a poll of this target has succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records that a poll of this target succeeded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    fn gc_after(&self) -> Duration {
        *lock(&self.gc_after)
    }

    /// Changes the target's own series (nothing once the target has left the store).
    pub fn series(&self, change: impl FnOnce(&TargetSeries)) {
        if let Some(series) = lock(&self.series).as_ref() {
            change(series);
        }
    }

    /// Removes the target's series, its own and its pipelines', now: a poller that still holds
    /// the slot writes to nothing. Returns the pipelines removed (project, pipeline), or `None`
    /// while a poll holds its state (tried again later).
    fn release(&self) -> Option<Vec<(String, String)>> {
        let mut state = self.state.try_lock().ok()?;
        let removed = state
            .pipelines
            .drain()
            .filter_map(|(id, pipeline)| Some((pipeline.series?.project_id().to_string(), id)))
            .collect();
        lock(&self.series).take();
        Some(removed)
    }
}

/// Every target's state and every target's and pipeline's series, kept in the state file when
/// there is one.
pub struct Store {
    series: Arc<SeriesTable>,
    target_families: Arc<TargetFamilies>,
    targets: Mutex<BTreeMap<String, Arc<TargetSlot>>>,
    /// The state file; none without `[state] path` or when it could not be opened.
    file: Option<Arc<StateFile>>,
    state_families: StateFamilies,
    /// What the state file kept, by target, until the target's slot takes it.
    restored: Mutex<HashMap<String, Vec<StoredPipeline>>>,
    /// Pipelines removed since the last commit: (target, project, pipeline).
    removed: Mutex<Vec<(String, String, String)>>,
    /// Traces the state file kept that no outbox takes (`[traces]` is gone): removed at the next
    /// commit.
    dropped_traces: Mutex<Vec<i64>>,
    /// The target that records each pipeline (project, pipeline).
    owners: Owners,
    /// The target that lists each pipeline in its `pipeline_ids`: it records it, whatever
    /// another target discovers.
    listed: Mutex<HashMap<(String, String), String>>,
    /// The traces awaiting delivery; none without `[traces]`.
    outbox: Option<Arc<Outbox>>,
    /// Commit times from CodeArts Repo, for deployments' lead time.
    commit_times: Mutex<commit_times::CommitTimes>,
    /// Which pipelines deploy to which environment (`[[deployments]]`).
    deployments: Mutex<deployments::Environments>,
}

impl Store {
    /// An empty store whose series are laid out by `[metrics]`, without a state file or traces.
    pub fn new(config: &MetricsConfig) -> Result<Store, StoreError> {
        Store::with_traces(config, None)
    }

    /// An empty store whose series are laid out by `[metrics]`, that keeps the traces of the
    /// runs it records for delivery with `traces`, without a state file.
    pub fn with_traces(
        config: &MetricsConfig,
        traces: Option<&TracesConfig>,
    ) -> Result<Store, StoreError> {
        let outbox = match traces {
            Some(traces) => Some(Arc::new(Outbox::new(traces.max_pending_runs)?)),
            None => None,
        };
        Ok(Store {
            // Exemplars name the trace of their run when there are traces to find.
            series: Arc::new(SeriesTable::new(config, traces.is_some())),
            outbox,
            target_families: Arc::new(TargetFamilies::new()?),
            targets: Mutex::new(BTreeMap::new()),
            file: None,
            state_families: StateFamilies::new()?,
            restored: Mutex::new(HashMap::new()),
            removed: Mutex::new(Vec::new()),
            dropped_traces: Mutex::new(Vec::new()),
            owners: Arc::new(Mutex::new(HashMap::new())),
            listed: Mutex::new(HashMap::new()),
            commit_times: Mutex::new(commit_times::CommitTimes::default()),
            deployments: Mutex::new(deployments::Environments::default()),
        })
    }

    /// The pipeline series, for rendering.
    pub fn series(&self) -> &Arc<SeriesTable> {
        &self.series
    }

    /// Every family of the store's own (the targets' series, the state file's), for
    /// registration.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let mut all = self.target_families.collectors();
        all.extend(self.state_families.collectors());
        if let Some(outbox) = &self.outbox {
            all.extend(outbox.collectors());
        }
        all
    }

    /// Whether the store keeps its state in a file.
    pub fn has_state_file(&self) -> bool {
        self.file.is_some()
    }

    /// The traces awaiting delivery; `None` without `[traces]`.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.outbox.as_ref()
    }

    /// A handle on the series of one pipeline.
    pub fn new_series(&self, project_id: &str, pipeline_id: &str, name: &str) -> Series {
        Series::new(&self.series, project_id, pipeline_id, name)
    }

    /// The slot of target `label` with grace period `gc_after`, created with its series when
    /// new. A retired target that comes back keeps what it had.
    pub fn target(&self, label: &str, gc_after: Duration) -> Arc<TargetSlot> {
        let mut targets = lock(&self.targets);
        match targets.get(label) {
            Some(slot) => {
                *lock(&slot.gc_after) = gc_after;
                *lock(&slot.retired_at) = None;
                slot.clone()
            }
            None => {
                let series = TargetSeries::new(&self.target_families, &self.series, label);
                let slot = Arc::new(TargetSlot::new(gc_after, series));
                if let Ok(mut state) = slot.state.try_lock() {
                    // Nobody else has the slot yet.
                    self.restore(label, &mut state);
                }
                targets.insert(label.to_string(), slot.clone());
                slot
            }
        }
    }

    /// Retires every target not named in `keep`: the garbage collector removes each after its
    /// `gc_after`, unless it comes back first.
    pub fn retire_others(&self, keep: &[&str]) {
        let now = Instant::now();
        for (label, slot) in lock(&self.targets).iter() {
            if keep.contains(&label.as_str()) {
                continue;
            }
            let mut retired_at = lock(&slot.retired_at);
            if retired_at.is_none() {
                *retired_at = Some(now);
                tracing::info!(target_name = %label, gc_after = ?slot.gc_after(), "target left the configuration; its series go after gc_after");
            }
        }
    }

    /// Locks `slot` for a poll, or `None` while another poll of it runs.
    pub async fn begin_poll<'a>(&'a self, slot: &'a TargetSlot) -> Option<PollGuard<'a>> {
        if slot.polling.swap(true, Ordering::AcqRel) {
            return None;
        }
        let running = Running(&slot.polling);
        // Waits only for a backfill's write, which is brief.
        let state = self.write(slot).await;
        Some(PollGuard {
            state,
            _running: running,
        })
    }

    /// Locks `slot`'s state for a brief write (the backfill's), waiting for a poll that holds it.
    pub async fn write<'a>(&'a self, slot: &'a TargetSlot) -> WriteGuard<'a> {
        WriteGuard {
            state: slot.state.lock().await,
            slot,
            series: &self.series,
            written: false,
        }
    }
}

/// A target's state, held for a write. When it is released after a write, the series are
/// marked changed, once: the one place the render cache is invalidated for them, and the one
/// place the target's `backfill_pending` is set.
pub struct WriteGuard<'a> {
    state: tokio::sync::MutexGuard<'a, TargetState>,
    slot: &'a TargetSlot,
    series: &'a SeriesTable,
    /// Borrowed mutably: a guard only read through leaves the render cache alone.
    written: bool,
}

impl std::ops::Deref for WriteGuard<'_> {
    type Target = TargetState;

    fn deref(&self) -> &TargetState {
        &self.state
    }
}

impl std::ops::DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut TargetState {
        self.written = true;
        &mut self.state
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if self.written {
            let pending = self.state.backfill_pending().count();
            self.slot
                .series(|series| series.set_backfill_pending(pending));
            self.series.changed();
        }
    }
}

/// A target's state, held for one poll (which may be cut short at any await).
pub struct PollGuard<'a> {
    state: WriteGuard<'a>,
    _running: Running<'a>,
}

impl std::ops::Deref for PollGuard<'_> {
    type Target = TargetState;

    fn deref(&self) -> &TargetState {
        &self.state
    }
}

impl std::ops::DerefMut for PollGuard<'_> {
    fn deref_mut(&mut self) -> &mut TargetState {
        &mut self.state
    }
}

/// Marks a target's poll as running while it lives.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_target_keeps_its_place_across_pollers() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let first = store.target("t", Duration::from_secs(60));
        first.set_ready();
        // The next poller of the same target (after a reload) finds the same state.
        let second = store.target("t", Duration::from_secs(30));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(second.is_ready());
        assert_eq!(
            second.gc_after(),
            Duration::from_secs(30),
            "the new grace period"
        );
        // Only one poll at a time.
        let poll = store.begin_poll(&first).await.expect("free");
        assert!(store.begin_poll(&second).await.is_none());
        drop(poll);
        assert!(store.begin_poll(&second).await.is_some());
    }

    #[tokio::test]
    async fn only_a_guard_written_through_marks_the_series_changed() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let slot = store.target("t", Duration::from_secs(60));
        let before = store.series().version();
        let read = store.write(&slot).await;
        assert!(read.pipelines.is_empty());
        drop(read);
        assert_eq!(
            store.series().version(),
            before,
            "read only: the render stays"
        );
        let mut written = store.write(&slot).await;
        written.discovered_at = None;
        drop(written);
        assert_ne!(store.series().version(), before, "written: rendered again");
    }
}
