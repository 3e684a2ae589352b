//! One small HTTP/1 client for everything loupe sends: the Lambda APIs and the backend.
//!
//! In: an [`Origin`] (scheme, host, port) and, for https, a rustls client configuration. Out: a
//! [`Connection`] that sends requests and a [`read_body`] that reads at most a given number of
//! bytes of an answer. Plain TCP and TLS share one stream type, so hyper's client is built once
//! for both; pooling, timeouts and retries are the callers' business.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// Where requests go: scheme, host and port of a URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    /// The host without IPv6 brackets (for connecting and for TLS).
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written in the URL, for the `Host` header.
    pub authority: String,
}

impl Origin {
    /// The origin of an `http://` or `https://` URL, and its path and query (`/` when empty).
    pub fn of(uri: &Uri) -> Option<(Origin, String)> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return None,
        };
        let auth = uri.authority()?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        // The authority without user info, which never goes on the wire.
        let authority = auth
            .as_str()
            .rsplit_once('@')
            .map_or(auth.as_str(), |(_, a)| a)
            .to_string();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        Some((
            Origin {
                https,
                host: host.to_string(),
                port,
                authority,
            },
            path.to_string(),
        ))
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Tcp { addr: String, source: io::Error },
    #[error("connect to {0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("TLS handshake with {addr}: {source}")]
    Tls { addr: String, source: io::Error },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("an https origin needs a TLS configuration")]
    NoTls,
    #[error("HTTP handshake with {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
}

/// A TCP stream, plain or inside TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One HTTP/1 connection. Dropping it closes the connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    /// Opens a connection to `origin`; `connect_timeout` bounds the TCP connect (the TLS and HTTP
    /// handshakes are bounded by the caller's overall timeout). Boxed, so its state machine is
    /// compiled once rather than into each caller's.
    pub fn open<'a>(
        origin: &'a Origin,
        tls: Option<&'a Arc<rustls::ClientConfig>>,
        connect_timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, ConnectError>> + Send + 'a>> {
        Box::pin(Connection::open_inner(origin, tls, connect_timeout))
    }

    async fn open_inner(
        origin: &Origin,
        tls: Option<&Arc<rustls::ClientConfig>>,
        connect_timeout: Option<Duration>,
    ) -> Result<Connection, ConnectError> {
        let connect = TcpStream::connect((origin.host.as_str(), origin.port));
        let tcp = match connect_timeout {
            Some(t) => tokio::time::timeout(t, connect)
                .await
                .map_err(|_| ConnectError::Timeout(origin.authority.clone(), t))?,
            None => connect.await,
        }
        .map_err(|source| ConnectError::Tcp {
            addr: origin.authority.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let stream = if origin.https {
            let config = tls.ok_or(ConnectError::NoTls)?;
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|_| ConnectError::ServerName(origin.host.clone()))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|source| ConnectError::Tls {
                    addr: origin.authority.clone(),
                    source,
                })?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Http {
                addr: origin.authority.clone(),
                source,
            })?;
        // The connection task ends when the peer closes or the `Connection` is dropped.
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender, task })
    }

    /// Whether the connection can take a request now (an idle one the peer closed cannot).
    pub fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }

    /// Waits until the connection can take another request; false when it closed instead.
    pub async fn ready(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// Sends one request. On an error, the request comes back if it was never written (the
    /// connection was closed first), so it can go out again on a new connection.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, (hyper::Error, Option<Request<Full<Bytes>>>)> {
        self.sender.try_send_request(req).await.map_err(|mut e| {
            let req = e.take_message();
            (e.into_error(), req)
        })
    }
}

/// Reads at most `max` bytes of a body. Returns the bytes and whether the body held more; a body
/// cut short by the peer ends the read with what arrived.
pub async fn read_body(mut body: Incoming, max: usize) -> (Bytes, bool) {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = max.saturating_sub(out.len());
            if data.len() > room {
                out.extend_from_slice(data.get(..room).unwrap_or_default());
                return (Bytes::from(out), true);
            }
            out.extend_from_slice(&data);
        }
    }
    (Bytes::from(out), false)
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Option<(Origin, String)> {
        Origin::of(&url.parse().ok()?)
    }

    #[test]
    fn origins_of_urls() {
        let (o, p) = origin("http://127.0.0.1:9001").unwrap();
        assert_eq!(
            (o.https, o.host.as_str(), o.port, o.authority.as_str()),
            (false, "127.0.0.1", 9001, "127.0.0.1:9001")
        );
        assert_eq!(p, "/");
        let (o, p) = origin("https://user:pw@api.example.com/v1/metrics?x=1").unwrap();
        assert_eq!(
            (o.https, o.host.as_str(), o.port, o.authority.as_str()),
            (true, "api.example.com", 443, "api.example.com")
        );
        assert_eq!(p, "/v1/metrics?x=1");
        let (o, _) = origin("http://[::1]:9000/.rt/").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        assert!(origin("ftp://x/y").is_none());
        assert!(origin("/relative").is_none());
    }
}
