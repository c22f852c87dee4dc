//! The state file (`[state] path`): an SQLite database that keeps, per pipeline, its run ledger
//! and its counted series across restarts, so that counters go on where the last process left
//! them and no run is recorded twice.
//!
//! SQLite because it is made for exactly this: each commit is atomic and durable (WAL with
//! `synchronous = FULL`), so a SIGKILL at any instant leaves either the old or the new rows.
//! A file that cannot be trusted (not a database, damaged, another schema version, another
//! configuration's) is renamed aside for the operator and a new one is started: bad state never
//! stops the exporter.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, Opts};
use rusqlite::{Connection, OptionalExtension, params};

use super::series::Stored;
use crate::recording::RunLedger;

/// The schema this build reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;
/// What `meta.format` says of a file of ours.
const FORMAT: &str = "codearts-exporter-state";
/// Buckets of the commit duration histogram (seconds).
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// What went wrong with the state file; each is logged and counted, none stops the exporter.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be opened or created (a missing or read-only directory).
    #[error("cannot open the state file {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a database of ours, or damaged.
    #[error("the state file {path} is corrupt ({reason}); kept aside as {aside}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
        /// Where it was moved.
        aside: String,
    },
    /// The file comes from a build with another schema.
    #[error(
        "the state file {path} has schema version {found}, this build reads {SCHEMA_VERSION}; kept aside as {aside}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Where it was moved.
        aside: String,
    },
    /// The file holds none of the configured projects: another configuration's.
    #[error(
        "the state file {path} holds pipelines of other projects ({projects}) than those configured; kept aside as {aside}"
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Some projects it holds.
        projects: String,
        /// Where it was moved.
        aside: String,
    },
    /// A commit failed (disk full, read-only volume); retried at the next one.
    #[error("cannot write the state file {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The `kind` label of each error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateErrorKind {
    /// [`StateError::Open`].
    Open,
    /// [`StateError::Corrupt`].
    Corrupt,
    /// [`StateError::Version`].
    Version,
    /// [`StateError::Foreign`].
    Foreign,
    /// [`StateError::Write`].
    Write,
}

impl StateErrorKind {
    /// Every kind, for the label set.
    pub const ALL: [StateErrorKind; 5] = [
        StateErrorKind::Open,
        StateErrorKind::Corrupt,
        StateErrorKind::Version,
        StateErrorKind::Foreign,
        StateErrorKind::Write,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateErrorKind::Open => "open",
            StateErrorKind::Corrupt => "corrupt",
            StateErrorKind::Version => "version",
            StateErrorKind::Foreign => "foreign",
            StateErrorKind::Write => "write",
        }
    }
}

impl StateError {
    /// Its `kind` label.
    pub fn kind(&self) -> StateErrorKind {
        match self {
            StateError::Open { .. } => StateErrorKind::Open,
            StateError::Corrupt { .. } => StateErrorKind::Corrupt,
            StateError::Version { .. } => StateErrorKind::Version,
            StateError::Foreign { .. } => StateErrorKind::Foreign,
            StateError::Write { .. } => StateErrorKind::Write,
        }
    }
}

/// The state file's own series: errors, and the time and cost of commits.
pub struct StateFamilies {
    errors: IntCounterVec,
    last_commit: Gauge,
    commit_duration: Histogram,
}

impl StateFamilies {
    /// Creates the families (unregistered), every error kind at 0.
    pub fn new() -> Result<StateFamilies, prometheus::Error> {
        let errors = IntCounterVec::new(
            Opts::new(
                "codearts_exporter_state_errors_total",
                "Problems with the state file by kind: open, corrupt, version, foreign (another configuration's), write (a commit failed; retried).",
            ),
            &["kind"],
        )?;
        for kind in StateErrorKind::ALL {
            errors.with_label_values(&[kind.as_str()]);
        }
        Ok(StateFamilies {
            errors,
            last_commit: Gauge::new(
                "codearts_exporter_state_last_commit_timestamp_seconds",
                "When the last commit to the state file ended, Unix seconds (0: none yet, or no state file).",
            )?,
            commit_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "codearts_exporter_state_commit_duration_seconds",
                    "Duration of commits to the state file.",
                )
                .buckets(COMMIT_BUCKETS.to_vec()),
            )?,
        })
    }

    /// Every family, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.errors.clone()),
            Box::new(self.last_commit.clone()),
            Box::new(self.commit_duration.clone()),
        ]
    }

    /// Logs and counts `err`.
    pub fn failed(&self, err: &StateError) {
        tracing::error!(kind = err.kind().as_str(), error = %err, "state file");
        self.errors.with_label_values(&[err.kind().as_str()]).inc();
    }

    /// Records a commit that took `seconds` and ended at `now` (Unix seconds).
    pub fn committed(&self, seconds: f64, now: f64) {
        self.commit_duration.observe(seconds);
        self.last_commit.set(now);
    }
}

