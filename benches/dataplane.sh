#!/usr/bin/env bash
# dataplane.sh        packets through groupd's policy, against no rules at all
#
# Adapted from the data-plane baseline's dataplane.sh (docs/notes/dataplane-baseline.md;
# routed mode, sockperf parts; the script is not part of this repository). Builds the
# routed topology of dp/topo.sh (a scratch host namespace and 3 task
# namespaces), then alternates A (no rules) and B (groupd's policy for G
# groups, loaded by the dp_policy helper) as A B A B A, and measures task1 ->
# task2 in each:
#   udp  UDP 64 B one-way, sockperf throughput (client CPU0, server CPU1).
#        Unreplied UDP stays NEW in conntrack, so EVERY packet walks the
#        whole policy: the per-packet cost of the rules.
#   rr   TCP request/response 64 B, sockperf ping-pong (both on CPU1:
#        cross-CPU wake-ups on small VMs are slow and noisy).
# Before measuring B it checks that task1 -> task2 (endpoints sharing one
# group) passes and task1 -> task3
# (no shared group) is dropped. Ratios are B / A of the same run; the
# spread of the A runs is the noise floor.
#
# Env: G=10000 DUR=10 (s per measurement; sockperf adds ~2 s) ROUNDS=2 (B runs)
#      WIDE=N: instead of G groups, task1 and task2 in ONE group of N members
#      (a wide group: decided by identity, two lookups), task3 in another
#      (scenarios B/C of the scale benchmark, per packet)
#      DP_POLICY_BIN (path of the dp_policy helper; found with cargo if unset)
#      GROUPD_BENCH_ROWS (markdown rows are appended there too)
#      PRIO="nice -n -20" (priority of the measuring processes)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/dp/lib.sh"

