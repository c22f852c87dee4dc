//! The run-recording state machine of one pipeline: which runs the histograms hold, when its
//! run history must be read, how far back, and what a read records. Every completed run is
//! recorded exactly once, oldest first.
//!
//! Pure: no I/O and no clock (callers pass the time), so each case is a row of the tests below.
//! The poller drives it (`crate::poller`), the store keeps it beside the pipeline's series
//! (`crate::store`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codearts::RunSelector;
use crate::codearts::model::Run;

/// Runs per history page.
pub const HISTORY_PAGE: u64 = 20;
/// History pages read per pipeline and poll at most.
pub const MAX_HISTORY_PAGES: u64 = 10;
/// Unfinished runs other than the latest remembered per pipeline (older ones are given up).
const MAX_UNFINISHED: usize = 16;
/// Recorded run numbers remembered per pipeline; anything older counts as recorded.
const MAX_RECORDED: usize = 64;

/// Identifies a run: by id (v5), with its number when known, or by number alone (v3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunKey {
    /// A v5 run id.
    Id {
        /// The run id.
        id: String,
        /// Its run number, when given.
        number: Option<u64>,
    },
    /// A run number (v3 builds have no id).
    Number(u64),
}

impl RunKey {
    /// The key of `run`; `None` when it has neither id nor number.
    pub fn of(run: &Run) -> Option<RunKey> {
        match (&run.run_id, run.run_number) {
            (Some(id), number) => Some(RunKey::Id {
                id: id.clone(),
                number,
            }),
            (None, Some(number)) => Some(RunKey::Number(number)),
            (None, None) => None,
        }
    }

    /// The run number, when known.
    pub fn number(&self) -> Option<u64> {
        match self {
            RunKey::Id { number, .. } => *number,
            RunKey::Number(number) => Some(*number),
        }
    }

    /// How the run detail API names this run.
    pub fn selector(&self) -> RunSelector<'_> {
        match self {
            RunKey::Id { id, .. } => RunSelector::Id(id),
            RunKey::Number(number) => RunSelector::Number(*number),
        }
    }
}

/// Run numbers already observed in the histograms, bounded.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct RecordedRuns {
    numbers: BTreeSet<u64>,
    /// Every number at or below this is considered recorded.
    floor: u64,
}

impl RecordedRuns {
    fn contains(&self, number: u64) -> bool {
        number <= self.floor || self.numbers.contains(&number)
    }

    fn insert(&mut self, number: u64) {
        self.numbers.insert(number);
        while self.numbers.len() > MAX_RECORDED {
            if let Some(oldest) = self.numbers.pop_first() {
                self.floor = self.floor.max(oldest);
            }
        }
    }
}

/// One history read to make: newest first, down to `floor`, or the first time down to `cutoff`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryRead {
    /// Runs at or below this number are settled.
    pub floor: u64,
    /// The pipeline's first read (its backfill).
    pub first: bool,
    /// Runs that ended before this (Unix seconds) are not recorded.
    pub cutoff: f64,
}

impl HistoryRead {
    /// Whether the pages read so far (`runs`, the last page being `page`) go far enough back.
    pub fn has_enough(&self, runs: &[Run], page: &[Run]) -> bool {
        let reached_cutoff = page.iter().any(|run| self.ended_before(run));
        if self.first {
            // The first read also looks for the last completed run, for `last_run_*`.
            reached_cutoff && runs.iter().any(Run::is_completed)
        } else {
            reached_cutoff
                || page
                    .iter()
                    .any(|run| run.run_number.is_some_and(|n| n <= self.floor))
        }
    }

    /// The runs of a read that matter: above the floor; the first time, of the runs that ended
    /// before the cutoff only the newest (it sets `last_run_*`).
    pub fn keep(&self, mut runs: Vec<Run>) -> Vec<Run> {
        runs.retain(|run| run.run_number.is_some_and(|n| n > self.floor));
        if self.first {
            let newest_before = runs
                .iter()
                .filter(|run| self.ended_before(run))
                .filter_map(|run| run.run_number)
                .max();
            runs.retain(|run| !self.ended_before(run) || run.run_number == newest_before);
        }
        runs
    }

