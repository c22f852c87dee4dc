//! The built-in demo: configuration that points the exporter at an in-process simulator.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{
    AuthConfig, AuthMethod, CodeArtsConfig, Config, ConfigError, DeploymentConfig, MetricsConfig,
    Secret, ServerConfig, ShardingConfig, StateConfig, StatusApi, TargetConfig, TracesConfig,
};
use crate::run::{self, RunError};
use crate::simulator::{self, SimOptions, Simulator};

/// How often demo targets poll.
const DEMO_INTERVAL: Duration = Duration::from_secs(2);
/// Deployment pipelines the demo's world has at least, so the delivery (DORA) panels have
/// failures and recoveries to show within minutes.
const DEMO_DEPLOY_PIPELINES: usize = 4;

/// Runs a simulator of `options` (with at least `DEMO_DEPLOY_PIPELINES` deployment pipelines)
/// on a free loopback port and the exporter on `listen` against it, until `shutdown` resolves;
/// `on_ready` learns both addresses (exporter, simulator) once they listen. A `web_config_file`
/// secures the exporter's endpoints (TLS, basic auth); a `traces_endpoint` receives the traces
/// (else the simulator's stand-in collector takes them).
pub async fn run(
    listen: SocketAddr,
    web_config_file: Option<PathBuf>,
    traces_endpoint: Option<String>,
    options: SimOptions,
    on_ready: impl FnOnce(SocketAddr, SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let speed = options.speed;
    let options = SimOptions {
        deploy_pipelines: options.deploy_pipelines.max(DEMO_DEPLOY_PIPELINES),
        ..options
    };
    let simulator = Arc::new(Simulator::new(options));
    let io = |what: &str| {
        let what = what.to_string();
        move |source| RunError::Io { what, source }
    };
    let sim_listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(io("cannot start the simulator"))?;
    let sim_addr = sim_listener
        .local_addr()
        .map_err(io("cannot read the simulator's address"))?;
    let (stop_simulator, simulator_stopped) = tokio::sync::oneshot::channel::<()>();
    let simulator_task = tokio::spawn(simulator::serve(sim_listener, simulator.clone(), async {
        let _ = simulator_stopped.await;
    }));
    let mut config = config(&simulator, sim_addr, listen, speed, traces_endpoint)?;
    config.server.web_config_file = web_config_file;
    // Each demo simulates a new world: its state lives as long as it runs, in a directory of
    // its own (private to the user, removed when `state_dir` drops, even on an error).
    let state_dir = state_dir().map_err(io("cannot create the demo's state directory"))?;
    config.state.path = Some(state_file(state_dir.path()));
    let listener = run::bind(listen, "--listen").await?;
    let addr = listener
        .local_addr()
        .map_err(io("cannot read the listening address"))?;
    on_ready(addr, sim_addr);
    let outcome = run::run(config, listener, None, shutdown).await;
    let _ = stop_simulator.send(());
    let _ = simulator_task.await;
    drop(state_dir);
    outcome
}

/// A new, empty directory under the system's temporary directory for the demo's state.
fn state_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("codearts-exporter-demo-{}-", std::process::id()))
        .tempdir()
}

/// The demo's state file in `dir`.
fn state_file(dir: &std::path::Path) -> PathBuf {
    dir.join("state.db")
}

