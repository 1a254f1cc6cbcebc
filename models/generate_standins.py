#!/usr/bin/env python3
"""Generates everything in models/ that is not a real model export.

STAND-INS, NOT THE REAL MODELS. The team's Kosmos-2 + CLIP hybrid (1.86 B
parameters, 7.8 GB) and pure Kosmos-2 (1.70 B, 7.1 GB) exports cannot ship in
this repository. This script writes small ONNX graphs with the same input and
output contract instead, plus sample camera frames, so the node, its tests and
its benchmarks run end to end on real ONNX Runtime.

Run from anywhere; writes next to this file:
    standin_tokenizer.json   word-level tokenizer (Hugging Face tokenizer.json format)
    standin_hybrid.onnx      + hybrid.json   (manifest)
    standin_pure.onnx        + pure.json     (manifest)
    samples/*.png            bundled sample camera frames (640x480 RGB)
    chunked_slow.json (+ .onnx)  a slow (0.1-0.3 s) policy whose action is a chunk of 8 steps
                             0.1 s apart, played in time (step: play), for the chunk tests
    faulty_*.json (+ .onnx)  models that really fail, for the watchdog's tests:
        faulty_nan      the hybrid contract, action always NaN
        faulty_dark     the hybrid, but NaN on dark frames (mean normalised image < -1.0)
        faulty_slow     the hybrid plus 0.3-1 s of matrix products per run (misses deadlines)
        faulty_hang     the hybrid plus many seconds of matrix products (a hang)
        faulty_corrupt  an .onnx file that is not a model
        faulty_missing  names an .onnx file that does not exist
        faulty_injectable  the hybrid, healthy, unless the frame's top-left corner
                        carries a marker colour: magenta (255, 0, 255) makes the
                        action infinite (invalid output), yellow (255, 255, 0) adds
                        SLOW_LOOP matrix products (a slow run), cyan (0, 255, 255)
                        HANG_LOOP (a hang): faults injected frame by frame, for the soak

With --heavy DIR it writes only the benchmarks' heavier stand-in, into DIR
(344 MB, so never into models/): heavy_hybrid.onnx + heavy.json, the hybrid
contract and behaviour plus a ViT-B/16 image encoder (12 blocks, width 768,
86 M random parameters) whose output is added times zero, so the model costs
what a real ViT-B/16 costs and still acts exactly like the small hybrid.

What the stand-ins compute (documented so tests can check behaviour):
  go        = 0 if the instruction contains the word "stop", else 1
  light     = mean(normalised image, left half) - mean(right half)
  gate      = (number of image-token positions in image_embeds_position_mask) / 64
              (1 when the Kosmos-2 prompt layout is right)
  hybrid:   linear.x  = go * (0.3 + 0.1 * mean(image) + 0.2 * mean(h_in))
            linear.y  = go * 0.25 * ("left" in instruction - "right" in instruction)
            angular.z = go * 0.5 * light * gate        (more light on the left: turn left)
            h_out = 0.5 * h_in + 0.5 * tanh(mean(image)); c_out = c_in + 1
            (so linear.x drifts frame to frame and returns to its first value
            when the recurrent state is reset on a new instruction)
  pure:     a chunk of 4 actions [1, 4, 3], step t scaled by (1 - 0.1 t), from
            linear.x  = go * (0.25 + 0.1 * mean(image))
            linear.y  = go * 0.2 * ("left" - "right")
            angular.z = go * 0.4 * light * gate
            its image input is float16.
  chunked:  a chunk of 8 actions [1, 8, 3], step t (0..7): linear.x = go * 0.05 * (t + 1),
            linear.y = go * 0.02 * light, angular.z = 0; slow (CHUNK_MATMULS products).

Deterministic: the same script writes the same bytes.
"""

from __future__ import annotations

