//! Client of the CodeArts Pipeline APIs: what to ask and how to read the answers. Requests go
//! out through [`Requests`] (rate limit, retries, capped reads), credentials from the
//! [`Authenticator`].

use std::sync::Arc;

use chrono::FixedOffset;
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::{Api, ErrorKind, RequestObserver};
use super::auth::Authenticator;
use super::error::Error;
use super::error::{decode, decode_array, decode_error, json_kind};
use super::model::{CommitTime, PipelineInfo, Run, is_repository_id};
use super::requests::{Call, Priority, Requests, Retry};
use super::time::commit_seconds;
use super::wire::{
    ApiErrorBody, PipelineListPage, RepoCommit, RunDetail, RunList, V3PipelineStatus, V5RunStatus,
};
use crate::config::{AuthConfig, CodeArtsConfig};

/// Pipelines per page of the project pipeline list.
const PIPELINE_PAGE: u64 = 50;
/// Pages of the pipeline list read at most (a guard against a `total` that never comes).
const MAX_PIPELINE_PAGES: u64 = 200;

/// Which run the detail API should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSelector<'a> {
    /// `?pipeline_run_id=`.
    Id(&'a str),
    /// `?pipeline_run_number=`.
    Number(u64),
}

/// A CodeArts Pipeline API client; cheap to clone, clones share the pool and the limits.
#[derive(Clone)]
pub struct Client {
    requests: Arc<Requests>,
    endpoint: String,
    /// CodeArts Repo's base URL (commit times).
    repo_endpoint: String,
    auth: Arc<Authenticator>,
    zone: FixedOffset,
    /// Whose turn this clone's requests take.
    priority: Priority,
}

