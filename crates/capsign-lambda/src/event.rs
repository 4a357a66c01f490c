//! The raw Lambda event, checked before `lambda_http` reads it.
//!
//! `lambda_http` turns an event into an `http::Request` assuming the front door wrote it: a
//! body marked base64 that is not panics inside it, a header with a CR or LF or a `cookies`
//! member that is not an array fails its deserializer (an invocation error, which the front
//! door turns into a bare 502), and headers of any size pass. An event that says it is an
//! HTTP request (API Gateway v1 or v2, a Function URL, an ALB) is checked here first, with the
//! server's limits; what fails is answered `400` (or `431` for headers too large) in Ably's
//! error envelope, in the response shape of the event's kind. An event that does not say it
//! is one (an SQS batch, say) is left to `lambda_http`, which reports an invocation error.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use capsign::server::{MAX_HEADER_BYTES, MAX_HEADERS};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value};

/// The kind of HTTP event, which decides the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// API Gateway HTTP API (payload 2.0) or a Function URL.
    V2,
    /// API Gateway REST API (payload 1.0).
    V1,
    /// An Application Load Balancer target group.
    Alb,
}

/// An HTTP event refused before it reached capsign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The kind of event, for the shape of the answer.
    pub(crate) kind: Kind,
    /// `400`, or `431` for headers over the server's limits.
    pub(crate) status: StatusCode,
    /// What is wrong, never a value from the event.
    pub(crate) message: String,
}

/// The kind of HTTP event `event` says it is; `None` when it is not one.
pub(crate) fn kind(event: &Value) -> Option<Kind> {
    let context = event.get("requestContext");
    if context.and_then(|c| c.get("elb")).is_some() {
        Some(Kind::Alb)
    } else if event.get("version").and_then(Value::as_str) == Some("2.0")
        || event.get("rawPath").is_some()
        || context.and_then(|c| c.get("http")).is_some()
    {
        Some(Kind::V2)
    } else if event.get("httpMethod").is_some() {
        Some(Kind::V1)
    } else {
        None
    }
}

/// Checks an event `lambda_http` will read: `Ok` when it is not an HTTP event (left to
/// `lambda_http`) or when it is one within the server's limits.
///
/// # Errors
///
/// The refusal to answer in the event's shape.
pub(crate) fn check(event: &Value) -> Result<(), Refused> {
    let Some(kind) = kind(event) else {
        return Ok(());
    };
    let refuse = |status: StatusCode, message: &str| Refused {
        kind,
        status,
        message: message.to_owned(),
    };
    let bad = |message: &str| refuse(StatusCode::BAD_REQUEST, message);
    if !event.get("requestContext").is_some_and(Value::is_object) {
        return Err(bad("the event has no requestContext object"));
    }
    let path = match kind {
        Kind::V2 => event.get("rawPath"),
        Kind::V1 | Kind::Alb => event.get("path"),
    };
    match path {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) if p.parse::<http::uri::PathAndQuery>().is_ok() => {}
        Some(_) => return Err(bad("the event's path is not a valid request path")),
    }
    if let Some(query) = event.get("rawQueryString").filter(|q| !q.is_null()) {
        let valid = query
            .as_str()
            .is_some_and(|q| format!("/?{q}").parse::<http::uri::PathAndQuery>().is_ok());
        if !valid {
            return Err(bad("the event's rawQueryString is not a valid query"));
        }
    }

    // The headers, counted as the server counts them: each name and value with its `: ` and
    // line end. A REST API or ALB event may carry each header twice (`headers` and
    // `multiValueHeaders`); the multi-value form is counted when present.
    let mut size = 0usize;
    let mut count = 0usize;
    let single = strings_map(event.get("headers"))
        .ok_or_else(|| bad("the event's headers are not an object of strings"))?;
    let multi = multi_map(event.get("multiValueHeaders"))
        .ok_or_else(|| bad("the event's multiValueHeaders are not an object of string arrays"))?;
    for (name, value) in single.iter().chain(multi.iter()) {
        if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err()
        {
            return Err(bad(
                "a header name or value holds a character HTTP does not allow (CR, LF, NUL, …)",
            ));
        }
    }
    let counted = if multi.is_empty() { &single } else { &multi };
    for (name, value) in counted {
        size += name.len() + value.len() + 4;
        count += 1;
    }
    match event.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                let Some(cookie) = cookie.as_str() else {
                    return Err(bad("the event's cookies are not an array of strings"));
                };
                if HeaderValue::from_str(cookie).is_err() {
                    return Err(bad("a cookie holds a character HTTP does not allow"));
                }
                size += cookie.len() + 2;
            }
            if !cookies.is_empty() {
                size += "cookie: \r\n".len();
                count += 1;
            }
        }
        Some(_) => return Err(bad("the event's cookies are not an array of strings")),
    }
    if size > MAX_HEADER_BYTES || count > MAX_HEADERS {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!(
                "request headers over the limit ({} KiB, {MAX_HEADERS} headers)",
                MAX_HEADER_BYTES / 1024
            ),
        ));
    }

    let encoded = match event.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("the event's isBase64Encoded is not a boolean")),
    };
    match event.get("body") {
        None | Some(Value::Null) => {}
        Some(Value::String(body)) => {
            if encoded && STANDARD.decode(body).is_err() {
                return Err(bad(
                    "the event's body is marked isBase64Encoded but is not base64",
                ));
            }
        }
        Some(_) => return Err(bad("the event's body is not a string")),
    }
    Ok(())
}

/// An object of strings as pairs (absent or `null`: none); `None` when it is something else.
fn strings_map(value: Option<&Value>) -> Option<Vec<(&str, &str)>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| Some((k.as_str(), v.as_str()?)))
            .collect(),
        Some(_) => None,
    }
}

