//! The channel's opening, tried the way members, operators and strangers open it:
//! real TCP on loopback, real TLS, certificates issued by `crate::certs`.

use std::path::Path;

use maildr_config::{ClusterMember, ClusterSection, SiteRole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::certs::{create_ca, issue_site_cert};

const SECRET: &str = "0123456789abcdef";

fn members() -> Vec<ClusterMember> {
    [(1, "bj"), (2, "sh"), (3, "hz")]
        .into_iter()
        .map(|(node_id, site)| ClusterMember {
            node_id,
            site: site.into(),
            role: if site == "hz" { SiteRole::Witness } else { SiteRole::Data },
            addr: "127.0.0.1:1".into(),
            mail_ip: None,
        })
        .collect()
}

/// The `[cluster]` security of `site` with certificates from the CA in `ca_dir`
/// (`None`: no certificates) and the secret `secret`.
fn security(dir: &Path, ca_dir: Option<&Path>, site: &str, node_id: u64, secret: Option<&str>) -> ChannelSecurity {
    let mut c = ClusterSection { node_id, members: members(), secret: secret.map(String::from), ..Default::default() };
    if let Some(ca_dir) = ca_dir {
        // Each call issues a fresh certificate into a directory of its own.
        static ISSUED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = ISSUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let issued = issue_site_cert(ca_dir, site, node_id, 30, &dir.join(format!("issued-{n}"))).unwrap();
        c.ca_files = vec![ca_dir.join(crate::certs::CA_CERT_FILE)];
        c.cert_file = Some(issued.cert);
        c.key_file = Some(issued.key);
    }
    ChannelSecurity::from_config(&c).unwrap()
}

/// The security of node `node_id` with the secret and no certificates.
fn with_secret_only(node_id: u64) -> ChannelSecurity {
    let cluster = ClusterSection { node_id, members: members(), secret: Some(SECRET.into()), ..Default::default() };
    ChannelSecurity::from_config(&cluster).unwrap()
}

/// Serve one connection at sh (node 2) with `server`, open it with `client` as
/// `from`; the caller's answer and what the server made of it.
async fn open_once(
    server: ChannelSecurity,
    client: &ChannelSecurity,
    from: Option<NodeId>,
    to: Option<NodeId>,
) -> (Result<(), String>, Option<Caller>) {
    let listener = PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = tokio::spawn(async move {
        let connection = listener.accept().await.unwrap().unwrap();
        handshake(connection, &server, 2, "sh").await.ok().flatten().map(|(_, caller)| caller)
    });
    let opened = match open(&addr, client, "sh", from, to).await {
        Ok(_) => Ok(()),
        Err(OpenError::Refused(reason)) => Err(reason),
        Err(OpenError::Io(e)) => Err(format!("io: {e}")),
    };
    (opened, served.await.unwrap())
}

#[tokio::test]
async fn only_members_with_a_certificate_from_the_cluster_ca_and_the_secret_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (dir.path().join("ca"), dir.path().join("other-ca"));
    create_ca(&ca, "test", 30).unwrap();
    create_ca(&other_ca, "stranger", 30).unwrap();
    let sh = || security(dir.path(), Some(&ca), "sh", 2, Some(SECRET));
    let bj = security(dir.path(), Some(&ca), "bj", 1, Some(SECRET));

    let (opened, caller) = open_once(sh(), &bj, Some(1), Some(2)).await;
    assert_eq!(opened, Ok(()));
    let caller = caller.unwrap();
    assert_eq!((caller.from, caller.site.as_deref()), (Some(1), Some("bj")));
    // An operator's command with bj's certificate reaches whichever node listens.
    let (opened, _) = open_once(sh(), &bj, None, None).await;
    assert_eq!(opened, Ok(()));
    // A site that rejoined under a node id sh does not know keeps its site's name.
    let (opened, _) = open_once(sh(), &bj, Some(4), Some(2)).await;
    assert_eq!(opened, Ok(()));

    // bj's certificate claiming to be hz (node 3): the certificate names another site.
    let (opened, caller) = open_once(sh(), &bj, Some(3), Some(2)).await;
    assert!(opened.as_ref().is_err_and(|r| r.contains("node 3 is site hz")), "{opened:?}");
    assert!(caller.is_none());
    // The right certificate with a wrong secret.
    let wrong = security(dir.path(), Some(&ca), "bj", 1, Some("another secret, 16+"));
    let (opened, caller) = open_once(sh(), &wrong, Some(1), Some(2)).await;
    assert_eq!(opened, Err("wrong cluster secret".into()));
    assert!(caller.is_none());
    // Meant for another node id.
    let (opened, _) = open_once(sh(), &bj, Some(1), Some(7)).await;
    assert!(opened.as_ref().is_err_and(|r| r.contains("not node 7")), "{opened:?}");

    // A certificate for "bj" from another CA: the TLS handshake fails on both ends.
    let stranger = security(dir.path(), Some(&other_ca), "bj", 1, Some(SECRET));
    let (opened, caller) = open_once(sh(), &stranger, Some(1), Some(2)).await;
    assert!(opened.as_ref().is_err_and(|r| r.starts_with("io:")), "{opened:?}");
    assert!(caller.is_none());
    // No certificate at all, even with the secret.
    let plain = security(dir.path(), None, "bj", 1, Some(SECRET));
    let (opened, caller) = open_once(sh(), &plain, Some(1), Some(2)).await;
    assert!(opened.is_err(), "{opened:?}");
    assert!(caller.is_none());
    // And a client that trusts only the other CA does not accept sh as "sh".
    let (opened, _) = open_once(sh(), &stranger, None, None).await;
    assert!(opened.is_err());
}

