"""roles/gcp_spot_capacity and its Compute module against the official Compute v1 discovery document.

Every request body the role sends, in each of its modes, is checked against the schemas of the
discovery document Google publishes for the Compute API (shipped in google-api-python-client):
each field exists where it is used, JSON types match, enum values are allowed, required fields
are present and no output-only field is sent. The role runs for real (ansible-playbook) against a
local fake of the API (tests/support/gcp_compute_fake) that records the requests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, load_plugin
from tests.support.gcp_compute_fake import FakeCompute, FakeComputeServer, load_document, make_service_account_key
from tests.support.gcp_compute_fake.server import public_key_of

BIN = Path(sys.executable).parent
ZONE = "australia-southeast1-a"
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


gcp_compute = load_plugin("gcp_compute", "plugins/module_utils/gcp_compute.py")


# --- the validator itself -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doc():
    return load_document()


def test_the_discovery_document_knows_the_spot_fields_the_role_relies_on(doc):
    scheduling = doc.schemas["Scheduling"]["properties"]
    assert "SPOT" in scheduling["provisioningModel"]["enum"]
    assert {"STOP", "DELETE"} <= set(scheduling["instanceTerminationAction"]["enum"])
    assert "TERMINATE" in scheduling["onHostMaintenance"]["enum"]
    assert scheduling["automaticRestart"]["type"] == "boolean"
    assert doc.method("compute.instanceGroupManagers.setInstanceTemplate").request_schema == (
        "InstanceGroupManagersSetInstanceTemplateRequest"
    )


@pytest.mark.parametrize(
    ("body", "kind", "path"),
    [
        ({"name": "t", "properties": {"machineType": "e2-small", "spot": True}}, "unknown-field", "properties.spot"),
        (
            {"name": "t", "properties": {"machineType": "e2-small", "scheduling": {"provisioningModel": "SPOTTY"}}},
            "enum",
            "properties.scheduling.provisioningModel",
        ),
        (
            {"name": "t", "properties": {"machineType": "e2-small", "scheduling": {"automaticRestart": "false"}}},
            "type",
            "properties.scheduling.automaticRestart",
        ),
        ({"name": "t", "properties": {"machineType": "e2-small", "labels": {"a": 1}}}, "type", "properties.labels.a"),
        (
            {
                "name": "t",
                "properties": {"machineType": "e2-small", "disks": [{"initializeParams": {"diskSizeGb": "ten"}}]},
            },
            "type",
            "properties.disks[0].initializeParams.diskSizeGb",
        ),
        ({"name": "t", "id": "1", "properties": {"machineType": "e2-small"}}, "output-only", "id"),
        ({"name": "t", "properties": {}}, "required", "properties.machineType"),
        (
            {
                "name": "t",
                "properties": {"machineType": "e2-small", "metadata": {"items": [{"key": "a b", "value": ""}]}},
            },
            "pattern",
            "properties.metadata.items[0].key",
        ),
    ],
)
def test_the_validator_catches_each_kind_of_mistake(doc, body, kind, path):
    problems = doc.validate("InstanceTemplate", body, "compute.instanceTemplates.insert")
    assert [(p.kind, p.path) for p in problems] == [(kind, f"resource.{path}")]


def test_the_validator_accepts_a_correct_body(doc):
    body = {
        "name": "t",
        "properties": {
            "machineType": "e2-small",
            "scheduling": {"provisioningModel": "SPOT", "instanceTerminationAction": "STOP"},
            "disks": [{"boot": True, "initializeParams": {"diskSizeGb": "10"}}],
            "labels": {"tier": "bulk"},
        },
    }
    assert doc.validate("InstanceTemplate", body, "compute.instanceTemplates.insert") == []


# --- the module's comparison rules ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("desired", "existing", "paths"),
    [
        (
            {"a": "global/networks/default"},
            {"a": "https://www.googleapis.com/compute/v1/projects/p/global/networks/default"},
            [],
        ),
        (
            {"t": "projects/p/global/instanceTemplates/x"},
            {"t": "https://www.googleapis.com/compute/v1/projects/p/global/instanceTemplates/x"},
            [],
        ),
        (
            {"t": "projects/p/global/instanceTemplates/x"},
            {"t": "https://h/compute/v1/projects/p/global/instanceTemplates/y"},
            ["t"],
        ),
        ({"s": {"automaticRestart": False}}, {"s": {}}, []),
        ({"s": {"automaticRestart": False}}, {"s": {"automaticRestart": True}}, ["s.automaticRestart"]),
        ({"size": "10"}, {"size": 10}, []),
        ({"n": 2}, {"n": 1, "id": "9"}, ["n"]),
        ({"l": [{"k": "a"}]}, {"l": [{"k": "a", "kind": "x"}]}, []),
        ({"l": [{"k": "a"}]}, {"l": [{"k": "a"}, {"k": "b"}]}, ["l"]),
        ({"accessConfigs": []}, {}, []),
    ],
)
def test_differences_only_compare_the_managed_fields(desired, existing, paths):
    assert [p for p, _, _ in gcp_compute.differences(desired, existing)] == paths


# --- the role and the module against the fake API -------------------------------------------------
@pytest.fixture(scope="module")
def fake_api(tmp_path_factory):
    server = FakeComputeServer(port=0, fake=FakeCompute(op_delay=5))
    key = tmp_path_factory.mktemp("gcp") / "service-account.json"
    make_service_account_key(key, server.token_uri, "agency-os-pytest")
    server.fake.trusted_keys.update([public_key_of(key)])
    server.start_background()
    server.key = key
    yield server
    server.stop()


def _requests(fake_api, project: str, since: int = 0) -> list[dict]:
    return [r for r in fake_api.fake.requests[since:] if f"/projects/{project}/" in r["path"]]


def _run_role(
    fake_api, tmp_path: Path, project: str, *options: str, **overrides: object
) -> subprocess.CompletedProcess:
    """Run the role with the real GCP inventory, aimed at the fake (extra vars win over everything)."""
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "GCP Spot capacity",
                    "hosts": "controller",
                    "gather_facts": False,
                    "roles": ["gcp_spot_capacity"],
                }
            ]
        )
    )
    extra = {
        "gcp_project": project,
        "gcp_spot_capacity_api_base_url": fake_api.api_base_url,
        "gcp_spot_capacity_service_account_file": str(fake_api.key),
        "gcp_spot_capacity_prefect_api_url": "http://10.152.0.2:4200/api",
        "gcp_spot_capacity_operation_timeout": 30,
        **overrides,
    }
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    command = [str(BIN / "ansible-playbook"), "-i", str(ROOT / "inventories/gcp"), "-e", f"@{tmp_path / 'extra.json'}"]
    return _ansible([*command, *options, str(playbook)])


def _run_module(fake_api, arguments: dict, *options: str) -> subprocess.CompletedProcess:
    arguments = {"api_base_url": fake_api.api_base_url, "service_account_file": str(fake_api.key), **arguments}
    command = [str(BIN / "ansible"), "localhost", "-i", str(ROOT / "inventories/gcp"), "-m", "gcp_compute_resource"]
    return _ansible([*command, "-a", json.dumps(arguments), *options])


def _ansible(command: list[str]) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "0",
    }
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def _mutations(records: list[dict]) -> list[str]:
    return [r["method_id"] for r in records if r["method"] in MUTATING]


VARIANTS = {
    "spot-delete-defaults": {},
    "spot-stop-external-ip-service-account": {
        "gcp_spot_capacity_termination_action": "STOP",
        "gcp_spot_capacity_external_ip": True,
        "gcp_spot_capacity_subnetwork": "regions/australia-southeast1/subnetworks/bulk",
        "gcp_spot_capacity_vm_service_account": "bulk-worker@agency-os-pytest.iam.gserviceaccount.com",
        "gcp_spot_capacity_api_key_source": (
            "gcp-secret:projects/agency-os-pytest/secrets/prefect-api-key/versions/latest"
        ),
        "gcp_spot_capacity_target_size": 3,
        "agency_os_tags": {"tier": "bulk", "generation": 2},
    },
    "legacy-preemptible": {"gcp_spot_capacity_provisioning_model": "STANDARD_PREEMPTIBLE"},
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_request_body_the_role_sends_fits_the_discovery_document(fake_api, doc, tmp_path, variant):
    project = f"pytest-{variant}"[:30].rstrip("-")
    result = _run_role(fake_api, tmp_path, project, **VARIANTS[variant])
    assert result.returncode == 0, result.stdout + result.stderr
    sent = [r for r in _requests(fake_api, project) if r["body"] is not None]
    assert _mutations(sent) == ["compute.instanceTemplates.insert", "compute.instanceGroupManagers.insert"]
    for record in sent:
        assert record["status"] == 200, record
        method = doc.method(record["method_id"])
        problems = doc.validate(method.request_schema, record["body"], method.id)
        assert not problems, [str(p) for p in problems]

    template, mig = (r["body"] for r in sent)
    properties = template["properties"]
    scheduling = properties["scheduling"]
    assert scheduling["automaticRestart"] is False
    assert scheduling["onHostMaintenance"] == "TERMINATE"
    if variant == "legacy-preemptible":
        assert scheduling == {"preemptible": True, "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
    else:
        assert scheduling["provisioningModel"] == "SPOT"
        assert scheduling["instanceTerminationAction"] == VARIANTS[variant].get(
            "gcp_spot_capacity_termination_action", "DELETE"
        )
    nic = properties["networkInterfaces"][0]
    external = VARIANTS[variant].get("gcp_spot_capacity_external_ip", False)
    assert bool(nic.get("accessConfigs")) is external
    assert [m["key"] for m in properties["metadata"]["items"]] == ["startup-script", "shutdown-script"]
    tags = VARIANTS[variant].get(
        "agency_os_tags", {"tier": "bulk", "project": "agency-os", "environment": "production"}
    )
    assert properties["labels"] == {key: str(value) for key, value in tags.items()}
    account = VARIANTS[variant].get("gcp_spot_capacity_vm_service_account")
    expected_accounts = [{"email": account, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]
    assert properties["serviceAccounts"] == (expected_accounts if account else [])
    startup = properties["metadata"]["items"][0]["value"]
    assert ("secretmanager.googleapis.com" in startup) is bool(account), "gcp-secret API key read at boot"
    assert mig["instanceTemplate"] == f"projects/{project}/global/instanceTemplates/{template['name']}"
    assert mig["targetSize"] == VARIANTS[variant].get("gcp_spot_capacity_target_size", 1)


@pytest.mark.slow
def test_changed_inputs_make_a_new_template_and_repoint_the_group(fake_api, tmp_path):
    project = "pytest-rotation"
    templates = f"projects/{project}/global/instanceTemplates/"
    mig_path = f"projects/{project}/zones/{ZONE}/instanceGroupManagers/agency-os-bulk"

    assert _run_role(fake_api, tmp_path, project).returncode == 0
    first = next(k for k in fake_api.fake.resources if k.startswith(templates))

    mark = len(fake_api.fake.requests)
    result = _run_role(
        fake_api, tmp_path, project, gcp_spot_capacity_machine_type="e2-medium", gcp_spot_capacity_target_size=2
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _mutations(_requests(fake_api, project, mark)) == [
        "compute.instanceTemplates.insert",
        "compute.instanceGroupManagers.setInstanceTemplate",
        "compute.instanceGroupManagers.resize",
    ]
    names = sorted(k for k in fake_api.fake.resources if k.startswith(templates))
    assert len(names) == 2, "the old template stays (the API refuses to delete one in use)"
    second = next(n for n in names if n != first)
    mig = fake_api.fake.resources[mig_path]
    assert mig["instanceTemplate"].endswith("/" + second)
    assert mig["targetSize"] == 2
    assert fake_api.fake.resources[second]["properties"]["machineType"] == "e2-medium"

    mark = len(fake_api.fake.requests)
    result = _run_role(
        fake_api, tmp_path, project, gcp_spot_capacity_machine_type="e2-medium", gcp_spot_capacity_target_size=2
    )
    assert result.returncode == 0
    assert _mutations(_requests(fake_api, project, mark)) == [], "same inputs, no change"

    # Back to the first inputs: the template with that content exists, so only the group moves.
    mark = len(fake_api.fake.requests)
    assert _run_role(fake_api, tmp_path, project).returncode == 0
    assert _mutations(_requests(fake_api, project, mark)) == [
        "compute.instanceGroupManagers.setInstanceTemplate",
        "compute.instanceGroupManagers.resize",
    ]
    assert fake_api.fake.resources[mig_path]["instanceTemplate"].endswith("/" + first)


@pytest.mark.slow
def test_the_module_raises_the_error_of_a_failed_operation(fake_api):
    project = "pytest-operation-error"
    result = _run_module(
        fake_api,
        {
            "resource": f"projects/{project}/zones/{ZONE}/instanceGroupManagers/orphan",
            "body": {
                "name": "orphan",
                "baseInstanceName": "orphan",
                "instanceTemplate": f"projects/{project}/global/instanceTemplates/missing",
                "targetSize": 1,
            },
        },
    )
    assert result.returncode != 0
    assert "failed: RESOURCE_NOT_FOUND" in result.stdout
    assert "instanceTemplates/missing' was not found" in result.stdout


@pytest.mark.slow
def test_the_module_reports_what_the_api_rejects(fake_api):
    project = "pytest-rejected"
    result = _run_module(
        fake_api,
        {
            "resource": f"projects/{project}/global/instanceTemplates/t",
            "body": {"name": "t", "properties": {"machineType": "e2-small", "spotVm": True}},
        },
    )
    assert result.returncode != 0
    assert "HTTP 400" in result.stdout
    assert 'Unknown name \\"spotVm\\"' in result.stdout or 'Unknown name "spotVm"' in result.stdout
    assert "compute.instanceTemplates.insert" in [r["method_id"] for r in _requests(fake_api, project)]
    assert f"projects/{project}/global/instanceTemplates/t" not in fake_api.fake.resources


@pytest.mark.slow
def test_the_module_creates_checks_refuses_drift_and_deletes(fake_api):
    project = "pytest-lifecycle"
    resource = f"projects/{project}/global/instanceTemplates/t"
    body = {"name": "t", "properties": {"machineType": "e2-small", "scheduling": {"provisioningModel": "SPOT"}}}

    mark = len(fake_api.fake.requests)
    check = _run_module(fake_api, {"resource": resource, "body": body}, "--check")
    assert check.returncode == 0 and "CHANGED" in check.stdout, check.stdout
    assert _mutations(_requests(fake_api, project, mark)) == [], "check mode sends no mutation"

    assert "CHANGED" in _run_module(fake_api, {"resource": resource, "body": body}).stdout
    again = _run_module(fake_api, {"resource": resource, "body": body})
    assert again.returncode == 0 and "SUCCESS" in again.stdout, again.stdout

    drift = {"name": "t", "properties": {"machineType": "e2-medium"}}
    refused = _run_module(fake_api, {"resource": resource, "body": drift})
    assert refused.returncode != 0
    assert "cannot be changed in place" in refused.stdout
    assert "properties.machineType" in refused.stdout

    assert "CHANGED" in _run_module(fake_api, {"resource": resource, "state": "absent"}).stdout
    assert resource not in fake_api.fake.resources
    gone = _run_module(fake_api, {"resource": resource, "state": "absent"})
    assert gone.returncode == 0 and "SUCCESS" in gone.stdout


# --- preflight and check mode ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gcp_project": ""}, "Set gcp_project to the id of the GCP project"),
        ({"gcp_zone": "us-central1-a"}, "in the region gcp_region"),
        ({"gcp_spot_capacity_machine_type": "e2 small"}, "must be a machine type name such as e2-small"),
        ({"gcp_spot_capacity_worker_stop_timeout": 30}, "inside GCP's 30 s preemption window"),
        ({"agency_os_tags": {"Tier": "Bulk"}}, "GCP labels (agency_os_tags or gcp_spot_capacity_labels)"),
        ({"gcp_spot_capacity_prefect_api_url": ""}, "Set gcp_spot_capacity_prefect_api_url"),
    ],
    ids=["no-project", "zone-outside-region", "machine-type", "stop-timeout", "labels", "prefect-url"],
)
def test_the_preflight_stops_bad_inputs_before_any_request(fake_api, tmp_path, overrides, expected):
    mark = len(fake_api.fake.requests)
    result = _run_role(fake_api, tmp_path, "pytest-preflight", **overrides)
    assert result.returncode != 0
    assert "preflight | " in result.stdout
    assert expected in result.stdout, result.stdout
    assert fake_api.fake.requests[mark:] == []


@pytest.mark.slow
def test_check_mode_on_an_empty_project_reports_both_creations_and_sends_nothing(fake_api, tmp_path):
    project = "pytest-check-empty"
    result = _run_role(fake_api, tmp_path, project, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=2" in result.stdout
    assert _mutations(_requests(fake_api, project)) == []
    assert not [k for k in fake_api.fake.resources if f"projects/{project}/" in k]
