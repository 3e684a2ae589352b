//! Flush control against a scripted local backend and a fake `Source`: budgets hold, every point
//! and event arrives once after recovery or its loss is counted in loupe's own metrics (read back
//! from what the backend received), and queues stay bounded.

mod support;

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loupe::aggregate::{Histogram, Series, SeriesKey};
use loupe::batch::{Batch, Source};
use loupe::config::Config;
use loupe::emf::Unit;
use loupe::event::{Body, Event, Kind};
use loupe::export::proto::collector::logs::v1::ExportLogsServiceRequest;
use loupe::export::proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use loupe::export::proto::common::v1::any_value;
use loupe::export::proto::metrics::v1::{metric, number_data_point};
use loupe::export::ship::{DropReason, ShipSettings};
use loupe::extension::{FlushContext, Flusher};
use loupe::flush::{Flush, Settings};
use loupe::invocation::{self, Drained, Tracker, TrackerHandle};
use loupe::lambda::client::{InvokeEvent, Registration};
use loupe::lambda::events::{Platform, PlatformEvent, RuntimeDone};
use loupe::lambda::stats::Stats;
use prost::Message;
use support::backend::{Backend, Behaviour, Received, ok};
use tokio::time::Instant;

/// Batches handed out one per drain, oldest first.
#[derive(Clone, Default)]
struct FakeSource {
    batches: Arc<Mutex<VecDeque<Batch>>>,
    drains: Arc<Mutex<u32>>,
}

impl FakeSource {
    fn push(&self, b: Batch) {
        self.batches.lock().unwrap().push_back(b);
    }
}

impl Source for FakeSource {
    async fn drain(&mut self, _: Drained, _: Instant) -> Batch {
        *self.drains.lock().unwrap() += 1;
        self.batches.lock().unwrap().pop_front().unwrap_or_default()
    }
}

fn series(name: &str, v: f64) -> Series {
    let mut h = Histogram::new();
    h.record(v).unwrap();
    Series {
        key: SeriesKey::new("App", name, Unit::Milliseconds, 60, vec![]),
        histogram: h,
    }
}

fn event(body: &str) -> Event {
    let mut e = Event::new(Kind::Log, 1);
    e.body = Body::Text(body.to_string());
    e
}

fn batch(tag: &str, points: usize, events: usize) -> Batch {
    Batch {
        series: (0..points)
            .map(|i| series(&format!("{tag}.m{i}"), i as f64))
            .collect(),
        events: (0..events).map(|i| event(&format!("{tag}.e{i}"))).collect(),
        counters: Vec::new(),
        spans: Vec::new(),
    }
}

fn config(url: &str, flush: &str, timeout_ms: u64) -> Config {
    config_with(url, flush, timeout_ms, &[])
}

fn config_with(url: &str, flush: &str, timeout_ms: u64, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<&str, String> = [
        ("LOUPE_BACKEND_URL", url.to_string()),
        ("LOUPE_FLUSH", flush.to_string()),
        ("LOUPE_FLUSH_TIMEOUT_MS", timeout_ms.to_string()),
    ]
    .into_iter()
    .collect();
    for (k, v) in extra {
        vars.insert(k, v.to_string());
    }
    let (c, warnings) = Config::from_lookup(|k| vars.get(k).cloned());
    assert!(warnings.is_empty(), "{warnings:?}");
    c
}

fn settings() -> Settings {
    Settings {
        ship: ShipSettings {
            connect_timeout: Duration::from_millis(200),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(60),
            breaker_max_cooldown: Duration::from_secs(60),
            ..ShipSettings::default()
        },
        ..Settings::default()
    }
}

struct Rig {
    flush: Flush<FakeSource>,
    source: FakeSource,
    tracker: TrackerHandle,
    stats: Stats,
    registration: Registration,
    n: u32,
}

impl Rig {
    fn new(config: &Config) -> Rig {
        Rig::with(config, settings())
    }

    fn with(config: &Config, settings: Settings) -> Rig {
        let source = FakeSource::default();
        let (tracker, _task) = invocation::spawn(Tracker::default());
        Rig {
            flush: Flush::with_settings(config, source.clone(), settings),
            source,
            tracker,
            stats: Stats::default(),
            registration: Registration::default(),
            n: 0,
        }
    }