#[tokio::test]
async fn without_certificates_the_secret_is_proven_never_sent() {
    let sh = || with_secret_only(2);
    let bj = with_secret_only(1);
    let (opened, caller) = open_once(sh(), &bj, Some(1), Some(2)).await;
    assert_eq!(opened, Ok(()));
    assert_eq!(caller.unwrap().from, Some(1));
    // What crosses the link: a Hello whose bytes do not contain the secret.
    let proof = bj.proof(&[9; CHALLENGE_BYTES], Some(1), Some(2)).unwrap();
    let hello = postcard::to_stdvec(&PeerRequest::Hello { proof: Some(proof), from: Some(1), to: Some(2) }).unwrap();
    assert!(!hello.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    // A proof for one challenge does not open another connection (a replay).
    let listener = PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let connection = listener.accept().await.unwrap().unwrap();
        handshake(connection, &sh(), 2, "sh").await.ok().flatten().map(|(_, c)| c)
    });
    let mut stream: PeerStream = Box::new(TcpStream::connect(addr).await.unwrap());
    let _challenge: Option<PeerResponse> = read_frame(&mut stream).await.unwrap();
    let replayed = bj.proof(&[9; CHALLENGE_BYTES], Some(1), Some(2));
    let answer = exchange(&mut stream, &PeerRequest::Hello { proof: replayed, from: Some(1), to: Some(2) }).await;
    assert!(matches!(&answer, Ok(PeerResponse::Refused(r)) if r == "wrong cluster secret"), "{answer:?}");
    assert!(server.await.unwrap().is_none());
}

