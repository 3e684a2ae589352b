//! NDJSON encoding (`LOUPE_PROTOCOL=json`): the same content as the OTLP requests, one JSON
//! object per line, for home-made backends. `docs/ndjson.md` documents every field.
//!
//! In: the resource, [`Point`]s, [`Event`]s and [`Span`]s. Out: the lines, `\n`-terminated, ready
//! for gzip: one `resource` line first, then `metric`, `event` and `span` lines. Pure functions.

use serde_json::{Map, Value, json};

use super::metrics::Point;
use super::proto::common::v1::{AnyValue, any_value};
use super::proto::resource::v1::Resource;
use crate::config::Temporality;
use crate::event::{AttrValue, Body, Event};
use crate::trace::{Span, SpanKind};

/// Content type of an NDJSON request.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The `resource` line.
pub fn resource_line(resource: &Resource) -> Value {
    let attributes = object(
        resource
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), any_json(kv.value.as_ref()))),
    );
    json!({"type": "resource", "attributes": attributes})
}

/// A `metric` line.
pub fn metric_line(p: &Point, temporality: Temporality) -> Value {
    let attributes = object(
        p.attributes()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string()))),
    );
    let (start, time) = p.window();
    let mut line = json!({
        "type": "metric",
        "name": p.name(),
        "unit": p.unit(),
        "temporality": match temporality {
            Temporality::Delta => "delta",
            Temporality::Cumulative => "cumulative",
        },
        "start_time_unix_nano": start,
        "time_unix_nano": time,
        "attributes": attributes,
    });
    let Some(obj) = line.as_object_mut() else {
        return line;
    };
    match p {
        Point::Histogram { histogram: h, .. } => {
            obj.insert("kind".into(), json!("exponential_histogram"));
            obj.insert("count".into(), json!(h.count()));
            obj.insert("sum".into(), json!(h.sum()));
            obj.insert("min".into(), json!(h.min()));
            obj.insert("max".into(), json!(h.max()));
            obj.insert("scale".into(), json!(h.scale()));
            obj.insert("zero_count".into(), json!(h.zero_count()));
            obj.insert(
                "positive".into(),
                json!({"offset": h.positive().offset(), "bucket_counts": h.positive().counts()}),
            );
            obj.insert(
                "negative".into(),
                json!({"offset": h.negative().offset(), "bucket_counts": h.negative().counts()}),
            );
        }
        Point::Sum { value, .. } => {
            obj.insert("kind".into(), json!("sum"));
            obj.insert("monotonic".into(), json!(true));
            obj.insert("value".into(), json!(value));
        }
    }
    line
}

/// An `event` line.
pub fn event_line(e: &Event) -> Value {
    let mut attributes = Map::new();
    if let Some(id) = &e.request_id {
        attributes.insert("faas.invocation_id".into(), Value::String(id.to_string()));
    }
    for (k, v) in &e.attributes {
        attributes.insert(k.clone(), attr_json(v));
    }
    json!({
        "type": "event",
        "time_unix_nano": e.time_unix_nano,
        "event_name": e.kind.as_str(),
        "severity_number": e.severity.number(),
        "severity_text": e.severity.as_str(),
        "body": match &e.body {
            Body::None => Value::Null,
            Body::Text(s) => Value::String(s.clone()),
            Body::Json(v) => v.clone(),
        },
        "trace_id": e.trace_id.map(|t| hex(&t)),
        "attributes": attributes,
    })
}

/// A `span` line.
pub fn span_line(s: &Span) -> Value {
    let attributes = object(s.attributes.iter().map(|(k, v)| (k.clone(), attr_json(v))));
    json!({
        "type": "span",
        "trace_id": hex(&s.trace_id),
        "span_id": hex(&s.span_id),
        "parent_span_id": s.parent_span_id.map(|p| hex(&p)),
        "name": s.name,
        "kind": match s.kind {
            SpanKind::Server => "server",
            SpanKind::Internal => "internal",
        },
        "start_time_unix_nano": s.start_unix_nano,
        "end_time_unix_nano": s.end_unix_nano,
        "error": s.error,
        "sampled": s.sampled,
        "attributes": attributes,
    })
}

/// Appends `value` and a newline to `out`.
pub fn push_line(out: &mut Vec<u8>, value: &Value) {
    // Writing a `Value` into a Vec cannot fail: its keys are strings and the Vec grows.
    if serde_json::to_writer(&mut *out, value).is_ok() {
        out.push(b'\n');
    }
}

/// Appends the lines of one request to `out`: the resource, then the points, the events and the
/// spans.
pub fn encode(
    resource: &Value,
    points: &[Point],
    events: &[&Event],
    spans: &[Span],
    temporality: Temporality,
    out: &mut Vec<u8>,
) {
    out.reserve(256 * (points.len() + events.len() + spans.len() + 1));
    push_line(out, resource);
    for p in points {
        push_line(out, &metric_line(p, temporality));
    }
    for e in events {
        push_line(out, &event_line(e));
    }
    for s in spans {
        push_line(out, &span_line(s));
    }
}

