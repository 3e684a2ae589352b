//! Flush control: when data leaves the sandbox, and within which budget.
//!
//! In: the run loop's calls ([`Flusher::after_invoke`], [`Flusher::on_timer`],
//! [`Flusher::at_shutdown`]), batches from a [`Source`], the tracker and the intake counters.
//! Out: each batch, with loupe's own metrics (`loupe.*`) added, encoded and sent by the
//! [`Shipper`] in a send task that the flush awaits (inline) or leaves running (background).
//!
//! # Strategies (`LOUPE_FLUSH`)
//! * `end`: after each INVOKE (the run loop waited for runtimeDone), drain and send, then return.
//! * `adaptive` (default): while invocations are sparse, as `end` (waiting for this request's
//!   runtimeDone itself, bounded by the deadline). When they are frequent, pipelined:
//!   `after_invoke` returns at once with the timer due, so the run loop asks for the next event
//!   first and then, while it waits, drains and starts the send in a background task (encoding
//!   included). A pipelined flush never waits for the backend: when the previous send is still
//!   running, it leaves the data in the source (bounded, counting its drops) for a later flush.
//!   The rule: invocations are *frequent* when the smoothed interval between INVOKEs is shorter
//!   than `max(1 s, 4 × the smoothed send latency)` — then an end-of-invocation flush would add
//!   a noticeable share to every invocation, and the next INVOKE comes soon enough to carry the
//!   data. Pipelined too when runtimeDone did not come three times in a row (no telemetry).
//!   An end-of-invocation flush is also forced when the last flush is older than
//!   [`BACKUP_INTERVAL`] (pipelined flushes were skipped because a send was still running).
//! * `periodic:<s>`: every `s` seconds of thawed time (the run loop's timer), and pipelined at
//!   an INVOKE when `s` seconds passed since the last flush.
//! * SHUTDOWN: a final flush within the deadline, keeping [`SHUTDOWN_RESERVE`] (at most a quarter
//!   of the time left) for one last small request with the drop counters.
//!
//! # Timer
//! While loupe waits (for `/next`'s answer, or for runtimeDone), the run loop calls
//! [`Flusher::on_timer`] at [`Flusher::next_timer`]: `s` seconds after the last flush with
//! `periodic:<s>`, [`BACKUP_INTERVAL`] otherwise. The timer flush is pipelined, so a long
//! invocation's data leaves while it runs. While the sandbox is frozen no timer fires; a timer
//! that came due during the freeze fires after the thaw.
//!
//! While the sandbox is thawed, the background task keeps retrying what is queued (up to
//! [`BACKUP_INTERVAL`] after it started, stopped by the next flush between two attempts).
//!
//! # Duplicates
//! A pipelined send may be in flight when the sandbox freezes; after the thaw its timeout may
//! fire although the backend got it, and it is retried. Every request carries the same
//! idempotency key on each of its retries ([`crate::export::ship::BATCH_ID_HEADER`]), so a
//! backend can drop the second copy.
//!
//! Without a backend, or when the API key could not be fetched, every call drains at once and
//! counts what it drops (`loupe.export.dropped{reason=no_backend|api_key}`); nothing is sent and
//! nothing waits.
//!
//! # Budget
//! Each flush: `min(LOUPE_FLUSH_TIMEOUT_MS, deadline)`, where the run loop's deadline is the
//! invocation's deadline less a margin. The metrics and logs requests of one flush go
//! concurrently within it. The TCP connect timeout is separate
//! ([`ShipSettings::connect_timeout`]). Nothing here waits past the deadline it was given.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aggregate::{Histogram, Series, SeriesKey};
use crate::batch::{Batch, Counter, Source};
use crate::config::{self, ApiKeySource, Config, FlushStrategy, LambdaEnv, Protocol, Temporality};
use crate::emf::Unit;
use crate::export::encode::{Encoded, Encoder};
use crate::export::metrics::{Cumulative, Point};
use crate::export::otlp;
use crate::export::proto::resource::v1::Resource;
use crate::export::ship::{DropReason, SendControl, ShipSettings, Shipper, Tally};
use crate::extension::{self, FlushContext, Flusher};
use crate::invocation::Drained;
use crate::lambda::client::InvokeEvent;
use crate::lambda::stats::StatsSnapshot;

