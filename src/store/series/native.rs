//! Native histogram buckets: exponential buckets whose bounds are powers of 2^(2^-schema), kept
//! sparse beside a histogram's classic buckets and sent only in the protobuf exposition.
//!
//! Schema 4 to begin with: sixteen buckets per power of two, each bound 2^(1/16) ≈ 1.0443 times
//! the one below, so any value in a bucket is within 4.5% of any other and a quantile read from
//! the buckets is within 5% of the true one. Past [`MAX_BUCKETS`] populated buckets the
//! resolution is halved (schema 3, 2, …), neighbouring buckets merged, as the client libraries
//! do: a histogram spanning more than ten powers of two (1 s to 17 min at schema 4) trades
//! resolution for a bounded size.

use serde::{Deserialize, Serialize};

use crate::proto::BucketSpan;

/// The schema a histogram begins with.
pub const SCHEMA: i8 = 4;
/// The lowest schema the format defines (buckets 2^16 wide): reduction stops there.
const MIN_SCHEMA: i8 = -4;
/// Populated buckets a histogram may have before its resolution is halved.
pub const MAX_BUCKETS: usize = 160;
/// Observations of at most this magnitude (2^-128) are counted in the zero bucket: in effect
/// the zero durations (a stage that started and ended in the same millisecond). Positive, so
/// that Prometheus reads an empty histogram as native.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// Native buckets of one histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Native {
    /// The current resolution.
    pub schema: i8,
    /// Observations within [`ZERO_THRESHOLD`] of 0.
    pub zero: u64,
    /// Populated buckets of positive observations: (index, count), by index.
    pub positive: Vec<(i32, u64)>,
    /// Populated buckets of negative observations, by the index of their magnitude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negative: Vec<(i32, u64)>,
}

impl Default for Native {
    fn default() -> Native {
        Native {
            schema: SCHEMA,
            zero: 0,
            positive: Vec::new(),
            negative: Vec::new(),
        }
    }
}

impl Native {
    /// Counts `value` in its bucket; a NaN or infinite value, which no duration is, only in the
    /// histogram's count and sum (the format's way for what has no bucket).
    pub fn observe(&mut self, value: f64, max_buckets: usize) {
        self.add(value, 1);
        self.reduce(max_buckets);
    }

    /// Counts `value` `times`, without reducing.
    fn add(&mut self, value: f64, times: u64) {
        if value.is_nan() || value.is_infinite() || times == 0 {
            return;
        }
        if value.abs() <= ZERO_THRESHOLD {
            self.zero += times;
            return;
        }
        let (buckets, magnitude) = if value > 0.0 {
            (&mut self.positive, value)
        } else {
            (&mut self.negative, -value)
        };
        let key = index(magnitude, self.schema);
        match buckets.binary_search_by_key(&key, |(index, _)| *index) {
            Ok(at) => buckets[at].1 += times,
            Err(at) => buckets.insert(at, (key, times)),
        }
    }

    /// Halves the resolution until at most `max_buckets` buckets are populated.
    fn reduce(&mut self, max_buckets: usize) {
        while self.positive.len() + self.negative.len() > max_buckets && self.schema > MIN_SCHEMA {
            halve(&mut self.positive);
            halve(&mut self.negative);
            self.schema -= 1;
        }
    }

    /// Observations in buckets (NaN and infinite ones are in none).
    pub fn total(&self) -> u64 {
        let sum = |buckets: &[(i32, u64)]| buckets.iter().map(|(_, count)| count).sum::<u64>();
        self.zero + sum(&self.positive) + sum(&self.negative)
    }

    /// Native buckets rebuilt from classic ones, for a histogram kept before it had native
    /// buckets: each bucket's observations at its bound; those above the last bound in the
    /// native bucket after it, or, without bounds, at the mean. The count matches the classic
    /// one; the resolution is the classic one's until new observations outweigh them.
    pub fn from_classic(bounds: &[f64], counts: &[u64], count: u64, sum: f64) -> Native {
        let mut native = Native::default();
        let mut bucketed = 0;
        for (bound, times) in bounds.iter().zip(counts) {
            native.add(*bound, *times);
            bucketed += times;
        }
        let above = count.saturating_sub(bucketed);
        match bounds.last() {
            Some(last) if *last > ZERO_THRESHOLD => {
                let next = upper_bound(index(*last, native.schema) + 1, native.schema);
                native.add(next, above);
            }
            Some(last) => native.add(*last, above),
            None if count > 0 => native.add(sum / count as f64, above),
            None => {}
        }
        native.reduce(MAX_BUCKETS);
        native
    }
}

