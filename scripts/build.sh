#!/usr/bin/env bash
# Build both packages (mobile_vla_msgs in msg/, mobile_vla at the root) with
# colcon into build/ and install/, like `colcon build` in a ROS workspace.
# The node is built with Cargo's release profile (the tests and benchmarks use
# the same artefacts). Extra arguments go to colcon.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
# shellcheck disable=SC1091
source env.sh
# colcon-cargo would also build each member crate of the Cargo workspace as a
# package of its own; they are libraries of mobile_vla, built with it.
export COLCON_EXTENSION_BLOCKLIST="colcon_core.package_discovery.cargo_workspace${COLCON_EXTENSION_BLOCKLIST:+:$COLCON_EXTENSION_BLOCKLIST}"
# r2r caches the bindings it generates by environment, not by message content:
# after a change in msg/, drop them so the node is built against the new definitions.
MSG_HASH="$(cat msg/msg/*.msg | sha256sum | cut -c1-16)"
MSG_STAMP=build/mobile_vla_msgs.sha
if [ -d build/mobile_vla ] && [ "$(cat "$MSG_STAMP" 2>/dev/null)" != "$MSG_HASH" ]; then
  echo "msg/ changed: regenerating r2r's bindings" >&2
  cargo clean -q -p r2r_msg_gen -p r2r --target-dir build/mobile_vla
  cargo clean -q --release -p r2r_msg_gen -p r2r --target-dir build/mobile_vla
fi
colcon --log-base log build --paths msg . --build-base build --install-base install \
  --cargo-args --release "$@"
echo "$MSG_HASH" >"$MSG_STAMP"
