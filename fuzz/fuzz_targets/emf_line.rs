//! Fuzz the metric line parser with arbitrary bytes.
//!
//! Checks, for every input: no panic; the invariants of every verdict (bounded, sorted,
//! de-duplicated dimensions, valid samples, non-empty reasons); the scanner never refuses a
//! document serde_json reads; and the text path and the parsed-object path agree on the same
//! document.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loupe::emf::{
    self, EmfLine, MAX_DATA_POINTS, MAX_DIMENSIONS_PER_SET, MAX_METRIC_VALUES, ParseOptions,
    Reason, Record, Samples, Verdict,
};
use serde_json::Value;

const OPTS: ParseOptions = ParseOptions {
    now_ms: 1_795_497_900_000,
    record_time_ms: Some(1_795_497_800_000),
    check_timestamp: true,
    strict_dimensions: false,
};

fuzz_target!(|data: &[u8]| {
    let verdict = emf::parse_bytes(data, &OPTS);
    check(&verdict);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let strict = ParseOptions { strict_dimensions: true, check_timestamp: false, ..OPTS };
    check(&emf::parse(Record::Text(text), &strict));

    // A document serde_json reads as an object with `_aws` is never a parse error for loupe,
    // and reads the same whether it comes as text or as an already-parsed object.
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    if !trimmed.trim_start().starts_with('{') || data.len() > emf::MAX_EVENT_BYTES {
        return;
    }
    let Ok(value) = serde_json::from_str::<Value>(trimmed) else {
        return;
    };
    let Some(obj) = value.as_object() else { return };
    // A `_aws` key written with escapes (`"_\u0061ws"`) is not found by the text filter, by
    // design: the filter looks for the literal bytes.
    if !obj.contains_key("_aws") || !trimmed.contains("_aws") {
        return;
    }
    if let Verdict::Rejected(r) = &verdict {
        assert!(!r.contains(&Reason::JsonParseError), "serde_json reads it: {r:?}");
    }
    let from_value = emf::parse(Record::Json(&value), &OPTS);
    same(&verdict, &from_value);
});

fn check(v: &Verdict) {
    match v {
        Verdict::Log => {}
        Verdict::Rejected(reasons) => {
            assert!(!reasons.is_empty());
            assert_eq!(sorted(reasons).windows(2).filter(|w| w[0] == w[1]).count(), 0, "each reason once");
        }
        Verdict::Emf(line) => {
            check_line(line);
            let w = sorted(&line.warnings);
            assert!(w.windows(2).all(|p| p[0] != p[1]), "each reason once");
        }
    }
}

fn check_line(line: &EmfLine) {
    assert!(!line.points.is_empty());
    assert!(line.points.len() <= MAX_DATA_POINTS);
    for p in &line.points {
        assert!(p.storage_resolution == 1 || p.storage_resolution == 60);
        assert!(!p.namespace.is_empty() && !p.name.is_empty());
        assert!(p.dimensions.len() <= MAX_DIMENSIONS_PER_SET);
        assert!(p.dimensions.windows(2).all(|w| w[0].0 < w[1].0), "dims sorted, unique");
        for (k, v) in &p.dimensions {
            assert!(k.is_ascii() && v.is_ascii() && !k.is_empty() && !v.is_empty());
        }
        match &p.samples {
            Samples::Values(v) => {
                assert!(!v.is_empty() && v.len() <= MAX_METRIC_VALUES);
                assert!(v.iter().all(|x| x.is_finite()));
            }
            Samples::Weighted(v) => {
                assert!(!v.is_empty() && v.len() <= MAX_METRIC_VALUES);
                assert!(v.iter().all(|(x, _)| x.is_finite()));
            }
            Samples::Stats { min, max, sum, count } => {
                assert!(min <= max && sum.is_finite() && *count >= 1);
            }
        }
    }
}

/// The text and object paths agree: same verdict kind, same points, same reasons, same
/// properties (as a set: a parsed object has no member order).
fn same(text: &Verdict, value: &Verdict) {
    match (text, value) {
        (Verdict::Log, Verdict::Log) => {}
        (Verdict::Rejected(a), Verdict::Rejected(b)) => assert_eq!(sorted(a), sorted(b)),
        (Verdict::Emf(a), Verdict::Emf(b)) => {
            // serde_json (without its `float_roundtrip` feature) may round a long number one
            // ulp away from the correctly rounded value the text path computes: compare the
            // samples within a relative 2^-50, everything else exactly.
            assert_eq!(a.points.len(), b.points.len());
            for (p, q) in a.points.iter().zip(&b.points) {
                let (mut p, mut q) = (p.clone(), q.clone());
                assert!(close(&p.samples, &q.samples), "{p:?} vs {q:?}");
                p.samples = Samples::Values(Vec::new());
                q.samples = Samples::Values(Vec::new());
                assert_eq!(p, q);
            }
            assert_eq!(a.timestamp_ms, b.timestamp_ms);
            assert_eq!(sorted(&a.warnings), sorted(&b.warnings));
            let mut pa: Vec<_> = a.properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let mut pb: Vec<_> = b.properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            pa.sort();
            pb.sort();
            assert_eq!(pa, pb);
        }
        (a, b) => panic!("text path {a:?}, object path {b:?}"),
    }
}

fn close(a: &Samples, b: &Samples) -> bool {
    let near = |x: f64, y: f64| x == y || (x - y).abs() <= x.abs().max(y.abs()) * f64::EPSILON * 4.0;
    match (a, b) {
        (Samples::Values(x), Samples::Values(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(&u, &v)| near(u, v))
        }
        (Samples::Weighted(x), Samples::Weighted(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(u, v)| near(u.0, v.0) && u.1 == v.1)
        }
        (
            Samples::Stats { min, max, sum, count },
            Samples::Stats { min: n, max: m, sum: s, count: c },
        ) => near(*min, *n) && near(*max, *m) && near(*sum, *s) && count == c,
        _ => false,
    }
}

fn sorted(r: &[Reason]) -> Vec<Reason> {
    let mut r = r.to_vec();
    r.sort();
    r
}
