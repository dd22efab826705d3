//! Logging in: LOGIN and AUTHENTICATE PLAIN (with or without an initial
//! response).
//!
//! Passwords are accepted only over TLS, from loopback, or where the operator
//! said the network is trusted; failures are delayed per source address. This
//! module must never log a password nor say whether an account exists.

use maildr_frontend::passwords::{CredentialCache, PasswordCheck};
use std::borrow::Cow;

use base64::Engine;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::core::{AString, Tag};
use imap_codec::imap_types::response::{Code, CommandContinuationRequest, Status};
use imap_codec::imap_types::secret::Secret;
use imap_next::server::Server;
use imap_next::types::CommandAuthenticate;
use maildr_types::EmailAddress;

use crate::blocking::store_read;
use crate::reply::{bad, no, ok, other_code};
use crate::session::Session;

/// Passwords may cross the wire only inside TLS, or on loopback, or where the
/// operator said the network is trusted.
fn login_allowed(tls: bool, peer: std::net::IpAddr, plain_auth_anywhere: bool) -> bool {
    tls || peer.is_loopback() || plain_auth_anywhere
}

impl Session {
    pub(crate) fn login_allowed(&self) -> bool {
        login_allowed(self.tls, self.peer.ip(), self.service.config.plain_auth_anywhere)
    }

    /// LOGIN user password.
    pub(crate) async fn login_command(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        username: AString<'static>,
        password: Secret<AString<'static>>,
    ) {
        if self.account.is_some() {
            server.enqueue_status(bad(Some(tag), "already logged in"));
            return;
        }
        let user = String::from_utf8_lossy(username.as_ref()).into_owned();
        let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
        let status = self.login(tag, &user, &password).await;
        server.enqueue_status(status);
    }

    /// AUTHENTICATE: answer at once with an initial response, else ask for it.
    pub(crate) async fn authenticate_start(&mut self, server: &mut Server, command: CommandAuthenticate) {
        let tag = command.tag.clone();
        if !matches!(command.mechanism, AuthMechanism::Plain) {
            let _ = server.authenticate_finish(no(&tag, None, "only AUTHENTICATE PLAIN is supported"));
            return;
        }
        if self.account.is_some() {
            let _ = server.authenticate_finish(bad(Some(&tag), "already authenticated"));
            return;
        }
        if !self.login_allowed() {
            let _ = server.authenticate_finish(no(&tag, Some(other_code("PRIVACYREQUIRED")), "use TLS to log in"));
            return;
        }
        match command.initial_response {
            Some(initial) => {
                let data = initial.declassify().to_vec();
                let status = self.authenticate_plain(&tag, &data).await;
                let _ = server.authenticate_finish(status);
            }
            None => {
                self.pending_auth = Some(tag);
                // An empty base64 challenge: "+ " (RFC 4616 has no server challenge).
                let ccr = CommandContinuationRequest::Base64(Cow::Borrowed(b""));
                let _ = server.authenticate_continue(ccr);
            }
        }
    }

    /// The client's answer to our AUTHENTICATE challenge.
    pub(crate) async fn authenticate_data(&mut self, server: &mut Server, data: AuthenticateData<'static>) {
        let Some(tag) = self.pending_auth.take() else { return };
        let status = match data {
            AuthenticateData::Continue(data) => self.authenticate_plain(&tag, data.declassify()).await,
            _ => bad(Some(&tag), "authentication cancelled"),
        };
        let _ = server.authenticate_finish(status);
    }

    async fn authenticate_plain(&mut self, tag: &Tag<'static>, data: &[u8]) -> Status<'static> {
        // The initial response may arrive base64-encoded or already decoded,
        // depending on where imap-next received it; accept both.
        let decoded = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_else(|_| data.to_vec());
        let mut parts = decoded.split(|&b| b == 0);
        let (authzid, user, password) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(z), Some(u), Some(p), None) => (z, u, p),
            _ => return bad(Some(tag), "malformed PLAIN response"),
        };
        if !authzid.is_empty() && authzid != user {
            return no(tag, Some(other_code("AUTHORIZATIONFAILED")), "acting as another user is not supported");
        }
        let user = String::from_utf8_lossy(user).into_owned();
        let password = String::from_utf8_lossy(password).into_owned();
        self.login(tag, &user, &password).await
    }

    async fn login(&mut self, tag: &Tag<'static>, user: &str, password: &str) -> Status<'static> {
        if !self.login_allowed() {
            return no(tag, Some(other_code("PRIVACYREQUIRED")), "use TLS to log in");
        }
        let delay = self.service.login_failures.delay(self.peer.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let account = match EmailAddress::parse(user) {
            Ok(address) => store_read(|| self.cluster().store().account(&address).ok().flatten()),
            Err(_) => None,
        };
        // Password hashing is CPU work, bounded site-wide, and as slow for an
        // unknown account as for a known one.
        let hash = account.as_ref().map(|a| a.password_hash.clone());
        let cache = if self.service.config.credential_cache { CredentialCache::Use } else { CredentialCache::Bypass };
        let checked = maildr_frontend::passwords::check_password_with(hash, password.to_string(), cache).await;
        if checked == PasswordCheck::Busy {
            return no(tag, Some(other_code("UNAVAILABLE")), "too many logins at once; try again");
        }
        let verified = account.filter(|_| checked == PasswordCheck::Matches);
        let Some(account) = verified else {
            self.service.login_failures.failed(self.peer.ip());
            tracing::warn!(peer = %self.peer, user = %user.chars().take(128).collect::<String>(), "IMAP login failed");
            return no(tag, Some(other_code("AUTHENTICATIONFAILED")), "invalid credentials");
        };
        let Some(guard) = self.service.session_started(&account.address) else {
            return no(tag, Some(other_code("LIMIT")), "too many sessions for this account");
        };
        self.service.login_failures.succeeded(self.peer.ip());
        tracing::info!(peer = %self.peer, user = %account.address, "IMAP login");
        self.account = Some((account, guard));
        ok(tag, Some(Code::Capability(self.capabilities())), "logged in")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_logins_are_allowed_only_over_tls_on_loopback_or_when_configured() {
        let remote: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let local: std::net::IpAddr = "127.0.10.1".parse().unwrap();
        assert!(!login_allowed(false, remote, false));
        assert!(login_allowed(true, remote, false));
        assert!(login_allowed(false, local, false));
        assert!(login_allowed(false, remote, true));
        assert!(login_allowed(false, "::1".parse().unwrap(), false));
    }
}
