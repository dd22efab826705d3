//! The DNS providers through their public interface: the built-in provider feeding
//! the local server, and the RFC 2136 UPDATE a provider hosted elsewhere is sent.

mod common;

use std::sync::Arc;

use common::zone;
use hickory_proto::op::OpCode;
use hickory_proto::rr::RecordType;
use maildr_dns::{
    BuiltInProvider, DnsProvider, ProviderError, RecordView, Rfc2136Provider, TsigAlgorithm, TsigKey, ZoneSet,
};
use maildr_types::Domain;
use tokio::sync::watch;

#[test]
fn built_in_replaces_the_zone_and_refuses_older_serials() {
    let (tx, rx) = watch::channel(Arc::new(ZoneSet::new()));
    let provider: Arc<dyn DnsProvider> = Arc::new(BuiltInProvider::new(tx.clone()));
    let built_in = BuiltInProvider::new(tx);
    built_in.publish_now(&zone(5, Some("bj"), &["bj", "sh"])).unwrap();
    built_in.publish_now(&zone(6, Some("sh"), &["sh"])).unwrap();
    let domain = Domain::parse("example.test").unwrap();
    assert_eq!(rx.borrow().get(&domain).unwrap(), &zone(6, Some("sh"), &["sh"]));
    let err = built_in.publish_now(&zone(5, Some("bj"), &["bj"])).unwrap_err();
    assert!(matches!(err, ProviderError::StaleSerial { offered: 5, served: 6, .. }), "{err}");
    assert_eq!(rx.borrow().get(&domain).unwrap().serial(), 6, "a refused publish changes nothing");
    assert_eq!(provider.describe(), "built-in");
}

#[test]
fn the_update_deletes_every_managed_rrset_then_adds_the_new_records_without_soa_or_ns() {
    let provider = Rfc2136Provider::new(
        "127.0.0.1:53".parse().unwrap(),
        Domain::parse("example.test").unwrap(),
        Some(TsigKey { name: "k".into(), algorithm: TsigAlgorithm::HmacSha256, secret: vec![1; 32] }),
    )
    .unwrap();
    let message = provider.update_message(&zone(9, None, &["sh"])).unwrap();
    assert_eq!(message.metadata.op_code, OpCode::Update);
    assert_eq!(message.queries[0].name().to_ascii(), "example.test.");
    assert_eq!(message.queries[0].query_type(), RecordType::SOA);
    let updates: Vec<String> = message
        .authorities
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.dns_class, r.record_type(), RecordView::of(r).data))
        .collect();
    let deletes: Vec<&String> = updates.iter().filter(|u| u.contains(" ANY ")).collect();
    assert_eq!(deletes.len(), 8, "MX, TXT and A+AAAA of mail., bj., sh.: {updates:#?}");
    assert!(deletes.iter().any(|d| d.starts_with("mail.example.test. ANY A")), "{updates:#?}");
    let adds: Vec<&String> = updates.iter().filter(|u| u.contains(" IN ")).collect();
    assert_eq!(
        adds,
        vec![
            "example.test. IN MX 10 sh.example.test.",
            "example.test. IN TXT \"v=spf1 mx -all\"",
            "bj.example.test. IN A 127.0.10.1",
            "sh.example.test. IN A 127.0.20.1",
        ],
        "no mail. without a primary, never SOA or NS"
    );
    let first_add = updates.iter().position(|u| u.contains(" IN ")).unwrap();
    assert!(updates[..first_add].iter().all(|u| u.contains(" ANY ")), "deletes come first");
}

#[test]
fn a_zone_outside_the_servers_zone_and_bad_keys_are_refused_before_sending() {
    let provider =
        Rfc2136Provider::new("127.0.0.1:53".parse().unwrap(), Domain::parse("other.test").unwrap(), None).unwrap();
    assert!(matches!(provider.update_message(&zone(1, None, &[])), Err(ProviderError::OutsideZone { .. })));
    let covers = |p: &Rfc2136Provider, d: &str| p.covers(&Domain::parse(d).unwrap());
    assert!(!covers(&provider, "example.test") && covers(&provider, "other.test"));
    assert!(covers(&provider, "mail.other.test") && !covers(&provider, "another.test"));
    let parent =
        Rfc2136Provider::new("127.0.0.1:53".parse().unwrap(), Domain::parse("example.test").unwrap(), None).unwrap();
    assert!(parent.update_message(&zone(1, None, &[])).is_ok());
    let empty = TsigKey { name: "k".into(), algorithm: TsigAlgorithm::HmacSha256, secret: vec![] };
    let err =
        Rfc2136Provider::new("127.0.0.1:53".parse().unwrap(), Domain::parse("example.test").unwrap(), Some(empty))
            .unwrap_err();
    assert!(err.to_string().contains("TSIG key k"), "{err}");
    assert_eq!("HMAC-SHA256".parse::<TsigAlgorithm>(), Ok(TsigAlgorithm::HmacSha256));
    assert!("hmac-md5".parse::<TsigAlgorithm>().is_err());
}
