//! An OTLP/HTTP receiver for loupe-local (`--receiver`): what loupe sends lands here, on one
//! machine, and is summed up for a person and for the report.
//!
//! In: POSTs to `/v1/metrics`, `/v1/logs`, `/v1/traces`, bodies protobuf
//! (`application/x-protobuf`) or OTLP JSON (`application/json`), gzip or plain. Out: 200 with an
//! empty `Export*ServiceResponse` in the request's encoding, 400 for a body that does not decode,
//! 413 past [`MAX_BODY`], 415 for another content type, 404 elsewhere; and a [`ReceiverReport`]:
//! per metric series count, sum, min, max, p50, p99 and shares above thresholds (from the buckets,
//! with [`histogram`], not `crate::aggregate`), counter totals, error events, EMF events, loupe's
//! own `loupe.*` metrics, and log record counts. Everything kept is capped and what is cut counted.

pub mod histogram;
pub mod json;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prost::Message;
use serde::Serialize;
use serde_json::Value;

use crate::export::proto::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use crate::export::proto::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use crate::export::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use crate::export::proto::common::v1::{AnyValue, KeyValue, any_value};
use crate::export::proto::metrics::v1::{
    ExponentialHistogramDataPoint, NumberDataPoint, metric, number_data_point,
};
use histogram::{ExpHistogram, Point};

/// Largest request body, compressed or not, and largest body after gunzip.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
pub const MAX_INFLATED: usize = 32 * 1024 * 1024;
/// Metric series kept; points of further series are counted in `seriesDropped`.
pub const MAX_SERIES: usize = 2000;
/// Error events kept in full; EMF event attribute samples kept.
pub const MAX_ERRORS: usize = 1000;
pub const MAX_SAMPLES: usize = 5;
/// Distinct event names counted.
pub const MAX_EVENT_NAMES: usize = 100;

pub const ERROR_EVENT: &str = "aws.lambda.invocation_error";
pub const EMF_EVENT: &str = "aws.lambda.emf";

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    pub fn from_path(path: &str) -> Option<Signal> {
        match path {
            "/v1/metrics" => Some(Signal::Metrics),
            "/v1/logs" => Some(Signal::Logs),
            "/v1/traces" => Some(Signal::Traces),
            _ => None,
        }
    }
}

/// How a body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a Content-Type header; parameters (`; charset=utf-8`) are ignored.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let base = ct.split(';').next().unwrap_or("").trim();
        if base.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if base.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RejectError {
    #[error("unsupported content type {0:?}")]
    ContentType(String),
    #[error("unsupported content encoding {0:?}")]
    ContentEncoding(String),
    #[error("body larger than the cap")]
    TooLarge,
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("json: {0}")]
    JsonSyntax(#[from] serde_json::Error),
    #[error("json: {0}")]
    Json(#[from] json::JsonError),
}

impl RejectError {
    pub fn status(&self) -> u16 {
        match self {
            RejectError::ContentType(_) | RejectError::ContentEncoding(_) => 415,
            RejectError::TooLarge => 413,
            _ => 400,
        }
    }
}

/// A decoded request.
#[derive(Debug)]
pub enum Decoded {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

/// The body with any gzip undone, at most [`MAX_INFLATED`] bytes.
pub fn inflate(content_encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, RejectError> {
    match content_encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_INFLATED as u64 + 1)
                .read_to_end(&mut out)
                .map_err(RejectError::Gzip)?;
            if out.len() > MAX_INFLATED {
                return Err(RejectError::TooLarge);
            }
            Ok(out)
        }
        Some(other) => Err(RejectError::ContentEncoding(other.to_string())),
    }
}

/// Decodes one request body of a signal.
pub fn decode(
    signal: Signal,
    encoding: Encoding,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<Decoded, RejectError> {
    let raw = inflate(content_encoding, body)?;
    Ok(match encoding {
        Encoding::Protobuf => match signal {
            Signal::Metrics => Decoded::Metrics(ExportMetricsServiceRequest::decode(&raw[..])?),
            Signal::Logs => Decoded::Logs(ExportLogsServiceRequest::decode(&raw[..])?),
            Signal::Traces => Decoded::Traces(ExportTraceServiceRequest::decode(&raw[..])?),
        },
        Encoding::Json => {
            let v: Value = serde_json::from_slice(&raw)?;
            match signal {
                Signal::Metrics => Decoded::Metrics(json::metrics_request(&v)?),
                Signal::Logs => Decoded::Logs(json::logs_request(&v)?),
                Signal::Traces => Decoded::Traces(json::trace_request(&v)?),
            }
        }
    })
}

/// The empty success answer of a signal in an encoding.
pub fn empty_response(signal: Signal, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => b"{}".to_vec(),
        Encoding::Protobuf => match signal {
            Signal::Metrics => ExportMetricsServiceResponse::default().encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse::default().encode_to_vec(),
            Signal::Traces => ExportTraceServiceResponse::default().encode_to_vec(),
        },
    }
}

