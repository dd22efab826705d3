//! TLS for the clients: trust exactly the CA certificates the caller gives (the
//! lab's CA, a deployment's CA), with rustls and the ring provider chosen here so
//! no process-wide default provider is needed.
//!
//! Never: fall back to the system's web PKI or skip verification; a drill that
//! trusted anything would not notice a wrong certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::Io;

/// Why TLS could not be set up or established.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA PEM: {0}")]
    Pem(String),
    #[error("CA PEM holds no certificate")]
    NoCertificate,
    #[error("CA certificate: {0}")]
    Certificate(rustls::Error),
    #[error("TLS client configuration: {0}")]
    Config(rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake as {server_name}: {source}")]
    Handshake { server_name: String, source: std::io::Error },
}

/// The TLS settings of a target: the CA its certificates chain to.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// Trust exactly the CA certificates in this PEM text.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Tls, TlsError> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TlsError::Pem(e.to_string()))?;
            roots.add(cert).map_err(TlsError::Certificate)?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls { config: Arc::new(config) })
    }

    /// Handshake over `stream`, verifying the certificate for `server_name`. The
    /// caller puts the deadline around it.
    pub async fn connect<S: Io + 'static>(
        &self,
        stream: S,
        server_name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsError> {
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|source| TlsError::Handshake { server_name: server_name.to_string(), source })
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Connect(std::io::Error),
    Tls(TlsError),
}

/// A TCP connection to `server`, with `tls` wrapped in implicit TLS verified for
/// the server name. The caller puts the deadline around it.
pub(crate) async fn open(server: SocketAddr, tls: Option<(&Tls, &str)>) -> Result<Box<dyn Io>, OpenError> {
    let tcp = TcpStream::connect(server).await.map_err(OpenError::Connect)?;
    // Commands are small and answered one by one: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        None => Box::new(tcp),
        Some((tls, name)) => Box::new(tls.connect(tcp, name).await.map_err(OpenError::Tls)?),
    })
}
