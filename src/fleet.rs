//! The running pollers: one per target, each on its own schedule, replaced on a configuration
//! reload; the garbage collector and the watchdog beside them.
//!
//! A reload (SIGHUP, or the configuration file's content changed) loads and validates the file
//! again. An invalid one is logged and counted, and the running configuration stays. A valid one
//! builds a new API client (credentials and endpoints may have changed) and a new poller per
//! target. What each target recorded is in the store, so the poller of a target that stays
//! carries on with it: no run is recorded twice and no histogram restarts. A target that left
//! the configuration keeps its series for its `gc_after`, then the garbage collector drops them
//! (unless it came back). `server.listen`, `[metrics]` and `[sharding]` need a restart: a change
//! to them is logged and not applied.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::{SystemClock, WallClock};
use crate::codearts::{self, Client};
use crate::config::{Config, ConfigError, Deployments, ShardingConfig, TargetConfig};
use crate::metrics::Metrics;
use crate::poller::{Settings, TargetPoller};
use crate::reload::ReloadTrigger;
use crate::store::Store;

/// How often the watchdog looks at every target's schedule.
const WATCHDOG_EVERY: Duration = Duration::from_secs(1);
/// How often the garbage collector looks for pipelines and targets whose grace period ended.
const GC_EVERY: Duration = Duration::from_secs(1);

