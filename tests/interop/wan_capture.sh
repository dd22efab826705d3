#!/usr/bin/env bash
# What an eavesdropper on the links between sites sees: tcpdump captures every
# packet to and from the lab's replication listeners and fault-proxy links while
# Python's smtplib delivers messages carrying a marker and `maildr admin` creates
# an account with a known password. The capture must hold replication traffic (it
# is not empty) and none of: the marker, the cluster secret, the password. As the
# control that the capture sees payloads at all, a second capture of the MX port
# (plain SMTP on loopback) must hold the marker.
# Needs: tcpdump (Debian tcpdump), python3, a built maildr.
set -euo pipefail

NET=127.87
source "$(dirname "$0")/lab.sh"
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
command -v tcpdump >/dev/null || install_missing tcpdump

$MAILDR lab up --dir "$LAB" --net "$NET" >/dev/null
BJ=$NET.10.1
SECRET=$(sed -n 's/^secret = "\(.*\)"$/\1/p;T;q' "$LAB/sites/bj/site.toml")
[[ ${#SECRET} -ge 16 ]] || { fail "no cluster secret found in bj's config"; exit 1; }
MARKER="marker-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PASSWORD="Pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# Replication listeners (2700) and the links X->Y (2710 to bj, 2720 to sh, 2730 to hz).
tcpdump -i lo -U -s 0 -w "$WORK/wan.pcap" "tcp and net $NET.0.0/16 and (port 2700 or port 2710 or port 2720 or port 2730)" 2>"$WORK/tcpdump-wan.log" &
WAN_PID=$!
tcpdump -i lo -U -s 0 -w "$WORK/mx.pcap" "tcp and host $BJ and port 2525" 2>"$WORK/tcpdump-mx.log" &
MX_PID=$!
stop_captures() { kill -INT "$WAN_PID" "$MX_PID" 2>/dev/null || true; wait "$WAN_PID" "$MX_PID" 2>/dev/null || true; }
trap 'stop_captures; lab_cleanup' EXIT
for _ in $(seq 1 50); do
    grep -q "listening on" "$WORK/tcpdump-wan.log" && grep -q "listening on" "$WORK/tcpdump-mx.log" && break
    sleep 0.1
done

python3 - "$BJ" "$MARKER" <<'PY'
import smtplib, sys
ip, marker = sys.argv[1], sys.argv[2]
with smtplib.SMTP(ip, 2525, timeout=30) as s:
    for n in range(20):
        body = f"Subject: wan-{n}\r\nMessage-ID: <wan-{n}@outside.test>\r\n\r\n" + (marker + " ") * 200 + "\r\n"
        s.sendmail("carol@outside.test", ["alice@example.test"], body)
PY
ok "smtplib delivered 20 messages carrying the marker"
printf '%s\n' "$PASSWORD" | $MAILDR admin --config "$LAB/sites/bj/site.toml" user add "eve@example.test" --password-stdin >/dev/null \
    && ok "maildr admin created an account with a known password" || fail "account creation"
$MAILDR cluster verify --config "$LAB/sites/bj/site.toml" >/dev/null && ok "every site holds the same mail" || fail "verify"
sleep 1
stop_captures

wan_bytes=$(stat -c %s "$WORK/wan.pcap")
(( wan_bytes > 100000 )) && ok "the WAN capture holds the replication traffic ($wan_bytes bytes)" \
    || fail "the WAN capture is too small to mean anything ($wan_bytes bytes)"
grep -aq "$MARKER" "$WORK/mx.pcap" && ok "control: the plain MX capture shows the marker" \
    || fail "control: the MX capture does not show the marker, so the captures see no payloads"
for what in MARKER SECRET PASSWORD; do
    if grep -aqF "${!what}" "$WORK/wan.pcap"; then fail "the WAN capture contains the $what"; else ok "no $what on the WAN"; fi
done

echo "wan capture interop: $passed passed, $failed failed"
(( failed == 0 ))
