//! The operator's command line: config example and check, admin commands and their
//! refusals (each leaving the store as it was).

mod common;

use std::process::Command;

use common::*;

fn maildr(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn the_config_example_documents_every_field_and_passes_config_check() {
    let out = maildr(&["config", "example"]);
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    for key in [
        "[site]",
        "[smtp]",
        "[tls]",
        "[store]",
        "mx_listen",
        "message_size_max_bytes",
        "recipients_max",
        "idle_timeout_secs",
    ] {
        assert!(example.contains(key), "example lacks {key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    std::fs::write(&file, &example).unwrap();
    let out = maildr(&["config", "check", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn serve_refuses_a_bad_config_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bj.toml");
    for (text, key, reason) in [
        ("[smtp]\nmx_port = 25\n", "mx_port", "unknown field"),
        ("[smtp]\nrecipients_max = -1\n", "recipients_max", "invalid value"),
        ("[smtp]\nidle_timeout_secs = 0\n", "smtp.idle_timeout_secs", "greater than 0"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = maildr(&["serve", "--config", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("bj.toml") && err.contains(key) && err.contains(reason), "{text:?} gave: {err}");
    }
}

#[test]
fn admin_manages_domains_users_and_aliases() {
    let dir = provisioned_dir();
    let d = dir.path();
    assert_eq!(admin_ok(d, &["domain", "list"], None).trim(), "example.test");
    let users = admin_ok(d, &["user", "list"], None);
    assert!(users.contains("alice@example.test") && users.contains("bob@example.test"), "{users}");
    assert_eq!(admin_ok(d, &["alias", "list"], None).trim(), "sales@example.test\talice@example.test");
    let boxes = admin_ok(d, &["mailboxes", "alice@example.test"], None);
    for name in ["INBOX", "Sent\t\\Sent", "Drafts\t\\Drafts", "Trash\t\\Trash", "Junk\t\\Junk"] {
        assert!(boxes.contains(name), "{name} missing: {boxes}");
    }
    let generated = admin_ok(d, &["user", "add", "carol@example.test"], None);
    assert!(generated.contains("with password "), "{generated}");
    admin_ok(d, &["user", "passwd", "carol@example.test", "--password-stdin"], Some("new-pw\n"));
    admin_ok(d, &["user", "quota", "carol@example.test", "1000000"], None);
    assert!(admin_ok(d, &["user", "list"], None).contains("carol@example.test\tused_bytes=0\tquota_bytes=1000000"));
    admin_ok(d, &["user", "remove", "carol@example.test"], None);
    admin_ok(d, &["alias", "remove", "sales@example.test"], None);
    assert_eq!(admin_ok(d, &["alias", "list"], None).trim(), "");
}

#[test]
fn admin_refusals_say_why_and_change_nothing() {
    let dir = provisioned_dir();
    let d = dir.path();
    let state = || {
        (
            admin_ok(d, &["domain", "list"], None),
            admin_ok(d, &["user", "list"], None),
            admin_ok(d, &["alias", "list"], None),
        )
    };
    let before = state();
    for (args, stdin, why) in [
        (vec!["domain", "add", "example.test"], None, "already hosted"),
        (vec!["domain", "add", "not a domain"], None, "not a valid domain"),
        (vec!["domain", "remove", "example.test"], None, "still has 2 account(s) and 1 alias(es)"),
        (vec!["user", "add", "alice@example.test", "--password-stdin"], Some("x\n"), "already exists"),
        (vec!["user", "add", "zed@unhosted.test", "--password-stdin"], Some("x\n"), "not hosted"),
        (vec!["user", "add", "eve@example.test", "--password-stdin"], Some("\n"), "empty"),
        (vec!["user", "add", "bad address", "--password-stdin"], Some("x\n"), "not a valid mail address"),
        (vec!["alias", "add", "alice@example.test", "bob@example.test"], None, "already an account"),
        (vec!["alias", "add", "fwd@example.test", "someone@gmail.test"], None, "not a local account"),
        (vec!["user", "remove", "nobody@example.test"], None, "no account"),
    ] {
        let out = admin(d, &args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(state(), before);
}

#[test]
fn admin_is_refused_while_the_site_runs() {
    let dir = provisioned_dir();
    let site = SiteProcess::start(dir.path());
    let out = admin(dir.path(), &["user", "list"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in use"), "{err}");
    site.stop();
    assert!(admin(dir.path(), &["user", "list"], None).status.success());
}

#[test]
fn dev_mode_creates_example_test_with_alice_and_bob_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("dev");
    // Dev mode with a config for ephemeral ports, so the test never collides with
    // a developer's own dev site on the fixed lab ports.
    std::fs::create_dir_all(&d).unwrap();
    let config = dir.path().join("dev.toml");
    std::fs::write(&config, "[smtp]\nmx_listen = \"127.0.0.1:0\"\nsubmission_listen = \"127.0.0.1:0\"\nsubmissions_listen = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n").unwrap();
    for round in 0..2 {
        let mut child = Command::new(BIN)
            .args(["serve", "--dev", "--config", config.to_str().unwrap(), "--data-dir", d.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            use std::io::BufRead;
            if out.read_line(&mut line).unwrap() == 0 || line.starts_with("maildr site") {
                break;
            }
            lines.push(line);
        }
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(child.wait().unwrap().success());
        let created: Vec<_> = lines.iter().filter(|l| l.starts_with("created dev account")).collect();
        if round == 0 {
            assert_eq!(created.len(), 2, "{lines:?}");
            assert!(created[0].contains("alice@example.test with password "));
        } else {
            assert!(created.is_empty(), "second start must serve what the directory holds: {lines:?}");
        }
    }
    assert_eq!(admin_ok(&d, &["user", "list"], None).lines().count(), 2);
}

#[test]
fn the_documented_config_example_is_the_generated_one() {
    let generated = String::from_utf8(maildr(&["config", "example"]).stdout).unwrap();
    let doc = std::fs::read_to_string(workspace_root().join("docs/configuration.md")).unwrap();
    assert!(
        doc.contains(generated.trim_end()),
        "docs/configuration.md is stale: paste the output of `maildr config example` into it"
    );
}

#[test]
fn lab_up_refuses_a_dns_provider_file_holding_anything_but_providers_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let provider = "[[dns.providers]]\nkind = \"rfc2136\"\nserver = \"127.0.0.1:53\"\nzone = \"example.test\"\n\
                    tsig_key_name = \"k\"\ntsig_secret_file = \"k.key\"\n";
    for (text, says) in [
        (format!("{provider}[smtp]\nmx_listen = \"127.0.0.1:25\"\n"), "smtp"),
        (provider.replace("rfc2136", "route53"), "route53"),
    ] {
        let file = dir.path().join("providers.toml");
        std::fs::write(&file, text).unwrap();
        let lab = dir.path().join("lab");
        let args = ["lab", "up", "--net", "127.89", "--dir", lab.to_str().unwrap(), "--dns-provider-config"];
        let out = Command::new(BIN).args(args).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("providers.toml") && stderr.contains(says), "{stderr}");
        assert!(!lab.exists(), "nothing was started or written");
    }
}

#[test]
fn drill_commands_take_zh_or_en_and_report_needs_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = out_dir.to_str().unwrap();
    for args in [
        vec!["drill", "run", "site-outage", "--lang", "fr"],
        vec!["drill", "report", "x", "--lang", "zh-CN", "--out", out],
    ] {
        let o = maildr(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("zh or en"), "{args:?}: {err}");
    }
    let o = maildr(&["drill", "report", "--lang", "zh", "--out", out]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("DRILL_ID"), "{}", String::from_utf8_lossy(&o.stderr));
    let data = dir.path().join("drills");
    let o = maildr(&["drill", "report", "no-such-drill", "--data-dir", data.to_str().unwrap(), "--out", out]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such archived drill"));
    assert!(!out_dir.exists(), "nothing written for a drill that is not there");
    // Something that is not a report is refused before anything is written.
    let unknown = dir.path().join("report.json");
    std::fs::write(&unknown, "{\"drill_id\": \"x\", \"from_the_future\": 1}").unwrap();
    let o = maildr(&["drill", "report", "--json", unknown.to_str().unwrap(), "--out", out]);
    assert!(!o.status.success());
    assert!(!out_dir.exists());
}
