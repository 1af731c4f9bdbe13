"""Shared code of the repo's Compute Engine modules: Google credentials and a small REST client.

Credentials: a service account key file when one is given, any other credentials file google-auth
reads (user credentials from `gcloud auth application-default login`, workload identity
federation, service account impersonation), or else Application Default Credentials (the
GOOGLE_APPLICATION_CREDENTIALS file, the gcloud login, the attached service account of a VM).

The google.cloud collection has no Spot provisioning model and hard-codes its API URLs, so the
modules of this repository drive the Compute REST API (v1) directly with a google-auth token.
Everything here is plain Python (no AnsibleModule), so it can be tested and reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from pathlib import Path

try:
    import google.auth
    from google.auth import exceptions as google_auth_exceptions
    from google.auth.transport.requests import AuthorizedSession

    HAS_GOOGLE_AUTH = True
    GOOGLE_AUTH_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the modules with missing_required_lib
    HAS_GOOGLE_AUTH = False
    GOOGLE_AUTH_IMPORT_ERROR = exc

try:
    import requests

    HAS_REQUESTS = True
except ImportError:  # pragma: no cover
    HAS_REQUESTS = False

DEFAULT_API_BASE_URL = "https://compute.googleapis.com/compute/v1"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/compute",)
CREDENTIALS_ENV = "GCP_SERVICE_ACCOUNT_FILE"
# Keys google.oauth2.service_account needs to mint a token (client_email and token_uri are what
# from_service_account_info requires; private_key is what its RSA signer reads).
REQUIRED_KEY_FIELDS = ("client_email", "private_key", "token_uri")
HOW_TO_FIX = (
    "Give credentials of a principal with the Compute Instance Admin (v1) role: without a key file, "
    "Application Default Credentials (`gcloud auth application-default login`, the attached service "
    "account of a VM, or GOOGLE_APPLICATION_CREDENTIALS naming a workload identity federation or "
    "impersonation file); or a service account JSON key (IAM & Admin > Service accounts > Keys) named by "
    "GCP_SERVICE_ACCOUNT_FILE (or gcp_spot_capacity_service_account_file)."
)
# Credentials files google-auth reads besides service account keys, and what they are.
OTHER_FILE_KINDS = {
    "authorized_user": "user credentials (gcloud auth application-default login)",
    "external_account": "workload identity federation",
    "impersonated_service_account": "service account impersonation",
}
# An absolute Compute URL (selfLink, targetLink): scheme, host, API version prefix.
_API_URL_PREFIX = re.compile(r"^https?://[^/]+/compute/(?:v1|beta|alpha)/")
# Status codes worth a retry (same request id, so a retried insert cannot run twice).
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class GcpCredentialsError(Exception):
    """No usable credentials: the file is missing, unreadable or of an unknown kind, or none were found."""


class GcpApiError(Exception):
    """The Compute API answered with an error, or an operation finished with one."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


