//! The practical limit of this machine for the hello-world benchmark: a minimal hyper
//! server that answers `Hello from Wisp!\n` with no WebAssembly and no routing.
//! Usage: hyper-hello ADDR
#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                    let mut resp =
                        Response::new(Full::new(Bytes::from_static(b"Hello from Wisp!\n")));
                    resp.headers_mut()
                        .insert("content-type", "text/plain".parse().expect("static header"));
                    Ok::<_, Infallible>(resp)
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
