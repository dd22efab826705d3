//! The site configuration: one TOML file per site, one documented struct.
//!
//! Every field is declared once, with its doc comment and its default, through the
//! [`section!`] macro; `maildr config example` prints the commented example from
//! those same declarations, so the docs, the defaults and the parser cannot drift.
//! Unknown keys and bad values are refused with the file, the key and the reason.
//! This crate parses and checks; it never opens sockets or files other than the
//! config file itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One field's documentation, for the generated example.
pub struct FieldDoc {
    pub name: &'static str,
    pub doc: &'static [&'static str],
    /// `None` when the default is "unset" (printed commented out).
    pub default: Option<toml::Value>,
}

/// Declares a config section: the struct, its serde defaults and its field docs.
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
        }
        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }
        impl $name {
            /// The section's doc comment lines.
            pub const DOC: &'static [&'static str] = &[$($sdoc),*];
            /// Every field with its doc and default.
            pub fn fields() -> Vec<FieldDoc> {
                let defaults = Self::default();
                vec![$(
                    FieldDoc {
                        name: stringify!($field),
                        doc: &[$($fdoc),*],
                        default: toml::Value::try_from(&defaults.$field).ok(),
                    },
                )*]
            }
        }
    };
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("built-in default addresses parse")
}

section! {
    /// Who this site is.
    SiteSection {
        /// Short id of this site, e.g. `bj`, `sh`, `hz`: letters, digits and '-'.
        name: String = "dev".into(),
        /// Host name this site announces in SMTP greetings and Received headers.
        hostname: String = "mail.example.test".into(),
        /// Directory holding the site's database, message bodies and generated
        /// certificates. `maildr serve --data-dir` overrides it.
        data_dir: PathBuf = PathBuf::from("/var/lib/maildr"),
        /// Site-wide budget, in bytes, for message data held in memory at once: SMTP
        /// messages being received, IMAP literals being read, FETCH answers being
        /// sent. The first 128 KiB of each such buffer are not counted, so ordinary
        /// mail is never refused for memory; beyond the budget a large message gets
        /// SMTP 452 and IMAP NO or BYE (try again later). At least the largest SMTP
        /// message and IMAP literal.
        message_memory_max_bytes: u64 = 512 * 1024 * 1024,
    }
}

section! {
    /// SMTP listeners and their limits.
    SmtpSection {
        /// Inbound MX listener (port 25 in production). Accepts mail only for hosted
        /// domains; offers STARTTLS; never AUTH.
        mx_listen: SocketAddr = addr("127.0.0.1:2525"),
        /// Submission listener with STARTTLS (port 587 in production). AUTH is offered
        /// only after STARTTLS.
        submission_listen: SocketAddr = addr("127.0.0.1:2587"),
        /// Submission listener with implicit TLS (port 465 in production).
        submissions_listen: SocketAddr = addr("127.0.0.1:2465"),
        /// Largest message accepted, in bytes (advertised as SIZE; beyond it: 552).
        message_size_max_bytes: u64 = 25 * 1024 * 1024,
        /// Most recipients of one message (beyond it: 452).
        recipients_max: u32 = 100,
        /// Longest command line, in bytes including CRLF (beyond it: 500).
        command_line_max_bytes: u32 = 2048,
        /// Most header fields in one message (beyond it: 554).
        header_fields_max: u32 = 1000,
        /// Errors a client may make in one session before it is disconnected (421).
        errors_max: u32 = 20,
        /// Seconds a client may stay silent before it is disconnected (421).
        idle_timeout_secs: u64 = 300,
        /// Most concurrent SMTP connections on all listeners of this site.
        connections_max: u32 = 1000,
        /// Base delay after a failed AUTH, in milliseconds: the next AUTH from the
        /// same address waits it before its answer, doubling with every further
        /// failure (capped at 64 times); slows down password guessing.
        auth_failure_delay_ms: u64 = 500,
        /// Check SPF, DKIM and DMARC of mail the MX receives and record the results
        /// in an `Authentication-Results:` header (RFC 8601); no policy is enforced.
        authentication_checks: bool = true,
        /// Longest the checks of one message may take (their DNS questions); then
        /// the header says `temperror` and the message is delivered.
        authentication_checks_timeout_ms: u64 = 1500,
        /// DNS servers (`IP:PORT`) this site asks about other domains: SPF, DKIM and
        /// DMARC records of inbound mail, MX and addresses for outbound delivery.
        /// Empty: the system's (`/etc/resolv.conf`).
        resolvers: Vec<SocketAddr> = Vec::new(),
    }
}

section! {
    /// IMAP listeners and their limits.
    ImapSection {
        /// Plain IMAP listener (lab 2143). Logins over it are refused from
        /// non-loopback addresses unless `plain_auth_anywhere` is set.
        plain_listen: SocketAddr = addr("127.0.0.1:2143"),
        /// IMAP with implicit TLS (port 993 in production; lab 2993).
        tls_listen: SocketAddr = addr("127.0.0.1:2993"),
        /// Allow LOGIN/AUTHENTICATE on the plain listener from any address (only
        /// for networks you trust; passwords travel in clear).
        plain_auth_anywhere: bool = false,
        /// Largest literal accepted (APPEND size), in bytes.
        literal_size_max_bytes: u32 = 25 * 1024 * 1024,
        /// Longest command line outside literals, in bytes.
        command_line_max_bytes: u32 = 64 * 1024,
        /// Most concurrent sessions of one account.
        sessions_per_account_max: u32 = 20,
        /// Most concurrent IMAP connections on this site.
        connections_max: u32 = 2000,
        /// Seconds of client silence before the session is closed (RFC 3501 asks
        /// for at least 30 minutes).
        idle_timeout_secs: u64 = 1800,
        /// Base delay after a failed login, in milliseconds; doubles with every
        /// further failure from the same address (capped at 64 times).
        auth_failure_delay_ms: u64 = 500,
        /// Remember a verified password for a few minutes (as an HMAC under a key
        /// that lives only in this process; a password change on any site ends
        /// it), so a client that logs in again and again costs no argon2 check.
        /// Off only to measure what argon2 costs: `maildr bench imap --logins`.
        credential_cache: bool = true,
    }
}

section! {
    /// TLS for SMTP submission and IMAP. Leave both paths unset to have the
    /// site generate a self-signed certificate for `site.hostname` under
    /// `<data_dir>/tls/` (fine for labs, not for production).
    TlsSection {
        /// PEM file with the certificate chain.
        cert_path: Option<PathBuf> = None,
        /// PEM file with the private key.
        key_path: Option<PathBuf> = None,
    }
}

section! {
    /// The write path: how commands become durable.
    StoreSection {
        /// Most commands committed together in one fsynced transaction.
        batch_commands_max: u32 = 256,
        /// Most commands queued for the writer before writers wait.
        queue_commands_max: u32 = 4096,
        /// Milliseconds a client waits for its write before getting a temporary error.
        write_timeout_ms: u64 = 10_000,
    }
}

