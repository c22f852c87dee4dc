//! Table tests of a poll's steps: a real [`TargetPoller`] polls the in-process simulator over
//! loopback HTTP. The simulator's clock and the poller's wall clock are pinned together, so a
//! row says exactly when each poll happens and what the world then holds; what a poll did is read
//! from the rendered series, the target's state and the simulator's request log, and compared
//! with the simulator's truth (its own record of every completed run).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Settings, TargetPoller};
use crate::clock::WallClock;
use crate::codearts::Client;
use crate::config::{
    AuthConfig, CodeArtsConfig, MetricsConfig, Pattern, ShardingConfig, StatusApi, TargetConfig,
};
use crate::metrics::Metrics;
use crate::simulator::{self, SimOptions, Simulator};
use crate::store::Store;
use crate::store::series::exposition::{Sample, parse_metrics};

/// When every test's simulated world starts, epoch ms.
const START_MS: i64 = 1_800_000_000_000;
/// A minute in ms.
const MINUTE: i64 = 60_000;
/// When the first poll of a row happens, unless it says: every pipeline's first live run
/// started before the world did, and some have completed since.
const FIRST_POLL: i64 = START_MS + 20 * MINUTE;
/// v5 run statuses of a run that has ended.
const ENDED: [&str; 3] = ["COMPLETED", "FAILED", "CANCELED"];

/// A wall clock a test sets: the poller's, pinned to the simulator's.
struct PinnedClock(AtomicI64);

impl WallClock for PinnedClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::Relaxed)).expect("a time")
    }
}

/// The target a row polls, and how.
#[derive(Clone)]
struct Setup {
    pipelines: usize,
    status_api: StatusApi,
    discover: bool,
    exclude: Option<&'static str>,
    record_jobs: bool,
    chunk_size: usize,
    window: Duration,
    poll_timeout: Duration,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            pipelines: 8,
            status_api: StatusApi::V5,
            discover: false,
            exclude: None,
            record_jobs: false,
            chunk_size: 50,
            // Longer than any gap between two polls of a row: no run is found too late.
            window: Duration::from_secs(6 * 3600),
            poll_timeout: Duration::from_secs(60),
        }
    }
}

/// One API call the simulator saw: its API, the pipeline its path names, and its status.
#[derive(Debug, Clone)]
struct Call {
    api: String,
    pipeline: Option<String>,
    status: u64,
}

/// The calls of one poll.
#[derive(Debug)]
struct Calls(Vec<Call>);

impl Calls {
    /// How many calls of `api` were made.
    fn count(&self, api: &str) -> usize {
        self.0.iter().filter(|call| call.api == api).count()
    }

    /// The pipelines whose paths `api` calls named.
    fn pipelines(&self, api: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|call| call.api == api)
            .filter_map(|call| call.pipeline.clone())
            .collect()
    }

    /// The pipelines named by calls that failed.
    fn failed_pipelines(&self) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|call| call.status >= 400)
            .filter_map(|call| call.pipeline.clone())
            .collect()
    }
}

/// A completed run, as the simulator's truth lists it.
#[derive(Debug, Clone)]
struct TruthRun {
    number: u64,
    end_ms: i64,
    /// Jobs that ran.
    jobs: usize,
}

/// A simulator, a poller of one of its projects, and the store and series it writes.
struct Bench {
    setup: Setup,
    sim: Arc<Simulator>,
    base: String,
    http: reqwest::Client,
    clock: Arc<PinnedClock>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    poller: TargetPoller,
    project: String,
    /// The project's pipelines when the world started, in the order the target lists them.
    ids: Vec<String>,
    /// When the target's polling began, Unix seconds.
    started_at: f64,
}

