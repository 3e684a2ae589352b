//! The telemetry listener: the HTTP server Lambda POSTs event batches to.
//!
//! In: POSTs (PUTs for the Logs API) from Lambda, one JSON array of events each. Out: platform
//! events offered to a [`PlatformSink`] (the invocation tracker), `function`/`extension` lines
//! put on a bounded [`LogQueue`], counters in [`Stats`].
//!
//! It answers 200 to every request, even one it cannot use: a 4xx makes Lambda resend the same
//! batch again and again. Nothing here awaits downstream work: a full queue drops and counts.
//! The socket is bound once, before the subscription, and kept for the life of the process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::events::{Event, LogLine, Platform, PlatformEvent, Start, decode_batch};
use super::stats::Stats;
use crate::event::xray_trace_id;

/// Bodies over this are drained, counted and dropped (Lambda sends at most `2 * maxBytes` plus
/// metadata; loupe asks for 256 KiB batches and Lambda's ceiling is 1 MiB).
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// The most a body's announced length reserves up front (Lambda's largest batch).
const MAX_HINTED_BYTES: usize = 1 << 20;
/// Connections served at once; Lambda uses one. More are closed at once. With the body cap this
/// bounds the listener's buffers to `MAX_CONNECTIONS * MAX_BODY_BYTES`.
const MAX_CONNECTIONS: usize = 8;

/// Where platform events go. Must not block: return `false` to have the event counted as
/// dropped.
pub trait PlatformSink: Send + Sync + 'static {
    fn offer(&self, event: Box<PlatformEvent>) -> bool;
}

/// The bounded queue of log lines towards the log and metric pipeline, capped both in lines
/// and in bytes.
#[derive(Clone, Debug)]
pub struct LogQueue {
    tx: mpsc::Sender<LogLine>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The consuming end of a [`LogQueue`].
#[derive(Debug)]
pub struct LogReceiver {
    rx: mpsc::Receiver<LogLine>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A queue holding at most `max_lines` lines and about `max_bytes` bytes of records.
pub fn log_queue(max_lines: usize, max_bytes: usize) -> (LogQueue, LogReceiver) {
    let (tx, rx) = mpsc::channel(max_lines.max(1));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        LogQueue {
            tx,
            queued_bytes: queued_bytes.clone(),
            max_bytes,
        },
        LogReceiver { rx, queued_bytes },
    )
}

impl LogQueue {
    /// Queues a line without waiting; `false` when the queue is full (lines or bytes).
    pub fn try_send(&self, line: LogLine) -> bool {
        let size = line.size;
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_bytes {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(_) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                false
            }
        }
    }
}

impl LogReceiver {
    /// The next line; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<LogLine> {
        let line = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(line.size, Ordering::Relaxed);
        Some(line)
    }
}

/// What the listener hands decoded events to.
pub struct Intake {
    pub stats: Arc<Stats>,
    pub platform: Box<dyn PlatformSink>,
    pub logs: LogQueue,
    /// The latest `platform.start` decoded, kept across batches, to annotate the log lines
    /// that follow it.
    pub latest_start: LatestStart,
}

/// The request id and trace id of the latest `platform.start` the intake decoded.
#[derive(Debug, Default)]
pub struct LatestStart(Mutex<Option<StartIds>>);

/// A request id and, when its start carried a valid X-Ray header, its trace id.
type StartIds = (Arc<str>, Option<[u8; 16]>);

