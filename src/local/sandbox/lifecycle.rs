//! The lifecycle itself: starting processes, init, one invocation, freeze and thaw, and the
//! shutdown that ends an environment (spindown, or the reset after a timeout or a crash).
//!
//! In: the sandbox's state and options. Out: events to the runtime and extensions, records to
//! the subscribers, signals to the process groups, and rows in the report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    Env, ExtProc, FREEZE_DRAIN, INIT_BUDGET, Invocation, MANAGED_INIT_BUDGET, MAX_EXTENSIONS,
    Owner, PRE_SHUTDOWN_FLUSH, RUNTIME_ONLY, RUNTIME_SHUTDOWN_SHARE, RuntimeProc, SHUTDOWN_WINDOW,
    STOP_CHECK, Sandbox, seconds_ms,
};
use crate::local::api::Reply;
use crate::local::process;
use crate::local::records::{Kind, ReportMetrics, Span, Status};
use crate::local::report::{
    CounterEntry, ExtensionEntry, InitEntry, InvocationEntry, response_value,
};
use crate::local::util;

impl Sandbox {
    // ----- processes -----

    pub(super) fn launch_runtime(&mut self) -> Result<(), String> {
        let id = self.key();
        let env = self.runtime_env();
        let pid = process::spawn(
            id,
            &self.opts.runtime_command,
            &env,
            &[],
            &self.opts.task_root,
            self.procs_tx.clone(),
        )
        .map_err(|e| {
            say!(
                "loupe-local: cannot start the runtime {:?}: {e}",
                self.opts.runtime_command
            );
            "Runtime.InvalidEntrypoint".to_string()
        })?;
        self.owners.insert(id, Owner::Runtime);
        self.env.runtime = Some(RuntimeProc {
            id,
            pid,
            pending: None,
            queued: None,
            exited: None,
            init_error: None,
            last_rss_kib: 0,
        });
        Ok(())
    }