    fn invoke(&mut self) -> InvokeEvent {
        self.n += 1;
        InvokeEvent {
            request_id: format!("req-{}", self.n),
            deadline_ms: None,
            invoked_function_arn: Some(
                "arn:aws:lambda:eu-west-1:123456789012:function:orders".into(),
            ),
            tracing: None,
        }
    }

    /// runtimeDone for the next request, as the telemetry listener would deliver it.
    fn runtime_done(&self) {
        let done = RuntimeDone {
            request_id: format!("req-{}", self.n + 1),
            ..RuntimeDone::default()
        };
        assert!(self.tracker.try_event(Box::new(PlatformEvent {
            time: None,
            kind: Platform::RuntimeDone(done),
        })));
    }

    /// One INVOKE; asserts that `after_invoke` returned by `budget` (plus scheduling slack).
    async fn after_invoke(&mut self, budget: Duration) {
        let invoke = self.invoke();
        let deadline = Instant::now() + budget;
        let ctx = FlushContext {
            tracker: &self.tracker,
            stats: &self.stats,
            registration: &self.registration,
        };
        let done = tokio::time::timeout_at(
            deadline + Duration::from_millis(250),
            self.flush.after_invoke(ctx, &invoke, deadline),
        )
        .await;
        assert!(done.is_ok(), "after_invoke overran its deadline");
        // A pipelined flush comes due on the timer: the run loop calls it while it waits.
        if self.flush.next_timer().is_some_and(|t| t <= Instant::now()) {
            let done = tokio::time::timeout_at(
                deadline + Duration::from_millis(250),
                self.flush.on_timer(ctx, deadline),
            )
            .await;
            assert!(done.is_ok(), "on_timer overran its deadline");
        }
    }

    async fn on_timer(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        let ctx = FlushContext {
            tracker: &self.tracker,
            stats: &self.stats,
            registration: &self.registration,
        };
        self.flush.on_timer(ctx, deadline).await;
    }

    async fn shutdown(&mut self, budget: Duration) {
        let deadline = Instant::now() + budget;
        let ctx = FlushContext {
            tracker: &self.tracker,
            stats: &self.stats,
            registration: &self.registration,
        };
        let done = tokio::time::timeout_at(
            deadline + Duration::from_millis(250),
            self.flush.at_shutdown(ctx, deadline),
        )
        .await;
        assert!(done.is_ok(), "at_shutdown overran its deadline");
    }
}

/// What the backend received, decoded.
#[derive(Default, Debug)]
struct Seen {
    /// Metric names of histogram points, per request answered 2xx.
    accepted_points: Vec<String>,
    accepted_events: Vec<String>,
    /// Sum of each `loupe.*` counter over every accepted request, keyed by name and attributes.
    counters: HashMap<String, i64>,
    requests: usize,
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

fn drain_received(backend: &mut Backend) -> Vec<Received> {
    let mut out = Vec::new();
    while let Ok(r) = backend.received.try_recv() {
        out.push(r);
    }
    out
}

fn decode(received: &[Received]) -> Seen {
    let mut seen = Seen::default();
    for r in received {
        seen.requests += 1;
        if !r.status.is_some_and(|s| (200..300).contains(&s)) {
            continue;
        }
        let body = gunzip(&r.body);
        if r.path == "/v1/metrics" {
            let req = ExportMetricsServiceRequest::decode(&body[..]).expect("metrics request");
            for rm in req.resource_metrics {
                let account = rm.resource.as_ref().and_then(|res| {
                    res.attributes
                        .iter()
                        .find(|kv| kv.key == "cloud.account.id")
                        .and_then(|kv| kv.value.clone()?.value)
                });
                assert_eq!(
                    account,
                    Some(any_value::Value::StringValue("123456789012".into()))
                );
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        match m.data {
                            Some(metric::Data::ExponentialHistogram(_)) => {
                                seen.accepted_points.push(m.name)
                            }
                            Some(metric::Data::Sum(s)) => {
                                for dp in s.data_points {
                                    let mut key = m.name.clone();
                                    for kv in &dp.attributes {
                                        if let Some(any_value::Value::StringValue(v)) =
                                            kv.value.as_ref().and_then(|v| v.value.as_ref())
                                        {
                                            key.push_str(&format!(",{}={v}", kv.key));
                                        }
                                    }
                                    let Some(number_data_point::Value::AsInt(v)) = dp.value else {
                                        panic!("counter without an int value");
                                    };
                                    *seen.counters.entry(key).or_default() += v;
                                }
                            }
                            other => panic!("unexpected metric data {other:?}"),
                        }
                    }
                }
            }
        } else if r.path == "/v1/logs" {
            let req = ExportLogsServiceRequest::decode(&body[..]).expect("logs request");
            for rl in req.resource_logs {
                for sl in rl.scope_logs {
                    for lr in sl.log_records {
                        match lr.body.and_then(|b| b.value) {
                            Some(any_value::Value::StringValue(s)) => seen.accepted_events.push(s),
                            other => panic!("event body {other:?}"),
                        }
                    }
                }
            }
        } else {
            panic!("unexpected path {}", r.path);
        }
    }
    seen
}

