"""A real Prefect server, pools, deployments and process workers for the tests (REST, no mocks)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.prefect_rest import prefect_http
from tests.support.services import free_port

VENV_BIN = Path(sys.executable).parent


def _base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_EXTRA_LOGGERS="agency_os",
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    return env


@contextlib.contextmanager
def prefect_server(**server_env: str) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its own SQLite database; yields the API URL.

    `server_env` is added to the server's environment, e.g. PREFECT_SERVER_API_AUTH_STRING="user:pass"
    (basic auth on every API call but the health check) or PREFECT_SERVER_CSRF_PROTECTION_ENABLED="true".
    """
    home = Path(tempfile.mkdtemp(prefix="agency-os-prefect-"))
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env={**_base_env(home), **server_env},
        stdout=(home / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).json() is True:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield api
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if proc.poll() is None:
            proc.kill()


class Prefect:
    """A thin REST client for what the tests do."""

    def __init__(self, api: str):
        self.api = api
        self.http = prefect_http(api)

    def env(self, **extra: str) -> dict[str, str]:
        home = Path(tempfile.mkdtemp(prefix="agency-os-prefect-client-"))
        env = _base_env(home)
        env["PREFECT_API_URL"] = self.api
        env.update(extra)
        return env

    def create_pool(self, name: str, template: dict[str, Any]) -> None:
        resp = self.http.post("/work_pools/", json={"name": name, "type": "process", "base_job_template": template})
        if resp.status_code == 409:
            resp = self.http.patch(f"/work_pools/{name}", json={"base_job_template": template})
        resp.raise_for_status()

    def create_deployment(self, body: dict[str, Any], flow_name: str) -> str:
        flow_id = self.http.post("/flows/", json={"name": flow_name}).raise_for_status().json()["id"]
        resp = self.http.post("/deployments/", json={**body, "flow_id": flow_id}).raise_for_status()
        return resp.json()["id"]

    def run(self, deployment_id: str, parameters: dict[str, Any]) -> str:
        resp = self.http.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
        return resp.raise_for_status().json()["id"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.http.get(f"/flow_runs/{run_id}").raise_for_status().json()

    def state(self, run_id: str) -> tuple[str, str]:
        run = self.flow_run(run_id)
        return run["state_type"], run["state_name"]

    def wait_for(self, run_id: str, names: set[str], timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        state = self.state(run_id)
        while state[1] not in names:
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run_id} is {state}, not in {names} after {timeout} s")
            time.sleep(0.25)
            state = self.state(run_id)
        return state

    def logs(self, run_id: str) -> str:
        """The run's log lines, as the UI shows them (for assertion messages)."""
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        lines = self.http.post("/logs/filter", json=body).raise_for_status().json()
        return "\n".join(f"{x['timestamp'][11:23]} {x['name']}: {x['message']}" for x in lines)

    def workers(self, pool: str) -> list[dict[str, Any]]:
        return self.http.post(f"/work_pools/{pool}/workers/filter", json={}).raise_for_status().json()


def _reset_signals() -> None:
    # A shell-started background process inherits "ignore SIGINT"; systemd resets dispositions.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    os.setsid()


def start_worker(prefect: Prefect, pool: str, queue: str, name: str, log: Path, **env: str) -> subprocess.Popen:
    """`prefect worker start` as the unit runs it (own session, default signal dispositions)."""
    return subprocess.Popen(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", pool, "--work-queue", queue, "--name", name],
        env=prefect.env(PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="0", **env),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=log.parent,
        preexec_fn=_reset_signals,  # noqa: PLW1509  (only resets signal dispositions and the session)
    )


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
