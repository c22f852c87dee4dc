//! The normalised form of CodeArts runs and pipelines, whichever API they came from: what the
//! rest of the exporter reads. The JSON shapes they are built from are in `wire`.

use chrono::FixedOffset;

use super::time::RawTime;
use super::wire::{BuildParams, PipelineEntry, RunDetail, V3PipelineStatus, V5RunStatus};

/// A pipeline found by discovery, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineInfo {
    /// Pipeline id.
    pub id: String,
    /// Pipeline name (the id when the API gave none).
    pub name: String,
    /// Tag names.
    pub tags: Vec<String>,
    /// Disabled (`banned`): it cannot run.
    pub disabled: bool,
    /// Its latest run, as the batch status would give it (with the pipeline's name); `None`
    /// when it never ran or the entry's `latest_run` was unreadable.
    pub latest: Option<Run>,
}

impl PipelineInfo {
    /// From a list entry, with times of the service's `zone`; `None` without an id.
    pub(crate) fn from_entry(entry: &PipelineEntry, zone: FixedOffset) -> Option<PipelineInfo> {
        let id = non_empty(&entry.pipeline_id)?;
        let name = non_empty(&entry.name).unwrap_or_else(|| id.clone());
        // The list's `latest_run` names no pipeline: it is this entry's.
        let latest = entry.latest_run.as_ref().and_then(|run| {
            let run = V5RunStatus {
                pipeline_id: Some(id.clone()),
                ..run.clone()
            };
            let mut run = Run::from_v5(&run, zone)?;
            run.pipeline_name = Some(name.clone());
            // A run that can be named neither by id nor number is of no use.
            (run.run_id.is_some() || run.run_number.is_some()).then_some(run)
        });
        Some(PipelineInfo {
            name,
            id,
            tags: entry.tag_list.clone(),
            disabled: entry.banned == Some(true),
            latest,
        })
    }
}

/// Normalised run state: the v3 vocabulary plus `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunState {
    /// Queued or initialising.
    Waiting,
    /// Executing.
    Running,
    /// Waiting for a manual review.
    Verifying,
    /// Suspended.
    Suspending,
    /// Finished, whatever the outcome.
    Completed,
    /// A value this exporter does not know.
    Unknown,
}

impl RunState {
    /// Every state, in exposition order (for one-hot gauges).
    pub const ALL: [RunState; 6] = [
        RunState::Waiting,
        RunState::Running,
        RunState::Verifying,
        RunState::Suspending,
        RunState::Completed,
        RunState::Unknown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Waiting => "waiting",
            RunState::Running => "running",
            RunState::Verifying => "verifying",
            RunState::Suspending => "suspending",
            RunState::Completed => "completed",
            RunState::Unknown => "unknown",
        }
    }
}

/// Outcome of a completed run or stage. Serialized (lower-case) in the state store.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Succeeded.
    Success,
    /// Failed.
    Error,
    /// Cancelled.
    Aborted,
}

impl RunResult {
    /// Every result, in exposition order.
    pub const ALL: [RunResult; 3] = [RunResult::Success, RunResult::Error, RunResult::Aborted];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Error => "error",
            RunResult::Aborted => "aborted",
        }
    }
}

/// Maps a v5 status (run, stage or job) to state and result.
///
/// `IGNORED`, `SKIPPED` and `UNSELECTED` are finished without a result: they are not outcomes.
pub fn normalize_v5(status: Option<&str>) -> (RunState, Option<RunResult>) {
    let Some(status) = status else {
        return (RunState::Unknown, None);
    };
    match status.trim().to_ascii_uppercase().as_str() {
        "INIT" | "QUEUED" | "REDISPATCH" => (RunState::Waiting, None),
        "RUNNING" | "ASYNC_RUNNING" => (RunState::Running, None),
        "PAUSED" => (RunState::Verifying, None),
        "SUSPEND" => (RunState::Suspending, None),
        "COMPLETED" | "SUCCESS" => (RunState::Completed, Some(RunResult::Success)),
        "FAILED" | "ASYNC_FAILED" => (RunState::Completed, Some(RunResult::Error)),
        "CANCELED" | "CANCELLED" => (RunState::Completed, Some(RunResult::Aborted)),
        "IGNORED" | "SKIPPED" | "UNSELECTED" => (RunState::Completed, None),
        _ => (RunState::Unknown, None),
    }
}

/// Maps a v3 status and result (lower-case vocabulary) to state and result.
pub fn normalize_v3(status: Option<&str>, result: Option<&str>) -> (RunState, Option<RunResult>) {
    let state = match status.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("waiting") => RunState::Waiting,
        Some("running") => RunState::Running,
        Some("verifying") => RunState::Verifying,
        Some("suspending") => RunState::Suspending,
        Some("completed") => RunState::Completed,
        _ => RunState::Unknown,
    };
    let result = match result.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("success") => Some(RunResult::Success),
        Some("error") => Some(RunResult::Error),
        Some("aborted") => Some(RunResult::Aborted),
        _ => None,
    };
    // A result only means something once the run has finished.
    (state, result.filter(|_| state == RunState::Completed))
}

