//! The drill's own protocol clients: what a sending MTA, a mail user agent, a stub
//! resolver and an automation script do, over real sockets, each exchange under a
//! deadline.
//!
//! They are deliberately independent of maildr's servers (the drill links no
//! server code): a bug shared by server and client would hide itself.

pub mod dns;
pub mod imap;
pub mod smtp;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// Longest reply line a client reads before it gives up on the peer.
pub const LINE_BYTES_MAX: usize = 16 * 1024;

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS settings of the target: the CA its certificates chain to.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Trust exactly the CA certificates in this PEM file.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Tls, String> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("CA file: {e}"))?;
            roots.add(cert).map_err(|e| format!("CA certificate: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("CA file holds no certificate".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls { config: Arc::new(config) })
    }
}

/// Read one CRLF-terminated line (without the CRLF), bounded.
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<String, String> {
    use tokio::io::AsyncBufReadExt;
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await.map_err(|e| format!("read: {e}"))?;
        if chunk.is_empty() {
            return Err("connection closed".into());
        }
        if let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&chunk[..=pos]);
            r.consume(pos + 1);
            break;
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        r.consume(n);
        if buf.len() > LINE_BYTES_MAX {
            return Err(format!("a line longer than {LINE_BYTES_MAX} bytes"));
        }
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
