//! The traces of recorded runs that await delivery to the collector, oldest first.
//!
//! A run's trace enters the outbox only once the commit that records the run has been written
//! (with the state file, in the same transaction), and leaves it when the collector took it or
//! it was dropped; the state file learns of that at once, so a restart neither loses a pending
//! trace nor sends a delivered one again. The outbox is bounded: past `max_pending_runs` the
//! oldest traces are dropped, and counted.

use std::collections::VecDeque;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::durable::StoredTrace;
use super::series::lock;

/// Why a trace was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// More traces were pending than `traces.max_pending_runs`: the oldest went.
    Overflow,
    /// The collector refused the request for good (a 4xx other than 429).
    Rejected,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Overflow => "overflow",
            DropReason::Rejected => "rejected",
        }
    }
}

/// How one export request ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportResult {
    /// 2xx: delivered.
    Success,
    /// 429: retried after its `Retry-After` or the backoff.
    Throttled,
    /// 5xx: retried.
    ServerError,
    /// No answer (refused, reset, timed out): retried.
    Unreachable,
    /// Another 4xx: dropped, not retried.
    Rejected,
}

impl ExportResult {
    /// Every result, for the label set.
    pub const ALL: [ExportResult; 5] = [
        ExportResult::Success,
        ExportResult::Throttled,
        ExportResult::ServerError,
        ExportResult::Unreachable,
        ExportResult::Rejected,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportResult::Success => "success",
            ExportResult::Throttled => "throttled",
            ExportResult::ServerError => "server_error",
            ExportResult::Unreachable => "unreachable",
            ExportResult::Rejected => "rejected",
        }
    }
}

/// The outbox's own series.
struct TraceFamilies {
    exports: IntCounterVec,
    exported: IntCounter,
    dropped: IntCounterVec,
    pending: IntGauge,
}

impl TraceFamilies {
    fn new() -> Result<TraceFamilies, prometheus::Error> {
        let exports = IntCounterVec::new(
            Opts::new(
                "codearts_exporter_trace_exports_total",
                "Export requests to the trace collector by result: success, throttled (429), server_error (5xx), unreachable (no answer); those three are retried; rejected (another 4xx) is dropped.",
            ),
            &["result"],
        )?;
        for result in ExportResult::ALL {
            exports.with_label_values(&[result.as_str()]);
        }
        let dropped = IntCounterVec::new(
            Opts::new(
                "codearts_exporter_traces_dropped_total",
                "Runs whose trace was dropped by reason: overflow (more pending than traces.max_pending_runs; the oldest go), rejected (the collector refused it).",
            ),
            &["reason"],
        )?;
        for reason in [DropReason::Overflow, DropReason::Rejected] {
            dropped.with_label_values(&[reason.as_str()]);
        }
        Ok(TraceFamilies {
            exports,
            exported: IntCounter::new(
                "codearts_exporter_traces_exported_total",
                "Runs whose trace the collector took.",
            )?,
            dropped,
            pending: IntGauge::new(
                "codearts_exporter_traces_pending",
                "Recorded runs whose trace awaits delivery.",
            )?,
        })
    }
}

/// What the outbox holds, under one lock.
#[derive(Default)]
struct Queue {
    /// Committed traces awaiting delivery, in the order their commits were written.
    pending: VecDeque<StoredTrace>,
    /// The next trace's place.
    next_seq: i64,
    /// Settled (delivered or dropped) and not yet removed from the state file.
    settled: Vec<i64>,
}

/// The pending traces, their bound and their series.
pub struct Outbox {
    max_pending: usize,
    queue: Mutex<Queue>,
    /// Woken when traces enter.
    entered: tokio::sync::Notify,
    families: TraceFamilies,
}

impl Outbox {
    /// An empty outbox of at most `max_pending` traces.
    pub fn new(max_pending: usize) -> Result<Outbox, prometheus::Error> {
        Ok(Outbox {
            max_pending: max_pending.max(1),
            queue: Mutex::new(Queue::default()),
            entered: tokio::sync::Notify::new(),
            families: TraceFamilies::new()?,
        })
    }

