"""Which ONNX Runtime the node runs: the configured one, reported honestly.

Two ONNX Runtime versions sit side by side (the onnxruntime wheel's, which
$ORT_DYLIB_PATH names, and an older one unpacked by scripts/setup.sh). Pointed
at the second, the node must load it, not the first one it could find, say so on
~/status and /diagnostics, and drive with it. A wrong path is a policy that did
not load, loudly, with the robot held still: never a crash.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import LATCHED, NODE_EXE, ROOT, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from mobile_vla_msgs.msg import InferenceStats, Status

from test_policy import INSTRUCTION, Driver, raw_msg, scene_frame, start

ALT = Path(os.environ["MOBILE_VLA_ALT_ORT"])
DEFAULT = Path(os.environ["ORT_DYLIB_PATH"])


def loaded(status) -> list:
    return [s for s in status.msgs if s.policies and all(p.loaded for p in s.policies)]


def test_the_configured_onnxruntime_is_loaded_reported_and_runs(peer, run_node):
    assert ALT.is_file() and DEFAULT.is_file() and ALT.resolve() != DEFAULT.resolve()
    node = start(run_node, {"policy": {"onnxruntime_library": str(ALT)}})
    d = Driver(peer)
    diag = peer.subscribe(DiagnosticArray, "/diagnostics")
    assert wait_for(lambda: loaded(d.status), 20), node.output()
    for p in loaded(d.status)[-1].policies:
        assert p.onnxruntime_version == "1.22.1", p
        assert Path(p.onnxruntime_library).resolve() == ALT.resolve(), p
        # 1.22 cannot say which provider runs which node, and the node says so rather than guess.
        assert p.graph_nodes == 0 and not p.assigned_providers, p
        assert "node assignment unknown (ONNX Runtime 1.22.1 cannot report it" in p.node_assignment, p
    d.ready(node)
    d.instruct(INSTRUCTION)
    stats = d.send(raw_msg("rgb8", scene_frame(0)))
    assert stats and stats.outcome == InferenceStats.OUTCOME_OK and stats.command_seq > 0, node.output()
    values = wait_for(lambda: {kv.key: kv.value for a in diag.msgs for s in a.status for kv in s.values}, 5)
    assert "1.22.1" in values.get("hybrid.onnxruntime", ""), values
    assert "onnxruntime=1.22.1" in node.output(), "the start log names the runtime"


def test_without_a_configured_library_the_environment_one_is_reported(peer, run_node):
    node = start(run_node)
    d = Driver(peer)
    assert wait_for(lambda: loaded(d.status), 20), node.output()
    p = loaded(d.status)[-1].policies[0]
    assert Path(p.onnxruntime_library).resolve() == DEFAULT.resolve()
    assert p.graph_nodes > 0 and list(p.assigned_providers) == ["CPUExecutionProvider"], p
    assert DEFAULT.name.endswith(p.onnxruntime_version), (DEFAULT.name, p.onnxruntime_version)


def test_a_missing_onnxruntime_is_policy_not_loaded_never_a_crash(peer, run_node):
    missing = "/nonexistent/libonnxruntime.so.1.99.0"
    node = start(run_node, {"policy": {"onnxruntime_library": missing}})
    d = Driver(peer)
    said = wait_for(lambda: [s for s in d.status.msgs if missing in s.reason], 20)
    assert said, [s.reason for s in d.status.msgs] or node.output()
    assert said[-1].state == Status.STATE_SAFE_STOP and not any(p.loaded for p in said[-1].policies)
    d.instruct(INSTRUCTION)
    msg = raw_msg("rgb8", scene_frame(0))
    for _ in range(5):
        msg.header.stamp = d.stamp()
        d.cam.publish(msg)
        time.sleep(0.1)
    assert d.cmds.msgs and all((c.linear.x, c.linear.y, c.angular.z) == (0.0, 0.0, 0.0) for c in d.cmds.msgs)
    assert "POLICY NOT LOADED" in node.output() and "panic" not in node.output()
    assert node.stop(signal.SIGINT) == 0, node.output()


def test_building_engines_without_tensorrt_says_so_and_fails(run_node):
    # The precompiled-engine command needs TensorRT; the CPU wheel has none.
    node = run_node(cmd=[str(NODE_EXE), "--build-engines"])
    assert node.wait_exit(30) == 1, node.output()
    out = node.output()
    assert "TensorRT is not in this ONNX Runtime build" in out and "no engine can be built" in out, out
    assert "panic" not in out


def test_a_normal_start_warns_of_nothing_but_the_stand_in_models(peer, run_node):
    # The shipped parameters, driving: the only WARN lines are the ones saying
    # the bundled models are stand-ins (a WARN means something is wrong).
    node = run_node(None, ros_args=["--params-file", str(ROOT / "config" / "mobile_vla.yaml")])
    d = Driver(peer)
    assert wait_for(lambda: loaded(d.status), 20), node.output()
    d.ready(node)
    d.instruct(INSTRUCTION)
    stats = d.send(raw_msg("rgb8", scene_frame(0)))
    assert stats and stats.command_seq > 0, node.output()
    assert node.stop() == 0
    lines = node.output().splitlines()
    warns = [line for line in lines if " WARN " in line]
    assert warns and all("STAND-IN" in line for line in warns), warns
    # The fallback loading first is not a switch to it: the primary's load attempt comes first.
    assert not any("policy switch: none -> pure" in line for line in lines), lines