/// An attribute value as text: strings bare, everything else as JSON-ish text.
pub fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => format!("<{} bytes>", b.len()),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| value_text(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

/// The first of `keys` present in `attrs`.
fn pick(attrs: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| attrs.get(*k).cloned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Sum,
    Gauge,
    Histogram,
    ExponentialHistogram,
    Summary,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    name: String,
    kind: Kind,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct SeriesState {
    unit: String,
    points: u64,
    /// Sums and gauges: delta total, or latest cumulative / gauge value with its time.
    value: f64,
    value_time: u64,
    /// Histograms (explicit buckets): count, sum, min, max only.
    hist_count: u64,
    hist_sum: f64,
    hist_min: Option<f64>,
    hist_max: Option<f64>,
    exp: Option<ExpHistogram>,
    /// A cumulative exponential histogram keeps its latest point only.
    exp_time: u64,
    bad_points: u64,
}

const CUMULATIVE: i32 = 2;

/// Everything the receiver kept.
#[derive(Debug, Default)]
pub struct Store {
    requests: BTreeMap<&'static str, u64>,
    rejected: u64,
    series: BTreeMap<SeriesKey, SeriesState>,
    series_dropped: u64,
    bad_points: u64,
    log_records: u64,
    events: BTreeMap<String, u64>,
    event_names_dropped: u64,
    errors: Vec<ErrorEvent>,
    errors_dropped: u64,
    emf_samples: Vec<BTreeMap<String, String>>,
    spans: u64,
}

/// One `aws.lambda.invocation_error` event.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEvent {
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

impl Store {
    pub fn rejected(&mut self) {
        self.rejected += 1;
    }

    pub fn add(&mut self, d: &Decoded) {
        match d {
            Decoded::Metrics(m) => self.add_metrics(m),
            Decoded::Logs(l) => self.add_logs(l),
            Decoded::Traces(t) => self.add_traces(t),
        }
    }

    fn slot(&mut self, key: SeriesKey, unit: &str) -> Option<&mut SeriesState> {
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            self.series_dropped += 1;
            return None;
        }
        let s = self.series.entry(key).or_default();
        if s.unit.is_empty() {
            s.unit = unit.to_string();
        }
        s.points += 1;
        Some(s)
    }

    pub fn add_metrics(&mut self, req: &ExportMetricsServiceRequest) {
        *self.requests.entry("metrics").or_insert(0) += 1;
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    self.add_metric(m);
                }
            }
        }
    }

    fn add_metric(&mut self, m: &crate::export::proto::metrics::v1::Metric) {
        let key = |kind, attrs: &[KeyValue]| SeriesKey {
            name: m.name.clone(),
            kind,
            attributes: attr_map(attrs),
        };
        match &m.data {
            Some(metric::Data::Sum(s)) => {
                for p in &s.data_points {
                    let cumulative = s.aggregation_temporality == CUMULATIVE;
                    if let Some(slot) = self.slot(key(Kind::Sum, &p.attributes), &m.unit) {
                        number_point(slot, p, cumulative);
                    }
                }
            }
            Some(metric::Data::Gauge(g)) => {
                for p in &g.data_points {
                    if let Some(slot) = self.slot(key(Kind::Gauge, &p.attributes), &m.unit) {
                        number_point(slot, p, true);
                    }
                }
            }
            Some(metric::Data::Histogram(h)) => {
                for p in &h.data_points {
                    let cumulative = h.aggregation_temporality == CUMULATIVE;
                    if let Some(s) = self.slot(key(Kind::Histogram, &p.attributes), &m.unit) {
                        if cumulative {
                            s.hist_count = 0;
                            s.hist_sum = 0.0;
                            s.hist_min = None;
                            s.hist_max = None;
                        }
                        s.hist_count = s.hist_count.saturating_add(p.count);
                        s.hist_sum += p.sum.unwrap_or(0.0);
                        s.hist_min = min_opt(s.hist_min, p.min);
                        s.hist_max = max_opt(s.hist_max, p.max);
                    }
                }
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                for p in &h.data_points {
                    let cumulative = h.aggregation_temporality == CUMULATIVE;
                    let k = key(Kind::ExponentialHistogram, &p.attributes);
                    let bad = match self.slot(k, &m.unit) {
                        Some(s) => exp_point(s, p, cumulative),
                        None => false,
                    };
                    if bad {
                        self.bad_points += 1;
                    }
                }
            }
            Some(metric::Data::Summary(s)) => {
                for p in &s.data_points {
                    if let Some(slot) = self.slot(key(Kind::Summary, &p.attributes), &m.unit) {
                        slot.hist_count = slot.hist_count.saturating_add(p.count);
                        slot.hist_sum += p.sum;
                    }
                }
            }
            None => self.bad_points += 1,
        }
    }

    pub fn add_logs(&mut self, req: &ExportLogsServiceRequest) {
        *self.requests.entry("logs").or_insert(0) += 1;
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    self.log_records += 1;
                    let name = r.event_name.as_str();
                    if self.events.contains_key(name) || self.events.len() < MAX_EVENT_NAMES {
                        *self.events.entry(name.to_string()).or_insert(0) += 1;
                    } else {
                        self.event_names_dropped += 1;
                    }
                    if name == ERROR_EVENT {
                        if self.errors.len() < MAX_ERRORS {
                            self.errors.push(error_event(&r.attributes));
                        } else {
                            self.errors_dropped += 1;
                        }
                    } else if name == EMF_EVENT && self.emf_samples.len() < MAX_SAMPLES {
                        self.emf_samples.push(attr_map(&r.attributes));
                    }
                }
            }
        }
    }

    pub fn add_traces(&mut self, req: &ExportTraceServiceRequest) {
        *self.requests.entry("traces").or_insert(0) += 1;
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                self.spans += ss.spans.len() as u64;
            }
        }
    }

    /// What was kept, with shares above `thresholds` for every histogram series.
    pub fn report(&self, thresholds: &[f64]) -> ReceiverReport {
        let mut metrics = Vec::new();
        let mut sums = Vec::new();
        let mut own = Vec::new();
        for (k, s) in &self.series {
            let entry = series_entry(k, s, thresholds);
            if k.name.starts_with("loupe.") {
                own.push(entry);
            } else if matches!(k.kind, Kind::Sum | Kind::Gauge) {
                sums.push(entry);
            } else {
                metrics.push(entry);
            }
        }
        ReceiverReport {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            rejected_requests: self.rejected,
            histograms: metrics,
            sums,
            loupe_metrics: own,
            series_dropped: self.series_dropped,
            bad_points: self.bad_points,
            log_records: self.log_records,
            events: self.events.clone(),
            event_names_dropped: self.event_names_dropped,
            errors: self.errors.clone(),
            errors_dropped: self.errors_dropped,
            emf_events: self.events.get(EMF_EVENT).copied().unwrap_or(0),
            emf_samples: self.emf_samples.clone(),
            spans: self.spans,
        }
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn number_point(s: &mut SeriesState, p: &NumberDataPoint, latest: bool) {
    let v = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => {
            s.bad_points += 1;
            return;
        }
    };
    if latest {
        if p.time_unix_nano >= s.value_time {
            s.value = v;
            s.value_time = p.time_unix_nano;
        }
    } else {
        s.value += v;
    }
}

