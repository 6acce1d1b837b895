//! `create-order`: `POST /orders` creates an order from a JSON body.
//!
//! Send `{"item": "book", "quantity": 2}`; `item` is a required non-empty
//! string, `quantity` is optional (default 1) and must be a positive integer.
//! Answers `201` with the created order, or `400` with a JSON error.

use std::io::{Read as _, Write as _};

use serde::Serialize;
use serde_json::{Value, json};
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

/// Request bodies larger than this are rejected with 413.
const MAX_BODY_BYTES: u64 = 64 * 1024;

/// What a client should send, repeated in every 400 answer.
const EXPECTED: &str = r#"send a JSON object like {"item": "book", "quantity": 1} ("item": non-empty string, required; "quantity": positive integer, optional, default 1)"#;

/// An order as returned by the REST API example.
#[derive(Serialize)]
struct Order {
    id: String,
    item: String,
    quantity: u64,
    status: &'static str,
}

/// Why a request body does not describe a valid order.
struct Invalid(String);

/// Validates a request body and builds the order it describes.
fn parse_order(body: &[u8]) -> Result<Order, Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        Invalid(format!(
            "request body is not valid JSON ({err}); {EXPECTED}"
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(Invalid(format!(
            "request body must be a JSON object; {EXPECTED}"
        )));
    };
    let item = match fields.get("item") {
        Some(Value::String(item)) if !item.trim().is_empty() => item.clone(),
        Some(_) => {
            return Err(Invalid(format!(
                "\"item\" must be a non-empty string; {EXPECTED}"
            )));
        }
        None => return Err(Invalid(format!("\"item\" is required; {EXPECTED}"))),
    };
    let quantity = match fields.get("quantity") {
        None | Some(Value::Null) => 1,
        Some(quantity) => match quantity.as_u64() {
            Some(quantity) if quantity > 0 => quantity,
            _ => {
                return Err(Invalid(format!(
                    "\"quantity\" must be a positive integer; {EXPECTED}"
                )));
            }
        },
    };
    Ok(Order {
        id: new_order_id(),
        item,
        quantity,
        status: "created",
    })
}

/// `ord_` followed by 16 hex digits from the host's secure random source.
fn new_order_id() -> String {
    format!("ord_{:016x}", wasi::random::random::get_random_u64())
}

struct CreateOrder;

wasi::http::proxy::export!(CreateOrder);

impl wasi::exports::http::incoming_handler::Guest for CreateOrder {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = method_name(&request.method()).to_string();
        let path = path(&request);
        let (status, detail) = match read_body(&request) {
            Err(ReadError::TooLarge) => {
                let error = format!("request body is larger than {MAX_BODY_BYTES} bytes");
                send_json(response_out, 413, &json!({ "error": error }), &[]);
                (413, "body too large".to_string())
            }
            Err(ReadError::Io(err)) => {
                send_json(
                    response_out,
                    400,
                    &json!({ "error": format!("could not read request body: {err}") }),
                    &[],
                );
                (400, format!("read error: {err}"))
            }
            Ok(body) => match parse_order(&body) {
                Ok(order) => {
                    let location = format!("/orders/{}", order.id);
                    send_json(response_out, 201, &order, &[("location", &location)]);
                    (
                        201,
                        format!("{} x{} as {}", order.item, order.quantity, order.id),
                    )
                }
                Err(Invalid(error)) => {
                    send_json(response_out, 400, &json!({ "error": error }), &[]);
                    (400, "invalid order".to_string())
                }
            },
        };
        println!("create-order: handled {method} {path} -> {status} ({detail})");
    }
}

enum ReadError {
    TooLarge,
    Io(String),
}

/// Reads the whole request body, up to [`MAX_BODY_BYTES`].
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, ReadError> {
    let body = request
        .consume()
        .map_err(|()| ReadError::Io("request body was already consumed".to_string()))?;
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| ReadError::Io("request body stream was already taken".to_string()))?;
        stream
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| ReadError::Io(err.to_string()))?;
    } // The stream must be dropped before the body is finished.
    drop(IncomingBody::finish(body));
    if bytes.len() as u64 > MAX_BODY_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// Sends `value` as a complete `application/json` response.
fn send_json(
    response_out: ResponseOutparam,
    status: u16,
    value: &impl Serialize,
    extra_headers: &[(&str, &str)],
) {
    let body = serde_json::to_vec(value).expect("response serializes to JSON");
    let mut entries = vec![("content-type".to_string(), b"application/json".to_vec())];
    entries.extend(
        extra_headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec())),
    );
    let headers = Fields::from_list(&entries).expect("response headers are valid");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(status)
        .expect("status is a valid HTTP status code");
    let outgoing = response.body().expect("response body is taken once");
    // Hand the response head to the host first, then stream the body.
    ResponseOutparam::set(response_out, Ok(response));
    {
        let mut stream = outgoing.write().expect("body stream is taken once");
        if let Err(err) = write_all_and_flush(&mut stream, &body) {
            eprintln!("create-order: failed to write response body: {err}");
            return;
        }
    } // The stream must be dropped before the body is finished.
    if let Err(err) = OutgoingBody::finish(outgoing, None) {
        eprintln!("create-order: failed to finish response body: {err:?}");
    }
}

/// Writes all of `bytes` and waits until the host has taken them.
///
/// Note: `OutputStream` has inherent (non-blocking) `write`/`flush` methods
/// from WASI that shadow `std::io::Write`'s, so call the trait explicitly.
fn write_all_and_flush(stream: &mut OutputStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes)?;
    std::io::Write::flush(stream)
}

/// The request path without its query string.
fn path(request: &IncomingRequest) -> String {
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
    match path_with_query.split_once('?') {
        Some((path, _query)) => path.to_string(),
        None => path_with_query,
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}
