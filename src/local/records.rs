//! The platform's telemetry records: what loupe-local emits, and how each record is rendered for
//! one subscriber (Telemetry API schema 2022-07-01 / 2022-12-13 / 2025-01-29, or the Logs API).
//!
//! In: [`Record`] values built by the sandbox as things happen. Out: JSON text of one event
//! envelope `{"time","type","record"}`, or `None` when the subscriber's API or types do not carry
//! it. Pure: no I/O, no clock (times are passed in).

use serde_json::{Map, Value, json};

use super::util::iso8601_ms;

/// Which subscription API a subscriber used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Api {
    #[serde(rename = "telemetry")]
    Telemetry,
    #[serde(rename = "logs")]
    Logs,
}

/// Invocation and init outcome, as Lambda names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
    Failure,
    Timeout,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Failure => "failure",
            Status::Timeout => "timeout",
        }
    }
}

/// A span inside a runtimeDone or report record.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub name: &'static str,
    pub start_ms: u64,
    pub duration_ms: f64,
}

/// Facts common to the init records.
#[derive(Clone, Debug, PartialEq)]
pub struct InitInfo {
    pub initialization_type: String,
    pub phase: &'static str,
}

/// Metrics of a `platform.report`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportMetrics {
    pub duration_ms: f64,
    pub billed_duration_ms: u64,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    pub init_duration_ms: Option<f64>,
}

/// One line written by the function or by an extension, as delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// The line without its line ending (lossy UTF-8).
    pub text: String,
    /// The line parsed as a JSON object, when the log format is JSON and it is one.
    pub object: Option<Value>,
}

/// Every kind of record loupe-local emits.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    InitStart {
        init: InitInfo,
        function_name: String,
        function_version: String,
        instance_id: String,
        instance_max_memory: u32,
    },
    InitRuntimeDone {
        init: InitInfo,
        status: Status,
        error_type: Option<String>,
    },
    InitReport {
        init: InitInfo,
        status: Status,
        error_type: Option<String>,
        duration_ms: f64,
    },
    Start {
        request_id: String,
        version: String,
        trace: String,
    },
    RuntimeDone {
        request_id: String,
        status: Status,
        error_type: Option<String>,
        duration_ms: f64,
        produced_bytes: Option<u64>,
        spans: Vec<Span>,
        trace: String,
    },
    Report {
        request_id: String,
        status: Status,
        error_type: Option<String>,
        metrics: ReportMetrics,
        /// Managed Instances: the report carries durationMs only.
        duration_only: bool,
        spans: Vec<Span>,
        trace: String,
    },
    Extension {
        name: String,
        state: &'static str,
        events: Vec<String>,
        error_type: Option<String>,
    },
    Subscription {
        name: String,
        api: Api,
        types: Vec<String>,
    },
    LogsDropped {
        dropped_bytes: u64,
        dropped_records: u64,
        reason: &'static str,
    },
    Function(LogLine),
    ExtensionLog(LogLine),
}

/// A record with the time Lambda generated it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub time_ms: u64,
    pub kind: Kind,
}

/// The reason Lambda gives when a subscriber falls behind.
pub const SLOW_CONSUMER: &str = "Some logs were dropped because the downstream consumer is slower than the logs production rate";

/// Which `types` entry of a subscription selects this record.
pub fn category(kind: &Kind) -> &'static str {
    match kind {
        Kind::Function(_) => "function",
        Kind::ExtensionLog(_) => "extension",
        _ => "platform",
    }
}

