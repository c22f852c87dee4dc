//! The simulated world: projects, pipelines, their run plans, and the state of a run at any time.
//!
//! Every pipeline owns an RNG seeded from the simulator seed and its index, so what it does
//! never depends on which requests arrived first. A run is planned completely when it is
//! created (relative times of every stage, job and step); its state at time `t` is then a pure
//! function of the plan and `t`.
//!
//! `pipeline` generates the pipelines (and says how runs end) and `plan` their runs, `commit`
//! what each run builds and the code it deploys; `run_log` adds runs as time passes and `view`
//! gives the state of a run at a given time. `names` and `random` hold what they draw from, and
//! `speed` turns nominal durations into real ones. `plan` uses `pipeline` and `commit`, which
//! use neither each other nor it.

mod commit;
mod names;
mod pipeline;
mod plan;
mod random;
mod run_log;
mod speed;
mod view;

use std::collections::HashMap;
use std::sync::Mutex;

use fastrand::Rng;

use names::{EXECUTOR_EMAILS, EXECUTOR_NAMES, PROJECT_NAMES};
use pipeline::tags_for;
use random::{hex_id, mix};
use run_log::RunLog;

pub(crate) use commit::Commit;
pub(crate) use pipeline::PipelineDef;
pub(crate) use plan::RunPlan;
pub(crate) use random::derived_id;
pub(crate) use view::{ItemView, RunView};

/// What kind of pipeline `POST /_sim/pipelines` creates.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PipelineKind {
    /// Of the old pipeline version (listed only with `query_new: false`).
    pub old_version: bool,
    /// Disabled (listed only with `is_banned: true`).
    pub banned: bool,
}

/// Runs kept per pipeline; older ones are forgotten so memory stays bounded.
pub(crate) const MAX_RUNS: usize = 500;

const HOUR_MS: i64 = 3_600_000;

// v5 statuses of runs, stages, jobs and steps (reference 3.2 and 3.3).
/// Not started.
pub(crate) const INIT: &str = "INIT";
/// Waiting for an executor.
pub(crate) const QUEUED: &str = "QUEUED";
/// Executing.
pub(crate) const RUNNING: &str = "RUNNING";
/// Succeeded.
pub(crate) const COMPLETED: &str = "COMPLETED";
/// Failed.
pub(crate) const FAILED: &str = "FAILED";
/// Cancelled by a user.
pub(crate) const CANCELED: &str = "CANCELED";
/// Waiting for a manual review.
pub(crate) const PAUSED: &str = "PAUSED";
/// Suspended.
pub(crate) const SUSPEND: &str = "SUSPEND";
/// Deselected for this run: never runs.
pub(crate) const UNSELECTED: &str = "UNSELECTED";

/// Most stages a pipeline can have: an initial stage, every work stage and a review.
const MAX_STAGES: usize = 16;

/// Knobs of the generated world for benchmarks; the default keeps every seed's world as it was.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shape {
    /// Mean number of stages per pipeline (drawn within ±2 of it); default: 2 to 8.
    pub stages: Option<usize>,
    /// Share of pipelines with a run in progress at any time (gaps between runs are sized for
    /// it); default: runs follow each other after 2 to 60 nominal minutes.
    pub running_share: Option<f64>,
    /// Deployment pipelines added after the others (see [`PipelineDef::make_deploy`]).
    pub deploy_pipelines: usize,
}

impl Shape {
    /// The range the stage count of a pipeline is drawn from.
    fn stage_range(&self) -> std::ops::RangeInclusive<usize> {
        match self.stages {
            None => 2..=8,
            Some(mean) => {
                let mean = mean.clamp(2, MAX_STAGES - 2);
                let half = (mean - 2).min(2);
                mean - half..=mean + half
            }
        }
    }

    /// The running share, when set and usable.
    fn share(&self) -> Option<f64> {
        self.running_share
            .filter(|share| share.is_finite() && *share > 0.0 && *share < 1.0)
    }
}

/// The region the simulated service pretends to be in.
pub(crate) const REGION: &str = "cn-north-4";

