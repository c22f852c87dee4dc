//! The generated pipelines: their stages, jobs and steps, drawn once from the pipeline's own RNG.

use fastrand::Rng;

use super::names::{
    DESCRIPTIONS, EXTRA_STEPS, INITIAL_STAGES, PIPELINE_KINDS, PIPELINE_SUBJECTS, REVIEW_STAGES,
    SEPARATORS, TAG_SALT, TAGS, WORK_STAGES, job_names, main_step,
};
use super::random::{hex_id, identifier, mix, pick};
use super::{HOUR_MS, Shape};

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
    pub codehub_id: String,
    pub creator: usize,
    /// Labels users put on pipelines (the list API's `tag_list`).
    pub tags: Vec<String>,
    /// An old-version pipeline: the list shows it only when asked with `query_new: false`.
    pub old_version: bool,
    /// Disabled (`banned`): the list shows it only when asked with `is_banned: true`.
    pub banned: bool,
}

impl PipelineDef {
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
            codehub_id: (0..10).map(|_| rng.digit(10)).collect(),
            creator: rng.usize(..executors.max(1)),
            tags: Vec::new(),
            // Every fifth pipeline of a generated world predates the current pipeline version.
            old_version: index % 5 == 2,
            banned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::world;
    use super::*;

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
