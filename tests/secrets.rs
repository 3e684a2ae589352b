//! The API key from Secrets Manager and SSM, against a fake AWS endpoint on 127.0.0.1 that checks
//! every signature with botocore's signer (tests/fixtures/fake_aws.py).

mod support;

use support::python::python;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loupe::export::http::HttpSender;
use loupe::secrets::{ApiKeySource, SecretError, fetch_api_key};

struct FakeAws {
    child: Child,
    port: u16,
}

impl FakeAws {
    fn start(token: Option<&str>) -> FakeAws {
        let mut cmd = Command::new(python());
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fake_aws.py"
        ))
        .args(["AKIDTEST", "secret/key+test"])
        .args(token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("python with botocore: run `bash scripts/setup.sh` first");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("fake_aws.py did not start (botocore installed?): {line:?}")
        });
        FakeAws { child, port }
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(port: u16, secret: &str, token: Option<&str>) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "eu-west-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    m.insert(
        "AWS_ENDPOINT_URL".into(),
        format!("http://127.0.0.1:{port}"),
    );
    if let Some(t) = token {
        m.insert("AWS_SESSION_TOKEN".into(), t.into());
    }
    m
}

async fn fetch(source: ApiKeySource, env: &HashMap<String, String>) -> Result<String, SecretError> {
    let http = HttpSender::new(&[], Duration::from_secs(2));
    fetch_api_key(
        &source,
        |k| env.get(k).cloned(),
        &http,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test]
async fn fetches_keys_with_signatures_botocore_accepts() {
    let token = Some("IQoJb3JpZ2luX2VjEXAMPLE//token=");
    let aws = FakeAws::start(token);
    let e = env(aws.port, "secret/key+test", token);
    let sm = |id: &str, key: Option<&str>| ApiKeySource::SecretsManager {
        secret_id: id.into(),
        json_key: key.map(str::to_string),
    };
    assert_eq!(fetch(sm("plain", None), &e).await.unwrap(), "key-plain");
    assert_eq!(
        fetch(sm("json", Some("apiKey")), &e).await.unwrap(),
        "key-json"
    );
    assert_eq!(
        fetch(
            ApiKeySource::Ssm {
                name: "/loupe/key".into()
            },
            &e
        )
        .await
        .unwrap(),
        "key-ssm"
    );
    match fetch(sm("missing", None), &e).await {
        Err(SecretError::Refused {
            status: 400,
            message,
            ..
        }) => {
            assert!(message.contains("ResourceNotFoundException"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused_and_the_error_never_holds_the_secret() {
    let aws = FakeAws::start(None);
    let e = env(aws.port, "not-the-secret", None);
    let r = fetch(
        ApiKeySource::SecretsManager {
            secret_id: "plain".into(),
            json_key: None,
        },
        &e,
    )
    .await;
    match r {
        Err(err @ SecretError::Refused { status: 403, .. }) => {
            let text = err.to_string();
            assert!(text.contains("InvalidSignatureException"), "{text}");
            assert!(!text.contains("not-the-secret"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_credentials_or_region_are_clear_errors() {
    let mut e = env(1, "s", None);
    e.remove("AWS_SECRET_ACCESS_KEY");
    let src = ApiKeySource::Ssm { name: "/k".into() };
    assert!(matches!(
        fetch(src.clone(), &e).await,
        Err(SecretError::NoCredentials)
    ));
    let mut e = env(1, "s", None);
    e.remove("AWS_REGION");
    assert!(matches!(fetch(src, &e).await, Err(SecretError::NoRegion)));
}
