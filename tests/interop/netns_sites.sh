#!/usr/bin/env bash
# Three sites on three "hosts": each `maildr serve` runs in its own network
# namespace with its own address in 198.18.0.0/15 (reserved for network test labs),
# joined by a virtual WAN (a bridge in a fourth namespace; every site's link rate
# limited by tc tbf), so every packet between sites crosses real interfaces and no
# address is loopback. (Delay and loss need sch_netem, which this machine kind's
# kernel lacks; the partition below cuts the WAN side of a link instead.) A fifth namespace is the clients' network. Then, with
# clients no one here wrote (Python's smtplib, imaplib and ssl, curl, tcpdump):
# - the cluster forms over mutual TLS, `cluster status` (run from the clients'
#   namespace) shows every member with its certificate's expiry, and every
#   site's probes (STARTTLS, implicit TLS, LOGIN) report every site up;
# - a plaintext IMAP LOGIN from the clients' network is refused, IMAPS works;
# - a capture on the WAN during mail flow and an account's creation holds neither a
#   marker from the bodies, nor the cluster secret, nor the password;
# - a stranger without a cluster certificate gets no frame, and 500 half-open
#   connections from it do not stop commits;
# - a partition (the WAN side of the primary's link down: its packets go nowhere),
#   a killed data site, its restart and catch-up, and a paused primary lose no
#   acknowledged message.
# Everything it creates (namespaces, interfaces, qdiscs, processes) is removed on
# exit. Needs: root, iproute2, tcpdump, openssl, curl, python3, a built maildr.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
MAILDR=$(realpath "${MAILDR:-target/debug/maildr}")
[[ $(id -u) == 0 ]] || { echo "netns_sites.sh needs root (network namespaces)"; exit 1; }
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
install_missing "${missing[@]}"

