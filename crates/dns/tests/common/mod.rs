//! What the DNS tests share: the zone of a two-site lab (bj, sh) of `example.test`.

use maildr_dns::zone::{SiteAddress, Zone, ZoneInput};
use maildr_types::Domain;

/// The zone of `example.test` at `serial` with `mail.` at `primary` and MX `mx`.
pub fn zone(serial: u32, primary: Option<&str>, mx: &[&str]) -> Zone {
    Zone::build(&ZoneInput {
        domain: Domain::parse("example.test").unwrap(),
        serial,
        ttl_secs: 5,
        sites: vec![
            SiteAddress { site: "bj".into(), ip: "127.0.10.1".parse().unwrap() },
            SiteAddress { site: "sh".into(), ip: "127.0.20.1".parse().unwrap() },
        ],
        primary: primary.map(String::from),
        mx: mx.iter().map(|s| s.to_string()).collect(),
        dkim: None,
    })
    .unwrap()
}
