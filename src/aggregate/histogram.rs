//! The exponential histogram: OTLP's `ExponentialHistogramDataPoint` shape (scale, zero count,
//! positive and negative bucket ranges) plus exact count, sum, min and max.
//!
//! In: values (one at a time, with a repeat count, or as a pre-aggregated statistic set) and other
//! histograms to merge. Out: the OTLP fields, and `quantile` / `share_above` answers.
//!
//! # Buckets
//! At scale `s` the base is `b = 2^(2^-s)` and bucket `i` holds the magnitudes in
//! `(b^i, b^(i+1)]` (upper bound inclusive, as the OTLP specification says). Zero has its own
//! count; negative values are bucketed by magnitude in a second range that shares the scale.
//! Indexes come from the bits of the f64. The exponent bits name the octave; at scale ≤ 0 that is
//! all it takes (a power of two closes the bucket below it). At scales 1 to 5 the mantissa is
//! compared with the 31 boundaries `2^(k/32)` inside an octave, each stored as the smallest
//! mantissa above it (found with exact integer arithmetic), through a 64-entry table on the top
//! six mantissa bits and one comparison: exact, with no `log2`. A scale below 5 takes the scale-5
//! index shifted down, since its boundaries are a subset. Finer scales (only met in histograms
//! rebuilt from OTLP) use `log2`, clamped to the octave, so a rounding error there can only move a
//! value within a few ulps of a boundary to the neighbouring bucket.
//!
//! # Accuracy, and what it costs
//! A value in bucket `i` is answered with the bucket's geometric midpoint `b^(i+1/2)`; the true
//! value lies in `(b^i, b^(i+1)]`, so the relative error is at most `√b − 1 = 2^(2^-s / 2) − 1`:
//!
//! | scale | buckets per octave | worst relative error |
//! |------:|-------------------:|---------------------:|
//! | 6     | 64                 | 0.54 %               |
//! | 5     | 32                 | 1.09 %               |
//! | 4     | 16                 | 2.19 %               |
//!
//! Scale 5 is the coarsest scale that keeps the error under 2 %, so a new histogram starts there
//! ([`MAX_SCALE`]); starting finer would only buy accuracy nobody asked for with memory the user
//! pays for. A range of `R` (largest over smallest magnitude) covers `log2(R)` octaves, and at scale
//! 5 it needs at most `32·log2(R) + 2` buckets: 1e6 is 19.93 octaves, so [`MAX_BUCKETS`] = 640
//! keeps scale 5 for any range up to `2^(639/32)` ≈ 1.03e6. A wider range lowers the scale
//! (one step merges bucket pairs and doubles the octaves that fit: scale 4 holds ranges up to
//! about 1e12, with the 2.19 % bound of that scale) until it fits. The 640 buckets are shared by
//! the positive and negative ranges: a series with both signs keeps scale 5 while the spans of
//! its two ranges, in buckets, add up to at most 640 (e.g. 1e3 of positives and 5e2 of negatives).
//!
//! # Memory
//! Counts are `u32` until one would pass `u32::MAX`; then that range switches to `u64` counts
//! (exact either way). Both ranges together never hold more than [`MAX_BUCKETS`] counts, and their
//! allocations never exceed that either (growth is capped), so one histogram is at most
//! `640 × 4 = 2,560` bytes of counts (`640 × 8 = 5,120` once wide) plus `size_of::<Histogram>()`
//! (about 100 bytes). [`Histogram::take`] hands out its data in allocations of their exact
//! length, and empties the histogram in place, keeping its allocations for the next interval.
//!
//! # Queries
//! * `quantile(q)`: the value of rank `r = max(1, ⌈q·count⌉)` in ascending order (the
//!   "nearest rank" definition), answered with the midpoint of the bucket holding that rank,
//!   clamped to `[min, max]`, and exact for the smallest and largest rank and for zeros. Relative
//!   error: at most `√b − 1` (1.09 % at scale 5) against the exact value of that rank.
//! * `share_above(x)`: the share of observations strictly greater than `x`. The answer is the
//!   exact share above some threshold `t` with `|t − x| ≤ (√b − 1)·|x|` (1.09 % at scale 5): the
//!   bucket boundary nearest to `x`. It is exact (`t = x`) when `x` is below the minimum, at or
//!   above the maximum, or zero.

use std::borrow::Cow;
use std::fmt;

/// The scale a new histogram starts at: the coarsest one with a relative error under 2 %.
pub const MAX_SCALE: i32 = 5;
/// The coarsest scale OTLP backends commonly accept; at -10 every f64 fits in three buckets.
pub const MIN_SCALE: i32 = -10;
/// The finest scale OTLP producers use (the SDKs' default maximum); [`Histogram::from_otlp`]
/// accepts scales up to it.
pub const FINEST_SCALE: i32 = 20;
/// Counts held by one histogram, positive and negative ranges together.
pub const MAX_BUCKETS: usize = 640;

/// Why a value or a merge was refused. The histogram is unchanged when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    #[error("value is not a finite number")]
    NotFinite,
    #[error("statistic set is inconsistent (min > max, or a member is not finite)")]
    InvalidStats,
    #[error("histogram fields are inconsistent: {0}")]
    InvalidParts(&'static str),
    #[error("the observation count would overflow")]
    CountOverflow,
}

/// Runs `$e` on the vector of `$c` ([`Counts`]) bound as `$v`, whichever its width.
macro_rules! each_width {
    ($c:expr, $v:ident => $e:expr) => {
        match $c {
            Counts::Narrow($v) => $e,
            Counts::Wide($v) => $e,
        }
    };
}

/// Bucket counts: `u32` while every count fits, `u64` from the first one that would not. A
/// bucket rarely counts past four billion within one interval, and half the bytes per bucket
/// keep twice as many series' buckets in the cache.
#[derive(Clone, Debug)]
enum Counts {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Narrow(Vec::new())
    }
}