/// A recorded run's trace awaiting delivery, as the state file keeps it: its place in the
/// outbox (oldest first) and its encoded OTLP request.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTrace {
    /// Its place in the outbox; increasing.
    pub seq: i64,
    /// The protobuf `ExportTraceServiceRequest` of the run.
    pub body: bytes::Bytes,
}

/// What a commit changes in the trace outbox, with the rows: traces of runs just recorded, and
/// traces settled (delivered or dropped) since the last commit.
#[derive(Debug, Default)]
pub struct TraceChanges {
    /// Added, with the runs whose counts the commit writes.
    pub added: Vec<StoredTrace>,
    /// Removed: delivered, or dropped.
    pub settled: Vec<i64>,
}

/// One pipeline as the state file keeps it.
#[derive(Debug, Clone)]
pub struct StoredPipeline {
    /// The target that records it.
    pub target: String,
    /// Its project.
    pub project_id: String,
    /// Its id.
    pub pipeline_id: String,
    /// Which runs are recorded.
    pub ledger: RunLedger,
    /// Its name, counted values and last run.
    pub series: Stored,
}

/// A row to write, serialized while the target's state is held.
#[derive(Debug)]
pub struct Row {
    target: String,
    project_id: String,
    pipeline_id: String,
    ledger: String,
    series: String,
}

impl Row {
    /// The row of `pipeline`; `None` (logged) if it cannot be serialized, which cannot happen
    /// with plain numbers and strings.
    pub fn new(
        target: &str,
        project_id: &str,
        pipeline_id: &str,
        ledger: &RunLedger,
        series: &Stored,
    ) -> Option<Row> {
        let encoded = serde_json::to_string(ledger)
            .and_then(|ledger| serde_json::to_string(series).map(|series| (ledger, series)));
        match encoded {
            Ok((ledger, series)) => Some(Row {
                target: target.to_string(),
                project_id: project_id.to_string(),
                pipeline_id: pipeline_id.to_string(),
                ledger,
                series,
            }),
            Err(err) => {
                tracing::error!(%pipeline_id, error = %err, "cannot serialize a pipeline's state");
                None
            }
        }
    }
}

impl Row {
    /// Bytes of its serialized ledger and series.
    pub fn bytes(&self) -> usize {
        self.ledger.len() + self.series.len()
    }
}

/// What opening the state file gave.
pub struct Opened {
    /// The file, when it could be opened (else the exporter runs without one).
    pub file: Option<StateFile>,
    /// Every pipeline it kept.
    pub pipelines: Vec<StoredPipeline>,
    /// Every trace still awaiting delivery, oldest first.
    pub traces: Vec<StoredTrace>,
    /// What went wrong (the file kept aside, or none opened).
    pub errors: Vec<StateError>,
}

/// The open state file.
pub struct StateFile {
    path: PathBuf,
    connection: std::sync::Mutex<Connection>,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .finish()
    }
}

/// Why a file was not read: kept aside as this kind of error.
enum Distrust {
    Corrupt(String),
    Version(i64),
    Foreign(String),
}

