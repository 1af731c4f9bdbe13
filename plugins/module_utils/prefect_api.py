"""Shared code of the repo's Prefect modules: a small client for the Prefect 3 REST API and the
comparisons that keep the modules idempotent.

Plain Python on top of `ansible.module_utils.urls.open_url` (no Prefect import: the modules run
with any Python that runs Ansible). Each module reads what is there, compares it with what the
task asks for, and writes only the difference (nothing in check mode).

The connection follows Prefect's own client: the API URL, API key and auth string come from the
task, else from the environment (PREFECT_API_URL, PREFECT_API_KEY, PREFECT_API_AUTH_STRING), else
from the active Prefect profile; an auth string is sent as HTTP basic auth in place of the key, and
state-changing requests carry the CSRF token of a server that asks for one.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import time
import uuid
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import quote

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

PAGE = 200  # the server's default maximum page size for /filter endpoints
# Tags that say which tier and infrastructure a deployment belongs to (src/agency_os_spot/catalog.yml tiers):
# a deployment may carry only the ones of its own tier.
DEFAULT_MANAGED_TAGS = ("tier:*", "infra:*", "interruptible")
# Keys of an event trigger that the server stores as sets (it returns them in any order).
_SET_VALUED_KEYS = frozenset({"after", "expect", "for_each"})
# Answers a client may retry, as Prefect's own client does: the server answers 503 when the request
# failed on a retryable error (SQLite busy, a lost database connection), proxies 502/408, Cloud 429.
RETRY_STATUS = frozenset({408, 429, 502, 503})
RETRIES = 6  # about 24 s of backoff at most
# Module option -> the Prefect setting (environment variable and profile key) it defaults to.
CONNECTION_SETTINGS = {
    "api_url": "PREFECT_API_URL",
    "api_key": "PREFECT_API_KEY",
    "api_auth_string": "PREFECT_API_AUTH_STRING",
}
CLOUD_API_PREFIX = "https://api.prefect.cloud/api"  # Prefect Cloud has no CSRF tokens
CSRF_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def prefect_argument_spec(**options):
    """The connection options every Prefect module takes, plus the module's own."""
    spec = {
        "api_url": {"type": "str", "fallback": (env_fallback, ["PREFECT_API_URL"])},
        "api_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PREFECT_API_KEY"])},
        "api_auth_string": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PREFECT_API_AUTH_STRING"])},
        "timeout": {"type": "float", "default": 30},
        "validate_certs": {"type": "bool", "default": True},
    }
    spec.update(options)
    return spec


def profiles_path(environ=None):
    """Where Prefect keeps its profiles: PREFECT_PROFILES_PATH, else $PREFECT_HOME/profiles.toml
    (PREFECT_HOME defaults to ~/.prefect)."""
    environ = os.environ if environ is None else environ
    if environ.get("PREFECT_PROFILES_PATH"):
        return Path(environ["PREFECT_PROFILES_PATH"]).expanduser()
    return Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "profiles.toml"


def active_profile(environ=None):
    """(name, settings) of the active Prefect profile: the one PREFECT_PROFILE names, else the
    file's `active` one; (None, {}) when there is no profiles file or no such profile (Prefect then
    uses its built-in default profile, which names no API)."""
    environ = os.environ if environ is None else environ
    path = profiles_path(environ)
    if not path.is_file():
        return None, {}
    if tomllib is None:
        raise PrefectAPIError(
            f"reading the Prefect profiles file {path} needs Python 3.11 or later (tomllib) or the tomli "
            "package: run Ansible's modules with such a Python, or set api_url, api_key and api_auth_string "
            "(or PREFECT_API_URL, PREFECT_API_KEY, PREFECT_API_AUTH_STRING) so that no profile is needed"
        )
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise PrefectAPIError(f"cannot read the Prefect profiles file {path}: {exc}") from None
    name = environ.get("PREFECT_PROFILE") or data.get("active")
    profile = (data.get("profiles") or {}).get(name) if name else None
    if not isinstance(profile, dict):
        return None, {}
    return name, profile


