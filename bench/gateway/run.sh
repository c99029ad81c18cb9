#!/usr/bin/env bash
# SMTP gateway benchmark: smtp-source -> veto -> smtp-sink, against a Postfix relay that
# enforces the same suppression list (check_recipient_access) and against smtp-source ->
# smtp-sink directly, all in one sitting. See bench/gateway/README.md.
#
# usage: bench/gateway/run.sh /path/to/release/veto [SCRATCH_DIR]
# env:   SESSIONS="20 50"  REPEATS=3  MSGS=20000  SIZE=2048  DKIM=1 (0 = skip the DKIM runs)
#        SHARED=/work/shared/bench (the shared, read-only scripts: cpu.sh, direct-bench.sh,
#        relay-bench.sh, postfix-relay.sh, which are used as they are)
#        VETO_EXTRA_ENV="VETO_DELIVERY__POOL_SIZE=16 ..." (extra settings for veto serve)
#        PATHS="direct postfix veto" (which paths to measure; "veto" alone for quick A/B runs)
# Builds nothing. Ports: smtp-sink 127.0.0.1:2525, relay under test 127.0.0.1:2526,
# veto's web server 127.0.0.1:18480 (not measured). Needs smtp-source, smtp-sink, postfix.
set -euo pipefail

VETO=$(realpath "${1:?usage: run.sh /path/to/release/veto [SCRATCH_DIR]}")
[ -x "$VETO" ] || { echo "run.sh: $VETO is not an executable" >&2; exit 2; }
SHARED=${SHARED:-/work/shared/bench}
for f in cpu.sh direct-bench.sh relay-bench.sh postfix-relay.sh; do
  [ -r "$SHARED/$f" ] || { echo "run.sh: $SHARED/$f is missing (set SHARED)" >&2; exit 2; }
done
for p in smtp-source smtp-sink postfix postmap; do
  command -v $p >/dev/null || { echo "run.sh: $p is not installed (Debian: postfix)" >&2; exit 2; }
done
SESSIONS=${SESSIONS:-20 50}; REPEATS=${REPEATS:-3}; MSGS=${MSGS:-20000}; SIZE=${SIZE:-2048}
DKIM=${DKIM:-1}
export BENCH_DIR=$(realpath -m "${2:-$(mktemp -d /tmp/veto-gw-bench.XXXXXX)}")
mkdir -p "$BENCH_DIR"; chmod 755 "$BENCH_DIR"
HZ=$(getconf CLK_TCK)
. "$SHARED/cpu.sh"
RES=$BENCH_DIR/results.tsv; : > "$RES"
LOG=$BENCH_DIR/log.txt; : > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }

# ---- veto's scratch data: the same suppression list as the Postfix peer ----------------
V=$BENCH_DIR/veto; mkdir -p "$V"
cat > "$V/veto.toml" <<'TOML'
[store]
data_dir = "veto-data"

[web]
listen = "127.0.0.1:18480"
public_url = "http://127.0.0.1:18480"

[organisation]
name = "Bench Shop"
postal_address = "1 Bench Street, Testtown"
domain = "example.com"

[gateway]
listen = "127.0.0.1:2526"
trusted_networks = ["127.0.0.1/32"]
trusted_default_topic = "news"
# smtp-source opens every session from 127.0.0.1 (the default, 50, is too few for 50 sessions)
max_connections_per_client = 1000

[delivery]
upstream = "smtp://127.0.0.1:2525"
tls = "none"

[log]
level = "warn"
TOML
vt() { (cd "$V" && "$VETO" --config veto.toml "$@"); }
vt topics add news --name "Product news" --description "New products, about once a month." >/dev/null
# recipients <n>rcpt@example.com, n = 1..200000: n % 5 == 0 withdrawn, the others granted "news"
python3 - "$V/contacts.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("email,topic,action,at\n")
    for n in range(1, 200001):
        act = "withdraw" if n % 5 == 0 else "grant"
        f.write(f"{n}rcpt@example.com,news,{act},2026-01-01T00:00:00Z\n")
PY
t0=$(date +%s.%N)
vt import contacts "$V/contacts.csv" </dev/null >"$BENCH_DIR/import.log" 2>&1
say "imported 200,000 contacts in $(awk -v a=$t0 -v b=$(date +%s.%N) 'BEGIN{printf "%.1f", b-a}') s"
if [ "$DKIM" = 1 ]; then
  vt dkim keygen --selector bench --domain example.com --algorithm rsa --bits 2048 \
     --out "$V/dkim-bench.key" > "$BENCH_DIR/dkim-keygen.log"
fi

# ---- one veto run: start veto serve, drive it with relay-bench.sh, add veto's own CPU -------
VPID=
start_veto() {  # $1 = plain|dkim
  local extra=()
  if [ "$1" = dkim ]; then
    extra=(VETO_DKIM__DOMAIN=example.com VETO_DKIM__SELECTOR=bench
           VETO_DKIM__PRIVATE_KEY_FILE="$V/dkim-bench.key")
  fi
  # shellcheck disable=SC2086
  (cd "$V" && exec env "${extra[@]}" ${VETO_EXTRA_ENV:-} "$VETO" --config veto.toml serve) \
      >> "$BENCH_DIR/veto-serve.log" 2>&1 &
  VPID=$!
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/2526) 2>/dev/null; then return 0; fi
    kill -0 $VPID 2>/dev/null || { echo "veto serve exited; see $BENCH_DIR/veto-serve.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "veto serve did not listen on 127.0.0.1:2526" >&2; exit 1
}
stop_veto() { kill -TERM $VPID 2>/dev/null || true; wait $VPID 2>/dev/null || true; VPID=; }
trap 'stop_veto; "$SHARED/postfix-relay.sh" stop "$BENCH_DIR" >/dev/null 2>&1 || true' EXIT

