//! Telemetry and Logs API subscribers: validating a subscription the way Lambda does, buffering
//! each subscriber's records under its limits, cutting batches, and POSTing them.
//!
//! In: a subscription body, then [`Record`]s as the sandbox emits them. Out: JSON-array batches
//! POSTed to the subscriber's listener on 127.0.0.1 (`sandbox.localdomain` maps there), with
//! bounded retries; overflow and failed batches are counted and announced later with
//! `platform.logsDropped`. Everything but [`post_batch`] is pure.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::records::{self, Api, Kind, Record};

/// A subscriber's buffering limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Buffering {
    pub max_items: u32,
    pub max_bytes: u32,
    pub timeout_ms: u32,
}

/// A valid subscription request.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub api: Api,
    pub schema_version: String,
    pub types: Vec<String>,
    pub buffering: Buffering,
    pub port: u16,
    pub path: String,
}

/// Logs API schema versions.
pub const LOGS_SCHEMAS: [&str; 2] = ["2020-08-15", "2021-03-18"];

/// Validates a subscription body as Lambda does; `Err` carries the ValidationError message.
pub fn parse_subscription(
    body: &[u8],
    api: Api,
    accepted: &[String],
) -> Result<Subscription, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("body is not a JSON object")?;
    let schema_version = match (api, obj.get("schemaVersion")) {
        (_, Some(Value::String(s))) => s.clone(),
        (Api::Logs, None) => LOGS_SCHEMAS[0].to_string(),
        (Api::Telemetry, None) => return Err("schemaVersion is required".into()),
        _ => return Err("schemaVersion must be a string".into()),
    };
    let schema_ok = match api {
        Api::Telemetry => accepted.contains(&schema_version),
        Api::Logs => LOGS_SCHEMAS.contains(&schema_version.as_str()),
    };
    if !schema_ok {
        return Err(format!("schemaVersion {schema_version:?} is not supported"));
    }
    let types: Vec<String> = match obj.get("types") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|t| match t.as_str() {
                Some(s @ ("platform" | "function" | "extension")) => Ok(s.to_string()),
                _ => Err(format!("unknown type {t}")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("types must be a non-empty array".into()),
    };
    let default_items = if api == Api::Logs { 10_000 } else { 1_000 };
    let b = obj.get("buffering");
    let field = |name: &str, default: u64, min: u64, max: u64| -> Result<u32, String> {
        match b.and_then(|b| b.get(name)) {
            None => Ok(default as u32),
            Some(x) => match x.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n as u32),
                _ => Err(format!(
                    "buffering.{name} must be an integer from {min} to {max}"
                )),
            },
        }
    };
    let buffering = Buffering {
        max_items: field("maxItems", default_items, 1_000, 10_000)?,
        max_bytes: field("maxBytes", 262_144, 262_144, 1_048_576)?,
        timeout_ms: field("timeoutMs", 1_000, 25, 30_000)?,
    };
    let dest = obj.get("destination").ok_or("destination is required")?;
    match dest.get("protocol").and_then(Value::as_str) {
        Some("HTTP") => {}
        Some("TCP") => return Err("TCP destinations are not supported by loupe-local".into()),
        _ => return Err("destination.protocol must be HTTP".into()),
    }
    let uri = dest
        .get("URI")
        .and_then(Value::as_str)
        .ok_or("destination.URI is required")?;
    let (port, path) = parse_destination(uri)?;
    Ok(Subscription {
        api,
        schema_version,
        types,
        buffering,
        port,
        path,
    })
}

/// `http://sandbox.localdomain:PORT/path` (or host `sandbox`) → (port, path).
fn parse_destination(uri: &str) -> Result<(u16, String), String> {
    let rest = uri
        .strip_prefix("http://")
        .ok_or_else(|| format!("destination URI {uri:?} must use http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("destination URI {uri:?} has a bad port"))?,
        ),
        None => (authority, 80),
    };
    if host != "sandbox.localdomain" && host != "sandbox" {
        return Err(format!(
            "destination host must be sandbox.localdomain, not {host:?}"
        ));
    }
    Ok((port, path.to_string()))
}