    /// Whether `run` completed before the cutoff (so it is not recorded).
    fn ended_before(&self, run: &Run) -> bool {
        run.is_completed() && run.end.is_some_and(|end| end < self.cutoff)
    }
}

/// What a history read asks of the pipeline's series, in order.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    /// Observe this completed run in the histograms (once, ever).
    Observe(&'a Run),
    /// This completed run was found after it left the window: count it as missed.
    Missed(&'a Run),
    /// This run is the last completed one: set the `last_run_*` gauges from it.
    Last(&'a Run),
}

/// What recording does with a completed run found in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Observe it in the histograms now.
    Observe,
    /// Count it as missed: it left the window before it was found.
    Missed,
    /// Neither: it ended before the window of the pipeline's first read.
    PassedOver,
    /// Observed, missed or passed over before.
    Recorded,
}

/// What the batch status alone shows of a pipeline's last completed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromStatus {
    /// The latest run, completed, is the last completed one: show it now, before any history
    /// read.
    Last(u64),
    /// The same, and nothing older is to be recorded: no history read at all.
    Settled(u64),
}

/// What a history read did.
#[derive(Debug, PartialEq)]
pub struct Applied<'a> {
    /// The steps for the series, oldest run first.
    pub steps: Vec<Step<'a>>,
    /// Runs the history no longer returned (after a restart, older than what it keeps): count
    /// them as missed.
    pub unseen: u64,
    /// False when the read lacked the latest run (it is read again next poll).
    pub complete: bool,
}

/// The recording state of one pipeline; the state store keeps it (serialized) across restarts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RunLedger {
    /// When the pipeline was first polled (Unix seconds): its first read records the runs that
    /// ended within the backfill window before it, however late that read comes.
    first_seen: f64,
    /// The latest run as of the last batch status, and whether it had completed.
    latest: Option<RunKey>,
    latest_completed: bool,
    /// When the latest run ended, or started while it runs (Unix seconds): backfills go newest
    /// first.
    latest_at: f64,
    /// Something may have completed since the last read: the history must be read.
    needs_read: bool,
    /// The history has been read once (the first read only looks back to the window).
    backfilled: bool,
    /// Restored from the state store and not read since: the next read records every run
    /// above the floor, however long ago it ended (the exporter was down meanwhile), and counts
    /// the runs the history no longer returns as missed.
    #[serde(skip)]
    resumed: bool,
    /// Runs seen unfinished in the history that are not the latest (parallel runs).
    unfinished: BTreeSet<u64>,
    recorded: RecordedRuns,
    /// Highest run number recorded or passed over.
    settled: u64,
    /// Run number behind the `last_run_*` gauges.
    last_completed: Option<u64>,
}

impl RunLedger {
    /// The ledger of a pipeline first polled at `first_seen` (Unix seconds).
    pub fn new(first_seen: f64) -> RunLedger {
        RunLedger {
            first_seen,
            ..RunLedger::default()
        }
    }

    /// This ledger as the state store restores it: a read it had settled stays settled, and
    /// the runs that completed while the exporter was away are recorded by the next read.
    pub fn resumed(mut self) -> RunLedger {
        self.resumed = self.backfilled;
        self
    }

    /// Runs that ended before this are not recorded: before the window at first sight, and
    /// further back than the window later (those count as missed); after a restart, none.
    pub fn cutoff(&self, now: f64, window: Duration) -> f64 {
        if self.resumed {
            return f64::NEG_INFINITY;
        }
        let from = if self.backfilled {
            now
        } else {
            self.first_seen
        };
        from - window.as_secs_f64()
    }

    /// History reads stop at this run number: everything at or below it is settled.
    fn floor(&self) -> u64 {
        match self.unfinished.first() {
            Some(oldest) => self.settled.min(oldest.saturating_sub(1)),
            None => self.settled,
        }
    }

