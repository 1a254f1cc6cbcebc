"""Action chunks played out in time, over ROS, with a slow chunked model.

models/chunked_slow.json takes 0.1-0.3 s a run and returns 8 steps 0.1 s apart
(step k: linear.x = 0.05 * (k + 1)), with `action.step: play`. The node must
command, at each instant T of a stamped cmd_vel, the step for
floor((T - frame stamp) / 0.1): the steps already past when the slow result
arrives are skipped, zero follows the last step, and nothing of a chunk plays
after an instruction change or a lock.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from conftest import ROOT, wait_for
from geometry_msgs.msg import TwistStamped
from mobile_vla_msgs.msg import InferenceStats
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool, String

from test_policy import Driver, raw_msg, scene_frame

MODELS = ROOT / "models"
PERIOD = 0.1
STEPS = [0.05 * (k + 1) for k in range(8)]


def start(run_node):
    return run_node({
        "policy": {"hybrid": {"manifest": "models/chunked_slow.json"}, "command_timeout_s": 2.0},
        "watchdog": {"fallback_enabled": False, "deadline_s": 1.0, "hard_timeout_s": 3.0},
        "output": {"stamped": True, "rate_hz": 50.0},
        "camera": {"max_age_s": 1.0},
        "limits": {"max_velocity": [5.0, 5.0, 5.0], "max_accel": [0.0, 0.0, 0.0]},
    })


def t(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def one_chunk(peer, node, d: Driver, cmds):
    """Publishes one frame; returns its stamp, and the run's stats once it has driven."""
    msg = raw_msg("rgb8", scene_frame(0))
    msg.header.stamp = d.stamp()
    n = len(d.stats)
    d.cam.publish(msg)
    assert wait_for(lambda: len(d.stats) > n, 5), node.output()
    stats = d.stats.msgs[-1]
    assert stats.command_seq > 0, (stats, node.output())
    return t(msg.header.stamp), stats


def near_a_step_boundary(dt: float) -> bool:
    # The command's stamp and the instant the node picked its step are a few
    # hundred microseconds apart: either step may be right there.
    return abs(dt / PERIOD - round(dt / PERIOD)) < 0.02


