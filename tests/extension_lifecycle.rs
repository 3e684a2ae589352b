//! The `loupe` binary against a fake Lambda control plane written here: register, event/next
//! (driven by each test through a channel), Telemetry/Logs subscription with scripted answers.
//! Each test then posts telemetry batches to the destination loupe subscribed with and reads
//! loupe's stderr (`summary {json}` at SHUTDOWN, `invocation {json}` per invocation at debug).

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bound on every wait in these tests (generous: the machine may be busy).
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Seen {
    Register {
        name: String,
        events: Value,
    },
    Next {
        runtime_done_posted: bool,
        at_ms: u64,
    },
    Telemetry(Value),
    Logs(Value),
    ErrorReport {
        path: String,
        error_type: String,
    },
}

/// What the fake answers to subscription requests.
#[derive(Clone)]
struct Script {
    /// One answer per Telemetry attempt, in order; the last one repeats.
    telemetry: Vec<(u16, &'static str)>,
    logs: (u16, &'static str),
    /// Register is refused with this answer.
    register_refused: Option<(u16, &'static str)>,
    /// Every /event/next fails with a 500.
    next_fails: bool,
}

impl Script {
    fn accept_telemetry() -> Script {
        Script {
            telemetry: vec![(200, "\"OK\"")],
            logs: (200, "\"OK\""),
            register_refused: None,
            next_fails: false,
        }
    }
}

const REFUSED: (u16, &str) = (
    400,
    r#"{"errorType":"ValidationError","errorMessage":"schemaVersion not supported"}"#,
);
const NOT_SUPPORTED: (u16, &str) = (
    202,
    r#"{"errorType":"Telemetry.NotSupported","errorMessage":"Telemetry API is not supported"}"#,
);

struct Shared {
    script: Script,
    telemetry_calls: AtomicUsize,
    events: tokio::sync::Mutex<mpsc::Receiver<String>>,
    seen: mpsc::UnboundedSender<Seen>,
    runtime_done_posted: AtomicBool,
    shutdown_sent: AtomicBool,
    next_after_shutdown: AtomicUsize,
}

struct Fake {
    addr: SocketAddr,
    events: mpsc::Sender<String>,
    seen: mpsc::UnboundedReceiver<Seen>,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Fake {
    async fn start(script: Script) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events_tx, events_rx) = mpsc::channel(16);
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script,
            telemetry_calls: AtomicUsize::new(0),
            events: tokio::sync::Mutex::new(events_rx),
            seen: seen_tx,
            runtime_done_posted: AtomicBool::new(false),
            shutdown_sent: AtomicBool::new(false),
            next_after_shutdown: AtomicUsize::new(0),
        });
        let server = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(req, shared.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Fake {
            addr,
            events: events_tx,
            seen: seen_rx,
            shared,
            server,
        }
    }

    async fn expect(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("the fake saw nothing in time")
            .expect("the fake is gone")
    }

    async fn expect_register(&mut self) -> (String, Value) {
        match self.expect().await {
            Seen::Register { name, events } => (name, events),
            other => panic!("expected register, got {other:?}"),
        }
    }

    async fn expect_telemetry(&mut self) -> Value {
        match self.expect().await {
            Seen::Telemetry(v) => v,
            other => panic!("expected a Telemetry subscription, got {other:?}"),
        }
    }

    async fn expect_logs(&mut self) -> Value {
        match self.expect().await {
            Seen::Logs(v) => v,
            other => panic!("expected a Logs subscription, got {other:?}"),
        }
    }

    async fn expect_next(&mut self) -> (bool, u64) {
        match self.expect().await {
            Seen::Next {
                runtime_done_posted,
                at_ms,
            } => (runtime_done_posted, at_ms),
            other => panic!("expected event/next, got {other:?}"),
        }
    }

    async fn send(&self, event: Value) {
        self.events.send(event.to_string()).await.unwrap();
    }

    async fn invoke(&self, request_id: &str, deadline_ms: u64) {
        self.send(json!({
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:fake-fn",
            "tracing": {"type": "X-Amzn-Trace-Id", "value": format!("Root=1-{request_id}")}
        }))
        .await;
    }

    async fn shutdown(&self, reason: &str, deadline_ms: u64) {
        self.send(
            json!({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms}),
        )
        .await;
    }
}

fn answer(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let id_ok = headers
        .get("Lambda-Extension-Identifier")
        .is_some_and(|v| v == "ext-id-1");
    let resp = match (method, path.as_str()) {
        (Method::POST, "/2020-01-01/extension/register")
            if shared.script.register_refused.is_some() =>
        {
            let (status, body) = shared.script.register_refused.unwrap_or_default();
            answer(status, body)
        }
        (Method::POST, "/2020-01-01/extension/register") => {
            let name = headers
                .get("Lambda-Extension-Name")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let _ = shared.seen.send(Seen::Register {
                name,
                events: json_body()["events"].clone(),
            });
            let mut r = answer(
                200,
                r#"{"functionName":"fake-fn","functionVersion":"$LATEST","handler":"app.handler"}"#,
            );
            r.headers_mut()
                .insert("Lambda-Extension-Identifier", "ext-id-1".parse().unwrap());
            r
        }
        (_, _) if !id_ok => answer(
            403,
            r#"{"errorType":"Extension.MissingExtensionIdentifier"}"#,
        ),
        (Method::GET, "/2020-01-01/extension/event/next") if shared.script.next_fails => {
            let _ = shared.seen.send(Seen::Next {
                runtime_done_posted: false,
                at_ms: now_ms(),
            });
            answer(500, r#"{"errorType":"Fake.Broken"}"#)
        }
        (Method::GET, "/2020-01-01/extension/event/next") => {
            if shared.shutdown_sent.load(Ordering::SeqCst) {
                shared.next_after_shutdown.fetch_add(1, Ordering::SeqCst);
                return Ok(answer(
                    403,
                    r#"{"errorType":"Extension.InvalidExtensionState"}"#,
                ));
            }
            let _ = shared.seen.send(Seen::Next {
                runtime_done_posted: shared.runtime_done_posted.load(Ordering::SeqCst),
                at_ms: now_ms(),
            });
            let event = shared.events.lock().await.recv().await;
            match event {
                Some(e) => {
                    if e.contains("\"SHUTDOWN\"") {
                        shared.shutdown_sent.store(true, Ordering::SeqCst);
                    }
                    answer(200, &e)
                }
                None => answer(500, r#"{"errorType":"Fake.Gone"}"#),
            }
        }
        (Method::PUT, "/2022-07-01/telemetry") => {
            let _ = shared.seen.send(Seen::Telemetry(json_body()));
            let n = shared.telemetry_calls.fetch_add(1, Ordering::SeqCst);
            let script = &shared.script.telemetry;
            let (status, body) = script[n.min(script.len() - 1)];
            answer(status, body)
        }
        (Method::PUT, "/2020-08-15/logs") => {
            let _ = shared.seen.send(Seen::Logs(json_body()));
            let (status, body) = shared.script.logs;
            answer(status, body)
        }
        (Method::POST, p) if p.ends_with("/error") => {
            let error_type = headers
                .get("Lambda-Extension-Function-Error-Type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let _ = shared.seen.send(Seen::ErrorReport {
                path: p.to_string(),
                error_type,
            });
            answer(202, "")
        }
        _ => answer(404, "{}"),
    };
    Ok(resp)
}

/// The running `loupe` process and its stderr lines.
struct Loupe {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    all: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
}

fn spawn_loupe(fake: &Fake, env: &[(&str, &str)]) -> Loupe {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe"));
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", fake.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "fake-fn")
        .env("LOUPE_LOG_LEVEL", "debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("loupe starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::unbounded_channel();
    let all = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let all = all.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = r.next_line().await {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        })
    };
    Loupe {
        child,
        lines,
        all,
        reader,
    }
}

impl Loupe {
    /// Waits for a stderr line containing `needle`.
    async fn wait_line(&mut self, needle: &str) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("loupe's stderr ended before a line with {needle:?}");
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
    }

