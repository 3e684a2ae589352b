//! Configuration: one typed [`Config`], read once from environment variables at start.
//!
//! In: a variable lookup (the process environment in production, a map in tests).
//! Out: a `Config` with every field set, plus one [`ConfigWarning`] per variable whose value was
//! not understood. A bad value never stops loupe: the warning names the variable, the value and
//! the form that was expected, and the default is used instead. Nothing in config can make the
//! function fail.
//!
//! The platform's own variables (`AWS_LAMBDA_*`, `AWS_REGION`, ...) are read here too, into
//! [`LambdaEnv`], so that nothing else in the crate touches the environment.

use std::fmt;
use std::time::Duration;

/// Where and how to send, and how loupe behaves in the sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// OTLP/HTTP endpoints; `None` when no backend is configured (loupe then runs harmlessly,
    /// follows the lifecycle and sends nothing).
    pub endpoints: Option<Endpoints>,
    /// Extra HTTP headers for every export request (`OTEL_EXPORTER_OTLP_HEADERS`, `LOUPE_HEADERS`,
    /// and the API key header). Values are secrets: never log them.
    pub headers: Vec<(String, String)>,
    /// Where to fetch the API key at init, when it is not given in `LOUPE_API_KEY`.
    pub api_key_source: Option<ApiKeySource>,
    /// `LOUPE_API_KEY_HEADER`: the header that carries the API key (`authorization` by default,
    /// as `Bearer <key>`).
    pub api_key_header: String,
    /// `LOUPE_LOG_LEVEL`: loupe's own log lines cost the user CloudWatch money, so `warn` by default.
    pub log_level: log::LevelFilter,
    /// `LOUPE_LISTENER_PORT`: port of the telemetry listener; 0 picks a free one.
    pub listener_port: u16,
    /// `LOUPE_FLUSH`: when to send.
    pub flush: FlushStrategy,
    /// `LOUPE_FLUSH_TIMEOUT_MS`: the most one flush may take before it is given up.
    pub flush_timeout: Duration,
    /// `LOUPE_EXTENSION_LOGS`: also subscribe to other extensions' log lines.
    pub extension_logs: bool,
    /// `LOUPE_TRACES`: send a span per invocation to `/v1/traces` (default true).
    pub traces: bool,
    /// `LOUPE_PROTOCOL`: the wire format.
    pub protocol: Protocol,
    /// `LOUPE_TEMPORALITY`: delta (default) or cumulative metrics.
    pub temporality: Temporality,
    /// `LOUPE_USER_ID_KEYS`: property / JSON log keys that hold a user id, in order of preference.
    pub user_id_keys: Vec<String>,
    /// `LOUPE_MAX_SERIES`: cap on live metric series between flushes.
    pub max_series: usize,
    /// What the Lambda platform told us about the sandbox.
    pub lambda: LambdaEnv,
}

/// The full URLs loupe posts each signal to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub metrics: String,
    pub logs: String,
    pub traces: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlushStrategy {
    /// End-of-invocation while invocations are sparse, pipelined when they are frequent.
    Adaptive,
    /// After each request's runtimeDone, before the next /next.
    End,
    /// Every so often, from a timer.
    Periodic(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP protobuf.
    Protobuf,
    /// gzip NDJSON, for home-made backends.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temporality {
    Delta,
    Cumulative,
}

/// Variables the Lambda platform sets in every sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LambdaEnv {
    /// Base URL of the Runtime/Extensions/Telemetry APIs, `http://host:port` (from
    /// `AWS_LAMBDA_RUNTIME_API`, which is `host:port` in Lambda and sometimes a URL in emulators).
    pub runtime_api: Option<String>,
    pub function_name: Option<String>,
    pub function_version: Option<String>,
    pub memory_mb: Option<u32>,
    pub region: Option<String>,
    pub log_group: Option<String>,
    pub log_stream: Option<String>,
    pub initialization_type: Option<String>,
}

