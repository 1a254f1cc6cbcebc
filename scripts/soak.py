#!/usr/bin/env python3
"""Fault-injection soak over ROS 2: two launched nodes, their cameras at 30 Hz, and faults for as long as asked.

Two instances of the node run from the launch file with the shipped
parameters (Fast DDS shared-memory profile) and the hybrid slot on
`models/faulty_injectable.json` (the healthy hybrid stand-in, except that a
marker in a frame's corner makes that run return an infinite action, run
slowly (about 0.3 s) or hang until the watchdog cancels it):

  raw         the default node: `camera.transport: raw`, unmanaged, fed
              640x480 rgb8 `sensor_msgs/Image` frames on /camera/image_raw
  compressed  namespace /compressed, `camera.transport: compressed`, started
              with `managed:=true` (a lifecycle node the soak configures and
              activates), fed the same scene as `CompressedImage`, in JPEG
              and PNG phases (each episode and the healthy frames after it
              are one phase; the malformed kinds pick their own format)

An rclpy peer (this process) is both cameras (one frame sequence, one stamp
per tick for both nodes), the operator and the observer. Fault episodes follow
each other in shuffled cycles (each kind once per cycle; the soak never ends
before the first cycle is complete), each followed by healthy frames:

  corrupt            raw: an unknown encoding, and a step too small for the width
  truncated          raw: data shorter than step x height
  oversized          raw: frames that claim 5000 x 5000 pixels
  jpeg_truncated     compressed: the first half of a JPEG
  jpeg_truncated_eoi compressed: the first half of a JPEG with an end marker (a cut USB MJPEG frame)
  jpeg_soi_noise_eoi compressed: SOI, 376 random bytes, EOI (the sequence that once poisoned the decoder)
  garbage            compressed: random bytes, as "jpeg", "png" and an unknown format in turn
  png_16bit          compressed: a valid 16-bit RGB PNG (refused from its header)
  png_truncated      compressed: the first half of a PNG
  nan_burst          frames that make the hybrid return a non-finite action    } each on one node,
  slow               frames on which the hybrid runs past its deadline         } the raw and the
  hang               frames on which the hybrid hangs until cancelled          } compressed in turn
  camera_gone        both camera publishers destroyed for 2 s, then created again
  teleop             a joystick publisher per node created, driving, then destroyed mid-stream
  churn              the instruction changed every 80 ms for 2 s
  estop              the e-stop engaged for 1.5 s, then released
  params             through rcl_interfaces (as `ros2 param set` does), on both nodes: a set the
                     node must refuse (a negative limit, an out-of-range timeout, a read-only
                     parameter, or a bad value beside a good one in an atomic set, in turn),
                     then a valid `limits.max_velocity` with y at 0.15 m/s, then the default again
  lifecycle_pause    compressed: deactivate, 1.5 s inactive, activate (lifecycle_msgs services)
  lifecycle_reload   compressed: deactivate, cleanup (models unloaded), configure, activate

Both nodes publish stamped commands, each judged at its stamp (when the node
sent it, not when this busy peer read it). The soak reports, per node and in
all:

* commands attributable to a fault (must be 0): a non-finite command or one
  over the limits in force (the parameter episodes change them); one from a
  run whose output was invalid, that was cancelled, whose frame was stale or
  one the node must refuse; a hybrid run that drove during its watchdog
  cool-down; motion under the e-stop (after the first zero, or later than
  GRACE after it engaged); motion while only bad frames or none had arrived
  for longer than the command timeout; the joystick's command after its
  timeout; a command against every instruction the node could have been
  following (the one sent GRACE earlier and any since); a command while the
  managed node was inactive (after its one zero), or a run on a frame that
  arrived while it was inactive that drove; an output a refused parameter
  set changed.
* good frames after a fault answered (must be 100 %): every healthy frame a
  node was sent, except while an episode that concerns that node is on or
  is about to begin before the frame's answer is due (and
  until the joystick's timeout after teleop, until the camera's publisher is
  matched again after camera_gone, until the answer to `activate` after a
  lifecycle episode), must be answered: a run on that frame or a newer one
  drives the instructed way (InferenceStats.command_seq set, outcome OK,
  a left strafe) within ANSWER_S (0.25 s: five output ticks at 20 Hz; the
  node normally answers in 2-6 ms) of the frame's stamp. After a model fault
  a faulty run may still be in flight when the episode ends (a slow run short
  of three misses, a hang before `watchdog.hard_timeout_s`), so frames in the
  first `hard_timeout_s` after it are answered within hard_timeout_s +
  ANSWER_S of its end; the fallback drives meanwhile if the hybrid failed.
* the hybrid's return (must be every time): after each hybrid failure (its
  cool-down read from /diagnostics) the hybrid drives again no later than
  cool-down + (recovery_successes + 1) frame periods + ANSWER_S + 0.5 s after
  the failure, plus any time the node spent without healthy input meanwhile
  (other episodes); and never drives before its cool-down has passed. The soak
  runs healthy frames at the end until every hybrid has come back.
* parameter and lifecycle checks (must all hold): a refused set answers
  "unsuccessful" with a reason, changes no value (get_parameters), announces
  nothing on /parameter_events and leaves the output as it was; the valid set
  succeeds, is announced, and its limit clamps the commands from its answer
  on; the default restored lifts the clamp; every transition succeeds; the
  node is silent while inactive and answers healthy frames after activation.
* crashes (a node dying, a panic in its log, a non-zero exit on SIGINT), each
  node's RSS (and its anonymous, file and shared-memory parts) at the start
  and end, the slope after the warm-up (every episode kind run once) and the
  anonymous memory's median level then and in the last 5 minutes, hybrid latency in the first
  and last tenth, the e-stop's reaction, the peer's camera gaps, and per
  episode how long until the policy, and the hybrid itself, drove again.

The exit status is 0 only when all of those hold.

    source env.sh && python3 scripts/soak.py --minutes 30 --report RELIABILITY.md
    python3 scripts/soak.py --minutes 2 --healthy-s 3 --json build/soak.json     # CI's run
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import math
import os
import platform
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch_xml  # noqa: E402  (scripts/launch_xml.py: the package lookup launch_ros does)

ROOT = Path(__file__).resolve().parent.parent
RATE_HZ = 30.0
RAW_FAULTS = ("corrupt", "truncated", "oversized")
JPEG_FAULTS = ("jpeg_truncated", "jpeg_truncated_eoi", "jpeg_soi_noise_eoi")
PNG_FAULTS = ("png_16bit", "png_truncated")
COMPRESSED_FAULTS = (*JPEG_FAULTS, "garbage", *PNG_FAULTS)
REFUSED = RAW_FAULTS + COMPRESSED_FAULTS
MARKERS = {"nan_burst": (255, 0, 255), "slow": (255, 255, 0), "hang": (0, 255, 255)}
SHARED = ("camera_gone", "teleop", "churn", "estop", "params")
LIFECYCLE = ("lifecycle_pause", "lifecycle_reload")
EPISODES = [*RAW_FAULTS, *COMPRESSED_FAULTS, *MARKERS, *SHARED, *LIFECYCLE]
TELEOP_X = 0.11  # a speed no policy output here takes
LEFT_MIN_Y = 0.1  # "move left": the hybrid strafes at 0.25 m/s, the pure fallback at 0.20
PARAM_Y = 0.15  # the params episode's valid limit on linear.y: below both policies' strafe, above LEFT_MIN_Y
NOTES = "<!-- Notes: everything below this line is kept when soak.py rewrites this file. -->"
GRACE = 0.25  # s: DDS both ways, one output tick and one frame, on a loaded 2-core machine
ANSWER_S = 0.25  # s: a healthy frame's answer, frame stamp to command (5 output ticks at 20 Hz)
COMPRESSED_NS = "/compressed"


def share_dir() -> Path:
    try:
        return Path(launch_xml.find_pkg_prefix("mobile_vla")) / "share/mobile_vla"
    except launch_xml.LaunchError:
        sys.exit("mobile_vla is not installed: run scripts/build.sh, then source env.sh")


@dataclass
class Episode:
    kind: str
    targets: tuple
    start: float
    end: float = 0.0
    # Per node: healthy frames stamped from then on are judged again.
    judge_from: dict = field(default_factory=dict)
    # Frames before this are answered within ANSWER_S of it (a faulty run may still be in flight).
    hold_until: float = 0.0
    fmt: str = ""
    detail: dict = field(default_factory=dict)
    recovered_after: dict = field(default_factory=dict)
    hybrid_after: dict = field(default_factory=dict)


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Times are the system clock: the node's stamps (its ROS clock is the
    # system clock), this process's time.time() for the rest.
    cmds: list = field(default_factory=list)  # (stamp, x, y, z)
    stats: list = field(default_factory=list)  # (t, frame_id, policy, outcome, command_seq, s2p_ms, stamp, action_y)
    frames: list = field(default_factory=list)  # (seq, stamp, kind, fmt)
    instructions: list = field(default_factory=list)  # (t, text)
    estop: list = field(default_factory=list)  # (t, engaged)
    bad_input: list = field(default_factory=list)  # (t0, t1): only refused frames or none at all
    teleop: list = field(default_factory=list)  # (t_start, t_stop)
    diag: list = field(default_factory=list)  # (stamp, hybrid state, hybrid cool-down s, hybrid failures)
    param_events: list = field(default_factory=list)  # (t, [names])
    limits: list = field(default_factory=list)  # (t_sent, t_answer, [x, y, z]): changes of limits.max_velocity
    params: list = field(default_factory=list)  # one dict per params episode
    inactive: list = field(default_factory=list)  # one dict per lifecycle episode
    reloads: list = field(default_factory=list)  # t: a cleanup answered (the watchdog starts afresh)
    rss: list = field(default_factory=list)  # (t, VmRSS, RssAnon, RssFile, RssShmem) in MB


class Target:
    """One node under test: its process, topics, camera publisher and what was seen of it."""

    def __init__(self, name: str, ns: str, transport: str, managed: bool):
        self.name, self.ns, self.transport, self.managed = name, ns, transport, managed
        self.node_name = f"{ns}/mobile_vla"
        self.camera_topic = f"{ns}/camera/image_raw" + ("/compressed" if transport == "compressed" else "")
        self.log = Log()
        self.kind = "good"
        self.fmt = "jpeg"
        self.camera_on = threading.Event()
        self.camera_on.set()
        self.proc: subprocess.Popen | None = None
        self.node_log: Path | None = None
        self.cfg: dict = {}
        self.model_faults = 0  # model-fault episodes so far that targeted this node


class Soak:
    def __init__(self, a, targets: list[Target]):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist, TwistStamped
        from lifecycle_msgs.srv import ChangeState
        from mobile_vla_msgs.msg import InferenceStats
        from rcl_interfaces.msg import ParameterEvent
        from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Bool, String

        self.a, self.targets = a, targets
        self.by_name = {t.name: t for t in targets}
        self.Image, self.CompressedImage, self.Twist, self.Bool, self.String = Image, CompressedImage, Twist, Bool, String
        self.sensor_qos = qos_profile_sensor_data
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("mobile_vla_soak")
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_instruction, self.pub_estop, self.clients = {}, {}, {}
        for t in targets:
            # Stamped commands: each is judged at the instant the node published it,
            # not when this (busy, GIL-bound) process got round to reading it.
            self.node.create_subscription(TwistStamped, f"{t.ns}/cmd_vel", lambda m, t=t: self.on_cmd(t, m), reliable)
            self.node.create_subscription(InferenceStats, f"{t.node_name}/inference_stats",
                                          lambda m, t=t: self.on_stats(t, m), reliable)
            self.pub_instruction[t.name] = self.node.create_publisher(String, f"{t.ns}/instruction", 10)
            self.pub_estop[t.name] = self.node.create_publisher(Bool, f"{t.ns}/e_stop", 10)
            self.clients[t.name] = {
                "get": self.node.create_client(GetParameters, f"{t.node_name}/get_parameters"),
                "set": self.node.create_client(SetParameters, f"{t.node_name}/set_parameters"),
                "atomic": self.node.create_client(SetParametersAtomically, f"{t.node_name}/set_parameters_atomically"),
            }
            if t.managed:
                self.clients[t.name]["change_state"] = self.node.create_client(ChangeState, f"{t.node_name}/change_state")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diag, reliable)
        self.node.create_subscription(ParameterEvent, "/parameter_events", self.on_param_event, reliable)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        base = PILImage.open(ROOT / "models/samples/00_light_left.png").convert("RGB").resize((640, 480))
        self.base = np.asarray(base)
        self.raw_frames = {k: self.make_raw(k) for k in ["good", "corrupt", "corrupt_step", "truncated", "oversized",
                                                        *MARKERS]}
        self.compressed_frames = self.make_compressed()
        self.stop = threading.Event()
        # Publishers that come and go live on a node no executor spins: rclpy's
        # executor must never see an entity destroyed under it.
        self.pubs = rclpy.create_node("mobile_vla_soak_sources")
        self.pub_lock = threading.Lock()
        self.cam_pub = {t.name: self.make_camera_pub(t) for t in targets}
        self.seq = 0
        self.last_frame_at, self.camera_gaps = 0.0, []
        self.camera_thread: threading.Thread | None = None
        self.param_episodes = 0
        self.counts = {"raw": 0, "jpeg": 0, "png": 0, "malformed compressed": 0}

    def make_camera_pub(self, t: Target):
        msg = self.Image if t.transport == "raw" else self.CompressedImage
        return self.pubs.create_publisher(msg, t.camera_topic, self.sensor_qos)

    def make_raw(self, kind: str):
        m = self.Image(height=480, width=640, encoding="rgb8", step=640 * 3)
        px = self.base.copy()
        if kind in MARKERS:
            px[:64, :64] = MARKERS[kind]
        data = px.tobytes()
        if kind == "corrupt":
            m.encoding = "bgr16"  # an encoding the node does not know
        elif kind == "corrupt_step":
            m.step = 100  # a row stride shorter than a row
        elif kind == "truncated":
            data = data[: len(data) // 3]
        elif kind == "oversized":
            m.width, m.height, m.step = 5000, 5000, 15000
            data = data[:4096]
        m.data = data
        return m

    def make_compressed(self) -> dict:
        """Messages by (kind, format); a list where a kind takes turns among several."""
        rng = random.Random(1234)

        def encode(px: np.ndarray, fmt: str) -> bytes:
            buf = io.BytesIO()
            PILImage.fromarray(px).save(buf, "JPEG", quality=90) if fmt == "jpeg" else \
                PILImage.fromarray(px).save(buf, "PNG")
            return buf.getvalue()

        def msg(fmt: str, data: bytes):
            return self.CompressedImage(format=fmt, data=data)

        out: dict = {}
        for kind in ["good", *MARKERS]:
            px = self.base.copy()
            if kind in MARKERS:
                px[:64, :64] = MARKERS[kind]
            for fmt in ("jpeg", "png"):
                out[(kind, fmt)] = [msg(fmt, encode(px, fmt))]
        jpeg = bytes(out[("good", "jpeg")][0].data)
        png = bytes(out[("good", "png")][0].data)
        out[("jpeg_truncated", "jpeg")] = [msg("jpeg", jpeg[: len(jpeg) // 2])]
        out[("jpeg_truncated_eoi", "jpeg")] = [msg("jpeg", jpeg[: len(jpeg) // 2] + b"\xff\xd9")]
        out[("jpeg_soi_noise_eoi", "jpeg")] = [
            msg("jpeg", b"\xff\xd8" + bytes(rng.getrandbits(8) for _ in range(376)) + b"\xff\xd9") for _ in range(4)]
        garbage = []
        for fmt in ("jpeg", "png", "bmp"):
            data = bytes(rng.getrandbits(8) for _ in range(4096))
            while data.startswith(b"\xff\xd8") or data.startswith(b"\x89PNG"):
                data = bytes(rng.getrandbits(8) for _ in range(4096))
            garbage.append(msg(fmt, data))
        out[("garbage", "jpeg")] = out[("garbage", "png")] = garbage
        out[("png_16bit", "png")] = [msg("png", png16(self.base))]
        out[("png_truncated", "png")] = [msg("png", png[: len(png) // 2])]
        return out

    # --- observing ---
    def on_cmd(self, t: Target, m) -> None:
        with t.log.lock:
            stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            t.log.cmds.append((stamp, m.twist.linear.x, m.twist.linear.y, m.twist.angular.z))

    def on_stats(self, t: Target, m) -> None:
        with t.log.lock:
            stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            t.log.stats.append((time.time(), m.header.frame_id, m.policy, m.outcome, m.command_seq,
                                m.stamp_to_publish_ms, stamp, m.action.linear.y))

    def on_diag(self, m) -> None:
        # Both nodes publish /diagnostics; the camera status names the node's camera topic.
        stamp = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        cam = next((s.hardware_id for s in m.status if s.name == "mobile_vla: camera"), "")
        wd = next((s for s in m.status if s.name == "mobile_vla: policy watchdog"), None)
        # (as configured: relative, the transport's sub-topic included)
        target = self.by_name["compressed" if cam.endswith("/compressed") else "raw"] if cam else None
        if target is None or wd is None:
            return
        v = {kv.key: kv.value for kv in wd.values}
        with target.log.lock:
            target.log.diag.append((stamp, v.get("hybrid.state", ""), float(v.get("hybrid.cooldown_s", "nan")),
                                    int(v.get("hybrid.failures", "0") or 0)))

    def on_param_event(self, m) -> None:
        t = next((t for t in self.targets if m.node == t.node_name), None)
        if t is not None:
            names = [p.name for p in list(m.new_parameters) + list(m.changed_parameters) + list(m.deleted_parameters)]
            with t.log.lock:
                t.log.param_events.append((time.time(), names))

    # --- acting ---
    def camera(self) -> None:
        period, t0, i = 1.0 / RATE_HZ, time.time(), 0
        turn = 0
        while not self.stop.is_set():
            i += 1
            wait = t0 + i * period - time.time()
            if wait > 0:
                time.sleep(wait)
            now = time.time()
            if self.last_frame_at:
                self.camera_gaps.append(now - self.last_frame_at)
            self.last_frame_at = now
            self.seq += 1
            turn += 1
            stamp = self.node.get_clock().now().to_msg()
            t_stamp = stamp.sec + stamp.nanosec * 1e-9
            for t in self.targets:
                if not t.camera_on.is_set():
                    continue
                kind, fmt = t.kind, t.fmt
                if t.transport == "raw":
                    m = self.raw_frames["corrupt_step" if kind == "corrupt" and self.seq % 2 else kind]
                    self.counts["raw"] += 1
                else:
                    choices = self.compressed_frames[(kind, fmt)]
                    m = choices[turn % len(choices)]
                    self.counts["malformed compressed" if kind in REFUSED else fmt] += 1
                m.header.frame_id = f"{self.seq}:{kind}"
                m.header.stamp = stamp
                with self.pub_lock:
                    if t.camera_on.is_set():
                        self.cam_pub[t.name].publish(m)
                        # When it left: after the stamp by as long as this thread took to get here.
                        with t.log.lock:
                            t.log.frames.append((self.seq, t_stamp, kind, m.format if t.transport != "raw" else "raw",
                                                 time.time()))

    def say(self, text: str, targets=None) -> None:
        for t in targets or self.targets:
            self.pub_instruction[t.name].publish(self.String(data=text))
            with t.log.lock:
                t.log.instructions.append((time.time(), text))

    def call(self, t: Target, which: str, request, timeout: float = 10.0):
        """A service call: (response or None, time sent, time answered)."""
        client = self.clients[t.name][which]
        if not client.wait_for_service(timeout_sec=30):
            return None, time.time(), time.time()
        answered = []
        sent = time.time()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: answered.append(time.time()))
        end = sent + timeout
        while not future.done() and time.time() < end:
            time.sleep(0.002)
        if not future.done():
            return None, sent, time.time()
        while not answered:
            time.sleep(0.001)
        return future.result(), sent, answered[0]

    def get_params(self, t: Target, names: list[str]) -> list:
        from rcl_interfaces.srv import GetParameters
        r, _, _ = self.call(t, "get", GetParameters.Request(names=names))
        return [param_value(v) for v in r.values] if r is not None else None

    def change_state(self, t: Target, transition: int, timeout: float = 30.0):
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        r, sent, answered = self.call(t, "change_state", ChangeState.Request(transition=Transition(id=transition)),
                                      timeout)
        return (r is not None and r.success), sent, answered

    def hybrid_pending(self, t: Target) -> float:
        """The cool-down of a hybrid failure not yet followed by a hybrid run that drove, else 0."""
        with t.log.lock:
            fails = hybrid_failures(t.log)
            drove = [s[6] + s[5] * 1e-3 for s in t.log.stats if s[2] == "hybrid" and s[3] == 0 and s[4]]
        if not fails:
            return 0.0
        last_t, cooldown, _ = fails[-1]
        return cooldown if not drove or max(drove) < last_t else 0.0

    def episode(self, kind: str, n: int) -> Episode:
        raw, comp = self.by_name["raw"], self.by_name["compressed"]
        if kind in RAW_FAULTS:
            targets = (raw,)
        elif kind in COMPRESSED_FAULTS or kind in LIFECYCLE:
            targets = (comp,)
        elif kind in MARKERS:
            targets = ((raw, comp)[(raw.model_faults + comp.model_faults) % 2],)
            targets[0].model_faults += 1
        else:
            targets = (raw, comp)
        # The compressed camera's phase: the malformed kinds pick their format, the rest take turns.
        comp.fmt = "jpeg" if kind in JPEG_FAULTS else "png" if kind in PNG_FAULTS else ("jpeg", "png")[n % 2]
        ep = Episode(kind, tuple(t.name for t in targets), time.time(), fmt=comp.fmt)
        if kind in REFUSED:
            t = targets[0]
            t.kind = kind
            time.sleep(1.5)
            t.kind = "good"
            t.log.bad_input.append((ep.start, time.time()))
        elif kind in MARKERS:
            t = targets[0]
            t.kind = kind
            time.sleep(1.0 if kind == "hang" else 1.5)
            t.kind = "good"
        elif kind == "camera_gone":
            with self.pub_lock:
                for t in targets:
                    t.camera_on.clear()
                    self.pubs.destroy_publisher(self.cam_pub[t.name])
            time.sleep(2.0)
            with self.pub_lock:
                for t in targets:
                    self.cam_pub[t.name] = self.make_camera_pub(t)
            # Frames are judged again once the node has matched the new publisher
            # (frames sent before that are lost to discovery, not to the node).
            deadline = time.time() + 10
            while time.time() < deadline and not all(self.cam_pub[t.name].get_subscription_count() for t in targets):
                time.sleep(0.01)
            for t in targets:
                t.log.bad_input.append((ep.start, time.time()))
                t.camera_on.set()
            ep.judge_from = {t.name: time.time() for t in targets}
        elif kind == "teleop":
            joys = [self.pubs.create_publisher(self.Twist, f"{t.ns}/joy_vel", 10) for t in targets]
            tw = self.Twist()
            tw.linear.x = TELEOP_X
            end = time.time() + 1.5
            while time.time() < end:
                for joy in joys:
                    joy.publish(tw)
                time.sleep(0.05)
            for joy in joys:
                self.pubs.destroy_publisher(joy)  # mid-stream: no zero, no goodbye
            t_stop = time.time()
            for t in targets:
                t.log.teleop.append((ep.start, t_stop))
                ep.judge_from[t.name] = t_stop + t.cfg["mux"]["sources"]["joystick"]["timeout_s"] + GRACE
        elif kind == "churn":
            choices = ["move right", "stop", "", "move left", "go forward", "turn around"]
            end = time.time() + 2.0
            while time.time() < end:
                self.say(random.choice(choices))
                time.sleep(0.08)
            self.say("move left")
        elif kind == "estop":
            for t in targets:
                self.pub_estop[t.name].publish(self.Bool(data=True))
                t.log.estop.append((time.time(), True))
            time.sleep(1.5)
            for t in targets:
                self.pub_estop[t.name].publish(self.Bool(data=False))
                t.log.estop.append((time.time(), False))
        elif kind == "params":
            self.params_episode(targets, ep, n)
        elif kind in LIFECYCLE:
            self.lifecycle_episode(targets[0], ep)
        ep.end = time.time()
        for t in targets:
            ep.judge_from.setdefault(t.name, ep.end)
        if kind in MARKERS:
            ep.hold_until = ep.end + targets[0].cfg["watchdog"]["hard_timeout_s"]
        return ep

    def params_episode(self, targets, ep: Episode, n: int) -> None:
        from rcl_interfaces.msg import Parameter
        from rcl_interfaces.srv import SetParameters, SetParametersAtomically
        variants = [
            ("a negative limit", "set", [("limits.max_velocity", [0.5, -1.0, 1.0])]),
            ("a hard timeout below its range", "set", [("watchdog.hard_timeout_s", 0.01)]),
            ("a read-only parameter", "set", [("policy.hybrid.manifest", "models/pure.json")]),
            ("a valid limit beside a negative age, atomically", "atomic",
             [("limits.max_velocity", [0.5, 0.12, 1.0]), ("camera.max_age_s", -1.0)]),
        ]
        why, service, values = variants[self.param_episodes % len(variants)]
        self.param_episodes += 1
        ep.detail["refused"] = why
        params = [Parameter(name=k, value=to_value(v)) for k, v in values]
        names = [k for k, _ in values]
        for t in targets:
            rec = {"why": why, "names": names, "proposed": [v for _, v in values], "episode_start": ep.start}
            rec["before"] = self.get_params(t, names)
            req = (SetParameters.Request(parameters=params) if service == "set"
                   else SetParametersAtomically.Request(parameters=params))
            r, rec["refused_sent"], rec["refused_answer"] = self.call(t, service, req)
            results = ([] if r is None else list(r.results) if service == "set" else [r.result])
            rec["refused_ok"] = r is not None and not any(x.successful for x in results) and all(x.reason for x in results)
            rec["refused_reason"] = "; ".join(x.reason for x in results)
            rec["after"] = self.get_params(t, names)
            t.log.params.append(rec)
        time.sleep(0.7)  # healthy frames keep coming: the output must be what it was
        default = targets[0].cfg["limits"]["max_velocity"]
        clamped = [default[0], PARAM_Y, default[2]]
        for stage, limits, pause in (("valid", clamped, 1.0), ("restore", default, 0.0)):
            for t in targets:
                rec = t.log.params[-1]
                req = SetParameters.Request(parameters=[Parameter(name="limits.max_velocity", value=to_value(limits))])
                r, sent, answered = self.call(t, "set", req)
                ok = r is not None and r.results[0].successful
                rec[f"{stage}_sent"], rec[f"{stage}_answer"], rec[f"{stage}_ok"] = sent, answered, ok
                rec[f"{stage}_reason"] = r.results[0].reason if r is not None else "no answer"
                rec[f"{stage}_value"] = self.get_params(t, ["limits.max_velocity"])
                if ok:
                    t.log.limits.append((sent, answered, list(limits)))
            time.sleep(pause)

    def lifecycle_episode(self, t: Target, ep: Episode) -> None:
        from lifecycle_msgs.msg import Transition
        rec = {"kind": ep.kind, "failed": []}
        ok, rec["deactivate_sent"], rec["deactivate_answer"] = self.change_state(t, Transition.TRANSITION_DEACTIVATE)
        if not ok:
            rec["failed"].append("deactivate")
        if ep.kind == "lifecycle_pause":
            time.sleep(1.5)
        else:
            time.sleep(0.3)
            ok, _, answered = self.change_state(t, Transition.TRANSITION_CLEANUP)
            if not ok:
                rec["failed"].append("cleanup")
            t.log.reloads.append(answered)
            ok, _, rec["configure_answer"] = self.change_state(t, Transition.TRANSITION_CONFIGURE, 60)
            if not ok:
                rec["failed"].append("configure")
            # A cleaned-up node is a fresh one: it has no instruction until it is given one.
            self.say("move left", [t])
            time.sleep(0.2)
        ok, rec["activate_sent"], rec["activate_answer"] = self.change_state(t, Transition.TRANSITION_ACTIVATE)
        if not ok:
            rec["failed"].append("activate")
        t.log.inactive.append(rec)
        ep.detail = rec
        ep.judge_from[t.name] = rec["activate_answer"]

    def close(self) -> None:
        self.stop.set()
        if self.camera_thread:
            self.camera_thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        self.pubs.destroy_node()
        self.rclpy.shutdown()


def png16(px: np.ndarray) -> bytes:
    """A valid 16-bit RGB PNG of `px` (PIL writes no 16-bit RGB)."""
    h, w, _ = px.shape
    rows = (px.astype(">u2") * 257).reshape(h, w * 3)
    raw = b"".join(b"\x00" + r.tobytes() for r in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def to_value(v):
    from rcl_interfaces.msg import ParameterType, ParameterValue
    if isinstance(v, list):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(x) for x in v])
    if isinstance(v, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(v))


def param_value(v):
    from rcl_interfaces.msg import ParameterType
    return {ParameterType.PARAMETER_DOUBLE_ARRAY: lambda: [float(x) for x in v.double_array_value],
            ParameterType.PARAMETER_STRING: lambda: v.string_value,
            ParameterType.PARAMETER_DOUBLE: lambda: v.double_value,
            ParameterType.PARAMETER_INTEGER: lambda: v.integer_value,
            ParameterType.PARAMETER_BOOL: lambda: v.bool_value}.get(v.type, lambda: None)()


def hybrid_failures(log: Log) -> list[tuple[float, float, bool]]:
    """(time, cool-down s, exact) of every hybrid failure. /diagnostics counts them
    (`hybrid.failures`): a failure of the healthy hybrid switches to the fallback and
    is published at once, stamped by the node at the switch (exact); one without a
    switch (a failed probe, or a run during the cool-down on a frame queued before
    the failure, both restarting the cool-down) shows in the next 1 Hz message, so
    its time is late by up to a second, as is the receipt of a hybrid run with an
    invalid or cancelled outcome, also counted. Late times only loosen the bound on
    the hybrid's return; only exact ones bound it from below. A cleanup starts the
    watchdog (and its count) afresh."""
    out, last_state, last_n, cooldown = [], "", None, float("nan")
    events = [(d[0], 0, d[1], d[2], d[3]) for d in log.diag] + \
             [(t, 1, "", 0.0, 0) for t, _, pol, o, *_ in log.stats if pol == "hybrid" and o != 0]
    for t, what, state, c, n in sorted(events):
        if what == 0:
            if math.isfinite(c):
                cooldown = c
            if last_n is not None and n > last_n:
                out.append((t, cooldown, state == "cooling down" and last_state == "healthy"))
            last_n, last_state = n, state
        else:
            out.append((t, cooldown, False))
    return out


def diag_increments(log: Log, exact: bool) -> int:
    """How many hybrid failures /diagnostics counted with (exact) or without a switch."""
    n, last_state, last_n = 0, "", None
    for _, state, _, count in sorted(log.diag):
        if last_n is not None and count > last_n:
            n += (state == "cooling down" and last_state == "healthy") == exact
        last_n, last_state = count, state
    return n


def rss_mb(pid: int) -> tuple:
    v = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, rest = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            v[k] = int(rest.split()[0]) / 1024
    return tuple(v.get(k, float("nan")) for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"))


def start_node(t: Target, work: Path, launch_prefix: str) -> subprocess.Popen:
    share = share_dir()
    cmd = [sys.executable, str(ROOT / "scripts/launch_xml.py"), str(share / "launch/mobile_vla.launch.xml"),
           f"params_file:={work / f'params_{t.name}.yaml'}"]
    if launch_prefix:
        cmd.append(f"launch_prefix:={launch_prefix.format(node=t.name, work=work)}")
    if t.ns:
        cmd.append(f"namespace:={t.ns.strip('/')}")
    if t.managed:
        cmd.append("managed:=true")
    t.node_log = work / f"node_{t.name}.log"
    return subprocess.Popen(cmd, stdout=open(t.node_log, "wb"), stderr=subprocess.STDOUT)


def soak_params(path: Path, transport: str) -> dict:
    p = yaml.safe_load((share_dir() / "config/mobile_vla.yaml").read_text())
    rp = p["mobile_vla"]["ros__parameters"]
    rp["policy"]["hybrid"]["manifest"] = "models/faulty_injectable.json"
    rp["output"]["stamped"] = True
    rp["camera"]["transport"] = transport
    path.write_text(yaml.safe_dump(p))
    return rp


def analyse(t: Target, episodes: list[Episode], t_start: float, t_end: float) -> dict:
    """Every command of one node checked against what was true when it was published,
    and every healthy frame it was sent checked for its answer."""
    log, cfg = t.log, t.cfg
    cmd_timeout = cfg["policy"]["command_timeout_s"]
    max_age_ms = cfg["camera"]["max_age_s"] * 1e3
    default_limits = cfg["limits"]["max_velocity"]
    teleop_timeout = cfg["mux"]["sources"]["joystick"]["timeout_s"]
    faults: list[str] = []
    problems: list[str] = []
    mine = [e for e in episodes if t.name in e.targets]

    def moving(c) -> bool:
        return any(abs(v) > 1e-9 for v in c[1:])

    def limits_at(s: float) -> list:
        cur = list(default_limits)
        for sent, answered, new in log.limits:
            if s >= answered:
                cur = list(new)
            elif s >= sent:  # being applied: either is right
                cur = [max(a, b) for a, b in zip(cur, new)]
        return cur

    cmds = sorted(log.cmds)
    for c in cmds:
        if not all(math.isfinite(v) for v in c[1:]):
            faults.append(f"non-finite command at {c[0]:.2f}")
        elif any(abs(v) > lim + 1e-6 for v, lim in zip(c[1:], limits_at(c[0]))):
            faults.append(f"command over the limits in force at {c[0]:.2f}: {c[1:]}")
    stamps = [c[0] for c in cmds]  # the node stamps in order

    def between(t0: float, t1: float):
        return cmds[bisect.bisect_right(stamps, t0):bisect.bisect_left(stamps, t1)]

    # The e-stop: zero within GRACE of engaging, and from the first zero on, nothing moves until the release.
    reaction = []
    for (t_on, _), (t_off, _) in zip(log.estop[0::2], log.estop[1::2]):
        window = between(t_on, t_off)
        first_zero = next((i for i, c in enumerate(window) if not moving(c)), len(window))
        if first_zero < len(window):
            reaction.append(window[first_zero][0] - t_on)
        faults += [f"motion {c[0] - t_on:.3f} s into the e-stop" for i, c in enumerate(window)
                   if moving(c) and (i > first_zero or c[0] > t_on + GRACE)]
    # Only refused frames, or none: once the command timeout has passed, zero.
    for t0, t1 in log.bad_input:
        faults += [f"motion {c[0] - t0:.2f} s into bad/no camera input" for c in between(t0 + cmd_timeout + GRACE, t1)
                   if moving(c)]
    # The joystick, gone mid-stream: its command must not outlive its timeout
    # (judged until the next joystick starts: shuffled cycles can put two teleop episodes back to back).
    # Its command is exactly (TELEOP_X, 0, 0): a policy's command ramping through
    # the acceleration limits passes near TELEOP_X on its way (churn did, in CI).
    starts = [t_start for t_start, _ in log.teleop[1:]] + [math.inf]
    for (_, t_stop), t_next in zip(log.teleop, starts):
        faults += [f"joystick command {c[0] - t_stop:.2f} s after its publisher vanished"
                   for c in between(t_stop + teleop_timeout + GRACE, min(t_stop + 5, t_next))
                   if abs(c[1] - TELEOP_X) < 1e-9 and c[2] == 0.0 and c[3] == 0.0]

    # The instruction: nothing against the one in force. The node may not have
    # heard of an instruction for up to GRACE, so a command is judged against
    # the one sent GRACE before it and every one sent since, and is a fault only
    # if it contradicts all of them. No task or "stop": no motion at all;
    # "left"/"right": no strafe the other way; anything else: no strafe.
    def contradicts(text: str, c) -> bool:
        y = c[2]
        if not text.strip() or "stop" in text:
            return moving(c)
        if "left" in text:
            return y < -1e-9
        if "right" in text:
            return y > 1e-9
        return abs(y) > 1e-9

    ins = sorted(log.instructions)
    ins_t = [x for x, _ in ins]
    for c in cmds:
        i = bisect.bisect_right(ins_t, c[0] - GRACE)
        j = bisect.bisect_right(ins_t, c[0])
        candidates = ([ins[i - 1][1]] if i > 0 else [""]) + [text for _, text in ins[i:j]]
        if all(contradicts(text, c) for text in candidates):
            faults.append(f"command {c[1:]} against the instruction {candidates[-1]!r}")

    # Lifecycle: after deactivation one zero at most, nothing after it, no motion;
    # no run on a frame that arrived while inactive drives.
    sent_at = {f"{seq}:{kind}": sent for seq, _stamp, kind, _fmt, sent in log.frames}
    for rec in log.inactive:
        d_ans, a_sent = rec["deactivate_answer"], rec["activate_sent"]
        window = between(rec["deactivate_sent"], a_sent)
        faults += [f"motion {c[0] - d_ans:.2f} s into the inactive state ({rec['kind']})"
                   for c in window if moving(c) and c[0] > d_ans]
        late = [c for c in window if c[0] > d_ans + GRACE]
        if late:
            faults.append(f"{len(late)} commands published while inactive ({rec['kind']})")
        if len([c for c in window if not moving(c)]) > 1:
            problems.append(f"{rec['kind']} at {d_ans:.1f}: more than one zero on deactivation")
        # A frame is sent while inactive when it was published (not only stamped: this
        # peer's camera thread stamps, then publishes to the raw node first) before
        # the activation was requested.
        for s in log.stats:
            if s[4] and d_ans < s[6] and sent_at.get(s[1], s[6]) < a_sent:
                faults.append(f"frame {s[1]}, sent while inactive, drove after activation ({rec['kind']})")
        if rec["failed"]:
            problems.append(f"{rec['kind']} at {d_ans:.1f}: {', '.join(rec['failed'])} failed")

    # Runs: an invalid, cancelled or stale run never drives, nor does a frame the node must refuse.
    for _, frame_id, policy, outcome, command_seq, s2p, _, _ in log.stats:
        kind = frame_id.split(":")[-1]
        if command_seq and outcome != 0:
            faults.append(f"frame {frame_id}: a {policy} run with outcome {outcome} drove")
        if command_seq and s2p > max_age_ms:
            faults.append(f"frame {frame_id}: drove with a frame {s2p:.0f} ms old")
        if command_seq and policy == "hybrid" and kind in MARKERS:
            faults.append(f"frame {frame_id}: the faulty hybrid run drove")
        if command_seq and kind in REFUSED:
            faults.append(f"frame {frame_id}: a frame the node must refuse drove")

    # Parameters: the refused set changes nothing, the valid one takes effect at once.
    for rec in log.params:
        label = f"params ({rec['why']}) at {rec['refused_sent'] - t_start:.1f} s"
        if not rec["refused_ok"]:
            problems.append(f"{label}: not refused with a reason: {rec['refused_reason']!r}")
        if rec["after"] != rec["before"]:
            problems.append(f"{label}: the refused set changed {rec['names']}: {rec['before']} -> {rec['after']}")
        t_valid = rec.get("valid_sent", rec["refused_answer"] + 1)
        if any(rec["refused_sent"] <= e < t_valid for e, _ in log.param_events):
            problems.append(f"{label}: the refused set was announced on /parameter_events")
        # The refused set proposed no limit the output could show, or one it must not show.
        proposed = [v for k, v in zip(rec["names"], rec["proposed"]) if k == "limits.max_velocity" and v[1] > 0]
        changed = [c for c in between(rec["refused_sent"], t_valid) for v in proposed if abs(c[2] - v[1]) < 1e-6]
        if changed:
            faults.append(f"{label}: the output changed during the refused set: {changed[0][1:]}")
        if not rec.get("valid_ok"):
            problems.append(f"{label}: the valid set failed: {rec.get('valid_reason')!r}")
            continue
        if rec["valid_value"] != [[default_limits[0], PARAM_Y, default_limits[2]]]:
            problems.append(f"{label}: limits.max_velocity reads {rec['valid_value']} after the valid set")
        if not any(rec["valid_sent"] <= e and "limits.max_velocity" in names for e, names in log.param_events):
            problems.append(f"{label}: the valid set was not announced on /parameter_events")
        va = rec["valid_answer"]
        if not any(abs(c[2] - PARAM_Y) < 1e-6 for c in between(va, va + ANSWER_S + 0.1)):
            problems.append(f"{label}: the valid limit did not clamp the commands within {ANSWER_S} s")
        if not rec.get("restore_ok"):
            problems.append(f"{label}: restoring the default failed: {rec.get('restore_reason')!r}")
        elif not any(c[2] > PARAM_Y + 1e-3 for c in between(rec["restore_answer"], rec["restore_answer"] + ANSWER_S + 0.1)):
            problems.append(f"{label}: the default limit did not lift the clamp within {ANSWER_S} s")

    # Good frames after a fault: each healthy frame is answered by a run on it or
    # a newer frame that drives left, within ANSWER_S of its stamp (after a model
    # fault, of the end of the time a faulty run may still be in flight).
    drove = sorted((int(s[1].split(":")[0]), s[6] + s[5] * 1e-3) for s in log.stats
                   if s[4] and s[3] == 0 and s[7] > LEFT_MIN_Y and s[1].split(":")[0].isdigit())
    seqs = [d[0] for d in drove]
    suffix_min = [math.inf] * (len(drove) + 1)
    for i in range(len(drove) - 1, -1, -1):
        suffix_min[i] = min(drove[i][1], suffix_min[i + 1])
    last_seen = max([s[0] for s in log.stats] + [t_end])
    excused = sorted((e.start, e.judge_from[t.name]) for e in mine)
    ex_start = [x[0] for x in excused]
    starts = [e.start for e in mine]
    answers: dict[str, list] = {}
    unanswered = []
    for seq, stamp, kind, _fmt, _sent in log.frames:
        if kind != "good" or stamp < t_start:
            continue
        k = bisect.bisect_right(ex_start, stamp)
        if k and stamp < excused[k - 1][1]:
            continue  # an episode concerning this node is on
        e = bisect.bisect_right(starts, stamp)
        prev = mine[e - 1] if e else None
        due = max(stamp, prev.hold_until if prev else 0.0) + ANSWER_S
        if due > last_seen - 1.0:
            continue
        if e < len(mine) and due > mine[e].start:
            # The next episode began before this frame's answer was due: its first event
            # (an instruction change, the e-stop, a deactivation) may rightly void the answer.
            continue
        i = bisect.bisect_left(seqs, seq)
        at = suffix_min[i]
        label = prev.kind if prev else "start"
        answers.setdefault(label, []).append(at - stamp if at <= due else None)
        if at > due:
            unanswered.append(f"frame {seq} ({stamp - t_start:.2f} s, after {label}): "
                              + ("never answered" if at == math.inf else f"answered after {at - stamp:.3f} s"))

    # The hybrid's return: after each failure, within its cool-down, the probes
    # and ANSWER_S (plus any time without healthy input), and never before the cool-down.
    hyb = sorted(s[6] + s[5] * 1e-3 for s in log.stats if s[2] == "hybrid" and s[3] == 0 and s[4])
    blocked = sorted((e.start, e.judge_from[t.name]) for e in mine if e.kind != "params")
    probes = (cfg["watchdog"]["recovery_successes"] + 1) / RATE_HZ
    fails = hybrid_failures(log)
    hyb_runs = sorted(x[0] for x in log.stats if x[2] == "hybrid")
    returns, in_cooldown, late = [], 0, 0
    for n, (tf, cooldown, exact) in enumerate(fails):
        nxt = fails[n + 1][0] if n + 1 < len(fails) else math.inf
        reload = next((r for r in log.reloads if r > tf), math.inf)
        h = bisect.bisect_right(hyb, tf)
        back = hyb[h] if h < len(hyb) else math.inf
        if not math.isfinite(cooldown):
            cooldown = cfg["watchdog"]["max_cooldown_s"]
        if exact:
            if back < min(tf + cooldown - 0.2, reload):
                faults.append(f"the hybrid drove {back - tf:.2f} s after failing, within its {cooldown:g} s cool-down")
            # Hybrid runs reported during the cool-down, besides the failing run's own report.
            ran = bisect.bisect_left(hyb_runs, min(tf + cooldown - 0.1, reload)) - bisect.bisect_right(hyb_runs, tf)
            in_cooldown += max(0, ran - 1)
        if min(nxt, reload) < back:
            continue  # failed again (a bad probe) or started afresh first: judged from then
        due = tf + cooldown + probes + ANSWER_S + 0.5
        for _ in range(3):  # time without healthy input does not count
            due = tf + cooldown + probes + ANSWER_S + 0.5 + sum(
                max(0.0, min(b, due) - max(a, tf)) for a, b in blocked)
        if due > last_seen and back == math.inf:
            continue  # the soak ended first
        returns.append(back - tf)
        if back > due:
            late += 1
            problems.append(f"the hybrid failed at {tf - t_start:.1f} s (cool-down {cooldown:g} s) and "
                            + ("never drove again" if back == math.inf else
                               f"drove again only after {back - tf:.1f} s (bound {due - tf:.1f} s)"))

    # Recovery, for the table: from an episode's end to the policy driving left
    # again, and to the hybrid itself driving again.
    for ep in mine:
        k = bisect.bisect_right(stamps, ep.end)
        after = next((c[0] for c in cmds[k:] if c[2] > LEFT_MIN_Y), None)
        ep.recovered_after[t.name] = after - ep.end if after is not None else None
        h = bisect.bisect_right(hyb, ep.end)
        ep.hybrid_after[t.name] = hyb[h] - ep.end if h < len(hyb) else None
    judged = sum(len(v) for v in answers.values())
    answered = sum(x is not None for v in answers.values() for x in v)
    return {"faults": faults, "problems": problems, "estop_reaction_s": reaction, "answers": answers,
            "unanswered": unanswered, "judged": judged, "answered": answered, "hybrid_returns": returns,
            "hybrid_failures": diag_increments(log, exact=True) + diag_increments(log, exact=False),
            "hybrid_runs_in_cooldown": in_cooldown, "hybrid_late": late}


def percentile(v, p) -> float:
    return float(np.percentile(v, p)) if len(v) else float("nan")


def slope_mb_h(rows, col: int, t_from: float) -> float:
    rows = [r for r in rows if r[0] > t_from] or rows
    if len(rows) < 3:
        return float("nan")
    return float(np.polyfit([r[0] for r in rows], [r[col] for r in rows], 1)[0] * 3600)


def level_mb(rows, col: int, t0: float, t1: float) -> float:
    """The median of a memory column between t0 and t1: its level, without the ups and downs of the episodes."""
    v = [r[col] for r in rows if t0 <= r[0] <= t1]
    return float(np.median(v)) if v else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--healthy-s", type=float, default=6.0, help="healthy frames after each episode")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--report", type=Path, help="write the markdown report here (RELIABILITY.md)")
    ap.add_argument("--launch-prefix", default="",
                    help="the launch file's launch_prefix for each node, {node} and {work} substituted: "
                         "e.g. 'heaptrack -o {work}/heap_{node}' (a diagnosis run: timing is not judged fairly)")
    a = ap.parse_args()
    random.seed(a.seed)
    # A thread of this peer dying would leave the nodes unobserved: that ends the soak as invalid.
    peer_errors: list[str] = []
    hook = threading.excepthook
    threading.excepthook = lambda e: (peer_errors.append(f"{e.thread.name}: {e.exc_value!r}"), hook(e))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(share_dir() / "config/fastdds_shm.xml"))
    work = Path(tempfile.mkdtemp(prefix="mobile_vla_soak_"))
    targets = [Target("raw", "", "raw", False), Target("compressed", COMPRESSED_NS, "compressed", True)]
    for t in targets:
        t.cfg = soak_params(work / f"params_{t.name}.yaml", t.transport)
        t.proc = start_node(t, work, a.launch_prefix)
    s = Soak(a, targets)
    s.camera_thread = threading.Thread(target=s.camera, daemon=True)
    s.camera_thread.start()
    episodes: list[Episode] = []
    comp = s.by_name["compressed"]
    t_start = time.time()
    try:
        from lifecycle_msgs.msg import Transition
        for tr in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            ok, _, _ = s.change_state(comp, tr, 60)
            if not ok:
                sys.exit(f"the managed node did not {('configure', 'activate')[tr == Transition.TRANSITION_ACTIVATE]}"
                         f" (exit {comp.proc.poll()}); see {comp.node_log}")
        deadline = time.time() + 60
        last_say = 0.0
        while not all(any(c[2] > LEFT_MIN_Y for c in t.log.cmds) for t in targets):
            if any(t.proc.poll() is not None for t in targets) or time.time() > deadline:
                sys.exit("the nodes never drove (exit " + ", ".join(f"{t.name} {t.proc.poll()}" for t in targets)
                         + f"); see {work}")
            if time.time() - last_say > 1:
                s.say("move left")
                last_say = time.time()
            time.sleep(0.1)
        t_start = time.time()
        end = t_start + a.minutes * 60
        print(f"soak: {a.minutes:g} min at {RATE_HZ:g} Hz, nodes " +
              ", ".join(f"{t.name} pid {t.proc.pid}" for t in targets) + f", logs in {work}", flush=True)
        last_rss = 0.0
        cycle: list[str] = []
        seen: set[str] = set()
        t_warm = None

        def alive() -> bool:
            return all(t.proc.poll() is None for t in targets) and not peer_errors

        def healthy(seconds: float) -> None:
            nonlocal last_rss
            until = time.time() + seconds
            while time.time() < until:
                if time.time() - last_rss > 5:
                    for t in targets:
                        if t.proc.poll() is None:
                            t.log.rss.append((time.time(), *rss_mb(t.proc.pid)))
                    last_rss = time.time()
                time.sleep(0.1)

        while (time.time() < end or len(seen) < len(EPISODES)) and alive():
            if not cycle:
                cycle = random.sample(EPISODES, len(EPISODES))
            kind = cycle.pop()
            seen.add(kind)
            if t_warm is None and len(seen) == len(EPISODES):
                # The first episode of every kind has run: the memory it touches is warm after this one.
                t_warm = time.time() + a.healthy_s
            episodes.append(s.episode(kind, len(episodes)))
            healthy(a.healthy_s)
            done = len(episodes)
            if done % 10 == 0:
                print(f"  {(time.time() - t_start) / 60:5.1f} min: {done} episodes, RSS "
                      + ", ".join(f"{t.name} {t.log.rss[-1][1]:.1f} MB" for t in targets if t.log.rss), flush=True)
        # Healthy frames until every hybrid is back from its last failure (cool-down and probes).
        tail_end = time.time() + max([s.hybrid_pending(t) for t in targets] + [0.0]) + 3.0
        while alive() and time.time() < tail_end and any(s.hybrid_pending(t) for t in targets):
            healthy(0.5)
        healthy(1.5)
        t_end = time.time()
        alive_at_end = {t.name: t.proc.poll() is None for t in targets}
    finally:
        s.close()
        codes = {}
        for t in targets:
            if t.proc.poll() is None:
                t.proc.send_signal(signal.SIGINT)
        for t in targets:
            try:
                codes[t.name] = t.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                t.proc.kill()
                codes[t.name] = t.proc.wait()
    out = summarise(a, s, targets, episodes, t_start, t_end, alive_at_end, codes, t_warm or t_start)
    if not out["passed"]:
        # Everything observed, to re-analyse a failure offline.
        keep = ("cmds", "stats", "frames", "instructions", "estop", "bad_input", "teleop", "diag", "param_events",
                "limits", "params", "inactive", "reloads", "rss")
        dump = {"t_start": t_start, "t_end": t_end, "episodes": [vars(e) for e in episodes],
                "nodes": {t.name: {k: getattr(t.log, k) for k in keep} for t in targets}}
        (work / "observed.json").write_text(json.dumps(dump))
        print(f"everything observed: {work / 'observed.json'}")
    print(json.dumps({k: v for k, v in out.items() if k not in ("faults", "problems", "unanswered")}, indent=1))
    if peer_errors:
        print("the soak's own peer failed, so these results are not valid:", *peer_errors, sep="\n  ")
        return 2
    for f in out["faults"][:20]:
        print("FAULT:", f)
    for f in out["problems"][:20]:
        print("PROBLEM:", f)
    for f in out["unanswered"][:20]:
        print("UNANSWERED:", f)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))
    if a.report:
        write_report(a.report, out)
    return 0 if out["passed"] else 1


def summarise(a, s: Soak, targets, episodes, t_start, t_end, alive_at_end, codes, t_warm) -> dict:
    nodes, faults, problems, unanswered = {}, [], [], []
    answers: dict[str, list] = {}
    for t in targets:
        r = analyse(t, episodes, t_start, t_end)
        text = t.node_log.read_text(errors="replace")
        crashes = (0 if alive_at_end[t.name] else 1) + text.count("panic") + (0 if codes[t.name] == 0 else 1)
        faults += [f"{t.name}: {f}" for f in r["faults"]]
        problems += [f"{t.name}: {p}" for p in r["problems"]]
        unanswered += [f"{t.name}: {u}" for u in r["unanswered"]]
        for k, v in r["answers"].items():
            answers.setdefault(k, []).extend(v)
        hybrid = [(x[0], x[5]) for x in t.log.stats if x[2] == "hybrid" and x[3] == 0 and x[4]]
        tenth = (t_end - t_start) / 10
        first = [v for x, v in hybrid if x < t_start + tenth]
        last = [v for x, v in hybrid if x > t_end - tenth]
        rss = t.log.rss
        nodes[t.name] = {
            "transport": t.transport, "managed": t.managed, "frames": len(t.log.frames), "commands": len(t.log.cmds),
            "runs": len(t.log.stats), "attributable_commands": len(r["faults"]), "problems": len(r["problems"]),
            "good_frames_judged": r["judged"], "good_frames_answered": r["answered"],
            "hybrid_failures": r["hybrid_failures"], "hybrid_returns_judged": len(r["hybrid_returns"]),
            "hybrid_runs_in_cooldown": r["hybrid_runs_in_cooldown"], "hybrid_late": r["hybrid_late"],
            "hybrid_return_max_s": max(r["hybrid_returns"], default=float("nan")),
            "crashes": crashes, "exit_code": codes[t.name], "warnings": sum(" WARN " in x for x in text.splitlines()),
            "rss_start_mb": rss[0][1] if rss else float("nan"), "rss_end_mb": rss[-1][1] if rss else float("nan"),
            "rss_max_mb": max((x[1] for x in rss), default=float("nan")),
            "rss_slope_mb_per_h": slope_mb_h(rss, 1, t_warm), "rss_anon_start_mb": rss[0][2] if rss else float("nan"),
            "rss_anon_end_mb": rss[-1][2] if rss else float("nan"), "rss_anon_slope_mb_per_h": slope_mb_h(rss, 2, t_warm),
            # The anonymous memory's level (median) in the 5 minutes after the warm-up and in the last 5.
            "rss_anon_warm_mb": level_mb(rss, 2, t_warm, t_warm + 300),
            "rss_anon_last_mb": level_mb(rss, 2, t_end - 300, t_end),
            "warm_after_s": t_warm - t_start,
            "rss_shmem_end_mb": rss[-1][4] if rss else float("nan"), "rss_file_end_mb": rss[-1][3] if rss else float("nan"),
            "rss_trace": [[round(x[0] - t_start, 1), *(round(v, 2) for v in x[1:])] for x in rss],
            "latency_first_p50_ms": percentile(first, 50), "latency_first_p99_ms": percentile(first, 99),
            "latency_last_p50_ms": percentile(last, 50), "latency_last_p99_ms": percentile(last, 99),
            "estop_reaction_max_s": max(r["estop_reaction_s"], default=float("nan")),
        }
    judged = sum(n["good_frames_judged"] for n in nodes.values())
    answered = sum(n["good_frames_answered"] for n in nodes.values())
    per_kind = {}
    for k in EPISODES:
        eps = [e for e in episodes if e.kind == k]
        rec = [v for e in eps for v in e.recovered_after.values()]
        ok = [x for x in rec if x is not None]
        hyb = [v for e in eps for v in e.hybrid_after.values() if v is not None]
        ans = answers.get(k, [])
        got = [x for x in ans if x is not None]
        per_kind[k] = {"episodes": len(eps), "nodes": sorted({n for e in eps for n in e.targets}),
                       "good_frames_judged": len(ans), "good_frames_answered": len(got),
                       "answer_max_s": max(got, default=float("nan")),
                       "never_recovered": len(rec) - len(ok),
                       "recovery_p50_s": percentile(ok, 50), "recovery_max_s": max(ok, default=float("nan")),
                       "hybrid_back_p50_s": percentile(hyb, 50), "hybrid_back_max_s": max(hyb, default=float("nan")),
                       "hybrid_never_back": len(rec) - len(hyb)}
    crashes = sum(n["crashes"] for n in nodes.values())
    pct = 100.0 * answered / judged if judged else float("nan")
    out = {
        "minutes": (t_end - t_start) / 60, "rate_hz": RATE_HZ, "frames_sent": s.seq, "frames": dict(s.counts),
        "commands": sum(n["commands"] for n in nodes.values()), "runs": sum(n["runs"] for n in nodes.values()),
        "episodes": len(episodes),
        "attributable_commands": len(faults), "faults": faults[:50],
        "good_frames_judged": judged, "good_frames_answered": answered, "good_after_fault_pct": pct,
        "answer_bound_s": ANSWER_S, "unanswered": unanswered[:50],
        "hybrid_failures": sum(n["hybrid_failures"] for n in nodes.values()),
        "hybrid_returns_judged": sum(n["hybrid_returns_judged"] for n in nodes.values()),
        "hybrid_runs_in_cooldown": sum(n["hybrid_runs_in_cooldown"] for n in nodes.values()),
        "hybrid_late": sum(n["hybrid_late"] for n in nodes.values()),
        "problems": problems[:50], "problem_count": len(problems),
        "crashes": crashes, "exit_code": max(abs(c) for c in codes.values()),
        "camera_gap_p99_ms": percentile(s.camera_gaps, 99) * 1e3,
        "camera_gap_max_ms": max(s.camera_gaps, default=float("nan")) * 1e3,
        "estop_reaction_max_s": max(n["estop_reaction_max_s"] for n in nodes.values()),
        "nodes": nodes, "per_kind": per_kind,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:],
    }
    out["passed"] = (not faults and not problems and judged > 0 and answered == judged and crashes == 0
                     and out["exit_code"] == 0)
    return out


def write_report(path: Path, r: dict) -> None:
    def f2(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    rows = "\n".join(
        f"| {k} | {', '.join(v['nodes'])} | {v['episodes']} | {v['good_frames_answered']}/{v['good_frames_judged']} "
        f"| {f2(v['answer_max_s'] * 1e3 if v['good_frames_answered'] else None)} "
        f"| {f2(v['recovery_p50_s'])} | {f2(v['recovery_max_s'])} | {v['never_recovered']} "
        f"| {f2(v['hybrid_back_p50_s'])} | {f2(v['hybrid_back_max_s'])} |"
        for k, v in r["per_kind"].items())
    n = r["nodes"]
    node_rows = "\n".join(
        f"| {name} ({v['transport']}{', managed' if v['managed'] else ''}) | {v['frames']} | {v['commands']} "
        f"| {v['attributable_commands']} | {v['good_frames_answered']}/{v['good_frames_judged']} "
        f"| {v['hybrid_returns_judged']} of {v['hybrid_failures']} | {v['crashes']} (exit {v['exit_code']}) "
        f"| {v['rss_start_mb']:.1f} -> {v['rss_end_mb']:.1f} MB, {v['rss_slope_mb_per_h']:+.2f} MB/h "
        f"| {v['rss_anon_start_mb']:.1f} -> {v['rss_anon_end_mb']:.1f} MB, {v['rss_anon_slope_mb_per_h']:+.2f} MB/h |"
        for name, v in n.items())
    episodes_per_kind = ", ".join(f"{k} {v['episodes']}" for k, v in r["per_kind"].items())
    # The hand-written notes below the marker survive a rerun.
    notes = path.read_text().split(NOTES, 1)[1] if path.exists() and NOTES in path.read_text() else "\n"
    argv = []
    for a in r["argv"]:  # the command as it reproduces the report: without where the JSON went
        if argv and argv[-1] == "--json":
            argv.pop()
        else:
            argv.append(a)
    fr = r["frames"]
    raw, comp = n["raw"], n["compressed"]
    path.write_text(f"""# Reliability: the fault-injection soak

