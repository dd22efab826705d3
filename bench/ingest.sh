#!/usr/bin/env bash
# Inbound durable ingest, side by side in one run with one load tool, Postfix's
# smtp-source (MESSAGES messages of SIZE bytes over CONCURRENCY connections, -d:
# one message after another on each connection, as an MTA sends them):
#   - stock Postfix (Debian's package, its own instance on 127.157.0.25:2525)
#     delivering every message over LMTP (unix socket) into stock Dovecot
#     (dovecot-lmtpd, its own instance and config in the work directory), one
#     virtual user with a maildir in the work directory. Postfix fsyncs its queue
#     file before its 250; Dovecot fsyncs each message file and the maildir
#     directory (`mail_fsync`'s default, `optimized`). The rate is the messages
#     stored over the time from the start of the load to the last arrival in the
#     maildir (new/ + cur/);
#   - maildr, a three-site lab (127.158: bj and sh data, hz witness) loaded at the
#     primary's MX. A 250 means the body is on two sites and the delivery is
#     quorum-committed and applied, so the rate is the messages stored (counted
#     in the recipient's INBOX at the primary afterwards, IMAP STATUS) over the
#     load's own time. Once on loopback and once with RTT_MS (30) of round trip
#     between every pair of sites (half of it each way on every link of the lab's
#     fault proxy), each in a fresh lab.
# smtp-source runs with -A: a refused message is skipped (not retried) and the
# load goes on; the table shows how many were stored, and the script exits 1
# when any measured message was refused or not stored.
# Then, for each system (and RTT), `maildr bench smtp` at the same port with the
# same MESSAGES, CONCURRENCY and SIZE, for its DATA→250 latency percentiles (a
# PIPELINING client; at Postfix a 250 means "in Postfix's queue", not yet in the
# maildir).
#
# Before each measured load, a warm-up that is not measured: one message through
# the whole path, then two rounds of 2 × CONCURRENCY messages at CONCURRENCY
# (`maildr bench smtp`, into the mailbox the latency run uses; Postfix's queue
# then drains), so both systems have their connections open and their caches
# warm; any refusal in it is printed. The measured loads go to a mailbox of their
# own that starts empty.
#
# maildr's MX checks SPF, DKIM and DMARC of every message (Postfix's stock
# configuration checks nothing): the lab asks a stub on 127.157.0.53 that answers
# NXDOMAIN at once, so the checks do their work but wait on no network, and no
# resolver outside the two loopback nets is asked.
#
# Usage: bench/ingest.sh [MESSAGES] [CONCURRENCY] [SIZE]   (4000, 50, 5120)
# Needs root (Postfix and Dovecot drop privileges) and a built maildr (release if
# present; MAILDR_BIN overrides). Installs postfix, dovecot-core and dovecot-lmtpd
# when missing. Every wait is bounded (WAIT_SECS, 300); everything started is
# stopped, link faults healed, and the work directory removed, on exit. Nothing is
# deleted between the runs (each system and lab writes into directories of its
# own): on this machine kind's ext4 a mass deletion slows file creation for tens of
# seconds after it, so start the script a minute after anything deleted many files.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-4000}
CONCURRENCY=${2:-50}
SIZE=${3:-5120}
RTT_MS=${RTT_MS:-30}
WAIT_SECS=${WAIT_SECS:-300}
if [[ -x target/release/maildr ]]; then MAILDR=$(realpath target/release/maildr); else MAILDR=$(realpath target/debug/maildr); fi
MAILDR=${MAILDR_BIN:-$MAILDR}
source tests/interop/checks.sh

