//! The real `loupe` binary as an extension under `loupe-local`, beside the sample Python
//! function: register, subscribe, follow every invocation, exit cleanly at SHUTDOWN, in the
//! lifecycle variants Lambda has (text and JSON logs, a failing invocation, timeout, crash,
//! Managed Instances, refused Telemetry or Logs API, `LOUPE_FLUSH=end`).
//!
//! Each test waits on loupe-local's exit (it ends by itself after the invocations and SHUTDOWN),
//! then reads its JSON report and loupe's log lines, which loupe-local echoes on stderr as
//! `[loupe] loupe LEVEL ...`.

#![cfg(feature = "local")]

mod support;

use support::sandbox::{Outcome, Sandbox};

use std::collections::BTreeSet;

use serde_json::Value;

/// Lambda's shutdown window with external extensions.
const SHUTDOWN_WINDOW_MS: f64 = 2000.0;

struct Run {
    out: Outcome,
    /// loupe's `invocation {json}` debug lines.
    invocations: Vec<Value>,
    /// loupe's `summary {json}` lines, one per extension instance.
    summaries: Vec<Value>,
}

impl std::ops::Deref for Run {
    type Target = Outcome;

    fn deref(&self) -> &Outcome {
        &self.out
    }
}

impl Run {
    fn loupe_instances(&self) -> Vec<&Value> {
        self.report["extensions"]
            .as_array()
            .expect("extensions in the report")
            .iter()
            .filter(|e| e["name"] == "loupe")
            .collect()
    }

    fn invocation(&self, id: &str) -> &Value {
        let found: Vec<&Value> = self
            .invocations
            .iter()
            .filter(|i| i["requestId"] == id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one invocation line for {id}:\n{}",
            self.stderr
        );
        found[0]
    }

    /// Every instance of loupe registered and exited 0 within the shutdown window.
    fn assert_clean_exits(&self) {
        let instances = self.loupe_instances();
        assert!(!instances.is_empty(), "loupe ran: {}", self.stdout);
        for e in instances {
            assert_eq!(e["registered"], true, "{e}");
            assert_eq!(e["exitCode"], 0, "{e}");
            let took = e["shutdownMs"].as_f64().expect("shutdownMs");
            assert!(took < SHUTDOWN_WINDOW_MS, "{took} ms after SHUTDOWN");
        }
    }

    /// loupe saw start, runtimeDone (unless `runtime_done` is false) and report of every request
    /// id in the report, and nothing else.
    fn assert_every_invocation_seen(&self, runtime_done: bool) {
        let ids = self.request_ids();
        let seen: BTreeSet<&str> = self
            .invocations
            .iter()
            .filter_map(|i| i["requestId"].as_str())
            .collect();
        let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(seen, want, "{}", self.stderr);
        for id in &ids {
            let inv = self.invocation(id);
            assert_eq!(inv["start"], true, "{inv}");
            assert_eq!(inv["report"], true, "report for {id}: {inv}");
            assert_eq!(inv["evicted"], false, "{inv}");
            if runtime_done {
                assert_eq!(
                    inv["runtimeDone"],
                    *self.status_of(id),
                    "runtimeDone for {id}: {inv}"
                );
            }
        }
    }

    /// The status loupe-local gave `id`.
    fn status_of(&self, id: &str) -> &Value {
        self.report["invocations"]
            .as_array()
            .expect("invocations in the report")
            .iter()
            .find(|i| i["requestId"] == id)
            .map(|i| &i["status"])
            .expect("the request id is in the report")
    }

