//! `list-users`: `GET /users` returns every user as a JSON array.

use std::io::Write as _;

use serde::Serialize;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::OutputStream;

/// A user as returned by the REST API example.
#[derive(Serialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// The fixed users of the example (the same data as in `get-user`).
fn fixed_users() -> Vec<User> {
    [
        (1, "Ada Lovelace", "ada@example.com"),
        (2, "Grace Hopper", "grace@example.com"),
        (3, "Alan Turing", "alan@example.com"),
    ]
    .into_iter()
    .map(|(id, name, email)| User {
        id,
        name: name.to_string(),
        email: email.to_string(),
    })
    .collect()
}

struct ListUsers;

wasi::http::proxy::export!(ListUsers);

impl wasi::exports::http::incoming_handler::Guest for ListUsers {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let users = fixed_users();
        send_json(response_out, 200, &users);
        println!(
            "list-users: handled {} {} -> 200 ({} users)",
            method_name(&request.method()),
            path(&request),
            users.len()
        );
    }
}

/// Sends `value` as a complete `application/json` response.
fn send_json(response_out: ResponseOutparam, status: u16, value: &impl Serialize) {
    let body = serde_json::to_vec(value).expect("response serializes to JSON");
    let headers = Fields::from_list(&[("content-type".to_string(), b"application/json".to_vec())])
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
        if let Err(err) = write_all_and_flush(&mut stream, &body) {
            eprintln!("list-users: failed to write response body: {err}");
            return;
        }
    } // The stream must be dropped before the body is finished.
    if let Err(err) = OutgoingBody::finish(outgoing, None) {
        eprintln!("list-users: failed to finish response body: {err:?}");
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
