//! The real `loupe` binary as an extension under `loupe-local`, beside the sample Python
//! function: register, subscribe, follow every invocation, exit cleanly at SHUTDOWN, in the
//! lifecycle variants Lambda has (text and JSON logs, timeout, crash, Managed Instances, refused
//! Telemetry or Logs API, `LOUPE_FLUSH=end`).
//!
//! Each test waits on loupe-local's exit (it ends by itself after the invocations and SHUTDOWN),
//! then reads its JSON report and loupe's log lines, which loupe-local echoes on stderr as
//! `[loupe] loupe LEVEL ...`.

#![cfg(feature = "local")]

mod support;

use support::python::python;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// Lambda's shutdown window with external extensions.
const SHUTDOWN_WINDOW_MS: f64 = 2000.0;

struct Run {
    stdout: String,
    stderr: String,
    report: Value,
    /// loupe's `invocation {json}` debug lines.
    invocations: Vec<Value>,
    /// loupe's `summary {json}` lines, one per extension instance.
    summaries: Vec<Value>,
}

impl Run {
    fn request_ids(&self) -> Vec<String> {
        self.report["invocations"]
            .as_array()
            .expect("invocations in the report")
            .iter()
            .map(|i| i["requestId"].as_str().expect("requestId").to_string())
            .collect()
    }

    fn statuses(&self) -> Vec<String> {
        self.report["invocations"]
            .as_array()
            .expect("invocations in the report")
            .iter()
            .map(|i| i["status"].as_str().unwrap_or("?").to_string())
            .collect()
    }

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
                assert!(
                    inv["runtimeDone"].is_string(),
                    "runtimeDone for {id}: {inv}"
                );
            }
        }
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

/// A temp dir holding `extensions/loupe` (a link to the built binary) and `payloads.jsonl`.
fn sandbox_dir(name: &str, payloads: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loupe-lifecycle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("extensions")).expect("temp dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_loupe"), dir.join("extensions/loupe"))
        .expect("link loupe");
    std::fs::write(dir.join("payloads.jsonl"), payloads.join("\n")).expect("payloads");
    dir
}

fn run(name: &str, payloads: &[&str], args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = sandbox_dir(name, payloads);
    let report = dir.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe-local"));
    cmd.arg("--extensions-dir")
        .arg(dir.join("extensions"))
        .arg("--payloads")
        .arg(dir.join("payloads.jsonl"))
        .arg("--task-root")
        .arg(Path::new(MANIFEST).join("examples/python"))
        .arg("--report")
        .arg(&report)
        .args(["--env", "LOUPE_LOG_LEVEL=debug"]);
    for (k, v) in env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.args(args)
        .arg("--")
        .arg(python())
        .args(["-m", "awslambdaric", "app.handler"]);
    let output = cmd.output().expect("run loupe-local");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "loupe-local failed: {stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("report written"))
        .expect("report is JSON");
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        invocations: loupe_lines(&stderr, "invocation "),
        summaries: loupe_lines(&stderr, "summary "),
        stdout,
        stderr,
        report,
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
    // No INVOKE on Managed Instances: loupe follows invocations from telemetry alone.
    assert_summary(&run, "telemetry", Some("2025-01-29"), 0, "spindown");
    run.assert_every_invocation_seen(false);
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
