//! Notifications: what a run's people are told, in each channel's format, and
//! how each delivery went (recorded in the run, never retried behind anyone's
//! back).
//!
//! Webhooks are one HTTP/1.1 POST with [`WebhookClient`] (reqwest over rustls
//! with the ring provider): `http://` or `https://`, the server's certificate
//! verified against the system's roots and those of `serve --webhook-ca`, no
//! redirect followed (a 3xx is a failed delivery), no proxy. A vendor's refusal
//! inside a 200 answer (DingTalk's and WeCom's `errcode`, Feishu's `code`) is a
//! failed delivery too. E-mail goes through the SMTP relay given at `serve` with
//! the repository's SMTP client. Every delivery has a deadline
//! ([`DELIVERY_TIMEOUT`]). Never: put a webhook's query string (where DingTalk,
//! WeCom and others carry their secret) or a vendor webhook's path (Slack's
//! secret) into a record or a log.

use std::net::SocketAddr;
use std::time::Duration;

use maildr_drill::plan::Phase;
use serde::Serialize;
use serde_json::{json, Value};

use crate::calendar::rfc3339;
use crate::model::{Channel, Delivery, NotifyTarget, RunVerdict};

/// Deadline of one delivery, connect to answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Notification targets a schedule or a run may have.
pub const TARGETS_MAX: usize = 16;
/// Longest text sent (WeCom refuses more than 2048 bytes of content).
pub const TEXT_BYTES_MAX: usize = 2000;
/// Longest error kept in a delivery record.
pub const ERROR_BYTES_MAX: usize = 512;
/// Most of a webhook's answer read (to find a vendor's refusal in it).
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// Largest `--webhook-ca` file read.
pub const CA_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Events a notification is about.
pub mod event {
    pub const UPCOMING: &str = "upcoming";
    pub const STARTED: &str = "started";
    /// The run entered a phase of the runbook (see [`maildr_drill::progress`]).
    pub const PHASE: &str = "phase";
    pub const FINISHED: &str = "finished";
    pub const ABORTED: &str = "aborted";
    pub const SKIPPED: &str = "skipped";
}

/// What happened, as the generic webhook receives it (and the text every other
/// channel shows is made from).
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub event: &'static str,
    pub scenario: String,
    pub run_id: Option<String>,
    pub schedule_id: Option<String>,
    pub due_at_ms: u64,
    pub verdict: Option<RunVerdict>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub report_path: Option<String>,
    /// For a `phase` event, the phase entered and the step that entered it.
    pub phase: Option<Phase>,
    pub step: Option<String>,
}

