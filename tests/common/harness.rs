//! The simulator and the exporter in the test's own runtime, each on a free loopback port:
//! [`start_simulator`] serves a [`Simulator`] and [`start_exporter`] calls
//! [`codearts_exporter::run`] with a configuration text. Stopping one resolves its shutdown
//! future and awaits its task. To restart an exporter, stop it and start another with the same
//! configuration: the simulator, and what it simulates, carry on.
//!
//! There is no process, so no stderr: log lines and panics are captured by the runtime they
//! happen in. Every `#[tokio::test]` builds its own runtime, so [`test_log`] holds the lines of the
//! calling test's simulator and exporters only, not those of the tests running beside it.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use codearts_exporter::RunError;
use codearts_exporter::config::Config;
use codearts_exporter::simulator::{self, SimOptions, Simulator};
use tokio::net::TcpListener;
use tokio::runtime::{self, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Sample, scrape_until_or_explain};

/// How long a start or a stop may take before the test fails.
const STARTUP_AND_SHUTDOWN: Duration = Duration::from_secs(30);

/// A simulator served in this runtime; dropped, it is told to stop.
pub struct Sim {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The simulated service, for what the tests read directly (targets, token).
    pub simulator: Arc<Simulator>,
    running: Running<()>,
}

/// Options of a simulator of `pipelines` in `projects`, as `simulate` takes them.
pub fn sim_options(pipelines: usize, projects: usize, seed: u64, speed: f64) -> SimOptions {
    SimOptions {
        pipelines,
        projects,
        seed,
        speed,
        ..SimOptions::default()
    }
}

/// Serves a simulator of `pipelines` in `projects` on a free loopback port.
pub async fn start_simulator(pipelines: usize, projects: usize, seed: u64, speed: f64) -> Sim {
    start_simulator_with(sim_options(pipelines, projects, seed, speed)).await
}

/// Serves a simulator of `options` (faults, stages, running share…) on a free loopback port.
pub async fn start_simulator_with(options: SimOptions) -> Sim {
    capture_logs();
    let simulator = Arc::new(Simulator::new(options));
    let listener = bind_loopback().await;
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, shutdown) = shutdown_signal();
    let task = tokio::spawn(simulator::serve(listener, simulator.clone(), shutdown));
    Sim {
        url,
        simulator,
        running: Running { stop, task },
    }
}

impl Sim {
    /// Stops serving and waits until the server has ended.
    pub async fn stop(self) {
        self.running.stop("the simulator").await;
    }
}

/// An exporter running in this runtime; dropped, it is told to stop.
pub struct Exporter {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Unix time in ms taken just before `run` was first polled: `run` reads its start clock
    /// (where its backfill window counts back from) at once, so this is its start to a few µs.
    pub started_ms: f64,
    running: Running<Result<(), RunError>>,
}

/// Parses `config` (`[server] listen` is ignored) and runs the exporter on a free loopback
/// port; returns once it answers `/healthz`.
pub async fn start_exporter(config: &str) -> Exporter {
    let config = Config::from_toml(config).unwrap_or_else(|err| panic!("invalid config: {err}"));
    start_exporter_with(config).await
}

/// Runs the exporter with `config` on a free loopback port; returns once it answers `/healthz`.
pub async fn start_exporter_with(config: Config) -> Exporter {
    capture_logs();
    let listener = bind_loopback().await;
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, shutdown) = shutdown_signal();
    let (started_tx, started) = oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = started_tx.send(now_ms());
        codearts_exporter::run(config, listener, None, shutdown).await
    });
    let started_ms = started.await.expect("the exporter's task started");
    let exporter = Exporter {
        url,
        started_ms,
        running: Running { stop, task },
    };
    exporter.wait_until_serving().await;
    exporter
}

impl Exporter {
    /// Waits until `/healthz` answers (whatever its status), or fails with why `run` ended.
    async fn wait_until_serving(&self) {
        let url = format!("{}/healthz", self.url);
        let deadline = Instant::now() + STARTUP_AND_SHUTDOWN;
        loop {
            if reqwest::get(&url).await.is_ok() {
                return;
            }
            assert!(
                !self.running.has_ended(),
                "the exporter ended at start-up; log:\n{}",
                test_log()
            );
            assert!(
                Instant::now() < deadline,
                "the exporter never served; log:\n{}",
                test_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves the exporter's shutdown future and waits until `run` has returned, which it
    /// does once every task it started has ended; fails unless it returned `Ok`.
    pub async fn stop(self) {
        if let Err(err) = self.running.stop("the exporter").await {
            panic!("the exporter failed: {err}");
        }
    }

    /// Scrapes this exporter until `done` holds; a time-out shows this test's log.
    pub async fn scrape_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let url = format!("{}/metrics", self.url);
        let explain = || format!("; log:\n{}", test_log());
        scrape_until_or_explain(&url, timeout, what, done, explain).await
    }
}

/// A task started with a shutdown future. Dropped, it resolves that future without waiting.
struct Running<T> {
    stop: oneshot::Sender<()>,
    task: JoinHandle<T>,
}

/// A shutdown future, and the sender that resolves it (by sending, or by being dropped).
fn shutdown_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

impl<T> Running<T> {
    /// The task has returned (or panicked).
    fn has_ended(&self) -> bool {
        self.task.is_finished()
    }

    /// Resolves the shutdown future and returns what the task returned.
    async fn stop(self, what: &str) -> T {
        let _ = self.stop.send(());
        match tokio::time::timeout(STARTUP_AND_SHUTDOWN, self.task).await {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => panic!("{what} panicked: {err}; log:\n{}", test_log()),
            Err(_) => panic!(
                "{what} did not stop within {STARTUP_AND_SHUTDOWN:?}; log:\n{}",
                test_log()
            ),
        }
    }
}

/// A free port on loopback.
async fn bind_loopback() -> TcpListener {
    TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port")
}

/// Wall clock in epoch ms.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Log lines (JSON, as `--log-format json` writes them) and panics, by runtime.
static LOGS: LazyLock<Mutex<HashMap<runtime::Id, Vec<String>>>> = LazyLock::new(Mutex::default);

/// Every log line and panic message of the calling test's runtime so far, one per line.
pub fn test_log() -> String {
    let id = Handle::current().id();
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs.get(&id)
        .map(|lines| lines.join("\n"))
        .unwrap_or_default()
}

/// Keeps `line` with the lines of the runtime the calling thread runs in (dropped outside one).
fn keep(line: String) {
    if let Ok(handle) = Handle::try_current() {
        let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry(handle.id()).or_default().push(line);
    }
}

/// Installs, once per test binary, a subscriber that keeps log lines at the binary's default
/// level (info) and a panic hook that also keeps the panic message, both by runtime.
fn capture_logs() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| LogLine(Vec::new()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            keep(format!("thread '{}' {info}", thread.name().unwrap_or("?")));
            print(info);
        }));
    });
}

/// One formatted event, kept when the formatter drops its writer.
struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        keep(String::from_utf8_lossy(&self.0).trim_end().to_string());
    }
}
