"""The Triton side of the remote policy, without ROS: scripts/triton_repository.py's
model repositories (the onnxruntime layout a GPU server gets, the python layout the
tests serve) and tests/triton.py's real tritonserver, delay proxy and faulty models.

Outputs are compared with ONNX Runtime run directly on the same inputs: the server's
model.py runs the same graph in the same ONNX Runtime, so they agree to within FP16
rounding (atol = rtol = 1e-3; in practice bit for bit)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from triton import ROOT, DelayProxy, Triton, TritonError, faulty_repository, write_repository

HYBRID = ROOT / "models" / "hf_tiny" / "hybrid" / "hybrid.json"  # v2: clip_text per instruction, policy per frame
STANDIN = ROOT / "models" / "hybrid.json"  # v1: standin_hybrid.onnx, f32 / int64
SCRIPT = ROOT / "scripts" / "triton_repository.py"
TOL = dict(atol=1e-3, rtol=1e-3)


def parse_config(path: Path) -> dict:
    """The parts of a config.pbtxt these tests check (the writer's own layout)."""
    text = path.read_text()
    tensors = {}
    for key in ("input", "output"):
        block = re.search(rf"^{key} \[\n(.*?)^\]", text, re.S | re.M).group(1)
        tensors[key] = {m[0]: (m[1], [int(d) for d in m[2].split(",") if d.strip()])
                        for m in re.findall(r'name: "([^"]+)"\s*data_type: (\w+)\s*dims: \[ ([^\]]*) \]', block)}
    return {
        "name": re.search(r'^name: "([^"]+)"', text, re.M).group(1),
        "backend": re.search(r'^backend: "([^"]+)"', text, re.M).group(1),
        "max_batch_size": int(re.search(r"^max_batch_size: (\d+)", text, re.M).group(1)),
        "queue_delay_us": (int(m.group(1)) if (m := re.search(r"max_queue_delay_microseconds: (\d+)", text)) else None),
        "kind": re.search(r"kind: (KIND_\w+)", text).group(1),
        "tensorrt_fp16": 'name : "tensorrt"' in text and 'key: "precision_mode" value: "FP16"' in text,
        "site_packages": (m.group(1) if (m := re.search(r'key: "site_packages" value \{ string_value: "([^"]*)"', text))
                          else None),
        **tensors,
    }


def dynamic_graph(path: Path) -> Path:
    """A graph with a free batch dim on everything: double = 2 x, positive = x > 0, next = n + 1."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 1])
    outs = [helper.make_tensor_value_info("double", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch", 4]),
            helper.make_tensor_value_info("next", TensorProto.INT64, ["batch", 1])]
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["double"]), helper.make_node("Greater", ["x", "zero"], ["positive"]),
         helper.make_node("Add", ["n", "one"], ["next"])], "dyn", [x, n], outs,
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("one", TensorProto.INT64, [], [1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def dyn_manifest(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dyn")
    dynamic_graph(d / "dyn.onnx")
    m = {"version": 2, "name": "dyn", "stages": [{"name": "policy", "onnx": "dyn.onnx"},
                                                 {"name": "text", "onnx": "dyn.onnx", "run": "per_instruction"}]}
    (d / "dyn.json").write_text(json.dumps(m))
    return d / "dyn.json"


def hybrid_feeds(seed: int = 0, text: int = 70) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "pixel_values": rng.standard_normal((1, 3, 224, 224), np.float32),
        "input_ids": rng.integers(4, 60, (1, text)).astype(np.int32),
        "attention_mask": np.ones((1, text), np.int32),
        "position_ids": (np.arange(text) + 2)[None].astype(np.int32),
        "image_embeds_position_mask": ((np.arange(text) >= 2) & (np.arange(text) < 66))[None].astype(np.int32),
        "clip_pixel_values": rng.standard_normal((1, 3, 224, 224), np.float32),
        "clip_text_embeds": rng.standard_normal((1, 16), np.float32),
        "h_in": rng.standard_normal((1, 1, 32)).astype(np.float16),
        "c_in": rng.standard_normal((1, 1, 32)).astype(np.float16),
    }


def standin_feeds() -> dict[str, np.ndarray]:
    return {"pixel_values": np.full((1, 3, 224, 224), 0.5, np.float32), "input_ids": np.full((1, 96), 5, np.int64),
            "attention_mask": np.ones((1, 96), np.int64), "image_embeds_position_mask": np.zeros((1, 96), np.int64),
            "h_in": np.zeros((1, 1, 16), np.float32), "c_in": np.zeros((1, 1, 16), np.float32)}


def onnxruntime_outputs(graph: Path, feeds: dict) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


# --- the repositories ------------------------------------------------------------------------------


def test_onnxruntime_layout_of_the_hybrid(tmp_path):
    """The production layout: only the per-frame stage, its external data under its own
    name, the graph's types and full dims (a fixed batch dim of 1: the ONNX Runtime
    backend would refuse max_batch_size > 0), TensorRT FP16 on the GPU."""
    written = write_repository(HYBRID, tmp_path / "repo", verbose=False)
    assert [p.name for p in written] == ["hybrid_policy"]  # clip_text stays on the robot
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["hybrid_policy"]
    v = tmp_path / "repo" / "hybrid_policy" / "1"
    assert sorted(p.name for p in v.iterdir()) == ["model.onnx", "policy.onnx.data"]
    assert (v / "policy.onnx.data").read_bytes() == (HYBRID.parent / "policy.onnx.data").read_bytes()
    ort.InferenceSession(str(v / "model.onnx"), providers=["CPUExecutionProvider"])  # finds its weights
    c = parse_config(tmp_path / "repo" / "hybrid_policy" / "config.pbtxt")
    assert (c["name"], c["backend"], c["max_batch_size"]) == ("hybrid_policy", "onnxruntime", 0)
    assert c["queue_delay_us"] is None  # no dynamic_batching
    assert c["kind"] == "KIND_GPU" and c["tensorrt_fp16"] and c["site_packages"] is None
    assert c["input"] == {
        "pixel_values": ("TYPE_FP32", [1, 3, 224, 224]), "input_ids": ("TYPE_INT32", [1, -1]),
        "attention_mask": ("TYPE_INT32", [1, -1]), "position_ids": ("TYPE_INT32", [1, -1]),
        "image_embeds_position_mask": ("TYPE_INT32", [1, -1]), "clip_pixel_values": ("TYPE_FP32", [1, 3, 224, 224]),
        "clip_text_embeds": ("TYPE_FP32", [1, 16]), "h_in": ("TYPE_FP16", [1, 1, 32]), "c_in": ("TYPE_FP16", [1, 1, 32])}
    assert c["output"] == {"actions": ("TYPE_FP16", [1, 1, 4, 3]), "h_out": ("TYPE_FP16", [1, 1, 32]),
                           "c_out": ("TYPE_FP16", [1, 1, 32])}
    assert list(c["input"]) == [i.name for i in onnx.load(str(v / "model.onnx"), load_external_data=False).graph.input]


def test_the_real_server_parses_the_onnxruntime_layout(tmp_path):
    """This tritonserver has no ONNX Runtime backend: it reads the production config and
    stops there (a syntax error in config.pbtxt would stop it earlier, differently)."""
    write_repository(HYBRID, tmp_path / "repo", verbose=False)
    t = Triton(tmp_path / "repo", log_path=tmp_path / "triton.log")
    with pytest.raises(RuntimeError, match="exited"):
        t.start(timeout=30)
    assert "unable to find backend library for backend 'onnxruntime'" in t.log()


def test_python_layout_and_v1_manifest(tmp_path):
    """The python layout batches a graph whose batch dim is 1 (model.py runs the requests
    one by one); a version-1 manifest is one stage, served under the policy's name."""
    write_repository(HYBRID, tmp_path / "py", backend="python", max_batch_size=4, queue_delay_us=250,
                     site_packages="/a:/b", verbose=False)
    c = parse_config(tmp_path / "py" / "hybrid_policy" / "config.pbtxt")
    assert (c["backend"], c["max_batch_size"], c["queue_delay_us"], c["kind"]) == ("python", 4, 250, "KIND_CPU")
    assert c["site_packages"] == "/a:/b" and not c["tensorrt_fp16"]
    assert c["input"]["pixel_values"] == ("TYPE_FP32", [3, 224, 224]) and c["input"]["input_ids"] == ("TYPE_INT32", [-1])
    assert c["output"]["actions"] == ("TYPE_FP16", [1, 4, 3])
    assert (tmp_path / "py" / "hybrid_policy" / "1" / "model.py").is_file()

    write_repository(STANDIN, tmp_path / "v1", verbose=False)
    c = parse_config(tmp_path / "v1" / "hybrid" / "config.pbtxt")
    assert c["max_batch_size"] == 0
    assert c["input"]["input_ids"] == ("TYPE_INT64", [1, 96]) and c["input"]["h_in"] == ("TYPE_FP32", [1, 1, 16])
    assert c["output"] == {"action": ("TYPE_FP32", [1, 3]), "h_out": ("TYPE_FP32", [1, 1, 16]),
                           "c_out": ("TYPE_FP32", [1, 1, 16])}
    assert sorted(p.name for p in (tmp_path / "v1" / "hybrid" / "1").iterdir()) == ["model.onnx"]