    fn schema_in_report(&self) -> Vec<(String, String)> {
        self.report["subscriptions"]
            .as_array()
            .expect("subscriptions")
            .iter()
            .filter(|s| s["extension"] == "loupe")
            .map(|s| {
                (
                    s["api"].as_str().unwrap_or("?").to_string(),
                    s["schemaVersion"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }
}

/// The JSON after `marker` on loupe's lines.
fn loupe_lines(stderr: &str, marker: &str) -> Vec<Value> {
    let prefix = "[loupe] loupe ";
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter_map(|rest| rest.strip_prefix(marker))
        .map(|json| serde_json::from_str(json).expect("loupe's JSON line parses"))
        .collect()
}

fn run(name: &str, payloads: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut sandbox = Sandbox::new(&format!("lifecycle-{name}"))
        .with_loupe()
        .payloads(payloads)
        .args(args);
    for (k, v) in env {
        sandbox = sandbox.env(k, v);
    }
    let out = sandbox.run();
    Run {
        invocations: loupe_lines(&out.stderr, "invocation "),
        summaries: loupe_lines(&out.stderr, "summary "),
        out,
    }
}

const GOOD: &str = r#"{"customer":"acme","dbLatencyMs":[3,12],"sentiment":"thanks","userId":"u1"}"#;

fn repeat(p: &str, n: usize) -> Vec<&str> {
    vec![p; n]
}

fn assert_summary(run: &Run, api: &str, schema: Option<&str>, invokes: u64, reason: &str) {
    assert_eq!(run.summaries.len(), 1, "{}", run.stderr);
    let s = &run.summaries[0];
    assert_eq!(s["api"], api, "{s}");
    assert_eq!(s["schema"].as_str(), schema, "{s}");
    assert_eq!(s["invokes"], invokes, "{s}");
    assert_eq!(s["shutdownReason"], reason, "{s}");
}

#[test]
fn cold_start_twenty_invocations_and_shutdown() {
    let run = run("cold", &repeat(GOOD, 20), &[], &[]);
    assert_eq!(run.statuses(), vec!["success"; 20]);
    run.assert_clean_exits();
    assert_eq!(
        run.schema_in_report(),
        vec![("telemetry".to_string(), "2025-01-29".to_string())]
    );
    assert_summary(&run, "telemetry", Some("2025-01-29"), 20, "spindown");
    run.assert_every_invocation_seen(true);
    let cold: Vec<bool> = run
        .request_ids()
        .iter()
        .map(|id| run.invocation(id)["coldStart"] == true)
        .collect();
    assert!(cold[0] && cold[1..].iter().all(|c| !c), "{cold:?}");
    let s = &run.summaries[0];
    assert_eq!(s["tracker"]["completed"], 20, "{s}");
    assert_eq!(s["tracker"]["unfinished"], 0, "{s}");
    // The default (adaptive) flush does not hold /next for runtimeDone.
    assert!(!run.stderr.contains("DEBUG runtimeDone "), "{}", run.stderr);
}

#[test]
fn json_log_format() {
    let run = run("json", &repeat(GOOD, 4), &["--log-format", "json"], &[]);
    assert_eq!(run.statuses(), vec!["success"; 4]);
    run.assert_clean_exits();
    assert_summary(&run, "telemetry", Some("2025-01-29"), 4, "spindown");
    run.assert_every_invocation_seen(true);
}

#[test]
fn timeout_resets_and_loupe_sees_it() {
    let run = run(
        "timeout",
        &[GOOD, r#"{"sleepMs":3000}"#, GOOD],
        &["--timeout", "1"],
        &[],
    );
    assert_eq!(run.statuses(), vec!["success", "timeout", "success"]);
    run.assert_clean_exits();
    assert_eq!(
        run.loupe_instances().len(),
        2,
        "a fresh init after the reset"
    );
    let reasons: Vec<&str> = run
        .summaries
        .iter()
        .filter_map(|s| s["shutdownReason"].as_str())
        .collect();
    assert_eq!(reasons, vec!["timeout", "spindown"]);
    run.assert_every_invocation_seen(true);
    let timed_out = &run.request_ids()[1];
    assert_eq!(run.invocation(timed_out)["runtimeDone"], "timeout");
    // The first loupe completed both of its invocations (the timed-out one's report came in its
    // SHUTDOWN window); the second started cold and served the last.
    let (first, second) = (&run.summaries[0], &run.summaries[1]);
    assert_eq!(first["tracker"]["completed"], 2, "{first}");
    assert_eq!(first["tracker"]["unfinished"], 0, "{first}");
    assert_eq!(second["tracker"]["completed"], 1, "{second}");
    assert_eq!(second["tracker"]["coldStarts"], 1, "{second}");
}

#[test]
fn runtime_crash_resets_and_loupe_sees_it() {
    let run = run("crash", &[GOOD, r#"{"crash":true}"#, GOOD], &[], &[]);
    assert_eq!(run.statuses(), vec!["success", "failure", "success"]);
    run.assert_clean_exits();
    let reasons: Vec<&str> = run
        .summaries
        .iter()
        .filter_map(|s| s["shutdownReason"].as_str())
        .collect();
    assert_eq!(reasons, vec!["failure", "spindown"]);
    run.assert_every_invocation_seen(true);
    let crashed = &run.request_ids()[1];
    assert_eq!(run.invocation(crashed)["runtimeDone"], "failure");
}

#[test]
fn managed_instances() {
    let run = run("mi", &repeat(GOOD, 4), &["--managed-instances"], &[]);
    assert_eq!(run.statuses(), vec!["success"; 4]);
    run.assert_clean_exits();
    assert_eq!(
        run.schema_in_report(),
        vec![("telemetry".to_string(), "2025-01-29".to_string())]
    );
    // No INVOKE on Managed Instances: loupe registers for SHUTDOWN only and follows invocations
    // from telemetry alone; the reports complete them.
    assert_eq!(
        run.loupe_instances()[0]["registeredEvents"],
        serde_json::json!(["SHUTDOWN"])
    );
    assert_summary(&run, "telemetry", Some("2025-01-29"), 0, "spindown");
    assert_eq!(run.summaries[0]["tracker"]["completed"], 4);
    run.assert_every_invocation_seen(false);
    for id in run.request_ids() {
        let inv = run.invocation(&id);
        assert_eq!(inv["runtimeDone"], Value::Null, "{inv}");
        assert!(inv["durationMs"].as_f64().is_some(), "{inv}");
    }
}

/// A failing invocation among good ones: loupe sees each with the status loupe-local gave it,
/// and every line the function printed reached loupe as a `function` record.
#[test]
fn failing_invocation_and_every_line_delivered() {
    let run = run(
        "text",
        &[
            r#"{"customer":"acme","dbLatencyMs":[3,12]}"#,
            r#"{"customer":"acme","fail":true,"userId":"u-7"}"#,
            r#"{"customer":"zeta","objectKey":"a/b.png","sentiment":"thanks","userId":"u-8"}"#,
        ],
        &[],
        &[],
    );
    assert_eq!(run.statuses(), vec!["success", "error", "success"]);
    run.assert_clean_exits();
    run.assert_every_invocation_seen(true);
    for id in run.request_ids() {
        let inv = run.invocation(&id);
        assert!(inv["billedDurationMs"].as_u64().is_some(), "{inv}");
    }
    assert_summary(&run, "telemetry", Some("2025-01-29"), 3, "spindown");
    let s = &run.summaries[0];
    assert_eq!(s["tracker"]["completed"], 3, "{s}");
    assert_eq!(s["tracker"]["coldStarts"], 1, "{s}");
    assert_eq!(s["telemetry"]["malformedEvents"], 0, "{s}");
    assert_eq!(s["telemetry"]["unknownTypes"], 0, "{s}");
    assert_eq!(s["telemetry"]["logLinesDropped"], 0, "{s}");
    let printed: u64 = run.report["invocations"]
        .as_array()
        .expect("invocations")
        .iter()
        .map(|i| i["logLines"].as_u64().expect("logLines"))
        .sum();
    let functions = s["telemetry"]["events"]["function"].as_u64().unwrap_or(0);
    assert!(
        printed > 0 && functions >= printed,
        "{functions} < {printed}"
    );
}

#[test]
fn telemetry_refused_falls_back_to_logs_api() {
    let run = run(
        "logsapi",
        &repeat(GOOD, 4),
        &["--telemetry-api", "off"],
        &[],
    );
    assert_eq!(run.statuses(), vec!["success"; 4]);
    run.assert_clean_exits();
    assert_eq!(run.schema_in_report().len(), 1);
    assert_eq!(run.schema_in_report()[0].0, "logs");
    assert_eq!(run.summaries.len(), 1);
    assert_eq!(run.summaries[0]["api"], "logs", "{}", run.summaries[0]);
    assert_eq!(run.summaries[0]["invokes"], 4);
    // The Logs API carries platform.start and platform.report (and platform.end, no runtimeDone).
    run.assert_every_invocation_seen(false);
}

#[test]
fn both_apis_refused_loupe_stays_harmless() {
    let run = run(
        "noapi",
        &repeat(GOOD, 4),
        &["--telemetry-api", "off", "--logs-api", "off"],
        &[],
    );
    assert_eq!(run.statuses(), vec!["success"; 4]);
    run.assert_clean_exits();
    assert!(run.schema_in_report().is_empty());
    assert_summary(&run, "none", None, 4, "spindown");
}

#[test]
fn flush_at_end_waits_for_runtime_done() {
    let run = run("end", &repeat(GOOD, 4), &[], &[("LOUPE_FLUSH", "end")]);
    assert_eq!(run.statuses(), vec!["success"; 4]);
    run.assert_clean_exits();
    assert_summary(&run, "telemetry", Some("2025-01-29"), 4, "spindown");
    run.assert_every_invocation_seen(true);
    // loupe waited for each request's runtimeDone before its /next (it says so at debug), so
    // loupe-local measures an extension overhead on every invocation.
    for id in run.request_ids() {
        let line = format!("[loupe] loupe DEBUG runtimeDone {id} success applied");
        assert!(run.stderr.contains(&line), "{line} in:\n{}", run.stderr);
    }
    for inv in run.report["invocations"].as_array().expect("invocations") {
        let overhead = inv["extensionOverheadMs"].as_f64().expect("overhead");
        assert!(overhead > 0.0, "{inv}");
    }
}
