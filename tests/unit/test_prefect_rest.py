"""Both Prefect REST clients (the modules' urllib one, the reports' httpx one) retry what the Prefect
server calls retryable (503 on a busy SQLite, 429/502/408 from Cloud or a proxy) and nothing else,
against a loopback server that answers a scripted sequence of statuses."""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tests.support import load_plugin, prefect_rest
from tests.support.services import http_server

prefect_api = load_plugin("prefect_api", "plugins/module_utils/prefect_api.py")


class Scripted(http.server.BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, bytes]]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/api/csrf-token?"):  # as a Prefect server without CSRF protection answers
            status, payload = 422, json.dumps({"detail": "CSRF protection is disabled."}).encode()
        else:
            type(self).seen.append((self.command, body))
            status = type(self).statuses.pop(0) if type(self).statuses else 200
            payload = json.dumps(
                {"ok": True} if status == 200 else {"exception_message": "Service Unavailable"}
            ).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[Scripted]]]:
    monkeypatch.setattr(prefect_api.time, "sleep", lambda s: None)
    monkeypatch.setattr(prefect_rest.time, "sleep", lambda s: None)
    handler = type("Handler", (Scripted,), {"statuses": [], "seen": []})
    with http_server(handler) as url:
        yield f"{url}/api", handler


def test_module_client_retries_busy_answers_and_resends_the_body(server) -> None:
    url, handler = server
    handler.statuses = [503, 429, 502]
    answer = prefect_api.PrefectClient(url).post("/flows/", {"name": "abn_bulk_ingestion"})
    assert answer == {"ok": True}
    assert handler.seen == [("POST", b'{"name": "abn_bulk_ingestion"}')] * 4


def test_module_client_gives_up_after_its_retries_with_the_status(server) -> None:
    url, handler = server
    handler.statuses = [503] * (prefect_api.RETRIES + 1)
    with pytest.raises(prefect_api.PrefectAPIError, match=r"answered HTTP 503: .*Service Unavailable"):
        prefect_api.PrefectClient(url).get("/health")
    assert len(handler.seen) == prefect_api.RETRIES + 1


def test_module_client_does_not_retry_a_refusal(server) -> None:
    url, handler = server
    handler.statuses = [500, 200]
    with pytest.raises(prefect_api.PrefectAPIError, match="answered HTTP 500"):
        prefect_api.PrefectClient(url).get("/health")
    assert len(handler.seen) == 1


def test_httpx_client_retries_then_returns_the_answer(server) -> None:
    url, handler = server
    handler.statuses = [503, 408]
    with prefect_rest.prefect_http(url) as http:
        resp = http.post("/deployments/x/create_flow_run", json={"parameters": {}})
        assert resp.status_code == 200
    assert [b for _, b in handler.seen] == [b'{"parameters":{}}'] * 3

    handler.seen.clear()
    handler.statuses = [503] * (prefect_rest.RETRIES + 1)
    with prefect_rest.prefect_http(url) as http:
        assert http.get("/health").status_code == 503  # the last answer, for the caller to judge
    assert len(handler.seen) == prefect_rest.RETRIES + 1

    handler.seen.clear()
    handler.statuses = [404]
    with prefect_rest.prefect_http(url) as http:
        assert http.get("/health").status_code == 404
    assert len(handler.seen) == 1
