"""An independent reference of the node's pipeline for the v1 stand-ins:
OpenCV's resize, the Hugging Face `tokenizers` Python package, and Python
onnxruntime.

The stand-ins' manifests ask for half-pixel bilinear sampling without
antialiasing, which is OpenCV's `INTER_LINEAR` (on float pixels); YUV frames
are converted by OpenCV, as cv_bridge does; compressed frames are decoded by
PIL. Manifests with the processors' filters are checked against the Hugging
Face processors themselves (test_hf_contract.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer


def decode_raw(encoding: str, data: bytes, width: int, height: int, step: int) -> np.ndarray:
    """sensor_msgs/Image bytes -> float32 RGB (H, W, 3) in 0..255."""
    rows = np.frombuffer(data, np.uint8)[: step * height].reshape(height, step)
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        n = 3 if encoding in ("rgb8", "bgr8") else 4
        px = rows[:, : width * n].reshape(height, width, n)[..., :3].astype(np.float32)
        return px[..., ::-1] if encoding.startswith("bgr") else px
    if encoding == "mono8":
        g = rows[:, :width].astype(np.float32)
        return np.stack([g, g, g], -1)
    if encoding in ("yuv422", "yuv422_yuy2"):
        # As cv_bridge converts them: OpenCV's cvtColor (BT.601 video range).
        packed = np.ascontiguousarray(rows[:, : width * 2]).reshape(height, width, 2)
        code = cv2.COLOR_YUV2RGB_UYVY if encoding == "yuv422" else cv2.COLOR_YUV2RGB_YUY2
        return cv2.cvtColor(packed, code).astype(np.float32)
    raise ValueError(encoding)


def decode_compressed(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)


def preprocess(rgb: np.ndarray, spec: dict) -> np.ndarray:
    h, w = rgb.shape[:2]
    ow, oh = spec["width"], spec["height"]
    x0, cw, y0, ch = 0, w, 0, h
    if spec["resize"] == "center_crop":
        if w * oh > h * ow:
            cw = max(h * ow // oh, 1)
            x0 = (w - cw) // 2
        else:
            ch = max(w * oh // ow, 1)
            y0 = (h - ch) // 2
    assert spec["resize"] in ("stretch", "center_crop") and not spec.get("antialias", False), spec
    crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw], np.float32)
    v = cv2.resize(crop, (ow, oh), interpolation=cv2.INTER_LINEAR)
    order = [0, 1, 2] if spec["channel_order"] == "rgb" else [2, 1, 0]
    v = v[..., order]
    std = np.asarray(spec["std"], np.float32)[order]
    mean = np.asarray(spec["mean"], np.float32)[order]
    v = v * (np.float32(spec["scale"]) / std) + (-mean / std)
    t = v.transpose(2, 0, 1)[None] if spec["layout"] == "nchw" else v[None]
    t = np.ascontiguousarray(t, np.float32)
    return t.astype(np.float16) if spec["dtype"] == "f16" else t


class ReferencePolicy:
    def __init__(self, manifest_path: Path):
        self.path = Path(manifest_path)
        self.m = json.loads(self.path.read_text())
        self.session = ort.InferenceSession(str(self.path.parent / self.m["onnx"]), providers=["CPUExecutionProvider"])
        t = self.m.get("text")
        self.tokenizer = Tokenizer.from_file(str(self.path.parent / t["tokenizer"])) if t else None
        self.tokens = None
        self.reset()

    def reset(self):
        self.state = {s["input"]: np.zeros(s["shape"], np.float32) for s in self.m.get("state", [])}

    def set_instruction(self, instruction: str):
        t = self.m["text"]
        ids = self.tokenizer.encode(t["prompt"].replace("{instruction}", instruction), add_special_tokens=False).ids
        seq, img = [], []
        if t.get("bos_id") is not None:
            seq.append(t["bos_id"]); img.append(0)
        span = t.get("image_span")
        if span:
            seq += [span["start_id"]] + [span["token_id"]] * span["length"] + [span["end_id"]]
            img += [0] + [1] * span["length"] + [0]
        room = t["max_length"] - len(seq) - (t.get("eos_id") is not None)
        seq += ids[:room]; img += [0] * len(ids[:room])
        if t.get("eos_id") is not None:
            seq.append(t["eos_id"]); img.append(0)
        real = len(seq)
        pad = t["max_length"] - real
        self.tokens = {
            t["input_ids"]: np.asarray([seq + [t["pad_id"]] * pad], np.int64),
            t["attention_mask"]: np.asarray([[1] * real + [0] * pad], np.int64),
            t["image_embeds_position_mask"]: np.asarray([img + [0] * pad], np.int64),
        }
        self.reset()

    def run(self, rgb: np.ndarray) -> np.ndarray:
        """The (linear.x, linear.y, angular.z) the node should publish for this frame."""
        feeds = {self.m["image"]["input"]: preprocess(rgb, self.m["image"])}
        feeds.update(self.tokens or {})
        feeds.update(self.state)
        names = [self.m["action"]["output"]] + [s["output"] for s in self.m.get("state", [])]
        outs = dict(zip(names, self.session.run(names, feeds)))
        for s in self.m.get("state", []):
            self.state[s["input"]] = outs[s["output"]]
        a = self.m["action"]
        raw = outs[a["output"]]
        row = raw.reshape(-1, raw.shape[-1])[0 if a.get("step", "first") == "first" else -1]
        v = np.array([row[a["linear_x"]], row[a["linear_y"]], row[a["angular_z"]]], np.float32)
        v = v * np.asarray(a["scale"], np.float32)
        clip = np.asarray(a["clip"], np.float32)
        return np.clip(v, -clip, clip)


def rgb_to_yuv422(rgb: np.ndarray, order: str) -> bytes:
    """Packs RGB (uint8) as UYVY ("yuv422") or YUYV ("yuv422_yuy2"), BT.601 video range (a camera's)."""
    f = rgb.astype(np.float32)
    y = 16 + 0.257 * f[..., 0] + 0.504 * f[..., 1] + 0.098 * f[..., 2]
    u = 128 - 0.148 * f[..., 0] - 0.291 * f[..., 1] + 0.439 * f[..., 2]
    v = 128 + 0.439 * f[..., 0] - 0.368 * f[..., 1] - 0.071 * f[..., 2]
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    h, w = y.shape
    out = np.empty((h, w // 2, 4), np.uint8)
    uu, vv = u[:, 0::2], v[:, 0::2]
    if order == "yuv422":
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = uu, y[:, 0::2], vv, y[:, 1::2]
    else:
        out[..., 0], out[..., 1], out[..., 2], out[..., 3] = y[:, 0::2], uu, y[:, 1::2], vv
    return out.tobytes()
