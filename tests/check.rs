//! `loupe check` end to end: the built binary on the EMF fixtures and on hand-written input.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/emf/");
/// "Now" near the fixtures' capture day (their `_aws.Timestamp`s are ~1795497xxxxxx).
const NOW_MS: &str = "1795497900000";

fn loupe(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .arg("check")
        .args(args)
        // A bad extension setting must not leak a warning into `check`'s output.
        .env("LOUPE_LOG_LEVEL", "loud")
        .env("LOUPE_MAX_SERIES", "-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run loupe");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    // Written from a thread so a large input cannot deadlock against the output pipes.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("loupe exits");
    writer.join().expect("writer thread");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Per line number, the findings printed: ("emf", "N point(s)") or (label, reason code).
fn findings(out: &str, file: &str) -> BTreeMap<usize, Vec<(String, String)>> {
    let mut map: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    for l in out.lines() {
        let rest = l
            .strip_prefix(file)
            .and_then(|r| r.strip_prefix(':'))
            .unwrap_or_else(|| panic!("line without the file name: {l}"));
        let (num, rest) = rest.split_once(": ").expect("line number");
        let (label, rest) = rest.split_once(": ").expect("label");
        let what = match label {
            "emf" => rest.split(':').next().expect("count").to_string(),
            _ => rest
                .split([' ', ':'])
                .next()
                .expect("reason code")
                .to_string(),
        };
        map.entry(num.parse().expect("number"))
            .or_default()
            .push((label.to_string(), what));
    }
    map
}

/// EXPECTED.tsv rows of one file: line → (verdict, data points, reasons).
fn expected(file: &str) -> BTreeMap<usize, (String, usize, Vec<String>)> {
    let text = std::fs::read_to_string(format!("{DIR}EXPECTED.tsv")).expect("EXPECTED.tsv");
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.len() >= 5 && c[0] == file)
        .map(|c| {
            let reasons = c[4]
                .split(',')
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect();
            (
                c[1].parse().expect("line"),
                (c[2].to_string(), c[3].parse().expect("points"), reasons),
            )
        })
        .collect()
}

/// Reason codes that are informational (`note:` in a rejection, `warning:` on EMF).
const INFORMATIONAL: &[&str] = &[
    "lambda_prefix_stripped",
    "timestamp_missing_used_record_time",
    "dimension_set_dropped_invalid_or_missing_target",
    "published_without_dimensions",
    "duplicate_metric_definition_ignored",
];

/// Fixture files that hold one record per line, and whether their timestamps are the capture's.
const PLAIN_FIXTURES: &[(&str, bool)] = &[
    ("aws-embedded-metrics-node_4.2.1.jsonl", true),
    ("aws-embedded-metrics-node_4.2.1.lambda-json.jsonl", true),
    ("aws-embedded-metrics-node_4.2.1.lambda-text.log", true),
    ("aws-embedded-metrics-python_3.5.0.edge.txt", true),
    ("aws-embedded-metrics-python_3.5.0.jsonl", true),
    ("aws-lambda-powertools-python-datadog_3.37.0.jsonl", true),
    ("aws-lambda-powertools-python_3.37.0.edge.txt", true),
    ("aws-lambda-powertools-python_3.37.0.jsonl", true),
    ("datadog-lambda-js_12.143.0.jsonl", true),
    ("lambda-runtime-wrapping.log", true),
    ("powertools-lambda-typescript-metrics_2.36.0.edge.txt", true),
    ("powertools-lambda-typescript-metrics_2.36.0.jsonl", true),
    ("serverless-datadog-metrics_1.0.1.log", true),
    ("upstream-datadog-examples.jsonl", false),
    ("upstream-emf-examples.jsonl", false),
];

/// Lines of `lambda-runtime-wrapping.log` that are EMF inside the Lambda JSON log envelope:
/// EXPECTED.tsv (CloudWatch) rejects them; loupe extracts them and warns that CloudWatch won't.
const ENVELOPE_LINES: &[usize] = &[5, 6, 7, 10, 11];

