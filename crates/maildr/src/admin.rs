//! `maildr admin`: manage domains, accounts and aliases, and inspect what a stopped
//! site's store holds.
//!
//! Changes go through the same commands the servers use, so the admin CLI cannot
//! create a state the servers could not. On a site that is a cluster member, changes
//! are sent to the running site, which commits them through the primary like any
//! other write (a replica's store is written only by Raft). On a single site they are
//! applied to the stopped site's data directory. Reads open the store directly, so
//! they need the site stopped; while `maildr serve` runs, the database lock refuses
//! us with a clear message (the admin API will serve the running case).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use maildr_store::{Command, Store};
use maildr_types::{Clock as _, Domain, EmailAddress, MailboxName, SystemClock};

use maildr_config::SiteConfig;
use maildr_frontend::{generate_password, hash_password};

use crate::cluster_cmd::ControlClient;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Hosted domains.
    Domain {
        #[command(subcommand)]
        action: DomainAction,
    },
    /// Mail accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Alias addresses that deliver to local accounts.
    Alias {
        #[command(subcommand)]
        action: AliasAction,
    },
    /// Mailboxes of an account, with UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and digest.
    Mailboxes { account: String },
    /// Messages in a mailbox of an account.
    Messages {
        account: String,
        #[arg(long, default_value = "INBOX")]
        mailbox: String,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Verify every body, digest, count and reference count; exits 1 on problems.
    Check {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DomainAction {
    Add {
        domain: String,
    },
    List,
    /// Refused while the domain has accounts or aliases.
    Remove {
        domain: String,
    },
    /// Generate the domain's DKIM signing key (replacing any earlier one): its
    /// outgoing mail is signed with it, and each site's DNS publishes the public
    /// half at SELECTOR._domainkey.DOMAIN. Prints the TXT record (for DNS servers
    /// not run by maildr).
    Dkim {
        domain: String,
        /// The selector: a DNS label, new for each key you rotate to.
        #[arg(long, default_value = "maildr")]
        selector: String,
        /// rsa (what every verifier accepts) or ed25519 (RFC 8463).
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
        /// RSA key size.
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u16).range(1024..=4096))]
        bits: u16,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Create an account with its INBOX, Sent, Drafts, Trash and Junk.
    Add {
        address: String,
        /// Read the password from standard input (first line); otherwise one is
        /// generated and printed.
        #[arg(long)]
        password_stdin: bool,
        /// Storage quota in bytes; 0 means unlimited.
        #[arg(long, default_value_t = 0)]
        quota_bytes: u64,
    },
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Set a new password (from standard input, or generated and printed).
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set the storage quota in bytes (0: unlimited).
    Quota { address: String, quota_bytes: u64 },
    /// Remove the account with all its mail.
    Remove { address: String },
}

#[derive(Subcommand)]
pub enum AliasAction {
    /// Make ALIAS deliver to TARGET (a local account); repeat for more targets.
    Add { alias: String, target: String },
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Remove one target, or the whole alias when no target is given.
    Remove { alias: String, target: Option<String> },
}

fn domain(s: &str) -> Result<Domain> {
    Ok(Domain::parse(s)?)
}
fn address(s: &str) -> Result<EmailAddress> {
    Ok(EmailAddress::parse(s)?)
}

fn read_password(from_stdin: bool) -> Result<(String, bool)> {
    if !from_stdin {
        return Ok((generate_password(), true));
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the password from standard input")?;
    let password = input.lines().next().unwrap_or("").to_string();
    if let Err(refused) = maildr_frontend::check_chosen_password(&password) {
        bail!("the password read from standard input is refused: {refused}");
    }
    Ok((password, false))
}

/// Where changes go and reads come from.
enum Target {
    /// A stopped single site's data directory.
    Local(Store),
    /// A running cluster member: changes go through it; reads need it stopped.
    Cluster { client: Box<ControlClient>, data_dir: PathBuf, store: std::cell::OnceCell<Store> },
}

impl Target {
    fn apply(&self, command: Command) -> Result<maildr_store::Applied> {
        match self {
            Target::Local(store) => Ok(store.apply(command)??),
            Target::Cluster { client, .. } => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Ok(runtime.block_on(client.write(command))??)
            }
        }
    }

    fn store(&self) -> Result<&Store> {
        match self {
            Target::Local(store) => Ok(store),
            Target::Cluster { data_dir, store, .. } => {
                if let Some(s) = store.get() {
                    return Ok(s);
                }
                let opened = Store::open(data_dir).context("reads open the store; stop the site first")?;
                Ok(store.get_or_init(|| opened))
            }
        }
    }
}

