#!/usr/bin/env bash
# The ledger on PostgreSQL against pgbench on the same server, in the same run.
#
#   bash benches/ledger_postgres.sh
#
# For one and then two `cashless ledger serve` processes on one PostgreSQL database, and for
# each configuration in CONFIGS ("clients:cards", default 8 and 32 clients over 1,000 cards
# and 32 clients on one card): `cashless bench ledger` (online 1-cent orders, the clients
# spread over the processes round-robin, each client a bar terminal of its own unless
# TERMINALS says how many terminals they share) and, right before or after it (the order alternates
# from one configuration to the next, so that both see the same machine), pgbench's default
# TPC-B-like script with the same number of clients, the same duration and -j PG_JOBS: at
# scale PG_SCALE (32) for many cards, at scale PG_HOT_SCALE (1: every transaction updates
# the one branch row) for one card. Target (issue 12): orders/s >= pgbench's tps.
#
# It creates its own databases on the local PostgreSQL (the ledger's and pgbench's two, each
# with a random name) and drops them at the end. Nothing is pinned: the ledger processes,
# PostgreSQL and the generator share the machine, as pgbench and PostgreSQL do. See
# BENCHMARKS.md, "PostgreSQL (issue 12)".
#
# Environment (defaults): DURATION=12 WARMUP=3 CONFIGS="8:1000 32:1000 32:1" LEDGERS="1 2"
# TERMINALS=clients (one bar terminal per client, as tills each with one sale in flight; a
#   number N: the clients share N terminals round-robin, TERMINALS=1 as benches/ledger.sh)
# PG_SCALE=32 PG_HOT_SCALE=1 PG_JOBS=2 PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
# POOL_MAX_SIZE=<the ledger's default> ([postgres] pool_max_size of each ledger process)
# SKIP_BUILD=0 CASHLESS_BIN=<installed binary> (skips the build) BENCH_DIR=${TMPDIR:-/tmp}
# QUIET_WAIT=S: first wait up to S seconds for other load on the machine to stay under 10%
# PROC=1: also run pgbench with a script that calls sp_process_bar_order directly on the
#   ledger's database (the same terminals, cards, product and staff as the ledger's run just
#   before, one terminal per client), without HTTP and without the ledger process: the
#   database's own cost of an order, against the TPC-B-like script's (default 1; needs
#   TERMINALS=clients)
# PG_STATEMENTS=1: also print pg_stat_statements' top statements of each side (needs the
#   extension preloaded; skipped with a message otherwise)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-12}
WARMUP=${WARMUP:-3}
CONFIGS=${CONFIGS:-8:1000 32:1000 32:1}
LEDGERS=${LEDGERS:-1 2}
PG_SCALE=${PG_SCALE:-32}
PG_HOT_SCALE=${PG_HOT_SCALE:-1}
PG_JOBS=${PG_JOBS:-2}
TERMINALS=${TERMINALS:-clients}
POOL_MAX_SIZE=${POOL_MAX_SIZE:-}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
PG_STATEMENTS=${PG_STATEMENTS:-0}
PROC=${PROC:-1}
[ "$TERMINALS" = clients ] || PROC=0
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}

BENCH_NAME=ledger_postgres.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in psql awk sed lscpu taskset; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
PGBENCH=$(command -v pgbench || true)
[ -n "$PGBENCH" ] || PGBENCH=/usr/lib/postgresql/15/bin/pgbench
[ -x "$PGBENCH" ] || die "pgbench is missing: apt-get install postgresql-client"
psql -X -q -d postgres -c "SELECT 1" >/dev/null 2>&1 \
    || die "PostgreSQL does not answer at $PGHOST:$PGPORT as $PGUSER"

find_bin

TMP=$(mktemp -d "$BENCH_DIR/cashless-bench-pg.XXXXXX")
TAG="$$_$RANDOM"
LEDGER_DB="cashless_bench_ledger_$TAG"
PG_DB="cashless_bench_pgbench_$TAG"
PG_HOT_DB="cashless_bench_pgbench_hot_$TAG"
DATABASES=()
LEDGER_PIDS=()