impl LatestStart {
    fn set(&self, start: &Start) {
        let trace = start
            .tracing
            .as_ref()
            .and_then(|t| t.value.as_deref())
            .and_then(xray_trace_id);
        let value = Some((Arc::from(start.request_id.as_str()), trace));
        // A panic while the lock was held cannot leave the pair half-written: take it anyway.
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    fn get(&self) -> Option<StartIds> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Intake {
    pub fn new(stats: Arc<Stats>, platform: Box<dyn PlatformSink>, logs: LogQueue) -> Intake {
        Intake {
            stats,
            platform,
            logs,
            latest_start: LatestStart::default(),
        }
    }

    /// Decodes one body and routes every event; never waits. Each log line is annotated with
    /// the request of the latest `platform.start` before it (events in a batch are in order).
    pub fn accept(&self, body: &[u8]) {
        let mut latest = self.latest_start.get();
        for event in decode_batch(body, &self.stats) {
            match event {
                Event::Platform(p) => {
                    if let Platform::Start(s) = &p.kind {
                        self.latest_start.set(s);
                        latest = self.latest_start.get();
                    }
                    if let Platform::LogsDropped(d) = &p.kind {
                        self.stats.lambda_dropped(
                            d.dropped_records.unwrap_or(0),
                            d.dropped_bytes.unwrap_or(0),
                        );
                        log::warn!(
                            "Lambda dropped {} telemetry records ({} bytes): {}",
                            d.dropped_records.unwrap_or(0),
                            d.dropped_bytes.unwrap_or(0),
                            d.reason.as_deref().unwrap_or("no reason given")
                        );
                    }
                    if !self.platform.offer(p) {
                        self.stats.platform_event_dropped();
                    }
                }
                Event::Log(mut line) => {
                    if let Some((request_id, trace_id)) = &latest {
                        line.request_id = Some(request_id.clone());
                        line.trace_id = *trace_id;
                    }
                    if !self.logs.try_send(line) {
                        self.stats.log_line_dropped();
                    }
                }
            }
        }
    }
}

/// Binds the listener on `0.0.0.0:port` (0 picks a free port).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

/// Serves the listener until the task is aborted. A panic in one connection's task is logged;
/// the listener goes on.
pub fn spawn(listener: TcpListener, intake: Arc<Intake>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) if conns.len() < MAX_CONNECTIONS => {
                        conns.spawn(serve_connection(stream, intake.clone()));
                    }
                    Ok(_) => log::warn!("telemetry listener: over {MAX_CONNECTIONS} connections, one closed"),
                    Err(e) => {
                        // Typically out of file descriptors: give the system a moment.
                        log::warn!("telemetry listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = done {
                        log::error!("telemetry connection task failed: {e}");
                    }
                }
            }
        }
    })
}

async fn serve_connection(stream: TcpStream, intake: Arc<Intake>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(req, intake.clone()));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        log::debug!("telemetry connection ended: {e}");
    }
}

