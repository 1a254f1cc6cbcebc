#!/usr/bin/env python3
"""Exports a Kosmos-2 (+ CLIP) policy to ONNX for the mobile_vla node, with
its manifest and reference outputs.

    hybrid: Kosmos-2 (vision tower, latent-query projection, causal text
            decoder over <image> + image tokens + text) + CLIP (vision tower on
            its own crop, text tower as a per-instruction stage) -> LSTM -> MLP
    pure:   Kosmos-2 -> LSTM -> MLP
    features: the model team's RoboVLMs-style family, in two stages: a
            per-frame backbone (Kosmos-2 -> vision_features, text_features),
            windows of the last T frames of both, and a head (LSTM over the
            window -> MLP -> a chunk of future actions on 2 axes, in [-1, 1])
    images: the same family taking a window of T images [1, T, 3, 224, 224]
            (torchvision's Resize((224, 224)) and ImageNet normalisation) in
            one graph: Kosmos-2's vision on each, LSTM over them -> chunk

The head (an LSTM over the pooled features, state in and out, and an MLP to a
chunk of T actions) is this script's `Head`; `--head` loads its trained
weights (a state_dict), without it the head is random (fixtures only).
Kosmos-2 and CLIP come from Hugging Face model folders (`from_pretrained`;
no hub access is needed for local folders).

    python3 scripts/export_policy.py --kind hybrid --kosmos2 K2_DIR --clip CLIP_DIR \\
        --head head.pt --out build/export/hybrid [--io f16] [--fp16] [--ids int32] \\
        [--padding exact] [--chunk 4] [--external-data] [--frames DIR --instruction "go to the cup"]
    python3 scripts/export_policy.py --kind features --kosmos2 K2_DIR --window 8 --chunk 10 \\
        --axes linear_x,linear_y --bounds -1.15,1.15 --out build/export/features [--frames DIR ...]

Writes OUT/policy.onnx (and OUT/clip_text.onnx for the hybrid), external data
beside them when asked or when a graph is over 2 GB, OUT/<kind>.json (the
manifest, by scripts/hf_manifest.py from the processors' own files) and, with
--frames, OUT/reference.json: the actions PyTorch computes for the frames fed
by the Hugging Face processors themselves (PIL backend), which the node must
reproduce. The export is checked against PyTorch in onnxruntime before it is
written out.

Needs torch and transformers (see models/hf_tiny/requirements.txt for the
versions the bundled fixtures were made with).

--triton-repository DIR [--triton-backend onnxruntime|python] then writes the
manifest's per-frame stages into the Triton model repository DIR, for the node's
remote policy (scripts/triton_repository.py, which says what it writes), with
either an export or a conversion (--from; only once its gates hold).

Converting an existing export (--from; needs only onnx, onnxruntime, h5py and
PIL, no torch) to FP16 or INT8, then gating it with mobile_vla_eval:

    python3 scripts/export_policy.py --from models/team_tiny/images/images.json --out build/export/images-fp16 \
        --fp16 [--eval-episodes HELD_OUT...] [--gate 'mae<=1.05*ref' ...]
    python3 scripts/export_policy.py --from MANIFEST.json --out OUTDIR --int8 --calibrate EPISODES... \
        [--calibration-frames 64] [--symmetric] [--eval-episodes HELD_OUT...] [--gate G ...]

EPISODES are the model team's HDF5 files (`images` (T, H, W, 3) uint8 RGB,
`language_instruction`, `actions`): files, folders or globs. OUTDIR gets the
converted graph of every stage and MANIFEST's copy named NAME-fp16 / NAME-int8
(OUTDIR/<manifest>-fp16.json, -int8.json), its tokenizers still resolving.

  --fp16  float16 weights (onnxruntime.transformers.float16, keep_io_types):
          the graphs' inputs and outputs stay float32, the manifest unchanged.
  --int8  static INT8 in QDQ format (onnxruntime.quantization.quantize_static):
          per-channel weights of Conv/MatMul/Gemm, activation ranges (min/max)
          calibrated on frames of the --calibrate episodes fed exactly as the
          node feeds them: mobile_vla_inputs (the node's own preprocessing and
          tokenisation) gives the image, window and text tensors, and the inputs
          of a later stage (the features family's head) are what the FP32
          earlier stages compute on them, windowed as the manifest says. Every
          stage is quantised; one that no calibration frame reaches (a waiting
          window never full) is kept FP32, and the script says which.
          TensorRT on the Orin: ORT's TensorRT provider takes no calibration
          table with a QDQ graph. Its INT8 path is the FP32 graph (the source
          manifest's) with trt_int8_enable=1,
          trt_int8_calibration_table_name=calibration.flatbuffers and
          trt_int8_use_native_calibration_table=0; the table, written here as
          OUTDIR/calibration.flatbuffers (OUTDIR/calibration_<stage>/ per stage
          for several stages; .cache and .json beside it) from the same
          calibration feeds, is looked up in trt_engine_cache_path. Not run
          here (no GPU): build the engine on the Orin and gate it there too.

Then, given evaluation episodes (with --int8 the --calibrate ones by default),
`mobile_vla_eval --policy ref=MANIFEST --policy NAME=NEW EPISODES --gate G`
(default gate 'mae<=1.05*ref': the MAE against the recorded actions at most
5 % above the source's) prints its report, and the script exits with its
exit code: 0 when every gate holds. Gate on held-out episodes: the ranges
were fitted to the calibration frames, so gating on them is optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from convert_policy import DEFAULT_GATE, convert
from triton_repository import BACKENDS as TRITON_BACKENDS, write_repository

HERE = Path(__file__).resolve().parent

torch = nn = None  # imported by import_torch(): converting an export (--from) needs no torch


def last_real(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real (unpadded) token: [1, L, d] -> [1, d]."""
    idx = attention_mask.long().sum(-1) - 1
    return hidden.gather(1, idx.view(1, 1, 1).expand(1, 1, hidden.shape[-1]))[:, 0]


