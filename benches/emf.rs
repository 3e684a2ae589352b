//! Throughput of the EMF line parser, in lines per second (`item/s` in divan's output).
//!
//! * `emf_lines`: `emf::parse` on EMF lines of several shapes, from the real generators'
//!   fixtures (awslabs Python and Node, Powertools Python and TypeScript).
//! * `serde_value_baseline`: `serde_json::from_str::<Value>` on the same lines.
//! * `non_emf_lines`: `emf::parse` on typical plain log lines (runtime START/END/REPORT, app text
//!   logs with and without the runtime prefix, JSON app logs).
//! * `mixed_lines`: a realistic stream, 9 plain lines for every EMF line.
//! * `emf_json_records`: `emf::parse` on EMF records already parsed (JSON log format).
//!
//! Run: `cargo bench --bench emf`.

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use loupe::emf::{self, ParseOptions, Record, Verdict};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/emf/");

const OPTS: ParseOptions = ParseOptions {
    now_ms: 1_795_497_900_000,
    record_time_ms: None,
    check_timestamp: true,
    strict_dimensions: false,
};

fn main() {
    divan::main();
}

/// Every line of the four generator captures that parses as EMF.
fn emf_lines() -> Vec<String> {
    let files = [
        "aws-embedded-metrics-python_3.5.0.jsonl",
        "aws-embedded-metrics-node_4.2.1.jsonl",
        "aws-lambda-powertools-python_3.37.0.jsonl",
        "powertools-lambda-typescript-metrics_2.36.0.jsonl",
    ];
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(format!("{DIR}{f}")).expect("fixture");
        for l in text.lines() {
            if matches!(emf::parse(Record::Text(l), &OPTS), Verdict::Emf(_)) {
                lines.push(l.to_owned());
            }
        }
    }
    assert!(lines.len() > 40, "only {} EMF lines", lines.len());
    lines
}

fn plain_lines() -> Vec<String> {
    let id = "3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab";
    let mut lines = vec![
        format!("START RequestId: {id} Version: $LATEST"),
        format!("END RequestId: {id}"),
        format!(
            "REPORT RequestId: {id}\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 71 MB\tInit Duration: 187.20 ms"
        ),
        format!(
            "2026-11-24T05:21:04.582Z\t{id}\tINFO\tProcessing order 12345 for customer acme-corp"
        ),
        format!(
            "2026-11-24T05:21:04.583Z\t{id}\tERROR\tInvoke Error {{\"errorType\":\"TypeError\",\"errorMessage\":\"x is undefined\"}}"
        ),
        format!(
            "[INFO]\t2026-11-24T05:21:04.996Z\t{id}\tFound credentials in environment variables."
        ),
        format!(
            "{{\"timestamp\":\"2026-11-24T05:21:04.806Z\",\"level\":\"INFO\",\"requestId\":\"{id}\",\"message\":\"order placed\",\"orderId\":\"o-991\",\"durationMs\":12}}"
        ),
        "{\"level\":\"debug\",\"msg\":\"cache miss\",\"key\":\"user:42\",\"ttl\":300}".to_owned(),
        "GET /orders/12345 200 12ms - 1.2kb".to_owned(),
    ];
    // Same count as a round of EMF lines, cycling through the shapes.
    let base = lines.clone();
    while lines.len() < 50 {
        lines.extend(base.iter().cloned());
    }
    lines.truncate(50);
    lines
}

#[divan::bench]
fn emf_lines_parse(bencher: Bencher) {
    let lines = emf_lines();
    bencher.counter(ItemsCount::new(lines.len())).bench(|| {
        for l in &lines {
            black_box(emf::parse(Record::Text(black_box(l)), &OPTS));
        }
    });
}

#[divan::bench]
fn serde_value_baseline(bencher: Bencher) {
    let lines = emf_lines();
    bencher.counter(ItemsCount::new(lines.len())).bench(|| {
        for l in &lines {
            black_box(serde_json::from_str::<Value>(black_box(l)).ok());
        }
    });
}

#[divan::bench]
fn non_emf_lines_parse(bencher: Bencher) {
    let lines = plain_lines();
    for l in &lines {
        assert!(
            matches!(emf::parse(Record::Text(l), &OPTS), Verdict::Log),
            "{l}"
        );
    }
    bencher.counter(ItemsCount::new(lines.len())).bench(|| {
        for l in &lines {
            black_box(emf::parse(Record::Text(black_box(l)), &OPTS));
        }
    });
}

#[divan::bench]
fn mixed_lines_parse(bencher: Bencher) {
    let emf_lines = emf_lines();
    let plain = plain_lines();
    let mut lines = Vec::new();
    for (i, e) in emf_lines.iter().enumerate() {
        for k in 0..9 {
            lines.push(plain[(i * 9 + k) % plain.len()].clone());
        }
        lines.push(e.clone());
    }
    bencher.counter(ItemsCount::new(lines.len())).bench(|| {
        for l in &lines {
            black_box(emf::parse(Record::Text(black_box(l)), &OPTS));
        }
    });
}

#[divan::bench]
fn emf_json_records_parse(bencher: Bencher) {
    let values: Vec<Value> = emf_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("EMF lines are JSON"))
        .collect();
    bencher.counter(ItemsCount::new(values.len())).bench(|| {
        for v in &values {
            black_box(emf::parse(Record::Json(black_box(v)), &OPTS));
        }
    });
}
