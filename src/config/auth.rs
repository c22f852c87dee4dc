//! `[auth]`: the three ways to authenticate, secrets read from `*_file` paths, and the check
//! that the chosen method has its keys and none of another method's.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::common::{ConfigError, ENV_PREFIX, Secret, check_id, invalid};

/// How the exporter authenticates.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A static IAM token sent as `X-Auth-Token` (valid 24 hours).
    Token,
    /// IAM user name and password, exchanged for tokens that are refreshed ahead of expiry.
    Password,
    /// Access key / secret key: every request signed with `SDK-HMAC-SHA256`.
    Aksk,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Token => "token",
            AuthMethod::Password => "password",
            AuthMethod::Aksk => "aksk",
        }
    }
}

/// `[auth]`: the keys of the chosen method; secrets may also come from `*_file` paths.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Which method (see [`AuthMethod`]).
    pub method: AuthMethod,
    /// `token`: the token itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// `token`: a file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `aksk`: access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak: Option<String>,
    /// `aksk`: secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk: Option<Secret>,
    /// `aksk`: a file holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk_file: Option<PathBuf>,
    /// `aksk`: IAM project id, sent as `X-Project-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// `aksk`: security token of temporary credentials, sent as `X-Security-Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token: Option<Secret>,
    /// `aksk`: a file holding the security token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_token_file: Option<PathBuf>,
    /// `password`: IAM user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `password`: the user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// `password`: a file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `password`: account (domain) name the user belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `password`: scope by IAM project name (e.g. `cn-north-4`) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// `password`: ... or by IAM project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_project_id: Option<String>,
}

impl AuthConfig {
    /// Static token credentials (used by tests and the demo).
    pub fn token(token: &str) -> AuthConfig {
        AuthConfig {
            method: AuthMethod::Token,
            token: Some(Secret::new(token)),
            ..AuthConfig::empty(AuthMethod::Token)
        }
    }

    /// No credentials set for `method`.
    pub fn empty(method: AuthMethod) -> AuthConfig {
        AuthConfig {
            method,
            token: None,
            token_file: None,
            ak: None,
            sk: None,
            sk_file: None,
            project_id: None,
            security_token: None,
            security_token_file: None,
            username: None,
            password: None,
            password_file: None,
            domain: None,
            project_name: None,
            iam_project_id: None,
        }
    }

