//! Scripted peers for the client tests: a raw tokio listener on loopback that runs
//! one script against the first connection.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Listen on an ephemeral loopback port and run `script` on the first connection.
pub async fn peer<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(BufReader<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            script(BufReader::new(stream)).await;
        }
    });
    addr
}

/// The next line the client sent, without CRLF ("" when it closed).
pub async fn line(conn: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let _ = conn.read_line(&mut line).await;
    line.trim_end_matches(['\r', '\n']).to_string()
}

/// A listener that accepts and then never says a word, held open by the returned guard.
pub async fn silent_peer() -> (SocketAddr, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    (listener.local_addr().expect("local address"), listener)
}

/// A CA and a server certificate for `name` signed by it: the CA's PEM for the
/// client, and a TLS acceptor for the peer.
pub fn tls_pair(name: &str) -> (String, tokio_rustls::TlsAcceptor) {
    use std::sync::Arc;
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let der_key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .expect("server config");
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
