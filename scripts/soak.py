#!/usr/bin/env python3
"""Fault-injection soak over ROS 2: the launched node, a 30 Hz camera, and faults for as long as asked.

The node is started through the launch file (the shipped parameters, Fast DDS
shared-memory profile) with the hybrid slot on `models/faulty_injectable.json`:
the healthy hybrid stand-in, except that a marker in a frame's corner makes
that run return an infinite action, run slowly (about 0.3 s) or hang (seconds,
until the watchdog cancels it). An rclpy peer (this process) is the camera,
the operator and the observer. Fault episodes follow each other in a shuffled
cycle, each followed by healthy frames:

  corrupt      frames with an unknown encoding and a step too small for the width
  truncated    frames whose data is shorter than step x height
  oversized    frames that claim 5000 x 5000 pixels
  nan_burst    frames that make the hybrid return a non-finite action
  slow         frames on which the hybrid runs past its deadline
  hang         frames on which the hybrid hangs until cancelled
  camera_gone  the camera publisher destroyed for 2 s, then created again
  teleop       a joystick publisher created, driving, then destroyed mid-stream
  churn        the instruction changed every 80 ms for 2 s
  estop        the e-stop engaged for 1.5 s, then released

The node publishes stamped commands, and each is judged at its stamp: when
the node sent it, not when this busy peer read it. It reports: commands
attributable to a fault (must be 0: a non-finite or out-of-limit command; a
command from a run whose output was invalid, that was cancelled, whose frame
was stale or one the node must refuse; motion under the e-stop, after the
first zero or later than GRACE after it engaged; motion while only bad frames
or none at all had arrived for longer than the command timeout; the
joystick's command after its timeout; a command against every instruction the
node could have been following, the one sent GRACE earlier and any since),
crashes (the node dying, a panic in its log, a non-zero exit), the node's RSS
at the start and end and its slope, hybrid latency p50/p99 in the first and
last tenth of the run, the e-stop's reaction, the peer's own camera gaps, and
for each episode how long after it ended the policy drove the robot again, and
the hybrid itself.

    source env.sh && python3 scripts/soak.py --minutes 30 --report RELIABILITY.md
    python3 scripts/soak.py --minutes 2 --json build/soak.json       # CI's run
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import launch_xml  # noqa: E402  (scripts/launch_xml.py: the package lookup launch_ros does)

ROOT = Path(__file__).resolve().parent.parent
RATE_HZ = 30.0
REFUSED = ("corrupt", "truncated", "oversized")
MARKERS = {"nan_burst": (255, 0, 255), "slow": (255, 255, 0), "hang": (0, 255, 255)}
EPISODES = ["corrupt", "truncated", "oversized", "nan_burst", "slow", "hang", "camera_gone", "teleop", "churn",
            "estop"]
TELEOP_X = 0.11  # a speed no policy output here takes
LEFT_MIN_Y = 0.1  # "move left": the hybrid strafes at 0.25 m/s, the pure fallback at 0.20
NOTES = "<!-- Notes: everything below this line is kept when soak.py rewrites this file. -->"
GRACE = 0.25  # s: DDS both ways, one output tick and one frame, on a loaded 2-core machine


def share_dir() -> Path:
    try:
        return Path(launch_xml.find_pkg_prefix("mobile_vla")) / "share/mobile_vla"
    except launch_xml.LaunchError:
        sys.exit("mobile_vla is not installed: run scripts/build.sh, then source env.sh")


@dataclass
class Episode:
    kind: str
    start: float
    end: float = 0.0
    recovered_after: float | None = None
    hybrid_after: float | None = None


@dataclass
class Log:
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Times are the system clock: the node's stamps on its commands (its ROS
    # clock is the system clock), this process's time.time() for the rest.
    cmds: list = field(default_factory=list)  # (stamp, x, y, z)
    stats: list = field(default_factory=list)  # (t, frame_id, policy, outcome, command_seq, stamp_to_publish_ms)
    instructions: list = field(default_factory=list)  # (t, text)
    estop: list = field(default_factory=list)  # (t, engaged)
    bad_input: list = field(default_factory=list)  # (t0, t1): only refused frames or none at all
    teleop: list = field(default_factory=list)  # (t_start, t_stop)
    rss: list = field(default_factory=list)  # (t, MB)


class Soak:
    def __init__(self, a):
        import rclpy
        from geometry_msgs.msg import Twist, TwistStamped
        from mobile_vla_msgs.msg import InferenceStats
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, String

        self.a, self.log = a, Log()
        self.Image, self.Twist, self.Bool, self.String = Image, Twist, Bool, String
        self.sensor_qos = qos_profile_sensor_data
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("mobile_vla_soak")
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        # Stamped commands: each is judged at the instant the node published it,
        # not when this (busy, GIL-bound) process got round to reading it.
        self.node.create_subscription(TwistStamped, "/cmd_vel", self.on_cmd, reliable)
        self.node.create_subscription(InferenceStats, "/mobile_vla/inference_stats", self.on_stats, reliable)
        self.instruction = self.node.create_publisher(String, "/instruction", 10)
        self.estop = self.node.create_publisher(Bool, "/e_stop", 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        base = PILImage.open(ROOT / "models/samples/00_light_left.png").convert("RGB").resize((640, 480))
        self.base = np.asarray(base)
        self.frames = {k: self.make(k) for k in ["good", "corrupt", "corrupt_step", "truncated", "oversized", *MARKERS]}
        self.kind = "good"
        self.camera_on = threading.Event()
        self.camera_on.set()
        self.stop = threading.Event()
        # Publishers that come and go live on a node no executor spins: rclpy's
        # executor must never see an entity destroyed under it.
        self.pubs = rclpy.create_node("mobile_vla_soak_sources")
        self.pub_lock = threading.Lock()
        self.cam_pub = self.pubs.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.seq = 0
        self.last_frame_at, self.camera_gaps = 0.0, []
        self.camera_thread: threading.Thread | None = None

    def make(self, kind: str):
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

    # --- observing ---
    def on_cmd(self, m) -> None:
        with self.log.lock:
            t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
            self.log.cmds.append((t, m.twist.linear.x, m.twist.linear.y, m.twist.angular.z))

    def on_stats(self, m) -> None:
        with self.log.lock:
            self.log.stats.append((time.time(), m.header.frame_id, m.policy, m.outcome, m.command_seq,
                                   m.stamp_to_publish_ms))

    # --- acting ---
    def camera(self) -> None:
        period, t0, i = 1.0 / RATE_HZ, time.time(), 0
        while not self.stop.is_set():
            i += 1
            wait = t0 + i * period - time.time()
            if wait > 0:
                time.sleep(wait)
            if not self.camera_on.is_set():
                self.last_frame_at = 0.0
                continue
            now = time.time()
            if self.last_frame_at:
                self.camera_gaps.append(now - self.last_frame_at)
            self.last_frame_at = now
            kind = self.kind
            m = self.frames["corrupt_step" if kind == "corrupt" and self.seq % 2 else kind]
            self.seq += 1
            m.header.frame_id = f"{self.seq}:{kind}"
            m.header.stamp = self.node.get_clock().now().to_msg()
            with self.pub_lock:
                if self.camera_on.is_set():
                    self.cam_pub.publish(m)

    def say(self, text: str) -> None:
        self.instruction.publish(self.String(data=text))
        with self.log.lock:
            self.log.instructions.append((time.time(), text))

    def episode(self, kind: str) -> Episode:
        ep = Episode(kind, time.time())
        if kind in ("corrupt", "truncated", "oversized"):
            self.kind = kind
            time.sleep(1.5)
            self.kind = "good"
            self.log.bad_input.append((ep.start, time.time()))
        elif kind in MARKERS:
            self.kind = kind
            time.sleep(1.0 if kind == "hang" else 1.5)
            self.kind = "good"
        elif kind == "camera_gone":
            with self.pub_lock:
                self.camera_on.clear()
                self.pubs.destroy_publisher(self.cam_pub)
            time.sleep(2.0)
            with self.pub_lock:
                self.cam_pub = self.pubs.create_publisher(self.Image, "/camera/image_raw", self.sensor_qos)
            self.log.bad_input.append((ep.start, time.time()))
            self.camera_on.set()
        elif kind == "teleop":
            joy = self.pubs.create_publisher(self.Twist, "/joy_vel", 10)
            t = self.Twist()
            t.linear.x = TELEOP_X
            end = time.time() + 1.5
            while time.time() < end:
                joy.publish(t)
                time.sleep(0.05)
            self.pubs.destroy_publisher(joy)  # mid-stream: no zero, no goodbye
            self.log.teleop.append((ep.start, time.time()))
        elif kind == "churn":
            choices = ["move right", "stop", "", "move left", "go forward", "turn around"]
            end = time.time() + 2.0
            while time.time() < end:
                self.say(random.choice(choices))
                time.sleep(0.08)
            self.say("move left")
        elif kind == "estop":
            self.estop.publish(self.Bool(data=True))
            self.log.estop.append((time.time(), True))
            time.sleep(1.5)
            self.estop.publish(self.Bool(data=False))
            self.log.estop.append((time.time(), False))
        ep.end = time.time()
        return ep

    def close(self) -> None:
        self.stop.set()
        if self.camera_thread:
            self.camera_thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        self.pubs.destroy_node()
        self.rclpy.shutdown()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_node(log_path: Path, params: Path) -> subprocess.Popen:
    share = share_dir()
    cmd = [sys.executable, str(ROOT / "scripts/launch_xml.py"), str(share / "launch/mobile_vla.launch.xml"),
           f"params_file:={params}"]
    return subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def soak_params(path: Path) -> dict:
    p = yaml.safe_load((share_dir() / "config/mobile_vla.yaml").read_text())
    rp = p["mobile_vla"]["ros__parameters"]
    rp["policy"]["hybrid"]["manifest"] = "models/faulty_injectable.json"
    rp["output"]["stamped"] = True
    path.write_text(yaml.safe_dump(p))
    return rp


def analyse(log: Log, episodes: list[Episode], cfg: dict, t_end: float) -> dict:
    """Every command checked against what was true when it was published."""
    cmd_timeout = cfg["policy"]["command_timeout_s"]
    max_age_ms = cfg["camera"]["max_age_s"] * 1e3
    limits = cfg["limits"]["max_velocity"]
    teleop_timeout = cfg["mux"]["sources"]["joystick"]["timeout_s"]
    faults: list[str] = []

    def moving(c) -> bool:
        return any(abs(v) > 1e-9 for v in c[1:])

    cmds = sorted(log.cmds)
    for c in cmds:
        if not all(math.isfinite(v) for v in c[1:]):
            faults.append(f"non-finite command at {c[0]:.2f}")
        elif any(abs(v) > lim + 1e-6 for v, lim in zip(c[1:], limits)):
            faults.append(f"command over the limits at {c[0]:.2f}: {c[1:]}")
    stamps = [c[0] for c in cmds]  # the node stamps in order

    def between(t0: float, t1: float):
        return cmds[bisect.bisect_right(stamps, t0):bisect.bisect_left(stamps, t1)]

    # The e-stop: zero within GRACE of engaging, and from the first zero on,
    # nothing moves until the release.
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
    # The joystick, gone mid-stream: its command must not outlive its timeout.
    for _, t_stop in log.teleop:
        faults += [f"joystick command {c[0] - t_stop:.2f} s after its publisher vanished"
                   for c in between(t_stop + teleop_timeout + GRACE, t_stop + 5) if abs(c[1] - TELEOP_X) < 1e-3]

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

    ins = log.instructions
    ins_t = [t for t, _ in ins]
    for c in cmds:
        i = bisect.bisect_right(ins_t, c[0] - GRACE)
        j = bisect.bisect_right(ins_t, c[0])
        candidates = ([ins[i - 1][1]] if i > 0 else [""]) + [text for _, text in ins[i:j]]
        if all(contradicts(text, c) for text in candidates):
            faults.append(f"command {c[1:]} against the instruction {candidates[-1]!r}")
    # Runs: an invalid, cancelled or stale run never drives, nor does a frame the node must refuse.
    for t, frame_id, policy, outcome, command_seq, s2p in log.stats:
        kind = frame_id.split(":")[-1]
        if command_seq and outcome != 0:
            faults.append(f"frame {frame_id}: a {policy} run with outcome {outcome} drove")
        if command_seq and s2p > max_age_ms:
            faults.append(f"frame {frame_id}: drove with a frame {s2p:.0f} ms old")
        if command_seq and policy == "hybrid" and kind in MARKERS:
            faults.append(f"frame {frame_id}: the faulty hybrid run drove")
        if command_seq and kind in REFUSED:
            faults.append(f"frame {frame_id}: a frame the node must refuse drove")
    # Recovery: from an episode's end to the policy driving left again, and
    # to the hybrid itself driving again (after a model fault, the watchdog's
    # cool-down and probes come first; the fallback drives meanwhile).
    hybrid_drove = [t for t, _, policy, outcome, command_seq, _ in log.stats
                    if policy == "hybrid" and outcome == 0 and command_seq]
    for ep in episodes:
        k = bisect.bisect_right(stamps, ep.end)
        after = next((c[0] for c in cmds[k:] if c[2] > LEFT_MIN_Y), None)
        ep.recovered_after = after - ep.end if after is not None else None
        h = bisect.bisect_right(hybrid_drove, ep.end)
        ep.hybrid_after = hybrid_drove[h] - ep.end if h < len(hybrid_drove) else None
    return {"faults": faults, "estop_reaction_s": reaction}


def percentile(v, p) -> float:
    return float(np.percentile(v, p)) if len(v) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--healthy-s", type=float, default=6.0, help="healthy frames after each episode")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--report", type=Path, help="write the markdown report here (RELIABILITY.md)")
    a = ap.parse_args()
    random.seed(a.seed)
    # A thread of this peer dying would leave the node unobserved: that ends the soak as invalid.
    peer_errors: list[str] = []
    hook = threading.excepthook
    threading.excepthook = lambda e: (peer_errors.append(f"{e.thread.name}: {e.exc_value!r}"), hook(e))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 50))
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(share_dir() / "config/fastdds_shm.xml"))
    work = Path(tempfile.mkdtemp(prefix="mobile_vla_soak_"))
    cfg = soak_params(work / "params.yaml")
    node_log = work / "node.log"
    proc = start_node(node_log, work / "params.yaml")
    s = Soak(a)
    s.camera_thread = threading.Thread(target=s.camera, daemon=True)
    s.camera_thread.start()
    episodes: list[Episode] = []
    try:
        deadline = time.time() + 60
        while not [c for c in s.log.cmds if c[2] > LEFT_MIN_Y]:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"the node never drove (exit {proc.poll()}); see {node_log}")
            if not s.log.instructions or time.time() - s.log.instructions[-1][0] > 1:
                s.say("move left")
            time.sleep(0.1)
        t_start = time.time()
        end = t_start + a.minutes * 60
        print(f"soak: {a.minutes:g} min at {RATE_HZ:g} Hz, node pid {proc.pid}, log {node_log}", flush=True)
        last_rss = 0.0
        cycle: list[str] = []
        while time.time() < end and proc.poll() is None and not peer_errors:
            if not cycle:
                cycle = random.sample(EPISODES, len(EPISODES))
            episodes.append(s.episode(cycle.pop()))
            healthy_until = time.time() + a.healthy_s
            while time.time() < healthy_until:
                if time.time() - last_rss > 5:
                    s.log.rss.append((time.time(), rss_mb(proc.pid)))
                    last_rss = time.time()
                time.sleep(0.1)
            done = len(episodes)
            if done % 10 == 0:
                print(f"  {(time.time() - t_start) / 60:5.1f} min: {done} episodes, "
                      f"RSS {s.log.rss[-1][1]:.1f} MB", flush=True)
        t_end = time.time()
        alive = proc.poll() is None
    finally:
        s.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    text = node_log.read_text(errors="replace")
    result = analyse(s.log, episodes, cfg, t_end)
    crashes = (0 if alive else 1) + text.count("panic") + (0 if code == 0 else 1)
    hybrid = [(t, s2p) for t, _, pol, out, cs, s2p in s.log.stats if pol == "hybrid" and out == 0 and cs]
    tenth = (t_end - t_start) / 10
    first = [v for t, v in hybrid if t < t_start + tenth]
    last = [v for t, v in hybrid if t > t_end - tenth]
    rss = [(t, m) for t, m in s.log.rss if t > t_start + 60] or s.log.rss
    slope = float(np.polyfit([t for t, _ in rss], [m for _, m in rss], 1)[0] * 3600) if len(rss) > 2 else float("nan")
    per_kind = {}
    for k in EPISODES:
        rec = [e.recovered_after for e in episodes if e.kind == k]
        ok = [r for r in rec if r is not None]
        hyb = [e.hybrid_after for e in episodes if e.kind == k and e.hybrid_after is not None]
        per_kind[k] = {"episodes": len(rec), "never_recovered": len(rec) - len(ok),
                       "recovery_p50_s": percentile(ok, 50), "recovery_max_s": max(ok) if ok else float("nan"),
                       "hybrid_back_p50_s": percentile(hyb, 50), "hybrid_back_max_s": max(hyb, default=float("nan")),
                       "hybrid_never_back": len(rec) - len(hyb)}
    out = {
        "minutes": (t_end - t_start) / 60, "rate_hz": RATE_HZ, "frames_sent": s.seq, "commands": len(s.log.cmds),
        "runs": len(s.log.stats), "episodes": len(episodes),
        "attributable_commands": len(result["faults"]), "faults": result["faults"][:50],
        "crashes": crashes, "exit_code": code,
        "rss_start_mb": s.log.rss[0][1] if s.log.rss else float("nan"),
        "rss_end_mb": s.log.rss[-1][1] if s.log.rss else float("nan"), "rss_slope_mb_per_h": slope,
        "latency_first_p50_ms": percentile(first, 50), "latency_first_p99_ms": percentile(first, 99),
        "latency_last_p50_ms": percentile(last, 50), "latency_last_p99_ms": percentile(last, 99),
        "camera_gap_p99_ms": percentile(s.camera_gaps, 99) * 1e3, "camera_gap_max_ms": max(s.camera_gaps) * 1e3,
        "commands_per_10s": np.histogram([c[0] for c in s.log.cmds], bins=np.arange(t_start, t_end + 10, 10))[0].tolist(),
        "estop_reaction_max_s": max(result["estop_reaction_s"], default=float("nan")),
        "per_kind": per_kind, "warnings": sum(" WARN " in line for line in text.splitlines()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:],
    }
    print(json.dumps({k: v for k, v in out.items() if k != "faults"}, indent=1))
    if peer_errors:
        print("the soak's own peer failed, so these results are not valid:", *peer_errors, sep="\n  ")
        return 2
    for f in result["faults"][:20]:
        print("FAULT:", f)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1))
    if a.report:
        write_report(a.report, out)
    return 0 if out["attributable_commands"] == 0 and crashes == 0 else 1


def write_report(path: Path, r: dict) -> None:
    rows = "\n".join(
        f"| {k} | {v['episodes']} | {v['recovery_p50_s']:.2f} | {v['recovery_max_s']:.2f} | {v['never_recovered']} "
        f"| {v['hybrid_back_p50_s']:.2f} | {v['hybrid_back_max_s']:.2f} |"
        for k, v in r["per_kind"].items())
    # The hand-written notes below the marker survive a rerun.
    notes = path.read_text().split(NOTES, 1)[1] if path.exists() and NOTES in path.read_text() else "\n"
    argv = []
    for a in r["argv"]:  # the command as it reproduces the report: without where the JSON went
        if argv and argv[-1] == "--json":
            argv.pop()
        else:
            argv.append(a)
    path.write_text(f"""# Reliability: the fault-injection soak

