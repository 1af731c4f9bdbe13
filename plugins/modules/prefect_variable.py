#!/usr/bin/python
# Agency OS: a Prefect Variable (a named JSON value on the server), idempotent against the REST API.
# The cutover records where a flow runs in one (agency_os_spot.catalog placement_key), so that the
# deployment role never moves a flow back.

DOCUMENTATION = r"""
---
module: prefect_variable
short_description: Create, update or delete a Prefect Variable through the REST API
description:
  - Reads the variable with C(GET /api/variables/name/{name}); creates a missing one with
    C(POST /api/variables/) and changes one whose value (or tags) differ with
    C(PATCH /api/variables/name/{name}).
author:
  - Agency OS
options:
  name:
    description: Name of the variable (lower-case letters, digits, C(_) and C(-)).
    type: str
    required: true
  value:
    description: The value, any JSON (a mapping, a list, a string, a number, a boolean). Required with O(state=present).
    type: raw
  tags:
    description: Tags of the variable. Left as they are when omitted.
    type: list
    elements: str
  state:
    description: Whether the variable exists.
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
extends_documentation_fragment:
  - prefect_api
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Record that abn_bulk_ingestion now runs on spot
  prefect_variable:
    api_url: http://127.0.0.1:4200/api
    name: placement__abn_bulk_ingestion
    value: {work_pool: bulk-processing, work_queue: bulk}
"""

RETURN = r"""
variable:
  description: The variable as the API returns it after the change (what would be sent, in check mode); null when absent.
  returned: always
  type: dict
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    name_in_path,
    prefect_argument_spec,
    run_ensure,
)

VALID_NAME = re.compile(r"^[a-z0-9_-]{1,255}$")


def ensure(module, client):
    p = module.params
    name = p["name"]
    path = f"/variables/name/{name_in_path(name)}"
    current = client.get(path, missing_ok=True)

    if p["state"] == "absent":
        if current is not None and not module.check_mode:
            client.delete(path)
        before = {"name": name, "value": current.get("value")} if current else {}
        return {"changed": current is not None, "variable": None, "diff": {"before": before, "after": {}}}

    wanted = {"value": p["value"]}
    if p["tags"] is not None:
        wanted["tags"] = p["tags"]
    if current is None:
        body = {"name": name, **wanted}
        created = body if module.check_mode else client.post("/variables/", body)
        return {"changed": True, "variable": created, "diff": {"before": {}, "after": body}}

    update = {}
    if current.get("value") != p["value"] or type(current.get("value")) is not type(p["value"]):
        update["value"] = p["value"]
    if "tags" in wanted and sorted(set(wanted["tags"])) != sorted(set(current.get("tags") or [])):
        update["tags"] = wanted["tags"]
    diff = {"before": {"name": name, **{k: current.get(k) for k in update}}, "after": {"name": name, **update}}
    if update and not module.check_mode:
        client.patch(path, update)
        current = client.get(path)
    elif update:
        current = {**current, **update}
    return {"changed": bool(update), "variable": current, "diff": diff}


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            name={"type": "str", "required": True},
            value={"type": "raw"},
            tags={"type": "list", "elements": "str"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        ),
        required_if=[("state", "present", ("value",), True)],
        supports_check_mode=True,
    )
    if not VALID_NAME.match(module.params["name"]):
        module.fail_json(
            msg=f"variable name {module.params['name']!r}: Prefect allows lower-case letters, digits, '_' and '-' "
            "(at most 255)"
        )
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