/// Longest apply delay of a lagged site: 30 days.
pub const APPLY_DELAY_SECS_MAX: u64 = 30 * 24 * 3600;

/// What a site is in the cluster; one definition for the whole workspace, in
/// `maildr-types`, so the config, the cluster, the admin API and the drill agree.
pub use maildr_types::SiteRole;

/// One member of the cluster as this site sees it: who it is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMember {
    /// Raft node id; unique in the cluster and never reused (a site whose data
    /// directory was lost rejoins under a new id).
    pub node_id: u64,
    /// The member's site name (`site.name` in its own config).
    pub site: String,
    /// Its role.
    pub role: SiteRole,
    /// Where this site reaches the member's replication listener (`host:port`).
    /// In the lab this is a fault-proxy link, so it differs from site to site.
    pub addr: String,
    /// Where mail clients and senders reach this member's mail service: the address
    /// DNS publishes for it (`<site>.<domain>`, `mail.<domain>` while it is primary)
    /// and the control plane probes. Required for data sites when `dns.listen` or
    /// `control.enabled` is set; ignored for other roles.
    #[serde(default)]
    pub mail_ip: Option<std::net::IpAddr>,
}

section! {
    /// Replication between sites (one Raft group). With no `[[cluster.members]]` the
    /// site runs alone: every write is durable on this site only. With members, every
    /// site lists all of them (itself included), in a `[[cluster.members]]` table each
    /// with `node_id`, `site`, `role` (`data`, `witness`, `standby` or `lagged`) and
    /// `addr`.
    ClusterSection {
        /// This site's Raft node id; must be one of the members.
        node_id: u64 = 1,
        /// Address the replication listener binds (peers, and `maildr cluster`).
        listen: SocketAddr = addr("127.0.0.1:2700"),
        /// Shared secret every member and the `maildr cluster` commands prove they
        /// know (an HMAC over a fresh challenge; the secret itself never crosses a
        /// link). Required, at least 16 characters, for a cluster without
        /// certificates; optional (a second factor) with them. Keep it out of
        /// version control.
        secret: Option<String> = None,
        /// The cluster CAs (PEM) whose certificates this site trusts on the
        /// replication channel: one, or two during a CA rollover. Issue them with
        /// `maildr cluster certs ca`. These files and the two below are read again
        /// when they change, without a restart.
        ca_files: Vec<PathBuf> = Vec::new(),
        /// This site's cluster certificate (PEM), naming its site and node id
        /// (`maildr cluster certs issue`); it serves both ends of every connection.
        /// Required, with `key_file` and `ca_files`, when any member or `listen`
        /// is not a loopback address.
        cert_file: Option<PathBuf> = None,
        /// The private key of `cert_file` (PEM).
        key_file: Option<PathBuf> = None,
        /// Shortest election timeout in milliseconds. The defaults suit two cities
        /// about 30 ms apart; the lab uses a few hundred milliseconds.
        election_timeout_min_ms: u64 = 1500,
        /// Longest election timeout in milliseconds (a random value in between is used).
        election_timeout_max_ms: u64 = 3000,
        /// Milliseconds between heartbeats from the primary.
        heartbeat_interval_ms: u64 = 300,
        /// Build a snapshot (and allow the log before it to be purged) after this
        /// many applied entries.
        snapshot_after_entries: u64 = 20_000,
        /// Milliseconds a message body push to peers may take before the write is
        /// refused as temporarily unavailable (bodies over 256 KiB, pushed before their
        /// entry is proposed; a smaller body travels beside its entry, and a voter
        /// acknowledges the entry only once it holds the body). Also how long a voter
        /// fetches a body it was not pushed.
        body_push_timeout_ms: u64 = 5_000,
        /// Only for a site whose role is `lagged` (required there, refused elsewhere):
        /// seconds between an entry's arrival and its apply. Corruption noticed within
        /// this window has not reached the lagged site; `maildr cluster hold-apply`
        /// then stops it from applying anything further.
        apply_delay_secs: u64 = 0,
        /// Every member of the cluster, this site included.
        members: Vec<ClusterMember> = Vec::new(),
    }
}

/// Whether a replication address's host part is on this host only.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Which data sites the MX records list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MxPolicy {
    /// Every healthy data site, the primary first: senders fall back on their own.
    AllHealthy,
    /// The primary only: all inbound mail arrives where writes commit fastest.
    PrimaryOnly,
}

/// Most `[[dns.providers]]` one site publishes to.
pub const DNS_PROVIDERS_MAX: usize = 8;

/// How zones reach a DNS server hosted elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsProviderKind {
    /// Dynamic update (RFC 2136) over TCP, signed with TSIG (RFC 8945).
    Rfc2136,
}

/// TSIG MAC algorithms (the names servers use in their key definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithmName {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

fn default_tsig_algorithm() -> TsigAlgorithmName {
    TsigAlgorithmName::HmacSha256
}

/// A DNS server hosted elsewhere that also gets the zones, from the primary, whenever
/// the committed steering changes (see `[dns] providers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsProviderConfig {
    /// `rfc2136`.
    pub kind: DnsProviderKind,
    /// The server that accepts updates for `zone`, as `ip:port` (TCP).
    pub server: SocketAddr,
    /// The zone the server is primary for: hosted domains equal to it or below it
    /// are published there, others are not.
    pub zone: maildr_types::Domain,
    /// TSIG key name, as the server knows it. Required: an unsigned update would let
    /// anyone who reaches the server steer the mail.
    pub tsig_key_name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: TsigAlgorithmName,
    /// File holding the shared TSIG secret in base64, read when the site starts.
    /// Keep it readable by the site's user only.
    pub tsig_secret_file: PathBuf,
}

section! {
    /// Authoritative DNS for the hosted domains, steered by the committed cluster
    /// state: `mail.<domain>` names the primary, MX lists the healthy data sites.
    DnsSection {
        /// UDP and TCP address of the authoritative server; unset = no DNS server.
        /// The lab uses port 5353 on each site's own loopback address.
        listen: Option<SocketAddr> = None,
        /// TTL of every record served, in seconds. Short TTLs let clients follow a
        /// failover sooner; the lab uses 2.
        ttl_secs: u32 = 60,
        /// `all-healthy` (MX lists every healthy data site, primary first) or
        /// `primary-only`.
        mx_policy: MxPolicy = MxPolicy::AllHealthy,
        /// Stop answering for the hosted domains (REFUSED, so resolvers ask the other
        /// sites' servers) after this many milliseconds without contact with a
        /// majority of the cluster: a cut-off site cannot know the current primary
        /// and must not send clients to itself. A restarted site stays silent
        /// until it has heard from a majority. 0 = never withdraw.
        withdraw_after_ms: u64 = 5_000,
        /// DNS servers hosted elsewhere that also get the zones (needs `listen`): the
        /// primary sends them every new steering. One `[[dns.providers]]` table each,
        /// with `kind = "rfc2136"`, `server` (`ip:port`), `zone`, `tsig_key_name`,
        /// `tsig_algorithm` (default `hmac-sha256`) and `tsig_secret_file` (base64).
        /// maildr replaces MX and TXT at the zone's apex and A/AAAA of `mail.` and of
        /// each site there, never SOA or NS. At most 8.
        providers: Vec<DnsProviderConfig> = Vec::new(),
    }
}

