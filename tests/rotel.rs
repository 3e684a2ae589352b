//! loupe's OTLP encoding against a collector written elsewhere: rotel (PyPI `rotel`, a Rust
//! OpenTelemetry collector). loupe's types encode a logs request and a metrics request with an
//! exponential histogram, gzip them, and POST them with loupe's `HttpSender` to rotel's OTLP/HTTP
//! receiver. rotel prints what it decoded (`--debug-log`, detailed) and forwards it over OTLP/HTTP
//! to loupe-local's receiver; the test reads both back.

#![cfg(feature = "local")]

mod support;

use support::python::python;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use loupe::config::LambdaEnv;
use loupe::event::{AttrValue, Body, Event, Kind};
use loupe::export::gzip::Gzip;
use loupe::export::http::{HttpSender, SendError};
use loupe::export::otlp;
use loupe::export::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use loupe::export::proto::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    exponential_histogram_data_point::Buckets, metric,
};
use loupe::local::receiver;

const WAIT: Duration = Duration::from_secs(20);

/// The collector binary the `rotel` package ships.
fn rotel_agent() -> PathBuf {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the rotel package is missing: run bash scripts/setup.sh ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Rotel {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rotel {
    /// Reads rotel's output until a line contains `needle`, at most until `WAIT` passed.
    fn wait_line(&mut self, needle: &str) -> bool {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// The output from the first line containing `from` on.
    fn after(&self, from: &str) -> String {
        let start = self.seen.iter().position(|l| l.contains(from)).unwrap_or(0);
        self.seen[start..].join("\n")
    }
}

fn start_rotel(http_port: u16, export_to: &str, dir: &Path) -> Rotel {
    let mut child = Command::new(rotel_agent())
        .arg("start")
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .args([
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
        .args(["--otlp-exporter-endpoint", export_to])
        .args(["--debug-log", "metrics", "--debug-log", "logs"])
        .args(["--debug-log-verbosity", "detailed"])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rotel");
    let (tx, lines) = mpsc::channel();
    for out in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    Rotel {
        child,
        lines,
        seen: Vec::new(),
    }
}

/// POSTs, retrying while rotel's port does not accept connections yet (bounded by `WAIT`).
async fn post(sender: &HttpSender, url: &str, body: Vec<u8>) -> u16 {
    let body = Bytes::from(body);
    let deadline = Instant::now() + WAIT;
    loop {
        match sender
            .post(
                url,
                "application/x-protobuf",
                body.clone(),
                Duration::from_secs(5),
            )
            .await
        {
            Ok(answer) => return answer.status,
            Err(SendError::Connect(e)) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("POST {url}: {e}"),
        }
    }
}

fn events() -> Vec<Event> {
    let mut emf = Event::new(Kind::Emf, 1_700_000_000_000_000_000);
    emf.request_id = Some("8f5e-req-1".into());
    emf.body = Body::Text("{\"_aws\":{}}".into());
    emf.attributes = vec![
        (
            "objectKey".into(),
            AttrValue::Str("uploads/acme/1.json".into()),
        ),
        ("requestId".into(), AttrValue::Str("http-42".into())),
    ];
    let mut err = Event::new(Kind::InvocationError, 1_700_000_000_500_000_000);
    err.request_id = Some("8f5e-req-2".into());
    err.attributes = vec![("user.id".into(), AttrValue::Str("user-007".into()))];
    vec![emf, err]
}

/// DbWriteLatency{customer=acme}, delta, scale 0: 10 in (1,2], 10 in (2,4], 80 in (4,8].
fn metrics() -> ExportMetricsServiceRequest {
    let env = LambdaEnv {
        function_name: Some("rotel-check".into()),
        region: Some("eu-west-1".into()),
        ..LambdaEnv::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(otlp::resource(&env, None)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(otlp::scope()),
                metrics: vec![Metric {
                    name: "DbWriteLatency".into(),
                    unit: "ms".into(),
                    data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                        aggregation_temporality: 1,
                        data_points: vec![ExponentialHistogramDataPoint {
                            attributes: vec![otlp::kv("customer", "acme")],
                            start_time_unix_nano: 1_700_000_000_000_000_000,
                            time_unix_nano: 1_700_000_060_000_000_000,
                            count: 100,
                            sum: Some(500.0),
                            scale: 0,
                            positive: Some(Buckets {
                                offset: 0,
                                bucket_counts: vec![10, 10, 80],
                            }),
                            min: Some(1.5),
                            max: Some(8.0),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotel_accepts_loupes_logs_and_exponential_histograms() {
    let dir = std::env::temp_dir().join(format!("loupe-rotel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let downstream = receiver::serve(0).await.expect("receiver");
    let port = free_port();
    let mut rotel = start_rotel(port, &format!("http://{}", downstream.addr), &dir);
    let sender = HttpSender::new(&[], Duration::from_secs(2));
    let mut gzip = Gzip::default();

    let env = LambdaEnv {
        function_name: Some("rotel-check".into()),
        ..LambdaEnv::default()
    };
    let logs = otlp::logs_request(&otlp::resource(&env, None), &events());
    let status = post(
        &sender,
        &format!("http://127.0.0.1:{port}/v1/logs"),
        gzip.compress(&logs.encode_to_vec()),
    )
    .await;
    assert_eq!(status, 200);
    let status = post(
        &sender,
        &format!("http://127.0.0.1:{port}/v1/metrics"),
        gzip.compress(&metrics().encode_to_vec()),
    )
    .await;
    assert_eq!(status, 200);

    // What rotel decoded, in its own words.
    for want in [
        "service.name: Str(rotel-check)",
        "InstrumentationScope loupe",
        "EventName: aws.lambda.emf",
        "faas.invocation_id: Str(8f5e-req-1)",
        "objectKey: Str(uploads/acme/1.json)",
        "requestId: Str(http-42)",
        "EventName: aws.lambda.invocation_error",
        "user.id: Str(user-007)",
        "Name: DbWriteLatency",
        "Unit: ms",
    ] {
        let found = rotel.wait_line(want);
        assert!(
            found,
            "{want} in:\n{}\nrotel: {:?}",
            rotel.after(""),
            rotel.child.try_wait()
        );
    }

    // What rotel forwarded, decoded by loupe-local's receiver (independent of loupe's aggregate).
    let got = downstream.wait_accepted(2, WAIT).await;
    assert!(
        got >= 2,
        "rotel forwarded {got} requests:\n{}",
        rotel.after("")
    );
    let report = downstream.report(&[4.0, 6.0]);
    assert_eq!(report.rejected_requests, 0);
    let errors: Vec<_> = report
        .errors
        .iter()
        .map(|e| (e.request_id.clone(), e.user_id.clone()))
        .collect();
    assert_eq!(
        errors,
        vec![(Some("8f5e-req-2".into()), Some("user-007".into()))]
    );
    assert_eq!(report.emf_events, 1);
    assert_eq!(
        report.emf_samples[0].get("objectKey").map(String::as_str),
        Some("uploads/acme/1.json")
    );
    let h = report
        .histograms
        .iter()
        .find(|h| h.name == "DbWriteLatency")
        .unwrap_or_else(|| panic!("histogram forwarded: {report:?}"));
    assert_eq!(
        h.attributes.get("customer").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        (h.count, h.sum, h.min, h.max),
        (Some(100), Some(500.0), Some(1.5), Some(8.0))
    );
    assert!((h.share_above[0].1 - 0.8).abs() < 1e-9, "{h:?}");
    assert!((h.share_above[1].1 - 0.4).abs() < 1e-9, "{h:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