// `each_width!` runs the same code on both widths: `u64::from` is the identity on the `u64` side.
#[allow(clippy::useless_conversion)]
impl Counts {
    fn len(&self) -> usize {
        each_width!(self, v => v.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts allocated, whatever their width.
    fn capacity(&self) -> usize {
        each_width!(self, v => v.capacity())
    }

    fn shrink_to_fit(&mut self) {
        each_width!(self, v => v.shrink_to_fit())
    }

    fn get(&self, k: usize) -> Option<u64> {
        each_width!(self, v => v.get(k).map(|&c| u64::from(c)))
    }

    /// The sum of the counts in `range` (clamped to the length).
    fn sum(&self, range: std::ops::Range<usize>) -> u64 {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        // Bounded by the histogram's count, which is checked against overflow.
        each_width!(self, v => v[start..end].iter().map(|&c| u64::from(c)).sum())
    }

    /// Every count, ascending index.
    fn iter(&self) -> impl DoubleEndedIterator<Item = u64> + ExactSizeIterator + '_ {
        (0..self.len()).map(|k| self.get(k).unwrap_or(0))
    }

    /// The counts as `u64` in an allocation of their exact length.
    fn to_wide(&self) -> Vec<u64> {
        each_width!(self, v => v.iter().map(|&c| u64::from(c)).collect())
    }

    /// Switches to `u64` counts, keeping the number of counts allocated.
    fn widen(&mut self) {
        if let Counts::Narrow(v) = self {
            let mut wide = Vec::with_capacity(v.capacity());
            wide.extend(v.iter().map(|&c| u64::from(c)));
            *self = Counts::Wide(wide);
        }
    }

    /// Adds `n` to count `k` (nothing if `k` is out of range), widening first if it would not
    /// fit in `u32`.
    #[inline]
    fn add(&mut self, k: usize, n: u64) {
        if let Counts::Narrow(v) = self {
            let Some(c) = v.get_mut(k) else {
                return;
            };
            if let Ok(sum) = u32::try_from(u64::from(*c).saturating_add(n)) {
                *c = sum;
                return;
            }
            self.widen();
        }
        if let Counts::Wide(v) = self
            && let Some(c) = v.get_mut(k)
        {
            // The histogram's count bounds every bucket and is checked against overflow.
            *c += n;
        }
    }
}

impl PartialEq for Counts {
    /// Equal counts, whatever their widths.
    fn eq(&self, other: &Counts) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Counts {}

/// One range of consecutive buckets: bucket `offset + k` holds count `k`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    offset: i32,
    counts: Counts,
}

impl Buckets {
    /// Index of the first bucket.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Counts of consecutive buckets from `offset`. The first and last are never zero. Borrowed
    /// when the counts are held as `u64` (after one passed `u32::MAX`), else widened into a new
    /// vector (which an exporter can keep with `into_owned` at no further cost).
    pub fn counts(&self) -> Cow<'_, [u64]> {
        match &self.counts {
            Counts::Wide(v) => Cow::Borrowed(v),
            Counts::Narrow(_) => Cow::Owned(self.counts.to_wide()),
        }
    }

    /// Number of buckets in the range.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The sum of the counts.
    pub fn total(&self) -> u64 {
        self.counts.sum(0..self.counts.len())
    }

    /// First and last index, inclusive.
    fn range(&self) -> Option<(i32, i32)> {
        if self.counts.is_empty() {
            None
        } else {
            // len ≤ MAX_BUCKETS and every index fits in i32, so this cannot overflow.
            Some((self.offset, self.offset + self.counts.len() as i32 - 1))
        }
    }

    /// The same range in an allocation of its exact length (none when empty).
    fn copy(&self) -> Buckets {
        Buckets {
            offset: self.offset,
            // `to_vec` allocates exactly the length.
            counts: match &self.counts {
                Counts::Narrow(v) => Counts::Narrow(v.as_slice().to_vec()),
                Counts::Wide(v) => Counts::Wide(v.as_slice().to_vec()),
            },
        }
    }

    /// Empties the range, keeping its allocation.
    fn clear(&mut self) {
        self.offset = 0;
        each_width!(&mut self.counts, v => v.clear());
    }

    /// Merges bucket groups of `2^by` into one (the scale drops by `by`).
    fn downscale(&mut self, by: u32) {
        if by == 0 || self.counts.is_empty() {
            return;
        }
        // A merged count is at most the total: widen first unless the total fits.
        if u32::try_from(self.total()).is_err() {
            self.counts.widen();
        }
        let offset = self.offset;
        let new_offset = offset >> by;
        each_width!(&mut self.counts, v => {
            let mut last = 0;
            for k in 0..v.len() {
                let index = offset + k as i32;
                // new_k ≤ k: a shift never spreads indexes apart, so slot new_k has been visited.
                let new_k = ((index >> by) - new_offset) as usize;
                let c = std::mem::take(&mut v[k]);
                v[new_k] += c;
                last = new_k;
            }
            v.truncate(last + 1);
        });
        self.offset = new_offset;
    }

    /// Adds `n` to bucket `index`, which the caller has made sure is inside the range.
    #[inline]
    fn add(&mut self, index: i32, n: u64) {
        self.counts.add((index - self.offset) as usize, n);
    }

    /// Extends the range to cover `[lo, hi]` with zero counts, allocating at most `max_capacity`
    /// counts in all. The caller guarantees the new length fits in `max_capacity`.
    fn cover(&mut self, lo: i32, hi: i32, max_capacity: usize) {
        let (new_lo, new_hi) = match self.range() {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        };
        let new_len = (new_hi as i64 - new_lo as i64 + 1) as usize;
        if self.counts.is_empty() {
            self.offset = new_lo;
        }
        let front = (self.offset as i64 - new_lo as i64) as usize;
        self.offset = new_lo;
        each_width!(&mut self.counts, v => {
            if new_len > v.capacity() {
                let target = (v.capacity() * 2)
                    .max(new_len)
                    .max(8)
                    .min(max_capacity.max(new_len));
                v.reserve_exact(target - v.len());
            }
            if front > 0 {
                // Shift the counts up by `front` and zero the slots opened at the front.
                let old = v.len();
                v.resize(old + front, 0);
                v.copy_within(0..old, front);
                v[..front].fill(0);
            }
            v.resize(new_len, 0);
        });
    }
}