    /// Waits for the process to exit, by `within`; returns its status and every stderr line.
    async fn exit(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("loupe exits in time")
            .expect("wait works");
        let _ = tokio::time::timeout(WAIT, &mut self.reader).await;
        let lines = self.all.lock().unwrap().clone();
        (status, lines)
    }
}

fn summary(lines: &[String]) -> Value {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(" summary {")).collect();
    assert_eq!(found.len(), 1, "one summary line expected in {lines:#?}");
    let json = found[0].split_once(" summary ").unwrap().1;
    serde_json::from_str(json).expect("summary is JSON")
}

fn invocations(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| l.split_once(" invocation {").map(|(_, j)| format!("{{{j}")))
        .map(|j| serde_json::from_str(&j).expect("invocation line is JSON"))
        .collect()
}

/// The listener's port from a subscription request's destination.
fn destination(request: &Value) -> (u16, String) {
    let uri = request["destination"]["URI"].as_str().expect("a URI");
    let rest = uri
        .strip_prefix("http://sandbox.localdomain:")
        .unwrap_or_else(|| panic!("destination {uri}"));
    let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (port.parse().expect("a port"), path.to_string())
}

/// POSTs a body to loupe's listener on 127.0.0.1 and returns the status code.
async fn post(port: u16, path: &str, body: &[u8]) -> u16 {
    let exchange = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: sandbox.localdomain:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let text = String::from_utf8_lossy(&resp);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"))
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("listener answers")
}

