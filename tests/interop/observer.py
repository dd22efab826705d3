#!/usr/bin/env python3
"""An independent observer of a mail deployment's availability: what a client with
an ordinary resolver sees, written with nothing from maildr (Python's smtplib and
imaplib, and a DNS client of its own over UDP).

Every INTERVAL seconds it starts, each in its own thread (at most IN_FLIGHT_MAX in
flight per kind: more than INTERVAL and TIMEOUT let pile up, so probes stuck on a
site that holds them until it knows who leads never stop new ones from starting;
a probe that could not start is counted in "skipped"):
  - an SMTP probe: the domain's MX hosts and their addresses asked of every DNS
    server at once (the first answer wins), then a message to the first MX host
    that takes it (smtplib), a 250 is a success;
  - an IMAP probe: mail.DOMAIN asked the same way, then LOGIN, SELECT INBOX and a
    header FETCH (imaplib).
Each probe is recorded with the wall-clock time of its answer (ms since the epoch):
the 250 to DATA, the FETCH's OK; QUIT and LOGOUT come after and do not count.
When it may (root), it raises its own scheduling priority: on a small machine
busy with the sites and the drill's load, an observer whose threads wait for the
CPU would see recovery late.
It runs until its standard input closes (or --duration passes), then writes
{"smtp": [[at_ms, ok, detail, began_ms], ...], "imap": [...], "skipped": {...}}
to --out.

Usage: observer.py --dns IP:PORT [--dns IP:PORT ...] --domain D --mx-port P
                   --imap-port P --user U --password PW --to ADDR --out FILE
                   [--interval 0.1] [--timeout 3] [--duration 600]
"""
import argparse
import imaplib
import json
import os
import random
import smtplib
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, FIRST_COMPLETED, wait


# Probes of one kind in flight at once: with the default interval (0.1 s) and
# timeout (3 s) at most ~30 are, with DNS asked first.
IN_FLIGHT_MAX = 128


def now_ms():
    return int(time.time() * 1000)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def read_name(msg, pos):
    labels = []
    jumped = False
    end = pos
    for _ in range(128):
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            pointer = struct.unpack(">H", msg[pos:pos + 2])[0] & 0x3FFF
            if not jumped:
                end = pos + 2
            jumped = True
            pos = pointer
            continue
        if length == 0:
            if not jumped:
                end = pos + 1
            return ".".join(labels) + ".", end
        labels.append(msg[pos + 1:pos + 1 + length].decode())
        pos += 1 + length
    raise ValueError("name too long")


def ask_one(server, name, qtype, timeout):
    """One question to one server over UDP: the list of A addresses or MX hosts."""
    qid = random.randrange(65536)
    query = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", qtype, 1)
    host, port = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (host, port))
        while True:
            msg, _ = s.recvfrom(4096)
            if struct.unpack(">H", msg[:2])[0] == qid:
                break
    rid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    if flags & 0xF not in (0, 3):
        raise OSError(f"rcode {flags & 0xF}")
    pos = 12
    for _ in range(qd):
        _, pos = read_name(msg, pos)
        pos += 4
    out = []
    for _ in range(an):
        _, pos = read_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        rdata_at = pos
        pos += rdlen
        if rtype == 1 and qtype == 1:
            out.append(socket.inet_ntoa(msg[rdata_at:rdata_at + 4]))
        elif rtype == 15 and qtype == 15:
            pref = struct.unpack(">H", msg[rdata_at:rdata_at + 2])[0]
            exchange, _ = read_name(msg, rdata_at + 2)
            out.append((pref, exchange))
    if qtype == 15:
        out = [h for _, h in sorted(out)]
    return out


def ask(servers, name, qtype, timeout):
    """Every server at once; the first answer wins (as a resolver that queries in
    parallel does)."""
    pool = ThreadPoolExecutor(max_workers=len(servers))
    try:
        pending = {pool.submit(ask_one, s, name, qtype, timeout) for s in servers}
        last = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    return f.result()
                except Exception as e:  # noqa: BLE001 - any failure: try the others
                    last = e
        raise OSError(f"no DNS server answered {name}: {last}")
    finally:
        # Do not wait for the slower servers: the first answer is the answer.
        pool.shutdown(wait=False)


