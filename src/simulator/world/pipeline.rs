//! The generated pipelines: their stages, jobs and steps, drawn once from the pipeline's own RNG,
//! and how runs end (a deployment pipeline's runs end as it says).

use fastrand::Rng;

use super::names::{
    DEPLOY_ENVIRONMENTS, DEPLOY_SERVICES, DESCRIPTIONS, EXTRA_STEPS, INITIAL_STAGES,
    PIPELINE_KINDS, PIPELINE_SUBJECTS, REVIEW_STAGES, SEPARATORS, TAG_SALT, TAGS, WORK_STAGES,
    job_names, main_step,
};
use super::random::{hex_id, identifier, mix, pick};
use super::{CANCELED, COMPLETED, FAILED, HOUR_MS, Shape};

/// Salt of the outcome draws of deployment pipelines.
const DEPLOY_SALT: u64 = 0x6465_706c_6f79;
/// Share of failed deployments after the first three runs.
const DEPLOY_FAILURE_SHARE: f64 = 0.2;

/// Zero to two tags for pipeline `index`.
pub(super) fn tags_for(seed: u64, index: usize) -> Vec<String> {
    let mut rng = Rng::with_seed(mix(seed ^ TAG_SALT, index as u64));
    let mut pool = TAGS;
    rng.shuffle(&mut pool);
    pool[..rng.usize(0..=2)]
        .iter()
        .map(|t| (*t).to_string())
        .collect()
}

/// A step of a job, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepDef {
    pub name: String,
    pub task: &'static str,
    pub identifier: String,
}

/// A job of a stage, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobDef {
    pub name: String,
    pub identifier: String,
    pub steps: Vec<StepDef>,
}

/// A stage, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageDef {
    /// What people see (v5 `name`, v3 `display_name`).
    pub name: String,
    /// The v3 internal name: `initial`, then `state_<n>`.
    pub internal: String,
    pub identifier: String,
    /// `initial`, `check`, `build`, `test`, `review` or `deploy`.
    pub dsl: &'static str,
    pub jobs: Vec<JobDef>,
}

impl StageDef {
    /// Manual-review stages pause the run before their jobs.
    pub fn is_review(&self) -> bool {
        self.dsl == "review"
    }
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failed,
    Canceled,
}

impl Outcome {
    /// Final v5 status.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Success => COMPLETED,
            Outcome::Failed => FAILED,
            Outcome::Canceled => CANCELED,
        }
    }
}

/// What makes a pipeline a deployment: its environment and the seed of its outcomes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Deploy {
    /// `prod` or `staging`.
    pub environment: &'static str,
    seed: u64,
    /// Starts with a failure streak and its recovery (the named services: a demo's few).
    streak_at_start: bool,
}

impl Deploy {
    /// The outcome of run `k`, counted from the run under way when the world starts (negative:
    /// the history before it). The history succeeds. With `streak_at_start`, the first two runs
    /// fail and the third recovers, so a demo shows a failure streak and its recovery at once;
    /// other runs fail at random, in streaks now and then. The pipelines beyond the named
    /// services (a benchmark's hundred) draw from the start, so that deployments succeed from
    /// the first minutes whatever the speed.
    pub(super) fn outcome(&self, k: i64) -> Outcome {
        match k {
            ..0 => Outcome::Success,
            0 | 1 if self.streak_at_start => Outcome::Failed,
            2 if self.streak_at_start => Outcome::Success,
            _ => {
                let draw = Rng::with_seed(mix(self.seed, k as u64)).f64();
                if draw < DEPLOY_FAILURE_SHARE {
                    Outcome::Failed
                } else {
                    Outcome::Success
                }
            }
        }
    }
}