/// The buckets' spans and count deltas as the format has them, into `spans` and `deltas`
/// (emptied first): a span goes on over gaps of up to two empty buckets (cheaper than a new
/// span), and each count is the difference from the previous bucket's.
pub fn spans_and_deltas(
    buckets: &[(i32, u64)],
    spans: &mut Vec<BucketSpan>,
    deltas: &mut Vec<i64>,
) {
    spans.clear();
    deltas.clear();
    let mut previous_count = 0i64;
    let mut previous_index: Option<i32> = None;
    let mut push = |deltas: &mut Vec<i64>, count: i64| {
        deltas.push(count - previous_count);
        previous_count = count;
    };
    for &(index, count) in buckets {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        match (previous_index, spans.last_mut()) {
            (Some(previous), Some(span)) if index - previous <= 3 => {
                for _ in previous + 1..index {
                    push(deltas, 0);
                }
                let length = span.length.unwrap_or(0);
                span.length = Some(length + u32::try_from(index - previous).unwrap_or(0));
            }
            (previous, _) => spans.push(BucketSpan {
                offset: Some(previous.map_or(index, |previous| index - previous - 1)),
                length: Some(1),
            }),
        }
        push(deltas, count);
        previous_index = Some(index);
    }
}

/// Merges each pair of buckets into one of half the resolution: bucket `i` at schema `s` lies
/// within bucket ⌈i/2⌉ at `s - 1`.
fn halve(buckets: &mut Vec<(i32, u64)>) {
    let mut merged: Vec<(i32, u64)> = Vec::with_capacity(buckets.len());
    for &(index, count) in buckets.iter() {
        let index = (index + 1).div_euclid(2);
        match merged.last_mut() {
            Some((last, total)) if *last == index => *total += count,
            _ => merged.push((index, count)),
        }
    }
    *buckets = merged;
}

/// 2^(m/n) for 0 ≤ m ≤ n: the bounds within one power of two (1 to 2). Both [`index`] and
/// [`upper_bound`] use it, so a bound always lands in the bucket it ends.
fn within_octave(m: i32, n: i32) -> f64 {
    2f64.powf(f64::from(m) / f64::from(n))
}

/// `value` (positive, finite, normal) as `g · 2^e` with 1 ≤ g < 2.
fn split(value: f64) -> (f64, i32) {
    const MANTISSA: u64 = (1 << 52) - 1;
    let bits = value.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scaled into the normal range first (below the zero threshold anyway).
        let (g, e) = split(value * 2f64.powi(64));
        return (g, e - 64);
    }
    (
        f64::from_bits((bits & MANTISSA) | (1023 << 52)),
        biased - 1023,
    )
}