fn batch(events: &[Value]) -> Vec<u8> {
    Value::Array(events.to_vec()).to_string().into_bytes()
}

fn start(id: &str) -> Value {
    json!({"time":"2026-01-01T00:00:00.000Z","type":"platform.start","record":{
        "requestId": id, "version": "$LATEST",
        "tracing": {"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value": format!("Root=1-{id}")}}})
}

fn runtime_done(id: &str, status: &str) -> Value {
    json!({"time":"2026-01-01T00:00:00.100Z","type":"platform.runtimeDone","record":{
        "requestId": id, "status": status, "metrics": {"durationMs": 100.5, "producedBytes": 12},
        "spans": [{"name":"responseLatency","start":"2026-01-01T00:00:00.050Z","durationMs":20.0}]}})
}

fn report(id: &str) -> Value {
    json!({"time":"2026-01-01T00:00:00.200Z","type":"platform.report","record":{
        "requestId": id, "status": "success",
        "metrics": {"durationMs": 101.25, "billedDurationMs": 102.0, "memorySizeMB": 128, "maxMemoryUsedMB": 60}}})
}

fn function(line: &str) -> Value {
    json!({"time":"2026-01-01T00:00:00.010Z","type":"function","record": line})
}

/// Register, subscribe, first /next: returns the listener port and path.
async fn init_with_telemetry(fake: &mut Fake) -> (u16, String, Value) {
    let (name, events) = fake.expect_register().await;
    assert_eq!(name, "loupe");
    assert_eq!(events, json!(["INVOKE", "SHUTDOWN"]));
    let sub = fake.expect_telemetry().await;
    let (port, path) = destination(&sub);
    fake.expect_next().await;
    (port, path, sub)
}

