//! API Gateway payload 2.0 response mapping (`wisp_native::apigw::response`): a handler's
//! result, as bytes, becomes an HTTP response or a `ResponseError`, never a panic; and the
//! response says what the result said (status 100-599, the body, the headers, cookies).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wisp_native::apigw::{ResponseError, response};

fuzz_target!(|data: &[u8]| {
    let result = response(data);
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    let full = parsed
        .as_ref()
        .and_then(Value::as_object)
        .filter(|o| o.contains_key("statusCode"));
    let Some(obj) = full else {
        // Anything else is a 200 JSON response with the result as its body.
        let r = result.expect("a plain result always maps");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        match &parsed {
            Some(Value::String(s)) => assert_eq!(r.body(), s.as_bytes()),
            _ => assert_eq!(r.body(), data),
        }
        return;
    };
    let r = match result {
        Ok(r) => r,
        Err(ResponseError::Status(_) | ResponseError::Base64 | ResponseError::Header(_)) => return,
    };
    // The documented range is 100-599 ("not an HTTP status code (100-599)" otherwise),
    // but `response` passes 600-999 through (http::StatusCode takes them): input
    // `{"statusCode":999}`, reported with its fix; tighten to 100..=599 once it lands.
    assert!(
        (100..=599).contains(&r.status().as_u16()),
        "status {} from {:?}",
        r.status(),
        obj["statusCode"]
    );
    match obj.get("body") {
        None | Some(Value::Null) => assert!(r.body().is_empty()),
        Some(Value::String(s)) if obj.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            assert_eq!(
                r.body(),
                &base64::engine::general_purpose::STANDARD.decode(s).unwrap()
            )
        }
        Some(Value::String(s)) => assert_eq!(r.body(), s.as_bytes()),
        Some(other) => assert_eq!(r.body(), other.to_string().as_bytes()),
    }
    if let Some(Value::Object(h)) = obj.get("headers") {
        for (name, value) in h {
            let want = match value {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            assert!(
                r.headers()
                    .get_all(name.as_str())
                    .iter()
                    .any(|v| v == want.as_str()),
                "header {name}: {want}"
            );
        }
    }
    if let Some(Value::Array(cookies)) = obj.get("cookies") {
        let set: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
        for c in cookies.iter().filter_map(Value::as_str) {
            assert!(set.iter().any(|v| *v == c), "cookie {c}");
        }
    }
});
