"""The watchdog with models that really fail, seen from rclpy.

The primary (hybrid slot) is replaced by a faulty stand-in; the fallback is
the pure stand-in. With the instruction "move left" the hybrid strafes at
linear.y = 0.25 and the pure model at 0.20, so the observer can tell from
cmd_vel alone which policy is driving.
"""

from __future__ import annotations

import math
import threading
import time

import pytest
from conftest import LATCHED, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats, Status
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from test_policy import OPEN_LIMITS, raw_msg, scene_frame

HYBRID_Y, PURE_Y = 0.25, 0.20
FAST_RECOVERY = {"cooldown_s": 0.5, "recovery_successes": 3}


def params(primary: str, fallback: str = "models/pure.json", **watchdog) -> dict:
    p = {**OPEN_LIMITS, "policy": {"hybrid": {"manifest": primary}, "pure": {"manifest": fallback}}}
    if watchdog:
        p["watchdog"] = watchdog
    return p


def is_y(v):
    return lambda c: abs(c.linear.y - v) < 1e-3


def zero(c):
    return (c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0)


class Rig:
    def __init__(self, peer, node, hz=10):
        self.peer, self.node = peer, node
        self.cam = peer.publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.task = peer.publisher(String, "/instruction")
        self.cmds = peer.subscribe(Twist, "/cmd_vel")
        self.stats = peer.subscribe(InferenceStats, "/mobile_vla/inference_stats")
        self.diag = peer.subscribe(DiagnosticArray, "/diagnostics")
        self.status = peer.subscribe(Status, "/mobile_vla/status", LATCHED)
        ok = wait_for(lambda: self.cam.get_subscription_count() > 0 and self.task.get_subscription_count() > 0, 15)
        assert ok, node.output()
        self.bright = raw_msg("rgb8", scene_frame(1))
        self.dark = raw_msg("rgb8", (scene_frame(1) // 40))
        self.frame = self.bright
        self._stop = threading.Event()
        self.task.publish(String(data="move left"))

        def camera():
            while not self._stop.is_set():
                f = self.frame
                f.header.stamp = self.peer.node.get_clock().now().to_msg()
                self.cam.publish(f)
                time.sleep(1.0 / hz)
        self._thread = threading.Thread(target=camera, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)

    def watchdog_diag(self) -> DiagnosticStatus | None:
        for arr in reversed(self.diag.msgs):
            for s in arr.status:
                if s.name == "mobile_vla: policy watchdog":
                    return s
        return None

    def diag_says(self, level, words, timeout=10):
        def ok():
            s = self.watchdog_diag()
            vals = {kv.key: kv.value for kv in s.values} if s else {}
            text = (s.message + " " + vals.get("last_switch_reason", "")) if s else ""
            return s and s.level == level and words in text
        return wait_for(ok, timeout)

    def no_bad_values(self):
        return all(all(math.isfinite(v) for v in (c.linear.x, c.linear.y, c.angular.z)) for c in self.cmds.msgs)


def assert_falls_back(peer, run_node, primary, reason, **watchdog):
    node = run_node(params(primary, **watchdog))
    rig = Rig(peer, node)
    try:
        assert wait_for(lambda: [c for c in rig.cmds.msgs if is_y(PURE_Y)(c)], 20), node.output()
        assert rig.diag_says(DiagnosticStatus.WARN, reason), (rig.watchdog_diag(), node.output())
        # The hybrid's output never reached cmd_vel.
        assert not [c for c in rig.cmds.msgs if is_y(HYBRID_Y)(c)]
        assert rig.no_bad_values()
        vals = {kv.key: kv.value for kv in rig.watchdog_diag().values}
        assert vals["active_policy"] == "pure" and vals["pure.execution_provider"] == "CPUExecutionProvider"
        assert wait_for(lambda: [s for s in rig.stats.msgs if s.policy == "pure" and s.fallback_active and s.command_seq], 5)
        s = rig.status.msgs[-1]
        assert s.active_policy == "pure"
        assert "policy switch" in node.output()
        return node, rig
    except BaseException:
        rig.close()
        raise


def test_nan_primary_falls_back_within_a_frame_and_a_fallback_inference(peer, run_node):
    node, rig = assert_falls_back(peer, run_node, "models/faulty_nan.json", "non-finite")
    try:
        bad = [s for s in rig.stats.msgs if s.policy == "hybrid"]
        assert bad and all(s.outcome == InferenceStats.OUTCOME_INVALID_OUTPUT and s.command_seq == 0 for s in bad)
    finally:
        rig.close()


def test_slow_primary_misses_deadlines_and_falls_back(peer, run_node):
    # A generous hard timeout: on a slow machine a slow run must still count as late, not hung.
    _, rig = assert_falls_back(peer, run_node, "models/faulty_slow.json", "deadline", hard_timeout_s=5.0)
    rig.close()


def test_hanging_primary_is_cancelled_and_falls_back(peer, run_node):
    node, rig = assert_falls_back(peer, run_node, "models/faulty_hang.json", "hang", hard_timeout_s=0.5)
    try:
        assert wait_for(lambda: [s for s in rig.stats.msgs if s.policy == "hybrid" and s.outcome == InferenceStats.OUTCOME_TIMEOUT], 10)
        assert "cancelling" in node.output()
    finally:
        rig.close()


@pytest.mark.parametrize("primary,reason", [("models/faulty_missing.json", "does not exist"),
                                            ("models/faulty_corrupt.json", "failed to load")])
def test_unloadable_primary_means_fallback_from_the_start(peer, run_node, primary, reason):
    node, rig = assert_falls_back(peer, run_node, primary, reason)
    try:
        assert "POLICY NOT LOADED (hybrid)" in node.output()
        assert not [s for s in rig.stats.msgs if s.policy == "hybrid"]
    finally:
        rig.close()


def test_both_faulty_means_only_zero_and_a_reason(peer, run_node):
    node = run_node(params("models/faulty_nan.json", "models/faulty_nan.json"))
    rig = Rig(peer, node)
    try:
        assert rig.diag_says(DiagnosticStatus.ERROR, "no healthy policy"), (rig.watchdog_diag(), node.output())
        time.sleep(1.5)
        assert rig.cmds.msgs and all(zero(c) for c in rig.cmds.msgs)
        s = rig.status.msgs[-1]
        assert s.state == Status.STATE_SAFE_STOP and "no healthy policy" in s.reason
        assert node.proc.poll() is None, "a model fault must never end the node"
    finally:
        rig.close()


def test_control_returns_to_the_primary_once_it_is_healthy_again(peer, run_node):
    # faulty_dark: NaN on dark frames only. Dark frames fail it; bright frames let it recover.
    node = run_node(params("models/faulty_dark.json", **FAST_RECOVERY))
    rig = Rig(peer, node)
    try:
        assert wait_for(lambda: rig.cmds.msgs and is_y(HYBRID_Y)(rig.cmds.msgs[-1]), 15), node.output()
        rig.frame = rig.dark
        assert wait_for(lambda: is_y(PURE_Y)(rig.cmds.msgs[-1]), 5), node.output()
        assert rig.diag_says(DiagnosticStatus.WARN, "non-finite")
        rig.frame = rig.bright
        t0 = time.monotonic()
        assert wait_for(lambda: is_y(HYBRID_Y)(rig.cmds.msgs[-1]), 10), node.output()
        # Not before its cool-down plus three good probes.
        assert time.monotonic() - t0 > 0.5
        assert rig.diag_says(DiagnosticStatus.OK, "hybrid policy active")
        assert "recovered after 3 good runs" in node.output()
        assert rig.no_bad_values()
    finally:
        rig.close()


def test_lazy_fallback_loads_on_first_need(peer, run_node):
    node, rig = assert_falls_back(peer, run_node, "models/faulty_nan.json", "non-finite", lazy_fallback=True)
    try:
        out = node.output()
        # The pure policy was loaded only after the hybrid failed.
        lines = out.splitlines()
        loaded = next(i for i, l in enumerate(lines) if "policy loaded" in l and "policy=pure" in l)
        assert next(i for i, l in enumerate(lines) if "policy switch" in l) < loaded, out
    finally:
        rig.close()
