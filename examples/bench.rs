//! Benchmark helpers for `scripts/bench` (run on demand, not by CI except at a tiny size).
//!
//! - `load`: scrapes a URL from N concurrent clients for a while and prints the latency
//!   percentiles, as one JSON line;
//! - `serve`: serves a file as `/metrics` through the exporter's own HTTP server code and
//!   /metrics answer (gzip, or the text inflated as it is sent), with no rendering at all: the
//!   lower bound of what a scrape can cost;
//! - `render`: fills the metrics of N pipelines to their full series budget and times the
//!   rendering and its gzip compression, as one JSON line: the text format (its figures at the
//!   top level, as before OpenMetrics), then each format cold (the first rendering after a
//!   change) and cached (a scrape that finds the rendering current), with body sizes; the
//!   protobuf body's series as a Prometheus that reads native histograms stores them, and as
//!   one that reads the classic buckets;
//! - `otlp-sink`: a minimal OTLP/HTTP trace receiver (200 to `POST /v1/traces`) that counts
//!   requests, bytes on the wire, bytes after gunzip, runs (resource spans) and spans, served
//!   as JSON on `GET /stats`;
//! - `tls-files`: writes a CA, a server certificate and a web configuration with TLS and basic
//!   auth, for the TLS figures (`load --ca-file --user --password`, and `--flood-per-second`
//!   for wrong passwords sent while scraping).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use codearts_exporter::codearts::model::{Run, RunResult, RunState, StageRun};
use codearts_exporter::config::{MetricsConfig, TracesConfig};
use codearts_exporter::exposition::{Exposition, Lookup, Rendered};
use codearts_exporter::http;
use codearts_exporter::metrics::{Format, Metrics};
use codearts_exporter::server;
use codearts_exporter::store::Store;

#[derive(Parser)]
#[command(about = "Benchmark helpers for scripts/bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scrape URL from CONCURRENCY clients for SECONDS; print one JSON line of figures.
    Load {
        /// What to scrape.
        #[arg(long)]
        url: String,
        /// Clients scraping at once, each one request after the other.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// How long to scrape.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Send `Accept-Encoding: gzip`, as Prometheus does.
        #[arg(long)]
        gzip: bool,
        /// CA certificate (PEM) to trust, for an https URL.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Basic auth user.
        #[arg(long)]
        user: Option<String>,
        /// Basic auth password.
        #[arg(long)]
        password: Option<String>,
        /// Meanwhile, send this many requests per second with a wrong password, each on a new
        /// connection, and count their answers.
        #[arg(long, default_value_t = 0.0)]
        flood_per_second: f64,
        /// `Accept` header to send (e.g. `application/openmetrics-text; version=1.0.0`).
        #[arg(long)]
        accept: Option<String>,
    },
    /// Write ca.pem, server.pem, server-key.pem and web.yml (TLS, basic auth of USER with
    /// PASSWORD hashed at COST) into DIR.
    TlsFiles {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// Basic auth user.
        #[arg(long, default_value = "prometheus")]
        user: String,
        /// Basic auth password.
        #[arg(long)]
        password: String,
        /// bcrypt cost (10 is what `htpasswd -B` and exporter-toolkit's docs use).
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
    /// Serve FILE as /metrics (and its gzip when accepted) with the exporter's server code.
    Serve {
        /// Where to listen; port 0 picks one (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The body to serve, e.g. a saved /metrics.
        #[arg(long)]
        file: PathBuf,
    },
    /// Time the rendering of PIPELINES pipelines of STAGES stages with every series filled.
    Render {
        /// Pipelines.
        #[arg(long, default_value_t = 10_000)]
        pipelines: usize,
        /// Stages per pipeline.
        #[arg(long, default_value_t = 6)]
        stages: usize,
        /// Renderings timed (the median is printed).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Exemplars name their run's trace, as with `[traces]`.
        #[arg(long)]
        trace_ids: bool,
    },
    /// Receive OTLP/HTTP trace exports on LISTEN and count them (`GET /stats`).
    OtlpSink {
        /// Where to listen; port 0 picks one (printed on stdout).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Load {
            url,
            concurrency,
            seconds,
            gzip,
            ca_file,
            user,
            password,
            flood_per_second,
            accept,
        } => {
            let access = Access {
                ca: match ca_file {
                    Some(path) => Some(
                        std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
                    ),
                    None => None,
                },
                user,
                password,
                accept,
            };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(load(
                url,
                concurrency.max(1),
                seconds,
                gzip,
                access,
                flood_per_second,
            ))
        }
        Command::TlsFiles {
            dir,
            user,
            password,
            cost,
        } => tls_files(&dir, &user, &password, cost),
        Command::Serve { listen, file } => {
            let body = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                println!(
                    "serving {} bytes on http://{}",
                    body.len(),
                    listener.local_addr()?
                );
                // The answer of the exporter's /metrics, with nothing to render.
                let rendered = Arc::new(Rendered::of_text(&body));
                let answer = move |request| {
                    let rendered = rendered.clone();
                    async move { server::metrics_answer(&request, rendered) }
                };
                http::serve(listener, answer, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
                Ok(())
            })
        }
        Command::Render {
            pipelines,
            stages,
            rounds,
            trace_ids,
        } => render(pipelines, stages, rounds.max(1), trace_ids),
        Command::OtlpSink { listen } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(otlp_sink(listen))
        }
    }
}

