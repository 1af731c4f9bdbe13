"""The embedded local default after provision_spot.yml and the short failover drill.

* the short drill passed, with at least 2 notices and 2 hard kills;
* the nodes are labelled like cloud instances and their workers are online in the bulk pool;
* a node taken away with a notice is drained, removed, and the next run of the capacity
  replaces it with a new node (a new name, like a new instance), back to the desired count.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
API = "http://127.0.0.1:4200/api"
DESIRED = 2


def playbook(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_INVENTORY", None)
    return subprocess.run(
        ["ansible-playbook", "-i", "inventories/local", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip


def nodes() -> dict[str, dict[str, str]]:
    out = subprocess.run(
        ["docker", "ps", "--filter", "label=agency-os.role=spot-node", "--format", "{{json .}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        info = json.loads(line)
        found[info["Names"]] = dict(kv.split("=", 1) for kv in info["Labels"].split(",") if "=" in kv)
    return found


def online_workers() -> set[str]:
    workers = httpx.post(f"{API}/work_pools/bulk-processing/workers/filter", json={}, timeout=10).json()
    return {w["name"] for w in workers if w["status"] == "ONLINE"}


def test_the_short_drill_lost_nothing_under_notices_hard_kills_freezes_and_restarts():
    result = json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "drill-result.json").read_text())
    print(f"\nshort drill: {json.dumps(result)}")
    assert result["passed"], result
    assert result["preemptions_notice"] >= 2 and result["preemptions_hard"] >= 2
    assert result["freezes"] >= 1 and result["postgres_restarts"] >= 1 and result["redis_restarts"] >= 1
    assert result["dead_letters"] == 0 and result["faults_missing"] == 0
    assert result["records_db"] == result["records_valid"] and result["duplicates"] == 0
    assert result["rejects"] == result["rejects_expected"] and result["jobs_lost"] == 0
    assert result["runs_not_completed"] == 0


def test_a_preempted_node_is_replaced_by_a_new_one():
    # Back to the desired capacity first (the drill ran with more nodes): extras are scaled in.
    out = playbook("playbooks/provision_spot.yml", "--tags", "capacity,nodes")
    assert out.returncode == 0, out.stdout[-3000:]
    before = nodes()
    assert len(before) == DESIRED
    for labels in before.values():
        assert labels["agency-os.tier"] == "bulk" and labels["agency-os.project"] == "agency-os"
        assert labels["agency-os.role"] == "spot-node" and labels["agency-os.slot"] in {"1", "2"}
    deadline = time.monotonic() + 60
    while not set(before) <= online_workers():
        assert time.monotonic() < deadline, f"workers {sorted(before)} not all online"
        time.sleep(2)

    victim = sorted(before)[0]
    out = playbook(
        "playbooks/preempt_local_node.yml", "-e", f"node={victim}", "-e", "mode=notice", "-e", "notice_seconds=5"
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert victim not in nodes()

    out = playbook("playbooks/provision_spot.yml", "--tags", "capacity,nodes")
    assert out.returncode == 0, out.stdout[-3000:]
    after = nodes()
    assert len(after) == DESIRED and victim not in after
    replacement = (set(after) - set(before)).pop()
    assert after[replacement]["agency-os.slot"] == before[victim]["agency-os.slot"]
    deadline = time.monotonic() + 60
    while replacement not in online_workers():
        assert time.monotonic() < deadline, f"replacement {replacement} not online"
        time.sleep(2)
