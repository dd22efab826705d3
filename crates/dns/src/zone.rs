//! The zone builder: committed cluster state in, DNS records out.
//!
//! The control plane decides which data site is primary, which sites are in the MX
//! list and which serial the zone carries; those decisions are committed state. This
//! module turns them into the records every site serves and every provider pushes,
//! so surviving sites answer alike (DESIGN rule 4). It is a pure function of its
//! input.
//!
//! **Never:** read a clock, do I/O, or pick a serial. The serial travels in
//! [`ZoneInput`]; deriving it here (from time, or by counting) would let two sites
//! serve different serials for the same decision.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use maildr_types::Domain;
use serde::Serialize;

/// SOA refresh for secondaries, in seconds. Short: a failover must reach them fast.
pub const SOA_REFRESH_SECS: i32 = 300;
/// SOA retry after a failed refresh, in seconds.
pub const SOA_RETRY_SECS: i32 = 60;
/// SOA expire: how long a secondary serves a zone it cannot refresh, in seconds (14 days).
pub const SOA_EXPIRE_SECS: i32 = 14 * 24 * 3600;
/// MX preference of the first site; each next site gets this much more.
pub const MX_PREFERENCE_STEP: u16 = 10;
/// Most data sites in one zone. Keeps every answer far below the TCP message limit
/// and the MX preferences within `u16`.
pub const SITES_MAX: usize = 64;
/// The owner name label of the address clients use (`mail.<domain>`).
pub const MAIL_LABEL: &str = "mail";
/// The owner name label of the SOA RNAME (`hostmaster.<domain>`).
pub const HOSTMASTER_LABEL: &str = "hostmaster";
/// The SPF policy published at the apex: only the domain's MX hosts send its mail.
pub const SPF_POLICY: &str = "v=spf1 mx -all";

/// One data site and the address it serves mail and DNS on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteAddress {
    /// Site name, a single DNS label (`bj`); becomes `<site>.<domain>`.
    pub site: String,
    /// The site's address; IPv4 gives A records, IPv6 AAAA.
    pub ip: IpAddr,
}

/// Everything a zone is built from; every field was decided by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInput {
    /// The hosted mail domain, also the zone origin.
    pub domain: Domain,
    /// The SOA serial, taken from committed state; never computed here.
    pub serial: u32,
    /// TTL of every record and the SOA minimum (negative caching), in seconds.
    pub ttl_secs: u32,
    /// Every data site, in the order they were configured.
    pub sites: Vec<SiteAddress>,
    /// The site `mail.<domain>` points at; `None` leaves `mail.` out of the zone.
    pub primary: Option<String>,
    /// Site names for MX, in preference order (primary first, decided by the caller).
    pub mx: Vec<String>,
    /// The domain's DKIM key record: (selector, `v=DKIM1; k=…; p=…`), published
    /// as TXT at `<selector>._domainkey.<domain>`.
    pub dkim: Option<(String, String)>,
}

/// Why a [`ZoneInput`] does not make a zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("zone {domain}: no data sites (a zone needs at least one name server)")]
    NoSites { domain: Domain },
    #[error("zone {domain}: {count} data sites, more than the limit of {SITES_MAX}")]
    TooManySites { domain: Domain, count: usize },
    #[error("zone {domain}: site name {site:?} is not usable as a DNS label: {why}")]
    BadSiteName { domain: Domain, site: String, why: &'static str },
    #[error("zone {domain}: site {site:?} is listed twice")]
    DuplicateSite { domain: Domain, site: String },
    #[error("zone {domain}: the {role} names site {site:?}, which is not a data site of this zone")]
    UnknownSite { domain: Domain, role: &'static str, site: String },
    #[error("zone {domain}: site {site:?} appears twice in the MX list")]
    DuplicateMx { domain: Domain, site: String },
    #[error("zone {domain}: name {name:?} is not a valid DNS name: {why}")]
    BadName { domain: Domain, name: String, why: String },
}

/// The records of one hosted domain, keyed by owner name and type.
///
/// Owner names are lower case and fully qualified. Only [`Zone::build`] makes one, so
/// every zone holds an SOA and at least one NS at its apex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    origin: Domain,
    origin_name: Name,
    serial: u32,
    ttl_secs: u32,
    record_sets: BTreeMap<(Name, RecordType), Vec<Record>>,
}

