#!/usr/bin/env python3
"""Generates everything in models/ that is not a real model export.

STAND-INS, NOT THE REAL MODELS. The team's Kosmos-2 + CLIP hybrid (1.86 B
parameters, 7.8 GB) and pure Kosmos-2 (1.70 B, 7.1 GB) exports cannot ship in
this repository. This script writes small ONNX graphs with the same input and
output contract instead, plus sample camera frames, so the node, its tests and
its benchmarks run end to end on real ONNX Runtime.

Run from anywhere; writes next to this file:
    samples/*.png      bundled sample camera frames (640x480 RGB)

Deterministic: the same script writes the same bytes.
"""

from __future__ import annotations

import os
import sys

import numpy as np
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


def main() -> int:
    write_samples()
    return 0


if __name__ == "__main__":
    sys.exit(main())
