"""The model team's policy family, as they train it: 2-axis normalised chunks,
frame windows, their 1280x720 camera, Korean and English instructions.

models/team_tiny holds two tiny random-weight stand-ins of that family (made
by models/team_tiny/generate.py with pinned versions; Kosmos-2 is the real
architecture) and, for each, reference.json: the commands PyTorch computed
for a 1280x720 sequence fed the same windows, for an English and a Korean
instruction.

- features: a per-frame Kosmos-2 backbone, windows of its last 8 outputs,
  an LSTM + MLP head -> [1, 10, 2] in [-1, 1] on linear.x and linear.y,
  denormalised by bounds [-1.15, 1.15]; the node waits for 8 frames;
- images: a window of 8 images [1, 8, 3, 224, 224] (torchvision's Resize and
  ImageNet normalisation) -> the same head, on linear.x and angular.z; the
  first frame repeated until 8.

Here: the node's tokens for both instructions equal Kosmos2Processor's; its
image window equals PIL's resize with ImageNet normalisation (what
torchvision's Resize does with a PIL image) frame by frame; the graphs fed
that way reproduce PyTorch (onnxruntime); and the node, over ROS, on raw
rgb8, raw bgr8 and JPEG frames, commands what PyTorch computed for every
frame (within 1e-4), holds still while its window fills (saying so), leaves
the absent axis at exactly 0, and starts its windows over when the
instruction changes.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import SHARE, find_pkg_prefix, wait_for
from PIL import Image
from sensor_msgs.msg import CompressedImage
from transformers import AutoTokenizer, CLIPImageProcessorPil, Kosmos2Processor

from test_policy import Driver, raw_msg

TEAM = SHARE / "models" / "team_tiny"
INPUTS_EXE = find_pkg_prefix("mobile_vla") / "lib/mobile_vla/mobile_vla_inputs"
TOLERANCE = 1e-4
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def reference(kind: str) -> dict:
    return json.loads((TEAM / kind / "reference.json").read_text())


def frames(kind: str) -> list[Path]:
    return [TEAM / kind / f for f in reference(kind)["frames"]]


def k2_processor() -> Kosmos2Processor:
    return Kosmos2Processor(image_processor=CLIPImageProcessorPil.from_pretrained(TEAM / "kosmos2"),
                            tokenizer=AutoTokenizer.from_pretrained(TEAM / "kosmos2"))


def node_inputs(tmp_path: Path, kind: str, paths: list[Path], instruction: str) -> dict[str, np.ndarray]:
    out = tmp_path / f"inputs_{len(list(tmp_path.iterdir()))}"
    r = subprocess.run([str(INPUTS_EXE), str(TEAM / kind / f"{kind}.json"), *map(str, paths),
                        "--instruction", instruction, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {p.stem: np.load(p) for p in out.glob("*.npy")}


@pytest.mark.parametrize("instruction", reference("features")["runs"], ids=["english", "korean"])
def test_korean_and_english_instructions_are_tokenised_as_the_processor_does(tmp_path, instruction):
    text = instruction["instruction"]
    image = Image.open(frames("features")[0]).convert("RGB")
    want = k2_processor()(text="<grounding>" + text, images=image, return_tensors="np")
    assert AutoTokenizer.from_pretrained(TEAM / "kosmos2").unk_token_id not in want["input_ids"][0]
    for kind in ("features", "images"):
        got = node_inputs(tmp_path, kind, frames(kind)[:1], text)
        for key in ("input_ids", "attention_mask", "image_embeds_position_mask"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{kind} {key}")


def test_the_image_window_is_the_last_8_frames_resized_as_torchvision_with_the_first_repeated(tmp_path):
    paths = frames("images")
    for n in (3, 10):
        got = node_inputs(tmp_path, "images", paths[:n], "go")["image_window"]
        assert got.shape == (1, 8, 3, 224, 224) and got.dtype == np.float32, got.shape
        recent = paths[max(0, n - 8):n]
        slots = [recent[0]] * (8 - len(recent)) + recent
        for k, p in enumerate(slots):
            # torchvision's Resize((224, 224)) on a PIL image is PIL's antialiased bilinear resize.
            px = np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR), np.float64) / 255
            want = ((px - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
            levels = np.abs(got[0, k] - want) * IMAGENET_STD[:, None, None] * 255
            assert levels.max() <= 1.0, (n, k, levels.max())
    # The waiting fixture's windows come from its backbone: not an input of the frame.
    assert "vision_window" not in node_inputs(tmp_path, "features", paths[:8], "go")


def test_the_graphs_fed_by_the_processors_reproduce_pytorch():
    k2 = k2_processor()
    cpu = ["CPUExecutionProvider"]
    for kind in ("features", "images"):
        ref = reference(kind)
        sessions = {p.stem: ort.InferenceSession(str(p), providers=cpu) for p in (TEAM / kind).glob("*.onnx")}
        for run in ref["runs"]:
            history = []
            for path, want in zip(frames(kind), run["actions"]):
                image = Image.open(path).convert("RGB")
                e = k2(text="<grounding>" + run["instruction"], images=image, return_tensors="np")
                text = {k: e[k].astype(np.int64) for k in ("input_ids", "attention_mask", "image_embeds_position_mask")}
                if kind == "features":
                    history.append(sessions["backbone"].run(None, {"pixel_values": e["pixel_values"], **text}))
                    if len(history) < 8:
                        assert want is None, (path, want)
                        continue
                    v, t = (np.concatenate([h[i][:, None] for h in history[-8:]], 1) for i in (0, 1))
                    chunk = sessions["head"].run(None, {"vision_window": v, "text_window": t})[0]
                    got = [chunk[0, 0, 0] * 1.15, chunk[0, 0, 1] * 1.15, 0.0]
                else:
                    px = np.asarray(image.resize((224, 224), Image.BILINEAR), np.float64) / 255
                    history.append(((px - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32))
                    recent = history[-8:]
                    window = np.stack([recent[0]] * (8 - len(recent)) + recent)[None]
                    chunk = sessions["policy"].run(None, {"image_window": window, **text})[0]
                    got = [chunk[0, 0, 0] * 1.15, 0.0, chunk[0, 0, 1] * 1.15]
                assert np.abs(np.array(got) - np.array(want)).max() <= TOLERANCE, (kind, path.name, got, want)


def test_the_reference_can_tell_a_preprocessing_error_from_rounding():
    for kind in ("features", "images"):
        for what, moved in reference(kind)["sensitivity"].items():
            assert moved > 5 * TOLERANCE, (kind, what, moved)


class Stepper:
    """Frames one at a time, each seen through to its result: a run (stats) or a
    window still filling (status) before the next is sent. A frame is sent again
    only when neither came in 5 s (best-effort DDS lost it); had the node taken
    it twice, the window's count and the commands after it would be off, and
    the test fails."""

    def __init__(self, d: Driver, node):
        self.d, self.node = d, node

    def filling(self, k: int, since: int) -> bool:
        return any(f"filling ({k} of 8 frames)" in s.reason for s in self.d.status.msgs[since:])

    def step(self, msg, k: int | None):
        """Sends `msg`; `k`: the window's count after it while it fills (None: a run is due)."""
        for _ in range(3):
            n, before = len(self.d.stats), len(self.d.status)
            msg.header.stamp = self.d.stamp()
            self.d.cam.publish(msg)
            if k is None and wait_for(lambda: len(self.d.stats) > n, 5):
                return self.d.stats.msgs[-1]
            if k is not None and wait_for(lambda: self.filling(k, before), 5):
                return None
        raise AssertionError(f"no answer to the frame (window {k}):\n{self.node.output()[-3000:]}")


