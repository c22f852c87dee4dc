//! The series of every pipeline, kept compactly, and how a run becomes samples.
//!
//! Ten thousand pipelines at their full series budget are over a million series. The
//! `prometheus` crate stores every series with its own copy of its label pairs and copies every
//! series again at each gather, which needs gigabytes at that size; here the labels of a
//! pipeline are escaped and stored once and values are plain numbers. [`text`], beside the data,
//! writes the exposition family by family from them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::codearts::model::{Run, RunResult, RunState};
use crate::config::{MetricsConfig, RunLabel};

mod native;
mod protobuf;
mod text;

use native::Native;

/// `trigger_type` label values: the reference's vocabulary (6.4), list filters' values
/// included, in snake case; anything else is `other`. Keys are the vendor's values lower-cased
/// without `_` and `-`.
const TRIGGER_TYPES: [(&str, &str); 11] = [
    ("manual", "manual"),
    ("scheduler", "scheduler"),
    ("mr", "mr"),
    ("push", "push"),
    ("createtag", "create_tag"),
    ("issue", "issue"),
    ("note", "note"),
    ("rollback", "rollback"),
    ("cr", "cr"),
    ("generic", "generic"),
    ("subpipeline", "sub_pipeline"),
];
/// Label value of anything outside a bounded vocabulary.
const OTHER: &str = "other";
/// Buckets of deployments' lead time (seconds), at the DORA tiers' edges: an hour, a day, a
/// week, a month, with steps between.
const LEAD_TIME_BUCKETS: [f64; 9] = [
    300.0,
    900.0,
    3600.0,
    14_400.0,
    86_400.0,
    259_200.0,
    604_800.0,
    1_209_600.0,
    2_592_000.0,
];
/// Buckets of deployments' time to restore (seconds): an hour, a day and a week at the edges.
const RESTORE_BUCKETS: [f64; 7] = [300.0, 900.0, 1800.0, 3600.0, 14_400.0, 86_400.0, 604_800.0];

/// Why a deployment's lead time is unknown: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadTimeUnknown {
    /// The run names no commit.
    NoCommitId,
    /// The run names no repository.
    NoRepositoryId,
    /// CodeArts Repo does not know the commit (404).
    CommitNotFound,
    /// CodeArts Repo failed for longer than the exporter waits.
    RepoError,
    /// The commit's time could not be read.
    UnparsableTime,
}

impl LeadTimeUnknown {
    /// Every reason, in exposition order.
    pub const ALL: [LeadTimeUnknown; 5] = [
        LeadTimeUnknown::NoCommitId,
        LeadTimeUnknown::NoRepositoryId,
        LeadTimeUnknown::CommitNotFound,
        LeadTimeUnknown::RepoError,
        LeadTimeUnknown::UnparsableTime,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LeadTimeUnknown::NoCommitId => "no_commit_id",
            LeadTimeUnknown::NoRepositoryId => "no_repository_id",
            LeadTimeUnknown::CommitNotFound => "commit_not_found",
            LeadTimeUnknown::RepoError => "repo_error",
            LeadTimeUnknown::UnparsableTime => "unparsable_time",
        }
    }
}

/// Deployments of one pipeline that may wait for their commit's time; more count as unknown.
const MAX_AWAITING: usize = 64;

/// A successful deployment whose lead time waits for its commit's time from CodeArts Repo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitingCommit {
    /// The deployment's environment.
    pub environment: String,
    /// The repository (`codehub_id`).
    pub repository_id: String,
    /// The commit deployed.
    pub commit_id: String,
    /// When the deployment ended, Unix seconds.
    pub deployed_at: f64,
    /// When it was recorded, Unix seconds: a Repo that fails for a day makes it unknown.
    pub since: f64,
    /// The deployment run (id, or number as text): its lead time's exemplar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

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

/// Bucket bounds of one histogram family, with their `le` values formatted once, and whether
/// it has native buckets too.
#[derive(Debug, Clone)]
struct Buckets {
    bounds: Vec<f64>,
    le: Vec<String>,
    native: bool,
}

impl Buckets {
    fn new(bounds: &[f64], native: bool) -> Buckets {
        Buckets {
            bounds: bounds.to_vec(),
            le: bounds.iter().map(|b| format!("{b}")).collect(),
            native,
        }
    }
}

/// What is exposed, and how: fixed at start-up from `[metrics]`.
#[derive(Debug)]
struct Layout {
    run: Buckets,
    stage: Buckets,
    queue: Buckets,
    pause: Buckets,
    job: Buckets,
    /// A pipeline's time from red to green (opt-in buckets).
    recovery: Buckets,
    /// Deployments' lead time and time to restore: fixed, the DORA tiers.
    lead_time: Buckets,
    restore: Buckets,
    stage_status: bool,
    /// Names of the labels of run series after the pipeline labels: run labels, then `result`.
    run_label_names: Vec<&'static str>,
    /// Exemplars name their run's trace (`trace_id`) besides its id: traces are exported.
    exemplar_trace_ids: bool,
}

/// A histogram's counts per bucket (not cumulative), sum and count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    /// The latest run observed in each bucket that has one, by bucket: shown by the
    /// OpenMetrics exposition only. Kept with the counts (state files from before have none),
    /// and only for filled buckets, so a histogram without exemplars costs an empty `Vec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exemplars: Vec<Exemplar>,
    /// Native buckets (protobuf exposition only), from the first observation on while
    /// `metrics.native_histograms` is on; kept with the counts. Boxed: most histograms of a
    /// pipeline that has not run yet have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    native: Option<Box<Native>>,
}

/// The run behind a bucket's exemplar; its trace id is derived from it when rendered, not kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Exemplar {
    /// The bucket: an index into the bounds, or their number for `+Inf`.
    bucket: u32,
    /// The run id, or the run number as text where the API gives no id.
    run: Box<str>,
    /// The value observed.
    value: f64,
    /// When the run ended, Unix seconds: the exemplar's timestamp.
    end: f64,
}

/// The run an observation comes from, for its bucket's exemplar.
#[derive(Debug, Clone, Copy)]
struct RunRef<'a> {
    /// The run id, or the run number as text.
    run: &'a str,
    /// When the run ended, Unix seconds.
    end: f64,
}

impl<'a> RunRef<'a> {
    /// The run and its end, when the run has both an id (or number) and an end.
    fn of(run: &'a str, end: Option<f64>) -> Option<RunRef<'a>> {
        end.map(|end| RunRef { run, end })
    }
}

/// What names a run in exemplars and traces: its run id, else its run number as text.
fn run_name(run: &Run) -> Option<String> {
    run.run_id
        .clone()
        .or_else(|| run.run_number.map(|number| number.to_string()))
}

impl Hist {
    fn observe(&mut self, buckets: &Buckets, value: f64) {
        self.observe_run(buckets, value, None);
    }

