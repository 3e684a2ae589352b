//! The Extensions API client: register, `/event/next`, `/init/error`, `/exit/error`, and the
//! PUT used by the Telemetry and Logs subscriptions.
//!
//! In: the runtime API base URL and loupe's extension name. Out: [`NextEvent`]s and typed
//! [`ApiError`]s. Every answer is untrusted: bodies are size-capped and decoded leniently.

use std::fmt;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::events::Fields;
use super::http::{Endpoint, HttpError, Response};

const EXTENSION_NAME: &str = "Lambda-Extension-Name";
const EXTENSION_ID: &str = "Lambda-Extension-Identifier";
const ERROR_TYPE: &str = "Lambda-Extension-Function-Error-Type";
const ACCEPT_FEATURE: &str = "Lambda-Extension-Accept-Feature";

/// Cap on any answer body from the Extensions API (events are a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Bound on calls that should answer at once (everything but `/event/next`): the API is local,
/// and init's 10 s budget is shared with the function.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{call} answered {status}: {body}")]
    Status {
        call: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("register answered without a {EXTENSION_ID} header")]
    NoIdentifier,
    #[error("{call} answer is not understood: {source}")]
    Decode {
        call: &'static str,
        source: serde_json::Error,
    },
}

impl ApiError {
    /// Lambda refused the call itself (a 4xx: unknown identifier, invalid state after the
    /// environment shut down, ...): asking again cannot succeed.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if status.is_client_error())
    }
}

/// The events an extension can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Invoke,
    Shutdown,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Invoke => "INVOKE",
            EventKind::Shutdown => "SHUTDOWN",
        }
    }
}

/// What register told us about the function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub handler: Option<String>,
    pub account_id: Option<String>,
}

/// A registered extension: every later call carries its identifier.
#[derive(Clone, Debug)]
pub struct ExtensionClient {
    endpoint: Endpoint,
    id: String,
}

/// `POST /2020-01-01/extension/register`. `name` must be the executable's file name.
pub async fn register(
    base_url: &str,
    name: &str,
    events: &[EventKind],
) -> Result<(ExtensionClient, Registration), ApiError> {
    let endpoint = Endpoint::parse(base_url)?;
    let events: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let body = serde_json::json!({ "events": events }).to_string();
    let resp = endpoint
        .send(
            Method::POST,
            "/2020-01-01/extension/register",
            &[(EXTENSION_NAME, name), (ACCEPT_FEATURE, "accountId")],
            body.into_bytes(),
            MAX_ANSWER_BYTES,
            Some(CALL_TIMEOUT),
        )
        .await?;
    let resp = ok(resp, "register")?;
    let id = resp
        .headers
        .get(EXTENSION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::NoIdentifier)?
        .to_string();
    // The body only informs; an odd one does not undo a successful registration.
    let registration = parse_registration(&resp.body).unwrap_or_default();
    Ok((ExtensionClient { endpoint, id }, registration))
}

impl ExtensionClient {
    /// The identifier Lambda assigned at register.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `GET /2020-01-01/extension/event/next`: blocks until the next event (no timeout, by
    /// design: the sandbox may freeze in the middle of it).
    pub async fn next_event(&self) -> Result<NextEvent, ApiError> {
        let resp = self
            .endpoint
            .send(
                Method::GET,
                "/2020-01-01/extension/event/next",
                &[(EXTENSION_ID, &self.id)],
                Vec::new(),
                MAX_ANSWER_BYTES,
                None,
            )
            .await?;
        let resp = ok(resp, "event/next")?;
        parse_next_event(&resp.body)
    }

    /// `POST /2020-01-01/extension/init/error`: after it, Lambda accepts no further call.
    pub async fn init_error(&self, error_type: &str, message: &str) -> Result<(), ApiError> {
        self.report_error("/2020-01-01/extension/init/error", error_type, message)
            .await
    }

    /// `POST /2020-01-01/extension/exit/error`: after it, Lambda accepts no further call.
    pub async fn exit_error(&self, error_type: &str, message: &str) -> Result<(), ApiError> {
        self.report_error("/2020-01-01/extension/exit/error", error_type, message)
            .await
    }

    async fn report_error(
        &self,
        path: &'static str,
        error_type: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let body = serde_json::json!({
            "errorMessage": message,
            "errorType": error_type,
            "stackTrace": [],
        })
        .to_string();
        let resp = self
            .endpoint
            .send(
                Method::POST,
                path,
                &[(EXTENSION_ID, &self.id), (ERROR_TYPE, error_type)],
                body.into_bytes(),
                MAX_ANSWER_BYTES,
                Some(CALL_TIMEOUT),
            )
            .await?;
        ok(resp, path).map(|_| ())
    }

