#!/usr/bin/python
"""Ansible module: check a GCP service account key file without sending any request."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gcp_service_account_info
author: Agency OS
version_added: "0.1.0"
short_description: Check a GCP service account key file, offline
description:
  - Reads a service account JSON key and checks that google-auth can build credentials from it
    (JSON syntax, C(type) service_account, C(client_email), C(private_key), C(token_uri), a private key
    that parses). Sends no request, so a preflight can use it before anything talks to the cloud.
  - Does not fail on a bad file; it returns RV(valid=false) and a RV(problem) that says what to do,
    so that the caller asserts with its own message.
options:
  service_account_file:
    description:
      - Path of the service account JSON key.
      - Falls back to the environment variable E(GCP_SERVICE_ACCOUNT_FILE).
    type: path
requirements:
  - google-auth
"""

EXAMPLES = r"""
- name: Check the service account key
  gcp_service_account_info:
    service_account_file: /etc/agency-os/gcp-key.json
  register: key

- name: Stop unless the key is usable
  ansible.builtin.assert:
    that: key.valid
    fail_msg: "{{ key.problem }}"
"""

RETURN = r"""
valid:
  description: Whether credentials can be built from the file.
  returned: always
  type: bool
problem:
  description: What is wrong with the file and how to fix it (empty when valid).
  returned: always
  type: str
client_email:
  description: The service account the key belongs to.
  returned: when valid
  type: str
project_id:
  description: Project the service account belongs to (as written in the key file).
  returned: when valid
  type: str
token_uri:
  description: Where the access token will be requested.
  returned: when valid
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible.module_utils.gcp_compute import (
    CREDENTIALS_ENV,
    DEFAULT_SCOPES,
    GOOGLE_AUTH_IMPORT_ERROR,
    HAS_GOOGLE_AUTH,
    GcpCredentialsError,
    load_credentials,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "service_account_file": {"type": "path", "fallback": (env_fallback, [CREDENTIALS_ENV])},
        },
        supports_check_mode=True,
    )
    if not HAS_GOOGLE_AUTH:
        module.fail_json(msg=missing_required_lib("google-auth"), exception=str(GOOGLE_AUTH_IMPORT_ERROR))
    try:
        _, info = load_credentials(module.params["service_account_file"], DEFAULT_SCOPES)
    except GcpCredentialsError as exc:
        module.exit_json(changed=False, valid=False, problem=str(exc))
    module.exit_json(
        changed=False,
        valid=True,
        problem="",
        client_email=info["client_email"],
        project_id=info.get("project_id", ""),
        token_uri=info["token_uri"],
    )


if __name__ == "__main__":
    main()
