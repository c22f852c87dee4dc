//! Which pipelines deploy to which environment (`[[deployments]]`), as the recording asks it,
//! and which entries have selected nothing yet (warned about once every target has polled).

use crate::config::{Deployment, Deployments};

use super::{Store, lock};

/// The `[[deployments]]` entries in effect, and which have selected a pipeline.
#[derive(Debug, Default)]
pub(super) struct Environments {
    deployments: Deployments,
    /// Per entry: it has selected a pipeline, or its warning was logged.
    settled: Vec<bool>,
}

impl Store {
    /// Sets the `[[deployments]]` entries (at start and after a reload).
    pub fn set_deployments(&self, deployments: Deployments) {
        let settled = vec![false; deployments.entries().len()];
        *lock(&self.deployments) = Environments {
            deployments,
            settled,
        };
    }

    /// The entry a pipeline deploys with, if any.
    pub fn deployment_of(
        &self,
        pipeline_id: &str,
        pipeline_name: &str,
        tags: &[String],
    ) -> Option<Deployment> {
        let mut environments = lock(&self.deployments);
        let found = environments
            .deployments
            .environment(pipeline_id, pipeline_name, tags)
            .cloned()?;
        if let Some(settled) = environments.settled.get_mut(found.index()) {
            *settled = true;
        }
        Some(found)
    }

    /// Warns, once each, about the entries that have selected no pipeline (call once every
    /// target has polled).
    pub fn warn_about_unused_deployments(&self) {
        let mut environments = lock(&self.deployments);
        let Environments {
            deployments,
            settled,
        } = &mut *environments;
        for (entry, settled) in deployments.entries().iter().zip(settled.iter_mut()) {
            if !*settled {
                *settled = true;
                tracing::warn!(
                    deployment = %entry.describe(),
                    "this [[deployments]] entry selects no polled pipeline: check its include, \
                     pipeline_ids and tags (tags are read by discovery)"
                );
            }
        }
    }
}
