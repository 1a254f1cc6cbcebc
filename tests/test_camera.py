"""The camera link: every raw frame through shared memory, and the node's view of what it misses.

The launched node runs with the shipped Fast DDS profile (config/fastdds_shm.xml,
the launch file's default); an independent rclpy camera, with the same profile,
publishes 1080p rgb8 frames at 30 Hz: every one must reach the node. Frames
that never arrive (gaps in the stamps) must show on /diagnostics and in one
warning, not one a second.
"""

from __future__ import annotations

import time

import numpy as np
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from mobile_vla_msgs.msg import InferenceStats
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from test_node_basics import launch_command


def camera_status(diag) -> dict | None:
    for array in reversed(diag.msgs):
        for s in array.status:
            if s.name == "mobile_vla: camera":
                return {"level": s.level, "message": s.message, **{kv.key: kv.value for kv in s.values}}
    return None


def frame_msg(w: int, h: int) -> Image:
    m = Image(width=w, height=h, encoding="rgb8", step=w * 3)
    rng = np.random.default_rng(0)
    m.data = rng.integers(0, 255, w * h * 3, dtype=np.uint8).tobytes()
    m.header.frame_id = "camera"
    return m


def publish_at(peer, cam, msg, n: int, hz: float, skip=lambda k: False) -> None:
    """`n` frames at `hz`, stamped as a camera stamps them; `skip(k)` frames are never sent."""
    t0 = peer.node.get_clock().now().nanoseconds
    for k in range(n):
        due = time.monotonic()
        if not skip(k):
            ns = t0 + int(k * 1e9 / hz)
            msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 10**9, ns % 10**9
            cam.publish(msg)
        time.sleep(max(0.0, 1.0 / hz - (time.monotonic() - due)))


def test_every_1080p_frame_at_30_hz_reaches_the_launched_node(peer, run_node):
    cmd, env = launch_command()
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_shm.xml")
    node = run_node(cmd=cmd, env=env)
    cam = peer.publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    task = peer.publisher(String, "/instruction")
    stats = peer.subscribe(InferenceStats, "/mobile_vla/inference_stats")
    diag = peer.subscribe(DiagnosticArray, "/diagnostics")
    assert wait_for(lambda: cam.get_subscription_count() > 0 and task.get_subscription_count() > 0, 15), node.output()
    task.publish(String(data="go to the cup"))
    time.sleep(0.5)
    publish_at(peer, cam, frame_msg(1920, 1080), 90, 30.0)
    # Every frame was either run or, newest-frame-only, dropped in favour of a newer one.
    seen = wait_for(lambda: stats.msgs and max(s.frame_seq for s in stats.msgs) >= 90 and stats.msgs, 10)
    assert seen, (len(stats), node.output())
    assert max(s.frame_seq for s in stats.msgs) == 90
    status = wait_for(lambda: (lambda c: c if c and int(c["received"]) > 0 else None)(camera_status(diag)), 5)
    assert status and status["lost_total"] == "0", status
    assert "fastdds_shm.xml" in status["dds_profile"], status


def test_frames_lost_on_the_way_show_on_diagnostics_with_one_warning(peer, run_node):
    node = run_node({"camera": {"max_age_s": 2.0}})
    cam = peer.publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    diag = peer.subscribe(DiagnosticArray, "/diagnostics")
    assert wait_for(lambda: cam.get_subscription_count() > 0, 15), node.output()
    # A 30 Hz camera of which every fourth frame never arrives.
    publish_at(peer, cam, frame_msg(160, 120), 120, 30.0, skip=lambda k: k % 4 == 3)
    status = wait_for(lambda: (lambda c: c if c and int(c.get("lost", 0)) > 0 else None)(camera_status(diag)), 5)
    assert status, camera_status(diag)
    assert status["level"] == DiagnosticStatus.WARN, status
    assert int(status["lost_total"]) >= 20, status
    assert abs(float(status["camera_hz"]) - 30.0) < 3.0, status
    assert "frames lost" in status["message"], status
    warnings = [l for l in node.output().splitlines() if "camera frames are being lost" in l]
    assert len(warnings) == 1, warnings
