//! The platform edge: the Extensions API client (register, `/event/next`, error reports), the
//! Telemetry and Logs API subscription, the telemetry listener, and the event types it decodes.
//!
//! In: the Lambda APIs (answers to loupe's calls, and the batches Lambda POSTs to the listener).
//! Out: lifecycle events for the run loop, platform events for the invocation tracker, and
//! `function`/`extension` log lines for the log and metric pipeline.
//!
//! loupe owns this small client instead of using the `lambda-extension` crate, whose types served
//! as a reference only. That crate (1.1.1) hard-codes Telemetry schema `2022-07-01` (so JSON log
//! records arrive as strings and Managed Instances refuse the subscription); decodes a batch into
//! a closed enum, so one unknown event (every SnapStart restore event, a Managed Instances report
//! without billed duration) fails the whole batch, answers 400 and has Lambda resend it forever;
//! re-binds a fixed listener port once per connection and panics inside a task when the bind
//! fails; and calls `/next` again after SHUTDOWN. Here the listener is bound once before the
//! subscription, every batch is answered 200, events are decoded one by one with open
//! enumerations, and the run loop never calls `/next` after SHUTDOWN.

pub mod client;
pub mod events;
pub mod http;
pub mod listener;
pub mod stats;
pub mod subscribe;

pub use client::{ExtensionClient, NextEvent, ShutdownReason};
pub use events::{Event, LogLine, LogRecord, Platform, PlatformEvent};
pub use listener::{Intake, LogQueue, LogReceiver, PlatformSink};
pub use stats::{Stats, StatsSnapshot};
pub use subscribe::{Api, Subscription};
