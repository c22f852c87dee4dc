//! The project pipeline list (reference 3.5), which discovery reads.

use serde_json::{Value, json};

use super::params::{body_object, field_choice, field_list, page, paging};
use super::{Reply, Service, bad_param};
use crate::simulator::render;

impl Service<'_> {
    /// `POST /v5/{project_id}/api/pipelines/list`: the project's pipelines, filtered, sorted and
    /// paged.
    pub(super) fn pipelines_list(&self, project: &str, body: &[u8], now_ms: i64) -> Reply {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use hyper::StatusCode;

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
}
