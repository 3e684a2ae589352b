//! Telemetry API and Logs API events, decoded one by one.
//!
//! In: the body of one POST from Lambda (a JSON array of events).
//! Out: [`Event`]s, each either a platform event (for the invocation tracker) or a log line
//! (`function` / `extension` records, for the log and metric pipeline), and counters in
//! [`Stats`].
//!
//! The body is read in one pass; each array element is decoded on its own as it is reached, so
//! an unknown type, an unexpected field or one malformed event never costs the rest of the batch.
//! A `function` line is unescaped once, straight from the body into the string it travels in; a
//! platform record is parsed into a JSON value in the same pass and then read field by field by
//! name (`Fields`: `null` is an absent field, a known field of the wrong type fails its event,
//! the keys never read are counted as unknown fields).
//! Enumerations the platform extends over time (status, initialization type, phase) are kept as
//! open values, and numbers the docs call integers are accepted as floats too (the platform's own
//! Go structs type `billedDurationMs` as a float).

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::stats::Stats;
use crate::clock::parse_rfc3339_ms;

/// A `function` or `extension` record larger than this (as JSON text) is counted and dropped.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// A platform record larger than this is counted as oversized and dropped. Real ones are under
/// 2 KiB; the cap bounds what the invocation tracker may hold per invocation.
pub const MAX_PLATFORM_RECORD_BYTES: usize = 16 << 10;

/// One decoded event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Platform(Box<PlatformEvent>),
    Log(LogLine),
}

/// A `platform.*` event with the time Lambda generated it (ISO 8601, as sent).
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformEvent {
    pub time: Option<String>,
    pub kind: Platform,
}

/// Every platform event type of the Telemetry API (schemas 2022-07-01 to 2025-01-29) and the
/// Logs API.
#[derive(Clone, Debug, PartialEq)]
pub enum Platform {
    InitStart(InitStart),
    InitRuntimeDone(PhaseDone),
    InitReport(PhaseReport),
    Start(Start),
    RuntimeDone(RuntimeDone),
    Report(Report),
    RestoreStart(InitStart),
    RestoreRuntimeDone(PhaseDone),
    RestoreReport(PhaseReport),
    Extension(ExtensionState),
    TelemetrySubscription(Subscription),
    LogsDropped(LogsDropped),
    /// Logs API only: the end of an invocation.
    End {
        request_id: String,
    },
    /// Logs API only: a free-text fault line (`RequestId: ... Status: error ...`).
    Fault(String),
    /// Logs API only.
    LogsSubscription(Subscription),
}

/// A `function` or `extension` record.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// When Lambda generated the record (its `time`), in ms since the epoch, when valid.
    pub time_ms: Option<i64>,
    pub source: LogSource,
    pub record: LogRecord,
    /// Size of the record in bytes: a line's length, or about the length of a JSON record's
    /// text; for the size caps and the queue's accounting.
    pub size: usize,
    /// The request of the latest `platform.start` before this line in the stream, set by the
    /// listener's [`Intake`](super::listener::Intake); `None` before the first start.
    pub request_id: Option<Arc<str>>,
    /// The trace id of that `platform.start`, when it carried a valid X-Ray header.
    pub trace_id: Option<[u8; 16]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    Function,
    Extension,
}

/// A record is a string in Text log format (and with every Logs API or 2022-07-01 subscription),
/// and an already-parsed JSON value in JSON log format.
#[derive(Clone, Debug, PartialEq)]
pub enum LogRecord {
    Text(String),
    Json(serde_json::Value),
}

/// Invocation and phase status: an open set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
    Failure,
    Timeout,
    Other(String),
}

impl Status {
    pub fn parse(s: &str) -> Status {
        if s.eq_ignore_ascii_case("success") {
            Status::Success
        } else if s.eq_ignore_ascii_case("error") {
            Status::Error
        } else if s.eq_ignore_ascii_case("failure") {
            Status::Failure
        } else if s.eq_ignore_ascii_case("timeout") {
            Status::Timeout
        } else {
            Status::Other(s.to_string())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Failure => "failure",
            Status::Timeout => "timeout",
            Status::Other(s) => s,
        }
    }
}

/// `tracing` of start, runtimeDone and report: the X-Ray trace header value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceContext {
    pub span_id: Option<String>,
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub name: String,
    pub start: Option<String>,
    pub duration_ms: Option<f64>,
}

/// Fields of a record that loupe does not know; tolerated, and counted in [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    pub unknown_fields: u32,
}

/// `platform.initStart` and `platform.restoreStart`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InitStart {
    pub initialization_type: Option<String>,
    pub phase: Option<String>,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub function_arn: Option<String>,
    pub runtime_version: Option<String>,
    pub runtime_version_arn: Option<String>,
    pub instance_id: Option<String>,
    /// MB; documented as a string for restoreStart, a number elsewhere: both accepted.
    pub instance_max_memory: Option<u64>,
    pub tracing: Option<TraceContext>,
    pub extra: Extra,
}

/// `platform.initRuntimeDone` and `platform.restoreRuntimeDone`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseDone {
    pub initialization_type: Option<String>,
    pub phase: Option<String>,
    pub status: Option<Status>,
    pub error_type: Option<String>,
    pub spans: Vec<Span>,
    pub extra: Extra,
}

/// `platform.initReport` and `platform.restoreReport`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseReport {
    pub initialization_type: Option<String>,
    pub phase: Option<String>,
    pub status: Option<Status>,
    pub error_type: Option<String>,
    pub metrics: PhaseMetrics,
    pub spans: Vec<Span>,
    pub extra: Extra,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseMetrics {
    pub duration_ms: Option<f64>,
    /// Logs API, SnapStart only.
    pub billed_duration_ms: Option<u64>,
}

/// `platform.start`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Start {
    pub request_id: String,
    pub version: Option<String>,
    pub function_arn: Option<String>,
    pub tenant_id: Option<String>,
    pub tracing: Option<TraceContext>,
    pub extra: Extra,
}

