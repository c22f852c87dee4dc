//! The exporter's metric families, and the rendering of `/metrics`.
//!
//! The exporter's own families (requests, reloads, renders, process) live in a `prometheus`
//! registry, together with the per-target families that the store's target slots own
//! ([`crate::store::target`]); the pipeline families, which grow with the number of pipelines,
//! in the store's compact series table ([`crate::store::series`]), which writes their text.
//! A rendering writes both, in the Prometheus text format or in OpenMetrics ([`Format`]).
//!
//! OpenMetrics from the `prometheus` crate's families is written here (the crate has no such
//! encoder): a counter family is named without the `_total` its samples keep; a counter whose
//! name lacks `_total` (none today, a test sees to it) would be declared `unknown`, so its
//! samples keep the name the text format gives them rather than gaining a suffix that no
//! query or alert knows.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use prometheus::proto::{Metric, MetricFamily, MetricType};
use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    Opts, Registry, TextEncoder,
};

use crate::codearts::{Api, ErrorKind, RequestObserver, RetryReason};

use crate::store::Store;
use crate::store::series::{SeriesTable, push_escaped};

/// The exposition formats of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format (0.0.4): what every scraper reads.
    Text,
    /// OpenMetrics 1.0.0, with exemplars on the run histograms' buckets.
    OpenMetrics,
    /// Prometheus' delimited protobuf exposition: the same families, the pipeline histograms
    /// with native buckets besides the classic ones (and the buckets' exemplars).
    Protobuf,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => crate::proto::CONTENT_TYPE,
        }
    }
}

