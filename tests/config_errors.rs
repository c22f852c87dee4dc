//! A bad configuration exits with code 2 and one message naming the key and the problem.

mod common;

use common::run_with_config;

const PROJECT: &str = "0123456789abcdef0123456789abcdef";
const PIPELINE: &str = "fedcba9876543210fedcba9876543210";

fn valid() -> String {
    format!(
        r#"
[codearts]
region = "cn-north-4"
[auth]
method = "token"
token = "very-secret-token-123"
[[targets]]
project_id = "{PROJECT}"
pipeline_ids = ["{PIPELINE}"]
schedule = "*/30 * * * * *"
"#
    )
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let (code, stdout, stderr) = run_with_config("check-config", &valid(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("token = \"***\""), "{stdout}");
    assert!(!stdout.contains("very-secret-token-123"));
    // Defaults are filled in.
    assert!(stdout.contains("listen = \"0.0.0.0:9732\""), "{stdout}");
    assert!(stdout.contains("status_api = \"v5\""), "{stdout}");
}

#[test]
fn check_config_warns_about_the_legacy_v3_status_api() {
    let (code, _, stderr) = run_with_config("check-config", &valid(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let v3 = valid().replace("schedule =", "status_api = \"v3\"\nschedule =");
    let (code, stdout, stderr) = run_with_config("check-config", &v3, &[]);
    assert_eq!(code, 0, "a warning, not an error: {stderr}");
    assert!(stdout.contains("status_api = \"v3\""), "{stdout}");
    assert!(
        stderr.contains("warning: targets[0].status_api = \"v3\"")
            && stderr.contains("to be taken offline"),
        "{stderr}"
    );
}

#[test]
fn environment_variables_override_the_file() {
    let envs = [
        ("CODEARTS_EXPORTER_AUTH__TOKEN", "from-the-environment"),
        ("CODEARTS_EXPORTER_SERVER__LISTEN", "127.0.0.1:9999"),
        ("CODEARTS_EXPORTER_SHARDING__INDEX", "2"),
        ("CODEARTS_EXPORTER_SHARDING__COUNT", "3"),
    ];
    let without_token = valid().replace("token = \"very-secret-token-123\"", "");
    let (code, stdout, stderr) = run_with_config("check-config", &without_token, &envs);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:9999\""), "{stdout}");
    assert!(
        stdout.contains("[sharding]\nindex = 2\ncount = 3\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("from-the-environment"));
}

#[test]
fn each_kind_of_mistake_exits_2_and_names_the_key() {
    let cases = [
        (
            "unknown key",
            valid().replace("[codearts]", "[codearts]\nregoin = \"x\""),
            "regoin",
        ),
        (
            "bad cron",
            valid().replace("*/30 * * * * *", "every thirty seconds"),
            "targets[0].schedule",
        ),
        (
            "malformed id",
            valid().replace(PIPELINE, "short-id"),
            "targets[0].pipeline_ids[0]",
        ),
        (
            "missing token",
            valid().replace("token = \"very-secret-token-123\"", ""),
            "auth.token",
        ),
        (
            "empty target list",
            valid()
                .split("[[targets]]")
                .next()
                .expect("head")
                .to_string(),
            "targets",
        ),
        (
            "bad duration",
            valid().replace("[codearts]", "[codearts]\ntimeout = \"ten\""),
            "codearts.timeout",
        ),
        (
            "bad regular expression",
            valid().replace(
                "schedule = ",
                "discover = true\ninclude = \"(unclosed\"\nschedule = ",
            ),
            "targets.0.include",
        ),
        (
            "neither ids nor discovery",
            valid().replace(&format!("[\"{PIPELINE}\"]"), "[]"),
            "targets[0].pipeline_ids",
        ),
        (
            "no request rate",
            valid().replace("[codearts]", "[codearts]\nmax_requests_per_second = 0"),
            "codearts.max_requests_per_second",
        ),
        (
            "no request slots",
            valid().replace("[codearts]", "[codearts]\nmax_concurrent_requests = 0"),
            "codearts.max_concurrent_requests",
        ),
    ];
    for (what, text, key) in cases {
        for subcommand in ["check-config", "run"] {
            let (code, _, stderr) = run_with_config(subcommand, &text, &[]);
            assert_eq!(code, 2, "{what} ({subcommand}): {stderr}");
            assert!(
                stderr.contains(&format!("`{key}`")),
                "{what} ({subcommand}): {stderr:?} should name `{key}`"
            );
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{what}: one message, got {stderr:?}"
            );
            assert!(
                !stderr.contains("very-secret-token-123"),
                "{what}: secret in {stderr:?}"
            );
        }
    }
}

#[test]
fn a_missing_file_exits_2() {
    let output = std::process::Command::new(common::binary())
        .args(["check-config", "--config", "/nonexistent/codearts.toml"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/codearts.toml"));
}
