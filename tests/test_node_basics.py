"""The node as operators meet it: graph, topics, QoS, parameters, shutdown, launch.

Every test starts the colcon-installed binary and observes it with rclpy only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import LATCHED, NODE_EXE, ROOT, SHARE, find_pkg_prefix, wait_for, write_params
from geometry_msgs.msg import Twist, TwistStamped
from mobile_vla_msgs.msg import InferenceStats, Status

LAUNCH = SHARE / "launch" / "mobile_vla.launch.xml"


def is_zero(t: Twist) -> bool:
    return all(v == 0.0 for v in (t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z))


def test_install_layout_matches_a_colcon_workspace():
    prefix = find_pkg_prefix("mobile_vla")
    assert os.access(prefix / "lib/mobile_vla/mobile_vla_node", os.X_OK)
    for d in ("launch/mobile_vla.launch.xml", "config/mobile_vla.yaml", "models", "package.xml"):
        assert (prefix / "share/mobile_vla" / d).exists(), d
    # rclpy imports the generated interfaces; their definitions carry the fields.
    assert "frames_dropped" in InferenceStats.get_fields_and_field_types()
    assert InferenceStats.get_fields_and_field_types()["header"] == "std_msgs/Header"


def test_node_appears_with_expected_topics_and_types(peer, run_node):
    node = run_node()
    assert peer.wait_for_node("mobile_vla"), node.output()
    got = wait_for(lambda: (lambda p, s: (p, s) if "/cmd_vel" in p and "/camera/image_raw" in s else None)(
        *peer.topics_of("mobile_vla")), timeout=10)
    assert got, peer.topics_of("mobile_vla")
    pubs, subs = got
    assert pubs["/cmd_vel"] == ["geometry_msgs/msg/Twist"]
    assert pubs["/mobile_vla/status"] == ["mobile_vla_msgs/msg/Status"]
    assert subs["/camera/image_raw"] == ["sensor_msgs/msg/Image"]
    assert subs["/instruction"] == ["std_msgs/msg/String"]
    # Camera: sensor-data QoS (best effort); commands: reliable.
    cam = peer.node.get_subscriptions_info_by_topic("/camera/image_raw")
    assert cam and cam[0].qos_profile.reliability.name == "BEST_EFFORT"
    cmd = peer.node.get_publishers_info_by_topic("/cmd_vel")
    assert cmd and cmd[0].qos_profile.reliability.name == "RELIABLE"


def test_compressed_transport_subscribes_the_compressed_subtopic(peer, run_node):
    run_node({"camera": {"transport": "compressed", "topic": "front/image"}})
    assert peer.wait_for_node("mobile_vla")
    subs = wait_for(lambda: (lambda s: s if "/front/image/compressed" in s else None)(peer.topics_of("mobile_vla")[1]))
    assert subs and subs["/front/image/compressed"] == ["sensor_msgs/msg/CompressedImage"], peer.topics_of("mobile_vla")


def test_without_an_instruction_it_publishes_only_zero_at_the_configured_rate(peer, run_node):
    cmds = peer.subscribe(Twist, "/cmd_vel")
    node = run_node({"output": {"rate_hz": 10.0}})
    assert wait_for(lambda: len(cmds) >= 1, 15), node.output()
    t0 = time.monotonic()
    time.sleep(2.0)
    window = cmds.after(t0)
    # 10 Hz for 2 s: about 20; a loose band, this is not a timing test.
    assert 8 <= len(window) <= 40, len(window)
    assert all(is_zero(m) for m in cmds.msgs)


def test_status_is_latched_and_says_why_the_robot_is_still(peer, run_node):
    node = run_node()
    assert peer.wait_for_node("mobile_vla"), node.output()
    time.sleep(0.5)  # the status was published before we subscribed: latching must deliver it
    status = peer.subscribe(Status, "/mobile_vla/status", LATCHED)
    assert wait_for(lambda: len(status) >= 1, 10), node.output()
    # Loaded (the stand-in on this machine's CPU provider), but no instruction yet.
    s = wait_for(lambda: next((m for m in status.msgs if m.policies and m.policies[0].loaded), None), 10)
    assert s, status.msgs
    assert s.state == Status.STATE_SAFE_STOP
    assert "no instruction" in s.reason
    assert s.policies[0].execution_provider == "CPUExecutionProvider"
    assert s.policies[0].requested_providers[0] == "TensorrtExecutionProvider"


def test_stamped_output_publishes_twist_stamped_with_frame_id(peer, run_node):
    cmds = peer.subscribe(TwistStamped, "/cmd_vel")
    node = run_node({"output": {"stamped": True, "frame_id": "base_footprint"}})
    assert wait_for(lambda: len(cmds) >= 2, 15), node.output()
    m = cmds.msgs[-1]
    assert m.header.frame_id == "base_footprint"
    assert m.header.stamp.sec > 0
    assert is_zero(m.twist)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shutdown_publishes_a_final_zero_and_exits_0(peer, run_node, sig):
    cmds = peer.subscribe(Twist, "/cmd_vel")
    # One periodic command every 10 s: anything arriving right after the signal is the final zero.
    node = run_node({"output": {"rate_hz": 0.1}})
    assert wait_for(lambda: len(cmds) >= 1, 15), node.output()
    time.sleep(0.3)
    t_sig = time.monotonic()
    rc = node.stop(sig)
    assert rc == 0, node.output()
    final = wait_for(lambda: cmds.after(t_sig), 3)
    assert final, f"no command after {sig!r}:\n{node.output()}"
    assert is_zero(final[-1])
    assert "final zero" in node.output()


def test_missing_manifest_is_a_one_line_parameter_error(run_node):
    node = run_node({"policy": {"pure": {"manifest": "models/nope.json"}}})
    assert node.wait_exit() == 2
    errors = [l for l in node.output().splitlines() if "ERROR" in l]
    assert len(errors) == 1 and "'policy.pure.manifest'" in errors[0] and "nope.json" in errors[0], node.output()


BAD_PARAMS = [
    ({"camera": {"transport": "h264"}}, "camera.transport", '"h264"', "`raw` or `compressed`"),
    ({"output": {"rate_hz": -5.0}}, "output.rate_hz", "-5", "> 0"),
    ({"camera": {"max_age_s": 0.0}}, "camera.max_age_s", "0", "> 0"),
    ({"output": {"stamped": "yes"}}, "output.stamped", '"yes"', "boolean"),
    ({"camera": {"fps": 30}}, "camera.fps", "30", "expected one of"),
    ({"output": {"topic": "cmd vel"}}, "output.topic", '"cmd vel"', "topic name"),
]


@pytest.mark.parametrize("params,key,value,allowed", BAD_PARAMS, ids=[b[1] for b in BAD_PARAMS])
def test_bad_parameter_stops_startup_with_one_line(run_node, params, key, value, allowed):
    node = run_node(params)
    rc = node.wait_exit()
    assert rc == 2, node.output()
    errors = [l for l in node.output().splitlines() if "ERROR" in l]
    assert len(errors) == 1, node.output()
    line = errors[0]
    assert f"'{key}'" in line and value in line and allowed in line, line


def test_missing_params_file_stops_startup_with_one_line(run_node, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    node = run_node(ros_args=["--params-file", str(missing)])
    assert node.wait_exit() == 2
    errors = [l for l in node.output().splitlines() if "ERROR" in l]
    assert len(errors) == 1 and "--params-file" in errors[0] and str(missing) in errors[0], node.output()


def test_a_malformed_params_file_stops_startup_with_rcls_reason_not_a_panic(run_node, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mobile_vla:\n  limits: 3\n")  # no ros__parameters: rcl refuses it
    node = run_node(ros_args=["--params-file", str(bad)])
    assert node.wait_exit() == 2
    out = node.output()
    errors = [l for l in out.splitlines() if "ERROR" in l and "[rcl]" not in l]
    assert len(errors) == 1 and "ros__parameters" in errors[0] and str(bad) in errors[0], out
    assert "panic" not in out, out


def test_a_list_mixing_integers_and_decimals_is_named_with_its_fix(run_node, tmp_path):
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("mobile_vla:\n  ros__parameters:\n    limits:\n      max_velocity: [0.2, 0.2, 1]\n")
    node = run_node(ros_args=["--params-file", str(mixed)])
    assert node.wait_exit() == 2
    out = node.output()
    errors = [l for l in out.splitlines() if "ERROR" in l]
    assert len(errors) == 1, out
    assert "'limits.max_velocity'" in errors[0] and "[0.2, 0.2, 1.0]" in errors[0] and str(mixed) in errors[0], out


def test_a_params_file_for_another_node_name_is_said_loudly_naming_its_sections(peer, run_node, tmp_path):
    # A section for `mobile_vla_node` (the executable's name), not `mobile_vla`: r2r skips it.
    other = write_params(tmp_path / "other.yaml", {"limits": {"max_velocity": [0.1, 0.1, 0.1]}}, "mobile_vla_node")
    node = run_node(ros_args=["--params-file", str(other)])
    assert peer.wait_for_node("mobile_vla"), node.output()
    warned = wait_for(lambda: [l for l in node.output().splitlines() if "WARN" in l and "no section" in l], 10)
    assert warned and "'mobile_vla_node'" in warned[0] and str(other) in warned[0], node.output()
    assert "'mobile_vla'" in warned[0] and "'/**'" in warned[0], warned[0]
    # The same parameters under the node's own name, or /**, apply and warn of nothing.
    for section in ("mobile_vla", "/**"):
        mine = write_params(tmp_path / "mine.yaml", {"limits": {"max_velocity": [0.1, 0.1, 0.1]}}, section)
        n = run_node(ros_args=["--params-file", str(mine)])
        assert wait_for(lambda: "ready: zero velocity" in n.output(), 10), n.output()
        assert "max_velocity: [0.1, 0.1, 0.1]" in n.output() and "no section" not in n.output()
        assert n.stop() == 0
    assert node.stop() == 0


def launch_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """The node's command line and the environment the launch file sets for it."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/launch_xml.py"), str(LAUNCH), *args, "--print"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    import shlex

    words = shlex.split(out)
    assert words[0] == "env", out
    n = next(i for i, w in enumerate(words[1:], 1) if not re.match(r"[A-Z_][A-Z0-9_]*=", w))
    return words[n:], dict(w.split("=", 1) for w in words[1:n])


