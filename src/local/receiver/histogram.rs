//! A small exponential-histogram accumulator, written apart from `crate::aggregate` so that what
//! the receiver reports cross-checks what loupe computed.
//!
//! In: OTLP exponential histogram points (scale, offset, bucket counts, zero count, min, max, sum).
//! Out: merged counts and estimates of quantiles and of the share of values above a threshold.
//! Pure.
//!
//! Bucket `i` at scale `s` holds values in `(base^i, base^(i+1)]` with `base = 2^(2^-s)`; negative
//! buckets mirror that for `-x`. Merging points of different scales lowers the finer one
//! (`i >> (s_fine - s_coarse)`), as the OTLP data model allows.

use std::collections::BTreeMap;

/// Distinct buckets kept per sign; past this the histogram is made coarser.
pub const MAX_BUCKETS: usize = 4096;
/// The finest and coarsest scales OTLP defines.
pub const MAX_SCALE: i32 = 20;
pub const MIN_SCALE: i32 = -10;

/// One exponential histogram point, as the receiver takes it from a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub scale: i32,
    pub zero_count: u64,
    pub positive_offset: i32,
    pub positive: Vec<u64>,
    pub negative_offset: i32,
    pub negative: Vec<u64>,
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Why a point was not merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PointError {
    #[error("scale {0} is outside -10..=20")]
    Scale(i32),
    #[error("bucket index overflows")]
    Index,
}

/// Merged exponential histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpHistogram {
    scale: i32,
    zero: u64,
    positive: BTreeMap<i64, u64>,
    negative: BTreeMap<i64, u64>,
    count: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Default for ExpHistogram {
    fn default() -> Self {
        ExpHistogram {
            scale: MAX_SCALE,
            zero: 0,
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
            count: 0,
            sum: 0.0,
            min: None,
            max: None,
        }
    }
}

fn downscale(map: &mut BTreeMap<i64, u64>, by: u32) {
    if by == 0 {
        return;
    }
    let old = std::mem::take(map);
    for (i, c) in old {
        *map.entry(i >> by).or_insert(0) += c;
    }
}

fn add_buckets(
    map: &mut BTreeMap<i64, u64>,
    offset: i32,
    counts: &[u64],
    by: u32,
) -> Result<(), PointError> {
    for (k, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let k = i64::try_from(k).map_err(|_| PointError::Index)?;
        let i = i64::from(offset).checked_add(k).ok_or(PointError::Index)?;
        let slot = map.entry(i >> by).or_insert(0);
        *slot = slot.saturating_add(c);
    }
    Ok(())
}

impl ExpHistogram {
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn sum(&self) -> f64 {
        self.sum
    }
    pub fn min(&self) -> Option<f64> {
        self.min
    }
    pub fn max(&self) -> Option<f64> {
        self.max
    }
    pub fn scale(&self) -> i32 {
        self.scale
    }