def test_free_batch_dim_served_as_and_the_command_line(tmp_path, dyn_manifest):
    write_repository(dyn_manifest, tmp_path / "a", verbose=False)
    c = parse_config(tmp_path / "a" / "dyn_policy" / "config.pbtxt")
    assert (c["max_batch_size"], c["queue_delay_us"]) == (8, 500)
    assert c["input"] == {"x": ("TYPE_FP32", [4]), "n": ("TYPE_INT64", [1])}
    assert c["output"] == {"double": ("TYPE_FP32", [4]), "positive": ("TYPE_BOOL", [4]), "next": ("TYPE_INT64", [1])}
    write_repository(dyn_manifest, tmp_path / "b", max_batch_size=0, verbose=False)
    c = parse_config(tmp_path / "b" / "dyn_policy" / "config.pbtxt")
    assert c["max_batch_size"] == 0 and c["queue_delay_us"] is None and c["input"]["x"] == ("TYPE_FP32", [-1, 4])

    m = json.loads(dyn_manifest.read_text())
    m["stages"][0]["served_as"] = "robot7_policy"
    (dyn_manifest.parent / "served.json").write_text(json.dumps(m))
    out = subprocess.run([sys.executable, str(SCRIPT), str(dyn_manifest.parent / "served.json"), "--out",
                          str(tmp_path / "c"), "--backend", "python"], capture_output=True, text=True, check=True).stdout
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["robot7_policy"]
    lines = out.strip().splitlines()
    assert len(lines) == 2 and "robot7_policy" in lines[0] and lines[1].startswith("start it: tritonserver")
    assert subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True).returncode == 0