/// `platform.runtimeDone`: the runtime finished the invocation (it called /next).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeDone {
    pub request_id: String,
    pub status: Option<Status>,
    pub error_type: Option<String>,
    pub metrics: RuntimeDoneMetrics,
    pub spans: Vec<Span>,
    pub tracing: Option<TraceContext>,
    pub tenant_id: Option<String>,
    pub extra: Extra,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeDoneMetrics {
    pub duration_ms: Option<f64>,
    pub produced_bytes: Option<u64>,
}

/// `platform.report`: what the invocation cost. Arrives after every extension called /next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub request_id: String,
    pub status: Option<Status>,
    pub error_type: Option<String>,
    pub metrics: ReportMetrics,
    pub spans: Vec<Span>,
    pub tracing: Option<TraceContext>,
    pub tenant_id: Option<String>,
    pub extra: Extra,
}

/// On Managed Instances only `duration_ms` is present.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportMetrics {
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<u64>,
    pub memory_size_mb: Option<u64>,
    pub max_memory_used_mb: Option<u64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
}

/// `platform.extension`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExtensionState {
    pub name: Option<String>,
    pub state: Option<String>,
    pub events: Vec<String>,
    pub error_type: Option<String>,
    pub extra: Extra,
}

/// `platform.telemetrySubscription` and (Logs API) `platform.logsSubscription`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subscription {
    pub name: Option<String>,
    pub state: Option<String>,
    pub types: Vec<String>,
    pub extra: Extra,
}

/// `platform.logsDropped`: Lambda dropped records because the consumer was too slow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogsDropped {
    pub dropped_bytes: Option<u64>,
    pub dropped_records: Option<u64>,
    pub reason: Option<String>,
    pub extra: Extra,
}

/// The event types loupe knows, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    InitStart,
    InitRuntimeDone,
    InitReport,
    Start,
    RuntimeDone,
    Report,
    RestoreStart,
    RestoreRuntimeDone,
    RestoreReport,
    Extension,
    TelemetrySubscription,
    LogsDropped,
    End,
    Fault,
    LogsSubscription,
    Function,
    ExtensionLog,
}

impl EventType {
    pub const ALL: [EventType; 17] = [
        EventType::InitStart,
        EventType::InitRuntimeDone,
        EventType::InitReport,
        EventType::Start,
        EventType::RuntimeDone,
        EventType::Report,
        EventType::RestoreStart,
        EventType::RestoreRuntimeDone,
        EventType::RestoreReport,
        EventType::Extension,
        EventType::TelemetrySubscription,
        EventType::LogsDropped,
        EventType::End,
        EventType::Fault,
        EventType::LogsSubscription,
        EventType::Function,
        EventType::ExtensionLog,
    ];

    /// The `type` string on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventType::InitStart => "platform.initStart",
            EventType::InitRuntimeDone => "platform.initRuntimeDone",
            EventType::InitReport => "platform.initReport",
            EventType::Start => "platform.start",
            EventType::RuntimeDone => "platform.runtimeDone",
            EventType::Report => "platform.report",
            EventType::RestoreStart => "platform.restoreStart",
            EventType::RestoreRuntimeDone => "platform.restoreRuntimeDone",
            EventType::RestoreReport => "platform.restoreReport",
            EventType::Extension => "platform.extension",
            EventType::TelemetrySubscription => "platform.telemetrySubscription",
            EventType::LogsDropped => "platform.logsDropped",
            EventType::End => "platform.end",
            EventType::Fault => "platform.fault",
            EventType::LogsSubscription => "platform.logsSubscription",
            EventType::Function => "function",
            EventType::ExtensionLog => "extension",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// A `function` or `extension` record: a log line.
    pub fn is_log(self) -> bool {
        matches!(self, EventType::Function | EventType::ExtensionLog)
    }

    /// Position in [`EventType::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why one event was not used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an event object: {0}")]
    Envelope(serde_json::Error),
    #[error("{kind} has no record")]
    NoRecord { kind: String },
    #[error("{kind} record: {source}")]
    Record {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{kind} record of {bytes} bytes is over its size cap")]
    Oversized { kind: &'static str, bytes: usize },
}

/// Decodes one POST body. Never fails as a whole: a body that is not a JSON array is counted as
/// malformed and yields nothing; inside an array every event stands on its own.
///
/// One pass over the body: each element is decoded as the array is read, and a record that is a
/// string is unescaped straight into the line it travels in, whatever the order of the keys.
pub fn decode_batch(body: &[u8], stats: &Stats) -> Vec<Event> {
    stats.batch();
    let mut out = Vec::new();
    let mut tally = Tally::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = de
        .deserialize_seq(BatchVisitor {
            out: &mut out,
            tally: &mut tally,
        })
        .and_then(|()| de.end());
    if let Err(e) = read {
        // Nothing after a syntax error can be trusted, nor counted.
        stats.malformed_body();
        log::debug!("telemetry body is not a JSON array of events: {e}");
        return Vec::new();
    }
    for (ty, n) in EventType::ALL.into_iter().zip(tally.events) {
        stats.events(ty, n);
    }
    stats.unknown_fields(tally.unknown_fields);
    stats.unknown_types(tally.unknown_types);
    stats.oversized_records(tally.oversized);
    stats.malformed_events(tally.malformed);
    out
}

/// What one body held, counted while it is read and added to [`Stats`] once it was read whole.
#[derive(Default)]
struct Tally {
    events: [u64; EventType::ALL.len()],
    unknown_fields: u32,
    unknown_types: u64,
    oversized: u64,
    malformed: u64,
}

impl Tally {
    fn add(&mut self, element: Element) -> Option<Event> {
        match element {
            Ok((ty, event, unknown_fields)) => {
                // `events` has one slot per entry of `EventType::ALL`, and `index` is the
                // position there.
                self.events[ty.index()] += 1;
                self.unknown_fields = self.unknown_fields.saturating_add(unknown_fields);
                return Some(event);
            }
            Err(DecodeError::UnknownType(t)) => {
                self.unknown_types += 1;
                log::debug!("telemetry event of unknown type {t:?} skipped");
            }
            Err(e @ DecodeError::Oversized { .. }) => {
                self.oversized += 1;
                log::debug!("{e}");
            }
            Err(e) => {
                self.malformed += 1;
                log::debug!("telemetry event skipped: {e}");
            }
        }
        None
    }
}

/// One element of the array: an event with its type and unknown field count, or why not.
type Element = Result<(EventType, Event, u32), DecodeError>;

/// Reads the array, handing each element to the tally as soon as it is decoded.
struct BatchVisitor<'o> {
    out: &'o mut Vec<Event>,
    tally: &'o mut Tally,
}

impl<'de> Visitor<'de> for BatchVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n.min(1_024));
        }
        while let Some(element) = seq.next_element_seed(ElementSeed)? {
            if let Some(event) = self.tally.add(element) {
                self.out.push(event);
            }
        }
        Ok(())
    }
}

