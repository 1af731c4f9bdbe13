#!/usr/bin/python
# Agency OS: a Prefect deployment, idempotent against the REST API.
# POST /api/deployments/ is an upsert by flow + name that deletes and recreates every schedule
# (and the future runs they made) each time it is called; this module calls it only when
# something differs, compares schedules by meaning, and resends the existing schedules when the
# task does not manage them, so a rerun neither duplicates nor drops a schedule.

DOCUMENTATION = r"""
---
module: prefect_deployment
short_description: Create, update or delete a Prefect deployment through the REST API
description:
  - Reads the deployment with C(GET /api/deployments/name/{flow}/{name}) and compares it with the
    task. Only when something differs, resolves the flow's id with C(POST /api/flows/) (get or
    create) and upserts the deployment with C(POST /api/deployments/).
  - Takes the body that C(python -m agency_os_spot.deploy deployment NAME) prints (its keys are this
    module's options). Options left out are not managed, except that the upsert replaces every
    schedule, so existing schedules are sent again when O(schedules) is omitted.
  - Schedules compare by meaning (cron words, interval or rrule, timezone with UTC for unset,
    active, parameters, slug), in any order. Tags compare as a set.
  - The work pool must exist (Prefect answers 404 for an unknown pool). An unknown queue is
    created by Prefect silently.
author:
  - Agency OS
options:
  name:
    description: Name of the deployment.
    type: str
    required: true
  flow_name:
    description: Name of the flow the deployment runs (created when missing).
    type: str
    required: true
  entrypoint:
    description: Where the flow function is, e.g. V(agency_os_spot.flows.abn_bulk_ingestion:abn_bulk_ingestion).
    type: str
  tags:
    description: Tags of the deployment (its flow runs inherit them). The whole list is replaced.
    type: list
    elements: str
  work_pool_name:
    description: Work pool of the deployment's flow runs.
    type: str
  work_queue_name:
    description: Queue of that pool.
    type: str
  parameters:
    description: Default parameters of the flow runs.
    type: dict
  parameter_openapi_schema:
    description: JSON schema of the flow's parameters.
    type: dict
  enforce_parameter_schema:
    description: Whether the server validates run parameters against the schema.
    type: bool
  job_variables:
    description: Job variables overriding the pool's base job template for this deployment.
    type: dict
  pull_steps:
    description: Steps a worker runs before the flow (an empty list when the code is installed on the nodes).
    type: list
    elements: dict
  schedules:
    description:
      - Schedules of the deployment, each with C(schedule) (C(cron) and C(timezone), C(interval) or
        C(rrule)) and optionally C(active), C(parameters), C(slug). Left as they are when omitted.
    type: list
    elements: dict
  description:
    description: Description of the deployment.
    type: str
  state:
    description: Whether the deployment exists.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - In check mode a flow or work pool that does not exist yet gives a change, not an error.
  - Moving a deployment to another pool reschedules its future auto-scheduled runs there; runs
    created by hand stay in the old pool.
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Render the deployment body from the flow catalog
  ansible.builtin.command:
    argv: ["{{ ansible_playbook_python }}", -m, agency_os_spot.deploy, deployment, abn_bulk_ingestion, --pool, default, --queue, default]
  register: body
  changed_when: false
  check_mode: false

- name: Register the deployment
  prefect_deployment:
    api_url: http://127.0.0.1:4200/api
    flow_name: abn_bulk_ingestion
    name: "{{ (body.stdout | from_json).name }}"
    entrypoint: "{{ (body.stdout | from_json).entrypoint }}"
    tags: "{{ (body.stdout | from_json).tags }}"
    work_pool_name: default
    work_queue_name: default
    schedules: "{{ (body.stdout | from_json).schedules | default([]) }}"
"""