/// The index of the bucket that holds `value` (positive and finite) at `schema`: the bucket
/// `i` whose bounds are 2^((i-1)·2^-schema) < value ≤ 2^(i·2^-schema). An exact bound belongs to
/// the bucket it ends.
pub fn index(value: f64, schema: i8) -> i32 {
    let (g, e) = split(value);
    if schema > 0 {
        let n = 1i32 << schema;
        // The first bound within the octave at or above g.
        let (mut low, mut high) = (0, n);
        while low < high {
            let middle = (low + high) / 2;
            if within_octave(middle, n) < g {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        e * n + low
    } else {
        // ⌈log2 value⌉, exactly: e, or e + 1 unless value is a power of two.
        let ceiling = if g == 1.0 { e } else { e + 1 };
        let width = 1i32 << -schema;
        (ceiling + width - 1).div_euclid(width)
    }
}

/// The upper bound of bucket `index` at `schema`: 2^(index·2^-schema).
pub fn upper_bound(index: i32, schema: i8) -> f64 {
    if schema > 0 {
        let n = 1i32 << schema;
        within_octave(index.rem_euclid(n), n) * 2f64.powi(index.div_euclid(n))
    } else {
        2f64.powi(index << -schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_powers_of_the_base_end_their_bucket() {
        for schema in [-4i8, -1, 0, 1, 3, 4, 8] {
            // Indices whose bounds are normal finite numbers.
            let limit = if schema < 0 { 1000 >> -schema } else { 300 };
            for index_in in -limit..limit {
                let bound = upper_bound(index_in, schema);
                assert_eq!(index(bound, schema), index_in, "schema {schema}: {bound}");
                let above = f64::from_bits(bound.to_bits() + 1);
                assert_eq!(
                    index(above, schema),
                    index_in + 1,
                    "schema {schema}: {above}"
                );
                let below = f64::from_bits(bound.to_bits() - 1);
                assert!(index(below, schema) <= index_in, "schema {schema}: {below}");
            }
        }
        // Powers of two: 1 ends bucket 0 at every schema, 2 ends bucket 2^schema.
        assert_eq!(index(1.0, 4), 0);
        assert_eq!(index(2.0, 4), 16);
        assert_eq!(index(0.5, 4), -16);
        assert_eq!(index(2.0, 0), 1);
        assert_eq!(index(3.0, 0), 2);
        assert_eq!(index(4.0, -1), 1);
        assert_eq!(index(5.0, -1), 2);
    }

    #[test]
    fn the_smallest_and_largest_durations_have_buckets_within_five_percent() {
        // A millisecond (the API's resolution), an hour, a year of epoch milliseconds, and
        // the largest finite value.
        for value in [0.001, 3600.0, 1.8e9, f64::MAX] {
            let at = index(value, SCHEMA);
            let (low, high) = (upper_bound(at - 1, SCHEMA), upper_bound(at, SCHEMA));
            assert!(low < value && value <= high, "{value}: ({low}, {high}]");
            if high.is_finite() {
                assert!(high / low < 1.045, "{value}: ({low}, {high}]");
            }
        }
        // Below the zero threshold, and zero itself: the zero bucket.
        let mut native = Native::default();
        for value in [0.0, -0.0, ZERO_THRESHOLD, f64::MIN_POSITIVE / 4.0] {
            native.observe(value, MAX_BUCKETS);
        }
        assert_eq!((native.zero, native.positive.len()), (4, 0));
        assert_eq!(index(f64::MIN_POSITIVE / 4.0, 0), -1024);
    }

    #[test]
    fn negative_values_count_by_their_magnitude_and_nan_in_no_bucket() {
        let mut native = Native::default();
        native.observe(-2.0, MAX_BUCKETS);
        native.observe(2.0, MAX_BUCKETS);
        native.observe(f64::NAN, MAX_BUCKETS);
        native.observe(f64::INFINITY, MAX_BUCKETS);
        assert_eq!(native.negative, [(16, 1)]);
        assert_eq!(native.positive, [(16, 1)]);
        assert_eq!(native.total(), 2);
    }

    #[test]
    fn past_the_cap_the_resolution_halves_and_counts_are_kept() {
        let mut native = Native::default();
        // 1 s to 2^20 s: 20 octaves, 320 buckets at schema 4.
        let values: Vec<f64> = (0..=320).map(|i| upper_bound(i, SCHEMA)).collect();
        for value in &values {
            native.observe(*value, MAX_BUCKETS);
        }
        assert_eq!(
            native.schema, 2,
            "321 buckets → 161 at schema 3 → 81 at schema 2"
        );
        assert!(native.positive.len() <= MAX_BUCKETS);
        assert_eq!(native.total(), values.len() as u64);
        // Each observation is in the bucket of the coarser schema that holds it.
        for value in &values {
            let at = index(*value, native.schema);
            assert!(native.positive.iter().any(|(i, _)| *i == at), "{value}");
        }
        // Halving maps bucket i to ⌈i/2⌉, negative indices included.
        let mut buckets = vec![(-3, 1), (-2, 1), (-1, 1), (0, 1), (1, 1), (2, 1)];
        halve(&mut buckets);
        assert_eq!(buckets, [(-1, 2), (0, 2), (1, 2)]);
        for i in -40i32..40 {
            let coarse = (i + 1).div_euclid(2);
            assert!(upper_bound(i, 4) <= upper_bound(coarse, 3) * (1.0 + 1e-15));
            assert!(upper_bound(i - 1, 4) >= upper_bound(coarse - 1, 3) * (1.0 - 1e-15));
        }
    }

    #[test]
    fn spans_cover_gaps_of_two_and_split_at_longer_ones() {
        let spans_of = |buckets: &[(i32, u64)]| {
            let (mut spans, mut deltas) = (vec![BucketSpan::default()], vec![7]);
            spans_and_deltas(buckets, &mut spans, &mut deltas);
            (spans, deltas)
        };
        let (spans, deltas) = spans_of(&[(-2, 3), (-1, 5), (2, 1), (6, 4)]);
        let pairs: Vec<(i32, u32)> = spans
            .iter()
            .map(|s| (s.offset.unwrap_or(0), s.length.unwrap_or(0)))
            .collect();
        // -2..=2 is one span (two empty buckets between), 6 a second after a gap of three.
        assert_eq!(pairs, [(-2, 5), (3, 1)]);
        assert_eq!(deltas, [3, 2, -5, 0, 1, 3]);
        assert_eq!(spans_of(&[]), (vec![], vec![]));
    }

    #[test]
    fn classic_buckets_give_native_ones_with_the_same_count() {
        let native = Native::from_classic(&[60.0, 300.0], &[2, 0], 5, 1200.0);
        assert_eq!(native.total(), 5);
        assert_eq!(native.positive[0], (index(60.0, SCHEMA), 2));
        assert_eq!(native.positive[1], (index(300.0, SCHEMA) + 1, 3));
        let without_bounds = Native::from_classic(&[], &[], 4, 40.0);
        assert_eq!(without_bounds.positive, [(index(10.0, SCHEMA), 4)]);
        assert_eq!(Native::from_classic(&[], &[], 0, 0.0), Native::default());
    }
}