    /// Reads every `*_file` secret into its value, so the rest of the program sees one value.
    pub(super) fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        let pairs = [
            ("auth.token", &mut self.token, &self.token_file),
            ("auth.sk", &mut self.sk, &self.sk_file),
            ("auth.password", &mut self.password, &self.password_file),
            (
                "auth.security_token",
                &mut self.security_token,
                &self.security_token_file,
            ),
        ];
        for (key, value, file) in pairs {
            let Some(path) = file else { continue };
            if value.is_some() {
                return Err(invalid(
                    format!("{key}_file"),
                    format!("set either `{key}` or `{key}_file`, not both"),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|err| {
                invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            *value = Some(Secret::new(text.trim()));
        }
        Ok(())
    }

    /// Checks that the chosen method has what it needs and nothing of another method.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let method = self.method.as_str();
        let required_secret = |key: &str, value: &Option<Secret>| -> Result<(), ConfigError> {
            match value {
                None => Err(invalid(
                    key,
                    format!(
                        "missing: method \"{method}\" needs `{key}` or `{key}_file` (or {ENV_PREFIX}{})",
                        key.replace('.', "__").to_ascii_uppercase()
                    ),
                )),
                Some(secret) if secret.expose().trim().is_empty() => Err(invalid(key, "is empty")),
                Some(_) => Ok(()),
            }
        };
        let required = |key: &str, value: &Option<String>| -> Result<(), ConfigError> {
            match value.as_deref().map(str::trim) {
                None => Err(invalid(
                    key,
                    format!("missing: method \"{method}\" needs it"),
                )),
                Some("") => Err(invalid(key, "is empty")),
                Some(_) => Ok(()),
            }
        };
        let set = |present: bool, key: &str, owner: &str| -> Result<(), ConfigError> {
            if present {
                Err(invalid(
                    key,
                    format!("is only used with method \"{owner}\", but method is \"{method}\""),
                ))
            } else {
                Ok(())
            }
        };
        let token_keys = [("auth.token", self.token.is_some())];
        let aksk_keys = [
            ("auth.ak", self.ak.is_some()),
            ("auth.sk", self.sk.is_some()),
            ("auth.project_id", self.project_id.is_some()),
            ("auth.security_token", self.security_token.is_some()),
        ];
        let password_keys = [
            ("auth.username", self.username.is_some()),
            ("auth.password", self.password.is_some()),
            ("auth.domain", self.domain.is_some()),
            ("auth.project_name", self.project_name.is_some()),
            ("auth.iam_project_id", self.iam_project_id.is_some()),
        ];
        let others: Vec<(&str, bool, &str)> = match self.method {
            AuthMethod::Token => {
                required_secret("auth.token", &self.token)?;
                aksk_keys
                    .iter()
                    .map(|(k, p)| (*k, *p, "aksk"))
                    .chain(password_keys.iter().map(|(k, p)| (*k, *p, "password")))
                    .collect()
            }
            AuthMethod::Aksk => {
                required("auth.ak", &self.ak)?;
                required_secret("auth.sk", &self.sk)?;
                if let Some(id) = &self.project_id {
                    check_id("auth.project_id", id)?;
                }
                token_keys
                    .iter()
                    .map(|(k, p)| (*k, *p, "token"))
                    .chain(password_keys.iter().map(|(k, p)| (*k, *p, "password")))
                    .collect()
            }
            AuthMethod::Password => {
                required("auth.username", &self.username)?;
                required_secret("auth.password", &self.password)?;
                required("auth.domain", &self.domain)?;
                match (&self.project_name, &self.iam_project_id) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "auth.iam_project_id",
                            "set either `auth.project_name` or `auth.iam_project_id`, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "auth.project_name",
                            "missing: method \"password\" needs a scope: `auth.project_name` (e.g. \"cn-north-4\") or `auth.iam_project_id`",
                        ));
                    }
                    (Some(name), None) => required("auth.project_name", &Some(name.clone()))?,
                    (None, Some(id)) => check_id("auth.iam_project_id", id)?,
                }
                token_keys
                    .iter()
                    .map(|(k, p)| (*k, *p, "token"))
                    .chain(aksk_keys.iter().map(|(k, p)| (*k, *p, "aksk")))
                    .collect()
            }
        };
        for (key, present, owner) in others {
            set(present, key, owner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::testing::{PIPELINE, PROJECT, error_of, minimal};

    #[test]
    fn each_auth_method_needs_its_keys_and_only_them() {
        let with_auth = |auth: &str| {
            format!(
                "{auth}\n[[targets]]\nproject_id = \"{PROJECT}\"\npipeline_ids = [\"{PIPELINE}\"]\ninterval = \"30s\"\n"
            )
        };
        let ok = [
            "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"",
            "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"\nsecurity_token = \"ST\"\nproject_id = \"0123456789abcdef0123456789abcdef\"",
            "[auth]\nmethod = \"password\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"d\"\nproject_name = \"cn-north-4\"",
            "[auth]\nmethod = \"password\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"d\"\niam_project_id = \"0123456789abcdef0123456789abcdef\"",
        ];
        for auth in ok {
            if let Err(err) = Config::from_toml(&with_auth(auth)) {
                panic!("{auth}: {err}");
            }
        }
        let bad = [
            ("[auth]\nmethod = \"aksk\"\nak = \"AK\"", "auth.sk"),
            ("[auth]\nmethod = \"aksk\"\nsk = \"SK\"", "auth.ak"),
            (
                "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"\nproject_id = \"x\"",
                "auth.project_id",
            ),
            (
                "[auth]\nmethod = \"password\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"d\"",
                "auth.project_name",
            ),
            (
                "[auth]\nmethod = \"password\"\nusername = \"u\"\ndomain = \"d\"\nproject_name = \"x\"",
                "auth.password",
            ),
            (
                "[auth]\nmethod = \"token\"\ntoken = \"t\"\nak = \"AK\"",
                "auth.ak",
            ),
            (
                "[auth]\nmethod = \"aksk\"\nak = \"AK\"\nsk = \"SK\"\ntoken = \"t\"",
                "auth.token",
            ),
        ];
        for (auth, key) in bad {
            let message = error_of(&with_auth(auth));
            assert!(message.contains(&format!("`{key}`")), "{auth}: {message}");
        }
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").expect("write");
        let text = minimal("interval = \"30s\"").replace(
            "token = \"secret-token-value\"",
            &format!("token_file = {:?}", path.display().to_string()),
        );
        let config = Config::from_toml(&text).expect("valid");
        assert_eq!(
            config.auth.token.as_ref().map(Secret::expose),
            Some("from-file")
        );
    }
}