RETURN = r"""
deployment:
  description: The deployment as the API returns it after the change (what would be sent, in check mode); null when absent.
  returned: always
  type: dict
deployment_id:
  description: Id of the deployment (null when it does not exist, or in check mode before creation).
  returned: always
  type: str
flow_id:
  description: Id of the flow (null in check mode before the flow exists).
  returned: always
  type: str
changed_fields:
  description: The options whose values differed (all managed ones when the deployment is created).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    name_in_path,
    normalise_schedule,
    prefect_argument_spec,
    run_ensure,
    same_schedules,
    schedules_for_create,
)

BODY_FIELDS = (
    "entrypoint",
    "tags",
    "work_pool_name",
    "work_queue_name",
    "parameters",
    "parameter_openapi_schema",
    "enforce_parameter_schema",
    "job_variables",
    "pull_steps",
    "schedules",
    "description",
)


def _same(key, want, have):
    if key == "tags":
        return sorted(set(want)) == sorted(set(have or []))
    if key == "schedules":
        return same_schedules(want, have)
    if key == "description":
        return (want or "") == (have or "")
    if key in ("parameters", "job_variables") and not want:
        return not have
    return want == have


def _shown(key, value):
    """How a field appears in the diff (schedules by meaning, so the diff shows what matters)."""
    if key == "schedules":
        return [normalise_schedule(s) for s in value or []]
    return value


def ensure(module, client):
    p = module.params
    name, flow_name = p["name"], p["flow_name"]
    label = f"{flow_name}/{name}"
    flow = client.get(f"/flows/name/{name_in_path(flow_name)}", missing_ok=True)
    current = None
    if flow is not None:
        current = client.get(f"/deployments/name/{name_in_path(flow_name)}/{name_in_path(name)}", missing_ok=True)
    result = {"flow_id": flow["id"] if flow else None, "deployment_id": current["id"] if current else None}

    if p["state"] == "absent":
        if current is not None and not module.check_mode:
            client.delete(f"/deployments/{current['id']}")
        return {
            **result,
            "changed": current is not None,
            "deployment": None,
            "deployment_id": None,
            "changed_fields": ["state"] if current else [],
            "diff": {"before": {"deployment": label, "state": "present"} if current else {}, "after": {}},
        }

    wanted = {key: p[key] for key in BODY_FIELDS if p[key] is not None}
    if current is None:
        changed_fields = ["state", *sorted(wanted)]
        diff = {"before": {}, "after": {"deployment": label, **{k: _shown(k, v) for k, v in wanted.items()}}}
    else:
        changed_fields = sorted(k for k, v in wanted.items() if not _same(k, v, current.get(k)))
        diff = {
            "before": {"deployment": label, **{k: _shown(k, current.get(k)) for k in changed_fields}},
            "after": {"deployment": label, **{k: _shown(k, wanted[k]) for k in changed_fields}},
        }
    if not changed_fields:
        return {**result, "changed": False, "deployment": current, "changed_fields": [], "diff": diff}

    pool = wanted.get("work_pool_name")
    if pool and client.get(f"/work_pools/{name_in_path(pool)}", missing_ok=True) is None:
        if not module.check_mode:
            module.fail_json(
                msg=f"work pool {pool!r} of deployment {label} not found: register the pools first "
                "(playbooks/register_pools.yml) or fix work_pool_name",
                **result,
            )
        module.warn(f"work pool {pool!r} does not exist (yet): deployment {label} would be placed in it")

    if module.check_mode:
        shown = {**(current or {}), "name": name, **wanted}
        return {**result, "changed": True, "deployment": shown, "changed_fields": changed_fields, "diff": diff}

    flow_id = client.post("/flows/", {"name": flow_name})["id"]  # get or create
    body = {"name": name, "flow_id": flow_id, **wanted}
    if current is not None and "schedules" not in wanted:
        body["schedules"] = schedules_for_create(current.get("schedules"))
    created = client.post("/deployments/", body)
    stored = client.get(f"/deployments/{created['id']}")
    left = [k for k, v in wanted.items() if not _same(k, v, stored.get(k))]
    if left:
        module.warn(
            f"the server stored deployment {label} differently from what was sent ({', '.join(left)}); "
            "the next run will report a change again"
        )
    return {
        "changed": True,
        "deployment": stored,
        "deployment_id": stored["id"],
        "flow_id": flow_id,
        "changed_fields": changed_fields,
        "diff": diff,
    }


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            name={"type": "str", "required": True},
            flow_name={"type": "str", "required": True},
            entrypoint={"type": "str"},
            tags={"type": "list", "elements": "str"},
            work_pool_name={"type": "str"},
            work_queue_name={"type": "str"},
            parameters={"type": "dict"},
            parameter_openapi_schema={"type": "dict"},
            enforce_parameter_schema={"type": "bool"},
            job_variables={"type": "dict"},
            pull_steps={"type": "list", "elements": "dict"},
            schedules={"type": "list", "elements": "dict"},
            description={"type": "str"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        ),
        supports_check_mode=True,
    )
    if "/" in module.params["flow_name"]:
        module.fail_json(
            msg=f"flow_name {module.params['flow_name']!r}: Prefect refuses '/' in flow names; a member of a "
            "family such as webhook_handlers/stripe is deployment 'stripe' of flow 'webhook_handlers'"
        )
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
