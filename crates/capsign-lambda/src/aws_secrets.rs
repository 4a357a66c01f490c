//! Secrets from AWS Secrets Manager and Parameter Store, read at start-up through the AWS
//! Parameters and Secrets Lambda extension: a layer that serves them on
//! `http://localhost:2773` (`PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`) to callers that present
//! the function's session token, caching them for the extension's TTL.
//!
//! A secret setting `NAME` is given as `NAME_AWS`: `secretsmanager:ID` (the secret's name or
//! ARN; its `SecretString`), `secretsmanager:ID#key` (one member of a JSON `SecretString`), or
//! `ssm:NAME` (a parameter, decrypted). Read once, before the settings are checked; a failure
//! is an init error naming the variable.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// How long one fetch may take (the extension answers from its cache, or asks AWS).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (Secrets Manager allows 64 KiB secrets).
const MAX_ANSWER: usize = 256 * 1024;

/// Reads every `NAME_AWS` reference: the settings' names and values.
///
/// # Errors
///
/// The variable and what went wrong.
pub(crate) async fn resolve(
    refs: Vec<(&'static str, String, String)>,
) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    for (name, var, reference) in refs {
        let value = fetch(&reference)
            .await
            .map_err(|e| format!("{var} ({reference}): {e}"))?;
        out.push((name, value));
    }
    Ok(out)
}

async fn fetch(reference: &str) -> Result<String, String> {
    let port = std::env::var("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
        .unwrap_or_else(|_| "2773".to_owned());
    let token = std::env::var("AWS_SESSION_TOKEN")
        .map_err(|_| "AWS_SESSION_TOKEN is not set (it is, inside Lambda)".to_owned())?;
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let (path, key) = if let Some(id) = reference.strip_prefix("secretsmanager:") {
        let (id, key) = match id.split_once('#') {
            Some((id, key)) => (id, Some(key)),
            None => (id, None),
        };
        (format!("/secretsmanager/get?secretId={}", enc(id)), key)
    } else if let Some(name) = reference.strip_prefix("ssm:") {
        (
            format!(
                "/systemsmanager/parameters/get?name={}&withDecryption=true",
                enc(name)
            ),
            None,
        )
    } else {
        return Err("expected secretsmanager:ID[#key] or ssm:NAME".into());
    };
    let request = http::Request::get(format!("http://localhost:{port}{path}"))
        .header("x-aws-parameters-secrets-token", token)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let call = async {
        let response = client.request(request).await.map_err(|e| {
            format!(
                "the Parameters and Secrets extension on port {port} did not answer ({e}); \
                 add its layer to the function"
            )
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))??;
    if !status.is_success() {
        // The extension passes AWS's error on (not found, access denied): its text names the
        // secret, never its value.
        let text = String::from_utf8_lossy(&body);
        return Err(format!("the extension answered {status}: {}", text.trim()));
    }
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| format!("not the extension's JSON: {e}"))?;
    let value = if reference.starts_with("ssm:") {
        answer.pointer("/Parameter/Value").and_then(Value::as_str)
    } else {
        answer.get("SecretString").and_then(Value::as_str)
    }
    .ok_or("the answer holds no string value (a binary secret?)")?;
    match key {
        None => Ok(value.to_owned()),
        Some(key) => {
            let members: Value = serde_json::from_str(value)
                .map_err(|_| format!("#{key} asked, but the secret is not a JSON object"))?;
            members
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("the secret has no string member {key:?}"))
        }
    }
}
