//! Throughput of the metric path: EMF parse + aggregation, in lines per second on one core.
//!
//! `cargo bench --bench aggregate` measures; under `cargo test` (no `--bench` argument) the same
//! code runs once on a few lines as a smoke test.
//!
//! The corpus is the real generators' EMF lines from the shared fixtures (Powertools Python and
//! TypeScript, aws-embedded-metrics Python and Node, Lambda-prefixed lines), each repeated with
//! its dimension values varied over a few customers, so the aggregator sees a realistic number of
//! series; the aggregator is drained every 10,000 lines as a flush would. Reported: EMF lines
//! only (parse + aggregate, parse alone, aggregate alone), and a mix of one EMF line per nine
//! plain log lines. Times are the thread's CPU time, so the figures are per core even when other
//! processes share the machine.

use std::hint::black_box;
use std::time::Duration;

use loupe::aggregate::Aggregator;
use loupe::emf::{self, EmfLine, Record, Verdict};

#[path = "support/workload.rs"]
mod workload;
use workload::{FIXTURES as DIR, cpu_time, options};
const FILES: &[&str] = &[
    "aws-lambda-powertools-python_3.37.0.jsonl",
    "powertools-lambda-typescript-metrics_2.36.0.jsonl",
    "aws-embedded-metrics-python_3.5.0.jsonl",
    "aws-embedded-metrics-node_4.2.1.jsonl",
    "aws-embedded-metrics-node_4.2.1.lambda-text.log",
    "lambda-runtime-wrapping.log",
];
const CUSTOMERS: &[&str] = &["acme-corp", "globex", "initech", "umbrella", "hooli"];
const FLUSH_EVERY: usize = 10_000;

/// Every fixture line that is valid EMF, in variants that differ by dimension value.
fn emf_corpus() -> Vec<String> {
    let opts = options();
    let mut out = Vec::new();
    for file in FILES {
        let text = std::fs::read_to_string(format!("{DIR}{file}")).expect("fixture");
        for line in text.lines() {
            if !matches!(emf::parse(Record::Text(line), &opts), Verdict::Emf(_)) {
                continue;
            }
            for c in CUSTOMERS {
                out.push(line.replace("acme-corp", c).replace("booking", c));
            }
        }
    }
    assert!(out.len() > 100, "corpus of {} lines", out.len());
    out
}

fn plain_logs() -> Vec<String> {
    (0..9)
        .map(|i| match i % 3 {
            0 => format!(
                "2026-11-24T05:21:04.{i:03}Z\t3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab\tINFO\tprocessed order {i} for customer acme-corp in 12 ms"
            ),
            1 => format!(
                "{{\"level\":\"info\",\"msg\":\"cache miss\",\"key\":\"user:{i}\",\"ttl\":300}}"
            ),
            _ => format!("[INFO]\t2026-11-24T05:21:04.{i:03}Z\tabc\tGET /orders/{i} 200"),
        })
        .collect()
}

/// Runs `lines` through parse and (optionally) the aggregator `rounds` times; returns the time.
fn run(lines: &[String], rounds: usize, aggregate: bool) -> (Duration, usize) {
    let opts = options();
    let mut agg = Aggregator::new(1_000);
    let mut since_flush = 0;
    let mut points = 0;
    let start = cpu_time();
    for _ in 0..rounds {
        for line in lines {
            if let Verdict::Emf(emf) = emf::parse(Record::Text(black_box(line)), &opts) {
                if aggregate {
                    points += agg.add_line(&emf);
                } else {
                    points += black_box(&emf).points.len();
                }
            }
            since_flush += 1;
            if since_flush == FLUSH_EVERY {
                black_box(agg.drain());
                since_flush = 0;
            }
        }
    }
    black_box(agg.drain());
    (cpu_time() - start, points)
}

