#!/usr/bin/env bash
# Ledger throughput benchmark, with its references measured in the same run.
#
#   bash benches/ledger.sh
#
# (a) raw SQLite commit rate with the ledger's pragmas (WAL, synchronous=FULL)
# (b) online orders: CLIENTS clients over CARDS cards
# (c) online orders: CLIENTS clients on one card
# (d) pgbench's TPC-B-like script on the local PostgreSQL (the issue's reference), once as
#     pgbench is usually run, once with the PostgreSQL server pinned like the ledger
#
# The ledger server runs on core SERVER_CPU, the load generator on core GEN_CPU (taskset).
# Everything is created in a temporary directory and removed at the end; the PostgreSQL
# database is created with a random name and dropped. See BENCHMARKS.md.
#
# Environment (defaults): DURATION=30 WARMUP=3 CLIENTS=32 CARDS=1000 SQLITE_DURATION=10
# PG_DURATION=30 PG_SCALE=10 PG_PINNED=1 SERVER_CPU=0 GEN_CPU=1 BENCH_DIR=${TMPDIR:-/tmp}
# PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres SKIP_PG=0 SKIP_BUILD=0
# CASHLESS_BIN=<installed binary> (skips the build)
# QUIET_WAIT=S: first wait up to S seconds for other load on the machine to stay under 10%
# SWEEP="1 4 16 64": also run (b) with each of these numbers of clients, SWEEP_DURATION=10 s each
# PERF=1: record a perf profile of the ledger during (b) and (c) into
#   $BENCH_DIR/cashless-perf-{b,c}.data and print its top symbols (PERF_CALLGRAPH="-g" or
#   "--call-graph dwarf" for call stacks)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-3}
CLIENTS=${CLIENTS:-32}
CARDS=${CARDS:-1000}
SQLITE_DURATION=${SQLITE_DURATION:-10}
PG_DURATION=${PG_DURATION:-30}
PG_SCALE=${PG_SCALE:-10}
PG_PINNED=${PG_PINNED:-1}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
SKIP_PG=${SKIP_PG:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
PERF=${PERF:-0}
SWEEP=${SWEEP:-}
SWEEP_DURATION=${SWEEP_DURATION:-10}
PERF_CALLGRAPH=${PERF_CALLGRAPH:-}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}

BENCH_NAME=ledger.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

[ "$PERF" != 1 ] || command -v perf >/dev/null || die "PERF=1 needs perf (apt-get install linux-perf)"
for tool in taskset awk sed lscpu; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install util-linux)"
done
if [ "$SKIP_PG" != 1 ] && ! { command -v pgbench && command -v psql; } >/dev/null; then
    say "pgbench missing: installing postgresql-client"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null
    fi
    command -v pgbench >/dev/null || die "pgbench is missing: apt-get install postgresql-client (or SKIP_PG=1)"
fi

find_bin

TMP=$(mktemp -d "$BENCH_DIR/cashless-bench.XXXXXX")
SERVER_PID=""
PGDB=""
PG_AFFINITY_RESTORE=()

