//! The HTTP sender over TLS against a local rustls server whose certificates are signed by a test
//! CA (tests/fixtures/tls), trusted through `SSL_CERT_FILE` as a user would: ECDSA and RSA
//! certificates, TLS 1.3 and TLS 1.2, and a plain-HTTP server spoken to as https.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use loupe::export::http::{HttpSender, SendError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// Starts a TLS server with the named certificate that answers every request with 200 and
/// `served over TLS`; `versions` limits the protocol versions it speaks.
async fn tls_server(cert: &str, versions: &[&'static rustls::SupportedProtocolVersion]) -> u16 {
    let chain =
        vec![CertificateDer::from_pem_file(format!("{FIXTURES}/{cert}.pem")).expect("certificate")];
    let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/{cert}.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"served over TLS"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

async fn post(sender: &HttpSender, url: &str) -> Result<loupe::export::http::Answer, SendError> {
    sender
        .post(
            url,
            "application/x-protobuf",
            Bytes::from_static(b"x"),
            Duration::from_secs(10),
        )
        .await
}

#[test]
fn https_with_system_roots() {
    // SAFETY: this is the only test in this binary and it sets the variable before any thread
    // of its own exists, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("SSL_CERT_FILE", format!("{FIXTURES}/ca.pem")) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sender = HttpSender::new(&[], Duration::from_secs(2));
        let all = rustls::ALL_VERSIONS;
        let tls12 = &[&rustls::version::TLS12];
        for (cert, versions, host) in [
            ("server-ec", all, "localhost"),
            ("server-ec", all, "127.0.0.1"),
            ("server-rsa", all, "localhost"),
            ("server-ec", &tls12[..], "localhost"),
            ("server-rsa", &tls12[..], "localhost"),
        ] {
            let port = tls_server(cert, versions).await;
            let url = format!("https://{host}:{port}/v1/metrics");
            let a = post(&sender, &url)
                .await
                .unwrap_or_else(|e| panic!("{cert} {host}: {e}"));
            assert_eq!(a.status, 200, "{cert} {host}");
            assert_eq!(&a.body[..], b"served over TLS", "{cert} {host}");
            // Again, on the pooled connection.
            let a = post(&sender, &url).await.expect("second request");
            assert_eq!(a.status, 200);
        }

        // A server that speaks plain HTTP where TLS is expected: a connect error, not a hang.
        let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = plain.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = plain.accept().await {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        let r = post(&sender, &format!("https://127.0.0.1:{port}/v1/metrics")).await;
        assert!(matches!(r, Err(SendError::Connect(_))), "{r:?}");
    });
}
