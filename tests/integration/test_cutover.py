"""cutover.yml and rollback.yml (role prefect_placement) against a real Prefect server and a real worker.

Refusals change nothing; the success path moves the deployment, carries scheduled runs over,
runs the canary on the bulk pool and records the placement; a failing canary rolls back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agency_os_spot.catalog import load_catalog
from agency_os_spot.deploy import bulk_base_job_template, default_process_template, deployment_body
from tests.support import ROOT, load_plugin
from tests.support.prefect_harness import Prefect, prefect_server, start_worker, stop_worker

FLOW = "abn_bulk_ingestion"
API_KEY = "pnu_sekret4cutover0000000000000000000"
SPEC = load_catalog().get(FLOW)


def playbook(name: str, api: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        ["ansible-playbook", f"{name}.yml", "-e", f"prefect_api_url={api}",  # as typed at the repository root
         "-e", f"prefect_placement_audit_file={tmp_path / 'audit.jsonl'}", "-e", "prefect_placement_canary_timeout_s=240", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def prefect() -> Iterator[Prefect]:
    with prefect_server() as api:
        client = Prefect(api)
        client.create_pool("default", default_process_template())
        client.create_pool(SPEC.work_pool, bulk_base_job_template())
        yield client


@pytest.fixture
def deployment(prefect) -> dict:
    """A new deployment of the flow where it runs before cutover (pool default, no schedule that could
    fire during the test), plus a run created by hand; nothing left from another test."""
    old = prefect.http.get(f"/deployments/name/{FLOW}/{FLOW}")
    if old.status_code == 200:
        prefect.http.delete(f"/deployments/{old.json()['id']}").raise_for_status()
    for name in (SPEC.placement_key, "placement_audit"):
        prefect.http.delete(f"/variables/name/{name}")
    body = deployment_body(SPEC, work_pool="default", work_queue="default")
    body.pop("schedules", None)
    dep_id = prefect.create_deployment(body, SPEC.name)
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    manual = (
        prefect.http.post(
            f"/deployments/{dep_id}/create_flow_run",
            json={"name": "by-hand", "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}},
        )
        .raise_for_status()
        .json()
    )
    return {"id": dep_id, "manual_run": manual["id"]}


def placement(prefect: Prefect) -> tuple[str, str]:
    dep = prefect.http.get(f"/deployments/name/{FLOW}/{FLOW}").raise_for_status().json()
    return dep["work_pool_name"], dep["work_queue_name"]


def test_refusals_say_why_and_change_nothing(prefect, deployment, tmp_path):
    out = playbook("cutover", prefect.api, tmp_path)
    assert out.returncode != 0 and "usage: ansible-playbook cutover.yml -e flow=<name>" in out.stdout
    out = playbook("cutover", prefect.api, tmp_path, "-e", "flow=abn_bulk_ingest")
    assert out.returncode != 0
    assert "'abn_bulk_ingest' is not in the flow catalog" in out.stdout and "abn_bulk_ingestion" in out.stdout
    out = playbook("cutover", prefect.api, tmp_path, "-e", "flow=voice_ai_callbacks")
    assert out.returncode != 0 and "'voice_ai_callbacks' is a realtime flow" in out.stdout
    out = playbook("cutover", prefect.api, tmp_path, "-e", "flow=gmb_batch_scraping")
    assert out.returncode != 0 and "no deployment gmb_batch_scraping/gmb_batch_scraping" in out.stdout
    out = playbook("cutover", prefect.api, tmp_path, "-e", f"flow={FLOW}")  # no worker online
    assert out.returncode != 0 and f"no worker of pool {SPEC.work_pool} is online" in out.stdout
    assert "Nothing was changed" in out.stdout
    out = playbook("cutover", "http://127.0.0.1:9/api", tmp_path, "-e", f"flow={FLOW}")
    assert out.returncode != 0 and "the Prefect API does not answer at http://127.0.0.1:9/api" in out.stdout
    assert placement(prefect) == ("default", "default")
    assert prefect.http.get(f"/variables/name/{SPEC.placement_key}").status_code == 404
    assert not (tmp_path / "audit.jsonl").exists()


def test_cutover_moves_the_flow_runs_the_canary_and_rollback_restores_it(prefect, deployment, tmp_path):
    worker = start_worker(prefect, SPEC.work_pool, SPEC.work_queue, "spot-node-1", tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while not any(w["status"] == "ONLINE" for w in prefect.workers(SPEC.work_pool)):
            assert time.monotonic() < deadline, "worker not online"
            time.sleep(1)
        # with an API key (the test server ignores it) and -vvv: the key must show nowhere
        out = playbook(
            "cutover", prefect.api, tmp_path, "-e", f"flow={FLOW}", "-e", f"prefect_api_key={API_KEY}", "-vvv"
        )
    finally:
        stop_worker(worker)
    assert out.returncode == 0, out.stdout[-4000:]
    assert API_KEY not in out.stdout + out.stderr
    assert placement(prefect) == (SPEC.work_pool, SPEC.work_queue)
    recorded = prefect.http.get(f"/variables/name/{SPEC.placement_key}").raise_for_status().json()["value"]
    assert recorded["state"] == "cut over" and recorded["previous"] == {"work_pool": "default", "work_queue": "default"}
    canary = prefect.flow_run(recorded["canary_run_id"])
    assert canary["state_type"] == "COMPLETED" and canary["work_pool_name"] == SPEC.work_pool
    # the run created by hand in the old pool was carried over, not left behind
    old = prefect.flow_run(deployment["manual_run"])
    assert old["state_type"] == "CANCELLED" and "moved to flow run" in old["state"]["message"]
    moved = old["state"]["message"].split()[4]  # "moved to flow run <id> by the placement change"
    assert prefect.flow_run(moved)["work_pool_name"] == SPEC.work_pool
    [record] = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["result"] == "succeeded" and record["from"] == "default/default"
    assert record["to"] == f"{SPEC.work_pool}/{SPEC.work_queue}" and record["canary_run_id"] == canary["id"]

    again = playbook("cutover", prefect.api, tmp_path, "-e", f"flow={FLOW}")
    assert again.returncode == 0 and "already runs on" in again.stdout

    back = playbook("rollback", prefect.api, tmp_path, "-e", f"flow={FLOW}", "-e", f"prefect_api_key={API_KEY}", "-vvv")
    assert back.returncode == 0, back.stdout[-3000:]
    assert API_KEY not in back.stdout + back.stderr
    assert placement(prefect) == ("default", "default")
    assert prefect.flow_run(moved)["state_type"] == "CANCELLED"  # carried back with the deployment
    recorded = prefect.http.get(f"/variables/name/{SPEC.placement_key}").raise_for_status().json()["value"]
    assert recorded["state"] == "rolled back" and recorded["work_pool"] == "default"
    audit = prefect.http.get("/variables/name/placement_audit").raise_for_status().json()["value"]
    assert [r["action"] for r in audit] == ["cutover", "rollback"]


def test_a_failing_canary_rolls_back_and_says_what_happened(prefect, deployment, tmp_path):
    # A worker whose flow runs cannot start (no `prefect` on its PATH): the canary crashes.
    worker = start_worker(prefect, SPEC.work_pool, SPEC.work_queue, "broken-node", tmp_path / "worker.log",
                          PATH="/usr/bin:/bin")  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(w["status"] == "ONLINE" and w["name"] == "broken-node" for w in prefect.workers(SPEC.work_pool)):
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(1)
        out = playbook("cutover", prefect.api, tmp_path, "-e", f"flow={FLOW}")
    finally:
        stop_worker(worker)
    assert out.returncode != 0
    failed_task = "Canary | Check the canary completed on the bulk pool"
    assert f"cutover of {FLOW} failed and was rolled back: {failed_task}: canary run" in out.stdout
    assert "The deployment is back on default/default" in out.stdout
    assert placement(prefect) == ("default", "default")
    old = prefect.flow_run(deployment["manual_run"])
    recorded = prefect.http.get(f"/variables/name/{SPEC.placement_key}").raise_for_status().json()["value"]
    assert recorded["state"] == "rolled back"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[-1]["result"] == "rolled back" and records[-1]["failed_task"] == failed_task
    assert records[-1]["reason"].startswith(f"{failed_task}: canary run")
    assert old["state_type"] == "CANCELLED"  # carried over, then carried back as a new run
    back_home = prefect.http.post(
        "/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}},
    ).json()
    assert back_home and all(r["work_pool_name"] == "default" for r in back_home)


# --- the placement module itself: idempotent, and safe while the server and workers act on the runs


prefect_api = load_plugin("ansible.module_utils.prefect_api", "plugins/module_utils/prefect_api.py")
placement_module = load_plugin("prefect_placement", "plugins/modules/prefect_placement.py")


class _Module:
    def __init__(self, **params: object) -> None:
        self.params = {"rounds": 5, **params}
        self.check_mode = False


def _scheduled(prefect: Prefect, dep_id: str, name: str) -> str:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    body = {"name": name, "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}}
    return prefect.http.post(f"/deployments/{dep_id}/create_flow_run", json=body).raise_for_status().json()["id"]


def _waiting(prefect: Prefect, dep_id: str) -> list[dict]:
    body = {"flow_runs": {"deployment_id": {"any_": [dep_id]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    return prefect.http.post("/flow_runs/filter", json=body).raise_for_status().json()


def test_placement_is_idempotent_and_survives_an_interrupted_carry(prefect, deployment):
    dep_id = deployment["id"]
    second = _scheduled(prefect, dep_id, "second")
    client = prefect_api.PrefectClient(prefect.api)
    module = _Module(deployment_id=dep_id, work_pool_name=SPEC.work_pool, work_queue_name=SPEC.work_queue)

    # First try dies after copying the first run, before cancelling it (a lost answer, a killed controller).
    real_post = client.post

    def dying_post(path: str, body: dict, missing_ok: bool = False) -> object:
        if path.endswith("/set_state"):
            raise prefect_api.PrefectAPIError("connection lost", None)
        return real_post(path, body, missing_ok=missing_ok)

    client.post = dying_post
    with pytest.raises(prefect_api.PrefectAPIError):
        placement_module.ensure(module, client)
    client.post = real_post

    result = placement_module.ensure(module, client)
    assert sorted(c["from"] for c in result["carried"]) == sorted([deployment["manual_run"], second])
    waiting = _waiting(prefect, dep_id)
    assert sorted(r["name"] for r in waiting) == ["by-hand", "second"]  # one copy each, none twice
    assert {r["work_pool_name"] for r in waiting} == {SPEC.work_pool}
    assert prefect.flow_run(second)["state_type"] == "CANCELLED"

    again = placement_module.ensure(module, client)
    assert again["changed"] is False and again["carried"] == [] and again["moved"] is False


def test_placement_leaves_a_run_that_stopped_waiting_and_drops_its_copy(prefect, deployment):
    dep_id = deployment["id"]
    vanishing = _scheduled(prefect, dep_id, "vanishing")
    client = prefect_api.PrefectClient(prefect.api)
    module = _Module(deployment_id=dep_id, work_pool_name=SPEC.work_pool, work_queue_name=SPEC.work_queue)
    real_post = client.post

    def racing_post(path: str, body: dict, missing_ok: bool = False) -> object:
        if path == f"/flow_runs/{vanishing}/set_state":  # the server deletes it just before the cancel
            prefect.http.delete(f"/flow_runs/{vanishing}").raise_for_status()
        return real_post(path, body, missing_ok=missing_ok)

    client.post = racing_post
    result = placement_module.ensure(module, client)
    assert [c["from"] for c in result["carried"]] == [deployment["manual_run"]]
    assert result["left"] == [{"name": "vanishing", "id": vanishing, "state": "deleted"}]
    assert sorted(r["name"] for r in _waiting(prefect, dep_id)) == ["by-hand"]  # no orphan copy of it
