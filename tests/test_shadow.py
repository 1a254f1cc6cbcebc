"""Shadow mode over ROS: the policies run, their commands go to
~/proposed_cmd_vel, and only teleop (or zero) reaches cmd_vel.

The agreement the node reports (~/inference_stats, /diagnostics) is checked
against numpy's, computed here from the proposals received and the joystick
command that drove meanwhile. Leaving shadow mode with a slow model (0.3-1 s
a run) in flight: the first command that drives comes from a run that
started after the switch (its frame stamp plus its frame age, both in the
stats message, is after the moment the parameter was set).
"""

from __future__ import annotations

import time

import numpy as np
from conftest import wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from test_params import call
from test_watchdog import HYBRID_Y, Rig, params

JOY = (0.2, 0.0, 0.0)


def shadow_params(primary: str, **watchdog) -> dict:
    p = params(primary, **watchdog)
    p["policy"]["shadow"] = True
    p["mux"] = {"sources": {"joystick": {"topic": "joy_vel", "priority": 100, "timeout_s": 0.5}}}
    return p


def xyz(t) -> tuple:
    return (t.linear.x, t.linear.y, t.angular.z)


def set_shadow(peer, on: bool):
    value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=on)
    res = call(peer, SetParameters, "set_parameters",
               SetParameters.Request(parameters=[Parameter(name="policy.shadow", value=value)]))
    assert res.results[0].successful, res.results[0].reason


def test_in_shadow_mode_the_policy_proposes_and_only_teleop_drives(peer, run_node):
    node = run_node(shadow_params("models/hybrid.json"))
    proposals = peer.subscribe(TwistStamped, "/mobile_vla/proposed_cmd_vel")
    joy = peer.publisher(Twist, "/joy_vel")
    assert wait_for(lambda: joy.get_subscription_count() > 0, 15), node.output()
    twist = Twist()
    twist.linear.x = JOY[0]
    # The joystick drives from before the first frame, so every proposal is made while it drives.
    for _ in range(10):
        joy.publish(twist)
        time.sleep(0.02)
    rig = Rig(peer, node, hz=10)
    try:
        end = time.monotonic() + 20
        while len(proposals) < 25 and time.monotonic() < end:
            joy.publish(twist)
            time.sleep(0.05)
        assert len(proposals) >= 25, node.output()
        rig._stop.set()
        for _ in range(10):
            joy.publish(twist)
            time.sleep(0.05)
        # Only the joystick's command (or zero before it arrived) was ever on cmd_vel.
        assert {xyz(c) for c in rig.cmds.msgs} <= {JOY, (0.0, 0.0, 0.0)}, {xyz(c) for c in rig.cmds.msgs}
        assert JOY in {xyz(c) for c in rig.cmds.msgs}
        # Each proposal is the policy's action for its frame ("move left": the hybrid strafes).
        actions = {(s.header.stamp.sec, s.header.stamp.nanosec): xyz(s.action) for s in rig.stats.msgs}
        for p in proposals.msgs:
            assert abs(p.twist.linear.y - HYBRID_Y) < 1e-3, p
            assert actions[(p.header.stamp.sec, p.header.stamp.nanosec)] == xyz(p.twist)
        # The agreement, as numpy computes it from what was received.
        assert wait_for(lambda: rig.stats.msgs and rig.stats.msgs[-1].shadow_samples == len(proposals), 5)
        last = rig.stats.msgs[-1]
        assert last.shadow and all(s.command_seq == 0 for s in rig.stats.msgs)
        proposed = np.array([xyz(p.twist) for p in proposals.msgs])[-100:]
        assert last.shadow_samples == len(proposed)
        np.testing.assert_allclose(last.shadow_mae, np.abs(proposed - np.array(JOY)).mean(axis=0), atol=1e-12)
        sign = lambda v: np.sign(v) * (np.abs(v) > 0.05)  # noqa: E731
        agree = (sign(proposed) == sign(np.array(JOY))).mean(axis=0)
        np.testing.assert_allclose(last.shadow_sign_agreement, agree, atol=1e-12)
        assert list(last.shadow_sign_agreement) == [1.0, 0.0, 1.0], "x both forward, y strafe vs none, wz none"
        # /diagnostics says so too.
        diag = peer.subscribe(DiagnosticArray, "/diagnostics")
        out = wait_for(lambda: [s for d in diag.msgs for s in d.status if s.name == "mobile_vla: command output"], 5)
        values = {kv.key: kv.value for kv in out[-1].values}
        assert values["shadow"] == "true" and "shadow mode" in out[-1].message, values
        assert int(values["shadow.samples"]) == len(proposed)
        assert float(values["shadow.linear.y.mae"]) == round(float(np.abs(proposed[:, 1]).mean()), 4)
    finally:
        rig.close()
    warns = [line for line in node.output().splitlines() if "WARN" in line and "STAND-IN" not in line]
    assert not warns, warns
    assert "shadow mode: the policies run but never drive" in node.output()
    assert node.stop() == 0


def test_leaving_shadow_mode_drives_only_from_a_run_started_afterwards(peer, run_node):
    # Every run takes 0.3-1 s, so one is in flight when the switch comes; the
    # watchdog and the freshness bound are generous enough that it would drive.
    p = shadow_params("models/faulty_slow.json", deadline_s=3.0, hard_timeout_s=5.0)
    p["camera"] = {"max_age_s": 2.5}
    node = run_node(p)
    proposals = peer.subscribe(TwistStamped, "/mobile_vla/proposed_cmd_vel")
    rig = Rig(peer, node, hz=15)
    try:
        assert wait_for(lambda: len(proposals) >= 3, 20), node.output()
        assert all(xyz(c) == (0.0, 0.0, 0.0) for c in rig.cmds.msgs), "nothing drives in shadow mode"
        assert any(xyz(p.twist) != (0.0, 0.0, 0.0) for p in proposals.msgs)
        switched = peer.node.get_clock().now().nanoseconds * 1e-9
        set_shadow(peer, False)
        moved = wait_for(lambda: [c for c in rig.cmds.msgs if xyz(c) != (0.0, 0.0, 0.0)], 10)
        assert moved, node.output()
        # Its run's stats come right after the command.
        drove = wait_for(lambda: [s for s in rig.stats.msgs if s.command_seq > 0], 5)
        assert drove, node.output()
        first = drove[0]
        started = first.header.stamp.sec + first.header.stamp.nanosec * 1e-9 + first.frame_age_ms * 1e-3
        assert started >= switched - 0.005, (started, switched)
        assert not first.shadow
    finally:
        rig.close()
    assert node.stop() == 0