    /// The batch status names `run` the latest. Returns what the status alone shows: the
    /// last completed run when `run` is one, with its stages and their times (v5; v3 has no
    /// stage times), and newer than the one shown; settled too when first seen with a latest run
    /// that ended before the window, so that nothing in its history would be recorded.
    pub fn saw_latest(
        &mut self,
        run: &Run,
        key: RunKey,
        now: f64,
        window: Duration,
    ) -> Option<FromStatus> {
        // The stages with their times: the v5 status carries them; v3 has no times, and a
        // list's `latest_run` may come without stages.
        let whole = !run.stages.is_empty()
            && run
                .stages
                .iter()
                .all(|stage| stage.result.is_none() || stage.duration().is_some());
        let settles = whole
            && run.is_completed()
            && self.latest.is_none()
            && !self.backfilled
            && run.end.is_some_and(|end| end < self.cutoff(now, window));
        let news = history_may_have_news(
            self.latest.as_ref(),
            self.latest_completed,
            &key,
            run.is_completed(),
            self.backfilled.then_some(self.settled),
        );
        if news || !self.unfinished.is_empty() {
            self.needs_read = true;
        }
        self.latest = Some(key);
        self.latest_completed = run.is_completed();
        self.latest_at = run.end.or(run.start).unwrap_or(self.latest_at);
        // A run without its stage times (v3) would blank the stage gauges of the last run
        // until a history read brings them: its last run comes from that read instead.
        let number = run.run_number.filter(|_| run.is_completed() && whole)?;
        if settles {
            Some(FromStatus::Settled(number))
        } else if self.last_completed.is_none_or(|last| number > last) {
            Some(FromStatus::Last(number))
        } else {
            None
        }
    }

    /// The status's latest run is now shown as the last completed one (what
    /// [`RunLedger::saw_latest`] returned, once the series show it); when settled, nothing
    /// older is to be recorded: no history read.
    pub fn shown_by_status(&mut self, shown: FromStatus) {
        match shown {
            FromStatus::Last(number) => self.last_completed = Some(number),
            FromStatus::Settled(number) => {
                self.last_completed = Some(number);
                self.settled = number;
                self.needs_read = false;
                self.backfilled = true;
            }
        }
    }

    /// Its first history read (the backfill) is due.
    pub fn wants_backfill(&self) -> bool {
        self.needs_read && !self.backfilled
    }

    /// Whether a last completed run is shown (by the status or a history read).
    pub fn shows_last(&self) -> bool {
        self.last_completed.is_some()
    }

    /// When its latest run ended, or started while it runs (Unix seconds; 0 when unknown).
    pub fn latest_at(&self) -> f64 {
        self.latest_at
    }

    /// The history read this pipeline needs now, if any.
    pub fn history_read(&self, now: f64, window: Duration) -> Option<HistoryRead> {
        self.needs_read.then(|| HistoryRead {
            floor: self.floor(),
            first: !self.backfilled,
            cutoff: self.cutoff(now, window),
        })
    }

    /// Whether `run`, found in the history, is observed now (not before, never again): the
    /// runs whose details a read fetches are exactly those [`RunLedger::apply_history`] observes.
    pub fn will_record(&self, run: &Run, cutoff: f64) -> bool {
        self.fate(run, cutoff) == Some(Fate::Observe)
    }

    /// What recording does with `run`, found in a history read with `cutoff`: the one rule
    /// behind both [`RunLedger::will_record`] and [`RunLedger::apply_history`]. `None` for a
    /// run that has not completed or has no number.
    fn fate(&self, run: &Run, cutoff: f64) -> Option<Fate> {
        let number = run.run_number.filter(|_| run.is_completed())?;
        Some(if self.recorded.contains(number) {
            Fate::Recorded
        } else if run.end.is_some_and(|end| end >= cutoff) {
            Fate::Observe
        } else if self.backfilled {
            // Completed while we watched, but found too late to record.
            Fate::Missed
        } else {
            // Ended before the window of the first read: not ours to record.
            Fate::PassedOver
        })
    }