def connection_settings(params, environ=None):
    """The API URL, key and auth string of a task, each from the first place that sets it: the
    module option, the environment, the active Prefect profile. An empty value counts as unset.
    The profile is read only when something is still missing after the first two."""
    environ = os.environ if environ is None else environ
    found = {}
    for option, setting in CONNECTION_SETTINGS.items():
        found[option] = params.get(option) or environ.get(setting) or None
    if all(found.values()):
        return found
    name, profile = active_profile(environ)
    for option, setting in CONNECTION_SETTINGS.items():
        if not found[option] and profile.get(setting) not in (None, ""):
            found[option] = str(profile[setting])
    if not found["api_url"]:
        path = profiles_path(environ)
        where = f"its profile {name!r} in {path} sets none" if name else f"there is no active profile in {path}"
        raise PrefectAPIError(
            "no Prefect API URL: set api_url (prefect_api_url), PREFECT_API_URL, or PREFECT_API_URL in the "
            f"active Prefect profile ({where})"
        )
    return found


def module_connection(module):
    """connection_settings of a module's task; the key and auth string found in the environment or a
    profile are hidden in its output like the no_log options, and a task without an API URL fails
    with what to set."""
    try:
        conn = connection_settings(module.params)
    except PrefectAPIError as exc:
        module.fail_json(msg=str(exc))
    module.no_log_values.update(v for k, v in conn.items() if k != "api_url" and v)
    return conn


class PrefectAPIError(Exception):
    """The Prefect API could not be reached or refused a request; the message says what to do."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


def name_in_path(name):
    """A name as one URL path segment (pool, queue, flow, variable names)."""
    return quote(str(name), safe="")


def _detail(raw):
    """The useful part of an error answer: FastAPI's `detail` or Prefect's validation details."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return (raw or b"").decode("utf-8", "replace")[:300] if isinstance(raw, bytes) else str(raw)[:300]
    if isinstance(data, dict):
        if data.get("exception_detail"):
            return "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in data["exception_detail"]
            )
        if "detail" in data:
            return str(data["detail"])
    return json.dumps(data)[:300]


def _csrf_refused(raw):
    """Whether a 403 answer says the CSRF token is not (or no longer) valid, as Prefect's client checks."""
    return "Invalid CSRF token" in _detail(raw)


def _backoff(attempt, retry_after=None):
    """Seconds to wait before retry number `attempt` + 1: the server's Retry-After, else exponential."""
    try:
        return min(16.0, max(0.0, float(retry_after)))
    except (TypeError, ValueError):
        return min(8.0, 0.5 * 2**attempt) * random.uniform(0.8, 1.2)


def run_ensure(module, ensure):
    """The end of every Prefect module's main(): `ensure(module, client)` makes the state true and
    returns the result; an API error becomes a failure with its message, and the diff is dropped
    unless the play runs with --diff."""
    try:
        result = ensure(module, PrefectClient.from_module(module))
    except PrefectAPIError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    if not module._diff:  # how a module knows it runs with --diff
        result.pop("diff", None)
    module.exit_json(**result)


