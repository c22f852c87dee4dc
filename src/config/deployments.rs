//! `[[deployments]]`: which pipelines deploy to which environment (DORA delivery metrics), with
//! their checks, and [`Deployments`], the matcher built from them that says which environment a
//! pipeline deploys to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::common::{ConfigError, check_id, invalid};
use super::targets::Pattern;

/// One `[[deployments]]` entry: the pipelines whose runs are deployments to one environment.
///
/// A pipeline is selected when `pipeline_ids` lists it, or when it passes the filters that are
/// set: its name matches `include` and it carries one of `tags` (as discovery selects).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// The `environment` label value, e.g. `production`.
    #[serde(default)]
    pub environment: String,
    /// Pipelines whose name matches this regular expression (unanchored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
    /// Pipelines by id (32 characters each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline_ids: Vec<String>,
    /// Pipelines carrying at least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Only runs of these target branches are deployments; every run when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
}

/// A `[[deployments]]` entry, compiled.
#[derive(Debug, Clone)]
pub struct Deployment {
    index: usize,
    environment: String,
    include: Option<Pattern>,
    pipeline_ids: HashSet<String>,
    tags: Vec<String>,
    branches: Vec<String>,
}

impl Deployment {
    /// The `environment` label value.
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Its position in the file (`deployments[index]`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// `deployments[index] (environment "…")`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "deployments[{}] (environment {:?})",
            self.index, self.environment
        )
    }

    /// Whether a run of target branch `branch` counts as a deployment: always without
    /// `branches`, else only when the run's branch is listed.
    pub fn counts_branch(&self, branch: Option<&str>) -> bool {
        self.branches.is_empty()
            || branch.is_some_and(|branch| self.branches.iter().any(|b| b == branch))
    }

    /// Whether the entry lists `pipeline_id` in `pipeline_ids`.
    pub fn lists(&self, pipeline_id: &str) -> bool {
        self.pipeline_ids.contains(pipeline_id)
    }

    /// Whether the entry selects the pipeline: listed by id, or passing the filters that are set
    /// (`include` on the name and one of `tags`; an entry without either selects by id only).
    pub fn selects(&self, pipeline_id: &str, pipeline_name: &str, tags: &[String]) -> bool {
        self.lists(pipeline_id) || self.filters_pass(pipeline_name, tags)
    }

    fn filters_pass(&self, pipeline_name: &str, tags: &[String]) -> bool {
        (self.include.is_some() || !self.tags.is_empty())
            && self
                .include
                .as_ref()
                .is_none_or(|include| include.is_match(pipeline_name))
            && (self.tags.is_empty() || tags.iter().any(|tag| self.tags.contains(tag)))
    }
}

/// The `[[deployments]]` entries, compiled once; cheap to clone (the entries are shared).
#[derive(Debug, Clone, Default)]
pub struct Deployments(Arc<[Deployment]>);

impl Deployments {
    /// Checks and compiles `entries`; the first problem wins, naming its key.
    pub fn new(entries: &[DeploymentConfig]) -> Result<Deployments, ConfigError> {
        let mut compiled = Vec::with_capacity(entries.len());
        // pipeline id -> index of the entry listing it.
        let mut listed_by: HashMap<&str, usize> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let deployment = entry.compile(index)?;
            for (i, id) in entry.pipeline_ids.iter().enumerate() {
                if let Some(&first) = listed_by.get(id.as_str()) {
                    // Its runs would count as deployments to two environments.
                    let first: &Deployment = &compiled[first];
                    return Err(invalid(
                        format!("deployments[{index}].pipeline_ids[{i}]"),
                        format!(
                            "{} and {} both select pipeline {id}; a pipeline belongs to one \
                             environment",
                            deployment.describe(),
                            first.describe()
                        ),
                    ));
                }
                listed_by.insert(id, index);
            }
            compiled.push(deployment);
        }
        Ok(Deployments(compiled.into()))
    }

    /// Whether there are no entries (no deployment metrics).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Deployment] {
        &self.0
    }

    /// The entry a pipeline deploys with: the one listing its id (at most one does), else the
    /// first in file order whose filters it passes; `None` when it is no deployment pipeline.
    /// [`Deployments::matching`] gives every entry that selects it, to report an overlap.
    pub fn environment(
        &self,
        pipeline_id: &str,
        pipeline_name: &str,
        tags: &[String],
    ) -> Option<&Deployment> {
        self.0
            .iter()
            .find(|entry| entry.lists(pipeline_id))
            .or_else(|| {
                self.0
                    .iter()
                    .find(|entry| entry.filters_pass(pipeline_name, tags))
            })
    }

    /// Every entry that selects the pipeline, in file order.
    pub fn matching<'a>(
        &'a self,
        pipeline_id: &'a str,
        pipeline_name: &'a str,
        tags: &'a [String],
    ) -> impl Iterator<Item = &'a Deployment> + 'a {
        self.0
            .iter()
            .filter(move |entry| entry.selects(pipeline_id, pipeline_name, tags))
    }

    /// The indices of the entries that select none of `pipelines` (each `(id, name, tags)`),
    /// in file order: those get a warning once the pipelines are known.
    pub fn entries_matching_nothing<'a>(
        &self,
        pipelines: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    ) -> Vec<usize> {
        let mut unmatched: Vec<&Deployment> = self.0.iter().collect();
        for (id, name, tags) in pipelines {
            unmatched.retain(|entry| !entry.selects(id, name, tags));
            if unmatched.is_empty() {
                break;
            }
        }
        unmatched.iter().map(|entry| entry.index).collect()
    }
}

