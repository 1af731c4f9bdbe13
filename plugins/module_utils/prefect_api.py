"""Shared code of the repo's Prefect modules: a small client for the Prefect 3 REST API and the
comparisons that keep the modules idempotent.

Plain Python on top of `ansible.module_utils.urls.open_url` (no Prefect import: the modules run
with any Python that runs Ansible). Each module reads what is there, compares it with what the
task asks for, and writes only the difference (nothing in check mode).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from fnmatch import fnmatchcase
from urllib.error import HTTPError
from urllib.parse import quote

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

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


def prefect_argument_spec(**options):
    """The connection options every Prefect module takes, plus the module's own."""
    spec = {
        "api_url": {"type": "str", "required": True, "fallback": (env_fallback, ["PREFECT_API_URL"])},
        "api_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PREFECT_API_KEY"])},
        "timeout": {"type": "float", "default": 30},
        "validate_certs": {"type": "bool", "default": True},
    }
    spec.update(options)
    return spec


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

    def __init__(self, api_url, api_key=None, timeout=30, validate_certs=True):
        self.api_url = (api_url or "").rstrip("/")
        self.api_key = api_key or None
        self.timeout = timeout
        self.validate_certs = validate_certs

    @classmethod
    def from_module(cls, module):
        p = module.params
        return cls(p["api_url"], p.get("api_key"), p.get("timeout", 30), p.get("validate_certs", True))

    def request(self, method, path, body=None, missing_ok=False):
        """Send one request and return the decoded JSON answer (None for an empty answer, or for
        HTTP 404 when `missing_ok`)."""
        url = self.api_url + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
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
        if status in (401, 403):
            return (
                f"the Prefect API at {self.api_url} refused {method} {path} (HTTP {status}): set api_key "
                "(prefect_api_key or PREFECT_API_KEY) to a key allowed to manage pools, deployments and automations"
            )
        hint = " (is api_url the Prefect API root, ending in /api?)" if status in (404, 405) else ""
        return f"{where} answered HTTP {status}: {_detail(raw)}{hint}"

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


def heartbeat_age(timestamp, now=None):
    """Seconds since an ISO 8601 timestamp (None when there is none)."""
    if not timestamp:
        return None
    when = dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return round((now - when).total_seconds(), 1)
