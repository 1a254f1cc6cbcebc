#!/usr/bin/env python3
"""The strongest Python node a good engineer would write for this job, as a benchmark rival.

A BENCHMARK REFERENCE, NOT A ROBOT NODE (no watchdog, mux or limits). Same
topics, model contract and per-frame JSON report as `reference_node.py` (whose
tokenisation and recurrent-state handling it reuses), but every step done the
fast way Python allows:

  - raw frames: one view of rclpy's buffer (`np.frombuffer`), no PIL;
  - JPEG: libjpeg-turbo through simplejpeg at the smallest DCT scale that still
    covers the model input (`min_width`/`min_height`);
  - resize, scale, mean/std and HWC->NCHW in one OpenCV call
    (`cv2.dnn.blobFromImageWithParams`, bilinear: the stand-ins' half-pixel
    bilinear contract);
  - onnxruntime with I/O binding (inputs bound from numpy, no feed dict);
  - glibc told to keep large frames on the heap (`mallopt`), so a frame's
    buffer is reused rather than mapped and faulted in again every frame;
  - newest-frame-only hand-over to one worker thread, as the Rust node does.

    python3 benches/strong_node.py --manifest models/hybrid.json [--threads 1]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
import simplejpeg
from geometry_msgs.msg import Twist, Vector3
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_node import ACTION_CLIP, Model  # noqa: E402

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_process() -> None:
    cv2.setNumThreads(1)  # the node is pinned to one core, as every node in the benchmark
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's maximum
    libc.mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024)


class StrongModel(Model):
    def __init__(self, manifest: Path, threads: int):
        super().__init__(manifest, threads)
        img = self.m["image"]
        if img["resize"] != "stretch" or img.get("channel_order", "rgb") != "rgb" or img["dtype"] != "f32":
            raise SystemExit("strong_node: only the stretch / rgb / f32 contract of the bundled stand-ins")
        params = cv2.dnn.Image2BlobParams()
        params.scalefactor = tuple(float(img["scale"] / s) for s in img["std"]) + (0.0,)
        params.size = self.size
        params.mean = tuple(float(m / img["scale"]) for m in img["mean"]) + (0.0,)
        params.swapRB = False
        params.ddepth = cv2.CV_32F
        params.datalayout = cv2.DNN_LAYOUT_NCHW
        self.blob_params = params
        self.binding = self.session.io_binding()

    def preprocess_array(self, rgb: np.ndarray) -> np.ndarray:
        return cv2.dnn.blobFromImageWithParams(rgb, self.blob_params)

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        b = self.binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        b.bind_cpu_input(self.m["image"]["input"], pixels)
        for name, value in self.feeds.items():
            b.bind_cpu_input(name, value)
        for name in self.outputs:
            b.bind_output(name)
        t0 = time.perf_counter()
        self.session.run_with_iobinding(b)
        run_ms = (time.perf_counter() - t0) * 1e3
        outs = b.copy_outputs_to_cpu()
        for s, v in zip(self.m.get("state", []), outs[1:]):
            self.feeds[s["input"]] = v
        a = self.m["action"]
        rows = outs[0].reshape(-1, outs[0].shape[-1])
        row = rows[-1] if a["step"] == "last" else rows[0]
        return np.clip([row[a["linear_x"]], row[a["linear_y"]], row[a["angular_z"]]], -ACTION_CLIP, ACTION_CLIP), run_ms


class StrongNode(Node):
    def __init__(self, model: StrongModel):
        super().__init__("mobile_vla_strong")
        self.model = model
        self.cmd = self.create_publisher(Twist, "/cmd_vel", 10)
        self.result = self.create_publisher(String, "/mobile_vla/inference_result", 10)
        self.create_subscription(CompressedImage, "/camera/image_raw/compressed", self.on_frame,
                                 qos_profile_sensor_data)
        self.create_subscription(Image, "/camera/image_raw", self.on_frame, qos_profile_sensor_data)
        self.create_subscription(String, "/mobile_vla/task", self.on_task, 10)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.latest = None
        self.dropped = 0
        self.has_task = False
        self.running = True
        self.worker = threading.Thread(target=self.loop, daemon=True)
        self.worker.start()

    def on_frame(self, msg) -> None:
        with self.lock:
            if self.latest is not None:
                self.dropped += 1
            self.latest = msg
        self.wake.set()

    def on_task(self, msg: String) -> None:
        with self.lock:
            self.model.set_task(msg.data)
            self.has_task = True

    def decode(self, msg) -> np.ndarray:
        w, h = self.model.size
        if isinstance(msg, CompressedImage):
            return simplejpeg.decode_jpeg(bytes(msg.data), colorspace="RGB", min_width=w, min_height=h)
        if msg.encoding != "rgb8":
            raise ValueError(f"unsupported encoding {msg.encoding}")
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        return rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)

    def loop(self) -> None:
        while self.running:
            self.wake.wait(0.1)
            with self.lock:
                msg, self.latest = self.latest, None
                dropped, self.dropped = self.dropped, 0
                self.wake.clear()
                ready = self.has_task
            if msg is None or not ready:
                continue
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            age_ms = (time.time() - stamp) * 1e3
            t0 = time.perf_counter()
            try:
                pixels = self.model.preprocess_array(self.decode(msg))
            except Exception as e:  # noqa: BLE001 - a bad frame is logged, never fatal
                self.get_logger().warning(f"bad frame: {e}")
                continue
            pre_ms = (time.perf_counter() - t0) * 1e3
            with self.lock:
                action, run_ms = self.model.run(pixels)
            self.cmd.publish(Twist(linear=Vector3(x=float(action[0]), y=float(action[1])),
                                   angular=Vector3(z=float(action[2]))))
            self.result.publish(String(data=json.dumps({
                "frame_id": msg.header.frame_id, "stamp": stamp, "action": [float(v) for v in action],
                "frame_age_ms": age_ms, "preprocess_ms": pre_ms, "inference_ms": run_ms,
                "stamp_to_publish_ms": (time.time() - stamp) * 1e3, "frames_dropped": dropped,
            })))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    a, ros_args = ap.parse_known_args()
    tune_process()
    model = StrongModel(a.manifest, a.threads)
    rclpy.init(args=[sys.argv[0]] + ros_args)
    node = StrongNode(model)
    node.get_logger().info(f"strong node ready: {a.manifest} on {model.session.get_providers()[0]}")
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    node.running = False
    node.worker.join(timeout=2)
    # Destroyed explicitly: a participant left to the interpreter's exit keeps its
    # Fast DDS shared-memory segment (64 MB with the shipped profile) in /dev/shm.
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