/// A pipeline, as configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PipelineDef {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub project: usize,
    pub stages: Vec<StageDef>,
    /// Stage durations scale with this, so some pipelines take minutes and others hours.
    pub scale: f64,
    pub create_ms: i64,
    pub description: &'static str,
    pub repo: &'static str,
    /// The CodeArts Repo repository the pipeline builds, a number as a string; `None` for a
    /// pipeline whose code lives elsewhere (GitHub), whose runs carry no `codehub_id`.
    pub codehub_id: Option<String>,
    pub creator: usize,
    /// Labels users put on pipelines (the list API's `tag_list`).
    pub tags: Vec<String>,
    /// An old-version pipeline: the list shows it only when asked with `query_new: false`.
    pub old_version: bool,
    /// Disabled (`banned`): the list shows it only when asked with `is_banned: true`.
    pub banned: bool,
    /// Set for deployment pipelines, whose outcomes follow [`Deploy::outcome`].
    pub deploy: Option<Deploy>,
}

impl PipelineDef {
    /// The outcome run `k` must have (see [`Deploy::outcome`]); `None`: drawn as usual.
    pub(super) fn forced_outcome(&self, k: i64) -> Option<Outcome> {
        self.deploy.as_ref().map(|deploy| deploy.outcome(k))
    }

    /// Turns a generated pipeline into deployment pipeline number `nth` of the world: its name
    /// says which service it deploys where, and its runs are short so that streaks of failures
    /// and their recoveries show within minutes of a demo.
    pub(super) fn make_deploy(&mut self, nth: usize, seed: u64) {
        let service = DEPLOY_SERVICES[nth % DEPLOY_SERVICES.len()];
        let environment = DEPLOY_ENVIRONMENTS[nth % DEPLOY_ENVIRONMENTS.len()];
        self.name = if nth < DEPLOY_SERVICES.len() {
            format!("{service}-deploy-{environment}")
        } else {
            format!("{service}-{}-deploy-{environment}", nth + 1)
        };
        self.description = if environment == "prod" {
            "部署到生产环境"
        } else {
            "Deploy to staging"
        };
        let mut rng = Rng::with_seed(mix(seed ^ DEPLOY_SALT, self.index as u64));
        self.scale = 0.02 + 0.08 * rng.f64();
        self.old_version = false;
        self.deploy = Some(Deploy {
            environment,
            seed: rng.u64(..),
            streak_at_start: nth < DEPLOY_SERVICES.len(),
        });
    }

    /// v5 stage times in the status and list APIs: epoch-ms strings (true) or dates (false).
    pub fn epoch_stage_times(&self) -> bool {
        self.index.is_multiple_of(2)
    }

    /// v3 empty values: `""` (true) or `null` (false); the reference documents both.
    pub fn empty_strings(&self) -> bool {
        self.index % 3 == 1
    }

    /// `tag_list` entries as plain names (true) or as the objects the SDK declares (false):
    /// the reference shows objects, and lenient readers should take both.
    pub fn tags_as_names(&self) -> bool {
        self.index % 3 == 2
    }

