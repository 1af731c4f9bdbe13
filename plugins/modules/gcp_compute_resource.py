#!/usr/bin/python
"""Ansible module: ensure a Compute Engine resource exists with the fields you manage (REST API v1)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gcp_compute_resource
author: Agency OS
version_added: "0.1.0"
short_description: Ensure a Compute Engine resource through the Compute REST API
description:
  - Generic create-or-check of one Compute Engine resource (instance template, managed instance group,
    ...) through the Compute REST API v1, with a token minted from a service account key.
  - GETs O(resource). When it is absent (HTTP 404) the module POSTs O(body) to O(collection) (the insert
    method) and waits on the returned zonal, regional or global operation until it is C(DONE),
    failing with the operation's error if it has one.
  - When the resource exists, the fields present in O(body) are compared with it (fields the API adds,
    such as C(id), C(selfLink) or fingerprints, are ignored; a reference may come back as a full URL).
    A difference covered by an entry of O(updates) runs that custom method (for example
    C(setInstanceTemplate) or C(resize)); any other difference fails, because the field cannot be
    changed in place (instance templates are immutable, so give the new body a new name).
  - Exists because the google.cloud collection knows no Spot provisioning model or termination
    action and hard-codes the API URLs (no endpoint override).
  - Supports check mode (GETs only) and diff mode.
options:
  resource:
    description:
      - Path of the resource, relative to O(api_base_url) (a full C(https://...compute/v1/...) URL also
        works), for example C(projects/my-project/global/instanceTemplates/bulk-0a1b2c3d4e).
    type: str
    required: true
  collection:
    description:
      - Path of the collection the insert is POSTed to. Defaults to O(resource) without its last segment.
    type: str
  body:
    description:
      - The desired resource. Sent as is on insert; its fields are what the module compares and manages.
      - Required when O(state=present).
    type: dict
  updates:
    description:
      - How to reconcile fields that may change in place. Each entry runs one custom method of the
        resource when any of its O(updates[].fields) differs.
    type: list
    elements: dict
    default: []
    suboptions:
      fields:
        description: Dotted paths in O(body) this method changes (C(instanceTemplate), C(targetSize)).
        type: list
        elements: str
        required: true
      method:
        description: Custom method POSTed to C(<resource>/<method>), such as C(setInstanceTemplate).
        type: str
        required: true
      body:
        description: JSON body of the method request.
        type: dict
      query:
        description: Query parameters of the method request (C(resize) takes C(size)).
        type: dict
  state:
    description:
      - V(present) creates the resource when missing; V(absent) deletes it when present.
    type: str
    choices: [present, absent]
    default: present
  api_base_url:
    description:
      - Base URL of the Compute API; tests point it at a local fake.
    type: str
    default: https://compute.googleapis.com/compute/v1
  service_account_file:
    description:
      - Path of a service account JSON key (its C(token_uri) is where the access token comes from), or of
        another credentials file google-auth reads (user credentials, workload identity federation,
        impersonation). Empty for Application Default Credentials.
      - A missing, unreadable or malformed file, or no credentials at all, fails before any request is sent.
      - Falls back to the environment variable E(GCP_SERVICE_ACCOUNT_FILE).
    type: path
  scopes:
    description: OAuth2 scopes of the access token.
    type: list
    elements: str
    default: [https://www.googleapis.com/auth/compute]
  wait_timeout:
    description: Seconds to wait for each operation to be C(DONE).
    type: int
    default: 600
requirements:
  - google-auth
  - requests
notes:
  - Only the fields present in O(body) are managed. Within them, a desired default value (C(false),
    C(0), empty) matches a field the API leaves out.
  - Mutating requests carry a C(requestId), so a retry after a lost answer cannot act twice.
"""

EXAMPLES = r"""
- name: Create a Spot VM instance template
  gcp_compute_resource:
    resource: projects/my-project/global/instanceTemplates/bulk-0a1b2c3d4e
    service_account_file: /etc/agency-os/gcp-key.json
    body:
      name: bulk-0a1b2c3d4e
      properties:
        machineType: e2-small
        scheduling:
          provisioningModel: SPOT
          instanceTerminationAction: DELETE
          automaticRestart: false
          onHostMaintenance: TERMINATE
        disks:
          - boot: true
            autoDelete: true
            initializeParams:
              sourceImage: projects/debian-cloud/global/images/family/debian-12
        networkInterfaces:
          - network: global/networks/default

- name: Create the managed instance group, or point it at the template and size it
  gcp_compute_resource:
    resource: projects/my-project/zones/australia-southeast1-a/instanceGroupManagers/bulk
    body:
      name: bulk
      baseInstanceName: bulk
      instanceTemplate: projects/my-project/global/instanceTemplates/bulk-0a1b2c3d4e
      targetSize: 1
    updates:
      - fields: [instanceTemplate]
        method: setInstanceTemplate
        body:
          instanceTemplate: projects/my-project/global/instanceTemplates/bulk-0a1b2c3d4e
      - fields: [targetSize]
        method: resize
        query:
          size: 1
"""

