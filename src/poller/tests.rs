//! The heartbeat through the poller, in paused time: the poller's wall clock follows tokio's
//! clock, so a cron schedule's deadline (read on the wall clock) and the heartbeat's (on tokio's)
//! move together.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

use super::{Settings, TargetPoller};
use crate::clock::WallClock;
use crate::codearts::Client;
use crate::config::{AuthConfig, CodeArtsConfig, MetricsConfig, ShardingConfig, TargetConfig};
use crate::metrics::Metrics;
use crate::store::Store;

/// A wall clock that starts at a given time and then follows tokio's (paused) clock.
struct FollowingClock {
    start: DateTime<Utc>,
    origin: Instant,
}

impl WallClock for FollowingClock {
    fn now(&self) -> DateTime<Utc> {
        self.start + TimeDelta::from_std(self.origin.elapsed()).expect("elapsed")
    }
}

/// A poller of a target with no pipelines (a poll makes no request) on `schedule` or every
/// `interval`, with a 5 s poll time-out; its metrics, and its wall clock.
fn poller(
    schedule: Option<&str>,
    interval: Option<Duration>,
) -> (TargetPoller, Arc<Metrics>, Arc<FollowingClock>) {
    let target = TargetConfig {
        name: Some("beat".into()),
        schedule: schedule.map(str::to_string),
        interval,
        ..TargetConfig::new("0123456789abcdef0123456789abcdef".into())
    };
    let store = Arc::new(Store::new(&MetricsConfig::default()).expect("store"));
    let metrics = Arc::new(Metrics::new(&store).expect("metrics"));
    let codearts = CodeArtsConfig {
        // Never called: the target has no pipelines.
        endpoint: Some("http://127.0.0.1:9".into()),
        iam_endpoint: Some("http://127.0.0.1:9".into()),
        ..CodeArtsConfig::default()
    };
    let client = Client::new(&codearts, &AuthConfig::token("t"), metrics.clone()).expect("client");
    let clock = Arc::new(FollowingClock {
        start: DateTime::parse_from_rfc3339("2026-11-30T12:00:00.250Z")
            .expect("a time")
            .with_timezone(&Utc),
        origin: Instant::now(),
    });
    let settings = Settings {
        started_at: clock.unix_seconds(),
        record_jobs: false,
        sharding: ShardingConfig::default(),
    };
    let poller = TargetPoller::new(
        target,
        client,
        store,
        settings,
        Duration::from_secs(5),
        clock.clone(),
    );
    (poller, metrics, clock)
}

/// The value of the target's series `name` in the rendered metrics.
fn gauge(metrics: &Metrics, name: &str) -> f64 {
    let text = String::from_utf8(metrics.render()).expect("UTF-8");
    let prefix = format!("{name}{{target=\"beat\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .expect("a number")
}

#[tokio::test(start_paused = true)]
async fn a_schedule_that_starts_no_poll_for_three_periods_is_stalled_until_a_poll() {
    // Both tick every 10 s: the interval is stalled 30 s after a poll starts, the cron schedule
    // at its third tick after it (29.75 s after the start at 12:00:00.250, 28.75 s after the poll
    // at 12:00:31.250); neither's first tick is nearer than the poll time-out, which would add
    // the rest of it.
    let rows = [
        ("every 10 s", None, Some(Duration::from_secs(10))),
        ("cron every 10 s", Some("*/10 * * * * *"), None),
    ];
    for (name, schedule, interval) in rows {
        let (poller, metrics, clock) = poller(schedule, interval);
        let stalled = |at: &str| {
            let overdue = poller.check_stalled();
            let shown = gauge(&metrics, "codearts_exporter_polling_stalled");
            assert_eq!(shown == 1.0, overdue.is_some(), "{name} {at}: {overdue:?}");
            overdue.is_some()
        };
        assert!(!stalled("at start"));
        tokio::time::advance(Duration::from_secs(28)).await;
        assert!(!stalled("28 s without a poll"));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(stalled("31 s without a poll"));
        assert!(poller.stalled_for().is_some(), "{name}");

        poller.poll().await;
        assert!(!stalled("just after a poll"));
        // The poll's start is stamped by the same clock.
        assert_eq!(
            gauge(
                &metrics,
                "codearts_exporter_last_poll_start_timestamp_seconds"
            ),
            clock.unix_seconds(),
            "{name}"
        );
        tokio::time::advance(Duration::from_secs(28)).await;
        assert!(!stalled("28 s after the poll"));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(stalled("31 s after the poll"));
    }
}
