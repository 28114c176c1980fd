#!/usr/bin/env bash
# Instructions per online order in the ledger, counted by valgrind's callgrind: a figure that
# does not move with the machine's load, for comparing two builds one after the other.
#
#   bash benches/ledger_ir.sh BIN [BIN...]
#
# For each binary: a fresh ledger (the benches' setup) served under callgrind, funded and
# warmed up by `cashless bench ledger` with one client, then the counters zeroed, DURATION
# seconds of online orders from one client (no group commit, so the work per order does not
# depend on timing), the counters dumped. Prints instructions per approved order.
# Environment (defaults): DURATION=15 CARDS=50 BENCH_DIR=${TMPDIR:-/tmp}
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-15}
CARDS=${CARDS:-50}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
BENCH_NAME=ledger_ir.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
[ "$#" -gt 0 ] || die "usage: bash benches/ledger_ir.sh BIN [BIN...]"
for tool in valgrind callgrind_control callgrind_annotate; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install valgrind)"
done

measure() { # bin
    BIN=$1
    TMP=$(mktemp -d "$BENCH_DIR/cashless-ir.XXXXXX")
    setup_bench_ledger
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" "$BIN" ledger \
        --config "$TMP/ledger.toml" serve --listen 127.0.0.1:0 >"$TMP/serve.out" 2>"$TMP/serve.err" &
    local pid=$! addr="" bar chk approved ir
    for _ in $(seq 1200); do
        addr=$(sed -n 's/^listening on //p' "$TMP/serve.out" | head -n1)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || die "the ledger under valgrind did not start (see $TMP/serve.err)"
    bar=$(new_token bench-bar bar)
    chk=$(new_token bench-checkpoint checkpoint)
    export CASHLESS_LEDGER_TOKEN=$bar CASHLESS_FUNDING_TOKEN=$chk
    "$BIN" bench ledger --url "http://$addr" --clients 1 --duration 2 --warmup 2 --cards "$CARDS" \
        --card-prefix B1 --fund --fund-cents 1000000 --json >"$TMP/warm.out"
    callgrind_control -z "$pid" >/dev/null
    "$BIN" bench ledger --url "http://$addr" --clients 1 --duration "$DURATION" --warmup 0 \
        --cards "$CARDS" --card-prefix B1 --json >"$TMP/run.out"
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    approved=$(jnum approved "$TMP/run.out")
    ir=$(callgrind_annotate "$(ls "$TMP"/cg.*.1)" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
    awk -v b="$BIN" -v n="$approved" -v ir="$ir" \
        'BEGIN { printf "%s: %d orders, %d instructions, %.0f per order\n", b, n, ir, ir / n }'
    rm -rf "$TMP"
}
for bin in "$@"; do measure "$bin"; done
