"""An httpx client for the Prefect REST API that retries what the server says is retryable.

The Prefect server answers 503 when a request failed on an error a client may retry (with SQLite,
"database is locked" while another writer commits), and proxies or Prefect Cloud answer 429, 502
or 408. Prefect's own client retries exactly these codes with exponential backoff, honouring
`Retry-After`; the tests talk to the same API, so they do the same.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx

RETRY_STATUS = frozenset({408, 429, 502, 503})
RETRIES = 6  # 0.5 + 1 + 2 + 4 + 8 + 8 s at most: about 24 s of waiting before the answer is returned
MAX_DELAY_S = 8.0


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


class RetryingTransport(httpx.HTTPTransport):
    """Resends a request answered with a retryable status; the last answer is returned as is."""

    def __init__(self, *args: Any, retries: int = RETRIES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retries = retries

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = super().handle_request(request)
            if response.status_code not in RETRY_STATUS or attempt == self.retries:
                return response
            delay = _retry_after(response)
            if delay is None:
                delay = min(MAX_DELAY_S, 0.5 * 2**attempt) * random.uniform(0.8, 1.2)
            response.close()
            time.sleep(min(delay, MAX_DELAY_S * 2))
        raise AssertionError("unreachable")  # pragma: no cover


def prefect_http(base_url: str, *, timeout: float = 30, verify: bool = True, **kwargs: Any) -> httpx.Client:
    """An httpx.Client on the Prefect API root (…/api) that retries 408/429/502/503."""
    return httpx.Client(base_url=base_url, timeout=timeout, transport=RetryingTransport(verify=verify), **kwargs)
