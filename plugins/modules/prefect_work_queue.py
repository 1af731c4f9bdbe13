#!/usr/bin/python
# Agency OS: a queue of a Prefect work pool, idempotent against the REST API.
# `prefect work-queue create` fails when the queue exists and has no update verb; this module
# reads the queue and PATCHes only what differs.

DOCUMENTATION = r"""
---
module: prefect_work_queue
short_description: Create, update or delete a queue of a Prefect work pool through the REST API
description:
  - Reads the queue with C(GET /api/work_pools/{pool}/queues/{name}). A missing queue is created
    with C(POST /api/work_pools/{pool}/queues); an existing one is changed with
    C(PATCH /api/work_pools/{pool}/queues/{name}) only where it differs from the task.
  - Prefect keeps the priorities of a pool's queues unique; giving this queue a priority another
    queue holds moves the other queue down (1 is polled first).
author:
  - Agency OS
options:
  pool:
    description: Name of the work pool the queue belongs to (it must exist).
    type: str
    required: true
  name:
    description: Name of the queue.
    type: str
    required: true
  priority:
    description: Priority of the queue in its pool (1 is polled first). Left as it is when omitted.
    type: int
  concurrency_limit:
    description: Flow runs of this queue that may run at once. Left as it is when omitted.
    type: int
  description:
    description: Description of the queue. Left as it is when omitted.
    type: str
  state:
    description: Whether the queue exists.
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
  - In check mode a pool that does not exist yet (one an earlier task would create) gives a
    change, not an error.
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Register the bulk queue
  prefect_work_queue:
    api_url: http://127.0.0.1:4200/api
    pool: bulk-processing
    name: bulk
    priority: 1
    concurrency_limit: 10
"""

RETURN = r"""
work_queue:
  description: The queue as the API returns it after the change (what would be sent, in check mode); null when absent.
  returned: always
  type: dict
changed_fields:
  description: The fields that were (or would be) created or changed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    name_in_path,
    prefect_argument_spec,
    run_ensure,
)

MANAGED = ("priority", "concurrency_limit", "description")


def ensure(module, client):
    p = module.params
    pool, name = p["pool"], p["name"]
    queues = f"/work_pools/{name_in_path(pool)}/queues"
    path = f"{queues}/{name_in_path(name)}"
    current = client.get(path, missing_ok=True)
    label = {"pool": pool, "name": name}

    if p["state"] == "absent":
        if current is None:
            return {"changed": False, "work_queue": None, "changed_fields": [], "diff": {"before": {}, "after": {}}}
        if not module.check_mode:
            client.delete(path)
        return {
            "changed": True,
            "work_queue": None,
            "changed_fields": ["state"],
            "diff": {"before": {**label, "state": "present"}, "after": {}},
        }

    wanted = {key: p[key] for key in MANAGED if p[key] is not None}
    if current is None:
        body = {"name": name, **wanted}
        if client.get(f"/work_pools/{name_in_path(pool)}", missing_ok=True) is None:
            if not module.check_mode:
                module.fail_json(msg=f"work pool {pool!r} not found: create it first (prefect_work_pool)")
            module.warn(f"work pool {pool!r} does not exist (yet): the queue would be created with it")
        created = {**body, "work_pool_name": pool} if module.check_mode else client.post(queues, body)
        return {
            "changed": True,
            "work_queue": created,
            "changed_fields": ["state", *sorted(wanted)],
            "diff": {"before": {}, "after": {**label, **wanted}},
        }

    update = {key: value for key, value in wanted.items() if current.get(key) != value}
    diff = {"before": {**label, **{key: current.get(key) for key in update}}, "after": {**label, **update}}
    if update and not module.check_mode:
        client.patch(path, update)
        current = client.get(path)
    elif update:
        current = {**current, **update}
    return {"changed": bool(update), "work_queue": current, "changed_fields": sorted(update), "diff": diff}


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            pool={"type": "str", "required": True},
            name={"type": "str", "required": True},
            priority={"type": "int"},
            concurrency_limit={"type": "int"},
            description={"type": "str"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        ),
        supports_check_mode=True,
    )
    if module.params["priority"] is not None and module.params["priority"] < 1:
        module.fail_json(msg=f"priority must be 1 or more (1 is polled first), got {module.params['priority']}")
    if module.params["concurrency_limit"] is not None and module.params["concurrency_limit"] < 0:
        module.fail_json(msg=f"concurrency_limit must be 0 or more, got {module.params['concurrency_limit']}")
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
