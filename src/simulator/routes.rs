//! Routing, authentication and parameter checks of each simulated API.

use chrono::NaiveDateTime;
use hyper::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::auth::{self, IamReply, Signed, TokenStore, query_pairs};
use super::faults::FaultSpec;
use super::render::{self, error};
use super::world::{RunPlan, RunView, World};
use super::{SimOptions, Simulator};

/// Default and largest page sizes of the list APIs.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;

/// A request with its body read.
pub(crate) struct SimRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

/// What to answer: a status, a JSON body, and the token IAM issued, if any.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub subject_token: Option<String>,
}

impl Reply {
    fn new(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            subject_token: None,
        }
    }

    fn ok(body: Value) -> Reply {
        Reply::new(StatusCode::OK, body)
    }
}

fn bad_param(name: &str) -> Reply {
    Reply::new(
        StatusCode::BAD_REQUEST,
        error("DEVPIPE.00011001", &format!("{name} : 非法参数")),
    )
}

fn no_project() -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        error("DEVPIPE.00011104", "项目不存在"),
    )
}

fn no_pipeline() -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        error("DEVPIPE.00011103", "流水线不存在"),
    )
}

fn no_run() -> Reply {
    Reply::new(
        StatusCode::NOT_FOUND,
        error("DEVPIPE.00011105", "流水线运行实例不存在"),
    )
}

fn no_route() -> Reply {
    // What the vendor's API gateway answers for paths it does not know.
    Reply::new(
        StatusCode::NOT_FOUND,
        error(
            "APIG.0101",
            "The API does not exist or has not been published in the environment",
        ),
    )
}

fn unauthorized(code: &str, message: &str) -> Reply {
    Reply::new(StatusCode::UNAUTHORIZED, error(code, message))
}

/// 32 digits or lower-case letters, the shape of every CodeArts id.
fn is_id(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query_pairs(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The body as a JSON object; an empty body is an empty object.
fn body_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_param("body")),
    }
}

fn field_u64(body: &Map<String, Value>, key: &str) -> Result<Option<u64>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad_param(key)),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad_param(key)),
        Some(_) => Err(bad_param(key)),
    }
}

/// Epoch ms, as a number, a digit string or `yyyy-MM-dd HH:mm:ss` in UTC+8.
fn field_time(body: &Map<String, Value>, key: &str) -> Result<Option<i64>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad_param(key)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.bytes().all(|b| b.is_ascii_digit()) {
                return s.parse().map(Some).map_err(|_| bad_param(key));
            }
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .map(|t| Some(t.and_utc().timestamp_millis() - 8 * 3_600_000))
                .map_err(|_| bad_param(key))
        }
        Some(_) => Err(bad_param(key)),
    }
}

fn field_list(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad_param(key))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_param(key)),
    }
}

fn field_choice(
    body: &Map<String, Value>,
    key: &str,
    allowed: &[&'static str],
    default: &'static str,
) -> Result<&'static str, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s.trim()))
            .copied()
            .ok_or_else(|| bad_param(key)),
        Some(_) => Err(bad_param(key)),
    }
}

/// Offset and limit of a list request: limit defaults to 10 and is capped at 100.
fn paging(body: &Map<String, Value>) -> Result<(u64, u64), Reply> {
    let offset = field_u64(body, "offset")?.unwrap_or(0);
    let limit = match field_u64(body, "limit")? {
        None => DEFAULT_LIMIT,
        Some(0) => return Err(bad_param("limit")),
        Some(limit) => limit.min(MAX_LIMIT),
    };
    Ok((offset, limit))
}

fn page<T>(items: Vec<T>, offset: u64, limit: u64) -> Vec<T> {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    items.into_iter().skip(offset).take(limit).collect()
}

impl Simulator {
    /// Answers `request` as the service would at `now_ms`.
    pub(crate) fn handle(&self, request: &SimRequest<'_>, now_ms: i64) -> Reply {
        let path = request.path.strip_prefix('/').unwrap_or(request.path);
        let segments: Vec<&str> = path.split('/').collect();
        // Test-only changes to the world take the write lock; everything else reads.
        match (request.method, segments.as_slice()) {
            ("POST", ["_sim", "pipelines"]) => self.add_pipeline(request.body, now_ms),
            ("GET", ["_sim", "faults"]) => Reply::ok(self.faults.describe(now_ms)),
            ("POST", ["_sim", "faults"]) => match FaultSpec::from_json(request.body) {
                Ok(spec) => {
                    self.faults.set(&spec, now_ms);
                    Reply::ok(self.faults.describe(now_ms))
                }
                Err(problem) => Reply::new(
                    StatusCode::BAD_REQUEST,
                    error("DEVPIPE.00011001", &format!("body : {problem}")),
                ),
            },
            ("DELETE", ["_sim", "faults"]) => {
                self.faults.set(&FaultSpec::default(), now_ms);
                Reply::ok(self.faults.describe(now_ms))
            }
            ("GET", ["_sim", "requests"]) => {
                let api = query_value(request.query, "api");
                Reply::ok(self.requests.to_json(api.as_deref()))
            }
            ("DELETE", ["_sim", "requests"]) => {
                self.requests.clear();
                Reply::ok(json!({ "requests": [] }))
            }
            ("DELETE", ["_sim", "pipelines", id]) => {
                if self.world_mut().remove_pipeline(id) {
                    Reply::ok(json!({ "pipeline_id": id, "deleted": true }))
                } else {
                    no_pipeline()
                }
            }
            _ => {
                let world = self.world();
                let service = Service {
                    world: &world,
                    options: &self.options,
                    tokens: &self.tokens,
                };
                service.route(request, &segments, now_ms)
            }
        }
    }