/// Buckets of the API request latency histogram (seconds).
const API_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Could not create or register a metric family (a programming error, reported at start-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric family the exporter exposes, in one registry.
pub struct Metrics {
    registry: Registry,
    /// Bumped when a poll ends (or state changes outside a poll): cached renderings expire.
    version: AtomicU64,
    renders: IntCounter,
    render_seconds: Counter,
    /// The pipeline series, written after the exporter's own families.
    series: Arc<SeriesTable>,
    api_requests: IntCounterVec,
    api_request_duration: HistogramVec,
    api_retries: IntCounterVec,
    api_errors: IntCounterVec,
    auth_refreshes: IntCounterVec,
    config_reloads: Reloads,
    web_config_reloads: Reloads,
}

/// The two families of a reloaded file: reloads by result, and whether the last one succeeded.
struct Reloads {
    total: IntCounterVec,
    last_successful: Gauge,
}

impl Reloads {
    /// Registers `{prefix}_reload_total{result}` and `{prefix}_last_reload_successful` (1 until
    /// a reload fails).
    fn register(
        registry: &Registry,
        prefix: &str,
        total_help: &str,
        last_help: &str,
    ) -> Result<Reloads, MetricsError> {
        let total = IntCounterVec::new(
            Opts::new(format!("{prefix}_reload_total"), total_help),
            &["result"],
        )?;
        registry.register(Box::new(total.clone()))?;
        for result in ["success", "failure"] {
            total.with_label_values(&[result]);
        }
        let last_successful = Gauge::new(format!("{prefix}_last_reload_successful"), last_help)?;
        registry.register(Box::new(last_successful.clone()))?;
        last_successful.set(1.0);
        Ok(Reloads {
            total,
            last_successful,
        })
    }

    fn record(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.total.with_label_values(&[result]).inc();
        self.last_successful.set(if ok { 1.0 } else { 0.0 });
    }
}

impl Metrics {
    /// Creates and registers every family; the targets' and pipelines' series come from the
    /// store that owns them.
    pub fn new(store: &Store) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        for family in store.collectors() {
            registry.register(family)?;
        }
        let series = store.series().clone();
        let histogram = |name: &str,
                         help: &str,
                         buckets: &[f64],
                         labels: &[&str]|
         -> Result<HistogramVec, MetricsError> {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let vec = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let api_request_duration = histogram(
            "codearts_exporter_api_request_duration_seconds",
            "Latency of requests to the CodeArts API.",
            &API_BUCKETS,
            &["api"],
        )?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let api_requests = counter(
            "codearts_exporter_api_requests_total",
            "Requests to the CodeArts API by HTTP status code (or timeout, connect, error).",
            &["api", "code"],
        )?;
        let api_retries = counter(
            "codearts_exporter_api_retries_total",
            "Requests to the CodeArts API retried, by reason.",
            &["api", "reason"],
        )?;
        let api_errors = counter(
            "codearts_exporter_api_errors_total",
            "Calls to the CodeArts API that failed after any retries, by kind (http: an error status; auth: credentials rejected, or no IAM token; transport: time-out or connection; decode: unreadable body or list entry; too_large: an answer over codearts.max_response_bytes).",
            &["api", "kind"],
        )?;
        // Known label sets start at 0, so rate() and alerts see them before the first retry.
        for api in Api::ALL {
            for reason in RetryReason::ALL {
                api_retries.with_label_values(&[api.as_str(), reason.as_str()]);
            }
            for kind in ErrorKind::ALL {
                api_errors.with_label_values(&[api.as_str(), kind.as_str()]);
            }
        }
        let auth_refreshes = counter(
            "codearts_exporter_auth_refresh_total",
            "Attempts to obtain an IAM token (method password), by result.",
            &["result"],
        )?;
        let build_info = GaugeVec::new(
            Opts::new(
                "codearts_exporter_build_info",
                "Build of the exporter; the value is always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        registry.register(Box::new(build_info))?;
        let renders = IntCounter::new(
            "codearts_exporter_metrics_renders_total",
            "Renderings of /metrics; scrapes between changes share one.",
        )?;
        registry.register(Box::new(renders.clone()))?;
        let render_seconds = Counter::new(
            "codearts_exporter_metrics_render_seconds_total",
            "Time spent rendering /metrics (text and gzip); divided by the renderings, the cost of one.",
        )?;
        registry.register(Box::new(render_seconds.clone()))?;
        let config_reloads = Reloads::register(
            &registry,
            "codearts_exporter_config",
            "Configuration reloads (SIGHUP or a changed file) by result.",
            "1 when the last configuration reload succeeded (or none happened), else 0.",
        )?;
        let web_config_reloads = Reloads::register(
            &registry,
            "codearts_exporter_web_config",
            "Reloads of the web configuration file (SIGHUP, or it or a certificate it names changed) by result.",
            "1 when the last reload of the web configuration file succeeded (or none happened), else 0.",
        )?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            version: AtomicU64::new(0),
            renders,
            render_seconds,
            series,
            api_requests,
            api_request_duration,
            api_retries,
            api_errors,
            auth_refreshes,
            config_reloads,
            web_config_reloads,
        })
    }

    /// Writes the exposition of every family to `out` in `format`.
    fn write_to(&self, format: Format, out: &mut dyn Write) -> io::Result<()> {
        self.renders.inc();
        let mut exporter = Vec::with_capacity(64 * 1024);
        let families = self.registry.gather();
        match format {
            Format::Text => {
                TextEncoder::new()
                    .encode(&families, &mut exporter)
                    .map_err(io::Error::other)?;
                out.write_all(&exporter)?;
                self.series.write_text(out)
            }
            Format::OpenMetrics => {
                write_openmetrics(&families, &mut exporter)?;
                out.write_all(&exporter)?;
                self.series.write_openmetrics(out)?;
                out.write_all(b"# EOF\n")
            }
            Format::Protobuf => {
                write_protobuf(&families, &mut exporter)?;
                out.write_all(&exporter)?;
                self.series.write_protobuf(out)
            }
        }
    }

    /// The text exposition of every family, for tests: `/metrics` serves [`Self::render_gzip`].
    #[cfg(test)]
    pub(crate) fn render(&self) -> Vec<u8> {
        self.render_as(Format::Text)
    }

    /// The exposition of every family in `format`, for tests.
    #[cfg(test)]
    pub(crate) fn render_as(&self, format: Format) -> Vec<u8> {
        let started = Instant::now();
        let mut text = Vec::with_capacity(64 * 1024);
        if let Err(err) = self.write_to(format, &mut text) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        self.render_seconds.inc_by(started.elapsed().as_secs_f64());
        text
    }

    /// The text exposition of every family, gzip-compressed as it is written: the text itself
    /// is never held whole (at ten thousand pipelines it is hundreds of megabytes, the gzip a
    /// few). `expected` is the size the gzip will likely have (the previous rendering's): it
    /// is made in one allocation of about that size, not grown by doubling, and holds no more
    /// than it needs once done.
    pub fn render_gzip(&self, expected: usize) -> Vec<u8> {
        self.render_gzip_as(Format::Text, expected)
    }

    /// [`Self::render_gzip`] in `format`.
    pub fn render_gzip_as(&self, format: Format, expected: usize) -> Vec<u8> {
        let started = Instant::now();
        // A little over the previous size: the metrics change little between two renderings.
        let capacity = (expected + expected / 16).max(256 * 1024);
        let encoder = GzEncoder::new(Vec::with_capacity(capacity), Compression::fast());
        // Small writes go to the buffer, not to the compressor one by one.
        let mut out = io::BufWriter::with_capacity(256 * 1024, encoder);
        let written = self.write_to(format, &mut out).and_then(|()| {
            out.into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .finish()
        });
        self.render_seconds.inc_by(started.elapsed().as_secs_f64());
        match written {
            Ok(mut compressed) => {
                // Several renderings live at once (the cached one, those still being sent), so
                // slack would count several times.
                if compressed.capacity() - compressed.len() > compressed.len() / 16 {
                    compressed.shrink_to_fit();
                }
                compressed
            }
            Err(err) => {
                // Writing to memory cannot fail; if it ever did, serve an empty exposition.
                tracing::error!(error = %err, "cannot encode metrics");
                Vec::new()
            }
        }
    }

    /// Changes with every change a rendering must show; a rendering of an older version is
    /// stale. The pipeline series mark their own changes ([`SeriesTable::changed`]).
    pub fn version(&self) -> u64 {
        self.version
            .load(Ordering::Acquire)
            .wrapping_add(self.series.version())
    }

    /// Marks the exporter's families changed; every method that changes one calls it.
    fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a configuration reload.
    pub fn config_reloaded(&self, ok: bool) {
        self.config_reloads.record(ok);
        self.changed();
    }

    /// Counts a reload of the web configuration file, successful or rejected.
    pub fn web_config_reloaded(&self, ok: bool) {
        self.web_config_reloads.record(ok);
        self.changed();
    }
}

/// A number as OpenMetrics writes it (`+Inf`, `-Inf`, `NaN` included).
fn openmetrics_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        value.to_string()
    }
}