    pub(super) fn generate(
        index: usize,
        project: usize,
        rng: &mut Rng,
        started_at_ms: i64,
        executors: usize,
        shape: &Shape,
    ) -> PipelineDef {
        let id = hex_id(rng);
        let (subject, repo) = PIPELINE_SUBJECTS[index % PIPELINE_SUBJECTS.len()];
        let kind = pick(rng, &PIPELINE_KINDS);
        let sep = pick(rng, &SEPARATORS);
        // The index makes names unique whatever the pools give.
        let name = format!("{subject}{sep}{kind}{sep}{:02}", index + 1);
        let create_ms = started_at_ms - HOUR_MS * 24 * (3 + rng.i64(0..400));
        let roll = rng.f64();
        let scale = if roll < 0.55 {
            0.02 + 0.13 * rng.f64()
        } else if roll < 0.85 {
            0.15 + 0.35 * rng.f64()
        } else {
            0.6 + 0.4 * rng.f64()
        };

        let count = rng.usize(shape.stage_range());
        let review = count >= 3 && rng.f64() < 0.4;
        let work_count = count - 1 - usize::from(review);
        let mut chosen: Vec<usize> = (0..WORK_STAGES.len()).collect();
        rng.shuffle(&mut chosen);
        chosen.truncate(work_count);
        chosen.sort_unstable();
        let mut layout: Vec<(&str, &'static str)> = vec![(pick(rng, &INITIAL_STAGES), "initial")];
        layout.extend(chosen.iter().map(|&i| WORK_STAGES[i]));
        if review {
            // Reviews gate deployments; without one they come last.
            let at = layout
                .iter()
                .position(|(_, dsl)| *dsl == "deploy")
                .unwrap_or(layout.len());
            layout.insert(at, (pick(rng, &REVIEW_STAGES), "review"));
        }

        let mut state_number = 1;
        let stages = layout
            .into_iter()
            .enumerate()
            .map(|(order, (stage_name, dsl))| {
                let internal = if order == 0 {
                    "initial".to_string()
                } else {
                    state_number += rng.usize(1..=2);
                    format!("state_{state_number}")
                };
                let mut names = job_names(dsl);
                rng.shuffle(&mut names);
                let jobs = names[..rng.usize(1..=4)]
                    .iter()
                    .map(|job_name| {
                        let step_count = rng.usize(1..=3);
                        let mut extra = EXTRA_STEPS;
                        rng.shuffle(&mut extra);
                        let steps = std::iter::once(main_step(dsl))
                            .chain(extra)
                            .take(step_count)
                            .map(|(step_name, task)| StepDef {
                                name: step_name.to_string(),
                                task,
                                identifier: identifier(rng, create_ms),
                            })
                            .collect();
                        JobDef {
                            name: job_name.to_string(),
                            identifier: identifier(rng, create_ms),
                            steps,
                        }
                    })
                    .collect();
                StageDef {
                    name: stage_name.to_string(),
                    internal,
                    identifier: order.to_string(),
                    dsl,
                    jobs,
                }
            })
            .collect();
        PipelineDef {
            index,
            id,
            name,
            project,
            stages,
            scale,
            create_ms,
            description: pick(rng, &DESCRIPTIONS),
            repo,
            codehub_id: Some(repository_id(rng)),
            creator: rng.usize(..executors.max(1)),
            tags: Vec::new(),
            // Every fifth pipeline of a generated world predates the current pipeline version.
            old_version: index % 5 == 2,
            banned: false,
            deploy: None,
        }
    }
}

/// Ten digits that never start with 0: a repository id is a number sent as a string.
fn repository_id(rng: &mut Rng) -> String {
    let mut digits: Vec<char> = (0..10).map(|_| rng.digit(10)).collect();
    if digits[0] == '0' {
        digits[0] = '1';
    }
    digits.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::{START, all_runs, world};
    use super::super::{RunPlan, World};
    use super::*;

    /// A world of 24 pipelines and `deploys` deployment pipelines at speed 60, as the demo runs.
    fn with_deploys(seed: u64, deploys: usize) -> World {
        let shape = Shape {
            deploy_pipelines: deploys,
            ..Shape::default()
        };
        World::shaped(24, 2, seed, 60.0, START, shape)
    }

    #[test]
    fn deployments_fail_twice_then_recover_within_minutes_of_a_demo() {
        // Ten real minutes at the demo's speed (60).
        let horizon = START + 10 * 60_000;
        for seed in 1..=5 {
            let w = with_deploys(seed, 4);
            assert_eq!(w.pipelines.len(), 28);
            let names: Vec<&str> = w.pipelines[24..].iter().map(|p| p.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "order-service-deploy-prod",
                    "payment-gateway-deploy-staging",
                    "user-center-deploy-prod",
                    "inventory-deploy-staging"
                ]
            );
            for index in 24..28 {
                let runs = all_runs(&w, index, horizon);
                let (history, live): (Vec<&RunPlan>, Vec<&RunPlan>) =
                    runs.iter().partition(|r| r.end_ms() < START);
                assert!(history.iter().all(|r| r.outcome == Outcome::Success));
                let ended: Vec<Outcome> = live
                    .iter()
                    .filter(|r| r.end_ms() <= horizon)
                    .map(|r| r.outcome)
                    .collect();
                assert!(
                    ended.starts_with(&[Outcome::Failed, Outcome::Failed, Outcome::Success]),
                    "seed {seed}, {}: {ended:?}",
                    w.pipelines[index].name
                );
            }
            // The first one's recovery deploys the commit CodeArts Repo does not know.
            let recovery = all_runs(&w, 24, horizon)
                .into_iter()
                .filter(|r| r.end_ms() >= START)
                .nth(2)
                .expect("recovery");
            assert!(recovery.build.commit.as_ref().is_some_and(|c| !c.in_repo));
            // Later, failures come now and then, never canceled runs.
            let day = all_runs(&w, 24, START + 24 * 3_600_000);
            let failed = day.iter().filter(|r| r.outcome == Outcome::Failed).count();
            let share = failed as f64 / day.len() as f64;
            assert!((0.1..0.3).contains(&share), "{share}");
            assert!(day.iter().all(|r| r.outcome != Outcome::Canceled));
        }
    }

