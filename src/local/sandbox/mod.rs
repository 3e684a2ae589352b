//! The execution environment: one owner of every piece of state, driving the Lambda
//! lifecycle (init, invocations, freeze/thaw, timeout and crash resets, shutdown).
//!
//! In: API calls from [`super::api`], output lines and exits from [`super::process`], delivery
//! outcomes from [`super::telemetry`]. Out: replies to the calls, records to the subscribers,
//! signals to the processes, and a [`RunReport`]. The lifecycle is written as straight-line
//! async code; each wait pumps the three inputs until its condition holds or its deadline passes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

mod calls;
mod lifecycle;

use super::api::{Call, Reply};
use super::args::{LogFormat, Options};
use super::process::{self, ExitInfo, ProcEvent};
use super::records::{InitInfo, Kind, LogLine, Record, Status};
use super::report::{InvocationEntry, RunReport};
use super::telemetry::{self, Subscriber};
use super::util;

/// The account id in ARNs and in the register answer.
pub const ACCOUNT_ID: &str = "123456789012";
/// Lambda's limit on external extensions.
pub const MAX_EXTENSIONS: usize = 10;
/// Init budget of an on-demand environment.
pub const INIT_BUDGET: Duration = Duration::from_secs(10);
/// Init budget on Managed Instances.
pub const MANAGED_INIT_BUDGET: Duration = Duration::from_secs(130);
/// The whole shutdown window with external extensions, and the runtime's share of it.
pub const SHUTDOWN_WINDOW: Duration = Duration::from_millis(2000);
pub const RUNTIME_SHUTDOWN_SHARE: Duration = Duration::from_millis(300);
/// The most the delivery of buffered telemetry may delay SHUTDOWN.
pub const PRE_SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);
/// Records kept during init for subscribers that subscribe later in init.
const MAX_REPLAY: usize = 2000;
/// How long in-flight deliveries may delay a freeze.
const FREEZE_DRAIN: Duration = Duration::from_secs(1);
/// How long a SIGSTOP may take to show in /proc.
const STOP_CHECK: Duration = Duration::from_secs(2);

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
            "arn:aws:lambda:{}:{ACCOUNT_ID}:function:{}",
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

    /// Starts every due delivery (never while frozen, never to an extension that has exited).
    fn dispatch(&mut self) {
        if self.env.frozen {
            return;
        }
        let now = Instant::now();
        let now_ms = util::epoch_ms();
        let force = self.env.force_flush;
        let extensions = &self.env.extensions;
        for (key, s) in &mut self.env.subscribers {
            // Nothing more goes to an extension that has exited.
            let exited = extensions
                .iter()
                .any(|e| e.name == s.extension && e.exited.is_some());
            if exited || !s.due(now, force) {
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

    /// Every subscriber has nothing left to deliver (or its extension has exited).
    fn delivered_all(&self) -> bool {
        self.env.subscribers.iter().all(|(_, x)| {
            !x.in_flight
                && (x.is_empty()
                    || self
                        .env
                        .extensions
                        .iter()
                        .any(|e| e.name == x.extension && e.exited.is_some()))
        })
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
}
