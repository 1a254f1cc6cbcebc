#!/usr/bin/env python3
"""Writes an NVIDIA Triton Inference Server model repository from a policy
manifest, for the node's remote policy (it sends each per-frame stage's graph
inputs to Triton over gRPC, KServe v2 protocol, and reads back its outputs).

    python3 scripts/triton_repository.py MANIFEST.json --out REPO [--backend onnxruntime|python]
        [--max-batch-size 8] [--queue-delay-us 500] [--site-packages DIR]

Every per-frame stage of MANIFEST becomes one model, named <manifest name>_<stage
name> (hybrid_policy), or the stage's "served_as" when it has one:

    REPO/<model>/config.pbtxt
    REPO/<model>/1/model.onnx        the stage's graph, with its external-data files
                                     (policy.onnx.data, ...) beside it under their own names
    REPO/<model>/1/model.py          --backend python only

Per-instruction stages (the hybrid's CLIP text tower) stay on the robot and are
not written. A version-1 manifest (one "onnx", no "stages") is one per-frame
stage, served under the manifest's name.

The config's inputs and outputs are the graph's: names, data types and dims
(a symbolic or unknown dim is -1).

  --backend onnxruntime  (default) the production layout, for a GPU server: Triton's
          ONNX Runtime backend on KIND_GPU with ONNX Runtime's TensorRT execution
          provider in FP16 (the engine is built on the server at first load).
  --backend python  the same graph run by a model.py in ONNX Runtime on the CPU
          (KIND_CPU): what the tests serve (the tritonserver that scripts/setup.sh
          installs has only the Python backend). Its stub does not see this venv:
          model.py puts --site-packages (default: this interpreter's) first on
          sys.path before anything imports numpy. The stub is a C++ program built
          against a numpy ABI: PyTriton 0.7.0's (Triton 2.51) needs numpy<2 (with
          numpy 2 every output comes back empty), so the default starts with
          .venv/triton_stub_site, the numpy 1.26 that scripts/setup.sh puts there.

Batching: a model batches (max_batch_size N, dims without the batch dim, dynamic
batching with at most --queue-delay-us of queueing) when every input and output
has a batch dim Triton may use: for the ONNX Runtime backend, a free (symbolic)
first dim on all of them (the backend refuses to load a batching model whose
graph fixes it, even to 1); for the Python backend, a first dim that is free or 1
(model.py runs requests of a fixed-1 graph one by one, and stacks those of a free
one into one run). Otherwise max_batch_size is 0 and the dims are the graph's
full dims. Either way a client sends [1, ...] tensors; Triton's metadata shows
the batch dim as -1 when max_batch_size > 0.

Start a server on it with `tritonserver --model-repository REPO` (a Python-backend
repository needs a server with the Python backend: tests/triton.py runs one).
Needs onnx or onnxruntime (to read the graphs' inputs and outputs), not torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("onnxruntime", "python")
VERSION = "1"  # the model version directory Triton loads

# ONNX TensorProto element types and ONNX Runtime's type strings -> Triton's.
_ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
               6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16",
               11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
_ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(uint8)": "TYPE_UINT8", "tensor(int8)": "TYPE_INT8",
              "tensor(uint16)": "TYPE_UINT16", "tensor(int16)": "TYPE_INT16", "tensor(int32)": "TYPE_INT32",
              "tensor(int64)": "TYPE_INT64", "tensor(string)": "TYPE_STRING", "tensor(bool)": "TYPE_BOOL",
              "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64", "tensor(uint32)": "TYPE_UINT32",
              "tensor(uint64)": "TYPE_UINT64", "tensor(bfloat16)": "TYPE_BF16"}

# The Python backend's model: the graph in ONNX Runtime on the CPU.
MODEL_PY = r'''"""Triton Python-backend model written by scripts/triton_repository.py: runs
model.onnx (beside this file) in ONNX Runtime on the CPU, one graph input per
request input and one response output per graph output, in the graph's order."""

import json
import os
import re
import sys
from pathlib import Path


