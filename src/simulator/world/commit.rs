//! What each run builds: its trigger and branches, and the code it deploys: a commit made
//! minutes to days before the run started, the previous run's commit now and then (a redeploy),
//! or none at all for a few runs.
//!
//! The commit is dated from an RNG seeded from the run's own seed, so adding commits changed no
//! run's timing or outcome.

use fastrand::Rng;

use super::names::{BRANCHES, COMMIT_MESSAGES, SOURCE_BRANCHES};
use super::random::{hex_digits, mix, pick};
use super::speed::real_ms;

/// Salt of the commit RNG of each run.
const COMMIT_SALT: u64 = 0x636f_6d6d_6974;
/// Share of runs without a commit id.
const MISSING_SHARE: f64 = 0.02;
/// Share of runs that deploy the previous run's commit again.
const REDEPLOY_SHARE: f64 = 0.06;

/// Source of a run: what triggered it and which code it built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BuildInfo {
    pub trigger: &'static str,
    pub build_type: &'static str,
    pub target_branch: &'static str,
    pub source_branch: Option<&'static str>,
    pub tag: Option<String>,
    pub merge_id: Option<u32>,
    /// The code deployed; `None` for the few runs without a commit id.
    pub commit: Option<Commit>,
}

impl BuildInfo {
    /// Draws what triggered a run and the commit it builds (dated by [`Self::settle_commit`]).
    pub(super) fn generate(rng: &mut Rng) -> BuildInfo {
        let roll = rng.f64();
        let trigger = if roll < 0.3 {
            "Manual"
        } else if roll < 0.6 {
            "Push"
        } else if roll < 0.75 {
            "Scheduler"
        } else if roll < 0.9 {
            "MR"
        } else {
            "CreateTag"
        };
        let mut info = BuildInfo {
            trigger,
            build_type: "branch",
            target_branch: pick(rng, &BRANCHES),
            source_branch: None,
            tag: None,
            merge_id: None,
            // The id first, then the message: the order of the draws keeps every world as it was.
            commit: Some(Commit::drawn(
                hex_digits(rng, 40),
                pick(rng, &COMMIT_MESSAGES),
            )),
        };
        match trigger {
            "MR" => {
                info.target_branch = pick(rng, &BRANCHES[..3]);
                info.source_branch = Some(pick(rng, &SOURCE_BRANCHES));
                info.merge_id = Some(rng.u32(1..500));
            }
            "CreateTag" => {
                info.build_type = "tag";
                info.tag = Some(format!(
                    "v{}.{}.{}",
                    rng.u32(1..4),
                    rng.u32(0..10),
                    rng.u32(0..20)
                ));
            }
            _ => {}
        }
        info
    }

    /// Decides the commit of the run of `seed` starting at `start_ms`: none (a few runs), the
    /// `previous` run's again (a redeploy), or the drawn one, dated minutes, hours or days
    /// (nominal) before the start. `unknown` makes it the world's commit the Repo API does not
    /// know: always a new commit, never redeployed.
    pub(super) fn settle_commit(
        &mut self,
        seed: u64,
        start_ms: i64,
        previous: Option<&Commit>,
        unknown: bool,
        speed: f64,
        executors: usize,
    ) {
        let mut rng = Rng::with_seed(mix(seed, COMMIT_SALT));
        let missing = rng.f64() < MISSING_SHARE;
        let redeploy = rng.f64() < REDEPLOY_SHARE;
        let Some(mut commit) = self.commit.take() else {
            return;
        };
        if !unknown {
            if missing {
                return;
            }
            if let Some(previous) = previous.filter(|p| redeploy && p.in_repo) {
                self.commit = Some(previous.clone());
                return;
            }
        }
        let roll = rng.f64();
        let nominal_age_s = if roll < 0.35 {
            120.0 + 3480.0 * rng.f64()
        } else if roll < 0.75 {
            3600.0 * (1.0 + 23.0 * rng.f64())
        } else {
            86_400.0 * (1.0 + 6.0 * rng.f64())
        };
        commit.committed_ms = whole_second(start_ms - real_ms(nominal_age_s, speed));
        commit.authored_ms = whole_second(commit.committed_ms - real_ms(7200.0 * rng.f64(), speed));
        let parents = if self.merge_id.is_some() { 2 } else { 1 };
        commit.parent_ids = (0..parents).map(|_| hex_digits(&mut rng, 40)).collect();
        commit.author = rng.usize(..executors.max(1));
        commit.in_repo = !unknown;
        self.commit = Some(commit);
    }
}

