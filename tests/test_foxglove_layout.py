"""The Foxglove layout in config/ shows what the running node really publishes.

Every message path in `config/foxglove_layout.json` (Foxglove's syntax:
`/topic{field=="value"}.field.sub`) must name a topic the node publishes or
subscribes to, with that topic's real type, and evaluate on messages received
from the node to a plottable value; a field renamed in `msg/` breaks this test
rather than leaving an empty plot on the operator's screen.
"""

from __future__ import annotations

import importlib
import json
import re

from conftest import ROOT, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from mobile_vla_msgs.msg import InferenceStats, Status

from test_watchdog import Rig, params

LAYOUT = ROOT / "config" / "foxglove_layout.json"
PATH = re.compile(r'^(?P<topic>/[A-Za-z0-9_/]+?)(?:\{(?P<key>\w+)=="(?P<value>[^"]*)"\})?(?:\.(?P<field>[\w.]+))?$')


def panels(tree) -> list[str]:
    if isinstance(tree, str):
        return [tree]
    return panels(tree["first"]) + panels(tree["second"])


def message_paths(layout: dict) -> list[str]:
    out = []
    for config in layout["configById"].values():
        out += [p["value"] for p in config.get("paths", [])]
        out += [config[k] for k in ("topicPath", "topicToRender") if k in config]
        if "imageMode" in config:
            out.append(config["imageMode"]["imageTopic"])
    return out


def msg_class(type_name: str):
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def resolve(cls, field: str | None):
    """The type at `field` of `cls`, from the message's own field table."""
    for part in (field or "").split(".") if field else []:
        types = cls.get_fields_and_field_types()
        assert part in types, f"{cls.__name__} has no field '{part}' ({sorted(types)})"
        t = types[part]
        cls = msg_class(t.replace("/", "/msg/", 1)) if "/" in t else t
    return cls


def test_the_layout_is_well_formed():
    layout = json.loads(LAYOUT.read_text())
    assert sorted(panels(layout["layout"])) == sorted(layout["configById"]), "every panel placed, none dangling"
    kinds = {pid.split("!")[0] for pid in layout["configById"]}
    assert {"Plot", "StateTransitions", "DiagnosticSummary", "RawMessages"} <= kinds
    for p in message_paths(layout):
        assert PATH.match(p), p


def test_every_path_in_the_layout_reads_a_value_the_node_publishes(peer, run_node):
    layout = json.loads(LAYOUT.read_text())
    # A NaN hybrid: both policies run (the pure one drives), so per-policy paths have data.
    node = run_node(params("models/faulty_nan.json"))
    received = {
        "/mobile_vla/inference_stats": peer.subscribe(InferenceStats, "/mobile_vla/inference_stats"),
        "/mobile_vla/status": peer.subscribe(Status, "/mobile_vla/status"),
        "/cmd_vel": peer.subscribe(Twist, "/cmd_vel"),
        "/diagnostics": peer.subscribe(DiagnosticArray, "/diagnostics"),
    }
    rig = Rig(peer, node)
    try:
        assert wait_for(lambda: len(received["/mobile_vla/inference_stats"]) >= 5
                        and len(received["/mobile_vla/status"]) >= 2, 20), node.output()
        pubs, subs = peer.topics_of("mobile_vla")
        topics = {**subs, **pubs}
        for p in message_paths(layout):
            m = PATH.match(p)
            topic, field = m["topic"], m["field"]
            assert topic in topics, f"{p}: the node has no topic {topic}"
            cls = msg_class(topics[topic][0])
            leaf = resolve(cls, field)
            if m["key"]:
                resolve(cls, m["key"])
            if topic not in received:
                continue  # the camera: an input, its type checked above
            if field:
                assert leaf in ("double", "float", "boolean", "string", "uint32", "uint64", "uint8"), (p, leaf)
            msgs = [x for x in received[topic].msgs if not m["key"] or getattr(x, m["key"]) == m["value"]]
            assert msgs, f"{p}: no message matched"
            v = msgs[-1]
            for part in (field or "").split(".") if field else []:
                v = getattr(v, part)
            assert v is not None, p
    finally:
        rig.close()
    assert node.stop() == 0
