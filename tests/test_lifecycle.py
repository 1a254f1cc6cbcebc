"""The managed node (`managed: true`) driven through lifecycle_msgs, as Nav2's
lifecycle_manager and `ros2 lifecycle set` drive it.

The rclpy peer calls the node's `~/change_state`, `~/get_state` and
`~/get_available_transitions` services and watches `~/transition_event`,
`/cmd_vel` and `~/status`. Whatever the camera and the instruction say, the
node commands nothing unless it is active; deactivating sends one zero; a
configure whose hybrid policy cannot load fails and leaves the node
unconfigured; a run in flight when the node deactivates never drives.
"""

from __future__ import annotations

import time

from conftest import LATCHED, wait_for
from lifecycle_msgs.msg import State, Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from mobile_vla_msgs.msg import Status

from test_watchdog import HYBRID_Y, Rig, is_y, params, zero

NODE = "/mobile_vla"


def call(peer, srv_type, name: str, request, timeout: float = 30.0):
    client = peer.node.create_client(srv_type, f"{NODE}/{name}")
    assert client.wait_for_service(timeout_sec=15), name
    future = client.call_async(request)
    assert wait_for(future.done, timeout), name
    return future.result()


def change(peer, transition_id: int, timeout: float = 30.0) -> bool:
    req = ChangeState.Request(transition=Transition(id=transition_id))
    return call(peer, ChangeState, "change_state", req, timeout).success


def state(peer) -> str:
    return call(peer, GetState, "get_state", GetState.Request()).current_state.label


def available(peer) -> set[str]:
    r = call(peer, GetAvailableTransitions, "get_available_transitions", GetAvailableTransitions.Request())
    return {t.transition.label for t in r.available_transitions}


def managed(model: str = "models/hybrid.json", **extra) -> dict:
    return {**params(model), "managed": True, **extra}


def test_a_managed_node_commands_only_while_active(peer, run_node):
    node = run_node(managed())
    events = peer.subscribe(TransitionEvent, f"{NODE}/transition_event")
    status = peer.subscribe(Status, f"{NODE}/status", LATCHED)
    rig = Rig(peer, node)
    try:
        # Unconfigured: camera and instruction flow, nothing is loaded or commanded.
        assert state(peer) == "unconfigured" and available(peer) == {"configure", "shutdown"}
        time.sleep(1.0)
        assert not rig.cmds.msgs, node.output()
        assert not change(peer, Transition.TRANSITION_ACTIVATE), "activate is not offered while unconfigured"
        assert state(peer) == "unconfigured"

        # Configure loads the models; the answer comes when they are loaded.
        assert change(peer, Transition.TRANSITION_CONFIGURE), node.output()
        assert state(peer) == "inactive" and available(peer) == {"cleanup", "activate", "shutdown"}
        assert wait_for(lambda: status.msgs and status.msgs[-1].lifecycle_state == "inactive", 5)
        assert all(p.loaded for p in status.msgs[-1].policies), status.msgs[-1]
        time.sleep(1.0)
        assert not rig.cmds.msgs, "an inactive node commands nothing"

        # Active: the hybrid drives.
        assert change(peer, Transition.TRANSITION_ACTIVATE)
        assert state(peer) == "active"
        assert wait_for(lambda: any(is_y(HYBRID_Y)(c) for c in rig.cmds.msgs), 10), node.output()

        # Deactivated: a zero, then silence although frames keep coming.
        assert change(peer, Transition.TRANSITION_DEACTIVATE)
        assert wait_for(lambda: zero(rig.cmds.msgs[-1]), 2)
        n = len(rig.cmds)
        time.sleep(1.0)
        assert len(rig.cmds) == n, "nothing is published while inactive"

        # Again active, then cleaned up: the models are unloaded.
        assert change(peer, Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: len(rig.cmds) > n + 3 and is_y(HYBRID_Y)(rig.cmds.msgs[-1]), 10)
        assert change(peer, Transition.TRANSITION_DEACTIVATE)
        assert change(peer, Transition.TRANSITION_CLEANUP)
        assert state(peer) == "unconfigured"
        assert wait_for(lambda: status.msgs[-1].lifecycle_state == "unconfigured"
                        and not any(p.loaded for p in status.msgs[-1].policies), 5), status.msgs[-1]
        assert zero(rig.cmds.msgs[-1])

        # Configured again from scratch, then shut down: the node ends cleanly.
        assert change(peer, Transition.TRANSITION_CONFIGURE), node.output()
        assert change(peer, Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert node.wait_exit(15) == 0, node.output()
    finally:
        rig.close()

    labels = [(e.start_state.label, e.goal_state.label) for e in events.msgs]
    assert labels[:4] == [("unconfigured", "configuring"), ("configuring", "inactive"),
                          ("inactive", "activating"), ("activating", "active")], labels
    assert ("shuttingdown", "finalized") == labels[-1], labels
    assert all(e.timestamp > 0 for e in events.msgs)
    warns = [line for line in node.output().splitlines() if " WARN " in line and "STAND-IN" not in line]
    assert len(warns) == 1 and "transition 3 is not available in state unconfigured" in warns[0], warns


def test_a_configure_whose_hybrid_cannot_load_fails_and_stays_unconfigured(peer, run_node):
    node = run_node(managed("models/faulty_missing.json"))
    rig = Rig(peer, node)
    try:
        assert not change(peer, Transition.TRANSITION_CONFIGURE), node.output()
        assert state(peer) == "unconfigured"
        assert "configure failed" in node.output()
        assert not change(peer, Transition.TRANSITION_ACTIVATE)
        time.sleep(0.5)
        assert not rig.cmds.msgs, "a node that failed to configure commands nothing"
        assert change(peer, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert node.wait_exit(15) == 0, node.output()
    finally:
        rig.close()


def test_a_slow_run_in_flight_at_deactivation_never_drives(peer, run_node):
    # The slow hybrid takes 0.3-1 s a run; the deadlines are wide so it stays in charge.
    p = managed("models/faulty_slow.json", camera={"max_age_s": 5.0})
    p["watchdog"] = {"deadline_s": 5.0, "hard_timeout_s": 10.0}
    node = run_node(p)
    rig = Rig(peer, node, hz=15)
    try:
        assert change(peer, Transition.TRANSITION_CONFIGURE), node.output()
        assert change(peer, Transition.TRANSITION_ACTIVATE)
        for _ in range(3):
            assert wait_for(lambda: rig.cmds.msgs and is_y(HYBRID_Y)(rig.cmds.msgs[-1]), 15), node.output()
            assert change(peer, Transition.TRANSITION_DEACTIVATE)
            after = time.monotonic()
            # The run in flight ends within a second; whatever it returns must not move the robot.
            time.sleep(1.5)
            late = [c for c in rig.cmds.after(after) if not zero(c)]
            assert not late, late
            assert change(peer, Transition.TRANSITION_ACTIVATE)
    finally:
        rig.close()
    assert node.stop() == 0


def test_the_launch_file_starts_a_managed_node_with_managed_true(peer, run_node):
    from test_node_basics import launch_command

    cmd, env = launch_command("managed:=true")
    assert ["-p", "managed:=true"] == cmd[cmd.index("managed:=true") - 1:][:2]
    node = run_node(cmd=cmd, env=env)
    assert state(peer) == "unconfigured", node.output()
    assert change(peer, Transition.TRANSITION_CONFIGURE) and change(peer, Transition.TRANSITION_ACTIVATE)
    assert state(peer) == "active"
    assert node.stop() == 0
    assert "WARN lifecycle" not in node.output()