impl LambdaEnv {
    /// Lambda Managed Instances: several invocations at once, no INVOKE events, no freeze.
    pub fn is_managed_instances(&self) -> bool {
        self.initialization_type.as_deref() == Some("lambda-managed-instances")
    }
}

/// Where the API key is kept, when it is not in `LOUPE_API_KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiKeySource {
    /// `LOUPE_API_KEY_SECRET_ARN`, with `LOUPE_API_KEY_SECRET_KEY` naming a member when the secret
    /// is a JSON object.
    SecretsManager {
        secret_id: String,
        json_key: Option<String>,
    },
    /// `LOUPE_API_KEY_SSM_PARAMETER` (SecureString parameters are decrypted).
    Ssm { name: String },
}

/// A variable whose value was not understood; the default was used instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub var: &'static str,
    /// The value as given, or `<redacted>` for secrets.
    pub value: String,
    pub expected: &'static str,
    pub used: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}; using {}",
            self.var, self.value, self.expected, self.used
        )
    }
}

pub const DEFAULT_USER_ID_KEYS: &[&str] = &["userId", "user_id", "user", "customerId"];
/// About 5.6 MB of aggregation state in the worst case (see `aggregate`).
pub const DEFAULT_MAX_SERIES: usize = 1_000;
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_millis(2_000);

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> (Config, Vec<ConfigWarning>) {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `get`, which returns a variable's value if it is set.
    /// Empty values count as unset, as in the OpenTelemetry SDKs.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Config, Vec<ConfigWarning>) {
        Self::read(&get)
    }

    /// The body of [`Config::from_lookup`], behind `dyn` so that it is compiled once, and with
    /// the per-variable steps in out-of-line helpers: read once at start, so size wins.
    fn read(raw: &Lookup<'_>) -> (Config, Vec<ConfigWarning>) {
        let get = |name: &str| var(raw, name);
        let mut warnings = Vec::new();
        let mut warn = |var: &'static str, value: &str, expected: &'static str, used: &str| {
            push_warning(&mut warnings, var, value, expected, used)
        };

        let log_level = match get("LOUPE_LOG_LEVEL") {
            None => log::LevelFilter::Warn,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "off" | "none" => log::LevelFilter::Off,
                "error" => log::LevelFilter::Error,
                "warn" | "warning" => log::LevelFilter::Warn,
                "info" => log::LevelFilter::Info,
                "debug" => log::LevelFilter::Debug,
                "trace" => log::LevelFilter::Trace,
                _ => {
                    warn(
                        "LOUPE_LOG_LEVEL",
                        &v,
                        "one of off, error, warn, info, debug, trace",
                        "warn",
                    );
                    log::LevelFilter::Warn
                }
            },
        };

        let endpoints = match endpoints(&get) {
            Ok(e) => e,
            Err((var, value)) => {
                warn(
                    var,
                    &value,
                    "an http:// or https:// URL",
                    "no backend (nothing is sent)",
                );
                None
            }
        };

        let mut headers = Vec::new();
        for var in ["OTEL_EXPORTER_OTLP_HEADERS", "LOUPE_HEADERS"] {
            if let Some(v) = get(var) {
                match parse_headers(&v) {
                    Some(h) => headers.extend(h),
                    None => warn(
                        var,
                        "<redacted>",
                        "comma-separated name=value pairs (values may be %-encoded)",
                        "no extra headers",
                    ),
                }
            }
        }
        let api_key_header = match get("LOUPE_API_KEY_HEADER") {
            None => "authorization".to_string(),
            Some(name) if is_token(&name) => name.to_ascii_lowercase(),
            Some(name) => {
                warn(
                    "LOUPE_API_KEY_HEADER",
                    &name,
                    "an HTTP header name",
                    "authorization",
                );
                "authorization".to_string()
            }
        };
        let mut api_key_source = None;
        if let Some(key) = get("LOUPE_API_KEY") {
            headers.push(api_key_header_value(&api_key_header, &key));
        } else if let Some(secret_id) = get("LOUPE_API_KEY_SECRET_ARN") {
            api_key_source = Some(ApiKeySource::SecretsManager {
                secret_id,
                json_key: get("LOUPE_API_KEY_SECRET_KEY"),
            });
        } else if let Some(name) = get("LOUPE_API_KEY_SSM_PARAMETER") {
            api_key_source = Some(ApiKeySource::Ssm { name });
        }
        // Later entries win: loupe's own names override the OTel ones.
        dedup_headers(&mut headers);

        let listener_port = match get("LOUPE_LISTENER_PORT") {
            None => 0,
            Some(v) => v.parse::<u16>().unwrap_or_else(|_| {
                warn(
                    "LOUPE_LISTENER_PORT",
                    &v,
                    "a port number 0-65535 (0 picks a free port)",
                    "0",
                );
                0
            }),
        };

        let flush = match get("LOUPE_FLUSH") {
            None => FlushStrategy::Adaptive,
            Some(v) => parse_flush(&v).unwrap_or_else(|| {
                warn(
                    "LOUPE_FLUSH",
                    &v,
                    "adaptive, end, or periodic:<seconds> (1-3600)",
                    "adaptive",
                );
                FlushStrategy::Adaptive
            }),
        };

        let flush_timeout = match get("LOUPE_FLUSH_TIMEOUT_MS") {
            None => DEFAULT_FLUSH_TIMEOUT,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if (1..=60_000).contains(&ms) => Duration::from_millis(ms),
                _ => {
                    warn(
                        "LOUPE_FLUSH_TIMEOUT_MS",
                        &v,
                        "milliseconds, 1-60000",
                        &DEFAULT_FLUSH_TIMEOUT.as_millis().to_string(),
                    );
                    DEFAULT_FLUSH_TIMEOUT
                }
            },
        };

        let extension_logs = match get("LOUPE_EXTENSION_LOGS") {
            None => false,
            Some(v) => parse_bool(&v).unwrap_or_else(|| {
                warn("LOUPE_EXTENSION_LOGS", &v, "true or false", "false");
                false
            }),
        };

        let traces = match get("LOUPE_TRACES") {
            None => true,
            Some(v) => parse_bool(&v).unwrap_or_else(|| {
                warn("LOUPE_TRACES", &v, "true or false", "true");
                true
            }),
        };

        let protocol = match get("LOUPE_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") | Some("protobuf") => Protocol::Protobuf,
            Some("json") => Protocol::Json,
            Some(v) => {
                warn(
                    "LOUPE_PROTOCOL",
                    v,
                    "protobuf (OTLP/HTTP) or json (gzip NDJSON)",
                    "protobuf",
                );
                Protocol::Protobuf
            }
        };

        let temporality = match get("LOUPE_TEMPORALITY").map(|v| v.to_ascii_lowercase()) {
            None => Temporality::Delta,
            Some(v) if v == "delta" => Temporality::Delta,
            Some(v) if v == "cumulative" => Temporality::Cumulative,
            Some(v) => {
                warn("LOUPE_TEMPORALITY", &v, "delta or cumulative", "delta");
                Temporality::Delta
            }
        };

        let user_id_keys = match get("LOUPE_USER_ID_KEYS") {
            None => DEFAULT_USER_ID_KEYS.iter().map(|s| s.to_string()).collect(),
            Some(v) => {
                let keys: Vec<String> = v
                    .split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect();
                if keys.is_empty() {
                    warn(
                        "LOUPE_USER_ID_KEYS",
                        &v,
                        "comma-separated key names",
                        &DEFAULT_USER_ID_KEYS.join(","),
                    );
                    DEFAULT_USER_ID_KEYS.iter().map(|s| s.to_string()).collect()
                } else {
                    keys
                }
            }
        };

        let max_series = match get("LOUPE_MAX_SERIES") {
            None => DEFAULT_MAX_SERIES,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => n,
                _ => {
                    warn(
                        "LOUPE_MAX_SERIES",
                        &v,
                        "a whole number, 1-1000000",
                        &DEFAULT_MAX_SERIES.to_string(),
                    );
                    DEFAULT_MAX_SERIES
                }
            },
        };

        let memory_mb = match get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    warn(
                        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                        &v,
                        "megabytes as a whole number",
                        "unknown",
                    );
                    None
                }
            },
        };

        let lambda = LambdaEnv {
            runtime_api: get("AWS_LAMBDA_RUNTIME_API").map(|v| runtime_api_base(&v)),
            function_name: get("AWS_LAMBDA_FUNCTION_NAME"),
            function_version: get("AWS_LAMBDA_FUNCTION_VERSION"),
            memory_mb,
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            log_group: get("AWS_LAMBDA_LOG_GROUP_NAME"),
            log_stream: get("AWS_LAMBDA_LOG_STREAM_NAME"),
            initialization_type: get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        };

        let config = Config {
            endpoints,
            headers,
            api_key_source,
            api_key_header,
            log_level,
            listener_port,
            flush,
            flush_timeout,
            extension_logs,
            traces,
            protocol,
            temporality,
            user_id_keys,
            max_series,
            lambda,
        };
        (config, warnings)
    }
}

