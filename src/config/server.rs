//! `[server]`: where the exporter's own HTTP server listens.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default listen port of the exporter's HTTP server.
pub const DEFAULT_PORT: u16 = 9732;

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the /metrics server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// exporter-toolkit web configuration (TLS, basic auth, headers); `--web.config.file`
    /// overrides it. Read again on SIGHUP and when it or its certificates change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_config_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            web_config_file: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}
