#!/usr/bin/env bash
# Campaign benchmark: one campaign to N people (default 1,000,000) who all
# agreed to its topic, about 2 KB per rendered personal copy, sent by
# `veto serve` through its SMTP transport to Postfix's `smtp-sink` on
# loopback, SQLite store. Then the same with RSA-2048 DKIM, for
# DKIM_SECONDS (default 120; the campaign is cancelled then, and the rate
# is what was sent in that time).
#
# usage: bench/campaign/run.sh /path/to/release/veto [N] [DKIM_SECONDS]
#        KEEP=1 keeps the scratch directory (under /tmp; about 2.5 GB for 1M).
#
# Prints: time to send, messages/s, veto's peak RSS (VmHWM), receipts
# written, and the longest time between a recipient's guard check and
# their hand-off (from the API). Builds nothing. Needs smtp-sink (postfix),
# python3, curl.
set -euo pipefail

VETO=$(realpath "${1:?usage: run.sh /path/to/release/veto [N] [DKIM_SECONDS]}")
N=${2:-1000000}
DKIM_SECONDS=${3:-120}
HERE=$(cd "$(dirname "$0")" && pwd)
for p in smtp-sink python3 curl; do
  command -v "$p" >/dev/null || { echo "needs $p (apt-get install postfix python3 curl)" >&2; exit 2; }
done

SCRATCH=$(mktemp -d /tmp/veto-campaign-bench.XXXXXX)
SINK_PORT=${SINK_PORT:-2725}
WEB_PORT=${WEB_PORT:-18580}
SMTP_PORT=${SMTP_PORT:-2726}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$SCRATCH"; else echo "kept $SCRATCH"; fi
}
trap cleanup EXIT
say() { echo "[$(date -u +%H:%M:%S)] $*"; }

export VETO_GATEWAY__LISTEN=127.0.0.1:$SMTP_PORT
export VETO_WEB__LISTEN=127.0.0.1:$WEB_PORT
export VETO_WEB__PUBLIC_URL=https://veto.example.org
export VETO_ORGANISATION__POSTAL_ADDRESS="1 High Street, Exampletown"
export VETO_DELIVERY__UPSTREAM=smtp://127.0.0.1:$SINK_PORT
export VETO_DELIVERY__TLS=none
export VETO_DELIVERY__POOL_SIZE=${POOL_SIZE:-16}
CONCURRENCY=${CONCURRENCY:-16}

cd "$SCRATCH"
say "generating $N people and importing them"
python3 "$HERE/gen_audience.py" "$N" > audience.csv
"$VETO" init . >/dev/null
"$VETO" topics add news --name "Product news" --description "What we made this month." >/dev/null
/usr/bin/time -f "import: %e s wall, %M KB max RSS" "$VETO" import contacts audience.csv >/dev/null
rm audience.csv
KEY=$("$VETO" keys create --role marketer 2>/dev/null | tail -n1 | tr -d '[:space:]')

# About 2 KB per personal copy with headers, links and footer (printed below).
python3 - <<'EOF'
para = "This winter we made boots that keep the rain out. "
text = "Hello {{ name }} in {{ attributes.city }},\n\n" + para + "\n\nThe shop\n"
html = "<p>Hello {{ name }} in {{ attributes.city }},</p>\n<p>" + para + "</p>\n"
open("text.txt", "w").write(text)
open("body.html", "w").write(html)
EOF

smtp-sink -u nobody 127.0.0.1:$SINK_PORT 1024 &
PIDS+=($!)

serve() {
  "$VETO" serve > serve.log 2>&1 &
  VETO_PID=$!
  PIDS+=($VETO_PID)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$WEB_PORT/healthz" >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "veto serve did not start:" >&2; cat serve.log >&2; exit 1
}

api() { curl -fs -H "Authorization: Bearer $KEY" "http://127.0.0.1:$WEB_PORT/api/v1/campaigns/$1"; }
field() { python3 -c "import json,sys; c=json.load(sys.stdin)['campaign']; print(eval(sys.argv[1]))" "$1"; }
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$VETO_PID/status"; }

