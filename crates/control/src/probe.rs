//! Health probes that see a data site as its clients do: an SMTP banner and EHLO
//! on the MX port, an IMAP greeting and (with a probe account) a LOGIN, each with
//! its own deadline.
//!
//! The probes speak the protocols over real sockets and never look inside the
//! probed site, so a site that accepts connections but cannot serve is caught.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest reply line a probe reads.
const PROBE_LINE_MAX_BYTES: usize = 4096;
/// Most lines of one multi-line SMTP reply a probe reads.
const PROBE_REPLY_LINES_MAX: usize = 64;

/// The IMAP account a probe logs in as.
#[derive(Clone)]
pub struct ProbeLogin {
    pub account: String,
    pub password: String,
}

/// SMTP: connect, a 220 banner, `EHLO`, a 250, `QUIT`. Returns the time taken.
pub async fn smtp(addr: SocketAddr, helo_name: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    tokio::time::timeout(timeout, smtp_exchange(addr, helo_name))
        .await
        .map_err(|_| format!("SMTP {addr}: no answer within {} ms", timeout.as_millis()))??;
    Ok(started.elapsed())
}

async fn smtp_exchange(addr: SocketAddr, helo_name: &str) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("SMTP {addr}: connect: {e}"))?;
    let mut conn = BufReader::new(stream);
    let banner = smtp_reply(&mut conn).await.map_err(|e| format!("SMTP {addr}: banner: {e}"))?;
    if !banner.starts_with("220") {
        return Err(format!("SMTP {addr}: banner {banner:?}"));
    }
    send(&mut conn, &format!("EHLO {helo_name}\r\n")).await.map_err(|e| format!("SMTP {addr}: {e}"))?;
    let ehlo = smtp_reply(&mut conn).await.map_err(|e| format!("SMTP {addr}: EHLO: {e}"))?;
    if !ehlo.starts_with("250") {
        return Err(format!("SMTP {addr}: EHLO answered {ehlo:?}"));
    }
    let _ = send(&mut conn, "QUIT\r\n").await;
    Ok(())
}

/// IMAP: connect, an `* OK` greeting, with a login `LOGIN` answered `OK`, `LOGOUT`.
pub async fn imap(addr: SocketAddr, login: Option<&ProbeLogin>, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    tokio::time::timeout(timeout, imap_exchange(addr, login))
        .await
        .map_err(|_| format!("IMAP {addr}: no answer within {} ms", timeout.as_millis()))??;
    Ok(started.elapsed())
}

async fn imap_exchange(addr: SocketAddr, login: Option<&ProbeLogin>) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("IMAP {addr}: connect: {e}"))?;
    let mut conn = BufReader::new(stream);
    let greeting = read_line(&mut conn).await.map_err(|e| format!("IMAP {addr}: greeting: {e}"))?;
    if !greeting.starts_with("* OK") {
        return Err(format!("IMAP {addr}: greeting {greeting:?}"));
    }
    if let Some(login) = login {
        let command = format!("p1 LOGIN {} {}\r\n", quoted(&login.account), quoted(&login.password));
        send(&mut conn, &command).await.map_err(|e| format!("IMAP {addr}: {e}"))?;
        loop {
            let line = read_line(&mut conn).await.map_err(|e| format!("IMAP {addr}: LOGIN: {e}"))?;
            if line.starts_with("p1 OK") {
                break;
            }
            if line.starts_with("p1 ") {
                return Err(format!("IMAP {addr}: LOGIN of {} answered {line:?}", login.account));
            }
        }
    }
    let _ = send(&mut conn, "p2 LOGOUT\r\n").await;
    Ok(())
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

async fn send(conn: &mut BufReader<TcpStream>, text: &str) -> Result<(), String> {
    conn.get_mut().write_all(text.as_bytes()).await.map_err(|e| format!("send: {e}"))
}

async fn read_line(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = Vec::new();
    let mut limited = (&mut *conn).take(PROBE_LINE_MAX_BYTES as u64);
    let n = limited.read_until(b'\n', &mut line).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    if !line.ends_with(b"\n") {
        return Err(format!("line longer than {PROBE_LINE_MAX_BYTES} bytes"));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// A whole SMTP reply (its last line, which holds the code).
async fn smtp_reply(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
    for _ in 0..PROBE_REPLY_LINES_MAX {
        let line = read_line(conn).await?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line);
        }
    }
    Err(format!("reply longer than {PROBE_REPLY_LINES_MAX} lines"))
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;
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
        let err = smtp(addr, "probe", Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("banner") && err.contains("554"), "{err}");
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = smtp(silent.local_addr().unwrap(), "probe", Duration::from_millis(200)).await.unwrap_err();
        assert!(err.contains("no answer within 200 ms"), "{err}");
        let addr = fake_server(&["* OK hi\r\n", "p1 NO [AUTHENTICATIONFAILED] no\r\n"]).await;
        let login = ProbeLogin { account: "probe@example.test".into(), password: "p\"w".into() };
        let err = imap(addr, Some(&login), Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("LOGIN of probe@example.test"), "{err}");
    }

    #[tokio::test]
    async fn multi_line_ehlo_replies_pass() {
        let addr = fake_server(&["220 mx ESMTP\r\n", "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"]).await;
        smtp(addr, "probe", Duration::from_secs(2)).await.unwrap();
    }
}
