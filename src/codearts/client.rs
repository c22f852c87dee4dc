//! HTTP client for the CodeArts APIs: one shared connection pool, token auth, bounded retries.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::FixedOffset;
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::auth::Authenticator;
use super::model::{
    ApiErrorBody, PipelineInfo, PipelineListPage, Run, RunDetail, RunList, V3PipelineStatus,
    V5RunStatus,
};
use super::{Api, Error};
use crate::config::{AuthConfig, CodeArtsConfig};

/// Attempts per request for transient failures (429, 5xx, time-outs, connection errors).
const MAX_ATTEMPTS: u32 = 3;
/// First retry delay; doubles each attempt.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Pipelines per page of the project pipeline list.
const PIPELINE_PAGE: u64 = 50;
/// Pages of the pipeline list read at most (a guard against a `total` that never comes).
const MAX_PIPELINE_PAGES: u64 = 200;
/// How much of an unreadable body goes into an error message.
const SNIPPET_CHARS: usize = 200;

/// Receives one call per HTTP exchange, for the exporter's own metrics.
pub trait RequestObserver: Send + Sync {
    /// A request finished with `code` (HTTP status, or `timeout`/`connect`/`error`).
    fn request_done(&self, api: Api, code: &str, elapsed: Duration);
    /// A request is about to be retried because of `reason`.
    fn retried(&self, api: Api, reason: &str);
    /// An attempt to obtain an IAM token succeeded or failed.
    fn auth_refresh(&self, ok: bool);
}

/// Which run the detail API should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSelector<'a> {
    /// `?pipeline_run_id=`.
    Id(&'a str),
    /// `?pipeline_run_number=`.
    Number(u64),
}

/// A CodeArts Pipeline API client; cheap to clone, clones share the pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    auth: Arc<Authenticator>,
    zone: FixedOffset,
    observer: Arc<dyn RequestObserver>,
}

