//! Discovery against the simulator over HTTP, at the edges of the real service: old-version and
//! disabled pipelines, a pipeline list that comes back empty, and tags in either form.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::harness::{start_exporter, start_simulator, test_log};
use common::{get_json, polled, scrape_until, send_json, simulator_config, value};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// (project id, [(pipeline id, old version)]) of every project, from the simulator's truth.
async fn projects(sim_url: &str) -> Vec<(String, Vec<(String, bool)>)> {
    let truth = get_json(&format!("{sim_url}/_sim/truth")).await;
    let mut projects: Vec<(String, Vec<(String, bool)>)> = Vec::new();
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let project = pipeline["project_id"]
            .as_str()
            .expect("project")
            .to_string();
        let entry = (
            pipeline["pipeline_id"].as_str().expect("id").to_string(),
            pipeline["old_version"] == true,
        );
        match projects.iter_mut().find(|(id, _)| *id == project) {
            Some((_, pipelines)) => pipelines.push(entry),
            None => projects.push((project, vec![entry])),
        }
    }
    projects
}

/// Creates a pipeline in the simulator from `spec`; returns its id.
async fn create(sim_url: &str, spec: Value) -> String {
    let (status, created) = send_json("POST", &format!("{sim_url}/_sim/pipelines"), &spec).await;
    assert_eq!(status, 200, "{created}");
    created["pipeline_id"].as_str().expect("id").to_string()
}

/// Old-version pipelines are discovered (the list is asked with `query_new: false`); disabled
/// ones only with `include_disabled`, and configured ids whatever they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_old_version_pipelines_and_disabled_ones_only_when_asked() {
    let sim = start_simulator(10, 2, 41, 60.0).await;
    let projects = projects(&sim.url).await;
    let (project_a, listed_a) = projects[0].clone();
    let (project_b, listed_b) = projects[1].clone();
    let old: Vec<&String> = listed_a
        .iter()
        .chain(&listed_b)
        .filter(|(_, old)| *old)
        .map(|(id, _)| id)
        .collect();
    assert!(
        !old.is_empty(),
        "the simulated world has old-version pipelines"
    );

    // In each project: one pipeline disabled while it exists, one created disabled. Project A
    // also polls a disabled pipeline by its id.
    let mut banned = Vec::new();
    for (project, listed) in [(&project_a, &listed_a), (&project_b, &listed_b)] {
        let (id, _) = listed.iter().find(|(_, old)| !old).expect("a new one");
        let (status, _) = send_json(
            "POST",
            &format!("{}/_sim/pipelines/{id}/ban", sim.url),
            &Value::Null,
        )
        .await;
        assert_eq!(status, 200);
        let created = create(
            &sim.url,
            json!({"name": "停用的 pipeline", "project_id": project, "banned": true}),
        )
        .await;
        banned.push((id.clone(), created));
    }
    let configured = banned[0].1.clone();

    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[[targets]]\nname = \"a\"\nproject_id = \"{project_a}\"\npipeline_ids = [\"{configured}\"]\n\
         interval = \"1s\"\ndiscover = true\n\
         [[targets]]\nname = \"b\"\nproject_id = \"{project_b}\"\ninterval = \"1s\"\n\
         discover = true\ninclude_disabled = true\n"
    ));
    let exporter = start_exporter(&config).await;
    let metrics_url = format!("{}/metrics", exporter.url);

    let enabled = |listed: &[(String, bool)], banned: &(String, String)| -> BTreeSet<String> {
        listed
            .iter()
            .map(|(id, _)| id.clone())
            .filter(|id| *id != banned.0)
            .collect()
    };
    let mut expected_a = enabled(&listed_a, &banned[0]);
    let discovered_a = expected_a.len();
    expected_a.insert(configured.clone());
    let mut expected_b: BTreeSet<String> = listed_b.iter().map(|(id, _)| id.clone()).collect();
    expected_b.insert(banned[1].1.clone());
    let samples = scrape_until(&metrics_url, WAIT, "both discoveries", |s| {
        polled(s, &project_a) == expected_a && polled(s, &project_b) == expected_b
    })
    .await;
    for id in &old {
        assert!(
            polled(&samples, &project_a).contains(*id)
                || polled(&samples, &project_b).contains(*id),
            "old-version pipeline {id} is polled"
        );
    }
    assert!(!polled(&samples, &project_a).contains(&banned[0].0));
    assert_eq!(
        value(
            &samples,
            "codearts_exporter_discovered_pipelines",
            &[("target", "a")]
        ),
        Some(discovered_a as f64),
        "the configured disabled pipeline is polled but not discovered"
    );
    assert_eq!(
        value(
            &samples,
            "codearts_exporter_discovered_pipelines",
            &[("target", "b")]
        ),
        Some(expected_b.len() as f64)
    );
    exporter.stop().await;
    sim.stop().await;
}

