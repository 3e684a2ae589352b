//! OTLP encoding: events as log records, the sandbox as a resource, per the OpenTelemetry
//! semantic conventions for FaaS and AWS Lambda.
//!
//! In: [`Event`]s and the [`LambdaEnv`]. Out: protobuf request messages, ready to `encode_to_vec`.
//! Pure functions.

use prost::Message;

use super::proto::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use super::proto::collector::metrics::v1::ExportMetricsServiceResponse;
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

pub fn log_record(e: &Event) -> LogRecord {
    let mut attributes = Vec::with_capacity(e.attributes.len() + 1);
    if let Some(id) = &e.request_id {
        attributes.push(kv("faas.invocation_id", id.as_str()));
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
    }
    .unwrap_or((0, String::new()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Metrics,
    Logs,
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