/// A sandbox flushes at least this often while thawed (the timer, or its next INVOKE), and the
/// background task retries queued requests for at most this long.
pub const BACKUP_INTERVAL: Duration = Duration::from_secs(20);
/// A timer flush skipped because a send was still running is tried again this soon.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);
/// Kept at SHUTDOWN for the last request with the drop counters.
pub const SHUTDOWN_RESERVE: Duration = Duration::from_millis(200);
/// Invocations at least this far apart are sparse whatever the flush latency.
pub const SPARSE_GAP: Duration = Duration::from_secs(1);
/// ... and at least this many flush latencies apart.
pub const SPARSE_FACTOR: u32 = 4;
/// runtimeDone missing this many times in a row: stop waiting for it.
pub const MAX_MISSED_RUNTIME_DONE: u32 = 3;
/// Sends end this long before their budget (at most a tenth of it).
const SETTLE_MARGIN: Duration = Duration::from_millis(10);
/// The send latency series (seconds from the first request of a flush to its last answer).
pub const LATENCY_METRIC: &str = "loupe.flush.duration";

/// Reads an environment variable (the API key fetch needs credentials and the region).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Tunables; [`Settings::default`] suits Lambda, tests shorten them.
#[derive(Clone)]
pub struct Settings {
    pub ship: ShipSettings,
    pub env: EnvLookup,
    /// Request size limit, compressed (tests lower it).
    pub max_request_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ship: ShipSettings::default(),
            env: Arc::new(|name: &str| std::env::var(name).ok()),
            max_request_bytes: crate::export::encode::MAX_REQUEST_BYTES,
        }
    }
}

/// A send in a background task; it hands the shipper and the encoding state back.
type SendTask = JoinHandle<(Shipper, Encoding)>;

/// The API key's state.
enum Key {
    /// None needed (or given in the environment).
    NotNeeded,
    /// To fetch at the first flush.
    Pending(ApiKeySource, String),
    Done,
}

/// How a flush hands its requests over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Send and wait (bounded).
    Inline,
    /// Send in a background task; never wait for the previous one (skip while it sends).
    Background,
}

pub struct Flush<S: Source> {
    source: S,
    strategy: FlushStrategy,
    flush_timeout: Duration,
    /// With the shipper in the send task while a send is in flight.
    encoding: Option<Encoding>,
    spec: EncodingSpec,
    env: LambdaEnv,
    settings: Settings,
    endpoints: Option<config::Endpoints>,
    headers: Vec<(String, String)>,
    key: Key,
    account_id: Option<String>,
    resource: Resource,
    shipper: Option<Shipper>,
    in_flight: Option<(SendTask, Arc<SendControl>)>,
    /// When the run loop's timer should call next.
    next_timer: Instant,
    last_flush: Instant,
    last_invoke: Option<Instant>,
    gap: Option<Duration>,
    latency: Option<Duration>,
    missed_runtime_done: u32,
    stats_seen: StatsSnapshot,
    latencies: Histogram,
    evicted_seen: u64,
}

impl<S: Source> Flush<S> {
    pub fn new(config: &Config, source: S) -> Flush<S> {
        Flush::with_settings(config, source, Settings::default())
    }

    pub fn with_settings(config: &Config, source: S, settings: Settings) -> Flush<S> {
        let mut ship = settings.ship.clone();
        ship.connect_timeout = ship.connect_timeout.min(config.flush_timeout);
        let settings = Settings { ship, ..settings };
        let spec = EncodingSpec {
            protocol: config.protocol,
            temporality: config.temporality,
            max_series: config.max_series,
            max_request_bytes: settings.max_request_bytes,
        };
        let key = match &config.api_key_source {
            Some(src) if config.endpoints.is_some() => {
                Key::Pending(src.clone(), config.api_key_header.clone())
            }
            _ => Key::NotNeeded,
        };
        Flush {
            source,
            strategy: config.flush,
            flush_timeout: config.flush_timeout,
            encoding: Some(Encoding::new(spec)),
            spec,
            env: config.lambda.clone(),
            shipper: Some(Shipper::new(
                config.endpoints.clone(),
                &config.headers,
                settings.ship.clone(),
            )),
            settings,
            endpoints: config.endpoints.clone(),
            headers: config.headers.clone(),
            key,
            account_id: None,
            resource: otlp::resource(&config.lambda, None),
            in_flight: None,
            next_timer: Instant::now() + timer_interval(config.flush),
            last_flush: Instant::now(),
            last_invoke: None,
            gap: None,
            latency: None,
            missed_runtime_done: 0,
            stats_seen: StatsSnapshot::default(),
            latencies: Histogram::new(),
            evicted_seen: 0,
        }
    }

