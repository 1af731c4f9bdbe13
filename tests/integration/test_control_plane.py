"""The Prefect control plane against a real Prefect server: playbooks/register_pools.yml (role
prefect_work_pools) and playbooks/tag_flows.yml (role prefect_deployments), run with
`ansible-playbook` as an operator runs them, and checked through the REST API.

* `--check --diff` on a fresh server shows the plan and creates nothing;
* pools, the bulk queue and both automations are created, and a second run changes nothing;
* the deployments of this repository's flows land where the flow runs today (the realtime pool
  before the cutover, the pool of the placement Variable after it; a rerun never moves them back),
  and deployments defined elsewhere get their tier's tags while their other tags survive;
* the crash-reschedule automation reschedules a crashed interruptible run until its run count
  passes the cap, then leaves it Crashed;
* the zombie and stalled-submission automations (with short windows) crash a silent run and
  reschedule a submission whose worker vanished, for interruptible runs only.

One Prefect server for the module; the tests build on each other through module fixtures.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agency_os_spot.catalog import load_catalog
from agency_os_spot.deploy import bulk_base_job_template, default_process_template
from tests.support import ROOT
from tests.support.prefect_harness import VENV_BIN, prefect_server
from tests.support.prefect_rest import prefect_http

pytestmark = pytest.mark.slow

CAP = 3  # crash-reschedule cap for this module (the role's default is 10): keeps the drill short
CATALOG = load_catalog()
REALTIME_POOL = CATALOG.tiers["realtime"].work_pool
BULK_POOL, BULK_QUEUE = CATALOG.spot_pool, CATALOG.tiers["bulk"].work_queue
ZOMBIE = "agency-os: crash zombie flow runs"
RESCHEDULE = "agency-os: reschedule crashed interruptible runs"
STALLED = "agency-os: reschedule stalled submissions"


@dataclass
class Run:
    """One ansible-playbook run, read through the JSON callback."""

    output: dict[str, Any]
    stderr: str

    @property
    def changed(self) -> int:
        return self.output["stats"]["localhost"]["changed"]

    def tasks(self) -> dict[str, dict[str, Any]]:
        """Result of each task, by task name (the last play that ran it)."""
        return {t["task"]["name"]: t["hosts"].get("localhost", {}) for p in self.output["plays"] for t in p["tasks"]}

    def changed_tasks(self) -> list[str]:
        return [name for name, result in self.tasks().items() if result.get("changed")]

    def task(self, suffix: str) -> dict[str, Any]:
        matches = [result for name, result in self.tasks().items() if name.endswith(suffix)]
        assert matches, f"no task ending in {suffix!r}: {list(self.tasks())}"
        return matches[0]


def playbook(api: str, name: str, *args: str, **extra_vars: Any) -> Run:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    env.pop("PREFECT_API_KEY", None)
    variables = {"prefect_api_url": api, "prefect_work_pools_crash_reschedule_cap": CAP, **extra_vars}
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), f"playbooks/{name}.yml", "-e", json.dumps(variables), *args],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{name} {args} failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    )
    return Run(json.loads(proc.stdout), proc.stderr)


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with prefect_server() as url:
        yield url


@pytest.fixture(scope="module")
def rest(api: str) -> Iterator[httpx.Client]:
    with prefect_http(api) as client:
        yield client


def _names(rest: httpx.Client, path: str) -> list[str]:
    return sorted(x["name"] for x in rest.post(path, json={}).raise_for_status().json())


def _deployment(rest: httpx.Client, flow: str, name: str) -> dict[str, Any]:
    return rest.get(f"/deployments/name/{flow}/{name}").raise_for_status().json()


def _automation(rest: httpx.Client, name: str) -> dict[str, Any]:
    found = rest.post("/automations/filter", json={"automations": {"name": {"any_": [name]}}}).raise_for_status()
    (automation,) = found.json()
    return automation


def _external(rest: httpx.Client, flow: str, name: str, tags: list[str], pool: str = REALTIME_POOL) -> str:
    """A deployment created by someone else (the application's own `prefect deploy`)."""
    flow_id = rest.post("/flows/", json={"name": flow}).raise_for_status().json()["id"]
    body = {"name": name, "flow_id": flow_id, "tags": tags, "work_pool_name": pool, "entrypoint": "app.py:f"}
    return rest.post("/deployments/", json=body).raise_for_status().json()["id"]


@pytest.fixture(scope="module")
def pools(api: str) -> Run:
    """register_pools.yml, applied once on the server."""
    return playbook(api, "register_pools")


@pytest.fixture(scope="module")
def deployed(api: str, rest: httpx.Client, pools: Run) -> Run:
    """Deployments defined elsewhere exist, then tag_flows.yml is applied once."""
    _external(rest, "webhook_handlers", "stripe", ["team:payments", "tier:bulk", "infra:spot", "interruptible"])
    _external(rest, "lead_enrichment_realtime", "api", ["owner:growth", "tier:realtime"])
    _external(rest, "batch_email_verification", "nightly", ["hunter", "tier:realtime", "infra:railway"])
    _external(rest, "webhook_handlers_v2", "legacy", ["tier:bulk"])  # not in the catalog: untouched
    return playbook(api, "tag_flows")


def test_check_mode_on_a_fresh_server_shows_the_plan_and_creates_nothing(api, rest):
    plan = playbook(api, "register_pools", "--check", "--diff")
    assert plan.changed == 6, plan.changed_tasks()  # 2 pools, the queue, 3 automations
    bulk = plan.task("Register the bulk pool")["diff"]["after"]
    assert bulk["name"] == BULK_POOL
    assert bulk["base_job_template"] == bulk_base_job_template(heartbeat_seconds=30)
    queue = plan.task("Register the bulk queue in the bulk pool")["diff"]["after"]
    assert queue == {**queue, "pool": BULK_POOL, "name": BULK_QUEUE, "priority": 1, "concurrency_limit": 10}
    reschedule = plan.task("reschedules crashed interruptible runs")["diff"]["after"]
    assert reschedule["trigger"]["match"]["prefect.run-count"] == [str(n) for n in range(1, CAP + 1)]

    deploy_plan = playbook(api, "tag_flows", "--check", "--diff")
    registered = deploy_plan.task("Register each deployment")
    assert registered["changed"]
    assert {r["diff"]["after"]["deployment"] for r in registered["results"]} == {
        "abn_bulk_ingestion/abn_bulk_ingestion",
        "bulk_worker/bulk_worker",
    }
    pools_after = {
        r["diff"]["after"]["deployment"]: r["diff"]["after"]["work_pool_name"] for r in registered["results"]
    }
    # Where each flow runs today: abn_bulk_ingestion still on Railway, bulk_worker born on spot.
    assert pools_after == {"abn_bulk_ingestion/abn_bulk_ingestion": REALTIME_POOL, "bulk_worker/bulk_worker": BULK_POOL}

    assert _names(rest, "/work_pools/filter") == []
    assert _names(rest, "/automations/filter") == []
    assert _names(rest, "/flows/filter") == []  # not even the flows: POST /flows/ is get-or-create
    assert _names(rest, "/deployments/filter") == []


def test_register_pools_creates_pools_queue_and_automations_then_changes_nothing(api, rest, pools):
    assert pools.changed == 6, pools.changed_tasks()

    realtime = rest.get(f"/work_pools/{REALTIME_POOL}").raise_for_status().json()
    assert realtime["type"] == "process"
    assert realtime["base_job_template"] == default_process_template()
    bulk = rest.get(f"/work_pools/{BULK_POOL}").raise_for_status().json()
    assert bulk["type"] == "process"
    assert bulk["base_job_template"] == bulk_base_job_template(heartbeat_seconds=30)
    queue = rest.get(f"/work_pools/{BULK_POOL}/queues/{BULK_QUEUE}").raise_for_status().json()
    assert (queue["priority"], queue["concurrency_limit"]) == (1, 10)

    zombie = _automation(rest, ZOMBIE)
    assert zombie["enabled"]
    trigger = zombie["trigger"]
    assert (trigger["posture"], trigger["within"], trigger["for_each"]) == ("Proactive", 90.0, ["prefect.resource.id"])
    assert set(trigger["after"]) == {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}
    assert set(trigger["expect"]) == {
        f"prefect.flow-run.{s}"
        for s in ("heartbeat", "Running", "Completed", "Failed", "Cancelled", "Crashed", "AwaitingRetry", "Scheduled")
    }
    assert zombie["actions"][0]["type"] == "change-flow-run-state"
    assert zombie["actions"][0]["state"] == "CRASHED"
    reschedule = _automation(rest, RESCHEDULE)
    assert reschedule["trigger"]["match"]["prefect.run-count"] == ["1", "2", "3"]
    assert reschedule["trigger"]["match_related"] == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.interruptible",
    }
    action = reschedule["actions"][0]
    assert (action["state"], action["name"], action["force"]) == ("SCHEDULED", "AwaitingRetry", True)

    again = playbook(api, "register_pools")
    assert again.changed == 0, again.changed_tasks()
    check = playbook(api, "register_pools", "--check", "--diff")
    assert check.changed == 0, check.changed_tasks()
    stalled = _automation(rest, STALLED)
    assert set(stalled["trigger"]["after"]) == {"prefect.flow-run.Submitting", "prefect.flow-run.Pending"}
    assert "prefect.flow-run.Running" in stalled["trigger"]["expect"]
    assert stalled["trigger"]["within"] == 120.0  # inventories/local: prefect_work_pools_stall_seconds
    assert stalled["trigger"]["match_related"] == reschedule["trigger"]["match_related"]
    assert _names(rest, "/automations/filter") == sorted([ZOMBIE, RESCHEDULE, STALLED])


