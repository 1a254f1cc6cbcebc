"""Good after bad: a failure never outlives its input, seen from rclpy over real ROS 2.

After any bad frame, failed run or refused parameter, the next good input must
give exactly what a fresh node gives for it. Each test first runs a fresh node
(same parameters, same domain, stopped before the next starts) on the good
inputs alone and records what it publishes; then a second node gets the bad
inputs, each followed by a good one, and must publish the fresh node's commands.

How a command is lined up with its frame: every run is reported on
`~/inference_stats` with the frame's stamp in `header.stamp` (each frame is
freshly stamped, so the stamp names it), its `action` and its `command_seq`
(non-zero only when it went out on `cmd_vel`). The output stage is opened up
(test_policy.OPEN_LIMITS: no ramps, limits far above the stand-ins' actions),
so the command on `cmd_vel` is that action itself; the good frames are chosen
so that every one gives a different command (asserted), so a stale command
cannot pass for a new one, and a bad frame's arrival must zero `cmd_vel`.

Tolerances: the stand-ins run on one CPU thread and are deterministic, and the
hybrid's recurrent state depends only on the valid runs it made, so where both
nodes made the same runs on the same frames (malformed frames never reach a
model) the commands are compared exactly (==), as are the limited teleop
commands of the parameter test. After model faults the hybrid takes control
again with a new history (zero state, as a policy switch starts one), and the
two nodes' hybrids reach their state by different numbers of runs on one
frame (the fixed point of its recurrence, which the test checks is reached
after the fault too), so there the tolerance
is 1e-6 (a float32 ulp of the state moves linear.x by ~1e-8).

What a bug would look like: a decoder or validation error kept past its frame
(the JPEG bug) refuses the next good frame or changes its command; a bad frame
that leaves the previous command driving shows as motion after its rejection;
a faulty run that drives, a skipped cool-down or probe, or a poisoned
recurrent state shows on cmd_vel, in the timing of the hybrid's return or as a
command different from the fresh node's; a refused set that applies any part
shows in get_parameters or on cmd_vel at once.
"""

from __future__ import annotations

import importlib.util
import json
import math
import queue
import struct
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import ROOT, wait_for
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats, Status
from rcl_interfaces.msg import Parameter, ParameterEvent
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters, SetParametersAtomically
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from test_params import call, double, doubles, get, string
from test_policy import ENCODINGS, MODELS, OPEN_LIMITS, Driver, bad_frames, raw_msg, scene_frame
from test_seams import is_zero, jpeg, photo, vec
from test_teleop import twist

# scripts/soak.py's fault markers (it is a script, not a package: loaded by path).
_soak = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
soak = sys.modules.setdefault("soak", importlib.util.module_from_spec(_soak))
_soak.loader.exec_module(soak)

INSTRUCTION = "move left"
OK = InferenceStats.OUTCOME_OK
# s: a command published just before a change can still arrive just after it is
# seen (one 20 Hz output tick plus DDS on a loaded 2-core machine).
GRACE = 0.1


def action(stats: InferenceStats) -> tuple:
    return vec(stats.action)


def key(stamp) -> tuple:
    return (stamp.sec, stamp.nanosec)


def gone(peer, name: str = "mobile_vla") -> bool:
    """Waits until the stopped node has left the graph, so the next one is matched afresh."""
    return bool(wait_for(lambda: (name, "/") not in peer.node.get_node_names_and_namespaces(), 10))


def assert_distinct(commands: list[tuple], what: str):
    """Every good input gives its own command: a stale one cannot pass for a new one."""
    for i, a in enumerate(commands):
        for j, b in enumerate(commands[:i]):
            assert max(abs(x - y) for x, y in zip(a, b)) > 1e-4, f"{what} {j} and {i} give the same command {a}"


# --- 1. malformed frames, each followed by a good frame ---------------------------------------------


class Bad:
    """A bad frame, the words its status reason must contain, and how it is stamped."""

    def __init__(self, msg, words: str, age_s: float = 0.0, unstamped: bool = False):
        self.msg, self.words, self.age_s, self.unstamped = msg, words, age_s, unstamped


