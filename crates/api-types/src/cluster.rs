//! The cluster operations of the admin API (`/api/cluster/...`): every member's
//! view, planned switchover, forced failover to a standby and cross-site
//! verification, with their requests and reports. `maildr cluster` prints the same
//! reports (`render`).
//!
//! Plain data plus the words the CLI prints; this module must never decide anything
//! about the cluster (`maildr_cluster::ops` does, and fills these in).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::{
    ApplyDelayStatus, ForcedFailoverRecord, MailboxDigest, MessageSummary, PrimaryContact, SiteStatus,
};

/// Every member's view as `maildr cluster status --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// Site name of the primary, as the answering sites agree.
    pub leader: Option<String>,
    pub term: Option<u64>,
    pub members: Vec<MemberView>,
}

/// One member: its configured role and, when it answered, its own status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub site: String,
    pub node_id: u64,
    /// `data`, `witness` or `standby`, from the configuration.
    pub role: String,
    pub reachable: bool,
    /// Why the member did not answer.
    pub error: Option<String>,
    pub state: Option<String>,
    pub term: Option<u64>,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Entries the member lacks, as the primary sees it (0 for the primary).
    pub lag_entries: Option<u64>,
    pub lag_seconds: Option<f64>,
    /// Bytes of the entries the member lacks, as the primary sees it (0 for the
    /// primary); see `PeerStatus::lag_bytes`.
    pub lag_bytes: Option<u64>,
    /// Whether `lag_bytes` is partly estimated.
    pub lag_bytes_estimated: bool,
    /// As the asking site sees it (0 for itself).
    pub last_heard_ms_ago: Option<u64>,
    pub missing_bodies: Option<u64>,
    pub status: Option<SiteStatus>,
}

/// The outcome of a planned switchover.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SwitchoverReport {
    /// The new primary's site name.
    pub primary: String,
    /// The term it leads in.
    pub term: u64,
    /// The longest time writes were unavailable, as measured by the old primary.
    pub unavailable_ms: u64,
}

/// What a forced failover to a standby may lose, from the standby's own status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailoverLoss {
    /// The standby's site name.
    pub site: String,
    pub node_id: u64,
    /// The standby's last log index: what the lost primary committed after it is lost.
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The last time the standby heard from a primary (`heard_ms_ago`: how long ago),
    /// and the primary's commit index then; absent when it has not since it started.
    pub primary_contact: Option<PrimaryContact>,
    /// Committed entries the standby lacked at that contact (the primary may have
    /// committed more since, unseen from the standby).
    pub lag_entries_at_contact: Option<u64>,
    /// For a held lagged site: its delay and hold. It is promoted with what it
    /// applied; the entries after its applied index are discarded.
    pub apply_delay: Option<ApplyDelayStatus>,
}

impl FailoverLoss {
    /// What promoting the site whose status this is may lose.
    pub fn of(status: &SiteStatus) -> FailoverLoss {
        FailoverLoss {
            site: status.site.clone(),
            node_id: status.node_id,
            last_log_index: status.last_log_index,
            applied_index: status.applied_index,
            primary_contact: status.primary_contact.clone(),
            lag_entries_at_contact: status.primary_contact.as_ref().map(PrimaryContact::lag_entries_then),
            apply_delay: status.apply_delay.clone(),
        }
    }

    /// The loss in words, as `maildr cluster failover` prints it.
    pub fn render(&self) -> String {
        let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("none".into());
        if let Some(hold) = self.apply_delay.as_ref().and_then(|d| d.hold.as_ref()) {
            return format!(
                "lagged site {} (node {}): held by {} at applied index {}; its log holds up to index {}\n\
                 DISCARDED: the {} entries after index {} that it received but did not apply, and everything the \
                 old cluster committed since. The new cluster starts from the state at index {}.\n",
                self.site,
                self.node_id,
                hold.by,
                show(self.applied_index),
                show(self.last_log_index),
                self.last_log_index.unwrap_or(0).saturating_sub(self.applied_index.unwrap_or(0)),
                show(self.applied_index),
                show(self.applied_index),
            );
        }
        let mut out = format!(
            "standby {} (node {}): last log index {}, applied index {}\n",
            self.site,
            self.node_id,
            show(self.last_log_index),
            show(self.applied_index)
        );
        match &self.primary_contact {
            Some(c) => out.push_str(&format!(
                "last heard from the primary (node {}, term {}) {:.1} s ago; the primary had committed index {} \
                 then, and the standby was {} entries behind\n",
                c.primary,
                c.term,
                c.heard_ms_ago as f64 / 1000.0,
                show(c.primary_committed_index),
                c.lag_entries_then()
            )),
            None => out.push_str("it has not heard from a primary since it started\n"),
        }
        let since = match &self.primary_contact {
            Some(c) => format!("{:.1} s ago", c.heard_ms_ago as f64 / 1000.0),
            None => "before the standby last started".into(),
        };
        out.push_str(&format!(
            "MAY BE LOST: whatever the old primary committed after index {}: what the standby lacked at the last \
             contact, and all mail acknowledged since then ({since})\n",
            show(self.last_log_index)
        ));
        out
    }
}

