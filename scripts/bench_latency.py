#!/usr/bin/env python3
"""End-to-end frame-to-command latency of the running node (a benchmark, not a test).

Starts the colcon-installed node on the stand-in hybrid model, publishes
frames from an rclpy peer at a fixed rate, and prints percentiles of:
  peer frame->cmd   frame stamp to the command's arrival at the peer (both clocks are this machine's)
  node frame->cmd   the node's own stamp_to_publish_ms from ~/inference_stats
  preprocess, inference   the node's per-stage times
plus frames dropped by newest-frame-only.

    source env.sh && python3 scripts/bench_latency.py [--frames 300] [--rate 30]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats
from PIL import Image as PILImage
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String


def find_exe() -> str:
    for prefix in os.environ["AMENT_PREFIX_PATH"].split(":"):
        exe = os.path.join(prefix, "lib/mobile_vla/mobile_vla_node")
        if os.access(exe, os.X_OK):
            return exe
    sys.exit("mobile_vla_node not installed: run scripts/build.sh and source env.sh")


def scene(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 200 // w + 30, y * 150 // h + 40, np.where(y > h * 2 // 3, 60, 150)], -1).astype(np.uint8)
    img[h * 3 // 5 - h // 12: h * 3 // 5 + h // 12, w // 3 - w // 20: w // 3 + w // 20] = (200, 30, 30)
    return img


def pct(v, p):
    return float(np.percentile(np.asarray(v), p)) if len(v) else float("nan")


def run_case(node, w, h, kind, frames, rate, domain) -> dict:
    cam = node.create_publisher(CompressedImage if kind == "jpeg" else Image,
                                "/camera/image_raw/compressed" if kind == "jpeg" else "/camera/image_raw",
                                qos_profile_sensor_data)
    task = node.create_publisher(String, "/instruction", 10)
    stats, arrivals = [], {}
    lock = threading.Lock()

    def on_stats(m):
        with lock:
            stats.append(m)

    def on_cmd(t):
        now = time.time()
        with lock:
            arrivals.setdefault((round(t.linear.x, 6), round(t.angular.z, 6)), []).append(now)

    subs = [node.create_subscription(InferenceStats, "/mobile_vla/inference_stats", on_stats, 1000),
            node.create_subscription(Twist, "/cmd_vel", on_cmd, 1000)]
    rgb = scene(w, h)
    if kind == "jpeg":
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format="JPEG", quality=85)
        msg = CompressedImage(format="jpeg", data=buf.getvalue())
    else:
        msg = Image(height=h, width=w, encoding="rgb8", step=w * 3, data=rgb.tobytes())
    deadline = time.time() + 15
    while (task.get_subscription_count() == 0 or cam.get_subscription_count() == 0) and time.time() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    task.publish(String(data="navigate around the obstacles to the cup"))
    end_warm = time.time() + 1.0
    while time.time() < end_warm:
        rclpy.spin_once(node, timeout_sec=0.05)
    with lock:
        stats.clear()
    sent = {}
    period = 1.0 / rate
    t_next = time.time()
    for i in range(frames):
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        msg.header.frame_id = f"f{i}"
        sent[f"f{i}"] = now
        cam.publish(msg)
        t_next += period
        while time.time() < t_next:
            rclpy.spin_once(node, timeout_sec=max(0.0, t_next - time.time()))
    end = time.time() + 1.0
    while time.time() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    for s in subs:
        node.destroy_subscription(s)
    node.destroy_publisher(cam)
    node.destroy_publisher(task)
    ok = [s for s in stats if s.outcome == InferenceStats.OUTCOME_OK]
    peer = []
    for s in ok:
        key = (round(s.action.linear.x, 6), round(s.action.angular.z, 6))
        t_stamp = s.header.stamp.sec + s.header.stamp.nanosec * 1e-9
        after = [t for t in arrivals.get(key, []) if t >= t_stamp]
        if after:
            peer.append((min(after) - t_stamp) * 1e3)
    return {
        "case": f"{w}x{h} {kind}", "sent": frames, "ran": len(ok), "dropped": sum(s.frames_dropped for s in stats),
        "peer": peer, "node": [s.stamp_to_publish_ms for s in ok],
        "pre": [s.preprocess_ms for s in ok], "inf": [s.inference_ms for s in ok],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rate", type=float, default=30.0)
    a = ap.parse_args()
    domain = 150 + os.getpid() % 50
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    results = []
    for transport, cases in (("raw", [(640, 480), (1920, 1080)]), ("compressed", [(640, 480), (1920, 1080)])):
        proc = subprocess.Popen([find_exe(), "--ros-args", "-p", f"camera.transport:={transport}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rclpy.init()
            node = rclpy.create_node("bench_latency")
            for w, h in cases:
                results.append(run_case(node, w, h, "rgb8" if transport == "raw" else "jpeg", a.frames, a.rate, domain))
            node.destroy_node()
            rclpy.shutdown()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
    print(f"\nframe-to-command latency, stand-in hybrid model, {a.rate:.0f} Hz camera, {a.frames} frames per case")
    print(f"{'case':<16}{'ran':>6}{'drop':>6}  {'peer frame->cmd p50/p99/max (ms)':>34}  {'node frame->cmd p50/p99':>24}"
          f"  {'preprocess p50':>15}  {'inference p50':>14}")
    for r in results:
        print(f"{r['case']:<16}{r['ran']:>6}{r['dropped']:>6}  "
              f"{pct(r['peer'], 50):>10.2f} {pct(r['peer'], 99):>10.2f} {max(r['peer'] or [float('nan')]):>10.2f}  "
              f"{pct(r['node'], 50):>11.2f} {pct(r['node'], 99):>11.2f}  {pct(r['pre'], 50):>15.2f}  {pct(r['inf'], 50):>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
