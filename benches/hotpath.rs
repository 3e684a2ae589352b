//! The whole hot path of one flush interval on one core, with `serde_json::Value` as the yardstick
//! in the same run:
//!
//! * `serde_json::Value baseline`: `serde_json::from_str::<Value>` on the EMF lines;
//! * `EMF parse + aggregate`: `emf::parse` then `Aggregator::add_line`, drained every 10,000 lines;
//! * the same two on a realistic mixed stream: every line of the four generator captures (EMF of
//!   several shapes), each EMF line after 9 plain lines (runtime START/END/REPORT, text and JSON
//!   app logs), drained every 1,000 lines; with the EMF lines' own rate in that stream;
//! * `telemetry decode_batch`: `lambda::events::decode_batch` on Telemetry API bodies of 100
//!   events (platform records and function lines carrying the EMF lines);
//! * `encode + gzip -N`: the drained histograms encoded by `export::metrics::metrics_request` as
//!   an OTLP `ExportMetricsServiceRequest` (protobuf, delta), then gzip at levels 1, 6 and 9, with
//!   the bytes each level puts on the wire per 1,000 data points;
//! * `events encode + gzip -N`: the EMF lines' events (built by `pipeline::Pipeline`) written as
//!   OTLP logs requests of 1,000 events by `export::otlp::encode_logs`, then gzip, with the bytes
//!   per 1,000 events.
//!
//! `cargo bench --bench hotpath` measures and prints one `name: value` line per figure, which
//! `scripts/bench.sh` reads. Under `cargo test` (no `--bench`) every case runs once and is checked.
//! Times are the thread's CPU time (`/proc/thread-self/schedstat`), so a shared machine does not
//! skew the per-core figures.

use std::hint::black_box;
use std::time::Duration;

use loupe::aggregate::{Aggregator, Series};
use loupe::config::Config;
use loupe::config::Temporality;
use loupe::emf::{self, Record, Verdict};
use loupe::event::Event;
use loupe::export::gzip::Gzip;
use loupe::export::metrics::{Point, metrics_request};
use loupe::export::otlp;
use loupe::export::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use loupe::export::proto::resource::v1::Resource;
use loupe::invocation::Drained;
use loupe::lambda::events::{LogLine, LogRecord, LogSource, decode_batch};
use loupe::lambda::stats::Stats;
use loupe::pipeline::Pipeline;
use prost::Message;
use serde_json::Value;

#[path = "support/workload.rs"]
mod workload;
use workload::{NOW_MS, cpu_time, emf_lines, generator_lines, options, plain_lines};

const FLUSH_EVERY: usize = 10_000;
/// Lines of the mixed stream between two drains (a flush interval of a busy function).
const MIXED_FLUSH_EVERY: usize = 1_000;
/// Plain lines for every EMF line in the mixed stream.
const PLAIN_PER_EMF: usize = 9;
/// Series in the wire batch: the default series cap.
const SERIES: usize = 1_000;

/// Telemetry API bodies of 100 events each: per invocation a start, `per_invoke` function lines
/// (the EMF lines), a runtimeDone and a report.
fn telemetry_bodies(lines: &[String], per_invoke: usize) -> (Vec<Vec<u8>>, usize) {
    let t = "2026-11-24T05:21:04.582Z";
    let id = "3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab";
    let mut events: Vec<Value> = Vec::new();
    for chunk in lines.chunks(per_invoke) {
        events.push(serde_json::json!({"time": t, "type": "platform.start",
            "record": {"requestId": id, "version": "$LATEST"}}));
        for l in chunk {
            events.push(serde_json::json!({"time": t, "type": "function", "record": l}));
        }
        events.push(
            serde_json::json!({"time": t, "type": "platform.runtimeDone",
            "record": {"requestId": id, "status": "success",
                "metrics": {"durationMs": 12.5, "producedBytes": 120}}}),
        );
        events.push(serde_json::json!({"time": t, "type": "platform.report",
            "record": {"requestId": id, "status": "success",
                "metrics": {"durationMs": 13.1, "billedDurationMs": 14, "memorySizeMB": 128,
                    "maxMemoryUsedMB": 71}}}));
    }
    let n = events.len();
    let bodies = events
        .chunks(100)
        .map(|c| serde_json::to_vec(c).expect("JSON of JSON values"))
        .collect();
    (bodies, n)
}