    /// Everything sent, retried and dropped so far (`None` while a send is in flight).
    pub fn totals(&self) -> Option<Tally> {
        self.shipper.as_ref().map(Shipper::totals)
    }

    /// Whether a background send is still to be awaited.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Requests waiting for a retry.
    pub fn queued(&self) -> usize {
        self.shipper.as_ref().map_or(0, Shipper::queued)
    }

    /// Whether the adaptive strategy would flush at the end of this invocation.
    pub fn sparse(&self) -> bool {
        if self.missed_runtime_done >= MAX_MISSED_RUNTIME_DONE {
            return false;
        }
        let Some(gap) = self.gap else {
            return true;
        };
        let latency = self.latency.unwrap_or(Duration::ZERO);
        gap >= SPARSE_GAP.max(latency.saturating_mul(SPARSE_FACTOR))
    }

    /// The account id comes from register's answer, or else from field 5 of the invoked ARN.
    fn note_invoke(&mut self, ctx: FlushContext<'_>, invoke: &InvokeEvent) {
        if self.account_id.is_none() {
            let from_arn = invoke
                .invoked_function_arn
                .as_deref()
                .and_then(|arn| arn.split(':').nth(4));
            let account = ctx
                .registration
                .account_id
                .as_deref()
                .or(from_arn)
                .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
            if let Some(a) = account {
                self.account_id = Some(a.to_string());
                self.resource = otlp::resource(&self.env, Some(a));
            }
        }
        let now = Instant::now();
        match self.last_invoke {
            Some(last) => self.gap = Some(smooth(self.gap, now - last)),
            None => crate::export::ship::renew_instance_id(),
        }
        self.last_invoke = Some(now);
    }

    /// Waits (bounded by `deadline`) until no send is in flight; `true` when none is.
    pub async fn idle(&mut self, deadline: Instant) -> bool {
        self.settle(deadline, true).await
    }

