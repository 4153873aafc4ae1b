#!/usr/bin/env bash
# make demo [MODE=file|marathon]: a simulated two-agent cluster in network
# namespaces, groupd on each agent, groupctl show and a connectivity matrix
# measured with real packets. Everything it creates is removed when it ends.
#   file      (default) groupd reads a Marathon document from a file
#   marathon  groupd talks to a simulated Marathon (a standby that redirects
#             to the leader, then the leader); an app is re-grouped through a
#             new version while it runs and the matrix is measured again
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-file}" in
  file)
    exec cargo test --release --test e2e_file_source demo_shows_groupctl_and_a_measured_matrix -- --include-ignored --nocapture --test-threads=1 ;;
  marathon)
    exec cargo test --release --test e2e_marathon demo_marathon_regroups_an_app_live -- --include-ignored --nocapture --test-threads=1 ;;
  *)
    echo "usage: $0 [file|marathon]" >&2; exit 2 ;;
esac
