//! The log and metric pipeline: one task that turns `function` and `extension` lines into
//! aggregated series, events and counters, and hands them out as a [`Batch`].
//!
//! In: [`LogLine`]s from the listener's queue ([`LogReceiver`]), and drain requests (with the
//! tracker's completed invocations) over a small bounded command channel. Out: a [`Batch`] per
//! drain, through [`PipelineHandle`], which implements [`batch::Source`].
//!
//! The task owns the [`Aggregator`], the pending events, the request id → user id map and the
//! counters; the state is [`Pipeline`], plain data with an injected clock, tested on its own.
//! The listener never waits on it: it only `try_send`s into the bounded log queue.
//!
//! Per `function` line:
//! * **Request id**: the record's own (Node `ts\treqid\tLEVEL\t...` or Python
//!   `[LEVEL]\tts\treqid\t...` prefix, JSON `requestId`, or for EMF lines a
//!   `function_request_id` (Powertools) / `awsRequestId` property), else the request of the latest
//!   `platform.start` before the line in the stream. On Managed Instances invocations overlap,
//!   so only the record's own id counts there. The trace id is that start's, when the line
//!   belongs to it.
//! * **Severity**: the prefix's level or JSON `level`, else unspecified.
//! * **EMF**: a valid line feeds the aggregator and becomes one `Emf` event without a body: its
//!   attributes are the line's root members but `_aws` (properties, then dimension values, then
//!   metric values, each key once) plus `aws.emf.metric_names`, so nothing travels twice; a
//!   rejected line is counted per reason
//!   (`loupe.emf.rejected{reason}`) and still travels as a `Log` event with the attribute
//!   `loupe.emf.rejected` (the reason codes, comma-separated).
//! * **Log lines**: the body is the line as printed (without its trailing newline), or, for a
//!   JSON record, the record object itself, whole: no field is lifted into attributes (the
//!   backend can index the body), so nothing is duplicated or re-serialised.
//! * **User id**: the first of `config.user_id_keys` found among the EMF properties (else its
//!   dimensions) or the JSON record's fields (or those of its `message` object) is set as
//!   `enduser.id` and remembered per request id (bounded, oldest out) for the invocation error
//!   events.
//!
//! `extension` lines become `Log` events with `aws.lambda.extension_log = true`; they are never
//! read as EMF.
//!
//! Bounds: pending events are capped in count and bytes between drains (the newest is dropped
//! and counted in `loupe.events.dropped{reason}`); one event's body is capped at
//! [`MAX_BODY_BYTES`] (truncated, flagged `loupe.truncated`, counted in `loupe.events.truncated`);
//! the aggregator caps its series (`Config::max_series`) and what it refuses is counted in
//! `loupe.series.refused{reason}`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aggregate::Aggregator;
use crate::batch::{self, Batch, Counter};
use crate::config::Config;
use crate::emf::{self, ParseOptions, Reason, Record, Samples, Verdict};
use crate::event::{AttrValue, Body, Event, Kind, Severity};
use crate::invocation::Drained;
use crate::lambda::events::{LogLine, LogRecord, LogSource};
use crate::lambda::listener::LogReceiver;
use crate::lambda::stats::Stats;
use crate::platform;
use crate::trace;

/// Events kept between two drains, at most.
pub const MAX_PENDING_EVENTS: usize = 10_000;
/// Approximate bytes of events kept between two drains, at most.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// A single event's body beyond this is truncated.
pub const MAX_BODY_BYTES: usize = 256 << 10;
/// Request ids whose user id is remembered.
pub const MAX_USER_IDS: usize = 1_024;
/// Spans per drain: invocations past it give no span (counted in `loupe.spans.dropped`).
pub const MAX_SPANS: usize = 4_096;
/// A user id longer than this is not remembered (nor attached as `enduser.id`).
const MAX_USER_ID_BYTES: usize = 256;
/// A request id longer than this in a record is not taken as one.
const MAX_REQUEST_ID_BYTES: usize = 128;
/// Distinct metric names listed on one EMF event.
const MAX_METRIC_NAMES: usize = 100;
/// Lines handled in a row before a waiting drain request gets its turn.
const MAX_LINE_STREAK: usize = 8_192;
/// Depth of the command channel.
const COMMAND_DEPTH: usize = 16;
/// EMF properties that carry the Lambda request id when no prefix does. A plain `requestId`
/// property is not one of them: applications use it for their own (HTTP) request id, which stays
/// a property beside `faas.invocation_id`.
const REQUEST_ID_PROPERTIES: &[&str] = &["function_request_id", "awsRequestId"];

/// Milliseconds since the epoch.
pub type Clock = Box<dyn Fn() -> i64 + Send>;

/// The system clock.
pub fn system_clock() -> Clock {
    Box::new(crate::clock::now_ms)
}

/// Caps of the pending events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_body_bytes: usize,
    pub max_user_ids: usize,
    /// Spans kept per drain (one per invocation).
    pub max_spans: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_events: MAX_PENDING_EVENTS,
            max_bytes: MAX_PENDING_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            max_user_ids: MAX_USER_IDS,
            max_spans: MAX_SPANS,
        }
    }
}

/// Counters since the last drain.
#[derive(Clone, Debug)]
struct Counts {
    lines: u64,
    bytes: u64,
    extension_lines: u64,
    emf_accepted: u64,
    rejected: [u64; Reason::ALL.len()],
    warnings: [u64; Reason::ALL.len()],
    dropped_count: u64,
    dropped_bytes: u64,
    truncated: u64,
    spans_dropped: u64,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            lines: 0,
            bytes: 0,
            extension_lines: 0,
            emf_accepted: 0,
            rejected: [0; Reason::ALL.len()],
            warnings: [0; Reason::ALL.len()],
            dropped_count: 0,
            dropped_bytes: 0,
            truncated: 0,
            spans_dropped: 0,
        }
    }
}

/// Request id → user id, oldest out.
#[derive(Debug, Default)]
struct UserIds {
    map: HashMap<String, String>,
    order: VecDeque<String>,
    cap: usize,
}

