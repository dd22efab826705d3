#!/usr/bin/env bash
# swaks (a Perl SMTP client no one here wrote) against a real maildr site:
# submission with STARTTLS + AUTH PLAIN and LOGIN, implicit TLS, MX, and the
# refusals swaks users meet. Then the store, read after the site stopped, holds
# exactly the accepted messages. Needs: swaks (Debian package), a built maildr.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
start_site alice:alice-pw bob:bob-pw
MX=$(port smtp mx); SUB=$(port smtp submission); SUBS=$(port smtp submissions)
common=(--server 127.0.0.1 --timeout 20 --hide-all --tls-ca-path "$CA")

if swaks "${common[@]}" --port "$SUB" --tls --auth PLAIN --auth-user alice@example.test --auth-password alice-pw \
      --from alice@example.test --to bob@example.test --header "Subject: swaks-starttls-plain"; then
    ok "submission STARTTLS + AUTH PLAIN"; else fail "submission STARTTLS + AUTH PLAIN"; fi
if swaks "${common[@]}" --port "$SUB" --tls --auth LOGIN --auth-user alice@example.test --auth-password alice-pw \
      --from alice@example.test --to bob@example.test --header "Subject: swaks-starttls-login"; then
    ok "submission STARTTLS + AUTH LOGIN"; else fail "submission STARTTLS + AUTH LOGIN"; fi
if swaks "${common[@]}" --port "$SUBS" --tlsc --auth PLAIN --auth-user bob@example.test --auth-password bob-pw \
      --from bob@example.test --to alice@example.test --header "Subject: swaks-implicit-tls"; then
    ok "implicit TLS submission"; else fail "implicit TLS submission"; fi
if swaks "${common[@]}" --port "$MX" --from carol@outside.test --to alice@example.test --header "Subject: swaks-mx"; then
    ok "MX delivery"; else fail "MX delivery"; fi

# Refusals: swaks exits non-zero, and the transcript shows the reply code.
expect_refusal() { # name, expected reply, swaks args...
    local name=$1 want=$2; shift 2
    local out
    if out=$(swaks --server 127.0.0.1 --timeout 20 --tls-ca-path "$CA" "$@" 2>&1); then
        fail "$name (accepted)"
    elif grep -qE "^<[~*]*[[:space:]]+$want" <<<"$out"; then ok "$name"
    else fail "$name (no $want)"; echo "$out" | tail -5; fi
}
expect_refusal "wrong password → 535" "535 5.7.8" --port "$SUB" --tls --auth PLAIN \
    --auth-user alice@example.test --auth-password wrong --from alice@example.test --to bob@example.test
expect_refusal "relay → 550 5.7.1" "550 5.7.1" --port "$MX" --from carol@outside.test --to dave@elsewhere.test
expect_refusal "unknown user → 550 5.1.1" "550 5.1.1" --port "$MX" --from carol@outside.test --to nobody@example.test
expect_refusal "forged sender → 553 5.7.1" "553 5.7.1" --port "$SUBS" --tlsc --auth PLAIN \
    --auth-user alice@example.test --auth-password alice-pw --from bob@example.test --to bob@example.test
expect_refusal "no AUTH → 530" "530 5.7.0" --port "$SUB" --tls --from alice@example.test --to bob@example.test

stop_site
subjects() { $MAILDR admin --data-dir "$DIR" messages "$1" --json | python3 -c "import json,sys; print(' '.join(sorted(json.loads(l)['subject'] for l in sys.stdin)))"; }
[[ "$(subjects bob@example.test)" == "swaks-starttls-login swaks-starttls-plain" ]] && ok "bob holds exactly the accepted mail" || { fail "bob's INBOX: $(subjects bob@example.test)"; }
[[ "$(subjects alice@example.test)" == "swaks-implicit-tls swaks-mx" ]] && ok "alice holds exactly the accepted mail" || { fail "alice's INBOX: $(subjects alice@example.test)"; }
$MAILDR admin --data-dir "$DIR" check >/dev/null && ok "store check" || fail "store check"

echo "swaks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
