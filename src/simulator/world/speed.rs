//! How fast the world runs: durations as CodeArts would take them (nominal) to real ones.

/// Nominal seconds to real milliseconds at `speed`; at least 1 ms so phases stay ordered.
pub(super) fn real_ms(nominal_seconds: f64, speed: f64) -> i64 {
    ((nominal_seconds * 1000.0 / speed).round() as i64).max(1)
}