impl StateFile {
    /// Opens (or creates) the state file at `path` for a configuration of `projects` whose
    /// series are laid out as `layout` says. A file that cannot be trusted is kept aside and
    /// a new one started; one that cannot be opened at all leaves the exporter without one.
    pub fn open(path: &Path, projects: &BTreeSet<String>, layout: &str) -> Opened {
        let mut errors = Vec::new();
        match Self::read(path, projects, layout) {
            Ok((file, pipelines, traces)) => {
                return Opened {
                    file: Some(file),
                    pipelines,
                    traces,
                    errors,
                };
            }
            Err(Ok(distrust)) => match set_aside(path) {
                Ok(aside) => errors.push(match distrust {
                    Distrust::Corrupt(reason) => StateError::Corrupt {
                        path: path.into(),
                        reason,
                        aside,
                    },
                    Distrust::Version(found) => StateError::Version {
                        path: path.into(),
                        found,
                        aside,
                    },
                    Distrust::Foreign(projects) => StateError::Foreign {
                        path: path.into(),
                        projects,
                        aside,
                    },
                }),
                Err(reason) => {
                    errors.push(StateError::Open {
                        path: path.into(),
                        reason: format!("it cannot be trusted, and not be kept aside: {reason}"),
                    });
                    return Opened {
                        file: None,
                        pipelines: Vec::new(),
                        traces: Vec::new(),
                        errors,
                    };
                }
            },
            Err(Err(reason)) => {
                errors.push(StateError::Open {
                    path: path.into(),
                    reason,
                });
                return Opened {
                    file: None,
                    pipelines: Vec::new(),
                    traces: Vec::new(),
                    errors,
                };
            }
        }
        // A new file where the untrusted one was.
        match Self::read(path, projects, layout) {
            Ok((file, pipelines, traces)) => Opened {
                file: Some(file),
                pipelines,
                traces,
                errors,
            },
            Err(Ok(_)) | Err(Err(_)) => {
                errors.push(StateError::Open {
                    path: path.into(),
                    reason: "a new file could not be started".into(),
                });
                Opened {
                    file: None,
                    pipelines: Vec::new(),
                    traces: Vec::new(),
                    errors,
                }
            }
        }
    }

