//! `[state]`: where the exporter keeps what must survive a restart (each pipeline's run ledger
//! and counted series), so that counters go on where they stopped.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::{ConfigError, invalid};

/// `[state]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The state file (SQLite); none keeps everything in memory, so a restart starts afresh.
    /// Only an empty path is refused here: a file that cannot be opened is logged, kept aside
    /// and replaced when the exporter starts, never a reason not to start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl StateConfig {
    /// Whether no key is set: the effective configuration then leaves the section out, as it
    /// leaves out other unset optional keys.
    pub fn is_unset(&self) -> bool {
        self.path.is_none()
    }

    /// Checks what a parse cannot: a path, when given, is not empty.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match &self.path {
            Some(path) if path.as_os_str().is_empty() => Err(invalid(
                "state.path",
                "is empty: name the state file, or leave the key out to keep no state",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::config::testing::{error_of, minimal};

    /// `minimal` with a `[state]` section holding `body`.
    fn with_state(body: &str) -> String {
        minimal("interval = \"30s\"").replace("[auth]", &format!("[state]\n{body}\n[auth]"))
    }

    #[test]
    fn the_state_path_is_optional_and_read_as_written() {
        let config = Config::from_toml(&minimal("interval = \"30s\"")).expect("valid");
        assert_eq!(config.state.path, None);
        assert!(!config.redacted_toml().contains("[state]"));
        let config = Config::from_toml(&with_state("")).expect("an empty section");
        assert_eq!(config.state.path, None);
        let config = Config::from_toml(&with_state(
            "path = \"/var/lib/codearts-exporter/state.db\"",
        ))
        .expect("valid");
        assert_eq!(
            config.state.path.as_deref(),
            Some(Path::new("/var/lib/codearts-exporter/state.db"))
        );
        assert!(
            config
                .redacted_toml()
                .contains("[state]\npath = \"/var/lib/codearts-exporter/state.db\"\n"),
            "{}",
            config.redacted_toml()
        );
        // A file that does not exist (or cannot be opened) is the store's business, not a
        // reason to refuse the configuration.
        let config =
            Config::from_toml(&with_state("path = \"/nonexistent/dir/state.db\"")).expect("valid");
        assert!(config.state.path.is_some());
    }

    #[test]
    fn an_empty_path_or_an_unknown_key_names_the_key() {
        let message = error_of(&with_state("path = \"\""));
        assert!(message.contains("`state.path`"), "{message}");
        assert!(message.contains("is empty"), "{message}");
        let message = error_of(&with_state("file = \"state.db\""));
        assert!(message.contains("file"), "{message}");
        let message = error_of(&with_state("path = 3"));
        assert!(message.contains("`state.path`"), "{message}");
    }
}
