//! codearts-exporter: a Prometheus exporter for Huawei Cloud CodeArts Pipeline.
//!
//! Data flows `config` → `codearts` (API client) → `schedule` (when) → `poller` (what to fetch,
//! driving the `recording` state machine) → `store` (every pipeline's state and series) →
//! `metrics` → `exposition` → `server`; `fleet` runs the pollers (`reload` says when the
//! configuration files are due again), and [`run`] runs everything.
//! `simulator` is a faithful stand-in for the CodeArts API used by tests and the demo; it and
//! `demo` exist only with the `simulator` feature (on by default).

// Input from the network, files and users must never panic the exporter; tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backoff;
pub mod clock;
pub mod codearts;
pub mod config;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod exposition;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod poller;
pub mod proto;
pub mod recording;
pub mod reload;
pub mod run;
pub mod schedule;
pub mod server;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod store;
pub mod traces;
pub mod web_config;

pub use run::{ConfigFile, RunError, run};
