#!/usr/bin/env bash
# The whole relay path under load: Postfix's smtp-source sends single-recipient
# 2 KB messages into `veto serve`'s gateway, which relays each admitted copy to
# Postfix's smtp-sink over the SMTP upstream transport. Prints messages per
# second and veto's CPU time per message (guard + rewrite + receipts +
# transport).
#
#   cargo build --release -p veto && bench/gateway_smtp.sh [MESSAGES] [SESSIONS]
set -euo pipefail
messages=${1:-20000}
sessions=${2:-16}
veto=${BENCH_VETO:-${CARGO_TARGET_DIR:-target}/release/veto}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
export VETO_GATEWAY__LISTEN=127.0.0.1:26100 VETO_WEB__LISTEN=127.0.0.1:26102
export VETO_DELIVERY__UPSTREAM=smtp://127.0.0.1:26101 VETO_DELIVERY__TLS=none
export VETO_GATEWAY__TRUSTED_DEFAULT_TOPIC=news VETO_ORGANISATION__POSTAL_ADDRESS="1 High Street"
export VETO_LOG__LEVEL=warn
"$veto" init . >/dev/null
"$veto" topics add news --name News --description "What we made this month." >/dev/null
printf 'email,action,topic,at,ip,jurisdiction\na@example.com,grant,news,2025-01-02T10:00:00Z,198.51.100.7,UK\n' > contacts.csv
"$veto" import contacts contacts.csv >/dev/null
smtp-sink -u root 127.0.0.1:26101 1000 &
"$veto" serve 2>serve.log &
veto_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/26100) 2>/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$veto_pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks); start=$(date +%s.%N)
smtp-source -s "$sessions" -m "$messages" -l 2048 -f shop@example.org -t a@example.com 127.0.0.1:26100
end=$(date +%s.%N); after=$(ticks)
awk -v m="$messages" -v s="$start" -v e="$end" -v b="$before" -v a="$after" -v hz="$hz" 'BEGIN {
  printf "%d messages: %.0f msg/s, %.0f µs veto CPU per message\n", m, m / (e - s), (a - b) / hz * 1e6 / m }'
grep -c . serve.log >/dev/null && tail -3 serve.log || true
