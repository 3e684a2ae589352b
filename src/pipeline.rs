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
//!   `[LEVEL]\tts\treqid\t...` prefix, JSON `requestId`, or for EMF lines a `requestId` /
//!   `function_request_id` / `awsRequestId` property), else the request of the latest
//!   `platform.start` before the line in the stream. On Managed Instances invocations overlap,
//!   so only the record's own id counts there. The trace id is that start's, when the line
//!   belongs to it.
//! * **Severity**: the prefix's level or JSON `level`, else unspecified.
//! * **EMF**: a valid line feeds the aggregator and becomes one `Emf` event whose attributes are
//!   its properties plus `aws.emf.metric_names`; a rejected line is counted per reason
//!   (`loupe.emf.rejected{reason}`) and still travels as a `Log` event with the attribute
//!   `loupe.emf.rejected` (the reason codes, comma-separated).
//! * **Log lines**: the body is the line as printed (without its trailing newline), or, for a
//!   JSON record, the record object itself, whole: no field is lifted into attributes (the
//!   backend can index the body), so nothing is duplicated or re-serialised.
//! * **User id**: the first of `config.user_id_keys` found among the EMF properties or the JSON
//!   record's fields (or those of its `message` object) is set as `enduser.id` and remembered per
//!   request id (bounded, oldest out) for the invocation error events.
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
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aggregate::Aggregator;
use crate::batch::{self, Batch, Counter};
use crate::config::Config;
use crate::emf::{self, ParseOptions, Reason, Record, Verdict};
use crate::event::{AttrValue, Body, Event, Kind, Severity};
use crate::invocation::Drained;
use crate::lambda::events::{LogLine, LogRecord, LogSource};
use crate::lambda::listener::LogReceiver;
use crate::lambda::stats::{Stats, StatsSnapshot};
use crate::platform;

/// Events kept between two drains, at most.
pub const MAX_PENDING_EVENTS: usize = 10_000;
/// Approximate bytes of events kept between two drains, at most.
pub const MAX_PENDING_BYTES: usize = 8 << 20;
/// A single event's body beyond this is truncated.
pub const MAX_BODY_BYTES: usize = 256 << 10;
/// Request ids whose user id is remembered.
pub const MAX_USER_IDS: usize = 1_024;
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
/// EMF properties that carry the request id when no prefix does.
const REQUEST_ID_PROPERTIES: &[&str] = &["requestId", "function_request_id", "awsRequestId"];

/// Milliseconds since the epoch.
pub type Clock = Box<dyn Fn() -> i64 + Send>;

/// The system clock.
pub fn system_clock() -> Clock {
    Box::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    })
}

