//! What a run of loupe-local produced: the JSON report written by `--report FILE` and the short
//! human summary printed on stdout.
//!
//! In: facts the sandbox records as it goes. Out: serializable structs and a summary string.
//! Pure.

use serde::Serialize;
use serde_json::Value;

use super::process::{ExitInfo, Usage};
use super::records::Api;
use super::telemetry::{Buffering, Counters};

/// Lines of an extension's stderr kept in the report.
pub const MAX_STDERR_LINES: usize = 200;
/// Refused API calls kept in the report.
pub const MAX_REFUSED: usize = 200;
/// Bytes of a function response kept in the report.
pub const MAX_RESPONSE: usize = 8 * 1024;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub function_name: String,
    pub managed_instances: bool,
    pub inits: Vec<InitEntry>,
    pub invocations: Vec<InvocationEntry>,
    pub extensions: Vec<ExtensionEntry>,
    pub subscriptions: Vec<SubscriptionEntry>,
    pub counters: Vec<CounterEntry>,
    pub refused: Vec<RefusedEntry>,
    pub refused_dropped: u64,
    /// Freezes whose SIGSTOP was seen to take effect on every process.
    pub freezes: u64,
    /// What the OTLP receiver got (`--receiver`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver: Option<super::receiver::ReceiverReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitEntry {
    pub phase: &'static str,
    pub status: &'static str,
    pub error_type: Option<String>,
    pub duration_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationEntry {
    pub request_id: String,
    pub status: &'static str,
    pub error_type: Option<String>,
    pub duration_ms: f64,
    pub extension_overhead_ms: f64,
    pub max_memory_used_mb: u64,
    pub log_lines: u64,
    pub response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionEntry {
    pub name: String,
    /// 1 for the first launch; a reset environment launches extensions again.
    pub instance: u32,
    pub registered: bool,
    pub registered_events: Vec<String>,
    pub events: Vec<String>,
    pub error_type: Option<String>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub shutdown_ms: Option<f64>,
    pub stderr: Vec<String>,
    pub stderr_dropped: u64,
    pub pid: Option<u32>,
    /// From just before the process is spawned to its first `/event/next` call.
    pub init_ms: Option<f64>,
    /// Read from /proc when the first invocation starts (the extension idle in `/next`).
    pub usage_after_init: Option<Usage>,
    /// Read from /proc just before SHUTDOWN is sent (or the process is killed at shutdown).
    pub usage_at_shutdown: Option<Usage>,
}

impl ExtensionEntry {
    pub fn new(name: String, instance: u32) -> Self {
        ExtensionEntry {
            name,
            instance,
            registered: false,
            registered_events: Vec::new(),
            events: Vec::new(),
            error_type: None,
            exit_code: None,
            exit_signal: None,
            shutdown_ms: None,
            stderr: Vec::new(),
            stderr_dropped: 0,
            pid: None,
            init_ms: None,
            usage_after_init: None,
            usage_at_shutdown: None,
        }
    }

    pub fn exited(&mut self, exit: ExitInfo) {
        self.exit_code = exit.code;
        self.exit_signal = exit.signal;
    }

    pub fn stderr_line(&mut self, line: &str) {
        if self.stderr.len() < MAX_STDERR_LINES {
            self.stderr.push(line.to_string());
        } else {
            self.stderr_dropped += 1;
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEntry {
    pub extension: String,
    pub api: Api,
    pub schema_version: String,
    pub types: Vec<String>,
    pub buffering: Buffering,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterEntry {
    pub extension: String,
    pub api: Api,
    #[serde(flatten)]
    pub counters: Counters,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedEntry {
    pub extension: Option<String>,
    pub request: String,
    pub status: u16,
    pub error_type: String,
}

impl RunReport {
    pub fn refuse(&mut self, entry: RefusedEntry) {
        if self.refused.len() < MAX_REFUSED {
            self.refused.push(entry);
        } else {
            self.refused_dropped += 1;
        }
    }
}

/// The response as the report shows it: JSON when it parses, else text, cut at MAX_RESPONSE.
pub fn response_value(body: Option<&[u8]>) -> Value {
    match body {
        None => Value::Null,
        Some(b) if b.len() > MAX_RESPONSE => {
            Value::String(String::from_utf8_lossy(&b[..MAX_RESPONSE]).into_owned())
        }
        Some(b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
    }
}

fn stats(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let max = v.last().copied().unwrap_or(0.0);
    let p50 = v[(v.len() - 1) / 2];
    format!("mean {mean:.1} ms, p50 {p50:.1} ms, max {max:.1} ms")
}

/// A few lines for a person.
pub fn summary(r: &RunReport) -> String {
    let mut out = String::new();
    let n = r.invocations.len();
    let mut by_status: Vec<(&str, usize)> = Vec::new();
    for inv in &r.invocations {
        match by_status.iter_mut().find(|(s, _)| *s == inv.status) {
            Some((_, c)) => *c += 1,
            None => by_status.push((inv.status, 1)),
        }
    }
    let statuses: Vec<String> = by_status.iter().map(|(s, c)| format!("{s} {c}")).collect();
    out.push_str(&format!("invocations: {n} ({})\n", statuses.join(", ")));
    let durations: Vec<f64> = r.invocations.iter().map(|i| i.duration_ms).collect();
    let overheads: Vec<f64> = r
        .invocations
        .iter()
        .map(|i| i.extension_overhead_ms)
        .collect();
    out.push_str(&format!("duration: {}\n", stats(&durations)));
    out.push_str(&format!("extension overhead: {}\n", stats(&overheads)));
    for i in &r.inits {
        out.push_str(&format!(
            "init ({}): {} in {:.1} ms{}\n",
            i.phase,
            i.status,
            i.duration_ms,
            i.error_type
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    for e in &r.extensions {
        let exit = match (e.exit_code, e.exit_signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "exit unknown".into(),
        };
        let took = e
            .shutdown_ms
            .map(|ms| format!(", {ms:.0} ms after SHUTDOWN"))
            .unwrap_or_default();
        out.push_str(&format!(
            "extension {}#{}: {}, {} events, {exit}{took}\n",
            e.name,
            e.instance,
            if e.registered {
                "registered"
            } else {
                "not registered"
            },
            e.events.len()
        ));
    }
    for c in &r.counters {
        out.push_str(&format!(
            "telemetry to {} ({:?}): {} records delivered, {} dropped\n",
            c.extension, c.api, c.counters.delivered_records, c.counters.dropped_records
        ));
    }
    if let Some(rx) = &r.receiver {
        out.push_str(&super::receiver::summary(rx));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_statuses_and_exits() {
        let mut r = RunReport::default();
        for (s, d) in [("success", 10.0), ("timeout", 3000.0), ("success", 20.0)] {
            r.invocations.push(InvocationEntry {
                request_id: "r".into(),
                status: s,
                error_type: None,
                duration_ms: d,
                extension_overhead_ms: 1.0,
                max_memory_used_mb: 30,
                log_lines: 0,
                response: Value::Null,
            });
        }
        let mut e = ExtensionEntry::new("ext".into(), 1);
        e.registered = true;
        e.exited(ExitInfo {
            code: Some(0),
            signal: None,
        });
        e.shutdown_ms = Some(12.0);
        r.extensions.push(e);
        let s = summary(&r);
        assert!(s.contains("invocations: 3 (success 2, timeout 1)"), "{s}");
        assert!(s.contains("p50 20.0 ms"), "{s}");
        assert!(
            s.contains("extension ext#1: registered, 0 events, exit code 0, 12 ms after SHUTDOWN"),
            "{s}"
        );
    }

    #[test]
    fn response_is_json_or_text() {
        assert_eq!(
            response_value(Some(b"{\"a\":1}")),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            response_value(Some(b"not json")),
            Value::String("not json".into())
        );
        assert_eq!(response_value(None), Value::Null);
        let big = vec![b'x'; MAX_RESPONSE + 10];
        assert_eq!(
            response_value(Some(&big)).as_str().map(str::len),
            Some(MAX_RESPONSE)
        );
    }

    #[test]
    fn stderr_is_bounded() {
        let mut e = ExtensionEntry::new("x".into(), 1);
        for i in 0..MAX_STDERR_LINES + 5 {
            e.stderr_line(&i.to_string());
        }
        assert_eq!(e.stderr.len(), MAX_STDERR_LINES);
        assert_eq!(e.stderr_dropped, 5);
    }
}