async fn handle(
    req: Request<Incoming>,
    intake: Arc<Intake>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Sized once from the announced length, within what Lambda sends at most (the length is
    // only a hint: the cap below is what bounds the buffer).
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = req.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(announced.min(MAX_HINTED_BYTES));
    let mut oversized = false;
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                if oversized {
                    continue; // drain
                }
                if buf.len().saturating_add(data.len()) > MAX_BODY_BYTES {
                    oversized = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(&data);
                }
            }
            Err(e) => {
                log::debug!("telemetry body read failed: {e}");
                failed = true;
                break;
            }
        }
    }
    if oversized {
        intake.stats.oversized_body();
        log::warn!("telemetry body over {MAX_BODY_BYTES} bytes dropped");
    } else if failed {
        intake.stats.malformed_body();
    } else {
        intake.accept(&buf);
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::events::LogRecord;

    struct Collect(std::sync::Mutex<Vec<PlatformEvent>>);
    impl PlatformSink for Arc<Collect> {
        fn offer(&self, event: Box<PlatformEvent>) -> bool {
            self.0.lock().unwrap().push(*event);
            true
        }
    }

    fn line(s: &str) -> LogLine {
        LogLine {
            time_ms: None,
            source: super::super::events::LogSource::Function,
            record: LogRecord::Text(s.into()),
            size: s.len(),
            request_id: None,
            trace_id: None,
        }
    }

    #[tokio::test]
    async fn log_queue_caps_lines_and_bytes() {
        let (q, mut rx) = log_queue(2, 10);
        assert!(q.try_send(line("12345")));
        assert!(!q.try_send(line("123456")), "over the byte cap");
        assert!(q.try_send(line("12345")));
        assert!(!q.try_send(line("")), "over the line cap");
        assert_eq!(rx.recv().await.map(|l| l.size), Some(5));
        assert!(q.try_send(line("1234")));
    }

    #[test]
    fn intake_routes_and_counts_drops() {
        let collected = Arc::new(Collect(Default::default()));
        let (logs, _rx) = log_queue(1, 1 << 20);
        let intake = Intake {
            stats: Arc::new(Stats::default()),
            platform: Box::new(collected.clone()),
            logs,
            latest_start: LatestStart::default(),
        };
        intake.accept(
            br#"[{"time":"t","type":"function","record":"a"},
                 {"time":"t","type":"function","record":"b"},
                 {"time":"t","type":"platform.start","record":{"requestId":"r"}},
                 {"time":"t","type":"platform.logsDropped","record":{"droppedBytes":10,"droppedRecords":2,"reason":"slow"}}]"#,
        );
        assert_eq!(collected.0.lock().unwrap().len(), 2);
        let s = intake.stats.snapshot();
        assert_eq!(s.log_lines_dropped, 1);
        assert_eq!(s.lambda_dropped_records, 2);
        assert_eq!(s.lambda_dropped_bytes, 10);
    }

    #[tokio::test]
    async fn log_lines_carry_the_latest_start_across_batches() {
        let collected = Arc::new(Collect(Default::default()));
        let (logs, mut rx) = log_queue(16, 1 << 20);
        let intake = Intake::new(
            Arc::new(Stats::default()),
            Box::new(collected.clone()),
            logs,
        );
        intake.accept(br#"[{"time":"t","type":"function","record":"before any start"}]"#);
        intake.accept(
            br#"[{"time":"t","type":"platform.start","record":{"requestId":"r1",
                   "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"}}},
                 {"time":"t","type":"function","record":"in r1"},
                 {"time":"t","type":"platform.start","record":{"requestId":"r2"}},
                 {"time":"t","type":"function","record":"in r2"}]"#,
        );
        intake.accept(br#"[{"time":"t","type":"extension","record":"still r2"}]"#);
        let mut got = Vec::new();
        for _ in 0..4 {
            let line = rx.recv().await.expect("queued line");
            got.push((
                line.request_id.as_deref().map(str::to_string),
                line.trace_id.map(|t| t[0]),
            ));
        }
        assert_eq!(
            got,
            [
                (None, None),
                (Some("r1".to_string()), Some(0x57)),
                (Some("r2".to_string()), None),
                (Some("r2".to_string()), None),
            ]
        );
    }

    struct Panics;
    impl PlatformSink for Panics {
        fn offer(&self, _: Box<PlatformEvent>) -> bool {
            panic!("a bug downstream");
        }
    }

    /// POSTs `body` on a new connection; the status code, or `None` if the connection closed
    /// without an answer.
    async fn post(port: u16, body: &str) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!(
            "POST /telemetry HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp).await;
        String::from_utf8_lossy(&resp)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
    }

    #[tokio::test]
    async fn a_panic_while_serving_one_batch_leaves_the_listener_up() {
        let socket = bind(0).await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let (logs, _rx) = log_queue(16, 1 << 20);
        let intake = Arc::new(Intake {
            stats: Arc::new(Stats::default()),
            platform: Box::new(Panics),
            logs,
            latest_start: LatestStart::default(),
        });
        let task = spawn(socket, intake.clone());
        let wait = Duration::from_secs(30);
        let platform = r#"[{"time":"t","type":"platform.start","record":{"requestId":"r"}}]"#;
        let function = r#"[{"time":"t","type":"function","record":"line"}]"#;
        let first = tokio::time::timeout(wait, post(port, platform))
            .await
            .unwrap();
        assert_eq!(first, None, "the panicking request gets no answer");
        let second = tokio::time::timeout(wait, post(port, function))
            .await
            .unwrap();
        assert_eq!(second, Some(200));
        assert_eq!(intake.stats.snapshot().events.get("function"), Some(&1));
        assert!(!task.is_finished());
        task.abort();
    }

    #[tokio::test]
    async fn oversized_body_is_drained_and_answered_200() {
        let socket = bind(0).await.unwrap();
        let port = socket.local_addr().unwrap().port();
        let (logs, _rx) = log_queue(16, 1 << 20);
        let collected = Arc::new(Collect(Default::default()));
        let intake = Arc::new(Intake {
            stats: Arc::new(Stats::default()),
            platform: Box::new(collected),
            logs,
            latest_start: LatestStart::default(),
        });
        let task = spawn(socket, intake.clone());
        let big = format!("[{}]", "1,".repeat(MAX_BODY_BYTES / 2) + "1");
        let wait = Duration::from_secs(60);
        assert_eq!(
            tokio::time::timeout(wait, post(port, &big)).await.unwrap(),
            Some(200)
        );
        let s = intake.stats.snapshot();
        assert_eq!((s.oversized_bodies, s.batches), (1, 0));
        task.abort();
    }
}
