//! A second, independent decoder: what the real `loupe` sends from beside the sample function is
//! decoded by the official Python bindings (`opentelemetry-proto` from PyPI, with
//! google.protobuf), not by any code of this repository. The sink (tests/fixtures/otlp_sink.py)
//! writes every request it decoded; the test checks metrics, logs and spans, their names,
//! attributes and values, against the function's known inputs.

#![cfg(feature = "local")]

mod support;

use support::python::python;
use support::sandbox::Sandbox;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

const PAYLOADS: [&str; 4] = [
    r#"{"requestId":"h1","customer":"acme","dbLatencyMs":[3,12],"objectKey":"a/1.json","sentiment":"thanks","userId":"u1"}"#,
    r#"{"requestId":"h2","customer":"acme","dbLatencyMs":[150],"sentiment":"curses","userId":"u2"}"#,
    r#"{"requestId":"h3","customer":"globex","dbLatencyMs":[7],"fail":true,"userId":"u3"}"#,
    r#"{"requestId":"h4","customer":"globex","dbLatencyMs":[4,6],"objectKey":"g/4.json"}"#,
];

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the sink and returns it with its port (read from its first line: no waiting on time).
fn start_sink(out: &Path) -> (Sink, u16) {
    let mut child = Command::new(python())
        .arg(Path::new(MANIFEST).join("tests/fixtures/otlp_sink.py"))
        .arg(out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sink");
    let stdout = child.stdout.take().expect("sink stdout");
    let sink = Sink(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the sink's first line");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the sink said {line:?} (is opentelemetry-proto installed?)"));
    (sink, port)
}

/// `[{key, value: {stringValue|intValue|...}}]` as (key, value) pairs.
fn attrs(v: &Value) -> Vec<(String, Value)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    let key = kv["key"].as_str().unwrap_or("").to_string();
                    let value = kv["value"]
                        .as_object()
                        .and_then(|o| o.values().next().cloned())
                        .unwrap_or(Value::Null);
                    (key, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn attr<'a>(pairs: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// protobuf's JSON mapping gives 64-bit integers as strings.
fn int(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(u64::MAX),
        Value::Number(n) => n.as_u64().unwrap_or(u64::MAX),
        _ => 0,
    }
}

#[test]
fn the_official_python_bindings_decode_what_loupe_sends() {
    let sandbox = Sandbox::new("otlp-python");
    let out = sandbox.dir().join("sink.jsonl");
    let (sink, port) = start_sink(&out);
    let run = sandbox
        .with_loupe()
        .payloads(&PAYLOADS)
        .env("LOUPE_BACKEND_URL", &format!("http://127.0.0.1:{port}"))
        .args(&["--quiet"])
        .run();
    assert_eq!(
        run.statuses(),
        vec!["success", "success", "error", "success"]
    );
    // loupe exited after its SHUTDOWN flush and every answer came after the line was written.
    drop(sink);
    let requests: Vec<Value> = std::fs::read_to_string(&out)
        .expect("the sink's output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        !requests.is_empty(),
        "nothing reached the sink: {}",
        run.stderr
    );
    for r in &requests {
        assert!(r.get("error").is_none(), "undecodable request: {r}");
        assert_eq!(r["contentType"], "application/x-protobuf", "{r}");
        assert_eq!(r["contentEncoding"], "gzip", "{r}");
    }

    // Metrics: the resource names the function, DbWriteLatency per customer is an exponential
    // histogram with the exact count, sum, min and max of the values the function printed.
    let mut latency: Vec<(String, Value)> = Vec::new();
    let mut invocations = 0;
    for r in requests.iter().filter(|r| r["path"] == "/v1/metrics") {
        for rm in r["decoded"]["resource_metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let resource = attrs(&rm["resource"]["attributes"]);
            assert_eq!(
                attr(&resource, "faas.name"),
                Some(&Value::from("loupe-local-function"))
            );
            assert_eq!(attr(&resource, "cloud.provider"), Some(&Value::from("aws")));
            assert!(attr(&resource, "service.name").is_some(), "{resource:?}");
            for sm in rm["scope_metrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    if m["name"] == "DbWriteLatency" {
                        assert_eq!(m["unit"], "ms", "{m}");
                        let eh = &m["exponential_histogram"];
                        assert_eq!(
                            eh["aggregation_temporality"], "AGGREGATION_TEMPORALITY_DELTA",
                            "{m}"
                        );
                        for p in eh["data_points"].as_array().into_iter().flatten() {
                            let pa = attrs(&p["attributes"]);
                            let customer = attr(&pa, "customer")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_string();
                            latency.push((customer, p.clone()));
                        }
                    }
                    if m["name"] == "faas.invocations" {
                        for p in m["sum"]["data_points"].as_array().into_iter().flatten() {
                            invocations += int(&p["as_int"]);
                        }
                    }
                }
            }
        }
    }
    let want = [
        ("acme", 3, 165.0, 3.0, 150.0),
        ("globex", 3, 17.0, 4.0, 7.0),
    ];
    for (customer, count, sum, min, max) in want {
        let points: Vec<&Value> = latency
            .iter()
            .filter(|(c, _)| c == customer)
            .map(|(_, p)| p)
            .collect();
        let n: u64 = points.iter().map(|p| int(&p["count"])).sum();
        let s: f64 = points.iter().filter_map(|p| p["sum"].as_f64()).sum();
        let lo = points
            .iter()
            .filter_map(|p| p["min"].as_f64())
            .fold(f64::MAX, f64::min);
        let hi = points
            .iter()
            .filter_map(|p| p["max"].as_f64())
            .fold(f64::MIN, f64::max);
        assert_eq!(n, count, "{customer}: {points:?}");
        assert!((s - sum).abs() < 1e-9, "{customer}: {points:?}");
        assert_eq!((lo, hi), (min, max), "{customer}: {points:?}");
        for p in points {
            // Every value sits in a bucket: bucket counts add up to count minus the zero count.
            let buckets: u64 = p["positive"]["bucket_counts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(int)
                .sum();
            assert_eq!(buckets + int(&p["zero_count"]), int(&p["count"]), "{p}");
        }
    }
    assert_eq!(invocations, 4, "faas.invocations over all requests");

    // Logs: the S3 writes carry their object keys and request ids; the failed invocation's error
    // event names its user.
    let records = items(
        &requests,
        "/v1/logs",
        ["resource_logs", "scope_logs", "log_records"],
    );
    let ids = run.request_ids();
    let keys: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["event_name"] == "aws.lambda.emf")
        .filter_map(|r| {
            let a = attrs(&r["attributes"]);
            let key = attr(&a, "objectKey")?.as_str()?.to_string();
            let request = attr(&a, "faas.invocation_id")?.as_str()?.to_string();
            Some((key, request))
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("a/1.json".to_string(), ids[0].clone()),
            ("g/4.json".to_string(), ids[3].clone())
        ],
        "{records:#?}"
    );
    let errors: Vec<Vec<(String, Value)>> = records
        .iter()
        .filter(|r| r["event_name"] == "aws.lambda.invocation_error")
        .map(|r| attrs(&r["attributes"]))
        .collect();
    assert_eq!(errors.len(), 1, "{records:#?}");
    assert_eq!(
        attr(&errors[0], "faas.invocation_id"),
        Some(&Value::from(ids[2].as_str()))
    );
    assert_eq!(attr(&errors[0], "enduser.id"), Some(&Value::from("u3")));

    // Traces: one server span per invocation, named for the function, in the X-Ray trace the
    // platform gave it; the failed one has status ERROR and its user.
    let servers = items(
        &requests,
        "/v1/traces",
        ["resource_spans", "scope_spans", "spans"],
    );
    assert_eq!(servers.len(), 4, "one span per invocation: {requests:#?}");
    assert!(
        servers.iter().all(|s| s["kind"] == "SPAN_KIND_SERVER"),
        "{servers:#?}"
    );
    for (id, span) in ids.iter().zip(&servers) {
        let a = attrs(&span["attributes"]);
        assert_eq!(
            attr(&a, "faas.invocation_id"),
            Some(&Value::from(id.as_str()))
        );
        assert_eq!(span["name"], "loupe-local-function", "{span}");
        assert!(
            span["trace_id"].as_str().is_some_and(|t| !t.is_empty()),
            "{span}"
        );
        assert!(int(&span["end_time_unix_nano"]) >= int(&span["start_time_unix_nano"]));
        // The platform's phases are attributes of the one span, not spans of their own.
        assert!(
            attr(&a, "aws.lambda.response_latency_ms").is_some_and(Value::is_f64),
            "{span}"
        );
    }
    assert_eq!(
        servers[2]["status"]["code"], "STATUS_CODE_ERROR",
        "{}",
        servers[2]
    );
    assert_eq!(
        attr(&attrs(&servers[2]["attributes"]), "enduser.id"),
        Some(&Value::from("u3"))
    );
    assert!(servers[0]["status"].get("code").is_none(), "{}", servers[0]);
}

/// Every item of the decoded requests sent to `path`, through the three levels OTLP nests them
/// in (resource, scope, item), in request order.
fn items(requests: &[Value], path: &str, [resource, scope, item]: [&str; 3]) -> Vec<Value> {
    let list = |v: &Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
    requests
        .iter()
        .filter(|r| r["path"] == path)
        .flat_map(|r| list(&r["decoded"], resource))
        .flat_map(|rs| list(&rs, scope))
        .flat_map(|ss| list(&ss, item))
        .collect()
}
