//! Helpers shared by the world's unit tests.

use super::{HOUR_MS, RunPlan, World};

/// When the tests' worlds start, epoch ms.
pub(super) const START: i64 = 1_800_000_000_000;

/// 24 pipelines in 2 projects.
pub(super) fn world(seed: u64, speed: f64) -> World {
    World::new(24, 2, seed, speed, START)
}

/// Every run of pipeline `index` started by `t`, oldest first.
pub(super) fn all_runs(world: &World, index: usize, t: i64) -> Vec<RunPlan> {
    world.with_runs(index, t, |_, log| log.started(t).cloned().collect())
}

/// The first run, within a day after the start, that satisfies `pred`.
pub(super) fn find_run(w: &World, pred: impl Fn(&RunPlan) -> bool) -> RunPlan {
    let later = START + 24 * HOUR_MS;
    (0..w.pipelines.len())
        .flat_map(|i| all_runs(w, i, later))
        .find(|r| pred(r))
        .expect("such a run")
}