fn attr_json(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::String(s.clone()),
        AttrValue::Int(i) => json!(i),
        AttrValue::Float(f) => json!(f),
        AttrValue::Bool(b) => json!(b),
        AttrValue::Json(j) => j.clone(),
    }
}

fn any_json(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_json(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), any_json(kv.value.as_ref()))),
        )),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
    }
}

/// A JSON object from key-value pairs, inserted one by one (a later duplicate key wins):
/// `collect()` would sort them first, and bring a whole sort's code into the binary for it.
fn object(pairs: impl Iterator<Item = (String, Value)>) -> Map<String, Value> {
    let mut map = Map::new();
    map.extend(pairs);
    map
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Histogram, Series, SeriesKey};
    use crate::batch::Counter;
    use crate::config::LambdaEnv;
    use crate::emf::Unit;
    use crate::event::{Kind, Severity};
    use crate::export::otlp::resource;

    #[test]
    fn lines_carry_resource_metrics_and_events() {
        let env = LambdaEnv {
            function_name: Some("orders".into()),
            ..LambdaEnv::default()
        };
        let mut h = Histogram::new();
        h.record(3.0).expect("finite");
        h.record(5.0).expect("finite");
        let p = Point::histogram(
            Series {
                key: SeriesKey::new(
                    "Shop",
                    "latency",
                    Unit::Milliseconds,
                    60,
                    vec![("route".into(), "/a".into())],
                ),
                histogram: h.clone(),
            },
            1,
            2,
        );
        let c = Point::counter(&Counter::new("loupe.flushes", 4), 1, 2);
        let mut e = Event::new(Kind::Emf, 7);
        e.severity = Severity::Warn;
        e.request_id = Some("r1".into());
        e.trace_id = Some([0xab; 16]);
        e.body = Body::Text("hello \"quoted\"\nline".into());
        e.attributes.push(("n".into(), AttrValue::Int(3)));
        let r = resource_line(&resource(&env, Some("123")));
        let mut bytes = b"kept".to_vec();
        let span = Span {
            trace_id: [0x11; 16],
            span_id: [0x22; 8],
            parent_span_id: None,
            name: "orders".into(),
            kind: SpanKind::Server,
            start_unix_nano: 5,
            end_unix_nano: 9,
            error: Some("timeout".into()),
            sampled: false,
            attributes: vec![("enduser.id".into(), AttrValue::Str("u-1".into()))],
        };
        encode(&r, &[p, c], &[&e], &[span], Temporality::Delta, &mut bytes);
        assert_eq!(bytes.drain(..4).as_slice(), b"kept", "appends");
        let text = String::from_utf8(bytes).expect("utf-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["type"], "resource");
        assert_eq!(lines[0]["attributes"]["faas.name"], "orders");
        assert_eq!(lines[0]["attributes"]["cloud.account.id"], "123");
        let m = &lines[1];
        assert_eq!(m["type"], "metric");
        assert_eq!(m["kind"], "exponential_histogram");
        assert_eq!(m["name"], "latency");
        assert_eq!(m["unit"], "ms");
        assert_eq!(m["temporality"], "delta");
        assert_eq!(m["count"], 2);
        assert_eq!(m["sum"], 8.0);
        assert_eq!(m["min"], 3.0);
        assert_eq!(m["scale"], h.scale());
        assert_eq!(m["positive"]["offset"], h.positive().offset());
        assert_eq!(
            m["positive"]["bucket_counts"]
                .as_array()
                .expect("array")
                .iter()
                .filter_map(Value::as_u64)
                .sum::<u64>(),
            2
        );
        assert_eq!(m["attributes"]["route"], "/a");
        assert_eq!(m["attributes"]["aws.emf.namespace"], "Shop");
        assert_eq!(lines[2]["kind"], "sum");
        assert_eq!(lines[2]["value"], 4);
        assert_eq!(lines[2]["monotonic"], true);
        let ev = &lines[3];
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["event_name"], "aws.lambda.emf");
        assert_eq!(ev["severity_number"], 13);
        assert_eq!(ev["severity_text"], "WARN");
        assert_eq!(ev["body"], "hello \"quoted\"\nline");
        assert_eq!(ev["trace_id"], "ab".repeat(16));
        assert_eq!(ev["attributes"]["faas.invocation_id"], "r1");
        assert_eq!(ev["attributes"]["n"], 3);
        let sp = &lines[4];
        assert_eq!(sp["type"], "span");
        assert_eq!(sp["trace_id"], "11".repeat(16));
        assert_eq!(sp["span_id"], "22".repeat(8));
        assert_eq!(sp["parent_span_id"], Value::Null);
        assert_eq!(sp["kind"], "server");
        assert_eq!(sp["end_time_unix_nano"], 9);
        assert_eq!(sp["error"], "timeout");
        assert_eq!(sp["attributes"]["enduser.id"], "u-1");
    }
}
