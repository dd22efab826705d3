//! The admin API of a real single site, driven over the socket by curl.

mod common;

use std::collections::BTreeSet;

use common::{Site, TOKEN};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_right_token_are_refused_with_401() {
    let site = Site::start().await;
    let before = site.commands_applied();
    for (method, path, body) in [
        ("GET", "/api/domains", None),
        ("POST", "/api/domains", Some(r#"{"domain":"example.test"}"#)),
        ("GET", "/metrics", None),
        ("GET", "/api/cluster/status", None),
        ("POST", "/api/cluster/switchover", Some(r#"{"to":"sh"}"#)),
    ] {
        for auth in
            [None, Some("Bearer wrong-token-0123456789abcdef"), Some(&format!("Basic {TOKEN}")[..]), Some("Bearer")]
        {
            let reply = site.call_with(method, path, body, auth).await;
            reply.assert_error(401, None);
            assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"), "{method} {path} {auth:?}");
        }
    }
    assert_eq!(site.commands_applied(), before, "nothing reached the write path");
    assert!(site.contents().starts_with("[]"), "no domain was added");
    // The scheme is case-insensitive (RFC 6750 follows RFC 7235).
    let lower = site.call_with("GET", "/api/domains", None, Some(&format!("bearer {TOKEN}"))).await;
    assert_eq!(lower.status, 200, "{lower:?}");
    for open in ["/api/health/live", "/api/openapi.json"] {
        let reply = site.call_with("GET", open, None, None).await;
        assert_eq!(reply.status, 200, "{open} needs no token: {reply:?}");
    }
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_accounts_and_aliases_are_created_read_back_and_removed() {
    let site = Site::start().await;
    let added = site.call("POST", "/api/domains", Some(r#"{"domain":"Example.TEST"}"#)).await;
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!(added.json()["name"], "example.test", "parsed and folded");
    let domains = site.call("GET", "/api/domains", None).await.json();
    assert_eq!(domains.as_array().unwrap().len(), 1);
    assert_eq!(domains[0]["name"], "example.test");

    let alice = site
        .call(
            "POST",
            "/api/accounts",
            Some(r#"{"address":"Alice@example.test","password":"s3cret pass","quota_bytes":5000}"#),
        )
        .await;
    assert_eq!(alice.status, 201, "{alice:?}");
    assert_eq!(alice.json(), json!({"address": "alice@example.test", "quota_bytes": 5000}), "no password echoed");
    let stored = site.cluster.store().account(&"alice@example.test".parse().unwrap()).unwrap().unwrap();
    assert!(maildr_frontend::verify_password(&stored.password_hash, "s3cret pass"));

    let bob = site.call("POST", "/api/accounts", Some(r#"{"address":"bob@example.test"}"#)).await;
    assert_eq!(bob.status, 201, "{bob:?}");
    let generated = bob.json()["password"].as_str().expect("a generated password is returned").to_string();
    let stored = site.cluster.store().account(&"bob@example.test".parse().unwrap()).unwrap().unwrap();
    assert!(maildr_frontend::verify_password(&stored.password_hash, &generated));
    assert_eq!(stored.quota_bytes, 0, "unlimited by default");

    let read = site.call("GET", "/api/accounts/alice@example.test", None).await;
    assert_eq!(read.status, 200, "{read:?}");
    let read = read.json();
    assert_eq!((read["address"].as_str(), read["quota_bytes"].as_u64()), (Some("alice@example.test"), Some(5000)));
    assert!(read.get("password_hash").is_none() && !read.to_string().contains("argon2"), "never the hash: {read}");
    let listed = site.call("GET", "/api/accounts?domain=example.test", None).await.json();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|a| a["address"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice@example.test", "bob@example.test"]);
    assert_eq!(site.call("GET", "/api/accounts?domain=other.test", None).await.json(), json!([]));

    let quota = site.call("PUT", "/api/accounts/alice@example.test/quota", Some(r#"{"quota_bytes":0}"#)).await;
    assert_eq!((quota.status, quota.json()["quota_bytes"].as_u64()), (200, Some(0)), "{quota:?}");
    let password =
        site.call("PUT", "/api/accounts/alice@example.test/password", Some(r#"{"password":"new one"}"#)).await;
    assert_eq!(password.status, 200, "{password:?}");
    assert!(password.json().get("password").is_none(), "a chosen password is not echoed");
    let stored = site.cluster.store().account(&"alice@example.test".parse().unwrap()).unwrap().unwrap();
    assert!(maildr_frontend::verify_password(&stored.password_hash, "new one"));
    let regenerated = site.call("PUT", "/api/accounts/bob@example.test/password", Some("{}")).await.json();
    let stored = site.cluster.store().account(&"bob@example.test".parse().unwrap()).unwrap().unwrap();
    assert!(maildr_frontend::verify_password(&stored.password_hash, regenerated["password"].as_str().unwrap()));

    let alias =
        site.call("POST", "/api/aliases", Some(r#"{"alias":"team@example.test","target":"alice@example.test"}"#)).await;
    assert_eq!(alias.status, 201, "{alias:?}");
    let alias =
        site.call("POST", "/api/aliases", Some(r#"{"alias":"team@example.test","target":"bob@example.test"}"#)).await;
    assert_eq!(alias.json()["targets"], json!(["alice@example.test", "bob@example.test"]));
    let aliases = site.call("GET", "/api/aliases", None).await.json();
    assert_eq!(
        aliases,
        json!([{"address": "team@example.test", "targets": ["alice@example.test", "bob@example.test"]}])
    );
    let one = site.call("DELETE", "/api/aliases/team@example.test?target=bob@example.test", None).await;
    assert_eq!(one.status, 204, "{one:?}");
    let aliases = site.call("GET", "/api/aliases?domain=example.test", None).await.json();
    assert_eq!(aliases[0]["targets"], json!(["alice@example.test"]));

    for path in ["/api/aliases/team@example.test", "/api/accounts/alice@example.test", "/api/accounts/bob@example.test"]
    {
        let removed = site.call("DELETE", path, None).await;
        assert_eq!(removed.status, 204, "{path}: {removed:?}");
    }
    let removed = site.call("DELETE", "/api/domains/example.test", None).await;
    assert_eq!(removed.status, 204, "{removed:?}");
    assert_eq!(site.contents(), "[]\n[]\n[]");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_name_the_field_and_change_nothing() {
    let site = Site::start().await;
    site.call("POST", "/api/domains", Some(r#"{"domain":"example.test"}"#)).await;
    site.call("POST", "/api/accounts", Some(r#"{"address":"alice@example.test","password":"pw"}"#)).await;
    site.call("POST", "/api/aliases", Some(r#"{"alias":"team@example.test","target":"alice@example.test"}"#)).await;
    let contents = site.contents();

    // Refused before the write path: not even a refused command is applied.
    let long_password = format!(r#"{{"address":"x@example.test","password":"{}"}}"#, "p".repeat(1025));
    let huge = format!(r#"{{"domain":"{}"}}"#, "a".repeat(maildr_api::BODY_BYTES_MAX));
    /// Method, path, body, status, field named.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, Option<&'a str>);
    let invalid: Vec<Case> = vec![
        ("POST", "/api/domains", Some("{not json"), 400, None),
        ("POST", "/api/domains", Some(r#"{"domain":"a.test"} {}"#), 400, None),
        ("POST", "/api/domains", Some("{}"), 422, Some("domain")),
        ("POST", "/api/domains", Some(r#"{"domain":7}"#), 422, Some("domain")),
        ("POST", "/api/domains", Some(r#"{"domain":"a.test","extra":1}"#), 422, Some("extra")),
        ("POST", "/api/domains", Some(r#"{"domain":"no_dots"}"#), 422, Some("domain")),
        ("POST", "/api/domains", Some(&huge), 413, None),
        ("POST", "/api/accounts", Some(r#"{"address":"not an address"}"#), 422, Some("address")),
        ("POST", "/api/accounts", Some(r#"{"address":"x@example.test","password":""}"#), 422, Some("password")),
        ("POST", "/api/accounts", Some(&long_password), 422, Some("password")),
        ("POST", "/api/accounts", Some(r#"{"address":"x@example.test","quota_bytes":-1}"#), 422, Some("quota_bytes")),
        ("PUT", "/api/accounts/alice@example.test/quota", Some(r#"{"quota_bytes":"lots"}"#), 422, Some("quota_bytes")),
        ("PUT", "/api/accounts/alice@example.test/quota", Some("[]"), 422, None),
        ("PUT", "/api/accounts/nobody/quota", Some(r#"{"quota_bytes":1}"#), 422, Some("address")),
        (
            "POST",
            "/api/aliases",
            Some(r#"{"alias":"team@example.test","target":"@example.test"}"#),
            422,
            Some("target"),
        ),
        ("POST", "/api/aliases", Some(r#"{"alias":"team@","target":"alice@example.test"}"#), 422, Some("alias")),
        ("DELETE", "/api/domains/-bad-.test", None, 422, Some("domain")),
        ("GET", "/api/accounts?domain=..", None, 422, Some("domain")),
        ("POST", "/api/cluster/failover", Some(r#"{"to":"hz","by":"ops"}"#), 400, Some("accept_data_loss")),
        ("POST", "/api/cluster/failover", Some(r#"{"to":"hz","by":"","accept_data_loss":true}"#), 422, Some("by")),
        ("GET", "/api/health/history?limit=0", None, 422, Some("limit")),
        ("GET", "/api/health/history?limit=many", None, 400, Some("query")),
        ("GET", "/api/no/such/thing", None, 404, None),
        ("PATCH", "/api/domains", None, 405, None),
    ];
    let applied = site.commands_applied();
    for (method, path, body, status, field) in invalid {
        let reply = site.call(method, path, body).await;
        reply.assert_error(status, field);
        assert_eq!(site.commands_applied(), applied, "{method} {path} reached the write path");
    }

    // Refused by the state: the store says no and nothing changes.
    let refused: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("POST", "/api/domains", Some(r#"{"domain":"EXAMPLE.test"}"#), 409, "already hosted"),
        ("POST", "/api/accounts", Some(r#"{"address":"alice@example.test"}"#), 409, "already exists"),
        ("POST", "/api/accounts", Some(r#"{"address":"team@example.test"}"#), 409, "already an alias"),
        ("POST", "/api/accounts", Some(r#"{"address":"x@elsewhere.test"}"#), 404, "not hosted"),
        ("GET", "/api/accounts/nobody@example.test", None, 404, "no account"),
        ("DELETE", "/api/accounts/nobody@example.test", None, 404, "no account"),
        ("PUT", "/api/accounts/nobody@example.test/password", Some(r#"{"password":"x"}"#), 404, "no account"),
        ("PUT", "/api/accounts/nobody@example.test/quota", Some(r#"{"quota_bytes":1}"#), 404, "no account"),
        ("DELETE", "/api/domains/example.test", None, 409, "still has 1 account(s) and 1 alias(es)"),
        ("DELETE", "/api/domains/elsewhere.test", None, 404, "not hosted"),
        ("DELETE", "/api/aliases/nobody@example.test", None, 404, "does not exist"),
        ("DELETE", "/api/aliases/team@example.test?target=bob@example.test", None, 404, "has no target"),
        (
            "POST",
            "/api/aliases",
            Some(r#"{"alias":"alice@example.test","target":"alice@example.test"}"#),
            409,
            "already an account",
        ),
        (
            "POST",
            "/api/aliases",
            Some(r#"{"alias":"team@example.test","target":"alice@example.test"}"#),
            409,
            "already delivers",
        ),
        (
            "POST",
            "/api/aliases",
            Some(r#"{"alias":"x@example.test","target":"nobody@example.test"}"#),
            409,
            "not a local account",
        ),
    ];
    for (method, path, body, status, says) in refused {
        let reply = site.call(method, path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        let error = reply.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(says), "{method} {path}: {error:?} should say {says:?}");
        assert_eq!(site.contents(), contents, "{method} {path} changed the store");
    }
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_alone_reports_itself_and_refuses_what_needs_other_sites() {
    let site = Site::start().await;
    site.call("POST", "/api/domains", Some(r#"{"domain":"example.test"}"#)).await;
    let status = site.call("GET", "/api/cluster/status", None).await;
    assert_eq!(status.status, 200, "{status:?}");
    let status = status.json();
    assert_eq!((status["site"].as_str(), status["state"].as_str()), (Some("bj"), Some("Leader")));
    assert_eq!(status["applied_index"], 1, "one command applied");
    let members = site.call("GET", "/api/cluster/members", None).await.json();
    assert_eq!(members["leader"], "bj");
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    assert_eq!(members["members"][0]["role"], "data");
    site.call("POST", "/api/cluster/switchover", Some(r#"{"to":"sh"}"#)).await.assert_error(409, None);
    site.call("POST", "/api/cluster/verify", Some(r#"{"messages":true}"#)).await.assert_error(409, None);
    for (method, path, body) in [
        ("GET", "/api/health", None),
        ("GET", "/api/health/history?site=sh&limit=5", None),
        ("GET", "/api/events", None),
        ("GET", "/api/dns/records", None),
        ("POST", "/api/cluster/failover", Some(r#"{"to":"hz","accept_data_loss":true,"by":"ops"}"#)),
    ] {
        let reply = site.call(method, path, body).await;
        reply.assert_error(503, None);
        assert_eq!(reply.json()["error"], "control plane not running");
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
    }
    // No [backup] here: every backup route says so and changes nothing.
    let applied = site.commands_applied();
    for (method, path, body) in [
        ("GET", "/api/backups", None),
        ("POST", "/api/backups", None),
        ("POST", "/api/backups/verify", Some(r#"{"restore_test":true}"#)),
        ("POST", "/api/restore", Some(r#"{"account":"a@example.test","at":"2026-12-01T10:00:00Z"}"#)),
    ] {
        let reply = site.call(method, path, body).await;
        reply.assert_error(503, None);
        assert!(reply.json()["error"].as_str().unwrap().contains("takes no backups"), "{reply:?}");
    }
    // A restore request with a bad field is refused naming it, before anything else.
    site.call("POST", "/api/restore", Some(r#"{"account":"a@example.test","at":"yesterday"}"#))
        .await
        .assert_error(422, Some("at"));
    site.call("POST", "/api/backups/verify", Some(r#"{"backup":"nonsense"}"#)).await.assert_error(422, Some("backup"));
    assert_eq!(site.commands_applied(), applied);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_with_its_schemas() {
    let site = Site::start().await;
    let reply = site.call_with("GET", "/api/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    let doc: Value = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
            listed.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let routes: BTreeSet<String> = [
        "GET /api/openapi.json",
        "GET /api/health/live",
        "GET /api/health",
        "GET /api/health/history",
        "GET /api/events",
        "GET /api/dns/records",
        "GET /api/cluster/status",
        "GET /api/cluster/members",
        "POST /api/cluster/switchover",
        "POST /api/cluster/verify",
        "POST /api/cluster/failover",
        "GET /api/domains",
        "POST /api/domains",
        "DELETE /api/domains/{domain}",
        "GET /api/accounts",
        "POST /api/accounts",
        "GET /api/accounts/{address}",
        "DELETE /api/accounts/{address}",
        "PUT /api/accounts/{address}/password",
        "PUT /api/accounts/{address}/quota",
        "GET /api/aliases",
        "POST /api/aliases",
        "DELETE /api/aliases/{address}",
        "GET /api/faults/services",
        "PUT /api/faults/services/{service}",
        "GET /api/backups",
        "POST /api/backups",
        "POST /api/backups/verify",
        "POST /api/restore",
        "GET /api/queue",
        "POST /api/queue/retry",
        "DELETE /api/queue/{id}",
        "GET /metrics",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(listed, routes);
    // Every route the document lists is served (no 404/405 from the router).
    for route in &routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{domain}", "example.test").replace("{address}", "a@example.test");
        let path = path.replace("{service}", "smtp").replace("{id}", "1");
        let reply = site.call(method, &path, Some("{}")).await;
        assert!(reply.status != 405 && !reply.body.contains("no such endpoint"), "{route}: {reply:?}");
    }
    // Every JSON answer but the document itself has a typed schema (maildr-api-types),
    // so clients can read it without string keys.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let schema = &response["content"]["application/json"]["schema"];
                if status.starts_with('2') && !schema.is_null() && path != "/api/openapi.json" {
                    assert!(
                        schema.get("$ref").is_some() || schema["items"].get("$ref").is_some(),
                        "{method} {path} {status}: {schema}"
                    );
                }
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "SiteStatus",
        "ClusterStatus",
        "VerifyReport",
        "NewAccount",
        "AccountView",
        "FailoverRequest",
        "FailoverReport",
    ] {
        assert!(schemas.contains_key(name), "schema {name} in the document");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_units_in_their_names() {
    let site = Site::start().await;
    site.call("POST", "/api/domains", Some(r#"{"domain":"example.test"}"#)).await;
    let reply = site.call("GET", "/metrics", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    for name in [
        "maildr_site_info{site=\"bj\",role=\"data\",state=\"Leader\"} 1",
        "maildr_is_primary 1",
        "maildr_raft_applied_index 1",
        "maildr_writes_committed_total",
        "maildr_writes_unavailable_total",
        "maildr_body_push_bytes_total",
        "maildr_missing_bodies 0",
    ] {
        assert!(reply.body.contains(name), "{name} in\n{}", reply.body);
    }
    for line in reply.body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("maildr_"), "{line}");
        value.parse::<f64>().unwrap_or_else(|_| panic!("a number in {line}"));
    }
    site.stop().await;
}

#[tokio::test]
async fn a_short_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = maildr_cluster::Cluster::single_site(
        maildr_store::Store::open(dir.path()).unwrap(),
        maildr_cluster::WritePathLimits::default(),
    );
    let settings =
        maildr_api::ApiSettings { listen: "127.0.0.1:0".parse().unwrap(), token: "short".into(), site: "bj".into() };
    let refused = maildr_api::ApiState::new(&settings, cluster, &maildr_config::ClusterSection::default());
    assert!(matches!(refused, Err(maildr_api::ApiError::TokenTooShort(5))));
}
