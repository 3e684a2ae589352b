//! The extension's run loop: register, bind the telemetry listener, subscribe, then serve
//! `/event/next` until SHUTDOWN.
//!
//! In: the [`Config`] and the Lambda APIs. Out: the process exit code, and one `summary {json}`
//! line at SHUTDOWN with the intake counters, the tracker's counters and the subscription outcome.
//!
//! Lambda waits for every extension to register before it starts the runtime, so registration
//! comes first and everything slow after it. The loop never calls `/next` again after SHUTDOWN,
//! and a panic in any spawned task is logged while the loop goes on. Flushing hooks in through
//! [`Flusher`]: after each INVOKE (with `LOUPE_FLUSH=end`, once that request's runtimeDone has
//! been applied or its wait reached the deadline), at SHUTDOWN, and on the flusher's timer while
//! the loop waits (for `/next`'s answer or for runtimeDone), each bounded by its deadline. The
//! timer runs in this task beside the wait: the `/next` request stays the same across ticks,
//! never cancelled and sent again.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, FlushStrategy};
use crate::invocation::{self, Tracker, TrackerHandle, TrackerStats};
use crate::lambda::client::{
    self, EventKind, ExtensionClient, InvokeEvent, NextEvent, Registration, ShutdownEvent,
    ShutdownReason,
};
use crate::lambda::listener::{self, Intake, log_queue};
use crate::lambda::stats::{Stats, StatsSnapshot};
use crate::lambda::subscribe::{self, Api, Subscription};
use crate::pipeline::{self, PipelineHandle};

/// Log lines queued towards the pipeline, at most.
pub const LOG_QUEUE_LINES: usize = 8_192;
/// Bytes of log records queued towards the pipeline, at most.
pub const LOG_QUEUE_BYTES: usize = 16 << 20;
/// Consecutive `/next` failures (transport errors, 5xx, undecodable answers) before loupe gives
/// up; a 4xx ends the loop at once.
const MAX_NEXT_FAILURES: u32 = 5;
/// Stop waiting for runtimeDone this long before the invocation's deadline, so the wait never
/// turns into a timeout of the function.
const INVOKE_MARGIN: Duration = Duration::from_millis(200);
/// Finish this long before the SHUTDOWN deadline (Lambda kills the process at the deadline).
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(100);
/// Timer calls are at least this far apart, whatever the flusher asks.
const MIN_TIMER_GAP: Duration = Duration::from_millis(100);
/// Used when an event carries no deadline.
const DEFAULT_INVOKE_WAIT: Duration = Duration::from_secs(1);
const DEFAULT_SHUTDOWN_BUDGET: Duration = Duration::from_millis(1_500);

/// What a [`Flusher`] may use: the tracker (to drain completed invocations for platform
/// metrics), the intake counters (for loupe's own metrics) and what register said about the
/// function (its account id, for the `cloud.account.id` resource attribute).
#[derive(Clone, Copy, Debug)]
pub struct FlushContext<'a> {
    pub tracker: &'a TrackerHandle,
    pub stats: &'a Stats,
    pub registration: &'a Registration,
}

