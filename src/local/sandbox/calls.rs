//! How the sandbox answers each API call: the Runtime API's results, registration, the
//! extensions' `/next`, error reports and Telemetry / Logs subscriptions, with Lambda's refusals.
//!
//! In: one decoded [`ApiCall`] and its reply slot. Out: the reply (now, or later for `/next`),
//! plus the state changes and records the call causes.

use std::time::Instant;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{ACCOUNT_ID, Sandbox, seconds_ms};
use crate::local::api::{ApiCall, Reply};
use crate::local::args::ApiSwitch;
use crate::local::records::{Api, Kind};
use crate::local::report::{RefusedEntry, SubscriptionEntry};
use crate::local::telemetry::{self, Subscriber};
use crate::local::util;

impl Sandbox {
    pub(super) fn refuse(&mut self, ext: Option<String>, request: &str, reply: &Reply) {
        let error_type = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| {
                v.get("errorType")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        self.report.refuse(RefusedEntry {
            extension: ext,
            request: request.to_string(),
            status: reply.status,
            error_type,
        });
    }

    pub(super) fn ext_by_id(&self, id: &Option<String>) -> Result<usize, Reply> {
        let Some(id) = id else {
            return Err(Reply::error(
                403,
                "Extension.MissingExtensionIdentifier",
                "missing Lambda-Extension-Identifier",
            ));
        };
        self.env
            .extensions
            .iter()
            .position(|e| e.ext_id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| {
                Reply::error(
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    "unknown extension identifier",
                )
            })
    }

    pub(super) fn handle_call(&mut self, call: ApiCall, reply: oneshot::Sender<Reply>) {
        let answer = match call {
            // The two /next calls keep their reply slot to answer when an event comes.
            ApiCall::RuntimeNext => return self.runtime_next(reply),
            ApiCall::ExtensionNext { id } => return self.extension_next(id, reply),
            ApiCall::RuntimeResponse { request_id, body } => {
                self.runtime_result(&request_id, Some(body), None)
            }
            ApiCall::RuntimeError {
                request_id,
                error_type,
                body,
            } => {
                let ty = error_type
                    .or_else(|| {
                        serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                            v.get("errorType")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                    })
                    .unwrap_or_else(|| "Unhandled".to_string());
                self.runtime_result(&request_id, Some(body), Some(ty))
            }
            ApiCall::RuntimeInitError { error_type, .. } => {
                match (&mut self.env.runtime, self.env.init_open) {
                    (Some(r), true) => {
                        r.init_error = Some(error_type.unwrap_or_else(|| "Runtime.Unknown".into()));
                        Reply::accepted()
                    }
                    _ => Reply::error(403, "Runtime.InvalidStateTransition", "init is over"),
                }
            }
            ApiCall::Register {
                name,
                account_id,
                body,
            } => self.register(name, account_id, &body),
            ApiCall::ExtensionError { id, error_type, .. } => match self.ext_by_id(&id) {
                Err(r) => r,
                Ok(i) => {
                    let ty = error_type.unwrap_or_else(|| "Extension.Unknown".into());
                    let e = &mut self.env.extensions[i];
                    e.error = Some(ty.clone());
                    e.pending = None;
                    if let Some(r) = self.report.extensions.get_mut(e.report_idx) {
                        r.error_type = Some(ty.clone());
                    }
                    Reply::accepted()
                }
            },
            ApiCall::Subscribe { api, id, body } => self.subscribe(api, id, &body),
            ApiCall::NotFound { method, path } => {
                Reply::error(404, "NotFound", &format!("no route for {method} {path}"))
            }
        };
        let _ = reply.send(answer);
    }

    pub(super) fn runtime_next(&mut self, reply: oneshot::Sender<Reply>) {
        let Some(r) = &mut self.env.runtime else {
            let _ = reply.send(Reply::error(
                403,
                "Runtime.InvalidStateTransition",
                "no runtime",
            ));
            return;
        };
        if let Some(q) = r.queued.take() {
            let _ = reply.send(q);
            return;
        }
        r.pending = Some(reply);
        if let Some(inv) = &mut self.env.invocation {
            if inv.delivered && inv.runtime_done_at.is_none() {
                inv.runtime_done_at = Some(Instant::now());
            }
        }
    }

    pub(super) fn runtime_result(
        &mut self,
        request_id: &str,
        body: Option<Bytes>,
        error: Option<String>,
    ) -> Reply {
        match &mut self.env.invocation {
            Some(inv)
                if inv.request_id == request_id
                    && inv.response_at.is_none()
                    && inv.runtime_done_at.is_none() =>
            {
                inv.response = body;
                inv.response_at = Some(Instant::now());
                inv.error_type = error;
                Reply::accepted()
            }
            Some(inv) if inv.request_id == request_id => {
                Reply::error(400, "InvalidStateTransition", "a result was already posted")
            }
            _ => Reply::error(400, "InvalidRequestID", "unknown or finished request id"),
        }
    }

    pub(super) fn register(
        &mut self,
        name: Option<String>,
        account_id: bool,
        body: &[u8],
    ) -> Reply {
        let reply = self.try_register(name.clone(), account_id, body);
        if reply.status != 200 {
            self.refuse(name, "register", &reply);
        }
        reply
    }

    pub(super) fn try_register(
        &mut self,
        name: Option<String>,
        account_id: bool,
        body: &[u8],
    ) -> Reply {
        if !self.env.init_open {
            return Reply::error(
                403,
                "Extension.RegistrationClosed",
                "registration is closed after init",
            );
        }
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Reply::error(
                403,
                "Extension.InvalidExtensionName",
                "missing Lambda-Extension-Name",
            );
        };
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Reply::error(403, "InvalidRequestFormat", "body is not JSON");
        };
        if v.get("configurationKeys").is_some() {
            return Reply::error(
                403,
                "InvalidRequestFormat",
                "configurationKeys are deprecated",
            );
        }
        let Some(events) = v.get("events").and_then(Value::as_array) else {
            return Reply::error(403, "InvalidRequestFormat", "events must be an array");
        };
        let mut names = Vec::new();
        for e in events {
            match e.as_str() {
                Some("INVOKE") if self.managed() => {
                    return Reply::error(
                        403,
                        "Extension.InvalidEventType",
                        "INVOKE is not available to external extensions on Lambda Managed Instances",
                    );
                }
                Some(s @ ("INVOKE" | "SHUTDOWN")) => names.push(s.to_string()),
                _ => {
                    return Reply::error(
                        403,
                        "Extension.InvalidEventType",
                        &format!("unknown event {e}"),
                    );
                }
            }
        }
        let Some(i) = self
            .env
            .extensions
            .iter()
            .position(|e| e.name == name && e.ext_id.is_none())
        else {
            return Reply::error(
                403,
                "Extension.InvalidExtensionName",
                &format!("no unregistered extension named {name:?} was started"),
            );
        };
        let id = util::uuid_v4();
        let e = &mut self.env.extensions[i];
        e.ext_id = Some(id.clone());
        e.events = names.clone();
        if let Some(r) = self.report.extensions.get_mut(e.report_idx) {
            r.registered = true;
            r.registered_events = names.clone();
        }
        self.emit(Kind::Extension {
            name,
            state: "Ready",
            events: names,
            error_type: None,
        });
        Reply {
            status: 200,
            headers: vec![
                ("lambda-extension-identifier", id),
                ("content-type", "application/json".into()),
            ],
            body: Bytes::from({
                let mut body = json!({
                    "functionName": self.opts.function_name,
                    "functionVersion": "$LATEST",
                    "handler": self.opts.handler,
                });
                if let (true, Some(obj)) = (account_id, body.as_object_mut()) {
                    obj.insert("accountId".into(), json!(ACCOUNT_ID));
                }
                body.to_string()
            }),
        }
    }

    pub(super) fn extension_next(&mut self, id: Option<String>, reply: oneshot::Sender<Reply>) {
        let i = match self.ext_by_id(&id) {
            Ok(i) => i,
            Err(r) => {
                self.refuse(None, "next", &r);
                let _ = reply.send(r);
                return;
            }
        };
        let e = &mut self.env.extensions[i];
        // A SHUTDOWN queued while the extension was busy (it was not waiting in /next when the
        // environment began to shut down) is what this /next gets, as on Lambda; only a /next
        // after the SHUTDOWN was handed over is refused.
        if let Some((_, q)) = e.queued.take_if(|(shutdown, _)| *shutdown) {
            e.shutdown_sent_at.get_or_insert_with(Instant::now);
            let _ = reply.send(q);
            return;
        }
        if e.shutdown_sent_at.is_some() || e.error.is_some() {
            let r = Reply::error(
                403,
                "Extension.InvalidExtensionState",
                "the extension was shut down",
            );
            let name = e.name.clone();
            self.refuse(Some(name), "next", &r);
            let _ = reply.send(r);
            return;
        }
        if !e.ready {
            let ms = seconds_ms(e.spawned_at.elapsed());
            let idx = e.report_idx;
            if let Some(r) = self.report.extensions.get_mut(idx) {
                r.init_ms.get_or_insert(ms);
            }
        }
        let e = &mut self.env.extensions[i];
        e.ready = true;
        if let Some((shutdown, q)) = e.queued.take() {
            if shutdown {
                e.shutdown_sent_at = Some(Instant::now());
            }
            let _ = reply.send(q);
            return;
        }
        e.pending = Some(reply);
        if e.busy {
            e.busy = false;
            e.done_at = Some(Instant::now());
        }
    }

    pub(super) fn subscribe(&mut self, api: Api, id: Option<String>, body: &[u8]) -> Reply {
        let name = self
            .ext_by_id(&id)
            .ok()
            .map(|i| self.env.extensions[i].name.clone());
        let reply = self.try_subscribe(api, id, body);
        if reply.status != 200 {
            let what = match api {
                Api::Telemetry => "telemetry",
                Api::Logs => "logs",
            };
            self.refuse(name, what, &reply);
        }
        reply
    }

    pub(super) fn try_subscribe(&mut self, api: Api, id: Option<String>, body: &[u8]) -> Reply {
        let (switch, prefix) = match api {
            Api::Telemetry => (self.opts.telemetry_api, "Telemetry"),
            Api::Logs => (self.opts.logs_api, "Logs"),
        };
        let not_supported = || {
            Reply::error(
                202,
                &format!("{prefix}.NotSupported"),
                &format!("{prefix} API is not supported"),
            )
        };
        if api == Api::Logs && self.managed() {
            return not_supported();
        }
        match (switch, api) {
            (ApiSwitch::On, _) => {}
            (ApiSwitch::NotSupported, _) | (ApiSwitch::Off, Api::Logs) => return not_supported(),
            (ApiSwitch::Off, Api::Telemetry) => {
                return Reply::error(400, "ValidationError", "the Telemetry API is not available");
            }
        }
        let i = match self.ext_by_id(&id) {
            Ok(i) => i,
            Err(r) => return r,
        };
        if !self.env.init_open {
            return Reply::error(
                403,
                &format!("{prefix}.SubscriptionClosed"),
                "subscriptions are accepted during init only",
            );
        }
        let validation = match api {
            Api::Telemetry => "ValidationError",
            Api::Logs => "Logs.ValidationError",
        };
        let accepted: Vec<String> = if self.managed() {
            vec!["2025-01-29".to_string()]
        } else {
            self.opts.telemetry_schemas.clone()
        };
        let sub = match telemetry::parse_subscription(body, api, &accepted) {
            Ok(s) => s,
            Err(msg) => return Reply::error(400, validation, &msg),
        };
        let name = self.env.extensions[i].name.clone();
        if let Some((_, other)) = self
            .env
            .subscribers
            .iter()
            .find(|(_, s)| s.extension == name && s.sub.api != api)
        {
            let msg = format!(
                "already subscribed to the {:?} API; the two are exclusive",
                other.sub.api
            );
            return Reply::error(400, validation, &msg);
        }
        let types = sub.types.clone();
        self.report.subscriptions.push(SubscriptionEntry {
            extension: name.clone(),
            api,
            schema_version: sub.schema_version.clone(),
            types: types.clone(),
            buffering: sub.buffering,
        });
        // A second subscription by the same extension replaces the first.
        self.env.subscribers.retain(|(_, s)| s.extension != name);
        let mut s = Subscriber::new(name.clone(), sub);
        let now = Instant::now();
        for rec in &self.env.replay {
            s.offer(rec, now);
        }
        let key = self.key();
        self.env.subscribers.push((key, s));
        self.emit(Kind::Subscription { name, api, types });
        Reply::json(200, &Value::String("OK".into()))
    }
}