cleanup() {
    set +e
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null
    fi
    for entry in "${PG_AFFINITY_RESTORE[@]}"; do
        taskset -a -p "${entry#*:}" "${entry%%:*}" >/dev/null 2>&1
    done
    if [ -n "$PGDB" ]; then
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- machine -----------------------------------------------------------------------------
describe_machine "$TMP"
measure_idle_load low

# --- (a) raw SQLite commit rate ----------------------------------------------------------
say "(a) raw SQLite commit rate, ${SQLITE_DURATION} s, core $SERVER_CPU"
taskset -c "$SERVER_CPU" "$BIN" bench sqlite-commit --path "$TMP/raw-commit.db" \
    --duration "$SQLITE_DURATION" --json | tee "$TMP/a.out" >&2
RAW_COMMITS=$(jnum commits_per_s "$TMP/a.out")
RAW_P99=$(jnum p99 "$TMP/a.out")

# --- ledger ------------------------------------------------------------------------------
setup_bench_ledger

say "starting the ledger on core $SERVER_CPU"
start_ledger "$SERVER_CPU" 127.0.0.1:0
SERVER_PID=$LEDGER_PID
URL="http://$ADDR"
say "ledger at $URL (pid $SERVER_PID)"

# One ledger scenario: fresh bar and checkpoint terminals (terminal_seq from 1), fund the
# cards, load, and the server's CPU use during the load.
scenario() { # name cards card-prefix fund-cents [clients] [duration]
    local name=$1 cards=$2 prefix=$3 fund=$4 clients=${5:-$CLIENTS} DURATION=${6:-$DURATION}
    local bar chk cpu0 cpu1 sys0 sys1 io0 io1 t0 t1
    bar=$(new_token "bench-bar-$name" bar)
    chk=$(new_token "bench-checkpoint-$name" checkpoint)
    say "($name) $clients clients over $cards card(s), ${DURATION} s (+${WARMUP} s warm-up), generator on core $GEN_CPU"
    CASHLESS_LEDGER_TOKEN=$bar CASHLESS_FUNDING_TOKEN=$chk \
        taskset -c "$GEN_CPU" "$BIN" bench ledger --url "$URL" --clients "$clients" \
        --duration "$DURATION" --warmup "$WARMUP" --cards "$cards" --card-prefix "$prefix" \
        --fund --fund-cents "$fund" --json >"$TMP/$name.out" &
    local gen=$!
    # The server's CPU over the measured window: after funding and warm-up.
    while ! grep -q '^funded ' "$TMP/$name.out" 2>/dev/null; do
        kill -0 "$gen" 2>/dev/null || break
        sleep 0.05
    done
    sleep "$WARMUP"
    cpu0=$(cpu_s "$SERVER_PID"); sys0=$(sys_busy_s); io0=$(io_w "$SERVER_PID"); t0=$(date +%s.%N)
    if [ "$PERF" = 1 ]; then
        # Where the ledger's CPU goes: perf samples of the server over the measured window.
        perf record -q -F 999 $PERF_CALLGRAPH -p "$SERVER_PID" -o "$BENCH_DIR/cashless-perf-$name.data" \
            -- sleep "$DURATION" >/dev/null 2>&1 || say "perf record failed"
    else
        sleep "$DURATION"
    fi
    cpu1=$(cpu_s "$SERVER_PID"); sys1=$(sys_busy_s); io1=$(io_w "$SERVER_PID"); t1=$(date +%s.%N)
    wait "$gen" || die "bench ledger failed (see above)"
    cat "$TMP/$name.out" >&2
    fmt0 "$(pct "$cpu0" "$cpu1" "$t0" "$t1")" >"$TMP/$name.server-cpu"
    fmt0 "$(pct "$sys0" "$sys1" "$t0" "$t1")" >"$TMP/$name.machine-cpu"
    # Per order: server CPU, bytes written and write syscalls (the window is the bench's
    # measured window give or take a few ms).
    awk -v c0="$cpu0" -v c1="$cpu1" -v io0="$io0" -v io1="$io1" -v s="$t0" -v e="$t1" \
        -v aps="$(jnum approvals_per_s "$TMP/$name.out")" 'BEGIN {
            split(io0, a, " "); split(io1, b, " "); n = aps * (e - s);
            if (n > 0) printf "server per approved order: %.3f ms CPU, %.1f KiB written in %.2f write syscalls\n",
                (c1 - c0) * 1000 / n, (b[1] - a[1]) / 1024 / n, (b[2] - a[2]) / n }' >"$TMP/$name.per-order"
    say "($name) ledger server CPU: $(cat "$TMP/$name.server-cpu")% of one core; whole machine: $(cat "$TMP/$name.machine-cpu")% of $(($(nproc) * 100))%"
    say "($name) $(cat "$TMP/$name.per-order")"
}

scenario b "$CARDS" B1 1000000
scenario c 1 C1 10000000
# Optional: throughput against the number of clients (SWEEP="1 4 16 32 64 128").
for n in $SWEEP; do
    scenario "sweep-$n" "$CARDS" "5$(printf '%03X' "$n")" 1000000 "$n" "$SWEEP_DURATION"
done

say "cashless ledger audit"
if ledger audit >"$TMP/audit.out" 2>&1; then AUDIT="passed"; else AUDIT="FAILED"; fi
cat "$TMP/audit.out" >&2
mib() { if [ -f "$1" ]; then du -m "$1" | awk '{print $1}'; else echo 0; fi; }
DB_SIZE="$(mib "$TMP/ledger.db") MiB database + $(mib "$TMP/ledger.db-wal") MiB WAL"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""

