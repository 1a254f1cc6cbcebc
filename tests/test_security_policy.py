"""config/sros2_policy.xml grants exactly what the running node uses.

SROS2 cannot be exercised here (the wheels' Fast DDS has no security plugins),
so the policy is checked against the node itself: every topic it publishes or
subscribes to and every service it offers (managed, with sim time: all of
them) must be granted, and nothing else may be.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import ROOT, wait_for

POLICY = ROOT / "config" / "sros2_policy.xml"


def expand(name: str, node: str = "mobile_vla", ns: str = "/") -> str:
    """SROS2's names: `~x` is the node's private x, relative names live in the profile's namespace."""
    if name.startswith("~"):
        return f"{ns.rstrip('/')}/{node}/{name[1:].lstrip('/')}"
    return name if name.startswith("/") else f"{ns.rstrip('/')}/{name}"


def granted(kind: str, verb: str) -> set[str]:
    root = ET.parse(POLICY).getroot()
    profile = root.find("./enclaves/enclave[@path='/robot/mobile_vla']/profiles/profile[@node='mobile_vla']")
    assert profile is not None
    return {expand(e.text.strip()) for group in profile.findall(f"{kind}s[@{verb}='ALLOW']")
            for e in group.findall(kind)}


def test_the_policy_grants_the_node_exactly_its_interfaces(peer, run_node):
    node = run_node({"managed": True, "use_sim_time": True})
    assert peer.wait_for_node("mobile_vla"), node.output()
    n = peer.node

    def graph():
        pubs = {t for t, _ in n.get_publisher_names_and_types_by_node("mobile_vla", "/")}
        subs = {t for t, _ in n.get_subscriber_names_and_types_by_node("mobile_vla", "/")}
        srvs = {s for s, _ in n.get_service_names_and_types_by_node("mobile_vla", "/")}
        return pubs, subs, srvs
    assert wait_for(lambda: "/mobile_vla/change_state" in graph()[2] and "/clock" in graph()[1], 15), graph()
    pubs, subs, srvs = graph()
    # The camera's compressed topic is only subscribed with camera.transport: compressed.
    assert granted("topic", "subscribe") == subs | {"/camera/image_raw/compressed"}, subs
    assert granted("topic", "publish") == pubs, pubs
    assert granted("service", "reply") == srvs, srvs
    assert node.stop() == 0
