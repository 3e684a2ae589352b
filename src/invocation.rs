//! The invocation tracker: per request id, what the platform said about it (start, runtimeDone,
//! report), plus init and restore reports and cold start.
//!
//! In: platform events from the telemetry listener, and queries from the run loop, over one
//! bounded channel. Out: answers on oneshot channels (`wait_runtime_done`, drains of completed
//! [`Invocation`] records for platform metrics), and one `debug` line per invocation when it
//! completes or is evicted: `invocation {"requestId":..,"start":true,"runtimeDone":"success",
//! "report":true,...}`.
//!
//! One task owns the state ([`Tracker`], plain data, tested on its own). Invocations may overlap
//! (Managed Instances run several at once) and `platform.report` for one invocation arrives after
//! the next has begun, or at SHUTDOWN; everything is keyed by request id and late events are
//! accepted. An invocation is complete when its report arrives. Memory is bounded: the oldest
//! open invocation is evicted (and counted) when too many are open, and completed records wait
//! for a drain in a capped queue.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::lambda::events::{PhaseReport, Platform, PlatformEvent, Span, Status};
use crate::lambda::listener::PlatformSink;

/// Open invocations kept at once.
pub const MAX_OPEN: usize = 1_024;
/// Completed records kept until drained.
pub const MAX_COMPLETED: usize = 4_096;
/// Init and restore reports kept until drained.
const MAX_PHASES: usize = 64;
/// Waiters for runtimeDone at once.
const MAX_WAITERS: usize = 256;
/// Depth of the command channel.
pub const CHANNEL_DEPTH: usize = 4_096;

/// Everything known about one invocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    pub request_id: String,
    /// `platform.start` was seen.
    pub start: bool,
    /// When the platform generated `platform.start`.
    pub start_time: Option<String>,
    pub version: Option<String>,
    /// The X-Ray trace header value (`Root=...;Parent=...;Sampled=...`).
    pub trace_id: Option<String>,
    pub tenant_id: Option<String>,
    /// The first invocation after init or restore.
    pub cold_start: bool,
    pub runtime_done: Option<RuntimeDoneInfo>,
    pub report: Option<ReportInfo>,
    /// Logs API `platform.fault` lines that named this request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// Pushed out before its report arrived (too many open, or at SHUTDOWN).
    pub evicted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDoneInfo {
    pub status: String,
    pub error_type: Option<String>,
    pub duration_ms: Option<f64>,
    pub produced_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<SpanInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportInfo {
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<u64>,
    #[serde(rename = "memorySizeMB")]
    pub memory_size_mb: Option<u64>,
    #[serde(rename = "maxMemoryUsedMB")]
    pub max_memory_used_mb: Option<u64>,
    pub init_duration_ms: Option<f64>,
    pub restore_duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<SpanInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanInfo {
    pub name: String,
    pub start: Option<String>,
    pub duration_ms: Option<f64>,
}

/// An init or restore phase, from its report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseInfo {
    /// `init` or `restore`.
    pub kind: &'static str,
    pub initialization_type: Option<String>,
    pub phase: Option<String>,
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub duration_ms: Option<f64>,
}

/// What a drain hands over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Drained {
    pub invocations: Vec<Invocation>,
    pub phases: Vec<PhaseInfo>,
}

/// The tracker's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerStats {
    pub started: u64,
    pub completed: u64,
    /// Open invocations pushed out by newer ones.
    pub evicted: u64,
    /// Open invocations closed at SHUTDOWN without a report.
    pub unfinished: u64,
    /// Completed records dropped because nobody drained them in time.
    pub records_dropped: u64,
    pub cold_starts: u64,
    pub open: u64,
}