/// One OpenMetrics sample of `metric`: `name{labels[,extra]} value`.
fn openmetrics_sample(
    out: &mut Vec<u8>,
    name: &str,
    metric: &Metric,
    extra: Option<(&str, &str)>,
    value: f64,
) {
    let mut line = String::with_capacity(128);
    line.push_str(name);
    let labels = metric
        .get_label()
        .iter()
        .map(|pair| (pair.name(), pair.value()))
        .chain(extra);
    for (index, (label, value)) in labels.enumerate() {
        line.push(if index == 0 { '{' } else { ',' });
        line.push_str(label);
        line.push_str("=\"");
        push_escaped(&mut line, value);
        line.push('"');
    }
    if !metric.get_label().is_empty() || extra.is_some() {
        line.push('}');
    }
    line.push(' ');
    line.push_str(&openmetrics_number(value));
    line.push('\n');
    out.extend_from_slice(line.as_bytes());
}

/// The OpenMetrics exposition of the `prometheus` crate's `families` (see the module doc for
/// counters).
fn write_openmetrics(families: &[MetricFamily], out: &mut Vec<u8>) -> io::Result<()> {
    for family in families {
        let name = family.name();
        let kind = family.get_field_type();
        let (declared, type_name) = match kind {
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name, "unknown"),
            },
            MetricType::GAUGE => (name, "gauge"),
            MetricType::HISTOGRAM => (name, "histogram"),
            MetricType::SUMMARY => (name, "summary"),
            MetricType::UNTYPED => (name, "unknown"),
        };
        if !family.help().is_empty() {
            let mut help = String::with_capacity(family.help().len());
            push_escaped(&mut help, family.help());
            writeln!(out, "# HELP {declared} {help}")?;
        }
        writeln!(out, "# TYPE {declared} {type_name}")?;
        for metric in family.get_metric() {
            match kind {
                MetricType::COUNTER => {
                    openmetrics_sample(out, name, metric, None, metric.get_counter().get_value());
                }
                MetricType::GAUGE => {
                    openmetrics_sample(out, name, metric, None, metric.get_gauge().get_value());
                }
                // Nothing registers untyped metrics (the crate's own text encoder cannot
                // write them either): the family is declared, without samples.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let bucket = format!("{name}_bucket");
                    let mut infinite = false;
                    for b in histogram.get_bucket() {
                        let bound = b.upper_bound();
                        infinite |= bound == f64::INFINITY;
                        let le = openmetrics_number(bound);
                        let count = b.cumulative_count() as f64;
                        openmetrics_sample(out, &bucket, metric, Some(("le", &le)), count);
                    }
                    let count = histogram.get_sample_count() as f64;
                    if !infinite {
                        openmetrics_sample(out, &bucket, metric, Some(("le", "+Inf")), count);
                    }
                    let sum = histogram.get_sample_sum();
                    openmetrics_sample(out, &format!("{name}_sum"), metric, None, sum);
                    openmetrics_sample(out, &format!("{name}_count"), metric, None, count);
                }
                MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    for q in summary.get_quantile() {
                        let quantile = openmetrics_number(q.quantile());
                        let label = Some(("quantile", quantile.as_str()));
                        openmetrics_sample(out, name, metric, label, q.value());
                    }
                    let sum = summary.sample_sum();
                    openmetrics_sample(out, &format!("{name}_sum"), metric, None, sum);
                    let count = summary.sample_count() as f64;
                    openmetrics_sample(out, &format!("{name}_count"), metric, None, count);
                }
            }
        }
    }
    Ok(())
}