# --- the real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, dyn_manifest):
    """hybrid_policy (the hf_tiny hybrid's per-frame stage) and dyn_policy (a free batch
    dim, 300 ms of queueing so that concurrent requests batch), python backend, explicit mode."""
    repo = tmp_path_factory.mktemp("triton_repo")
    write_repository(HYBRID, repo, backend="python", verbose=False)
    write_repository(dyn_manifest, repo, backend="python", queue_delay_us=300_000, verbose=False)
    t = Triton(repo, explicit=True, models=["hybrid_policy", "dyn_policy"], log_path=repo / "triton.log")
    t.start()
    yield t
    t.kill()  # (stop() is graceful and takes seconds; restart() uses it)


def test_metadata_and_inference_match_onnxruntime(server):
    md = server.metadata("hybrid_policy")
    assert md["platform"] == "python" and md["versions"] == ["1"]
    shapes = {t["name"]: (t["datatype"], t["shape"]) for t in md["inputs"] + md["outputs"]}
    assert shapes["pixel_values"] == ("FP32", [-1, 3, 224, 224]) and shapes["input_ids"] == ("INT32", [-1, -1])
    assert shapes["h_in"] == ("FP16", [-1, 1, 32]) and shapes["actions"] == ("FP16", [-1, 1, 4, 3])
    assert server.config("hybrid_policy")["max_batch_size"] == 8
    for seed in (0, 1):
        feeds = hybrid_feeds(seed)
        got = server.infer("hybrid_policy", feeds)
        want = onnxruntime_outputs(HYBRID.parent / "policy.onnx", feeds)
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            np.testing.assert_allclose(got[k].astype(np.float32), want[k].astype(np.float32), **TOL, err_msg=k)