impl Notice {
    /// One or two lines for people.
    pub fn text(&self) -> String {
        let mut text = format!("maildr drill {}: ", self.scenario);
        match self.event {
            event::UPCOMING => text.push_str(&format!("runs at {}", rfc3339(self.due_at_ms))),
            event::STARTED => text.push_str("started"),
            event::PHASE => {
                let phase = self.phase.map(Phase::title).unwrap_or("unknown");
                text.push_str(&format!("entered phase {phase}"));
                if let Some(step) = &self.step {
                    text.push_str(&format!(", step \"{step}\""));
                }
            }
            event::SKIPPED => text.push_str(&format!("skipped the run due at {}", rfc3339(self.due_at_ms))),
            other => {
                text.push_str(&format!("{other}, verdict {}", self.verdict.map(RunVerdict::word).unwrap_or("unknown")))
            }
        }
        let ids: Vec<String> = [("run", &self.run_id), ("schedule", &self.schedule_id)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect();
        if !ids.is_empty() {
            text.push_str(&format!(" ({})", ids.join(", ")));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!("\nreason: {reason}"));
        }
        if let Some(detail) = &self.detail {
            text.push_str(&format!(" — {detail}"));
        }
        if let Some(path) = &self.report_path {
            text.push_str(&format!("\nreport: {path}"));
        }
        truncate(text, TEXT_BYTES_MAX)
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The JSON body a webhook channel receives.
pub fn body(channel: Channel, notice: &Notice) -> Value {
    let text = notice.text();
    match channel {
        Channel::Webhook => {
            let mut v = serde_json::to_value(notice).expect("a notice is plain data");
            v["text"] = Value::String(text);
            v
        }
        Channel::Dingtalk | Channel::Wecom => json!({ "msgtype": "text", "text": { "content": text } }),
        Channel::Feishu => json!({ "msg_type": "text", "content": { "text": text } }),
        Channel::Slack => json!({ "text": text }),
        Channel::Email => Value::Null,
    }
}

/// Parse `webhook=URL`, `dingtalk=URL`, `feishu=URL`, `wecom=URL`, `slack=URL` or
/// `email=ADDR`.
pub fn parse_target(text: &str) -> Result<NotifyTarget, String> {
    let (kind, to) = text.split_once('=').ok_or_else(|| format!("notify {text:?}: expected KIND=URL or email=ADDR"))?;
    let channel = Channel::ALL.into_iter().find(|c| c.word() == kind).ok_or_else(|| {
        format!("notify {text:?}: unknown kind {kind:?} (webhook, dingtalk, feishu, wecom, slack, email)")
    })?;
    let target = NotifyTarget { channel, to: to.to_string() };
    check_target(&target)?;
    Ok(target)
}

/// Refuse a target that can never be delivered.
pub fn check_target(target: &NotifyTarget) -> Result<(), String> {
    match target.channel {
        Channel::Email => {
            let ok = target.to.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                && !target.to.contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c.is_control());
            if ok {
                Ok(())
            } else {
                Err(format!("notify email={}: not an e-mail address", target.to))
            }
        }
        _ => HttpUrl::parse(&target.to).map(|_| ()),
    }
}

/// A target as recorded: the generic webhook's URL without its query string; a
/// vendor webhook's scheme and host only (Slack carries its secret in the path,
/// DingTalk and WeCom in the query); an e-mail address as it is.
pub fn shown(target: &NotifyTarget) -> String {
    let without_query = target.to.split('?').next().unwrap_or_default();
    match target.channel {
        Channel::Email | Channel::Webhook => without_query.to_string(),
        _ => match without_query.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}/…", rest.split('/').next().unwrap_or_default()),
            None => "…".to_string(),
        },
    }
}

/// An `http://` or `https://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: the connection is TLS and the server's certificate is verified.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!("{:?}: not an http:// or https:// URL", url.split('?').next().unwrap_or_default()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("a URL with user information is refused".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("{authority:?}: bad port"))?)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || path.contains(char::is_whitespace) || path.contains('#') {
            return Err(format!("{:?}: not a usable URL", url.split('?').next().unwrap_or_default()));
        }
        Ok(HttpUrl { tls, host: host.to_string(), port, path })
    }

    /// The first address the host resolves to.
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        resolve(&self.host, self.port).await
    }
}

/// `host:port` resolved, within the delivery deadline.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(DELIVERY_TIMEOUT, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| format!("{host}: no address")),
        Ok(Err(e)) => Err(format!("{host}: {e}")),
        Err(_) => Err(format!("{host}: no address within {} ms", DELIVERY_TIMEOUT.as_millis())),
    }
}

/// How e-mail goes out.
#[derive(Debug, Clone)]
pub struct Mailer {
    /// `HOST:PORT` of the relay (plain SMTP, no AUTH: a relay inside the network).
    pub relay: Option<String>,
    /// The envelope and header sender.
    pub from: String,
}

/// The HTTP client webhooks are posted with, made once at start.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
}

impl WebhookClient {
    /// A client that trusts the system's roots and, when given, the certificates
    /// of `extra_roots_pem` (a PEM bundle: `serve --webhook-ca`).
    pub fn new(extra_roots_pem: Option<&[u8]>) -> Result<WebhookClient, String> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_native_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT)
            .pool_max_idle_per_host(0)
            .user_agent(concat!("maildr-drill-service/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("reading certificates: {e}"))?;
            if certs.is_empty() {
                return Err("no PEM certificate in it".into());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| describe(&e.without_url()))?;
        Ok(WebhookClient { client })
    }
}

