//! The backend API key from AWS Secrets Manager or SSM Parameter Store, fetched once with the
//! function's own credentials (flush control asks at its first flush, so init never waits on it).
//!
//! In: where the key lives ([`ApiKeySource`]), the credentials and region Lambda sets
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`). Out: the key,
//! or a [`SecretError`] that says what failed (never the key itself).
//!
//! No AWS SDK: one JSON POST per service, signed with Signature Version 4 by [`sign`] (HMAC-SHA256
//! from `ring`, which TLS already brings). The SDK would add megabytes and cold-start time for two
//! calls. Standard endpoint overrides are honoured: `AWS_ENDPOINT_URL_SECRETS_MANAGER`,
//! `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use ring::{digest, hmac};

pub use crate::config::ApiKeySource;
use crate::export::http::HttpSender;

/// AWS credentials from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no AWS credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")]
    NoCredentials,
    #[error("no AWS region in the environment (AWS_REGION)")]
    NoRegion,
    #[error("{service} request failed: {reason}")]
    Transport {
        service: &'static str,
        reason: String,
    },
    #[error("{service} answered HTTP {status}: {message}")]
    Refused {
        service: &'static str,
        status: u16,
        message: String,
    },
    #[error("{service} answer is not what was expected: {reason}")]
    BadAnswer {
        service: &'static str,
        #[source]
        reason: AnswerError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("not JSON")]
    NotJson,
    #[error("no {0} in the answer")]
    Missing(&'static str),
    #[error("the secret is not a JSON object with the string member {0:?}")]
    NoJsonKey(String),
    #[error("the value is empty")]
    Empty,
}

impl Credentials {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        Some(Credentials {
            access_key_id: nonempty("AWS_ACCESS_KEY_ID")?,
            secret_access_key: nonempty("AWS_SECRET_ACCESS_KEY")?,
            session_token: nonempty("AWS_SESSION_TOKEN"),
        })
    }
}

/// What one signed request needs.
pub struct SignInput<'a> {
    pub method: &'a str,
    /// `host` or `host:port` as sent in the Host header.
    pub host: &'a str,
    pub path: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// Extra headers to sign (lowercase names), e.g. content-type and x-amz-target.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub time: SystemTime,
}

/// Sorts a handful of signed headers by name, then value: an insertion sort, all that a few
/// entries need, without a general sort's code in the binary.
fn sort_few(headers: &mut [(String, String)]) {
    for i in 1..headers.len() {
        let mut j = i;
        // 0 < j <= i < len: both indexes are in bounds.
        while j > 0 && headers[j - 1] > headers[j] {
            headers.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Signature Version 4 for a request without a query string: returns the headers to add
/// (`authorization`, `x-amz-date`, and `x-amz-security-token` with temporary credentials).
pub fn sign(input: &SignInput<'_>, creds: &Credentials) -> Vec<(String, String)> {
    let secs = input
        .time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let amz_date = amz_date(secs);
    let date = &amz_date[..8];
    let payload_hash = hex(digest::digest(&digest::SHA256, input.body).as_ref());

    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("host".into(), input.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), token.clone()));
    }
    sort_few(&mut headers);
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical_request = format!(
        "{}\n{}\n\n{}\n{}\n{}",
        input.method, input.path, canonical_headers, signed_headers, payload_hash
    );
    let scope = format!("{date}/{}/{}/aws4_request", input.region, input.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{}", creds.secret_access_key).into_bytes();
    for part in [date, input.region, input.service, "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let signature = hex(hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    )
    .as_ref());
    let mut out = vec![
        (
            "authorization".to_string(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                creds.access_key_id
            ),
        ),
        ("x-amz-date".to_string(), amz_date),
    ];
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token".to_string(), token.clone()));
    }
    out
}

/// `YYYYMMDDTHHMMSSZ`.
fn amz_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = crate::clock::civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Fetches the key. `get` reads the environment (credentials, region, endpoint overrides).
pub async fn fetch_api_key(
    source: &ApiKeySource,
    get: impl Fn(&str) -> Option<String>,
    http: &HttpSender,
    timeout: Duration,
) -> Result<String, SecretError> {
    let creds = Credentials::from_lookup(&get).ok_or(SecretError::NoCredentials)?;
    let region = get("AWS_REGION")
        .or_else(|| get("AWS_DEFAULT_REGION"))
        .filter(|r| !r.is_empty())
        .ok_or(SecretError::NoRegion)?;
    let (service, signing_name, endpoint_var, target, body) = match source {
        ApiKeySource::SecretsManager { secret_id, .. } => (
            "Secrets Manager",
            "secretsmanager",
            "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            "secretsmanager.GetSecretValue",
            serde_json::json!({ "SecretId": secret_id }),
        ),
        ApiKeySource::Ssm { name } => (
            "SSM Parameter Store",
            "ssm",
            "AWS_ENDPOINT_URL_SSM",
            "AmazonSSM.GetParameter",
            serde_json::json!({ "Name": name, "WithDecryption": true }),
        ),
    };
    let endpoint = get(endpoint_var)
        .or_else(|| get("AWS_ENDPOINT_URL"))
        .filter(|e| !e.is_empty())
        .map(|e| e.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://{signing_name}.{region}.amazonaws.com"));
    let host = endpoint
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let body = body.to_string().into_bytes();
    let content_type = "application/x-amz-json-1.1";
    let signed = sign(
        &SignInput {
            method: "POST",
            host: &host,
            path: "/",
            region: &region,
            service: signing_name,
            headers: &[("content-type", content_type), ("x-amz-target", target)],
            body: &body,
            time: SystemTime::now(),
        },
        &creds,
    );
    let mut headers = vec![
        (
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        ),
        (
            HeaderName::from_static("x-amz-target"),
            HeaderValue::from_static(target),
        ),
    ];
    for (k, v) in signed {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) else {
            return Err(SecretError::Transport {
                service,
                reason: "credentials hold characters that cannot go in a header".into(),
            });
        };
        headers.push((k, v));
    }
    let answer = http
        .post_with(
            &format!("{endpoint}/"),
            &headers,
            Bytes::from(body),
            timeout,
        )
        .await
        .map_err(|e| SecretError::Transport {
            service,
            reason: e.to_string(),
        })?;
    let json: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|_| SecretError::BadAnswer {
            service,
            reason: AnswerError::NotJson,
        })?;
    if answer.status != 200 {
        let kind = json.get("__type").and_then(|t| t.as_str()).unwrap_or("");
        let msg = json
            .get("message")
            .or_else(|| json.get("Message"))
            .and_then(|m| m.as_str())
            .unwrap_or("");
        return Err(SecretError::Refused {
            service,
            status: answer.status,
            message: format!("{kind} {msg}").trim().chars().take(300).collect(),
        });
    }
    extract(source, &json).map_err(|reason| SecretError::BadAnswer { service, reason })
}

