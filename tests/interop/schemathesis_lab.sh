#!/usr/bin/env bash
# schemathesis against a data site of a running lab, the control plane included:
# the control endpoints (health and its history, events, DNS records, forced
# failover) answer from a real control plane, cluster operations reach real peers,
# and still no answer may be a server error (5xx). The lab runs on its own net and
# is always stopped (trap), whatever happens.
# Needs: a built maildr, python3 (venv), PyPI the first time (see schemathesis.sh).
set -euo pipefail

NET=127.85
source "$(dirname "$0")/lab.sh"

# With backups: the backup routes take real backups, verify and refuse restores.
$MAILDR lab up --dir "$LAB" --net "$NET" --backup >/dev/null
status=$($MAILDR lab status --dir "$LAB" --json)
field() { python3 -c "import json,sys; s=json.load(sys.stdin); print($1)" <<<"$status"; }
# sh is a follower: writes it gets are forwarded to the primary, as in production.
API=$(field '[x["ip"] + ":" + str(x["ports"]["http"]) for x in s["sites"] if x["site"] == "sh"][0]')
MAILDR_API_TOKEN=$(field 's["api_token"]')
export MAILDR_API_TOKEN
MAILDR_API_URL="http://$API" MAILDR_API_CONTROL_PLANE=1 MAILDR_API_BACKUPS=1 bash "$(dirname "$0")/schemathesis.sh"
# The lab survived the fuzzing: every process is still alive.
$MAILDR lab status --dir "$LAB" >/dev/null || { echo "a lab process died under schemathesis" >&2; exit 1; }
echo "schemathesis against the lab's control plane: no server error"