def test_steps_come_out_at_their_times_from_the_frame_stamp_then_zero(peer, run_node):
    node = start(run_node)
    d = Driver(peer, cmd_type=TwistStamped)
    cmds = d.cmds
    d.ready(node)
    d.instruct("go forward")
    stamp, stats = one_chunk(peer, node, d, cmds)
    time.sleep(8 * PERIOD + 0.3)
    played = [(t(c.header.stamp) - stamp, c.twist.linear.x) for c in cmds.msgs if t(c.header.stamp) >= stamp]
    moving = [(dt, x) for dt, x in played if x != 0.0]
    assert moving, (played, node.output())
    # The run took total_ms: the steps already in the past by then are skipped, not played late.
    first_dt, first_x = moving[0]
    assert first_dt >= stats.total_ms / 1e3 - 0.01, (first_dt, stats.total_ms)
    skipped = int((stats.total_ms / 1e3) // PERIOD)
    assert first_x >= STEPS[min(skipped, 7)] - 1e-6 or near_a_step_boundary(first_dt), (first_dt, first_x, skipped)
    # The result came in between these two (run time, and frame stamp to its first command).
    arrived = sorted([stats.total_ms / 1e3, stats.stamp_to_publish_ms / 1e3])
    for dt, x in played:
        k = int(np.floor(dt / PERIOD + 1e-9))
        want = STEPS[k] if k < len(STEPS) else 0.0
        ok = {want}
        if near_a_step_boundary(dt):
            ok.add(STEPS[k - 1] if 0 < k <= len(STEPS) else 0.0)
        if dt < arrived[0] - 0.01:
            # Until the slow result is in, there is nothing to play: zero.
            ok = {0.0}
        elif dt < arrived[1] + 0.01:
            ok.add(0.0)
        assert any(abs(x - w) < 1e-5 for w in ok), (dt, x, ok, arrived)
    # Past the chunk: zero, never an extrapolation.
    after = [x for dt, x in played if dt > 8 * PERIOD + 0.03]
    assert after and all(x == 0.0 for x in after), after
    assert len({round(x, 6) for _, x in moving}) >= 3, "several steps played, in order"
    xs = [x for _, x in moving]
    assert xs == sorted(xs), "steps come out in order"


def test_nothing_of_a_chunk_plays_after_an_instruction_change(peer, run_node):
    node = start(run_node)
    d = Driver(peer, cmd_type=TwistStamped)
    cmds = d.cmds
    d.ready(node)
    d.instruct("go forward")
    stamp, _ = one_chunk(peer, node, d, cmds)
    # Mid-chunk, a new task: nothing of the old one may drive any more.
    d.task.publish(String(data="turn around"))
    changed = time.time()
    time.sleep(8 * PERIOD + 0.2)
    late = [c.twist.linear.x for c in cmds.msgs if t(c.header.stamp) > changed + 0.05]
    assert late and all(x == 0.0 for x in late), late


def test_nothing_of_a_chunk_plays_after_an_e_stop_even_once_released(peer, run_node):
    node = start(run_node)
    d = Driver(peer, cmd_type=TwistStamped)
    cmds = d.cmds
    e_stop = peer.publisher(Bool, "/e_stop")
    assert wait_for(lambda: e_stop.get_subscription_count() > 0, 10)
    d.ready(node)
    d.instruct("go forward")
    one_chunk(peer, node, d, cmds)
    e_stop.publish(Bool(data=True))
    time.sleep(0.05)
    e_stop.publish(Bool(data=False))
    released = time.time()
    time.sleep(8 * PERIOD)
    late = [c.twist.linear.x for c in cmds.msgs if t(c.header.stamp) > released + 0.05]
    assert late and all(x == 0.0 for x in late), late


class SimClock:
    """/clock from this peer at 100 Hz, running at real rate from `start_s`, and able to jump."""

    def __init__(self, peer, start_s: float):
        self.pub = peer.publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.base, self.wall = start_s, time.monotonic()
        self.stop = threading.Event()
        threading.Thread(target=self._tick, daemon=True).start()

    def now(self) -> float:
        return self.base + (time.monotonic() - self.wall)

    def jump_to(self, t_s: float) -> None:
        self.base, self.wall = t_s, time.monotonic()

    def msg(self, t_s: float | None = None):
        t_s = self.now() if t_s is None else t_s
        m = Clock()
        m.clock.sec, m.clock.nanosec = int(t_s), int((t_s % 1) * 1e9)
        return m.clock

    def _tick(self):
        while not self.stop.is_set():
            self.pub.publish(Clock(clock=self.msg()))
            time.sleep(0.01)


def test_after_a_clock_jump_only_results_computed_afterwards_drive(peer, run_node, tmp_path):
    # Found from outside: with use_sim_time and blending, /clock jumping back
    # from ~1000 s to 10 s (ros2 bag play --loop) left the old chunk driving for
    # seconds while every new run was refused.
    manifest = json.loads((MODELS / "chunked_slow.json").read_text())
    manifest["onnx"] = str(MODELS / manifest["onnx"])
    manifest["text"]["tokenizer"] = str(MODELS / manifest["text"]["tokenizer"])
    manifest["action"]["blend"] = 0.1
    (tmp_path / "blended.json").write_text(json.dumps(manifest))
    for to_s in (10.0, 2000.0):
        clock = SimClock(peer, 1000.0)
        node = run_node({
            "use_sim_time": True,
            "policy": {"hybrid": {"manifest": str(tmp_path / "blended.json")}, "command_timeout_s": 2.0},
            "watchdog": {"fallback_enabled": False, "deadline_s": 1.0, "hard_timeout_s": 3.0},
            "output": {"stamped": True, "rate_hz": 50.0},
            "camera": {"max_age_s": 1.0},
            "limits": {"max_velocity": [5.0, 5.0, 5.0], "max_accel": [0.0, 0.0, 0.0]},
        })
        d = Driver(peer, cmd_type=TwistStamped)
        try:
            d.ready(node)
            d.instruct("go forward")

            def chunk_drives() -> InferenceStats:
                msg = raw_msg("rgb8", scene_frame(0))
                msg.header.stamp = clock.msg()
                n = len(d.stats)
                d.cam.publish(msg)
                assert wait_for(lambda: len(d.stats) > n, 5), node.output()
                assert d.stats.msgs[-1].command_seq > 0, (d.stats.msgs[-1], node.output())
                return d.stats.msgs[-1]

            chunk_drives()
            time.sleep(0.1)
            assert d.cmds.msgs[-1].twist.linear.x > 0.0, "the chunk plays before the jump"
            clock.jump_to(to_s)
            new_timeline = (lambda c: abs(t(c.header.stamp) - to_s) < 100.0)
            time.sleep(0.6)
            after = [c.twist.linear.x for c in d.cmds.msgs if new_timeline(c)]
            assert after and all(x == 0.0 for x in after), (to_s, after, node.output())
            assert wait_for(lambda: any("ROS time jumped" in s.reason for s in d.status.msgs), 2), node.output()
            assert sum("ROS time jumped" in line for line in node.output().splitlines() if "WARN" in line) == 1
            # A frame of the new timeline drives again at once, as on a fresh node.
            stats = chunk_drives()
            assert abs(t(stats.header.stamp) - to_s) < 100.0
            assert wait_for(lambda: d.cmds.msgs[-1].twist.linear.x > 0.0, 1), (to_s, node.output())
        finally:
            clock.stop.set()
            node.stop()