#[tokio::test]
async fn strangers_are_bounded_before_they_authenticate() {
    let sh = with_secret_only(2);
    let listener = Arc::new(PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap());
    let addr = listener.local_addr().unwrap();
    let accepting = {
        let listener = Arc::clone(&listener);
        let sh = sh.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(Some(connection)) = listener.accept().await {
                    let sh = sh.clone();
                    tokio::spawn(async move { handshake(connection, &sh, 2, "sh").await });
                }
            }
        })
    };
    // One source holds at most UNAUTHENTICATED_PER_SOURCE_MAX silent connections;
    // the next from it is closed at once.
    let mut silent = Vec::new();
    for _ in 0..UNAUTHENTICATED_PER_SOURCE_MAX {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut over = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), over.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "the connection over the limit must be closed: {read:?}");
    // A member from another address still gets in meanwhile.
    let mut member: PeerStream = Box::new(connect_from("127.0.0.2", addr).await);
    let challenge = match read_frame::<PeerResponse>(&mut member).await.unwrap() {
        Some(PeerResponse::Challenge(c)) => c,
        other => panic!("{other:?}"),
    };
    let bj = with_secret_only(1);
    let hello = PeerRequest::Hello { proof: bj.proof(&challenge, Some(1), Some(2)), from: Some(1), to: Some(2) };
    assert!(matches!(exchange(&mut member, &hello).await.unwrap(), PeerResponse::Hello));
    // A Hello larger than the handshake's frame limit is not read.
    let mut framed: PeerStream = Box::new(connect_from("127.0.0.3", addr).await);
    let _ = read_frame::<PeerResponse>(&mut framed).await.unwrap();
    framed.write_all(&(HANDSHAKE_FRAME_MAX_BYTES + 1).to_be_bytes()).await.unwrap();
    framed.write_all(&[0u8; 64]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), framed.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an oversized Hello ends the connection");
    drop(silent);
    accepting.abort();
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn renewed_certificates_and_a_second_ca_are_taken_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create_ca(&d.join("ca1"), "1", 30).unwrap();
    create_ca(&d.join("ca2"), "2", 30).unwrap();
    let old = issue_site_cert(&d.join("ca1"), "bj", 1, 30, &d.join("old")).unwrap();
    let new = issue_site_cert(&d.join("ca2"), "bj", 1, 20, &d.join("new")).unwrap();
    let sh_cert = issue_site_cert(&d.join("ca1"), "sh", 2, 30, &d.join("sh")).unwrap();
    let ca = |n: &str| std::fs::read(d.join(n).join(crate::certs::CA_CERT_FILE)).unwrap();
    // The files the two sites run with; replaced in place below.
    let live = d.join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |from: &crate::certs::Issued| {
        std::fs::copy(&from.cert, live.join("bj.pem")).unwrap();
        std::fs::copy(&from.key, live.join("bj-key.pem")).unwrap();
    };
    install(&old);
    std::fs::write(live.join("sh-trusts.pem"), ca("ca1")).unwrap();
    std::fs::write(live.join("bj-trusts.pem"), [ca("ca1"), ca("ca2")].concat()).unwrap();
    let section = |node_id, trust: &str, cert: &Path, key: &Path| ClusterSection {
        node_id,
        members: members(),
        ca_files: vec![live.join(trust)],
        cert_file: Some(cert.to_path_buf()),
        key_file: Some(key.to_path_buf()),
        ..Default::default()
    };
    let bj = ChannelSecurity::from_config(&section(1, "bj-trusts.pem", &live.join("bj.pem"), &live.join("bj-key.pem")))
        .unwrap();
    let sh = ChannelSecurity::from_config(&section(2, "sh-trusts.pem", &sh_cert.cert, &sh_cert.key)).unwrap();
    assert_eq!(open_once(sh.clone(), &bj, Some(1), Some(2)).await.0, Ok(()));
    assert_eq!(bj.certificate_expires_at(), Some(old.not_after_unix));
    let settle = || tokio::time::sleep(CERT_RELOAD_CHECK_INTERVAL + Duration::from_millis(100));

    // bj renews from the new CA, which sh does not trust yet: refused, no restart.
    install(&new);
    settle().await;
    let (opened, _) = open_once(sh.clone(), &bj, Some(1), Some(2)).await;
    assert!(opened.is_err(), "a certificate from a CA sh does not trust yet: {opened:?}");
    assert_eq!(bj.certificate_expires_at(), Some(new.not_after_unix));
    // sh trusts both CAs (the rollover): accepted again, neither site restarted.
    std::fs::write(live.join("sh-trusts.pem"), [ca("ca1"), ca("ca2")].concat()).unwrap();
    settle().await;
    assert_eq!(open_once(sh.clone(), &bj, Some(1), Some(2)).await.0, Ok(()));
    // A file that does not load keeps the last good settings in use.
    std::fs::write(live.join("bj.pem"), "not a certificate").unwrap();
    settle().await;
    assert_eq!(open_once(sh.clone(), &bj, Some(1), Some(2)).await.0, Ok(()));
    assert_eq!(bj.certificate_expires_at(), Some(new.not_after_unix));
}

