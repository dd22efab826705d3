//! Delivery status notifications (RFC 3464): what the sender finds in their INBOX
//! when a recipient refused the message for good or it waited in the queue past
//! its lifetime. A `multipart/report` with a human part, the machine-readable
//! `message/delivery-status` (one block per failed recipient) and the returned
//! message's header (`text/rfc822-headers`, not its content).

use maildr_types::EmailAddress;

/// The returned header is cut at this many bytes.
pub const RETURNED_HEADER_BYTES_MAX: usize = 64 * 1024;

/// One recipient the message could not be delivered to.
#[derive(Debug, Clone)]
pub struct Failure {
    pub recipient: EmailAddress,
    /// The receiving server's name, when one answered.
    pub remote_mta: Option<String>,
    /// Its answer (`550 5.1.1 no such user`), or why the message expired.
    pub diagnostic: String,
    /// RFC 3463 status (`5.1.1`, `4.4.7` for an expired message).
    pub status: String,
}

/// The notification's text, for a message queued as `queue_id` at `arrival_secs`,
/// composed at `now_secs` by `reporting_mta` (this site's host name).
pub fn notification(
    reporting_mta: &str,
    to: &EmailAddress,
    queue_id: u64,
    arrival_secs: i64,
    now_secs: i64,
    failures: &[Failure],
    original: &[u8],
) -> Vec<u8> {
    let boundary = format!("maildr-dsn-{queue_id}-{now_secs}");
    let date = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0).map(|d| d.to_rfc2822()).unwrap_or_else(|| "unknown".into())
    };
    let mut text = String::new();
    text.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"));
    text.push_str(&format!("To: <{to}>\r\n"));
    text.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    text.push_str(&format!("Date: {}\r\n", date(now_secs)));
    text.push_str(&format!("Message-ID: <dsn.{queue_id}.{now_secs}@{reporting_mta}>\r\n"));
    text.push_str("Auto-Submitted: auto-replied\r\n");
    text.push_str("MIME-Version: 1.0\r\n");
    text.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    text.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");
    text.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    text.push_str(&format!(
        "This is the mail system at {reporting_mta}.\r\n\r\nYour message could not be delivered to the \
         following recipients:\r\n\r\n"
    ));
    for f in failures {
        text.push_str(&format!("  <{}>: {}\r\n", f.recipient, one_line(&f.diagnostic)));
    }
    text.push_str(&format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"));
    text.push_str(&format!("Reporting-MTA: dns; {reporting_mta}\r\n"));
    text.push_str(&format!("X-Maildr-Queue-ID: {queue_id}\r\n"));
    text.push_str(&format!("Arrival-Date: {}\r\n", date(arrival_secs)));
    for f in failures {
        text.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", f.recipient));
        text.push_str("Action: failed\r\n");
        text.push_str(&format!("Status: {}\r\n", f.status));
        if let Some(mta) = &f.remote_mta {
            text.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
        }
        text.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(&f.diagnostic)));
    }
    text.push_str(&format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    let mut out = text.into_bytes();
    out.extend_from_slice(header_block(original));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The RFC 3463 status in a reply (`550 5.1.1 …` → `5.1.1`), else the class's
/// generic one.
pub fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let enhanced = words.next().filter(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    match enhanced {
        Some(s) => s.to_string(),
        None if code.starts_with('5') => "5.0.0".into(),
        None => "4.0.0".into(),
    }
}

/// The message's header block, up to the empty line (bounded).
fn header_block(message: &[u8]) -> &[u8] {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |p| p + 2);
    &message[..end.min(RETURNED_HEADER_BYTES_MAX)]
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_each_failed_recipient_with_its_status_and_returns_only_the_header() {
        let failures = [
            Failure {
                recipient: EmailAddress::parse("carol@remote.test").unwrap(),
                remote_mta: Some("mx.remote.test".into()),
                diagnostic: "550 5.1.1 <carol@remote.test>: Recipient address rejected".into(),
                status: status_of("550 5.1.1 <carol@remote.test>: Recipient address rejected"),
            },
            Failure {
                recipient: EmailAddress::parse("dave@remote.test").unwrap(),
                remote_mta: None,
                diagnostic: "expired after 5 days: connect: refused".into(),
                status: "4.4.7".into(),
            },
        ];
        let original = b"Subject: hello\r\nFrom: alice@example.test\r\n\r\nsecret body\r\n";
        let to = EmailAddress::parse("alice@example.test").unwrap();
        let text = String::from_utf8(notification(
            "mx.example.test",
            &to,
            7,
            1_700_000_000,
            1_700_000_060,
            &failures,
            original,
        ))
        .unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"), "{text}");
        assert!(text.contains("Final-Recipient: rfc822; carol@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Remote-MTA: dns; mx.remote.test"));
        assert!(text.contains("Final-Recipient: rfc822; dave@remote.test\r\nAction: failed\r\nStatus: 4.4.7\r\n"));
        assert!(text.contains("Subject: hello\r\nFrom: alice@example.test\r\n"));
        assert!(!text.contains("secret body"), "only the header is returned");
        assert!(text.ends_with("--maildr-dsn-7-1700000060--\r\n"));
        assert_eq!(status_of("451 4.3.0 try later"), "4.3.0");
        assert_eq!(status_of("554 no"), "5.0.0");
    }
}
