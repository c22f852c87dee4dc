//! Seeded draws and ids: every generated value comes from an RNG seeded from the simulator seed,
//! so a seed always gives the same world.

use fastrand::Rng;

/// SplitMix64 finaliser: spreads seeds so nearby inputs give unrelated RNG streams.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from `seed` and `salt`.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    splitmix64(seed ^ splitmix64(salt))
}

/// 32 lower-case hex digits, the shape of every CodeArts id.
pub(crate) fn hex_id(rng: &mut Rng) -> String {
    hex_digits(rng, 32)
}

pub(super) fn hex_digits(rng: &mut Rng, len: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..len).map(|_| DIGITS[rng.usize(..16)] as char).collect()
}

/// An id that is a pure function of `seed` and `path`: per-run ids need no storage.
pub(crate) fn derived_id(seed: u64, path: &[u64]) -> String {
    let derived = path.iter().fold(seed, |acc, part| mix(acc, *part));
    hex_id(&mut Rng::with_seed(derived))
}

/// A job or step identifier as the console creates them: creation ms followed by a UUID.
pub(super) fn identifier(rng: &mut Rng, created_ms: i64) -> String {
    format!(
        "{created_ms}{}-{}-{}-{}-{}",
        hex_digits(rng, 8),
        hex_digits(rng, 4),
        hex_digits(rng, 4),
        hex_digits(rng, 4),
        hex_digits(rng, 12)
    )
}

pub(super) fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id(5, &[1, 2]), derived_id(5, &[1, 2]));
        assert_ne!(derived_id(5, &[1, 2]), derived_id(5, &[2, 1]));
        assert_eq!(derived_id(5, &[1]).len(), 32);
    }
}
