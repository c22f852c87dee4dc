//! Minimal hyper 1 plumbing shared by the exporter's server and the simulator.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

/// Response body type used by every handler in the project.
pub type Body = Full<Bytes>;

/// Builds a response with a status, a content type and a body.
pub fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        resp.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    resp
}

/// Builds a JSON response from an already serialised value.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    response(status, "application/json;charset=UTF-8", value.to_string())
}

/// A connection the server speaks HTTP on: plain TCP, or TLS over it.
pub type Connection =
    tokio_util::either::Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// A connection ready for HTTP: its stream, and whether it may speak HTTP/2.
pub struct Accepted {
    /// The stream.
    pub stream: Connection,
    /// Whether HTTP/2 is served (else HTTP/1 only).
    pub http2: bool,
}

/// Serves connections from `listener` with `handler` until `shutdown` resolves,
/// then lets in-flight requests finish.
pub async fn serve<H, Fut, B>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let plain = |stream| async move {
        Some(Accepted {
            stream: Connection::Left(stream),
            http2: true,
        })
    };
    serve_with(listener, handler, plain, shutdown).await;
}

/// Like [`serve`], with each accepted TCP stream made ready by `accept` (a TLS handshake, say)
/// in the connection's own task; a stream `accept` turns down (`None`) is closed.
pub async fn serve_with<H, Fut, B, A, AFut>(
    listener: TcpListener,
    handler: H,
    accept: A,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    A: Fn(TcpStream) -> AFut,
    AFut: Future<Output = Option<Accepted>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // Accept errors (e.g. EMFILE) are transient: log and keep serving.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ready = accept(stream);
                let handler = handler.clone();
                // Taken now: a shutdown also waits for connections still being made ready.
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Some(Accepted { stream, http2 }) = ready.await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    if !http2 {
                        builder = builder.http1_only();
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(err) = watcher.watch(conn).await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
