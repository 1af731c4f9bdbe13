"""What the migration reports read from Prefect: flows, deployments, flow runs and their state histories.

Read through Prefect's own client, which honours the active profile, PREFECT_API_URL, PREFECT_API_KEY
and PREFECT_API_AUTH_STRING, fetches a CSRF token when the server asks for one and retries what the
server says is retryable (408, 429, 502, 503). An API URL, key, auth string, timeout or
`verify=False` given here takes precedence over those settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import DeploymentSort, FlowRunSort, FlowSort
from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_KEY,
    PREFECT_API_REQUEST_TIMEOUT,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Flow, FlowRun, State
    from prefect.client.schemas.responses import DeploymentResponse

DEFAULT_API_URL = "http://127.0.0.1:4200/api"  # when neither the caller nor Prefect's settings name one
PAGE = 200  # the server's default maximum page size
T = TypeVar("T")


class PrefectAPIError(RuntimeError):
    """The Prefect API could not be reached or refused a request; the message says what to do."""


def _flows(flow_ids: list[UUID]) -> FlowFilter:
    return FlowFilter(id=FlowFilterId(any_=flow_ids))


def _runs(
    states: Iterable[str] = (), expected_after: dt.datetime | None = None, expected_before: dt.datetime | None = None
) -> FlowRunFilter:
    fields: dict[str, Any] = {}
    if states:
        fields["state"] = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in states]))
    expected = {k: v for k, v in (("after_", expected_after), ("before_", expected_before)) if v}
    if expected:
        fields["expected_start_time"] = FlowRunFilterExpectedStartTime(**expected)
    return FlowRunFilter(**fields)


def _pools(work_pool: str | None) -> WorkPoolFilter | None:
    return WorkPoolFilter(name=WorkPoolFilterName(any_=[work_pool])) if work_pool else None


class PrefectAPI:
    """The few read-only calls the reports make, on a synchronous Prefect client.

    Use it as a context manager, or call close() when done.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        verify: bool = True,
        auth_string: str | None = None,
    ):
        self.api_url = (api_url or PREFECT_API_URL.value() or DEFAULT_API_URL).rstrip("/")
        updates: dict[Any, Any] = {PREFECT_API_URL: self.api_url}
        if api_key:
            updates[PREFECT_API_KEY] = api_key
        if auth_string:
            updates[PREFECT_API_AUTH_STRING] = auth_string
        if timeout:
            updates[PREFECT_API_REQUEST_TIMEOUT] = timeout
        if not verify:
            updates[PREFECT_API_TLS_INSECURE_SKIP_VERIFY] = True
        with temporary_settings(updates=updates):
            self.client = get_client(sync_client=True)
        self.client.__enter__()

    def __enter__(self) -> PrefectAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.__exit__(None, None, None)

    def _read(self, call: Callable[..., T], **kwargs: Any) -> T:
        try:
            return call(**kwargs)
        except httpx.HTTPStatusError as exc:
            method, url, status = exc.request.method, str(exc.request.url), exc.response.status_code
            if status in (401, 403):
                raise PrefectAPIError(
                    f"the Prefect API at {self.api_url} refused {method} {url.removeprefix(self.api_url)} "
                    f"(HTTP {status}): for a self-hosted server with basic auth set PREFECT_API_AUTH_STRING to its "
                    "user:password; for Prefect Cloud set prefect_api_key (or PREFECT_API_KEY) to a key that may "
                    "read flows and runs"
                ) from exc
            raise PrefectAPIError(
                f"{method} {url} answered HTTP {status}: {exc.response.text[:300]} "
                "(is prefect_api_url the API root, ending in /api?)"
            ) from exc
        except httpx.HTTPError as exc:
            raise PrefectAPIError(
                f"cannot reach the Prefect API at {self.api_url} ({exc}): is the server up? Set prefect_api_url "
                "(inventories/<env>/group_vars/all/prefect.yml or -e prefect_api_url=...)"
            ) from exc

    def _paged(self, call: Callable[..., list[T]], **kwargs: Any) -> list[T]:
        items: list[T] = []
        while True:
            page = self._read(call, limit=PAGE, offset=len(items), **kwargs)
            items.extend(page)
            if len(page) < PAGE:
                return items

    def flows(self) -> list[Flow]:
        return self._paged(self.client.read_flows, sort=FlowSort.NAME_ASC)

    def deployments(self, flow_ids: list[UUID]) -> list[DeploymentResponse]:
        if not flow_ids:
            return []
        return self._paged(self.client.read_deployments, flow_filter=_flows(flow_ids), sort=DeploymentSort.NAME_ASC)

    def flow_runs(
        self,
        flow_ids: list[UUID],
        *,
        states: Iterable[str] = (),
        expected_after: dt.datetime | None = None,
        expected_before: dt.datetime | None = None,
    ) -> list[FlowRun]:
        """The flows' runs in these states (any, when none given) expected to start in the interval, earliest first."""
        if not flow_ids:
            return []
        return self._paged(
            self.client.read_flow_runs,
            flow_filter=_flows(flow_ids),
            flow_run_filter=_runs(states, expected_after, expected_before),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )

    def first_run(
        self, flow_ids: list[UUID], sort: str, *, states: Iterable[str] = (), work_pool: str | None = None
    ) -> FlowRun | None:
        """The flows' first run in this order (a FlowRunSort name, e.g. END_TIME_DESC), or None."""
        found = self._read(
            self.client.read_flow_runs,
            flow_filter=_flows(flow_ids),
            flow_run_filter=_runs(states),
            work_pool_filter=_pools(work_pool),
            sort=FlowRunSort(sort),
            limit=1,
        )
        return found[0] if found else None

    def count_runs(self, flow_ids: list[UUID], *, states: Iterable[str] = (), work_pool: str | None = None) -> int:
        return self._read(
            self.client.count_flow_runs,
            flow_filter=_flows(flow_ids),
            flow_run_filter=_runs(states),
            work_pool_filter=_pools(work_pool),
        )

    def states(self, run_id: UUID) -> list[State]:
        return self._read(self.client.read_flow_run_states, flow_run_id=run_id)