    /// Every completed run, per pipeline (what `GET /_sim/truth` answers).
    #[cfg(test)]
    pub(crate) fn truth(&self, now_ms: i64) -> Value {
        let world = self.world();
        let service = Service {
            world: &world,
            options: &self.options,
            tokens: &self.tokens,
        };
        service.truth(now_ms, i64::MIN)
    }

    /// `POST /_sim/pipelines` `{"name", "project_id", "tags"}` (all optional): creates a
    /// pipeline whose first run starts now.
    fn add_pipeline(&self, body: &[u8], now_ms: i64) -> Reply {
        let body = match body_object(body) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let name = match body.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(_) => return bad_param("name"),
        };
        let tags = match field_list(&body, "tags") {
            Ok(tags) => tags,
            Err(reply) => return reply,
        };
        let mut world = self.world_mut();
        let project = match body.get("project_id") {
            None | Some(Value::Null) => 0,
            Some(Value::String(id)) => match world.project(id) {
                Some(project) => project,
                None => return no_project(),
            },
            Some(_) => return bad_param("project_id"),
        };
        if world.projects.is_empty() {
            return no_project();
        }
        let index = world.add_pipeline(project, name, tags, now_ms);
        let def = &world.pipelines[index];
        Reply::ok(json!({
            "pipeline_id": def.id,
            "name": def.name,
            "project_id": world.projects[project].id,
            "tag_list": def.tags,
        }))
    }
}

/// The simulator's APIs over one consistent view of the world.
struct Service<'a> {
    world: &'a World,
    options: &'a SimOptions,
    tokens: &'a TokenStore,
}