/// The envelope's keys.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Time,
    Type,
    Record,
    #[serde(other)]
    Other,
}

struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Element, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

fn not_an_object(what: &str) -> Element {
    Err(DecodeError::Envelope(de::Error::custom(format_args!(
        "{what} where an event object was expected"
    ))))
}

/// An element: an object is an event; anything else is consumed and skipped as malformed (a
/// syntax error still fails the body, as it must: nothing after it can be trusted).
struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element, E> {
        Ok(not_an_object("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element, E> {
        Ok(not_an_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element, E> {
        Ok(not_an_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element, E> {
        Ok(not_an_object("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Element, E> {
        Ok(not_an_object("a string"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Element, E> {
        Ok(not_an_object("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(not_an_object("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut time: Option<Text<'de>> = None;
        let mut kind: Option<Text<'de>> = None;
        let mut record: Option<(LogRecord, usize)> = None;
        let mut unknown = 0u32;
        let mut bad_field: Option<&'static str> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Time => match map.next_value::<Lenient<'de>>()? {
                    Lenient::Null => time = None,
                    Lenient::Str(t) => time = Some(t),
                    Lenient::Other => bad_field = Some("time"),
                },
                Key::Type => match map.next_value::<Lenient<'de>>()? {
                    Lenient::Str(t) => kind = Some(t),
                    _ => bad_field = Some("type"),
                },
                Key::Record => record = Some(map.next_value_seed(RecordSeed)?),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    unknown = unknown.saturating_add(1);
                }
            }
        }
        if let Some(field) = bad_field {
            return Ok(Err(DecodeError::Envelope(de::Error::custom(format_args!(
                "`{field}` is not a string"
            )))));
        }
        let Some(kind) = kind else {
            return Ok(Err(DecodeError::Envelope(de::Error::missing_field("type"))));
        };
        Ok(decode_event(time, &kind, record, unknown))
    }
}

/// A string that may borrow from the body (no escapes in it) or be unescaped into its own.
type Text<'de> = std::borrow::Cow<'de, str>;

/// A string, null, or anything else (consumed).
enum Lenient<'de> {
    Str(Text<'de>),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for Lenient<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient::Str(Text::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient::Str(Text::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Lenient::Str(Text::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `record`, read in the body's pass whatever its event type (which may come after it): a
/// string is unescaped once into its own `String`, anything else becomes a JSON value. Platform
/// records are then read from that value into their types.
struct RecordSeed;

impl<'de> DeserializeSeed<'de> for RecordSeed {
    type Value = (LogRecord, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = (LogRecord, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log record")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((LogRecord::Text(v.to_string()), v.len()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        let n = v.len();
        Ok((LogRecord::Text(v), n))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(json_record(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(json_record(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(json_record(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(json_record(Value::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(json_record(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(json_record)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(json_record)
    }
}

fn json_record(v: Value) -> (LogRecord, usize) {
    let n = json_len(&v);
    (LogRecord::Json(v), n)
}

/// About the length of `v` as compact JSON text (escapes and number digits estimated), for the
/// size caps and the queue's accounting. The depth is bounded by serde_json's recursion limit.
fn json_len(v: &Value) -> usize {
    let items = |n: usize| n.saturating_sub(1) + 2;
    match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => items(a.len()) + a.iter().map(json_len).sum::<usize>(),
        Value::Object(o) => {
            items(o.len())
                + o.iter()
                    .map(|(k, v)| k.len() + 3 + json_len(v))
                    .sum::<usize>()
        }
    }
}

/// Decodes one event from its envelope's parts.
fn decode_event(
    time: Option<Text<'_>>,
    kind: &str,
    record: Option<(LogRecord, usize)>,
    extra: u32,
) -> Element {
    let ty = EventType::from_name(kind)
        .ok_or_else(|| DecodeError::UnknownType(kind.chars().take(100).collect()))?;
    let (record, size) = record.ok_or_else(|| DecodeError::NoRecord {
        kind: ty.name().to_string(),
    })?;
    let cap = if ty.is_log() {
        MAX_RECORD_BYTES
    } else {
        MAX_PLATFORM_RECORD_BYTES
    };
    if size > cap {
        return Err(DecodeError::Oversized {
            kind: ty.name(),
            bytes: size,
        });
    }
    if ty.is_log() {
        let source = if ty == EventType::Function {
            LogSource::Function
        } else {
            LogSource::Extension
        };
        return Ok((
            ty,
            Event::Log(LogLine {
                time_ms: time.as_deref().and_then(parse_rfc3339_ms),
                source,
                record,
                size,
                request_id: None,
                trace_id: None,
            }),
            extra,
        ));
    }
    let err = |source| DecodeError::Record {
        kind: ty.name(),
        source,
    };
    let value = match record {
        LogRecord::Text(t) if ty == EventType::Fault => {
            return Ok((
                ty,
                Event::Platform(Box::new(PlatformEvent {
                    time: time.map(Text::into_owned),
                    kind: Platform::Fault(t),
                })),
                extra,
            ));
        }
        LogRecord::Text(_) => return Err(err(invalid("record", "an object"))),
        LogRecord::Json(v) => v,
    };
    let mut f = Fields::of(&value).map_err(err)?;
    let kind = match ty {
        // A fault's string record was taken above, so this is any other value; log types
        // returned before.
        EventType::Function | EventType::ExtensionLog | EventType::Fault => {
            return Err(err(invalid("record", "a string")));
        }
        EventType::InitStart => Platform::InitStart(InitStart::read(&mut f).map_err(err)?),
        EventType::InitRuntimeDone => {
            Platform::InitRuntimeDone(PhaseDone::read(&mut f).map_err(err)?)
        }
        EventType::InitReport => Platform::InitReport(PhaseReport::read(&mut f).map_err(err)?),
        EventType::Start => Platform::Start(Start::read(&mut f).map_err(err)?),
        EventType::RuntimeDone => Platform::RuntimeDone(RuntimeDone::read(&mut f).map_err(err)?),
        EventType::Report => Platform::Report(Report::read(&mut f).map_err(err)?),
        EventType::RestoreStart => Platform::RestoreStart(InitStart::read(&mut f).map_err(err)?),
        EventType::RestoreRuntimeDone => {
            Platform::RestoreRuntimeDone(PhaseDone::read(&mut f).map_err(err)?)
        }
        EventType::RestoreReport => {
            Platform::RestoreReport(PhaseReport::read(&mut f).map_err(err)?)
        }
        EventType::Extension => Platform::Extension(ExtensionState::read(&mut f).map_err(err)?),
        EventType::TelemetrySubscription => {
            Platform::TelemetrySubscription(Subscription::read(&mut f).map_err(err)?)
        }
        EventType::LogsSubscription => {
            Platform::LogsSubscription(Subscription::read(&mut f).map_err(err)?)
        }
        EventType::LogsDropped => Platform::LogsDropped(LogsDropped::read(&mut f).map_err(err)?),
        EventType::End => Platform::End {
            request_id: f.required_str("requestId").map_err(err)?,
        },
    };
    Ok((
        ty,
        Event::Platform(Box::new(PlatformEvent {
            time: time.map(Text::into_owned),
            kind,
        })),
        extra.saturating_add(f.unknown()),
    ))
}

/// Why a field could not be read.
type FieldResult<T> = Result<T, serde_json::Error>;

fn invalid(key: &str, want: &str) -> serde_json::Error {
    de::Error::custom(format_args!("`{key}` is not {want}"))
}

/// One object of an already-parsed record (or answer), read field by field by name; the keys
/// never asked for are its unknown fields. Lenient the way the platform needs: `null` is an
/// absent field, numbers may be floats or numeric strings; a field of the wrong type is an error.
pub(crate) struct Fields<'v> {
    map: &'v Map<String, Value>,
    /// Keys asked for and present.
    known: usize,
}

impl<'v> Fields<'v> {
    pub(crate) fn of(v: &'v Value) -> FieldResult<Self> {
        match v {
            Value::Object(map) => Ok(Fields { map, known: 0 }),
            _ => Err(de::Error::custom("not an object")),
        }
    }

    /// The value of `key` when present and not null.
    fn get(&mut self, key: &str) -> Option<&'v Value> {
        let v = self.map.get(key)?;
        self.known += 1;
        (!v.is_null()).then_some(v)
    }

    pub(crate) fn str(&mut self, key: &str) -> FieldResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(key, "a string")),
        }
    }

    pub(crate) fn required_str(&mut self, key: &'static str) -> FieldResult<String> {
        self.str(key)?.ok_or_else(|| de::Error::missing_field(key))
    }

    /// A JSON number or a numeric string; a non-finite one (`"NaN"`) is absent.
    pub(crate) fn f64(&mut self, key: &str) -> FieldResult<Option<f64>> {
        Ok(self.number(key)?.filter(|v| v.is_finite()))
    }

    /// Like [`Fields::f64`], rounded to a whole non-negative number; anything else is an error.
    pub(crate) fn u64(&mut self, key: &str) -> FieldResult<Option<u64>> {
        match self.number(key)? {
            None => Ok(None),
            Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f.round() as u64)),
            Some(_) => Err(invalid(key, "a non-negative number")),
        }
    }

    fn number(&mut self, key: &str) -> FieldResult<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| invalid(key, "a number")),
            Some(_) => Err(invalid(key, "a number")),
        }
    }

    /// A nested object; its unknown fields are not counted.
    pub(crate) fn object(&mut self, key: &str) -> FieldResult<Option<Fields<'v>>> {
        self.get(key)
            .map(|v| Fields::of(v).map_err(|_| invalid(key, "an object")))
            .transpose()
    }

    fn array(&mut self, key: &str) -> FieldResult<&'v [Value]> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(invalid(key, "an array")),
        }
    }

    fn strings(&mut self, key: &str) -> FieldResult<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(invalid(key, "an array of strings")),
            })
            .collect()
    }

    fn status(&mut self) -> FieldResult<Option<Status>> {
        Ok(self.str("status")?.map(|s| Status::parse(&s)))
    }

    fn spans(&mut self) -> FieldResult<Vec<Span>> {
        self.array("spans")?
            .iter()
            .map(|v| {
                let mut f = Fields::of(v).map_err(|_| invalid("spans", "an array of objects"))?;
                Ok(Span {
                    name: f.required_str("name")?,
                    start: f.str("start")?,
                    duration_ms: f.f64("durationMs")?,
                })
            })
            .collect()
    }

    fn tracing(&mut self) -> FieldResult<Option<TraceContext>> {
        let Some(mut f) = self.object("tracing")? else {
            return Ok(None);
        };
        Ok(Some(TraceContext {
            span_id: f.str("spanId")?,
            kind: f.str("type")?,
            value: f.str("value")?,
        }))
    }

    /// Keys of this object that were never asked for.
    pub(crate) fn unknown(&self) -> u32 {
        u32::try_from(self.map.len().saturating_sub(self.known)).unwrap_or(u32::MAX)
    }

    fn extra(&self) -> Extra {
        Extra {
            unknown_fields: self.unknown(),
        }
    }
}

impl InitStart {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        Ok(InitStart {
            initialization_type: f.str("initializationType")?,
            phase: f.str("phase")?,
            function_name: f.str("functionName")?,
            function_version: f.str("functionVersion")?,
            function_arn: f.str("functionArn")?,
            runtime_version: f.str("runtimeVersion")?,
            runtime_version_arn: f.str("runtimeVersionArn")?,
            instance_id: f.str("instanceId")?,
            instance_max_memory: f.u64("instanceMaxMemory")?,
            tracing: f.tracing()?,
            extra: f.extra(),
        })
    }
}

impl PhaseDone {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        Ok(PhaseDone {
            initialization_type: f.str("initializationType")?,
            phase: f.str("phase")?,
            status: f.status()?,
            error_type: f.str("errorType")?,
            spans: f.spans()?,
            extra: f.extra(),
        })
    }
}

impl PhaseReport {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        let mut metrics = PhaseMetrics::default();
        if let Some(mut m) = f.object("metrics")? {
            metrics.duration_ms = m.f64("durationMs")?;
            metrics.billed_duration_ms = m.u64("billedDurationMs")?;
        }
        Ok(PhaseReport {
            initialization_type: f.str("initializationType")?,
            phase: f.str("phase")?,
            status: f.status()?,
            error_type: f.str("errorType")?,
            metrics,
            spans: f.spans()?,
            extra: f.extra(),
        })
    }
}

