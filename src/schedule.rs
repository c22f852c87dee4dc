//! When each target polls, and whether its schedule is still alive.
//!
//! A target polls once at start, then on its schedule: a fixed `interval`, measured on the
//! monotonic clock, or a cron `schedule`, read on the wall clock of its `schedule_time_zone`.
//! Both keep firing after the process was paused (SIGSTOP, a frozen container, a suspended VM),
//! after the wall clock stepped forward or back, and after a poll that overran: ticks missed
//! meanwhile are skipped, never replayed as a burst, and the next one comes at once.
//!
//! tokio-cron-scheduler is not used. Its repeated jobs compute the next tick as the previous
//! one plus the interval and never fire again once that tick is behind them (upstream issue
//! #113), and its cron jobs wait for a tick computed before a backward clock step, so a step back
//! of an hour stops polling for an hour. croner, the parser it uses, is used here directly.
//!
//! The [`Heartbeat`] is the watchdog's view of a schedule: each poll start moves its deadline,
//! and a target past its deadline is stalled (shown on `/healthz` and in a metric).

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

pub use crate::clock::{SystemClock, WallClock};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How often a cron ticker reads the wall clock again while it waits, so that a clock step is
/// noticed within this long.
const CRON_RECHECK: Duration = Duration::from_secs(1);
/// Occurrences of a cron expression looked at to find its period.
const PERIOD_SAMPLES: usize = 16;
/// Poll starts a schedule may miss before the watchdog calls it stalled.
const MISSED_STARTS: u32 = 3;

/// A cron expression with seconds (6 or 7 fields), in the one dialect the exporter accepts.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "{text:?} has {fields} fields; use cron with seconds, e.g. \"*/30 * * * * *\""
        ));
    }
    // Day of month and day of week must both match, as before this module existed.
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(text)
        .map_err(|err| format!("{text:?} is not a valid cron expression: {err}"))
}

/// An IANA time zone name such as `UTC` or `Asia/Shanghai`.
pub fn parse_zone(text: &str) -> Result<Tz, String> {
    Tz::from_str(text.trim()).map_err(|_| {
        format!("{text:?} is not an IANA time zone name such as \"UTC\" or \"Asia/Shanghai\"")
    })
}

/// When a target polls.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every so often, on the monotonic clock.
    Every(Duration),
    /// At the times a cron expression names, in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The zone its fields are read in.
        zone: Tz,
    },
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron { cron: a, zone: x }, Schedule::Cron { cron: b, zone: y }) => {
                a.as_str() == b.as_str() && x == y
            }
            _ => false,
        }
    }
}

impl Schedule {
    /// A cron schedule from its text and zone name.
    pub fn cron(text: &str, zone: &str) -> Result<Schedule, String> {
        Ok(Schedule::Cron {
            cron: Box::new(parse_cron(text)?),
            zone: parse_zone(zone)?,
        })
    }

    /// The time between two polls: the interval, or the shortest gap between the cron
    /// expression's next occurrences after `now`.
    pub fn period(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Every(every) => *every,
            Schedule::Cron { cron, zone } => {
                let times: Vec<DateTime<Tz>> = cron
                    .iter_after(now.trunc_subsecs(0).with_timezone(zone))
                    .take(PERIOD_SAMPLES)
                    .collect();
                times
                    .windows(2)
                    .filter_map(|pair| (pair[1] - pair[0]).to_std().ok())
                    .min()
                    .unwrap_or(Duration::from_secs(24 * 3600))
            }
        }
    }

    /// How long after a poll starts at `now` the next one must have started before the
    /// schedule counts as stalled: three ticks, plus the part of `poll_timeout` longer than the
    /// time to the first of them (while a poll runs, ticks are skipped).
    pub fn stall_after(&self, now: DateTime<Utc>, poll_timeout: Duration) -> Duration {
        match self {
            Schedule::Every(every) => {
                let overrun = poll_timeout.saturating_sub(*every);
                every.saturating_mul(MISSED_STARTS) + overrun
            }
            Schedule::Cron { cron, zone } => {
                let mut ticks = cron
                    .iter_after(now.trunc_subsecs(0).with_timezone(zone))
                    .map(|t| (t.with_timezone(&Utc) - now).to_std().unwrap_or_default());
                let first = ticks.next().unwrap_or_default();
                let third = ticks
                    .nth(MISSED_STARTS as usize - 2)
                    .unwrap_or(first.saturating_mul(MISSED_STARTS));
                third + poll_timeout.saturating_sub(first)
            }
        }
    }

    /// A ticker of this schedule; its first tick comes at once.
    pub fn ticker(&self, clock: Arc<dyn WallClock>) -> Ticker {
        let kind = match self {
            Schedule::Every(every) => {
                let mut interval = tokio::time::interval(*every);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                TickerKind::Every(interval)
            }
            Schedule::Cron { cron, zone } => TickerKind::Cron {
                cron: cron.clone(),
                zone: *zone,
                clock,
                next: None,
            },
        };
        Ticker { kind }
    }
}

