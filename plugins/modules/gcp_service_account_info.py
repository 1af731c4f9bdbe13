#!/usr/bin/python
"""Ansible module: check a GCP service account key file without sending any request."""

from __future__ import annotations

DOCUMENTATION = r"""
module: gcp_service_account_info
author: Agency OS
version_added: "0.1.0"
short_description: Find the GCP credentials the Compute modules will use, and check them without using them
description:
  - With a file, reads it and checks that google-auth can build credentials from it - a service
    account JSON key (C(type) service_account, C(client_email), C(private_key) that parses, C(token_uri))
    or another credentials file google-auth reads (user credentials from
    C(gcloud auth application-default login), workload identity federation, service account impersonation).
  - Without a file, finds Application Default Credentials (E(GOOGLE_APPLICATION_CREDENTIALS), the gcloud
    login, the attached service account of a GCE VM - the only case that asks the local metadata server).
  - Requests no token, so a preflight can use it before anything talks to the cloud.
  - Does not fail on missing or bad credentials; it returns RV(valid=false) and a RV(problem) that says
    what to do, so that the caller asserts with its own message.
options:
  service_account_file:
    description:
      - Path of a credentials file (service account key or another kind google-auth reads); empty for
        Application Default Credentials.
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
  description: Whether credentials were found and can be built.
  returned: always
  type: bool
problem:
  description: What is wrong and how to fix it (empty when valid).
  returned: always
  type: str
kind:
  description: Which credentials were found (a service account key file, user credentials, workload identity
    federation, impersonation, or which Application Default Credentials).
  returned: when valid
  type: str
client_email:
  description: The service account the credentials act as, when they say so (empty for user credentials).
  returned: when valid
  type: str
project_id:
  description: Project the credentials name (the key file's, or the ADC project), when known.
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
        _, about = load_credentials(module.params["service_account_file"], DEFAULT_SCOPES)
    except GcpCredentialsError as exc:
        module.exit_json(changed=False, valid=False, problem=str(exc))
    module.exit_json(
        changed=False,
        valid=True,
        problem="",
        kind=about["kind"],
        client_email=about["principal"],
        project_id=about["project_id"],
        token_uri=about["token_uri"],
    )


if __name__ == "__main__":
    main()
