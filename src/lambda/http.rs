//! Requests to the Lambda APIs over [`crate::http`]: one TCP connection per request.
//!
//! In: a base URL (`http://host:port[/prefix]`), a method, a path, headers and a body.
//! Out: the status, headers and a size-capped body. A fresh connection per call is deliberate:
//! connections do not survive a sandbox freeze, and these calls are few (register, subscribe,
//! one /next per invocation).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};

use crate::http::{ConnectError, Connection, Origin, read_body};

/// Transport-level failures talking to a Lambda API.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad API base URL {0:?}")]
    BadUrl(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("response body over {0} bytes")]
    BodyTooLarge(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An answer from a Lambda API.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where the Lambda APIs live.
#[derive(Clone, Debug)]
pub struct Endpoint {
    origin: Origin,
    prefix: String,
}

impl Endpoint {
    /// `base` is `http://host:port` with an optional path prefix (emulators use one).
    pub fn parse(base: &str) -> Result<Endpoint, HttpError> {
        let bad = || HttpError::BadUrl(base.to_string());
        let uri: Uri = base.parse().map_err(|_| bad())?;
        let (origin, _) = Origin::of(&uri).ok_or_else(bad)?;
        if origin.https {
            return Err(bad());
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint { origin, prefix })
    }

    /// Sends one request on a new connection and reads at most `max_body` bytes of the answer.
    /// `timeout` bounds the whole exchange; `None` waits as long as it takes (`/event/next`
    /// blocks until the next event by design).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        max_body: usize,
        timeout: Option<Duration>,
    ) -> Result<Response, HttpError> {
        let exchange = self.exchange(method, path, headers, body, max_body);
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| HttpError::Timeout(t))?,
            None => exchange.await,
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.prefix, path))
            .header(hyper::header::HOST, self.origin.authority.as_str());
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        // A fresh connection per call; it closes when `conn` is dropped at the end.
        let mut conn = Connection::open(&self.origin, None, None).await?;
        let resp = conn.send(req).await.map_err(|(e, _)| e)?;
        let (parts, body) = resp.into_parts();
        let (body, over) = read_body(body, max_body).await;
        if over {
            return Err(HttpError::BodyTooLarge(max_body));
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!((e.origin.host.as_str(), e.origin.port), ("127.0.0.1", 9001));
        assert_eq!(e.prefix, "");
        let e = Endpoint::parse("http://[::1]:9000/.rt/").unwrap();
        assert_eq!((e.origin.host.as_str(), e.origin.port), ("::1", 9000));
        assert_eq!(e.prefix, "/.rt");
        assert_eq!(e.origin.authority, "[::1]:9000");
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
