//! `hello`: the smallest useful Wisp function.
//!
//! Answers every request with `200 text/plain` and `Hello from Wisp!\n`.
//! Set the `GREETING` env var in the manifest to change the greeting, e.g.
//! `GREETING=Howdy` gives `Howdy from Wisp!\n`.

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let greeting = std::env::var("GREETING")
            .ok()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| "Hello".to_string());
        let body = format!("{greeting} from Wisp!\n");

        send(response_out, 200, "text/plain", body.as_bytes());

        println!(
            "hello: handled {} {}",
            method_name(&request.method()),
            path(&request)
        );
    }
}

/// Sends a complete response: status, `content-type` and the whole body.
fn send(response_out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(status)
        .expect("status is a valid HTTP status code");
    let outgoing = response.body().expect("response body is taken once");
    // Hand the response head to the host first, then stream the body.
    ResponseOutparam::set(response_out, Ok(response));
    {
        let mut stream = outgoing.write().expect("body stream is taken once");
        if let Err(err) = write_all_and_flush(&mut stream, body) {
            eprintln!("hello: failed to write response body: {err}");
            return;
        }
    } // The stream must be dropped before the body is finished.
    if let Err(err) = OutgoingBody::finish(outgoing, None) {
        eprintln!("hello: failed to finish response body: {err:?}");
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