def import_torch() -> None:
    """Imports torch and defines the nn.Module classes of the PyTorch export (module globals).

    Deferred so that `--from` (converting an existing export to FP16 or INT8) runs where torch
    is not installed (CI, this repository's .venv): a class subclassing nn.Module needs torch
    when it is defined, so they are defined here, once, before the export path uses them."""
    global torch, nn, Head, ClipText, Hybrid, Pure, Backbone, WindowHead, ImageWindowPolicy
    if nn is not None:
        return
    import torch
    from torch import nn

    class Head(nn.Module):
        """LSTM over the pooled features (state [1, 1, hidden] in and out), then an MLP to T x 3 actions."""

        def __init__(self, in_dim: int, hidden: int, chunk: int):
            super().__init__()
            self.chunk = chunk
            self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, chunk * 3))

        def forward(self, feat, h, c):
            out, (h2, c2) = self.lstm(feat[:, None, :], (h, c))
            return torch.tanh(self.mlp(out[:, -1])).view(1, self.chunk, 3), h2, c2


    class ClipText(nn.Module):
        """The per-instruction stage: CLIP's text tower, projected."""

        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, clip_input_ids, clip_attention_mask):
            out = self.clip.get_text_features(input_ids=clip_input_ids.long(), attention_mask=clip_attention_mask.long())
            return out.pooler_output if hasattr(out, "pooler_output") else out


    class Hybrid(nn.Module):
        def __init__(self, kosmos2, clip, head, io_dtype):
            super().__init__()
            self.kosmos2, self.clip, self.head, self.io = kosmos2, clip, head, io_dtype

        def forward(self, pixel_values, input_ids, attention_mask, position_ids, image_embeds_position_mask,
                    clip_pixel_values, clip_text_embeds, h_in, c_in):
            dt = next(self.head.parameters()).dtype
            out = self.kosmos2(pixel_values=pixel_values.to(dt), input_ids=input_ids.long(),
                               attention_mask=attention_mask.long(), position_ids=position_ids.long(),
                               image_embeds_position_mask=image_embeds_position_mask.long())
            k = last_real(out.last_hidden_state, attention_mask)
            img = self.clip.get_image_features(pixel_values=clip_pixel_values.to(dt))
            img = img.pooler_output if hasattr(img, "pooler_output") else img
            feat = torch.cat([k, img, clip_text_embeds.to(dt)], -1)
            actions, h, c = self.head(feat, h_in.to(dt), c_in.to(dt))
            # [batch, history, T, 3]: an action tensor of rank 4, as RoboVLMs heads give.
            return actions[:, None].to(self.io), h.to(self.io), c.to(self.io)


    class Pure(nn.Module):
        def __init__(self, kosmos2, head, io_dtype):
            super().__init__()
            self.kosmos2, self.head, self.io = kosmos2, head, io_dtype

        def forward(self, pixel_values, input_ids, attention_mask, image_embeds_position_mask, h_in, c_in):
            dt = next(self.head.parameters()).dtype
            out = self.kosmos2(pixel_values=pixel_values.to(dt), input_ids=input_ids.long(),
                               attention_mask=attention_mask.long(),
                               image_embeds_position_mask=image_embeds_position_mask.long())
            k = last_real(out.last_hidden_state, attention_mask)
            actions, h, c = self.head(k, h_in.to(dt), c_in.to(dt))
            return actions.to(self.io), h.to(self.io), c.to(self.io)


    class Backbone(nn.Module):
        """The features kind's per-frame stage: Kosmos-2 -> (vision_features, text_features), [1, D] each."""

        def __init__(self, kosmos2):
            super().__init__()
            self.kosmos2 = kosmos2

        def forward(self, pixel_values, input_ids, attention_mask, image_embeds_position_mask):
            out = self.kosmos2(pixel_values=pixel_values, input_ids=input_ids.long(), attention_mask=attention_mask.long(),
                               image_embeds_position_mask=image_embeds_position_mask.long())
            return out.image_embeds.mean(1), last_real(out.last_hidden_state, attention_mask)


    class WindowHead(nn.Module):
        """An LSTM over the T frames of the feature windows, then an MLP to a chunk of future
        actions on `axes` axes, in [-1, 1] (RoboVLMs' normalised actions)."""

        def __init__(self, in_dim: int, hidden: int, chunk: int, axes: int):
            super().__init__()
            self.chunk, self.axes = chunk, axes
            self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, chunk * axes))

        def forward(self, *windows):
            out, _ = self.lstm(torch.cat(windows, -1))
            return torch.tanh(self.mlp(out[:, -1])).view(1, self.chunk, self.axes)


    class ImageWindowPolicy(nn.Module):
        """The images kind, one graph: Kosmos-2's vision on each of the T frames of the window,
        its text over the newest, and the window head."""

        def __init__(self, kosmos2, head, window: int):
            super().__init__()
            self.kosmos2, self.head, self.window = kosmos2, head, window

        def forward(self, image_window, input_ids, attention_mask, image_embeds_position_mask):
            vision = []
            for t in range(self.window):
                out = self.kosmos2(pixel_values=image_window[:, t], input_ids=input_ids.long(),
                                   attention_mask=attention_mask.long(),
                                   image_embeds_position_mask=image_embeds_position_mask.long())
                vision.append(out.image_embeds.mean(1))
            text = last_real(out.last_hidden_state, attention_mask)
            return self.head(torch.stack(vision, 1), text[:, None].expand(-1, self.window, -1))


