#!/usr/bin/env bash
# Fuzz the admin HTTP API against its own OpenAPI document with schemathesis (a
# property-based API tester no one here wrote): whatever it sends, no answer may
# be a server error (5xx).
#
# Against a running site: MAILDR_API_URL=http://127.0.0.1:PORT MAILDR_API_TOKEN=T $0
# Without MAILDR_API_URL it builds and starts the `serve_api` example of maildr-api
# (a single site with only the API) on an ephemeral port, and stops it by its pid.
# The control-plane endpoints answer 503 "control plane not running" by design when
# no control plane is installed; they are left out unless MAILDR_API_CONTROL_PLANE=1
# (schemathesis_lab.sh runs this against a lab's data site with its control plane).
# Needs: python3 (venv), network access to PyPI the first time, cargo.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# 4.x reads OpenAPI 3.1 (what utoipa 5 writes) natively; works with python 3.9+.
SCHEMATHESIS_VERSION=4.32.5
VENV=$TARGET/schemathesis-venv
MAX_EXAMPLES=${MAILDR_ST_MAX_EXAMPLES:-100}
SEED=${MAILDR_ST_SEED:-$RANDOM}

WORK=$(mktemp -d)
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ! -x "$VENV/bin/st" ]] || ! "$VENV/bin/pip" show schemathesis 2>/dev/null | grep -x "Version: $SCHEMATHESIS_VERSION" >/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [[ -z "${MAILDR_API_URL:-}" ]]; then
    if [[ -z "${MAILDR_API_TOKEN:-}" ]]; then
        MAILDR_API_TOKEN=$(python3 -c "import secrets; print(secrets.token_hex(16))")
    fi
    export MAILDR_API_TOKEN
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --quiet -p maildr-api --example serve_api)
    # The token reaches the example through the environment, not its command line.
    "$TARGET/debug/examples/serve_api" --data-dir "$WORK/site" --listen 127.0.0.1:0 > "$WORK/serve.out" &
    PID=$!
    for _ in $(seq 1 300); do
        grep -q '^listening on ' "$WORK/serve.out" && break
        kill -0 "$PID" 2>/dev/null || { echo "serve_api exited early" >&2; exit 1; }
        sleep 0.1
    done
    ADDR=$(sed -n 's/^listening on //p' "$WORK/serve.out")
    [[ -n "$ADDR" ]] || { echo "serve_api did not say where it listens" >&2; exit 1; }
    MAILDR_API_URL="http://$ADDR"
fi
: "${MAILDR_API_TOKEN:?set MAILDR_API_TOKEN to the bearer token of the API}"

# Routes of services the site under test does not run answer 503 by design: left
# out unless the caller says the site runs them.
skip=()
if [[ "${MAILDR_API_CONTROL_PLANE:-0}" != 1 ]]; then
    skip+=('health' 'health/history' 'events' 'dns/records' 'cluster/failover')
fi
if [[ "${MAILDR_API_BACKUPS:-0}" != 1 ]]; then
    skip+=('backups' 'backups/verify' 'restore')
fi
exclude=()
if (( ${#skip[@]} )); then
    exclude=(--exclude-path-regex "^/api/($(IFS='|'; echo "${skip[*]}"))\$")
fi

echo "schemathesis $SCHEMATHESIS_VERSION against $MAILDR_API_URL (seed $SEED; replay with MAILDR_ST_SEED=$SEED)"
# From the scratch directory: schemathesis leaves its example database in the working directory.
cd "$WORK"
"$VENV/bin/st" run "$MAILDR_API_URL/api/openapi.json" \
    --header "Authorization: Bearer $MAILDR_API_TOKEN" \
    --checks not_a_server_error \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --request-timeout 30 \
    --workers 2 \
    --no-color \
    "${exclude[@]}"