def test_tag_flows_deploys_to_the_realtime_pool_before_cutover_and_fixes_foreign_tags(api, rest, deployed):
    assert "prefect_deployments : deployments | Register each deployment" in deployed.changed_tasks()
    abn = _deployment(rest, "abn_bulk_ingestion", "abn_bulk_ingestion")
    assert (abn["work_pool_name"], abn["work_queue_name"]) == (REALTIME_POOL, "default")
    assert abn["tags"] == ["tier:bulk", "infra:spot", "interruptible"]
    assert abn["entrypoint"] == "agency_os_spot.flows.abn_bulk_ingestion:abn_bulk_ingestion"
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"], s["active"]) for s in abn["schedules"]] == [
        ("0 3 * * 0", "Australia/Sydney", True)
    ]
    worker = _deployment(rest, "bulk_worker", "bulk_worker")  # current_infra: spot in the catalog
    assert (worker["work_pool_name"], worker["work_queue_name"]) == (BULK_POOL, BULK_QUEUE)

    # Tier tags fixed, everything else kept, in order.
    assert _deployment(rest, "webhook_handlers", "stripe")["tags"] == [
        "team:payments",
        "tier:realtime",
        "infra:railway",
    ]
    assert _deployment(rest, "lead_enrichment_realtime", "api")["tags"] == [
        "owner:growth",
        "tier:realtime",
        "infra:railway",
    ]
    assert _deployment(rest, "batch_email_verification", "nightly")["tags"] == [
        "hunter",
        "tier:bulk",
        "infra:spot",
        "interruptible",
    ]
    assert _deployment(rest, "webhook_handlers_v2", "legacy")["tags"] == ["tier:bulk"]
    tagged = deployed.task("Give the deployments of flows defined elsewhere their tier's tags")
    assert tagged["changed_deployments"] == [
        "batch_email_verification/nightly",
        "lead_enrichment_realtime/api",
        "webhook_handlers/stripe",
    ]

    again = playbook(api, "tag_flows")
    assert again.changed == 0, again.changed_tasks()
    abn_again = _deployment(rest, "abn_bulk_ingestion", "abn_bulk_ingestion")
    assert [s["id"] for s in abn_again["schedules"]] == [s["id"] for s in abn["schedules"]]  # not recreated
    check = playbook(api, "tag_flows", "--check", "--diff")
    assert check.changed == 0, check.changed_tasks()


