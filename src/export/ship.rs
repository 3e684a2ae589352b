//! Sending encoded requests: retries per the OTLP rules, a bounded retry queue, the circuit
//! breaker, and the tally of what was sent, retried and dropped.
//!
//! In: [`Encoded`] requests and a deadline per call. Out: HTTP requests through [`HttpSender`],
//! and a [`Tally`] the flush control turns into loupe's own metrics. Nothing here waits past the
//! deadline it is given: a retry that does not fit stays in the queue for the next call, and the
//! queue keeps the newest requests within [`ShipSettings::max_queue_bytes`], counting the oldest
//! it drops.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::encode::{Encoded, Target};
use super::http::{HttpSender, SendError};
use super::otlp::partial_success;
use super::retry::{Backoff, Breaker, Verdict, classify};
use crate::config::Endpoints;

/// Why points or events were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The backend refused the request for good (a 4xx other than 429, or a 500/501...).
    Status,
    /// The backend accepted the request but rejected these items (partial success).
    Rejected,
    /// The retry queue was full: the oldest request went.
    QueueFull,
    /// No backend is configured.
    NoBackend,
    /// The API key could not be fetched.
    ApiKey,
    /// One item alone was over the request size limit.
    TooLarge,
    /// Still queued when the sandbox shut down.
    Unsent,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Status,
        DropReason::Rejected,
        DropReason::QueueFull,
        DropReason::NoBackend,
        DropReason::ApiKey,
        DropReason::TooLarge,
        DropReason::Unsent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Status => "status",
            DropReason::Rejected => "rejected",
            DropReason::QueueFull => "queue_full",
            DropReason::NoBackend => "no_backend",
            DropReason::ApiKey => "api_key",
            DropReason::TooLarge => "too_large",
            DropReason::Unsent => "unsent",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What was sent, retried and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub points_sent: u64,
    pub events_sent: u64,
    /// Bytes of delivered requests before compression.
    pub bytes_raw: u64,
    /// Bytes of delivered requests as sent (gzip).
    pub bytes_sent: u64,
    /// Requests attempted, first tries and retries.
    pub requests: u64,
    pub retries: u64,
    pub breaker_trips: u64,
    /// Points dropped, by [`DropReason`] (indexed as `DropReason::ALL`).
    pub points_dropped: [u64; 7],
    pub events_dropped: [u64; 7],
}

impl Tally {
    pub fn drop(&mut self, reason: DropReason, points: u64, events: u64) {
        let i = reason.index();
        if let Some(p) = self.points_dropped.get_mut(i) {
            *p += points;
        }
        if let Some(e) = self.events_dropped.get_mut(i) {
            *e += events;
        }
    }

    pub fn points_dropped(&self, reason: DropReason) -> u64 {
        self.points_dropped
            .get(reason.index())
            .copied()
            .unwrap_or(0)
    }

    pub fn events_dropped(&self, reason: DropReason) -> u64 {
        self.events_dropped
            .get(reason.index())
            .copied()
            .unwrap_or(0)
    }

    pub fn total_dropped(&self) -> (u64, u64) {
        (
            self.points_dropped.iter().sum(),
            self.events_dropped.iter().sum(),
        )
    }

    fn add(&mut self, o: &Tally) {
        self.points_sent += o.points_sent;
        self.events_sent += o.events_sent;
        self.bytes_raw += o.bytes_raw;
        self.bytes_sent += o.bytes_sent;
        self.requests += o.requests;
        self.retries += o.retries;
        self.breaker_trips += o.breaker_trips;
        for (a, b) in self.points_dropped.iter_mut().zip(o.points_dropped) {
            *a += b;
        }
        for (a, b) in self.events_dropped.iter_mut().zip(o.events_dropped) {
            *a += b;
        }
    }
}

/// Tunables of sending; the defaults suit Lambda.
#[derive(Clone, Debug)]
pub struct ShipSettings {
    /// TCP connect timeout, separate from each request's timeout (the time left in the budget).
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Failures in a row that open the breaker.
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    /// Compressed bytes the retry queue holds at most.
    pub max_queue_bytes: usize,
    /// Requests the retry queue holds at most.
    pub max_queue_requests: usize,
}

impl Default for ShipSettings {
    fn default() -> Self {
        ShipSettings {
            connect_timeout: Duration::from_millis(1_000),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(30),
            breaker_max_cooldown: Duration::from_secs(300),
            max_queue_bytes: 4 << 20,
            max_queue_requests: 256,
        }
    }
}

/// Less time than this left in a budget is not worth a new attempt.
const MIN_ATTEMPT: Duration = Duration::from_millis(20);

