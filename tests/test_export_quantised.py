"""`scripts/export_policy.py --from`: FP16 and INT8 conversions of the team
fixtures, and the mobile_vla_eval gate they are judged by.

The converted graphs are inspected with the `onnx` package (float16 weights,
Q/DQ nodes) and run here in onnxruntime on the tensors mobile_vla_inputs
writes for every frame window; the MAEs against the episodes' recorded actions
are computed here with numpy, and the FP32 commands are first checked against
PyTorch's (reference.json), so the gate's exit code is judged by numbers that
do not come from the tool.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT
from PIL import Image
from test_eval import EVAL, actions_for, evaluate, frame_paths, manifest, reference, write_team_episode

SCRIPT = ROOT / "scripts" / "export_policy.py"
INPUTS = EVAL.parent / "mobile_vla_inputs"
KIND = "images"  # one graph, a [1, 8, 3, 224, 224] window, repeat_first
TOLERANCE = 1e-4
FRAMES = 12


def export(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantised")
    # Calibration on an episode of its own (another instruction and drive), the gate on the
    # two whose instructions reference.json has: the gate is measured on held-out episodes.
    (d / "calib").mkdir()
    (d / "eval").mkdir()
    write_team_episode(d / "calib" / "c0.h5", KIND, "go to the cup", actions_for(FRAMES, 9))
    runs = [(r["instruction"], actions_for(FRAMES, seed)) for seed, r in enumerate(reference(KIND)["runs"])]
    for i, (instruction, actions) in enumerate(runs):
        write_team_episode(d / "eval" / f"ep{i}.h5", KIND, instruction, actions, vlen=i == 1)

    fp16 = export("--from", manifest(KIND), "--out", d / "fp16", "--fp16")
    assert fp16.returncode == 0, fp16.stdout + fp16.stderr
    int8 = export("--from", manifest(KIND), "--out", d / "int8", "--int8", "--calibrate", d / "calib",
                  "--calibration-frames", 8, "--eval-episodes", d / "eval")
    return {"dir": d, "runs": runs, "int8_run": int8,
            "manifests": {"fp32": manifest(KIND), "fp16": d / "fp16" / f"{KIND}-fp16.json",
                          "int8": d / "int8" / f"{KIND}-int8.json"}}


def window_tensors(d: Path, instruction: str) -> list[dict[str, np.ndarray]]:
    """Per frame, the graph's inputs as the node builds them (mobile_vla_inputs on the episode's
    frames, written losslessly as PNG), the window holding the last 8 frames."""
    pngs = []
    for k, rgb in enumerate(np.asarray(Image.open(f).convert("RGB")) for f in frame_paths(KIND)):
        pngs.append(d / f"{k:02d}.png")
        if not pngs[-1].exists():
            Image.fromarray(rgb).save(pngs[-1])
    out = []
    for k in range(FRAMES):
        o = d / "inputs" / instruction.encode().hex()[:32] / str(k)
        p = subprocess.run([str(INPUTS), str(manifest(KIND)), *map(str, pngs[max(0, k - 7): k + 1]),
                            "--instruction", instruction, "--out", str(o)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        out.append({q.stem: np.load(q) for q in o.glob("*.npy")})
    return out


def commands(graph: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Step 0 of each chunk, denormalised onto the manifest's axes, [frames, 3] (absent axes 0)."""
    m = json.loads(manifest(KIND).read_text())
    s = session(graph)
    names = [i.name for i in s.get_inputs()]
    out = np.zeros((len(feeds), 3))
    for k, f in enumerate(feeds):
        row = s.run(None, {n: f[n] for n in names})[0].reshape(-1, 2)[0].astype(np.float64)
        for axis, spec in m["action"]["axes"].items():
            lo, hi = spec["bounds"]
            out[k, ["linear_x", "linear_y", "angular_z"].index(axis)] = np.clip(
                row[spec["index"]] * (hi - lo) / 2 + (hi + lo) / 2, lo, hi)
    return out


@pytest.fixture(scope="module")
def independent(setup):
    """numpy's MAE of each policy's commands against the recorded actions, from onnxruntime here."""
    d, runs = setup["dir"], setup["runs"]
    commanded = sorted(["linear_x", "linear_y", "angular_z"].index(a)
                       for a in json.loads(manifest(KIND).read_text())["action"]["axes"])
    graphs = {"fp32": manifest(KIND).parent / "policy.onnx", "fp16": d / "fp16" / "policy.onnx",
              "int8": d / "int8" / "policy.onnx"}
    ref = {r["instruction"]: np.array(r["actions"]) for r in reference(KIND)["runs"]}
    errs = {name: [] for name in graphs}
    for instruction, actions in runs:
        feeds = window_tensors(d, instruction)
        for name, g in graphs.items():
            cmd = commands(g, feeds)
            if name == "fp32":
                # The pipeline here is PyTorch's: the FP32 graph on these tensors gives reference.json's commands.
                assert np.abs(cmd - ref[instruction]).max() <= TOLERANCE
            errs[name].append(cmd[:, commanded] - actions[:, commanded])
    return {name: float(np.abs(np.concatenate(e)).mean()) for name, e in errs.items()}