/// A run, normalised from any of the APIs.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Pipeline id.
    pub pipeline_id: String,
    /// Pipeline name, when the API gives it.
    pub pipeline_name: Option<String>,
    /// Run id (v5 only).
    pub run_id: Option<String>,
    /// Run number.
    pub run_number: Option<u64>,
    /// Normalised state.
    pub state: RunState,
    /// Outcome once completed.
    pub result: Option<RunResult>,
    /// Start, epoch seconds.
    pub start: Option<f64>,
    /// End, epoch seconds.
    pub end: Option<f64>,
    /// Console URL of the run.
    pub detail_url: Option<String>,
    /// What started it (`Manual`, `Scheduler`, `MR`, ...), v5 only.
    pub trigger: Option<String>,
    /// The branch built (`target_branch` of the build parameters), v5 only.
    pub branch: Option<String>,
    /// SHA of the commit built (`commit_id` of the build parameters), v5 only.
    pub commit_id: Option<String>,
    /// CodeArts Repo repository of that commit (`codehub_id` of the build parameters), v5 only:
    /// with `commit_id`, what [`super::Client::commit_time`] asks about.
    pub codehub_id: Option<String>,
    /// Time spent paused (manual reviews, suspensions), seconds; run detail only.
    pub pause: Option<f64>,
    /// Stages in order; empty when the API gave none.
    pub stages: Vec<StageRun>,
}

/// When a commit was committed, as CodeArts Repo says (`committed_date`, reference 5.7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CommitTime {
    /// Epoch seconds.
    Known(f64),
    /// The answer had no `committed_date` that reads as a time: unknown, never guessed.
    Unparsable,
}

/// A stage of a run, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRun {
    /// The stage's id in this run (v5 only; the run list and the run detail give it).
    pub id: Option<String>,
    /// The name people see.
    pub name: String,
    /// Normalised state.
    pub state: RunState,
    /// Outcome once completed.
    pub result: Option<RunResult>,
    /// Start, epoch seconds.
    pub start: Option<f64>,
    /// End, epoch seconds.
    pub end: Option<f64>,
    /// Jobs in order; only the run detail has them.
    pub jobs: Vec<JobRun>,
    /// Time spent paused (a manual review, a suspension), seconds; run detail only.
    pub pause: Option<f64>,
}

/// A job of a stage, normalised (run detail only).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    /// The job's id in this run (run detail only).
    pub id: Option<String>,
    /// Job name.
    pub name: String,
    /// Normalised state.
    pub state: RunState,
    /// Outcome once completed.
    pub result: Option<RunResult>,
    /// Start, epoch seconds.
    pub start: Option<f64>,
    /// End, epoch seconds.
    pub end: Option<f64>,
}

impl JobRun {
    /// Duration of a job that actually ran and finished.
    pub fn duration(&self) -> Option<f64> {
        duration(self.start, self.end)
    }
}

impl StageRun {
    /// Duration of a stage that actually ran and finished (skipped stages have none).
    pub fn duration(&self) -> Option<f64> {
        duration(self.start, self.end)
    }
}

fn duration(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    match (start, end) {
        (Some(start), Some(end)) if end >= start => Some(end - start),
        _ => None,
    }
}

impl Run {
    /// Whether the run has finished.
    pub fn is_completed(&self) -> bool {
        self.state == RunState::Completed
    }

    /// Duration of a finished run.
    pub fn duration(&self) -> Option<f64> {
        duration(self.start, self.end)
    }

    /// Time from the run's start to its first stage's start: initialisation and the wait for
    /// an executor. `None` when no stage started. Stage times may have whole seconds only, so
    /// a start a fraction before the run's counts as no wait.
    pub fn queue(&self) -> Option<f64> {
        let start = self.start?;
        let first = self
            .stages
            .iter()
            .filter_map(|s| s.start)
            .min_by(f64::total_cmp)?;
        Some((first - start).max(0.0))
    }