/// The tracker's state, no I/O.
#[derive(Debug)]
pub struct Tracker {
    open: HashMap<String, Invocation>,
    /// Request ids in the order they were opened; may hold ids already closed (skipped lazily).
    order: VecDeque<String>,
    completed: VecDeque<Invocation>,
    phases: VecDeque<PhaseInfo>,
    /// Request ids whose runtimeDone was applied, most recent last (bounded).
    done: VecDeque<(String, RuntimeDoneInfo)>,
    /// The next invocation is the first after init or restore.
    cold_pending: bool,
    max_open: usize,
    stats: TrackerStats,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(MAX_OPEN)
    }
}

impl Tracker {
    pub fn new(max_open: usize) -> Tracker {
        Tracker {
            open: HashMap::new(),
            order: VecDeque::new(),
            completed: VecDeque::new(),
            phases: VecDeque::new(),
            done: VecDeque::new(),
            cold_pending: true,
            max_open: max_open.max(1),
            stats: TrackerStats::default(),
        }
    }

    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            open: self.open.len() as u64,
            ..self.stats
        }
    }

    /// Applies one platform event.
    pub fn apply(&mut self, event: PlatformEvent) {
        match event.kind {
            Platform::InitStart(_) | Platform::RestoreStart(_) => self.cold_pending = true,
            Platform::Start(s) => {
                let seen = self.open.get(&s.request_id).is_some_and(|i| i.start);
                if seen {
                    return; // a repeated start changes nothing
                }
                let cold = std::mem::take(&mut self.cold_pending);
                let inv = self.entry(&s.request_id);
                inv.start = true;
                inv.start_time = event.time;
                inv.version = s.version;
                inv.tenant_id = s.tenant_id;
                inv.cold_start |= cold;
                if let Some(v) = s.tracing.and_then(|t| t.value) {
                    inv.trace_id = Some(v);
                }
                self.stats.started += 1;
                if cold {
                    self.stats.cold_starts += 1;
                }
            }
            Platform::RuntimeDone(r) => {
                let info = RuntimeDoneInfo {
                    status: r
                        .status
                        .as_ref()
                        .map_or("unknown", Status::as_str)
                        .to_string(),
                    error_type: r.error_type,
                    duration_ms: r.metrics.duration_ms,
                    produced_bytes: r.metrics.produced_bytes,
                    spans: spans(r.spans),
                };
                self.remember_done(&r.request_id, info.clone());
                let inv = self.entry(&r.request_id);
                if inv.trace_id.is_none() {
                    inv.trace_id = r.tracing.and_then(|t| t.value);
                }
                inv.runtime_done = Some(info);
            }
            Platform::Report(r) => {
                let m = r.metrics;
                let report = ReportInfo {
                    status: r.status.as_ref().map(|s| s.as_str().to_string()),
                    error_type: r.error_type,
                    duration_ms: m.duration_ms,
                    billed_duration_ms: m.billed_duration_ms,
                    memory_size_mb: m.memory_size_mb,
                    max_memory_used_mb: m.max_memory_used_mb,
                    init_duration_ms: m.init_duration_ms,
                    restore_duration_ms: m.restore_duration_ms,
                    spans: spans(r.spans),
                };
                let mut inv = self
                    .open
                    .remove(&r.request_id)
                    .unwrap_or_else(|| Invocation {
                        request_id: r.request_id.clone(),
                        ..Invocation::default()
                    });
                // A report with an init or restore duration closes a cold start, even when its
                // platform.start was never seen.
                if (report.init_duration_ms.is_some() || report.restore_duration_ms.is_some())
                    && !inv.cold_start
                {
                    inv.cold_start = true;
                    self.stats.cold_starts += 1;
                    if !inv.start {
                        // The init this report belongs to is used up.
                        self.cold_pending = false;
                    }
                }
                if inv.trace_id.is_none() {
                    inv.trace_id = r.tracing.and_then(|t| t.value);
                }
                inv.report = Some(report);
                self.stats.completed += 1;
                self.close(inv);
            }
            Platform::InitReport(r) => self.push_phase(phase("init", r)),
            Platform::RestoreReport(r) => self.push_phase(phase("restore", r)),
            // Attached to an open invocation only: a fault never opens one (it could then wait
            // for a report that already came).
            Platform::Fault(text) => {
                let open = fault_request_id(&text).and_then(|id| self.open.get_mut(id));
                if let Some(inv) = open {
                    if inv.faults.len() < 4 {
                        inv.faults.push(text.chars().take(1_000).collect());
                    }
                }
            }
            // Logs API (schema 2020-08-15) has no runtimeDone: its `platform.end` is the signal
            // that the runtime finished, for those waiting on it. The record keeps no status.
            Platform::End { request_id } => {
                if self.runtime_done(&request_id).is_none() {
                    let info = RuntimeDoneInfo {
                        status: "end".to_string(),
                        error_type: None,
                        duration_ms: None,
                        produced_bytes: None,
                        spans: Vec::new(),
                    };
                    self.remember_done(&request_id, info);
                }
            }
            Platform::InitRuntimeDone(_)
            | Platform::RestoreRuntimeDone(_)
            | Platform::Extension(_)
            | Platform::TelemetrySubscription(_)
            | Platform::LogsSubscription(_)
            | Platform::LogsDropped(_) => {}
        }
    }

    /// Open invocations whose runtime finished but whose report has not arrived yet.
    pub fn awaiting_report(&self) -> usize {
        self.open
            .values()
            .filter(|i| i.runtime_done.is_some())
            .count()
    }

    /// runtimeDone for `request_id`, if it has been applied (recently).
    pub fn runtime_done(&self, request_id: &str) -> Option<&RuntimeDoneInfo> {
        self.done
            .iter()
            .rev()
            .find(|(id, _)| id == request_id)
            .map(|(_, info)| info)
    }

    /// Takes the completed records and phase reports.
    pub fn drain(&mut self) -> Drained {
        Drained {
            invocations: self.completed.drain(..).collect(),
            phases: self.phases.drain(..).collect(),
        }
    }

    /// Closes every open invocation (at SHUTDOWN: no report will come for them any more).
    pub fn finish(&mut self) {
        let ids: Vec<String> = self.order.drain(..).collect();
        for id in ids {
            if let Some(mut inv) = self.open.remove(&id) {
                inv.evicted = true;
                self.stats.unfinished += 1;
                self.close(inv);
            }
        }
    }

    fn entry(&mut self, request_id: &str) -> &mut Invocation {
        if !self.open.contains_key(request_id) {
            while self.open.len() >= self.max_open {
                self.evict_oldest();
            }
            self.order.push_back(request_id.to_string());
            if self.order.len() > self.max_open.saturating_mul(2) {
                let open = &self.open;
                self.order.retain(|id| open.contains_key(id));
            }
        }
        self.open
            .entry(request_id.to_string())
            .or_insert_with(|| Invocation {
                request_id: request_id.to_string(),
                ..Invocation::default()
            })
    }

    fn evict_oldest(&mut self) {
        while let Some(id) = self.order.pop_front() {
            if let Some(mut inv) = self.open.remove(&id) {
                inv.evicted = true;
                self.stats.evicted += 1;
                self.close(inv);
                return;
            }
        }
        // `order` holds every open id, so it is empty only when `open` is: nothing to evict.
        self.open.clear();
    }

    fn close(&mut self, inv: Invocation) {
        if log::log_enabled!(log::Level::Debug) {
            match serde_json::to_string(&LogView::of(&inv)) {
                Ok(json) => log::debug!("invocation {json}"),
                Err(e) => log::debug!("invocation {} (not encodable: {e})", inv.request_id),
            }
        }
        if self.completed.len() >= MAX_COMPLETED {
            self.completed.pop_front();
            self.stats.records_dropped += 1;
        }
        self.completed.push_back(inv);
    }

    fn remember_done(&mut self, request_id: &str, info: RuntimeDoneInfo) {
        if self.done.len() >= self.max_open {
            self.done.pop_front();
        }
        self.done.push_back((request_id.to_string(), info));
    }

    fn push_phase(&mut self, phase: PhaseInfo) {
        if self.phases.len() >= MAX_PHASES {
            self.phases.pop_front();
        }
        self.phases.push_back(phase);
    }
}