/// The protobuf exposition of the `prometheus` crate's `families`: each as a
/// `MetricFamily` of ours, with the same name, help, type, labels and values.
fn write_protobuf(families: &[MetricFamily], out: &mut Vec<u8>) -> io::Result<()> {
    use crate::proto;
    for family in families {
        let kind = match family.get_field_type() {
            MetricType::COUNTER => proto::MetricType::Counter,
            MetricType::GAUGE => proto::MetricType::Gauge,
            MetricType::HISTOGRAM => proto::MetricType::Histogram,
            MetricType::SUMMARY => proto::MetricType::Summary,
            // Nothing registers untyped metrics (nor can the text format write them).
            MetricType::UNTYPED => continue,
        };
        let mut metrics = proto::EncodedMetrics::default();
        for metric in family.get_metric() {
            let mut encoded = proto::Metric {
                label: metric
                    .get_label()
                    .iter()
                    .map(|pair| proto::LabelPair::new(pair.name(), pair.value()))
                    .collect(),
                ..proto::Metric::default()
            };
            match kind {
                proto::MetricType::Counter => {
                    let value = Some(metric.get_counter().get_value());
                    encoded.counter = Some(proto::Counter { value });
                }
                proto::MetricType::Gauge => {
                    let value = Some(metric.get_gauge().get_value());
                    encoded.gauge = Some(proto::Gauge { value });
                }
                proto::MetricType::Histogram => {
                    let histogram = metric.get_histogram();
                    encoded.histogram = Some(proto::Histogram {
                        sample_count: Some(histogram.get_sample_count()),
                        sample_sum: Some(histogram.get_sample_sum()),
                        bucket: histogram
                            .get_bucket()
                            .iter()
                            .map(|b| proto::Bucket {
                                cumulative_count: Some(b.cumulative_count()),
                                upper_bound: Some(b.upper_bound()),
                                exemplar: None,
                            })
                            .collect(),
                        ..proto::Histogram::default()
                    });
                }
                proto::MetricType::Summary | proto::MetricType::Untyped => {
                    let summary = metric.get_summary();
                    encoded.summary = Some(proto::Summary {
                        sample_count: Some(summary.sample_count()),
                        sample_sum: Some(summary.sample_sum()),
                        quantile: summary
                            .get_quantile()
                            .iter()
                            .map(|q| proto::Quantile {
                                quantile: Some(q.quantile()),
                                value: Some(q.value()),
                            })
                            .collect(),
                    });
                }
            }
            metrics.push(&encoded);
        }
        let header = proto::MetricFamily {
            name: Some(family.name().to_string()),
            help: Some(family.help().to_string()),
            r#type: Some(kind as i32),
            metric: Vec::new(),
        };
        metrics.write(out, &header)?;
    }
    Ok(())
}

