//! The exporter's HTTP endpoints: /metrics, /healthz, /readyz.

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::exposition::{Exposition, Lookup, Rendered};
use crate::fleet::Fleet;
use crate::http::{self, Accepted, Body, Connection};
use crate::metrics::{Format, Metrics};
use crate::web_config::{Verdict, WebConfig};

/// What the endpoints read.
pub struct Endpoints {
    /// The /metrics body, cached between changes.
    exposition: Exposition,
    /// The pollers, for readiness and the watchdog.
    fleet: Arc<Fleet>,
}

impl Endpoints {
    /// Endpoints over `metrics` and the readiness of the `fleet`'s pollers.
    pub fn new(metrics: Arc<Metrics>, fleet: Arc<Fleet>) -> Self {
        Endpoints {
            exposition: Exposition::new(metrics),
            fleet,
        }
    }

    /// Targets whose schedule has started no poll for too long, and by how much.
    pub fn stalled(&self) -> Vec<(String, std::time::Duration)> {
        self.fleet.stalled()
    }

    /// Targets that have not completed a successful poll yet.
    pub fn not_ready(&self) -> Vec<String> {
        self.fleet.not_ready()
    }
}

/// Serves the endpoints on `listener` in plain HTTP until `shutdown` resolves; in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    shutdown: impl Future<Output = ()>,
) {
    let (_keep, web) = watch::channel(Arc::new(WebConfig::plain()));
    serve_secured(listener, endpoints, web, shutdown).await;
}

/// Serves the endpoints on `listener` with the web configuration `web` (TLS, basic auth,
/// headers) until `shutdown` resolves; in-flight requests finish. Each new connection takes
/// the TLS settings current when it arrives, each request the basic auth and headers current
/// when it arrives: a reload drops no connection.
pub async fn serve_secured(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    web: watch::Receiver<Arc<WebConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let accept = {
        let web = web.clone();
        move |stream| {
            let current = web.borrow().clone();
            secure(stream, current)
        }
    };
    let handler = move |req: Request<Incoming>| {
        let endpoints = endpoints.clone();
        let current = web.borrow().clone();
        async move {
            let mut response = match authorize(&current, &req).await {
                Some(refusal) => whole(refusal),
                None => answer(endpoints, req).await,
            };
            let headers = response.headers_mut();
            for (name, value) in current.headers() {
                headers.insert(name, value.clone());
            }
            response
        }
    };
    http::serve_with(listener, handler, accept, shutdown).await;
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Makes a new connection ready under `web`: a TLS handshake when TLS is on. A client that
/// does not complete one (plain HTTP on a TLS port, a wrong or missing client certificate)
/// is closed.
async fn secure(stream: TcpStream, web: Arc<WebConfig>) -> Option<Accepted> {
    let http2 = web.http2();
    let Some(tls) = web.tls() else {
        return Some(Accepted {
            stream: Connection::Left(stream),
            http2,
        });
    };
    let peer = stream.peer_addr().ok();
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => Some(Accepted {
            stream: Connection::Right(stream),
            http2,
        }),
        Ok(Err(err)) => {
            tracing::debug!(?peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out");
            None
        }
    }
}

/// `None` when the request may proceed, else the refusal: every path but /healthz needs the
/// credentials when basic auth is on (liveness probes cannot send them).
async fn authorize(web: &WebConfig, req: &Request<Incoming>) -> Option<Response<Body>> {
    let auth = web.basic_auth()?;
    if req.uri().path() == "/healthz" {
        return None;
    }
    match auth
        .check(req.headers().get(hyper::header::AUTHORIZATION))
        .await
    {
        Verdict::Allowed => None,
        Verdict::Denied => {
            let mut refusal =
                http::response(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n");
            refusal.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static(
                    "Basic realm=\"codearts-exporter\", charset=\"UTF-8\"",
                ),
            );
            Some(refusal)
        }
        Verdict::Busy => {
            let mut refusal = http::response(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain",
                "too many password checks at once; try again\n",
            );
            refusal.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            Some(refusal)
        }
    }
}

/// The answer of an authorized request.
async fn answer(endpoints: Arc<Endpoints>, req: Request<Incoming>) -> Response<ExporterBody> {
    if req.uri().path() == "/metrics"
        && (req.method() == Method::GET || req.method() == Method::HEAD)
    {
        metrics(endpoints, &req).await
    } else {
        whole(route(&endpoints, &req))
    }
}

/// Body of the exporter's responses: whole, or the text of /metrics streamed as it is inflated.
pub type ExporterBody = UnsyncBoxBody<Bytes, io::Error>;

/// A whole body as an [`ExporterBody`].
fn whole(response: Response<Body>) -> Response<ExporterBody> {
    response.map(|body| body.map_err(|never| match never {}).boxed_unsync())
}

/// `/metrics`: the cached rendering, or a new one made on a blocking thread, so that rendering
/// a large exposition never holds up the runtime's workers (pollers, other scrapes).
async fn metrics(endpoints: Arc<Endpoints>, req: &Request<Incoming>) -> Response<ExporterBody> {
    let format = format_of(req);
    let rendered = match endpoints.exposition.lookup(format) {
        Lookup::Serve(rendered) => rendered,
        Lookup::ServeAndRefresh(rendered) => {
            if endpoints.exposition.claim_refresh(format) {
                let endpoints = endpoints.clone();
                tokio::task::spawn_blocking(move || endpoints.exposition.refresh(format));
            }
            rendered
        }
        Lookup::Render => {
            match tokio::task::spawn_blocking(move || endpoints.exposition.current(format)).await {
                Ok(rendered) => rendered,
                Err(err) => {
                    tracing::error!(error = %err, "rendering /metrics failed");
                    return whole(http::response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "cannot render metrics\n",
                    ));
                }
            }
        }
    };
    metrics_answer(req, rendered)
}

