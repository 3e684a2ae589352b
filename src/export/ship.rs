//! Sending encoded requests: retries per the OTLP rules, a bounded retry queue, the circuit
//! breaker, and the tally of what was sent, retried and dropped.
//!
//! In: [`Encoded`] requests and a deadline per call. Out: HTTP requests through [`HttpSender`],
//! and a [`Tally`] the flush control turns into loupe's own metrics. Nothing here waits past the
//! deadline it is given: a retry that does not fit stays in the queue for the next call, and the
//! queue keeps the newest requests within [`ShipSettings::max_queue_bytes`], counting the oldest
//! it drops.
//!
//! Metrics requests (and NDJSON, which goes to the metrics URL) and logs requests travel in two
//! lanes that are sent concurrently: one request of each lane at a time, so one flush costs one
//! backend round trip, not two. Each request carries an idempotency key in
//! [`BATCH_ID_HEADER`] (`<instance>-<sequence>`), the same on every retry of that request and
//! different for every other request of the process: a backend can drop a request whose key it
//! has already accepted.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, HeaderValue};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::encode::{Encoded, Target};
use super::http::{Answer, HttpSender, SendError};
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

/// The idempotency key of each request: `<instance>-<sequence>`, kept across its retries.
pub const BATCH_ID_HEADER: &str = "x-loupe-batch-id";

/// This process's part of the batch ids (0: not drawn yet).
static INSTANCE: AtomicU64 = AtomicU64::new(0);

/// A random instance part: std's RandomState is seeded from the OS's randomness, and the wall
/// clock's nanoseconds tell apart environments restored from one snapshot (which share that seed).
fn draw_instance() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new()
        .hash_one((nanos, std::process::id()))
        .max(1)
}

/// The instance part of the batch ids, drawn at the first request.
fn instance_id() -> u64 {
    let current = INSTANCE.load(Ordering::Relaxed);
    if current != 0 {
        return current;
    }
    let drawn = draw_instance();
    match INSTANCE.compare_exchange(0, drawn, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => drawn,
        Err(other) => other,
    }
}

/// Draws a new instance part for the requests made from now on. Called at the first INVOKE:
/// a request made during init may be part of a SnapStart snapshot, and the environments restored
/// from it must not go on with the same ids.
pub fn renew_instance_id() {
    INSTANCE.store(draw_instance(), Ordering::Relaxed);
}

/// The next request number of this process (shared by every shipper, so never reused).
fn next_sequence() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(1);
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// A request with its idempotency key.
struct Pending {
    req: Encoded,
    /// Process-wide order of creation: the queue keeps requests oldest first by it.
    seq: u64,
    key: HeaderValue,
}

impl Pending {
    fn new(req: Encoded) -> Pending {
        let seq = next_sequence();
        let id = format!("{:016x}-{seq}", instance_id());
        // Hex digits, a dash and decimal digits: always a valid header value.
        let key = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
        Pending { req, seq, key }
    }
}

