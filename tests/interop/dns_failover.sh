#!/usr/bin/env bash
# DNS failover seen by clients no one here wrote: dig asks the lab's own DNS
# servers, Python's smtplib delivers to the MX that dig found and imaplib reads
# through the `mail.` name that dig found. Then the primary is killed, and the
# same clients, resolving again, reach the survivor and find every message.
# Needs: dig (Debian bind9-dnsutils), python3, a built maildr.
set -euo pipefail

NET=127.83
source "$(dirname "$0")/lab.sh"
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

$MAILDR lab up --dir "$LAB" --net "$NET" >/dev/null
status=$($MAILDR lab status --dir "$LAB" --json)
password() { python3 -c "import json,sys; print([a['password'] for a in json.load(sys.stdin)['accounts'] if a['address']=='$1'][0])" <<<"$status"; }
ALICE_PW=$(password alice@example.test)
BJ=$NET.10.1; SH=$NET.20.1

ask() { dig @"$1" -p 5353 +short +time=1 +tries=1 "$2" "$3"; }
# mx_ip DNS_SERVER: the address of the most preferred MX host, as a sender finds it.
mx_ip() { ask "$1" "$(ask "$1" example.test MX | sort -n | head -1 | cut -d' ' -f2)" A; }

send() { # ip tag
    python3 - "$1" "$2" <<'PY'
import smtplib, sys
ip, tag = sys.argv[1], sys.argv[2]
with smtplib.SMTP(ip, 2525, timeout=20) as s:
    s.sendmail("carol@outside.test", ["alice@example.test"], f"Subject: {tag}\r\nMessage-ID: <{tag}@outside.test>\r\n\r\n{tag}\r\n")
PY
}
subjects() { # ip
    python3 - "$1" "$ALICE_PW" <<'PY'
import imaplib, sys
ip, pw = sys.argv[1], sys.argv[2]
m = imaplib.IMAP4(ip, 2143, timeout=20)
m.login("alice@example.test", pw); m.select("INBOX")
_, data = m.fetch("1:*", "(BODY[HEADER.FIELDS (SUBJECT)])")
print("\n".join(part[1].decode().strip().removeprefix("Subject: ") for part in data if isinstance(part, tuple)))
m.logout()
PY
}

# Wait until the cluster has committed its first steering.
for _ in $(seq 1 100); do [[ "$(ask "$SH" mail.example.test A)" == "$BJ" ]] && break; sleep 0.1; done
[[ "$(ask "$BJ" mail.example.test A)" == "$BJ" && "$(ask "$SH" mail.example.test A)" == "$BJ" ]] \
    && ok "both data sites say mail.example.test is bj" || fail "mail. before the failover"
[[ "$(mx_ip "$SH")" == "$BJ" ]] && ok "the preferred MX is bj" || fail "MX before the failover: $(ask "$SH" example.test MX)"
soa_before=$(ask "$SH" example.test SOA | cut -d' ' -f3)

for i in 1 2 3; do send "$(mx_ip "$SH")" "before-$i"; done && ok "smtplib delivered 3 messages to the MX dig found"

$MAILDR lab kill --dir "$LAB" bj >/dev/null
start=$(date +%s%N)
switched=""
for _ in $(seq 1 200); do
    if [[ "$(ask "$SH" mail.example.test A)" == "$SH" && "$(ask "$SH" example.test MX)" == "10 sh.example.test." ]]; then
        switched=yes; break
    fi
    sleep 0.1
done
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[[ -n "$switched" ]] && ok "after killing bj, sh's DNS names sh for mail. and MX (${elapsed_ms} ms)" \
    || fail "DNS never switched: mail.=$(ask "$SH" mail.example.test A) MX=$(ask "$SH" example.test MX)"
soa_after=$(ask "$SH" example.test SOA | cut -d' ' -f3)
(( soa_after > soa_before )) && ok "the SOA serial grew ($soa_before -> $soa_after)" || fail "SOA serial $soa_before -> $soa_after"

send "$(mx_ip "$SH")" after && ok "smtplib delivered to the survivor through the MX" || fail "delivery after the failover"
got=$(subjects "$(ask "$SH" mail.example.test A)")
missing=0
for tag in before-1 before-2 before-3 after; do grep -qx "$tag" <<<"$got" || { missing=1; echo "  missing $tag"; }; done
(( missing == 0 )) && ok "imaplib through mail. reads all 4 messages at the survivor" || fail "messages missing at the survivor: $got"

echo "dns failover interop: $passed passed, $failed failed"
(( failed == 0 ))
