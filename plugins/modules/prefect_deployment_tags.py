#!/usr/bin/python
# Agency OS: the tier tags of existing deployments whose definitions live elsewhere (the
# application's realtime flows, families such as webhook_handlers/*). PATCH /api/deployments/{id}
# replaces the whole tag list, so this module reads each deployment's tags, adds the catalog's,
# drops only the tier/infra tags that contradict them, and keeps every other tag.

DOCUMENTATION = r"""
---
module: prefect_deployment_tags
short_description: Give every deployment of catalog flows (or families) their tier's tags
description:
  - For each catalog name, a flow name or a family C(prefix/*) (O(name), or each key of O(flows)),
    finds the Prefect flows (C(POST /api/flows/filter)) and their deployments
    (C(POST /api/deployments/filter)).
  - A family C(prefix/*) is the flow named C(prefix), whose deployments are the family's members
    (Prefect refuses C(/) in flow names, so C(webhook_handlers/stripe) is deployment C(stripe) of
    flow C(webhook_handlers)), plus any flow named C(prefix/<x>) should a server accept one.
  - For each deployment, adds the wanted tags that are missing, removes the tags matching
    O(managed_tags) that are not wanted (they contradict the tier), keeps every other tag in its
    order, and writes the full list with C(PATCH /api/deployments/{id}) only when it changes.
  - Deployments that do not exist are not created; no deployment at all is not an error.
author:
  - Agency OS
options:
  name:
    description:
      - Catalog flow name (V(lead_enrichment_realtime)) or family (V(webhook_handlers/*)). Use with O(tags).
    type: str
  tags:
    description: Tags every deployment of O(name) must carry (the catalog's tags of the flow).
    type: list
    elements: str
  flows:
    description:
      - Several catalog names at once, each mapped to its tags (one call instead of a loop).
        Mutually exclusive with O(name).
    type: dict
  managed_tags:
    description:
      - Glob patterns of the tags that say which tier a deployment is in; one that matches and is
        not in O(tags) is removed. Tags that match none are never touched.
    type: list
    elements: str
    default: ["tier:*", "infra:*", "interruptible"]
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
- name: Tag every webhook handler deployment as realtime
  prefect_deployment_tags:
    api_url: http://127.0.0.1:4200/api
    name: webhook_handlers/*
    tags: ["tier:realtime", "infra:railway"]

- name: Tag the deployments of several catalog flows
  prefect_deployment_tags:
    api_url: http://127.0.0.1:4200/api
    flows:
      lead_enrichment_realtime: ["tier:realtime", "infra:railway"]
      batch_email_verification: ["tier:bulk", "infra:spot", "interruptible"]
"""

RETURN = r"""
deployments:
  description: Every deployment found, with its tags before and after.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Deployment id.
      type: str
    full_name:
      description: flow/deployment.
      type: str
    catalog_name:
      description: The catalog name it matched.
      type: str
    tags_before:
      description: Tags it had.
      type: list
      elements: str
    tags:
      description: Tags it has now (would have, in check mode).
      type: list
      elements: str
    changed:
      description: Whether its tags changed (would change, in check mode).
      type: bool
changed_deployments:
  description: flow/deployment names of the deployments whose tags changed (would change, in check mode).
  returned: always
  type: list
  elements: str
  sample: [webhook_handlers/stripe]
matched_flows:
  description: Names of the Prefect flows that matched, by catalog name.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.prefect_api import (
    DEFAULT_MANAGED_TAGS,
    PrefectAPIError,
    PrefectClient,
    fix_tags,
    prefect_argument_spec,
)


def ensure(module, client, wanted_by_name):
    managed = module.params["managed_tags"]
    report, before, after, matched = [], {}, {}, {}
    for catalog_name, wanted in wanted_by_name.items():
        flows = client.flows_matching(catalog_name)
        matched[catalog_name] = [f["name"] for f in flows]
        for dep in client.deployments_of(flows):
            old = list(dep.get("tags") or [])
            new = fix_tags(old, wanted, managed)
            changed = new != old
            if changed:
                before[dep["full_name"]] = old
                after[dep["full_name"]] = new
                if not module.check_mode:
                    client.patch(f"/deployments/{dep['id']}", {"tags": new})
            report.append(
                {
                    "id": dep["id"],
                    "full_name": dep["full_name"],
                    "catalog_name": catalog_name,
                    "tags_before": old,
                    "tags": new,
                    "changed": changed,
                }
            )
    return {
        "changed": bool(after),
        "deployments": report,
        "changed_deployments": sorted(after),
        "matched_flows": matched,
        "diff": {"before": before, "after": after},
    }


def _wanted(module):
    """{catalog name: tags} from name + tags or from flows, checked."""
    p = module.params
    wanted = {p["name"]: p["tags"]} if p["name"] is not None else dict(p["flows"])
    for name, tags in wanted.items():
        if "*" in name and (not name.endswith("/*") or "*" in name[:-2]):
            module.fail_json(
                msg=f"name {name!r}: a family is written 'prefix/*' (the wildcard is the whole last segment)"
            )
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            module.fail_json(msg=f"tags of {name!r} must be a list of non-empty strings, got {tags!r}")
    return wanted


def main():
    module = AnsibleModule(
        argument_spec=prefect_argument_spec(
            name={"type": "str"},
            tags={"type": "list", "elements": "str"},
            flows={"type": "dict"},
            managed_tags={"type": "list", "elements": "str", "default": list(DEFAULT_MANAGED_TAGS)},
        ),
        mutually_exclusive=[("name", "flows")],
        required_one_of=[("name", "flows")],
        required_together=[("name", "tags")],
        supports_check_mode=True,
    )
    wanted = _wanted(module)
    client = PrefectClient.from_module(module)
    try:
        result = ensure(module, client, wanted)
    except PrefectAPIError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    if not module._diff:  # how a module knows it runs with --diff
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
