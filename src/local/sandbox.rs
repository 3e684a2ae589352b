//! The execution environment: one task that owns every piece of state and drives the Lambda
//! lifecycle (init, invocations, freeze/thaw, timeout and crash resets, shutdown).
//!
//! In: API calls from [`super::api`], output lines and exits from [`super::process`], delivery
//! outcomes from [`super::telemetry`]. Out: replies to the calls, records to the subscribers,
//! signals to the processes, and a [`RunReport`]. The lifecycle is written as straight-line
//! async code; each wait pumps the three inputs until its condition holds or its deadline passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::api::{ApiCall, Call, Reply};
use super::args::{ApiSwitch, LogFormat, Options};
use super::process::{self, ExitInfo, ProcEvent};
use super::records::{Api, InitInfo, Kind, LogLine, Record, ReportMetrics, Span, Status};
use super::report::{
    CounterEntry, ExtensionEntry, InitEntry, InvocationEntry, RefusedEntry, RunReport,
    SubscriptionEntry, response_value,
};
use super::telemetry::{self, Subscriber};
use super::util;

/// Lambda's limit on external extensions.
pub const MAX_EXTENSIONS: usize = 10;
/// Init budget of an on-demand environment.
pub const INIT_BUDGET: Duration = Duration::from_secs(10);
/// Init budget on Managed Instances.
pub const MANAGED_INIT_BUDGET: Duration = Duration::from_secs(130);
/// The whole shutdown window with external extensions, and the runtime's share of it.
pub const SHUTDOWN_WINDOW: Duration = Duration::from_millis(2000);
pub const RUNTIME_SHUTDOWN_SHARE: Duration = Duration::from_millis(300);
/// Records kept during init for subscribers that subscribe later in init.
const MAX_REPLAY: usize = 2000;
/// How long in-flight deliveries may delay a freeze.
const FREEZE_DRAIN: Duration = Duration::from_secs(1);
/// How long a SIGSTOP may take to show in /proc.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Variables Lambda gives the runtime but not extensions.
const RUNTIME_ONLY: [&str; 6] = [
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "_HANDLER",
];

struct RuntimeProc {
    id: u64,
    pid: u32,
    pending: Option<oneshot::Sender<Reply>>,
    queued: Option<Reply>,
    exited: Option<ExitInfo>,
    init_error: Option<String>,
    last_rss_kib: u64,
}

struct ExtProc {
    id: u64,
    pid: u32,
    name: String,
    ext_id: Option<String>,
    events: Vec<String>,
    pending: Option<oneshot::Sender<Reply>>,
    /// An event for the next /next call (is it SHUTDOWN, the answer).
    queued: Option<(bool, Reply)>,
    ready: bool,
    exited: Option<ExitInfo>,
    error: Option<String>,
    /// Waiting on this extension's /next for the current invocation.
    busy: bool,
    done_at: Option<Instant>,
    shutdown_sent_at: Option<Instant>,
    report_idx: usize,
    last_rss_kib: u64,
}

impl ExtProc {
    fn gone(&self) -> bool {
        self.exited.is_some() || self.error.is_some()
    }

    fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

struct Invocation {
    request_id: String,
    start: Instant,
    start_ms: u64,
    trace: String,
    delivered: bool,
    response: Option<Bytes>,
    response_at: Option<Instant>,
    error_type: Option<String>,
    runtime_done_at: Option<Instant>,
    log_lines: u64,
}

/// One execution environment's state; a reset starts a fresh one.
#[derive(Default)]
struct Env {
    init_open: bool,
    shutting_down: Option<(String, u64)>,
    runtime: Option<RuntimeProc>,
    extensions: Vec<ExtProc>,
    subscribers: Vec<(u64, Subscriber)>,
    replay: Vec<Record>,
    frozen: bool,
    force_flush: bool,
    init_duration_ms: Option<f64>,
    invocation: Option<Invocation>,
}

impl Env {
    fn ready(&self) -> bool {
        self.runtime.as_ref().is_some_and(|r| r.exited.is_none())
    }
}

/// A finished delivery.
struct Delivered {
    sub_key: u64,
    records: u64,
    bytes: u64,
    ok: bool,
}

/// Where a process's lines go.
#[derive(Clone)]
enum Owner {
    Runtime,
    Extension { name: String, report_idx: usize },
}

pub struct Sandbox {
    opts: Options,
    payloads: Vec<String>,
    addr: SocketAddr,
    calls: mpsc::Receiver<Call>,
    procs_tx: mpsc::Sender<ProcEvent>,
    procs_rx: mpsc::Receiver<ProcEvent>,
    deliv_tx: mpsc::Sender<Delivered>,
    deliv_rx: mpsc::Receiver<Delivered>,
    next_key: u64,
    owners: HashMap<u64, Owner>,
    env: Env,
    report: RunReport,
    launches: HashMap<String, u32>,
    instance_id: String,
    log_stream: String,
    /// Subscribers of reset environments that still have a delivery in flight.
    retired: Vec<(u64, Subscriber)>,
    /// SIGINT: finish the current invocation, then shut down.
    sigint: Option<tokio::signal::unix::Signal>,
    interrupted: bool,
}

fn seconds_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Sandbox {
    pub fn new(
        opts: Options,
        payloads: Vec<String>,
        addr: SocketAddr,
        calls: mpsc::Receiver<Call>,
    ) -> Self {
        let (procs_tx, procs_rx) = mpsc::channel(1024);
        let (deliv_tx, deliv_rx) = mpsc::channel(64);
        let now_ms = util::epoch_ms();
        let log_stream = format!(
            "{}/[$LATEST]{}",
            util::date_path(now_ms),
            util::random_hex(32)
        );
        let report = RunReport {
            function_name: opts.function_name.clone(),
            managed_instances: opts.managed_instances,
            ..RunReport::default()
        };
        Sandbox {
            opts,
            payloads,
            addr,
            calls,
            procs_tx,
            procs_rx,
            deliv_tx,
            deliv_rx,
            next_key: 1,
            owners: HashMap::new(),
            env: Env::default(),
            report,
            launches: HashMap::new(),
            instance_id: util::uuid_v4(),
            log_stream,
            retired: Vec::new(),
            sigint: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok(),
            interrupted: false,
        }
    }

    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn managed(&self) -> bool {
        self.opts.managed_instances
    }

    fn init_type(&self) -> &'static str {
        if self.managed() {
            "lambda-managed-instances"
        } else {
            "on-demand"
        }
    }

    fn log_format(&self) -> LogFormat {
        if self.managed() {
            LogFormat::Json
        } else {
            self.opts.log_format
        }
    }

    fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:123456789012:function:{}",
            self.opts.region, self.opts.function_name
        )
    }

    /// Runs init, every invocation and the shutdown, and returns the report.
    pub async fn run(mut self) -> RunReport {
        let count = self
            .opts
            .invocations
            .unwrap_or(self.payloads.len().max(1) as u32);
        let _ = self.init("init").await;
        for i in 0..count as usize {
            let payload = self
                .payloads
                .get(i % self.payloads.len().max(1))
                .cloned()
                .unwrap_or_else(|| "{}".to_string());
            if self.interrupted {
                break;
            }
            if !self.env.ready() {
                if self.env.runtime.is_some() || !self.env.extensions.is_empty() {
                    self.shutdown("failure").await;
                }
                if let Err(error_type) = self.init("invoke").await {
                    self.report.invocations.push(InvocationEntry {
                        request_id: util::uuid_v4(),
                        status: Status::Failure.as_str(),
                        error_type: Some(error_type),
                        duration_ms: 0.0,
                        extension_overhead_ms: 0.0,
                        max_memory_used_mb: 0,
                        log_lines: 0,
                        response: Value::Null,
                    });
                    continue;
                }
            }
            self.invoke(payload).await;
        }
        self.shutdown("spindown").await;
        self.report
    }

    // ----- the environment's common variables -----

    fn common_env(&self) -> Vec<(String, String)> {
        let o = &self.opts;
        let format = match self.log_format() {
            LogFormat::Text => "Text",
            LogFormat::Json => "JSON",
        };
        let mut env = vec![
            ("AWS_LAMBDA_RUNTIME_API".to_string(), self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME".into(), o.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
                o.memory_mb.to_string(),
            ),
            ("AWS_REGION".into(), o.region.clone()),
            ("AWS_DEFAULT_REGION".into(), o.region.clone()),
            ("AWS_LAMBDA_LOG_FORMAT".into(), format.into()),
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE".into(),
                self.init_type().into(),
            ),
            ("TZ".into(), ":UTC".into()),
        ];
        if self.managed() {
            env.push(("AWS_LAMBDA_MAX_CONCURRENCY".into(), "1".into()));
        }
        env
    }

    fn runtime_env(&self) -> Vec<(String, String)> {
        let o = &self.opts;
        let root = std::fs::canonicalize(&o.task_root).unwrap_or_else(|_| o.task_root.clone());
        let mut env = self.common_env();
        env.extend([
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".to_string(),
                format!("/aws/lambda/{}", o.function_name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME".into(), self.log_stream.clone()),
            ("_HANDLER".into(), o.handler.clone()),
            (
                "LAMBDA_TASK_ROOT".into(),
                root.to_string_lossy().into_owned(),
            ),
            ("AWS_EXECUTION_ENV".into(), "AWS_Lambda_loupe-local".into()),
        ]);
        env.extend(o.env.iter().cloned());
        env
    }

    // ----- records -----

    fn emit(&mut self, kind: Kind) {
        let rec = Record {
            time_ms: util::epoch_ms(),
            kind,
        };
        let now = Instant::now();
        for (_, s) in &mut self.env.subscribers {
            s.offer(&rec, now);
        }
        if self.env.init_open && self.env.replay.len() < MAX_REPLAY {
            self.env.replay.push(rec);
        }
    }

    fn init_info(&self, phase: &'static str) -> InitInfo {
        InitInfo {
            initialization_type: self.init_type().to_string(),
            phase,
        }
    }

    // ----- the pump -----

    /// Starts every due delivery (never while frozen).
    fn dispatch(&mut self) {
        if self.env.frozen {
            return;
        }
        let now = Instant::now();
        let now_ms = util::epoch_ms();
        let force = self.env.force_flush;
        for (key, s) in &mut self.env.subscribers {
            if !s.due(now, force) {
                continue;
            }
            if let Some(batch) = s.take_batch(now_ms) {
                let tx = self.deliv_tx.clone();
                let (port, path, key) = (s.sub.port, s.sub.path.clone(), *key);
                tokio::spawn(async move {
                    let bytes = batch.body.len() as u64;
                    let ok = telemetry::post_batch(port, path, batch.body).await;
                    let _ = tx
                        .send(Delivered {
                            sub_key: key,
                            records: batch.records,
                            bytes,
                            ok,
                        })
                        .await;
                });
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        if self.env.frozen {
            return None;
        }
        self.env
            .subscribers
            .iter()
            .filter(|(_, s)| !s.in_flight)
            .filter_map(|(_, s)| s.deadline())
            .min()
    }

    /// Handles inputs until `cond` holds (true) or `deadline` passes (false).
    async fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        cond: impl Fn(&Self) -> bool,
    ) -> bool {
        loop {
            self.dispatch();
            if cond(self) {
                return true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let wake = match (deadline, self.next_wake()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(tokio::time::Instant::from_std(w)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                Some((call, reply)) = self.calls.recv() => self.handle_call(call, reply),
                Some(ev) = self.procs_rx.recv() => self.handle_proc(ev),
                Some(d) = self.deliv_rx.recv() => self.handle_delivered(d),
                Some(()) = async { match &mut self.sigint { Some(s) => s.recv().await, None => None } } => {
                    self.on_interrupt();
                }
                _ = sleep => {}
            }
        }
    }

    fn on_interrupt(&mut self) {
        if self.interrupted {
            say!("loupe-local: interrupted again, killing everything");
            for pid in self.pids() {
                process::signal_group(pid, libc::SIGCONT);
                process::signal_group(pid, libc::SIGKILL);
            }
            std::process::exit(130);
        }
        say!("loupe-local: interrupted; finishing the current invocation, then shutting down");
        self.interrupted = true;
    }

    fn handle_delivered(&mut self, d: Delivered) {
        let all = self
            .env
            .subscribers
            .iter_mut()
            .chain(self.retired.iter_mut());
        for (key, s) in all {
            if *key == d.sub_key {
                s.finished(d.records, d.bytes, d.ok);
            }
        }
        self.retired.retain(|(_, s)| s.in_flight);
    }

    fn handle_proc(&mut self, ev: ProcEvent) {
        match ev {
            ProcEvent::Line { id, stderr, text } => {
                let Some(owner) = self.owners.get(&id).cloned() else {
                    return;
                };
                let text = String::from_utf8_lossy(&text).into_owned();
                let object = match self.log_format() {
                    LogFormat::Json => serde_json::from_str::<Value>(&text)
                        .ok()
                        .filter(Value::is_object),
                    LogFormat::Text => None,
                };
                let line = LogLine {
                    text: text.clone(),
                    object,
                };
                let live = self.env.runtime.as_ref().is_some_and(|r| r.id == id)
                    || self.env.extensions.iter().any(|e| e.id == id);
                match owner {
                    Owner::Runtime => {
                        if !self.opts.quiet {
                            say!("[function] {text}");
                        }
                        if let Some(inv) = &mut self.env.invocation {
                            inv.log_lines += 1;
                        }
                        if live {
                            self.emit(Kind::Function(line));
                        }
                    }
                    Owner::Extension { name, report_idx } => {
                        if !self.opts.quiet {
                            say!("[{name}] {text}");
                        }
                        if stderr {
                            if let Some(e) = self.report.extensions.get_mut(report_idx) {
                                e.stderr_line(&text);
                            }
                        }
                        if live {
                            self.emit(Kind::ExtensionLog(line));
                        }
                    }
                }
            }
            ProcEvent::Exited { id, exit } => {
                if let Some(r) = &mut self.env.runtime {
                    if r.id == id {
                        r.exited = Some(exit);
                        r.pending = None;
                    }
                }
                let now = Instant::now();
                for e in &mut self.env.extensions {
                    if e.id == id {
                        e.exited = Some(exit);
                        e.pending = None;
                        if let Some(r) = self.report.extensions.get_mut(e.report_idx) {
                            r.exited(exit);
                            r.shutdown_ms = e.shutdown_sent_at.map(|t| seconds_ms(now - t));
                        }
                    }
                }
            }
        }
    }

    fn refuse(&mut self, ext: Option<String>, request: &str, reply: &Reply) {
        let error_type = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| {
                v.get("errorType")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        self.report.refuse(RefusedEntry {
            extension: ext,
            request: request.to_string(),
            status: reply.status,
            error_type,
        });
    }

    fn ext_by_id(&self, id: &Option<String>) -> Result<usize, Reply> {
        let Some(id) = id else {
            return Err(Reply::error(
                403,
                "Extension.MissingExtensionIdentifier",
                "missing Lambda-Extension-Identifier",
            ));
        };
        self.env
            .extensions
            .iter()
            .position(|e| e.ext_id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| {
                Reply::error(
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    "unknown extension identifier",
                )
            })
    }

    fn handle_call(&mut self, call: ApiCall, reply: oneshot::Sender<Reply>) {
        let answer = match call {
            // The two /next calls keep their reply slot to answer when an event comes.
            ApiCall::RuntimeNext => return self.runtime_next(reply),
            ApiCall::ExtensionNext { id } => return self.extension_next(id, reply),
            ApiCall::RuntimeResponse { request_id, body } => {
                self.runtime_result(&request_id, Some(body), None)
            }
            ApiCall::RuntimeError {
                request_id,
                error_type,
                body,
            } => {
                let ty = error_type
                    .or_else(|| {
                        serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                            v.get("errorType")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                    })
                    .unwrap_or_else(|| "Unhandled".to_string());
                self.runtime_result(&request_id, Some(body), Some(ty))
            }
            ApiCall::RuntimeInitError { error_type, .. } => {
                match (&mut self.env.runtime, self.env.init_open) {
                    (Some(r), true) => {
                        r.init_error = Some(error_type.unwrap_or_else(|| "Runtime.Unknown".into()));
                        Reply::accepted()
                    }
                    _ => Reply::error(403, "Runtime.InvalidStateTransition", "init is over"),
                }
            }
            ApiCall::Register { name, body } => self.register(name, &body),
            ApiCall::ExtensionError { id, error_type, .. } => match self.ext_by_id(&id) {
                Err(r) => r,
                Ok(i) => {
                    let ty = error_type.unwrap_or_else(|| "Extension.Unknown".into());
                    let e = &mut self.env.extensions[i];
                    e.error = Some(ty.clone());
                    e.pending = None;
                    if let Some(r) = self.report.extensions.get_mut(e.report_idx) {
                        r.error_type = Some(ty.clone());
                    }
                    Reply::accepted()
                }
            },
            ApiCall::Subscribe { api, id, body } => self.subscribe(api, id, &body),
            ApiCall::NotFound { method, path } => {
                Reply::error(404, "NotFound", &format!("no route for {method} {path}"))
            }
        };
        let _ = reply.send(answer);
    }

    fn runtime_next(&mut self, reply: oneshot::Sender<Reply>) {
        let Some(r) = &mut self.env.runtime else {
            let _ = reply.send(Reply::error(
                403,
                "Runtime.InvalidStateTransition",
                "no runtime",
            ));
            return;
        };
        if let Some(q) = r.queued.take() {
            let _ = reply.send(q);
            return;
        }
        r.pending = Some(reply);
        if let Some(inv) = &mut self.env.invocation {
            if inv.delivered && inv.runtime_done_at.is_none() {
                inv.runtime_done_at = Some(Instant::now());
            }
        }
    }

    fn runtime_result(
        &mut self,
        request_id: &str,
        body: Option<Bytes>,
        error: Option<String>,
    ) -> Reply {
        match &mut self.env.invocation {
            Some(inv)
                if inv.request_id == request_id
                    && inv.response_at.is_none()
                    && inv.runtime_done_at.is_none() =>
            {
                inv.response = body;
                inv.response_at = Some(Instant::now());
                inv.error_type = error;
                Reply::accepted()
            }
            Some(inv) if inv.request_id == request_id => {
                Reply::error(400, "InvalidStateTransition", "a result was already posted")
            }
            _ => Reply::error(400, "InvalidRequestID", "unknown or finished request id"),
        }
    }

    fn register(&mut self, name: Option<String>, body: &[u8]) -> Reply {
        let reply = self.try_register(name.clone(), body);
        if reply.status != 200 {
            self.refuse(name, "register", &reply);
        }
        reply
    }

    fn try_register(&mut self, name: Option<String>, body: &[u8]) -> Reply {
        if !self.env.init_open {
            return Reply::error(
                403,
                "Extension.RegistrationClosed",
                "registration is closed after init",
            );
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Reply::error(
                403,
                "Extension.InvalidExtensionName",
                "missing Lambda-Extension-Name",
            );
        };
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Reply::error(403, "InvalidRequestFormat", "body is not JSON");
        };
        if v.get("configurationKeys").is_some() {
            return Reply::error(
                403,
                "InvalidRequestFormat",
                "configurationKeys are deprecated",
            );
        }
        let Some(events) = v.get("events").and_then(Value::as_array) else {
            return Reply::error(403, "InvalidRequestFormat", "events must be an array");
        };
        let mut names = Vec::new();
        for e in events {
            match e.as_str() {
                Some("INVOKE") if self.managed() => {
                    return Reply::error(
                        403,
                        "Extension.InvalidEventType",
                        "INVOKE is not available to external extensions on Lambda Managed Instances",
                    );
                }
                Some(s @ ("INVOKE" | "SHUTDOWN")) => names.push(s.to_string()),
                _ => {
                    return Reply::error(
                        403,
                        "Extension.InvalidEventType",
                        &format!("unknown event {e}"),
                    );
                }
            }
        }
        let Some(i) = self
            .env
            .extensions
            .iter()
            .position(|e| e.name == name && e.ext_id.is_none())
        else {
            return Reply::error(
                403,
                "Extension.InvalidExtensionName",
                &format!("no unregistered extension named {name:?} was started"),
            );
        };
        let id = util::uuid_v4();
        let e = &mut self.env.extensions[i];
        e.ext_id = Some(id.clone());
        e.events = names.clone();
        if let Some(r) = self.report.extensions.get_mut(e.report_idx) {
            r.registered = true;
            r.registered_events = names.clone();
        }
        self.emit(Kind::Extension {
            name,
            state: "Ready",
            events: names,
            error_type: None,
        });
        Reply {
            status: 200,
            headers: vec![
                ("lambda-extension-identifier", id),
                ("content-type", "application/json".into()),
            ],
            body: Bytes::from(
                json!({
                    "functionName": self.opts.function_name,
                    "functionVersion": "$LATEST",
                    "handler": self.opts.handler,
                })
                .to_string(),
            ),
        }
    }

    fn extension_next(&mut self, id: Option<String>, reply: oneshot::Sender<Reply>) {
        let i = match self.ext_by_id(&id) {
            Ok(i) => i,
            Err(r) => {
                self.refuse(None, "next", &r);
                let _ = reply.send(r);
                return;
            }
        };
        let e = &mut self.env.extensions[i];
        if e.shutdown_sent_at.is_some() || e.error.is_some() {
            let r = Reply::error(
                403,
                "Extension.InvalidExtensionState",
                "the extension was shut down",
            );
            let name = e.name.clone();
            self.refuse(Some(name), "next", &r);
            let _ = reply.send(r);
            return;
        }
        e.ready = true;
        if let Some((shutdown, q)) = e.queued.take() {
            if shutdown {
                e.shutdown_sent_at = Some(Instant::now());
            }
            let _ = reply.send(q);
            return;
        }
        e.pending = Some(reply);
        if e.busy {
            e.busy = false;
            e.done_at = Some(Instant::now());
        }
    }

    fn subscribe(&mut self, api: Api, id: Option<String>, body: &[u8]) -> Reply {
        let name = self
            .ext_by_id(&id)
            .ok()
            .map(|i| self.env.extensions[i].name.clone());
        let reply = self.try_subscribe(api, id, body);
        if reply.status != 200 {
            let what = match api {
                Api::Telemetry => "telemetry",
                Api::Logs => "logs",
            };
            self.refuse(name, what, &reply);
        }
        reply
    }

    fn try_subscribe(&mut self, api: Api, id: Option<String>, body: &[u8]) -> Reply {
        let (switch, prefix) = match api {
            Api::Telemetry => (self.opts.telemetry_api, "Telemetry"),
            Api::Logs => (self.opts.logs_api, "Logs"),
        };
        let not_supported = || {
            Reply::error(
                202,
                &format!("{prefix}.NotSupported"),
                &format!("{prefix} API is not supported"),
            )
        };
        if api == Api::Logs && self.managed() {
            return not_supported();
        }
        match (switch, api) {
            (ApiSwitch::On, _) => {}
            (ApiSwitch::NotSupported, _) | (ApiSwitch::Off, Api::Logs) => return not_supported(),
            (ApiSwitch::Off, Api::Telemetry) => {
                return Reply::error(400, "ValidationError", "the Telemetry API is not available");
            }
        }
        let i = match self.ext_by_id(&id) {
            Ok(i) => i,
            Err(r) => return r,
        };
        if !self.env.init_open {
            return Reply::error(
                403,
                &format!("{prefix}.SubscriptionClosed"),
                "subscriptions are accepted during init only",
            );
        }
        let validation = match api {
            Api::Telemetry => "ValidationError",
            Api::Logs => "Logs.ValidationError",
        };
        let accepted: Vec<String> = if self.managed() {
            vec!["2025-01-29".to_string()]
        } else {
            self.opts.telemetry_schemas.clone()
        };
        let sub = match telemetry::parse_subscription(body, api, &accepted) {
            Ok(s) => s,
            Err(msg) => return Reply::error(400, validation, &msg),
        };
        let name = self.env.extensions[i].name.clone();
        if let Some((_, other)) = self
            .env
            .subscribers
            .iter()
            .find(|(_, s)| s.extension == name && s.sub.api != api)
        {
            let msg = format!(
                "already subscribed to the {:?} API; the two are exclusive",
                other.sub.api
            );
            return Reply::error(400, validation, &msg);
        }
        let types = sub.types.clone();
        self.report.subscriptions.push(SubscriptionEntry {
            extension: name.clone(),
            api,
            schema_version: sub.schema_version.clone(),
            types: types.clone(),
            buffering: sub.buffering,
        });
        // A second subscription by the same extension replaces the first.
        self.env.subscribers.retain(|(_, s)| s.extension != name);
        let mut s = Subscriber::new(name.clone(), sub);
        let now = Instant::now();
        for rec in &self.env.replay {
            s.offer(rec, now);
        }
        let key = self.key();
        self.env.subscribers.push((key, s));
        self.emit(Kind::Subscription { name, api, types });
        Reply::json(200, &Value::String("OK".into()))
    }

    // ----- processes -----

    fn launch_runtime(&mut self) -> Result<(), String> {
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

    fn launch_extensions(&mut self) -> Result<(), String> {
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

    fn pids(&self) -> Vec<u32> {
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

    fn sample_memory(&mut self) -> u64 {
        if let Some(r) = &mut self.env.runtime {
            if let Some(k) = process::peak_rss_kib(r.pid) {
                r.last_rss_kib = k;
            }
        }
        for e in &mut self.env.extensions {
            if let Some(k) = process::peak_rss_kib(e.pid) {
                e.last_rss_kib = k;
            }
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

    async fn freeze(&mut self) {
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

    fn thaw(&mut self) {
        if self.env.frozen {
            for pid in self.pids() {
                process::signal_group(pid, libc::SIGCONT);
            }
            self.env.frozen = false;
        }
    }

    // ----- lifecycle -----

    /// One init phase. `Err` carries the error type; the environment is reset then.
    async fn init(&mut self, phase: &'static str) -> Result<(), String> {
        self.env = Env {
            init_open: true,
            ..Env::default()
        };
        let t0 = Instant::now();
        // Lambda bounds an init retried at invoke by the function timeout as well; loupe-local
        // keeps 10 s there so a short test timeout does not starve a slow runtime start.
        let budget = if self.managed() {
            MANAGED_INIT_BUDGET
        } else {
            INIT_BUDGET.max(self.opts.timeout)
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

    async fn init_steps(
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

    fn check_extensions(&self) -> Result<(), (Status, String)> {
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

    async fn invoke(&mut self, payload: String) {
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
        let memory = self.sample_memory();
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
    fn send_event(&mut self, i: usize, name: &str, event: &Value) {
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
    async fn shutdown(&mut self, reason: &str) {
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
        // Deliver what is buffered (the last report among it) before SHUTDOWN.
        self.env.force_flush = true;
        self.wait_until(Some(deadline), |s| {
            s.env
                .subscribers
                .iter()
                .all(|(_, x)| x.is_empty() && !x.in_flight)
        })
        .await;
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
        // Collect the exits of what was killed (bounded: SIGKILL is not ignorable).
        let grace = Some(Instant::now() + Duration::from_secs(2));
        self.wait_until(grace, |s| {
            s.env.extensions.iter().all(|e| e.exited.is_some())
                && s.env.runtime.as_ref().is_none_or(|r| r.exited.is_some())
        })
        .await;
        if let Some(r) = &self.env.runtime {
            process::signal_group(r.pid, libc::SIGKILL);
        }
        for (key, s) in std::mem::take(&mut self.env.subscribers) {
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
