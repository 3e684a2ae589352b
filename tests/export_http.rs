//! The HTTP sender against a scripted local backend: answers, Retry-After, timeouts, resets,
//! refused connections, oversized answers, headers.

mod support;

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use loupe::export::gzip::Gzip;
use loupe::export::http::{HttpSender, MAX_ANSWER_BYTES, SendError};
use support::backend::{Backend, Behaviour, ok};

fn sender() -> HttpSender {
    HttpSender::new(
        &[("x-api-key".to_string(), "k1".to_string())],
        Duration::from_millis(500),
    )
}

#[tokio::test]
async fn posts_gzip_with_headers_and_reads_the_answer() {
    let mut backend = Backend::start(ok()).await;
    backend.script([Behaviour::Status(
        503,
        vec![("retry-after", "3".into())],
        b"busy".to_vec(),
    )]);
    let body = Gzip::default().compress(b"hello");
    let s = sender();
    let url = format!("{}/v1/metrics", backend.url());
    let a = s
        .post(
            &url,
            "application/x-protobuf",
            Bytes::from(body.clone()),
            Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert_eq!(a.status, 503);
    assert_eq!(a.retry_after.as_deref(), Some("3"));
    assert_eq!(&a.body[..], b"busy");
    let a = s
        .post(
            &url,
            "application/x-protobuf",
            Bytes::from(body),
            Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert_eq!(a.status, 200);

    let got = backend.received.recv().await.expect("request");
    assert_eq!(got.path, "/v1/metrics");
    let header = |n: &str| {
        got.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("content-encoding"), Some("gzip"));
    assert_eq!(header("content-type"), Some("application/x-protobuf"));
    assert_eq!(header("x-api-key"), Some("k1"));
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&got.body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, "hello");
}

#[tokio::test]
async fn a_hanging_backend_times_out_within_the_budget() {
    let backend = Backend::start(Behaviour::Hang).await;
    let s = sender();
    let r = s
        .post(
            &format!("{}/v1/logs", backend.url()),
            "application/x-protobuf",
            Bytes::from_static(b"x"),
            Duration::from_millis(50),
        )
        .await;
    assert!(matches!(r, Err(SendError::Timeout(_))), "{r:?}");
    backend.release();
}

#[tokio::test]
async fn reset_and_refused_connections_are_transport_errors() {
    let backend = Backend::start(Behaviour::Reset).await;
    let s = sender();
    let r = s
        .post(
            &backend.url(),
            "application/x-protobuf",
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(r, Err(SendError::Request(_))), "{r:?}");

    // A port nobody listens on: take one from a listener and close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = s
        .post(
            &format!("http://127.0.0.1:{port}/v1/metrics"),
            "application/x-protobuf",
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(r, Err(SendError::Connect(_))), "{r:?}");
    let r = s
        .post(
            "ftp://x/y",
            "application/x-protobuf",
            Bytes::new(),
            Duration::from_secs(1),
        )
        .await;
    assert!(matches!(r, Err(SendError::Url(_))), "{r:?}");
}

#[tokio::test]
async fn a_huge_answer_is_read_only_up_to_the_cap() {
    let backend = Backend::start(Behaviour::Status(
        200,
        vec![],
        vec![b'x'; 3 * MAX_ANSWER_BYTES],
    ))
    .await;
    let a = sender()
        .post(
            &backend.url(),
            "application/x-protobuf",
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), MAX_ANSWER_BYTES);
}

/// A raw HTTP/1 server that answers every request with `answer`, counting the
/// connections it accepted.
async fn raw_server(
    answer: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut have = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    // Requests here carry a Content-Length body of at most a few bytes.
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&have[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if have.len() < end + 4 + len {
                            break;
                        }
                        have.drain(..end + 4 + len);
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        if answer.contains("connection: close") {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn idle_connections_are_reused() {
    let (addr, accepted) = raw_server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let s = sender();
    for _ in 0..3 {
        let a = s
            .post(
                &format!("http://{addr}/v1/metrics"),
                "application/x-protobuf",
                Bytes::from_static(b"x"),
                Duration::from_secs(5),
            )
            .await
            .expect("answer");
        assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_not_reused() {
    let (addr, accepted) =
        raw_server("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
    let s = sender();
    for _ in 0..2 {
        let a = s
            .post(
                &format!("http://{addr}/v1/logs"),
                "application/x-protobuf",
                Bytes::from_static(b"x"),
                Duration::from_secs(5),
            )
            .await
            .expect("answer");
        assert_eq!(a.status, 200);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}
