#!/usr/bin/env python3
"""Fleet: one NVIDIA Triton server for N robots (the remote policy under load).

For each fleet size N (--robots, default 1,2,4,8) this starts N mobile_vla nodes,
each in its own namespace (`--ros-args -r __ns:=/robot<k>`, all in one
ROS_DOMAIN_ID), each fed its own camera stream and instruction by this process,
and measures them twice, interleaved (the order alternates from one N to the
next, so slow drift of a shared machine falls on both alike):

  remote   the hybrid policy's per-frame stage (models/hf_tiny/hybrid, served as
           model `hybrid_policy`) runs on ONE tritonserver for the whole sweep:
           scripts/triton_repository.py's Python-backend repository (the graph in
           ONNX Runtime on the CPU, one instance), dynamic batching (max batch 8,
           --queue-delay-us of queueing), KServe v2 gRPC on 127.0.0.1.
           Preprocessing, tokenisation and the recurrent state stay in the nodes.
  local    the same nodes with `policy.hybrid.remote.url: ""`: the hybrid in the
           node's own ONNX Runtime (providers [cpu], cpu_threads 1). The baseline.

The fallback (models/hf_tiny/pure) is loaded locally in both. The cameras are
one publishing thread of this process: the five hf_tiny reference frames
(models/hf_tiny/frames, 320x240 .. 1920x1080) as raw rgb8 sensor_msgs/Image on
/robot<k>/camera/image_raw, fresh stamps, --rate Hz per robot, robot k starting
at frame k and at a random phase of the period (--sync: all cameras fire at the
same instant, the dynamic batcher's best case). Every robot gets the same
instruction unless --instructions lists several (dealt round-robin): Triton's
batcher joins only requests of equal shapes, and the token count is a shape.

The watchdog is relaxed so that a loaded 2-core machine does not fail over
unless something is really broken: watchdog.deadline_s 1.0, hard_timeout_s 2.0,
policy.hybrid.remote.deadline_s 1.0, camera.max_age_s 2.0,
policy.command_timeout_s 1.0 (the shipped deadlines, 0.1 s, are for an Orin).

Measured over a --seconds window per point, after every robot's hybrid has
driven and --warmup seconds more, from each node's ~/inference_stats
(frames identified by their stamps, sent inside the window):
  inference / total   p50 and p99 of the hybrid's inference_ms and total_ms
                      (preprocess + inference + postprocess), all robots pooled,
                      and the p50 of preprocess_ms (the same work either way);
                      "worst p99" is the highest per-robot p99 of total_ms
  stamp->cmd          frame stamp to the command's publish (stamp_to_publish_ms),
                      p50 / p99 of frames that drove: includes DDS in and waiting
  run / sent          frames some policy ran / frames this process sent (drops:
                      newest-frame-only skips, refused stale frames, DDS losses)
  hybrid / fallback   share of the frames sent whose command came from the
                      hybrid / from the pure fallback
  server inf/s        Triton's inference_count delta / window (remote only)
  batch               inference_count delta / execution_count delta, and the
                      executions per batch size (the JSON also has each size's
                      mean compute time)
  server queue/compute  Triton's mean queue time and compute_infer time per
                      request over the window (its own statistics)
  CPU %               nodes (sum), tritonserver (with its Python stubs), this
                      harness, and (in brackets) the whole machine from
                      /proc/stat and what of it was none of these: others'
                      processes, the kernel (100 = one core)
A point is SATURATED when the p99 of total_ms is above the frame period, when
more than 5 % of the frames sent were not run, or when fewer than 95 % drove
from the hybrid.

    source env.sh
    python3 benches/fleet.py                              # 1,2,4,8 robots, 20 s a point (~4 min on 2 cores)
    python3 benches/fleet.py --robots 1,4 --seconds 10    # quicker
    python3 benches/fleet.py --json build/bench/fleet.json
    python3 benches/fleet.py --wait-quiet 120              # a shared machine: let bursts pass first

Writes a markdown table (and per-robot details) to stdout; logs of the nodes and
of the server go to build/bench/fleet/. Every process it starts is stopped on the
way out (nodes with SIGINT first, then the server), Ctrl-C included.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
from compare import find_node_exe, machine  # noqa: E402  (imports rclpy: source env.sh first)

MODEL = "hybrid_policy"
TASK = "navigate around the obstacles to the cup"
OUT = ROOT / "build/bench/fleet"
DROP_LIMIT = 0.05  # more than this share of frames not run: saturated
HYBRID_LIMIT = 0.95  # fewer than this share driven by the hybrid: saturated
# Relaxed for a loaded 2-core machine (the shipped values are for an Orin).
WATCHDOG = {"deadline_s": 1.0, "hard_timeout_s": 2.0, "start_timeout_s": 120.0}
REMOTE_DEADLINE_S = 1.0


def load_triton():
    """tests/triton.py (standard library only) under a name of its own, not the `triton` package."""
    spec = importlib.util.spec_from_file_location("mobile_vla_tests_triton", ROOT / "tests" / "triton.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def share() -> Path:
    return Path(find_node_exe()).parent.parent.parent / "share/mobile_vla"


# --- the nodes -------------------------------------------------------------------------
def params_yaml(hybrid: Path, pure: Path, url: str) -> str:
    """The parameters file (section /**: every namespace)."""
    p = {
        "camera": {"max_age_s": 2.0},
        "policy": {
            "command_timeout_s": 1.0,
            "hybrid": {"manifest": str(hybrid), "providers": ["cpu"], "cpu_threads": 1,
                       "remote": {"url": url, "deadline_s": REMOTE_DEADLINE_S, "retry_s": 1.0}},
            "pure": {"manifest": str(pure), "providers": ["cpu"], "cpu_threads": 1},
        },
        "watchdog": WATCHDOG,
        "limits": {"max_velocity": [5.0, 5.0, 5.0], "max_accel": [0.0, 0.0, 0.0]},
    }

    def emit(d: dict, indent: int) -> list[str]:
        lines = []
        for k, v in d.items():
            if isinstance(v, dict):
                lines += [" " * indent + f"{k}:"] + emit(v, indent + 2)
            else:
                lines.append(" " * indent + f"{k}: {json.dumps(v)}")
        return lines

    return "\n".join(["/**:", "  ros__parameters:"] + emit(p, 4)) + "\n"


def start_nodes(n: int, params: Path, tag: str) -> list[subprocess.Popen]:
    procs = []
    for k in range(n):
        log = open(OUT / f"{tag}_robot{k}.log", "wb")
        procs.append(subprocess.Popen([find_node_exe(), "--ros-args", "--params-file", str(params),
                                       "-r", f"__ns:=/robot{k}"], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=os.environ.copy()))
        log.close()
    return procs


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    # SIGINT first, to all: a node killed outright leaves its Fast DDS shared-memory segments in /dev/shm.
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def group_pids(pgid: int) -> list[int]:
    """Every process of a process group (tritonserver and its Python-backend stubs)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


# --- the cameras and the listener (this process) ---------------------------------------
@dataclass
class Run:
    stamp: float
    policy: str
    outcome: int
    command_seq: int
    inference_ms: float
    total_ms: float
    stamp_to_publish_ms: float
    preprocess_ms: float
    frames_dropped: int
    fallback_active: bool
    provider: str


@dataclass
class Robot:
    k: int
    sent: list[float] = field(default_factory=list)  # stamps of the frames sent
    runs: list[Run] = field(default_factory=list)
    status: list = field(default_factory=list)


class Harness:
    def __init__(self, n: int, rate: float, frames: list, instructions: list[str], sync: bool, seed: int):
        import rclpy
        from mobile_vla_msgs.msg import InferenceStats, Status
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.String = String
        self.node = rclpy.create_node("mobile_vla_fleet_bench")
        self.lock = threading.Lock()
        self.robots = [Robot(k) for k in range(n)]
        self.rate = rate
        self.instructions = [instructions[k % len(instructions)] for k in range(n)]
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.cams, self.tasks = [], []
        for r in self.robots:
            ns = f"/robot{r.k}"
            self.cams.append(self.node.create_publisher(Image, f"{ns}/camera/image_raw", qos_profile_sensor_data))
            self.tasks.append(self.node.create_publisher(String, f"{ns}/instruction", 10))
            self.node.create_subscription(InferenceStats, f"{ns}/mobile_vla/inference_stats",
                                          lambda m, r=r: self.on_stats(r, m), 1000)
            self.node.create_subscription(Status, f"{ns}/mobile_vla/status",
                                          lambda m, r=r: r.status.append(m), latched)
        # One message per (robot, frame), its pixels converted once; only the stamp changes.
        self.msgs = []
        for r in self.robots:
            mine = []
            for j in range(len(frames)):
                rgb = frames[(r.k + j) % len(frames)]
                m = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3,
                          data=rgb.tobytes())
                m.header.frame_id = f"robot{r.k}/camera"
                mine.append(m)
            self.msgs.append(mine)
        rnd = random.Random(seed)
        self.phase = [0.0 if sync else rnd.random() / rate for _ in self.robots]
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinning = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinning.start()
        self.streaming = threading.Event()
        self.camera = None

    def on_stats(self, r: Robot, m) -> None:
        run = Run(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m.policy, m.outcome, m.command_seq,
                  m.inference_ms, m.total_ms, m.stamp_to_publish_ms, m.preprocess_ms, m.frames_dropped, m.fallback_active,
                  m.execution_provider)
        with self.lock:
            r.runs.append(run)

    def wait_ready(self, procs, timeout: float) -> None:
        """Every node subscribed to its camera and instruction, its hybrid loaded (or connected)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [k for k, p in enumerate(procs) if p.poll() is not None]
            if dead:
                raise RuntimeError(f"robot{dead[0]} exited with {procs[dead[0]].returncode}")
            if all(c.get_subscription_count() and t.get_subscription_count() and r.status
                   and r.status[-1].policies and r.status[-1].policies[0].loaded
                   for c, t, r in zip(self.cams, self.tasks, self.robots)):
                return
            time.sleep(0.05)
        raise RuntimeError("the nodes were not ready in time")

    def instruct(self) -> None:
        for t, text in zip(self.tasks, self.instructions):
            t.publish(self.String(data=text))

    def start_camera(self) -> None:
        self.streaming.set()
        self.camera = threading.Thread(target=self._stream, daemon=True)
        self.camera.start()

    def stop_camera(self) -> None:
        self.streaming.clear()
        if self.camera:
            self.camera.join()

    def _stream(self) -> None:
        period = 1.0 / self.rate
        t0 = time.time() + 0.05
        nxt = [t0 + p for p in self.phase]
        count = [0] * len(self.robots)
        clock = self.node.get_clock()
        while self.streaming.is_set():
            k = min(range(len(nxt)), key=nxt.__getitem__)
            wait = nxt[k] - time.time()
            if wait > 0:
                time.sleep(wait)
            m = self.msgs[k][count[k] % len(self.msgs[k])]
            m.header.stamp = clock.now().to_msg()
            self.cams[k].publish(m)
            with self.lock:
                self.robots[k].sent.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)
            count[k] += 1
            nxt[k] += period
            if nxt[k] < time.time() - period:  # fell more than a period behind: skip, do not burst
                nxt[k] = time.time()

    def hybrid_drove_since(self, t: float) -> list[bool]:
        with self.lock:
            return [any(x.policy == "hybrid" and x.command_seq > 0 and x.stamp >= t for x in r.runs)
                    for r in self.robots]

    def close(self) -> None:
        self.stop_camera()
        self.executor.shutdown()
        self.node.destroy_node()


# --- one point ---------------------------------------------------------------------------
def pct(v, p) -> float:
    return float(np.percentile(np.asarray(v), p)) if len(v) else float("nan")


def summarise(h: Harness, t0: float, t1: float, rate: float, remote: bool) -> dict:
    robots = []
    with h.lock:
        for r in h.robots:
            sent = [s for s in r.sent if t0 <= s < t1]
            runs = [x for x in r.runs if t0 <= x.stamp < t1]
            hyb = [x for x in runs if x.policy == "hybrid"]
            frames_run = {round(x.stamp, 6) for x in runs}
            hyb_drove = {round(x.stamp, 6) for x in hyb if x.command_seq > 0}
            fb_drove = {round(x.stamp, 6) for x in runs if x.policy != "hybrid" and x.command_seq > 0}
            remote_runs = sum(x.provider.startswith(f"remote: {MODEL}") for x in hyb)
            robots.append({
                "robot": r.k, "sent": len(sent), "run": len(frames_run),
                "dropped_by_node": sum(x.frames_dropped for x in runs),
                "hybrid_drove": len(hyb_drove), "fallback_drove": len(fb_drove),
                "hybrid_runs": len(hyb), "hybrid_remote_runs": remote_runs,
                "hybrid_failed": sum(x.outcome != 0 for x in hyb),
                "fallback_active_runs": sum(x.fallback_active for x in runs),
                "inference_ms": [x.inference_ms for x in hyb], "total_ms": [x.total_ms for x in hyb],
                "preprocess_ms": [x.preprocess_ms for x in hyb],
                "stamp_to_publish_ms": [x.stamp_to_publish_ms for x in runs if x.command_seq > 0],
                "providers": sorted({x.provider for x in hyb}),
            })
    inf = [v for r in robots for v in r["inference_ms"]]
    tot = [v for r in robots for v in r["total_ms"]]
    e2e = [v for r in robots for v in r["stamp_to_publish_ms"]]
    pre = [v for r in robots for v in r["preprocess_ms"]]
    sent = sum(r["sent"] for r in robots)
    run = sum(r["run"] for r in robots)
    out = {
        "robots": len(robots), "mode": "remote" if remote else "local", "window_s": t1 - t0,
        "inference_p50": pct(inf, 50), "inference_p99": pct(inf, 99),
        "total_p50": pct(tot, 50), "total_p99": pct(tot, 99), "preprocess_p50": pct(pre, 50),
        "worst_robot_total_p99": max((pct(r["total_ms"], 99) for r in robots if r["total_ms"]), default=float("nan")),
        "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99),
        "sent": sent, "run": run, "not_run_share": 1 - run / sent if sent else float("nan"),
        "hybrid_share": sum(r["hybrid_drove"] for r in robots) / sent if sent else float("nan"),
        "fallback_share": sum(r["fallback_drove"] for r in robots) / sent if sent else float("nan"),
        "per_robot": [{**{k: v for k, v in r.items() if not k.endswith("_ms")},
                       "inference_p50": pct(r["inference_ms"], 50), "inference_p99": pct(r["inference_ms"], 99),
                       "total_p50": pct(r["total_ms"], 50), "total_p99": pct(r["total_ms"], 99),
                       "e2e_p50": pct(r["stamp_to_publish_ms"], 50), "e2e_p99": pct(r["stamp_to_publish_ms"], 99)}
                      for r in robots],
    }
    period_ms = 1e3 / rate
    why = []
    if not out["total_p99"] <= period_ms:
        why.append(f"p99 total {out['total_p99']:.0f} > {period_ms:.0f} ms")
    if not out["not_run_share"] <= DROP_LIMIT:
        why.append(f"{out['not_run_share'] * 100:.0f}% not run")
    if not out["hybrid_share"] >= HYBRID_LIMIT:
        why.append(f"hybrid drove {out['hybrid_share'] * 100:.0f}%")
    out["saturated"] = why
    return out


def server_delta(a: dict, b: dict, seconds: float) -> dict:
    inf = b["inference_count"] - a["inference_count"]
    exe = b["execution_count"] - a["execution_count"]
    qa, qb = a["inference_stats"], b["inference_stats"]

    def mean_us(key):
        n = qb[key]["count"] - qa[key]["count"]
        return (qb[key]["ns"] - qa[key]["ns"]) / n / 1e3 if n else float("nan")

    before = {s["batch_size"]: s["compute_infer"] for s in a.get("batch_stats", [])}
    zero = {"count": 0, "ns": 0}
    batches = {s["batch_size"]: s["compute_infer"]["count"] - before.get(s["batch_size"], zero)["count"]
               for s in b.get("batch_stats", [])}
    # Mean compute_infer of one execution per batch size: what a batch of k costs against k of one.
    batch_ms = {s["batch_size"]: (s["compute_infer"]["ns"] - before.get(s["batch_size"], zero)["ns"]) / 1e6
                / batches[s["batch_size"]] for s in b.get("batch_stats", []) if batches[s["batch_size"]]}
    return {"inferences": inf, "executions": exe, "inferences_per_s": inf / seconds,
            "mean_batch": inf / exe if exe else float("nan"),
            "executions_by_batch_size": {k: v for k, v in sorted(batches.items()) if v},
            "compute_ms_by_batch_size": dict(sorted(batch_ms.items())),
            "failed": qb["fail"]["count"] - qa["fail"]["count"],
            "queue_us": mean_us("queue"), "compute_infer_us": mean_us("compute_infer"),
            "request_us": mean_us("success")}


def wait_quiet(max_s: float, below: float = 25.0) -> float:
    """Waits (at most max_s) until the machine has been under `below` % CPU (100 = one core)
    for 3 s in a row: another user's burst on a shared machine passes before a point starts.
    Returns the seconds waited."""
    start = time.monotonic()
    while True:
        b0 = machine_busy()
        time.sleep(3.0)
        b1 = machine_busy()
        busy = (b1[0] - b0[0]) / max(1, b1[1] - b0[1]) * (os.cpu_count() or 1) * 100
        if busy < below or time.monotonic() - start >= max_s:
            return time.monotonic() - start


def run_point(a, n: int, remote: bool, triton, frames, hybrid: Path, pure: Path) -> dict:
    waited = wait_quiet(a.wait_quiet) if a.wait_quiet > 0 else 0.0
    tag = f"n{n}_{'remote' if remote else 'local'}"
    params = OUT / f"{tag}.yaml"
    params.write_text(params_yaml(hybrid, pure, triton.grpc_url if remote else ""))
    h = Harness(n, a.rate, frames, a.instructions, a.sync, a.seed + n)
    procs = []
    try:
        t_start = time.monotonic()
        procs = start_nodes(n, params, tag)
        h.wait_ready(procs, 120)
        h.start_camera()
        h.instruct()
        since = time.time()
        end = time.monotonic() + 90
        last_instruct = time.monotonic()
        while not all(h.hybrid_drove_since(since)):
            if time.monotonic() > end:
                raise RuntimeError(f"{tag}: the hybrid never drove on robots "
                                   f"{[k for k, ok in enumerate(h.hybrid_drove_since(since)) if not ok]}")
            if time.monotonic() - last_instruct > 5:  # an instruction sent before discovery had matched
                h.instruct()
                last_instruct = time.monotonic()
            time.sleep(0.1)
        ready_s = time.monotonic() - t_start
        time.sleep(a.warmup)
        srv_pids = group_pids(triton.pid) if remote else []
        node_pids = [p.pid for p in procs]
        s0 = triton.stats(MODEL)
        c0 = (cpu_seconds(node_pids), cpu_seconds(srv_pids), sum(os.times()[:2]), machine_busy())
        t0, w0 = time.time(), time.monotonic()
        time.sleep(a.seconds)
        t1, w1 = time.time(), time.monotonic()
        s1 = triton.stats(MODEL)
        c1 = (cpu_seconds(node_pids), cpu_seconds(srv_pids), sum(os.times()[:2]), machine_busy())
        time.sleep(1.5)  # the window's last results come in
        h.stop_camera()
        dead = [k for k, p in enumerate(procs) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{tag}: robot{dead[0]} exited during the window")
        wall = w1 - w0
        out = summarise(h, t0, t1, a.rate, remote)
        out["cpu_percent"] = {
            "nodes": (c1[0] - c0[0]) / wall * 100, "server": (c1[1] - c0[1]) / wall * 100,
            "harness": (c1[2] - c0[2]) / wall * 100,
            "machine": (c1[3][0] - c0[3][0]) / ((c1[3][1] - c0[3][1]) / (os.cpu_count() or 1)) * 100}
        # Whatever else ran on the machine meanwhile (another user's tests, the kernel's own work).
        c = out["cpu_percent"]
        c["others"] = max(0.0, c["machine"] - c["nodes"] - c["server"] - c["harness"])
        out["server"] = server_delta(s0, s1, wall)
        out["ready_s"] = ready_s
        out["waited_quiet_s"] = waited
        out["load_before"] = os.getloadavg()[0]
        return out
    finally:
        h.close()
        stop_nodes(procs)


# --- the report ---------------------------------------------------------------------------
def f(v, fmt="{:.1f}") -> str:
    return "-" if v is None or v != v else fmt.format(v)


def table(points: list[dict], rate: float) -> list[str]:
    lines = [
        "| robots | hybrid | inference p50 / p99 ms | total p50 / p99 ms (preprocess p50) | worst robot total p99 | "
        "stamp->cmd p50 / p99 ms | run / sent | hybrid drove | fallback drove | server inf/s | mean batch "
        "(executions by size) | server queue / compute ms | CPU % nodes / server / harness (machine, others) | saturated? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        s, c = p["server"], p["cpu_percent"]
        remote = p["mode"] == "remote"
        batch = (f"{p['server']['mean_batch']:.2f} ("
                 + ", ".join(f"{k}: {v}" for k, v in s["executions_by_batch_size"].items()) + ")") if remote else "-"
        lines.append(
            f"| {p['robots']} | {p['mode']} | {f(p['inference_p50'], '{:.2f}')} / {f(p['inference_p99'], '{:.2f}')} "
            f"| {f(p['total_p50'])} / {f(p['total_p99'])} ({f(p['preprocess_p50'])}) | {f(p['worst_robot_total_p99'])} "
            f"| {f(p['e2e_p50'])} / {f(p['e2e_p99'])} | {p['run']} / {p['sent']} "
            f"| {p['hybrid_share'] * 100:.1f} % | {p['fallback_share'] * 100:.1f} % "
            f"| {f(s['inferences_per_s']) if remote else '-'} | {batch} "
            f"| {(f(s['queue_us'] / 1e3, '{:.2f}') + ' / ' + f(s['compute_infer_us'] / 1e3, '{:.2f}')) if remote else '-'} "
            f"| {c['nodes']:.0f} / {c['server']:.0f} / {c['harness']:.0f} ({c['machine']:.0f}, {c['others']:.0f}) "
            f"| {'**yes**: ' + '; '.join(p['saturated']) if p['saturated'] else 'no'} |")
    return lines


def ratio_table(points: list[dict]) -> list[str]:
    by = {(p["robots"], p["mode"]): p for p in points}
    lines = ["| robots | inference p50 | inference p99 | total p50 | total p99 | stamp->cmd p50 | "
             "CPU nodes + server |", "|---|---|---|---|---|---|---|"]
    for n in sorted({p["robots"] for p in points}):
        r, l = by.get((n, "remote")), by.get((n, "local"))
        if not (r and l):
            continue

        def q(key):
            return f"{r[key] / l[key]:.2f}x" if l[key] and l[key] == l[key] and r[key] == r[key] else "-"

        cpu_r = r["cpu_percent"]["nodes"] + r["cpu_percent"]["server"]
        cpu_l = l["cpu_percent"]["nodes"]
        lines.append(f"| {n} | {q('inference_p50')} | {q('inference_p99')} | {q('total_p50')} | {q('total_p99')} "
                     f"| {q('e2e_p50')} | {cpu_r / cpu_l:.2f}x |")
    return lines


def robot_table(points: list[dict]) -> list[str]:
    lines = ["| robots | hybrid | robot | inference p50 / p99 ms | total p50 / p99 ms | run / sent | "
             "dropped by node | hybrid drove | fallback drove | hybrid failed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        for r in p["per_robot"]:
            lines.append(f"| {p['robots']} | {p['mode']} | robot{r['robot']} "
                         f"| {f(r['inference_p50'], '{:.2f}')} / {f(r['inference_p99'], '{:.2f}')} "
                         f"| {f(r['total_p50'])} / {f(r['total_p99'])} | {r['run']} / {r['sent']} "
                         f"| {r['dropped_by_node']} | {r['hybrid_drove']} | {r['fallback_drove']} | {r['hybrid_failed']} |")
    return lines


def saturation(points: list[dict], rate: float) -> str:
    out = []
    for mode in ("remote", "local"):
        sat = [p for p in points if p["mode"] == mode and p["saturated"]]
        ok = [p["robots"] for p in points if p["mode"] == mode and not p["saturated"]]
        if sat:
            first = min(sat, key=lambda p: p["robots"])
            out.append(f"{mode}: saturates at {first['robots']} robots ({'; '.join(first['saturated'])})"
                       + (f"; fine up to {max(ok)}" if ok else ""))
        elif ok:
            out.append(f"{mode}: not saturated up to {max(ok)} robots")
    return "Saturation (p99 total above the frame period "f"{1e3 / rate:.0f} ms, > {DROP_LIMIT * 100:.0f} % of frames " \
        f"not run, or < {HYBRID_LIMIT * 100:.0f} % driven by the hybrid): " + "; ".join(out) + "."


def main() -> int:
    ap = argparse.ArgumentParser(
        description="One Triton server for N robots: the remote hybrid policy against the same N nodes "
                    "running it locally, per fleet size.",
        epilog="Run after `source env.sh` (the node installed by scripts/build.sh, tritonserver by scripts/setup.sh). "
               "Nodes: one ROS_DOMAIN_ID (MOBILE_VLA_BENCH_DOMAIN, else derived from the pid), namespaces "
               "/robot0 .. /robot<N-1>. Watchdog relaxed (deadline 1.0 s, hard timeout 2.0 s, remote deadline "
               "1.0 s) so that only a really broken policy fails over on a loaded machine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--robots", default="1,2,4,8", help="fleet sizes N, comma list")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window per point (per N and mode)")
    ap.add_argument("--rate", type=float, default=10.0, help="camera rate per robot, Hz")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of streaming after every hybrid has driven")
    ap.add_argument("--modes", default="remote,local", help="which of remote,local to run")
    ap.add_argument("--instructions", default=TASK,
                    help="'|'-separated instructions dealt to the robots round-robin (all the same by default)")
    ap.add_argument("--sync", action="store_true", help="all cameras fire at the same instant (default: random phases)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the cameras' phases")
    ap.add_argument("--max-batch-size", type=int, default=8, help="Triton's max_batch_size for the served model")
    ap.add_argument("--queue-delay-us", type=int, default=500, help="Triton's dynamic batching max queue delay")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each point, wait up to S seconds for the machine to be idle (under 25 %% of a "
                         "core for 3 s): lets another user's burst pass on a shared machine")
    ap.add_argument("--json", type=Path, help="also write every number (per robot included) here")
    a = ap.parse_args()
    a.robots = [int(x) for x in a.robots.split(",") if x]
    a.modes = [m for m in a.modes.split(",") if m]
    a.instructions = a.instructions.split("|")
    if set(a.modes) - {"remote", "local"} or not a.modes:
        ap.error("--modes: remote, local or both")

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if os.environ.get("ROS_DISTRO") in ("foxy", "galactic", "humble", "iron"):
        os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ["ROS_DOMAIN_ID"] = os.environ.get("MOBILE_VLA_BENCH_DOMAIN", str(120 + os.getpid() % 60))
    # Every process here (harness and nodes) on the shipped shared-memory profile, as on the robot.
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(ROOT / "config/fastdds_shm.xml"))
    OUT.mkdir(parents=True, exist_ok=True)

    import rclpy
    from PIL import Image as PILImage
    from rclpy.signals import SignalHandlerOptions

    hf = share() / "models/hf_tiny"
    hybrid, pure = hf / "hybrid/hybrid.json", hf / "pure/pure.json"
    ref = json.loads((hf / "hybrid/reference.json").read_text())
    frames = [np.asarray(PILImage.open(io.BytesIO((hf / "hybrid" / p).read_bytes())).convert("RGB"))
              for p in ref["frames"]]
    tr = load_triton()
    repo = OUT / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    tr.write_repository(hybrid, repo, backend="python", max_batch_size=a.max_batch_size,
                        queue_delay_us=a.queue_delay_us, verbose=False)
    info = machine()
    load0 = os.getloadavg()
    print(f"machine: {info}\nload average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
          f"ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}; namespaces /robot0..; camera {a.rate:g} Hz per robot, "
          f"frames {', '.join(f'{x.shape[1]}x{x.shape[0]}' for x in frames)} rgb8, "
          f"{'synchronised' if a.sync else 'random phases'}; watchdog deadline_s {WATCHDOG['deadline_s']}, "
          f"hard_timeout_s {WATCHDOG['hard_timeout_s']}, remote deadline_s {REMOTE_DEADLINE_S} "
          f"(relaxed: a loaded machine does not fail over unless something is really broken)", flush=True)
    started = time.monotonic()
    points = []
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # Ctrl-C: KeyboardInterrupt, cleanup below
    triton = tr.Triton(repo, explicit=True, models=[MODEL], log_path=OUT / "triton.log")
    try:
        triton.start(timeout=120)
        print(f"tritonserver ready on {triton.grpc_url} (model {MODEL}, python backend, max_batch_size "
              f"{a.max_batch_size}, queue delay {a.queue_delay_us} us)", flush=True)
        for i, n in enumerate(a.robots):
            order = a.modes if i % 2 == 0 else a.modes[::-1]
            for mode in order:
                p = run_point(a, n, mode == "remote", triton, frames, hybrid, pure)
                points.append(p)
                print(f"  {n} robot(s), {mode}: total p50/p99 {f(p['total_p50'])}/{f(p['total_p99'])} ms, "
                      f"run {p['run']}/{p['sent']}, hybrid {p['hybrid_share'] * 100:.1f} %, "
                      f"server {f(p['server']['inferences_per_s'])} inf/s, batch {f(p['server']['mean_batch'], '{:.2f}')}, "
                      f"machine CPU {p['cpu_percent']['machine']:.0f} % (others {p['cpu_percent']['others']:.0f} %, load {p['load_before']:.2f}), ready in {p['ready_s']:.1f} s, waited {p['waited_quiet_s']:.0f} s for quiet"
                      + (f"  SATURATED: {'; '.join(p['saturated'])}" if p["saturated"] else ""), flush=True)
    finally:
        triton.stop()
        rclpy.try_shutdown()
    took = time.monotonic() - started
    mode_order = {"remote": 0, "local": 1}
    points.sort(key=lambda p: (p["robots"], mode_order[p["mode"]]))
    lines = ["", f"## Fleet: {', '.join(map(str, a.robots))} robots, {a.seconds:g} s a point, camera {a.rate:g} Hz "
             f"(frame period {1e3 / a.rate:.0f} ms), sweep {took / 60:.1f} min", ""]
    lines += table(points, a.rate)
    if "remote" in a.modes and "local" in a.modes:
        lines += ["", "Remote / local, same run (< 1: remote is lower):", ""] + ratio_table(points)
    lines += ["", saturation(points, a.rate), "", "Per robot:", ""] + robot_table(points)
    print("\n".join(lines))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"machine": info, "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:],
                                      "load_before": load0, "sweep_s": took, "rate_hz": a.rate,
                                      "watchdog": WATCHDOG, "remote_deadline_s": REMOTE_DEADLINE_S,
                                      "points": points}, indent=1))
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
