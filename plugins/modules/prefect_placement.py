#!/usr/bin/python
# Agency OS: move a deployment to another work pool/queue and carry its waiting flow runs with it,
# idempotently and safely while the Prefect scheduler and workers keep working.
DOCUMENTATION = r"""
---
module: prefect_placement
short_description: Move a Prefect deployment to a work pool/queue and carry its scheduled runs over
description:
  - Changes the deployment's work pool and queue with C(PATCH /api/deployments/{id}) when they differ.
  - A deployment's flow runs keep the pool they were created in. The server itself deletes and
    recreates only the future auto-scheduled ones, so every other run still waiting (state type
    C(SCHEDULED), created by hand or by an automation, or late) in another pool of the deployment
    is recreated on the new placement (same name, parameters, tags, job variables and scheduled
    time) and the old one is cancelled with a message naming its copy.
  - Safe to repeat and to run while the scheduler, workers and other clients act on the same runs.
    Each copy is created with an idempotency key derived from the run it replaces, so a repeated
    or interrupted call never creates a second copy. A run that stopped waiting in between (a
    worker started it, the server deleted it) is left alone and its copy is deleted, so no run
    is lost or runs twice. Runs that appear in the old pool while the move happens are carried
    in a further round.
  - Transient answers (HTTP 408, 429, 502, 503 from a busy SQLite database or a proxy) are retried
    with backoff, as Prefect's own client does.
author:
  - Agency OS
options:
  deployment_id:
    description: Id of the deployment.
    type: str
    required: true
  work_pool_name:
    description: Work pool the deployment and its waiting runs must be on.
    type: str
    required: true
  work_queue_name:
    description: Queue of that pool.
    type: str
    required: true
  rounds:
    description: How many times to look again for runs left in another pool before giving up.
    type: int
    default: 5
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""
EXAMPLES = r"""
- name: Put abn_bulk_ingestion on spot capacity
  prefect_placement:
    api_url: http://127.0.0.1:4200/api
    deployment_id: "{{ deployment.id }}"
    work_pool_name: bulk-processing
    work_queue_name: bulk
"""
RETURN = r"""
moved:
  description: Whether the deployment itself was moved (false when it already was there).
  returned: always
  type: bool
carried:
  description: The runs carried over, each with C(name), C(from) (the cancelled run) and C(to) (its copy).
  returned: always
  type: list
  elements: dict
left:
  description: Runs that stopped waiting while being carried (started or deleted meanwhile) and
    stayed where they were, each with C(name), C(id) and C(state).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import PrefectAPIError, prefect_argument_spec, run_ensure


def _waiting_elsewhere(client, deployment_id, pool):
    """The deployment's runs that still wait (state type SCHEDULED) in a pool other than `pool`."""
    runs = client.paged(
        "/flow_runs/filter",
        {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}, "state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
        },
    )
    return [r for r in runs if r.get("work_pool_name") != pool]


def _copy(client, deployment_id, run, placement):
    """The run's copy on the deployment's new placement (created once: idempotency key)."""
    details = (run.get("state") or {}).get("state_details") or {}
    when = details.get("scheduled_time") or run.get("next_scheduled_start_time") or run.get("expected_start_time")
    return client.post(
        f"/deployments/{deployment_id}/create_flow_run",
        {
            "name": run["name"],
            "parameters": run.get("parameters") or {},
            "tags": run.get("tags") or [],
            "job_variables": run.get("job_variables") or {},
            "idempotency_key": f"carried:{run['id']}:{placement}",
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}},
        },
    )


def _carry(client, deployment_id, run, placement):
    """Copy one waiting run and cancel the original; (copy, None) or (None, why it stayed)."""
    current = client.get(f"/flow_runs/{run['id']}", missing_ok=True)
    if current is None or current.get("state_type") != "SCHEDULED":
        return None, "deleted" if current is None else current.get("state_name")
    copy = _copy(client, deployment_id, current, placement)
    answer = client.post(
        f"/flow_runs/{run['id']}/set_state",
        {
            "state": {
                "type": "CANCELLED",
                "name": "Cancelled",
                "message": f"moved to flow run {copy['id']} by the placement change to {placement}",
            },
            "force": False,
        },
        missing_ok=True,
    )
    if answer is not None and answer.get("status") == "ACCEPT":
        return copy, None
    # The original stopped waiting between our read and the cancel (a worker took it, the server
    # deleted it, an orchestration rule refused): it keeps its place and the copy goes.
    after = client.get(f"/flow_runs/{run['id']}", missing_ok=True)
    if after is not None and after.get("state_type") == "CANCELLED":
        return copy, None
    client.delete(f"/flow_runs/{copy['id']}")
    return None, "deleted" if after is None else after.get("state_name")


def ensure(module, client):
    p = module.params
    dep_id, pool, queue = p["deployment_id"], p["work_pool_name"], p["work_queue_name"]
    placement = f"{pool}/{queue}"
    deployment = client.get(f"/deployments/{dep_id}", missing_ok=True)
    if deployment is None:
        raise PrefectAPIError(f"deployment {dep_id} does not exist (it was deleted?)", 404)
    before = {"work_pool_name": deployment.get("work_pool_name"), "work_queue_name": deployment.get("work_queue_name")}
    after = {"work_pool_name": pool, "work_queue_name": queue}
    moved = before != after
    diff = {"before": before, "after": after}
    if module.check_mode:
        waiting = _waiting_elsewhere(client, dep_id, pool)
        carried = [{"name": r["name"], "from": r["id"], "to": None} for r in waiting]
        return {"changed": moved or bool(waiting), "moved": moved, "carried": carried, "left": [], "diff": diff}
    if moved:
        client.patch(f"/deployments/{dep_id}", after)

    carried, left = [], []
    for _ in range(max(1, p["rounds"])):
        waiting = [r for r in _waiting_elsewhere(client, dep_id, pool) if r["id"] not in {x["id"] for x in left}]
        if not waiting:
            break
        for run in waiting:
            copy, why = _carry(client, dep_id, run, placement)
            if copy is None:
                left.append({"name": run["name"], "id": run["id"], "state": why})
            else:
                carried.append({"name": run["name"], "from": run["id"], "to": copy["id"]})
    else:
        still = _waiting_elsewhere(client, dep_id, pool)
        if [r for r in still if r["id"] not in {x["id"] for x in left}]:
            raise PrefectAPIError(
                f"runs of deployment {dep_id} keep appearing outside {placement} after {p['rounds']} rounds "
                f"({', '.join(r['name'] for r in still[:5])}): is another client moving it back? Run again."
            )
    return {"changed": moved or bool(carried), "moved": moved, "carried": carried, "left": left, "diff": diff}


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            deployment_id={"type": "str", "required": True},
            work_pool_name={"type": "str", "required": True},
            work_queue_name={"type": "str", "required": True},
            rounds={"type": "int", "default": 5},
        ),
        supports_check_mode=True,
    )
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
