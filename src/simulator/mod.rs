//! A deterministic simulator of the CodeArts Pipeline and IAM APIs, served over real HTTP.
//!
//! Integration tests, the demo mode and benchmarks point the exporter at it. For a given seed
//! the pipelines, their runs and every id are the same; run times follow the wall clock (the
//! simulator starts at [`Simulator::new`]) with nominal durations divided by
//! [`SimOptions::speed`]. Responses are written by hand in the vendor's shapes, nulls included.
//! `GET /_sim/truth` lists what really happened, so tests can compare the exporter with it;
//! CodeArts Repo's commit API (`GET /v4/repositories/{id}/repository/commits?sha=`) answers on
//! the same listener, for lead times;
//! `POST /_sim/pipelines` and `DELETE /_sim/pipelines/{id}` create and delete pipelines while
//! it runs. Faults (errors, throttling, time-outs, broken bodies) can be injected per API, see
//! [`faults`].
//!
//! `world` generates the pipelines and their runs, `render` writes them as each API answers,
//! `routes` reads requests and answers them, `auth` checks credentials, and `request_log` keeps
//! the requests seen. This file serves them over HTTP and applies faults to the answers.

mod auth;
pub mod faults;
mod render;
mod request_log;
mod routes;
mod world;

use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::http;

/// Response body of the simulator: whole, or cut off by a fault.
type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// A whole body.
fn whole(response: Response<http::Body>) -> Response<Body> {
    response.map(|body| body.map_err(|never| match never {}).boxed())
}
use auth::TokenStore;
use faults::{Decision, Effect, FaultSpec, Faults, RetryAfterForm};
use request_log::{LoggedRequest, RequestLog};
use world::{Shape, World};

/// Request bodies larger than this are refused.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest trace export the demo's collector takes (the exporter sends about 1 MiB at most,
/// before gzip).
const MAX_TRACE_BODY_BYTES: usize = 8 << 20;
/// Nominal durations are divided by the speed; outside these bounds times degenerate.
const SPEED_RANGE: (f64, f64) = (1e-3, 1e6);

/// What to simulate.
#[derive(Clone)]
pub struct SimOptions {
    /// Total pipelines.
    pub pipelines: usize,
    /// Projects; pipelines are spread over them round-robin.
    pub projects: usize,
    /// Seed of everything generated.
    pub seed: u64,
    /// Nominal durations are divided by this (e.g. 60: a minute lasts a second).
    pub speed: f64,
    /// Token always accepted in `X-Auth-Token`.
    pub token: String,
    /// Users IAM accepts for password logins.
    pub users: Vec<SimUser>,
    /// Lifetime of tokens issued by IAM.
    pub token_lifetime: Duration,
    /// Access keys accepted in `SDK-HMAC-SHA256` signatures.
    pub access_keys: Vec<SimAccessKey>,
    /// Faults injected from the start (replaced by `POST /_sim/faults`).
    pub faults: FaultSpec,
    /// Mean stages per pipeline (within ±2 of it); `None`: 2 to 8.
    pub stages: Option<usize>,
    /// Share of pipelines with a run in progress at any time; `None`: about a third.
    pub running_share: Option<f64>,
    /// AK/SK-signed CodeArts requests must carry the account's IAM project id in a signed
    /// `X-Project-Id` header (whether the real service insists is an open question; the SDK
    /// always sends it).
    pub require_project_id: bool,
    /// Deployment pipelines added after the `pipelines` others (named
    /// `{service}-deploy-prod` and `-deploy-staging` in turn): their history succeeds. For
    /// the six named services, the run under way at the start and the next fail and the third
    /// recovers (the first pipeline's recovery deploys the one commit CodeArts Repo does not
    /// know); their later runs, and every run of the pipelines beyond them, fail a fifth of
    /// the time. Default 0, so every other world stays as it was.
    pub deploy_pipelines: usize,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            pipelines: 24,
            projects: 2,
            seed: 1,
            speed: 1.0,
            token: "codearts-simulator-token".to_string(),
            users: vec![SimUser {
                name: "demo-user".to_string(),
                password: "demo-password".to_string(),
                domain: "demo-account".to_string(),
            }],
            token_lifetime: Duration::from_secs(24 * 3600),
            access_keys: vec![SimAccessKey {
                ak: "SIMULATORAK000000001".to_string(),
                sk: "simulator-secret-key-0000000000000000000".to_string(),
            }],
            faults: FaultSpec::default(),
            stages: None,
            running_share: None,
            require_project_id: false,
            deploy_pipelines: 0,
        }
    }
}