/// One batch cut from a subscriber's queue.
#[derive(Debug)]
pub struct Batch {
    pub body: Bytes,
    pub records: u64,
}

/// Delivery counters of one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub delivered_records: u64,
    pub delivered_batches: u64,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    pub failed_batches: u64,
}

/// One extension's subscription and its buffer.
#[derive(Debug)]
pub struct Subscriber {
    pub extension: String,
    pub sub: Subscription,
    /// Rendered records with the time each was queued.
    queue: VecDeque<(Instant, String)>,
    queued_bytes: usize,
    pub in_flight: bool,
    pub counters: Counters,
    /// Records and bytes lost since the last logsDropped this subscriber was told about.
    unannounced: (u64, u64),
}

impl Subscriber {
    pub fn new(extension: String, sub: Subscription) -> Self {
        Subscriber {
            extension,
            sub,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: false,
            counters: Counters::default(),
            unannounced: (0, 0),
        }
    }

    fn cap_items(&self) -> usize {
        self.sub.buffering.max_items as usize * 4
    }

    fn cap_bytes(&self) -> usize {
        self.sub.buffering.max_bytes as usize * 4
    }

    /// Queues the record if this subscriber takes it; counts it as dropped when the buffer is full.
    pub fn offer(&mut self, rec: &Record, now: Instant) {
        if !self
            .sub
            .types
            .iter()
            .any(|t| t == records::category(&rec.kind))
        {
            return;
        }
        if let Some(text) = records::render(rec, self.sub.api, &self.sub.schema_version) {
            self.push(text, now);
        }
        if let (Api::Logs, Kind::RuntimeDone { request_id, .. }) = (self.sub.api, &rec.kind) {
            self.push(records::logs_end(request_id, rec.time_ms), now);
        }
    }

    fn push(&mut self, text: String, now: Instant) {
        if self.queue.len() >= self.cap_items() || self.queued_bytes + text.len() > self.cap_bytes()
        {
            self.lose(1, text.len() as u64);
            return;
        }
        self.queued_bytes += text.len();
        self.queue.push_back((now, text));
    }

    fn lose(&mut self, records: u64, bytes: u64) {
        self.counters.dropped_records += records;
        self.counters.dropped_bytes += bytes;
        self.unannounced.0 += records;
        self.unannounced.1 += bytes;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.unannounced == (0, 0)
    }

    /// When the oldest queued record's timeoutMs runs out.
    pub fn deadline(&self) -> Option<Instant> {
        self.queue
            .front()
            .map(|(t, _)| *t + Duration::from_millis(u64::from(self.sub.buffering.timeout_ms)))
    }

    /// Whether a batch should go now: a limit is reached, timeoutMs passed, or `force`.
    pub fn due(&self, now: Instant, force: bool) -> bool {
        if self.in_flight || self.is_empty() {
            return false;
        }
        force
            || self.queue.len() >= self.sub.buffering.max_items as usize
            || self.queued_bytes >= self.sub.buffering.max_bytes as usize
            || self.deadline().is_some_and(|d| now >= d)
            || (self.queue.is_empty() && self.unannounced != (0, 0))
    }

    /// Cuts the next batch (at most maxItems records and about maxBytes) and marks it in flight.
    pub fn take_batch(&mut self, now_ms: u64) -> Option<Batch> {
        if self.in_flight || self.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = Vec::new();
        let mut size = 2usize;
        if self.unannounced != (0, 0) && self.sub.types.iter().any(|t| t == "platform") {
            let notice = Record {
                time_ms: now_ms,
                kind: Kind::LogsDropped {
                    dropped_bytes: self.unannounced.1,
                    dropped_records: self.unannounced.0,
                    reason: records::SLOW_CONSUMER,
                },
            };
            if let Some(t) = records::render(&notice, self.sub.api, &self.sub.schema_version) {
                size += t.len() + 1;
                parts.push(t);
            }
        }
        self.unannounced = (0, 0);
        while let Some((_, front)) = self.queue.front() {
            let full = parts.len() >= self.sub.buffering.max_items as usize
                || (size + front.len() > self.sub.buffering.max_bytes as usize
                    && !parts.is_empty());
            if full {
                break;
            }
            size += front.len() + 1;
            self.queued_bytes -= front.len();
            if let Some((_, t)) = self.queue.pop_front() {
                parts.push(t);
            }
        }
        if parts.is_empty() {
            return None;
        }
        self.in_flight = true;
        let body = format!("[{}]", parts.join(","));
        Some(Batch {
            body: Bytes::from(body),
            records: parts.len() as u64,
        })
    }