/// Merges one point; true when it could not be used.
fn exp_point(s: &mut SeriesState, p: &ExponentialHistogramDataPoint, latest: bool) -> bool {
    let point = Point {
        scale: p.scale,
        zero_count: p.zero_count,
        positive_offset: p.positive.as_ref().map_or(0, |b| b.offset),
        positive: p
            .positive
            .as_ref()
            .map(|b| b.bucket_counts.clone())
            .unwrap_or_default(),
        negative_offset: p.negative.as_ref().map_or(0, |b| b.offset),
        negative: p
            .negative
            .as_ref()
            .map(|b| b.bucket_counts.clone())
            .unwrap_or_default(),
        count: p.count,
        sum: p.sum,
        min: p.min,
        max: p.max,
    };
    if latest {
        if p.time_unix_nano < s.exp_time {
            return false;
        }
        s.exp_time = p.time_unix_nano;
        s.exp = None;
    }
    let h = s.exp.get_or_insert_with(ExpHistogram::default);
    if h.merge(&point).is_err() {
        s.bad_points += 1;
        return true;
    }
    false
}

fn error_event(attrs: &[KeyValue]) -> ErrorEvent {
    let a = attr_map(attrs);
    ErrorEvent {
        request_id: pick(&a, &["faas.invocation_id"]),
        user_id: pick(&a, &["enduser.id", "user.id", "userId"]),
        status: pick(
            &a,
            &["faas.invocation.status", "aws.lambda.status", "status"],
        ),
        error_type: pick(&a, &["error.type", "aws.lambda.error_type", "errorType"]),
        attributes: a,
    }
}

