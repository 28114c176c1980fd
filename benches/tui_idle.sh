#!/usr/bin/env bash
# The idle TUI: CPU and frames drawn by `cashless terminal --ui tui` doing nothing, next to the
# same daemon on `--ui jsonl` (the reference: everything but the screen), in the same run.
#
#   bash benches/tui_idle.sh
#
# A ledger (release build, its own core) with the example menu; two bar terminals with the
# default sync interval: one in tmux on a 100x30 pseudo-terminal, logged in and left on the
# order screen (what a bar terminal shows between customers), the other on JSON lines. Each is
# sampled for IDLE_S seconds after IDLE_SETTLE seconds: CPU from /proc/PID/stat (user +
# system), and for the TUI the frames it drew (logged when it exits).
#
# Environment (defaults): IDLE_S=60 IDLE_SETTLE=5 LEDGER_CPU=0 TERM_CPU=1 SKIP_BUILD=0
# CASHLESS_BIN=<binary> (skips the build). Needs tmux.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IDLE_S=${IDLE_S:-60}
IDLE_SETTLE=${IDLE_SETTLE:-5}
LEDGER_CPU=${LEDGER_CPU:-0}
TERM_CPU=${TERM_CPU:-1}

BENCH_NAME=tui_idle.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"
for tool in tmux taskset awk getconf; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install tmux util-linux)"
done
find_bin

TMP=$(mktemp -d)
SOCKET="cashless-tui-idle-$$"
LEDGER_PID=""
JSONL_PID=""
cleanup() {
    tmux -L "$SOCKET" kill-server 2>/dev/null || true
    [ -n "$JSONL_PID" ] && kill "$JSONL_PID" 2>/dev/null || true
    [ -n "$LEDGER_PID" ] && kill "$LEDGER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

export CASHLESS_DATABASE="sqlite:$TMP/ledger.db"
# The example configuration's [taxes] has the VAT rates the example catalog names.
"$BIN" ledger --config "$ROOT/config/ledger.example.toml" catalog import "$ROOT/config/catalog.example.toml" >/dev/null
TOKEN_TUI=$("$BIN" ledger terminal add --name bar-1 --kind bar --point-of-sale "Main Bar" | tail -1)
TOKEN_JSONL=$("$BIN" ledger terminal add --name bar-2 --kind bar --point-of-sale "Main Bar" | tail -1)
"$BIN" ledger staff add --id s-1 --name Sam --role bar --pin 1111 >/dev/null
taskset -c "$LEDGER_CPU" "$BIN" ledger serve --listen 127.0.0.1:0 >"$TMP/ledger.out" 2>"$TMP/ledger.log" &
LEDGER_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/ledger.out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's/^listening on //p' "$TMP/ledger.out")
[ -n "$ADDR" ] || die "the ledger did not start: $(cat "$TMP/ledger.log")"

config() { # name token
    cat >"$TMP/$1.toml" <<EOF
[terminal]
name = "$1"
kind = "bar"
journal = "$TMP/$1.journal.db"
[ledger]
url = "http://$ADDR"
token = "$2"
[reader]
backend = "simulated"
EOF
}
config bar-1 "$TOKEN_TUI"
config bar-2 "$TOKEN_JSONL"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
sample() { # pid -> "cpu_percent"
    sleep "$IDLE_SETTLE"
    local a b
    a=$(cpu_ticks "$1")
    sleep "$IDLE_S"
    b=$(cpu_ticks "$1")
    awk -v d="$((b - a))" -v hz="$HZ" -v s="$IDLE_S" 'BEGIN { printf "%.2f", 100 * d / hz / s }'
}

say "TUI terminal in tmux (100x30), logged in, idle on the order screen"
T_START=$(date +%s)
tmux -L "$SOCKET" -f /dev/null new-session -d -x 100 -y 30 \
    "taskset -c $TERM_CPU $BIN terminal --config $TMP/bar-1.toml --ui tui"
screen() { tmux -L "$SOCKET" capture-pane -p; }
for _ in $(seq 200); do screen | grep -q "Who are you" && break; sleep 0.1; done
tmux -L "$SOCKET" send-keys 1; sleep 0.1
for k in 1 1 1 1 Enter; do tmux -L "$SOCKET" send-keys "$k"; sleep 0.05; done
for _ in $(seq 200); do screen | grep -q " Menu " && break; sleep 0.1; done
screen | grep -q " Menu " || die "the TUI did not reach the order screen: $(screen)"
TUI_PID=$(tmux -L "$SOCKET" list-panes -F '#{pane_pid}')
TUI_CPU=$(sample "$TUI_PID")
T_END=$(date +%s)
# Leave with Ctrl-C (staff have no quit key); the frame count is
# logged at exit and covers the whole run (start, login, idle).
tmux -L "$SOCKET" send-keys C-c
for _ in $(seq 100); do grep -q "the screen closed" "$TMP/bar-1.journal.log" 2>/dev/null && break; sleep 0.1; done
FRAMES=$(sed -n 's/.*frames=\([0-9]*\).*/\1/p' "$TMP/bar-1.journal.log" | tail -1)
[ -n "$FRAMES" ] || die "no frame count in $TMP/bar-1.journal.log"
RUN_S=$((T_END - T_START))

say "reference: the same daemon on JSON lines, idle"
mkfifo "$TMP/stdin"
taskset -c "$TERM_CPU" "$BIN" terminal --config "$TMP/bar-2.toml" --ui jsonl <"$TMP/stdin" >"$TMP/jsonl.out" 2>"$TMP/jsonl.log" &
JSONL_PID=$!
exec 3>"$TMP/stdin"
for _ in $(seq 100); do grep -q '"ready"' "$TMP/jsonl.out" && break; sleep 0.1; done
JSONL_CPU=$(sample "$JSONL_PID")
exec 3>&-

printf '\nIdle for %s s after %s s (terminal on core %s, ledger on core %s), %s:\n' \
    "$IDLE_S" "$IDLE_SETTLE" "$TERM_CPU" "$LEDGER_CPU" "$(uptime | sed 's/.*load/load/')"
printf '| %-44s | %10s |\n' "Measure" "Result"
printf '| %-44s | %10s |\n' "--------------------------------------------" "----------"
printf '| %-44s | %9s%% |\n' "TUI terminal, idle: CPU (of one core)" "$TUI_CPU"
printf '| %-44s | %9s%% |\n' "JSON-lines terminal, idle: CPU (reference)" "$JSONL_CPU"
printf '| %-44s | %10s |\n' "TUI frames drawn in the whole run" "$FRAMES"
printf '| %-44s | %10s |\n' "TUI run (start, login, idle), seconds" "$RUN_S"