/// A forced failover the standby accepted: it restarts as the only voter and leads
/// once it is back (poll its status for `state: Leader`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailoverReport {
    /// What may be lost, as the standby reported just before it was promoted.
    pub loss: FailoverLoss,
    /// The standby's record: who forced it, when, and its last log index.
    pub accepted: ForcedFailoverRecord,
}

/// What `maildr cluster verify` found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    /// The applied index every compared site was read at.
    pub applied_index: u64,
    /// The sites compared.
    pub sites: Vec<String>,
    pub unreachable: Vec<String>,
    /// Lagged sites, left out: they apply late by design, so they never reach the
    /// index the others are read at.
    #[serde(default)]
    pub lagged: Vec<String>,
    /// Mailboxes compared.
    pub mailboxes: usize,
    pub diverging: Vec<Divergence>,
}

/// A mailbox whose state differs between sites.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Divergence {
    pub mailbox: u64,
    /// The address of the account the mailbox belongs to.
    pub account: String,
    pub name: String,
    /// Each site's view of the mailbox: a `MailboxDigest`, or `null` when the site
    /// has no such mailbox.
    #[schema(value_type = Object)]
    pub by_site: BTreeMap<String, Option<MailboxDigest>>,
    /// The sites whose view differs from the one a majority of the compared sites
    /// share (the suspects); empty when no view has a majority.
    pub outliers: Vec<String>,
    /// With `--messages`: for each site, the UIDs whose record differs from the
    /// first site's (or exists on one side only).
    pub differing_uids: BTreeMap<String, Vec<u32>>,
    /// With `--messages`: every message the sites do not all agree on, with what
    /// differs and each site's record of it.
    pub messages: Vec<MessageDifference>,
}

/// One message the sites disagree on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageDifference {
    pub uid: u32,
    /// The fields that differ between the sites holding the message (`modseq`,
    /// `flags`, `keywords`, `internal_date`, `size_bytes`, `body`), and `absent`
    /// when some site does not hold it.
    pub fields: Vec<String>,
    /// Each site's record of the message, or `null` when the site lacks it.
    #[schema(value_type = Object)]
    pub by_site: BTreeMap<String, Option<MessageSummary>>,
}

impl VerifyReport {
    /// The report as `maildr cluster verify` prints it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "compared {} mailboxes on {} at applied index {}\n",
            self.mailboxes,
            self.sites.join(", "),
            self.applied_index
        );
        for site in &self.unreachable {
            out.push_str(&format!("not compared: {site} is unreachable\n"));
        }
        for site in &self.lagged {
            out.push_str(&format!("not compared: {site} is lagged (it applies late by design)\n"));
        }
        if self.diverging.is_empty() {
            out.push_str("no divergence\n");
        } else {
            let n = self.diverging.len();
            out.push_str(&format!("{n} {}\n", if n == 1 { "mailbox diverges" } else { "mailboxes diverge" }));
        }
        for d in &self.diverging {
            out.push_str(&format!("DIVERGES: {} {} (mailbox {})\n", d.account, d.name, d.mailbox));
            for (site, digest) in &d.by_site {
                match digest {
                    Some(g) => out.push_str(&format!(
                        "  {site}: {} messages, uidvalidity {}, uidnext {}, highest modseq {}, digest {}\n",
                        g.message_count, g.uid_validity, g.uid_next, g.highest_modseq, g.digest
                    )),
                    None => out.push_str(&format!("  {site}: no such mailbox\n")),
                }
            }
            if !d.outliers.is_empty() {
                let agreeing: Vec<&str> =
                    d.by_site.keys().filter(|s| !d.outliers.contains(s)).map(String::as_str).collect();
                out.push_str(&format!(
                    "  differs from the majority ({}): {}\n",
                    agreeing.join(", "),
                    d.outliers.join(", ")
                ));
            }
            for m in &d.messages {
                out.push_str(&format!("  UID {} differs: {}\n", m.uid, m.fields.join(", ")));
                for (site, record) in &m.by_site {
                    match record {
                        Some(r) => out.push_str(&format!("    {site}: {}\n", r.render())),
                        None => out.push_str(&format!("    {site}: no such message\n")),
                    }
                }
            }
        }
        out
    }
}

/// The body of `POST /api/cluster/switchover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// Site name of the data site to make primary.
    pub to: String,
}

/// The body of `POST /api/cluster/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Also list the UIDs that differ in diverging mailboxes.
    #[serde(default)]
    pub messages: bool,
}

/// A forced failover to a standby: it may lose the data the standby had not
/// received, and says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// Site name of the standby to promote (anything else is refused).
    pub to: String,
    /// Must be `true`: the caller accepts losing what the target had not received.
    #[serde(default)]
    pub accept_data_loss: bool,
    /// Who asked (a person or a system), for the event log.
    pub by: String,
}
