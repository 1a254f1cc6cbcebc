"""`mobile_vla_eval`: policies scored on recorded episodes, against numbers
computed here, independently of the tool.

The episodes are written by independent writers: the model team's HDF5
layout by h5py, rosbag2 bags (MCAP and sqlite3 storage) by the `rosbags`
package. The expected commands are PyTorch's (models/team_tiny/*/
reference.json: the team fixtures' outputs for the same frames, fed fresh
windows for each instruction); the expected scores are numpy's, from those
commands and the actions written into the episodes. Nothing here reads the
tool's own numbers as the reference.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SHARE, find_pkg_prefix
from PIL import Image
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

EVAL = find_pkg_prefix("mobile_vla") / "lib/mobile_vla/mobile_vla_eval"
TEAM = SHARE / "models" / "team_tiny"
AXES = ["linear.x", "linear.y", "angular.z"]
TOLERANCE = 1e-4
DEADBAND = 0.05


def reference(kind: str) -> dict:
    return json.loads((TEAM / kind / "reference.json").read_text())


def manifest(kind: str) -> Path:
    return TEAM / kind / f"{kind}.json"


def frame_paths(kind: str) -> list[Path]:
    return [TEAM / kind / f for f in reference(kind)["frames"]]


def commanded(kind: str) -> list[int]:
    axes = json.loads(manifest(kind).read_text())["action"]["axes"]
    return sorted(AXES.index(a.replace("_", ".")) for a in axes)


def actions_for(n: int, seed: int) -> np.ndarray:
    """Recorded actions in the team's range, some of them stops."""
    a = np.random.default_rng(seed).uniform(-1.15, 1.15, (n, 3)).astype(np.float32)
    a[::4] = 0.0
    return a


def write_team_episode(path: Path, kind: str, instruction: str, actions: np.ndarray, *, vlen=False, frames=None):
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in frame_paths(kind)])[:frames]
    with h5py.File(path, "w") as f:
        f["images"] = rgb
        f["actions"] = actions[: len(rgb)]
        text = np.array([instruction], dtype=h5py.string_dtype()) if vlen else np.array([instruction.encode()])
        f["language_instruction"] = text
        f["action_event_types"] = np.array([b"episode_start"] + [b"start_action"] * (len(rgb) - 2) + [b"stop_action"])
    return path