fn parse_aggregate(lines: &[String], rounds: usize) -> (Duration, usize, Vec<Series>) {
    parse_aggregate_every(lines, rounds, FLUSH_EVERY)
}

/// `emf::parse` then `Aggregator::add_line` on every line, `rounds` times, draining every
/// `flush_every` lines: the CPU time, the data points recorded and the last drain's series.
fn parse_aggregate_every(
    lines: &[String],
    rounds: usize,
    flush_every: usize,
) -> (Duration, usize, Vec<Series>) {
    let opts = options();
    let mut agg = Aggregator::new(SERIES);
    let mut since = 0;
    let mut points = 0;
    let mut last = Vec::new();
    let start = cpu_time();
    for _ in 0..rounds {
        for l in lines {
            if let Verdict::Emf(e) = emf::parse(Record::Text(black_box(l)), &opts) {
                points += agg.add_line(&e);
            }
            since += 1;
            if since == flush_every {
                last = black_box(agg.drain());
                since = 0;
            }
        }
    }
    let rest = agg.drain();
    if !rest.is_empty() {
        last = rest;
    }
    // The series of the last flush.
    (cpu_time() - start, points, last)
}

/// The realistic stream of the benchmark: every line of the generator captures (EMF
/// lines of several shapes, as aws-embedded-metrics and Powertools print them), each EMF line
/// after [`PLAIN_PER_EMF`] plain lines (runtime lines, text and JSON app logs). Returns the stream
/// and how many of its lines are EMF.
fn mixed_stream() -> (Vec<String>, usize) {
    let plain = plain_lines();
    let mut lines = Vec::new();
    let mut emf_count = 0;
    for (i, l) in generator_lines().into_iter().enumerate() {
        if matches!(emf::parse(Record::Text(&l), &options()), Verdict::Emf(_)) {
            emf_count += 1;
            for k in 0..PLAIN_PER_EMF {
                lines.push(plain[(i * PLAIN_PER_EMF + k) % plain.len()].clone());
            }
        }
        lines.push(l);
    }
    (lines, emf_count)
}

fn serde_baseline(lines: &[String], rounds: usize) -> Duration {
    let start = cpu_time();
    for _ in 0..rounds {
        for l in lines {
            black_box(serde_json::from_str::<Value>(black_box(l)).ok());
        }
    }
    cpu_time() - start
}

fn decode(bodies: &[Vec<u8>], rounds: usize) -> (Duration, usize) {
    let stats = Stats::default();
    let mut n = 0;
    let start = cpu_time();
    for _ in 0..rounds {
        for b in bodies {
            n += black_box(decode_batch(black_box(b), &stats)).len();
        }
    }
    (cpu_time() - start, n)
}

/// One OTLP request holding every series as an exponential histogram data point, encoded by
/// `export::metrics` as a flush does.
fn request(series: &[Series]) -> ExportMetricsServiceRequest {
    let now = NOW_MS as u64 * 1_000_000;
    let points: Vec<Point> = series
        .iter()
        .map(|s| Point::histogram(s.clone(), now - 10_000_000_000, now))
        .collect();
    metrics_request(&resource(), &points, Temporality::Delta)
}

fn resource() -> Resource {
    Resource {
        attributes: vec![
            otlp::kv("service.name", "bench-function"),
            otlp::kv("cloud.provider", "aws"),
            otlp::kv("cloud.platform", "aws_lambda"),
            otlp::kv("cloud.region", "us-east-1"),
            otlp::kv("faas.name", "bench-function"),
            otlp::kv("faas.version", "$LATEST"),
        ],
        ..Default::default()
    }
}

