"""Python's imaplib (a client no one here wrote) against a running maildr site.

Usage: imaplib_client.py ENDPOINTS_JSON
Exercises every IMAP command maildr offers, two concurrent sessions, IDLE woken
by SMTP delivery, quota refusals and malformed input. Prints one line per check
and 'N passed, N failed'; exit status 1 when any check failed.
Accounts (made by the calling test): alice/alice-pw, bob/bob-pw,
carol@example.test/carol-pw with a 2000-byte quota.
"""
import contextlib
import imaplib
import json
import re
import smtplib
import socket
import ssl
import sys
import time

from checks import check, report

endpoints = json.load(open(sys.argv[1]))
HOST = "127.0.0.1"
port = lambda kind, name: int(endpoints[kind][name].rsplit(":", 1)[1])
IMAP, IMAPS, MX = port("imap", "imap"), port("imap", "imaps"), port("smtp", "mx")
ctx = ssl.create_default_context(cafile=endpoints["tls_ca"])
ctx.check_hostname = False


def deliver(to, subject, body="hello", sender="carol@outside.test", extra=""):
    with smtplib.SMTP(HOST, MX, timeout=30) as s:
        msg = (f"From: Sender <{sender}>\r\nTo: {to}\r\nCc: cc@outside.test\r\nSubject: {subject}\r\n"
               f"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@test>\r\n{extra}\r\n{body}\r\n")
        s.sendmail(sender, [to], msg)


def login(user="alice@example.test", password="alice-pw"):
    c = imaplib.IMAP4(HOST, IMAP, timeout=30)
    c.login(user, password)
    return c


@contextlib.contextmanager
def session(user="alice@example.test", password="alice-pw"):
    """A logged-in session, logged out however the block ends."""
    c = login(user, password)
    try:
        yield c
    finally:
        c.logout()


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def flat(data):
    return b" ".join(x if isinstance(x, bytes) else b" ".join(x) for x in data if x is not None)


# Mail for alice: three messages with known contents.
deliver("alice@example.test", "first", body="the quick brown fox")
deliver("alice@example.test", "second", body="jumps over the lazy dog", sender="dave@other.test")
deliver("alice@example.test", "third-multipart", extra='MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="zz"\r\n',
        body="--zz\r\nContent-Type: text/plain\r\n\r\nattached words\r\n--zz\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--zz--")


@check("CAPABILITY lists the extensions")
def _():
    c = imaplib.IMAP4(HOST, IMAP, timeout=30)
    caps = set(c.capabilities)
    for cap in ["IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "QUOTA", "ID", "ENABLE", "NAMESPACE", "SPECIAL-USE", "LITERAL+", "UNSELECT", "AUTH=PLAIN"]:
        assert cap in caps, (cap, caps)
    c.logout()


@check("a bad login gets NO [AUTHENTICATIONFAILED] and the session goes on")
def _():
    c = imaplib.IMAP4(HOST, IMAP, timeout=30)
    try:
        c.login("alice@example.test", "wrong")
        raise AssertionError("bad login accepted")
    except imaplib.IMAP4.error as e:
        assert "AUTHENTICATIONFAILED" in str(e), e
    ok(c.noop())
    c.login("alice@example.test", "alice-pw")
    c.logout()


@check("AUTHENTICATE PLAIN logs in")
def _():
    c = imaplib.IMAP4(HOST, IMAP, timeout=30)
    ok(c.authenticate("PLAIN", lambda _: b"\0alice@example.test\0alice-pw"))
    ok(c.select("INBOX"))
    c.logout()


@check("IMAPS with the lab CA, ID and NAMESPACE")
def _():
    c = imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=ctx, timeout=30)
    c.login("bob@example.test", "bob-pw")
    typ, data = c.xatom("ID", '("name" "imaplib")')
    assert typ == "OK"
    assert b"maildr" in flat(c.untagged_responses.get("ID", [])), c.untagged_responses
    data = ok(c.namespace())
    assert b'(("" "/"))' in flat(data), data
    c.logout()


