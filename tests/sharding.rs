//! Replicas that split the pipelines between them (`--shard N/M` or `[sharding]`) export,
//! together, exactly what one exporter of every pipeline exports.

// Runs the simulator: built with the `simulator` feature only.
#![cfg(feature = "simulator")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use codearts_exporter::config::{Config, ShardingConfig};
use common::harness::{Exporter, start_exporter, start_exporter_with, start_simulator};
use common::{Sample, get, get_json, parse_metrics, simulator_config, wait_for_status_200};

/// Pipeline series as comparable text: name, labels and value.
fn pipeline_series(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.name.starts_with("codearts_pipeline_"))
        .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
        .collect()
}

fn pipeline_ids(samples: &[Sample]) -> BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.name == "codearts_pipeline_status")
        .filter_map(|s| s.labels.get("pipeline_id").cloned())
        .collect()
}

async fn scrape(exporter: &Exporter) -> Vec<Sample> {
    parse_metrics(&get(&format!("{}/metrics", exporter.url)).await.1)
}

/// `config` with `--shard` applied as `run` applies it: over the file's `[sharding]`.
fn with_shard(config: &str, shard: &str) -> Config {
    let mut config = Config::from_toml(config).expect("a valid config");
    config.sharding = ShardingConfig::parse(shard).expect("N/M");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_together_export_what_one_exporter_exports() {
    // Real-time speed: runs take minutes, so the four exporters see the same world.
    let sim = start_simulator(30, 2, 17, 1.0).await;
    let truth = get_json(&format!("{}/_sim/truth", sim.url)).await;
    let mut by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        by_project
            .entry(
                pipeline["project_id"]
                    .as_str()
                    .expect("project")
                    .to_string(),
            )
            .or_default()
            .push(pipeline["pipeline_id"].as_str().expect("id").to_string());
    }
    let projects: Vec<(&String, &Vec<String>)> = by_project.iter().collect();
    let ids: Vec<String> = projects[0].1.iter().map(|id| format!("\"{id}\"")).collect();
    // One target lists its ids, the other discovers them: both are split.
    let config = simulator_config(&sim.url)
        + &format!(
            "[[targets]]\nname = \"listed\"\nproject_id = \"{}\"\npipeline_ids = [{}]\ninterval = \"1s\"\n\
         [[targets]]\nname = \"found\"\nproject_id = \"{}\"\ndiscover = true\ninterval = \"1s\"\n",
            projects[0].0,
            ids.join(", "),
            projects[1].0,
        );
    let whole = start_exporter(&config).await;
    let shards = [
        start_exporter_with(with_shard(&config, "0/3")).await,
        start_exporter_with(with_shard(&config, "1/3")).await,
        // The configuration's form (its environment variables: tests/config_errors.rs).
        start_exporter(&format!("{config}[sharding]\nindex = 2\ncount = 3\n")).await,
    ];
    for exporter in shards.iter().chain([&whole]) {
        wait_for_status_200(&format!("{}/readyz", exporter.url), Duration::from_secs(30)).await;
    }

    // A run may complete between two scrapes: compare until one round agrees.
    let mut last_difference = String::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let expected = scrape(&whole).await;
        let parts = [
            scrape(&shards[0]).await,
            scrape(&shards[1]).await,
            scrape(&shards[2]).await,
        ];
        let all_ids = pipeline_ids(&expected);
        assert_eq!(
            all_ids.len(),
            30,
            "the unsharded exporter polls every pipeline"
        );
        let shard_ids: Vec<BTreeSet<String>> = parts.iter().map(|p| pipeline_ids(p)).collect();
        for (i, a) in shard_ids.iter().enumerate() {
            assert!(!a.is_empty(), "shard {i} polls nothing");
            for b in &shard_ids[i + 1..] {
                assert!(a.is_disjoint(b), "a pipeline polled by two shards");
            }
        }
        let union: BTreeSet<String> = parts.iter().flat_map(|p| pipeline_series(p)).collect();
        let whole_series = pipeline_series(&expected);
        if union == whole_series {
            for exporter in shards.into_iter().chain([whole]) {
                exporter.stop().await;
            }
            return;
        }
        last_difference = format!(
            "only in the shards: {:?}\nonly in the whole: {:?}",
            union.difference(&whole_series).take(5).collect::<Vec<_>>(),
            whole_series.difference(&union).take(5).collect::<Vec<_>>()
        );
    }
    panic!("the shards never exported what the whole exports:\n{last_difference}");
}
