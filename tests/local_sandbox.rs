//! loupe-local on its own: the real Python runtime client runs the sample function, and a small
//! standard-library extension (tests/fixtures/extensions/test-ext) records what it was sent.
//! Every test waits on loupe-local's exit (it ends by itself: invocations, then SHUTDOWN), then
//! reads the extension's file and the JSON report.

#![cfg(feature = "local")]

mod support;

use support::sandbox::{Outcome, Sandbox};

use std::path::Path;

use serde_json::Value;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

struct Run {
    out: Outcome,
    /// What the test extension wrote, one JSON object per line.
    ext: Vec<Value>,
}

impl std::ops::Deref for Run {
    type Target = Outcome;

    fn deref(&self) -> &Outcome {
        &self.out
    }
}

impl Run {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.ext.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// Every telemetry event the extension received, in order.
    fn telemetry(&self) -> Vec<&Value> {
        self.of_kind("telemetry")
            .into_iter()
            .flat_map(|o| o["batch"].as_array().into_iter().flatten())
            .collect()
    }

    fn typed(&self, ty: &str) -> Vec<&Value> {
        self.telemetry()
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    }

    fn events(&self) -> Vec<&Value> {
        self.of_kind("event")
            .into_iter()
            .map(|o| &o["event"])
            .collect()
    }
}

/// Runs loupe-local with the sample function and the test extension; `ext_env` goes to the
/// extension (and the runtime) as `--env`.
fn run(name: &str, args: &[&str], ext_env: &[(&str, &str)]) -> Run {
    run_handler(name, args, ext_env, "app.handler")
}

fn run_handler(name: &str, args: &[&str], ext_env: &[(&str, &str)], handler: &str) -> Run {
    let sandbox = Sandbox::new(&format!("local-{name}"));
    let out_file = sandbox.dir().join("ext.jsonl");
    let mut sandbox = sandbox
        .extensions_dir(&Path::new(MANIFEST).join("tests/fixtures/extensions"))
        .env("LOUPE_TEST_OUT", &out_file.display().to_string())
        .handler(handler);
    for (k, v) in ext_env {
        sandbox = sandbox.env(k, v);
    }
    let out = sandbox.args(args).run();
    let ext = std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("extension output line is JSON"))
        .collect();
    Run { out, ext }
}

const EMF_PAYLOAD: &str = r#"{"requestId":"http-1","customer":"acme","dbLatencyMs":[3,7.5],"objectKey":"uploads/a.json","sentiment":"thanks","userId":"u-42"}"#;

