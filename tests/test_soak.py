"""The fault-injection soak, shortened for CI: two minutes of every fault episode, on two nodes.

`scripts/soak.py` launches a raw-camera node and a managed compressed-camera
node (JPEG and PNG phases), both on the fault-injectable hybrid stand-in, and
runs malformed raw and compressed frames, NaN bursts, slow and hanging runs, a
camera and a joystick publisher vanishing, instruction churn, e-stop toggles,
refused and valid parameter sets and lifecycle transitions at 30 Hz. Not one
command may be attributable to a fault, every good frame after a fault must be
answered within the stated bound, every parameter and lifecycle check must
hold, the hybrid must come back after its cool-down, and the nodes must not
crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_two_minutes_of_faults_move_the_robot_only_when_it_should(tmp_path, domain_id):
    out = tmp_path / "soak.json"
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    r = subprocess.run([sys.executable, str(ROOT / "scripts/soak.py"), "--minutes", "2", "--healthy-s", "3",
                        "--json", str(out)], capture_output=True, text=True, env=env, timeout=420)
    assert out.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["attributable_commands"] == 0, res["faults"]
    assert res["crashes"] == 0 and res["exit_code"] == 0, r.stdout[-3000:]
    kinds = res["per_kind"]
    # Every kind ran (the soak never ends before its first full cycle), on the nodes it concerns.
    assert all(k["episodes"] >= 1 for k in kinds.values()), kinds
    assert kinds["jpeg_soi_noise_eoi"]["nodes"] == ["compressed"] and kinds["corrupt"]["nodes"] == ["raw"]
    assert res["frames"]["jpeg"] > 0 and res["frames"]["png"] > 0 and res["frames"]["malformed compressed"] > 0
    assert all(k["never_recovered"] == 0 for k in kinds.values()), kinds
    # Good input after any fault gives what a fresh node gives: every good frame answered in time.
    assert res["good_frames_judged"] > 1000, res["good_frames_judged"]
    assert res["good_after_fault_pct"] == 100.0, res["unanswered"]
    for name in ("raw", "compressed"):
        assert res["nodes"][name]["good_frames_judged"] > 0, name
    # After the frame faults and the lifecycle episodes, the frames after them were judged too.
    assert all(kinds[k]["good_frames_judged"] > 0 for k in ("jpeg_soi_noise_eoi", "png_16bit", "corrupt",
                                                            "lifecycle_reload", "params")), kinds
    # Refused parameter sets change nothing, the valid one takes effect, transitions succeed,
    # and the hybrid is back on time after each of its failures.
    assert res["problem_count"] == 0, res["problems"]
    assert res["hybrid_failures"] >= 1 and res["hybrid_returns_judged"] >= 1, res
    # The e-stop zeroes the output within DDS's time, not an output tick later.
    assert res["estop_reaction_max_s"] < 0.1, res["estop_reaction_max_s"]
    assert res["passed"] and r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