/// The /metrics answer of `rendered`: its gzip when the scraper accepts it, else its text
/// inflated as it is sent. Public for `examples/bench.rs serve` only, which answers with it
/// a saved /metrics through the exporter's own code (the benchmark's lower bound).
pub fn metrics_answer(req: &Request<Incoming>, rendered: Arc<Rendered>) -> Response<ExporterBody> {
    if !accepts_gzip(req) {
        return inflated(rendered);
    }
    let content_type = rendered.format().content_type();
    let mut response = http::response(StatusCode::OK, content_type, rendered.gzip());
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_ENCODING,
        hyper::header::HeaderValue::from_static("gzip"),
    );
    // The body depends on both: its format (`Accept`) and its encoding.
    headers.insert(
        hyper::header::VARY,
        hyper::header::HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    whole(response)
}

/// The text of `rendered`, inflated a piece at a time as the scraper reads it: the few pieces
/// on their way in memory per scraper, never the whole text.
fn inflated(rendered: Arc<Rendered>) -> Response<ExporterBody> {
    let content_type = rendered.format().content_type();
    let pieces = rendered.pieces().map(|piece| {
        piece.map(Frame::data).inspect_err(|err| {
            // Only a bug could make our own gzip unreadable; the scraper sees a broken body.
            tracing::error!(error = %err, "cannot inflate /metrics");
        })
    });
    let mut response =
        Response::new(StreamBody::new(futures_util::stream::iter(pieces)).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        hyper::header::VARY,
        hyper::header::HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    response
}

/// `/healthz` given the stalled targets and how long they are overdue: failing makes a
/// liveness probe restart a process whose polling is wedged.
fn healthz(stalled: &[(String, std::time::Duration)]) -> (StatusCode, String) {
    if stalled.is_empty() {
        return (StatusCode::OK, "ok\n".to_string());
    }
    let targets: Vec<String> = stalled
        .iter()
        .map(|(target, overdue)| format!("{target} (overdue by {}s)", overdue.as_secs()))
        .collect();
    let body = format!(
        "polling stalled: no poll started for three periods of: {}\n",
        targets.join(", ")
    );
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

fn route(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        "/healthz" => {
            let (status, body) = healthz(&endpoints.stalled());
            http::response(status, "text/plain", body)
        }
        "/readyz" => {
            let waiting = endpoints.not_ready();
            if waiting.is_empty() {
                http::response(StatusCode::OK, "text/plain", "ready\n")
            } else {
                let body = format!(
                    "waiting for a first successful poll of: {}\n",
                    waiting.join(", ")
                );
                http::response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
            }
        }
        "/" => http::response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><h1>codearts-exporter</h1><p><a href=\"/metrics\">/metrics</a> · \
             <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p></body></html>\n",
        ),
        _ => http::response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The format a scrape asks for by its `Accept` headers.
fn format_of(req: &Request<Incoming>) -> Format {
    let values: Vec<&str> = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    negotiate(&values.join(","))
}

/// The format an `Accept` header prefers: OpenMetrics only when it weighs more than the text
/// format, protobuf only when it weighs more than both (a tie, no header, or nothing acceptable
/// is the text format, as before the others).
fn negotiate(accept: &str) -> Format {
    let protobuf = protobuf_quality(accept);
    let openmetrics = quality(accept, "application", "openmetrics-text", "1.0.0");
    let text = quality(accept, "text", "plain", "0.0.4");
    if protobuf > openmetrics.max(text) {
        Format::Protobuf
    } else if openmetrics > text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// One media range of an `Accept` header: its type, quality and other parameters.
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: f64,
    /// Parameters other than `q`, names in lower case.
    params: Vec<(String, &'a str)>,
}

impl MediaRange<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }
}

/// The media ranges of `accept`; malformed ones are skipped.
fn media_ranges(accept: &str) -> impl Iterator<Item = MediaRange<'_>> {
    accept.split(',').filter_map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let (kind, subtype) = parts.next()?.split_once('/')?;
        let mut q = 1.0;
        let mut params = Vec::new();
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase() {
                key if key == "q" => q = value.parse::<f64>().unwrap_or(0.0).clamp(0.0, 1.0),
                key => params.push((key, value)),
            }
        }
        Some(MediaRange {
            kind: kind.trim(),
            subtype: subtype.trim(),
            q,
            params,
        })
    })
}