/// Could not start or change the pollers.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The API client could not be built from the configuration.
    #[error("{0}")]
    Client(#[from] codearts::Error),
    /// The new configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

struct Running {
    /// The configuration in effect (the parts a reload cannot change are compared with it).
    config: Config,
    /// Each target's schedule and the polls it started.
    schedules: Vec<ScheduleTask>,
}

/// Every target's poller and its schedule.
pub struct Fleet {
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    /// Fixed at start-up: `[metrics]` and `[sharding]` do not reload.
    settings: Settings,
    clock: Arc<dyn WallClock>,
    pollers: RwLock<Vec<Arc<TargetPoller>>>,
    running: Mutex<Running>,
    /// The watchdog and the garbage collector.
    housekeeping: std::sync::Mutex<JoinSet<()>>,
}

impl Fleet {
    /// Starts a poller per target of `config`: one poll at once, then on its schedule.
    pub async fn start(
        config: Config,
        client: Client,
        metrics: Arc<Metrics>,
        store: Arc<Store>,
        started_at: f64,
    ) -> Result<Arc<Fleet>, FleetError> {
        let settings = Settings {
            started_at,
            record_jobs: config.metrics.jobs,
            sharding: config.sharding,
        };
        let clock: Arc<dyn WallClock> = Arc::new(SystemClock);
        store.set_listed(listed(&config));
        store.set_deployments(deployments(&config));
        let pollers: Vec<Arc<TargetPoller>> = config
            .targets
            .iter()
            .map(|target| {
                Arc::new(TargetPoller::new(
                    target.clone(),
                    client.clone(),
                    store.clone(),
                    settings,
                    poll_timeout(target, &config, clock.as_ref()),
                    clock.clone(),
                ))
            })
            .collect();
        // Every configured target has taken what the state file kept of it.
        store.forget_unclaimed();
        let schedules = pollers
            .iter()
            .map(|poller| run_schedule(poller.clone(), clock.clone()))
            .collect();
        let fleet = Arc::new(Fleet {
            metrics,
            store,
            settings,
            clock,
            pollers: RwLock::new(pollers),
            running: Mutex::new(Running { config, schedules }),
            housekeeping: std::sync::Mutex::new(JoinSet::new()),
        });
        if let Ok(mut housekeeping) = fleet.housekeeping.lock() {
            housekeeping.spawn(watch_schedules(Arc::downgrade(&fleet)));
            housekeeping.spawn(collect_garbage(Arc::downgrade(&fleet)));
        }
        Ok(fleet)
    }

    /// Targets whose schedule has started no poll for too long (see [`crate::schedule`]), with
    /// how long they are overdue.
    pub fn stalled(&self) -> Vec<(String, Duration)> {
        self.current()
            .iter()
            .filter_map(|p| Some((p.label().to_string(), p.stalled_for()?)))
            .collect()
    }

    /// Targets that have not completed a successful poll yet.
    pub fn not_ready(&self) -> Vec<String> {
        self.current()
            .iter()
            .filter(|p| !p.is_ready())
            .map(|p| p.label().to_string())
            .collect()
    }

    /// Number of targets polled.
    fn len(&self) -> usize {
        self.current().len()
    }

    fn current(&self) -> Vec<Arc<TargetPoller>> {
        match self.pollers.read() {
            Ok(pollers) => pollers.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Applies a newly loaded configuration, or logs and counts why it cannot be.
    pub async fn reload(self: &Arc<Self>, loaded: Result<Config, ConfigError>) {
        let result = match loaded {
            Ok(config) => {
                // As at start-up: a reload is when a changed file shows its warnings.
                for warning in config.warnings() {
                    tracing::warn!("{warning}");
                }
                self.apply(config).await
            }
            Err(err) => Err(FleetError::Config(err)),
        };
        match &result {
            Ok(()) => tracing::info!(targets = self.len(), "configuration reloaded"),
            Err(err) => {
                tracing::error!(error = %err, "configuration reload rejected; the running configuration stays")
            }
        }
        self.metrics.config_reloaded(result.is_ok());
    }

    async fn apply(self: &Arc<Self>, mut config: Config) -> Result<(), FleetError> {
        let client = Client::new(&config.codearts, &config.auth, self.metrics.clone())?;
        let mut running = self.running.lock().await;
        warn_about_restart_only_changes(&running.config, &config);

        // Stop every schedule: polls in flight are cut, and what they finished is in the store.
        for schedule in running.schedules.drain(..) {
            schedule.stop().await;
        }
        let labels: Vec<&str> = config.targets.iter().map(TargetConfig::label).collect();
        self.store.retire_others(&labels);
        self.store.set_listed(listed(&config));
        self.store.set_deployments(deployments(&config));
        let known: HashSet<String> = self
            .current()
            .iter()
            .map(|p| p.label().to_string())
            .collect();
        let mut pollers = Vec::new();
        for target in &config.targets {
            // A target added now backfills the window before now.
            let started_at = if known.contains(target.label()) {
                self.settings.started_at
            } else {
                self.clock.unix_seconds()
            };
            let poller = Arc::new(TargetPoller::new(
                target.clone(),
                client.clone(),
                self.store.clone(),
                Settings {
                    started_at,
                    ..self.settings
                },
                poll_timeout(target, &config, self.clock.as_ref()),
                self.clock.clone(),
            ));
            running
                .schedules
                .push(run_schedule(poller.clone(), self.clock.clone()));
            pollers.push(poller);
        }
        match self.pollers.write() {
            Ok(mut current) => *current = pollers,
            Err(poisoned) => *poisoned.into_inner() = pollers,
        }
        // What is in effect: the restart-only sections stay as they started.
        config.server = running.config.server.clone();
        config.metrics = running.config.metrics.clone();
        config.sharding = running.config.sharding;
        config.traces = running.config.traces.clone();
        running.config = config;
        Ok(())
    }

    /// Stops every schedule, the polls in flight, the watchdog and the garbage collector, and
    /// waits until they have ended.
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        for schedule in running.schedules.drain(..) {
            schedule.stop().await;
        }
        let housekeeping = match self.housekeeping.lock() {
            Ok(mut tasks) => std::mem::take(&mut *tasks),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let mut housekeeping = housekeeping;
        housekeeping.shutdown().await;
    }

    /// Stops every schedule as a wedged scheduler would, for the watchdog's test.
    #[cfg(test)]
    async fn stall_schedules(&self) {
        for schedule in self.running.lock().await.schedules.drain(..) {
            schedule.stop().await;
        }
    }

    /// Reloads on SIGHUP and when the content of `path` changes; runs until the process ends.
    /// `shard` is the command line's `--shard`, which overrides the file's `[sharding]`.
    pub async fn watch(self: Arc<Self>, path: PathBuf, shard: Option<ShardingConfig>) {
        let mut trigger = ReloadTrigger::new(vec![path.clone()], "the configuration");
        loop {
            let reason = trigger.next().await;
            tracing::info!(path = %path.display(), reason, "reloading the configuration");
            let loaded = Config::load(&path).map(|mut config| {
                if let Some(shard) = shard {
                    config.sharding = shard;
                }
                config
            });
            self.reload(loaded).await;
        }
    }
}

/// One target's schedule running: its ticker and the polls it started.
struct ScheduleTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ScheduleTask {
    /// Stops the ticker, cuts the polls in flight, and waits until they have ended.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "a schedule task ended abnormally");
        }
    }
}

/// Runs `poller` on its schedule, one poll at once, and its backfill beside, until stopped.
fn run_schedule(poller: Arc<TargetPoller>, clock: Arc<dyn WallClock>) -> ScheduleTask {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut ticker = poller.schedule().ticker(clock);
        let mut polls = JoinSet::new();
        // Runs until the schedule stops, which cuts it (what it recorded stays recorded). Should
        // it ever end, it is not polled again: a finished future must not be.
        let backfill = poller.backfill();
        tokio::pin!(backfill);
        let mut backfill_ended = false;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                () = &mut backfill, if !backfill_ended => backfill_ended = true,
                () = ticker.tick() => {
                    // Each poll in its own task: a slow target never delays another, and an
                    // overrunning poll makes the next tick a skip (counted), not a wait.
                    let poller = poller.clone();
                    polls.spawn(async move { poller.poll().await });
                }
                Some(_) = polls.join_next(), if !polls.is_empty() => {}
            }
        }
        // Polls are cancellation-safe: what a cut poll finished is recorded, the rest is read
        // by the next poll.
        let in_flight = polls.len();
        if in_flight > 0 {
            tracing::info!(
                target_name = poller.label(),
                in_flight,
                "schedule stopped; the poll in flight is cut"
            );
        }
        if poller.is_backfilling() {
            tracing::info!(
                target_name = poller.label(),
                "schedule stopped; the backfill reads in flight are cut"
            );
        }
        polls.shutdown().await;
    });
    ScheduleTask { stop, task }
}

