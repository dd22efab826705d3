//! `maildr dns`: the operator's view of the zones maildr publishes, and a push to a
//! DNS server hosted elsewhere (RFC 2136 with TSIG) from the command line. The zone
//! comes from the same builder the control plane uses, so what this prints is what
//! a site serves for the same decision. [`configured_providers`] builds the same
//! providers from a site's `[[dns.providers]]` for `maildr serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::{Args, Subcommand};
use maildr_dns::{DnsProvider, Rfc2136Provider, SiteAddress, TsigAlgorithm, TsigKey, Zone, ZoneInput};
use maildr_types::Domain;

#[derive(Subcommand)]
pub enum DnsAction {
    /// Print the zone built from these sites, primary and MX list.
    Zone {
        #[command(flatten)]
        zone: ZoneArgs,
        /// Print the records as JSON (the admin API's view) instead of zone-file text.
        #[arg(long)]
        json: bool,
    },
    /// Build the zone and publish it to a DNS server with an RFC 2136 update.
    Push {
        #[command(flatten)]
        zone: ZoneArgs,
        /// The DNS server that accepts updates for the zone (TCP).
        #[arg(long)]
        server: SocketAddr,
        /// TSIG key name as the server knows it; without it the update goes unsigned.
        #[arg(long, requires = "tsig_secret_file")]
        tsig_key_name: Option<String>,
        /// TSIG algorithm: hmac-sha256, hmac-sha384 or hmac-sha512.
        #[arg(long, default_value = "hmac-sha256")]
        tsig_algorithm: TsigAlgorithm,
        /// File holding the TSIG secret in base64.
        #[arg(long, requires = "tsig_key_name")]
        tsig_secret_file: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct ZoneArgs {
    /// The mail domain (the zone origin).
    #[arg(long)]
    zone: Domain,
    /// A data site as NAME=IP; repeat for each site.
    #[arg(long = "site", value_parser = parse_site, required = true)]
    sites: Vec<SiteAddress>,
    /// The site `mail.<zone>` points at; omitted: no `mail.` record.
    #[arg(long)]
    primary: Option<String>,
    /// Sites for MX in preference order, comma-separated (bj,sh).
    #[arg(long, value_delimiter = ',')]
    mx: Vec<String>,
    /// TTL of every record, in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// SOA serial; required for push (the serial belongs to the committed decision).
    #[arg(long)]
    serial: Option<u32>,
}

fn parse_site(raw: &str) -> Result<SiteAddress, String> {
    let (site, ip) = raw.split_once('=').ok_or_else(|| format!("{raw:?} is not NAME=IP"))?;
    let ip = ip.parse().map_err(|e| format!("{raw:?}: {ip:?} is not an IP address: {e}"))?;
    Ok(SiteAddress { site: site.to_string(), ip })
}

impl ZoneArgs {
    fn build(&self, serial: u32) -> Result<Zone> {
        let input = ZoneInput {
            domain: self.zone.clone(),
            serial,
            ttl_secs: self.ttl,
            sites: self.sites.clone(),
            primary: self.primary.clone(),
            mx: self.mx.clone(),
            dkim: None,
        };
        Ok(Zone::build(&input)?)
    }
}

pub fn run(action: DnsAction) -> Result<()> {
    match action {
        DnsAction::Zone { zone, json } => {
            let built = zone.build(zone.serial.unwrap_or(1))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&built.records_view())?);
            } else {
                print!("{}", built.to_text());
            }
            Ok(())
        }
        DnsAction::Push { zone, server, tsig_key_name, tsig_algorithm, tsig_secret_file } => {
            let serial = zone.serial.context("--serial is required for push")?;
            let built = zone.build(serial)?;
            let key = match (tsig_key_name, tsig_secret_file) {
                (Some(name), Some(file)) => {
                    Some(TsigKey { name, algorithm: tsig_algorithm, secret: read_secret(&file)? })
                }
                _ => None,
            };
            let signed = key.as_ref().map(|k| format!("TSIG key {}", k.name)).unwrap_or_else(|| "unsigned".into());
            let provider = Rfc2136Provider::new(server, zone.zone.clone(), key)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(provider.publish(&built)).with_context(|| format!("pushing zone {}", zone.zone))?;
            println!(
                "published zone {} serial {serial} to {server} ({signed}): mail -> {}, MX {}",
                zone.zone,
                zone.primary.as_deref().unwrap_or("(none)"),
                if zone.mx.is_empty() { "(none)".to_string() } else { zone.mx.join(",") },
            );
            Ok(())
        }
    }
}

/// A TSIG secret from a file holding it in base64.
fn read_secret(file: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading TSIG secret file {}", file.display()))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("TSIG secret file {} is not base64", file.display()))
}

/// The external DNS providers of a site's `[[dns.providers]]`, with their secrets
/// read now, so a missing or bad secret file stops the site at start, naming the key.
pub fn configured_providers(dns: &maildr_config::DnsSection) -> Result<Vec<Arc<dyn DnsProvider>>> {
    use maildr_config::{DnsProviderKind, TsigAlgorithmName};
    let mut out: Vec<Arc<dyn DnsProvider>> = Vec::new();
    for (i, p) in dns.providers.iter().enumerate() {
        let algorithm = match p.tsig_algorithm {
            TsigAlgorithmName::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlgorithmName::HmacSha384 => TsigAlgorithm::HmacSha384,
            TsigAlgorithmName::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let secret =
            read_secret(&p.tsig_secret_file).with_context(|| format!("dns.providers[{i}].tsig_secret_file"))?;
        let key = TsigKey { name: p.tsig_key_name.clone(), algorithm, secret };
        match p.kind {
            DnsProviderKind::Rfc2136 => {
                let provider = Rfc2136Provider::new(p.server, p.zone.clone(), Some(key))
                    .with_context(|| format!("dns.providers[{i}] ({} zone {})", p.server, p.zone))?;
                out.push(Arc::new(provider));
            }
        }
    }
    Ok(out)
}