/// An IAM user that may log in with a password.
#[derive(Clone)]
pub struct SimUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// Account (domain) name.
    pub domain: String,
}

/// An access key pair accepted for AK/SK signatures.
#[derive(Clone)]
pub struct SimAccessKey {
    /// Access key id.
    pub ak: String,
    /// Secret key.
    pub sk: String,
}

/// The simulated service: pipelines, runs and credentials. Shared between connections.
pub struct Simulator {
    options: SimOptions,
    /// Written only by the test endpoints that add and delete pipelines.
    world: RwLock<World>,
    tokens: TokenStore,
    faults: Faults,
    requests: RequestLog,
    /// The time a test pinned the simulator at, epoch ms (`i64::MIN`: none, the wall clock).
    #[cfg(test)]
    pinned_ms: std::sync::atomic::AtomicI64,
}

/// Wall clock in epoch ms.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Simulator {
    /// A simulator whose clock starts now.
    pub fn new(options: SimOptions) -> Simulator {
        Simulator::starting_at(options, now_ms())
    }

    /// A simulator started at `started_at_ms`, so tests can pin time.
    pub(crate) fn starting_at(mut options: SimOptions, started_at_ms: i64) -> Simulator {
        options.speed = if options.speed.is_finite() && options.speed > 0.0 {
            options.speed.clamp(SPEED_RANGE.0, SPEED_RANGE.1)
        } else {
            1.0
        };
        let world = World::shaped(
            options.pipelines,
            options.projects,
            options.seed,
            options.speed,
            started_at_ms,
            Shape {
                stages: options.stages,
                running_share: options.running_share,
                deploy_pipelines: options.deploy_pipelines,
            },
        );
        let faults = Faults::new(&options.faults, options.seed, started_at_ms);
        Simulator {
            options,
            world: RwLock::new(world),
            tokens: TokenStore::new(),
            faults,
            requests: RequestLog::default(),
            #[cfg(test)]
            pinned_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// The simulator's time, epoch ms: the wall clock, unless a test pinned it.
    fn now_ms(&self) -> i64 {
        #[cfg(test)]
        {
            let pinned = self.pinned_ms.load(std::sync::atomic::Ordering::Relaxed);
            if pinned != i64::MIN {
                return pinned;
            }
        }
        now_ms()
    }

    /// Stops the simulator's clock at `ms` (epoch ms): every request after this arrives then,
    /// so a test says when each of its polls happens.
    #[cfg(test)]
    pub(crate) fn pin_time(&self, ms: i64) {
        self.pinned_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The world for reading; a panic elsewhere cannot leave it half-changed, so poison is harmless.
    fn world(&self) -> RwLockReadGuard<'_, World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The world for adding or deleting pipelines.
    fn world_mut(&self) -> RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    /// (project_id, pipeline_ids) for every project, in a stable order.
    pub fn targets(&self) -> Vec<(String, Vec<String>)> {
        let world = self.world();
        world
            .projects
            .iter()
            .map(|project| {
                let ids = project
                    .pipelines
                    .iter()
                    .map(|&i| world.pipelines[i].id.clone())
                    .collect();
                (project.id.clone(), ids)
            })
            .collect()
    }

    /// The token always accepted in `X-Auth-Token`.
    pub fn static_token(&self) -> &str {
        &self.options.token
    }

    /// The account's IAM project id (what IAM's project list answers for the region).
    pub fn iam_project_id(&self) -> String {
        self.world().iam_project_id.clone()
    }

    /// An access key accepted in signatures, if any is configured.
    pub fn access_key(&self) -> Option<&SimAccessKey> {
        self.options.access_keys.first()
    }
}

/// Runs a simulator of `options` on `listen` until `shutdown` resolves; `on_ready` learns its
/// address and static token once it listens.
pub async fn run(
    listen: std::net::SocketAddr,
    options: SimOptions,
    on_ready: impl FnOnce(std::net::SocketAddr, &str),
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let simulator = Arc::new(Simulator::new(options));
    let listener = TcpListener::bind(listen).await?;
    on_ready(listener.local_addr()?, simulator.static_token());
    serve(listener, simulator, shutdown).await;
    Ok(())
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, sim: Arc<Simulator>, shutdown: impl Future<Output = ()>) {
    http::serve(
        listener,
        move |request| {
            let sim = sim.clone();
            async move { respond(&sim, request).await }
        },
        shutdown,
    )
    .await;
}

async fn respond(sim: &Simulator, request: Request<Incoming>) -> Response<Body> {
    if request.method() == hyper::Method::POST && request.uri().path() == "/v1/traces" {
        return take_traces(request).await;
    }
    let (parts, body) = request.into_parts();
    let arrived_ms = sim.now_ms();
    let api = faults::api_of(parts.method.as_str(), parts.uri.path());
    let decision = match api {
        Some(api) => sim.faults.decide(api, arrived_ms),
        None => Decision::default(),
    };
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let error = render::error("DEVPIPE.00011001", "body : 非法参数");
            return whole(http::json(StatusCode::BAD_REQUEST, &error));
        }
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let request = routes::SimRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        authority: parts.uri.authority().map(|a| a.as_str()),
        body: &body,
    };
    let response = match &decision.effect {
        None => reply_to_response(sim.handle(&request, sim.now_ms())),
        Some(effect) => faulty_response(sim, &request, effect).await,
    };
    sim.requests.push(LoggedRequest {
        t_ms: arrived_ms,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        api,
        status: response.status().as_u16(),
        fault: decision.effect.as_ref().map(Effect::kind),
        retry_after: response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    response
}

/// The demo's trace collector, no part of CodeArts: an OTLP/HTTP receiver that takes every
/// export and keeps nothing, so the demo's traces have somewhere to go. The answer is an empty
/// `ExportTraceServiceResponse` (a protobuf message with no field set is no bytes).
async fn take_traces(request: Request<Incoming>) -> Response<Body> {
    let taken = Limited::new(request.into_body(), MAX_TRACE_BODY_BYTES)
        .collect()
        .await;
    let status = match taken {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    whole(http::response(status, "application/x-protobuf", Vec::new()))
}

fn reply_to_response(reply: routes::Reply) -> Response<Body> {
    let mut response = http::json(reply.status, &reply.body);
    if let Some(token) = reply.subject_token.and_then(|t| t.parse().ok()) {
        response.headers_mut().insert("x-subject-token", token);
    }
    whole(response)
}

/// The answer to a request hit by a fault.
async fn faulty_response(
    sim: &Simulator,
    request: &routes::SimRequest<'_>,
    effect: &Effect,
) -> Response<Body> {
    let error = |status: u16| {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        whole(http::json(code, &faults::error_body(status)))
    };
    match effect {
        Effect::Status(status) => error(*status),
        Effect::Throttle(retry_after) => {
            let mut response = error(429);
            let header = retry_after.map(|(seconds, form)| match form {
                RetryAfterForm::Seconds => seconds.to_string(),
                RetryAfterForm::Date => {
                    httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(seconds))
                }
            });
            if let Some(value) = header.and_then(|h| h.parse().ok()) {
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, value);
            }
            response
        }
        Effect::Timeout(hang) => {
            tokio::time::sleep(*hang).await;
            error(504)
        }
        Effect::Unauthorized => whole(http::json(
            StatusCode::UNAUTHORIZED,
            &render::error("DEV.00000003", "认证信息过期"),
        )),
        Effect::Oversized {
            bytes,
            content_length,
        } => {
            let frames = faults::oversized_chunks(*bytes)
                .map(|chunk| Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk)));
            let mut response =
                Response::new(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            // Without the header, hyper sends the stream chunked.
            if *content_length {
                headers.insert(hyper::header::CONTENT_LENGTH, (*bytes).into());
            }
            response
        }
        Effect::Drop | Effect::Malformed | Effect::WrongShape | Effect::Empty => {
            let mut reply = sim.handle(request, sim.now_ms());
            match effect {
                Effect::WrongShape => reply.body = faults::wrong_shape(reply.body),
                Effect::Empty => reply.body = faults::emptied(reply.body),
                _ => {}
            }
            let full = reply.body.to_string();
            if matches!(effect, Effect::WrongShape | Effect::Empty) {
                return reply_to_response(reply);
            }
            let half = full.len() / 2;
            // Cut on a character boundary, so the body stays text.
            let cut = (0..=half)
                .rev()
                .find(|&i| full.is_char_boundary(i))
                .unwrap_or(0);
            let start = bytes::Bytes::from(full[..cut].to_string());
            if !matches!(effect, Effect::Drop) {
                return whole(http::response(
                    reply.status,
                    "application/json;charset=UTF-8",
                    start,
                ));
            }
            // Promise the whole body, send half, then fail the body: the server closes the
            // connection mid-transfer.
            // The pause lets the first half reach the client before the connection breaks.
            let frames = futures_util::stream::iter([Ok(hyper::body::Frame::data(start))]).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "simulated connection drop",
                    ))
                }),
            );
            let mut response =
                Response::new(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
            *response.status_mut() = reply.status;
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json;charset=UTF-8"),
            );
            headers.insert(hyper::header::CONTENT_LENGTH, full.len().into());
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_over_http_until_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let sim = Arc::new(Simulator::new(SimOptions {
            pipelines: 3,
            ..SimOptions::default()
        }));
        let (project, ids) = sim.targets().remove(0);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, sim.clone(), async {
            let _ = stopped.await;
        }));

        let body = format!("[\"{}\"]", ids[0]);
        let request = format!(
            "POST /v5/{project}/api/pipelines/status HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            sim.static_token(),
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut text = String::new();
        stream.read_to_string(&mut text).await.expect("read");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/json;charset=utf-8")
        );
        let json = text.split("\r\n\r\n").nth(1).expect("body");
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(value[0]["pipeline_id"], ids[0].as_str());

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .expect("joins");
    }

    #[tokio::test]
    async fn a_repo_outage_is_a_fault_rule_and_the_log_names_repo_commit() {
        let sim = Arc::new(Simulator::new(SimOptions {
            pipelines: 3,
            ..SimOptions::default()
        }));
        let now = sim.now_ms();
        let (repository, sha) = {
            let world = sim.world();
            world.with_runs(0, now, |def, log| {
                let commit = log
                    .started(now)
                    .filter_map(|run| run.build.commit.as_ref())
                    .find(|commit| commit.in_repo)
                    .expect("a known commit");
                (
                    def.codehub_id.clone().expect("repository"),
                    commit.id.clone(),
                )
            })
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, sim.clone(), async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let commit_url =
            format!("{base}/v4/repositories/{repository}/repository/commits?sha={sha}");
        let get_commit = || {
            client
                .get(&commit_url)
                .header("X-Auth-Token", sim.static_token())
                .send()
        };
        assert_eq!(get_commit().await.expect("answer").status(), 200);
        let outage = r#"{"faults": [{"api": "repo_commit", "kind": "error", "status": 503}]}"#;
        let set = client
            .post(format!("{base}/_sim/faults"))
            .body(outage)
            .send()
            .await
            .expect("faults set");
        assert_eq!(set.status(), 200);
        assert_eq!(get_commit().await.expect("answer").status(), 503);
        // The pipeline APIs are not part of the outage.
        let (project, ids) = sim.targets().remove(0);
        let status = client
            .post(format!("{base}/v5/{project}/api/pipelines/status"))
            .header("X-Auth-Token", sim.static_token())
            .body(format!("[\"{}\"]", ids[0]))
            .send()
            .await
            .expect("answer");
        assert_eq!(status.status(), 200);
        let cleared = client
            .delete(format!("{base}/_sim/faults"))
            .send()
            .await
            .expect("faults cleared");
        assert_eq!(cleared.status(), 200);
        assert_eq!(get_commit().await.expect("answer").status(), 200);
        let log: serde_json::Value = client
            .get(format!("{base}/_sim/requests?api=repo_commit"))
            .send()
            .await
            .expect("log")
            .json()
            .await
            .expect("json");
        let seen: Vec<(u64, Option<&str>)> = log["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(|r| (r["status"].as_u64().unwrap_or(0), r["fault"].as_str()))
            .collect();
        assert_eq!(seen, [(200, None), (503, Some("error")), (200, None)]);

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops")
            .expect("joins");
    }

    #[test]
    fn targets_cover_every_pipeline_round_robin() {
        let sim = Simulator::new(SimOptions {
            pipelines: 7,
            projects: 3,
            ..SimOptions::default()
        });
        let targets = sim.targets();
        assert_eq!(targets.len(), 3);
        assert_eq!(
            targets.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(),
            [3, 2, 2]
        );
        assert_eq!(sim.static_token(), "codearts-simulator-token");
        let again = Simulator::new(SimOptions {
            pipelines: 7,
            projects: 3,
            ..SimOptions::default()
        });
        assert_eq!(again.targets(), targets);
    }

    #[test]
    fn silly_speeds_are_tamed() {
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let sim = Simulator::new(SimOptions {
                pipelines: 2,
                speed,
                ..SimOptions::default()
            });
            assert!(sim.options.speed.is_finite() && sim.options.speed > 0.0);
        }
    }
}