def read_credentials_file(path):
    """Read and check a credentials file; return its parsed JSON.

    Raises GcpCredentialsError with a message that says what is wrong and what to do. Nothing is
    sent anywhere: this only reads the file.
    """
    if not path:
        raise GcpCredentialsError(f"No credentials file given. {HOW_TO_FIX}")
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise GcpCredentialsError(f"Credentials file {path} does not exist. {HOW_TO_FIX}")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GcpCredentialsError(f"Credentials file {path} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise GcpCredentialsError(f"Credentials file {path} is not valid JSON ({exc}). {HOW_TO_FIX}") from exc
    if not isinstance(info, dict):
        raise GcpCredentialsError(f"Credentials file {path} is not a JSON object. {HOW_TO_FIX}")
    kind = info.get("type")
    if kind not in ("service_account", *OTHER_FILE_KINDS):
        raise GcpCredentialsError(
            f"{path} holds credentials of type {kind!r}, not a service account key nor a credentials file "
            f"google-auth reads ({', '.join(OTHER_FILE_KINDS)}). {HOW_TO_FIX}"
        )
    if kind == "service_account":
        missing = [key for key in REQUIRED_KEY_FIELDS if not info.get(key)]
        if missing:
            raise GcpCredentialsError(f"Service account key file {path} lacks {', '.join(missing)}. {HOW_TO_FIX}")
    return info


def _impersonated(info):
    """The service account a credentials file impersonates, from its impersonation URL ('' if none)."""
    url = info.get("service_account_impersonation_url", "")
    match = re.search(r"serviceAccounts/([^:/]+)", url)
    return match.group(1) if match else ""


def load_credentials(path, scopes=DEFAULT_SCOPES):
    """Credentials, and what they are: {"kind", "principal", "project_id", "token_uri"}.

    With `path`: that file (a service account key, or another credentials file google-auth reads).
    Without: Application Default Credentials. Nothing is sent to Google to build them, except that
    ADC on no file and no gcloud login asks the local metadata server whether this is a GCE VM.
    The token itself is fetched on the first API call.
    """
    if not HAS_GOOGLE_AUTH:  # pragma: no cover - the modules check this first
        raise GcpCredentialsError(f"google-auth is not installed: {GOOGLE_AUTH_IMPORT_ERROR}")
    if not path:
        return _default_credentials(scopes)
    info = read_credentials_file(path)
    kind = info["type"]
    try:
        credentials, _ = google.auth.load_credentials_from_dict(info, scopes=list(scopes))
        credentials = _with_file_token_uri(credentials, info)
    except (ValueError, google_auth_exceptions.GoogleAuthError) as exc:
        what = "The private key in service account key file" if kind == "service_account" else "Credentials file"
        raise GcpCredentialsError(f"{what} {path} cannot be used ({exc}). {HOW_TO_FIX}") from exc
    about = {
        "kind": "service account key file" if kind == "service_account" else OTHER_FILE_KINDS[kind],
        "principal": info.get("client_email") or _impersonated(info),
        "project_id": info.get("project_id") or info.get("quota_project_id") or "",
        "token_uri": info.get("token_uri") or info.get("token_url") or "",
    }
    return credentials, about


def _with_file_token_uri(credentials, info):
    """User credentials whose file names a token endpoint use it (google-auth always uses Google's):
    as a service account key's token_uri is honoured, so is a user login's."""
    if info.get("type") == "authorized_user" and info.get("token_uri") and hasattr(credentials, "with_token_uri"):
        return credentials.with_token_uri(info["token_uri"])
    return credentials


def _default_credentials(scopes):
    try:
        credentials, project_id = google.auth.default(scopes=list(scopes))
    except google_auth_exceptions.DefaultCredentialsError as exc:
        raise GcpCredentialsError(
            f"No credentials file given and no Application Default Credentials found. {HOW_TO_FIX}"
        ) from exc
    source = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if source:
        with contextlib.suppress(OSError, ValueError):  # google.auth.default has just read it
            credentials = _with_file_token_uri(credentials, json.loads(Path(source).read_text(encoding="utf-8")))
    principal = getattr(credentials, "service_account_email", "") or getattr(credentials, "signer_email", "") or ""
    if source:
        kind = f"Application Default Credentials from GOOGLE_APPLICATION_CREDENTIALS ({source})"
    elif type(credentials).__module__.startswith("google.auth.compute_engine"):
        kind = "Application Default Credentials: the VM's attached service account"
    else:
        kind = "Application Default Credentials: the gcloud login (gcloud auth application-default login)"
    return credentials, {
        "kind": kind,
        "principal": principal if principal != "default" else "the VM's default service account",
        "project_id": project_id or "",
        "token_uri": getattr(credentials, "_token_uri", "") or "",
    }


def relative_path(url_or_path):
    """'https://www.googleapis.com/compute/v1/projects/p/...' -> 'projects/p/...' (paths unchanged)."""
    return _API_URL_PREFIX.sub("", str(url_or_path)).strip("/")


def same_reference(desired, existing):
    """Whether two strings name the same thing, allowing the API to expand references to URLs.

    The API stores 'global/networks/default' as 'https://www.googleapis.com/compute/v1/projects/
    <p>/global/networks/default' and a template path as its full URL: those are the same.
    """
    if desired == existing:
        return True
    if not (_API_URL_PREFIX.match(desired) or _API_URL_PREFIX.match(existing)):
        return False
    left, right = relative_path(desired), relative_path(existing)
    return left == right or left.endswith("/" + right) or right.endswith("/" + left)


def _is_empty(value):
    # The API leaves out fields that hold their default (false, 0, "", [] or {}).
    return value is None or value is False or value == 0 or value in ("", [], {})


def differences(desired, existing, path=""):
    """The fields of `desired` that `existing` does not match, as [(path, desired, existing)].

    Only the fields present in `desired` are compared (the API adds id, selfLink, fingerprints
    and defaults); a desired default value matches an absent field; int64 fields may come back
    as strings; references may come back as full URLs.
    """
    if existing is None and _is_empty(desired):
        return []
    if isinstance(desired, dict):
        if not isinstance(existing, dict):
            return [(path, desired, existing)]
        found = []
        for key, value in desired.items():
            found.extend(differences(value, existing.get(key), f"{path}.{key}" if path else key))
        return found
    if isinstance(desired, list):
        if not isinstance(existing, list) or len(existing) != len(desired):
            return [(path, desired, existing)]
        found = []
        for index, (want, have) in enumerate(zip(desired, existing, strict=True)):
            found.extend(differences(want, have, f"{path}[{index}]"))
        return found
    return [] if _same_scalar(desired, existing) else [(path, desired, existing)]


def _same_scalar(desired, existing):
    if existing is None:
        return False
    if isinstance(desired, bool) or isinstance(existing, bool):
        return desired is existing
    if isinstance(desired, int | float) or isinstance(existing, int | float):
        # int64/uint64 fields travel as JSON strings
        return str(desired) == str(existing)
    return isinstance(desired, str) and isinstance(existing, str) and same_reference(desired, existing)


def project_onto(desired, existing):
    """The part of `existing` that `desired` talks about (for a readable --diff)."""
    if isinstance(desired, dict) and isinstance(existing, dict):
        return {key: project_onto(value, existing[key]) for key, value in desired.items() if key in existing}
    if isinstance(desired, list) and isinstance(existing, list):
        return [project_onto(want, have) for want, have in zip(desired, existing, strict=False)] + existing[
            len(desired) :
        ]
    return existing


class ComputeClient:
    """A thin client of the Compute REST API: GET/POST/DELETE by path, and operation waits."""

    def __init__(self, credentials, api_base_url=DEFAULT_API_BASE_URL, timeout=60, retries=3):
        self.base = api_base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = AuthorizedSession(credentials)

    def url(self, path):
        return f"{self.base}/{relative_path(path)}"

    def request(self, method, path, body=None, query=None):
        """Send one request; return the JSON answer, or None for 404 on GET. Raise GcpApiError."""
        params = dict(query or {})
        if method in ("POST", "PATCH", "DELETE"):
            # The API deduplicates mutations by requestId, so a retry after a lost answer is safe.
            params.setdefault("requestId", str(uuid.uuid4()))
        url = self.url(path)
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, url, json=body, params=params or None, timeout=self.timeout)
            except google_auth_exceptions.RefreshError as exc:
                raise GcpApiError(f"Could not get an access token from the service account's token_uri: {exc}") from exc
            except requests.RequestException as exc:
                if attempt < self.retries:
                    time.sleep(2**attempt)
                    continue
                raise GcpApiError(f"{method} {url} failed: {exc}") from exc
            if response.status_code in _RETRY_STATUS and attempt < self.retries:
                time.sleep(2**attempt)
                continue
            break
        if method == "GET" and response.status_code == 404:
            return None
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {"raw": response.text[:2000]}
        if response.status_code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else response.text[:2000]
            raise GcpApiError(
                f"{method} {relative_path(path)}: HTTP {response.status_code}: {message}",
                status=response.status_code,
                body=answer,
            )
        return answer

    def get(self, path):
        return self.request("GET", path)

    def operation_path(self, operation):
        """Where to poll an operation, relative to the API base (never another host)."""
        if operation.get("selfLink"):
            return relative_path(operation["selfLink"])
        raise GcpApiError(f"Operation without selfLink in the API answer: {operation!r}")

    def wait(self, operation, timeout=600):
        """Poll a zonal/regional/global operation until DONE; raise its error if it has one."""
        deadline = time.monotonic() + timeout
        delay = 0.5
        while operation.get("status") != "DONE":
            if time.monotonic() > deadline:
                raise GcpApiError(
                    f"Operation {operation.get('name')} ({operation.get('operationType')} on "
                    f"{relative_path(operation.get('targetLink', '?'))}) not DONE after {timeout} s"
                )
            path = self.operation_path(operation)
            operation = self.get(path)
            if operation is None:
                raise GcpApiError(f"Operation {path} disappeared while waiting for it")
            if operation.get("status") != "DONE":
                time.sleep(delay)
                delay = min(delay * 2, 5)
        errors = (operation.get("error") or {}).get("errors") or []
        if errors:
            detail = "; ".join(f"{err.get('code')}: {err.get('message')}" for err in errors)
            raise GcpApiError(
                f"Operation {operation.get('name')} ({operation.get('operationType')} on "
                f"{relative_path(operation.get('targetLink', '?'))}) failed: {detail}",
                status=operation.get("httpErrorStatusCode"),
                body=operation,
            )
        return operation
