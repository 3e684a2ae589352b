//! Throughput of the pipeline per line, in lines per second (`item/s` in divan's output): the
//! whole per-line path (request id, severity, EMF parse, aggregation, event building), drained
//! every 1,000 lines as the flush would.
//!
//! * `emf_lines`: bare EMF lines from Powertools Python (as `print` writes them).
//! * `plain_lines`: Node runtime-prefixed application log lines, no EMF.
//! * `mixed_lines`: 9 plain lines for every EMF line.
//!
//! Run: `cargo bench --bench pipeline`.

use std::sync::Arc;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use loupe::config::Config;
use loupe::invocation::Drained;
use loupe::lambda::events::{LogLine, LogRecord, LogSource};
use loupe::pipeline::Pipeline;

const NOW: i64 = 1_795_497_663_709;

fn main() {
    divan::main();
}

fn emf() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/emf/aws-lambda-powertools-python_3.37.0.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn plain() -> Vec<String> {
    (0..10)
        .map(|i| {
            format!(
                "2026-11-24T05:21:04.582Z\t3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab\tINFO\tprocessed order {i} in 12 ms\n"
            )
        })
        .collect()
}

fn lines(texts: &[String]) -> Vec<LogLine> {
    let start: Arc<str> = Arc::from("3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab");
    texts
        .iter()
        .map(|t| LogLine {
            time_ms: Some(1_795_497_664_600),
            source: LogSource::Function,
            record: LogRecord::Text(t.clone()),
            size: t.len() + 60,
            request_id: Some(start.clone()),
            trace_id: None,
        })
        .collect()
}

fn run(bencher: Bencher, texts: Vec<String>) {
    let config = Config::from_lookup(|_| None).0;
    let input = lines(&texts);
    let n = 1_000;
    bencher
        .counter(ItemsCount::new(n))
        .with_inputs(|| {
            let batch: Vec<LogLine> = input.iter().cycle().take(n).cloned().collect();
            (Pipeline::new(&config, Box::new(|| NOW)), batch)
        })
        .bench_local_values(|(mut p, batch)| {
            for line in batch {
                p.line(line);
            }
            black_box(p.drain(Drained::default()))
        });
}

#[divan::bench]
fn emf_lines(bencher: Bencher) {
    run(bencher, emf());
}

#[divan::bench]
fn plain_lines(bencher: Bencher) {
    run(bencher, plain());
}

#[divan::bench]
fn mixed_lines(bencher: Bencher) {
    let e = emf();
    let p = plain();
    let mut mixed = Vec::new();
    for (i, line) in e.iter().enumerate() {
        mixed.push(line.clone());
        mixed.extend(p.iter().skip(i % 2).take(9).cloned());
    }
    run(bencher, mixed);
}