def test_the_graphs_are_converted_and_the_manifests_still_resolve(setup):
    d = setup["dir"]
    fp16 = onnx.load(str(d / "fp16" / "policy.onnx"))
    sizes = {t: sum(int(np.prod(i.dims)) for i in fp16.graph.initializer if i.data_type == t)
             for t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    assert sizes[onnx.TensorProto.FLOAT16] > 0.95 * sum(sizes.values()), sizes
    # Inputs and outputs stay float32: the manifest and the node's feeds are unchanged.
    assert {v.type.tensor_type.elem_type for v in [*fp16.graph.input, *fp16.graph.output]} <= {
        onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    int8 = onnx.load(str(d / "int8" / "policy.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QuantizeLinear") > 50 and ops.count("DequantizeLinear") > 50
    assert any(i.data_type == onnx.TensorProto.INT8 for i in int8.graph.initializer)
    for name, path in setup["manifests"].items():
        if name == "fp32":
            continue
        m = json.loads(path.read_text())
        assert m["name"] == f"{KIND}-{name}" and f"'{KIND}'" in m["description"], m
        assert m["stages"] == [{"name": "policy", "onnx": "policy.onnx"}]
        tok = path.parent / m["texts"][0]["tokenizer"]
        assert tok.resolve() == (manifest(KIND).parent / "../kosmos2/tokenizer.json").resolve()
    # The TensorRT calibration table of the FP32 graph, over the same calibration frames.
    table = d / "int8" / "calibration.flatbuffers"
    assert table.stat().st_size > 1000
    cache = (d / "int8" / "calibration.cache").read_text().splitlines()
    assert len(cache) > 100 and all(float(line.rsplit(" ", 1)[1]) >= 0 for line in cache)


def test_the_gate_judges_fp16_and_int8_as_the_maes_computed_here_do(setup, independent):
    m = setup["manifests"]
    got, p = evaluate("--policy", f"fp32={m['fp32']}", "--policy", f"fp16={m['fp16']}", "--policy",
                      f"int8={m['int8']}", setup["dir"] / "eval", "--gate", "mae<=1.05*ref", check=False)
    maes = {pol["name"]: pol["overall"]["mae"] for pol in got["policies"]}
    print(f"MAE here {independent}; tool's {maes}")
    for name, mae in independent.items():
        assert abs(maes[name] - mae) <= TOLERANCE, (name, maes[name], mae)
    holds = all(independent[n] <= 1.05 * independent["fp32"] for n in ("fp16", "int8"))
    assert p.returncode == (0 if holds else 1), p.stdout
    # The conversion script's own gate run (int8 against its source, on the same held-out episodes).
    run = setup["int8_run"]
    assert ("gate mae<=1.05*ref on images-int8" in run.stdout), run.stdout + run.stderr
    assert run.returncode == (0 if independent["int8"] <= 1.05 * independent["fp32"] else 1), run.stdout + run.stderr
    assert "quantised stages: policy; kept FP32: none" in run.stdout

    # A gate no conversion can meet here: the MAEs here say it fails, and so must the exit code.
    assert min(independent["fp16"], independent["int8"]) > 0.5 * independent["fp32"]
    _, p = evaluate("--policy", f"fp32={m['fp32']}", "--policy", f"fp16={m['fp16']}", "--policy",
                    f"int8={m['int8']}", setup["dir"] / "eval", "--gate", "mae<=0.5*ref", check=False)
    assert p.returncode == 1 and "result: fail" in p.stdout.lower(), p.stdout


def test_features_both_stages_are_calibrated_and_quantised(tmp_path):
    """The two-stage family: the head's windows come from the FP32 backbone's outputs, so it is
    calibrated (and quantised) too; each stage gets its own TensorRT table."""
    kind = "features"
    instruction = reference(kind)["runs"][0]["instruction"]
    write_team_episode(tmp_path / "ep.h5", kind, instruction, actions_for(FRAMES, 4))
    p = export("--from", manifest(kind), "--out", tmp_path / "int8", "--int8", "--calibrate", tmp_path / "ep.h5")
    assert "quantised stages: backbone, head; kept FP32: none" in p.stdout, p.stdout + p.stderr
    # The window waits for 8 frames: the head sees frames 8..12 only, the backbone all 12.
    assert "backbone.onnx: INT8 QDQ" in p.stdout and "12 calibration feeds" in p.stdout
    assert "0 activation x activation MatMuls left float, 5 calibration feeds" in p.stdout
    for stage in ("backbone", "head"):
        ops = [n.op_type for n in onnx.load(str(tmp_path / "int8" / f"{stage}.onnx")).graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        assert (tmp_path / "int8" / f"calibration_{stage}" / "calibration.flatbuffers").stat().st_size > 100
    # Gated (on the calibration episode itself): the script exits with the tool's verdict.
    assert "gate mae<=1.05*ref on" in p.stdout
    assert p.returncode == (0 if "result: pass" in p.stdout else 1), p.stdout
