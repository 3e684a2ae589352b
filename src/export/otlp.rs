//! OTLP encoding: events as log records, the sandbox as a resource, per the OpenTelemetry
//! semantic conventions for FaaS and AWS Lambda.
//!
//! In: [`Event`]s and the [`LambdaEnv`]. Out: the protobuf bytes of a logs request, written
//! straight from the events by [`encode_logs`] (no intermediate messages, nothing copied), and
//! the same request as prost messages ([`logs_request`]) for tests and tools. Pure functions.

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::proto::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use super::proto::collector::metrics::v1::ExportMetricsServiceResponse;
use super::proto::collector::trace::v1::ExportTraceServiceResponse;
use super::proto::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use super::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use super::proto::resource::v1::Resource;
use crate::config::LambdaEnv;
use crate::event::{AttrValue, Body, Event};

pub const SCOPE_NAME: &str = "loupe";

/// The sandbox as an OTel resource: service.name, faas.*, cloud.*.
pub fn resource(env: &LambdaEnv, account_id: Option<&str>) -> Resource {
    let mut attrs = vec![
        kv("cloud.provider", "aws"),
        kv("cloud.platform", "aws_lambda"),
    ];
    if let Some(name) = &env.function_name {
        attrs.push(kv("service.name", name.as_str()));
        attrs.push(kv("faas.name", name.as_str()));
    }
    if let Some(v) = &env.function_version {
        attrs.push(kv("faas.version", v.as_str()));
    }
    if let Some(s) = &env.log_stream {
        attrs.push(kv("faas.instance", s.as_str()));
    }
    if let Some(mb) = env.memory_mb {
        // The convention gives faas.max_memory in bytes.
        attrs.push(kv(
            "faas.max_memory",
            AttrValue::Int(i64::from(mb) * 1024 * 1024),
        ));
    }
    if let Some(r) = &env.region {
        attrs.push(kv("cloud.region", r.as_str()));
    }
    if let Some(a) = account_id {
        attrs.push(kv("cloud.account.id", a));
    }
    if let Some(g) = &env.log_group {
        attrs.push(kv(
            "aws.log.group.names",
            AttrValue::Json(serde_json::json!([g])),
        ));
    }
    Resource {
        attributes: attrs,
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// One log record per event, all under one resource and scope.
pub fn logs_request(resource: &Resource, events: &[Event]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: events.iter().map(log_record).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Writes the protobuf bytes of `logs_request(resource, events)` into `out`, straight from the
/// events: the same bytes, without building (and copying into) the prost messages.
pub fn encode_logs(resource: &Resource, events: &[&Event], out: &mut Vec<u8>) {
    let scope = scope();
    let records: Vec<usize> = events.iter().map(|e| record_len(e)).collect();
    let scope_logs = prost::encoding::message::encoded_len(1, &scope)
        + records.iter().map(|&n| field_len(2, n)).sum::<usize>();
    let resource_logs =
        prost::encoding::message::encoded_len(1, resource) + field_len(2, scope_logs);
    out.reserve(field_len(1, resource_logs));
    // ExportLogsServiceRequest.resource_logs
    header(1, resource_logs, out);
    prost::encoding::message::encode(1, resource, out);
    // ResourceLogs.scope_logs
    header(2, scope_logs, out);
    prost::encoding::message::encode(1, &scope, out);
    for (e, &len) in events.iter().zip(&records) {
        // ScopeLogs.log_records
        header(2, len, out);
        write_record(e, out);
    }
}

/// A length-delimited field of `len` bytes, key and length included.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn header(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn string_field(tag: u32, s: &str, out: &mut Vec<u8>) {
    header(tag, s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

/// A value as [`attr_value`] or [`json_value`] would make it, borrowed.
#[derive(Clone, Copy)]
enum ValueRef<'a> {
    Str(&'a str),
    Attr(&'a AttrValue),
    Json(&'a serde_json::Value),
}

/// The AnyValue fields of one value (the message's content, without its own key and length).
fn any_len(v: ValueRef<'_>) -> usize {
    use serde_json::Value;
    match v {
        ValueRef::Str(s) => field_len(1, s.len()),
        ValueRef::Attr(a) => match a {
            AttrValue::Str(s) => field_len(1, s.len()),
            AttrValue::Bool(_) => key_len(2) + 1,
            AttrValue::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
            AttrValue::Float(_) => key_len(4) + 8,
            AttrValue::Json(j) => any_len(ValueRef::Json(j)),
        },
        ValueRef::Json(j) => match j {
            Value::Null => 0,
            Value::Bool(_) => key_len(2) + 1,
            Value::Number(n) => match n.as_i64() {
                Some(i) => key_len(3) + encoded_len_varint(i as u64),
                None => key_len(4) + 8,
            },
            Value::String(s) => field_len(1, s.len()),
            Value::Array(a) => field_len(5, array_len(a)),
            Value::Object(o) => field_len(6, object_len(o)),
        },
    }
}

fn array_len(a: &[serde_json::Value]) -> usize {
    a.iter()
        .map(|v| field_len(1, any_len(ValueRef::Json(v))))
        .sum()
}

fn object_len(o: &serde_json::Map<String, serde_json::Value>) -> usize {
    o.iter()
        .map(|(k, v)| field_len(1, kv_len(k, ValueRef::Json(v))))
        .sum()
}

/// A KeyValue's content; an empty key is left out, as proto3 does.
fn kv_len(key: &str, v: ValueRef<'_>) -> usize {
    let key = if key.is_empty() {
        0
    } else {
        field_len(1, key.len())
    };
    key + field_len(2, any_len(v))
}

fn write_any(v: ValueRef<'_>, out: &mut Vec<u8>) {
    use serde_json::Value;
    let int = |i: i64, out: &mut Vec<u8>| {
        encode_key(3, WireType::Varint, out);
        encode_varint(i as u64, out);
    };
    let float = |f: f64, out: &mut Vec<u8>| {
        encode_key(4, WireType::SixtyFourBit, out);
        out.extend_from_slice(&f.to_le_bytes());
    };
    let boolean = |b: bool, out: &mut Vec<u8>| {
        encode_key(2, WireType::Varint, out);
        out.push(u8::from(b));
    };
    match v {
        ValueRef::Str(s) => string_field(1, s, out),
        ValueRef::Attr(a) => match a {
            AttrValue::Str(s) => string_field(1, s, out),
            AttrValue::Bool(b) => boolean(*b, out),
            AttrValue::Int(i) => int(*i, out),
            AttrValue::Float(f) => float(*f, out),
            AttrValue::Json(j) => write_any(ValueRef::Json(j), out),
        },
        ValueRef::Json(j) => match j {
            Value::Null => {}
            Value::Bool(b) => boolean(*b, out),
            Value::Number(n) => match n.as_i64() {
                Some(i) => int(i, out),
                None => float(n.as_f64().unwrap_or(f64::NAN), out),
            },
            Value::String(s) => string_field(1, s, out),
            Value::Array(a) => {
                header(5, array_len(a), out);
                for v in a {
                    let v = ValueRef::Json(v);
                    header(1, any_len(v), out);
                    write_any(v, out);
                }
            }
            Value::Object(o) => {
                header(6, object_len(o), out);
                for (k, v) in o {
                    write_kv(k, ValueRef::Json(v), out);
                }
            }
        },
    }
}

/// One KeyValue, key and length included (as an element of a repeated field with tag 1 or 6:
/// the caller's tag is passed through `tag`).
fn write_kv_field(tag: u32, key: &str, v: ValueRef<'_>, out: &mut Vec<u8>) {
    header(tag, kv_len(key, v), out);
    if !key.is_empty() {
        string_field(1, key, out);
    }
    header(2, any_len(v), out);
    write_any(v, out);
}

fn write_kv(key: &str, v: ValueRef<'_>, out: &mut Vec<u8>) {
    write_kv_field(1, key, v, out);
}

fn body_ref(body: &Body) -> Option<ValueRef<'_>> {
    match body {
        Body::None => None,
        Body::Text(s) => Some(ValueRef::Str(s)),
        Body::Json(v) => Some(ValueRef::Json(v)),
    }
}

/// The attributes of an event's log record: the request id first, then its own.
fn record_attributes(e: &Event) -> impl Iterator<Item = (&str, ValueRef<'_>)> {
    e.request_id
        .as_deref()
        .map(|id| ("faas.invocation_id", ValueRef::Str(id)))
        .into_iter()
        .chain(
            e.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), ValueRef::Attr(v))),
        )
}

/// A LogRecord's content, defaults left out as prost does; [`write_record`] writes the fields
/// in tag order, as prost does.
fn record_len(e: &Event) -> usize {
    let mut n = 0;
    if e.time_unix_nano != 0 {
        // time_unix_nano (1) and observed_time_unix_nano (11), both fixed64.
        n += 2 * (key_len(1) + 8);
    }
    let severity = e.severity.number();
    if severity != 0 {
        n += key_len(2) + encoded_len_varint(severity as u64);
    }
    let text = e.severity.as_str();
    if !text.is_empty() {
        n += field_len(3, text.len());
    }
    if let Some(b) = body_ref(&e.body) {
        n += field_len(5, any_len(b));
    }
    n += record_attributes(e)
        .map(|(k, v)| field_len(6, kv_len(k, v)))
        .sum::<usize>();
    if e.trace_id.is_some() {
        n += field_len(9, 16);
    }
    let name = e.kind.as_str();
    if !name.is_empty() {
        n += field_len(12, name.len());
    }
    n
}

fn write_record(e: &Event, out: &mut Vec<u8>) {
    if e.time_unix_nano != 0 {
        encode_key(1, WireType::SixtyFourBit, out);
        out.extend_from_slice(&e.time_unix_nano.to_le_bytes());
    }
    let severity = e.severity.number();
    if severity != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(severity as u64, out);
    }
    let text = e.severity.as_str();
    if !text.is_empty() {
        string_field(3, text, out);
    }
    if let Some(b) = body_ref(&e.body) {
        header(5, any_len(b), out);
        write_any(b, out);
    }
    for (k, v) in record_attributes(e) {
        write_kv_field(6, k, v, out);
    }
    if let Some(t) = &e.trace_id {
        header(9, t.len(), out);
        out.extend_from_slice(t);
    }
    if e.time_unix_nano != 0 {
        // observed_time_unix_nano: loupe observes the line when it happened, as far as it knows.
        encode_key(11, WireType::SixtyFourBit, out);
        out.extend_from_slice(&e.time_unix_nano.to_le_bytes());
    }
    let name = e.kind.as_str();
    if !name.is_empty() {
        string_field(12, name, out);
    }
}

pub fn log_record(e: &Event) -> LogRecord {
    let mut attributes = Vec::with_capacity(e.attributes.len() + 1);
    if let Some(id) = &e.request_id {
        attributes.push(kv("faas.invocation_id", &**id));
    }
    attributes.extend(e.attributes.iter().map(|(k, v)| kv(k, v.clone())));
    LogRecord {
        time_unix_nano: e.time_unix_nano,
        observed_time_unix_nano: e.time_unix_nano,
        severity_number: e.severity.number(),
        severity_text: e.severity.as_str().to_string(),
        body: match &e.body {
            Body::None => None,
            Body::Text(s) => Some(string_value(s)),
            Body::Json(v) => Some(json_value(v)),
        },
        attributes,
        dropped_attributes_count: 0,
        flags: 0,
        trace_id: e.trace_id.map(|t| t.to_vec()).unwrap_or_default(),
        span_id: Vec::new(),
        event_name: e.kind.as_str().to_string(),
    }
}

pub fn kv(key: &str, value: impl Into<AttrValue>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(attr_value(value.into())),
    }
}

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

