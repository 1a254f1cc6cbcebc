#!/usr/bin/env bash
# The benchmark against the strongest Python node, the original Python pipeline
# and a zero-work echo node, from a fresh machine: set-up, colcon build, the
# echo node (a cargo example, same release artefacts), then benches/compare.py with these arguments
# (for example --report BENCHMARKS.md, or --quick). See BENCHMARKS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/build.sh >/dev/null
# shellcheck disable=SC1091
source env.sh
mapfile -t PREFIXES < <(grep -E '^(AMENT_PREFIX_PATH|CMAKE_PREFIX_PATH)=' build/mobile_vla/colcon_command_prefix_build.sh.env)
env "${PREFIXES[@]}" cargo build -q --release --example echo_node --target-dir build/mobile_vla
# env.sh keeps DDS discovery on loopback; the harness picks its own ROS_DOMAIN_ID.
exec python3 benches/compare.py "$@"
