"""The user data: node_bootstrap's cloud-config, valid for cloud-init, running the ansible-pull bootstrap."""

import base64
import re
import stat
import subprocess

import pytest
import yaml

CLOUD_INIT = "/usr/bin/cloud-init"


@pytest.fixture(scope="module")
def cloud_config(template_data):
    return base64.b64decode(template_data["UserData"]).decode()


@pytest.fixture(scope="module")
def boot_script(cloud_config):
    (entry,) = yaml.safe_load(cloud_config)["write_files"]
    assert entry["encoding"] == "b64"
    return base64.b64decode(entry["content"]).decode()


@pytest.fixture(scope="module")
def node_vars(boot_script):
    block = re.search(r"<<'AGENCY_OS_VARS'\n(.*?)\nAGENCY_OS_VARS\n", boot_script, re.DOTALL)
    assert block, boot_script
    return yaml.safe_load(block.group(1))


def test_user_data_is_a_cloud_config_that_cloud_init_accepts(cloud_config, tmp_path):
    assert cloud_config.startswith("#cloud-config\n")
    path = tmp_path / "user-data.yml"
    path.write_text(cloud_config)
    result = subprocess.run([CLOUD_INIT, "schema", "-c", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(("Valid cloud-config", "Valid schema")), result.stdout


def test_cloud_config_writes_and_runs_the_bootstrap(cloud_config):
    config = yaml.safe_load(cloud_config)
    (entry,) = config["write_files"]
    assert entry["path"] == "/usr/local/sbin/agency-os-bootstrap"
    assert entry["permissions"] == "0700"
    assert config["runcmd"] == [["/usr/local/sbin/agency-os-bootstrap"]]


def test_bootstrap_runs_ansible_pull_of_the_node_playbook(boot_script):
    assert boot_script.startswith("#!/bin/bash\n")
    assert "/opt/agency-os/bootstrap/bin/ansible-pull" in boot_script
    assert "--url " in boot_script
    assert "playbooks/node.yml" in boot_script
    result = subprocess.run(["bash", "-n"], input=boot_script, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_bootstrap_log_is_readable_by_root_only(boot_script, tmp_path):
    """The script's first lines, run with the log moved into tmp_path: a new log and an old one
    (created 0644 by an earlier boot) both end up 0600 before anything is written to them."""
    head = boot_script.split("\necho ", 1)[0]
    assert "/var/log/agency-os-bootstrap.log" in head
    for earlier in (None, 0o644):
        log = tmp_path / f"bootstrap-{earlier}.log"
        if earlier is not None:
            log.touch(mode=earlier)
            log.chmod(earlier)
        script = head.replace("/var/log/agency-os-bootstrap.log", str(log)) + "\necho written\n"
        subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True)
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert log.read_text() == "written\n"


def test_node_vars_make_an_aws_bulk_worker(node_vars, inventory):
    assert node_vars["agency_os_provider"] == "aws"
    assert node_vars["agency_os_tags"] == inventory["agency_os_tags"]
    assert node_vars["prefect_worker_api_url"] == "http://127.0.0.1:4200/api"
    # Pool and queue come from the flow catalog's bulk tier.
    assert node_vars["prefect_worker_pool"] == "bulk-processing"
    assert node_vars["prefect_worker_queue"] == "bulk"
    # Inside the two-minute Spot notice, with room for the OS to go down.
    assert node_vars["prefect_worker_stop_timeout"] == 110
    assert node_vars["preemption_watcher_mode"] == "aws"


def test_api_key_is_read_from_ssm_with_the_instance_profile(boot_script):
    assert 'Name="/agency-os/prefect-api-key", WithDecryption=True' in boot_script
    assert "boto3" in boot_script
