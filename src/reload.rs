//! When a file-backed configuration reloads: on SIGHUP, or when the content of one of its files
//! changed. Compared by content: a Kubernetes ConfigMap or Secret update swaps a symlink, and
//! editors and certificate tools replace files, so times and inodes are not reliable.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Interval, MissedTickBehavior};

/// How often the files are compared with what was loaded.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Says when a set of files is due for a reload.
pub struct ReloadTrigger {
    files: Vec<PathBuf>,
    /// Their content as last loaded (`None`: unreadable then).
    loaded: Vec<Option<Vec<u8>>>,
    hangups: Option<Signal>,
    ticks: Interval,
}

impl ReloadTrigger {
    /// Watches SIGHUP and `files` as they are now; `what` names them in the warning logged when
    /// SIGHUP cannot be watched.
    pub fn new(files: Vec<PathBuf>, what: &str) -> ReloadTrigger {
        let hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGHUP; {what} reloads on file changes only");
                None
            }
        };
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let loaded = contents(&files);
        ReloadTrigger {
            files,
            loaded,
            hangups,
            ticks,
        }
    }

    /// Waits for SIGHUP, or for a check that finds every file readable and one changed; returns
    /// which.
    pub async fn next(&mut self) -> &'static str {
        loop {
            let hangup = async {
                match self.hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hangup => return "SIGHUP",
                _ = self.ticks.tick() => {
                    let now = contents(&self.files);
                    if now.iter().all(Option::is_some) && now != self.loaded {
                        return "file changed";
                    }
                }
            }
        }
    }

    /// A reload was tried: `files`, as they are now, are what to compare with from now on (so a
    /// file that failed to load is not tried again until it changes).
    pub fn loaded(&mut self, files: Vec<PathBuf>) {
        self.loaded = contents(&files);
        self.files = files;
    }
}

fn contents(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|file| std::fs::read(file).ok()).collect()
}