impl Bench {
    /// A world of `setup.pipelines` pipelines, and a poller that will first poll at `at_ms`.
    async fn start(setup: Setup, at_ms: i64) -> Bench {
        let sim = Arc::new(Simulator::starting_at(
            SimOptions {
                pipelines: setup.pipelines,
                projects: 1,
                seed: 7,
                ..SimOptions::default()
            },
            START_MS,
        ));
        sim.pin_time(at_ms);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(simulator::serve(
            listener,
            sim.clone(),
            std::future::pending(),
        ));
        let base = format!("http://{addr}");
        let (project, ids) = sim.targets().remove(0);
        let target = TargetConfig {
            name: Some("steps".into()),
            project_id: project.clone(),
            pipeline_ids: if setup.discover {
                Vec::new()
            } else {
                ids.clone()
            },
            schedule: None,
            interval: Some(Duration::from_secs(60)),
            schedule_time_zone: None,
            poll_timeout: None,
            status_api: setup.status_api,
            chunk_size: setup.chunk_size,
            backfill_window: setup.window,
            discover: setup.discover,
            include: None,
            exclude: setup.exclude.map(|p| Pattern::new(p).expect("a pattern")),
            tags: Vec::new(),
            include_disabled: false,
            // Every poll discovers.
            discover_every: Duration::ZERO,
            gc_after: Duration::from_secs(600),
        };
        let codearts = CodeArtsConfig {
            endpoint: Some(base.clone()),
            iam_endpoint: Some(base.clone()),
            // Longer than any poll_timeout of a row: a hung answer is cut by the poll's deadline.
            timeout: Duration::from_secs(120),
            // One fault fails one call.
            max_retries: 0,
            max_requests_per_second: 10_000.0,
            ..CodeArtsConfig::default()
        };
        let metrics_config = MetricsConfig {
            jobs: setup.record_jobs,
            ..MetricsConfig::default()
        };
        let store = Arc::new(Store::new(&metrics_config).expect("store"));
        let metrics = Arc::new(Metrics::new(&store).expect("metrics"));
        let client = Client::new(
            &codearts,
            &AuthConfig::token(sim.static_token()),
            metrics.clone(),
        )
        .expect("client");
        let clock = Arc::new(PinnedClock(AtomicI64::new(at_ms)));
        let started_at = at_ms as f64 / 1000.0;
        let settings = Settings {
            started_at,
            record_jobs: setup.record_jobs,
            sharding: ShardingConfig::default(),
        };
        let poller = TargetPoller::new(
            target,
            client,
            store.clone(),
            settings,
            setup.poll_timeout,
            clock.clone(),
        );
        Bench {
            setup,
            sim,
            base,
            http: reqwest::Client::new(),
            clock,
            store,
            metrics,
            poller,
            project,
            ids,
            started_at,
        }
    }

    /// Moves the simulator and the poller's clock to `ms`.
    fn at(&self, ms: i64) {
        self.sim.pin_time(ms);
        self.clock.0.store(ms, Ordering::Relaxed);
    }

    /// The time both clocks are pinned at, epoch ms.
    fn now_ms(&self) -> i64 {
        self.clock.0.load(Ordering::Relaxed)
    }