@check("LIST with special-use, LSUB, SUBSCRIBE/UNSUBSCRIBE")
def _():
    c = login()
    listing = flat(ok(c.list('""', "*")))
    for want in [b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk", b"INBOX"]:
        assert want in listing, listing
    ok(c.unsubscribe("Junk"))
    lsub = flat(ok(c.lsub('""', "*")))
    assert b"Junk" not in lsub and b"Sent" in lsub, lsub
    ok(c.subscribe("Junk"))
    assert b"Junk" in flat(ok(c.lsub('""', "*")))
    delim = flat(ok(c.list('""', '""')))
    assert b'"/"' in delim, delim
    c.logout()


@check("CREATE, RENAME, DELETE with hierarchy")
def _():
    with session() as c:
        ok(c.create("Projects/DR"))
        assert b"Projects/DR" in flat(ok(c.list('""', "Projects/*")))
        ok(c.rename("Projects", "Archive"))
        listing = flat(ok(c.list('""', "*")))
        assert b"Archive/DR" in listing and b"Projects" not in listing, listing
        assert flat(ok(c.list('""', "Arch%"))) .count(b"Archive") == 1
        ok(c.delete("Archive/DR"))
        typ, data = c.delete("INBOX")
        assert typ == "NO", data
        typ, data = c.create("Sent")
        assert typ == "NO", data


@check("SELECT reports EXISTS, UIDVALIDITY, UIDNEXT, PERMANENTFLAGS; EXAMINE is read-only")
def _():
    c = login()
    data = ok(c.select("INBOX"))
    assert data == [b"3"], data
    assert c.untagged_responses.get("UIDVALIDITY"), c.untagged_responses
    assert c.untagged_responses.get("UIDNEXT") == [b"4"], c.untagged_responses
    c.close()
    ok(c.select("INBOX", readonly=True))
    typ, data = c.store("1", "+FLAGS", "(\\Flagged)")
    assert typ == "NO", data
    c.logout()


@check("FETCH flags, sizes, envelope, bodystructure and sections; BODY[] sets \\Seen, PEEK does not")
def _():
    c = login()
    ok(c.select("INBOX"))
    data = flat(ok(c.fetch("1:*", "(FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE)")))
    assert data.count(b"RFC822.SIZE") == 3 and b'"first"' in data and b'"dave" "other.test"' in data, data
    bs = flat(ok(c.fetch("3", "(BODYSTRUCTURE)")))
    assert b'"MIXED"' in bs and b'"APPLICATION" "OCTET-STREAM"' in bs, bs
    part = ok(c.fetch("3", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[1]<0.8>)"))
    text = flat(part)
    assert b"attached words" in text and b"Content-Type: application/octet-stream" in text and b"<0>" in text, text
    assert b"\\Seen" not in flat(ok(c.fetch("1", "(FLAGS)")))
    header = flat(ok(c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")))
    assert b"Subject: first" in header and b"Cc:" not in header, header
    full = flat(ok(c.fetch("1", "(BODY[])")))
    assert b"the quick brown fox" in full and b"Received: from" in full, full
    assert b"\\Seen" in flat(ok(c.fetch("1", "(FLAGS)")))
    uid = flat(ok(c.uid("FETCH", "2", "(RFC822.HEADER)")))
    assert b"UID 2" in uid and b"Subject: second" in uid, uid
    binary = flat(ok(c.fetch("3", "(BINARY.PEEK[2])")))
    assert b"\x00\x01\x02\x03" in binary, binary
    c.logout()


@check("STORE +FLAGS, -FLAGS, FLAGS.SILENT and keywords")
def _():
    with session() as c:
        ok(c.select("INBOX"))
        data = flat(ok(c.store("2", "+FLAGS", "(\\Flagged $Important)")))
        assert b"\\Flagged" in data and b"$Important" in data, data
        data = flat(ok(c.store("2", "-FLAGS", "($Important)")))
        assert b"$Important" not in data and b"\\Flagged" in data, data
        typ, data = c.store("2", "+FLAGS.SILENT", "(\\Answered)")
        assert typ == "OK" and data == [None], data
        assert b"\\Answered" in flat(ok(c.fetch("2", "(FLAGS)")))


@check("SEARCH by flags, sets, headers, text, dates, sizes, NOT/OR, CHARSET")
def _():
    c = login()
    ok(c.select("INBOX"))
    s = lambda *crit: ok(c.search(None, *crit))[0].split()
    assert s("ALL") == [b"1", b"2", b"3"]
    assert s("2:*") == [b"2", b"3"]
    assert s("FLAGGED") == [b"2"]
    assert s("UNSEEN") == [b"2", b"3"], s("UNSEEN")
    assert s("FROM", "dave") == [b"2"]
    assert s("TO", "alice@example.test") == [b"1", b"2", b"3"]
    assert s("CC", "cc@outside") == [b"1", b"2", b"3"]
    assert s("SUBJECT", "multipart") == [b"3"]
    assert s("BODY", "lazy") == [b"2"]
    assert s("TEXT", "attached") == [b"3"]
    assert s("HEADER", "Message-ID", "second@test") == [b"2"]
    assert s("SENTON", "3-Mar-2026") == [b"1", b"2", b"3"]
    assert s("SENTBEFORE", "1-Jan-2026") == []
    assert s("SENTSINCE", "1-Jan-2026") == [b"1", b"2", b"3"]
    assert s("SINCE", "1-Jan-2020") == [b"1", b"2", b"3"]
    assert s("BEFORE", "1-Jan-2020") == []
    assert s("LARGER", "10000") == []
    assert s("SMALLER", "10000") == [b"1", b"2", b"3"]
    assert s("NOT", "FLAGGED") == [b"1", b"3"]
    assert s("OR", "FROM", "dave", "SUBJECT", "first") == [b"1", b"2"]
    assert ok(c.search("UTF-8", "SUBJECT", "second"))[0].split() == [b"2"]
    assert ok(c.uid("SEARCH", "UID", "2:3"))[0].split() == [b"2", b"3"]
    c.logout()


@check("APPEND with flags and date answers APPENDUID")
def _():
    c = login()
    typ, data = c.append("Drafts", "(\\Draft \\Seen)", imaplib.Time2Internaldate(1700000000), b"Subject: draft\r\n\r\nunfinished\r\n")
    assert typ == "OK" and b"APPENDUID" in data[0], data
    ok(c.select("Drafts"))
    data = flat(ok(c.fetch("1", "(FLAGS INTERNALDATE)")))
    assert b"\\Draft" in data and b"14-Nov-2023" in data, data
    typ, data = c.append("NoSuchBox", None, None, b"Subject: x\r\n\r\ny\r\n")
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    c.logout()


@check("COPY answers COPYUID; MOVE and EXPUNGE remove with EXPUNGE responses")
def _():
    c = login()
    ok(c.select("INBOX"))
    typ, data = c.copy("1:2", "Trash")
    assert typ == "OK" and b"COPYUID" in data[0], data
    typ, data = c.uid("MOVE", "1", "Junk")
    assert typ == "OK", data
    assert c.untagged_responses.get("EXPUNGE") == [b"1"], c.untagged_responses
    ok(c.select("Trash"))
    ok(c.store("1", "+FLAGS", "(\\Deleted)"))
    data = ok(c.expunge())
    assert data == [b"1"], data
    ok(c.store("1", "+FLAGS", "(\\Deleted)"))
    typ, data = c.uid("EXPUNGE", "999")
    assert typ == "OK"
    assert ok(c.search(None, "ALL"))[0].split() == [b"1"], "UID EXPUNGE outside the set removed nothing"
    c.logout()


@check("STATUS and GETQUOTAROOT")
def _():
    c = login()
    data = flat(ok(c.status("Junk", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")))
    assert re.search(rb"MESSAGES 1 ", data) and b"UIDVALIDITY" in data, data
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK" and b"STORAGE" in flat(data[1]), data
    c.logout()


@check("CONDSTORE: ENABLE, MODSEQ in FETCH, CHANGEDSINCE, UNCHANGEDSINCE gives MODIFIED")
def _():
    c = login()
    typ, data = c._simple_command("ENABLE", "CONDSTORE")
    assert typ == "OK"
    ok(c.select("INBOX"))
    data = flat(ok(c.fetch("1:*", "(MODSEQ)")))
    modseqs = [int(x) for x in re.findall(rb"MODSEQ \((\d+)\)", data)]
    assert modseqs, data
    high = max(modseqs)
    ok(c.store("1", "+FLAGS", "($Cond)"))
    changed = flat(ok(c.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {high})")))
    assert changed.count(b"MODSEQ") == 1 and b"$Cond" in changed, changed
    typ, data = c._simple_command("STORE", "1", f"(UNCHANGEDSINCE {high})", "+FLAGS", "(\\Answered)")
    assert typ == "OK" and b"MODIFIED" in flat(data), (typ, data)
    c.logout()


@check("two sessions: an expunge in one reaches the other at NOOP, never inside FETCH")
def _():
    deliver("bob@example.test", "bob-1")
    deliver("bob@example.test", "bob-2")
    a = login("bob@example.test", "bob-pw")
    b = login("bob@example.test", "bob-pw")
    ok(a.select("INBOX"))
    ok(b.select("INBOX"))
    ok(b.store("1", "+FLAGS", "(\\Deleted)"))
    ok(b.expunge())
    data = ok(a.fetch("1:2", "(UID)"))
    assert "EXPUNGE" not in a.untagged_responses, "EXPUNGE sent during FETCH"
    assert len([d for d in data if d]) == 2, data
    ok(a.noop())
    assert a.untagged_responses.get("EXPUNGE") == [b"1"], a.untagged_responses
    assert ok(a.search(None, "ALL"))[0].split() == [b"1"]
    a.logout(); b.logout()


@check("IDLE: SMTP delivery is pushed as EXISTS")
def _():
    c = login("bob@example.test", "bob-pw")
    ok(c.select("INBOX"))
    tag = c._new_tag()
    c.send(tag + b" IDLE\r\n")
    assert c.readline().startswith(b"+"), "no IDLE continuation"
    c.sock.settimeout(20)
    t0 = time.monotonic()
    smtp = smtplib.SMTP(HOST, MX, timeout=30)
    smtp.sendmail("carol@outside.test", ["bob@example.test"], "Subject: idle-wakeup\r\n\r\nwake up\r\n")
    acked = time.monotonic()  # the 250 after DATA has arrived
    line = c.readline()
    pushed = time.monotonic()
    smtp.quit()
    assert re.match(rb"\* \d+ EXISTS", line), line
    c.send(b"DONE\r\n")
    while True:
        line = c.readline()
        if line.startswith(tag):
            assert b"OK" in line, line
            break
    print(f"     IDLE: 250 to EXISTS in {1000 * (pushed - acked):.2f} ms (SMTP transaction {1000 * (acked - t0):.1f} ms)")
    c.logout()


@check("quota: APPEND beyond quota gets NO [OVERQUOTA], SMTP gets 552 5.2.2")
def _():
    c = login("carol@example.test", "carol-pw")
    typ, data = c.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
    assert typ == "NO" and b"OVERQUOTA" in data[0], data
    with smtplib.SMTP(HOST, MX, timeout=30) as s:
        try:
            s.sendmail("x@outside.test", ["carol@example.test"], "Subject: big\r\n\r\n" + "y" * 3000 + "\r\n")
            raise AssertionError("over-quota delivery accepted")
        except (smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused) as e:
            code = e.smtp_code if hasattr(e, "smtp_code") else list(e.recipients.values())[0][0]
            assert code == 552, e
    ok(c.select("INBOX"))
    assert ok(c.search(None, "ALL")) == [b""]
    c.logout()


@check("malformed commands get BAD and the session goes on; no panic")
def _():
    sock = socket.create_connection((HOST, IMAP), timeout=30)
    f = sock.makefile("rwb")
    f.readline()
    for bad in [b"a1 FETCH (((((\r\n", b"a2 SELECT\r\n", b"a3 LOGIN {99999999999}\r\n", b"\r\n", b"a4 \xff\xfe NOOP\r\n", b"a5 UID FROB 1\r\n"]:
        f.write(bad); f.flush()
        line = f.readline()
        assert b"BAD" in line or b"NO" in line, (bad, line)
    f.write(b"a6 NOOP\r\n"); f.flush()
    assert f.readline().startswith(b"a6 OK")
    f.write(b"a7 LOGOUT\r\n"); f.flush()
    assert f.readline().startswith(b"* BYE")
    sock.close()


@check("LITERAL+ APPEND needs no continuation; UNSELECT leaves the mailbox without expunging")
def _():
    sock = socket.create_connection((HOST, IMAP), timeout=30)
    f = sock.makefile("rwb")
    f.readline()
    msg = b"Subject: literal-plus\r\n\r\nsent in one go\r\n"
    f.write(b"l1 LOGIN bob@example.test bob-pw\r\n"
            b"l2 APPEND Drafts (\\Deleted) {" + str(len(msg)).encode() + b"+}\r\n" + msg + b"\r\n"
            b"l3 SELECT Drafts\r\nl4 UNSELECT\r\nl5 STATUS Drafts (MESSAGES)\r\nl6 LOGOUT\r\n")
    f.flush()
    lines = [f.readline() for _ in range(40)]
    text = b"".join(lines)
    assert b"l2 OK [APPENDUID" in text, text
    assert not any(l.startswith(b"+") for l in lines), "server asked for a continuation"
    assert b"l4 OK" in text, text
    assert re.search(rb"STATUS Drafts \(MESSAGES 1\)", text), text
    sock.close()


report()