RETURN = r"""
resource:
  description:
    - The resource as the API returns it after the change.
    - In check mode, the desired body when the resource would be created.
  returned: always
  type: dict
created:
  description: Whether the resource was (or, in check mode, would be) created.
  returned: always
  type: bool
deleted:
  description: Whether the resource was (or would be) deleted.
  returned: always
  type: bool
updated:
  description: Custom methods that were (or would be) run to reconcile fields.
  returned: always
  type: list
  elements: str
differences:
  description: Dotted paths of the managed fields that differed from the existing resource.
  returned: always
  type: list
  elements: str
operations:
  description: Names of the operations that were waited for.
  returned: always
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.gcp_compute import (
    CREDENTIALS_ENV,
    DEFAULT_API_BASE_URL,
    DEFAULT_SCOPES,
    GOOGLE_AUTH_IMPORT_ERROR,
    HAS_GOOGLE_AUTH,
    HAS_REQUESTS,
    ComputeClient,
    GcpApiError,
    GcpCredentialsError,
    differences,
    load_credentials,
    project_onto,
    relative_path,
)


def _covers(field, path):
    return path == field or path.startswith((field + ".", field + "["))


def _present(module, client, resource, existing, result):
    params = module.params
    body = params["body"]
    collection = relative_path(params["collection"] or resource.rsplit("/", 1)[0])
    if existing is None:
        result.update(changed=True, created=True, resource=body)
        result["diff"] = {"before": {}, "after": body}
        if module.check_mode:
            return
        operation = client.wait(client.request("POST", collection, body=body), params["wait_timeout"])
        result["operations"].append(operation.get("name"))
        result["resource"] = client.get(resource) or body
        return

    found = differences(body, existing)
    result["differences"] = [path for path, _, _ in found]
    result["resource"] = existing
    if not found:
        return
    updates = params["updates"] or []
    uncovered = [item for item in found if not any(_covers(f, item[0]) for u in updates for f in u["fields"])]
    if uncovered:
        detail = "; ".join(f"{path}: existing {have!r}, desired {want!r}" for path, want, have in uncovered)
        module.fail_json(
            msg=(
                f"{resource} exists but differs in fields that cannot be changed in place ({detail}). "
                "Give the desired resource a new name (instance templates are immutable) or delete it."
            ),
            **result,
        )
    pending = [u for u in updates if any(_covers(f, path) for f in u["fields"] for path, _, _ in found)]
    result.update(changed=True, updated=[u["method"] for u in pending])
    result["diff"] = {"before": project_onto(body, existing), "after": body}
    if module.check_mode:
        return
    for update in pending:
        operation = client.request(
            "POST", f"{resource}/{update['method']}", body=update.get("body"), query=update.get("query")
        )
        operation = client.wait(operation, params["wait_timeout"])
        result["operations"].append(operation.get("name"))
    result["resource"] = client.get(resource) or existing


def _absent(module, client, resource, existing, result):
    if existing is None:
        return
    result.update(changed=True, deleted=True, resource=existing)
    result["diff"] = {"before": existing, "after": {}}
    if module.check_mode:
        return
    operation = client.wait(client.request("DELETE", resource), module.params["wait_timeout"])
    result["operations"].append(operation.get("name"))


def main():
    module = AnsibleModule(
        argument_spec={
            "resource": {"type": "str", "required": True},
            "collection": {"type": "str"},
            "body": {"type": "dict"},
            "updates": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "fields": {"type": "list", "elements": "str", "required": True},
                    "method": {"type": "str", "required": True},
                    "body": {"type": "dict"},
                    "query": {"type": "dict"},
                },
            },
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "api_base_url": {"type": "str", "default": DEFAULT_API_BASE_URL},
            "service_account_file": {"type": "path", "fallback": (env_fallback, [CREDENTIALS_ENV])},
            "scopes": {"type": "list", "elements": "str", "default": list(DEFAULT_SCOPES)},
            "wait_timeout": {"type": "int", "default": 600},
        },
        required_if=[("state", "present", ["body"])],
        supports_check_mode=True,
    )
    if not HAS_GOOGLE_AUTH:
        module.fail_json(msg=missing_required_lib("google-auth"), exception=str(GOOGLE_AUTH_IMPORT_ERROR))
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"))

    resource = relative_path(module.params["resource"])
    body = module.params["body"] or {}
    if "name" in body and body["name"] != resource.rsplit("/", 1)[-1]:
        module.fail_json(msg=f"body.name {body['name']!r} does not match the last segment of {resource}")

    result = {
        "changed": False,
        "created": False,
        "deleted": False,
        "updated": [],
        "differences": [],
        "operations": [],
        "resource": {},
    }
    # Credentials first: a bad key file fails here, before any request is sent.
    try:
        credentials, _ = load_credentials(module.params["service_account_file"], module.params["scopes"])
    except GcpCredentialsError as exc:
        module.fail_json(msg=str(exc), **result)

    client = ComputeClient(credentials, module.params["api_base_url"])
    try:
        existing = client.get(resource)
        if module.params["state"] == "present":
            _present(module, client, resource, existing, result)
        else:
            _absent(module, client, resource, existing, result)
    except GcpApiError as exc:
        module.fail_json(msg=str(exc), api_error=exc.body, exception=traceback.format_exc(), **result)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