pub fn attr_value(v: AttrValue) -> AnyValue {
    let value = match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Float(f) => any_value::Value::DoubleValue(f),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
        AttrValue::Json(j) => return json_value(&j),
    };
    AnyValue { value: Some(value) }
}

/// JSON to AnyValue: objects become key-value lists, arrays arrays. serde_json's recursion limit
/// bounds the depth of anything parsed from input.
pub fn json_value(v: &serde_json::Value) -> AnyValue {
    use serde_json::Value;
    let value = match v {
        Value::Null => return AnyValue { value: None },
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(json_value).collect(),
        }),
        Value::Object(o) => any_value::Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(json_value(v)),
                })
                .collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

/// How many items a 2xx answer says the backend rejected (OTLP partial success), and its message.
/// A body that is not a valid response counts as no rejection: the status already said success.
pub fn partial_success(signal: Signal, body: &[u8]) -> (i64, String) {
    match signal {
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
    }
    .unwrap_or((0, String::new()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Severity};

    fn env() -> LambdaEnv {
        LambdaEnv {
            function_name: Some("orders".into()),
            function_version: Some("$LATEST".into()),
            memory_mb: Some(128),
            region: Some("eu-west-1".into()),
            log_stream: Some("2026/11/25/[$LATEST]abc".into()),
            ..LambdaEnv::default()
        }
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn resource_follows_semantic_conventions() {
        let r = resource(&env(), Some("123456789012"));
        let s = |v: &str| any_value::Value::StringValue(v.to_string());
        assert_eq!(attr(&r.attributes, "service.name"), Some(&s("orders")));
        assert_eq!(attr(&r.attributes, "faas.name"), Some(&s("orders")));
        assert_eq!(attr(&r.attributes, "cloud.provider"), Some(&s("aws")));
        assert_eq!(attr(&r.attributes, "cloud.region"), Some(&s("eu-west-1")));
        assert_eq!(
            attr(&r.attributes, "cloud.account.id"),
            Some(&s("123456789012"))
        );
        assert_eq!(
            attr(&r.attributes, "faas.max_memory"),
            Some(&any_value::Value::IntValue(134_217_728))
        );
    }

    #[test]
    fn events_round_trip_through_protobuf() {
        let mut e = Event::new(Kind::Emf, 1_700_000_000_000_000_000);
        e.severity = Severity::Info;
        e.request_id = Some("req-1".into());
        e.trace_id = Some([7; 16]);
        e.body = Body::Json(serde_json::json!({"userId": "u1", "n": [1, 2.5, null]}));
        e.attributes
            .push(("userId".into(), AttrValue::Str("u1".into())));
        let req = logs_request(&resource(&env(), None), &[e]);
        let bytes = req.encode_to_vec();
        let back = ExportLogsServiceRequest::decode(&bytes[..]).expect("decodes");
        let rec = &back.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.event_name, "aws.lambda.emf");
        assert_eq!(rec.severity_number, 9);
        assert_eq!(rec.trace_id, vec![7; 16]);
        assert_eq!(
            attr(&rec.attributes, "faas.invocation_id"),
            Some(&any_value::Value::StringValue("req-1".into()))
        );
        match rec.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::KvlistValue(kvs)) => assert_eq!(kvs.values.len(), 2),
            other => panic!("body {other:?}"),
        }
    }

    /// Every shape an event can take: bodies of each kind, attribute values of each kind, JSON
    /// nesting with nulls, empty keys and empty strings, defaults left out.
    fn assorted_events() -> Vec<Event> {
        let mut a = Event::new(Kind::Emf, 1_700_000_000_000_000_000);
        a.severity = Severity::Warn;
        a.request_id = Some("req-1".into());
        a.trace_id = Some([9; 16]);
        a.attributes = vec![
            ("objectKey".into(), AttrValue::Str("a/b.txt".into())),
            ("empty".into(), AttrValue::Str(String::new())),
            ("".into(), AttrValue::Int(-3)),
            ("big".into(), AttrValue::Int(i64::MAX)),
            ("ratio".into(), AttrValue::Float(-0.25)),
            ("ok".into(), AttrValue::Bool(false)),
            (
                "names".into(),
                AttrValue::Json(serde_json::json!(["Latency", "", null, [], {}])),
            ),
        ];
        let mut b = Event::new(Kind::Log, 0);
        b.body = Body::Text("2026-11-24T05:21:04.582Z\tr\tINFO\thello é".into());
        let mut c = Event::new(Kind::InvocationError, 5);
        c.severity = Severity::Error;
        c.body = Body::Json(serde_json::json!({
            "level": "ERROR", "n": 1.5, "neg": -7, "u": u64::MAX, "t": true, "z": null,
            "": "empty key", "deep": {"list": [1, {"x": [null, "y"]}], "o": {}},
        }));
        let mut d = Event::new(Kind::Log, 1);
        d.body = Body::Text(String::new());
        d.attributes = vec![("x".into(), AttrValue::Json(serde_json::Value::Null))];
        vec![a, b, c, d, Event::new(Kind::Log, 0)]
    }

    #[test]
    fn direct_encoding_is_byte_for_byte_prosts() {
        let resource = resource(&env(), Some("123456789012"));
        let events = assorted_events();
        for n in 0..=events.len() {
            let some: Vec<&Event> = events.iter().take(n).collect();
            let mut out = vec![0xAA];
            encode_logs(&resource, &some, &mut out);
            let want = logs_request(&resource, &events[..n]).encode_to_vec();
            let got = out.get(1..).unwrap_or_default();
            let at = got.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(
                got,
                &want[..],
                "{n} events, first difference at {at:?}: {:?} vs {:?}",
                at.map(|i| &got[i.saturating_sub(8)..(i + 8).min(got.len())]),
                at.map(|i| &want[i.saturating_sub(8)..(i + 8).min(want.len())])
            );
        }
    }

    #[test]
    fn partial_success_is_read_and_garbage_is_ignored() {
        use super::super::proto::collector::logs::v1::ExportLogsPartialSuccess;
        let body = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(partial_success(Signal::Logs, &body), (3, "too old".into()));
        assert_eq!(
            partial_success(Signal::Logs, b"\xff\xff garbage"),
            (0, String::new())
        );
        assert_eq!(partial_success(Signal::Metrics, b""), (0, String::new()));
    }
}
