//! Request building: every request stays under the size limit compressed, splits keep every item
//! exactly once, events are capped per request, a single oversized item is counted, and NDJSON
//! carries the same content.

use std::io::Read;

use loupe::aggregate::{Histogram, Series, SeriesKey};
use loupe::config::{LambdaEnv, Protocol, Temporality};
use loupe::emf::Unit;
use loupe::event::{Body, Event, Kind};
use loupe::export::encode::{Encoded, Encoder, MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES, Target};
use loupe::export::metrics::Point;
use loupe::export::otlp::resource;
use loupe::export::proto::collector::logs::v1::ExportLogsServiceRequest;
use loupe::export::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use loupe::export::proto::common::v1::any_value;
use prost::Message;

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// Text that gzip cannot shrink much (a simple generator, deterministic).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'!' + ((x >> 33) % 90) as u8)
        })
        .collect()
}

fn events(n: usize, size: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(Kind::Log, i as u64);
            e.body = Body::Text(format!("{i}:{}", noise(i as u64, size)));
            e
        })
        .collect()
}

fn points(n: usize) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let mut h = Histogram::new();
            for v in 0..50 {
                h.record(f64::from(v) * (i as f64 + 1.0)).expect("finite");
            }
            Point::histogram(
                Series {
                    key: SeriesKey::new(
                        "App",
                        format!("m{i}"),
                        Unit::Milliseconds,
                        60,
                        vec![("k".into(), noise(i as u64 + 7, 200))],
                    ),
                    histogram: h,
                },
                1,
                2,
            )
        })
        .collect()
}

fn event_bodies(reqs: &[Encoded]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reqs.iter().filter(|r| r.target == Target::Logs) {
        let req = ExportLogsServiceRequest::decode(&gunzip(&r.body)[..]).expect("logs");
        let recs = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(recs.len() as u64, r.events);
        for lr in recs {
            match lr.body.as_ref().and_then(|b| b.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => out.push(s.clone()),
                other => panic!("{other:?}"),
            }
        }
    }
    out
}

#[test]
fn large_batches_split_under_one_mebibyte_and_keep_every_item_once() {
    let evs = events(3_000, 1_500);
    let pts = points(2_000);
    let mut enc = Encoder::new(Protocol::Protobuf, Temporality::Delta);
    let mut out = Vec::new();
    let over = enc.encode(
        &resource(&LambdaEnv::default(), None),
        &pts,
        &evs,
        &[],
        &mut out,
    );
    assert_eq!((over.points, over.events), (0, 0));
    assert!(out.len() >= 4, "{} requests", out.len());
    for r in &out {
        assert!(r.body.len() <= MAX_REQUEST_BYTES, "{}", r.body.len());
        assert!(r.events <= MAX_EVENTS_PER_REQUEST as u64);
        assert_eq!(gunzip(&r.body).len(), r.raw_bytes);
    }
    // The events are big enough that a chunk of 1,000 is over 1 MiB compressed: halves.
    let sizes: Vec<(u64, usize)> = out
        .iter()
        .filter(|r| r.target == Target::Logs)
        .map(|r| (r.events, r.body.len()))
        .collect();
    assert!(sizes.len() > 3, "{sizes:?}");
    let mut bodies = event_bodies(&out);
    let mut want: Vec<String> = evs
        .iter()
        .map(|e| match &e.body {
            Body::Text(s) => s.clone(),
            _ => unreachable!(),
        })
        .collect();
    bodies.sort();
    want.sort();
    assert_eq!(bodies, want);
    let mut names = Vec::new();
    for r in out.iter().filter(|r| r.target == Target::Metrics) {
        let req = ExportMetricsServiceRequest::decode(&gunzip(&r.body)[..]).expect("metrics");
        let ms = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(ms.len() as u64, r.points);
        names.extend(ms.iter().map(|m| m.name.clone()));
    }
    names.sort();
    let mut want: Vec<String> = (0..2_000).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn an_item_alone_over_the_limit_is_counted_not_sent() {
    let mut evs = events(3, 100);
    evs[1].body = Body::Text(noise(99, 8_000));
    let mut enc = Encoder::with_limit(Protocol::Protobuf, Temporality::Delta, 2_000);
    let mut out = Vec::new();
    let over = enc.encode(
        &resource(&LambdaEnv::default(), None),
        &[],
        &evs,
        &[],
        &mut out,
    );
    assert_eq!((over.points, over.events), (0, 1));
    assert_eq!(out.iter().map(|r| r.events).sum::<u64>(), 2);
    assert!(out.iter().all(|r| r.body.len() <= 2_000));
}

#[test]
fn ndjson_requests_carry_a_resource_line_then_metrics_and_events() {
    let evs = events(2_500, 50);
    let pts = points(3);
    let mut enc = Encoder::new(Protocol::Json, Temporality::Delta);
    let mut out = Vec::new();
    enc.encode(
        &resource(&LambdaEnv::default(), None),
        &pts,
        &evs,
        &[],
        &mut out,
    );
    assert_eq!(out.len(), 3, "events capped per request");
    let mut seen_events = 0;
    let mut seen_metrics = 0;
    for r in &out {
        assert_eq!(r.target, Target::Ndjson);
        assert_eq!(r.target.content_type(), "application/x-ndjson");
        let text = String::from_utf8(gunzip(&r.body)).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines[0]["type"], "resource");
        assert!(lines[1..].iter().all(|l| l["type"] != "resource"));
        let m = lines.iter().filter(|l| l["type"] == "metric").count();
        let e = lines.iter().filter(|l| l["type"] == "event").count();
        assert_eq!((m as u64, e as u64), (r.points, r.events));
        assert!(e <= MAX_EVENTS_PER_REQUEST);
        seen_metrics += m;
        seen_events += e;
    }
    assert_eq!((seen_metrics, seen_events), (3, 2_500));
}