# --- (d) pgbench -------------------------------------------------------------------------
PG_TPS="skipped"
PG_PINNED_TPS="skipped"
PG_INFO=""
pg_run() { # label [taskset prefix...] -> tps
    local label=$1 s0 s1 t0 t1
    shift
    s0=$(sys_busy_s); t0=$(date +%s.%N)
    "$@" pgbench -c "$CLIENTS" -j 2 -T "$PG_DURATION" "$PGDB" >"$TMP/pg-$label.out" 2>&1 \
        || { cat "$TMP/pg-$label.out" >&2; die "pgbench failed"; }
    s1=$(sys_busy_s); t1=$(date +%s.%N)
    grep -E '^(number of transactions actually processed|latency average|tps)' "$TMP/pg-$label.out" >&2
    say "whole machine during pgbench: $(fmt0 "$(pct "$s0" "$s1" "$t0" "$t1")")% of $(($(nproc) * 100))% (PostgreSQL and pgbench included)"
    sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$TMP/pg-$label.out"
}
if [ "$SKIP_PG" != 1 ]; then
    psql -X -q -d postgres -c "SELECT 1" >/dev/null 2>&1 \
        || die "PostgreSQL does not answer at $PGHOST:$PGPORT as $PGUSER (start it, or SKIP_PG=1)"
    PG_INFO=$(psql -X -At -d postgres -c "SELECT split_part(version(), ' ', 2) || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', wal_sync_method=' || current_setting('wal_sync_method')")
    PGDB="cashless_bench_$$_$RANDOM"
    psql -X -q -d postgres -c "CREATE DATABASE $PGDB" >/dev/null
    say "(d) pgbench -i -s $PG_SCALE ($PG_INFO)"
    pgbench -i -q -s "$PG_SCALE" "$PGDB" >"$TMP/pg-init.out" 2>&1 || { cat "$TMP/pg-init.out" >&2; die "pgbench -i failed"; }
    say "(d) pgbench -c $CLIENTS -j 2 -T $PG_DURATION (nothing pinned: pgbench as usually run)"
    PG_TPS=$(pg_run plain env)
    if [ "$PG_PINNED" = 1 ]; then
        PGDATA_DIR=$(psql -X -At -d postgres -c "SHOW data_directory" 2>/dev/null || true)
        PM_PID=$(head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
        if [ -n "$PM_PID" ] && kill -0 "$PM_PID" 2>/dev/null; then
            for pid in "$PM_PID" $(pgrep -P "$PM_PID"); do
                mask=$(taskset -p "$pid" 2>/dev/null | sed -n 's/.*: //p')
                [ -n "$mask" ] || continue
                PG_AFFINITY_RESTORE+=("$pid:$mask")
                taskset -a -p -c "$SERVER_CPU" "$pid" >/dev/null
            done
            say "(d') same, PostgreSQL server pinned to core $SERVER_CPU and pgbench to core $GEN_CPU, like the ledger"
            PG_PINNED_TPS=$(pg_run pinned taskset -c "$GEN_CPU")
            for entry in "${PG_AFFINITY_RESTORE[@]}"; do
                taskset -a -p "${entry#*:}" "${entry%%:*}" >/dev/null 2>&1 || true
            done
            PG_AFFINITY_RESTORE=()
        else
            say "cannot find the PostgreSQL postmaster (not local, or no access): pinned run skipped"
        fi
    fi
    psql -X -q -d postgres -c "DROP DATABASE $PGDB" >/dev/null
    PGDB=""
fi

# --- results -----------------------------------------------------------------------------
row() { # label file
    local f=$1
    printf '%-34s %9s %9s %8s %8s %8s %8s %8s %6s %5s%% %5s%% %5s%%\n' "$2" \
        "$(fmt0 "$(jnum orders_per_s "$f")")" "$(fmt0 "$(jnum approvals_per_s "$f")")" \
        "$(fmt2 "$(jnum p50 "$f")")" "$(fmt2 "$(jnum p90 "$f")")" "$(fmt2 "$(jnum p99 "$f")")" \
        "$(fmt2 "$(jnum p999 "$f")")" "$(fmt2 "$(jnum max "$f")")" \
        "$(errors "$f")" "$(cat "${f%.out}.server-cpu")" "$(fmt0 "$(jnum generator_cpu_pct "$f")")" \
        "$(cat "${f%.out}.machine-cpu")"
}
# Orders answered with neither 201 nor 402, plus transport errors.
errors() {
    local other tr
    other=$(sed -n 's/.*"other_status":{\([^}]*\)}.*/\1/p' "$1" | tr ',' '\n' | sed -n 's/.*:\([0-9]*\)$/\1/p' | awk '{s += $1} END {print s + 0}')
    tr=$(jnum transport_errors "$1")
    echo $((other + ${tr:-0}))
}
ratio() { if isnum "${1:-}" && isnum "${2:-}"; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; else printf 'n/a'; fi; }

B_APS=$(jnum approvals_per_s "$TMP/b.out")
C_APS=$(jnum approvals_per_s "$TMP/c.out")
{
    echo
    echo "=== cashless ledger benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ) ==="
    echo "machine: $MACHINE"
    echo "other load before the run: $IDLE_LOAD% of $(($(nproc) * 100))% CPU"
    echo "ledger server on core $SERVER_CPU, generator on core $GEN_CPU (taskset); $CLIENTS clients, ${DURATION} s measured after ${WARMUP} s warm-up"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (+ uncommitted changes)')"
    echo
    printf '%-34s %9s %9s %8s %8s %8s %8s %8s %6s %6s %6s %6s\n' scenario "orders/s" "approv/s" "p50 ms" "p90 ms" "p99 ms" "p99.9" "max ms" errors srvCPU genCPU allCPU
    row "$TMP/b.out" "(b) $CLIENTS clients, $CARDS cards"
    row "$TMP/c.out" "(c) $CLIENTS clients, 1 card"
    for n in $SWEEP; do
        row "$TMP/sweep-$n.out" "(sweep) $n clients, $CARDS cards"
    done
    echo
    echo "(a) raw SQLite commit rate (WAL, synchronous=FULL, 1 row/commit): $(fmt0 "$RAW_COMMITS") commits/s, p99 $(fmt2 "$RAW_P99") ms"
    echo "(d) pgbench TPC-B-like, -c $CLIENTS -j 2, ${PG_DURATION} s, scale $PG_SCALE (${PG_INFO:-PostgreSQL not measured}): $(fmt0 "$PG_TPS") tps (nothing pinned), $(fmt0 "$PG_PINNED_TPS") tps (server on core $SERVER_CPU, pgbench on core $GEN_CPU)"
    echo
    echo "(b) / raw SQLite commits: $(ratio "$B_APS" "$RAW_COMMITS")    (b) / pgbench: $(ratio "$B_APS" "$PG_TPS")    (c) / raw SQLite commits: $(ratio "$C_APS" "$RAW_COMMITS")"
    echo "(b) $(cat "$TMP/b.per-order")"
    echo "(c) $(cat "$TMP/c.per-order")"
    echo "CPU columns: % of one core during the measured window; allCPU is the whole machine ($(($(nproc) * 100))% max): allCPU - srvCPU - genCPU is other load"
    echo "targets: (b) >= 4000 orders/s with p99 < 50 ms; (c) >= 1500 orders/s with no errors"
    echo "ledger audit after the run: $AUDIT; $DB_SIZE"
    echo "  $(tail -n1 "$TMP/audit.out" 2>/dev/null)"
} | tee "$BENCH_DIR/cashless-bench-results.txt"
if [ "$PERF" = 1 ]; then
    for name in b c; do
        [ -f "$BENCH_DIR/cashless-perf-$name.data" ] || continue
        echo "--- ($name) ledger server: top symbols by CPU (perf, self time) ---"
        perf report -i "$BENCH_DIR/cashless-perf-$name.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | awk 'NR <= 40'
    done | tee -a "$BENCH_DIR/cashless-bench-results.txt"
fi
echo "(results also in $BENCH_DIR/cashless-bench-results.txt)" >&2
[ "$AUDIT" = passed ] || die "cashless ledger audit failed after the load (see above)"