    /// Takes in the runs of a history read (as kept by [`HistoryRead::keep`]) and says what to
    /// record, oldest first; the runs are sorted and de-duplicated in place.
    pub fn apply_history<'a>(&mut self, runs: &'a mut Vec<Run>, cutoff: f64) -> Applied<'a> {
        let floor = self.floor();
        let latest_number = self.latest.as_ref().and_then(RunKey::number);
        // The history must reach the latest run; an empty or stale answer is read again.
        let complete = latest_number.is_none_or(|latest| {
            latest <= floor || runs.iter().any(|run| run.run_number == Some(latest))
        });
        runs.sort_by_key(|run| run.run_number);
        runs.dedup_by_key(|run| run.run_number);
        let unseen = if self.resumed && complete {
            self.unseen_before(floor, runs)
        } else {
            0
        };
        let mut steps = Vec::new();
        for run in runs.iter() {
            let Some(number) = run.run_number else {
                continue;
            };
            if !run.is_completed() {
                if Some(number) == latest_number {
                    // The batch status follows the latest run; its completion triggers a read.
                    self.unfinished.remove(&number);
                } else {
                    self.unfinished.insert(number);
                    while self.unfinished.len() > MAX_UNFINISHED {
                        self.unfinished.pop_first();
                    }
                }
                continue;
            }
            self.unfinished.remove(&number);
            match self.fate(run, cutoff) {
                Some(Fate::Observe) => steps.push(Step::Observe(run)),
                Some(Fate::Missed) => steps.push(Step::Missed(run)),
                Some(Fate::PassedOver) | Some(Fate::Recorded) | None => {}
            }
            if !self.recorded.contains(number) {
                self.recorded.insert(number);
            }
            self.settled = self.settled.max(number);
            if self.last_completed.is_none_or(|last| number >= last) {
                steps.push(Step::Last(run));
                self.last_completed = Some(number);
            }
        }
        if complete {
            self.needs_read = false;
            self.backfilled = true;
            self.resumed = false;
        }
        Applied {
            steps,
            unseen,
            complete,
        }
    }

    /// Run numbers between `floor` and the oldest run read (sorted `runs`) that are neither
    /// read nor recorded: the history no longer returns them. Numbers are consecutive.
    fn unseen_before(&self, floor: u64, runs: &[Run]) -> u64 {
        let Some(oldest) = runs.iter().find_map(|run| run.run_number) else {
            return 0;
        };
        // Everything at or below the recorded floor counts as recorded.
        let from = (floor + 1).max(self.recorded.floor + 1);
        let recorded = self.recorded.numbers.range(from..oldest.max(from)).count() as u64;
        oldest.saturating_sub(from) - recorded
    }
}

