//! A small run of the demo flow end to end: the sample function under loupe-local with loupe as
//! its extension and `--receiver` as its backend. What loupe sends must arrive well formed.

#![cfg(feature = "local")]

mod support;

use support::sandbox::Sandbox;

use serde_json::Value;

const PAYLOADS: [&str; 4] = [
    r#"{"requestId":"h1","customer":"acme","dbLatencyMs":[3,12],"objectKey":"a/1.json","sentiment":"thanks","userId":"u1"}"#,
    r#"{"requestId":"h2","customer":"acme","dbLatencyMs":[150],"sentiment":"curses","userId":"u2"}"#,
    r#"{"requestId":"h3","customer":"globex","dbLatencyMs":[7],"fail":true,"userId":"u3"}"#,
    r#"{"requestId":"h4","customer":"globex","dbLatencyMs":[4,6],"objectKey":"g/4.json"}"#,
];

#[test]
fn demo_flow_end_to_end() {
    let out = Sandbox::new("demo")
        .with_loupe()
        .payloads(&PAYLOADS)
        .args(&["--receiver", "--threshold", "5,10,100", "--quiet"])
        .run();
    let (stdout, stderr, report) = (&out.stdout, &out.stderr, &out.report);

    // The lifecycle: every invocation ran, loupe registered and exited 0.
    assert_eq!(
        out.statuses(),
        vec!["success", "success", "error", "success"]
    );
    let loupe = &report["extensions"][0];
    assert_eq!(loupe["name"], "loupe");
    assert_eq!(loupe["registered"], true);
    assert_eq!(loupe["exitCode"], 0);

    // The receiver ran, was announced, and nothing sent to it was malformed.
    assert!(
        stderr.contains("loupe-local: OTLP receiver on http://127.0.0.1:"),
        "{stderr}"
    );
    let rx = &report["receiver"];
    assert!(rx.is_object(), "receiver section: {report}");
    assert_eq!(rx["rejectedRequests"], 0, "{rx}");
    assert_eq!(rx["badPoints"], 0, "{rx}");
    let received: u64 = rx["requests"]
        .as_object()
        .expect("requests")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(
        stdout.contains(&format!("receiver: {received} OTLP requests received")),
        "{stdout}"
    );

    assert!(received > 0, "loupe sent nothing: {rx}");
    assert_flushed_data(rx);
}

/// What loupe must deliver for `PAYLOADS`.
fn assert_flushed_data(rx: &Value) {
    let series = |name: &str, customer: &str| -> Value {
        rx["histograms"]
            .as_array()
            .expect("histograms")
            .iter()
            .find(|s| s["name"] == name && s["attributes"]["customer"] == customer)
            .cloned()
            .unwrap_or_else(|| panic!("{name} for {customer}: {rx}"))
    };
    // acme wrote 3, 12, 150 ms: 2 of 3 over 5 ms, 2 over 10 ms, 1 over 100 ms.
    let acme = series("DbWriteLatency", "acme");
    assert_eq!(acme["count"], 3, "{acme}");
    assert!(
        (acme["sum"].as_f64().unwrap_or(0.0) - 165.0).abs() < 1e-6,
        "{acme}"
    );
    let shares: Vec<f64> = acme["shareAbove"]
        .as_array()
        .expect("shareAbove")
        .iter()
        .filter_map(|p| p[1].as_f64())
        .collect();
    let want = [2.0 / 3.0, 2.0 / 3.0, 1.0 / 3.0];
    assert_eq!(shares.len(), 3, "{acme}");
    for (got, want) in shares.iter().zip(want) {
        assert!((got - want).abs() < 0.05, "{acme}");
    }
    let globex = series("DbWriteLatency", "globex");
    assert_eq!(globex["count"], 3, "{globex}");
    // The failed invocation carries its request id.
    let errors = rx["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{rx}");
    assert!(errors[0]["requestId"].is_string(), "{rx}");
    // ... and the user it served: "which user hit this error".
    assert_eq!(errors[0]["userId"], "u3", "{rx}");
    // Two EMF S3 writes carry their object keys; every log record is counted.
    assert!(rx["emfEvents"].as_u64().unwrap_or(0) >= 2, "{rx}");
    assert!(rx["logRecords"].as_u64().unwrap_or(0) > 0, "{rx}");
}

/// `--receiver` reaches the sandbox as `LOUPE_BACKEND_URL`: the runtime posts one OTLP/JSON logs
/// request there before it starts the real runtime client, and the report counts it.
#[test]
fn receiver_url_reaches_the_sandbox_and_json_is_decoded() {
    let script = r#"
import json, os, sys, urllib.request
body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{
    "eventName": "aws.lambda.invocation_error",
    "traceId": "5b8efff798038103d269b633813fc60c",
    "attributes": [
        {"key": "faas.invocation_id", "value": {"stringValue": "req-from-runtime"}},
        {"key": "user.id", "value": {"stringValue": "user-9"}},
        {"key": "error.type", "value": {"stringValue": "PaymentFailed"}}]}]}]}]}
req = urllib.request.Request(os.environ["LOUPE_BACKEND_URL"] + "/v1/logs",
    data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=5) as r:
    assert r.status == 200 and json.loads(r.read()) == {}, r.status
os.execv(sys.executable, [sys.executable, "-m", "awslambdaric", "app.handler"])
"#;
    let out = Sandbox::new("demo-url")
        .args(&["--receiver", "--quiet", "--invocations", "2"])
        .python_args(&["-c", script])
        .run();
    let (stdout, stderr, report) = (&out.stdout, &out.stderr, &out.report);
    assert_eq!(out.statuses(), vec!["success", "success"], "{stderr}");
    let rx = &report["receiver"];
    assert_eq!(rx["requests"]["logs"], 1, "{rx}");
    assert_eq!(rx["rejectedRequests"], 0, "{rx}");
    assert_eq!(rx["logRecords"], 1, "{rx}");
    let err = &rx["errors"][0];
    assert_eq!(err["requestId"], "req-from-runtime", "{rx}");
    assert_eq!(err["userId"], "user-9", "{rx}");
    assert_eq!(err["errorType"], "PaymentFailed", "{rx}");
    assert!(
        stdout.contains("receiver: 1 OTLP requests received (logs 1), 0 rejected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error: request req-from-runtime user user-9 status - type PaymentFailed"),
        "{stdout}"
    );
}