    /// Gets the shipper back from a background send; `false` if it is still running at
    /// `deadline`, or, unless `wait`, if it is sending at all (then nothing waits).
    async fn settle(&mut self, deadline: Instant, wait: bool) -> bool {
        let Some((mut handle, control)) = self.in_flight.take() else {
            return true;
        };
        if !wait && !handle.is_finished() && !control.stop_if_idle() {
            self.in_flight = Some((handle, control));
            return false;
        }
        control.stop();
        match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(Ok((mut shipper, encoding))) => {
                if let Some(took) = shipper.take_send_duration() {
                    self.latency = Some(smooth(self.latency, took));
                    // A finite, non-negative number of seconds: cannot be refused.
                    let _ = self.latencies.record(took.as_secs_f64());
                }
                self.shipper = Some(shipper);
                self.encoding = Some(encoding);
                true
            }
            Ok(Err(e)) => {
                log::error!("the send task failed: {e}; its queue is lost");
                self.shipper = Some(Shipper::new(
                    self.endpoints.clone(),
                    &self.headers,
                    self.settings.ship.clone(),
                ));
                self.encoding = Some(Encoding::new(self.spec));
                true
            }
            Err(_) => {
                self.in_flight = Some((handle, control));
                false
            }
        }
    }

    /// The shipper and the encoding state, which go into a send task together (`None` while
    /// one is in flight).
    fn take_parts(&mut self) -> Option<(Shipper, Encoding)> {
        match (self.shipper.take(), self.encoding.take()) {
            (Some(s), Some(e)) => Some((s, e)),
            (s, e) => {
                self.shipper = s;
                self.encoding = e;
                None
            }
        }
    }

    /// A pipelined flush: due on the timer now, so that the run loop asks for the next event
    /// first and drains while it waits.
    fn flush_soon(&mut self) {
        self.next_timer = Instant::now();
    }

    /// Fetches the API key once, bounded by `deadline`.
    async fn ensure_key(&mut self, deadline: Instant) {
        let Key::Pending(source, header) = std::mem::replace(&mut self.key, Key::Done) else {
            return;
        };
        let Some(shipper) = self.shipper.as_mut() else {
            self.key = Key::Pending(source, header);
            return;
        };
        let env = self.settings.env.clone();
        let timeout = deadline.saturating_duration_since(Instant::now());
        let got = crate::secrets::fetch_api_key(&source, |n| env(n), shipper.http(), timeout).await;
        match got {
            Ok(key) => {
                let (name, value) = config::api_key_header_value(&header, &key);
                shipper.set_header(&name, &value);
            }
            Err(e) => {
                log::warn!("the API key could not be fetched ({e}): nothing will be sent");
                shipper.key_failed();
            }
        }
    }

    /// One flush: drain the tracker and the source, encode, send. `deadline` bounds it.
    async fn flush(&mut self, ctx: FlushContext<'_>, deadline: Instant, mode: Mode) {
        if !self.settle(deadline, mode == Mode::Inline).await {
            log::debug!("a send is still in flight; flushing later");
            self.next_timer = Instant::now() + BUSY_RETRY.min(timer_interval(self.strategy));
            return;
        }
        let started = Instant::now();
        self.next_timer = started + timer_interval(self.strategy);
        let budget = (started + self.flush_timeout).min(deadline);
        self.ensure_key(budget).await;
        let drained = ctx
            .tracker
            .drain(budget)
            .await
            .unwrap_or_else(Drained::default);
        let mut batch = self.source.drain(drained, budget).await;
        let stats = ctx.stats.snapshot();
        let queued = self.queued();
        if batch.is_empty() && queued == 0 {
            return;
        }
        self.last_flush = started;
        let Some((mut shipper, mut encoding)) = self.take_parts() else {
            return;
        };
        self.own_metrics(&mut batch, &mut shipper, &encoding, &stats, true);
        let resource = self.resource.clone();
        let flush_timeout = self.flush_timeout;
        let control = Arc::new(SendControl::busy());
        let task_control = control.clone();
        let linger = mode == Mode::Background;
        // The send runs in its own task either way, so that a caller cut off at its deadline
        // leaves the shipper (queue, breaker, counters) to be awaited, never lost.
        // The sends end a little before the budget, so that awaiting them by the budget sees
        // them finish.
        let margin = SETTLE_MARGIN.min(budget.saturating_duration_since(started) / 10);
        let send_by = budget - margin;
        // Encoding happens in the task too, on a blocking thread: a pipelined flush returns
        // before it, and the run loop's thread stays free for the next event meanwhile.
        let handle = tokio::spawn(async move {
            let encoded = tokio::task::spawn_blocking(move || {
                let fresh = encoding.encode(&resource, batch, &mut shipper);
                (shipper, encoding, fresh)
            })
            .await;
            let (mut shipper, encoding, fresh) = match encoded {
                Ok(done) => done,
                // A panic while encoding fails this task too; `settle` starts afresh.
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => panic!("encoding did not finish: {e}"),
                },
            };
            shipper.ship(fresh, send_by).await;
            if task_control.end() && linger {
                shipper
                    .linger(&task_control, started + BACKUP_INTERVAL, flush_timeout)
                    .await;
            }
            (shipper, encoding)
        });
        self.in_flight = Some((handle, control));
        if mode == Mode::Inline {
            self.settle(budget, true).await;
        }
    }

    /// Adds loupe's own counters (deltas since the last flush) and the flush latency series.
    fn own_metrics(
        &mut self,
        batch: &mut Batch,
        shipper: &mut Shipper,
        encoding: &Encoding,
        stats: &StatsSnapshot,
        flush: bool,
    ) {
        let t = shipper.take_delta();
        let c = &mut batch.counters;
        let push = Counter::push_nonzero;
        push(c, "loupe.flushes", u64::from(flush), &[]);
        push(c, "loupe.export.points", t.points_sent, &[]);
        push(c, "loupe.export.events", t.events_sent, &[]);
        push(c, "loupe.export.bytes", t.bytes_raw, &[("stage", "raw")]);
        push(
            c,
            "loupe.export.bytes",
            t.bytes_sent,
            &[("stage", "compressed")],
        );
        push(c, "loupe.export.requests", t.requests, &[]);
        push(c, "loupe.export.retries", t.retries, &[]);
        push(c, "loupe.breaker.trips", t.breaker_trips, &[]);
        for reason in DropReason::ALL {
            let r = reason.as_str();
            let points = t.points_dropped(reason);
            push(
                c,
                "loupe.export.dropped",
                points,
                &[("reason", r), ("item", "point")],
            );
            let events = t.events_dropped(reason);
            push(
                c,
                "loupe.export.dropped",
                events,
                &[("reason", r), ("item", "event")],
            );
        }
        if let Some(cum) = &encoding.cumulative {
            // Saturating: after a failed send task the cumulative state starts afresh.
            let evicted = cum.evicted().saturating_sub(self.evicted_seen);
            push(c, "loupe.cumulative.evicted", evicted, &[]);
            self.evicted_seen = cum.evicted();
        }
        let (now, seen) = (stats, &self.stats_seen);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let intake: [(&'static str, u64); 8] = [
            (
                "malformed_event",
                d(now.malformed_events, seen.malformed_events),
            ),
            (
                "malformed_body",
                d(now.malformed_bodies, seen.malformed_bodies),
            ),
            ("unknown_type", d(now.unknown_types, seen.unknown_types)),
            ("unknown_field", d(now.unknown_fields, seen.unknown_fields)),
            (
                "oversized_record",
                d(now.oversized_records, seen.oversized_records),
            ),
            (
                "oversized_body",
                d(now.oversized_bodies, seen.oversized_bodies),
            ),
            (
                "log_queue_full",
                d(now.log_lines_dropped, seen.log_lines_dropped),
            ),
            (
                "platform_queue_full",
                d(now.platform_events_dropped, seen.platform_events_dropped),
            ),
        ];
        for (reason, n) in intake {
            push(c, "loupe.telemetry.skipped", n, &[("reason", reason)]);
        }
        let records = d(now.lambda_dropped_records, seen.lambda_dropped_records);
        push(
            c,
            "loupe.lambda.logs_dropped",
            records,
            &[("unit", "records")],
        );
        let bytes = d(now.lambda_dropped_bytes, seen.lambda_dropped_bytes);
        push(c, "loupe.lambda.logs_dropped", bytes, &[("unit", "bytes")]);
        self.stats_seen = now.clone();
        if !self.latencies.is_empty() {
            batch.series.push(Series {
                key: SeriesKey::new("", LATENCY_METRIC, Unit::Seconds, 60, Vec::new()),
                histogram: std::mem::take(&mut self.latencies),
            });
        }
    }

    /// The last request at SHUTDOWN: what was dropped, bounded by `deadline`.
    async fn final_report(&mut self, deadline: Instant) {
        let Some((mut shipper, mut encoding)) = self.take_parts() else {
            return;
        };
        shipper.drop_queue(DropReason::Unsent);
        let totals = shipper.totals();
        let (points, events) = totals.total_dropped();
        if points + events > 0 || totals.retries > 0 {
            log::warn!(
                "shutdown: sent {} point(s) and {} event(s); dropped {points} point(s) and \
                 {events} event(s); {} retries, {} breaker trip(s)",
                totals.points_sent,
                totals.events_sent,
                totals.retries,
                totals.breaker_trips
            );
        }
        if !shipper.can_send() {
            shipper.take_delta();
            self.shipper = Some(shipper);
            self.encoding = Some(encoding);
            return;
        }
        let mut batch = Batch::default();
        let stats = self.stats_seen.clone();
        self.own_metrics(&mut batch, &mut shipper, &encoding, &stats, false);
        // Only the counters of what went wrong or was not reported yet: one small request.
        let fresh = encoding.encode(&self.resource, batch, &mut shipper);
        shipper.ship(fresh, deadline).await;
        // Whatever did not go now never will: count it in the totals (and the log above).
        shipper.drop_queue(DropReason::Unsent);
        shipper.take_delta();
        self.shipper = Some(shipper);
        self.encoding = Some(encoding);
    }
}