/// `AWS_LAMBDA_RUNTIME_API` as a base URL without a trailing slash: `host:port` gains `http://`,
/// a URL is kept as given.
pub fn runtime_api_base(value: &str) -> String {
    let v = value.trim().trim_end_matches('/');
    if v.starts_with("http://") || v.starts_with("https://") {
        v.to_string()
    } else {
        format!("http://{v}")
    }
}

type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A variable's trimmed value; empty counts as unset.
#[inline(never)]
fn var(get: &Lookup<'_>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

#[inline(never)]
fn push_warning(
    warnings: &mut Vec<ConfigWarning>,
    var: &'static str,
    value: &str,
    expected: &'static str,
    used: &str,
) {
    warnings.push(ConfigWarning {
        var,
        value: value.to_string(),
        expected,
        used: used.to_string(),
    })
}

/// Per OTLP exporter spec: a base URL gets `/v1/<signal>` appended, a per-signal URL is used as
/// given. `LOUPE_BACKEND_URL` wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn endpoints(get: &Lookup<'_>) -> Result<Option<Endpoints>, (&'static str, String)> {
    let base_var = if get("LOUPE_BACKEND_URL").is_some() {
        "LOUPE_BACKEND_URL"
    } else {
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    };
    let base = match get(base_var) {
        Some(v) if is_http_url(&v) => Some(v.trim_end_matches('/').to_string()),
        Some(v) => return Err((base_var, v)),
        None => None,
    };
    let signal =
        |var: &'static str, path: &str| -> Result<Option<String>, (&'static str, String)> {
            match get(var) {
                Some(v) if is_http_url(&v) => Ok(Some(v)),
                Some(v) => Err((var, v)),
                None => Ok(base.as_ref().map(|b| format!("{b}{path}"))),
            }
        };
    let metrics = signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics")?;
    let logs = signal("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "/v1/logs")?;
    let traces = signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")?;
    match (metrics, logs, traces) {
        (Some(metrics), Some(logs), Some(traces)) => Ok(Some(Endpoints {
            metrics,
            logs,
            traces,
        })),
        (None, None, None) => Ok(None),
        // Only some per-signal URLs and no base: send what has a destination.
        (m, l, t) => {
            let any = m.clone().or(l.clone()).or(t.clone()).unwrap_or_default();
            let or_any = |x: Option<String>| x.unwrap_or_else(|| any.clone());
            Ok(Some(Endpoints {
                metrics: or_any(m),
                logs: or_any(l),
                traces: or_any(t),
            }))
        }
    }
}