[[ $(id -u) -eq 0 ]] || { echo "ingest.sh: run as root (Postfix and Dovecot drop privileges)" >&2; exit 1; }
[[ -x $MAILDR ]] || { echo "ingest.sh: no maildr binary at $MAILDR (build it, or set MAILDR_BIN)" >&2; exit 1; }
missing=()
{ command -v postfix && command -v smtp-source; } >/dev/null || missing+=(postfix)
command -v dovecot >/dev/null || missing+=(dovecot-core)
[[ -x /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
command -v curl >/dev/null || missing+=(curl)
if (( ${#missing[@]} )); then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    install_missing "${missing[@]}"
    # The distribution's own instances (started by the installer) are not measured.
    for service in postfix dovecot; do service "$service" stop >/dev/null 2>&1 || true; done
fi

PF_IP=127.157.0.25; PF_PORT=2525
STUB_IP=127.157.0.53; STUB_PORT=53
NET=127.158
WORK=$(mktemp -d)
chmod 755 "$WORK"
PF=$WORK/postfix
DC=$WORK/dovecot
LAB=$WORK/lab
BG_PID="" STUB_PID="" DOVECOT_PID="" POSTFIX_UP="" LAB_UP="" CHECK_FAILED="" NOT_CLEAN=""
START=$EPOCHREALTIME

secs_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
say() { echo "[$(printf '%6.1f' "$(secs_since "$START")") s] $*"; }

# stop_pid PID: TERM, up to 5 s, then KILL.
stop_pid() {
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
heal_links() {
    [[ -f $LAB/lab.json ]] || return 0
    local control name
    control=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['links']['control'])" "$LAB/lab.json")
    for name in $(python3 -c "import json, sys; print(' '.join(json.load(open(sys.argv[1]))['links']['names']))" "$LAB/lab.json"); do
        curl -fsS --noproxy '*' -m 5 -X POST "$control/links/$name/heal" >/dev/null 2>&1 || true
    done
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $BG_PID ]]; then stop_pid "$BG_PID"; wait "$BG_PID" 2>/dev/null || true; fi
    if (( status != 0 )) && [[ -z $NOT_CLEAN ]]; then
        echo "== ingest.sh failed (exit $status); the ends of the logs:" >&2
        for log in "$PF/maillog" "$DC/dovecot.log" "$LAB"/sites/*/serve.log; do
            [[ -s $log ]] && { echo "-- $log" >&2; tail -5 "$log" >&2; }
        done
    fi
    if [[ -n $LAB_UP ]]; then
        heal_links
        timeout 60 "$MAILDR" lab down --dir "$LAB" >/dev/null 2>&1 || true
    fi
    if [[ -n $POSTFIX_UP ]]; then
        local master
        master=$(cat "$PF/queue/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
        timeout 30 postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
        stop_pid "$master"
    fi
    stop_pid "$DOVECOT_PID"
    stop_pid "$STUB_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bounded OUT CMD...: run CMD under a timeout with its output in OUT, interruptible
# (the EXIT trap stops it); returns its status.
bounded() {
    local out=$1 rc=0; shift
    timeout "$((WAIT_SECS + 30))" "$@" > "$out" 2>&1 &
    BG_PID=$!
    wait "$BG_PID" || rc=$?
    BG_PID=""
    return "$rc"
}

# load TAG HOST:PORT RCPT: smtp-source, -A: a refused message (4xx/5xx) is
# skipped, not retried, and the load goes on; what was stored is counted
# afterwards. Sets LOAD_SECS.
load() {
    local out=$WORK/smtp-source-$1.out t0=$EPOCHREALTIME rc=0
    bounded "$out" smtp-source -A -c -d -s "$CONCURRENCY" -m "$MESSAGES" -l "$SIZE" \
        -f sender@bench.test -t "$3" "$2" || rc=$?
    LOAD_SECS=$(secs_since "$t0")
    if (( rc != 0 )); then
        say "$1: smtp-source at $2 stopped with exit $rc after $LOAD_SECS s:"
        tr '\r' '\n' < "$out" | grep -vE '^[0-9]*$' | tail -5
        CHECK_FAILED=1
    else
        say "$1: smtp-source done: $MESSAGES messages to $3 at $2 in $LOAD_SECS s"
    fi
}

# bench_smtp OUT HOST:PORT RCPT COUNT: maildr bench smtp at CONCURRENCY.
bench_smtp() {
    bounded "$1" "$MAILDR" bench smtp --target "$2" --rcpt "$3" --messages "$4" \
        --concurrency "$CONCURRENCY" --size "$SIZE" --duration-max-secs "$WAIT_SECS" \
        || { cat "$1" >&2; return 1; }
}

# warm_up TAG HOST:PORT RCPT: two rounds of 2 × CONCURRENCY messages at
# CONCURRENCY (not measured); their refusals in WARM[TAG].
declare -A WARM
warm_up() {
    local round out refused=()
    for round in 1 2; do
        out=$WORK/warm-$1-$round.out
        bench_smtp "$out" "$2" "$3" "$((2 * CONCURRENCY))"
        refused+=("$(sed -n 's/^accepted .*, \([0-9]*\) refused$/\1/p' "$out")")
    done
    WARM[$1]="${refused[0]}+${refused[1]}"
    say "$1: warm-up at $2, 2 × $((2 * CONCURRENCY)) messages, refused ${WARM[$1]}"
}

# latency TAG HOST:PORT RCPT: maildr bench smtp, MESSAGES; its figures in LAT[TAG].
declare -A LAT
latency() {
    local out=$WORK/bench-smtp-$1.out
    bench_smtp "$out" "$2" "$3" "$MESSAGES"
    sed 's/^/    /' "$out"
    LAT[$1]=$(python3 - "$out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
acc = re.search(r"accepted (\d+) messages in ([\d.]+) s, (\d+) refused", t)
rate = re.search(r"throughput (\d+) messages/s", t)
lat = re.search(r"p50 ([\d.]+)\s+p99 ([\d.]+)\s+max ([\d.]+)", t)
print(f"{rate[1]} | {lat[1]} | {lat[2]} | {lat[3]} | {acc[1]} | {acc[3]}")
PY
)
    [[ ${LAT[$1]} == *"| 0" ]] || CHECK_FAILED=1
}

maildir_count() { find "$1/new" "$1/cur" -maxdepth 1 -type f 2>/dev/null | wc -l; }
postfix_queued() { find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" "$PF/queue/maildrop" -type f 2>/dev/null | wc -l; }

# wait_delivered DIR N T0: until DIR holds N messages, or Postfix's queue is empty
# (what it accepted is all delivered). Sets STORED (messages in DIR) and
# STORED_SECS (from T0 to the last arrival).
wait_delivered() {
    local deadline=$((SECONDS + WAIT_SECS)) n last=-1 at=$EPOCHREALTIME polls=0
    while :; do
        n=$(maildir_count "$1")
        if (( n != last )); then last=$n; at=$EPOCHREALTIME; fi
        (( n >= $2 )) && break
        if (( ++polls % 20 == 0 )) && (( $(postfix_queued) == 0 )) && (( $(maildir_count "$1") == n )); then break; fi
        if (( SECONDS >= deadline )); then
            say "only $n of $2 messages reached $1 within $WAIT_SECS s"; CHECK_FAILED=1; break
        fi
        sleep 0.05
    done
    STORED=$n
    STORED_SECS=$(awk -v a="$3" -v b="$at" 'BEGIN { printf "%.2f", b - a }')
}

# wait_postfix_idle: until Postfix's queue is empty.
wait_postfix_idle() {
    local deadline=$((SECONDS + WAIT_SECS))
    until (( $(postfix_queued) == 0 )); do
        (( SECONDS < deadline )) || { echo "Postfix's queue did not empty within $WAIT_SECS s" >&2; return 1; }
        sleep 0.1
    done
}

echo "== ingest: $MESSAGES messages of $SIZE B over $CONCURRENCY connections; $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $MAILDR ($(date -r "$MAILDR" '+built %F %T'), tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?')); Postfix $(postconf -dh mail_version); Dovecot $(dovecot --version | cut -d' ' -f1)"

# ---------------------------------------------------------------- the DNS stub
# Answers every question NXDOMAIN at once (the question echoed, no records).
python3 - "$STUB_IP" "$STUB_PORT" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    q, peer = s.recvfrom(4096)
    if len(q) < 17:
        continue
    end = 12
    while end < len(q) and q[end]:
        end += q[end] + 1
    end += 5  # the root label, QTYPE, QCLASS
    flags = 0x8000 | (q[2] << 8 & 0x7900) | 0x0080 | 3  # QR, opcode, RD; RA; NXDOMAIN
    s.sendto(q[:2] + flags.to_bytes(2, "big") + b"\x00\x01" + b"\x00" * 6 + q[12:end], peer)
PY
STUB_PID=$!
sleep 0.3
kill -0 "$STUB_PID" 2>/dev/null || { echo "the DNS stub could not bind $STUB_IP:$STUB_PORT" >&2; exit 1; }

# ---------------------------------------------------------------- Postfix → LMTP → Dovecot
MAIL_UID=$(id -u mail)
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$DC/run" "$DC/state"
chown postfix "$PF/data"
for u in user lat; do mkdir -p "$WORK/mail/$u/Maildir/"{new,cur,tmp}; done
chown -R mail:mail "$WORK/mail"
printf 'user@bench.test OK\nlat@bench.test OK\n' > "$WORK/mailboxes"
printf 'user@bench.test:{PLAIN}unused::::::\nlat@bench.test:{PLAIN}unused::::::\n' > "$WORK/users"
cat > "$DC/dovecot.conf" <<CF
instance_name = maildr-ingest-dovecot
base_dir = $DC/run
state_dir = $DC/state
protocols = lmtp
log_path = $DC/dovecot.log
ssl = no
mail_location = maildir:~/Maildir
first_valid_uid = $MAIL_UID
# The default, written out: each saved message file and its directory fsynced.
mail_fsync = optimized
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $WORK/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $WORK/users
  default_fields = uid=mail gid=mail home=$WORK/mail/%n
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
protocol lmtp {
  postmaster_address = postmaster@bench.test
}
CF
{ postfix_main_cf "$PF" "postfix.ingest.test" "$WORK"; cat <<CF
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = bench.test
virtual_mailbox_maps = texthash:$WORK/mailboxes
virtual_transport = lmtp:unix:$DC/run/lmtp
CF
} > "$PF/etc/main.cf"
{ postfix_master_cf "$PF_IP:$PF_PORT"; echo "lmtp       unix - - n - - lmtp"; } > "$PF/etc/master.cf"

dovecot -c "$DC/dovecot.conf"
for _ in $(seq 1 100); do [[ -s $DC/run/master.pid && -S $DC/run/lmtp ]] && break; sleep 0.1; done
[[ -S $DC/run/lmtp ]] || { echo "Dovecot did not start" >&2; exit 1; }
DOVECOT_PID=$(cat "$DC/run/master.pid")
POSTFIX_UP=1
postfix -c "$PF/etc" start >/dev/null 2>&1
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/$PF_IP/$PF_PORT") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/$PF_IP/$PF_PORT") 2>/dev/null || { echo "Postfix did not start" >&2; exit 1; }
# One message through the whole path first (into lat's maildir), then the warm-up.
timeout 60 smtp-source -m 1 -l 100 -f sender@bench.test -t lat@bench.test "$PF_IP:$PF_PORT"
t0=$EPOCHREALTIME; wait_delivered "$WORK/mail/lat/Maildir" 1 "$t0"
say "Postfix on $PF_IP:$PF_PORT → LMTP → Dovecot up; a first message delivered in $STORED_SECS s"
warm_up postfix "$PF_IP:$PF_PORT" lat@bench.test
wait_postfix_idle

t0=$EPOCHREALTIME
load postfix "$PF_IP:$PF_PORT" user@bench.test
PF_LOAD=$LOAD_SECS
wait_delivered "$WORK/mail/user/Maildir" "$MESSAGES" "$t0"
PF_STORED=$STORED PF_STORED_SECS=$STORED_SECS
(( PF_STORED == MESSAGES )) || CHECK_FAILED=1
say "postfix: $PF_STORED of $MESSAGES in Dovecot's maildir $PF_STORED_SECS s after the start"
say "postfix: maildr bench smtp (to lat@bench.test)"
latency postfix "$PF_IP:$PF_PORT" lat@bench.test
timeout 30 postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
POSTFIX_UP=""
stop_pid "$DOVECOT_PID"; DOVECOT_PID=""
say "Postfix and Dovecot stopped"

# ---------------------------------------------------------------- maildr, 3 sites
# cluster_view: "PRIMARY TERM" as bj's `cluster status` sees them ("- -" if it cannot).
cluster_view() {
    timeout 10 "$MAILDR" cluster status --config "$LAB/sites/bj/site.toml" --json 2>/dev/null | python3 -c "
import json, sys
try:
    d = json.load(sys.stdin)
    print(d.get('leader') or '-', d.get('term', '-'))
except ValueError:
    print('- -')" || echo "- -"
}

# lab_up RTT: a fresh lab in $LAB, RTT/2 on each direction of
# every link; sets PRIMARY, TERM, MX, IMAP.
lab_up() {
    local t0=$EPOCHREALTIME
    LAB_UP=1
    timeout 300 "$MAILDR" lab up --dir "$LAB" --net "$NET" --resolver "$STUB_IP:$STUB_PORT" --json \
        > "$WORK/lab-up.json" 2> "$WORK/lab-up.err" || { cat "$WORK/lab-up.err" >&2; return 1; }
    if (( $1 > 0 )); then
        local control name half=$(($1 / 2))
        control=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['links']['control'])" "$LAB/lab.json")
        for name in $(python3 -c "import json, sys; print(' '.join(json.load(open(sys.argv[1]))['links']['names']))" "$LAB/lab.json"); do
            curl -fsS --noproxy '*' -m 5 -X PUT -H 'content-type: application/json' \
                --data "{\"forward\":{\"latency_ms\":$half},\"backward\":{\"latency_ms\":$half}}" \
                "$control/links/$name/faults" >/dev/null
        done
    fi
    local deadline=$((SECONDS + 60))
    PRIMARY=""
    until [[ $PRIMARY == bj || $PRIMARY == sh ]]; do
        (( SECONDS < deadline )) || { echo "the lab has no data site as primary after 60 s" >&2; return 1; }
        sleep 0.5
        read -r PRIMARY TERM < <(cluster_view)
    done
    read -r MX IMAP < <(python3 -c "
import json, sys
s = next(s for s in json.load(open(sys.argv[1]))['sites'] if s['site'] == sys.argv[2])
print(f\"{s['ip']}:{s['ports']['smtp']} {s['ip']}:{s['ports']['imap']}\")" "$LAB/lab.json" "$PRIMARY")
    say "maildr lab up on $NET (RTT between sites $1 ms) in $(secs_since "$t0") s; primary $PRIMARY (term $TERM), MX $MX"
}

# refusal_reasons: why the data sites refused messages (their serve.log), counted.
refusal_reasons() {
    grep -h "ERROR maildr_smtp::session" "$LAB/sites/bj/serve.log" "$LAB/sites/sh/serve.log" 2>/dev/null \
        | sed -e 's/^[^ ]* *//' -e 's/session=[0-9a-f]* //' -e 's/peer=[0-9.:]* //' | cut -c1-220 \
        | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' || true
}

# inbox_count ADDRESS: the messages in ADDRESS's INBOX at the primary (IMAP STATUS).
inbox_count() {
    python3 - "$LAB/lab.json" "$IMAP" "$1" <<'PY'
import imaplib, json, sys
lab, at, address = sys.argv[1:4]
password = next(a["password"] for a in json.load(open(lab))["accounts"] if a["address"] == address)
host, port = at.rsplit(":", 1)
m = imaplib.IMAP4(host, int(port), timeout=30)
m.login(address, password)
typ, data = m.status("INBOX", "(MESSAGES)")
print(int(data[0].decode().split("MESSAGES", 1)[1].strip(" )")))
m.logout()
PY
}

declare -A MD_LOAD MD_STORED MD_AT MD_TERMS
for rtt in 0 "$RTT_MS"; do
    # Each lab in a directory of its own, kept (stopped) until the end: wiping the
    # last lab's thousands of files just before a run slows every file the next one
    # creates (ext4 passes over recently freed inodes for a while), which measured
    # the filesystem's aftermath, not the system.
    LAB=$WORK/lab-$rtt
    lab_up "$rtt"
    timeout 60 smtp-source -m 1 -l 100 -f sender@bench.test -t bob@example.test "$MX"
    warm_up "maildr-$rtt" "$MX" bob@example.test
    load "maildr-$rtt" "$MX" alice@example.test
    MD_LOAD[$rtt]=$LOAD_SECS
    MD_AT[$rtt]=$PRIMARY
    MD_STORED[$rtt]=$(inbox_count alice@example.test)
    read -r now term < <(cluster_view)
    (( MD_STORED[$rtt] == MESSAGES )) || CHECK_FAILED=1
    say "maildr-$rtt: alice's INBOX at $PRIMARY holds ${MD_STORED[$rtt]} of $MESSAGES; primary now $now (term $TERM before the warm-up, $term now)"
    say "maildr-$rtt: maildr bench smtp (to bob@example.test)"
    latency "maildr-$rtt" "$MX" bob@example.test
    read -r now2 term2 < <(cluster_view)
    MD_TERMS[$rtt]="$PRIMARY $TERM → $now $term → $now2 $term2"
    say "maildr-$rtt: primary now $now2 (term $term2)"
    reasons=$(refusal_reasons)
    [[ -z $reasons ]] || { say "maildr-$rtt: refusals at the data sites (warm-up, load and latency run), by reason:"; echo "$reasons"; }
    heal_links
    timeout 60 "$MAILDR" lab down --keep --dir "$LAB" >/dev/null
    LAB_UP=""
    say "lab down (kept until the end)"
done

# ---------------------------------------------------------------- summary
per_sec() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
PF_RATE=$(per_sec "$PF_STORED" "$PF_STORED_SECS")
echo
echo "== ingest: $MESSAGES messages of $SIZE B, smtp-source -A -d -s $CONCURRENCY; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== stored: Postfix, in Dovecot's maildir (s from the start to the last arrival); maildr, in the INBOX at the primary after the load (each 250 quorum-committed)"
echo "| system | RTT | concurrency | messages | stored | load s | stored s | messages/s | × Postfix |"
echo "|---|---|---|---|---|---|---|---|---|"
echo "| Postfix → LMTP → Dovecot | – | $CONCURRENCY | $MESSAGES | $PF_STORED | $PF_LOAD | $PF_STORED_SECS | $PF_RATE | 1.00 |"
for rtt in 0 "$RTT_MS"; do
    r=$(per_sec "${MD_STORED[$rtt]}" "${MD_LOAD[$rtt]}")
    echo "| maildr, 3 sites (at ${MD_AT[$rtt]}) | $rtt ms | $CONCURRENCY | $MESSAGES | ${MD_STORED[$rtt]} | ${MD_LOAD[$rtt]} | ${MD_LOAD[$rtt]} | $r | $(awk -v a="$r" -v b="$PF_RATE" 'BEGIN { printf "%.2f", a / b }') |"
done
echo
echo "== DATA→250 latency: maildr bench smtp, $MESSAGES messages of $SIZE B over $CONCURRENCY connections (at Postfix: 250 = in its queue)"
echo "| system | RTT | messages/s | p50 ms | p99 ms | max ms | accepted | refused |"
echo "|---|---|---|---|---|---|---|---|"
echo "| Postfix → LMTP → Dovecot | – | ${LAT[postfix]} |"
for rtt in 0 "$RTT_MS"; do echo "| maildr, 3 sites (at ${MD_AT[$rtt]}) | $rtt ms | ${LAT[maildr-$rtt]} |"; done
echo
echo "== warm-up refusals (not measured; two rounds each): postfix ${WARM[postfix]}; maildr at 0 ms ${WARM[maildr-0]}, at $RTT_MS ms ${WARM[maildr-$RTT_MS]}. Primary and term (before the warm-up → after the load → after the latency run): 0 ms ${MD_TERMS[0]}; $RTT_MS ms ${MD_TERMS[$RTT_MS]}"
say "done"
if [[ -n $CHECK_FAILED ]]; then
    echo "== some measured messages were refused or not stored: the figures above are not clean" >&2
    NOT_CLEAN=1; exit 1
fi