/// Whether a run may have completed since the last poll, given the latest run then (and
/// whether it had completed) and now, and the highest run number settled (recorded or passed
/// over) once the history has been read. A latest run that directly follows the settled ones
/// hides nothing: any run in between would have a number in between.
fn history_may_have_news(
    previous: Option<&RunKey>,
    previous_completed: bool,
    latest: &RunKey,
    completed: bool,
    settled: Option<u64>,
) -> bool {
    if let (Some(settled), Some(now)) = (settled, latest.number()) {
        return if completed {
            now > settled
        } else {
            now > settled + 1
        };
    }
    let changed = previous != Some(latest);
    if completed && (changed || !previous_completed) {
        return true;
    }
    let successor = previous_completed
        && previous
            .and_then(RunKey::number)
            .zip(latest.number())
            .is_some_and(|(before, now)| now == before + 1);
    changed && !successor
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(3600);

    fn run(number: u64, end: Option<f64>) -> Run {
        Run::example(
            "p",
            format!("run-{number}"),
            number,
            end.unwrap_or(0.0) - 10.0,
            end,
        )
    }

    fn done(number: u64, end: f64) -> Run {
        run(number, Some(end))
    }

    fn running(number: u64) -> Run {
        run(number, None)
    }

    /// What happens to a pipeline, in order.
    #[allow(clippy::large_enum_variant)] // test scripts of a few events; boxing buys nothing
    enum Event {
        /// The batch status at time `.0` names `.1` the latest run.
        Status(f64, Run),
        /// At time `.0` a history read, if one is due, returns `.1` (newest first).
        Read(f64, Vec<Run>),
        /// At time `.0` a history read is due, and fails.
        ReadFails(f64),
        /// The exporter restarts: the ledger goes through the state store (serialized) and is
        /// restored.
        Restart,
    }
    use Event::{Read, ReadFails, Restart, Status};

    /// What the series were asked to do.
    #[derive(Debug, Default, PartialEq)]
    struct Outcome {
        observed: Vec<u64>,
        missed: Vec<u64>,
        last: Option<u64>,
        /// History reads made (successful or not).
        reads: usize,
        /// Runs the status showed as the last completed one before any read did.
        shown_by_status: Vec<u64>,
        /// Runs counted as missed because the history no longer returned them.
        unseen: u64,
    }

    fn play(first_seen: f64, events: Vec<Event>) -> Outcome {
        let mut ledger = RunLedger::new(first_seen);
        let mut outcome = Outcome::default();
        for event in events {
            match event {
                Status(at, latest) => {
                    let key = RunKey::of(&latest).expect("a key");
                    if let Some(shown) = ledger.saw_latest(&latest, key, at, WINDOW) {
                        ledger.shown_by_status(shown);
                        let (FromStatus::Last(number) | FromStatus::Settled(number)) = shown;
                        outcome.last = Some(number);
                        if matches!(shown, FromStatus::Last(_)) {
                            outcome.shown_by_status.push(number);
                        }
                    }
                }
                Read(at, history) => {
                    let Some(read) = ledger.history_read(at, WINDOW) else {
                        continue;
                    };
                    outcome.reads += 1;
                    let mut runs = read.keep(history);
                    let applied = ledger.apply_history(&mut runs, read.cutoff);
                    outcome.unseen += applied.unseen;
                    for step in applied.steps {
                        match step {
                            Step::Observe(run) => outcome.observed.extend(run.run_number),
                            Step::Missed(run) => outcome.missed.extend(run.run_number),
                            Step::Last(run) => outcome.last = run.run_number,
                        }
                    }
                }
                ReadFails(at) => {
                    if ledger.history_read(at, WINDOW).is_some() {
                        outcome.reads += 1;
                    }
                }
                Restart => {
                    let stored = serde_json::to_string(&ledger).expect("serializes");
                    let restored: RunLedger = serde_json::from_str(&stored).expect("restores");
                    ledger = restored.resumed();
                }
            }
        }
        outcome
    }

    fn expect(observed: &[u64], missed: &[u64], last: Option<u64>, reads: usize) -> Outcome {
        Outcome {
            observed: observed.to_vec(),
            missed: missed.to_vec(),
            last,
            reads,
            shown_by_status: Vec::new(),
            unseen: 0,
        }
    }

    /// ... where the status showed `shown` as the last completed run first.
    fn shown(mut outcome: Outcome, shown: &[u64]) -> Outcome {
        outcome.shown_by_status = shown.to_vec();
        outcome
    }

    #[test]
    fn every_completed_run_is_recorded_once() {
        let cases: Vec<(&str, f64, Vec<Event>, Outcome)> = vec![
            (
                "runs that started and ended between two polls",
                10_000.0,
                vec![
                    Status(10_000.0, done(3, 9_990.0)),
                    Read(
                        10_000.0,
                        vec![done(3, 9_990.0), done(2, 9_900.0), done(1, 9_800.0)],
                    ),
                    Status(10_010.0, running(6)),
                    Read(
                        10_010.0,
                        vec![
                            running(6),
                            done(5, 10_005.0),
                            done(4, 10_003.0),
                            done(3, 9_990.0),
                        ],
                    ),
                    Status(10_020.0, done(6, 10_015.0)),
                    Read(10_020.0, vec![done(6, 10_015.0), done(5, 10_005.0)]),
                    // Nothing new: no read.
                    Status(10_030.0, done(6, 10_015.0)),
                    Read(10_030.0, vec![done(6, 10_015.0)]),
                ],
                shown(expect(&[1, 2, 3, 4, 5, 6], &[], Some(6), 3), &[3, 6]),
            ),
            (
                "a run that starts right after the last one costs no read until it completes",
                10_000.0,
                vec![
                    Status(10_000.0, done(1, 9_990.0)),
                    Read(10_000.0, vec![done(1, 9_990.0)]),
                    Status(10_010.0, running(2)),
                    Read(10_010.0, vec![running(2), done(1, 9_990.0)]),
                    Status(10_020.0, done(2, 10_015.0)),
                    Read(10_020.0, vec![done(2, 10_015.0), done(1, 9_990.0)]),
                ],
                shown(expect(&[1, 2], &[], Some(2), 2), &[1, 2]),
            ),
            (
                "parallel runs: an older run still running is read again until it completes",
                10_000.0,
                vec![
                    Status(10_000.0, done(1, 9_990.0)),
                    Read(10_000.0, vec![done(1, 9_990.0)]),
                    Status(10_010.0, running(3)),
                    Read(10_010.0, vec![running(3), running(2), done(1, 9_990.0)]),
                    Status(10_020.0, running(3)),
                    Read(
                        10_020.0,
                        vec![running(3), done(2, 10_015.0), done(1, 9_990.0)],
                    ),
                    Status(10_030.0, done(3, 10_025.0)),
                    Read(10_030.0, vec![done(3, 10_025.0), done(2, 10_015.0)]),
                ],
                shown(expect(&[1, 2, 3], &[], Some(3), 4), &[1, 3]),
            ),
            (
                "an older run that completes after a newer one is read again and recorded once",
                10_000.0,
                vec![
                    Status(10_000.0, done(2, 9_990.0)),
                    Read(10_000.0, vec![done(2, 9_990.0), running(1)]),
                    Status(10_010.0, running(3)),
                    Read(
                        10_010.0,
                        vec![running(3), done(2, 9_990.0), done(1, 10_005.0)],
                    ),
                    Status(10_020.0, running(3)),
                    Read(
                        10_020.0,
                        vec![running(3), done(2, 9_990.0), done(1, 10_005.0)],
                    ),
                ],
                shown(expect(&[2, 1], &[], Some(2), 2), &[2]),
            ),
            (
                "a restart inside the window records what ended within it, from the start",
                10_000.0,
                vec![
                    // The first read comes late (a slow API): the window still counts from
                    // the first sight.
                    Status(10_000.0, done(3, 9_000.0)),
                    Read(
                        12_000.0,
                        vec![done(3, 9_000.0), done(2, 7_000.0), done(1, 5_000.0)],
                    ),
                ],
                shown(expect(&[2, 3], &[], Some(3), 1), &[3]),
            ),
            (
                "a restart after the window: the status settles it, no read, later runs count",
                10_000.0,
                vec![
                    Status(10_000.0, done(2, 5_000.0)),
                    Read(10_000.0, vec![done(2, 5_000.0), done(1, 4_000.0)]),
                    Status(10_010.0, done(3, 10_005.0)),
                    Read(10_010.0, vec![done(3, 10_005.0), done(2, 5_000.0)]),
                ],
                shown(expect(&[3], &[], Some(3), 1), &[3]),
            ),
            (
                "a failed history read is made again, and records once",
                10_000.0,
                vec![
                    Status(10_000.0, running(1)),
                    ReadFails(10_000.0),
                    Status(10_010.0, done(1, 10_005.0)),
                    ReadFails(10_010.0),
                    Status(10_020.0, done(1, 10_005.0)),
                    Read(10_020.0, vec![done(1, 10_005.0)]),
                    Status(10_030.0, done(1, 10_005.0)),
                    Read(10_030.0, vec![done(1, 10_005.0)]),
                ],
                shown(expect(&[1], &[], Some(1), 3), &[1]),
            ),
            (
                "a history that lacks the latest run (a stale answer) is read again",
                10_000.0,
                vec![
                    Status(10_000.0, done(1, 9_990.0)),
                    Read(10_000.0, vec![done(1, 9_990.0)]),
                    Status(10_010.0, done(2, 10_005.0)),
                    Read(10_010.0, vec![done(1, 9_990.0)]),
                    Read(10_020.0, vec![done(2, 10_005.0), done(1, 9_990.0)]),
                ],
                shown(expect(&[1, 2], &[], Some(2), 3), &[1, 2]),
            ),
            (
                "runs that left the window before they could be read are missed, not recorded",
                10_000.0,
                vec![
                    Status(10_000.0, done(1, 9_990.0)),
                    Read(10_000.0, vec![done(1, 9_990.0)]),
                    // The API was out of reach for hours.
                    Status(30_000.0, done(3, 29_990.0)),
                    Read(
                        30_000.0,
                        vec![done(3, 29_990.0), done(2, 12_000.0), done(1, 9_990.0)],
                    ),
                ],
                shown(expect(&[1, 3], &[2], Some(3), 2), &[1, 3]),
            ),
            (
                "a pipeline deleted and created again starts a new ledger: its window counts \
                 from its new first sight",
                50_000.0,
                vec![
                    Status(50_000.0, done(2, 49_000.0)),
                    Read(50_000.0, vec![done(2, 49_000.0), done(1, 40_000.0)]),
                ],
                shown(expect(&[2], &[], Some(2), 1), &[2]),
            ),
            (
                "a restart records exactly what completed while the exporter was away, \
                 however long ago",
                10_000.0,
                vec![
                    Status(10_000.0, done(1, 9_990.0)),
                    Read(10_000.0, vec![done(1, 9_990.0)]),
                    Restart,
                    // Down for a day: runs 2 and 3 ended long before the window.
                    Status(100_000.0, done(4, 99_990.0)),
                    Read(
                        100_000.0,
                        vec![
                            done(4, 99_990.0),
                            done(3, 50_000.0),
                            done(2, 20_000.0),
                            done(1, 9_990.0),
                        ],
                    ),
                    // Settled again: the next read has the window's cutoff.
                    Status(100_010.0, done(5, 100_005.0)),
                    Read(100_010.0, vec![done(5, 100_005.0), done(4, 99_990.0)]),
                ],
                shown(expect(&[1, 2, 3, 4, 5], &[], Some(5), 3), &[1, 4, 5]),
            ),
            (
                "after a restart, runs the history no longer returns are counted as missed",
                10_000.0,
                vec![
                    Status(10_000.0, done(1, 9_990.0)),
                    Read(10_000.0, vec![done(1, 9_990.0)]),
                    Restart,
                    Status(100_000.0, done(5, 99_990.0)),
                    Read(100_000.0, vec![done(5, 99_990.0), done(4, 99_000.0)]),
                ],
                Outcome {
                    unseen: 2,
                    ..shown(expect(&[1, 4, 5], &[], Some(5), 2), &[1, 5])
                },
            ),
            (
                "a restart before the first read keeps the window from the first sight",
                10_000.0,
                vec![
                    Status(10_000.0, running(3)),
                    Restart,
                    Status(10_010.0, done(3, 10_005.0)),
                    Read(
                        10_010.0,
                        vec![done(3, 10_005.0), done(2, 9_000.0), done(1, 5_000.0)],
                    ),
                ],
                shown(expect(&[2, 3], &[], Some(3), 1), &[3]),
            ),
            (
                "a restart with nothing new makes no read and records nothing",
                10_000.0,
                vec![
                    Status(10_000.0, done(2, 9_990.0)),
                    Read(10_000.0, vec![done(2, 9_990.0), done(1, 9_900.0)]),
                    Restart,
                    Status(50_000.0, done(2, 9_990.0)),
                    Read(50_000.0, vec![done(2, 9_990.0)]),
                ],
                shown(expect(&[1, 2], &[], Some(2), 1), &[2]),
            ),
        ];
        for (name, first_seen, events, expected) in cases {
            assert_eq!(play(first_seen, events), expected, "{name}");
        }
    }

    #[test]
    fn the_first_read_goes_back_to_the_window_later_reads_to_the_floor() {
        let mut ledger = RunLedger::new(10_000.0);
        ledger.saw_latest(&running(9), RunKey::Number(9), 10_000.0, WINDOW);
        let first = ledger.history_read(10_500.0, WINDOW).expect("due");
        assert_eq!((first.floor, first.first, first.cutoff), (0, true, 6_400.0));
        // The first read goes on past the cutoff until a completed run is found.
        let page = [running(9), done(8, 6_000.0)];
        assert!(first.has_enough(&page, &page));
        assert!(!first.has_enough(&page[..1], &page[..1]));
        let mut runs = first.keep(vec![running(9), done(8, 6_000.0), done(7, 5_000.0)]);
        assert_eq!(
            runs.len(),
            2,
            "only the newest run before the cutoff is kept"
        );
        ledger.apply_history(&mut runs, first.cutoff);
        ledger.saw_latest(&done(10, 10_600.0), RunKey::Number(10), 10_600.0, WINDOW);
        let later = ledger.history_read(10_600.0, WINDOW).expect("due");
        assert_eq!(
            (later.floor, later.first, later.cutoff),
            (8, false, 7_000.0)
        );
        let page = [done(10, 10_600.0), running(9), done(8, 6_000.0)];
        assert!(later.has_enough(&page, &page));
        assert_eq!(later.keep(page.to_vec()).len(), 2);
    }

    #[test]
    fn recorded_runs_stay_bounded_and_remember_everything_older() {
        let mut recorded = RecordedRuns::default();
        for n in 1..=200 {
            assert!(!recorded.contains(n));
            recorded.insert(n);
            assert!(recorded.contains(n));
        }
        assert_eq!(recorded.numbers.len(), MAX_RECORDED);
        assert!(recorded.contains(1));
        assert!(!recorded.contains(201));
    }

    #[test]
    fn the_history_floor_stays_below_unfinished_runs() {
        let mut ledger = RunLedger {
            settled: 9,
            ..RunLedger::default()
        };
        assert_eq!(ledger.floor(), 9);
        ledger.unfinished.insert(7);
        assert_eq!(ledger.floor(), 6);
    }

    #[test]
    fn run_keys_name_a_run_by_id_or_number() {
        assert_eq!(
            RunKey::of(&done(4, 1.0)),
            Some(RunKey::Id {
                id: "run-4".into(),
                number: Some(4)
            })
        );
        let mut v3 = done(4, 1.0);
        v3.run_id = None;
        assert_eq!(RunKey::of(&v3), Some(RunKey::Number(4)));
        assert_eq!(RunKey::Number(4).selector(), RunSelector::Number(4));
        v3.run_number = None;
        assert_eq!(RunKey::of(&v3), None);
    }

    #[test]
    fn the_history_is_read_only_when_a_run_may_have_completed() {
        let key = |number: u64| RunKey::Id {
            id: format!("run-{number}"),
            number: Some(number),
        };
        // Before the first read nothing is settled; the previous poll's latest run decides.
        let read = |previous: Option<(u64, bool)>, now: (u64, bool)| {
            let previous_key = previous.map(|(n, _)| key(n));
            history_may_have_news(
                previous_key.as_ref(),
                previous.is_some_and(|(_, done)| done),
                &key(now.0),
                now.1,
                None,
            )
        };
        // First sight: read (back to the window).
        assert!(read(None, (5, false)));
        assert!(read(None, (5, true)));
        // Nothing changed.
        assert!(!read(Some((5, false)), (5, false)));
        assert!(!read(Some((5, true)), (5, true)));
        // The latest run completed.
        assert!(read(Some((5, false)), (5, true)));
        // The next run started after a completed one: nothing to record yet.
        assert!(!read(Some((5, true)), (6, false)));
        // ... or already completed too.
        assert!(read(Some((5, true)), (6, true)));
        // The previous one completed unseen, or runs happened in between.
        assert!(read(Some((5, false)), (6, false)));
        assert!(read(Some((5, true)), (7, false)));
        // Without run numbers nothing can be ruled out.
        let unnumbered = RunKey::Id {
            id: "b".into(),
            number: None,
        };
        let previous = RunKey::Id {
            id: "a".into(),
            number: None,
        };
        assert!(history_may_have_news(
            Some(&previous),
            true,
            &unnumbered,
            false,
            Some(4),
        ));
        // Once read, the runs settled decide, whatever the previous poll saw.
        let read_settled = |settled: u64, now: (u64, bool)| {
            history_may_have_news(Some(&key(5)), false, &key(now.0), now.1, Some(settled))
        };
        // Run 6 completed and was recorded by a read that saw 7 start: nothing new.
        assert!(!read_settled(6, (7, false)));
        // Run 7 completed since.
        assert!(read_settled(6, (7, true)));
        // Run 7 started and completed unseen; 8 runs now.
        assert!(read_settled(6, (8, false)));
        // The latest run was recorded already.
        assert!(!read_settled(7, (7, true)));
    }
}
