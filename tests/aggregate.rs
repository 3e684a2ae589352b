//! Property tests of the exponential histogram against the exact answers of the sorted values.
//!
//! Definitions checked here (the module doc of `loupe::aggregate` states them):
//! * quantile(q) answers the value of rank max(1, ⌈q·n⌉) within 2 % relative error;
//! * share_above(x) answers the exact share of values above some threshold t with
//!   |t − x| ≤ 2 %·|x|;
//! * count, min and max are exact, and sum is the f64 sum in recording order.

use loupe::aggregate::{Histogram, MAX_BUCKETS};
use proptest::prelude::*;

const BOUND: f64 = 0.02;

/// The worst relative error at `scale`: √b − 1 with b = 2^(2^-scale).
fn scale_bound(scale: i32) -> f64 {
    (0.5 * (-scale as f64).exp2()).exp2() - 1.0
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn count_above(sorted: &[f64], t: f64) -> u64 {
    (sorted.len() - sorted.partition_point(|&v| v <= t)) as u64
}

/// Every count "values above t" that some t in [lo, hi] gives: the count above `lo`, and the
/// count above each value in (lo, hi].
fn achievable_counts(sorted: &[f64], lo: f64, hi: f64) -> Vec<u64> {
    let start = sorted.partition_point(|&v| v <= lo);
    let end = sorted.partition_point(|&v| v <= hi);
    let mut out = vec![count_above(sorted, lo)];
    let mut inside: Vec<f64> = sorted[start..end].to_vec();
    inside.dedup();
    out.extend(inside.iter().map(|&v| count_above(sorted, v)));
    out
}

fn build(values: &[f64]) -> Histogram {
    let mut h = Histogram::new();
    for &v in values {
        h.record(v).expect("finite value");
    }
    h
}

fn check_exact_stats(h: &Histogram, values: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(h.count(), values.len() as u64);
    let sum = values.iter().fold(0.0, |s, v| s + v);
    prop_assert_eq!(h.sum(), sum);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    prop_assert_eq!(h.min(), Some(min));
    prop_assert_eq!(h.max(), Some(max));
    let buckets = h.positive().total() + h.negative().total() + h.zero_count();
    prop_assert_eq!(buckets, h.count());
    prop_assert!(h.positive().counts().len() + h.negative().counts().len() <= MAX_BUCKETS);
    Ok(())
}

fn check_queries(
    h: &Histogram,
    values: &[f64],
    probes: &[f64],
    bound: f64,
) -> Result<(), TestCaseError> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    for q in [
        0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0,
    ]
    .into_iter()
    .chain(probes.iter().map(|p| p.abs().fract()))
    {
        let exact = exact_quantile(&sorted, q);
        let got = h.quantile(q).expect("non-empty");
        if exact == 0.0 {
            prop_assert_eq!(got, 0.0, "q={}", q);
        } else {
            let err = (got - exact).abs() / exact.abs();
            prop_assert!(
                err <= bound,
                "q={} exact={} got={} err={}",
                q,
                exact,
                got,
                err
            );
        }
    }
    let mut distinct = sorted.clone();
    distinct.dedup();
    let thresholds = distinct.into_iter().chain(probes.iter().copied());
    for x in thresholds {
        let got = h.count_above(x).expect("not NaN");
        let (lo, hi) = (x - bound * x.abs(), x + bound * x.abs());
        let ok = achievable_counts(&sorted, lo, hi);
        prop_assert!(
            ok.contains(&got),
            "x={} got={} achievable in [{}, {}]: {:?}",
            x,
            got,
            lo,
            hi,
            ok
        );
        let share = h.share_above(x).expect("non-empty");
        prop_assert_eq!(share, got as f64 / values.len() as f64);
    }
    Ok(())
}