impl Service<'_> {
    fn route(&self, request: &SimRequest<'_>, segments: &[&str], now_ms: i64) -> Reply {
        match (request.method, segments) {
            ("POST", ["v3", "auth", "tokens"]) => self.iam(request, now_ms),
            ("GET", ["_sim", "truth"]) => {
                // `?since_ms=T` keeps the runs that ended at or after T (big worlds).
                match query_value(request.query, "since_ms").map(|v| v.parse::<i64>()) {
                    None => Reply::ok(self.truth(now_ms, i64::MIN)),
                    Some(Ok(since)) => Reply::ok(self.truth(now_ms, since)),
                    Some(Err(_)) => bad_param("since_ms"),
                }
            }
            ("POST", ["_sim", "revoke-tokens"]) => {
                let revoked = self.tokens.revoke_all();
                Reply::ok(serde_json::json!({ "revoked": revoked }))
            }
            ("GET", ["v3", "pipelines", "status"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.v3_status(request.query, now_ms)),
            ("POST", ["v5", project, "api", "pipelines", "status"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.v5_status(project, request.body, now_ms)),
            ("POST", ["v5", project, "api", "pipelines", "list"]) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.pipelines_list(project, request.body, now_ms)),
            (
                "GET",
                [
                    "v5",
                    project,
                    "api",
                    "pipelines",
                    pipeline,
                    "pipeline-runs",
                    "detail",
                ],
            ) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.run_detail(project, pipeline, request.query, now_ms)),
            (
                "POST",
                [
                    "v5",
                    project,
                    "api",
                    "pipelines",
                    pipeline,
                    "pipeline-runs",
                    "list",
                ],
            ) => self
                .authenticate(request, now_ms)
                .unwrap_or_else(|| self.runs_list(project, pipeline, request.body, now_ms)),
            _ => no_route(),
        }
    }

    /// `None` when the request carries valid credentials, else the 401 to answer.
    fn authenticate(&self, request: &SimRequest<'_>, now_ms: i64) -> Option<Reply> {
        if let Some(value) = request.headers.get("x-auth-token") {
            let token = value.to_str().unwrap_or("\u{0}");
            if token.is_empty() {
                return Some(unauthorized("DEV.00000001", "未识别到用户认证信息"));
            }
            if token == self.options.token || self.tokens.is_valid(token, now_ms) {
                return None;
            }
            return Some(unauthorized("DEV.00000003", "认证信息过期"));
        }
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("SDK-HMAC-SHA256"));
        if let Some(authorization) = authorization {
            let signed = Signed {
                method: request.method,
                path: request.path,
                query: request.query,
                headers: request.headers,
                authority: request.authority,
                body: request.body,
            };
            return auth::verify_signature(
                &self.options.access_keys,
                authorization,
                &signed,
                now_ms,
            )
            .err()
            .map(|e| Reply::new(StatusCode::UNAUTHORIZED, e.body()));
        }
        Some(unauthorized("DEV.00000001", "未识别到用户认证信息"))
    }

    fn iam(&self, request: &SimRequest<'_>, now_ms: i64) -> Reply {
        let lifetime_ms =
            i64::try_from(self.options.token_lifetime.as_millis()).unwrap_or(i64::MAX);
        let ids = (
            self.world.domain_id.as_str(),
            self.world.iam_project_id.as_str(),
        );
        match auth::iam_login(
            self.tokens,
            &self.options.users,
            request.body,
            now_ms,
            lifetime_ms,
            ids,
        ) {
            IamReply::Issued { token, body } => Reply {
                status: StatusCode::CREATED,
                body,
                subject_token: Some(token),
            },
            IamReply::BadRequest(body) => Reply::new(StatusCode::BAD_REQUEST, body),
            IamReply::Refused(body) => Reply::new(StatusCode::UNAUTHORIZED, body),
        }
    }

    fn project(&self, id: &str) -> Result<usize, Reply> {
        if !is_id(id) {
            return Err(bad_param("project_id"));
        }
        self.world.project(id).ok_or_else(no_project)
    }

    fn pipeline_in(&self, project: usize, id: &str) -> Result<usize, Reply> {
        if !is_id(id) {
            return Err(bad_param("pipeline_id"));
        }
        self.world
            .pipeline(id)
            .filter(|&i| self.world.pipelines[i].project == project)
            .ok_or_else(no_pipeline)
    }

    /// Renders the newest run of pipeline `index` with `render`, if it has one.
    fn latest<R>(
        &self,
        index: usize,
        now_ms: i64,
        render: impl FnOnce(&super::world::PipelineDef, &RunPlan, &RunView) -> R,
    ) -> Option<R> {
        self.world.with_runs(index, now_ms, |def, log| {
            log.latest(now_ms)
                .map(|run| render(def, run, &run.view(now_ms)))
        })
    }

    fn v3_status(&self, query: Option<&str>, now_ms: i64) -> Reply {
        let Some(param) = query_value(query, "pipeline_ids") else {
            return bad_param("pipeline_ids");
        };
        let mut ids: Vec<&str> = param.split(',').map(str::trim).collect();
        if !ids.iter().all(|id| is_id(id)) {
            return bad_param("pipeline_ids");
        }
        dedup_in_order(&mut ids);
        let entries: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.world.pipeline(id))
            .filter_map(|index| {
                self.latest(index, now_ms, |def, run, view| {
                    render::v3_status(self.world, def, run, view)
                })
            })
            .collect();
        Reply::ok(Value::Array(entries))
    }

    fn v5_status(&self, project: &str, body: &[u8], now_ms: i64) -> Reply {
        let project = match self.project(project) {
            Ok(project) => project,
            Err(reply) => return reply,
        };
        let ids: Option<Vec<String>> =
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|value| match value {
                    Value::Array(items) => items
                        .into_iter()
                        .map(|item| match item {
                            Value::String(id) if is_id(&id) => Some(id),
                            _ => None,
                        })
                        .collect(),
                    _ => None,
                });
        let Some(mut ids) = ids else {
            return bad_param("pipeline_ids");
        };
        dedup_in_order(&mut ids);
        let entries: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.world.pipeline(id))
            .filter(|&index| self.world.pipelines[index].project == project)
            .filter_map(|index| {
                self.latest(index, now_ms, |def, run, view| {
                    render::v5_run(self.world, def, run, view, false)
                })
            })
            .collect();
        Reply::ok(Value::Array(entries))
    }

    fn run_detail(&self, project: &str, pipeline: &str, query: Option<&str>, now_ms: i64) -> Reply {
        let index = match self
            .project(project)
            .and_then(|p| self.pipeline_in(p, pipeline))
        {
            Ok(index) => index,
            Err(reply) => return reply,
        };
        // An empty value is as good as none, as the vendor's SDKs may send one.
        let run_id = query_value(query, "pipeline_run_id").filter(|v| !v.is_empty());
        let number = query_value(query, "pipeline_run_number").filter(|v| !v.is_empty());
        if run_id.as_deref().is_some_and(|id| !is_id(id)) {
            return bad_param("pipeline_run_id");
        }
        let number = match number.map(|n| n.trim().parse::<u64>()) {
            None => None,
            Some(Ok(n)) if n >= 1 => Some(n),
            Some(_) => return bad_param("pipeline_run_number"),
        };
        self.world.with_runs(index, now_ms, |def, log| {
            let run = match (&run_id, number) {
                (Some(id), _) => log.started(now_ms).find(|r| &r.id == id),
                (None, Some(n)) => log.started(now_ms).find(|r| r.number == n),
                (None, None) => log.latest(now_ms),
            };
            match run {
                Some(run) => Reply::ok(render::run_detail(
                    self.world,
                    def,
                    run,
                    &run.view(now_ms),
                    now_ms,
                )),
                None => no_run(),
            }
        })
    }

    fn runs_list(&self, project: &str, pipeline: &str, body: &[u8], now_ms: i64) -> Reply {
        match self.try_runs_list(project, pipeline, body, now_ms) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn try_runs_list(
        &self,
        project: &str,
        pipeline: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Reply, Reply> {
        let index = self.pipeline_in(self.project(project)?, pipeline)?;
        let body = body_object(body)?;
        let (offset, limit) = paging(&body)?;
        let statuses = field_list(&body, "status")?;
        let triggers = field_list(&body, "trigger_type")?;
        // The time filters select runs by start; `update_time` by last change.
        let started_from = field_time(&body, "start_time")?;
        let started_to = field_time(&body, "end_time")?;
        let updated_from = field_time(&body, "update_time")?;
        let sort_key = field_choice(
            &body,
            "sort_key",
            &["start_time", "update_time"],
            "start_time",
        )?;
        let descending = field_choice(&body, "sort_dir", &["asc", "desc"], "desc")? == "desc";
        Ok(self.world.with_runs(index, now_ms, |def, log| {
            let mut rows: Vec<(&RunPlan, i64)> = log
                .started(now_ms)
                .filter_map(|run| {
                    let (status, update) = run.summary(now_ms);
                    let keep = statuses
                        .as_ref()
                        .is_none_or(|s| s.iter().any(|x| x.eq_ignore_ascii_case(status)))
                        && triggers.as_ref().is_none_or(|t| {
                            t.iter().any(|x| x.eq_ignore_ascii_case(run.build.trigger))
                        })
                        && started_from.is_none_or(|from| run.start_ms >= from)
                        && started_to.is_none_or(|to| run.start_ms <= to)
                        && updated_from.is_none_or(|from| update >= from);
                    let key = if sort_key == "update_time" {
                        update
                    } else {
                        run.start_ms
                    };
                    keep.then_some((run, key))
                })
                .collect();
            rows.sort_by_key(|(run, key)| (*key, run.number));
            if descending {
                rows.reverse();
            }
            let total = rows.len();
            let runs: Vec<Value> = page(rows, offset, limit)
                .into_iter()
                .map(|(run, _)| render::v5_run(self.world, def, run, &run.view(now_ms), true))
                .collect();
            Reply::ok(
                json!({"offset": offset, "limit": limit, "total": total, "pipeline_runs": runs}),
            )
        }))
    }

    fn pipelines_list(&self, project: &str, body: &[u8], now_ms: i64) -> Reply {
        match self.try_pipelines_list(project, body, now_ms) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn try_pipelines_list(&self, project: &str, body: &[u8], now_ms: i64) -> Result<Reply, Reply> {
        let project = self.project(project)?;
        let body = body_object(body)?;
        let (offset, limit) = paging(&body)?;
        let name = match body.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().to_lowercase()).filter(|s| !s.is_empty()),
            Some(_) => return Err(bad_param("name")),
        };
        let statuses = field_list(&body, "status")?;
        // Pipelines carrying any of these tags.
        let tags = field_list(&body, "tag_list")?;
        let sort_key = field_choice(
            &body,
            "sort_key",
            &["name", "create_time", "update_time"],
            "create_time",
        )?;
        let descending = field_choice(&body, "sort_dir", &["asc", "desc"], "desc")? == "desc";

        struct Row {
            name: String,
            create: i64,
            update: i64,
            index: usize,
            entry: Value,
        }
        let mut rows: Vec<Row> = Vec::new();
        for &index in &self.world.projects[project].pipelines {
            let def = &self.world.pipelines[index];
            if name
                .as_ref()
                .is_some_and(|n| !def.name.to_lowercase().contains(n.as_str()))
            {
                continue;
            }
            if tags
                .as_ref()
                .is_some_and(|wanted| !def.tags.iter().any(|t| wanted.contains(t)))
            {
                continue;
            }
            let row = self.world.with_runs(index, now_ms, |def, log| {
                let latest = log.latest(now_ms).map(|run| (run, run.view(now_ms)));
                let status = latest.as_ref().map(|(_, view)| view.status);
                let keep = statuses.as_ref().is_none_or(|s| {
                    status.is_some_and(|st| s.iter().any(|x| x.eq_ignore_ascii_case(st)))
                });
                keep.then(|| Row {
                    name: def.name.clone(),
                    create: def.create_ms,
                    update: latest
                        .as_ref()
                        .map_or(def.create_ms, |(_, view)| view.update),
                    index,
                    entry: render::pipeline_entry(
                        self.world,
                        def,
                        latest.as_ref().map(|(r, v)| (*r, v)),
                    ),
                })
            });
            rows.extend(row);
        }
        match sort_key {
            "name" => rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.index.cmp(&b.index))),
            "update_time" => rows.sort_by_key(|r| (r.update, r.index)),
            _ => rows.sort_by_key(|r| (r.create, r.index)),
        }
        if descending {
            rows.reverse();
        }
        let total = rows.len();
        let pipelines: Vec<Value> = page(rows, offset, limit)
            .into_iter()
            .map(|r| r.entry)
            .collect();
        Ok(Reply::ok(json!({
            "offset": offset,
            "limit": limit,
            "total": total,
            "current_system_time": now_ms,
            "pipelines": pipelines,
        })))
    }

    /// Every completed run the simulator keeps that ended at or after `since_ms`, oldest first,
    /// per pipeline.
    fn truth(&self, now_ms: i64, since_ms: i64) -> Value {
        let mut pipelines = Vec::with_capacity(self.world.pipelines.len());
        for project in &self.world.projects {
            for &index in &project.pipelines {
                pipelines.push(self.world.with_runs(index, now_ms, |def, log| {
                    let runs: Vec<Value> = log
                        .started(now_ms)
                        .filter(|run| run.is_done(now_ms) && run.end_ms() >= since_ms)
                        .map(|run| render::truth_run(def, run, &run.view(now_ms)))
                        .collect();
                    json!({
                        "project_id": project.id,
                        "pipeline_id": def.id,
                        "name": def.name,
                        "tags": def.tags,
                        "stage_count": def.stages.len(),
                        "runs": runs,
                    })
                }));
            }
        }
        json!({
            "started_at_ms": self.world.started_at_ms,
            "now_ms": now_ms,
            "pipelines": pipelines,
        })
    }
}