/// The key out of a GetSecretValue / GetParameter answer.
pub fn extract(source: &ApiKeySource, answer: &serde_json::Value) -> Result<String, AnswerError> {
    let value = match source {
        ApiKeySource::SecretsManager { json_key, .. } => {
            let s = answer
                .get("SecretString")
                .and_then(|s| s.as_str())
                .ok_or(AnswerError::Missing("SecretString"))?;
            match json_key {
                None => s.to_string(),
                Some(k) => serde_json::from_str::<serde_json::Value>(s)
                    .ok()
                    .and_then(|v| v.get(k)?.as_str().map(str::to_string))
                    .ok_or_else(|| AnswerError::NoJsonKey(k.clone()))?,
            }
        }
        ApiKeySource::Ssm { .. } => answer
            .get("Parameter")
            .and_then(|p| p.get("Value"))
            .and_then(|v| v.as_str())
            .ok_or(AnswerError::Missing("Parameter.Value"))?
            .to_string(),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(AnswerError::Empty);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_headers_sort_like_a_full_sort() {
        let h = |k: &str, v: &str| (k.to_string(), v.to_string());
        let cases = [
            vec![],
            vec![h("a", "1")],
            vec![
                h("x-amz-target", "t"),
                h("host", "h"),
                h("content-type", "c"),
                h("host", "a"),
            ],
            vec![
                h("b", "2"),
                h("b", "1"),
                h("a", "9"),
                h("c", ""),
                h("a", "9"),
            ],
        ];
        for case in cases {
            let mut want = case.clone();
            want.sort();
            let mut got = case;
            sort_few(&mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(1_795_497_000), "20261124T051000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    }

    /// Expected values computed by botocore 1.44.8's `SigV4Auth` (an independent implementation)
    /// for the same request, credentials and time.
    #[test]
    fn matches_signatures_computed_by_botocore() {
        let body = br#"{"SecretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:k"}"#;
        let cases = [
            (
                None,
                "content-type;host;x-amz-date;x-amz-target",
                "6065fd37ac344f6fb0519ee50f79f295db0c3e548ce185a30c0ece02c8eb1af3",
            ),
            (
                Some("FQoGZXIvYXdzEXAMPLETOKEN"),
                "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
                "bdd458a2df623bd7043c5bd991d166ea4d20e31388a2c76bdc8f560316eb33b1",
            ),
        ];
        for (token, signed, signature) in cases {
            let creds = Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: token.map(str::to_string),
            };
            let h = sign(
                &SignInput {
                    method: "POST",
                    host: "secretsmanager.us-east-1.amazonaws.com",
                    path: "/",
                    region: "us-east-1",
                    service: "secretsmanager",
                    headers: &[
                        ("content-type", "application/x-amz-json-1.1"),
                        ("x-amz-target", "secretsmanager.GetSecretValue"),
                    ],
                    body,
                    time: UNIX_EPOCH + Duration::from_secs(1_440_938_160),
                },
                &creds,
            );
            assert_eq!(
                h[0].1,
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/secretsmanager/aws4_request, SignedHeaders={signed}, Signature={signature}"
                )
            );
            assert_eq!(
                h[1],
                ("x-amz-date".to_string(), "20150830T123600Z".to_string())
            );
            assert_eq!(h.len(), if token.is_some() { 3 } else { 2 });
        }
    }

    #[test]
    fn extracts_keys_from_answers() {
        let sm = ApiKeySource::SecretsManager {
            secret_id: "x".into(),
            json_key: None,
        };
        let sm_json = ApiKeySource::SecretsManager {
            secret_id: "x".into(),
            json_key: Some("apiKey".into()),
        };
        let ssm = ApiKeySource::Ssm { name: "/k".into() };
        assert_eq!(
            extract(&sm, &serde_json::json!({"SecretString": " k1 "})).unwrap(),
            "k1"
        );
        assert_eq!(
            extract(
                &sm_json,
                &serde_json::json!({"SecretString": "{\"apiKey\":\"k2\"}"})
            )
            .unwrap(),
            "k2"
        );
        assert!(matches!(
            extract(&sm_json, &serde_json::json!({"SecretString": "plain"})),
            Err(AnswerError::NoJsonKey(_))
        ));
        assert_eq!(
            extract(&ssm, &serde_json::json!({"Parameter": {"Value": "k3"}})).unwrap(),
            "k3"
        );
        assert!(matches!(
            extract(&ssm, &serde_json::json!({})),
            Err(AnswerError::Missing(_))
        ));
        assert!(matches!(
            extract(&sm, &serde_json::json!({"SecretString": ""})),
            Err(AnswerError::Empty)
        ));
    }
}
