//! The HTTP face of the sandbox: one port on 127.0.0.1 serving the Runtime API (2018-06-01),
//! the Extensions API (2020-01-01), the Telemetry API (2022-07-01) and the Logs API (2020-08-15).
//!
//! In: HTTP requests from the runtime and the extensions. Out: an [`ApiCall`] plus a reply slot,
//! sent to the sandbox, which owns every decision; its [`Reply`] becomes the HTTP answer (a
//! `/next` reply may come much later). Routing is a pure function.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::records::Api;

/// Largest request body accepted (Lambda's synchronous response limit is 6 MB).
pub const MAX_BODY: usize = 6 * 1024 * 1024;

/// A request, decoded.
#[derive(Debug, PartialEq)]
pub enum ApiCall {
    RuntimeNext,
    RuntimeResponse {
        request_id: String,
        body: Bytes,
    },
    RuntimeError {
        request_id: String,
        error_type: Option<String>,
        body: Bytes,
    },
    RuntimeInitError {
        error_type: Option<String>,
        body: Bytes,
    },
    Register {
        name: Option<String>,
        /// `Lambda-Extension-Accept-Feature` lists `accountId`.
        account_id: bool,
        body: Bytes,
    },
    ExtensionNext {
        id: Option<String>,
    },
    ExtensionError {
        id: Option<String>,
        init: bool,
        error_type: Option<String>,
    },
    Subscribe {
        api: Api,
        id: Option<String>,
        body: Bytes,
    },
    NotFound {
        method: String,
        path: String,
    },
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: Bytes::from(body.to_string()),
        }
    }

    /// `{"errorType": ..., "errorMessage": ...}` with `status`.
    pub fn error(status: u16, error_type: &str, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"errorType": error_type, "errorMessage": message}),
        )
    }

    pub fn accepted() -> Reply {
        Reply::json(202, &json!({"status": "OK"}))
    }
}

/// What the server hands the sandbox.
pub type Call = (ApiCall, oneshot::Sender<Reply>);

fn header(req_headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    req_headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

/// Decodes method + path + headers into a call.
pub fn route(method: &str, path: &str, headers: &hyper::HeaderMap, body: Bytes) -> ApiCall {
    let id = || header(headers, "lambda-extension-identifier");
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/2018-06-01/runtime/invocation/next") => ApiCall::RuntimeNext,
        ("POST", "/2018-06-01/runtime/init/error") => ApiCall::RuntimeInitError {
            error_type: header(headers, "lambda-runtime-function-error-type"),
            body,
        },
        ("POST", "/2020-01-01/extension/register") => ApiCall::Register {
            name: header(headers, "lambda-extension-name"),
            account_id: header(headers, "lambda-extension-accept-feature")
                .is_some_and(|f| f.split(',').any(|x| x.trim() == "accountId")),
            body,
        },
        ("GET", "/2020-01-01/extension/event/next") => ApiCall::ExtensionNext { id: id() },
        ("POST", "/2020-01-01/extension/init/error")
        | ("POST", "/2020-01-01/extension/exit/error") => ApiCall::ExtensionError {
            id: id(),
            init: path.ends_with("init/error"),
            error_type: header(headers, "lambda-extension-function-error-type"),
        },
        ("PUT", "/2022-07-01/telemetry") => ApiCall::Subscribe {
            api: Api::Telemetry,
            id: id(),
            body,
        },
        ("PUT", "/2020-08-15/logs") => ApiCall::Subscribe {
            api: Api::Logs,
            id: id(),
            body,
        },
        ("POST", p) if p.starts_with("/2018-06-01/runtime/invocation/") => {
            let rest = p
                .strip_prefix("/2018-06-01/runtime/invocation/")
                .unwrap_or_default();
            match rest.split_once('/') {
                Some((rid, "response")) if !rid.is_empty() => ApiCall::RuntimeResponse {
                    request_id: rid.to_string(),
                    body,
                },
                Some((rid, "error")) if !rid.is_empty() => ApiCall::RuntimeError {
                    request_id: rid.to_string(),
                    error_type: header(headers, "lambda-runtime-function-error-type"),
                    body,
                },
                _ => ApiCall::NotFound {
                    method: method.to_string(),
                    path: p.to_string(),
                },
            }
        }
        _ => ApiCall::NotFound {
            method: method.to_string(),
            path: path.to_string(),
        },
    }
}