def test_a_rerun_keeps_each_flow_where_the_cutover_put_it(api, rest, deployed):
    # The cutover of abn_bulk_ingestion: the deployment moved and the placement recorded. bulk_worker
    # (born on spot) was rolled back: its recorded placement is the realtime pool, not moved yet.
    abn = _deployment(rest, "abn_bulk_ingestion", "abn_bulk_ingestion")
    rest.patch(f"/deployments/{abn['id']}", json={"work_pool_name": BULK_POOL, "work_queue_name": BULK_QUEUE})
    placements = {
        "abn_bulk_ingestion": {"work_pool": BULK_POOL, "work_queue": BULK_QUEUE},
        "bulk_worker": {"work_pool": REALTIME_POOL, "work_queue": "default"},
    }
    for spec, placement in placements.items():
        key = CATALOG.get(spec).placement_key
        rest.post("/variables/", json={"name": key, "value": placement}).raise_for_status()

    run = playbook(api, "tag_flows", "--diff")
    items = {r["item"]["key"]: r for r in run.task("Register each deployment")["results"]}
    assert not items["abn_bulk_ingestion"]["changed"]  # not moved back to the realtime pool
    assert items["bulk_worker"]["changed"]  # the recorded placement wins over the catalog's current_infra
    assert items["bulk_worker"]["diff"]["before"]["work_pool_name"] == BULK_POOL
    for flow, placement in placements.items():
        dep = _deployment(rest, flow, flow)
        assert (dep["work_pool_name"], dep["work_queue_name"]) == (placement["work_pool"], placement["work_queue"])
    assert len(_deployment(rest, "abn_bulk_ingestion", "abn_bulk_ingestion")["schedules"]) == 1