def use_site_packages(dirs: str) -> None:
    """Puts the os.pathsep-separated `dirs` first on sys.path. Their .pth files are not
    run: a venv's may start things (the ROS wheels' bootstrapper re-executes Python)."""
    for d in reversed([d for d in dirs.split(os.pathsep) if d]):
        if d not in sys.path:
            sys.path.insert(0, d)


# The stub's Python is not the venv's and ignores the environment (isolated mode), and
# triton_python_backend_utils itself imports numpy: the config's site_packages parameter
# goes on sys.path before anything imports numpy, when this module is imported.
_config = Path(__file__).resolve().parent.parent / "config.pbtxt"
_m = re.search(r'key:\s*"site_packages"\s*value\s*\{\s*string_value:\s*("(?:[^"\\]|\\.)*")', _config.read_text())
if _m:
    use_site_packages(json.loads(_m.group(1)))

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        use_site_packages(config.get("parameters", {}).get("site_packages", {}).get("string_value", ""))
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        # Several requests go into one run only when the graph leaves the batch dim free.
        io = list(self.session.get_inputs()) + list(self.session.get_outputs())
        self.stackable = all(len(t.shape) > 0 and not isinstance(t.shape[0], int) for t in io)

    def feeds(self, request):
        f = {}
        for name in self.inputs:
            t = pb_utils.get_input_tensor_by_name(request, name)
            if t is None:
                raise ValueError(f"missing input {name!r}")
            f[name] = t.as_numpy()
        return f

    def run(self, feeds):
        return self.session.run(self.outputs, feeds)

    def run_stacked(self, batch):
        """One run for requests of identical shapes, its outputs split back; None if it cannot."""
        first = batch[0][1]
        if not self.stackable or any({n: v.shape for n, v in f.items()} != {n: v.shape for n, v in first.items()}
                                     for _, f in batch):
            return None
        n = first[self.inputs[0]].shape[0] if self.inputs and first[self.inputs[0]].ndim else 0
        try:
            outs = self.run({name: np.concatenate([f[name] for _, f in batch]) for name in self.inputs})
        except Exception:
            return None  # one by one: each request gets its own answer or error
        if n == 0 or any(o.ndim == 0 or o.shape[0] != n * len(batch) for o in outs):
            return None
        return [[o[k * n:(k + 1) * n] for o in outs] for k in range(len(batch))]

    def respond(self, outs):
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, np.ascontiguousarray(o)) for name, o in zip(self.outputs, outs)])

    def execute(self, requests):
        responses = [None] * len(requests)
        batch = []
        for k, request in enumerate(requests):
            try:
                batch.append((k, self.feeds(request)))
            except Exception as e:
                responses[k] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
        stacked = self.run_stacked(batch) if len(batch) > 1 else None
        for j, (k, f) in enumerate(batch):
            try:
                responses[k] = self.respond(stacked[j] if stacked is not None else self.run(f))
            except Exception as e:
                responses[k] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
        return responses

    def finalize(self):
        self.session = None