/// Yields the ticks of one schedule.
pub struct Ticker {
    kind: TickerKind,
}

enum TickerKind {
    Every(Interval),
    Cron {
        cron: Box<Cron>,
        zone: Tz,
        clock: Arc<dyn WallClock>,
        /// The occurrence waited for; none before the first tick (which comes at once).
        next: Option<DateTime<Utc>>,
    },
}

impl Ticker {
    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        match &mut self.kind {
            TickerKind::Every(interval) => {
                interval.tick().await;
            }
            TickerKind::Cron {
                cron,
                zone,
                clock,
                next,
            } => loop {
                let now = clock.now();
                let after_now = next_occurrence(cron, *zone, now);
                let Some(due) = *next else {
                    *next = after_now;
                    return;
                };
                if now >= due {
                    // However many occurrences passed meanwhile, one tick, then the next to come.
                    *next = after_now;
                    return;
                }
                // The clock stepped back: an occurrence comes before the one waited for.
                let due = match after_now {
                    Some(earlier) if earlier < due => {
                        *next = Some(earlier);
                        earlier
                    }
                    _ => due,
                };
                let wait = (due - now).to_std().unwrap_or_default();
                tokio::time::sleep(wait.min(CRON_RECHECK)).await;
            },
        }
    }
}

/// The first occurrence of `cron` strictly after `now`.
fn next_occurrence(cron: &Cron, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Occurrences are whole seconds; croner would carry the fraction of `now` over.
    let now = now.trunc_subsecs(0);
    cron.find_next_occurrence(&now.with_timezone(&zone), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When a schedule must next start a poll: the watchdog's view of one target.
#[derive(Debug)]
pub struct Heartbeat {
    deadline: Mutex<Instant>,
}

impl Heartbeat {
    /// A heartbeat whose first poll must start within `allowance`.
    pub fn new(allowance: Duration) -> Heartbeat {
        Heartbeat {
            deadline: Mutex::new(Instant::now() + allowance),
        }
    }

    /// A poll started; the next must start within `allowance`.
    pub fn beat(&self, allowance: Duration) {
        let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        *deadline = Instant::now() + allowance;
    }

    /// How long the schedule is past its deadline, if it is.
    pub fn overdue(&self) -> Option<Duration> {
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        Instant::now()
            .checked_duration_since(deadline)
            .filter(|late| !late.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock that follows tokio's (paused) clock from a start, and can be stepped.
    struct SteppedClock {
        start: DateTime<Utc>,
        origin: Instant,
        step: Mutex<chrono::TimeDelta>,
    }

    impl SteppedClock {
        fn at(text: &str) -> Arc<SteppedClock> {
            Arc::new(SteppedClock {
                start: DateTime::parse_from_rfc3339(text)
                    .expect("a time")
                    .with_timezone(&Utc),
                origin: Instant::now(),
                step: Mutex::new(chrono::TimeDelta::zero()),
            })
        }

        fn step(&self, seconds: i64) {
            *self.step.lock().expect("lock") += chrono::TimeDelta::seconds(seconds);
        }
    }

    impl WallClock for SteppedClock {
        fn now(&self) -> DateTime<Utc> {
            let elapsed = chrono::TimeDelta::from_std(self.origin.elapsed()).expect("elapsed");
            self.start + elapsed + *self.step.lock().expect("lock")
        }
    }

    /// Seconds from `origin` to each of the next `n` ticks.
    async fn ticks(ticker: &mut Ticker, origin: Instant, n: usize) -> Vec<f64> {
        let mut at = Vec::new();
        for _ in 0..n {
            ticker.tick().await;
            at.push((Instant::now() - origin).as_secs_f64());
        }
        at
    }

    fn every(seconds: u64) -> Schedule {
        Schedule::Every(Duration::from_secs(seconds))
    }

    fn cron(text: &str) -> Schedule {
        Schedule::cron(text, "UTC").expect("a schedule")
    }

    const START: &str = "2026-11-30T12:00:00.250Z";

    #[tokio::test(start_paused = true)]
    async fn an_interval_ticks_at_once_then_every_period() {
        let origin = Instant::now();
        let mut ticker = every(10).ticker(SteppedClock::at(START));
        assert_eq!(ticks(&mut ticker, origin, 3).await, [0.0, 10.0, 20.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_period_gives_one_tick_then_the_period() {
        for schedule in [every(10), cron("*/10 * * * * *")] {
            let clock = SteppedClock::at(START);
            let mut ticker = schedule.ticker(clock);
            ticker.tick().await;
            // The process is stopped for 65 s: nothing polls the ticker.
            tokio::time::sleep(Duration::from_secs(65)).await;
            let resumed = Instant::now();
            let after = ticks(&mut ticker, resumed, 3).await;
            assert_eq!(after[0], 0.0, "{schedule:?}: at once after the pause");
            assert!(
                after[1] > 0.0 && after[1] <= 10.0,
                "{schedule:?}: {after:?}"
            );
            assert!(
                (after[2] - after[1] - 10.0).abs() < 1e-9,
                "{schedule:?}: {after:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrunning_poll_skips_ticks_instead_of_bursting() {
        let origin = Instant::now();
        let mut ticker = every(10).ticker(SteppedClock::at(START));
        ticker.tick().await;
        // The consumer is busy for 25 s (a poll that overran): the ticks at 10 and 20 are lost.
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(ticks(&mut ticker, origin, 3).await, [25.0, 30.0, 40.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn cron_ticks_at_its_occurrences_in_its_zone() {
        let origin = Instant::now();
        let mut ticker = cron("*/10 * * * * *").ticker(SteppedClock::at(START));
        // At once, then at :10 and :20 of the wall clock (which started at :00.25).
        assert_eq!(ticks(&mut ticker, origin, 3).await, [0.0, 9.75, 19.75]);
        // 09:00 in Shanghai is 01:00 UTC.
        let shanghai = Schedule::cron("0 0 9 * * *", "Asia/Shanghai").expect("a schedule");
        let Schedule::Cron { cron, zone } = &shanghai else {
            panic!("a cron schedule")
        };
        let now = DateTime::parse_from_rfc3339(START)
            .expect("a time")
            .with_timezone(&Utc);
        let next = next_occurrence(cron, *zone, now).expect("an occurrence");
        assert_eq!(next.to_rfc3339(), "2026-12-01T01:00:00+00:00");
    }

    #[tokio::test(start_paused = true)]
    async fn cron_keeps_ticking_when_the_wall_clock_steps() {
        let clock = SteppedClock::at(START);
        let origin = Instant::now();
        let mut ticker = cron("*/10 * * * * *").ticker(clock.clone());
        assert_eq!(ticks(&mut ticker, origin, 2).await, [0.0, 9.75]);
        // One hour back: the next tick is the next occurrence of the new time, 10 s away, not
        // the one an hour ahead that was waited for.
        clock.step(-3600);
        assert_eq!(ticks(&mut ticker, origin, 2).await, [19.75, 29.75]);
        // One hour forward: one tick at once (within the re-check), then on the new time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        clock.step(3600);
        let stepped = ticks(&mut ticker, origin, 3).await;
        assert!(
            stepped[0] <= 30.25 + CRON_RECHECK.as_secs_f64(),
            "{stepped:?}"
        );
        assert_eq!(&stepped[1..], [39.75, 49.75]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_ignores_wall_clock_steps() {
        let clock = SteppedClock::at(START);
        let origin = Instant::now();
        let mut ticker = every(10).ticker(clock.clone());
        ticker.tick().await;
        clock.step(-3600);
        ticker.tick().await;
        clock.step(7200);
        ticker.tick().await;
        assert_eq!((Instant::now() - origin).as_secs_f64(), 20.0);
    }

    #[test]
    fn periods_and_stall_allowances() {
        let now = DateTime::parse_from_rfc3339(START)
            .expect("a time")
            .with_timezone(&Utc);
        let s = Duration::from_secs;
        assert_eq!(every(30).period(now), s(30));
        assert_eq!(cron("*/15 * * * * *").period(now), s(15));
        // Minutes 0 and 5 of each hour: the shortest gap.
        assert_eq!(cron("0 0,5 * * * *").period(now), s(300));
        assert_eq!(every(30).stall_after(now, s(30)), s(90));
        // A poll may run for its whole deadline, during which ticks are skipped.
        assert_eq!(every(1).stall_after(now, s(10)), s(12));
        // From 12:00:00.25: ticks at :15, :30, :45, the first 14.75 s away.
        assert_eq!(
            cron("*/15 * * * * *").stall_after(now, s(15)),
            Duration::from_millis(44_750 + 250)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_is_overdue_only_past_its_allowance() {
        let heartbeat = Heartbeat::new(Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(heartbeat.overdue(), None);
        heartbeat.beat(Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(heartbeat.overdue(), None, "exactly at the deadline");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(heartbeat.overdue(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn cron_and_zone_mistakes_are_explained() {
        assert!(parse_cron("* * * * *").unwrap_err().contains("5 fields"));
        assert!(
            parse_cron("0 0 25 * * *")
                .unwrap_err()
                .contains("not a valid cron")
        );
        assert!(parse_zone("Mars/Olympus").unwrap_err().contains("IANA"));
        assert_eq!(parse_zone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
    }
}
