//! CodeArts Pipeline API: client, authentication, typed models.
//!
//! The files depend on each other one way: `client` uses `auth`; both use `body` (capped
//! reads), `error` (error shaping) and `api` (the APIs' names and the observer the client
//! reports to), which use neither.

mod api;
mod auth;
mod body;
mod client;
mod error;
pub mod model;
pub mod sign;
pub mod time;
mod wire;

pub use api::{Api, RequestObserver};
pub use client::{Client, Priority, RunSelector};
pub use error::Error;
