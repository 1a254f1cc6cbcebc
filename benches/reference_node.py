#!/usr/bin/env python3
"""The team's earlier Python node, rebuilt as the benchmark's reference.

A BENCHMARK REFERENCE, NOT A ROBOT NODE. It reproduces the original pipeline
the way that node was written, so `benches/compare.py` can measure mobile_vla
against it on the same machine, model and frames:

  rclpy; `/camera/image/compressed` (sensor_msgs/CompressedImage, best effort)
  and `/mobile_vla/task` (std_msgs/String) in; the callback keeps only the
  newest frame and a worker thread takes it: PIL decode, resize to 224x224,
  scale to [0, 1] with numpy (then the model's mean/std), onnxruntime Python
  session; `/cmd_vel` (geometry_msgs/Twist, clipped to +-1.15) out, plus the JSON
  string on `/mobile_vla/inference_result` that node published per frame.

Where it goes beyond the original, for a like-for-like measurement:
  - raw sensor_msgs/Image (rgb8) on `/camera/image_raw` too, decoded with numpy;
  - the model's own input contract (Kosmos-2 prompt, recurrent state) read from
    the same manifest the Rust node loads, tokenised once per instruction;
  - inference_result carries the frame stamp, the session.run time and the
    frame-stamp-to-publish time, measured as the Rust node measures them.
What it deliberately does not copy: with no model it exits (the original made
up "simulated" actions), and it has no watchdog, mux or limits.

    python3 benches/reference_node.py --manifest models/hybrid.json [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rclpy
from geometry_msgs.msg import Twist, Vector3
from PIL import Image as PILImage
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from tokenizers import Tokenizer

ACTION_CLIP = 1.15


class Model:
    """The onnxruntime session plus the manifest's prompt and recurrent-state contract."""

    def __init__(self, manifest: Path, threads: int):
        self.m = json.loads(manifest.read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(manifest.parent / self.m["onnx"]), opts,
                                            providers=["CPUExecutionProvider"])
        img = self.m["image"]
        self.size = (img["width"], img["height"])
        self.mean = np.asarray(img["mean"], np.float32)
        self.std = np.asarray(img["std"], np.float32)
        text = self.m.get("text")
        self.tokenizer = Tokenizer.from_file(str(manifest.parent / text["tokenizer"])) if text else None
        self.outputs = [self.m["action"]["output"]] + [s["output"] for s in self.m.get("state", [])]
        self.feeds: dict[str, np.ndarray] = {}

    def set_task(self, task: str) -> None:
        """Kosmos-2 prompt: <s> <image> <img>*N </image> tokens </s>, padded; resets the state."""
        t = self.m["text"]
        span = t["image_span"]
        ids = self.tokenizer.encode(t["prompt"].replace("{instruction}", task), add_special_tokens=False).ids
        head = [t["bos_id"], span["start_id"]] + [span["token_id"]] * span["length"] + [span["end_id"]]
        seq = head + ids[: t["max_length"] - len(head) - 1] + [t["eos_id"]]
        pad = t["max_length"] - len(seq)
        image = [0, 0] + [1] * span["length"] + [0] * (t["max_length"] - 2 - span["length"])
        self.feeds = {
            t["input_ids"]: np.asarray([seq + [t["pad_id"]] * pad], np.int64),
            t["attention_mask"]: np.asarray([[1] * len(seq) + [0] * pad], np.int64),
            t["image_embeds_position_mask"]: np.asarray([image], np.int64),
        }
        for s in self.m.get("state", []):
            self.feeds[s["input"]] = np.zeros(s["shape"], np.float32)

    def preprocess(self, rgb: PILImage.Image) -> np.ndarray:
        x = np.asarray(rgb.resize(self.size, PILImage.BILINEAR), dtype=np.float32) / 255.0
        x = (x - self.mean) / self.std
        return x.transpose(2, 0, 1)[None].astype(np.float16 if self.m["image"]["dtype"] == "f16" else np.float32)

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        feeds = dict(self.feeds)
        feeds[self.m["image"]["input"]] = pixels
        t0 = time.perf_counter()
        outs = self.session.run(self.outputs, feeds)
        run_ms = (time.perf_counter() - t0) * 1e3
        for s, v in zip(self.m.get("state", []), outs[1:]):
            self.feeds[s["input"]] = v
        a = self.m["action"]
        rows = outs[0].reshape(-1, outs[0].shape[-1])
        row = rows[-1] if a["step"] == "last" else rows[0]
        return np.clip([row[a["linear_x"]], row[a["linear_y"]], row[a["angular_z"]]], -ACTION_CLIP, ACTION_CLIP), run_ms


class ReferenceNode(Node):
    def __init__(self, model: Model):
        super().__init__("mobile_vla_reference")
        self.model = model
        self.cmd = self.create_publisher(Twist, "/cmd_vel", 10)
        self.result = self.create_publisher(String, "/mobile_vla/inference_result", 10)
        self.status = self.create_publisher(String, "/mobile_vla/status", 10)
        self.create_subscription(CompressedImage, "/camera/image/compressed", self.on_frame, qos_profile_sensor_data)
        self.create_subscription(Image, "/camera/image_raw", self.on_frame, qos_profile_sensor_data)
        self.create_subscription(String, "/mobile_vla/task", self.on_task, 10)
        self.lock = threading.Lock()  # the newest frame
        self.model_lock = threading.Lock()  # the prompt and recurrent state
        self.wake = threading.Event()
        self.latest = None
        self.dropped = 0
        self.task = ""
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
        with self.model_lock:
            self.model.set_task(msg.data)
        with self.lock:
            self.task = msg.data
        self.status.publish(String(data=json.dumps({"status": "running", "task": msg.data})))

    def decode(self, msg) -> PILImage.Image:
        if isinstance(msg, CompressedImage):
            return PILImage.open(io.BytesIO(bytes(msg.data))).convert("RGB")
        if msg.encoding != "rgb8":
            raise ValueError(f"unsupported encoding {msg.encoding}")
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        return PILImage.fromarray(rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3))

    def loop(self) -> None:
        while self.running:
            self.wake.wait(0.1)
            with self.lock:
                msg, self.latest = self.latest, None
                dropped, self.dropped = self.dropped, 0
                self.wake.clear()
                has_task = bool(self.task)
            if msg is None or not has_task:
                continue
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            age_ms = (time.time() - stamp) * 1e3
            t0 = time.perf_counter()
            try:
                pixels = self.model.preprocess(self.decode(msg))
            except Exception as e:  # noqa: BLE001 - a bad frame is logged, never fatal
                self.get_logger().warning(f"bad frame: {e}")
                continue
            pre_ms = (time.perf_counter() - t0) * 1e3
            with self.model_lock:
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
    model = Model(a.manifest, a.threads)
    rclpy.init(args=[sys.argv[0]] + ros_args)
    node = ReferenceNode(model)
    node.get_logger().info(f"reference node ready: {a.manifest} on {model.session.get_providers()[0]}")
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
