"""FP16 and INT8 conversion of an existing policy export, for `export_policy.py --from`.

Owns converting each stage graph of a manifest (float16 weights; or static
INT8 in QDQ format, its activation ranges calibrated on frames of recorded
episodes fed exactly as the node feeds them, through `mobile_vla_inputs`),
writing the converted manifest beside them, the TensorRT INT8 calibration
table for the Orin, and handing the result to `mobile_vla_eval` for its gate.
Needs no torch. Usage and options: see export_policy.py's docstring.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader
from PIL import Image

HERE = Path(__file__).resolve().parent


DEFAULT_GATE = "mae<=1.05*ref"  # the team's rule: a conversion may lose at most 5 % of the MAE


def tool(name: str) -> str:
    """An installed mobile_vla binary: the colcon install on AMENT_PREFIX_PATH (env.sh), else PATH."""
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        exe = Path(prefix) / "lib" / "mobile_vla" / name
        if exe.is_file():
            return str(exe)
    found = shutil.which(name) or (HERE.parent / "install/mobile_vla/lib/mobile_vla" / name)
    if not Path(found).is_file():
        sys.exit(f"{name} not found: build the package (scripts/build.sh) and `source env.sh`")
    return str(found)


def episode_files(specs: list[str]) -> list[Path]:
    """Team HDF5 episodes named by files, folders (their .h5/.hdf5 files) or globs."""
    out = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in (".h5", ".hdf5"))
        elif p.is_file():
            out.append(p)
        else:
            hits = sorted(Path(g) for g in glob.glob(s))
            if not hits:
                sys.exit(f"{s}: no such episode file, folder or glob")
            out += hits
    return [p.resolve() for p in out]


def read_instruction(f) -> str:
    """`language_instruction` (1,) or (): fixed-length bytes or variable-length UTF-8, as h5py gives them."""
    v = f["language_instruction"][()]
    v = v.reshape(-1)[0] if isinstance(v, np.ndarray) else v
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def stages_of(m: dict) -> list[dict]:
    """The manifest's graphs: v2 `stages`, or v1's single `onnx`."""
    return m["stages"] if "stages" in m else [{"name": "policy", "onnx": m["onnx"]}]


def texts_of(m: dict) -> list[dict]:
    return m.get("texts") or ([m["text"]] if "text" in m else [])


class NpzReader(CalibrationDataReader):
    """One stage's calibration feeds, one .npz per frame on disk: a window of eight 224 px
    frames is 4.8 MB, so a few hundred of them are kept out of memory."""

    def __init__(self, files: list[Path]):
        self.files = list(files)
        self.rewind()

    def get_next(self):
        path = next(self._it, None)
        if path is None:
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def rewind(self):
        self._it = iter(self.files)


def calibration_samples(manifest: Path, m: dict, sessions: list, episodes: list[Path], limit: int,
                        tmp: Path) -> list[list[Path]]:
    """Per stage, the feeds the node gives it on frames of the episodes (.npz files).

    The images and text come from the node's own preprocessing (`mobile_vla_inputs`, on the
    frames written out as PNG, lossless: the pixels the episode holds); the inputs of later
    stages are what the earlier FP32 stages compute, assembled into windows as the manifest's
    `windows` and `window_start` say and with recurrent state carried, as the node runs them."""
    import h5py

    inputs_tool = tool("mobile_vla_inputs")
    stages = stages_of(m)
    windows = {w["input"]: w for w in m.get("windows", [])}
    stage_outputs = {o.name for s in sessions for o in s.get_outputs()}
    # Windows of images are filled by mobile_vla_inputs from the frames it is given; windows of
    # a stage's output are filled here, so those need every earlier frame run through the stages.
    image_t = max([w["length"] for w in windows.values() if w["from"] not in stage_outputs], default=1)
    stage_t = max([w["length"] for w in windows.values() if w["from"] in stage_outputs], default=0)
    states = m.get("state", [])
    sequential = stage_t > 0 or bool(states)
    wait = m.get("window_start", "wait") == "wait"

    lengths = []
    for ep in episodes:
        with h5py.File(ep, "r") as f:
            lengths.append(len(f["images"]))
    total = sum(lengths)
    if total == 0:
        sys.exit("the calibration episodes hold no frames")
    # Frames spread evenly over all episodes (a drive's start, middle and end look different).
    picked = set(np.unique(np.linspace(0, total - 1, min(limit, total)).round().astype(int)).tolist())
    samples: list[list[Path]] = [[] for _ in stages]
    for i in range(len(stages)):
        (tmp / "samples" / str(i)).mkdir(parents=True)
    start = 0
    for e, (ep, n) in enumerate(zip(episodes, lengths)):
        chosen = sorted(k - start for k in picked if start <= k < start + n)
        start += n
        if not chosen:
            continue
        frames_dir = tmp / "frames" / str(e)
        frames_dir.mkdir(parents=True)
        history: dict[str, list[np.ndarray]] = {}
        state = {s["input"]: np.zeros(s["shape"], np.float16 if s.get("dtype") == "f16" else np.float32)
                 for s in states}
        per_instruction: dict[int, dict[str, np.ndarray]] = {}
        with h5py.File(ep, "r") as f:
            instruction = read_instruction(f)
            images = f["images"]
            todo = range(chosen[-1] + 1) if sequential else chosen
            chosen = set(chosen)

            def png(k: int) -> str:
                p = frames_dir / f"{k:06d}.png"
                if not p.exists():
                    Image.fromarray(np.asarray(images[k])).save(p, compress_level=1)
                return str(p)

            for k in todo:
                out_dir = tmp / "inputs"
                shutil.rmtree(out_dir, ignore_errors=True)
                frames = [png(j) for j in range(max(0, k - image_t + 1), k + 1)]
                p = subprocess.run([inputs_tool, str(manifest), *frames, "--instruction", instruction, "--out",
                                    str(out_dir)], capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"mobile_vla_inputs on {ep.name} frame {k}: {p.stderr.strip()}")
                produced = {q.stem: np.load(q) for q in out_dir.glob("*.npy")}
                for i, (stage, sess) in enumerate(zip(stages, sessions)):
                    if stage.get("run") == "per_instruction" and i in per_instruction:
                        produced.update(per_instruction[i])
                        continue
                    feed, blocked = {}, False
                    for inp in sess.get_inputs():
                        name = inp.name
                        if name in produced:
                            feed[name] = produced[name]
                        elif name in windows and windows[name]["from"] in history:
                            w = windows[name]
                            past = history[w["from"]][-w["length"]:]
                            if len(past) < w["length"] and wait:
                                blocked = True  # the node runs no head until the window is full
                                break
                            past = [past[0]] * (w["length"] - len(past)) + past
                            feed[name] = np.concatenate([x[:, None] for x in past], 1)
                        elif name in state:
                            feed[name] = state[name]
                        else:
                            sys.exit(f"stage {stage['name']}: no source for its input {name!r} (not written by "
                                     f"mobile_vla_inputs, nor an earlier stage's output, window or state)")
                    if blocked:
                        continue
                    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
                    produced.update(outs)
                    if stage.get("run") == "per_instruction":
                        per_instruction[i] = outs
                    for name, v in outs.items():
                        if any(w["from"] == name for w in windows.values()):
                            history.setdefault(name, []).append(v)
                    if k in chosen or stage.get("run") == "per_instruction":  # (once per episode)
                        path = tmp / "samples" / str(i) / f"{e:04d}_{k:06d}.npz"
                        np.savez(path, **feed)
                        samples[i].append(path)
                for s in states:
                    if s["output"] in produced:
                        state[s["input"]] = produced[s["output"]]
        shutil.rmtree(frames_dir)
    return samples


def write_graph(model: onnx.ModelProto, path: Path, external: bool = False) -> None:
    """Saves a graph, its weights as external data beside it when asked or when over protobuf's 2 GB."""
    big = sum(t.ByteSize() for t in model.graph.initializer) > 2**31 - 2**26
    if external or big:
        data = path.name + ".data"
        (path.parent / data).unlink(missing_ok=True)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and arithmetic; the graph's inputs and outputs stay float32, so the
    node feeds it exactly as the source and the manifest needs no change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src), load_external_data=True)
    write_graph(convert_float_to_float16(model, keep_io_types=True), dst)


