//! The OTLP/JSON mapping, decoded into the prost messages the protobuf path yields.
//!
//! In: a parsed JSON document (lowerCamelCase field names; 64-bit integers as strings or numbers;
//! enums as integers; trace and span ids as hex; bytes as base64). Out: an
//! `Export*ServiceRequest`, or a [`JsonError`] naming the field. Unknown fields are ignored, as
//! the mapping asks. Pure.

use serde_json::{Map, Value};

use crate::export::proto::collector::logs::v1::ExportLogsServiceRequest;
use crate::export::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::export::proto::collector::trace::v1::ExportTraceServiceRequest;
use crate::export::proto::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use crate::export::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::export::proto::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exponential_histogram_data_point,
    metric, number_data_point,
};
use crate::export::proto::resource::v1::Resource;
use crate::export::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// A JSON document that is not a valid OTLP request.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {problem}")]
pub struct JsonError {
    pub field: &'static str,
    pub problem: &'static str,
}

fn err(field: &'static str, problem: &'static str) -> JsonError {
    JsonError { field, problem }
}

type R<T> = Result<T, JsonError>;

fn obj<'a>(v: &'a Value, field: &'static str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or(err(field, "not an object"))
}

/// An array field; absent or null is empty.
fn list<'a>(m: &'a Map<String, Value>, key: &str, field: &'static str) -> R<&'a [Value]> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(err(field, "not an array")),
    }
}

fn string(m: &Map<String, Value>, key: &str, field: &'static str) -> R<String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err(field, "not a string")),
    }
}

fn u64_of(v: &Value, field: &'static str) -> R<u64> {
    match v {
        Value::Number(n) => n.as_u64().ok_or(err(field, "not an unsigned integer")),
        Value::String(s) => s.parse().map_err(|_| err(field, "not an unsigned integer")),
        _ => Err(err(field, "not an unsigned integer")),
    }
}

fn u64_field(m: &Map<String, Value>, key: &str, field: &'static str) -> R<u64> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => u64_of(v, field),
    }
}

fn i64_of(v: &Value, field: &'static str) -> R<i64> {
    match v {
        Value::Number(n) => n.as_i64().ok_or(err(field, "not an integer")),
        Value::String(s) => s.parse().map_err(|_| err(field, "not an integer")),
        _ => Err(err(field, "not an integer")),
    }
}

fn i32_field(m: &Map<String, Value>, key: &str, field: &'static str) -> R<i32> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => i32::try_from(i64_of(v, field)?).map_err(|_| err(field, "out of range")),
    }
}

fn u32_field(m: &Map<String, Value>, key: &str, field: &'static str) -> R<u32> {
    u32::try_from(u64_field(m, key, field)?).map_err(|_| err(field, "out of range"))
}

fn f64_of(v: &Value, field: &'static str) -> R<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or(err(field, "not a number")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => s.parse().map_err(|_| err(field, "not a number")),
        },
        _ => Err(err(field, "not a number")),
    }
}

fn opt_f64(m: &Map<String, Value>, key: &str, field: &'static str) -> R<Option<f64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => f64_of(v, field).map(Some),
    }
}

fn hex(m: &Map<String, Value>, key: &str, len: usize, field: &'static str) -> R<Vec<u8>> {
    let s = string(m, key, field)?;
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.len() != len * 2 {
        return Err(err(field, "wrong length for a hex id"));
    }
    let digit = |c: u8| -> R<u8> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(err(field, "not hex"))
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| match p {
            [a, b] => Ok(digit(*a)? << 4 | digit(*b)?),
            _ => Err(err(field, "not hex")),
        })
        .collect()
}