section! {
    /// The DR control plane: health probes from this site to every data site, and
    /// (on the primary) the failover decisions that steer DNS.
    ControlSection {
        /// Run the probes and the control loop (needs `[[cluster.members]]` with
        /// `mail_ip` for data sites).
        enabled: bool = false,
        /// Milliseconds between two probe rounds.
        probe_interval_ms: u64 = 2_000,
        /// Milliseconds one probe (connect, greeting, EHLO or LOGIN) may take.
        probe_timeout_ms: u64 = 3_000,
        /// Consecutive failed probe rounds before this observer calls a site down.
        down_after_failures: u32 = 3,
        /// Milliseconds a site that was down must be seen healthy (and caught up)
        /// before DNS lists it again: the hold-down against flapping.
        readd_holddown_ms: u64 = 30_000,
        /// A site whose replication lag exceeds this many entries is not caught up
        /// and is not listed again.
        readd_lag_entries_max: u64 = 100,
        /// Port of the MX listener on every data site, for the SMTP probe.
        probe_smtp_port: u16 = 25,
        /// Port of the IMAP listener on every data site, for the IMAP probe: the
        /// implicit-TLS port (993) when `probe_ca_file` is set, else the plain one.
        probe_imap_port: u16 = 143,
        /// The CA (PEM) the data sites' mail certificates chain to. When set, the
        /// SMTP probe says STARTTLS and the IMAP probe connects with implicit TLS,
        /// each verifying the certificate for `probe_tls_name`. Required when the
        /// probe logs in and a data site's `mail_ip` is not a loopback address: the
        /// probe's password never crosses the network in clear.
        probe_ca_file: Option<PathBuf> = None,
        /// The name the probes check each site's mail certificate for; `{site}`
        /// stands for the probed site's name (e.g. `{site}.example.com`, or
        /// `mail.example.com` when every site serves one certificate).
        probe_tls_name: String = String::from("{site}"),
        /// Account the IMAP probe logs in as (e.g. `probe@example.test`); unset =
        /// the probe stops at the greeting.
        probe_account: Option<String> = None,
        /// Its password. Keep it out of version control.
        probe_password: Option<String> = None,
        /// Probe results kept per observed site, for the health history.
        history_samples_max: u32 = 600,
        /// Let the primary change the DNS steering. `false` keeps the probes and
        /// the health reports, but once a first steering is committed nothing
        /// changes it: after a failover DNS still names the old primary. Only for
        /// drills that must fail (`maildr lab up --no-steering`), never in production.
        steering: bool = true,
    }
}

section! {
    /// The admin HTTP API (JSON, bearer token, OpenAPI at `/api/openapi.json`) and
    /// Prometheus metrics at `/metrics`.
    ApiSection {
        /// Address the API listens on; unset = no API.
        listen: Option<SocketAddr> = None,
        /// Bearer token every request must present; required when `listen` is set.
        /// At least 16 characters. Keep it out of version control.
        token: Option<String> = None,
    }
}

section! {
    /// Fault hooks for drills: routes on the admin API that stop and start this
    /// site's own services (`/api/faults/services`). The lab turns them on; a
    /// production site leaves them off, and then the routes answer 404.
    FaultsSection {
        /// Serve the fault-hook routes: `PUT /api/faults/services/{service}` with
        /// `{"running": false}` closes the listeners of `smtp`, `submission`, `imap`
        /// or `dns` and drops their connections; `{"running": true}` listens again.
        hooks: bool = false,
    }
}

section! {
    /// Logging.
    LogSection {
        /// Filter in `tracing` syntax, e.g. `info` or `maildr_smtp=debug,info`.
        /// The `RUST_LOG` environment variable overrides it.
        level: String = "info".into(),
    }
}

/// Most `[[backup.targets]]` one site writes to.
pub const BACKUP_TARGETS_MAX: usize = 8;

/// Where backups go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupTargetKind {
    /// A directory: a local disk or an NFS mount.
    Dir,
    /// S3-compatible object storage.
    S3,
}

/// One place backups are written to (`[[backup.targets]]`). Every target gets every
/// backup and the whole archived log: each is a complete copy on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupTargetConfig {
    /// Short name of the target in reports, metrics and `--target`: letters, digits, '-'.
    pub name: String,
    /// `dir` or `s3`.
    pub kind: BackupTargetKind,
    /// `dir`: the directory (created if missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`: the endpoint URL, e.g. `https://s3.eu-central-1.amazonaws.com` or
    /// `http://127.0.0.1:8333` (plain HTTP only to loopback).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `s3`: the bucket; create it (with Object Lock and a default retention, where
    /// the store supports it) before the first backup.
    #[serde(default)]
    pub bucket: Option<String>,
    /// `s3`: the region the bucket is in.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// `s3`: a prefix for every object name, e.g. `maildr/`.
    #[serde(default)]
    pub prefix: String,
    /// `s3`: the access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `s3`: file holding the secret access key (one line).
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

section! {
    /// Backups: consistent copies of the mail state at one applied index, taken while
    /// mail keeps flowing, plus the archived log of every committed entry, so that any
    /// moment in the retention window can be restored (`maildr backup`, `maildr
    /// restore`). Off until `key_file` and at least one `[[backup.targets]]` are set.
    BackupSection {
        /// File holding the 32-byte backup key (64 hex digits; `maildr backup keygen`
        /// writes one). Every object is encrypted and authenticated with it before it
        /// leaves the site. Keep it apart from the targets: without it no backup
        /// can be read.
        key_file: Option<PathBuf> = None,
        /// When the primary takes a backup: a cron expression with seconds (`sec min
        /// hour day month weekday`), UTC. Empty = only when asked.
        schedule: String = "0 0 3 * * *".into(),
        /// When the primary verifies the newest backup by restoring it into a scratch
        /// site. Empty = only when asked.
        verify_schedule: String = "0 30 4 * * *".into(),
        /// How often the primary uploads the log entries committed since the last
        /// upload, in seconds: the most a restore to "now" can miss if every site is
        /// lost at once.
        archive_every_secs: u64 = 10,
        /// Keep the newest N backups whatever their age.
        keep_last: u32 = 7,
        /// Keep the newest backup of each of the last N days.
        keep_daily: u32 = 7,
        /// Keep the newest backup of each of the last N weeks.
        keep_weekly: u32 = 4,
        /// Keep the newest backup of each of the last N months.
        keep_monthly: u32 = 6,
        /// Backups older than this many days are pruned even if a rule above keeps
        /// them (0 = no age limit). The archived log is kept back to the oldest kept backup.
        max_age_days: u32 = 0,
        /// One `[[backup.targets]]` table each: `name`, `kind` (`dir` with `path`, or
        /// `s3` with `endpoint`, `bucket`, `region`, `prefix`, `access_key_id`,
        /// `secret_access_key_file`). At most 8.
        targets: Vec<BackupTargetConfig> = Vec::new(),
    }
}