    /// From a v3 batch status entry; `None` without a pipeline id.
    pub(crate) fn from_v3(entry: &V3PipelineStatus, zone: FixedOffset) -> Option<Run> {
        let (state, result) = normalize_v3(entry.status.as_deref(), entry.result.as_deref());
        let mut stages: Vec<(i64, StageRun)> = entry
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let (state, result) =
                    normalize_v3(stage.status.as_deref(), stage.result.as_deref());
                let name = non_empty(&stage.display_name)
                    .or_else(|| non_empty(&stage.name))
                    .unwrap_or_else(|| format!("stage_{}", i + 1));
                let order = stage.order.unwrap_or(i as i64);
                let run = StageRun {
                    id: None,
                    name,
                    state,
                    result,
                    start: None,
                    end: None,
                    jobs: Vec::new(),
                    pause: None,
                };
                (order, run)
            })
            .collect();
        stages.sort_by_key(|(order, _)| *order);
        Some(Run {
            pipeline_id: non_empty(&entry.pipeline_id)?,
            pipeline_name: non_empty(&entry.pipeline_name),
            run_id: None,
            run_number: entry
                .build_id
                .as_deref()
                .and_then(|b| b.trim().parse().ok()),
            state,
            result,
            start: epoch(&entry.start_time, zone),
            end: epoch(&entry.end_time, zone).filter(|_| state == RunState::Completed),
            detail_url: non_empty(&entry.detail_url),
            trigger: None,
            branch: None,
            commit_id: None,
            codehub_id: None,
            pause: None,
            stages: stages.into_iter().map(|(_, s)| s).collect(),
        })
    }

    /// From a v5 batch status or run list entry; `None` without a pipeline id.
    pub(crate) fn from_v5(entry: &V5RunStatus, zone: FixedOffset) -> Option<Run> {
        let (state, result) = normalize_v5(entry.status.as_deref());
        let mut stages: Vec<(i64, StageRun)> = entry
            .stage_status_list
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let (state, result) = normalize_v5(stage.status.as_deref());
                let run = StageRun {
                    id: non_empty(&stage.id),
                    name: non_empty(&stage.name).unwrap_or_else(|| format!("stage_{}", i + 1)),
                    state,
                    result,
                    start: epoch(&stage.start_time, zone),
                    end: epoch(&stage.end_time, zone),
                    jobs: Vec::new(),
                    pause: None,
                };
                (stage.sequence.unwrap_or(i as i64), run)
            })
            .collect();
        stages.sort_by_key(|(order, _)| *order);
        let params = entry.build_params.as_ref().map(|params| &params.0);
        let branch = params.and_then(|params| non_empty(&params.target_branch));
        let (commit_id, codehub_id) = params.map(commit_of).unwrap_or_default();
        Some(Run {
            pipeline_id: non_empty(&entry.pipeline_id)?,
            pipeline_name: None,
            run_id: non_empty(&entry.pipeline_run_id),
            run_number: entry.run_number,
            state,
            result,
            start: epoch(&entry.start_time, zone),
            end: epoch(&entry.end_time, zone).filter(|_| state == RunState::Completed),
            detail_url: non_empty(&entry.detail_url),
            trigger: non_empty(&entry.trigger_type),
            branch,
            commit_id,
            codehub_id,
            pause: None,
            stages: stages.into_iter().map(|(_, s)| s).collect(),
        })
    }

    /// From the v5 run detail; `None` without a pipeline id.
    pub(crate) fn from_detail(detail: &RunDetail, zone: FixedOffset) -> Option<Run> {
        let (state, result) = normalize_v5(detail.status.as_deref());
        let mut stages: Vec<(i64, StageRun)> = detail
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let (state, result) = if stage.is_select == Some(false) {
                    normalize_v5(Some("UNSELECTED"))
                } else {
                    normalize_v5(stage.status.as_deref())
                };
                let unselected = stage.is_select == Some(false);
                let jobs = stage
                    .jobs
                    .iter()
                    .enumerate()
                    .map(|(j, job)| {
                        let (state, result) = if unselected || job.is_select == Some(false) {
                            normalize_v5(Some("UNSELECTED"))
                        } else {
                            normalize_v5(job.status.as_deref())
                        };
                        JobRun {
                            id: non_empty(&job.id),
                            name: non_empty(&job.name).unwrap_or_else(|| format!("job_{}", j + 1)),
                            state,
                            result,
                            start: epoch(&job.start_time, zone),
                            end: epoch(&job.end_time, zone),
                        }
                    })
                    .collect();
                let (start, end) = (epoch(&stage.start_time, zone), epoch(&stage.end_time, zone));
                let run = StageRun {
                    id: non_empty(&stage.id),
                    name: non_empty(&stage.name).unwrap_or_else(|| format!("stage_{}", i + 1)),
                    state,
                    result,
                    start,
                    end,
                    jobs,
                    pause: pause_seconds(stage.pause_time, start, end),
                };
                (stage.sequence.unwrap_or(i as i64), run)
            })
            .collect();
        stages.sort_by_key(|(order, _)| *order);
        // The code source's build parameters name the branch built (reference 5.2).
        let branch = detail.sources.iter().find_map(|source| {
            let params = &source.params.as_ref()?.0;
            non_empty(&params.build_params.as_ref()?.0.target_branch)
        });
        // The first source that names a commit; its repository from the same source (the
        // build parameters', else the source's own `codehub_id`), never from another.
        let (commit_id, codehub_id) = detail
            .sources
            .iter()
            .find_map(|source| {
                let params = &source.params.as_ref()?.0;
                let (commit, repository) = commit_of(&params.build_params.as_ref()?.0);
                Some((
                    commit?,
                    repository.or_else(|| repository_id(&params.codehub_id)),
                ))
            })
            .map_or((None, None), |(commit, repository)| {
                (Some(commit), repository)
            });
        let start = epoch(&detail.start_time, zone);
        let end = epoch(&detail.end_time, zone).filter(|_| state == RunState::Completed);
        let stages: Vec<StageRun> = stages.into_iter().map(|(_, s)| s).collect();
        // The run's own pause_time; without one, what its stages say (when any says something).
        let pause = match detail.pause_time {
            Some(_) => pause_seconds(detail.pause_time, start, end),
            None => {
                let paused: Vec<f64> = stages.iter().filter_map(|s| s.pause).collect();
                (!paused.is_empty()).then(|| paused.iter().sum())
            }
        };
        Some(Run {
            pipeline_id: non_empty(&detail.pipeline_id)?,
            pipeline_name: non_empty(&detail.name),
            run_id: non_empty(&detail.id),
            run_number: detail.run_number,
            state,
            result,
            start,
            end,
            detail_url: non_empty(&detail.detail_url),
            trigger: non_empty(&detail.trigger_type),
            branch,
            commit_id,
            codehub_id,
            pause,
            stages,
        })
    }
}