/// Magnitudes spread log-uniformly over `decades` decades from 10^base.
fn magnitudes(base: f64, decades: f64, n: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0..=1.0f64, 1..n)
        .prop_map(move |us| us.iter().map(|u| 10f64.powf(base + u * decades)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Positive values over a million-fold range (plus zeros) keep scale 5 and the 2 % bound.
    #[test]
    fn million_fold_positive_range(
        base in -9.0..9.0f64,
        mags in magnitudes(0.0, 6.0, 400),
        zeros in 0usize..5,
        probes in prop::collection::vec(0.0..=1.0f64, 0..20),
    ) {
        let mut values: Vec<f64> = mags.iter().map(|m| m * 10f64.powf(base)).collect();
        // Pin both ends of the 1e6 range.
        values.push(10f64.powf(base));
        values.push(10f64.powf(base + 6.0));
        values.extend(std::iter::repeat_n(0.0, zeros));
        let h = build(&values);
        prop_assert!(h.scale() >= 5, "scale {}", h.scale());
        check_exact_stats(&h, &values)?;
        let probes: Vec<f64> = probes.iter().map(|u| 10f64.powf(base + u * 6.0)).collect();
        check_queries(&h, &values, &probes, BOUND)?;
        check_queries(&h, &values, &probes, scale_bound(h.scale()) + 1e-9)?;
    }

    /// Both signs, each over a 500-fold range (the shared budget still holds scale 5).
    #[test]
    fn both_signs(
        pos_base in -6.0..6.0f64,
        neg_base in -6.0..6.0f64,
        pos in magnitudes(0.0, 2.7, 200),
        neg in magnitudes(0.0, 2.7, 200),
        probes in prop::collection::vec(-1.0..=1.0f64, 0..20),
    ) {
        let mut values: Vec<f64> = pos.iter().map(|m| m * 10f64.powf(pos_base)).collect();
        values.extend(neg.iter().map(|m| -m * 10f64.powf(neg_base)));
        let h = build(&values);
        prop_assert!(h.scale() >= 5, "scale {}", h.scale());
        check_exact_stats(&h, &values)?;
        let probes: Vec<f64> = probes
            .iter()
            .map(|u| u.signum() * 10f64.powf(pos_base + u.abs() * 2.7))
            .collect();
        check_queries(&h, &values, &probes, BOUND)?;
    }

    /// Any finite values: the exact statistics hold, and queries keep the bound of the scale the
    /// range forced.
    #[test]
    fn any_range(
        values in prop::collection::vec(
            prop_oneof![
                (-300.0..300.0f64).prop_map(|e| 10f64.powf(e)),
                (-300.0..300.0f64).prop_map(|e| -(10f64.powf(e))),
                Just(0.0),
                -1000.0..1000.0f64,
            ],
            1..300,
        ),
    ) {
        let h = build(&values);
        check_exact_stats(&h, &values)?;
        check_queries(&h, &values, &[], scale_bound(h.scale()) + 1e-9)?;
    }

    /// Merging two histograms of any scales gives the histogram of all the values.
    #[test]
    fn merge_equals_recording_everything(
        a in prop::collection::vec((-8.0..8.0f64).prop_map(|e| 10f64.powf(e)), 1..200),
        b in prop::collection::vec((-2.0..2.0f64).prop_map(|e| -(10f64.powf(e))), 1..200),
        c in prop::collection::vec((0.0..0.5f64).prop_map(|e| 10f64.powf(e)), 1..200),
    ) {
        for parts in [[&a, &b, &c], [&c, &a, &b], [&b, &c, &a]] {
            let mut merged = Histogram::new();
            for p in parts {
                merged.merge(&build(p)).expect("no overflow");
            }
            let all: Vec<f64> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let direct = build(&all);
            prop_assert_eq!(merged.scale(), direct.scale());
            prop_assert_eq!(merged.positive(), direct.positive());
            prop_assert_eq!(merged.negative(), direct.negative());
            prop_assert_eq!(merged.zero_count(), direct.zero_count());
            prop_assert_eq!(merged.count(), direct.count());
            prop_assert_eq!(merged.min(), direct.min());
            prop_assert_eq!(merged.max(), direct.max());
            check_queries(&merged, &all, &[], scale_bound(merged.scale()) + 1e-9)?;
        }
    }

    /// Weighted values are n observations each.
    #[test]
    fn weighted_is_repeated_values(
        pairs in prop::collection::vec(((-3.0..3.0f64).prop_map(|e| 10f64.powf(e)), 0u64..50), 1..50),
    ) {
        let mut h = Histogram::new();
        let mut values = Vec::new();
        for &(v, n) in &pairs {
            h.record_n(v, n).expect("finite");
            values.extend(std::iter::repeat_n(v, n as usize));
        }
        prop_assume!(!values.is_empty());
        let direct = build(&values);
        prop_assert_eq!(h.count(), direct.count());
        prop_assert_eq!(h.positive(), direct.positive());
        prop_assert_eq!(h.min(), direct.min());
        prop_assert_eq!(h.max(), direct.max());
        check_queries(&h, &values, &[], BOUND)?;
    }
}
