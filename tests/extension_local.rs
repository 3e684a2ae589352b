//! The `loupe` extension inside loupe-local, beside the real Python runtime client running the
//! sample function: loupe registers, subscribes, follows every invocation (Text and JSON log
//! formats, with and without `LOUPE_FLUSH=end`, with the sandbox frozen between invocations) and
//! exits 0 on SHUTDOWN. loupe's own lines come back in loupe-local's JSON report.

#![cfg(feature = "local")]

mod support;

use support::python::python;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// A fresh directory under the target dir holding only `loupe` (Lambda runs every file of
/// /opt/extensions; the extension name is the file name).
fn extensions_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("extension_local_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_loupe"), dir.join("loupe")).unwrap();
    dir
}

/// Runs loupe-local with `payloads` (one JSON per line) and returns its report.
fn run(name: &str, payloads: &[&str], args: &[&str], loupe_env: &[&str]) -> Value {
    let dir = extensions_dir(name);
    let payload_file = dir.with_extension("payloads");
    std::fs::write(&payload_file, payloads.join("\n")).unwrap();
    let report = dir.with_extension("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe-local"));
    cmd.arg("--extensions-dir")
        .arg(&dir)
        .arg("--payloads")
        .arg(&payload_file)
        .arg("--task-root")
        .arg(Path::new(MANIFEST).join("examples/python"))
        .arg("--report")
        .arg(&report)
        .arg("--quiet")
        .args(args)
        .args(["--env", "LOUPE_LOG_LEVEL=debug"]);
    for e in loupe_env {
        cmd.args(["--env", e]);
    }
    let out = cmd
        .arg("--")
        .arg(python())
        .args(["-m", "awslambdaric", "app.handler"])
        .output()
        .expect("loupe-local runs");
    assert!(
        out.status.success(),
        "loupe-local failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("a report");
    serde_json::from_str(&text).expect("the report is JSON")
}

/// loupe's lines from the report.
fn loupe_lines(report: &Value) -> Vec<String> {
    let exts = report["extensions"].as_array().expect("extensions");
    assert_eq!(exts.len(), 1, "one loupe process: {exts:#?}");
    let ext = &exts[0];
    assert_eq!(ext["name"], "loupe");
    assert_eq!(ext["registered"], true);
    assert_eq!(ext["exitCode"], 0, "{ext:#?}");
    ext["stderr"]
        .as_array()
        .expect("stderr lines")
        .iter()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect()
}

fn after<'a>(lines: &'a [String], marker: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.split_once(marker).map(|(_, rest)| rest))
        .collect()
}

/// Checks loupe saw every invocation loupe-local ran, with the same status.
fn check_invocations(report: &Value, lines: &[String], cold_starts: u64) -> Value {
    let seen: Vec<Value> = after(lines, " invocation ")
        .into_iter()
        .map(|j| serde_json::from_str(j).expect("invocation line is JSON"))
        .collect();
    let ran = report["invocations"].as_array().expect("invocations");
    assert_eq!(seen.len(), ran.len(), "{seen:#?}");
    for r in ran {
        let id = r["requestId"].as_str().unwrap();
        let inv = seen
            .iter()
            .find(|i| i["requestId"] == id)
            .unwrap_or_else(|| panic!("loupe never completed {id}: {seen:#?}"));
        assert_eq!(inv["start"], true, "{inv}");
        assert_eq!(inv["runtimeDone"], r["status"], "{inv}");
        assert!(inv["billedDurationMs"].as_u64().is_some(), "{inv}");
        assert_eq!(inv["evicted"], false, "{inv}");
    }
    let summaries = after(lines, " summary ");
    assert_eq!(summaries.len(), 1, "{lines:#?}");
    let s: Value = serde_json::from_str(summaries[0]).unwrap();
    assert_eq!(s["api"], "telemetry");
    assert_eq!(s["schema"], "2025-01-29");
    assert_eq!(s["shutdownReason"], "spindown");
    assert_eq!(s["invokes"], ran.len());
    assert_eq!(s["tracker"]["completed"], ran.len());
    assert_eq!(s["tracker"]["coldStarts"], cold_starts);
    assert_eq!(s["telemetry"]["malformedEvents"], 0);
    assert_eq!(s["telemetry"]["unknownTypes"], 0);
    s
}