def _set_state(rest: httpx.Client, run_id: str, state_type: str, name: str | None = None) -> None:
    body = {"state": {"type": state_type, **({"name": name} if name else {})}, "force": True}
    answer = rest.post(f"/flow_runs/{run_id}/set_state", json=body).raise_for_status().json()
    assert answer["status"] == "ACCEPT", answer


def _run(rest: httpx.Client, run_id: str) -> dict[str, Any]:
    return rest.get(f"/flow_runs/{run_id}").raise_for_status().json()


def _wait_state(rest: httpx.Client, run_id: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (run := _run(rest, run_id))["state_name"] != name:
        assert time.monotonic() < deadline, f"run is {run['state_name']} (run_count {run['run_count']}), not {name}"
        time.sleep(0.2)
    return run


def test_crashed_interruptible_runs_are_rescheduled_until_the_cap(rest, pools):
    drill = _external(rest, "crash_drill", "drill", ["tier:bulk", "infra:spot", "interruptible"], pool=BULK_POOL)
    other = _external(rest, "crash_drill", "realtime", ["tier:realtime", "infra:railway"])
    run_id = rest.post(f"/deployments/{drill}/create_flow_run", json={}).raise_for_status().json()["id"]
    other_id = rest.post(f"/deployments/{other}/create_flow_run", json={}).raise_for_status().json()["id"]

    for attempt in range(1, CAP + 1):
        _set_state(rest, run_id, "RUNNING")
        _set_state(rest, run_id, "CRASHED")
        run = _wait_state(rest, run_id, "AwaitingRetry", timeout=20)
        assert (run["state_type"], run["run_count"]) == ("SCHEDULED", attempt)

    # One crash more than the cap, and a crash of a run that is not interruptible: both stay Crashed.
    _set_state(rest, run_id, "RUNNING")
    _set_state(rest, run_id, "CRASHED")
    _set_state(rest, other_id, "RUNNING")
    _set_state(rest, other_id, "CRASHED")
    time.sleep(5)  # the reschedules above took well under a second each
    run = _run(rest, run_id)
    assert (run["state_name"], run["run_count"]) == ("Crashed", CAP + 1)
    assert _run(rest, other_id)["state_name"] == "Crashed"


@contextlib.contextmanager
def _short_window(rest: httpx.Client, name: str) -> Iterator[None]:
    """A copy of one of the role's automations with a 10 s window (the smallest Prefect accepts;
    the role refuses less), so its drill fits in a test: same trigger, same scope, same action."""
    automation = _automation(rest, name)
    trigger = {k: v for k, v in automation["trigger"].items() if k != "id"}
    drill = {"name": f"test: {name}", "trigger": {**trigger, "within": 10}, "actions": automation["actions"]}
    drill_id = rest.post("/automations/", json=drill).raise_for_status().json()["id"]
    try:
        yield
    finally:
        rest.delete(f"/automations/{drill_id}")


def _bulk_and_realtime_runs(rest: httpx.Client, flow: str, state_type: str) -> dict[str, dict[str, Any]]:
    """One run of an interruptible bulk deployment and one of a realtime one, both set to `state_type`."""
    bulk = _external(rest, flow, "bulk", ["tier:bulk", "interruptible"], pool=BULK_POOL)
    realtime = _external(rest, flow, "realtime", ["tier:realtime"])
    runs = {}
    for name, dep in (("bulk", bulk), ("realtime", realtime)):
        run = rest.post(f"/deployments/{dep}/create_flow_run", json={}).raise_for_status().json()
        _set_state(rest, run["id"], state_type)
        runs[name] = run
    return runs


def test_a_bulk_run_whose_heartbeats_stop_is_crashed_then_rescheduled(rest, pools):
    with _short_window(rest, ZOMBIE):  # 10 s instead of 3 x 30 s
        runs = _bulk_and_realtime_runs(rest, "zombie_drill", "RUNNING")
        events = [
            {
                "id": str(uuid.uuid4()),
                "occurred": dt.datetime.now(dt.UTC).isoformat(),
                "event": "prefect.flow-run.heartbeat",
                "resource": {
                    "prefect.resource.id": f"prefect.flow-run.{run['id']}",
                    "prefect.resource.name": run["name"],
                },
                "related": [
                    {"prefect.resource.id": f"prefect.flow.{run['flow_id']}", "prefect.resource.role": "flow"},
                    *({"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"} for t in run["tags"]),
                ],
            }
            for run in runs.values()
        ]
        rest.post("/events", json=events).raise_for_status()  # the last heartbeats, then silence

        run = _wait_state(rest, runs["bulk"]["id"], "AwaitingRetry", timeout=40)
        states = rest.get("/flow_run_states/", params={"flow_run_id": run["id"]}).raise_for_status().json()
        crashed = [s for s in states if s["type"] == "CRASHED"]
        assert crashed, states
        assert "no heartbeat" in crashed[0]["message"]
        assert _run(rest, runs["realtime"]["id"])["state_name"] == "Running"  # not interruptible: not watched


def test_a_bulk_run_whose_node_died_before_its_first_heartbeat_is_crashed_then_rescheduled(rest, pools):
    with _short_window(rest, ZOMBIE):
        # Running, then its node was killed before the engine sent a single heartbeat.
        runs = _bulk_and_realtime_runs(rest, "silent_start", "RUNNING")
        run = _wait_state(rest, runs["bulk"]["id"], "AwaitingRetry", timeout=40)
        states = rest.get("/flow_run_states/", params={"flow_run_id": run["id"]}).raise_for_status().json()
        assert any(s["type"] == "CRASHED" for s in states), states
        assert _run(rest, runs["realtime"]["id"])["state_name"] == "Running"  # not interruptible: not watched


def test_a_bulk_run_whose_worker_vanished_while_submitting_is_rescheduled(rest, pools):
    with _short_window(rest, STALLED):
        # A worker took each run (Pending), then its node was reclaimed.
        runs = _bulk_and_realtime_runs(rest, "stall_drill", "PENDING")
        run = _wait_state(rest, runs["bulk"]["id"], "AwaitingRetry", timeout=40)
        assert run["run_count"] == 0
        assert _run(rest, runs["realtime"]["id"])["state_name"] == "Pending"  # not interruptible: left alone


def _states_since(rest: httpx.Client, run_id: str, since: str) -> list[dict[str, Any]]:
    states = rest.get("/flow_run_states/", params={"flow_run_id": run_id}).raise_for_status().json()
    return sorted((s for s in states if s["timestamp"] > since), key=lambda s: s["timestamp"])


def _taken_again(rest: httpx.Client, run_id: str, last: str) -> str:
    """A first attempt (taken, started, rescheduled by a drain), then the run taken again a second
    later and left in `last`, inside the first attempt's window: the second attempt must be watched
    from its own start (with the `after` events not expected, it was not: this test failed). Returns
    the time of the last transition."""
    for state_type, name in (("PENDING", None), ("RUNNING", None), ("SCHEDULED", "AwaitingRetry")):
        _set_state(rest, run_id, state_type, name)
    time.sleep(1)  # the second attempt starts early in the first one's window
    _set_state(rest, run_id, "PENDING")
    if last != "PENDING":
        _set_state(rest, run_id, last)
    return _states_since(rest, run_id, "")[-1]["timestamp"]


def test_a_run_taken_again_within_the_window_whose_worker_vanished_is_rescheduled(rest, pools):
    with _short_window(rest, STALLED):
        dep = _external(rest, "stall_again", "bulk", ["tier:bulk", "interruptible"], pool=BULK_POOL)
        run_id = rest.post(f"/deployments/{dep}/create_flow_run", json={}).raise_for_status().json()["id"]
        since = _taken_again(rest, run_id, "PENDING")
        _wait_state(rest, run_id, "AwaitingRetry", timeout=40)
        rescheduled = [s for s in _states_since(rest, run_id, since) if s["name"] == "AwaitingRetry"]
        assert rescheduled and "did not start it" in rescheduled[0]["message"], rescheduled


def test_a_run_started_again_within_the_window_whose_node_died_is_crashed(rest, pools):
    with _short_window(rest, ZOMBIE):
        dep = _external(rest, "silent_again", "bulk", ["tier:bulk", "interruptible"], pool=BULK_POOL)
        run_id = rest.post(f"/deployments/{dep}/create_flow_run", json={}).raise_for_status().json()["id"]
        since = _taken_again(rest, run_id, "RUNNING")
        deadline = time.monotonic() + 40
        while not any(s["type"] == "CRASHED" for s in _states_since(rest, run_id, since)):
            assert time.monotonic() < deadline, _states_since(rest, run_id, since)
            time.sleep(0.5)
