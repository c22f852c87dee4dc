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
        (
            "CODEARTS_EXPORTER_STATE__PATH",
            "/var/lib/codearts-exporter/state.db",
        ),
    ];
    let without_token = valid().replace("token = \"very-secret-token-123\"", "");
    let (code, stdout, stderr) = run_with_config("check-config", &without_token, &envs);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("listen = \"127.0.0.1:9999\""), "{stdout}");
    assert!(
        stdout.contains("[sharding]\nindex = 2\ncount = 3\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[state]\npath = \"/var/lib/codearts-exporter/state.db\"\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("from-the-environment"));
}

#[test]
fn the_state_file_is_optional_and_need_not_exist_at_load() {
    let (code, stdout, stderr) = run_with_config("check-config", &valid(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("[state]"), "no state kept: {stdout}");
    // The store copes with a file it cannot open when it starts: not a configuration error.
    let elsewhere = format!("{}[state]\npath = \"/nonexistent/dir/state.db\"\n", valid());
    let (code, stdout, stderr) = run_with_config("check-config", &elsewhere, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("path = \"/nonexistent/dir/state.db\""),
        "{stdout}"
    );
    // An empty variable is an empty path, not "no state".
    let envs = [("CODEARTS_EXPORTER_STATE__PATH", "")];
    let (code, _, stderr) = run_with_config("check-config", &valid(), &envs);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`state.path`"), "{stderr}");
}

/// `valid()` plus a target named "b" of the same project listing `pipelines`.
fn with_second_target(pipelines: &str) -> String {
    format!(
        "{}[[targets]]\nname = \"b\"\nproject_id = \"{PROJECT}\"\npipeline_ids = [{pipelines}]\n\
         interval = \"1m\"\n",
        valid()
    )
}

#[test]
fn a_pipeline_listed_by_two_targets_names_both_and_the_pipeline() {
    let (code, _, stderr) = run_with_config(
        "check-config",
        &with_second_target(&format!("\"{PIPELINE}\"")),
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "configuration error: invalid value for `targets[1].pipeline_ids[0]`: targets[1] \
             (name \"b\") and targets[0] (no name: target \"{PROJECT}\") both list pipeline \
             {PIPELINE} of project {PROJECT}; a pipeline may be polled by one target only"
        )
    );
    // Another pipeline of the same project is fine.
    let other = "\"00112233445566778899aabbccddeeff\"";
    let (code, _, stderr) = run_with_config("check-config", &with_second_target(other), &[]);
    assert_eq!(code, 0, "{stderr}");
}

/// `valid()` plus a `[[deployments]]` of each of `entries`.
fn with_deployments(entries: &[&str]) -> String {
    let mut text = valid();
    for entry in entries {
        text.push_str(&format!("[[deployments]]\n{entry}\n"));
    }
    text
}

#[test]
fn check_config_lists_the_deployments() {
    let text = with_deployments(&[
        &format!(
            "environment = \"production\"\npipeline_ids = [\"{PIPELINE}\"]\nbranches = [\"main\"]"
        ),
        "environment = \"staging\"\ninclude = \"(?i)staging\"",
    ]);
    let (code, stdout, stderr) = run_with_config("check-config", &text, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!(
            "[[deployments]]\nenvironment = \"production\"\npipeline_ids = [\"{PIPELINE}\"]\n\
             branches = [\"main\"]\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("[[deployments]]\nenvironment = \"staging\"\ninclude = \"(?i)staging\"\n"),
        "{stdout}"
    );
    // None configured: none listed.
    let (_, stdout, _) = run_with_config("check-config", &valid(), &[]);
    assert!(!stdout.contains("deployments"), "{stdout}");
}

#[test]
fn a_pipeline_in_two_environments_names_both_entries_and_the_pipeline() {
    let text = with_deployments(&[
        &format!("environment = \"y\"\npipeline_ids = [\"{PIPELINE}\"]"),
        &format!("environment = \"x\"\npipeline_ids = [\"{PIPELINE}\"]"),
    ]);
    let (code, _, stderr) = run_with_config("check-config", &text, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "configuration error: invalid value for `deployments[1].pipeline_ids[0]`: \
             deployments[1] (environment \"x\") and deployments[0] (environment \"y\") both \
             select pipeline {PIPELINE}; a pipeline belongs to one environment"
        )
    );
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
            "a pipeline listed by two targets of its project",
            with_second_target(&format!("\"{PIPELINE}\"")),
            "targets[1].pipeline_ids[0]",
        ),
        (
            "empty state path",
            format!("{}[state]\npath = \"\"\n", valid()),
            "state.path",
        ),
        (
            "no request slots",
            valid().replace("[codearts]", "[codearts]\nmax_concurrent_requests = 0"),
            "codearts.max_concurrent_requests",
        ),
        (
            "a deployment without an environment",
            with_deployments(&["environment = \"\"\ninclude = \"deploy\""]),
            "deployments[0].environment",
        ),
        (
            "a deployment that selects nothing",
            with_deployments(&["environment = \"production\"\nbranches = [\"main\"]"]),
            "deployments[0]",
        ),
        (
            "a deployment's bad regular expression",
            with_deployments(&["environment = \"production\"\ninclude = \"(unclosed\""]),
            "deployments[0].include",
        ),
        (
            "a pipeline in two environments",
            with_deployments(&[
                &format!("environment = \"staging\"\npipeline_ids = [\"{PIPELINE}\"]"),
                &format!("environment = \"production\"\npipeline_ids = [\"{PIPELINE}\"]"),
            ]),
            "deployments[1].pipeline_ids[0]",
        ),
        (
            "a bad repo endpoint",
            valid().replace("[codearts]", "[codearts]\nrepo_endpoint = \"codehub\""),
            "codearts.repo_endpoint",
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

#[test]
fn traces_come_from_the_file_or_the_environment_and_their_headers_stay_secret() {
    let with_traces = format!(
        "{}[traces]\nendpoint = \"http://otel-collector:4318\"\n\
         headers = {{ \"Authorization\" = \"Bearer header-secret-in-file\" }}\n",
        valid()
    );
    let (code, stdout, stderr) = run_with_config("check-config", &with_traces, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("endpoint = \"http://otel-collector:4318\""),
        "{stdout}"
    );
    assert!(stdout.contains("Authorization = \"***\""), "{stdout}");
    assert!(!stdout.contains("header-secret-in-file") && !stderr.contains("header-secret-in-file"));

    let envs = [
        (
            "CODEARTS_EXPORTER_TRACES__ENDPOINT",
            "https://traces.example:4318",
        ),
        ("CODEARTS_EXPORTER_TRACES__TIMEOUT", "3s"),
        ("CODEARTS_EXPORTER_TRACES__MAX_PENDING_RUNS", "5"),
        (
            "CODEARTS_EXPORTER_TRACES__HEADERS__X_SCOPE_ORGID",
            "header-secret-from-env",
        ),
    ];
    let (code, stdout, stderr) = run_with_config("check-config", &valid(), &envs);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("endpoint = \"https://traces.example:4318\""),
        "{stdout}"
    );
    assert!(stdout.contains("timeout = \"3s\""), "{stdout}");
    assert!(stdout.contains("max_pending_runs = 5"), "{stdout}");
    assert!(stdout.contains("x_scope_orgid = \"***\""), "{stdout}");
    assert!(
        !stdout.contains("header-secret-from-env") && !stderr.contains("header-secret-from-env")
    );

    // A bad endpoint from the environment names the key.
    let envs = [("CODEARTS_EXPORTER_TRACES__ENDPOINT", "otel-collector:4318")];
    let (code, _, stderr) = run_with_config("check-config", &valid(), &envs);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`traces.endpoint`"), "{stderr}");
}
