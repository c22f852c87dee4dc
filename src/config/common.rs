//! What every section of the configuration shares: the error naming a key, secrets, ids, and
//! the prefix of the environment variables.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "CODEARTS_EXPORTER_";

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the expected shape.
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("invalid value for `{key}`: {problem}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `targets[0].schedule`.
        key: String,
        /// What is wrong, in words a user can act on.
        problem: String,
    },
}

pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A secret string: printed as `***` by Debug, Display and Serialize.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is sent to the API.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// CodeArts ids are 32 characters of digits and lower-case letters.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

pub(super) fn check_id(key: &str, id: &str) -> Result<(), ConfigError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{id:?} is not a CodeArts id (32 characters of digits and lower-case letters)"),
        ))
    }
}
