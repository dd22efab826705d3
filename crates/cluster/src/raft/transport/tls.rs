//! The TLS side of the replication channel: this site's cluster certificate and
//! key, the cluster CAs it trusts, and the rustls settings built from them, read
//! again when the files change so that certificates rotate without a restart.
//!
//! This module only builds settings; `transport` decides what a connection may do.
//! It must never keep settings from files that failed to load in place of the last
//! good ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::certs::{self, CertError, CertIdentity};

/// How often the certificate files are looked at for a change (at most once per
/// this interval, when a connection is opened or accepted).
pub(crate) const CERT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The certificate files and the TLS settings last loaded from them.
pub(super) struct ReloadingTls {
    ca_files: Vec<PathBuf>,
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    tls: Arc<ClusterTls>,
    stamp: Vec<Option<(SystemTime, u64)>>,
    checked_at: Instant,
}

impl ReloadingTls {
    pub(super) fn load(ca_files: &[PathBuf], cert: &Path, key: &Path) -> Result<ReloadingTls, CertError> {
        let (ca_files, cert, key) = (ca_files.to_vec(), cert.to_path_buf(), key.to_path_buf());
        // Stamped before loading: a change made while loading is seen at the next check.
        let stamp = stamp(&ca_files, &cert, &key);
        let tls = Arc::new(ClusterTls::load(&ca_files, &cert, &key)?);
        let loaded = Mutex::new(Loaded { tls, stamp, checked_at: Instant::now() });
        Ok(ReloadingTls { ca_files, cert, key, loaded })
    }

    /// The TLS settings to use now: reloaded first when the files changed.
    pub(super) fn current(&self) -> Arc<ClusterTls> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked_at.elapsed() >= CERT_RELOAD_CHECK_INTERVAL {
            loaded.checked_at = Instant::now();
            let stamp = stamp(&self.ca_files, &self.cert, &self.key);
            if stamp != loaded.stamp {
                match ClusterTls::load(&self.ca_files, &self.cert, &self.key) {
                    Ok(tls) => {
                        tracing::info!(cert = %self.cert.display(), expires_at = tls.own.not_after_unix, "cluster certificates reloaded");
                        loaded.tls = Arc::new(tls);
                        loaded.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "changed cluster certificate files do not load; keeping the last good ones")
                    }
                }
            }
        }
        Arc::clone(&loaded.tls)
    }
}

/// Size and modification time of each file, `None` where it cannot be read.
fn stamp(ca_files: &[PathBuf], cert: &Path, key: &Path) -> Vec<Option<(SystemTime, u64)>> {
    let files = ca_files.iter().map(PathBuf::as_path).chain([cert, key]);
    files.map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

pub(super) struct ClusterTls {
    pub(super) connector: TlsConnector,
    pub(super) acceptor: TlsAcceptor,
    /// This site's own certificate.
    pub(super) own: CertIdentity,
}

impl ClusterTls {
    fn load(ca_files: &[PathBuf], cert: &Path, key: &Path) -> Result<ClusterTls, CertError> {
        let bad = |path: &Path, reason: String| CertError::Invalid { what: path.display().to_string(), reason };
        let mut roots = rustls::RootCertStore::empty();
        for ca in ca_files {
            for der in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, e.to_string()))? {
                roots.add(der.map_err(|e| bad(ca, e.to_string()))?).map_err(|e| bad(ca, e.to_string()))?;
            }
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad(cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(cert, e.to_string()))?;
        let first = chain.first().ok_or_else(|| bad(cert, "holds no certificate".into()))?;
        let own = certs::identity(first)?;
        if own.site.is_none() {
            return Err(bad(cert, "names no site: issue it with `maildr cluster certs issue`".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::clone(&roots))
            .build()
            .map_err(|e| CertError::Invalid { what: "the cluster CAs".into(), reason: e.to_string() })?;
        let tls13 = &[&rustls::version::TLS13];
        let server = rustls::ServerConfig::builder_with_protocol_versions(tls13)
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| bad(key, e.to_string()))?;
        let client = rustls::ClientConfig::builder_with_protocol_versions(tls13)
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| bad(key, e.to_string()))?;
        Ok(ClusterTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            own,
        })
    }
}
