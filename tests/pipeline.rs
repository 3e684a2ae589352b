//! Real fixture lines through the listener's intake, the invocation tracker and the pipeline task,
//! as Telemetry API batches: the drained batch must hold the right series, events and counters.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use loupe::batch::{Batch, Source};
use loupe::config::Config;
use loupe::emf::Unit;
use loupe::event::{AttrValue, Event, Kind};
use loupe::invocation::{self, Tracker};
use loupe::lambda::listener::{Intake, log_queue};
use loupe::lambda::stats::Stats;
use loupe::pipeline::{self, Pipeline};

/// The fixtures' capture time: their `_aws.Timestamp`s are inside the window around it.
const NOW: i64 = 1_795_497_663_709;
const R1: &str = "3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab";

fn fixture(name: &str) -> Vec<String> {
    let path = format!(
        "{}/../shared/fixtures/emf/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(str::to_string).collect()
}

/// A `function` event as Lambda sends it: a JSON-format record (an object with `level` or
/// `timestamp`) as an object, every other line as a Text record.
fn function(line: &str) -> Value {
    let record = match serde_json::from_str::<Value>(line) {
        Ok(v) if v.get("level").is_some() || v.get("timestamp").is_some() => v,
        _ => Value::String(line.to_string()),
    };
    json!({"time": "2026-11-24T05:21:04.000Z", "type": "function", "record": record})
}

fn platform(kind: &str, record: Value) -> Value {
    json!({"time": "2026-11-24T05:21:03.000Z", "type": kind, "record": record})
}

fn attr<'a>(e: &'a Event, key: &str) -> Option<&'a AttrValue> {
    e.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn counter(b: &Batch, name: &str, reason: Option<&str>) -> u64 {
    b.counters
        .iter()
        .filter(|c| c.name == name)
        .filter(|c| reason.is_none_or(|r| c.attributes.iter().any(|(_, v)| v == r)))
        .map(|c| c.value)
        .sum()
}

/// (count, sum) of the series with this namespace, name and dimensions.
fn series(b: &Batch, namespace: &str, name: &str, dims: &[(&str, &str)]) -> (u64, f64) {
    let s = b
        .series
        .iter()
        .find(|s| {
            s.key.namespace() == namespace
                && s.key.name() == name
                && s.key.dimensions().len() == dims.len()
                && s.key
                    .dimensions()
                    .iter()
                    .zip(dims)
                    .all(|((k, v), (dk, dv))| k == dk && v == dv)
        })
        .unwrap_or_else(|| panic!("no series {namespace}/{name}{dims:?}"));
    (s.histogram.count(), s.histogram.sum())
}

