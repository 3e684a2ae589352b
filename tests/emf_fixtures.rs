//! Every line of the EMF fixtures against `EXPECTED.tsv`: verdict, data point count and reason
//! set, plus the exact series of the real generators' lines.

use std::collections::BTreeSet;

use loupe::emf::{self, DataPoint, ParseOptions, Reason, Record, Samples, Unit, Verdict};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/emf/");

/// "Now" near the capture day (2026-11-24): every captured `_aws.Timestamp` is ~1795497xxxxxx.
const NOW_MS: i64 = 1_795_497_900_000;

/// Lines where loupe's verdict differs from `EXPECTED.tsv` on purpose, with the reason. Each
/// entry is asserted exactly: the EXPECTED row must still read as quoted here, and loupe must
/// give the stated verdict.
///
/// EMF inside the Lambda JSON log envelope (`{"timestamp","level","message":<EMF>}`): CloudWatch
/// extracts nothing ("metric loss"); loupe extracts the metrics and reports, as a warning, that
/// CloudWatch would drop them.
const DEVIATIONS: &[Deviation] = &[
    envelope("lambda-runtime-wrapping.log", 5),
    envelope("lambda-runtime-wrapping.log", 6),
    envelope("lambda-runtime-wrapping.log", 7),
    envelope("lambda-runtime-wrapping.log", 10),
    envelope("lambda-runtime-wrapping.log", 11),
    envelope("synthetic-edge-cases.SYNTHETIC.jsonl", 58),
    envelope("telemetry-api-shapes.SYNTHETIC.jsonl", 6),
];

struct Deviation {
    file: &'static str,
    line: usize,
    expected_row: (&'static str, usize, &'static str),
    loupe: (&'static str, usize, &'static str),
    why: &'static str,
}

const fn envelope(file: &'static str, line: usize) -> Deviation {
    Deviation {
        file,
        line,
        expected_row: ("emf_rejected", 0, "emf_inside_lambda_json_envelope"),
        loupe: ("emf", 1, "emf_inside_lambda_json_envelope"),
        why: "EMF in the Lambda JSON envelope: extracted, with a warning that CloudWatch drops it",
    }
}

struct Row {
    file: String,
    line: usize,
    verdict: String,
    datapoints: usize,
    reasons: String,
}

fn expected_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(format!("{DIR}EXPECTED.tsv")).expect("EXPECTED.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert!(cols.len() >= 5, "short row: {l:?}");
            Row {
                file: cols[0].to_owned(),
                line: cols[1].parse().expect("line number"),
                verdict: cols[2].to_owned(),
                datapoints: cols[3].parse().expect("datapoints"),
                reasons: cols[4].to_owned(),
            }
        })
        .collect()
}

/// A fixture line as the extension would receive it.
enum Input {
    Text(String),
    Json(Value),
}

/// The records of one fixture file, by line number (1-based), per README.txt: the SYNTHETIC
/// edge cases carry the line in `line`, the Telemetry shapes in `record` (a string or an
/// object), the in-the-wild examples in `event`; every other file is one record per line.
fn records(file: &str) -> Vec<Input> {
    let text = std::fs::read_to_string(format!("{DIR}{file}")).expect("fixture file");
    let field = match file {
        "synthetic-edge-cases.SYNTHETIC.jsonl" => Some("line"),
        "telemetry-api-shapes.SYNTHETIC.jsonl" => Some("record"),
        "in-the-wild-issue-examples.jsonl" => Some("event"),
        _ => None,
    };
    text.lines()
        .map(|l| match field {
            None => Input::Text(l.to_owned()),
            Some(f) => {
                let v: Value = serde_json::from_str(l).expect("fixture wrapper is JSON");
                match v.get(f).expect("wrapper field") {
                    Value::String(s) => Input::Text(s.clone()),
                    other => Input::Json(other.clone()),
                }
            }
        })
        .collect()
}

fn options(file: &str) -> ParseOptions {
    ParseOptions {
        now_ms: NOW_MS,
        record_time_ms: None,
        // Copied documentation and issue examples carry their own (old) timestamps.
        check_timestamp: !(file.starts_with("upstream-") || file.starts_with("in-the-wild")),
        strict_dimensions: false,
    }
}

