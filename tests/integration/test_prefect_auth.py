"""The repository's Prefect modules against a real self-hosted server with basic auth
(PREFECT_SERVER_API_AUTH_STRING) and CSRF protection (PREFECT_SERVER_CSRF_PROTECTION_ENABLED).

A playbook creates a work pool and writes a variable (state-changing calls, which need the CSRF
token) and reads them back with prefect_info; the task names no API URL or credentials, so they
come from the environment or the active Prefect profile, as Prefect's own client takes them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, load_plugin
from tests.support.prefect_harness import VENV_BIN, prefect_server

AUTH = "agency:basic-auth-s3cret-7c41e9"
POOL = "auth-pool"
VARIABLE = "auth_variable"


prefect_api = load_plugin("prefect_api", "plugins/module_utils/prefect_api.py")

PLAYBOOK = """\
- name: Prefect modules on a server with basic auth and CSRF protection
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Register the pool
      prefect_work_pool:
        api_url: "{{ api_url | default(omit) }}"
        name: auth-pool
        type: process
        description: "round {{ step }}"
    - name: Record the variable
      prefect_variable:
        api_url: "{{ api_url | default(omit) }}"
        name: auth_variable
        value: {step: "{{ step }}"}
    - name: Read them back
      prefect_info:
        api_url: "{{ api_url | default(omit) }}"
        work_pool: auth-pool
        variables: [auth_variable]
      register: info
    - name: Show what the server holds
      ansible.builtin.debug:
        msg: "pool={{ info.work_pool.name }} variable={{ info.variables.auth_variable }}"
"""


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with prefect_server(PREFECT_SERVER_API_AUTH_STRING=AUTH, PREFECT_SERVER_CSRF_PROTECTION_ENABLED="true") as url:
        yield url


@pytest.fixture(scope="module")
def server(api: str) -> Iterator[httpx.Client]:
    """Reads the server with the auth string (GETs need no CSRF token)."""
    token = base64.b64encode(AUTH.encode()).decode()
    with httpx.Client(base_url=api, headers={"Authorization": f"Basic {token}"}, timeout=30) as client:
        yield client


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any Prefect setting, an empty PREFECT_HOME, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        PREFECT_HOME=str(home),
    )
    env.update(extra)
    return env


def play(tmp_path: Path, env: dict[str, str], *args: str, rnd: str = "1") -> subprocess.CompletedProcess:
    book = tmp_path / "auth.yml"
    book.write_text(PLAYBOOK)
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), str(book), "-e", json.dumps({"step": rnd}), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def assert_converged(server: httpx.Client, proc: subprocess.CompletedProcess, rnd: str) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rc {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    pool = server.get(f"/work_pools/{POOL}").raise_for_status().json()
    assert pool["description"] == f"round {rnd}"
    variable = server.get(f"/variables/name/{VARIABLE}").raise_for_status().json()
    assert variable["value"] == {"step": rnd}
    assert f"pool={POOL}" in output
    assert AUTH not in output, "the auth string is in the play's output"
    assert base64.b64encode(AUTH.encode()).decode() not in output, "the basic auth header is in the play's output"


def test_server_refuses_an_unauthenticated_or_tokenless_write(api: str, server: httpx.Client) -> None:
    assert httpx.get(f"{api}/work_pools/default-agent-pool", timeout=30).status_code == 401
    refused = server.post("/variables/", json={"name": "no_token", "value": 1})
    assert refused.status_code == 403, refused.text
    assert "CSRF" in refused.text


def test_auth_string_from_the_environment(api: str, server: httpx.Client, tmp_path: Path) -> None:
    env = clean_env(tmp_path, PREFECT_API_URL=api, PREFECT_API_AUTH_STRING=AUTH)
    assert_converged(server, play(tmp_path, env, "-vvv", rnd="env"), "env")


def test_auth_string_from_the_active_profile(api: str, server: httpx.Client, tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "selfhosted"\n\n'
        f'[profiles.selfhosted]\nPREFECT_API_URL = "{api}"\nPREFECT_API_AUTH_STRING = "{AUTH}"\n\n'
        '[profiles.other]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    env = clean_env(tmp_path, PREFECT_PROFILES_PATH=str(profiles))
    assert_converged(server, play(tmp_path, env, "-vvv", rnd="profile"), "profile")

    # The task's api_url wins over the profile's; the auth string still comes from the profile.
    env = clean_env(tmp_path, PREFECT_PROFILES_PATH=str(profiles), PREFECT_PROFILE="other")
    proc = play(tmp_path, env, "-e", json.dumps({"api_url": api}), rnd="option")
    assert proc.returncode != 0, "profile 'other' has no auth string, yet the play passed"
    profiles.write_text(profiles.read_text() + f'PREFECT_API_AUTH_STRING = "{AUTH}"\n')
    assert_converged(server, play(tmp_path, env, "-vvv", "-e", json.dumps({"api_url": api}), rnd="option"), "option")


def test_without_the_auth_string_the_task_says_what_to_set(api: str, server: httpx.Client, tmp_path: Path) -> None:
    before = server.get(f"/variables/name/{VARIABLE}").json()
    proc = play(tmp_path, clean_env(tmp_path, PREFECT_API_URL=api), "-vvv", rnd="refused")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "HTTP 401" in output
    assert "PREFECT_API_AUTH_STRING" in output
    assert "Traceback" not in output
    assert server.get(f"/variables/name/{VARIABLE}").json() == before


def test_a_wrong_auth_string_is_refused_and_not_shown(api: str, server: httpx.Client, tmp_path: Path) -> None:
    wrong = "agency:not-the-password-51d0"
    proc = play(tmp_path, clean_env(tmp_path, PREFECT_API_URL=api, PREFECT_API_AUTH_STRING=wrong), "-vvv")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "HTTP 401" in output
    assert "sent basic auth" in output
    assert wrong not in output


def test_the_client_renews_an_invalid_or_expired_csrf_token(api: str, server: httpx.Client) -> None:
    client = prefect_api.PrefectClient(api, auth_string=AUTH)
    assert client.csrf_token is None
    client.get("/work_pools/default-agent-pool", missing_ok=True)
    assert client.csrf_token is None, "a GET fetched a CSRF token"
    client.post("/variables/", {"name": "csrf_probe", "value": 1})
    first = client.csrf_token
    assert first and client.csrf_expiration > dt.datetime.now(dt.UTC)

    stale = first[::-1]
    client.csrf_token = stale  # the server answers 403 "Invalid CSRF token ...": fetch a new one
    client.patch("/variables/name/csrf_probe", {"value": 2})
    assert client.csrf_token not in (None, stale)

    client.csrf_expiration = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    renewed = client.csrf_token
    client.patch("/variables/name/csrf_probe", {"value": 3})
    assert client.csrf_token != renewed
    assert server.get("/variables/name/csrf_probe").json()["value"] == 3