/// A `pause_time` (ms) as seconds paused. The SDK documents it as the time the run or stage
/// was interrupted, without saying whether that is a duration or a moment (reference 5.2, 7):
/// it is read as a duration, and a value that cannot be one (longer than the run or stage
/// from start to end, or, without both, an epoch-like figure past 2001) is dropped.
fn pause_seconds(pause_ms: Option<u64>, start: Option<f64>, end: Option<f64>) -> Option<f64> {
    const EPOCH_LIKE_MS: u64 = 1_000_000_000_000;
    let pause_ms = pause_ms?;
    let seconds = pause_ms as f64 / 1000.0;
    match (start, end) {
        // A second of slack: stage times may have whole seconds only.
        (Some(start), Some(end)) if end >= start => {
            (seconds <= end - start + 1.0).then_some(seconds)
        }
        _ => (pause_ms < EPOCH_LIKE_MS).then_some(seconds),
    }
}

/// The commit and repository that build parameters name; empty strings are none, and so is a
/// repository id that is not a number (CodeArts Repo's ids are, reference 5.7).
fn commit_of(params: &BuildParams) -> (Option<String>, Option<String>) {
    (
        non_empty(&params.commit_id),
        repository_id(&params.codehub_id),
    )
}

fn repository_id(value: &Option<String>) -> Option<String> {
    non_empty(value).filter(|id| is_repository_id(id))
}

/// Whether `id` can be a CodeArts Repo repository id: an integer, in digits.
pub(crate) fn is_repository_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn epoch(raw: &Option<RawTime>, zone: FixedOffset) -> Option<f64> {
    raw.as_ref().and_then(|t| t.epoch_seconds(zone))
}