/// Turning batches into requests: the encoder, the delta window and the cumulative state. It
/// travels with the shipper into the send task.
struct Encoding {
    encoder: Encoder,
    cumulative: Option<Cumulative>,
    /// Start of the current delta window, ns since the epoch.
    window_start: u64,
}

/// What an [`Encoding`] is made from.
#[derive(Clone, Copy)]
struct EncodingSpec {
    protocol: Protocol,
    temporality: Temporality,
    max_series: usize,
    max_request_bytes: usize,
}

impl Encoding {
    fn new(spec: EncodingSpec) -> Encoding {
        Encoding {
            encoder: Encoder::with_limit(spec.protocol, spec.temporality, spec.max_request_bytes),
            cumulative: (spec.temporality == Temporality::Cumulative)
                .then(|| Cumulative::new(spec.max_series)),
            window_start: now_unix_nano(),
        }
    }

    fn encode(&mut self, resource: &Resource, batch: Batch, shipper: &mut Shipper) -> Vec<Encoded> {
        if let Some(reason) = shipper.blocked() {
            // Nothing will be sent: count without encoding.
            let counters = batch.counters.iter().filter(|c| c.value > 0).count();
            let points = (batch.series.len() + counters) as u64;
            shipper.count_drop(reason, points, batch.events.len() as u64);
            return Vec::new();
        }
        let end = now_unix_nano().max(self.window_start);
        let start = self.window_start;
        self.window_start = end;
        let mut points: Vec<Point> = batch
            .series
            .into_iter()
            .map(|s| Point::histogram(s, start, end))
            .collect();
        points.extend(
            batch
                .counters
                .iter()
                .filter(|c| c.value > 0)
                .map(|c| Point::counter(c, start, end)),
        );
        if let Some(c) = self.cumulative.as_mut() {
            points = c.accumulate(points);
        }
        let mut out = Vec::new();
        let oversized =
            self.encoder
                .encode(resource, &points, &batch.events, &batch.spans, &mut out);
        if oversized.points + oversized.events > 0 {
            log::warn!(
                "{} point(s) and {} event(s) too large for one request: dropped",
                oversized.points,
                oversized.events
            );
            shipper.count_drop(DropReason::TooLarge, oversized.points, oversized.events);
        }
        out
    }
}