stop_ledgers() {
    local pid
    for pid in "${LEDGER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    LEDGER_PIDS=()
}
cleanup() {
    set +e
    stop_ledgers
    for db in "${DATABASES[@]}"; do
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

create_db() { psql -X -q -d postgres -c "CREATE DATABASE $1" >/dev/null; DATABASES+=("$1"); }

# --- machine and databases ---------------------------------------------------------------
describe_machine "$TMP"
PG_INFO=$(psql -X -At -d postgres -c "SELECT split_part(version(), ' ', 2) || ', shared_buffers=' || current_setting('shared_buffers') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', wal_sync_method=' || current_setting('wal_sync_method') || ', commit_delay=' || current_setting('commit_delay') || ', max_connections=' || current_setting('max_connections')")
say "PostgreSQL: $PG_INFO"

create_db "$PG_DB"
create_db "$PG_HOT_DB"
create_db "$LEDGER_DB"
say "pgbench -i -s $PG_SCALE and -s $PG_HOT_SCALE"
"$PGBENCH" -i -q -s "$PG_SCALE" "$PG_DB" >"$TMP/pg-init.out" 2>&1 || { cat "$TMP/pg-init.out" >&2; die "pgbench -i failed"; }
"$PGBENCH" -i -q -s "$PG_HOT_SCALE" "$PG_HOT_DB" >>"$TMP/pg-init.out" 2>&1 || { cat "$TMP/pg-init.out" >&2; die "pgbench -i failed"; }

setup_bench_ledger "postgres://$PGUSER@$PGHOST:$PGPORT/$LEDGER_DB"
if [ -n "$POOL_MAX_SIZE" ]; then
    printf '\n[postgres]\npool_max_size = %s\n' "$POOL_MAX_SIZE" >>"$TMP/ledger.toml"
fi

# Checkpoint now, so that the init's dirty pages are not flushed during the first runs.
psql -X -q -d postgres -c "CHECKPOINT" >/dev/null
measure_idle_load "high"

STATEMENTS=0
if [ "$PG_STATEMENTS" = 1 ]; then
    if psql -X -At -d postgres -c "SHOW shared_preload_libraries" | grep -q pg_stat_statements; then
        for db in "$LEDGER_DB" "$PG_DB" "$PG_HOT_DB"; do
            psql -X -q -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
        done
        STATEMENTS=1
    else
        say "PG_STATEMENTS=1: pg_stat_statements is not in shared_preload_libraries: skipped"
    fi
fi
statements_reset() { [ "$STATEMENTS" = 1 ] && psql -X -q -d "$1" -c "SELECT pg_stat_statements_reset()" >/dev/null || true; }
statements_top() { # db label
    [ "$STATEMENTS" = 1 ] || return 0
    {
        echo "--- $2: top statements (pg_stat_statements: calls, total ms, mean ms, rows) ---"
        psql -X -At -F ' | ' -d "$1" -c "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows, left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 8"
    } >>"$TMP/statements.txt"
}

# --- one run of each side ----------------------------------------------------------------
# CPU seconds used so far by the processes $@ (those that still run).
pids_cpu_s() {
    local pid
    for pid in "$@"; do cpu_s "$pid" 2>/dev/null || true; echo; done | awk '{ s += $1 } END { printf "%.2f", s }'
}
# The client backends connected to database $1 (the server must be local; autovacuum workers
# are left out: one that ends inside a window would take its CPU out of the sum).
# With $2, only the backends of that application_name (pgbench's, next to the ledger's idle
# pool, whose connections may close inside the window and take their CPU out of the sum).
backends() { psql -X -At -d postgres -c "SELECT pid FROM pg_stat_activity WHERE datname = '$1' AND backend_type = 'client backend' AND application_name LIKE '${2:-%}'"; }
# CPU of each side over a window inside its measurement: % of one core, written to
# $TMP/NAME.cpu as "machine backends process(es) [client]". The backends are sampled at both
# ends (a connection opened in between counts from its start).
window_start() { # other pids...
    W_S0=$(sys_busy_s); W_T0=$(now); W_B0=$(pids_cpu_s $(backends "$W_DB" "${W_APP:-}")); W_P0=$(pids_cpu_s "$@")
}
window_end() { # name other pids...
    local name=$1 s1 t1 b1 p1
    shift
    s1=$(sys_busy_s); t1=$(now); b1=$(pids_cpu_s $(backends "$W_DB" "${W_APP:-}")); p1=$(pids_cpu_s "$@")
    echo "$(pct "$W_S0" "$s1" "$W_T0" "$t1") $(pct "$W_B0" "$b1" "$W_T0" "$t1") $(pct "$W_P0" "$p1" "$W_T0" "$t1")" >"$TMP/$name"
}

# The ledger: fresh bar terminals and a checkpoint (terminal_seq from 1), funded cards, load.
ledger_run() { # name clients cards prefix urls...
    local name=$1 clients=$2 cards=$3 prefix=$4 bar="" chk fund s0 s1 c0 c1 t0 t1 bars i
    shift 4
    local url_args=()
    for u in "$@"; do url_args+=(--url "$u"); done
    bars=$TERMINALS
    [ "$bars" != clients ] || bars=$clients
    for i in $(seq "$bars"); do bar="$bar,$(new_token "bench-bar-$name-$i" bar)"; done
    bar=${bar#,}
    chk=$(new_token "bench-checkpoint-$name" checkpoint)
    fund=$((cards == 1 ? 10000000 : 1000000))
    say "($name) ledger: $clients clients as $bars terminal(s) over $cards card(s) on $# process(es), ${DURATION} s (+${WARMUP} s warm-up)"
    statements_reset "$LEDGER_DB"
    CASHLESS_LEDGER_TOKEN=$bar CASHLESS_FUNDING_TOKEN=$chk \
        "$BIN" bench ledger "${url_args[@]}" --clients "$clients" --duration "$DURATION" \
        --warmup "$WARMUP" --cards "$cards" --card-prefix "$prefix" --fund --fund-cents "$fund" \
        --json >"$TMP/$name.out" &
    local gen=$!
    # The CPU over the measured window: after funding and warm-up.
    while ! grep -q '^funded ' "$TMP/$name.out" 2>/dev/null; do
        kill -0 "$gen" 2>/dev/null || break
        sleep 0.05
    done
    sleep "$WARMUP"
    W_DB=$LEDGER_DB window_start "${LEDGER_PIDS[@]}"
    sleep $((DURATION - 1))
    W_DB=$LEDGER_DB window_end "$name.ledger-cpu" "${LEDGER_PIDS[@]}"
    wait "$gen" || { cat "$TMP/$name.out" >&2; die "bench ledger failed"; }
    statements_top "$LEDGER_DB" "($name) ledger"
    grep -E '^(throughput|latency|outcomes)' "$TMP/$name.out" >&2
}

# pgbench, default script; the CPU from 1 s in to 1 s before its end.
pgbench_run() { # name clients db
    local name=$1 clients=$2 db=$3 pgb
    say "($name) pgbench: -c $clients -j $PG_JOBS -T $DURATION on $db"
    statements_reset "$db"
    "$PGBENCH" -c "$clients" -j "$PG_JOBS" -T "$DURATION" "$db" >"$TMP/$name.pg" 2>&1 &
    pgb=$!
    sleep 1
    W_DB=$db window_start "$pgb"
    sleep $((DURATION - 2))
    W_DB=$db window_end "$name.pg-cpu" "$pgb"
    wait "$pgb" || { cat "$TMP/$name.pg" >&2; die "pgbench failed"; }
    statements_top "$db" "($name) pgbench"
    grep -E '^(latency average|tps)' "$TMP/$name.pg" >&2
}

# pgbench calling the order procedure itself, as the ledger process would: each client is
# the bar terminal of the same number from the ledger's run $1 (its terminal_seq goes on
# from where that run left it), orders 1 cent of bench-1c on a random card of the run's.
# The VAT rates are the bench ledger's (no [taxes]: one rate, none at 0 %).
cat >"$TMP/order.sql" <<'EOF_SQL'
\if :seq = 0
SELECT terminal_id AS tid, highest_contiguous_seq AS seq FROM terminals WHERE name = :term::text || (:client_id + 1)::text \gset
\endif
\set seq :seq + 1
\set card random(0, :ncards - 1)
SELECT o_status FROM sp_process_bar_order(ROW(:tid::uuid, 'pgbench', now(), 'now', gen_random_uuid(), 'fingerprint', now())::ledger_call, gen_random_uuid(), :seq, :prefix::text || lpad(upper(to_hex(:card::bigint)), 14 - length(:prefix::text), '0'), 's-bench', 'online', 1, now(), ARRAY['bench-1c'], ARRAY[1], ARRAY[1::bigint], ARRAY['none'], ARRAY[0], 'none');
EOF_SQL
proc_run() { # name clients cards prefix
    local name=$1 clients=$2 cards=$3 prefix=$4 pgb
    say "($name) pgbench calling sp_process_bar_order: -c $clients -j $PG_JOBS -T $DURATION on $LEDGER_DB"
    "$PGBENCH" -n -M prepared -f "$TMP/order.sql" -D seq=0 -D "ncards=$cards" -D "prefix=$prefix" \
        -D "term=bench-bar-$name-" -c "$clients" -j "$PG_JOBS" -T "$DURATION" "$LEDGER_DB" \
        >"$TMP/$name.proc" 2>&1 &
    pgb=$!
    sleep 1
    W_DB=$LEDGER_DB W_APP=pgbench window_start "$pgb"
    sleep $((DURATION - 2))
    W_DB=$LEDGER_DB W_APP=pgbench window_end "$name.proc-cpu" "$pgb"
    wait "$pgb" || { cat "$TMP/$name.proc" >&2; die "pgbench calling the procedure failed"; }
    grep -E '^(latency average|tps|number of failed)' "$TMP/$name.proc" >&2
    local declined
    declined=$(psql -X -At -d "$LEDGER_DB" -c "SELECT count(*) FROM app_transaction_log WHERE request_id = 'pgbench' AND outcome <> 'approved'")
    [ "$declined" = 0 ] || die "($name) $declined of pgbench's orders were not approved"
}

RUN=0
ROWS=()
for ledgers in $LEDGERS; do
    stop_ledgers
    URLS=()
    for i in $(seq "$ledgers"); do
        start_ledger "0-$(($(nproc) - 1))" 127.0.0.1:0 "serve-$ledgers-$i"
        LEDGER_PIDS+=("$LEDGER_PID")
        URLS+=("http://$ADDR")
    done
    say "$ledgers ledger process(es): ${URLS[*]}"
    for config in $CONFIGS; do
        clients=${config%%:*}
        cards=${config#*:}
        RUN=$((RUN + 1))
        name="r$RUN"
        if [ "$cards" = 1 ]; then db=$PG_HOT_DB; scale=$PG_HOT_SCALE; else db=$PG_DB; scale=$PG_SCALE; fi
        # Alternate which side goes first, so that neither always follows the other.
        if [ $((RUN % 2)) = 1 ]; then
            ledger_run "$name" "$clients" "$cards" "$(printf 'B%X' "$RUN")" "${URLS[@]}"
            pgbench_run "$name" "$clients" "$db"
        else
            pgbench_run "$name" "$clients" "$db"
            ledger_run "$name" "$clients" "$cards" "$(printf 'B%X' "$RUN")" "${URLS[@]}"
        fi
        # The procedure alone needs the run's terminals; once per configuration is enough.
        if [ "$PROC" = 1 ] && [ "$ledgers" = "${LEDGERS%% *}" ]; then
            proc_run "$name" "$clients" "$cards" "$(printf 'B%X' "$RUN")"
        fi
        ROWS+=("$name:$ledgers:$clients:$cards:$scale")
    done
done
stop_ledgers

say "cashless ledger audit"
if ledger audit >"$TMP/audit.out" 2>&1; then AUDIT="passed"; else AUDIT="FAILED"; fi
cat "$TMP/audit.out" >&2

# --- results -----------------------------------------------------------------------------
ratio() { if isnum "${1:-}" && isnum "${2:-}"; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; else printf 'n/a'; fi; }
# Milliseconds of CPU per transaction: % of one core / (tx/s) * 10.
cpu_ms() { if isnum "${1:-}" && isnum "${2:-}"; then awk -v p="$1" -v r="$2" 'BEGIN { if (r > 0) printf "%.3f", p / r * 10; else printf "n/a" }'; else printf 'n/a'; fi; }
errors() {
    local other tr
    other=$(sed -n 's/.*"other_status":{\([^}]*\)}.*/\1/p' "$1" | tr ',' '\n' | sed -n 's/.*:\([0-9]*\)$/\1/p' | awk '{s += $1} END {print s + 0}')
    tr=$(jnum transport_errors "$1")
    echo $((other + ${tr:-0}))
}
{
    echo
    echo "=== cashless ledger on PostgreSQL against pgbench, $(date -u +%Y-%m-%dT%H:%M:%SZ) ==="
    echo "machine: $MACHINE"
    echo "PostgreSQL: $PG_INFO"
    echo "other load before the run: $IDLE_LOAD% of $(($(nproc) * 100))% CPU"
    echo "each side ${DURATION} s (the ledger after ${WARMUP} s warm-up); pgbench -j $PG_JOBS, default TPC-B-like script; nothing pinned"
    echo "ledger: bar terminals: $([ "$TERMINALS" = clients ] && echo "one per client" || echo "$TERMINALS, shared by the clients"); [postgres] pool_max_size ${POOL_MAX_SIZE:-default} per process; commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (+ uncommitted changes)')"
    echo
    printf '%-7s %7s %6s %9s %7s %6s | %5s %8s %6s | %8s %8s %8s | %8s %8s | %9s %9s\n' \
        ledgers clients cards "orders/s" "p99 ms" errors scale "pgb tps" ratio \
        "PG ms" "pgb PG" "PG ratio" "ldg ms" "gen ms" "all% ldg" "all% pgb"
    for row in "${ROWS[@]}"; do
        IFS=: read -r name ledgers clients cards scale <<<"$row"
        ops=$(jnum orders_per_s "$TMP/$name.out")
        aps=$(jnum approvals_per_s "$TMP/$name.out")
        tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$TMP/$name.pg")
        read -r lmach lpg lproc <"$TMP/$name.ledger-cpu"
        read -r pmach ppg _ <"$TMP/$name.pg-cpu"
        printf '%-7s %7s %6s %9s %7s %6s | %5s %8s %6s | %8s %8s %8s | %8s %8s | %8s%% %8s%%\n' \
            "$ledgers" "$clients" "$cards" "$(fmt0 "$aps")" "$(fmt2 "$(jnum p99 "$TMP/$name.out")")" \
            "$(errors "$TMP/$name.out")" "$scale" "$(fmt0 "$tps")" "$(ratio "$aps" "$tps")" \
            "$(cpu_ms "$lpg" "$aps")" "$(cpu_ms "$ppg" "$tps")" "$(ratio "$(cpu_ms "$lpg" "$aps")" "$(cpu_ms "$ppg" "$tps")")" \
            "$(cpu_ms "$lproc" "$aps")" "$(cpu_ms "$(jnum generator_cpu_pct "$TMP/$name.out")" "$aps")" \
            "$(fmt0 "$lmach")" "$(fmt0 "$pmach")"
        [ "$(fmt0 "$ops")" = "$(fmt0 "$aps")" ] || echo "  (row above: $(fmt0 "$ops") answers/s, of which $(fmt0 "$aps") approvals/s)"
    done
    if [ "$PROC" = 1 ]; then
        echo
        echo "the order procedure alone (pgbench calling sp_process_bar_order on the ledger's database, no HTTP):"
        printf '%7s %6s | %9s %8s %6s | %8s %8s %8s | %9s %9s\n' \
            clients cards "proc tps" "pgb tps" ratio "PG ms" "pgb PG" "PG ratio" "all% proc" "all% pgb"
        for row in "${ROWS[@]}"; do
            IFS=: read -r name ledgers clients cards scale <<<"$row"
            [ -f "$TMP/$name.proc" ] || continue
            tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$TMP/$name.pg")
            ptps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$TMP/$name.proc")
            read -r xmach xpg _ <"$TMP/$name.proc-cpu"
            read -r pmach ppg _ <"$TMP/$name.pg-cpu"
            printf '%7s %6s | %9s %8s %6s | %8s %8s %8s | %8s%% %8s%%\n' "$clients" "$cards" \
                "$(fmt0 "$ptps")" "$(fmt0 "$tps")" "$(ratio "$ptps" "$tps")" \
                "$(cpu_ms "$xpg" "$ptps")" "$(cpu_ms "$ppg" "$tps")" "$(ratio "$(cpu_ms "$xpg" "$ptps")" "$(cpu_ms "$ppg" "$tps")")" \
                "$(fmt0 "$xmach")" "$(fmt0 "$pmach")"
        done
    fi
    echo
    echo "orders/s: approved orders per second; ratio: orders/s / pgbench tps (target >= 1)"
    echo "PG ms: CPU ms of the ledger database's PostgreSQL backends per order; pgb PG: of pgbench's backends per transaction; PG ratio: the first / the second"
    echo "ldg ms: CPU ms of the ledger processes per order; gen ms: of the load generator per order"
    echo "all%: the whole machine's CPU during the ledger's and during pgbench's window (% of one core, $(($(nproc) * 100))% max; other load included)"
    echo "ledger audit after the run: $AUDIT ($(tail -n1 "$TMP/audit.out" 2>/dev/null))"
    [ ! -f "$TMP/statements.txt" ] || cat "$TMP/statements.txt"
} | tee "$BENCH_DIR/cashless-bench-pg-results.txt"
echo "(results also in $BENCH_DIR/cashless-bench-pg-results.txt)" >&2
[ "$AUDIT" = passed ] || die "cashless ledger audit failed after the load (see above)"
