#!/usr/bin/env python3
"""Writes a mobile_vla policy manifest (version 2) from Hugging Face model
folders and the exported ONNX graphs, so the node preprocesses and tokenises
exactly as the model was trained.

Everything about preprocessing comes from the processors' own files:
`preprocessor_config.json` (size or shortest_edge, crop_size, do_center_crop,
resample, rescale_factor, image_mean, image_std; transformers 5 keeps these in
`processor_config.json`'s `image_processor`), `processor_config.json`
(Kosmos-2's num_image_tokens), `tokenizer.json` and `tokenizer_config.json` /
`special_tokens_map.json` (special tokens and their ids). Everything about
types and shapes comes from the graphs: which inputs exist, their element
types (int32 or int64 ids, f16 or f32 images and state) and whether a text
axis is dynamic (exact-length) or fixed (padded to that length).

    scripts/hf_manifest.py --name hybrid \\
        --stage clip_text=clip_text.onnx:per_instruction --stage policy=policy.onnx \\
        --image pixel_values=kosmos2/ --image clip_pixel_values=clip/ \\
        --text input_ids=kosmos2/ --text clip_input_ids=clip/ --prompt input_ids='<grounding>{instruction}' \\
        --state h_in:h_out --state c_in:c_out --action actions --step first \\
        -o hybrid.json

Windows (`--window GRAPH_INPUT=FROM:T`, `--window-start`) and named,
denormalised action axes (`--axes linear_x=0,linear_y=1 --bounds -1.15,1.15`)
write the RoboVLMs-style heads' manifests (see the README's Models section).

Paths in the manifest are written relative to the manifest's folder. Needs
`onnx` and the standard library only (no torch, no transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import onnx

# PIL.Image.Resampling values as preprocessor_config.json stores them.
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
RESAMPLE_NAMES = {1: "lanczos", 4: "box", 5: "hamming"}
ROLE_SUFFIXES = ("input_ids", "attention_mask", "position_ids", "image_embeds_position_mask")


def fail(msg: str) -> None:
    sys.exit(f"hf_manifest: {msg}")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def graph_inputs(paths: list[Path]) -> dict[str, tuple[int, list]]:
    """name -> (ONNX element type, dims with -1 for dynamic), over every stage's graph."""
    out = {}
    for p in paths:
        g = onnx.load(str(p), load_external_data=False).graph
        inits = {i.name for i in g.initializer}
        for i in g.input:
            if i.name in inits:
                continue
            t = i.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            out[i.name] = (t.elem_type, dims)
    return out


def graph_outputs(paths: list[Path]) -> dict[str, tuple[int, list]]:
    out = {}
    for p in paths:
        for o in onnx.load(str(p), load_external_data=False).graph.output:
            t = o.type.tensor_type
            out[o.name] = (t.elem_type, [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim])
    return out


def float_type(elem: int, what: str) -> str:
    if elem == onnx.TensorProto.FLOAT:
        return "f32"
    if elem == onnx.TensorProto.FLOAT16:
        return "f16"
    fail(f"{what} is {onnx.TensorProto.DataType.Name(elem)}; f32 or f16 expected")