/// A mergeable exponential histogram with exact count, sum, min and max.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    scale: i32,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    zero_count: u64,
    positive: Buckets,
    negative: Buckets,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            scale: MAX_SCALE,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            zero_count: 0,
            positive: Buckets::default(),
            negative: Buckets::default(),
        }
    }

    pub fn scale(&self) -> i32 {
        self.scale
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The f64 sum of the observations, in the order they were added.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Observations equal to zero.
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// Buckets of the positive values.
    pub fn positive(&self) -> &Buckets {
        &self.positive
    }

    /// Buckets of the magnitudes of the negative values.
    pub fn negative(&self) -> &Buckets {
        &self.negative
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Counts allocated for the two ranges (at most [`MAX_BUCKETS`]).
    pub fn allocated_buckets(&self) -> usize {
        self.positive.counts.capacity() + self.negative.counts.capacity()
    }

    /// Hands out everything recorded so far and leaves this histogram empty, as
    /// [`Histogram::new`] makes one but keeping its bucket allocations, so that the next interval
    /// of a series reuses them. The histogram handed out holds exactly its ranges.
    pub fn take(&mut self) -> Histogram {
        let out = Histogram {
            scale: self.scale,
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            zero_count: self.zero_count,
            positive: self.positive.copy(),
            negative: self.negative.copy(),
        };
        self.scale = MAX_SCALE;
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.zero_count = 0;
        self.positive.clear();
        self.negative.clear();
        out
    }

    /// Records one observation.
    pub fn record(&mut self, value: f64) -> Result<(), HistogramError> {
        self.record_n(value, 1)
    }

    /// Records `n` observations of `value`. `n = 0` records nothing.
    pub fn record_n(&mut self, value: f64, n: u64) -> Result<(), HistogramError> {
        if !value.is_finite() {
            return Err(HistogramError::NotFinite);
        }
        if n == 0 {
            return Ok(());
        }
        let count = self
            .count
            .checked_add(n)
            .ok_or(HistogramError::CountOverflow)?;
        self.count = count;
        self.sum += if n == 1 { value } else { value * n as f64 };
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.add_to_buckets(value, n);
        Ok(())
    }

    /// Records a pre-aggregated statistic set of `count` observations. Count, sum, min and max
    /// are taken exactly. The buckets get an approximation, since the values are unknown: one
    /// observation at `min`, one at `max`, and the other `count − 2` at their mean,
    /// `(sum − min − max) / (count − 2)` clamped to `[min, max]` (a single observation goes at
    /// `sum` clamped to `[min, max]`). Quantiles of such a series are therefore only as good as
    /// that guess; count, sum, min and max stay exact.
    pub fn record_stats(
        &mut self,
        min: f64,
        max: f64,
        sum: f64,
        count: u64,
    ) -> Result<(), HistogramError> {
        if !(min.is_finite() && max.is_finite() && sum.is_finite()) || min > max {
            return Err(HistogramError::InvalidStats);
        }
        if count == 0 {
            return Ok(());
        }
        let total = self
            .count
            .checked_add(count)
            .ok_or(HistogramError::CountOverflow)?;
        self.count = total;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        if count == 1 {
            self.add_to_buckets(sum.clamp(min, max), 1);
        } else {
            self.add_to_buckets(min, 1);
            self.add_to_buckets(max, 1);
            let rest = count - 2;
            if rest > 0 {
                let mean = (sum - min - max) / rest as f64;
                // A non-finite mean (sum − min − max overflowed) falls back to the midpoint.
                let mean = if mean.is_finite() {
                    mean.clamp(min, max)
                } else {
                    min / 2.0 + max / 2.0
                };
                self.add_to_buckets(mean, rest);
            }
        }
        Ok(())
    }

    /// Adds every observation of `other`. Scales may differ: the finer histogram is downscaled
    /// to the coarser one (further if the union needs more than [`MAX_BUCKETS`]), which is exact
    /// because bucket boundaries at scale `s − 1` are boundaries at scale `s` too.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), HistogramError> {
        if other.count == 0 {
            return Ok(());
        }
        let count = self
            .count
            .checked_add(other.count)
            .ok_or(HistogramError::CountOverflow)?;
        let base = self.scale.min(other.scale);
        let at = |r: Option<(i32, i32)>, from: i32| {
            r.map(|(lo, hi)| (lo >> (from - base), hi >> (from - base)))
        };
        let union = |a: Option<(i32, i32)>, b: Option<(i32, i32)>| match (a, b) {
            (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
            (a, None) => a,
            (None, b) => b,
        };
        let pos = union(
            at(self.positive.range(), self.scale),
            at(other.positive.range(), other.scale),
        );
        let neg = union(
            at(self.negative.range(), self.scale),
            at(other.negative.range(), other.scale),
        );
        let target = base - needed_downscale(pos, neg, base);
        self.downscale_to(target);
        let shift = (other.scale - target) as u32;
        for (mine, theirs) in [
            (&mut self.positive, &other.positive),
            (&mut self.negative, &other.negative),
        ] {
            if let Some((lo, hi)) = theirs.range() {
                mine.cover(lo >> shift, hi >> shift, MAX_BUCKETS);
                for (k, c) in theirs.counts.iter().enumerate() {
                    mine.add((theirs.offset + k as i32) >> shift, c);
                }
            }
        }
        self.count = count;
        self.zero_count += other.zero_count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.bound_capacity();
        Ok(())
    }

    /// The value of rank `max(1, ⌈q·count⌉)`, within the relative error of the module doc.
    /// `None` when empty or when `q` is not in `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == 1 {
            return Some(self.min);
        }
        if rank == self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        // Ascending values: the largest magnitudes of the negative range come first.
        for (k, c) in self.negative.counts.iter().enumerate().rev() {
            seen += c;
            if seen >= rank {
                let mid = midpoint(self.negative.offset + k as i32, self.scale);
                return Some((-mid).clamp(self.min, self.max));
            }
        }
        seen += self.zero_count;
        if seen >= rank {
            return Some(0.0);
        }
        for (k, c) in self.positive.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let mid = midpoint(self.positive.offset + k as i32, self.scale);
                return Some(mid.clamp(self.min, self.max));
            }
        }
        // Unreachable while the bucket counts add up to `count`; the maximum is the safe answer.
        Some(self.max)
    }

    /// How many observations are greater than `x` (see the module doc for the threshold used).
    /// `None` when `x` is NaN.
    pub fn count_above(&self, x: f64) -> Option<u64> {
        if x.is_nan() {
            return None;
        }
        if self.count == 0 || x >= self.max {
            return Some(0);
        }
        if x < self.min {
            return Some(self.count);
        }
        let positive_total = self.positive.total();
        if x == 0.0 {
            return Some(positive_total);
        }
        let magnitude = x.abs();
        let i = bucket_index(magnitude, self.scale);
        // Nearest boundary in ratio: the lower one when x ≤ b^(i+1/2).
        let take_lower = magnitude <= midpoint(i, self.scale);
        if x > 0.0 {
            // Values above b^i are the buckets ≥ i; above b^(i+1), the buckets > i.
            let first = if take_lower { i } else { i + 1 };
            Some(sum_from(&self.positive, first))
        } else {
            // Negative x: everything ≥ 0, plus the negatives of magnitude below the threshold.
            // Magnitude threshold b^i: buckets < i; b^(i+1): buckets ≤ i.
            let end = if take_lower { i } else { i + 1 };
            Some(positive_total + self.zero_count + sum_before(&self.negative, end))
        }
    }

    /// The share of observations greater than `x`, in `[0, 1]`. `None` when empty or `x` is NaN.
    pub fn share_above(&self, x: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        Some(self.count_above(x)? as f64 / self.count as f64)
    }

    fn add_to_buckets(&mut self, value: f64, n: u64) {
        if value == 0.0 {
            self.zero_count += n;
            return;
        }
        let index = bucket_index(value.abs(), self.scale);
        // Fast path: the bucket is inside the current range.
        let side = if value > 0.0 {
            &mut self.positive
        } else {
            &mut self.negative
        };
        if side
            .range()
            .is_some_and(|(lo, hi)| lo <= index && index <= hi)
        {
            side.add(index, n);
            return;
        }
        let (side, other) = if value > 0.0 {
            (&self.positive, &self.negative)
        } else {
            (&self.negative, &self.positive)
        };
        let grown = match side.range() {
            None => (index, index),
            Some((lo, hi)) => (lo.min(index), hi.max(index)),
        };
        let change = if value > 0.0 {
            needed_downscale(Some(grown), other.range(), self.scale)
        } else {
            needed_downscale(other.range(), Some(grown), self.scale)
        };
        self.downscale_to(self.scale - change);
        let index = index >> change;
        let (side, other) = if value > 0.0 {
            (&mut self.positive, &self.negative)
        } else {
            (&mut self.negative, &self.positive)
        };
        let limit = MAX_BUCKETS.saturating_sub(other.counts.capacity());
        side.cover(index, index, limit);
        side.add(index, n);
        self.bound_capacity();
    }

    /// Rebuilds a histogram from the fields of an OTLP `ExponentialHistogramDataPoint` (e.g. as a
    /// receiver decodes them), checking that they agree: the scale is in
    /// `MIN_SCALE..=FINEST_SCALE`, the bucket counts and `zero_count` add up to `count`, and min
    /// and max are finite with `min ≤ max` when `count > 0`. Zero counts at either end of a range
    /// are trimmed, and a range wider than [`MAX_BUCKETS`] is downscaled to fit.
    #[allow(clippy::too_many_arguments)]
    pub fn from_otlp(
        scale: i32,
        zero_count: u64,
        positive: (i32, &[u64]),
        negative: (i32, &[u64]),
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
    ) -> Result<Histogram, HistogramError> {
        if !(MIN_SCALE..=FINEST_SCALE).contains(&scale) {
            return Err(HistogramError::InvalidParts("scale out of range"));
        }
        let mut total = zero_count;
        let mut ranges = [Buckets::default(), Buckets::default()];
        for (slot, (offset, counts)) in ranges.iter_mut().zip([positive, negative]) {
            for &c in counts {
                total = total
                    .checked_add(c)
                    .ok_or(HistogramError::InvalidParts("bucket counts overflow"))?;
            }
            let first = counts.iter().position(|&c| c != 0);
            let last = counts.iter().rposition(|&c| c != 0);
            if let (Some(first), Some(last)) = (first, last) {
                // Every index the range covers must exist at this scale.
                let (lo, hi) = (offset as i64 + first as i64, offset as i64 + last as i64);
                let limit = |s: i32| (1076i64 << s.max(0)) >> (-s).max(0);
                if lo < -limit(scale) - 1 || hi > limit(scale) {
                    return Err(HistogramError::InvalidParts("bucket index out of range"));
                }
                *slot = Buckets {
                    offset: lo as i32,
                    counts: Counts::Wide(counts[first..=last].to_vec()),
                };
            }
        }
        if total != count {
            return Err(HistogramError::InvalidParts(
                "bucket counts do not add up to count",
            ));
        }
        if count > 0 && !(min.is_finite() && max.is_finite() && min <= max && sum.is_finite()) {
            return Err(HistogramError::InvalidParts("min, max or sum"));
        }
        let [positive, negative] = ranges;
        let mut h = Histogram {
            scale,
            count,
            sum: if count > 0 { sum } else { 0.0 },
            min: if count > 0 { min } else { f64::INFINITY },
            max: if count > 0 { max } else { f64::NEG_INFINITY },
            zero_count,
            positive,
            negative,
        };
        let by = needed_downscale(h.positive.range(), h.negative.range(), h.scale);
        h.downscale_to(h.scale - by);
        h.positive.counts.shrink_to_fit();
        h.negative.counts.shrink_to_fit();
        Ok(h)
    }

    fn downscale_to(&mut self, scale: i32) {
        if scale < self.scale {
            let by = (self.scale - scale) as u32;
            self.positive.downscale(by);
            self.negative.downscale(by);
            self.scale = scale;
        }
    }

    /// Keeps the two allocations within [`MAX_BUCKETS`] counts in all.
    fn bound_capacity(&mut self) {
        if self.allocated_buckets() > MAX_BUCKETS {
            self.positive.counts.shrink_to_fit();
            self.negative.counts.shrink_to_fit();
        }
    }
}

