#!/usr/bin/env python3
"""Watchdog switch latency (a benchmark, not a test).

Runs the node with the faulty_dark stand-in as the primary (NaN on dark
frames) and the pure stand-in as the fallback, instruction "move left" (hybrid
strafes at linear.y 0.25, pure at 0.20). Each trial: bright frames until the
hybrid drives, then dark frames; measured at the rclpy peer:
  fault -> fallback   first faulty hybrid InferenceStats to the first pure command on cmd_vel
  frame -> fallback   the first dark frame's publish to that command
then bright frames again until the hybrid has recovered.

    source env.sh && python3 benches/switch.py [--trials 10] [--rate 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import find_node_exe  # noqa: E402

def scene(w: int, h: int) -> np.ndarray:
    """A bright synthetic scene (its darkened copy makes faulty_dark fail)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 200 // w + 30, y * 150 // h + 40, np.where(y > h * 2 // 3, 60, 150)], -1).astype(np.uint8)


PARAMS = """mobile_vla:
  ros__parameters:
    policy:
      hybrid: {manifest: models/faulty_dark.json}
      pure: {manifest: models/pure.json}
    watchdog: {cooldown_s: 0.3, max_cooldown_s: 0.6, recovery_successes: 3}
    limits: {max_velocity: [5.0, 5.0, 5.0], max_accel: [0.0, 0.0, 0.0]}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--rate", type=float, default=30.0)
    a = ap.parse_args()
    os.environ["ROS_DOMAIN_ID"] = str(150 + (os.getpid() + 7) % 50)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    params = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    params.write(PARAMS)
    params.close()
    proc = subprocess.Popen([find_node_exe(), "--ros-args", "--params-file", params.name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("bench_switch")
    cam = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    task = node.create_publisher(String, "/instruction", 10)
    events = []  # (time, kind, value)
    node.create_subscription(Twist, "/cmd_vel", lambda t: events.append((time.time(), "cmd", t.linear.y)), 100)
    node.create_subscription(InferenceStats, "/mobile_vla/inference_stats",
                             lambda s: events.append((time.time(), s.policy, s.outcome)), 100)
    bright = scene(320, 240)
    frames = {"bright": Image(height=240, width=320, encoding="rgb8", step=960, data=bright.tobytes()),
              "dark": Image(height=240, width=320, encoding="rgb8", step=960, data=(bright // 40).tobytes())}

    def spin_for(seconds, frame):
        end = time.time() + seconds
        nxt = time.time()
        while time.time() < end:
            if time.time() >= nxt:
                msg = frames[frame]
                now = time.time()
                msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
                cam.publish(msg)
                nxt += 1.0 / a.rate
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.005, nxt - time.time())))

    def until(pred, frame, timeout):
        end = time.time() + timeout
        while time.time() < end:
            spin_for(0.05, frame)
            if pred():
                return True
        return False

    try:
        while (cam.get_subscription_count() == 0 or task.get_subscription_count() == 0):
            rclpy.spin_once(node, timeout_sec=0.05)
        task.publish(String(data="move left"))
        fault_to_fb, frame_to_fb = [], []
        for _ in range(a.trials):
            hybrid = lambda: any(k == "cmd" and abs(v - 0.25) < 1e-3 for _, k, v in events[-3:])
            if not until(hybrid, "bright", 15):
                sys.exit("the hybrid never drove")
            mark = len(events)
            t_dark = time.time()
            if not until(lambda: any(k == "cmd" and abs(v - 0.20) < 1e-3 for _, k, v in events[mark:]), "dark", 10):
                sys.exit("the fallback never drove")
            t_fault = next(t for t, k, v in events[mark:] if k == "hybrid" and v != InferenceStats.OUTCOME_OK)
            t_fb = next(t for t, k, v in events[mark:] if k == "cmd" and abs(v - 0.20) < 1e-3)
            fault_to_fb.append((t_fb - t_fault) * 1e3)
            frame_to_fb.append((t_fb - t_dark) * 1e3)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        os.unlink(params.name)
    f, g = np.asarray(fault_to_fb), np.asarray(frame_to_fb)
    print(f"\nwatchdog switch latency, {a.trials} trials, camera {a.rate:.0f} Hz (frame period {1e3 / a.rate:.1f} ms)")
    print(f"fault -> fallback command   p50 {np.percentile(f, 50):7.2f} ms   max {f.max():7.2f} ms")
    print(f"first bad frame -> fallback p50 {np.percentile(g, 50):7.2f} ms   max {g.max():7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