fn dedup_in_order<T: PartialEq + Clone>(items: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(items.len());
    items.retain(|item| {
        if seen.contains(item) {
            false
        } else {
            seen.push(item.clone());
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::SimOptions;
    use hyper::header::HeaderValue;

    const START: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn sim() -> Simulator {
        Simulator::starting_at(
            SimOptions {
                pipelines: 6,
                projects: 2,
                speed: 60.0,
                token_lifetime: std::time::Duration::from_secs(60),
                ..SimOptions::default()
            },
            START,
        )
    }

    fn call_with(
        sim: &Simulator,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
        now: i64,
    ) -> Reply {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert("x-auth-token", HeaderValue::from_str(token).expect("token"));
        }
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        let request = SimRequest {
            method,
            path,
            query,
            headers: &headers,
            authority: None,
            body: body.as_bytes(),
        };
        sim.handle(&request, now)
    }

    fn call(sim: &Simulator, method: &str, uri: &str, body: &str, now: i64) -> Reply {
        call_with(
            sim,
            method,
            uri,
            Some("codearts-simulator-token"),
            body,
            now,
        )
    }

    fn code(reply: &Reply) -> &str {
        reply.body["error_code"].as_str().unwrap_or("")
    }

    #[test]
    fn credentials_are_checked() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v3/pipelines/status?pipeline_ids={}", ids[0]);
        let missing = call_with(&sim, "GET", &uri, None, "", START);
        assert_eq!(
            (missing.status, code(&missing)),
            (StatusCode::UNAUTHORIZED, "DEV.00000001")
        );
        assert_eq!(missing.body["error_msg"], "未识别到用户认证信息");
        let wrong = call_with(&sim, "GET", &uri, Some("nope"), "", START);
        assert_eq!(
            (wrong.status, code(&wrong)),
            (StatusCode::UNAUTHORIZED, "DEV.00000003")
        );
        assert_eq!(wrong.body["error_msg"], "认证信息过期");

        let login = r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo-user","password":"demo-password","domain":{"name":"demo-account"}}}},"scope":{"project":{"name":"cn-north-4"}}}}"#;
        let issued = call_with(&sim, "POST", "/v3/auth/tokens", None, login, START);
        assert_eq!(issued.status, StatusCode::CREATED);
        let token = issued.subject_token.expect("token");
        let status = format!("/v5/{project}/api/pipelines/status");
        let body = format!("[\"{}\"]", ids[0]);
        let ok = call_with(&sim, "POST", &status, Some(&token), &body, START + 59_000);
        assert_eq!(ok.status, StatusCode::OK);
        let expired = call_with(&sim, "POST", &status, Some(&token), &body, START + 60_000);
        assert_eq!(code(&expired), "DEV.00000003");
        let refused = call_with(
            &sim,
            "POST",
            "/v3/auth/tokens",
            None,
            &login.replace("demo-password", "x"),
            START,
        );
        assert_eq!(
            (refused.status, code(&refused)),
            (StatusCode::UNAUTHORIZED, "IAM.0002")
        );
        let bad = call_with(&sim, "POST", "/v3/auth/tokens", None, "{", START);
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        // The truth needs no credentials.
        assert_eq!(
            call_with(&sim, "GET", "/_sim/truth", None, "", START).status,
            StatusCode::OK
        );
    }

    #[test]
    fn v3_status_validates_and_omits_unknown_ids() {
        let sim = sim();
        let all: Vec<String> = sim.targets().into_iter().flat_map(|(_, ids)| ids).collect();
        let unknown = "0123456789abcdefghijklmnopqrstuv";
        let uri = format!(
            "/v3/pipelines/status?pipeline_ids={}%2C{unknown},{}",
            all[0], all[1]
        );
        let reply = call(&sim, "GET", &uri, "", START);
        assert_eq!(reply.status, StatusCode::OK);
        let entries = reply.body.as_array().expect("array");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["pipeline_id"], all[0].as_str());
        assert_eq!(entries[1]["pipeline_id"], all[1].as_str());
        for bad in [
            "/v3/pipelines/status",
            "/v3/pipelines/status?pipeline_ids=",
            "/v3/pipelines/status?pipeline_ids=ABCDEF0123456789abcdef0123456789",
            "/v3/pipelines/status?pipeline_ids=short",
        ] {
            let reply = call(&sim, "GET", bad, "", START);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(code(&reply), "DEVPIPE.00011001");
            assert_eq!(reply.body["error_msg"], "pipeline_ids : 非法参数");
        }
    }

    #[test]
    fn v5_status_is_scoped_to_the_project() {
        let sim = sim();
        let targets = sim.targets();
        let (project, ids) = &targets[0];
        let other = &targets[1].1[0];
        let body = json!([ids[0], other, ids[1]]).to_string();
        let reply = call(
            &sim,
            "POST",
            &format!("/v5/{project}/api/pipelines/status"),
            &body,
            START,
        );
        let entries = reply.body.as_array().expect("array");
        assert_eq!(entries.len(), 2);
        assert!(
            entries
                .iter()
                .all(|e| e["end_time"].is_null() || e["end_time"].is_i64())
        );
        let unknown = call(
            &sim,
            "POST",
            "/v5/0123456789abcdef0123456789abcdef/api/pipelines/status",
            &body,
            START,
        );
        assert_eq!(
            (unknown.status, code(&unknown)),
            (StatusCode::NOT_FOUND, "DEVPIPE.00011104")
        );
        for bad in ["", "{}", "[1]", "[\"nope\"]", "not json"] {
            let reply = call(
                &sim,
                "POST",
                &format!("/v5/{project}/api/pipelines/status"),
                bad,
                START,
            );
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn run_detail_finds_runs_by_id_number_or_latest() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let base = format!(
            "/v5/{project}/api/pipelines/{}/pipeline-runs/detail",
            ids[0]
        );
        let now = START + 2 * HOUR;
        let latest = call(&sim, "GET", &base, "", now);
        assert_eq!(latest.status, StatusCode::OK);
        assert_eq!(latest.body["current_system_time"], now);
        let number = latest.body["run_number"].as_u64().expect("number");
        assert!(number > 1);
        let id = latest.body["id"].as_str().expect("id").to_string();
        let by_id = call(
            &sim,
            "GET",
            &format!("{base}?pipeline_run_id={id}"),
            "",
            now,
        );
        assert_eq!(by_id.body, latest.body);
        let first = call(
            &sim,
            "GET",
            &format!("{base}?pipeline_run_number=1"),
            "",
            now,
        );
        assert_eq!(first.body["run_number"], 1);
        let future = call(
            &sim,
            "GET",
            &format!("{base}?pipeline_run_number={}", number + 1),
            "",
            now,
        );
        assert_eq!(
            (future.status, code(&future)),
            (StatusCode::NOT_FOUND, "DEVPIPE.00011105")
        );
        let unknown_run = call(
            &sim,
            "GET",
            &format!("{base}?pipeline_run_id=0123456789abcdef0123456789abcdef"),
            "",
            now,
        );
        assert_eq!(code(&unknown_run), "DEVPIPE.00011105");
        for bad in [
            "?pipeline_run_id=XYZ",
            "?pipeline_run_number=0",
            "?pipeline_run_number=x",
        ] {
            assert_eq!(
                call(&sim, "GET", &format!("{base}{bad}"), "", now).status,
                StatusCode::BAD_REQUEST
            );
        }
        let other_project = &sim.targets()[1].0;
        let wrong = call(&sim, "GET", &base.replace(&project, other_project), "", now);
        assert_eq!(
            (wrong.status, code(&wrong)),
            (StatusCode::NOT_FOUND, "DEVPIPE.00011103")
        );
        let malformed = call(&sim, "GET", &base.replace(&ids[0], "bad"), "", now);
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn runs_list_pages_filters_and_sorts() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v5/{project}/api/pipelines/{}/pipeline-runs/list", ids[0]);
        let now = START + 10 * HOUR;
        let all = call(&sim, "POST", &uri, "{\"limit\": 100}", now);
        let total = all.body["total"].as_u64().expect("total");
        let runs = all.body["pipeline_runs"].as_array().expect("runs");
        assert_eq!(runs.len() as u64, total.min(100));
        assert!(total > 10);
        let numbers: Vec<u64> = runs
            .iter()
            .map(|r| r["run_number"].as_u64().expect("n"))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] > w[1]), "newest first");
        assert!(
            runs.iter()
                .all(|r| r["start_time"].as_i64().expect("start") <= now)
        );
        assert!(runs[0]["stage_status_list"][0]["id"].is_string());

        let default = call(&sim, "POST", &uri, "", now);
        assert_eq!(default.body["limit"], 10);
        assert_eq!(
            default.body["pipeline_runs"]
                .as_array()
                .expect("runs")
                .len(),
            10
        );
        let second = call(
            &sim,
            "POST",
            &uri,
            "{\"offset\": 10, \"limit\": 5, \"sort_dir\": \"desc\"}",
            now,
        );
        assert_eq!(second.body["pipeline_runs"][0]["run_number"], numbers[10]);
        let asc = call(
            &sim,
            "POST",
            &uri,
            "{\"sort_dir\": \"asc\", \"sort_key\": \"update_time\"}",
            now,
        );
        assert_eq!(
            asc.body["pipeline_runs"][0]["run_number"],
            numbers[0] + 1 - total
        );
        let failed = call(
            &sim,
            "POST",
            &uri,
            "{\"status\": [\"FAILED\"], \"limit\": 100}",
            now,
        );
        assert!(
            failed.body["pipeline_runs"]
                .as_array()
                .expect("runs")
                .iter()
                .all(|r| r["status"] == "FAILED")
        );
        let cut = runs[5]["start_time"].as_i64().expect("start");
        let since = call(
            &sim,
            "POST",
            &uri,
            &format!(
                "{{\"start_time\": \"{}\", \"limit\": 100}}",
                render::local_time(cut)
            ),
            now,
        );
        // Dates have whole seconds: the run at `cut` may fall just before it.
        let count = since.body["total"].as_u64().expect("total");
        assert!(count == 5 || count == 6, "{count}");
        let capped = call(&sim, "POST", &uri, "{\"limit\": 1000}", now);
        assert_eq!(capped.body["limit"], 100);
        for bad in [
            "[]",
            "{\"limit\": 0}",
            "{\"offset\": -1}",
            "{\"sort_key\": \"x\"}",
            "{\"start_time\": \"yesterday\"}",
            "{\"status\": 3}",
        ] {
            assert_eq!(
                call(&sim, "POST", &uri, bad, now).status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn pipelines_list_pages_and_filters_by_name() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v5/{project}/api/pipelines/list");
        let reply = call(&sim, "POST", &uri, "", START);
        assert_eq!(reply.body["total"], ids.len());
        assert_eq!(reply.body["current_system_time"], START);
        let pipelines = reply.body["pipelines"].as_array().expect("pipelines");
        let mut listed: Vec<&str> = pipelines
            .iter()
            .map(|p| p["pipeline_id"].as_str().expect("id"))
            .collect();
        listed.sort_unstable();
        let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(listed, expected);
        assert!(
            pipelines
                .iter()
                .all(|p| p["latest_run"]["pipeline_run_id"].is_string() && p["banned"] == false)
        );
        let name = pipelines[0]["name"].as_str().expect("name").to_string();
        let part: String = name.chars().take(3).collect();
        let filtered = call(
            &sim,
            "POST",
            &uri,
            &json!({"name": part.to_uppercase()}).to_string(),
            START,
        );
        assert!(
            filtered.body["pipelines"]
                .as_array()
                .expect("p")
                .iter()
                .any(|p| p["name"] == name.as_str())
        );
        let paged = call(&sim, "POST", &uri, "{\"offset\": 1, \"limit\": 1}", START);
        assert_eq!(paged.body["pipelines"].as_array().expect("p").len(), 1);
        assert_eq!(paged.body["pipelines"][0], pipelines[1]);
    }

    #[test]
    fn pipelines_list_filters_by_tag() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v5/{project}/api/pipelines/list");
        let all = call(&sim, "POST", &uri, "{\"limit\": 100}", START);
        let pipelines = all.body["pipelines"].as_array().expect("pipelines");
        assert_eq!(pipelines.len(), ids.len());
        let tagged = pipelines
            .iter()
            .find(|p| !p["tag_list"].as_array().expect("tags").is_empty())
            .expect("a tagged pipeline");
        let tag = tagged["tag_list"][0].as_str().expect("tag").to_string();
        let filtered = call(
            &sim,
            "POST",
            &uri,
            &json!({"tag_list": [tag.clone()], "limit": 100}).to_string(),
            START,
        );
        let kept = filtered.body["pipelines"].as_array().expect("pipelines");
        assert!(!kept.is_empty());
        assert!(kept.iter().all(|p| {
            p["tag_list"]
                .as_array()
                .expect("tags")
                .iter()
                .any(|t| t == tag.as_str())
        }));
        assert_eq!(
            call(&sim, "POST", &uri, "{\"tag_list\": 5}", START).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn pipelines_can_be_added_and_deleted_at_run_time() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let list_uri = format!("/v5/{project}/api/pipelines/list");
        let body = json!({"name": "新流水线 added", "project_id": project, "tags": ["nightly"]});
        let added = call_with(
            &sim,
            "POST",
            "/_sim/pipelines",
            None,
            &body.to_string(),
            START,
        );
        assert_eq!(added.status, StatusCode::OK);
        let id = added.body["pipeline_id"].as_str().expect("id").to_string();
        assert_eq!(id.len(), 32);
        assert!(!ids.contains(&id));
        assert_eq!(added.body["tag_list"], json!(["nightly"]));

        // Listed, with a run that starts at creation and no history before it.
        let later = START + 1000;
        let list = call(&sim, "POST", &list_uri, "{\"limit\": 100}", later);
        assert_eq!(list.body["total"], ids.len() + 1);
        let entry = list.body["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["pipeline_id"] == id.as_str())
            .expect("listed")
            .clone();
        assert_eq!(entry["name"], "新流水线 added");
        assert_eq!(entry["latest_run"]["run_number"], 1);
        assert_eq!(entry["latest_run"]["start_time"], START);
        let status_uri = format!("/v5/{project}/api/pipelines/status");
        let status = call(&sim, "POST", &status_uri, &json!([id]).to_string(), later);
        assert_eq!(status.body.as_array().expect("array").len(), 1);

        // Deleted: gone from every API and from the truth.
        let deleted = call_with(
            &sim,
            "DELETE",
            &format!("/_sim/pipelines/{id}"),
            None,
            "",
            later,
        );
        assert_eq!(deleted.status, StatusCode::OK);
        let again = call_with(
            &sim,
            "DELETE",
            &format!("/_sim/pipelines/{id}"),
            None,
            "",
            later,
        );
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        let list = call(&sim, "POST", &list_uri, "{\"limit\": 100}", later);
        assert_eq!(list.body["total"], ids.len());
        let status = call(&sim, "POST", &status_uri, &json!([id]).to_string(), later);
        assert!(status.body.as_array().expect("array").is_empty());
        let detail = call(
            &sim,
            "GET",
            &format!("/v5/{project}/api/pipelines/{id}/pipeline-runs/detail"),
            "",
            later,
        );
        assert_eq!(detail.status, StatusCode::NOT_FOUND);
        let truth = sim.truth(later);
        assert!(
            truth["pipelines"]
                .as_array()
                .expect("pipelines")
                .iter()
                .all(|p| p["pipeline_id"] != id.as_str())
        );

        for bad in ["{\"name\": 5}", "{\"project_id\": 5}", "[]"] {
            let reply = call_with(&sim, "POST", "/_sim/pipelines", None, bad, START);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let unknown = json!({"project_id": "0123456789abcdef0123456789abcdef"}).to_string();
        let reply = call_with(&sim, "POST", "/_sim/pipelines", None, &unknown, START);
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn truth_since_keeps_the_runs_that_ended_since() {
        let sim = sim();
        let now = START + HOUR;
        let all = call_with(&sim, "GET", "/_sim/truth", None, "", now).body;
        let since = START + HOUR / 2;
        let recent = call_with(
            &sim,
            "GET",
            &format!("/_sim/truth?since_ms={since}"),
            None,
            "",
            now,
        )
        .body;
        let ends = |truth: &Value| -> Vec<i64> {
            truth["pipelines"]
                .as_array()
                .expect("pipelines")
                .iter()
                .flat_map(|p| p["runs"].as_array().expect("runs").clone())
                .map(|r| r["end_ms"].as_i64().expect("end"))
                .collect()
        };
        let expected: Vec<i64> = ends(&all).into_iter().filter(|e| *e >= since).collect();
        assert!(!expected.is_empty());
        assert_eq!(ends(&recent), expected);
        let bad = call_with(&sim, "GET", "/_sim/truth?since_ms=soon", None, "", now);
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn truth_lists_only_completed_runs_and_matches_the_apis() {
        let sim = sim();
        let now = START + HOUR;
        let truth = sim.truth(now);
        assert_eq!(truth["started_at_ms"], START);
        let targets = sim.targets();
        for pipeline in truth["pipelines"].as_array().expect("pipelines") {
            let runs = pipeline["runs"].as_array().expect("runs");
            assert!(!runs.is_empty());
            let mut previous = 0;
            for run in runs {
                let end = run["end_ms"].as_i64().expect("end");
                assert!(end <= now);
                let number = run["run_number"].as_u64().expect("number");
                assert!(number > previous);
                previous = number;
                let duration = run["duration_seconds"].as_f64().expect("duration");
                assert!(
                    (duration - (end - run["start_ms"].as_i64().expect("start")) as f64 / 1000.0)
                        .abs()
                        < 1e-9
                );
                let expected = match run["status"].as_str() {
                    Some("COMPLETED") => "success",
                    Some("FAILED") => "error",
                    Some("CANCELED") => "aborted",
                    other => panic!("status {other:?}"),
                };
                assert_eq!(run["result"], expected);
                assert!(
                    run["stages"]
                        .as_array()
                        .expect("stages")
                        .iter()
                        .all(|s| s["end_ms"].as_i64() <= Some(end))
                );
            }
            // The run detail says the same about the newest completed run.
            let project = pipeline["project_id"].as_str().expect("project");
            let id = pipeline["pipeline_id"].as_str().expect("id");
            assert!(
                targets
                    .iter()
                    .any(|(p, ids)| p == project && ids.iter().any(|i| i == id))
            );
            let last = runs.last().expect("last");
            let uri = format!(
                "/v5/{project}/api/pipelines/{id}/pipeline-runs/detail?pipeline_run_id={}",
                last["run_id"].as_str().expect("run id")
            );
            let detail = call(&sim, "GET", &uri, "", now).body;
            assert_eq!(detail["status"], last["status"]);
            assert_eq!(detail["start_time"], last["start_ms"]);
            assert_eq!(detail["end_time"], last["end_ms"]);
            let ran = detail["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .filter(|s| s["end_time"].as_i64().unwrap_or(0) > 0)
                .count();
            assert_eq!(ran, last["stages"].as_array().expect("stages").len());
            // Jobs and the queue time say what the detail says.
            let first_stage_start = detail["stages"][0]["start_time"].as_i64().expect("start");
            let queue = last["queue_seconds"].as_f64().expect("queue");
            let start = last["start_ms"].as_i64().expect("start");
            assert!((queue - (first_stage_start - start) as f64 / 1000.0).abs() < 1e-9);
            assert!(queue > 0.0);
            for (stage, truth_stage) in detail["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .filter(|s| s["end_time"].as_i64().unwrap_or(0) > 0)
                .zip(last["stages"].as_array().expect("stages"))
            {
                let ran_jobs: Vec<&Value> = stage["jobs"]
                    .as_array()
                    .expect("jobs")
                    .iter()
                    .filter(|j| j["end_time"].as_i64().unwrap_or(0) > 0)
                    .collect();
                let truth_jobs = truth_stage["jobs"].as_array().expect("jobs");
                assert_eq!(ran_jobs.len(), truth_jobs.len());
                for (job, truth_job) in ran_jobs.iter().zip(truth_jobs) {
                    assert_eq!(job["name"], truth_job["name"]);
                    assert_eq!(job["status"], truth_job["status"]);
                    assert_eq!(job["end_time"], truth_job["end_ms"]);
                }
            }
        }
        // Later, more runs have completed.
        let later = sim.truth(now + 2 * HOUR);
        let count = |t: &Value| -> usize {
            t["pipelines"]
                .as_array()
                .expect("p")
                .iter()
                .map(|p| p["runs"].as_array().expect("r").len())
                .sum()
        };
        assert!(count(&later) > count(&truth));
    }

    #[test]
    fn unknown_routes_and_garbage_never_panic() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let reply = call(&sim, "GET", "/nope", "", START);
        assert_eq!(
            (reply.status, code(&reply)),
            (StatusCode::NOT_FOUND, "APIG.0101")
        );
        assert_eq!(
            call(&sim, "DELETE", "/v3/pipelines/status", "", START).status,
            StatusCode::NOT_FOUND
        );
        let mut rng = fastrand::Rng::with_seed(42);
        let pieces = [
            "v5",
            "v3",
            &project,
            &ids[0],
            "api",
            "pipelines",
            "status",
            "list",
            "pipeline-runs",
            "detail",
            "",
            "%zz",
            "流水线",
        ];
        let bodies = [
            "",
            "{",
            "[]",
            "null",
            "{\"limit\": 1e300}",
            "{\"offset\": \"9999999999999999999999\"}",
            "\u{0}",
            "[\"\"]",
        ];
        for _ in 0..2000 {
            let segments: Vec<&str> = (0..rng.usize(1..8))
                .map(|_| pieces[rng.usize(..pieces.len())])
                .collect();
            let mut uri = format!("/{}", segments.join("/"));
            if rng.bool() {
                uri.push_str(
                    "?pipeline_ids=%&pipeline_run_number=18446744073709551616&pipeline_run_id=",
                );
            }
            let method = if rng.bool() { "GET" } else { "POST" };
            let body = bodies[rng.usize(..bodies.len())];
            let reply = call(&sim, method, &uri, body, START + rng.i64(-HOUR..HOUR));
            assert!(
                reply.status.is_success() || reply.body["error_code"].is_string(),
                "{uri}"
            );
        }
    }
}