/// Runs for unit tests elsewhere in the crate.
#[cfg(test)]
impl Run {
    /// A run of one stage that took 1 s: completed with success at `end` when given, else
    /// running; started at `start`.
    pub(crate) fn example(
        pipeline_id: &str,
        run_id: String,
        number: u64,
        start: f64,
        end: Option<f64>,
    ) -> Run {
        Run {
            pipeline_id: pipeline_id.into(),
            pipeline_name: None,
            run_id: Some(run_id),
            run_number: Some(number),
            state: if end.is_some() {
                RunState::Completed
            } else {
                RunState::Running
            },
            result: end.map(|_| RunResult::Success),
            start: Some(start),
            end,
            detail_url: None,
            trigger: None,
            branch: None,
            commit_id: None,
            codehub_id: None,
            pause: None,
            stages: vec![StageRun {
                id: None,
                name: "build".into(),
                state: RunState::Completed,
                result: Some(RunResult::Success),
                start: Some(1.0),
                end: Some(2.0),
                jobs: Vec::new(),
                pause: None,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::codearts::wire::{ApiErrorBody, PipelineListPage, RunList};

    fn utc8() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).expect("offset")
    }

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// The runs of the v5 batch status fixture.
    fn v5_status_fixture() -> Vec<Run> {
        let entries: Vec<V5RunStatus> =
            serde_json::from_str(&fixture("v5-batch-status.json")).expect("parses");
        entries
            .iter()
            .filter_map(|e| Run::from_v5(e, utc8()))
            .collect()
    }

    #[test]
    fn seed_v3_batch_status_example_parses() {
        let entries: Vec<V3PipelineStatus> =
            serde_json::from_str(&fixture("v3-batch-status.json")).expect("parses");
        assert_eq!(entries.len(), 1);
        let run = Run::from_v3(&entries[0], utc8()).expect("has an id");
        assert_eq!(run.pipeline_id, "92a65e2337174fabbdbccda97ab7ffad");
        assert_eq!(
            run.pipeline_name.as_deref(),
            Some("PipelineSvc测试勿删_继续执行")
        );
        assert_eq!(run.run_number, Some(25));
        assert_eq!(run.state, RunState::Completed);
        assert_eq!(run.result, Some(RunResult::Error));
        assert_eq!(run.duration(), Some(24.0));
        let names: Vec<&str> = run.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["源代码", "构建"]);
        assert!(
            run.stages
                .iter()
                .all(|s| s.result == Some(RunResult::Success))
        );
    }

    #[test]
    fn seed_v5_run_detail_example_parses() {
        let detail: RunDetail =
            serde_json::from_str(&fixture("v5-run-detail.json")).expect("parses");
        let run = Run::from_detail(&detail, utc8()).expect("has an id");
        assert_eq!(run.pipeline_id, "98b6ea1536374df883bcc3b129bca4e9");
        assert_eq!(run.pipeline_name.as_deref(), Some("子流水线qqq"));
        assert_eq!(
            run.run_id.as_deref(),
            Some("25adfa6784124cfc9b9274ceaecf9957")
        );
        assert_eq!(run.run_number, Some(1));
        assert_eq!(run.state, RunState::Completed);
        assert_eq!(run.result, Some(RunResult::Success));
        assert_eq!(run.start, Some(1_674_207_197.0));
        assert_eq!(run.duration(), Some(0.0));
        assert_eq!(run.stages.len(), 1);
        assert_eq!(run.stages[0].name, "阶段_1");
        assert_eq!(run.stages[0].duration(), Some(0.0));
        assert_eq!(detail.stages[0].jobs[0].name.as_deref(), Some("新建任务"));
    }

    const SHA: &str = "990ea057751d299f5575aac25bf97e88a60b461e";
    const REPO: &str = "2111677704";

    #[test]
    fn runs_name_the_commit_they_built_and_its_repository() {
        // Run detail (5.2): sources[].params.build_params, strings.
        let detail: RunDetail =
            serde_json::from_str(&fixture("v5-run-detail.json")).expect("parses");
        let run = Run::from_detail(&detail, utc8()).expect("a run");
        assert_eq!(run.commit_id.as_deref(), Some(SHA));
        assert_eq!(run.codehub_id.as_deref(), Some(REPO));
        // Batch status (5.1): build_params, the repository id as a JSON number; an entry
        // without build parameters names neither.
        let runs = v5_status_fixture();
        let named: Vec<(Option<&str>, Option<&str>)> = runs
            .iter()
            .map(|r| (r.commit_id.as_deref(), r.codehub_id.as_deref()))
            .collect();
        assert_eq!(named, [(Some(SHA), Some(REPO)), (None, None)]);
        // History (5.3): the same build parameters; empty strings and ids that are no number
        // are none.
        let page: RunList = serde_json::from_str(&format!(
            r#"{{"total": 4, "pipeline_runs": [
              {{"pipeline_id": "p", "build_params": {{"commit_id": "{SHA}", "codehub_id": "{REPO}"}}}},
              {{"pipeline_id": "p", "build_params": {{"commit_id": "", "codehub_id": ""}}}},
              {{"pipeline_id": "p", "build_params": {{"commit_id": " {SHA} ", "codehub_id": 2111677704.0}}}},
              {{"pipeline_id": "p", "build_params": {{"commit_id": null, "codehub_id": "../x"}}}},
              {{"pipeline_id": "p", "build_params": {{"commit_id": 5, "codehub_id": 1.5}}}}]}}"#
        ))
        .expect("parses");
        let named: Vec<(Option<String>, Option<String>)> = page
            .pipeline_runs
            .iter()
            .filter_map(|e| Run::from_v5(e, utc8()))
            .map(|r| (r.commit_id, r.codehub_id))
            .collect();
        let both = (Some(SHA.to_string()), Some(REPO.to_string()));
        assert_eq!(
            named,
            [
                both.clone(),
                (None, None),
                both,
                (None, None),
                (Some("5".to_string()), None)
            ]
        );
        // v3 names no commit.
        let entries: Vec<V3PipelineStatus> =
            serde_json::from_str(&fixture("v3-batch-status.json")).expect("parses");
        let run = Run::from_v3(&entries[0], utc8()).expect("a run");
        assert_eq!((run.commit_id, run.codehub_id), (None, None));
    }

    #[test]
    fn a_detail_takes_commit_and_repository_from_one_source() {
        let run = |sources: &str| -> Run {
            let text = format!(r#"{{"pipeline_id": "p", "sources": {sources}}}"#);
            let detail: RunDetail = serde_json::from_str(&text).expect("parses");
            Run::from_detail(&detail, utc8()).expect("a run")
        };
        let named = |run: Run| (run.commit_id, run.codehub_id);
        // The source's own codehub_id when its build parameters have none.
        assert_eq!(
            named(run(&format!(
                r#"[{{"params": {{"codehub_id": 42, "build_params": {{"commit_id": "{SHA}"}}}}}}]"#
            ))),
            (Some(SHA.into()), Some("42".into()))
        );
        // The build parameters' id first.
        assert_eq!(
            named(run(&format!(
                r#"[{{"params": {{"codehub_id": "42",
                     "build_params": {{"commit_id": "{SHA}", "codehub_id": "{REPO}"}}}}}}]"#
            ))),
            (Some(SHA.into()), Some(REPO.into()))
        );
        // The first source that names a commit, with its repository, not another's.
        assert_eq!(
            named(run(&format!(
                r#"[{{"params": {{"codehub_id": "1", "build_params": {{"target_branch": "main"}}}}}},
                    {{"params": {{"build_params": {{"commit_id": "{SHA}"}}}}}},
                    {{"params": {{"codehub_id": "3", "build_params": {{"commit_id": "abc"}}}}}}]"#
            ))),
            (Some(SHA.into()), None)
        );
        assert_eq!(named(run("null")), (None, None));
        assert_eq!(
            named(run(r#"[{"params": {"codehub_id": "1"}}]"#)),
            (None, None)
        );
    }

    #[test]
    fn the_pipeline_list_latest_run_names_its_commit() {
        let text = format!(
            r#"{{"total": 1, "pipelines": [{{"pipeline_id": "a", "name": "web",
                "latest_run": {{"pipeline_run_id": "r", "run_number": 3, "status": "COMPLETED",
                                "build_params": {{"commit_id": "{SHA}", "codehub_id": "{REPO}"}}}}}}]}}"#
        );
        let page: PipelineListPage = serde_json::from_str(&text).expect("parses");
        let info = PipelineInfo::from_entry(&page.pipelines[0], utc8()).expect("an entry");
        let latest = info.latest.expect("a latest run");
        assert_eq!(latest.commit_id.as_deref(), Some(SHA));
        assert_eq!(latest.codehub_id.as_deref(), Some(REPO));
    }

    #[test]
    fn v5_batch_status_example_parses() {
        let runs = v5_status_fixture();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].state, RunState::Completed);
        assert_eq!(runs[0].result, Some(RunResult::Error));
        assert_eq!(runs[0].run_number, Some(12));
        // Stage times come as strings: an epoch-ms string and a zone-less date (UTC+8).
        assert_eq!(runs[0].stages[0].duration(), Some(60.0));
        assert_eq!(runs[0].stages[1].duration(), Some(90.0));
        assert_eq!(runs[1].state, RunState::Running);
        assert_eq!(runs[1].end, None);
    }

    #[test]
    fn the_run_detail_gives_trigger_branch_jobs_and_queue_time() {
        let detail: RunDetail =
            serde_json::from_str(&fixture("v5-run-detail.json")).expect("parses");
        let run = Run::from_detail(&detail, utc8()).expect("has an id");
        assert_eq!(run.trigger.as_deref(), Some("Manual"));
        // sources[].params.build_params.target_branch, not the repository's default_branch.
        assert_eq!(run.branch.as_deref(), Some("master"));
        // The ids of this run's stage and job records, not of the stage's gates (`pre`).
        assert_eq!(
            run.stages[0].id.as_deref(),
            Some("aac8063fbf084eec9722c77ece6dd283")
        );
        let job = &run.stages[0].jobs[0];
        assert_eq!(job.id.as_deref(), Some("1cde6a3815164cd18d0fa4038f876e46"));
        assert_eq!(job.name, "新建任务");
        assert_eq!(job.result, Some(RunResult::Success));
        assert_eq!(job.duration(), Some(0.0));
        assert_eq!(run.queue(), Some(0.0));

        let text = r#"{"pipeline_id": "p", "status": "FAILED", "start_time": 1700000000000,
            "end_time": 1700000090000, "trigger_type": "MR",
            "sources": [{"type": "code", "params": {"default_branch": "master",
                "build_params": {"target_branch": "develop", "source_branch": "feature/x"}}}],
            "stages": [
              {"name": "b", "sequence": 1, "status": "FAILED", "start_time": 1700000030000,
               "end_time": 1700000090000, "jobs": [
                 {"name": "j1", "status": "COMPLETED", "start_time": 1700000030000, "end_time": 1700000050000},
                 {"name": "j2", "status": "FAILED", "start_time": 1700000050000, "end_time": 1700000090000},
                 {"name": "j3", "status": "INIT", "start_time": null, "end_time": null}]},
              {"name": "a", "sequence": 0, "status": "COMPLETED", "start_time": 1700000012000,
               "end_time": 1700000030000, "jobs": []},
              {"name": "c", "sequence": 2, "status": "UNSELECTED", "is_select": false,
               "start_time": 0, "end_time": 0, "jobs": [
                 {"name": "j4", "status": "INIT", "is_select": false, "start_time": 0}]}]}"#;
        let detail: RunDetail = serde_json::from_str(text).expect("parses");
        let run = Run::from_detail(&detail, utc8()).expect("has an id");
        assert_eq!(run.branch.as_deref(), Some("develop"));
        assert_eq!(run.trigger.as_deref(), Some("MR"));
        assert_eq!(run.queue(), Some(12.0));
        let jobs: Vec<(&str, Option<RunResult>, Option<f64>)> = run
            .stages
            .iter()
            .flat_map(|s| s.jobs.iter())
            .map(|j| (j.name.as_str(), j.result, j.duration()))
            .collect();
        assert_eq!(
            jobs,
            [
                ("j1", Some(RunResult::Success), Some(20.0)),
                ("j2", Some(RunResult::Error), Some(40.0)),
                ("j3", None, None),
                ("j4", None, None),
            ]
        );
    }

    #[test]
    fn history_entries_give_trigger_and_branch() {
        let entries: Vec<V5RunStatus> =
            serde_json::from_str(&fixture("v5-batch-status.json")).expect("parses");
        let run = Run::from_v5(&entries[0], utc8()).expect("has an id");
        assert!(run.trigger.is_some());
        assert_eq!(
            run.branch,
            entries[0]
                .build_params
                .as_ref()
                .and_then(|p| p.0.target_branch.clone())
        );
        let none: Vec<V5RunStatus> =
            serde_json::from_str(r#"[{"pipeline_id": "p", "build_params": null}]"#)
                .expect("parses");
        let run = Run::from_v5(&none[0], utc8()).expect("has an id");
        assert_eq!((run.queue(), run.trigger, run.branch), (None, None, None));
    }

    #[test]
    fn run_list_stages_keep_their_ids_and_batch_status_stages_have_none() {
        // The run list's stages carry an id (reference 3.4), the batch status' do not (3.2).
        let entries: Vec<V5RunStatus> = serde_json::from_str(
            r#"[{"pipeline_id": "p", "stage_status_list": [
                {"id": "aac8063fbf084eec9722c77ece6dd283", "name": "Build", "sequence": 0},
                {"id": "", "name": "Test", "sequence": 1},
                {"name": "Deploy", "sequence": 2}]}]"#,
        )
        .expect("parses");
        let run = Run::from_v5(&entries[0], utc8()).expect("has an id");
        let ids: Vec<Option<&str>> = run.stages.iter().map(|s| s.id.as_deref()).collect();
        assert_eq!(ids, [Some("aac8063fbf084eec9722c77ece6dd283"), None, None]);
    }

    #[test]
    fn pause_time_is_read_as_seconds_paused() {
        let detail = |run_pause: &str, stage_pauses: [&str; 2]| -> Run {
            let text = format!(
                r#"{{"pipeline_id": "p", "status": "COMPLETED",
                  "start_time": 1763885350000, "end_time": 1763885650000, "pause_time": {run_pause},
                  "stages": [
                    {{"name": "Build", "sequence": 0, "status": "COMPLETED",
                      "start_time": 1763885350000, "end_time": 1763885450000,
                      "pause_time": {}}},
                    {{"name": "Review", "sequence": 1, "status": "COMPLETED",
                      "start_time": 1763885450000, "end_time": 1763885650000,
                      "pause_time": {}}}]}}"#,
                stage_pauses[0], stage_pauses[1]
            );
            let detail: RunDetail = serde_json::from_str(&text).expect("parses");
            Run::from_detail(&detail, utc8()).expect("a run")
        };
        // Milliseconds, of the run and of each stage; a string of digits too.
        let run = detail("120500", ["0", "\"120500\""]);
        assert_eq!(run.pause, Some(120.5));
        assert_eq!(
            run.stages.iter().map(|s| s.pause).collect::<Vec<_>>(),
            [Some(0.0), Some(120.5)]
        );
        // The vendor's example: 0, not paused.
        assert_eq!(detail("0", ["0", "0"]).pause, Some(0.0));
        // No run figure: what the stages say, summed.
        assert_eq!(detail("null", ["1000", "2000"]).pause, Some(3.0));
        assert_eq!(detail("null", ["null", "null"]).pause, None);
        // Longer than the run took (300 s): a moment, not a duration; dropped.
        let moment = detail("1763885450000", ["0", "1763885450000"]);
        assert_eq!((moment.pause, moment.stages[1].pause), (None, None));
        assert_eq!(detail("300000", ["0", "0"]).pause, Some(300.0), "all of it");
        assert_eq!(detail("\"soon\"", ["-5", "{}"]).pause, None);
        assert_eq!(detail("null", ["-5", "{}"]).pause, None);
        // The other APIs carry none.
        let listed: V5RunStatus =
            serde_json::from_str(r#"{"pipeline_id": "p", "pause_time": 5}"#).expect("parses");
        assert_eq!(Run::from_v5(&listed, utc8()).expect("a run").pause, None);
    }

    #[test]
    fn pipeline_list_pages_parse_with_either_form_of_tags() {
        let text = r#"{"offset": 0, "limit": 10, "total": 3, "current_system_time": 1,
            "pipelines": [
              {"pipeline_id": "a", "name": "构建-a", "banned": false,
               "tag_list": ["nightly", 5, {"tag_id": "t1", "name": "发布", "color": "red"}],
               "latest_run": {"pipeline_run_id": "ad6b", "status": "FAILED", "run_number": 57,
                              "start_time": 1763885350000, "end_time": 1763885642000,
                              "stage_status_list": []}},
              {"pipeline_id": "b", "name": null, "tag_list": null, "latest_run": {"x": 1},
               "banned": true},
              {"name": "no id"},
              7]}"#;
        let page: PipelineListPage = serde_json::from_str(text).expect("parses");
        assert_eq!(page.total, Some(3));
        let mut infos: Vec<PipelineInfo> = page
            .pipelines
            .iter()
            .filter_map(|entry| PipelineInfo::from_entry(entry, utc8()))
            .collect();
        // The list's latest run is the entry's, named after it; an unreadable one is none.
        let latest = infos[0].latest.take().expect("a's latest run");
        assert_eq!(latest.pipeline_id, "a");
        assert_eq!(latest.pipeline_name.as_deref(), Some("构建-a"));
        assert_eq!(latest.run_number, Some(57));
        assert_eq!(latest.state, RunState::Completed);
        assert_eq!(latest.result, Some(RunResult::Error));
        assert_eq!(latest.end, Some(1_763_885_642.0));
        assert!(latest.stages.is_empty());
        assert_eq!(infos[1].latest, None);
        assert_eq!(
            infos,
            [
                PipelineInfo {
                    id: "a".into(),
                    name: "构建-a".into(),
                    tags: vec!["nightly".into(), "发布".into()],
                    disabled: false,
                    latest: None,
                },
                PipelineInfo {
                    id: "b".into(),
                    name: "b".into(),
                    tags: vec![],
                    disabled: true,
                    latest: None,
                },
            ]
        );
    }

    #[test]
    fn nulls_wrong_types_and_unknown_fields_do_not_fail() {
        let text = r#"{"id": null, "pipeline_id": "p", "run_number": "7", "status": 3,
            "start_time": "garbage", "end_time": [], "stages": null, "surprise": {"x": 1},
            "current_system_time": true}"#;
        let detail: RunDetail = serde_json::from_str(text).expect("parses");
        let run = Run::from_detail(&detail, utc8()).expect("has an id");
        assert_eq!(run.run_number, Some(7));
        assert_eq!(run.state, RunState::Unknown);
        assert_eq!(run.start, None);
        assert!(run.stages.is_empty());

        let list: Vec<V5RunStatus> = serde_json::from_str(
            r#"[{"pipeline_id": "a", "stage_status_list": [1, {"name": "ok"}], "build_params": 5}]"#,
        )
        .expect("parses");
        assert_eq!(list[0].stage_status_list.len(), 1);
        assert!(Run::from_v5(&V5RunStatus::default(), utc8()).is_none());
    }

    #[test]
    fn v5_vocabulary_maps_as_documented() {
        use RunResult::*;
        use RunState::*;
        let cases = [
            ("INIT", Waiting, None),
            ("QUEUED", Waiting, None),
            ("RUNNING", Running, None),
            ("ASYNC_RUNNING", Running, None),
            ("PAUSED", Verifying, None),
            ("SUSPEND", Suspending, None),
            ("COMPLETED", Completed, Some(Success)),
            ("FAILED", Completed, Some(Error)),
            ("CANCELED", Completed, Some(Aborted)),
            ("IGNORED", Completed, None),
            ("completed", Completed, Some(Success)),
            ("SOMETHING_NEW", Unknown, None),
        ];
        for (raw, state, result) in cases {
            assert_eq!(normalize_v5(Some(raw)), (state, result), "{raw}");
        }
        assert_eq!(normalize_v5(None), (Unknown, None));
    }

    #[test]
    fn v3_vocabulary_maps_and_ignores_result_until_completed() {
        assert_eq!(
            normalize_v3(Some("running"), Some("")),
            (RunState::Running, None)
        );
        assert_eq!(
            normalize_v3(Some("RUNNING"), Some("error")),
            (RunState::Running, None)
        );
        assert_eq!(
            normalize_v3(Some("completed"), Some("aborted")),
            (RunState::Completed, Some(RunResult::Aborted))
        );
        assert_eq!(normalize_v3(Some("odd"), None), (RunState::Unknown, None));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Field names of the API's answers (those the models read, and a few they skip), so
        /// generated objects hit real fields often.
        const FIELDS: [&str; 30] = [
            "pipeline_id",
            "pipeline_name",
            "build_id",
            "executor",
            "detail_url",
            "start_time",
            "end_time",
            "status",
            "result",
            "stages",
            "name",
            "display_name",
            "order",
            "dsl_method",
            "pipeline_run_id",
            "run_number",
            "trigger_type",
            "build_params",
            "stage_status_list",
            "id",
            "sequence",
            "total",
            "pipeline_runs",
            "current_system_time",
            "is_select",
            "jobs",
            "message",
            "error_code",
            "error_msg",
            "target_branch",
        ];

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(&FIELDS[..]).prop_map(str::to_string),
                1 => "[a-z_]{0,12}",
            ]
        }

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_filter_map("finite", |f| {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }),
                any::<String>().prop_map(Value::String),
                "[0-9]{0,25}".prop_map(Value::String),
                "[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?"
                    .prop_map(Value::String),
                prop::sample::select(vec![
                    "COMPLETED", "FAILED", "RUNNING", "PAUSED", "CANCELED", "UNSELECTED",
                    "completed", "success", "error", "aborted", " Running ", "",
                ])
                .prop_map(|s| Value::String(s.to_string())),
            ]
        }

        /// Any JSON, objects keyed mostly by real field names, nested a few levels.
        fn json() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((key(), inner), 0..10)
                        .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
                ]
            })
        }

        fn zone() -> impl Strategy<Value = FixedOffset> {
            (-14 * 3600..=14 * 3600).prop_filter_map("offset", FixedOffset::east_opt)
        }

        proptest! {
            /// Any object decodes into every model (lenient fields), and normalising never panics.
            #[test]
            fn any_object_decodes_into_every_model(value in json(), zone in zone()) {
                if value.is_object() {
                    let v3: V3PipelineStatus = serde_json::from_value(value.clone()).expect("v3");
                    let v5: V5RunStatus = serde_json::from_value(value.clone()).expect("v5");
                    let detail: RunDetail = serde_json::from_value(value.clone()).expect("detail");
                    let _: RunList = serde_json::from_value(value.clone()).expect("list");
                    let _: ApiErrorBody = serde_json::from_value(value.clone()).expect("error");
                    for run in [
                        Run::from_v3(&v3, zone),
                        Run::from_v5(&v5, zone),
                        Run::from_detail(&detail, zone),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        prop_assert!(!run.pipeline_id.trim().is_empty());
                        prop_assert!(run.start.is_none_or(f64::is_finite));
                        prop_assert!(run.duration().is_none_or(f64::is_finite));
                        prop_assert!(run.end.is_none() || run.state == RunState::Completed);
                        for stage in &run.stages {
                            prop_assert!(stage.duration().is_none_or(f64::is_finite));
                        }
                    }
                }
            }

            /// Decoding any JSON text, or any bytes, as any model returns a result, never panics.
            #[test]
            fn any_text_decodes_or_fails_cleanly(value in json(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                let text = value.to_string();
                for input in [text.as_bytes(), &text.as_bytes()[..text.len() / 2], &bytes[..]] {
                    let _ = serde_json::from_slice::<V3PipelineStatus>(input);
                    let _ = serde_json::from_slice::<Vec<V5RunStatus>>(input);
                    let _ = serde_json::from_slice::<RunDetail>(input);
                    let _ = serde_json::from_slice::<RunList>(input);
                    let _ = serde_json::from_slice::<ApiErrorBody>(input);
                }
            }
        }
    }
}
