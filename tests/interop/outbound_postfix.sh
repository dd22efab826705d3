#!/usr/bin/env bash
# Outbound mail to a real peer no one here wrote: stock Postfix from Debian's
# packages is the MX of remote.test on a loopback address and a non-standard port
# (its virtual(8) agent writes each message into a maildir), and a three-site lab
# routes remote.test there (`lab up --outbound-route`). Checked:
#   - messages submitted through maildr (Python smtplib, STARTTLS, AUTH) arrive at
#     the peer, each tag exactly once, and nothing of them stays in the queue;
#   - with a DKIM key made by `maildr admin domain dkim`, the lab's own DNS
#     publishes the key and Python's dkimpy (PyPI) verifies the signature of a
#     message as the peer received it;
#   - with the peer stopped they wait in the replicated queue (`maildr queue list
#     --json` and `GET /api/queue` show them, with the connection error; /metrics
#     their number and age) and go out once it is back;
#   - a recipient the peer refuses (550) gives the sender a delivery status
#     notification (RFC 3464) in their INBOX, read with imaplib;
#   - mail from the Postfix peer to maildr's MX carries an Authentication-Results
#     header with SPF pass (remote.test's SPF record, served by Knot, which the
#     lab's sites ask: `lab up --resolver`), DKIM none (the peer signs nothing) and
#     DMARC pass (aligned SPF);
#   - 500 messages submitted while the peer is down, then the primary killed, then
#     the peer back: every one arrives (duplicates counted and reported, none
#     missing), handed over by the new primary (its EHLO name in Postfix's
#     Received header).
# Needs root (Postfix drops privileges), python3, a built maildr.
set -euo pipefail
cd "$(dirname "$0")/../.."
MAILDR=$(realpath "${MAILDR:-target/debug/maildr}")
source tests/interop/checks.sh

if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    install_missing postfix
    service postfix stop >/dev/null 2>&1 || true
fi
if ! command -v knotd >/dev/null; then
    install_missing knot
    service knot stop >/dev/null 2>&1 || true
fi
python3 -c "import dkim, dns.resolver" 2>/dev/null || python3 -m pip install -q dkimpy dnspython