    pub(super) fn launch_extensions(&mut self) -> Result<(), String> {
        let Some(dir) = self.opts.extensions_dir.clone() else {
            return Ok(());
        };
        let paths = process::list_extensions(&dir).map_err(|e| {
            say!("loupe-local: cannot list {}: {e}", dir.display());
            "Extension.LaunchError".to_string()
        })?;
        if paths.len() > MAX_EXTENSIONS {
            say!(
                "loupe-local: {} extensions, Lambda allows {MAX_EXTENSIONS}",
                paths.len()
            );
            return Err("Extension.TooManyExtensions".into());
        }
        let mut env = self.common_env();
        env.extend(self.opts.env.iter().cloned());
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = self.key();
            let instance = {
                let n = self.launches.entry(name.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let report_idx = self.report.extensions.len();
            self.report
                .extensions
                .push(ExtensionEntry::new(name.clone(), instance));
            let argv = vec![path.to_string_lossy().into_owned()];
            let pid = process::spawn(id, &argv, &env, &RUNTIME_ONLY, &cwd, self.procs_tx.clone())
                .map_err(|e| {
                say!(
                    "loupe-local: cannot start extension {}: {e}",
                    path.display()
                );
                "Extension.LaunchError".to_string()
            })?;
            self.owners.insert(
                id,
                Owner::Extension {
                    name: name.clone(),
                    report_idx,
                },
            );
            self.env.extensions.push(ExtProc {
                id,
                pid,
                name,
                ext_id: None,
                events: Vec::new(),
                pending: None,
                queued: None,
                ready: false,
                exited: None,
                error: None,
                busy: false,
                done_at: None,
                shutdown_sent_at: None,
                report_idx,
                last_rss_kib: 0,
            });
        }
        Ok(())
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .env
            .extensions
            .iter()
            .filter(|e| e.exited.is_none())
            .map(|e| e.pid)
            .collect();
        if let Some(r) = self.env.runtime.as_ref().filter(|r| r.exited.is_none()) {
            v.push(r.pid);
        }
        v
    }

    /// Peak memory of the runtime's and extensions' process groups, in MB (rounded up). A group
    /// keeps the highest sum seen, so a process that has exited still counts.
    pub(super) fn sample_memory(&mut self) -> u64 {
        let mut pgids: Vec<u32> = self.env.extensions.iter().map(|e| e.pid).collect();
        if let Some(r) = &self.env.runtime {
            pgids.push(r.pid);
        }
        let seen = process::group_peak_rss_kib(&pgids);
        let of = |pid: u32| seen.iter().find(|(g, _)| *g == pid).map_or(0, |(_, k)| *k);
        if let Some(r) = &mut self.env.runtime {
            r.last_rss_kib = r.last_rss_kib.max(of(r.pid));
        }
        for e in &mut self.env.extensions {
            e.last_rss_kib = e.last_rss_kib.max(of(e.pid));
        }
        let total: u64 = self.env.runtime.as_ref().map_or(0, |r| r.last_rss_kib)
            + self
                .env
                .extensions
                .iter()
                .map(|e| e.last_rss_kib)
                .sum::<u64>();
        total.div_ceil(1024)
    }

    pub(super) async fn freeze(&mut self) {
        if !self.opts.freeze || self.managed() {
            return;
        }
        self.env.frozen = true;
        let drain = Some(Instant::now() + FREEZE_DRAIN);
        self.wait_until(drain, |s| {
            s.env.subscribers.iter().all(|(_, x)| !x.in_flight)
        })
        .await;
        let pids = self.pids();
        for pid in &pids {
            process::signal_group(*pid, libc::SIGSTOP);
        }
        // A stop takes effect when the target next runs; wait (bounded) until every process shows
        // it, so the freeze is real before the next step, and count the freezes that were seen.
        let limit = Instant::now() + STOP_CHECK;
        loop {
            let stopped = pids.iter().all(|p| process::is_stopped(*p).unwrap_or(true));
            if stopped {
                self.report.freezes += 1;
                break;
            }
            if Instant::now() >= limit {
                say!("loupe-local: processes did not show as stopped within {STOP_CHECK:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(super) fn thaw(&mut self) {
        if self.env.frozen {
            for pid in self.pids() {
                process::signal_group(pid, libc::SIGCONT);
            }
            self.env.frozen = false;
        }
    }

    // ----- lifecycle -----

    /// One init phase. `Err` carries the error type; the environment is reset then.
    pub(super) async fn init(&mut self, phase: &'static str) -> Result<(), String> {
        self.env = Env {
            init_open: true,
            ..Env::default()
        };
        let t0 = Instant::now();
        // Lambda bounds an init retried at invoke by the function timeout as well; loupe-local
        // keeps 10 s there so a short test timeout does not starve a slow runtime start.
        let budget = match self.opts.init_timeout {
            Some(t) => t,
            None if self.managed() => MANAGED_INIT_BUDGET,
            None => INIT_BUDGET.max(self.opts.timeout),
        };
        let deadline = Some(t0 + budget);
        let info = self.init_info(phase);
        self.emit(Kind::InitStart {
            init: info.clone(),
            function_name: self.opts.function_name.clone(),
            function_version: "$LATEST".into(),
            instance_id: self.instance_id.clone(),
            instance_max_memory: self.opts.memory_mb,
        });
        let result = self.init_steps(deadline, phase).await;
        let (status, error_type) = match &result {
            Ok(()) => (Status::Success, None),
            Err((s, t)) => (*s, Some(t.clone())),
        };
        let duration_ms = seconds_ms(t0.elapsed());
        self.emit(Kind::InitReport {
            init: info,
            status,
            error_type: error_type.clone(),
            duration_ms,
        });
        self.env.init_open = false;
        self.env.replay = Vec::new();
        self.report.inits.push(InitEntry {
            phase,
            status: status.as_str(),
            error_type: error_type.clone(),
            duration_ms,
        });
        match result {
            Ok(()) => {
                self.env.init_duration_ms = Some(duration_ms);
                self.sample_memory();
                self.freeze().await;
                Ok(())
            }
            Err((_, t)) => {
                say!("loupe-local: init failed: {t}");
                self.shutdown("failure").await;
                Err(t)
            }
        }
    }

    pub(super) async fn init_steps(
        &mut self,
        deadline: Option<Instant>,
        phase: &'static str,
    ) -> Result<(), (Status, String)> {
        let fail = |t: &str| (Status::Failure, t.to_string());
        self.launch_extensions().map_err(|t| fail(&t))?;
        // Every extension registers before the runtime starts.
        let registered = self
            .wait_until(deadline, |s| {
                s.env
                    .extensions
                    .iter()
                    .all(|e| e.ext_id.is_some() || e.gone())
            })
            .await;
        if !registered {
            return Err((Status::Timeout, "Sandbox.Timeout".into()));
        }
        self.check_extensions()?;
        self.launch_runtime().map_err(|t| fail(&t))?;
        let runtime_up = self
            .wait_until(deadline, |s| {
                s.env.runtime.as_ref().is_none_or(|r| {
                    r.pending.is_some() || r.init_error.is_some() || r.exited.is_some()
                }) || s.env.extensions.iter().any(|e| e.gone())
            })
            .await;
        let info = self.init_info(phase);
        let runtime_result = match &self.env.runtime {
            _ if !runtime_up => Err((Status::Timeout, "Sandbox.Timeout".to_string())),
            Some(r) if r.init_error.is_some() => {
                Err((Status::Error, r.init_error.clone().unwrap_or_default()))
            }
            Some(r) if r.exited.is_some() => Err(fail("Runtime.ExitError")),
            _ => Ok(()),
        };
        let (status, error_type) = match &runtime_result {
            Ok(()) => (Status::Success, None),
            Err((s, t)) => (*s, Some(t.clone())),
        };
        self.emit(Kind::InitRuntimeDone {
            init: info,
            status,
            error_type,
        });
        runtime_result?;
        self.check_extensions()?;
        // Init ends when every registered extension has called /next.
        let ready = self
            .wait_until(deadline, |s| {
                s.env.extensions.iter().all(|e| e.ready || e.gone())
                    || s.env.runtime.as_ref().is_none_or(|r| r.exited.is_some())
            })
            .await;
        if !ready {
            return Err((Status::Timeout, "Sandbox.Timeout".into()));
        }
        if self.env.runtime.as_ref().is_none_or(|r| r.exited.is_some()) {
            return Err(fail("Runtime.ExitError"));
        }
        self.check_extensions()
    }

    pub(super) fn check_extensions(&self) -> Result<(), (Status, String)> {
        for e in &self.env.extensions {
            if let Some(t) = &e.error {
                return Err((Status::Error, t.clone()));
            }
            if e.exited.is_some() {
                return Err((Status::Failure, "Extension.Crash".into()));
            }
        }
        Ok(())
    }

    pub(super) async fn invoke(&mut self, payload: String) {
        self.thaw();
        let start = Instant::now();
        let start_ms = util::epoch_ms();
        let deadline = start + self.opts.timeout;
        let deadline_ms = start_ms + self.opts.timeout.as_millis() as u64;
        let request_id = util::uuid_v4();
        let trace = util::trace_header(start_ms);
        self.env.invocation = Some(Invocation {
            request_id: request_id.clone(),
            start,
            start_ms,
            trace: trace.clone(),
            delivered: false,
            response: None,
            response_at: None,
            error_type: None,
            runtime_done_at: None,
            log_lines: 0,
        });
        self.emit(Kind::Start {
            request_id: request_id.clone(),
            version: "$LATEST".into(),
            trace: trace.clone(),
        });
        // The runtime's next gets the event...
        let event = Reply {
            status: 200,
            headers: vec![
                ("content-type", "application/json".into()),
                ("lambda-runtime-aws-request-id", request_id.clone()),
                ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
                ("lambda-runtime-invoked-function-arn", self.function_arn()),
                ("lambda-runtime-trace-id", trace.clone()),
            ],
            body: Bytes::from(payload),
        };
        if let Some(r) = &mut self.env.runtime {
            match r.pending.take() {
                Some(tx) => {
                    let _ = tx.send(event);
                }
                None => r.queued = Some(event),
            }
        }
        if let Some(inv) = &mut self.env.invocation {
            inv.delivered = true;
        }
        // ... and, at the same time, every extension registered for INVOKE.
        let invoke = json!({
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": self.function_arn(),
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
        });
        for i in 0..self.env.extensions.len() {
            if self.env.extensions[i].wants("INVOKE") && !self.env.extensions[i].gone() {
                self.send_event(i, "INVOKE", &invoke);
                let e = &mut self.env.extensions[i];
                e.busy = true;
                e.done_at = None;
            }
        }

        let runtime_done = self
            .wait_until(Some(deadline), |s| {
                s.env
                    .invocation
                    .as_ref()
                    .is_some_and(|i| i.runtime_done_at.is_some())
                    || s.env.runtime.as_ref().is_none_or(|r| r.exited.is_some())
            })
            .await;
        let crashed = self.env.runtime.as_ref().is_none_or(|r| r.exited.is_some())
            && self
                .env
                .invocation
                .as_ref()
                .is_some_and(|i| i.runtime_done_at.is_none());
        let mut outcome = if crashed {
            Some((Status::Failure, "Runtime.ExitError".to_string()))
        } else if !runtime_done {
            Some((Status::Timeout, "Sandbox.Timeout".to_string()))
        } else {
            None
        };
        let Some(inv) = self.env.invocation.take() else {
            return;
        };
        let runtime_end = inv.runtime_done_at.unwrap_or_else(Instant::now);
        let (status, error_type) = match (&outcome, &inv.error_type) {
            (Some((s, t)), _) => (*s, Some(t.clone())),
            (None, Some(t)) => (Status::Error, Some(t.clone())),
            (None, None) => (Status::Success, None),
        };
        if !self.managed() {
            let mut spans = Vec::new();
            if let Some(resp_at) = inv.response_at {
                spans.push(Span {
                    name: "responseLatency",
                    start_ms: inv.start_ms,
                    duration_ms: seconds_ms(resp_at - inv.start),
                });
                spans.push(Span {
                    name: "responseDuration",
                    start_ms: inv.start_ms + (resp_at - inv.start).as_millis() as u64,
                    duration_ms: 0.0,
                });
                spans.push(Span {
                    name: "runtimeOverhead",
                    start_ms: inv.start_ms + (resp_at - inv.start).as_millis() as u64,
                    duration_ms: seconds_ms(runtime_end.saturating_duration_since(resp_at)),
                });
            }
            self.emit(Kind::RuntimeDone {
                request_id: inv.request_id.clone(),
                status,
                error_type: error_type.clone(),
                duration_ms: seconds_ms(runtime_end - inv.start),
                produced_bytes: inv.response.as_ref().map(|b| b.len() as u64),
                spans,
                trace: inv.trace.clone(),
            });
        }
        // The extensions finish their part of the invocation.
        if outcome.is_none() {
            let all_done = self
                .wait_until(Some(deadline), |s| {
                    s.env.extensions.iter().all(|e| !e.busy || e.gone())
                })
                .await;
            if !all_done {
                outcome = Some((Status::Timeout, "Sandbox.Timeout".into()));
            } else if self.env.extensions.iter().any(|e| e.gone()) {
                outcome = Some((Status::Failure, "Extension.Crash".into()));
            }
        }
        // After the waits, so the /proc scan never delays a timestamp.
        let memory = self.sample_memory();
        let end = match &outcome {
            Some(_) => Instant::now(),
            None => self
                .env
                .extensions
                .iter()
                .filter_map(|e| e.done_at)
                .max()
                .map_or(runtime_end, |t| t.max(runtime_end)),
        };
        let (status, error_type) = match &outcome {
            Some((s, t)) => (*s, Some(t.clone())),
            None => (status, error_type),
        };
        let overhead_ms = seconds_ms(end.saturating_duration_since(runtime_end));
        let duration_ms = seconds_ms(end - inv.start);
        let mut report_spans = Vec::new();
        if self.managed() {
            if let Some(resp_at) = inv.response_at {
                report_spans.push(Span {
                    name: "responseLatency",
                    start_ms: inv.start_ms,
                    duration_ms: seconds_ms(resp_at - inv.start),
                });
                report_spans.push(Span {
                    name: "responseDuration",
                    start_ms: inv.start_ms + (resp_at - inv.start).as_millis() as u64,
                    duration_ms: 0.0,
                });
            }
        } else {
            report_spans.push(Span {
                name: "extensionOverhead",
                start_ms: inv.start_ms + (runtime_end - inv.start).as_millis() as u64,
                duration_ms: overhead_ms,
            });
        }
        let init_duration_ms = self.env.init_duration_ms.take();
        self.emit(Kind::Report {
            request_id: inv.request_id.clone(),
            status,
            error_type: error_type.clone(),
            metrics: ReportMetrics {
                duration_ms,
                billed_duration_ms: duration_ms.ceil() as u64,
                memory_size_mb: self.opts.memory_mb,
                max_memory_used_mb: memory,
                init_duration_ms,
            },
            duration_only: self.managed(),
            spans: report_spans,
            trace: inv.trace.clone(),
        });
        self.report.invocations.push(InvocationEntry {
            request_id: inv.request_id.clone(),
            status: status.as_str(),
            error_type,
            duration_ms,
            extension_overhead_ms: overhead_ms,
            max_memory_used_mb: memory,
            log_lines: inv.log_lines,
            response: response_value(inv.response.as_deref()),
        });
        match outcome {
            None => self.freeze().await,
            // A timeout or a crash resets the whole environment, extensions included; the next
            // invocation starts with a fresh init (phase "invoke").
            Some((Status::Timeout, _)) => self.shutdown("timeout").await,
            Some(_) => self.shutdown("failure").await,
        }
    }

    /// Answers the extension's pending /next with `event`, or keeps it for its next call.
    pub(super) fn send_event(&mut self, i: usize, name: &str, event: &Value) {
        let reply = Reply::json(200, event);
        let e = &mut self.env.extensions[i];
        if let Some(r) = self.report.extensions.get_mut(e.report_idx) {
            r.events.push(name.to_string());
        }
        match e.pending.take() {
            Some(tx) => {
                if name == "SHUTDOWN" {
                    e.shutdown_sent_at = Some(Instant::now());
                }
                let _ = tx.send(reply);
            }
            None => e.queued = Some((name == "SHUTDOWN", reply)),
        }
    }

    /// Ends the environment: SIGTERM to the runtime, final telemetry, SHUTDOWN to the extensions
    /// registered for it, SIGKILL at the deadline.
    pub(super) async fn shutdown(&mut self, reason: &str) {
        self.thaw();
        let t0 = Instant::now();
        let deadline = t0 + SHUTDOWN_WINDOW;
        let deadline_ms = util::epoch_ms() + SHUTDOWN_WINDOW.as_millis() as u64;
        self.env.shutting_down = Some((reason.to_string(), deadline_ms));
        let no_extensions = self.env.extensions.iter().all(|e| e.gone());
        if let Some(r) = self.env.runtime.as_ref().filter(|r| r.exited.is_none()) {
            let pid = r.pid;
            if no_extensions {
                process::signal_group(pid, libc::SIGKILL);
            } else {
                process::signal_group(pid, libc::SIGTERM);
                let share = Some(t0 + RUNTIME_SHUTDOWN_SHARE);
                let exited = self
                    .wait_until(share, |s| {
                        s.env.runtime.as_ref().is_none_or(|r| r.exited.is_some())
                    })
                    .await;
                if !exited {
                    process::signal_group(pid, libc::SIGKILL);
                }
            }
        }
        // Deliver what is buffered (the last report among it) before SHUTDOWN; bounded, so an
        // extension that keeps logging or a failing subscriber cannot eat the whole window.
        self.env.force_flush = true;
        let flushed = (Instant::now() + PRE_SHUTDOWN_FLUSH).min(deadline);
        self.wait_until(Some(flushed), |s| s.delivered_all()).await;
        let event =
            json!({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms});
        for i in 0..self.env.extensions.len() {
            let e = &self.env.extensions[i];
            if e.exited.is_some() {
                continue;
            }
            if e.error.is_some() {
                // It reported an error and is exiting by itself; killed at the deadline if not.
                let e = &mut self.env.extensions[i];
                e.shutdown_sent_at.get_or_insert_with(Instant::now);
            } else if e.wants("SHUTDOWN") {
                self.send_event(i, "SHUTDOWN", &event);
                let e = &mut self.env.extensions[i];
                e.shutdown_sent_at.get_or_insert_with(Instant::now);
            } else {
                process::signal_group(e.pid, libc::SIGKILL);
                let e = &mut self.env.extensions[i];
                e.shutdown_sent_at.get_or_insert_with(Instant::now);
            }
        }
        self.wait_until(Some(deadline), |s| {
            s.env.extensions.iter().all(|e| e.exited.is_some())
        })
        .await;
        for pid in self.pids() {
            process::signal_group(pid, libc::SIGKILL);
        }
        // Collect the exits of what was killed (bounded: SIGKILL is not ignorable), and the outcome
        // of deliveries still in flight (their listener is gone, so they fail fast), so that the
        // counters are final. Nothing new is dispatched to subscribers of a dead environment.
        self.env.force_flush = false;
        let grace = Some(Instant::now() + Duration::from_secs(2));
        self.wait_until(grace, |s| {
            s.env.extensions.iter().all(|e| e.exited.is_some())
                && s.env.runtime.as_ref().is_none_or(|r| r.exited.is_some())
                && s.env.subscribers.iter().all(|(_, x)| !x.in_flight)
        })
        .await;
        if let Some(r) = &self.env.runtime {
            process::signal_group(r.pid, libc::SIGKILL);
        }
        for (key, mut s) in std::mem::take(&mut self.env.subscribers) {
            // What was never delivered is lost with the environment: count it.
            s.abandon();
            self.report.counters.push(CounterEntry {
                extension: s.extension.clone(),
                api: s.sub.api,
                counters: s.counters.clone(),
            });
            if s.in_flight {
                self.retired.push((key, s));
            }
        }
        self.env = Env::default();
    }
}