fn is_http_url(v: &str) -> bool {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty()
                && !v.chars().any(|c| c.is_whitespace() || c.is_control())
                && v.parse::<hyper::Uri>().is_ok()
        }
        None => false,
    }
}

fn parse_flush(v: &str) -> Option<FlushStrategy> {
    let lower = v.to_ascii_lowercase();
    match lower.as_str() {
        "adaptive" | "default" => Some(FlushStrategy::Adaptive),
        "end" => Some(FlushStrategy::End),
        _ => {
            let secs = lower
                .strip_prefix("periodic:")?
                .trim()
                .parse::<u64>()
                .ok()?;
            (1..=3600)
                .contains(&secs)
                .then(|| FlushStrategy::Periodic(Duration::from_secs(secs)))
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `name=value,name2=value2` (W3C baggage style, values %-encoded), as OTEL_EXPORTER_OTLP_HEADERS.
fn parse_headers(v: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in v.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let value = percent_decode(value.trim())?;
        if !is_token(&name) || value.bytes().any(|b| b.is_ascii_control()) {
            return None;
        }
        out.push((name, value));
    }
    Some(out)
}

/// The header carrying the API key: `authorization: Bearer <key>` unless another header is named.
pub fn api_key_header_value(name: &str, key: &str) -> (String, String) {
    let name = name.to_ascii_lowercase();
    let value = if name == "authorization" && !key.contains(' ') {
        format!("Bearer {key}")
    } else {
        key.to_string()
    };
    (name, value)
}

fn dedup_headers(headers: &mut Vec<(String, String)>) {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<(String, String)> = headers
        .drain(..)
        .rev()
        .filter(|(n, _)| seen.insert(n.clone()))
        .collect();
    kept.reverse();
    *headers = kept;
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> (Config, Vec<ConfigWarning>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (c, w) = read(&[]);
        assert!(w.is_empty());
        assert_eq!(c.endpoints, None);
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.flush, FlushStrategy::Adaptive);
        assert_eq!(c.listener_port, 0);
        assert_eq!(c.protocol, Protocol::Protobuf);
        assert_eq!(c.temporality, Temporality::Delta);
        assert_eq!(c.max_series, DEFAULT_MAX_SERIES);
        assert!(!c.extension_logs);
        assert!(c.traces);
        assert!(c.headers.is_empty());
    }

    #[test]
    fn backend_url_is_a_base_and_loupe_wins_over_otel() {
        let (c, w) = read(&[
            ("LOUPE_BACKEND_URL", "http://127.0.0.1:4318/"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
        ]);
        assert!(w.is_empty());
        let e = c.endpoints.unwrap();
        assert_eq!(e.metrics, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(e.logs, "http://127.0.0.1:4318/v1/logs");
        assert_eq!(e.traces, "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn otel_endpoint_and_per_signal_urls() {
        let (c, _) = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://m.example.com/custom",
            ),
        ]);
        let e = c.endpoints.unwrap();
        assert_eq!(e.metrics, "https://m.example.com/custom");
        assert_eq!(e.logs, "https://otlp.example.com/v1/logs");
    }

    #[test]
    fn bad_values_warn_with_variable_value_and_expected_form() {
        let (c, w) = read(&[
            ("LOUPE_BACKEND_URL", "ftp://nope"),
            ("LOUPE_LOG_LEVEL", "loud"),
            ("LOUPE_FLUSH", "sometimes"),
            ("LOUPE_LISTENER_PORT", "99999"),
            ("LOUPE_MAX_SERIES", "-3"),
        ]);
        assert_eq!(c.endpoints, None);
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert_eq!(c.flush, FlushStrategy::Adaptive);
        assert_eq!(c.listener_port, 0);
        assert_eq!(c.max_series, DEFAULT_MAX_SERIES);
        let vars: Vec<&str> = w.iter().map(|w| w.var).collect();
        assert_eq!(
            vars,
            [
                "LOUPE_LOG_LEVEL",
                "LOUPE_BACKEND_URL",
                "LOUPE_LISTENER_PORT",
                "LOUPE_FLUSH",
                "LOUPE_MAX_SERIES"
            ]
        );
        let line = w[2].to_string();
        assert!(line.contains("LOUPE_LISTENER_PORT=\"99999\""), "{line}");
        assert!(line.contains("expected a port number"), "{line}");
    }

    #[test]
    fn traces_switch() {
        let (c, w) = read(&[("LOUPE_TRACES", "false")]);
        assert!(!c.traces && w.is_empty());
        let (c, w) = read(&[("LOUPE_TRACES", "maybe")]);
        assert!(c.traces);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].var, "LOUPE_TRACES");
    }

    #[test]
    fn flush_strategies() {
        assert_eq!(parse_flush("END"), Some(FlushStrategy::End));
        assert_eq!(
            parse_flush("periodic:30"),
            Some(FlushStrategy::Periodic(Duration::from_secs(30)))
        );
        assert_eq!(parse_flush("periodic:0"), None);
        assert_eq!(parse_flush("periodic:"), None);
        assert_eq!(parse_flush("periodic:x"), None);
    }

    #[test]
    fn headers_and_api_key_are_merged_and_never_echoed() {
        let (c, w) = read(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-team=a%20b, Authorization=Basic xyz",
            ),
            ("LOUPE_API_KEY", "s3cret"),
        ]);
        assert!(w.is_empty());
        assert_eq!(
            c.headers,
            vec![
                ("x-team".to_string(), "a b".to_string()),
                ("authorization".to_string(), "Bearer s3cret".to_string())
            ]
        );
        assert_eq!(c.api_key_source, None);
        let (_, w) = read(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].value, "<redacted>");

        let (c, _) = read(&[
            ("LOUPE_API_KEY", "k"),
            ("LOUPE_API_KEY_HEADER", "x-honeycomb-team"),
        ]);
        assert_eq!(c.headers, vec![("x-honeycomb-team".into(), "k".into())]);
    }

    #[test]
    fn api_key_from_secrets_manager_or_ssm() {
        let (c, _) = read(&[
            (
                "LOUPE_API_KEY_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:k",
            ),
            ("LOUPE_API_KEY_SECRET_KEY", "apiKey"),
        ]);
        assert_eq!(
            c.api_key_source,
            Some(ApiKeySource::SecretsManager {
                secret_id: "arn:aws:secretsmanager:eu-west-1:1:secret:k".into(),
                json_key: Some("apiKey".into())
            })
        );
        assert!(c.headers.is_empty());
        let (c, _) = read(&[("LOUPE_API_KEY_SSM_PARAMETER", "/loupe/key")]);
        assert_eq!(
            c.api_key_source,
            Some(ApiKeySource::Ssm {
                name: "/loupe/key".into()
            })
        );
        // A key given directly wins.
        let (c, _) = read(&[
            ("LOUPE_API_KEY", "k"),
            ("LOUPE_API_KEY_SSM_PARAMETER", "/loupe/key"),
        ]);
        assert_eq!(c.api_key_source, None);
        assert_eq!(c.headers.len(), 1);
    }

    #[test]
    fn runtime_api_accepts_host_port_and_url() {
        assert_eq!(runtime_api_base("127.0.0.1:9001"), "http://127.0.0.1:9001");
        assert_eq!(
            runtime_api_base("http://localhost:9001/"),
            "http://localhost:9001"
        );
        let (c, _) = read(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances"),
        ]);
        assert_eq!(
            c.lambda.runtime_api.as_deref(),
            Some("http://127.0.0.1:9001")
        );
        assert_eq!(c.lambda.memory_mb, Some(128));
        assert!(c.lambda.is_managed_instances());
    }
}
