#!/usr/bin/python
# Agency OS: what the Prefect control plane holds, for preflights (read-only): API health,
# deployments of catalog flows or families, a pool and its workers, variables.

DOCUMENTATION = r"""
---
module: prefect_info
short_description: Read the Prefect API's health, deployments, workers and variables (read-only)
description:
  - Checks the API with C(GET /api/health). An unreachable or unhealthy API is not an error of
    this module; it returns RV(healthy=false) and RV(health_error) so a preflight can assert
    with a message that says what to do. The other reads are skipped then.
  - With O(flows), the deployments of each catalog flow or family C(prefix/*) (a family is the
    flow named C(prefix) and any flow named C(prefix/<x>); Prefect refuses C(/) in flow names).
  - With O(work_pool), the pool and its workers (C(POST /api/work_pools/{pool}/workers/filter)),
    each with its status and the seconds since its last heartbeat.
  - With O(variables), the values of those Prefect Variables that exist.
  - Never changes anything; runs the same in check mode.
author:
  - Agency OS
options:
  flows:
    description: Catalog flow names or families (C(prefix/*)) whose deployments to read.
    type: list
    elements: str
    default: []
  work_pool:
    description: Work pool to read, with its workers.
    type: str
  variables:
    description: Names of Prefect Variables to read.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Read the API health and the bulk pool's workers
  prefect_info:
    api_url: http://127.0.0.1:4200/api
    work_pool: bulk-processing
  register: prefect

- name: Check the API is healthy
  ansible.builtin.assert:
    that: prefect.healthy
    fail_msg: "{{ prefect.health_error }}"

- name: Read where abn_bulk_ingestion was cut over to
  prefect_info:
    api_url: "{{ prefect_api_url }}"
    variables: [placement__abn_bulk_ingestion]
    flows: [abn_bulk_ingestion, webhook_handlers/*]
"""

RETURN = r"""
api_url:
  description: The API root that was read.
  returned: always
  type: str
healthy:
  description: Whether GET /api/health answered true.
  returned: always
  type: bool
health_error:
  description: What is wrong when the API is not healthy (null when healthy).
  returned: always
  type: str
deployments:
  description: Deployments of O(flows), each with id, name, flow_name, full_name (flow/deployment),
    catalog_name (the entry of O(flows) it belongs to), work_pool_name, work_queue_name, tags, paused.
  returned: always
  type: list
  elements: dict
work_pool:
  description: The pool O(work_pool) as the API returns it; null when it does not exist or was not asked for.
  returned: always
  type: dict
workers:
  description: Workers of O(work_pool), each with name, status, last_heartbeat_time,
    heartbeat_age_seconds and heartbeat_interval_seconds.
  returned: always
  type: list
  elements: dict
variables:
  description: Values of the variables of O(variables) that exist, by name (a missing one is not a key).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    PrefectAPIError,
    PrefectClient,
    heartbeat_age,
    name_in_path,
    prefect_argument_spec,
)

DEPLOYMENT_KEYS = ("id", "name", "flow_name", "full_name", "work_pool_name", "work_queue_name", "tags", "paused")


def read(module, client):
    p = module.params
    result = {
        "changed": False,
        "api_url": client.api_url,
        "deployments": [],
        "work_pool": None,
        "workers": [],
        "variables": {},
    }
    result["health_error"] = client.health()
    result["healthy"] = result["health_error"] is None
    if not result["healthy"]:
        return result

    for catalog_name in p["flows"]:
        for dep in client.deployments_of(client.flows_matching(catalog_name)):
            result["deployments"].append({**{k: dep.get(k) for k in DEPLOYMENT_KEYS}, "catalog_name": catalog_name})

    if p["work_pool"]:
        pool_path = f"/work_pools/{name_in_path(p['work_pool'])}"
        result["work_pool"] = client.get(pool_path, missing_ok=True)
        if result["work_pool"] is not None:
            workers = client.post(f"{pool_path}/workers/filter", {}) or []
            result["workers"] = [
                {
                    "name": w.get("name"),
                    "status": w.get("status"),
                    "last_heartbeat_time": w.get("last_heartbeat_time"),
                    "heartbeat_age_seconds": heartbeat_age(w.get("last_heartbeat_time")),
                    "heartbeat_interval_seconds": w.get("heartbeat_interval_seconds"),
                }
                for w in workers
            ]

    for name in p["variables"]:
        variable = client.get(f"/variables/name/{name_in_path(name)}", missing_ok=True)
        if variable is not None:
            result["variables"][name] = variable.get("value")
    return result


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            flows={"type": "list", "elements": "str", "default": []},
            work_pool={"type": "str"},
            variables={"type": "list", "elements": "str", "default": []},
        ),
        supports_check_mode=True,
    )
    client = PrefectClient.from_module(module)
    try:
        result = read(module, client)
    except PrefectAPIError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
