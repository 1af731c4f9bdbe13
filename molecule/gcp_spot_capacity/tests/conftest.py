"""Fixtures of the gcp_spot_capacity scenario: the fake Compute API's recorded state and requests."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
SCENARIO_DIR = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1]))


class FakeApi:
    """Read-only view of the fake Compute API (its introspection endpoints)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as answer:
            return json.load(answer)

    def requests(self) -> list[dict]:
        return self._get("/_fake/requests")

    def resources(self) -> dict[str, dict]:
        return self._get("/_fake/resources")


@pytest.fixture(scope="module")
def variables(host) -> dict:
    """The scenario inventory's variables of localhost (project, port, state dir of the fake)."""
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def fake(variables) -> FakeApi:
    return FakeApi(f"http://127.0.0.1:{variables['gcp_fake_compute_port']}")


@pytest.fixture(scope="module")
def project(variables) -> str:
    return variables["gcp_fake_compute_project"]


@pytest.fixture(scope="session")
def gcp_inventory() -> dict:
    """What converge.yml reads: the real GCP inventory (provider.yml + capacity.yml)."""
    values: dict = {}
    for name in ("provider.yml", "capacity.yml"):
        values.update(yaml.safe_load((PROJECT_DIR / "inventories/gcp/group_vars/all" / name).read_text()))
    return values


@pytest.fixture
def templates(fake, project) -> list[dict]:
    prefix = f"projects/{project}/global/instanceTemplates/"
    return [r for path, r in fake.resources().items() if path.startswith(prefix)]


@pytest.fixture
def template(templates) -> dict:
    assert len(templates) == 1, [t["name"] for t in templates]
    return templates[0]


@pytest.fixture
def metadata(template) -> dict[str, str]:
    return {item["key"]: item["value"] for item in template["properties"]["metadata"]["items"]}


@pytest.fixture
def mig(fake, project, gcp_inventory) -> dict:
    path = f"projects/{project}/zones/{gcp_inventory['gcp_zone']}/instanceGroupManagers/agency-os-bulk"
    resources = fake.resources()
    assert path in resources, sorted(resources)
    return resources[path]


@pytest.fixture
def run_converge():
    """Run converge.yml again as a subprocess (same inventory and ansible.cfg as molecule)."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **(env or {}))
        command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], *args]
        command.append(str(SCENARIO_DIR / "converge.yml"))
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)

    return run


@pytest.fixture
def run_module():
    """Run one module ad hoc on localhost (testinfra's host.ansible drops `failed` with ansible-core 2.19)."""

    def run(module: str, arguments: dict) -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        command = ["ansible", "localhost", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-m", module]
        command += ["-a", json.dumps(arguments)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)

    return run