impl UserIds {
    fn insert(&mut self, request_id: &str, user: &str) {
        if let Some(u) = self.map.get_mut(request_id) {
            if u != user {
                *u = user.to_string();
            }
            return;
        }
        if self.cap == 0 {
            return;
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(request_id.to_string(), user.to_string());
        self.order.push_back(request_id.to_string());
    }

    fn get(&self, request_id: &str) -> Option<&str> {
        self.map.get(request_id).map(String::as_str)
    }
}

/// The pipeline's state: no I/O, the clock injected.
pub struct Pipeline {
    aggregator: Aggregator,
    events: Vec<Event>,
    event_bytes: usize,
    users: UserIds,
    user_id_keys: Vec<String>,
    /// The name of invocation spans (the function's), or `None` when spans are off.
    span_name: Option<String>,
    managed_instances: bool,
    limits: Limits,
    clock: Clock,
    counts: Counts,
    stats: Option<Arc<Stats>>,
}

impl Pipeline {
    pub fn new(config: &Config, clock: Clock) -> Pipeline {
        Pipeline::with_limits(config, clock, Limits::default())
    }

    pub fn with_limits(config: &Config, clock: Clock, limits: Limits) -> Pipeline {
        Pipeline {
            aggregator: Aggregator::new(config.max_series),
            events: Vec::new(),
            event_bytes: 0,
            users: UserIds {
                cap: limits.max_user_ids,
                ..UserIds::default()
            },
            user_id_keys: config.user_id_keys.clone(),
            span_name: config.traces.then(|| {
                config
                    .lambda
                    .function_name
                    .clone()
                    .unwrap_or_else(|| "invocation".to_string())
            }),
            managed_instances: config.lambda.is_managed_instances(),
            limits,
            clock,
            counts: Counts::default(),
            stats: None,
        }
    }

    /// Counts consumed lines and bytes into the intake's `stats` (the flush control ships the
    /// intake's own counters; batches from here do not repeat them).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Pipeline {
        self.stats = Some(stats);
        self
    }

    /// Events waiting for the next drain.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The user id remembered for a request.
    pub fn user_of(&self, request_id: &str) -> Option<&str> {
        self.users.get(request_id)
    }

    /// Handles one line from the listener.
    pub fn line(&mut self, line: LogLine) {
        self.counts.lines += 1;
        self.counts.bytes += line.size as u64;
        if let Some(stats) = &self.stats {
            stats.log_line_consumed(line.size);
        }
        match line.source {
            LogSource::Function => self.function_line(line),
            LogSource::Extension => self.extension_line(line),
        }
    }

    fn function_line(&mut self, line: LogLine) {
        let LogLine {
            time_ms: record_ms,
            record,
            size,
            request_id: start_id,
            trace_id: start_trace,
            ..
        } = line;
        let opts = ParseOptions {
            now_ms: (self.clock)(),
            record_time_ms: record_ms,
            check_timestamp: true,
            strict_dimensions: false,
        };

        // Everything borrowed from the record becomes owned inside this block, so the record
        // itself can move into the event's body afterwards.
        let (own_id, severity, user, kind, attributes) = {
            let (own_id, level, parsed) = match &record {
                LogRecord::Text(t) => {
                    let p = text_prefix(t);
                    (p.request_id, p.level, Record::Text(t))
                }
                LogRecord::Json(v) => (
                    json_str(v, "requestId"),
                    json_str(v, "level"),
                    Record::Json(v),
                ),
            };
            let mut own_id = own_id.filter(|id| valid_request_id(id)).map(str::to_string);
            let severity = level.map_or(Severity::Unspecified, Severity::parse);
            let mut attributes: Vec<(String, AttrValue)> = Vec::new();
            let (kind, user) = match emf::parse(parsed, &opts) {
                Verdict::Log => {
                    let user = match &record {
                        LogRecord::Json(v) => json_user(v, &self.user_id_keys),
                        LogRecord::Text(_) => None,
                    };
                    (Kind::Log, user)
                }
                Verdict::Rejected(reasons) => {
                    let mut codes = String::new();
                    for r in &reasons {
                        // One slot per reason; a reason's discriminant is its position in
                        // `Reason::ALL` (declaration order), so the index is in bounds.
                        self.counts.rejected[*r as usize] += 1;
                        if !codes.is_empty() {
                            codes.push(',');
                        }
                        codes.push_str(r.as_str());
                    }
                    attributes.push(("loupe.emf.rejected".into(), AttrValue::Str(codes)));
                    let user = match &record {
                        LogRecord::Json(v) => json_user(v, &self.user_id_keys),
                        LogRecord::Text(_) => None,
                    };
                    (Kind::Log, user)
                }
                Verdict::Emf(emf_line) => {
                    self.counts.emf_accepted += 1;
                    self.aggregator.add_line(&emf_line);
                    let props = &emf_line.properties;
                    // A property first; a user id used as a dimension counts too.
                    let user = self.user_id_keys.iter().find_map(|k| {
                        props
                            .iter()
                            .find(|(p, _)| p.as_ref() == k.as_str())
                            .and_then(|(_, v)| user_string(v))
                            .or_else(|| {
                                emf_line.points.iter().find_map(|p| {
                                    p.dimensions
                                        .iter()
                                        .find(|(d, v)| d.as_ref() == k.as_str() && !v.is_empty())
                                        .map(|(_, v)| v.to_string())
                                        .filter(|v| v.len() <= MAX_USER_ID_BYTES)
                                })
                            })
                    });
                    if own_id.is_none() {
                        own_id = REQUEST_ID_PROPERTIES.iter().find_map(|k| {
                            props
                                .iter()
                                .find(|(p, _)| p.as_ref() == *k)
                                .and_then(|(_, v)| v.as_str())
                                .filter(|id| valid_request_id(id))
                                .map(str::to_string)
                        });
                    }
                    // The dimension values and metric values, once per key (at most
                    // MAX_METRIC_NAMES of each): with the properties they are every root member
                    // of the line but `_aws`, so the event needs no body (the line would carry
                    // all of it a second time).
                    let mut dims: Vec<(&str, &str)> = Vec::new();
                    let mut metrics: Vec<(&str, &Samples)> = Vec::new();
                    for p in &emf_line.points {
                        for (k, v) in &p.dimensions {
                            if dims.len() < MAX_METRIC_NAMES && !dims.iter().any(|(d, _)| d == k) {
                                dims.push((k, v));
                            }
                        }
                        let name = p.name.as_ref();
                        if metrics.len() < MAX_METRIC_NAMES
                            && !metrics.iter().any(|(n, _)| *n == name)
                        {
                            metrics.push((name, &p.samples));
                        }
                    }
                    let names = Value::Array(
                        metrics
                            .iter()
                            .map(|(n, _)| Value::String(n.to_string()))
                            .collect(),
                    );
                    // A key both a dimension and a metric (odd, but valid EMF) is listed once,
                    // as the dimension; the metric keeps its name in `aws.emf.metric_names`.
                    metrics.retain(|(n, _)| !dims.iter().any(|(d, _)| d == n));
                    let mut warnings = String::new();
                    for w in &emf_line.warnings {
                        // In bounds, as for `rejected` above.
                        self.counts.warnings[*w as usize] += 1;
                        if !warnings.is_empty() {
                            warnings.push(',');
                        }
                        warnings.push_str(w.as_str());
                    }
                    // Sized once: events wait for the drain by the thousand.
                    attributes.reserve_exact(
                        emf_line.properties.len()
                            + dims.len()
                            + metrics.len()
                            + 1
                            + usize::from(!warnings.is_empty())
                            + usize::from(user.is_some()),
                    );
                    for (k, v) in emf_line.properties {
                        attributes.push((k.into_owned(), AttrValue::from(v)));
                    }
                    for (k, v) in dims {
                        attributes.push((k.to_string(), AttrValue::Str(v.to_string())));
                    }
                    for (name, samples) in metrics {
                        attributes.push((name.to_string(), samples_value(samples)));
                    }
                    attributes.push(("aws.emf.metric_names".into(), AttrValue::Json(names)));
                    if !warnings.is_empty() {
                        attributes.push(("loupe.emf.warnings".into(), AttrValue::Str(warnings)));
                    }
                    (Kind::Emf, user)
                }
            };
            (own_id, severity, user, kind, attributes)
        };

        // The record's own id wins; the latest start's only when the invocations cannot overlap.
        let (request_id, trace_id) = match own_id {
            Some(id) => {
                let trace = start_trace.filter(|_| start_id.as_deref() == Some(id.as_str()));
                (Some(Arc::from(id)), trace)
            }
            None if !self.managed_instances => (start_id, start_trace),
            None => (None, None),
        };
        let mut event = Event::new(
            kind,
            record_ms.map_or_else(|| ms_to_ns((self.clock)()), ms_to_ns),
        );
        event.severity = severity;
        event.attributes = attributes;
        if let Some(user) = user {
            if let Some(id) = &request_id {
                self.users.insert(id, &user);
            }
            event
                .attributes
                .push(("enduser.id".into(), AttrValue::Str(user)));
        }
        event.request_id = request_id;
        event.trace_id = trace_id;
        let body = if kind == Kind::Emf {
            // The attributes hold every member of the line but its `_aws` metadata.
            (0, false)
        } else {
            self.set_body(&mut event, record, size)
        };
        self.push(event, body);
    }

