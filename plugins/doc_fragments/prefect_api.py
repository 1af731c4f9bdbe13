"""Options every Prefect REST module of this repository takes (extends_documentation_fragment: prefect_api)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Prefect API root, e.g. V(http://127.0.0.1:4200/api).
      - Defaults to E(PREFECT_API_URL), else to C(PREFECT_API_URL) of the active Prefect profile.
      - The task fails when none of them is set.
    type: str
  api_key:
    description:
      - Prefect API key, sent as a bearer token (Prefect Cloud); empty for a server without authentication.
      - Defaults to E(PREFECT_API_KEY), else to C(PREFECT_API_KEY) of the active Prefect profile.
    type: str
  api_auth_string:
    description:
      - The C(user:password) of a self-hosted Prefect server started with E(PREFECT_SERVER_API_AUTH_STRING),
        sent as HTTP basic auth. When set it is sent instead of O(api_key), as Prefect's own client does.
      - Defaults to E(PREFECT_API_AUTH_STRING), else to C(PREFECT_API_AUTH_STRING) of the active Prefect profile.
    type: str
  timeout:
    description: Seconds to wait for each API answer.
    type: float
    default: 30
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
notes:
  - Each of O(api_url), O(api_key) and O(api_auth_string) comes from the first place that sets it (an empty
    value counts as unset) - the task, the environment, the active Prefect profile - as with Prefect's own client.
    The profiles file is E(PREFECT_PROFILES_PATH), else C($PREFECT_HOME/profiles.toml) (E(PREFECT_HOME) defaults
    to C(~/.prefect)); the active profile is E(PREFECT_PROFILE), else the file's C(active) one. Reading it needs
    Python 3.11 (C(tomllib)) or the C(tomli) package.
  - State-changing requests (C(POST), C(PUT), C(PATCH), C(DELETE)) to a server started with
    E(PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true) carry a CSRF token, fetched with C(GET /api/csrf-token?client=<id>)
    before the first such request and again when it expires or the server calls it invalid; a server without CSRF
    protection answers that request with HTTP 422 and no token is sent.
"""