/// A CodeArts project.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Project {
    pub id: String,
    pub name: String,
    /// Indices into [`World::pipelines`].
    pub pipelines: Vec<usize>,
}

/// A user who starts runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Executor {
    pub id: String,
    pub name: &'static str,
}

/// Everything the simulator knows.
pub(crate) struct World {
    pub started_at_ms: i64,
    pub speed: f64,
    /// Seed of everything generated, kept for pipelines created at run time.
    seed: u64,
    /// Stage counts and running share.
    shape: Shape,
    pub domain_id: String,
    pub iam_project_id: String,
    pub projects: Vec<Project>,
    pub pipelines: Vec<PipelineDef>,
    pub executors: Vec<Executor>,
    logs: Vec<Mutex<RunLog>>,
    pipeline_index: HashMap<String, usize>,
    project_index: HashMap<String, usize>,
    /// Pipelines by the CodeArts Repo repository they build.
    repository_index: HashMap<u64, Vec<usize>>,
}

/// What CodeArts Repo answers about a commit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CommitLookup {
    /// No pipeline builds this repository (or it was deleted).
    NoRepository,
    /// The repository has no such commit.
    NoCommit,
    /// The commit.
    Found(Commit),
}

/// The repository id of a pipeline, as the number the Repo API takes.
fn repository_number(def: &PipelineDef) -> Option<u64> {
    def.codehub_id.as_deref().and_then(|id| id.parse().ok())
}

impl World {
    /// A world of `pipelines` spread round-robin over `projects`, starting at `started_at_ms`.
    #[cfg(test)]
    pub fn new(
        pipelines: usize,
        projects: usize,
        seed: u64,
        speed: f64,
        started_at_ms: i64,
    ) -> World {
        World::shaped(
            pipelines,
            projects,
            seed,
            speed,
            started_at_ms,
            Shape::default(),
        )
    }

