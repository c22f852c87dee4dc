//! The generated runs: what triggered a run, how it ends, and the relative times of every stage,
//! job and step, all planned when the run is created.

use fastrand::Rng;

use super::commit::{BuildInfo, Commit};
use super::names::{CANCEL_MESSAGE, FAILURE_MESSAGES};
use super::pipeline::{JobDef, Outcome, PipelineDef, StageDef};
use super::random::{hex_id, pick};
use super::speed::real_ms;
use super::{CANCELED, COMPLETED, FAILED, INIT, PAUSED, RUNNING, UNSELECTED};

/// Start and end relative to the run start, in ms; `None` for what never happens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Span {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Span {
    fn at(start: i64, end: i64) -> Span {
        Span {
            start: Some(start),
            end: Some(end),
        }
    }
}

/// A planned step (also used for stage gates in `pre`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepPlan {
    pub span: Span,
    /// Status while it runs.
    pub active: &'static str,
    /// Status once ended (or `INIT`/`UNSELECTED` when it never runs).
    pub fin: &'static str,
    pub message: Option<&'static str>,
}

impl StepPlan {
    fn idle(fin: &'static str) -> StepPlan {
        StepPlan {
            span: Span::default(),
            active: RUNNING,
            fin,
            message: None,
        }
    }

    fn done(start: i64, end: i64, fin: &'static str, message: Option<&'static str>) -> StepPlan {
        StepPlan {
            span: Span::at(start, end),
            active: RUNNING,
            fin,
            message,
        }
    }
}

/// A planned job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobPlan {
    pub span: Span,
    pub fin: &'static str,
    pub message: Option<&'static str>,
    pub steps: Vec<StepPlan>,
}

impl JobPlan {
    fn idle(def: &JobDef, fin: &'static str) -> JobPlan {
        JobPlan {
            span: Span::default(),
            fin,
            message: None,
            steps: def.steps.iter().map(|_| StepPlan::idle(fin)).collect(),
        }
    }
}

/// What holds a stage before its jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GateKind {
    /// Manual review: run and stage `PAUSED`.
    Review,
    /// Suspension: run and stage `SUSPEND`.
    Suspend,
}

/// A gate at the start of a stage, in ms relative to the run start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Gate {
    pub kind: GateKind,
    pub start: i64,
    pub end: i64,
}

/// A planned stage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StagePlan {
    pub selected: bool,
    pub span: Span,
    pub fin: &'static str,
    pub gate: Option<Gate>,
    pub pre: Vec<StepPlan>,
    pub jobs: Vec<JobPlan>,
}

impl StagePlan {
    fn idle(def: &StageDef, fin: &'static str) -> StagePlan {
        StagePlan {
            selected: fin != UNSELECTED,
            span: Span::default(),
            fin,
            gate: None,
            // The review gate is part of the stage even when it never runs.
            pre: if def.is_review() {
                vec![StepPlan::idle(fin)]
            } else {
                Vec::new()
            },
            jobs: def.jobs.iter().map(|job| JobPlan::idle(job, fin)).collect(),
        }
    }
}

/// A run, planned to the millisecond when it is created.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunPlan {
    pub number: u64,
    pub id: String,
    /// Seed of the run's derived ids (stages, jobs, steps, dispatches).
    pub seed: u64,
    pub build: BuildInfo,
    pub executor: usize,
    /// Absolute start, epoch ms.
    pub start_ms: i64,
    /// End of the queue phase, relative.
    pub queue_ms: i64,
    /// Relative end.
    pub duration_ms: i64,
    pub outcome: Outcome,
    pub stages: Vec<StagePlan>,
}

/// Durations split by random weights; the parts add up to `total` exactly.
fn split(rng: &mut Rng, total: i64, parts: usize) -> Vec<i64> {
    let weights: Vec<f64> = (0..parts).map(|_| 0.3 + 0.7 * rng.f64()).collect();
    let sum: f64 = weights.iter().sum();
    let mut out: Vec<i64> = weights
        .iter()
        .map(|w| (total as f64 * w / sum).floor() as i64)
        .collect();
    let used: i64 = out.iter().sum();
    if let Some(last) = out.last_mut() {
        *last += total - used;
    }
    out
}

impl RunPlan {
    /// Decides the run's commit once its start is set (see [`BuildInfo::settle_commit`]).
    pub(super) fn settle_commit(
        &mut self,
        previous: Option<&Commit>,
        unknown: bool,
        speed: f64,
        executors: usize,
    ) {
        let (seed, start_ms) = (self.seed, self.start_ms);
        self.build
            .settle_commit(seed, start_ms, previous, unknown, speed, executors);
    }

