//! Aggregation: one series per (namespace, name, dimensions, unit, resolution), each a mergeable
//! exponential histogram with exact count, sum, min and max; a cap on live series.
//!
//! In: EMF data points ([`Aggregator::add_line`], [`Aggregator::add_point`]) and other metrics by
//! key ([`Aggregator::record`]). Out: [`Aggregator::drain`], every series recorded since the last
//! drain (delta temporality), and [`Refused`], what the caps turned away. Pure data: no I/O, no
//! clock.
//!
//! # Series across drains
//! A drain hands out the data of every series recorded since the drain before and resets each in
//! place: the series keeps its key and its bucket allocation, so the next interval adds to it
//! without allocating (a drain happens at every flush, often every invocation). A series that
//! received nothing during a whole interval is evicted at the drain that ends it.
//!
//! The caps (`max_series`, and the key budget) bound the series held at all times, the idle ones
//! kept from the last drain included. An idle series never stands in the way of a new one: when a
//! new series would pass a cap, every series idle since the last drain is evicted first, and the
//! point is refused only if the series with data still fill the cap. So, as seen from outside,
//! the caps count the series recorded since the last drain.
//!
//! # Samples
//! * `Samples::One`, `Samples::Values`: each value is one observation.
//! * `Samples::Weighted`: each value counts `count` times.
//! * `Samples::Stats {min, max, sum, count}`: count, sum, min and max are exact; the buckets get
//!   one observation at `min`, one at `max` and the other `count − 2` at their mean (see
//!   [`Histogram::record_stats`]), since the individual values are unknown.
//!
//! The EMF timestamp is not part of a series: a series holds everything recorded since the last
//! drain, and the caller's flush decides the time window it stands for.
//!
//! A point whose samples would overflow the series' count, or hold a non-finite value or an
//! inconsistent statistic set, is refused whole and counted in [`Refused::invalid_samples`].
//!
//! # Memory
//! Worst case per series held: the histogram's counts, at most [`MAX_BUCKETS`] × 8 = 5,120 bytes;
//! about 300 bytes of fixed size (the table entry with its histogram, the table's spare room, and
//! the shared header of the owned key); and the key, twice: once in one buffer that lookups
//! compare with (its strings and 4 bytes of length per string), and once, from the series' first
//! drain on, as the owned [`SeriesKey`] every drain hands out a shared clone of (its strings and
//! 48 bytes per dimension). All series share a budget for the owned form:
//! [`KEY_BYTES_PER_SERIES`] × `max_series` (a key may be long as long as most are short; EMF
//! allows 30 dimensions of 1,024 characters); the buffer form is at most 17 bytes longer. So
//! `max_series` series cost at most about `max_series × (5,120 + 300 + 2 × 256)` bytes: 6 MB at
//! the default of 1,000, idle series held included. A new series beyond either cap is refused and
//! counted by metric name (the first [`REFUSED_NAMES`] names, then in one total).

mod histogram;
mod series;

pub use histogram::{
    Buckets, FINEST_SCALE, Histogram, HistogramError, MAX_BUCKETS, MAX_SCALE, MIN_SCALE,
    bucket_index, lower_boundary,
};
pub use series::{Series, SeriesKey};

use crate::emf::{DataPoint, EmfLine, Samples};
use series::{Full, Parts, SeriesMap};

/// Average key bytes budgeted per series (namespace, name, dimension keys and values).
pub const KEY_BYTES_PER_SERIES: usize = 256;
/// Metric names whose refusals are counted one by one; the rest share one counter.
pub const REFUSED_NAMES: usize = 32;

/// What the aggregator turned away since the last [`Aggregator::take_refused`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Points refused because a new series would pass `max_series`, by metric name.
    pub series_cap: Vec<(String, u64)>,
    /// Points refused by the series cap whose name did not fit in the list above.
    pub series_cap_other: u64,
    /// Points refused because the keys of the live series used their byte budget.
    pub key_budget: u64,
    /// Points refused for their samples: a non-finite value, min > max, or a count overflow.
    pub invalid_samples: u64,
}

impl Refused {
    /// Every refused point.
    pub fn total(&self) -> u64 {
        self.series_cap.iter().map(|(_, n)| n).sum::<u64>()
            + self.series_cap_other
            + self.key_budget
            + self.invalid_samples
    }

    fn series_cap(&mut self, name: &str) {
        if let Some((_, n)) = self.series_cap.iter_mut().find(|(m, _)| m == name) {
            *n += 1;
        } else if self.series_cap.len() < REFUSED_NAMES {
            self.series_cap.push((name.to_string(), 1));
        } else {
            self.series_cap_other += 1;
        }
    }
}

/// The series map and its refusal counters.
pub struct Aggregator {
    series: SeriesMap,
    refused: Refused,
}

impl Aggregator {
    /// At most `max_series` live series (at least 1), and `max_series ×`
    /// [`KEY_BYTES_PER_SERIES`] bytes of keys.
    pub fn new(max_series: usize) -> Aggregator {
        let max_series = max_series.max(1);
        Aggregator {
            series: SeriesMap::new(max_series, max_series.saturating_mul(KEY_BYTES_PER_SERIES)),
            refused: Refused::default(),
        }
    }

