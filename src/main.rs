//! codearts-exporter: the command line and logging; the library does the rest.

// Input from the network, files and users must never panic the exporter; tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use codearts_exporter::config::{Config, DEFAULT_PORT, ShardingConfig};
use codearts_exporter::web_config::{WebConfig, WebConfigError};
use codearts_exporter::{ConfigFile, RunError};

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "codearts-exporter",
    version,
    about = "Prometheus exporter for Huawei Cloud CodeArts Pipeline"
)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Configuration file (runs the daemon when no subcommand is given).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// exporter-toolkit web configuration file (TLS, client certificates, basic auth,
    /// headers); overrides `[server] web_config_file`.
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    web_config_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exporter (the daemon).
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Poll only share N of M of the pipelines (N from 0; overrides `[sharding]`), so M
        /// replicas cover a tenant together.
        #[arg(long, value_name = "N/M", value_parser = ShardingConfig::parse)]
        shard: Option<ShardingConfig>,
    },
    /// Run the exporter against a built-in simulator: no credentials needed.
    #[cfg(feature = "simulator")]
    Demo(simulated::DemoArgs),
    /// Run only the CodeArts API simulator.
    #[cfg(feature = "simulator")]
    Simulate(simulated::SimulateArgs),
    /// Exit 0 when the exporter at URL answers /healthz with 200, else 1 (for HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
    /// Validate a configuration (and its web configuration) and print it with secrets redacted.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Options of `healthcheck`.