    /// Observes `value`; when it comes from a run, that run becomes its bucket's exemplar
    /// unless the bucket's holds a run that ended later (Prometheus keeps only exemplars newer
    /// than the last it stored, so an older one would be dropped anyway).
    fn observe_run(&mut self, buckets: &Buckets, value: f64, run: Option<RunRef<'_>>) {
        if self.counts.len() != buckets.bounds.len() {
            self.counts = vec![0; buckets.bounds.len()];
            // Exemplars of other bounds name buckets that no longer exist.
            self.exemplars.clear();
        }
        // A value equal to a bound belongs to that bucket (`le`).
        let index = buckets.bounds.iter().position(|bound| value <= *bound);
        if let Some(index) = index {
            self.counts[index] += 1;
        }
        self.sum += value;
        self.count += 1;
        if buckets.native {
            self.native
                .get_or_insert_with(Box::default)
                .observe(value, native::MAX_BUCKETS);
        }
        let (Some(run), false) = (run, value.is_nan()) else {
            return;
        };
        let bucket = u32::try_from(index.unwrap_or(buckets.bounds.len())).unwrap_or(u32::MAX);
        let exemplar = Exemplar {
            bucket,
            run: run.run.into(),
            value,
            end: run.end,
        };
        match self.exemplars.binary_search_by_key(&bucket, |e| e.bucket) {
            Ok(at) => {
                if self.exemplars[at].end <= run.end {
                    self.exemplars[at] = exemplar;
                }
            }
            Err(at) => self.exemplars.insert(at, exemplar),
        }
    }

    /// Makes the native buckets agree with the classic ones after a restore: dropped when
    /// native histograms are off; rebuilt from the classic buckets when they do not hold every
    /// observation (a state file from before native histograms, or from while they were off).
    fn reconcile_native(&mut self, buckets: &Buckets) {
        if !buckets.native {
            self.native = None;
        } else if self.native.as_ref().map_or(0, |native| native.total()) != self.count
            && !self.sum.is_nan()
        {
            let native = Native::from_classic(&buckets.bounds, &self.counts, self.count, self.sum);
            self.native = (self.count > 0).then(|| Box::new(native));
        }
    }

    /// The exemplar of bucket `index` (the number of bounds for `+Inf`), if any.
    fn exemplar(&self, index: usize) -> Option<&Exemplar> {
        let index = u32::try_from(index).ok()?;
        self.exemplars
            .binary_search_by_key(&index, |e| e.bucket)
            .ok()
            .map(|at| &self.exemplars[at])
    }
}

/// Per-stage histogram and failure count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StageStats {
    duration: Hist,
    failures: u64,
}

/// The last completed run's gauges.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LastRun {
    result: Option<RunResult>,
    duration: Option<f64>,
    start: Option<f64>,
    end: Option<f64>,
    number: Option<f64>,
    /// Console link (`last_run_info`).
    url: Option<String>,
    /// Duration of each stage that ran.
    stages: BTreeMap<String, f64>,
}

/// Every value that counts runs: what Prometheus reads as counters, so what the state store
/// keeps and what is shown only once committed (see [`Series::publish`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counted {
    /// Run histogram (and `runs_total`, its count) by run label values and result.
    #[serde(with = "as_pairs")]
    runs: BTreeMap<Vec<String>, Hist>,
    missed: Option<u64>,
    queue: Option<Hist>,
    /// Time paused per run (from run details, so only with `metrics.jobs`).
    pause: Option<Hist>,
    stages: BTreeMap<String, StageStats>,
    #[serde(with = "as_pairs")]
    jobs: BTreeMap<(String, String, RunResult), Hist>,
    /// Start of the current red streak (the end of its first failed run), Unix seconds.
    #[serde(default)]
    failing_since: Option<f64>,
    /// Times from red to green.
    #[serde(default)]
    recovery: Option<Hist>,
    /// Deployment runs by environment and result.
    #[serde(default, with = "as_pairs")]
    deployments: BTreeMap<(String, RunResult), u64>,
    /// Start of the current red streak of deployments, by environment.
    #[serde(default)]
    deploy_failing_since: BTreeMap<String, f64>,
    /// Deployments' time to restore, by environment.
    #[serde(default)]
    restore: BTreeMap<String, Hist>,
    /// Deployments' lead time, by environment.
    #[serde(default)]
    lead_time: BTreeMap<String, Hist>,
    /// Successful deployments whose lead time is unknown, by environment and reason.
    #[serde(default, with = "as_pairs")]
    lead_time_unknown: BTreeMap<(String, LeadTimeUnknown), u64>,
    /// Successful deployments waiting for their commit's time.
    #[serde(default)]
    awaiting_commit: Vec<AwaitingCommit>,
}

/// Maps with keys JSON cannot name, kept as lists of pairs.
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// What the state store keeps of a pipeline's series: its name, counted values and last run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The `pipeline_name` label.
    pub name: String,
    counted: Counted,
    last: LastRun,
}

impl Stored {
    /// Forgets the counted values (kept under other buckets or labels than the running ones).
    pub fn without_counts(mut self) -> Stored {
        self.counted = Counted::default();
        self
    }
}

/// Every value of one pipeline's series; a series exists when its value is set.
#[derive(Debug, Default)]
struct PipelineData {
    /// `project_id="…",pipeline_id="…",pipeline_name="…"`, escaped.
    labels: String,
    /// The `pipeline_name` label, as it is (the protobuf exposition's labels are not escaped).
    name: Box<str>,
    state: Option<RunState>,
    stage_states: BTreeMap<String, RunState>,
    last: LastRun,
    /// The counted values shown.
    counted: Counted,
    /// The counted values recorded but not committed yet: shown by [`Series::publish`].
    pending: Option<Box<Counted>>,
}

impl Counted {
    /// Calls `visit` with every histogram and the buckets it is kept in.
    fn for_each_hist(&mut self, layout: &Layout, mut visit: impl FnMut(&mut Hist, &Buckets)) {
        // Every field named: a histogram added to the counts is visited or said not to be.
        let Counted {
            runs,
            missed: _,
            queue,
            pause,
            stages,
            jobs,
            failing_since: _,
            recovery,
            deployments: _,
            deploy_failing_since: _,
            restore,
            lead_time,
            lead_time_unknown: _,
            awaiting_commit: _,
        } = self;
        runs.values_mut().for_each(|h| visit(h, &layout.run));
        queue.iter_mut().for_each(|h| visit(h, &layout.queue));
        pause.iter_mut().for_each(|h| visit(h, &layout.pause));
        for stats in stages.values_mut() {
            visit(&mut stats.duration, &layout.stage);
        }
        jobs.values_mut().for_each(|h| visit(h, &layout.job));
        recovery.iter_mut().for_each(|h| visit(h, &layout.recovery));
        restore.values_mut().for_each(|h| visit(h, &layout.restore));
        lead_time
            .values_mut()
            .for_each(|h| visit(h, &layout.lead_time));
    }

