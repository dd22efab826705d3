# Shared by the interop scripts that run a lab: source it after `set -euo
# pipefail` with NET set (each script its own net, so they never collide). It sets
# MAILDR, a scratch WORK directory and LAB inside it, and on exit always stops the
# lab's processes (`lab down`) and removes WORK.

MAILDR=${MAILDR:-target/debug/maildr}
WORK=$(mktemp -d)
LAB=$WORK/lab
lab_cleanup() { $MAILDR lab down --dir "$LAB" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap lab_cleanup EXIT
