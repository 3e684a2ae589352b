//! Platform metrics and invocation error events, from what the invocation tracker completed.
//!
//! In: a [`Drained`] (completed invocations, init and restore phases), a lookup from request id to
//! the user id the invocation printed, and the aggregator. Out: distributions recorded into the
//! aggregator, and [`Folded`]: counters (shipped as monotonic sums) and one `InvocationError`
//! event per failed invocation or failed init/restore phase. Pure functions: no I/O, no clock.
//!
//! Distributions go under the empty EMF namespace ([`NAMESPACE`]), so the encoder names the OTLP
//! metric by the series name alone and adds no `aws.emf.namespace` attribute; user EMF metrics
//! can never collide with them, since EMF requires a non-empty namespace. Units follow the OTel
//! conventions: seconds for durations, bytes for sizes (Lambda's "MB" is MiB).
//!
//! Choices:
//! * An invocation's status is its report's, else its runtimeDone's. It failed when the status is
//!   known and is not `success` (nor the Logs API's `end`). `faas.errors` counts `error` and
//!   `failure`; `faas.timeouts` counts `timeout`; `aws.lambda.crashes` counts `failure`.
//! * `faas.invoke_duration` is the report's `durationMs`, else runtimeDone's.
//! * `faas.init_duration` and `aws.lambda.restore_duration` come from the init and restore phase
//!   reports only (the `initDurationMs` of a cold start's report repeats the same number, so it
//!   is not counted twice).
//! * Out of memory is probable when the error type names it (`Runtime.OutOfMemory`,
//!   `Runtime.OOM`, ...) or when max memory used reached the memory size.

use std::sync::Arc;

use crate::aggregate::{Aggregator, SeriesKey};
use crate::batch::Counter;
use crate::emf::Unit;
use crate::event::{AttrValue, Body, Event, Kind, Severity, xray_trace_id};
use crate::invocation::{Drained, Invocation, PhaseInfo};

/// The EMF namespace of platform series: empty.
pub const NAMESPACE: &str = "";
/// Storage resolution of platform series.
const RESOLUTION: u32 = 60;
const MIB: f64 = 1_048_576.0;

pub const INVOCATIONS: &str = "faas.invocations";
pub const ERRORS: &str = "faas.errors";
pub const TIMEOUTS: &str = "faas.timeouts";
pub const COLDSTARTS: &str = "faas.coldstarts";
pub const CRASHES: &str = "aws.lambda.crashes";
pub const OUT_OF_MEMORY: &str = "aws.lambda.out_of_memory";
pub const INVOKE_DURATION: &str = "faas.invoke_duration";
pub const INIT_DURATION: &str = "faas.init_duration";
pub const BILLED_DURATION: &str = "aws.lambda.billed_duration";
pub const RESTORE_DURATION: &str = "aws.lambda.restore_duration";
pub const MEM_USAGE: &str = "faas.mem_usage";
pub const PRODUCED_BYTES: &str = "aws.lambda.produced_bytes";

/// The counters and error events of one drain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Folded {
    pub counters: Vec<Counter>,
    pub events: Vec<Event>,
}

/// What one invocation's records say about how it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome<'a> {
    /// Report status, else runtimeDone status; `None` when neither arrived.
    pub status: Option<&'a str>,
    pub error_type: Option<&'a str>,
    pub failed: bool,
    pub error: bool,
    pub timeout: bool,
    pub crash: bool,
    pub out_of_memory: bool,
}

/// How `inv` ended.
pub fn outcome(inv: &Invocation) -> Outcome<'_> {
    let report = inv.report.as_ref();
    let done = inv.runtime_done.as_ref();
    let status = report
        .and_then(|r| r.status.as_deref())
        .or_else(|| done.map(|d| d.status.as_str()))
        .filter(|s| !s.eq_ignore_ascii_case("unknown"));
    let error_type = report
        .and_then(|r| r.error_type.as_deref())
        .or_else(|| done.and_then(|d| d.error_type.as_deref()));
    let is = |word: &str| status.is_some_and(|s| s.eq_ignore_ascii_case(word));
    let failed = status.is_some() && !is("success") && !is("end");
    let memory_full = report.is_some_and(|r| match (r.max_memory_used_mb, r.memory_size_mb) {
        (Some(used), Some(size)) => size > 0 && used >= size,
        _ => false,
    });
    Outcome {
        status,
        error_type,
        failed,
        error: is("error") || is("failure"),
        timeout: is("timeout"),
        crash: is("failure"),
        out_of_memory: error_type.is_some_and(names_out_of_memory) || memory_full,
    }
}

