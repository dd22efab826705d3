# Shared by the interop scripts: ok/fail counting and installing missing peers.
# Source it after `set -euo pipefail`.

passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# install_missing PACKAGE... — install Debian packages (none given: nothing to do).
install_missing() {
    (( $# )) || return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}