impl Client {
    /// Builds a client from the `[codearts]` and `[auth]` sections.
    pub fn new(
        codearts: &CodeArtsConfig,
        auth: &AuthConfig,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Client, Error> {
        let requests = Arc::new(Requests::new(codearts, observer)?);
        let auth = Authenticator::new(
            auth,
            codearts.iam_endpoint(),
            &codearts.region,
            requests.clone(),
        )?;
        Ok(Client {
            requests,
            endpoint: codearts.pipeline_endpoint(),
            repo_endpoint: codearts.repo_endpoint(),
            auth: Arc::new(auth),
            zone: codearts.fixed_offset(),
            priority: Priority::Poll,
        })
    }

    /// A clone whose requests take their turn with `priority` (it shares the pool and limits).
    pub fn with_priority(&self, priority: Priority) -> Client {
        Client {
            priority,
            ..self.clone()
        }
    }

    /// Latest run of each pipeline through the v3 batch status API.
    pub async fn v3_status(&self, pipeline_ids: &[String]) -> Result<Vec<Run>, Error> {
        let api = Api::V3Status;
        let url = format!("{}/v3/pipelines/status", self.endpoint);
        let ids = pipeline_ids.join(",");
        let build = || {
            self.requests
                .http()
                .get(&url)
                .query(&[("pipeline_ids", ids.as_str())])
        };
        self.call(api, build, |status, body| {
            let entries: Vec<V3PipelineStatus> = self.decode_array(api, status, body)?;
            Ok(entries
                .iter()
                .filter_map(|entry| Run::from_v3(entry, self.zone))
                .collect())
        })
        .await
    }

    /// Latest run of each pipeline through the v5 batch status API.
    pub async fn v5_status(
        &self,
        project_id: &str,
        pipeline_ids: &[String],
    ) -> Result<Vec<Run>, Error> {
        let api = Api::V5Status;
        let url = format!("{}/v5/{project_id}/api/pipelines/status", self.endpoint);
        let build = || self.requests.http().post(&url).json(pipeline_ids);
        self.call(api, build, |status, body| {
            let entries: Vec<V5RunStatus> = self.decode_array(api, status, body)?;
            Ok(entries
                .iter()
                .filter_map(|entry| Run::from_v5(entry, self.zone))
                .collect())
        })
        .await
    }

    /// One run of a pipeline, with stages, through the v5 run detail API.
    pub async fn run_detail(
        &self,
        project_id: &str,
        pipeline_id: &str,
        run: RunSelector<'_>,
    ) -> Result<Run, Error> {
        let api = Api::RunDetail;
        let url = format!(
            "{}/v5/{project_id}/api/pipelines/{pipeline_id}/pipeline-runs/detail",
            self.endpoint
        );
        let query = match run {
            RunSelector::Id(id) => ("pipeline_run_id", id.to_string()),
            RunSelector::Number(n) => ("pipeline_run_number", n.to_string()),
        };
        let build = || self.requests.http().get(&url).query(&[&query]);
        self.call(api, build, |status, body| {
            let detail: RunDetail = decode(api, status, body)?;
            let mut run = Run::from_detail(&detail, self.zone).ok_or_else(|| {
                decode_error(api, status, "the run has no pipeline_id".into(), body)
            })?;
            // The path names the pipeline; trust it over a missing or odd body field.
            run.pipeline_id = pipeline_id.to_string();
            Ok(run)
        })
        .await
    }

    /// One page of a pipeline's run history, newest first; returns the runs and the total.
    pub async fn run_history(
        &self,
        project_id: &str,
        pipeline_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<Run>, u64), Error> {
        let api = Api::RunList;
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
        let build = || self.requests.http().post(&url).json(&query);
        self.call(api, build, |status, body| {
            // Fields are lenient, the shape is not: a page without its list is no empty page.
            let value: Value = decode(api, status, body)?;
            if !value.get("pipeline_runs").is_some_and(Value::is_array) {
                let message = format!(
                    "expected an object with a pipeline_runs list, got {}",
                    json_kind(&value)
                );
                return Err(decode_error(api, status, message, body));
            }
            let page: RunList = serde_json::from_value(value)
                .map_err(|err| decode_error(api, status, err.to_string(), body))?;
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
        })
        .await
    }

    /// When `commit_id` of CodeArts Repo repository `repository_id` (a run's `codehub_id`) was
    /// committed, through Repo's `ShowCommit` (reference 5.7). A 404 (deleted repository,
    /// unknown commit) is an error for which [`Error::is_not_found`] holds; transient failures
    /// are retried as every call's are. A repository id that is no number is refused unsent
    /// ([`Error::InvalidArgument`], counted as a `decode` failure).
    pub async fn commit_time(
        &self,
        repository_id: &str,
        commit_id: &str,
    ) -> Result<CommitTime, Error> {
        let api = Api::RepoCommit;
        if !is_repository_id(repository_id) {
            let message = format!("repository id {repository_id:?} is not a number");
            let err = Error::InvalidArgument { api, message };
            self.requests.observer().failed(api, ErrorKind::of(&err));
            return Err(err);
        }
        self.call(
            api,
            || self.commit_request(repository_id, commit_id),
            |status, body| read_commit_time(api, status, body, commit_id),
        )
        .await
    }

    /// The `ShowCommit` request, as the vendor SDK makes it (`Content-Type` on a GET included).
    fn commit_request(&self, repository_id: &str, commit_id: &str) -> RequestBuilder {
        let url = format!(
            "{}/v4/repositories/{repository_id}/repository/commits",
            self.repo_endpoint
        );
        self.requests
            .http()
            .get(url)
            .query(&[("sha", commit_id)])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
    }

    /// Sends a request and decodes the answer; counts a call that fails for good.
    async fn call<T>(
        &self,
        api: Api,
        build: impl Fn() -> RequestBuilder,
        decode: impl FnOnce(StatusCode, &[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let call = Call {
            api,
            priority: self.priority,
            retry: Retry::Transient,
        };
        self.requests
            .call(call, &*self.auth, build, |answer| {
                decode(answer.status, &answer.body)
            })
            .await
    }

    /// Decodes a JSON array element by element, so one bad entry does not spoil the rest;
    /// each entry skipped is logged and counted as a decode error.
    fn decode_array<T: DeserializeOwned>(
        &self,
        api: Api,
        status: StatusCode,
        body: &[u8],
    ) -> Result<Vec<T>, Error> {
        let (decoded, skipped) = decode_array(api, status, body)?;
        for _ in 0..skipped {
            self.requests.observer().failed(api, ErrorKind::Decode);
        }
        Ok(decoded)
    }

    /// One page of the pipelines of a project; returns the pipelines and the total. Old- and
    /// new-version pipelines alike; disabled ones only with `include_disabled`.
    pub async fn pipeline_page(
        &self,
        project_id: &str,
        offset: u64,
        limit: u64,
        include_disabled: bool,
    ) -> Result<(Vec<PipelineInfo>, u64), Error> {
        let url = format!("{}/v5/{project_id}/api/pipelines/list", self.endpoint);
        // Sorted by creation so pages stay stable while pipelines run (update_time moves).
        // `query_new` defaults to true, which hides old-version pipelines (reference 5.4).
        let query = serde_json::json!({
            "offset": offset,
            "limit": limit,
            "sort_key": "create_time",
            "sort_dir": "asc",
            "query_new": false,
            "is_banned": include_disabled,
        });
        let api = Api::PipelineList;
        self.call(
            api,
            || self.requests.http().post(&url).json(&query),
            |status, body| {
                let page: PipelineListPage = decode(api, status, body)?;
                let pipelines: Vec<PipelineInfo> = page
                    .pipelines
                    .iter()
                    .filter_map(|entry| PipelineInfo::from_entry(entry, self.zone))
                    .collect();
                let total = page.total.unwrap_or(offset + pipelines.len() as u64);
                Ok((pipelines, total))
            },
        )
        .await
    }

    /// Every pipeline of a project, page by page until `total` (ids de-duplicated, first wins);
    /// disabled ones only with `include_disabled`.
    pub async fn list_pipelines(
        &self,
        project_id: &str,
        include_disabled: bool,
    ) -> Result<Vec<PipelineInfo>, Error> {
        let all = self
            .read_pipeline_list(project_id, u64::MAX, include_disabled)
            .await?;
        Ok(all.unwrap_or_default())
    }

    /// Like [`Client::list_pipelines`] with disabled pipelines, but only when the whole list
    /// takes at most `max_requests` requests (known after the first page, which is read
    /// whatever); `None` when it would take more.
    pub async fn list_pipelines_within(
        &self,
        project_id: &str,
        max_requests: u64,
    ) -> Result<Option<Vec<PipelineInfo>>, Error> {
        self.read_pipeline_list(project_id, max_requests, true)
            .await
    }

    async fn read_pipeline_list(
        &self,
        project_id: &str,
        max_requests: u64,
        include_disabled: bool,
    ) -> Result<Option<Vec<PipelineInfo>>, Error> {
        let mut all: Vec<PipelineInfo> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0;
        for page_number in 0..MAX_PIPELINE_PAGES {
            let (page, total) = self
                .pipeline_page(project_id, offset, PIPELINE_PAGE, include_disabled)
                .await?;
            if page_number == 0 && total.div_ceil(PIPELINE_PAGE) > max_requests {
                return Ok(None);
            }
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
        Ok(Some(all))
    }
}

/// What a `ShowCommit` answer says of `commit_id`'s time. The answer is the commit (an object);
/// a list of commits (what GitLab, which Repo follows, serves at this path) is searched for it
/// by its id. No readable `committed_date` is [`CommitTime::Unparsable`]; a 2xx answer that
/// carries an error code (reference 4) is an error.
fn read_commit_time(
    api: Api,
    status: StatusCode,
    body: &[u8],
    commit_id: &str,
) -> Result<CommitTime, Error> {
    let value: Value = decode(api, status, body)?;
    if let Some(code) = error_code(&value) {
        let parsed: ApiErrorBody = serde_json::from_value(value.clone()).unwrap_or_default();
        let message = parsed
            .error_msg
            .or_else(|| value["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(Error::Http {
            api,
            status: status.as_u16(),
            code,
            message,
        });
    }
    let commit: Option<RepoCommit> = match value {
        Value::Object(_) => serde_json::from_value(value).ok(),
        Value::Array(commits) => commits
            .into_iter()
            .filter_map(|commit| serde_json::from_value::<RepoCommit>(commit).ok())
            .find(|commit| {
                commit
                    .id
                    .as_deref()
                    .is_some_and(|id| id.trim().eq_ignore_ascii_case(commit_id))
            }),
        other => {
            let message = format!("expected a commit object, got {}", json_kind(&other));
            return Err(decode_error(api, status, message, body));
        }
    };
    Ok(commit
        .and_then(|commit| commit.committed_date)
        .and_then(|date| commit_seconds(&date))
        .map_or(CommitTime::Unparsable, CommitTime::Known))
}

/// The error code of a body in either error shape (`error_code`, `error.code`), if it has one.
fn error_code(value: &Value) -> Option<String> {
    [&value["error_code"], &value["error"]["code"]]
        .into_iter()
        .find_map(|code| match code {
            Value::String(code) if !code.trim().is_empty() => Some(code.clone()),
            Value::Number(code) => Some(code.to_string()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codearts::api::RetryReason;
    use bytes::Bytes;
    use reqwest::header::{HeaderValue, RETRY_AFTER};
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Counts what the client reports.
    #[derive(Default)]
    struct Counts {
        requests: Mutex<Vec<String>>,
        retries: Mutex<Vec<String>>,
        failures: Mutex<Vec<String>>,
    }

    impl RequestObserver for Counts {
        fn request_done(&self, api: Api, code: &str, _elapsed: Duration) {
            self.requests
                .lock()
                .expect("lock")
                .push(format!("{api} {code}"));
        }
        fn retried(&self, api: Api, reason: RetryReason) {
            self.retries
                .lock()
                .expect("lock")
                .push(format!("{api} {reason}"));
        }
        fn failed(&self, api: Api, kind: ErrorKind) {
            self.failures
                .lock()
                .expect("lock")
                .push(format!("{api} {kind}"));
        }
        fn auth_refresh(&self, _ok: bool) {}
    }

    /// One scripted answer: status, `Retry-After`, body.
    type Answer = (u16, Option<&'static str>, &'static str);

    /// Serves `answers` in order (the last one again when they run out) on loopback, a 201 with
    /// an `X-Subject-Token` (an IAM token); returns the endpoint and the number of requests
    /// served.
    async fn script(answers: Vec<Answer>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let count = served.clone();
        tokio::spawn(crate::http::serve(
            listener,
            move |_request| {
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                async move {
                    let mut answers = answers.lock().expect("lock");
                    let (status, retry_after, body) = if answers.len() > 1 {
                        answers.pop_front().expect("an answer")
                    } else {
                        *answers.front().expect("an answer")
                    };
                    let status = hyper::StatusCode::from_u16(status).expect("status");
                    let mut response = crate::http::response(status, "application/json", body);
                    if status == hyper::StatusCode::CREATED {
                        response
                            .headers_mut()
                            .insert("x-subject-token", HeaderValue::from_static("iam-token"));
                    }
                    if let Some(value) = retry_after {
                        response
                            .headers_mut()
                            .insert(RETRY_AFTER, HeaderValue::from_static(value));
                    }
                    response
                }
            },
            std::future::pending(),
        ));
        (format!("http://{addr}"), served)
    }

    /// Serves 200 with a JSON array of exactly `size` bytes (`[`, spaces, `]`) in 16 KiB chunks,
    /// with its `Content-Length` or chunked; returns the endpoint and the requests served.
    async fn serve_padded_array(size: usize, announce_length: bool) -> (String, Arc<AtomicUsize>) {
        use http_body_util::StreamBody;
        use hyper::body::Frame;

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(crate::http::serve(
            listener,
            move |_request| {
                count.fetch_add(1, Ordering::SeqCst);
                let mut body = vec![b' '; size];
                body[0] = b'[';
                body[size - 1] = b']';
                let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
                    .chunks(16 * 1024)
                    .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                    .collect();
                let mut response =
                    hyper::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                if announce_length {
                    response
                        .headers_mut()
                        .insert(reqwest::header::CONTENT_LENGTH, size.into());
                }
                async move { response }
            },
            std::future::pending(),
        ));
        (format!("http://{addr}"), served)
    }

    fn client(endpoint: &str, counts: Arc<Counts>) -> Client {
        client_with(endpoint, counts, AuthConfig::token("t"), 1 << 20)
    }

    fn client_with(
        endpoint: &str,
        counts: Arc<Counts>,
        auth: AuthConfig,
        max_response_bytes: u64,
    ) -> Client {
        let codearts = CodeArtsConfig {
            max_response_bytes,
            ..test_config(endpoint)
        };
        Client::new(&codearts, &auth, counts).expect("client")
    }

    /// CodeArts and IAM both at `endpoint`, short retries.
    fn test_config(endpoint: &str) -> CodeArtsConfig {
        CodeArtsConfig {
            endpoint: Some(endpoint.to_string()),
            iam_endpoint: Some(endpoint.to_string()),
            timeout: Duration::from_secs(5),
            max_retries: 2,
            retry_backoff: Duration::from_millis(10),
            ..CodeArtsConfig::default()
        }
    }

    const PROJECT: &str = "0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn one_bad_entry_does_not_spoil_the_batch() {
        let body = r#"[{"pipeline_id":"a","run_number":3,"status":"RUNNING"},7,
            {"pipeline_id":"b","run_number":"x","status":{"odd":1}},["c"],{"pipeline_id":"d"}]"#;
        let (endpoint, _) = script(vec![(200, None, body)]).await;
        let counts = Arc::new(Counts::default());
        let runs = client(&endpoint, counts.clone())
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect("the good entries");
        let ids: Vec<&str> = runs.iter().map(|r| r.pipeline_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"], "one bad field spoils no entry either");
        assert_eq!(runs[0].run_number, Some(3));
        assert_eq!(runs[1].run_number, None);
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["v5_status decode", "v5_status decode"]
        );
        assert!(
            runs.iter().all(|r| r.pipeline_id != "c"),
            "arrays are no entries"
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let (endpoint, served) = script(vec![
            (
                503,
                None,
                r#"{"error_code":"APIG.0203","error_msg":"busy"}"#,
            ),
            (429, None, "{}"),
            (200, None, "[]"),
        ])
        .await;
        let counts = Arc::new(Counts::default());
        let runs = client(&endpoint, counts.clone())
            .v3_status(&["a".into()])
            .await
            .expect("third time lucky");
        assert!(runs.is_empty());
        assert_eq!(served.load(Ordering::SeqCst), 3);
        assert_eq!(
            *counts.retries.lock().expect("lock"),
            ["v3_status server_error", "v3_status throttled"]
        );
        assert!(counts.failures.lock().expect("lock").is_empty());

        let (endpoint, served) = script(vec![(502, None, "bad gateway")]).await;
        let counts = Arc::new(Counts::default());
        let err = client(&endpoint, counts.clone())
            .v3_status(&["a".into()])
            .await
            .expect_err("always 502");
        assert_eq!(served.load(Ordering::SeqCst), 3, "max_retries = 2");
        assert!(err.to_string().contains("HTTP 502"), "{err}");
        assert_eq!(*counts.failures.lock().expect("lock"), ["v3_status http"]);
    }

    #[tokio::test]
    async fn other_client_errors_are_not_retried() {
        let (endpoint, served) = script(vec![(
            404,
            None,
            r#"{"error_code":"DEVPIPE.00011103","error_msg":"no such pipeline"}"#,
        )])
        .await;
        let counts = Arc::new(Counts::default());
        let err = client(&endpoint, counts.clone())
            .run_detail(PROJECT, PROJECT, RunSelector::Number(1))
            .await
            .expect_err("404");
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert!(err.to_string().contains("DEVPIPE.00011103"));
        assert_eq!(*counts.requests.lock().expect("lock"), ["run_detail 404"]);
        assert!(counts.retries.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn answers_over_the_cap_are_abandoned_and_not_retried() {
        const CAP: usize = 100 * 1024;
        // Just over the cap, announced; ten times the cap, chunked.
        for (size, announce_length) in [(CAP + 1, true), (10 * CAP, false)] {
            let (endpoint, served) = serve_padded_array(size, announce_length).await;
            let counts = Arc::new(Counts::default());
            let client = client_with(
                &endpoint,
                counts.clone(),
                AuthConfig::token("t"),
                CAP as u64,
            );
            let err = client
                .v5_status(PROJECT, &["a".into()])
                .await
                .expect_err("over the cap");
            assert_eq!(err.kind(), "too_large", "{err}");
            let Error::TooLarge { size, limit, .. } = err else {
                panic!("{err}")
            };
            assert_eq!(limit, CAP as u64);
            if announce_length {
                assert_eq!(size, CAP as u64 + 1, "the announced length");
            } else {
                // Abandoned at the chunk that passed the cap, long before the end.
                assert!(
                    size > CAP as u64 && size <= CAP as u64 + 16 * 1024,
                    "{size}"
                );
            }
            assert_eq!(served.load(Ordering::SeqCst), 1, "requested once");
            assert!(counts.retries.lock().expect("lock").is_empty());
            assert_eq!(*counts.requests.lock().expect("lock"), ["v5_status 200"]);
            assert_eq!(
                *counts.failures.lock().expect("lock"),
                ["v5_status too_large"]
            );
        }
    }

    #[tokio::test]
    async fn answers_up_to_the_cap_are_read() {
        const CAP: usize = 100 * 1024;
        for announce_length in [true, false] {
            let (endpoint, _) = serve_padded_array(CAP, announce_length).await;
            let counts = Arc::new(Counts::default());
            let client = client_with(
                &endpoint,
                counts.clone(),
                AuthConfig::token("t"),
                CAP as u64,
            );
            let runs = client
                .v3_status(&["a".into()])
                .await
                .expect("exactly at the cap");
            assert!(runs.is_empty());
            assert!(counts.failures.lock().expect("lock").is_empty());
        }
    }

    /// User name and password, so every request first needs a token from IAM.
    fn password_auth() -> AuthConfig {
        AuthConfig {
            username: Some("u".into()),
            password: Some(crate::config::Secret::new("p")),
            domain: Some("d".into()),
            project_name: Some("cn-north-4".into()),
            ..AuthConfig::empty(crate::config::AuthMethod::Password)
        }
    }

    /// The IAM call's failure is counted under `iam_token` by its own kind; the call that needed
    /// the token fails as `auth`, without a request of its own.
    #[tokio::test]
    async fn an_unreachable_iam_is_a_transport_error_as_any_other() {
        // Nothing listens on a port just released.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let counts = Arc::new(Counts::default());
        let err = client_with(&endpoint, counts.clone(), password_auth(), 1 << 20)
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect_err("no token");
        assert_eq!(err.kind(), "auth", "{err}");
        assert!(
            err.to_string()
                .starts_with("no valid IAM token: iam_token: transport error: "),
            "{err}"
        );
        assert_eq!(
            *counts.requests.lock().expect("lock"),
            ["iam_token connect"]
        );
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["iam_token transport", "v5_status auth"]
        );
    }

    #[tokio::test]
    async fn an_oversized_iam_answer_is_abandoned_too() {
        let (endpoint, served) = serve_padded_array(200 * 1024, false).await;
        let counts = Arc::new(Counts::default());
        let client = client_with(&endpoint, counts.clone(), password_auth(), 100 * 1024);
        let err = client
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect_err("no token");
        assert_eq!(err.kind(), "auth", "{err}");
        assert!(
            err.to_string()
                .starts_with("no valid IAM token: iam_token: "),
            "{err}"
        );
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["iam_token too_large", "v5_status auth"]
        );
    }

    /// A request gets its token before it takes its request slot: with one slot, a request that
    /// held it while asking IAM would wait for itself forever.
    #[tokio::test]
    async fn a_request_that_needs_a_token_never_waits_for_its_own_slot() {
        let (endpoint, served) = script(vec![(201, None, "{}"), (200, None, "[]")]).await;
        let counts = Arc::new(Counts::default());
        let codearts = CodeArtsConfig {
            max_concurrent_requests: 1,
            ..test_config(&endpoint)
        };
        let client = Client::new(&codearts, &password_auth(), counts.clone()).expect("client");
        let mut calls = tokio::task::JoinSet::new();
        for priority in [
            Priority::Poll,
            Priority::Backfill,
            Priority::Poll,
            Priority::Backfill,
        ] {
            let client = client.with_priority(priority);
            calls.spawn(async move { client.v5_status(PROJECT, &["a".into()]).await });
        }
        let all_done = async {
            while let Some(done) = calls.join_next().await {
                done.expect("joined").expect("answered");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_done)
            .await
            .expect("every request answered: none waits for a slot it holds");
        assert_eq!(served.load(Ordering::SeqCst), 5, "one token, four requests");
        assert_eq!(
            counts
                .requests
                .lock()
                .expect("lock")
                .first()
                .map(String::as_str),
            Some("iam_token 201")
        );
    }

    /// The token request takes a unit of the rate limit like any other request.
    #[tokio::test]
    async fn iam_calls_keep_to_the_rate_limit() {
        let (endpoint, _) = script(vec![(201, None, "{}"), (200, None, "[]")]).await;
        let counts = Arc::new(Counts::default());
        let codearts = CodeArtsConfig {
            max_requests_per_second: 1.0,
            ..test_config(&endpoint)
        };
        let client = Client::new(&codearts, &password_auth(), counts.clone()).expect("client");
        let started = Instant::now();
        client
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect("answered");
        // The burst is one request: the token took it, so the status request waited a second.
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            *counts.requests.lock().expect("lock"),
            ["iam_token 201", "v5_status 200"]
        );
    }

    /// A 429 of IAM with `Retry-After` holds the next token request back until then, even when
    /// the backoff after the failure (at most a second) has passed; requests fail fast meanwhile.
    #[tokio::test]
    async fn retry_after_from_iam_holds_back_the_next_token_request() {
        let (endpoint, served) = script(vec![
            (
                429,
                Some("2"),
                r#"{"error_code":"IAM.0001","error_msg":"slow down"}"#,
            ),
            (201, None, "{}"),
            (200, None, "[]"),
        ])
        .await;
        let counts = Arc::new(Counts::default());
        let client = client_with(&endpoint, counts.clone(), password_auth(), 1 << 20);
        let started = Instant::now();
        let err = client
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect_err("throttled");
        assert!(err.to_string().contains("HTTP 429"), "{err}");
        tokio::time::sleep_until((started + Duration::from_millis(1200)).into()).await;
        let err = client
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect_err("still paused");
        assert_eq!(err.kind(), "auth", "{err}");
        assert_eq!(served.load(Ordering::SeqCst), 1, "IAM left alone");
        tokio::time::sleep_until((started + Duration::from_millis(2100)).into()).await;
        client
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect("a token after the pause");
        assert_eq!(
            *counts.requests.lock().expect("lock"),
            ["iam_token 429", "iam_token 201", "v5_status 200"]
        );
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["iam_token http", "v5_status auth", "v5_status auth"]
        );
        assert!(
            counts.retries.lock().expect("lock").is_empty(),
            "IAM calls retry later"
        );
    }

    #[tokio::test]
    async fn a_history_page_of_the_wrong_shape_is_a_decode_error() {
        for body in [
            "[]",
            r#"{"total": 3}"#,
            r#"[{"pipeline_runs": []}]"#,
            "{\"pipeline_runs\": [{",
        ] {
            let (endpoint, _) = script(vec![(200, None, body)]).await;
            let counts = Arc::new(Counts::default());
            let err = client(&endpoint, counts.clone())
                .run_history(PROJECT, PROJECT, 0, 20)
                .await
                .expect_err(body);
            assert_eq!(err.kind(), "decode", "{body}");
            assert_eq!(*counts.failures.lock().expect("lock"), ["run_list decode"]);
        }
        let (endpoint, _) = script(vec![(200, None, r#"{"total":0,"pipeline_runs":[]}"#)]).await;
        let page = client(&endpoint, Arc::new(Counts::default()))
            .run_history(PROJECT, PROJECT, 0, 20)
            .await
            .expect("an empty page is a page");
        assert_eq!(page.1, 0);
    }

    const SHA: &str = "990ea057751d299f5575aac25bf97e88a60b461e";

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// A client whose Repo endpoint is `endpoint`.
    fn repo_client(endpoint: &str, counts: Arc<Counts>) -> Client {
        let codearts = CodeArtsConfig {
            repo_endpoint: Some(endpoint.to_string()),
            ..test_config("http://127.0.0.1:9")
        };
        Client::new(&codearts, &AuthConfig::token("t"), counts).expect("client")
    }

    /// The vendor signer's `public-06` is the Repo call: the client's own request for it,
    /// authorized as every request is (AK/SK, `X-Project-Id`) at the vector's time, is that
    /// request exactly, to the Repo host the region gives.
    #[tokio::test]
    async fn the_repo_request_is_signed_as_the_vendor_sdk_signs_it() {
        let vector = crate::codearts::testing::sigv_vectors()
            .into_iter()
            .find(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("public-06 "))
            })
            .expect("public-06");
        let text = |value: &Value| value.as_str().expect("a string").to_string();
        let (ak, sk, date) = (
            text(&vector["ak"]),
            text(&vector["sk"]),
            text(&vector["sdk_date"]),
        );
        let url = reqwest::Url::parse(&text(&vector["url"])).expect("url");
        let segments: Vec<&str> = url.path_segments().expect("a path").collect();
        let (repository, sha) = (segments[2], url.query_pairs().next().expect("sha").1);
        let auth = AuthConfig {
            ak: Some(ak.clone()),
            sk: Some(crate::config::Secret::new(sk.clone())),
            project_id: Some(text(&vector["headers"]["X-Project-Id"])),
            ..AuthConfig::empty(crate::config::AuthMethod::Aksk)
        };
        // No endpoint given: the Repo host of cn-north-4.
        let codearts = CodeArtsConfig {
            region: "cn-north-4".into(),
            ..CodeArtsConfig::default()
        };
        let client = Client::new(&codearts, &auth, Arc::new(Counts::default())).expect("client");
        let mut request = client
            .commit_request(repository, &sha)
            .build()
            .expect("a request");
        let now = chrono::NaiveDateTime::parse_from_str(&date, crate::codearts::sign::DATE_FORMAT)
            .expect("a date")
            .and_utc();
        client
            .auth
            .authorize_at(&mut request, now)
            .await
            .expect("signed");

        let expected = &vector["expected"];
        assert_eq!(request.url().host_str(), url.host_str());
        let sent_uri = format!(
            "{}?{}",
            request.url().path(),
            request.url().query().unwrap_or_default()
        );
        assert_eq!(sent_uri, text(&expected["request_uri"]));
        // The canonical request of what is sent (the signature itself aside).
        let mut unsigned = request.try_clone().expect("no streamed body");
        unsigned
            .headers_mut()
            .remove(reqwest::header::AUTHORIZATION);
        let signature = crate::codearts::auth::signature_of(&unsigned, &ak, &sk, &date);
        assert_eq!(
            signature.canonical_request,
            text(&expected["canonical_request"])
        );
        assert_eq!(signature.string_to_sign, text(&expected["string_to_sign"]));
        // Every header the SDK sends, with its value (Host is the URL's authority, added on
        // the way out), and no other.
        let sent = expected["sent_headers"].as_object().expect("sent headers");
        for (name, value) in sent {
            if name == "Host" {
                assert_eq!(Some(value.as_str().expect("host")), url.host_str());
                continue;
            }
            assert_eq!(
                request
                    .headers()
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok()),
                value.as_str(),
                "{name}"
            );
        }
        assert_eq!(
            request.headers().len(),
            sent.len() - 1,
            "{:?}",
            request.headers()
        );
        assert_eq!(
            request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            expected["authorization"].as_str()
        );
    }

    #[tokio::test]
    async fn a_commit_time_is_read_from_the_commit() {
        let answer: &'static str = Box::leak(fixture("repo-commit.json").into_boxed_str());
        let (endpoint, served) = script(vec![(200, None, answer)]).await;
        let counts = Arc::new(Counts::default());
        let time = repo_client(&endpoint, counts.clone())
            .commit_time("2111677704", SHA)
            .await
            .expect("answered");
        // 2026-12-01T09:30:12.000+08:00
        assert_eq!(time, CommitTime::Known(1_796_088_612.0));
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert_eq!(*counts.requests.lock().expect("lock"), ["repo_commit 200"]);
    }

    #[tokio::test]
    async fn a_commit_without_a_readable_time_is_unparsable() {
        for body in [
            r#"{"id": "990ea057751d299f5575aac25bf97e88a60b461e"}"#,
            r#"{"committed_date": null}"#,
            r#"{"committed_date": "2026-12-01 09:30:12"}"#,
            r#"{"committed_date": "last tuesday"}"#,
            r#"{"committed_date": 1796088612}"#,
            r#"{"committed_date": {"at": 1}}"#,
            r#"[]"#,
            r#"[{"id": "5b1c0a7e0c2f4b0e9d8a7c6b5a493827160f1e2d",
                 "committed_date": "2026-12-01T09:30:12+08:00"}]"#,
        ] {
            let (endpoint, _) = script(vec![(200, None, body)]).await;
            let counts = Arc::new(Counts::default());
            let time = repo_client(&endpoint, counts.clone())
                .commit_time("2111677704", SHA)
                .await
                .expect(body);
            assert_eq!(time, CommitTime::Unparsable, "{body}");
            assert!(counts.failures.lock().expect("lock").is_empty(), "{body}");
        }
        // Epoch milliseconds, as a number or digits; a list is searched for the commit.
        for body in [
            r#"{"committed_date": 1796088612000}"#,
            r#"{"committed_date": "1796088612000"}"#,
            r#"[{"id": "5b1c0a7e0c2f4b0e9d8a7c6b5a493827160f1e2d", "committed_date": "2020-01-01T00:00:00Z"},
                {"id": "990EA057751D299F5575AAC25BF97E88A60B461E", "committed_date": "2026-12-01T01:30:12Z"}]"#,
        ] {
            let (endpoint, _) = script(vec![(200, None, body)]).await;
            let time = repo_client(&endpoint, Arc::new(Counts::default()))
                .commit_time("2111677704", SHA)
                .await
                .expect(body);
            assert_eq!(time, CommitTime::Known(1_796_088_612.0), "{body}");
        }
    }

    #[tokio::test]
    async fn an_answer_that_is_no_commit_is_an_error() {
        for (body, kind) in [
            ("<html>proxy</html>", "decode"),
            (r#""990ea057""#, "decode"),
            (
                r#"{"error_code": "CH.00000001", "error_msg": "no permission"}"#,
                "http",
            ),
            (
                r#"{"error": {"code": "CH.00000002", "message": "busy"}}"#,
                "http",
            ),
        ] {
            let (endpoint, served) = script(vec![(200, None, body)]).await;
            let counts = Arc::new(Counts::default());
            let err = repo_client(&endpoint, counts.clone())
                .commit_time("2111677704", SHA)
                .await
                .expect_err(body);
            assert_eq!(err.kind(), kind, "{body}: {err}");
            assert!(!err.is_not_found(), "{body}");
            assert_eq!(served.load(Ordering::SeqCst), 1, "{body}: not retried");
            assert_eq!(
                *counts.failures.lock().expect("lock"),
                [format!("repo_commit {kind}")]
            );
        }
    }

    #[tokio::test]
    async fn a_missing_commit_is_not_found_and_not_retried() {
        let (endpoint, served) = script(vec![(
            404,
            None,
            r#"{"error_code":"CH.00403003","error_msg":"commit not found"}"#,
        )])
        .await;
        let counts = Arc::new(Counts::default());
        let err = repo_client(&endpoint, counts.clone())
            .commit_time("2111677704", SHA)
            .await
            .expect_err("404");
        assert!(err.is_not_found(), "{err}");
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert!(counts.retries.lock().expect("lock").is_empty());
        assert_eq!(*counts.failures.lock().expect("lock"), ["repo_commit http"]);
    }

    #[tokio::test]
    async fn transient_repo_failures_are_retried_and_are_not_not_found() {
        let (endpoint, served) = script(vec![
            (503, None, "{}"),
            (429, None, "{}"),
            (200, None, r#"{"committed_date": "2026-12-01T01:30:12Z"}"#),
        ])
        .await;
        let counts = Arc::new(Counts::default());
        let time = repo_client(&endpoint, counts.clone())
            .commit_time("2111677704", SHA)
            .await
            .expect("third time lucky");
        assert_eq!(time, CommitTime::Known(1_796_088_612.0));
        assert_eq!(served.load(Ordering::SeqCst), 3);
        assert_eq!(
            *counts.retries.lock().expect("lock"),
            ["repo_commit server_error", "repo_commit throttled"]
        );
        let (endpoint, served) = script(vec![(502, None, "bad gateway")]).await;
        let err = repo_client(&endpoint, Arc::new(Counts::default()))
            .commit_time("2111677704", SHA)
            .await
            .expect_err("always 502");
        assert_eq!(served.load(Ordering::SeqCst), 3, "max_retries = 2");
        assert!(!err.is_not_found(), "{err}");
        // No answer at all: a connection error, retried, not "not found" either.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let closed = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let counts = Arc::new(Counts::default());
        let err = repo_client(&closed, counts.clone())
            .commit_time("2111677704", SHA)
            .await
            .expect_err("nothing listens");
        assert!(!err.is_not_found(), "{err}");
        assert_eq!(err.kind(), "transport");
        assert_eq!(
            *counts.retries.lock().expect("lock"),
            ["repo_commit connect", "repo_commit connect"]
        );
    }

    #[tokio::test]
    async fn a_repository_id_that_is_no_number_is_not_sent() {
        let (endpoint, served) = script(vec![(200, None, "{}")]).await;
        let counts = Arc::new(Counts::default());
        for id in ["", "../../v5/x", "12/34", "abc", " 12"] {
            let err = repo_client(&endpoint, counts.clone())
                .commit_time(id, SHA)
                .await
                .expect_err(id);
            assert!(matches!(err, Error::InvalidArgument { .. }), "{id}: {err}");
            assert!(!err.is_not_found());
        }
        assert_eq!(served.load(Ordering::SeqCst), 0);
        assert!(counts.requests.lock().expect("lock").is_empty());
        // Counted as failed calls, by the kind of a field that cannot be read.
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["repo_commit decode"; 5]
        );
    }

    #[tokio::test]
    async fn retry_after_holds_back_every_request_to_that_api() {
        let (endpoint, served) = script(vec![(429, Some("1"), "{}"), (200, None, "[]")]).await;
        let counts = Arc::new(Counts::default());
        let client = client(&endpoint, counts.clone());
        let started = Instant::now();
        let throttled = tokio::spawn({
            let client = client.clone();
            async move { client.v3_status(&["a".into()]).await }
        });
        // Reported once the pause is in force.
        while counts.retries.lock().expect("lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The pause covers the API, not just the request that was throttled; other APIs go on.
        let other = Instant::now();
        client
            .v5_status(PROJECT, &["a".into()])
            .await
            .expect("not paused");
        assert!(other.elapsed() < Duration::from_millis(500));
        client
            .v3_status(&["b".into()])
            .await
            .expect("after the pause");
        assert!(started.elapsed() >= Duration::from_secs(1));
        throttled
            .await
            .expect("joined")
            .expect("retried after a second");
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(served.load(Ordering::SeqCst), 4);
        assert_eq!(
            *counts.retries.lock().expect("lock"),
            ["v3_status throttled"]
        );
    }
}
