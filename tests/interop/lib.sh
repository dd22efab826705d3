# Shared by the interop scripts: a private maildr site on loopback ephemeral
# ports, started and always stopped by its pid, and ok/fail counting.
# Source it after `set -euo pipefail`; then call `start_site USER:PASSWORD...`.

MAILDR=${MAILDR:-target/debug/maildr}
WORK=$(mktemp -d)
DIR=$WORK/site
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# start_site alice:alice-pw bob:bob-pw — accounts of example.test, then serve,
# every listener on $SITE_IP (default 127.0.0.1) at an ephemeral port.
start_site() {
    local ip=${SITE_IP:-127.0.0.1}
    $MAILDR admin --data-dir "$DIR" domain add example.test >/dev/null
    local account
    for account in "$@"; do
        echo "${account#*:}" | $MAILDR admin --data-dir "$DIR" user add "${account%%:*}@example.test" --password-stdin >/dev/null
    done
    cat > "$WORK/site.toml" <<TOML
[site]
data_dir = "$DIR"
[smtp]
mx_listen = "$ip:0"
submission_listen = "$ip:0"
submissions_listen = "$ip:0"
[imap]
plain_listen = "$ip:0"
tls_listen = "$ip:0"
[log]
level = "warn"
TOML
    $MAILDR serve --config "$WORK/site.toml" >/dev/null &
    PID=$!
    for _ in $(seq 1 300); do
        [[ -f "$DIR/run/endpoints.json" ]] && grep -q "\"pid\": $PID" "$DIR/run/endpoints.json" && break
        sleep 0.1
    done
    CA="$DIR/tls/ca.pem"
}

# port smtp mx | port imap imaps — a listener's port from the site's endpoints.
port() { python3 -c "import json; print(json.load(open('$DIR/run/endpoints.json'))['$1']['$2'].rsplit(':',1)[1])"; }

stop_site() { kill -TERM "$PID"; wait "$PID"; PID=""; }
