//! The lead time of deployments: each commit a successful deployment waits for is asked of
//! CodeArts Repo once (its time is remembered: a commit never changes), at the end of a poll.
//!
//! A transient Repo failure leaves the deployments waiting for the next poll, for a day at
//! most (then their lead time is unknown, `repo_error`); it does not fail the poll, whose
//! pipelines were read all the same, and it is counted in the API's error metrics. A commit
//! Repo does not know (404, but not the gateway's "no such route") or a time that does not read
//! is unknown at once.

use std::collections::{BTreeSet, HashMap};

use futures_util::StreamExt;
use futures_util::stream;

use super::steps::CONCURRENCY;
use super::{TargetPoller, log_api_error};
use crate::codearts::Error;
use crate::codearts::model::CommitTime;
use crate::store::TargetState;
use crate::store::series::LeadTimeUnknown;

/// How long deployments wait for a failing Repo before their lead time counts as unknown.
const MAX_WAIT_SECONDS: f64 = 86_400.0;

/// What Repo said of a commit: its time, or why there is none; `None` while it fails.
type Answer = Option<Result<f64, LeadTimeUnknown>>;

impl TargetPoller {
    /// Gives the successful deployments that wait for their commit's time their lead time.
    pub(super) async fn resolve_lead_times(&self, state: &mut TargetState) {
        let wanted: BTreeSet<(String, String)> = state
            .pipelines
            .values()
            .filter_map(|pipeline| pipeline.series.as_ref())
            .flat_map(|series| series.awaiting_commits())
            .map(|awaiting| (awaiting.repository_id, awaiting.commit_id))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let answers: HashMap<(String, String), Answer> = stream::iter(wanted)
            .map(|(repository_id, commit_id)| async move {
                let answer = self.commit_time(&repository_id, &commit_id).await;
                ((repository_id, commit_id), answer)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let now = self.now();
        for pipeline in state.pipelines.values_mut() {
            let Some(series) = pipeline.series.as_mut() else {
                continue;
            };
            for awaiting in series.awaiting_commits() {
                let key = (awaiting.repository_id, awaiting.commit_id);
                let answer = match answers.get(&key) {
                    Some(Some(answer)) => *answer,
                    _ if now - awaiting.since > MAX_WAIT_SECONDS => Err(LeadTimeUnknown::RepoError),
                    _ => continue,
                };
                series.resolve_commit(&key.0, &key.1, answer);
                pipeline.dirty = true;
            }
        }
    }

    /// The time of a commit: remembered, or asked of Repo (and remembered).
    async fn commit_time(&self, repository_id: &str, commit_id: &str) -> Answer {
        if let Some(at) = self.store.commit_time(repository_id, commit_id) {
            return Some(Ok(at));
        }
        match self.client.commit_time(repository_id, commit_id).await {
            Ok(CommitTime::Known(at)) => {
                self.store
                    .remember_commit_time(repository_id, commit_id, at);
                Some(Ok(at))
            }
            Ok(CommitTime::Unparsable) => Some(Err(LeadTimeUnknown::UnparsableTime)),
            Err(err) if err.is_not_found() => Some(Err(LeadTimeUnknown::CommitNotFound)),
            // A repository id that is no number names no repository.
            Err(Error::InvalidArgument { .. }) => Some(Err(LeadTimeUnknown::NoRepositoryId)),
            Err(err) => {
                log_api_error(
                    self.label(),
                    &err,
                    "commit time (CodeArts Repo) failed; asked again next poll",
                );
                None
            }
        }
    }
}