#[test]
fn fixture_lines_match_the_expected_verdicts() {
    let mut checked = 0;
    for &(file, captured) in PLAIN_FIXTURES {
        let path = format!("{DIR}{file}");
        let args: Vec<&str> = if captured {
            vec!["--now", NOW_MS, &path]
        } else {
            vec!["--no-timestamp-check", &path]
        };
        let out = loupe(&args, b"");
        assert_eq!(out.status.code(), Some(0), "{file}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{file}");
        let got = findings(&stdout(&out), &path);
        let want_rows = expected(file);
        assert!(!want_rows.is_empty(), "{file} has no EXPECTED rows");
        for (line, (verdict, points, reasons)) in &want_rows {
            let mut want: Vec<(String, String)> = Vec::new();
            let envelope = file == "lambda-runtime-wrapping.log" && ENVELOPE_LINES.contains(line);
            if envelope {
                want.push(("emf".into(), "1 point".into()));
                want.push(("warning".into(), "emf_inside_lambda_json_envelope".into()));
            } else if verdict == "emf" {
                let plural = if *points == 1 { "" } else { "s" };
                want.push(("emf".into(), format!("{points} point{plural}")));
                for r in reasons {
                    want.push(("warning".into(), r.clone()));
                }
            } else if verdict == "emf_rejected" {
                for r in reasons {
                    let label = if INFORMATIONAL.contains(&r.as_str()) {
                        "note"
                    } else {
                        "rejected"
                    };
                    want.push((label.into(), r.clone()));
                }
            }
            let mut have = got.get(line).cloned().unwrap_or_default();
            have.sort();
            want.sort();
            assert_eq!(have, want, "{file}:{line}");
            checked += 1;
        }
        // Nothing printed for a line EXPECTED.tsv does not list.
        for line in got.keys() {
            assert!(
                want_rows.contains_key(line),
                "{file}:{line} is not in EXPECTED.tsv"
            );
        }
    }
    assert!(checked > 100, "only {checked} lines checked");
}

const LATENCY: &str = r#"{"_aws":{"Timestamp":1795497663709,"CloudWatchMetrics":[{"Namespace":"MyApp","Dimensions":[["Service"]],"Metrics":[{"Name":"Latency","Unit":"Milliseconds"}]}]},"Service":"api","Latency":VALUE}"#;

fn latency(value: &str) -> String {
    LATENCY.replace("VALUE", value)
}