campaign() {
  "$VETO" campaign create --name "$1" --topic news --from news@shop.example --from-name Shop \
    --subject 'Winter news for {{ name }}' --text text.txt --html body.html --concurrency "$CONCURRENCY" \
    2>/dev/null | grep -oE '[0-9]+' | head -n1
}

receipts() {
  python3 - "$SCRATCH/veto-data/veto.db" "$1" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("SELECT COUNT(*) FROM receipts WHERE message_id LIKE ?", (f"<campaign-{sys.argv[2]}.%",)).fetchone()[0])
EOF
}

# ---- without DKIM: the whole campaign ----
serve
ID=$(campaign "bench without DKIM")
SIZE=$("$VETO" campaign preview "$ID" p1@example.com 2>/dev/null | wc -c)
say "campaign $ID; one rendered copy (as previewed) is $SIZE bytes"
T0=$(date +%s.%N)
"$VETO" campaign send "$ID" --no-watch >/dev/null 2>&1
while :; do
  sleep 2
  S=$(api "$ID")
  state=$(field "c['state']" <<<"$S")
  sent=$(field "c['progress']['sent']" <<<"$S")
  [ $(( $(date +%s) % 20 )) -lt 2 ] && say "  $state: $sent sent, RSS peak $(hwm) MB"
  [ "$state" = done ] && break
  [ "$state" = sending ] || { echo "campaign is $state: $S" >&2; exit 1; }
done
T1=$(date +%s.%N)
S=$(api "$ID")
SENT=$(field "c['progress']['sent']" <<<"$S")
WINDOW=$(field "c['longest_check_to_handoff_us']" <<<"$S")
PEAK=$(hwm)
R=$(receipts "$ID")
RATE=$(python3 -c "print(round($SENT / ($T1 - $T0)))")
say "without DKIM: $SENT sent in $(python3 -c "print(round($T1 - $T0, 1))") s = $RATE msg/s; peak RSS $PEAK MB; $R receipts; longest guard check to hand-off $WINDOW us"
kill "$VETO_PID"; wait "$VETO_PID" 2>/dev/null || true

# ---- with RSA-2048 DKIM: DKIM_SECONDS of sending ----
"$VETO" dkim keygen --selector bench --domain shop.example >/dev/null
export VETO_DKIM__SELECTOR=bench
export VETO_DKIM__PRIVATE_KEY_FILE=$(ls "$SCRATCH"/veto-data/dkim/*.key | head -n1)
serve
ID2=$(campaign "bench with DKIM")
"$VETO" campaign preview "$ID2" p1@example.com 2>/dev/null | grep -q '^DKIM-Signature: v=1; a=rsa-sha256' \
  || { echo "the preview carries no RSA DKIM signature" >&2; exit 1; }
"$VETO" campaign send "$ID2" --no-watch >/dev/null 2>&1
# Queueing a million recipients takes a few seconds; time from the first message.
while [ "$(api "$ID2" | field "c['progress']['sent']")" = 0 ]; do sleep 0.5; done
A0=$(date +%s.%N); S0=$(api "$ID2" | field "c['progress']['sent']")
sleep "$DKIM_SECONDS"
A1=$(date +%s.%N); S1=$(api "$ID2" | field "c['progress']['sent']")
S=$(api "$ID2")
WINDOW2=$(field "c['longest_check_to_handoff_us']" <<<"$S")
"$VETO" campaign cancel "$ID2" >/dev/null 2>&1 || true
PEAK2=$(hwm)
DRATE=$(python3 -c "print(round(($S1 - $S0) / ($A1 - $A0)))")
say "with RSA-2048 DKIM: $((S1 - S0)) sent in $(python3 -c "print(round($A1 - $A0, 1))") s = $DRATE msg/s; peak RSS $PEAK2 MB; longest guard check to hand-off $WINDOW2 us"
echo
echo "| run | messages | msg/s | peak RSS | receipts | longest check → hand-off |"
echo "|---|---|---|---|---|---|"
echo "| no DKIM | $SENT (whole campaign) | $RATE | $PEAK MB | $R | $WINDOW µs |"
echo "| RSA-2048 DKIM | $((S1 - S0)) in ${DKIM_SECONDS} s | $DRATE | $PEAK2 MB | | $WINDOW2 µs |"
