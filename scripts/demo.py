#!/usr/bin/env python3
"""Replay camera and live view for the main job (scripts/run.sh).

An rclpy peer of the running node: it publishes the bundled sample frames
(share/mobile_vla/models/samples/*.png) as sensor_msgs/Image at a camera's
rate, publishes the instruction, and prints one line a second: the rate the
frames went out at, how many the node answered (~/inference_stats) and how
many never reached it, the frame-to-command latency (p50), the active policy,
provider and command source (~/status), and the last command on cmd_vel.
Every change of ~/status is printed when it happens; a summary ends the run.

With --record BAG it also records the drive as a rosbag2 bag (MCAP, written
by the `rosbags` package: rosbag2 itself is not needed), as a robot's
recording would hold it: the frames it sent (as PNG on
camera/image_raw/compressed, the same pixels, a fraction of the size), the
instruction, and the commands on cmd_vel. `mobile_vla_eval` scores a policy
on it.

    demo.py --samples DIR [--rate HZ] [--duration S] [--instruction TEXT] [--namespace NS] [--record BAG]
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import time

import numpy as np
import rclpy
from rclpy.signals import SignalHandlerOptions
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats, Status
from PIL import Image as PILImage
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String


def load_frames(samples_dir: str) -> list[np.ndarray]:
    paths = sorted(glob.glob(os.path.join(samples_dir, "*.png")))
    if not paths:
        sys.exit(f"demo: no sample frames in {samples_dir}")
    return [np.asarray(PILImage.open(p).convert("RGB")) for p in paths]


def to_image_msg(rgb: np.ndarray, stamp, frame_id: str = "camera") -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = rgb.tobytes()
    return msg


class Recorder:
    """The drive as a rosbag2 bag (MCAP): what `ros2 bag record` would store of these topics."""

    def __init__(self, path: str, ns: str, frames: list[np.ndarray]):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        store = get_typestore(Stores.ROS2_JAZZY)
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.camera = self.writer.add_connection(f"{ns}/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                                                 typestore=store)
        self.instruction = self.writer.add_connection(f"{ns}/instruction", "std_msgs/msg/String", typestore=store)
        self.cmd = self.writer.add_connection(f"{ns}/cmd_vel", "geometry_msgs/msg/Twist", typestore=store)
        self.pngs = []
        for rgb in frames:
            buf = io.BytesIO()
            PILImage.fromarray(rgb).save(buf, format="png", compress_level=1)
            self.pngs.append(np.frombuffer(buf.getvalue(), np.uint8))
        self.frames = 0

    def frame(self, index: int, sent: Image, now_ns: int):
        msg = CompressedImage(header=sent.header, format="png", data=self.pngs[index].tobytes())
        self.writer.write(self.camera, now_ns, serialize_message(msg))
        self.frames += 1

    def write(self, connection, msg, now_ns: int):
        self.writer.write(connection, now_ns, serialize_message(msg))

    def close(self):
        self.writer.close()


def p50(values: list[float]) -> str:
    return f"{np.percentile(values, 50):5.1f} ms" if values else "   -   "


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", required=True, help="directory of sample PNG frames")
    ap.add_argument("--rate", type=float, default=15.0, help="camera rate, Hz")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds to run (0: until Ctrl-C)")
    ap.add_argument("--instruction", default="navigate around the obstacles to the cup")
    ap.add_argument("--namespace", default="")
    ap.add_argument("--record", metavar="BAG", help="also record the drive to this rosbag2 folder (MCAP)")
    a = ap.parse_args()
    ns = "/" + a.namespace.strip("/") if a.namespace.strip("/") else ""

    frames = load_frames(a.samples)
    recorder = Recorder(a.record, ns, frames) if a.record else None
    # Ctrl-C as a plain KeyboardInterrupt (caught below, then the summary): rclpy's own
    # handler would shut the context down under spin_once and end in a traceback.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("mobile_vla_demo")
    cam = node.create_publisher(Image, f"{ns}/camera/image_raw", qos_profile_sensor_data)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    task = node.create_publisher(String, f"{ns}/instruction", 10)
    s = {"sent": 0, "answered": 0, "drove": 0, "cmds": 0, "zeros": 0, "status": None, "status_changes": 0,
         "second_sent": 0, "latency": [], "all_latency": [], "last_cmd": None, "policy": "-", "source": "-",
         "provider": "-", "state": "-", "frame_seqs": set(), "instructed": False}

    def on_stats(m: InferenceStats):
        s["answered"] += 1
        s["frame_seqs"].add(m.frame_seq)
        if m.command_seq > 0:
            s["drove"] += 1
            s["latency"].append(m.stamp_to_publish_ms)
            s["all_latency"].append(m.stamp_to_publish_ms)
        s["provider"] = m.execution_provider

    def on_cmd(t: Twist):
        if recorder:
            recorder.write(recorder.cmd, t, node.get_clock().now().nanoseconds)
        s["cmds"] += 1
        s["last_cmd"] = (t.linear.x, t.linear.y, t.angular.z)
        if s["last_cmd"] == (0.0, 0.0, 0.0):
            s["zeros"] += 1

    def on_status(m: Status):
        s["policy"], s["source"], s["state"] = m.active_policy or "-", m.active_source or "-", m.state
        desc = f"state={m.state} policy={m.active_policy or '-'} source={m.active_source or '-'} reason={m.reason or '-'}"
        if desc != s["status"]:
            s["status"] = desc
            s["status_changes"] += 1
            nodes = "; ".join(f"{p.name}: {p.node_assignment.split('; registered')[0] or 'not loaded'}"
                              for p in m.policies)
            print(f"status  {desc}\n        {nodes}", flush=True)

    node.create_subscription(Twist, f"{ns}/cmd_vel", on_cmd, 10)
    node.create_subscription(InferenceStats, f"{ns}/mobile_vla/inference_stats", on_stats, 100)
    node.create_subscription(Status, f"{ns}/mobile_vla/status", on_status, latched)

    def publish_frame():
        if not s["instructed"]:
            return
        index = s["sent"] % len(frames)
        s["sent"] += 1
        now = node.get_clock().now()
        msg = to_image_msg(frames[index], now.to_msg())
        cam.publish(msg)
        if recorder:
            recorder.frame(index, msg, now.nanoseconds)

    def send_instruction_once_matched():
        # The node subscribes volatile (so any ordinary publisher matches): send once it is there.
        if not s["instructed"] and task.get_subscription_count() > 0 and cam.get_subscription_count() > 0:
            task.publish(String(data=a.instruction))
            if recorder:
                recorder.write(recorder.instruction, String(data=a.instruction), node.get_clock().now().nanoseconds)
            s["instructed"] = True
            s["started"] = time.monotonic()
            print(f"demo: instruction {a.instruction!r}; camera {frames[0].shape[1]}x{frames[0].shape[0]} rgb8 "
                  f"at {a.rate:g} Hz", flush=True)

    def live():
        if not s["instructed"]:
            return
        rate, s["second_sent"] = s["sent"] - s["second_sent"], s["sent"]
        cmd = s["last_cmd"] or (0.0, 0.0, 0.0)
        elapsed = time.monotonic() - s["started"]
        # A frame is lost when the node never ran on it: frame_seq counts what it received.
        received = max(s["frame_seqs"], default=0)
        print(f"t={elapsed:4.0f} s  camera {rate:4.1f} Hz  sent {s['sent']:4d}  answered {s['answered']:4d}  "
              f"lost {max(s['sent'] - received - 1, 0):3d}  latency p50 {p50(s['latency'])}  "
              f"{s['policy']} on {s['provider']}  source {s['source']}  "
              f"cmd x={cmd[0]:+.2f} y={cmd[1]:+.2f} wz={cmd[2]:+.2f}", flush=True)
        s["latency"] = []

    node.create_timer(0.1, send_instruction_once_matched)
    node.create_timer(1.0 / a.rate, publish_frame)
    node.create_timer(1.0, live)
    end = time.monotonic() + a.duration if a.duration > 0 else float("inf")
    try:
        while rclpy.ok() and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.01)
        # The last frames' answers are still on their way.
        settle = time.monotonic() + 0.5
        while rclpy.ok() and time.monotonic() < settle:
            rclpy.spin_once(node, timeout_sec=0.01)
    except KeyboardInterrupt:
        pass
    lat = s["all_latency"]
    received = max(s["frame_seqs"], default=0)
    print(f"demo: {s['sent']} frames sent, {received} reached the node, {s['answered']} answered, "
          f"{s['drove']} drove; frame-to-command latency "
          + (f"p50 {np.percentile(lat, 50):.1f} ms, p90 {np.percentile(lat, 90):.1f} ms, max {max(lat):.1f} ms"
             if lat else "-")
          + f"; {s['cmds']} commands on cmd_vel ({s['zeros']} zero); {s['status_changes']} status changes",
          flush=True)
    if recorder:
        recorder.close()
        share = os.path.dirname(os.path.dirname(os.path.abspath(a.samples)))
        print(f"demo: recorded {recorder.frames} frames, the instruction and cmd_vel to {a.record}; score the "
              f"policy on it: ros2 run mobile_vla mobile_vla_eval --policy {share}/models/hybrid.json {a.record} "
              f"--params {share}/config/mobile_vla.yaml", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
