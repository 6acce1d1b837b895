//! `{{name}}`: a Wisp function in Rust, a WebAssembly component that exports
//! `wasi:http/incoming-handler` (the `wasi:http/proxy` world).
//!
//! `wisp deploy` builds it with `cargo build --release --target wasm32-wasip2`. Whatever
//! it prints goes to `wisp logs {{name}}`.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Function;

wasi::http::proxy::export!(Function);

impl wasi::exports::http::incoming_handler::Guest for Function {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        println!("{{name}}: handling {path}");

        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers);
        response
            .set_status_code(200)
            .expect("200 is a valid status");
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        {
            let mut stream = body.write().expect("the body stream is taken once");
            // `OutputStream` has WASI's own `write`/`flush`: call `std::io::Write`'s.
            std::io::Write::write_all(&mut stream, b"Hello from {{name}}! (Rust on Wisp)\n")
                .and_then(|()| std::io::Write::flush(&mut stream))
                .expect("writing the response body");
        } // The stream is dropped before the body is finished.
        OutgoingBody::finish(body, None).expect("finishing the response body");
    }
}