fn user_points(seen: &Seen) -> Vec<String> {
    let mut v: Vec<String> = seen
        .accepted_points
        .iter()
        .filter(|n| !n.starts_with("loupe."))
        .cloned()
        .collect();
    v.sort();
    v
}

fn names(tag: &str, n: usize, what: &str) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{tag}.{what}{i}")).collect();
    v.sort();
    v
}

/// The sorted names of every `(tag, n)` part: `n` items of kind `what` each.
fn all_names(parts: &[(&str, usize)], what: &str) -> Vec<String> {
    let mut v: Vec<String> = parts.iter().flat_map(|(t, n)| names(t, *n, what)).collect();
    v.sort();
    v
}

/// The accepted events' names, sorted.
fn user_events(seen: &Seen) -> Vec<String> {
    let mut v = seen.accepted_events.clone();
    v.sort();
    v
}

fn counter(seen: &Seen, key: &str) -> i64 {
    seen.counters.get(key).copied().unwrap_or(0)
}

#[tokio::test]
async fn end_flush_delivers_everything_once_and_reports_itself() {
    let mut backend = Backend::start(ok()).await;
    let mut rig = Rig::new(&config(&backend.url(), "end", 1_000));
    rig.source.push(batch("a", 3, 2));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("b", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.shutdown(Duration::from_secs(2)).await;

    let seen = decode(&drain_received(&mut backend));
    assert_eq!(user_points(&seen), all_names(&[("a", 3), ("b", 1)], "m"));
    assert_eq!(user_events(&seen), names("a", 2, "e"));
    // The second flush reports the first: 3 series + its `loupe.flushes` point, 2 events.
    assert!(counter(&seen, "loupe.export.points") >= 4);
    assert_eq!(counter(&seen, "loupe.export.events"), 2);
    assert_eq!(counter(&seen, "loupe.flushes"), 2);
    assert!(counter(&seen, "loupe.export.bytes,stage=raw") > 0);
    assert!(
        counter(&seen, "loupe.export.bytes,stage=compressed")
            < counter(&seen, "loupe.export.bytes,stage=raw")
    );
    assert!(
        seen.accepted_points
            .iter()
            .any(|n| n == "loupe.flush.duration")
    );
    let totals = rig.flush.totals().expect("settled");
    assert_eq!(totals.total_dropped(), (0, 0));
    assert_eq!(totals.retries, 0);
}

#[tokio::test]
async fn backend_down_returns_within_budget_and_counts_every_loss() {
    // A port with nothing listening: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut rig = Rig::new(&config(&format!("http://127.0.0.1:{port}"), "end", 300));
    for i in 0..5 {
        rig.source.push(batch(&format!("x{i}"), 2, 1));
        rig.after_invoke(Duration::from_secs(1)).await;
    }
    let before = rig.flush.totals().expect("settled");
    assert!(before.breaker_trips >= 1, "{before:?}");
    rig.shutdown(Duration::from_secs(1)).await;
    let totals = rig.flush.totals().expect("settled");
    assert_eq!(totals.points_sent + totals.events_sent, 0);
    // Every user point and event is counted as lost (own counter points come on top).
    let (points, events) = totals.total_dropped();
    assert!(points >= 10, "{totals:?}");
    assert_eq!(events, 5, "{totals:?}");
}

#[tokio::test]
async fn a_hanging_backend_costs_one_budget_then_the_data_goes_after_recovery() {
    let mut backend = Backend::start(Behaviour::Hang).await;
    let mut rig = Rig::new(&config(&backend.url(), "end", 300));
    rig.source.push(batch("h", 2, 1));
    rig.after_invoke(Duration::from_secs(5)).await;
    // The timed-out request waits for a retry (or its task is still finishing at the deadline).
    assert!(rig.flush.queued() >= 1 || rig.flush.in_flight());
    backend.set_default(ok());
    backend.release();
    rig.after_invoke(Duration::from_secs(5)).await;
    rig.shutdown(Duration::from_secs(2)).await;
    let seen = decode(&drain_received(&mut backend));
    assert_eq!(user_points(&seen), names("h", 2, "m"));
    assert_eq!(seen.accepted_events, names("h", 1, "e"));
    assert!(counter(&seen, "loupe.export.retries") >= 1);
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_budget() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Status(
        429,
        vec![("retry-after", "1".into())],
        vec![],
    )]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 3_000));
    rig.source.push(batch("r", 2, 0));
    let t0 = Instant::now();
    rig.after_invoke(Duration::from_secs(5)).await;
    let waited = t0.elapsed();
    let received = drain_received(&mut backend);
    assert_eq!(received.len(), 2, "one 429, one retry");
    // The retry did not go before the backend's Retry-After (tokio's clock, not a speed check).
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    let seen = decode(&received);
    assert_eq!(user_points(&seen), names("r", 2, "m"));
    assert_eq!(rig.flush.totals().unwrap().retries, 1);
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_waits_for_a_later_flush() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Status(
        429,
        vec![("retry-after", "30".into())],
        vec![],
    )]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 300));
    rig.source.push(batch("w", 1, 0));
    rig.after_invoke(Duration::from_secs(1)).await;
    assert_eq!(rig.flush.queued(), 1);
    rig.source.push(batch("w2", 1, 0));
    rig.after_invoke(Duration::from_secs(1)).await;
    // Nothing more went out: the backend asked for 30 s.
    assert_eq!(drain_received(&mut backend).len(), 1);
    assert_eq!(rig.flush.queued(), 2);
    rig.shutdown(Duration::from_secs(1)).await;
    let t = rig.flush.totals().unwrap();
    assert!(t.points_dropped(DropReason::Unsent) >= 2, "{t:?}");
    assert_eq!(drain_received(&mut backend).len(), 0);
}