/// One metric series in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesEntry {
    pub name: String,
    pub kind: Kind,
    pub unit: String,
    pub attributes: BTreeMap<String, String>,
    pub points: u64,
    /// Sums: the total (delta) or latest (cumulative); gauges: latest.
    pub value: Option<f64>,
    pub count: Option<u64>,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// `(threshold, share of values above it)`.
    pub share_above: Vec<(f64, f64)>,
    pub bad_points: u64,
}

fn series_entry(k: &SeriesKey, s: &SeriesState, thresholds: &[f64]) -> SeriesEntry {
    let mut e = SeriesEntry {
        name: k.name.clone(),
        kind: k.kind,
        unit: s.unit.clone(),
        attributes: k.attributes.clone(),
        points: s.points,
        value: None,
        count: None,
        sum: None,
        min: None,
        max: None,
        p50: None,
        p99: None,
        share_above: Vec::new(),
        bad_points: s.bad_points,
    };
    match k.kind {
        Kind::Sum | Kind::Gauge => e.value = Some(s.value),
        Kind::Histogram | Kind::Summary => {
            e.count = Some(s.hist_count);
            e.sum = Some(s.hist_sum);
            e.min = s.hist_min;
            e.max = s.hist_max;
        }
        Kind::ExponentialHistogram => {
            if let Some(h) = &s.exp {
                e.count = Some(h.count());
                e.sum = Some(h.sum());
                e.min = h.min();
                e.max = h.max();
                e.p50 = h.quantile(0.5);
                e.p99 = h.quantile(0.99);
                e.share_above = thresholds
                    .iter()
                    .filter_map(|&t| h.share_above(t).map(|s| (t, s)))
                    .collect();
            }
        }
    }
    e
}

/// The `receiver` section of loupe-local's report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverReport {
    /// Accepted requests per signal.
    pub requests: BTreeMap<String, u64>,
    pub rejected_requests: u64,
    pub histograms: Vec<SeriesEntry>,
    pub sums: Vec<SeriesEntry>,
    pub loupe_metrics: Vec<SeriesEntry>,
    pub series_dropped: u64,
    pub bad_points: u64,
    pub log_records: u64,
    /// Log records per `event_name` (`""` for plain logs).
    pub events: BTreeMap<String, u64>,
    pub event_names_dropped: u64,
    pub errors: Vec<ErrorEvent>,
    pub errors_dropped: u64,
    pub emf_events: u64,
    pub emf_samples: Vec<BTreeMap<String, String>>,
    pub spans: u64,
}

impl ReceiverReport {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
}

