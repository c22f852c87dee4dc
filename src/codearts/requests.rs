//! The one way every request goes out, to CodeArts and to IAM alike: a turn under the global
//! rate limit and concurrency cap (and any `Retry-After` pause of its API), credentials, capped
//! reads, bounded retries with one backoff, and one account of each exchange for the metrics.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use tokio::sync::{Semaphore, watch};

use super::api::{Api, ErrorKind, RequestObserver, RetryReason};
use super::body::{BodyError, read_body};
use super::error::{Error, http_error, transport_error};
use crate::backoff::{backoff, retry_after};
use crate::config::CodeArtsConfig;

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

/// Whether a call retries transient failures (429, 5xx, no answer) itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Up to `codearts.max_retries` times, with [`backoff`](crate::backoff::backoff) or the answer's `Retry-After`.
    Transient,
    /// Never: the caller spaces its attempts (an IAM call, made while every request that needs
    /// its result waits; they fail fast instead, and the next one tries again when it is due).
    Never,
}

/// One call: which API, whose turn it takes, whether it retries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub(super) api: Api,
    pub(super) priority: Priority,
    pub(super) retry: Retry,
}

impl Call {
    /// An IAM call: a poll's turn (every request, poll or backfill, may wait for its answer),
    /// and no retries of its own.
    pub(super) fn iam(api: Api) -> Call {
        Call {
            api,
            priority: Priority::Poll,
            retry: Retry::Never,
        }
    }
}

/// How a request gets its credentials, and what a 401 means for it.
pub(super) trait Credentials {
    /// What a request was sent with, so that a 401 can be blamed on exactly that.
    type Used;
    /// Adds the credentials to `request`. Called before the request takes its turn: getting
    /// them may take a turn of its own (an IAM call), which must not wait for a slot that this
    /// request holds.
    async fn authorize(&self, request: &mut reqwest::Request) -> Result<Self::Used, Error>;
    /// After a 401: true when sending again may help (the credentials were renewed).
    async fn rejected(&self, used: &Self::Used) -> bool;
    /// What to tell the user when the answer is 401.
    fn rejection_hint(&self) -> &'static str;
}

/// An answer, read whole (callers of [`Requests::call`] see only 2xx ones).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// The shared connection pool, limits and observer; one per client, shared with its
/// authenticator.
pub(super) struct Requests {
    http: reqwest::Client,
    limits: Limits,
    observer: Arc<dyn RequestObserver>,
    /// Answers larger than this many bytes are abandoned (`codearts.max_response_bytes`).
    max_response_bytes: u64,
}

impl Requests {
    /// The pool and limits of the `[codearts]` section; every exchange is reported to `observer`.
    pub(super) fn new(
        codearts: &CodeArtsConfig,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Requests, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("codearts-exporter/", env!("CARGO_PKG_VERSION")))
            .timeout(codearts.timeout)
            .connect_timeout(codearts.connect_timeout.min(codearts.timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|err| Error::Setup(err.to_string()))?;
        Ok(Requests {
            http,
            limits: Limits::new(codearts)?,
            observer,
            max_response_bytes: codearts.max_response_bytes,
        })
    }

    /// The connection pool, to build requests with.
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Where exchanges are reported.
    pub(super) fn observer(&self) -> &dyn RequestObserver {
        &*self.observer
    }

    /// Until when requests to `api` are held back by a `Retry-After`, if they are.
    pub(super) fn paused_until(&self, api: Api) -> Option<Instant> {
        self.limits
            .paused_until(api)
            .filter(|until| *until > Instant::now())
    }

    /// Sends a request built by `build` with `credentials` and decodes the answer; counts a
    /// call that fails for good, once, by the kind of its error.
    pub(super) async fn call<C: Credentials, T>(
        &self,
        call: Call,
        credentials: &C,
        build: impl Fn() -> RequestBuilder,
        decode: impl FnOnce(&Answer) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let result = match self.send(call, credentials, build).await {
            Ok(answer) => decode(&answer),
            Err(err) => Err(err),
        };
        if let Err(err) = &result {
            self.observer.failed(call.api, ErrorKind::of(err));
        }
        result
    }

    /// Sends a request built by `build`, retrying transient failures with backoff (when
    /// `call.retry` says so), and a 401 once when the credentials can be renewed. Every attempt
    /// waits for its turn under the global rate limit and concurrency cap. An answer over
    /// `max_response_bytes` is abandoned and not retried.
    async fn send<C: Credentials>(
        &self,
        call: Call,
        credentials: &C,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Answer, Error> {
        let Call { api, priority, .. } = call;
        let limits = &self.limits;
        let max_retries = match call.retry {
            Retry::Transient => limits.max_retries,
            Retry::Never => 0,
        };
        let mut retries = 0;
        let mut renewed = false;
        loop {
            let mut request = build()
                .build()
                .map_err(|err| Error::Setup(err.to_string()))?;
            // Credentials first, the turn after (see `Credentials::authorize`).
            let used = credentials.authorize(&mut request).await?;
            let permit = limits.turn(api, priority).await?;
            let started = Instant::now();
            let outcome = match self.http.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match read_body(response, self.max_response_bytes).await {
                        Ok(body) => Ok(Answer {
                            status,
                            headers,
                            body,
                        }),
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
                Ok(answer) => {
                    let status = answer.status;
                    self.observer.request_done(api, status.as_str(), elapsed);
                    if status.is_success() {
                        return Ok(answer);
                    }
                    let error = http_error(api, status, &answer.body, credentials.rejection_hint());
                    if status == StatusCode::UNAUTHORIZED {
                        if !renewed && credentials.rejected(&used).await {
                            renewed = true;
                            self.observer.retried(api, RetryReason::Unauthorized);
                            continue;
                        }
                        return Err(error);
                    }
                    let transient =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !transient {
                        return Err(error);
                    }
                    let retry_after = answer.headers.get(RETRY_AFTER).and_then(retry_after);
                    let reason = if status == StatusCode::TOO_MANY_REQUESTS {
                        if let Some(wait) = retry_after {
                            // The gateway throttles the API, not this request: hold back all.
                            limits.pause(api, Instant::now() + wait.min(limits.max_wait));
                        }
                        RetryReason::Throttled
                    } else {
                        RetryReason::ServerError
                    };
                    (reason, retry_after, error)
                }
                Err(err) => {
                    let (reason, error) = transport_error(api, &err);
                    self.observer.request_done(api, reason.as_str(), elapsed);
                    (reason, None, error)
                }
            };
            if retries >= max_retries {
                return Err(error);
            }
            retries += 1;
            let wait = wait.unwrap_or_else(|| backoff(limits.backoff, retries, limits.max_wait));
            let wait = wait.min(limits.max_wait);
            tracing::debug!(%api, retry = retries, reason = %retry_reason, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
            self.observer.retried(api, retry_reason);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
