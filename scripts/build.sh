#!/usr/bin/env bash
# Build both packages (mobile_vla_msgs in msg/, mobile_vla at the root) with
# colcon into build/ and install/, like `colcon build` in a ROS workspace.
# Extra arguments go to colcon (for example --cargo-args --release).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
# shellcheck disable=SC1091
source env.sh
# colcon-cargo would also build each member crate of the Cargo workspace as a
# package of its own; they are libraries of mobile_vla, built with it.
export COLCON_EXTENSION_BLOCKLIST="colcon_core.package_discovery.cargo_workspace${COLCON_EXTENSION_BLOCKLIST:+:$COLCON_EXTENSION_BLOCKLIST}"
colcon --log-base log build --paths msg . --build-base build --install-base install \
  "$@"