Written by `python3 scripts/soak.py {' '.join(argv)}` (after `source env.sh`) on {r['date']},
{r['machine']}. Reproduce with the same command; `tests/test_soak.py` runs a
two-minute version of it in CI and fails on any attributable command, any
unanswered good frame, any failed parameter or lifecycle check, a late
hybrid, or a crash.

Two nodes run from the launch file with the shipped parameters and the hybrid
slot on `models/faulty_injectable.json` (the healthy hybrid stand-in, except
that a marker in a frame's corner makes that run return an infinite action,
run past its deadline or hang until cancelled); the pure stand-in is the
fallback. `raw` is the default node, fed 640x480 rgb8 `Image` frames;
`compressed` runs in the namespace `/compressed` with
`camera.transport: compressed`, as a managed node (`managed:=true`), fed the
same scene as JPEG and PNG `CompressedImage` frames (phases of one episode and
the healthy frames after it). Both cameras run at {r['rate_hz']:g} Hz through the shipped
shared-memory profile, one frame sequence and stamp for both. Fault episodes
(see `scripts/soak.py`) follow each other in shuffled cycles, each followed by
healthy frames.

| | |
|---|---|
| duration | {r['minutes']:.1f} min, {r['episodes']} fault episodes |
| frames | {r['frames_sent']} camera ticks: {fr['raw']} raw, {fr['jpeg']} JPEG, {fr['png']} PNG, {fr['malformed compressed']} malformed compressed; {r['runs']} policy runs, {r['commands']} commands |
| episodes per kind | {episodes_per_kind} |
| **commands attributable to a fault** | **{r['attributable_commands']}** |
| **good frames after a fault answered** | **{r['good_after_fault_pct']:.1f} %** ({r['good_frames_answered']} of {r['good_frames_judged']}, each within {r['answer_bound_s']:g} s of its stamp) |
| **the hybrid back after its cool-down and probes, on time** | **{r['hybrid_returns_judged'] - r['hybrid_late']} of {r['hybrid_returns_judged']}** returns judged ({r['hybrid_failures']} hybrid failures; {r['hybrid_runs_in_cooldown']} hybrid runs during a cool-down, none driving) |
| **parameter and lifecycle checks failed** | **{r['problem_count']}** |
| **crashes** | **{r['crashes']}** (exit codes {raw['exit_code']}, {comp['exit_code']} on SIGINT) |
| RSS, raw node | {raw['rss_start_mb']:.1f} MB at the start, {raw['rss_end_mb']:.1f} MB at the end, slope {raw['rss_slope_mb_per_h']:+.2f} MB/h after the warm-up (every episode kind run once, {raw['warm_after_s'] / 60:.1f} min); anonymous {raw['rss_anon_start_mb']:.1f} -> {raw['rss_anon_end_mb']:.1f} MB, {raw['rss_anon_slope_mb_per_h']:+.2f} MB/h, its median {raw['rss_anon_warm_mb']:.1f} MB in the 5 min after the warm-up and {raw['rss_anon_last_mb']:.1f} MB in the last 5 |
| RSS, compressed node | {comp['rss_start_mb']:.1f} MB at the start, {comp['rss_end_mb']:.1f} MB at the end, slope {comp['rss_slope_mb_per_h']:+.2f} MB/h after the warm-up; anonymous {comp['rss_anon_start_mb']:.1f} -> {comp['rss_anon_end_mb']:.1f} MB, {comp['rss_anon_slope_mb_per_h']:+.2f} MB/h, its median {comp['rss_anon_warm_mb']:.1f} MB in the 5 min after the warm-up and {comp['rss_anon_last_mb']:.1f} MB in the last 5 |
| hybrid latency (frame stamp to command), first tenth | raw p50 {raw['latency_first_p50_ms']:.2f} ms, p99 {raw['latency_first_p99_ms']:.2f} ms; compressed p50 {comp['latency_first_p50_ms']:.2f} ms, p99 {comp['latency_first_p99_ms']:.2f} ms |
| hybrid latency, last tenth | raw p50 {raw['latency_last_p50_ms']:.2f} ms, p99 {raw['latency_last_p99_ms']:.2f} ms; compressed p50 {comp['latency_last_p50_ms']:.2f} ms, p99 {comp['latency_last_p99_ms']:.2f} ms |
| e-stop to the first zero command (worst case) | {r['estop_reaction_max_s'] * 1e3:.1f} ms |
| the soak's own camera: gap between ticks | p99 {r['camera_gap_p99_ms']:.1f} ms, max {r['camera_gap_max_ms']:.1f} ms (30 Hz: 33.3 ms) |
| WARN lines in the nodes' logs | {raw['warnings']} raw, {comp['warnings']} compressed (each fault is reported; none is expected to be silent) |

