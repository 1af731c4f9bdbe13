#!/usr/bin/python
# Agency OS: start a flow run of a deployment (once per idempotency key) and wait for its end.
# The cutover's canary: a request repeated after a lost answer starts no second run.

DOCUMENTATION = r"""
---
module: prefect_flow_run
short_description: Start a flow run of a Prefect deployment and optionally wait until it ends
description:
  - Creates a flow run with C(POST /api/deployments/{id}/create_flow_run). The server returns the
    existing run for an O(idempotency_key) it has seen, so a repeated task starts one run.
  - With O(wait), polls C(GET /api/flow_runs/{id}) until the run is in a final state (Completed,
    Failed, Crashed, Cancelled) or O(timeout_s) passes; it does not fail on the run's outcome, it
    returns it (RV(flow_run.state_type), RV(timed_out)) for the play to judge.
author:
  - Agency OS
options:
  deployment_id:
    description: The deployment to run.
    type: str
    required: true
  parameters:
    description: Parameters of the run (the deployment's defaults for the others).
    type: dict
    default: {}
  tags:
    description: Tags of the run, besides the deployment's.
    type: list
    elements: str
    default: []
  name:
    description: Name of the run (the server picks one when omitted).
    type: str
  idempotency_key:
    description: Key of the run on the server; the same key never starts a second run of the deployment.
    type: str
    required: true
  wait:
    description: Wait until the run is in a final state.
    type: bool
    default: false
  timeout_s:
    description: With O(wait), how long to wait.
    type: float
    default: 300
  poll_s:
    description: With O(wait), seconds between reads of the run.
    type: float
    default: 5
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Run the canary and wait for it
  prefect_flow_run:
    api_url: http://127.0.0.1:4200/api
    deployment_id: "{{ deployment.id }}"
    parameters: {sources: ["fixture://abn?records=2000"], scratch: true}
    tags: [canary]
    idempotency_key: "canary:abn_bulk_ingestion:2026-12-07T18:00:00Z"
    wait: true
    timeout_s: 900
  register: canary
"""

RETURN = r"""
flow_run:
  description: The run as the API last returned it (id, name, state_type, state_name, state message,
    work_pool_name, work_queue_name, tags, run_count).
  returned: always
  type: dict
final:
  description: Whether the run is in a final state.
  returned: always
  type: bool
timed_out:
  description: With O(wait), whether O(timeout_s) passed before the run ended.
  returned: always
  type: bool
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import name_in_path, prefect_argument_spec, run_ensure

FINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
KEYS = ("id", "name", "state_type", "state_name", "work_pool_name", "work_queue_name", "tags", "run_count")


def _summary(run):
    out = {k: run.get(k) for k in KEYS}
    out["message"] = (run.get("state") or {}).get("message")
    return out


def ensure(module, client):
    p = module.params
    body = {"parameters": p["parameters"], "tags": p["tags"], "idempotency_key": p["idempotency_key"]}
    if p["name"]:
        body["name"] = p["name"]
    run = client.post(f"/deployments/{name_in_path(p['deployment_id'])}/create_flow_run", body)
    deadline = time.monotonic() + p["timeout_s"]
    while p["wait"] and run.get("state_type") not in FINAL and time.monotonic() < deadline:
        time.sleep(min(p["poll_s"], max(deadline - time.monotonic(), 0)))
        run = client.get(f"/flow_runs/{run['id']}")
    final = run.get("state_type") in FINAL
    return {"changed": True, "flow_run": _summary(run), "final": final, "timed_out": bool(p["wait"] and not final)}


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            deployment_id={"type": "str", "required": True},
            parameters={"type": "dict", "default": {}},
            tags={"type": "list", "elements": "str", "default": []},
            name={"type": "str"},
            idempotency_key={"type": "str", "required": True, "no_log": False},
            wait={"type": "bool", "default": False},
            timeout_s={"type": "float", "default": 300},
            poll_s={"type": "float", "default": 5},
        ),
        supports_check_mode=False,
    )
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
