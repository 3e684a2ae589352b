//! loupe-local: a local Lambda for one execution environment. It serves the Runtime, Extensions,
//! Telemetry and Logs APIs on 127.0.0.1, runs a runtime command and every extension beside it,
//! and reports what happened. Used by the demo and the tests; never part of the layer.
//!
//! In: command-line options (see [`crate::local::args::USAGE`]). Out: a summary on stdout, the
//! processes' output on stderr (prefixed), and with `--report FILE` a JSON report
//! ([`crate::local::report::RunReport`]).
//!
//! # What it does like Lambda
//! - Init: every executable file directly in `--extensions-dir` starts at once (at most 10) and
//!   must register (name = file name) before the runtime starts; init ends when the runtime and
//!   every registered extension have called `/next`. Budget 10 s (130 s on Managed Instances;
//!   `--init-timeout` changes it), also for an init retried at invoke, where Lambda would use the
//!   function timeout. Registration, Telemetry and Logs subscriptions are refused after init
//!   (403 `Extension.RegistrationClosed`,
//!   `Telemetry.SubscriptionClosed`). Records emitted during init are replayed to a subscriber
//!   that subscribes later in init.
//! - Invoke: `platform.start`, then the event goes to the runtime's `/next` and INVOKE to every
//!   extension registered for it at the same time. `platform.runtimeDone` is emitted when the
//!   runtime calls `/next` again and delivered under each subscriber's buffering while the
//!   extensions may still be working; `platform.report` is emitted once every extension has called
//!   `/next`, so it is delivered after the next thaw or before SHUTDOWN. Report `durationMs` runs
//!   from the invoke to the last extension's `/next` (runtime time plus `extensionOverhead`),
//!   `billedDurationMs` is its ceiling, and `maxMemoryUsedMB` is the sum of the peak RSS (VmHWM,
//!   from /proc) of every process in the runtime's and the extensions' process groups.
//! - Freeze: when everything waits in `/next`, deliveries in flight are given up to 1 s to finish,
//!   then the runtime's and extensions' process groups get SIGSTOP; SIGCONT before the next event.
//!   No delivery starts while frozen.
//! - Timeout (`--timeout`) and crash (the runtime exits during an invocation; or an extension
//!   exits or never calls `/next` in time) reset the whole environment, as Lambda does: runtimeDone
//!   and report say `timeout` (`Sandbox.Timeout`) or `failure` (`Runtime.ExitError`,
//!   `Extension.Crash`), the runtime gets SIGTERM, buffered telemetry is delivered, extensions get
//!   SHUTDOWN with reason `timeout` / `failure`, anything left is killed at the deadline, and the
//!   next invocation starts with a fresh init (`"phase": "invoke"`) that launches the extensions
//!   again. A failed init (runtime `/init/error`, exit, extension crash or init error, timeout)
//!   does the same; the invocation that needed it is reported as `failure` with the init's error
//!   type. A runtime `/error` response is status `error` with its error type (no reset).
//! - Shutdown (reason `spindown` after the last invocation): SIGTERM to the runtime, which gets
//!   300 ms of the 2000 ms window, then SIGKILL; buffered telemetry is delivered; SHUTDOWN goes to
//!   every extension registered for it (others are killed at once, except one that reported an
//!   error, which is given the window to exit), with `deadlineMs` = start of shutdown + 2000 ms;
//!   SIGKILL at the deadline. Exit codes and time from SHUTDOWN to exit go to the report. The
//!   delivery of buffered telemetry may hold SHUTDOWN back by at most 500 ms.
//! - Logs: each line the runtime writes to stdout/stderr is a `function` record, each line of an
//!   extension an `extension` record (also echoed to stderr as `[name] line` unless `--quiet`;
//!   extension stderr lines are kept in the report, bounded). Lines longer than 256 KiB are split
//!   into 256 KiB records (not truncated). Text format: the record is the string. JSON format
//!   (schema 2022-12-13 and later): a line that is a JSON object is delivered as that object, any
//!   other line as a string; schema 2022-07-01 and the Logs API always get strings.
//! - Telemetry delivery: JSON arrays POSTed to `sandbox.localdomain` (or `sandbox`) mapped to
//!   127.0.0.1, one batch in flight per subscriber, cut at maxItems / maxBytes / timeoutMs. A
//!   subscriber's buffer holds 4 x maxItems records and 4 x maxBytes bytes; overflow is dropped and
//!   counted. A batch refused (non-2xx, refused connection, no answer in 5 s) is tried 3 times
//!   (backoff 50 ms, 200 ms), then dropped and counted; the subscriber hears of every drop with
//!   `platform.logsDropped` in its next batch. Nothing is sent to an extension that has exited;
//!   records still buffered when the environment ends are counted as dropped in the report.
//! - Managed Instances (`--managed-instances`): `AWS_LAMBDA_INITIALIZATION_TYPE=
//!   lambda-managed-instances`, INVOKE registration refused (403 `Extension.InvalidEventType`),
//!   Logs API refused (202 `Logs.NotSupported`), Telemetry schema 2025-01-29 only, no
//!   runtimeDone, report with `durationMs` only (spans responseLatency / responseDuration), JSON
//!   log format, no freeze. Invocations run one at a time (concurrency 1;
//!   `AWS_LAMBDA_MAX_CONCURRENCY=1` is set, so the Python runtime client runs one worker).
//!
//! - Backend (`--receiver`): an OTLP/HTTP receiver on 127.0.0.1 ([`receiver`]) stands in for
//!   the backend; `LOUPE_BACKEND_URL` points at it unless the caller set it, and the summary and
//!   the report's `receiver` section show what arrived.
//!
//! # Where it differs
//! - No internal extensions: a register call whose name matches no started extension is refused
//!   (403 `Extension.InvalidExtensionName`) instead of being taken as an internal extension.
//! - TCP telemetry destinations are refused with a ValidationError.
//! - `--telemetry-api off` answers 400 `ValidationError`, `--telemetry-api 202` answers like AWS's
//!   emulator (202 `Telemetry.NotSupported`); `--logs-api off` answers 202 `Logs.NotSupported`.
//! - A second subscription by the same extension to the same API replaces the first; the other
//!   API is refused with a ValidationError (the two are exclusive).
//! - `responseDuration` is reported as 0 ms (the response arrives in one piece).
//! - No SnapStart, provisioned concurrency, response streaming or X-Ray daemon.

