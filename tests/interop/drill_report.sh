#!/usr/bin/env bash
# The README's main command in CI: `maildr drill run site-outage` on a fresh
# machine starts its own lab, runs the drill, prints the summary and the report
# path, and stops the lab. The check fails unless the drill passes, the lab is
# gone afterwards, and the report opens in headless Chromium
# (report_chromium.sh; the screenshot and the report are CI artifacts).
# Then the same report.json is rendered in Chinese (`drill report --json FILE
# --lang zh`), without a second drill: its report.json must be byte for byte the
# English one's, its page Chinese, and it too must open in Chromium (with a
# font that draws Chinese, installed by report_chromium.sh; screenshot
# report-zh.png). Rendering the archived drill again in English must give the
# very page the drill wrote, and the archive itself is never a target.
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

# ---------------------------------------------------------- the same report in Chinese
ZH=$WORK/report-zh
"$MAILDR" drill report --json "$WORK/report/report.json" --lang zh --out "$ZH"
cp "$ZH/report.html" "$ARTIFACTS/report-zh.html"; cp "$ZH/report.md" "$ARTIFACTS/report-zh.md"
cmp "$WORK/report/report.json" "$ZH/report.json" \
    || { echo "FAIL report.json differs between the English and the Chinese rendering"; exit 1; }
grep -q '<html lang="en">' "$WORK/report/report.html" || { echo "FAIL the English page does not declare lang=\"en\""; exit 1; }
grep -q '<h2>Recovery time (RTO)</h2>' "$WORK/report/report.html" || { echo "FAIL no English heading in the English page"; exit 1; }
grep -q '<html lang="zh-CN">' "$ZH/report.html" || { echo "FAIL the Chinese page does not declare lang=\"zh-CN\""; exit 1; }
for heading in 概要 '恢复时间 (RTO)' '恢复点 (RPO)' 预案阶段; do
    grep -qF "<h2>$heading</h2>" "$ZH/report.html" || { echo "FAIL no Chinese heading $heading in the Chinese page"; exit 1; }
done
if grep -qF '<h2>Recovery time (RTO)</h2>' "$ZH/report.html"; then echo "FAIL an English heading in the Chinese page"; exit 1; fi
grep -qF '# 演练报告：' "$ZH/report.md" || { echo "FAIL the Chinese Markdown has no Chinese title"; exit 1; }
echo "ok   report.json rendered in Chinese: the same report.json, Chinese headings"
bash tests/interop/report_chromium.sh "$ZH/report.html" report-zh.png

# The archived drill rendered again in English is the page the drill wrote.
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["drill_id"])' "$WORK/report/report.json")
"$MAILDR" drill report "$id" --data-dir "$WORK/drills" --lang en --out "$WORK/report-en"
cmp "$WORK/report/report.html" "$WORK/report-en/report.html" \
    || { echo "FAIL the archived drill rendered again differs from the drill's own report.html"; exit 1; }
if "$MAILDR" drill report "$id" --data-dir "$WORK/drills" --lang zh --out "$WORK/drills/reports/x" 2>"$WORK/refused"; then
    echo "FAIL drill report wrote into the archive"; exit 1
fi
grep -q "inside the drill archive" "$WORK/refused" || { echo "FAIL the refusal does not say why: $(cat "$WORK/refused")"; exit 1; }
echo "ok   the archived drill renders again identically, and the archive is never written"
