#!/usr/bin/env bash
# The README's main command in CI: `maildr drill run site-outage` on a fresh
# machine starts its own lab, runs the drill, prints the summary and the report
# path, and stops the lab. The check fails unless the drill passes, the lab is
# gone afterwards, and the report opens in headless Chromium
# (report_chromium.sh; the screenshot and the report are CI artifacts).
set -euo pipefail
cd "$(dirname "$0")/../.."
MAILDR=${MAILDR:-target/debug/maildr}
ARTIFACTS=${ARTIFACT_DIR:-target/artifacts}
mkdir -p "$ARTIFACTS"
WORK=$(mktemp -d)
cleanup() {
    "$MAILDR" lab down --dir "$WORK/lab" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

rc=0
"$MAILDR" drill run site-outage --net 127.120 --lab-dir "$WORK/lab" --data-dir "$WORK/drills" \
    --report-dir "$WORK/report" > "$WORK/summary.txt" || rc=$?
cat "$WORK/summary.txt"
cp "$WORK/report/report.html" "$WORK/report/report.json" "$WORK/report/report.md" "$ARTIFACTS/" 2>/dev/null || true
[[ $rc -eq 0 ]] || { echo "FAIL the site-outage drill exited $rc"; exit 1; }
grep -q "PASSED" "$WORK/summary.txt" || { echo "FAIL no PASSED verdict in the summary"; exit 1; }
grep -q "Report: $WORK/report/report.html" "$WORK/summary.txt" || { echo "FAIL the summary names no report path"; exit 1; }
[[ ! -e "$WORK/lab/lab.json" ]] || { echo "FAIL the drill's lab was left behind"; exit 1; }
"$MAILDR" audit verify --data-dir "$WORK/drills"
bash tests/interop/report_chromium.sh "$WORK/report/report.html"
echo "ok   site-outage drill passed, lab stopped, report opens in Chromium"
