//! Requests from a batch: encode (protobuf or NDJSON), gzip with one reused compressor, and split
//! in halves until every request is under [`MAX_REQUEST_BYTES`] compressed.
//!
//! In: [`Point`]s, [`Event`]s and [`Span`]s of one flush. Out: [`Encoded`] requests, each knowing how many
//! points and events it carries (for the counters of what was sent or dropped), and what could not
//! be encoded at all (a single item over the limit). No I/O.

use bytes::Bytes;
use prost::Message;

use super::gzip::Gzip;
use super::metrics::{Point, metrics_request};
use super::ndjson;
use super::otlp::{Signal, encode_logs};
use super::proto::resource::v1::Resource;
use super::traces::traces_request;
use crate::config::{Protocol, Temporality};
use crate::event::Event;
use crate::trace::Span;

/// The most one request may weigh, compressed.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// The most events one request carries.
pub const MAX_EVENTS_PER_REQUEST: usize = 1_000;

pub const PROTOBUF: &str = "application/x-protobuf";

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// OTLP metrics (`/v1/metrics`).
    Metrics,
    /// OTLP logs (`/v1/logs`).
    Logs,
    /// OTLP traces (`/v1/traces`).
    Traces,
    /// NDJSON with metrics, events and spans, posted to the metrics URL.
    Ndjson,
}

impl Target {
    pub fn content_type(self) -> &'static str {
        match self {
            Target::Metrics | Target::Logs | Target::Traces => PROTOBUF,
            Target::Ndjson => ndjson::CONTENT_TYPE,
        }
    }

    /// How a partial success in its answer is read.
    pub fn signal(self) -> Option<Signal> {
        match self {
            Target::Metrics => Some(Signal::Metrics),
            Target::Logs => Some(Signal::Logs),
            Target::Traces => Some(Signal::Traces),
            Target::Ndjson => None,
        }
    }
}

/// One request, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub target: Target,
    /// gzip-compressed.
    pub body: Bytes,
    /// Bytes before compression.
    pub raw_bytes: usize,
    pub points: u64,
    pub events: u64,
    /// Attempts made so far (0 when new).
    pub attempts: u32,
}

/// What could not be encoded within the request limit, and was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Oversized {
    pub points: u64,
    pub events: u64,
}

