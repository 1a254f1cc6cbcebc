"""Teleop override, locks, pause/resume and the output stage, seen from rclpy.

The policy drives through a real model on real frames (the stand-in hybrid,
instruction "move left" strafes it at linear.y = 0.25); a joystick, an e-stop
and an observer are independent rclpy publishers and subscribers.
"""

from __future__ import annotations

import math
import threading
import time

from conftest import LATCHED, wait_for
from geometry_msgs.msg import Twist, TwistStamped
from mobile_vla_msgs.msg import Status
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool

from test_policy import raw_msg, scene_frame

BASE = {
    "policy": {"command_timeout_s": 0.5},
    "output": {"rate_hz": 20.0},
    "mux": {
        "autonomy_priority": 10,
        "sources": {"joystick": {"topic": "joy_vel", "priority": 100, "timeout_s": 0.4}},
        "locks": {"e_stop": {"topic": "e_stop", "priority": 255, "timeout_s": 0.0}},
    },
    "limits": {"max_velocity": [1.0, 1.0, 1.5], "max_accel": [0.0, 0.0, 0.0]},
}


def twist(x=0.0, y=0.0, wz=0.0) -> Twist:
    t = Twist()
    t.linear.x, t.linear.y, t.angular.z = x, y, wz
    return t


def params(**over):
    p = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for k, v in over.items():
        p[k] = {**p.get(k, {}), **v}
    return p


class Rig:
    """Camera + instruction (the policy), joystick, e-stop, observer."""

    def __init__(self, peer, node, instruction="move left", cmd_type=Twist):
        self.peer, self.node = peer, node
        self.cam = peer.publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.task = peer.publisher(String, "/instruction")
        self.joy = peer.publisher(Twist, "/joy_vel")
        self.estop = peer.publisher(Bool, "/e_stop")
        self.control = peer.publisher(String, "/mobile_vla/system_control")
        self.cmds = peer.subscribe(cmd_type, "/cmd_vel")
        self.status = peer.subscribe(Status, "/mobile_vla/status", LATCHED)
        ok = wait_for(lambda: all(p.get_subscription_count() > 0 for p in (self.cam, self.task, self.joy, self.estop)), 15)
        assert ok, node.output()
        assert wait_for(lambda: any(s.policies and s.policies[0].loaded for s in self.status.msgs), 15), node.output()
        self.frame = raw_msg("rgb8", scene_frame(1))  # centred light: angular.z ~ 0
        self._stop = threading.Event()
        self._threads = []
        if instruction:
            self.task.publish(String(data=instruction))

    def loop(self, fn, hz):
        def run():
            while not self._stop.is_set():
                fn()
                time.sleep(1.0 / hz)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._threads.append(t)

    def camera(self, hz=10):
        def pub():
            self.frame.header.stamp = self.peer.node.get_clock().now().to_msg()
            self.cam.publish(self.frame)
        self.loop(pub, hz)

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)

    def last(self, n=1):
        return self.cmds.msgs[-n:]

    def settle(self, pred, timeout=5.0):
        """Waits until the newest command satisfies `pred`."""
        return wait_for(lambda: self.cmds.msgs and pred(self.cmds.msgs[-1]), timeout)

    def status_is(self, pred, timeout=5.0):
        return wait_for(lambda: self.status.msgs and pred(self.status.msgs[-1]), timeout)


def policy_driving(t: Twist) -> bool:
    return abs(t.linear.y - 0.25) < 1e-3 and t.linear.x > 0.1


def test_teleop_preempts_the_policy_and_its_timeout_hands_control_back(peer, run_node):
    node = run_node(params())
    rig = Rig(peer, node)
    try:
        rig.camera()
        assert rig.settle(policy_driving), (rig.last(), node.output())
        assert rig.status_is(lambda s: s.active_source == "policy")
        stop_joy = threading.Event()

        def joystick():
            while not stop_joy.is_set():
                rig.joy.publish(twist(x=-0.2, wz=0.5))
                time.sleep(0.05)
        t = threading.Thread(target=joystick, daemon=True)
        t.start()
        assert rig.settle(lambda c: (c.linear.x, c.linear.y, c.angular.z) == (-0.2, 0.0, 0.5)), rig.last()
        assert rig.status_is(lambda s: s.active_source == "joystick" and s.state == Status.STATE_RUNNING)
        time.sleep(0.5)
        assert all(c.linear.x == -0.2 for c in rig.last(5)), "the policy must not leak through while teleop drives"
        stop_joy.set()
        t.join()
        t_release = time.monotonic()
        assert rig.settle(policy_driving, 3), rig.last()
        # Control returns after the joystick's 0.4 s timeout, not before.
        assert time.monotonic() - t_release > 0.3
        assert rig.status_is(lambda s: s.active_source == "policy")
        assert "command source changed" in node.output()
    finally:
        rig.close()