impl DeploymentConfig {
    /// Checks `deployments[index]` on its own and compiles it.
    fn compile(&self, index: usize) -> Result<Deployment, ConfigError> {
        let key = |field: &str| format!("deployments[{index}].{field}");
        let environment = &self.environment;
        if environment.trim().is_empty() {
            return Err(invalid(
                key("environment"),
                "is missing or empty: name the environment the pipelines deploy to (the \
                 `environment` label value, e.g. \"production\")",
            ));
        }
        if environment.trim() != environment || environment.chars().any(char::is_control) {
            return Err(invalid(
                key("environment"),
                format!(
                    "{environment:?} has surrounding spaces or control characters; it is a \
                     label value"
                ),
            ));
        }
        if self.include.is_none() && self.pipeline_ids.is_empty() && self.tags.is_empty() {
            return Err(invalid(
                format!("deployments[{index}]"),
                "selects no pipeline: set at least one of `include`, `pipeline_ids` and `tags`",
            ));
        }
        let include = self
            .include
            .as_deref()
            .map(Pattern::new)
            .transpose()
            .map_err(|problem| invalid(key("include"), problem))?;
        let mut pipeline_ids = HashSet::new();
        for (i, id) in self.pipeline_ids.iter().enumerate() {
            let key = format!("deployments[{index}].pipeline_ids[{i}]");
            check_id(&key, id)?;
            if !pipeline_ids.insert(id.clone()) {
                return Err(invalid(key, format!("{id} is listed twice")));
            }
        }
        for (field, names) in [("tags", &self.tags), ("branches", &self.branches)] {
            if names.iter().any(|name| name.trim().is_empty()) {
                return Err(invalid(key(field), "names must not be empty"));
            }
        }
        Ok(Deployment {
            index,
            environment: environment.clone(),
            include,
            pipeline_ids,
            tags: self.tags.clone(),
            branches: self.branches.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::testing::{PIPELINE, error_of, minimal};

    const OTHER: &str = "00112233445566778899aabbccddeeff";

    /// `minimal` with `entries` appended, each the body of a `[[deployments]]`.
    fn with(entries: &[&str]) -> String {
        let mut text = minimal("interval = \"30s\"");
        for entry in entries {
            text.push_str(&format!("[[deployments]]\n{entry}\n"));
        }
        text
    }

    fn deployments(entries: &[&str]) -> Deployments {
        let config = Config::from_toml(&with(entries)).expect("valid");
        Deployments::new(&config.deployments).expect("compiles")
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn no_deployments_by_default() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        assert!(config.deployments.is_empty());
        let none = Deployments::new(&config.deployments).expect("compiles");
        assert!(none.is_empty());
        assert!(none.environment(PIPELINE, "deploy-web", &[]).is_none());
        assert!(!config.redacted_toml().contains("deployments"));
    }

    #[test]
    fn pipelines_are_selected_by_id_or_by_the_filters_set() {
        let d = deployments(&[
            &format!("environment = \"production\"\npipeline_ids = [\"{PIPELINE}\"]"),
            "environment = \"staging\"\ninclude = \"^deploy-.*-staging$\"",
            "environment = \"qa\"\ntags = [\"qa\", \"test\"]",
            "environment = \"canary\"\ninclude = \"canary\"\ntags = [\"k8s\"]",
        ]);
        let env = |id: &str, name: &str, t: &[&str]| {
            d.environment(id, name, &tags(t))
                .map(|entry| entry.environment().to_string())
        };
        assert_eq!(
            env(PIPELINE, "anything", &[]).as_deref(),
            Some("production")
        );
        assert_eq!(
            env(OTHER, "deploy-web-staging", &[]).as_deref(),
            Some("staging")
        );
        assert_eq!(env(OTHER, "x-deploy-web-staging", &[]), None);
        assert_eq!(env(OTHER, "build", &["test"]).as_deref(), Some("qa"));
        assert_eq!(env(OTHER, "build", &["Test"]), None, "tags are exact");
        // Both filters of an entry must pass.
        assert_eq!(
            env(OTHER, "canary-web", &["k8s"]).as_deref(),
            Some("canary")
        );
        assert_eq!(env(OTHER, "canary-web", &[]), None);
        assert_eq!(env(OTHER, "web", &["k8s"]), None);
        assert_eq!(env(OTHER, "build", &[]), None);
        let entry = d.environment(PIPELINE, "", &[]).expect("production");
        assert_eq!(entry.index(), 0);
        assert_eq!(
            entry.describe(),
            "deployments[0] (environment \"production\")"
        );
    }

    #[test]
    fn overlaps_go_to_the_listing_entry_then_the_first_in_file_order() {
        let d = deployments(&[
            "environment = \"staging\"\ninclude = \"deploy\"",
            "environment = \"qa\"\ntags = [\"qa\"]",
            &format!("environment = \"production\"\npipeline_ids = [\"{PIPELINE}\"]"),
        ]);
        let qa = tags(&["qa"]);
        // Listed by id: that entry, whatever the filters of earlier ones say.
        let listed = d.environment(PIPELINE, "deploy-web", &qa).expect("listed");
        assert_eq!(listed.environment(), "production");
        // Filters only: the first in file order; every match is there to report.
        let first = d.environment(OTHER, "deploy-web", &qa).expect("filtered");
        assert_eq!(first.environment(), "staging");
        let all: Vec<usize> = d
            .matching(OTHER, "deploy-web", &qa)
            .map(Deployment::index)
            .collect();
        assert_eq!(all, [0, 1]);
        let all: Vec<usize> = d
            .matching(PIPELINE, "deploy-web", &qa)
            .map(Deployment::index)
            .collect();
        assert_eq!(all, [0, 1, 2]);
    }

    #[test]
    fn branches_limit_the_runs_that_count() {
        let d = deployments(&[
            "environment = \"production\"\ninclude = \"prod\"\nbranches = [\"main\", \"release\"]",
            "environment = \"dev\"\ninclude = \"dev\"",
        ]);
        let prod = &d.entries()[0];
        assert!(prod.counts_branch(Some("main")) && prod.counts_branch(Some("release")));
        assert!(!prod.counts_branch(Some("feature/x")));
        assert!(!prod.counts_branch(Some("Main")));
        assert!(!prod.counts_branch(None), "a run of no known branch");
        let dev = &d.entries()[1];
        assert!(dev.counts_branch(Some("feature/x")) && dev.counts_branch(None));
    }

    #[test]
    fn entries_that_select_no_known_pipeline_are_named() {
        let d = deployments(&[
            &format!("environment = \"production\"\npipeline_ids = [\"{PIPELINE}\"]"),
            "environment = \"staging\"\ninclude = \"staging\"",
            "environment = \"qa\"\ntags = [\"qa\"]",
        ]);
        let none: Vec<String> = Vec::new();
        let qa = tags(&["qa"]);
        let known = [
            (OTHER, "web-staging", none.as_slice()),
            ("ffffffffffffffffffffffffffffffff", "build", none.as_slice()),
        ];
        assert_eq!(d.entries_matching_nothing(known), [0, 2]);
        let known = [
            (PIPELINE, "web", none.as_slice()),
            (OTHER, "build", qa.as_slice()),
        ];
        assert_eq!(d.entries_matching_nothing(known), [1]);
        assert_eq!(d.entries_matching_nothing([]), [0, 1, 2]);
        assert!(
            Deployments::default()
                .entries_matching_nothing([(OTHER, "x", none.as_slice())])
                .is_empty()
        );
    }

    #[test]
    fn the_effective_configuration_lists_the_deployments() {
        let config = Config::from_toml(&with(&[
            "environment = \"production\"\ninclude = \"^deploy-(web|api)$\"\nbranches = [\"main\"]",
            &format!(
                "environment = \"staging\"\npipeline_ids = [\"{PIPELINE}\"]\ntags = [\"k8s\"]"
            ),
        ]))
        .expect("valid");
        let rendered = config.redacted_toml();
        assert!(
            rendered.contains(
                "[[deployments]]\nenvironment = \"production\"\ninclude = \"^deploy-(web|api)$\"\n\
                 branches = [\"main\"]\n"
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains("environment = \"staging\"") && rendered.contains("tags = [\"k8s\"]"),
            "{rendered}"
        );
        // What was printed reads back as the same configuration.
        let again = Config::from_toml(&rendered.replace("\"***\"", "\"t\"")).expect("reads back");
        assert_eq!(again.deployments.len(), 2);
        assert_eq!(
            again.deployments[0].include.as_deref(),
            Some("^deploy-(web|api)$")
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let cases = [
            ("include = \"x\"", "deployments[0].environment"),
            (
                "environment = \"\"\ninclude = \"x\"",
                "deployments[0].environment",
            ),
            (
                "environment = \"  \"\ninclude = \"x\"",
                "deployments[0].environment",
            ),
            (
                "environment = \"prod \"\ninclude = \"x\"",
                "deployments[0].environment",
            ),
            (
                "environment = \"a\\nb\"\ninclude = \"x\"",
                "deployments[0].environment",
            ),
            ("environment = \"prod\"", "deployments[0]"),
            (
                "environment = \"prod\"\nbranches = [\"main\"]",
                "deployments[0]",
            ),
            (
                "environment = \"prod\"\ninclude = \"(unclosed\"",
                "deployments[0].include",
            ),
            (
                "environment = \"prod\"\npipeline_ids = [\"short\"]",
                "deployments[0].pipeline_ids[0]",
            ),
            (
                &format!("environment = \"prod\"\npipeline_ids = [\"{PIPELINE}\", \"{PIPELINE}\"]"),
                "deployments[0].pipeline_ids[1]",
            ),
            (
                "environment = \"prod\"\ntags = [\"\"]",
                "deployments[0].tags",
            ),
            (
                "environment = \"prod\"\ninclude = \"x\"\nbranches = [\" \"]",
                "deployments[0].branches",
            ),
            (
                "environment = \"prod\"\ninclude = \"x\"\nbogus = 1",
                "bogus",
            ),
        ];
        for (entry, key) in cases {
            let message = error_of(&with(&[entry]));
            assert!(
                message.contains(&format!("`{key}`")),
                "{entry}: {message:?} should name `{key}`"
            );
            assert_eq!(message.lines().count(), 1, "{message:?}");
        }
        let message = error_of(&with(&["environment = \"prod\"\ninclude = \"(unclosed\""]));
        assert!(message.contains("regular expression"), "{message}");
        // The entry after a valid one is named by its own index.
        let message = error_of(&with(&[
            "environment = \"a\"\ninclude = \"x\"",
            "environment = \"b\"",
        ]));
        assert!(message.contains("`deployments[1]`"), "{message}");
    }

    /// The commented example of config/example.toml, once its key lines are uncommented, is
    /// a valid configuration that selects what it says.
    #[test]
    fn the_commented_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
        let text = std::fs::read_to_string(path).expect("config/example.toml");
        let (head, example) = text
            .split_once("\n# [[deployments]]\n")
            .expect("the example");
        let example: String = format!("# [[deployments]]\n{example}")
            .lines()
            // Keys and headers, not the explanations (`# # ...`).
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(example.matches("[[deployments]]").count(), 2, "{example}");
        let config = Config::from_toml(&format!("{head}\n{example}")).expect("valid");
        let d = Deployments::new(&config.deployments).expect("compiles");
        let env = |id: &str, name: &str, t: &[&str]| {
            d.environment(id, name, &tags(t))
                .map(|entry| entry.environment().to_string())
        };
        assert_eq!(env(OTHER, "x", &[]).as_deref(), Some("production"));
        assert_eq!(
            env(PIPELINE, "deploy-web-prod", &["release"]).as_deref(),
            Some("production")
        );
        assert_eq!(env(PIPELINE, "deploy-web-prod", &[]), None, "both filters");
        assert_eq!(
            env(PIPELINE, "deploy-web-staging", &[]).as_deref(),
            Some("staging")
        );
        assert!(!d.entries()[0].counts_branch(Some("develop")));
    }

    #[test]
    fn a_pipeline_listed_by_two_entries_is_refused_naming_both() {
        let message = error_of(&with(&[
            &format!("environment = \"y\"\npipeline_ids = [\"{PIPELINE}\"]"),
            &format!("environment = \"x\"\npipeline_ids = [\"{OTHER}\", \"{PIPELINE}\"]"),
        ]));
        assert_eq!(
            message,
            format!(
                "invalid value for `deployments[1].pipeline_ids[1]`: deployments[1] (environment \
                 \"x\") and deployments[0] (environment \"y\") both select pipeline {PIPELINE}; a \
                 pipeline belongs to one environment"
            )
        );
        // Filters that may overlap cannot be refused at load.
        deployments(&[
            "environment = \"a\"\ninclude = \"deploy\"",
            "environment = \"b\"\ninclude = \"deploy\"",
        ]);
    }
}