/// The p-th percentile (0 to 100) of sorted values, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How `load` reaches the URL: a CA to trust, basic auth credentials, the format asked for.
struct Access {
    ca: Option<Vec<u8>>,
    user: Option<String>,
    password: Option<String>,
    accept: Option<String>,
}

impl Access {
    fn client(&self, idle_per_host: usize) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().pool_max_idle_per_host(idle_per_host);
        if let Some(ca) = &self.ca {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca)?);
        }
        Ok(builder.build()?)
    }
}

async fn load(
    url: String,
    concurrency: usize,
    seconds: f64,
    gzip: bool,
    access: Access,
    flood_per_second: f64,
) -> anyhow::Result<()> {
    let client = access.client(concurrency)?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let flood = (flood_per_second > 0.0).then(|| {
        let client = access.client(0);
        let url = url.clone();
        let user = access.user.clone().unwrap_or_else(|| "prometheus".into());
        tokio::spawn(async move { flood(client?, url, user, flood_per_second, until).await })
    });
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let credentials = access
            .user
            .clone()
            .map(|user| (user, access.password.clone()));
        let accept = access.accept.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0usize;
            let mut errors = 0usize;
            while Instant::now() < until {
                let started = Instant::now();
                let mut request = client.get(&url);
                if gzip {
                    request = request.header("Accept-Encoding", "gzip");
                }
                if let Some(accept) = &accept {
                    request = request.header("Accept", accept);
                }
                if let Some((user, password)) = &credentials {
                    request = request.basic_auth(user, password.as_deref());
                }
                let body = match request.send().await {
                    Ok(response) if response.status().is_success() => response.bytes().await,
                    Ok(_) => {
                        errors += 1;
                        continue;
                    }
                    Err(err) => Err(err),
                };
                match body {
                    Ok(body) => {
                        latencies.push(started.elapsed().as_secs_f64());
                        bytes = body.len();
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, bytes, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    let mut errors = 0;
    for task in tasks {
        let (mine, size, failed) = task.await?;
        latencies.extend(mine);
        bytes = bytes.max(size);
        errors += failed;
    }
    let flooded = match flood {
        Some(task) => Some(task.await??),
        None => None,
    };
    latencies.sort_by(f64::total_cmp);
    let ms = |p: f64| (percentile(&latencies, p) * 1e5).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "url": url,
            "concurrency": concurrency,
            "gzip": gzip,
            "tls": url.starts_with("https://"),
            "basic_auth": access.user.is_some(),
            "accept": access.accept,
            "seconds": seconds,
            "requests": latencies.len(),
            "errors": errors,
            "body_bytes": bytes,
            "p50_ms": ms(50.0),
            "p99_ms": ms(99.0),
            "max_ms": ms(100.0),
            "flood": flooded,
        })
    );
    Ok(())
}

