#!/usr/bin/python
# Agency OS: a Prefect work pool, idempotent against the REST API (no prefect import, no CLI).
# `prefect work-pool create --overwrite` always rewrites; this module reads the pool and PATCHes
# only what differs, so a converged control plane reports no change and --check --diff shows it.

DOCUMENTATION = r"""
---
module: prefect_work_pool
short_description: Create, update or delete a Prefect work pool through the REST API
description:
  - Reads the pool with C(GET /api/work_pools/{name}). A missing pool is created with
    C(POST /api/work_pools/); an existing one is changed with C(PATCH /api/work_pools/{name}) only
    where it differs from the task (the base job template is compared as a whole, deeply).
  - A pool's type cannot be changed (Prefect has no such update), so a pool of another type is an error.
  - Prefect leaves the base job template of a pool created without one empty; pass the type's
    default (C(prefect work-pool get-default-base-job-template --type process)) or your own.
author:
  - Agency OS
options:
  name:
    description: Name of the work pool.
    type: str
    required: true
  type:
    description: Worker type of the pool (only used on creation; an existing pool of another type fails).
    type: str
    default: process
  base_job_template:
    description:
      - The pool's base job template (C(job_configuration) and C(variables)). Left as it is when omitted.
    type: dict
  overwrite_base_job_template:
    description:
      - V(false) sends O(base_job_template) only when the pool is created; an existing pool keeps
        its template (a live pool configured elsewhere).
    type: bool
    default: true
  description:
    description: Description of the pool. Left as it is when omitted.
    type: str
  concurrency_limit:
    description: Flow runs the pool lets run at once. Left as it is when omitted.
    type: int
  state:
    description: Whether the pool exists.
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
  - Deleting a pool deletes its queues; deployments in it are left without a pool.
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Register the bulk pool with its job template
  prefect_work_pool:
    api_url: http://127.0.0.1:4200/api
    name: bulk-processing
    type: process
    base_job_template: "{{ lookup('ansible.builtin.file', 'bulk-template.json') | from_json }}"
    description: Spot capacity for interruptible bulk flows

- name: Make sure the realtime pool exists, without touching a template configured elsewhere
  prefect_work_pool:
    api_url: "{{ prefect_api_url }}"
    name: default
    base_job_template: "{{ process_default_template }}"
    overwrite_base_job_template: false
"""

RETURN = r"""
work_pool:
  description: The pool as the API returns it after the change (what would be sent, in check mode); null when absent.
  returned: always
  type: dict
changed_fields:
  description: The fields that were (or would be) created or changed.
  returned: always
  type: list
  elements: str
  sample: [base_job_template]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    name_in_path,
    prefect_argument_spec,
    run_ensure,
)

MANAGED = ("description", "concurrency_limit", "base_job_template")


def ensure(module, client):
    p = module.params
    name = p["name"]
    path = f"/work_pools/{name_in_path(name)}"
    current = client.get(path, missing_ok=True)

    if p["state"] == "absent":
        if current is None:
            return {"changed": False, "work_pool": None, "changed_fields": [], "diff": {"before": {}, "after": {}}}
        if not module.check_mode:
            client.delete(path)
        before = {"name": name, "type": current.get("type"), "state": "present"}
        return {
            "changed": True,
            "work_pool": None,
            "changed_fields": ["state"],
            "diff": {"before": before, "after": {}},
        }

    wanted = {key: p[key] for key in MANAGED if p[key] is not None}
    if current is None:
        body = {"name": name, "type": p["type"], **wanted}
        created = body if module.check_mode else client.post("/work_pools/", body)
        return {
            "changed": True,
            "work_pool": created,
            "changed_fields": ["state", *sorted(wanted)],
            "diff": {"before": {}, "after": body},
        }

    if current.get("type") != p["type"]:
        module.fail_json(
            msg=f"work pool {name!r} exists with type {current.get('type')!r}, not {p['type']!r}: Prefect cannot "
            "change a pool's type; delete the pool (state: absent) or use its type"
        )
    if not p["overwrite_base_job_template"]:
        wanted.pop("base_job_template", None)
    update = {key: value for key, value in wanted.items() if current.get(key) != value}
    diff = {"before": {"name": name, **{key: current.get(key) for key in update}}, "after": {"name": name, **update}}
    if update and not module.check_mode:
        client.patch(path, update)
        current = client.get(path)
    elif update:
        current = {**current, **update}
    return {"changed": bool(update), "work_pool": current, "changed_fields": sorted(update), "diff": diff}


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            name={"type": "str", "required": True},
            type={"type": "str", "default": "process"},
            base_job_template={"type": "dict"},
            overwrite_base_job_template={"type": "bool", "default": True},
            description={"type": "str"},
            concurrency_limit={"type": "int"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        ),
        supports_check_mode=True,
    )
    if module.params["concurrency_limit"] is not None and module.params["concurrency_limit"] < 0:
        module.fail_json(msg=f"concurrency_limit must be 0 or more, got {module.params['concurrency_limit']}")
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