    /// Opens `path` and reads every pipeline and pending trace: `Err(Ok(_))` for a file not to
    /// be trusted, `Err(Err(_))` for one that cannot be opened.
    #[allow(clippy::type_complexity)]
    fn read(
        path: &Path,
        projects: &BTreeSet<String>,
        layout: &str,
    ) -> Result<(StateFile, Vec<StoredPipeline>, Vec<StoredTrace>), Result<Distrust, String>> {
        let connection = Connection::open(path).map_err(|e| Err(e.to_string()))?;
        // Any failure from here on reads a file that is not a sound database of ours.
        let corrupt = |e: rusqlite::Error| Ok(Distrust::Corrupt(e.to_string()));
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(corrupt)?;
        let tables: i64 = connection
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(corrupt)?;
        if version != SCHEMA_VERSION && !(version == 0 && tables == 0) {
            return Err(Ok(Distrust::Version(version)));
        }
        let check: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(Ok(Distrust::Corrupt(check)));
        }
        // WAL: a commit appends, readers never block it; FULL: a commit survives a power cut.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| classify_open(&e))?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| classify_open(&e))?;
        // No temporary files: the image's root file system is read-only.
        connection
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| classify_open(&e))?;
        connection
            .execute_batch(&format!(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS pipelines (
                     project_id TEXT NOT NULL,
                     pipeline_id TEXT NOT NULL,
                     target TEXT NOT NULL,
                     ledger TEXT NOT NULL,
                     series TEXT NOT NULL,
                     PRIMARY KEY (project_id, pipeline_id)
                 ) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS traces (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
                 INSERT OR IGNORE INTO meta VALUES ('format', '{FORMAT}');
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))
            .map_err(|e| classify_open(&e))?;
        let format: Option<String> = connection
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(corrupt)?;
        if format.as_deref() != Some(FORMAT) {
            return Err(Ok(Distrust::Corrupt(format!(
                "not a state file of the exporter (format {format:?})"
            ))));
        }
        let pipelines = read_pipelines(&connection).map_err(Ok)?;
        let traces = read_traces(&connection).map_err(Ok)?;
        let mut foreign: BTreeSet<&str> = BTreeSet::new();
        if !pipelines.is_empty() {
            let known = pipelines
                .iter()
                .any(|pipeline| projects.contains(&pipeline.project_id));
            if !known {
                foreign.extend(pipelines.iter().map(|p| p.project_id.as_str()).take(3));
                let listed = foreign.into_iter().collect::<Vec<_>>().join(", ");
                return Err(Ok(Distrust::Foreign(listed)));
            }
        }
        let stored_layout: Option<String> = connection
            .query_row("SELECT value FROM meta WHERE key = 'layout'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(corrupt)?;
        let pipelines = match stored_layout {
            Some(stored) if stored != layout && !pipelines.is_empty() => {
                // Other buckets or run labels: the counts cannot go on under the new ones.
                // The ledgers still say what is recorded, so nothing is recorded twice; the
                // counters start again from 0, which Prometheus reads as a reset.
                tracing::warn!(
                    path = %path.display(),
                    "the state file's counts were kept with other [metrics] buckets or run labels; \
                     they start again from 0 (recorded runs stay recorded)"
                );
                pipelines
                    .into_iter()
                    .map(|p| StoredPipeline {
                        series: p.series.without_counts(),
                        ..p
                    })
                    .collect()
            }
            _ => pipelines,
        };
        connection
            .execute(
                "INSERT OR REPLACE INTO meta VALUES ('layout', ?1)",
                params![layout],
            )
            .map_err(|e| classify_open(&e))?;
        Ok((
            StateFile {
                path: path.to_path_buf(),
                connection: std::sync::Mutex::new(connection),
            },
            pipelines,
            traces,
        ))
    }

    /// Writes `rows`, deletes the pipelines `gone` (target, project, pipeline: a row another
    /// target has taken over stays) and applies `traces`, in one transaction; returns how long
    /// it took. Blocking: call it off the async threads.
    pub fn write(
        &self,
        rows: &[Row],
        gone: &[(String, String, String)],
        traces: &TraceChanges,
    ) -> Result<f64, StateError> {
        let started = Instant::now();
        let failed = |e: rusqlite::Error| StateError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut connection = super::series::lock(&self.connection);
        let transaction = connection.transaction().map_err(failed)?;
        {
            let mut upsert = transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO pipelines (project_id, pipeline_id, target, ledger, series)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(failed)?;
            for row in rows {
                upsert
                    .execute(params![
                        row.project_id,
                        row.pipeline_id,
                        row.target,
                        row.ledger,
                        row.series
                    ])
                    .map_err(failed)?;
            }
            let mut delete = transaction
                .prepare_cached(
                    "DELETE FROM pipelines WHERE target = ?1 AND project_id = ?2 AND pipeline_id = ?3",
                )
                .map_err(failed)?;
            for (target, project_id, pipeline_id) in gone {
                delete
                    .execute(params![target, project_id, pipeline_id])
                    .map_err(failed)?;
            }
            let mut add = transaction
                .prepare_cached("INSERT OR REPLACE INTO traces (seq, body) VALUES (?1, ?2)")
                .map_err(failed)?;
            for trace in &traces.added {
                add.execute(params![trace.seq, trace.body.as_ref()])
                    .map_err(failed)?;
            }
            let mut settle = transaction
                .prepare_cached("DELETE FROM traces WHERE seq = ?1")
                .map_err(failed)?;
            for seq in &traces.settled {
                settle.execute(params![seq]).map_err(failed)?;
            }
        }
        transaction.commit().map_err(failed)?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// The file's size in bytes, its write-ahead log included.
    pub fn size(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        [self.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// A failure to set the file up: read-only or unreachable (open), else not a database (corrupt).
fn classify_open(err: &rusqlite::Error) -> Result<Distrust, String> {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            Ok(Distrust::Corrupt(err.to_string()))
        }
        _ => Err(err.to_string()),
    }
}

/// Every pipeline of the file; a row that does not decode makes the whole file untrusted.
fn read_pipelines(connection: &Connection) -> Result<Vec<StoredPipeline>, Distrust> {
    let corrupt = |e: rusqlite::Error| Distrust::Corrupt(e.to_string());
    let mut statement = connection
        .prepare("SELECT target, project_id, pipeline_id, ledger, series FROM pipelines")
        .map_err(corrupt)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .map_err(corrupt)?;
    let mut pipelines = Vec::new();
    for row in rows {
        let (target, project_id, pipeline_id, ledger, series) = row.map_err(corrupt)?;
        let undecodable = |e: serde_json::Error| {
            Distrust::Corrupt(format!("pipeline {pipeline_id} does not decode: {e}"))
        };
        let ledger: RunLedger = serde_json::from_str(&ledger).map_err(undecodable)?;
        let series: Stored = serde_json::from_str(&series).map_err(undecodable)?;
        pipelines.push(StoredPipeline {
            target,
            project_id,
            pipeline_id,
            ledger,
            series,
        });
    }
    Ok(pipelines)
}

/// Every trace awaiting delivery, oldest first.
fn read_traces(connection: &Connection) -> Result<Vec<StoredTrace>, Distrust> {
    let corrupt = |e: rusqlite::Error| Distrust::Corrupt(e.to_string());
    let mut statement = connection
        .prepare("SELECT seq, body FROM traces ORDER BY seq")
        .map_err(corrupt)?;
    let rows = statement
        .query_map([], |row| {
            Ok(StoredTrace {
                seq: row.get(0)?,
                body: bytes::Bytes::from(row.get::<_, Vec<u8>>(1)?),
            })
        })
        .map_err(corrupt)?;
    rows.collect::<Result<_, _>>().map_err(corrupt)
}

/// Renames the file (and its write-ahead log and shared memory) aside; returns the new name.
fn set_aside(path: &Path) -> Result<String, String> {
    let stamp = crate::clock::unix_now() as u64;
    let aside = format!("{}.rejected-{stamp}", path.display());
    std::fs::rename(path, &aside).map_err(|e| e.to_string())?;
    for suffix in ["-wal", "-shm"] {
        let companion = format!("{}{suffix}", path.display());
        if Path::new(&companion).exists() {
            let _ = std::fs::rename(&companion, format!("{aside}{suffix}"));
        }
    }
    Ok(aside)
}

#[cfg(test)]
impl StateFile {
    /// Makes every later write fail, as on a full disk or a read-only volume.
    pub(super) fn refuse_writes(&self, refuse: bool) {
        let connection = super::series::lock(&self.connection);
        connection
            .pragma_update(None, "query_only", refuse)
            .expect("query_only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::series::Stored;

    const LAYOUT: &str = "layout-1";

    fn projects(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_string()).collect()
    }

    fn stored(name: &str) -> Stored {
        serde_json::from_str(&format!(
            r#"{{"name":"{name}","counted":{{"runs":[[["success"],{{"counts":[1,0],"sum":3.5,"count":1}}]],"missed":2,"queue":null,"pause":null,"stages":{{}},"jobs":[]}},"last":{{"result":"success","duration":3.5,"start":1.0,"end":4.5,"number":7.0,"url":null,"stages":{{}}}}}}"#
        ))
        .expect("a stored pipeline")
    }

    fn row(project: &str, pipeline: &str) -> Row {
        let ledger = RunLedger::new(100.0);
        Row::new("t", project, pipeline, &ledger, &stored(pipeline)).expect("a row")
    }

    fn open(path: &Path, ids: &[&str]) -> Opened {
        StateFile::open(path, &projects(ids), LAYOUT)
    }

    /// A state file in `dir` of project `p` holding pipeline `a`.
    fn file_with_a_row(dir: &Path) -> (PathBuf, StateFile) {
        let path = dir.join("state.db");
        let file = open(&path, &["p"]).file.expect("opened");
        file.write(&[row("p", "a")], &[], &TraceChanges::default())
            .expect("written");
        (path, file)
    }

    fn kinds(opened: &Opened) -> Vec<StateErrorKind> {
        opened.errors.iter().map(StateError::kind).collect()
    }

    fn asides(dir: &Path) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .expect("a directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| {
                name.contains(".rejected-") && !name.ends_with("-wal") && !name.ends_with("-shm")
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn pending_traces_are_kept_with_the_rows_until_settled() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let file = open(&path, &["p"]).file.expect("opened");
        let trace = |seq: i64, body: &'static [u8]| StoredTrace {
            seq,
            body: bytes::Bytes::from_static(body),
        };
        let added = vec![trace(3, b"three"), trace(1, b"one"), trace(2, b"\0two")];
        file.write(
            &[row("p", "a")],
            &[],
            &TraceChanges {
                added,
                settled: Vec::new(),
            },
        )
        .expect("written");
        drop(file);
        let reopened = open(&path, &["p"]);
        assert_eq!(
            reopened.traces,
            [trace(1, b"one"), trace(2, b"\0two"), trace(3, b"three")],
            "oldest first, bytes intact"
        );
        let file = reopened.file.expect("opened");
        file.write(
            &[],
            &[],
            &TraceChanges {
                added: Vec::new(),
                settled: vec![1, 3],
            },
        )
        .expect("settled");
        drop(file);
        assert_eq!(open(&path, &["p"]).traces, [trace(2, b"\0two")]);
    }

    #[test]
    fn what_is_written_is_read_back() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let first = open(&path, &["p"]);
        assert!(first.errors.is_empty() && first.pipelines.is_empty());
        let file = first.file.expect("opened");
        file.write(
            &[row("p", "a"), row("p", "b")],
            &[],
            &TraceChanges::default(),
        )
        .expect("written");
        file.write(
            &[],
            &[("t".into(), "p".into(), "b".into())],
            &TraceChanges::default(),
        )
        .expect("deleted");
        // Another target's row of a pipeline is not deleted in its name.
        file.write(
            &[],
            &[("other".into(), "p".into(), "a".into())],
            &TraceChanges::default(),
        )
        .expect("nothing deleted");
        drop(file);
        let again = open(&path, &["p"]);
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        let pipelines = again.pipelines;
        assert_eq!(pipelines.len(), 1);
        let a = &pipelines[0];
        assert_eq!(
            (
                a.target.as_str(),
                a.project_id.as_str(),
                a.pipeline_id.as_str()
            ),
            ("t", "p", "a")
        );
        assert_eq!(
            serde_json::to_string(&a.series).expect("json"),
            serde_json::to_string(&stored("a")).expect("json")
        );
        assert_eq!(
            serde_json::to_string(&a.ledger).expect("json"),
            serde_json::to_string(&RunLedger::new(100.0)).expect("json")
        );
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        std::fs::write(
            &path,
            b"this is no database, but the operator's bytes ".repeat(200),
        )
        .expect("written");
        let opened = open(&path, &["p"]);
        assert_eq!(kinds(&opened), [StateErrorKind::Corrupt]);
        assert!(opened.file.is_some(), "a new file is started");
        assert!(opened.pipelines.is_empty());
        let aside = asides(dir.path());
        assert_eq!(aside.len(), 1, "{aside:?}");
        let kept = std::fs::read(dir.path().join(&aside[0])).expect("kept aside");
        assert!(kept.starts_with(b"this is no database"), "kept as it was");
        let message = opened.errors[0].to_string();
        assert!(
            message.contains(&path.display().to_string()) && message.contains(&aside[0]),
            "{message}"
        );
    }

    #[test]
    fn a_file_with_a_bad_row_is_kept_aside() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (path, file) = file_with_a_row(dir.path());
        super::super::series::lock(&file.connection)
            .execute("UPDATE pipelines SET ledger = '{not json'", [])
            .expect("damaged");
        drop(file);
        let opened = open(&path, &["p"]);
        assert_eq!(kinds(&opened), [StateErrorKind::Corrupt]);
        assert!(opened.pipelines.is_empty());
        assert_eq!(asides(dir.path()).len(), 1);
    }

    #[test]
    fn another_configurations_file_is_kept_aside() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (path, file) = file_with_a_row(dir.path());
        drop(file);
        // One project still configured: the file is ours.
        let kept = open(&path, &["p", "q"]);
        assert!(kept.errors.is_empty());
        assert_eq!(kept.pipelines.len(), 1);
        drop(kept);
        let foreign = open(&path, &["q"]);
        assert_eq!(kinds(&foreign), [StateErrorKind::Foreign]);
        assert!(foreign.pipelines.is_empty() && foreign.file.is_some());
        assert!(
            foreign.errors[0].to_string().contains("(p)"),
            "{}",
            foreign.errors[0]
        );
        assert_eq!(asides(dir.path()).len(), 1);
    }

    #[test]
    fn another_schema_version_is_kept_aside() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (path, file) = file_with_a_row(dir.path());
        super::super::series::lock(&file.connection)
            .pragma_update(None, "user_version", 99)
            .expect("a later version");
        drop(file);
        let opened = open(&path, &["p"]);
        assert_eq!(kinds(&opened), [StateErrorKind::Version]);
        assert!(opened.errors[0].to_string().contains("version 99"));
        assert!(opened.pipelines.is_empty() && opened.file.is_some());
    }

    #[test]
    fn a_file_that_cannot_be_opened_leaves_the_exporter_without_one() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("no such directory").join("state.db");
        let opened = open(&path, &["p"]);
        assert_eq!(kinds(&opened), [StateErrorKind::Open]);
        assert!(opened.file.is_none());
    }

    #[test]
    fn other_buckets_start_the_counts_again_but_keep_the_ledgers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (path, file) = file_with_a_row(dir.path());
        drop(file);
        let opened = StateFile::open(&path, &projects(&["p"]), "layout-2");
        assert!(opened.errors.is_empty());
        let series = serde_json::to_value(&opened.pipelines[0].series).expect("json");
        assert_eq!(
            series["counted"]["runs"],
            serde_json::json!([]),
            "counts start again"
        );
        assert_eq!(
            series["last"]["number"],
            serde_json::json!(7.0),
            "the last run stays"
        );
    }

    #[test]
    fn a_refused_write_is_an_error_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let file = open(&path, &["p"]).file.expect("opened");
        file.refuse_writes(true);
        let err = file
            .write(&[row("p", "a")], &[], &TraceChanges::default())
            .expect_err("refused");
        assert_eq!(err.kind(), StateErrorKind::Write);
        file.refuse_writes(false);
        drop(file);
        assert!(open(&path, &["p"]).pipelines.is_empty());
    }
}
