//! API Gateway HTTP API (payload format 2.0) events and responses: how an HTTP request
//! reaches a Lambda handler, and how the handler's result becomes the HTTP response.
//! <https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html>

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Map, Value, json};

/// What the gateway knows about a request besides the request itself.
pub struct RequestContext<'a> {
    pub request_id: &'a str,
    /// `GET /users/{id}`, or `$default` when the request did not come through a route.
    pub route_key: &'a str,
    pub path_parameters: &'a [(String, String)],
    pub source_ip: &'a str,
    /// Unix time of the request, in milliseconds.
    pub time_ms: i64,
}

/// Headers the platform adds for WebAssembly functions; a native function gets the same
/// facts in the event's fields instead.
fn is_platform_header(name: &str) -> bool {
    name.starts_with("x-wisp-")
}

/// Builds the payload 2.0 event for a request.
pub fn event(req: &http::Request<Bytes>, ctx: &RequestContext<'_>) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in req.headers() {
        let name = name.as_str();
        if is_platform_header(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        // Repeated headers are joined with commas, as API Gateway does.
        match headers.get_mut(name) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&value);
            }
            _ => {
                headers.insert(name.to_string(), Value::String(value));
            }
        }
    }
    let raw_query = req.uri().query().unwrap_or("");
    let mut query = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        match query.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    let body = req.body();
    let (body, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) if is_text(req.headers()) => (Value::String(text.to_string()), false),
        _ => (Value::String(B64.encode(body)), true),
    };
    let method = req.method().as_str();
    let path = req.uri().path();
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let protocol = match req.version() {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let mut event = json!({
        "version": "2.0",
        "routeKey": ctx.route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "wisp",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(host),
            "http": {
                "method": method,
                "path": path,
                "protocol": protocol,
                "sourceIp": ctx.source_ip,
                "userAgent": user_agent,
            },
            "requestId": ctx.request_id,
            "routeKey": ctx.route_key,
            "stage": "$default",
            "time": clf_time(ctx.time_ms),
            "timeEpoch": ctx.time_ms,
        },
        "isBase64Encoded": is_base64,
    });
    let obj = event.as_object_mut().expect("built as an object");
    if !cookies.is_empty() {
        obj.insert("cookies".into(), json!(cookies));
    }
    if !query.is_empty() {
        obj.insert("queryStringParameters".into(), Value::Object(query));
    }
    if !ctx.path_parameters.is_empty() {
        let params: Map<String, Value> = ctx
            .path_parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(decode(v))))
            .collect();
        obj.insert("pathParameters".into(), Value::Object(params));
    }
    if !body.is_null() {
        obj.insert("body".into(), body);
    }
    event
}

/// Whether a body with these headers is sent as text (else base64), as API Gateway decides:
/// text for `text/*`, JSON, XML, form data and JavaScript, or when no content type is set.
fn is_text(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase())
    else {
        return true;
    };
    ct.starts_with("text/")
        || ["json", "xml", "javascript", "x-www-form-urlencoded", "yaml"]
            .iter()
            .any(|t| ct.contains(t))
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// `12/Mar/2020:19:03:58 +0000`, the form API Gateway uses in `requestContext.time`.
fn clf_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    t.format(&fmt).unwrap_or_default()
}

/// Why a handler's result could not become a response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("the handler's `statusCode` {0} is not an HTTP status code (100-599)")]
    Status(String),
    #[error("the handler's `body` is marked `isBase64Encoded` but is not valid base64")]
    Base64,
    #[error("the handler's response has a header that is not valid HTTP: {0}")]
    Header(String),
}

