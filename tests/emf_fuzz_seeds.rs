//! The fuzz target's checks (`fuzz/fuzz_targets/emf_line.rs`) on its committed seeds, so they run
//! with every `cargo test`: no panic, the invariants of every verdict, the scanner never refuses
//! a document serde_json reads, and the text and parsed-object paths agree.

use loupe::emf::{
    self, EmfLine, MAX_DATA_POINTS, MAX_DIMENSIONS_PER_SET, MAX_METRIC_VALUES, ParseOptions,
    Reason, Record, Samples, Verdict,
};
use serde_json::Value;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/emf_line/");

const OPTS: ParseOptions = ParseOptions {
    now_ms: 1_795_497_900_000,
    record_time_ms: Some(1_795_497_800_000),
    check_timestamp: true,
    strict_dimensions: false,
};

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = std::fs::read_dir(SEEDS).expect("the fuzz seeds are committed");
    let mut seeds: Vec<(String, Vec<u8>)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.starts_with("seed-")
                .then(|| Some((name, std::fs::read(e.path()).ok()?)))
                .flatten()
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_seed_keeps_the_fuzz_invariants() {
    let seeds = seeds();
    assert!(seeds.len() >= 50, "only {} seeds", seeds.len());
    let (mut emf, mut rejected, mut compared) = (0, 0, 0);
    for (name, data) in &seeds {
        let verdict = emf::parse_bytes(data, &OPTS);
        check(name, &verdict);
        match &verdict {
            Verdict::Emf(_) => emf += 1,
            Verdict::Rejected(_) => rejected += 1,
            Verdict::Log => {}
        }
        let Ok(text) = std::str::from_utf8(data) else {
            continue;
        };
        let strict = ParseOptions {
            strict_dimensions: true,
            check_timestamp: false,
            ..OPTS
        };
        check(name, &emf::parse(Record::Text(text), &strict));

        let trimmed = text.strip_suffix('\n').unwrap_or(text);
        if !trimmed.trim_start().starts_with('{') || data.len() > emf::MAX_EVENT_BYTES {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(trimmed) else {
            continue;
        };
        let Some(obj) = value.as_object() else {
            continue;
        };
        // The text filter looks for the literal bytes `_aws`, by design.
        if !obj.contains_key("_aws") || !trimmed.contains("_aws") {
            continue;
        }
        if let Verdict::Rejected(r) = &verdict {
            assert!(
                !r.contains(&Reason::JsonParseError),
                "{name}: serde_json reads it: {r:?}"
            );
        }
        same(name, &verdict, &emf::parse(Record::Json(&value), &OPTS));
        compared += 1;
    }
    // The seeds exercise every outcome and both paths.
    assert!(
        emf > 0 && rejected > 0 && compared > 0,
        "{emf} {rejected} {compared}"
    );
}

fn check(name: &str, v: &Verdict) {
    match v {
        Verdict::Log => {}
        Verdict::Rejected(reasons) => {
            assert!(!reasons.is_empty(), "{name}");
            assert!(once_each(reasons), "{name}: {reasons:?}");
        }
        Verdict::Emf(line) => {
            check_line(name, line);
            assert!(once_each(&line.warnings), "{name}: {:?}", line.warnings);
        }
    }
}

fn check_line(name: &str, line: &EmfLine) {
    assert!(!line.points.is_empty(), "{name}");
    assert!(line.points.len() <= MAX_DATA_POINTS, "{name}");
    for p in &line.points {
        assert!(
            p.storage_resolution == 1 || p.storage_resolution == 60,
            "{name}"
        );
        assert!(!p.namespace.is_empty() && !p.name.is_empty(), "{name}");
        assert!(p.dimensions.len() <= MAX_DIMENSIONS_PER_SET, "{name}");
        assert!(
            p.dimensions.windows(2).all(|w| w[0].0 < w[1].0),
            "{name}: dimensions sorted, unique"
        );
        for (k, v) in &p.dimensions {
            assert!(
                k.is_ascii() && v.is_ascii() && !k.is_empty() && !v.is_empty(),
                "{name}"
            );
        }
        match &p.samples {
            Samples::One(v) => assert!(v.is_finite(), "{name}"),
            Samples::Values(v) => {
                assert!(v.len() >= 2 && v.len() <= MAX_METRIC_VALUES, "{name}");
                assert!(v.iter().all(|x| x.is_finite()), "{name}");
            }
            Samples::Weighted(v) => {
                assert!(!v.is_empty() && v.len() <= MAX_METRIC_VALUES, "{name}");
                assert!(v.iter().all(|(x, _)| x.is_finite()), "{name}");
            }
            Samples::Stats {
                min,
                max,
                sum,
                count,
            } => {
                assert!(min <= max && sum.is_finite() && *count >= 1, "{name}");
            }
        }
    }
}

/// The text and object paths agree: same kind, points, reasons and properties (as a set).
fn same(name: &str, text: &Verdict, value: &Verdict) {
    match (text, value) {
        (Verdict::Log, Verdict::Log) => {}
        (Verdict::Rejected(a), Verdict::Rejected(b)) => {
            assert_eq!(sorted(a), sorted(b), "{name}")
        }
        (Verdict::Emf(a), Verdict::Emf(b)) => {
            // serde_json may round a long number one ulp away from the correctly rounded value
            // the text path computes: samples are compared within a few ulps.
            assert_eq!(a.points.len(), b.points.len(), "{name}");
            for (p, q) in a.points.iter().zip(&b.points) {
                let (mut p, mut q) = (p.clone(), q.clone());
                assert!(close(&p.samples, &q.samples), "{name}: {p:?} vs {q:?}");
                p.samples = Samples::Values(Vec::new());
                q.samples = Samples::Values(Vec::new());
                assert_eq!(p, q, "{name}");
            }
            assert_eq!(a.timestamp_ms, b.timestamp_ms, "{name}");
            assert_eq!(sorted(&a.warnings), sorted(&b.warnings), "{name}");
            let props = |l: &EmfLine| {
                let mut v: Vec<(String, String)> = l
                    .properties
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(props(a), props(b), "{name}");
        }
        (a, b) => panic!("{name}: text path {a:?}, object path {b:?}"),
    }
}

fn close(a: &Samples, b: &Samples) -> bool {
    let near =
        |x: f64, y: f64| x == y || (x - y).abs() <= x.abs().max(y.abs()) * f64::EPSILON * 4.0;
    match (a, b) {
        (Samples::One(x), Samples::One(y)) => near(*x, *y),
        (Samples::Values(x), Samples::Values(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(&u, &v)| near(u, v))
        }
        (Samples::Weighted(x), Samples::Weighted(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(u, v)| near(u.0, v.0) && u.1 == v.1)
        }
        (
            Samples::Stats {
                min,
                max,
                sum,
                count,
            },
            Samples::Stats {
                min: n,
                max: m,
                sum: s,
                count: c,
            },
        ) => near(*min, *n) && near(*max, *m) && near(*sum, *s) && count == c,
        _ => false,
    }
}

fn sorted(r: &[Reason]) -> Vec<Reason> {
    let mut r = r.to_vec();
    r.sort();
    r
}

fn once_each(r: &[Reason]) -> bool {
    sorted(r).windows(2).all(|w| w[0] != w[1])
}