impl Client {
    /// Builds a client from the `[codearts]` and `[auth]` sections.
    pub fn new(
        codearts: &CodeArtsConfig,
        auth: &AuthConfig,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("codearts-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(codearts.timeout)
            .connect_timeout(codearts.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|err| Error::Setup(err.to_string()))?;
        let auth = Authenticator::new(
            auth,
            codearts.iam_endpoint(),
            http.clone(),
            observer.clone(),
        )?;
        Ok(Client {
            http,
            endpoint: codearts.pipeline_endpoint(),
            auth: Arc::new(auth),
            zone: codearts.fixed_offset(),
            observer,
        })
    }

    /// Latest run of each pipeline through the v3 batch status API.
    pub async fn v3_status(&self, pipeline_ids: &[String]) -> Result<Vec<Run>, Error> {
        let url = format!("{}/v3/pipelines/status", self.endpoint);
        let ids = pipeline_ids.join(",");
        let body = self
            .send(Api::V3Status, || {
                self.http.get(&url).query(&[("pipeline_ids", ids.as_str())])
            })
            .await?;
        let entries: Vec<V3PipelineStatus> = decode_array(Api::V3Status, &body)?;
        Ok(entries
            .iter()
            .filter_map(|entry| Run::from_v3(entry, self.zone))
            .collect())
    }

    /// Latest run of each pipeline through the v5 batch status API.
    pub async fn v5_status(
        &self,
        project_id: &str,
        pipeline_ids: &[String],
    ) -> Result<Vec<Run>, Error> {
        let url = format!("{}/v5/{project_id}/api/pipelines/status", self.endpoint);
        let body = self
            .send(Api::V5Status, || self.http.post(&url).json(pipeline_ids))
            .await?;
        let entries: Vec<V5RunStatus> = decode_array(Api::V5Status, &body)?;
        Ok(entries
            .iter()
            .filter_map(|entry| Run::from_v5(entry, self.zone))
            .collect())
    }

    /// One run of a pipeline, with stages, through the v5 run detail API.
    pub async fn run_detail(
        &self,
        project_id: &str,
        pipeline_id: &str,
        run: RunSelector<'_>,
    ) -> Result<Run, Error> {
        let url = format!(
            "{}/v5/{project_id}/api/pipelines/{pipeline_id}/pipeline-runs/detail",
            self.endpoint
        );
        let query = match run {
            RunSelector::Id(id) => ("pipeline_run_id", id.to_string()),
            RunSelector::Number(n) => ("pipeline_run_number", n.to_string()),
        };
        let body = self
            .send(Api::RunDetail, || self.http.get(&url).query(&[&query]))
            .await?;
        let detail: RunDetail = decode(Api::RunDetail, &body)?;
        let mut run = Run::from_detail(&detail, self.zone).ok_or_else(|| Error::Decode {
            api: Api::RunDetail,
            status: 200,
            message: "the run has no pipeline_id".into(),
            snippet: snippet(&body),
        })?;
        // The path names the pipeline; trust it over a missing or odd body field.
        run.pipeline_id = pipeline_id.to_string();
        Ok(run)
    }

    /// One page of a pipeline's run history, newest first; returns the runs and the total.
    pub async fn run_history(
        &self,
        project_id: &str,
        pipeline_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Run>, u64), Error> {
        let url = format!(
            "{}/v5/{project_id}/api/pipelines/{pipeline_id}/pipeline-runs/list",
            self.endpoint
        );
        let query = serde_json::json!({
            "offset": offset,
            "limit": limit,
            "sort_key": "start_time",
            "sort_dir": "desc",
        });
        let body = self
            .send(Api::RunList, || self.http.post(&url).json(&query))
            .await?;
        let page: RunList = decode(Api::RunList, &body)?;
        let runs: Vec<Run> = page
            .pipeline_runs
            .iter()
            .filter_map(|entry| {
                // The path names the pipeline; entries need not repeat it.
                let mut entry = entry.clone();
                entry.pipeline_id = Some(pipeline_id.to_string());
                Run::from_v5(&entry, self.zone)
            })
            .collect();
        let total = page.total.unwrap_or(offset + runs.len() as u64);
        Ok((runs, total))
    }

    /// One page of the pipelines of a project; returns the pipelines and the total.
    pub async fn pipeline_page(
        &self,
        project_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<PipelineInfo>, u64), Error> {
        let url = format!("{}/v5/{project_id}/api/pipelines/list", self.endpoint);
        // Sorted by creation so pages stay stable while pipelines run (update_time moves).
        let query = serde_json::json!({
            "offset": offset,
            "limit": limit,
            "sort_key": "create_time",
            "sort_dir": "asc",
        });
        let body = self
            .send(Api::PipelineList, || self.http.post(&url).json(&query))
            .await?;
        let page: PipelineListPage = decode(Api::PipelineList, &body)?;
        let pipelines: Vec<PipelineInfo> = page
            .pipelines
            .iter()
            .filter_map(PipelineInfo::from_entry)
            .collect();
        let total = page.total.unwrap_or(offset + pipelines.len() as u64);
        Ok((pipelines, total))
    }

    /// Every pipeline of a project, page by page until `total` (ids de-duplicated, first wins).
    pub async fn list_pipelines(&self, project_id: &str) -> Result<Vec<PipelineInfo>, Error> {
        let mut all: Vec<PipelineInfo> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0;
        for _ in 0..MAX_PIPELINE_PAGES {
            let (page, total) = self
                .pipeline_page(project_id, offset, PIPELINE_PAGE)
                .await?;
            // Advance by what came back: the service may cap the page below what was asked.
            offset += page.len() as u64;
            let empty = page.is_empty();
            for pipeline in page {
                if seen.insert(pipeline.id.clone()) {
                    all.push(pipeline);
                }
            }
            if empty || offset >= total {
                break;
            }
        }
        Ok(all)
    }

    /// Sends a request built by `build`, retrying transient failures with backoff, and a 401
    /// once when the authenticator can renew its credentials.
    async fn send(&self, api: Api, build: impl Fn() -> RequestBuilder) -> Result<Bytes, Error> {
        let mut attempt = 1;
        let mut renewed = false;
        loop {
            let mut request = build()
                .build()
                .map_err(|err| Error::Setup(err.to_string()))?;
            let used = self.auth.authorize(&mut request).await?;
            let started = Instant::now();
            let outcome = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response.headers().get(RETRY_AFTER).and_then(retry_after);
                    response
                        .bytes()
                        .await
                        .map(|body| (status, retry_after, body))
                }
                Err(err) => Err(err),
            };
            let elapsed = started.elapsed();
            let (retry_reason, wait, error) = match outcome {
                Ok((status, retry_after, body)) => {
                    self.observer.request_done(api, status.as_str(), elapsed);
                    if status.is_success() {
                        return Ok(body);
                    }
                    let error = http_error(api, status, &body, self.auth.rejection_hint());
                    if status == StatusCode::UNAUTHORIZED {
                        if !renewed && self.auth.rejected(&used).await {
                            renewed = true;
                            self.observer.retried(api, "unauthorized");
                            continue;
                        }
                        return Err(error);
                    }
                    let transient =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !transient {
                        return Err(error);
                    }
                    let reason = if status == StatusCode::TOO_MANY_REQUESTS {
                        "throttled"
                    } else {
                        "server_error"
                    };
                    (reason, retry_after, error)
                }
                Err(err) => {
                    let (code, error) = transport_error(api, &err);
                    self.observer.request_done(api, code, elapsed);
                    (code, None, error)
                }
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(error);
            }
            let wait = wait.unwrap_or_else(|| backoff(attempt)).min(MAX_BACKOFF);
            tracing::debug!(%api, attempt, reason = retry_reason, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
            self.observer.retried(api, retry_reason);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// Exponential backoff with jitter: 50–100% of `BASE_BACKOFF · 2^(attempt-1)`.
fn backoff(attempt: u32) -> Duration {
    let full = BASE_BACKOFF.saturating_mul(1 << (attempt - 1).min(16));
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn transport_error(api: Api, err: &reqwest::Error) -> (&'static str, Error) {
    if err.is_timeout() {
        ("timeout", Error::Timeout { api })
    } else {
        let code = if err.is_connect() { "connect" } else { "error" };
        // Without the URL: it is ours and adds noise, and reqwest never puts headers in it.
        let message = std::error::Error::source(err)
            .map(|source| format!("{err}: {source}"))
            .unwrap_or_else(|| err.to_string());
        (code, Error::Transport { api, message })
    }
}

/// An error from a non-2xx answer; `hint` says what to check on a 401.
pub(crate) fn http_error(api: Api, status: StatusCode, body: &[u8], hint: &'static str) -> Error {
    let parsed: ApiErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.error_code.unwrap_or_else(|| "-".into());
    let message = parsed.error_msg.unwrap_or_else(|| snippet(body));
    if status == StatusCode::UNAUTHORIZED {
        Error::Unauthorized {
            api,
            hint,
            code,
            message,
        }
    } else {
        Error::Http {
            api,
            status: status.as_u16(),
            code,
            message,
        }
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(SNIPPET_CHARS)
        .collect()
}

fn decode<T: DeserializeOwned>(api: Api, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|err| Error::Decode {
        api,
        status: 200,
        message: err.to_string(),
        snippet: snippet(body),
    })
}

/// Decodes a JSON array element by element, so one bad entry does not spoil the rest.
fn decode_array<T: DeserializeOwned>(api: Api, body: &[u8]) -> Result<Vec<T>, Error> {
    let items = match decode::<Value>(api, body)? {
        Value::Array(items) => items,
        other => {
            return Err(Error::Decode {
                api,
                status: 200,
                message: format!("expected a JSON array, got {}", json_kind(&other)),
                snippet: snippet(body),
            });
        }
    };
    let mut decoded = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::from_value(item) {
            Ok(entry) => decoded.push(entry),
            Err(err) => {
                tracing::warn!(%api, error = %err, "skipping an entry that does not decode")
            }
        }
    }
    Ok(decoded)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_jittered() {
        for attempt in 1..6 {
            let wait = backoff(attempt);
            let full = BASE_BACKOFF * (1 << (attempt - 1));
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let header = HeaderValue::from_str(&httpdate::fmt_http_date(later)).expect("header");
        let wait = retry_after(&header).expect("parses");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn error_bodies_become_errors_with_code_and_message() {
        let body = br#"{"error_code":"DEV.00000003","error_msg":"expired"}"#;
        let err = http_error(
            Api::V5Status,
            StatusCode::UNAUTHORIZED,
            body,
            "token rejected or expired",
        );
        assert!(matches!(err, Error::Unauthorized { .. }));
        assert!(err.to_string().contains("token rejected or expired"));
        let err = http_error(
            Api::RunDetail,
            StatusCode::NOT_FOUND,
            b"<html>nope</html>",
            "",
        );
        assert_eq!(err.to_string(), "run_detail: HTTP 404 -: <html>nope</html>");
    }

    #[test]
    fn arrays_decode_entry_by_entry() {
        let body = br#"[{"pipeline_id": "a"}, 5, {"pipeline_id": "b"}]"#;
        let entries: Vec<V5RunStatus> = decode_array(Api::V5Status, body).expect("decodes");
        assert_eq!(entries.len(), 2);
        let err =
            decode_array::<V5RunStatus>(Api::V5Status, br#"{"a": 1}"#).expect_err("not an array");
        assert_eq!(err.kind(), "decode");
        let err = decode_array::<V5RunStatus>(Api::V5Status, b"[{\"pipeline_id\"")
            .expect_err("truncated");
        assert!(err.to_string().contains("body starts with"));
    }
}
