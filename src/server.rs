//! The exporter's HTTP endpoints: /metrics, /healthz, /readyz.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::http::{self, Body};
use crate::metrics::Metrics;
use crate::poller::TargetPoller;

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints read.
pub struct Exporter {
    /// All metric families.
    pub metrics: Arc<Metrics>,
    /// One poller per target, for readiness.
    pub pollers: Vec<Arc<TargetPoller>>,
}

impl Exporter {
    /// Targets that have not completed a successful poll yet.
    pub fn not_ready(&self) -> Vec<&str> {
        self.pollers
            .iter()
            .filter(|p| !p.is_ready())
            .map(|p| p.label())
            .collect()
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
            async move { route(&exporter, &req) }
        },
        shutdown,
    )
    .await;
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
        "/metrics" => http::response(StatusCode::OK, TEXT_FORMAT, exporter.metrics.render()),
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