/// `Runtime.OutOfMemory`, `Runtime.OOM`, `OutOfMemoryError` ...
fn names_out_of_memory(error_type: &str) -> bool {
    let lower = error_type.to_ascii_lowercase();
    lower.contains("outofmemory")
        || lower.contains("out_of_memory")
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w == "oom")
}

fn key(name: &'static str, unit: Unit) -> SeriesKey {
    SeriesKey::new(NAMESPACE, name, unit, RESOLUTION, Vec::new())
}

/// Records the platform metrics of `drained` into `aggregator` and returns its counters and
/// error events. `user_of` gives the user id an invocation printed, if any; `now_ns` stamps
/// events whose start time is unknown.
pub fn fold(
    drained: &Drained,
    user_of: &dyn Fn(&str) -> Option<String>,
    now_ns: u64,
    aggregator: &mut Aggregator,
) -> Folded {
    let invoke = key(INVOKE_DURATION, Unit::Seconds);
    let billed = key(BILLED_DURATION, Unit::Seconds);
    let mem = key(MEM_USAGE, Unit::Bytes);
    let produced = key(PRODUCED_BYTES, Unit::Bytes);
    let (mut invocations, mut errors, mut timeouts, mut cold, mut crashes, mut oom) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut events = Vec::new();

    for inv in &drained.invocations {
        invocations += 1;
        let o = outcome(inv);
        errors += u64::from(o.error);
        timeouts += u64::from(o.timeout);
        crashes += u64::from(o.crash);
        oom += u64::from(o.out_of_memory);
        cold += u64::from(inv.cold_start);

        let report = inv.report.as_ref();
        let done = inv.runtime_done.as_ref();
        let duration_ms = report
            .and_then(|r| r.duration_ms)
            .or_else(|| done.and_then(|d| d.duration_ms));
        if let Some(ms) = duration_ms {
            aggregator.record(&invoke, ms / 1000.0);
        }
        if let Some(ms) = report.and_then(|r| r.billed_duration_ms) {
            aggregator.record(&billed, ms as f64 / 1000.0);
        }
        if let Some(mb) = report.and_then(|r| r.max_memory_used_mb) {
            aggregator.record(&mem, mb as f64 * MIB);
        }
        if let Some(b) = done.and_then(|d| d.produced_bytes) {
            aggregator.record(&produced, b as f64);
        }
        if o.failed {
            events.push(invocation_error(inv, &o, duration_ms, user_of, now_ns));
        }
    }

    let init = key(INIT_DURATION, Unit::Seconds);
    let restore = key(RESTORE_DURATION, Unit::Seconds);
    for phase in &drained.phases {
        if let Some(ms) = phase.duration_ms {
            let k = if phase.kind == "restore" {
                &restore
            } else {
                &init
            };
            aggregator.record(k, ms / 1000.0);
        }
        if let Some(e) = phase_error(phase, now_ns) {
            events.push(e);
        }
    }

    let counters = [
        (INVOCATIONS, invocations),
        (ERRORS, errors),
        (TIMEOUTS, timeouts),
        (COLDSTARTS, cold),
        (CRASHES, crashes),
        (OUT_OF_MEMORY, oom),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| Counter::new(name, n))
    .collect();
    Folded { counters, events }
}