/// Metrics and NDJSON in lane 0, logs and spans in lane 1.
fn lane(target: Target) -> usize {
    match target {
        Target::Metrics | Target::Ndjson => 0,
        Target::Logs | Target::Traces => 1,
    }
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const STOPPED: u8 = 2;

/// Between a background send task and the flush control: whether the task is in the middle of
/// sending (then a pipelined flush leaves its data for later rather than wait), and the stop
/// signal (the task ends after the send it is in, or at once between sends).
#[derive(Debug)]
pub struct SendControl {
    state: AtomicU8,
    wake: Notify,
}

impl SendControl {
    /// For a task that starts with a send.
    pub fn busy() -> SendControl {
        SendControl {
            state: AtomicU8::new(BUSY),
            wake: Notify::new(),
        }
    }

    /// Whether a send is running now.
    pub fn is_busy(&self) -> bool {
        self.state.load(Ordering::SeqCst) == BUSY
    }

    /// Stops the task if it is between sends (it ends at once); `false` while it sends.
    pub fn stop_if_idle(&self) -> bool {
        match self
            .state
            .compare_exchange(IDLE, STOPPED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(STOPPED) => {
                self.wake.notify_one();
                true
            }
            Err(_) => false,
        }
    }

    /// Stops the task after the send it is in, if any.
    pub fn stop(&self) {
        self.state.store(STOPPED, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The task is about to send; `false`: it was stopped.
    fn begin(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The task's send ended; `false`: it was stopped meanwhile.
    pub fn end(&self) -> bool {
        self.state
            .compare_exchange(BUSY, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// What one attempt came to.
enum Outcome {
    /// Delivered or dropped (and counted): done with it.
    Done,
    /// To try again, not before this long.
    Again(Duration),
}

pub struct Shipper {
    endpoints: Option<Endpoints>,
    http: HttpSender,
    settings: ShipSettings,
    breaker: Breaker,
    backoff: Backoff,
    queue: VecDeque<Pending>,
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
    /// The metrics lane and the logs lane go concurrently, each in order.
    pub async fn ship(&mut self, fresh: Vec<Encoded>, deadline: Instant) {
        if !self.can_send() {
            let reason = self.blocked().unwrap_or(DropReason::NoBackend);
            for r in self.queue.drain(..) {
                self.delta.drop(reason, r.req.points, r.req.events);
            }
            for r in fresh {
                self.delta.drop(reason, r.points, r.events);
            }
            self.queue_bytes = 0;
            return;
        }
        let started = Instant::now();
        let fresh_work = !fresh.is_empty();
        let mut lanes: [VecDeque<Pending>; 2] = [VecDeque::new(), VecDeque::new()];
        let queued = std::mem::take(&mut self.queue);
        self.queue_bytes = 0;
        for p in queued
            .into_iter()
            .chain(fresh.into_iter().map(Pending::new))
        {
            if let Some(l) = lanes.get_mut(lane(p.req.target)) {
                l.push_back(p);
            }
        }
        // When each lane's head may go (its backoff).
        let mut ready = [started; 2];
        loop {
            let now = Instant::now();
            if self.not_before.is_some_and(|nb| now >= nb) {
                self.not_before = None;
            }
            let gate = self.not_before.unwrap_or(now);
            let Some(next) = lanes
                .iter()
                .zip(ready)
                .filter(|(l, _)| !l.is_empty())
                .map(|(_, r)| r.max(gate))
                .min()
            else {
                break;
            };
            let sys = self.now_sys();
            if !self.breaker.allows(sys) || next + MIN_ATTEMPT > deadline {
                break;
            }
            if next > now {
                tokio::time::sleep_until(next).await;
                continue;
            }
            // Half-open: one request tests the backend.
            let single = self.breaker.half_open(sys);
            let mut picks: [Option<Pending>; 2] = [None, None];
            for ((slot, l), r) in picks.iter_mut().zip(lanes.iter_mut()).zip(ready) {
                if r.max(gate) <= now {
                    *slot = l.pop_front();
                    if single && slot.is_some() {
                        break;
                    }
                }
            }
            for p in picks.iter_mut().flatten() {
                self.delta.requests += 1;
                if p.req.attempts > 0 {
                    self.delta.retries += 1;
                }
                p.req.attempts = p.req.attempts.saturating_add(1);
            }
            let timeout = deadline.saturating_duration_since(now);
            let [a, b] = &picks;
            let (ra, rb) = tokio::join!(
                self.post(a.as_ref(), timeout),
                self.post(b.as_ref(), timeout)
            );
            let results = picks.into_iter().zip([ra, rb]);
            for ((l, r), (pick, result)) in lanes.iter_mut().zip(ready.iter_mut()).zip(results) {
                let (Some(p), Some(result)) = (pick, result) else {
                    continue;
                };
                if let Outcome::Again(wait) = self.outcome(&p.req, result) {
                    *r = Instant::now() + wait;
                    l.push_front(p);
                }
            }
        }
        // Back into the queue oldest first. Each lane is in sequence order (filled from the
        // queue in order, a retried head put back in front), so merging the two heads is enough.
        let [mut metrics, mut logs] = lanes;
        loop {
            let from_metrics = match (metrics.front(), logs.front()) {
                (Some(m), Some(l)) => m.seq < l.seq,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if from_metrics {
                metrics.pop_front()
            } else {
                logs.pop_front()
            };
            if let Some(p) = next {
                self.enqueue(p);
            }
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
            self.delta.drop(reason, r.req.points, r.req.events);
        }
        self.queue_bytes = 0;
    }

    /// Keeps retrying what is queued, with backoff, until `control` stops it, the queue is
    /// empty or `until`; each round bounded by `round`. Call it idle (after
    /// [`SendControl::end`]); it marks its rounds busy.
    pub async fn linger(&mut self, control: &SendControl, until: Instant, round: Duration) {
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
                _ = control.wake.notified() => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if !control.begin() {
                return;
            }
            let deadline = (Instant::now() + round).min(until);
            self.ship(Vec::new(), deadline).await;
            if !control.end() {
                return;
            }
            n = n.saturating_add(1);
        }
    }

    /// One attempt of `p` (`None` without a request), with its batch id.
    async fn post(
        &self,
        p: Option<&Pending>,
        timeout: Duration,
    ) -> Option<Result<Answer, SendError>> {
        let p = p?;
        let Some(url) = self.url(p.req.target) else {
            return Some(Err(SendError::Url(String::new())));
        };
        let extra = [(HeaderName::from_static(BATCH_ID_HEADER), p.key.clone())];
        Some(
            self.http
                .post_tagged(
                    &url,
                    p.req.target.content_type(),
                    &extra,
                    p.req.body.clone(),
                    timeout,
                )
                .await,
        )
    }

    /// Applies the result of one attempt of `req`: counts, breaker, and when to try again.
    fn outcome(&mut self, req: &Encoded, result: Result<Answer, SendError>) -> Outcome {
        let after = match result {
            Ok(answer) => {
                match classify(answer.status, answer.retry_after.as_deref(), self.now_sys()) {
                    Verdict::Delivered => {
                        self.success();
                        self.delivered(req, &answer.body);
                        return Outcome::Done;
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
                        return Outcome::Done;
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
                    return Outcome::Done;
                }
                None
            }
        };
        Outcome::Again(match after {
            Some(d) => {
                // Honoured across calls too: the next flush does not send before it.
                self.not_before = Some(Instant::now() + d);
                d
            }
            None => self.backoff.delay(req.attempts.saturating_sub(1)),
        })
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
            Target::Logs | Target::Traces => {
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
            Target::Traces => e.traces.clone(),
        })
    }

    /// Keeps `p` for a later call; the oldest requests go when the queue is over its caps.
    fn enqueue(&mut self, p: Pending) {
        self.queue_bytes += p.req.body.len();
        self.queue.push_back(p);
        while self.queue_bytes > self.settings.max_queue_bytes
            || self.queue.len() > self.settings.max_queue_requests
        {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.queue_bytes = self.queue_bytes.saturating_sub(old.req.body.len());
            self.delta
                .drop(DropReason::QueueFull, old.req.points, old.req.events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: Target) -> Encoded {
        Encoded {
            target,
            body: bytes::Bytes::from_static(b"x"),
            raw_bytes: 1,
            points: 1,
            events: 0,
            attempts: 0,
        }
    }

    #[test]
    fn batch_ids_are_unique_and_renewed_per_instance() {
        let a = Pending::new(request(Target::Metrics));
        let b = Pending::new(request(Target::Logs));
        assert!(b.seq > a.seq);
        assert_ne!(a.key, b.key);
        let instance = |p: &Pending| {
            let key = p.key.to_str().unwrap().to_string();
            let (i, n) = key.split_once('-').unwrap();
            assert_eq!(n, p.seq.to_string());
            i.to_string()
        };
        let before = instance(&Pending::new(request(Target::Metrics)));
        renew_instance_id();
        let after = instance(&Pending::new(request(Target::Metrics)));
        assert_eq!(after.len(), 16);
        assert_ne!(before, after, "a new instance part after a renewal");
    }

    #[test]
    fn send_control_states() {
        let c = SendControl::busy();
        assert!(c.is_busy());
        assert!(!c.stop_if_idle(), "not while it sends");
        assert!(c.end());
        assert!(!c.is_busy());
        assert!(c.stop_if_idle());
        assert!(!c.begin(), "stopped: no further send");
        let c = SendControl::busy();
        c.stop();
        assert!(!c.end(), "stopped during the send: the task ends after it");
    }
}