/// Which target lists each pipeline in its `pipeline_ids`: (project, pipeline) → target. Two
/// targets never list the same one (the configuration refuses it).
fn listed(config: &Config) -> HashMap<(String, String), String> {
    config
        .targets
        .iter()
        .flat_map(|target| {
            target.pipeline_ids.iter().map(|id| {
                (
                    (target.project_id.clone(), id.clone()),
                    target.label().to_string(),
                )
            })
        })
        .collect()
}

/// The `[[deployments]]` entries of `config` (checked when it was loaded).
fn deployments(config: &Config) -> Deployments {
    Deployments::new(&config.deployments).unwrap_or_else(|err| {
        tracing::error!(error = %err, "[[deployments]] ignored");
        Deployments::default()
    })
}

/// The deadline of each poll of `target`.
fn poll_timeout(target: &TargetConfig, config: &Config, clock: &dyn WallClock) -> Duration {
    target.poll_deadline(clock.now(), config.codearts.timeout)
}

/// The watchdog: sets each target's `polling_stalled` and logs when a schedule stalls or
/// recovers. `/healthz` asks the fleet directly.
async fn watch_schedules(fleet: Weak<Fleet>) {
    let mut stalled: HashSet<String> = HashSet::new();
    // Deployment entries that select nothing are worth a word once every target has polled.
    let mut deployments_checked = false;
    let mut ticks = tokio::time::interval(WATCHDOG_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let Some(fleet) = fleet.upgrade() else {
            return;
        };
        if !deployments_checked && fleet.current().iter().all(|poller| poller.is_ready()) {
            fleet.store.warn_about_unused_deployments();
            deployments_checked = true;
        }
        for poller in fleet.current() {
            let label = poller.label();
            match poller.check_stalled() {
                Some(overdue) if stalled.insert(label.to_string()) => tracing::error!(
                    target_name = label,
                    overdue_s = overdue.as_secs(),
                    "the target's schedule has started no poll for three periods; /healthz fails"
                ),
                None if stalled.remove(label) => {
                    tracing::info!(target_name = label, "the target's schedule polls again")
                }
                _ => {}
            }
        }
    }
}

/// The garbage collector's schedule: the store removes what is gone; the exporter's own series
/// of a removed target go with it.
async fn collect_garbage(fleet: Weak<Fleet>) {
    let mut ticks = tokio::time::interval(GC_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let Some(fleet) = fleet.upgrade() else {
            return;
        };
        fleet.store.collect_garbage();
        // What it removed leaves the state file too.
        fleet.store.commit_removals().await;
    }
}

