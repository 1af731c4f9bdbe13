#!/usr/bin/python
# Agency OS: a Prefect automation (trigger + actions), kept by name, idempotent against the REST API.
# Prefect lets several automations share a name and adds defaults to what it stores (ids,
# match_related: {}, force: false, sets in any order), so this module finds the automation by
# name and compares only what the task sends.

DOCUMENTATION = r"""
---
module: prefect_automation
short_description: Create, replace or delete a Prefect automation, found by its name
description:
  - Finds the automation by name (C(POST /api/automations/filter)); the name is the key.
  - Creates a missing automation with C(POST /api/automations/), and replaces an existing one with
    C(PUT /api/automations/{id}) only when something the task sends differs from what the server
    holds. Defaults the server adds are no difference; a trigger's C(after), C(expect) and
    C(for_each) compare as sets, numbers by value.
  - Further automations with the same name are deleted (with a warning), so the name stays unique.
author:
  - Agency OS
options:
  name:
    description: Name of the automation (the key it is found by).
    type: str
    required: true
  description:
    description: Description of the automation.
    type: str
    default: ""
  enabled:
    description: Whether the server evaluates the automation.
    type: bool
    default: true
  trigger:
    description: The trigger, as the REST API takes it (e.g. C(type), C(posture), C(expect), C(match),
      C(match_related), C(for_each), C(threshold), C(within)). Required with O(state=present).
    type: dict
  actions:
    description: The actions run when the trigger fires, as the REST API takes them. Required with O(state=present).
    type: list
    elements: dict
  state:
    description: Whether the automation exists.
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
- name: Reschedule crashed interruptible runs
  prefect_automation:
    api_url: http://127.0.0.1:4200/api
    name: "agency-os: reschedule crashed interruptible runs"
    trigger:
      type: event
      posture: Reactive
      expect: [prefect.flow-run.Crashed]
      match:
        prefect.resource.id: prefect.flow-run.*
      match_related:
        prefect.resource.role: tag
        prefect.resource.id: prefect.tag.interruptible
      threshold: 1
      within: 0
    actions:
      - type: change-flow-run-state
        state: SCHEDULED
        name: AwaitingRetry
        force: true
"""

RETURN = r"""
automation:
  description: The automation as the server holds it after the change (what would be sent, in check mode); null when absent.
  returned: always
  type: dict
differences:
  description: Paths of what differed between the task and the server (empty when created or unchanged).
  returned: always
  type: list
  elements: str
  sample: [trigger.match.prefect.run-count]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    differences,
    merged,
    prefect_argument_spec,
    run_ensure,
    sets_sorted,
)

SERVER_FIELDS = ("id", "created", "updated")


def _view(automation):
    """An automation without the fields the server sets, set-valued keys sorted (for diffs)."""
    return sets_sorted({k: v for k, v in (automation or {}).items() if k not in SERVER_FIELDS})


def ensure(module, client):
    p = module.params
    name = p["name"]
    found = client.paged("/automations/filter", {"automations": {"name": {"any_": [name]}}, "sort": "CREATED_DESC"})
    found.reverse()  # oldest first: the one kept is the one that has been there longest

    if p["state"] == "absent":
        if found and not module.check_mode:
            for automation in found:
                client.delete(f"/automations/{automation['id']}")
        return {
            "changed": bool(found),
            "automation": None,
            "differences": [],
            "diff": {"before": _view(found[0]) if found else {}, "after": {}},
        }

    wanted = {
        "name": name,
        "description": p["description"],
        "enabled": p["enabled"],
        "trigger": p["trigger"],
        "actions": p["actions"],
    }
    # Keep the automation that already matches, if one does, else the oldest.
    keep = next((a for a in found if not differences(wanted, a)), found[0] if found else None)
    extra = [a for a in found if a is not keep]
    if extra:
        module.warn(f"{len(extra)} more automation(s) named {name!r}: deleting them so the name stays unique")
        if not module.check_mode:
            for automation in extra:
                client.delete(f"/automations/{automation['id']}")

    if keep is None:
        created = wanted if module.check_mode else client.post("/automations/", wanted)
        _check_round_trip(module, client, wanted, created)
        return {"changed": True, "automation": created, "differences": [], "diff": {"before": {}, "after": wanted}}

    diffs = differences(wanted, keep)
    result = {
        "changed": bool(diffs or extra),
        "automation": keep,
        "differences": diffs,
        "diff": {"before": _view(keep), "after": _view(merged(keep, wanted))} if diffs else {"before": {}, "after": {}},
    }
    if diffs:
        if module.check_mode:
            result["automation"] = {**keep, **wanted}
        else:
            client.put(f"/automations/{keep['id']}", wanted)
            result["automation"] = client.get(f"/automations/{keep['id']}")
            _check_round_trip(module, client, wanted, result["automation"])
    return result


def _check_round_trip(module, client, wanted, stored):
    """Warn when the server stores something other than what was sent (the next run would see a
    difference), rather than report a change on every run without saying why."""
    if module.check_mode or not stored:
        return
    left = differences(wanted, stored)
    if left:
        module.warn(
            f"the server stored automation {wanted['name']!r} differently from what was sent ({', '.join(left)}); "
            "write those fields the way the server returns them, or the next run reports a change again"
        )


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            name={"type": "str", "required": True},
            description={"type": "str", "default": ""},
            enabled={"type": "bool", "default": True},
            trigger={"type": "dict"},
            actions={"type": "list", "elements": "dict"},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        ),
        required_if=[("state", "present", ("trigger", "actions"))],
        supports_check_mode=True,
    )
    run_ensure(module, ensure)


if __name__ == "__main__":
    main()