def test_a_failing_run_is_an_error_answer_and_the_model_lives_on(server):
    bad = hybrid_feeds(text=70)
    bad["attention_mask"] = np.ones((1, 71), np.int32)  # Triton passes it (dims -1), ONNX Runtime fails
    with pytest.raises(TritonError) as e:
        server.infer("hybrid_policy", bad)
    assert e.value.status == 500 and "ONNXRuntimeError" in e.value.message
    assert server.ready("hybrid_policy")
    np.testing.assert_allclose(server.infer("hybrid_policy", hybrid_feeds(2))["actions"].astype(np.float32),
                               onnxruntime_outputs(HYBRID.parent / "policy.onnx", hybrid_feeds(2))["actions"]
                               .astype(np.float32), **TOL)


def test_concurrent_requests_are_batched_and_split_back(server):
    results = {}

    def one(k):
        results[k] = server.infer("dyn_policy", {"x": np.full((1, 4), k - 1.5, np.float32),
                                                 "n": np.array([[10 * k]], np.int64)})

    before = server.stats("dyn_policy")
    threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for k in range(4):
        np.testing.assert_array_equal(results[k]["double"], np.full((1, 4), 2 * (k - 1.5), np.float32))
        np.testing.assert_array_equal(results[k]["positive"], np.full((1, 4), k - 1.5 > 0))
        np.testing.assert_array_equal(results[k]["next"], [[10 * k + 1]])
    after = server.stats("dyn_policy")
    assert after["inference_count"] - before["inference_count"] == 4
    assert after["execution_count"] - before["execution_count"] < 4  # at least two in one execute
    assert any(int(b["batch_size"]) > 1 for b in after["batch_stats"])


def test_pause_makes_a_request_time_out_resume_answers(server):
    feeds = hybrid_feeds()
    server.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            server.infer("hybrid_policy", feeds, timeout=1.0)
        assert time.monotonic() - t0 >= 0.9
    finally:
        server.resume()
    assert server.infer("hybrid_policy", feeds, timeout=10)["actions"].shape == (1, 1, 4, 3)


def test_unload_makes_the_model_not_ready_load_brings_it_back(server):
    server.unload("dyn_policy")
    assert not server.ready("dyn_policy") and server.ready("hybrid_policy")
    with pytest.raises(TritonError):
        server.infer("dyn_policy", {"x": np.zeros((1, 4), np.float32), "n": np.zeros((1, 1), np.int64)})
    server.load("dyn_policy")
    assert server.ready("dyn_policy")
    got = server.infer("dyn_policy", {"x": np.ones((1, 4), np.float32), "n": np.zeros((1, 1), np.int64)})
    assert got["double"][0, 0] == 2


def test_delay_proxy_adds_its_delay(server):
    feeds = {"x": np.ones((1, 4), np.float32), "n": np.zeros((1, 1), np.int64)}
    server.config("dyn_policy")  # warm
    with DelayProxy(server.http_port, delay_s=0.25) as proxy:
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        t0 = time.monotonic()
        direct = server.infer("hybrid_policy", hybrid_feeds())
        t_direct = time.monotonic() - t0
        t0 = time.monotonic()
        proxied = server.infer("hybrid_policy", hybrid_feeds(), url=proxy.url)
        t_proxied = time.monotonic() - t0
        for k in direct:  # the bytes arrive intact and in order (2.4 MB of requests)
            np.testing.assert_array_equal(direct[k], proxied[k])
        assert t_proxied >= 2 * 0.25 and t_proxied >= t_direct + 0.25  # one delay each way
        proxy.delay_s = 0.0  # live
        t0 = time.monotonic()
        server.infer("dyn_policy", feeds, url=proxy.url)
        assert time.monotonic() - t0 < 0.25 + 0.3  # the model's own 300 ms of queueing at most
        assert proxy.connections >= 2