/// One `[[outbound.routes]]` table: mail for `domain` goes to `host` (like a
/// Postfix transport map entry), never to the domain's MX.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundRoute {
    /// The recipient domain (exactly; subdomains need their own route).
    pub domain: String,
    /// `HOST:PORT` (a name or an address) to deliver to.
    pub host: String,
}

/// Most `[[outbound.routes]]`.
pub const OUTBOUND_ROUTES_MAX: usize = 1000;

section! {
    /// Outbound mail: delivery to other domains from the replicated queue. Off by
    /// default: submissions to other domains are then refused (550 5.7.1). When on,
    /// an authenticated submission to another domain is acknowledged once it is
    /// queued in the replicated state (and its body is on two sites), and the
    /// primary delivers it; after a failover the new primary goes on from the queue.
    OutboundSection {
        /// Deliver mail to other domains.
        enabled: bool = false,
        /// Name this site gives in EHLO when delivering; empty: `site.hostname`.
        helo_name: String = String::new(),
        /// Send all outbound mail through this smarthost (`HOST:PORT`), like
        /// Postfix's relayhost; empty: each domain's MX (routes still win).
        relay_host: String = String::new(),
        /// One `[[outbound.routes]]` table each: `domain`, `host` (`HOST:PORT`).
        routes: Vec<OutboundRoute> = Vec::new(),
        /// Seconds a message may wait in the queue; then it is bounced to its
        /// sender with a delivery status notification (default 5 days).
        lifetime_secs: u64 = 5 * 24 * 3600,
        /// Seconds before the first retry after a temporary failure; each retry
        /// waits twice as long as the one before, up to `retry_max_secs`.
        retry_initial_secs: u64 = 60,
        /// Longest wait between two attempts, in seconds.
        retry_max_secs: u64 = 3600,
        /// Most connections at once to one destination host.
        connections_per_destination: u32 = 10,
        /// Most deliveries in flight at once.
        concurrency: u32 = 50,
        /// Most messages in the queue; beyond it submissions to other domains get
        /// 452 (try again later).
        queue_messages_max: u64 = 100_000,
        /// Seconds to wait for a connection and for each reply of the receiving
        /// server (the DATA reply gets ten times as long).
        timeout_secs: u64 = 60,
    }
}

impl OutboundSection {
    /// The route for mail to `domain`: its own route, else the smarthost.
    pub fn route_for(&self, domain: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| r.domain.eq_ignore_ascii_case(domain))
            .map(|r| r.host.as_str())
            .or((!self.relay_host.is_empty()).then_some(self.relay_host.as_str()))
    }
}

impl BackupSection {
    /// Are backups configured at all?
    pub fn enabled(&self) -> bool {
        self.key_file.is_some() && !self.targets.is_empty()
    }
}

/// The whole configuration of one site.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    pub site: SiteSection,
    pub smtp: SmtpSection,
    pub imap: ImapSection,
    pub tls: TlsSection,
    pub store: StoreSection,
    pub cluster: ClusterSection,
    pub dns: DnsSection,
    pub control: ControlSection,
    pub api: ApiSection,
    pub faults: FaultsSection,
    pub log: LogSection,
    pub backup: BackupSection,
    pub outbound: OutboundSection,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    Invalid { path: PathBuf, key: String, reason: String },
}

