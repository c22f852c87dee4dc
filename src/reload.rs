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
    /// Their content when the last reload was due, read before that reload read them
    /// (`None`: unreadable then). A file written while a reload reads it differs from this, so
    /// it is loaded again at the next check rather than never.
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
    /// which. The files as they are then are what later checks compare with: a version that
    /// fails to load is not tried again until it changes.
    pub async fn next(&mut self) -> &'static str {
        loop {
            let hangup = async {
                match self.hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hangup => {
                    self.loaded = contents(&self.files);
                    return "SIGHUP";
                }
                _ = self.ticks.tick() => {
                    let now = contents(&self.files);
                    if now.iter().all(Option::is_some) && now != self.loaded {
                        self.loaded = now;
                        return "file changed";
                    }
                }
            }
        }
    }

    /// A reload brought a new set of files to watch (a web configuration naming other
    /// certificates). Files already watched keep the content read when the reload was due;
    /// new ones are read now.
    pub fn watch(&mut self, files: Vec<PathBuf>) {
        if files == self.files {
            return;
        }
        let loaded = files
            .iter()
            .map(
                |file| match self.files.iter().position(|known| known == file) {
                    Some(index) => self.loaded[index].clone(),
                    None => std::fs::read(file).ok(),
                },
            )
            .collect();
        self.loaded = loaded;
        self.files = files;
    }
}

fn contents(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|file| std::fs::read(file).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (in paused time) for the trigger's next reload, or `None` after four checks.
    async fn due(trigger: &mut ReloadTrigger) -> Option<&'static str> {
        tokio::time::timeout(4 * CHECK_EVERY, trigger.next())
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_written_while_a_reload_reads_it_is_loaded_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        std::fs::write(&key, "key 1").expect("write");
        std::fs::write(&cert, "cert 1").expect("write");
        let mut trigger = ReloadTrigger::new(vec![key.clone(), cert.clone()], "test files");
        assert_eq!(due(&mut trigger).await, None, "nothing changed");

        // The key is written; the reload it triggers reads the old certificate, which is written
        // just after: the next check must see that.
        std::fs::write(&key, "key 2").expect("write");
        assert_eq!(due(&mut trigger).await, Some("file changed"));
        std::fs::write(&cert, "cert 2").expect("write");
        assert_eq!(due(&mut trigger).await, Some("file changed"));
        // Once loaded, a version is not tried again until it changes.
        assert_eq!(due(&mut trigger).await, None);

        // A new set of files: the known one keeps what the reload saw, the new one is read now.
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "ca 1").expect("write");
        std::fs::write(&cert, "cert 3").expect("write");
        trigger.watch(vec![cert.clone(), ca.clone()]);
        assert_eq!(due(&mut trigger).await, Some("file changed"), "cert 3");
        assert_eq!(due(&mut trigger).await, None);
        std::fs::write(&ca, "ca 2").expect("write");
        assert_eq!(due(&mut trigger).await, Some("file changed"), "ca 2");
    }
}
