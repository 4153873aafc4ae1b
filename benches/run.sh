#!/usr/bin/env bash
# run.sh        the whole benchmark (`make bench`): control plane + data plane
#               + Marathon source + Mesos source
# run.sh PART…  only these parts (apply, dataplane, marathon, mesos, tamper, fanout, sources, scale); their rows are
#               appended to benches/results/latest.md as a section of its own
#
# Runs, in this order and as root, everything inside scratch network
# namespaces named $GROUPD_BENCH_PREFIX-* (created and deleted here):
#   1. benches/apply.rs      full apply / one-task changes vs `nft`, groupd's peak RSS
#   2. benches/dataplane.sh  UDP and TCP request/response through groupd's policy vs no rules
#   3. benches/marathon.rs   simulated Marathon event -> kernel latency; CPU and RSS under 1,000 events/s
#   4. benches/mesos.rs      simulated Mesos master: 10,000-task snapshot -> kernel (time, peak RSS);
#                            event -> kernel latency
#   5. benches/tamper.rs     table_guard = "notify": `nft` tampers with groupd's table -> repaired (p50/p99)
#   6. benches/fanout.rs     agents through etcd (groupd publish + kind = "etcd"), 100,000 tasks,
#                            N = 10, 100, 1,000 agents: master bytes/CPU vs direct subscriptions,
#                            event -> every agent p50/p99, a reconnect storm; also written to
#                            benches/results/fanout.md
#   7. benches/sources_scale.rs  scenario D: Mesos, Marathon and file sources against 100,000-task
#                            simulated masters, snapshot -> view ready, peak and steady RSS of a child
#                            (writes benches/results/sources.md too)
#   8. benches/scale.rs      scenarios B and C (a 100,000-member group; 1.1 M endpoints) and the curve
#                            11 k / 110 k / 1.1 M vs `nft -f` of a flat set (benches/results/scale.md,
#                            scale.csv, scale.png)
# then prints one markdown table and writes it to benches/results/latest.md.
# About 16 minutes (fanout alone about 8, most of it loading 100,000 tasks); env knobs of the parts pass through (GROUPD_BENCH_RUNS,
# GROUPD_BENCH_CHANGES, GROUPD_BENCH_GROUPS, G, DUR, ROUNDS,
# GROUPD_BENCH_EVENTS, GROUPD_BENCH_RATE, GROUPD_BENCH_SOAK,
# GROUPD_BENCH_SNAPSHOTS, GROUPD_BENCH_TAMPERS, GROUPD_BENCH_TAMPER_SIZES,
# GROUPD_BENCH_TASKS, GROUPD_BENCH_FANOUT_TASKS, GROUPD_BENCH_FANOUT_N,
# GROUPD_BENCH_FANOUT_REAL, GROUPD_BENCH_FANOUT_DIRECT, GROUPD_SCALE, GROUPD_SCALE_CURVE).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export GROUPD_BENCH_PREFIX=${GROUPD_BENCH_PREFIX:-gdb$$}
. "$ROOT/benches/dp/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root (sudo make bench): it creates network namespaces"

WORK=$(mktemp -d "/tmp/$P-run.XXXXXX")
export GROUPD_BENCH_ROWS="$WORK/rows.md"
: > "$GROUPD_BENCH_ROWS"

