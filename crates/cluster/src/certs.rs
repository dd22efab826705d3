//! The cluster's own PKI: a certificate authority only the cluster's members trust,
//! and one certificate per site for mutual TLS on the replication channel.
//!
//! A site certificate names its site and its node id as DNS names under
//! [`IDENTITY_SUFFIX`] (`<site>.site.maildr.internal`, `node-<id>.node.maildr.internal`);
//! the site name is the identity the channel checks (a site that lost its data
//! rejoins under a new node id and keeps its name, address and certificate). The
//! same certificate serves both ends of a connection (server and client auth).
//!
//! Issuing happens offline, on the operator's machine (`maildr cluster certs`); a
//! running site only reads certificates. This module must never write over an
//! existing key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

/// The names a site certificate carries end in this (a reserved private TLD, so
/// they never collide with a name in public DNS).
pub const IDENTITY_SUFFIX: &str = "maildr.internal";

/// Days a cluster CA is valid by default.
pub const CA_VALIDITY_DAYS_DEFAULT: u32 = 3650;
/// Days a site certificate is valid by default.
pub const SITE_CERT_VALIDITY_DAYS_DEFAULT: u32 = 365;
/// Longest validity accepted for anything this module issues (about 30 years).
pub const VALIDITY_DAYS_MAX: u32 = 11_000;

/// The CA's certificate in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Why a certificate could not be issued or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} exists already; remove it first (keys are never overwritten)")]
    Exists { path: PathBuf },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

fn invalid(what: impl Into<String>, reason: impl ToString) -> CertError {
    CertError::Invalid { what: what.into(), reason: reason.to_string() }
}

/// The DNS name that names `site` in its cluster certificate.
pub fn site_identity(site: &str) -> String {
    format!("{site}.site.{IDENTITY_SUFFIX}")
}

/// The DNS name that names node `node_id` in its cluster certificate.
pub fn node_identity(node_id: u64) -> String {
    format!("node-{node_id}.node.{IDENTITY_SUFFIX}")
}

/// A site name usable in a certificate: a DNS label.
fn check_site_name(site: &str) -> Result<(), CertError> {
    let label_ok = !site.is_empty()
        && site.len() <= 63
        && site.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !site.starts_with('-')
        && !site.ends_with('-');
    if label_ok {
        Ok(())
    } else {
        Err(invalid(format!("site name {site:?}"), "must be a DNS label (letters, digits, '-', at most 63)"))
    }
}

fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    if days == 0 || days > VALIDITY_DAYS_MAX {
        return Err(invalid("validity", format!("{days} days; from 1 to {VALIDITY_DAYS_MAX}")));
    }
    // A little in the past, so a peer whose clock is slightly behind accepts it.
    let now = OffsetDateTime::now_utc();
    Ok((now - time::Duration::hours(1), now + time::Duration::days(i64::from(days))))
}

/// Files a new CA or certificate was written to.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Create a new cluster CA in `dir` (`ca.pem`, `ca-key.pem`), valid `days` days.
/// `label` tells CAs apart in the subject (e.g. the year of a rollover).
pub fn create_ca(dir: &Path, label: &str, days: u32) -> Result<Issued, CertError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    refuse_existing(&[&cert_path, &key_path])?;
    let (not_before, not_after) = validity(days)?;
    let key = rcgen::KeyPair::generate().map_err(|e| invalid("the CA key", e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| invalid("the CA", e))?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("maildr cluster CA {label}"));
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(&key).map_err(|e| invalid("signing the CA", e))?;
    fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.into(), source })?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Issued { cert: cert_path, key: key_path, not_after_unix: not_after.unix_timestamp() })
}

