//! The exporter's HTTP endpoints: /metrics, /healthz, /readyz.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::exposition::Exposition;
use crate::fleet::Fleet;
use crate::http::{self, Body};
use crate::metrics::Metrics;

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints read.
pub struct Exporter {
    /// The /metrics body, cached between changes.
    exposition: Exposition,
    /// The pollers, for readiness; none for a fixed body.
    fleet: Option<Arc<Fleet>>,
}

impl Exporter {
    /// Endpoints over `metrics` and the readiness of the `fleet`'s pollers.
    pub fn new(metrics: Arc<Metrics>, fleet: Arc<Fleet>) -> Self {
        Exporter {
            exposition: Exposition::new(metrics),
            fleet: Some(fleet),
        }
    }

    /// Endpoints that serve `text` as /metrics and never render: the lower bound of a scrape's
    /// cost, for benchmarks.
    pub fn frozen(text: bytes::Bytes) -> Self {
        Exporter {
            exposition: Exposition::frozen(text),
            fleet: None,
        }
    }

    /// Targets that have not completed a successful poll yet.
    pub fn not_ready(&self) -> Vec<String> {
        self.fleet
            .as_ref()
            .map_or_else(Vec::new, |fleet| fleet.not_ready())
    }
}

/// Serves the endpoints on `listener` until `shutdown` resolves; in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    shutdown: impl Future<Output = ()>,
) {
    http::serve(
        listener,
        move |req| {
            let exporter = exporter.clone();
            async move {
                if req.uri().path() == "/metrics"
                    && (req.method() == Method::GET || req.method() == Method::HEAD)
                {
                    metrics(exporter, &req).await
                } else {
                    route(&exporter, &req)
                }
            }
        },
        shutdown,
    )
    .await;
}

/// `/metrics`: the cached rendering, or a new one made on a blocking thread, so that rendering
/// a large exposition never holds up the runtime's workers (pollers, other scrapes).
async fn metrics(exporter: Arc<Exporter>, req: &Request<Incoming>) -> Response<Body> {
    let rendered = match exporter.exposition.cached() {
        Some(rendered) => rendered,
        None => match tokio::task::spawn_blocking(move || exporter.exposition.current()).await {
            Ok(rendered) => rendered,
            Err(err) => {
                tracing::error!(error = %err, "rendering /metrics failed");
                return http::response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "cannot render metrics\n",
                );
            }
        },
    };
    if !accepts_gzip(req) {
        let text = match rendered.inflated() {
            Some(text) => text,
            // Inflating a large exposition is work too: off the workers as well.
            None => tokio::task::spawn_blocking(move || rendered.text())
                .await
                .unwrap_or_default(),
        };
        return http::response(StatusCode::OK, TEXT_FORMAT, text);
    }
    let mut response = http::response(StatusCode::OK, TEXT_FORMAT, rendered.gzip());
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_ENCODING,
        hyper::header::HeaderValue::from_static("gzip"),
    );
    headers.insert(
        hyper::header::VARY,
        hyper::header::HeaderValue::from_static("Accept-Encoding"),
    );
    response
}

fn route(exporter: &Exporter, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        "/healthz" => http::response(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let waiting = exporter.not_ready();
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
    use super::accepts_gzip_value;

    #[test]
    fn gzip_is_used_only_when_accepted() {
        assert!(accepts_gzip_value("gzip"));
        assert!(accepts_gzip_value("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip_value("*"));
        assert!(!accepts_gzip_value("identity"));
        assert!(!accepts_gzip_value("gzip;q=0"));
        assert!(!accepts_gzip_value("br, deflate"));
    }
}