/// Binds 127.0.0.1:`port` and serves until the sandbox's receiver is gone. Returns the address.
pub async fn serve(port: u16, calls: mpsc::Sender<Call>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            if calls.is_closed() {
                break;
            }
            let calls = calls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, calls.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    req: Request<Incoming>,
    calls: mpsc::Sender<Call>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let reply = match Limited::new(body, MAX_BODY).collect().await {
        Err(_) => Reply::error(
            413,
            "RequestEntityTooLarge",
            "request body too large or unreadable",
        ),
        Ok(b) => {
            let call = route(
                parts.method.as_str(),
                parts.uri.path(),
                &parts.headers,
                b.to_bytes(),
            );
            let (tx, rx) = oneshot::channel();
            if calls.send((call, tx)).await.is_err() {
                Reply::error(500, "ServiceUnavailable", "the sandbox is shutting down")
            } else {
                rx.await.unwrap_or_else(|_| {
                    Reply::error(500, "ServiceUnavailable", "the sandbox is shutting down")
                })
            }
        }
    };
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn routes_every_endpoint() {
        let none = headers(&[]);
        let b = Bytes::new;
        assert_eq!(
            route("GET", "/2018-06-01/runtime/invocation/next", &none, b()),
            ApiCall::RuntimeNext
        );
        assert_eq!(
            route(
                "POST",
                "/2018-06-01/runtime/invocation/abc/response",
                &none,
                Bytes::from("1")
            ),
            ApiCall::RuntimeResponse {
                request_id: "abc".into(),
                body: Bytes::from("1")
            }
        );
        let h = headers(&[("lambda-runtime-function-error-type", "Boom")]);
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/abc/error", &h, b()),
            ApiCall::RuntimeError {
                request_id: "abc".into(),
                error_type: Some("Boom".into()),
                body: b()
            }
        );
        assert!(matches!(
            route("POST", "/2018-06-01/runtime/init/error", &h, b()),
            ApiCall::RuntimeInitError { .. }
        ));
        let h = headers(&[
            ("lambda-extension-name", "ext"),
            ("lambda-extension-identifier", "id1"),
        ]);
        assert_eq!(
            route("POST", "/2020-01-01/extension/register", &h, b()),
            ApiCall::Register {
                name: Some("ext".into()),
                account_id: false,
                body: b()
            }
        );
        assert_eq!(
            route("GET", "/2020-01-01/extension/event/next", &h, b()),
            ApiCall::ExtensionNext {
                id: Some("id1".into())
            }
        );
        assert!(matches!(
            route("POST", "/2020-01-01/extension/exit/error", &h, b()),
            ApiCall::ExtensionError { init: false, .. }
        ));
        assert!(matches!(
            route("POST", "/2020-01-01/extension/init/error", &h, b()),
            ApiCall::ExtensionError { init: true, .. }
        ));
        assert!(matches!(
            route("PUT", "/2022-07-01/telemetry", &h, b()),
            ApiCall::Subscribe {
                api: Api::Telemetry,
                ..
            }
        ));
        assert!(matches!(
            route("PUT", "/2020-08-15/logs", &h, b()),
            ApiCall::Subscribe { api: Api::Logs, .. }
        ));
        assert!(matches!(
            route(
                "POST",
                "/2018-06-01/runtime/invocation//response",
                &none,
                b()
            ),
            ApiCall::NotFound { .. }
        ));
        assert!(matches!(
            route("GET", "/nope", &none, b()),
            ApiCall::NotFound { .. }
        ));
    }
}
