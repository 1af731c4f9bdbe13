"""Shared helpers: boto3 clients on the scenario's moto_server, the AWS inventory, playbook runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

MOTO_URL = os.environ["AGENCY_OS_MOTO_URL"]
SCENARIO_DIR = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
PROJECT_DIR = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
AWS_GROUP_VARS = PROJECT_DIR / "inventories" / "aws" / "group_vars" / "all"
NAME = "agency-os-bulk-spot"
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _inventory_vars():
    merged = {}
    for path in sorted(AWS_GROUP_VARS.glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


@pytest.fixture(scope="session")
def inventory():
    """The AWS inventory's group_vars, which the scenario links as its own."""
    return _inventory_vars()


@pytest.fixture(scope="session")
def region(inventory):
    return inventory["aws_region"]


@pytest.fixture(scope="session")
def ec2(region):
    return boto3.client("ec2", endpoint_url=MOTO_URL, region_name=region)


@pytest.fixture(scope="session")
def autoscaling(region):
    return boto3.client("autoscaling", endpoint_url=MOTO_URL, region_name=region)


@pytest.fixture
def group(autoscaling):
    """The Auto Scaling group as DescribeAutoScalingGroups returns it now."""
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[NAME])["AutoScalingGroups"]
    assert len(groups) == 1, f"expected one group named {NAME}, got {groups}"
    return groups[0]


@pytest.fixture(scope="session")
def template_versions(ec2):
    return ec2.describe_launch_template_versions(LaunchTemplateName=NAME)["LaunchTemplateVersions"]


@pytest.fixture(scope="session")
def template_data(template_versions):
    """The launch template's latest version (the one the group uses)."""
    return max(template_versions, key=lambda v: v["VersionNumber"])["LaunchTemplateData"]


@pytest.fixture(scope="session")
def expected_tags(inventory):
    return {**inventory["agency_os_tags"], "Name": NAME}


def tag_dict(tags):
    return {t["Key"]: t["Value"] for t in tags if not t["Key"].startswith("aws:")}


class PlaybookRun:
    """One ansible-playbook run of the scenario's converge.yml, reported by the ansible.posix.json callback."""

    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stderr = proc.stderr
        try:
            self.report = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON: {proc.stdout[-2000:]} {proc.stderr[-2000:]}") from exc
        self.stats = self.report["stats"]["localhost"]
        self.results = [
            (task["task"]["name"], task["hosts"]["localhost"])
            for play in self.report["plays"]
            for task in play["tasks"]
            if "localhost" in task["hosts"]
        ]

    @property
    def failed(self):
        """(task name, result) of the task that failed the run."""
        return next((name, result) for name, result in self.results if result.get("failed"))

    @property
    def changed(self):
        return {name: result for name, result in self.results if result.get("changed")}


def run_playbook(*args, drop_env=()):
    """Run converge.yml against the scenario's inventory, as molecule does, with extra arguments."""
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    cmd = ["ansible-playbook", "--inventory", str(INVENTORY_DIR), str(SCENARIO_DIR / "converge.yml"), *args]
    proc = subprocess.run(cmd, cwd=SCENARIO_DIR, env=env, capture_output=True, text=True, timeout=600, check=False)
    return PlaybookRun(proc)


def run_module(*module_args, check=False, diff=False):
    """Run the repo module aws_asg_capacity_rebalance ad hoc on localhost against moto (JSON output)."""
    env = dict(
        os.environ,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="true",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )
    cmd = [
        "ansible",
        "localhost",
        "--inventory",
        "localhost,",
        "--connection",
        "local",
        "--extra-vars",
        json.dumps({"ansible_python_interpreter": sys.executable}),
        "--module-name",
        "aws_asg_capacity_rebalance",
        "--args",
        json.dumps({"name": NAME, "region": "ap-southeast-2", "endpoint_url": MOTO_URL, **dict(module_args)}),
    ]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(cmd, cwd=SCENARIO_DIR, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