#[test]
fn summary_has_exact_statistics() {
    let input = [
        "START RequestId: 1 Version: $LATEST".to_string(),
        latency("[1,2,3]"),
        latency("[4,5]"),
        latency(r#"{"Values":[10,20],"Counts":[2,3]}"#),
        latency(r#"{"Max":100,"Min":0.5,"Sum":200,"Count":10}"#),
        latency("7").replace("\"api\"", "\"web\""),
        latency("null"),
        "not EMF at all".to_string(),
    ]
    .join("\n");
    let out = loupe(&["--summary", "--now", NOW_MS], input.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(doc["events"], 5);
    assert_eq!(doc["lines"], 8);
    assert_eq!(doc["rejected"], serde_json::json!({"metric_value_null": 1}));
    let series = doc["series"].as_array().expect("series");
    assert_eq!(series.len(), 2);
    let api = &series[0];
    assert_eq!(api["namespace"], "MyApp");
    assert_eq!(api["name"], "Latency");
    assert_eq!(api["unit"], "Milliseconds");
    assert_eq!(api["dimensions"], serde_json::json!({"Service": "api"}));
    assert_eq!(api["count"], 3 + 2 + 5 + 10);
    assert_eq!(api["sum"].as_f64(), Some(6.0 + 9.0 + 80.0 + 200.0));
    assert_eq!(api["min"].as_f64(), Some(0.5));
    assert_eq!(api["max"].as_f64(), Some(100.0));
    // Sorted, with the statistic set's other eight at (200 - 0.5 - 100) / 8 = 12.4375:
    // 0.5 1 2 3 4 5 10 10 12.4375×8 (ranks 9-16) 20 20 20 (ranks 17-19) 100 (rank 20).
    // p50 = rank 10, p90 = rank 18, p99 = rank 20.
    let close = |v: &Value, want: f64| {
        let got = v.as_f64().expect("number");
        assert!((got - want).abs() <= 0.02 * want, "{got} vs {want}");
    };
    close(&api["p50"], 12.4375);
    close(&api["p90"], 20.0);
    close(&api["p99"], 100.0);
    let web = &series[1];
    assert_eq!(web["dimensions"], serde_json::json!({"Service": "web"}));
    assert_eq!(web["count"], 1);
    assert_eq!(web["sum"].as_f64(), Some(7.0));
}

#[test]
fn strict_exit_codes() {
    let good = latency("1");
    let bad = latency("\"fast\"");
    let ok = loupe(&["--strict", "--now", NOW_MS], good.as_bytes());
    assert_eq!(ok.status.code(), Some(0));
    let rejected = loupe(
        &["--strict", "--now", NOW_MS],
        format!("{good}\n{bad}\n").as_bytes(),
    );
    assert_eq!(rejected.status.code(), Some(1));
    assert!(
        stdout(&rejected).contains(
            "<stdin>:2: rejected: metric_value_not_numeric (\"Latency\" is the string \"fast\")"
        ),
        "{}",
        stdout(&rejected)
    );
    let lenient = loupe(&["--now", NOW_MS], bad.as_bytes());
    assert_eq!(lenient.status.code(), Some(0));
    let summary = loupe(&["--strict", "--summary", "--now", NOW_MS], bad.as_bytes());
    assert_eq!(summary.status.code(), Some(1));
}

#[test]
fn usage_and_input_errors_exit_2() {
    let out = loupe(&["--bogus"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown option --bogus"));
    assert!(stderr(&out).contains("usage: loupe check"));
    assert_eq!(stdout(&out), "");

    let out = loupe(&["--now"], b"");
    assert_eq!(out.status.code(), Some(2));

    let missing = format!("{DIR}no-such-file.log");
    let good = format!("{DIR}aws-embedded-metrics-python_3.5.0.jsonl");
    let out = loupe(&["--now", NOW_MS, &missing, &good], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no-such-file.log"),
        "{}",
        stderr(&out)
    );
    // The readable file is still checked.
    assert_eq!(stdout(&out).lines().count(), 13);

    let help = loupe(&["--help"], b"");
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).starts_with("usage: loupe check"));
}

#[test]
fn stdin_by_default_and_as_dash() {
    let input = format!("{}\n", latency("[1,2]"));
    for args in [vec!["--now", NOW_MS], vec!["--now", NOW_MS, "-"]] {
        let out = loupe(&args, input.as_bytes());
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            stdout(&out),
            "<stdin>:1: emf: 1 point: MyApp/Latency Milliseconds {Service=api} 2 values\n"
        );
        assert_eq!(
            stderr(&out),
            "",
            "no configuration warning reaches the user"
        );
    }
}

#[test]
fn huge_and_broken_lines_are_rejected_and_the_rest_read() {
    let mut input = Vec::new();
    // 1.5 MiB of one EMF-looking line.
    input.extend_from_slice(b"{\"_aws\":{},\"pad\":\"");
    input.extend(std::iter::repeat_n(b'x', 1536 * 1024));
    input.extend_from_slice(b"\"}\n");
    // Not UTF-8.
    input.extend_from_slice(b"{\"_aws\":\xff\xfe\xfd}\n");
    // A long plain log line is no finding.
    input.extend(std::iter::repeat_n(b'y', 2 * 1024 * 1024));
    input.push(b'\n');
    input.extend_from_slice(latency("3").as_bytes());
    let out = loupe(&["--strict", "--now", NOW_MS], &input);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("<stdin>:1: rejected: event_too_large (the line has 1572884 bytes)"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("<stdin>:2: rejected: json_parse_error (the line is not valid UTF-8)")
    );
    assert!(lines[2].starts_with("<stdin>:4: emf: 1 point"));
}

#[test]
fn lambda_json_log_records_are_read_as_objects() {
    // The runtime's JSON log format, with EMF as the message object.
    let record = format!(
        r#"{{"timestamp":"2026-11-24T05:21:04.861Z","level":"INFO","requestId":"r1","message":{}}}"#,
        latency("2")
    );
    let out = loupe(&["--now", NOW_MS], record.as_bytes());
    let text = stdout(&out);
    assert!(
        text.starts_with("<stdin>:1: emf: 1 point: MyApp/Latency"),
        "{text}"
    );
    assert!(
        text.contains("<stdin>:1: warning: emf_inside_lambda_json_envelope"),
        "{text}"
    );
    // A JSON log record without EMF is a plain log line.
    let plain = r#"{"timestamp":"2026-11-24T05:21:04.861Z","level":"INFO","message":"hello _aws"}"#;
    let out = loupe(&["--now", NOW_MS], plain.as_bytes());
    assert_eq!(stdout(&out), "");
}

#[test]
fn old_captures_need_now_or_no_check() {
    let line = latency("1");
    // Against the real clock the capture-day timestamp may be out of the window; with the
    // window off it never is.
    let out = loupe(&["--no-timestamp-check", "--strict"], line.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    let far = loupe(&["--now", "1900000000000", "--strict"], line.as_bytes());
    assert_eq!(far.status.code(), Some(1));
    assert!(
        stdout(&far).contains("rejected: timestamp_out_of_range (Timestamp 1795497663709 is"),
        "{}",
        stdout(&far)
    );
}
