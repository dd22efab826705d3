#!/usr/bin/env bash
# Long mode of the randomised failure test: many fault schedules (kill, pause with
# SIGSTOP/SIGCONT, partition through the fault proxy, restart) under a bounded SMTP
# load, each checked for lost or duplicated acknowledged mail.
#
#   scripts/fault-schedules.sh [RUNS] [FIRST_SEED]
#
# A failure prints the seed; replay it with MAILDR_FAULT_SEED=<seed> MAILDR_FAULT_RUNS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-25}"
seed="${2:-$(( $(date +%s) % 1000000 ))}"
echo "fault schedules: $runs runs from seed $seed"
MAILDR_FAULT_RUNS="$runs" MAILDR_FAULT_SEED="$seed" \
    cargo test -p maildr --test replication randomized_fault_schedules -- --nocapture