def test_launch_file_describes_the_installed_node_and_params_file():
    cmd, env = launch_command()
    # Large raw frames need shared memory: the shipped Fast DDS profile, unless told otherwise.
    assert env == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(SHARE / "config" / "fastdds_shm.xml")}
    assert launch_command("use_dds_profile:=false")[1] == {}
    assert cmd[0] == str(NODE_EXE)
    assert cmd[1] == "--ros-args"
    assert ["-r", "__node:=mobile_vla"] == cmd[2:4]
    i = cmd.index("--params-file")
    assert cmd[i + 1] == str(SHARE / "config" / "mobile_vla.yaml")
    assert "__ns:=" not in " ".join(cmd)  # no namespace by default


def test_launch_prefix_runs_the_node_under_the_given_command(peer, run_node):
    # launch_ros's launch-prefix: the words go before the executable (gdb, valgrind, heaptrack, ...).
    cmd, env = launch_command("launch_prefix:=nice -n 5")
    assert cmd[:4] == ["nice", "-n", "5", str(NODE_EXE)], cmd
    assert launch_command()[0][0] == str(NODE_EXE)
    node = run_node(cmd=cmd, env=env)
    assert peer.wait_for_node("mobile_vla", "/"), node.output()
    assert wait_for(lambda: "ready: zero velocity" in node.output(), 10), node.output()
    assert node.stop() == 0


