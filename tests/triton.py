"""The real NVIDIA Triton Inference Server for the tests of the remote policy, and
the faults a test puts between it and the node. Standard library only (numpy
only for `infer`, imported when called); nothing here needs ROS.

    repo = write_repository(MANIFEST, tmp_path / "repo", backend="python")
    with Triton(repo) as t:              # free ports, waits until every model is ready
        node_params["policy"]["url"] = t.grpc_url
        t.pause(); ...; t.resume()       # a server that stops answering, then answers again
        t.kill(); t.restart()            # a dead server, then back on the same ports
    proxy = DelayProxy(t.grpc_port, delay_s=0.2)   # proxy.url: every chunk 0.2 s late
    fault = faulty_repository(repo, "hybrid_policy", tmp_path / "bad", "nan")
    fault.write_text("sleep:2")          # switched live, read at each execute

The server is the tritonserver binary of PyTriton's wheel that scripts/setup.sh
installs into the venv (`tritonserver_root()`), with its Python backend: models
written with `--backend python` (scripts/triton_repository.py) run their graph in
ONNX Runtime on the CPU. It runs in an environment of its own (`server_env()`):
the Python backend's stub embeds a Python interpreter, which must be the one the
venv is built on and must not see env.sh's library path. The stub is built against
numpy 1.x: model.py finds numpy in .venv/triton_stub_site (numpy<2, from setup.sh)
before the venv's site-packages (write_repository's default; with numpy 2 every
output would come back empty).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("triton_repository", ROOT / "scripts" / "triton_repository.py")
triton_repository = sys.modules.setdefault("triton_repository", importlib.util.module_from_spec(_spec))
if not hasattr(triton_repository, "write_repository"):
    _spec.loader.exec_module(triton_repository)
write_repository = triton_repository.write_repository  # (manifest, out, backend=..., max_batch_size=8, ...)

_instances = itertools.count()
_running: "weakref.WeakSet[Triton]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """No server outlives the test process (one a test forgot to stop included)."""
    for t in list(_running):
        t.kill()


def tritonserver_root() -> Path:
    """The wheel's pytriton/tritonserver folder (bin/tritonserver, backends/python, ...),
    found without importing pytriton (its Python dependencies are not installed)."""
    candidates = []
    spec = importlib.util.find_spec("pytriton")  # finds; imports nothing
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "tritonserver" for p in spec.submodule_search_locations]
    paths = sysconfig.get_paths()
    candidates += [Path(paths[k]) / "pytriton" / "tritonserver" for k in ("purelib", "platlib")]
    for c in candidates:
        stub = c / "backends" / "python" / "triton_python_backend_stub"
        if os.access(c / "bin" / "tritonserver", os.X_OK) and stub.is_file():
            return c
    raise RuntimeError("tritonserver is not installed in this Python's site-packages: run scripts/setup.sh")


def server_env() -> dict[str, str]:
    """A clean environment for tritonserver. Its Python backend's stub (isolated mode:
    it ignores PYTHON* variables) finds its standard library from the first `python3`
    on PATH and loads libpython from LD_LIBRARY_PATH: both are those of the interpreter
    this venv is built on when it is a shared build, else the system's (/usr/bin,
    libpython3.X from apt). The wheel's own libraries are found through its RPATH."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    base_bin = Path(getattr(sys, "_base_executable", sys.executable)).parent
    if libdir and ".so" in soname and (Path(libdir) / soname).exists() and (base_bin / "python3").exists():
        env["PATH"] = f"{base_bin}:{env['PATH']}"
        env["LD_LIBRARY_PATH"] = libdir
    return env


