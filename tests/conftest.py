"""Shared fixtures for the end-to-end tests: the built node, run as a real
process, and an rclpy peer talking to it over Fast DDS on loopback.

Each test gets its own ROS_DOMAIN_ID (derived from the pytest process id and a
counter), so concurrent test processes and leftovers of a previous test never
see each other. Nothing here mocks ROS: the node is the colcon-installed binary.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if os.environ.get("ROS_DISTRO") in ("foxy", "galactic", "humble", "iron"):
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")


def localhost_dds_profile() -> Path:
    """The shipped Fast DDS profile (shared memory for large frames), its UDP
    transport held to the loopback interface: what every test process and every
    node they start uses, so raw frames arrive as they do on a robot and no
    packet leaves this machine."""
    shipped = (ROOT / "config" / "fastdds_shm.xml").read_text()
    udp = "<type>UDPv4</type>"
    assert udp in shipped
    local = shipped.replace(udp, udp + "<interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>")
    path = Path(tempfile.gettempdir()) / f"mobile_vla_fastdds_localhost_{os.getpid()}.xml"
    path.write_text(local)
    return path


# Before rclpy is imported: Fast DDS reads its profile once per process.
os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(localhost_dds_profile())

import rclpy  # noqa: E402  (after the DDS environment is set)
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

_domains = itertools.count()


def next_domain_id() -> int:
    # 1..200, spread by process id so parallel pytest processes rarely meet.
    return 1 + (os.getpid() * 37 + next(_domains)) % 200


def find_pkg_prefix(pkg: str) -> Path:
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        if (Path(prefix) / "share/ament_index/resource_index/packages" / pkg).is_file():
            return Path(prefix)
    raise RuntimeError(f"{pkg} is not installed: run scripts/build.sh and source env.sh")


NODE_EXE = find_pkg_prefix("mobile_vla") / "lib/mobile_vla/mobile_vla_node"
SHARE = find_pkg_prefix("mobile_vla") / "share/mobile_vla"

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Polls `pred` until it returns something truthy; returns it or None at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return None


@dataclass
class Received:
    """Messages collected by a subscription, with their arrival times."""

    msgs: list = field(default_factory=list)
    times: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, m):
        with self.lock:
            self.msgs.append(m)
            self.times.append(time.monotonic())

    def after(self, t: float) -> list:
        with self.lock:
            return [m for m, at in zip(self.msgs, self.times) if at >= t]

    def __len__(self):
        with self.lock:
            return len(self.msgs)


class Peer:
    """An rclpy node in its own context and domain, spun on a background thread."""

    def __init__(self, domain_id: int):
        self.domain_id = domain_id
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_peer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self):
        while self._running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.02)

    def subscribe(self, msg_type, topic: str, qos=RELIABLE) -> Received:
        got = Received()
        self.node.create_subscription(msg_type, topic, got.add, qos)
        return got

    def publisher(self, msg_type, topic: str, qos=RELIABLE):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_node(self, name: str, namespace: str = "/", timeout: float = 15.0) -> bool:
        return bool(wait_for(lambda: (name, namespace) in self.node.get_node_names_and_namespaces(), timeout))

    def topics_of(self, name: str, namespace: str = "/"):
        pubs = dict(self.node.get_publisher_names_and_types_by_node(name, namespace))
        subs = dict(self.node.get_subscriber_names_and_types_by_node(name, namespace))
        return pubs, subs

    def close(self):
        self._running = False
        self._thread.join(timeout=2)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class NodeProcess:
    """The installed mobile_vla_node (or any command) as a child process."""

    def __init__(self, cmd: list[str], domain_id: int, log_path: Path, env: dict | None = None):
        self.cmd = cmd
        self.log_path = log_path
        e = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
        e.update(env or {})
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=e)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"node did not exit within {timeout}s of {sig!r}:\n{self.output()}")

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"node still running after {timeout}s:\n{self.output()}")


def write_params(path: Path, params: dict, node_name: str = "mobile_vla") -> Path:
    """Writes a ROS 2 parameters YAML for `node_name` (nested dicts allowed)."""
    import json

    def emit(d: dict, indent: int) -> list[str]:
        lines = []
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append(" " * indent + f"{k}:")
                lines += emit(v, indent + 2)
            else:
                lines.append(" " * indent + f"{k}: {json.dumps(v)}")
        return lines

    path.write_text("\n".join([f"{node_name}:", "  ros__parameters:"] + emit(params, 4)) + "\n")
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes tens of seconds of real time (deselect with -m 'not slow')")


@pytest.fixture
def domain_id() -> int:
    return next_domain_id()


@pytest.fixture
def peer(domain_id):
    p = Peer(domain_id)
    yield p
    p.close()


@pytest.fixture
def run_node(domain_id, tmp_path):
    """Factory: run_node(params=None, ros_args=(), cmd=None) -> NodeProcess; stopped at teardown."""
    procs: list[NodeProcess] = []

    def start(params: dict | None = None, ros_args=(), cmd: list[str] | None = None, env=None) -> NodeProcess:
        if cmd is None:
            cmd = [str(NODE_EXE), "--ros-args"]
            if params is not None:
                cmd += ["--params-file", str(write_params(tmp_path / f"params{len(procs)}.yaml", params))]
            cmd += list(ros_args)
        p = NodeProcess(cmd, domain_id, tmp_path / f"node{len(procs)}.log", env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            # SIGINT first: a process killed outright leaves its Fast DDS
            # shared-memory segments (64 MB each) behind in /dev/shm.
            p.proc.send_signal(signal.SIGINT)
            try:
                p.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
        p._log.close()
