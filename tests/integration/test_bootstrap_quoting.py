"""node_bootstrap's boot script with operator values that hold quotes, `$(…)` and a newline: the
script stays valid shell, its Python reads each value as given, and nothing in a value runs."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

pytestmark = pytest.mark.slow

HOSTILE = "x\"'$(touch {canary})`touch {canary}`\nnext line"

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Render the boot script
      ansible.builtin.include_role:
        name: node_bootstrap
    - name: Keep it
      ansible.builtin.copy:
        content: "{{{{ node_bootstrap_script }}}}"
        dest: {out}
        mode: "0600"
"""


def render(tmp_path: Path, source_kind: str) -> tuple[str, str]:
    canary = tmp_path / "pwned"
    value = HOSTILE.format(canary=canary)
    variables = {
        "node_bootstrap_api_key_source": f"{source_kind}{value}",
        "node_bootstrap_repo_url": f"https://example.invalid/{value}.git",
        "node_bootstrap_repo_version": value,
        "node_bootstrap_node_vars": {"agency_os_tags": {"team": value}, "prefect_worker_api_url": value},
        "ansible_python_interpreter": sys.executable,
    }
    if source_kind == "gcp-secret:":
        variables["node_bootstrap_api_key_source"] = f"gcp-secret:projects/p/secrets/{value}/versions/1"
    out = tmp_path / f"boot-{source_kind.rstrip(':')}.sh"
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAYBOOK.format(out=out))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook), "-e", json.dumps(variables)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert not canary.exists()
    return out.read_text(), value


@pytest.mark.parametrize("source_kind", ["aws-ssm:", "gcp-secret:"])
def test_operator_values_stay_data_in_the_boot_script(tmp_path: Path, source_kind: str) -> None:
    script, value = render(tmp_path, source_kind)
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    # The Python that reads the API key: valid, and the value is one string literal in it.
    (python,) = re.findall(r"<<'PY'\n(.*?)\nPY\n", script, re.DOTALL)
    strings = [n.value for n in ast.walk(ast.parse(python)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert value in strings or f"projects/p/secrets/{value}/versions/1" in strings
    # The node's variables come back as given.
    block = re.search(r"<<'AGENCY_OS_VARS'\n(.*?)\nAGENCY_OS_VARS\n", script, re.DOTALL)
    assert yaml.safe_load(block.group(1))["agency_os_tags"] == {"team": value}
    # ansible-pull's arguments: what bash would pass is the value itself.
    pull = script[script.rindex("/opt/agency-os/bootstrap/bin/ansible-pull") :].split("\necho ", 1)[0]
    printed = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + pull.split(" ", 1)[1]], capture_output=True, text=True, check=True
    ).stdout.split("\0")
    assert f"https://example.invalid/{value}.git" in printed and value in printed
