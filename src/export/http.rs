//! One HTTP POST to the backend, bounded in time and in what it reads back.
//!
//! In: a URL, a content type, a gzip body, headers from config, and a deadline. Out: an
//! [`Answer`]: the status with its `Retry-After` and the first bytes of the body, or a transport
//! error. No retry policy here (see `retry`). Idle connections are pooled for 30 s; one that died
//! idle (a freeze kills them) before the request was written is replaced by the client on its own,
//! which never resends a request that may have arrived.
//!
//! TLS is rustls with the system's root certificates, loaded on the first https request rather
//! than at start (start-up time is the user's cold start).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// At most this much of an answer's body is read (enough for any partial_success message).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the backend answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

type PlainClient = Client<HttpConnector, Full<Bytes>>;
type TlsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct HttpSender {
    headers: Vec<(HeaderName, HeaderValue)>,
    connect_timeout: Duration,
    plain: PlainClient,
    tls: OnceLock<Result<TlsClient, String>>,
}

impl HttpSender {
    /// `headers` that are not valid HTTP are skipped (config reports them).
    pub fn new(headers: &[(String, String)], connect_timeout: Duration) -> HttpSender {
        let headers = headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        HttpSender {
            headers,
            connect_timeout,
            plain: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector(connect_timeout)),
            tls: OnceLock::new(),
        }
    }

    /// Adds a header to every backend request from now on (the API key, once fetched). A name
    /// or value that is not valid HTTP is refused.
    pub fn add_header(&mut self, name: &str, value: &str) -> bool {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                self.headers.retain(|(h, _)| h != n);
                self.headers.push((n, v));
                true
            }
            _ => false,
        }
    }

    fn tls_client(&self) -> Result<&TlsClient, SendError> {
        let built = self.tls.get_or_init(|| {
            let roots = rustls_native_certs();
            let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots?)
            .with_no_client_auth();
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector(self.connect_timeout));
            Ok(Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https))
        });
        built.as_ref().map_err(|e| SendError::Tls(e.clone()))
    }

    /// POSTs `body` (already gzip-compressed) to the backend at `url`, with the configured
    /// headers, giving up after `timeout`.
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        self.post_tagged(url, content_type, &[], body, timeout)
            .await
    }

    /// As [`HttpSender::post`], with `extra` headers for this request only (its batch id).
    pub async fn post_tagged(
        &self,
        url: &str,
        content_type: &'static str,
        extra: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        let mut headers = vec![
            (
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            ),
            (
                hyper::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            ),
        ];
        headers.extend(self.headers.iter().cloned());
        headers.extend(extra.iter().cloned());
        self.post_with(url, &headers, body, timeout).await
    }

    /// POSTs `body` to `url` with exactly `headers` (plus user-agent), giving up after `timeout`.
    /// The configured backend headers are not added: they are secrets meant for the backend only.
    pub async fn post_with(
        &self,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        let uri: Uri = url.parse().map_err(|_| SendError::Url(url.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(SendError::Url(url.to_string())),
        };
        let attempt = async {
            let mut builder = Request::builder()
                .method(Method::POST)
                .uri(uri.clone())
                .header(
                    hyper::header::USER_AGENT,
                    concat!("loupe/", env!("CARGO_PKG_VERSION")),
                );
            for (n, v) in headers {
                builder = builder.header(n, v);
            }
            let req = builder
                .body(Full::new(body))
                .map_err(|e| SendError::Request(e.to_string()))?;
            let result = if https {
                self.tls_client()?.request(req).await
            } else {
                self.plain.request(req).await
            };
            match result {
                Ok(resp) => read_answer(resp).await,
                Err(e) if e.is_connect() => Err(SendError::Connect(error_chain(&e))),
                Err(e) => Err(SendError::Request(error_chain(&e))),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }
}

fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(connect_timeout));
    c.set_nodelay(true);
    c.enforce_http(false);
    c
}

fn rustls_native_certs() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no usable root certificates on this system ({} errors)",
            found.errors.len()
        ));
    }
    Ok(roots)
}

async fn read_answer(resp: hyper::Response<hyper::body::Incoming>) -> Result<Answer, SendError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Read a bounded prefix of the body; a larger answer is cut, never buffered whole.
    let mut body = Vec::new();
    let mut incoming = resp.into_body();
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
                    body.extend_from_slice(&data[..data.len().min(room)]);
                    if body.len() >= MAX_ANSWER_BYTES {
                        break;
                    }
                }
            }
            // The status already arrived; a body cut short does not change the verdict.
            Err(_) => break,
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body: Bytes::from(body),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