def evaluate(*args, check=True) -> tuple[dict | None, subprocess.CompletedProcess]:
    out_json = Path(os.environ.get("TMPDIR", "/tmp")) / f"eval_{os.getpid()}.json"
    out_json.unlink(missing_ok=True)
    p = subprocess.run([str(EVAL), *map(str, args), "--json", out_json], capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    got = json.loads(out_json.read_text()) if out_json.exists() else None
    return got, p


def expected_scores(kind: str, runs: list[tuple[str, np.ndarray]]) -> dict:
    """numpy's scores of PyTorch's commands (reference.json) against the recorded actions of each run."""
    ref = {r["instruction"]: r["actions"] for r in reference(kind)["runs"]}
    axes = commanded(kind)
    errs, classes, signs, scored, refused = [], [], {k: [] for k in axes}, 0, 0

    def direction(v):
        big = [k for k in axes if abs(v[k]) > DEADBAND]
        if not big:
            return "stop"
        k = max(big, key=lambda k: abs(v[k]))
        return (k, v[k] < 0)

    for instruction, actions in runs:
        for cmd, act in zip(ref[instruction], actions):
            if cmd is None:
                refused += 1
                continue
            scored += 1
            errs.append([cmd[k] - float(act[k]) for k in axes])
            classes.append(direction(cmd) == direction([float(x) for x in act]))
            for k in axes:
                signs[k].append(np.sign(cmd[k]) * (abs(cmd[k]) > DEADBAND) == np.sign(act[k]) * (abs(act[k]) > DEADBAND))
    e = np.array(errs)
    return {
        "scored": scored,
        "refused": refused,
        "mae": float(np.abs(e).mean()),
        "rmse": float(np.sqrt((e ** 2).mean())),
        "axes": {AXES[k]: float(np.abs(e[:, i]).mean()) for i, k in enumerate(axes)},
        "signs": {AXES[k]: float(np.mean(v)) for k, v in signs.items()},
        "direction": float(np.mean(classes)),
    }


def check_policy(got: dict, want: dict):
    o = got["overall"]
    assert (o["scored"], o["frames"] - o["scored"]) == (want["scored"], want["refused"]), o
    assert abs(o["mae"] - want["mae"]) <= TOLERANCE, (o["mae"], want["mae"])
    assert abs(o["rmse"] - want["rmse"]) <= TOLERANCE, (o["rmse"], want["rmse"])
    assert abs(o["direction_agreement"] - want["direction"]) < 1e-9
    assert set(o["axes"]) == set(want["axes"])
    for axis, mae in want["axes"].items():
        assert abs(o["axes"][axis]["mae"] - mae) <= TOLERANCE
        assert abs(o["axes"][axis]["sign_agreement"] - want["signs"][axis]) < 1e-9


@pytest.mark.parametrize("kind", ["features", "images"])
def test_team_episodes_score_pytorchs_commands_against_the_recorded_actions(kind, tmp_path):
    runs = [(r["instruction"], actions_for(12, seed)) for seed, r in enumerate(reference(kind)["runs"])]
    # One fixed-length bytes instruction (np.bytes_), one variable-length UTF-8 (Korean): h5py writes both.
    for i, (instruction, actions) in enumerate(runs):
        write_team_episode(tmp_path / f"ep{i}.h5", kind, instruction, actions, vlen=i == 1)
    got, p = evaluate("--policy", manifest(kind), tmp_path / "*.h5", "--plot", tmp_path / "plots")
    [policy] = got["policies"]
    check_policy(policy, expected_scores(kind, runs))
    # Frame by frame: PyTorch's command (each episode starts fresh windows), the absent axis exactly 0.
    ref = {r["instruction"]: r["actions"] for r in reference(kind)["runs"]}
    absent = ({0, 1, 2} - set(commanded(kind))).pop()
    for ep, (instruction, actions) in zip(policy["episodes"], runs):
        assert [f["label"] for f in ep["frames"]][0] == "episode_start"
        for f, want, act in zip(ep["frames"], ref[instruction], actions):
            assert f["action"] == pytest.approx(act.tolist())
            if want is None:
                assert f["command"] is None and f["refused"] == "window_filling", f
            else:
                assert np.abs(np.array(f["command"]) - want).max() <= TOLERANCE, (f, want)
                assert f["command"][absent] == 0.0
    assert policy["commanded_axes"] == [AXES[k] for k in commanded(kind)]
    assert "ONNX Runtime" in policy["runtime"]
    assert got["passed"] and "result: pass" in p.stdout
    svgs = sorted(x.name for x in (tmp_path / "plots").iterdir())
    assert svgs == ["ep0.h5.svg", "ep1.h5.svg", "summary.svg"]
    for s in svgs:
        assert (tmp_path / "plots" / s).read_text().startswith("<svg")


def test_bad_episodes_are_named_skipped_and_the_good_ones_still_scored(tmp_path):
    kind = "features"
    instruction = reference(kind)["runs"][0]["instruction"]
    actions = actions_for(12, 7)
    good = write_team_episode(tmp_path / "a_good.h5", kind, instruction, actions)
    truncated = tmp_path / "b_truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with h5py.File(tmp_path / "c_no_actions.h5", "w") as f:
        f["images"] = np.zeros((9, 72, 128, 3), np.uint8)
        f["language_instruction"] = np.array([b"go"])
    with h5py.File(tmp_path / "d_float64.h5", "w") as f:
        f["images"] = np.zeros((9, 72, 128, 3), np.uint8)
        f["actions"] = np.zeros((9, 3), np.float64)
        f["language_instruction"] = np.array([b"go"])
    with h5py.File(tmp_path / "e_gray.h5", "w") as f:
        f["images"] = np.zeros((9, 72, 128), np.uint8)
        f["actions"] = np.zeros((9, 3), np.float32)
        f["language_instruction"] = np.array([b"go"])
    write_team_episode(tmp_path / "f_short.h5", kind, instruction, actions, frames=5)
    (tmp_path / "g_not_hdf5.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    write_team_episode(tmp_path / "h_good_again.h5", kind, instruction, actions)

    got, p = evaluate("--policy", manifest(kind), tmp_path)
    skipped = {Path(s["episode"]).name: s["reason"] for s in got["skipped"]}
    assert set(skipped) == {"b_truncated.h5", "c_no_actions.h5", "d_float64.h5", "e_gray.h5", "f_short.h5",
                            "g_not_hdf5.h5"}, skipped
    assert "actions: missing" in skipped["c_no_actions.h5"]
    assert "actions" in skipped["d_float64.h5"] and "float32" in skipped["d_float64.h5"]
    assert "images" in skipped["e_gray.h5"] and "(T, height, width, 3) uint8" in skipped["e_gray.h5"]
    assert "5 frames, shorter than the policy's window (8 frames)" in skipped["f_short.h5"]
    for name, reason in skipped.items():
        assert name in reason, reason
    # The good episode after all that scores exactly as the good one before it: nothing carried over.
    [policy] = got["policies"]
    first, again = policy["episodes"]
    assert (first["episode"], again["episode"]) == ("a_good.h5", "h_good_again.h5")
    # (Latencies are this machine's, measured: the rest must be equal.)
    assert first["summary"].pop("latency_ms") and again["summary"].pop("latency_ms")
    assert first["frames"] == again["frames"] and first["summary"] == again["summary"]
    check_policy({"overall": first["summary"]}, expected_scores(kind, [(instruction, actions)]))
    assert "skipped 6 episode run(s)" in p.stdout and p.returncode == 0

    # Nothing scorable at all: exit 1.
    _, p = evaluate("--policy", manifest(kind), tmp_path / "c_no_actions.h5", check=False)
    assert p.returncode == 1 and "scored no frame" in p.stdout


TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def cdr(msg) -> bytes:
    return TYPESTORE.serialize_cdr(msg, msg.__msgtype__)


def write_bag(path: Path, storage, kind: str, instruction: str, actions: np.ndarray, *, camera="/camera/image_raw/compressed",
              stamped=False, rate=10.0, action_topic="/cmd_vel", instruction_topic="/instruction",
              camera_type="sensor_msgs/msg/CompressedImage"):
    """A teleop drive as the robot records it: JPEG frames at `rate`, the instruction once, and after each
    frame the joystick's command (the one that drove until the next frame)."""
    T = TYPESTORE.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
    Vector3, Twist = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Twist"]
    t0 = 1_700_000_000 * 10**9
    with Writer(path, version=9, storage_plugin=storage) as w:
        cam = w.add_connection(camera, camera_type, typestore=TYPESTORE)
        cmd_type = "geometry_msgs/msg/TwistStamped" if stamped else "geometry_msgs/msg/Twist"
        cmd = w.add_connection(action_topic, cmd_type, typestore=TYPESTORE)
        if instruction_topic:
            text = w.add_connection(instruction_topic, "std_msgs/msg/String", typestore=TYPESTORE)
            w.write(text, t0 - 10**8, cdr(T["std_msgs/msg/String"](data=instruction)))
        for k, (jpg, a) in enumerate(zip(frame_paths(kind), actions)):
            t = t0 + int(k * 1e9 / rate)
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="camera")
            data = np.frombuffer(jpg.read_bytes(), np.uint8)
            if camera_type == "std_msgs/msg/String":
                w.write(cam, t + 3 * 10**6, cdr(T["std_msgs/msg/String"](data="not a frame")))
            else:
                w.write(cam, t + 3 * 10**6, cdr(T[camera_type](header=header, format="jpeg", data=data)))
            twist = Twist(linear=Vector3(x=float(a[0]), y=float(a[1]), z=0.0), angular=Vector3(x=0.0, y=0.0, z=float(a[2])))
            if stamped:
                twist = T["geometry_msgs/msg/TwistStamped"](header=header, twist=twist)
            w.write(cmd, t + 30 * 10**6, cdr(twist))
    return path


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_bags_score_as_the_team_files_do(storage, tmp_path):
    kind = "features"
    instruction = reference(kind)["runs"][1]["instruction"]
    actions = actions_for(12, 3)
    bag = write_bag(tmp_path / "drive", storage, kind, instruction, actions, stamped=storage == StoragePlugin.SQLITE3)
    got, _ = evaluate("--policy", manifest(kind), bag)
    [policy] = got["policies"]
    check_policy(policy, expected_scores(kind, [(instruction, actions)]))
    frames = policy["episodes"][0]["frames"]
    np.testing.assert_allclose([f["action"] for f in frames], actions, rtol=0, atol=1e-7)
    # The storage file itself is an episode too.
    storage_file = next(bag.glob("*.mcap" if storage == StoragePlugin.MCAP else "*.db3"))
    got_file, _ = evaluate("--policy", manifest(kind), storage_file)
    without_latency = lambda o: {k: v for k, v in o.items() if k != "latency_ms"}  # noqa: E731
    assert without_latency(got_file["policies"][0]["overall"]) == without_latency(policy["overall"])


def test_bad_bags_are_named_skipped_and_the_good_ones_still_scored(tmp_path):
    kind = "features"
    instruction = reference(kind)["runs"][0]["instruction"]
    actions = actions_for(12, 1)
    write_bag(tmp_path / "a_good", StoragePlugin.MCAP, kind, instruction, actions)
    write_bag(tmp_path / "b_front_camera", StoragePlugin.MCAP, kind, instruction, actions, camera="/front/image")
    truncated = write_bag(tmp_path / "c_truncated", StoragePlugin.MCAP, kind, instruction, actions)
    f = next(truncated.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 3])
    broken_db = write_bag(tmp_path / "d_broken_db", StoragePlugin.SQLITE3, kind, instruction, actions)
    f = next(broken_db.glob("*.db3"))
    f.write_bytes(f.read_bytes()[:4096] + os.urandom(4096))
    write_bag(tmp_path / "e_no_commands", StoragePlugin.MCAP, kind, instruction, actions, action_topic="/base/cmd_vel")
    write_bag(tmp_path / "f_no_instruction", StoragePlugin.SQLITE3, kind, instruction, actions, instruction_topic=None)
    write_bag(tmp_path / "g_camera_is_a_string", StoragePlugin.MCAP, kind, instruction, actions, camera_type="std_msgs/msg/String")
    write_bag(tmp_path / "h_good_again", StoragePlugin.SQLITE3, kind, instruction, actions)

    got, p = evaluate("--policy", manifest(kind), tmp_path)
    skipped = {s["episode"]: s["reason"] for s in got["skipped"]}
    assert set(skipped) == {"b_front_camera", "c_truncated", "d_broken_db", "e_no_commands", "f_no_instruction",
                            "g_camera_is_a_string"}, skipped
    assert "no camera topic /camera/image_raw" in skipped["b_front_camera"] and "/front/image" in skipped["b_front_camera"]
    assert "truncated" in skipped["c_truncated"] or "malformed" in skipped["c_truncated"], skipped["c_truncated"]
    assert "sqlite3" in skipped["d_broken_db"] or "malformed" in skipped["d_broken_db"], skipped["d_broken_db"]
    assert "no action topic /cmd_vel" in skipped["e_no_commands"] and "--action-topic" in skipped["e_no_commands"]
    assert "no instruction topic /instruction" in skipped["f_no_instruction"]
    assert "std_msgs/msg/String" in skipped["g_camera_is_a_string"], skipped["g_camera_is_a_string"]
    for name, reason in skipped.items():
        assert name in reason, reason
    [policy] = got["policies"]
    first, again = policy["episodes"]
    assert (first["episode"], again["episode"]) == ("a_good", "h_good_again")
    assert first["frames"] == again["frames"]
    check_policy({"overall": first["summary"]}, expected_scores(kind, [(instruction, actions)]))
    # Told where the camera is, the front-camera bag scores too.
    got, _ = evaluate("--policy", manifest(kind), tmp_path / "b_front_camera", "--camera", "/front/image")
    check_policy(got["policies"][0], expected_scores(kind, [(instruction, actions)]))