class PrefectClient:
    """The few calls of the Prefect 3 REST API (under /api) the modules make."""

    def __init__(self, api_url, api_key=None, timeout=30, validate_certs=True, auth_string=None):
        self.api_url = (api_url or "").rstrip("/")
        self.api_key = api_key or None
        self.auth_string = auth_string or None
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.csrf_enabled = not self.api_url.startswith(CLOUD_API_PREFIX)
        self.csrf_client = str(uuid.uuid4())
        self.csrf_token = None
        self.csrf_expiration = None

    @classmethod
    def from_module(cls, module):
        """The client of a task's connection settings (see connection_settings); a task without
        an API URL fails with what to set."""
        p = module.params
        conn = module_connection(module)
        return cls(
            conn["api_url"],
            conn["api_key"],
            p.get("timeout", 30),
            p.get("validate_certs", True),
            conn["api_auth_string"],
        )

    def _authorization(self):
        """The Authorization header as Prefect's client sends it: basic auth with the auth string
        when there is one (a self-hosted server with PREFECT_SERVER_API_AUTH_STRING), else the key."""
        if self.auth_string:
            return "Basic " + base64.b64encode(self.auth_string.encode("utf-8")).decode("ascii")
        if self.api_key:
            return f"Bearer {self.api_key}"
        return None

    def _csrf_headers(self):
        """The CSRF headers of a state-changing request, fetching a token (GET /csrf-token?client=)
        when there is none or it has expired; none for a server that does not protect against CSRF
        (it answers 422 "CSRF protection is disabled." or, before Prefect had CSRF tokens, 404)."""
        if not self.csrf_enabled:
            return {}
        now = dt.datetime.now(dt.UTC)
        if self.csrf_token is None or (self.csrf_expiration is not None and now > self.csrf_expiration):
            try:
                answer = self.request("GET", f"/csrf-token?client={self.csrf_client}")
            except PrefectAPIError as exc:
                disabled = exc.status == 422 and "CSRF protection is disabled" in _detail(exc.body)
                if exc.status == 404 or disabled:
                    self.csrf_enabled = False
                    return {}
                raise
            if not isinstance(answer, dict) or not answer.get("token"):
                raise PrefectAPIError(f"GET {self.api_url}/csrf-token did not answer a CSRF token: {answer!r}")
            self.csrf_token = answer["token"]
            self.csrf_expiration = _timestamp(answer.get("expiration"))
        return {"Prefect-Csrf-Token": self.csrf_token, "Prefect-Csrf-Client": self.csrf_client}

    def request(self, method, path, body=None, missing_ok=False):
        """Send one request and return the decoded JSON answer (None for an empty answer, or for
        HTTP 404 when `missing_ok`)."""
        url = self.api_url + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        csrf = method in CSRF_METHODS
        if csrf:
            headers.update(self._csrf_headers())
        csrf_renewed = False
        for attempt in range(RETRIES + 1):
            try:
                resp = open_url(
                    url,
                    data=data,
                    headers=headers,
                    method=method,
                    timeout=self.timeout,
                    validate_certs=self.validate_certs,
                    follow_redirects="safe",
                )
                raw = resp.read()
                break
            except HTTPError as exc:
                raw = exc.read() if hasattr(exc, "read") else b""
                if exc.code == 404 and missing_ok:
                    return None
                if csrf and exc.code == 403 and not csrf_renewed and attempt < RETRIES and _csrf_refused(raw):
                    self.csrf_token = None  # the server forgot it or it expired early: fetch a new one
                    headers.update(self._csrf_headers())
                    csrf_renewed = True
                    continue
                if exc.code in RETRY_STATUS and attempt < RETRIES:
                    time.sleep(_backoff(attempt, exc.headers.get("Retry-After") if exc.headers else None))
                    continue
                raise PrefectAPIError(self._refusal(method, path, exc.code, raw), exc.code, raw) from None
            except (UrlsConnectionError, OSError) as exc:  # URLError, refused, timeouts, TLS
                reason = getattr(exc, "reason", None) or exc
                raise PrefectAPIError(
                    f"Prefect API not reachable at {self.api_url}: {reason}. Is the Prefect server running? "
                    "api_url (prefect_api_url) must be the API root, e.g. http://127.0.0.1:4200/api"
                ) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise PrefectAPIError(
                f"{method} {url} did not answer JSON (is api_url the Prefect API root, ending in /api?): {raw[:200]!r}"
            ) from None

    def _refusal(self, method, path, status, raw):
        where = f"{method} {self.api_url}{path}"
        detail = _detail(raw)
        if status == 403 and "CSRF" in detail:
            return f"{where} answered HTTP 403: {detail} (the server's CSRF protection refused the request)"
        if status in (401, 403):
            sent = "no credentials"
            if self.auth_string:
                sent = "basic auth (the auth string)"
            elif self.api_key:
                sent = "the API key"
            return (
                f"the Prefect API at {self.api_url} refused {method} {path} (HTTP {status}, sent {sent}): "
                "for a self-hosted server started with PREFECT_SERVER_API_AUTH_STRING set api_auth_string "
                "(PREFECT_API_AUTH_STRING, in the environment or the active Prefect profile) to its user:password; "
                "for Prefect Cloud set api_key (prefect_api_key, PREFECT_API_KEY or the profile) to a key allowed "
                "to manage pools, deployments and automations"
            )
        hint = " (is api_url the Prefect API root, ending in /api?)" if status in (404, 405) else ""
        return f"{where} answered HTTP {status}: {detail}{hint}"

    def get(self, path, missing_ok=False):
        return self.request("GET", path, missing_ok=missing_ok)

    def post(self, path, body, missing_ok=False):
        return self.request("POST", path, body, missing_ok=missing_ok)

    def patch(self, path, body):
        return self.request("PATCH", path, body)

    def put(self, path, body):
        return self.request("PUT", path, body)

    def delete(self, path, missing_ok=True):
        return self.request("DELETE", path, missing_ok=missing_ok)

    def paged(self, path, body):
        """Every item of a /filter endpoint, page by page."""
        items = []
        while True:
            page = self.post(path, {**body, "limit": PAGE, "offset": len(items)}) or []
            items.extend(page)
            if len(page) < PAGE:
                return items

    def health(self):
        """None when the API answers healthy, else what is wrong (a sentence)."""
        try:
            answer = self.get("/health")
        except PrefectAPIError as exc:
            return str(exc)
        if answer is not True:
            return f"GET {self.api_url}/health answered {answer!r}, not true: the server is not healthy"
        return None

    # --- lookups shared by several modules ----------------------------------------------------

    def flows_matching(self, catalog_name):
        """The Prefect flows of a catalog entry: the flow of that name, or for a family `prefix/*`
        the flow named `prefix` (Prefect refuses "/" in flow names, so a family's members are that
        flow's deployments) and any flow named `prefix/<x>` should a server accept one."""
        if catalog_name.endswith("/*"):
            prefix = catalog_name[:-2]
            candidates = self.paged("/flows/filter", {"flows": {"name": {"like_": prefix}}, "sort": "NAME_ASC"})
            return [
                f
                for f in candidates
                if f["name"] == prefix
                or (f["name"].startswith(prefix + "/") and "/" not in f["name"][len(prefix) + 1 :])
            ]
        return self.paged("/flows/filter", {"flows": {"name": {"any_": [catalog_name]}}, "sort": "NAME_ASC"})

    def deployments_of(self, flows):
        """Deployments of the given flows, each with `flow_name` and `full_name` (flow/deployment)."""
        if not flows:
            return []
        names = {f["id"]: f["name"] for f in flows}
        found = self.paged("/deployments/filter", {"flows": {"id": {"any_": list(names)}}, "sort": "NAME_ASC"})
        for dep in found:
            dep["flow_name"] = names.get(dep["flow_id"], "")
            dep["full_name"] = f"{dep['flow_name']}/{dep['name']}"
        return found