#[derive(clap::Args)]
struct HealthcheckArgs {
    /// Health endpoint to check (`https://` for an exporter serving TLS).
    #[arg(long, default_value_t = format!("http://127.0.0.1:{DEFAULT_PORT}/healthz"))]
    url: String,
    /// CA certificate (PEM) that signed the exporter's certificate, besides the system's roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM, both in this file) when the exporter requires one.
    #[arg(long, value_name = "FILE")]
    client_cert_file: Option<PathBuf>,
    /// Accept any server certificate (a probe on 127.0.0.1 of a certificate made for the
    /// service's name).
    #[arg(long)]
    insecure: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let web_config_file = cli.web_config_file;
    let command = match (cli.command, cli.config) {
        (Some(command), _) => command,
        (None, Some(config)) => Command::Run {
            config,
            shard: None,
        },
        (None, None) => {
            eprintln!("error: give a subcommand or --config FILE (see --help)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig { config } = &command {
        return match Config::load(config) {
            Ok(mut config) => {
                for warning in config.warnings() {
                    eprintln!("warning: {warning}");
                }
                if web_config_file.is_some() {
                    config.server.web_config_file = web_config_file;
                }
                if let Some(path) = &config.server.web_config_file {
                    match WebConfig::load(path) {
                        Ok(web) => {
                            println!("# web configuration {}: {}", path.display(), web.summary())
                        }
                        Err(err) => return web_config_error(&err),
                    }
                }
                print!("{}", config.redacted_toml());
                ExitCode::SUCCESS
            }
            Err(err) => config_error(&err),
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            Command::Run { config, shard } => match Config::load(&config) {
                Ok(mut loaded) => {
                    if let Some(shard) = shard {
                        loaded.sharding = shard;
                    }
                    if web_config_file.is_some() {
                        loaded.server.web_config_file = web_config_file;
                    }
                    let listener =
                        codearts_exporter::run::bind(loaded.server.listen, "server.listen").await?;
                    let file = ConfigFile {
                        path: config,
                        shard,
                    };
                    codearts_exporter::run(loaded, listener, Some(file), shutdown_signal()).await?;
                }
                Err(err) => return Ok(config_error(&err)),
            },
            #[cfg(feature = "simulator")]
            Command::Demo(args) => {
                simulated::demo(args, web_config_file, shutdown_signal()).await?
            }
            #[cfg(feature = "simulator")]
            Command::Simulate(args) => simulated::simulate(args, shutdown_signal()).await?,
            Command::Healthcheck(args) => return Ok(healthcheck(&args).await),
            Command::CheckConfig { .. } => {}
        }
        anyhow::Ok(ExitCode::SUCCESS)
    });
    match outcome {
        Ok(code) => code,
        // A bad web configuration is a configuration error, found before anything serves.
        Err(err)
            if err.downcast_ref::<WebConfigError>().is_some()
                || matches!(err.downcast_ref::<RunError>(), Some(RunError::WebConfig(_))) =>
        {
            eprintln!("configuration error: {err:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(err: &codearts_exporter::config::ConfigError) -> ExitCode {
    eprintln!("configuration error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn web_config_error(err: &WebConfigError) -> ExitCode {
    eprintln!("configuration error: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log collectors (Docker, Kubernetes) would store the escapes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// GETs the URL of `args`; success only on a 200 within 3 seconds.
async fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let url = args.url.as_str();
    let client = match healthcheck_client(args) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("unhealthy: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("unhealthy: {url} answered {}", response.status());
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("unhealthy: {url}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The client of `healthcheck`, with the TLS settings of `args`.
fn healthcheck_client(args: &HealthcheckArgs) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .danger_accept_invalid_certs(args.insecure);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("no PEM certificate in {}", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(path) = &args.client_cert_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
            format!("{} does not hold a PEM certificate and key", path.display())
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder.build()?)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// The `demo` and `simulate` subcommands: only in a build with the `simulator` feature.
#[cfg(feature = "simulator")]
mod simulated {
    use std::future::Future;
    use std::io::Write;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use anyhow::Context;
    use clap::Args;

    use codearts_exporter::config::{DEFAULT_PORT, TracesConfig};
    use codearts_exporter::demo;
    use codearts_exporter::simulator::faults::FaultSpec;
    use codearts_exporter::simulator::{self, SimOptions};
    use codearts_exporter::web_config::WebConfig;

    /// Options of `demo`.
    #[derive(Args)]
    pub struct DemoArgs {
        /// Where the exporter listens.
        #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
        listen: SocketAddr,
        /// Number of simulated pipelines.
        #[arg(long, default_value_t = 24)]
        pipelines: usize,
        /// Number of simulated projects.
        #[arg(long, default_value_t = 2)]
        projects: usize,
        /// Simulated time runs this many times faster than real durations.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Seed of the simulated world.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// OTLP/HTTP receiver of the demo's traces (they are POSTed to URL/v1/traces), e.g. a
        /// Jaeger's or a Collector's http://host:4318 (default: a stand-in in the simulator,
        /// which keeps none).
        #[arg(long, value_name = "URL", value_parser = parse_traces_endpoint)]
        traces_endpoint: Option<String>,
    }

    /// A `--traces-endpoint` as `[traces] endpoint` would take it.
    fn parse_traces_endpoint(text: &str) -> Result<String, String> {
        TracesConfig::new(text)
            .validate()
            .map(|()| text.to_string())
            .map_err(|err| err.to_string())
    }

    /// Options of `simulate`.
    #[derive(Args)]
    pub struct SimulateArgs {
        /// Where the simulator listens (port 0 picks a free one).
        #[arg(long)]
        listen: SocketAddr,
        /// Number of simulated pipelines.
        #[arg(long, default_value_t = 24)]
        pipelines: usize,
        /// Number of simulated projects.
        #[arg(long, default_value_t = 2)]
        projects: usize,
        /// Seed of the simulated world.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated durations are divided by this.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Lifetime of tokens issued by the simulated IAM, e.g. "30s".
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        token_lifetime: Duration,
        /// Faults to inject, as JSON (`{"faults": [...]}`, as `POST /_sim/faults` takes) or @FILE.
        #[arg(long, value_parser = parse_fault_spec)]
        faults: Option<FaultSpec>,
        /// Share of requests (0 to 1) hit by a fault, spread evenly over the kinds that fail a
        /// request (every kind but latency and oversized).
        #[arg(long)]
        fault_share: Option<f64>,
        /// How long a simulated time-out holds a request.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        fault_hang: Duration,
        /// Mean number of stages per pipeline, 2 to 14 (default: 2 to 8, mean 5).
        #[arg(long, value_parser = clap::value_parser!(u64).range(2..=14))]
        stages: Option<u64>,
        /// Share of pipelines running at any time, between 0 and 1 (default: about a third).
        #[arg(long, value_parser = parse_share)]
        running_share: Option<f64>,
        /// Refuse AK/SK-signed requests without the account's IAM project id in a signed
        /// `X-Project-Id` header.
        #[arg(long)]
        require_project_id: bool,
        /// Deployment pipelines (`…-deploy-prod`, `…-deploy-staging`) added to the others.
        #[arg(long, default_value_t = 0)]
        deploy_pipelines: usize,
    }

    /// Runs the simulator and the exporter against it until `shutdown` resolves; a
    /// `web_config_file` secures the exporter's endpoints.
    pub async fn demo(
        args: DemoArgs,
        web_config_file: Option<PathBuf>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let scheme = match &web_config_file {
            Some(path) if WebConfig::load(path)?.tls().is_some() => "https",
            _ => "http",
        };
        let options = SimOptions {
            pipelines: args.pipelines,
            projects: args.projects,
            speed: args.speed,
            seed: args.seed,
            ..SimOptions::default()
        };
        let announce = |addr, sim_addr| {
            println!(
                "codearts-exporter demo: metrics at {scheme}://{addr}/metrics (simulated CodeArts at http://{sim_addr})"
            );
            let _ = std::io::stdout().flush();
        };
        demo::run(
            args.listen,
            web_config_file,
            args.traces_endpoint,
            options,
            announce,
            shutdown,
        )
        .await?;
        Ok(())
    }

    /// Runs the simulator alone until `shutdown` resolves.
    pub async fn simulate(
        args: SimulateArgs,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut spec = args.faults.unwrap_or_default();
        if let Some(share) = args.fault_share {
            spec.faults
                .extend(FaultSpec::mix(share, args.fault_hang).faults);
        }
        let options = SimOptions {
            pipelines: args.pipelines,
            projects: args.projects,
            speed: args.speed,
            seed: args.seed,
            token_lifetime: args.token_lifetime,
            faults: spec,
            stages: args.stages.and_then(|n| usize::try_from(n).ok()),
            running_share: args.running_share,
            require_project_id: args.require_project_id,
            deploy_pipelines: args.deploy_pipelines,
            ..SimOptions::default()
        };
        let announce = |addr, token: &str| {
            println!("simulator listening on http://{addr} (token: {token})");
            let _ = std::io::stdout().flush();
        };
        let listen = args.listen;
        simulator::run(listen, options, announce, shutdown)
            .await
            .with_context(|| format!("cannot run the simulator on {listen}"))
    }

    /// A share strictly between 0 and 1.
    fn parse_share(arg: &str) -> Result<f64, String> {
        match arg.parse::<f64>() {
            Ok(share) if share > 0.0 && share < 1.0 => Ok(share),
            _ => Err(format!("{arg} is not a number between 0 and 1 (exclusive)")),
        }
    }

    /// A fault spec from JSON text, or from the file named after `@`.
    fn parse_fault_spec(arg: &str) -> Result<FaultSpec, String> {
        let text = match arg.strip_prefix('@') {
            Some(path) => {
                std::fs::read(path).map_err(|err| format!("cannot read {path}: {err}"))?
            }
            None => arg.as_bytes().to_vec(),
        };
        FaultSpec::from_json(&text)
    }
}