# Whatever a killed part left behind: only namespaces with this run's prefix,
# and only processes inside them (all started by this run).
cleanup() {
  local rc=$? ns pids
  trap - EXIT INT TERM
  for ns in $(ip netns list | awk -v p="$P-" 'index($1, p) == 1 { print $1 }'); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK" "/tmp/$P-files" "/tmp/$P-mara" "/tmp/$P-mesos" /tmp/"$P"-tamper* "/tmp/$P-fanout"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ALL="apply dataplane marathon mesos tamper fanout sources scale"
PARTS=${*:-$ALL}
for part in $PARTS; do
  [[ " $ALL " == *" $part "* ]] || die "unknown part $part (known: $ALL)"
done
want() { [[ " $PARTS " == *" $1 "* ]]; }

started=$SECONDS
if want apply; then
  APPLY=$(bench_exe apply)
  [ -x "$APPLY" ] || die "bench binary apply missing: cargo build --release --benches"
  log "control plane ($APPLY)"
  if ! "$APPLY" > "$WORK/apply.out"; then
    echo "| control plane: FAILED (apply exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
fi
if want dataplane; then
  DP_POLICY_BIN=$(bench_exe dp_policy)
  export DP_POLICY_BIN
  [ -x "$DP_POLICY_BIN" ] || die "bench binary dp_policy missing: cargo build --release --benches"
  log "data plane (benches/dataplane.sh)"
  if ! "$ROOT/benches/dataplane.sh" > "$WORK/dataplane.out"; then
    echo "| data plane: FAILED (dataplane.sh exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
fi
if want marathon; then
  MARATHON=$(bench_exe marathon)
  [ -x "$MARATHON" ] || die "bench binary marathon missing: cargo build --release --benches"
  log "Marathon source ($MARATHON)"
  if ! "$MARATHON" > "$WORK/marathon.out"; then
    echo "| Marathon source: FAILED (marathon exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
fi
if want mesos; then
  MESOS=$(bench_exe mesos)
  [ -x "$MESOS" ] || die "bench binary mesos missing: cargo build --release --benches"
  log "Mesos source ($MESOS)"
  if ! "$MESOS" > "$WORK/mesos.out"; then
    echo "| Mesos source: FAILED (mesos exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
fi
if want tamper; then
  TAMPER=$(bench_exe tamper)
  [ -x "$TAMPER" ] || die "bench binary tamper missing: cargo build --release --benches"
  log "tamper repair ($TAMPER)"
  if ! "$TAMPER" > "$WORK/tamper.out"; then
    echo "| tamper repair: FAILED (tamper exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
  cat "$WORK/tamper.out"
fi
if want fanout; then
  FANOUT=$(bench_exe fanout)
  [ -x "$FANOUT" ] || die "bench binary fanout missing: cargo build --release --benches"
  log "fan-out through etcd ($FANOUT)"
  if ! GROUPD_BENCH_FANOUT_MD="$ROOT/benches/results/fanout.md" "$FANOUT" > "$WORK/fanout.out"; then
    echo "| fan-out through etcd: FAILED (fanout exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
fi

if want sources; then
  SOURCES=$(bench_exe sources_scale)
  [ -x "$SOURCES" ] || die "bench binary sources_scale missing: cargo build --release --benches"
  log "sources at scale ($SOURCES)"
  before=$(wc -l < "$GROUPD_BENCH_ROWS")
  if ! "$SOURCES" > "$WORK/sources.out"; then
    echo "| sources at scale: FAILED (sources_scale exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
  {
    echo "# Scenario D: sources at scale"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs. \`benches/run.sh sources\`; see benches/sources_scale.rs."
    echo "Ratio = groupd / the comparison column (lower is better)."
    echo
    echo "| measurement | groupd | comparison | ratio | target | result |"
    echo "|---|---|---|---|---|---|"
    tail -n "+$((before + 1))" "$GROUPD_BENCH_ROWS"
  } > "$ROOT/benches/results/sources.md"
fi
if want scale; then
  SCALE=$(bench_exe scale)
  [ -x "$SCALE" ] || die "bench binary scale missing: cargo build --release --benches"
  log "scale: scenarios B, C and the curve ($SCALE)"
  before=$(wc -l < "$GROUPD_BENCH_ROWS")
  if ! "$SCALE" > "$WORK/scale.out"; then
    echo "| scale: FAILED (scale exited with an error; see the messages above) | | | | | MISS |" >> "$GROUPD_BENCH_ROWS"
  fi
  {
    echo "# Scale: scenarios B and C, and the curve"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), kernel $(uname -r), $(nproc) CPUs. \`benches/run.sh scale\`; see benches/scale.rs. Curve: scale.csv, scale.png."
    echo
    echo "| measurement | groupd | comparison | ratio | target | result |"
    echo "|---|---|---|---|---|---|"
    tail -n "+$((before + 1))" "$GROUPD_BENCH_ROWS"
  } > "$ROOT/benches/results/scale.md"
fi

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
when() {
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/'),"
  echo "kernel $(uname -r), $(nft --version), $(nproc) CPUs ($cpu), $(( SECONDS - started )) s."
}
table() {
  echo "| measurement | groupd | comparison | ratio | target | result |"
  echo "|---|---|---|---|---|---|"
  cat "$GROUPD_BENCH_ROWS"
}
mkdir -p "$ROOT/benches/results"
LATEST="$ROOT/benches/results/latest.md"
if [ "$PARTS" = "$ALL" ] || [ ! -f "$LATEST" ]; then
  {
    echo "# groupd benchmark"
    echo
    when
    echo "Cluster: G groups × 10 members, each task in 3 groups (⌈10G/3⌉ tasks), 250 local endpoints."
    echo "Ratio = groupd / the comparison column (times: lower is better; rates: higher is better)."
    echo
    table
  } > "$WORK/latest.md"
  cp "$WORK/latest.md" "$LATEST"
else
  # A partial run adds its rows under a heading of its own: the table above
  # comes from another run (other commit, other time).
  {
    echo
    echo "## $PARTS (run on its own)"
    echo
    when
    echo
    table
  } > "$WORK/latest.md"
  cat "$WORK/latest.md" >> "$LATEST"
fi
echo
cat "$WORK/latest.md"
echo
echo "(written to benches/results/latest.md)"
