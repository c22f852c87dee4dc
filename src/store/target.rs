//! A target's own series (its polls, discovery and backfill), owned by its slot in the store and
//! removed with it: one handle registers every per-target family at once and removes them all
//! on `Drop`, so no family can be left behind or forgotten.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts};

use super::series::SeriesTable;

/// Buckets of the poll duration histogram (seconds).
const POLL_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The per-target families, labelled `target`; registered once in the exporter's registry.
pub struct TargetFamilies {
    poll_duration: HistogramVec,
    target_up: GaugeVec,
    last_successful_poll: GaugeVec,
    last_poll_start: GaugeVec,
    polling_stalled: GaugeVec,
    backfill_pending: GaugeVec,
    discovered_pipelines: GaugeVec,
    polls_skipped: IntCounterVec,
    polls_timed_out: IntCounterVec,
}

impl TargetFamilies {
    /// Creates the families (unregistered).
    pub fn new() -> Result<TargetFamilies, prometheus::Error> {
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["target"]);
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["target"]);
        Ok(TargetFamilies {
            poll_duration: HistogramVec::new(
                HistogramOpts::new(
                    "codearts_exporter_poll_duration_seconds",
                    "Duration of polls of a target; _count is the number of polls.",
                )
                .buckets(POLL_BUCKETS.to_vec()),
                &["target"],
            )?,
            target_up: gauge(
                "codearts_exporter_target_up",
                "1 when the last poll of the target succeeded, else 0.",
            )?,
            last_successful_poll: gauge(
                "codearts_exporter_last_successful_poll_timestamp_seconds",
                "End of the last successful poll of the target, Unix seconds.",
            )?,
            last_poll_start: gauge(
                "codearts_exporter_last_poll_start_timestamp_seconds",
                "Start of the last poll of the target, Unix seconds.",
            )?,
            polling_stalled: gauge(
                "codearts_exporter_polling_stalled",
                "1 while the target's schedule has started no poll for three periods (/healthz then fails), else 0.",
            )?,
            backfill_pending: gauge(
                "codearts_exporter_backfill_pending_pipelines",
                "Pipelines of the target whose first run history read (the backfill of runs that ended within backfill_window) is still to come.",
            )?,
            discovered_pipelines: gauge(
                "codearts_exporter_discovered_pipelines",
                "Pipelines the target's last discovery kept (after its filters); only for targets with discover = true.",
            )?,
            polls_skipped: counter(
                "codearts_exporter_polls_skipped_total",
                "Polls not started because the previous poll of the target was still running.",
            )?,
            polls_timed_out: counter(
                "codearts_exporter_polls_timed_out_total",
                "Polls cut short at the target's poll_timeout (counted as failed).",
            )?,
        })
    }

    /// Every family, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        self.all().iter().map(|family| family.boxed()).collect()
    }

    /// Every family: the one list that registration and removal both go by.
    fn all(&self) -> [&dyn Family; 9] {
        [
            &self.poll_duration,
            &self.target_up,
            &self.last_successful_poll,
            &self.last_poll_start,
            &self.polling_stalled,
            &self.backfill_pending,
            &self.discovered_pipelines,
            &self.polls_skipped,
            &self.polls_timed_out,
        ]
    }
}

/// A family labelled `target` alone, whatever its metric type.
trait Family {
    /// A handle for registration.
    fn boxed(&self) -> Box<dyn Collector>;
    /// Removes the series of `target` (absent ones too).
    fn remove(&self, target: &str);
}

impl<T: MetricVecBuilder + 'static> Family for MetricVec<T> {
    fn boxed(&self) -> Box<dyn Collector> {
        Box::new(self.clone())
    }

    fn remove(&self, target: &str) {
        // A series never set is absent; removing it is not an error worth a word.
        let _ = self.remove_label_values(&[target]);
    }
}

