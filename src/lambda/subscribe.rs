//! The Telemetry API subscription, with its fallbacks.
//!
//! In: a registered [`ExtensionClient`] and the listener's port. Out: a [`Subscription`] saying
//! which API (if any) now delivers events and with which schema, plus every attempt's answer.
//!
//! Order: Telemetry `2025-01-29` (required on Managed Instances), then `2022-12-13` on any
//! non-200 answer; a 202 means "not offered" (AWS's emulator answers 202 `Telemetry.NotSupported`
//! and then sends nothing), so it skips straight to the Logs API. Where both are refused loupe
//! stays harmless: it keeps serving the lifecycle and processes nothing.

use hyper::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use super::client::ExtensionClient;

pub const TELEMETRY_PATH: &str = "/2022-07-01/telemetry";
pub const LOGS_PATH: &str = "/2020-08-15/logs";
pub const TELEMETRY_SCHEMAS: [&str; 2] = ["2025-01-29", "2022-12-13"];
pub const LOGS_SCHEMA: &str = "2020-08-15";

/// Buffering sent with every subscription. The documented defaults disagree with each other, so
/// the values are always explicit: 25 ms is the minimum delay (runtimeDone then arrives before
/// loupe's next /next when it waits for it).
pub const BUFFER_TIMEOUT_MS: u32 = 25;
pub const BUFFER_MAX_BYTES: u32 = 262_144;
pub const BUFFER_MAX_ITEMS: u32 = 1_000;

/// The API that delivers events to the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Telemetry,
    Logs,
    None,
}

/// The outcome of [`subscribe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub api: Api,
    /// The schema version accepted, if any.
    pub schema: Option<&'static str>,
    /// One line per attempt: what was asked and what came back.
    pub attempts: Vec<String>,
}

/// The Telemetry API request body.
pub fn telemetry_request(schema: &str, port: u16, extension_logs: bool) -> Value {
    let mut types = vec!["platform", "function"];
    if extension_logs {
        types.push("extension");
    }
    json!({
        "schemaVersion": schema,
        "types": types,
        "buffering": buffering(),
        "destination": {
            "protocol": "HTTP",
            "URI": format!("http://sandbox.localdomain:{port}/telemetry"),
        },
    })
}

/// The Logs API request body.
pub fn logs_request(port: u16) -> Value {
    json!({
        "schemaVersion": LOGS_SCHEMA,
        "types": ["platform", "function"],
        "buffering": buffering(),
        "destination": {
            "protocol": "HTTP",
            "URI": format!("http://sandbox.localdomain:{port}/logs"),
        },
    })
}

fn buffering() -> Value {
    json!({
        "timeoutMs": BUFFER_TIMEOUT_MS,
        "maxBytes": BUFFER_MAX_BYTES,
        "maxItems": BUFFER_MAX_ITEMS,
    })
}

/// Subscribes once, falling back as described in the module doc. Never fails: a refusal on
/// every path gives `Api::None` and one warning line.
pub async fn subscribe(
    client: &ExtensionClient,
    port: u16,
    managed_instances: bool,
    extension_logs: bool,
) -> Subscription {
    let mut attempts = Vec::new();
    for schema in TELEMETRY_SCHEMAS {
        let body = telemetry_request(schema, port, extension_logs);
        match client.put_subscription(TELEMETRY_PATH, &body).await {
            Ok((StatusCode::OK, _)) => {
                attempts.push(format!("telemetry {schema}: 200"));
                log::info!("subscribed to the Telemetry API, schema {schema}, port {port}");
                return Subscription {
                    api: Api::Telemetry,
                    schema: Some(schema),
                    attempts,
                };
            }
            Ok((StatusCode::ACCEPTED, answer)) => {
                attempts.push(format!("telemetry {schema}: 202 {answer}"));
                break;
            }
            Ok((status, answer)) => {
                attempts.push(format!("telemetry {schema}: {} {answer}", status.as_u16()));
            }
            Err(e) => attempts.push(format!("telemetry {schema}: {e}")),
        }
    }
    // Managed Instances offer no Logs API.
    if !managed_instances {
        match client
            .put_subscription(LOGS_PATH, &logs_request(port))
            .await
        {
            Ok((StatusCode::OK, _)) => {
                attempts.push("logs: 200".to_string());
                log::info!(
                    "subscribed to the Logs API (the Telemetry API was refused), port {port}"
                );
                return Subscription {
                    api: Api::Logs,
                    schema: Some(LOGS_SCHEMA),
                    attempts,
                };
            }
            Ok((status, answer)) => attempts.push(format!("logs: {} {answer}", status.as_u16())),
            Err(e) => attempts.push(format!("logs: {e}")),
        }
    }
    log::warn!(
        "no telemetry subscription was accepted ({}): loupe follows the lifecycle and processes nothing",
        attempts.join("; ")
    );
    Subscription {
        api: Api::None,
        schema: None,
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_request_is_explicit() {
        let r = telemetry_request("2025-01-29", 4243, false);
        assert_eq!(r["schemaVersion"], "2025-01-29");
        assert_eq!(r["types"], json!(["platform", "function"]));
        assert_eq!(
            r["buffering"],
            json!({"timeoutMs": 25, "maxBytes": 262144, "maxItems": 1000})
        );
        assert_eq!(r["destination"]["protocol"], "HTTP");
        assert_eq!(
            r["destination"]["URI"],
            "http://sandbox.localdomain:4243/telemetry"
        );
        let r = telemetry_request("2022-12-13", 1, true);
        assert_eq!(r["types"], json!(["platform", "function", "extension"]));
    }

    #[test]
    fn logs_request_shape() {
        let r = logs_request(9);
        assert_eq!(r["schemaVersion"], "2020-08-15");
        assert_eq!(r["types"], json!(["platform", "function"]));
        assert_eq!(r["destination"]["URI"], "http://sandbox.localdomain:9/logs");
        assert_eq!(r["buffering"]["timeoutMs"], 25);
    }
}
