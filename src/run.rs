//! The exporter as one library call: [`run`] polls the targets and serves the endpoints until
//! told to stop, then stops and waits for every task it started.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock;
use crate::codearts::{self, Client};
use crate::config::{Config, ConfigError, ShardingConfig};
use crate::fleet::{Fleet, FleetError};
use crate::metrics::{Metrics, MetricsError};
use crate::server::{self, Endpoints};
use crate::store::{Store, StoreError};
use crate::traces::export::{ExportError, Exporter};
use crate::web_config::{self, WebConfig, WebConfigError};

/// How long an orderly stop tries to deliver the pending traces.
const FLUSH_AT_STOP: std::time::Duration = std::time::Duration::from_secs(3);

/// The file the configuration came from: it is reloaded on SIGHUP and when it changes.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file.
    pub path: PathBuf,
    /// The command line's `--shard`, which overrides the file's `[sharding]`.
    pub shard: Option<ShardingConfig>,
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The metric families could not be set up.
    #[error("{0}")]
    Metrics(#[from] MetricsError),
    /// The store could not be set up.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The API client could not be built.
    #[error("{0}")]
    Client(#[from] codearts::Error),
    /// The web configuration (TLS, basic auth) is invalid.
    #[error("{0}")]
    WebConfig(#[from] WebConfigError),
    /// The trace exporter could not be set up.
    #[error("{0}")]
    Traces(#[from] ExportError),
    /// The pollers could not start.
    #[error("{0}")]
    Fleet(#[from] FleetError),
    /// A socket could not be bound or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Polls the targets of `config` and serves `/metrics`, `/healthz` and `/readyz` on `listener`
/// until `shutdown` resolves; with a `file`, reloads it on SIGHUP and when it changes. The web
/// configuration of `[server] web_config_file` secures the endpoints; it is reloaded on SIGHUP
/// and when it or its certificates change. On
/// shutdown the server finishes the requests in flight, then the schedules, the polls in
/// flight, the reload watcher, the garbage collector and the watchdog are stopped and awaited.
pub async fn run(
    config: Config,
    listener: TcpListener,
    file: Option<ConfigFile>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    // Checked before anything starts: a bad web configuration stops the exporter at once.
    let web_file = config.server.web_config_file.clone();
    let web = match &web_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::plain(),
    };
    let tls = web.tls().is_some();
    let web_settings = web.summary();
    let (web_sender, web) = tokio::sync::watch::channel(Arc::new(web));
    // The backfill window counts back from here.
    let started_at = clock::unix_now();
    // What the state file kept is restored before /metrics answers.
    let projects = config
        .targets
        .iter()
        .map(|target| target.project_id.clone())
        .collect();
    let store = Arc::new(Store::open(
        &config.metrics,
        config.state.path.as_deref(),
        &projects,
        config.traces.as_ref(),
    )?);
    let metrics = Arc::new(Metrics::new(&store)?);
    // Traces go out on their own task: polling never waits for the collector.
    let exporter = match &config.traces {
        Some(traces) => Exporter::new(traces, store.clone())?.map(Arc::new),
        None => None,
    };
    let stop_delivery = tokio_util::sync::CancellationToken::new();
    let delivery = exporter.clone().map(|exporter| {
        let stop = stop_delivery.clone();
        tokio::spawn(async move { exporter.run(stop).await })
    });
    let client = Client::new(&config.codearts, &config.auth, metrics.clone())?;
    let addr = listener.local_addr().map_err(|source| RunError::Io {
        what: "cannot read the listening address".into(),
        source,
    })?;
    tracing::info!(
        %addr,
        tls,
        web = %web_settings,
        endpoint = %config.codearts.pipeline_endpoint(),
        targets = config.targets.len(),
        version = env!("CARGO_PKG_VERSION"),
        "serving metrics"
    );
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let fleet = Fleet::start(config, client, metrics.clone(), store.clone(), started_at).await?;
    let watcher = file.map(|file| tokio::spawn(fleet.clone().watch(file.path, file.shard)));
    let web_watcher = web_file.map(|path| {
        let metrics = metrics.clone();
        let reloaded = move |ok| metrics.web_config_reloaded(ok);
        tokio::spawn(web_config::watch(path, web_sender, reloaded))
    });
    let endpoints = Arc::new(Endpoints::new(metrics, fleet.clone()));
    server::serve_secured(listener, endpoints, web, shutdown).await;
    tracing::info!("shutting down");
    if let Some(watcher) = web_watcher {
        watcher.abort();
        let _ = watcher.await;
    }
    if let Some(watcher) = watcher {
        watcher.abort();
        let _ = watcher.await;
    }
    fleet.shutdown().await;
    // Whatever a cut poll recorded and did not commit.
    store.commit_all().await;
    if let (Some(delivery), Some(exporter)) = (delivery, exporter) {
        // The request in flight ends within its time-out, and is settled.
        stop_delivery.cancel();
        let _ = delivery.await;
        // One last try, briefly: what is left stays in the state file for the next start.
        let left = exporter.flush(FLUSH_AT_STOP).await;
        if left > 0 {
            tracing::warn!(
                traces_pending = left,
                kept = store.has_state_file(),
                "trace export: traces still pending at stop (kept in the state file when there is one)"
            );
        }
    }
    Ok(())
}

/// Binds `addr` for [`run`], with an error that names `key` (the configuration key).
pub async fn bind(addr: std::net::SocketAddr, key: &str) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Io {
            what: format!("cannot listen on {addr} ({key})"),
            source,
        })
}