def to_int8(src: Path, dst: Path, reader: NpzReader, tmp: Path, symmetric: bool) -> int:
    """Static INT8, QDQ, weights per output channel (symmetric INT8), activation ranges from
    min/max over the calibration feeds. Returns how many MatMuls stayed float.

    Only the weight-carrying compute ops are quantised (Conv, Gemm, MatMul with a weight):
    LayerNorm, Softmax and the residual adds lose accuracy in 8 bits and buy little (TensorRT
    fuses them into the neighbouring layers anyway), and attention's activation x activation
    MatMuls (Q.K^T, scores.V) are left float: on the team's fixture quantising them doubled
    the largest action error. The LSTM stays float (ORT has no static INT8 LSTM).
    Activations are asymmetric UINT8 by default (half the error of symmetric on the fixture);
    `symmetric` gives INT8 with zero point 0, the only Q/DQ TensorRT takes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    big = sum(t.ByteSize() for t in onnx.load(str(src), load_external_data=True).graph.initializer) > 2**31 - 2**26
    pre = tmp / f"{dst.stem}.pre.onnx"
    # Shape inference and ORT's graph optimisation first, as ORT recommends: it folds the
    # Identity nodes a PyTorch export shares weights through (otherwise those weights look like
    # activations and get per-tensor ranges) and types more tensors. Symbolic shape inference
    # needs sympy, which this repository does not install: without it, ONNX's shape inference.
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic, save_as_external_data=big)
            break
        except Exception as e:  # noqa: BLE001 (a graph it cannot process is quantised as exported)
            failure = f"{type(e).__name__}: {e}"
    else:
        print(f"  quant_pre_process failed ({failure}); quantising the graph as exported")
        pre = src
    model = onnx.load(str(pre), load_external_data=False)
    weights = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                           for o in n.output}
    act_x_act = [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input)]
    activation = QuantType.QInt8 if symmetric else QuantType.QUInt8
    quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=act_x_act,
                    activation_type=activation, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=big,
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return len(act_x_act)


def tensorrt_table(src: Path, reader: NpzReader, out_dir: Path, tmp: Path) -> list[str]:
    """The TensorRT INT8 calibration table of the FP32 graph (every float tensor's symmetric
    dynamic range over the same calibration feeds), as ORT's write_calibration_table writes it:
    calibration.flatbuffers (what trt_int8_calibration_table_name reads, with
    trt_int8_use_native_calibration_table 0), .cache (text) and .json."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, write_calibration_table

    calibrator = create_calibrator(str(src), None, augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax,
                                   # TensorRT takes one number per tensor, the range being
                                   # [-r, r]: ORT's table writes max(highest, lowest), so the
                                   # ranges must be symmetric for that to be max |x|.
                                   extra_options={"symmetric": True})
    calibrator.set_execution_providers(["CPUExecutionProvider"])
    calibrator.collect_data(reader)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_calibration_table(calibrator.compute_data(), dir=str(out_dir))
    return sorted(p.name for p in out_dir.glob("calibration.*"))