fn summary(v: &Verdict) -> (&'static str, usize, BTreeSet<String>) {
    let codes = |rs: &[Reason]| rs.iter().map(|r| r.as_str().to_owned()).collect();
    match v {
        Verdict::Log => ("log", 0, BTreeSet::new()),
        Verdict::Emf(line) => ("emf", line.points.len(), codes(&line.warnings)),
        Verdict::Rejected(rs) => ("emf_rejected", 0, codes(rs)),
    }
}

fn reason_set(s: &str) -> BTreeSet<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_input(input: &Input, opts: &ParseOptions) -> (&'static str, usize, BTreeSet<String>) {
    match input {
        Input::Text(s) => summary(&emf::parse(Record::Text(s), opts)),
        Input::Json(v) => summary(&emf::parse(Record::Json(v), opts)),
    }
}

#[test]
fn every_expected_line() {
    let rows = expected_rows();
    assert!(rows.len() > 200, "EXPECTED.tsv has {} rows", rows.len());
    let mut failures = Vec::new();
    let mut cache: Vec<(String, Vec<Input>)> = Vec::new();
    let mut deviations_seen = 0;
    for row in &rows {
        if !cache.iter().any(|(f, _)| *f == row.file) {
            cache.push((row.file.clone(), records(&row.file)));
        }
        let (_, recs) = cache.iter().find(|(f, _)| *f == row.file).expect("cached");
        let input = recs
            .get(row.line - 1)
            .unwrap_or_else(|| panic!("{}:{} missing", row.file, row.line));
        let got = parse_input(input, &options(&row.file));
        let dev = DEVIATIONS
            .iter()
            .find(|d| d.file == row.file && d.line == row.line);
        let want = match dev {
            Some(d) => {
                deviations_seen += 1;
                let (v, n, r) = d.expected_row;
                assert_eq!(
                    (
                        row.verdict.as_str(),
                        row.datapoints,
                        reason_set(&row.reasons)
                    ),
                    (v, n, reason_set(r)),
                    "{}:{}: EXPECTED.tsv changed; revisit the deviation ({})",
                    row.file,
                    row.line,
                    d.why
                );
                let (v, n, r) = d.loupe;
                (v, n, reason_set(r))
            }
            None => {
                let v: &'static str = match row.verdict.as_str() {
                    "emf" => "emf",
                    "emf_rejected" => "emf_rejected",
                    "log" => "log",
                    other => panic!("unknown verdict {other}"),
                };
                (v, row.datapoints, reason_set(&row.reasons))
            }
        };
        if got != want {
            failures.push(format!(
                "{}:{}: want {want:?}, got {got:?}",
                row.file, row.line
            ));
        }
    }
    assert_eq!(
        deviations_seen,
        DEVIATIONS.len(),
        "a deviation names no EXPECTED row"
    );
    assert!(
        failures.is_empty(),
        "{} lines differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- Exact series of the real generators' lines ------------------------------------------

fn line_of(file: &str, n: usize) -> String {
    let text = std::fs::read_to_string(format!("{DIR}{file}")).expect("fixture file");
    text.lines().nth(n - 1).expect("line").to_owned()
}

/// Parse a fixture line that must be EMF; returns its points and properties.
fn emf_line(file: &str, n: usize) -> (Vec<DataPoint<'static>>, Vec<(String, Value)>, i64) {
    let line = line_of(file, n);
    match emf::parse(Record::Text(&line), &options(file)) {
        Verdict::Emf(l) => {
            let l = l.into_owned();
            let props = l
                .properties
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v))
                .collect();
            (l.points, props, l.timestamp_ms)
        }
        other => panic!("{file}:{n}: not EMF: {other:?}"),
    }
}

fn point(
    ns: &str,
    name: &str,
    unit: Unit,
    res: u32,
    dims: &[(&str, &str)],
    samples: Samples,
) -> DataPoint<'static> {
    DataPoint {
        namespace: ns.to_owned().into(),
        name: name.to_owned().into(),
        unit,
        storage_resolution: res,
        dimensions: dims
            .iter()
            .map(|(k, v)| ((*k).to_owned().into(), (*v).to_owned().into()))
            .collect(),
        samples,
    }
}

/// Values seen once each, in the parser's form: `One` for a single value.
fn values(v: &[f64]) -> Samples {
    match v {
        [one] => Samples::One(*one),
        _ => Samples::Values(v.to_vec()),
    }
}

