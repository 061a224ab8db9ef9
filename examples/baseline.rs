//! The webhook benchmark's baseline: a bare rustls + hyper HTTP/1.1 server (keep-alive,
//! TCP_NODELAY, the same TLS settings as konsumer's listener) that reads and discards
//! each request body and answers every request with one canned AdmissionReview
//! (allowed, with a small base64 JSON Patch). No routing, no JSON parsing, no
//! middleware: the floor konsumer's webhook is compared against (`bench/webhook.sh`).
//!
//! ```sh
//! cargo run --release --example baseline -- \
//!     --addr 127.0.0.1:9443 --cert DIR/.konsumer/tls/tls.crt --key DIR/.konsumer/tls/tls.key
//! ```
//!
//! Prints `baseline listening on ADDR` on stdout once bound (`--addr 127.0.0.1:0` picks
//! a free port).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The canned answer. The patch is base64 of
/// `[{"op":"add","path":"/metadata/annotations/konsumerator.lwolf.org~1partition","value":"6,7"}]`.
const ANSWER: &str = concat!(
    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"#,
    r#""uid":"b5e7c296-d725-4d26-9db7-713c18dab84b","allowed":true,"patchType":"JSONPatch","#,
    r#""patch":"W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2Fubm90YXRpb25zL2tvbnN1bWVyYXRvci5sd29sZi5vcmd+MXBhcnRpdGlvbiIsInZhbHVlIjoiNiw3In1d"}}"#
);

struct Args {
    addr: SocketAddr,
    cert: String,
    key: String,
}

fn usage() -> ! {
    eprintln!("usage: baseline --addr HOST:PORT --cert tls.crt --key tls.key");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut addr = None;
    let mut cert = None;
    let mut key = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--addr" => addr = Some(value.parse().unwrap_or_else(|_| usage())),
            "--cert" => cert = Some(value),
            "--key" => key = Some(value),
            _ => usage(),
        }
    }
    match (addr, cert, key) {
        (Some(addr), Some(cert), Some(key)) => Args { addr, cert, key },
        _ => usage(),
    }
}

fn tls_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, Box<dyn std::error::Error>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the whole body (as a real webhook must) and drop it.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let acceptor = TlsAcceptor::from(tls_config(&args.cert, &args.key)?);
    let listener = TcpListener::bind(args.addr).await?;
    println!("baseline listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;

    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