#[test]
fn text_format_lifecycle_and_telemetry() {
    let r = run(
        "text",
        &["--invocations", "2", "--payload", EMF_PAYLOAD],
        &[
            ("LOUPE_TEST_WAIT_DONE", "1"),
            ("LOUPE_TEST_LATE_REGISTER", "1"),
        ],
    );
    assert_eq!(r.statuses(), ["success", "success"], "{}", r.stderr);
    let ids = r.request_ids();

    // Registered, subscribed, INVOKE for each request, then SHUTDOWN.
    let reg = r.of_kind("register");
    assert_eq!(reg.len(), 1);
    assert_eq!(reg[0]["status"], 200);
    let body: Value = serde_json::from_str(reg[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["functionName"], "loupe-local-function");
    assert_eq!(body["functionVersion"], "$LATEST");
    assert_eq!(body["handler"], "app.handler");
    assert_eq!(
        body["accountId"], "123456789012",
        "Accept-Feature: accountId"
    );
    let sub = r.of_kind("subscribe");
    assert_eq!(
        (sub[0]["status"].as_i64(), sub[0]["body"].as_str()),
        (Some(200), Some("\"OK\""))
    );
    let late = r.of_kind("late-register");
    assert_eq!(late[0]["status"], 403);
    assert!(
        late[0]["body"]
            .as_str()
            .unwrap()
            .contains("Extension.RegistrationClosed")
    );

    let events = r.events();
    assert_eq!(events.len(), 3);
    for (ev, id) in events.iter().zip(&ids) {
        assert_eq!(ev["eventType"], "INVOKE");
        assert_eq!(&ev["requestId"], id.as_str());
        assert!(ev["deadlineMs"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(
            ev["invokedFunctionArn"]
                .as_str()
                .unwrap()
                .ends_with(":function:loupe-local-function")
        );
        assert_eq!(ev["tracing"]["type"], "X-Amzn-Trace-Id");
        assert!(
            ev["tracing"]["value"]
                .as_str()
                .unwrap()
                .starts_with("Root=1-")
        );
    }
    assert_eq!(events[2]["eventType"], "SHUTDOWN");
    assert_eq!(events[2]["shutdownReason"], "spindown");
    assert!(events[2]["deadlineMs"].as_u64().unwrap() > 1_600_000_000_000);

    // Init records, in order, with their documented fields.
    let init_start = r.typed("platform.initStart");
    assert_eq!(init_start.len(), 1, "replayed to the late subscriber once");
    assert_eq!(init_start[0]["record"]["initializationType"], "on-demand");
    assert_eq!(init_start[0]["record"]["phase"], "init");
    assert_eq!(init_start[0]["record"]["instanceMaxMemory"], 128);
    assert_eq!(
        r.typed("platform.initRuntimeDone")[0]["record"]["status"],
        "success"
    );
    let init_report = r.typed("platform.initReport");
    assert!(
        init_report[0]["record"]["metrics"]["durationMs"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let ext_rec = r.typed("platform.extension");
    assert_eq!(ext_rec[0]["record"]["name"], "test-ext");
    assert_eq!(ext_rec[0]["record"]["state"], "Ready");
    assert_eq!(
        r.typed("platform.telemetrySubscription")[0]["record"]["types"][0],
        "platform"
    );

    // start / runtimeDone / report per request id.
    for (n, id) in ids.iter().enumerate() {
        let one = |ty: &str| -> Vec<&Value> {
            r.typed(ty)
                .into_iter()
                .filter(|e| e["record"]["requestId"] == id.as_str())
                .collect()
        };
        let start = one("platform.start");
        assert_eq!(start.len(), 1, "{id}");
        assert_eq!(start[0]["record"]["version"], "$LATEST");
        assert!(start[0]["time"].as_str().unwrap().ends_with('Z'));
        let done = one("platform.runtimeDone");
        assert_eq!(done.len(), 1);
        let d = &done[0]["record"];
        assert_eq!(d["status"], "success");
        assert!(d["metrics"]["durationMs"].as_f64().unwrap() >= 0.0);
        assert!(d["metrics"]["producedBytes"].as_u64().unwrap() > 0);
        let spans: Vec<&str> = d["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            spans,
            ["responseLatency", "responseDuration", "runtimeOverhead"]
        );
        let rep = one("platform.report");
        assert_eq!(rep.len(), 1);
        let m = &rep[0]["record"]["metrics"];
        let duration = m["durationMs"].as_f64().unwrap();
        assert!(duration > 0.0);
        assert_eq!(
            m["billedDurationMs"].as_u64().unwrap(),
            duration.ceil() as u64
        );
        assert_eq!(m["memorySizeMB"], 128);
        assert!(
            m["maxMemoryUsedMB"].as_u64().unwrap() > 5,
            "measured from /proc"
        );
        assert_eq!(
            m.get("initDurationMs").is_some(),
            n == 0,
            "initDurationMs on the cold start only"
        );
        assert_eq!(rep[0]["record"]["spans"][0]["name"], "extensionOverhead");
    }

    // The extension waits for runtimeDone before its /next, so runtimeDone of the first request
    // was delivered while that invocation was open (before the second INVOKE), and its report,
    // generated only after that /next, came in a later batch. (Whether the report or the second
    // INVOKE reaches the extension's file first is a race between its two threads.)
    let order: Vec<String> = r
        .ext
        .iter()
        .flat_map(|o| match o["kind"].as_str() {
            Some("event") => vec![format!(
                "event:{}",
                o["event"]["eventType"].as_str().unwrap_or("")
            )],
            Some("telemetry") => o["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["type"].as_str().unwrap_or("").to_string())
                .collect(),
            _ => vec![],
        })
        .collect();
    let pos = |s: &str| {
        order
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} missing in {order:?}"))
    };
    let second_invoke = order
        .iter()
        .enumerate()
        .filter(|(_, x)| *x == "event:INVOKE")
        .nth(1)
        .unwrap()
        .0;
    assert!(pos("platform.runtimeDone") < second_invoke, "{order:?}");
    let batch_of = |ty: &str, id: &str| {
        r.of_kind("telemetry")
            .iter()
            .position(|o| {
                o["batch"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["type"] == ty && e["record"]["requestId"] == id)
            })
            .unwrap_or_else(|| panic!("{ty} for {id} missing"))
    };
    assert!(batch_of("platform.runtimeDone", &ids[0]) < batch_of("platform.report", &ids[0]));

    // Function records carry the EMF lines as strings in Text format.
    let lines: Vec<&str> = r
        .typed("function")
        .iter()
        .filter_map(|e| e["record"].as_str())
        .collect();
    assert_eq!(
        lines.len(),
        r.typed("function").len(),
        "Text format: strings only"
    );
    let emf: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 6, "3 EMF documents per invocation: {lines:?}");
    let db = emf
        .iter()
        .find(|v| v.get("DbWriteLatency").is_some())
        .unwrap();
    assert_eq!(db["customer"], "acme");
    assert_eq!(db["DbWriteLatency"], serde_json::json!([3, 7.5]));
    assert_eq!(db["requestId"], "http-1");
    let s3 = emf
        .iter()
        .find(|v| v.get("S3ObjectWrite").is_some())
        .unwrap();
    assert_eq!(s3["objectKey"], "uploads/a.json");
    let fb = emf
        .iter()
        .find(|v| v.get("UserFeedback").is_some())
        .unwrap();
    assert_eq!(
        (fb["sentiment"].as_str(), fb["userId"].as_str()),
        (Some("thanks"), Some("u-42"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[INFO]\t") && l.contains("stored object uploads/a.json"))
    );
    assert!(
        r.typed("extension")
            .iter()
            .any(|e| e["record"] == "test-ext: registered")
    );

    // The report promises.
    let rep = &r.report;
    let inv = &rep["invocations"][0];
    assert_eq!(inv["response"]["ok"], true);
    assert!(inv["durationMs"].as_f64().unwrap() > 0.0);
    assert!(
        inv["extensionOverheadMs"].as_f64().unwrap() > 0.0,
        "the extension waited for runtimeDone"
    );
    let ext = &rep["extensions"][0];
    assert_eq!(ext["name"], "test-ext");
    assert_eq!(ext["registered"], true);
    assert_eq!(
        ext["events"],
        serde_json::json!(["INVOKE", "INVOKE", "SHUTDOWN"])
    );
    assert_eq!(ext["exitCode"], 0);
    assert!(ext["shutdownMs"].as_f64().unwrap() < 2000.0);
    let s = &rep["subscriptions"][0];
    assert_eq!(
        (
            s["extension"].as_str(),
            s["api"].as_str(),
            s["schemaVersion"].as_str()
        ),
        (Some("test-ext"), Some("telemetry"), Some("2022-12-13"))
    );
    assert_eq!(s["buffering"]["timeoutMs"], 25);
    let c = &rep["counters"][0];
    assert_eq!(
        c["deliveredRecords"].as_u64().unwrap() as usize,
        r.telemetry().len()
    );
    // Nothing was lost while the extension was listening; only lines written after SHUTDOWN (its
    // own "shutting down") may be lost as it exits, which is counted but cannot be announced.
    assert!(r.typed("platform.logsDropped").is_empty());
    assert!(c["droppedRecords"].as_u64().unwrap() <= 2, "{c}");
    assert!(c["failedBatches"].as_u64().unwrap() <= 1, "{c}");
    assert_eq!(
        rep["refused"][0]["errorType"],
        "Extension.RegistrationClosed"
    );
    assert!(
        r.stdout.contains("invocations: 2 (success 2)"),
        "{}",
        r.stdout
    );
    assert_eq!(rep["freezes"], 3, "after init and after each invocation");
}

#[test]
fn json_log_format_gives_objects() {
    // One extra non-JSON line: `logBytes` prints ten x's.
    let payload = EMF_PAYLOAD.replace("}", ",\"logBytes\":10}");
    let r = run(
        "json",
        &["--log-format", "json", "--no-freeze", "--payload", &payload],
        &[],
    );
    assert_eq!(r.statuses(), ["success"]);
    assert_eq!(r.report["freezes"], 0, "--no-freeze");
    let records: Vec<&Value> = r
        .typed("function")
        .into_iter()
        .map(|e| &e["record"])
        .collect();
    let emf: Vec<&&Value> = records.iter().filter(|v| v.get("_aws").is_some()).collect();
    assert!(
        records.iter().any(|v| *v == "xxxxxxxxxx"),
        "a line that is not a JSON object stays a string: {records:?}"
    );
    assert_eq!(emf.len(), 3, "EMF lines arrive as objects: {records:?}");
    assert!(emf.iter().all(|v| v.is_object()));
    // The runtime's own JSON logger output is an object too.
    assert!(
        records.iter().any(|v| v["level"] == "INFO"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("stored object"))),
        "{records:?}"
    );
}

#[test]
fn schema_2022_07_01_gives_strings_even_in_json_format() {
    let r = run(
        "schema0701",
        &["--log-format", "json", "--payload", EMF_PAYLOAD],
        &[("LOUPE_TEST_SCHEMAS", "2022-07-01")],
    );
    let records: Vec<&Value> = r
        .typed("function")
        .into_iter()
        .map(|e| &e["record"])
        .collect();
    assert!(!records.is_empty());
    assert!(records.iter().all(|v| v.is_string()), "{records:?}");
}

#[test]
fn timeout_resets_the_environment() {
    let dir = std::env::temp_dir().join(format!("loupe-local-payloads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payloads = dir.join("timeout.jsonl");
    std::fs::write(
        &payloads,
        "{\"sleepMs\": 5000}\n{\"customer\": \"globex\"}\n",
    )
    .unwrap();
    let r = run(
        "timeout",
        &["--timeout", "1", "--payloads", payloads.to_str().unwrap()],
        &[],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.statuses(), ["timeout", "success"], "{}", r.stderr);
    let ids = r.request_ids();
    assert_eq!(r.report["invocations"][0]["errorType"], "Sandbox.Timeout");
    let done = r.typed("platform.runtimeDone");
    let first = done
        .iter()
        .find(|e| e["record"]["requestId"] == ids[0].as_str())
        .unwrap();
    assert_eq!(first["record"]["status"], "timeout");
    assert_eq!(first["record"]["errorType"], "Sandbox.Timeout");
    let report = r.typed("platform.report");
    let first = report
        .iter()
        .find(|e| e["record"]["requestId"] == ids[0].as_str())
        .unwrap();
    assert_eq!(first["record"]["status"], "timeout");
    // The extension was shut down with reason timeout, launched again, and init ran in the
    // invoke phase.
    let events: Vec<(String, String)> = r
        .events()
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap_or("").into(),
                e["shutdownReason"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["INVOKE", "SHUTDOWN", "INVOKE", "SHUTDOWN"]);
    assert_eq!(events[1].1, "timeout");
    assert_eq!(events[3].1, "spindown");
    let exts = r.report["extensions"].as_array().unwrap();
    assert_eq!(exts.len(), 2);
    assert_eq!(exts[1]["instance"], 2);
    assert!(exts.iter().all(|e| e["exitCode"] == 0));
    let phases: Vec<&str> = r.report["inits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["init", "invoke"]);
    assert!(
        r.typed("platform.initStart")
            .iter()
            .any(|e| e["record"]["phase"] == "invoke")
    );
}

#[test]
fn crash_is_a_failure_and_the_next_invocation_works() {
    let dir = std::env::temp_dir().join(format!("loupe-local-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payloads = dir.join("crash.jsonl");
    std::fs::write(
        &payloads,
        "{\"crash\": true, \"userId\": \"u-9\"}\n{\"fail\": true, \"userId\": \"u-7\"}\n{}\n",
    )
    .unwrap();
    let r = run("crash", &["--payloads", payloads.to_str().unwrap()], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        r.statuses(),
        ["failure", "error", "success"],
        "{}",
        r.stderr
    );
    let inv = r.report["invocations"].as_array().unwrap();
    assert_eq!(inv[0]["errorType"], "Runtime.ExitError");
    assert_eq!(inv[1]["errorType"], "PaymentFailed");
    assert_eq!(inv[1]["response"]["errorType"], "PaymentFailed");
    let ids = r.request_ids();
    let done = r.typed("platform.runtimeDone");
    let find = |id: &str| {
        done.iter()
            .find(|e| e["record"]["requestId"] == id)
            .map(|e| &e["record"])
    };
    assert_eq!(find(&ids[0]).unwrap()["status"], "failure");
    assert_eq!(find(&ids[0]).unwrap()["errorType"], "Runtime.ExitError");
    assert_eq!(find(&ids[1]).unwrap()["status"], "error");
    assert_eq!(find(&ids[1]).unwrap()["errorType"], "PaymentFailed");
    assert_eq!(find(&ids[2]).unwrap()["status"], "success");
    // Which user hit the error: the function printed it.
    assert!(r.typed("function").iter().any(|e| {
        e["record"]
            .as_str()
            .is_some_and(|s| s.contains("userId=u-7"))
    }));
    let reasons: Vec<&str> = r
        .events()
        .iter()
        .filter_map(|e| e["shutdownReason"].as_str())
        .collect();
    assert_eq!(reasons, ["failure", "spindown"]);
}

/// An extension still busy with the crashed invocation when the environment resets gets the
/// SHUTDOWN (reason `failure`) at its next `/next`, as on Lambda, not a refusal.
#[test]
fn busy_extension_gets_the_shutdown_of_a_crash_reset() {
    let dir = std::env::temp_dir().join(format!("loupe-local-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payloads = dir.join("crash.jsonl");
    std::fs::write(&payloads, "{\"crash\": true}\n").unwrap();
    let r = run(
        "busy",
        &["--payloads", payloads.to_str().unwrap()],
        &[("LOUPE_TEST_BUSY_UNTIL_REPORT", "1")],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(r.statuses(), ["failure"], "{}", r.stderr);
    let refused: Vec<&Value> = r.of_kind("next-error");
    assert!(refused.is_empty(), "{refused:?}\n{}", r.stderr);
    let reasons: Vec<&str> = r
        .events()
        .iter()
        .filter_map(|e| e["shutdownReason"].as_str())
        .collect();
    assert_eq!(reasons, ["failure"], "{}", r.stderr);
    let ext = &r.report["extensions"][0];
    assert_eq!(ext["exitCode"], 0, "{ext}");
}

#[test]
fn managed_instances_refuse_invoke_and_logs() {
    let r = run(
        "lmi",
        &["--managed-instances", "--payload", EMF_PAYLOAD],
        &[
            ("LOUPE_TEST_SUBSCRIBE", "logs,telemetry"),
            ("LOUPE_TEST_SCHEMAS", "2022-12-13,2025-01-29"),
        ],
    );
    assert_eq!(r.statuses(), ["success"]);
    let reg = r.of_kind("register");
    assert_eq!(reg[0]["status"], 403);
    assert!(
        reg[0]["body"]
            .as_str()
            .unwrap()
            .contains("Extension.InvalidEventType")
    );
    assert_eq!(reg[1]["events"], serde_json::json!(["SHUTDOWN"]));
    assert_eq!(reg[1]["status"], 200);
    let sub = r.of_kind("subscribe");
    assert_eq!(
        (sub[0]["api"].as_str(), sub[0]["status"].as_i64()),
        (Some("logs"), Some(202))
    );
    assert!(
        sub[0]["body"]
            .as_str()
            .unwrap()
            .contains("Logs.NotSupported")
    );
    assert_eq!(
        (sub[1]["schema"].as_str(), sub[1]["status"].as_i64()),
        (Some("2022-12-13"), Some(400))
    );
    assert!(sub[1]["body"].as_str().unwrap().contains("ValidationError"));
    assert_eq!(
        (sub[2]["schema"].as_str(), sub[2]["status"].as_i64()),
        (Some("2025-01-29"), Some(200))
    );
    // Only SHUTDOWN, no runtimeDone, a duration-only report, JSON log format.
    let kinds: Vec<&str> = r
        .events()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["SHUTDOWN"]);
    assert!(r.typed("platform.runtimeDone").is_empty());
    let report = r.typed("platform.report");
    assert_eq!(report.len(), 1);
    let metrics = report[0]["record"]["metrics"].as_object().unwrap();
    assert_eq!(metrics.keys().collect::<Vec<_>>(), ["durationMs"]);
    assert_eq!(
        r.typed("platform.initStart")[0]["record"]["initializationType"],
        "lambda-managed-instances"
    );
    assert!(
        r.typed("function")
            .iter()
            .any(|e| e["record"].get("_aws").is_some()),
        "JSON format: objects"
    );
    assert_eq!(r.report["freezes"], 0, "Managed Instances never freeze");
}

#[test]
fn refused_apis_answer_as_documented() {
    let off = run(
        "tel-off",
        &["--invocations", "0", "--telemetry-api", "off"],
        &[],
    );
    let s = off.of_kind("subscribe");
    assert_eq!(s[0]["status"], 400);
    assert!(
        s[0]["body"]
            .as_str()
            .unwrap()
            .contains("\"errorType\":\"ValidationError\"")
    );
    assert!(off.telemetry().is_empty());
    assert_eq!(off.events().len(), 1, "still gets SHUTDOWN");

    let stub = run(
        "tel-202",
        &["--invocations", "0", "--telemetry-api", "202"],
        &[],
    );
    let s = stub.of_kind("subscribe");
    assert_eq!(s[0]["status"], 202);
    assert!(
        s[0]["body"]
            .as_str()
            .unwrap()
            .contains("Telemetry.NotSupported")
    );

    let logs = run(
        "logs-off",
        &[
            "--invocations",
            "0",
            "--logs-api",
            "off",
            "--telemetry-schemas",
            "2022-12-13",
        ],
        &[
            ("LOUPE_TEST_SUBSCRIBE", "logs,telemetry"),
            ("LOUPE_TEST_SCHEMAS", "2025-01-29,2022-12-13"),
        ],
    );
    let s = logs.of_kind("subscribe");
    assert_eq!(s[0]["status"], 202);
    assert!(s[0]["body"].as_str().unwrap().contains("Logs.NotSupported"));
    assert_eq!(
        (s[1]["schema"].as_str(), s[1]["status"].as_i64()),
        (Some("2025-01-29"), Some(400))
    );
    assert_eq!(
        (s[2]["schema"].as_str(), s[2]["status"].as_i64()),
        (Some("2022-12-13"), Some(200))
    );
    let refused: Vec<&str> = logs.report["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["errorType"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["Logs.NotSupported", "ValidationError"]);
}

#[test]
fn logs_api_delivers_string_records() {
    let r = run(
        "logs-on",
        &["--payload", EMF_PAYLOAD],
        &[("LOUPE_TEST_SUBSCRIBE", "logs")],
    );
    assert_eq!(r.of_kind("subscribe")[0]["status"], 200);
    let id = &r.request_ids()[0];
    let types: Vec<&str> = r
        .telemetry()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(!types.contains(&"platform.initStart"), "{types:?}");
    for ty in [
        "platform.start",
        "platform.runtimeDone",
        "platform.end",
        "platform.report",
    ] {
        assert!(
            r.typed(ty)
                .iter()
                .any(|e| e["record"]["requestId"] == id.as_str()),
            "{ty} in {types:?}"
        );
    }
    assert!(r.typed("function").iter().all(|e| e["record"].is_string()));
    assert!(
        r.typed("platform.report")[0]["record"]
            .get("spans")
            .is_none()
    );
}

#[test]
fn failing_subscriber_gets_logs_dropped() {
    // The first three POSTs fail: loupe-local retries the first batch twice, drops it, and tells
    // the subscriber with platform.logsDropped in a later batch.
    let r = run(
        "dropped",
        &["--payload", EMF_PAYLOAD],
        &[("LOUPE_TEST_FAIL_BATCHES", "3")],
    );
    assert_eq!(r.of_kind("refused-batch").len(), 3);
    let dropped = r.typed("platform.logsDropped");
    assert_eq!(dropped.len(), 1, "{:?}", r.telemetry());
    assert!(dropped[0]["record"]["droppedRecords"].as_u64().unwrap() >= 1);
    assert!(dropped[0]["record"]["droppedBytes"].as_u64().unwrap() > 0);
    let c = &r.report["counters"][0];
    // The refused batch, and at most one more sent as the extension exited at SHUTDOWN.
    let failed = c["failedBatches"].as_u64().unwrap();
    assert!((1..=2).contains(&failed), "{c}");
    assert!(
        c["droppedRecords"].as_u64().unwrap()
            >= dropped[0]["record"]["droppedRecords"].as_u64().unwrap()
    );
    assert_eq!(r.statuses(), ["success"]);
}

#[test]
fn init_error_is_reported_and_init_retried_at_invoke() {
    let r = run_handler(
        "init-error",
        &["--handler", "missing.handler"],
        &[],
        "missing.handler",
    );
    let inits: Vec<(&str, &str, &str)> = r.report["inits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["phase"].as_str().unwrap(),
                i["status"].as_str().unwrap(),
                i["errorType"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        inits,
        [
            ("init", "error", "Runtime.ImportModuleError"),
            ("invoke", "error", "Runtime.ImportModuleError")
        ],
        "{}",
        r.stderr
    );
    assert_eq!(r.statuses(), ["failure"]);
    assert_eq!(
        r.report["invocations"][0]["errorType"],
        "Runtime.ImportModuleError"
    );
    let done = r.typed("platform.initRuntimeDone");
    assert!(!done.is_empty());
    assert!(done.iter().all(|e| e["record"]["status"] == "error"
        && e["record"]["errorType"] == "Runtime.ImportModuleError"));
    let reports = r.typed("platform.initReport");
    assert!(reports.iter().all(|e| e["record"]["status"] == "error"));
    // Each failed init shuts the extension down with reason failure; it is launched again.
    let reasons: Vec<&str> = r
        .events()
        .iter()
        .filter_map(|e| e["shutdownReason"].as_str())
        .collect();
    assert_eq!(reasons, ["failure", "failure"]);
    assert_eq!(r.report["extensions"].as_array().unwrap().len(), 2);
}

fn init_rows(r: &Run) -> Vec<(String, String, String)> {
    r.report["inits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["phase"].as_str().unwrap_or("").to_string(),
                i["status"].as_str().unwrap_or("").to_string(),
                i["errorType"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn extension_crash_in_init_fails_the_init() {
    let r = run("ext-crash", &[], &[("LOUPE_TEST_INIT_CRASH", "1")]);
    let rows = init_rows(&r);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(_, s, e)| s == "failure" && e == "Extension.Crash"),
        "{rows:?}"
    );
    assert_eq!(r.statuses(), ["failure"]);
    let exts = r.report["extensions"].as_array().unwrap();
    assert!(
        exts.iter()
            .all(|e| e["exitCode"] == 5 && e["registered"] == true)
    );
    assert!(
        exts[0]["stderr"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "test-ext: crashing during init")
    );
}

#[test]
fn extension_init_error_fails_the_init_with_its_type() {
    let r = run("ext-init-error", &[], &[("LOUPE_TEST_INIT_ERROR", "1")]);
    assert_eq!(r.of_kind("init-error")[0]["status"], 202);
    let rows = init_rows(&r);
    assert_eq!(
        rows[0],
        (
            "init".into(),
            "error".into(),
            "Extension.ConfigInvalid".into()
        )
    );
    assert_eq!(
        r.report["extensions"][0]["errorType"],
        "Extension.ConfigInvalid"
    );
    assert_eq!(r.statuses(), ["failure"]);
}

#[test]
fn extension_ignoring_shutdown_is_killed_at_the_deadline() {
    let r = run("ext-hang", &[], &[("LOUPE_TEST_HANG", "1")]);
    assert_eq!(r.statuses(), ["success"]);
    let e = &r.report["extensions"][0];
    assert_eq!(e["events"], serde_json::json!(["INVOKE", "SHUTDOWN"]));
    assert_eq!(e["exitCode"], Value::Null);
    assert_eq!(e["exitSignal"], 9);
    assert!(e["shutdownMs"].as_f64().unwrap() > 0.0);
    assert!(r.stdout.contains("killed by signal 9"), "{}", r.stdout);
}

/// A runtime written for this test: before it becomes a runtime it calls the APIs the wrong ways
/// and records the answers, then serves one invocation by hand.
const PROBE_RUNTIME: &str = r#"
import json, os, urllib.request, urllib.error
API = os.environ["AWS_LAMBDA_RUNTIME_API"]
OUT = os.environ["LOUPE_TEST_PROBE_OUT"]
def call(method, path, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{API}{path}", data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict((k.lower(), v) for k, v in r.headers.items()), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {}, e.read().decode()
res = {}
def probe(name, *a):
    status, _, body = call(*a)
    try:
        body = json.loads(body)
    except ValueError:
        pass
    res[name] = {"status": status, "errorType": body.get("errorType") if isinstance(body, dict) else None}
reg = "/2020-01-01/extension/register"
probe("register-no-name", "POST", reg, {"events": ["INVOKE"]})
probe("register-bad-event", "POST", reg, {"events": ["BOGUS"]}, {"Lambda-Extension-Name": "x"})
probe("register-config-keys", "POST", reg, {"events": ["INVOKE"], "configurationKeys": ["a"]}, {"Lambda-Extension-Name": "x"})
probe("register-unknown-name", "POST", reg, {"events": ["INVOKE"]}, {"Lambda-Extension-Name": "nobody"})
probe("register-not-json", "POST", reg, b"{", {"Lambda-Extension-Name": "x"})
probe("next-no-id", "GET", "/2020-01-01/extension/event/next")
probe("next-unknown-id", "GET", "/2020-01-01/extension/event/next", None, {"Lambda-Extension-Identifier": "nope"})
probe("telemetry-no-id", "PUT", "/2022-07-01/telemetry", {"schemaVersion": "2022-12-13"})
probe("exit-error-unknown-id", "POST", "/2020-01-01/extension/exit/error", None, {"Lambda-Extension-Identifier": "nope"})
probe("unknown-route", "GET", "/2018-06-01/nothing")
probe("response-unknown-id", "POST", "/2018-06-01/runtime/invocation/nope/response", {"a": 1})
status, headers, body = call("GET", "/2018-06-01/runtime/invocation/next")
rid = headers.get("lambda-runtime-aws-request-id")
res["invocation"] = {"status": status, "payload": json.loads(body), "requestId": rid,
    "deadline": headers.get("lambda-runtime-deadline-ms"), "arn": headers.get("lambda-runtime-invoked-function-arn"),
    "trace": headers.get("lambda-runtime-trace-id")}
res["env"] = {k: os.environ.get(k) for k in ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_LAMBDA_LOG_FORMAT", "AWS_LAMBDA_INITIALIZATION_TYPE", "_HANDLER", "LAMBDA_TASK_ROOT",
    "AWS_EXECUTION_ENV", "TZ", "EXTRA"]}
probe("response", "POST", f"/2018-06-01/runtime/invocation/{rid}/response", {"echo": res["invocation"]["payload"]})
probe("response-again", "POST", f"/2018-06-01/runtime/invocation/{rid}/response", {"x": 2})
probe("init-error-late", "POST", "/2018-06-01/runtime/init/error", {"errorType": "X"})
with open(OUT, "w") as f:
    json.dump(res, f)
call("GET", "/2018-06-01/runtime/invocation/next")
"#;

#[test]
fn api_misuse_is_refused_as_lambda_does() {
    let sandbox = Sandbox::new("probe");
    let out = sandbox.dir().join("probe.json");
    let run = sandbox
        .args(&["--quiet", "--memory", "256", "--function-name", "probe"])
        .args(&["--region", "eu-west-1", "--handler", "probe.handler"])
        .args(&["--payload", "{\"n\": 7}"])
        .env("LOUPE_TEST_PROBE_OUT", &out.display().to_string())
        .env("EXTRA", "yes")
        .python_args(&["-c", PROBE_RUNTIME])
        .run();
    let res: Value = serde_json::from_slice(&std::fs::read(&out).expect("probe output")).unwrap();
    let expect = [
        ("register-no-name", 403, "Extension.InvalidExtensionName"),
        ("register-bad-event", 403, "Extension.InvalidEventType"),
        ("register-config-keys", 403, "InvalidRequestFormat"),
        (
            "register-unknown-name",
            403,
            "Extension.InvalidExtensionName",
        ),
        ("register-not-json", 403, "InvalidRequestFormat"),
        ("next-no-id", 403, "Extension.MissingExtensionIdentifier"),
        (
            "next-unknown-id",
            403,
            "Extension.UnknownExtensionIdentifier",
        ),
        (
            "telemetry-no-id",
            403,
            "Extension.MissingExtensionIdentifier",
        ),
        (
            "exit-error-unknown-id",
            403,
            "Extension.UnknownExtensionIdentifier",
        ),
        ("unknown-route", 404, "NotFound"),
        ("response-unknown-id", 400, "InvalidRequestID"),
        ("response-again", 400, "InvalidStateTransition"),
        ("init-error-late", 403, "Runtime.InvalidStateTransition"),
    ];
    for (name, status, error_type) in expect {
        assert_eq!(res[name]["status"], status, "{name}: {}", res[name]);
        assert_eq!(res[name]["errorType"], error_type, "{name}");
    }
    assert_eq!(res["response"]["status"], 202);
    let inv = &res["invocation"];
    assert_eq!(inv["status"], 200);
    assert_eq!(inv["payload"], serde_json::json!({"n": 7}));
    assert_eq!(inv["requestId"].as_str().map(str::len), Some(36));
    assert!(inv["deadline"].as_str().unwrap().parse::<u64>().unwrap() > 1_600_000_000_000);
    assert_eq!(
        inv["arn"],
        "arn:aws:lambda:eu-west-1:123456789012:function:probe"
    );
    assert!(inv["trace"].as_str().unwrap().starts_with("Root=1-"));
    let env = &res["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "probe");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/probe");
    assert!(
        env["AWS_LAMBDA_LOG_STREAM_NAME"]
            .as_str()
            .unwrap()
            .contains("/[$LATEST]")
    );
    assert_eq!(
        (
            env["AWS_REGION"].as_str(),
            env["AWS_DEFAULT_REGION"].as_str()
        ),
        (Some("eu-west-1"), Some("eu-west-1"))
    );
    assert_eq!(env["AWS_LAMBDA_LOG_FORMAT"], "Text");
    assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    assert_eq!(env["_HANDLER"], "probe.handler");
    assert!(
        env["LAMBDA_TASK_ROOT"]
            .as_str()
            .is_some_and(|p| Path::new(p).is_absolute())
    );
    assert!(
        env["AWS_EXECUTION_ENV"]
            .as_str()
            .is_some_and(|v| v.starts_with("AWS_Lambda_"))
    );
    assert_eq!(env["TZ"], ":UTC");
    assert_eq!(env["EXTRA"], "yes");
    let summary = &run.stdout;
    assert!(summary.contains("invocations: 1 (success 1)"), "{summary}");
}

#[test]
fn init_timeout_is_reported() {
    // The extension never registers: init times out (budget shortened from 10 s for the test).
    let r = run(
        "init-timeout",
        &["--init-timeout", "1"],
        &[("LOUPE_TEST_NO_REGISTER", "1")],
    );
    let rows = init_rows(&r);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(_, s, e)| s == "timeout" && e == "Sandbox.Timeout"),
        "{rows:?}"
    );
    assert_eq!(r.statuses(), ["failure"]);
    let exts = r.report["extensions"].as_array().unwrap();
    assert!(
        exts.iter()
            .all(|e| e["registered"] == false && e["exitSignal"] == 9),
        "{exts:?}"
    );
}

#[test]
fn long_lines_are_split_at_256_kib() {
    let n = 256 * 1024 + 1000;
    let payload = format!("{{\"logBytes\": {n}}}");
    let r = run("long-line", &["--payload", &payload], &[]);
    let xs: Vec<usize> = r
        .typed("function")
        .iter()
        .filter_map(|e| e["record"].as_str())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b == b'x'))
        .map(str::len)
        .collect();
    assert_eq!(xs, [256 * 1024, 1000]);
}

#[test]
fn slow_subscriber_loses_records_and_is_told() {
    // 20,000 lines while the subscriber takes 300 ms per batch: its buffer (4 x maxItems) fills,
    // the overflow is dropped and counted, and platform.logsDropped says how much.
    // What is still buffered when the extension exits at SHUTDOWN is counted in the report.
    let lines = 20_000;
    let payload = format!("{{\"logLines\": {lines}}}");
    let r = run(
        "slow",
        &["--quiet", "--payload", &payload],
        &[("LOUPE_TEST_SLOW_MS", "300")],
    );
    assert_eq!(r.statuses(), ["success"]);
    let delivered = r
        .typed("function")
        .iter()
        .filter(|e| e["record"].as_str().is_some_and(|s| s.starts_with("line ")))
        .count();
    let notices = r.typed("platform.logsDropped");
    assert!(!notices.is_empty());
    assert!(
        notices
            .iter()
            .all(|n| n["record"]["reason"].as_str().unwrap().contains("slower"))
    );
    let dropped: u64 = notices
        .iter()
        .map(|n| n["record"]["droppedRecords"].as_u64().unwrap())
        .sum();
    assert!(delivered < lines, "some lines were dropped");
    let c = &r.report["counters"][0];
    let counted = c["droppedRecords"].as_u64().unwrap();
    assert!(counted >= dropped, "{counted} counted, {dropped} announced");
    assert!(
        delivered as u64 + counted >= lines as u64,
        "{delivered} delivered + {counted} dropped < {lines}"
    );
    // At most the batch in flight when the extension exited failed.
    assert!(c["failedBatches"].as_u64().unwrap() <= 1);
}
