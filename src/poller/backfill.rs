//! The backfill: each pipeline's first history read, which records the runs that ended within
//! `backfill_window` before the pipeline was first seen. At scale a cold start has thousands of
//! them, so they are not part of a poll: one task per target makes them between and beside the
//! polls, pipelines without a last run first (the status showed the others'), then the newest,
//! with requests that wait behind every poll request for the rate
//! limit ([`Priority::Backfill`](crate::codearts::Priority)).
//!
//! The ledger of each pipeline stays the one truth of what is recorded: the backfill picks what
//! the ledgers want, reads without holding the target's state, and records each pipeline's
//! history whole (or not at all) under a brief lock, as a poll does. A run that completes while
//! its pipeline waits for the backfill is found by that read; one that completes after it, by the
//! polls' reads.

use std::cmp::Ordering as Order;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use super::TargetPoller;
use super::steps::{History, Scan, details_wanted};
use crate::store::TargetState;

/// Pipelines picked at once: their reads run together, and the order is looked at again after
/// each group (a pipeline that has just run goes ahead of the older ones).
const BACKFILL_GROUP: usize = 16;

impl TargetPoller {
    /// Makes the first history reads the polls leave, until the schedule stops (a cut read
    /// records nothing, and is made again by the next poller of the target). A pipeline whose
    /// read failed waits for the next poll before it is tried again.
    pub async fn backfill(&self) {
        let mut failed: HashSet<String> = HashSet::new();
        let mut read: Vec<History> = Vec::new();
        let mut details = HashMap::new();
        // Whether pipelines that show no last run wait for their read (logged when none do).
        let mut lacking_last = false;
        loop {
            let (group, pending) = {
                let mut state = self.store.write(&self.slot).await;
                if !read.is_empty() {
                    self.record_histories(
                        &mut state,
                        std::mem::take(&mut read),
                        std::mem::take(&mut details),
                    )
                    .await;
                }
                pick(&state, &failed, self.now(), self.target.backfill_window)
            };
            if pending.without_last > 0 {
                lacking_last = true;
            } else if lacking_last {
                lacking_last = false;
                tracing::info!(
                    target_name = self.label(),
                    backfill_pending = pending.all,
                    "backfill: every pipeline that has completed a run shows its last run"
                );
            }
            if group.is_empty() {
                self.backfill_due.notified().await;
                failed.clear();
                continue;
            }
            self.backfill_reading.store(true, Ordering::Relaxed);
            let (histories, _) = self.read_histories(&self.background, &group).await;
            let done: HashSet<&str> = histories.iter().map(|(id, _, _)| id.as_str()).collect();
            failed.extend(
                group
                    .iter()
                    .filter(|(id, _)| !done.contains(id.as_str()))
                    .map(|(id, _)| id.clone()),
            );
            if self.settings.record_jobs {
                let wanted = details_wanted(&*self.store.write(&self.slot).await, &histories);
                let (fetched, _) = self.read_details(&self.background, wanted).await;
                for (id, found) in &fetched {
                    if found.is_none() {
                        failed.insert(id.clone());
                    }
                }
                details = fetched;
            }
            read = histories;
            self.backfill_reading.store(false, Ordering::Relaxed);
        }
    }
}

/// Pipelines waiting for their backfill.
#[derive(Debug, Default, PartialEq)]
struct Pending {
    /// All of them (those whose read failed since the last poll included).
    all: usize,
    /// Those that show no last run yet.
    without_last: usize,
}

/// The next pipelines to backfill, with the read each needs: first those that show no last run
/// yet (their latest run is still running), then the newest latest run first; and how many
/// wait.
fn pick(
    state: &TargetState,
    failed: &HashSet<String>,
    now: f64,
    window: std::time::Duration,
) -> (Vec<Scan>, Pending) {
    let mut pending: Vec<((bool, f64), Scan)> = Vec::new();
    let mut waiting = Pending::default();
    for (id, pipeline) in state.backfill_pending() {
        waiting.all += 1;
        if !pipeline.ledger.shows_last() {
            waiting.without_last += 1;
        }
        if failed.contains(id) {
            continue;
        }
        if let Some(read) = pipeline.ledger.history_read(now, window) {
            let rank = (pipeline.ledger.shows_last(), pipeline.ledger.latest_at());
            pending.push((rank, (id.clone(), read)));
        }
    }
    pending.sort_by(|(a, a_scan), (b, b_scan)| {
        (a.0.cmp(&b.0))
            .then_with(|| newest_first(a.1, b.1))
            .then_with(|| a_scan.0.cmp(&b_scan.0))
    });
    pending.truncate(BACKFILL_GROUP);
    (pending.into_iter().map(|(_, scan)| scan).collect(), waiting)
}