/// How many scale steps down make both ranges fit in [`MAX_BUCKETS`] together.
fn needed_downscale(pos: Option<(i32, i32)>, neg: Option<(i32, i32)>, scale: i32) -> i32 {
    let len = |r: Option<(i32, i32)>, by: i32| {
        r.map_or(0, |(lo, hi)| {
            ((hi >> by) as i64 - (lo >> by) as i64 + 1) as usize
        })
    };
    let mut by = 0;
    while scale - by > MIN_SCALE && len(pos, by) + len(neg, by) > MAX_BUCKETS {
        by += 1;
    }
    by
}

/// Sum of the counts of the buckets with index ≥ `first`.
fn sum_from(b: &Buckets, first: i32) -> u64 {
    let skip = (first as i64 - b.offset as i64).clamp(0, b.counts.len() as i64) as usize;
    b.counts.sum(skip..b.counts.len())
}

/// Sum of the counts of the buckets with index < `end`.
fn sum_before(b: &Buckets, end: i32) -> u64 {
    let take = (end as i64 - b.offset as i64).clamp(0, b.counts.len() as i64) as usize;
    b.counts.sum(0..take)
}

/// The index of the bucket holding the magnitude `v` (positive and finite) at `scale`.
/// `scale` is clamped to `MIN_SCALE..=FINEST_SCALE`, where every index fits in an `i32`.
pub fn bucket_index(v: f64, scale: i32) -> i32 {
    let scale = scale.clamp(MIN_SCALE, FINEST_SCALE);
    let bits = v.to_bits();
    let exponent_bits = ((bits >> 52) & 0x7ff) as i32;
    let mut mantissa = bits & MANTISSA;
    // floor(log2(v)) from the bits, and the mantissa of v normalised to [1, 2).
    let exp = if exponent_bits == 0 {
        // Subnormal: v = mantissa · 2^-1074. (mantissa ≠ 0 because v > 0.)
        let top = 63 - mantissa.leading_zeros() as i32;
        mantissa = (mantissa << (52 - top)) & MANTISSA;
        top - 1074
    } else {
        exponent_bits - 1023
    };
    if scale <= 0 {
        // Buckets at scale 0 are (2^i, 2^(i+1)]: a power of two closes the bucket below it.
        let index = if mantissa == 0 { exp - 1 } else { exp };
        return index >> -scale;
    }
    if scale <= MAX_SCALE {
        // The boundaries 2^(k/32), k = 0..32, that lie strictly below the value.
        let entry = OCTAVE[(mantissa >> 46) as usize];
        let below = (entry >> 53) as i32 + i32::from(mantissa >= entry & NEXT);
        return ((exp << MAX_SCALE) + below - 1) >> (MAX_SCALE - scale);
    }
    if mantissa == 0 {
        return (exp << scale) - 1;
    }
    // Inside octave (2^exp, 2^(exp+1)) the buckets are exp·2^s .. (exp+1)·2^s − 1.
    let lo = exp << scale;
    let hi = ((exp + 1) << scale) - 1;
    let approx = (v.log2() * (1u64 << scale) as f64).floor();
    (approx as i32).clamp(lo, hi)
}