P=mdrt$$                      # namespace and interface prefix, unique per run
WORK=$(mktemp -d)
SITES=(bj sh hz)
declare -A IP=([bj]=198.18.0.10 [sh]=198.18.0.20 [hz]=198.18.0.30 [cl]=198.18.0.100)
declare -A NODE=([bj]=1 [sh]=2 [hz]=3)
declare -A PID=()
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PROBE_PW="probe-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ALICE_PW="alice-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cleanup() {
    for s in "${!PID[@]}"; do kill "${PID[$s]}" 2>/dev/null || true; done
    for s in "${!PID[@]}"; do wait "${PID[$s]}" 2>/dev/null || true; done
    for ns in "${SITES[@]}" cl wan; do ip netns del "$P-$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
cl() { in_ns cl "$@"; }

# --- the network: a bridge in "wan", one veth per host, a rate limit on each site's link.
ip netns add "$P-wan"
in_ns wan ip link add br0 type bridge
in_ns wan ip link set br0 up
in_ns wan ip link set lo up
for h in "${SITES[@]}" cl; do
    ip netns add "$P-$h"
    ip link add "$P-$h" type veth peer name "$P-$h-w"
    ip link set "$P-$h" netns "$P-$h"
    ip link set "$P-$h-w" netns "$P-wan"
    in_ns wan ip link set "$P-$h-w" master br0 up
    in_ns "$h" ip link set lo up
    in_ns "$h" ip link set "$P-$h" name wan0
    in_ns "$h" ip addr add "${IP[$h]}/15" dev wan0
    in_ns "$h" ip link set wan0 up
done
for s in "${SITES[@]}"; do in_ns "$s" tc qdisc add dev wan0 root tbf rate 200mbit burst 256kb latency 50ms; done

# --- certificates: the cluster's own (maildr cluster certs) and the mail CA (openssl).
"$MAILDR" cluster certs ca --dir "$WORK/cluster-ca" --label netns >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=netns mail CA" \
    -keyout "$WORK/mail-ca-key.pem" -out "$WORK/mail-ca.pem" 2>/dev/null
for s in "${SITES[@]}"; do
    mkdir -p "$WORK/$s"
    "$MAILDR" cluster certs issue --ca-dir "$WORK/cluster-ca" --site "$s" --node-id "${NODE[$s]}" --out "$WORK/$s" >/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$s.example.test" \
        -keyout "$WORK/$s/mail-key.pem" -out "$WORK/$s/mail.csr" 2>/dev/null
    openssl x509 -req -in "$WORK/$s/mail.csr" -CA "$WORK/mail-ca.pem" -CAkey "$WORK/mail-ca-key.pem" -days 2 \
        -extfile <(printf 'subjectAltName=DNS:%s.example.test,DNS:mail.example.test,IP:%s' "$s" "${IP[$s]}") \
        -out "$WORK/$s/mail.pem" 2>/dev/null
done

# --- one config per site: everything on its own address, nothing on loopback.
members=""
for s in "${SITES[@]}"; do
    role=data; [[ $s == hz ]] && role=witness
    members+=$'\n'"[[cluster.members]]"$'\n'"node_id = ${NODE[$s]}"$'\n'"site = \"$s\""$'\n'"role = \"$role\""$'\n'"addr = \"${IP[$s]}:2700\""$'\n'
    [[ $role == data ]] && members+="mail_ip = \"${IP[$s]}\""$'\n'
done
for s in "${SITES[@]}"; do
    ip=${IP[$s]}
    {
        printf '[site]\nname = "%s"\nhostname = "%s.example.test"\ndata_dir = "%s"\n' "$s" "$s" "$WORK/$s/data"
        printf '[smtp]\nmx_listen = "%s:25"\nsubmission_listen = "%s:587"\nsubmissions_listen = "%s:465"\n' "$ip" "$ip" "$ip"
        printf '[imap]\nplain_listen = "%s:143"\ntls_listen = "%s:993"\n' "$ip" "$ip"
        printf '[tls]\ncert_path = "%s"\nkey_path = "%s"\n' "$WORK/$s/mail.pem" "$WORK/$s/mail-key.pem"
        printf '[store]\nwrite_timeout_ms = 5000\n'
        printf '[cluster]\nnode_id = %s\nlisten = "%s:2700"\nsecret = "%s"\n' "${NODE[$s]}" "$ip" "$SECRET"
        printf 'ca_files = ["%s"]\ncert_file = "%s"\nkey_file = "%s"\n' "$WORK/cluster-ca/ca.pem" \
            "$WORK/$s/$s-cluster.pem" "$WORK/$s/$s-cluster-key.pem"
        printf 'election_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\nheartbeat_interval_ms = 100\n'
        printf '[control]\nenabled = true\nprobe_interval_ms = 500\nprobe_timeout_ms = 2000\nreadd_holddown_ms = 2000\n'
        printf 'probe_smtp_port = 25\nprobe_imap_port = 993\nprobe_ca_file = "%s"\nprobe_tls_name = "{site}.example.test"\n' \
            "$WORK/mail-ca.pem"
        printf 'probe_account = "probe@example.test"\nprobe_password = "%s"\n' "$PROBE_PW"
        if [[ $s != hz ]]; then
            printf '[dns]\nlisten = "%s:53"\nttl_secs = 5\n' "$ip"
            printf '[api]\nlisten = "%s:2780"\ntoken = "%s"\n' "$ip" "$TOKEN"
        fi
        printf '%s' "$members"
    } >"$WORK/$s/site.toml"
    "$MAILDR" config check "$WORK/$s/site.toml" >/dev/null
done
ok "every site's config passes the check with non-loopback addresses and certificates"

start_site() { # site
    # `ip netns exec` execs maildr, so $! is the site's own pid.
    ip netns exec "$P-$1" "$MAILDR" serve --config "$WORK/$1/site.toml" >>"$WORK/$1/serve.log" 2>&1 &
    PID[$1]=$!
}
for s in "${SITES[@]}"; do start_site "$s"; done
for _ in $(seq 1 100); do
    cl "$MAILDR" cluster init --config "$WORK/bj/site.toml" >/dev/null 2>&1 && break
    sleep 0.2
done
cl "$MAILDR" cluster init --config "$WORK/bj/site.toml" >/dev/null && ok "cluster init from the clients' network" \
    || { fail "cluster init"; tail -20 "$WORK"/*/serve.log; exit 1; }
admin() { cl "$MAILDR" admin --config "$WORK/bj/site.toml" "$@"; }
admin domain add example.test >/dev/null
printf '%s\n' "$PROBE_PW" | admin user add probe@example.test --password-stdin >/dev/null
printf '%s\n' "$ALICE_PW" | admin user add alice@example.test --password-stdin >/dev/null
ok "domain and accounts created through the running cluster"

# primary_becomes ASKING SITE: within 60 s, ASKING's config names SITE the primary.
# (A status call waits for an unreachable member up to its own timeout.)
# On failure, the last status it saw and the tail of every running site's log are
# printed, so a failed run says what the cluster was doing.
primary_becomes() {
    local st="" began=$SECONDS
    while (( SECONDS - began < 60 )); do
        st=$(cl "$MAILDR" cluster status --config "$WORK/$1/site.toml" 2>&1 || true)
        [[ $(sed -n 's/^primary: \([a-z]*\) .*/\1/p' <<<"$st") == "$2" ]] && { WAITED=$((SECONDS - began)); return 0; }
        sleep 0.5
    done
    echo "-- last cluster status asked at $1:"; echo "$st"
    for s in "${!PID[@]}"; do echo "-- $s's log (last 30 lines):"; tail -30 "$WORK/$s/serve.log"; done
    return 1
}
status=$(cl "$MAILDR" cluster status --config "$WORK/bj/site.toml")
primary=$(sed -n 's/^primary: \([a-z]*\) .*/\1/p' <<<"$status")
expiries=$(grep -c ": cluster certificate expires " <<<"$status" || true)
[[ -n "$primary" && $expiries == 3 ]] && ! grep -q UNREACHABLE <<<"$status" \
    && ok "cluster status: primary $primary, every member answers with its certificate's expiry" \
    || fail "cluster status: $status"

# Every observer sees every data site up, from probes that logged in over TLS.
health_ok=""
for _ in $(seq 1 60); do
    health=$(cl curl -sS --max-time 5 -H "Authorization: Bearer $TOKEN" "http://${IP[bj]}:2780/api/health" || true)
    if python3 - "$health" <<'PY'
import json, sys
h = json.loads(sys.argv[1] or "{}")
obs = [o["observations"] for o in h.get("observers", []) if o.get("reachable") and o.get("observations")]
targets = [t for o in obs for t in o["targets"]]
ok = len(obs) == 3 and len(targets) == 6 and all(
    t["up"] and t["consecutive_failures"] == 0 and t["last_ok_ms"] and t["imap_ms"] is not None for t in targets)
sys.exit(0 if ok else 1)
PY
    then health_ok=yes; break; fi
    sleep 0.5
done
[[ -n "$health_ok" ]] && ok "all 3 observers see both data sites up (SMTP STARTTLS, IMAPS LOGIN)" \
    || fail "health: $health"

# Plaintext LOGIN from another host is refused; IMAPS verified with the mail CA works.
if cl python3 - "${IP[bj]}" "$ALICE_PW" "$WORK/mail-ca.pem" >"$WORK/imap.out" 2>&1 <<'PY'
import imaplib, ssl, sys
ip, pw, ca = sys.argv[1], sys.argv[2], sys.argv[3]
m = imaplib.IMAP4(ip, 143, timeout=10)
try:
    m.login("alice@example.test", pw)
    print("PLAINTEXT LOGIN ACCEPTED"); sys.exit(1)
except imaplib.IMAP4.error as e:
    print("plaintext refused:", e)
s = imaplib.IMAP4_SSL(ip, 993, ssl_context=ssl.create_default_context(cafile=ca), timeout=10)
s.login("alice@example.test", pw); s.logout()
PY
then ok "plaintext IMAP LOGIN refused from the clients' network; IMAPS login works"
else fail "IMAP: $(cat "$WORK/imap.out")"; fi

# --- what crosses the WAN during mail flow and an account's creation.
ip netns exec "$P-wan" tcpdump -i br0 -U -s 0 -w "$WORK/wan.pcap" "tcp port 2700" 2>"$WORK/tcpdump.log" &
PID[tcpdump]=$!
# The control: the clients' plain SMTP crosses the same bridge, and shows the marker.
ip netns exec "$P-wan" tcpdump -i br0 -U -s 0 -w "$WORK/mx.pcap" "tcp port 25" 2>"$WORK/tcpdump-mx.log" &
PID[tcpdump_mx]=$!
for _ in $(seq 1 50); do
    grep -q "listening on" "$WORK/tcpdump.log" && grep -q "listening on" "$WORK/tcpdump-mx.log" && break
    sleep 0.1
done
MARKER="marker-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
NEW_PW="eve-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
send() { # ip first count [marker]
    cl python3 - "$@" <<'PY'
import smtplib, sys
ip, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
marker = sys.argv[4] if len(sys.argv) > 4 else ""
acked = []
for n in range(first, first + count):
    try:
        with smtplib.SMTP(ip, 25, timeout=20) as s:
            s.sendmail("carol@outside.test", ["alice@example.test"],
                       f"Subject: m-{n}\r\nMessage-ID: <m-{n}@outside.test>\r\n\r\n{(marker + ' ') * 100}\r\n")
        acked.append(f"m-{n}")
    except (smtplib.SMTPException, OSError):
        pass
print(" ".join(acked))
PY
}
ACKED=$(send "${IP[$primary]}" 0 20 "$MARKER")
printf '%s\n' "$NEW_PW" | admin user add eve@example.test --password-stdin >/dev/null
cl "$MAILDR" cluster verify --config "$WORK/bj/site.toml" >/dev/null && ok "20 messages delivered, every site holds the same mail" \
    || fail "verify after the first messages"
sleep 1
kill -INT "${PID[tcpdump]}" "${PID[tcpdump_mx]}"
wait "${PID[tcpdump]}" "${PID[tcpdump_mx]}" 2>/dev/null || true; unset 'PID[tcpdump]' 'PID[tcpdump_mx]'
grep -aqF "$MARKER" "$WORK/mx.pcap" && ok "control: the capture of plain SMTP on the same bridge shows the marker" \
    || fail "control: the captures see no payloads"
bytes=$(stat -c %s "$WORK/wan.pcap")
(( bytes > 50000 )) && ok "the WAN capture holds the replication traffic ($bytes bytes)" || fail "WAN capture of $bytes bytes"
for what in MARKER SECRET NEW_PW; do
    if grep -aqF "${!what}" "$WORK/wan.pcap"; then fail "the WAN capture contains the $what"; else ok "no $what on the WAN"; fi
done

# --- a stranger on the clients' network: no certificate, no frame; 500 half-open connections.
answer=$(cl python3 - "${IP[$primary]}" <<'PY'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    s = ctx.wrap_socket(socket.create_connection((sys.argv[1], 2700), timeout=5))
    print("FRAME" if len(s.recv(4)) == 4 else "CLOSED")
except (ssl.SSLError, OSError) as e:
    print("REFUSED", type(e).__name__)
PY
)
[[ $answer != FRAME ]] && ok "a client without a cluster certificate gets no frame ($answer)" || fail "a stranger got a frame"
ip netns exec "$P-cl" python3 -c "
import socket, sys, time
held = []
for _ in range(500):
    s = socket.socket()
    try: s.connect(('${IP[$primary]}', 2700)); held.append(s)
    except OSError: pass
print(len(held), flush=True); time.sleep(40)" >"$WORK/held.out" &
PID[holder]=$!
for _ in $(seq 1 100); do [[ -s "$WORK/held.out" ]] && break; sleep 0.1; done
MORE=$(send "${IP[$primary]}" 20 10)
kill "${PID[holder]}"; wait "${PID[holder]}" 2>/dev/null || true; unset 'PID[holder]'
[[ $(wc -w <<<"$MORE") == 10 ]] && ok "10 of 10 messages committed while 500 half-open connections were held" \
    || fail "during the half-open connections only $(wc -w <<<"$MORE") of 10 were accepted"
ACKED="$ACKED $MORE"

# --- faults on real packets: the primary's link is cut in the WAN, then the other data site dies.
other=sh; [[ $primary == sh ]] && other=bj
in_ns wan ip link set "$P-$primary-w" down
elected=""; primary_becomes "$other" "$other" && elected=yes
[[ -n "$elected" ]] && ok "with $primary's link cut, $other is elected (seen after ${WAITED} s)" || fail "no election during the partition"
DURING=$(send "${IP[$other]}" 30 10)
[[ $(wc -w <<<"$DURING") -ge 8 ]] && ok "$other accepts mail during the partition ($(wc -w <<<"$DURING") of 10)" \
    || fail "only $(wc -w <<<"$DURING") of 10 accepted at $other during the partition"
ACKED="$ACKED $DURING"
in_ns wan ip link set "$P-$primary-w" up
kill "${PID[$other]}"; wait "${PID[$other]}" 2>/dev/null || true; unset "PID[$other]"
healed=""; primary_becomes "$primary" "$primary" && healed=yes
[[ -n "$healed" ]] && ok "after healing, with $other killed, $primary leads again" || fail "no primary after killing $other"
AFTER=$(send "${IP[$primary]}" 40 5)
ACKED="$ACKED $AFTER"

# RPO: every acknowledged message is in alice's INBOX at a site, once.
rpo() { # ip
    cl python3 - "$1" "$ALICE_PW" "$WORK/mail-ca.pem" "$ACKED" >"$WORK/rpo.out" 2>&1 <<'PY'
import imaplib, ssl, sys
ip, pw, ca, acked = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
m = imaplib.IMAP4_SSL(ip, 993, ssl_context=ssl.create_default_context(cafile=ca), timeout=20)
m.login("alice@example.test", pw); m.select("INBOX")
_, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
subjects = [p[1].decode().strip().removeprefix("Subject: ") for p in data if isinstance(p, tuple)]
missing = sorted(set(acked) - set(subjects))
twice = sorted({s for s in subjects if subjects.count(s) > 1})
print(f"{len(acked)} acknowledged, {len(subjects)} in INBOX, missing {missing}, twice {twice}")
sys.exit(1 if missing or twice else 0)
PY
}
if rpo "${IP[$primary]}"; then ok "RPO 0 at $primary: $(cat "$WORK/rpo.out")"
else fail "acknowledged mail lost at $primary: $(cat "$WORK/rpo.out")"; fi

# --- the killed site restarts and catches up; then the primary is paused and resumed.
start_site "$other"
caught_up=""
for _ in $(seq 1 120); do
    cl "$MAILDR" cluster verify --config "$WORK/$primary/site.toml" >/dev/null 2>&1 && { caught_up=yes; break; }
    sleep 0.5
done
[[ -n "$caught_up" ]] && ok "$other, restarted, caught up: verify finds every mailbox equal on all sites" \
    || fail "verify after restarting $other"
kill -STOP "${PID[$primary]}"
elected=""; primary_becomes "$other" "$other" && elected=yes
[[ -n "$elected" ]] && ok "with $primary paused (SIGSTOP), $other is elected (seen after ${WAITED} s)" || fail "no election while $primary was paused"
PAUSED=$(send "${IP[$other]}" 50 5)
ACKED="$ACKED $PAUSED"
kill -CONT "${PID[$primary]}"
if rpo "${IP[$other]}"; then ok "RPO 0 at $other after the pause: $(cat "$WORK/rpo.out")"
else fail "acknowledged mail lost at $other: $(cat "$WORK/rpo.out")"; fi

echo "netns sites interop: $passed passed, $failed failed"
(( failed == 0 ))
