//! Configurations shared by the configuration's unit tests.

/// A valid project id.
pub(super) const PROJECT: &str = "0123456789abcdef0123456789abcdef";
/// A valid pipeline id.
pub(super) const PIPELINE: &str = "fedcba9876543210fedcba9876543210";

/// A valid configuration with one token and one target, plus `extra_target` in the target.
pub(super) fn minimal(extra_target: &str) -> String {
    format!(
        r#"
[auth]
method = "token"
token = "secret-token-value"
[[targets]]
project_id = "{PROJECT}"
pipeline_ids = ["{PIPELINE}"]
{extra_target}
"#
    )
}

/// The error `text` is rejected with; panics if it is accepted.
pub(super) fn error_of(text: &str) -> String {
    match super::Config::from_toml(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(err) => err.to_string(),
    }
}
