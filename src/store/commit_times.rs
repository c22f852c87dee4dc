//! Commit times from CodeArts Repo, remembered: a commit never changes, so each is asked for
//! once, however many deployments deploy it. Bounded; the oldest entry goes first.

use std::collections::{HashMap, VecDeque};

use super::{Store, lock};

/// Commits remembered at most.
const CAPACITY: usize = 10_000;

/// Commit times by (repository, commit), Unix seconds.
#[derive(Debug, Default)]
pub struct CommitTimes {
    times: HashMap<(String, String), f64>,
    /// Insertion order, for eviction.
    order: VecDeque<(String, String)>,
}

impl CommitTimes {
    fn get(&self, repository_id: &str, commit_id: &str) -> Option<f64> {
        self.times
            .get(&(repository_id.to_string(), commit_id.to_string()))
            .copied()
    }

    fn insert(&mut self, repository_id: &str, commit_id: &str, at: f64) {
        let key = (repository_id.to_string(), commit_id.to_string());
        if self.times.insert(key.clone(), at).is_none() {
            self.order.push_back(key);
            while self.order.len() > CAPACITY {
                if let Some(oldest) = self.order.pop_front() {
                    self.times.remove(&oldest);
                }
            }
        }
    }
}

impl Store {
    /// The time of a commit already asked for, Unix seconds.
    pub fn commit_time(&self, repository_id: &str, commit_id: &str) -> Option<f64> {
        lock(&self.commit_times).get(repository_id, commit_id)
    }

    /// Remembers the time of a commit.
    pub fn remember_commit_time(&self, repository_id: &str, commit_id: &str, at: f64) {
        lock(&self.commit_times).insert(repository_id, commit_id, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_times_are_remembered_and_bounded() {
        let mut times = CommitTimes::default();
        for n in 0..CAPACITY + 5 {
            times.insert("r", &format!("c{n}"), n as f64);
        }
        assert_eq!(times.times.len(), CAPACITY);
        assert_eq!(times.get("r", "c0"), None, "the oldest went first");
        assert_eq!(
            times.get("r", &format!("c{}", CAPACITY + 4)),
            Some((CAPACITY + 4) as f64)
        );
        assert_eq!(times.get("other", "c5"), None);
    }
}
