//! The garbage collector: the one place where pipelines and targets leave the store. Their
//! series go with them (released when their state is dropped).

use tokio::time::Instant;

use super::{Store, lock};

impl Store {
    /// Removes the pipelines absent for longer than their target's `gc_after`, and the targets
    /// retired for longer than theirs; returns the labels of the targets removed. A target in
    /// the middle of a poll is looked at the next time.
    pub fn collect_garbage(&self) -> Vec<String> {
        let now = Instant::now();
        let mut removed = Vec::new();
        let slots = {
            let mut targets = lock(&self.targets);
            targets.retain(|label, slot| {
                let expired = lock(&slot.retired_at)
                    .is_some_and(|since| now.duration_since(since) >= slot.gc_after());
                // Released here, not when the last holder of the slot lets go of it.
                let released = if expired { slot.release() } else { None };
                for (project_id, pipeline_id) in released.iter().flatten() {
                    self.forget(label, project_id.clone(), pipeline_id.clone());
                }
                let expired = released.is_some();
                if expired {
                    tracing::info!(target_name = %label, "series of a removed target dropped");
                    removed.push(label.clone());
                }
                !expired
            });
            targets
                .iter()
                .map(|(label, slot)| (label.clone(), slot.clone()))
                .collect::<Vec<_>>()
        };
        for (label, slot) in slots {
            let Ok(mut state) = slot.state.try_lock() else {
                continue;
            };
            let gc_after = slot.gc_after();
            state.pipelines.retain(|id, pipeline| {
                let expired = pipeline
                    .absent_since
                    .is_some_and(|since| now.duration_since(since) >= gc_after);
                if expired {
                    tracing::info!(target_name = %label, pipeline_id = %id, "pipeline gone; its series are removed");
                    if let Some(series) = &pipeline.series {
                        self.forget(&label, series.project_id().to_string(), id.clone());
                    }
                }
                !expired
            });
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{PipelineState, Store};
    use crate::codearts::model::RunState;
    use crate::config::MetricsConfig;

    fn exposed(store: &Store) -> usize {
        store.series().len()
    }

    /// The target series of every target.
    fn target_series(store: &Store) -> usize {
        let registry = prometheus::Registry::new();
        for family in store.collectors() {
            registry.register(family).expect("register");
        }
        registry
            .gather()
            .iter()
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.name() == "target"))
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn absent_pipelines_and_retired_targets_go_after_their_grace_period() {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let slot = store.target("t", Duration::from_secs(60));
        {
            let mut poll = store.begin_poll(&slot).await.expect("not busy");
            for id in ["a", "b"] {
                let mut pipeline = PipelineState::new(0.0);
                let mut series = store.new_series("proj", id, id);
                series.set_state(RunState::Running);
                pipeline.series = Some(series);
                poll.pipelines.insert(id.into(), pipeline);
            }
            poll.pipelines.get_mut("a").expect("a").absent_since =
                Some(tokio::time::Instant::now());
        }
        assert_eq!(exposed(&store), 2);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(store.collect_garbage().is_empty());
        assert_eq!(exposed(&store), 2, "within the grace period");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A target in the middle of a poll is left for the next round.
        let busy = store.begin_poll(&slot).await.expect("not busy");
        store.collect_garbage();
        assert_eq!(exposed(&store), 2);
        drop(busy);
        store.collect_garbage();
        assert_eq!(exposed(&store), 1, "pipeline a is gone");

        // A retired target goes whole, with its series, after its grace period; had it come
        // back in time it would have kept them.
        store.retire_others(&[]);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(store.collect_garbage().is_empty());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(target_series(&store) > 0);
        assert_eq!(store.collect_garbage(), ["t"]);
        // Gone although a (stale) poller still holds the slot.
        assert_eq!(exposed(&store), 0, "pipeline series left");
        assert_eq!(target_series(&store), 0, "target series left");
        let again = store.target("t", Duration::from_secs(60));
        assert!(
            !Arc::ptr_eq(&again, &slot),
            "a removed target starts afresh"
        );
    }
}