def start(run_node, kind: str, transport: str):
    return run_node({
        "camera": {"transport": transport, "max_age_s": 5.0},
        "policy": {"hybrid": {"manifest": str(TEAM / kind / f"{kind}.json"), "providers": ["cpu"]}},
        "watchdog": {"fallback_enabled": False, "deadline_s": 2.0, "hard_timeout_s": 4.0},
        "limits": {"max_velocity": [5.0, 5.0, 5.0], "max_accel": [0.0, 0.0, 0.0]},
    })


@pytest.mark.parametrize("transport", ["rgb8", "bgr8", "jpeg"])
@pytest.mark.parametrize("kind", ["features", "images"])
def test_node_commands_equal_pytorch_fed_the_same_windows(peer, run_node, kind, transport):
    node = start(run_node, kind, "compressed" if transport == "jpeg" else "raw")
    d = Driver(peer, compressed=transport == "jpeg")
    d.ready(node)
    status = [s for s in d.status.msgs if s.policies and s.policies[0].loaded][-1].policies[0]
    absent = "linear.y" if kind == "images" else "angular.z"
    assert list(status.absent_axes) == [absent], status
    assert f"{absent} stays 0" in node.output(), node.output()
    s = Stepper(d, node)
    ref = reference(kind)
    for run in ref["runs"]:
        d.instruct(run["instruction"])
        for i, (path, want) in enumerate(zip(frames(kind), run["actions"])):
            data = path.read_bytes()
            if transport == "jpeg":
                msg = CompressedImage(format="jpeg", data=data)
            else:
                msg = raw_msg(transport, np.asarray(Image.open(path).convert("RGB")))
            msg.header.frame_id = "camera"
            stats = s.step(msg, None if want is not None else i + 1)
            if want is None:
                # The window fills: no command from the policy, and status says how far. (Waited for: right
                # after an instruction change the previous task's command may still be among the last three.)
                assert wait_for(lambda: all(c.linear.x == 0 and c.linear.y == 0 and c.angular.z == 0
                                            for c in d.cmds.msgs[-3:]), 1.0), d.cmds.msgs[-3:]
                continue
            got = np.array([stats.action.linear.x, stats.action.linear.y, stats.action.angular.z])
            assert stats.outcome == stats.OUTCOME_OK and stats.command_seq > 0, node.output()[-3000:]
            assert np.abs(got - np.asarray(want)).max() <= TOLERANCE, (kind, transport, run["instruction"], i, got, want)
            axis = {"linear.y": 1, "angular.z": 2}[absent]
            assert got[axis] == 0.0 and np.signbit(got[axis]) == False, got  # noqa: E712 (exactly +0.0)
    time.sleep(0.1)
    assert node.stop() == 0