/// The events of `lines` as the pipeline builds them (one EMF event per line).
fn emf_events(lines: &[String]) -> Vec<Event> {
    let config = Config::from_lookup(|_| None).0;
    let mut p = Pipeline::new(&config, Box::new(|| NOW_MS));
    let start = std::sync::Arc::<str>::from("3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab");
    for l in lines {
        p.line(LogLine {
            time_ms: Some(NOW_MS),
            source: LogSource::Function,
            record: LogRecord::Text(l.clone()),
            size: l.len(),
            request_id: Some(start.clone()),
            trace_id: Some([7; 16]),
        });
    }
    p.drain(Drained::default()).events
}

/// OTLP logs requests of 1,000 events, as the flush splits them.
fn encode_events(resource: &Resource, events: &[Event], raw: &mut Vec<u8>, gz: &mut Gzip) -> usize {
    let mut out = 0;
    for chunk in events.chunks(1_000) {
        let refs: Vec<&Event> = chunk.iter().collect();
        raw.clear();
        otlp::encode_logs(resource, &refs, raw);
        out += gz.compress(raw).len();
    }
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median over `samples` of the CPU time one call of `f` takes, each sample timing `rounds`
/// calls.
fn median_per_round(samples: usize, rounds: u32, mut f: impl FnMut()) -> Duration {
    let times = (0..samples)
        .map(|_| {
            let start = cpu_time();
            for _ in 0..rounds {
                f();
            }
            (cpu_time() - start) / rounds
        })
        .collect();
    median(times)
}

fn spread(v: &[Duration], items: usize) -> String {
    let rates: Vec<f64> = v
        .iter()
        .map(|d| items as f64 / d.as_secs_f64().max(1e-9))
        .collect();
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}..{hi:.0}")
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let lines = emf_lines(10_000, SERIES / 2);
    let (bodies, events) = telemetry_bodies(&lines, 10);
    let (samples, rounds) = if measuring { (7, 30) } else { (1, 1) };
    let n = lines.len() * rounds;

    // Every line parses and aggregates into two series per customer.
    let first = emf::parse(Record::Text(&lines[0]), &options());
    assert!(matches!(first, Verdict::Emf(_)), "{first:?}\n{}", lines[0]);
    let (_, points, series) = parse_aggregate(&lines, 1);
    assert_eq!(points, 2 * lines.len());
    assert_eq!(series.len(), SERIES);
    let req = request(&series);
    let proto = req.encode_to_vec();
    assert!(
        ExportMetricsServiceRequest::decode(proto.as_slice()).is_ok_and(|r| r == req),
        "the request round-trips"
    );
    let (_, decoded) = decode(&bodies, 1);
    assert_eq!(decoded, events);

    let (mixed, mixed_emf) = mixed_stream();
    for l in plain_lines() {
        let v = emf::parse(Record::Text(&l), &options());
        assert!(matches!(v, Verdict::Log), "plain line {l}: {v:?}");
    }
    let (_, mixed_points, mixed_series) = parse_aggregate_every(&mixed, 1, usize::MAX);
    assert!(mixed_emf > 40, "{mixed_emf} EMF lines in the captures");
    assert!(mixed_points >= mixed_emf, "{mixed_points} points");
    assert!(mixed_series.len() > 5, "{} series", mixed_series.len());
    // Enough rounds that a sample holds about as many lines as the synthetic one.
    let mixed_rounds = (n / mixed.len()).max(1);
    let mixed_n = mixed.len() * mixed_rounds;
    let mixed_emf_n = mixed_emf * mixed_rounds;

    let mut pa = Vec::new();
    let mut sj = Vec::new();
    let mut de = Vec::new();
    let mut mpa = Vec::new();
    let mut msj = Vec::new();
    for _ in 0..samples {
        pa.push(parse_aggregate(&lines, rounds).0);
        sj.push(serde_baseline(&lines, rounds));
        de.push(decode(&bodies, rounds).0);
        mpa.push(parse_aggregate_every(&mixed, mixed_rounds, MIXED_FLUSH_EVERY).0);
        msj.push(serde_baseline(&mixed, mixed_rounds));
    }
    let (pa_m, sj_m, de_m) = (median(pa.clone()), median(sj.clone()), median(de.clone()));
    let per_s = |d: Duration, items: usize| items as f64 / d.as_secs_f64().max(1e-9);
    let mean_len = lines.iter().map(String::len).sum::<usize>() / lines.len();
    println!("emf_line_bytes: {mean_len}");
    println!("samples: {samples} x {n} lines");
    println!(
        "parse_aggregate_lines_per_s: {:.0} (range {})",
        per_s(pa_m, n),
        spread(&pa, n)
    );
    println!(
        "serde_value_lines_per_s: {:.0} (range {})",
        per_s(sj_m, n),
        spread(&sj, n)
    );
    println!(
        "parse_aggregate_vs_serde_value: {:.2}",
        per_s(pa_m, n) / per_s(sj_m, n)
    );
    let (mpa_m, msj_m) = (median(mpa.clone()), median(msj.clone()));
    println!(
        "mixed_stream: {} lines, {} EMF ({} per sample), drained every {} lines",
        mixed.len(),
        mixed_emf,
        mixed_n,
        MIXED_FLUSH_EVERY
    );
    println!(
        "mixed_parse_aggregate_lines_per_s: {:.0} (range {})",
        per_s(mpa_m, mixed_n),
        spread(&mpa, mixed_n)
    );
    println!(
        "mixed_parse_aggregate_emf_lines_per_s: {:.0} (range {})",
        per_s(mpa_m, mixed_emf_n),
        spread(&mpa, mixed_emf_n)
    );
    println!(
        "mixed_serde_value_lines_per_s: {:.0} (range {})",
        per_s(msj_m, mixed_n),
        spread(&msj, mixed_n)
    );
    println!(
        "mixed_parse_aggregate_vs_serde_value: {:.2}",
        per_s(mpa_m, mixed_n) / per_s(msj_m, mixed_n)
    );
    let ev = events * rounds;
    println!(
        "decode_batch_events_per_s: {:.0} (range {})",
        per_s(de_m, ev),
        spread(&de, ev)
    );

    println!("otlp_points: {}", series.len());
    println!(
        "otlp_proto_bytes_per_1000_points: {}",
        proto.len() * 1000 / series.len()
    );
    let encode_rounds = if measuring { 50 } else { 1 };
    for level in [1u32, 6, 9] {
        let mut gz = Gzip::new(level);
        let size = gz.compress(&proto).len();
        assert!(
            size > 0 && size < proto.len(),
            "gzip -{level}: {size} bytes"
        );
        let t = median_per_round(samples, encode_rounds, || {
            let bytes = black_box(request(black_box(&series))).encode_to_vec();
            black_box(gz.compress(&bytes));
        });
        println!(
            "gzip{level}_bytes_per_1000_points: {}",
            size * 1000 / series.len()
        );
        println!(
            "gzip{level}_encode_us_per_1000_points: {:.0}",
            t.as_secs_f64() * 1e6 * 1000.0 / series.len() as f64
        );
    }
    let events = emf_events(&lines);
    assert_eq!(events.len(), lines.len(), "one event per EMF line");
    let resource = resource();
    let mut raw = Vec::new();
    let mut raw_total = 0;
    for chunk in events.chunks(1_000) {
        let refs: Vec<&Event> = chunk.iter().collect();
        raw.clear();
        otlp::encode_logs(&resource, &refs, &mut raw);
        raw_total += raw.len();
    }
    println!(
        "events_proto_bytes_per_1000_events: {}",
        raw_total * 1000 / events.len()
    );
    let event_rounds = if measuring { 5 } else { 1 };
    for level in [1u32, 6] {
        let mut gz = Gzip::new(level);
        let size = encode_events(&resource, &events, &mut raw, &mut gz);
        assert!(size > 0 && size < raw_total, "gzip -{level}: {size} bytes");
        let t = median_per_round(samples, event_rounds, || {
            black_box(encode_events(
                &resource,
                black_box(&events),
                &mut raw,
                &mut gz,
            ));
        });
        println!(
            "events_gzip{level}_bytes_per_1000_events: {}",
            size * 1000 / events.len()
        );
        println!(
            "events_gzip{level}_encode_us_per_1000_events: {:.0}",
            t.as_secs_f64() * 1e6 * 1000.0 / events.len() as f64
        );
    }
}