    fn extension_line(&mut self, line: LogLine) {
        self.counts.extension_lines += 1;
        let time = line.time_ms;
        let mut event = Event::new(
            Kind::Log,
            time.map_or_else(|| ms_to_ns((self.clock)()), ms_to_ns),
        );
        if let LogRecord::Json(v) = &line.record {
            event.severity = json_str(v, "level").map_or(Severity::Unspecified, Severity::parse);
        }
        event
            .attributes
            .push(("aws.lambda.extension_log".into(), AttrValue::Bool(true)));
        let body = self.set_body(&mut event, line.record, line.size);
        self.push(event, body);
    }

    /// The record as the body, capped at `max_body_bytes`; returns the body's size estimate
    /// (a JSON body counts as its record's size on the wire, so it is never walked) and whether
    /// it was truncated.
    fn set_body(&mut self, event: &mut Event, record: LogRecord, size: usize) -> (usize, bool) {
        let cap = self.limits.max_body_bytes;
        let (body, truncated) = match record {
            LogRecord::Text(mut t) => {
                let end = t.trim_end_matches(['\n', '\r']).len();
                t.truncate(end);
                let cut = truncate_at_char(&mut t, cap);
                (Body::Text(t), cut)
            }
            LogRecord::Json(v) if size <= cap => (Body::Json(v), false),
            LogRecord::Json(v) => {
                let mut t = v.to_string();
                let cut = truncate_at_char(&mut t, cap);
                (Body::Text(t), cut)
            }
        };
        let bytes = match &body {
            Body::Text(t) => t.len(),
            _ => size,
        };
        event.body = body;
        if truncated {
            event
                .attributes
                .push(("loupe.truncated".into(), AttrValue::Bool(true)));
        }
        (bytes, truncated)
    }

    fn push(&mut self, event: Event, (body_bytes, truncated): (usize, bool)) {
        if self.events.len() >= self.limits.max_events {
            self.counts.dropped_count += 1;
            return;
        }
        let size = event_size(&event, body_bytes);
        if self.event_bytes.saturating_add(size) > self.limits.max_bytes {
            self.counts.dropped_bytes += 1;
            return;
        }
        self.event_bytes += size;
        self.counts.truncated += u64::from(truncated);
        if self.events.len() == self.events.capacity() {
            // Doubling, but never past the cap (a Vec doubled to 16,384 slots for a cap of
            // 10,000 would hold 700 KB for nothing until the drain).
            let room = self.limits.max_events.saturating_sub(self.events.len());
            self.events
                .reserve_exact(self.events.len().clamp(16, 4_096).min(room).max(1));
        }
        self.events.push(event);
    }

