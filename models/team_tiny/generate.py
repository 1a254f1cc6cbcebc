#!/usr/bin/env python3
"""Generates models/team_tiny/: STAND-INS OF THE MODEL TEAM'S POLICY FAMILY,
with random weights, for testing the node against the shapes they train.

Not trained, not the team's models: a tiny Hugging Face `Kosmos2Model` (the
real architecture, 2 layers, width 32) and a RoboVLMs-style head, in the two
forms the team's code has:
  features/  a per-frame backbone (Kosmos-2 -> vision_features, text_features),
             windows of the last 8 frames of both, an LSTM + MLP head over the
             window -> a chunk of 10 future actions [1, 10, 2] in [-1, 1]
             (linear.x, linear.y; denormalised by the manifest's bounds
             [-1.15, 1.15]); the node waits for 8 frames, as in training;
  images/    one graph taking a window of 8 images [1, 8, 3, 224, 224]
             (torchvision's Resize((224, 224)) and ImageNet mean and std),
             Kosmos-2's vision on each -> the same head -> [1, 10, 2]
             (linear.x, angular.z); the node repeats the first frame until 8;
each with its manifest and reference.json: PyTorch's commands for frames/
(a 1280x720 camera sequence, the team's camera) fed the same windows, for an
English and a Korean instruction. The Kosmos-2 tokenizer is a sentencepiece
Unigram model trained here on English and Korean robot instructions (no hub
is reachable), wrapped as XLM-RoBERTa with Kosmos-2's added tokens, as in
models/hf_tiny.

Reproduce (a few minutes; torch and torchvision are large, so not part of
set-up or CI):
    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install -r models/team_tiny/requirements.txt
    /tmp/hf/bin/python models/team_tiny/generate.py
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# models/hf_tiny/generate.py's scene, tokenizer and weight helpers.
_spec = importlib.util.spec_from_file_location("hf_tiny_generate", HERE.parent / "hf_tiny" / "generate.py")
hf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hf)

# The team's instructions (their episodes carry Korean originals and English variants).
INSTRUCTIONS = [
    "Navigate around obstacles and reach the front of the beverage bottle on the left",
    "장애물을 피해 음료수 페트병 앞으로 도착해라",
]
KOREAN = """
장애물을 피해 음료수 페트병 앞으로 도착해라
왼쪽에 있는 음료수 병 앞으로 가라
오른쪽으로 돌아서 문 앞에 멈춰라
천천히 앞으로 이동해라
로봇은 사람과 장애물에서 안전한 거리를 유지해라
컵이 있는 테이블까지 가서 멈춰라
""".strip().splitlines()
ENGLISH = [
    "Navigate around obstacles and reach the front of the beverage bottle on the left",
    "Navigate around obstacles and reach the front of the beverage bottle on the right",
]
FRAMES = 12
WINDOW = 8


def sequence(n: int, w: int = 1280, h: int = 720) -> list[np.ndarray]:
    """A camera sequence: the scene of hf_tiny's frames, the view panning a little each frame."""
    base = hf.photo(w + 8 * n, h, 7)
    return [np.ascontiguousarray(base[:, 8 * i: 8 * i + w]) for i in range(n)]


def main() -> None:
    from transformers import CLIPImageProcessorPil, Kosmos2Model, Kosmos2Processor

    for d in ["kosmos2", "features", "images", "frames"]:
        shutil.rmtree(HERE / d, ignore_errors=True)
        (HERE / d).mkdir()
    torch.manual_seed(0)
    hf.CORPUS = hf.CORPUS + ENGLISH + KOREAN
    tok = hf.kosmos2_tokenizer(HERE / "kosmos2")
    k2_image = CLIPImageProcessorPil(size={"height": 224, "width": 224}, crop_size={"height": 224, "width": 224},
                                     do_center_crop=False)
    k2 = Kosmos2Processor(image_processor=k2_image, tokenizer=tok, num_patch_index_tokens=1024)
    k2.save_pretrained(HERE / "kosmos2")
    for text in INSTRUCTIONS:
        ids = k2.tokenizer(text)["input_ids"]
        assert tok.unk_token_id not in ids, f"{text!r} has unknown pieces: the tokenizer must know Korean"
    kosmos2 = Kosmos2Model(hf.tiny_kosmos2_config(len(k2.tokenizer))).eval()
    hf.roughen(kosmos2, 0.3, 11)
    kosmos2.save_pretrained(HERE / "kosmos2")

    for i, px in enumerate(sequence(FRAMES)):
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, "JPEG", quality=90)
        (HERE / "frames" / f"{i:02d}_1280x720.jpg").write_bytes(buf.getvalue())

    common = ["--kosmos2", str(HERE / "kosmos2"), "--frames", str(HERE / "frames"), "--hidden", "32",
              "--chunk", "10", "--window", str(WINDOW), "--bounds=-1.15,1.15", "--stand-in", "--seed", "5"]
    for instruction in INSTRUCTIONS:
        common += ["--instruction", instruction]
    export = [sys.executable, str(ROOT / "scripts" / "export_policy.py")]
    subprocess.run(export + ["--kind", "features", "--axes", "linear_x,linear_y", "--window-start", "wait",
                             "--out", str(HERE / "features")] + common, check=True)
    subprocess.run(export + ["--kind", "images", "--axes", "linear_x,angular_z", "--window-start", "repeat_first",
                             "--out", str(HERE / "images")] + common, check=True)
    for f in (HERE / "kosmos2").glob("model.safetensors"):
        f.unlink()
    print("done")


if __name__ == "__main__":
    main()