#[tokio::test]
async fn unavailable_then_ok_arrives_exactly_once() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Status(503, vec![], b"busy".to_vec())]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 1_000));
    rig.source.push(batch("u", 4, 3));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("v", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    let seen = decode(&drain_received(&mut backend));
    assert_eq!(user_points(&seen), all_names(&[("u", 4), ("v", 1)], "m"));
    assert_eq!(user_events(&seen), names("u", 3, "e"));
    assert_eq!(counter(&seen, "loupe.export.retries"), 1);
}

#[tokio::test]
async fn bad_request_is_dropped_counted_and_never_resent() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Status(400, vec![], b"bad".to_vec())]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 1_000));
    rig.source.push(batch("d", 3, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("e", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    let received = drain_received(&mut backend);
    assert_eq!(received.len(), 2, "no resend of the refused request");
    let seen = decode(&received);
    assert_eq!(user_points(&seen), names("e", 1, "m"));
    // The 3 series and the first flush's own `loupe.flushes` point.
    assert_eq!(
        counter(&seen, "loupe.export.dropped,reason=status,item=point"),
        4
    );
}

#[tokio::test]
async fn partial_success_counts_rejections_and_garbage_bodies_count_as_success() {
    let mut backend = Backend::start(ok()).await;
    let partial = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 2,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec();
    backend.script([
        Behaviour::Status(200, vec![], partial),
        Behaviour::Status(200, vec![], b"\xff\x00 not protobuf".to_vec()),
    ]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 1_000));
    rig.source.push(batch("p", 3, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("q", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("s", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    let received = drain_received(&mut backend);
    assert_eq!(received.len(), 3, "no resend after a partial success");
    let seen = decode(&received);
    assert_eq!(
        counter(&seen, "loupe.export.dropped,reason=rejected,item=point"),
        2
    );
    let t = rig.flush.totals().unwrap();
    assert_eq!(t.points_dropped(DropReason::Rejected), 2);
    assert_eq!(t.retries, 0);
}

#[tokio::test]
async fn a_reset_connection_is_retried_and_delivered_once() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Reset]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 1_000));
    rig.source.push(batch("c", 2, 2));
    rig.after_invoke(Duration::from_secs(2)).await;
    let seen = decode(&drain_received(&mut backend));
    assert_eq!(user_points(&seen), names("c", 2, "m"));
    assert_eq!(user_events(&seen), names("c", 2, "e"));
    assert!(rig.flush.totals().unwrap().retries >= 1);
}

/// Bound on waits for the backend in these tests (a safeguard, not a speed check).
const WAIT: Duration = Duration::from_secs(20);

async fn next_request(backend: &mut Backend) -> Received {
    tokio::time::timeout(WAIT, backend.received.recv())
        .await
        .expect("a request in time")
        .expect("the backend is up")
}

fn batch_id(r: &Received) -> String {
    r.headers
        .iter()
        .find(|(k, _)| k == "x-loupe-batch-id")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no batch id on {}", r.path))
}

#[tokio::test]
async fn a_slow_backend_never_delays_the_next_pipelined_flush() {
    let mut backend = Backend::start(Behaviour::Hang).await;
    backend.script([ok()]);
    let mut rig = Rig::new(&config(&backend.url(), "adaptive", 10_000));
    // The first invocation is flushed at its end (sparse until an interval is known).
    rig.source.push(batch("f0", 1, 0));
    rig.runtime_done();
    rig.after_invoke(Duration::from_secs(30)).await;
    let first = next_request(&mut backend).await;
    assert_eq!(first.status, Some(200));
    // The next comes right after: pipelined; its two requests are held by the backend.
    rig.source.push(batch("f1", 2, 1));
    rig.after_invoke(Duration::from_secs(30)).await;
    assert!(!rig.flush.sparse(), "back-to-back invocations pipeline");
    assert!(rig.flush.in_flight());
    let held = [
        next_request(&mut backend).await,
        next_request(&mut backend).await,
    ];
    assert!(held.iter().all(|r| r.status.is_none()), "both hang");
    assert_eq!(backend.held(), 2);
    // The next INVOKE while the send still runs: after_invoke returns without waiting for it
    // (the backend still holds both requests) and leaves the new data in the source.
    rig.source.push(batch("f2", 1, 0));
    let drains = *rig.source.drains.lock().unwrap();
    rig.after_invoke(Duration::from_secs(30)).await;
    assert_eq!(
        backend.held(),
        2,
        "returned while the send was still running"
    );
    assert_eq!(
        *rig.source.drains.lock().unwrap(),
        drains,
        "f2 stays in the source"
    );
    assert!(rig.flush.in_flight());
    // The skipped flush is tried again on the timer soon.
    let retry = rig.flush.next_timer().expect("a timer");
    assert!(retry > Instant::now() && retry <= Instant::now() + loupe::flush::BUSY_RETRY);
    // The backend answers; a later pipelined flush takes what was left behind.
    backend.set_default(ok());
    backend.release();
    assert!(rig.flush.idle(Instant::now() + WAIT).await);
    rig.source.push(batch("f3", 1, 1));
    rig.after_invoke(Duration::from_secs(30)).await;
    assert_eq!(*rig.source.drains.lock().unwrap(), drains + 1);
    assert!(rig.flush.idle(Instant::now() + WAIT).await);
    rig.shutdown(Duration::from_secs(2)).await;
    let mut all = vec![first];
    all.extend(held);
    all.extend(drain_received(&mut backend));
    // Held requests were answered 200 once released.
    for r in &mut all {
        r.status.get_or_insert(200);
    }
    let seen = decode(&all);
    assert_eq!(
        user_points(&seen),
        all_names(&[("f0", 1), ("f1", 2), ("f2", 1), ("f3", 1)], "m"),
        "each point exactly once"
    );
    assert_eq!(user_events(&seen), all_names(&[("f1", 1), ("f3", 1)], "e"));
    let t = rig.flush.totals().unwrap();
    assert_eq!(t.retries, 0);
    assert_eq!(t.total_dropped(), (0, 0));
}

#[tokio::test]
async fn the_metrics_and_logs_requests_of_one_flush_overlap() {
    let mut backend = Backend::start(Behaviour::Hang).await;
    let mut rig = Rig::new(&config(&backend.url(), "end", 10_000));
    rig.source.push(batch("o", 2, 2));
    let watch = async {
        let a = next_request(&mut backend).await;
        let b = next_request(&mut backend).await;
        // Both arrived before either was answered: sent concurrently.
        let held = backend.held();
        backend.release();
        (a, b, held)
    };
    let ((), (a, b, held)) = tokio::join!(rig.after_invoke(Duration::from_secs(30)), watch);
    assert_eq!(held, 2);
    let mut paths = [a.path.as_str(), b.path.as_str()];
    paths.sort();
    assert_eq!(paths, ["/v1/logs", "/v1/metrics"]);
    assert_ne!(batch_id(&a), batch_id(&b));
    let t = rig.flush.totals().unwrap();
    assert_eq!(t.requests, 2);
    assert_eq!(t.retries, 0);
    assert_eq!(t.points_sent, 2 + 1, "the series and loupe.flushes");
    assert_eq!(t.events_sent, 2);
}

#[tokio::test]
async fn a_request_keeps_its_batch_id_across_retries_and_each_request_has_its_own() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Status(503, vec![], vec![])]);
    let mut rig = Rig::new(&config(&backend.url(), "end", 2_000));
    rig.source.push(batch("i", 1, 0));
    rig.after_invoke(Duration::from_secs(5)).await;
    let first = drain_received(&mut backend);
    assert_eq!(first.len(), 2, "one 503, one retry");
    assert_eq!(first[0].status, Some(503));
    assert_eq!(first[1].status, Some(200));
    let id = batch_id(&first[0]);
    assert_eq!(batch_id(&first[1]), id, "a retry carries the same id");
    rig.source.push(batch("j", 1, 1));
    rig.after_invoke(Duration::from_secs(5)).await;
    let second = drain_received(&mut backend);
    assert_eq!(second.len(), 2, "metrics and logs");
    let ids: std::collections::HashSet<String> =
        second.iter().map(batch_id).chain([id.clone()]).collect();
    assert_eq!(ids.len(), 3, "every other request has its own id: {ids:?}");
    // `<instance>-<sequence>`: 16 hex digits (drawn per process, again at its first INVOKE; the
    // tests of this binary share one process), then the request's number.
    for id in &ids {
        let (instance, sequence) = id.split_once('-').expect("instance-sequence");
        assert_eq!(instance.len(), 16, "{id}");
        assert!(instance.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(sequence.parse::<u64>().is_ok(), "{id}");
    }
    let seen = decode(&[first, second].concat());
    assert_eq!(user_points(&seen), all_names(&[("i", 1), ("j", 1)], "m"));
}