Written by `python3 scripts/soak.py {' '.join(argv)}` (after `source env.sh`) on {r['date']},
{r['machine']}. Reproduce with the same command; `tests/test_soak.py` runs a
two-minute version of it in CI and fails on any attributable command or crash.

The node runs from the launch file with the shipped parameters and the hybrid
slot on `models/faulty_injectable.json` (the healthy hybrid stand-in, except
that a marker in a frame's corner makes that run return an infinite action,
run past its deadline or hang until cancelled); the pure stand-in is the
fallback. The camera publishes 640x480 rgb8 at {r['rate_hz']:g} Hz through the shipped
shared-memory profile; fault episodes (see `scripts/soak.py`) follow each
other in shuffled cycles, each followed by healthy frames.

| | |
|---|---|
| duration | {r['minutes']:.1f} min, {r['frames_sent']} frames, {r['runs']} policy runs, {r['commands']} commands, {r['episodes']} fault episodes |
| **commands attributable to a fault** | **{r['attributable_commands']}** |
| **crashes** | **{r['crashes']}** (exit code {r['exit_code']} on SIGINT) |
| RSS | {r['rss_start_mb']:.1f} MB at the start, {r['rss_end_mb']:.1f} MB at the end, slope {r['rss_slope_mb_per_h']:+.2f} MB/h (after the first minute) |
| hybrid latency (frame stamp to command), first tenth | p50 {r['latency_first_p50_ms']:.2f} ms, p99 {r['latency_first_p99_ms']:.2f} ms |
| hybrid latency, last tenth | p50 {r['latency_last_p50_ms']:.2f} ms, p99 {r['latency_last_p99_ms']:.2f} ms |
| e-stop to the first zero command (worst case) | {r['estop_reaction_max_s'] * 1e3:.1f} ms |
| the soak's own camera: gap between frames | p99 {r['camera_gap_p99_ms']:.1f} ms, max {r['camera_gap_max_ms']:.1f} ms (30 Hz: 33.3 ms) |
| WARN lines in the node's log | {r['warnings']} (each fault is reported; none is expected to be silent) |

How long after each episode ended the policy drove the robot again (its
"move left" strafe back on `cmd_vel`, from either policy), and the hybrid
itself (a hybrid run that drove; after a model fault the watchdog's cool-down,
doubled for each fault within `stable_after_s`, and its recovery probes come
first), in seconds:

| episode | count | driving again p50 | max | never | hybrid again p50 | max |
|---|---|---|---|---|---|---|
{rows}

Every command is judged at the stamp the node gave it. It is attributable to a
fault when it is non-finite or over the limits; comes from a run whose output
was invalid, that was cancelled, whose frame was older than
`camera.max_age_s` or that the node must refuse; moves the robot under the
e-stop (after its first zero, or later than {GRACE:g} s after it engaged), while
only refused frames (or none) have arrived for longer than
`policy.command_timeout_s`, or after the joystick's timeout once its publisher
vanished; or contradicts every instruction the node could have been following
(the one sent {GRACE:g} s before the command and any sent since: {GRACE:g} s for DDS and
one output tick). Recovery after the model faults includes the watchdog's
cool-down and recovery probes (the fallback drives meanwhile, so the robot
is driven again as soon as the fallback's first command is out).

{NOTES}{notes}""")


if __name__ == "__main__":
    sys.exit(main())
