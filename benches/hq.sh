#!/usr/bin/env bash
# Headquarters' pages on a big festival, on both backends, in one run (issue 15).
#
#   bash benches/hq.sh
#
# A SQLite ledger is filled with OPERATIONS operations over CARDS cards (cashless bench
# hq-seed: four festival days, 40 bars at 10 points of sale, 10 checkpoints with close-outs),
# then moved to a new PostgreSQL database (cashless ledger migrate --from --to). On each:
#   (1) each page's time to first byte, REQUESTS requests per page (REPORT_REQUESTS for each
#       section of the report, over today), one at a time;
#   (2) online orders alone: CLIENTS clients for DURATION s, each at most one order per
#       PACE_MS ms (tills sell at a pace, not as fast as the ledger answers), their p99 (the
#       reference);
#   (3) the same orders while BROWSERS clients hammer the dashboard's pages as fast as they
#       are answered, their p99;
#   (2) and (3) alternate ROUNDS times; each round's p99 is printed, and their median.
# The ledger runs on core SERVER_CPU (PostgreSQL's server too, when PG_PINNED=1), the load
# generators on core GEN_CPU. Everything is created in a temporary directory and removed at
# the end; the PostgreSQL database is created with a random name and dropped.
#
# Environment (defaults): OPERATIONS=1000000 CARDS=100000 REQUESTS=100 REPORT_REQUESTS=10
# DURATION=10 ROUNDS=3 WARMUP=3 CLIENTS=16 PACE_MS=20 (0: as fast as answered) BROWSERS=8 SERVER_CPU=0 GEN_CPU=1 BENCH_DIR=${TMPDIR:-/tmp}
# PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres SKIP_PG=0 SKIP_BUILD=0
# CASHLESS_BIN=<installed binary> (skips the build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OPERATIONS=${OPERATIONS:-1000000}
CARDS=${CARDS:-100000}
REQUESTS=${REQUESTS:-100}
REPORT_REQUESTS=${REPORT_REQUESTS:-10}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
CLIENTS=${CLIENTS:-16}
PACE_MS=${PACE_MS:-20}
BROWSERS=${BROWSERS:-8}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
SKIP_PG=${SKIP_PG:-0}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}

BENCH_NAME=hq.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in taskset awk sed lscpu; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install util-linux)"
done
if [ "$SKIP_PG" != 1 ]; then
    command -v psql >/dev/null || die "psql is missing: apt-get install postgresql-client (or SKIP_PG=1)"
fi
find_bin

