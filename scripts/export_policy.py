#!/usr/bin/env python3
"""Exports a Kosmos-2 (+ CLIP) policy to ONNX for the mobile_vla node, with
its manifest and reference outputs.

    hybrid: Kosmos-2 (vision tower, latent-query projection, causal text
            decoder over <image> + image tokens + text) + CLIP (vision tower on
            its own crop, text tower as a per-instruction stage) -> LSTM -> MLP
    pure:   Kosmos-2 -> LSTM -> MLP

The head (an LSTM over the pooled features, state in and out, and an MLP to a
chunk of T actions) is this script's `Head`; `--head` loads its trained
weights (a state_dict), without it the head is random (fixtures only).
Kosmos-2 and CLIP come from Hugging Face model folders (`from_pretrained`;
no hub access is needed for local folders).

    python3 scripts/export_policy.py --kind hybrid --kosmos2 K2_DIR --clip CLIP_DIR \\
        --head head.pt --out build/export/hybrid [--io f16] [--fp16] [--ids int32] \\
        [--padding exact] [--chunk 4] [--external-data] [--frames DIR --instruction "go to the cup"]

Writes OUT/policy.onnx (and OUT/clip_text.onnx for the hybrid), external data
beside them when asked or when a graph is over 2 GB, OUT/<kind>.json (the
manifest, by scripts/hf_manifest.py from the processors' own files) and, with
--frames, OUT/reference.json: the actions PyTorch computes for the frames fed
by the Hugging Face processors themselves (PIL backend), which the node must
reproduce. The export is checked against PyTorch in onnxruntime before it is
written out.

Needs torch and transformers (see models/hf_tiny/requirements.txt for the
versions the bundled fixtures were made with).
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
import torch
from PIL import Image
from torch import nn

HERE = Path(__file__).resolve().parent


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


def last_real(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last real (unpadded) token: [1, L, d] -> [1, d]."""
    idx = attention_mask.long().sum(-1) - 1
    return hidden.gather(1, idx.view(1, 1, 1).expand(1, 1, hidden.shape[-1]))[:, 0]


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
    ap.add_argument("--kind", choices=["hybrid", "pure"], required=True)
    ap.add_argument("--kosmos2", type=Path, required=True, help="Hugging Face Kosmos-2 folder (model + processor)")
    ap.add_argument("--clip", type=Path, help="Hugging Face CLIP folder (model + processor), hybrid only")
    ap.add_argument("--head", type=Path, help="trained head state_dict (.pt); random without it")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=4, help="actions per chunk (T)")
    ap.add_argument("--io", choices=["f32", "f16"], default="f32", help="type of the state and action tensors")
    ap.add_argument("--fp16", action="store_true", help="export with float16 weights (TensorRT's FP16 needs no this)")
    ap.add_argument("--ids", choices=["int32", "int64"], default="int64")
    ap.add_argument("--padding", choices=["exact", "max_length"], default="exact")
    ap.add_argument("--max-length", type=int, default=96, help="with --padding max_length")
    ap.add_argument("--prompt", default="<grounding>{instruction}", help="Kosmos-2 prompt template")
    ap.add_argument("--external-data", action="store_true", help="weights beside the graph (always over 2 GB)")
    ap.add_argument("--frames", type=Path, help="folder of JPEG/PNG frames for reference.json")
    ap.add_argument("--instruction", action="append", default=[], help="instructions for reference.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stand-in", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    for k in ("kosmos2", "clip", "head", "frames", "out"):
        if getattr(a, k) is not None:
            setattr(a, k, getattr(a, k).resolve())
    run(a)


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


if __name__ == "__main__":
    main()