    /// Every deployment series of `environment`, at 0 where not there yet.
    fn declare_environment(&mut self, environment: &str) {
        let env = environment.to_string();
        for result in RunResult::ALL {
            self.deployments.entry((env.clone(), result)).or_insert(0);
        }
        for reason in LeadTimeUnknown::ALL {
            self.lead_time_unknown
                .entry((env.clone(), reason))
                .or_insert(0);
        }
        self.lead_time.entry(env.clone()).or_default();
        self.restore.entry(env).or_default();
    }
}

impl PipelineData {
    /// The counted values to record into: the pending ones, begun from those shown.
    fn recording(&mut self) -> &mut Counted {
        let shown = &self.counted;
        self.pending.get_or_insert_with(|| Box::new(shown.clone()))
    }
}

/// A pipeline's project and pipeline ids.
type PipelineIds = (String, String);

/// A registered pipeline and how many handles share it.
struct Entry {
    data: Arc<Mutex<PipelineData>>,
    handles: usize,
}

/// Every pipeline's series, by project and pipeline id.
pub struct SeriesTable {
    layout: Layout,
    run_labels: RunLabels,
    entries: Mutex<BTreeMap<(String, String), Entry>>,
    /// Moves when the series change in a way a rendering must show (see [`SeriesTable::changed`]).
    version: AtomicU64,
}

/// A lock whose holder panicked still guards consistent numbers: every update is one step.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl SeriesTable {
    /// An empty table laid out by `[metrics]`; exemplars carry trace ids when
    /// `exemplar_trace_ids` (traces are exported).
    pub fn new(config: &MetricsConfig, exemplar_trace_ids: bool) -> SeriesTable {
        let native = config.native_histograms;
        SeriesTable {
            layout: Layout {
                run: Buckets::new(&config.run_duration_buckets, native),
                stage: Buckets::new(&config.stage_duration_buckets, native),
                queue: Buckets::new(&config.queue_duration_buckets, native),
                pause: Buckets::new(&config.pause_duration_buckets, native),
                job: Buckets::new(&config.job_duration_buckets, native),
                recovery: Buckets::new(&config.recovery_duration_buckets, native),
                lead_time: Buckets::new(&LEAD_TIME_BUCKETS, native),
                restore: Buckets::new(&RESTORE_BUCKETS, native),
                stage_status: config.stage_status,
                run_label_names: RunLabels::new(config)
                    .names
                    .into_iter()
                    .chain(["result"])
                    .collect(),
                exemplar_trace_ids,
            },
            run_labels: RunLabels::new(config),
            entries: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
        }
    }

    /// What is exposed and how.
    fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Every pipeline's data, for a rendering (each is locked only while it is written).
    fn pipelines(&self) -> Vec<Arc<Mutex<PipelineData>>> {
        lock(&self.entries)
            .values()
            .map(|entry| entry.data.clone())
            .collect()
    }

    /// Every pipeline's data with its project and pipeline ids (which name the traces of
    /// exemplars), for an OpenMetrics rendering.
    fn pipelines_with_ids(&self) -> Vec<(PipelineIds, Arc<Mutex<PipelineData>>)> {
        lock(&self.entries)
            .iter()
            .map(|(ids, entry)| (ids.clone(), entry.data.clone()))
            .collect()
    }

    /// What a state file's counts must have been kept under to go on: the buckets of every
    /// histogram and the run label names.
    pub fn layout_fingerprint(&self) -> String {
        let layout = &self.layout;
        format!(
            "run={:?};stage={:?};queue={:?};pause={:?};job={:?};labels={:?}",
            layout.run.bounds,
            layout.stage.bounds,
            layout.queue.bounds,
            layout.pause.bounds,
            layout.job.bounds,
            layout.run_label_names
        )
    }

    /// Publishes what every pipeline recorded (tests that render without committing).
    #[cfg(test)]
    pub(super) fn publish_all(&self) {
        for data in self.pipelines() {
            let mut data = lock(&data);
            if let Some(pending) = data.pending.take() {
                data.counted = *pending;
            }
        }
    }

    /// How many pipelines have series.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Changes with every [`SeriesTable::changed`].
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Marks the series changed, so that the next scrape renders them again. Called where a
    /// batch of writes ends (a poll, a garbage collection), not at each write: scrapes during a
    /// poll share the rendering made before it.
    pub fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// The data of a pipeline, created on first use; two handles of one pipeline share it.
    fn register(&self, labels: &[String; 3]) -> Arc<Mutex<PipelineData>> {
        let mut entries = lock(&self.entries);
        let entry = entries
            .entry((labels[0].clone(), labels[1].clone()))
            .or_insert_with(|| {
                let mut prefix = String::new();
                for (index, (name, value)) in ["project_id", "pipeline_id", "pipeline_name"]
                    .iter()
                    .zip(labels)
                    .enumerate()
                {
                    if index > 0 {
                        prefix.push(',');
                    }
                    prefix.push_str(name);
                    prefix.push_str("=\"");
                    push_escaped(&mut prefix, value);
                    prefix.push('"');
                }
                Entry {
                    data: Arc::new(Mutex::new(PipelineData {
                        labels: prefix,
                        name: labels[2].as_str().into(),
                        ..PipelineData::default()
                    })),
                    handles: 0,
                }
            });
        entry.handles += 1;
        entry.data.clone()
    }

    /// Drops one handle; the pipeline's series go with the last.
    fn release(&self, labels: &[String; 3]) {
        let mut entries = lock(&self.entries);
        let key = (labels[0].clone(), labels[1].clone());
        if let Some(entry) = entries.get_mut(&key) {
            entry.handles = entry.handles.saturating_sub(1);
            if entry.handles == 0 {
                entries.remove(&key);
            }
        }
    }
}

/// Appends `value` escaped as a label value.
pub(crate) fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A handle on the series of one pipeline, and the way the poller changes them. The series
/// go when the last handle of the pipeline is dropped.
pub struct Series {
    table: Arc<SeriesTable>,
    labels: [String; 3],
    /// Registered on the first change.
    data: Option<Arc<Mutex<PipelineData>>>,
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series")
            .field("labels", &self.labels)
            .finish()
    }
}

impl Drop for Series {
    fn drop(&mut self) {
        if self.data.take().is_some() {
            self.table.release(&self.labels);
            self.table.changed();
        }
    }
}

