#!/usr/bin/env bash
# A drill report as a browser sees it. Headless Chromium (Debian `chromium`)
# opens report.html with its console logged to stderr; the check fails when
# Chromium exits non-zero, when the page logs anything to the console (the
# report has no script, so any message is a fault: a script error, a blocked
# or missing resource), or when no screenshot comes out. Debian's
# python3-html5lib then parses the page as HTML5 and every parse error fails,
# and the file must reference nothing outside itself.
# Reports are in English or Chinese, and an English one may still show Chinese
# data (site names, replies), so a font that draws Chinese is installed from
# Debian (fonts-wqy-microhei) when fontconfig knows none; a page that declares
# lang="zh-CN" fails unless fontconfig has one for Chinese.
# The screenshot goes to ${ARTIFACT_DIR:-target/artifacts}/NAME (report.png).
# Usage: report_chromium.sh path/to/report.html [NAME.png]
set -euo pipefail

HTML=${1:?usage: report_chromium.sh REPORT.html [NAME.png]}
[[ -f "$HTML" ]] || { echo "FAIL no such file: $HTML"; exit 1; }
ARTIFACTS=${ARTIFACT_DIR:-target/artifacts}
mkdir -p "$ARTIFACTS"
PNG=$ARTIFACTS/${2:-report.png}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

missing=()
command -v chromium >/dev/null || missing+=(chromium)
/usr/bin/python3 -c 'import html5lib' 2>/dev/null || missing+=(python3-html5lib)
command -v fc-list >/dev/null || missing+=(fontconfig)
# `fc-list :lang=zh-cn` lists the fonts that cover Simplified Chinese.
if ! command -v fc-list >/dev/null || [[ -z "$(fc-list :lang=zh-cn family)" ]]; then
    missing+=(fonts-wqy-microhei)
fi
install_missing "${missing[@]}"

if grep -q '<html lang="zh-CN">' "$HTML"; then
    zh_fonts=$(fc-list :lang=zh-cn family | sort -u | tr '\n' ';')
    if [[ -n "$zh_fonts" ]]; then ok "the page is Chinese and fontconfig draws Chinese with: $zh_fonts"
    else fail "the page is Chinese but no installed font covers Chinese"; fi
fi

rm -f "$PNG"
# Nothing outside this machine resolves, so a page that needed the network
# would show it. A profile of its own keeps other Chromium runs out of the way.
rc=0
timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$WORK/profile" --enable-logging=stderr --v=0 \
    --host-resolver-rules="MAP * ~NOTFOUND" --window-size=1280,2400 \
    --screenshot="$PNG" "file://$(realpath "$HTML")" >"$WORK/out" 2>"$WORK/err" || rc=$?
if (( rc == 0 )); then
    ok "chromium rendered $HTML"
else
    fail "chromium exited with $rc"; tail -n 20 "$WORK/err" | sed 's/^/  /'
fi

# Console lines look like `[pid:tid:time:INFO:CONSOLE:1] "message", source: ...`
# (older versions: `CONSOLE(1)`), whatever the level the page used.
if grep -E ':CONSOLE[:(]' "$WORK/err" >"$WORK/console"; then
    fail "the page logged to the console:"; sed 's/^/  /' "$WORK/console"
else
    ok "nothing on the console: no script error, nothing failed to load"
fi

if [[ -s "$PNG" ]]; then ok "screenshot written to $PNG"; else fail "no screenshot at $PNG"; fi

if /usr/bin/python3 - "$HTML" <<'PY'
import sys
import html5lib

parser = html5lib.HTMLParser(strict=False)
with open(sys.argv[1], encoding="utf-8") as f:
    parser.parse(f.read())
for (line, col), code, data in parser.errors[:20]:
    print(f"  line {line} col {col}: {code} {data or ''}")
sys.exit(1 if parser.errors else 0)
PY
then
    ok "valid HTML5: html5lib finds no parse error"
else
    fail "html5lib finds parse errors"
fi

if grep -Eio '<script|<link|<iframe|<img|src=|url\(|@import' "$HTML" | sort -u >"$WORK/refs" && [[ -s "$WORK/refs" ]]; then
    fail "the page is not self-contained: $(tr '\n' ' ' <"$WORK/refs")"
else
    ok "self-contained: no script, no link, no external reference"
fi

echo "report chromium: $passed passed, $failed failed"
(( failed == 0 ))
