#!/usr/bin/env bash
# Runs every test on a fresh or prepared machine: set-up, colcon build, the Rust
# unit tests of the workspace, a bounded fuzzing run, then the end-to-end tests
# over real ROS 2 (pytest with rclpy as the independent peer, the two-minute
# fault-injection soak among them). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/build.sh
# shellcheck disable=SC1091
source env.sh

echo "=== cargo test (workspace unit tests)"
# Same target dir, profile (release) and prefix variables as colcon's build, so
# the workspace is compiled once: only the test harnesses are new here.
COLCON_ENV=build/mobile_vla/colcon_command_prefix_build.sh.env
PREFIXES=()
if [ -f "$COLCON_ENV" ]; then
  mapfile -t PREFIXES < <(grep -E '^(AMENT_PREFIX_PATH|CMAKE_PREFIX_PATH)=' "$COLCON_ENV")
fi
env "${PREFIXES[@]}" cargo test --release --workspace --target-dir build/mobile_vla

echo "=== fuzzing: every parser of untrusted bytes and its good-after-bad twin, 8 s per target (10 targets, 80 s)"
env "${PREFIXES[@]}" cargo run -q --release -p mobile_vla_fuzz --target-dir build/mobile_vla -- all --seconds 8

echo "=== cargo fmt --check and cargo clippy (warnings are errors)"
cargo fmt --all -- --check
env "${PREFIXES[@]}" cargo clippy --workspace --all-targets --target-dir build/mobile_vla -- -D warnings

echo "=== pytest (end to end over ROS 2)"
cd tests
python -m pytest -ra "$@"
