#!/usr/bin/env bash
# Terminal daemon benchmark, with its reference measured in the same run.
#
#   bash benches/terminal.sh
#
# (a) raw SQLite commit rate with the journal's pragmas (WAL, synchronous=FULL): the reference
# (b) online tap -> decision: `cashless bench terminal-tap` against a local ledger
# (c) offline tap -> decision: the same terminal (restarted) after the ledger got SIGTERM
# (d) replay drain: DRAIN_OPS offline sales journaled by another terminal while the ledger is
#     down (sold through the same tap bench), then the ledger comes back: seconds until
#     `cashless terminal status` shows 0 pending; the ledger must then hold every one of them
# (e) idle: a terminal whose replica holds every card of a ledger with IDLE_CARDS more cards,
#     doing nothing for IDLE_S seconds: its CPU, wake-ups, writes and memory (/proc)
#
# Terminals (and the bench driving them) run on core TERM_CPU, the ledger on core LEDGER_CPU
# (taskset). Everything is created in a temporary directory and removed at the end. The
# results are printed as a table and appended to $BENCH_DIR/cashless-terminal-bench-results.txt.
# See BENCHMARKS.md ("Terminal").
#
# Environment (defaults): TAPS=5000 WARMUP=50 CARDS=1000 DRAIN_OPS=100000 IDLE_CARDS=100000
# IDLE_S=30 IDLE_SETTLE=5 SQLITE_DURATION=10 LEDGER_CPU=0 TERM_CPU=1 BENCH_DIR=${TMPDIR:-/tmp}
# FUND_CENTS=100000 LEDGER_TIMEOUT_MS=1500 SYNC_INTERVAL_MS=2000 DRAIN_BACKOFF_CAP_MS=1000
# DRAIN_TIMEOUT=900 DRAIN_POLL=0.5 FEED_TIMEOUT=600 SKIP_DRAIN=0 SKIP_IDLE=0 SKIP_BUILD=0
# CASHLESS_BIN=<installed binary> (skips the build)
# QUIET_WAIT=S: first wait up to S seconds for other load on the machine to stay under 10%
# IR=1: after (b), count the terminal's instructions per online and offline tap under
#   callgrind instead of (c)-(e) (with TAPS=500 SYNC_INTERVAL_MS=600000 SQLITE_DURATION=2)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAPS=${TAPS:-5000}
WARMUP=${WARMUP:-50}
CARDS=${CARDS:-1000}
DRAIN_OPS=${DRAIN_OPS:-100000}
IDLE_CARDS=${IDLE_CARDS:-100000}
IDLE_S=${IDLE_S:-30}
IDLE_SETTLE=${IDLE_SETTLE:-5}
SQLITE_DURATION=${SQLITE_DURATION:-10}
LEDGER_CPU=${LEDGER_CPU:-0}
TERM_CPU=${TERM_CPU:-1}
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}}
FUND_CENTS=${FUND_CENTS:-100000}
LEDGER_TIMEOUT_MS=${LEDGER_TIMEOUT_MS:-1500}
SYNC_INTERVAL_MS=${SYNC_INTERVAL_MS:-2000}
DRAIN_BACKOFF_CAP_MS=${DRAIN_BACKOFF_CAP_MS:-1000}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}
DRAIN_POLL=${DRAIN_POLL:-0.5}
FEED_TIMEOUT=${FEED_TIMEOUT:-600}
SKIP_DRAIN=${SKIP_DRAIN:-0}
SKIP_IDLE=${SKIP_IDLE:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

BENCH_NAME=terminal.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in taskset awk sed lscpu mkfifo; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install util-linux coreutils)"
done
command -v sqlite3 >/dev/null || die "sqlite3 is missing (apt-get install sqlite3): it counts the replica and the ledger's orders"

find_bin

TMP=$(mktemp -d "$BENCH_DIR/cashless-terminal-bench.XXXXXX")
LEDGER_PID=""
DRAIN_PID=""
IDLE_PID=""