/// The one-line view of a closed invocation in loupe's debug log: what arrived for it, and the
/// headline numbers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogView<'a> {
    request_id: &'a str,
    start: bool,
    cold_start: bool,
    /// runtimeDone's status, `null` when none arrived.
    runtime_done: Option<&'a str>,
    report: bool,
    evicted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billed_duration_ms: Option<u64>,
    #[serde(rename = "memorySizeMB", skip_serializing_if = "Option::is_none")]
    memory_size_mb: Option<u64>,
    #[serde(rename = "maxMemoryUsedMB", skip_serializing_if = "Option::is_none")]
    max_memory_used_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
}

impl<'a> LogView<'a> {
    fn of(inv: &'a Invocation) -> LogView<'a> {
        let rd = inv.runtime_done.as_ref();
        let rp = inv.report.as_ref();
        LogView {
            request_id: &inv.request_id,
            start: inv.start,
            cold_start: inv.cold_start,
            runtime_done: rd.map(|r| r.status.as_str()),
            report: rp.is_some(),
            evicted: inv.evicted,
            error_type: rd
                .and_then(|r| r.error_type.as_deref())
                .or_else(|| rp.and_then(|r| r.error_type.as_deref())),
            duration_ms: rp
                .and_then(|r| r.duration_ms)
                .or_else(|| rd.and_then(|r| r.duration_ms)),
            billed_duration_ms: rp.and_then(|r| r.billed_duration_ms),
            memory_size_mb: rp.and_then(|r| r.memory_size_mb),
            max_memory_used_mb: rp.and_then(|r| r.max_memory_used_mb),
            init_duration_ms: rp.and_then(|r| r.init_duration_ms),
            trace_id: inv.trace_id.as_deref(),
        }
    }
}

fn phase(kind: &'static str, r: PhaseReport) -> PhaseInfo {
    PhaseInfo {
        kind,
        initialization_type: r.initialization_type,
        phase: r.phase,
        status: r.status.as_ref().map(|s| s.as_str().to_string()),
        error_type: r.error_type,
        duration_ms: r.metrics.duration_ms,
    }
}

fn spans(spans: Vec<Span>) -> Vec<SpanInfo> {
    spans
        .into_iter()
        .take(16)
        .map(|s| SpanInfo {
            name: s.name,
            start: s.start,
            duration_ms: s.duration_ms,
        })
        .collect()
}

/// `RequestId: <id> ...` in a Logs API fault line.
fn fault_request_id(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix("RequestId:")?.trim_start();
    let id = rest.split_whitespace().next()?;
    (!id.is_empty()).then_some(id)
}

enum Command {
    Event(Box<PlatformEvent>),
    WaitRuntimeDone {
        request_id: String,
        reply: oneshot::Sender<RuntimeDoneInfo>,
    },
    WaitReports(oneshot::Sender<()>),
    Drain(oneshot::Sender<Drained>),
    Finish(oneshot::Sender<TrackerStats>),
    Stats(oneshot::Sender<TrackerStats>),
}

/// The handle to the tracker task: cheap to clone.
#[derive(Clone, Debug)]
pub struct TrackerHandle {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Event(_) => "Event",
            Command::WaitRuntimeDone { .. } => "WaitRuntimeDone",
            Command::WaitReports(_) => "WaitReports",
            Command::Drain(_) => "Drain",
            Command::Finish(_) => "Finish",
            Command::Stats(_) => "Stats",
        })
    }
}