TMP=$(mktemp -d "$BENCH_DIR/cashless-hq-bench.XXXXXX")
LEDGER_PID=""
PGDB=""
cleanup() {
    set +e
    if [ -n "$LEDGER_PID" ] && kill -0 "$LEDGER_PID" 2>/dev/null; then
        kill -TERM "$LEDGER_PID"
        wait "$LEDGER_PID" 2>/dev/null
    fi
    if [ -n "$PGDB" ]; then
        psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

describe_machine "$TMP"
measure_idle_load low

# --- the festival ------------------------------------------------------------------------
setup_bench_ledger
say "seeding $OPERATIONS operations over $CARDS cards"
"$BIN" bench hq-seed --path "$TMP/ledger.db" --operations "$OPERATIONS" --cards "$CARDS" >&2
export CASHLESS_HQ_PASSWORD="bench password $RANDOM$RANDOM"
printf '%s\n' "$CASHLESS_HQ_PASSWORD" | ledger operator add --name bench --role viewer >&2
BAR=$(new_token bench-bar bar)
CHK=$(new_token bench-checkpoint checkpoint)
TODAY=$(date -u +%Y-%m-%d)
PAGES="/hq/overview,/hq/fleet,/hq/cards/050000000004D2,/hq/shifts,/hq/stripe"
# Every section of the report, over today (from the start of today's festival day).
SECTIONS="sales_by_point_of_sale sales_by_terminal sales_by_product sales_by_staff sales_by_hour
deposits vouchers top_ups cashier terminal_sync cards flagged_sales"
REPORT_PAGES=""
for section in $SECTIONS; do
    REPORT_PAGES="$REPORT_PAGES${REPORT_PAGES:+,}/hq/reports?section=$section&from=$TODAY"
done

# One backend: the pages, the orders alone, the orders with the dashboard hammered.
measure() { # label
    local label=$1 url
    start_ledger "$SERVER_CPU" 127.0.0.1:0 "serve-$label"
    url="http://$ADDR"
    say "($label) ledger at $url: pages, $REQUESTS requests each"
    taskset -c "$GEN_CPU" "$BIN" bench hq --url "$url" --operator bench --page "$PAGES,/hq/login" \
        --requests "$REQUESTS" --json >"$TMP/pages-$label.out"
    say "($label) the report pages, $REPORT_REQUESTS requests each"
    taskset -c "$GEN_CPU" "$BIN" bench hq --url "$url" --operator bench --page "$REPORT_PAGES" \
        --requests "$REPORT_REQUESTS" --json >>"$TMP/pages-$label.out"
    cat "$TMP/pages-$label.out" >&2
    # Alone and hammered alternate, ROUNDS times, so that whatever else the machine does
    # drifts into both alike.
    local r
    for r in $(seq "$ROUNDS"); do
        say "($label) round $r: orders alone, $CLIENTS clients, ${DURATION} s"
        CASHLESS_LEDGER_TOKEN=$BAR CASHLESS_FUNDING_TOKEN=$CHK \
            taskset -c "$GEN_CPU" "$BIN" bench ledger --url "$url" --clients "$CLIENTS" \
            --duration "$DURATION" --warmup "$WARMUP" --cards 1000 --card-prefix "A$label$r" \
            --fund --fund-cents 1000000 --pace-ms "$PACE_MS" --json >"$TMP/quiet-$label-$r.out"
        say "($label) round $r: orders with the dashboard hammered by $BROWSERS clients"
        taskset -c "$GEN_CPU" "$BIN" bench hq --url "$url" --operator bench --page "$PAGES" \
            --hammer $((DURATION + WARMUP + 10)) --browsers "$BROWSERS" --json \
            >"$TMP/hammer-$label-$r.out" &
        local hammer=$!
        CASHLESS_LEDGER_TOKEN=$BAR CASHLESS_FUNDING_TOKEN=$CHK \
            taskset -c "$GEN_CPU" "$BIN" bench ledger --url "$url" --clients "$CLIENTS" \
            --duration "$DURATION" --warmup "$WARMUP" --cards 1000 --card-prefix "B$label$r" \
            --fund --fund-cents 1000000 --pace-ms "$PACE_MS" --json >"$TMP/hammered-$label-$r.out"
        wait "$hammer" || die "the hammer failed"
        cat "$TMP/quiet-$label-$r.out" "$TMP/hammered-$label-$r.out" "$TMP/hammer-$label-$r.out" >&2
    done
    kill -TERM "$LEDGER_PID"
    wait "$LEDGER_PID" 2>/dev/null || true
    LEDGER_PID=""
}

measure 1
SIZE="$(du -m "$TMP/ledger.db" | awk '{print $1}') MiB SQLite file"

if [ "$SKIP_PG" != 1 ]; then
    PGDB="cashless_hq_bench_$$_$RANDOM"
    psql -X -q -d postgres -c "CREATE DATABASE $PGDB" >/dev/null
    PGURL="postgres://$PGUSER@$PGHOST:$PGPORT/$PGDB"
    say "moving the festival to PostgreSQL ($PGDB)"
    t0=$(now)
    # The seeded books do not balance (hq-seed writes the rows pages read, not a festival's
    # double entry), so the audit after the move reports discrepancies and exits 1; the move
    # itself must have committed with its totals agreeing.
    ledger migrate --from "sqlite:$TMP/ledger.db" --to "$PGURL" >"$TMP/move.out" 2>&1 || true
    grep -q '^moved: committed' "$TMP/move.out" && grep -q '^the totals agree' "$TMP/move.out" \
        || { grep -v '^DISCREPANCY' "$TMP/move.out" >&2; die "the move failed"; }
    t1=$(now)
    say "moved in $(secs "$t0" "$t1") s"
    psql -X -q -d "$PGDB" -c "VACUUM ANALYZE" >/dev/null
    sed -i "s|^database = .*|database = \"$PGURL\"|" "$TMP/ledger.toml"
    measure 2
fi

# --- the results -------------------------------------------------------------------------
row() { # file page -> "p50 p99 max"
    grep -F "\"page\":\"$2\"" "$1" | head -n1 | sed -n 's/.*"p50":\([0-9.]*\).*"p99":\([0-9.]*\).*"max":\([0-9.]*\).*/\1 \2 \3/p'
}
printf '\n%s operations, %s cards (%s); machine: %s\n' "$OPERATIONS" "$CARDS" "$SIZE" "$MACHINE"
printf '\n%-52s %24s %24s\n' "time to first byte, ms (p50 / p99 / max)" "SQLite" "PostgreSQL"
for page in ${PAGES//,/ } /hq/login ${REPORT_PAGES//,/ }; do
    a=$(row "$TMP/pages-1.out" "$page")
    b=$([ "$SKIP_PG" != 1 ] && row "$TMP/pages-2.out" "$page" || echo "- - -")
    printf '%-52s %24s %24s\n' "$page" "$(echo "$a" | awk '{printf "%.1f / %.1f / %.1f", $1, $2, $3}')" \
        "$(echo "$b" | awk '{ if ($1 == "-") print "skipped"; else printf "%.1f / %.1f / %.1f", $1, $2, $3}')"
done
orders() { # condition label -> "orders/s, p99 of each round (their median)"
    local r rates="" p99s=""
    for r in $(seq "$ROUNDS"); do
        rates="$rates $(jnum approvals_per_s "$TMP/$1-$2-$r.out")"
        p99s="$p99s $(jnum p99 "$TMP/$1-$2-$r.out")"
    done
    printf '%s/s, p99 %s ms (median %s)' \
        "$(echo "$rates" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }')" \
        "$(echo "$p99s" | awk '{ for (i = 1; i <= NF; i++) printf "%s%.1f", (i > 1 ? " / " : ""), $i }')" \
        "$(echo "$p99s" | tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] }')"
}
printf '\n%-52s %24s %24s\n' "orders ($CLIENTS clients, one per ${PACE_MS} ms each)" "SQLite" "PostgreSQL"
printf '%-52s %s\n%-52s %s\n' "alone, SQLite" "$(orders quiet 1)" \
    "alone, PostgreSQL" "$([ "$SKIP_PG" != 1 ] && orders quiet 2 || echo skipped)"
printf '%-52s %s\n%-52s %s\n' "hammered by $BROWSERS clients, SQLite" "$(orders hammered 1)" \
    "hammered by $BROWSERS clients, PostgreSQL" \
    "$([ "$SKIP_PG" != 1 ] && orders hammered 2 || echo skipped)"
hammered() { # label -> pages answered and busy over the rounds
    local r answered=0 busy=0
    for r in $(seq "$ROUNDS"); do
        answered=$((answered + $(jnum answered "$TMP/hammer-$1-$r.out")))
        busy=$((busy + $(jnum busy "$TMP/hammer-$1-$r.out")))
    done
    printf '%s pages, %s busy' "$answered" "$busy"
}
printf '%-52s %24s %24s\n' "dashboard pages answered while hammered" "$(hammered 1)" \
    "$([ "$SKIP_PG" != 1 ] && hammered 2 || echo skipped)"
