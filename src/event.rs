//! Events: what loupe ships besides metrics. One [`Event`] per function log line, per EMF line
//! (with its properties) and per failed invocation.
//!
//! In: built by the log pipeline and the platform stage. Out: encoded by `export` as OTLP log
//! records or NDJSON. High-cardinality values (request ids, user ids, object keys) live here as
//! attributes, never on metrics. Pure data with a few small constructors; no I/O.

use std::sync::Arc;

use serde_json::Value;

/// The kind of an event, shipped as the OTLP `event_name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A line the function printed.
    Log,
    /// A valid EMF line: its properties and the request that printed it.
    Emf,
    /// A failed invocation (error, timeout, crash).
    InvocationError,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Log => "",
            Kind::Emf => "aws.lambda.emf",
            Kind::InvocationError => "aws.lambda.invocation_error",
        }
    }
}

/// OTLP severity numbers (logs data model): TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Unspecified = 0,
    Trace = 1,
    Debug = 5,
    Info = 9,
    Warn = 13,
    Error = 17,
    Fatal = 21,
}

impl Severity {
    pub fn number(self) -> i32 {
        self as i32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unspecified => "",
            Severity::Trace => "TRACE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }

    /// A level word as runtimes and loggers print it (`INFO`, `warning`, `CRITICAL`, `err` ...).
    pub fn parse(level: &str) -> Severity {
        let l = level.trim();
        let eq = |s: &str| l.eq_ignore_ascii_case(s);
        if eq("trace") {
            Severity::Trace
        } else if eq("debug") {
            Severity::Debug
        } else if eq("info") || eq("information") || eq("notice") {
            Severity::Info
        } else if eq("warn") || eq("warning") {
            Severity::Warn
        } else if eq("error") || eq("err") {
            Severity::Error
        } else if eq("fatal") || eq("critical") || eq("crit") || eq("emergency") || eq("alert") {
            Severity::Fatal
        } else {
            Severity::Unspecified
        }
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Arrays and objects as found in the function's JSON.
    Json(Value),
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}

impl From<Value> for AttrValue {
    /// JSON scalars map to scalars; null becomes an empty string; arrays and objects stay JSON.
    fn from(v: Value) -> Self {
        match v {
            Value::String(s) => AttrValue::Str(s),
            Value::Bool(b) => AttrValue::Bool(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Int(i),
                None => AttrValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Null => AttrValue::Str(String::new()),
            other => AttrValue::Json(other),
        }
    }
}

/// The body of an event: the line as printed, or the JSON object the runtime delivered.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    None,
    Text(String),
    Json(Value),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When it happened, ns since the epoch (0 when unknown).
    pub time_unix_nano: u64,
    pub kind: Kind,
    pub severity: Severity,
    pub body: Body,
    /// The Lambda request id, shipped as `faas.invocation_id` (shared by the lines of one
    /// invocation).
    pub request_id: Option<Arc<str>>,
    /// The X-Ray trace id (`Root=1-5759e988-bd862e3fe1be46a994272793`) as 16 bytes.
    pub trace_id: Option<[u8; 16]>,
    pub attributes: Vec<(String, AttrValue)>,
}

impl Event {
    pub fn new(kind: Kind, time_unix_nano: u64) -> Event {
        Event {
            time_unix_nano,
            kind,
            severity: Severity::Unspecified,
            body: Body::None,
            request_id: None,
            trace_id: None,
            attributes: Vec::new(),
        }
    }
}

/// The trace id of an X-Ray header value (`Root=1-5759e988-bd862e3fe1be46a994272793;...`): the
/// 8 hex digits of the epoch and the 24 of the id make the 16 bytes of a W3C trace id.
pub fn xray_trace_id(value: &str) -> Option<[u8; 16]> {
    let root = value
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Root="))?;
    let mut parts = root.split('-');
    if parts.next()? != "1" {
        return None;
    }
    let (epoch, id) = (parts.next()?, parts.next()?);
    if epoch.len() != 8 || id.len() != 24 || parts.next().is_some() {
        return None;
    }
    let hex = format!("{epoch}{id}");
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_ids_become_w3c_trace_ids() {
        let id = xray_trace_id(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .expect("valid");
        assert_eq!(id[..4], [0x57, 0x59, 0xe9, 0x88]);
        assert_eq!(id[15], 0x93);
        for bad in [
            "",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e988-bd862e3fe1be46a99427279",
            "Root=1-5759e98g-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8",
        ] {
            assert_eq!(xray_trace_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn severity_words() {
        assert_eq!(Severity::parse("WARNING"), Severity::Warn);
        assert_eq!(Severity::parse("critical"), Severity::Fatal);
        assert_eq!(Severity::parse("Info"), Severity::Info);
        assert_eq!(Severity::parse("loud"), Severity::Unspecified);
        assert_eq!(Severity::Error.number(), 17);
    }

    #[test]
    fn json_values_map_to_attribute_values() {
        assert_eq!(AttrValue::from(serde_json::json!(3)), AttrValue::Int(3));
        assert_eq!(
            AttrValue::from(serde_json::json!(2.5)),
            AttrValue::Float(2.5)
        );
        assert_eq!(
            AttrValue::from(serde_json::json!("u1")),
            AttrValue::Str("u1".into())
        );
        assert!(matches!(
            AttrValue::from(serde_json::json!({"a": 1})),
            AttrValue::Json(_)
        ));
    }
}
