//! Counters of the telemetry intake: what arrived, what was skipped and why, what was dropped.
//!
//! In: increments from the listener, the decoder and the log consumer (plain atomics, so the
//! listener never waits on a lock). Out: a [`StatsSnapshot`] for the shutdown summary, and later
//! for loupe's own metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::events::EventType;

#[derive(Debug, Default)]
pub struct Stats {
    events: [AtomicU64; EventType::ALL.len()],
    batches: AtomicU64,
    unknown_types: AtomicU64,
    unknown_fields: AtomicU64,
    malformed_events: AtomicU64,
    malformed_bodies: AtomicU64,
    oversized_records: AtomicU64,
    oversized_bodies: AtomicU64,
    log_lines_dropped: AtomicU64,
    platform_events_dropped: AtomicU64,
    log_lines_consumed: AtomicU64,
    log_bytes_consumed: AtomicU64,
    lambda_dropped_records: AtomicU64,
    lambda_dropped_bytes: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// Decoded events per type name (only types seen at least once).
    pub events: BTreeMap<&'static str, u64>,
    /// Bodies received (POSTs from Lambda).
    pub batches: u64,
    pub unknown_types: u64,
    pub unknown_fields: u64,
    pub malformed_events: u64,
    pub malformed_bodies: u64,
    /// Records over [`super::events::MAX_RECORD_BYTES`] (log lines) or
    /// [`super::events::MAX_PLATFORM_RECORD_BYTES`] (platform events), dropped.
    pub oversized_records: u64,
    /// Bodies over the listener's cap, drained and dropped.
    pub oversized_bodies: u64,
    /// `function`/`extension` lines dropped because the pipeline queue was full.
    pub log_lines_dropped: u64,
    /// Platform events dropped because the tracker's queue was full.
    pub platform_events_dropped: u64,
    pub log_lines_consumed: u64,
    pub log_bytes_consumed: u64,
    /// What Lambda itself reported dropping (`platform.logsDropped`).
    pub lambda_dropped_records: u64,
    pub lambda_dropped_bytes: u64,
}

impl Stats {
    pub fn event(&self, ty: EventType) {
        self.events(ty, 1);
    }
    /// `n` events of type `ty` (one add per type and body, not per event).
    pub fn events(&self, ty: EventType, n: u64) {
        if n > 0 {
            // `events` has one slot per entry of `EventType::ALL`, and `index` is the position
            // there.
            self.events[ty.index()].fetch_add(n, Relaxed);
        }
    }
    pub fn batch(&self) {
        self.batches.fetch_add(1, Relaxed);
    }
    pub fn unknown_type(&self) {
        self.unknown_types(1);
    }
    pub fn unknown_types(&self, n: u64) {
        if n > 0 {
            self.unknown_types.fetch_add(n, Relaxed);
        }
    }
    pub fn unknown_fields(&self, n: u32) {
        if n > 0 {
            self.unknown_fields.fetch_add(u64::from(n), Relaxed);
        }
    }
    pub fn malformed_event(&self) {
        self.malformed_events(1);
    }
    pub fn malformed_events(&self, n: u64) {
        if n > 0 {
            self.malformed_events.fetch_add(n, Relaxed);
        }
    }
    pub fn malformed_body(&self) {
        self.malformed_bodies.fetch_add(1, Relaxed);
    }
    pub fn oversized_record(&self) {
        self.oversized_records(1);
    }
    pub fn oversized_records(&self, n: u64) {
        if n > 0 {
            self.oversized_records.fetch_add(n, Relaxed);
        }
    }
    pub fn oversized_body(&self) {
        self.oversized_bodies.fetch_add(1, Relaxed);
    }
    pub fn log_line_dropped(&self) {
        self.log_lines_dropped.fetch_add(1, Relaxed);
    }
    pub fn platform_event_dropped(&self) {
        self.platform_events_dropped.fetch_add(1, Relaxed);
    }
    pub fn log_line_consumed(&self, bytes: usize) {
        self.log_lines_consumed.fetch_add(1, Relaxed);
        self.log_bytes_consumed.fetch_add(bytes as u64, Relaxed);
    }
    pub fn lambda_dropped(&self, records: u64, bytes: u64) {
        self.lambda_dropped_records.fetch_add(records, Relaxed);
        self.lambda_dropped_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        // Inserted one by one: `collect()` into a BTreeMap sorts first, with a sort's code.
        let mut events = BTreeMap::new();
        events.extend(
            EventType::ALL
                .into_iter()
                .zip(&self.events)
                .map(|(t, n)| (t.name(), n.load(Relaxed)))
                .filter(|(_, n)| *n > 0),
        );
        StatsSnapshot {
            events,
            batches: self.batches.load(Relaxed),
            unknown_types: self.unknown_types.load(Relaxed),
            unknown_fields: self.unknown_fields.load(Relaxed),
            malformed_events: self.malformed_events.load(Relaxed),
            malformed_bodies: self.malformed_bodies.load(Relaxed),
            oversized_records: self.oversized_records.load(Relaxed),
            oversized_bodies: self.oversized_bodies.load(Relaxed),
            log_lines_dropped: self.log_lines_dropped.load(Relaxed),
            platform_events_dropped: self.platform_events_dropped.load(Relaxed),
            log_lines_consumed: self.log_lines_consumed.load(Relaxed),
            log_bytes_consumed: self.log_bytes_consumed.load(Relaxed),
            lambda_dropped_records: self.lambda_dropped_records.load(Relaxed),
            lambda_dropped_bytes: self.lambda_dropped_bytes.load(Relaxed),
        }
    }
}
