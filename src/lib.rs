//! loupe: an AWS Lambda extension that turns the metric lines a function prints (CloudWatch
//! Embedded Metric Format) and the platform's own telemetry into OTLP metrics and events.
//!
//! Data flows one way, and the modules follow it:
//! Lambda APIs → decode → parse → aggregate → batch → encode → send.

/// Series keys, cardinality cap, exponential histograms.
pub mod aggregate;
/// What one flush sends, and the seam between pipeline and flush control.
pub mod batch;
/// The `loupe check` command.
pub mod check;
/// Calendar arithmetic on epoch times.
pub mod clock;
/// One typed `Config` from environment variables, read once.
pub mod config;
/// Metric lines: cheap pre-check, parse, validate, rejection reasons.
pub mod emf;
/// What loupe ships besides metrics: log lines, EMF events, invocation errors.
pub mod event;
/// OTLP encoding, gzip, HTTP send with retry and circuit breaker.
pub mod export;
/// The extension's run loop: register, listen, subscribe, serve /event/next until SHUTDOWN.
pub mod extension;
/// When data leaves: end-of-invocation, pipelined, periodic, shutdown; budgets, own metrics.
pub mod flush;
/// One small HTTP/1 client (plain or TLS) for the Lambda APIs and the backend.
pub mod http;
/// The invocation tracker: per request id start, runtimeDone, report; cold start.
pub mod invocation;
/// The platform edge: Extensions API client, Telemetry/Logs subscription, listener, event types.
pub mod lambda;
/// loupe-local: a local Lambda for one execution environment (demo and tests only).
#[cfg(feature = "local")]
pub mod local;
/// loupe's own log lines on stderr.
pub mod logging;
/// The log and metric pipeline: log lines in, series, events and counters out.
pub mod pipeline;
/// Platform metrics and invocation error events from the tracker's records.
pub mod platform;
/// The backend API key from Secrets Manager or SSM, SigV4-signed, without the AWS SDK.
pub mod secrets;
/// Spans: one per invocation, with the platform's phase durations as attributes.
pub mod trace;