#[tokio::test]
async fn the_site_holds_at_most_its_limit_of_silent_connections_and_drops_them_after_the_handshake_deadline() {
    let sh = with_secret_only(2);
    let listener = Arc::new(PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap());
    let addr = listener.local_addr().unwrap();
    let accepting = {
        let listener = Arc::clone(&listener);
        tokio::spawn(async move {
            loop {
                if let Ok(Some(connection)) = listener.accept().await {
                    let sh = sh.clone();
                    tokio::spawn(async move { handshake(connection, &sh, 2, "sh").await });
                }
            }
        })
    };
    // UNAUTHENTICATED_MAX silent connections, each source at its own limit.
    let sources = UNAUTHENTICATED_MAX / UNAUTHENTICATED_PER_SOURCE_MAX;
    let mut silent = Vec::new();
    for source in 0..sources {
        for _ in 0..UNAUTHENTICATED_PER_SOURCE_MAX {
            silent.push(connect_from(&format!("127.0.1.{}", source + 1), addr).await);
        }
    }
    // One more, from a source that holds none: closed at once, the site is full.
    let mut over = connect_from("127.0.2.1", addr).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), over.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "over the global limit: {read:?}");
    // The silent ones had their challenge, then are dropped at the handshake deadline.
    let first = silent.first_mut().unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(HANDSHAKE_TIMEOUT + Duration::from_secs(3), first.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent connection outlived the handshake deadline");
    // Room again: a new connection gets its challenge.
    drop(silent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again: PeerStream = Box::new(connect_from("127.0.2.1", addr).await);
    assert!(matches!(read_frame::<PeerResponse>(&mut again).await.unwrap(), Some(PeerResponse::Challenge(_))));
    accepting.abort();
}

/// Serve every connection to `listener` as a site does (handshake, then requests
/// until the idle limit), answering each request; counts connections accepted.
fn serve_answering(
    listener: PeerListener,
    security: ChannelSecurity,
) -> (Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok(Some(connection)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let security = security.clone();
            tokio::spawn(async move {
                let Ok(Some((mut stream, _))) = handshake(connection, &security, 2, "sh").await else { return };
                while let Ok(Some(_)) = next_request(&mut stream, security.idle_timeout).await {
                    if answer(&mut stream, &PeerResponse::Challenge(vec![7])).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (accepted, task)
}

fn any_request() -> PeerRequest {
    PeerRequest::Hello { proof: None, from: None, to: None }
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_limit_and_a_busy_one_is_not() {
    let idle = Duration::from_millis(800);
    let sh = with_secret_only(2).with_idle_limits(idle, Duration::from_millis(400));
    let listener = PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (_, server) = serve_answering(listener, sh);
    let bj = with_secret_only(1);
    let mut busy = open(&addr, &bj, "sh", Some(1), Some(2)).await.unwrap();
    let mut quiet = open(&addr, &bj, "sh", Some(1), Some(2)).await.unwrap();
    // Busy: a request every half limit, for three limits.
    for _ in 0..6 {
        tokio::time::sleep(idle / 2).await;
        assert!(matches!(exchange(&mut busy, &any_request()).await, Ok(PeerResponse::Challenge(_))));
    }
    // Quiet since the start: long closed.
    let closed = exchange(&mut quiet, &any_request()).await;
    assert!(closed.is_err(), "a connection silent for longer than the idle limit still answered: {closed:?}");
    server.abort();
}

#[tokio::test]
async fn a_pooled_connection_is_reused_within_its_idle_limit_and_replaced_after_it() {
    let pooled = Duration::from_millis(400);
    let sh = with_secret_only(2).with_idle_limits(Duration::from_secs(30), pooled);
    let listener = PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (accepted, server) = serve_answering(listener, sh);
    let bj = with_secret_only(1).with_idle_limits(Duration::from_secs(30), pooled);
    let client = crate::raft::network::PeerClient::new(2, "sh".into(), addr, bj, Some(1));
    let request = any_request();
    let call = || client.call(&request, Duration::from_secs(5), true);
    assert!(call().await.is_ok());
    tokio::time::sleep(pooled / 4).await;
    assert!(call().await.is_ok());
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "reused within the limit");
    tokio::time::sleep(pooled + pooled / 4).await;
    assert!(call().await.is_ok());
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "idle past the limit: a new connection");
    server.abort();
}