    /// Everything gathered since the last drain, with the platform metrics and error events of
    /// `invocations` folded in.
    pub fn drain(&mut self, invocations: Drained) -> Batch {
        let now_ns = ms_to_ns((self.clock)());
        let users = &self.users;
        let user_of = |id: &str| users.get(id).map(str::to_string);
        let folded = platform::fold(&invocations, &user_of, now_ns, &mut self.aggregator);
        let mut events = std::mem::take(&mut self.events);
        self.event_bytes = 0;
        events.extend(folded.events);
        let mut spans = Vec::new();
        if let Some(name) = &self.span_name {
            for inv in &invocations.invocations {
                if spans.len() >= self.limits.max_spans {
                    self.counts.spans_dropped += 1;
                    continue;
                }
                trace::invocation_spans(inv, name, user_of(&inv.request_id).as_deref(), &mut spans);
            }
        }
        let mut counters = folded.counters;
        self.take_counters(&mut counters);
        Batch {
            series: self.aggregator.drain(),
            events,
            counters,
            spans,
        }
    }

    fn take_counters(&mut self, out: &mut Vec<Counter>) {
        let c = std::mem::take(&mut self.counts);
        let reason = |r: &'static str| [("reason", r)];
        Counter::push_nonzero(out, "loupe.log.lines", c.lines, &[]);
        Counter::push_nonzero(out, "loupe.log.bytes", c.bytes, &[]);
        Counter::push_nonzero(out, "loupe.log.extension_lines", c.extension_lines, &[]);
        Counter::push_nonzero(out, "loupe.emf.accepted", c.emf_accepted, &[]);
        for (r, (&rejected, &warned)) in Reason::ALL.iter().zip(c.rejected.iter().zip(&c.warnings))
        {
            Counter::push_nonzero(out, "loupe.emf.rejected", rejected, &reason(r.as_str()));
            Counter::push_nonzero(out, "loupe.emf.warnings", warned, &reason(r.as_str()));
        }
        Counter::push_nonzero(
            out,
            "loupe.events.dropped",
            c.dropped_count,
            &reason("count"),
        );
        Counter::push_nonzero(
            out,
            "loupe.events.dropped",
            c.dropped_bytes,
            &reason("bytes"),
        );
        Counter::push_nonzero(out, "loupe.events.truncated", c.truncated, &[]);
        Counter::push_nonzero(
            out,
            "loupe.spans.dropped",
            c.spans_dropped,
            &reason("count"),
        );

        let refused = self.aggregator.take_refused();
        for (name, n) in &refused.series_cap {
            Counter::push_nonzero(
                out,
                "loupe.series.refused",
                *n,
                &[("reason", "series_cap"), ("metric", name)],
            );
        }
        let cap = refused.series_cap_other;
        Counter::push_nonzero(out, "loupe.series.refused", cap, &reason("series_cap"));
        let budget = refused.key_budget;
        Counter::push_nonzero(out, "loupe.series.refused", budget, &reason("key_budget"));
        let invalid = refused.invalid_samples;
        Counter::push_nonzero(
            out,
            "loupe.series.refused",
            invalid,
            &reason("invalid_samples"),
        );
    }
}

/// What the Node or Python runtime prefix of a Text record says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix<'a> {
    pub request_id: Option<&'a str>,
    pub level: Option<&'a str>,
}

/// Reads a Node (`ts\treqid\tLEVEL\t...`) or Python (`[LEVEL]\tts\treqid\t...`) prefix. A
/// request id of `undefined` (Node, outside a handler) or empty is no request id.
pub fn text_prefix(line: &str) -> Prefix<'_> {
    let mut fields = line.splitn(4, '\t');
    let (Some(a), Some(b), Some(c), Some(_)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Prefix::default();
    };
    if let Some(level) = a.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        if is_level_word(level) && looks_like_timestamp(b) {
            return Prefix {
                request_id: request_id_field(c),
                level: Some(level),
            };
        }
    } else if looks_like_timestamp(a) && is_level_word(c) {
        return Prefix {
            request_id: request_id_field(b),
            level: Some(c),
        };
    }
    Prefix::default()
}

fn request_id_field(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "undefined").then_some(s)
}

fn is_level_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphabetic())
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19
        && b.len() <= 40
        && b.first().is_some_and(u8::is_ascii_digit)
        && b.get(4) == Some(&b'-')
        && b.get(10) == Some(&b'T')
}

/// A request id is short and printable, without spaces.
fn valid_request_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_REQUEST_ID_BYTES && s.bytes().all(|b| b.is_ascii_graphic())
}

fn json_str<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The first user id key found among the record's fields, else among its `message` object's.
fn json_user(v: &Value, keys: &[String]) -> Option<String> {
    let find = |o: &Value| {
        keys.iter()
            .find_map(|k| o.get(k.as_str()).and_then(user_string))
    };
    find(v).or_else(|| v.get("message").filter(|m| m.is_object()).and_then(find))
}

/// A user id value: a non-empty string or a number, not too long.
fn user_string(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= MAX_USER_ID_BYTES).then_some(s)
}

/// Cuts `s` to at most `cap` bytes on a character boundary; `true` if anything was cut.
fn truncate_at_char(s: &mut String, cap: usize) -> bool {
    if s.len() <= cap {
        return false;
    }
    let mut end = cap;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// A metric's values as an attribute: one number as itself, several as an array, the
/// `{Values, Counts}` and `{Max, Min, Sum, Count}` forms as the objects they were written as.
fn samples_value(samples: &Samples) -> AttrValue {
    match samples {
        Samples::One(v) => AttrValue::Float(*v),
        Samples::Values(v) => match v.as_slice() {
            [one] => AttrValue::Float(*one),
            many => AttrValue::Json(Value::from(many.to_vec())),
        },
        Samples::Weighted(w) => {
            let (values, counts): (Vec<f64>, Vec<u64>) = w.iter().copied().unzip();
            AttrValue::Json(serde_json::json!({"Values": values, "Counts": counts}))
        }
        Samples::Stats {
            min,
            max,
            sum,
            count,
        } => {
            AttrValue::Json(serde_json::json!({"Max": max, "Min": min, "Sum": sum, "Count": count}))
        }
    }
}

/// A cheap size estimate for the pending-bytes cap: fixed overhead, body, attributes.
fn event_size(e: &Event, body_bytes: usize) -> usize {
    let attrs: usize = e
        .attributes
        .iter()
        .map(|(k, v)| {
            16 + k.len()
                + match v {
                    AttrValue::Str(s) => s.len(),
                    AttrValue::Json(_) => 64,
                    _ => 8,
                }
        })
        .sum();
    64 + body_bytes + attrs + e.request_id.as_deref().map_or(0, str::len)
}

fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

enum Command {
    Drain {
        invocations: Drained,
        reply: oneshot::Sender<Batch>,
    },
}

/// The handle to the pipeline task: cheap to clone. The task ends when every handle is gone.
#[derive(Clone, Debug)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Drain")
    }
}