/// Standard base64 with padding (the proto3 JSON form of `bytes`); URL-safe letters accepted.
fn base64(s: &str, field: &'static str) -> R<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return Err(err(field, "not base64")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

fn any_value(v: &Value) -> R<AnyValue> {
    const F: &str = "AnyValue";
    let m = obj(v, F)?;
    let value = if let Some(s) = m.get("stringValue") {
        any_value::Value::StringValue(s.as_str().ok_or(err(F, "stringValue"))?.to_string())
    } else if let Some(b) = m.get("boolValue") {
        any_value::Value::BoolValue(b.as_bool().ok_or(err(F, "boolValue"))?)
    } else if let Some(i) = m.get("intValue") {
        any_value::Value::IntValue(i64_of(i, "intValue")?)
    } else if let Some(d) = m.get("doubleValue") {
        any_value::Value::DoubleValue(f64_of(d, "doubleValue")?)
    } else if let Some(a) = m.get("arrayValue") {
        let values = list(obj(a, "arrayValue")?, "values", "arrayValue.values")?
            .iter()
            .map(any_value)
            .collect::<R<_>>()?;
        any_value::Value::ArrayValue(ArrayValue { values })
    } else if let Some(l) = m.get("kvlistValue") {
        let values = key_values(obj(l, "kvlistValue")?, "values")?;
        any_value::Value::KvlistValue(KeyValueList { values })
    } else if let Some(b) = m.get("bytesValue") {
        any_value::Value::BytesValue(base64(
            b.as_str().ok_or(err(F, "bytesValue"))?,
            "bytesValue",
        )?)
    } else {
        return Ok(AnyValue { value: None });
    };
    Ok(AnyValue { value: Some(value) })
}

fn key_values(m: &Map<String, Value>, key: &str) -> R<Vec<KeyValue>> {
    list(m, key, "attributes")?
        .iter()
        .map(|kv| {
            let kv = obj(kv, "KeyValue")?;
            Ok(KeyValue {
                key: string(kv, "key", "KeyValue.key")?,
                value: match kv.get("value") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(any_value(v)?),
                },
            })
        })
        .collect()
}

fn resource(m: &Map<String, Value>) -> R<Option<Resource>> {
    match m.get("resource") {
        None | Some(Value::Null) => Ok(None),
        Some(r) => {
            let r = obj(r, "resource")?;
            Ok(Some(Resource {
                attributes: key_values(r, "attributes")?,
                dropped_attributes_count: u32_field(
                    r,
                    "droppedAttributesCount",
                    "droppedAttributesCount",
                )?,
                entity_refs: Vec::new(),
            }))
        }
    }
}

fn scope(m: &Map<String, Value>) -> R<Option<InstrumentationScope>> {
    match m.get("scope") {
        None | Some(Value::Null) => Ok(None),
        Some(s) => {
            let s = obj(s, "scope")?;
            Ok(Some(InstrumentationScope {
                name: string(s, "name", "scope.name")?,
                version: string(s, "version", "scope.version")?,
                attributes: key_values(s, "attributes")?,
                dropped_attributes_count: 0,
            }))
        }
    }
}

/// `ExportMetricsServiceRequest` from its JSON form.
pub fn metrics_request(v: &Value) -> R<ExportMetricsServiceRequest> {
    let root = obj(v, "request")?;
    let mut out = ExportMetricsServiceRequest::default();
    for rm in list(root, "resourceMetrics", "resourceMetrics")? {
        let rm = obj(rm, "resourceMetrics")?;
        let mut scopes = Vec::new();
        for sm in list(rm, "scopeMetrics", "scopeMetrics")? {
            let sm = obj(sm, "scopeMetrics")?;
            let metrics = list(sm, "metrics", "metrics")?
                .iter()
                .map(metric_of)
                .collect::<R<_>>()?;
            scopes.push(ScopeMetrics {
                scope: scope(sm)?,
                metrics,
                schema_url: string(sm, "schemaUrl", "schemaUrl")?,
            });
        }
        out.resource_metrics.push(ResourceMetrics {
            resource: resource(rm)?,
            scope_metrics: scopes,
            schema_url: string(rm, "schemaUrl", "schemaUrl")?,
        });
    }
    Ok(out)
}

fn metric_of(v: &Value) -> R<Metric> {
    let m = obj(v, "metric")?;
    let data = if let Some(s) = m.get("sum") {
        let s = obj(s, "sum")?;
        Some(metric::Data::Sum(Sum {
            data_points: number_points(s)?,
            aggregation_temporality: i32_field(
                s,
                "aggregationTemporality",
                "aggregationTemporality",
            )?,
            is_monotonic: s
                .get("isMonotonic")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }))
    } else if let Some(g) = m.get("gauge") {
        Some(metric::Data::Gauge(Gauge {
            data_points: number_points(obj(g, "gauge")?)?,
        }))
    } else if let Some(h) = m.get("histogram") {
        let h = obj(h, "histogram")?;
        Some(metric::Data::Histogram(Histogram {
            data_points: list(h, "dataPoints", "dataPoints")?
                .iter()
                .map(histogram_point)
                .collect::<R<_>>()?,
            aggregation_temporality: i32_field(
                h,
                "aggregationTemporality",
                "aggregationTemporality",
            )?,
        }))
    } else if let Some(h) = m.get("exponentialHistogram") {
        let h = obj(h, "exponentialHistogram")?;
        Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: list(h, "dataPoints", "dataPoints")?
                .iter()
                .map(exp_point)
                .collect::<R<_>>()?,
            aggregation_temporality: i32_field(
                h,
                "aggregationTemporality",
                "aggregationTemporality",
            )?,
        }))
    } else {
        None
    };
    Ok(Metric {
        name: string(m, "name", "metric.name")?,
        description: string(m, "description", "metric.description")?,
        unit: string(m, "unit", "metric.unit")?,
        metadata: key_values(m, "metadata")?,
        data,
    })
}

