//! CodeArts Pipeline API: client, authentication, typed models.
//!
//! The files depend on each other one way: `client` uses `auth`; both use `requests` (the one
//! request path: rate limit, retries, accounting); all three use `body` (capped reads), `error`
//! (error shaping) and `api` (the APIs' names, the observer every exchange is reported to, and
//! its label values), which use none of those three; `error` uses `api` (and `wire`), and `api`
//! uses nothing.

mod api;
mod auth;
mod body;
mod client;
mod error;
pub mod model;
mod requests;
pub mod sign;
#[cfg(test)]
pub(crate) mod testing;
pub mod time;
mod wire;

pub use api::{Api, ErrorKind, RequestObserver, RetryReason};
pub use client::{Client, RunSelector};
pub use error::Error;
pub use requests::Priority;