fn span_json(s: &Span) -> Value {
    json!({"name": s.name, "start": iso8601_ms(s.start_ms), "durationMs": round2(s.duration_ms)})
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn tracing(trace: &str) -> Value {
    json!({"type": "X-Amzn-Trace-Id", "value": trace})
}

fn put_error(m: &mut Map<String, Value>, error_type: &Option<String>) {
    if let Some(e) = error_type {
        m.insert("errorType".into(), Value::String(e.clone()));
    }
}

/// Renders one record for a subscriber of `api` with `schema`, or `None` when that API does not
/// carry this kind of record.
pub fn render(rec: &Record, api: Api, schema: &str) -> Option<String> {
    let (ty, record) = match api {
        Api::Telemetry => telemetry_record(&rec.kind, schema)?,
        Api::Logs => logs_record(&rec.kind, schema)?,
    };
    let envelope = json!({"time": iso8601_ms(rec.time_ms), "type": ty, "record": record});
    serde_json::to_string(&envelope).ok()
}

fn line_value(line: &LogLine, objects: bool) -> Value {
    match (&line.object, objects) {
        (Some(obj), true) => obj.clone(),
        _ => Value::String(line.text.clone()),
    }
}

fn telemetry_record(kind: &Kind, schema: &str) -> Option<(&'static str, Value)> {
    // Before 2022-12-13, function and extension records are always strings.
    let objects = schema != "2022-07-01";
    Some(match kind {
        Kind::InitStart {
            init,
            function_name,
            function_version,
            instance_id,
            instance_max_memory,
        } => (
            "platform.initStart",
            json!({
                "initializationType": init.initialization_type, "phase": init.phase,
                "functionName": function_name, "functionVersion": function_version,
                "instanceId": instance_id, "instanceMaxMemory": instance_max_memory,
                "runtimeVersion": "loupe-local",
            }),
        ),
        Kind::InitRuntimeDone {
            init,
            status,
            error_type,
        } => {
            let mut m = Map::new();
            m.insert("initializationType".into(), json!(init.initialization_type));
            m.insert("phase".into(), json!(init.phase));
            m.insert("status".into(), json!(status.as_str()));
            put_error(&mut m, error_type);
            ("platform.initRuntimeDone", Value::Object(m))
        }
        Kind::InitReport {
            init,
            status,
            error_type,
            duration_ms,
        } => {
            let mut m = Map::new();
            m.insert("initializationType".into(), json!(init.initialization_type));
            m.insert("phase".into(), json!(init.phase));
            m.insert("status".into(), json!(status.as_str()));
            put_error(&mut m, error_type);
            m.insert(
                "metrics".into(),
                json!({"durationMs": round2(*duration_ms)}),
            );
            ("platform.initReport", Value::Object(m))
        }
        Kind::Start {
            request_id,
            version,
            trace,
        } => (
            "platform.start",
            json!({"requestId": request_id, "version": version, "tracing": tracing(trace)}),
        ),
        Kind::RuntimeDone {
            request_id,
            status,
            error_type,
            duration_ms,
            produced_bytes,
            spans,
            trace,
        } => {
            let mut m = Map::new();
            m.insert("requestId".into(), json!(request_id));
            m.insert("status".into(), json!(status.as_str()));
            put_error(&mut m, error_type);
            let mut metrics = json!({"durationMs": round2(*duration_ms)});
            if let (Some(b), Some(obj)) = (produced_bytes, metrics.as_object_mut()) {
                obj.insert("producedBytes".into(), json!(b));
            }
            m.insert("metrics".into(), metrics);
            if !spans.is_empty() {
                m.insert("spans".into(), spans.iter().map(span_json).collect());
            }
            m.insert("tracing".into(), tracing(trace));
            ("platform.runtimeDone", Value::Object(m))
        }
        Kind::Report {
            request_id,
            status,
            error_type,
            metrics,
            duration_only,
            spans,
            trace,
        } => {
            let mut m = Map::new();
            m.insert("requestId".into(), json!(request_id));
            m.insert("status".into(), json!(status.as_str()));
            put_error(&mut m, error_type);
            m.insert("metrics".into(), report_metrics(metrics, *duration_only));
            if !spans.is_empty() {
                m.insert("spans".into(), spans.iter().map(span_json).collect());
            }
            m.insert("tracing".into(), tracing(trace));
            ("platform.report", Value::Object(m))
        }
        Kind::Extension {
            name,
            state,
            events,
            error_type,
        } => {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            m.insert("state".into(), json!(state));
            m.insert("events".into(), json!(events));
            put_error(&mut m, error_type);
            ("platform.extension", Value::Object(m))
        }
        Kind::Subscription { name, api, types } => match api {
            Api::Telemetry => (
                "platform.telemetrySubscription",
                json!({"name": name, "state": "Subscribed", "types": types}),
            ),
            Api::Logs => (
                "platform.logsSubscription",
                json!({"name": name, "state": "Subscribed", "types": types}),
            ),
        },
        Kind::LogsDropped {
            dropped_bytes,
            dropped_records,
            reason,
        } => (
            "platform.logsDropped",
            json!({"droppedBytes": dropped_bytes, "droppedRecords": dropped_records, "reason": reason}),
        ),
        Kind::Function(line) => ("function", line_value(line, objects)),
        Kind::ExtensionLog(line) => ("extension", line_value(line, objects)),
    })
}

fn report_metrics(m: &ReportMetrics, duration_only: bool) -> Value {
    let mut out = Map::new();
    out.insert("durationMs".into(), json!(round2(m.duration_ms)));
    if !duration_only {
        out.insert("billedDurationMs".into(), json!(m.billed_duration_ms));
        out.insert("memorySizeMB".into(), json!(m.memory_size_mb));
        out.insert("maxMemoryUsedMB".into(), json!(m.max_memory_used_mb));
        if let Some(i) = m.init_duration_ms {
            out.insert("initDurationMs".into(), json!(round2(i)));
        }
    }
    Value::Object(out)
}

/// The Logs API (schema 2020-08-15 / 2021-03-18): records are strings, no spans or tracing, no
/// initStart or telemetrySubscription; runtimeDone only from 2021-03-18.
fn logs_record(kind: &Kind, schema: &str) -> Option<(&'static str, Value)> {
    Some(match kind {
        Kind::Start {
            request_id,
            version,
            ..
        } => (
            "platform.start",
            json!({"requestId": request_id, "version": version}),
        ),
        Kind::RuntimeDone {
            request_id, status, ..
        } if schema == "2021-03-18" => (
            "platform.runtimeDone",
            json!({"requestId": request_id, "status": status.as_str()}),
        ),
        Kind::Report {
            request_id,
            metrics,
            duration_only,
            ..
        } => (
            "platform.report",
            json!({"requestId": request_id, "metrics": report_metrics(metrics, *duration_only)}),
        ),
        Kind::Extension { .. }
        | Kind::LogsDropped { .. }
        | Kind::Subscription { api: Api::Logs, .. } => {
            return telemetry_record(kind, "2022-12-13");
        }
        Kind::Function(line) => ("function", Value::String(line.text.clone())),
        Kind::ExtensionLog(line) => ("extension", Value::String(line.text.clone())),
        _ => return None,
    })
}

/// `platform.end` for the Logs API, which follows runtimeDone there.
pub fn logs_end(request_id: &str, time_ms: u64) -> String {
    json!({"time": iso8601_ms(time_ms), "type": "platform.end", "record": {"requestId": request_id}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn report(duration_only: bool) -> Record {
        Record {
            time_ms: 1_665_532_815_064,
            kind: Kind::Report {
                request_id: "r1".into(),
                status: Status::Timeout,
                error_type: Some("Sandbox.Timeout".into()),
                metrics: ReportMetrics {
                    duration_ms: 3000.456,
                    billed_duration_ms: 3001,
                    memory_size_mb: 128,
                    max_memory_used_mb: 40,
                    init_duration_ms: Some(120.5),
                },
                duration_only,
                spans: vec![Span {
                    name: "extensionOverhead",
                    start_ms: 1_665_532_815_000,
                    duration_ms: 1.5,
                }],
                trace: "Root=1-a-b".into(),
            },
        }
    }

    #[test]
    fn report_has_documented_shape() {
        let v = parse(&render(&report(false), Api::Telemetry, "2022-12-13").unwrap());
        assert_eq!(v["time"], "2022-10-12T00:00:15.064Z");
        assert_eq!(v["type"], "platform.report");
        let r = &v["record"];
        assert_eq!(r["requestId"], "r1");
        assert_eq!(r["status"], "timeout");
        assert_eq!(r["errorType"], "Sandbox.Timeout");
        assert_eq!(r["metrics"]["durationMs"], 3000.46);
        assert_eq!(r["metrics"]["billedDurationMs"], 3001);
        assert_eq!(r["metrics"]["memorySizeMB"], 128);
        assert_eq!(r["metrics"]["maxMemoryUsedMB"], 40);
        assert_eq!(r["metrics"]["initDurationMs"], 120.5);
        assert_eq!(r["spans"][0]["name"], "extensionOverhead");
        assert_eq!(r["spans"][0]["start"], "2022-10-12T00:00:15.000Z");
    }

    #[test]
    fn managed_instances_report_has_duration_only() {
        let v = parse(&render(&report(true), Api::Telemetry, "2025-01-29").unwrap());
        let metrics = v["record"]["metrics"].as_object().unwrap();
        assert_eq!(metrics.keys().collect::<Vec<_>>(), ["durationMs"]);
    }

    #[test]
    fn function_lines_follow_schema_and_format() {
        let obj = json!({"_aws": {"Timestamp": 1}, "x": 1});
        let rec = Record {
            time_ms: 0,
            kind: Kind::Function(LogLine {
                text: obj.to_string(),
                object: Some(obj.clone()),
            }),
        };
        let v = parse(&render(&rec, Api::Telemetry, "2022-12-13").unwrap());
        assert_eq!(v["record"], obj);
        let v = parse(&render(&rec, Api::Telemetry, "2022-07-01").unwrap());
        assert_eq!(v["record"], Value::String(obj.to_string()));
        let v = parse(&render(&rec, Api::Logs, "2021-03-18").unwrap());
        assert_eq!(v["record"], Value::String(obj.to_string()));
        assert_eq!(category(&rec.kind), "function");
    }

    #[test]
    fn logs_api_skips_telemetry_only_records() {
        let start = Record {
            time_ms: 0,
            kind: Kind::InitStart {
                init: InitInfo {
                    initialization_type: "on-demand".into(),
                    phase: "init",
                },
                function_name: "f".into(),
                function_version: "$LATEST".into(),
                instance_id: "i".into(),
                instance_max_memory: 128,
            },
        };
        assert!(render(&start, Api::Logs, "2021-03-18").is_none());
        let v = parse(&render(&start, Api::Telemetry, "2025-01-29").unwrap());
        assert_eq!(v["record"]["initializationType"], "on-demand");
        assert_eq!(v["record"]["instanceMaxMemory"], 128);
        let v = parse(&render(&report(false), Api::Logs, "2021-03-18").unwrap());
        assert!(v["record"].get("spans").is_none());
        assert_eq!(v["record"]["metrics"]["billedDurationMs"], 3001);
    }
}