/// Starts the tracker task.
pub fn spawn(tracker: Tracker) -> (TrackerHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let task = tokio::spawn(run(tracker, rx));
    (TrackerHandle { tx }, task)
}

async fn run(mut tracker: Tracker, mut rx: mpsc::Receiver<Command>) {
    let mut waiters: HashMap<String, Vec<oneshot::Sender<RuntimeDoneInfo>>> = HashMap::new();
    let mut settle: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Event(event) => {
                let done_id = match &event.kind {
                    Platform::RuntimeDone(r) => Some(r.request_id.clone()),
                    Platform::End { request_id } => Some(request_id.clone()),
                    _ => None,
                };
                tracker.apply(*event);
                if let Some(id) = done_id {
                    let senders = waiters.remove(&id).unwrap_or_default();
                    if let Some(info) = tracker.runtime_done(&id) {
                        for s in senders {
                            let _ = s.send(info.clone());
                        }
                    }
                }
                if !settle.is_empty() && tracker.awaiting_report() == 0 {
                    for s in settle.drain(..) {
                        let _ = s.send(());
                    }
                }
            }
            Command::WaitReports(reply) => {
                if tracker.awaiting_report() == 0 {
                    let _ = reply.send(());
                } else {
                    settle.retain(|s| !s.is_closed());
                    if settle.len() < MAX_WAITERS {
                        settle.push(reply);
                    }
                }
            }
            Command::WaitRuntimeDone { request_id, reply } => {
                if let Some(info) = tracker.runtime_done(&request_id) {
                    let _ = reply.send(info.clone());
                    continue;
                }
                waiters.retain(|_, senders| {
                    senders.retain(|s| !s.is_closed());
                    !senders.is_empty()
                });
                let count: usize = waiters.values().map(Vec::len).sum();
                if count < MAX_WAITERS {
                    waiters.entry(request_id).or_default().push(reply);
                }
                // Over the cap the reply is dropped: the caller sees `None` at once.
            }
            Command::Drain(reply) => {
                let _ = reply.send(tracker.drain());
            }
            Command::Finish(reply) => {
                tracker.finish();
                waiters.clear();
                settle.clear();
                let _ = reply.send(tracker.stats());
            }
            Command::Stats(reply) => {
                let _ = reply.send(tracker.stats());
            }
        }
    }
}

