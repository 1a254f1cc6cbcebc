"""The seams between the cores, replayed over ROS 2 with a slow model.

Real models take 50-150 ms (here: the faulty_slow stand-in, 0.3-1.2 s a run),
so an instruction change, a stop, a pause or an e-stop usually lands while a
run is in flight. None of those results may reach cmd_vel. An rclpy peer
publishes frames, instructions and teleop, and checks what the node publishes
against when each run started (its arrival minus its own duration, from
~/inference_stats). Also here: reversal through zero under the acceleration
limit, complete frames only, decoder limits, future stamps, simulated time,
and the invalid-output trigger on the raw action.
"""

from __future__ import annotations

import io
import json
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import LATCHED, SHARE, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from mobile_vla_msgs.msg import InferenceStats, Status
from PIL import Image as PILImage
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, String

from test_policy import OPEN_LIMITS, raw_msg, scene_frame

MODELS = SHARE / "models"
LEFT_Y = 0.25  # "move left" strafes the hybrid stand-in (and faulty_slow) at +0.25
# Slow runs, generous deadlines: the slow model drives, so a result from a run
# that started before a change would visibly drive if the node let it.
SLOW = {
    **OPEN_LIMITS,
    "policy": {"hybrid": {"manifest": "models/faulty_slow.json"}, "command_timeout_s": 3.0},
    "camera": {"max_age_s": 3.0},
    "watchdog": {"fallback_enabled": False, "deadline_s": 3.0, "hard_timeout_s": 5.0},
}
# Margin for DDS delivery and the node's own processing when lining up
# the peer's clock with the node's actions.
MARGIN = 0.1


def vec(c) -> tuple:
    return (c.linear.x, c.linear.y, c.angular.z)


def is_zero(c) -> bool:
    return vec(c) == (0.0, 0.0, 0.0)


class Rig:
    """Camera at 10 Hz (fresh stamps), instruction, observers; arrival times recorded."""

    def __init__(self, peer, node, instruction="move left", compressed=False, hz=10.0):
        self.peer, self.node = peer, node
        topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
        self.cam = peer.publisher(CompressedImage if compressed else Image, topic, qos_profile_sensor_data)
        self.task = peer.publisher(String, "/instruction")
        self.control = peer.publisher(String, "/mobile_vla/system_control")
        self.estop = peer.publisher(Bool, "/e_stop")
        self.cmds = peer.subscribe(Twist, "/cmd_vel")
        self.stats = peer.subscribe(InferenceStats, "/mobile_vla/inference_stats")
        self.status = peer.subscribe(Status, "/mobile_vla/status", LATCHED)
        self.diag = peer.subscribe(DiagnosticArray, "/diagnostics")
        ok = wait_for(lambda: all(p.get_subscription_count() > 0 for p in (self.cam, self.task, self.estop)), 15)
        assert ok, node.output()
        assert wait_for(lambda: any(s.policies and s.policies[0].loaded for s in self.status.msgs), 30), node.output()
        self.frame = None if compressed else raw_msg("rgb8", scene_frame(1))
        self.hz = hz
        self._stop = threading.Event()
        self._thread = None
        if instruction:
            self.task.publish(String(data=instruction))

    def stamp(self, ahead_s: float = 0.0):
        t = self.peer.node.get_clock().now().to_msg()
        if ahead_s:
            total = t.sec + t.nanosec * 1e-9 + ahead_s
            t.sec, t.nanosec = int(total), int((total % 1) * 1e9)
        return t

    def camera(self, ahead_s: float = 0.0):
        def run():
            while not self._stop.is_set():
                f = self.frame
                f.header.stamp = self.stamp(ahead_s)
                self.cam.publish(f)
                time.sleep(1.0 / self.hz)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)

    def cmds_between(self, t0: float, t1: float = float("inf")) -> list:
        with self.cmds.lock:
            return [m for m, at in zip(self.cmds.msgs, self.cmds.times) if t0 <= at < t1]

    def runs_after(self, t: float) -> list[tuple[float, float, InferenceStats]]:
        """(arrival, start, stats) of runs reported after `t`; start = arrival - the run's own duration."""
        with self.stats.lock:
            return [(at, at - m.total_ms / 1e3, m) for m, at in zip(self.stats.msgs, self.stats.times) if at >= t]

    def mid_run(self, timeout=20.0) -> float:
        """Waits until a run has just started (a run ended 0.1 s ago; frames are always waiting); returns now."""
        n = len(self.stats)
        assert wait_for(lambda: len(self.stats) > n, timeout), self.node.output()
        time.sleep(0.1)
        return time.monotonic()