    /// Sends a request to one of the simulator's `/_sim` routes; returns its JSON answer.
    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.expect("JSON")
    }

    /// Injects `rules` (the simulator's fault rules), replacing any.
    async fn faults(&self, rules: Value) {
        self.control(
            reqwest::Method::POST,
            "/_sim/faults",
            Some(json!({ "faults": rules })),
        )
        .await;
    }

    /// One poll, and the API calls it made.
    async fn poll(&self) -> Calls {
        self.control(reqwest::Method::DELETE, "/_sim/requests", None)
            .await;
        self.poller.poll().await;
        let log = self
            .control(reqwest::Method::GET, "/_sim/requests", None)
            .await;
        let calls = log["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .filter_map(|request| {
                let api = request["api"].as_str()?.to_string();
                let path = request["path"].as_str().unwrap_or_default();
                // `/v5/{project}/api/pipelines/{pipeline}/pipeline-runs/...`
                let segments: Vec<&str> = path.split('/').collect();
                let pipeline = (segments.len() > 6 && segments[6] == "pipeline-runs")
                    .then(|| segments[5].to_string());
                Some(Call {
                    api,
                    pipeline,
                    status: request["status"].as_u64().unwrap_or(0),
                })
            })
            .collect();
        Calls(calls)
    }

    /// Pipelines of the target whose first history read is still to come.
    async fn pending(&self) -> usize {
        let state = self.store.write(&self.poller.slot).await;
        state.backfill_pending().count()
    }

    /// Runs the target's backfill until no pipeline waits for it.
    async fn backfill(&self) {
        let done = async {
            while self.pending().await > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let finished = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                _ = self.poller.backfill() => unreachable!("the backfill runs until stopped"),
                _ = done => {}
            }
        })
        .await;
        assert!(finished.is_ok(), "the backfill did not finish");
    }

    /// A first poll at the bench's start, and the backfill it leaves.
    async fn cold_start(&self) {
        self.poll().await;
        self.backfill().await;
    }

    /// Every sample of the rendered series.
    fn samples(&self) -> Vec<Sample> {
        parse_metrics(&String::from_utf8(self.metrics.render()).expect("UTF-8"))
    }

    /// Every completed run of every pipeline, per pipeline id, by the simulator's truth now.
    fn truth(&self) -> BTreeMap<String, Vec<TruthRun>> {
        let truth = self.sim.truth(self.now_ms());
        let mut runs = BTreeMap::new();
        for pipeline in truth["pipelines"].as_array().expect("pipelines") {
            let id = pipeline["pipeline_id"].as_str().expect("id").to_string();
            let completed = pipeline["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .map(|run| TruthRun {
                    number: run["run_number"].as_u64().expect("number"),
                    end_ms: run["end_ms"].as_i64().expect("end"),
                    jobs: run["stages"]
                        .as_array()
                        .expect("stages")
                        .iter()
                        .map(|stage| stage["jobs"].as_array().map_or(0, Vec::len))
                        .sum(),
                })
                .collect();
            runs.insert(id, completed);
        }
        runs
    }

    /// The latest run of each of `ids` as the v5 batch status answers it now: its number and
    /// whether it has ended. Asked before a row injects its faults.
    async fn latest(&self, ids: &[String]) -> BTreeMap<String, (u64, bool)> {
        let response = self
            .http
            .post(format!(
                "{}/v5/{}/api/pipelines/status",
                self.base, self.project
            ))
            .header("X-Auth-Token", self.sim.static_token())
            .json(ids)
            .send()
            .await
            .expect("an answer");
        let entries: Value = response.json().await.expect("JSON");
        entries
            .as_array()
            .expect("an array")
            .iter()
            .map(|entry| {
                let status = entry["status"].as_str().unwrap_or_default();
                (
                    entry["pipeline_id"].as_str().expect("id").to_string(),
                    (
                        entry["run_number"].as_u64().expect("number"),
                        ENDED.contains(&status),
                    ),
                )
            })
            .collect()
    }

    /// The runs of `truth` the target must have recorded once it has read them: those that
    /// ended within the backfill window before polling began, and every one after.
    fn expected(&self, truth: &[TruthRun]) -> Vec<TruthRun> {
        let cutoff = self.started_at - self.setup.window.as_secs_f64();
        truth
            .iter()
            .filter(|run| run.end_ms as f64 / 1000.0 >= cutoff)
            .cloned()
            .collect()
    }

    /// Checks that every pipeline of `truth` has recorded exactly its expected runs (their jobs
    /// too with `metrics.jobs`), none missed, and shows its newest completed run as the last.
    fn assert_recorded(
        &self,
        row: &str,
        samples: &[Sample],
        truth: &BTreeMap<String, Vec<TruthRun>>,
    ) {
        for (id, runs) in truth {
            let expected = self.expected(runs);
            assert_eq!(
                runs_total(samples, id),
                expected.len() as f64,
                "{row}: runs of {id} recorded (truth {runs:?})"
            );
            assert_eq!(
                sum(samples, "codearts_pipeline_runs_missed_total", id),
                0.0,
                "{row}: {id}"
            );
            assert_eq!(
                last_run_number(samples, id),
                runs.last().map(|run| run.number as f64),
                "{row}: last run of {id}"
            );
            if self.setup.record_jobs {
                let jobs: usize = expected.iter().map(|run| run.jobs).sum();
                assert_eq!(
                    sum(samples, "codearts_pipeline_job_duration_seconds_count", id),
                    jobs as f64,
                    "{row}: jobs of {id}"
                );
            }
        }
    }

    /// Whether pipeline `id` is in its grace period (no longer polled or no longer answered);
    /// `None` when the target does not know it.
    async fn absent(&self, id: &str) -> Option<bool> {
        let state = self.store.write(&self.poller.slot).await;
        state
            .pipelines
            .get(id)
            .map(|pipeline| pipeline.absent_since.is_some())
    }
}