def imagenet_pixels(image: Image.Image, size: int = 224) -> np.ndarray:
    """torchvision's Resize((size, size)), ToTensor and ImageNet Normalize, as the team preprocessed."""
    from torchvision import transforms

    t = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return t(image)[None].numpy()


def processors(kosmos2_dir: Path, clip_dir: Path | None):
    """The Hugging Face processors, PIL backend (what the node reproduces)."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, Kosmos2Processor

    k2 = Kosmos2Processor(image_processor=CLIPImageProcessorPil.from_pretrained(kosmos2_dir),
                          tokenizer=AutoTokenizer.from_pretrained(kosmos2_dir))
    clip = None
    if clip_dir is not None:
        clip = (CLIPImageProcessorPil.from_pretrained(clip_dir), AutoTokenizer.from_pretrained(clip_dir))
    return k2, clip


def feeds(kind, k2, clip, image: Image.Image, instruction: str, prompt: str, a) -> dict[str, np.ndarray]:
    """One frame and instruction through the processors, as graph inputs."""
    ids_t = np.int32 if a.ids == "int32" else np.int64
    text = prompt.replace("{instruction}", instruction)
    kw = {"padding": "max_length", "max_length": a.max_length, "truncation": True} if a.padding == "max_length" else {}
    enc = k2(text=text, images=image, return_tensors="np", **kw)
    if a.padding == "max_length" and enc["input_ids"].shape[1] < a.max_length:
        # The processor pads text only without images: pad as it would (right, pad id, mask 0).
        n = a.max_length - enc["input_ids"].shape[1]
        pad = k2.tokenizer.pad_token_id
        enc["input_ids"] = np.pad(enc["input_ids"], ((0, 0), (0, n)), constant_values=pad)
        enc["attention_mask"] = np.pad(enc["attention_mask"], ((0, 0), (0, n)))
        enc["image_embeds_position_mask"] = np.pad(enc["image_embeds_position_mask"], ((0, 0), (0, n)))
    f = {
        "pixel_values": enc["pixel_values"].astype(np.float32),
        "input_ids": enc["input_ids"].astype(ids_t),
        "attention_mask": enc["attention_mask"].astype(ids_t),
        "image_embeds_position_mask": enc["image_embeds_position_mask"].astype(ids_t),
    }
    if kind == "hybrid":
        # Kosmos-2's text model numbers real tokens from pad_id + 1 (RoBERTa style).
        pad = k2.tokenizer.pad_token_id
        mask = enc["attention_mask"].astype(np.int64)
        f["position_ids"] = ((np.cumsum(mask, 1) * mask) + pad).astype(ids_t)
        improc, tok = clip
        f["clip_pixel_values"] = improc(images=image, return_tensors="np")["pixel_values"].astype(np.float32)
        t = tok(instruction, padding="max_length", max_length=77, truncation=True, return_tensors="np")
        f["clip_input_ids"] = t["input_ids"].astype(ids_t)
        f["clip_attention_mask"] = t["attention_mask"].astype(ids_t)
    return f


def save(model_path: Path, external: bool) -> None:
    """Re-saves an exported graph, with its weights as external data when asked or when over 2 GB."""
    m = onnx.load(str(model_path), load_external_data=True)
    big = sum(t.ByteSize() for t in m.graph.initializer) > 2**31 - 2**26
    if external or big:
        data = model_path.name + ".data"
        if (model_path.parent / data).exists():
            (model_path.parent / data).unlink()
        onnx.save_model(m, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=1024)
    else:
        onnx.save_model(m, str(model_path))


def export(module, args, path: Path, inputs: list[str], outputs: list[str], dynamic: dict, external: bool):
    torch.onnx.export(module, tuple(torch.from_numpy(a) for a in args), str(path), input_names=inputs,
                      output_names=outputs, dynamic_axes=dynamic, opset_version=17, dynamo=False)
    save(path, external)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=["hybrid", "pure", "features", "images"], help="what to export from PyTorch")
    ap.add_argument("--kosmos2", type=Path, help="Hugging Face Kosmos-2 folder (model + processor)")
    ap.add_argument("--clip", type=Path, help="Hugging Face CLIP folder (model + processor), hybrid only")
    ap.add_argument("--head", type=Path, help="trained head state_dict (.pt); random without it")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=4, help="actions per chunk (T)")
    ap.add_argument("--io", choices=["f32", "f16"], default="f32", help="type of the state and action tensors")
    ap.add_argument("--fp16", action="store_true", help="export with float16 weights (TensorRT's FP16 needs no this); "
                    "with --from: convert the graphs' weights to float16")
    ap.add_argument("--ids", choices=["int32", "int64"], default="int64")
    ap.add_argument("--padding", choices=["exact", "max_length"], default="exact")
    ap.add_argument("--max-length", type=int, default=96, help="with --padding max_length")
    ap.add_argument("--prompt", default="<grounding>{instruction}", help="Kosmos-2 prompt template")
    ap.add_argument("--external-data", action="store_true", help="weights beside the graph (always over 2 GB)")
    ap.add_argument("--frames", type=Path, help="folder of JPEG/PNG frames for reference.json")
    ap.add_argument("--instruction", action="append", default=[], help="instructions for reference.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=8, help="features/images: frames in a window (T)")
    ap.add_argument("--window-start", choices=["wait", "repeat_first"], default="wait")
    ap.add_argument("--axes", default="linear_x,linear_y", help="features/images: the 2 axes the head predicts")
    ap.add_argument("--bounds", default="-1.15,1.15", help="features/images: [min, max] the head's [-1, 1] maps to")
    ap.add_argument("--name", help="the policy's name in the manifest (default: the kind)")
    ap.add_argument("--stand-in", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    conv = ap.add_argument_group("converting an existing export (--from; needs no torch)")
    conv.add_argument("--from", dest="source", type=Path, metavar="MANIFEST",
                      help="the policy's manifest (.json) to convert, instead of exporting from PyTorch")
    conv.add_argument("--int8", action="store_true", help="static INT8 (QDQ), calibrated on --calibrate episodes")
    conv.add_argument("--calibrate", nargs="+", default=[], metavar="EPISODES",
                      help="team HDF5 episodes for the INT8 calibration: files, folders or globs")
    conv.add_argument("--calibration-frames", type=int, default=64,
                      help="at most this many frames, spread evenly over the calibration episodes")
    conv.add_argument("--symmetric", action="store_true",
                      help="--int8: symmetric activations (zero point 0, as TensorRT needs in a QDQ graph)")
    conv.add_argument("--eval-episodes", nargs="+", default=[], metavar="EPISODES",
                      help="episodes mobile_vla_eval gates the conversion on (default with --int8: the "
                           "--calibrate ones, optimistic: prefer held-out episodes)")
    conv.add_argument("--gate", action="append", default=[],
                      help=f"mobile_vla_eval gate, repeatable (default {DEFAULT_GATE!r})")
    tri = ap.add_argument_group("serving it from Triton (the node's remote policy)")
    tri.add_argument("--triton-repository", type=Path, metavar="DIR",
                     help="also write the per-frame stages into this Triton model repository")
    tri.add_argument("--triton-backend", choices=TRITON_BACKENDS, default="onnxruntime",
                     help="onnxruntime: production (GPU, TensorRT FP16); python: ONNX Runtime on the CPU "
                          "(tests) (default: %(default)s)")
    a = ap.parse_args()
    if a.source is not None:
        try:
            convert(ap, a)
        except SystemExit as e:
            if e.code not in (0, None):
                raise  # a failed gate or an error: nothing to serve
        triton(a, a.out / f"{a.source.stem}-{'fp16' if a.fp16 else 'int8'}.json")
        return
    if a.kind is None or a.kosmos2 is None:
        ap.error("--kind and --kosmos2 are required (or --from MANIFEST to convert an existing export)")
    for k in ("kosmos2", "clip", "head", "frames", "out"):
        if getattr(a, k) is not None:
            setattr(a, k, getattr(a, k).resolve())
    import_torch()
    if a.kind in ("features", "images"):
        run_windowed(a)
        triton(a, a.out / f"{a.name or a.kind}.json")
    else:
        run(a)
        triton(a, a.out / f"{a.kind}.json")


def triton(a, manifest: Path) -> None:
    """--triton-repository: the manifest's per-frame stages as Triton models."""
    if a.triton_repository is not None:
        write_repository(manifest, a.triton_repository, backend=a.triton_backend)


