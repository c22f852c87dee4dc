//! Helpers for integration tests: start the binary's simulator and exporter on loopback (or,
//! with [`harness`], both in the test's own runtime), scrape over HTTP, compare with the
//! simulator's truth.

#![allow(dead_code)]

pub mod exposition;
pub mod otlp;
pub mod pki;
pub mod prometheus;
// The harness serves the simulator, which only the `simulator` feature builds.
#[cfg(feature = "simulator")]
pub mod harness;

pub use exposition::{Sample, parse_metrics};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_codearts-exporter")
}

/// A child process killed when dropped, with its output collected in the background.
pub struct Proc {
    child: Child,
    /// Every line the process wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Every line the process wrote to stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// The threads draining stdout and stderr; they end when the process has exited.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// The process' TMPDIR (the demo's state goes there), removed after it is killed: a killed
    /// process cannot remove what it made.
    _temp_dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `args` and waits (up to 30 s) for a line on stdout or stderr matching `ready`;
    /// returns the process and that line.
    pub fn start(
        args: &[&str],
        envs: &[(&str, &str)],
        ready: impl Fn(&str) -> bool,
    ) -> (Proc, String) {
        let temp_dir = tempfile::tempdir().expect("a TMPDIR");
        let mut command = Command::new(binary());
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env("TMPDIR", temp_dir.path());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn the binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        type Pipe = (Box<dyn std::io::Read + Send>, Arc<Mutex<Vec<String>>>);
        let pipes: [Pipe; 2] = [
            (
                Box::new(child.stdout.take().expect("stdout")),
                stdout.clone(),
            ),
            (
                Box::new(child.stderr.take().expect("stderr")),
                stderr.clone(),
            ),
        ];
        let mut readers = Vec::new();
        for (pipe, sink) in pipes {
            let tx = tx.clone();
            // Keep draining: a full pipe would block the child.
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    // Kept before it is announced: whoever waits for the line finds it kept.
                    sink.lock().expect("lock").push(line.clone());
                    let _ = tx.send(line);
                }
            }));
        }
        // Only the readers send now: a process that exits before it is ready ends the wait.
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut proc = Proc {
            child,
            stderr,
            stdout,
            readers,
            _temp_dir: temp_dir,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if ready(&line) => return (proc, line),
                Ok(_) => {}
                Err(_) => {
                    let _ = proc.child.kill();
                    panic!(
                        "{args:?} did not become ready; stderr:\n{}",
                        proc.stderr.lock().expect("lock").join("\n")
                    );
                }
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to 10 s) for the exit status; by then every line the
    /// process wrote is in [`Proc::output`].
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The pipes are closed: the readers end once they have kept the last lines.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGKILL (a crash: the process runs no code of its own after it) and waits for
    /// the exit status; by then every line the process wrote is in [`Proc::output`].
    pub fn kill(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("wait");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Waits (up to 30 s) until the output so far satisfies `done`, and returns it: a line is
    /// kept a moment after the process wrote it.
    pub fn output_when(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let output = self.output();
            if done(&output) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "the process never logged {what}:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All output so far, stdout then stderr.
    pub fn output(&self) -> String {
        let mut all = self.stdout.lock().expect("lock").join("\n");
        all.push('\n');
        all.push_str(&self.stderr.lock().expect("lock").join("\n"));
        all
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the process said last, which CI's log otherwise lacks.
        if std::thread::panicking() {
            let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let from = lines.len().saturating_sub(PANIC_LOG_LINES);
            eprintln!(
                "--- last {} stderr lines of a process of this test ---",
                lines.len() - from
            );
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

/// How many of a process's last stderr lines a failed test prints.
const PANIC_LOG_LINES: usize = 60;

/// A running simulator and its base URL.
pub struct Sim {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Starts `codearts-exporter simulate` on a free loopback port.
pub fn start_simulator(pipelines: usize, projects: usize, seed: u64, speed: f64) -> Sim {
    start_simulator_with(pipelines, projects, seed, speed, &[])
}

/// Like [`start_simulator`], with extra command-line arguments.
pub fn start_simulator_with(
    pipelines: usize,
    projects: usize,
    seed: u64,
    speed: f64,
    extra: &[&str],
) -> Sim {
    let (pipelines, projects, seed, speed) = (
        pipelines.to_string(),
        projects.to_string(),
        seed.to_string(),
        speed.to_string(),
    );
    let mut args = vec![
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--pipelines",
        &pipelines,
        "--projects",
        &projects,
        "--seed",
        &seed,
        "--speed",
        &speed,
    ];
    args.extend_from_slice(extra);
    let (proc, line) = Proc::start(&args, &[], |line| {
        line.starts_with("simulator listening on ")
    });
    let url = line
        .trim_start_matches("simulator listening on ")
        .split_whitespace()
        .next()
        .expect("url")
        .to_string();
    Sim { proc, url }
}

/// A running exporter and its base URL.
pub struct Exporter {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The configuration file it runs with (rewrite it to reload).
    pub config_path: PathBuf,
    /// Keeps the config file alive.
    _dir: tempfile::TempDir,
}

/// Writes `config` to a file and starts `codearts-exporter run` with JSON logs.
pub fn start_exporter(config: &str, envs: &[(&str, &str)]) -> Exporter {
    start_exporter_with(config, envs, &[])
}

/// Like [`start_exporter`], with extra arguments to `run`.
pub fn start_exporter_with(config: &str, envs: &[(&str, &str)], extra: &[&str]) -> Exporter {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).expect("write config");
    let path = config_path.display().to_string();
    let mut args = vec!["--log-format", "json", "run", "--config", &path];
    args.extend_from_slice(extra);
    let (proc, line) = Proc::start(&args, envs, |line| line.contains("\"serving metrics\""));
    let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
    let addr = event["addr"].as_str().expect("addr field").to_string();
    Exporter {
        proc,
        url: format!("http://{addr}"),
        config_path,
        _dir: dir,
    }
}

/// Runs the binary to completion with a config file; returns (exit code, stdout, stderr).
pub fn run_with_config(
    subcommand: &str,
    config: &str,
    envs: &[(&str, &str)],
) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = Command::new(binary());
    command.arg(subcommand).arg("--config").arg(&path);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// GET a URL; returns status and body.
pub async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// GET a JSON document.
pub async fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// Sends `method` to `url` with an optional JSON body; returns status and body.
pub async fn request(method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut builder = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        builder = builder.json(body);
    }
    let response = builder
        .send()
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Scrapes and parses `/metrics` of the exporter at `base`.
pub async fn scrape(base: &str) -> Vec<Sample> {
    parse_metrics(&get(&format!("{base}/metrics")).await.1)
}

/// Polls `url` until it answers 200 (up to `timeout`).
pub async fn wait_for_status_200(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if reqwest::get(url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `method` to `url` with a JSON body; returns status and the JSON answer.
pub async fn send_json(
    method: &str,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = reqwest::Client::new()
        .request(method, url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Pipeline series only, so two scrapes can be compared while exporter counters move.
pub fn pipeline_samples(samples: &[Sample]) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.name.starts_with("codearts_pipeline_"))
        .cloned()
        .collect()
}

/// Whether every target that is up has ended the last poll it started. A poll shows its
/// states before its history reads come back, so one in flight can look settled for as long
/// as those reads take.
fn no_poll_in_flight(samples: &[Sample]) -> bool {
    select(samples, "codearts_exporter_target_up", &[])
        .iter()
        .filter(|up| up.value == 1.0)
        .all(|up| {
            let target = [("target", up.labels["target"].as_str())];
            let started = value(
                samples,
                "codearts_exporter_last_poll_start_timestamp_seconds",
                &target,
            );
            let succeeded = value(
                samples,
                "codearts_exporter_last_successful_poll_timestamp_seconds",
                &target,
            );
            matches!((started, succeeded), (Some(started), Some(succeeded)) if succeeded >= started)
        })
}

/// Scrapes until the backfill is done (it reads behind the polls), no poll is in flight, and
/// two scrapes in a row agree on every pipeline series (no poll in between).
pub async fn stable_scrape(url: &str) -> Vec<Sample> {
    let backfilled =
        |s: &[Sample]| sum(s, "codearts_exporter_backfill_pending_pipelines", &[]) == 0.0;
    scrape_until(
        url,
        Duration::from_secs(120),
        "the backfill to end",
        backfilled,
    )
    .await;
    let mut previous = parse_metrics(&get(url).await.1);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let current = parse_metrics(&get(url).await.1);
        if backfilled(&current)
            && no_poll_in_flight(&current)
            && pipeline_samples(&current) == pipeline_samples(&previous)
        {
            return current;
        }
        previous = current;
    }
    panic!("metrics never settled");
}

/// Scrapes `url` until `done` holds for the samples (up to `timeout`); returns those samples.
pub async fn scrape_until(
    url: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    scrape_until_or_explain(url, timeout, what, done, String::new).await
}

/// Like [`scrape_until`]; a time-out's message adds `explain()` (e.g. a process's log).
async fn scrape_until_or_explain(
    url: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
    explain: impl Fn() -> String,
) -> Vec<Sample> {
    let deadline = Instant::now() + timeout;
    loop {
        let samples = parse_metrics(&get(url).await.1);
        // A scrape gathers its families one by one, so one that meets `done` may still miss a
        // write made before the ones `done` saw (a poll writes its families in turn). The next
        // scrape starts after all of those writes: return it when it still meets `done`.
        if done(&samples) {
            let confirmed = parse_metrics(&get(url).await.1);
            if done(&confirmed) {
                return confirmed;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({timeout:?}){}",
            explain()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Exporter {
    /// Scrapes this exporter until `done` holds; a time-out shows its log.
    pub async fn scrape_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let url = format!("{}/metrics", self.url);
        let explain = || format!("; log:\n{}", self.proc.output());
        scrape_until_or_explain(&url, timeout, what, done, explain).await
    }
}

/// Samples of `name` whose labels include every pair of `labels`.
pub fn select<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of every series of `name` whose labels include `labels` (0 when there is none).
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    select(samples, name, labels).iter().map(|s| s.value).sum()
}

/// The single value of `name` with `labels`, if exactly one series matches.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match select(samples, name, labels).as_slice() {
        [one] => Some(one.value),
        _ => None,
    }
}

/// `[server]`, `[codearts]` and `[auth]` for the simulator at `sim_url` (static token).
pub fn simulator_config(sim_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[codearts]
endpoint = "{sim_url}"
timeout = "5s"
[auth]
method = "token"
token = "codearts-simulator-token"
"#
    )
}

/// A config polling every `interval` seconds.
pub fn config(sim_url: &str, targets: &Value, interval: u32) -> String {
    let mut text = simulator_config(sim_url);
    let projects = targets.as_array().expect("targets");
    for (index, project) in projects.iter().enumerate() {
        let ids: Vec<String> = project["pipeline_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|id| format!("{id}"))
            .collect();
        // First project through the v5 batch API, the second through v3: both paths are checked.
        let api = if index % 2 == 0 { "v5" } else { "v3" };
        text.push_str(&format!(
            "[[targets]]\nname = \"t{index}\"\nproject_id = {}\npipeline_ids = [{}]\ninterval = \"{interval}s\"\nstatus_api = \"{api}\"\nchunk_size = 3\n",
            project["project_id"],
            ids.join(", ")
        ));
    }
    text
}

/// Project and pipeline ids as the simulator's truth lists them.
pub fn targets_of(truth: &Value) -> Value {
    let mut by_project: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let project = pipeline["project_id"]
            .as_str()
            .expect("project")
            .to_string();
        by_project
            .entry(project)
            .or_default()
            .push(pipeline["pipeline_id"].clone());
    }
    Value::Array(
        by_project
            .into_iter()
            .map(|(project, ids)| serde_json::json!({"project_id": project, "pipeline_ids": ids}))
            .collect(),
    )
}

/// Ids of the pipelines that have a status series, for one project.
pub fn polled(samples: &[Sample], project: &str) -> BTreeSet<String> {
    select(
        samples,
        "codearts_pipeline_status",
        &[("project_id", project)],
    )
    .iter()
    .map(|s| s.labels["pipeline_id"].clone())
    .collect()
}

/// Completed runs in the truth that ended at or after `since_ms`.
pub fn completed_live_runs(truth: &Value, since_ms: f64) -> usize {
    truth["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["runs"].as_array().expect("runs").iter())
        .filter(|r| r["end_ms"].as_f64().unwrap_or(0.0) >= since_ms)
        .count()
}

/// Compares a scrape with the simulator's truth, pipeline by pipeline: the state is one-hot,
/// the `last_run_*` gauges describe the run the exporter last recorded, and every completed run
/// up to that one that ended after `window_start_ms` is in the histograms and `runs_total`
/// exactly once. Returns how many runs were compared.
pub fn compare_with_truth(samples: &[Sample], truth: &Value, window_start_ms: f64) -> usize {
    let mut checked_runs = 0;
    for pipeline in truth["pipelines"].as_array().expect("pipelines") {
        let id = pipeline["pipeline_id"].as_str().expect("id");
        let name = pipeline["name"].as_str().expect("name");
        let labels = [("pipeline_id", id)];

        // Exactly one state is hot, and the name label is the pipeline's (non-ASCII) name.
        let states = select(samples, "codearts_pipeline_status", &labels);
        assert_eq!(states.len(), 6, "{name}: one series per state");
        assert_eq!(
            states.iter().filter(|s| s.value == 1.0).count(),
            1,
            "{name}: one-hot"
        );
        assert!(states.iter().all(|s| s.labels["pipeline_name"] == name));

        let last_number = value(samples, "codearts_pipeline_last_run_number", &labels)
            .unwrap_or_else(|| panic!("{name}: no last_run_number"));
        let runs: Vec<&Value> = pipeline["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["run_number"].as_f64().expect("number") <= last_number)
            .collect();
        let last = runs
            .last()
            .unwrap_or_else(|| panic!("{name}: run {last_number} not in truth"));
        assert_eq!(last["run_number"].as_f64(), Some(last_number));

        // The last completed run, to the second.
        let result = last["result"].as_str().expect("result");
        for candidate in ["success", "error", "aborted"] {
            let hot = value(
                samples,
                "codearts_pipeline_last_run_result",
                &[("pipeline_id", id), ("result", candidate)],
            );
            assert_eq!(
                hot,
                Some(if candidate == result { 1.0 } else { 0.0 }),
                "{name}: last result {candidate}"
            );
        }
        let duration = value(
            samples,
            "codearts_pipeline_last_run_duration_seconds",
            &labels,
        )
        .expect("duration");
        assert!(
            (duration - last["duration_seconds"].as_f64().expect("d")).abs() < 1.0,
            "{name}: duration"
        );
        let start = value(
            samples,
            "codearts_pipeline_last_run_start_timestamp_seconds",
            &labels,
        )
        .expect("start");
        assert!(
            (start - last["start_ms"].as_f64().expect("s") / 1000.0).abs() < 1.0,
            "{name}: start"
        );
        let end = value(
            samples,
            "codearts_pipeline_last_run_end_timestamp_seconds",
            &labels,
        )
        .expect("end");
        assert!(
            (end - last["end_ms"].as_f64().expect("e") / 1000.0).abs() < 1.0,
            "{name}: end"
        );
        for stage in last["stages"].as_array().expect("stages") {
            let stage_name = stage["name"].as_str().expect("stage name");
            let got = value(
                samples,
                "codearts_pipeline_stage_last_duration_seconds",
                &[("pipeline_id", id), ("stage", stage_name)],
            )
            .unwrap_or_else(|| panic!("{name}/{stage_name}: no last duration"));
            assert!((got - stage["duration_seconds"].as_f64().expect("d")).abs() < 1.0);
        }

        // Histograms: one observation per completed run in the window, per result; none twice.
        let recorded: Vec<&&Value> = runs
            .iter()
            .filter(|r| r["end_ms"].as_f64().expect("end") >= window_start_ms)
            .collect();
        for candidate in ["success", "error", "aborted"] {
            let expected = recorded.iter().filter(|r| r["result"] == candidate).count() as f64;
            let count = value(
                samples,
                "codearts_pipeline_run_duration_seconds_count",
                &[("pipeline_id", id), ("result", candidate)],
            )
            .unwrap_or(0.0);
            assert_eq!(count, expected, "{name}: runs with result {candidate}");
            let counted = value(
                samples,
                "codearts_pipeline_runs_total",
                &[("pipeline_id", id), ("result", candidate)],
            )
            .unwrap_or(0.0);
            assert_eq!(
                counted, count,
                "{name}: runs_total equals the histogram's _count"
            );
            let expected_sum: f64 = recorded
                .iter()
                .filter(|r| r["result"] == candidate)
                .map(|r| r["duration_seconds"].as_f64().expect("d"))
                .sum();
            let sum = value(
                samples,
                "codearts_pipeline_run_duration_seconds_sum",
                &[("pipeline_id", id), ("result", candidate)],
            )
            .unwrap_or(0.0);
            assert!(
                (sum - expected_sum).abs() < 0.01 * recorded.len() as f64 + 0.01,
                "{name}: sum {candidate}"
            );
        }
        // Stages: one observation per stage that ran in each recorded run, whatever its
        // result, and one failure per run in which the stage failed.
        let mut expected_stage_counts: BTreeMap<String, f64> = BTreeMap::new();
        let mut expected_failures: BTreeMap<String, f64> = BTreeMap::new();
        for run in &recorded {
            for stage in run["stages"].as_array().expect("stages") {
                let name = stage["name"].as_str().expect("n").to_string();
                *expected_stage_counts.entry(name.clone()).or_default() += 1.0;
                let failed = f64::from(u8::from(stage["result"] == "error"));
                *expected_failures.entry(name).or_default() += failed;
            }
        }
        let per_stage = |family: &str| -> BTreeMap<String, f64> {
            select(samples, family, &labels)
                .into_iter()
                .map(|s| (s.labels["stage"].clone(), s.value))
                .collect()
        };
        assert_eq!(
            per_stage("codearts_pipeline_stage_duration_seconds_count"),
            expected_stage_counts,
            "{name}: stage observations"
        );
        assert_eq!(
            per_stage("codearts_pipeline_stage_failures_total"),
            expected_failures,
            "{name}: stage failures"
        );
        if !recorded.is_empty() {
            assert_eq!(
                value(samples, "codearts_pipeline_runs_missed_total", &labels),
                Some(0.0),
                "{name}: no run may be missed"
            );
        }
        checked_runs += recorded.len();
    }
    checked_runs
}