def free_ports(n: int) -> list[int]:
    """n distinct ports free on 127.0.0.1 now (the OS's ephemeral ones; a race is retried by the caller)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonError(RuntimeError):
    """An error answer of the server's HTTP API (status and Triton's message)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """One HTTP request: (status, headers, body); an error status is returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Triton:
    """tritonserver on `repo`, on free ports of 127.0.0.1, as a child process (its own
    process group: the Python backend's stubs go with it)."""

    def __init__(self, repo, *, explicit: bool = False, models=(), log_path=None, ports=None):
        """`ports`: (http, grpc, metrics) to start on (a client may be pointed there
        before the server exists); default: free ones at the first start."""
        self.repo = Path(repo).resolve()
        self.explicit = explicit
        self.models = list(models)
        if explicit and not self.models:
            raise ValueError("explicit mode loads only `models`: name at least one")
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="triton_", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.root = tritonserver_root()
        self.proc: subprocess.Popen | None = None
        self._ports: tuple[int, int, int] | None = tuple(ports) if ports else None  # http, grpc, metrics
        self._shm_prefix = f"mvla_triton_{os.getpid()}_{next(_instances)}_"
        self._paused = False

    # --- ports and URLs -------------------------------------------------------------------
    def _port(self, i: int) -> int:
        if self._ports is None:
            raise RuntimeError("Triton has not been started")
        return self._ports[i]

    @property
    def http_port(self) -> int:
        return self._port(0)

    @property
    def grpc_port(self) -> int:
        return self._port(1)

    @property
    def metrics_port(self) -> int:
        return self._port(2)

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # --- life cycle ----------------------------------------------------------------------
    def command(self) -> list[str]:
        http_port, grpc_port, metrics_port = self._ports
        cmd = [str(self.root / "bin" / "tritonserver"), f"--model-repository={self.repo}",
               f"--backend-directory={self.root / 'backends'}",
               f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
               "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
               # No GPU here: no pinned or CUDA memory pools to try.
               "--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0",
               # Its shared-memory regions named so that a killed server's can be removed.
               f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}"]
        if self.explicit:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.models]
        return cmd

    def start(self, timeout: float = 60.0) -> "Triton":
        """Starts the server and waits until it and every model are ready; on the ports of
        an earlier start if there was one (retried while they are still busy), else on free ones."""
        if self.running():
            raise RuntimeError("Triton is already running")
        keep_ports = self._ports is not None
        deadline = time.monotonic() + timeout
        while True:
            if not keep_ports:
                self._ports = tuple(free_ports(3))
            self._spawn()
            try:
                self._wait_ready(deadline)
                return self
            except _PortBusy:
                self._reap()
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"tritonserver: its ports {self._ports} stayed busy\n{self.log_tail()}")
                time.sleep(0.2)
            except BaseException:
                self.kill()
                raise

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {' '.join(self.command())}\n".encode())
            log.flush()
            self._log_start = log.tell()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=server_env(), cwd=str(self.repo), start_new_session=True)
        self._paused = False
        _running.add(self)

    def _wait_ready(self, deadline: float) -> None:
        waiting = self.models if (self.models or self.explicit) else self.repository_models()
        while True:
            log = self.log_tail(10_000, since_start=True)
            if "failed to start" in log and "already in use" in log:
                raise _PortBusy()  # it would exit, after unloading its models: not worth waiting
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.proc.returncode}) before it was ready:\n"
                                   f"{self.log_tail()}")
            # Its own services up (not another server's answering on these ports), then ready.
            try:
                if ("Started HTTPService" in log and "Started GRPCInferenceService" in log and self.ready()
                        and all(self.ready(m) for m in waiting)):
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise RuntimeError(f"tritonserver was not ready in time (models {waiting}):\n{self.log_tail()}")
            time.sleep(0.1)

    def repository_models(self) -> list[str]:
        """The models of the repository folder (those with a config.pbtxt)."""
        return sorted(p.parent.name for p in self.repo.glob("*/config.pbtxt"))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        """Kills whatever is left of the process group, then removes the shared memory it left."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)  # the stubs are in the group: gone with it
        self.proc.wait()
        for p in Path("/dev/shm").glob(self._shm_prefix + "*"):
            try:
                p.unlink()
            except OSError:
                pass
        self._paused = False

    def kill(self) -> None:
        """SIGKILL (the server and its stubs), waits: connections are reset, the ports refuse."""
        self._reap()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a graceful shutdown: models unloaded), SIGKILL after `timeout`."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            if self._paused:
                self._signal_group(signal.SIGCONT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def pause(self) -> None:
        """SIGSTOP to the server and its stubs: connections stay open, nothing answers."""
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: answers again (what was sent meanwhile included)."""
        self._signal_group(signal.SIGCONT)
        self._paused = False

    def restart(self, timeout: float = 60.0) -> "Triton":
        """stop(), then start() on the same ports, waiting until ready (in explicit mode
        with `models` loaded again, whatever load() and unload() did meanwhile)."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> "Triton":
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60, since_start: bool = False) -> str:
        text = self.log()
        if since_start:
            text = self.log_path.read_bytes()[getattr(self, "_log_start", 0):].decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # --- the HTTP API (KServe v2 REST and Triton's extensions) ---------------------------------
    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict | None]:
        """GET http://127.0.0.1:<http_port><path>: (status, JSON body or None)."""
        status, _, body = http("GET", self.http_url + path, timeout=timeout)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    def ready(self, model: str | None = None, timeout: float = 5.0) -> bool:
        """/v2/health/ready, or /v2/models/<model>/ready, is 200."""
        path = "/v2/health/ready" if model is None else f"/v2/models/{model}/ready"
        return http("GET", self.http_url + path, timeout=timeout)[0] == 200

    def metadata(self, model: str) -> dict:
        """GET /v2/models/<model>: name, versions, platform, inputs and outputs (name, datatype, shape)."""
        status, j = self.get(f"/v2/models/{model}")
        if status != 200:
            raise TritonError(status, (j or {}).get("error", ""))
        return j

    def config(self, model: str) -> dict:
        """GET /v2/models/<model>/config: the model's configuration as Triton completed it."""
        status, j = self.get(f"/v2/models/{model}/config")
        if status != 200:
            raise TritonError(status, (j or {}).get("error", ""))
        return j

    def stats(self, model: str) -> dict:
        status, j = self.get(f"/v2/models/{model}/stats")
        if status != 200:
            raise TritonError(status, (j or {}).get("error", ""))
        return j["model_stats"][0]

    def _repository(self, model: str, action: str, timeout: float) -> None:
        status, _, body = http("POST", f"{self.http_url}/v2/repository/models/{model}/{action}", b"{}",
                               {"Content-Type": "application/json"}, timeout=timeout)
        if status != 200:
            raise TritonError(status, body.decode(errors="replace"))

    def unload(self, model: str, timeout: float = 30.0) -> None:
        """Unloads `model` (explicit mode) and waits until it is not ready."""
        self._repository(model, "unload", timeout)
        deadline = time.monotonic() + timeout
        while self.ready(model):
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{model} still ready {timeout}s after its unload")
            time.sleep(0.05)

    def load(self, model: str, timeout: float = 60.0) -> None:
        """Loads (or reloads) `model` from the repository (explicit mode), waits until ready."""
        self._repository(model, "load", timeout)
        deadline = time.monotonic() + timeout
        while not self.ready(model):
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{model} not ready {timeout}s after its load:\n{self.log_tail()}")
            time.sleep(0.05)

    def infer(self, model: str, inputs: dict, outputs=None, timeout: float = 10.0, url: str | None = None) -> dict:
        """One inference over HTTP: see `infer`."""
        return infer(url or self.http_url, model, inputs, outputs, timeout)