/// Everything a delivery goes out through.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub mailer: Mailer,
    pub webhooks: WebhookClient,
}

/// Send `notice` to every target; one delivery record each.
pub async fn deliver_all(
    notifier: &Notifier,
    targets: &[NotifyTarget],
    notice: &Notice,
    now_ms: fn() -> u64,
) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets.iter().take(TARGETS_MAX) {
        let result = match target.channel {
            Channel::Email => send_mail(&notifier.mailer, &target.to, notice).await,
            channel => post(&notifier.webhooks, channel, &target.to, notice).await,
        };
        let result = result.map_err(|e| redact(&e, target));
        if let Err(e) = &result {
            tracing::warn!(channel = target.channel.word(), to = %shown(target), error = %e, "notification not delivered");
        }
        out.push(Delivery {
            event: notice.event.to_string(),
            phase: notice.phase,
            channel: target.channel,
            to: shown(target),
            at_ms: now_ms(),
            ok: result.is_ok(),
            error: result.err().map(|e| truncate(e, ERROR_BYTES_MAX)),
        });
    }
    out
}

/// `text` without any part of the target that [`shown`] leaves out (the query,
/// and a vendor webhook's path), should an error have quoted it.
fn redact(text: &str, target: &NotifyTarget) -> String {
    let Ok(url) = HttpUrl::parse(&target.to) else { return text.to_string() };
    let hidden = match target.channel {
        Channel::Email => return text.to_string(),
        Channel::Webhook => url.path.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default(),
        _ => url.path.trim_start_matches('/').to_string(),
    };
    if hidden.is_empty() {
        text.to_string()
    } else {
        text.replace(&hidden, "…")
    }
}

/// An error and its causes, one line (the caller strips the URL first).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

async fn post(client: &WebhookClient, channel: Channel, url: &str, notice: &Notice) -> Result<(), String> {
    let parsed = HttpUrl::parse(url)?;
    let peer = format!("{}://{}:{}", if parsed.tls { "https" } else { "http" }, parsed.host, parsed.port);
    let bytes = serde_json::to_vec(&body(channel, notice)).expect("a body is plain data");
    let request = client.client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes).send();
    let work = async {
        // Errors name the peer and the cause, never the URL (its path and query
        // may carry the secret).
        let mut response = request.await.map_err(|e| format!("{peer}: {}", describe(&e.without_url())))?;
        let status = response.status();
        let mut answer = Vec::new();
        while answer.len() < ANSWER_BYTES_MAX {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(format!("{peer}: reading the answer: {}", describe(&e.without_url()))),
            }
        }
        answer.truncate(ANSWER_BYTES_MAX);
        if status.is_redirection() {
            return Err(format!("{peer} answered {status}: a redirect, not followed"));
        }
        if !status.is_success() {
            return Err(format!("{peer} answered {status}: {}", String::from_utf8_lossy(&answer).trim()));
        }
        match vendor_refusal(channel, &answer) {
            Some(refusal) => Err(format!("{peer}: {refusal}")),
            None => Ok(()),
        }
    };
    tokio::time::timeout(DELIVERY_TIMEOUT, work)
        .await
        .map_err(|_| format!("{peer}: no answer within {} ms", DELIVERY_TIMEOUT.as_millis()))?
}

/// A vendor's refusal inside a 2xx answer: DingTalk and WeCom answer
/// `{"errcode": N, "errmsg": …}`, Feishu `{"code": N, "msg": …}`; N other than 0
/// means the message was not posted (a wrong secret, a keyword missing, a rate
/// limit).
fn vendor_refusal(channel: Channel, answer: &[u8]) -> Option<String> {
    let (code_key, message_key) = match channel {
        Channel::Dingtalk | Channel::Wecom => ("errcode", "errmsg"),
        Channel::Feishu => ("code", "msg"),
        _ => return None,
    };
    let answer: Value = serde_json::from_slice(answer).ok()?;
    let code = answer.get(code_key)?.as_i64()?;
    let message = answer.get(message_key).and_then(Value::as_str).unwrap_or("");
    (code != 0).then(|| format!("{} refused the message: {code_key} {code}: {message}", channel.word()))
}