/// An exporter configuration for the simulator at `simulator_addr`, sending its traces to
/// `traces_endpoint` (else to the simulator's stand-in collector).
///
/// Targets alternate between the v5 and v3 status APIs so both paths run (the v3 ones log the
/// legacy API's warning at start-up); buckets are the
/// defaults divided by `speed`, because the simulator compresses durations by that factor.
pub fn config(
    simulator: &Simulator,
    simulator_addr: SocketAddr,
    listen: SocketAddr,
    speed: f64,
    traces_endpoint: Option<String>,
) -> Result<Config, ConfigError> {
    let endpoint = format!("http://{simulator_addr}");
    let defaults = MetricsConfig::default();
    let scale = |buckets: Vec<f64>| -> Vec<f64> {
        buckets
            .into_iter()
            .map(|b| round_bucket(b / speed.max(1.0)))
            .collect()
    };
    let targets = simulator
        .targets()
        .into_iter()
        .enumerate()
        .map(|(index, (project_id, pipeline_ids))| TargetConfig {
            name: Some(format!("demo-{}", index + 1)),
            pipeline_ids,
            interval: Some(DEMO_INTERVAL),
            status_api: if index % 2 == 0 {
                StatusApi::V5
            } else {
                StatusApi::V3
            },
            chunk_size: 10,
            // The v5 targets also discover their project's pipelines (the same ones), so the
            // discovery gauge and its panel have data.
            discover: index % 2 == 0,
            ..TargetConfig::new(project_id)
        })
        .collect();
    let mut run_buckets = scale(defaults.run_duration_buckets);
    let mut stage_buckets = scale(defaults.stage_duration_buckets);
    let mut queue_buckets = scale(defaults.queue_duration_buckets);
    let mut job_buckets = scale(defaults.job_duration_buckets);
    for buckets in [
        &mut run_buckets,
        &mut stage_buckets,
        &mut queue_buckets,
        &mut job_buckets,
    ] {
        buckets.dedup();
    }
    let config = Config {
        server: ServerConfig {
            listen,
            web_config_file: None,
        },
        codearts: CodeArtsConfig {
            endpoint: Some(endpoint.clone()),
            iam_endpoint: Some(endpoint.clone()),
            repo_endpoint: Some(endpoint.clone()),
            timeout: Duration::from_secs(5),
            ..CodeArtsConfig::default()
        },
        // AK/SK, the realistic production path: every request is signed and verified.
        auth: match simulator.access_key() {
            Some(key) => AuthConfig {
                ak: Some(key.ak.clone()),
                sk: Some(Secret::new(key.sk.clone())),
                ..AuthConfig::empty(AuthMethod::Aksk)
            },
            None => AuthConfig::token(simulator.static_token()),
        },
        // The opt-in families that only add series (jobs, stage states) are on, so the demo shows
        // every panel; everything else keeps its default shape, which the dashboards are
        // checked against. Run labels keep their default (none).
        metrics: MetricsConfig {
            run_duration_buckets: run_buckets,
            stage_duration_buckets: stage_buckets,
            queue_duration_buckets: queue_buckets,
            stage_status: true,
            jobs: true,
            job_duration_buckets: job_buckets,
            ..defaults
        },
        targets,
        // The simulator's deployment pipelines, so the Delivery performance dashboard has data.
        deployments: [
            ("production", "-deploy-prod$"),
            ("staging", "-deploy-staging$"),
        ]
        .into_iter()
        .map(|(environment, include)| DeploymentConfig {
            environment: environment.into(),
            include: Some(include.into()),
            pipeline_ids: Vec::new(),
            tags: Vec::new(),
            branches: Vec::new(),
        })
        .collect(),
        sharding: ShardingConfig::default(),
        // `run` gives the demo a state file of its own.
        state: StateConfig::default(),
        // Traces go to `traces_endpoint`, else to the simulator's stand-in collector, so the
        // trace delivery panels and alerts have data, and exemplars name traces.
        traces: Some(TracesConfig::new(traces_endpoint.unwrap_or(endpoint))),
    };
    config.validate()?;
    Ok(config)
}

/// Rounds to two significant digits so scaled buckets stay readable.
fn round_bucket(value: f64) -> f64 {
    if value <= 0.0 {
        return 0.01;
    }
    let magnitude = 10f64.powf(value.log10().floor() - 1.0);
    ((value / magnitude).round() * magnitude).max(0.01)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_covers_every_simulated_pipeline() {
        let sim = Simulator::new(SimOptions {
            pipelines: 7,
            projects: 2,
            ..SimOptions::default()
        });
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let config = config(&sim, addr, addr, 60.0, None).expect("valid");
        let total: usize = config.targets.iter().map(|t| t.pipeline_ids.len()).sum();
        assert_eq!(total, 7);
        assert_eq!(config.targets[0].status_api, StatusApi::V5);
        assert_eq!(config.targets[1].status_api, StatusApi::V3);
        assert!(config.targets[0].discover && !config.targets[1].discover);
        assert_eq!(config.auth.method, AuthMethod::Aksk);
        assert_eq!(config.metrics.run_duration_buckets[0], 1.0);
        assert_eq!(config.metrics.run_duration_buckets.last(), Some(&120.0));
    }

    #[test]
    fn the_demo_state_lives_in_a_directory_removed_at_the_end() {
        let dir = state_dir().expect("a state directory");
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        assert!(path.starts_with(std::env::temp_dir()));
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(&format!("codearts-exporter-demo-{}-", std::process::id())),
            "{name}"
        );
        assert_eq!(state_file(&path), path.join("state.db"));
        // Two demos of one process (tests) do not share one.
        let other = state_dir().expect("another");
        assert_ne!(other.path(), path);
        std::fs::write(state_file(&path), b"state").expect("write");
        drop(dir);
        assert!(!path.exists(), "{} left behind", path.display());
    }

    #[test]
    fn buckets_round_to_two_digits() {
        assert_eq!(round_bucket(0.16666), 0.17);
        assert_eq!(round_bucket(15.0), 15.0);
        assert_eq!(round_bucket(123.4), 120.0);
    }
}
