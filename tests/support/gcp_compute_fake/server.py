"""A local fake of the Compute Engine REST API v1 and of Google's OAuth2 token endpoint.

It behaves like the real API for what roles/gcp_spot_capacity uses:

* ``POST /token`` takes a service-account JWT grant (RS256, ``aud`` = this endpoint, signature
  checked against the keys the server trusts), or the refresh-token grant of user credentials
  (client id, secret and refresh token; the token "revoked" is refused), and issues a bearer
  token; every API call needs one (HTTP 401 otherwise).
* Requests are routed with the official discovery document (``compute.v1.json``): unknown query
  parameters and request bodies that do not fit the schema (unknown field, wrong type, enum value
  not allowed, missing required field) are rejected with HTTP 400 and a Google-style error body,
  like the real API does. Output-only fields are ignored, as the real API ignores them.
* ``instanceTemplates`` and ``instanceGroupManagers``: get/list/insert/delete, plus
  ``setInstanceTemplate`` and ``resize``. A mutation answers with an Operation (``RUNNING``); the
  change lands when the operation is polled (``GET``/``wait``) or shortly after, and
  an operation that fails carries ``error.errors`` (e.g. a MIG pointed at a template that does
  not exist). Stored resources get the server-side fields: ``id``, ``kind``, ``selfLink``,
  ``creationTimestamp``, fingerprints, references expanded to full URLs. Self links use the
  public host (https://www.googleapis.com/compute/v1/...) exactly like the real API, so a client
  that follows them instead of its configured endpoint would be caught.
* ``requestId`` deduplicates mutations, as on the real API.

Introspection (not part of the real API, never recorded): ``GET /_fake/health``,
``GET /_fake/requests`` (every request, in order), ``GET /_fake/resources``, ``POST /_fake/reset``.

Run it with ``python -m tests.support.gcp_compute_fake`` (from the repository root); see ``__main__.py``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from .discovery import DiscoveryDocument, load_document

PUBLIC_BASE = "https://www.googleapis.com/compute/v1"
API_PREFIX = "/compute/v1/"
OAUTH_PATH = "/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_GRANT = "refresh_token"
GOOGLE_OAUTH_AUDIENCE = "https://oauth2.googleapis.com/token"
NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LOOPBACK = ("127.0.0.1", "localhost", "::1")

_ids = itertools.count(int(time.time() * 1000) % 10**12 * 1000)


class ApiError(Exception):
    """An error answer of the API (HTTP status, reason, message)."""

    def __init__(self, code: int, message: str, reason: str = "invalid", op_code: str = "INVALID") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.op_code = op_code

    def body(self) -> dict:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


def _new_id() -> str:
    return str(next(_ids))


def _fingerprint(value: object) -> str:
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def public_key_of(service_account_file: Path):
    """(private_key_id, public key) of a service account JSON key file."""
    info = json.loads(Path(service_account_file).read_text(encoding="utf-8"))
    private_key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    return info.get("private_key_id", ""), private_key.public_key()


class FakeCompute:
    """The state and behaviour of the fake API (transport-independent)."""

    def __init__(
        self,
        doc: DiscoveryDocument | None = None,
        trusted_keys: dict | None = None,
        op_delay: float = 0.5,
    ) -> None:
        self.doc = doc or load_document()
        self.trusted_keys = dict(trusted_keys or {})
        # Refresh tokens of user credentials the fake refuses, as Google refuses a revoked login.
        self.revoked_refresh_tokens = {"revoked"}
        self.op_delay = op_delay
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.resources: dict[str, dict] = {}
            self.operations: dict[str, dict] = {}
            self._pending: dict[str, tuple[float, object]] = {}
            self._request_ids: dict[str, str] = {}
            self.requests: list[dict] = []
            self.tokens: dict[str, str] = {}

    # --- transport-facing entry points -----------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict, body: bytes, host: str) -> tuple[int, object]:
        split = urlsplit(raw_path)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        if path.startswith("/_fake/"):
            return self._introspect(method, path)
        record = {
            "method": method,
            "path": path,
            "query": {k: v[-1] for k, v in query.items()},
            "method_id": None,
            "body": None,
        }
        with self.lock:
            try:
                if path == OAUTH_PATH and method == "POST":
                    record["method_id"] = "oauth2.token"
                    status, answer = self._token(body, f"http://{host}{OAUTH_PATH}", record)
                elif path.startswith(API_PREFIX):
                    status, answer = self._api(method, path[len(API_PREFIX) :], record, headers, body)
                else:
                    raise ApiError(404, f"The requested URL {path} was not found on this server.", "notFound")
            except ApiError as exc:
                status, answer = exc.code, exc.body()
            record.update(seq=len(self.requests) + 1, status=status, time=time.time())
            self.requests.append(record)
            return status, answer

    def _introspect(self, method: str, path: str) -> tuple[int, object]:
        with self.lock:
            if method == "GET" and path == "/_fake/health":
                return 200, {"ok": True, "discovery_revision": self.doc.revision}
            if method == "GET" and path == "/_fake/requests":
                return 200, copy.deepcopy(self.requests)
            if method == "GET" and path == "/_fake/resources":
                self._tick()
                return 200, copy.deepcopy(self.resources)
            if method == "POST" and path == "/_fake/reset":
                self.reset()
                return 200, {"ok": True}
        return 404, {"error": {"code": 404, "message": f"no introspection endpoint {method} {path}"}}

    # --- OAuth2 token endpoint ---------------------------------------------------------------
    def _token(self, body: bytes, own_url: str, record: dict) -> tuple[int, dict]:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        record["body"] = {"grant_type": form.get("grant_type")}
        if form.get("grant_type") == REFRESH_GRANT:  # user credentials (gcloud auth application-default login)
            if not all(form.get(k) for k in ("client_id", "client_secret", "refresh_token")):
                return 400, {"error": "invalid_request", "error_description": "Missing required parameter."}
            if form["refresh_token"] in self.revoked_refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            token = "ya29.fake-" + secrets.token_urlsafe(24)
            self.tokens[token] = record["client"] = f"user:{form['client_id']}"
            return 200, {
                "access_token": token,
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": form.get("scope", ""),
            }
        if form.get("grant_type") != JWT_GRANT:
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        try:
            claims = self._verify_assertion(form.get("assertion", ""), own_url)
        except ValueError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = claims["iss"]
        record["client"] = claims["iss"]
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def _verify_assertion(self, assertion: str, own_url: str) -> dict:
        """The claims of a service-account JWT grant; ValueError says why it is refused."""
        parts = assertion.split(".")
        if len(parts) != 3:
            raise ValueError("Invalid JWT: not a signed JWT.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError as exc:
            raise ValueError("Invalid JWT: not base64url JSON.") from exc
        if header.get("alg") != "RS256":
            raise ValueError(f"Invalid JWT: alg {header.get('alg')!r}, expected RS256.")
        # google-auth signs for Google's token endpoint whatever token_uri says; that is the
        # audience the real endpoint checks.
        if claims.get("aud") not in (GOOGLE_OAUTH_AUDIENCE, own_url):
            raise ValueError(f"Invalid JWT: aud {claims.get('aud')!r} is not {GOOGLE_OAUTH_AUDIENCE}.")
        if not claims.get("iss") or not claims.get("scope"):
            raise ValueError("Invalid JWT: iss and scope are required.")
        if not (claims.get("iat", 0) - 300 <= time.time() <= claims.get("exp", 0)):
            raise ValueError("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.")
        if self.trusted_keys:
            key = self.trusted_keys.get(header.get("kid"))
            if key is None:
                raise ValueError(f"Invalid JWT Signature: unknown key id {header.get('kid')!r}.")
            try:
                key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature as exc:
                raise ValueError("Invalid JWT Signature.") from exc
        return claims

    # --- Compute API -------------------------------------------------------------------------
    def _api(self, method: str, path: str, record: dict, headers: dict, body: bytes) -> tuple[int, object]:
        auth = headers.get("authorization", "")
        user = self.tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if user is None:
            raise ApiError(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
                "required",
            )
        record["client"] = user
        routed = self.doc.route(method, path)
        if routed is None:
            raise ApiError(404, f"The requested URL /compute/v1/{path} was not found on this server.", "notFound")
        api_method, params = routed
        record["method_id"] = api_method.id
        payload = self._validated_request(api_method, record, body)
        self._tick()
        request_id = record["query"].get("requestId")
        if request_id and request_id in self._request_ids:
            return 200, self.operations[self._request_ids[request_id]]
        handler = getattr(self, "_" + api_method.id.replace(".", "_"), None)
        if handler is None:
            raise ApiError(501, f"fake compute: {api_method.id} is not implemented", "notImplemented")
        status, answer = handler(params, record["query"], payload, user)
        if request_id and isinstance(answer, dict) and answer.get("kind") == "compute#operation":
            self._request_ids[request_id] = relative(answer["selfLink"])
        return status, answer

    def _validated_request(self, api_method, record: dict, body: bytes) -> dict | None:
        """The JSON body of a request, refused (HTTP 400) the way the API refuses what does not fit."""
        known = set(api_method.parameters) | set(self.doc.doc.get("parameters", {}))
        for name in record["query"]:
            if name not in known:
                raise ApiError(
                    400, f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter.'
                )
        if not api_method.request_schema:
            return None
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}", "parseError") from exc
        record["body"] = payload
        problems = self.doc.validate(api_method.request_schema, payload, api_method.id, allow_output_only=True)
        if not problems:
            return payload
        first = problems[0]
        where, name = first.path.rsplit(".", 1)
        if first.kind == "unknown-field":
            message = f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
        elif first.kind == "required":
            message = f"Required field '{first.path}' not specified"
        else:
            message = f"Invalid value at '{first.path}': {first.message}"
        raise ApiError(400, message, "required" if first.kind == "required" else "invalid")

    # operations ---------------------------------------------------------------------------------
    def _operation(self, op_type: str, target: str, user: str, scope: str, apply) -> tuple[int, dict]:
        """Start an operation on `target` (relative path); `apply` runs when it completes."""
        name = f"operation-{int(time.time() * 1000)}-{secrets.token_hex(6)}"
        project = target.split("/")[1]
        op_path = f"projects/{project}/{scope}/operations/{name}"
        target_resource = self.resources.get(target)
        op = {
            "kind": "compute#operation",
            "id": _new_id(),
            "name": name,
            "operationType": op_type,
            "targetLink": f"{PUBLIC_BASE}/{target}",
            "status": "RUNNING",
            "user": user,
            "progress": 0,
            "insertTime": _now(),
            "startTime": _now(),
            "selfLink": f"{PUBLIC_BASE}/{op_path}",
        }
        if target_resource:
            op["targetId"] = target_resource["id"]
        if scope.startswith("zones/"):
            op["zone"] = f"{PUBLIC_BASE}/projects/{project}/{scope}"
        self.operations[op_path] = op
        self._pending[op_path] = (time.monotonic() + self.op_delay, apply)
        return 200, copy.deepcopy(op)

    def _complete(self, op_path: str) -> None:
        _, apply = self._pending.pop(op_path)
        op = self.operations[op_path]
        try:
            target_id = apply()
            if target_id:
                op["targetId"] = target_id
        except ApiError as exc:
            op["error"] = {"errors": [{"code": exc.op_code, "message": exc.message}]}
            op["httpErrorStatusCode"] = exc.code
            op["httpErrorMessage"] = {400: "BAD REQUEST", 404: "NOT FOUND", 409: "CONFLICT"}.get(exc.code, "ERROR")
        op.update(status="DONE", progress=100, endTime=_now())

    def _tick(self) -> None:
        now = time.monotonic()
        for op_path, (due, _) in list(self._pending.items()):
            if due <= now:
                self._complete(op_path)

    def _get_op(self, op_path: str) -> tuple[int, dict]:
        if op_path not in self.operations:
            raise ApiError(404, f"The resource '{op_path}' was not found", "notFound")
        if op_path in self._pending:
            self._complete(op_path)
        return 200, copy.deepcopy(self.operations[op_path])

    def _compute_globalOperations_get(self, p, q, body, user):
        return self._get_op(f"projects/{p['project']}/global/operations/{p['operation']}")

    _compute_globalOperations_wait = _compute_globalOperations_get

    def _compute_zoneOperations_get(self, p, q, body, user):
        return self._get_op(f"projects/{p['project']}/zones/{p['zone']}/operations/{p['operation']}")

    _compute_zoneOperations_wait = _compute_zoneOperations_get

    # helpers ---------------------------------------------------------------------------------
    def _get(self, target: str) -> tuple[int, dict]:
        if target not in self.resources:
            raise ApiError(404, f"The resource '{target}' was not found", "notFound")
        return 200, copy.deepcopy(self.resources[target])

    def _list(self, prefix: str, kind: str) -> tuple[int, dict]:
        items = [copy.deepcopy(r) for k, r in sorted(self.resources.items()) if k.rsplit("/", 1)[0] == prefix]
        return 200, {"kind": kind, "id": prefix, "items": items, "selfLink": f"{PUBLIC_BASE}/{prefix}"}

    @staticmethod
    def _check_name(name: object) -> None:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.name': '{name}'. "
                "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
            )

    def _conflict_if_exists(self, target: str) -> None:
        if target in self.resources or any(
            self.operations[op]["targetLink"].endswith("/" + target) for op in self._pending
        ):
            raise ApiError(409, f"The resource '{target}' already exists", "alreadyExists", "RESOURCE_ALREADY_EXISTS")

    def _template_path(self, project: str, reference: str) -> str:
        ref = relative(reference)
        if ref.startswith("global/"):
            ref = f"projects/{project}/{ref}"
        return ref

    # instance templates -----------------------------------------------------------------------
    def _compute_instanceTemplates_get(self, p, q, body, user):
        return self._get(f"projects/{p['project']}/global/instanceTemplates/{p['instanceTemplate']}")

    def _compute_instanceTemplates_list(self, p, q, body, user):
        return self._list(f"projects/{p['project']}/global/instanceTemplates", "compute#instanceTemplateList")

    def _compute_instanceTemplates_insert(self, p, q, body, user):
        project = p["project"]
        self._check_name(body.get("name"))
        check_scheduling((body.get("properties") or {}).get("scheduling") or {})
        target = f"projects/{project}/global/instanceTemplates/{body['name']}"
        self._conflict_if_exists(target)
        stored = strip_output_only(self.doc, "InstanceTemplate", copy.deepcopy(body))

        def apply():
            properties = stored.setdefault("properties", {})
            for index, nic in enumerate(properties.get("networkInterfaces", [])):
                nic["kind"] = "compute#networkInterface"
                nic["name"] = f"nic{index}"
                if "network" in nic:
                    nic["network"] = expand(project, nic["network"], "global/networks")
                if "subnetwork" in nic:
                    nic["subnetwork"] = expand(project, nic["subnetwork"], None)
                for access in nic.get("accessConfigs", []):
                    access["kind"] = "compute#accessConfig"
            for index, disk in enumerate(properties.get("disks", [])):
                disk.update(kind="compute#attachedDisk", index=index)
                disk.setdefault("mode", "READ_WRITE")
                disk.setdefault("type", "PERSISTENT")
            if "metadata" in properties:
                properties["metadata"].update(kind="compute#metadata", fingerprint=_fingerprint(properties["metadata"]))
            stored.update(
                kind="compute#instanceTemplate",
                id=_new_id(),
                creationTimestamp=_now(),
                selfLink=f"{PUBLIC_BASE}/{target}",
            )
            self.resources[target] = stored
            return stored["id"]

        return self._operation("insert", target, user, "global", apply)

    def _compute_instanceTemplates_delete(self, p, q, body, user):
        target = f"projects/{p['project']}/global/instanceTemplates/{p['instanceTemplate']}"
        self._get(target)
        for path, resource in self.resources.items():
            if resource.get("kind") == "compute#instanceGroupManager" and any(
                self._template_path(p["project"], ref) == target for ref in template_refs(resource)
            ):
                raise ApiError(
                    400,
                    f"The instance_template resource '{target}' is already being used by '{path}'",
                    "resourceInUseByAnotherResource",
                )

        def apply():
            self.resources.pop(target, None)

        return self._operation("delete", target, user, "global", apply)

    # managed instance groups ------------------------------------------------------------------
    def _mig_path(self, p: dict) -> str:
        return f"projects/{p['project']}/zones/{p['zone']}/instanceGroupManagers/{p['instanceGroupManager']}"

    def _require_template(self, project: str, reference: str) -> str:
        path = self._template_path(project, reference)
        if path not in self.resources:
            raise ApiError(404, f"The resource '{path}' was not found", "notFound", "RESOURCE_NOT_FOUND")
        return f"{PUBLIC_BASE}/{path}"

    def _compute_instanceGroupManagers_get(self, p, q, body, user):
        return self._get(self._mig_path(p))

    def _compute_instanceGroupManagers_list(self, p, q, body, user):
        prefix = f"projects/{p['project']}/zones/{p['zone']}/instanceGroupManagers"
        return self._list(prefix, "compute#instanceGroupManagerList")

    def _compute_instanceGroupManagers_insert(self, p, q, body, user):
        project, zone = p["project"], p["zone"]
        self._check_name(body.get("name"))
        target = f"projects/{project}/zones/{zone}/instanceGroupManagers/{body['name']}"
        self._conflict_if_exists(target)
        if not body.get("instanceTemplate") and not body.get("versions"):
            raise ApiError(
                400, "Invalid value for field 'resource.instanceTemplate': ''. Instance template is required."
            )
        if not body.get("baseInstanceName"):
            raise ApiError(400, "Required field 'resource.baseInstanceName' not specified", "required")
        stored = strip_output_only(self.doc, "InstanceGroupManager", copy.deepcopy(body))

        def apply():
            reference = stored.get("instanceTemplate") or stored["versions"][0]["instanceTemplate"]
            url = self._require_template(project, reference)
            stored["instanceTemplate"] = url
            stored["versions"] = [{"instanceTemplate": url, "name": ""}]
            size = stored.get("targetSize", 0)
            stored.update(
                kind="compute#instanceGroupManager",
                id=_new_id(),
                creationTimestamp=_now(),
                selfLink=f"{PUBLIC_BASE}/{target}",
                zone=f"{PUBLIC_BASE}/projects/{project}/zones/{zone}",
                instanceGroup=f"{PUBLIC_BASE}/projects/{project}/zones/{zone}/instanceGroups/{stored['name']}",
                fingerprint=_fingerprint(stored),
                currentActions={"creating": 0, "deleting": 0, "none": size, "recreating": 0, "restarting": 0},
                status={"isStable": True, "versionTarget": {"isReached": True}},
                listManagedInstancesResults="PAGELESS",
            )
            stored.setdefault(
                "updatePolicy",
                {
                    "type": "OPPORTUNISTIC",
                    "minimalAction": "REPLACE",
                    "maxSurge": {"fixed": 1, "calculated": 1},
                    "maxUnavailable": {"fixed": 1, "calculated": 1},
                    "replacementMethod": "SUBSTITUTE",
                },
            )
            self.resources[target] = stored
            return stored["id"]

        return self._operation("insert", target, user, f"zones/{zone}", apply)

    def _compute_instanceGroupManagers_setInstanceTemplate(self, p, q, body, user):
        target = self._mig_path(p)
        self._get(target)
        reference = body.get("instanceTemplate", "")

        def apply():
            url = self._require_template(p["project"], reference)
            mig = self.resources[target]
            mig["instanceTemplate"] = url
            mig["versions"] = [{"instanceTemplate": url, "name": ""}]
            mig["fingerprint"] = _fingerprint(mig)

        return self._operation("setInstanceTemplate", target, user, f"zones/{p['zone']}", apply)

    def _compute_instanceGroupManagers_resize(self, p, q, body, user):
        target = self._mig_path(p)
        self._get(target)
        size = q.get("size")
        if size is None or not re.fullmatch(r"\d+", size):
            raise ApiError(400, f"Invalid value for field 'size': '{size}'. Must be a non-negative integer.")

        def apply():
            mig = self.resources[target]
            mig["targetSize"] = int(size)
            mig["currentActions"]["none"] = int(size)
            mig["fingerprint"] = _fingerprint(mig)

        return self._operation("compute.instanceGroupManagers.resize", target, user, f"zones/{p['zone']}", apply)

    def _compute_instanceGroupManagers_delete(self, p, q, body, user):
        target = self._mig_path(p)
        self._get(target)

        def apply():
            self.resources.pop(target, None)

        return self._operation("delete", target, user, f"zones/{p['zone']}", apply)


# --- helpers shared with the tests -------------------------------------------------------------
def relative(url_or_path: str) -> str:
    """A Compute URL relative to .../compute/v1/ (paths unchanged)."""
    return re.sub(r"^https?://[^/]+/compute/v1/", "", url_or_path).strip("/")


def expand(project: str, reference: str, collection: str | None) -> str:
    """Expand a reference the way the API stores it: a full public URL."""
    ref = relative(reference)
    if ref.startswith("projects/"):
        return f"{PUBLIC_BASE}/{ref}"
    if "/" not in ref and collection:
        ref = f"{collection}/{ref}"
    return f"{PUBLIC_BASE}/projects/{project}/{ref}"


def template_refs(mig: dict) -> list[str]:
    refs = [mig.get("instanceTemplate", "")]
    refs += [v.get("instanceTemplate", "") for v in mig.get("versions", [])]
    return [r for r in refs if r]


def strip_output_only(doc: DiscoveryDocument, schema: str, body: dict) -> dict:
    """Drop top-level output-only fields a client sent (the real API ignores them)."""
    properties = doc.schemas[schema]["properties"]
    problems = doc.validate(schema, {k: v for k, v in body.items() if k in properties}, allow_output_only=False)
    for problem in problems:
        if problem.kind == "output-only" and problem.path.count(".") == 1:
            body.pop(problem.path.split(".", 1)[1], None)
    return body


def check_scheduling(scheduling: dict) -> None:
    """The consistency rules the API enforces on a Scheduling block."""
    where = "resource.properties.scheduling"
    model = scheduling.get("provisioningModel")
    preemptible = scheduling.get("preemptible") is True
    if model == "STANDARD" and preemptible:
        raise ApiError(
            400,
            f"Invalid value for field '{where}.preemptible': 'true'. "
            "Preemptible VMs cannot use provisioningModel STANDARD.",
        )
    if model == "SPOT" or preemptible:
        if scheduling.get("automaticRestart") is True:
            raise ApiError(
                400,
                f"Invalid value for field '{where}.automaticRestart': 'true'. "
                "Spot and preemptible instances cannot be automatically restarted.",
            )
        if scheduling.get("onHostMaintenance") == "MIGRATE":
            raise ApiError(
                400,
                f"Invalid value for field '{where}.onHostMaintenance': 'MIGRATE'. "
                "Scheduling must have onHostMaintenance set to TERMINATE for Spot and preemptible instances.",
            )
    if (
        scheduling.get("instanceTerminationAction")
        and model != "SPOT"
        and not scheduling.get("maxRunDuration")
        and not scheduling.get("terminationTime")
    ):
        raise ApiError(
            400,
            f"Invalid value for field '{where}.instanceTerminationAction': "
            f"'{scheduling['instanceTerminationAction']}'. A termination action applies to Spot VMs "
            "or to VMs with maxRunDuration or terminationTime.",
        )


# --- HTTP transport ------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeCompute/1.0"
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        status, answer = self.server.fake.handle(self.command, self.path, headers, body, host)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _dispatch

    def log_message(self, format, *args) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class FakeComputeServer(ThreadingHTTPServer):
    """The fake served over HTTP on a loopback address (port 0 picks a free one)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, fake: FakeCompute | None = None, verbose=False):
        if host not in LOOPBACK:
            raise ValueError(f"the fake Compute API only listens on loopback, not {host}")
        super().__init__((host, port), _Handler)
        self.fake = fake or FakeCompute()
        self.verbose = verbose
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_base_url(self) -> str:
        return self.url + API_PREFIX.rstrip("/")

    @property
    def token_uri(self) -> str:
        return self.url + OAUTH_PATH

    def start_background(self) -> FakeComputeServer:
        self._thread = threading.Thread(target=self.serve_forever, name="fake-compute", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