#[tokio::test]
async fn happy_path_with_schema_2025_01_29() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let loupe = spawn_loupe(&fake, &[]);
    let (port, path, sub) = init_with_telemetry(&mut fake).await;
    assert_eq!(sub["schemaVersion"], "2025-01-29");
    assert_eq!(sub["types"], json!(["platform", "function"]));
    assert_eq!(
        sub["buffering"],
        json!({"timeoutMs": 25, "maxBytes": 262144, "maxItems": 1000})
    );
    assert_eq!(sub["destination"]["protocol"], "HTTP");

    let init = json!({"time":"2026-01-01T00:00:00.000Z","type":"platform.initStart","record":{
        "initializationType":"on-demand","phase":"init","functionName":"fake-fn","functionVersion":"$LATEST"}});
    let sub_event = json!({"time":"t","type":"platform.telemetrySubscription","record":{
        "name":"loupe","state":"Subscribed","types":["platform","function"]}});
    assert_eq!(post(port, &path, &batch(&[init, sub_event])).await, 200);

    fake.invoke("req-1", now_ms() + 60_000).await;
    let body = batch(&[
        start("req-1"),
        function("hello from the handler\n"),
        json!({"time":"t","type":"function","record":{"timestamp":"t","level":"INFO","requestId":"req-1","message":"json line"}}),
        runtime_done("req-1", "success"),
    ]);
    assert_eq!(post(port, &path, &body).await, 200);
    fake.expect_next().await;
    // The report of an invocation arrives after loupe's /next, here during SHUTDOWN's window.
    assert_eq!(post(port, &path, &batch(&[report("req-1")])).await, 200);
    fake.shutdown("spindown", now_ms() + 10_000).await;

    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success(), "{status:?} {lines:#?}");
    let s = summary(&lines);
    assert_eq!(s["api"], "telemetry");
    assert_eq!(s["schema"], "2025-01-29");
    assert_eq!(s["shutdownReason"], "spindown");
    assert_eq!(s["invokes"], 1);
    let t = &s["telemetry"];
    assert_eq!(t["batches"], 3);
    assert_eq!(t["events"]["function"], 2);
    assert_eq!(t["events"]["platform.start"], 1);
    assert_eq!(t["events"]["platform.initStart"], 1);
    assert_eq!(t["malformedEvents"], 0);
    assert_eq!(s["tracker"]["completed"], 1);
    assert_eq!(s["tracker"]["coldStarts"], 1);
    let inv = invocations(&lines);
    assert_eq!(inv.len(), 1, "{inv:#?}");
    assert_eq!(inv[0]["requestId"], "req-1");
    assert_eq!(inv[0]["start"], true);
    assert_eq!(inv[0]["coldStart"], true);
    assert_eq!(inv[0]["traceId"], "Root=1-req-1");
    assert_eq!(inv[0]["runtimeDone"], "success");
    assert_eq!(inv[0]["report"], true);
    assert_eq!(inv[0]["billedDurationMs"], 102);
    assert_eq!(inv[0]["maxMemoryUsedMB"], 60);
    assert_eq!(fake.shared.next_after_shutdown.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_2025_schema_falls_back_to_2022_12_13() {
    let mut fake = Fake::start(Script {
        telemetry: vec![REFUSED, (200, "\"OK\"")],
        logs: REFUSED,
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(&fake, &[("LOUPE_EXTENSION_LOGS", "true")]);
    fake.expect_register().await;
    let first = fake.expect_telemetry().await;
    let second = fake.expect_telemetry().await;
    assert_eq!(first["schemaVersion"], "2025-01-29");
    assert_eq!(second["schemaVersion"], "2022-12-13");
    assert_eq!(
        second["types"],
        json!(["platform", "function", "extension"])
    );
    let (port, path) = destination(&second);
    fake.expect_next().await;
    let body = batch(&[json!({"time":"t","type":"extension","record":"another extension's line"})]);
    assert_eq!(post(port, &path, &body).await, 200);
    fake.shutdown("SPINDOWN", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    let s = summary(&lines);
    assert_eq!(s["api"], "telemetry");
    assert_eq!(s["schema"], "2022-12-13");
    assert_eq!(s["shutdownReason"], "spindown");
    assert_eq!(s["telemetry"]["events"]["extension"], 1);
    assert_eq!(s["attempts"].as_array().map(Vec::len), Some(2));
}

/// Both Telemetry schemas refused with 400: the Logs API, with its own shapes.
#[tokio::test]
async fn telemetry_refused_with_400_uses_the_logs_api() {
    let mut fake = Fake::start(Script {
        telemetry: vec![REFUSED],
        logs: (200, "\"OK\""),
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(&fake, &[]);
    fake.expect_register().await;
    assert_eq!(fake.expect_telemetry().await["schemaVersion"], "2025-01-29");
    assert_eq!(fake.expect_telemetry().await["schemaVersion"], "2022-12-13");
    let logs = fake.expect_logs().await;
    assert_eq!(logs["schemaVersion"], "2020-08-15");
    assert_eq!(logs["types"], json!(["platform", "function"]));
    assert_eq!(logs["buffering"]["timeoutMs"], 25);
    let (port, path) = destination(&logs);
    assert_eq!(path, "/logs");
    fake.expect_next().await;
    fake.invoke("req-logs", now_ms() + 60_000).await;
    fake.expect_next().await;
    let body = batch(&[
        json!({"time":"t","type":"platform.start","record":{"requestId":"req-logs","version":"$LATEST"}}),
        json!({"time":"t","type":"function","record":"2026-01-01T00:00:00.000Z\treq-logs\tINFO\tline\n"}),
        json!({"time":"t","type":"platform.end","record":{"requestId":"req-logs"}}),
        json!({"time":"t","type":"platform.report","record":{"requestId":"req-logs","metrics":{
            "durationMs":1.5,"billedDurationMs":2,"memorySizeMB":128,"maxMemoryUsedMB":40,"initDurationMs":80.0}}}),
    ]);
    assert_eq!(post(port, &path, &body).await, 200);
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    let s = summary(&lines);
    assert_eq!(s["api"], "logs");
    assert_eq!(s["schema"], "2020-08-15");
    assert_eq!(s["telemetry"]["events"]["platform.end"], 1);
    assert_eq!(s["telemetry"]["events"]["function"], 1);
    let inv = invocations(&lines);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["requestId"], "req-logs");
    assert_eq!(inv[0]["initDurationMs"], 80.0);
    assert_eq!(inv[0]["coldStart"], true);
}

/// A 202 `Telemetry.NotSupported` (AWS's emulator) means not offered: straight to the Logs API.
#[tokio::test]
async fn telemetry_not_supported_202_uses_the_logs_api() {
    let mut fake = Fake::start(Script {
        telemetry: vec![NOT_SUPPORTED],
        logs: (200, "\"OK\""),
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(&fake, &[]);
    fake.expect_register().await;
    assert_eq!(fake.expect_telemetry().await["schemaVersion"], "2025-01-29");
    fake.expect_logs().await;
    fake.expect_next().await;
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    let s = summary(&lines);
    assert_eq!(s["api"], "logs");
    assert_eq!(s["attempts"].as_array().map(Vec::len), Some(2), "{s}");
}

/// Nothing accepted: one clear line, loupe keeps serving /next (without waiting for a
/// runtimeDone that cannot come, even with LOUPE_FLUSH=end) and exits 0 on SHUTDOWN.
#[tokio::test]
async fn both_refused_stays_harmless() {
    let mut fake = Fake::start(Script {
        telemetry: vec![REFUSED],
        logs: (400, r#"{"errorType":"Logs.ValidationError"}"#),
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(&fake, &[("LOUPE_FLUSH", "end")]);
    fake.expect_register().await;
    fake.expect_telemetry().await;
    fake.expect_telemetry().await;
    fake.expect_logs().await;
    fake.expect_next().await;
    for i in 0..3 {
        fake.invoke(&format!("r{i}"), now_ms() + 600_000).await;
        fake.expect_next().await;
    }
    fake.shutdown("timeout", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN no telemetry subscription was accepted")),
        "{lines:#?}"
    );
    let s = summary(&lines);
    assert_eq!(s["api"], "none");
    assert_eq!(s["schema"], Value::Null);
    assert_eq!(s["invokes"], 3);
    assert_eq!(s["shutdownReason"], "timeout");
    assert_eq!(fake.shared.next_after_shutdown.load(Ordering::SeqCst), 0);
}

/// Managed Instances: SHUTDOWN only, overlapping invocations, no Logs API fallback.
#[tokio::test]
async fn managed_instances_register_shutdown_only() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let loupe = spawn_loupe(
        &fake,
        &[("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")],
    );
    let (_, events) = fake.expect_register().await;
    assert_eq!(events, json!(["SHUTDOWN"]));
    let sub = fake.expect_telemetry().await;
    assert_eq!(sub["schemaVersion"], "2025-01-29");
    let (port, path) = destination(&sub);
    fake.expect_next().await;
    let lmi_report = |id: &str| {
        json!({"time":"t","type":"platform.report","record":{"requestId":id,"status":"success",
            "metrics":{"durationMs":3.5},
            "spans":[{"name":"responseLatency","start":"t","durationMs":1.0}]}})
    };
    let body = batch(&[
        start("a"),
        start("b"),
        json!({"time":"t","type":"function","record":{"timestamp":"t","level":"INFO","requestId":"b","message":"hi"}}),
        lmi_report("b"),
        lmi_report("a"),
    ]);
    assert_eq!(post(port, &path, &body).await, 200);
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    let s = summary(&lines);
    assert_eq!(s["tracker"]["completed"], 2);
    let mut ids: Vec<String> = invocations(&lines)
        .iter()
        .map(|i| i["requestId"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
}

#[tokio::test]
async fn managed_instances_never_try_the_logs_api() {
    let mut fake = Fake::start(Script {
        telemetry: vec![REFUSED],
        logs: (200, "\"OK\""),
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(
        &fake,
        &[("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances")],
    );
    fake.expect_register().await;
    fake.expect_telemetry().await;
    fake.expect_telemetry().await;
    // The next thing loupe does is /next, not a Logs subscription.
    fake.expect_next().await;
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    assert_eq!(summary(&lines)["api"], "none");
}

/// Bad input of every kind: 200 every time, no crash, good events kept.
#[tokio::test]
async fn listener_survives_bad_batches_and_keeps_good_events() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let loupe = spawn_loupe(&fake, &[]);
    let (port, path, _) = init_with_telemetry(&mut fake).await;

    // Not JSON, not an array, empty, truncated.
    for body in [
        &b"{not json"[..],
        b"{\"type\":\"function\"}",
        b"",
        b"[{\"type\":",
    ] {
        assert_eq!(post(port, &path, body).await, 200);
    }
    // Unknown types and an event with unknown fields.
    let body = batch(&[
        json!({"time":"t","type":"platform.somethingNew","record":{"x":1}}),
        json!({"time":"t","type":"brandNew","record":"x"}),
        json!({"time":"t","type":"platform.start","record":{"requestId":"good-1","futureField":{"a":1},"other":[1,2]},"envelopeExtra":true}),
    ]);
    assert_eq!(post(port, &path, &body).await, 200);
    // A record over 1 MiB beside a good one.
    let big = "x".repeat(1_100_000);
    let body = batch(&[function(&big), function("small line"), report("good-1")]);
    assert_eq!(post(port, &path, &body).await, 200);
    // Mixed good and bad in one batch.
    let body = br#"[
        {"time":"t","type":"platform.start","record":{"requestId":"good-2"}},
        {"time":"t","type":"platform.start","record":{"requestId":42}},
        "just a string",
        null,
        {"time":"t","type":"platform.report","record":{"requestId":"bad","metrics":{"billedDurationMs":"lots"}}},
        {"time":"t","type":"platform.runtimeDone","record":{"requestId":"good-2","status":"brandNewStatus"}},
        {"time":"t","type":"platform.report","record":{"requestId":"good-2","metrics":{"durationMs":1,"billedDurationMs":1.0}}}
    ]"#;
    assert_eq!(post(port, &path, body).await, 200);
    // Still alive and serving the lifecycle.
    fake.invoke("after-bad", now_ms() + 60_000).await;
    fake.expect_next().await;
    fake.shutdown("SPINDOWN", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success(), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:#?}");
    let s = summary(&lines);
    assert_eq!(s["shutdownReason"], "spindown");
    let t = &s["telemetry"];
    assert_eq!(t["malformedBodies"], 4);
    assert_eq!(t["unknownTypes"], 2);
    assert_eq!(t["unknownFields"], 3);
    assert_eq!(t["oversizedRecords"], 1);
    assert_eq!(t["malformedEvents"], 4);
    assert_eq!(t["events"]["function"], 1);
    assert_eq!(t["events"]["platform.start"], 2);
    assert_eq!(t["events"]["platform.report"], 2);
    let inv = invocations(&lines);
    let by_id = |id: &str| inv.iter().find(|i| i["requestId"] == id).cloned();
    let g1 = by_id("good-1").expect("good-1 kept");
    assert_eq!(g1["start"], true);
    assert_eq!(g1["durationMs"], 101.25);
    let g2 = by_id("good-2").expect("good-2 kept");
    assert_eq!(g2["runtimeDone"], "brandNewStatus");
    assert_eq!(g2["billedDurationMs"], 1);
    assert!(by_id("bad").is_none());
}

/// With LOUPE_FLUSH=end loupe calls /next only once that request's runtimeDone has arrived, or at
/// the invocation's deadline (less a margin) when it never does.
#[tokio::test]
async fn flush_end_waits_for_runtime_done_before_next() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let mut loupe = spawn_loupe(&fake, &[("LOUPE_FLUSH", "end")]);
    let (port, path, _) = init_with_telemetry(&mut fake).await;

    fake.invoke("wait-1", now_ms() + 60_000).await;
    loupe.wait_line("invoke wait-1").await;
    // Events of another request do not release the wait.
    let body = batch(&[start("wait-1"), runtime_done("other", "success")]);
    assert_eq!(post(port, &path, &body).await, 200);
    assert!(
        fake.seen.try_recv().is_err(),
        "loupe called /next before runtimeDone"
    );
    fake.shared
        .runtime_done_posted
        .store(true, Ordering::SeqCst);
    assert_eq!(
        post(port, &path, &batch(&[runtime_done("wait-1", "success")])).await,
        200
    );
    let (after_runtime_done, _) = fake.expect_next().await;
    assert!(
        after_runtime_done,
        "/next arrived before runtimeDone was posted"
    );

    // No runtimeDone at all: /next comes at the deadline less loupe's 200 ms margin, not before.
    fake.shared
        .runtime_done_posted
        .store(false, Ordering::SeqCst);
    let deadline = now_ms() + 1_500;
    fake.invoke("never-done", deadline).await;
    let (_, at_ms) = fake.expect_next().await;
    assert!(
        at_ms + 205 >= deadline,
        "/next {} ms before the deadline",
        deadline - at_ms
    );

    let body = batch(&[report("wait-1"), report("other")]);
    assert_eq!(post(port, &path, &body).await, 200);
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    assert_eq!(summary(&lines)["invokes"], 2);
}

/// SHUTDOWN's deadline bounds the exit.
#[tokio::test]
async fn exits_zero_within_the_shutdown_deadline() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let loupe = spawn_loupe(&fake, &[("LOUPE_FLUSH", "end")]);
    init_with_telemetry(&mut fake).await;
    // An invocation whose runtimeDone and report never come.
    fake.invoke("lost", now_ms() + 200).await;
    fake.expect_next().await;
    let deadline = now_ms() + 5_000;
    fake.shutdown("Spindown", deadline).await;
    let within = Duration::from_millis(deadline.saturating_sub(now_ms()));
    let (status, lines) = loupe.exit(within).await;
    assert!(status.success());
    assert!(now_ms() <= deadline);
    let s = summary(&lines);
    assert_eq!(s["shutdownReason"], "spindown");
    assert_eq!(s["tracker"]["unfinished"], 0, "no platform event arrived");
}

/// A refused registration: one clear line and a non-zero exit (Lambda then reports the failed
/// extension), without any further call.
#[tokio::test]
async fn refused_registration_exits_with_a_clear_line() {
    let mut fake = Fake::start(Script {
        register_refused: Some((
            403,
            r#"{"errorType":"Extension.RegistrationClosed","errorMessage":"closed"}"#,
        )),
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(&fake, &[]);
    let (status, lines) = loupe.exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    assert!(
        lines.iter().any(
            |l| l.contains("ERROR registering as extension \"loupe\" failed")
                && l.contains("Extension.RegistrationClosed")
        ),
        "{lines:#?}"
    );
    assert!(
        fake.seen.try_recv().is_err(),
        "no call after a refused register"
    );
}

/// /event/next failing: a bounded number of retries, an exit error report, then exit.
#[tokio::test]
async fn failing_next_is_retried_then_reported() {
    let mut fake = Fake::start(Script {
        next_fails: true,
        ..Script::accept_telemetry()
    })
    .await;
    let loupe = spawn_loupe(&fake, &[]);
    fake.expect_register().await;
    fake.expect_telemetry().await;
    for _ in 0..5 {
        fake.expect_next().await;
    }
    match fake.expect().await {
        Seen::ErrorReport { path, error_type } => {
            assert_eq!(path, "/2020-01-01/extension/exit/error");
            assert_eq!(error_type, "Extension.EventNextFailed");
        }
        other => panic!("expected an exit error report, got {other:?}"),
    }
    let (status, lines) = loupe.exit(WAIT).await;
    assert_eq!(status.code(), Some(1));
    let s = summary(&lines);
    assert_eq!(s["nextErrors"], 5);
    assert_eq!(s["shutdownReason"], Value::Null);
}

/// The last invocation's report comes during SHUTDOWN's window: loupe waits for it (bounded by
/// half the time left) before its final drain.
#[tokio::test]
async fn a_report_arriving_during_shutdown_is_kept() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let mut loupe = spawn_loupe(&fake, &[]);
    let (port, path, _) = init_with_telemetry(&mut fake).await;
    fake.invoke("last", now_ms() + 60_000).await;
    let body = batch(&[start("last"), runtime_done("last", "success")]);
    assert_eq!(post(port, &path, &body).await, 200);
    fake.expect_next().await;
    fake.shutdown("spindown", now_ms() + 10_000).await;
    loupe.wait_line("shutdown (spindown)").await;
    assert_eq!(post(port, &path, &batch(&[report("last")])).await, 200);
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success());
    let s = summary(&lines);
    assert_eq!(s["tracker"]["completed"], 1, "{s}");
    assert_eq!(s["tracker"]["unfinished"], 0);
    let inv = invocations(&lines);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["billedDurationMs"], 102);
    assert_eq!(inv[0]["evicted"], false);
}

/// Records what the run loop hands the flush seam.
struct Recording(mpsc::UnboundedSender<String>);

impl loupe::extension::Flusher for Recording {
    async fn after_invoke(
        &mut self,
        ctx: loupe::extension::FlushContext<'_>,
        invoke: &loupe::lambda::client::InvokeEvent,
        _deadline: tokio::time::Instant,
    ) {
        let soon = tokio::time::Instant::now() + WAIT;
        let done = ctx
            .tracker
            .wait_runtime_done(&invoke.request_id, soon)
            .await
            .map(|d| d.status);
        let _ = self
            .0
            .send(format!("after_invoke {} {done:?}", invoke.request_id));
    }

    async fn at_shutdown(
        &mut self,
        ctx: loupe::extension::FlushContext<'_>,
        deadline: tokio::time::Instant,
    ) {
        let drained = ctx.tracker.drain(deadline).await.unwrap_or_default();
        let ids: Vec<String> = drained
            .invocations
            .iter()
            .map(|i| format!("{}:{}", i.request_id, i.report.is_some()))
            .collect();
        let functions = ctx.stats.snapshot().events.get("function").copied();
        let function = ctx.registration.function_name.as_deref();
        let _ = self.0.send(format!(
            "at_shutdown {ids:?} functions={functions:?} function={function:?}"
        ));
    }
}

/// The flush seam, in process: called after runtimeDone with LOUPE_FLUSH=end, and at SHUTDOWN
/// with the completed invocations ready to drain.
#[tokio::test]
async fn flusher_is_called_after_runtime_done_and_at_shutdown() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let addr = fake.addr.to_string();
    let (config, warnings) = loupe::config::Config::from_lookup(|k| match k {
        "AWS_LAMBDA_RUNTIME_API" => Some(addr.clone()),
        "LOUPE_FLUSH" => Some("end".into()),
        _ => None,
    });
    assert!(warnings.is_empty());
    let (tx, mut calls) = mpsc::unbounded_channel();
    let run = tokio::spawn(loupe::extension::run_with(config, Recording(tx)));
    fake.expect_register().await;
    let sub = fake.expect_telemetry().await;
    let (port, path) = destination(&sub);
    fake.expect_next().await;

    fake.invoke("seam-1", now_ms() + 60_000).await;
    let body = batch(&[
        start("seam-1"),
        function("a line"),
        runtime_done("seam-1", "error"),
    ]);
    assert_eq!(post(port, &path, &body).await, 200);
    let call = tokio::time::timeout(WAIT, calls.recv()).await.unwrap();
    assert_eq!(call.as_deref(), Some("after_invoke seam-1 Some(\"error\")"));
    fake.expect_next().await;
    assert_eq!(post(port, &path, &batch(&[report("seam-1")])).await, 200);
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let call = tokio::time::timeout(WAIT, calls.recv()).await.unwrap();
    assert_eq!(
        call.as_deref(),
        Some("at_shutdown [\"seam-1:true\"] functions=Some(1) function=Some(\"fake-fn\")")
    );
    let code = tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
}

/// A 4xx from /event/next (the environment is gone) ends loupe at once, without retries.
#[tokio::test]
async fn refused_next_ends_loupe_at_once() {
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let loupe = spawn_loupe(&fake, &[]);
    init_with_telemetry(&mut fake).await;
    fake.shutdown("spindown", now_ms() + 10_000).await;
    // loupe exits after SHUTDOWN; a second loupe sees /next refused from the start.
    let (status, _) = loupe.exit(WAIT).await;
    assert!(status.success());
    let loupe = spawn_loupe(&fake, &[]);
    fake.expect_register().await;
    fake.expect_telemetry().await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success(), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN Lambda refuses event/next") && l.contains("403")),
        "{lines:#?}"
    );
    let s = summary(&lines);
    assert_eq!(s["nextErrors"], 1);
    assert_eq!(fake.shared.next_after_shutdown.load(Ordering::SeqCst), 1);
}

/// A long invocation whose function prints EMF: with `periodic:1` the run loop's timer flushes
/// its metric while the invocation still runs (no runtimeDone yet), and /next stays the same
/// request across ticks.
#[tokio::test]
async fn a_long_invocation_gets_a_timer_flush_before_its_end() {
    let mut backend = support::backend::Backend::start(support::backend::ok()).await;
    let url = backend.url();
    let mut fake = Fake::start(Script::accept_telemetry()).await;
    let loupe = spawn_loupe(
        &fake,
        &[
            ("LOUPE_FLUSH", "periodic:1"),
            ("LOUPE_PROTOCOL", "json"),
            ("LOUPE_BACKEND_URL", url.as_str()),
        ],
    );
    let (port, path, _) = init_with_telemetry(&mut fake).await;
    fake.invoke("long-1", now_ms() + 600_000).await;
    let emf = json!({"_aws": {"Timestamp": now_ms(), "CloudWatchMetrics": [{"Namespace": "Long",
        "Dimensions": [[]], "Metrics": [{"Name": "StillRunning", "Unit": "Count"}]}]},
        "StillRunning": 1});
    let body = batch(&[start("long-1"), function(&emf.to_string())]);
    assert_eq!(post(port, &path, &body).await, 200);
    // Pipelined: loupe asks for the next event while the invocation runs.
    fake.expect_next().await;
    let flushed = async {
        loop {
            let r = backend.received.recv().await.expect("the backend is up");
            let mut text = String::new();
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_string(&mut text)
                .expect("gzip NDJSON");
            if text.contains("\"StillRunning\"") {
                return text;
            }
        }
    };
    let text = tokio::time::timeout(WAIT, flushed)
        .await
        .expect("a timer flush while the invocation runs");
    assert!(text.contains("\"exponential_histogram\""), "{text}");
    // The invocation ends only now; /next was not asked again meanwhile.
    assert!(
        fake.seen.try_recv().is_err(),
        "no second /next before the next event"
    );
    let done = batch(&[runtime_done("long-1", "success"), report("long-1")]);
    assert_eq!(post(port, &path, &done).await, 200);
    fake.shutdown("spindown", now_ms() + 10_000).await;
    let (status, lines) = loupe.exit(WAIT).await;
    assert!(status.success(), "{lines:#?}");
    assert_eq!(summary(&lines)["invokes"], 1);
}