    /// Plans a run of `def` ending in `forced` if set (start time, number and commit are set by
    /// the caller).
    pub(super) fn generate(
        def: &PipelineDef,
        rng: &mut Rng,
        speed: f64,
        executors: usize,
        forced: Option<Outcome>,
    ) -> RunPlan {
        let id = hex_id(rng);
        let seed = rng.u64(..);
        let build = BuildInfo::generate(rng);
        let executor = rng.usize(..executors.max(1));
        let queue_ms = real_ms(5.0 + 115.0 * rng.f64(), speed);
        let count = def.stages.len();
        let unselected = (count >= 2 && rng.f64() < 0.05).then(|| rng.usize(1..count));
        let roll = rng.f64();
        // The last 4% are plain successes: the optional variations are not simulated.
        let outcome = if roll < 0.75 {
            Outcome::Success
        } else if roll < 0.90 {
            Outcome::Failed
        } else if roll < 0.96 {
            Outcome::Canceled
        } else {
            Outcome::Success
        };
        // Drawn all the same, so a forced outcome leaves the rest of the stream as it was.
        let outcome = forced.unwrap_or(outcome);
        let selected: Vec<usize> = (0..count).filter(|i| Some(*i) != unselected).collect();
        let stop_stage = match outcome {
            Outcome::Success => None,
            _ => Some(pick(rng, &selected)),
        };
        let suspend_stage = if rng.f64() < 0.03 {
            let candidates: Vec<usize> = selected
                .iter()
                .copied()
                .filter(|&i| !def.stages[i].is_review())
                .collect();
            (!candidates.is_empty()).then(|| pick(rng, &candidates))
        } else {
            None
        };

        let mut cursor = queue_ms;
        let mut stopped = false;
        let mut stages = Vec::with_capacity(count);
        for (index, stage) in def.stages.iter().enumerate() {
            if Some(index) == unselected {
                stages.push(StagePlan::idle(stage, UNSELECTED));
                continue;
            }
            if stopped {
                stages.push(StagePlan::idle(stage, INIT));
                continue;
            }
            let nominal = 10.0 + def.scale * (0.2 + 0.8 * rng.f64()) * 1190.0;
            let work_ms = real_ms(nominal, speed);
            let gate = if stage.is_review() {
                Some((GateKind::Review, real_ms(60.0 + 1740.0 * rng.f64(), speed)))
            } else if suspend_stage == Some(index) {
                Some((GateKind::Suspend, real_ms(60.0 + 540.0 * rng.f64(), speed)))
            } else {
                None
            };
            let job_ms: Vec<i64> = split(rng, work_ms, stage.jobs.len())
                .into_iter()
                .map(|ms| ms.max(1))
                .collect();
            let step_ms: Vec<Vec<i64>> = stage
                .jobs
                .iter()
                .zip(&job_ms)
                .map(|(job, ms)| split(rng, *ms, job.steps.len()))
                .collect();
            let total = gate.map_or(0, |g| g.1) + job_ms.iter().sum::<i64>();
            let stop_here = stop_stage == Some(index);
            let cancel_at = (stop_here && outcome == Outcome::Canceled).then(|| {
                cursor + (((0.05 + 0.9 * rng.f64()) * total as f64) as i64).clamp(0, total - 1)
            });
            let fail_job =
                (stop_here && outcome == Outcome::Failed).then(|| rng.usize(..stage.jobs.len()));
            let failure = pick(rng, &FAILURE_MESSAGES);

            let stage_start = cursor;
            let mut fin = COMPLETED;
            let mut halted = false;
            let mut pre = Vec::new();
            if index == 0 {
                // The trigger gate of the first stage, instantaneous as in the vendor's example.
                pre.push(StepPlan::done(cursor, cursor, COMPLETED, None));
            }
            let mut gate_plan = None;
            if let Some((kind, ms)) = gate {
                let mut end = cursor + ms;
                let mut gate_fin = COMPLETED;
                if let Some(at) = cancel_at.filter(|at| *at < end) {
                    end = at;
                    gate_fin = CANCELED;
                    fin = CANCELED;
                    halted = true;
                }
                if kind == GateKind::Review {
                    pre.push(StepPlan {
                        span: Span::at(cursor, end),
                        active: PAUSED,
                        fin: gate_fin,
                        message: (gate_fin == CANCELED).then_some(CANCEL_MESSAGE),
                    });
                }
                gate_plan = Some(Gate {
                    kind,
                    start: cursor,
                    end,
                });
                cursor = end;
            }
            let mut jobs = Vec::with_capacity(stage.jobs.len());
            for (j, job) in stage.jobs.iter().enumerate() {
                if halted {
                    jobs.push(JobPlan::idle(job, INIT));
                    continue;
                }
                let job_start = cursor;
                let job_end = cursor + job_ms[j];
                let mut steps = Vec::with_capacity(job.steps.len());
                let mut step_start = job_start;
                if let Some(at) = cancel_at.filter(|at| *at < job_end) {
                    let mut cut = false;
                    for ms in &step_ms[j] {
                        let step_end = step_start + ms;
                        if cut {
                            steps.push(StepPlan::idle(INIT));
                        } else if at < step_end {
                            steps.push(StepPlan::done(
                                step_start,
                                at,
                                CANCELED,
                                Some(CANCEL_MESSAGE),
                            ));
                            cut = true;
                        } else {
                            steps.push(StepPlan::done(step_start, step_end, COMPLETED, None));
                        }
                        step_start = step_end;
                    }
                    jobs.push(JobPlan {
                        span: Span::at(job_start, at),
                        fin: CANCELED,
                        message: Some(CANCEL_MESSAGE),
                        steps,
                    });
                    fin = CANCELED;
                    halted = true;
                    cursor = at;
                    continue;
                }
                let failed = fail_job == Some(j);
                let last = step_ms[j].len().saturating_sub(1);
                for (k, ms) in step_ms[j].iter().enumerate() {
                    let step_end = step_start + ms;
                    steps.push(if failed && k == last {
                        StepPlan::done(step_start, step_end, FAILED, Some(failure))
                    } else {
                        StepPlan::done(step_start, step_end, COMPLETED, None)
                    });
                    step_start = step_end;
                }
                jobs.push(JobPlan {
                    span: Span::at(job_start, job_end),
                    fin: if failed { FAILED } else { COMPLETED },
                    message: failed.then_some(failure),
                    steps,
                });
                cursor = job_end;
                if failed {
                    fin = FAILED;
                    halted = true;
                }
            }
            stages.push(StagePlan {
                selected: true,
                span: Span::at(stage_start, cursor),
                fin,
                gate: gate_plan,
                pre,
                jobs,
            });
            stopped = halted;
        }
        RunPlan {
            number: 0,
            id,
            seed,
            build,
            executor,
            start_ms: 0,
            queue_ms,
            duration_ms: cursor,
            outcome,
            stages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{START, all_runs, find_run, world};
    use super::super::{HOUR_MS, World};
    use super::*;

    #[test]
    fn outcomes_follow_the_intended_mix() {
        let w = World::new(40, 1, 9, 10.0, START);
        let later = START + 24 * HOUR_MS;
        let (mut total, mut failed, mut canceled, mut unselected, mut paused) = (0, 0, 0, 0, 0);
        for i in 0..40 {
            for run in all_runs(&w, i, later) {
                total += 1;
                match run.outcome {
                    Outcome::Failed => failed += 1,
                    Outcome::Canceled => canceled += 1,
                    Outcome::Success => {}
                }
                unselected += usize::from(run.stages.iter().any(|s| !s.selected));
                paused += usize::from(run.stages.iter().any(|s| s.gate.is_some()));
            }
        }
        let share = |n: usize| n as f64 / total as f64;
        assert!(total > 1000, "{total}");
        assert!((0.10..0.20).contains(&share(failed)), "{}", share(failed));
        assert!(
            (0.03..0.09).contains(&share(canceled)),
            "{}",
            share(canceled)
        );
        assert!(
            (0.02..0.08).contains(&share(unselected)),
            "{}",
            share(unselected)
        );
        assert!(paused > 0);
    }

    #[test]
    fn a_failed_run_leaves_later_stages_and_jobs_untouched() {
        let w = world(2, 10.0);
        let run = find_run(&w, |r| {
            r.outcome == Outcome::Failed && r.stages.last().is_some_and(|s| s.fin == INIT)
        });
        let view = run.view(run.end_ms() + 1);
        assert_eq!(view.status, FAILED);
        assert_eq!(view.end, Some(run.end_ms()));
        let failed_at = view
            .stages
            .iter()
            .position(|s| s.item.status == FAILED)
            .expect("failed stage");
        let failed_stage = &view.stages[failed_at];
        assert_eq!(failed_stage.item.end, Some(run.end_ms()));
        let failed_job = failed_stage
            .jobs
            .iter()
            .position(|j| j.item.status == FAILED)
            .expect("failed job");
        assert!(failed_stage.jobs[failed_job].item.message.is_some());
        for job in &failed_stage.jobs[failed_job + 1..] {
            assert_eq!(
                (job.item.status, job.item.start, job.item.end),
                (INIT, None, None)
            );
        }
        for stage in &view.stages[failed_at + 1..] {
            assert!(stage.item.status == INIT || stage.item.status == UNSELECTED);
            assert_eq!((stage.item.start, stage.item.end), (None, None));
            assert!(stage.jobs.iter().all(|j| j.item.start.is_none()));
        }
    }

    #[test]
    fn a_canceled_run_stops_where_it_was_canceled() {
        let w = world(2, 10.0);
        let run = find_run(&w, |r| r.outcome == Outcome::Canceled);
        let view = run.view(run.end_ms());
        assert_eq!(view.status, CANCELED);
        let stage = view
            .stages
            .iter()
            .find(|s| s.item.status == CANCELED)
            .expect("canceled stage");
        assert_eq!(stage.item.end, Some(run.end_ms()));
        let canceled_items = stage
            .jobs
            .iter()
            .filter(|j| j.item.status == CANCELED)
            .count()
            + stage.pre.iter().filter(|p| p.status == CANCELED).count();
        assert_eq!(canceled_items, 1);
    }
}