impl Start {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        Ok(Start {
            request_id: f.required_str("requestId")?,
            version: f.str("version")?,
            function_arn: f.str("functionArn")?,
            tenant_id: f.str("tenantId")?,
            tracing: f.tracing()?,
            extra: f.extra(),
        })
    }
}

impl RuntimeDone {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        let mut metrics = RuntimeDoneMetrics::default();
        if let Some(mut m) = f.object("metrics")? {
            metrics.duration_ms = m.f64("durationMs")?;
            metrics.produced_bytes = m.u64("producedBytes")?;
        }
        Ok(RuntimeDone {
            request_id: f.required_str("requestId")?,
            status: f.status()?,
            error_type: f.str("errorType")?,
            metrics,
            spans: f.spans()?,
            tracing: f.tracing()?,
            tenant_id: f.str("tenantId")?,
            extra: f.extra(),
        })
    }
}

impl Report {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        let mut metrics = ReportMetrics::default();
        if let Some(mut m) = f.object("metrics")? {
            metrics = ReportMetrics {
                duration_ms: m.f64("durationMs")?,
                billed_duration_ms: m.u64("billedDurationMs")?,
                memory_size_mb: m.u64("memorySizeMB")?,
                max_memory_used_mb: m.u64("maxMemoryUsedMB")?,
                init_duration_ms: m.f64("initDurationMs")?,
                restore_duration_ms: m.f64("restoreDurationMs")?,
            };
        }
        Ok(Report {
            request_id: f.required_str("requestId")?,
            status: f.status()?,
            error_type: f.str("errorType")?,
            metrics,
            spans: f.spans()?,
            tracing: f.tracing()?,
            tenant_id: f.str("tenantId")?,
            extra: f.extra(),
        })
    }
}

