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

#[path = "support/workload.rs"]
mod workload;

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
    let lines: Vec<String> = workload::generator_lines()
        .into_iter()
        .filter(|l| matches!(emf::parse(Record::Text(l), &OPTS), Verdict::Emf(_)))
        .collect();
    assert!(lines.len() > 40, "only {} EMF lines", lines.len());
    lines
}

/// The shared plain lines, cycled to the count of a round of EMF lines.
fn plain_lines() -> Vec<String> {
    workload::plain_lines()
        .into_iter()
        .cycle()
        .take(50)
        .collect()
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