# relay-bench line -> "acc_rate sink_rate relay_cpu_pct td flush_per_msg"
parse_relay() {
  sed -E 's/.*accept ([0-9.]+)s ([0-9]+) msg\/s \| sink got ([0-9]+)\/([0-9]+) in ([0-9.]+)s = ([0-9]+) msg\/s.*relay=([0-9]+).*= ([0-9.]+) flush\/msg.*/\2 \6 \7 \5 \8 \3 \4/' <<<"$1"
}
ACC=$(( MSGS - MSGS/5 ))   # messages the relay accepts (1 recipient each, 20% suppressed)

run_direct() {  # $1 sessions $2 round
  local out; out=$("$SHARED/direct-bench.sh" "$1" "$SIZE" "$MSGS" "" "direct-s$1-r$2")
  say "$out"
  local rate; rate=$(sed -E 's/.* ([0-9]+) msg\/s .*/\1/' <<<"$out")
  printf "direct\t%s\t%s\t%s\t%s\t-\t-\n" "$1" "$2" "$rate" "$rate" >> "$RES"
}
run_postfix() {
  local out; out=$(PFQ=$BENCH_DIR/pf/spool "$SHARED/relay-bench.sh" "$1" "$SIZE" "$MSGS" 1 "postfix-s$1-r$2")
  say "$out"
  read acc sink cpu td fl got exp < <(parse_relay "$out")
  local us; us=$(awk -v c=$cpu -v td=$td -v n=$ACC 'BEGIN{printf "%.0f", c/100*td/n*1e6}')
  [ "$got" = "$exp" ] || say "WARNING: sink got $got of $exp"
  printf "postfix\t%s\t%s\t%s\t%s\t%s\t%s\n" "$1" "$2" "$acc" "$sink" "$us" "$fl" >> "$RES"
}
run_veto() {  # $1 sessions $2 round $3 plain|dkim
  start_veto "$3"
  local k0 k1 out; k0=$(ticks $VPID)
  out=$(PFQ="" "$SHARED/relay-bench.sh" "$1" "$SIZE" "$MSGS" 1 "veto-$3-s$1-r$2")
  k1=$(ticks $VPID)
  stop_veto
  read acc sink cpu td fl got exp < <(parse_relay "$out")
  local us; us=$(awk -v k=$((k1-k0)) -v hz=$HZ -v n=$ACC 'BEGIN{printf "%.0f", k/hz/n*1e6}')
  local pct; pct=$(awk -v k=$((k1-k0)) -v hz=$HZ -v td=$td 'BEGIN{printf "%.0f", 100*k/hz/td}')
  say "$out | veto CPU=$pct% of 1 core over the run = $us us/msg"
  [ "$got" = "$exp" ] || say "WARNING: sink got $got of $exp"
  local lab=veto; [ "$3" = dkim ] && lab=veto-dkim
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$lab" "$1" "$2" "$acc" "$sink" "$us" "$fl" >> "$RES"
}

say "load before: $(cat /proc/loadavg)   busy%: $(wait_quiet)   $(date -u +%FT%TZ)   $(nproc) cores"
say "veto: $VETO   msgs=$MSGS size=$SIZE sessions=[$SESSIONS] repeats=$REPEATS   scratch: $BENCH_DIR"
set +e   # a failed run is reported (WARNING lines), the others go on
PATHS=${PATHS:-direct postfix veto}
on() { [[ " $PATHS " == *" $1 "* ]]; }
for r in $(seq 1 "$REPEATS"); do
  if on direct; then for s in $SESSIONS; do run_direct "$s" "$r"; done; fi
  if on postfix; then
    "$SHARED/postfix-relay.sh" start "$BENCH_DIR" >/dev/null 2>&1
    sleep 1
    for s in $SESSIONS; do run_postfix "$s" "$r"; done
    "$SHARED/postfix-relay.sh" stop "$BENCH_DIR" >/dev/null 2>&1
    sleep 1
  fi
  if on veto; then
    for s in $SESSIONS; do run_veto "$s" "$r" plain; done
    if [ "$DKIM" = 1 ]; then for s in $SESSIONS; do run_veto "$s" "$r" dkim; done; fi
  fi
done

# ---- medians ------------------------------------------------------------------------------
python3 - "$RES" <<'PY' | tee -a "$LOG"
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {}
for lab in ("direct", "postfix", "veto", "veto-dkim"):
    for s in sorted({r[1] for r in rows}, key=int):
        rs = [r for r in rows if r[0] == lab and r[1] == s]
        if not rs: continue
        m = lambda i: st.median(float(r[i]) for r in rs) if rs[0][i] != "-" else None
        med[(lab, s)] = (m(3), m(4), m(5), m(6), len(rs))
print()
print("medians (msg/s: accepted at the relay / delivered at the sink; CPU: the relay's own, per relayed message)")
print("| path | sessions | runs | msg/s at relay | msg/s at sink | relay CPU µs/msg | flushes/msg | relay ÷ Postfix | sink ÷ direct |")
print("|---|---|---|---|---|---|---|---|---|")
for (lab, s), (acc, sink, us, fl, n) in med.items():
    pf = med.get(("postfix", s)); d = med.get(("direct", s))
    f = lambda v, fmt: "–" if v is None else fmt.format(v)
    rp = acc / pf[0] if pf and lab != "direct" else None
    rd = sink / d[1] if d and lab != "direct" else None
    print(f"| {lab} | {s} | {n} | {acc:,.0f} | {sink:,.0f} | {f(us, '{:,.0f}')} | {f(fl, '{:.2f}')} | {f(rp, '{:.2f}×')} | {f(rd, '{:.2f}')} |")
PY
echo "raw lines: $LOG; per-run table: $RES"