    #[test]
    fn deployment_pipelines_beyond_the_named_services_succeed_from_the_start() {
        // A benchmark's hundred at real time (speed 1): their first live runs must be able to
        // succeed, or no lead time would be asked for in its few minutes.
        let shape = Shape {
            deploy_pipelines: 46,
            ..Shape::default()
        };
        let w = World::shaped(24, 2, 1, 1.0, START, shape);
        let first_live = |index: usize| {
            all_runs(&w, index, START + 24 * 3_600_000)
                .into_iter()
                .find(|r| r.end_ms() >= START)
                .expect("a live run")
                .outcome
        };
        let named = 24..24 + DEPLOY_SERVICES.len();
        assert!(named.clone().all(|i| first_live(i) == Outcome::Failed));
        let succeeded = (named.end..70)
            .filter(|&i| first_live(i) == Outcome::Success)
            .count();
        // 40 draws at a failure share of 0.2.
        assert!((24..=38).contains(&succeeded), "{succeeded} of 40");
    }

    #[test]
    fn deployment_pipelines_leave_the_others_as_they_were() {
        let (plain, deploys) = (with_deploys(3, 0), with_deploys(3, 4));
        let later = START + 12 * 3_600_000;
        let timing = |w: &World, index: usize| -> Vec<(u64, i64, i64, Outcome)> {
            all_runs(w, index, later)
                .iter()
                .map(|r| (r.number, r.start_ms, r.duration_ms, r.outcome))
                .collect()
        };
        for index in 0..24 {
            assert_eq!(plain.pipelines[index].name, deploys.pipelines[index].name);
            assert_eq!(timing(&plain, index), timing(&deploys, index));
        }
    }

    #[test]
    fn names_and_ids_are_unique_and_well_formed() {
        let w = world(1, 1.0);
        let mut names: Vec<&str> = w.pipelines.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 24);
        assert!(w.pipelines.iter().any(|p| !p.name.is_ascii()));
        assert!(
            w.pipelines
                .iter()
                .any(|p| p.stages.iter().any(StageDef::is_review))
        );
        for p in &w.pipelines {
            assert_eq!(p.id.len(), 32);
            assert!(
                p.id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!((2..=8).contains(&p.stages.len()));
            let mut stage_names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            stage_names.sort_unstable();
            stage_names.dedup();
            assert_eq!(stage_names.len(), p.stages.len(), "{}", p.name);
            assert_eq!(p.stages[0].internal, "initial");
            assert!(p.stages.iter().all(|s| (1..=4).contains(&s.jobs.len())));
        }
    }
}