    /// Like [`World::new`], with stage counts, a running share and deployment pipelines from
    /// `shape`.
    ///
    /// Of the deployment pipelines if there are any, else of all: the first pipeline's first
    /// successful run from the one under way at the start on deploys the one commit the Repo API
    /// does not know, and the last one (if it is another) builds code outside CodeArts Repo, so
    /// its runs carry no `codehub_id`.
    pub fn shaped(
        pipelines: usize,
        projects: usize,
        seed: u64,
        speed: f64,
        started_at_ms: i64,
        shape: Shape,
    ) -> World {
        let projects = projects.max(1);
        let mut rng = Rng::with_seed(mix(seed, u64::MAX));
        let domain_id = hex_id(&mut rng);
        let iam_project_id = hex_id(&mut rng);
        let executors: Vec<Executor> = EXECUTOR_NAMES
            .iter()
            .map(|name| Executor {
                id: hex_id(&mut rng),
                name,
            })
            .collect();
        let mut project_list: Vec<Project> = (0..projects)
            .map(|i| Project {
                id: hex_id(&mut rng),
                name: if i < PROJECT_NAMES.len() {
                    PROJECT_NAMES[i].to_string()
                } else {
                    format!("{}-{}", PROJECT_NAMES[i % PROJECT_NAMES.len()], i + 1)
                },
                pipelines: Vec::new(),
            })
            .collect();
        let total = pipelines + shape.deploy_pipelines;
        let special = if shape.deploy_pipelines > 0 {
            pipelines..total
        } else {
            0..pipelines
        };
        let unknown_commit_at = special.start;
        let outside_repo_at = special
            .end
            .checked_sub(1)
            .filter(|&last| last > special.start);
        let mut defs = Vec::with_capacity(total);
        let mut logs = Vec::with_capacity(total);
        for index in 0..total {
            let project = index % projects;
            let mut def_rng = Rng::with_seed(mix(seed, 2 * index as u64));
            let mut def = PipelineDef::generate(
                index,
                project,
                &mut def_rng,
                started_at_ms,
                executors.len(),
                &shape,
            );
            if index >= pipelines {
                def.make_deploy(index - pipelines, seed);
            }
            if Some(index) == outside_repo_at {
                def.codehub_id = None;
            }
            def.tags = tags_for(seed, index);
            let run_rng = Rng::with_seed(mix(seed, 2 * index as u64 + 1));
            logs.push(Mutex::new(RunLog::new(
                &def,
                run_rng,
                speed,
                started_at_ms,
                executors.len(),
                &shape,
                index == unknown_commit_at,
            )));
            project_list[project].pipelines.push(index);
            defs.push(def);
        }
        let mut world = World {
            started_at_ms,
            speed,
            seed,
            shape,
            domain_id,
            iam_project_id,
            pipeline_index: defs.iter().map(|d| (d.id.clone(), d.index)).collect(),
            project_index: project_list
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id.clone(), i))
                .collect(),
            repository_index: HashMap::new(),
            projects: project_list,
            pipelines: defs,
            executors,
            logs,
        };
        for index in 0..world.pipelines.len() {
            world.index_repository(index);
        }
        world
    }

    /// Notes the repository pipeline `index` builds, if any.
    fn index_repository(&mut self, index: usize) {
        if let Some(repository) = repository_number(&self.pipelines[index]) {
            self.repository_index
                .entry(repository)
                .or_default()
                .push(index);
        }
    }

    /// The commit `sha` of `repository` as the Repo API sees it at `now_ms`: the repository of
    /// a pipeline, and a commit one of its kept runs deployed.
    pub fn commit(&self, repository: u64, sha: &str, now_ms: i64) -> CommitLookup {
        let Some(indices) = self.repository_index.get(&repository) else {
            return CommitLookup::NoRepository;
        };
        for &index in indices {
            let found = self.with_runs(index, now_ms, |_, log| {
                log.started(now_ms)
                    .filter_map(|run| run.build.commit.as_ref())
                    .find(|commit| commit.id.eq_ignore_ascii_case(sha))
                    .cloned()
            });
            match found {
                Some(commit) if commit.in_repo => return CommitLookup::Found(commit),
                Some(_) => return CommitLookup::NoCommit,
                None => {}
            }
        }
        CommitLookup::NoCommit
    }

    /// Creates a pipeline in `project` whose first run starts at `now_ms`; returns its index.
    /// New pipelines are of the current version and enabled unless `kind` says otherwise.
    pub fn add_pipeline(
        &mut self,
        project: usize,
        name: Option<String>,
        tags: Option<Vec<String>>,
        kind: PipelineKind,
        now_ms: i64,
    ) -> usize {
        let index = self.pipelines.len();
        let seed = self.seed;
        let mut def_rng = Rng::with_seed(mix(seed, 2 * index as u64));
        let mut def = PipelineDef::generate(
            index,
            project,
            &mut def_rng,
            now_ms,
            self.executors.len(),
            &self.shape,
        );
        def.create_ms = now_ms;
        if let Some(name) = name {
            def.name = name;
        }
        def.tags = tags.unwrap_or_else(|| tags_for(seed, index));
        def.old_version = kind.old_version;
        def.banned = kind.banned;
        let run_rng = Rng::with_seed(mix(seed, 2 * index as u64 + 1));
        let log = RunLog::fresh(
            &def,
            run_rng,
            self.speed,
            now_ms,
            self.executors.len(),
            &self.shape,
        );
        self.pipeline_index.insert(def.id.clone(), index);
        self.projects[project].pipelines.push(index);
        self.pipelines.push(def);
        self.logs.push(Mutex::new(log));
        self.index_repository(index);
        index
    }

    /// Sets whether pipeline `index` is disabled.
    pub fn set_banned(&mut self, index: usize, banned: bool) {
        if let Some(def) = self.pipelines.get_mut(index) {
            def.banned = banned;
        }
    }

    /// Deletes the pipeline with `id`: every API forgets it. False when there is none.
    pub fn remove_pipeline(&mut self, id: &str) -> bool {
        let Some(index) = self.pipeline_index.remove(id) else {
            return false;
        };
        for project in &mut self.projects {
            project.pipelines.retain(|&i| i != index);
        }
        // Its repository goes with it: the Repo API answers 404 for it from now on.
        if let Some(repository) = repository_number(&self.pipelines[index])
            && let Some(indices) = self.repository_index.get_mut(&repository)
        {
            indices.retain(|&i| i != index);
            if indices.is_empty() {
                self.repository_index.remove(&repository);
            }
        }
        // The definition stays so indices stay valid; its runs are no longer needed.
        if let Some(log) = self.logs.get_mut(index) {
            log.get_mut().unwrap_or_else(|e| e.into_inner()).retire();
        }
        true
    }

    /// Index of the project with `id`.
    pub fn project(&self, id: &str) -> Option<usize> {
        self.project_index.get(id).copied()
    }

    /// Index of the pipeline with `id`.
    pub fn pipeline(&self, id: &str) -> Option<usize> {
        self.pipeline_index.get(id).copied()
    }

    /// Runs `f` on the runs of pipeline `index`, brought up to `now_ms` first.
    pub fn with_runs<R>(
        &self,
        index: usize,
        now_ms: i64,
        f: impl FnOnce(&PipelineDef, &RunLog) -> R,
    ) -> R {
        let def = &self.pipelines[index];
        // A panic elsewhere never leaves a log half-updated (push then pop), so poison is harmless.
        let mut log = self.logs[index].lock().unwrap_or_else(|e| e.into_inner());
        log.advance(def, self.speed, self.executors.len(), &self.shape, now_ms);
        f(def, &log)
    }

    /// The e-mail address of executor `index`, as a commit author.
    pub fn executor_email(&self, index: usize) -> &'static str {
        EXECUTOR_EMAILS[index % EXECUTOR_EMAILS.len()]
    }

    /// The executor of a run (a fallback name if the pool is somehow empty).
    pub fn executor(&self, index: usize) -> (&str, &str) {
        self.executors
            .get(index)
            .map_or(("", "unknown"), |e| (e.id.as_str(), e.name))
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{START, all_runs, world};
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let (a, b) = (world(7, 1.0), world(7, 1.0));
        assert_eq!(a.pipelines, b.pipelines);
        assert_eq!(a.projects, b.projects);
        let later = START + 48 * HOUR_MS;
        for i in 0..24 {
            assert_eq!(all_runs(&a, i, later), all_runs(&b, i, later));
        }
        let c = world(8, 1.0);
        assert_ne!(a.pipelines[0].id, c.pipelines[0].id);
    }

    #[test]
    fn a_pipeline_does_not_depend_on_the_order_of_requests() {
        let (a, b) = (world(3, 10.0), world(3, 10.0));
        // `a` is asked often about pipeline 0, `b` only once, much later.
        for step in 0..50 {
            all_runs(&a, 0, START + step * 60_000);
            all_runs(&a, 1, START + step * 30_000);
        }
        let later = START + 6 * HOUR_MS;
        assert_eq!(all_runs(&a, 1, later), all_runs(&b, 1, later));
        assert_eq!(all_runs(&a, 0, later), all_runs(&b, 0, later));
    }

    #[test]
    fn a_shaped_world_has_its_mean_stage_count_and_running_share() {
        let shape = Shape {
            stages: Some(6),
            running_share: Some(0.05),
            ..Shape::default()
        };
        let w = World::shaped(2000, 10, 3, 1.0, START, shape);
        let stages: usize = w.pipelines.iter().map(|p| p.stages.len()).sum();
        let mean = stages as f64 / 2000.0;
        assert!((5.8..6.2).contains(&mean), "{mean}");
        assert!(
            w.pipelines
                .iter()
                .all(|p| (4..=8).contains(&p.stages.len()))
        );
        for t in [START, START + 3 * HOUR_MS, START + 30 * HOUR_MS] {
            let running = (0..2000)
                .filter(|&i| {
                    w.with_runs(i, t, |_, log| log.latest(t).is_some_and(|r| !r.is_done(t)))
                })
                .count();
            let share = running as f64 / 2000.0;
            assert!((0.03..0.07).contains(&share), "{share} at {t}");
        }
        assert_eq!(Shape::default().stage_range(), 2..=8);
        let tiny = Shape {
            stages: Some(3),
            ..Shape::default()
        };
        assert_eq!(tiny.stage_range(), 2..=4);
    }
}