stop_pid() { # pid: SIGTERM, then wait (SIGKILL after 15 s)
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    set +e
    exec 7>&- 8>&- 2>/dev/null
    for pid in "$DRAIN_PID" "$IDLE_PID" "$LEDGER_PID"; do
        [ -n "$pid" ] && stop_pid "$pid"
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- machine -----------------------------------------------------------------------------
describe_machine "$TMP"
measure_idle_load high

# --- (a) raw SQLite commit rate ----------------------------------------------------------
say "(a) raw SQLite commit rate, ${SQLITE_DURATION} s, core $TERM_CPU (the terminals' core and disk)"
taskset -c "$TERM_CPU" "$BIN" bench sqlite-commit --path "$TMP/raw-commit.db" \
    --duration "$SQLITE_DURATION" --json | tee "$TMP/a.out" >&2
RAW_COMMITS=$(jnum commits_per_s "$TMP/a.out")
RAW_P50=$(jnum p50 "$TMP/a.out")
RAW_P99=$(jnum p99 "$TMP/a.out")

# --- ledger ------------------------------------------------------------------------------
setup_bench_ledger
stop_ledger() { stop_pid "$LEDGER_PID"; LEDGER_PID=""; }

say "starting the ledger on core $LEDGER_CPU"
start_ledger "$LEDGER_CPU" 127.0.0.1:0
URL="http://$ADDR"
say "ledger at $URL (pid $LEDGER_PID)"

# Tops up cards 0..n-1 of a prefix once, through `cashless bench ledger --fund` with fresh
# funding terminals (it then sells 1-cent orders for 1 s on them, which is harmless).
FUNDERS=0
fund() { # cards prefix
    FUNDERS=$((FUNDERS + 1))
    local bar chk
    bar=$(new_token "bench-funder-bar-$FUNDERS" bar)
    chk=$(new_token "bench-funder-checkpoint-$FUNDERS" checkpoint)
    say "funding $1 cards ($2...) with $FUND_CENTS cents each"
    CASHLESS_LEDGER_TOKEN=$bar CASHLESS_FUNDING_TOKEN=$chk \
        taskset -c "$TERM_CPU" "$BIN" bench ledger --url "$URL" --clients 32 --duration 1 \
        --cards "$1" --card-prefix "$2" --fund --fund-cents "$FUND_CENTS" >"$TMP/fund-$FUNDERS.out" \
        || { cat "$TMP/fund-$FUNDERS.out" >&2; die "funding failed"; }
    grep '^funded ' "$TMP/fund-$FUNDERS.out" >&2
}

terminal_config() { # file name journal token backoff_cap_ms
    cat >"$1" <<EOF
[terminal]
name = "$2"
kind = "bar"
journal = "$3"

[ledger]
url = "$URL"
token = "$4"
timeout_ms = $LEDGER_TIMEOUT_MS

[offline]
max_order_cents = 5000
max_card_exposure_cents = 1000000
unknown_card_limit_cents = 0

[sync]
interval_ms = $SYNC_INTERVAL_MS
batch_max = 500
backoff_base_ms = 500
backoff_cap_ms = $5

[reader]
backend = "simulated"
EOF
}

# One run of `cashless bench terminal-tap`, with the machine's CPU over it.
tap_bench() { # name config taps warmup expect
    local name=$1 s0 s1 t0 t1
    say "($name) $3 taps (+$4 warm-up) over $CARDS cards, expecting $5; terminal and bench on core $TERM_CPU"
    s0=$(sys_busy_s); t0=$(now)
    taskset -c "$TERM_CPU" "$BIN" bench terminal-tap --config "$2" --taps "$3" --warmup "$4" \
        --cards "$CARDS" --card-prefix B1 --expect "$5" --terminal-log "$TMP/$name.log" --json \
        >"$TMP/$name.out" || { cat "$TMP/$name.out" >&2; tail -n 20 "$TMP/$name.log" >&2; die "($name) bench terminal-tap failed"; }
    s1=$(sys_busy_s); t1=$(now)
    echo "$(pct "$s0" "$s1" "$t0" "$t1")%" >"$TMP/$name.machine-cpu"
    sed '$d' "$TMP/$name.out" >&2
}

# The journal's counts, from `cashless terminal status`.
status_of() { # config key
    "$BIN" terminal --config "$1" status 2>/dev/null | sed -n "s/^$2: //p"
}

fund "$CARDS" B1

# --- (b) online --------------------------------------------------------------------------
BAR_TOKEN=$(new_token bench-bar bar)
terminal_config "$TMP/bar.toml" bench-bar "$TMP/bar-journal.db" "$BAR_TOKEN" 30000
L0=$(cpu_s "$LEDGER_PID"); T0=$(now)
tap_bench b "$TMP/bar.toml" "$TAPS" "$WARMUP" approved_online
L1=$(cpu_s "$LEDGER_PID"); T1=$(now)
echo "$(pct "$L0" "$L1" "$T0" "$T1")%" >"$TMP/b.ledger-cpu"

# The drain terminal gets its caches (catalog, staff, replica) while the ledger is up.
if [ "$SKIP_DRAIN" != 1 ]; then
    DRAIN_TOKEN=$(new_token bench-drain bar)
    terminal_config "$TMP/drain.toml" bench-drain "$TMP/drain-journal.db" "$DRAIN_TOKEN" 30000
    say "(d) priming the drain terminal with one online sale (catalog, staff and replica caches)"
    taskset -c "$TERM_CPU" "$BIN" bench terminal-tap --config "$TMP/drain.toml" --taps 1 --warmup 0 \
        --cards "$CARDS" --card-prefix B1 --expect approved_online --terminal-log "$TMP/prime.log" \
        >"$TMP/prime.out" || { cat "$TMP/prime.out" >&2; die "priming the drain terminal failed"; }
fi

# --- IR=1: instructions per tap (callgrind) instead of (c)-(e) ---------------------------
# The terminal daemon runs under valgrind's callgrind for two tap runs of different lengths;
# the difference of their instruction counts over the difference of their taps is the work
# per tap, start-up and shutdown cancelled out, whatever the machine's load. Online first (the
# ledger up), then offline (the ledger stopped). Set SYNC_INTERVAL_MS=600000 so that no sync
# round falls inside a run.
if [ "${IR:-0}" = 1 ]; then
    command -v valgrind >/dev/null || die "IR=1 needs valgrind (apt-get install valgrind)"
    cat >"$TMP/callgrind.sh" <<WRAP
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file="$TMP/cg-\$IR_RUN.%p" "$BIN" "\$@"
WRAP
    chmod +x "$TMP/callgrind.sh"
    ir_run() { # mode taps expect -> instructions of the terminal over the run
        IR_RUN=$1-$2 taskset -c "$TERM_CPU" "$BIN" bench terminal-tap --config "$TMP/bar.toml" \
            --taps "$2" --warmup 0 --cards "$CARDS" --card-prefix B1 --expect "$3" \
            --terminal-bin "$TMP/callgrind.sh" --event-timeout 60 --json >"$TMP/ir-$1-$2.out" 2>&1 \
            || { tail -n 5 "$TMP/ir-$1-$2.out" >&2; die "($1) the tap bench under callgrind failed"; }
        callgrind_annotate "$(ls "$TMP"/cg-"$1-$2".*)" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
    }
    ir_mode() { # mode short long expect
        local a b
        a=$(ir_run "$1" "$2" "$4")
        b=$(ir_run "$1" "$3" "$4")
        echo "instructions per $1 tap: $(( (b - a) / ($3 - $2) )) ($a over $2 taps, $b over $3)"
    }
    ir_mode online 200 700 approved_online
    stop_ledger
    ir_mode offline 300 1300 approved_offline
    exit 0
fi

# --- (c) offline -------------------------------------------------------------------------
LEDGER_PORT=${ADDR##*:}
say "stopping the ledger (SIGTERM)"
stop_ledger
tap_bench c "$TMP/bar.toml" "$TAPS" "$WARMUP" approved_offline
echo "n/a" >"$TMP/c.ledger-cpu"

# --- (d) replay drain --------------------------------------------------------------------
DRAIN_S="skipped"; DRAIN_RATE=""; DRAIN_COUNT=""; DRAIN_VERIFY="skipped"
if [ "$SKIP_DRAIN" != 1 ]; then
    tap_bench d "$TMP/drain.toml" "$DRAIN_OPS" 0 approved_offline
    echo n/a >"$TMP/d.ledger-cpu"
    PENDING=$(status_of "$TMP/drain.toml" pending)
    say "(d) the drain terminal's journal holds $PENDING pending operations"
    [ "$PENDING" = "$DRAIN_OPS" ] || die "(d) expected $DRAIN_OPS pending operations, the journal has $PENDING"

    # The terminal daemon, running (stdin held open through a fifo), offline: it backs off.
    # Its retry delay is capped at DRAIN_BACKOFF_CAP_MS (the fill ran with the default 30 s),
    # so that the measurement is the replay, not a random wait for the next retry.
    terminal_config "$TMP/drain.toml" bench-drain "$TMP/drain-journal.db" "$DRAIN_TOKEN" "$DRAIN_BACKOFF_CAP_MS"
    mkfifo "$TMP/drain.in"
    taskset -c "$TERM_CPU" "$BIN" terminal --config "$TMP/drain.toml" --ui jsonl --reader simulated \
        <"$TMP/drain.in" >"$TMP/drain.events" 2>"$TMP/drain-daemon.log" &
    DRAIN_PID=$!
    exec 7>"$TMP/drain.in"
    for _ in $(seq 1200); do
        grep -q '"event":"ready"' "$TMP/drain.events" 2>/dev/null && break
        kill -0 "$DRAIN_PID" 2>/dev/null || { tail -n 20 "$TMP/drain-daemon.log" >&2; die "(d) the terminal exited"; }
        sleep 0.05
    done
    grep -q '"event":"ready"' "$TMP/drain.events" || die "(d) the terminal did not get ready within 60 s"
    read -r DRAIN_START_RSS DRAIN_START_HWM < <(mem_kib "$DRAIN_PID")
    say "(d) terminal up with $PENDING pending (VmRSS $(kib_mib "$DRAIN_START_RSS") MiB, VmHWM $(kib_mib "$DRAIN_START_HWM") MiB); starting the ledger again on port $LEDGER_PORT"
    sleep 1
    start_ledger "$LEDGER_CPU" "127.0.0.1:$LEDGER_PORT"
    D_T0=$(now); D_C0=$(cpu_s "$DRAIN_PID"); D_L0=$(cpu_s "$LEDGER_PID"); D_S0=$(sys_busy_s)
    D_T1=""
    deadline=$(($(date +%s) + DRAIN_TIMEOUT))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        "$BIN" terminal --config "$TMP/drain.toml" status >"$TMP/drain.status" 2>/dev/null || true
        if grep -qx 'pending: 0' "$TMP/drain.status" && grep -qx 'in_doubt: 0' "$TMP/drain.status"; then
            D_T1=$(now)
            break
        fi
        kill -0 "$DRAIN_PID" 2>/dev/null || die "(d) the terminal exited during the drain"
        sleep "$DRAIN_POLL"
    done
    [ -n "$D_T1" ] || die "(d) still $(sed -n 's/^pending: //p' "$TMP/drain.status") pending after $DRAIN_TIMEOUT s"
    D_C1=$(cpu_s "$DRAIN_PID"); D_L1=$(cpu_s "$LEDGER_PID"); D_S1=$(sys_busy_s)
    read -r DRAIN_END_RSS DRAIN_END_HWM < <(mem_kib "$DRAIN_PID")
    DRAIN_S=$(secs "$D_T0" "$D_T1")
    DRAIN_RATE=$(awk -v n="$DRAIN_OPS" -v s="$DRAIN_S" 'BEGIN { printf "%.0f", n / s }')
    DRAIN_TERM_CPU=$(pct "$D_C0" "$D_C1" "$D_T0" "$D_T1")
    DRAIN_LEDGER_CPU=$(pct "$D_L0" "$D_L1" "$D_T0" "$D_T1")
    DRAIN_MACHINE_CPU=$(pct "$D_S0" "$D_S1" "$D_T0" "$D_T1")
    DRAIN_ROUNDS=$(grep -c '"event":"synced"' "$TMP/drain.events" || true)
    say "(d) drained $DRAIN_OPS operations in $DRAIN_S s ($DRAIN_RATE ops/s); terminal CPU $DRAIN_TERM_CPU%, ledger CPU $DRAIN_LEDGER_CPU%"
    printf '{"cmd":"quit"}\n' >&7
    exec 7>&-
    stop_pid "$DRAIN_PID"; DRAIN_PID=""
    # The ledger holds every offline sale of the drain terminal, once, with no gap.
    DRAIN_COUNT=$(sqlite3 -readonly "$TMP/ledger.db" "SELECT count(*) FROM bar_orders o JOIN terminals t USING (terminal_id) WHERE t.name = 'bench-drain' AND o.mode = 'offline'")
    DRAIN_SEQ=$(sqlite3 -readonly "$TMP/ledger.db" "SELECT highest_contiguous_seq FROM terminals WHERE name = 'bench-drain'")
    if [ "$DRAIN_COUNT" = "$DRAIN_OPS" ] && [ "$DRAIN_SEQ" = "$((DRAIN_OPS + 1))" ]; then
        DRAIN_VERIFY="ledger holds $DRAIN_COUNT offline orders of bench-drain, terminal_seq contiguous to $DRAIN_SEQ"
    else
        DRAIN_VERIFY="MISMATCH: ledger holds $DRAIN_COUNT offline orders of bench-drain (expected $DRAIN_OPS), contiguous seq $DRAIN_SEQ (expected $((DRAIN_OPS + 1)))"
    fi
    say "(d) $DRAIN_VERIFY"
else
    start_ledger "$LEDGER_CPU" "127.0.0.1:$LEDGER_PORT"
fi

# The books balance after (b)-(d) (checked before (e), which only adds plain top-ups).
say "cashless ledger audit"
if ledger audit >"$TMP/audit.out" 2>&1; then AUDIT="passed"; else AUDIT="FAILED"; fi
cat "$TMP/audit.out" >&2

# --- (e) idle ----------------------------------------------------------------------------
IDLE_CPU="skipped"
if [ "$SKIP_IDLE" != 1 ]; then
    fund "$IDLE_CARDS" E1
    LEDGER_CARDS=$(sqlite3 -readonly "$TMP/ledger.db" "SELECT count(*) FROM cards")
    IDLE_TOKEN=$(new_token bench-idle bar)
    terminal_config "$TMP/idle.toml" bench-idle "$TMP/idle-journal.db" "$IDLE_TOKEN" 30000
    mkfifo "$TMP/idle.in"
    taskset -c "$TERM_CPU" "$BIN" terminal --config "$TMP/idle.toml" --ui jsonl --reader simulated \
        <"$TMP/idle.in" >"$TMP/idle.events" 2>"$TMP/idle-daemon.log" &
    IDLE_PID=$!
    exec 8>"$TMP/idle.in"
    say "(e) waiting for the idle terminal's replica to hold all $LEDGER_CARDS cards of the ledger"
    F_T0=$(now)
    REPLICA=0
    deadline=$(($(date +%s) + FEED_TIMEOUT))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        kill -0 "$IDLE_PID" 2>/dev/null || { tail -n 20 "$TMP/idle-daemon.log" >&2; die "(e) the terminal exited"; }
        REPLICA=$(sqlite3 -readonly "$TMP/idle-journal.db" "SELECT count(*) FROM replica_cards" 2>/dev/null || echo 0)
        [ "$REPLICA" -ge "$LEDGER_CARDS" ] && break
        sleep 0.5
    done
    [ "$REPLICA" -ge "$LEDGER_CARDS" ] || die "(e) the replica holds $REPLICA of $LEDGER_CARDS cards after $FEED_TIMEOUT s"
    FEED_S=$(secs "$F_T0" "$(now)")
    read -r FEED_RSS FEED_HWM < <(mem_kib "$IDLE_PID")
    # A terminal at a bar has a staff member logged in (the PIN check is argon2).
    printf '{"cmd":"login","staff_id":"s-bench","pin":"1234"}\n' >&8
    for _ in $(seq 600); do
        grep -q '"event":"login"' "$TMP/idle.events" && break
        sleep 0.05
    done
    grep '"event":"login"' "$TMP/idle.events" | grep -q '"ok":true' || die "(e) login failed: $(grep '"event":"login"' "$TMP/idle.events")"
    say "(e) replica complete ($REPLICA cards) after $FEED_S s; idle for ${IDLE_SETTLE} s, then measuring ${IDLE_S} s"
    sleep "$IDLE_SETTLE"
    I_T0=$(now); I_C0=$(cpu_s "$IDLE_PID"); I_L0=$(cpu_s "$LEDGER_PID"); I_S0=$(sys_busy_s)
    I_IO0=$(io_w "$IDLE_PID"); I_X0=$(ctxsw "$IDLE_PID")
    sleep "$IDLE_S"
    I_T1=$(now); I_C1=$(cpu_s "$IDLE_PID"); I_L1=$(cpu_s "$LEDGER_PID"); I_S1=$(sys_busy_s)
    I_IO1=$(io_w "$IDLE_PID"); I_X1=$(ctxsw "$IDLE_PID")
    read -r IDLE_RSS IDLE_HWM < <(mem_kib "$IDLE_PID")
    IDLE_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$IDLE_PID/status")
    IDLE_CPU=$(pct "$I_C0" "$I_C1" "$I_T0" "$I_T1")
    IDLE_LEDGER_CPU=$(pct "$I_L0" "$I_L1" "$I_T0" "$I_T1")
    IDLE_MACHINE_CPU=$(pct "$I_S0" "$I_S1" "$I_T0" "$I_T1")
    IDLE_WRITES=$(awk -v a="$I_IO0" -v b="$I_IO1" -v s="$I_T0" -v e="$I_T1" 'BEGIN {
        split(a, x, " "); split(b, y, " "); d = e - s;
        printf "%.1f KiB/s written in %.1f write syscalls/s", (y[1] - x[1]) / 1024 / d, (y[2] - x[2]) / d }')
    IDLE_WAKEUPS=$(awk -v a="$I_X0" -v b="$I_X1" -v s="$I_T0" -v e="$I_T1" 'BEGIN { printf "%.1f", (b - a) / (e - s) }')
    IDLE_CPU_TIME=$(awk -v a="$I_C0" -v b="$I_C1" 'BEGIN { printf "%.2f", b - a }')
    say "(e) idle terminal: CPU $IDLE_CPU% of one core ($IDLE_CPU_TIME s in $(secs "$I_T0" "$I_T1") s), $IDLE_WAKEUPS context switches/s, $IDLE_WRITES; VmRSS $(kib_mib "$IDLE_RSS") MiB, VmHWM $(kib_mib "$IDLE_HWM") MiB, $IDLE_THREADS threads"
    printf '{"cmd":"quit"}\n' >&8
    exec 8>&-
    stop_pid "$IDLE_PID"; IDLE_PID=""
fi

stop_ledger

# --- results -----------------------------------------------------------------------------
statuses() { sed -n 's/.*"statuses":{\([^}]*\)}.*/\1/p' "$1" | tr -d '"' | sed 's/,/, /g'; }
row() { # label file
    local f=$1
    printf '%-32s %8s %8s %8s %8s %8s %8s %10s %10s %7s %7s %s\n' "$2" \
        "$(jnum taps "$f")" "$(fmt2 "$(jnum p50 "$f")")" "$(fmt2 "$(jnum p90 "$f")")" \
        "$(fmt2 "$(jnum p99 "$f")")" "$(fmt2 "$(jnum p999 "$f")")" "$(fmt2 "$(jnum max "$f")")" \
        "$(fmt3 "$(jnum terminal_cpu_ms_per_tap "$f")")" "$(fmt3 "$(jnum terminal_runqueue_ms_per_tap "$f")")" \
        "$(cat "${f%.out}.ledger-cpu")" \
        "$(cat "${f%.out}.machine-cpu")" "$(statuses "$f")"
}
verdict() { # value op target
    if isnum "${1:-}"; then awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? v <= t : v < t; print ok ? "met" : "NOT met" }'; else echo "n/a"; fi
}
{
    echo
    echo "=== cashless terminal benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ) ==="
    echo "machine: $MACHINE"
    echo "other load before the run: $IDLE_LOAD% of $(($(nproc) * 100))% CPU"
    echo "terminals and the tap bench on core $TERM_CPU, ledger on core $LEDGER_CPU (taskset); $CARDS cards; [ledger] timeout_ms = $LEDGER_TIMEOUT_MS, [sync] interval_ms = $SYNC_INTERVAL_MS"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' (+ uncommitted changes)')"
    echo
    echo "tap -> decision (ms; from writing the tap line to reading the decision line, pipe round trip included)"
    printf '%-32s %8s %8s %8s %8s %8s %8s %10s %10s %7s %7s %s\n' scenario taps p50 p90 p99 p99.9 max "termCPU/tap" "rqWait/tap" ledgCPU allCPU decisions
    row "$TMP/b.out" "(b) online, local ledger"
    row "$TMP/c.out" "(c) offline, ledger stopped"
    [ "$SKIP_DRAIN" = 1 ] || row "$TMP/d.out" "(d) offline, filling the journal"
    echo
    echo "(a) raw SQLite commit rate (WAL, synchronous=FULL, 1 row/commit, core $TERM_CPU): $(fmt0 "$RAW_COMMITS") commits/s, p50 $(fmt3 "$RAW_P50") ms, p99 $(fmt3 "$RAW_P99") ms"
    echo "    tap p50 / raw commit p50: online $(awk -v a="$(jnum p50 "$TMP/b.out")" -v b="$RAW_P50" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }'), offline $(awk -v a="$(jnum p50 "$TMP/c.out")" -v b="$RAW_P50" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }')"
    echo "termCPU/tap: the terminal's CPU (ms) per measured tap, arming included; rqWait/tap: time (ms) per tap the terminal's threads were runnable but waited for the CPU (other load on core $TERM_CPU shows here); ledgCPU: the ledger over the whole bench run (% of one core); allCPU: the whole machine over it ($(($(nproc) * 100))% max)"
    echo
    if [ "$SKIP_DRAIN" != 1 ]; then
        echo "(d) replay drain: $DRAIN_OPS offline operations in $DRAIN_S s from the ledger's restart to 'pending: 0' = $DRAIN_RATE ops/s ($DRAIN_ROUNDS synced events; [sync] backoff_cap_ms = $DRAIN_BACKOFF_CAP_MS, status polled every $DRAIN_POLL s)"
        echo "    during the drain: terminal CPU $DRAIN_TERM_CPU%, ledger CPU $DRAIN_LEDGER_CPU%, whole machine $DRAIN_MACHINE_CPU%"
        echo "    terminal memory with $DRAIN_OPS pending at startup: VmRSS $(kib_mib "$DRAIN_START_RSS") MiB, VmHWM $(kib_mib "$DRAIN_START_HWM") MiB; after the drain: VmRSS $(kib_mib "$DRAIN_END_RSS") MiB, VmHWM $(kib_mib "$DRAIN_END_HWM") MiB"
        echo "    $DRAIN_VERIFY"
        [ "$DRAIN_OPS" -ge 100000 ] || echo "    (a backlog above 10,000 operations also waits [sync] interval_ms between rounds: only DRAIN_OPS=100000 measures the target)"
    fi
    if [ "$SKIP_IDLE" != 1 ]; then
        echo "(e) idle terminal, replica of $REPLICA cards (pulled in $FEED_S s): CPU $IDLE_CPU% of one core over $(secs "$I_T0" "$I_T1") s ($IDLE_CPU_TIME s of CPU), $IDLE_WAKEUPS context switches/s, $IDLE_WRITES"
        echo "    memory: VmRSS $(kib_mib "$IDLE_RSS") MiB, VmHWM $(kib_mib "$IDLE_HWM") MiB after a login ($IDLE_THREADS threads; VmRSS $(kib_mib "$FEED_RSS") MiB, VmHWM $(kib_mib "$FEED_HWM") MiB when the replica was complete, before the login); ledger CPU meanwhile $IDLE_LEDGER_CPU%, whole machine $IDLE_MACHINE_CPU%"
    fi
    echo
    echo "targets: online p99 <= 20 ms: $(verdict "$(jnum p99 "$TMP/b.out")" "<=" 20); offline p99 <= 5 ms: $(verdict "$(jnum p99 "$TMP/c.out")" "<=" 5)$([ "$SKIP_DRAIN" = 1 ] || echo "; drain of 100,000 <= 60 s: $(if [ "$DRAIN_OPS" -ge 100000 ]; then verdict "$DRAIN_S" "<=" 60; else echo "not measured (DRAIN_OPS=$DRAIN_OPS; run with 100000)"; fi)")$([ "$SKIP_IDLE" = 1 ] || echo "; idle CPU < 1%: $(verdict "$IDLE_CPU" "<" 1); idle VmRSS <= 30 MB (29,297 KiB): $(verdict "$IDLE_RSS" "<=" 29297)$([ "$IDLE_CARDS" -ge 100000 ] || echo " (replica below 100,000 cards)")")"
    echo "ledger audit after (b)-(d): $AUDIT"
    echo "  $(tail -n1 "$TMP/audit.out" 2>/dev/null)"
} | tee -a "$BENCH_DIR/cashless-terminal-bench-results.txt"
echo "(results also in $BENCH_DIR/cashless-terminal-bench-results.txt)" >&2
[ "$AUDIT" = passed ] || die "cashless ledger audit failed after the run (see above)"
case "$DRAIN_VERIFY" in MISMATCH*) die "(d) the ledger does not hold every drained operation (see above)" ;; esac
