#!/usr/bin/env bash
# The main job: sets up and builds everything, starts the node exactly as
# `ros2 launch mobile_vla mobile_vla.launch.xml` would (parameters from
# config/mobile_vla.yaml, the bundled stand-in models), replays the bundled
# sample frames as a camera with an instruction, and prints every command the
# node publishes with its latency. Stops after DURATION seconds (default 20;
# 0 runs until Ctrl-C). Extra arguments are launch arguments (name:=value).
# RECORD=DIR records the drive (frames, instruction, cmd_vel) for mobile_vla_eval.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/build.sh >&2
# shellcheck disable=SC1091
source env.sh
# A domain of its own, so a demo never drives anything else on this machine.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-77}"
SHARE="$(python3 -c 'import os,sys;[print(os.path.join(p,"share/mobile_vla")) or sys.exit() for p in os.environ["AMENT_PREFIX_PATH"].split(":") if os.path.isfile(os.path.join(p,"share/ament_index/resource_index/packages/mobile_vla"))]')"

python3 scripts/launch_xml.py "$SHARE/launch/mobile_vla.launch.xml" "$@" &
# The replayed camera uses the node's Fast DDS profile too (shared memory for raw frames).
export FASTRTPS_DEFAULT_PROFILES_FILE="$SHARE/config/fastdds_shm.xml"
NODE_PID=$!
trap 'kill -INT $NODE_PID 2>/dev/null; wait $NODE_PID' EXIT
# RECORD=DIR also records the drive as a rosbag2 bag (MCAP) that mobile_vla_eval scores.
python3 scripts/demo.py --samples "$SHARE/models/samples" --duration "${DURATION:-20}" ${RECORD:+--record "$RECORD"}