def run(a) -> None:
    from transformers import CLIPModel, Kosmos2Model

    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    kosmos2 = Kosmos2Model.from_pretrained(a.kosmos2).eval()
    clip = CLIPModel.from_pretrained(a.clip).eval() if a.kind == "hybrid" else None
    d = kosmos2.config.text_config.embed_dim
    in_dim = d + (2 * clip.config.projection_dim if clip is not None else 0)
    head = Head(in_dim, a.hidden, a.chunk).eval()
    if a.head:
        head.load_state_dict(torch.load(a.head, map_location="cpu"))
    if a.fp16:
        kosmos2, head = kosmos2.half(), head.half()
        clip = clip.half() if clip is not None else None
    io = torch.float16 if a.io == "f16" else torch.float32
    io_np = np.float16 if a.io == "f16" else np.float32
    k2p, clipp = processors(a.kosmos2, a.clip)
    probe = Image.fromarray(np.full((240, 320, 3), 128, np.uint8))
    f = feeds(a.kind, k2p, clipp, probe, "go to the cup", a.prompt, a)
    h0 = np.zeros((1, 1, a.hidden), io_np)
    seq = {"input_ids": {1: "text"}, "attention_mask": {1: "text"}, "image_embeds_position_mask": {1: "text"},
           "position_ids": {1: "text"}} if a.padding == "exact" else {}

    stages = []
    if a.kind == "hybrid":
        text_stage = ClipText(clip).eval()
        export(text_stage, [f["clip_input_ids"], f["clip_attention_mask"]], a.out / "clip_text.onnx",
               ["clip_input_ids", "clip_attention_mask"], ["clip_text_embeds"], {}, False)
        with torch.no_grad():
            emb = text_stage(torch.from_numpy(f["clip_input_ids"]), torch.from_numpy(f["clip_attention_mask"])).numpy()
        model = Hybrid(kosmos2, clip, head, io).eval()
        names = ["pixel_values", "input_ids", "attention_mask", "position_ids", "image_embeds_position_mask",
                 "clip_pixel_values", "clip_text_embeds", "h_in", "c_in"]
        args = [f["pixel_values"], f["input_ids"], f["attention_mask"], f["position_ids"],
                f["image_embeds_position_mask"], f["clip_pixel_values"], emb, h0, h0]
        stages = ["clip_text=clip_text.onnx:per_instruction", "policy=policy.onnx"]
    else:
        model = Pure(kosmos2, head, io).eval()
        names = ["pixel_values", "input_ids", "attention_mask", "image_embeds_position_mask", "h_in", "c_in"]
        args = [f["pixel_values"], f["input_ids"], f["attention_mask"], f["image_embeds_position_mask"], h0, h0]
        stages = ["policy=policy.onnx"]
    export(model, args, a.out / "policy.onnx", names, ["actions", "h_out", "c_out"], seq, a.external_data)

    manifest = a.out / f"{a.kind}.json"
    cmd = [sys.executable, str(HERE / "hf_manifest.py"), "--name", a.kind, "-o", str(manifest),
           "--image", f"pixel_values={a.kosmos2}", "--text", f"input_ids={a.kosmos2}",
           "--prompt", f"input_ids={a.prompt}", "--state", "h_in:h_out", "--state", "c_in:c_out",
           "--action", "actions", "--step", "first",
           "--description", f"{a.kind} policy exported by scripts/export_policy.py"]
    if a.stand_in:
        cmd.append("--stand-in")
    for s in stages:
        cmd += ["--stage", s]
    if a.kind == "hybrid":
        cmd += ["--image", f"clip_pixel_values={a.clip}", "--text", f"clip_input_ids={a.clip}", "--index", "0,0"]
    subprocess.run(cmd, check=True, cwd=a.out)

    # The export against PyTorch, in onnxruntime, on the probe frame.
    check_export(a, model, text_stage if a.kind == "hybrid" else None, f, h0)
    if a.frames:
        reference(a, model, text_stage if a.kind == "hybrid" else None, k2p, clipp, h0, manifest)


