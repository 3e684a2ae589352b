use std::borrow::Cow;

use super::*;
use crate::emf::Unit;

fn point<'a>(name: &'a str, dims: &[(&'a str, &'a str)], samples: Samples) -> DataPoint<'a> {
    DataPoint {
        namespace: Cow::Borrowed("MyApp"),
        name: Cow::Borrowed(name),
        unit: Unit::Milliseconds,
        storage_resolution: 60,
        dimensions: dims
            .iter()
            .map(|&(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect(),
        samples,
    }
}

fn key(name: &str, dims: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(
        "MyApp",
        name,
        Unit::Milliseconds,
        60,
        dims.iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn one_series_per_key_and_samples_are_exact() {
    let mut a = Aggregator::new(10);
    let dims = [("Service", "api"), ("customer", "x")];
    assert!(a.add_point(&point(
        "Latency",
        &dims,
        Samples::Values(vec![1.0, 2.0, 3.0])
    )));
    assert!(a.add_point(&point(
        "Latency",
        &dims,
        Samples::Weighted(vec![(10.0, 4), (0.5, 2)])
    )));
    assert!(a.add_point(&point(
        "Latency",
        &dims,
        Samples::Stats {
            min: 0.25,
            max: 40.0,
            sum: 60.25,
            count: 5
        }
    )));
    assert_eq!(a.len(), 1);
    let h = a.get(&key("Latency", &dims)).expect("series exists");
    assert_eq!(h.count(), 3 + 6 + 5);
    assert_eq!(h.sum(), 6.0 + 41.0 + 60.25);
    assert_eq!(h.min(), Some(0.25));
    assert_eq!(h.max(), Some(40.0));
}

#[test]
fn key_parts_each_make_a_new_series() {
    let mut a = Aggregator::new(100);
    let v = || Samples::Values(vec![1.0]);
    a.add_point(&point("Latency", &[("Service", "api")], v()));
    a.add_point(&point("Latency", &[("Service", "web")], v()));
    a.add_point(&point("Latency", &[], v()));
    a.add_point(&point("Errors", &[("Service", "api")], v()));
    let mut p = point("Latency", &[("Service", "api")], v());
    p.unit = Unit::Seconds;
    a.add_point(&p);
    p.storage_resolution = 1;
    a.add_point(&p);
    p.namespace = Cow::Borrowed("Other");
    a.add_point(&p);
    assert_eq!(a.len(), 7);
    // The same key again adds to its series.
    a.add_point(&point("Latency", &[("Service", "api")], v()));
    assert_eq!(a.len(), 7);
    assert_eq!(
        a.get(&key("Latency", &[("Service", "api")]))
            .map(|h| h.count()),
        Some(2)
    );
}

#[test]
fn unsorted_dimensions_land_in_the_sorted_series() {
    let mut a = Aggregator::new(10);
    let v = || Samples::Values(vec![1.0]);
    a.add_point(&point("L", &[("b", "2"), ("a", "1")], v()));
    a.add_point(&point("L", &[("a", "1"), ("b", "2")], v()));
    assert_eq!(a.len(), 1);
    let k = key("L", &[("b", "2"), ("a", "1")]);
    assert_eq!(
        k.dimensions(),
        &[("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(a.get(&k).map(|h| h.count()), Some(2));
}

#[test]
fn dimension_pairs_do_not_run_together() {
    // ("ab","c") and ("a","bc") must be different series.
    let mut a = Aggregator::new(10);
    let v = || Samples::Values(vec![1.0]);
    a.add_point(&point("L", &[("ab", "c")], v()));
    a.add_point(&point("L", &[("a", "bc")], v()));
    assert_eq!(a.len(), 2);
}

#[test]
fn series_cap_refuses_new_series_and_counts_them_by_name() {
    let mut a = Aggregator::new(2);
    let v = || Samples::Values(vec![1.0]);
    assert!(a.add_point(&point("A", &[], v())));
    assert!(a.add_point(&point("B", &[], v())));
    assert!(!a.add_point(&point("C", &[], v())));
    assert!(!a.add_point(&point("C", &[("k", "v")], v())));
    assert!(!a.add_point(&point("D", &[], v())));
    // Existing series still take data.
    assert!(a.add_point(&point("A", &[], v())));
    assert_eq!(a.len(), 2);
    assert_eq!(
        a.refused().series_cap,
        vec![("C".to_string(), 2), ("D".to_string(), 1)]
    );
    assert_eq!(a.refused().total(), 3);
    let taken = a.take_refused();
    assert_eq!(taken.total(), 3);
    assert_eq!(a.refused().total(), 0);
}

#[test]
fn refused_names_are_bounded() {
    let mut a = Aggregator::new(1);
    a.record(&key("kept", &[]), 1.0);
    for i in 0..(REFUSED_NAMES + 10) {
        assert!(!a.record(&key(&format!("m{i}"), &[]), 1.0));
    }
    assert_eq!(a.refused().series_cap.len(), REFUSED_NAMES);
    assert_eq!(a.refused().series_cap_other, 10);
    assert_eq!(a.refused().total(), REFUSED_NAMES as u64 + 10);
}

#[test]
fn key_bytes_are_budgeted() {
    let mut a = Aggregator::new(4);
    let budget = 4 * KEY_BYTES_PER_SERIES;
    let long = "v".repeat(budget / 2);
    assert!(a.record(&key("L", &[("k", &long)]), 1.0));
    assert!(!a.record(&key("M", &[("k", &long)]), 1.0));
    assert_eq!(a.refused().key_budget, 1);
    assert!(a.key_bytes() <= budget);
    // Short keys still fit.
    assert!(a.record(&key("S", &[]), 1.0));
    a.drain();
    // The drained series are kept, with their key bytes, until a new key needs the room.
    assert!(a.key_bytes() > budget / 2);
    assert!(a.record(&key("M", &[("k", &long)]), 1.0));
    assert!(a.key_bytes() <= budget);
    assert_eq!(a.held(), 1, "the idle series made room");
    assert_eq!(a.refused().key_budget, 1);
}

#[test]
fn invalid_samples_are_refused_whole_and_counted() {
    let mut a = Aggregator::new(10);
    assert!(!a.add_point(&point("L", &[], Samples::Values(vec![1.0, f64::NAN]))));
    assert!(!a.add_point(&point(
        "L",
        &[],
        Samples::Stats {
            min: 2.0,
            max: 1.0,
            sum: 3.0,
            count: 2
        }
    )));
    assert!(!a.add_point(&point(
        "L",
        &[],
        Samples::Weighted(vec![(1.0, u64::MAX), (2.0, 1)])
    )));
    assert!(!a.record(&key("L", &[]), f64::INFINITY));
    assert_eq!(a.refused().invalid_samples, 4);
    assert!(a.is_empty(), "nothing invalid creates a series");

    // A count overflow on an existing series leaves it as it was.
    assert!(a.add_point(&point(
        "L",
        &[],
        Samples::Weighted(vec![(1.0, u64::MAX - 1)])
    )));
    assert!(!a.add_point(&point("L", &[], Samples::Values(vec![5.0, 6.0]))));
    let h = a.get(&key("L", &[])).expect("series");
    assert_eq!(h.count(), u64::MAX - 1);
    assert_eq!(h.max(), Some(1.0));
    assert_eq!(a.refused().invalid_samples, 5);
}

#[test]
fn empty_samples_are_accepted_without_a_series() {
    let mut a = Aggregator::new(10);
    assert!(a.add_point(&point("L", &[], Samples::Weighted(vec![(1.0, 0)]))));
    assert!(a.add_point(&point("L", &[], Samples::Values(vec![]))));
    assert!(a.is_empty());
}

#[test]
fn add_line_adds_every_point_and_counts_them() {
    let mut a = Aggregator::new(1);
    let line = EmfLine {
        timestamp_ms: 0,
        points: vec![
            point("A", &[], Samples::Values(vec![1.0])),
            point("A", &[], Samples::Values(vec![2.0])),
            point("B", &[], Samples::Values(vec![3.0])),
        ],
        properties: vec![],
        warnings: vec![],
    };
    assert_eq!(a.add_line(&line), 2);
    assert_eq!(a.refused().total(), 1);
}

#[test]
fn drain_returns_sorted_series_and_empties_the_map() {
    let mut a = Aggregator::new(3);
    for name in ["c", "a", "b"] {
        assert!(a.record(&key(name, &[]), 1.0));
    }
    assert!(!a.record(&key("d", &[]), 1.0));
    let drained = a.drain();
    let names: Vec<&str> = drained.iter().map(|s| s.key.name()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(drained.iter().all(|s| s.histogram.count() == 1));
    assert!(a.is_empty());
    assert_eq!(a.get(&key("a", &[])), None, "nothing since the drain");
    assert!(a.drain().is_empty());
    // Room again for new series; delta semantics: counts restart.
    assert!(a.record(&key("d", &[]), 2.0));
    assert!(a.record(&key("a", &[]), 2.0));
    assert_eq!(a.get(&key("a", &[])).map(|h| h.count()), Some(1));
}

#[test]
fn drains_stay_sorted_as_series_come_and_go() {
    // Each interval records a shifting subset of 300 keys (some kept from the interval before,
    // some idle, some new), so every drain sorts ranked series among new ones.
    let mut a = Aggregator::new(1_000);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for interval in 0..12u64 {
        let mut expected = std::collections::BTreeSet::new();
        for _ in 0..400 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let k = (state % 100 + interval * 20) % 300;
            let key = key(&format!("m{:03}", (k * 7) % 300), &[("Service", "api")]);
            assert!(a.record(&key, k as f64));
            expected.insert(key);
        }
        let drained = a.drain();
        let keys: Vec<&SeriesKey> = drained.iter().map(|s| &s.key).collect();
        assert_eq!(
            keys,
            expected.iter().collect::<Vec<_>>(),
            "interval {interval}"
        );
    }
}

#[test]
fn a_series_kept_across_drains_hands_out_deltas() {
    let mut a = Aggregator::new(10);
    let dims = [("Service", "api")];
    let values = |v: &[f64]| Samples::Values(v.to_vec());
    assert!(a.add_point(&point("L", &dims, values(&[1.0, 200.0, -3.0, 0.0]))));
    assert!(a.add_point(&point("K", &[], values(&[7.0]))));
    let first = a.drain();
    assert_eq!(first.len(), 2);
    assert_eq!(a.held(), 2, "both series are kept");
    assert!(a.is_empty());

    // The next interval of "L" equals a fresh histogram of that interval's values alone.
    assert!(a.add_point(&point("L", &dims, values(&[5.0, 6.0]))));
    let second = a.drain();
    assert_eq!(second.len(), 1);
    let mut fresh = Histogram::new();
    fresh.record(5.0).unwrap();
    fresh.record(6.0).unwrap();
    assert_eq!(second[0].key, key("L", &dims));
    assert_eq!(second[0].histogram, fresh);
    // And the first interval's data was handed out whole.
    let mut before = Histogram::new();
    for v in [1.0, 200.0, -3.0, 0.0] {
        before.record(v).unwrap();
    }
    assert_eq!(first[1].histogram, before);
    assert_eq!(first[1].key, key("L", &dims));
    // A wide range that downscaled in one interval starts again at the finest scale.
    assert!(a.add_point(&point("L", &dims, values(&[1e-9, 1e9]))));
    assert!(a.drain()[0].histogram.scale() < MAX_SCALE);
    assert!(a.add_point(&point("L", &dims, values(&[2.0]))));
    assert_eq!(
        a.get(&key("L", &dims)).map(Histogram::scale),
        Some(MAX_SCALE)
    );
}

#[test]
fn an_idle_series_is_evicted_at_the_next_drain() {
    let mut a = Aggregator::new(10);
    assert!(a.record(&key("busy", &[]), 1.0));
    assert!(a.record(&key("idle", &[]), 1.0));
    let bytes = a.key_bytes();
    assert_eq!(a.drain().len(), 2);
    assert_eq!((a.held(), a.key_bytes()), (2, bytes));
    assert!(a.record(&key("busy", &[]), 2.0));
    // "idle" received nothing during this interval: the drain evicts it.
    let drained = a.drain();
    assert_eq!(drained.len(), 1);
    assert_eq!(drained[0].key.name(), "busy");
    assert_eq!(a.held(), 1);
    assert!(a.key_bytes() < bytes);
    // Nothing at all during an interval: everything goes.
    assert!(a.drain().is_empty());
    assert_eq!((a.held(), a.key_bytes()), (0, 0));
}

#[test]
fn idle_series_make_room_under_the_cap() {
    let mut a = Aggregator::new(2);
    assert!(a.record(&key("A", &[]), 1.0));
    assert!(a.record(&key("B", &[]), 1.0));
    a.drain();
    assert_eq!(a.held(), 2);
    // "A" is reused in place; "C" takes the slot of the idle "B".
    assert!(a.record(&key("A", &[]), 2.0));
    assert!(a.record(&key("C", &[]), 3.0));
    assert_eq!((a.held(), a.len()), (2, 2));
    // The two series with data fill the cap: a third is refused and counted.
    assert!(!a.record(&key("B", &[]), 4.0));
    assert_eq!(a.refused().series_cap, vec![("B".to_string(), 1)]);
    let names: Vec<String> = a
        .drain()
        .into_iter()
        .map(|s| {
            assert_eq!(s.histogram.count(), 1);
            s.key.name().to_string()
        })
        .collect();
    assert_eq!(names, ["A", "C"]);
    // Many intervals over a rotating set never hold more than the cap.
    for round in 0..20 {
        for i in 0..3 {
            let accepted = a.record(&key(&format!("m{}", (round + i) % 5), &[]), 1.0);
            assert_eq!(accepted, i < 2, "round {round}, series {i}");
            assert!(a.held() <= 2);
        }
        assert_eq!(a.drain().len(), 2);
    }
}

#[test]
fn worst_case_series_memory_matches_the_doc() {
    // The doc promises ≤ 5,120 bytes of counts and about 300 bytes of fixed size per series.
    let mut a = Aggregator::new(10);
    let k = key("wide", &[("k", "v")]);
    let mut v = 1e-9;
    while v < 1e9 {
        a.record(&k, v);
        a.record(&k, -v);
        v *= 1.003;
    }
    let h = a.get(&k).expect("series");
    assert!(h.allocated_buckets() <= MAX_BUCKETS);
    assert!(h.positive().counts().len() + h.negative().counts().len() <= MAX_BUCKETS);
    let fixed = series::fixed_bytes_per_series();
    assert!(fixed <= 300, "{fixed}");
}

mod model {
    //! The aggregator against a model of what a flush should see: the values each series received
    //! since the last drain, with a new series admitted while fewer than `max_series` series have
    //! data in the current interval.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Record(usize, f64),
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..6usize, prop_oneof![-1e6..1e6f64, Just(0.0), 1e-3..1e3f64])
                .prop_map(|(k, v)| Op::Record(k, v)),
            1 => Just(Op::Drain),
        ]
    }

    fn fresh(values: &[f64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in values {
            h.record(v).expect("finite");
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn drains_hand_out_exactly_what_each_interval_received(
            max_series in 1..5usize,
            ops in proptest::collection::vec(op(), 0..120),
        ) {
            let mut a = Aggregator::new(max_series);
            let mut interval: BTreeMap<SeriesKey, Vec<f64>> = BTreeMap::new();
            let mut refused = 0u64;
            for op in ops.into_iter().chain([Op::Drain]) {
                match op {
                    Op::Record(k, v) => {
                        let key = key(&format!("m{k}"), &[("Service", "api")]);
                        let admitted =
                            interval.contains_key(&key) || interval.len() < max_series;
                        prop_assert_eq!(a.record(&key, v), admitted);
                        if admitted {
                            interval.entry(key).or_default().push(v);
                        } else {
                            refused += 1;
                        }
                    }
                    Op::Drain => {
                        let drained = a.drain();
                        let expected: Vec<(SeriesKey, Histogram)> = std::mem::take(&mut interval)
                            .into_iter()
                            .map(|(k, values)| (k, fresh(&values)))
                            .collect();
                        prop_assert_eq!(drained.len(), expected.len());
                        for (s, (k, h)) in drained.iter().zip(&expected) {
                            prop_assert_eq!(&s.key, k);
                            prop_assert_eq!(&s.histogram, h);
                        }
                        // Exactly the series just drained are kept.
                        prop_assert_eq!(a.held(), drained.len());
                        prop_assert!(a.is_empty());
                    }
                }
                prop_assert!(a.held() <= max_series);
                prop_assert_eq!(a.len(), interval.len());
            }
            prop_assert_eq!(a.refused().total(), refused);
        }
    }
}