impl RequestObserver for Metrics {
    fn request_done(&self, api: Api, code: &str, elapsed: Duration) {
        self.api_requests
            .with_label_values(&[api.as_str(), code])
            .inc();
        self.api_request_duration
            .with_label_values(&[api.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    fn retried(&self, api: Api, reason: RetryReason) {
        self.api_retries
            .with_label_values(&[api.as_str(), reason.as_str()])
            .inc();
    }

    fn failed(&self, api: Api, kind: ErrorKind) {
        self.api_errors
            .with_label_values(&[api.as_str(), kind.as_str()])
            .inc();
    }

    fn auth_refresh(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.auth_refreshes.with_label_values(&[result]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).expect("utf-8")
    }

    #[test]
    fn exporter_families_are_present() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let m = Metrics::new(&store).expect("metrics");
        let slot = store.target("t", Duration::from_secs(60));
        m.request_done(Api::V5Status, "200", Duration::from_millis(20));
        m.retried(Api::RunDetail, RetryReason::Throttled);
        m.failed(Api::RunList, ErrorKind::Decode);
        slot.series(|series| {
            series.poll_finished(Duration::from_millis(30), true, 1234.0);
            series.poll_skipped();
        });
        let all = text(&m);
        for needle in [
            "codearts_exporter_build_info{version=",
            "codearts_exporter_api_requests_total{api=\"v5_status\",code=\"200\"} 1",
            "codearts_exporter_api_retries_total{api=\"run_detail\",reason=\"throttled\"} 1",
            "codearts_exporter_api_errors_total{api=\"run_list\",kind=\"decode\"} 1",
            "codearts_exporter_api_errors_total{api=\"v5_status\",kind=\"transport\"} 0",
            "codearts_exporter_api_errors_total{api=\"iam_token\",kind=\"too_large\"} 0",
            "codearts_exporter_api_errors_total{api=\"v5_status\",kind=\"auth\"} 0",
            "codearts_exporter_api_retries_total{api=\"iam_projects\",reason=\"unauthorized\"} 0",
            "codearts_exporter_api_request_duration_seconds_count{api=\"v5_status\"} 1",
            "codearts_exporter_poll_duration_seconds_count{target=\"t\"} 1",
            "codearts_exporter_target_up{target=\"t\"} 1",
            "codearts_exporter_last_successful_poll_timestamp_seconds{target=\"t\"} 1234",
            "codearts_exporter_polls_skipped_total{target=\"t\"} 1",
        ] {
            assert!(all.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn a_gzip_rendering_holds_little_more_memory_than_its_size() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let m = Metrics::new(&store).expect("metrics");
        let slots: Vec<_> = (0..2000)
            .map(|i| store.target(&format!("target-{i}"), Duration::from_secs(60)))
            .collect();
        for slot in &slots {
            slot.series(|series| series.poll_finished(Duration::from_millis(5), true, 1.0));
        }
        // Without a hint (the first rendering), with the previous size, and with one far
        // too small: whatever the guess, the slack is trimmed.
        let first = m.render_gzip(0);
        for expected in [0, first.len(), first.len() / 10] {
            let gzip = m.render_gzip(expected);
            assert!(gzip.len() > 64 * 1024, "{} bytes", gzip.len());
            assert!(
                gzip.capacity() - gzip.len() <= gzip.len() / 16,
                "expected {expected}: {} of {} bytes used",
                gzip.len(),
                gzip.capacity()
            );
        }
    }

    /// Metrics with an API request, a poll of target `t` and one completed run recorded;
    /// the store and the handles that keep their series come along.
    struct Recorded {
        m: Metrics,
        _slot: Arc<crate::store::TargetSlot>,
        _series: crate::store::series::Series,
        _store: Store,
    }

    fn recorded() -> Recorded {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let m = Metrics::new(&store).expect("metrics");
        let slot = store.target("t", Duration::from_secs(60));
        m.request_done(Api::V5Status, "200", Duration::from_millis(20));
        slot.series(|series| series.poll_finished(Duration::from_millis(30), true, 1234.0));
        let mut series = store.new_series("p", "id", "name");
        let run = crate::codearts::model::Run::example("id", "run-1".into(), 1, 100.0, Some(160.0));
        series.set_last_completed(&run);
        series.observe_completed(&run);
        series.publish();
        Recorded {
            m,
            _slot: slot,
            _series: series,
            _store: store,
        }
    }

    #[test]
    fn the_whole_protobuf_exposition_has_every_family_of_the_text_format() {
        use prost::Message;
        let Recorded { m, .. } = &recorded();
        let body = m.render_as(Format::Protobuf);
        let mut rest = body.as_slice();
        let mut families = Vec::new();
        while !rest.is_empty() {
            let family = crate::proto::MetricFamily::decode_length_delimited(&mut rest)
                .expect("a delimited family");
            families.push((
                family.name.clone().unwrap_or_default(),
                family.r#type.unwrap_or(-1),
                family.metric.len(),
            ));
        }
        let text = text(m);
        let declared: Vec<(String, i32)> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_once(' '))
            .map(|(name, kind)| {
                let kind = match kind {
                    "counter" => crate::proto::MetricType::Counter,
                    "gauge" => crate::proto::MetricType::Gauge,
                    "histogram" => crate::proto::MetricType::Histogram,
                    other => panic!("{name}: {other}"),
                };
                (name.to_string(), kind as i32)
            })
            .collect();
        let ours: Vec<(String, i32)> = families.iter().map(|(n, k, _)| (n.clone(), *k)).collect();
        assert_eq!(ours, declared);
        // Each family has as many metrics as the text has label sets (histograms: `_count`).
        for (name, kind, metrics) in &families {
            let series = if *kind == crate::proto::MetricType::Histogram as i32 {
                format!("{name}_count")
            } else {
                name.clone()
            };
            let samples = text
                .lines()
                .filter(|line| {
                    line.starts_with(&format!("{series}{{"))
                        || line.starts_with(&format!("{series} "))
                })
                .count();
            assert_eq!(*metrics, samples, "{name}");
        }
    }

    #[test]
    fn the_whole_openmetrics_exposition_is_valid_and_ends_with_eof() {
        let Recorded { m, .. } = &recorded();
        let om = String::from_utf8(m.render_as(Format::OpenMetrics)).expect("utf-8");
        let samples = crate::store::series::exposition::parse_openmetrics(&om);
        // Every counter of the exporter ends with `_total`: none is declared `unknown`.
        assert!(!om.contains(" unknown\n"), "{om}");
        for family in [
            "codearts_exporter_api_requests",
            "codearts_exporter_metrics_renders",
            "codearts_exporter_config_reload",
            "codearts_exporter_polls_skipped",
            "codearts_pipeline_runs",
        ] {
            assert!(
                om.contains(&format!("# TYPE {family} counter\n")),
                "{family}"
            );
        }
        assert!(om.contains("# TYPE codearts_exporter_build_info gauge\n"));
        assert!(om.contains("codearts_exporter_api_request_duration_seconds_bucket{api=\"v5_status\",le=\"+Inf\"} 1\n"));
        let exemplar = samples
            .iter()
            .find_map(|s| s.exemplar.as_ref())
            .expect("the run's bucket has an exemplar");
        assert_eq!(exemplar.labels["run_id"], "run-1");
        assert_eq!(exemplar.timestamp, Some(160.0));
        // The text format has the same samples, without exemplars or EOF.
        let text = text(m);
        assert!(!text.contains("# EOF") && !text.contains(" # {"));
        let names = |samples: Vec<String>| -> std::collections::BTreeSet<String> {
            samples.into_iter().collect()
        };
        assert_eq!(
            names(samples.iter().map(|s| s.sample.name.clone()).collect()),
            names(
                crate::store::series::exposition::parse_metrics(&text)
                    .into_iter()
                    .map(|s| s.name)
                    .collect()
            )
        );
    }
}