/// Sends `per_second` requests a second to `url` with a wrong password for `user`, each on a
/// new connection, until `until`; returns the answers by status, and what was sent.
async fn flood(
    client: reqwest::Client,
    url: String,
    user: String,
    per_second: f64,
    until: Instant,
) -> anyhow::Result<serde_json::Value> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    let mut requests = tokio::task::JoinSet::new();
    let started = Instant::now();
    let mut sent = 0usize;
    while Instant::now() < until {
        ticks.tick().await;
        let request = client
            .get(&url)
            .basic_auth(&user, Some(format!("wrong-{sent}")));
        requests.spawn(async move {
            match request.send().await {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            }
        });
        sent += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    while let Some(answer) = requests.join_next().await {
        *answers.entry(answer?).or_default() += 1;
    }
    Ok(serde_json::json!({
        "sent": sent,
        "per_second": (sent as f64 / elapsed * 10.0).round() / 10.0,
        "answers": answers,
    }))
}

/// Writes a CA, a server certificate for 127.0.0.1 it signed, and `web.yml` with TLS and the
/// basic auth of `user` into `dir`.
fn tls_files(dir: &std::path::Path, user: &str, password: &str, cost: u32) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair,
    };
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    // Named apart from the server certificate: a subject equal to its issuer's reads as
    // self-signed to OpenSSL (curl).
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "codearts-exporter bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    server.distinguished_name = DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server = server.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem())?;
    let hash = bcrypt::hash(password, cost)?;
    let dir = std::fs::canonicalize(dir)?;
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {d}/server.pem\n  key_file: {d}/server-key.pem\n\
             basic_auth_users:\n  {user}: {hash}\n",
            d = dir.display()
        ),
    )?;
    Ok(())
}

/// A completed run of `stages` stages with `result`, ending at `end`.
fn run(pipeline: usize, number: u64, stages: usize, result: RunResult, end: f64) -> Run {
    let stage_seconds = 60.0 + (pipeline % 7) as f64 * 30.0;
    let start = end - stage_seconds * stages as f64 - 15.0;
    let stages = (0..stages)
        .map(|index| {
            let from = start + 15.0 + stage_seconds * index as f64;
            // The last stage carries the run's outcome; the others succeeded.
            let outcome = if index + 1 == stages {
                result
            } else {
                RunResult::Success
            };
            StageRun {
                id: None,
                name: format!("阶段 {index} stage"),
                state: RunState::Completed,
                result: Some(outcome),
                start: Some(from),
                end: Some(from + stage_seconds),
                jobs: Vec::new(),
                pause: None,
            }
        })
        .collect();
    Run {
        pipeline_id: format!("{pipeline:032x}"),
        pipeline_name: None,
        run_id: Some(format!("{:032x}", pipeline as u64 * 1000 + number)),
        run_number: Some(number),
        state: RunState::Completed,
        result: Some(result),
        start: Some(start),
        end: Some(end),
        detail_url: Some(format!(
            "https://console.example/pipeline/{pipeline:032x}/run/{number}"
        )),
        trigger: Some("Push".into()),
        branch: Some("main".into()),
        commit_id: None,
        codehub_id: None,
        pause: None,
        stages,
    }
}