Per node:

| node | frames | commands | attributable | good frames answered | hybrid returns judged | crashes | RSS | of it anonymous |
|---|---|---|---|---|---|---|---|---|
{node_rows}

Per episode kind: the good frames judged after it (until the next episode
concerning that node) and how many were answered, the slowest answer (frame
stamp to command, ms), how long after the episode ended the policy drove
the robot again (its "move left" strafe back on `cmd_vel`, from either
policy), and the hybrid itself (a hybrid run that drove; after a model fault
the watchdog's cool-down, doubled for each fault within `stable_after_s`,
and its recovery probes come first), in seconds:

| episode | nodes | count | good frames answered | slowest answer ms | driving again p50 | max | never | hybrid again p50 | max |
|---|---|---|---|---|---|---|---|---|---|
{rows}

Every command is judged at the stamp the node gave it. It is attributable to a
fault when it is non-finite or over the limits in force; comes from a run whose
output was invalid, that was cancelled, whose frame was older than
`camera.max_age_s` or that the node must refuse; is a hybrid run driving during
its cool-down; moves the robot under the e-stop (after its first zero, or later
than {GRACE:g} s after it engaged), while only refused frames (or none) have arrived
for longer than `policy.command_timeout_s`, after the joystick's timeout once
its publisher vanished, or while the managed node is inactive (after its one
zero; nor may a run on a frame sent while inactive drive); is changed by a
refused parameter set; or contradicts every instruction the node could have
been following (the one sent {GRACE:g} s before the command and any sent since).
A good frame is answered when a run on it or on a newer frame drives left
within {r['answer_bound_s']:g} s of its stamp (after a model fault, frames in the first
`watchdog.hard_timeout_s` after the episode within that plus {r['answer_bound_s']:g} s of its end:
a faulty run may still be in flight); every good frame is judged except while
an episode concerning its node is on or begins before the frame's answer is
due (its first event may rightly void it), until the joystick's timeout after
teleop, until the new camera publisher is matched after camera_gone, and until
`activate` is answered after a lifecycle episode. The hybrid is on time when
it drives again within its cool-down (from `/diagnostics`), its recovery
probes, {r['answer_bound_s']:g} s and 0.5 s of its last failure, not counting time without healthy
input.

{NOTES}{notes}""")


if __name__ == "__main__":
    sys.exit(main())