/// What a zone holds for one (name, type) question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The record set of that name and type.
    Records(&'a [Record]),
    /// The name exists but holds no record of that type.
    NoData,
    /// No such name in the zone.
    NxDomain,
}

/// One record as served, for people and the admin API ("DNS records as served").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordView {
    /// Owner name, fully qualified with the trailing dot.
    pub name: String,
    /// Record type mnemonic (`A`, `MX`, ...).
    pub rtype: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Record data in zone-file presentation form.
    pub data: String,
}

impl Zone {
    /// Builds the zone for `input`; refuses sites, a primary or MX entries that do
    /// not add up, naming the offending site.
    pub fn build(input: &ZoneInput) -> Result<Zone, ZoneError> {
        let domain = &input.domain;
        if input.sites.is_empty() {
            return Err(ZoneError::NoSites { domain: domain.clone() });
        }
        if input.sites.len() > SITES_MAX {
            return Err(ZoneError::TooManySites { domain: domain.clone(), count: input.sites.len() });
        }
        let origin_name = domain_name(domain, domain.as_str())?;
        let mut site_names: BTreeMap<&str, (Name, IpAddr)> = BTreeMap::new();
        for site in &input.sites {
            check_site_label(domain, &site.site)?;
            let name = domain_name(domain, &format!("{}.{}", site.site, domain))?;
            if site_names.insert(site.site.as_str(), (name, site.ip)).is_some() {
                return Err(ZoneError::DuplicateSite { domain: domain.clone(), site: site.site.clone() });
            }
        }
        let known = |role: &'static str, site: &str| {
            site_names.get(site).cloned().ok_or_else(|| ZoneError::UnknownSite {
                domain: domain.clone(),
                role,
                site: site.to_string(),
            })
        };
        let primary = input.primary.as_deref().map(|p| known("primary", p)).transpose()?;
        let mut mx_targets = Vec::with_capacity(input.mx.len());
        for (i, site) in input.mx.iter().enumerate() {
            if input.mx[..i].contains(site) {
                return Err(ZoneError::DuplicateMx { domain: domain.clone(), site: site.clone() });
            }
            mx_targets.push(known("MX list", site)?.0);
        }