/// A project whose pipeline list is empty is reported: a warning naming the likely cause (the
/// user is no member of the CodeArts project) and its fix, and the discovered-pipelines gauge
/// at 0; a list the filters empty gets its own warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_discovery_is_reported_with_its_likely_cause() {
    // Three projects, two pipelines: the third project has none.
    let sim = start_simulator(2, 3, 43, 60.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let with_pipelines: BTreeSet<&str> = truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| p["project_id"].as_str().expect("project"))
        .collect();
    let all: Vec<String> = sim.simulator.targets().into_iter().map(|t| t.0).collect();
    let empty = all
        .iter()
        .find(|p| !with_pipelines.contains(p.as_str()))
        .expect("an empty project");
    let full = all
        .iter()
        .find(|p| with_pipelines.contains(p.as_str()))
        .expect("a project with pipelines");

    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[[targets]]\nname = \"empty\"\nproject_id = \"{empty}\"\ninterval = \"1s\"\n\
         discover = true\n\
         [[targets]]\nname = \"filtered\"\nproject_id = \"{full}\"\ninterval = \"1s\"\n\
         discover = true\ninclude = \"^no pipeline is called this$\"\n"
    ));
    let exporter = start_exporter(&config).await;
    let samples = scrape_until(
        &format!("{}/metrics", exporter.url),
        WAIT,
        "both targets polled",
        |s| {
            ["empty", "filtered"].iter().all(|target| {
                value(s, "codearts_exporter_target_up", &[("target", target)]) == Some(1.0)
            })
        },
    )
    .await;
    for target in ["empty", "filtered"] {
        assert_eq!(
            value(
                &samples,
                "codearts_exporter_discovered_pipelines",
                &[("target", target)]
            ),
            Some(0.0),
            "{target}"
        );
    }
    // Log lines are written as the polls go; wait for both.
    let deadline = Instant::now() + WAIT;
    let warned = |log: &str, target: &str, text: &str| {
        log.lines().any(|line| {
            line.contains("\"level\":\"WARN\"")
                && line.contains(&format!("\"target_name\":\"{target}\""))
                && line.contains(text)
        })
    };
    loop {
        let log = test_log();
        let membership = warned(&log, "empty", "not a member of this CodeArts project")
            && warned(&log, "empty", "add the user to the project's members");
        let filters = warned(&log, "filtered", "none passes the target's filters");
        if membership && filters {
            // Said once, not at every discovery.
            let times = log
                .lines()
                .filter(|line| line.contains("not a member of this CodeArts project"))
                .count();
            assert_eq!(times, 1, "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no warning; log:\n{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    exporter.stop().await;
    sim.stop().await;
}

/// Tags arrive as objects (`{tag_id, name, …}`) from most pipelines and as plain names from
/// some; a tag filter selects by name through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_read_tags_as_objects_and_as_names() {
    let sim = start_simulator(3, 1, 47, 60.0).await;
    let project = sim.simulator.targets().remove(0).0;
    let mut tagged = BTreeSet::new();
    for n in 0..3 {
        let tags = json!(["发布-e2e", format!("other-{n}")]);
        let spec = json!({"name": format!("tagged {n}"), "project_id": project, "tags": tags});
        tagged.insert(create(&sim.url, spec).await);
    }
    create(
        &sim.url,
        json!({"name": "untagged", "project_id": project, "tags": ["other-0"]}),
    )
    .await;
    // Both forms are on the wire.
    let answer = reqwest::Client::new()
        .post(format!("{}/v5/{project}/api/pipelines/list", sim.url))
        .header("x-auth-token", sim.simulator.static_token())
        .json(&json!({"limit": 100, "query_new": false}))
        .send()
        .await
        .expect("list")
        .json::<Value>()
        .await
        .expect("json");
    let forms: BTreeSet<&str> = answer["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .filter(|p| tagged.contains(p["pipeline_id"].as_str().expect("id")))
        .flat_map(|p| p["tag_list"].as_array().expect("tags"))
        .map(|t| if t.is_object() { "object" } else { "name" })
        .collect();
    assert_eq!(forms, BTreeSet::from(["name", "object"]));

    let mut config = simulator_config(&sim.url);
    config.push_str(&format!(
        "[[targets]]\nproject_id = \"{project}\"\ninterval = \"1s\"\ndiscover = true\n\
         tags = [\"发布-e2e\"]\n"
    ));
    let exporter = start_exporter(&config).await;
    let samples = scrape_until(
        &format!("{}/metrics", exporter.url),
        WAIT,
        "the tagged pipelines",
        |s| polled(s, &project) == tagged,
    )
    .await;
    assert_eq!(
        value(&samples, "codearts_exporter_discovered_pipelines", &[]),
        Some(3.0)
    );
    exporter.stop().await;
    sim.stop().await;
}