class _PortBusy(Exception):
    pass


# KServe v2 datatypes of numpy's.
_DATATYPES = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
              "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
              "float32": "FP32", "float64": "FP64"}


def infer(url: str, model: str, inputs: dict, outputs=None, timeout: float = 10.0) -> dict:
    """One inference of `model` over KServe v2's REST API at `url` (http://host:port),
    tensors in Triton's binary tensor extension (exact for every type, FP16 included):
    {output name: numpy array}, all outputs unless `outputs` names some. An error
    answer raises TritonError; no answer within `timeout` raises TimeoutError (or URLError)."""
    import numpy as np

    header = {"inputs": [], "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in (outputs or [])]}
    if not outputs:
        header["parameters"] = {"binary_data_output": True}
    blobs = []
    for name, a in inputs.items():
        a = np.ascontiguousarray(a)
        if a.dtype.name not in _DATATYPES:
            raise TypeError(f"{name}: no KServe v2 datatype for {a.dtype}")
        blob = a.tobytes()
        header["inputs"].append({"name": name, "shape": list(a.shape), "datatype": _DATATYPES[a.dtype.name],
                                 "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps(header).encode()
    status, headers, body = http("POST", f"{url}/v2/models/{model}/infer", head + b"".join(blobs),
                                 {"Content-Type": "application/octet-stream",
                                  "Inference-Header-Content-Length": str(len(head))}, timeout=timeout)
    hlen = int({k.lower(): v for k, v in headers.items()}.get("inference-header-content-length", len(body)))
    try:
        j = json.loads(body[:hlen])
    except ValueError:
        raise TritonError(status, body[:500].decode(errors="replace"))
    if status != 200:
        raise TritonError(status, j.get("error", ""))
    out, at = {}, hlen
    numpy_of = {v: k for k, v in _DATATYPES.items()}
    for o in j["outputs"]:
        dt = np.dtype(numpy_of[o["datatype"]])
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:  # JSON data
            out[o["name"]] = np.array(o["data"], dt).reshape(o["shape"])
            continue
        if size != dt.itemsize * int(np.prod(o["shape"])):
            raise TritonError(status, f"output {o['name']!r}: {size} bytes for {o['datatype']} {o['shape']} (a "
                                      "Python-backend stub given numpy 2 answers with empty outputs)")
        out[o["name"]] = np.frombuffer(body[at:at + size], dt).reshape(o["shape"]).copy()
        at += size
    return out


class DelayProxy:
    """A TCP proxy on 127.0.0.1 (a free port) to `target_port`, on a background thread:
    every chunk read from either side is forwarded `delay_s` after it was read (the
    value at that moment, settable live), in order. HTTP/2 (gRPC) or HTTP/1 alike."""

    def __init__(self, target_port: int, delay_s: float = 0.0, target_host: str = "127.0.0.1"):
        self.target_host, self.target_port = target_host, target_port
        self.delay_s = delay_s
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._writers: set = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="DelayProxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader, writer) -> None:
        self.connections += 1
        self._writers.add(writer)
        uw = None
        try:
            try:
                ur, uw = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                return  # the target refuses: the client sees its connection closed
            self._writers.add(uw)
            pending = {asyncio.ensure_future(self._pipe(reader, uw)), asyncio.ensure_future(self._pipe(ur, writer))}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not all(t.result() for t in done):
                    break  # a reset on one side: the other side's connection goes too
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # close(): the task ends here (the server's callback would log a cancelled one)
        finally:
            for w in (writer, uw):
                if w is not None:
                    w.close()
                    self._writers.discard(w)

    async def _pipe(self, reader, writer) -> bool:
        """Forwards reader -> writer, each chunk delay_s after it was read, then the EOF:
        True when the EOF went through, False when either side failed."""
        queue: asyncio.Queue = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        fwd = asyncio.ensure_future(forward())
        clean = True
        try:
            while not fwd.done():
                try:
                    data = await reader.read(65536)
                except (ConnectionError, OSError):
                    data, clean = b"", False
                await queue.put((time.monotonic() + self.delay_s, data or None))
                if not data:
                    break
            await fwd  # what was read still goes out, late as every chunk
            return clean
        except (ConnectionError, OSError):
            return False
        finally:
            fwd.cancel()

    def close(self) -> None:
        """Stops listening and drops every connection."""
        if not self._loop.is_running():
            return

        async def shutdown():
            self._server.close()
            for w in list(self._writers):
                w.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> "DelayProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The faulty model: the real model.py (kept as policy_model.py), its answer corrupted
# as REPO/<model>/fault says at each execute.
FAULTY_MODEL_PY = r'''"""A FAULTY model for the tests (tests/triton.py's faulty_repository): runs the
real model (policy_model.py beside this file), then corrupts its answer as the
file ../fault says, read at each execute:
  ""             none
  "nan"          every float output NaN
  "shape"        the first output with an extra leading dim
  "dtype"        the first output as float64 (not the config's type)
  "sleep:<s>"    sleeps <s> seconds before answering
"""

import importlib.util
import time
from pathlib import Path

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("policy_model", _here / "policy_model.py")
_real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_real)  # puts the config's site_packages on sys.path

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

FAULT = _here.parent / "fault"


class TritonPythonModel(_real.TritonPythonModel):
    mode = ""

    def execute(self, requests):
        try:
            self.mode = FAULT.read_text().strip()
        except OSError:
            self.mode = ""
        if self.mode.startswith("sleep:"):
            time.sleep(float(self.mode.split(":", 1)[1]))
        elif self.mode not in ("", "nan", "shape", "dtype"):
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"unknown fault {self.mode!r}"))
                    for _ in requests]
        return super().execute(requests)

    def respond(self, outs):
        outs = list(outs)
        if self.mode == "nan":
            outs = [np.full_like(o, np.nan) if np.issubdtype(o.dtype, np.floating) else o for o in outs]
        elif self.mode == "shape":
            outs[0] = outs[0][None]
        elif self.mode == "dtype":
            outs[0] = outs[0].astype(np.float64)
        return super().respond(outs)
'''

FAULT_MODES = ("", "nan", "shape", "dtype", "sleep:<seconds>")


def faulty_repository(src_repo, model: str, dst, mode: str = "") -> Path:
    """Copies the Python-backend model `model` of the repository `src_repo` into the
    repository `dst` (same name), its model.py replaced by one that runs the real graph
    and corrupts the answer as DST/<model>/fault says (see FAULT_MODES), read at every
    execute so that a test switches it live. Writes `mode` there; returns that file."""
    src = Path(src_repo) / model
    if not (src / "1" / "model.py").is_file():
        raise ValueError(f"{src} is not a Python-backend model (scripts/triton_repository.py --backend python)")
    d = Path(dst) / model
    if d.resolve() == src.resolve():
        raise ValueError("dst must be another repository")
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(src, d)
    (d / "1" / "model.py").rename(d / "1" / "policy_model.py")
    (d / "1" / "model.py").write_text(FAULTY_MODEL_PY)
    fault = d / "fault"
    fault.write_text(mode)
    return fault
