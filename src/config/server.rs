//! `[server]`: where the exporter's own HTTP server listens.

use std::net::SocketAddr;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}