fn render(pipelines: usize, stages: usize, rounds: usize, trace_ids: bool) -> anyhow::Result<()> {
    // With trace ids, the store keeps an outbox as with `[traces]` (nothing is sent).
    let traces = trace_ids.then(|| TracesConfig::new("http://127.0.0.1:9"));
    let store = Store::with_traces(&MetricsConfig::default(), traces.as_ref())?;
    let metrics = Arc::new(Metrics::new(&store)?);
    let mut all = Vec::with_capacity(pipelines);
    for pipeline in 0..pipelines {
        let project = format!("{:032x}", pipeline % 10);
        let id = format!("{pipeline:032x}");
        let name = format!("订单服务-build-{pipeline:05}");
        let mut series = store.new_series(&project, &id, &name);
        let mut last = None;
        // One run of each result: every label set of every family exists.
        for (number, result) in [RunResult::Success, RunResult::Error, RunResult::Aborted]
            .into_iter()
            .enumerate()
        {
            let done = run(
                pipeline,
                number as u64 + 1,
                stages,
                result,
                1.8e9 + number as f64,
            );
            series.observe_completed(&done);
            last = Some(done);
        }
        if let Some(done) = &last {
            series.set_state(RunState::Completed);
            series.set_stage_states(done);
            series.set_last_completed(done);
        }
        // Shown as a commit shows them (without a state file, at once).
        series.publish();
        all.push(series);
    }
    let built_rss = rss_kib("VmRSS:");
    let exposition = Exposition::new(metrics.clone());
    // The text format first, alone, as before OpenMetrics existed: its figures (the top-level
    // keys) compare with earlier runs, its peak RSS included.
    let (text, gzip) = time_format(&exposition, &store, Format::Text, rounds)?;
    let peak_rss = rss_kib("VmHWM:");
    let text = with_counts(text, count_text(&gzip)?);
    let (openmetrics, gzip) = time_format(&exposition, &store, Format::OpenMetrics, rounds)?;
    let peak_rss_openmetrics = rss_kib("VmHWM:");
    let openmetrics = with_counts(openmetrics, count_text(&gzip)?);
    let (protobuf, gzip) = time_format(&exposition, &store, Format::Protobuf, rounds)?;
    // Before counting: decoding a family of the body for the count takes memory of its own.
    let peak_rss_protobuf = rss_kib("VmHWM:");
    let protobuf = with_counts(protobuf, count_protobuf(&gzip)?);
    drop(gzip);
    println!(
        "{}",
        serde_json::json!({
            "pipelines": pipelines,
            "stages": stages,
            "trace_ids": trace_ids,
            "series": text["series"],
            "pipeline_series": text["pipeline_series"],
            "series_per_pipeline": text["pipeline_series"].as_f64().unwrap_or(0.0) / pipelines.max(1) as f64,
            "text_bytes": text["text_bytes"],
            "gzip_bytes": text["gzip_bytes"],
            "render_gzip_s_median": text["cold_s_median"],
            "render_gzip_s_max": text["cold_s_max"],
            "rss_kib_before_rendering": built_rss,
            "peak_rss_kib": peak_rss,
            "peak_rss_kib_after_openmetrics": peak_rss_openmetrics,
            "peak_rss_kib_after_protobuf": peak_rss_protobuf,
            "formats": {"text": text, "openmetrics": openmetrics, "protobuf": protobuf},
        })
    );
    drop(all);
    Ok(())
}

/// `figures` with `counts` added.
fn with_counts(mut figures: serde_json::Value, counts: serde_json::Value) -> serde_json::Value {
    if let (Some(figures), serde_json::Value::Object(counts)) = (figures.as_object_mut(), counts) {
        figures.extend(counts);
    }
    figures
}