def smtp_probe(a, seq):
    msg = (f"From: observer <observer@observer.invalid>\r\nTo: <{a.to}>\r\n"
           f"Subject: observer {seq}\r\nMessage-ID: <observer-{seq}-{now_ms()}@observer.invalid>\r\n\r\n"
           f"An independent observer's probe.\r\n")
    hosts = ask(a.dns, a.domain + ".", 15, a.timeout)
    last = "no MX host"
    for host in hosts:
        for ip in ask(a.dns, host, 1, a.timeout):
            try:
                with smtplib.SMTP(ip, a.mx_port, timeout=a.timeout) as s:
                    s.sendmail("observer@observer.invalid", [a.to], msg)
                    # The answer: the 250 to DATA (QUIT follows on leaving).
                    return True, ip, now_ms()
            except smtplib.SMTPResponseException as e:
                last = f"{ip}: {e.smtp_code}"
                if 500 <= e.smtp_code < 600:
                    return False, last, now_ms()
            except (OSError, smtplib.SMTPException) as e:
                last = f"{ip}: {e}"
    return False, last, now_ms()


def imap_probe(a):
    ips = ask(a.dns, f"mail.{a.domain}.", 1, a.timeout)
    if not ips:
        return False, "mail. has no address", now_ms()
    ip = ips[0]
    m = imaplib.IMAP4(ip, a.imap_port, timeout=a.timeout)
    try:
        m.login(a.user, a.password)
        typ, data = m.select("INBOX")
        if typ != "OK":
            return False, f"{ip}: SELECT {typ}", now_ms()
        exists = int(data[0])
        if exists:
            typ, _ = m.fetch(str(exists), "(BODY.PEEK[HEADER])")
            if typ != "OK":
                return False, f"{ip}: FETCH {typ}", now_ms()
        # The answer: the FETCH's OK (LOGOUT follows).
        return True, ip, now_ms()
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001 - the answer is already recorded
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dns", action="append", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--mx-port", type=int, required=True)
    p.add_argument("--imap-port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--duration", type=float, default=600)
    a = p.parse_args()
    a.dns = [(d.rsplit(":", 1)[0], int(d.rsplit(":", 1)[1])) for d in a.dns]
    try:
        os.nice(-10)
    except OSError:
        pass  # not root: the ordinary priority
    results = {"smtp": [], "imap": []}
    skipped = {"smtp": 0, "imap": 0}
    lock = threading.Lock()
    stop = threading.Event()
    in_flight = {"smtp": threading.Semaphore(IN_FLIGHT_MAX), "imap": threading.Semaphore(IN_FLIGHT_MAX)}

    def run(kind, probe):
        began = now_ms()
        try:
            ok, detail, at = probe()
        except Exception as e:  # noqa: BLE001 - every failure is an observation
            ok, detail, at = False, str(e), now_ms()
        with lock:
            results[kind].append([at, ok, str(detail)[:200], began])
        in_flight[kind].release()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    deadline = time.time() + a.duration
    seq = 0
    threads = []
    while not stop.is_set() and time.time() < deadline:
        seq += 1
        for kind, probe in (("smtp", lambda s=seq: smtp_probe(a, s)), ("imap", lambda: imap_probe(a))):
            if in_flight[kind].acquire(blocking=False):
                t = threading.Thread(target=run, args=(kind, probe), daemon=True)
                t.start()
                threads.append(t)
            else:
                skipped[kind] += 1
        threads = [t for t in threads if t.is_alive()]
        stop.wait(a.interval)
    for t in threads:
        t.join(a.timeout * 4)
    with lock:
        for kind in results:
            results[kind].sort()
        results["skipped"] = skipped
        with open(a.out + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(a.out + ".tmp", a.out)


if __name__ == "__main__":
    main()