/// The value of the target's own gauge or counter `name`.
fn target_value(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get("target").map(String::as_str) == Some("steps"))
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn target_up(samples: &[Sample]) -> f64 {
    target_value(samples, "codearts_exporter_target_up")
}

fn backfill_pending(samples: &[Sample]) -> f64 {
    target_value(samples, "codearts_exporter_backfill_pending_pipelines")
}

/// The sum of series `name` of pipeline `id`, over its other labels.
fn sum(samples: &[Sample], name: &str, id: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("pipeline_id").map(String::as_str) == Some(id))
        .map(|s| s.value)
        .sum()
}

fn runs_total(samples: &[Sample], id: &str) -> f64 {
    sum(samples, "codearts_pipeline_runs_total", id)
}

fn last_run_number(samples: &[Sample], id: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == "codearts_pipeline_last_run_number"
                && s.labels.get("pipeline_id").map(String::as_str) == Some(id)
        })
        .map(|s| s.value)
}

/// The state pipeline `id`'s series show for its latest run, if any.
fn state(samples: &[Sample], id: &str) -> Option<String> {
    samples
        .iter()
        .find(|s| {
            s.name == "codearts_pipeline_status"
                && s.value == 1.0
                && s.labels.get("pipeline_id").map(String::as_str) == Some(id)
        })
        .and_then(|s| s.labels.get("status").cloned())
}

/// The pipelines whose truth holds more completed runs than `before` did.
fn grown(
    before: &BTreeMap<String, Vec<TruthRun>>,
    after: &BTreeMap<String, Vec<TruthRun>>,
) -> BTreeSet<String> {
    after
        .iter()
        .filter(|(id, runs)| before.get(*id).map_or(0, Vec::len) < runs.len())
        .map(|(id, _)| id.clone())
        .collect()
}