G=${G:-10000} DUR=${DUR:-10} ROUNDS=${ROUNDS:-2} WIDE=${WIDE:-}
if [ -n "$WIDE" ]; then LABEL="one group of $WIDE (wide)"; LOAD=(load-wide "$WIDE"); else LABEL="G=$G"; LOAD=(load "$G"); fi
TARGET_UDP=0.85
PRIO=${PRIO-nice -n -20}
[ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"
for t in sockperf nft ip taskset timeout ping awk; do
  command -v "$t" >/dev/null || die "missing $t (make bench-deps)"
done
DP_POLICY=${DP_POLICY_BIN:-$(bench_exe dp_policy)}
[ -x "$DP_POLICY" ] || die "dp_policy helper not found (cargo build --release --benches)"

SCR=$(mktemp -d "/tmp/$P-dp.XXXXXX")
OUT="$SCR/dataplane.tsv"
PIDS=() TOPO_UP=0
IP2=$(task_ip4 2) IP3=$(task_ip4 3)
if [ "$(nproc)" -ge 2 ]; then SRV_CPU=1 CLI_CPU=0 RR_CPU=1; else SRV_CPU=0 CLI_CPU=0 RR_CPU=0; fi

policy_clear() { # only ever inside the scratch host namespace
  H nft delete table inet groupd 2>/dev/null || true
  H nft delete table bridge groupd 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$TOPO_UP" = 1 ]; then policy_clear; "$HERE/dp/topo.sh" down || true; fi
  rm -rf "$SCR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HERE/dp/topo.sh" up
TOPO_UP=1

# servers in task2 (a simple backgrounded command execs in place: $! is its pid)
T 2 $PRIO taskset -c $RR_CPU sockperf server --tcp -i "$IP2" -p 11111 >/dev/null 2>&1 & PIDS+=($!)
T 2 $PRIO taskset -c $SRV_CPU sockperf server -i "$IP2" -p 11112 >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5

printf 'seq\tspec\tmetric\tvalue\n' > "$OUT"
emit() { printf '%s\t%s\t%s\t%s\n' "$@" >> "$OUT"; }
now() { date +%s.%N; }
can_ping() { T 1 ping -q -c1 -W1 "$1" >/dev/null 2>&1; }

# CPU accounting, robust against other jobs stealing the CPU: CPU ns of the
# client (rusage of its process tree), the server (schedstat) and
# ksoftirqd/0,1; softirq work (veth -> forward -> nft -> veth) is charged to
# whichever task it ran in.
KSOFT=$(pgrep -x 'ksoftirqd/0' || true; pgrep -x 'ksoftirqd/1' || true)
sched_ns() { local p s=0 x; for p in "$@"; do read -r x _ < "/proc/$p/schedstat" && s=$((s + x)); done; echo "$s"; }
timed() { # timed OUTFILE cmd... -> runs cmd, prints its CPU ns (user + sys)
  local TIMEFORMAT='%3U %3S' out=$1; shift
  { time "$@" > "$out" 2>&1 ; } 2> "$out.time" || true
  awk '{ printf "%.0f\n", ($1 + $2) * 1e9 }' "$out.time"
}
run_rr() { # -> transactions/s, p50 latency (us), CPU ns per transaction
  local s0 s1 c
  s0=$(sched_ns "${PIDS[0]}" $KSOFT)
  c=$(timed "$SCR/rr" T 1 $PRIO taskset -c $RR_CPU timeout $((DUR + 15)) sockperf ping-pong --tcp -i "$IP2" -p 11111 -t "$DUR" -m 64)
  s1=$(sched_ns "${PIDS[0]}" $KSOFT)
  awk -v cpu=$((c + s1 - s0)) '
       /\[Total Run\]/ { for (i=1;i<=NF;i++) { if ($i ~ /^RunTime=/) { sub("RunTime=","",$i); t=$i } if ($i ~ /^ReceivedMessages=/) { sub("ReceivedMessages=","",$i); tot=$i } } }
       /percentile 50.000/ { p=$NF }
       END { if (t > 0 && tot > 0) printf "%.0f %.2f %.0f\n", tot/t, p, cpu/tot; else print "NA NA NA" }' "$SCR/rr"
}
run_udp() { # -> sender pps, fraction that reached task2, sender-side CPU ns per packet
  local a b s0 s1 c
  a=$(T 2 cat /sys/class/net/eth0/statistics/rx_packets)
  s0=$(sched_ns $KSOFT)
  c=$(timed "$SCR/udp" T 1 $PRIO taskset -c $CLI_CPU timeout $((DUR + 15)) sockperf throughput -i "$IP2" -p 11112 -t "$DUR" -m 64)
  s1=$(sched_ns $KSOFT)
  b=$(T 2 cat /sys/class/net/eth0/statistics/rx_packets)
  awk -v rx=$((b - a)) -v cpu=$((c + s1 - s0)) '/Total of [0-9]+ messages sent/ { for (i=1;i<=NF;i++) if ($i == "of") s=$(i+1) }
       /Message Rate is/ { for (i=1;i<=NF;i++) if ($i == "is") r=$(i+1) }
       END { if (r > 0 && s > 0) printf "%s %.3f %.0f\n", r, rx/s, cpu/s; else print "NA NA NA" }' "$SCR/udp"
}

# warm-up, not recorded: the first runs after building a topology are slow
DUR_SAVE=$DUR; DUR=1; run_udp >/dev/null; run_rr >/dev/null; DUR=$DUR_SAVE

ORDER=(none)
for ((r = 1; r <= ROUNDS; r++)); do ORDER+=(groupd none); done
seq=0
for spec in "${ORDER[@]}"; do
  seq=$((seq + 1))
  if [ "$spec" = groupd ]; then
    t0=$(now)
    H "$DP_POLICY" "${LOAD[@]}" 2>>"$SCR/dp_policy.log" || die "dp_policy failed: $(tail -3 "$SCR/dp_policy.log")"
    t1=$(now)
    emit $seq "$spec" load_s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
  fi
  chk=ok
  can_ping "$IP2" || chk=FAIL_allowed_peer_blocked
  if [ "$spec" = groupd ]; then
    ! can_ping "$IP3" || chk=FAIL_denied_peer_passes
  else
    can_ping "$IP3" || chk=FAIL_no_rules_but_unreachable
  fi
  emit $seq "$spec" check "$chk"
  if [ "$chk" = ok ]; then
    read -r v f c <<<"$(run_udp)"; emit $seq "$spec" udp_pps "$v"; emit $seq "$spec" udp_fwd_frac "$f"; emit $seq "$spec" udp_cpu_ns "$c"
    read -r t p c2 <<<"$(run_rr)"; emit $seq "$spec" rr_tps "$t"; emit $seq "$spec" rr_p50_us "$p"; emit $seq "$spec" rr_cpu_ns "$c2"
    log "$spec: check ok, udp ${v} pps (${c} CPU ns/pkt, delivered ${f}), rr ${t} tps (p50 ${p} us)"
  else
    log "$spec: check $chk: not measured"
  fi
  if [ "$spec" = groupd ]; then policy_clear; sleep 1; fi  # let the table's teardown finish
done
[ -s "$SCR/dp_policy.log" ] && log "$(tail -1 "$SCR/dp_policy.log")"

# Markdown rows: | measurement | groupd | no rules | ratio | target | result |
ROWS=$(awk -F'\t' -v g="$LABEL" -v dur="$DUR" -v target="$TARGET_UDP" '
  NR == 1 { next }
  function add(k, v) { if (v != "NA") { sum[k] += v; n[k]++; if (!(k in lo) || v < lo[k]) lo[k] = v; if (!(k in hi) || v > hi[k]) hi[k] = v } }
  $3 == "check" { if ($2 == "groupd") { nb++; if ($4 == "ok") okb++; else bad = bad " " $4 } else if ($4 != "ok") bad = bad " " $4; next }
  $3 == "load_s" { add($2 ":load", $4); next }
  { add($2 ":" $3, $4) }
  function m(k) { return n[k] ? sum[k] / n[k] : 0 }
  function kf(v) { return sprintf("%.0fk", v / 1000) }
  END {
    ok = (nb > 0 && okb == nb && bad == "")
    printf "| data plane check, %s: task1 -> task2 (one shared group) passes, task1 -> task3 (no shared group) is dropped | %s | both reachable with no rules | | must hold | %s |\n", g, ok ? "as expected" : "FAILED:" bad, ok ? "PASS" : "MISS"
    a = m("none:udp_pps"); b = m("groupd:udp_pps")
    r = (a > 0 && b > 0) ? b / a : 0
    printf "| UDP 64 B one-way, task1 -> task2, %s (sockperf, %d s; mean of %d runs vs %d no-rule runs) | %s pps [%s–%s]; %.0f CPU ns/pkt | %s pps [%s–%s]; %.0f CPU ns/pkt | %.2f | >= %.2f | %s |\n",
      g, dur, n["groupd:udp_pps"], n["none:udp_pps"], kf(b), kf(lo["groupd:udp_pps"]), kf(hi["groupd:udp_pps"]), m("groupd:udp_cpu_ns"),
      kf(a), kf(lo["none:udp_pps"]), kf(hi["none:udp_pps"]), m("none:udp_cpu_ns"), r, target, (r >= target) ? "PASS" : "MISS"
    a = m("none:udp_cpu_ns"); b = m("groupd:udp_cpu_ns")
    printf "| … UDP CPU time per packet (sender, forwarding path, ksoftirqd: steadier than the rate on a shared machine) | %.0f ns (+%.0f ns) | %.0f ns | %.2f | | |\n",
      b, b - a, a, (a > 0) ? b / a : 0
    a = m("none:rr_tps"); b = m("groupd:rr_tps")
    printf "| TCP request/response 64 B, %s (sockperf ping-pong, %d s) | %s tps, p50 %.1f µs | %s tps, p50 %.1f µs | %.2f | | |\n",
      g, dur, kf(b), m("groupd:rr_p50_us"), kf(a), m("none:rr_p50_us"), (a > 0) ? b / a : 0
    printf "| load of the policy for the data plane (dp_policy: compile + reconcile + process start), %s | %.2f s | | | | |\n", g, m("groupd:load")
  }' "$OUT")
echo "$ROWS"
if [ -n "${GROUPD_BENCH_ROWS:-}" ]; then echo "$ROWS" >> "$GROUPD_BENCH_ROWS"; fi
