//! The run APIs of a pipeline: the detail of one run and the run history (reference 3.3 and 3.4).

use serde_json::{Value, json};

use super::params::{
    body_object, field_choice, field_list, field_time, is_id, page, paging, query_value,
};
use super::{Reply, RunPlan, Service, bad_param, no_run};
use crate::simulator::render;

impl Service<'_> {
    /// `GET .../pipeline-runs/detail`: a run by id, by number, or the latest.
    pub(super) fn run_detail(
        &self,
        project: &str,
        pipeline: &str,
        query: Option<&str>,
        now_ms: i64,
    ) -> Reply {
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

    /// `POST .../pipeline-runs/list`: the run history, filtered, sorted and paged.
    pub(super) fn runs_list(
        &self,
        project: &str,
        pipeline: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Reply {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use hyper::StatusCode;

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
}
