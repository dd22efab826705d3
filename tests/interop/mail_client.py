#!/usr/bin/env python3
"""A mail user's client for backup tests: Python's smtplib and imaplib, nothing of ours.

    mail_client.py send IP USER TAG...          one message per TAG to USER via the MX at IP:2525
                                                (bodies padded to $PAD_BYTES when set)
    mail_client.py flag IP USER PASSWORD TAG FLAG   add FLAG to the INBOX message whose Subject is TAG
    mail_client.py show IP USER PASSWORD MAILBOX    JSON list of {subject, flags, internaldate, sha256}
    mail_client.py expunge IP USER PASSWORD         delete every message of the INBOX (the attack)
    mail_client.py mailboxes IP USER PASSWORD       JSON list of mailbox names

Every command exits non-zero with the server's answer when the server refuses.
"""
import hashlib
import imaplib
import json
import os
import re
import smtplib
import sys


def imap(ip, user, password):
    conn = imaplib.IMAP4(ip, 2143, timeout=60)
    conn.login(user, password)
    return conn


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def show(conn, mailbox):
    typ, data = conn.select(quote(mailbox), readonly=True)
    if typ != "OK":
        sys.exit(f"SELECT {mailbox}: {typ} {data}")
    if int(data[0]) == 0:
        return []
    typ, data = conn.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    if typ != "OK":
        sys.exit(f"FETCH: {typ} {data}")
    out = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta, body = item[0].decode(), item[1]
        flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
        internaldate = re.search(r'INTERNALDATE "([^"]*)"', meta).group(1)
        subject = re.search(rb"^Subject: (.*?)\r?$", body, re.M).group(1).decode()
        out.append({
            "subject": subject,
            "flags": sorted(f for f in flags if f != "\\Recent"),
            "internaldate": internaldate,
            "sha256": hashlib.sha256(body).hexdigest(),
        })
    return sorted(out, key=lambda m: m["subject"])


def main(argv):
    cmd = argv[1]
    if cmd == "send":
        ip, user, tags = argv[2], argv[3], argv[4:]
        pad = int(os.environ.get("PAD_BYTES", "0"))
        with smtplib.SMTP(ip, 2525, timeout=60) as s:
            s.ehlo("sender.test")
            for tag in tags:
                filler = "".join(f"{tag} line {i:06d} of padding\r\n" for i in range(pad // 32))
                msg = (f"From: sender@remote.test\r\nTo: {user}\r\nSubject: {tag}\r\n"
                       f"Message-ID: <{tag}@remote.test>\r\n\r\nThe body of {tag}.\r\n{filler}")
                s.sendmail("sender@remote.test", [user], msg)
        return
    ip, user, password = argv[2], argv[3], argv[4]
    conn = imap(ip, user, password)
    if cmd == "flag":
        tag, flag = argv[5], argv[6]
        conn.select("INBOX")
        typ, data = conn.search(None, "HEADER", "Subject", tag)
        ids = data[0].split()
        if typ != "OK" or len(ids) != 1:
            sys.exit(f"SEARCH {tag}: {typ} {data}")
        typ, data = conn.store(ids[0].decode(), "+FLAGS", f"({flag})")
        if typ != "OK":
            sys.exit(f"STORE: {typ} {data}")
    elif cmd == "show":
        print(json.dumps(show(conn, argv[5])))
    elif cmd == "expunge":
        typ, data = conn.select("INBOX")
        if int(data[0]) > 0:
            conn.store("1:*", "+FLAGS", "(\\Deleted)")
            typ, data = conn.expunge()
            if typ != "OK":
                sys.exit(f"EXPUNGE: {typ} {data}")
    elif cmd == "mailboxes":
        typ, data = conn.list()
        names = [re.search(rb'"([^"]*)"$|(\S+)$', line).group(0).decode().strip('"') for line in data]
        print(json.dumps(sorted(names)))
    else:
        sys.exit(f"unknown command {cmd}")
    conn.logout()


if __name__ == "__main__":
    main(sys.argv)