        let ttl = input.ttl_secs;
        let mut zone = Zone {
            origin: domain.clone(),
            origin_name: origin_name.clone(),
            serial: input.serial,
            ttl_secs: ttl,
            record_sets: BTreeMap::new(),
        };
        let first_site = &input.sites[0].site;
        let mname = match &primary {
            Some((name, _)) => name.clone(),
            None => site_names[first_site.as_str()].0.clone(),
        };
        let rname = domain_name(domain, &format!("{HOSTMASTER_LABEL}.{domain}"))?;
        let soa = SOA::new(mname, rname, input.serial, SOA_REFRESH_SECS, SOA_RETRY_SECS, SOA_EXPIRE_SECS, ttl);
        zone.add(&origin_name, ttl, RData::SOA(soa));
        for site in &input.sites {
            let (name, ip) = &site_names[site.site.as_str()];
            zone.add(&origin_name, ttl, RData::NS(NS(name.clone())));
            zone.add(name, ttl, address(*ip));
        }
        for (i, target) in mx_targets.into_iter().enumerate() {
            let step = u16::try_from(i + 1).expect("MX list is bounded by SITES_MAX");
            zone.add(&origin_name, ttl, RData::MX(MX::new(step * MX_PREFERENCE_STEP, target)));
        }
        zone.add(&origin_name, ttl, RData::TXT(TXT::new(vec![SPF_POLICY.to_string()])));
        if let Some((selector, text)) = &input.dkim {
            check_site_label(domain, selector)?;
            let owner = domain_name(domain, &format!("{selector}._domainkey.{domain}"))?;
            // One TXT character-string holds at most 255 bytes; a 2048-bit RSA key
            // needs two, which verifiers join (RFC 6376 §3.6.2.2).
            let strings = text.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            zone.add(&owner, ttl, RData::TXT(TXT::new(strings)));
        }
        if let Some((_, ip)) = primary {
            let mail = domain_name(domain, &format!("{MAIL_LABEL}.{domain}"))?;
            zone.add(&mail, ttl, address(ip));
        }
        Ok(zone)
    }

    fn add(&mut self, name: &Name, ttl: u32, data: RData) {
        let rtype = data.record_type();
        self.record_sets.entry((name.clone(), rtype)).or_default().push(Record::from_rdata(name.clone(), ttl, data));
    }

    /// The hosted domain.
    pub fn origin(&self) -> &Domain {
        &self.origin
    }

    /// The zone apex as a fully qualified DNS name.
    pub fn origin_name(&self) -> &Name {
        &self.origin_name
    }

    /// The SOA serial the caller decided.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The TTL of every record, in seconds.
    pub fn ttl_secs(&self) -> u32 {
        self.ttl_secs
    }

    /// Every record set, keyed by (lower-case owner name, type), in canonical order.
    pub fn record_sets(&self) -> &BTreeMap<(Name, RecordType), Vec<Record>> {
        &self.record_sets
    }

    /// The zone's SOA record.
    pub fn soa(&self) -> &Record {
        self.record_sets
            .get(&(self.origin_name.clone(), RecordType::SOA))
            .and_then(|set| set.first())
            .expect("Zone::build always adds an SOA at the apex")
    }

    /// The names the zone holds records at (each once, canonical order).
    pub fn names(&self) -> impl Iterator<Item = &Name> {
        let mut last: Option<&Name> = None;
        self.record_sets.keys().map(|(name, _)| name).filter(move |name| {
            let new = last != Some(*name);
            last = Some(*name);
            new
        })
    }

    /// Answers one (name, type) question. `name` may be in any case; it must be
    /// inside this zone (see [`ZoneSet::zone_for`]).
    pub fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup<'_> {
        let name = fqdn_lower(name);
        if let Some(set) = self.record_sets.get(&(name.clone(), rtype)) {
            return Lookup::Records(set);
        }
        // A name exists when it holds records or has a descendant that does (an
        // empty non-terminal, RFC 8020: NXDOMAIN would deny the whole subtree).
        if self.names().any(|held| name.zone_of(held)) {
            Lookup::NoData
        } else {
            Lookup::NxDomain
        }
    }

    /// Every record as served, SOA first, then in canonical order.
    pub fn records_view(&self) -> Vec<RecordView> {
        let soa = self.soa();
        std::iter::once(soa)
            .chain(self.record_sets.values().flatten().filter(|r| r.record_type() != RecordType::SOA))
            .map(RecordView::of)
            .collect()
    }

    /// The zone in zone-file form, for operators.
    pub fn to_text(&self) -> String {
        let mut out = format!("; zone {} serial {}\n", self.origin, self.serial);
        for view in self.records_view() {
            let _ = writeln!(out, "{}\t{}\tIN\t{}\t{}", view.name, view.ttl, view.rtype, view.data);
        }
        out
    }
}

