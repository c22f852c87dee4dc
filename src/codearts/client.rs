//! HTTP client for the CodeArts APIs: one shared connection pool, auth, a global rate limit and
//! concurrency cap, bounded retries honouring `Retry-After`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::FixedOffset;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use super::api::{Api, RequestObserver};
use super::auth::Authenticator;
use super::body::{BodyError, read_body};
use super::error::Error;
use super::error::{decode, decode_array, decode_error, http_error, json_kind, transport_error};
use super::model::{PipelineInfo, Run};
use super::wire::{PipelineListPage, RunDetail, RunList, V3PipelineStatus, V5RunStatus};
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

/// Who waits for the shared rate limit: a poll's requests go first; the backfill (the first
/// history reads of a cold start) takes only what polls leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Requests of a scheduled poll.
    Poll,
    /// Requests of the backfill, behind every waiting poll request.
    Backfill,
}

/// How long after a poll request ends the backfill still keeps off the rate limit: a poll sends
/// its status chunks one after the other, and the gap between two must not let the backfill in.
const POLL_GAP: Duration = Duration::from_millis(250);

/// A CodeArts Pipeline API client; cheap to clone, clones share the pool and the limits.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    auth: Arc<Authenticator>,
    zone: FixedOffset,
    observer: Arc<dyn RequestObserver>,
    limits: Arc<Limits>,
    /// Whose turn this clone's requests take.
    priority: Priority,
    /// Answers larger than this many bytes are abandoned (`codearts.max_response_bytes`).
    max_response_bytes: u64,
}

/// What every request of every clone waits for, and how retries are spaced.
struct Limits {
    rate: DefaultDirectRateLimiter,
    /// Poll requests waiting or in flight, and when the last ended: while there are any, and
    /// for [`POLL_GAP`] after the last ended, backfill requests wait. Watched, so that they
    /// wake when it changes rather than look again and again.
    polls: watch::Sender<PollActivity>,
    slots: Semaphore,
    /// No request to an API before this instant (its last `Retry-After`).
    paused: Mutex<HashMap<Api, Instant>>,
    max_retries: u32,
    backoff: Duration,
    max_wait: Duration,
}

impl Limits {
    fn new(codearts: &CodeArtsConfig) -> Result<Limits, Error> {
        let rate = codearts.max_requests_per_second;
        let bad_rate = || Error::Setup(format!("max_requests_per_second {rate} is not usable"));
        if !(rate.is_finite() && rate > 0.0) {
            return Err(bad_rate());
        }
        // A burst of one second's worth, so a poll may start with a few requests at once.
        let burst = NonZeroU32::new(rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
            .ok_or_else(bad_rate)?;
        let period = Duration::try_from_secs_f64(1.0 / rate).map_err(|_| bad_rate())?;
        let quota = Quota::with_period(period)
            .ok_or_else(bad_rate)?
            .allow_burst(burst);
        Ok(Limits {
            rate: RateLimiter::direct(quota),
            polls: watch::Sender::new(PollActivity::default()),
            slots: Semaphore::new(codearts.max_concurrent_requests.max(1)),
            paused: Mutex::new(HashMap::new()),
            max_retries: codearts.max_retries,
            backoff: codearts.retry_backoff,
            max_wait: codearts.max_retry_wait,
        })
    }

    fn paused_until(&self, api: Api) -> Option<Instant> {
        let paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        paused.get(&api).copied()
    }

    /// After a 429 with `Retry-After`: hold back every request to `api` until then.
    fn pause(&self, api: Api, until: Instant) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        let entry = paused.entry(api).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Waits out a pause of `api`, then for a request slot and the rate limit, behind every
    /// waiting poll request when `priority` is the backfill's.
    async fn turn(&self, api: Api, priority: Priority) -> Result<Turn<'_>, Error> {
        while let Some(until) = self.paused_until(api) {
            if until <= Instant::now() {
                break;
            }
            tokio::time::sleep_until(until.into()).await;
        }
        let slot = || async {
            self.slots
                .acquire()
                .await
                .map_err(|_| Error::Setup("request slots closed".into()))
        };
        match priority {
            Priority::Poll => {
                // Active from now: a poll request waiting for a slot holds the backfill back too.
                let active = PollActive::new(self);
                let permit = slot().await?;
                self.rate.until_ready().await;
                Ok(Turn {
                    _permit: permit,
                    _poll: Some(active),
                })
            }
            Priority::Backfill => {
                // The slot after the rate limit: a backfill request waiting behind the polls
                // must not hold a slot they need.
                self.backfill_turn().await;
                Ok(Turn {
                    _permit: slot().await?,
                    _poll: None,
                })
            }
        }
    }