impl TrackerHandle {
    /// Offers a platform event without waiting; `false` when the queue is full or the task is
    /// gone.
    pub fn try_event(&self, event: Box<PlatformEvent>) -> bool {
        self.tx.try_send(Command::Event(event)).is_ok()
    }

    /// Resolves once runtimeDone (with the Logs API: `platform.end`, reported with status
    /// `end`) for `request_id` has been applied, or with `None` at
    /// `deadline` (or at once if the tracker is gone or has too many waiters).
    pub async fn wait_runtime_done(
        &self,
        request_id: &str,
        deadline: Instant,
    ) -> Option<RuntimeDoneInfo> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::WaitRuntimeDone {
            request_id: request_id.to_string(),
            reply,
        };
        let wait = async {
            self.tx.send(cmd).await.ok()?;
            rx.await.ok()
        };
        tokio::time::timeout_at(deadline, wait).await.ok().flatten()
    }

    /// Resolves once every open invocation whose runtimeDone arrived also has its report (at
    /// SHUTDOWN the last report is still on its way); `false` if `deadline` came first.
    pub async fn wait_reports(&self, deadline: Instant) -> bool {
        self.ask(Command::WaitReports, deadline).await.is_some()
    }

    /// Takes the completed invocation records and phase reports; `None` if the tracker is gone
    /// or does not answer by `deadline`.
    pub async fn drain(&self, deadline: Instant) -> Option<Drained> {
        self.ask(Command::Drain, deadline).await
    }

    /// Closes every open invocation (at SHUTDOWN) and returns the final counters.
    pub async fn finish(&self, deadline: Instant) -> Option<TrackerStats> {
        self.ask(Command::Finish, deadline).await
    }

    pub async fn stats(&self, deadline: Instant) -> Option<TrackerStats> {
        self.ask(Command::Stats, deadline).await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
        deadline: Instant,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        let wait = async {
            self.tx.send(make(reply)).await.ok()?;
            rx.await.ok()
        };
        tokio::time::timeout_at(deadline, wait).await.ok().flatten()
    }
}

