//! The state of a planned run at any time: a pure function of the plan and the time, so every
//! API answers consistently about the same run.

use super::plan::{GateKind, RunPlan, Span, StagePlan};
use super::{INIT, PAUSED, QUEUED, RUNNING, SUSPEND, UNSELECTED};

impl RunPlan {
    /// Absolute end, epoch ms.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }

    /// True when the run has ended at `t`.
    pub fn is_done(&self, t: i64) -> bool {
        t >= self.end_ms()
    }

    /// Status and last change at `t`, without building a full view for finished runs.
    pub fn summary(&self, t: i64) -> (&'static str, i64) {
        if self.is_done(t) {
            (self.outcome.status(), self.end_ms())
        } else {
            let view = self.view(t);
            (view.status, view.update)
        }
    }

    /// The run as the service would report it at `t` (epoch ms, at or after the start).
    pub fn view(&self, t: i64) -> RunView {
        let base = self.start_ms;
        let rel = t - base;
        let stages: Vec<StageView> = self
            .stages
            .iter()
            .map(|stage| stage.view(base, rel))
            .collect();
        let status = if rel >= self.duration_ms {
            self.outcome.status()
        } else if rel < self.queue_ms {
            // Initialisation first, then the wait for an executor.
            if rel < self.queue_ms / 4 {
                INIT
            } else {
                QUEUED
            }
        } else {
            stages
                .iter()
                .map(|s| s.item.status)
                .find(|s| [RUNNING, PAUSED, SUSPEND].contains(s))
                .unwrap_or(RUNNING)
        };
        let end = (rel >= self.duration_ms).then_some(self.end_ms());
        let pause = stages.iter().map(|s| s.pause).sum();
        let mut update = base;
        if rel >= self.queue_ms {
            update = update.max(base + self.queue_ms);
        }
        for stage in &stages {
            let items = std::iter::once(&stage.item).chain(&stage.pre).chain(
                stage
                    .jobs
                    .iter()
                    .flat_map(|j| std::iter::once(&j.item).chain(&j.steps)),
            );
            for item in items {
                update = update
                    .max(item.start.unwrap_or(0))
                    .max(item.end.unwrap_or(0));
            }
        }
        RunView {
            status,
            start: base,
            end,
            pause,
            update,
            stages,
        }
    }
}

/// Status, absolute times and message of a stage, job or step at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ItemView {
    pub status: &'static str,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub message: Option<&'static str>,
}

fn item_view(
    span: Span,
    base: i64,
    rel: i64,
    active: &'static str,
    fin: &'static str,
    message: Option<&'static str>,
) -> ItemView {
    match (span.start, span.end) {
        (Some(start), Some(end)) if rel >= end => ItemView {
            status: fin,
            start: Some(base + start),
            end: Some(base + end),
            message,
        },
        (Some(start), _) if rel >= start => ItemView {
            status: active,
            start: Some(base + start),
            end: None,
            message: None,
        },
        _ => ItemView {
            status: if fin == UNSELECTED { UNSELECTED } else { INIT },
            start: None,
            end: None,
            message: None,
        },
    }
}

/// A job at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobView {
    pub item: ItemView,
    pub steps: Vec<ItemView>,
}

/// A stage at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageView {
    pub item: ItemView,
    pub selected: bool,
    /// Time held at its gate (manual review or suspension) so far, ms: `pause_time`.
    pub pause: i64,
    pub pre: Vec<ItemView>,
    pub jobs: Vec<JobView>,
}

impl StagePlan {
    fn view(&self, base: i64, rel: i64) -> StageView {
        let gate_active = self.gate.filter(|g| g.start <= rel && rel < g.end);
        let active = match gate_active.map(|g| g.kind) {
            Some(GateKind::Review) => PAUSED,
            Some(GateKind::Suspend) => SUSPEND,
            None => RUNNING,
        };
        // Time held at the gate so far: a manual review or a suspension interrupts the stage.
        let pause = self.gate.map_or(0, |g| (rel.min(g.end) - g.start).max(0));
        StageView {
            item: item_view(self.span, base, rel, active, self.fin, None),
            selected: self.selected,
            pause,
            pre: self
                .pre
                .iter()
                .map(|s| item_view(s.span, base, rel, s.active, s.fin, s.message))
                .collect(),
            jobs: self
                .jobs
                .iter()
                .map(|job| JobView {
                    item: item_view(job.span, base, rel, RUNNING, job.fin, job.message),
                    steps: job
                        .steps
                        .iter()
                        .map(|s| item_view(s.span, base, rel, s.active, s.fin, s.message))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A run at some time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunView {
    /// v5 run status.
    pub status: &'static str,
    pub start: i64,
    pub end: Option<i64>,
    /// Time its stages were held at gates so far, ms: `pause_time`.
    pub pause: i64,
    /// Last change so far.
    pub update: i64,
    pub stages: Vec<StageView>,
}

#[cfg(test)]
mod tests {
    use super::super::testing::{find_run, world};
    use super::*;

    #[test]
    fn states_progress_in_order() {
        let w = world(4, 10.0);
        let run = find_run(&w, |r| {
            r.stages
                .iter()
                .any(|s| s.gate.is_some_and(|g| g.kind == GateKind::Review))
        });
        let gate = run.stages.iter().find_map(|s| s.gate).expect("gate");
        assert_eq!(run.view(run.start_ms).status, INIT);
        assert_eq!(run.view(run.start_ms + run.queue_ms - 1).status, QUEUED);
        let during = run.view(run.start_ms + gate.start);
        assert_eq!(during.status, PAUSED);
        assert_eq!(during.pause, 0, "the review has just begun");
        let held = (gate.end - gate.start) / 2;
        assert_eq!(run.view(run.start_ms + gate.start + held).pause, held);
        assert!(during.end.is_none());
        let first = run.view(run.start_ms + run.queue_ms);
        assert_eq!(first.status, RUNNING);
        assert_eq!(first.stages[0].item.status, RUNNING);
        assert!(first.stages[1..].iter().all(|s| s.item.start.is_none()));
        let done = run.view(run.end_ms());
        assert_eq!(done.status, run.outcome.status());
        assert_eq!(done.update, run.end_ms());
        let gated: i64 = run
            .stages
            .iter()
            .filter_map(|s| s.gate)
            .map(|g| g.end - g.start)
            .sum();
        assert_eq!(done.pause, gated, "every gate, whole");
        // Completed stages end where the next one starts.
        let ran: Vec<&StageView> = done
            .stages
            .iter()
            .filter(|s| s.item.start.is_some())
            .collect();
        for pair in ran.windows(2) {
            assert_eq!(pair[0].item.end, pair[1].item.start);
        }
    }
}
