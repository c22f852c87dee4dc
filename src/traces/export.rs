//! Delivery of the pending traces to the collector, in the background: oldest first, many runs
//! per request, retried with backoff (or the collector's `Retry-After`) while the collector is
//! down, slow or busy, and dropped with a log line when it refuses them for good. Polling
//! never waits for it: the pollers only add to the store's outbox.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::backoff::{backoff, retry_after};
use crate::config::TracesConfig;
use crate::store::Store;
use crate::store::durable::StoredTrace;
use crate::store::outbox::{DropReason, ExportResult, Outbox};

/// Runs per export request at most.
const MAX_RUNS_PER_REQUEST: usize = 200;
/// Encoded bytes per export request, about (before gzip): well under the 4 MiB that
/// collectors accept by default.
const MAX_BYTES_PER_REQUEST: usize = 1 << 20;
/// The first wait after a failure; doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts, the collector's `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The answer's body read at most (its partial success, or the reason of a refusal).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the exporter cannot send traces.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A configured header does not make an HTTP header (checked by the configuration too).
    #[error("traces.headers.{0}: not a valid HTTP header")]
    Header(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the trace exporter's HTTP client: {0}")]
    Client(String),
}

/// How one export request ended.
enum Answer {
    /// Taken (perhaps in part: the collector said so in the answer, which is logged).
    Taken,
    /// To try again, after the collector's `Retry-After` when it gave one.
    Retry(ExportResult, Option<Duration>, String),
    /// Refused for good: dropped.
    Refused(String),
}

/// Sends the store's pending traces to `{endpoint}/v1/traces`.
pub struct Exporter {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    store: Arc<Store>,
    outbox: Arc<Outbox>,
}

impl Exporter {
    /// An exporter of `store`'s outbox to the collector of `config`; `None` when the store keeps
    /// no traces.
    pub fn new(config: &TracesConfig, store: Arc<Store>) -> Result<Option<Exporter>, ExportError> {
        let Some(outbox) = store.outbox().cloned() else {
            return Ok(None);
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ExportError::Header(name.clone()))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| ExportError::Header(name.clone()))?;
            // Kept out of any debug output of the request.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("codearts-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|err| ExportError::Client(err.to_string()))?;
        Ok(Some(Exporter {
            http,
            url: config.traces_url(),
            headers,
            store,
            outbox,
        }))
    }

    /// Delivers pending traces as they come, until `stop` is cancelled: a request in flight
    /// is finished (and settled) first, so an orderly stop sends nothing twice.
    pub async fn run(&self, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let batch = self
                .outbox
                .oldest(MAX_RUNS_PER_REQUEST, MAX_BYTES_PER_REQUEST);
            let pause = if batch.is_empty() {
                None
            } else {
                match self.send(&batch).await {
                    Some(wait) => {
                        failures += 1;
                        let wait = wait
                            .unwrap_or_else(|| backoff(FIRST_BACKOFF, failures, MAX_BACKOFF))
                            .min(MAX_BACKOFF);
                        Some(wait)
                    }
                    None => {
                        failures = 0;
                        continue;
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.outbox.entered(), if pause.is_none() => {}
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
            }
        }
    }

    /// Sends what is pending until nothing is, or `within` has passed (the last delivery of an
    /// orderly stop; no retry waits). Returns how many traces are left.
    pub async fn flush(&self, within: Duration) -> usize {
        let flushing = async {
            loop {
                let batch = self
                    .outbox
                    .oldest(MAX_RUNS_PER_REQUEST, MAX_BYTES_PER_REQUEST);
                if batch.is_empty() || self.send(&batch).await.is_some() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, flushing).await;
        self.outbox.len()
    }

    /// Sends `batch` once and settles it: `None` when it is done with (taken, or dropped),
    /// else how long the collector asked to wait, if it did.
    async fn send(&self, batch: &[StoredTrace]) -> Option<Option<Duration>> {
        let answer = self.post(batch).await;
        let runs = batch.len();
        match answer {
            Answer::Taken => {
                self.outbox.exported(ExportResult::Success);
                self.outbox.settle(batch, None);
                tracing::debug!(runs, "trace export: delivered");
            }
            Answer::Refused(reason) => {
                self.outbox.exported(ExportResult::Rejected);
                self.outbox.settle(batch, Some(DropReason::Rejected));
                tracing::error!(runs, %reason, "trace export: the collector refused the traces; dropped");
            }
            Answer::Retry(result, wait, reason) => {
                self.outbox.exported(result);
                tracing::warn!(runs, result = result.as_str(), %reason, pending = self.outbox.len(), "trace export failed; retrying");
                return Some(wait);
            }
        }
        self.store.commit_settled_traces().await;
        None
    }

    /// POSTs `batch` as one request: each trace is an encoded `ExportTraceServiceRequest`, and
    /// protobuf reads concatenated messages as one whose repeated fields are joined.
    async fn post(&self, batch: &[StoredTrace]) -> Answer {
        let body = match gzip(batch) {
            Ok(body) => body,
            Err(err) => return Answer::Retry(ExportResult::Unreachable, None, err.to_string()),
        };
        let sent = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            // Without the URL: it may carry credentials.
            Err(err) => {
                let reason = err.without_url().to_string();
                return Answer::Retry(ExportResult::Unreachable, None, reason);
            }
        };
        let status = response.status();
        let wait = response.headers().get("retry-after").and_then(retry_after);
        let text = read_capped(&mut response).await;
        match status {
            s if s.is_success() => {
                if let Ok(answer) = ExportTraceServiceResponse::decode(text.as_ref())
                    && let Some(partial) = answer.partial_success
                    && partial.rejected_spans > 0
                {
                    tracing::warn!(
                        rejected_spans = partial.rejected_spans,
                        reason = %partial.error_message,
                        "trace export: the collector took the request but rejected some spans"
                    );
                }
                Answer::Taken
            }
            StatusCode::TOO_MANY_REQUESTS => {
                Answer::Retry(ExportResult::Throttled, wait, describe(status, &text))
            }
            s if s.is_server_error() => {
                Answer::Retry(ExportResult::ServerError, wait, describe(status, &text))
            }
            // A redirect or an informational answer is not a collector's: try again later.
            s if !s.is_client_error() => {
                Answer::Retry(ExportResult::ServerError, wait, describe(status, &text))
            }
            _ => Answer::Refused(describe(status, &text)),
        }
    }
}

