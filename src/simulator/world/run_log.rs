//! The runs of each pipeline over time: a history before the simulator started, then a new run
//! planned whenever the previous one and its gap are over, up to a bounded number kept.

use std::collections::VecDeque;

use fastrand::Rng;

use super::pipeline::{Outcome, PipelineDef};
use super::plan::RunPlan;
use super::speed::real_ms;
use super::{HOUR_MS, MAX_RUNS, Shape};

/// The runs of one pipeline, generated as time passes.
pub(crate) struct RunLog {
    rng: Rng,
    runs: VecDeque<RunPlan>,
    next_number: u64,
    next_start_ms: i64,
    /// Number of the run under way when the world started: deployment outcomes count from it.
    live_number: u64,
    /// The next successful run deploys the world's commit the Repo API does not know.
    unknown_commit_pending: bool,
}

/// Real gap after a run; (duration + gap) is at least 10 nominal minutes. With a running
/// share, the gap is drawn around the length that makes runs take that share of the time.
fn gap_ms(rng: &mut Rng, duration_ms: i64, speed: f64, shape: &Shape) -> i64 {
    if let Some(share) = shape.share() {
        let mean = duration_ms as f64 * (1.0 / share - 1.0);
        return ((mean * (0.5 + rng.f64())) as i64).max(1);
    }
    let gap = real_ms(120.0 + 3480.0 * rng.f64(), speed);
    gap.max(real_ms(600.0, speed) - duration_ms).max(1)
}

impl RunLog {
    /// History runs that ended 2 to 26 h before `started_at_ms`, then a first live run
    /// already under way at `started_at_ms` (with a running share: under way with that
    /// probability, else ended a while before). With `unknown_commit`, the first successful run
    /// from the live one on deploys the world's commit the Repo API does not know (a success, so
    /// that an exporter measuring the lead time of successful deployments asks for it).
    pub(super) fn new(
        def: &PipelineDef,
        mut rng: Rng,
        speed: f64,
        started_at_ms: i64,
        executors: usize,
        shape: &Shape,
        unknown_commit: bool,
    ) -> RunLog {
        let history_count = rng.usize(0..=3);
        let history: Vec<(RunPlan, i64)> = (0..history_count)
            .map(|i| {
                let forced = def.forced_outcome(i as i64 - history_count as i64);
                let plan = RunPlan::generate(def, &mut rng, speed, executors, forced);
                let gap = gap_ms(&mut rng, plan.duration_ms, speed, shape);
                (plan, gap)
            })
            .collect();
        let forced = def.forced_outcome(0);
        let mut first = RunPlan::generate(def, &mut rng, speed, executors, forced);
        let first_gap = if shape.share().is_some() {
            // A random point of the run's cycle (run then gap) is now.
            let gap = gap_ms(&mut rng, first.duration_ms, speed, shape);
            let phase = rng.f64() * (first.duration_ms + gap) as f64;
            first.start_ms = started_at_ms - phase as i64;
            gap
        } else {
            let progress = 0.9 * rng.f64();
            first.start_ms = started_at_ms - (progress * first.duration_ms as f64) as i64;
            gap_ms(&mut rng, first.duration_ms, speed, shape)
        };
        let latest_end = started_at_ms - 2 * HOUR_MS - (rng.f64() * 4.0 * HOUR_MS as f64) as i64;
        let earliest_end = started_at_ms - 26 * HOUR_MS;

        // Placed backwards from the newest; runs that would end too early are dropped.
        let mut kept = Vec::new();
        let mut next_start = first.start_ms;
        for (mut plan, gap) in history.into_iter().rev() {
            let end = latest_end.min(next_start - gap);
            if end < earliest_end {
                break;
            }
            plan.start_ms = end - plan.duration_ms;
            next_start = plan.start_ms;
            kept.push(plan);
        }
        kept.reverse();
        let mut runs: VecDeque<RunPlan> = kept.into();
        for (i, plan) in runs.iter_mut().enumerate() {
            plan.number = i as u64 + 1;
        }
        first.number = runs.len() as u64 + 1;
        // Oldest first, as each run may deploy the commit of the one before.
        let mut previous = None;
        for plan in runs.iter_mut() {
            plan.settle_commit(previous.as_ref(), false, speed, executors);
            previous = plan.build.commit.clone();
        }
        let unknown_now = unknown_commit && first.outcome == Outcome::Success;
        first.settle_commit(previous.as_ref(), unknown_now, speed, executors);
        let next_start_ms = first.end_ms() + first_gap;
        let next_number = first.number + 1;
        let live_number = first.number;
        runs.push_back(first);
        RunLog {
            rng,
            runs,
            next_number,
            next_start_ms,
            live_number,
            unknown_commit_pending: unknown_commit && !unknown_now,
        }
    }

