"""What the role left in the (fake) Compute API, and how it behaves with --check and bad credentials.

The fake records every request and stores resources the way the real API returns them (server-side
fields added, references expanded to URLs); see tests/support/gcp_compute_fake.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.support.gcp_compute_fake import load_document

MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def _api(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["path"].startswith("/compute/v1/")]


def _vars_heredoc(script: str) -> dict:
    """The node variables the boot script writes to /etc/agency-os/bootstrap.yml."""
    match = re.search(r"<<'AGENCY_OS_VARS'\n(.*?)\nAGENCY_OS_VARS\n", script, re.S)
    assert match, "the boot script does not write /etc/agency-os/bootstrap.yml"
    return yaml.safe_load(match.group(1))


# --- the instance template ----------------------------------------------------------------------
def test_template_makes_spot_vms_without_restart(template, gcp_inventory):
    scheduling = template["properties"]["scheduling"]
    assert scheduling == {
        "provisioningModel": "SPOT",
        "instanceTerminationAction": gcp_inventory["gcp_spot_capacity_termination_action"],
        "automaticRestart": False,
        "onHostMaintenance": "TERMINATE",
    }


def test_template_machine_image_labels_and_network(template, gcp_inventory):
    properties = template["properties"]
    assert properties["machineType"] == "e2-small" == gcp_inventory["gcp_spot_capacity_machine_type"]
    assert properties["labels"] == gcp_inventory["agency_os_tags"]
    (disk,) = properties["disks"]
    assert disk["boot"] is True
    assert disk["autoDelete"] is True
    assert disk["initializeParams"]["sourceImage"] == "projects/debian-cloud/global/images/family/debian-12"
    (nic,) = properties["networkInterfaces"]
    assert nic["network"].endswith("/global/networks/default")
    assert not nic.get("accessConfigs"), "no external IP by default"
    assert not properties.get("serviceAccounts")


def test_template_name_carries_a_content_hash(template):
    assert re.fullmatch(r"agency-os-bulk-[0-9a-f]{10}", template["name"])
    assert template["selfLink"].startswith("https://www.googleapis.com/compute/v1/projects/")


def test_startup_script_is_the_ansible_pull_bootstrap(host, metadata, tmp_path):
    script = metadata["startup-script"]
    assert script.startswith("#!/bin/bash\n")
    assert "/opt/agency-os/bootstrap/bin/ansible-pull" in script
    assert "playbooks/node.yml" in script
    assert _vars_heredoc(script) == {
        "agency_os_provider": "gcp",
        "agency_os_tags": {"tier": "bulk", "project": "agency-os", "environment": "production"},
        "prefect_worker_api_url": "http://10.152.0.2:4200/api",
        "prefect_worker_pool": "bulk-processing",
        "prefect_worker_queue": "bulk",
        "prefect_worker_stop_timeout": 25,
        "preemption_watcher_mode": "gcp",
    }
    path = tmp_path / "startup-script"
    path.write_text(script)
    check = host.run(f"bash -n {shlex.quote(str(path))}")
    assert check.rc == 0, check.stderr


@pytest.mark.parametrize(("active", "expected_stop"), [(True, True), (False, False)])
def test_shutdown_script_drains_the_worker(host, metadata, tmp_path, active, expected_stop):
    script = metadata["shutdown-script"]
    assert "systemctl stop prefect-worker.service" in script
    path = tmp_path / "shutdown-script"
    path.write_text(script)
    assert host.run(f"bash -n {shlex.quote(str(path))}").rc == 0
    # Run it with stand-ins for systemctl/systemd-cat that record what they are asked to do.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(
        textwrap.dedent(f"""\
            #!/bin/bash
            echo "systemctl $*" >> {shlex.quote(str(calls))}
            [ "$1" != is-active ] || exit {0 if active else 3}
            """)
    )
    (bin_dir / "systemd-cat").write_text("#!/bin/bash\ncat >/dev/null\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    run = host.run(f"PATH={shlex.quote(str(bin_dir))}:/usr/bin:/bin bash {shlex.quote(str(path))}")
    assert run.rc == 0, run.stderr
    recorded = calls.read_text().splitlines()
    assert recorded[0] == "systemctl is-active --quiet prefect-worker.service"
    assert ("systemctl stop prefect-worker.service" in recorded) is expected_stop


# --- the managed instance group -----------------------------------------------------------------
def test_mig_keeps_the_target_size_of_spot_vms_from_the_template(mig, template, gcp_inventory):
    assert mig["targetSize"] == gcp_inventory["gcp_spot_capacity_target_size"]
    assert mig["instanceTemplate"] == template["selfLink"]
    assert mig["baseInstanceName"] == "agency-os-bulk"
    assert mig["zone"].endswith(f"/zones/{gcp_inventory['gcp_zone']}")


# --- the requests ---------------------------------------------------------------------------------
def test_every_request_was_authenticated_and_every_body_fits_the_discovery_document(fake, project):
    doc = load_document()
    api = [r for r in _api(fake.requests()) if f"/projects/{project}/" in r["path"]]
    assert api, "no request reached the fake"
    for record in api:
        assert record["client"].endswith(".iam.gserviceaccount.com")
        assert record["status"] < 400 or (record["method"] == "GET" and record["status"] == 404), record
        if record["body"] is not None:
            method = doc.method(record["method_id"])
            problems = doc.validate(method.request_schema, record["body"], method.id)
            assert not problems, [str(p) for p in problems]


def test_converge_and_idempotence_inserted_each_resource_once(fake, project):
    mutations = [
        (r["method_id"], r["path"].rsplit("/", 1)[-1])
        for r in _api(fake.requests())
        if r["method"] in MUTATING and f"/projects/{project}/" in r["path"]
    ]
    # converge: one insert each; idempotence run and check run: nothing
    assert [m for m, _ in mutations] == ["compute.instanceTemplates.insert", "compute.instanceGroupManagers.insert"]


def test_check_mode_against_the_converged_api_changes_nothing(fake, run_converge):
    before = len(fake.requests())
    result = run_converge("--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", result.stdout), result.stdout
    new = fake.requests()[before:]
    assert new, "check mode should still read the API"
    assert not [r for r in new if r["method"] in MUTATING and r["path"] != "/token"], new


# --- bad credentials ------------------------------------------------------------------------------
BAD_KEYS = {
    "missing": (None, "does not exist"),
    "not-json": ("this is not json\n", "is not valid JSON"),
    "unknown-type": (json.dumps({"type": "api_key", "key": "x"}), "not a service account key nor a credentials file"),
    "user-credentials-incomplete": (
        json.dumps({"type": "authorized_user", "client_id": "x", "client_secret": "y"}),
        "cannot be used",
    ),
    "broken-private-key": (
        json.dumps(
            {
                "type": "service_account",
                "client_email": "spot@agency-os-molecule.iam.gserviceaccount.com",
                "private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
                "token_uri": "http://127.0.0.1:8089/token",
            }
        ),
        "cannot be used",
    ),
}


def _bad_key(tmp_path: Path, case: str) -> tuple[Path, str]:
    content, expected = BAD_KEYS[case]
    path = tmp_path / f"{case}.json"
    if content is not None:
        path.write_text(content)
    return path, expected


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_bad_credentials_stop_the_role_before_any_request(fake, run_converge, tmp_path, case):
    path, expected = _bad_key(tmp_path, case)
    before = len(fake.requests())
    result = run_converge("-e", f"gcp_spot_capacity_service_account_file={path}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "preflight | Stop unless the credentials are usable" in output
    assert expected in output
    assert "GCP_SERVICE_ACCOUNT_FILE" in output, "the message says what to do"
    assert len(fake.requests()) == before, "a request was sent with bad credentials"


@pytest.mark.parametrize("case", ["missing", "broken-private-key"])
def test_bad_credentials_stop_the_module_itself_before_any_request(run_module, fake, variables, tmp_path, case):
    path, expected = _bad_key(tmp_path, case)
    before = len(fake.requests())
    arguments = {
        "resource": f"projects/{variables['gcp_fake_compute_project']}/global/instanceTemplates/x",
        "body": {"name": "x"},
        "api_base_url": f"{fake.url}/compute/v1",
        "service_account_file": str(path),
    }
    result = run_module("gcp_compute_resource", arguments)
    assert result.returncode != 0, result.stdout
    assert "FAILED!" in result.stdout
    assert expected in result.stdout
    assert len(fake.requests()) == before


# --- credentials without a key file --------------------------------------------------------------
def _user_credentials(tmp_path: Path, fake, login: str = "1//molecule-login") -> Path:
    """What `gcloud auth application-default login` writes, with the token endpoint of the fake."""
    path = tmp_path / "application_default_credentials.json"
    info = {
        "type": "authorized_user",
        "client_id": "molecule-client.apps.googleusercontent.com",
        "client_secret": "molecule-secret",
        "refresh_token": login,
        "token_uri": f"{fake.url}/token",
    }
    path.write_text(json.dumps(info))
    return path


def _no_adc_env(tmp_path: Path) -> dict[str, str]:
    """An environment where ADC finds only what the test gives: no gcloud login, no GCE metadata probe."""
    return {"GCP_SERVICE_ACCOUNT_FILE": "", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"), "NO_GCE_CHECK": "True"}


def test_user_credentials_from_a_gcloud_login_work_without_a_key(fake, run_converge, tmp_path):
    path = _user_credentials(tmp_path, fake)
    before = len(fake.requests())
    env = {**_no_adc_env(tmp_path), "GOOGLE_APPLICATION_CREDENTIALS": str(path)}
    result = run_converge("-e", "gcp_spot_capacity_service_account_file=", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Authenticating with Application Default Credentials from GOOGLE_APPLICATION_CREDENTIALS" in output
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s+", output), "converged already: nothing to change"
    api = [r for r in fake.requests()[before:] if r["path"] != "/token"]
    assert api and {r.get("client") for r in api} == {"user:molecule-client.apps.googleusercontent.com"}


def test_the_credentials_file_may_hold_user_credentials(fake, run_converge, tmp_path):
    path = _user_credentials(tmp_path, fake)
    result = run_converge("-e", f"gcp_spot_capacity_service_account_file={path}", env=_no_adc_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Authenticating with user credentials (gcloud auth application-default login)" in output


def test_a_revoked_login_fails_with_googles_answer(fake, run_converge, tmp_path):
    path = _user_credentials(tmp_path, fake, login="revoked")
    result = run_converge("-e", f"gcp_spot_capacity_service_account_file={path}", env=_no_adc_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Token has been expired or revoked" in output


def test_no_credentials_at_all_stop_the_role_saying_what_to_do(fake, run_converge, tmp_path):
    before = len(fake.requests())
    result = run_converge("-e", "gcp_spot_capacity_service_account_file=", env=_no_adc_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "no Application Default Credentials found" in output
    assert "gcloud auth application-default login" in output
    assert len(fake.requests()) == before
