#!/usr/bin/env python3
"""Replay camera and command monitor for the main job (scripts/run.sh).

An rclpy peer of the running node: it publishes the bundled sample frames
(share/mobile_vla/models/samples/*.png) as sensor_msgs/Image at a fixed rate,
publishes the instruction, and prints, for every frame the policy ran on, the
command it produced and its latency (from ~/inference_stats), and at the end
how many commands cmd_vel carried.

    demo.py [--rate HZ] [--duration S] [--instruction TEXT] [--namespace NS]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats, Status
from PIL import Image as PILImage
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String


def load_frames(samples_dir: str) -> list[tuple[str, np.ndarray]]:
    paths = sorted(glob.glob(os.path.join(samples_dir, "*.png")))
    if not paths:
        sys.exit(f"demo: no sample frames in {samples_dir}")
    return [(os.path.basename(p), np.asarray(PILImage.open(p).convert("RGB"))) for p in paths]


def to_image_msg(rgb: np.ndarray, stamp, frame_id: str = "camera") -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = rgb.tobytes()
    return msg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", required=True, help="directory of sample PNG frames")
    ap.add_argument("--rate", type=float, default=5.0, help="camera rate, Hz")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds to run (0: until Ctrl-C)")
    ap.add_argument("--instruction", default="navigate around the obstacles to the cup")
    ap.add_argument("--namespace", default="")
    a = ap.parse_args()
    ns = "/" + a.namespace.strip("/") if a.namespace.strip("/") else ""

    frames = load_frames(a.samples)
    rclpy.init()
    node = rclpy.create_node("mobile_vla_demo")
    cam = node.create_publisher(Image, f"{ns}/camera/image_raw", qos_profile_sensor_data)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    task = node.create_publisher(String, f"{ns}/instruction", 10)
    last_stats: dict[int, InferenceStats] = {}
    state = {"frame": 0, "status": None}

    def on_stats(s: InferenceStats):
        t = s.action
        outcome = {0: "ok", 1: "INVALID OUTPUT", 2: "ERROR", 3: "TIMEOUT"}.get(s.outcome, str(s.outcome))
        print(f"frame {s.frame_seq:4d} -> cmd {s.command_seq:5d}  x={t.linear.x:+.3f} y={t.linear.y:+.3f} "
              f"wz={t.angular.z:+.3f}  [{s.policy} on {s.execution_provider}, {outcome}] "
              f"pre={s.preprocess_ms:5.2f} ms infer={s.inference_ms:5.2f} ms "
              f"frame->cmd={s.stamp_to_publish_ms:6.2f} ms dropped={s.frames_dropped}", flush=True)

    def on_cmd(t: Twist):
        state["cmds"] = state.get("cmds", 0) + 1
        if (t.linear.x, t.linear.y, t.angular.z) == (0.0, 0.0, 0.0):
            state["zeros"] = state.get("zeros", 0) + 1

    def on_status(s: Status):
        desc = f"state={s.state} policy={s.active_policy or '-'} reason={s.reason or '-'}"
        if desc != state["status"]:
            state["status"] = desc
            eps = ", ".join(f"{p.name}:{p.execution_provider or 'not loaded'}" for p in s.policies)
            print(f"status   {desc} {eps}", flush=True)

    node.create_subscription(Twist, f"{ns}/cmd_vel", on_cmd, 10)
    node.create_subscription(InferenceStats, f"{ns}/mobile_vla/inference_stats", on_stats, 100)
    node.create_subscription(Status, f"{ns}/mobile_vla/status", on_status, latched)

    def publish_frame():
        name, rgb = frames[state["frame"] % len(frames)]
        state["frame"] += 1
        cam.publish(to_image_msg(rgb, node.get_clock().now().to_msg()))

    def send_instruction_once_matched():
        # The node subscribes volatile (so any ordinary publisher matches): send once it is there.
        if not state.get("sent") and task.get_subscription_count() > 0:
            task.publish(String(data=a.instruction))
            state["sent"] = True
            print(f"demo: instruction {a.instruction!r}", flush=True)

    print(f"demo: replaying {len(frames)} frames at {a.rate} Hz", flush=True)
    node.create_timer(0.1, send_instruction_once_matched)
    node.create_timer(1.0 / a.rate, publish_frame)
    end = time.monotonic() + a.duration if a.duration > 0 else float("inf")
    try:
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    print(f"demo: {state.get('cmds', 0)} commands on cmd_vel, {state.get('zeros', 0)} of them zero", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