    /// Adds every data point of a valid EMF line; returns how many were added.
    pub fn add_line(&mut self, line: &EmfLine<'_>) -> usize {
        line.points.iter().filter(|p| self.add_point(p)).count()
    }

    /// Adds one data point; `false` when it was refused (a cap, or invalid samples).
    pub fn add_point(&mut self, p: &DataPoint<'_>) -> bool {
        let n = match sample_count(&p.samples) {
            Ok(n) => n,
            Err(_) => {
                self.refused.invalid_samples += 1;
                return false;
            }
        };
        if n == 0 {
            return true;
        }
        let add = |h: &mut Histogram| apply(h, &p.samples, n).is_ok();
        let found = match Parts::of_point(p) {
            Some(parts) => self.series.update(&parts, add),
            // Dimensions out of order: normalise through an owned key.
            None => self.series.update_key(&SeriesKey::from_point(p), add),
        };
        self.counted(found, &p.name)
    }

    /// Records one value of a series that does not come from EMF (platform metrics, loupe's own);
    /// `false` when refused.
    pub fn record(&mut self, key: &SeriesKey, value: f64) -> bool {
        self.record_n(key, value, 1)
    }

    /// Records `n` observations of `value`; `false` when refused.
    pub fn record_n(&mut self, key: &SeriesKey, value: f64, n: u64) -> bool {
        if !value.is_finite() {
            self.refused.invalid_samples += 1;
            return false;
        }
        if n == 0 {
            return true;
        }
        let found = self
            .series
            .update_key(key, |h| h.record_n(value, n).is_ok());
        self.counted(found, key.name())
    }

    /// Series with data since the last drain: what [`Aggregator::drain`] would hand out.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Series held: those with data since the last drain and the idle ones kept from it (at
    /// most `max_series`).
    pub fn held(&self) -> usize {
        self.series.held()
    }

    pub fn is_empty(&self) -> bool {
        self.series.len() == 0
    }

    /// Bytes the keys of the series held take from the key budget.
    pub fn key_bytes(&self) -> usize {
        self.series.key_bytes()
    }

    /// The histogram of a series with data since the last drain.
    pub fn get(&self, key: &SeriesKey) -> Option<&Histogram> {
        self.series.get(key)
    }

    /// Every series recorded since the last drain, sorted by key. Each is reset in place and
    /// kept for the next interval; the series idle since the drain before are evicted.
    pub fn drain(&mut self) -> Vec<Series> {
        self.series.drain()
    }

    /// The refusals so far.
    pub fn refused(&self) -> &Refused {
        &self.refused
    }

    /// The refusals since the last call; the counters restart from zero.
    pub fn take_refused(&mut self) -> Refused {
        std::mem::take(&mut self.refused)
    }

    /// Counts what an update refused: a cap, or samples the histogram turned away.
    fn counted(&mut self, found: Result<bool, Full>, name: &str) -> bool {
        match found {
            Ok(true) => true,
            Ok(false) => {
                self.refused.invalid_samples += 1;
                false
            }
            Err(Full::Series) => {
                self.refused.series_cap(name);
                false
            }
            Err(Full::KeyBytes) => {
                self.refused.key_budget += 1;
                false
            }
        }
    }
}

/// The number of observations in `s`, after checking every value can be recorded.
#[inline]
fn sample_count(s: &Samples) -> Result<u64, HistogramError> {
    match s {
        Samples::One(v) => {
            if v.is_finite() {
                Ok(1)
            } else {
                Err(HistogramError::NotFinite)
            }
        }
        Samples::Values(values) => {
            if values.iter().all(|v| v.is_finite()) {
                Ok(values.len() as u64)
            } else {
                Err(HistogramError::NotFinite)
            }
        }
        Samples::Weighted(pairs) => pairs.iter().try_fold(0u64, |total, &(v, n)| {
            if !v.is_finite() {
                return Err(HistogramError::NotFinite);
            }
            total.checked_add(n).ok_or(HistogramError::CountOverflow)
        }),
        Samples::Stats {
            min,
            max,
            sum,
            count,
        } => {
            if min.is_finite() && max.is_finite() && sum.is_finite() && min <= max {
                Ok(*count)
            } else {
                Err(HistogramError::InvalidStats)
            }
        }
    }
}

/// Records checked samples of `n` observations; refused whole if the count would overflow.
#[inline]
fn apply(h: &mut Histogram, s: &Samples, n: u64) -> Result<(), HistogramError> {
    h.count()
        .checked_add(n)
        .ok_or(HistogramError::CountOverflow)?;
    // Every value is finite and the total fits, so none of the calls below can fail.
    match s {
        Samples::One(v) => h.record(*v),
        Samples::Values(values) => values.iter().try_for_each(|&v| h.record(v)),
        Samples::Weighted(pairs) => pairs.iter().try_for_each(|&(v, c)| h.record_n(v, c)),
        Samples::Stats {
            min,
            max,
            sum,
            count,
        } => h.record_stats(*min, *max, *sum, *count),
    }
}

#[cfg(test)]
mod tests;