impl Series {
    /// A handle for one pipeline; creates no series until something is set.
    pub(super) fn new(
        table: &Arc<SeriesTable>,
        project_id: &str,
        pipeline_id: &str,
        pipeline_name: &str,
    ) -> Series {
        Series {
            table: table.clone(),
            labels: [
                project_id.to_string(),
                pipeline_id.to_string(),
                pipeline_name.to_string(),
            ],
            data: None,
        }
    }

    /// The `project_id` label value.
    pub fn project_id(&self) -> &str {
        &self.labels[0]
    }

    /// The `pipeline_name` label value.
    pub fn pipeline_name(&self) -> &str {
        &self.labels[2]
    }

    /// Changes the pipeline's data (registering it first).
    fn update<R>(&mut self, change: impl FnOnce(&mut PipelineData) -> R) -> R {
        let table = &self.table;
        let data = self
            .data
            .get_or_insert_with(|| table.register(&self.labels));
        change(&mut lock(data))
    }

    /// Sets the one-hot state of the latest run.
    pub fn set_state(&mut self, state: RunState) {
        self.update(|data| data.state = Some(state));
    }

    /// Sets the one-hot state of each stage of the latest run (stages no longer there
    /// disappear); only with `metrics.stage_status`.
    pub fn set_stage_states(&mut self, run: &Run) {
        if !self.table.layout.stage_status {
            return;
        }
        self.update(|data| {
            data.stage_states = run
                .stages
                .iter()
                .map(|stage| (stage.name.clone(), stage.state))
                .collect();
        });
    }

    /// Sets the `last_run_*` gauges and per-stage last durations from a completed run.
    pub fn set_last_completed(&mut self, run: &Run) {
        self.update(|data| {
            data.last = LastRun {
                result: run.result.or(data.last.result),
                duration: run.duration(),
                start: run.start,
                end: run.end,
                number: run.run_number.map(|n| n as f64),
                url: run.detail_url.clone(),
                stages: run
                    .stages
                    .iter()
                    .filter_map(|stage| stage.duration().map(|d| (stage.name.clone(), d)))
                    .collect(),
            };
        });
    }

    /// Observes a completed run (and each stage that ran) in the histograms. Call once per run;
    /// shown once published.
    pub fn observe_completed(&mut self, run: &Run) {
        let (Some(result), Some(duration)) = (run.result, run.duration()) else {
            return;
        };
        let mut key = self.table.run_labels.values(run);
        key.push(result.as_str().to_string());
        let table = self.table.clone();
        let layout = &table.layout;
        let name = run_name(run);
        let exemplar = name.as_deref().and_then(|name| RunRef::of(name, run.end));
        self.update(|data| {
            let counted = data.recording();
            counted
                .runs
                .entry(key)
                .or_default()
                .observe_run(&layout.run, duration, exemplar);
            // The missed counter appears with the first run, so it reads 0 rather than absent.
            counted.missed.get_or_insert(0);
            if let Some(queue) = run.queue() {
                counted
                    .queue
                    .get_or_insert_with(Hist::default)
                    .observe(&layout.queue, queue);
            }
            for stage in &run.stages {
                if let (Some(stage_result), Some(duration)) = (stage.result, stage.duration()) {
                    let stats = counted.stages.entry(stage.name.clone()).or_default();
                    stats
                        .duration
                        .observe_run(&layout.stage, duration, exemplar);
                    if stage_result == RunResult::Error {
                        stats.failures += 1;
                    }
                }
            }
            // Red to green: from the end of the first failed run of a streak to the end of the
            // next successful one. The histogram exists (at 0) from the first run on, so that
            // Prometheus counts its first observation.
            let recovery = counted.recovery.get_or_insert_with(Hist::default);
            if let Some(end) = run.end {
                match result {
                    RunResult::Error => {
                        counted.failing_since.get_or_insert(end);
                    }
                    RunResult::Success => {
                        if let Some(since) = counted.failing_since.take() {
                            recovery.observe(&layout.recovery, (end - since).max(0.0));
                        }
                    }
                    RunResult::Aborted => {}
                }
            }
        });
    }

    /// Observes a completed run (already observed by [`Series::observe_completed`]) as a
    /// deployment to `environment`: counts it, measures the time to restore after failed ones,
    /// and, for a successful one, its lead time: unknown at once without a commit or a
    /// repository, else once its commit's time is known ([`Series::resolve_commit`]).
    pub fn observe_deployment(
        &mut self,
        run: &Run,
        environment: &str,
        commit_id: Option<&str>,
        repository_id: Option<&str>,
        now: f64,
    ) {
        let (Some(result), Some(end)) = (run.result, run.end) else {
            return;
        };
        let table = self.table.clone();
        let layout = &table.layout;
        self.update(|data| {
            let counted = data.recording();
            let env = environment.to_string();
            // Every label set exists from the first deployment on (0 until it happens).
            counted.declare_environment(environment);
            let restore = counted.restore.entry(env.clone()).or_default();
            *counted
                .deployments
                .entry((env.clone(), result))
                .or_insert(0) += 1;
            match result {
                RunResult::Error => {
                    counted.deploy_failing_since.entry(env).or_insert(end);
                }
                RunResult::Aborted => {}
                RunResult::Success => {
                    if let Some(since) = counted.deploy_failing_since.remove(&env) {
                        restore.observe(&layout.restore, (end - since).max(0.0));
                    }
                    let unknown = match (commit_id, repository_id) {
                        (None, _) => Some(LeadTimeUnknown::NoCommitId),
                        (_, None) => Some(LeadTimeUnknown::NoRepositoryId),
                        (Some(_), Some(_)) if counted.awaiting_commit.len() >= MAX_AWAITING => {
                            Some(LeadTimeUnknown::RepoError)
                        }
                        (Some(commit_id), Some(repository_id)) => {
                            counted.awaiting_commit.push(AwaitingCommit {
                                environment: env.clone(),
                                repository_id: repository_id.to_string(),
                                commit_id: commit_id.to_string(),
                                deployed_at: end,
                                since: now,
                                run: run_name(run),
                            });
                            None
                        }
                    };
                    if let Some(reason) = unknown {
                        *counted.lead_time_unknown.entry((env, reason)).or_insert(0) += 1;
                    }
                }
            }
        });
    }

    /// Declares the pipeline a deployment pipeline of `environment` before its first
    /// deployment: its deployment series exist at 0, so that Prometheus counts the first one.
    pub fn declare_environment(&mut self, environment: &str) {
        self.update(|data| {
            let PipelineData {
                counted, pending, ..
            } = data;
            for counted in std::iter::once(counted).chain(pending.as_deref_mut()) {
                counted.declare_environment(environment);
            }
        });
    }

