use super::*;
use crate::export::gzip::Gzip;
use crate::export::proto::common::v1::KeyValue;
use crate::export::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::export::proto::metrics::v1::{
    ExponentialHistogram, Metric, ResourceMetrics, ScopeMetrics, Sum,
    exponential_histogram_data_point::Buckets,
};
use serde_json::json;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn metrics(ms: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                scope: None,
                metrics: ms,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// DbWriteLatency{customer=acme}: 10 in (1,2], 10 in (2,4], 80 in (4,8] at scale 0.
fn latency(temporality: i32, time: u64) -> Metric {
    Metric {
        name: "DbWriteLatency".into(),
        unit: "ms".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            aggregation_temporality: temporality,
            data_points: vec![ExponentialHistogramDataPoint {
                attributes: vec![kv("customer", "acme")],
                time_unix_nano: time,
                count: 100,
                sum: Some(500.0),
                scale: 0,
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: vec![10, 10, 80],
                }),
                min: Some(1.5),
                max: Some(8.0),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn counter(name: &str, temporality: i32, v: i64, time: u64) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            aggregation_temporality: temporality,
            is_monotonic: true,
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("sentiment", "thanks")],
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsInt(v)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn logs() -> ExportLogsServiceRequest {
    let rec = |name: &str, attrs: Vec<KeyValue>| LogRecord {
        event_name: name.into(),
        attributes: attrs,
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: vec![
                    rec("", vec![]),
                    rec(
                        EMF_EVENT,
                        vec![kv("faas.invocation_id", "r1"), kv("objectKey", "k1")],
                    ),
                    rec(
                        ERROR_EVENT,
                        vec![
                            kv("faas.invocation_id", "r2"),
                            kv("user.id", "u7"),
                            kv("error.type", "PaymentFailed"),
                        ],
                    ),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

const DELTA: i32 = 1;

#[test]
fn protobuf_plain_and_gzip_decode_to_the_same_request() {
    let req = metrics(vec![latency(DELTA, 1)]);
    let raw = req.encode_to_vec();
    let zipped = Gzip::default().compress(&raw);
    for (ce, body) in [(None, &raw), (Some("gzip"), &zipped)] {
        match decode(Signal::Metrics, Encoding::Protobuf, ce, body).unwrap() {
            Decoded::Metrics(m) => assert_eq!(m, req),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn json_request_decodes_like_protobuf() {
    let body = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "DbWriteLatency", "unit": "ms",
        "exponentialHistogram": {"aggregationTemporality": 1, "dataPoints": [{
            "attributes": [{"key": "customer", "value": {"stringValue": "acme"}}],
            "timeUnixNano": "1", "count": "100", "sum": 500, "scale": 0,
            "positive": {"offset": 0, "bucketCounts": ["10", 10, "80"]},
            "min": 1.5, "max": 8
        }]}
    }]}]}]})
    .to_string();
    let zipped = Gzip::default().compress(body.as_bytes());
    for (ce, b) in [(None, body.as_bytes()), (Some("gzip"), &zipped[..])] {
        match decode(Signal::Metrics, Encoding::Json, ce, b).unwrap() {
            Decoded::Metrics(m) => assert_eq!(m, metrics(vec![latency(DELTA, 1)])),
            other => panic!("{other:?}"),
        }
    }
    let logs = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"eventName": ERROR_EVENT, "traceId": "5b8efff798038103d269b633813fc60c",
         "attributes": [{"key": "faas.invocation_id", "value": {"stringValue": "r2"}},
                        {"key": "enduser.id", "value": {"stringValue": "u9"}}]}
    ]}]}]})
    .to_string();
    let mut store = Store::default();
    store.add(&decode(Signal::Logs, Encoding::Json, None, logs.as_bytes()).unwrap());
    let r = store.report(&[]);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].request_id.as_deref(), Some("r2"));
    assert_eq!(r.errors[0].user_id.as_deref(), Some("u9"));
}

#[test]
fn bad_bodies_are_rejected_with_400_not_a_panic() {
    let store = Mutex::new(Store::default());
    let pb = Some("application/x-protobuf");
    let js = Some("application/json");
    /// Content-Type, Content-Encoding, body, expected status.
    type Case<'a> = (Option<&'a str>, Option<&'a str>, &'a [u8], u16);
    let cases: [Case; 8] = [
        (pb, None, b"\xff\xff\xff\xff", 400),
        (pb, Some("gzip"), b"not gzip at all", 400),
        (js, None, b"{not json", 400),
        (js, None, b"[1,2]", 400),
        (
            js,
            None,
            br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"dataPoints":[{"asInt":"x"}]}}]}]}]}"#,
            400,
        ),
        (Some("text/plain"), None, b"{}", 415),
        (None, None, b"{}", 415),
        (js, Some("br"), b"{}", 415),
    ];
    for (ct, ce, body, want) in cases {
        let (status, _, _) = answer(&store, "POST", "/v1/metrics", ct, ce, body);
        assert_eq!(status, want, "{ct:?} {ce:?} {body:?}");
    }
    let (status, _, _) = answer(&store, "POST", "/v1/other", js, None, b"{}");
    assert_eq!(status, 404);
    let r = store.lock().unwrap().report(&[]);
    assert_eq!(r.rejected_requests, 8);
    assert_eq!(r.total_requests(), 0);
}

