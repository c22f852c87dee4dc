//! The running pollers: one per target, each on its own schedule, replaced on a configuration
//! reload without losing what they recorded.
//!
//! A reload (SIGHUP, or the configuration file's content changed) loads and validates the file
//! again. An invalid one is logged and counted, and the running configuration stays. A valid one
//! builds a new API client (credentials and endpoints may have changed) and a new poller per
//! target; a target that was already running hands its pipelines' state and series to its
//! successor, so no run is recorded twice and no histogram restarts. A target that left the
//! configuration keeps its series for its `gc_after`, then loses them (unless it came back).
//! `server.listen`, `[metrics]` and `[sharding]` need a restart: a change to them is logged and
//! not applied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

use crate::codearts::{self, Client};
use crate::config::{Config, ConfigError, Schedule, ShardingConfig};
use crate::metrics::Metrics;
use crate::poller::{Handover, Settings, TargetPoller};

/// How often the configuration file is compared with the one running.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Could not start or change the pollers.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// tokio-cron-scheduler refused a job or could not start.
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    /// The API client could not be built from the configuration.
    #[error("{0}")]
    Client(#[from] codearts::Error),
    /// The new configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// A target that left the configuration, kept until its grace period ends.
struct Retired {
    handover: Handover,
    /// Distinguishes this retirement from a later one of the same label.
    generation: u64,
}

struct Running {
    /// The configuration in effect (the parts a reload cannot change are compared with it).
    config: Config,
    jobs: Vec<Uuid>,
    retired: HashMap<String, Retired>,
    generation: u64,
}

/// Every target's poller and its schedule.
pub struct Fleet {
    metrics: Arc<Metrics>,
    /// Fixed at start-up: `[metrics]` and `[sharding]` do not reload.
    settings: Settings,
    scheduler: JobScheduler,
    pollers: RwLock<Vec<Arc<TargetPoller>>>,
    running: Mutex<Running>,
}

impl Fleet {
    /// Starts a poller per target of `config`: one poll at once, then on its schedule.
    pub async fn start(
        config: Config,
        client: Client,
        metrics: Arc<Metrics>,
        started_at: f64,
    ) -> Result<Arc<Fleet>, FleetError> {
        let settings = Settings {
            started_at,
            record_jobs: config.metrics.jobs,
            sharding: config.sharding,
        };
        let scheduler = JobScheduler::new().await?;
        let pollers: Vec<Arc<TargetPoller>> = config
            .targets
            .iter()
            .map(|target| {
                Arc::new(TargetPoller::new(
                    target.clone(),
                    client.clone(),
                    metrics.clone(),
                    settings,
                ))
            })
            .collect();
        let mut jobs = Vec::new();
        for poller in &pollers {
            jobs.push(schedule(&scheduler, poller).await?);
        }
        scheduler.start().await?;
        Ok(Arc::new(Fleet {
            metrics,
            settings,
            scheduler,
            pollers: RwLock::new(pollers),
            running: Mutex::new(Running {
                config,
                jobs,
                retired: HashMap::new(),
                generation: 0,
            }),
        }))
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
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// True when no target is polled.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
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
            Ok(config) => self.apply(config).await,
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

        // Stop every poller (each finishes its poll in flight) and collect what they knew.
        for job in running.jobs.drain(..) {
            self.scheduler.remove(&job).await?;
        }
        let mut handovers: HashMap<String, Handover> = HashMap::new();
        for poller in self.current() {
            handovers.insert(poller.label().to_string(), poller.retire().await);
        }
        for target in &config.targets {
            if let Some(retired) = running.retired.remove(target.label()) {
                handovers.insert(target.label().to_string(), retired.handover);
            }
        }

        let mut pollers = Vec::new();
        for target in &config.targets {
            let poller = match handovers.remove(target.label()) {
                Some(handover) => TargetPoller::resume(
                    target.clone(),
                    client.clone(),
                    self.metrics.clone(),
                    self.settings,
                    handover,
                ),
                None => TargetPoller::new(
                    target.clone(),
                    client.clone(),
                    self.metrics.clone(),
                    self.settings,
                ),
            };
            let poller = Arc::new(poller);
            running.jobs.push(schedule(&self.scheduler, &poller).await?);
            pollers.push(poller);
        }
        match self.pollers.write() {
            Ok(mut current) => *current = pollers,
            Err(poisoned) => *poisoned.into_inner() = pollers,
        }

        // Targets that left: their series stay for their grace period.
        for (label, handover) in handovers {
            let gc_after = running
                .config
                .targets
                .iter()
                .find(|t| t.label() == label)
                .map_or(Duration::ZERO, |t| t.gc_after);
            running.generation += 1;
            let generation = running.generation;
            tracing::info!(target_name = %label, ?gc_after, "target left the configuration; its series go after gc_after");
            running.retired.insert(
                label.clone(),
                Retired {
                    handover,
                    generation,
                },
            );
            let fleet = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(gc_after).await;
                fleet.collect(&label, generation).await;
            });
        }
        // What is in effect: the restart-only sections stay as they started.
        config.server = running.config.server.clone();
        config.metrics = running.config.metrics.clone();
        config.sharding = running.config.sharding;
        running.config = config;
        self.metrics.changed();
        Ok(())
    }

    /// Removes the series of a retired target whose grace period has ended.
    async fn collect(&self, label: &str, generation: u64) {
        let mut running = self.running.lock().await;
        if running
            .retired
            .get(label)
            .is_none_or(|r| r.generation != generation)
        {
            return;
        }
        if let Some(retired) = running.retired.remove(label) {
            retired.handover.remove_series(&self.metrics);
            self.metrics.target_removed(label);
            tracing::info!(target_name = %label, "series of a removed target dropped");
        }
    }

    /// Stops the schedule.
    pub async fn shutdown(&self) {
        let mut scheduler = self.scheduler.clone();
        if let Err(err) = scheduler.shutdown().await {
            tracing::debug!(error = %err, "scheduler shutdown");
        }
    }

    /// Reloads on SIGHUP and when the content of `path` changes; runs until the process ends.
    /// `shard` is the command line's `--shard`, which overrides the file's `[sharding]`.
    pub async fn watch(self: Arc<Self>, path: PathBuf, shard: Option<ShardingConfig>) {
        let mut last = tokio::fs::read(&path).await.ok();
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGHUP; reloads follow file changes only");
                None
            }
        };
        let mut ticks = tokio::time::interval(FILE_CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                _ = hangup => "SIGHUP",
                _ = ticks.tick() => {
                    // Compared by content: a Kubernetes ConfigMap update swaps a symlink, and
                    // editors replace files, so times and inodes are not reliable.
                    let now = tokio::fs::read(&path).await.ok();
                    if now.is_none() || now == last {
                        continue;
                    }
                    "file changed"
                }
            };
            last = tokio::fs::read(&path).await.ok();
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

/// Puts one poller on its schedule, with one poll at once.
async fn schedule(
    scheduler: &JobScheduler,
    poller: &Arc<TargetPoller>,
) -> Result<Uuid, FleetError> {
    let immediate = poller.clone();
    tokio::spawn(async move { immediate.poll().await });
    let scheduled = poller.clone();
    let run = move |_id, _scheduler| {
        let poller = scheduled.clone();
        Box::pin(async move {
            // Each poll in its own task: a slow target never delays another.
            tokio::spawn(async move { poller.poll().await });
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    let job = match poller.target().poll_schedule() {
        Schedule::Cron(cron) => Job::new_async(cron.as_str(), run)?,
        Schedule::Every(every) => Job::new_repeated_async(every.max(Duration::from_secs(1)), run)?,
    };
    Ok(scheduler.add(job).await?)
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
}
