"""Thunderbird-like sessions from Python's imaplib (a client no one here wrote)
against a running maildr site: keywords one client sets are announced to another
that keeps INBOX selected (polling with NOOP, or in IDLE) before any FETCH shows
them; and a non-ASCII mailbox is created, listed, filled and selected through
modified UTF-7 names as a desktop client writes them.

Usage: imaplib_keywords_names.py ENDPOINTS_JSON
Account (made by the calling test): alice@example.test/alice-pw. Prints one line
per check and 'N passed, N failed'; exit status 1 when any check failed.
"""
import base64
import imaplib
import json
import re
import smtplib
import sys

from checks import check, report

endpoints = json.load(open(sys.argv[1]))
HOST, IMAP = endpoints["imap"]["imap"].rsplit(":", 1)
MX = int(endpoints["smtp"]["mx"].rsplit(":", 1)[1])
IMAP = int(IMAP)


def mutf7(name):
    """RFC 3501 5.1.3 as a client writes it: printable ASCII as itself ("&" as
    "&-"), every other run as "&" + BASE64 of UTF-16BE with "," for "/" + "-"."""
    out, run = [], []

    def flush():
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode().rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            run.clear()
    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def login():
    c = imaplib.IMAP4(HOST, IMAP, timeout=30)
    c.login("alice@example.test", "alice-pw")
    return c


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def raw(c, command):
    """Send a command on imaplib's connection; every line of the answer, in order."""
    tag = c._new_tag()
    c.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    while True:
        line = c.readline()
        assert line, "connection closed"
        lines.append(line.rstrip(b"\r\n").decode())
        if line.startswith(tag + b" "):
            assert line.startswith(tag + b" OK"), lines
            return lines


def first(lines, pattern):
    """Index of the first line matching `pattern`, or None."""
    return next((i for i, l in enumerate(lines) if re.search(pattern, l)), None)


def announced_before_shown(lines, keyword):
    """FLAGS and PERMANENTFLAGS list `keyword` before the first FETCH that shows it."""
    flags = first(lines, r"^\* FLAGS \(.*" + re.escape(keyword))
    permanent = first(lines, r"^\* OK \[PERMANENTFLAGS \(.*" + re.escape(keyword))
    fetch = first(lines, r"^\* \d+ FETCH .*" + re.escape(keyword))
    assert fetch is not None, ("no FETCH showed", keyword, lines)
    assert flags is not None and flags < fetch, ("FLAGS not announced first", keyword, lines)
    assert permanent is not None and permanent < fetch, ("PERMANENTFLAGS not announced first", keyword, lines)


with smtplib.SMTP(HOST, MX, timeout=30) as s:
    for i in range(3):
        s.sendmail("sender@outside.test", ["alice@example.test"], f"Subject: kw-{i}\r\n\r\nbody {i}\r\n")


@check("a desktop session polling INBOX with NOOP is told of $Label1 (FLAGS, PERMANENTFLAGS) before the FETCH that shows it")
def _():
    desk, other = login(), login()
    lines = raw(desk, "SELECT INBOX")
    assert "$Label1" not in lines[first(lines, r"^\* FLAGS")], lines
    ok(other.select("INBOX"))
    ok(other.store("1", "+FLAGS", "($Label1)"))
    announced_before_shown(raw(desk, "NOOP"), "$Label1")
    desk.logout(); other.logout()


@check("a desktop session in IDLE is told of $Forwarded (FLAGS, PERMANENTFLAGS) before the FETCH that shows it")
def _():
    desk, other = login(), login()
    ok(desk.select("INBOX"))
    tag = desk._new_tag()
    desk.send(tag + b" IDLE\r\n")
    assert desk.readline().startswith(b"+"), "no IDLE continuation"
    ok(other.select("INBOX"))
    ok(other.store("2", "+FLAGS", "($Forwarded)"))
    desk.sock.settimeout(20)
    lines = []
    while first(lines, r"^\* \d+ FETCH .*\$Forwarded") is None:
        line = desk.readline()
        assert line, ("connection closed in IDLE", lines)
        lines.append(line.rstrip(b"\r\n").decode())
    announced_before_shown(lines, "$Forwarded")
    desk.send(b"DONE\r\n")
    while not desk.readline().startswith(tag + b" OK"):
        pass
    desk.logout(); other.logout()


@check("a new session's SELECT lists every keyword in use, in FLAGS and PERMANENTFLAGS")
def _():
    c = login()
    lines = raw(c, "SELECT INBOX")
    for keyword in ["$Label1", "$Forwarded"]:
        assert keyword in lines[first(lines, r"^\* FLAGS")], lines
        assert keyword in lines[first(lines, r"PERMANENTFLAGS")], lines
    c.logout()


JAPANESE = "日本語"
NESTED = "Projekte/Übersicht & Pläne"


@check("a non-ASCII mailbox is created, listed, filled, counted and selected in modified UTF-7")
def _():
    c = login()
    assert mutf7(JAPANESE) == "&ZeVnLIqe-"
    ok(c.create(mutf7(JAPANESE)))
    ok(c.create('"' + mutf7(NESTED) + '"'))
    listed = b" ".join(ok(c.list('""', "*")))
    assert b"&ZeVnLIqe-" in listed and mutf7(NESTED).encode() in listed, listed
    assert JAPANESE.encode() not in listed, "names on the wire are 7-bit"
    ok(c.append(mutf7(JAPANESE), None, None, b"Subject: nihongo\r\n\r\nbody\r\n"))
    status = ok(c.status(mutf7(JAPANESE), "(MESSAGES)"))[0]
    assert status == b"&ZeVnLIqe- (MESSAGES 1)", status
    assert ok(c.select(mutf7(JAPANESE)))[0] == b"1"
    ok(c.copy("1", '"' + mutf7(NESTED) + '"'))
    assert ok(c.select('"' + mutf7(NESTED) + '"'))[0] == b"1"
    c.logout()


@check("a name that is not modified UTF-7 gets BAD and creates nothing")
def _():
    c = login()
    before = ok(c.list('""', "*"))
    for bad in ["&ZeVnLIqe", "&AGE-", "&ZeU-&Z2w-"]:
        try:
            c.create(bad)
            raise AssertionError(f"{bad} accepted")
        except imaplib.IMAP4.error as e:
            assert "modified UTF-7" in str(e), e
    assert ok(c.list('""', "*")) == before
    c.logout()


report()