NET=127.153
PEER_IP=127.151.0.25
PEER_PORT=2526
WORK=$(mktemp -d)
chmod 755 "$WORK"
LAB=$WORK/lab
PEER=$WORK/peer
LAB_UP=""
KNOT_PID=""
DNS_IP=127.151.0.53
cleanup() {
    if [[ -n "$LAB_UP" ]]; then "$MAILDR" lab down --dir "$LAB" >/dev/null 2>&1 || true; fi
    if [[ -n "$KNOT_PID" ]] && kill -0 "$KNOT_PID" 2>/dev/null; then kill -TERM "$KNOT_PID"; wait "$KNOT_PID" || true; fi
    postfix -c "$PEER/etc" stop >/dev/null 2>&1 || true
    if [[ -f "$PEER/queue/pid/master.pid" ]]; then kill -9 "$(tr -dc 0-9 < "$PEER/queue/pid/master.pid")" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- remote.test's DNS
mkdir -p "$WORK/knot/run" "$WORK/knot/db" "$WORK/knot/zones"
cat > "$WORK/knot/zones/remote.test.zone" <<ZONE
\$ORIGIN remote.test.
\$TTL 60
@      SOA ns.remote.test. hostmaster.remote.test. 1 300 60 1209600 5
@      NS  ns.remote.test.
ns     A   $DNS_IP
mx     A   $PEER_IP
@      MX  10 mx.remote.test.
@      TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc TXT "v=DMARC1; p=reject"
ZONE
cat > "$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot/run"
    listen: $DNS_IP@53
control:
    listen: "$WORK/knot/run/knot.sock"
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot/db"
template:
  - id: default
    storage: "$WORK/knot/zones"
    file: "%s.zone"
zone:
  - domain: remote.test
  # The parent too, so a DMARC tree walk past remote.test gets NXDOMAIN (as
  # from a real TLD), not a refusal.
  - domain: test
CONF
cat > "$WORK/knot/zones/test.zone" <<ZONE
\$ORIGIN test.
\$TTL 60
@      SOA ns.remote.test. hostmaster.remote.test. 1 300 60 1209600 5
@      NS  ns.remote.test.
remote NS  ns.remote.test.
ZONE
knotd --config "$WORK/knot/knot.conf" 2> "$WORK/knotd.log" &
KNOT_PID=$!
for _ in $(seq 1 100); do
    [[ -n "$(dig @$DNS_IP +short +time=1 +tries=1 remote.test TXT 2>/dev/null || true)" ]] && break
    sleep 0.1
done

# ---------------------------------------------------------------- the peer
mkdir -p "$PEER/etc" "$PEER/queue" "$PEER/data" "$PEER/mail"
chown postfix "$PEER/data"
chown mail:mail "$PEER/mail"
{ postfix_main_cf "$PEER" "mx.remote.test" "$WORK"; cat <<CF
virtual_mailbox_domains = remote.test
virtual_mailbox_base = $PEER/mail
virtual_mailbox_maps = texthash:$PEER/mailboxes
virtual_uid_maps = static:8
virtual_gid_maps = static:8
virtual_minimum_uid = 8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = none
smtp_tls_security_level = may
transport_maps = texthash:$PEER/transport
CF
} > "$PEER/etc/main.cf"
postfix_master_cf "$PEER_IP:$PEER_PORT" > "$PEER/etc/master.cf"
echo "carol@remote.test carol/" > "$PEER/mailboxes"
# Mail from remote.test to example.test goes to the lab's MX (written once the
# lab is up; Postfix reads texthash tables when a process starts).
: > "$PEER/transport"
peer_start() {
    postfix -c "$PEER/etc" start >/dev/null 2>&1
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$PEER_IP/$PEER_PORT") 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
peer_stop() { postfix -c "$PEER/etc" stop >/dev/null 2>&1; }
peer_start && ok "Postfix answers for remote.test on $PEER_IP:$PEER_PORT" || { fail "Postfix did not start"; cat "$PEER/maillog" || true; exit 1; }

# ---------------------------------------------------------------- the lab
peer_stop
"$MAILDR" lab up --net "$NET" --dir "$LAB" --outbound-route "remote.test=$PEER_IP:$PEER_PORT" --resolver "$DNS_IP:53" > /dev/null
LAB_UP=1
ok "lab up with outbound to remote.test through $PEER_IP:$PEER_PORT"
CONFIG=$(python3 -c "import json; print(json.load(open('$LAB/lab.json'))['sites'][0]['config'])")
MX_AT=$(python3 -c "import json; s=json.load(open('$LAB/lab.json'))['sites'][0]; print(f\"{s['ip']}:{s['ports']['smtp']}\")")
echo "example.test smtp:[${MX_AT%:*}]:${MX_AT#*:}" > "$PEER/transport"
peer_start || { fail "Postfix did not start again"; exit 1; }

# submit TAG... : one message per tag from probe@ to carol@remote.test (or TO=...)
submit() {
    python3 - "$LAB/lab.json" "${TO:-carol@remote.test}" "$@" <<'PY'
import json, smtplib, ssl, sys, time
lab = json.load(open(sys.argv[1]))
to, tags = sys.argv[2], sys.argv[3:]
probe = next(a for a in lab["accounts"] if a["address"].startswith("probe@"))
site = next(s for s in lab["sites"] if s["role"] == "data")
ctx = ssl.create_default_context(cafile=lab["ca"])
ctx.check_hostname = False

def session():
    s = smtplib.SMTP(site["ip"], site["ports"]["submission"], timeout=30)
    s.starttls(context=ctx)
    s.login(probe["address"], probe["password"])
    return s

s = session()
for tag in tags:
    msg = (f"From: <{probe['address']}>\r\nTo: <{to}>\r\nSubject: outbound {tag}\r\n"
           f"Message-ID: <{tag}@example.test>\r\nX-Tag: {tag}\r\n\r\nhello from maildr {tag}\r\n")
    # As a mail client does: a 4xx is tried again (a site still catching up
    # after the lab started defers), a 5xx is not.
    deadline = time.time() + 30
    while True:
        try:
            s.sendmail(probe["address"], [to], msg)
            break
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
            codes = [c for c, _ in e.recipients.values()] if isinstance(e, smtplib.SMTPRecipientsRefused) else [e.smtp_code]
            if any(c >= 500 for c in codes) or time.time() > deadline:
                raise
            time.sleep(0.5)
            try:
                s.rset()
            except (smtplib.SMTPServerDisconnected, OSError):
                s = session()
        except (smtplib.SMTPServerDisconnected, OSError):
            if time.time() > deadline:
                raise
            time.sleep(0.5)
            s = session()
s.quit()
PY
}
# count TAG: how many messages carrying TAG the peer holds
count() { grep -rl "^X-Tag: $1\$" "$PEER/mail/carol" 2>/dev/null | wc -l; }
# wait_for TAG... : every tag arrived (60 s at most)
wait_for() {
    local tag
    for _ in $(seq 1 600); do
        local all=1
        for tag in "$@"; do [[ $(count "$tag") -ge 1 ]] || { all=0; break; }; done
        (( all )) && return 0
        sleep 0.1
    done
    return 1
}
queue_total_at() { "$MAILDR" queue list --config "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['total'])"; }
queue_total() { queue_total_at "$CONFIG"; }
# read_inbox LOCALPART SUBJECT: the first message in that lab account's INBOX whose
# subject holds SUBJECT, read with imaplib over IMAPS (60 s at most)
read_inbox() {
    python3 - "$LAB/lab.json" "$1" "$2" <<'PY'
import imaplib, json, ssl, sys, time
lab = json.load(open(sys.argv[1]))
account = next(a for a in lab["accounts"] if a["address"].startswith(sys.argv[2] + "@"))
site = next(s for s in lab["sites"] if s["role"] == "data")
ctx = ssl.create_default_context(cafile=lab["ca"])
ctx.check_hostname = False
deadline = time.time() + 60
while time.time() < deadline:
    m = imaplib.IMAP4_SSL(site["ip"], site["ports"]["imaps"], ssl_context=ctx)
    m.login(account["address"], account["password"])
    m.select("INBOX")
    typ, data = m.search(None, "SUBJECT", '"' + sys.argv[3] + '"')
    for num in data[0].split():
        typ, body = m.fetch(num, "(BODY.PEEK[])")
        sys.stdout.write(body[0][1].decode("utf-8", "replace"))
        m.logout()
        sys.exit(0)
    m.logout()
    time.sleep(0.5)
sys.exit(1)
PY
}

echo "== DKIM: the domain's key, published by the lab's DNS"
"$MAILDR" admin --config "$CONFIG" domain dkim example.test --selector lab1 > "$WORK/dkim.txt"
grep -q '^lab1._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p=' "$WORK/dkim.txt" && ok "admin domain dkim prints the TXT record" || { fail "no TXT record printed"; cat "$WORK/dkim.txt"; }
DNS_AT=$(python3 -c "import json; s=json.load(open('$LAB/lab.json'))['sites'][0]; print(s['ip'], s['ports']['dns'])")
for _ in $(seq 1 100); do
    txt=$(dig @"${DNS_AT% *}" -p "${DNS_AT#* }" +short +time=1 +tries=1 lab1._domainkey.example.test TXT 2>/dev/null || true)
    [[ "$txt" == *"v=DKIM1"* ]] && break
    sleep 0.1
done
[[ "$txt" == *"v=DKIM1; k=rsa"* ]] && ok "the lab's DNS serves lab1._domainkey.example.test" || fail "the lab's DNS does not serve the key: $txt"

echo "== delivery to the peer"
TAGS=(); for i in $(seq 1 20); do TAGS+=("first-$i"); done
submit "${TAGS[@]}"
if wait_for "${TAGS[@]}"; then ok "20 messages submitted through maildr arrived at Postfix"; else fail "not every message arrived"; fi
dups=0; for t in "${TAGS[@]}"; do (( $(count "$t") == 1 )) || dups=$((dups + 1)); done
(( dups == 0 )) && ok "each tag exactly once at the peer" || fail "$dups tags not exactly once"
sleep 1
[[ $(queue_total) == 0 ]] && ok "the queue is empty once they are delivered" || fail "the queue still holds $(queue_total) messages"
grep -q "Received: from mail.example.test\|Received: from " "$PEER/mail/carol/new/"* && ok "the peer's Received header shows the hand-over" || fail "no Received header"
python3 - "$(grep -rl '^X-Tag: first-1$' "$PEER/mail/carol" | head -n 1)" ${DNS_AT} <<'PY' && ok "dkimpy verifies the DKIM signature of example.test on a message the peer received" || fail "the DKIM signature does not verify"
import sys
import dkim, dns.resolver
message = open(sys.argv[1], "rb").read()
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[2]]
resolver.port = int(sys.argv[3])
def dnsfunc(name, timeout=5):
    answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
    return b"".join(answer[0].strings)
assert b"DKIM-Signature:" in message and b"d=example.test" in message and b"s=lab1" in message, "not signed"
import logging
logging.basicConfig(level=logging.DEBUG)
sys.exit(0 if dkim.verify(message, dnsfunc=dnsfunc, logger=logging.getLogger("dkim")) else 1)
PY
mkdir -p "${ARTIFACT_DIR:-target/artifacts}"
cp "$(grep -rl '^X-Tag: first-1$' "$PEER/mail/carol" | head -n 1)" "${ARTIFACT_DIR:-target/artifacts}/outbound-signed.eml"

echo "== the peer is down: mail waits in the replicated queue"
peer_stop
WAIT=(); for i in $(seq 1 5); do WAIT+=("waiting-$i"); done
submit "${WAIT[@]}"
sleep 3
total=$(queue_total)
(( total == 5 )) && ok "5 messages wait in the queue while the peer is down" || fail "queue holds $total, not 5"
"$MAILDR" queue list --config "$CONFIG" --json > "$WORK/queue.json"
python3 - "$WORK/queue.json" <<'PY' && ok "queue list --json names recipients, attempts and the connection error" || fail "queue list --json lacks the expected fields"
import json, sys
q = json.load(open(sys.argv[1]))
m = q["messages"][0]
assert m["recipients"][0]["address"] == "carol@remote.test", m
assert m["attempts"] >= 1, m
assert m["recipients"][0]["last_error"], m
assert {"id", "from", "queued_at", "next_attempt_at", "expires_at", "size_bytes"} <= set(m), m
PY
API=$(python3 -c "import json; l=json.load(open('$LAB/lab.json')); s=l['sites'][0]; print(f\"http://{s['ip']}:{s['ports']['http']} {l['api_token']}\")")
curl -sf -H "Authorization: Bearer ${API#* }" "${API% *}/api/queue" > "$WORK/api-queue.json"
python3 -c "import json,sys; q=json.load(open('$WORK/api-queue.json')); sys.exit(0 if q['total']==5 and len(q['messages'])==5 else 1)" \
    && ok "GET /api/queue lists the 5 waiting messages" || fail "GET /api/queue: $(cat "$WORK/api-queue.json")"
curl -sf -H "Authorization: Bearer ${API#* }" "${API% *}/metrics" > "$WORK/metrics.txt"
grep -q '^maildr_outbound_queue_messages 5$' "$WORK/metrics.txt" && grep -q '^maildr_outbound_queue_oldest_age_seconds [1-9]' "$WORK/metrics.txt" \
    && ok "/metrics shows the queue's size and age" || fail "/metrics lacks the queue: $(grep outbound "$WORK/metrics.txt")"
for t in "${WAIT[@]}"; do (( $(count "$t") == 0 )) || fail "$t arrived while the peer was down"; done
peer_start
"$MAILDR" queue retry --all --config "$CONFIG" > /dev/null
if wait_for "${WAIT[@]}"; then ok "the waiting messages went out once the peer was back"; else fail "the waiting messages did not arrive"; fi
sleep 1
[[ $(queue_total) == 0 ]] && ok "the queue is empty again" || fail "the queue still holds messages"

echo "== a 550 from the peer bounces to the sender"
TO=nobody@remote.test submit bounce-1
read_inbox probe "Undelivered Mail Returned to Sender" > "$WORK/bounce.eml" || true
if grep -q "Final-Recipient: rfc822; nobody@remote.test" "$WORK/bounce.eml" && grep -q "^Status: 5.1.1" "$WORK/bounce.eml" \
    && grep -q "multipart/report" "$WORK/bounce.eml" && grep -q "^X-Tag: bounce-1" "$WORK/bounce.eml"; then
    ok "the sender's INBOX holds a delivery status notification with Status 5.1.1"
else
    fail "no bounce in the sender's INBOX"
fi

echo "== inbound: Postfix's mail to maildr carries its authentication results"
python3 - "$PEER_IP" "$PEER_PORT" <<'PY'
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.sendmail("dave@remote.test", ["alice@example.test"],
           "From: <dave@remote.test>\r\nTo: <alice@example.test>\r\nSubject: inbound-auth\r\n"
           "Message-ID: <inbound-auth@remote.test>\r\n\r\nfrom the peer\r\n")
s.quit()
PY
read_inbox alice "inbound-auth" | tr -d '\r' > "$WORK/inbound.eml" || true
AR=$(sed -n '/^Authentication-Results:/,/^Received:/p' "$WORK/inbound.eml" | sed '$d')
echo "$AR"
if [[ "$AR" == *"spf=pass"* && "$AR" == *"smtp.mailfrom=dave@remote.test"* && "$AR" == *"dkim=none"* && "$AR" == *"dmarc=pass"* ]]; then
    ok "Authentication-Results: spf=pass, dkim=none, dmarc=pass on mail from the Postfix peer"
else
    fail "no Authentication-Results with the expected results"
fi

echo "== the primary is lost with 500 messages queued"
cluster_json() { "$MAILDR" cluster status --config "$1" --json; }
PRIMARY=$(cluster_json "$CONFIG" | python3 -c "import json,sys; print(json.load(sys.stdin)['leader'])")
peer_stop
MANY=(); for i in $(seq 1 500); do MANY+=("failover-$i"); done
submit "${MANY[@]}"
total=$(queue_total)
(( total == 500 )) && ok "500 messages queued while the peer is down (primary $PRIMARY)" || fail "queue holds $total, not 500"
"$MAILDR" lab kill "$PRIMARY" --dir "$LAB" > /dev/null
SURVIVOR_CONFIG=$(python3 -c "
import json
lab = json.load(open('$LAB/lab.json'))
print(next(s['config'] for s in lab['sites'] if s['role'] == 'data' and s['site'] != '$PRIMARY'))")
for _ in $(seq 1 300); do
    NEW=$(cluster_json "$SURVIVOR_CONFIG" 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['leader'] or '')" 2>/dev/null || true)
    [[ -n "$NEW" && "$NEW" != "$PRIMARY" ]] && break
    sleep 0.2
done
[[ -n "$NEW" && "$NEW" != "$PRIMARY" ]] && ok "$NEW is primary after $PRIMARY was killed" || fail "no new primary"
peer_start
# tags_at_peer: "COPIES UNIQUE" of the failover tags the peer's maildir holds
tags_at_peer() {
    python3 - "$PEER/mail/carol" <<'PY'
import os, sys
copies, unique = 0, set()
for sub in ("new", "cur"):
    d = os.path.join(sys.argv[1], sub)
    for name in os.listdir(d) if os.path.isdir(d) else []:
        for line in open(os.path.join(d, name), errors="replace"):
            if line.startswith("X-Tag: failover-"):
                copies += 1
                unique.add(line.strip())
                break
print(copies, len(unique))
PY
}
for _ in $(seq 1 900); do
    read -r copies unique < <(tags_at_peer)
    (( unique == 500 )) && break
    sleep 0.1
done
sleep 2
read -r copies unique < <(tags_at_peer)
missing=$((500 - unique)); dup=$((copies - unique))
echo "failover: 500 queued, $unique arrived, $missing missing, $dup duplicate copies"
(( missing == 0 )) && ok "every one of the 500 arrived at the peer ($dup duplicate copies)" || fail "$missing of the 500 never arrived"
by_new=$( (grep -rl "^X-Tag: failover-" "$PEER/mail/carol" || true) | (xargs -r grep -l "^Received: from $NEW\.example\.test" || true) | wc -l)
(( by_new == copies )) && ok "all were handed over by the new primary $NEW" || fail "only $by_new of $copies handed over by $NEW"
sleep 1
[[ $(queue_total_at "$SURVIVOR_CONFIG") == 0 ]] && ok "the survivor's queue is empty" || fail "the survivor's queue still holds messages"

echo "outbound_postfix: $passed passed, $failed failed"
(( failed == 0 ))
