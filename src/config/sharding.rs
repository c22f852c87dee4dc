//! `[sharding]`: which share of the pipelines this replica polls, by a hash stable across
//! versions, so replicas agree on the split without talking to each other.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `[sharding]`: `count` replicas split the pipelines between them by a stable hash of the
/// pipeline id; this one polls those of share `index`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardingConfig {
    /// This replica's share, from 0.
    #[serde(default)]
    pub index: u32,
    /// Number of replicas; 1 polls everything.
    #[serde(default = "default_shard_count")]
    pub count: u32,
}

impl Default for ShardingConfig {
    fn default() -> Self {
        ShardingConfig { index: 0, count: 1 }
    }
}

fn default_shard_count() -> u32 {
    1
}

impl ShardingConfig {
    /// Parses `N/M` (share N of M, N from 0), as `--shard` takes it.
    pub fn parse(text: &str) -> Result<ShardingConfig, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not N/M (e.g. 0/3)"))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not N/M (e.g. 0/3)"))
        };
        let sharding = ShardingConfig {
            index: number(index)?,
            count: number(count)?,
        };
        sharding.check().map_err(|(_, problem)| problem)?;
        Ok(sharding)
    }

    /// The key and the problem, if the share is impossible.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.count == 0 {
            return Err(("sharding.count", "must be at least 1".to_string()));
        }
        if self.index >= self.count {
            return Err((
                "sharding.index",
                format!(
                    "{} must be below sharding.count ({})",
                    self.index, self.count
                ),
            ));
        }
        Ok(())
    }

    /// Whether this replica polls `pipeline_id`: the first 8 bytes of its SHA-256, modulo
    /// `count`, equal `index`. Stable across versions, platforms and restarts.
    pub fn owns(&self, pipeline_id: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let digest = Sha256::digest(pipeline_id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % u64::from(self.count) == u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn shards_parse_from_n_of_m_and_reject_impossible_shares() {
        assert_eq!(
            ShardingConfig::parse("2/3"),
            Ok(ShardingConfig { index: 2, count: 3 })
        );
        for bad in ["3/3", "1/0", "x/2", "2", "-1/2"] {
            assert!(ShardingConfig::parse(bad).is_err(), "{bad}");
        }
        let text = "[auth]\nmethod = \"token\"\ntoken = \"t\"\n[sharding]\nindex = 4\ncount = 4\n";
        match Config::from_toml(text) {
            Err(err) => assert!(err.to_string().contains("sharding.index"), "{err}"),
            Ok(_) => panic!("index 4 of 4 accepted"),
        }
    }

    #[test]
    fn every_pipeline_belongs_to_exactly_one_shard() {
        let shards: Vec<ShardingConfig> = (0..3)
            .map(|index| ShardingConfig { index, count: 3 })
            .collect();
        let mut per_shard = [0usize; 3];
        for n in 0..3000u32 {
            let id = format!("{n:032x}");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            per_shard[owners[0]] += 1;
            assert!(ShardingConfig::default().owns(&id));
        }
        // A hash, not a range split: shares come out near even.
        assert!(
            per_shard.iter().all(|&n| (850..=1150).contains(&n)),
            "{per_shard:?}"
        );
    }

    #[test]
    fn the_share_of_an_id_never_changes() {
        // SHA-256's first 8 bytes (big-endian) modulo the count, computed independently: a
        // change here would move pipelines between replicas after an upgrade.
        let share = |id: &str, count: u32| {
            (0..count)
                .find(|&index| ShardingConfig { index, count }.owns(id))
                .expect("one owner")
        };
        assert_eq!(share("0123456789abcdef0123456789abcdef", 3), 1);
        assert_eq!(share("0123456789abcdef0123456789abcdef", 5), 2);
        assert_eq!(share("fedcba9876543210fedcba9876543210", 3), 2);
        assert_eq!(share("fedcba9876543210fedcba9876543210", 5), 4);
    }
}