#[tokio::test]
async fn a_burst_against_a_dead_backend_keeps_the_queue_bounded() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = settings();
    s.ship.max_queue_bytes = 64 * 1024;
    s.ship.max_queue_requests = 8;
    s.max_request_bytes = 16 * 1024;
    let mut rig = Rig::with(&config(&format!("http://127.0.0.1:{port}"), "end", 200), s);
    let mut events_in = 0u64;
    for i in 0..6 {
        // Incompressible-ish bodies so that requests split and the queue fills.
        let mut b = batch(&format!("burst{i}"), 50, 0);
        for j in 0..400u64 {
            let noise: String = (0..64)
                .map(|k| char::from(b'a' + ((j * 31 + k * 17 + i * 7) % 26) as u8))
                .collect();
            b.events.push(event(&format!("{i}-{j}-{noise}")));
        }
        events_in += b.events.len() as u64;
        rig.source.push(b);
        rig.after_invoke(Duration::from_secs(1)).await;
        assert!(rig.flush.queued() <= 8);
    }
    let t = rig.flush.totals().unwrap();
    assert!(t.events_dropped(DropReason::QueueFull) > 0, "{t:?}");
    rig.shutdown(Duration::from_secs(1)).await;
    let t = rig.flush.totals().unwrap();
    let (_, events) = t.total_dropped();
    assert_eq!(events, events_in, "every event is counted lost");
}