impl ExtensionState {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        Ok(ExtensionState {
            name: f.str("name")?,
            state: f.str("state")?,
            events: f.strings("events")?,
            error_type: f.str("errorType")?,
            extra: f.extra(),
        })
    }
}

impl Subscription {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        Ok(Subscription {
            name: f.str("name")?,
            state: f.str("state")?,
            types: f.strings("types")?,
            extra: f.extra(),
        })
    }
}

impl LogsDropped {
    fn read(f: &mut Fields<'_>) -> FieldResult<Self> {
        Ok(LogsDropped {
            dropped_bytes: f.u64("droppedBytes")?,
            dropped_records: f.u64("droppedRecords")?,
            reason: f.str("reason")?,
            extra: f.extra(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(json: &str) -> (Vec<Event>, crate::lambda::stats::StatsSnapshot) {
        let stats = Stats::default();
        let events = decode_batch(format!("[{json}]").as_bytes(), &stats);
        (events, stats.snapshot())
    }

    fn platform(json: &str) -> Platform {
        let (events, s) = one(json);
        assert_eq!(s.malformed_events, 0, "{json}");
        match events.as_slice() {
            [Event::Platform(p)] => p.kind.clone(),
            other => panic!("expected one platform event, got {other:?}"),
        }
    }

    #[test]
    fn init_start() {
        let p = platform(
            r#"{"time":"2024-04-25T17:35:59.944Z","type":"platform.initStart","record":{
  "initializationType":"on-demand","phase":"init","runtimeVersion":"nodejs:20.v22",
  "runtimeVersionArn":"arn:aws:lambda:us-east-1::runtime:da57c20c","functionName":"hello-world","functionVersion":"$LATEST",
  "instanceId":"82561ce0-53dd-47d1-90e0-c8f5e063e62e","instanceMaxMemory":256}}"#,
        );
        let Platform::InitStart(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.initialization_type.as_deref(), Some("on-demand"));
        assert_eq!(r.phase.as_deref(), Some("init"));
        assert_eq!(r.function_name.as_deref(), Some("hello-world"));
        assert_eq!(r.instance_max_memory, Some(256));
        assert_eq!(r.extra.unknown_fields, 0);
    }

    #[test]
    fn init_runtime_done_and_report() {
        let p = platform(
            r#"{"time":"2022-10-12T00:01:15.000Z","type":"platform.initRuntimeDone","record":{
  "initializationType":"on-demand","phase":"init","status":"success"}}"#,
        );
        let Platform::InitRuntimeDone(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.status, Some(Status::Success));

        let p = platform(
            r#"{"time":"2022-10-12T00:01:15.000Z","type":"platform.initReport","record":{
  "initializationType":"on-demand","phase":"init","status":"success","metrics":{"durationMs":125.33}}}"#,
        );
        let Platform::InitReport(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.metrics.duration_ms, Some(125.33));
        assert_eq!(r.initialization_type.as_deref(), Some("on-demand"));
    }

    #[test]
    fn start_with_tracing() {
        let p = platform(
            r#"{"time":"2022-10-12T00:00:15.064Z","type":"platform.start","record":{
  "requestId":"6d68ca91-49c9-448d-89b8-7ca3e6dc66aa","version":"$LATEST",
  "tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id",
             "value":"Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"}}}"#,
        );
        let Platform::Start(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.request_id, "6d68ca91-49c9-448d-89b8-7ca3e6dc66aa");
        assert_eq!(r.version.as_deref(), Some("$LATEST"));
        let t = r.tracing.unwrap_or_default();
        assert_eq!(t.kind.as_deref(), Some("X-Amzn-Trace-Id"));
        assert_eq!(t.span_id.as_deref(), Some("54565fb41ac79632"));
        assert!(t.value.unwrap_or_default().starts_with("Root=1-62e900b2"));
    }

    #[test]
    fn runtime_done_with_spans() {
        let p = platform(
            r#"{"time":"2022-10-12T00:01:15.000Z","type":"platform.runtimeDone","record":{
  "requestId":"6d68ca91-49c9-448d-89b8-7ca3e6dc66aa","status":"success",
  "metrics":{"durationMs":140.0,"producedBytes":16},
  "spans":[{"name":"responseLatency","start":"2022-10-12T00:01:14.860Z","durationMs":23.02},
           {"name":"responseDuration","start":"2022-10-12T00:01:14.883Z","durationMs":0.2},
           {"name":"runtimeOverhead","start":"2022-10-12T00:01:14.884Z","durationMs":1.5}],
  "tracing":{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"Root=1-..."}}}"#,
        );
        let Platform::RuntimeDone(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.status, Some(Status::Success));
        assert_eq!(r.metrics.duration_ms, Some(140.0));
        assert_eq!(r.metrics.produced_bytes, Some(16));
        let names: Vec<&str> = r.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["responseLatency", "responseDuration", "runtimeOverhead"]
        );
        assert_eq!(r.spans[0].duration_ms, Some(23.02));
    }

    #[test]
    fn runtime_done_timeout_without_metrics() {
        let p = platform(
            r#"{"time":"t","type":"platform.runtimeDone","record":{"requestId":"r1","status":"timeout","errorType":"Sandbox.Timeout"}}"#,
        );
        let Platform::RuntimeDone(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.status, Some(Status::Timeout));
        assert_eq!(r.error_type.as_deref(), Some("Sandbox.Timeout"));
        assert_eq!(r.metrics.duration_ms, None);
        assert!(r.spans.is_empty());
    }

    #[test]
    fn report_with_float_billed_duration() {
        let p = platform(
            r#"{"time":"2022-10-12T00:01:15.000Z","type":"platform.report","record":{
  "requestId":"6d68ca91-49c9-448d-89b8-7ca3e6dc66aa","status":"success",
  "metrics":{"durationMs":693.92,"billedDurationMs":694.0,"memorySizeMB":128,"maxMemoryUsedMB":84,"initDurationMs":397.68},
  "spans":[{"name":"extensionOverhead","start":"2022-10-12T00:01:14.900Z","durationMs":12.3}]}}"#,
        );
        let Platform::Report(r) = p else {
            panic!("{p:?}")
        };
        let m = &r.metrics;
        assert_eq!(m.duration_ms, Some(693.92));
        assert_eq!(m.billed_duration_ms, Some(694));
        assert_eq!(m.memory_size_mb, Some(128));
        assert_eq!(m.max_memory_used_mb, Some(84));
        assert_eq!(m.init_duration_ms, Some(397.68));
        assert_eq!(m.restore_duration_ms, None);
        assert_eq!(r.spans[0].name, "extensionOverhead");
    }

    #[test]
    fn managed_instances_report_has_duration_only() {
        let p = platform(
            r#"{"time":"t","type":"platform.report","record":{"requestId":"r","status":"success","metrics":{"durationMs":5.5},
              "spans":[{"name":"responseLatency","start":"t","durationMs":1},{"name":"responseDuration","start":"t","durationMs":0.1}]}}"#,
        );
        let Platform::Report(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.metrics.duration_ms, Some(5.5));
        assert_eq!(r.metrics.billed_duration_ms, None);
        assert_eq!(r.metrics.memory_size_mb, None);
    }

    #[test]
    fn restore_events() {
        let p = platform(
            r#"{"time":"t","type":"platform.restoreStart","record":{"functionName":"f","functionVersion":"3","instanceMaxMemory":"512"}}"#,
        );
        let Platform::RestoreStart(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.instance_max_memory, Some(512));
        // The Logs API example has an empty record.
        assert!(matches!(
            platform(r#"{"time":"t","type":"platform.restoreStart","record":{}}"#),
            Platform::RestoreStart(_)
        ));
        let p = platform(
            r#"{"time":"t","type":"platform.restoreRuntimeDone","record":{"status":"success"}}"#,
        );
        assert!(matches!(
            p,
            Platform::RestoreRuntimeDone(PhaseDone {
                status: Some(Status::Success),
                ..
            })
        ));
        let p = platform(
            r#"{"time":"2022-10-12T00:00:15.064Z","type":"platform.restoreReport","record":{"status":"success","metrics":{"durationMs":15.19}}}"#,
        );
        let Platform::RestoreReport(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.metrics.duration_ms, Some(15.19));
    }

    #[test]
    fn extension_subscription_and_logs_dropped() {
        let p = platform(
            r#"{"time":"2022-10-12T00:02:15.000Z","type":"platform.extension","record":{"name":"my-telemetry-extension","state":"Ready","events":["INVOKE","SHUTDOWN"]}}"#,
        );
        let Platform::Extension(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.events, ["INVOKE", "SHUTDOWN"]);
        let p = platform(
            r#"{"time":"2022-10-12T00:02:35.000Z","type":"platform.telemetrySubscription","record":{"name":"my-telemetry-extension","state":"Subscribed","types":["platform","function"]}}"#,
        );
        let Platform::TelemetrySubscription(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.state.as_deref(), Some("Subscribed"));
        let p = platform(
            r#"{"time":"2022-10-12T00:02:35.000Z","type":"platform.logsDropped","record":{"droppedBytes":12345,"droppedRecords":123,
  "reason":"Some logs were dropped because the downstream consumer is slower than the logs production rate"}}"#,
        );
        let Platform::LogsDropped(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.dropped_bytes, Some(12345));
        assert_eq!(r.dropped_records, Some(123));
    }

    #[test]
    fn function_records_text_and_json() {
        let (events, _) = one(
            r#"{"time":"2024-05-01T12:00:00.123Z","type":"function","record":"2024-05-01T12:00:00.122Z\tabc\tINFO\thello\n"}"#,
        );
        assert_eq!(
            events,
            [Event::Log(LogLine {
                time_ms: Some(1_714_564_800_123),
                source: LogSource::Function,
                record: LogRecord::Text("2024-05-01T12:00:00.122Z\tabc\tINFO\thello\n".into()),
                size: 40,
                request_id: None,
                trace_id: None,
            })]
        );
        let (events, _) = one(
            r#"{"time":"t","type":"function","record":{"timestamp":"x","level":"INFO","requestId":"r","message":{"_aws":{}}}}"#,
        );
        let [Event::Log(line)] = events.as_slice() else {
            panic!("{events:?}")
        };
        let LogRecord::Json(v) = &line.record else {
            panic!("{line:?}")
        };
        assert_eq!(v["requestId"], "r");
        assert!(v["message"]["_aws"].is_object());

        let (events, _) = one(r#"{"time":"t","type":"extension","record":"loupe WARN something"}"#);
        let [Event::Log(line)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(line.source, LogSource::Extension);
    }

    #[test]
    fn log_records_are_unescaped_in_any_key_order() {
        let line = r#"{\"_aws\":{\"k\":\"\\u00e9\\n\"}} caf\u00e9 \ud83d\ude00 \"q\" \\ \/"#;
        let want = r#"{"_aws":{"k":"\u00e9\n"}} café 😀 "q" \ /"#;
        for body in [
            format!(
                r#"[{{"time":"2024-05-01T12:00:00.123Z","type":"function","record":"{line}"}}]"#
            ),
            format!(
                r#"[{{"record":"{line}","time":"2024-05-01T12:00:00.123Z","type":"function"}}]"#
            ),
        ] {
            let stats = Stats::default();
            let events = decode_batch(body.as_bytes(), &stats);
            let [Event::Log(l)] = events.as_slice() else {
                panic!("{body}: {events:?}")
            };
            assert_eq!(l.record, LogRecord::Text(want.into()), "{body}");
            assert_eq!(l.time_ms, Some(1_714_564_800_123));
            assert_eq!(stats.snapshot().malformed_events, 0);
        }
        // A JSON record's size is about its compact text's.
        let (events, _) =
            one(r#"{"time":"t","type":"extension","record":{"a":[1,"bc"],"d":null}}"#);
        let [Event::Log(l)] = events.as_slice() else {
            panic!("{events:?}")
        };
        let text = r#"{"a":[1,"bc"],"d":null}"#;
        assert!(
            l.size.abs_diff(text.len()) <= 8,
            "{} vs {}",
            l.size,
            text.len()
        );
        assert_eq!(l.time_ms, None);
    }

    #[test]
    fn envelope_fields_of_the_wrong_type_cost_only_their_event() {
        let body = r#"[
          {"time":5,"type":"function","record":"a"},
          {"time":"t","type":["function"],"record":"b"},
          {"time":null,"type":"function","record":"kept"},
          "a string", null, true, 1.5, [1, [2]], {"record":"no type"},
          {"type":"platform.start","record":"not an object"},
          {"type":"function","record":"kept too","type":"function","extra":{"x":[1]}}
        ]"#;
        let stats = Stats::default();
        let events = decode_batch(body.as_bytes(), &stats);
        let lines: Vec<&LogRecord> = events
            .iter()
            .filter_map(|e| match e {
                Event::Log(l) => Some(&l.record),
                Event::Platform(_) => None,
            })
            .collect();
        assert_eq!(
            lines,
            [
                &LogRecord::Text("kept".into()),
                &LogRecord::Text("kept too".into())
            ]
        );
        let s = stats.snapshot();
        assert_eq!(s.malformed_events, 9);
        assert_eq!(s.unknown_fields, 1);
        assert_eq!(s.malformed_bodies, 0);
    }

    /// The shared fixture of `function` record shapes: strings in Text format, objects in JSON
    /// format; each line carries an extra `_shape` note, an unknown envelope field.
    #[test]
    fn function_record_shapes_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/emf/telemetry-api-shapes.SYNTHETIC.jsonl"
        );
        let text = std::fs::read_to_string(path).expect("fixture readable");
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let body = format!("[{}]", lines.join(","));
        let stats = Stats::default();
        let events = decode_batch(body.as_bytes(), &stats);
        assert_eq!(events.len(), lines.len());
        let shapes: Vec<&str> = events
            .iter()
            .map(|e| match e {
                Event::Log(LogLine {
                    record: LogRecord::Text(_),
                    ..
                }) => "text",
                Event::Log(LogLine {
                    record: LogRecord::Json(_),
                    ..
                }) => "json",
                Event::Platform(_) => "platform",
            })
            .collect();
        assert_eq!(shapes, ["text", "text", "text", "json", "json", "json"]);
        let s = stats.snapshot();
        assert_eq!(s.unknown_fields, lines.len() as u64);
        assert_eq!(s.malformed_events, 0);
    }

    #[test]
    fn logs_api_shapes() {
        let body = r#"[
          {"time":"t","type":"platform.start","record":{"requestId":"r1","version":"$LATEST"}},
          {"time":"t","type":"platform.end","record":{"requestId":"r1"}},
          {"time":"t","type":"platform.report","record":{"requestId":"r1","metrics":{"durationMs":1.5,"billedDurationMs":2,"memorySizeMB":128,"maxMemoryUsedMB":60}}},
          {"time":"t","type":"platform.fault","record":"RequestId: r1 Process exited before completing request"},
          {"time":"t","type":"platform.logsSubscription","record":{"name":"loupe","state":"Subscribed","types":["platform","function"]}},
          {"time":"t","type":"platform.runtimeDone","record":{"requestId":"r1","status":"success"}},
          {"time":"t","type":"function","record":"plain line"}
        ]"#;
        let stats = Stats::default();
        let events = decode_batch(body.as_bytes(), &stats);
        assert_eq!(events.len(), 7);
        let kinds: Vec<&Platform> = events
            .iter()
            .filter_map(|e| match e {
                Event::Platform(p) => Some(&p.kind),
                Event::Log(_) => None,
            })
            .collect();
        assert_eq!(kinds.len(), 6);
        assert!(matches!(kinds[1], Platform::End { request_id } if request_id == "r1"));
        assert!(matches!(kinds[3], Platform::Fault(f) if f.contains("Process exited")));
        let s = stats.snapshot();
        assert_eq!(s.malformed_events, 0);
        assert_eq!(s.events.get("platform.end"), Some(&1));
    }

    #[test]
    fn one_bad_event_never_costs_the_batch() {
        let body = r#"[
          {"time":"t","type":"platform.start","record":{"requestId":"good1"}},
          {"time":"t","type":"platform.start","record":{"noRequestId":true}},
          {"time":"t","type":"platform.brandNew","record":{"x":1}},
          {"time":"t","type":"platform.report","record":{"requestId":"r","metrics":{"billedDurationMs":"many"}}},
          42,
          {"type":"platform.start"},
          {"time":"t","type":"platform.start","record":{"requestId":"good2","newField":{"a":[1]},"other":1},"envelopeNew":true}
        ]"#;
        let stats = Stats::default();
        let events = decode_batch(body.as_bytes(), &stats);
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Platform(p) => match &p.kind {
                    Platform::Start(s) => Some(s.request_id.as_str()),
                    _ => None,
                },
                Event::Log(_) => None,
            })
            .collect();
        assert_eq!(ids, ["good1", "good2"]);
        let s = stats.snapshot();
        assert_eq!(s.unknown_types, 1);
        assert_eq!(s.malformed_events, 4);
        assert_eq!(s.unknown_fields, 3);
        assert_eq!(s.events.get("platform.start"), Some(&2));
    }

    #[test]
    fn record_fields_are_read_leniently_and_checked() {
        // null is an absent field (a known one, not counted); nested unknowns are not counted;
        // a numeric string is a number; a non-finite duration is absent.
        let p = platform(
            r#"{"time":"t","type":"platform.report","record":{"requestId":"r","status":null,"tenantId":null,
              "metrics":{"durationMs":"NaN","billedDurationMs":" 3 ","newMetric":1},
              "spans":[{"name":"s","durationMs":"2.5","more":true}],"tracing":{"type":"X","future":1},"future":{}}}"#,
        );
        let Platform::Report(r) = p else {
            panic!("{p:?}")
        };
        assert_eq!(r.status, None);
        assert_eq!(r.metrics.duration_ms, None);
        assert_eq!(r.metrics.billed_duration_ms, Some(3));
        assert_eq!(r.spans[0].duration_ms, Some(2.5));
        assert_eq!(r.tracing.and_then(|t| t.kind).as_deref(), Some("X"));
        assert_eq!(r.extra.unknown_fields, 1);

        // A known field of the wrong type costs its event only.
        for record in [
            r#"{"requestId":5}"#,
            r#"{"requestId":"r","status":1}"#,
            r#"{"requestId":"r","metrics":[]}"#,
            r#"{"requestId":"r","metrics":{"billedDurationMs":-1}}"#,
            r#"{"requestId":"r","spans":[{"start":"t"}]}"#,
            r#"{"requestId":"r","spans":{}}"#,
            r#"{"requestId":"r","tracing":"x"}"#,
            r#"{"requestId":null}"#,
            r#"[1]"#,
        ] {
            let (events, s) = one(&format!(
                r#"{{"time":"t","type":"platform.report","record":{record}}}"#
            ));
            assert!(events.is_empty(), "{record}");
            assert_eq!(s.malformed_events, 1, "{record}");
        }
        let (events, s) = one(
            r#"{"time":"t","type":"platform.telemetrySubscription","record":{"types":["platform",1]}}"#,
        );
        assert!(events.is_empty());
        assert_eq!(s.malformed_events, 1);
        let (events, s) = one(r#"{"time":"t","type":"platform.fault","record":{"a":1}}"#);
        assert!(events.is_empty());
        assert_eq!(s.malformed_events, 1);
    }

    #[test]
    fn end_counts_its_unknown_fields() {
        let (events, s) =
            one(r#"{"time":"t","type":"platform.end","record":{"requestId":"r","a":1,"b":null}}"#);
        assert!(matches!(
            events.as_slice(),
            [Event::Platform(p)] if matches!(&p.kind, Platform::End { request_id } if request_id == "r")
        ));
        assert_eq!(s.unknown_fields, 2);
    }

    #[test]
    fn malformed_bodies_are_counted() {
        let stats = Stats::default();
        for body in [&b"{not json"[..], b"{\"type\":\"function\"}", b"", b"[1,"] {
            assert!(decode_batch(body, &stats).is_empty());
        }
        let s = stats.snapshot();
        assert_eq!(s.malformed_bodies, 4);
        assert_eq!(s.batches, 4);
    }

    #[test]
    fn oversized_record_is_dropped_and_neighbours_kept() {
        let big = "x".repeat(MAX_RECORD_BYTES + 1);
        let body = format!(
            r#"[{{"time":"t","type":"function","record":"{big}"}},{{"time":"t","type":"function","record":"small"}}]"#
        );
        let stats = Stats::default();
        let events = decode_batch(body.as_bytes(), &stats);
        assert_eq!(events.len(), 1);
        let s = stats.snapshot();
        assert_eq!(s.oversized_records, 1);
        assert_eq!(s.events.get("function"), Some(&1));
    }

    #[test]
    fn oversized_platform_record_is_dropped() {
        let id = "r".repeat(MAX_PLATFORM_RECORD_BYTES);
        let body = format!(
            r#"[{{"time":"t","type":"platform.start","record":{{"requestId":"{id}"}}}},{{"time":"t","type":"platform.start","record":{{"requestId":"ok"}}}}]"#
        );
        let stats = Stats::default();
        let events = decode_batch(body.as_bytes(), &stats);
        assert_eq!(events.len(), 1);
        assert_eq!(stats.snapshot().oversized_records, 1);
    }

    #[test]
    fn status_is_open_and_case_insensitive() {
        assert_eq!(Status::parse("SUCCESS"), Status::Success);
        assert_eq!(Status::parse("Timeout"), Status::Timeout);
        assert_eq!(Status::parse("brandNew"), Status::Other("brandNew".into()));
        assert_eq!(Status::parse("brandNew").as_str(), "brandNew");
    }

    #[test]
    fn event_type_names_round_trip() {
        for (i, t) in EventType::ALL.into_iter().enumerate() {
            assert_eq!(EventType::from_name(t.name()), Some(t));
            assert_eq!(t.index(), i);
        }
        assert_eq!(EventType::from_name("platform.other"), None);
    }
}
