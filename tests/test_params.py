"""Parameters the ROS way: listed, described, read and set at runtime with rcl_interfaces.

An rclpy peer uses the same services `ros2 param` does. Limits set at runtime
must show on cmd_vel at once; a value start-up would refuse must be refused with
its one-line reason and change nothing; read-only parameters refuse every set;
accepted changes appear on /parameter_events.
"""

from __future__ import annotations

import threading
import time

from conftest import wait_for
from geometry_msgs.msg import Twist
from rcl_interfaces.msg import Parameter, ParameterEvent, ParameterType, ParameterValue
from rcl_interfaces.srv import (DescribeParameters, GetParameters, ListParameters, SetParameters,
                                SetParametersAtomically)
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool

NODE = "/mobile_vla"


def call(peer, srv_type, name: str, request):
    client = peer.node.create_client(srv_type, f"{NODE}/{name}")
    assert client.wait_for_service(timeout_sec=15), name
    future = client.call_async(request)
    assert wait_for(future.done, 10), name
    return future.result()


def doubles(*v) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=list(v))


def double(v) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)


def string(v) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


def get(peer, name: str) -> ParameterValue:
    return call(peer, GetParameters, "get_parameters", GetParameters.Request(names=[name])).values[0]


def test_every_parameter_is_listed_and_described_with_what_may_change(peer, run_node):
    node = run_node()
    listed = call(peer, ListParameters, "list_parameters", ListParameters.Request()).result.names
    for name in ["limits.max_velocity", "mux.sources.joystick.timeout_s", "watchdog.deadline_s",
                 "policy.hybrid.manifest", "camera.topic", "output.rate_hz"]:
        assert name in listed, (name, listed)
    under = call(peer, ListParameters, "list_parameters", ListParameters.Request(prefixes=["limits"], depth=0))
    assert set(under.result.names) == {n for n in listed if n.startswith("limits.")}
    d = {x.name: x for x in call(peer, DescribeParameters, "describe_parameters", DescribeParameters.Request(
        names=["limits.max_velocity", "policy.hybrid.manifest", "watchdog.deadline_s", "mux.autonomy_priority"]
    )).descriptors}
    assert not d["limits.max_velocity"].read_only and "m/s" in d["limits.max_velocity"].description
    assert d["limits.max_velocity"].type == ParameterType.PARAMETER_DOUBLE_ARRAY
    assert d["policy.hybrid.manifest"].read_only and "read-only" in d["policy.hybrid.manifest"].description
    r = d["watchdog.deadline_s"].floating_point_range[0]
    assert (r.from_value, r.to_value) == (0.0, 3600.0)
    assert d["mux.autonomy_priority"].integer_range[0].to_value == 255
    assert get(peer, "mux.sources.joystick.priority").integer_value == 100
    assert node.stop() == 0


