# Shared by the bench scripts (sourced, not run): messages, the binary, /proc readings, the
# machine's description and load, and the bench ledger. The script sets ROOT and BENCH_NAME
# (its file name, for messages) before sourcing this.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'benches/%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

# BIN: $CASHLESS_BIN, else the release build (built first unless SKIP_BUILD=1).
find_bin() {
    if [ -n "${CASHLESS_BIN:-}" ]; then
        BIN=$CASHLESS_BIN
    else
        if [ "${SKIP_BUILD:-0}" != 1 ]; then
            say "cargo build --release"
            (cd "$ROOT" && cargo build --release --locked --quiet)
        fi
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cashless"
    fi
    [ -x "$BIN" ] || die "$BIN not found"
}

# Value of a numeric JSON key in a bench's one-line JSON summary ("p99" only matches p99).
jnum() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" "$2" | tail -n1; }
isnum() { [[ "${1:-}" =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; }
fmt0() { if isnum "${1:-}"; then printf '%.0f' "$1"; else printf '%s' "${1:-n/a}"; fi; }
fmt1() { if isnum "${1:-}"; then printf '%.1f' "$1"; else printf '%s' "${1:-n/a}"; fi; }
fmt2() { if isnum "${1:-}"; then printf '%.2f' "$1"; else printf '%s' "${1:-n/a}"; fi; }
fmt3() { if isnum "${1:-}"; then printf '%.3f' "$1"; else printf '%s' "${1:-n/a}"; fi; }
# CPU seconds (user + system, all threads) of a process so far, from /proc (USER_HZ = 100).
cpu_s() { awk '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / 100 }' "/proc/$1/stat"; }
# CPU seconds all processes of the machine have used so far (user, nice, system, irq, softirq, steal).
sys_busy_s() { awk '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / 100 }' /proc/stat; }
# Bytes written (wchar) and write syscalls (syscw) of a process so far.
io_w() { awk '/^wchar:/ {w = $2} /^syscw:/ {c = $2} END {print w, c}' "/proc/$1/io"; }
# Context switches (voluntary + involuntary) of all threads of a process so far: its wake-ups.
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches:/ {s += $2} END {print s + 0}'; }
# VmRSS and VmHWM of a process, KiB.
mem_kib() { awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {print r + 0, h + 0}' "/proc/$1/status"; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# % of one core used between two samples (CPU seconds a..b) taken at times s..e.
pct() { awk -v a="$1" -v b="$2" -v s="$3" -v e="$4" 'BEGIN { printf "%.1f", (b - a) / (e - s) * 100 }'; }
now() { date +%s.%N; }
secs() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.2f", e - s }'; }

# MACHINE: cores, CPU, memory, kernel and the filesystem of directory $1; said once.
describe_machine() {
    local cpu_model
    cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -n1)
    MACHINE="$(nproc) cores ($cpu_model), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(df -T "$1" | awk 'NR==2 {print $2}') at $1"
    say "machine: $MACHINE"
}

# Other load on the machine, whole % of one core (a 2 s sample).
other_load() {
    local b0 b1 q0 q1
    b0=$(sys_busy_s); q0=$(now); sleep 2; b1=$(sys_busy_s); q1=$(now)
    pct "$b0" "$b1" "$q0" "$q1" | cut -d. -f1
}

# IDLE_LOAD: the other load before the run. With QUIET_WAIT=S, first waits up to S seconds
# for it to stay under 10% for three samples in a row (on a shared machine). $1 says how a
# busy machine skews this bench's numbers ("low", "high").
measure_idle_load() {
    local quiet=0 deadline
    IDLE_LOAD=$(other_load)
    if [ "${QUIET_WAIT:-0}" -gt 0 ]; then
        deadline=$(($(date +%s) + QUIET_WAIT))
        while [ "$quiet" -lt 3 ] && [ "$(date +%s)" -lt "$deadline" ]; do
            if [ "$IDLE_LOAD" -lt 10 ]; then quiet=$((quiet + 1)); else quiet=0; fi
            [ "$quiet" -ge 3 ] || IDLE_LOAD=$(other_load)
        done
    fi
    say "other load before the run: $IDLE_LOAD% of $(($(nproc) * 100))% (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    [ "$IDLE_LOAD" -lt 10 ] || say "WARNING: the machine is busy: the numbers will be $1 and noisy"
}

# The bench ledger in $TMP: its configuration, `ledger` (its admin commands), a supervisor,
# a 1-cent product at POS, and `new_token NAME KIND` (registers a terminal, prints its token).
# $1: its database (default sqlite:$TMP/ledger.db; a postgres:// URL must name an existing
# database).
setup_bench_ledger() {
    cat >"$TMP/ledger.toml" <<EOF
[server]
listen = "127.0.0.1:0"
database = "${1:-sqlite:$TMP/ledger.db}"

[festival]
currency = "EUR"

[limits]
recharge_max_cents = 10000000
balance_max_cents = 1000000000
EOF
    POS="Bench Bar"
    ledger migrate >&2
    ledger staff add --id s-bench --name "Bench" --role supervisor --pin 1234 >&2
    ledger product add --id bench-1c --name "Bench 1 cent" --price-cents 1 --point-of-sale "$POS" >&2
}
ledger() { "$BIN" ledger --config "$TMP/ledger.toml" "$@"; }
new_token() { ledger terminal add --name "$1" --kind "$2" --point-of-sale "$POS" | tail -n1; }

# Starts `cashless ledger serve` on cores $1, listening on $2; sets LEDGER_PID and ADDR. $3
# names its output files ($TMP/$3.out and .err; default serve), for several at once.
start_ledger() {
    local out="$TMP/${3:-serve}"
    : >"$out.out"
    taskset -c "$1" "$BIN" ledger --config "$TMP/ledger.toml" serve --listen "$2" \
        >"$out.out" 2>>"$out.err" &
    LEDGER_PID=$!
    ADDR=""
    for _ in $(seq 600); do
        ADDR=$(sed -n 's/^listening on //p' "$out.out" | head -n1)
        [ -n "$ADDR" ] && break
        kill -0 "$LEDGER_PID" 2>/dev/null || { tail -n 20 "$out.err" >&2; die "the ledger exited"; }
        sleep 0.05
    done
    [ -n "$ADDR" ] || die "the ledger did not print 'listening on' within 30 s"
}
