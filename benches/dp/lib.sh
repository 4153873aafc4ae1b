# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Names and helpers of the data-plane benchmark. Sourced, not executed.
# Adapted from the data-plane baseline's lib.sh (docs/notes/dataplane-baseline.md;
# the script is not part of this repository): same addresses, but every name carries a per-run
# prefix so several runs (and the host) never collide, and the host ends are
# called veth-b<i> so groupd's interface pattern "veth*" matches them.
#
# Everything this harness creates:
#   netns      $P-host (the agent host), $P-t<i> (task i = 1..3)
#   links      veth-b<i> in $P-host, eth0 in $P-t<i>
#   nft        table inet groupd / bridge groupd, only inside $P-host
#   addresses  10.233.1.<i>, only inside the namespaces above

P=${GROUPD_BENCH_PREFIX:-gdb$$}
export GROUPD_BENCH_PREFIX=$P  # the same names in every script of this run
HOSTNS="$P-host"
N=3

task_ns()  { echo "$P-t$1"; }
host_if()  { echo "veth-b$1"; }
task_ip4() { echo "10.233.1.$1"; }

H() { ip netns exec "$HOSTNS" "$@"; }
T() { local i=$1; shift; ip netns exec "$(task_ns "$i")" "$@"; }

die() { echo "ERROR: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
netns_exists() { [ -e "/run/netns/$1" ]; }

# Path of a benchmark binary (benches/NAME.rs), built if needed.
bench_exe() {
  (cd "$(dirname "${BASH_SOURCE[0]}")/../.." &&
    cargo bench --no-run --bench "$1" --message-format=json 2>/dev/null |
    sed -n "s|.*\"executable\":\"\([^\"]*/deps/$1-[^\"]*\)\".*|\1|p" | tail -1)
}