pub fn run(data_dir: PathBuf, cluster: Option<SiteConfig>, command: AdminCommand) -> Result<()> {
    let store = match cluster {
        Some(config) => Target::Cluster {
            client: Box::new(ControlClient::new(config)?),
            data_dir,
            store: std::cell::OnceCell::new(),
        },
        None => {
            if !data_dir.join(maildr_store::DATABASE_FILE).exists()
                && !matches!(command, AdminCommand::Domain { action: DomainAction::Add { .. } })
            {
                bail!(
                    "{} holds no maildr store (create one with `maildr admin --data-dir DIR domain add DOMAIN`)",
                    data_dir.display()
                );
            }
            Target::Local(Store::open(&data_dir)?)
        }
    };
    let apply = |store: &Target, command| store.apply(command);
    match command {
        AdminCommand::Domain { action } => match action {
            DomainAction::Add { domain: d } => {
                apply(&store, Command::AddDomain { domain: domain(&d)?, at: SystemClock.now() })?;
                println!("added domain {}", domain(&d)?);
            }
            DomainAction::List => {
                for d in store.store()?.domains()? {
                    println!("{}", d.name);
                }
            }
            DomainAction::Remove { domain: d } => {
                apply(&store, Command::RemoveDomain { domain: domain(&d)? })?;
                println!("removed domain {}", domain(&d)?);
            }
            DomainAction::Dkim { domain: d, selector, algorithm, bits } => {
                let d = domain(&d)?;
                let algorithm = match algorithm.as_str() {
                    "ed25519" => maildr_store::DkimAlgorithm::Ed25519Sha256,
                    _ => maildr_store::DkimAlgorithm::RsaSha256,
                };
                let key = maildr_outbound::dkim::generate(algorithm, &selector, usize::from(bits), SystemClock.now())
                    .map_err(anyhow::Error::msg)?;
                let record = key.dns_text();
                apply(&store, Command::SetDkimKey { domain: d.clone(), key })?;
                println!("DKIM key set for {d}; the sites' DNS publishes it as:");
                // Zone-file syntax: strings of at most 255 bytes, which resolvers join.
                let strings: Vec<String> =
                    record.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
                println!("{selector}._domainkey.{d}. IN TXT {}", strings.join(" "));
            }
        },
        AdminCommand::User { action } => match action {
            UserAction::Add { address: a, password_stdin, quota_bytes } => {
                let a = address(&a)?;
                let (password, generated) = read_password(password_stdin)?;
                apply(
                    &store,
                    Command::add_account(a.clone(), hash_password(&password), quota_bytes, SystemClock.now()),
                )?;
                if generated {
                    println!("added account {a} with password {password}");
                } else {
                    println!("added account {a}");
                }
            }
            UserAction::List { domain: d } => {
                let d = d.as_deref().map(domain).transpose()?;
                for account in store.store()?.accounts(d.as_ref())? {
                    let quota = if account.quota_bytes == 0 {
                        "unlimited".to_string()
                    } else {
                        account.quota_bytes.to_string()
                    };
                    println!("{}\tused_bytes={}\tquota_bytes={}", account.address, account.used_bytes, quota);
                }
            }
            UserAction::Passwd { address: a, password_stdin } => {
                let a = address(&a)?;
                let (password, generated) = read_password(password_stdin)?;
                apply(
                    &store,
                    Command::SetPassword {
                        address: a.clone(),
                        password_hash: maildr_frontend::hash_password(&password),
                    },
                )?;
                if generated {
                    println!("new password for {a}: {password}");
                } else {
                    println!("password of {a} changed");
                }
            }
            UserAction::Quota { address: a, quota_bytes } => {
                let a = address(&a)?;
                apply(&store, Command::SetQuota { address: a.clone(), quota_bytes })?;
                println!("quota of {a} set to {quota_bytes} bytes");
            }
            UserAction::Remove { address: a } => {
                let a = address(&a)?;
                apply(&store, Command::RemoveAccount { address: a.clone() })?;
                println!("removed account {a} and its mail");
            }
        },
        AdminCommand::Alias { action } => match action {
            AliasAction::Add { alias, target } => {
                let (alias, target) = (address(&alias)?, address(&target)?);
                apply(&store, Command::AddAlias { alias: alias.clone(), target: target.clone() })?;
                println!("alias {alias} delivers to {target}");
            }
            AliasAction::List { domain: d } => {
                let d = d.as_deref().map(domain).transpose()?;
                for alias in store.store()?.aliases(d.as_ref())? {
                    let targets: Vec<String> = alias.targets.iter().map(|t| t.to_string()).collect();
                    println!("{}\t{}", alias.address, targets.join(","));
                }
            }
            AliasAction::Remove { alias, target } => {
                let alias = address(&alias)?;
                let target = target.as_deref().map(address).transpose()?;
                apply(&store, Command::RemoveAlias { alias: alias.clone(), target })?;
                println!("alias {alias} updated");
            }
        },
        AdminCommand::Mailboxes { account } => {
            let a = address(&account)?;
            let account = store.store()?.account(&a)?.with_context(|| format!("no account {a}"))?;
            println!("NAME\tSPECIAL-USE\tUIDVALIDITY\tUIDNEXT\tHIGHESTMODSEQ\tMESSAGES\tBYTES\tDIGEST");
            for m in store.store()?.mailboxes(account.id)? {
                let special = m.special_use.and_then(|s| s.imap_attribute()).unwrap_or("-");
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    m.name,
                    special,
                    m.uid_validity,
                    m.uid_next,
                    m.highest_modseq,
                    m.message_count,
                    m.size_bytes,
                    m.digest.to_hex()
                );
            }
        }
        AdminCommand::Messages { account, mailbox, json } => {
            let a = address(&account)?;
            let account = store.store()?.account(&a)?.with_context(|| format!("no account {a}"))?;
            let name = MailboxName::parse(&mailbox)?;
            let mailbox = store
                .store()?
                .mailbox_by_name(account.id, &name)?
                .with_context(|| format!("{a} has no mailbox {name}"))?;
            for m in store.store()?.messages(mailbox.id)? {
                let body = store.store()?.blobs().get(&m.body);
                let (subject, message_id) = match &body {
                    Ok(bytes) => {
                        let parsed = mail_parser::MessageParser::default().parse_headers(bytes);
                        (
                            parsed.as_ref().and_then(|p| p.subject().map(str::to_string)),
                            parsed.as_ref().and_then(|p| p.message_id().map(str::to_string)),
                        )
                    }
                    Err(_) => (None, None),
                };
                if json {
                    let line = serde_json::json!({
                        "uid": m.uid.0, "modseq": m.modseq.0, "size_bytes": m.size_bytes,
                        "internal_date": m.internal_date.0, "flags": m.flags.names(), "body_sha256": m.body.to_hex(),
                        "body_present": body.is_ok(), "subject": subject, "message_id": message_id,
                    });
                    println!("{line}");
                } else {
                    println!(
                        "{}\t{}\t{}\t{}",
                        m.uid,
                        m.size_bytes,
                        m.flags.names().join(" "),
                        subject.unwrap_or_default()
                    );
                }
            }
        }
        AdminCommand::Check { json } => {
            let report = store.store()?.check()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} mailboxes, {} messages checked", report.mailboxes, report.messages);
                for p in &report.problems {
                    println!("PROBLEM: {p}");
                }
            }
            if !report.problems.is_empty() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