pub struct Encoder {
    protocol: Protocol,
    temporality: Temporality,
    gzip: Gzip,
    max_bytes: usize,
    /// The uncompressed bytes of the request being built, reused from one request to the next.
    raw: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Item<'a> {
    Point(&'a Point),
    Event(&'a Event),
    Span(&'a Span),
}

impl Encoder {
    pub fn new(protocol: Protocol, temporality: Temporality) -> Encoder {
        Encoder::with_limit(protocol, temporality, MAX_REQUEST_BYTES)
    }

    /// With another request limit (tests).
    pub fn with_limit(protocol: Protocol, temporality: Temporality, max_bytes: usize) -> Encoder {
        Encoder {
            protocol,
            temporality,
            gzip: Gzip::default(),
            max_bytes: max_bytes.max(64),
            raw: Vec::new(),
        }
    }

    /// Requests for `points`, `events` and `spans`, each under the limit; `out` gets them in
    /// order. Spans are counted with the events (`Encoded::events`, [`Oversized::events`]).
    pub fn encode(
        &mut self,
        resource: &Resource,
        points: &[Point],
        events: &[Event],
        spans: &[Span],
        out: &mut Vec<Encoded>,
    ) -> Oversized {
        let mut oversized = Oversized::default();
        match self.protocol {
            Protocol::Protobuf => {
                let t = self.temporality;
                if !points.is_empty() {
                    let items: Vec<Item<'_>> = points.iter().map(Item::Point).collect();
                    self.split(
                        Target::Metrics,
                        &items,
                        out,
                        &mut oversized,
                        &mut |i, raw| {
                            // Encoding into a Vec cannot fail: it grows as needed.
                            let _ = metrics_request(resource, &points_of(i), t).encode(raw);
                        },
                    );
                }
                for chunk in events.chunks(MAX_EVENTS_PER_REQUEST) {
                    let items: Vec<Item<'_>> = chunk.iter().map(Item::Event).collect();
                    self.split(Target::Logs, &items, out, &mut oversized, &mut |i, raw| {
                        encode_logs(resource, &events_of(i), raw)
                    });
                }
                for chunk in spans.chunks(MAX_EVENTS_PER_REQUEST) {
                    let items: Vec<Item<'_>> = chunk.iter().map(Item::Span).collect();
                    self.split(
                        Target::Traces,
                        &items,
                        out,
                        &mut oversized,
                        &mut |i, raw| {
                            // Encoding into a Vec cannot fail: it grows as needed.
                            let _ = traces_request(resource, &spans_of(i)).encode(raw);
                        },
                    );
                }
            }
            Protocol::Json => {
                let t = self.temporality;
                let head = ndjson::resource_line(resource);
                let items: Vec<Item<'_>> = points
                    .iter()
                    .map(Item::Point)
                    .chain(events.iter().map(Item::Event))
                    .chain(spans.iter().map(Item::Span))
                    .collect();
                // Points are few and small; events are capped per request as in protobuf.
                let mut start = 0;
                while start < items.len() {
                    let mut end = start;
                    let mut n_events = 0;
                    while end < items.len() {
                        if let Some(Item::Event(_) | Item::Span(_)) = items.get(end) {
                            if n_events == MAX_EVENTS_PER_REQUEST {
                                break;
                            }
                            n_events += 1;
                        }
                        end += 1;
                    }
                    let chunk = items.get(start..end).unwrap_or(&[]);
                    self.split(Target::Ndjson, chunk, out, &mut oversized, &mut |i, raw| {
                        ndjson::encode(&head, &points_of(i), &events_of(i), &spans_of(i), t, raw)
                    });
                    start = end;
                }
            }
        }
        oversized
    }

    fn split(
        &mut self,
        target: Target,
        items: &[Item<'_>],
        out: &mut Vec<Encoded>,
        oversized: &mut Oversized,
        encode: &mut dyn FnMut(&[Item<'_>], &mut Vec<u8>),
    ) {
        if items.is_empty() {
            return;
        }
        self.raw.clear();
        encode(items, &mut self.raw);
        let body = self.gzip.compress(&self.raw);
        if body.len() <= self.max_bytes && !body.is_empty() {
            let (points, events) = count(items);
            out.push(Encoded {
                target,
                body: Bytes::from(body),
                raw_bytes: self.raw.len(),
                points,
                events,
                attempts: 0,
            });
            return;
        }
        if items.len() == 1 {
            let (points, events) = count(items);
            oversized.points += points;
            oversized.events += events;
            return;
        }
        let (a, b) = items.split_at(items.len() / 2);
        self.split(target, a, out, oversized, encode);
        self.split(target, b, out, oversized, encode);
    }
}

fn count(items: &[Item<'_>]) -> (u64, u64) {
    let points = items.iter().filter(|i| matches!(i, Item::Point(_))).count() as u64;
    (points, items.len() as u64 - points)
}

// The metrics encoder takes owned points; the clones are of one request's points (few).
fn points_of(items: &[Item<'_>]) -> Vec<Point> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Point(p) => Some((*p).clone()),
            Item::Event(_) | Item::Span(_) => None,
        })
        .collect()
}

fn events_of<'a>(items: &[Item<'a>]) -> Vec<&'a Event> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(*e),
            Item::Point(_) | Item::Span(_) => None,
        })
        .collect()
}

// Spans are cloned per request for the prost message (a request's worth at a time).
fn spans_of(items: &[Item<'_>]) -> Vec<Span> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Span(s) => Some((*s).clone()),
            Item::Point(_) | Item::Event(_) => None,
        })
        .collect()
}