/// Times `rounds` renderings of `format`, each the first after a change (cold), then `rounds`
/// scrapes that find the rendering current (cached): the lookup alone, as a gzip scrape gets
/// it, and the lookup with the inflating of every piece, as a plain scrape gets it. Returns the
/// figures and the rendering's gzip, to count what the body holds.
fn time_format(
    exposition: &Exposition,
    store: &Store,
    format: Format,
    rounds: usize,
) -> anyhow::Result<(serde_json::Value, bytes::Bytes)> {
    let mut cold = Vec::new();
    let mut last = None;
    for _ in 0..rounds {
        store.series().changed();
        let started = Instant::now();
        let rendered = exposition.current(format);
        cold.push(started.elapsed().as_secs_f64());
        last = Some(rendered);
    }
    drop(last);
    let (mut cached_gzip, mut cached_plain) = (Vec::new(), Vec::new());
    let mut rendered = None;
    for _ in 0..rounds {
        let started = Instant::now();
        let found = match exposition.lookup(format) {
            Lookup::Serve(found) | Lookup::ServeAndRefresh(found) => found,
            Lookup::Render => anyhow::bail!("{format:?}: a rendering was expected in the cache"),
        };
        cached_gzip.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut inflated = 0usize;
        for piece in found.pieces() {
            inflated += piece?.len();
        }
        cached_plain.push(started.elapsed().as_secs_f64());
        std::hint::black_box(inflated);
        rendered = Some(found);
    }
    for values in [&mut cold, &mut cached_gzip, &mut cached_plain] {
        values.sort_by(f64::total_cmp);
    }
    let gzip = rendered.map(|rendered| rendered.gzip()).unwrap_or_default();
    let figures = serde_json::json!({
        "gzip_bytes": gzip.len(),
        "cold_s_median": percentile(&cold, 50.0),
        "cold_s_max": percentile(&cold, 100.0),
        "cached_gzip_s_median": percentile(&cached_gzip, 50.0),
        "cached_plain_s_median": percentile(&cached_plain, 50.0),
    });
    Ok((figures, gzip))
}

/// The series, pipeline series, exemplars and bytes of a text body (gzip), counted while
/// inflating so that counting holds no text.
fn count_text(gzip: &[u8]) -> anyhow::Result<serde_json::Value> {
    let (mut series, mut pipeline_series, mut text_bytes, mut exemplars) = (0, 0, 0, 0);
    let mut reader = std::io::BufReader::new(flate2::read::GzDecoder::new(gzip));
    let mut line = Vec::new();
    while std::io::BufRead::read_until(&mut reader, b'\n', &mut line)? > 0 {
        text_bytes += line.len();
        if !line.starts_with(b"#") {
            series += 1;
            pipeline_series += usize::from(line.starts_with(b"codearts_pipeline_"));
            exemplars += usize::from(line.windows(3).any(|w| w == b" # "));
        }
        line.clear();
    }
    Ok(serde_json::json!({
        "series": series,
        "pipeline_series": pipeline_series,
        "exemplars": exemplars,
        "text_bytes": text_bytes,
    }))
}

/// What a protobuf body (gzip) holds, a family at a time: the series a Prometheus that reads
/// native histograms stores (one per native histogram) against those it stores from the
/// classic buckets (`_bucket` per bound and `+Inf`, `_sum`, `_count`), exemplars, native
/// buckets, and bytes.
fn count_protobuf(gzip: &[u8]) -> anyhow::Result<serde_json::Value> {
    use codearts_exporter::proto::MetricFamily;
    use prost::Message;
    use std::io::Read;
    let mut reader = std::io::BufReader::new(flate2::read::GzDecoder::new(gzip));
    let (mut native, mut classic, mut pipeline_native, mut pipeline_classic) = (0, 0, 0, 0);
    let (mut bytes, mut exemplars, mut native_buckets, mut histograms) = (0usize, 0, 0, 0);
    loop {
        // The length, a varint, then the family.
        let mut length = 0u64;
        let mut shift = 0;
        let mut byte = [0u8];
        loop {
            if reader.read(&mut byte)? == 0 {
                anyhow::ensure!(shift == 0, "a body cut inside a length");
                return Ok(serde_json::json!({
                    "series": native,
                    "series_classic": classic,
                    "pipeline_series": pipeline_native,
                    "pipeline_series_classic": pipeline_classic,
                    "native_histograms": histograms,
                    "native_buckets": native_buckets,
                    "exemplars": exemplars,
                    "body_bytes": bytes,
                }));
            }
            bytes += 1;
            length |= u64::from(byte[0] & 0x7f) << shift;
            shift += 7;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut message = vec![0; usize::try_from(length)?];
        reader.read_exact(&mut message)?;
        bytes += message.len();
        let family = MetricFamily::decode(message.as_slice())?;
        let pipeline = family
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("codearts_pipeline_"));
        for metric in &family.metric {
            let (as_native, as_classic) = match &metric.histogram {
                Some(h) => {
                    exemplars += h.bucket.iter().filter(|b| b.exemplar.is_some()).count();
                    let has_inf = h
                        .bucket
                        .last()
                        .is_some_and(|b| b.upper_bound == Some(f64::INFINITY));
                    let classic = h.bucket.len() + usize::from(!has_inf) + 2;
                    if h.schema.is_some() {
                        histograms += 1;
                        native_buckets += h.positive_delta.len() + h.negative_delta.len();
                        (1, classic)
                    } else {
                        (classic, classic)
                    }
                }
                None => (1, 1),
            };
            native += as_native;
            classic += as_classic;
            if pipeline {
                pipeline_native += as_native;
                pipeline_classic += as_classic;
            }
        }
    }
}