#[tokio::test]
async fn without_a_backend_everything_is_drained_and_counted_quietly() {
    let (c, _) = Config::from_lookup(|_| None);
    let mut rig = Rig::new(&c);
    rig.source.push(batch("n", 2, 3));
    rig.after_invoke(Duration::from_secs(1)).await;
    assert_eq!(*rig.source.drains.lock().unwrap(), 1);
    assert!(!rig.flush.in_flight());
    rig.shutdown(Duration::from_secs(1)).await;
    let t = rig.flush.totals().unwrap();
    assert_eq!(t.requests, 0);
    assert_eq!(t.points_dropped(DropReason::NoBackend), 3); // 2 series + loupe.flushes
    assert_eq!(t.events_dropped(DropReason::NoBackend), 3);
}

#[tokio::test]
async fn cumulative_points_keep_their_start_and_add_up() {
    let mut backend = Backend::start(ok()).await;
    let c = config_with(
        &backend.url(),
        "end",
        1_000,
        &[("LOUPE_TEMPORALITY", "cumulative")],
    );
    let mut rig = Rig::new(&c);
    rig.source.push(batch("k", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("k", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    let received = drain_received(&mut backend);
    let mut points = Vec::new();
    for r in &received {
        let req = ExportMetricsServiceRequest::decode(&gunzip(&r.body)[..]).expect("metrics");
        for m in &req.resource_metrics[0].scope_metrics[0].metrics {
            if let Some(metric::Data::ExponentialHistogram(eh)) = &m.data {
                if m.name == "k.m0" {
                    assert_eq!(eh.aggregation_temporality, 2);
                    let dp = &eh.data_points[0];
                    points.push((dp.start_time_unix_nano, dp.time_unix_nano, dp.count));
                }
            }
        }
    }
    assert_eq!(points.len(), 2, "{points:?}");
    assert_eq!(points[0].0, points[1].0, "a fixed start time");
    assert!(points[1].1 >= points[0].1);
    assert_eq!((points[0].2, points[1].2), (1, 2), "running totals");
}

#[tokio::test]
async fn ndjson_goes_to_the_metrics_url_with_the_same_content() {
    let mut backend = Backend::start(ok()).await;
    let c = config_with(&backend.url(), "end", 1_000, &[("LOUPE_PROTOCOL", "json")]);
    let mut rig = Rig::new(&c);
    rig.source.push(batch("j", 2, 2));
    rig.after_invoke(Duration::from_secs(2)).await;
    let received = drain_received(&mut backend);
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.path, "/v1/metrics");
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/x-ndjson")
    );
    let text = String::from_utf8(gunzip(&r.body)).expect("utf-8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["type"], "resource");
    assert_eq!(lines[0]["attributes"]["cloud.account.id"], "123456789012");
    let mut metrics: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "metric" && l["kind"] == "exponential_histogram")
        .filter_map(|l| l["name"].as_str())
        .collect();
    metrics.sort();
    assert_eq!(metrics, ["j.m0", "j.m1"]);
    let mut events: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "event")
        .filter_map(|l| l["body"].as_str())
        .collect();
    events.sort();
    assert_eq!(events, ["j.e0", "j.e1"]);
    assert_eq!(rig.flush.totals().unwrap().events_sent, 2);
}