impl PlatformSink for TrackerHandle {
    fn offer(&self, event: Box<PlatformEvent>) -> bool {
        self.try_event(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::events::{Event, decode_batch};
    use crate::lambda::stats::Stats;
    use std::time::Duration;

    fn events(json: &str) -> Vec<PlatformEvent> {
        decode_batch(json.as_bytes(), &Stats::default())
            .into_iter()
            .filter_map(|e| match e {
                Event::Platform(p) => Some(*p),
                Event::Log(_) => None,
            })
            .collect()
    }

    fn start(id: &str) -> String {
        format!(
            r#"{{"time":"t0","type":"platform.start","record":{{"requestId":"{id}","version":"$LATEST","tracing":{{"type":"X-Amzn-Trace-Id","value":"Root=1-{id}"}}}}}}"#
        )
    }
    fn done(id: &str, status: &str) -> String {
        format!(
            r#"{{"time":"t1","type":"platform.runtimeDone","record":{{"requestId":"{id}","status":"{status}","metrics":{{"durationMs":12.5,"producedBytes":7}},"spans":[{{"name":"responseLatency","start":"t","durationMs":3}}]}}}}"#
        )
    }
    fn report(id: &str, init: bool) -> String {
        let init = if init {
            r#","initDurationMs":100.5"#
        } else {
            ""
        };
        format!(
            r#"{{"time":"t2","type":"platform.report","record":{{"requestId":"{id}","status":"success","metrics":{{"durationMs":20.1,"billedDurationMs":21,"memorySizeMB":128,"maxMemoryUsedMB":50{init}}}}}}}"#
        )
    }
    fn apply(t: &mut Tracker, parts: &[String]) {
        for e in events(&format!("[{}]", parts.join(","))) {
            t.apply(e);
        }
    }

    #[test]
    fn one_invocation_start_to_report() {
        let mut t = Tracker::default();
        apply(
            &mut t,
            &[
                r#"{"time":"t","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init"}}"#.into(),
                r#"{"time":"t","type":"platform.initReport","record":{"initializationType":"on-demand","phase":"init","status":"success","metrics":{"durationMs":99.5}}}"#.into(),
                start("a"),
                done("a", "success"),
            ],
        );
        assert_eq!(
            t.runtime_done("a").map(|d| d.status.as_str()),
            Some("success")
        );
        let early = t.drain();
        assert!(early.invocations.is_empty(), "open until the report");
        assert_eq!(early.phases.len(), 1);
        assert_eq!(early.phases[0].kind, "init");
        assert_eq!(early.phases[0].duration_ms, Some(99.5));
        apply(&mut t, &[report("a", true)]);
        let d = t.drain();
        let [inv] = d.invocations.as_slice() else {
            panic!("{d:?}")
        };
        assert_eq!(inv.request_id, "a");
        assert!(inv.start && inv.cold_start && !inv.evicted);
        assert_eq!(inv.trace_id.as_deref(), Some("Root=1-a"));
        let rd = inv.runtime_done.as_ref().unwrap();
        assert_eq!((rd.duration_ms, rd.produced_bytes), (Some(12.5), Some(7)));
        assert_eq!(rd.spans[0].name, "responseLatency");
        let r = inv.report.as_ref().unwrap();
        assert_eq!(r.billed_duration_ms, Some(21));
        assert_eq!(r.max_memory_used_mb, Some(50));
        assert_eq!(r.init_duration_ms, Some(100.5));
        let s = t.stats();
        assert_eq!(
            (s.started, s.completed, s.cold_starts, s.open),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn only_the_first_invocation_after_init_or_restore_is_cold() {
        let mut t = Tracker::default();
        apply(
            &mut t,
            &[
                start("a"),
                report("a", true),
                start("b"),
                report("b", false),
            ],
        );
        apply(
            &mut t,
            &[
                r#"{"time":"t","type":"platform.restoreStart","record":{}}"#.into(),
                start("c"),
                report("c", false),
            ],
        );
        apply(
            &mut t,
            &[r#"{"time":"t","type":"platform.restoreReport","record":{"status":"success","metrics":{"durationMs":15.19}}}"#.into()],
        );
        let drained = t.drain();
        assert_eq!(drained.phases.len(), 1);
        assert_eq!(drained.phases[0].kind, "restore");
        assert_eq!(drained.phases[0].duration_ms, Some(15.19));
        let cold: Vec<(String, bool)> = drained
            .invocations
            .into_iter()
            .map(|i| (i.request_id, i.cold_start))
            .collect();
        assert_eq!(
            cold,
            [("a".into(), true), ("b".into(), false), ("c".into(), true)]
        );
        assert_eq!(t.stats().cold_starts, 2);
    }

    #[test]
    fn overlapping_invocations_and_late_reports() {
        let mut t = Tracker::default();
        // Managed Instances: several at once, no runtimeDone, reports in any order.
        apply(
            &mut t,
            &[start("a"), start("b"), start("c"), report("b", false)],
        );
        apply(
            &mut t,
            &[report("a", false), done("c", "timeout"), report("c", false)],
        );
        let d = t.drain();
        let ids: Vec<&str> = d
            .invocations
            .iter()
            .map(|i| i.request_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "a", "c"]);
        assert!(d.invocations.iter().all(|i| i.start && i.report.is_some()));
        assert_eq!(
            d.invocations[2]
                .runtime_done
                .as_ref()
                .map(|r| r.status.as_str()),
            Some("timeout")
        );
        // A report whose start was never seen still makes a record.
        apply(&mut t, &[report("z", false)]);
        let d = t.drain();
        assert_eq!(d.invocations[0].request_id, "z");
        assert!(!d.invocations[0].start);
    }

    #[test]
    fn oldest_open_invocation_is_evicted_and_counted() {
        let mut t = Tracker::new(2);
        apply(&mut t, &[start("a"), start("b"), start("c")]);
        let d = t.drain();
        assert_eq!(d.invocations.len(), 1);
        assert_eq!(d.invocations[0].request_id, "a");
        assert!(d.invocations[0].evicted);
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.stats().open, 2);
        t.finish();
        let d = t.drain();
        let ids: Vec<&str> = d
            .invocations
            .iter()
            .map(|i| i.request_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(d.invocations.iter().all(|i| i.evicted));
        let s = t.stats();
        assert_eq!((s.evicted, s.unfinished, s.open), (1, 2, 0));
    }

    #[test]
    fn order_list_stays_bounded_as_invocations_close() {
        let mut t = Tracker::new(2);
        for i in 0..100 {
            let id = format!("x{i}");
            apply(&mut t, &[start(&id), report(&id, false)]);
        }
        assert!(t.order.len() <= 4, "{}", t.order.len());
        assert_eq!(t.stats().evicted, 0);
        assert_eq!(t.drain().invocations.len(), 100);
    }

    #[test]
    fn completed_records_are_capped() {
        let mut t = Tracker::default();
        for i in 0..MAX_COMPLETED + 3 {
            apply(&mut t, &[report(&format!("r{i}"), false)]);
        }
        assert_eq!(t.drain().invocations.len(), MAX_COMPLETED);
        assert_eq!(t.stats().records_dropped, 3);
    }

    #[test]
    fn a_repeated_start_keeps_the_cold_start_for_the_next_one() {
        let mut t = Tracker::default();
        apply(&mut t, &[start("a"), start("a"), start("b")]);
        t.finish();
        let cold: Vec<bool> = t.drain().invocations.iter().map(|i| i.cold_start).collect();
        assert_eq!(cold, [true, false]);
        assert_eq!(t.stats().started, 2);
        assert_eq!(t.stats().cold_starts, 1);
    }

    #[test]
    fn fault_lines_attach_to_their_request() {
        assert_eq!(
            fault_request_id("RequestId: abc-1 Process exited before completing request"),
            Some("abc-1")
        );
        assert_eq!(fault_request_id("something else"), None);
        let mut t = Tracker::default();
        apply(
            &mut t,
            &[
                start("abc-1"),
                r#"{"time":"t","type":"platform.fault","record":"RequestId: abc-1 Status: error\tErrorType: Runtime.ExitError"}"#.into(),
                report("abc-1", false),
            ],
        );
        let d = t.drain();
        assert_eq!(d.invocations[0].faults.len(), 1);
        // A fault for an invocation already closed opens nothing.
        apply(
            &mut t,
            &[r#"{"time":"t","type":"platform.fault","record":"RequestId: abc-1 late"}"#.into()],
        );
        assert_eq!(t.stats().open, 0);
    }

    #[tokio::test]
    async fn wait_runtime_done_resolves_when_applied() {
        let (h, _task) = spawn(Tracker::default());
        let far = Instant::now() + Duration::from_secs(30);
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.wait_runtime_done("a", far).await })
        };
        // Let the waiter send its query, then make sure the tracker has taken it (commands are
        // served in order), so runtimeDone arrives while it waits. Either order gives the same
        // answer; this one exercises the waiting path.
        tokio::task::yield_now().await;
        assert!(h.stats(far).await.is_some());
        for e in events(&format!("[{},{}]", start("a"), done("a", "error"))) {
            assert!(h.try_event(Box::new(e)));
        }
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("resolves")
            .expect("task");
        assert_eq!(got.map(|d| d.status), Some("error".to_string()));
        // Already applied: answers at once.
        assert!(h.wait_runtime_done("a", far).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_runtime_done_gives_none_at_the_deadline() {
        let (h, _task) = spawn(Tracker::default());
        let deadline = Instant::now() + Duration::from_millis(500);
        assert_eq!(h.wait_runtime_done("never", deadline).await, None);
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn wait_reports_resolves_when_the_last_report_arrives() {
        let (h, _task) = spawn(Tracker::default());
        let far = Instant::now() + Duration::from_secs(30);
        // Nothing pending: at once.
        assert!(h.wait_reports(far).await);
        for e in events(&format!(
            "[{},{},{}]",
            start("a"),
            done("a", "success"),
            start("b")
        )) {
            assert!(h.try_event(Box::new(e)));
        }
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.wait_reports(far).await })
        };
        tokio::task::yield_now().await;
        assert!(h.stats(far).await.is_some());
        assert!(!waiter.is_finished());
        // "b" never finished its runtime: only "a"'s report is awaited.
        for e in events(&format!("[{}]", report("a", false))) {
            assert!(h.try_event(Box::new(e)));
        }
        let settled = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("resolves")
            .expect("task");
        assert!(settled);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_reports_gives_up_at_the_deadline() {
        let (h, _task) = spawn(Tracker::default());
        for e in events(&format!("[{},{}]", start("a"), done("a", "success"))) {
            assert!(h.try_event(Box::new(e)));
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        assert!(!h.wait_reports(deadline).await);
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn finish_closes_open_invocations_and_drain_hands_them_over() {
        let (h, _task) = spawn(Tracker::default());
        for e in events(&format!("[{},{}]", start("a"), start("b"))) {
            assert!(h.try_event(Box::new(e)));
        }
        let far = Instant::now() + Duration::from_secs(30);
        let s = h.finish(far).await.unwrap();
        assert_eq!((s.started, s.unfinished, s.open), (2, 2, 0));
        let d = h.drain(far).await.unwrap();
        assert_eq!(d.invocations.len(), 2);
        assert!(d.invocations.iter().all(|i| i.evicted));
    }
}
