//! An independent check of the lifecycle: the `loupe` binary against the `lambda-simulator`
//! crate (another team's Lambda emulator with Extensions and Telemetry APIs). The test plays the
//! runtime over the simulator's Runtime API; loupe registers, subscribes, follows two invocations
//! (with `LOUPE_FLUSH=end`, so it waits for each runtimeDone the simulator sends) and SHUTDOWN.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_simulator::{EventType, InvocationStatus, ShutdownReason, Simulator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 exchange on a fresh connection: returns the head and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.expect("simulator reachable");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Waits for a stderr line containing `needle`.
async fn wait_line(lines: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let wait = async {
        while let Some(line) = lines.recv().await {
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

#[tokio::test]
async fn loupe_follows_the_lifecycle_in_lambda_simulator() {
    lambda_simulator::ensure_default_crypto_provider();
    let simulator = Simulator::builder()
        .function_name("sim-fn")
        .invocation_timeout(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("simulator starts");
    let addr = simulator.addr();

    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .env_clear()
        // The simulator gives a URL (with scheme), which loupe accepts as well as host:port.
        .env("AWS_LAMBDA_RUNTIME_API", simulator.runtime_api_url())
        .env("LOUPE_LOG_LEVEL", "debug")
        .env("LOUPE_FLUSH", "end")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("loupe starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let all = Arc::new(Mutex::new(Vec::<String>::new()));
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

    // Init: loupe registers and subscribes before the runtime's first /next closes init.
    wait_line(
        &mut lines,
        "subscribed to the Telemetry API, schema 2025-01-29",
    )
    .await;
    let extensions = simulator.get_registered_extensions().await;
    assert_eq!(extensions.len(), 1);
    assert_eq!(extensions[0].name, "loupe");
    assert_eq!(
        extensions[0].events,
        [EventType::Invoke, EventType::Shutdown]
    );

    // The runtime: answer each invocation with a small response.
    let runtime = tokio::spawn(async move {
        loop {
            let (head, _) = http(addr, "GET", "/2018-06-01/runtime/invocation/next", "").await;
            let Some(id) = header(&head, "Lambda-Runtime-Aws-Request-Id") else {
                return;
            };
            let path = format!("/2018-06-01/runtime/invocation/{id}/response");
            http(addr, "POST", &path, r#"{"ok":true}"#).await;
        }
    });

    let mut ids = Vec::new();
    for i in 0..2 {
        let id = simulator.enqueue_payload(json!({"n": i})).await;
        let state = simulator
            .wait_for_invocation_complete(&id, WAIT)
            .await
            .expect("invocation completes");
        assert_eq!(state.status, InvocationStatus::Success);
        // The report comes once loupe called /next after runtimeDone; the tracker then logs the
        // completed invocation.
        let line = wait_line(&mut lines, &format!("invocation {{\"requestId\":\"{id}\"")).await;
        let inv: Value = serde_json::from_str(line.split_once("invocation ").unwrap().1).unwrap();
        assert_eq!(inv["start"], true);
        assert_eq!(inv["runtimeDone"], "success");
        assert!(inv["billedDurationMs"].as_u64().is_some(), "{inv}");
        assert_eq!(inv["memorySizeMB"], 128);
        assert_eq!(inv["coldStart"], i == 0);
        ids.push(id);
    }

    // SHUTDOWN: loupe exits 0 within the simulator's shutdown window.
    let (_, status) = tokio::join!(
        simulator.graceful_shutdown(ShutdownReason::Spindown),
        tokio::time::timeout(WAIT, child.wait())
    );
    let status = status.expect("loupe exits in time").expect("wait works");
    runtime.abort();
    let _ = tokio::time::timeout(WAIT, reader).await;
    let lines = all.lock().unwrap().clone();
    assert!(status.success(), "{status:?} {lines:#?}");

    let summary_line = lines
        .iter()
        .find_map(|l| l.split_once(" summary "))
        .map(|(_, j)| j.to_string())
        .expect("a summary line");
    let s: Value = serde_json::from_str(&summary_line).unwrap();
    assert_eq!(s["api"], "telemetry");
    assert_eq!(s["schema"], "2025-01-29");
    assert_eq!(s["shutdownReason"], "spindown");
    assert_eq!(s["invokes"], 2);
    assert_eq!(s["tracker"]["completed"], 2);
    assert_eq!(s["tracker"]["coldStarts"], 1);
    let t = &s["telemetry"];
    assert_eq!(t["events"]["platform.start"], 2);
    assert_eq!(t["events"]["platform.runtimeDone"], 2);
    assert_eq!(t["events"]["platform.report"], 2);
    assert_eq!(t["events"]["platform.telemetrySubscription"], 1);
    assert_eq!(t["malformedEvents"], 0);
    assert_eq!(t["unknownTypes"], 0);
}