    /// The deployments whose lead time waits for their commit's time.
    pub fn awaiting_commits(&self) -> Vec<AwaitingCommit> {
        self.data.as_ref().map_or_else(Vec::new, |data| {
            let data = lock(data);
            data.pending
                .as_deref()
                .unwrap_or(&data.counted)
                .awaiting_commit
                .clone()
        })
    }

    /// What CodeArts Repo said of a commit: its time (`Ok`, Unix seconds) makes the lead time of
    /// every deployment of it that waits; `Err` makes theirs unknown for that reason.
    pub fn resolve_commit(
        &mut self,
        repository_id: &str,
        commit_id: &str,
        committed: Result<f64, LeadTimeUnknown>,
    ) {
        let table = self.table.clone();
        let layout = &table.layout;
        self.update(|data| {
            let counted = data.recording();
            let (resolved, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut counted.awaiting_commit)
                    .into_iter()
                    .partition(|a| a.repository_id == repository_id && a.commit_id == commit_id);
            counted.awaiting_commit = waiting;
            for deployment in resolved {
                match committed {
                    Ok(at) => {
                        // The deployment run, which ended when it deployed, is the exemplar.
                        let exemplar = deployment
                            .run
                            .as_deref()
                            .and_then(|run| RunRef::of(run, Some(deployment.deployed_at)));
                        counted
                            .lead_time
                            .entry(deployment.environment)
                            .or_default()
                            .observe_run(
                                &layout.lead_time,
                                (deployment.deployed_at - at).max(0.0),
                                exemplar,
                            )
                    }
                    Err(reason) => {
                        *counted
                            .lead_time_unknown
                            .entry((deployment.environment, reason))
                            .or_insert(0) += 1
                    }
                }
            }
        });
    }

    /// Observes each job that ran in `detail` (the run detail of a run recorded once).
    pub fn observe_jobs(&mut self, detail: &Run) {
        let table = self.table.clone();
        let layout = &table.layout;
        let name = run_name(detail);
        let exemplar = name
            .as_deref()
            .and_then(|name| RunRef::of(name, detail.end));
        self.update(|data| {
            let counted = data.recording();
            for stage in &detail.stages {
                for job in &stage.jobs {
                    if let (Some(result), Some(duration)) = (job.result, job.duration()) {
                        counted
                            .jobs
                            .entry((stage.name.clone(), job.name.clone(), result))
                            .or_default()
                            .observe_run(&layout.job, duration, exemplar);
                    }
                }
            }
        });
    }

    /// Observes the time `detail` (the run detail of a run recorded once) spent paused, when
    /// its detail says.
    pub fn observe_pause(&mut self, detail: &Run) {
        let Some(pause) = detail.pause else {
            return;
        };
        let table = self.table.clone();
        let layout = &table.layout;
        self.update(|data| {
            data.recording()
                .pause
                .get_or_insert_with(Hist::default)
                .observe(&layout.pause, pause);
        });
    }

    /// Counts `runs` completed runs that were found too late to be recorded, or not at all.
    pub fn missed(&mut self, runs: u64) {
        self.update(|data| *data.recording().missed.get_or_insert(0) += runs);
    }

    /// What the state store keeps of these series: the counted values as recorded (committed
    /// or not yet), and the last run.
    pub fn stored(&self) -> Stored {
        let (counted, last) = match &self.data {
            Some(data) => {
                let data = lock(data);
                let counted = data.pending.as_deref().unwrap_or(&data.counted).clone();
                (counted, data.last.clone())
            }
            None => Default::default(),
        };
        Stored {
            name: self.labels[2].clone(),
            counted,
            last,
        }
    }

    /// Shows the counted values recorded so far: called once they are committed to the state
    /// store (at once without one), so that `/metrics` never shows a count a restart could take
    /// back.
    pub fn publish(&mut self) {
        if let Some(data) = &self.data {
            let mut data = lock(data);
            if let Some(pending) = data.pending.take() {
                data.counted = *pending;
            }
        }
    }

    /// Whether recorded values wait to be published.
    pub fn has_pending(&self) -> bool {
        self.data
            .as_ref()
            .is_some_and(|data| lock(data).pending.is_some())
    }

    /// Shows what the state store kept (at start, before any scrape).
    pub fn restore(&mut self, stored: Stored) {
        let table = self.table.clone();
        self.update(|data| {
            data.counted = stored.counted;
            data.counted
                .for_each_hist(&table.layout, Hist::reconcile_native);
            data.last = stored.last;
        });
    }
}

/// The integration tests' exposition parser, so unit and integration tests read the text alike.
/// Declared here, not in `tests`: a `#[path]` inside an inline module is read relative to
/// `src/store/series/tests/`, which does not exist.
#[cfg(test)]
#[path = "../../tests/common/exposition.rs"]
pub(crate) mod exposition;

