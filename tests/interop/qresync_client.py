#!/usr/bin/env python3
"""A mail client that keeps a local copy of a mailbox's UIDs and flags and
resynchronises it with QRESYNC (RFC 7162), written on Python's imaplib: what a
phone or a desktop client does after reconnecting, at whichever site DNS sends
it to. Every step prints one JSON object; the bytes received from the server are
counted for each.

  qresync_client.py sync   HOST USER PASSWORD STATE   full download into STATE
  qresync_client.py change HOST USER PASSWORD         another client's changes
  qresync_client.py resync HOST USER PASSWORD STATE   QRESYNC from STATE, STATE updated
  qresync_client.py full   HOST USER PASSWORD         a fresh full fetch (no state)
"""

import imaplib
import json
import re
import sys

PORT = 2143
FETCH_RE = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|MODSEQ \((\d+)\)")


class CountingIMAP(imaplib.IMAP4):
    """imaplib, counting every byte read from the server."""

    received = 0

    def read(self, size):
        data = super().read(size)
        self.received += len(data)
        return data

    def readline(self):
        line = super().readline()
        self.received += len(line)
        return line


def connect(host, user, password):
    c = CountingIMAP(host, PORT)
    c.login(user, password)
    return c


def check(typ, data, what):
    if typ != "OK":
        raise SystemExit(f"{what}: {typ} {data}")
    return data


def parse_fetch(line):
    """(uid, sorted flags without \\Recent, modseq) from one FETCH response."""
    uid, flags, modseq = None, None, None
    for m in FETCH_RE.finditer(line):
        if m.group(1):
            uid = int(m.group(1))
        elif m.group(3):
            modseq = int(m.group(3))
        else:
            flags = sorted(f for f in m.group(2).decode().split() if f != "\\Recent")
    return uid, flags, modseq


def untagged(c, name):
    return [d for d in c.untagged_responses.pop(name, []) if d is not None]


def ok_code(c, code):
    """The value of `* OK [CODE value]` among the untagged responses, or None."""
    for d in c.untagged_responses.get("OK", []):
        m = re.match(rb"\[" + code.encode() + rb" (\d+)\]", d or b"")
        if m:
            return int(m.group(1))
    return None


def compact(uids):
    """UIDs as an IMAP sequence set (ranges where consecutive)."""
    out, uids = [], sorted(set(uids))
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        out.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    return ",".join(out)


def expand(uid_set):
    out = []
    for part in uid_set.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def full_fetch(c):
    """Every message's UID and flags, the slow way."""
    check(*c.select("INBOX"), "SELECT")
    uidvalidity = ok_code(c, "UIDVALIDITY")
    modseq = ok_code(c, "HIGHESTMODSEQ")
    uidnext = ok_code(c, "UIDNEXT")
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS)")
    check(typ, data, "UID FETCH")
    view = {}
    for line in data:
        if isinstance(line, bytes):
            uid, flags, _ = parse_fetch(line)
            if uid is not None:
                view[uid] = flags
    return {"uidvalidity": uidvalidity, "highestmodseq": modseq, "uidnext": uidnext, "view": view}


def sync(host, user, password, path):
    c = connect(host, user, password)
    check(*c.enable("QRESYNC"), "ENABLE QRESYNC")
    state = full_fetch(c)
    c.logout()
    with open(path, "w") as f:
        json.dump(state, f)
    print(json.dumps({"bytes": c.received, "messages": len(state["view"]), "highestmodseq": state["highestmodseq"]}))


def change(host, user, password):
    """What another client does meanwhile: reads and labels some messages,
    deletes some, and new mail arrives."""
    c = connect(host, user, password)
    check(*c.select("INBOX"), "SELECT")
    seen = list(range(1, 10_001, 50))
    labelled = list(range(7, 10_001, 97))
    expunged = list(range(5_000, 5_100)) + list(range(1_000, 10_001, 1_000))
    check(*c.uid("STORE", compact(seen), "+FLAGS.SILENT", "(\\Seen)"), "STORE \\Seen")
    check(*c.uid("STORE", compact(labelled), "+FLAGS.SILENT", "($Label1)"), "STORE $Label1")
    check(*c.uid("STORE", compact(expunged), "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
    check(*c._simple_command("UID", "EXPUNGE", compact(expunged)), "UID EXPUNGE")
    appended = []
    for i in range(5):
        message = f"From: news@example.test\r\nSubject: new {i}\r\n\r\nnew mail {i}\r\n".encode()
        typ, data = c.append("INBOX", "(\\Flagged)" if i == 0 else None, None, message)
        check(typ, data, "APPEND")
        m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
        appended.append(int(m.group(1)))
    c.logout()
    print(json.dumps({"seen": seen, "labelled": labelled, "expunged": expunged, "appended": appended}))


def resync(host, user, password, path):
    with open(path) as f:
        state = json.load(f)
    view = {int(k): v for k, v in state["view"].items()}
    c = connect(host, user, password)
    check(*c.enable("QRESYNC"), "ENABLE QRESYNC")
    known = compact(view.keys())
    param = f"(QRESYNC ({state['uidvalidity']} {state['highestmodseq']} {known}))"
    typ, data = c._simple_command("SELECT", "INBOX", param)
    check(typ, data, "SELECT (QRESYNC)")
    c.state = "SELECTED"
    if ok_code(c, "UIDVALIDITY") != state["uidvalidity"]:
        raise SystemExit("UIDVALIDITY changed: a full download would be needed")
    vanished, changed = 0, 0
    for d in untagged(c, "VANISHED"):
        earlier, _, uid_set = d.decode().partition(" ")
        assert earlier == "(EARLIER)", d
        for uid in expand(uid_set):
            vanished += view.pop(uid, None) is not None
    for d in untagged(c, "FETCH"):
        uid, flags, _ = parse_fetch(d)
        view[uid] = flags
        changed += 1
    uidnext = ok_code(c, "UIDNEXT")
    modseq = ok_code(c, "HIGHESTMODSEQ")
    # known-uids named what this client holds: new mail is fetched by UID.
    new = 0
    if uidnext > state["uidnext"]:
        typ, data = c.uid("FETCH", f"{state['uidnext']}:*", "(UID FLAGS)")
        check(typ, data, "UID FETCH new")
        for line in data:
            if isinstance(line, bytes):
                uid, flags, _ = parse_fetch(line)
                if uid is not None and uid >= state["uidnext"]:
                    new += uid not in view
                    view[uid] = flags
    c.logout()
    state.update({"highestmodseq": modseq, "uidnext": uidnext, "view": view})
    with open(path, "w") as f:
        json.dump(state, f)
    print(json.dumps({"bytes": c.received, "vanished": vanished, "changed": changed, "new": new, "view": view}))


def full(host, user, password):
    c = connect(host, user, password)
    state = full_fetch(c)
    c.logout()
    print(json.dumps({"bytes": c.received, "view": state["view"]}))


if __name__ == "__main__":
    step, host, user, password = sys.argv[1:5]
    rest = sys.argv[5:]
    {"sync": sync, "change": change, "resync": resync, "full": full}[step](host, user, password, *rest)