def test_limits_set_at_runtime_apply_on_cmd_vel_and_are_announced(peer, run_node):
    node = run_node({"limits": {"max_accel": [0.0, 0.0, 0.0]}})
    events = peer.subscribe(ParameterEvent, "/parameter_events",
                            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    joy = peer.publisher(Twist, "/joy_vel")
    cmds = peer.subscribe(Twist, "/cmd_vel")
    assert wait_for(lambda: joy.get_subscription_count() > 0, 15), node.output()

    def drive(seconds: float) -> list[float]:
        start = len(cmds)
        t = Twist()
        t.linear.x = 1.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            joy.publish(t)
            time.sleep(0.05)
        return [c.linear.x for c in cmds.msgs[start:]]

    assert max(drive(0.6)) == 0.5, "the default limit"
    res = call(peer, SetParameters, "set_parameters", SetParameters.Request(
        parameters=[Parameter(name="limits.max_velocity", value=doubles(0.2, 0.2, 0.4))]))
    assert res.results[0].successful, res.results[0].reason
    after = drive(0.6)
    assert after[-1] == 0.2 and max(after[3:]) == 0.2, after
    assert list(get(peer, "limits.max_velocity").double_array_value) == [0.2, 0.2, 0.4]
    changed = wait_for(lambda: [p for e in events.msgs for p in e.changed_parameters
                                if p.name == "limits.max_velocity"], 5)
    assert changed and list(changed[0].value.double_array_value) == [0.2, 0.2, 0.4]
    assert node.output().count("parameter changed") == 1, node.output()


def test_a_value_start_up_would_refuse_is_refused_with_its_reason_and_changes_nothing(peer, run_node):
    node = run_node()
    cases = [
        ("limits.max_velocity", doubles(0.2, -1.0, 0.4), "'limits.max_velocity'"),
        ("watchdog.hard_timeout_s", double(0.01), "'watchdog.hard_timeout_s'"),
        ("watchdog.max_abs_action", double(1.0), "action.clip"),
        ("policy.hybrid.manifest", string("models/pure.json"), "read-only"),
        ("limits.no_such_thing", double(1.0), "does not exist"),
    ]
    for name, value, why in cases:
        before = get(peer, name)
        res = call(peer, SetParameters, "set_parameters",
                   SetParameters.Request(parameters=[Parameter(name=name, value=value)]))
        assert not res.results[0].successful and why in res.results[0].reason, (name, res.results[0].reason)
        assert get(peer, name) == before, name
    # Atomically: a good value beside a bad one applies neither.
    res = call(peer, SetParametersAtomically, "set_parameters_atomically", SetParametersAtomically.Request(
        parameters=[Parameter(name="limits.deadband", value=doubles(0.01, 0.01, 0.01)),
                    Parameter(name="camera.max_age_s", value=double(-1.0))]))
    assert not res.result.successful and "'camera.max_age_s'" in res.result.reason, res.result.reason
    assert list(get(peer, "limits.deadband").double_array_value) == [0.0, 0.0, 0.0]
    assert "parameter changed" not in node.output()
    assert node.stop() == 0


def test_no_live_change_weakens_an_engaged_e_stop(peer, run_node):
    # Found from outside: with the e-stop held and a joystick streaming,
    # lowering the e-stop's priority below the joystick's let it drive.
    node = run_node({"limits": {"max_accel": [0.0, 0.0, 0.0]}})
    joy = peer.publisher(Twist, "/joy_vel")
    e_stop = peer.publisher(Bool, "/e_stop")
    cmds = peer.subscribe(Twist, "/cmd_vel")
    assert wait_for(lambda: joy.get_subscription_count() > 0 and e_stop.get_subscription_count() > 0, 15)
    stop = threading.Event()

    def stream():
        t = Twist()
        t.linear.x = 0.3
        while not stop.is_set():
            joy.publish(t)
            time.sleep(0.05)
    threading.Thread(target=stream, daemon=True).start()
    try:
        assert wait_for(lambda: cmds.msgs and cmds.msgs[-1].linear.x == 0.3, 5), node.output()
        e_stop.publish(Bool(data=True))
        assert wait_for(lambda: cmds.msgs[-1].linear.x == 0.0, 2)
        def set_e_stop_priority(value: int):
            return call(peer, SetParameters, "set_parameters", SetParameters.Request(parameters=[Parameter(
                name="mux.locks.e_stop.priority",
                value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value))])).results[0]
        for value in (50, 99):
            res = set_e_stop_priority(value)
            assert not res.successful, value
            assert "'e_stop' is engaged" in res.reason and "'joystick'" in res.reason, res.reason
        # A change that still silences every source is no weakening: it applies.
        res = set_e_stop_priority(100)
        assert res.successful, res.reason
        engaged_at = time.monotonic()
        time.sleep(0.5)
        assert all(c.linear.x == 0.0 for c in cmds.after(engaged_at)), "the joystick drove through the e-stop"
        assert get(peer, "mux.locks.e_stop.priority").integer_value == 100
        # Released: the same change applies.
        e_stop.publish(Bool(data=False))
        assert wait_for(lambda: cmds.msgs[-1].linear.x == 0.3, 3)
        res = set_e_stop_priority(50)
        assert res.successful, res.reason
        assert get(peer, "mux.locks.e_stop.priority").integer_value == 50
    finally:
        stop.set()
    assert node.stop() == 0


def test_an_integer_set_on_a_double_parameter_keeps_its_type(peer, run_node):
    node = run_node()
    res = call(peer, SetParameters, "set_parameters", SetParameters.Request(parameters=[Parameter(
        name="output.rate_hz", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=10))]))
    assert res.results[0].successful, res.results[0].reason
    got = get(peer, "output.rate_hz")
    assert got.type == ParameterType.PARAMETER_DOUBLE and got.double_value == 10.0, got
    assert node.stop() == 0
