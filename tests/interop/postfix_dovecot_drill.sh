#!/usr/bin/env bash
# A drill of a mail system that is not maildr: stock Postfix + Dovecot from
# Debian's packages as an active/standby pair (tests/interop/pair/pair.sh: the
# standby fed by `doveadm sync` every 5 s, Knot DNS steered by a watchdog with
# RFC 2136 updates), drilled through a deployment file with `control = "none"`
# and hooks. The very site-outage scenario maildr's lab passes runs against it,
# with the same load, and the report shows what the pair really gives: its RTO
# from the clients' side and the acknowledged mail its survivor lacked during
# the outage (the pair's RPO), and whether that mail came back after the
# failback. The check fails when the drill cannot run or produces no report, or
# when the report lacks a measured figure; the pair's verdict is whatever it
# earns. Needs root (Postfix and Dovecot drop privileges), a built maildr;
# installs postfix, dovecot, knot and dnsutils when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
MAILDR=$(realpath "${MAILDR:-target/debug/maildr}")
ARTIFACTS=${ARTIFACT_DIR:-target/artifacts}
mkdir -p "$ARTIFACTS"
source tests/interop/checks.sh

missing=()
command -v postfix >/dev/null || missing+=(postfix)
# Each Dovecot service the pair runs is its own package: dovecot-core alone
# (which a benchmark may have installed) has neither.
[[ -x /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
[[ -x /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
command -v knotd >/dev/null || missing+=(knot)
command -v nsupdate >/dev/null || missing+=(bind9-dnsutils)
command -v openssl >/dev/null || missing+=(openssl)
if (( ${#missing[@]} )); then
    # Postfix's installer asks how to configure the machine's own mail: not at all.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    install_missing "${missing[@]}"
    # Where the installer started the distribution's own services, they would
    # hold ports the pair binds: stop them (the pair runs its own instances).
    for service in dovecot postfix knot; do service "$service" stop >/dev/null 2>&1 || true; done
fi

WORK=$(mktemp -d)
chmod 755 "$WORK"
PAIR=$WORK/pair
cleanup() {
    bash tests/interop/pair/pair.sh "$PAIR" down >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

bash tests/interop/pair/pair.sh "$PAIR" up
ok "Postfix + Dovecot pair up: pa active, pb standby, Knot steering mail. and MX"

# The shipped site-outage scenario, pointed at the pair's deployment file. A
# drill of maildr aborts at the first acknowledged message missing; this one goes
# on, so the report also shows whether the missing mail comes back after the
# failback.
PLAN=$WORK/postfix-dovecot-site-outage.toml
sed -e 's|^name = "site-outage"|name = "postfix-dovecot-site-outage"|' \
    -e "s|^target = { kind = \"lab\" }|target = { kind = \"deployment\", file = \"$PAIR/deployment.toml\" }|" \
    -e 's|^\[abort\]$|[abort]\nacknowledged_lost = false|' \
    scenarios/site-outage.toml > "$PLAN"
grep -q '^acknowledged_lost = false' "$PLAN" || { fail "the scenario's [abort] was not amended"; exit 1; }
grep -qF 'kind = "deployment"' "$PLAN" || { fail "the scenario's target line was not replaced"; exit 1; }
"$MAILDR" drill approve "$PLAN" --by mail-ops-lead --data-dir "$WORK/drills" >/dev/null
"$MAILDR" drill approve "$PLAN" --by it-director --data-dir "$WORK/drills" >/dev/null

rc=0
"$MAILDR" drill run "$PLAN" --data-dir "$WORK/drills" --report-dir "$WORK/report" > "$WORK/summary.txt" || rc=$?
cat "$WORK/summary.txt"
cp "$WORK/report/report.html" "$ARTIFACTS/report-postfix-dovecot.html" 2>/dev/null || true
cp "$WORK/report/report.json" "$ARTIFACTS/report-postfix-dovecot.json" 2>/dev/null || true
cp "$PAIR/pair.log" "$ARTIFACTS/postfix-dovecot-pair.log" 2>/dev/null || true
if (( rc > 1 )); then
    fail "the drill of the pair could not run (exit $rc)"
    exit 1
fi
ok "the drill ran to its end (exit $rc: $([[ $rc == 0 ]] && echo passed || echo objectives missed))"
[[ -s "$WORK/report/report.html" ]] && ok "the report was written" || fail "no report.html"

python3 - "$WORK/report/report.json" "$PAIR/pair.log" <<'PY' && ok "the report holds the pair's measured RTO and RPO" || fail "the report lacks a measured figure"
import json, sys
r = json.load(open(sys.argv[1]))
pair_log = open(sys.argv[2]).read()
problems = []
if r["environment"]["target"] != "deployment":
    problems.append("target is not the deployment")
if r.get("abort_reason"):
    problems.append(f"aborted: {r['abort_reason']}")
rto, rpo = r["rto"], r["rpo"]
for field in ("first_smtp_ok_ms", "first_imap_ok_ms", "dns_served_ms"):
    if rto.get(field) is None:
        problems.append(f"rto.{field} not measured")
if rpo["acknowledged"] < 1000:
    problems.append(f"only {rpo['acknowledged']} acknowledged messages (the load should give thousands)")
if rpo.get("missing_during_outage") is None:
    problems.append("no loss check read the survivor during the outage")
if sorted(rpo["reconciled_at"]) != ["pa", "pb"]:
    problems.append(f"reconciled at {rpo['reconciled_at']}, not at both sites")
if "watchdog: pa missed" not in pair_log:
    problems.append("the pair's watchdog never failed over: the outage was not the pair's own")
start = next(e["detail"] for e in r["timeline"] if e["kind"] == "drill_started")
if "no control plane" not in start:
    problems.append(f"the timeline does not say the primary came from DNS: {start}")
survivor = next((s for s in r["steps"] if s["name"] == "The survivor holds every acknowledged message"), None)
if survivor is None:
    problems.append("the survivor check did not run")
print(f"pair: RTO first SMTP 250 {rto.get('first_smtp_ok_ms')} ms, first IMAP fetch {rto.get('first_imap_ok_ms')} ms, "
      f"DNS at the survivor {rto.get('dns_served_ms')} ms; {rpo['acknowledged']} acknowledged, "
      f"{rpo.get('missing_during_outage')} missing at the survivor during the outage, {rpo['lost']} lost at the end, "
      f"{rpo['duplicated']} duplicated; verdict {r['verdict']}")
if survivor is not None:
    print(f"survivor check: {survivor['outcome']}: {survivor.get('detail', '')[:300]}")
for p in problems:
    print("problem:", p)
sys.exit(1 if problems else 0)
PY

bash tests/interop/pair/pair.sh "$PAIR" down
if pgrep -f "$PAIR" >/dev/null; then fail "processes of the pair are left"; else ok "every process of the pair stopped"; fi

echo "postfix_dovecot_drill: $passed passed, $failed failed"
(( failed == 0 ))