const MANTISSA: u64 = (1 << 52) - 1;

/// For k = 1..32, the smallest mantissa `m` with `1 + m·2^-52 > 2^(k/32)`: a value of an octave
/// lies above the boundary `k` of scale 5 exactly when its mantissa is at least `BOUNDARIES[k-1]`
/// (the boundaries are irrational, so no f64 lies on one). Checked with exact integer arithmetic
/// in the tests (`(2^52 + m)^32` against `2^(52·32 + k)`).
const BOUNDARIES: [u64; 31] = [
    0x059b0d3158575,
    0x0b5586cf98910,
    0x11301d0125b51,
    0x172b83c7d517b,
    0x1d4873168b9ab,
    0x2387a6e756239,
    0x29e9df51fdee2,
    0x306fe0a31b716,
    0x371a7373aa9cb,
    0x3dea64c123423,
    0x44e086061892e,
    0x4bfdad5362a28,
    0x5342b569d4f82,
    0x5ab07dd48542a,
    0x6247eb03a5585,
    0x6a09e667f3bcd,
    0x71f75e8ec5f74,
    0x7a11473eb0187,
    0x82589994cce13,
    0x8ace5422aa0dc,
    0x93737b0cdc5e5,
    0x9c49182a3f091,
    0xa5503b23e255d,
    0xae89f995ad3ae,
    0xb7f76f2fb5e47,
    0xc199bdd85529d,
    0xcb720dcef906a,
    0xd5818dcfba488,
    0xdfc97337b9b5f,
    0xea4afa2a490da,
    0xf50765b6e4541,
];

/// The low 53 bits of an [`OCTAVE`] entry.
const NEXT: u64 = (1 << 53) - 1;

/// One entry per value of the top six mantissa bits (a slice of 1/64 of the mantissa range): in
/// the bits from 53 up, how many octave boundaries (boundary 0, the power of two, with mantissa
/// threshold 1, included) lie at or below the slice's first mantissa; in the low 53 bits, the
/// threshold of the next boundary (2^52, above every mantissa, when there is none). Boundaries are
/// at least 2^(1/32) − 1 ≈ 0.0219 apart in mantissa terms, more than a slice, so a slice holds at
/// most one: the count for a mantissa `m` is the entry's count plus `m ≥ next`.
static OCTAVE: [u64; 64] = octave_table();

const fn octave_table() -> [u64; 64] {
    let mut table = [0u64; 64];
    let mut slice = 0;
    while slice < 64 {
        let start = (slice as u64) << 46;
        // Threshold k: 1 for k = 0 (any mantissa but 0 lies above the power of two), then
        // BOUNDARIES[k - 1].
        let mut below = 0u64;
        let mut next = 1u64 << 52;
        let mut k = 0;
        while k < 32 {
            let t = if k == 0 { 1 } else { BOUNDARIES[k - 1] };
            if t <= start {
                below += 1;
            } else if t < next {
                next = t;
            }
            k += 1;
        }
        table[slice] = (below << 53) | next;
        slice += 1;
    }
    table
}

/// `b^index` at `scale`: the lower (exclusive) boundary of bucket `index`.
pub fn lower_boundary(index: i32, scale: i32) -> f64 {
    (index as f64 * (-scale as f64).exp2()).exp2()
}

/// `b^(index + 1/2)`: the geometric midpoint of bucket `index`.
fn midpoint(index: i32, scale: i32) -> f64 {
    ((index as f64 + 0.5) * (-scale as f64).exp2()).exp2()
}

impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "count={} sum={} min={:?} max={:?} scale={} zero={} +{}@{} -{}@{}",
            self.count,
            self.sum,
            self.min(),
            self.max(),
            self.scale,
            self.zero_count,
            self.positive.counts.len(),
            self.positive.offset,
            self.negative.counts.len(),
            self.negative.offset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[f64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn powers_of_two_close_the_bucket_below_them() {
        for scale in MIN_SCALE..=MAX_SCALE {
            // 1 = 2^0 is the upper bound of bucket -1 at every scale.
            assert_eq!(bucket_index(1.0, scale), -1, "scale {scale}");
        }
        assert_eq!(bucket_index(2.0, 0), 0);
        assert_eq!(bucket_index(4.0, 0), 1);
        assert_eq!(bucket_index(3.0, 0), 1);
        assert_eq!(bucket_index(2.0, 3), 7);
        assert_eq!(bucket_index(1024.0, 5), 10 * 32 - 1);
        assert_eq!(bucket_index(0.5, 5), -32 - 1);
        // Scale -1: buckets (4^i, 4^(i+1)]
        assert_eq!(bucket_index(4.0, -1), 0);
        assert_eq!(bucket_index(4.5, -1), 1);
        assert_eq!(bucket_index(16.0, -1), 1);
        assert_eq!(bucket_index(1.0, -1), -1);
        // Just above a power of two opens the next bucket.
        let above = f64::from_bits(2.0f64.to_bits() + 1);
        assert_eq!(bucket_index(above, 5), 32);
        let below = f64::from_bits(2.0f64.to_bits() - 1);
        assert_eq!(bucket_index(below, 5), 31);
    }

    #[test]
    fn scale_one_splits_octaves_at_root_two() {
        // Scale 1: base √2, bucket 0 = (1, 1.414...], bucket 1 = (1.414..., 2].
        assert_eq!(bucket_index(1.4, 1), 0);
        assert_eq!(bucket_index(1.5, 1), 1);
        assert_eq!(bucket_index(2.0, 1), 1);
        assert_eq!(bucket_index(2.1, 1), 2);
    }

    #[test]
    fn every_value_lies_inside_its_bucket() {
        let mut v = 1e-300;
        while v < 1e300 {
            for scale in [-3, 0, 2, 5] {
                let i = bucket_index(v, scale);
                let (lo, hi) = (lower_boundary(i, scale), lower_boundary(i + 1, scale));
                let slack = 1.0 + 1e-12;
                assert!(v > lo / slack && v <= hi * slack, "{v} at {scale}: {i}");
            }
            v *= 1.37;
        }
    }

    #[test]
    fn extreme_magnitudes_get_an_index() {
        for scale in MIN_SCALE..=MAX_SCALE {
            let tiny = bucket_index(f64::from_bits(1), scale); // 2^-1074
            let big = bucket_index(f64::MAX, scale);
            assert!(tiny < big);
            let expected = if scale > 0 {
                (-1074 << scale) - 1
            } else {
                -1075 >> -scale
            };
            assert_eq!(tiny, expected, "scale {scale}");
        }
        // A subnormal that is not a power of two.
        assert_eq!(bucket_index(f64::from_bits(3), 0), -1073);
    }

    #[test]
    fn zero_and_negatives() {
        let h = hist(&[0.0, -0.0, -2.0, -3.0, 5.0]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.zero_count(), 2);
        assert_eq!(h.negative().total(), 2);
        assert_eq!(h.positive().total(), 1);
        assert_eq!(h.min(), Some(-3.0));
        assert_eq!(h.max(), Some(5.0));
        assert_eq!(h.sum(), 0.0);
        assert_eq!(h.negative().offset(), bucket_index(2.0, MAX_SCALE));
        assert_eq!(h.count_above(0.0), Some(1));
        assert_eq!(h.count_above(-1.0), Some(3));
        assert_eq!(h.count_above(-2.5), Some(4));
        assert_eq!(h.quantile(0.5), Some(0.0));
        assert_eq!(h.quantile(0.0), Some(-3.0));
        assert_eq!(h.quantile(1.0), Some(5.0));
    }

    #[test]
    fn empty_and_bad_inputs() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.share_above(1.0), None);
        assert_eq!(h.min(), None);
        assert_eq!(h.record(f64::NAN), Err(HistogramError::NotFinite));
        assert_eq!(h.record(f64::INFINITY), Err(HistogramError::NotFinite));
        assert_eq!(
            h.record_stats(2.0, 1.0, 3.0, 2),
            Err(HistogramError::InvalidStats)
        );
        assert!(h.is_empty());
        h.record_n(1.0, u64::MAX).unwrap();
        assert_eq!(h.record(1.0), Err(HistogramError::CountOverflow));
        assert_eq!(h.count(), u64::MAX);
        assert_eq!(h.quantile(1.5), None);
        assert_eq!(h.count_above(f64::NAN), None);
    }

    #[test]
    fn stats_are_exact_and_spread_over_min_max_and_mean() {
        let mut h = Histogram::new();
        h.record_stats(1.0, 1000.0, 1501.0, 12).unwrap();
        assert_eq!(h.count(), 12);
        assert_eq!(h.sum(), 1501.0);
        assert_eq!(h.min(), Some(1.0));
        assert_eq!(h.max(), Some(1000.0));
        // The other ten sit at (1501 - 1 - 1000) / 10 = 50.
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 / 50.0 - 1.0).abs() <= 0.011, "{p50}");
        assert_eq!(h.count_above(40.0), Some(11));
        assert_eq!(h.count_above(60.0), Some(1));
        assert_eq!(h.count_above(0.5), Some(12));
        let mut one = Histogram::new();
        one.record_stats(7.0, 7.0, 7.0, 1).unwrap();
        assert_eq!(one.quantile(0.5), Some(7.0));
        one.record_stats(7.0, 9.0, 0.0, 0).unwrap();
        assert_eq!(one.count(), 1);
    }

    #[test]
    fn six_decades_keep_scale_five() {
        let mut h = Histogram::new();
        let mut v = 1.0;
        while v <= 1e6 {
            h.record(v).unwrap();
            v *= 1.01;
        }
        h.record(1e6).unwrap();
        assert_eq!(h.scale(), 5);
        assert!(h.positive().counts().len() <= MAX_BUCKETS);
        assert!(h.allocated_buckets() <= MAX_BUCKETS);
    }

    #[test]
    fn wider_ranges_downscale_and_keep_every_count() {
        let mut h = Histogram::new();
        for v in [1.0, 1e7] {
            h.record(v).unwrap();
        }
        assert_eq!(h.scale(), 4);
        h.record(1e-7).unwrap();
        assert_eq!(h.scale(), 3);
        h.record(-1e300).unwrap();
        h.record(-1e-300).unwrap();
        assert!(h.scale() < 0);
        assert_eq!(h.count(), 5);
        assert_eq!(h.positive().total() + h.negative().total(), 5);
        let len = h.positive().counts().len() + h.negative().counts().len();
        assert!(len <= MAX_BUCKETS);
        assert!(h.allocated_buckets() <= MAX_BUCKETS);
        assert_eq!(h.positive().counts().first(), Some(&1));
        assert_eq!(h.positive().counts().last(), Some(&1));
    }

    #[test]
    fn merge_of_different_scales_equals_recording_everything() {
        let narrow: Vec<f64> = (1..=200).map(|i| 1.0 + i as f64 / 100.0).collect();
        let wide: Vec<f64> = (0..60).map(|i| 10f64.powf(i as f64 / 8.0)).collect();
        let (a, b) = (hist(&narrow), hist(&wide));
        assert!(a.scale() > b.scale());
        for (x, y) in [(&a, &b), (&b, &a)] {
            let mut m = x.clone();
            m.merge(y).unwrap();
            let all: Vec<f64> = if std::ptr::eq(x, &a) {
                narrow.iter().chain(&wide).copied().collect()
            } else {
                wide.iter().chain(&narrow).copied().collect()
            };
            let direct = hist(&all);
            assert_eq!(m.scale(), direct.scale());
            assert_eq!(m.positive(), direct.positive());
            assert_eq!(m.count(), direct.count());
            assert_eq!(m.min(), direct.min());
            assert_eq!(m.max(), direct.max());
            assert!((m.sum() - direct.sum()).abs() <= 1e-9 * direct.sum());
        }
    }

    #[test]
    fn merge_refuses_overflow_and_keeps_state() {
        let mut a = Histogram::new();
        a.record_n(3.0, u64::MAX - 1).unwrap();
        let b = hist(&[1.0, 2.0]);
        let before = a.clone();
        assert_eq!(a.merge(&b), Err(HistogramError::CountOverflow));
        assert_eq!(a, before);
        let mut e = Histogram::new();
        e.merge(&Histogram::new()).unwrap();
        assert!(e.is_empty());
        e.merge(&b).unwrap();
        assert_eq!(e, b);
    }

    #[test]
    fn otlp_fields_round_trip_and_are_checked() {
        let h = hist(&[0.0, 1.5, 3.0, 1e3, -2.0, -7.5]);
        let back = Histogram::from_otlp(
            h.scale(),
            h.zero_count(),
            (h.positive().offset(), &h.positive().counts()),
            (h.negative().offset(), &h.negative().counts()),
            h.count(),
            h.sum(),
            h.min().unwrap(),
            h.max().unwrap(),
        )
        .unwrap();
        assert_eq!(back, h);
        // Zero padding is trimmed; a fine scale is kept while it fits.
        let fine = Histogram::from_otlp(20, 0, (100, &[0, 2, 0, 1, 0]), (0, &[]), 3, 3.0, 1.0, 1.0)
            .unwrap();
        assert_eq!(fine.scale(), 20);
        assert_eq!(fine.positive().offset(), 101);
        assert_eq!(*fine.positive().counts(), [2, 0, 1]);
        // A range wider than MAX_BUCKETS is downscaled.
        let mut wide = vec![0u64; 5000];
        wide[0] = 1;
        wide[4999] = 1;
        let w = Histogram::from_otlp(10, 0, (0, &wide), (0, &[]), 2, 3.0, 1.0, 2.0).unwrap();
        assert!(w.scale() < 10);
        assert_eq!(w.positive().total(), 2);
        assert!(w.positive().counts().len() <= MAX_BUCKETS);
        let bad = |r: Result<Histogram, HistogramError>| assert!(r.is_err());
        bad(Histogram::from_otlp(
            21,
            0,
            (0, &[]),
            (0, &[]),
            0,
            0.0,
            0.0,
            0.0,
        ));
        bad(Histogram::from_otlp(
            0,
            1,
            (0, &[1]),
            (0, &[]),
            3,
            0.0,
            0.0,
            1.0,
        ));
        bad(Histogram::from_otlp(
            0,
            0,
            (0, &[u64::MAX, 1]),
            (0, &[]),
            0,
            0.0,
            0.0,
            1.0,
        ));
        bad(Histogram::from_otlp(
            0,
            0,
            (i32::MAX, &[1]),
            (0, &[]),
            1,
            0.0,
            0.0,
            1.0,
        ));
        bad(Histogram::from_otlp(
            0,
            0,
            (0, &[1]),
            (0, &[]),
            1,
            0.0,
            2.0,
            1.0,
        ));
        bad(Histogram::from_otlp(
            0,
            0,
            (0, &[1]),
            (0, &[]),
            1,
            f64::NAN,
            1.0,
            1.0,
        ));
    }

    #[test]
    fn counts_widen_past_u32_and_stay_exact() {
        let big = u64::from(u32::MAX);
        let mut h = Histogram::new();
        h.record_n(1.5, big).unwrap();
        assert!(matches!(h.positive.counts, Counts::Narrow(_)));
        assert_eq!(h.allocated_buckets(), 8);
        h.record(1.5).unwrap();
        assert!(matches!(h.positive.counts, Counts::Wide(_)));
        assert_eq!(h.allocated_buckets(), 8, "the same number of counts");
        assert_eq!(*h.positive().counts(), [big + 1]);
        // Two buckets of 1.5 and 1.6 that fit apiece merge past u32 in a downscale.
        let mut d = Histogram::new();
        d.record_n(1.5, big - 1).unwrap();
        d.record_n(1.6, 5).unwrap();
        assert!(matches!(d.positive.counts, Counts::Narrow(_)));
        d.record(1e-300).unwrap();
        assert!(d.scale() < 0);
        assert!(matches!(d.positive.counts, Counts::Wide(_)));
        assert_eq!(d.positive().total(), big + 5);
        assert_eq!(d.positive().counts().last(), Some(&(big + 4)));
        // A merge adding past u32 widens as well; widths never change what compares equal.
        let mut m = Histogram::new();
        m.record_n(1.5, big).unwrap();
        let mut two = Histogram::new();
        two.record_n(1.5, 1).unwrap();
        m.merge(&two).unwrap();
        assert_eq!(m, h);
        assert_eq!(m.quantile(0.5), h.quantile(0.5));
        let taken = m.take();
        assert!(matches!(taken.positive.counts, Counts::Wide(_)));
        assert_eq!(taken, h);
        let narrow = hist(&[1.5]).take();
        assert!(matches!(narrow.positive.counts, Counts::Narrow(_)));
        assert_eq!(*narrow.positive().counts(), [1]);
        assert_eq!(m, Histogram::new());
    }

    #[test]
    fn take_hands_out_everything_and_leaves_an_empty_histogram() {
        let values = [0.0, 1.5, 3.0, 1e3, -2.0, -7.5, 1e-9];
        let mut h = hist(&values);
        let capacity = h.allocated_buckets();
        let taken = h.take();
        assert_eq!(taken, hist(&values));
        assert_eq!(taken.allocated_buckets(), {
            taken.positive().len() + taken.negative().len()
        });
        assert_eq!(h, Histogram::new());
        assert_eq!(h.scale(), MAX_SCALE);
        assert_eq!(h.allocated_buckets(), capacity, "allocations kept");
        // The emptied histogram records like a new one.
        let again = [2.0, -1.0, 0.0];
        for v in again {
            h.record(v).unwrap();
        }
        assert_eq!(h, hist(&again));
    }

    #[test]
    fn share_above_uses_the_nearest_boundary() {
        let h = hist(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(h.share_above(0.5), Some(1.0));
        assert_eq!(h.share_above(10.0), Some(0.0));
        // 5.1 is in bucket 75 = (5.075, 5.187], nearer its lower boundary: exact share above 5.075.
        assert_eq!(h.share_above(5.1), Some(0.5));
        // 5.0 is in bucket 74 = (4.967, 5.075], nearer 4.967: the answer counts the 5.
        assert_eq!(h.share_above(5.0), Some(0.6));
        assert_eq!(h.share_above(4.99), Some(0.6));
        // Powers of two are boundaries: exact.
        assert_eq!(h.share_above(2.0), Some(0.8));
        assert_eq!(h.share_above(8.0), Some(0.2));
    }

    /// `x^32` for a mantissa `x < 2^53`, as little-endian 64-bit limbs.
    fn pow32(x: u64) -> Vec<u64> {
        let mut p = vec![x];
        for _ in 0..5 {
            let mut r = vec![0u64; 2 * p.len()];
            for (i, &a) in p.iter().enumerate() {
                let mut carry = 0u128;
                for (j, &b) in p.iter().enumerate() {
                    let t = r[i + j] as u128 + a as u128 * b as u128 + carry;
                    r[i + j] = t as u64;
                    carry = t >> 64;
                }
                r[i + p.len()] = carry as u64;
            }
            p = r;
        }
        p
    }

    /// Whether the number in `limbs` is strictly greater than `2^n`.
    fn above_power_of_two(limbs: &[u64], n: u32) -> bool {
        let (at, bit) = ((n / 64) as usize, n % 64);
        if limbs.iter().skip(at + 1).any(|&l| l != 0) {
            return true;
        }
        let Some(&top) = limbs.get(at) else {
            return false;
        };
        match top >> bit {
            0 => false,
            1 => top & ((1u64 << bit) - 1) != 0 || limbs[..at].iter().any(|&l| l != 0),
            _ => true,
        }
    }

    /// The scale-5 index of a positive finite `v` by its definition, `v ∈ (2^(i/32),
    /// 2^((i+1)/32)]`, in exact integer arithmetic: with `v = M·2^(e−52)`, `M ∈ [2^52, 2^53)`,
    /// `v > 2^(e + k/32)` exactly when `M^32 > 2^(52·32 + k)`.
    fn exact_index5(v: f64) -> i32 {
        let bits = v.to_bits();
        let (exponent_bits, fraction) = ((bits >> 52) as i32 & 0x7ff, bits & ((1 << 52) - 1));
        let (m, e) = if exponent_bits == 0 {
            let top = 63 - fraction.leading_zeros() as i32;
            (fraction << (52 - top), top - 1074)
        } else {
            (fraction | 1 << 52, exponent_bits - 1023)
        };
        let p = pow32(m);
        let below = (0..32)
            .filter(|&k| above_power_of_two(&p, 52 * 32 + k))
            .count() as i32;
        e * 32 + below - 1
    }

    /// The index at scales 1 to 5 as computed before the table: `log2`, clamped to the octave.
    fn log2_index(v: f64, scale: i32) -> i32 {
        let bits = v.to_bits();
        let exponent_bits = ((bits >> 52) & 0x7ff) as i32;
        let mantissa = bits & ((1 << 52) - 1);
        let (exp, power_of_two) = if exponent_bits == 0 {
            let top = 63 - mantissa.leading_zeros() as i32;
            (top - 1074, mantissa.is_power_of_two())
        } else {
            (exponent_bits - 1023, mantissa == 0)
        };
        if power_of_two {
            return (exp << scale) - 1;
        }
        let (lo, hi) = (exp << scale, ((exp + 1) << scale) - 1);
        ((v.log2() * (1u64 << scale) as f64).floor() as i32).clamp(lo, hi)
    }

    /// Checks `v` at every scale up to 5 against its exact scale-5 index: a coarser scale's
    /// boundaries are a subset of scale 5's, so its index is the scale-5 index shifted down.
    fn assert_exact(v: f64) {
        let exact = exact_index5(v);
        for scale in MIN_SCALE..=MAX_SCALE {
            assert_eq!(
                bucket_index(v, scale),
                exact >> (MAX_SCALE - scale),
                "{v:e} ({:#x}) at scale {scale}",
                v.to_bits()
            );
        }
    }

    #[test]
    fn octave_boundaries_are_the_smallest_mantissas_above_each_root() {
        for (k, &t) in (1u32..).zip(BOUNDARIES.iter()) {
            let n = 52 * 32 + k;
            assert!(above_power_of_two(&pow32(t | 1 << 52), n), "boundary {k}");
            assert!(
                !above_power_of_two(&pow32((t - 1) | 1 << 52), n),
                "boundary {k}"
            );
        }
        // The table agrees with a plain count of the thresholds at every slice edge.
        for slice in 0..64u64 {
            for m in [slice << 46, (slice << 46) + 1, ((slice + 1) << 46) - 1] {
                let above = BOUNDARIES.iter().filter(|&&t| m >= t).count() as i32;
                let entry = OCTAVE[slice as usize];
                let below = (entry >> 53) as i32 + i32::from(m >= entry & NEXT);
                assert_eq!(below, above + i32::from(m != 0), "mantissa {m:#x}");
            }
        }
    }

    #[test]
    fn indexes_are_exact_at_every_boundary_and_its_neighbours() {
        let thresholds: Vec<u64> = std::iter::once(0).chain(BOUNDARIES).collect();
        // Normal values: each boundary of an octave, ± 3 ulps (crossing into the octaves
        // beside it at the power of two).
        for exponent_bits in [1u64, 2, 3, 500, 1000, 1022, 1023, 1024, 1030, 1500, 2046] {
            for &t in &thresholds {
                let at = (exponent_bits << 52 | t) as i64;
                for d in -3..=3 {
                    let v = f64::from_bits((at + d) as u64);
                    if v > 0.0 && v.is_finite() {
                        assert_exact(v);
                    }
                }
            }
        }
        // Subnormals, their top bit at `p`, the bits below it those of each boundary.
        for p in [0u32, 1, 2, 5, 6, 7, 20, 40, 50, 51] {
            for &t in &thresholds {
                let at = (1u64 << p | t >> (52 - p)) as i64;
                for d in -3..=3 {
                    let m = at + d;
                    if m > 0 {
                        assert_exact(f64::from_bits(m as u64));
                    }
                }
            }
        }
        assert_exact(f64::MIN_POSITIVE);
        assert_exact(f64::MAX);
        assert_exact(f64::from_bits(1));
    }

    #[test]
    fn indexes_match_log2_away_from_boundaries_and_the_exact_index_everywhere() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (mut tried, mut differ) = (0, 0);
        while tried < 200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = f64::from_bits(state >> 1);
            if !(v > 0.0 && v.is_finite()) {
                continue;
            }
            tried += 1;
            for scale in 1..=MAX_SCALE {
                if bucket_index(v, scale) != log2_index(v, scale) {
                    // log2 may round across a boundary the value lies within a few ulps of.
                    differ += 1;
                    assert_exact(v);
                }
            }
            if tried % 64 == 0 {
                assert_exact(v);
            }
        }
        assert!(differ < 20, "{differ} of {tried} values differ from log2");
    }
}