def test_e_stop_beats_teleop_and_holds_zero_until_released(peer, run_node):
    node = run_node(params())
    rig = Rig(peer, node)
    try:
        rig.camera()
        rig.loop(lambda: rig.joy.publish(twist(x=0.3)), 20)
        assert rig.settle(lambda c: c.linear.x == 0.3), rig.last()
        rig.estop.publish(Bool(data=True))
        assert rig.settle(lambda c: (c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0), 2), rig.last()
        t0 = len(rig.cmds)
        time.sleep(1.0)
        held = rig.cmds.msgs[t0:]
        assert len(held) >= 10 and all((c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0) for c in held)
        assert rig.status_is(lambda s: s.active_lock == "e_stop" and s.state == Status.STATE_SAFE_STOP
                             and "e_stop" in s.reason)
        rig.estop.publish(Bool(data=False))
        assert rig.settle(lambda c: c.linear.x == 0.3), rig.last()
    finally:
        rig.close()


def test_velocity_limits_and_acceleration_are_applied(peer, run_node):
    # Stamped output: the header carries the publish time, so ramps are checked
    # against the node's own timing, not against delivery jitter at the peer.
    node = run_node(params(limits={"max_velocity": [0.5, 0.5, 1.0], "max_accel": [1.0, 1.0, 2.0]},
                           output={"stamped": True, "rate_hz": 20.0}))
    rig = Rig(peer, node, instruction=None, cmd_type=TwistStamped)
    stamped = rig.cmds
    try:
        rig.loop(lambda: rig.joy.publish(twist(x=2.0, y=-2.0, wz=3.0)), 20)
        full = lambda m: (m.twist.linear.x, m.twist.linear.y, m.twist.angular.z) == (0.5, -0.5, 1.0)
        assert wait_for(lambda: stamped.msgs and full(stamped.msgs[-1]), 10), stamped.msgs[-3:]
        msgs = list(stamped.msgs)
        first = next(m for m in msgs if m.twist.linear.x > 0)
        # 1 m/s² at 20 Hz: about 0.05 m/s per command; a ramp, not a jump to the 0.5 limit.
        assert 0 < first.twist.linear.x <= 0.06, first
        t = lambda m: m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        for a, b in zip(msgs, msgs[1:]):
            dt = t(b) - t(a)
            assert b.twist.linear.x - a.twist.linear.x <= 1.0 * dt + 2e-3, (a.twist.linear.x, b.twist.linear.x, dt)
            assert b.twist.angular.z - a.twist.angular.z <= 2.0 * dt + 4e-3
        assert max(abs(m.twist.linear.x) for m in msgs) <= 0.5
        assert max(abs(m.twist.linear.y) for m in msgs) <= 0.5
        assert max(abs(m.twist.angular.z) for m in msgs) <= 1.0
    finally:
        rig.close()


def test_pause_and_resume_through_the_service_and_system_control(peer, run_node):
    node = run_node(params())
    rig = Rig(peer, node)
    client = peer.node.create_client(SetBool, "/mobile_vla/enable_autonomy")
    try:
        rig.camera()
        assert rig.settle(policy_driving), rig.last()
        assert client.wait_for_service(timeout_sec=5)
        resp = client.call_async(SetBool.Request(data=False))
        assert wait_for(resp.done, 5) and resp.result().success
        assert rig.settle(lambda c: (c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0), 2)
        assert rig.status_is(lambda s: s.state == Status.STATE_PAUSED)
        time.sleep(0.5)
        assert all(c.linear.y == 0.0 for c in rig.last(5)), "paused autonomy must not drive"
        resp = client.call_async(SetBool.Request(data=True))
        assert wait_for(resp.done, 5) and resp.result().success
        assert rig.settle(policy_driving, 3)
        # The original team's command topic works too.
        rig.control.publish(String(data="pause"))
        assert rig.status_is(lambda s: s.state == Status.STATE_PAUSED)
        rig.control.publish(String(data="resume"))
        assert rig.settle(policy_driving, 3)
    finally:
        rig.close()


def test_non_finite_teleop_values_are_rejected_with_a_warning(peer, run_node):
    node = run_node(params())
    rig = Rig(peer, node, instruction=None)
    try:
        rig.joy.publish(twist(x=0.2))
        assert rig.settle(lambda c: c.linear.x == 0.2)
        for bad in (twist(x=math.nan), twist(wz=math.inf), twist(y=-math.inf)):
            rig.joy.publish(bad)
        time.sleep(0.3)
        assert all(math.isfinite(v) for c in rig.cmds.msgs for v in (c.linear.x, c.linear.y, c.angular.z))
        assert "non-finite command refused" in node.output()
        # ...and the joystick's last valid command times out as usual.
        assert rig.settle(lambda c: (c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0), 2)
    finally:
        rig.close()


def test_dead_man_no_source_means_zero(peer, run_node):
    node = run_node(params())
    rig = Rig(peer, node)
    try:
        rig.camera(hz=10)
        assert rig.settle(policy_driving), rig.last()
        rig._stop.set()  # camera goes silent
        t0 = time.monotonic()
        assert rig.settle(lambda c: (c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0), 2)
        assert time.monotonic() - t0 < 1.2  # command_timeout_s 0.5 plus a tick or two
        time.sleep(0.5)
        assert all((c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0) for c in rig.last(5))
    finally:
        rig.close()
