//! One HTTP POST to the backend, bounded in time and in what it reads back.
//!
//! In: a URL, a content type, a gzip body, headers from config, and a deadline. Out: an
//! [`Answer`]: the status with its `Retry-After` and the first bytes of the body, or a transport
//! error. No retry policy here (see `retry`). A few idle connections are kept for 30 s; when a
//! reused one turns out dead (a freeze kills idle connections) before the request was written,
//! the request goes out on a new connection; one that may have arrived is never resent.
//!
//! TLS is rustls with the system's root certificates, loaded on the first https request rather
//! than at start (start-up time is the user's cold start).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use tokio::time::Instant;

use crate::http::{Connection, Origin, error_chain, read_body};

/// At most this much of an answer's body is read (enough for any partial_success message).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept, at most (one per signal is plenty).
const MAX_IDLE: usize = 4;

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

struct Idle {
    origin: Origin,
    conn: Connection,
    since: Instant,
}

pub struct HttpSender {
    headers: Vec<(HeaderName, HeaderValue)>,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
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
            idle: Mutex::new(Vec::new()),
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

    fn tls_config(&self) -> Result<&Arc<rustls::ClientConfig>, SendError> {
        self.tls
            .get_or_init(tls_config)
            .as_ref()
            .map_err(|e| SendError::Tls(e.clone()))
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
        let bad_url = || SendError::Url(url.to_string());
        let uri: Uri = url.parse().map_err(|_| bad_url())?;
        let (origin, path) = Origin::of(&uri).ok_or_else(bad_url)?;
        let tls = if origin.https {
            Some(self.tls_config()?)
        } else {
            None
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, origin.authority.as_str())
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
        let deadline = Instant::now() + timeout;
        let (answer, conn) =
            match tokio::time::timeout_at(deadline, self.exchange(&origin, tls, req)).await {
                Ok(r) => r?,
                Err(_) => return Err(SendError::Timeout(timeout)),
            };
        // The answer is in: keeping the connection for later must not turn it into a timeout, so
        // waiting for the connection to be idle again has its own bound, the same deadline.
        if let Some(mut conn) = conn {
            if let Ok(true) = tokio::time::timeout_at(deadline, conn.ready()).await {
                self.checkin(&origin, conn);
            }
        }
        Ok(answer)
    }

    async fn exchange(
        &self,
        origin: &Origin,
        tls: Option<&Arc<rustls::ClientConfig>>,
        req: Request<Full<Bytes>>,
    ) -> Result<(Answer, Option<Connection>), SendError> {
        let (mut conn, reused) = match self.checkout(origin) {
            Some(conn) => (conn, true),
            None => (self.connect(origin, tls).await?, false),
        };
        let resp = match conn.send(req).await {
            Ok(resp) => resp,
            // A reused connection that turned out closed before the request was written (a
            // freeze kills idle connections): the request goes out once more on a new one. One
            // that may have reached the backend is never resent here.
            Err((_, Some(req))) if reused => {
                conn = self.connect(origin, tls).await?;
                conn.send(req)
                    .await
                    .map_err(|(e, _)| SendError::Request(error_chain(&e)))?
            }
            Err((e, _)) => return Err(SendError::Request(error_chain(&e))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read a bounded prefix of the body; a larger answer is cut, never buffered whole, and its
        // connection is not reused (the rest of the answer is still on it).
        let (body, cut) = read_body(resp.into_body(), MAX_ANSWER_BYTES).await;
        let answer = Answer {
            status,
            retry_after,
            body,
        };
        Ok((answer, (!cut).then_some(conn)))
    }

    async fn connect(
        &self,
        origin: &Origin,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Connection, SendError> {
        Connection::open(origin, tls, Some(self.connect_timeout))
            .await
            .map_err(|e| SendError::Connect(error_chain(&e)))
    }

    /// An idle connection to `origin` that is still open, if any; stale ones are closed.
    fn checkout(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        idle.retain(|i| i.conn.is_ready() && now.duration_since(i.since) < IDLE_TIMEOUT);
        let at = idle.iter().rposition(|i| &i.origin == origin)?;
        Some(idle.swap_remove(at).conn)
    }

    fn checkin(&self, origin: &Origin, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            origin: origin.clone(),
            conn,
            since: Instant::now(),
        });
    }
}

/// The TLS client configuration: the system's root certificates and a trimmed provider.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = system_roots()?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// rustls' *ring* provider cut to what a client that never presents a certificate needs: the
/// AES-GCM suites of TLS 1.3 and 1.2 (every server offers them; AES-NI and the Arm crypto
/// extensions make them the fast choice on Lambda's CPUs), all key exchange groups, the same
/// signature checks as rustls' own provider, and no private key loading. Built from parts rather
/// than from `default_provider()`, so ChaCha20-Poly1305 and the signing code stay out of the
/// binary.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        kx_groups: rustls::crypto::ring::ALL_KX_GROUPS.to_vec(),
        signature_verification_algorithms: SIGNATURE_CHECKS,
        secure_random: &SystemRandom,
        key_provider: &NoClientKeys,
    }
}

/// Certificate and handshake signature checks: ECDSA (P-256, P-384), Ed25519, RSA PSS and
/// PKCS#1 v1.5 (2048 to 8192 bits).
static SIGNATURE_CHECKS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as S;
    use webpki::ring as alg;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        // TLS 1.2 does not tie an ECDSA scheme to a curve, so each maps to both.
        mapping: &[
            (
                S::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                S::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (S::ED25519, &[alg::ED25519]),
            (
                S::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// Randomness for handshakes, from the operating system through *ring*.
#[derive(Debug)]
struct SystemRandom;

impl rustls::crypto::SecureRandom for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// loupe presents no client certificate, so it loads no private key.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "client certificates are not supported".into(),
        ))
    }
}

fn system_roots() -> Result<rustls::RootCertStore, String> {
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