async fn send_mail(mailer: &Mailer, to: &str, notice: &Notice) -> Result<(), String> {
    let relay = mailer.relay.as_deref().ok_or("no SMTP relay: start the service with --smtp-relay HOST:PORT")?;
    let (host, port) = relay.rsplit_once(':').ok_or_else(|| format!("--smtp-relay {relay:?}: expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("--smtp-relay {relay:?}: bad port"))?;
    let server = resolve(host, port).await?;
    let text = notice.text();
    let subject: String =
        text.lines().next().unwrap_or_default().chars().map(|c| if c.is_ascii() { c } else { '?' }).collect();
    let date = chrono::Utc::now().to_rfc2822();
    let message_id = format!(
        "<{}.{}.{}@maildr-drill-service>",
        notice.run_id.as_deref().unwrap_or("notice"),
        notice.event,
        crate::now_ms()
    );
    let body = text.replace('\n', "\r\n");
    let data = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: [drill] {subject}\r\nDate: {date}\r\nMessage-ID: {message_id}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n",
        from = mailer.from
    );
    let recipients = [to.to_string()];
    let envelope = maildr_client::smtp::Envelope {
        helo: "maildr-drill-service",
        from: &mailer.from,
        to: &recipients,
        data: data.as_bytes(),
    };
    let reply =
        maildr_client::smtp::send(server, &maildr_client::smtp::Security::Plain, None, &envelope, DELIVERY_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
    if reply.is_success() {
        Ok(())
    } else {
        Err(format!("the relay {server} answered {reply}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            event: event::FINISHED,
            scenario: "node-failure".into(),
            run_id: Some("r3".into()),
            schedule_id: Some("s1".into()),
            due_at_ms: 1_767_225_600_000,
            verdict: Some(RunVerdict::Passed),
            reason: None,
            detail: None,
            report_path: Some("/var/drills/runs/r3/report.html".into()),
            phase: None,
            step: None,
        }
    }

    #[test]
    fn each_channel_gets_its_own_text_message_format() {
        let n = notice();
        let text = n.text();
        assert!(text.contains("finished, verdict passed") && text.contains("report: /var/drills/runs/r3/report.html"));
        assert_eq!(body(Channel::Dingtalk, &n), json!({"msgtype": "text", "text": {"content": text}}));
        assert_eq!(body(Channel::Wecom, &n), json!({"msgtype": "text", "text": {"content": text}}));
        assert_eq!(body(Channel::Feishu, &n), json!({"msg_type": "text", "content": {"text": text}}));
        assert_eq!(body(Channel::Slack, &n), json!({"text": text}));
        let generic = body(Channel::Webhook, &n);
        assert_eq!(generic["event"], "finished");
        assert_eq!(generic["verdict"], "passed");
        assert_eq!(generic["report_path"], "/var/drills/runs/r3/report.html");
        assert_eq!(generic["text"], text.as_str());
    }

    #[test]
    fn a_phase_notice_names_the_phase_and_the_step() {
        let mut n = notice();
        n.event = event::PHASE;
        n.verdict = Some(RunVerdict::Running);
        n.report_path = None;
        n.phase = Some(Phase::Decide);
        n.step = Some("Kill the primary".into());
        let text = n.text();
        assert!(
            text.starts_with(
                "maildr drill node-failure: entered phase 2. Decision and start of the switchover, step \"Kill the primary\""
            ),
            "{text}"
        );
        let generic = body(Channel::Webhook, &n);
        assert_eq!((generic["event"].as_str(), generic["phase"].as_str()), (Some("phase"), Some("decide")));
        assert_eq!(generic["step"], "Kill the primary");
    }

    #[test]
    fn a_long_text_is_cut_at_a_character_boundary_within_the_bound() {
        let mut n = notice();
        n.detail = Some("北".repeat(1000));
        let text = n.text();
        assert!(text.len() <= TEXT_BYTES_MAX);
        assert!(text.ends_with('北'));
    }

    #[test]
    fn targets_are_parsed_and_their_secrets_are_not_shown() {
        let t = parse_target("dingtalk=http://10.0.0.5:8080/robot/send?access_token=SECRET").unwrap();
        assert_eq!(t.channel, Channel::Dingtalk);
        assert_eq!(shown(&t), "http://10.0.0.5:8080/…");
        let hook = parse_target("webhook=http://10.0.0.5:8080/hook?key=SECRET").unwrap();
        assert_eq!(shown(&hook), "http://10.0.0.5:8080/hook");
        let url = HttpUrl::parse(&t.to).unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.path.as_str()),
            (false, "10.0.0.5", 8080, "/robot/send?access_token=SECRET")
        );
        assert_eq!(HttpUrl::parse("http://hooks.local?k=1").unwrap().path, "/?k=1");
        assert_eq!(HttpUrl::parse("http://[::1]:9/x").unwrap().host, "::1");
        assert!(parse_target("email=ops@example.test").is_ok());
        assert!(parse_target("email=not-an-address").is_err());
        assert!(parse_target("pager=http://x/").unwrap_err().contains("unknown kind"));
        let slack = parse_target("slack=https://hooks.slack.com/services/T/B/SECRET").unwrap();
        assert_eq!(shown(&slack), "https://hooks.slack.com/…");
        let https = HttpUrl::parse(&slack.to).unwrap();
        assert_eq!((https.tls, https.host.as_str(), https.port), (true, "hooks.slack.com", 443));
        assert!(parse_target("webhook=http://user:pw@host/").is_err());
        let ftp = parse_target("webhook=ftp://host/x?key=SECRET").unwrap_err();
        assert!(ftp.contains("not an http:// or https:// URL") && !ftp.contains("SECRET"), "{ftp}");
    }

    #[test]
    fn a_vendor_refusal_inside_a_200_answer_is_a_failure() {
        let refused = br#"{"errcode": 310000, "errmsg": "keywords not in content"}"#;
        let e = vendor_refusal(Channel::Dingtalk, refused).unwrap();
        assert!(e.contains("errcode 310000") && e.contains("keywords not in content"), "{e}");
        assert!(vendor_refusal(Channel::Wecom, br#"{"errcode": 0, "errmsg": "ok"}"#).is_none());
        assert!(vendor_refusal(Channel::Feishu, br#"{"code": 19021, "msg": "sign match fail"}"#).is_some());
        assert!(vendor_refusal(Channel::Feishu, br#"{"code": 0, "msg": "success"}"#).is_none());
        assert!(vendor_refusal(Channel::Slack, b"ok").is_none());
        assert!(vendor_refusal(Channel::Webhook, br#"{"errcode": 1}"#).is_none());
    }

    // ------------------------------------------------- deliveries over the wire

    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::sync::mpsc;

    /// A certificate for 127.0.0.1 signed by a new CA: the CA's PEM, and a TLS
    /// acceptor for the receiver.
    fn tls_pair() -> (String, tokio_rustls::TlsAcceptor) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "notify test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let der_key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der_key)
            .unwrap();
        (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// A receiver on 127.0.0.1 answering every request with `answer`; what it
    /// received (path and body) comes out of the channel. Aborted on drop.
    struct Receiver {
        addr: SocketAddr,
        got: mpsc::Receiver<(String, Value)>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn receiver(tls: Option<tokio_rustls::TlsAcceptor>, answer: &'static str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, got) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            for _ in 0..16 {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (tx, tls) = (tx.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(Ok(stream)) =
                                tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                            {
                                let _ = exchange(stream, &tx, answer).await;
                            }
                        }
                        None => {
                            let _ = exchange(tcp, &tx, answer).await;
                        }
                    }
                });
            }
        });
        Receiver { addr, got, task }
    }

    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        stream: S,
        tx: &mpsc::Sender<(String, Value)>,
        answer: &str,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let _ = tx.send((path, serde_json::from_slice(&body).unwrap_or(Value::Null))).await;
        reader.get_mut().write_all(answer.as_bytes()).await?;
        reader.get_mut().shutdown().await
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

    fn notifier(ca_pem: Option<&str>) -> Notifier {
        Notifier {
            mailer: Mailer { relay: None, from: "drills@example.test".into() },
            webhooks: WebhookClient::new(ca_pem.map(str::as_bytes)).unwrap(),
        }
    }

    fn target(channel: Channel, to: String) -> NotifyTarget {
        NotifyTarget { channel, to }
    }

    fn now() -> u64 {
        1
    }

    #[tokio::test]
    async fn an_https_webhook_is_delivered_when_its_certificate_is_trusted_and_refused_when_not() {
        let (ca, acceptor) = tls_pair();
        let mut trusted = receiver(Some(acceptor), OK).await;
        let url = format!("https://{}/hook?token=SECRET", trusted.addr);
        let with_ca = notifier(Some(&ca));
        let d = deliver_all(&with_ca, &[target(Channel::Webhook, url.clone())], &notice(), now).await;
        assert!(d[0].ok, "{d:?}");
        assert_eq!(d[0].to, format!("https://{}/hook", trusted.addr));
        let (path, body) = trusted.got.recv().await.unwrap();
        assert_eq!((path.as_str(), body["event"].as_str()), ("/hook?token=SECRET", Some("finished")));

        // The system's roots alone do not know the test's CA; nor does a client
        // given another CA.
        let (other_ca, _) = tls_pair();
        for client in [notifier(None), notifier(Some(&other_ca))] {
            let d = deliver_all(&client, &[target(Channel::Webhook, url.clone())], &notice(), now).await;
            let error = d[0].error.clone().unwrap_or_default();
            assert!(!d[0].ok && error.contains("certificate"), "{d:?}");
            assert!(!error.contains("SECRET") && !d[0].to.contains("SECRET"), "{d:?}");
        }
        assert!(trusted.got.try_recv().is_err(), "nothing was posted over an untrusted connection");
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_a_refusal_is_recorded_without_the_secret() {
        let mut moved = receiver(
            None,
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/stolen?SECRET\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        let to = format!("http://{}/hook?key=SECRET", moved.addr);
        let d = deliver_all(&notifier(None), &[target(Channel::Webhook, to)], &notice(), now).await;
        let error = d[0].error.clone().unwrap_or_default();
        assert!(!d[0].ok && error.contains("302") && error.contains("not followed"), "{d:?}");
        assert!(moved.got.recv().await.is_some(), "the one request reached the receiver");

        let refused = receiver(
            None,
            "HTTP/1.1 200 OK\r\nContent-Length: 53\r\nConnection: close\r\n\r\n{\"errcode\":310000,\"errmsg\":\"keywords not in content\"}",
        )
        .await;
        let to = format!("http://{}/robot/send?access_token=SECRET", refused.addr);
        let d = deliver_all(&notifier(None), &[target(Channel::Dingtalk, to)], &notice(), now).await;
        let error = d[0].error.clone().unwrap_or_default();
        assert!(!d[0].ok && error.contains("errcode 310000"), "{d:?}");
        assert_eq!(d[0].to, format!("http://{}/…", refused.addr));

        // Nobody listening: the error names the peer, never the path or the query.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let to = format!("https://{addr}/services/T/B/SECRET");
        let d = deliver_all(&notifier(None), &[target(Channel::Slack, to)], &notice(), now).await;
        let error = d[0].error.clone().unwrap_or_default();
        assert!(!d[0].ok && error.contains(&addr.to_string()) && !error.contains("SECRET"), "{d:?}");
    }
}