# --- comparisons ----------------------------------------------------------------------------------


def _same_scalar(want, have):
    if isinstance(want, bool) or isinstance(have, bool):
        return isinstance(want, bool) and isinstance(have, bool) and want == have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(want) == float(have)
    return want == have


def _canonical(value):
    return json.dumps(value, sort_keys=True, default=str)


def differences(want, have, path=""):
    """Where `have` (what the server returns) does not hold what `want` (what we send) asks for.

    Only the keys we send count: the server adds defaults (ids, `match_related: {}`, `force:
    false`, ...) that are no difference. Lists compare item by item, except the keys the server
    keeps as sets (a trigger's `after`, `expect`, `for_each`). Numbers compare by value (90 ==
    90.0). Returns a list of paths, empty when nothing differs."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path or "."]
        found = []
        for key, value in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in have:
                if value in (None, {}, []):
                    continue
                found.append(sub)
            elif key in _SET_VALUED_KEYS and isinstance(value, list) and isinstance(have[key], list):
                if sorted(map(_canonical, value)) != sorted(map(_canonical, have[key])):
                    found.append(sub)
            else:
                found.extend(differences(value, have[key], sub))
        return found
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [path or "."]
        found = []
        for index, (w, h) in enumerate(zip(want, have, strict=True)):
            found.extend(differences(w, h, f"{path}[{index}]"))
        return found
    return [] if _same_scalar(want, have) else [path or "."]


def merged(have, want):
    """`have` with `want` laid over it (dicts merge key by key, lists of as many dicts item by item,
    anything else is replaced): what the server will hold after the change, for a diff that shows
    only what changes and not the defaults the server adds."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = dict(have)
        for key, value in want.items():
            out[key] = merged(have.get(key), value)
        return out
    if (
        isinstance(have, list)
        and isinstance(want, list)
        and len(have) == len(want)
        and all(isinstance(x, dict) for x in have + want)
    ):
        return [merged(h, w) for h, w in zip(have, want, strict=True)]
    if not isinstance(want, dict | list) and _same_scalar(want, have):
        return have  # 90 sent, 90.0 stored: no change to show
    return want