/// Issue a certificate for `site` (node `node_id`) from the CA in `ca_dir`, written
/// to `out_dir` as `<site>-cluster.pem` and `<site>-cluster-key.pem`.
pub fn issue_site_cert(
    ca_dir: &Path,
    site: &str,
    node_id: u64,
    days: u32,
    out_dir: &Path,
) -> Result<Issued, CertError> {
    check_site_name(site)?;
    let cert_path = out_dir.join(format!("{site}-cluster.pem"));
    let key_path = out_dir.join(format!("{site}-cluster-key.pem"));
    refuse_existing(&[&cert_path, &key_path])?;
    let (not_before, not_after) = validity(days)?;
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = read_text(&ca_cert_path)?;
    let ca_key = rcgen::KeyPair::from_pem(&read_text(&ca_key_path)?)
        .map_err(|e| invalid(ca_key_path.display().to_string(), e))?;
    let ca_params = rcgen::CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(|e| invalid(ca_cert_path.display().to_string(), e))?;
    // The issuer as rcgen needs it: the same name and key as the CA on disk.
    let issuer = ca_params.self_signed(&ca_key).map_err(|e| invalid("the CA", e))?;
    let key = rcgen::KeyPair::generate().map_err(|e| invalid("the site key", e))?;
    let mut params = rcgen::CertificateParams::new(vec![site_identity(site), node_identity(node_id)])
        .map_err(|e| invalid(format!("site {site}"), e))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("maildr site {site} (node {node_id})"));
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(|e| invalid(format!("signing site {site}"), e))?;
    fs::create_dir_all(out_dir).map_err(|source| CertError::Io { path: out_dir.into(), source })?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Issued { cert: cert_path, key: key_path, not_after_unix: not_after.unix_timestamp() })
}

/// Who a site certificate names, and until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The site it names, if it names one.
    pub site: Option<String>,
    /// The node id it names, if it names one.
    pub node_id: Option<u64>,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// Read the names and expiry of a certificate (DER).
pub fn identity(der: &[u8]) -> Result<CertIdentity, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid("a certificate", e))?;
    let mut id = CertIdentity { site: None, node_id: None, not_after_unix: cert.validity().not_after.timestamp() };
    let site_suffix = format!(".site.{IDENTITY_SUFFIX}");
    let node_suffix = format!(".node.{IDENTITY_SUFFIX}");
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(name) = name {
                if let Some(site) = name.strip_suffix(&site_suffix) {
                    id.site = Some(site.to_string());
                } else if let Some(node) = name.strip_suffix(&node_suffix).and_then(|n| n.strip_prefix("node-")) {
                    id.node_id = node.parse().ok();
                }
            }
        }
    }
    Ok(id)
}

/// The first certificate of a PEM file, as DER.
pub fn read_first_cert(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(path.display().to_string(), e))?
        .next()
        .ok_or_else(|| invalid(path.display().to_string(), "holds no certificate"))?
        .map_err(|e| invalid(path.display().to_string(), e))
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io { path: path.into(), source })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CertError> {
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(CertError::Exists { path: path.to_path_buf() }),
        None => Ok(()),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io { path: path.into(), source };
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_certificate_names_its_site_and_node_and_keys_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca(&dir.path().join("ca"), "2026", 30).unwrap();
        let issued = issue_site_cert(&dir.path().join("ca"), "bj", 1, 10, &dir.path().join("bj")).unwrap();
        let id = identity(&read_first_cert(&issued.cert).unwrap()).unwrap();
        assert_eq!((id.site.as_deref(), id.node_id), (Some("bj"), Some(1)));
        let days_left = (id.not_after_unix - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((9..=10).contains(&days_left), "{days_left}");
        assert!(ca.not_after_unix > id.not_after_unix);
        let ca_id = identity(&read_first_cert(&ca.cert).unwrap()).unwrap();
        assert_eq!((ca_id.site, ca_id.node_id), (None, None));
        // Issuing again for the same site, or a new CA in the same place, is refused.
        let before = fs::read(&issued.key).unwrap();
        let again = issue_site_cert(&dir.path().join("ca"), "bj", 1, 10, &dir.path().join("bj"));
        assert!(matches!(again, Err(CertError::Exists { .. })), "{again:?}");
        assert_eq!(fs::read(&issued.key).unwrap(), before);
        assert!(matches!(create_ca(&dir.path().join("ca"), "x", 30), Err(CertError::Exists { .. })));
        // Names that cannot be a DNS label and absurd validities are refused.
        for bad in ["", "b j", "-bj", "bj.evil"] {
            assert!(issue_site_cert(&dir.path().join("ca"), bad, 1, 10, dir.path()).is_err(), "{bad:?}");
        }
        assert!(issue_site_cert(&dir.path().join("ca"), "sh", 2, 0, dir.path()).is_err());
        assert!(issue_site_cert(&dir.path().join("ca"), "sh", 2, VALIDITY_DAYS_MAX + 1, dir.path()).is_err());
    }
}
