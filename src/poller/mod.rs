//! What to fetch, per target: one poll is a sequence of named steps (see `steps.rs`), under a
//! deadline. The run-recording state machine it drives is `crate::recording`; what it learns
//! is kept in `crate::store`.
//!
//! One poll = a refresh of the project's pipeline list when discovery is on and
//! `discover_every` has passed; one batch status call per chunk of pipeline ids (the latest
//! run's state and stages); the names of pipelines seen for the first time; and a run history
//! read for each pipeline where a run may have completed since the last poll. Every completed
//! run is observed in the histograms exactly once; with `metrics.jobs` the detail of each run
//! about to be recorded is read for its jobs.
//!
//! A pipeline's first history read (its backfill: the runs that ended within `backfill_window`
//! before it was first seen) is not part of a poll: the target's backfill task makes them
//! behind the polls (`backfill.rs`), so that a cold start shows every pipeline's state and last
//! run after one round of status calls.

mod backfill;
mod lead_time;
#[cfg(all(test, feature = "simulator"))]
mod step_tests;
mod steps;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::WallClock;
use crate::codearts::{Client, Error, Priority};
use crate::config::{ShardingConfig, TargetConfig};
use crate::schedule::Schedule;
use crate::store::{Store, TargetSlot};

/// What the exporter's start-up fixes for every poller (a reload keeps it).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// When polling of the targets began, Unix seconds: the exporter's start, or the reload
    /// that added a target. The backfill window of the pipelines polled first counts back from
    /// it.
    pub started_at: f64,
    /// Read the run detail of each recorded run for its jobs (`metrics.jobs`).
    pub record_jobs: bool,
    /// The share of the pipelines this replica polls.
    pub sharding: ShardingConfig,
}

/// Polls one target on its schedule, writing to the target's place in the store.
pub struct TargetPoller {
    target: TargetConfig,
    client: Client,
    /// The same client, behind `client`'s requests: for the backfill.
    background: Client,
    store: Arc<Store>,
    /// The target's state, series and heartbeat.
    slot: Arc<TargetSlot>,
    settings: Settings,
    schedule: Schedule,
    /// The wall clock of run times, schedules and the heartbeat.
    clock: Arc<dyn WallClock>,
    /// How long one poll may take before it is cut short.
    poll_timeout: Duration,
    /// Wakes the backfill when a poll left pipelines to backfill.
    backfill_due: Notify,
    /// The backfill is reading (so stopping the schedule cuts a read).
    backfill_reading: AtomicBool,
}

impl TargetPoller {
    /// A poller for `target` whose polls may take `poll_timeout` each. A target the store
    /// already knows (after a reload) carries on with what it recorded.
    pub fn new(
        target: TargetConfig,
        client: Client,
        store: Arc<Store>,
        settings: Settings,
        poll_timeout: Duration,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        let slot = store.target(target.label(), target.gc_after);
        let schedule = target.poll_schedule();
        // This poller's schedule decides when its first poll is overdue.
        slot.heartbeat
            .beat(schedule.stall_after(clock.now(), poll_timeout));
        TargetPoller {
            target,
            background: client.with_priority(Priority::Backfill),
            client,
            store,
            slot,
            settings,
            schedule,
            clock,
            poll_timeout,
            backfill_due: Notify::new(),
            backfill_reading: AtomicBool::new(false),
        }
    }

    /// True while the backfill reads histories.
    pub fn is_backfilling(&self) -> bool {
        self.backfill_reading.load(Ordering::Relaxed)
    }

    /// When this target polls.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// How long the target's schedule is past the time by which a poll should have started.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.slot.heartbeat.overdue()
    }

    /// Sets the target's `polling_stalled` gauge from its heartbeat, and returns how long it is
    /// overdue (the watchdog's check).
    pub fn check_stalled(&self) -> Option<Duration> {
        let overdue = self.stalled_for();
        self.slot
            .series(|series| series.set_polling_stalled(overdue.is_some()));
        overdue
    }

    /// The wall clock's time, Unix seconds.
    fn now(&self) -> f64 {
        self.clock.unix_seconds()
    }

    /// True once a poll of this target has succeeded.
    pub fn is_ready(&self) -> bool {
        self.slot.is_ready()
    }

    /// The `target` label.
    pub fn label(&self) -> &str {
        self.target.label()
    }

    /// Runs one poll, unless the previous one is still running (then counts a skip). It must
    /// finish within `poll_timeout`, or it is cut short and counted as failed. The target is
    /// ready after its first successful poll, whatever its backfill still has to read.
    pub async fn poll(&self) {
        let Some(mut state) = self.store.begin_poll(&self.slot).await else {
            tracing::warn!(
                target_name = self.label(),
                "previous poll still running; skipping this one"
            );
            self.slot.series(|series| series.poll_skipped());
            return;
        };
        self.slot.heartbeat.beat(
            self.schedule
                .stall_after(self.clock.now(), self.poll_timeout),
        );
        let now = self.now();
        self.slot.series(|series| series.poll_started(now));
        let started = Instant::now();
        let steady = tokio::time::timeout_at(started + self.poll_timeout, self.steady(&mut state));
        let ok = match steady.await {
            Ok(ok) => ok,
            Err(_) => {
                // Whatever finished before the cut is recorded; the rest is read next poll.
                tracing::warn!(
                    target_name = self.label(),
                    poll_timeout = ?self.poll_timeout,
                    "poll cut short at its poll_timeout; counted as failed"
                );
                self.slot.series(|series| series.poll_timed_out());
                false
            }
        };
        let pending = state.backfill_pending().count();
        drop(state);
        let elapsed = started.elapsed();
        let now = self.now();
        self.slot
            .series(|series| series.poll_finished(elapsed, ok, now));
        if ok {
            self.slot.set_ready();
        }
        if pending > 0 {
            self.backfill_due.notify_one();
        }
        tracing::debug!(
            target_name = self.label(),
            ok,
            elapsed_ms = elapsed.as_millis() as u64,
            backfill_pending = pending,
            "poll finished"
        );
    }
}

/// Logs a failed call; a rejected credential is an error, and its message says what to check
/// for the configured auth method.
fn log_api_error(target_name: &str, err: &Error, what: &str) {
    match err {
        Error::Unauthorized { .. } => {
            tracing::error!(target_name, error = %err, "{what}: credentials rejected")
        }
        _ => tracing::warn!(target_name, kind = err.kind(), error = %err, "{what}"),
    }
}