#[tokio::test]
async fn fixture_batches_through_intake_tracker_and_pipeline() {
    let config = Config::from_lookup(|k| (k == "LOUPE_USER_ID_KEYS").then(|| "customer".into())).0;
    let stats = Arc::new(Stats::default());
    let (tracker, _tracker_task) = invocation::spawn(Tracker::default());
    let (logs, log_rx) = log_queue(4_096, 16 << 20);
    let pipeline = Pipeline::new(&config, Box::new(|| NOW)).with_stats(stats.clone());
    let (mut handle, task) = pipeline::spawn_with(pipeline, log_rx);
    let intake = Intake::new(stats.clone(), Box::new(tracker.clone()), logs);

    // Invocation 1: Node and Python runtime wrapping (Text and JSON log formats).
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let mut body = vec![
        platform(
            "platform.initStart",
            json!({"initializationType": "on-demand", "phase": "init"}),
        ),
        platform(
            "platform.start",
            json!({"requestId": R1, "tracing": {"type": "X-Amzn-Trace-Id", "value": trace}}),
        ),
    ];
    let wrapping = fixture("lambda-runtime-wrapping.log");
    body.extend(wrapping.iter().map(|l| function(l)));
    body.push(platform(
        "platform.runtimeDone",
        json!({"requestId": R1, "status": "success", "metrics": {"durationMs": 140.0, "producedBytes": 16}}),
    ));
    intake.accept(&serde_json::to_vec(&body).expect("encodes"));

    // Invocation 2, in the next POST: Powertools Python prints bare EMF lines (no prefix), and
    // the invocation fails.
    let mut body = vec![
        platform(
            "platform.report",
            json!({"requestId": R1, "status": "success", "metrics": {"durationMs": 150.0,
                   "billedDurationMs": 151, "memorySizeMB": 128, "maxMemoryUsedMB": 64,
                   "initDurationMs": 300.0}}),
        ),
        platform("platform.start", json!({"requestId": "pt-req"})),
    ];
    let powertools = fixture("aws-lambda-powertools-python_3.37.0.jsonl");
    body.extend(powertools.iter().map(|l| function(l)));
    body.push(json!({"time": "t", "type": "extension", "record": powertools[0]}));
    body.push(platform(
        "platform.runtimeDone",
        json!({"requestId": "pt-req", "status": "error", "errorType": "Runtime.HandlerError",
               "metrics": {"durationMs": 20.0}}),
    ));
    body.push(platform(
        "platform.report",
        json!({"requestId": "pt-req", "status": "error", "errorType": "Runtime.HandlerError",
               "metrics": {"durationMs": 25.0, "billedDurationMs": 25, "memorySizeMB": 128,
                           "maxMemoryUsedMB": 70}}),
    ));
    intake.accept(&serde_json::to_vec(&body).expect("encodes"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let drained = tracker.drain(deadline).await.expect("tracker answers");
    assert_eq!(drained.invocations.len(), 2);
    let batch = Source::drain(&mut handle, drained, deadline).await;

    // Events: one per function line and the extension line, plus the failed invocation.
    let lines = wrapping.len() + powertools.len();
    assert_eq!((wrapping.len(), powertools.len()), (11, 15));
    assert_eq!(batch.events.len(), lines + 2);
    assert_eq!(counter(&batch, "loupe.log.lines", None), lines as u64 + 1);

    // lambda-runtime-wrapping.log: 10 lines extracted (5 of them inside the JSON envelope),
    // line 3 (`metrics: {...}`) rejected as text before the JSON.
    let (wrap_events, rest) = batch.events.split_at(wrapping.len());
    let kinds: Vec<Kind> = wrap_events.iter().map(|e| e.kind).collect();
    let mut expected = vec![Kind::Emf; 11];
    expected[2] = Kind::Log;
    assert_eq!(kinds, expected);
    assert_eq!(
        attr(&wrap_events[2], "loupe.emf.rejected"),
        Some(&AttrValue::Str("text_before_json".into()))
    );
    for e in wrap_events {
        assert_eq!(e.request_id.as_deref(), Some(R1));
        assert_eq!(
            e.trace_id.map(|t| t[..4].to_vec()),
            Some(vec![0x57, 0x59, 0xe9, 0x88])
        );
    }
    assert_eq!(
        series(
            &batch,
            "serverlessAirline",
            "successfulBooking",
            &[("service", "orders")]
        ),
        (10, 10.0)
    );
    assert_eq!(
        counter(&batch, "loupe.emf.rejected", Some("text_before_json")),
        1
    );
    assert_eq!(
        counter(
            &batch,
            "loupe.emf.warnings",
            Some("emf_inside_lambda_json_envelope")
        ),
        5
    );

    // Powertools: 15 EMF lines, each attributed to the latest start; the one that prints a
    // `requestId` property (an application's own id) keeps it as an attribute.
    let (pt_events, rest) = rest.split_at(powertools.len());
    assert!(pt_events.iter().all(|e| e.kind == Kind::Emf));
    let ids: Vec<&str> = pt_events
        .iter()
        .filter_map(|e| e.request_id.as_deref())
        .collect();
    assert_eq!(ids.len(), 15);
    assert_eq!(ids.iter().filter(|id| **id == "pt-req").count(), 15);
    assert_eq!(
        attr(&pt_events[6], "requestId"),
        Some(&AttrValue::Str(R1.into()))
    );
    assert_eq!(
        attr(&pt_events[1], "enduser.id"),
        Some(&AttrValue::Str("acme-corp".into()))
    );
    assert_eq!(
        attr(&pt_events[6], "details"),
        Some(&AttrValue::Json(json!({"seats": 2, "class": "economy"})))
    );
    assert_eq!(
        series(
            &batch,
            "ServerlessAirline",
            "SuccessfulBooking",
            &[("service", "booking")]
        ),
        (3, 3.0)
    );
    assert_eq!(
        series(
            &batch,
            "ServerlessAirline",
            "Latency",
            &[("service", "booking")]
        ),
        (3, 60.5)
    );
    assert_eq!(
        series(
            &batch,
            "ServerlessAirline",
            "Latency",
            &[("operation", "book"), ("region", "us-east-1")]
        ),
        (1, 42.0)
    );
    assert_eq!(counter(&batch, "loupe.emf.accepted", None), 10 + 15);

    // The extension's copy of a metric line is a log line, not a second data point.
    let ext = &rest[0];
    assert_eq!(ext.kind, Kind::Log);
    assert_eq!(
        attr(ext, "aws.lambda.extension_log"),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(
        series(
            &batch,
            "ServerlessAirline",
            "SuccessfulBooking",
            &[("service", "booking")]
        )
        .0,
        3
    );

    // The failed invocation, with the user it printed.
    let err = &rest[1];
    assert_eq!(err.kind, Kind::InvocationError);
    assert_eq!(err.request_id.as_deref(), Some("pt-req"));
    assert_eq!(
        attr(err, "enduser.id"),
        Some(&AttrValue::Str("acme-corp".into()))
    );
    assert_eq!(
        attr(err, "error.type"),
        Some(&AttrValue::Str("Runtime.HandlerError".into()))
    );

    // Platform metrics.
    assert_eq!(counter(&batch, "faas.invocations", None), 2);
    assert_eq!(counter(&batch, "faas.errors", None), 1);
    assert_eq!(counter(&batch, "faas.coldstarts", None), 1);
    let invoke = batch
        .series
        .iter()
        .find(|s| s.key.name() == "faas.invoke_duration")
        .expect("invoke duration series");
    assert_eq!(invoke.key.namespace(), "");
    assert_eq!(invoke.key.unit(), Unit::Seconds);
    assert_eq!(invoke.histogram.count(), 2);
    assert!((invoke.histogram.sum() - 0.175).abs() < 1e-9);

    drop(intake);
    drop(handle);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the task ends with its last handle")
        .expect("no panic");
}