    /// Every family, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let families = &self.families;
        vec![
            Box::new(families.exports.clone()),
            Box::new(families.exported.clone()),
            Box::new(families.dropped.clone()),
            Box::new(families.pending.clone()),
        ]
    }

    /// Places for `bodies`, the traces of runs about to be committed, in order.
    pub fn stamp(&self, bodies: Vec<bytes::Bytes>) -> Vec<StoredTrace> {
        let mut queue = lock(&self.queue);
        bodies
            .into_iter()
            .map(|body| {
                let seq = queue.next_seq;
                queue.next_seq += 1;
                StoredTrace { seq, body }
            })
            .collect()
    }

    /// Takes what was settled since the last commit, to remove from the state file.
    pub fn take_settled(&self) -> Vec<i64> {
        std::mem::take(&mut lock(&self.queue).settled)
    }

    /// Gives back what [`Outbox::take_settled`] took, when the commit failed.
    pub fn untake_settled(&self, settled: Vec<i64>) {
        lock(&self.queue).settled.extend(settled);
    }

    /// Admits committed traces (also those the state file kept), dropping the oldest past the
    /// bound.
    pub fn admit(&self, traces: Vec<StoredTrace>) {
        if traces.is_empty() {
            return;
        }
        let mut queue = lock(&self.queue);
        if let Some(last) = traces.last() {
            queue.next_seq = queue.next_seq.max(last.seq + 1);
        }
        queue.pending.extend(traces);
        let over = queue.pending.len().saturating_sub(self.max_pending);
        if over > 0 {
            let dropped: Vec<i64> = queue.pending.drain(..over).map(|t| t.seq).collect();
            queue.settled.extend(dropped);
            self.families
                .dropped
                .with_label_values(&[DropReason::Overflow.as_str()])
                .inc_by(over as u64);
            tracing::warn!(
                dropped = over,
                max_pending_runs = self.max_pending,
                "trace export: more runs pending than traces.max_pending_runs; the oldest traces were dropped"
            );
        }
        self.families.pending.set(queue.pending.len() as i64);
        drop(queue);
        self.entered.notify_one();
    }

    /// The oldest pending traces, at most `max_runs` of them and about `max_bytes` (one at
    /// least); empty when none is pending.
    pub fn oldest(&self, max_runs: usize, max_bytes: usize) -> Vec<StoredTrace> {
        let queue = lock(&self.queue);
        let mut bytes = 0;
        queue
            .pending
            .iter()
            .take(max_runs)
            .take_while(|trace| {
                let first = bytes == 0;
                bytes += trace.body.len();
                first || bytes <= max_bytes
            })
            .cloned()
            .collect()
    }

    /// Waits until traces enter (at once if some entered since the last wait).
    pub async fn entered(&self) {
        self.entered.notified().await;
    }

    /// Settles `batch` (taken from [`Outbox::oldest`]): delivered when `dropped` is `None`.
    /// Traces of it that the bound dropped meanwhile are not counted twice.
    pub fn settle(&self, batch: &[StoredTrace], dropped: Option<DropReason>) {
        let in_batch: std::collections::HashSet<i64> = batch.iter().map(|t| t.seq).collect();
        let mut queue = lock(&self.queue);
        // The batch was the front, and only the front is ever removed meanwhile. (Places need
        // not increase along the queue: two targets' commits may admit in either order.)
        let mut settled = 0u64;
        while queue
            .pending
            .front()
            .is_some_and(|trace| in_batch.contains(&trace.seq))
        {
            if let Some(trace) = queue.pending.pop_front() {
                queue.settled.push(trace.seq);
                settled += 1;
            }
        }
        self.families.pending.set(queue.pending.len() as i64);
        match dropped {
            None => self.families.exported.inc_by(settled),
            Some(reason) => self
                .families
                .dropped
                .with_label_values(&[reason.as_str()])
                .inc_by(settled),
        }
    }

    /// Counts an export request that ended with `result`.
    pub fn exported(&self, result: ExportResult) {
        self.families
            .exports
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// How many traces are pending.
    pub fn len(&self) -> usize {
        lock(&self.queue).pending.len()
    }

    /// Whether no trace is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(texts: &[&str]) -> Vec<bytes::Bytes> {
        texts
            .iter()
            .map(|t| bytes::Bytes::from(t.to_string()))
            .collect()
    }

    fn seqs(traces: &[StoredTrace]) -> Vec<i64> {
        traces.iter().map(|t| t.seq).collect()
    }

    #[test]
    fn traces_leave_oldest_first_in_batches() {
        let outbox = Outbox::new(10).expect("outbox");
        let stamped = outbox.stamp(bodies(&["aaaa", "bbbb", "cccc"]));
        assert_eq!(seqs(&stamped), [0, 1, 2]);
        outbox.admit(stamped);
        assert_eq!(seqs(&outbox.oldest(2, 1000)), [0, 1]);
        // About max_bytes, but one trace at least.
        assert_eq!(seqs(&outbox.oldest(10, 8)), [0, 1]);
        assert_eq!(seqs(&outbox.oldest(10, 1)), [0]);
        let batch = outbox.oldest(2, 1000);
        outbox.settle(&batch, None);
        assert_eq!(seqs(&outbox.oldest(10, 1000)), [2]);
        assert_eq!(outbox.families.exported.get(), 2);
        assert_eq!(outbox.take_settled(), [0, 1]);
        assert!(outbox.take_settled().is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_are_dropped_and_counted_once() {
        let outbox = Outbox::new(3).expect("outbox");
        let first = outbox.stamp(bodies(&["a", "b"]));
        outbox.admit(first);
        let batch = outbox.oldest(10, 1000);
        let more = outbox.stamp(bodies(&["c", "d", "e"]));
        outbox.admit(more);
        assert_eq!(seqs(&outbox.oldest(10, 1000)), [2, 3, 4]);
        let overflow = DropReason::Overflow.as_str();
        assert_eq!(
            outbox.families.dropped.with_label_values(&[overflow]).get(),
            2
        );
        assert_eq!(outbox.families.pending.get(), 3);
        // The batch in flight was dropped meanwhile: its answer settles nothing more.
        outbox.settle(&batch, None);
        assert_eq!(outbox.families.exported.get(), 0);
        assert_eq!(outbox.len(), 3);
        let batch = outbox.oldest(1, 1000);
        outbox.settle(&batch, Some(DropReason::Rejected));
        let rejected = DropReason::Rejected.as_str();
        assert_eq!(
            outbox.families.dropped.with_label_values(&[rejected]).get(),
            1
        );
        assert_eq!(outbox.take_settled(), [0, 1, 2]);
    }

    #[test]
    fn commits_admitted_out_of_order_settle_all_the_same() {
        let outbox = Outbox::new(10).expect("outbox");
        let first = outbox.stamp(bodies(&["a", "b"]));
        let second = outbox.stamp(bodies(&["c", "d"]));
        // The second commit's write ended first.
        outbox.admit(second);
        outbox.admit(first);
        let batch = outbox.oldest(10, 1000);
        assert_eq!(seqs(&batch), [2, 3, 0, 1]);
        outbox.settle(&batch, None);
        assert!(outbox.is_empty());
        assert_eq!(outbox.families.exported.get(), 4);
        // The next place is after every place given, whatever the order of admission.
        assert_eq!(seqs(&outbox.stamp(bodies(&["e"]))), [4]);
    }

    #[test]
    fn kept_traces_go_on_after_the_last_place() {
        let outbox = Outbox::new(10).expect("outbox");
        outbox.admit(vec![
            StoredTrace {
                seq: 7,
                body: bytes::Bytes::from_static(b"x"),
            },
            StoredTrace {
                seq: 9,
                body: bytes::Bytes::from_static(b"y"),
            },
        ]);
        assert_eq!(seqs(&outbox.stamp(bodies(&["z"]))), [10]);
    }

    #[test]
    fn a_failed_commit_gives_the_settled_back() {
        let outbox = Outbox::new(10).expect("outbox");
        outbox.admit(outbox.stamp(bodies(&["a"])));
        let batch = outbox.oldest(10, 1000);
        outbox.settle(&batch, None);
        let settled = outbox.take_settled();
        outbox.untake_settled(settled);
        assert_eq!(outbox.take_settled(), [0]);
    }
}