#[test]
fn text_format_three_invocations_one_failing() {
    let report = run(
        "text",
        &[
            r#"{"customer":"acme","dbLatencyMs":[3,12]}"#,
            r#"{"customer":"acme","fail":true,"userId":"u-7"}"#,
            r#"{"customer":"zeta","objectKey":"a/b.png","sentiment":"thanks","userId":"u-8"}"#,
        ],
        &[],
        &[],
    );
    let lines = loupe_lines(&report);
    let s = check_invocations(&report, &lines, 1);
    let statuses: Vec<&str> = report["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "error", "success"]);
    // Every line the function printed reached loupe as a `function` record.
    let printed: u64 = report["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["logLines"].as_u64().unwrap())
        .sum();
    let functions = s["telemetry"]["events"]["function"].as_u64().unwrap_or(0);
    assert!(functions >= printed, "{functions} < {printed}");
    assert_eq!(s["telemetry"]["logLinesDropped"], 0);
}

#[test]
fn json_format_with_flush_end() {
    let report = run(
        "json",
        &[
            r#"{"customer":"acme","dbLatencyMs":[1]}"#,
            r#"{"customer":"acme","dbLatencyMs":[2]}"#,
        ],
        &["--log-format", "json"],
        &["LOUPE_FLUSH=end"],
    );
    let lines = loupe_lines(&report);
    check_invocations(&report, &lines, 1);
    // With LOUPE_FLUSH=end loupe waited for each runtimeDone before its next /next.
    for inv in report["invocations"].as_array().unwrap() {
        let id = inv["requestId"].as_str().unwrap();
        let applied = format!("runtimeDone {id} success applied");
        assert!(
            lines.iter().any(|l| l.contains(&applied)),
            "no {applied:?} in {lines:#?}"
        );
    }
}

fn instances(report: &Value) -> Vec<(Value, Vec<String>)> {
    report["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .map(|e| {
            let lines = e["stderr"]
                .as_array()
                .expect("stderr lines")
                .iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect();
            (e.clone(), lines)
        })
        .collect()
}

fn summary_of(lines: &[String]) -> Value {
    let s = after(lines, " summary ");
    assert_eq!(s.len(), 1, "{lines:#?}");
    serde_json::from_str(s[0]).unwrap()
}

/// Managed Instances: SHUTDOWN only, no runtimeDone; reports complete the invocations.
#[test]
fn managed_instances_reports_complete_invocations() {
    let report = run(
        "lmi",
        &[r#"{"customer":"a"}"#, r#"{"customer":"b"}"#],
        &["--managed-instances"],
        &[],
    );
    let all = instances(&report);
    assert_eq!(all.len(), 1);
    let (ext, lines) = &all[0];
    assert_eq!(ext["registeredEvents"], serde_json::json!(["SHUTDOWN"]));
    assert_eq!(ext["exitCode"], 0);
    let s = summary_of(lines);
    assert_eq!(s["api"], "telemetry");
    assert_eq!(s["schema"], "2025-01-29");
    assert_eq!(s["invokes"], 0);
    assert_eq!(s["tracker"]["completed"], 2);
    let seen: Vec<Value> = after(lines, " invocation ")
        .into_iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    for r in report["invocations"].as_array().unwrap() {
        let inv = seen
            .iter()
            .find(|i| i["requestId"] == r["requestId"])
            .unwrap_or_else(|| panic!("{r} not seen in {seen:#?}"));
        assert_eq!(inv["runtimeDone"], Value::Null);
        assert!(inv["durationMs"].as_f64().is_some(), "{inv}");
    }
}

/// A timeout resets the environment: loupe gets SHUTDOWN `timeout` with the timed-out
/// invocation's report in its window, exits 0, and a new loupe serves the next invocation.
#[test]
fn timeout_reset_and_a_new_loupe() {
    let report = run(
        "timeout",
        &[
            r#"{"customer":"a"}"#,
            r#"{"sleepMs":3000}"#,
            r#"{"customer":"b"}"#,
        ],
        &["--timeout", "1"],
        &[],
    );
    let statuses: Vec<&str> = report["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["success", "timeout", "success"]);
    let all = instances(&report);
    assert_eq!(all.len(), 2, "loupe starts again after the reset");
    let first = summary_of(&all[0].1);
    assert_eq!(first["shutdownReason"], "timeout");
    assert_eq!(first["tracker"]["completed"], 2);
    assert_eq!(first["tracker"]["unfinished"], 0);
    let timed_out = after(&all[0].1, " invocation ")
        .into_iter()
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .find(|i| i["runtimeDone"] == "timeout")
        .expect("the timed-out invocation");
    assert_eq!(timed_out["report"], true, "{timed_out}");
    let second = summary_of(&all[1].1);
    assert_eq!(second["shutdownReason"], "spindown");
    assert_eq!(second["tracker"]["completed"], 1);
    assert_eq!(second["tracker"]["coldStarts"], 1);
    for (ext, _) in &all {
        assert_eq!(ext["exitCode"], 0, "{ext:#?}");
    }
}