pub struct Shipper {
    endpoints: Option<Endpoints>,
    http: HttpSender,
    settings: ShipSettings,
    breaker: Breaker,
    backoff: Backoff,
    queue: VecDeque<Encoded>,
    queue_bytes: usize,
    /// Not before this instant (a `Retry-After` that did not fit in the last budget).
    not_before: Option<Instant>,
    /// The API key could not be fetched: everything is dropped.
    key_failed: bool,
    delta: Tally,
    totals: Tally,
    /// The breaker's clock: the wall clock at start plus the runtime's elapsed time, so that it
    /// follows tokio's clock (and a paused clock in tests).
    epoch: SystemTime,
    origin: Instant,
    failures_in_row: u32,
    /// How long the last call with new requests took.
    last_send: Option<Duration>,
}

impl Shipper {
    pub fn new(
        endpoints: Option<Endpoints>,
        headers: &[(String, String)],
        settings: ShipSettings,
    ) -> Shipper {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Shipper {
            endpoints,
            http: HttpSender::new(headers, settings.connect_timeout),
            breaker: Breaker::new(
                settings.breaker_threshold,
                settings.breaker_cooldown,
                settings.breaker_max_cooldown,
            ),
            backoff: Backoff::new(settings.backoff_base, settings.backoff_max, seed),
            settings,
            queue: VecDeque::new(),
            queue_bytes: 0,
            not_before: None,
            key_failed: false,
            delta: Tally::default(),
            totals: Tally::default(),
            epoch: SystemTime::now(),
            origin: Instant::now(),
            failures_in_row: 0,
            last_send: None,
        }
    }

    /// Whether anything can be sent at all (a backend, and no failed API key).
    pub fn can_send(&self) -> bool {
        self.endpoints.is_some() && !self.key_failed
    }

    /// Why nothing can be sent, if so.
    pub fn blocked(&self) -> Option<DropReason> {
        if self.endpoints.is_none() {
            Some(DropReason::NoBackend)
        } else if self.key_failed {
            Some(DropReason::ApiKey)
        } else {
            None
        }
    }

    pub fn http(&self) -> &HttpSender {
        &self.http
    }

    /// The API key header, once fetched.
    pub fn set_header(&mut self, name: &str, value: &str) {
        if !self.http.add_header(name, value) {
            log::warn!("the API key header {name:?} is not a valid HTTP header; sending without");
        }
    }

    /// The API key could not be fetched: from now on everything is dropped and counted.
    pub fn key_failed(&mut self) {
        self.key_failed = true;
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queue_bytes
    }

    /// Everything counted since the start.
    pub fn totals(&self) -> Tally {
        let mut t = self.totals.clone();
        t.add(&self.delta);
        t
    }

    /// Everything counted since the last call.
    pub fn take_delta(&mut self) -> Tally {
        let d = std::mem::take(&mut self.delta);
        self.totals.add(&d);
        d
    }

