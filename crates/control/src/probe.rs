//! Health probes that see a data site as its clients do: an SMTP banner and EHLO
//! on the MX port, an IMAP greeting and (with a probe account) a LOGIN, each with
//! its own deadline.
//!
//! Across hosts the probes speak TLS verified against the sites' CA
//! ([`ProbeTls`]): STARTTLS and a second EHLO for SMTP, implicit TLS for IMAP, so the
//! probe account's password never crosses a link in clear (and a site refuses a
//! plaintext LOGIN from another host anyway).
//!
//! The probes speak the protocols over real sockets, through `maildr_client`'s
//! sessions, and never look inside the probed site, so a site that accepts
//! connections but cannot serve is caught.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use maildr_client::imap::{self, ImapError};
use maildr_client::smtp;
use maildr_client::Tls;

/// How probes protect their sessions: the CA the sites' mail certificates chain to,
/// and the name each certificate is checked for.
#[derive(Clone)]
pub struct ProbeTls {
    pub tls: Tls,
    /// The name to verify; `{site}` stands for the probed site's name.
    pub name_template: String,
}

impl ProbeTls {
    fn name_for(&self, site: &str) -> String {
        self.name_template.replace("{site}", site)
    }
}

/// The IMAP account a probe logs in as.
#[derive(Clone)]
pub struct ProbeLogin {
    pub account: String,
    pub password: String,
}

/// SMTP: connect, a 220 banner, `EHLO`, a 250, (with `tls`: `STARTTLS`, the
/// handshake verified for the site's name, `EHLO` again), `QUIT`. Returns the time
/// taken.
pub async fn smtp(
    addr: SocketAddr,
    site: &str,
    tls: Option<&ProbeTls>,
    helo_name: &str,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    tokio::time::timeout(timeout, smtp_exchange(addr, site, tls, helo_name, timeout))
        .await
        .map_err(|_| format!("SMTP {addr}: no answer within {} ms", timeout.as_millis()))??;
    Ok(started.elapsed())
}

async fn smtp_exchange(
    addr: SocketAddr,
    site: &str,
    tls: Option<&ProbeTls>,
    helo_name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut session = smtp::Session::connect(addr, None, timeout).await.map_err(|e| e.to_string())?;
    if session.banner().code != 220 {
        return Err(format!("SMTP {addr}: banner {:?}", session.banner().to_string()));
    }
    let ehlo = session.ehlo(helo_name).await.map_err(|e| e.to_string())?;
    if ehlo.code != 250 {
        return Err(format!("SMTP {addr}: EHLO answered {:?}", ehlo.to_string()));
    }
    if let Some(tls) = tls {
        let go = session.starttls(&tls.tls, &tls.name_for(site)).await.map_err(|e| e.to_string())?;
        if go.code != 220 {
            return Err(format!("SMTP {addr}: STARTTLS answered {:?}", go.to_string()));
        }
        let ehlo = session.ehlo(helo_name).await.map_err(|e| e.to_string())?;
        if ehlo.code != 250 {
            return Err(format!("SMTP {addr}: EHLO after STARTTLS answered {:?}", ehlo.to_string()));
        }
    }
    session.quit().await;
    Ok(())
}

/// IMAP: connect (with `tls`: implicit TLS verified for the site's name), an
/// `* OK` greeting, with a login `LOGIN` answered `OK`, `LOGOUT`.
pub async fn imap(
    addr: SocketAddr,
    site: &str,
    tls: Option<&ProbeTls>,
    login: Option<&ProbeLogin>,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    tokio::time::timeout(timeout, imap_exchange(addr, site, tls, login, timeout))
        .await
        .map_err(|_| format!("IMAP {addr}: no answer within {} ms", timeout.as_millis()))??;
    Ok(started.elapsed())
}

async fn imap_exchange(
    addr: SocketAddr,
    site: &str,
    tls: Option<&ProbeTls>,
    login: Option<&ProbeLogin>,
    timeout: Duration,
) -> Result<(), String> {
    let name = tls.map(|t| t.name_for(site));
    let tls = tls.map(|t| &t.tls).zip(name.as_deref());
    let mut session = imap::Session::connect(addr, tls, timeout).await.map_err(|e| e.to_string())?;
    if let Some(login) = login {
        session.login(&login.account, &login.password).await.map_err(|e| match e {
            ImapError::Refused { status, .. } => {
                format!("IMAP {addr}: LOGIN of {} answered {status:?}", login.account)
            }
            e => e.to_string(),
        })?;
    }
    session.leave().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    async fn fake_server(script: &'static [&'static str]) -> SocketAddr {
        // A scripted peer: sends each line, reading one client line between sends.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = BufReader::new(stream);
            for (i, line) in script.iter().enumerate() {
                if i > 0 {
                    let mut got = String::new();
                    let _ = conn.read_line(&mut got).await;
                }
                let _ = conn.get_mut().write_all(line.as_bytes()).await;
            }
            let mut rest = String::new();
            let _ = conn.read_line(&mut rest).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_refusing_or_silent_peer_fails_the_probe_with_the_reason() {
        let addr = fake_server(&["554 5.3.2 go away\r\n"]).await;
        let err = smtp(addr, "bj", None, "probe", Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("banner") && err.contains("554"), "{err}");
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err =
            smtp(silent.local_addr().unwrap(), "bj", None, "probe", Duration::from_millis(200)).await.unwrap_err();
        assert!(err.contains("no answer within 200 ms"), "{err}");
        let addr = fake_server(&["* OK hi\r\n", "c1 NO [AUTHENTICATIONFAILED] no\r\n"]).await;
        let login = ProbeLogin { account: "probe@example.test".into(), password: "p\"w".into() };
        let err = imap(addr, "bj", None, Some(&login), Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("LOGIN of probe@example.test"), "{err}");
    }

    #[tokio::test]
    async fn multi_line_ehlo_replies_pass() {
        let addr = fake_server(&["220 mx ESMTP\r\n", "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"]).await;
        smtp(addr, "bj", None, "probe", Duration::from_secs(2)).await.unwrap();
    }
}