def bad_raw_frames() -> dict[str, Bad]:
    """Every bad raw frame the suite knows: test_policy's, the soak's, and the freshness refusals."""
    cases = {name: Bad(msg, words) for name, (msg, words) in bad_frames().items()}

    def frame(encoding="rgb8", pad=0, **kw):
        m = raw_msg(encoding, scene_frame(0), pad=pad)
        for k, v in kw.items():
            setattr(m, k, v)
        return m
    data = bytes(frame().data)
    cases.update({
        "unknown encoding bgr16": Bad(frame(encoding="bgr16"), "unsupported encoding 'bgr16'"),
        "step 100 for a 160-pixel row": Bad(frame(step=100), "step 100 is smaller than"),
        "a third of the data": Bad(frame(data=data[: len(data) // 3]), f"data has {len(data) // 3} bytes"),
        "claims 5000x5000": Bad(frame(width=5000, height=5000, step=15000, data=data[:4096]),
                                "frame 5000x5000 exceeds the limit"),
        "odd width for yuv422": Bad(frame("yuv422", pad=8, width=161), "YUV 4:2:2 frame width 161 is odd"),
        "zero width": Bad(frame(width=0), "empty frame 0x120"),
        "unstamped": Bad(frame(), "no header stamp", unstamped=True),
        "stale stamp": Bad(frame(), "frame is stale", age_s=5.0),
        "stamped in the future": Bad(frame(), "stamped in the future", age_s=-10.0),
    })
    return cases


def sof_patched(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) claiming another size; the scan is unchanged."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4:]


def ihdr_patched(data: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming another size, its CRC made right (a well-formed header)."""
    body = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def bad_compressed_frames() -> dict[str, Bad]:
    rng = np.random.default_rng(5)
    good = jpeg(photo(320, 240))
    png = cv2.imencode(".png", scene_frame(0))[1].tobytes()
    png16 = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint16))[1].tobytes()

    def c(fmt, data, words):
        return Bad(CompressedImage(format=fmt, data=data), words)
    return {
        "truncated JPEG": c("jpeg", good[: len(good) // 3], "corrupt compressed image"),
        "truncated JPEG + EOI": c("jpeg", good[: int(len(good) * 0.6)] + b"\xff\xd9", "corrupt compressed image"),
        # The bug found: a valid SOI, a few hundred random bytes, EOI; libjpeg's error
        # state outlived it and refused every later good JPEG.
        "SOI + 376 random bytes + EOI": c("jpeg", b"\xff\xd8" + rng.bytes(376) + b"\xff\xd9",
                                          "corrupt compressed image"),
        "SOI + garbage": c("jpeg", b"\xff\xd8garbage", "corrupt compressed image"),
        "random bytes labelled jpeg": c("jpeg", rng.bytes(2000), "corrupt compressed image"),
        "empty jpeg": c("jpeg", b"", "corrupt compressed image"),
        "JPEG claiming 60000x60000": c("jpeg", sof_patched(good, 60000, 60000), "frame 60000x60000 exceeds the limit"),
        "JPEG bytes labelled png": c("png", good, "corrupt compressed image"),
        "16-bit PNG": c("png", png16, "16 bits per channel"),
        "truncated PNG": c("png", png[: len(png) // 2], "corrupt compressed image"),
        "PNG claiming 5000x5000": c("png", ihdr_patched(png, 5000, 5000), "frame 5000x5000 exceeds the limit"),
        "unknown format h264": c("h264", rng.bytes(1000), "unsupported compressed format 'h264'"),
    }


def good_frames(compressed: bool, n: int) -> list:
    """n different good frames: JPEGs, or raw frames in every encoding in turn."""
    if compressed:
        return [CompressedImage(format="jpeg", data=jpeg(scene_frame(i, 320, 240))) for i in range(n)]
    return [raw_msg(ENCODINGS[i % len(ENCODINGS)], scene_frame(i)) for i in range(n)]


def instructed_driver(peer, node, compressed: bool) -> Driver:
    d = Driver(peer, compressed=compressed)
    d.ready(node)
    d.instruct(INSTRUCTION)
    assert wait_for(lambda: d.status.msgs and "no instruction" not in d.status.msgs[-1].reason, 3), node.output()
    return d


def run_good(d: Driver, node, msg, what: str) -> tuple[InferenceStats, float]:
    """Sends a good frame until a run on it is reported; returns the run and when the frame went out."""
    t0 = time.monotonic()
    stats = d.send(msg)
    assert stats, f"{what}: the good frame was never run\n{node.output()[-4000:]}"
    assert key(stats.header.stamp) == key(msg.header.stamp), (what, stats.header.stamp, msg.header.stamp)
    assert stats.outcome == OK and stats.command_seq > 0 and stats.policy == "hybrid", (what, stats)
    return stats, t0


def reject(d: Driver, node, bad: Bad, what: str, tries: int = 3) -> float:
    """Sends a bad frame until the status names it; returns when that status arrived."""
    for _ in range(tries):
        n = len(d.status)
        bad.msg.header.stamp = Time() if bad.unstamped else d.stamp(bad.age_s)
        d.cam.publish(bad.msg)

        def said():
            with d.status.lock:
                return [(m, at) for m, at in zip(d.status.msgs[n:], d.status.times[n:]) if bad.words in m.reason]
        got = wait_for(said, 2)
        if got:
            m, at = got[0]
            assert m.state == Status.STATE_SAFE_STOP, (what, m.state, m.reason)
            return at
    raise AssertionError(f"{what}: status never said '{bad.words}': {[s.reason for s in d.status.msgs[-3:]]}\n"
                         f"{node.output()[-4000:]}")


def fresh_commands(peer, run_node, params: dict, compressed: bool, goods: list) -> list[tuple]:
    """What a fresh node publishes for the good frames alone, in order."""
    node = run_node(params)
    d = instructed_driver(peer, node, compressed)
    want = []
    for i, g in enumerate(goods):
        stats, t0 = run_good(d, node, g, f"fresh node, good frame {i}")
        want.append(action(stats))
        assert wait_for(lambda: [c for c in d.cmds.after(t0) if vec(c) == want[-1]], 2), (i, want[-1])
    assert node.stop() == 0
    assert gone(peer), "the fresh node did not leave the graph"
    return want


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_after_every_malformed_frame_the_next_good_frame_drives_as_on_a_fresh_node(peer, run_node, transport):
    compressed = transport == "compressed"
    params = {**OPEN_LIMITS, "camera": {"transport": transport}}
    bads = bad_compressed_frames() if compressed else bad_raw_frames()
    goods = good_frames(compressed, len(bads) + 1)
    want = fresh_commands(peer, run_node, params, compressed, goods)
    assert_distinct(want, "good frames")

    node = run_node(params)
    d = instructed_driver(peer, node, compressed)
    sent_good = set()

    def good(i: int, after: str, n_status: int):
        stats, t0 = run_good(d, node, goods[i], f"good frame after {after}")
        sent_good.add(key(stats.header.stamp))
        assert action(stats) == want[i], f"after {after}: {action(stats)}, a fresh node: {want[i]}"
        assert wait_for(lambda: [c for c in d.cmds.after(t0) if vec(c) == want[i]], 2), \
            f"after {after}: {want[i]} never appeared on cmd_vel"
        others = {vec(c) for c in d.cmds.after(t0) if not is_zero(c) and vec(c) != want[i]}
        assert not others, f"after {after}: cmd_vel also carried {others}"
        running = wait_for(lambda: [s for s in d.status.msgs[n_status:]
                                    if s.state == Status.STATE_RUNNING and s.reason == ""], 3)
        assert running, f"after {after}: status stayed {[(s.state, s.reason) for s in d.status.msgs[n_status:]]}"
        assert running[0].active_policy == "hybrid"

    good(0, "start", len(d.status))
    for i, (name, bad) in enumerate(bads.items(), 1):
        n = len(d.status)
        # Sent while the previous good command still drives: it must stop at once.
        t_said = reject(d, node, bad, name)
        assert wait_for(lambda: len(d.cmds.after(t_said + GRACE)) >= 3, 3), node.output()
        moving = [vec(c) for c in d.cmds.after(t_said + GRACE) if not is_zero(c)]
        assert not moving, f"{name}: cmd_vel moved while it was the newest frame: {moving[:3]}"
        good(i, name, n)
    # No bad frame ever reached a model, and the node is still there.
    assert {key(s.header.stamp) for s in d.stats.msgs} <= sent_good, "a bad frame was run"
    assert all(s.command_seq == 0 or s.outcome == OK for s in d.stats.msgs)
    assert node.proc.poll() is None
    assert "panic" not in node.output()


# --- 2. model faults, each followed by healthy runs --------------------------------------------------

BLUE = (0, 0, 255)
# Marker colour in the frame's corner -> what the hybrid's run on it reports. Magenta
# and cyan are models/faulty_injectable's (scripts/soak.py); blue is the run error
# added by `injectable_with_a_run_error`.
FAULTS = {
    "nan": (soak.MARKERS["nan_burst"], InferenceStats.OUTCOME_INVALID_OUTPUT),  # a non-finite action
    "hang": (soak.MARKERS["hang"], InferenceStats.OUTCOME_TIMEOUT),  # seconds of work, cancelled at hard_timeout_s
    "error": (BLUE, InferenceStats.OUTCOME_ERROR),  # ONNX Runtime fails the run
}
WATCHDOG = {"cooldown_s": 0.3, "max_cooldown_s": 1.0, "recovery_successes": 2, "hard_timeout_s": 0.5,
            # A generous deadline: on a loaded machine a healthy run must not count as late.
            "deadline_s": 0.25}
# Healthy runs on one frame after which the hybrid's recurrent state has stopped
# moving (h <- h/2 + tanh(brightness)/2 closes half the gap each run: 2^-30 is below float32).
SETTLE = 30
# Fault, recovery and good frame twice: the second time with the doubled cool-down.
ROUNDS = 2


def injectable_with_a_run_error(tmp_path) -> str:
    """models/faulty_injectable plus a fourth marker: a blue corner (0, 0, 255) makes ONNX Runtime
    fail the run (a Gather whose index comes from the frame is out of bounds): an inference
    error, neither a bad value nor a hang. Otherwise the same graph, bit for bit the same action."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(MODELS / "faulty_injectable.onnx"))
    g = model.graph
    producer = next(n for n in g.node if "action" in n.output)
    producer.output[list(producer.output).index("action")] = "action_unchecked"

    def const(name, value, dtype=np.float32) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name
    g.node.extend([
        # The top-left 8x8 model pixels, as corner_marker in models/generate_standins.py reads them.
        helper.make_node("Slice", ["pixel_values", const("err_starts", [0, 0], np.int64),
                                   const("err_ends", [8, 8], np.int64), const("err_axes", [2, 3], np.int64)],
                         ["err_block"]),
        helper.make_node("ReduceMean", ["err_block"], ["err_mean"], axes=[2, 3], keepdims=0),
        # Blue: red and green below -1.3, blue above 1.5 (normalised).
        helper.make_node("Mul", ["err_mean", const("err_sign", [1.0, 1.0, -1.0])], ["err_signed"]),
        helper.make_node("Less", ["err_signed", const("err_limit", [-1.3, -1.3, -1.5])], ["err_hit"]),
        helper.make_node("Cast", ["err_hit"], ["err_hit_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMin", ["err_hit_f"], ["err_blue"], axes=[1], keepdims=0),
        helper.make_node("Mul", ["err_blue", const("err_far", [1000.0])], ["err_index_f"]),
        helper.make_node("Cast", ["err_index_f"], ["err_index"], to=TensorProto.INT64),
        helper.make_node("Gather", [const("err_zeros", [0.0, 0.0]), "err_index"], ["err_zero"], axis=0),
        helper.make_node("Add", ["action_unchecked", "err_zero"], ["action"]),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "faulty_run_error.onnx"))
    manifest = json.loads((MODELS / "faulty_injectable.json").read_text())
    manifest["onnx"] = str(tmp_path / "faulty_run_error.onnx")
    manifest["text"]["tokenizer"] = str(MODELS / manifest["text"]["tokenizer"])
    (tmp_path / "faulty_run_error.json").write_text(json.dumps(manifest))
    return str(tmp_path / "faulty_run_error.json")


def fault_frames() -> dict:
    base = scene_frame(1)
    frames = {"healthy": raw_msg("rgb8", base)}
    for name, (colour, _) in FAULTS.items():
        px = base.copy()
        px[:24, :24] = colour  # 160x120 -> 224x224: covers the model's 8x8 corner with margin
        frames[name] = raw_msg("rgb8", px)
    # The good frames the two nodes' commands are compared on, one per round.
    for i, seed in enumerate([0, 2, 3][:ROUNDS]):
        frames[f"good{i}"] = raw_msg("rgb8", scene_frame(seed))
    return frames


class Camera:
    """A 20 Hz camera of named frames, each freshly stamped and its stamp remembered with its name;
    `kind` is streamed (None: paused) and `once(name)` sends one frame in the stream."""

    def __init__(self, peer, node, frames: dict, hz: float = 20.0):
        self.node, self.frames = node, frames
        self.d = instructed_driver(peer, node, compressed=False)
        self.kind: str | None = "healthy"
        self._once: queue.Queue = queue.Queue()
        self._names: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                try:
                    kind = self._once.get_nowait()
                except queue.Empty:
                    kind = self.kind
                if kind is not None:
                    m = self.frames[kind]
                    m.header.stamp = self.d.stamp()
                    with self._lock:
                        self._names[key(m.header.stamp)] = kind
                    self.d.cam.publish(m)
                time.sleep(1.0 / hz)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)

    def name_of(self, stats) -> str | None:
        with self._lock:
            return self._names.get(key(stats.header.stamp))

    def runs(self, since: int = 0) -> list[tuple[float, InferenceStats]]:
        with self.d.stats.lock:
            return list(zip(self.d.stats.times[since:], self.d.stats.msgs[since:]))

    def hybrid_ok(self, since: int, name: str = "healthy") -> list[InferenceStats]:
        return [m for _, m in self.runs(since) if m.policy == "hybrid" and m.outcome == OK and self.name_of(m) == name]

    def settle(self, since: int):
        """Streams the healthy frame until the hybrid made SETTLE valid runs on it since `since`."""
        self.kind = "healthy"
        assert wait_for(lambda: len(self.hybrid_ok(since)) >= SETTLE, 20), self.node.output()[-4000:]
        h = [action(m) for m in self.hybrid_ok(since)[-3:]]
        assert max(abs(a - b) for a, b in zip(h[-1], h[-2])) < 1e-7, f"the state has not settled: {h}"

    def one(self, name: str, timeout: float = 3.0, tries: int = 3) -> tuple[int, float, InferenceStats]:
        """Sends one frame `name` in the stream until a hybrid run on it is reported: (index, arrival, run)."""
        for _ in range(tries):
            n = len(self.d.stats)
            self._once.put(name)
            got = wait_for(lambda: [(n + i, at, m) for i, (at, m) in enumerate(self.runs(n))
                                    if m.policy == "hybrid" and self.name_of(m) == name], timeout)
            if got:
                return got[0]
        raise AssertionError(f"no hybrid run on the {name} frame was reported\n{self.node.output()[-4000:]}")

    def good(self, name: str) -> tuple[int, InferenceStats]:
        """Pauses the stream, sends the good frame `name`, checks it drove with the hybrid; resumes."""
        self.kind = None
        time.sleep(0.15)
        n_status = len(self.d.status)
        t0 = time.monotonic()
        i, _, stats = self.one(name)
        assert stats.outcome == OK and stats.command_seq > 0, (name, stats)
        assert wait_for(lambda: [c for c in self.d.cmds.after(t0) if vec(c) == action(stats)], 2), (name, stats.action)
        last = self.d.status.msgs
        running = wait_for(lambda: (last[-1].state, last[-1].reason, last[-1].active_policy)
                           == (Status.STATE_RUNNING, "", "hybrid"), 3)
        assert running, [(s.state, s.reason, s.active_policy) for s in last[n_status:]]
        self.kind = "healthy"
        return i, stats


def fault_episode(cam: Camera, fault: str, outcome: int, cooldown: float):
    """One fault frame in the healthy stream: the hybrid's run on it drives nothing, the hybrid
    drives again only after its cool-down and probes, and the pure policy drives meanwhile."""
    d = cam.d
    n_status = len(d.status)
    i_f, t_f, run = cam.one(fault)
    assert run.outcome == outcome and run.command_seq == 0, (fault, run.outcome, run.command_seq)
    switched = wait_for(lambda: [at for m, at in zip(d.status.msgs[n_status:], d.status.times[n_status:])
                                 if m.active_policy == "pure"], 2)
    assert switched, f"{fault}: status never named the pure policy"
    t_fail = min(t_f, switched[0])  # a hang fails at the hard timeout, its run reports when ONNX Runtime stops

    def back():
        for k, (at, m) in enumerate(cam.runs(i_f)):
            if m.policy == "hybrid" and m.command_seq > 0:
                return k, at, m
    got = wait_for(back, 10)
    assert got, f"{fault}: the hybrid was never trusted again\n{cam.node.output()[-4000:]}"
    k, t_back, m = got
    assert m.outcome == OK and cam.name_of(m) == "healthy", m
    rested = t_back - t_fail
    switches = [line for line in cam.node.output().splitlines() if "policy switch" in line or "cancelling" in line]
    assert rested >= cooldown - 0.05, \
        f"{fault}: trusted again {rested:.3f} s after failing, before its {cooldown:.1f} s cool-down:\n" \
        + "\n".join(switches[-4:])
    probes = [p for _, p in cam.runs(i_f)[:k] if p.policy == "hybrid" and p.outcome == OK]
    assert len(probes) >= WATCHDOG["recovery_successes"] and all(p.command_seq == 0 for p in probes), \
        f"{fault}: {len(probes)} probe runs before it drove, {[p.command_seq for p in probes]}"
    # Meanwhile the fallback drove, and its command went out.
    pure = [m for _, m in cam.runs(i_f)[:k] if m.policy == "pure" and m.command_seq > 0]
    assert pure, f"{fault}: the fallback never drove\n{cam.node.output()[-4000:]}"
    assert all(m.outcome == OK and m.fallback_active for m in pure), pure
    assert wait_for(lambda: [c for c in d.cmds.after(t_f) if vec(c) == action(pure[0])], 2), \
        f"{fault}: {pure[0].action} never appeared on cmd_vel"


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_after_a_faulty_run_the_trusted_hybrid_drives_as_on_a_fresh_node(peer, run_node, tmp_path, fault):
    params = {**OPEN_LIMITS, "watchdog": WATCHDOG,
              "policy": {"hybrid": {"manifest": injectable_with_a_run_error(tmp_path)},
                         "pure": {"manifest": "models/pure.json"}}}
    frames = fault_frames()
    # A fresh node: per round, the healthy stream until the state settles, then a good frame.
    fresh = run_node(params)
    cam = Camera(peer, fresh, frames)
    want, settled = [], []
    try:
        since = 0
        for r in range(ROUNDS):
            cam.settle(since)
            settled.append(action(cam.hybrid_ok(since)[-1]))
            since, stats = cam.good(f"good{r}")
            want.append(action(stats))
        assert not [m for _, m in cam.runs() if m.policy != "hybrid"], "the fresh node fell back"
    finally:
        cam.close()
    assert fresh.stop() == 0 and gone(peer)
    assert_distinct(settled[:1] + want, "the healthy frame and the good frames")

    # The same, with the fault frame in the stream before each good frame.
    node = run_node(params)
    cam = Camera(peer, node, frames)
    _, outcome = FAULTS[fault]
    try:
        since = 0
        for r in range(ROUNDS):
            cam.settle(since)
            # Failing again after a recovery doubles the cool-down (up to max_cooldown_s).
            fault_episode(cam, fault, outcome, min(WATCHDOG["cooldown_s"] * 2 ** r, WATCHDOG["max_cooldown_s"]))
            # The hybrid taking control again started a new history (zero state): it settles
            # on the healthy stream as the fresh node's did, and the good frame must then give the same.
            cam.settle(len(cam.d.stats))
            since, stats = cam.good(f"good{r}")
            assert max(abs(a - b) for a, b in zip(action(stats), want[r])) <= 1e-6, \
                f"round {r} after the {fault}: {action(stats)}, a fresh node: {want[r]}"
    finally:
        cam.close()
    # Over the whole run: nothing from a faulty run, nothing non-finite, every motion from a good run.
    runs = [m for _, m in cam.runs()]
    faulty = [m for m in runs if m.policy == "hybrid" and cam.name_of(m) == fault]
    assert len(faulty) >= ROUNDS and all(m.outcome == outcome and m.command_seq == 0 for m in faulty), faulty
    assert all(m.outcome == OK for m in runs if m.command_seq > 0)
    drove = [action(m) for m in runs if m.command_seq > 0]
    cmds = [vec(c) for c in cam.d.cmds.msgs]
    assert all(math.isfinite(v) for c in cmds for v in c)
    strays = [c for c in cmds if any(c) and not any(max(abs(x - y) for x, y in zip(c, a)) <= 1e-9 for a in drove)]
    assert not strays, f"commands no good run produced: {strays[:5]}"
    out = node.output()
    assert out.count("recovered after 2 good runs") >= ROUNDS and "panic" not in out
    if outcome == InferenceStats.OUTCOME_TIMEOUT:
        assert "cancelling" in out


# --- 3. a refused set_parameters followed by a valid one --------------------------------------------

OLD_LIMITS = [0.5, 0.5, 1.0]
NEW_LIMITS, NEW_DEADBAND = [0.2, 0.3, 0.4], [0.0, 0.1, 0.0]
JOY = twist(x=1.0, y=0.08, wz=-2.0)  # beyond both limits on x and z; y under the new deadband
BASE_LIMITS = {"max_velocity": OLD_LIMITS, "max_accel": [0.0, 0.0, 0.0]}


def all_parameters(peer) -> dict:
    names = sorted(call(peer, ListParameters, "list_parameters", ListParameters.Request()).result.names)
    values = call(peer, GetParameters, "get_parameters", GetParameters.Request(names=names)).values
    return {n: parameter_value_to_python(v) for n, v in zip(names, values)}


class Joystick:
    """Publishes JOY at 20 Hz on joy_vel; the observer collects cmd_vel."""

    def __init__(self, peer, node):
        self.pub = peer.publisher(Twist, "/joy_vel")
        self.cmds = peer.subscribe(Twist, "/cmd_vel")
        assert wait_for(lambda: self.pub.get_subscription_count() > 0, 15), node.output()
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                self.pub.publish(JOY)
                time.sleep(0.05)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def commands_after(self, t: float, n: int = 4) -> list[tuple]:
        assert wait_for(lambda: len(self.cmds.after(t)) >= n, 3), "cmd_vel fell silent"
        return [vec(c) for c in self.cmds.after(t)]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)


def test_a_refused_parameter_set_changes_nothing_and_the_next_valid_set_applies_fully(peer, run_node):
    # A fresh node started with the new values: what the valid set must give.
    fresh = run_node({"limits": {**BASE_LIMITS, "max_velocity": NEW_LIMITS, "deadband": NEW_DEADBAND}})
    joy = Joystick(peer, fresh)
    try:
        assert wait_for(lambda: joy.cmds.msgs and not is_zero(joy.cmds.msgs[-1]), 5), fresh.output()
        fresh_cmd = joy.commands_after(time.monotonic())[-1]
        fresh_params = all_parameters(peer)
    finally:
        joy.close()
    assert fresh_cmd == (0.2, 0.0, -0.4), fresh_cmd
    assert fresh.stop() == 0 and gone(peer)

    node = run_node({"limits": BASE_LIMITS})
    events = peer.subscribe(ParameterEvent, "/parameter_events",
                            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    joy = Joystick(peer, node)
    try:
        assert wait_for(lambda: joy.cmds.msgs and not is_zero(joy.cmds.msgs[-1]), 5), node.output()
        old_cmd = joy.commands_after(time.monotonic())[-1]
        assert old_cmd == (0.5, 0.08, -1.0), old_cmd
        before = all_parameters(peer)
        refused = [
            ("a negative limit", [Parameter(name="limits.max_velocity", value=doubles(0.2, -0.3, 0.4))],
             "'limits.max_velocity'"),
            ("two values for three axes", [Parameter(name="limits.max_velocity", value=doubles(0.2, 0.3))],
             "'limits.max_velocity'"),
            ("a string for a limit", [Parameter(name="limits.max_velocity", value=string("fast"))],
             "limits.max_velocity"),
            ("a read-only parameter", [Parameter(name="camera.transport", value=string("compressed"))], "read-only"),
            ("a good deadband beside a bad limit",
             [Parameter(name="limits.deadband", value=doubles(*NEW_DEADBAND)),
              Parameter(name="limits.max_velocity", value=doubles(0.2, 0.3, -0.4))], "'limits.max_velocity'"),
            ("a good limit beside a bad timeout",
             [Parameter(name="limits.max_velocity", value=doubles(*NEW_LIMITS)),
              Parameter(name="watchdog.hard_timeout_s", value=double(0.01))], "'watchdog.hard_timeout_s'"),
        ]
        for what, parameters, why in refused:
            if len(parameters) == 1:
                res = call(peer, SetParameters, "set_parameters", SetParameters.Request(parameters=parameters))
                ok, reason = res.results[0].successful, res.results[0].reason
            else:
                res = call(peer, SetParametersAtomically, "set_parameters_atomically",
                           SetParametersAtomically.Request(parameters=parameters))
                ok, reason = res.result.successful, res.result.reason
            t = time.monotonic()
            assert not ok and why in reason, (what, ok, reason)
            # Nothing changed: not a value, not a command (no grace: there was no change to arrive).
            assert all_parameters(peer) == before, what
            after = joy.commands_after(t)
            assert all(c == old_cmd for c in after), (what, [c for c in after if c != old_cmd][:3])
        assert not [p for e in events.msgs for p in e.changed_parameters], "a refused set was announced"
        assert "parameter changed" not in node.output()

        res = call(peer, SetParametersAtomically, "set_parameters_atomically", SetParametersAtomically.Request(
            parameters=[Parameter(name="limits.max_velocity", value=doubles(*NEW_LIMITS)),
                        Parameter(name="limits.deadband", value=doubles(*NEW_DEADBAND))]))
        t = time.monotonic()
        assert res.result.successful, res.result.reason
        after = joy.commands_after(t + GRACE)
        assert all(c == fresh_cmd for c in after), (fresh_cmd, [c for c in after if c != fresh_cmd][:3])
        assert list(get(peer, "limits.max_velocity").double_array_value) == NEW_LIMITS
        # Applied fully: every parameter as on the fresh node started with those values.
        now = all_parameters(peer)
        assert now == fresh_params, {k: (now.get(k), fresh_params.get(k)) for k in now.keys() | fresh_params.keys()
                                     if now.get(k) != fresh_params.get(k)}
        changed = wait_for(lambda: {p.name for e in events.msgs for p in e.changed_parameters}, 3)
        assert changed == {"limits.max_velocity", "limits.deadband"}, changed
    finally:
        joy.close()
