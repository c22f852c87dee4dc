//! Helpers shared by the unit tests of the CodeArts client and of the simulator: the vendor
//! SDK's signing vectors.

use std::path::PathBuf;

use serde_json::Value;

/// The vectors of `aksk-signing-vectors.json`, or of the file `CODEARTS_TEST_SIGNING_VECTORS`
/// names (same format).
pub(crate) fn signing_vectors() -> Vec<Value> {
    vectors("CODEARTS_TEST_SIGNING_VECTORS", "aksk-signing-vectors.json")
}

/// The vectors of `sigv-public.json`, or of the file `CODEARTS_TEST_SIGV_VECTORS` names (same
/// format).
pub(crate) fn sigv_vectors() -> Vec<Value> {
    vectors("CODEARTS_TEST_SIGV_VECTORS", "sigv-public.json")
}

/// The `vectors` array of the file the environment variable `var` names, else of
/// `tests/fixtures/<name>`. Panics, naming the file, when it cannot be read or parsed, or has no
/// vectors: a test with no vectors fails rather than passing on zero.
fn vectors(var: &str, name: &str) -> Vec<Value> {
    let path = match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
            .iter()
            .collect(),
    };
    let shown = path.display();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("signing vectors {shown}: {err}"));
    let mut file: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("signing vectors {shown}: not JSON: {err}"));
    match file.get_mut("vectors").map(Value::take) {
        Some(Value::Array(vectors)) if !vectors.is_empty() => vectors,
        Some(Value::Array(_)) => panic!("signing vectors {shown}: the `vectors` array is empty"),
        _ => panic!("signing vectors {shown}: no `vectors` array"),
    }
}
