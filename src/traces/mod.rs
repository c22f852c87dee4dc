//! Traces of completed runs, over OTLP/HTTP, and the ids that link exemplars to them.

pub mod export;
pub mod ids;
pub mod otlp;
