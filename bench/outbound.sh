#!/usr/bin/env bash
# Outbound throughput, measured side by side in one run with one load tool:
#   - stock Postfix (Debian's package) relaying to a sink, and
#   - maildr's three-site lab (every queued message quorum-committed, its body on
#     two sites) delivering from its replicated queue to the same sink.
# The sink is another Postfix instance whose virtual(8) agent writes each message
# into a maildir. The load is Python smtplib: MESSAGES messages of SIZE bytes over
# CONCURRENCY connections (maildr's through submission with STARTTLS and AUTH,
# Postfix's to its port 25 from an allowed network). Printed per system: the rate
# of acceptance (all 250s) and the rate of delivery (from the first submission to
# the last message in the sink's maildir).
#
# Usage: bench/outbound.sh [MESSAGES] [CONCURRENCY] [SIZE]   (2000, 20, 5120)
# Needs root (Postfix drops privileges) and a built maildr (release if present).
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-2000}
CONCURRENCY=${2:-20}
SIZE=${3:-5120}
if [[ -x target/release/maildr ]]; then MAILDR=$(realpath target/release/maildr); else MAILDR=$(realpath target/debug/maildr); fi
MAILDR=${MAILDR_BIN:-$MAILDR}
source tests/interop/checks.sh
if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    install_missing postfix
    service postfix stop >/dev/null 2>&1 || true
fi

SINK_IP=127.155.0.25; SINK_PORT=2526
RELAY_IP=127.155.0.26; RELAY_PORT=2527
NET=127.156
WORK=$(mktemp -d)
chmod 755 "$WORK"
LAB_UP=""
cleanup() {
    if [[ -n "$LAB_UP" ]]; then "$MAILDR" lab down --dir "$WORK/lab" >/dev/null 2>&1 || true; fi
    for p in sink relay; do postfix -c "$WORK/$p/etc" stop >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# postfix_instance NAME IP PORT EXTRA_MAIN_CF: a Postfix of its own in $WORK/NAME
postfix_instance() {
    local d=$WORK/$1
    mkdir -p "$d/etc" "$d/queue" "$d/data" "$d/mail"
    chown postfix "$d/data"; chown mail:mail "$d/mail"
    { postfix_main_cf "$d" "$1.bench.test" "$WORK"; cat <<CF
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
$4
CF
    } > "$d/etc/main.cf"
    postfix_master_cf "$2:$3" > "$d/etc/master.cf"
    postfix -c "$d/etc" start >/dev/null 2>&1
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null && return 0; sleep 0.1; done
    echo "Postfix $1 did not start" >&2; return 1
}

printf 'postfix@remote.test postfix/\nmaildr@remote.test maildr/\n' > "$WORK/mailboxes"
postfix_instance sink "$SINK_IP" "$SINK_PORT" "virtual_mailbox_domains = remote.test
virtual_mailbox_base = $WORK/sink/mail
virtual_mailbox_maps = texthash:$WORK/mailboxes
virtual_uid_maps = static:8
virtual_gid_maps = static:8
virtual_minimum_uid = 8"
echo "remote.test smtp:[$SINK_IP]:$SINK_PORT" > "$WORK/transport"
postfix_instance relay "$RELAY_IP" "$RELAY_PORT" "transport_maps = texthash:$WORK/transport"
"$MAILDR" lab up --net "$NET" --dir "$WORK/lab" --outbound-route "remote.test=$SINK_IP:$SINK_PORT" > /dev/null
LAB_UP=1

# run NAME HOST PORT AUTH(yes|no): load, then wait for every message at the sink
run() {
    python3 - "$1" "$2" "$3" "$4" "$WORK/lab/lab.json" "$WORK/sink/mail/$1/new" "$MESSAGES" "$CONCURRENCY" "$SIZE" <<'PY'
import json, os, smtplib, ssl, sys, threading, time
name, host, port, auth, lab_file, maildir = sys.argv[1:7]
messages, concurrency, size = map(int, sys.argv[7:10])
port = int(port)
lab = json.load(open(lab_file))
probe = next(a for a in lab["accounts"] if a["address"].startswith("probe@"))
sender = probe["address"] if auth == "yes" else "load@bench.test"
filler = ("x" * 70 + "\r\n") * (size // 72 + 1)
next_seq, lock, failed = [0], threading.Lock(), [0]

def worker():
    s = smtplib.SMTP(host, port, timeout=60)
    if auth == "yes":
        ctx = ssl.create_default_context(cafile=lab["ca"]); ctx.check_hostname = False
        s.starttls(context=ctx); s.login(probe["address"], probe["password"])
    while True:
        with lock:
            seq = next_seq[0]; next_seq[0] += 1
        if seq >= messages:
            break
        msg = (f"From: <{sender}>\r\nTo: <{name}@remote.test>\r\nSubject: bench {seq}\r\n"
               f"Message-ID: <{name}-{seq}@bench.test>\r\n\r\n{filler[:size]}")
        for _ in range(60):
            try:
                s.sendmail(sender, [f"{name}@remote.test"], msg); break
            except smtplib.SMTPResponseException as e:
                if e.smtp_code >= 500: failed[0] += 1; break
                time.sleep(0.5)
    s.quit()

start = time.time()
threads = [threading.Thread(target=worker) for _ in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
accepted = time.time() - start
deadline = start + 600
count = 0
while time.time() < deadline:
    count = len(os.listdir(maildir)) if os.path.isdir(maildir) else 0
    if count >= messages - failed[0]:
        break
    time.sleep(0.05)
delivered = time.time() - start
print(f"| {name:<7} | {messages} | {concurrency} | {size} | {messages/accepted:7.0f} | {count/delivered:7.0f} | {count} | {failed[0]} |")
PY
}

echo "| system | messages | concurrency | size | accepted/s | delivered/s | at the sink | refused |"
echo "|---|---|---|---|---|---|---|---|"
run postfix "$RELAY_IP" "$RELAY_PORT" no
SUBMIT=$(python3 -c "import json; s=next(s for s in json.load(open('$WORK/lab/lab.json'))['sites'] if s['role']=='data'); print(s['ip'], s['ports']['submission'])")
run maildr "${SUBMIT% *}" "${SUBMIT#* }" yes