/// The traces of `batch`, one after the other, gzipped.
fn gzip(batch: &[StoredTrace]) -> std::io::Result<Vec<u8>> {
    let raw: usize = batch.iter().map(|trace| trace.body.len()).sum();
    let mut encoder = GzEncoder::new(Vec::with_capacity(raw / 4), Compression::fast());
    for trace in batch {
        encoder.write_all(&trace.body)?;
    }
    encoder.finish()
}

/// The answer's body, at most [`MAX_ANSWER_BYTES`] of it (a collector that sends far too much
/// is not read further).
async fn read_capped(response: &mut reqwest::Response) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    body.into()
}

/// A status and the start of its body, for the log: a collector's reason is plain text or a
/// protobuf `Status` whose message is readable text among its bytes.
fn describe(status: StatusCode, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if text.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_requests_read_as_one_batch() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
        let one = |name: &str| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                schema_url: name.to_string(),
                ..ResourceSpans::default()
            }],
        };
        let batch: Vec<StoredTrace> = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(seq, name)| StoredTrace {
                seq: seq as i64,
                body: one(name).encode_to_vec().into(),
            })
            .collect();
        let zipped = gzip(&batch).expect("gzip");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut raw)
            .expect("gunzip");
        let decoded = ExportTraceServiceRequest::decode(&raw[..]).expect("decodes");
        let names: Vec<&str> = decoded
            .resource_spans
            .iter()
            .map(|spans| spans.schema_url.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn a_refusal_is_described_by_its_status_and_readable_reason() {
        assert_eq!(
            describe(StatusCode::BAD_REQUEST, b"\x08\x03\x12\x0bbad payload"),
            "HTTP 400 Bad Request: bad payload"
        );
        assert_eq!(describe(StatusCode::NOT_FOUND, b""), "HTTP 404 Not Found");
    }
}