def test_a_recording_made_by_the_demo_replays_to_what_the_node_drove(domain_id, run_node, tmp_path):
    """scripts/demo.py --record: the node drove the bundled hybrid with open limits, so replaying
    that policy on the recording must give, frame by frame, the command that was on cmd_vel."""
    from test_policy import OPEN_LIMITS

    node = run_node({**OPEN_LIMITS})
    bag = tmp_path / "demo_drive"
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id)}
    demo = subprocess.run(
        ["python3", str(Path(__file__).parent.parent / "scripts" / "demo.py"), "--samples", str(SHARE / "models" / "samples"),
         "--duration", "4", "--instruction", "move left", "--record", str(bag)],
        capture_output=True, text=True, env=env, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "recorded" in demo.stdout, demo.stdout
    got, _ = evaluate("--policy", SHARE / "models" / "hybrid.json", bag)
    [policy] = got["policies"]
    o = policy["overall"]
    frames = policy["episodes"][0]["frames"]
    assert o["scored"] == o["frames"] >= 30, o
    moving = [f for f in frames if f["action"] != [0.0, 0.0, 0.0]]
    assert len(moving) >= len(frames) - 1, "the node drove on (nearly) every frame it got"
    assert o["mae"] <= 1e-6 and o["direction_agreement"] == 1.0, o
    assert node.stop() == 0


def test_the_robots_parameters_file_applies(tmp_path):
    """--params: the evaluation's node takes the robot's parameters (here a camera bound the team's 1280x720
    frames exceed, so every frame is refused before decoding, as on such a robot)."""
    kind = "features"
    instruction = reference(kind)["runs"][0]["instruction"]
    write_team_episode(tmp_path / "ep.h5", kind, instruction, actions_for(12, 5))
    params = tmp_path / "robot.yaml"
    params.write_text("mobile_vla:\n  ros__parameters:\n    camera:\n      max_width: 640\n      max_height: 480\n")
    got, p = evaluate("--policy", manifest(kind), tmp_path / "ep.h5", "--params", params, check=False)
    o = got["policies"][0]["overall"]
    assert p.returncode == 1 and o["scored"] == 0 and o["refused"] == {"bad_frame": 12}, o
    # A freshness bound longer than the gap between episodes: still, nothing of one episode carries into the next.
    long = tmp_path / "long.yaml"
    long.write_text("mobile_vla:\n  ros__parameters:\n    camera:\n      max_age_s: 60.0\n")
    (tmp_path / "ep2.h5").write_bytes((tmp_path / "ep.h5").read_bytes())
    got, _ = evaluate("--policy", manifest(kind), tmp_path / "ep.h5", tmp_path / "ep2.h5", "--params", long)
    first, second = got["policies"][0]["episodes"]
    assert first["frames"] == second["frames"] and first["summary"]["scored"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("mobile_vla:\n  ros__parameters:\n    camera:\n      max_age_s: -1.0\n")
    _, p = evaluate("--policy", manifest(kind), tmp_path / "ep.h5", "--params", bad, check=False)
    assert p.returncode == 2 and "camera.max_age_s" in p.stderr, p.stderr