fn prop_keys(props: &[(String, Value)]) -> Vec<&str> {
    props.iter().map(|(k, _)| k.as_str()).collect()
}

const LAMBDA_DIMS: [(&str, &str); 3] = [
    ("LogGroup", "emf-demo"),
    ("ServiceName", "emf-demo"),
    ("ServiceType", "AWS::Lambda::Function"),
];

const AWSLABS_PROPS: [&str; 5] = [
    "executionEnvironment",
    "memorySize",
    "functionVersion",
    "logStreamId",
    "traceId",
];

#[test]
fn awslabs_python_series() {
    let f = "aws-embedded-metrics-python_3.5.0.jsonl";
    let (points, props, ts) = emf_line(f, 1);
    assert_eq!(ts, 1_795_497_659_213);
    let dims = LAMBDA_DIMS;
    assert_eq!(
        points,
        vec![point(
            "aws-embedded-metrics",
            "Invocations",
            Unit::Count,
            60,
            &dims,
            values(&[1.0])
        )]
    );
    assert_eq!(prop_keys(&props), AWSLABS_PROPS);
    assert_eq!(props[1].1, Value::String("128".into()));

    let (points, _, _) = emf_line(f, 2);
    let mut dims = LAMBDA_DIMS.to_vec();
    dims.insert(0, ("Customer", "acme-corp"));
    assert_eq!(
        points,
        vec![point(
            "MyApp",
            "Latency",
            Unit::Milliseconds,
            60,
            &dims,
            values(&[123.4])
        )]
    );

    // An array: three samples of one metric (count 3, sum 60.5, min 10, max 30.5).
    let (points, _, _) = emf_line(f, 3);
    assert_eq!(
        points,
        vec![point(
            "MyApp",
            "Latency",
            Unit::Milliseconds,
            60,
            &LAMBDA_DIMS,
            values(&[10.0, 20.0, 30.5])
        )]
    );

    // Two dimension sets: one point each, dimensions sorted by key.
    let (points, props, _) = emf_line(f, 4);
    assert_eq!(
        points,
        vec![
            point(
                "MyApp",
                "Latency",
                Unit::Milliseconds,
                60,
                &[("Operation", "GetItem")],
                values(&[42.0])
            ),
            point(
                "MyApp",
                "Latency",
                Unit::Milliseconds,
                60,
                &[("Customer", "acme-corp"), ("Operation", "GetItem")],
                values(&[42.0])
            ),
        ]
    );
    assert_eq!(prop_keys(&props), AWSLABS_PROPS);

    // High resolution next to a standard metric.
    let (points, _, _) = emf_line(f, 7);
    assert_eq!(
        points,
        vec![
            point(
                "MyApp",
                "QueueDepth",
                Unit::Count,
                1,
                &LAMBDA_DIMS,
                values(&[17.0])
            ),
            point(
                "MyApp",
                "CPU",
                Unit::Percent,
                60,
                &LAMBDA_DIMS,
                values(&[55.5])
            ),
        ]
    );

    // Properties, nested ones included; the dimension `Operation` is not repeated as one.
    let (points, props, _) = emf_line(f, 8);
    let mut dims = LAMBDA_DIMS.to_vec();
    dims.insert(1, ("Operation", "Checkout"));
    assert_eq!(
        points,
        vec![point(
            "MyApp",
            "OrderValue",
            Unit::None,
            60,
            &dims,
            values(&[99.95])
        )]
    );
    let mut keys = vec!["requestId", "userId", "payload"];
    keys.extend(AWSLABS_PROPS);
    assert_eq!(prop_keys(&props), keys);
    assert_eq!(
        props[2].1,
        serde_json::json!({"items": 3, "tags": ["a", "b"]})
    );
}

#[test]
fn awslabs_node_series() {
    let f = "aws-embedded-metrics-node_4.2.1.jsonl";
    let (points, props, ts) = emf_line(f, 1);
    assert_eq!(ts, 1_795_497_662_623);
    assert_eq!(
        points,
        vec![point(
            "aws-embedded-metrics",
            "Invocations",
            Unit::Count,
            60,
            &LAMBDA_DIMS,
            values(&[1.0])
        )]
    );
    assert_eq!(prop_keys(&props), AWSLABS_PROPS);
    let (points, _, _) = emf_line(f, 3);
    assert_eq!(
        points,
        vec![point(
            "MyApp",
            "Latency",
            Unit::Milliseconds,
            60,
            &LAMBDA_DIMS,
            values(&[10.0, 20.0, 30.5])
        )]
    );
}

