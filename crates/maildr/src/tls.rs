//! TLS material for a site: the operator's certificate, or a generated lab CA and a
//! site certificate signed by it.
//!
//! Generated material lives under `<data_dir>/tls/` and is reused on restart, so
//! clients that trust `ca.pem` keep trusting the site.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Paths of the TLS material a site serves with.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Set when the certificate was generated: the CA clients should trust.
    pub ca: Option<PathBuf>,
}

/// Use the configured certificate, or generate (once) a lab CA and a certificate
/// for `hostname`, `localhost` and the loopback addresses.
pub fn ensure_files(data_dir: &Path, hostname: &str, cert: Option<&Path>, key: Option<&Path>) -> Result<TlsFiles> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return Ok(TlsFiles { cert: cert.into(), key: key.into(), ca: None });
    }
    let dir = data_dir.join("tls");
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), ca: Some(dir.join("ca.pem")) };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = rcgen::KeyPair::generate().context("generating the lab CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).context("lab CA parameters")?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("maildr lab CA for {hostname}"));
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the lab CA")?;
    let site_key = rcgen::KeyPair::generate().context("generating the site key")?;
    let mut params = rcgen::CertificateParams::new(vec![
        hostname.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .context("site certificate parameters")?;
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    let site_cert = params.signed_by(&site_key, &ca_cert, &ca_key).context("signing the site certificate")?;
    write_private(&files.key, site_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, site_cert.pem()).with_context(|| format!("writing {}", files.cert.display()))?;
    std::fs::write(files.ca.as_ref().expect("generated"), ca_cert.pem()).context("writing the lab CA")?;
    // Kept so a lab supervisor can sign more site certificates under the same CA.
    write_private(&dir.join("ca-key.pem"), ca_key.serialize_pem().as_bytes())?;
    Ok(files)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

/// Build the rustls server configuration from PEM files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading certificates from {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", files.cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", files.cert.display());
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key from {}", files.key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("certificate {} does not match key {}", files.cert.display(), files.key.display()))?;
    Ok(Arc::new(config))
}