/// A commit, as CodeArts Repo knows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Commit {
    /// 40 hex digits.
    pub id: String,
    /// The commit message, also the run's `build_params.message`.
    pub message: &'static str,
    /// When it was committed, epoch ms (whole seconds, as Git keeps them).
    pub committed_ms: i64,
    /// When it was authored, epoch ms (whole seconds), at or before `committed_ms`.
    pub authored_ms: i64,
    /// One parent, two for a merge.
    pub parent_ids: Vec<String>,
    /// Index of the executor who wrote it.
    pub author: usize,
    /// False for the one commit of the world the Repo API does not know (it answers 404).
    pub in_repo: bool,
}

impl Commit {
    /// A commit drawn with the run (id and message); [`BuildInfo::settle_commit`] dates it.
    fn drawn(id: String, message: &'static str) -> Commit {
        Commit {
            id,
            message,
            committed_ms: 0,
            authored_ms: 0,
            parent_ids: Vec::new(),
            author: 0,
            in_repo: true,
        }
    }
}

/// `ms` rounded down to the whole second.
fn whole_second(ms: i64) -> i64 {
    ms.div_euclid(1000) * 1000
}

#[cfg(test)]
mod tests {
    use super::super::testing::{START, all_runs, world};
    use super::super::{HOUR_MS, World};
    use super::*;

    #[test]
    fn commits_precede_their_runs_by_minutes_hours_or_days() {
        let w = world(4, 60.0);
        let later = START + 24 * HOUR_MS;
        let (mut runs, mut missing, mut redeploys) = (0, 0, 0);
        let mut ages = [0; 3];
        for i in 0..w.pipelines.len() {
            let mut previous: Option<Commit> = None;
            for run in all_runs(&w, i, later) {
                runs += 1;
                let Some(commit) = &run.build.commit else {
                    missing += 1;
                    previous = None;
                    continue;
                };
                assert_eq!(commit.id.len(), 40);
                assert!(commit.committed_ms < run.start_ms);
                assert_eq!(commit.committed_ms % 1000, 0);
                assert!(commit.authored_ms <= commit.committed_ms);
                if previous.as_ref() == Some(commit) {
                    redeploys += 1;
                    continue;
                }
                // Nominal age, at speed 60.
                let age_s = (run.start_ms - commit.committed_ms) * 60 / 1000;
                assert!((119..7 * 86_400 + 1).contains(&age_s), "{age_s}");
                ages[usize::from(age_s >= 3600) + usize::from(age_s >= 86_400)] += 1;
                previous = Some(commit.clone());
            }
        }
        assert!(runs > 1000, "{runs}");
        let share = |n: usize| n as f64 / runs as f64;
        assert!((0.005..0.04).contains(&share(missing)), "{missing}/{runs}");
        assert!(
            (0.02..0.1).contains(&share(redeploys)),
            "{redeploys}/{runs}"
        );
        assert!(ages.iter().all(|&n| n > runs / 10), "{ages:?}");
    }

    #[test]
    fn the_world_has_exactly_one_unknown_commit_and_one_pipeline_without_a_repository() {
        for deploys in [0, 3] {
            let shape = super::super::Shape {
                deploy_pipelines: deploys,
                ..super::super::Shape::default()
            };
            let w = World::shaped(24, 2, 7, 60.0, START, shape);
            let later = START + 6 * HOUR_MS;
            let unknown: Vec<(usize, u64)> = (0..w.pipelines.len())
                .flat_map(|i| {
                    all_runs(&w, i, later)
                        .into_iter()
                        .filter(|r| r.build.commit.as_ref().is_some_and(|c| !c.in_repo))
                        .map(move |r| (i, r.number))
                })
                .collect();
            assert_eq!(unknown.len(), 1, "{unknown:?}");
            let (index, number) = unknown[0];
            let run = all_runs(&w, index, later)
                .into_iter()
                .find(|r| r.number == number)
                .expect("run");
            assert_eq!(run.outcome, super::super::pipeline::Outcome::Success);
            assert!(run.end_ms() > START, "not history");
            let without: Vec<usize> = (0..w.pipelines.len())
                .filter(|&i| w.pipelines[i].codehub_id.is_none())
                .collect();
            assert_eq!(without.len(), 1);
            // Both are deployment pipelines when there are any.
            let deploy = |i: usize| w.pipelines[i].deploy.is_some();
            assert_eq!(deploy(unknown[0].0), deploys > 0);
            assert_eq!(deploy(without[0]), deploys > 0);
            assert_ne!(unknown[0].0, without[0]);
        }
    }
}