fn attrs_text(a: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// The receiver's part of the stdout summary.
pub fn summary(r: &ReceiverReport) -> String {
    let mut out = String::new();
    let n = r.total_requests();
    let by: Vec<String> = r.requests.iter().map(|(k, v)| format!("{k} {v}")).collect();
    out.push_str(&format!(
        "receiver: {n} OTLP requests received ({}), {} rejected\n",
        if by.is_empty() {
            "none".into()
        } else {
            by.join(", ")
        },
        r.rejected_requests
    ));
    for e in &r.histograms {
        let shares: Vec<String> = e
            .share_above
            .iter()
            .map(|(t, s)| format!(">{t}: {:.1}%", s * 100.0))
            .collect();
        out.push_str(&format!(
            "  {} {{{}}} [{}]: count {}, sum {}, min {}, max {}, p50 {}, p99 {}{}\n",
            e.name,
            attrs_text(&e.attributes),
            e.unit,
            e.count.unwrap_or(0),
            num(e.sum),
            num(e.min),
            num(e.max),
            num(e.p50),
            num(e.p99),
            if shares.is_empty() {
                String::new()
            } else {
                format!(", {}", shares.join(", "))
            }
        ));
    }
    for e in &r.sums {
        out.push_str(&format!(
            "  {} {{{}}}: {}\n",
            e.name,
            attrs_text(&e.attributes),
            num(e.value)
        ));
    }
    if !r.loupe_metrics.is_empty() {
        out.push_str("  loupe's own metrics:\n");
        for e in &r.loupe_metrics {
            let v = e.value.or(e.sum);
            out.push_str(&format!(
                "    {} {{{}}}: {}\n",
                e.name,
                attrs_text(&e.attributes),
                num(v)
            ));
        }
    }
    out.push_str(&format!(
        "  log records: {} ({} EMF events, {} error events, {} spans)\n",
        r.log_records,
        r.emf_events,
        r.errors.len() as u64 + r.errors_dropped,
        r.spans
    ));
    for e in &r.errors {
        out.push_str(&format!(
            "  error: request {} user {} status {} type {}\n",
            e.request_id.as_deref().unwrap_or("-"),
            e.user_id.as_deref().unwrap_or("-"),
            e.status.as_deref().unwrap_or("-"),
            e.error_type.as_deref().unwrap_or("-"),
        ));
    }
    for s in &r.emf_samples {
        out.push_str(&format!("  emf event: {}\n", attrs_text(s)));
    }
    if r.series_dropped + r.bad_points + r.errors_dropped + r.event_names_dropped > 0 {
        out.push_str(&format!(
            "  cut: {} series points, {} bad points, {} error events, {} event names\n",
            r.series_dropped, r.bad_points, r.errors_dropped, r.event_names_dropped
        ));
    }
    out
}

/// The status and body answering one request.
pub fn answer(
    store: &Mutex<Store>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> (u16, &'static str, Vec<u8>) {
    let Some(signal) = Signal::from_path(path) else {
        return (404, "text/plain", b"not found".to_vec());
    };
    if method != "POST" {
        return (405, "text/plain", b"POST only".to_vec());
    }
    let result = Encoding::from_content_type(content_type.unwrap_or(""))
        .ok_or_else(|| RejectError::ContentType(content_type.unwrap_or("").to_string()))
        .and_then(|enc| decode(signal, enc, content_encoding, body).map(|d| (enc, d)));
    // A poisoned lock only means a panic elsewhere; the data is still counts.
    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok((enc, d)) => {
            store.add(&d);
            (200, enc.content_type(), empty_response(signal, enc))
        }
        Err(e) => {
            store.rejected();
            (e.status(), "text/plain", e.to_string().into_bytes())
        }
    }
}

/// A running receiver: its address and what it kept.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub store: Arc<Mutex<Store>>,
    /// Requests answered 200 so far.
    accepted: tokio::sync::watch::Receiver<u64>,
}

impl Receiver {
    /// Waits until at least `n` requests were accepted, or `timeout` passed; returns the count.
    pub async fn wait_accepted(&self, n: u64, timeout: std::time::Duration) -> u64 {
        let mut rx = self.accepted.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n)).await;
        *rx.borrow()
    }

    pub fn report(&self, thresholds: &[f64]) -> ReceiverReport {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report(thresholds)
    }
}

/// Serves OTLP/HTTP on 127.0.0.1:`port` (0: any free port) until the runtime stops.
pub async fn serve(port: u16) -> std::io::Result<Receiver> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let store = Arc::new(Mutex::new(Store::default()));
    let kept = store.clone();
    let (tx, accepted) = tokio::sync::watch::channel(0u64);
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req| handle(req, store.clone(), tx.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Receiver {
        addr,
        store: kept,
        accepted,
    })
}

fn header(h: &hyper::HeaderMap, name: hyper::header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(
    req: Request<Incoming>,
    store: Arc<Mutex<Store>>,
    accepted: Arc<tokio::sync::watch::Sender<u64>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let ct = header(req.headers(), hyper::header::CONTENT_TYPE);
    let ce = header(req.headers(), hyper::header::CONTENT_ENCODING);
    let (status, ctype, body) = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => answer(
            &store,
            &method,
            &path,
            ct.as_deref(),
            ce.as_deref(),
            &b.to_bytes(),
        ),
        Err(_) => {
            store.lock().unwrap_or_else(|p| p.into_inner()).rejected();
            (413, "text/plain", b"body larger than the cap".to_vec())
        }
    };
    if status == 200 {
        accepted.send_modify(|c| *c += 1);
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests;