'''


@dataclass
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: list[int]  # -1: symbolic or unknown


@dataclass
class Stage:
    model: str  # the Triton model name
    onnx: Path


def graph_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers excluded) and outputs, with onnx if it is
    installed (reads no weights), else with onnxruntime."""
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        m = onnx.load(str(path), load_external_data=False)
        init = {t.name for t in m.graph.initializer}

        def spec(v) -> TensorSpec:
            if not v.type.HasField("tensor_type"):
                raise SystemExit(f"{path}: {v.name!r} is not a tensor (Triton serves tensors)")
            t = v.type.tensor_type
            if t.elem_type not in _ONNX_TYPES:
                raise SystemExit(f"{path}: {v.name!r} has ONNX element type {t.elem_type}, which Triton has no type for")
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]
            return TensorSpec(v.name, _ONNX_TYPES[t.elem_type], dims)

        return [spec(v) for v in m.graph.input if v.name not in init], [spec(v) for v in m.graph.output]
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def ort_spec(v) -> TensorSpec:
        if v.type not in _ORT_TYPES:
            raise SystemExit(f"{path}: {v.name!r} has type {v.type}, which Triton has no type for")
        return TensorSpec(v.name, _ORT_TYPES[v.type], [d if isinstance(d, int) and d > 0 else -1 for d in v.shape])

    return [ort_spec(v) for v in s.get_inputs()], [ort_spec(v) for v in s.get_outputs()]


def per_frame_stages(manifest_path: Path) -> list[Stage]:
    """The manifest's per-frame stages, as Triton models: `<name>_<stage>` or the stage's
    `served_as` (version 1: the one graph, named after the policy, as the node names it)."""
    m = json.loads(manifest_path.read_text())
    name = m.get("name")
    if not name:
        raise SystemExit(f"{manifest_path}: the manifest has no \"name\"")
    base = manifest_path.parent
    if m.get("version", 1) == 1:
        if "onnx" not in m:
            raise SystemExit(f"{manifest_path}: a version-1 manifest needs \"onnx\"")
        return [Stage(name, base / m["onnx"])]
    if m["version"] != 2:
        raise SystemExit(f"{manifest_path}: manifest version {m['version']} is not known here (1 or 2)")
    out = []
    for s in m.get("stages", []):
        run = s.get("run", "per_frame")
        if run not in ("per_frame", "per_instruction"):
            raise SystemExit(f"{manifest_path}: stage {s.get('name')!r} has run {run!r}")
        if run == "per_frame":
            out.append(Stage(s.get("served_as") or f"{name}_{s['name']}", base / s["onnx"]))
    names = [s.model for s in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"{manifest_path}: two per-frame stages would be served as the same model: {names}")
    if not out:
        raise SystemExit(f"{manifest_path}: no per-frame stage to serve")
    return out


def batchable(inputs: list[TensorSpec], outputs: list[TensorSpec], backend: str) -> bool:
    """Whether every tensor has a first dim Triton can batch on (see the module's doc)."""
    ok = (-1,) if backend == "onnxruntime" else (-1, 1)
    return all(len(t.dims) > 0 and t.dims[0] in ok for t in inputs + outputs)


def model_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], backend: str = "onnxruntime",
                 max_batch_size: int = 8, queue_delay_us: int = 500, site_packages: str | None = None) -> str:
    """The config.pbtxt of one model."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: one of {BACKENDS}")
    batch = max_batch_size > 0 and batchable(inputs, outputs, backend)

    def tensors(key: str, ts: list[TensorSpec]) -> list[str]:
        out = [f"{key} ["]
        for k, t in enumerate(ts):
            dims = t.dims[1:] if batch else t.dims
            out += ["  {", f"    name: {json.dumps(t.name)}", f"    data_type: {t.data_type}",
                    f"    dims: [ {', '.join(str(d) for d in dims)} ]", "  }" + ("," if k + 1 < len(ts) else "")]
        return out + ["]"]

    lines = [f"name: {json.dumps(name)}", f"backend: {json.dumps(backend)}",
             f"max_batch_size: {max_batch_size if batch else 0}"]
    lines += tensors("input", inputs) + tensors("output", outputs)
    if batch:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    kind = "KIND_GPU" if backend == "onnxruntime" else "KIND_CPU"
    lines += [f"instance_group [ {{ kind: {kind} count: 1 }} ]"]
    if backend == "onnxruntime":
        lines += ["optimization { execution_accelerators {", "  gpu_execution_accelerator : [ {",
                  '    name : "tensorrt"', '    parameters { key: "precision_mode" value: "FP16" }',
                  "  } ]", "} }"]
    else:
        sp = site_packages if site_packages is not None else default_site_packages()
        lines += [f'parameters {{ key: "site_packages" value {{ string_value: {json.dumps(sp)} }} }}']
    return "\n".join(lines) + "\n"


def default_site_packages() -> str:
    """This interpreter's site-packages (purelib and platlib when they differ), os.pathsep-joined,
    after the venv's triton_stub_site when scripts/setup.sh made one (a numpy<2 for the stub)."""
    p = sysconfig.get_paths()
    stub_site = Path(sys.prefix) / "triton_stub_site"
    first = [str(stub_site)] if (stub_site / "numpy").is_dir() else []
    return os.pathsep.join(dict.fromkeys(first + [p["purelib"], p["platlib"]]))


def external_data(onnx_path: Path) -> list[Path]:
    """The graph's external-data files, relative to its folder: those beside it whose
    name starts with the graph's file name (policy.onnx.data), and any other the
    graph's initializers name (read with onnx, when installed)."""
    files = {p.relative_to(onnx_path.parent) for p in onnx_path.parent.iterdir()
             if p.is_file() and p.name != onnx_path.name and p.name.startswith(onnx_path.name)}
    try:
        import onnx
    except ImportError:
        return sorted(files)
    m = onnx.load(str(onnx_path), load_external_data=False)
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location")
            if loc:
                if not (onnx_path.parent / loc).is_file():
                    raise SystemExit(f"{onnx_path}: its external data {loc!r} is missing")
                files.add(Path(loc))
    return sorted(files)


def write_repository(manifest: Path, out: Path, backend: str = "onnxruntime", max_batch_size: int = 8,
                     queue_delay_us: int = 500, site_packages: str | None = None, verbose: bool = True) -> list[Path]:
    """Writes a model for every per-frame stage of `manifest` into the repository `out`
    (replacing models of the same names); returns the models' folders."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: one of {BACKENDS}")
    manifest = Path(manifest).resolve()
    out = Path(out)
    written = []
    for st in per_frame_stages(manifest):
        if not st.onnx.is_file():
            raise SystemExit(f"{manifest}: the graph {st.onnx} is missing")
        inputs, outputs = graph_io(st.onnx)
        data = external_data(st.onnx)
        d = out / st.model
        if d.exists():
            shutil.rmtree(d)
        v = d / VERSION
        v.mkdir(parents=True)
        shutil.copy2(st.onnx, v / "model.onnx")
        for rel in data:  # the graph refers to them by name, relative to itself
            (v / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(st.onnx.parent / rel, v / rel)
        config = model_config(st.model, inputs, outputs, backend, max_batch_size, queue_delay_us, site_packages)
        (d / "config.pbtxt").write_text(config)
        if backend == "python":
            (v / "model.py").write_text(MODEL_PY)
        written.append(d)
        if verbose:
            mbs = next(line for line in config.splitlines() if line.startswith("max_batch_size"))
            extra = f" + {', '.join(str(p) for p in data)}" if data else ""
            print(f"wrote {d} ({backend}, {mbs}; {st.onnx.name}{extra}; "
                  f"{len(inputs)} inputs, {len(outputs)} outputs)")
    if verbose:
        hint = ("tritonserver --model-repository " + str(out.resolve()))
        if backend == "python":
            hint += (" (a server with the Python backend; tests/triton.py's Triton runs the one "
                     "scripts/setup.sh installs)")
        print(f"start it: {hint}")
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, metavar="MANIFEST", help="the policy's manifest (.json)")
    ap.add_argument("--out", type=Path, required=True, metavar="REPO", help="the model repository to write into")
    ap.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                    help="onnxruntime: the production layout (GPU, TensorRT FP16); python: model.py in "
                         "ONNX Runtime on the CPU (tests) (default: %(default)s)")
    ap.add_argument("--max-batch-size", type=int, default=8, metavar="N",
                    help="max_batch_size of a model that can batch (0: never batch) (default: %(default)s)")
    ap.add_argument("--queue-delay-us", type=int, default=500, metavar="N",
                    help="dynamic batching's max_queue_delay_microseconds (default: %(default)s)")
    ap.add_argument("--site-packages", metavar="DIR",
                    help="python backend: where model.py finds numpy and onnxruntime (several joined by "
                         f"{os.pathsep!r}) (default: this interpreter's, {default_site_packages()})")
    a = ap.parse_args()
    if a.max_batch_size < 0 or a.queue_delay_us < 0:
        ap.error("--max-batch-size and --queue-delay-us are >= 0")
    if a.site_packages is not None and a.backend != "python":
        ap.error("--site-packages is for --backend python")
    write_repository(a.manifest, a.out, a.backend, a.max_batch_size, a.queue_delay_us, a.site_packages)


if __name__ == "__main__":
    sys.exit(main())
