#!/usr/bin/env bash
# Knot DNS (a server no one here wrote) takes maildr's RFC 2136 updates signed with
# TSIG: the failover replaces mail. and MX (never adds beside the old site), records
# maildr does not manage stay, and an update without the key or with a wrong key is
# refused, named as such, and changes nothing. Then a lab whose data sites have Knot
# in [[dns.providers]] publishes its steering there, and Knot's answers switch to
# the survivor when the primary is killed. Needs: knotd and dig (Debian packages
# knot and bind9-dnsutils, installed when missing), python3, a built maildr.
set -euo pipefail

MAILDR=${MAILDR:-target/debug/maildr}
WORK=$(mktemp -d)
LAB=$WORK/lab
NET=127.84
KNOT_PID=""
LAB_UP=""
cleanup() {
    if [[ -n "$LAB_UP" ]]; then $MAILDR lab down --dir "$LAB" >/dev/null 2>&1 || true; fi
    if [[ -n "$KNOT_PID" ]] && kill -0 "$KNOT_PID" 2>/dev/null; then kill -TERM "$KNOT_PID"; wait "$KNOT_PID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

missing=()
command -v knotd >/dev/null || missing+=(knot)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
install_missing "${missing[@]}"


# A loopback port free for both UDP and TCP (Knot and our TCP updates share it).
PORT=$(python3 -c '
import socket
for port in range(53530, 53630):
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", port))
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("127.0.0.1", port))
        u.close(); t.close(); print(port); break
    except OSError:
        pass
')
SECRET=$(head -c 32 /dev/urandom | base64)
WRONG=$(head -c 32 /dev/urandom | base64)
echo "$SECRET" > "$WORK/tsig.key"
echo "$WRONG" > "$WORK/wrong.key"
mkdir -p "$WORK/run" "$WORK/db" "$WORK/zones"

cat > "$WORK/zones/example.test.zone" <<ZONE
\$ORIGIN example.test.
\$TTL 60
@    SOA ns.example.test. hostmaster.example.test. 1 300 60 1209600 5
@    NS  ns.example.test.
ns   A   127.0.0.53
www  A   127.0.0.80
ZONE

cat > "$WORK/knot.conf" <<CONF
server:
    rundir: "$WORK/run"
    listen: 127.0.0.1@$PORT
control:
    listen: "$WORK/run/knot.sock"
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/db"
key:
  - id: maildr-update
    algorithm: hmac-sha256
    secret: $SECRET
acl:
  - id: maildr-update
    key: maildr-update
    action: update
template:
  - id: default
    storage: "$WORK/zones"
    file: "%s.zone"
zone:
  - domain: example.test
    acl: maildr-update
CONF

knotd --config "$WORK/knot.conf" 2> "$WORK/knotd.log" &
KNOT_PID=$!
q() { dig @127.0.0.1 -p "$PORT" +short +time=2 +tries=1 "$@"; }
for _ in $(seq 1 100); do
    [[ -n "$(q example.test SOA 2>/dev/null || true)" ]] && break
    kill -0 "$KNOT_PID" 2>/dev/null || { echo "knotd exited:"; cat "$WORK/knotd.log"; exit 1; }
    sleep 0.1
done
[[ -n "$(q example.test SOA)" ]] && ok "knotd serves example.test on 127.0.0.1:$PORT" || { fail "knotd not answering"; cat "$WORK/knotd.log"; exit 1; }

sites=(--zone example.test --site bj=127.0.10.1 --site sh=127.0.20.1 --ttl 5)
key=(--tsig-key-name maildr-update --tsig-algorithm hmac-sha256)
push() { $MAILDR dns push --server "127.0.0.1:$PORT" "${sites[@]}" "$@"; }
mail_a() { q mail.example.test A | sort | tr '\n' ' ' | sed 's/ $//'; }
mx() { q example.test MX | sort -n | tr '\n' ',' | sed 's/,$//'; }
expect() { # name, got, want
    if [[ "$2" == "$3" ]]; then ok "$1"; else fail "$1: got '$2', want '$3'"; fi
}

echo "== push with primary bj, MX bj,sh"
if push "${key[@]}" --tsig-secret-file "$WORK/tsig.key" --primary bj --mx bj,sh --serial 1; then
    ok "signed push accepted"; else fail "signed push refused"; fi
expect "mail. points at bj" "$(mail_a)" "127.0.10.1"
expect "MX lists bj first, then sh" "$(mx)" "10 bj.example.test.,20 sh.example.test."
expect "sh. has its address" "$(q sh.example.test A)" "127.0.20.1"
expect "apex SPF" "$(q example.test TXT)" '"v=spf1 mx -all"'

echo "== failover: primary sh, MX sh"
if push "${key[@]}" --tsig-secret-file "$WORK/tsig.key" --primary sh --mx sh --serial 2; then
    ok "failover push accepted"; else fail "failover push refused"; fi
expect "mail. points at sh only (replaced, not added)" "$(mail_a)" "127.0.20.1"
expect "MX lists sh only" "$(mx)" "10 sh.example.test."
expect "records maildr does not manage stay" "$(q www.example.test A)" "127.0.0.80"
expect "the owner's NS stays" "$(q example.test NS)" "ns.example.test."

echo "== refusals change nothing"
expect_refused() { # name, want-in-message, push args...
    local name=$1 want=$2; shift 2
    local out
    if out=$(push "$@" 2>&1); then
        fail "$name (accepted)"
    elif grep -qE "$want" <<<"$out"; then ok "$name: $(grep -m1 -E "$want" <<<"$out")"
    else fail "$name (message does not name the refusal): $out"; fi
}
expect_refused "unsigned update refused" "refused: (NOTAUTH|REFUSED)" --primary bj --mx bj,sh --serial 3
expect_refused "wrong secret refused" "refused: NOTAUTH.*BADSIG" \
    "${key[@]}" --tsig-secret-file "$WORK/wrong.key" --primary bj --mx bj,sh --serial 3
expect_refused "unknown key name refused" "refused: NOTAUTH.*BADKEY" \
    --tsig-key-name no-such-key --tsig-secret-file "$WORK/tsig.key" --primary bj --mx bj,sh --serial 3
expect_refused "unknown primary refused before sending" "not a data site" \
    "${key[@]}" --tsig-secret-file "$WORK/tsig.key" --primary hz --mx sh --serial 3
expect "mail. unchanged after the refusals" "$(mail_a)" "127.0.20.1"
expect "MX unchanged after the refusals" "$(mx)" "10 sh.example.test."

echo "== no primary: mail. is deleted"
if push "${key[@]}" --tsig-secret-file "$WORK/tsig.key" --mx sh --serial 4; then
    ok "push without primary accepted"; else fail "push without primary refused"; fi
expect "mail. gone" "$(mail_a)" ""
expect "MX still sh" "$(mx)" "10 sh.example.test."

echo "== a lab with Knot in [[dns.providers]]: the primary publishes, a failover switches Knot"
# The same tables an operator puts in each data site's config; the secret file is
# found beside this file.
cat > "$WORK/providers.toml" <<TOML
[[dns.providers]]
kind = "rfc2136"
server = "127.0.0.1:$PORT"
zone = "example.test"
tsig_key_name = "maildr-update"
tsig_algorithm = "hmac-sha256"
tsig_secret_file = "tsig.key"
TOML
BJ=$NET.10.1; SH=$NET.20.1
LAB_UP=yes
$MAILDR lab up --dir "$LAB" --net "$NET" --dns-provider-config "$WORK/providers.toml" >/dev/null
# wait_for NAME WANT_MAIL WANT_MX SECONDS: poll Knot until both match; prints the wait in ms.
wait_for() {
    local start end
    start=$(date +%s%N); end=$(( $(date +%s) + $4 ))
    while (( $(date +%s) < end )); do
        if [[ "$(mail_a)" == "$2" && "$(mx)" == "$3" ]]; then
            ok "$1 ($(( ($(date +%s%N) - start) / 1000000 )) ms)"; return
        fi
        sleep 0.1
    done
    fail "$1: mail.=$(mail_a) MX=$(mx)"
}
soa() { q example.test SOA | cut -d' ' -f3; }
wait_for "Knot names the lab's primary bj for mail. and MX bj,sh" "$BJ" "10 bj.example.test.,20 sh.example.test." 20
expect "Knot has sh's address from the lab" "$(q sh.example.test A)" "$SH"
published() { grep -c "published to the external providers" "$LAB/sites/$1/serve.log" || true; }
(( $(published bj) >= 1 && $(published sh) == 0 )) && ok "only the primary bj published (bj $(published bj), sh 0)" \
    || fail "publishes before the failover: bj $(published bj), sh $(published sh)"
soa_before=$(soa)
$MAILDR lab kill --dir "$LAB" bj >/dev/null
wait_for "after killing bj, Knot names sh for mail. and MX" "$SH" "10 sh.example.test." 30
(( $(soa) > soa_before )) && ok "Knot bumped its own SOA serial ($soa_before -> $(soa))" \
    || fail "Knot's SOA serial $soa_before -> $(soa)"
expect "records maildr does not manage stay after the lab's updates" "$(q www.example.test A)" "127.0.0.80"
expect "the owner's NS stays after the lab's updates" "$(q example.test NS)" "ns.example.test."
(( $(published sh) >= 1 )) && ok "sh published once it was primary" || fail "sh's log does not mention a publish"

echo "knot_rfc2136: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