impl<S: Source> Flusher for Flush<S> {
    async fn after_invoke(
        &mut self,
        ctx: FlushContext<'_>,
        invoke: &InvokeEvent,
        deadline: Instant,
    ) {
        self.note_invoke(ctx, invoke);
        let can_send = self.shipper.as_ref().is_none_or(Shipper::can_send);
        if !can_send {
            // Nothing will be sent: drain (and count) at once, never slow /next.
            self.flush(ctx, deadline, Mode::Inline).await;
            return;
        }
        let now = Instant::now();
        let overdue = now.saturating_duration_since(self.last_flush) >= BACKUP_INTERVAL;
        match self.strategy {
            FlushStrategy::End => self.flush(ctx, deadline, Mode::Inline).await,
            FlushStrategy::Periodic(every) => {
                if now.saturating_duration_since(self.last_flush) >= every {
                    self.flush_soon();
                }
            }
            FlushStrategy::Adaptive => {
                if self.sparse() || overdue {
                    // A long invocation still gets its timer flushes while this waits.
                    let wait = ctx.tracker.wait_runtime_done(&invoke.request_id, deadline);
                    let timeout = self.flush_timeout;
                    let done = extension::with_timer(self, ctx, wait, timeout, deadline).await;
                    if done.is_some() {
                        self.missed_runtime_done = 0;
                    } else {
                        self.missed_runtime_done = self.missed_runtime_done.saturating_add(1);
                    }
                    self.flush(ctx, deadline, Mode::Inline).await;
                } else {
                    self.flush_soon();
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        Some(self.next_timer)
    }

    async fn on_timer(&mut self, ctx: FlushContext<'_>, deadline: Instant) {
        if Instant::now() < self.next_timer {
            return;
        }
        let can_send = self.shipper.as_ref().is_none_or(Shipper::can_send);
        let mode = if can_send {
            Mode::Background
        } else {
            Mode::Inline
        };
        self.flush(ctx, deadline, mode).await;
    }

    async fn at_shutdown(&mut self, ctx: FlushContext<'_>, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let reserve = SHUTDOWN_RESERVE.min(left / 4);
        let main = deadline - reserve;
        // The final flush may use everything up to the reserve, not just one flush timeout.
        let timeout = self.flush_timeout;
        self.flush_timeout = left;
        self.flush(ctx, main, Mode::Inline).await;
        self.flush_timeout = timeout;
        if self.settle(main, true).await {
            self.final_report(deadline).await;
        } else {
            log::warn!("shutdown: a send was still in flight at the deadline");
        }
    }
}

/// How long after a flush the timer calls again.
fn timer_interval(strategy: FlushStrategy) -> Duration {
    match strategy {
        FlushStrategy::Periodic(every) => every,
        FlushStrategy::Adaptive | FlushStrategy::End => BACKUP_INTERVAL,
    }
}

/// Smoothed durations: 3/4 of the old value, 1/4 of the new.
fn smooth(old: Option<Duration>, new: Duration) -> Duration {
    match old {
        None => new,
        Some(o) => (o * 3 + new) / 4,
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
