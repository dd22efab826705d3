//! Who really sent it: SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489)
//! results of mail the MX receives, written into an `Authentication-Results:`
//! header (RFC 8601) above our `Received:`. Results only: no message is refused
//! or filed elsewhere for them yet.
//!
//! The checks ask DNS about the sender's domain, so they have a deadline
//! (`smtp.authentication_checks_timeout_ms`): past it the header says
//! `temperror` and the message is delivered all the same.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, MessageAuthenticator};

/// The checker of one site.
pub struct InboundAuth {
    authenticator: MessageAuthenticator,
    /// The authserv-id: this site's host name.
    hostname: String,
    timeout: Duration,
}

impl InboundAuth {
    /// A checker asking `resolvers` (the system's when empty).
    pub fn new(resolvers: &[SocketAddr], hostname: &str, timeout: Duration) -> Result<InboundAuth, String> {
        let authenticator = if resolvers.is_empty() {
            MessageAuthenticator::new_system_conf()
        } else {
            let servers = resolvers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            MessageAuthenticator::new(ResolverConfig::from_parts(None, Vec::new(), servers), ResolverOpts::default())
        }
        .map_err(|e| format!("the resolver for SPF/DKIM/DMARC checks: {e}"))?;
        Ok(InboundAuth { authenticator, hostname: hostname.to_string(), timeout })
    }

    /// The `Authentication-Results:` field (with its CRLF) for `message`, received
    /// from `ip` that said `helo`, with the reverse path `mail_from` (`None`: `<>`).
    pub async fn header(&self, ip: IpAddr, helo: &str, mail_from: Option<&str>, message: &[u8]) -> String {
        match tokio::time::timeout(self.timeout, self.check(ip, helo, mail_from, message)).await {
            Ok(header) => header,
            Err(_) => format!(
                "Authentication-Results: {};\r\n\tspf=temperror; dkim=temperror; dmarc=temperror\r\n\t\
                 (the checks did not finish within {} ms)\r\n",
                self.hostname,
                self.timeout.as_millis()
            ),
        }
    }

    async fn check(&self, ip: IpAddr, helo: &str, mail_from: Option<&str>, message: &[u8]) -> String {
        let helo = if helo.is_empty() { "unknown" } else { helo };
        let spf = match mail_from {
            Some(from) => {
                self.authenticator.verify_spf(SpfParameters::verify_mail_from(ip, helo, &self.hostname, from)).await
            }
            None => self.authenticator.verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname)).await,
        };
        let results = AuthenticationResults::new(&self.hostname);
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header block): SPF alone.
            let results = results.with_spf_mailfrom_result(&spf, ip, mail_from.unwrap_or(""), helo);
            return results.to_header();
        };
        let dkim = self.authenticator.verify_dkim(&parsed).await;
        let mail_from_domain = mail_from.and_then(|f| f.rsplit_once('@')).map_or(helo, |(_, d)| d);
        let dmarc = self.authenticator.verify_dmarc(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf)).await;
        let header = results
            .with_dkim_results(&dkim, parsed.from())
            .with_spf_mailfrom_result(&spf, ip, mail_from.unwrap_or(""), helo)
            .with_dmarc_result(&dmarc)
            .to_header();
        if dkim.is_empty() {
            // RFC 8601 §2.7.1: a message without signatures is reported as such.
            format!("{};\r\n\tdkim=none (no signatures)\r\n", header.trim_end_matches("\r\n"))
        } else {
            header
        }
    }
}