impl PipelineHandle {
    /// Everything gathered since the last drain, with `invocations` folded in; an empty batch if
    /// the task is gone or does not answer by `deadline` (what it gathered then stays for the
    /// next drain unless the request already reached it).
    pub async fn drain(&self, invocations: Drained, deadline: Instant) -> Batch {
        let (reply, rx) = oneshot::channel();
        let ask = async {
            self.tx
                .send(Command::Drain { invocations, reply })
                .await
                .ok()?;
            rx.await.ok()
        };
        match tokio::time::timeout_at(deadline, ask).await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                log::warn!("the pipeline task is gone: nothing to drain");
                Batch::default()
            }
            Err(_) => {
                log::warn!("the pipeline did not answer a drain by its deadline");
                Batch::default()
            }
        }
    }
}

impl batch::Source for PipelineHandle {
    async fn drain(&mut self, invocations: Drained, deadline: Instant) -> Batch {
        PipelineHandle::drain(self, invocations, deadline).await
    }
}

/// Starts the pipeline task fed by `logs`, with the system clock; consumed lines are counted
/// into `stats`.
pub fn spawn(
    config: &Config,
    logs: LogReceiver,
    stats: Arc<Stats>,
) -> (PipelineHandle, JoinHandle<()>) {
    spawn_with(
        Pipeline::new(config, system_clock()).with_stats(stats),
        logs,
    )
}

/// Starts the task around a given pipeline state.
pub fn spawn_with(pipeline: Pipeline, logs: LogReceiver) -> (PipelineHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_DEPTH);
    let task = tokio::spawn(run(pipeline, logs, rx));
    (PipelineHandle { tx }, task)
}