impl SiteConfig {
    /// Read, parse and check a config file.
    pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parse and check config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<SiteConfig, ConfigError> {
        let config: SiteConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string().trim_end().to_string() })?;
        config.check(path)?;
        Ok(config)
    }

    /// Check the values that types alone cannot.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid { path: path.into(), key: key.into(), reason };
        let name = &self.site.name;
        if name.is_empty() || name.len() > 32 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("site.name", format!("{name:?} must be 1-32 letters, digits or '-'")));
        }
        if maildr_types::Domain::parse(&self.site.hostname).is_err() {
            return Err(bad("site.hostname", format!("{:?} is not a valid host name", self.site.hostname)));
        }
        let s = &self.smtp;
        let positive = [
            ("smtp.message_size_max_bytes", s.message_size_max_bytes),
            ("smtp.recipients_max", s.recipients_max.into()),
            ("smtp.errors_max", s.errors_max.into()),
            ("smtp.idle_timeout_secs", s.idle_timeout_secs),
            ("smtp.connections_max", s.connections_max.into()),
            ("smtp.header_fields_max", s.header_fields_max.into()),
            ("store.batch_commands_max", self.store.batch_commands_max.into()),
            ("store.queue_commands_max", self.store.queue_commands_max.into()),
            ("store.write_timeout_ms", self.store.write_timeout_ms),
            ("imap.literal_size_max_bytes", self.imap.literal_size_max_bytes.into()),
            ("imap.sessions_per_account_max", self.imap.sessions_per_account_max.into()),
            ("imap.connections_max", self.imap.connections_max.into()),
            ("imap.idle_timeout_secs", self.imap.idle_timeout_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        if s.command_line_max_bytes < 512 {
            return Err(bad("smtp.command_line_max_bytes", "must be at least 512 (RFC 5321 §4.5.3.1.4)".into()));
        }
        if s.message_size_max_bytes > 1 << 30 {
            return Err(bad(
                "smtp.message_size_max_bytes",
                "must be at most 1 GiB: bodies are held in memory while received".into(),
            ));
        }
        let largest_buffer = s.message_size_max_bytes.max(u64::from(self.imap.literal_size_max_bytes));
        if self.site.message_memory_max_bytes < largest_buffer {
            return Err(bad(
                "site.message_memory_max_bytes",
                format!(
                    "must be at least the largest SMTP message and IMAP literal ({largest_buffer} bytes), or such \
                     messages could never be accepted"
                ),
            ));
        }
        if self.imap.command_line_max_bytes < 1024 {
            return Err(bad("imap.command_line_max_bytes", "must be at least 1024".into()));
        }
        match (&self.tls.cert_path, &self.tls.key_path) {
            (Some(_), None) => return Err(bad("tls.key_path", "must be set when tls.cert_path is".into())),
            (None, Some(_)) => return Err(bad("tls.cert_path", "must be set when tls.key_path is".into())),
            _ => {}
        }
        self.check_cluster(path)?;
        self.check_backup(path)?;
        self.check_outbound(path)?;
        self.check_control_plane(path)
    }

    fn check_outbound(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid { path: path.into(), key, reason };
        let o = &self.outbound;
        if o.routes.len() > OUTBOUND_ROUTES_MAX {
            return Err(bad("outbound.routes".into(), format!("at most {OUTBOUND_ROUTES_MAX} routes")));
        }
        let host_port = |key: String, value: &str| -> Result<(), ConfigError> {
            match value.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
                _ => Err(bad(key, format!("{value:?} is not HOST:PORT"))),
            }
        };
        if !o.relay_host.is_empty() {
            host_port("outbound.relay_host".into(), &o.relay_host)?;
        }
        for (i, route) in o.routes.iter().enumerate() {
            if maildr_types::Domain::parse(&route.domain).is_err() {
                return Err(bad(format!("outbound.routes[{i}].domain"), format!("{:?} is not a domain", route.domain)));
            }
            host_port(format!("outbound.routes[{i}].host"), &route.host)?;
        }
        if !o.helo_name.is_empty() && maildr_types::Domain::parse(&o.helo_name).is_err() {
            return Err(bad("outbound.helo_name".into(), format!("{:?} is not a host name", o.helo_name)));
        }
        let positive = [
            ("outbound.lifetime_secs", o.lifetime_secs),
            ("outbound.retry_initial_secs", o.retry_initial_secs),
            ("outbound.connections_per_destination", o.connections_per_destination.into()),
            ("outbound.concurrency", o.concurrency.into()),
            ("outbound.queue_messages_max", o.queue_messages_max),
            ("outbound.timeout_secs", o.timeout_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(bad(key.into(), "must be greater than 0".into()));
            }
        }
        if o.retry_max_secs < o.retry_initial_secs {
            return Err(bad("outbound.retry_max_secs".into(), "must be at least outbound.retry_initial_secs".into()));
        }
        Ok(())
    }

    fn check_backup(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid { path: path.into(), key, reason };
        let b = &self.backup;
        if b.targets.len() > BACKUP_TARGETS_MAX {
            return Err(bad("backup.targets".into(), format!("at most {BACKUP_TARGETS_MAX} targets")));
        }
        if !b.targets.is_empty() && b.key_file.is_none() {
            return Err(bad("backup.key_file".into(), "must be set when backup targets are".into()));
        }
        if b.archive_every_secs == 0 {
            return Err(bad("backup.archive_every_secs".into(), "must be greater than 0".into()));
        }
        if b.keep_last == 0 {
            return Err(bad("backup.keep_last".into(), "must be at least 1: the newest backup is always kept".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in b.targets.iter().enumerate() {
            let key = |field: &str| format!("backup.targets[{i}].{field}");
            if t.name.is_empty() || t.name.len() > 32 || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(bad(key("name"), format!("{:?} must be 1-32 letters, digits or '-'", t.name)));
            }
            if !names.insert(t.name.as_str()) {
                return Err(bad(key("name"), format!("{:?} appears twice", t.name)));
            }
            match t.kind {
                BackupTargetKind::Dir => {
                    if t.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                        return Err(bad(key("path"), "a dir target needs its directory".into()));
                    }
                }
                BackupTargetKind::S3 => {
                    for (field, set) in [
                        ("endpoint", t.endpoint.is_some()),
                        ("bucket", t.bucket.is_some()),
                        ("access_key_id", t.access_key_id.is_some()),
                        ("secret_access_key_file", t.secret_access_key_file.is_some()),
                    ] {
                        if !set {
                            return Err(bad(key(field), "an s3 target needs it".into()));
                        }
                    }
                    let endpoint = t.endpoint.as_deref().unwrap_or_default();
                    if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                        return Err(bad(key("endpoint"), format!("{endpoint:?} is not an http(s) URL")));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_control_plane(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid { path: path.into(), key: key.into(), reason };
        if self.dns.ttl_secs == 0 {
            return Err(bad("dns.ttl_secs", "must be greater than 0".into()));
        }
        self.check_dns_providers(path)?;
        let c = &self.control;
        if c.probe_interval_ms == 0 || c.probe_timeout_ms == 0 || c.down_after_failures == 0 {
            return Err(bad(
                "control.probe_interval_ms",
                "probe_interval_ms, probe_timeout_ms and down_after_failures must be greater than 0".into(),
            ));
        }
        if c.history_samples_max == 0 {
            return Err(bad("control.history_samples_max", "must be greater than 0".into()));
        }
        if c.probe_account.is_some() != c.probe_password.is_some() {
            return Err(bad("control.probe_password", "probe_account and probe_password go together".into()));
        }
        if let Some(account) = &c.probe_account {
            if maildr_types::EmailAddress::parse(account).is_err() {
                return Err(bad("control.probe_account", format!("{account:?} is not an email address")));
            }
        }
        if (c.enabled || self.dns.listen.is_some()) && !self.cluster.members.is_empty() {
            if let Some(m) = self.cluster.members.iter().find(|m| m.role == SiteRole::Data && m.mail_ip.is_none()) {
                return Err(bad(
                    "cluster.members",
                    format!("data site {} needs mail_ip when DNS or the control plane is on", m.site),
                ));
            }
        }
        if c.enabled && c.probe_account.is_some() && c.probe_ca_file.is_none() {
            let remote = self
                .cluster
                .members
                .iter()
                .filter(|m| m.role == SiteRole::Data)
                .find_map(|m| m.mail_ip.filter(|ip| !ip.is_loopback()));
            if let Some(ip) = remote {
                return Err(bad(
                    "control.probe_ca_file",
                    format!(
                        "required: the IMAP probe logs in, and {ip} is not a loopback address (its password must \
                         not cross the network in clear)"
                    ),
                ));
            }
        }
        if c.probe_ca_file.is_some() && c.probe_tls_name.trim().is_empty() {
            return Err(bad("control.probe_tls_name", "must name the certificate (e.g. {site}.example.com)".into()));
        }
        if self.api.listen.is_some() && self.api.token.as_deref().is_none_or(|t| t.len() < 16) {
            return Err(bad("api.token", "must be set, at least 16 characters, when api.listen is".into()));
        }
        Ok(())
    }

    fn check_dns_providers(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid { path: path.into(), key, reason };
        let providers = &self.dns.providers;
        if providers.is_empty() {
            return Ok(());
        }
        if providers.len() > DNS_PROVIDERS_MAX {
            return Err(bad(
                "dns.providers".into(),
                format!("{} tables; at most {DNS_PROVIDERS_MAX}", providers.len()),
            ));
        }
        if self.dns.listen.is_none() {
            return Err(bad(
                "dns.providers".into(),
                "needs dns.listen: the zones are published from the data sites' DNS feed".into(),
            ));
        }
        for (i, p) in providers.iter().enumerate() {
            let key = |field: &str| format!("dns.providers[{i}].{field}");
            if p.server.port() == 0 || p.server.ip().is_unspecified() {
                return Err(bad(key("server"), format!("{} is not an address to send updates to", p.server)));
            }
            let name = p.tsig_key_name.trim_end_matches('.');
            if name.is_empty() || name.len() > 253 || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
                return Err(bad(key("tsig_key_name"), format!("{:?} is not a DNS name", p.tsig_key_name)));
            }
            if p.tsig_secret_file.as_os_str().is_empty() {
                return Err(bad(key("tsig_secret_file"), "must name the file holding the TSIG secret".into()));
            }
        }
        Ok(())
    }

    fn check_cluster(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Invalid { path: path.into(), key: key.into(), reason };
        let c = &self.cluster;
        if c.election_timeout_min_ms == 0 || c.election_timeout_max_ms <= c.election_timeout_min_ms {
            return Err(bad(
                "cluster.election_timeout_max_ms",
                "must be greater than cluster.election_timeout_min_ms, which must be greater than 0".into(),
            ));
        }
        if c.heartbeat_interval_ms == 0 || c.heartbeat_interval_ms >= c.election_timeout_min_ms {
            return Err(bad(
                "cluster.heartbeat_interval_ms",
                "must be greater than 0 and less than cluster.election_timeout_min_ms".into(),
            ));
        }
        if c.snapshot_after_entries == 0 || c.body_push_timeout_ms == 0 {
            return Err(bad(
                "cluster.snapshot_after_entries",
                "and body_push_timeout_ms must be greater than 0".into(),
            ));
        }
        if c.members.is_empty() {
            return Ok(());
        }
        let tls = match (&c.cert_file, &c.key_file, c.ca_files.is_empty()) {
            (Some(_), Some(_), false) => true,
            (None, None, true) => false,
            _ => {
                return Err(bad(
                    "cluster.cert_file",
                    "cert_file, key_file and ca_files go together: set all three or none".into(),
                ))
            }
        };
        if c.secret.as_deref().is_some_and(|s| s.len() < 16) || (!tls && c.secret.is_none()) {
            return Err(bad(
                "cluster.secret",
                "must be at least 16 characters; it is required when members are configured without certificates"
                    .into(),
            ));
        }
        if !tls {
            let remote = std::iter::once(c.listen.ip().to_string())
                .chain(c.members.iter().map(|m| m.addr.rsplit_once(':').map_or(m.addr.clone(), |(h, _)| h.into())))
                .find(|host| !is_loopback_host(host));
            if let Some(host) = remote {
                return Err(bad(
                    "cluster.cert_file",
                    format!(
                        "required (with key_file and ca_files) because {host} is not a loopback address: the \
                         replication channel leaves this host only over mutual TLS"
                    ),
                ));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut sites = std::collections::BTreeSet::new();
        for m in &c.members {
            if !ids.insert(m.node_id) {
                return Err(bad("cluster.members", format!("node_id {} appears twice", m.node_id)));
            }
            if !sites.insert(m.site.as_str()) {
                return Err(bad("cluster.members", format!("site {:?} appears twice", m.site)));
            }
            if m.addr.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
                return Err(bad("cluster.members", format!("addr {:?} of site {} is not host:port", m.addr, m.site)));
            }
        }
        let Some(me) = c.members.iter().find(|m| m.node_id == c.node_id) else {
            return Err(bad("cluster.node_id", format!("{} is not among cluster.members", c.node_id)));
        };
        if me.site != self.site.name {
            return Err(bad(
                "cluster.members",
                format!("node_id {} is site {:?} but site.name is {:?}", me.node_id, me.site, self.site.name),
            ));
        }
        match (me.role, c.apply_delay_secs) {
            (SiteRole::Lagged, 0) => {
                return Err(bad("cluster.apply_delay_secs", "must be greater than 0 on a lagged site".into()))
            }
            (SiteRole::Lagged, delay) if delay > APPLY_DELAY_SECS_MAX => {
                return Err(bad(
                    "cluster.apply_delay_secs",
                    format!("{delay} is more than {APPLY_DELAY_SECS_MAX} (30 days)"),
                ))
            }
            (SiteRole::Lagged, _) | (_, 0) => {}
            (role, _) => {
                return Err(bad(
                    "cluster.apply_delay_secs",
                    format!("only a lagged site delays its applies; this site is {}", role.name()),
                ))
            }
        }
        let voters = c.members.iter().filter(|m| m.role.votes()).count();
        if voters < 3 {
            return Err(bad(
                "cluster.members",
                format!("{voters} voting members (data or witness); at least 3 are needed to survive losing one"),
            ));
        }
        Ok(())
    }

    /// This site's own entry in the member list, when it is part of a cluster.
    pub fn cluster_self(&self) -> Option<&ClusterMember> {
        self.cluster.members.iter().find(|m| m.node_id == self.cluster.node_id)
    }

    /// This site's role (a site outside any cluster is a data site).
    pub fn role(&self) -> SiteRole {
        self.cluster_self().map(|m| m.role).unwrap_or(SiteRole::Data)
    }

    /// A complete commented example with every field at its default.
    pub fn example() -> String {
        let mut out = String::from(
            "# maildr site configuration. Every key is optional: shown here is its default.\n\
             # Unknown keys are refused. Generated by `maildr config example`.\n",
        );
        let sections: [(&str, &[&str], Vec<FieldDoc>); 13] = [
            ("site", SiteSection::DOC, SiteSection::fields()),
            ("smtp", SmtpSection::DOC, SmtpSection::fields()),
            ("imap", ImapSection::DOC, ImapSection::fields()),
            ("tls", TlsSection::DOC, TlsSection::fields()),
            ("store", StoreSection::DOC, StoreSection::fields()),
            ("cluster", ClusterSection::DOC, ClusterSection::fields()),
            ("dns", DnsSection::DOC, DnsSection::fields()),
            ("control", ControlSection::DOC, ControlSection::fields()),
            ("api", ApiSection::DOC, ApiSection::fields()),
            ("faults", FaultsSection::DOC, FaultsSection::fields()),
            ("log", LogSection::DOC, LogSection::fields()),
            ("backup", BackupSection::DOC, BackupSection::fields()),
            ("outbound", OutboundSection::DOC, OutboundSection::fields()),
        ];
        for (name, doc, fields) in sections {
            out.push('\n');
            for line in doc {
                out.push_str(&format!("#{line}\n"));
            }
            out.push_str(&format!("[{name}]\n"));
            for field in fields {
                for line in field.doc {
                    out.push_str(&format!("#{line}\n"));
                }
                match field.default {
                    Some(value) => out.push_str(&format!("{} = {}\n", field.name, value)),
                    None => out.push_str(&format!("# {} = (unset)\n", field.name)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_example_parses_back_to_the_defaults() {
        let example = SiteConfig::example();
        let parsed = SiteConfig::parse(&example, Path::new("example.toml")).unwrap();
        assert_eq!(parsed, SiteConfig::default());
        assert!(example.contains("# Largest message accepted"));
        assert!(example.contains("mx_listen = \"127.0.0.1:2525\""));
    }

    #[test]
    fn unknown_keys_are_refused_naming_file_and_key() {
        let err =
            SiteConfig::parse("[smtp]\nmx_lisen = \"127.0.0.1:25\"\n", Path::new("/etc/maildr/bj.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/maildr/bj.toml") && msg.contains("mx_lisen"), "{msg}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key_and_reason() {
        let err = SiteConfig::parse("[smtp]\nmx_listen = \"not an address\"\n", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("mx_listen"), "{err}");
        let err = SiteConfig::parse("[smtp]\nrecipients_max = 0\n", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("smtp.recipients_max") && err.to_string().contains("greater than 0"), "{err}");
        let err = SiteConfig::parse("[tls]\ncert_path = \"/x.pem\"\n", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("tls.key_path"), "{err}");
        let err = SiteConfig::parse("[site]\nname = \"b j\"\n", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("site.name"), "{err}");
    }

    fn three_sites(node_id: u64, site: &str) -> String {
        format!(
            "[site]\nname = \"{site}\"\n[cluster]\nnode_id = {node_id}\nsecret = \"0123456789abcdef\"\n\
             [[cluster.members]]\nnode_id = 1\nsite = \"bj\"\nrole = \"data\"\naddr = \"127.0.10.1:2700\"\n\
             [[cluster.members]]\nnode_id = 2\nsite = \"sh\"\nrole = \"data\"\naddr = \"127.0.20.1:2700\"\n\
             [[cluster.members]]\nnode_id = 3\nsite = \"hz\"\nrole = \"witness\"\naddr = \"127.0.30.1:2700\"\n"
        )
    }

    #[test]
    fn a_three_site_cluster_parses_with_roles() {
        let config = SiteConfig::parse(&three_sites(3, "hz"), Path::new("hz.toml")).unwrap();
        assert_eq!(config.role(), SiteRole::Witness);
        assert!(!config.role().serves_mail() && config.role().votes());
        assert_eq!(config.cluster.members.len(), 3);
        assert_eq!(SiteConfig::default().role(), SiteRole::Data, "a site alone is a data site");
    }

    #[test]
    fn cluster_mistakes_are_refused_naming_the_key() {
        let refuse = |text: String, key: &str, reason: &str| {
            let err = SiteConfig::parse(&text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{err}");
        };
        refuse(three_sites(4, "bj"), "cluster.node_id", "not among");
        refuse(three_sites(1, "sh"), "cluster.members", "site.name");
        refuse(three_sites(1, "bj").replace("0123456789abcdef", "short"), "cluster.secret", "16");
        // Across hosts the channel needs certificates; with them the secret is optional.
        let remote = three_sites(1, "bj").replace("127.0.20.1:2700", "198.18.0.2:2700");
        refuse(remote.clone(), "cluster.cert_file", "198.18.0.2 is not a loopback address");
        let tls = "ca_files = [\"/etc/maildr/ca.pem\"]\ncert_file = \"/etc/maildr/bj.pem\"\nkey_file = \"/k.pem\"\n";
        let with_tls = remote.replace("secret = \"0123456789abcdef\"\n", tls);
        assert!(SiteConfig::parse(&with_tls, Path::new("c.toml")).is_ok());
        refuse(with_tls.replace("key_file = \"/k.pem\"\n", ""), "cluster.cert_file", "go together");
        refuse(three_sites(1, "bj").replace("secret = \"0123456789abcdef\"\n", ""), "cluster.secret", "required");
        refuse(three_sites(1, "bj").replace("node_id = 2", "node_id = 1"), "cluster.members", "appears twice");
        refuse(
            three_sites(1, "bj").replace("role = \"witness\"", "role = \"standby\""),
            "cluster.members",
            "at least 3",
        );
        refuse(three_sites(1, "bj").replace("127.0.20.1:2700", "127.0.20.1"), "cluster.members", "host:port");
        refuse(
            three_sites(1, "bj").replace("node_id = 1\nsecret", "node_id = 1\nheartbeat_interval_ms = 5000\nsecret"),
            "cluster.heartbeat_interval_ms",
            "less than",
        );
        let with_lagged = |node_id: u64, site: &str, delay: &str| {
            three_sites(node_id, site).replace("secret = ", &format!("{delay}secret = "))
                + "[[cluster.members]]\nnode_id = 4\nsite = \"lz\"\nrole = \"lagged\"\naddr = \"127.0.40.1:2700\"\n"
        };
        refuse(with_lagged(4, "lz", ""), "cluster.apply_delay_secs", "greater than 0 on a lagged site");
        refuse(with_lagged(4, "lz", "apply_delay_secs = 2600000\n"), "cluster.apply_delay_secs", "30 days");
        refuse(with_lagged(1, "bj", "apply_delay_secs = 60\n"), "cluster.apply_delay_secs", "this site is data");
        let lagged =
            SiteConfig::parse(&with_lagged(4, "lz", "apply_delay_secs = 3600\n"), Path::new("lz.toml")).unwrap();
        assert_eq!((lagged.role(), lagged.cluster.apply_delay_secs), (SiteRole::Lagged, 3600));
        assert!(!lagged.role().votes() && !lagged.role().serves_mail() && lagged.role().is_learner());
    }

    #[test]
    fn control_plane_mistakes_are_refused_naming_the_key() {
        let refuse = |text: String, key: &str, reason: &str| {
            let err = SiteConfig::parse(&text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(reason), "{err}");
        };
        let with_ips = three_sites(1, "bj")
            .replace("addr = \"127.0.10.1:2700\"\n", "addr = \"127.0.10.1:2700\"\nmail_ip = \"127.0.10.1\"\n");
        refuse(format!("{with_ips}[control]\nenabled = true\n"), "cluster.members", "data site sh needs mail_ip");
        let both =
            with_ips.replace("addr = \"127.0.20.1:2700\"\n", "addr = \"127.0.20.1:2700\"\nmail_ip = \"127.0.20.1\"\n");
        let config = SiteConfig::parse(&format!("{both}[control]\nenabled = true\n"), Path::new("c.toml")).unwrap();
        assert_eq!(config.cluster.members[1].mail_ip, Some("127.0.20.1".parse().unwrap()));
        refuse(
            format!("{both}[control]\nprobe_account = \"probe@example.test\"\n"),
            "control.probe_password",
            "together",
        );
        refuse(
            format!("{both}[control]\nprobe_account = \"not an address\"\nprobe_password = \"x\"\n"),
            "control.probe_account",
            "not an email address",
        );
        // A probe that logs in to a site on another host must use TLS.
        let login = "[control]\nenabled = true\nprobe_account = \"probe@example.test\"\nprobe_password = \"pw\"\n";
        let remote_mail = both.replace("mail_ip = \"127.0.20.1\"", "mail_ip = \"198.18.0.20\"");
        refuse(format!("{remote_mail}{login}"), "control.probe_ca_file", "198.18.0.20 is not a loopback address");
        let with_ca = format!("{remote_mail}{login}probe_ca_file = \"/etc/maildr/mail-ca.pem\"\n");
        assert!(SiteConfig::parse(&with_ca, Path::new("c.toml")).is_ok());
        assert!(SiteConfig::parse(&format!("{both}{login}"), Path::new("c.toml")).is_ok(), "loopback: plain is fine");
        refuse(format!("{with_ca}probe_tls_name = \" \"\n"), "control.probe_tls_name", "must name");
        refuse(format!("{both}[api]\nlisten = \"127.0.0.1:2780\"\n"), "api.token", "16");
        refuse(format!("{both}[dns]\nttl_secs = 0\n"), "dns.ttl_secs", "greater than 0");
        refuse(format!("{both}[dns]\nmx_policy = \"sometimes\"\n"), "mx_policy", "unknown variant");
    }

    #[test]
    fn dns_providers_parse_and_their_mistakes_are_refused_naming_the_key() {
        let base = "[dns]\nlisten = \"127.0.10.1:5353\"\n";
        let provider = "[[dns.providers]]\nkind = \"rfc2136\"\nserver = \"192.0.2.53:53\"\nzone = \"Example.TEST\"\n\
                        tsig_key_name = \"maildr-update\"\ntsig_secret_file = \"/etc/maildr/tsig.key\"\n";
        let config = SiteConfig::parse(&format!("{base}{provider}"), Path::new("p.toml")).unwrap();
        let p = &config.dns.providers[0];
        assert_eq!((p.kind, p.server), (DnsProviderKind::Rfc2136, "192.0.2.53:53".parse().unwrap()));
        assert_eq!((p.zone.as_str(), p.tsig_algorithm), ("example.test", TsigAlgorithmName::HmacSha256));
        let refuse = |text: String, key: &str, reason: &str| {
            let err = SiteConfig::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
            assert!(err.contains("p.toml") && err.contains(key) && err.contains(reason), "{err}");
        };
        refuse(provider.to_string(), "dns.providers", "needs dns.listen");
        refuse(format!("{base}{}", provider.replace(":53\"", ":0\"")), "dns.providers[0].server", "not an address");
        refuse(
            format!("{base}{provider}{}", provider.replace("maildr-update", "a..b")),
            "dns.providers[1].tsig_key_name",
            "not a DNS name",
        );
        refuse(format!("{base}{}", provider.replace("/etc/maildr/tsig.key", "")), "tsig_secret_file", "must name");
        refuse(format!("{base}{}", provider.repeat(DNS_PROVIDERS_MAX + 1)), "dns.providers", "at most 8");
        // Types and unknown keys are refused by the parser, naming the key.
        refuse(format!("{base}{}", provider.replace("rfc2136", "route53")), "kind", "unknown variant");
        refuse(format!("{base}{}", provider.replace("Example.TEST", "no_such")), "zone", "no_such");
        refuse(format!("{base}{provider}tsig_algorithm = \"hmac-md5\"\n"), "tsig_algorithm", "unknown variant");
        refuse(format!("{base}{provider}tsig_secret = \"c2VjcmV0\"\n"), "tsig_secret", "unknown field");
        refuse(
            format!("{base}{}", provider.replace("tsig_key_name = \"maildr-update\"\n", "")),
            "tsig_key_name",
            "missing",
        );
    }

    #[test]
    fn backup_targets_parse_and_every_bad_backup_value_is_refused_naming_the_key() {
        let key = "[backup]\nkey_file = \"/etc/maildr/backup.key\"\n";
        let dir =
            |name: &str| format!("[[backup.targets]]\nname = \"{name}\"\nkind = \"dir\"\npath = \"/mnt/{name}\"\n");
        let s3 = "[[backup.targets]]\nname = \"s3\"\nkind = \"s3\"\nendpoint = \"https://s3.example\"\n\
                  bucket = \"b\"\naccess_key_id = \"AK\"\nsecret_access_key_file = \"/etc/maildr/s3\"\n";
        let config = SiteConfig::parse(&format!("{key}{}{s3}", dir("nfs")), Path::new("b.toml")).unwrap();
        assert!(config.backup.enabled());
        assert_eq!(config.backup.targets[1].region, "us-east-1");
        assert!(!SiteConfig::default().backup.enabled(), "off by default");
        // At the limit of targets: accepted; one more: refused.
        let many: String = (0..BACKUP_TARGETS_MAX).map(|i| dir(&format!("t{i}"))).collect();
        SiteConfig::parse(&format!("{key}{many}"), Path::new("b.toml")).unwrap();
        let refuse = |text: String, key: &str, reason: &str| {
            let err = SiteConfig::parse(&text, Path::new("b.toml")).unwrap_err().to_string();
            assert!(err.contains("b.toml") && err.contains(key) && err.contains(reason), "{err}");
        };
        refuse(format!("{key}{many}{}", dir("one-more")), "backup.targets", "at most 8");
        refuse(dir("nfs"), "backup.key_file", "must be set");
        refuse(format!("{key}archive_every_secs = 0\n"), "backup.archive_every_secs", "greater than 0");
        refuse(format!("{key}keep_last = 0\n"), "backup.keep_last", "at least 1");
        refuse(format!("{key}{}{}", dir("nfs"), dir("nfs")), "backup.targets[1].name", "twice");
        refuse(format!("{key}{}", dir("no spaces")), "backup.targets[0].name", "letters");
        refuse(
            format!("{key}{}", dir("nfs").replace("path = \"/mnt/nfs\"\n", "")),
            "backup.targets[0].path",
            "directory",
        );
        refuse(format!("{key}{}", s3.replace("bucket = \"b\"\n", "")), "backup.targets[0].bucket", "needs it");
        refuse(format!("{key}{}", s3.replace("https://s3.example", "ftp://s3")), "backup.targets[0].endpoint", "http");
        refuse(format!("{key}{}", s3.replace("kind = \"s3\"", "kind = \"tape\"")), "kind", "tape");
    }

    #[test]
    fn outbound_routes_and_the_smarthost_decide_where_mail_goes_and_bad_ones_are_named() {
        let text = "[outbound]\nenabled = true\nrelay_host = \"smarthost.example.net:587\"\n\
                    [[outbound.routes]]\ndomain = \"remote.test\"\nhost = \"127.0.0.1:2600\"\n";
        let config = SiteConfig::parse(text, Path::new("a.toml")).unwrap();
        assert_eq!(config.outbound.route_for("REMOTE.test"), Some("127.0.0.1:2600"));
        assert_eq!(config.outbound.route_for("other.test"), Some("smarthost.example.net:587"));
        assert_eq!(OutboundSection::default().route_for("other.test"), None);
        let err = SiteConfig::parse(
            "[[outbound.routes]]\ndomain = \"remote.test\"\nhost = \"nowhere\"\n",
            Path::new("a.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("outbound.routes[0].host"), "{err}");
        let err = SiteConfig::parse("[outbound]\nretry_initial_secs = 600\nretry_max_secs = 60\n", Path::new("a.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("outbound.retry_max_secs"), "{err}");
    }
}