/// One line to stderr; a closed or full stderr is ignored rather than a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod api;
pub mod args;
pub mod process;
pub mod receiver;
pub mod records;
pub mod report;
pub mod sandbox;
pub mod telemetry;
pub mod util;

use std::path::Path;

use tokio::sync::mpsc;

/// Why loupe-local could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error("cannot read payloads from {path}: {source}")]
    Payloads {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a JSON document")]
    BadPayload { path: String, line: usize },
    #[error("cannot serve the APIs on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error("cannot serve the OTLP receiver on 127.0.0.1: {0}")]
    Receiver(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the report to {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
}

/// The variable `--receiver` sets for the sandbox: where loupe sends OTLP.
pub const BACKEND_VAR: &str = "LOUPE_BACKEND_URL";

/// Non-empty lines of a payloads file, each checked to be JSON.
pub fn read_payloads(path: &Path) -> Result<Vec<String>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Payloads {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if serde_json::from_str::<serde_json::Value>(line).is_err() {
            return Err(Error::BadPayload {
                path: shown,
                line: i + 1,
            });
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Runs loupe-local with the arguments after the program name; returns the process exit code.
pub fn run(argv: &[String]) -> i32 {
    match try_run(argv) {
        Ok(()) => 0,
        Err(Error::Args(args::ArgsError::Help)) => {
            print!("{}", args::USAGE);
            0
        }
        Err(e @ Error::Args(_)) => {
            say!("loupe-local: {e}\n\n{}", args::USAGE);
            2
        }
        Err(e) => {
            say!("loupe-local: {e}");
            1
        }
    }
}

fn try_run(argv: &[String]) -> Result<(), Error> {
    let mut opts = args::parse(argv)?;
    let payloads = match &opts.payloads {
        args::PayloadSource::Fixed(p) => vec![p.clone()],
        args::PayloadSource::File(path) => read_payloads(path)?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let report = rt.block_on(async {
        let (tx, rx) = mpsc::channel(256);
        let addr = api::serve(opts.port, tx).await.map_err(Error::Bind)?;
        say!("loupe-local: APIs on {addr}");
        let receiver = if opts.receiver {
            let rx = receiver::serve(opts.receiver_port)
                .await
                .map_err(Error::Receiver)?;
            say!("loupe-local: OTLP receiver on http://{}", rx.addr);
            let set = |k: &str| {
                opts.env.iter().any(|(name, _)| name == k) || std::env::var_os(k).is_some()
            };
            if !set(BACKEND_VAR) {
                opts.env
                    .push((BACKEND_VAR.to_string(), format!("http://{}", rx.addr)));
            }
            Some(rx)
        } else {
            None
        };
        let report_path = opts.report.clone();
        let thresholds = opts.thresholds.clone();
        let mut report = sandbox::Sandbox::new(opts, payloads, addr, rx).run().await;
        // The extensions have exited: every request they sent has been answered.
        report.receiver = receiver.map(|r| r.report(&thresholds));
        Ok::<_, Error>((report, report_path))
    })?;
    let (report, path) = report;
    print!("{}", report::summary(&report));
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| Error::Report {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
