"""Options every Prefect REST module of this repository takes (extends_documentation_fragment: prefect_api)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description: Prefect API root, e.g. V(http://127.0.0.1:4200/api). Defaults to E(PREFECT_API_URL).
    type: str
    required: true
  api_key:
    description: Prefect API key, sent as a bearer token; empty for a server without authentication.
      Defaults to E(PREFECT_API_KEY).
    type: str
  timeout:
    description: Seconds to wait for each API answer.
    type: float
    default: 30
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
"""