/// Orders times newest first.
fn newest_first(a: f64, b: f64) -> Order {
    b.total_cmp(&a)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codearts::model::Run;
    use crate::config::MetricsConfig;
    use crate::recording::RunKey;
    use crate::store::{PipelineState, Store};

    const WINDOW: Duration = Duration::from_secs(3600);
    const NOW: f64 = 100_000.0;

    fn run(id: &str, number: u64, end: Option<f64>) -> Run {
        Run::example(
            id,
            format!("{id}-{number}"),
            number,
            end.unwrap_or(NOW) - 10.0,
            end,
        )
    }

    /// A target whose pipelines' latest runs are `latest`, as a first poll leaves them.
    fn target(store: &Store, latest: &[Run]) -> TargetState {
        let mut state = TargetState::default();
        for run in latest {
            let mut pipeline = PipelineState::new(NOW);
            let key = RunKey::of(run).expect("a key");
            if let Some(shown) = pipeline.ledger.saw_latest(run, key, NOW, WINDOW) {
                pipeline.ledger.shown_by_status(shown);
            }
            pipeline.series = Some(store.new_series("p", &run.pipeline_id, &run.pipeline_id));
            state.pipelines.insert(run.pipeline_id.clone(), pipeline);
        }
        state
    }

    #[test]
    fn newer_pipelines_are_backfilled_before_older_ones() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let state = target(
            &store,
            &[
                run("old", 3, Some(NOW - 3000.0)),
                run("running", 9, None),
                run("recent", 5, Some(NOW - 60.0)),
                // Ended before the window: the status settles it, nothing to backfill.
                run("settled", 2, Some(NOW - 7200.0)),
                run("middle", 4, Some(NOW - 600.0)),
            ],
        );
        let (group, pending) = pick(&state, &HashSet::new(), NOW, WINDOW);
        let order: Vec<&str> = group.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(order, ["running", "recent", "middle", "old"]);
        assert_eq!(
            pending,
            Pending {
                all: 4,
                without_last: 1
            }
        );
        assert!(group.iter().all(|(_, read)| read.first));
        assert_eq!(group[0].1.cutoff, NOW - WINDOW.as_secs_f64());

        // A pipeline whose read failed waits for the next poll, and still counts as pending.
        let failed: HashSet<String> = ["running".to_string()].into();
        let (group, pending) = pick(&state, &failed, NOW, WINDOW);
        assert_eq!(group[0].0, "recent");
        assert_eq!((group.len(), pending.all), (3, 4));
    }

    #[test]
    fn pipelines_without_a_last_run_come_first() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let mut long_running = run("long-running", 7, None);
        long_running.start = Some(NOW - 3000.0);
        let state = target(&store, &[run("recent", 5, Some(NOW - 1.0)), long_running]);
        let (group, _) = pick(&state, &HashSet::new(), NOW, WINDOW);
        let order: Vec<&str> = group.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(order, ["long-running", "recent"]);
    }

    #[test]
    fn a_pipeline_that_runs_again_moves_ahead() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let mut state = target(
            &store,
            &[
                run("a", 1, Some(NOW - 100.0)),
                run("b", 1, Some(NOW - 200.0)),
            ],
        );
        let b = state.pipelines.get_mut("b").expect("b");
        let newer = run("b", 2, Some(NOW - 5.0));
        b.ledger
            .saw_latest(&newer, RunKey::of(&newer).expect("key"), NOW, WINDOW);
        let (group, _) = pick(&state, &HashSet::new(), NOW, WINDOW);
        assert_eq!(group[0].0, "b");
    }

    #[test]
    fn groups_are_bounded() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let runs: Vec<Run> = (0..40)
            .map(|i| run(&format!("p{i:02}"), 1, Some(NOW - f64::from(i))))
            .collect();
        let state = target(&store, &runs);
        let (group, pending) = pick(&state, &HashSet::new(), NOW, WINDOW);
        assert_eq!((group.len(), pending.all), (BACKFILL_GROUP, 40));
        assert_eq!(group[0].0, "p00");
    }
}