#[tokio::test]
async fn an_api_key_that_cannot_be_fetched_means_drop_quietly() {
    let mut backend = Backend::start(ok()).await;
    let c = config_with(
        &backend.url(),
        "end",
        1_000,
        &[(
            "LOUPE_API_KEY_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-1:1:secret:k",
        )],
    );
    // No AWS credentials in this environment: the fetch fails at once.
    let s = Settings {
        env: std::sync::Arc::new(|_: &str| None),
        ..settings()
    };
    let mut rig = Rig::with(&c, s);
    rig.source.push(batch("s", 2, 1));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.source.push(batch("t", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.shutdown(Duration::from_secs(1)).await;
    assert_eq!(drain_received(&mut backend).len(), 0);
    let t = rig.flush.totals().unwrap();
    assert_eq!(t.requests, 0);
    assert_eq!(t.events_dropped(DropReason::ApiKey), 1);
    assert!(t.points_dropped(DropReason::ApiKey) >= 3);
}

#[tokio::test]
async fn an_open_breaker_stops_sending_and_keeps_returning_at_once() {
    let mut backend = Backend::start(Behaviour::Status(503, vec![], vec![])).await;
    let mut rig = Rig::new(&config(&backend.url(), "end", 500));
    rig.source.push(batch("b0", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    let tripped = rig.flush.totals().unwrap();
    assert_eq!(tripped.breaker_trips, 1, "{tripped:?}");
    let attempts = drain_received(&mut backend).len();
    assert_eq!(attempts, 3, "threshold of 3 failures");
    // Open: later flushes queue the newest data without a request.
    for i in 1..4 {
        rig.source.push(batch(&format!("b{i}"), 1, 1));
        rig.after_invoke(Duration::from_secs(2)).await;
    }
    assert_eq!(drain_received(&mut backend).len(), 0);
    // Each flush: one metrics request and one logs request (the first had no events).
    assert_eq!(rig.flush.queued(), 7);
    rig.shutdown(Duration::from_secs(1)).await;
    let t = rig.flush.totals().unwrap();
    assert_eq!(t.points_sent + t.events_sent, 0);
    assert_eq!(t.events_dropped(DropReason::Unsent), 3);
    assert!(t.points_dropped(DropReason::Unsent) >= 4);
}

// Nothing is sent here (the source is empty), so tokio's paused clock cannot race any I/O.
#[tokio::test(start_paused = true)]
async fn without_runtime_done_adaptive_stops_waiting_and_pipelines() {
    let mut rig = Rig::new(&config("http://127.0.0.1:9", "adaptive", 1_000));
    // Invocations two seconds apart are sparse, but runtimeDone never comes.
    for _ in 0..3 {
        assert!(rig.flush.sparse());
        rig.after_invoke(Duration::from_millis(50)).await;
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    assert!(!rig.flush.sparse());
    // Pipelined now: after_invoke no longer waits for runtimeDone.
    let t0 = Instant::now();
    rig.after_invoke(Duration::from_secs(10)).await;
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn intake_counters_ship_as_deltas() {
    let mut backend = Backend::start(ok()).await;
    let mut rig = Rig::new(&config(&backend.url(), "end", 1_000));
    rig.stats.malformed_event();
    rig.stats.malformed_event();
    rig.stats.lambda_dropped(5, 100);
    rig.source.push(batch("i", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    rig.stats.lambda_dropped(1, 10);
    rig.source.push(batch("j", 1, 0));
    rig.after_invoke(Duration::from_secs(2)).await;
    let seen = decode(&drain_received(&mut backend));
    assert_eq!(
        counter(&seen, "loupe.telemetry.skipped,reason=malformed_event"),
        2
    );
    assert_eq!(counter(&seen, "loupe.lambda.logs_dropped,unit=records"), 6);
    assert_eq!(counter(&seen, "loupe.lambda.logs_dropped,unit=bytes"), 110);
}

// No backend (drain and count at once), so tokio's paused clock cannot race any I/O.
#[tokio::test(start_paused = true)]
async fn the_timer_flushes_every_period_of_thawed_time() {
    let (c, _) = Config::from_lookup(|k| (k == "LOUPE_FLUSH").then(|| "periodic:5".to_string()));
    let mut rig = Rig::new(&c);
    let t0 = Instant::now();
    assert_eq!(rig.flush.next_timer(), Some(t0 + Duration::from_secs(5)));
    rig.source.push(batch("t0", 1, 0));
    // Not due yet: nothing happens.
    rig.on_timer().await;
    assert_eq!(*rig.source.drains.lock().unwrap(), 0);
    tokio::time::advance(Duration::from_secs(5)).await;
    rig.on_timer().await;
    assert_eq!(*rig.source.drains.lock().unwrap(), 1);
    let t1 = Instant::now();
    assert_eq!(rig.flush.next_timer(), Some(t1 + Duration::from_secs(5)));
    // Ticks before the next period do nothing.
    tokio::time::advance(Duration::from_secs(4)).await;
    rig.on_timer().await;
    assert_eq!(*rig.source.drains.lock().unwrap(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    rig.on_timer().await;
    assert_eq!(*rig.source.drains.lock().unwrap(), 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    rig.on_timer().await;
    assert_eq!(*rig.source.drains.lock().unwrap(), 3);
    let t = rig.flush.totals().unwrap();
    assert_eq!(
        t.points_dropped(DropReason::NoBackend),
        2,
        "t0.m0 and loupe.flushes"
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_and_end_flush_on_the_timer_every_backup_interval() {
    for strategy in ["adaptive", "end"] {
        let (c, _) = Config::from_lookup(|k| (k == "LOUPE_FLUSH").then(|| strategy.to_string()));
        let rig = Rig::new(&c);
        assert_eq!(
            rig.flush.next_timer(),
            Some(Instant::now() + loupe::flush::BACKUP_INTERVAL),
            "{strategy}"
        );
    }
}