    /// Takes a unit of the rate limit only when no poll request is busy with it.
    async fn backfill_turn(&self) {
        let mut polls = self.polls.subscribe();
        loop {
            let activity = *polls.borrow_and_update();
            // Until when this request must hold back; a change of the polls ends the wait early.
            let hold_until = if activity.active > 0 {
                None
            } else if let Some(gap_end) = activity
                .ended
                .map(|ended| ended + POLL_GAP)
                .filter(|gap_end| *gap_end > Instant::now())
            {
                Some(gap_end)
            } else {
                match self.rate.check() {
                    Ok(()) => return,
                    Err(not_until) => Some(
                        Instant::now() + not_until.wait_time_from(DefaultClock::default().now()),
                    ),
                }
            };
            match hold_until {
                // The sender lives as long as `self`, so `changed` cannot fail.
                None => {
                    let _ = polls.changed().await;
                }
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = polls.changed() => {}
                    }
                }
            }
        }
    }
}

/// A request's turn: its slot, held until the request ends.
struct Turn<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    _poll: Option<PollActive<'a>>,
}

/// Poll requests waiting or in flight, and when the last one ended.
#[derive(Debug, Clone, Copy, Default)]
struct PollActivity {
    active: usize,
    ended: Option<Instant>,
}

/// Counts a poll request as active (waiting for the rate limit, or in flight) while it lives.
struct PollActive<'a>(&'a Limits);

impl<'a> PollActive<'a> {
    fn new(limits: &'a Limits) -> Self {
        limits.polls.send_modify(|polls| polls.active += 1);
        PollActive(limits)
    }
}