/// Caps of the pending events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_body_bytes: usize,
    pub max_user_ids: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_events: MAX_PENDING_EVENTS,
            max_bytes: MAX_PENDING_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            max_user_ids: MAX_USER_IDS,
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
    managed_instances: bool,
    limits: Limits,
    clock: Clock,
    counts: Counts,
    stats: Option<(Arc<Stats>, StatsSnapshot)>,
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
            managed_instances: config.lambda.is_managed_instances(),
            limits,
            clock,
            counts: Counts::default(),
            stats: None,
        }
    }

    /// Counts consumed lines into `stats` and ships its counters as deltas in every batch.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Pipeline {
        let last = stats.snapshot();
        self.stats = Some((stats, last));
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
        if let Some((stats, _)) = &self.stats {
            stats.log_line_consumed(line.size);
        }
        match line.source {
            LogSource::Function => self.function_line(line),
            LogSource::Extension => self.extension_line(line),
        }
    }

    fn function_line(&mut self, line: LogLine) {
        let LogLine {
            time,
            record,
            size,
            request_id: start_id,
            trace_id: start_trace,
            ..
        } = line;
        let record_ms = time.as_deref().and_then(iso_to_ms);
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
                    let user = self.user_id_keys.iter().find_map(|k| {
                        props
                            .iter()
                            .find(|(p, _)| p.as_ref() == k.as_str())
                            .and_then(|(_, v)| user_string(v))
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
                    let mut names: Vec<&str> = Vec::new();
                    for p in &emf_line.points {
                        if names.len() >= MAX_METRIC_NAMES {
                            break;
                        }
                        if !names.contains(&p.name.as_ref()) {
                            names.push(p.name.as_ref());
                        }
                    }
                    let names = Value::Array(
                        names
                            .into_iter()
                            .map(|n| Value::String(n.to_string()))
                            .collect(),
                    );
                    let mut warnings = String::new();
                    for w in &emf_line.warnings {
                        self.counts.warnings[*w as usize] += 1;
                        if !warnings.is_empty() {
                            warnings.push(',');
                        }
                        warnings.push_str(w.as_str());
                    }
                    attributes.reserve(emf_line.properties.len() + 2);
                    for (k, v) in emf_line.properties {
                        attributes.push((k.into_owned(), AttrValue::from(v)));
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
                (Some(id), trace)
            }
            None if !self.managed_instances => (start_id.map(|s| s.to_string()), start_trace),
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
        let body_bytes = self.set_body(&mut event, record, size);
        self.push(event, body_bytes);
    }

    fn extension_line(&mut self, line: LogLine) {
        self.counts.extension_lines += 1;
        let time = line.time.as_deref().and_then(iso_to_ms);
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
        let body_bytes = self.set_body(&mut event, line.record, line.size);
        self.push(event, body_bytes);
    }

    /// The record as the body, capped at `max_body_bytes`; returns the body's size estimate
    /// (a JSON body counts as its record's size on the wire, so it is never walked).
    fn set_body(&mut self, event: &mut Event, record: LogRecord, size: usize) -> usize {
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
            self.counts.truncated += 1;
            event
                .attributes
                .push(("loupe.truncated".into(), AttrValue::Bool(true)));
        }
        bytes
    }

    fn push(&mut self, event: Event, body_bytes: usize) {
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
        let mut counters = folded.counters;
        self.take_counters(&mut counters);
        Batch {
            series: self.aggregator.drain(),
            events,
            counters,
        }
    }

    fn take_counters(&mut self, out: &mut Vec<Counter>) {
        let c = std::mem::take(&mut self.counts);
        let mut add = |counter: Counter| {
            if counter.value > 0 {
                out.push(counter);
            }
        };
        add(Counter::new("loupe.log.lines", c.lines));
        add(Counter::new("loupe.log.bytes", c.bytes));
        add(Counter::new("loupe.log.extension_lines", c.extension_lines));
        add(Counter::new("loupe.emf.accepted", c.emf_accepted));
        for (r, (&rejected, &warned)) in Reason::ALL.iter().zip(c.rejected.iter().zip(&c.warnings))
        {
            add(Counter::new("loupe.emf.rejected", rejected).with("reason", r.as_str()));
            add(Counter::new("loupe.emf.warnings", warned).with("reason", r.as_str()));
        }
        add(Counter::new("loupe.events.dropped", c.dropped_count).with("reason", "count"));
        add(Counter::new("loupe.events.dropped", c.dropped_bytes).with("reason", "bytes"));
        add(Counter::new("loupe.events.truncated", c.truncated));

        let refused = self.aggregator.take_refused();
        for (name, n) in refused.series_cap {
            add(Counter::new("loupe.series.refused", n)
                .with("reason", "series_cap")
                .with("metric", name));
        }
        add(
            Counter::new("loupe.series.refused", refused.series_cap_other)
                .with("reason", "series_cap"),
        );
        add(Counter::new("loupe.series.refused", refused.key_budget).with("reason", "key_budget"));
        add(
            Counter::new("loupe.series.refused", refused.invalid_samples)
                .with("reason", "invalid_samples"),
        );

        if let Some((stats, last)) = &mut self.stats {
            let now = stats.snapshot();
            let d = |a: u64, b: u64| a.saturating_sub(b);
            add(Counter::new(
                "loupe.telemetry.malformed",
                d(now.malformed_events, last.malformed_events),
            )
            .with("what", "event"));
            add(Counter::new(
                "loupe.telemetry.malformed",
                d(now.malformed_bodies, last.malformed_bodies),
            )
            .with("what", "body"));
            add(Counter::new(
                "loupe.telemetry.unknown_types",
                d(now.unknown_types, last.unknown_types),
            ));
            add(Counter::new(
                "loupe.telemetry.oversized",
                d(now.oversized_records, last.oversized_records),
            )
            .with("what", "record"));
            add(Counter::new(
                "loupe.telemetry.oversized",
                d(now.oversized_bodies, last.oversized_bodies),
            )
            .with("what", "body"));
            add(Counter::new(
                "loupe.telemetry.queue_dropped",
                d(now.log_lines_dropped, last.log_lines_dropped),
            )
            .with("queue", "log"));
            add(Counter::new(
                "loupe.telemetry.queue_dropped",
                d(now.platform_events_dropped, last.platform_events_dropped),
            )
            .with("queue", "platform"));
            add(Counter::new(
                "loupe.lambda.logs_dropped.records",
                d(now.lambda_dropped_records, last.lambda_dropped_records),
            ));
            add(Counter::new(
                "loupe.lambda.logs_dropped.bytes",
                d(now.lambda_dropped_bytes, last.lambda_dropped_bytes),
            ));
            *last = now;
        }
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

/// A cheap size estimate for the pending-bytes cap: fixed overhead, body, attributes (an EMF
/// event's properties are part of its line, so they count as the body's size once more).
fn event_size(e: &Event, body_bytes: usize) -> usize {
    let properties = if e.kind == Kind::Emf { body_bytes } else { 0 };
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
    64 + body_bytes + properties + attrs + e.request_id.as_ref().map_or(0, String::len)
}

fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

/// Milliseconds since the epoch of an ISO 8601 / RFC 3339 UTC time as Lambda prints it
/// (`2024-05-01T12:00:00.123Z`, `2024-05-01T12:00:00Z`, `+00:00` offsets).
pub fn iso_to_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, m, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                ms = ms * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            ms *= 10;
        }
    }
    let offset_min = match b.get(i..) {
        Some(b"Z" | b"z") | Some(b"") => 0,
        Some(rest) if rest.len() == 6 && matches!(rest[0], b'+' | b'-') && rest[3] == b':' => {
            let oh = num(i + 1, 2)?;
            let om = num(i + 4, 2)?;
            let sign = if rest[0] == b'+' { 1 } else { -1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3_600 + m * 60 + sec - offset_min * 60;
    Some(secs * 1_000 + ms)
}

/// Days from 1970-01-01 (proleptic Gregorian; negative before).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
/// into `stats` and its counters ship as deltas in every batch.
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
