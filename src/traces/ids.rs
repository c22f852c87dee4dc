//! Deterministic trace and span ids: derived by SHA-256 from the ids CodeArts gives a run, so a
//! trace exported again (after a crash, say) carries the same ids, and an exemplar names the
//! trace of its run without anything stored beside it.

use sha2::{Digest, Sha256};

/// What identifies a run across CodeArts: its project, pipeline, and run id (v5) or, where the
/// API gives no run id (v3), its run number.
#[derive(Debug, Clone, Copy)]
pub struct RunKey<'a> {
    /// The project id.
    pub project_id: &'a str,
    /// The pipeline id.
    pub pipeline_id: &'a str,
    /// The run id, or the run number as text.
    pub run: &'a str,
}

/// SHA-256 over a domain tag and the parts, each ended by a NUL (no part holds one), so that
/// no two lists of parts hash alike.
fn digest(tag: &str, parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(tag.as_bytes());
    hasher.update([0]);
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().into()
}

/// The first `N` bytes of `bytes`, made non-zero (an all-zero id is invalid in OTLP).
fn prefix<const N: usize>(bytes: [u8; 32]) -> [u8; N] {
    let mut id = [0u8; N];
    id.copy_from_slice(&bytes[..N]);
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

impl RunKey<'_> {
    /// The trace id of the run.
    pub fn trace_id(&self) -> [u8; 16] {
        prefix(digest(
            "codearts-exporter/trace",
            &[self.project_id, self.pipeline_id, self.run],
        ))
    }

    /// The trace id as 32 lowercase hex digits (as exemplars and backends show it).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id())
    }

    /// The span id of the run's root span.
    pub fn run_span_id(&self) -> [u8; 8] {
        self.span_id("run", &[])
    }

    /// The span id of a part of the run: `kind` (`queue`, `stage`, `job`) and the ids that
    /// name it within the run (a stage's id or name; a stage's and a job's).
    pub fn span_id(&self, kind: &str, names: &[&str]) -> [u8; 8] {
        let mut parts = vec![self.project_id, self.pipeline_id, self.run, kind];
        parts.extend_from_slice(names);
        prefix(digest("codearts-exporter/span", &parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: RunKey<'static> = RunKey {
        project_id: "p",
        pipeline_id: "q",
        run: "r",
    };

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(KEY.trace_id(), KEY.trace_id());
        assert_eq!(KEY.trace_id_hex().len(), 32);
        let other = RunKey { run: "r2", ..KEY };
        assert_ne!(KEY.trace_id(), other.trace_id());
        // Parts do not run into each other: ("p", "qr") is not ("pq", "r").
        let shifted = RunKey {
            project_id: "pq",
            pipeline_id: "",
            run: "r",
        };
        assert_ne!(KEY.trace_id(), shifted.trace_id());
        assert_ne!(KEY.run_span_id(), KEY.span_id("stage", &["build"]));
        assert_ne!(
            KEY.span_id("stage", &["build"]),
            KEY.span_id("job", &["build"])
        );
    }

    /// The ids are part of the contract with trace backends (a re-export must match what was
    /// sent before an upgrade): a change of derivation shows here.
    #[test]
    fn the_derivation_does_not_change() {
        // sha256("codearts-exporter/trace\0p\0q\0r\0"), first 16 bytes (Python's hashlib).
        assert_eq!(KEY.trace_id_hex(), "cd282f3d879800024df99ceb09b963b6");
        // sha256("codearts-exporter/span\0p\0q\0r\0run\0"), first 8 bytes.
        assert_eq!(hex::encode(KEY.run_span_id()), "fd4c1b6e945da0b0");
    }
}