/// The quality `accept` gives the delimited protobuf exposition: only a range that names it
/// whole (`application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;
/// encoding=delimited`) counts, never a wildcard; the highest such range's when several do.
fn protobuf_quality(accept: &str) -> f64 {
    media_ranges(accept)
        .filter(|range| {
            range.kind.eq_ignore_ascii_case("application")
                && range.subtype.eq_ignore_ascii_case("vnd.google.protobuf")
                && range.param("proto") == Some("io.prometheus.client.MetricFamily")
                && range.param("encoding") == Some("delimited")
        })
        .map(|range| range.q)
        .fold(0.0, f64::max)
}

/// The quality `accept` gives `kind/subtype` at `version`, from its most specific media range
/// that matches (RFC 9110 12.5.1): the type with that version, the type without a version,
/// `kind/*`, then `*/*`; 0 when none does. A range naming another version does not match.
fn quality(accept: &str, kind: &str, subtype: &str, version: &str) -> f64 {
    let mut best: Option<(u8, f64)> = None;
    for range in media_ranges(accept) {
        let (q, range_version) = (range.q, range.param("version"));
        let specificity = match (range.kind, range.subtype) {
            ("*", "*") => 1,
            (k, "*") if k.eq_ignore_ascii_case(kind) => 2,
            (k, s) if k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => {
                match range_version {
                    None => 3,
                    Some(v) if v == version => 4,
                    Some(_) => continue,
                }
            }
            _ => continue,
        };
        match best {
            Some((seen, seen_q)) if seen > specificity || (seen == specificity && seen_q >= q) => {}
            _ => best = Some((specificity, q)),
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// True when the request's `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(accepts_gzip_value)
}

fn accepts_gzip_value(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let refused = parts.any(|param| {
            param
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        Format, StatusCode, accepts_gzip_value, healthz, negotiate, protobuf_quality, quality,
    };

    #[test]
    fn healthz_fails_naming_each_stalled_target() {
        assert_eq!(healthz(&[]), (StatusCode::OK, "ok\n".to_string()));
        let stalled = [
            ("a".to_string(), Duration::from_millis(4_500)),
            ("b".to_string(), Duration::from_secs(61)),
        ];
        assert_eq!(
            healthz(&stalled),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "polling stalled: no poll started for three periods of: a (overdue by 4s), \
                 b (overdue by 61s)\n"
                    .to_string()
            )
        );
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip_value("gzip"));
        assert!(accepts_gzip_value("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip_value("*"));
        assert!(!accepts_gzip_value("identity"));
        assert!(!accepts_gzip_value("gzip;q=0"));
        assert!(!accepts_gzip_value("br, deflate"));
    }

    /// What Prometheus 2.42 sends on every scrape.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn openmetrics_is_served_only_to_scrapers_that_prefer_it() {
        assert_eq!(negotiate(PROMETHEUS_ACCEPT), Format::OpenMetrics);
        assert_eq!(
            negotiate("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("text/plain;q=0.2, Application/OpenMetrics-Text;q=0.9"),
            Format::OpenMetrics
        );
        // No header, anything, a tie, or the text format first: the text format.
        for accept in [
            "",
            "*/*",
            "text/plain",
            "text/plain;version=0.0.4;q=0.5,application/openmetrics-text;q=0.5",
            "text/plain,application/openmetrics-text;q=0.9",
            "application/openmetrics-text;q=0",
            // A version we do not write does not count.
            "application/openmetrics-text;version=2.0.0,text/plain;q=0.1",
            "application/json",
            "garbage;;,",
        ] {
            assert_eq!(negotiate(accept), Format::Text, "{accept:?}");
        }
    }

    /// What Prometheus 2.42 sends with `--enable-feature=native-histograms`.
    const NATIVE_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
        encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn protobuf_is_served_only_to_scrapers_that_name_it_and_prefer_it() {
        assert_eq!(negotiate(NATIVE_ACCEPT), Format::Protobuf);
        assert_eq!(
            negotiate(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; \
                 encoding=delimited; q=0.9, text/plain; q=0.5"
            ),
            Format::Protobuf
        );
        for (accept, format) in [
            // Another message, another encoding, or none named: not ours.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.Other;encoding=delimited,text/plain;q=0.1",
                Format::Text,
            ),
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text,text/plain;q=0.1",
                Format::Text,
            ),
            ("application/vnd.google.protobuf", Format::Text),
            // Weighed less than OpenMetrics, or tied with the text format.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0",
                Format::OpenMetrics,
            ),
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,text/plain;q=0.5",
                Format::Text,
            ),
            ("*/*", Format::Text),
        ] {
            assert_eq!(negotiate(accept), format, "{accept:?}");
        }
        assert_eq!(protobuf_quality(PROMETHEUS_ACCEPT), 0.0);
    }

    #[test]
    fn the_most_specific_media_range_gives_the_quality() {
        let q = |accept| quality(accept, "text", "plain", "0.0.4");
        assert_eq!(q(PROMETHEUS_ACCEPT), 0.5);
        assert_eq!(q("*/*;q=0.1"), 0.1);
        assert_eq!(q("text/*;q=0.3,*/*;q=0.9"), 0.3);
        assert_eq!(q("text/plain;q=0,text/*"), 0.0);
        assert_eq!(q("text/plain;version=0.0.4;q=0.7,text/plain;q=0.2"), 0.7);
        assert_eq!(q("text/plain;version=0.0.3,*/*;q=0.4"), 0.4);
        assert_eq!(q("text/plain;q=2"), 1.0);
        assert_eq!(q("text/plain;q=x"), 0.0);
        assert_eq!(q("application/json"), 0.0);
        let om = |accept| quality(accept, "application", "openmetrics-text", "1.0.0");
        assert_eq!(om(PROMETHEUS_ACCEPT), 1.0);
        assert_eq!(om("application/openmetrics-text;version=0.0.1;q=0.75"), 0.0);
    }
}