fn number_points(m: &Map<String, Value>) -> R<Vec<NumberDataPoint>> {
    list(m, "dataPoints", "dataPoints")?
        .iter()
        .map(|p| {
            let p = obj(p, "dataPoint")?;
            let value = if let Some(d) = p.get("asDouble") {
                Some(number_data_point::Value::AsDouble(f64_of(d, "asDouble")?))
            } else if let Some(i) = p.get("asInt") {
                Some(number_data_point::Value::AsInt(i64_of(i, "asInt")?))
            } else {
                None
            };
            Ok(NumberDataPoint {
                attributes: key_values(p, "attributes")?,
                start_time_unix_nano: u64_field(p, "startTimeUnixNano", "startTimeUnixNano")?,
                time_unix_nano: u64_field(p, "timeUnixNano", "timeUnixNano")?,
                exemplars: Vec::new(),
                flags: u32_field(p, "flags", "flags")?,
                value,
            })
        })
        .collect()
}

fn u64_list(m: &Map<String, Value>, key: &str, field: &'static str) -> R<Vec<u64>> {
    list(m, key, field)?
        .iter()
        .map(|v| u64_of(v, field))
        .collect()
}

fn histogram_point(v: &Value) -> R<HistogramDataPoint> {
    let p = obj(v, "dataPoint")?;
    Ok(HistogramDataPoint {
        attributes: key_values(p, "attributes")?,
        start_time_unix_nano: u64_field(p, "startTimeUnixNano", "startTimeUnixNano")?,
        time_unix_nano: u64_field(p, "timeUnixNano", "timeUnixNano")?,
        count: u64_field(p, "count", "count")?,
        sum: opt_f64(p, "sum", "sum")?,
        bucket_counts: u64_list(p, "bucketCounts", "bucketCounts")?,
        explicit_bounds: list(p, "explicitBounds", "explicitBounds")?
            .iter()
            .map(|v| f64_of(v, "explicitBounds"))
            .collect::<R<_>>()?,
        exemplars: Vec::new(),
        flags: u32_field(p, "flags", "flags")?,
        min: opt_f64(p, "min", "min")?,
        max: opt_f64(p, "max", "max")?,
    })
}

fn buckets(
    p: &Map<String, Value>,
    key: &str,
) -> R<Option<exponential_histogram_data_point::Buckets>> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(b) => {
            let b = obj(b, "buckets")?;
            Ok(Some(exponential_histogram_data_point::Buckets {
                offset: i32_field(b, "offset", "buckets.offset")?,
                bucket_counts: u64_list(b, "bucketCounts", "buckets.bucketCounts")?,
            }))
        }
    }
}

fn exp_point(v: &Value) -> R<ExponentialHistogramDataPoint> {
    let p = obj(v, "dataPoint")?;
    Ok(ExponentialHistogramDataPoint {
        attributes: key_values(p, "attributes")?,
        start_time_unix_nano: u64_field(p, "startTimeUnixNano", "startTimeUnixNano")?,
        time_unix_nano: u64_field(p, "timeUnixNano", "timeUnixNano")?,
        count: u64_field(p, "count", "count")?,
        sum: opt_f64(p, "sum", "sum")?,
        scale: i32_field(p, "scale", "scale")?,
        zero_count: u64_field(p, "zeroCount", "zeroCount")?,
        positive: buckets(p, "positive")?,
        negative: buckets(p, "negative")?,
        flags: u32_field(p, "flags", "flags")?,
        exemplars: Vec::new(),
        min: opt_f64(p, "min", "min")?,
        max: opt_f64(p, "max", "max")?,
        zero_threshold: opt_f64(p, "zeroThreshold", "zeroThreshold")?.unwrap_or(0.0),
    })
}