async fn run(mut pipeline: Pipeline, mut logs: LogReceiver, mut rx: mpsc::Receiver<Command>) {
    let mut logs_open = true;
    let mut streak = 0usize;
    loop {
        // Lines first, so a drain sees the lines queued before it was asked for; but a long
        // run of lines never holds a drain back for more than one streak.
        if streak >= MAX_LINE_STREAK {
            streak = 0;
            match rx.try_recv() {
                Ok(cmd) => {
                    handle(&mut pipeline, cmd);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        tokio::select! {
            biased;
            line = logs.recv(), if logs_open => match line {
                Some(line) => {
                    streak += 1;
                    pipeline.line(line);
                }
                None => logs_open = false,
            },
            cmd = rx.recv() => match cmd {
                Some(cmd) => {
                    streak = 0;
                    handle(&mut pipeline, cmd);
                }
                None => break,
            },
        }
    }
}

fn handle(pipeline: &mut Pipeline, cmd: Command) {
    match cmd {
        Command::Drain { invocations, reply } => {
            let _ = reply.send(pipeline.drain(invocations));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::{Invocation, ReportInfo};
    use crate::lambda::listener::log_queue;

    /// The fixtures' capture time, so their `_aws.Timestamp`s are inside the window.
    const NOW: i64 = 1_795_497_663_709;
    const R1: &str = "3f1c6b6e-1a2b-4c3d-9e8f-0123456789ab";
    const TRACE: [u8; 16] = [7; 16];

    fn config(managed: bool) -> Config {
        Config::from_lookup(|k| match k {
            "AWS_LAMBDA_INITIALIZATION_TYPE" if managed => {
                Some("lambda-managed-instances".to_string())
            }
            _ => None,
        })
        .0
    }

    fn pipeline(managed: bool) -> Pipeline {
        Pipeline::new(&config(managed), Box::new(|| NOW))
    }

    fn line(record: LogRecord, start: Option<&str>) -> LogLine {
        let size = match &record {
            LogRecord::Text(t) => t.len() + 2,
            LogRecord::Json(v) => v.to_string().len(),
        };
        LogLine {
            time_ms: Some(NOW),
            source: LogSource::Function,
            record,
            size,
            request_id: start.map(Arc::from),
            trace_id: start.map(|_| TRACE),
        }
    }

    fn text(s: &str, start: Option<&str>) -> LogLine {
        line(LogRecord::Text(s.to_string()), start)
    }

    fn json(v: Value, start: Option<&str>) -> LogLine {
        line(LogRecord::Json(v), start)
    }

    fn attr<'a>(e: &'a Event, key: &str) -> Option<&'a AttrValue> {
        e.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn counter(b: &Batch, name: &str, reason: Option<&str>) -> u64 {
        b.counters
            .iter()
            .filter(|c| c.name == name)
            .filter(|c| {
                reason.is_none_or(|r| c.attributes.iter().any(|(k, v)| *k == "reason" && v == r))
            })
            .map(|c| c.value)
            .sum()
    }

    fn emf(metric: &str, value: f64, extra: &str) -> String {
        format!(
            r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"shop","Dimensions":[["service"]],"Metrics":[{{"Name":"{metric}","Unit":"Milliseconds"}}]}}]}},"service":"orders","{metric}":{value}{extra}}}"#
        )
    }

    #[test]
    fn request_ids_from_prefixes_json_and_the_latest_start() {
        let mut p = pipeline(false);
        p.line(text(
            &format!("2026-11-24T05:21:04.582Z\t{R1}\tINFO\thello\n"),
            Some("other"),
        ));
        p.line(text(
            "[ERROR]\t2026-11-24T05:21:04.582Z\tpy-req\tboom\n",
            Some("py-req"),
        ));
        p.line(json(
            serde_json::json!({"level":"INFO","requestId":"json-req","message":"m"}),
            None,
        ));
        p.line(text("print() has no prefix", Some("started")));
        p.line(text(
            "2026-11-24T05:21:04.582Z\tundefined\tINFO\tinit time\n",
            Some("started"),
        ));
        p.line(text("no start yet", None));
        let b = p.drain(Drained::default());
        let got: Vec<(Option<&str>, Option<[u8; 16]>)> = b
            .events
            .iter()
            .map(|e| (e.request_id.as_deref(), e.trace_id))
            .collect();
        assert_eq!(
            got,
            [
                // The record's own id wins; the start's trace belongs to another request.
                (Some(R1), None),
                (Some("py-req"), Some(TRACE)),
                (Some("json-req"), None),
                (Some("started"), Some(TRACE)),
                (Some("started"), Some(TRACE)),
                (None, None),
            ]
        );
    }

    #[test]
    fn managed_instances_use_only_the_records_own_request_id() {
        let mut p = pipeline(true);
        p.line(text("print() has no prefix", Some("started")));
        p.line(text(
            &format!("2026-11-24T05:21:04.582Z\t{R1}\tINFO\thello"),
            Some("started"),
        ));
        p.line(text(
            &emf("Latency", 3.0, r#","function_request_id":"prop-req""#),
            Some("started"),
        ));
        let b = p.drain(Drained::default());
        let ids: Vec<Option<&str>> = b.events.iter().map(|e| e.request_id.as_deref()).collect();
        assert_eq!(ids, [None, Some(R1), Some("prop-req")]);
        assert!(b.events.iter().all(|e| e.trace_id.is_none()));
    }

    #[test]
    fn severity_from_prefix_and_json_level() {
        let mut p = pipeline(false);
        p.line(text("2026-11-24T05:21:04.582Z\tr\tERROR\tbad", None));
        p.line(text(
            "[WARNING]\t2026-11-24T05:21:04.582Z\tr\tcareful",
            None,
        ));
        p.line(json(
            serde_json::json!({"level":"DEBUG","message":"x"}),
            None,
        ));
        p.line(text("plain", None));
        p.line(text("not\ta\tprefix\tat all", None));
        let sev: Vec<Severity> = p
            .drain(Drained::default())
            .events
            .iter()
            .map(|e| e.severity)
            .collect();
        assert_eq!(
            sev,
            [
                Severity::Error,
                Severity::Warn,
                Severity::Debug,
                Severity::Unspecified,
                Severity::Unspecified
            ]
        );
    }

    #[test]
    fn emf_line_feeds_series_and_one_event_with_its_properties() {
        let mut p = pipeline(false);
        let l = emf("Latency", 12.5, r#","userId":"u-1","objectKey":"a/b.txt""#);
        p.line(text(&format!("{l}\n"), Some("r1")));
        p.line(text(&emf("Latency", 7.5, ""), Some("r1")));
        let b = p.drain(Drained::default());
        assert_eq!(b.series.len(), 1);
        let s = &b.series[0];
        assert_eq!((s.key.namespace(), s.key.name()), ("shop", "Latency"));
        assert_eq!(s.histogram.count(), 2);
        assert_eq!(s.histogram.sum(), 20.0);
        assert_eq!(b.events.len(), 2);
        let e = &b.events[0];
        assert_eq!(e.kind, Kind::Emf);
        assert_eq!(e.request_id.as_deref(), Some("r1"));
        // No body: the attributes carry every member of the line but `_aws`, once.
        assert_eq!(e.body, Body::None);
        let keys: Vec<&str> = e.attributes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "userId",
                "objectKey",
                "service",
                "Latency",
                "aws.emf.metric_names",
                "enduser.id"
            ],
            "{l}"
        );
        assert_eq!(attr(e, "userId"), Some(&AttrValue::Str("u-1".into())));
        assert_eq!(
            attr(e, "objectKey"),
            Some(&AttrValue::Str("a/b.txt".into()))
        );
        assert_eq!(attr(e, "enduser.id"), Some(&AttrValue::Str("u-1".into())));
        assert_eq!(
            attr(e, "aws.emf.metric_names"),
            Some(&AttrValue::Json(serde_json::json!(["Latency"])))
        );
        assert_eq!(attr(e, "Latency"), Some(&AttrValue::Float(12.5)));
        assert_eq!(attr(e, "service"), Some(&AttrValue::Str("orders".into())));
        assert_eq!(counter(&b, "loupe.emf.accepted", None), 2);
        assert_eq!(counter(&b, "loupe.log.lines", None), 2);
        assert_eq!(p.user_of("r1"), Some("u-1"));
    }

    #[test]
    fn emf_event_attributes_cover_every_member_once() {
        let mut p = pipeline(false);
        let line = format!(
            r#"{{"_aws":{{"Timestamp":{NOW},"CloudWatchMetrics":[{{"Namespace":"shop","Dimensions":[["service"],["service","route"]],"Metrics":[{{"Name":"Latency"}},{{"Name":"Sizes"}},{{"Name":"Hist"}},{{"Name":"Agg"}}]}}]}},"service":"orders","route":"/buy","Latency":[1,2],"Sizes":{{"Values":[3,4],"Counts":[1,2]}},"Hist":7,"Agg":{{"Max":9,"Min":1,"Sum":10,"Count":2}},"tags":["a"]}}"#
        );
        p.line(text(&line, None));
        let b = p.drain(Drained::default());
        let [e] = b.events.as_slice() else {
            panic!("{:?}", b.events)
        };
        assert_eq!((e.kind, &e.body), (Kind::Emf, &Body::None));
        let keys: Vec<&str> = e.attributes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tags",
                "service",
                "route",
                "Latency",
                "Sizes",
                "Hist",
                "Agg",
                "aws.emf.metric_names"
            ]
        );
        let json = |k| match attr(e, k) {
            Some(AttrValue::Json(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(json("tags"), serde_json::json!(["a"]));
        assert_eq!(json("Latency"), serde_json::json!([1.0, 2.0]));
        assert_eq!(
            json("Sizes"),
            serde_json::json!({"Values": [3.0, 4.0], "Counts": [1, 2]})
        );
        assert_eq!(
            json("Agg"),
            serde_json::json!({"Max": 9.0, "Min": 1.0, "Sum": 10.0, "Count": 2})
        );
        assert_eq!(attr(e, "Hist"), Some(&AttrValue::Float(7.0)));
        assert_eq!(attr(e, "route"), Some(&AttrValue::Str("/buy".into())));
    }

    #[test]
    fn rejected_emf_is_counted_and_still_a_log_event() {
        let mut p = pipeline(false);
        let bad = r#"{"_aws":{"Timestamp":1795497663709,"CloudWatchMetrics":[{"Namespace":"shop","Dimensions":[[]],"Metrics":[{"Name":"Latency","Unit":"Furlongs"}]}]},"Latency":1}"#;
        p.line(text(bad, Some("r1")));
        p.line(text(r#"{"_aws":{"CloudWatchMetrics": oops"#, Some("r1")));
        let b = p.drain(Drained::default());
        assert!(b.series.is_empty());
        assert_eq!(b.events.len(), 2);
        for e in &b.events {
            assert_eq!(e.kind, Kind::Log);
            assert!(
                matches!(attr(e, "loupe.emf.rejected"), Some(AttrValue::Str(s)) if !s.is_empty())
            );
        }
        assert_eq!(
            attr(&b.events[0], "loupe.emf.rejected"),
            Some(&AttrValue::Str("metric_invalid_unit".into()))
        );
        assert_eq!(b.events[0].body, Body::Text(bad.into()));
        assert_eq!(
            counter(&b, "loupe.emf.rejected", Some("metric_invalid_unit")),
            1
        );
        assert_eq!(
            counter(&b, "loupe.emf.rejected", Some("json_parse_error")),
            1
        );
        assert_eq!(counter(&b, "loupe.emf.accepted", None), 0);
    }

    #[test]
    fn json_log_keeps_its_object_and_gives_the_user_to_the_error_event() {
        let mut p = pipeline(false);
        let record = serde_json::json!({
            "timestamp":"2026-11-24T05:21:03Z","level":"ERROR","requestId":"r-err",
            "message":{"text":"payment failed","user_id":"alice"}
        });
        p.line(json(record.clone(), None));
        let mut failed = timed("r-err", "error");
        if let Some(r) = failed.report.as_mut() {
            r.error_type = Some("Runtime.HandlerError".into());
        }
        let b = p.drain(Drained {
            invocations: vec![failed],
            phases: Vec::new(),
        });
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.events[0].body, Body::Json(record));
        assert_eq!(b.events[0].severity, Severity::Error);
        let err = &b.events[1];
        assert_eq!(err.kind, Kind::InvocationError);
        assert_eq!(err.request_id.as_deref(), Some("r-err"));
        assert_eq!(
            attr(err, "enduser.id"),
            Some(&AttrValue::Str("alice".into()))
        );
        assert_eq!(counter(&b, platform::ERRORS, None), 1);
        assert_eq!(counter(&b, platform::INVOCATIONS, None), 1);
        assert!(
            b.series
                .iter()
                .any(|s| s.key.name() == platform::INVOKE_DURATION)
        );
    }

    fn timed(id: &str, status: &str) -> Invocation {
        Invocation {
            request_id: id.into(),
            start: true,
            start_time: Some("2026-11-24T05:21:03.000Z".into()),
            report: Some(ReportInfo {
                status: Some(status.into()),
                error_type: None,
                duration_ms: Some(12.0),
                billed_duration_ms: Some(12),
                memory_size_mb: Some(128),
                max_memory_used_mb: Some(60),
                init_duration_ms: None,
                restore_duration_ms: None,
                spans: Vec::new(),
            }),
            ..Invocation::default()
        }
    }

    #[test]
    fn a_span_per_invocation_with_its_user_and_a_cap() {
        let mut p = pipeline(false);
        p.line(text(
            &emf("Latency", 1.0, r#","userId":"u-9""#),
            Some("r-a"),
        ));
        let b = p.drain(Drained {
            invocations: vec![timed("r-a", "error"), timed("r-b", "success")],
            phases: Vec::new(),
        });
        assert_eq!(b.spans.len(), 2);
        let a = &b.spans[0];
        assert_eq!(a.name, "invocation", "no function name in this config");
        assert!(a.error.is_some());
        let user = a.attributes.iter().find(|(k, _)| k == "enduser.id");
        assert_eq!(user.map(|(_, v)| v), Some(&AttrValue::Str("u-9".into())));
        assert_eq!(b.spans[1].error, None);
        assert_eq!(counter(&b, "loupe.spans.dropped", Some("count")), 0);

        let limits = Limits {
            max_spans: 1,
            ..Limits::default()
        };
        let mut p = Pipeline::with_limits(&config(false), Box::new(|| NOW), limits);
        let b = p.drain(Drained {
            invocations: vec![timed("r-a", "success"), timed("r-b", "success")],
            phases: Vec::new(),
        });
        assert_eq!(b.spans.len(), 1);
        assert_eq!(counter(&b, "loupe.spans.dropped", Some("count")), 1);

        let off = Config::from_lookup(|k| (k == "LOUPE_TRACES").then(|| "false".to_string())).0;
        let mut p = Pipeline::new(&off, Box::new(|| NOW));
        let b = p.drain(Drained {
            invocations: vec![timed("r-a", "success")],
            phases: Vec::new(),
        });
        assert!(b.spans.is_empty());
    }

    #[test]
    fn extension_lines_are_never_read_as_emf() {
        let mut p = pipeline(false);
        let mut l = text(&emf("Latency", 1.0, ""), Some("r1"));
        l.source = LogSource::Extension;
        p.line(l);
        let b = p.drain(Drained::default());
        assert!(b.series.is_empty());
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].kind, Kind::Log);
        assert_eq!(b.events[0].request_id, None);
        assert_eq!(
            attr(&b.events[0], "aws.lambda.extension_log"),
            Some(&AttrValue::Bool(true))
        );
        assert_eq!(counter(&b, "loupe.log.extension_lines", None), 1);
    }

    #[test]
    fn pending_events_are_capped_and_drops_counted() {
        let limits = Limits {
            max_events: 2,
            max_bytes: 1 << 20,
            max_body_bytes: 10,
            max_user_ids: 2,
            max_spans: 1,
        };
        let mut p = Pipeline::with_limits(&config(false), Box::new(|| NOW), limits);
        p.line(text("ééééééé long line", None));
        p.line(text(&emf("Latency", 1.0, ""), None));
        p.line(text(&emf("Latency", 2.0, ""), None));
        assert_eq!(p.events.capacity(), 2, "never sized past the cap");
        let b = p.drain(Drained::default());
        assert_eq!(b.events.len(), 2);
        // 10 bytes cut back to the char boundary before it.
        assert_eq!(b.events[0].body, Body::Text("ééééé".into()));
        assert_eq!(
            attr(&b.events[0], "loupe.truncated"),
            Some(&AttrValue::Bool(true))
        );
        // An EMF event has no body to truncate.
        assert_eq!(attr(&b.events[1], "loupe.truncated"), None);
        assert_eq!(counter(&b, "loupe.events.truncated", None), 1);
        assert_eq!(counter(&b, "loupe.events.dropped", Some("count")), 1);
        // The dropped event's metrics still count.
        assert_eq!(b.series[0].histogram.count(), 2);
        // The counters restart after a drain.
        let b = p.drain(Drained::default());
        assert!(b.is_empty(), "{b:?}");

        let limits = Limits {
            max_events: 100,
            max_bytes: 300,
            ..Limits::default()
        };
        let mut p = Pipeline::with_limits(&config(false), Box::new(|| NOW), limits);
        for _ in 0..3 {
            p.line(text(&"x".repeat(100), None));
        }
        let b = p.drain(Drained::default());
        assert_eq!(b.events.len(), 1);
        assert_eq!(counter(&b, "loupe.events.dropped", Some("bytes")), 2);
    }

    #[test]
    fn user_ids_are_bounded_oldest_out() {
        let limits = Limits {
            max_user_ids: 2,
            ..Limits::default()
        };
        let mut p = Pipeline::with_limits(&config(false), Box::new(|| NOW), limits);
        for (req, user) in [("a", "ua"), ("b", "ub"), ("c", "uc")] {
            p.line(json(
                serde_json::json!({"requestId": req, "userId": user}),
                None,
            ));
        }
        assert_eq!(p.user_of("a"), None);
        assert_eq!(p.user_of("b"), Some("ub"));
        assert_eq!(p.user_of("c"), Some("uc"));
    }

    #[test]
    fn series_cap_refusals_are_counted() {
        let mut c = config(false);
        c.max_series = 1;
        let mut p = Pipeline::new(&c, Box::new(|| NOW));
        p.line(text(&emf("A", 1.0, ""), None));
        p.line(text(&emf("B", 1.0, ""), None));
        let b = p.drain(Drained::default());
        assert_eq!(b.series.len(), 1);
        assert_eq!(counter(&b, "loupe.series.refused", Some("series_cap")), 1);
        let refused: Vec<_> = b
            .counters
            .iter()
            .filter(|c| c.name == "loupe.series.refused")
            .collect();
        assert_eq!(refused.len(), 1, "zero counters are left out: {refused:?}");
        let want = [
            ("reason", "series_cap".to_string()),
            ("metric", "B".to_string()),
        ];
        assert_eq!(refused[0].attributes, want);
        assert_eq!(b.events.len(), 2, "the refused line's event still goes");
    }

    #[test]
    fn consumed_lines_are_counted_in_the_intake_stats_only() {
        let stats = Arc::new(Stats::default());
        stats.malformed_event();
        let mut p = pipeline(false).with_stats(stats.clone());
        p.line(text("a line", None));
        let b = p.drain(Drained::default());
        let s = stats.snapshot();
        assert_eq!((s.log_lines_consumed, s.log_bytes_consumed), (1, 8));
        assert_eq!(counter(&b, "loupe.log.lines", None), 1);
        assert_eq!(counter(&b, "loupe.log.bytes", None), 8);
        // The flush control ships the intake's counters; the batch does not repeat them.
        assert!(
            b.counters
                .iter()
                .all(|c| !c.name.starts_with("loupe.telemetry"))
        );
    }

    #[test]
    fn reason_discriminants_are_their_positions() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn text_prefixes() {
        assert_eq!(
            text_prefix("2026-11-24T05:21:04.582Z\tabc\tINFO\tmsg"),
            Prefix {
                request_id: Some("abc"),
                level: Some("INFO")
            }
        );
        assert_eq!(
            text_prefix("[DEBUG]\t2026-11-24T05:21:04.582Z\tabc\tmsg"),
            Prefix {
                request_id: Some("abc"),
                level: Some("DEBUG")
            }
        );
        assert_eq!(
            text_prefix("2026-11-24T05:21:04.582Z\tabc\tINFO"),
            Prefix::default()
        );
        assert_eq!(text_prefix("a\tb\tc\td"), Prefix::default());
        assert_eq!(text_prefix(""), Prefix::default());
        assert_eq!(
            text_prefix("2026-11-24T05:21:04.582Z\t\tINFO\tmsg").request_id,
            None
        );
    }

    #[tokio::test]
    async fn task_drains_lines_queued_before_the_request() {
        let (queue, rx) = log_queue(64, 1 << 20);
        let (mut handle, task) = spawn_with(pipeline(false), rx);
        for v in [1.0, 2.0, 3.0] {
            assert!(queue.try_send(text(&emf("Latency", v, ""), Some("r1"))));
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let b = batch::Source::drain(&mut handle, Drained::default(), deadline).await;
        assert_eq!(b.events.len(), 3);
        assert_eq!(b.series[0].histogram.sum(), 6.0);
        drop(queue);
        drop(handle);
        tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .expect("the task ends with its last handle")
            .expect("no panic");
    }
}
