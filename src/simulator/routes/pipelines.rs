//! The project pipeline list (reference 5.4), which discovery reads.

use serde_json::{Value, json};

use super::params::{body_object, field_bool, field_choice, field_list, page, paging};
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
        // Pipelines carrying any of these tags (by name or tag id).
        let tags = field_list(&body, "tag_list")?;
        // Reference 5.4: `query_new` (default true) lists only new-version pipelines;
        // `is_banned: true` includes disabled ones.
        let new_only = field_bool(&body, "query_new", true)?;
        let with_banned = field_bool(&body, "is_banned", false)?;
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
            if (new_only && def.old_version) || (def.banned && !with_banned) {
                continue;
            }
            let project_id = &self.world.projects[def.project].id;
            if tags.as_ref().is_some_and(|wanted| {
                !def.tags.iter().any(|t| {
                    wanted.contains(t)
                        || wanted.contains(&render::tag_id(self.world, project_id, t))
                })
            }) {
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
        let reply = call(&sim, "POST", &uri, "{\"query_new\": false}", START);
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
        let paged = call(
            &sim,
            "POST",
            &uri,
            "{\"offset\": 1, \"limit\": 1, \"query_new\": false}",
            START,
        );
        assert_eq!(paged.body["pipelines"].as_array().expect("p").len(), 1);
        assert_eq!(paged.body["pipelines"][0], pipelines[1]);
    }

    #[test]
    fn pipelines_list_filters_by_tag() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v5/{project}/api/pipelines/list");
        let all = call(
            &sim,
            "POST",
            &uri,
            "{\"limit\": 100, \"query_new\": false}",
            START,
        );
        let pipelines = all.body["pipelines"].as_array().expect("pipelines");
        assert_eq!(pipelines.len(), ids.len());
        // Tags come as objects, and from some pipelines as plain names.
        let name_of = |tag: &Value| {
            tag.as_str()
                .or_else(|| tag["name"].as_str())
                .expect("a name")
                .to_string()
        };
        let tags: Vec<&Value> = pipelines
            .iter()
            .flat_map(|p| p["tag_list"].as_array().expect("tags"))
            .collect();
        let everywhere: Vec<Value> = sim
            .targets()
            .iter()
            .flat_map(|(project, _)| {
                let uri = format!("/v5/{project}/api/pipelines/list");
                let every = "{\"limit\": 100, \"query_new\": false}";
                let reply = call(&sim, "POST", &uri, every, START);
                let pipelines = reply.body["pipelines"].as_array().expect("p").clone();
                pipelines
                    .into_iter()
                    .flat_map(|p| p["tag_list"].as_array().expect("tags").clone())
            })
            .collect();
        assert!(everywhere.iter().any(Value::is_string));
        let object = tags.iter().find(|t| t.is_object()).expect("a tag object");
        assert_eq!(object["tag_id"].as_str().expect("tag_id").len(), 32);
        assert!(object["project_id"] == project.as_str() && object["create_time"].is_i64());
        let tag = name_of(object);
        // One tag, one id, whichever pipeline carries it.
        let ids_of_tag: std::collections::BTreeSet<&str> = tags
            .iter()
            .filter(|t| t.is_object() && name_of(t) == tag)
            .map(|t| t["tag_id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids_of_tag.len(), 1);
        for wanted in [tag.clone(), ids_of_tag.first().expect("id").to_string()] {
            let filtered = call(
                &sim,
                "POST",
                &uri,
                &json!({"tag_list": [wanted], "limit": 100, "query_new": false}).to_string(),
                START,
            );
            let kept = filtered.body["pipelines"].as_array().expect("pipelines");
            assert!(!kept.is_empty());
            assert!(kept.iter().all(|p| {
                p["tag_list"]
                    .as_array()
                    .expect("tags")
                    .iter()
                    .any(|t| name_of(t) == tag)
            }));
        }
        assert_eq!(
            call(&sim, "POST", &uri, "{\"tag_list\": 5}", START).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn old_version_and_disabled_pipelines_are_listed_only_when_asked() {
        let sim = sim();
        let (project, ids) = sim.targets().remove(0);
        let uri = format!("/v5/{project}/api/pipelines/list");
        let listed = |body: Value| -> Vec<String> {
            let mut body = body;
            body["limit"] = json!(100);
            let reply = call(&sim, "POST", &uri, &body.to_string(), START);
            assert_eq!(reply.status, StatusCode::OK, "{body}");
            reply.body["pipelines"]
                .as_array()
                .expect("pipelines")
                .iter()
                .map(|p| p["pipeline_id"].as_str().expect("id").to_string())
                .collect()
        };
        let truth = sim.truth(START);
        let old: Vec<String> = truth["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .filter(|p| p["project_id"] == project.as_str() && p["old_version"] == true)
            .map(|p| p["pipeline_id"].as_str().expect("id").to_string())
            .collect();
        assert!(!old.is_empty() && old.len() < ids.len());
        // query_new defaults to true: only new-version pipelines.
        let default = listed(json!({}));
        assert_eq!(default.len(), ids.len() - old.len());
        assert!(default.iter().all(|id| !old.contains(id)));
        assert_eq!(listed(json!({"query_new": true})), default);
        assert_eq!(listed(json!({"query_new": false})).len(), ids.len());

        // A disabled pipeline shows only with is_banned: true, marked banned.
        let banned = &default[0];
        let ban = call(
            &sim,
            "POST",
            &format!("/_sim/pipelines/{banned}/ban"),
            "",
            START,
        );
        assert_eq!(ban.status, StatusCode::OK);
        let every = json!({"query_new": false, "is_banned": true});
        assert!(!listed(json!({"query_new": false})).contains(banned));
        assert!(!listed(json!({"query_new": false, "is_banned": false})).contains(banned));
        assert_eq!(listed(every.clone()).len(), ids.len());
        let reply = call(&sim, "POST", &uri, &every.to_string(), START);
        let entry = reply.body["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .find(|p| p["pipeline_id"] == banned.as_str())
            .expect("listed")
            .clone();
        assert_eq!(entry["banned"], true);
        for bad in [json!({"query_new": "no"}), json!({"is_banned": 1})] {
            let reply = call(&sim, "POST", &uri, &bad.to_string(), START);
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