/// An object of string arrays as pairs, one per value; `None` when it is something else.
fn multi_map(value: Option<&Value>) -> Option<Vec<(&str, &str)>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(map)) => {
            let mut pairs = Vec::new();
            for (k, vs) in map {
                for v in vs.as_array()? {
                    pairs.push((k.as_str(), v.as_str()?));
                }
            }
            Some(pairs)
        }
        Some(_) => None,
    }
}

/// The answer to an event of `kind`, written as the front door expects it: `response`'s
/// status, headers and (text) body.
pub(crate) async fn answer(kind: Kind, response: Response<Full<Bytes>>) -> Value {
    use http_body_util::BodyExt as _;
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let mut out = Map::new();
    out.insert("statusCode".into(), parts.status.as_u16().into());
    if kind == Kind::Alb {
        // A target group wants the reason phrase too; a REST API refuses unknown members.
        let reason = parts.status.canonical_reason().unwrap_or_default();
        let description = format!("{} {reason}", parts.status.as_u16());
        out.insert("statusDescription".into(), description.into());
    }
    out.insert("headers".into(), headers.into());
    out.insert("body".into(), body.into());
    out.insert("isBase64Encoded".into(), false.into());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v2() -> Value {
        serde_json::from_str(include_str!("../../../tests/data/lambda/http-api-v2.json")).unwrap()
    }

    fn v1() -> Value {
        serde_json::from_str(include_str!("../../../tests/data/lambda/rest-api-v1.json")).unwrap()
    }

    fn alb() -> Value {
        serde_json::from_str(include_str!("../../../tests/data/lambda/alb.json")).unwrap()
    }

    #[test]
    fn the_documented_samples_pass_and_are_told_apart() {
        for (event, want) in [(v2(), Kind::V2), (v1(), Kind::V1), (alb(), Kind::Alb)] {
            assert_eq!(kind(&event), Some(want));
            assert_eq!(check(&event), Ok(()));
        }
        let function_url: Value =
            serde_json::from_str(include_str!("../../../tests/data/lambda/function-url.json"))
                .unwrap();
        assert_eq!(check(&function_url), Ok(()));
        assert_eq!(kind(&json!({"Records": []})), None);
        assert_eq!(
            check(&json!({"Records": []})),
            Ok(()),
            "left to lambda_http"
        );
    }

    #[test]
    fn each_malformed_part_is_a_400_naming_it() {
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut e = v2();
                    e["body"] = json!("not base64!");
                    e["isBase64Encoded"] = json!(true);
                    e
                },
                "not base64",
            ),
            (
                {
                    let mut e = v1();
                    e.as_object_mut().unwrap().remove("requestContext");
                    e
                },
                "requestContext",
            ),
            (
                {
                    let mut e = v2();
                    e["cookies"] = json!("a=b");
                    e
                },
                "cookies",
            ),
            (
                {
                    let mut e = v2();
                    e["cookies"] = json!([1]);
                    e
                },
                "cookies",
            ),
            (
                {
                    let mut e = v2();
                    e["headers"]["x-evil"] = json!("a\r\nset-cookie: b");
                    e
                },
                "character",
            ),
            (
                {
                    let mut e = v1();
                    e["multiValueHeaders"]["x-evil"] = json!(["a\nb"]);
                    e
                },
                "character",
            ),
            (
                {
                    let mut e = alb();
                    e["headers"] = json!(["x"]);
                    e
                },
                "headers",
            ),
            (
                {
                    let mut e = v2();
                    e["headers"]["x-n"] = json!(5);
                    e
                },
                "headers",
            ),
            (
                {
                    let mut e = v2();
                    e["rawPath"] = json!("/a b");
                    e
                },
                "path",
            ),
            (
                {
                    let mut e = v2();
                    e["rawQueryString"] = json!("a=\u{1}");
                    e
                },
                "rawQueryString",
            ),
            (
                {
                    let mut e = v1();
                    e["isBase64Encoded"] = json!("yes");
                    e
                },
                "isBase64Encoded",
            ),
            (
                {
                    let mut e = v1();
                    e["body"] = json!({"a": 1});
                    e
                },
                "body",
            ),
        ];
        for (event, names) in cases {
            let refused = check(&event).unwrap_err();
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
            assert!(refused.message.contains(names), "{names}: {refused:?}");
        }
    }

    #[test]
    fn headers_over_the_servers_limits_are_a_431() {
        let mut e = v2();
        e["headers"]["x-big"] = json!("a".repeat(200 * 1024));
        assert_eq!(
            check(&e).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let mut e = v2();
        e["cookies"] = json!(vec!["c=".to_owned() + &"v".repeat(1000); 20]);
        assert_eq!(
            check(&e).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let mut e = v1();
        for i in 0..100 {
            e["multiValueHeaders"][format!("x-{i}")] = json!(["1"]);
        }
        assert_eq!(
            check(&e).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        // Just under the limit passes: the same header in both forms is counted once.
        let mut e = v1();
        let big = "a".repeat(MAX_HEADER_BYTES / 2);
        e["headers"]["x-big"] = json!(big);
        e["multiValueHeaders"]["x-big"] = json!([big]);
        assert_eq!(check(&e), Ok(()));
    }

    #[tokio::test]
    async fn answers_have_the_shape_of_their_kind() {
        let response = Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let a = answer(Kind::Alb, response.clone()).await;
        assert_eq!(a["statusDescription"], "400 Bad Request");
        assert_eq!(a["headers"]["content-type"], "application/json");
        assert_eq!(a["body"], "{}");
        let v = answer(Kind::V1, response).await;
        assert_eq!(v["statusCode"], 400);
        assert!(
            v.get("statusDescription").is_none(),
            "REST APIs refuse unknown members"
        );
    }
}
