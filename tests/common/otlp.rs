//! A test OTLP/HTTP trace receiver on loopback: it decodes what it receives with the
//! `opentelemetry-proto` crate's own messages (not the exporter's encoder), keeps every
//! request, and answers as the test tells it (taken, a status with `Retry-After`, a hang), or
//! is not there at all while it is down.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message as _;
use tokio::net::TcpListener;

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200 with an empty `ExportTraceServiceResponse`.
    Take,
    /// This status, with `Retry-After` seconds when given, and nothing kept.
    Status(u16, Option<u64>),
    /// Never answers (until the exporter's time-out cuts the request).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers, names lower-case.
    pub headers: BTreeMap<String, String>,
    /// What it carried, one `ResourceSpans` per run.
    pub runs: Vec<ResourceSpans>,
    /// Whether it was taken (answered 200).
    pub taken: bool,
}

/// The receiver: bound to a fixed loopback port, up or down.
pub struct Receiver {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a free port, up and taking every request.
    pub async fn start() -> Receiver {
        let mut receiver = Receiver::down().await;
        receiver.up().await;
        receiver
    }

    /// A receiver on a free port that is down: connections to it are refused until [`up`].
    pub async fn down() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        Receiver {
            addr,
            answer: Arc::new(Mutex::new(Answer::Take)),
            received: Arc::new(Mutex::new(Vec::new())),
            stop: None,
            task: None,
        }
    }

    /// The endpoint to configure: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts listening (again) on its port.
    pub async fn up(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                // The port may linger a moment after the last close.
                Err(err) if tries < 100 => {
                    tries += 1;
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("cannot bind {}: {err}", self.addr),
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (answer, received) = (self.answer.clone(), self.received.clone());
        let handler = move |request: hyper::Request<hyper::body::Incoming>| {
            let (answer, received) = (answer.clone(), received.clone());
            async move { handle(request, answer, received).await }
        };
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(codearts_exporter::http::serve(
            listener,
            handler,
            async move {
                let _ = stopped.await;
            },
        )));
    }

    /// Stops listening: connections are refused from now on.
    pub async fn down_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // A hanging request would keep a graceful stop waiting.
            task.abort();
            let _ = task.await;
        }
    }

    /// Answers every later request with `answer`.
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().expect("lock") = answer;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Every run taken so far (from requests answered 200), in order.
    pub fn taken_runs(&self) -> Vec<ResourceSpans> {
        self.received()
            .into_iter()
            .filter(|r| r.taken)
            .flat_map(|r| r.runs)
            .collect()
    }
}

async fn handle(
    request: hyper::Request<hyper::body::Incoming>,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
) -> hyper::Response<codearts_exporter::http::Body> {
    use codearts_exporter::http::response;
    use hyper::StatusCode;
    if request.uri().path() != "/v1/traces" || request.method() != hyper::Method::POST {
        return response(StatusCode::NOT_FOUND, "text/plain", "not here");
    }
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let answer = answer.lock().expect("lock").clone();
    if answer == Answer::Hang {
        // The exporter gives up first.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let Ok(body) = request.into_body().collect().await else {
        return response(StatusCode::BAD_REQUEST, "text/plain", "unreadable body");
    };
    let body = body.to_bytes();
    let raw = match headers.get("content-encoding").map(String::as_str) {
        Some("gzip") => {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut raw)
                .expect("the body is gzip");
            raw
        }
        None => body.to_vec(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    };
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf"),
        "OTLP/HTTP protobuf"
    );
    let request = ExportTraceServiceRequest::decode(&raw[..]).expect("an OTLP trace request");
    let taken = answer == Answer::Take;
    received.lock().expect("lock").push(Received {
        headers,
        runs: request.resource_spans,
        taken,
    });
    match answer {
        Answer::Take | Answer::Hang => response(
            StatusCode::OK,
            "application/x-protobuf",
            ExportTraceServiceResponse::default().encode_to_vec(),
        ),
        Answer::Status(status, retry_after) => {
            let status = StatusCode::from_u16(status).expect("a status");
            let mut answer = response(status, "text/plain", "told to refuse");
            if let Some(seconds) = retry_after {
                answer
                    .headers_mut()
                    .insert("retry-after", seconds.to_string().parse().expect("value"));
            }
            answer
        }
    }
}

/// A string attribute of `attributes`.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(text)) => Some(text.as_str()),
            _ => None,
        })
}

/// The resource attribute `key` of one run's `ResourceSpans`.
pub fn resource_attribute<'a>(run: &'a ResourceSpans, key: &str) -> Option<&'a str> {
    attribute(&run.resource.as_ref()?.attributes, key)
}

/// Every span of one run's `ResourceSpans`.
pub fn spans(run: &ResourceSpans) -> Vec<&Span> {
    run.scope_spans
        .iter()
        .flat_map(|s| s.spans.iter())
        .collect()
}

/// Lower-case hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace id of one run's `ResourceSpans` (its spans all share it).
pub fn trace_id(run: &ResourceSpans) -> String {
    let ids: std::collections::BTreeSet<String> =
        spans(run).iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(ids.len(), 1, "one trace per run: {ids:?}");
    ids.into_iter().next().expect("a span")
}