def driving_left(c) -> bool:
    return abs(c.linear.y - LEFT_Y) < 1e-3


def slow_rig_driving(peer, run_node):
    """The slow model driving left from a 10 Hz camera: the start of every in-flight scenario."""
    node = run_node(SLOW)
    rig = Rig(peer, node)
    rig.camera()
    if not wait_for(lambda: rig.cmds.msgs and driving_left(rig.cmds.msgs[-1]), 25):
        rig.close()
        raise AssertionError(node.output())
    return node, rig


def assert_no_run_from_before_drove(rig: Rig, t_change: float):
    """Every run that started before `t_change` and ended after it reported command_seq 0; at least one did (the scenario happened)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        before = [(at, st, m) for at, st, m in rig.runs_after(t_change) if st < t_change - 0.02]
        if before:
            break
        time.sleep(0.05)
    assert before, "no run was in flight across the change; the scenario did not happen"
    for at, st, m in before:
        assert m.command_seq == 0, f"a run started {t_change - st:.3f} s before the change drove (command_seq {m.command_seq})"


@pytest.mark.parametrize("change", ["", "move right", "stop-command"])
def test_a_run_in_flight_never_drives_after_its_instruction_is_cleared_or_replaced(peer, run_node, change):
    node, rig = slow_rig_driving(peer, run_node)
    try:
        t = rig.mid_run()
        if change == "stop-command":
            rig.control.publish(String(data="stop"))
        else:
            rig.task.publish(String(data=change))
        assert_no_run_from_before_drove(rig, t)
        time.sleep(1.0)
        after = rig.cmds_between(t + MARGIN)
        assert after, node.output()
        assert not [c for c in after if c.linear.y > 0.1], "the old instruction's action drove after the change"
        if change == "move right":
            assert wait_for(lambda: rig.cmds.msgs[-1].linear.y < -0.2, 15), "the new instruction never drove"
        else:
            assert all(is_zero(c) for c in after)
            assert wait_for(lambda: rig.status.msgs[-1].state in (Status.STATE_SAFE_STOP, Status.STATE_PAUSED), 3)
    finally:
        rig.close()


@pytest.mark.parametrize("event", ["pause", "e_stop"])
def test_after_resume_or_unlock_only_a_run_started_after_it_drives(peer, run_node, event):
    node, rig = slow_rig_driving(peer, run_node)
    try:
        t_on = rig.mid_run()
        if event == "pause":
            rig.control.publish(String(data="pause"))
            time.sleep(0.05)
            rig.control.publish(String(data="resume"))
        else:
            rig.estop.publish(Bool(data=True))
            time.sleep(0.05)
            rig.estop.publish(Bool(data=False))
        t_off = time.monotonic()
        assert_no_run_from_before_drove(rig, t_off)
        # Zero from the event until a run that started after it drives.
        assert wait_for(lambda: [r for r in rig.runs_after(t_off) if r[2].command_seq > 0], 15), node.output()
        first_drive = min(at for at, _, m in rig.runs_after(t_off) if m.command_seq > 0)
        start_of_it = [st for at, st, m in rig.runs_after(t_off) if at == first_drive][0]
        assert start_of_it > t_off - 0.02
        held = rig.cmds_between(t_on + MARGIN, first_drive - MARGIN)
        assert held and all(is_zero(c) for c in held), [vec(c) for c in held if not is_zero(c)][:5]
    finally:
        rig.close()


def test_joystick_reversal_decelerates_to_zero_then_accelerates_under_the_limit(peer, run_node):
    accel = [1.0, 1.0, 2.0]
    node = run_node({
        "output": {"stamped": True, "rate_hz": 20.0},
        "mux": {"sources": {"joystick": {"topic": "joy_vel", "priority": 100, "timeout_s": 0.5}}},
        "limits": {"max_velocity": [1.0, 1.0, 1.5], "max_accel": accel, "max_decel": [0.0, 0.0, 0.0]},
    })
    joy = peer.publisher(Twist, "/joy_vel")
    cmds = peer.subscribe(TwistStamped, "/cmd_vel")
    assert wait_for(lambda: joy.get_subscription_count() > 0, 15), node.output()

    def hold(v, seconds):
        t = Twist()
        t.linear.x, t.linear.y, t.angular.z = v
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            joy.publish(t)
            time.sleep(0.05)

    forward, back = (0.5, -0.5, 1.0), (-0.5, 0.5, -1.0)
    hold(forward, 1.5)
    assert vec(cmds.msgs[-1].twist) == forward, vec(cmds.msgs[-1].twist)
    n = len(cmds)
    hold(back, 1.5)
    assert vec(cmds.msgs[-1].twist) == back
    seq = cmds.msgs[n - 1:]
    for prev, cur in zip(seq, seq[1:]):
        dt = (cur.header.stamp.sec - prev.header.stamp.sec) + (cur.header.stamp.nanosec - prev.header.stamp.nanosec) * 1e-9
        for a, p, c in zip(accel, vec(prev.twist), vec(cur.twist)):
            # The part of the change that moves away from zero is acceleration. (The
            # node ramps on its monotonic clock, the stamps are ROS time: 5 % slack.)
            away = abs(c) if p * c < 0 else max(0.0, abs(c) - abs(p))
            assert away <= a * dt * 1.05 + 1e-4, f"{vec(prev.twist)} -> {vec(cur.twist)} in {dt:.3f} s"
    # Unlimited deceleration: the first tick reaches zero and spends the rest of
    # the tick accelerating; reaching -0.5 then takes ~0.5 s of ticks.
    ramping = [c for c in seq if vec(c.twist) not in (forward, back)]
    assert len(ramping) >= 5, [vec(c.twist) for c in seq[:5]]


def test_scale_velocities_keeps_the_direction_while_ramping(peer, run_node):
    node = run_node({
        "output": {"stamped": True},
        "mux": {"sources": {"joystick": {"topic": "joy_vel", "priority": 100, "timeout_s": 0.5}}},
        "limits": {"max_velocity": [1.0, 1.0, 1.5], "max_accel": [1.0, 1.0, 1.0], "scale_velocities": True},
    })
    joy = peer.publisher(Twist, "/joy_vel")
    cmds = peer.subscribe(TwistStamped, "/cmd_vel")
    assert wait_for(lambda: joy.get_subscription_count() > 0, 15), node.output()
    t = Twist()
    t.linear.x, t.linear.y = 0.8, 0.2
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        joy.publish(t)
        time.sleep(0.05)
    moving = [c.twist for c in cmds.msgs if c.twist.linear.x != 0.0]
    assert len(moving) > 5 and abs(moving[-1].linear.x - 0.8) < 1e-9
    ramping = [m for m in moving if m.linear.x < 0.8]
    assert len(ramping) >= 5, "x should ramp over several ticks"
    for m in ramping:
        assert abs(m.linear.y / m.linear.x - 0.25) < 1e-6, (m.linear.x, m.linear.y)


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photo(w=640, h=480) -> np.ndarray:
    """A large scene with sensor-like noise, so the JPEG's scan is most of the file."""
    base = scene_frame(1, w, h).astype(np.int16)
    noise = np.random.default_rng(7).integers(-25, 25, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_a_truncated_jpeg_with_an_end_marker_is_refused(peer, run_node):
    node = run_node({**OPEN_LIMITS, "camera": {"transport": "compressed"}})
    rig = Rig(peer, node, compressed=True)
    try:
        good = jpeg(photo())
        bad = good[: int(len(good) * 0.6)] + b"\xff\xd9"
        rig.frame = CompressedImage(format="jpeg", data=bad)
        rig.camera()
        said = wait_for(lambda: [s for s in rig.status.msgs if "frame rejected" in s.reason], 5)
        assert said, node.output()
        time.sleep(1.0)
        assert rig.cmds.msgs and all(is_zero(c) for c in rig.cmds.msgs), "a truncated JPEG drove"
        assert not rig.stats.msgs, "it must not even reach the model"
        # The same rig moves the robot with the complete frame.
        rig.frame = CompressedImage(format="jpeg", data=good)
        assert wait_for(lambda: rig.cmds.msgs and not is_zero(rig.cmds.msgs[-1]), 5), node.output()
    finally:
        rig.close()


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_16_bit_png_bomb_is_refused_before_it_is_decoded(peer, run_node):
    node = run_node({**OPEN_LIMITS, "camera": {"transport": "compressed"}})
    rig = Rig(peer, node, compressed=True)
    try:
        ok, png = cv2.imencode(".png", np.zeros((4096, 4096, 3), np.uint16))
        assert ok and len(png) < 2_000_000
        assert wait_for(lambda: rig.stats.msgs or len(rig.status) > 0, 5)
        before = peak_rss_mb(node.proc.pid)
        msg = CompressedImage(format="png", data=png.tobytes())
        for _ in range(3):
            msg.header.stamp = rig.stamp()
            rig.cam.publish(msg)
            time.sleep(0.3)
        said = wait_for(lambda: [s for s in rig.status.msgs if "frame rejected" in s.reason], 5)
        assert said, node.output()
        assert "16" in said[-1].reason, said[-1].reason
        grew = peak_rss_mb(node.proc.pid) - before
        # Decoding it would take 4096*4096*6 bytes = 96 MiB.
        assert grew < 40, f"peak RSS grew {grew:.0f} MiB: the bomb was decoded"
        assert all(is_zero(c) for c in rig.cmds.msgs)
    finally:
        rig.close()


def test_frames_stamped_in_the_future_are_refused_and_said_so(peer, run_node):
    node = run_node(OPEN_LIMITS)
    rig = Rig(peer, node)
    try:
        rig.camera(ahead_s=10.0)
        said = wait_for(lambda: [s for s in rig.status.msgs if "stamped in the future" in s.reason], 5)
        assert said, [s.reason for s in rig.status.msgs]
        assert "-" not in said[-1].reason.split("(")[1].split(" s")[0], said[-1].reason
        time.sleep(0.5)
        assert all(is_zero(c) for c in rig.cmds.msgs) and not rig.stats.msgs
    finally:
        rig.close()


def test_simulated_time_drives_on_clock_and_refuses_wall_stamps(peer, run_node):
    node = run_node({**OPEN_LIMITS, "use_sim_time": True})
    clock = peer.publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    sim_start, wall_start = 1000.0, time.monotonic()
    stop = threading.Event()

    def sim_now():
        return sim_start + (time.monotonic() - wall_start)

    def to_msg(t):
        m = Clock()
        m.clock.sec, m.clock.nanosec = int(t), int((t % 1) * 1e9)
        return m.clock

    def tick():
        while not stop.is_set():
            clock.publish(Clock(clock=to_msg(sim_now())))
            time.sleep(0.01)
    threading.Thread(target=tick, daemon=True).start()
    rig = Rig(peer, node)
    try:
        frame = raw_msg("rgb8", scene_frame(1))
        # A frame stamped with the wall clock is ~1.7e9 s ahead of simulated time.
        frame.header.stamp = rig.stamp()
        rig.cam.publish(frame)
        assert wait_for(lambda: [s for s in rig.status.msgs if "stamped in the future" in s.reason], 5), node.output()
        for _ in range(30):
            frame.header.stamp = to_msg(sim_now())
            rig.cam.publish(frame)
            time.sleep(0.1)
            if rig.cmds.msgs and driving_left(rig.cmds.msgs[-1]):
                break
        assert rig.cmds.msgs and driving_left(rig.cmds.msgs[-1]), node.output()
        ok = [m for m in rig.stats.msgs if m.command_seq > 0]
        assert ok and 0.0 <= ok[-1].frame_age_ms < 500.0, [m.frame_age_ms for m in ok]
        assert ok[-1].header.stamp.sec < 2000, "stamps are simulated time"
        assert rig.status.msgs[-1].stamp.sec < 2000, "status is stamped on the node's (simulated) clock"
    finally:
        stop.set()
        rig.close()


def test_the_invalid_output_trigger_judges_the_raw_action_before_the_clip(peer, run_node, tmp_path):
    manifest = json.loads((MODELS / "hybrid.json").read_text())
    manifest["onnx"] = str(MODELS / manifest["onnx"])
    manifest["text"]["tokenizer"] = str(MODELS / manifest["text"]["tokenizer"])
    # x10: "move left" proposes linear.y = 2.5, clipped to 1.15 (the clip drives at 1.15 if unjudged).
    manifest["action"]["scale"] = [10.0, 10.0, 10.0]
    (tmp_path / "diverging.json").write_text(json.dumps(manifest))
    node = run_node({**OPEN_LIMITS, "policy": {"hybrid": {"manifest": str(tmp_path / "diverging.json")}},
                     "watchdog": {"max_abs_action": 2.0, "cooldown_s": 60.0}})
    rig = Rig(peer, node)
    try:
        rig.camera()
        assert wait_for(lambda: rig.cmds.msgs and abs(rig.cmds.msgs[-1].linear.y - 0.20) < 1e-3, 15), node.output()
        assert not [c for c in rig.cmds.msgs if c.linear.y > 1.0], "the clipped, diverging action drove"
        errors = [s.last_error for s in rig.status.msgs[-1].policies if s.name == "hybrid"]
        assert errors and "out of range" in errors[0], errors
    finally:
        rig.close()


def test_an_oversized_instruction_says_why_in_status(peer, run_node):
    node = run_node(OPEN_LIMITS)
    rig = Rig(peer, node, instruction=None)
    try:
        rig.task.publish(String(data="go " * 600))
        said = wait_for(lambda: [s for s in rig.status.msgs if "instruction.max_bytes" in s.reason], 5)
        assert said and "1800 bytes" in said[-1].reason, [s.reason for s in rig.status.msgs]
    finally:
        rig.close()