import os
import sys

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def scene(left: float, right: float, cup_x: float | None, w: int = 640, h: int = 480) -> np.ndarray:
    """A floor, a wall lit `left`/`right` (0..1) from each side, and optionally a red cup."""
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    light = left + (right - left) * xs
    img = np.empty((h, w, 3), np.float32)
    img[...] = (light * 200 + 30)[..., None]
    floor = slice(int(h * 0.65), h)
    img[floor] = img[floor] * np.array([0.6, 0.55, 0.45], np.float32)
    if cup_x is not None:
        cx, cy = int(cup_x * w), int(h * 0.6)
        img[cy - 40 : cy + 40, cx - 25 : cx + 25] = (200, 30, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


SAMPLES = {
    # name: (left light, right light, cup position)
    "00_light_left.png": (0.9, 0.2, 0.25),
    "01_centred.png": (0.55, 0.55, 0.5),
    "02_light_right.png": (0.2, 0.9, 0.75),
    "03_dim_clear.png": (0.3, 0.35, None),
}


def write_samples() -> None:
    out = os.path.join(HERE, "samples")
    os.makedirs(out, exist_ok=True)
    for name, (l, r, cup) in SAMPLES.items():
        Image.fromarray(scene(l, r, cup)).save(os.path.join(out, name), optimize=True)


# --- tokenizer ---------------------------------------------------------------------
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<image>", "</image>", "<grounding>", "<img>"]
WORDS = """stop left right go forward back backward turn move navigate around the obstacles obstacle
to cup a an and of on in at slowly quickly please find red blue green door box chair person table
wall room towards toward away from avoid follow drive come here there then until reach near""".split()
VOCAB = {t: i for i, t in enumerate(SPECIAL + WORDS)}
STOP, LEFT, RIGHT = VOCAB["stop"], VOCAB["left"], VOCAB["right"]
IMAGE_TOKENS = 64
MAX_LEN = 96


def tokenizer_json() -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": VOCAB[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t in SPECIAL
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": VOCAB, "unk_token": "<unk>"},
    }