#[test]
fn powertools_python_series() {
    let f = "aws-lambda-powertools-python_3.37.0.jsonl";
    let (points, props, ts) = emf_line(f, 1);
    assert_eq!(ts, 1_795_497_661_688);
    assert_eq!(
        points,
        vec![point(
            "ServerlessAirline",
            "SuccessfulBooking",
            Unit::Count,
            60,
            &[("service", "booking")],
            values(&[1.0])
        )]
    );
    assert!(props.is_empty(), "{props:?}");

    let (points, props, _) = emf_line(f, 4);
    assert_eq!(
        points,
        vec![
            point(
                "ServerlessAirline",
                "Latency",
                Unit::Milliseconds,
                60,
                &[("environment", "prod"), ("service", "booking")],
                values(&[42.0])
            ),
            point(
                "ServerlessAirline",
                "Latency",
                Unit::Milliseconds,
                60,
                &[("operation", "book"), ("region", "us-east-1")],
                values(&[42.0])
            ),
        ]
    );
    assert!(props.is_empty(), "{props:?}");

    let (points, _, _) = emf_line(f, 6);
    let svc = [("service", "booking")];
    assert_eq!(
        points,
        vec![
            point(
                "ServerlessAirline",
                "QueueDepth",
                Unit::Count,
                1,
                &svc,
                values(&[17.0])
            ),
            point(
                "ServerlessAirline",
                "CPU",
                Unit::Percent,
                60,
                &svc,
                values(&[55.5])
            ),
        ]
    );

    let (points, props, _) = emf_line(f, 7);
    assert_eq!(points.len(), 1);
    assert_eq!(prop_keys(&props), ["booking_id", "requestId", "details"]);
    assert_eq!(
        props[2].1,
        serde_json::json!({"seats": 2, "class": "economy"})
    );
}

#[test]
fn powertools_typescript_series() {
    let f = "powertools-lambda-typescript-metrics_2.36.0.jsonl";
    let (points, props, _) = emf_line(f, 1);
    assert_eq!(
        points,
        vec![point(
            "serverlessAirline",
            "successfulBooking",
            Unit::Count,
            60,
            &[("service", "orders")],
            values(&[1.0])
        )]
    );
    assert!(props.is_empty());

    let (points, _, _) = emf_line(f, 2);
    assert_eq!(
        points,
        vec![point(
            "serverlessAirline",
            "latency",
            Unit::Milliseconds,
            60,
            &[("customer", "acme-corp"), ("service", "orders")],
            values(&[123.4])
        )]
    );

    let (points, _, _) = emf_line(f, 3);
    assert_eq!(
        points,
        vec![point(
            "serverlessAirline",
            "latency",
            Unit::Milliseconds,
            60,
            &[("service", "orders")],
            values(&[10.0, 20.0, 30.5])
        )]
    );

    let (points, _, _) = emf_line(f, 4);
    let dims: Vec<Vec<(String, String)>> = points
        .iter()
        .map(|p| {
            p.dimensions
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    assert_eq!(
        dims,
        vec![
            vec![
                ("environment".into(), "prod".into()),
                ("service".into(), "orders".into())
            ],
            vec![
                ("operation".into(), "book".into()),
                ("region".into(), "us-east-1".into()),
                ("service".into(), "orders".into())
            ],
        ]
    );
}

/// The same document through the Lambda TEXT prefix and through the JSON envelope yields the
/// same series as the raw line.
#[test]
fn wrapped_lines_yield_the_raw_series() {
    let f = "lambda-runtime-wrapping.log";
    let (raw, _, _) = emf_line(f, 8);
    for n in [1, 2, 4, 9, 5, 6, 7, 10, 11] {
        let (points, _, _) = emf_line(f, n);
        assert_eq!(points, raw, "{f}:{n}");
    }
    assert_eq!(
        raw,
        vec![point(
            "serverlessAirline",
            "successfulBooking",
            Unit::Count,
            60,
            &[("service", "orders")],
            values(&[1.0])
        )]
    );
}
