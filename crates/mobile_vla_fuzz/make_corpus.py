#!/usr/bin/env python3
"""Writes the fuzz corpus (crates/mobile_vla_fuzz/corpus/) from real data.

Seeds, in each target's input format (see src/targets.rs):
  image/        the bundled sample frames (models/samples), scaled down, in every
                encoding the node reads (and some it refuses), with padded rows,
                odd sizes and short data;
  compressed/   the same frames as JPEG (baseline 4:2:0 / 4:4:4 / grey,
                progressive, optimised, restart markers, full 640x480 for the
                DCT-scaled path) and PNG (RGB, RGBA, grey, grey+alpha, palette,
                16-bit), a frame whose header claims 60000x60000, a PNG whose
                pixels decompress to 48 MB from 50 KB, SOI + random bytes + EOI;
  instruction/  the instructions of the tests, Unicode, control characters, the
                Kosmos-2 special tokens typed as text, a 4 KB one;
  bag/          a rosbag2 MCAP of InferenceStats written by `rosbags`, and CDR payloads.

    source env.sh && python3 crates/mobile_vla_fuzz/make_corpus.py
"""

from __future__ import annotations

import io
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "corpus"
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2", "mono16", "bayer_rggb8", "16UC1"]


def raw_seed(w: int, h: int, step: int, encoding: str, data: bytes) -> bytes:
    head = struct.pack("<HHI", w, h, step)
    if encoding in ENCODINGS:
        return head + bytes([ENCODINGS.index(encoding)]) + data
    return head + bytes([len(ENCODINGS) + len(encoding)]) + encoding.encode() + data


def to_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[:, :, ::-1]
    if encoding in ("rgba8", "bgra8"):
        c = rgb if encoding == "rgba8" else rgb[:, :, ::-1]
        return np.concatenate([c, np.full(rgb.shape[:2] + (1,), 200, np.uint8)], 2)
    if encoding == "mono8":
        return np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]
    # YUV 4:2:2, two pixels in four bytes (BT.601, as cv_bridge / OpenCV read it).
    f = rgb.astype(np.float32)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u = (f[..., 2] - y) * 0.564 + 128
    v = (f[..., 0] - y) * 0.713 + 128
    y, u, v = (np.clip(a, 0, 255).astype(np.uint8) for a in (y, u, v))
    h, w = y.shape
    out = np.empty((h, w * 2), np.uint8)
    if encoding == "yuv422":  # UYVY
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = u[:, 0::2], y[:, 0::2], v[:, 0::2], y[:, 1::2]
    else:  # YUYV
        out[:, 0::4], out[:, 1::4], out[:, 2::4], out[:, 3::4] = y[:, 0::2], u[:, 0::2], y[:, 1::2], v[:, 0::2]
    return out[:, :, None]


def write(target: str, name: str, data: bytes) -> None:
    (OUT / target).mkdir(parents=True, exist_ok=True)
    (OUT / target / name).write_bytes(data)


def frames() -> list[tuple[str, Image.Image]]:
    return [(p.stem, Image.open(p).convert("RGB")) for p in sorted((ROOT / "models/samples").glob("*.png"))]


def image_seeds() -> None:
    for i, (stem, img) in enumerate(frames()[:3]):
        small = np.asarray(img.resize((40, 30), Image.BILINEAR))
        for enc in ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2"]:
            px = to_encoding(small, enc)
            rows = px.reshape(px.shape[0], -1)
            write("image", f"{stem}_{enc}", raw_seed(40, 30, rows.shape[1], enc, rows.tobytes()))
        # Padded rows (step > width * bpp), as some drivers send them.
        padded = np.pad(small.reshape(30, -1), ((0, 0), (0, 8)))
        write("image", f"{stem}_rgb8_padded", raw_seed(40, 30, 128, "rgb8", padded.tobytes()))
        if i == 0:
            odd = np.asarray(img.resize((7, 5), Image.BILINEAR))
            write("image", "odd_7x5_rgb8", raw_seed(7, 5, 21, "rgb8", odd.tobytes()))
            write("image", "odd_yuv_width", raw_seed(7, 5, 14, "yuv422", to_encoding(odd[:, :6], "yuv422").tobytes()))
            write("image", "one_pixel", raw_seed(1, 1, 3, "rgb8", b"\x10\x20\x30"))
            write("image", "short_data", raw_seed(40, 30, 120, "rgb8", small.tobytes()[:1000]))
            write("image", "huge_claims", raw_seed(65535, 65535, 0xFFFFFFFF, "rgb8", small.tobytes()[:64]))
            write("image", "zero_size", raw_seed(0, 30, 0, "rgb8", b""))
            write("image", "mono16_refused", raw_seed(40, 30, 80, "mono16", bytes(2400)))
            write("image", "unknown_encoding", raw_seed(4, 4, 12, "rgb32f", bytes(48)))


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def comp(name: str, fmt: str, data: bytes, reduced: bool = False) -> None:
    f = ["jpeg", "png", "rgb8; jpeg compressed bgr8", ""].index(fmt)
    write("compressed", name, bytes([(f << 1) | int(reduced)]) + data)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def soi_random_eoi() -> bytes:
    """SOI, 376 pseudo-random bytes, EOI: libjpeg-turbo's "extraneous bytes
    before marker". Once it left the decoder's handle refusing every later good
    JPEG (the bytes of the unit test in mobile_vla_core's preprocess/mod.rs)."""
    seed, out = 7, bytearray(b"\xff\xd8")
    for _ in range(376):
        seed = (seed * 1103515245 + 12345) & 0xFFFFFFFF
        out.append((seed >> 16) & 0xFF)
    return bytes(out + b"\xff\xd9")