def test_launch_record_records_the_topics_the_node_really_has(peer, run_node):
    from rclpy.expand_topic_name import expand_topic_name

    args = ("namespace:=robot1", "cmd_vel_topic:=/base/cmd_vel", "managed:=true", "record:=true")
    out = subprocess.run([sys.executable, str(ROOT / "scripts/launch_xml.py"), str(LAUNCH), *args, "--print"],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()
    assert len(out) == 2, out
    import shlex

    rec = shlex.split(out[1])
    rec = rec[next(i for i, w in enumerate(rec) if w == "ros2"):]
    assert rec[:5] == ["ros2", "bag", "record", "-s", "mcap"], rec
    ros_args = rec[rec.index("--ros-args"):]
    assert ros_args[-2:] == ["-r", "__ns:=/robot1"], ros_args
    topics = [expand_topic_name(t, "mobile_vla_recorder", "/robot1") for t in rec[5:rec.index("--ros-args")]]
    cmd, env = launch_command(*args[:3])
    node = run_node(cmd=cmd, env=env)
    assert peer.wait_for_node("mobile_vla", "/robot1"), node.output()

    def all_there():
        pubs, subs = peer.topics_of("mobile_vla", "/robot1")
        return not [t for t in topics if t not in pubs and t not in subs]
    assert wait_for(all_there, 10), (topics, peer.topics_of("mobile_vla", "/robot1"))
    assert "/base/cmd_vel" in topics and "/robot1/mobile_vla/inference_stats" in topics
    assert node.stop() == 0
    # Without rosbag2 the launch says so instead of starting half of it.
    r = subprocess.run([sys.executable, str(ROOT / "scripts/launch_xml.py"), str(LAUNCH), "record:=true"],
                       capture_output=True, text=True, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "'ros2' not found" in r.stderr, r.stderr


def test_launch_rejects_unknown_arguments():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/launch_xml.py"), str(LAUNCH), "nmespace:=x", "--print"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "nmespace" in r.stderr


def test_launched_node_runs_under_namespace_and_remaps(peer, run_node):
    cmd, env = launch_command("namespace:=robot1", "cmd_vel_topic:=/base/cmd_vel", "camera_topic:=front_cam/image")
    cmds = peer.subscribe(Twist, "/base/cmd_vel")
    node = run_node(cmd=cmd, env=env)
    assert peer.wait_for_node("mobile_vla", "/robot1"), node.output()
    got = wait_for(lambda: (lambda p, s: (p, s) if "/base/cmd_vel" in p and "/robot1/front_cam/image" in s else None)(
        *peer.topics_of("mobile_vla", "/robot1")), timeout=10)
    assert got, peer.topics_of("mobile_vla", "/robot1")
    pubs, subs = got
    assert "/robot1/mobile_vla/status" in pubs
    assert "/robot1/instruction" in subs
    assert wait_for(lambda: len(cmds) >= 1, 10), node.output()
    assert node.stop() == 0


def test_an_absurd_duration_is_a_one_line_parameter_error_not_a_panic(run_node):
    # 1e300 s once passed validation and panicked converting it to a Duration (exit 101).
    node = run_node({"watchdog": {"hard_timeout_s": 1e300}})
    assert node.wait_exit() == 2, node.output()
    errors = [l for l in node.output().splitlines() if "ERROR" in l]
    assert len(errors) == 1 and "'watchdog.hard_timeout_s'" in errors[0], node.output()
    assert "panic" not in node.output()


def test_a_max_abs_action_at_or_below_the_clip_is_refused_naming_both(run_node):
    node = run_node({"watchdog": {"max_abs_action": 1.0}})
    assert node.wait_exit() == 2, node.output()
    errors = [l for l in node.output().splitlines() if "ERROR" in l]
    assert len(errors) == 1, node.output()
    assert "'watchdog.max_abs_action'" in errors[0] and "action.clip" in errors[0] and "1.15" in errors[0], errors[0]
