"""What the migration reports read from Prefect: flows, deployments, flow runs and their state histories."""

from __future__ import annotations

from typing import Any

import httpx

from agency_os_spot.runtime.prefect_rest import prefect_http

PAGE = 200  # the server's default maximum page size


class PrefectAPIError(RuntimeError):
    """The Prefect API could not be reached or refused a request; the message says what to do."""


class PrefectAPI:
    """The few read-only calls of the Prefect 3 REST API this report needs."""

    def __init__(self, api_url: str, api_key: str | None = None, timeout: float = 30, verify: bool = True):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.api_url = api_url.rstrip("/")
        self.http = prefect_http(self.api_url, headers=headers, timeout=timeout, verify=verify)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise PrefectAPIError(
                f"cannot reach the Prefect API at {self.api_url} ({exc}): is the server up? Set prefect_api_url "
                "(inventories/<env>/group_vars/all/prefect.yml or -e prefect_api_url=...)"
            ) from exc
        if resp.status_code in (401, 403):
            raise PrefectAPIError(
                f"the Prefect API at {self.api_url} refused {method} {path} (HTTP {resp.status_code}): "
                "set prefect_api_key (or PREFECT_API_KEY) to a key that may read flows and runs"
            )
        if resp.status_code >= 400:
            raise PrefectAPIError(
                f"{method} {self.api_url}{path} answered HTTP {resp.status_code}: {resp.text[:300]} "
                "(is prefect_api_url the API root, ending in /api?)"
            )
        return resp.json()

    def _paged(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("POST", path, json={**body, "limit": PAGE, "offset": len(items)})
            items.extend(page)
            if len(page) < PAGE:
                return items

    def health(self) -> None:
        self._call("GET", "/health")

    def flows(self) -> list[dict[str, Any]]:
        return self._paged("/flows/filter", {"sort": "NAME_ASC"})

    def deployments(self, flow_ids: list[str]) -> list[dict[str, Any]]:
        if not flow_ids:
            return []
        return self._paged("/deployments/filter", {"flows": {"id": {"any_": flow_ids}}, "sort": "NAME_ASC"})

    def flow_runs(self, flow_ids: list[str], flow_runs: dict[str, Any], **extra: Any) -> list[dict[str, Any]]:
        if not flow_ids:
            return []
        body = {"flows": {"id": {"any_": flow_ids}}, "flow_runs": flow_runs, "sort": "EXPECTED_START_TIME_ASC"}
        return self._paged("/flow_runs/filter", {**body, **extra})

    def first_run(self, flow_ids: list[str], flow_runs: dict[str, Any], sort: str, **extra: Any) -> dict | None:
        body = {"flows": {"id": {"any_": flow_ids}}, "flow_runs": flow_runs, "sort": sort, "limit": 1, **extra}
        found = self._call("POST", "/flow_runs/filter", json=body)
        return found[0] if found else None

    def count_runs(self, flow_ids: list[str], flow_runs: dict[str, Any], **extra: Any) -> int:
        body = {"flows": {"id": {"any_": flow_ids}}, "flow_runs": flow_runs, **extra}
        return int(self._call("POST", "/flow_runs/count", json=body))

    def states(self, run_id: str) -> list[dict[str, Any]]:
        return self._call("GET", "/flow_run_states/", params={"flow_run_id": run_id})