fn invocation_error(
    inv: &Invocation,
    o: &Outcome<'_>,
    duration_ms: Option<f64>,
    user_of: &dyn Fn(&str) -> Option<String>,
    now_ns: u64,
) -> Event {
    let time = inv
        .start_time
        .as_deref()
        .and_then(crate::clock::parse_rfc3339_ms)
        .map_or(now_ns, ms_to_ns);
    let mut e = Event::new(Kind::InvocationError, time);
    e.severity = Severity::Error;
    let status = o.status.unwrap_or("unknown");
    e.body = Body::Text(match o.error_type {
        Some(t) => format!(
            "invocation {} ended with status {status} ({t})",
            inv.request_id
        ),
        None => format!("invocation {} ended with status {status}", inv.request_id),
    });
    e.request_id = Some(Arc::from(inv.request_id.as_str()));
    e.trace_id = inv.trace_id.as_deref().and_then(xray_trace_id);
    let a = &mut e.attributes;
    a.push(("aws.lambda.status".into(), status.into()));
    if let Some(t) = o.error_type {
        a.push(("error.type".into(), t.into()));
    }
    if let Some(ms) = duration_ms {
        a.push(("faas.invoke_duration".into(), AttrValue::Float(ms / 1000.0)));
    }
    a.push(("faas.coldstart".into(), AttrValue::Bool(inv.cold_start)));
    if o.out_of_memory {
        a.push(("aws.lambda.out_of_memory".into(), AttrValue::Bool(true)));
    }
    if let Some(user) = user_of(&inv.request_id) {
        a.push(("enduser.id".into(), AttrValue::Str(user)));
    }
    if let Some(v) = &inv.version {
        a.push(("faas.version".into(), v.as_str().into()));
    }
    if let Some(t) = &inv.tenant_id {
        a.push(("aws.lambda.tenant_id".into(), t.as_str().into()));
    }
    if inv.evicted {
        a.push(("aws.lambda.report_missing".into(), AttrValue::Bool(true)));
    }
    e
}

/// An init or restore phase that did not succeed, as an error event.
fn phase_error(phase: &PhaseInfo, now_ns: u64) -> Option<Event> {
    let status = phase.status.as_deref()?;
    if status.eq_ignore_ascii_case("success") {
        return None;
    }
    let mut e = Event::new(Kind::InvocationError, now_ns);
    e.severity = Severity::Error;
    e.body = Body::Text(match phase.error_type.as_deref() {
        Some(t) => format!("{} phase ended with status {status} ({t})", phase.kind),
        None => format!("{} phase ended with status {status}", phase.kind),
    });
    let a = &mut e.attributes;
    a.push(("aws.lambda.phase".into(), phase.kind.into()));
    a.push(("aws.lambda.status".into(), status.into()));
    if let Some(t) = &phase.error_type {
        a.push(("error.type".into(), t.as_str().into()));
    }
    if let Some(ms) = phase.duration_ms {
        a.push(("faas.init_duration".into(), AttrValue::Float(ms / 1000.0)));
    }
    Some(e)
}

fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::{ReportInfo, RuntimeDoneInfo};

    fn done(status: &str, error_type: Option<&str>, ms: f64, bytes: u64) -> RuntimeDoneInfo {
        RuntimeDoneInfo {
            status: status.into(),
            error_type: error_type.map(Into::into),
            duration_ms: Some(ms),
            produced_bytes: Some(bytes),
            spans: Vec::new(),
        }
    }

    fn report(
        status: &str,
        error_type: Option<&str>,
        ms: f64,
        billed: u64,
        used: u64,
    ) -> ReportInfo {
        ReportInfo {
            status: Some(status.into()),
            error_type: error_type.map(Into::into),
            duration_ms: Some(ms),
            billed_duration_ms: Some(billed),
            memory_size_mb: Some(128),
            max_memory_used_mb: Some(used),
            init_duration_ms: None,
            restore_duration_ms: None,
            spans: Vec::new(),
        }
    }

    fn inv(id: &str, cold: bool, d: Option<RuntimeDoneInfo>, r: Option<ReportInfo>) -> Invocation {
        Invocation {
            request_id: id.into(),
            start: true,
            start_time: Some("2022-10-12T00:00:15.064Z".into()),
            trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into()),
            cold_start: cold,
            runtime_done: d,
            report: r,
            ..Invocation::default()
        }
    }

    fn counter(f: &Folded, name: &str) -> u64 {
        f.counters
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.value)
            .sum()
    }

    fn drained() -> Drained {
        Drained {
            invocations: vec![
                // Cold, successful (documented report shape).
                inv(
                    "ok-cold",
                    true,
                    Some(done("success", None, 140.0, 16)),
                    Some(report("success", None, 693.92, 694, 84)),
                ),
                // Warm, the function threw.
                inv(
                    "err",
                    false,
                    Some(done(
                        "error",
                        Some("Runtime.UnhandledPromiseRejection"),
                        20.0,
                        0,
                    )),
                    Some(report(
                        "error",
                        Some("Runtime.UnhandledPromiseRejection"),
                        25.5,
                        26,
                        90,
                    )),
                ),
                // Timed out: runtimeDone without metrics, report with them.
                inv(
                    "slow",
                    false,
                    Some(RuntimeDoneInfo {
                        status: "timeout".into(),
                        error_type: Some("Sandbox.Timeout".into()),
                        duration_ms: None,
                        produced_bytes: None,
                        spans: Vec::new(),
                    }),
                    Some(report(
                        "timeout",
                        Some("Sandbox.Timeout"),
                        3000.0,
                        3000,
                        100,
                    )),
                ),
                // The runtime crashed out of memory.
                inv(
                    "oom",
                    false,
                    Some(done("failure", Some("Runtime.OutOfMemory"), 50.0, 0)),
                    Some(report(
                        "failure",
                        Some("Runtime.OutOfMemory"),
                        51.0,
                        52,
                        128,
                    )),
                ),
            ],
            phases: vec![
                PhaseInfo {
                    kind: "init",
                    initialization_type: Some("on-demand".into()),
                    phase: Some("init".into()),
                    status: Some("success".into()),
                    error_type: None,
                    duration_ms: Some(397.68),
                },
                PhaseInfo {
                    kind: "restore",
                    initialization_type: Some("snap-start".into()),
                    phase: Some("restore".into()),
                    status: Some("success".into()),
                    error_type: None,
                    duration_ms: Some(15.19),
                },
            ],
        }
    }

    fn series<'a>(
        agg: &'a Aggregator,
        name: &'static str,
        unit: Unit,
    ) -> &'a crate::aggregate::Histogram {
        agg.get(&key(name, unit))
            .unwrap_or_else(|| panic!("series {name} missing"))
    }

    #[test]
    fn counters_from_documented_shapes() {
        let mut agg = Aggregator::new(100);
        let f = fold(&drained(), &|_| None, 7, &mut agg);
        assert_eq!(counter(&f, INVOCATIONS), 4);
        assert_eq!(counter(&f, ERRORS), 2, "error and failure");
        assert_eq!(counter(&f, TIMEOUTS), 1);
        assert_eq!(counter(&f, COLDSTARTS), 1);
        assert_eq!(counter(&f, CRASHES), 1);
        assert_eq!(counter(&f, OUT_OF_MEMORY), 1);
    }

    #[test]
    fn distributions_in_seconds_and_bytes() {
        let mut agg = Aggregator::new(100);
        fold(&drained(), &|_| None, 7, &mut agg);
        let h = series(&agg, INVOKE_DURATION, Unit::Seconds);
        assert_eq!(h.count(), 4);
        assert!(
            (h.sum() - (0.69392 + 0.0255 + 3.0 + 0.051)).abs() < 1e-9,
            "{}",
            h.sum()
        );
        let h = series(&agg, BILLED_DURATION, Unit::Seconds);
        assert!((h.sum() - (0.694 + 0.026 + 3.0 + 0.052)).abs() < 1e-9);
        let h = series(&agg, MEM_USAGE, Unit::Bytes);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), (84 + 90 + 100 + 128) as f64 * MIB);
        let h = series(&agg, PRODUCED_BYTES, Unit::Bytes);
        assert_eq!((h.count(), h.sum()), (3, 16.0));
        let h = series(&agg, INIT_DURATION, Unit::Seconds);
        assert_eq!(h.count(), 1);
        assert!((h.sum() - 0.39768).abs() < 1e-9);
        let h = series(&agg, RESTORE_DURATION, Unit::Seconds);
        assert!((h.sum() - 0.01519).abs() < 1e-9);
        assert_eq!(agg.len(), 6);
    }

    #[test]
    fn failed_invocations_become_error_events_with_the_user() {
        let mut agg = Aggregator::new(100);
        let user_of = |id: &str| (id == "err").then(|| "user-42".to_string());
        let f = fold(&drained(), &user_of, 7, &mut agg);
        let ids: Vec<&str> = f
            .events
            .iter()
            .filter_map(|e| e.request_id.as_deref())
            .collect();
        assert_eq!(ids, ["err", "slow", "oom"]);
        let e = &f.events[0];
        assert_eq!(e.kind, Kind::InvocationError);
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.trace_id.map(|t| t[0]), Some(0x57));
        assert_eq!(e.time_unix_nano, 1_665_532_815_064_000_000);
        let attr = |e: &Event, k: &str| {
            e.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            attr(e, "enduser.id"),
            Some(AttrValue::Str("user-42".into()))
        );
        assert_eq!(attr(e, "aws.lambda.status"), Some("error".into()));
        assert_eq!(
            attr(e, "error.type"),
            Some("Runtime.UnhandledPromiseRejection".into())
        );
        assert_eq!(attr(e, "faas.coldstart"), Some(AttrValue::Bool(false)));
        assert_eq!(
            attr(e, "faas.invoke_duration"),
            Some(AttrValue::Float(0.0255))
        );
        assert_eq!(attr(&f.events[1], "enduser.id"), None);
        assert_eq!(
            attr(&f.events[2], "aws.lambda.out_of_memory"),
            Some(AttrValue::Bool(true))
        );
    }

    #[test]
    fn outcome_rules() {
        let mut i = inv("a", false, Some(done("success", None, 1.0, 1)), None);
        let o = outcome(&i);
        assert!(!o.failed && !o.error && o.status == Some("success"));
        // Memory full counts as probable OOM even with another error type.
        i.report = Some(report("error", Some("Runtime.ExitError"), 1.0, 1, 128));
        let o = outcome(&i);
        assert!(o.failed && o.error && o.out_of_memory && !o.crash);
        // The report's status wins over runtimeDone's.
        i.runtime_done = Some(done("error", None, 1.0, 1));
        i.report = Some(report("timeout", None, 1.0, 1, 1));
        assert!(outcome(&i).timeout);
        // No status at all (evicted before anything arrived): not a failure.
        let bare = Invocation {
            request_id: "x".into(),
            evicted: true,
            ..Invocation::default()
        };
        assert!(!outcome(&bare).failed);
        // Logs API: platform.end gives status `end`.
        let end = inv("e", false, Some(done("end", None, 1.0, 1)), None);
        assert!(!outcome(&end).failed);
        assert!(names_out_of_memory("Runtime.OOM"));
        assert!(names_out_of_memory("java.lang.OutOfMemoryError"));
        assert!(!names_out_of_memory("Runtime.Zoom"));
    }

    #[test]
    fn failed_init_phase_is_an_error_event() {
        let d = Drained {
            invocations: Vec::new(),
            phases: vec![PhaseInfo {
                kind: "init",
                initialization_type: None,
                phase: Some("init".into()),
                status: Some("error".into()),
                error_type: Some("Runtime.ImportModuleError".into()),
                duration_ms: Some(12.0),
            }],
        };
        let mut agg = Aggregator::new(10);
        let f = fold(&d, &|_| None, 99, &mut agg);
        assert!(f.counters.is_empty());
        assert_eq!(f.events.len(), 1);
        assert_eq!(f.events[0].time_unix_nano, 99);
        assert!(matches!(&f.events[0].body, Body::Text(t) if t.contains("ImportModuleError")));
    }
}