def sets_sorted(value):
    """`value` with the set-valued trigger keys sorted (for diffs that do not show a mere reordering)."""
    if isinstance(value, dict):
        return {
            k: sorted(v, key=_canonical) if k in _SET_VALUED_KEYS and isinstance(v, list) else sets_sorted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [sets_sorted(v) for v in value]
    return value


def normalise_schedule(item):
    """A deployment schedule as what it means: the cron (words), interval or rrule, its timezone
    (UTC when unset), whether it is active, its parameters and slug."""
    sched = dict(item.get("schedule") or {})
    canon = {"timezone": sched.get("timezone") or "UTC"}
    if "cron" in sched:
        canon["cron"] = " ".join(str(sched["cron"]).split())
        canon["day_or"] = sched.get("day_or", True) is not False
    elif "interval" in sched:
        canon["interval"] = float(sched["interval"])
        if sched.get("anchor_date"):
            canon["anchor_date"] = str(sched["anchor_date"])
    elif "rrule" in sched:
        canon["rrule"] = str(sched["rrule"])
    else:
        canon.update(sched)
    return {
        "schedule": canon,
        "active": item.get("active", True) is not False,
        "parameters": item.get("parameters") or {},
        "slug": item.get("slug") or None,
    }


def same_schedules(want, have):
    """Whether two lists of deployment schedules mean the same (order does not matter)."""
    return sorted(_canonical(normalise_schedule(s)) for s in want or []) == sorted(
        _canonical(normalise_schedule(s)) for s in have or []
    )


def schedules_for_create(have):
    """The schedules a deployment has, as POST /api/deployments/ takes them (to keep them on an
    upsert that does not mean to change them: the upsert deletes and recreates every schedule)."""
    keep = ("schedule", "active", "parameters", "slug", "max_scheduled_runs")
    return [{k: s[k] for k in keep if s.get(k) is not None} for s in have or []]


def fix_tags(current, wanted, managed=DEFAULT_MANAGED_TAGS):
    """`current` with every tag of `wanted` added (at the end) and every managed tag (glob
    patterns such as `tier:*`) that `wanted` does not hold removed; other tags stay, in order."""
    wanted = list(dict.fromkeys(wanted))
    kept = [t for t in current if t in wanted or not any(fnmatchcase(t, p) for p in managed)]
    kept = list(dict.fromkeys(kept))
    return kept + [t for t in wanted if t not in kept]


def _timestamp(value):
    """An ISO 8601 timestamp as an aware datetime (UTC when it names no zone); None when there is none."""
    if not value:
        return None
    when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def heartbeat_age(timestamp, now=None):
    """Seconds since an ISO 8601 timestamp (None when there is none)."""
    when = _timestamp(timestamp)
    if when is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    return round((now - when).total_seconds(), 1)