/// Logs the changes a reload does not apply.
fn warn_about_restart_only_changes(running: &Config, new: &Config) {
    if running.server.listen != new.server.listen {
        tracing::warn!(
            running = %running.server.listen,
            new = %new.server.listen,
            "server.listen changed: takes effect after a restart"
        );
    }
    let as_json = |config: &Config| serde_json::to_value(&config.metrics).ok();
    if as_json(running) != as_json(new) {
        tracing::warn!("[metrics] changed: takes effect after a restart");
    }
    if running.sharding != new.sharding {
        tracing::warn!("[sharding] changed: takes effect after a restart");
    }
    // The trace exporter starts once, with the store whose outbox it delivers.
    if running.traces != new.traces {
        tracing::warn!("[traces] changed: takes effect after a restart");
    }
    // The store is opened once, at start-up: it holds the running state.
    if running.state != new.state {
        let shown = |state: &crate::config::StateConfig| match &state.path {
            Some(path) => path.display().to_string(),
            None => "none".to_string(),
        };
        tracing::warn!(
            running = %shown(&running.state),
            new = %shown(&new.state),
            "state.path changed: takes effect after a restart"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two targets polling every second with a 1 s deadline (stalled after 3 s without a poll
    /// start), against an endpoint that refuses connections: polls start and fail at once,
    /// which is all the watchdog looks at.
    fn config() -> Config {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let mut text = format!(
            "[codearts]\nendpoint = \"{endpoint}\"\ntimeout = \"1s\"\n\
             [auth]\nmethod = \"token\"\ntoken = \"t\"\n"
        );
        for name in ["a", "b"] {
            // CodeArts ids: 32 digits and lower-case letters.
            let project = name.repeat(32);
            let pipeline = format!("{name}{}", "0".repeat(31));
            text.push_str(&format!(
                "[[targets]]\nname = \"{name}\"\nproject_id = \"{project}\"\n\
                 pipeline_ids = [\"{pipeline}\"]\ninterval = \"1s\"\n"
            ));
        }
        Config::from_toml(&text).expect("a valid configuration")
    }

    /// Waits up to 20 s, checking every 100 ms, until `done` holds.
    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of `family` for `target` in a rendering of `metrics`.
    fn sample(metrics: &Metrics, family: &str, target: &str) -> Option<f64> {
        let prefix = format!("{family}{{target=\"{target}\"}} ");
        String::from_utf8(metrics.render())
            .expect("utf-8")
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
    }

    /// Polls of `target` that have ended.
    fn polls(metrics: &Metrics, target: &str) -> f64 {
        sample(
            metrics,
            "codearts_exporter_poll_duration_seconds_count",
            target,
        )
        .unwrap_or(0.0)
    }

    /// Waits until the watchdog's gauge of both targets reads `value`.
    async fn wait_for_stalled_gauge(metrics: &Metrics, value: f64) {
        wait_for(&format!("the stalled gauges at {value}"), || {
            ["a", "b"].iter().all(|target| {
                sample(metrics, "codearts_exporter_polling_stalled", target) == Some(value)
            })
        })
        .await;
    }

    /// Waits until both targets have ended two more polls than `before`.
    async fn wait_for_two_more_polls(metrics: &Metrics, before: [f64; 2]) {
        wait_for("two more polls of each target", || {
            polls(metrics, "a") >= before[0] + 2.0 && polls(metrics, "b") >= before[1] + 2.0
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watchdog_names_stalled_schedules_until_a_reload_restarts_them() {
        let config = config();
        let store = Arc::new(Store::new(&config.metrics).expect("store"));
        let metrics = Arc::new(Metrics::new(&store).expect("metrics"));
        let client = Client::new(&config.codearts, &config.auth, metrics.clone()).expect("client");
        let fleet = Fleet::start(
            config.clone(),
            client,
            metrics.clone(),
            store,
            crate::clock::unix_now(),
        )
        .await
        .expect("a fleet");
        // Both schedules poll, and the watchdog sees no stall.
        wait_for_two_more_polls(&metrics, [0.0, 0.0]).await;
        assert_eq!(fleet.stalled(), Vec::new());
        wait_for_stalled_gauge(&metrics, 0.0).await;

        fleet.stall_schedules().await;
        // Each target's deadline passes on its own: wait until both are named.
        wait_for("both targets stalled", || {
            let mut stalled: Vec<String> = fleet.stalled().into_iter().map(|(t, _)| t).collect();
            stalled.sort();
            stalled == ["a", "b"]
        })
        .await;
        wait_for_stalled_gauge(&metrics, 1.0).await;

        // A reload starts the schedules again: they poll, and the watchdog clears the gauges.
        let before = [polls(&metrics, "a"), polls(&metrics, "b")];
        fleet.reload(Ok(config)).await;
        wait_for_two_more_polls(&metrics, before).await;
        assert_eq!(fleet.stalled(), Vec::new());
        wait_for_stalled_gauge(&metrics, 0.0).await;
        fleet.shutdown().await;
    }
}
