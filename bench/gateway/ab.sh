#!/usr/bin/env bash
# One veto leg of the gateway benchmark, for A/B comparisons of two builds:
# every run starts from the same copy of a freshly imported store (the store
# that run.sh uses grows by 8,000 receipts and relay records a run, which
# moves veto's CPU per message by more than most changes do).
#
# usage: bench/gateway/ab.sh PRISTINE_SCRATCH /path/to/veto SESSIONS [MSGS] [-- WRAPPER...]
#   PRISTINE_SCRATCH: a folder made once with
#       PATHS=none REPEATS=1 DKIM=0 bench/gateway/run.sh /path/to/veto PRISTINE_SCRATCH
#   WRAPPER: a command veto serve runs under, e.g. -- perf stat -e context-switches -o out.txt --
#   VETO_ENV="NAME=value ...": extra environment for veto serve.
# Prints the accepted rate, the flushes per message and veto's own CPU per relayed message.
set -euo pipefail
PRISTINE=$(realpath "${1:?usage: ab.sh PRISTINE_SCRATCH VETO SESSIONS [MSGS] [-- WRAPPER...]}")
VETO=$(realpath "${2:?veto binary}")
S=${3:?sessions}
M=${4:-10000}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
WRAP=("$@")
SHARED=${SHARED:-/work/shared/bench}
[ -f "$PRISTINE/veto/veto.toml" ] || { echo "ab.sh: $PRISTINE/veto/veto.toml is missing (make it with run.sh, PATHS=none)" >&2; exit 2; }
if ss -ltn | grep -q ':2526 '; then echo "ab.sh: port 2526 is taken" >&2; exit 2; fi

RUN=$(mktemp -d /tmp/veto-ab.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
cp -a "$PRISTINE/veto" "$RUN/"
export BENCH_DIR=$RUN
. "$SHARED/cpu.sh"
# shellcheck disable=SC2086
(cd "$RUN/veto" && exec env ${VETO_ENV:-} "${WRAP[@]}" "$VETO" --config veto.toml serve) >> "$RUN/serve.log" 2>&1 &
WRAPPED=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/2526) 2>/dev/null && break; sleep 0.1; done
kill -0 $WRAPPED 2>/dev/null || { echo "ab.sh: veto serve did not start:" >&2; cat "$RUN/serve.log" >&2; exit 1; }
PID=$(pgrep -n -f "^$VETO --config") || { echo "ab.sh: no veto serve process" >&2; exit 1; }
k0=$(ticks "$PID")
out=$(PFQ="" "$SHARED/relay-bench.sh" "$S" 2048 "$M" 1 "ab-s$S")
k1=$(ticks "$PID")
kill -TERM "$PID" 2>/dev/null || true
wait $WRAPPED 2>/dev/null || true
sed -E 's/.*accept [0-9.]+s ([0-9]+) msg\/s.*idle-before=([0-9]+)%.*= ([0-9.]+) flush\/msg.*/accepted \1 msg\/s, busy before \2%, \3 flushes\/msg/' <<<"$out"
awk -v k=$((k1 - k0)) -v hz="$(getconf CLK_TCK)" -v n=$((M - M / 5)) \
  'BEGIN{printf "veto CPU %.0f us per relayed message\n", k/hz/n*1e6}'