#[tokio::test]
async fn a_first_poll_shows_every_pipeline_before_any_history_read() {
    struct Row {
        name: &'static str,
        setup: Setup,
        at: i64,
        /// Whether the status shows a completed latest run as the last run.
        status_shows_last: bool,
        /// Calls expected of the first poll, by API (those not named: none).
        calls: &'static [(&'static str, usize)],
    }
    let rows = [
        Row {
            name: "v5, three configured pipelines named by their run details",
            setup: Setup {
                pipelines: 3,
                ..Setup::default()
            },
            at: FIRST_POLL,
            status_shows_last: true,
            calls: &[("v5_status", 1), ("run_detail", 3)],
        },
        Row {
            name: "v5, twelve configured pipelines named by the pipeline list in chunks of 5",
            setup: Setup {
                pipelines: 12,
                chunk_size: 5,
                ..Setup::default()
            },
            at: FIRST_POLL,
            // The list carries their latest runs: no batch status call.
            status_shows_last: true,
            calls: &[("pipeline_list", 1)],
        },
        Row {
            name: "v5, discovery",
            setup: Setup {
                pipelines: 6,
                discover: true,
                ..Setup::default()
            },
            at: FIRST_POLL,
            status_shows_last: true,
            calls: &[("pipeline_list", 1)],
        },
        Row {
            name: "v3: no stage times, so the last run waits for the history",
            setup: Setup {
                pipelines: 6,
                status_api: StatusApi::V3,
                chunk_size: 4,
                ..Setup::default()
            },
            at: FIRST_POLL,
            status_shows_last: false,
            calls: &[("v3_status", 2)],
        },
        Row {
            name: "v5, a two-minute window hours later: latest runs that ended before it are settled",
            setup: Setup {
                pipelines: 12,
                window: Duration::from_secs(120),
                ..Setup::default()
            },
            at: START_MS + 5 * 60 * MINUTE,
            status_shows_last: true,
            calls: &[("pipeline_list", 1)],
        },
    ];
    for row in rows {
        let bench = Bench::start(row.setup.clone(), row.at).await;
        let latest = bench.latest(&bench.ids).await;
        let calls = bench.poll().await;
        let samples = bench.samples();
        let name = row.name;

        assert_eq!(target_up(&samples), 1.0, "{name}");
        assert_eq!(
            calls.count("run_list"),
            0,
            "{name}: no history read in a poll"
        );
        for api in ["v5_status", "v3_status", "run_detail", "pipeline_list"] {
            let expected = row.calls.iter().find(|(a, _)| *a == api).map_or(0, |c| c.1);
            assert_eq!(calls.count(api), expected, "{name}: {api} calls: {calls:?}");
        }
        let cutoff = bench.started_at - row.setup.window.as_secs_f64();
        let truth = bench.truth();
        let mut shown = 0;
        let mut settled = 0;
        for id in &bench.ids {
            let (number, ended) = latest[id];
            let now = state(&samples, id).unwrap_or_else(|| panic!("{name}: {id} has no state"));
            assert_eq!(now == "completed", ended, "{name}: state of {id} is {now}");
            let last = last_run_number(&samples, id);
            if ended && row.status_shows_last {
                assert_eq!(last, Some(number as f64), "{name}: last run of {id}");
                shown += 1;
            } else {
                assert_eq!(last, None, "{name}: last run of {id}");
            }
            assert_eq!(runs_total(&samples, id), 0.0, "{name}: {id}");
            let ended_before_window = truth[id]
                .last()
                .is_some_and(|run| run.number == number && (run.end_ms as f64 / 1000.0) < cutoff);
            if ended && row.status_shows_last && ended_before_window {
                settled += 1;
            }
        }
        if row.status_shows_last {
            assert!(
                shown > 0,
                "{name}: no latest run had completed; move the poll"
            );
        }
        if row.setup.window < Duration::from_secs(3600) {
            assert!(
                settled > 0,
                "{name}: no pipeline was settled; move the poll"
            );
        }
        assert_eq!(
            backfill_pending(&samples),
            (bench.ids.len() - settled) as f64,
            "{name}: pipelines waiting for their backfill"
        );

        // The backfill then records what ended within the window, and nothing is pending.
        bench.backfill().await;
        let samples = bench.samples();
        assert_eq!(backfill_pending(&samples), 0.0, "{name}");
        bench.assert_recorded(name, &samples, &truth);
    }
}