/// The seam for flushing: called by the run loop at the points where data must leave.
pub trait Flusher {
    /// After each INVOKE event, before the next `/next`; must finish by `deadline` (the
    /// invocation's deadline less a margin). With `LOUPE_FLUSH=end` it is called once the
    /// request's runtimeDone was applied (or the wait reached the deadline); with the other
    /// strategies at once, so it decides itself whether to wait.
    fn after_invoke(
        &mut self,
        ctx: FlushContext<'_>,
        invoke: &InvokeEvent,
        deadline: Instant,
    ) -> impl Future<Output = ()>;
    /// At SHUTDOWN, the final drain point, once the last reports arrived (or half the time
    /// left passed); must finish by `deadline`.
    fn at_shutdown(&mut self, ctx: FlushContext<'_>, deadline: Instant)
    -> impl Future<Output = ()>;
    /// When the run loop should call [`Flusher::on_timer`] next, while it waits; `None`: never.
    fn next_timer(&self) -> Option<Instant> {
        None
    }
    /// A timer tick while the sandbox is thawed and the run loop waits (for `/next`'s answer, or
    /// for runtimeDone); must finish by `deadline`, and should not wait for the backend.
    fn on_timer(&mut self, ctx: FlushContext<'_>, deadline: Instant) -> impl Future<Output = ()> {
        let _ = (ctx, deadline);
        async {}
    }
}

/// Awaits `work`, calling the flusher's timer whenever it comes due meanwhile. `work` is polled
/// first, and on while a tick runs: it is never cancelled, and an answer that arrives during a
/// tick is returned once the tick is over. Each tick is bounded by `budget` and `limit`.
pub async fn with_timer<F: Flusher, T>(
    flusher: &mut F,
    ctx: FlushContext<'_>,
    work: impl Future<Output = T>,
    budget: Duration,
    limit: Instant,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut earliest = Instant::now();
    loop {
        let Some(at) = flusher.next_timer() else {
            return work.await;
        };
        let at = at.max(earliest);
        tokio::select! {
            biased;
            out = &mut work => return out,
            () = tokio::time::sleep_until(at) => {}
        }
        let now = Instant::now();
        earliest = now + MIN_TIMER_GAP;
        let deadline = (now + budget).min(limit);
        let mut tick = std::pin::pin!(bounded(deadline, flusher.on_timer(ctx, deadline)));
        let mut done = None;
        loop {
            tokio::select! {
                biased;
                out = &mut work, if done.is_none() => done = Some(out),
                () = &mut tick => break,
            }
        }
        if let Some(out) = done {
            return out;
        }
    }
}

/// Flushes nothing: there is nothing to send yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFlush;

impl Flusher for NoFlush {
    async fn after_invoke(&mut self, _: FlushContext<'_>, _: &InvokeEvent, _: Instant) {}
    async fn at_shutdown(&mut self, _: FlushContext<'_>, _: Instant) {}
}

/// Runs the extension until SHUTDOWN.
pub async fn run(config: Config) -> ExitCode {
    let flush_config = config.clone();
    run_with_pipeline(config, move |pipeline| {
        crate::flush::Flush::new(&flush_config, pipeline)
    })
    .await
}

/// Runs the extension with the given flusher.
pub async fn run_with(config: Config, flusher: impl Flusher) -> ExitCode {
    run_with_pipeline(config, |_| flusher).await
}

/// Runs the extension with a flusher built around the log pipeline's handle (its
/// [`crate::batch::Source`]).
pub async fn run_with_pipeline<F: Flusher>(
    config: Config,
    make_flusher: impl FnOnce(PipelineHandle) -> F,
) -> ExitCode {
    let stats = Arc::new(Stats::default());
    let (logs, log_rx) = log_queue(LOG_QUEUE_LINES, LOG_QUEUE_BYTES);
    // The task lives as long as a handle does: `pipeline` keeps it until this function returns.
    let (pipeline, pipeline_task) = pipeline::spawn(&config, log_rx, stats.clone());
    let mut flusher = make_flusher(pipeline.clone());
    let Some(base) = config.lambda.runtime_api.clone() else {
        log::error!("AWS_LAMBDA_RUNTIME_API is not set: loupe runs as a Lambda extension only");
        return ExitCode::FAILURE;
    };
    let name = extension_name();
    let managed = config.lambda.is_managed_instances();
    // Managed Instances refuse INVOKE for external extensions.
    let events: &[EventKind] = if managed {
        &[EventKind::Shutdown]
    } else {
        &[EventKind::Invoke, EventKind::Shutdown]
    };
    let (client, registration) = match client::register(&base, &name, events).await {
        Ok(r) => r,
        Err(e) => {
            log::error!("registering as extension {name:?} failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "registered as {name:?} for {events:?} (function {:?})",
        registration.function_name.as_deref().unwrap_or("?")
    );

    let (tracker, tracker_task) = invocation::spawn(Tracker::default());
    supervise("invocation tracker", tracker_task);
    supervise("log pipeline", pipeline_task);

    let bound = bind_listener(config.listener_port)
        .await
        .and_then(|socket| Ok((socket.local_addr()?.port(), socket)));
    let subscription = match bound {
        Ok((port, socket)) => {
            let intake = Arc::new(Intake::new(stats.clone(), Box::new(tracker.clone()), logs));
            supervise("telemetry listener", listener::spawn(socket, intake));
            log::debug!("telemetry listener on port {port}");
            subscribe::subscribe(&client, port, managed, config.extension_logs).await
        }
        Err(e) => {
            log::warn!("the telemetry listener could not bind ({e}): loupe processes nothing");
            Subscription {
                api: Api::None,
                schema: None,
                attempts: vec![format!("listener: {e}")],
            }
        }
    };

    let mut state = LoopState {
        config: &config,
        client: &client,
        tracker: &tracker,
        stats: &stats,
        registration: &registration,
        subscription: &subscription,
        invokes: 0,
        next_errors: 0,
    };
    state.serve(&mut flusher).await
}

struct LoopState<'a> {
    config: &'a Config,
    client: &'a ExtensionClient,
    tracker: &'a TrackerHandle,
    stats: &'a Stats,
    registration: &'a Registration,
    subscription: &'a Subscription,
    invokes: u64,
    next_errors: u64,
}

impl LoopState<'_> {
    async fn serve(&mut self, flusher: &mut impl Flusher) -> ExitCode {
        let (code, reason, deadline) = self.events(flusher).await;
        // One place for the summary, whatever ended the loop.
        self.summary(reason.as_ref().map(ShutdownReason::as_str), deadline)
            .await;
        code
    }

    /// Serves events until SHUTDOWN or until Lambda stops answering: the exit code, the
    /// shutdown reason if any, and the deadline for the summary.
    async fn events(
        &mut self,
        flusher: &mut impl Flusher,
    ) -> (ExitCode, Option<ShutdownReason>, Instant) {
        let mut failures = 0u32;
        // No invocation bounds the timer's flushes while loupe waits for its next event.
        let no_limit = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let client = self.client;
            let next = client.next_event();
            let timeout = self.config.flush_timeout;
            let waited = with_timer(flusher, self.context(), next, timeout, no_limit).await;
            let event = match waited {
                Ok(event) => {
                    failures = 0;
                    event
                }
                Err(e) if e.is_refusal() => {
                    // Lambda will not send events any more (typically the environment is being
                    // torn down after a failed init): nothing to retry, nothing to report.
                    self.next_errors += 1;
                    log::warn!("Lambda refuses event/next ({e}); loupe exits");
                    let deadline = Instant::now() + DEFAULT_SHUTDOWN_BUDGET;
                    return (ExitCode::SUCCESS, None, deadline);
                }
                Err(e) => {
                    failures += 1;
                    self.next_errors += 1;
                    if failures >= MAX_NEXT_FAILURES {
                        log::error!(
                            "event/next failed {failures} times in a row, last: {e}; loupe exits"
                        );
                        let message = format!("event/next failed {failures} times: {e}");
                        if let Err(e) = self
                            .client
                            .exit_error("Extension.EventNextFailed", &message)
                            .await
                        {
                            log::debug!("exit/error not delivered: {e}");
                        }
                        let deadline = Instant::now() + DEFAULT_SHUTDOWN_BUDGET;
                        return (ExitCode::FAILURE, None, deadline);
                    }
                    log::warn!("event/next failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(50 << failures)).await;
                    continue;
                }
            };
            match event {
                NextEvent::Invoke(invoke) => self.on_invoke(invoke, flusher).await,
                NextEvent::Shutdown(shutdown) => {
                    let deadline = self.on_shutdown(&shutdown, flusher).await;
                    return (ExitCode::SUCCESS, Some(shutdown.shutdown_reason), deadline);
                }
                NextEvent::Other(kind) => log::warn!("event {kind:?} is not known; skipped"),
            }
        }
    }

    async fn on_invoke(&mut self, invoke: InvokeEvent, flusher: &mut impl Flusher) {
        self.invokes += 1;
        log::debug!("invoke {}", invoke.request_id);
        let deadline = deadline_instant(invoke.deadline_ms, DEFAULT_INVOKE_WAIT, INVOKE_MARGIN);
        // Without a subscription no runtimeDone can come: waiting would only cost the user.
        if self.config.flush == FlushStrategy::End && self.subscription.api != Api::None {
            let wait = self.tracker.wait_runtime_done(&invoke.request_id, deadline);
            let timeout = self.config.flush_timeout;
            match with_timer(flusher, self.context(), wait, timeout, deadline).await {
                Some(done) => {
                    log::debug!("runtimeDone {} {} applied", invoke.request_id, done.status)
                }
                None => log::debug!(
                    "no runtimeDone for {} before its deadline",
                    invoke.request_id
                ),
            }
        }
        let ctx = self.context();
        bounded(deadline, flusher.after_invoke(ctx, &invoke, deadline)).await;
    }

    /// The final flush; returns the shutdown's deadline.
    async fn on_shutdown(
        &mut self,
        shutdown: &ShutdownEvent,
        flusher: &mut impl Flusher,
    ) -> Instant {
        let deadline = deadline_instant(
            shutdown.deadline_ms,
            DEFAULT_SHUTDOWN_BUDGET,
            SHUTDOWN_MARGIN,
        );
        log::debug!("shutdown ({})", shutdown.shutdown_reason);
        // The last invocation's report is emitted when loupe called /next and arrives during
        // this window: wait for it, with half the time left, so the final flush sees it.
        let now = Instant::now();
        let settle = now + deadline.saturating_duration_since(now) / 2;
        if !self.tracker.wait_reports(settle).await {
            log::debug!("shutdown: still waiting for a report; going on without it");
        }
        let ctx = self.context();
        bounded(deadline, flusher.at_shutdown(ctx, deadline)).await;
        deadline
    }

    fn context(&self) -> FlushContext<'_> {
        FlushContext {
            tracker: self.tracker,
            stats: self.stats,
            registration: self.registration,
        }
    }

    async fn summary(&self, shutdown_reason: Option<&str>, deadline: Instant) {
        let tracker = self.tracker.finish(deadline).await;
        let summary = Summary {
            api: self.subscription.api,
            schema: self.subscription.schema,
            attempts: &self.subscription.attempts,
            shutdown_reason,
            invokes: self.invokes,
            next_errors: self.next_errors,
            tracker,
            telemetry: self.stats.snapshot(),
        };
        match serde_json::to_string(&summary) {
            Ok(json) => log::info!("summary {json}"),
            Err(e) => log::info!("summary not encodable: {e}"),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    api: Api,
    schema: Option<&'static str>,
    attempts: &'a [String],
    shutdown_reason: Option<&'a str>,
    invokes: u64,
    next_errors: u64,
    tracker: Option<TrackerStats>,
    telemetry: StatsSnapshot,
}

/// The configured port, or a free one if it is taken.
async fn bind_listener(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    match listener::bind(port).await {
        Ok(socket) => Ok(socket),
        Err(e) if port != 0 => {
            log::warn!("telemetry listener port {port} is not free ({e}); using a free port");
            listener::bind(0).await
        }
        Err(e) => Err(e),
    }
}

/// The executable's file name, which Lambda requires as the extension name.
fn extension_name() -> String {
    let from_arg0 = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    from_arg0
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "loupe".to_string())
}

/// An epoch-ms deadline as an `Instant`, `margin` earlier; `default` from now when absent.
fn deadline_instant(deadline_ms: Option<u64>, default: Duration, margin: Duration) -> Instant {
    let now = Instant::now();
    let Some(deadline_ms) = deadline_ms else {
        return now + default;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    now + left.saturating_sub(margin)
}

async fn bounded(deadline: Instant, work: impl Future<Output = ()>) {
    if tokio::time::timeout_at(deadline, work).await.is_err() {
        log::warn!("flush cut short at its deadline");
    }
}

/// Logs how a spawned task ended if it was not expected to: a panic is caught at the task's edge
/// and the extension goes on.
fn supervise(name: &'static str, task: JoinHandle<()>) {
    tokio::spawn(async move {
        match task.await {
            Ok(()) => log::debug!("{name} task ended"),
            Err(e) => log::error!("{name} task failed: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks every `every` after the last tick, recording when; each tick takes `takes`.
    struct Ticking {
        every: Duration,
        takes: Duration,
        next: Instant,
        ticks: Vec<Instant>,
    }

    impl Flusher for Ticking {
        async fn after_invoke(&mut self, _: FlushContext<'_>, _: &InvokeEvent, _: Instant) {}
        async fn at_shutdown(&mut self, _: FlushContext<'_>, _: Instant) {}
        fn next_timer(&self) -> Option<Instant> {
            Some(self.next)
        }
        async fn on_timer(&mut self, _: FlushContext<'_>, deadline: Instant) {
            let now = Instant::now();
            assert!(deadline > now);
            self.ticks.push(now);
            self.next = now + self.every;
            tokio::time::sleep(self.takes).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_ticks_beside_a_wait_that_is_kept_across_ticks() {
        let (tracker, _task) = invocation::spawn(Tracker::default());
        let stats = Stats::default();
        let registration = Registration::default();
        let ctx = FlushContext {
            tracker: &tracker,
            stats: &stats,
            registration: &registration,
        };
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut f = Ticking {
            every,
            takes: Duration::ZERO,
            next: t0 + every,
            ticks: Vec::new(),
        };
        // The wait: answered after 12 s, while the timer ticks twice beside it.
        let work = async {
            tokio::time::sleep(Duration::from_secs(12)).await;
            "event"
        };
        let limit = t0 + Duration::from_secs(60);
        let out = with_timer(&mut f, ctx, work, Duration::from_secs(1), limit).await;
        assert_eq!(out, "event");
        assert_eq!(f.ticks, vec![t0 + every, t0 + every * 2]);
        assert_eq!(Instant::now(), t0 + Duration::from_secs(12));
        // An answer that comes during a tick: the wait goes on during the tick (it completes at
        // 6 s, not when the tick ends at 8 s) and is returned once the tick is over.
        let t1 = Instant::now();
        let mut slow = Ticking {
            every,
            takes: Duration::from_secs(3),
            next: t1 + every,
            ticks: Vec::new(),
        };
        let work = async {
            tokio::time::sleep(Duration::from_secs(6)).await;
            Instant::now()
        };
        let limit = t1 + Duration::from_secs(60);
        let answered = with_timer(&mut slow, ctx, work, Duration::from_secs(10), limit).await;
        assert_eq!(answered, t1 + Duration::from_secs(6));
        assert_eq!(slow.ticks, vec![t1 + every]);
        assert_eq!(Instant::now(), t1 + Duration::from_secs(8));
        // A flusher without a timer just waits.
        let mut quiet = NoFlush;
        let out = with_timer(&mut quiet, ctx, async { 7 }, Duration::from_secs(1), limit).await;
        assert_eq!(out, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_from_epoch_ms() {
        let now = Instant::now();
        let epoch_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = deadline_instant(
            Some(epoch_now + 10_000),
            Duration::ZERO,
            Duration::from_millis(200),
        );
        let left = d - now;
        // The wall clock moved on a little between the two readings above.
        assert!(left <= Duration::from_millis(9_800), "{left:?}");
        assert!(left >= Duration::from_millis(9_000), "{left:?}");
        // A deadline in the past gives now.
        assert_eq!(
            deadline_instant(Some(1), Duration::ZERO, Duration::ZERO),
            now
        );
        assert_eq!(
            deadline_instant(None, Duration::from_secs(1), Duration::ZERO),
            now + Duration::from_secs(1)
        );
    }
}