/// `stored` as a state file without `field` anywhere in it has it (one written before the
/// field existed), read back.
#[cfg(test)]
fn without_field(stored: &Stored, field: &str) -> Stored {
    fn strip(value: &mut serde_json::Value, field: &str) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove(field);
                map.values_mut().for_each(|v| strip(v, field));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip(v, field)),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(stored).expect("json");
    strip(&mut value, field);
    serde_json::from_value(value).expect("a state without the field still loads")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::codearts::model::StageRun;
    use crate::config::RunLabel;
    use crate::metrics::Metrics;
    use prometheus::Encoder;
    use prometheus::core::Collector;

    use super::exposition::{Sample, parse_metrics};

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
            (Some("RollBack"), "rollback"),
            (Some("CR"), "cr"),
            (Some("Generic"), "generic"),
            (Some("SubPipeline"), "sub_pipeline"),
            (Some("sub_pipeline"), "sub_pipeline"),
            (Some("Roll-Back"), "rollback"),
            (Some(" push "), "push"),
            (Some("Webhook"), "other"),
            (Some(""), "other"),
            (None, "other"),
        ];
        for (raw, label) in cases {
            assert_eq!(trigger_label(raw), label, "{raw:?}");
        }
    }

    fn stage(
        name: &str,
        state: RunState,
        result: Option<RunResult>,
        times: Option<(f64, f64)>,
    ) -> StageRun {
        StageRun {
            id: None,
            name: name.into(),
            state,
            result,
            start: times.map(|t| t.0),
            end: times.map(|t| t.1),
            jobs: Vec::new(),
            pause: None,
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
            commit_id: None,
            codehub_id: None,
            pause: None,
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

    /// A store and the metrics that render it.
    struct Fixture {
        store: crate::store::Store,
        metrics: Metrics,
    }

    fn fixture(config: &MetricsConfig) -> Fixture {
        let store = crate::store::Store::new(config).expect("store");
        let metrics = Metrics::new(&store).expect("metrics");
        Fixture { store, metrics }
    }

    impl Fixture {
        fn series(&self, project_id: &str, pipeline_id: &str, name: &str) -> Series {
            self.store.new_series(project_id, pipeline_id, name)
        }
    }

    /// The rendering, once everything recorded is published (as a commit does).
    fn text(m: &Fixture) -> String {
        m.store.series().publish_all();
        String::from_utf8(m.metrics.render()).expect("utf-8")
    }

    /// The value of the one series named `name` (with `_count`/`_sum`/`_bucket` suffix) of
    /// pipeline `p` whose labels include `labels`.
    fn sample(m: &Fixture, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels = labels.to_vec();
        labels.extend([
            ("project_id", "proj"),
            ("pipeline_id", "p"),
            ("pipeline_name", NAME),
        ]);
        let found: Vec<f64> = parse_metrics(&text(m))
            .into_iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        match found.as_slice() {
            [one] => Some(*one),
            [] => None,
            many => panic!("{name} {labels:?}: {} series", many.len()),
        }
    }

    fn counter(m: &Fixture, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(m, name, labels)
    }

    /// Series of pipeline `p`, by family (histogram suffixes stripped).
    fn series_per_family(m: &Fixture) -> BTreeMap<String, usize> {
        let mut families = BTreeMap::new();
        for Sample { name, labels, .. } in parse_metrics(&text(m)) {
            if labels.get("pipeline_id").map(String::as_str) != Some("p") {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| base.ends_with("_seconds"))
                .unwrap_or(&name)
                .to_string();
            *families.entry(family).or_insert(0) += 1;
        }
        families
    }

    /// Metrics with the one-hot stage states on.
    fn with_stage_status() -> Fixture {
        fixture(&MetricsConfig {
            stage_status: true,
            ..MetricsConfig::default()
        })
    }

    const NAME: &str = "Pipe \"one\" 流水线";

    /// A pipeline whose latest run failed, seen and recorded as a poll does.
    fn recorded_failed_run(m: &Fixture) -> (Series, Run) {
        let mut series = m.series("proj", "p", NAME);
        let run = failed_run();
        series.set_state(run.state);
        series.set_stage_states(&run);
        series.set_last_completed(&run);
        series.observe_completed(&run);
        (series, run)
    }

    #[test]
    fn a_completed_run_becomes_the_documented_samples() {
        let m = with_stage_status();
        let (mut series, _) = recorded_failed_run(&m);

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
                &[("stage", "构建")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_stage_duration_seconds_sum",
                &[("stage", "test")]
            ),
            Some(60.5)
        );
        // Only the stage that failed counts a failure; the one that succeeded reads 0.
        assert_eq!(
            counter(
                &m,
                "codearts_pipeline_stage_failures_total",
                &[("stage", "test")]
            ),
            Some(1.0)
        );
        assert_eq!(
            counter(
                &m,
                "codearts_pipeline_stage_failures_total",
                &[("stage", "构建")]
            ),
            Some(0.0)
        );
        assert_eq!(
            counter(
                &m,
                "codearts_pipeline_stage_failures_total",
                &[("stage", "deploy")]
            ),
            None
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
            counter(&m, "codearts_pipeline_runs_total", &[("result", "error")]),
            Some(1.0)
        );
        assert_eq!(
            counter(&m, "codearts_pipeline_runs_missed_total", &[]),
            Some(0.0)
        );
        series.missed(1);
        assert_eq!(
            counter(&m, "codearts_pipeline_runs_missed_total", &[]),
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
        let m = with_stage_status();
        let (mut series, run) = recorded_failed_run(&m);

        let mut renamed = run.clone();
        renamed.stages.truncate(1);
        renamed.detail_url = Some("https://console.example/run/8".into());
        series.set_stage_states(&renamed);
        series.set_last_completed(&renamed);
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

        drop(series);
        let all = text(&m);
        assert!(!all.contains("pipeline_id=\"p\""), "left over:\n{all}");
    }

    #[test]
    fn run_labels_are_added_with_bounded_values() {
        let config = MetricsConfig {
            run_labels: vec![RunLabel::Branch, RunLabel::TriggerType],
            branches: vec!["main".into()],
            ..MetricsConfig::default()
        };
        let m = fixture(&config);
        let mut series = m.series("proj", "p", NAME);
        let mut run = failed_run();
        series.observe_completed(&run);
        run.run_number = Some(8);
        run.branch = Some("main".into());
        run.trigger = Some("Scheduler".into());
        series.observe_completed(&run);
        run.run_number = Some(9);
        run.branch = None;
        run.trigger = Some("SomethingNew".into());
        series.observe_completed(&run);
        for (trigger, branch) in [("push", "other"), ("scheduler", "main"), ("other", "other")] {
            let labels = [
                ("trigger_type", trigger),
                ("branch", branch),
                ("result", "error"),
            ];
            assert_eq!(
                counter(&m, "codearts_pipeline_runs_total", &labels),
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
        drop(series);
        assert!(!text(&m).contains("pipeline_id=\"p\""));

        // Without run labels, the families keep their plain label set.
        let m = fixture(&MetricsConfig::default());
        let mut series = m.series("proj", "p", NAME);
        series.observe_completed(&failed_run());
        assert_eq!(
            counter(&m, "codearts_pipeline_runs_total", &[("result", "error")]),
            Some(1.0)
        );
        let all = text(&m);
        assert!(!all.contains("trigger_type="));
    }

    #[test]
    fn jobs_and_queue_time_are_observed_and_removed() {
        use crate::codearts::model::JobRun;
        let m = fixture(&MetricsConfig::default());
        let mut series = m.series("proj", "p", NAME);
        let mut run = failed_run();
        run.start = Some(990.0);
        series.observe_completed(&run);
        assert_eq!(
            sample(&m, "codearts_pipeline_run_queue_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_run_queue_seconds_sum", &[]),
            Some(10.0)
        );
        let job = |name: &str, result: Option<RunResult>, times: Option<(f64, f64)>| JobRun {
            id: None,
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
        series.observe_jobs(&run);
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
        // Time paused: one observation per run whose detail says, none otherwise.
        assert_eq!(
            sample(&m, "codearts_pipeline_run_pause_seconds_count", &[]),
            None
        );
        series.observe_pause(&run);
        assert_eq!(
            sample(&m, "codearts_pipeline_run_pause_seconds_count", &[]),
            None,
            "a detail without pause_time"
        );
        for pause in [0.0, 42.5] {
            run.pause = Some(pause);
            series.observe_pause(&run);
        }
        assert_eq!(
            sample(&m, "codearts_pipeline_run_pause_seconds_count", &[]),
            Some(2.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_run_pause_seconds_sum", &[]),
            Some(42.5)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_pipeline_run_pause_seconds_bucket",
                &[("le", "+Inf")]
            ),
            Some(2.0),
            "no buckets by default"
        );
        drop(series);
        let all = text(&m);
        assert!(!all.contains("pipeline_id=\"p\""), "left over:\n{all}");

        // Buckets when asked.
        let m = fixture(&MetricsConfig {
            pause_duration_buckets: vec![60.0, 3600.0],
            ..MetricsConfig::default()
        });
        let mut series = m.series("proj", "p", NAME);
        run.pause = Some(600.0);
        series.observe_pause(&run);
        let le = |bound: &str| {
            sample(
                &m,
                "codearts_pipeline_run_pause_seconds_bucket",
                &[("le", bound)],
            )
        };
        assert_eq!(
            (le("60"), le("3600"), le("+Inf")),
            (Some(0.0), Some(1.0), Some(1.0))
        );
    }

    /// A completed 6-stage run with `result`, where stage `failing` carries the result.
    fn six_stage_run(number: u64, result: RunResult, failing: usize) -> Run {
        let end = 10_000.0 + 1000.0 * number as f64;
        let start = end - 600.0;
        let stages = (0..6)
            .map(|index| {
                let from = start + 10.0 + 90.0 * index as f64;
                let outcome = if index == failing {
                    result
                } else {
                    RunResult::Success
                };
                stage(
                    &format!("stage {index}"),
                    RunState::Completed,
                    Some(outcome),
                    Some((from, from + 90.0)),
                )
            })
            .collect();
        Run {
            run_number: Some(number),
            result: Some(result),
            start: Some(start),
            end: Some(end),
            detail_url: Some(format!("https://console.example/run/{number}")),
            stages,
            ..failed_run()
        }
    }

    /// Every series a 6-stage pipeline can have: runs of every result, every stage failing
    /// once, a run missed, the states set.
    fn saturate(m: &Fixture) -> Series {
        let mut series = m.series("proj", "p", NAME);
        let mut number = 0;
        for result in RunResult::ALL {
            for failing in 0..6 {
                number += 1;
                let run = six_stage_run(number, result, failing);
                series.observe_completed(&run);
                series.set_last_completed(&run);
                series.set_state(RunState::Running);
                series.set_stage_states(&run);
            }
        }
        series.missed(1);
        series
    }

    #[test]
    fn a_six_stage_pipeline_stays_within_its_series_budget_by_default() {
        let m = fixture(&MetricsConfig::default());
        let _series = saturate(&m);
        let families = series_per_family(&m);
        let total: usize = families.values().sum();
        // The budget docs/metrics.md documents, family by family.
        let expected: BTreeMap<String, usize> = [
            ("codearts_pipeline_status", 6),
            ("codearts_pipeline_last_run_result", 3),
            ("codearts_pipeline_last_run_duration_seconds", 1),
            ("codearts_pipeline_last_run_start_timestamp_seconds", 1),
            ("codearts_pipeline_last_run_end_timestamp_seconds", 1),
            ("codearts_pipeline_last_run_number", 1),
            ("codearts_pipeline_last_run_info", 1),
            ("codearts_pipeline_run_duration_seconds", 3 * (8 + 3)),
            ("codearts_pipeline_runs_total", 3),
            ("codearts_pipeline_runs_missed_total", 1),
            ("codearts_pipeline_run_queue_seconds", 3),
            ("codearts_pipeline_stage_last_duration_seconds", 6),
            ("codearts_pipeline_stage_duration_seconds", 6 * (6 + 3)),
            ("codearts_pipeline_stage_failures_total", 6),
            ("codearts_pipeline_failing_since_timestamp_seconds", 1),
            ("codearts_pipeline_recovery_seconds", 3),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_string(), count))
        .collect();
        assert_eq!(families, expected);
        assert!(total <= 124, "{total} series for a 6-stage pipeline");

        // The knobs that add detail add what docs/metrics.md says.
        let m = fixture(&MetricsConfig {
            stage_status: true,
            queue_duration_buckets: vec![10.0, 60.0],
            ..MetricsConfig::default()
        });
        let _series = saturate(&m);
        let families = series_per_family(&m);
        assert_eq!(families["codearts_pipeline_stage_status"], 36);
        assert_eq!(families["codearts_pipeline_run_queue_seconds"], 5);
        // No buckets at all: each histogram keeps _sum, _count and the +Inf bucket.
        let m = fixture(&MetricsConfig {
            run_duration_buckets: Vec::new(),
            stage_duration_buckets: Vec::new(),
            ..MetricsConfig::default()
        });
        let _series = saturate(&m);
        let families = series_per_family(&m);
        assert_eq!(families["codearts_pipeline_run_duration_seconds"], 9);
        assert_eq!(families["codearts_pipeline_stage_duration_seconds"], 18);
        assert_eq!(families.values().sum::<usize>(), 124 - 24 - 36);
    }

    /// A completed run `number` of pipeline `p` ending at `end` with `result`.
    fn ended(number: u64, end: f64, result: RunResult) -> Run {
        let mut run = Run::example("p", format!("run-{number}"), number, end - 60.0, Some(end));
        run.result = Some(result);
        run
    }

    #[test]
    fn red_streaks_give_one_recovery_and_deployments_their_lead_time() {
        let m = fixture(&MetricsConfig::default());
        let mut series = m.series("proj", "p", NAME);
        let env = [("environment", "production")];
        let deploy = |series: &mut Series, run: &Run, commit: Option<&str>, repo: Option<&str>| {
            series.observe_completed(run);
            series.observe_deployment(run, "production", commit, repo, 0.0);
        };
        // Green, then fail, fail, succeed: one recovery, from the first failure's end.
        deploy(
            &mut series,
            &ended(1, 1_000.0, RunResult::Success),
            Some("c1"),
            Some("r"),
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_failing_since_timestamp_seconds", &[]),
            Some(0.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_recovery_seconds_count", &[]),
            Some(0.0)
        );
        for (number, end, result) in [
            (2, 2_000.0, RunResult::Error),
            (3, 2_500.0, RunResult::Aborted),
            (4, 3_000.0, RunResult::Error),
        ] {
            deploy(
                &mut series,
                &ended(number, end, result),
                Some("c2"),
                Some("r"),
            );
        }
        assert_eq!(
            sample(&m, "codearts_pipeline_failing_since_timestamp_seconds", &[]),
            Some(2_000.0),
            "red since the first failure"
        );
        deploy(
            &mut series,
            &ended(5, 5_600.0, RunResult::Success),
            Some("c3"),
            Some("r"),
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_failing_since_timestamp_seconds", &[]),
            Some(0.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_recovery_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_pipeline_recovery_seconds_sum", &[]),
            Some(3_600.0)
        );
        assert_eq!(
            sample(&m, "codearts_deployment_recovery_seconds_count", &env),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_deployment_recovery_seconds_sum", &env),
            Some(3_600.0)
        );
        let le_3600 = [("environment", "production"), ("le", "3600")];
        assert_eq!(
            sample(&m, "codearts_deployment_recovery_seconds_bucket", &le_3600),
            Some(1.0)
        );
        for (result, count) in [("success", 2.0), ("error", 2.0), ("aborted", 1.0)] {
            let labels = [("environment", "production"), ("result", result)];
            assert_eq!(
                sample(&m, "codearts_deployments_total", &labels),
                Some(count),
                "{result}"
            );
        }
        // Lead times wait for their commits' times: c1 and c3 are asked for, c2 never
        // succeeded. Each commit's time makes the lead time of its deployments.
        let awaiting: Vec<String> = series
            .awaiting_commits()
            .into_iter()
            .map(|a| a.commit_id)
            .collect();
        assert_eq!(awaiting, ["c1", "c3"]);
        assert_eq!(
            sample(&m, "codearts_deployment_lead_time_seconds_count", &env),
            Some(0.0)
        );
        series.resolve_commit("r", "c3", Ok(5_600.0 - 7_200.0));
        series.resolve_commit("r", "c1", Err(LeadTimeUnknown::CommitNotFound));
        assert!(series.awaiting_commits().is_empty());
        assert_eq!(
            sample(&m, "codearts_deployment_lead_time_seconds_count", &env),
            Some(1.0)
        );
        assert_eq!(
            sample(&m, "codearts_deployment_lead_time_seconds_sum", &env),
            Some(7_200.0)
        );
        let le = |bound: &'static str| [("environment", "production"), ("le", bound)];
        assert_eq!(
            sample(
                &m,
                "codearts_deployment_lead_time_seconds_bucket",
                &le("3600")
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_deployment_lead_time_seconds_bucket",
                &le("14400")
            ),
            Some(1.0)
        );
        let unknown = |reason: &'static str| [("environment", "production"), ("reason", reason)];
        assert_eq!(
            sample(
                &m,
                "codearts_deployment_lead_time_unknown_total",
                &unknown("commit_not_found")
            ),
            Some(1.0)
        );
        // A run without a commit or a repository: unknown at once.
        deploy(
            &mut series,
            &ended(6, 6_000.0, RunResult::Success),
            None,
            Some("r"),
        );
        deploy(
            &mut series,
            &ended(7, 7_000.0, RunResult::Success),
            Some("c4"),
            None,
        );
        assert_eq!(
            sample(
                &m,
                "codearts_deployment_lead_time_unknown_total",
                &unknown("no_commit_id")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_deployment_lead_time_unknown_total",
                &unknown("no_repository_id")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &m,
                "codearts_deployment_lead_time_unknown_total",
                &unknown("repo_error")
            ),
            Some(0.0)
        );
    }

    #[test]
    fn histograms_read_as_the_prometheus_crate_writes_them() {
        // The same observations through the crate and through this store give the same
        // bucket, sum and count samples.
        let buckets = vec![30.0, 60.0, 120.0, 300.0, 900.0, 3600.0];
        let config = MetricsConfig {
            stage_duration_buckets: buckets.clone(),
            ..MetricsConfig::default()
        };
        let m = fixture(&config);
        let reference = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("codearts_pipeline_stage_duration_seconds", "x")
                .buckets(buckets),
            &["project_id", "pipeline_id", "pipeline_name", "stage"],
        )
        .expect("histogram");
        let mut series = m.series("proj", "p", NAME);
        for (number, seconds) in [29.0, 30.0, 30.5, 61.0, 3600.0, 7200.0, 0.25]
            .into_iter()
            .enumerate()
        {
            let mut run = failed_run();
            run.run_number = Some(number as u64);
            run.stages = vec![stage(
                "build",
                RunState::Completed,
                Some(RunResult::Success),
                Some((1000.0, 1000.0 + seconds)),
            )];
            run.end = Some(1000.0 + seconds);
            series.observe_completed(&run);
            reference
                .with_label_values(&["proj", "p", NAME, "build"])
                .observe(seconds);
        }
        let mut expected = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&reference.collect(), &mut expected)
            .expect("encode");
        let pick = |text: &str| -> Vec<Sample> {
            parse_metrics(text)
                .into_iter()
                .filter(|s| s.name.starts_with("codearts_pipeline_stage_duration"))
                .collect()
        };
        assert_eq!(
            pick(&text(&m)),
            pick(&String::from_utf8(expected).expect("utf-8"))
        );
    }

    #[test]
    fn label_values_are_escaped_and_families_written_once() {
        let m = fixture(&MetricsConfig::default());
        let mut one = m.series("proj", "p", "back\\slash \"quoted\"\nnew line");
        let mut two = m.series("proj", "q", "two");
        for series in [&mut one, &mut two] {
            series.set_state(RunState::Waiting);
        }
        let all = text(&m);
        assert!(
            all.contains("pipeline_name=\"back\\\\slash \\\"quoted\\\"\\nnew line\""),
            "{all}"
        );
        assert_eq!(
            all.matches("# TYPE codearts_pipeline_status gauge").count(),
            1
        );
        // Families without a series are not written at all.
        assert!(!all.contains("codearts_pipeline_run_duration_seconds"));
        let names: Vec<String> = parse_metrics(&all)
            .into_iter()
            .filter(|s| s.name == "codearts_pipeline_status")
            .map(|s| s.labels["pipeline_name"].clone())
            .collect();
        assert!(names.contains(&"back\\slash \"quoted\"\nnew line".to_string()));
        assert_eq!(names.len(), 12);
    }

    #[test]
    fn two_handles_of_one_pipeline_share_its_series() {
        let m = fixture(&MetricsConfig::default());
        let mut one = m.series("proj", "p", NAME);
        let mut two = m.series("proj", "p", NAME);
        one.set_state(RunState::Running);
        two.set_state(RunState::Completed);
        assert_eq!(
            sample(&m, "codearts_pipeline_status", &[("status", "completed")]),
            Some(1.0)
        );
        drop(one);
        assert!(
            text(&m).contains("pipeline_id=\"p\""),
            "the other handle keeps them"
        );
        drop(two);
        assert!(!text(&m).contains("pipeline_id=\"p\""));
        // A pipeline whose series went starts afresh with a new handle.
        let mut again = m.series("proj", "p", NAME);
        again.set_state(RunState::Waiting);
        assert_eq!(
            sample(&m, "codearts_pipeline_status", &[("status", "waiting")]),
            Some(1.0)
        );
    }
}
