#!/usr/bin/env bash
# The benchmark against the original Python pipeline, from a fresh machine:
# set-up, colcon build, then benches/compare.py with these arguments
# (for example --report BENCHMARKS.md, or --quick). See BENCHMARKS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/build.sh >/dev/null
# shellcheck disable=SC1091
source env.sh
# env.sh keeps DDS discovery on loopback; the harness picks its own ROS_DOMAIN_ID.
exec python3 benches/compare.py "$@"