def torch_step(kind, model, text_stage, f, h, c):
    """One PyTorch run: (actions, h, c) as numpy."""
    t = {k: torch.from_numpy(v) for k, v in f.items()}
    with torch.no_grad():
        if kind == "hybrid":
            emb = text_stage(t["clip_input_ids"], t["clip_attention_mask"])
            out = model(t["pixel_values"], t["input_ids"], t["attention_mask"], t["position_ids"],
                        t["image_embeds_position_mask"], t["clip_pixel_values"], emb, torch.from_numpy(h),
                        torch.from_numpy(c))
        else:
            out = model(t["pixel_values"], t["input_ids"], t["attention_mask"], t["image_embeds_position_mask"],
                        torch.from_numpy(h), torch.from_numpy(c))
    return [o.float().numpy() if o.dtype == torch.float32 else o.numpy() for o in out]


def check_export(a, model, text_stage, f, h0) -> None:
    opts = ort.SessionOptions()
    sess = ort.InferenceSession(str(a.out / "policy.onnx"), opts, providers=["CPUExecutionProvider"])
    feed = dict(f)
    if a.kind == "hybrid":
        ts = ort.InferenceSession(str(a.out / "clip_text.onnx"), providers=["CPUExecutionProvider"])
        feed["clip_text_embeds"] = ts.run(None, {"clip_input_ids": f["clip_input_ids"],
                                                 "clip_attention_mask": f["clip_attention_mask"]})[0]
    feed = {i.name: feed[i.name] if i.name in feed else h0 for i in sess.get_inputs()}
    got = sess.run(None, feed)
    want = torch_step(a.kind, model, text_stage, f, h0, h0)
    diff = max(float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()) for g, w in zip(got, want))
    print(f"export check: onnxruntime vs PyTorch max |diff| = {diff:.2e}")
    if diff > (1e-2 if a.io == "f16" or a.fp16 else 1e-4):
        sys.exit("the ONNX export does not reproduce PyTorch")