    /// Counts everything still queued as dropped and empties the queue (the environment ends).
    pub fn abandon(&mut self) {
        let records = self.queue.len() as u64;
        let bytes = self.queued_bytes as u64;
        self.queue.clear();
        self.queued_bytes = 0;
        if records > 0 {
            self.lose(records, bytes);
        }
    }

    /// Records the outcome of the batch in flight.
    pub fn finished(&mut self, records: u64, bytes: u64, ok: bool) {
        self.in_flight = false;
        if ok {
            self.counters.delivered_records += records;
            self.counters.delivered_batches += 1;
        } else {
            self.counters.failed_batches += 1;
            self.lose(records, bytes);
        }
    }
}

/// Attempts per batch before it is dropped, and the wait before each retry.
pub const RETRY_BACKOFF_MS: [u64; 2] = [50, 200];
/// How long one POST may take.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// POSTs one batch to `127.0.0.1:port path`, retrying a refused connection, a timeout or a
/// non-2xx answer a bounded number of times. Returns whether the subscriber acknowledged it.
pub async fn post_batch(port: u16, path: String, body: Bytes) -> bool {
    for attempt in 0..=RETRY_BACKOFF_MS.len() {
        let ok = matches!(
            tokio::time::timeout(POST_TIMEOUT, post_once(port, &path, body.clone())).await,
            Ok(Ok(s)) if (200..300).contains(&s)
        );
        if ok {
            return true;
        }
        match RETRY_BACKOFF_MS.get(attempt) {
            Some(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            None => break,
        }
    }
    false
}

async fn post_once(
    port: u16,
    path: &str,
    body: Bytes,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(path)
        .header("host", format!("sandbox.localdomain:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    // Drain the answer (bounded by the POST timeout around this call).
    let _ = resp.into_body().collect().await;
    driver.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::records::LogLine;

    fn schemas() -> Vec<String> {
        vec!["2022-12-13".into(), "2025-01-29".into()]
    }

    fn body(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn accepts_a_documented_subscription() {
        let s = parse_subscription(
            &body(r#"{"schemaVersion":"2022-12-13","types":["platform","function"],
              "buffering":{"maxItems":1000,"maxBytes":262144,"timeoutMs":25},
              "destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:8080/telemetry"}}"#),
            Api::Telemetry,
            &schemas(),
        )
        .unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.path, "/telemetry");
        assert_eq!(
            s.buffering,
            Buffering {
                max_items: 1000,
                max_bytes: 262_144,
                timeout_ms: 25
            }
        );
        let s = parse_subscription(
            &body(r#"{"types":["function"],"destination":{"protocol":"HTTP","URI":"http://sandbox:81"}}"#),
            Api::Logs,
            &schemas(),
        )
        .unwrap();
        assert_eq!(
            (s.port, s.path.as_str(), s.schema_version.as_str()),
            (81, "/", "2020-08-15")
        );
        assert_eq!(s.buffering.max_items, 10_000);
    }

    #[test]
    fn refuses_what_lambda_refuses() {
        let t = |s: &str| parse_subscription(s.as_bytes(), Api::Telemetry, &schemas());
        let dest = r#""destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1/"}"#;
        assert!(
            t(&format!(
                r#"{{"schemaVersion":"2022-07-01","types":["platform"],{dest}}}"#
            ))
            .is_err()
        );
        assert!(
            t(&format!(
                r#"{{"schemaVersion":"2022-12-13","types":[],{dest}}}"#
            ))
            .is_err()
        );
        assert!(
            t(&format!(
                r#"{{"schemaVersion":"2022-12-13","types":["bogus"],{dest}}}"#
            ))
            .is_err()
        );
        for b in [
            r#"{"timeoutMs":24}"#,
            r#"{"timeoutMs":30001}"#,
            r#"{"maxBytes":262143}"#,
            r#"{"maxBytes":1048577}"#,
            r#"{"maxItems":999}"#,
            r#"{"maxItems":10001}"#,
        ] {
            let e = t(&format!(
                r#"{{"schemaVersion":"2022-12-13","types":["platform"],"buffering":{b},{dest}}}"#
            ));
            assert!(e.is_err(), "{b}");
        }
        assert!(t(r#"{"schemaVersion":"2022-12-13","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://example.com:1/"}}"#).is_err());
        assert!(t(r#"{"schemaVersion":"2022-12-13","types":["platform"],"destination":{"protocol":"TCP","port":1}}"#).is_err());
        assert!(t("not json").is_err());
    }

    fn sub(max_items: u32, timeout_ms: u32) -> Subscriber {
        Subscriber::new(
            "ext".into(),
            Subscription {
                api: Api::Telemetry,
                schema_version: "2022-12-13".into(),
                types: vec!["platform".into(), "function".into()],
                buffering: Buffering {
                    max_items,
                    max_bytes: 262_144,
                    timeout_ms,
                },
                port: 1,
                path: "/".into(),
            },
        )
    }

    fn line(text: &str) -> Record {
        Record {
            time_ms: 0,
            kind: Kind::Function(LogLine {
                text: text.into(),
                object: None,
            }),
        }
    }

    #[test]
    fn batches_on_timeout_and_items_and_counts_overflow() {
        let now = Instant::now();
        let mut s = sub(1000, 100);
        s.offer(&line("a"), now);
        assert!(!s.due(now, false));
        assert!(s.due(now + Duration::from_millis(100), false));
        let b = s.take_batch(0).unwrap();
        assert_eq!(b.records, 1);
        let v: Value = serde_json::from_slice(&b.body).unwrap();
        assert_eq!(v[0]["type"], "function");
        assert_eq!(v[0]["record"], "a");
        assert!(s.take_batch(0).is_none(), "one batch in flight at a time");
        s.finished(1, b.body.len() as u64, true);
        assert_eq!(s.counters.delivered_records, 1);

        for i in 0..4001 {
            s.offer(&line(&i.to_string()), now);
        }
        assert_eq!(
            s.counters.dropped_records, 1,
            "queue capped at 4 x maxItems"
        );
        assert!(s.due(now, false), "maxItems reached");
        let b = s.take_batch(0).unwrap();
        assert_eq!(b.records, 1000, "maxItems, the logsDropped notice included");
        let v: Value = serde_json::from_slice(&b.body).unwrap();
        assert_eq!(v[0]["type"], "platform.logsDropped");
        assert_eq!(v[0]["record"]["droppedRecords"], 1);
        s.finished(b.records, b.body.len() as u64, false);
        assert_eq!(s.counters.failed_batches, 1);
        assert_eq!(s.counters.dropped_records, 1001);
    }

    #[test]
    fn abandoned_records_are_counted() {
        let mut s = sub(1000, 25);
        s.offer(&line("a"), Instant::now());
        s.offer(&line("b"), Instant::now());
        s.abandon();
        assert_eq!(s.counters.dropped_records, 2);
        assert!(s.counters.dropped_bytes > 0);
        assert!(
            s.take_batch(0).is_some_and(|b| b.records == 1),
            "only the notice is left"
        );
    }

    #[test]
    fn skips_types_not_subscribed() {
        let mut s = sub(1000, 25);
        s.offer(
            &Record {
                time_ms: 0,
                kind: Kind::ExtensionLog(LogLine {
                    text: "x".into(),
                    object: None,
                }),
            },
            Instant::now(),
        );
        assert!(s.is_empty());
    }
}