    /// `PUT` a subscription request; returns the status and body as given (the caller decides
    /// what a refusal means).
    pub async fn put_subscription(
        &self,
        path: &'static str,
        body: &serde_json::Value,
    ) -> Result<(StatusCode, String), ApiError> {
        let resp = self
            .endpoint
            .send(
                Method::PUT,
                path,
                &[(EXTENSION_ID, &self.id)],
                body.to_string().into_bytes(),
                MAX_ANSWER_BYTES,
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok((resp.status, body_text(&resp.body)))
    }
}

fn ok(resp: Response, call: &'static str) -> Result<Response, ApiError> {
    if resp.status.is_success() {
        Ok(resp)
    } else {
        Err(ApiError::Status {
            call,
            status: resp.status,
            body: body_text(&resp.body),
        })
    }
}

/// An answer body for a log line: lossy UTF-8, at most 300 characters.
fn body_text(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut s: String = s.chars().take(300).collect();
    s.retain(|c| !c.is_control());
    s
}

/// An event from `/event/next`.
#[derive(Clone, Debug, PartialEq)]
pub enum NextEvent {
    Invoke(InvokeEvent),
    Shutdown(ShutdownEvent),
    /// An event type loupe does not know (it did not register for one): skipped.
    Other(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct InvokeEvent {
    pub request_id: String,
    /// When the invocation times out, ms since the epoch.
    pub deadline_ms: Option<u64>,
    pub invoked_function_arn: Option<String>,
    /// Absent in some emulators.
    pub tracing: Option<InvokeTracing>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokeTracing {
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ShutdownEvent {
    pub shutdown_reason: ShutdownReason,
    /// When the shutdown phase ends, ms since the epoch.
    pub deadline_ms: Option<u64>,
}

/// Documented as SPINDOWN, TIMEOUT, FAILURE; sent lowercase in practice; free text in some
/// emulators. Compared case-insensitively; anything else is kept as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ShutdownReason {
    Spindown,
    Timeout,
    Failure,
    Other(String),
    #[default]
    Unknown,
}

impl ShutdownReason {
    pub fn parse(s: &str) -> ShutdownReason {
        let t = s.trim();
        if t.eq_ignore_ascii_case("spindown") {
            ShutdownReason::Spindown
        } else if t.eq_ignore_ascii_case("timeout") {
            ShutdownReason::Timeout
        } else if t.eq_ignore_ascii_case("failure") {
            ShutdownReason::Failure
        } else {
            ShutdownReason::Other(s.chars().take(100).collect())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ShutdownReason::Spindown => "spindown",
            ShutdownReason::Timeout => "timeout",
            ShutdownReason::Failure => "failure",
            ShutdownReason::Other(s) => s,
            ShutdownReason::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes register's answer body.
fn parse_registration(body: &[u8]) -> Result<Registration, serde_json::Error> {
    let value: Value = serde_json::from_slice(body)?;
    let mut f = Fields::of(&value)?;
    Ok(Registration {
        function_name: f.str("functionName")?,
        function_version: f.str("functionVersion")?,
        handler: f.str("handler")?,
        account_id: f.str("accountId")?,
    })
}

/// Decodes an `/event/next` answer: parsed once, then read for the fields of its event type.
pub fn parse_next_event(body: &[u8]) -> Result<NextEvent, ApiError> {
    let decode = |source| ApiError::Decode {
        call: "event/next",
        source,
    };
    let value: Value = serde_json::from_slice(body).map_err(decode)?;
    let mut f = Fields::of(&value).map_err(decode)?;
    let event_type = f.required_str("eventType").map_err(decode)?;
    if event_type.eq_ignore_ascii_case("INVOKE") {
        let tracing = match f.object("tracing").map_err(decode)? {
            None => None,
            Some(mut t) => Some(InvokeTracing {
                kind: t.str("type").map_err(decode)?,
                value: t.str("value").map_err(decode)?,
            }),
        };
        Ok(NextEvent::Invoke(InvokeEvent {
            request_id: f.required_str("requestId").map_err(decode)?,
            deadline_ms: f.u64("deadlineMs").map_err(decode)?,
            invoked_function_arn: f.str("invokedFunctionArn").map_err(decode)?,
            tracing,
        }))
    } else if event_type.eq_ignore_ascii_case("SHUTDOWN") {
        Ok(NextEvent::Shutdown(ShutdownEvent {
            shutdown_reason: f
                .str("shutdownReason")
                .map_err(decode)?
                .map(|s| ShutdownReason::parse(&s))
                .unwrap_or_default(),
            deadline_ms: f.u64("deadlineMs").map_err(decode)?,
        }))
    } else {
        Ok(NextEvent::Other(event_type.chars().take(100).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_event() {
        let e = parse_next_event(
            br#"{"eventType":"INVOKE","deadlineMs":1700000123456,"requestId":"3da1f2dc-3222-475e-9205-e2e6c6318895",
                "invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:ExtensionTest",
                "tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5f35ae12-0c0fec141ab77a00bc047aa2;Parent=2be948a625588e32;Sampled=1"}}"#,
        )
        .unwrap();
        let NextEvent::Invoke(i) = e else {
            panic!("{e:?}")
        };
        assert_eq!(i.request_id, "3da1f2dc-3222-475e-9205-e2e6c6318895");
        assert_eq!(i.deadline_ms, Some(1_700_000_123_456));
        assert!(i.tracing.unwrap().value.unwrap().starts_with("Root=1-"));
    }

    #[test]
    fn invoke_without_tracing_and_float_deadline() {
        let e = parse_next_event(
            br#"{"eventType":"INVOKE","deadlineMs":1700000123456.0,"requestId":"r"}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            NextEvent::Invoke(InvokeEvent {
                request_id: "r".into(),
                deadline_ms: Some(1_700_000_123_456),
                invoked_function_arn: None,
                tracing: None,
            })
        );
    }

    #[test]
    fn shutdown_reasons_any_case_and_unknown() {
        for (reason, want) in [
            ("spindown", ShutdownReason::Spindown),
            ("SPINDOWN", ShutdownReason::Spindown),
            ("Timeout", ShutdownReason::Timeout),
            ("failure", ShutdownReason::Failure),
            (
                "the simulator stopped",
                ShutdownReason::Other("the simulator stopped".into()),
            ),
        ] {
            let body = format!(
                r#"{{"eventType":"SHUTDOWN","shutdownReason":"{reason}","deadlineMs":1700000125456}}"#
            );
            let NextEvent::Shutdown(s) = parse_next_event(body.as_bytes()).unwrap() else {
                panic!("{body}")
            };
            assert_eq!(s.shutdown_reason, want);
            assert_eq!(s.deadline_ms, Some(1_700_000_125_456));
        }
        let NextEvent::Shutdown(s) = parse_next_event(br#"{"eventType":"shutdown"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.shutdown_reason, ShutdownReason::Unknown);
        assert_eq!(s.deadline_ms, None);
    }

    #[test]
    fn registration_answer() {
        assert_eq!(
            parse_registration(
                br#"{"functionName":"f","functionVersion":"$LATEST","handler":"index.handler","accountId":"123456789012","new":1}"#
            )
            .unwrap(),
            Registration {
                function_name: Some("f".into()),
                function_version: Some("$LATEST".into()),
                handler: Some("index.handler".into()),
                account_id: Some("123456789012".into()),
            }
        );
        assert_eq!(parse_registration(b"{}").unwrap(), Registration::default());
        assert!(parse_registration(br#"{"functionName":1}"#).is_err());
        assert!(parse_registration(b"[]").is_err());
    }

    #[test]
    fn odd_answers_are_errors_or_skipped() {
        assert!(parse_next_event(b"").is_err());
        assert!(parse_next_event(b"{\"errorType\":\"Extension.InvalidExtensionState\"}").is_err());
        assert!(parse_next_event(br#"{"eventType":"INVOKE"}"#).is_err());
        assert!(parse_next_event(br#"{"eventType":5}"#).is_err());
        assert!(parse_next_event(br#"["INVOKE"]"#).is_err());
        assert!(
            parse_next_event(br#"{"eventType":"INVOKE","requestId":"r","deadlineMs":"soon"}"#)
                .is_err()
        );
        assert!(parse_next_event(br#"{"eventType":"SHUTDOWN","shutdownReason":["x"]}"#).is_err());
        assert_eq!(
            parse_next_event(br#"{"eventType":"RESTORE"}"#).unwrap(),
            NextEvent::Other("RESTORE".into())
        );
    }
}