def reference(a, model, text_stage, k2p, clipp, h0, manifest_path: Path) -> None:
    """PyTorch's actions for every frame, in order, per instruction (state carried, reset per instruction)."""
    m = json.loads(manifest_path.read_text())
    act = m["action"]
    frames = sorted(p for p in a.frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = {"manifest": manifest_path.name, "frames": [os.path.relpath(p, a.out) for p in frames], "runs": []}
    for instruction in a.instruction or ["go to the cup"]:
        h = c = h0
        actions = []
        for p in frames:
            image = Image.open(p).convert("RGB")
            f = feeds(a.kind, k2p, clipp, image, instruction, a.prompt, a)
            chunk, h, c = torch_step(a.kind, model, text_stage, f, h, c)
            rows = chunk.astype(np.float32).reshape(-1, chunk.shape[-1])
            row = rows[0] if act["step"] == "first" else rows[-1]
            v = np.array([row[act["linear_x"]], row[act["linear_y"]], row[act["angular_z"]]], np.float32)
            v = np.clip(v * np.array(act["scale"], np.float32), -np.array(act["clip"]), np.array(act["clip"]))
            actions.append([float(x) for x in v])
        out["runs"].append({"instruction": instruction, "actions": actions})
    out["sensitivity"] = sensitivity(a, model, text_stage, k2p, clipp, h0, frames[0], act)
    (a.out / "reference.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.out / 'reference.json'} ({len(frames)} frames x {len(out['runs'])} instructions)")


def sensitivity(a, model, text_stage, k2p, clipp, h0, frame: Path, act: dict) -> dict:
    """How far the action moves when the preprocessing is slightly wrong: a
    test that compares actions can only catch errors larger than its tolerance."""
    image = Image.open(frame).convert("RGB")
    f = feeds(a.kind, k2p, clipp, image, "go to the cup", a.prompt, a)
    base = torch_step(a.kind, model, text_stage, f, h0, h0)[0].astype(np.float32)
    out = {}
    near = image.resize((image.width // 2, image.height // 2), Image.NEAREST)
    g = dict(f)
    g["pixel_values"] = feeds(a.kind, k2p, clipp, near, "go to the cup", a.prompt, a)["pixel_values"]
    out["kosmos2_pixels_from_a_half_size_nearest_frame"] = float(np.abs(torch_step(a.kind, model, text_stage, g, h0, h0)[0].astype(np.float32) - base).max())
    if a.kind == "hybrid":
        g = dict(f)
        g["clip_pixel_values"] = f["pixel_values"]
        out["clip_pixels_stretched_instead_of_cropped"] = float(np.abs(torch_step(a.kind, model, text_stage, g, h0, h0)[0].astype(np.float32) - base).max())
    print(f"sensitivity of the action: {out}")
    return out


# --- the model team's family: windows and 2-axis normalised chunks ------------------------------


def text_feeds(k2, image: Image.Image, instruction: str, prompt: str) -> dict[str, np.ndarray]:
    """Kosmos2Processor's tokens (exact length, int64) and pixels for one frame."""
    enc = k2(text=prompt.replace("{instruction}", instruction), images=image, return_tensors="np")
    f = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "image_embeds_position_mask")}
    f["pixel_values"] = enc["pixel_values"].astype(np.float32)
    return f


def window_of(history: list, t: int, start: str):
    """The last t entries, oldest first, the older slots repeating the first (repeat_first); None while waiting."""
    if len(history) < t and start == "wait":
        return None
    recent = history[-t:]
    return [recent[0]] * (t - len(recent)) + recent


def run_windowed(a) -> None:
    from transformers import Kosmos2Model

    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    kosmos2 = Kosmos2Model.from_pretrained(a.kosmos2).eval()
    k2p, _ = processors(a.kosmos2, None)
    d = kosmos2.config.text_config.embed_dim
    axes = a.axes.split(",")
    head = WindowHead(2 * d, a.hidden, a.chunk, len(axes)).eval()
    if a.head:
        head.load_state_dict(torch.load(a.head, map_location="cpu"))
    elif a.stand_in:
        # A random stand-in's head with weights large enough that every frame of the window
        # moves the command measurably (see the sensitivity in reference.json).
        g = torch.Generator().manual_seed(a.seed)
        with torch.no_grad():
            for p in head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    probe = Image.fromarray(np.full((240, 320, 3), 128, np.uint8))
    f = text_feeds(k2p, probe, "go to the cup", a.prompt)
    text_axes = {"input_ids": {1: "text"}, "attention_mask": {1: "text"}, "image_embeds_position_mask": {1: "text"}}
    text_names = ["input_ids", "attention_mask", "image_embeds_position_mask"]
    name = a.name or a.kind
    cmd = [sys.executable, str(HERE / "hf_manifest.py"), "--name", name, "-o", str(a.out / f"{name}.json"),
           "--text", f"input_ids={a.kosmos2}", "--prompt", f"input_ids={a.prompt}", "--action", "actions",
           "--step", "first", "--axes", ",".join(f"{ax}={i}" for i, ax in enumerate(axes)), f"--bounds={a.bounds}",
           "--window-start", a.window_start, "--description", f"{a.kind} policy exported by scripts/export_policy.py"]
    if a.stand_in:
        cmd.append("--stand-in")
    if a.kind == "features":
        backbone = Backbone(kosmos2).eval()
        export(backbone, [f["pixel_values"]] + [f[n] for n in text_names], a.out / "backbone.onnx",
               ["pixel_values"] + text_names, ["vision_features", "text_features"], text_axes, False)
        with torch.no_grad():
            v, t = backbone(*(torch.from_numpy(f[n]) for n in ["pixel_values"] + text_names))
        w = np.repeat(v.numpy()[:, None], a.window, 1), np.repeat(t.numpy()[:, None], a.window, 1)
        export(head, list(w), a.out / "head.onnx", ["vision_window", "text_window"], ["actions"], {}, False)
        cmd += ["--stage", "backbone=backbone.onnx", "--stage", "head=head.onnx", "--image", f"pixel_values={a.kosmos2}",
                "--window", f"vision_window=vision_features:{a.window}",
                "--window", f"text_window=text_features:{a.window}"]
        model = (backbone, head)
    else:
        policy = ImageWindowPolicy(kosmos2, head, a.window).eval()
        px = np.repeat(imagenet_pixels(probe)[:, None], a.window, 1)
        export(policy, [px] + [f[n] for n in text_names], a.out / "policy.onnx", ["image_window"] + text_names,
               ["actions"], text_axes, a.external_data)
        cmd += ["--stage", "policy=policy.onnx", "--image", "frame=imagenet",
                "--window", f"image_window=frame:{a.window}"]
        model = policy
    subprocess.run(cmd, check=True, cwd=a.out)
    check_windowed_export(a, model, f)
    if a.frames:
        windowed_reference(a, model, k2p, a.out / f"{name}.json")


def windowed_step(a, model, history: list, tokens: dict):
    """PyTorch's chunk for the window over `history` (per-frame entries), or None while it waits."""
    names = ["input_ids", "attention_mask", "image_embeds_position_mask"]
    with torch.no_grad():
        if a.kind == "features":
            _, head = model
            w = window_of(history, a.window, a.window_start)
            if w is None:
                return None
            vision = torch.cat([torch.from_numpy(v)[:, None] for v, _ in w], 1)
            text = torch.cat([torch.from_numpy(t)[:, None] for _, t in w], 1)
            return head(vision, text).numpy()
        w = window_of(history, a.window, a.window_start)
        if w is None:
            return None
        px = torch.from_numpy(np.stack([p[0] for p in w])[None])
        return model(px, *(torch.from_numpy(tokens[n]) for n in names)).numpy()


def frame_entry(a, model, k2p, image: Image.Image, instruction: str):
    """What one frame adds to the windows (PyTorch), and its tokens."""
    f = text_feeds(k2p, image, instruction, a.prompt)
    if a.kind == "features":
        backbone, _ = model
        with torch.no_grad():
            v, t = backbone(*(torch.from_numpy(f[n]) for n in ["pixel_values", "input_ids", "attention_mask",
                                                               "image_embeds_position_mask"]))
        return (v.numpy(), t.numpy()), f
    px = imagenet_pixels(image)
    # torchvision's Resize on a PIL image is PIL's antialiased bilinear resize: the node's
    # manifest says so (`imagenet`), and the pixels must agree to the last bit of PIL's output.
    pil = np.asarray(image.resize((224, 224), Image.BILINEAR), np.float32) / 255.0
    want = ((pil - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32))
    assert np.abs(want.transpose(2, 0, 1)[None] - px).max() < 1e-5, "torchvision's Resize is not PIL's here"
    return px, f


def velocity(a, chunk: np.ndarray) -> list[float]:
    """Step 0 of a chunk [1, T, k] in [-1, 1], denormalised onto the manifest's axes (the others 0)."""
    lo, hi = (float(v) for v in a.bounds.split(","))
    row = chunk.astype(np.float32).reshape(-1, chunk.shape[-1])[0]
    out = {"linear_x": 0.0, "linear_y": 0.0, "angular_z": 0.0}
    for i, ax in enumerate(a.axes.split(",")):
        v = row[i] * (hi - lo) / 2 + (hi + lo) / 2
        out[ax] = float(np.clip(v, lo, hi))  # RoboVLMs' denormalisation stays within [min, max]
    return [out["linear_x"], out["linear_y"], out["angular_z"]]


def windowed_reference(a, model, k2p, manifest_path: Path) -> None:
    """PyTorch's command for every frame, in order, per instruction (windows start over
    with each instruction), None for a frame on which a waiting window is not full yet."""
    frames = sorted(p for p in a.frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = {"manifest": manifest_path.name, "frames": [os.path.relpath(p, a.out) for p in frames],
           "window": a.window, "window_start": a.window_start, "runs": []}
    for instruction in a.instruction or ["go to the cup"]:
        history, actions = [], []
        for p in frames:
            entry, tokens = frame_entry(a, model, k2p, Image.open(p).convert("RGB"), instruction)
            history.append(entry)
            chunk = windowed_step(a, model, history, tokens)
            actions.append(None if chunk is None else velocity(a, chunk))
        out["runs"].append({"instruction": instruction, "actions": actions})
    # How far a preprocessing error (every frame of the window resized from a half-size
    # nearest-neighbour copy) moves the command: a test at its tolerance must see it.
    images = [Image.open(p).convert("RGB") for p in frames[: a.window]]
    tokens = frame_entry(a, model, k2p, images[-1], "go to the cup")[1]
    base = [frame_entry(a, model, k2p, im, "go to the cup")[0] for im in images]
    wrong = [frame_entry(a, model, k2p, im.resize((im.width // 2, im.height // 2), Image.NEAREST), "go to the cup")[0]
             for im in images]
    moved = np.abs(np.array(velocity(a, windowed_step(a, model, wrong, tokens)))
                   - np.array(velocity(a, windowed_step(a, model, base, tokens)))).max()
    out["sensitivity"] = {"every_frame_from_a_half_size_nearest_frame": float(moved)}
    (a.out / "reference.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {a.out / 'reference.json'} ({len(frames)} frames x {len(out['runs'])} instructions); "
          f"sensitivity {out['sensitivity']}")


def check_windowed_export(a, model, f) -> None:
    """The exported graphs against PyTorch, in onnxruntime, on a window of the probe frame."""
    cpu = ["CPUExecutionProvider"]
    text = {n: f[n] for n in ("input_ids", "attention_mask", "image_embeds_position_mask")}
    if a.kind == "features":
        backbone, head = model
        b = ort.InferenceSession(str(a.out / "backbone.onnx"), providers=cpu)
        v, t = b.run(None, {"pixel_values": f["pixel_values"], **text})
        h = ort.InferenceSession(str(a.out / "head.onnx"), providers=cpu)
        got = h.run(None, {"vision_window": np.repeat(v[:, None], a.window, 1),
                           "text_window": np.repeat(t[:, None], a.window, 1)})[0]
        with torch.no_grad():
            tv, tt = backbone(*(torch.from_numpy(f[n]) for n in ["pixel_values", *text]))
            want = head(tv[:, None].expand(-1, a.window, -1), tt[:, None].expand(-1, a.window, -1)).numpy()
    else:
        s = ort.InferenceSession(str(a.out / "policy.onnx"), providers=cpu)
        px = np.repeat(imagenet_pixels(Image.fromarray(np.full((240, 320, 3), 128, np.uint8)))[:, None], a.window, 1)
        got = s.run(None, {"image_window": px, **text})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(px), *(torch.from_numpy(text[n]) for n in text)).numpy()
    diff = float(np.abs(got - want).max())
    print(f"export check: onnxruntime vs PyTorch max |diff| = {diff:.2e}")
    if diff > 1e-4:
        sys.exit("the ONNX export does not reproduce PyTorch")


if __name__ == "__main__":
    main()