# --- ONNX graphs ---------------------------------------------------------------------
class G:
    """A tiny graph builder: names every intermediate value, keeps the node list."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def c(self, value, dtype=np.float32) -> str:
        name = f"const{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type, *inputs, **attrs) -> str:
        self.n += 1
        out = f"{op_type.lower()}{self.n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def name(self, value: str, name: str) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name]))


def common_features(g: G, pixels: str, width: int):
    half = width // 2
    left = g.op("ReduceMean", g.op("Slice", pixels, g.c([0], np.int64), g.c([half], np.int64), g.c([3], np.int64)),
                axes=[1, 2, 3], keepdims=0)
    right = g.op("ReduceMean", g.op("Slice", pixels, g.c([half], np.int64), g.c([width], np.int64), g.c([3], np.int64)),
                 axes=[1, 2, 3], keepdims=0)
    bright = g.op("ReduceMean", pixels, axes=[1, 2, 3], keepdims=0)
    light = g.op("Sub", left, right)
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)

    def has(token_id):
        eq = g.op("Cast", g.op("Equal", "input_ids", g.c([token_id], np.int64)), to=TensorProto.FLOAT)
        return g.op("ReduceMax", g.op("Mul", eq, mask), axes=[1], keepdims=0)

    go = g.op("Sub", g.c([1.0]), has(STOP))
    lr = g.op("Sub", has(LEFT), has(RIGHT))
    gate = g.op("Div", g.op("ReduceSum", g.op("Cast", "image_embeds_position_mask", to=TensorProto.FLOAT),
                            g.c([1], np.int64), keepdims=0), g.c([float(IMAGE_TOKENS)]))
    return bright, light, go, lr, gate


def text_inputs():
    return [helper.make_tensor_value_info(n, TensorProto.INT64, [1, MAX_LEN])
            for n in ("input_ids", "attention_mask", "image_embeds_position_mask")]


def action_of(g: G, lx: str, ly: str, az: str) -> str:
    cols = [g.op("Unsqueeze", v, g.c([1], np.int64)) for v in (lx, ly, az)]
    return g.op("Concat", *cols, axis=1)  # [1, 3]


def save(g: G, inputs, outputs, path: str, doc: str) -> None:
    graph = helper.make_graph(g.nodes, os.path.basename(path), inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mobile_vla standin",
                              doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


STATE = 16


def vit_b16(g: G, pixels: str, seed: int = 16) -> str:
    """A ViT-B/16 forward pass (patch 16, width 768, 12 blocks of 12 heads, MLP 3072)
    with random weights; returns the mean of the final class token, shape [1]."""
    rng = np.random.default_rng(seed)
    d, heads, tokens = 768, 12, 197

    def w(*shape):
        return g.c(rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))

    def zeros(n):
        return g.c(np.zeros(n, np.float32))

    def linear(x, n_in, n_out):
        return g.op("Add", g.op("MatMul", x, w(n_in, n_out)), zeros(n_out))

    def norm(x):
        return g.op("LayerNormalization", x, g.c(np.ones(d, np.float32)), zeros(d), axis=-1, epsilon=1e-6)

    x = g.op("Conv", pixels, w(d, 3, 16, 16), zeros(d), kernel_shape=[16, 16], strides=[16, 16])
    x = g.op("Transpose", g.op("Reshape", x, g.c([1, d, 196], np.int64)), perm=[0, 2, 1])
    x = g.op("Add", g.op("Concat", w(1, 1, d), x, axis=1), w(1, tokens, d))
    for _ in range(12):
        qkv = g.op("Reshape", linear(norm(x), d, 3 * d), g.c([1, tokens, 3, heads, d // heads], np.int64))
        qkv = g.op("Transpose", qkv, perm=[2, 0, 3, 1, 4])
        q, k, v = (g.op("Gather", qkv, g.c(i, np.int64), axis=0) for i in range(3))
        att = g.op("Softmax", g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])),
                                   g.c([0.125])), axis=-1)
        o = g.op("Reshape", g.op("Transpose", g.op("MatMul", att, v), perm=[0, 2, 1, 3]), g.c([1, tokens, d], np.int64))
        x = g.op("Add", x, linear(o, d, d))
        h = linear(norm(x), d, 4 * d)
        h = g.op("Mul", g.op("Mul", h, g.c([0.5])), g.op("Add", g.c([1.0]), g.op("Erf", g.op("Mul", h, g.c([0.70710678])))))
        x = g.op("Add", x, linear(h, 4 * d, d))
    cls = g.op("Gather", norm(x), g.c(0, np.int64), axis=1)
    return g.op("ReduceMean", cls, axes=[1], keepdims=0)


def corner_marker(g: G) -> tuple[str, str, str]:
    """Whether the frame's top-left 8x8 (model pixels) is magenta, yellow or cyan: three 0/1 floats.
    Saturated colours normalise to +1.9..2.1 (255) and -1.5..-1.8 (0), far beyond any scene pixel."""
    block = g.op("Slice", "pixel_values", g.c([0, 0], np.int64), g.c([8, 8], np.int64), g.c([2, 3], np.int64))
    mean = g.op("ReduceMean", block, axes=[2, 3], keepdims=0)  # [1, 3]
    ch = [g.op("Gather", mean, g.c(i, np.int64), axis=1) for i in range(3)]
    hi = [g.op("Cast", g.op("Greater", c, g.c([1.5])), to=TensorProto.FLOAT) for c in ch]
    lo = [g.op("Cast", g.op("Less", c, g.c([-1.3])), to=TensorProto.FLOAT) for c in ch]
    both = lambda a, b, c: g.op("Mul", g.op("Mul", a, b), c)  # noqa: E731
    return both(hi[0], lo[1], hi[2]), both(hi[0], hi[1], lo[2]), both(lo[0], hi[1], hi[2])


def injected_work(g: G, slow: str, hang: str) -> str:
    """A Loop of [294,512]x[512,512] products, SLOW_LOOP times for a slow frame,
    HANG_LOOP for a hanging one, none otherwise; returns a [1] zero that keeps it in the graph."""
    trips = g.op("Cast", g.op("Add", g.op("Mul", slow, g.c([float(SLOW_LOOP)])),
                              g.op("Mul", hang, g.c([float(HANG_LOOP)]))), to=TensorProto.INT64)
    trips = g.op("Reshape", trips, g.c([], np.int64))
    x0 = g.op("Reshape", "pixel_values", g.c([294, 512], np.int64))
    w = g.op("ConstantOfShape", g.c([512, 512], np.int64), value=numpy_helper.from_array(np.array([0.002], np.float32)))
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["x_in", w], ["x_out"])],
        "injected_work",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [294, 512])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [294, 512])])
    g.n += 1
    out = f"loop{g.n}"
    g.nodes.append(helper.make_node("Loop", [trips, g.c(True, np.bool_), x0], [out], body=body))
    return g.op("Mul", g.c([0.0]), g.op("ReduceMean", out, axes=[0, 1], keepdims=0))


def hybrid_model(path: str, fault: str | None = None, matmuls: int = 0, vit: bool = False) -> None:
    g = G()
    bright, light, go, lr, gate = common_features(g, "pixel_values", 224)
    if fault == "injectable":
        nan_frame, slow_frame, hang_frame = corner_marker(g)
        bright = g.op("Add", bright, injected_work(g, slow_frame, hang_frame))
    if vit:
        # Adds exactly zero, but the encoder stays in the graph and runs every frame.
        bright = g.op("Add", bright, g.op("Mul", g.c([0.0]), vit_b16(g, "pixel_values")))
    if matmuls:
        # Work that depends on the input (so it cannot be folded away at load):
        # the image as [294, 512] through a chain of [512, 512] products.
        x = g.op("Reshape", "pixel_values", g.c([294, 512], np.int64))
        w = g.op("ConstantOfShape", g.c([512, 512], np.int64),
                 value=numpy_helper.from_array(np.array([0.002], np.float32)))
        for _ in range(matmuls):
            x = g.op("MatMul", x, w)
        # Adds exactly zero to the brightness, but keeps the chain in the graph.
        bright = g.op("Add", bright, g.op("Mul", g.c([0.0]), g.op("ReduceMean", x, axes=[0, 1], keepdims=0)))
    h_mean = g.op("ReduceMean", "h_in", axes=[1, 2], keepdims=0)
    lx = g.op("Mul", go, g.op("Add", g.c([0.3]), g.op("Add", g.op("Mul", g.c([0.1]), bright),
                                                      g.op("Mul", g.c([0.2]), h_mean))))
    ly = g.op("Mul", go, g.op("Mul", g.c([0.25]), lr))
    az = g.op("Mul", go, g.op("Mul", g.c([0.5]), g.op("Mul", light, gate)))
    action = action_of(g, lx, ly, az)
    if fault == "nan":
        action = g.op("Mul", action, g.c([np.nan]))
    elif fault == "dark":
        lit = g.op("Cast", g.op("Greater", bright, g.c([-1.0])), to=TensorProto.FLOAT)
        action = g.op("Div", action, g.op("Unsqueeze", lit, g.c([1], np.int64)))  # x / 0 on dark frames
    elif fault == "injectable":
        healthy = g.op("Sub", g.c([1.0]), nan_frame)
        action = g.op("Div", action, g.op("Unsqueeze", healthy, g.c([1], np.int64)))  # x / 0 on magenta frames
    g.name(action, "action")
    drive = g.op("Mul", g.c([0.5]), g.op("Tanh", bright))
    g.name(g.op("Add", g.op("Mul", g.c([0.5]), "h_in"), drive), "h_out")
    g.name(g.op("Add", "c_in", g.c([1.0])), "c_out")
    f32 = TensorProto.FLOAT
    save(g,
         [helper.make_tensor_value_info("pixel_values", f32, [1, 3, 224, 224])] + text_inputs()
         + [helper.make_tensor_value_info(n, f32, [1, 1, STATE]) for n in ("h_in", "c_in")],
         [helper.make_tensor_value_info("action", f32, [1, 3])]
         + [helper.make_tensor_value_info(n, f32, [1, 1, STATE]) for n in ("h_out", "c_out")],
         path, "STAND-IN for the Kosmos-2 + CLIP hybrid policy export; not a trained model.")


def pure_model(path: str) -> None:
    g = G()
    pixels = g.op("Cast", "pixel_values", to=TensorProto.FLOAT)
    bright, light, go, lr, gate = common_features(g, pixels, 224)
    lx = g.op("Mul", go, g.op("Add", g.c([0.25]), g.op("Mul", g.c([0.1]), bright)))
    ly = g.op("Mul", go, g.op("Mul", g.c([0.2]), lr))
    az = g.op("Mul", go, g.op("Mul", g.c([0.4]), g.op("Mul", light, gate)))
    action = g.op("Unsqueeze", action_of(g, lx, ly, az), g.c([1], np.int64))  # [1, 1, 3]
    steps = g.c(np.array([1.0, 0.9, 0.8, 0.7], np.float32).reshape(1, 4, 1))
    g.name(g.op("Mul", action, steps), "action")
    save(g,
         [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT16, [1, 3, 224, 224])] + text_inputs(),
         [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 4, 3])],
         path, "STAND-IN for the pure Kosmos-2 policy export; not a trained model.")


def chunked_model(path: str, matmuls: int) -> None:
    g = G()
    bright, light, go, lr, gate = common_features(g, "pixel_values", 224)
    x = g.op("Reshape", "pixel_values", g.c([294, 512], np.int64))
    w = g.op("ConstantOfShape", g.c([512, 512], np.int64), value=numpy_helper.from_array(np.array([0.002], np.float32)))
    for _ in range(matmuls):
        x = g.op("MatMul", x, w)
    zero = g.op("Mul", g.c([0.0]), g.op("ReduceMean", x, axes=[0, 1], keepdims=0))
    ly = g.op("Add", g.op("Mul", go, g.op("Mul", g.c([0.02]), light)), zero)
    row = action_of(g, go, ly, g.op("Mul", go, g.c([0.0])))  # [1, 3]: (go, ly, 0)
    steps = np.zeros((1, 8, 3), np.float32)
    steps[0, :, 0] = 0.05 * np.arange(1, 9)
    steps[0, :, 1] = 1.0
    g.name(g.op("Mul", g.op("Unsqueeze", row, g.c([1], np.int64)), g.c(steps)), "action")
    save(g,
         [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, 224, 224])] + text_inputs(),
         [helper.make_tensor_value_info("action", TensorProto.FLOAT, [1, 8, 3])],
         path, "STAND-IN: a slow policy whose action is a chunk of 8 steps; not a trained model.")


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def manifest(name: str, onnx_file: str, image_dtype: str, state: bool, action_step: str, note: str) -> dict:
    m = {
        "name": name,
        "stand_in": True,
        "description": note,
        "onnx": onnx_file,
        "image": {
            "input": "pixel_values",
            "width": 224, "height": 224, "resize": "stretch", "channel_order": "rgb", "layout": "nchw",
            "scale": 1.0 / 255.0, "mean": CLIP_MEAN, "std": CLIP_STD, "dtype": image_dtype,
        },
        "text": {
            "tokenizer": "standin_tokenizer.json",
            "max_length": MAX_LEN,
            "prompt": "<grounding> {instruction}",
            "bos_id": VOCAB["<s>"], "eos_id": VOCAB["</s>"], "pad_id": VOCAB["<pad>"],
            "image_span": {"start_id": VOCAB["<image>"], "token_id": VOCAB["<img>"], "end_id": VOCAB["</image>"],
                           "length": IMAGE_TOKENS},
            "input_ids": "input_ids",
            "attention_mask": "attention_mask",
            "image_embeds_position_mask": "image_embeds_position_mask",
        },
        "state": [{"input": "h_in", "output": "h_out", "shape": [1, 1, STATE]},
                  {"input": "c_in", "output": "c_out", "shape": [1, 1, STATE]}] if state else [],
        "action": {"output": "action", "step": action_step, "linear_x": 0, "linear_y": 1, "angular_z": 2,
                   "scale": [1.0, 1.0, 1.0], "clip": [1.15, 1.15, 1.15]},
    }
    return m


def write_json(path: str, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def heavy(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "standin_tokenizer.json"), tokenizer_json())
    hybrid_model(os.path.join(out_dir, "heavy_hybrid.onnx"), vit=True)
    write_json(os.path.join(out_dir, "heavy.json"), manifest(
        "hybrid", "heavy_hybrid.onnx", "f32", True, "last",
        "HEAVY STAND-IN for benchmarks: the hybrid stand-in plus a ViT-B/16 image encoder (86 M random "
        "parameters) that costs real model time. Not a trained model."))


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--heavy":
        heavy(sys.argv[2])
        return 0
    write_json(os.path.join(HERE, "standin_tokenizer.json"), tokenizer_json())
    hybrid_model(os.path.join(HERE, "standin_hybrid.onnx"))
    pure_model(os.path.join(HERE, "standin_pure.onnx"))
    write_json(os.path.join(HERE, "hybrid.json"), manifest(
        "hybrid", "standin_hybrid.onnx", "f32", True, "last",
        "STAND-IN with the contract of the Kosmos-2 + CLIP hybrid export (image, Kosmos-2 prompt, LSTM state -> "
        "action). Replace 'onnx' and 'text.tokenizer' with the real export to drive the robot for real."))
    write_json(os.path.join(HERE, "pure.json"), manifest(
        "pure", "standin_pure.onnx", "f16", False, "first",
        "STAND-IN with the contract of the pure Kosmos-2 export (float16 image, Kosmos-2 prompt -> action chunk "
        "[1, T, 3], first step used)."))
    faulty = {
        "faulty_nan": dict(fault="nan"),
        "faulty_dark": dict(fault="dark"),
        "faulty_slow": dict(matmuls=SLOW_MATMULS),
        "faulty_hang": dict(matmuls=HANG_MATMULS),
        "faulty_injectable": dict(fault="injectable"),
    }
    for name, kw in faulty.items():
        hybrid_model(os.path.join(HERE, f"{name}.onnx"), **kw)
    with open(os.path.join(HERE, "faulty_corrupt.onnx"), "wb") as f:
        f.write(b"STAND-IN fault: this file is deliberately not an ONNX model.\n")
    for name in list(faulty) + ["faulty_corrupt", "faulty_missing"]:
        onnx_file = "does_not_exist.onnx" if name == "faulty_missing" else f"{name}.onnx"
        write_json(os.path.join(HERE, f"{name}.json"), manifest(
            "hybrid", onnx_file, "f32", True, "last",
            f"FAULTY STAND-IN ({name}) with the hybrid contract, for the watchdog's tests. Never deploy."))
    chunked_model(os.path.join(HERE, "chunked_slow.onnx"), CHUNK_MATMULS)
    m = manifest("hybrid", "chunked_slow.onnx", "f32", False, "play",
                 "STAND-IN: a slow policy returning a chunk of 8 steps 0.1 s apart, played in time from the "
                 "frame's stamp (action.step play), for the chunk tests. Never deploy.")
    m["action"]["period_s"] = 0.1
    write_json(os.path.join(HERE, "chunked_slow.json"), m)
    write_samples()
    return 0


# One intra-op thread: a [294,512]x[512,512] product takes 0.8-3 ms on the dev
# machines seen so far, so 400 of them take 0.3-1.2 s (well over the 0.1 s
# deadline; the test raises the hard timeout) and 2000 take 1.6-6 s (past the
# hang test's 0.5 s hard timeout).
SLOW_MATMULS = 400
HANG_MATMULS = 2000
# The injectable stand-in's Loop: about 0.15-0.5 s (slow) and 3-10 s (a hang).
SLOW_LOOP = 200
HANG_LOOP = 4000
CHUNK_MATMULS = 100


if __name__ == "__main__":
    sys.exit(main())
