//! Spans: one server span per completed invocation; the platform's own phases inside it
//! (`responseLatency`, `responseDuration`, `runtimeOverhead`, `extensionOverhead`) become
//! attributes of that span (`aws.lambda.response_latency_ms`, ...), not spans of their own: one
//! span per invocation keeps a backend's per-span cost to what the user asked for.
//!
//! In: the tracker's [`Invocation`] records (platform.start time and X-Ray trace header,
//! runtimeDone and report with their durations, statuses and `spans`) and, where the pipeline
//! knows it, the user the invocation served. Out: [`Span`]s for the batch, encoded by `export` as
//! OTLP spans (or NDJSON `span` lines). Pure functions; no I/O.
//!
//! # Identity
//! * Trace id: the X-Ray `Root` (`1-5759e988-bd862e3fe1be46a994272793` → the 32 hex digits), so
//!   loupe's spans join the trace X-Ray and the caller see; without a trace header, the request id's
//!   own 32 hex digits (a UUID), or a hash of it. Log records of the invocation carry the same id.
//! * The span id is derived from the request id: a span sent twice (a retry after a freeze) has
//!   the same ids, so a backend can drop the copy.
//! * Parent: the X-Ray `Parent` of the trace header (the caller's segment).
//!
//! An invocation without a `platform.start` time or any duration has no place on a timeline and
//! gives no span.

use crate::clock::parse_rfc3339_ms;
use crate::event::AttrValue;
use crate::invocation::Invocation;

/// What a span stands for (OTLP `SpanKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// The invocation as the function served it.
    Server,
    /// Work inside the invocation.
    Internal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// `Some(message)`: the span failed (OTLP status ERROR).
    pub error: Option<String>,
    /// X-Ray `Sampled=1`.
    pub sampled: bool,
    pub attributes: Vec<(String, AttrValue)>,
}

/// The parts of an X-Ray trace header (`Root=1-...;Parent=...;Sampled=...`) a span needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XRay {
    pub trace_id: Option<[u8; 16]>,
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

/// Reads an X-Ray trace header; fields that are missing or malformed are `None`.
pub fn parse_xray(header: &str) -> XRay {
    let mut x = XRay::default();
    for part in header.split(';') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "Root" => x.trace_id = xray_root(value),
            "Parent" => x.parent = hex_array::<8>(value).filter(|p| *p != [0; 8]),
            "Sampled" => x.sampled = value == "1",
            _ => {}
        }
    }
    x
}

/// `1-5759e988-bd862e3fe1be46a994272793` → 16 bytes (8 hex digits of time, 24 of random).
fn xray_root(root: &str) -> Option<[u8; 16]> {
    let rest = root.strip_prefix("1-")?;
    let (time, random) = rest.split_once('-')?;
    if time.len() != 8 || random.len() != 24 {
        return None;
    }
    let mut digits = String::with_capacity(32);
    digits.push_str(time);
    digits.push_str(random);
    hex_array::<16>(&digits).filter(|t| *t != [0; 16])
}

/// Exactly `2 * N` hex digits → N bytes.
fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        // Two hex digits: at most 255.
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// FNV-1a, 64 bits: a small, stable hash for derived ids.
fn fnv1a(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for part in parts {
        for &b in part.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A non-zero span id derived from the request id and the span's name.
fn span_id(request_id: &str, name: &str) -> [u8; 8] {
    let h = fnv1a(0, &[request_id, name]);
    if h == 0 {
        [0, 0, 0, 0, 0, 0, 0, 1]
    } else {
        h.to_be_bytes()
    }
}

/// The trace id of an invocation: the X-Ray root, else the request id as a UUID, else a hash.
pub fn trace_id(request_id: &str, xray: &XRay) -> [u8; 16] {
    if let Some(t) = xray.trace_id {
        return t;
    }
    let hex: String = request_id.chars().filter(|c| *c != '-').collect();
    if let Some(t) = hex_array::<16>(&hex).filter(|t| *t != [0; 16]) {
        return t;
    }
    let hi = fnv1a(1, &[request_id]).to_be_bytes();
    let lo = fnv1a(2, &[request_id]).to_be_bytes();
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&hi);
    t[8..].copy_from_slice(&lo);
    t
}

fn nanos(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        // Saturating float-to-int conversion: a wild duration cannot wrap.
        (ms * 1e6) as u64
    } else {
        0
    }
}

