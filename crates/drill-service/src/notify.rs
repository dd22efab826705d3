//! Notifications: what a run's people are told, in each channel's format, and
//! how each delivery went (recorded in the run, never retried behind anyone's
//! back).
//!
//! Webhooks are one HTTP/1.1 POST over the lab crate's plain client
//! ([`maildr_lab::http_client::JsonApi`]); e-mail goes through the SMTP relay
//! given at `serve` with the repository's SMTP client. Every delivery has a
//! deadline ([`DELIVERY_TIMEOUT`]). Never: put a webhook's query string (where
//! DingTalk, WeCom and others carry their secret) into a record or a log.

use std::net::SocketAddr;
use std::time::Duration;

use maildr_lab::http_client::{JsonApi, Method};
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

/// Events a notification is about.
pub mod event {
    pub const UPCOMING: &str = "upcoming";
    pub const STARTED: &str = "started";
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
}

impl Notice {
    /// One or two lines for people.
    pub fn text(&self) -> String {
        let mut text = format!("maildr drill {}: ", self.scenario);
        match self.event {
            event::UPCOMING => text.push_str(&format!("runs at {}", rfc3339(self.due_at_ms))),
            event::STARTED => text.push_str("started"),
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

/// An `http://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err("an https:// URL: the service's HTTP client speaks plain http only; point it at an http:// \
                        relay inside your network"
                .into());
        } else {
            return Err(format!("{url:?}: not an http:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("a URL with user information is refused".into());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("{authority:?}: bad port"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{:?}: not a usable URL", url.split('?').next().unwrap_or_default()));
        }
        Ok(HttpUrl { host: host.to_string(), port, path })
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

/// Send `notice` to every target; one delivery record each.
pub async fn deliver_all(
    mailer: &Mailer,
    targets: &[NotifyTarget],
    notice: &Notice,
    now_ms: fn() -> u64,
) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets.iter().take(TARGETS_MAX) {
        let result = match target.channel {
            Channel::Email => send_mail(mailer, &target.to, notice).await,
            channel => post(channel, &target.to, notice).await,
        };
        if let Err(e) = &result {
            tracing::warn!(channel = target.channel.word(), to = %shown(target), error = %e, "notification not delivered");
        }
        out.push(Delivery {
            event: notice.event.to_string(),
            channel: target.channel,
            to: shown(target),
            at_ms: now_ms(),
            ok: result.is_ok(),
            error: result.err().map(|e| truncate(e, ERROR_BYTES_MAX)),
        });
    }
    out
}

async fn post(channel: Channel, url: &str, notice: &Notice) -> Result<(), String> {
    let url = HttpUrl::parse(url)?;
    let addr = url.resolve().await?;
    let api = JsonApi { api: channel.word(), addr, bearer: None };
    let bytes = serde_json::to_vec(&body(channel, notice)).expect("a body is plain data");
    api.request_within(DELIVERY_TIMEOUT, Method::POST, &url.path, Some(bytes)).await.map(|_| ()).map_err(|e| {
        // The error names the address and the answer, never the path's query.
        e.to_string()
    })
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
            (url.host.as_str(), url.port, url.path.as_str()),
            ("10.0.0.5", 8080, "/robot/send?access_token=SECRET")
        );
        assert_eq!(HttpUrl::parse("http://hooks.local?k=1").unwrap().path, "/?k=1");
        assert_eq!(HttpUrl::parse("http://[::1]:9/x").unwrap().host, "::1");
        assert!(parse_target("email=ops@example.test").is_ok());
        assert!(parse_target("email=not-an-address").is_err());
        assert!(parse_target("pager=http://x/").unwrap_err().contains("unknown kind"));
        let https = parse_target("slack=https://hooks.slack.com/services/T/B/SECRET").unwrap_err();
        assert!(https.contains("https") && !https.contains("SECRET"), "{https}");
        assert!(parse_target("webhook=http://user:pw@host/").is_err());
    }
}