    /// Adds a delta point.
    pub fn merge(&mut self, p: &Point) -> Result<(), PointError> {
        if !(MIN_SCALE..=MAX_SCALE).contains(&p.scale) {
            return Err(PointError::Scale(p.scale));
        }
        if p.scale < self.scale {
            let by = (self.scale - p.scale) as u32;
            downscale(&mut self.positive, by);
            downscale(&mut self.negative, by);
            self.scale = p.scale;
        }
        let by = (p.scale - self.scale) as u32;
        add_buckets(&mut self.positive, p.positive_offset, &p.positive, by)?;
        add_buckets(&mut self.negative, p.negative_offset, &p.negative, by)?;
        while (self.positive.len() > MAX_BUCKETS || self.negative.len() > MAX_BUCKETS)
            && self.scale > MIN_SCALE
        {
            downscale(&mut self.positive, 1);
            downscale(&mut self.negative, 1);
            self.scale -= 1;
        }
        self.zero = self.zero.saturating_add(p.zero_count);
        self.count = self.count.saturating_add(p.count);
        self.sum += p.sum.unwrap_or(0.0);
        self.min = match (self.min, p.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, p.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    /// `(lower, upper, count)` of every non-empty bucket, in ascending order of value.
    fn ranges(&self) -> Vec<(f64, f64, u64)> {
        let base = 2f64.powf(2f64.powi(-self.scale));
        let bound = |i: i64| base.powf(i as f64);
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        for (&i, &c) in self.negative.iter().rev() {
            out.push((-bound(i + 1), -bound(i), c));
        }
        if self.zero > 0 {
            out.push((0.0, 0.0, self.zero));
        }
        for (&i, &c) in &self.positive {
            out.push((bound(i), bound(i + 1), c));
        }
        // min and max, when known, narrow the outer buckets.
        if let Some(min) = self.min {
            if let Some(first) = out.first_mut() {
                first.0 = first.0.max(min).min(first.1);
            }
        }
        if let Some(max) = self.max {
            if let Some(last) = out.last_mut() {
                last.1 = last.1.min(max).max(last.0);
            }
        }
        out
    }

    fn bucket_total(&self) -> u64 {
        self.ranges().iter().map(|r| r.2).sum()
    }

    /// The value at quantile `q` (0..=1), interpolated linearly inside its bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let ranges = self.ranges();
        let total: u64 = ranges.iter().map(|r| r.2).sum();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0f64;
        for &(lo, hi, c) in &ranges {
            let next = seen + c as f64;
            if rank <= next {
                let frac = if c == 0 {
                    0.0
                } else {
                    (rank - seen) / c as f64
                };
                return Some(lo + (hi - lo) * frac.clamp(0.0, 1.0));
            }
            seen = next;
        }
        ranges.last().map(|r| r.1)
    }

    /// The share (0..=1) of values above `t`, the bucket that holds `t` split linearly.
    pub fn share_above(&self, t: f64) -> Option<f64> {
        let total = self.bucket_total();
        if total == 0 {
            return None;
        }
        let mut above = 0f64;
        for (lo, hi, c) in self.ranges() {
            if lo == hi {
                // A point (the zero bucket, or a bucket narrowed to min = max): all or nothing.
                if lo > t {
                    above += c as f64;
                }
            } else if lo >= t {
                above += c as f64;
            } else if hi > t {
                above += c as f64 * (hi - t) / (hi - lo);
            }
        }
        Some(above / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scale 0: bucket i holds (2^i, 2^(i+1)].
    fn point(offset: i32, counts: &[u64]) -> Point {
        Point {
            scale: 0,
            positive_offset: offset,
            positive: counts.to_vec(),
            count: counts.iter().sum(),
            ..Point::default()
        }
    }

    #[test]
    fn quantiles_and_share_of_a_known_histogram() {
        // 10 values in (1,2], 10 in (2,4], 80 in (4,8].
        let mut h = ExpHistogram::default();
        h.merge(&point(0, &[10, 10, 80])).unwrap();
        assert_eq!(h.count(), 100);
        assert_eq!(h.scale(), 0);
        // p50: rank 50 falls 30/80 into (4,8].
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 5.5).abs() < 1e-9, "{p50}");
        // p10 is the top of the first bucket.
        assert!((h.quantile(0.1).unwrap() - 2.0).abs() < 1e-9);
        // Above 4: the whole last bucket. Above 6: half of it. Above 1: all.
        assert!((h.share_above(4.0).unwrap() - 0.8).abs() < 1e-9);
        assert!((h.share_above(6.0).unwrap() - 0.4).abs() < 1e-9);
        assert!((h.share_above(1.0).unwrap() - 1.0).abs() < 1e-9);
        assert!((h.share_above(8.0).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn min_and_max_narrow_the_outer_buckets() {
        let mut p = point(0, &[4, 0, 4]);
        p.min = Some(1.5);
        p.max = Some(6.0);
        let mut h = ExpHistogram::default();
        h.merge(&p).unwrap();
        assert_eq!(h.quantile(0.0), Some(1.5));
        assert_eq!(h.quantile(1.0), Some(6.0));
        assert_eq!(h.share_above(6.0), Some(0.0));
    }

    #[test]
    fn merging_a_coarser_point_lowers_the_scale() {
        let mut h = ExpHistogram::default();
        // Scale 1: bucket 2 is (2, 2.83], bucket 3 is (2.83, 4].
        h.merge(&Point {
            scale: 1,
            positive_offset: 2,
            positive: vec![1, 1],
            count: 2,
            sum: Some(5.0),
            ..Point::default()
        })
        .unwrap();
        h.merge(&point(1, &[2])).unwrap();
        assert_eq!(h.scale(), 0);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), 5.0);
        // All four now in (2,4].
        assert!((h.share_above(3.0).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn negative_and_zero_buckets_order_below_positive() {
        let mut h = ExpHistogram::default();
        h.merge(&Point {
            scale: 0,
            zero_count: 2,
            negative_offset: 0,
            negative: vec![2],
            positive_offset: 0,
            positive: vec![4],
            count: 8,
            ..Point::default()
        })
        .unwrap();
        assert!(h.quantile(0.1).unwrap() < 0.0);
        assert_eq!(h.quantile(0.4), Some(0.0));
        assert!((h.share_above(0.0).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn bad_scales_and_huge_offsets_are_errors_not_panics() {
        let mut h = ExpHistogram::default();
        assert_eq!(
            h.merge(&Point {
                scale: 99,
                ..Point::default()
            }),
            Err(PointError::Scale(99))
        );
        let wide = Point {
            scale: 20,
            positive_offset: i32::MAX,
            positive: vec![1, 1],
            count: 2,
            ..Point::default()
        };
        assert!(h.merge(&wide).is_ok());
        assert!(h.quantile(0.5).is_some());
        assert_eq!(h.quantile(2.0), None);
    }

    /// Bucket index of `v > 0` at `scale`: the `i` with `base^i < v <= base^(i+1)`.
    fn index(v: f64, scale: i32) -> i64 {
        ((v.log2() * 2f64.powi(scale)).ceil() as i64) - 1
    }

    #[test]
    fn estimates_of_known_values_are_close_to_exact() {
        // 1000 latencies spread over 0.5 .. 250 ms, bucketed at scale 6 (buckets ~1.1% wide).
        let values: Vec<f64> = (1..=1000)
            .map(|k| 0.5 * (500f64).powf(k as f64 / 1000.0))
            .collect();
        let scale = 6;
        let lo = values.iter().map(|&v| index(v, scale)).min().unwrap_or(0);
        let hi = values.iter().map(|&v| index(v, scale)).max().unwrap_or(0);
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for &v in &values {
            counts[(index(v, scale) - lo) as usize] += 1;
        }
        let mut h = ExpHistogram::default();
        h.merge(&Point {
            scale,
            positive_offset: lo as i32,
            positive: counts,
            count: values.len() as u64,
            sum: Some(values.iter().sum()),
            min: values.first().copied(),
            max: values.last().copied(),
            ..Point::default()
        })
        .unwrap();
        for t in [1.0, 5.0, 10.0, 100.0] {
            let exact = values.iter().filter(|&&v| v > t).count() as f64 / values.len() as f64;
            let got = h.share_above(t).unwrap();
            assert!((got - exact).abs() < 0.01, "above {t}: {got} vs {exact}");
        }
        for q in [0.5, 0.99] {
            let exact = values[((q * values.len() as f64) as usize).min(values.len() - 1)];
            let got = h.quantile(q).unwrap();
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
    }

    #[test]
    fn too_many_buckets_make_it_coarser() {
        let mut h = ExpHistogram::default();
        let p = Point {
            scale: 20,
            positive_offset: 0,
            positive: vec![1; MAX_BUCKETS * 2],
            count: (MAX_BUCKETS * 2) as u64,
            ..Point::default()
        };
        h.merge(&p).unwrap();
        assert!(h.positive.len() <= MAX_BUCKETS);
        assert_eq!(h.scale(), 19);
        assert_eq!(h.bucket_total(), (MAX_BUCKETS * 2) as u64);
    }
}