def op_count(path: Path, *ops: str) -> int:
    return sum(n.op_type in ops for n in onnx.load(str(path), load_external_data=False).graph.node)


def stage_diffs(src: Path, dst: Path, reader: NpzReader, limit: int = 8) -> float:
    """Largest |output difference| between the FP32 and the converted stage on calibration feeds."""
    a, b = ort_session(src), ort_session(dst)
    worst = 0.0
    for _ in range(limit):
        feed = reader.get_next()
        if feed is None:
            break
        for x, y in zip(a.run(None, feed), b.run(None, feed)):
            worst = max(worst, float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()))
    return worst


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # no warnings about constant folding of float16 MatMuls
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def convert(ap: argparse.ArgumentParser, a) -> None:
    """--from: the policy converted to FP16 or INT8 in --out, then gated by mobile_vla_eval."""
    if a.fp16 == a.int8:
        ap.error("--from needs exactly one of --fp16 and --int8")
    if a.int8 and not a.calibrate:
        ap.error("--int8 needs --calibrate EPISODES (the frames the activation ranges come from)")
    src = a.source.resolve()
    out = a.out.resolve()
    if out == src.parent:
        ap.error("--out must not be the source policy's folder")
    m = json.loads(src.read_text())
    mode = "fp16" if a.fp16 else "int8"
    eval_specs = a.eval_episodes or (a.calibrate if a.int8 else [])
    if a.gate and not eval_specs:
        ap.error("--gate needs --eval-episodes (the episodes the gate is measured on)")
    out.mkdir(parents=True, exist_ok=True)
    new = json.loads(json.dumps(m))
    stages = stages_of(m)

    # The tokenizers (and any other file the manifest names) stay where they are: one inside
    # the policy's folder is copied along, one outside (the shared ../kosmos2/tokenizer.json)
    # is named relative to --out, so the new manifest resolves the same file.
    def relocate(rel: str) -> str:
        p = Path(rel)
        if p.is_absolute():
            return rel
        full = (src.parent / p).resolve()
        if full.is_relative_to(src.parent):
            (out / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(full, out / p)
            return rel
        # Relative when both sit under one tree (a repository moved or mounted elsewhere
        # still resolves), absolute when they share nothing but the root.
        return os.path.relpath(full, out) if os.path.commonpath([full, out]) != "/" else str(full)

    for t_src, t_new in zip(texts_of(m), texts_of(new)):
        t_new["tokenizer"] = relocate(t_src["tokenizer"])

    src_paths = [(src.parent / s["onnx"]).resolve() for s in stages]
    names = [Path(s["onnx"]).name for s in stages]
    if len(set(names)) < len(names):
        names = [f"{s['name']}_{n}" for s, n in zip(stages, names)]
    dst_paths = [out / n for n in names]
    for s, n in zip(stages_of(new), names):
        s["onnx"] = n
    if "stages" not in new:
        new["onnx"] = names[0]

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="export_policy_") as tmp_name:
        tmp = Path(tmp_name)
        if a.fp16:
            for s, p, q in zip(stages, src_paths, dst_paths):
                to_fp16(p, q)
                ort_session(q)  # loads in onnxruntime's CPU provider, or raises
                print(f"stage {s['name']}: {p.name} -> {q} (float16 weights, float32 inputs and outputs)")
            what = "FP16 (float16 weights, float32 inputs and outputs)"
        else:
            episodes = episode_files(a.calibrate)
            sessions = [ort_session(p) for p in src_paths]
            samples = calibration_samples(src, m, sessions, episodes, a.calibration_frames, tmp)
            print(f"calibration: {len(episodes)} episode(s), {max(len(s) for s in samples)} frame(s) "
                  f"({time.monotonic() - t0:.1f} s)")
            quantised, kept = [], []
            for i, (s, p, q) in enumerate(zip(stages, src_paths, dst_paths)):
                if not samples[i]:
                    # No frame reached this stage (a waiting window never filled): keep it FP32.
                    write_graph(onnx.load(str(p), load_external_data=True), q)
                    kept.append(s["name"])
                    print(f"stage {s['name']}: no calibration frame reached it; kept FP32")
                    continue
                float_matmuls = to_int8(p, q, NpzReader(samples[i]), tmp, a.symmetric)
                ort_session(q)
                qdq = op_count(q, "QuantizeLinear", "DequantizeLinear")
                diff = stage_diffs(p, q, NpzReader(samples[i]))
                # TensorRT's own INT8 path: the FP32 graph plus a calibration table.
                table_dir = out if len(stages) == 1 else out / f"calibration_{s['name']}"
                table = tensorrt_table(p, NpzReader(samples[i]), table_dir, tmp)
                quantised.append(s["name"])
                print(f"stage {s['name']}: {p.name} -> {q}: INT8 QDQ, {qdq} Q/DQ nodes, "
                      f"{float_matmuls} activation x activation MatMuls left float, {len(samples[i])} calibration "
                      f"feeds, max |FP32 - INT8| output on them {diff:.3g}; "
                      f"TensorRT table {table_dir}/{{{','.join(table)}}}")
            print(f"quantised stages: {', '.join(quantised) or 'none'}; kept FP32: {', '.join(kept) or 'none'}")
            what = (f"INT8 (static QDQ, {'symmetric' if a.symmetric else 'asymmetric'} activations, per-channel "
                    f"Conv/MatMul/Gemm weights; stages quantised: "
                    f"{', '.join(quantised) or 'none'}; calibrated on {max(len(s) for s in samples)} frames of "
                    f"{len(episodes)} episode(s))")
    new["name"] = f"{m['name']}-{mode}"
    new["description"] = (f"{what} conversion of '{m['name']}' ({src}) by scripts/export_policy.py --from. "
                          f"Source: {m.get('description', '')}")
    manifest = out / f"{src.stem}-{mode}.json"
    manifest.write_text(json.dumps(new, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {manifest} ({time.monotonic() - t0:.1f} s)")

    if not eval_specs:
        print("no --eval-episodes: not gated (run mobile_vla_eval --policy ref=SOURCE --policy NEW EPISODES "
              f"--gate '{DEFAULT_GATE}' on held-out episodes)")
        return
    if a.int8 and not a.eval_episodes:
        print("note: gating on the calibration episodes is optimistic; pass held-out --eval-episodes")
    cmd = [tool("mobile_vla_eval"), "--policy", f"ref={src}", "--policy", f"{new['name']}={manifest}", *eval_specs]
    for g in a.gate or [DEFAULT_GATE]:
        cmd += ["--gate", g]
    print("$ " + " ".join(cmd), flush=True)
    sys.exit(subprocess.run(cmd).returncode)
