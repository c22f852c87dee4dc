//! A real Prometheus server for the tests that check what Prometheus makes of the exporter:
//! started on a free loopback port with its own storage in a temporary directory, killed when
//! dropped. Needs `prometheus` and `promtool` on PATH (`scripts/install-prometheus`).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Fails with a clear message when a tool is missing.
pub fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{tool}` is not on PATH: this test needs Prometheus' `prometheus` and `promtool` \
         (run scripts/install-prometheus, which installs Debian's prometheus package)"
    );
}

/// Runs promtool; panics with its output unless it succeeds. Returns stdout + stderr.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    let mut command = Command::new("promtool");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run promtool");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write to promtool");
    }
    let output = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        output.status
    );
    text
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A Prometheus server, killed when dropped.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
}

impl Prometheus {
    /// Writes `config` to `dir/prometheus.yml`, checks it with promtool and starts Prometheus
    /// on a free port, with its storage in `dir/data` and its log in `dir/prometheus.log`.
    pub fn start(dir: &Path, config: &str) -> Prometheus {
        Prometheus::start_with(dir, config, &[])
    }

    /// Like [`Prometheus::start`], with extra command-line arguments (feature flags, say).
    pub fn start_with(dir: &Path, config: &str, extra: &[&str]) -> Prometheus {
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, config).expect("write prometheus.yml");
        promtool(
            &["check", "config", config_path.to_str().expect("utf-8 path")],
            None,
        );

        let port = free_port();
        let log = dir.join("prometheus.log");
        let log_file = fs::File::create(&log).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 30 s) until Prometheus answers `/-/ready`.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/-/ready", self.url)).await
                && response.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `data` of a successful instant query of `promql` (at "now"); panics on an error.
    pub async fn query(&self, promql: &str) -> Value {
        self.api("query", &[("query", promql.to_string())]).await
    }

    /// The `data` of an instant query at `time` (epoch seconds).
    pub async fn query_at(&self, promql: &str, time: f64) -> Value {
        let params = [
            ("query", promql.to_string()),
            ("time", format!("{time:.3}")),
        ];
        self.api("query", &params).await
    }

    /// Every exemplar of the series `promql` selects between `start` and `end` (epoch seconds).
    pub async fn query_exemplars(&self, promql: &str, start: f64, end: f64) -> Vec<Value> {
        let params = [
            ("query", promql.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
        ];
        let data = self.api("query_exemplars", &params).await;
        data.as_array()
            .unwrap_or_else(|| panic!("{promql}: exemplars by series, not {data}"))
            .iter()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The `data` of `GET /api/v1/{endpoint}` with `params`; an answer other than a success
    /// fails the test.
    async fn api(&self, endpoint: &str, params: &[(&str, String)]) -> Value {
        let url = format!("{}/api/v1/{endpoint}", self.url);
        let body: Value = reqwest::Client::new()
            .get(&url)
            .query(params)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"))
            .json()
            .await
            .unwrap_or_else(|err| panic!("{url} {params:?}: not JSON: {err}"));
        assert_eq!(body["status"], "success", "{url} {params:?}: {body}");
        body["data"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
