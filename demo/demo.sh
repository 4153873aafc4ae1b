#!/usr/bin/env bash
# make demo: a simulated two-agent cluster in network namespaces, groupd on
# each agent (file source), groupctl show and a connectivity matrix measured
# with real packets. Everything it creates is removed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --test e2e_file_source demo_shows_groupctl_and_a_measured_matrix -- --nocapture --test-threads=1