# torchvision's transforms.Resize((H, W)) on a PIL image (PIL's bilinear, antialiased) and ImageNet's mean and std.
IMAGENET = {"filter": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def image_entry(name: str, folder: str, inputs: dict, windows: dict) -> dict:
    """An image input from a processor folder, or `imagenet` (torchvision Resize((H, W)) + ImageNet
    normalisation); an image only a window takes is sized from the window's graph input [1, T, ...]."""
    if name in inputs:
        elem, dims = inputs[name]
    elif name in windows and windows[name] in inputs:
        elem, wdims = inputs[windows[name]]
        dims = [1] + wdims[2:]
    else:
        fail(f"--image {name}: no graph input of that name, nor a window of it (inputs: {sorted(inputs)})")
    if folder == "imagenet":
        if len(dims) != 4 or dims[1] != 3:
            fail(f"--image {name}: imagenet preprocessing needs an NCHW input, the graph has {dims}")
        return {"input": name, "width": dims[3], "height": dims[2], "resize": "stretch", "filter": IMAGENET["filter"],
                "antialias": True, "channel_order": "rgb", "layout": "nchw", "scale": 1 / 255,
                "mean": IMAGENET["mean"], "std": IMAGENET["std"], "dtype": float_type(elem, f"image input {name}")}
    folder = Path(folder)
    # The hub's files have preprocessor_config.json; transformers 5 saves it inside processor_config.json.
    pc = read_json(folder / "preprocessor_config.json") or read_json(folder / "processor_config.json").get(
        "image_processor", {})
    if not pc:
        fail(f"--image {name}: {folder} has no preprocessor_config.json (nor an image_processor in processor_config.json)")
    if len(dims) != 4:
        fail(f"--image {name}: graph input has shape {dims}, expected [1, 3, H, W] or [1, H, W, 3]")
    layout = "nchw" if dims[1] == 3 else "nhwc"
    h, w = (dims[2], dims[3]) if layout == "nchw" else (dims[1], dims[2])
    resample = pc.get("resample", 2)
    if resample not in RESAMPLE:
        fail(f"--image {name}: resample {resample} ({RESAMPLE_NAMES.get(resample, '?')}) is not supported "
             f"(nearest 0, bilinear 2, bicubic 3)")
    size = pc.get("size", {})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    entry = {"input": name, "width": w, "height": h}
    if pc.get("do_resize", True) is False:
        fail(f"--image {name}: do_resize false (the model takes frames at their own size) is not supported")
    if "shortest_edge" in size:
        crop = pc.get("crop_size", {"height": size["shortest_edge"], "width": size["shortest_edge"]})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        if not pc.get("do_center_crop", True):
            fail(f"--image {name}: shortest_edge without center crop gives frame-dependent sizes; not supported")
        if (crop["height"], crop["width"]) != (h, w):
            fail(f"--image {name}: crop_size {crop} but the graph takes {h}x{w}")
        entry.update(resize="shortest_edge", shortest_edge=size["shortest_edge"])
    elif "height" in size and "width" in size:
        if (size["height"], size["width"]) != (h, w):
            fail(f"--image {name}: size {size} but the graph takes {h}x{w}")
        if pc.get("do_center_crop") and pc.get("crop_size") not in (None, size):
            fail(f"--image {name}: a centre crop after a fixed-size resize is not supported")
        entry["resize"] = "stretch"
    else:
        fail(f"--image {name}: size {size} is not supported (shortest_edge, or height and width)")
    mean = pc.get("image_mean", [0.0, 0.0, 0.0]) if pc.get("do_normalize", True) else [0.0, 0.0, 0.0]
    std = pc.get("image_std", [1.0, 1.0, 1.0]) if pc.get("do_normalize", True) else [1.0, 1.0, 1.0]
    scale = pc.get("rescale_factor", 1 / 255) if pc.get("do_rescale", True) else 1.0
    entry.update(filter=RESAMPLE[resample], antialias=True, channel_order="rgb", layout=layout, scale=scale,
                 mean=list(mean), std=list(std), dtype=float_type(elem, f"image input {name}"))
    return entry


def token_id(tokenizer: dict, token: str) -> int:
    for t in tokenizer.get("added_tokens", []):
        if t["content"] == token:
            return t["id"]
    vocab = tokenizer.get("model", {}).get("vocab", {})
    if isinstance(vocab, dict) and token in vocab:
        return vocab[token]
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
        for i, (piece, _) in enumerate(vocab):
            if piece == token:
                return i
    fail(f"token {token!r} is not in the tokenizer")


def special(folder: Path, key: str):
    for f in ("special_tokens_map.json", "tokenizer_config.json"):
        v = read_json(folder / f).get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v:
            return v
    return None


def text_entry(name: str, folder: Path, inputs: dict, prompt: str, out_dir: Path) -> dict:
    if not name.endswith("input_ids"):
        fail(f"--text {name}: the name must end in input_ids (the other roles share its prefix)")
    if name not in inputs:
        fail(f"--text {name}: no graph input of that name (inputs: {sorted(inputs)})")
    prefix = name[: -len("input_ids")]
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        fail(f"--text {name}: {tok_path} is missing (save the processor with a fast tokenizer)")
    tokenizer = json.loads(tok_path.read_text())
    elem, dims = inputs[name]
    dtype = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}.get(elem)
    if dtype is None or len(dims) != 2:
        fail(f"--text {name}: graph input is {onnx.TensorProto.DataType.Name(elem)}{dims}; int32 or int64 [1, L] expected")
    proc = read_json(folder / "processor_config.json")
    kind = proc.get("processor_class", "")
    roles = {"input_ids": name}
    for role in ROLE_SUFFIXES[1:]:
        if prefix + role in inputs:
            roles[role] = prefix + role
    pad = special(folder, "pad_token")
    pad_id = token_id(tokenizer, pad) if pad else 0
    entry = {"tokenizer": os.path.relpath(tok_path, out_dir), "prompt": prompt, "dtype": dtype, "pad_id": pad_id}
    if dims[1] == -1:
        cfg = read_json(folder / "config.json")
        max_len = cfg.get("text_config", {}).get("max_position_embeddings") or cfg.get("max_position_embeddings") or 512
        entry.update(padding="exact", max_length=min(int(max_len), 4096))
    else:
        entry.update(padding="max_length", max_length=dims[1])
    if kind == "Kosmos2Processor" or "image_embeds_position_mask" in roles:
        n = proc.get("num_image_tokens", 64)
        unk = special(folder, "unk_token") or "<unk>"
        entry["layout"] = "kosmos2"
        entry["kosmos2"] = {
            "bos_token": special(folder, "bos_token") or "<s>",
            "boi_token": "<image>",
            "eoi_token": "</image>",
            "num_image_tokens": n,
            "first_image_token_id": proc.get("first_image_token_id") or token_id(tokenizer, unk) + 1,
        }
        # RoBERTa-style positions, as Kosmos-2's text model makes them from the pad id.
        entry["position_ids"] = {"start": pad_id + 1, "pad": pad_id}
    else:
        entry["layout"] = "plain"
        entry["position_ids"] = {"start": 0}
    entry["inputs"] = roles
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="policy name in logs and status: hybrid or pure")
    ap.add_argument("--stage", action="append", required=True,
                    help="NAME=FILE.onnx[:per_frame|per_instruction], in run order")
    ap.add_argument("--image", action="append", default=[],
                    help="GRAPH_INPUT=HF_FOLDER, or GRAPH_INPUT=imagenet (torchvision Resize + ImageNet mean/std)")
    ap.add_argument("--window", action="append", default=[],
                    help="GRAPH_INPUT=FROM:T: a window of T frames of FROM (an image input or a per-frame stage's output)")
    ap.add_argument("--window-start", choices=["wait", "repeat_first"], default="wait")
    ap.add_argument("--text", action="append", default=[], help="GRAPH_INPUT_IDS=HF_FOLDER")
    ap.add_argument("--prompt", action="append", default=[], help="GRAPH_INPUT_IDS=TEMPLATE with {instruction}")
    ap.add_argument("--state", action="append", default=[], help="INPUT:OUTPUT")
    ap.add_argument("--action", required=True, help="the action output")
    ap.add_argument("--index", default=None, help="comma-separated leading indices, e.g. 0,-1")
    ap.add_argument("--step", default="first", choices=["first", "last"])
    ap.add_argument("--elements", default="0,1,2", help="indices of linear.x, linear.y, angular.z")
    ap.add_argument("--axes", default=None,
                    help="named axes instead of --elements: e.g. linear_x=0,angular_z=1 (the others stay 0)")
    ap.add_argument("--bounds", default=None,
                    help="with --axes: MIN,MAX of every axis, for a head trained on actions mapped to [-1, 1]")
    ap.add_argument("--scale", default="1,1,1")
    ap.add_argument("--clip", default="1.15,1.15,1.15")
    ap.add_argument("--stand-in", action="store_true", help="mark as a stand-in (the node warns)")
    ap.add_argument("--description", default="")
    ap.add_argument("-o", "--output", required=True, type=Path)
    a = ap.parse_args()

    out_dir = a.output.resolve().parent
    stages, paths = [], []
    for s in a.stage:
        name, _, rest = s.partition("=")
        file, _, run = rest.partition(":")
        p = (Path(file) if Path(file).is_absolute() else Path.cwd() / file).resolve()
        if not p.is_file():
            fail(f"--stage {s}: {p} does not exist")
        paths.append(p)
        stage = {"name": name, "onnx": os.path.relpath(p, out_dir)}
        if run:
            stage["run"] = run
        stages.append(stage)
    inputs = graph_inputs(paths)
    outputs = graph_outputs(paths)
    prompts = dict(p.split("=", 1) for p in a.prompt)
    windows = []
    for w in a.window:
        name, _, rest = w.partition("=")
        source, _, length = rest.partition(":")
        if name not in inputs:
            fail(f"--window {w}: {name!r} is not a graph input")
        windows.append({"input": name, "from": source, "length": int(length)})
    window_of = {w["from"]: w["input"] for w in windows}
    images = [image_entry(n, d, inputs, window_of) for n, d in (i.split("=", 1) for i in a.image)]
    texts = [text_entry(n, Path(d), inputs, prompts.get(n, "{instruction}"), out_dir)
             for n, d in (t.split("=", 1) for t in a.text)]
    state = []
    for s in a.state:
        i, o = s.split(":")
        if i not in inputs or o not in outputs:
            fail(f"--state {s}: {i!r} must be a graph input and {o!r} an output")
        elem, dims = inputs[i]
        if any(d < 1 for d in dims):
            fail(f"--state {s}: the state shape {dims} must be fixed")
        state.append({"input": i, "output": o, "shape": dims, "dtype": float_type(elem, f"state {i}")})
    if a.action not in outputs:
        fail(f"--action {a.action}: not an output (outputs: {sorted(outputs)})")
    if a.axes:
        lo, hi = (float(v) for v in (a.bounds or "-1,1").split(","))
        axes = {k: {"index": int(v), "bounds": [lo, hi]} for k, v in (x.split("=") for x in a.axes.split(","))}
        action = {"output": a.action, "step": a.step, "axes": axes}
    else:
        lx, ly, az = (int(v) for v in a.elements.split(","))
        action = {"output": a.action, "step": a.step, "linear_x": lx, "linear_y": ly, "angular_z": az,
                  "scale": [float(v) for v in a.scale.split(",")], "clip": [float(v) for v in a.clip.split(",")]}
    if a.index is not None:
        action["index"] = [int(v) for v in a.index.split(",") if v != ""]
    manifest = {"version": 2, "name": a.name}
    if a.stand_in:
        manifest["stand_in"] = True
    if a.description:
        manifest["description"] = a.description
    manifest.update(stages=stages, images=images, texts=texts, state=state, action=action)
    if windows:
        manifest.update(windows=windows, window_start=a.window_start)
    a.output.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