    /// Counts a drop that happened before sending (too large to encode, ...).
    pub fn count_drop(&mut self, reason: DropReason, points: u64, events: u64) {
        self.delta.drop(reason, points, events);
    }

    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open(self.now_sys())
    }

    fn now_sys(&self) -> SystemTime {
        self.epoch + self.origin.elapsed()
    }

    /// Sends the queue, then `fresh`, until done or `deadline`; what is left waits in the queue.
    pub async fn ship(&mut self, fresh: Vec<Encoded>, deadline: Instant) {
        if !self.can_send() {
            let reason = if self.endpoints.is_none() {
                DropReason::NoBackend
            } else {
                DropReason::ApiKey
            };
            for r in self.queue.drain(..).chain(fresh) {
                self.delta.drop(reason, r.points, r.events);
            }
            self.queue_bytes = 0;
            return;
        }
        let started = Instant::now();
        let fresh_work = !fresh.is_empty();
        let mut work: VecDeque<Encoded> = std::mem::take(&mut self.queue);
        self.queue_bytes = 0;
        work.extend(fresh);
        while let Some(req) = work.pop_front() {
            match self.attempt(req, deadline).await {
                None => continue,
                Some(back) => {
                    work.push_front(back);
                    break;
                }
            }
        }
        for r in work {
            self.enqueue(r);
        }
        if fresh_work {
            self.last_send = Some(started.elapsed());
        }
    }

    /// How long the last call with new requests took, once.
    pub fn take_send_duration(&mut self) -> Option<Duration> {
        self.last_send.take()
    }

    /// Drops the queue, counting it (at SHUTDOWN, after the last try).
    pub fn drop_queue(&mut self, reason: DropReason) {
        for r in std::mem::take(&mut self.queue) {
            self.delta.drop(reason, r.points, r.events);
        }
        self.queue_bytes = 0;
    }

    /// Keeps retrying what is queued, with backoff, until `stop` is notified, the queue is empty
    /// or `until`; each round bounded by `round`.
    pub async fn linger(&mut self, stop: &Notify, until: Instant, round: Duration) {
        let mut n = 0u32;
        while !self.queue.is_empty() && self.can_send() {
            let mut wake = Instant::now() + self.backoff.delay(n).max(MIN_ATTEMPT);
            if let Some(nb) = self.not_before {
                wake = wake.max(nb);
            }
            if wake >= until {
                return;
            }
            tokio::select! {
                _ = stop.notified() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let deadline = (Instant::now() + round).min(until);
            self.ship(Vec::new(), deadline).await;
            n = n.saturating_add(1);
        }
    }

    /// One request until it is delivered, dropped, or must wait for a later call (returned).
    async fn attempt(&mut self, mut req: Encoded, deadline: Instant) -> Option<Encoded> {
        loop {
            let now = Instant::now();
            if self.not_before.is_some_and(|nb| now < nb) {
                return Some(req);
            }
            self.not_before = None;
            if !self.breaker.allows(self.now_sys()) || now + MIN_ATTEMPT > deadline {
                return Some(req);
            }
            let Some(url) = self.url(req.target) else {
                self.delta
                    .drop(DropReason::NoBackend, req.points, req.events);
                return None;
            };
            self.delta.requests += 1;
            if req.attempts > 0 {
                self.delta.retries += 1;
            }
            req.attempts = req.attempts.saturating_add(1);
            let result = self
                .http
                .post(
                    &url,
                    req.target.content_type(),
                    req.body.clone(),
                    deadline.saturating_duration_since(now),
                )
                .await;
            let after = match result {
                Ok(answer) => {
                    match classify(answer.status, answer.retry_after.as_deref(), self.now_sys()) {
                        Verdict::Delivered => {
                            self.success();
                            self.delivered(&req, &answer.body);
                            return None;
                        }
                        Verdict::Drop { status } => {
                            if status >= 500 {
                                self.failure();
                            } else {
                                // The backend is up and answering: not a reason to stop sending.
                                self.success();
                            }
                            log::warn!(
                                "backend refused {} point(s) and {} event(s) with status {status}",
                                req.points,
                                req.events
                            );
                            self.delta.drop(DropReason::Status, req.points, req.events);
                            return None;
                        }
                        Verdict::Retry { after } => {
                            log::debug!("backend answered {}; will retry", answer.status);
                            self.failure();
                            after
                        }
                    }
                }
                Err(e) => {
                    log::debug!("send failed: {e}");
                    self.failure();
                    if matches!(e, SendError::Url(_)) {
                        self.delta.drop(DropReason::Status, req.points, req.events);
                        return None;
                    }
                    None
                }
            };
            let wait = match after {
                Some(d) => {
                    // Honoured across calls too: the next flush does not send before it.
                    self.not_before = Some(Instant::now() + d);
                    d
                }
                None => self.backoff.delay(req.attempts.saturating_sub(1)),
            };
            let at = Instant::now() + wait;
            if at + MIN_ATTEMPT > deadline || !self.breaker.allows(self.now_sys()) {
                return Some(req);
            }
            tokio::time::sleep_until(at).await;
        }
    }

    fn delivered(&mut self, req: &Encoded, body: &[u8]) {
        let (rejected, message) = match req.target.signal() {
            Some(signal) => partial_success(signal, body),
            None => (0, String::new()),
        };
        let rejected = u64::try_from(rejected).unwrap_or(0);
        let (mut points, mut events) = (req.points, req.events);
        if rejected > 0 || !message.is_empty() {
            log::warn!("backend accepted with partial success: {rejected} rejected; {message}");
        }
        match req.target {
            Target::Metrics => {
                let r = rejected.min(points);
                points -= r;
                self.delta.drop(DropReason::Rejected, r, 0);
            }
            Target::Logs => {
                let r = rejected.min(events);
                events -= r;
                self.delta.drop(DropReason::Rejected, 0, r);
            }
            Target::Ndjson => {}
        }
        self.delta.points_sent += points;
        self.delta.events_sent += events;
        self.delta.bytes_raw += req.raw_bytes as u64;
        self.delta.bytes_sent += req.body.len() as u64;
    }

    fn success(&mut self) {
        self.failures_in_row = 0;
        self.breaker.on_success();
    }

    fn failure(&mut self) {
        self.failures_in_row = self.failures_in_row.saturating_add(1);
        if self.breaker.on_failure(self.now_sys()) {
            self.delta.breaker_trips += 1;
            log::warn!(
                "backend failed {} time(s) in a row: not sending for a while",
                self.failures_in_row
            );
        }
    }

    fn url(&self, target: Target) -> Option<String> {
        let e = self.endpoints.as_ref()?;
        Some(match target {
            Target::Metrics | Target::Ndjson => e.metrics.clone(),
            Target::Logs => e.logs.clone(),
        })
    }

    /// Keeps `r` for a later call; the oldest requests go when the queue is over its caps.
    fn enqueue(&mut self, r: Encoded) {
        self.queue_bytes += r.body.len();
        self.queue.push_back(r);
        while self.queue_bytes > self.settings.max_queue_bytes
            || self.queue.len() > self.settings.max_queue_requests
        {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.queue_bytes = self.queue_bytes.saturating_sub(old.body.len());
            self.delta
                .drop(DropReason::QueueFull, old.points, old.events);
        }
    }
}