/// Aggregation alone, on lines parsed beforehand.
fn run_aggregate_only(parsed: &[EmfLine<'_>], rounds: usize) -> Duration {
    let mut agg = Aggregator::new(1_000);
    let mut since_flush = 0;
    let start = cpu_time();
    for _ in 0..rounds {
        for line in parsed {
            black_box(agg.add_line(black_box(line)));
            since_flush += 1;
            if since_flush == FLUSH_EVERY {
                black_box(agg.drain());
                since_flush = 0;
            }
        }
    }
    black_box(agg.drain());
    cpu_time() - start
}

fn report(name: &str, lines: usize, times: &mut [Duration]) {
    times.sort();
    let best = times[0];
    let median = times[times.len() / 2];
    let per_s = |d: Duration| lines as f64 / d.as_secs_f64();
    println!(
        "{name:<38} {:>10.0} lines/s per core, median ({:>10.0} best), {:>6.0} ns/line",
        per_s(median),
        per_s(best),
        median.as_nanos() as f64 / lines as f64
    );
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    // `cargo bench --bench aggregate -- WORD` runs only the cases whose name holds WORD.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let corpus = emf_corpus();
    let logs = plain_logs();
    let mixed: Vec<String> = corpus
        .iter()
        .flat_map(|emf| std::iter::once(emf.clone()).chain(logs.iter().cloned()))
        .collect();
    let opts = options();
    let parsed: Vec<EmfLine<'_>> = corpus
        .iter()
        .filter_map(|l| match emf::parse(Record::Text(l), &opts) {
            Verdict::Emf(e) => Some(e),
            _ => None,
        })
        .collect();

    if !measuring {
        // Smoke run under `cargo test`: every corpus line parses and aggregates.
        let (_, points) = run(&corpus, 1, true);
        assert!(points >= corpus.len());
        assert_eq!(parsed.len(), corpus.len());
        return;
    }

    let samples = 7;
    // About a million lines per sample.
    let rounds = (1_000_000 / corpus.len()).max(1);
    let n = rounds * corpus.len();
    let bytes: usize = corpus.iter().map(String::len).sum();
    println!(
        "corpus: {} EMF lines ({} distinct, mean {} bytes), {} rounds per sample, {samples} samples",
        n,
        corpus.len(),
        bytes / corpus.len(),
        rounds
    );
    let (_, points) = run(&corpus, rounds, true); // warm-up
    println!("{:.2} data points per EMF line", points as f64 / n as f64);

    let name = "EMF parse + aggregate";
    if wanted(name) {
        let mut t: Vec<Duration> = (0..samples).map(|_| run(&corpus, rounds, true).0).collect();
        report(name, n, &mut t);
    }
    // The same without the bulk lines (one real line defines 100 metrics): the typical case.
    let typical: Vec<String> = corpus
        .iter()
        .zip(&parsed)
        .filter(|(_, p)| p.points.len() <= 10)
        .map(|(l, _)| l.clone())
        .collect();
    let name = "EMF parse + aggregate, ≤ 10 points/line";
    if wanted(name) {
        let r = (1_000_000 / typical.len()).max(1);
        let mut t: Vec<Duration> = (0..samples).map(|_| run(&typical, r, true).0).collect();
        report(name, r * typical.len(), &mut t);
    }
    let name = "EMF parse only";
    if wanted(name) {
        let mut t: Vec<Duration> = (0..samples)
            .map(|_| run(&corpus, rounds, false).0)
            .collect();
        report(name, n, &mut t);
    }
    let name = "aggregate only (pre-parsed)";
    if wanted(name) {
        let mut t: Vec<Duration> = (0..samples)
            .map(|_| run_aggregate_only(&parsed, rounds))
            .collect();
        report(name, n, &mut t);
    }
    let name = "mix 1 EMF : 9 log, parse + aggregate";
    if wanted(name) {
        let mixed_rounds = (1_000_000 / mixed.len()).max(1);
        let mut t: Vec<Duration> = (0..samples)
            .map(|_| run(&mixed, mixed_rounds, true).0)
            .collect();
        report(name, mixed_rounds * mixed.len(), &mut t);
    }
}