#[tokio::test]
async fn a_completed_run_is_recorded_once_and_nothing_new_reads_nothing() {
    struct Row {
        name: &'static str,
        setup: Setup,
        /// When each poll after the cold start happens, minutes after the first.
        polls: &'static [i64],
        /// Some pipeline completes more than one run between two polls.
        several_in_one_read: bool,
    }
    let rows = [
        Row {
            name: "the same instant again: nothing new",
            setup: Setup::default(),
            polls: &[0, 0],
            several_in_one_read: false,
        },
        Row {
            name: "every ten minutes",
            setup: Setup::default(),
            polls: &[10, 20, 30, 40],
            several_in_one_read: false,
        },
        Row {
            name: "every minute",
            setup: Setup::default(),
            polls: &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            several_in_one_read: false,
        },
        Row {
            name: "two hours later: several runs in one read",
            setup: Setup::default(),
            polls: &[120, 120],
            several_in_one_read: true,
        },
        Row {
            name: "v3",
            setup: Setup {
                status_api: StatusApi::V3,
                ..Setup::default()
            },
            polls: &[15, 30],
            several_in_one_read: false,
        },
        Row {
            name: "with metrics.jobs",
            setup: Setup {
                record_jobs: true,
                ..Setup::default()
            },
            polls: &[15, 30],
            several_in_one_read: false,
        },
    ];
    for row in rows {
        let name = row.name;
        let bench = Bench::start(row.setup.clone(), FIRST_POLL).await;
        bench.cold_start().await;
        let mut before = bench.truth();
        bench.assert_recorded(name, &bench.samples(), &before);
        let mut completed_between = 0;
        let mut several = false;
        for minutes in row.polls {
            bench.at(FIRST_POLL + minutes * MINUTE);
            let calls = bench.poll().await;
            let samples = bench.samples();
            let truth = bench.truth();
            let news = grown(&before, &truth);
            // A history is read exactly where a run completed since the last poll.
            assert_eq!(
                calls.pipelines("run_list"),
                news,
                "{name}: histories read at +{minutes} min"
            );
            if !row.setup.record_jobs {
                assert_eq!(calls.count("run_detail"), 0, "{name}: {calls:?}");
            }
            assert_eq!(target_up(&samples), 1.0, "{name}");
            assert_eq!(backfill_pending(&samples), 0.0, "{name}");
            bench.assert_recorded(&format!("{name} at +{minutes} min"), &samples, &truth);
            completed_between += news.len();
            several |= news
                .iter()
                .any(|id| truth[id].len() >= before.get(id).map_or(0, Vec::len) + 2);
            before = truth;
        }
        let moved = row.polls.iter().any(|m| *m > 0);
        assert_eq!(
            completed_between > 0,
            moved,
            "{name}: runs completed between polls"
        );
        if row.several_in_one_read {
            assert!(
                several,
                "{name}: no pipeline completed two runs between polls"
            );
        }
    }
}

/// What a row of the failed reads breaks, in the poll after the cold start.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Failure {
    /// The batch status of the first chunk.
    StatusChunk,
    /// One history read.
    History,
    /// One run detail (of a run about to be recorded, with `metrics.jobs`).
    Detail,
    /// The pipeline list of discovery.
    Discovery,
}

#[tokio::test]
async fn a_failed_read_records_nothing_it_lacks_and_the_next_poll_records_it_once() {
    let rows = [
        (
            Failure::StatusChunk,
            Setup {
                chunk_size: 4,
                ..Setup::default()
            },
            json!([{"api": "v5_status", "kind": "error", "status": 503, "count": 1}]),
        ),
        (
            Failure::History,
            Setup::default(),
            json!([{"api": "run_list", "kind": "error", "status": 500, "count": 1}]),
        ),
        (
            Failure::Detail,
            Setup {
                record_jobs: true,
                ..Setup::default()
            },
            json!([{"api": "run_detail", "kind": "error", "status": 502, "count": 1}]),
        ),
        (
            Failure::Discovery,
            Setup {
                discover: true,
                ..Setup::default()
            },
            json!([{"api": "pipeline_list", "kind": "error", "status": 503, "count": 1}]),
        ),
    ];
    for (failure, setup, rules) in rows {
        let name = format!("{failure:?}");
        let bench = Bench::start(setup, FIRST_POLL).await;
        bench.cold_start().await;
        let before = bench.samples();
        let truth_before = bench.truth();
        bench.at(FIRST_POLL + 30 * MINUTE);
        let truth = bench.truth();
        let news = grown(&truth_before, &truth);

        bench.faults(rules).await;
        let calls = bench.poll().await;
        bench.faults(json!([])).await;
        let samples = bench.samples();
        assert_eq!(target_up(&samples), 0.0, "{name}: the target is down");
        // The pipelines whose news the failure hid.
        let hit: BTreeSet<String> = match failure {
            // Chunks are asked one after the other, the target's first four ids first.
            Failure::StatusChunk => {
                assert_eq!(calls.count("v5_status"), 2, "{name}: {calls:?}");
                bench.ids[..4].iter().cloned().collect()
            }
            Failure::History | Failure::Detail => calls.failed_pipelines(),
            // The pipelines of the last discovery are polled: their status is asked instead.
            Failure::Discovery => {
                assert_eq!(calls.count("v5_status"), 1, "{name}: {calls:?}");
                BTreeSet::new()
            }
        };
        if failure != Failure::Discovery {
            assert!(
                hit.iter().any(|id| news.contains(id)),
                "{name}: no news where the read failed ({hit:?}); move the poll"
            );
        }
        assert!(!news.is_empty(), "{name}: nothing completed; move the poll");
        for id in &bench.ids {
            assert_eq!(
                bench.absent(id).await,
                Some(false),
                "{name}: {id} is not gone"
            );
            if hit.contains(id) {
                assert_eq!(
                    runs_total(&samples, id),
                    runs_total(&before, id),
                    "{name}: {id}'s news waits for the next poll"
                );
                if failure == Failure::Detail {
                    assert_eq!(
                        sum(&samples, "codearts_pipeline_job_duration_seconds_count", id),
                        sum(&before, "codearts_pipeline_job_duration_seconds_count", id),
                        "{name}: {id}'s jobs"
                    );
                }
            } else {
                let expected = bench.expected(&truth[id]).len() as f64;
                assert_eq!(runs_total(&samples, id), expected, "{name}: {id} recorded");
            }
        }

        // The next poll, at the same instant, reads again what was lacking, and records it once.
        let calls = bench.poll().await;
        let samples = bench.samples();
        assert_eq!(target_up(&samples), 1.0, "{name}");
        let read_again: BTreeSet<String> = hit.intersection(&news).cloned().collect();
        assert_eq!(
            calls.pipelines("run_list"),
            read_again,
            "{name}: read again"
        );
        bench.assert_recorded(&name, &samples, &truth);
    }
}