/// What the sink has received.
#[derive(Default, serde::Serialize)]
struct SinkStats {
    /// Export requests answered 200.
    requests: u64,
    /// Their bodies as sent (gzip).
    wire_bytes: u64,
    /// Their bodies after gunzip (the protobuf).
    decoded_bytes: u64,
    /// Runs: one resource per run.
    runs: u64,
    /// Spans of those runs.
    spans: u64,
    /// Requests that were not an export, or not one that decodes.
    refused: u64,
}

/// A minimal OTLP/HTTP receiver: answers 200 (an empty `ExportTraceServiceResponse`) to every
/// `POST /v1/traces` that decodes, counting it; `GET /stats` shows the counts as JSON.
async fn otlp_sink(listen: SocketAddr) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    use hyper::StatusCode;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("otlp sink listening on http://{}", listener.local_addr()?);
    let stats = Arc::new(std::sync::Mutex::new(SinkStats::default()));
    let answer = move |request: hyper::Request<hyper::body::Incoming>| {
        let stats = stats.clone();
        async move {
            let lock = || stats.lock().unwrap_or_else(|e| e.into_inner());
            if request.method() == hyper::Method::GET && request.uri().path() == "/stats" {
                let value = serde_json::to_value(&*lock()).unwrap_or_default();
                return http::json(StatusCode::OK, &value);
            }
            if request.method() != hyper::Method::POST || request.uri().path() != "/v1/traces" {
                lock().refused += 1;
                return http::response(StatusCode::NOT_FOUND, "text/plain", "not found");
            }
            let gzipped = request
                .headers()
                .get(hyper::header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
            let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
                lock().refused += 1;
                return http::response(StatusCode::BAD_REQUEST, "text/plain", "body");
            };
            let mut decoded = Vec::new();
            let read = if gzipped {
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&body[..]),
                    &mut decoded,
                )
                .map(drop)
            } else {
                decoded.extend_from_slice(&body);
                Ok(())
            };
            let Some(export) = read
                .ok()
                .and_then(|()| ExportTraceServiceRequest::decode(&decoded[..]).ok())
            else {
                lock().refused += 1;
                return http::response(StatusCode::BAD_REQUEST, "text/plain", "not OTLP");
            };
            let spans: usize = export
                .resource_spans
                .iter()
                .flat_map(|resource| &resource.scope_spans)
                .map(|scope| scope.spans.len())
                .sum();
            {
                let mut stats = lock();
                stats.requests += 1;
                stats.wire_bytes += body.len() as u64;
                stats.decoded_bytes += decoded.len() as u64;
                stats.runs += export.resource_spans.len() as u64;
                stats.spans += spans as u64;
            }
            http::response(
                StatusCode::OK,
                "application/x-protobuf",
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
    };
    http::serve(listener, answer, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// A memory figure of this process from /proc/self/status (`VmRSS:`, `VmHWM:`), KiB; 0 where
/// /proc is missing.
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