    /// No history: the first run starts at `now_ms` (a pipeline created at run time).
    pub(super) fn fresh(
        def: &PipelineDef,
        mut rng: Rng,
        speed: f64,
        now_ms: i64,
        executors: usize,
        shape: &Shape,
    ) -> RunLog {
        let mut first = RunPlan::generate(def, &mut rng, speed, executors, def.forced_outcome(0));
        first.number = 1;
        first.start_ms = now_ms;
        first.settle_commit(None, false, speed, executors);
        let next_start_ms = first.end_ms() + gap_ms(&mut rng, first.duration_ms, speed, shape);
        RunLog {
            rng,
            runs: VecDeque::from([first]),
            next_number: 2,
            next_start_ms,
            live_number: 1,
            unknown_commit_pending: false,
        }
    }

    /// Plans every run that starts by `now_ms`.
    pub(super) fn advance(
        &mut self,
        def: &PipelineDef,
        speed: f64,
        executors: usize,
        shape: &Shape,
        now_ms: i64,
    ) {
        while self.next_start_ms <= now_ms {
            let k = self.next_number as i64 - self.live_number as i64;
            let forced = def.forced_outcome(k);
            let mut plan = RunPlan::generate(def, &mut self.rng, speed, executors, forced);
            plan.number = self.next_number;
            plan.start_ms = self.next_start_ms;
            let previous = self.runs.back().and_then(|run| run.build.commit.as_ref());
            let unknown = self.unknown_commit_pending && plan.outcome == Outcome::Success;
            self.unknown_commit_pending &= !unknown;
            plan.settle_commit(previous, unknown, speed, executors);
            let gap = gap_ms(&mut self.rng, plan.duration_ms, speed, shape);
            self.next_start_ms = plan.end_ms() + gap;
            self.next_number += 1;
            self.runs.push_back(plan);
            if self.runs.len() > MAX_RUNS {
                self.runs.pop_front();
            }
        }
    }

    /// Forgets every run and plans no more: the pipeline was deleted.
    pub(super) fn retire(&mut self) {
        self.runs.clear();
        self.next_start_ms = i64::MAX;
    }

    /// Kept runs started by `t`, oldest first.
    pub fn started(&self, t: i64) -> impl DoubleEndedIterator<Item = &RunPlan> {
        self.runs.iter().filter(move |r| r.start_ms <= t)
    }

    /// The newest run started by `t`.
    pub fn latest(&self, t: i64) -> Option<&RunPlan> {
        self.started(t).next_back()
    }
}

#[cfg(test)]
mod tests {
    use super::super::World;
    use super::super::testing::{START, all_runs, world};
    use super::*;

    #[test]
    fn history_ends_2_to_26_hours_before_start_and_a_live_run_is_under_way() {
        let w = world(11, 1.0);
        for i in 0..24 {
            let runs = all_runs(&w, i, START);
            let (live, history) = runs.split_last().expect("a live run");
            assert!(live.start_ms <= START);
            for (n, run) in runs.iter().enumerate() {
                assert_eq!(run.number, n as u64 + 1);
            }
            for run in history {
                assert!(run.end_ms() <= START - 2 * HOUR_MS);
                assert!(run.end_ms() >= START - 26 * HOUR_MS);
            }
            assert!(!live.is_done(START - 1) || live.duration_ms == 0);
        }
    }

    #[test]
    fn runs_are_sequential_and_leave_ten_nominal_minutes() {
        let w = world(5, 60.0);
        let later = START + 12 * HOUR_MS;
        let ten_minutes = 600_000 / 60;
        for i in 0..24 {
            let runs = all_runs(&w, i, later);
            assert!(runs.len() > 20);
            for pair in runs.windows(2) {
                assert!(pair[0].end_ms() < pair[1].start_ms);
                assert!(pair[1].start_ms - pair[0].start_ms >= ten_minutes);
                assert_eq!(pair[0].number + 1, pair[1].number);
            }
        }
    }

    #[test]
    fn memory_is_bounded() {
        let w = World::new(1, 1, 1, 1000.0, START);
        let runs = all_runs(&w, 0, START + 2 * HOUR_MS);
        assert_eq!(runs.len(), MAX_RUNS);
        assert!(runs[0].number > 1);
    }
}