/// The series of one target, created down (`target_up` 0) and removed when dropped.
pub struct TargetSeries {
    families: Arc<TargetFamilies>,
    /// Marks a change a rendering must show (the store's one version).
    table: Arc<SeriesTable>,
    label: String,
}

impl std::fmt::Debug for TargetSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSeries")
            .field("label", &self.label)
            .finish()
    }
}

impl TargetSeries {
    /// Creates the series of target `label`: down until proven up, nothing skipped or pending.
    pub(super) fn new(
        families: &Arc<TargetFamilies>,
        table: &Arc<SeriesTable>,
        label: &str,
    ) -> TargetSeries {
        let series = TargetSeries {
            families: families.clone(),
            table: table.clone(),
            label: label.to_string(),
        };
        let target = [label];
        families.target_up.with_label_values(&target).set(0.0);
        families.polls_skipped.with_label_values(&target);
        families.polls_timed_out.with_label_values(&target);
        families.polling_stalled.with_label_values(&target).set(0.0);
        families
            .backfill_pending
            .with_label_values(&target)
            .set(0.0);
        table.changed();
        series
    }

    fn target(&self) -> [&str; 1] {
        [self.label.as_str()]
    }

    /// Records the start of a poll at `now_seconds` (Unix).
    pub fn poll_started(&self, now_seconds: f64) {
        let families = &self.families;
        families
            .last_poll_start
            .with_label_values(&self.target())
            .set(now_seconds);
        self.table.changed();
    }

    /// Counts a poll cut short at its deadline.
    pub fn poll_timed_out(&self) {
        self.count(&self.families.polls_timed_out);
    }

    /// Counts a poll that was skipped because the previous one still ran.
    pub fn poll_skipped(&self) {
        self.count(&self.families.polls_skipped);
    }

    /// Adds one to a counter of this target.
    fn count(&self, family: &IntCounterVec) {
        family.with_label_values(&self.target()).inc();
        self.table.changed();
    }

    /// Records the end of a poll at `now_seconds` (Unix).
    pub fn poll_finished(&self, elapsed: Duration, ok: bool, now_seconds: f64) {
        let families = &self.families;
        let target = self.target();
        families
            .poll_duration
            .with_label_values(&target)
            .observe(elapsed.as_secs_f64());
        families
            .target_up
            .with_label_values(&target)
            .set(if ok { 1.0 } else { 0.0 });
        if ok {
            families
                .last_successful_poll
                .with_label_values(&target)
                .set(now_seconds);
        }
        self.table.changed();
    }

    /// Sets whether the schedule is stalled.
    pub fn set_polling_stalled(&self, stalled: bool) {
        self.set_gauge(
            &self.families.polling_stalled,
            if stalled { 1.0 } else { 0.0 },
        );
    }

    /// Sets how many pipelines wait for their backfill.
    pub(super) fn set_backfill_pending(&self, pipelines: usize) {
        self.set_gauge(&self.families.backfill_pending, pipelines as f64);
    }

    /// Sets how many pipelines the last discovery kept.
    pub fn set_discovered(&self, pipelines: usize) {
        let families = &self.families;
        families
            .discovered_pipelines
            .with_label_values(&self.target())
            .set(pipelines as f64);
        self.table.changed();
    }

    /// Removes the discovery gauge of a target that no longer discovers (if it had one).
    pub fn discovery_off(&self) {
        if self
            .families
            .discovered_pipelines
            .remove_label_values(&self.target())
            .is_ok()
        {
            self.table.changed();
        }
    }

    /// Sets a gauge, marking a change only when its value moves.
    fn set_gauge(&self, family: &GaugeVec, value: f64) {
        let gauge = family.with_label_values(&self.target());
        if gauge.get() != value {
            gauge.set(value);
            self.table.changed();
        }
    }
}

impl Drop for TargetSeries {
    fn drop(&mut self) {
        for family in self.families.all() {
            family.remove(&self.label);
        }
        self.table.changed();
    }
}