fn ms_to_unix_nano(ms: i64) -> Option<u64> {
    u64::try_from(ms).ok()?.checked_mul(1_000_000)
}

/// The span of one invocation (`name`, usually the function name), with the durations of the
/// platform's phases inside it as attributes, appended to `out`. `user` is the user the
/// invocation served, if known.
pub fn invocation_spans(inv: &Invocation, name: &str, user: Option<&str>, out: &mut Vec<Span>) {
    let Some(start_ms) = inv.start_time.as_deref().and_then(parse_rfc3339_ms) else {
        return;
    };
    let Some(start) = ms_to_unix_nano(start_ms) else {
        return;
    };
    let done = inv.runtime_done.as_ref();
    let report = inv.report.as_ref();
    let Some(duration_ms) = done
        .and_then(|d| d.duration_ms)
        .or_else(|| report.and_then(|r| r.duration_ms))
    else {
        return;
    };
    let xray = inv.trace_id.as_deref().map(parse_xray).unwrap_or_default();
    let trace = trace_id(&inv.request_id, &xray);
    let root = span_id(&inv.request_id, "");
    let status = done
        .map(|d| d.status.as_str())
        .or_else(|| report.and_then(|r| r.status.as_deref()))
        .unwrap_or("unknown");
    let error_type = done
        .and_then(|d| d.error_type.as_deref())
        .or_else(|| report.and_then(|r| r.error_type.as_deref()));

    let mut attributes: Vec<(String, AttrValue)> = vec![
        ("faas.invocation_id".into(), inv.request_id.as_str().into()),
        ("faas.coldstart".into(), AttrValue::Bool(inv.cold_start)),
        ("aws.lambda.status".into(), status.into()),
    ];
    if let Some(t) = error_type {
        attributes.push(("error.type".into(), t.into()));
    }
    if let Some(u) = user {
        attributes.push(("enduser.id".into(), u.into()));
    }
    if let Some(v) = &inv.version {
        attributes.push(("faas.version".into(), v.as_str().into()));
    }
    if let Some(ms) = report.and_then(|r| r.billed_duration_ms) {
        attributes.push((
            "aws.lambda.billed_duration_ms".into(),
            AttrValue::Int(i64::try_from(ms).unwrap_or(i64::MAX)),
        ));
    }
    if let Some(mb) = report.and_then(|r| r.max_memory_used_mb) {
        attributes.push((
            "aws.lambda.max_memory_used_mb".into(),
            AttrValue::Int(i64::try_from(mb).unwrap_or(i64::MAX)),
        ));
    }
    if inv.evicted {
        attributes.push(("aws.lambda.report_missing".into(), AttrValue::Bool(true)));
    }
    let error = (status != "success").then(|| match error_type {
        Some(t) => format!("{status}: {t}"),
        None => status.to_string(),
    });
    out.push(Span {
        trace_id: trace,
        span_id: root,
        parent_span_id: xray.parent,
        name: name.to_string(),
        kind: SpanKind::Server,
        start_unix_nano: start,
        end_unix_nano: start.saturating_add(nanos(duration_ms)),
        error,
        sampled: xray.sampled,
        attributes,
    });

    let phases = done
        .map(|d| d.spans.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(report.map(|r| r.spans.as_slice()).unwrap_or_default());
    if let Some(span) = out.last_mut() {
        for phase in phases.take(MAX_PHASES) {
            if let (Some(key), Some(ms)) = (phase_key(&phase.name), phase.duration_ms) {
                if ms.is_finite() && ms >= 0.0 {
                    span.attributes.push((key, AttrValue::Float(ms)));
                }
            }
        }
    }
}

/// Phases read per invocation (Lambda reports four).
const MAX_PHASES: usize = 8;

/// `responseLatency` → `aws.lambda.response_latency_ms`; `None` for a name that is not a short
/// ASCII identifier (the platform's input is untrusted).
fn phase_key(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 40 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut key = String::with_capacity(name.len() + 16);
    key.push_str("aws.lambda.");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            key.push('_');
            key.push(c.to_ascii_lowercase());
        } else {
            key.push(c);
        }
    }
    key.push_str("_ms");
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::{ReportInfo, RuntimeDoneInfo, SpanInfo};

    const HEADER: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn xray_header() {
        let x = parse_xray(HEADER);
        assert_eq!(
            x.trace_id.map(|t| hex(&t)).as_deref(),
            Some("5759e988bd862e3fe1be46a994272793")
        );
        assert_eq!(
            x.parent.map(|p| hex(&p)).as_deref(),
            Some("53995c3f42cd8ad8")
        );
        assert!(x.sampled);
        let partial = parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0");
        assert!(partial.trace_id.is_some() && partial.parent.is_none() && !partial.sampled);
    }

    #[test]
    fn malformed_headers_give_nothing() {
        for h in [
            "",
            "Root=",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e988-bd862e3fe1be46a99427279",
            "Root=1-5759e98g-bd862e3fe1be46a994272793",
            "Root=1-00000000-000000000000000000000000",
            "Parent=53995c3f42cd8ad",
            "Parent=0000000000000000",
            "Root=1-ééééééé-bd862e3fe1be46a994272793",
            ";;;==;",
        ] {
            let x = parse_xray(h);
            assert_eq!((x.trace_id, x.parent), (None, None), "{h:?}");
        }
    }

    #[test]
    fn trace_id_without_xray() {
        let uuid = "8476a536-e9f4-5f4d-be4d-6e1a9b1e0c1e";
        assert_eq!(
            hex(&trace_id(uuid, &XRay::default())),
            "8476a536e9f45f4dbe4d6e1a9b1e0c1e"
        );
        let odd = trace_id("req-1", &XRay::default());
        assert_ne!(odd, [0; 16]);
        assert_eq!(odd, trace_id("req-1", &XRay::default()), "stable");
        assert_ne!(odd, trace_id("req-2", &XRay::default()));
    }

    fn invocation() -> Invocation {
        Invocation {
            request_id: "8476a536-e9f4-5f4d-be4d-6e1a9b1e0c1e".into(),
            start: true,
            start_time: Some("2022-10-12T00:00:15.064Z".into()),
            version: Some("$LATEST".into()),
            trace_id: Some(HEADER.into()),
            cold_start: true,
            runtime_done: Some(RuntimeDoneInfo {
                status: "error".into(),
                error_type: Some("PaymentFailed".into()),
                duration_ms: Some(120.5),
                produced_bytes: None,
                spans: vec![SpanInfo {
                    name: "responseLatency".into(),
                    start: Some("2022-10-12T00:00:15.100Z".into()),
                    duration_ms: Some(23.0),
                }],
            }),
            report: Some(ReportInfo {
                status: Some("error".into()),
                error_type: None,
                duration_ms: Some(130.0),
                billed_duration_ms: Some(131),
                memory_size_mb: Some(128),
                max_memory_used_mb: Some(70),
                init_duration_ms: None,
                restore_duration_ms: None,
                spans: vec![SpanInfo {
                    name: "extensionOverhead".into(),
                    start: Some("2022-10-12T00:00:15.185Z".into()),
                    duration_ms: None,
                }],
            }),
            ..Invocation::default()
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a AttrValue> {
        s.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_failed_invocation_with_its_phases() {
        let mut out = Vec::new();
        invocation_spans(&invocation(), "checkout", Some("u-7"), &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        let root = &out[0];
        assert_eq!(root.name, "checkout");
        assert_eq!(root.kind, SpanKind::Server);
        assert_eq!(hex(&root.trace_id), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(
            root.parent_span_id.map(|p| hex(&p)).as_deref(),
            Some("53995c3f42cd8ad8")
        );
        let start = 1_665_532_815_064_000_000_u64;
        assert_eq!(root.start_unix_nano, start);
        // runtimeDone's duration (the function's own time), not the report's.
        assert_eq!(root.end_unix_nano, start + 120_500_000);
        assert_eq!(root.error.as_deref(), Some("error: PaymentFailed"));
        assert!(root.sampled);
        assert_eq!(
            attr(root, "enduser.id"),
            Some(&AttrValue::Str("u-7".into()))
        );
        assert_eq!(attr(root, "faas.coldstart"), Some(&AttrValue::Bool(true)));
        assert_eq!(
            attr(root, "faas.invocation_id"),
            Some(&AttrValue::Str(
                "8476a536-e9f4-5f4d-be4d-6e1a9b1e0c1e".into()
            ))
        );
        assert_eq!(
            attr(root, "aws.lambda.billed_duration_ms"),
            Some(&AttrValue::Int(131))
        );
        assert_eq!(
            attr(root, "aws.lambda.response_latency_ms"),
            Some(&AttrValue::Float(23.0))
        );
        // The extensionOverhead phase has no duration: no attribute for it.
        assert_eq!(attr(root, "aws.lambda.extension_overhead_ms"), None);
    }

    #[test]
    fn phase_names_are_checked() {
        assert_eq!(
            phase_key("runtimeOverhead").as_deref(),
            Some("aws.lambda.runtime_overhead_ms")
        );
        for bad in ["", "a.b", "x y", "é", &"a".repeat(41)] {
            assert_eq!(phase_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_are_stable_so_a_resent_span_can_be_deduplicated() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        invocation_spans(&invocation(), "f", None, &mut a);
        invocation_spans(&invocation(), "f", None, &mut b);
        assert_eq!(a, b);
        let mut other = invocation();
        other.request_id = "another".into();
        let mut c = Vec::new();
        invocation_spans(&other, "f", None, &mut c);
        assert_ne!(a[0].span_id, c[0].span_id);
    }

    #[test]
    fn success_without_xray_and_from_the_report_alone() {
        let mut inv = invocation();
        inv.trace_id = None;
        inv.runtime_done = None;
        if let Some(r) = inv.report.as_mut() {
            r.status = Some("success".into());
        }
        let mut out = Vec::new();
        invocation_spans(&inv, "f", None, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(hex(&out[0].trace_id), "8476a536e9f45f4dbe4d6e1a9b1e0c1e");
        assert_eq!(out[0].parent_span_id, None);
        assert_eq!(out[0].error, None);
        assert!(!out[0].sampled);
        assert_eq!(out[0].end_unix_nano - out[0].start_unix_nano, 130_000_000);
    }

    #[test]
    fn no_time_or_no_duration_no_span() {
        let mut out = Vec::new();
        let mut inv = invocation();
        inv.start_time = None;
        invocation_spans(&inv, "f", None, &mut out);
        let mut inv = invocation();
        inv.start_time = Some("yesterday".into());
        invocation_spans(&inv, "f", None, &mut out);
        let mut inv = invocation();
        inv.runtime_done = None;
        inv.report = None;
        invocation_spans(&inv, "f", None, &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }

    proptest::proptest! {
        /// Any header and request id: no panic, and the trace id is never all zeros.
        #[test]
        fn any_header_and_request_id(header in "\\PC{0,80}", id in "\\PC{0,60}") {
            let x = parse_xray(&header);
            proptest::prop_assert_ne!(trace_id(&id, &x), [0; 16]);
            if let Some(p) = x.parent {
                proptest::prop_assert_ne!(p, [0; 8]);
            }
        }

        /// A well-formed header always reads back.
        #[test]
        fn well_formed_headers_read_back(
            time in "[0-9a-f]{8}",
            random in "[0-9a-f]{24}",
            parent in "[0-9a-f]{16}",
            sampled in proptest::bool::ANY,
        ) {
            let h = format!("Root=1-{time}-{random};Parent={parent};Sampled={}", u8::from(sampled));
            let x = parse_xray(&h);
            let want_trace = format!("{time}{random}");
            if want_trace.bytes().any(|b| b != b'0') {
                proptest::prop_assert_eq!(x.trace_id.map(|t| hex(&t)), Some(want_trace));
            }
            if parent.bytes().any(|b| b != b'0') {
                proptest::prop_assert_eq!(x.parent.map(|p| hex(&p)), Some(parent));
            }
            proptest::prop_assert_eq!(x.sampled, sampled);
        }
    }

    #[test]
    fn wild_durations_saturate() {
        let mut inv = invocation();
        if let Some(d) = inv.runtime_done.as_mut() {
            d.duration_ms = Some(f64::MAX);
            d.spans[0].duration_ms = Some(f64::NAN);
        }
        let mut out = Vec::new();
        invocation_spans(&inv, "f", None, &mut out);
        assert_eq!(out[0].end_unix_nano, u64::MAX);
        assert_eq!(attr(&out[0], "aws.lambda.response_latency_ms"), None);
    }
}