#[tokio::test]
async fn discovery_adds_pipelines_and_marks_dropped_ones_absent() {
    /// What happens to the project between two polls.
    enum Change {
        /// A pipeline of this name is created.
        Add(&'static str),
        /// The pipeline at this index is deleted.
        Delete(usize),
        /// The pipeline at this index is disabled.
        Ban(usize),
    }
    struct Row {
        name: &'static str,
        exclude: Option<&'static str>,
        changes: Vec<Change>,
        /// Whether the added pipelines are polled.
        added_kept: bool,
    }
    let rows = [
        Row {
            name: "a pipeline created",
            exclude: None,
            changes: vec![Change::Add("新流水线-added")],
            added_kept: true,
        },
        Row {
            name: "a pipeline created that the exclude filter drops",
            exclude: Some("-added$"),
            changes: vec![Change::Add("新流水线-added")],
            added_kept: false,
        },
        Row {
            name: "a pipeline deleted",
            exclude: None,
            changes: vec![Change::Delete(1)],
            added_kept: true,
        },
        Row {
            name: "a pipeline disabled",
            exclude: None,
            changes: vec![Change::Ban(2)],
            added_kept: true,
        },
        Row {
            name: "one created, two dropped",
            exclude: None,
            changes: vec![Change::Add("another"), Change::Delete(0), Change::Ban(3)],
            added_kept: true,
        },
    ];
    for row in rows {
        let name = row.name;
        let setup = Setup {
            pipelines: 6,
            discover: true,
            exclude: row.exclude,
            ..Setup::default()
        };
        let bench = Bench::start(setup, FIRST_POLL).await;
        bench.cold_start().await;
        let samples = bench.samples();
        let kept_at_first: Vec<String> = bench
            .ids
            .iter()
            .filter(|id| state(&samples, id).is_some())
            .cloned()
            .collect();
        assert_eq!(
            kept_at_first.len(),
            bench.ids.len(),
            "{name}: every pipeline"
        );

        bench.at(FIRST_POLL + MINUTE);
        let mut added = Vec::new();
        let mut dropped = BTreeSet::new();
        for change in &row.changes {
            match change {
                Change::Add(pipeline) => {
                    let answer = bench
                        .control(
                            reqwest::Method::POST,
                            "/_sim/pipelines",
                            Some(json!({"name": pipeline, "project_id": bench.project})),
                        )
                        .await;
                    added.push(answer["pipeline_id"].as_str().expect("an id").to_string());
                }
                Change::Delete(index) => {
                    let id = &bench.ids[*index];
                    bench
                        .control(
                            reqwest::Method::DELETE,
                            &format!("/_sim/pipelines/{id}"),
                            None,
                        )
                        .await;
                    dropped.insert(id.clone());
                }
                Change::Ban(index) => {
                    let id = &bench.ids[*index];
                    bench
                        .control(
                            reqwest::Method::POST,
                            &format!("/_sim/pipelines/{id}/ban"),
                            None,
                        )
                        .await;
                    dropped.insert(id.clone());
                }
            }
        }
        let calls = bench.poll().await;
        let samples = bench.samples();
        assert_eq!(target_up(&samples), 1.0, "{name}");
        assert_eq!(calls.count("pipeline_list"), 1, "{name}: discovery");
        let kept = bench.ids.len() - dropped.len() + if row.added_kept { added.len() } else { 0 };
        assert_eq!(
            target_value(&samples, "codearts_exporter_discovered_pipelines"),
            kept as f64,
            "{name}"
        );
        for id in &bench.ids {
            let gone = dropped.contains(id);
            assert_eq!(bench.absent(id).await, Some(gone), "{name}: {id} absent");
        }
        for id in &added {
            if row.added_kept {
                assert_eq!(bench.absent(id).await, Some(false), "{name}: {id} polled");
                // Its first run started when it was created: under way.
                let shown = state(&samples, id);
                assert!(shown.is_some_and(|s| s != "completed"), "{name}: {id}");
            } else {
                assert_eq!(bench.absent(id).await, None, "{name}: {id} not polled");
                assert_eq!(state(&samples, id), None, "{name}");
            }
        }
    }
}

#[tokio::test]
async fn a_poll_cut_at_its_deadline_records_nothing_twice() {
    let hang =
        |api: &str| json!([{"api": api, "kind": "timeout", "latency_ms": 600_000, "count": 1}]);
    // Far longer than a poll of eight pipelines takes, even on a loaded machine.
    let short = Duration::from_secs(5);
    let rows = [
        (
            "the batch status hangs",
            Setup {
                chunk_size: 4,
                poll_timeout: short,
                ..Setup::default()
            },
            hang("v5_status"),
        ),
        (
            "a history read hangs",
            Setup {
                poll_timeout: short,
                ..Setup::default()
            },
            hang("run_list"),
        ),
        (
            "a run detail hangs",
            Setup {
                record_jobs: true,
                poll_timeout: short,
                ..Setup::default()
            },
            hang("run_detail"),
        ),
    ];
    for (name, setup, rules) in rows {
        let bench = Bench::start(setup, FIRST_POLL).await;
        bench.cold_start().await;
        let before = bench.samples();
        let truth_before = bench.truth();
        bench.at(FIRST_POLL + 30 * MINUTE);
        let truth = bench.truth();
        assert!(
            !grown(&truth_before, &truth).is_empty(),
            "{name}: nothing completed; move the poll"
        );
        bench.faults(rules).await;
        bench.poll().await;
        bench.faults(json!([])).await;
        let samples = bench.samples();
        assert_eq!(target_up(&samples), 0.0, "{name}");
        assert_eq!(
            target_value(&samples, "codearts_exporter_polls_timed_out_total"),
            1.0,
            "{name}"
        );
        // Every history of the poll was read together: none was recorded.
        for id in &bench.ids {
            assert_eq!(
                runs_total(&samples, id),
                runs_total(&before, id),
                "{name}: {id}"
            );
        }
        // The next poll records it all, once.
        bench.poll().await;
        let samples = bench.samples();
        assert_eq!(target_up(&samples), 1.0, "{name}");
        bench.assert_recorded(name, &samples, &truth);
        // And one more changes nothing.
        let calls = bench.poll().await;
        assert_eq!(calls.count("run_list"), 0, "{name}");
        bench.assert_recorded(name, &bench.samples(), &truth);
    }
}
