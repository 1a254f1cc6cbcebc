"""The latency report against a bag recorded from the live node.

rosbag2 is not installable here, so an independent rosbag2 implementation
(the `rosbags` package, MCAP storage) records what a live rclpy subscription to
`~/inference_stats` receives, exactly as `ros2 bag record` would store it.
The report's numbers must equal the ones computed (numpy) from those same
received messages.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
from conftest import NODE_EXE, ROOT, wait_for
from mobile_vla_msgs.msg import InferenceStats
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from test_watchdog import Rig, params

REPORT = NODE_EXE.parent / "mobile_vla_report"
TOPIC = "/mobile_vla/inference_stats"
TYPE = "mobile_vla_msgs/msg/InferenceStats"
MSG_FILE = ROOT / "msg" / "msg" / "InferenceStats.msg"


def typestore(msg_text: str):
    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg(msg_text, TYPE))
    return ts


def write_bag(path: Path, messages: list, msg_text: str | None = None, storage=StoragePlugin.MCAP) -> Path:
    ts = typestore(msg_text or MSG_FILE.read_text())
    with Writer(path, version=9, storage_plugin=storage) as w:
        conn = w.add_connection(TOPIC, TYPE, typestore=ts)
        for i, m in enumerate(messages):
            stamp = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
            w.write(conn, stamp or i, serialize_message(m))
    return path


def report(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPORT), *map(str, args)], capture_output=True, text=True, check=check)


def test_report_matches_what_the_subscriber_received(peer, run_node, tmp_path):
    node = run_node(params("models/faulty_dark.json", cooldown_s=0.3, recovery_successes=3))
    rig = Rig(peer, node, hz=20)
    try:
        assert wait_for(lambda: len([s for s in rig.stats.msgs if s.policy == "hybrid" and s.outcome == 0]) >= 20, 20)
        rig.frame = rig.dark
        assert wait_for(lambda: len([s for s in rig.stats.msgs if s.fallback_active]) >= 15, 10)
        rig.frame = rig.bright
        assert wait_for(lambda: rig.stats.msgs and not rig.stats.msgs[-1].fallback_active
                        and rig.stats.msgs[-1].policy == "hybrid", 10)
        time.sleep(0.5)
    finally:
        rig.close()
    received = list(rig.stats.msgs)
    bag = write_bag(tmp_path / "run", received)
    plot = tmp_path / "latency.svg"
    out = report(bag, "--json", "--plot", plot)
    got = json.loads(out.stdout)

    assert got["messages"] == len(received)
    assert got["frames_dropped"] == sum(m.frames_dropped for m in received)
    groups = {(g["policy"], g["execution_provider"]): g for g in got["groups"]}
    expect_keys = {(m.policy, m.execution_provider) for m in received}
    assert set(groups) == expect_keys and ("pure", "CPUExecutionProvider") in groups
    for (policy, ep), g in groups.items():
        mine = [m for m in received if m.policy == policy and m.execution_provider == ep]
        ok = [m for m in mine if m.outcome == InferenceStats.OUTCOME_OK]
        assert g["count"] == len(mine) and g["ok"] == len(ok)
        for field in ("total_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "frame_age_ms", "stamp_to_publish_ms"):
            v = np.array([getattr(m, field) for m in ok])
            d = g["timings"][field]
            for p in (50, 90, 99):
                assert abs(d[f"p{p}"] - np.percentile(v, p)) < 1e-9, (policy, field, p)
            assert d["max"] == v.max()
    # The fallback period: messages with fallback_active, in one stretch.
    flags = [m.fallback_active for m in received]
    runs = sum(1 for a, b in zip([False] + flags, flags) if b and not a)
    assert len(got["fallback_periods"]) == runs >= 1
    assert sum(p["messages"] for p in got["fallback_periods"]) == sum(flags)

    # The human-readable form and the plot.
    text = report(bag, "--plot", plot).stdout
    assert "policy pure on CPUExecutionProvider" in text and "fallback active in" in text
    svg = plot.read_text()
    # One point per completed run in the latency-over-time panel.
    assert svg.startswith("<svg") and svg.count("<circle") == len([m for m in received if m.outcome == 0])


def test_a_single_mcap_file_works_too(tmp_path):
    m = InferenceStats(policy="hybrid", execution_provider="CPUExecutionProvider", total_ms=2.0, inference_ms=1.0)
    m.header.stamp.sec = 100
    bag = write_bag(tmp_path / "one", [m])
    mcap = next(bag.glob("*.mcap"))
    got = json.loads(report(mcap, "--json", "--plot", tmp_path / "p.svg").stdout)
    assert got["messages"] == 1 and got["groups"][0]["timings"]["total_ms"]["p50"] == 2.0


def test_bag_without_the_topic_is_a_clear_error(tmp_path):
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(tmp_path / "other", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        w.write(conn, 1, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    r = report(tmp_path / "other", check=False)
    assert r.returncode == 1 and "no messages on /mobile_vla/inference_stats" in r.stderr and "/chatter" in r.stderr


def test_truncated_bag_is_a_clear_error(tmp_path):
    msgs = []
    for i in range(200):
        m = InferenceStats(policy="hybrid", total_ms=float(i))
        m.header.stamp.sec = 100 + i
        msgs.append(m)
    bag = write_bag(tmp_path / "t", msgs)
    f = next(bag.glob("*.mcap"))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    r = report(bag, check=False)
    assert r.returncode == 1 and "mobile_vla_report:" in r.stderr, r.stderr
    assert "panicked" not in r.stderr
    assert "truncated" in r.stderr or "not an MCAP" in r.stderr, r.stderr


def old_bag(path: Path, drop: list[str]) -> Path:
    """A bag of what an earlier mobile_vla_msgs recorded: InferenceStats without the fields `drop`."""
    old = "\n".join(line for line in MSG_FILE.read_text().splitlines() if not any(d in line for d in drop))
    ts = typestore(old)
    Time, Header = ts.types["builtin_interfaces/msg/Time"], ts.types["std_msgs/msg/Header"]
    fields = dict(
        header=Header(stamp=Time(sec=1, nanosec=0), frame_id=""), frame_seq=1, command_seq=0, policy="hybrid",
        execution_provider="CPUExecutionProvider", fallback_active=False, outcome=0, frame_age_ms=0.0,
        preprocess_ms=0.0, inference_ms=0.0, postprocess_ms=0.0, total_ms=3.0, stamp_to_publish_ms=0.0,
        frames_dropped=0, action=ts.types["geometry_msgs/msg/Twist"](
            linear=ts.types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
            angular=ts.types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
        shadow=False, shadow_samples=0, shadow_mae=np.zeros(3), shadow_sign_agreement=np.zeros(3))
    msg = ts.types[TYPE](**{k: v for k, v in fields.items() if not any(d.endswith(" " + k) for d in drop)})
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection(TOPIC, TYPE, typestore=ts)
        w.write(conn, 1, ts.serialize_cdr(msg, TYPE))
    return path


def test_an_older_message_definition_is_refused(tmp_path):
    # No frames_dropped, no action: the fields this reader decodes are not there.
    bag = old_bag(tmp_path / "old", ["uint32 frames_dropped", "geometry_msgs/Twist action"])
    r = report(bag, check=False)
    assert r.returncode == 1 and "definition differs" in r.stderr, r.stderr


def test_a_bag_from_before_the_shadow_fields_still_reads(tmp_path):
    bag = old_bag(tmp_path / "before_shadow", ["bool shadow", "uint32 shadow_samples", "float64[3] shadow_mae",
                                               "float64[3] shadow_sign_agreement"])
    got = json.loads(report(bag, "--json", "--plot", tmp_path / "p.svg").stdout)
    assert got["messages"] == 1 and got["groups"][0]["timings"]["total_ms"]["p50"] == 3.0


def test_sqlite3_bags_report_as_mcap_ones_do(tmp_path):
    msgs = []
    for i in range(50):
        m = InferenceStats(policy="hybrid", execution_provider="CPUExecutionProvider", total_ms=float(i % 7),
                           fallback_active=10 <= i < 20)
        m.header.stamp.sec = 100 + i
        msgs.append(m)
    # The MCAP report's numbers are checked against numpy above; here the sqlite3 storage must give the same.
    mcap = json.loads(report(write_bag(tmp_path / "m", msgs), "--json", "--plot", tmp_path / "m.svg").stdout)
    sqlite = json.loads(report(write_bag(tmp_path / "s", msgs, storage=StoragePlugin.SQLITE3), "--json",
                               "--plot", tmp_path / "s.svg").stdout)
    assert sqlite == mcap and sqlite["messages"] == 50
    assert sqlite["groups"][0]["timings"]["total_ms"]["p50"] == float(np.percentile([i % 7 for i in range(50)], 50))
    # Not an sqlite3 database: one line, exit 1.
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "db_0.db3").write_bytes(b"SQLite format 3\0")
    r = report(tmp_path / "db", check=False)
    assert r.returncode == 1 and "db_0.db3" in r.stderr and "panicked" not in r.stderr, r.stderr