def grpc_unary(url: str, method: str, message: bytes) -> tuple[bytes, str]:
    """One unary gRPC call with curl over HTTP/2 (no gRPC library here): (the answer's
    message bytes, its grpc-status)."""
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "-", "--max-time", "10",
                        "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@-",
                        f"{url}/inference.GRPCInferenceService/{method}"],
                       input=b"\x00" + len(message).to_bytes(4, "big") + message, capture_output=True, check=True)
    head, _, rest = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), r.stdout
    n = int.from_bytes(rest[1:5], "big")
    status = re.search(rb"grpc-status: (\d+)", rest[5 + n:] or head)
    return rest[5:5 + n], status.group(1).decode() if status else "?"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (HTTP/2) for a raw gRPC call")
def test_grpc_port_answers_directly_and_through_the_proxy(server):
    """The node's transport: KServe v2 gRPC on grpc_url (ModelReady for hybrid_policy:
    field 1 = the name; the answer's field 1 = ready), HTTP/2 through DelayProxy alike."""
    ready = b"\x0a" + bytes([len("hybrid_policy")]) + b"hybrid_policy"
    assert grpc_unary(server.grpc_url, "ServerLive", b"") == (b"\x08\x01", "0")
    assert grpc_unary(server.grpc_url, "ModelReady", ready) == (b"\x08\x01", "0")
    with DelayProxy(server.grpc_port, delay_s=0.2) as proxy:
        t0 = time.monotonic()
        assert grpc_unary(proxy.url, "ModelReady", ready) == (b"\x08\x01", "0")
        assert time.monotonic() - t0 >= 0.4


# --- faults ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """The v1 standin (f32 / int64), served by a faulty model.py; yields (server, fault file)."""
    d = tmp_path_factory.mktemp("triton_faulty")
    write_repository(STANDIN, d / "repo", backend="python", verbose=False)
    fault = faulty_repository(d / "repo", "hybrid", d / "bad", "")
    t = Triton(d / "bad", log_path=d / "triton.log")
    t.start()
    yield t, fault
    t.kill()


def test_faulty_modes_switch_live(faulty):
    """What Triton does with each fault: it passes them all through (the python backend
    checks neither the outputs' shapes nor their types against the config)."""
    server, fault = faulty
    feeds = standin_feeds()
    want = onnxruntime_outputs(ROOT / "models" / "standin_hybrid.onnx", feeds)
    got = server.infer("hybrid", feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], **TOL)
    fault.write_text("nan")
    assert all(np.isnan(v).all() for v in server.infer("hybrid", feeds).values())
    fault.write_text("shape")
    got = server.infer("hybrid", feeds)
    assert got["action"].shape == (1, 1, 3) and got["h_out"].shape == (1, 1, 16)
    fault.write_text("dtype")
    got = server.infer("hybrid", feeds)
    assert got["action"].dtype == np.float64  # datatype "FP64" in the answer, though the config says FP32
    np.testing.assert_allclose(got["action"], want["action"], **TOL)
    fault.write_text("sleep:0.6")
    t0 = time.monotonic()
    server.infer("hybrid", feeds)
    assert time.monotonic() - t0 >= 0.6
    fault.write_text("bogus")
    with pytest.raises(TritonError, match="unknown fault"):
        server.infer("hybrid", feeds)
    fault.write_text("")
    np.testing.assert_allclose(server.infer("hybrid", feeds)["action"], want["action"], **TOL)


def test_kill_refuses_restart_keeps_the_ports(faulty):
    server, _ = faulty
    ports = (server.http_port, server.grpc_port, server.metrics_port)
    server.kill()
    assert not server.running()
    with pytest.raises(urllib.error.URLError):
        server.infer("hybrid", standin_feeds(), timeout=2)
    assert not list(Path("/dev/shm").glob(server._shm_prefix + "*"))  # the killed server's regions removed
    server.restart()
    assert (server.http_port, server.grpc_port, server.metrics_port) == ports
    assert server.grpc_url == f"http://127.0.0.1:{ports[1]}"
    assert server.ready("hybrid")
    assert server.infer("hybrid", standin_feeds())["action"].shape == (1, 3)
