//! The batch status APIs, v3 and v5 (reference 3.1 and 3.2).

use serde_json::Value;

use super::params::{dedup_in_order, is_id, query_value};
use super::{Reply, Service, bad_param};
use crate::simulator::render;

impl Service<'_> {
    /// `GET /v3/pipelines/status?pipeline_ids=...`: the latest run of each pipeline.
    pub(super) fn v3_status(&self, query: Option<&str>, now_ms: i64) -> Reply {
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

    /// `POST /v5/{project_id}/api/pipelines/status` with a list of ids: the latest run of each
    /// pipeline of the project.
    pub(super) fn v5_status(&self, project: &str, body: &[u8], now_ms: i64) -> Reply {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use hyper::StatusCode;
    use serde_json::json;

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
}