impl Drop for PollActive<'_> {
    fn drop(&mut self) {
        self.0.polls.send_modify(|polls| {
            polls.active -= 1;
            polls.ended = Some(Instant::now());
        });
    }
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
            .connect_timeout(codearts.connect_timeout.min(codearts.timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|err| Error::Setup(err.to_string()))?;
        let auth = Authenticator::new(
            auth,
            codearts.iam_endpoint(),
            &codearts.region,
            http.clone(),
            codearts.max_response_bytes,
            observer.clone(),
        )?;
        Ok(Client {
            http,
            endpoint: codearts.pipeline_endpoint(),
            auth: Arc::new(auth),
            zone: codearts.fixed_offset(),
            observer,
            limits: Arc::new(Limits::new(codearts)?),
            priority: Priority::Poll,
            max_response_bytes: codearts.max_response_bytes,
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
        let build = || self.http.get(&url).query(&[("pipeline_ids", ids.as_str())]);
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
        let build = || self.http.post(&url).json(pipeline_ids);
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
        let build = || self.http.get(&url).query(&[&query]);
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
        let build = || self.http.post(&url).json(&query);
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

    /// Sends a request and decodes the answer; counts a call that fails for good.
    async fn call<T>(
        &self,
        api: Api,
        build: impl Fn() -> RequestBuilder,
        decode: impl FnOnce(StatusCode, &[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let result = match self.send(api, build).await {
            Ok((status, body)) => decode(status, &body),
            Err(err) => Err(err),
        };
        if let Err(err) = &result {
            self.observer.failed(api, err.kind());
        }
        result
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
            self.observer.failed(api, "decode");
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
            || self.http.post(&url).json(&query),
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

    /// Sends a request built by `build`, retrying transient failures with backoff, and a 401
    /// once when the authenticator can renew its credentials. Every attempt waits for its turn
    /// under the global rate limit and concurrency cap. An answer over `max_response_bytes` is
    /// abandoned and not retried.
    async fn send(
        &self,
        api: Api,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(StatusCode, Bytes), Error> {
        let limits = &*self.limits;
        let mut retries = 0;
        let mut renewed = false;
        loop {
            let mut request = build()
                .build()
                .map_err(|err| Error::Setup(err.to_string()))?;
            let used = self.auth.authorize(&mut request).await?;
            let permit = limits.turn(api, self.priority).await?;
            let started = Instant::now();
            let outcome = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response.headers().get(RETRY_AFTER).and_then(retry_after);
                    match read_body(response, self.max_response_bytes).await {
                        Ok(body) => Ok((status, retry_after, body)),
                        Err(BodyError::Transport(err)) => Err(err),
                        Err(BodyError::TooLarge(size)) => {
                            // Not retried: asking again would most likely bring the same answer.
                            self.observer
                                .request_done(api, status.as_str(), started.elapsed());
                            return Err(Error::TooLarge {
                                api,
                                size,
                                limit: self.max_response_bytes,
                            });
                        }
                    }
                }
                Err(err) => Err(err),
            };
            let elapsed = started.elapsed();
            drop(permit);
            let (retry_reason, wait, error) = match outcome {
                Ok((status, retry_after, body)) => {
                    self.observer.request_done(api, status.as_str(), elapsed);
                    if status.is_success() {
                        return Ok((status, body));
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
                        if let Some(wait) = retry_after {
                            // The gateway throttles the API, not this request: hold back all.
                            limits.pause(api, Instant::now() + wait.min(limits.max_wait));
                        }
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
            if retries >= limits.max_retries {
                return Err(error);
            }
            retries += 1;
            let wait = wait
                .unwrap_or_else(|| backoff(limits.backoff, retries))
                .min(limits.max_wait);
            tracing::debug!(%api, retry = retries, reason = retry_reason, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
            self.observer.retried(api, retry_reason);
            tokio::time::sleep(wait).await;
        }
    }
}

/// Exponential backoff with jitter: 50–100% of `base · 2^(retry-1)`.
fn backoff(base: Duration, retry: u32) -> Duration {
    let full = base.saturating_mul(1 << retry.saturating_sub(1).min(16));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        fn retried(&self, api: Api, reason: &str) {
            self.retries
                .lock()
                .expect("lock")
                .push(format!("{api} {reason}"));
        }
        fn failed(&self, api: Api, kind: &'static str) {
            self.failures
                .lock()
                .expect("lock")
                .push(format!("{api} {kind}"));
        }
        fn auth_refresh(&self, _ok: bool) {}
    }

    /// One scripted answer: status, `Retry-After`, body.
    type Answer = (u16, Option<&'static str>, &'static str);

    /// Serves `answers` in order (the last one again when they run out) on loopback; returns
    /// the endpoint and the number of requests served.
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
            endpoint: Some(endpoint.to_string()),
            iam_endpoint: Some(endpoint.to_string()),
            timeout: Duration::from_secs(5),
            max_retries: 2,
            retry_backoff: Duration::from_millis(10),
            max_response_bytes,
            ..CodeArtsConfig::default()
        };
        Client::new(&codearts, &auth, counts).expect("client")
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
        assert_eq!(err.kind(), "transport", "{err}");
        assert!(
            err.to_string().starts_with("iam_token: transport error: "),
            "{err}"
        );
        assert_eq!(
            *counts.requests.lock().expect("lock"),
            ["iam_token connect"]
        );
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["iam_token transport", "v5_status transport"]
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
        assert_eq!(err.kind(), "too_large", "{err}");
        assert!(err.to_string().starts_with("iam_token: "), "{err}");
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert_eq!(
            *counts.failures.lock().expect("lock"),
            ["iam_token too_large", "v5_status too_large"]
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

    #[tokio::test]
    async fn retry_after_holds_back_every_request_to_that_api() {
        let (endpoint, served) = script(vec![(429, Some("1"), "{}"), (200, None, "[]")]).await;
        let counts = Arc::new(Counts::default());
        let client = client(&endpoint, counts.clone());
        let started = Instant::now();
        client
            .v3_status(&["a".into()])
            .await
            .expect("retried after a second");
        assert!(started.elapsed() >= Duration::from_secs(1));
        // The pause covers the API, not just the request that was throttled.
        client
            .limits
            .pause(Api::RunList, Instant::now() + Duration::from_millis(300));
        let waited = Instant::now();
        drop(
            client
                .limits
                .turn(Api::RunList, Priority::Poll)
                .await
                .expect("a turn"),
        );
        assert!(waited.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            client.limits.paused_until(Api::V5Status),
            None,
            "other APIs go on"
        );
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn requests_wait_for_the_rate_limit_and_the_concurrency_cap() {
        let limits = Limits::new(&CodeArtsConfig {
            max_requests_per_second: 20.0,
            max_concurrent_requests: 2,
            ..CodeArtsConfig::default()
        })
        .expect("limits");
        let started = Instant::now();
        // The burst is one second's worth (20); the next 10 come at 20 per second.
        for _ in 0..30 {
            drop(
                limits
                    .turn(Api::V5Status, Priority::Poll)
                    .await
                    .expect("a turn"),
            );
        }
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        for silly in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300] {
            let config = CodeArtsConfig {
                max_requests_per_second: silly,
                ..CodeArtsConfig::default()
            };
            assert!(Limits::new(&config).is_err(), "{silly}");
        }
        let first = limits
            .turn(Api::V5Status, Priority::Poll)
            .await
            .expect("a turn");
        let second = limits
            .turn(Api::RunList, Priority::Poll)
            .await
            .expect("a turn");
        assert_eq!(limits.slots.available_permits(), 0);
        drop((first, second));
        assert_eq!(limits.slots.available_permits(), 2);
    }

    #[tokio::test]
    async fn poll_requests_take_the_rate_limit_before_the_backfill() {
        // Fewer request slots than waiters: backfill requests waiting behind the polls must not
        // hold the slots the polls need.
        let limits = Arc::new(
            Limits::new(&CodeArtsConfig {
                max_requests_per_second: 4.0,
                max_concurrent_requests: 2,
                ..CodeArtsConfig::default()
            })
            .expect("limits"),
        );
        // The burst is spent: each further turn waits a quarter of a second.
        for _ in 0..4 {
            drop(
                limits
                    .turn(Api::V5Status, Priority::Poll)
                    .await
                    .expect("a turn"),
            );
        }
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut turns = tokio::task::JoinSet::new();
        // Backfill reads queue first; poll requests arrive behind them (the same tick of this
        // single-threaded runtime, long before the next unit of the rate limit).
        let waiters = [
            ("backfill", Priority::Backfill),
            ("backfill", Priority::Backfill),
            ("backfill", Priority::Backfill),
            ("poll", Priority::Poll),
            ("poll", Priority::Poll),
        ];
        for (who, priority) in waiters {
            let (limits, order) = (limits.clone(), order.clone());
            turns.spawn(async move {
                let permit = limits.turn(Api::RunList, priority).await.expect("a turn");
                order.lock().expect("order").push(who);
                drop(permit);
            });
        }
        let all_served = async { while turns.join_next().await.is_some() {} };
        tokio::time::timeout(Duration::from_secs(10), all_served)
            .await
            .expect("every turn served: no request holds a slot the others wait for");
        assert_eq!(
            *order.lock().expect("order"),
            ["poll", "poll", "backfill", "backfill", "backfill"]
        );
        assert_eq!(limits.polls.borrow().active, 0);
    }

    #[tokio::test]
    async fn a_backfill_request_waits_for_the_poll_gap_and_wakes_after_it() {
        let limits = Arc::new(Limits::new(&CodeArtsConfig::default()).expect("limits"));
        let poll = limits
            .turn(Api::V5Status, Priority::Poll)
            .await
            .expect("a turn");
        let backfill = tokio::spawn({
            let limits = limits.clone();
            async move {
                drop(
                    limits
                        .turn(Api::RunList, Priority::Backfill)
                        .await
                        .expect("a turn"),
                );
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !backfill.is_finished(),
            "went while a poll request was active"
        );
        let ended = Instant::now();
        drop(poll);
        // Woken by the poll's end, not by looking again: a lost wake-up hangs, and fails here.
        let went = tokio::time::timeout(Duration::from_secs(10), backfill)
            .await
            .expect("the backfill request went after the gap")
            .expect("joined");
        assert!(
            went >= ended + POLL_GAP,
            "went {:?} after the poll",
            went - ended
        );
    }

    #[test]
    fn backoff_grows_and_is_jittered() {
        let base = Duration::from_millis(500);
        for retry in 1..6 {
            let wait = backoff(base, retry);
            let full = base * (1 << (retry - 1));
            assert!(wait >= full / 2 && wait <= full, "{retry}: {wait:?}");
        }
        assert!(backoff(base, 200) <= base * (1 << 16));
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
}