impl RecordView {
    /// The presentation form of one record.
    pub fn of(record: &Record) -> RecordView {
        let data = match &record.data {
            // hickory prints TXT strings bare; zone files quote them.
            RData::TXT(txt) => txt
                .txt_data
                .iter()
                .map(|s| format!("\"{}\"", String::from_utf8_lossy(s).replace('\\', "\\\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        RecordView { name: record.name.to_ascii(), rtype: record.record_type().to_string(), ttl: record.ttl, data }
    }
}

/// The zones of every hosted domain, as one value the server swaps atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneSet {
    zones: BTreeMap<Domain, Zone>,
}

impl ZoneSet {
    /// No zones: a server with this set refuses every question.
    pub fn new() -> ZoneSet {
        ZoneSet::default()
    }

    /// A set holding exactly these zones (a later zone of the same domain wins).
    pub fn from_zones(zones: impl IntoIterator<Item = Zone>) -> ZoneSet {
        let mut set = ZoneSet::new();
        for zone in zones {
            set.insert(zone);
        }
        set
    }

    /// Puts `zone` in the set, replacing (never merging with) the zone of its domain.
    pub fn insert(&mut self, zone: Zone) -> Option<Zone> {
        self.zones.insert(zone.origin.clone(), zone)
    }

    /// Takes a domain's zone out of the set.
    pub fn remove(&mut self, domain: &Domain) -> Option<Zone> {
        self.zones.remove(domain)
    }

    /// The zone of `domain`, if hosted.
    pub fn get(&self, domain: &Domain) -> Option<&Zone> {
        self.zones.get(domain)
    }

    /// Every zone, by domain.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    /// True when no zone is hosted.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zone that is authoritative for `name`: the deepest hosted origin that
    /// `name` is at or below. `None` means the name is outside every hosted zone.
    pub fn zone_for(&self, name: &Name) -> Option<&Zone> {
        self.zones
            .values()
            .filter(|zone| zone.origin_name.zone_of(name))
            .max_by_key(|zone| zone.origin_name.num_labels())
    }

    /// Every record of every zone, zone by zone.
    pub fn records_view(&self) -> Vec<RecordView> {
        self.zones.values().flat_map(Zone::records_view).collect()
    }

    /// The serial of every hosted zone.
    pub fn serials(&self) -> BTreeMap<Domain, u32> {
        self.zones.iter().map(|(domain, zone)| (domain.clone(), zone.serial)).collect()
    }
}

/// True when serial `a` is older than `b` in RFC 1982 serial number arithmetic (so a
/// serial that wrapped past `u32::MAX` is still newer).
pub fn serial_older(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn fqdn_lower(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

fn domain_name(domain: &Domain, text: &str) -> Result<Name, ZoneError> {
    let name = Name::from_utf8(format!("{text}.")).map_err(|e| ZoneError::BadName {
        domain: domain.clone(),
        name: text.to_string(),
        why: e.to_string(),
    })?;
    Ok(fqdn_lower(&name))
}

fn check_site_label(domain: &Domain, site: &str) -> Result<(), ZoneError> {
    let bad = |why| Err(ZoneError::BadSiteName { domain: domain.clone(), site: site.to_string(), why });
    if site.is_empty() || site.len() > 63 {
        return bad("a label holds 1 to 63 bytes");
    }
    if !site.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return bad("only a-z, 0-9 and '-' are allowed");
    }
    if site.starts_with('-') || site.ends_with('-') {
        return bad("a label neither starts nor ends with '-'");
    }
    if site == MAIL_LABEL || site == HOSTMASTER_LABEL {
        return bad("the name is taken by a record maildr publishes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(primary: Option<&str>, mx: &[&str]) -> ZoneInput {
        ZoneInput {
            domain: Domain::parse("example.test").unwrap(),
            serial: 7,
            ttl_secs: 5,
            sites: vec![
                SiteAddress { site: "bj".into(), ip: "127.0.10.1".parse().unwrap() },
                SiteAddress { site: "sh".into(), ip: "127.0.20.1".parse().unwrap() },
                SiteAddress { site: "v6".into(), ip: "::1".parse().unwrap() },
            ],
            primary: primary.map(String::from),
            mx: mx.iter().map(|s| s.to_string()).collect(),
            dkim: None,
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn data(zone: &Zone, owner: &str, rtype: RecordType) -> Vec<String> {
        match zone.lookup(&name(owner), rtype) {
            Lookup::Records(set) => set.iter().map(|r| RecordView::of(r).data).collect(),
            other => panic!("{owner} {rtype}: {other:?}"),
        }
    }

    #[test]
    fn builds_soa_ns_addresses_mail_mx_and_spf() {
        let zone = Zone::build(&input(Some("sh"), &["sh", "bj"])).unwrap();
        assert_eq!(zone.serial(), 7);
        let soa = data(&zone, "example.test.", RecordType::SOA);
        assert_eq!(soa, vec!["sh.example.test. hostmaster.example.test. 7 300 60 1209600 5"]);
        assert_eq!(
            data(&zone, "example.test.", RecordType::NS),
            vec!["bj.example.test.", "sh.example.test.", "v6.example.test."]
        );
        assert_eq!(data(&zone, "bj.example.test.", RecordType::A), vec!["127.0.10.1"]);
        assert_eq!(data(&zone, "v6.example.test.", RecordType::AAAA), vec!["::1"]);
        assert_eq!(data(&zone, "mail.example.test.", RecordType::A), vec!["127.0.20.1"]);
        assert_eq!(data(&zone, "example.test.", RecordType::MX), vec!["10 sh.example.test.", "20 bj.example.test."]);
        assert_eq!(data(&zone, "example.test.", RecordType::TXT), vec!["\"v=spf1 mx -all\""]);
        assert!(zone.record_sets().values().flatten().all(|r| r.ttl == 5));
    }

    #[test]
    fn soa_names_the_first_site_when_there_is_no_primary_and_mail_is_absent() {
        let zone = Zone::build(&input(None, &["bj"])).unwrap();
        assert!(data(&zone, "example.test.", RecordType::SOA)[0].starts_with("bj.example.test. "));
        assert_eq!(zone.lookup(&name("mail.example.test."), RecordType::A), Lookup::NxDomain);
    }

    #[test]
    fn lookup_tells_nodata_from_nxdomain_in_any_case() {
        let zone = Zone::build(&input(Some("bj"), &["bj"])).unwrap();
        assert_eq!(zone.lookup(&name("BJ.Example.TEST"), RecordType::MX), Lookup::NoData);
        assert_eq!(zone.lookup(&name("mail.example.test."), RecordType::AAAA), Lookup::NoData);
        assert_eq!(zone.lookup(&name("nope.example.test."), RecordType::A), Lookup::NxDomain);
        assert!(matches!(zone.lookup(&name("MAIL.example.test"), RecordType::A), Lookup::Records(_)));
    }

    #[test]
    fn refuses_unknown_primary_and_mx_sites() {
        let err = Zone::build(&input(Some("hz"), &["bj"])).unwrap_err();
        assert_eq!(
            err,
            ZoneError::UnknownSite {
                domain: Domain::parse("example.test").unwrap(),
                role: "primary",
                site: "hz".into()
            }
        );
        assert!(err.to_string().contains("\"hz\""), "{err}");
        let err = Zone::build(&input(Some("bj"), &["bj", "hz"])).unwrap_err();
        assert!(matches!(err, ZoneError::UnknownSite { role: "MX list", .. }), "{err}");
        let err = Zone::build(&input(Some("bj"), &["bj", "bj"])).unwrap_err();
        assert!(matches!(err, ZoneError::DuplicateMx { .. }), "{err}");
    }

    #[test]
    fn refuses_bad_duplicate_reserved_and_missing_sites() {
        let mut bad = input(None, &[]);
        bad.sites[1].site = "bj".into();
        assert!(matches!(Zone::build(&bad), Err(ZoneError::DuplicateSite { .. })));
        for site in ["", "Bj", "a.b", "-x", "mail", &"x".repeat(64)] {
            let mut bad = input(None, &[]);
            bad.sites[0].site = site.into();
            assert!(matches!(Zone::build(&bad), Err(ZoneError::BadSiteName { .. })), "{site:?}");
        }
        let mut none = input(None, &[]);
        none.sites.clear();
        assert!(matches!(Zone::build(&none), Err(ZoneError::NoSites { .. })));
        let mut many = input(None, &[]);
        many.sites =
            (0..=SITES_MAX).map(|i| SiteAddress { site: format!("s{i}"), ip: "127.0.0.1".parse().unwrap() }).collect();
        assert!(matches!(Zone::build(&many), Err(ZoneError::TooManySites { .. })));
        many.sites.pop();
        many.mx = many.sites.iter().map(|s| s.site.clone()).collect();
        let zone = Zone::build(&many).expect("SITES_MAX sites, all in MX, is a valid zone");
        let mx = data(&zone, "example.test.", RecordType::MX);
        assert_eq!(mx.len(), SITES_MAX);
        assert!(mx[SITES_MAX - 1].starts_with("640 "), "{}", mx[SITES_MAX - 1]);
    }

    #[test]
    fn view_and_text_show_every_record_soa_first() {
        let zone = Zone::build(&input(Some("bj"), &["bj", "sh"])).unwrap();
        let view = zone.records_view();
        assert_eq!(view[0].rtype, "SOA");
        assert_eq!(view.len(), zone.record_sets().values().map(Vec::len).sum::<usize>());
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json[0]["name"], "example.test.");
        assert_eq!(json[0]["ttl"], 5);
        let text = zone.to_text();
        assert!(text.contains("mail.example.test.\t5\tIN\tA\t127.0.10.1\n"), "{text}");
        assert!(text.contains("example.test.\t5\tIN\tMX\t20 sh.example.test.\n"), "{text}");
    }

    #[test]
    fn zone_set_replaces_a_domain_and_finds_the_deepest_zone() {
        let first = Zone::build(&input(Some("bj"), &["bj", "sh"])).unwrap();
        let mut second_input = input(Some("sh"), &["sh"]);
        second_input.serial = 8;
        let second = Zone::build(&second_input).unwrap();
        let mut sub_input = input(None, &[]);
        sub_input.domain = Domain::parse("sub.example.test").unwrap();
        let sub = Zone::build(&sub_input).unwrap();
        let mut set = ZoneSet::from_zones([first, sub]);
        set.insert(second);
        let zone = set.zone_for(&name("example.test.")).unwrap();
        assert_eq!(zone.serial(), 8);
        assert_eq!(data(zone, "example.test.", RecordType::MX), vec!["10 sh.example.test."]);
        assert_eq!(set.zone_for(&name("x.sub.example.test.")).unwrap().origin().as_str(), "sub.example.test");
        assert!(set.zone_for(&name("example.org.")).is_none());
        assert!(set.zone_for(&name("test.")).is_none());
        assert_eq!(set.serials().len(), 2);
    }

    #[test]
    fn serials_compare_in_rfc1982_arithmetic() {
        assert!(serial_older(1, 2));
        assert!(!serial_older(2, 1));
        assert!(!serial_older(5, 5));
        assert!(serial_older(u32::MAX, 0));
        assert!(!serial_older(0, u32::MAX));
    }

    #[test]
    fn a_dkim_key_is_published_under_its_selector_in_strings_of_at_most_255_bytes() {
        let text = format!("v=DKIM1; k=rsa; p={}", "A".repeat(392));
        let zone =
            Zone::build(&ZoneInput { dkim: Some(("maildr".into(), text.clone())), ..input(Some("bj"), &["bj"]) })
                .unwrap();
        let Lookup::Records(records) = zone.lookup(&name("maildr._domainkey.example.test."), RecordType::TXT) else {
            panic!("no DKIM record")
        };
        let RData::TXT(txt) = &records[0].data else { panic!("not TXT") };
        let strings: Vec<&[u8]> = txt.txt_data.iter().map(|s| s.as_ref()).collect();
        assert_eq!(strings.len(), 2);
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), text.as_bytes());
        let bad = Zone::build(&ZoneInput { dkim: Some(("bad selector".into(), text)), ..input(Some("bj"), &["bj"]) });
        assert!(bad.is_err());
    }
}