/// `ExportLogsServiceRequest` from its JSON form.
pub fn logs_request(v: &Value) -> R<ExportLogsServiceRequest> {
    let root = obj(v, "request")?;
    let mut out = ExportLogsServiceRequest::default();
    for rl in list(root, "resourceLogs", "resourceLogs")? {
        let rl = obj(rl, "resourceLogs")?;
        let mut scopes = Vec::new();
        for sl in list(rl, "scopeLogs", "scopeLogs")? {
            let sl = obj(sl, "scopeLogs")?;
            let log_records = list(sl, "logRecords", "logRecords")?
                .iter()
                .map(log_record)
                .collect::<R<_>>()?;
            scopes.push(ScopeLogs {
                scope: scope(sl)?,
                log_records,
                schema_url: string(sl, "schemaUrl", "schemaUrl")?,
            });
        }
        out.resource_logs.push(ResourceLogs {
            resource: resource(rl)?,
            scope_logs: scopes,
            schema_url: string(rl, "schemaUrl", "schemaUrl")?,
        });
    }
    Ok(out)
}

fn log_record(v: &Value) -> R<LogRecord> {
    let r = obj(v, "logRecord")?;
    Ok(LogRecord {
        time_unix_nano: u64_field(r, "timeUnixNano", "timeUnixNano")?,
        observed_time_unix_nano: u64_field(r, "observedTimeUnixNano", "observedTimeUnixNano")?,
        severity_number: i32_field(r, "severityNumber", "severityNumber")?,
        severity_text: string(r, "severityText", "severityText")?,
        body: match r.get("body") {
            None | Some(Value::Null) => None,
            Some(b) => Some(any_value(b)?),
        },
        attributes: key_values(r, "attributes")?,
        dropped_attributes_count: u32_field(r, "droppedAttributesCount", "droppedAttributesCount")?,
        flags: u32_field(r, "flags", "flags")?,
        trace_id: hex(r, "traceId", 16, "traceId")?,
        span_id: hex(r, "spanId", 8, "spanId")?,
        event_name: string(r, "eventName", "eventName")?,
    })
}

/// `ExportTraceServiceRequest` from its JSON form: spans keep their name and ids only (the
/// receiver counts spans).
pub fn trace_request(v: &Value) -> R<ExportTraceServiceRequest> {
    let root = obj(v, "request")?;
    let mut out = ExportTraceServiceRequest::default();
    for rs in list(root, "resourceSpans", "resourceSpans")? {
        let rs = obj(rs, "resourceSpans")?;
        let mut scopes = Vec::new();
        for ss in list(rs, "scopeSpans", "scopeSpans")? {
            let ss = obj(ss, "scopeSpans")?;
            let spans = list(ss, "spans", "spans")?
                .iter()
                .map(|s| {
                    let s = obj(s, "span")?;
                    Ok(Span {
                        trace_id: hex(s, "traceId", 16, "traceId")?,
                        span_id: hex(s, "spanId", 8, "spanId")?,
                        parent_span_id: hex(s, "parentSpanId", 8, "parentSpanId")?,
                        name: string(s, "name", "span.name")?,
                        ..Span::default()
                    })
                })
                .collect::<R<_>>()?;
            scopes.push(ScopeSpans {
                scope: scope(ss)?,
                spans,
                schema_url: String::new(),
            });
        }
        out.resource_spans.push(ResourceSpans {
            resource: resource(rs)?,
            scope_spans: scopes,
            schema_url: String::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_hex_and_bytes_base64() {
        let r = log_record(&json!({
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "body": {"bytesValue": "aGVsbG8="},
            "timeUnixNano": "1700000000000000000",
            "severityNumber": 9
        }))
        .unwrap();
        assert_eq!(r.trace_id.len(), 16);
        assert_eq!(r.trace_id[0], 0x5b);
        assert_eq!(r.span_id[7], 0x74);
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(r.severity_number, 9);
        assert_eq!(
            r.body.and_then(|b| b.value),
            Some(any_value::Value::BytesValue(b"hello".to_vec()))
        );
        assert!(log_record(&json!({"traceId": "zz"})).is_err());
        assert!(log_record(&json!({"traceId": "5b8efff798038103d269b633813fc6zz"})).is_err());
    }

    #[test]
    fn integers_as_strings_or_numbers() {
        let p = exp_point(&json!({"count": "3", "zeroCount": 1, "scale": -2,
            "positive": {"offset": "-1", "bucketCounts": [1, "1"]}}))
        .unwrap();
        assert_eq!((p.count, p.zero_count, p.scale), (3, 1, -2));
        let b = p.positive.unwrap();
        assert_eq!((b.offset, b.bucket_counts), (-1, vec![1, 1]));
        assert!(exp_point(&json!({"count": -1})).is_err());
        assert!(exp_point(&json!({"scale": "x"})).is_err());
    }
}
