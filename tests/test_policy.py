"""Frames in, commands out: the node's policy against an independent reference.

An rclpy peer publishes frames and instructions; every command the node
publishes for a frame must equal what tests/reference.py (numpy + Python
onnxruntime) computes for the same frame, carrying the same recurrent state.
Bad input must never move the robot.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from conftest import SHARE, wait_for
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats, Status
from PIL import Image as PILImage
from reference import ReferencePolicy, decode_compressed, decode_raw, rgb_to_yuv422
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from conftest import LATCHED

MODELS = SHARE / "models"
# These tests check the policy path: the output stage is opened up so cmd_vel
# carries the action itself (limits and ramps are tested in test_teleop.py).
OPEN_LIMITS = {"limits": {"max_velocity": [5.0, 5.0, 5.0], "max_accel": [0.0, 0.0, 0.0]}}


def start(run_node, params: dict | None = None):
    merged = {**OPEN_LIMITS, **(params or {})}
    return run_node(merged)
INSTRUCTION = "navigate around the obstacles to the cup"


def scene_frame(seed: int, w: int = 160, h: int = 120) -> np.ndarray:
    """A sample scene, downsized, with noise: left/right light differs per seed."""
    names = sorted(p.name for p in (MODELS / "samples").glob("*.png"))
    base = np.asarray(PILImage.open(MODELS / "samples" / names[seed % len(names)]).convert("RGB").resize((w, h)))
    rng = np.random.default_rng(seed)
    return np.clip(base.astype(np.int16) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


class Driver:
    """The peer side of a running node: instruction and frames in, stats and commands out."""

    def __init__(self, peer, compressed: bool = False, cmd_type=Twist):
        self.peer = peer
        topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
        self.cam = peer.publisher(CompressedImage if compressed else Image, topic, qos_profile_sensor_data)
        self.task = peer.publisher(String, "/instruction")
        self.stats = peer.subscribe(InferenceStats, "/mobile_vla/inference_stats")
        self.cmds = peer.subscribe(cmd_type, "/cmd_vel")
        self.status = peer.subscribe(Status, "/mobile_vla/status", LATCHED)

    def ready(self, node) -> None:
        ok = wait_for(lambda: self.task.get_subscription_count() > 0 and self.cam.get_subscription_count() > 0, 15)
        assert ok, node.output()
        assert wait_for(lambda: any(s.policies and s.policies[0].loaded for s in self.status.msgs), 15), node.output()

    def instruct(self, text: str) -> None:
        before = len(self.status)
        self.task.publish(String(data=text))
        wait_for(lambda: len(self.status) > before, 3)

    def stamp(self, age_s: float = 0.0):
        t = self.peer.node.get_clock().now().to_msg()
        if age_s:
            total = t.sec + t.nanosec * 1e-9 - age_s
            t.sec, t.nanosec = int(total), int((total % 1) * 1e9)
        return t

    def send(self, msg, timeout: float = 3.0, tries: int = 3) -> InferenceStats | None:
        """Publishes until the node reports a run on it (best-effort frames can be lost)."""
        for _ in range(tries):
            n = len(self.stats)
            msg.header.stamp = self.stamp()
            self.cam.publish(msg)
            got = wait_for(lambda: len(self.stats) > n, timeout)
            if got:
                return self.stats.msgs[-1]
        return None


def raw_msg(encoding: str, rgb: np.ndarray, pad: int = 8) -> Image:
    h, w = rgb.shape[:2]
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        px = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
        if encoding.endswith("a8"):
            px = np.concatenate([px, np.full((h, w, 1), 255, np.uint8)], -1)
        rows = px.reshape(h, -1)
    elif encoding == "mono8":
        rows = rgb.mean(-1).astype(np.uint8)
    else:
        rows = np.frombuffer(rgb_to_yuv422(rgb, encoding), np.uint8).reshape(h, w * 2)
    rows = np.concatenate([rows, np.zeros((h, pad), np.uint8)], 1)  # row padding: step > width * bpp
    m = Image()
    m.height, m.width, m.encoding = h, w, encoding
    m.step = rows.shape[1]
    m.data = rows.tobytes()
    m.header.frame_id = "camera"
    return m


def assert_command_matches(d: Driver, stats: InferenceStats, want: np.ndarray, tol: float):
    got = np.array([stats.action.linear.x, stats.action.linear.y, stats.action.angular.z])
    assert stats.outcome == InferenceStats.OUTCOME_OK
    assert np.allclose(got, want, atol=tol, rtol=0), (got, want)
    assert stats.command_seq > 0
    # ...and that exact command went out on cmd_vel.
    published = wait_for(lambda: [c for c in d.cmds.msgs if np.allclose(
        [c.linear.x, c.linear.y, c.angular.z], got, atol=1e-6, rtol=0)], 3)
    assert published, f"{got} never appeared on cmd_vel"


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_commands_equal_python_onnxruntime_for_every_raw_encoding(peer, run_node, encoding):
    node = start(run_node)
    d = Driver(peer)
    d.ready(node)
    ref = ReferencePolicy(MODELS / "hybrid.json")
    d.instruct(INSTRUCTION)
    ref.set_instruction(INSTRUCTION)
    for seed in range(4):  # four frames: the recurrent state must be carried identically
        msg = raw_msg(encoding, scene_frame(seed))
        stats = d.send(msg)
        assert stats, node.output()
        want = ref.run(decode_raw(encoding, bytes(msg.data), msg.width, msg.height, msg.step))
        assert_command_matches(d, stats, want, 1e-4)
        assert stats.policy == "hybrid" and stats.execution_provider == "CPUExecutionProvider"


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_frames(peer, run_node, fmt):
    node = start(run_node, {"camera": {"transport": "compressed"}})
    d = Driver(peer, compressed=True)
    d.ready(node)
    ref = ReferencePolicy(MODELS / "hybrid.json")
    d.instruct(INSTRUCTION)
    ref.set_instruction(INSTRUCTION)
    for seed in range(3):
        buf = io.BytesIO()
        PILImage.fromarray(scene_frame(seed, 320, 240)).save(buf, format=fmt.upper(), quality=90)
        msg = CompressedImage(format=fmt, data=buf.getvalue())
        msg.header.frame_id = "camera"
        stats = d.send(msg)
        assert stats, node.output()
        # The node decodes JPEG with libjpeg-turbo, as PIL does: the same pixels.
        assert_command_matches(d, stats, ref.run(decode_compressed(buf.getvalue())), 1e-4)


def test_float16_model_matches_within_half_precision(peer, run_node):
    node = start(run_node, {"policy": {"hybrid": {"manifest": "models/pure.json"}}})
    d = Driver(peer)
    d.ready(node)
    ref = ReferencePolicy(MODELS / "pure.json")
    d.instruct(INSTRUCTION)
    ref.set_instruction(INSTRUCTION)
    for seed in range(3):
        msg = raw_msg("rgb8", scene_frame(seed))
        stats = d.send(msg)
        assert stats, node.output()
        assert_command_matches(d, stats, ref.run(decode_raw("rgb8", bytes(msg.data), msg.width, msg.height, msg.step)), 1e-2)


def test_a_new_instruction_resets_the_recurrent_state(peer, run_node):
    node = start(run_node)
    d = Driver(peer)
    d.ready(node)
    ref = ReferencePolicy(MODELS / "hybrid.json")
    d.instruct("go forward")
    frame = raw_msg("rgb8", scene_frame(1))
    rgb = decode_raw("rgb8", bytes(frame.data), frame.width, frame.height, frame.step)
    first = d.send(frame).action.linear.x
    for _ in range(3):
        later = d.send(frame).action.linear.x
    assert abs(later - first) > 1e-3, "state should move linear.x"
    d.instruct("go forward to the door")
    ref.set_instruction("go forward to the door")
    stats = d.send(frame)
    assert_command_matches(d, stats, ref.run(rgb), 1e-4)
    assert abs(stats.action.linear.x - first) < 1e-4


def test_stop_in_the_instruction_commands_zero(peer, run_node):
    node = start(run_node)
    d = Driver(peer)
    d.ready(node)
    d.instruct("stop")
    stats = d.send(raw_msg("rgb8", scene_frame(0)))
    assert stats and stats.outcome == InferenceStats.OUTCOME_OK, node.output()
    assert (stats.action.linear.x, stats.action.linear.y, stats.action.angular.z) == (0.0, 0.0, 0.0)


def moved(cmds) -> list:
    return [c for c in cmds.msgs if (c.linear.x, c.linear.y, c.angular.z) != (0.0, 0.0, 0.0)]


def bad_frames():
    good = raw_msg("rgb8", scene_frame(0), pad=0)
    def variant(**kw):
        m = raw_msg("rgb8", scene_frame(0), pad=0)
        for k, v in kw.items():
            setattr(m, k, v)
        return m
    return {
        "truncated data": (variant(data=bytes(good.data)[: len(good.data) // 2]), "bytes"),
        "step too small": (variant(step=good.width * 3 - 1), "step"),
        "unsupported encoding": (variant(encoding="bayer_rggb8"), "unsupported encoding"),
        "absurd size": (variant(width=100000, height=100000, step=300000), "exceeds the limit"),
        "empty": (variant(width=0, height=0, step=0, data=b""), "empty frame"),
    }


def test_malformed_frames_never_move_the_robot_and_are_reported(peer, run_node):
    node = start(run_node)
    d = Driver(peer)
    d.ready(node)
    d.instruct(INSTRUCTION)
    for name, (msg, words) in bad_frames().items():
        n = len(d.status)
        msg.header.stamp = d.stamp()
        d.cam.publish(msg)
        said = wait_for(lambda: [s for s in d.status.msgs[n:] if words in s.reason], 3)
        assert said, f"{name}: status never said '{words}'\n{node.output()}"
        assert "frame rejected" in said[-1].reason and said[-1].state == Status.STATE_SAFE_STOP
    time.sleep(0.3)
    assert not moved(d.cmds), "a malformed frame moved the robot"
    assert all(s.outcome != InferenceStats.OUTCOME_OK for s in d.stats.msgs)
    assert node.proc.poll() is None, "the node must survive bad frames"
    assert "WARN" in node.output() and "frame rejected" in node.output()


def test_corrupt_jpeg_is_rejected_without_motion(peer, run_node):
    node = start(run_node, {"camera": {"transport": "compressed"}})
    d = Driver(peer, compressed=True)
    d.ready(node)
    d.instruct(INSTRUCTION)
    buf = io.BytesIO()
    PILImage.fromarray(scene_frame(0)).save(buf, format="JPEG")
    for data in (buf.getvalue()[: len(buf.getvalue()) // 3], b"\xff\xd8garbage"):
        msg = CompressedImage(format="jpeg", data=data)
        msg.header.stamp = d.stamp()
        n = len(d.status)
        d.cam.publish(msg)
        assert wait_for(lambda: [s for s in d.status.msgs[n:] if "corrupt" in s.reason], 3), node.output()
    assert not moved(d.cmds)


def test_stale_frames_and_empty_instructions_never_drive(peer, run_node):
    node = start(run_node)
    d = Driver(peer)
    d.ready(node)
    d.instruct("   ")
    msg = raw_msg("rgb8", scene_frame(0))
    msg.header.stamp = d.stamp()
    d.cam.publish(msg)
    assert wait_for(lambda: d.status.msgs and "no instruction" in d.status.msgs[-1].reason, 3)
    # Frames and instructions travel on different topics: let that frame age past
    # camera.max_age_s (0.5 s) so it cannot legitimately meet the next instruction.
    time.sleep(0.7)
    d.instruct(INSTRUCTION)
    for _ in range(3):
        msg.header.stamp = d.stamp(age_s=5.0)
        d.cam.publish(msg)
        time.sleep(0.1)
    assert wait_for(lambda: "stale" in d.status.msgs[-1].reason, 3), [s.reason for s in d.status.msgs]
    assert not moved(d.cmds)
    assert not d.stats.msgs, "stale frames must not even reach the model"
    # An over-long instruction is refused as well.
    d.instruct("go " * 2000)
    assert wait_for(lambda: "instruction.max_bytes" in d.status.msgs[-1].reason, 3)


def test_missing_model_keeps_the_robot_still_and_says_so_loudly(peer, run_node, tmp_path):
    manifest = json.loads((MODELS / "hybrid.json").read_text())
    manifest["onnx"] = str(MODELS / "does_not_exist.onnx")
    manifest["text"]["tokenizer"] = str(MODELS / "standin_tokenizer.json")
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    # No fallback either (test_watchdog.py covers handing over to it).
    node = start(run_node, {"policy": {"hybrid": {"manifest": str(tmp_path / "m.json")}},
                            "watchdog": {"fallback_enabled": False}})
    d = Driver(peer)
    assert wait_for(lambda: [s for s in d.status.msgs if "failed to load" in s.reason], 15), node.output()
    d.instruct(INSTRUCTION)
    for seed in range(3):
        msg = raw_msg("rgb8", scene_frame(seed))
        msg.header.stamp = d.stamp()
        d.cam.publish(msg)
        time.sleep(0.1)
    time.sleep(0.5)
    assert d.cmds.msgs and not moved(d.cmds)
    s = d.status.msgs[-1]
    assert s.state == Status.STATE_SAFE_STOP and "does_not_exist.onnx" in s.reason
    assert not s.policies[0].loaded and "no healthy policy" in s.reason
    assert "ERROR" in node.output() and "POLICY NOT LOADED" in node.output()