#[test]
fn good_requests_get_an_empty_response_in_their_encoding() {
    let store = Mutex::new(Store::default());
    let (status, ct, body) = answer(
        &store,
        "POST",
        "/v1/logs",
        Some("application/x-protobuf"),
        None,
        &logs().encode_to_vec(),
    );
    assert_eq!((status, ct), (200, "application/x-protobuf"));
    assert_eq!(
        ExportLogsServiceResponse::decode(&body[..]).unwrap(),
        ExportLogsServiceResponse::default()
    );
    let (status, ct, body) = answer(
        &store,
        "POST",
        "/v1/traces",
        Some("application/json; charset=utf-8"),
        None,
        b"{}",
    );
    assert_eq!(
        (status, ct, &body[..]),
        (200, "application/json", &b"{}"[..])
    );
    let r = store.lock().unwrap().report(&[]);
    assert_eq!(r.requests.get("logs"), Some(&1));
    assert_eq!(r.requests.get("traces"), Some(&1));
    assert_eq!(r.log_records, 3);
    assert_eq!(r.emf_events, 1);
    assert_eq!(
        r.emf_samples[0].get("objectKey").map(String::as_str),
        Some("k1")
    );
    assert_eq!(
        r.errors[0],
        ErrorEvent {
            request_id: Some("r2".into()),
            user_id: Some("u7".into()),
            status: None,
            error_type: Some("PaymentFailed".into()),
            attributes: r.errors[0].attributes.clone(),
        }
    );
}

#[test]
fn delta_points_add_up_and_cumulative_keep_the_latest() {
    let mut store = Store::default();
    store.add_metrics(&metrics(vec![
        latency(DELTA, 1),
        counter("UserFeedback", DELTA, 2, 1),
        counter("loupe.lines", CUMULATIVE, 5, 2),
    ]));
    store.add_metrics(&metrics(vec![
        latency(DELTA, 2),
        counter("UserFeedback", DELTA, 3, 2),
        counter("loupe.lines", CUMULATIVE, 9, 3),
        counter("loupe.lines", CUMULATIVE, 7, 1),
    ]));
    let r = store.report(&[4.0, 6.0, 100.0]);
    let h = &r.histograms[0];
    assert_eq!(h.name, "DbWriteLatency");
    assert_eq!(
        h.attributes.get("customer").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        (h.count, h.sum, h.min, h.max),
        (Some(200), Some(1000.0), Some(1.5), Some(8.0))
    );
    assert!((h.p50.unwrap() - 5.5).abs() < 1e-9, "{:?}", h.p50);
    assert_eq!(h.share_above.len(), 3);
    assert!((h.share_above[0].1 - 0.8).abs() < 1e-9);
    assert!((h.share_above[1].1 - 0.4).abs() < 1e-9);
    assert_eq!(h.share_above[2].1, 0.0);
    assert_eq!(r.sums[0].value, Some(5.0));
    assert_eq!(r.loupe_metrics[0].name, "loupe.lines");
    assert_eq!(r.loupe_metrics[0].value, Some(9.0));
    let text = summary(&r);
    assert!(
        text.contains("receiver: 2 OTLP requests received (metrics 2)"),
        "{text}"
    );
    assert!(text.contains(">6: 40.0%"), "{text}");

    let mut cumulative = Store::default();
    cumulative.add_metrics(&metrics(vec![latency(CUMULATIVE, 5)]));
    cumulative.add_metrics(&metrics(vec![latency(CUMULATIVE, 6)]));
    assert_eq!(cumulative.report(&[]).histograms[0].count, Some(100));
}

#[test]
fn series_are_capped_and_counted() {
    let mut store = Store::default();
    for i in 0..MAX_SERIES + 3 {
        let mut m = counter("c", DELTA, 1, 1);
        if let Some(metric::Data::Sum(s)) = &mut m.data {
            s.data_points[0].attributes = vec![kv("i", &i.to_string())];
        }
        store.add_metrics(&metrics(vec![m]));
    }
    let r = store.report(&[]);
    assert_eq!(r.sums.len(), MAX_SERIES);
    assert_eq!(r.series_dropped, 3);
}

#[test]
fn nothing_received_says_so() {
    let text = summary(&Store::default().report(&[5.0]));
    assert!(
        text.starts_with("receiver: 0 OTLP requests received (none)"),
        "{text}"
    );
}

#[tokio::test]
async fn serves_over_http() {
    let rx = serve(0).await.unwrap();
    let sender = crate::export::http::HttpSender::new(&[], std::time::Duration::from_secs(5));
    let body = Gzip::default().compress(&metrics(vec![latency(DELTA, 1)]).encode_to_vec());
    let url = format!("http://{}/v1/metrics", rx.addr);
    let a = sender
        .post(
            &url,
            "application/x-protobuf",
            Bytes::from(body),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        rx.wait_accepted(1, std::time::Duration::from_secs(5)).await,
        1
    );
    assert_eq!(rx.report(&[]).histograms[0].count, Some(100));
}