def compressed_seeds() -> None:
    for i, (stem, img) in enumerate(frames()[:3]):
        small = img.resize((64, 48), Image.BILINEAR)
        comp(f"{stem}_q90.jpg", "jpeg", jpeg(small, quality=90))
        comp(f"{stem}_444.jpg", "jpeg", jpeg(small, quality=95, subsampling=0), reduced=True)
        comp(f"{stem}_png", "png", png(small))
        if i == 0:
            comp("grey.jpg", "jpeg", jpeg(small.convert("L"), quality=80))
            comp("progressive.jpg", "jpeg", jpeg(small, quality=85, progressive=True), reduced=True)
            comp("optimized_restart.jpg", "rgb8; jpeg compressed bgr8",
                 jpeg(small, quality=70, optimize=True, restart_marker_blocks=1))
            comp("full_640x480.jpg", "jpeg", jpeg(img.resize((640, 480)), quality=75), reduced=True)
            comp("no_format_field.jpg", "", jpeg(small, quality=60))
            comp("rgba.png", "png", png(small.convert("RGBA")))
            comp("grey.png", "png", png(small.convert("L")))
            comp("grey_alpha.png", "png", png(small.convert("LA")))
            comp("palette.png", "png", png(small.convert("P")))
            comp("sixteen_bit.png", "png", png(Image.fromarray(np.asarray(small.convert("L"), np.uint16) * 257)))
            # A header that claims 60000x60000: refused before anything is allocated.
            j = bytearray(jpeg(small, quality=50))
            sof = next(k for k in range(len(j) - 1) if j[k] == 0xFF and j[k + 1] in (0xC0, 0xC2))
            j[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
            comp("claims_60000.jpg", "jpeg", bytes(j))
            # A decompression bomb within the limits: 4000x4000 RGB of zeros (48 MB) in ~50 KB.
            raw = zlib.compress(b"".join(b"\x00" + bytes(4000 * 3) for _ in range(4000)), 9)
            ihdr = struct.pack(">IIBBBBB", 4000, 4000, 8, 2, 0, 0, 0)
            bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b"")
            comp("bomb_4000x4000.png", "png", bomb)
            comp("truncated.jpg", "jpeg", jpeg(small, quality=90)[:400])
            comp("soi_random_eoi.jpg", "jpeg", soi_random_eoi())
            comp("not_an_image", "jpeg", b"GIF89a" + bytes(40))


INSTRUCTIONS = [
    "navigate around the obstacles to the cup",
    "  turn LEFT at the door, then stop  ",
    "Go to the zebra-striped box #3!",
    "move left",
    "",
    "move " * 60 + "forward",
    "fahre nach links zur Tür, dann halt",
    "向左走到门口",
    "🤖➡️🚪 go",
    "tab\tnew\nline\r\x00nul",
    "<grounding> <image> </image> <phrase> the cup </phrase> <object> <patch_index_0001> </object>",
    "</s><s><pad><unk>",
    "x" * 4096,
]


def instruction_seeds() -> None:
    for i, text in enumerate(INSTRUCTIONS):
        write("instruction", f"{i:02d}", text.encode())
    write("instruction", "invalid_utf8", b"go \xff\xfe left \xc3")


def bag_seeds() -> None:
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from mobile_vla_msgs.msg import InferenceStats

    typ = "mobile_vla_msgs/msg/InferenceStats"
    ts = get_typestore(Stores.ROS2_JAZZY)
    ts.register(get_types_from_msg((ROOT / "msg/msg/InferenceStats.msg").read_text(), typ))
    msgs = []
    for i in range(6):
        m = InferenceStats()
        m.header.stamp.sec, m.header.frame_id = 1000 + i, f"cam{i}"
        m.frame_seq, m.command_seq = i + 1, i if i % 2 else 0
        m.policy, m.execution_provider = ("hybrid", "CPUExecutionProvider") if i < 4 else ("pure", "CUDAExecutionProvider")
        m.fallback_active = i >= 4
        m.outcome = i % 4
        m.inference_ms, m.total_ms, m.frames_dropped = 1.5 + i, 2.0 + i, i
        m.action.linear.y = 0.1 * i
        msgs.append(m)
    with tempfile.TemporaryDirectory() as d:
        with Writer(Path(d) / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as w:
            conn = w.add_connection("/mobile_vla/inference_stats", typ, typestore=ts)
            other = w.add_connection("/cmd_vel", "geometry_msgs/msg/Twist", typestore=ts)
            for i, m in enumerate(msgs):
                w.write(conn, 10**9 * (1000 + i), serialize_message(m))
                w.write(other, 10**9 * (1000 + i) + 1, bytes(52))
        mcap = next((Path(d) / "bag").glob("*.mcap")).read_bytes()
    write("bag", "recorded.mcap", b"\x00" + mcap)
    write("bag", "truncated.mcap", b"\x00" + mcap[: len(mcap) // 2])
    for i, m in enumerate(msgs[:3]):
        write("bag", f"payload_{i}.cdr", b"\x01" + serialize_message(m))
    write("bag", "payload_short.cdr", b"\x01" + serialize_message(msgs[0])[:30])


def main() -> int:
    # What the fuzzer found and was copied in once fixed (regression-*) is no seed of ours: kept.
    kept = {(p.parent.name, p.name): p.read_bytes() for p in OUT.glob("*/regression-*")}
    if OUT.exists():
        shutil.rmtree(OUT)
    image_seeds()
    compressed_seeds()
    instruction_seeds()
    bag_seeds()
    for (target, name), data in kept.items():
        write(target, name, data)
    for d in sorted(OUT.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name:<12} {len(files):>3} seeds, {sum(f.stat().st_size for f in files) / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