/// Turns a handler's result into the HTTP response, the way API Gateway does for payload
/// 2.0: an object with `statusCode` is a full response (`headers`, `cookies`, `body`,
/// `isBase64Encoded`); anything else is a 200 `application/json` response whose body is the
/// result as JSON (a string result is sent as is).
pub fn response(payload: &[u8]) -> Result<http::Response<Bytes>, ResponseError> {
    let parsed: Option<Value> = serde_json::from_slice(payload).ok();
    let Some(Value::Object(obj)) = parsed.as_ref().filter(|v| v.get("statusCode").is_some()) else {
        let body = match &parsed {
            Some(Value::String(s)) => Bytes::from(s.clone()),
            _ => Bytes::copy_from_slice(payload),
        };
        let mut resp = http::Response::new(body);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    };
    let status = match &obj["statusCode"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .and_then(|n| u16::try_from(n).ok())
    // http accepts up to 999; HTTP status codes end at 599.
    .filter(|n| (100..=599).contains(n))
    .and_then(|n| http::StatusCode::from_u16(n).ok())
    .ok_or_else(|| ResponseError::Status(obj["statusCode"].to_string()))?;
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            Bytes::from(B64.decode(s).map_err(|_| ResponseError::Base64)?)
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    let mut add = |name: &str, value: &str| -> Result<(), ResponseError> {
        let n = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ResponseError::Header(name.to_string()))?;
        let v = http::HeaderValue::from_str(value)
            .map_err(|_| ResponseError::Header(format!("{name}: {value}")))?;
        headers.append(n, v);
        Ok(())
    };
    if let Some(Value::Object(h)) = obj.get("headers") {
        for (name, value) in h {
            match value {
                Value::String(s) => add(name, s)?,
                Value::Null => {}
                other => add(name, &other.to_string())?,
            }
        }
    }
    if let Some(Value::Object(h)) = obj.get("multiValueHeaders") {
        for (name, values) in h {
            for v in values.as_array().into_iter().flatten() {
                add(name, v.as_str().unwrap_or(&v.to_string()))?;
            }
        }
    }
    if let Some(Value::Array(cookies)) = obj.get("cookies") {
        for c in cookies.iter().filter_map(|c| c.as_str()) {
            add("set-cookie", c)?;
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(params: &'a [(String, String)]) -> RequestContext<'a> {
        RequestContext {
            request_id: "req-1",
            route_key: "POST /users/{id}",
            path_parameters: params,
            source_ip: "127.0.0.1",
            time_ms: 1_583_348_638_390,
        }
    }

    #[test]
    fn event_has_the_payload_2_0_shape() {
        let req = http::Request::post("/users/a%20b?x=1&y=2&x=3&q=a+b")
            .header("content-type", "application/json")
            .header("cookie", "s=1; t=2")
            .header("user-agent", "curl/8")
            .header("x-wisp-request-id", "req-1")
            .header("x-custom", "a")
            .header("x-custom", "b")
            .body(Bytes::from_static(b"{\"k\":1}"))
            .unwrap();
        let params = [("id".to_string(), "a%20b".to_string())];
        let e = event(&req, &ctx(&params));
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["routeKey"], "POST /users/{id}");
        assert_eq!(e["rawPath"], "/users/a%20b");
        assert_eq!(e["rawQueryString"], "x=1&y=2&x=3&q=a+b");
        assert_eq!(e["queryStringParameters"]["x"], "1,3");
        assert_eq!(e["queryStringParameters"]["q"], "a b");
        assert_eq!(e["pathParameters"]["id"], "a b");
        assert_eq!(e["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(e["headers"]["x-custom"], "a,b");
        assert!(e["headers"].get("x-wisp-request-id").is_none());
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["body"], "{\"k\":1}");
        assert_eq!(e["isBase64Encoded"], false);
        let rc = &e["requestContext"];
        assert_eq!(rc["http"]["method"], "POST");
        assert_eq!(rc["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(rc["http"]["userAgent"], "curl/8");
        assert_eq!(rc["requestId"], "req-1");
        assert_eq!(rc["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(rc["timeEpoch"], 1_583_348_638_390i64);
    }

    #[test]
    fn binary_bodies_are_base64_and_empty_ones_absent() {
        let req = http::Request::put("/img")
            .header("content-type", "image/png")
            .body(Bytes::from_static(&[0x89, b'P', b'N', b'G', 0xff]))
            .unwrap();
        let e = event(&req, &ctx(&[]));
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(B64.decode(e["body"].as_str().unwrap()).unwrap()[0], 0x89);
        assert!(e.get("pathParameters").is_none());
        let req = http::Request::get("/").body(Bytes::new()).unwrap();
        let e = event(&req, &ctx(&[]));
        assert!(e.get("body").is_none());
        assert!(e.get("queryStringParameters").is_none());
    }

    #[test]
    fn full_responses_map_status_headers_cookies_and_body() {
        let r = response(
            br#"{"statusCode":201,"headers":{"content-type":"text/plain","x-n":3},"cookies":["a=1","b=2"],"body":"made"}"#,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers()["x-n"], "3");
        let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(r.body(), "made");
        let r = response(br#"{"statusCode":"200","body":"aGk=","isBase64Encoded":true}"#).unwrap();
        assert_eq!(r.body(), "hi");
    }

    #[test]
    fn plain_results_are_json_200() {
        let r = response(br#"{"hello":"world"}"#).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.body(), r#"{"hello":"world"}"#);
        assert_eq!(response(br#""text""#).unwrap().body(), "text");
        assert_eq!(response(b"null").unwrap().body(), "null");
    }

    #[test]
    fn bad_responses_say_what_is_wrong() {
        assert!(matches!(
            response(br#"{"statusCode":99}"#),
            Err(ResponseError::Status(_))
        ));
        // Found by the apigw_response fuzz target: 999 was answered as is.
        assert!(matches!(
            response(br#"{"statusCode":999}"#),
            Err(ResponseError::Status(_))
        ));
        assert_eq!(
            response(br#"{"statusCode":200,"body":"%%","isBase64Encoded":true}"#).unwrap_err(),
            ResponseError::Base64
        );
        assert!(matches!(
            response(br#"{"statusCode":200,"headers":{"bad header":"x"}}"#),
            Err(ResponseError::Header(_))
        ));
    }
}
