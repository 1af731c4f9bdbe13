"""Preflight failures stop the role before it changes anything; --check against a converged moto is clean."""

import json

import pytest
from conftest import CREDENTIAL_VARIABLES, NAME, run_playbook

ASG_TASK = "aws_spot_capacity : asg | Create or update the Auto Scaling group"


def _stopped_in_preflight(run, check):
    """The run failed on the named preflight check, having changed nothing; returns its message."""
    assert run.returncode != 0
    name, result = run.failed
    assert name == f"aws_spot_capacity : preflight | {check}"
    assert run.stats["changed"] == 0
    assert not any(n.startswith(("aws_spot_capacity : network", "aws_spot_capacity : asg")) for n, _ in run.results)
    return result["msg"]


def test_missing_credentials_stop_the_role_with_instructions():
    message = _stopped_in_preflight(run_playbook(drop_env=CREDENTIAL_VARIABLES), "Check the credentials")
    assert "No usable AWS credentials for ap-southeast-2" in message
    assert "Unable to locate credentials" in message
    assert "AWS_ACCESS_KEY_ID" in message
    assert "AWS_PROFILE" in message


@pytest.mark.parametrize("region", ["ap-southeast-9", "ap-southest-2", "sydney"])
def test_wrong_region_stops_the_role_with_instructions(region):
    message = _stopped_in_preflight(
        run_playbook("--extra-vars", f"aws_spot_capacity_region={region}"), "Check the region"
    )
    assert f"'{region}' is not an AWS region" in message
    assert "inventories/aws/group_vars/all/provider.yml" in message
    assert "ap-southeast-2" in message


def test_missing_subnets_stop_the_role_with_instructions():
    run = run_playbook("--extra-vars", json.dumps({"aws_spot_capacity_subnet_ids": []}))
    message = _stopped_in_preflight(run, "Check the subnets are given")
    assert "aws_spot_capacity_subnet_ids must list the subnets" in message
    assert "inventories/aws/group_vars/all/capacity.yml" in message


def test_unknown_subnet_stops_the_role():
    run = run_playbook("--extra-vars", json.dumps({"aws_spot_capacity_subnet_ids": ["subnet-0123456789abcdef0"]}))
    message = _stopped_in_preflight(run, "Check the subnets exist in one VPC")
    assert "subnet-0123456789abcdef0" in message
    assert "must be existing subnets of one VPC" in message


def test_unknown_ami_stops_the_role():
    run = run_playbook("--extra-vars", "aws_spot_capacity_ami_id=ami-0000000000000dead")
    message = _stopped_in_preflight(run, "Check an AMI was found")
    assert "AMI ami-0000000000000dead does not exist in ap-southeast-2" in message


def test_no_matching_ami_stops_the_role():
    run = run_playbook("--extra-vars", "aws_spot_capacity_ami_name=debian-13-amd64-*")
    message = _stopped_in_preflight(run, "Check an AMI was found")
    assert "No available x86_64 AMI of owner 136693071363 is named debian-13-amd64-*" in message


def test_missing_prefect_api_url_stops_the_role():
    run = run_playbook("--extra-vars", json.dumps({"aws_spot_capacity_prefect_api_url": ""}))
    message = _stopped_in_preflight(run, "Check what the nodes need")
    assert "aws_spot_capacity_prefect_api_url" in message


def test_check_mode_against_the_converged_group_is_clean():
    run = run_playbook("--check", "--diff")
    assert run.returncode == 0, run.stderr
    assert run.stats["failures"] == 0
    assert run.stats["unreachable"] == 0
    # amazon.aws.autoscaling_group cannot compare in check mode: it reports every existing group as
    # "would have modified if required". Everything else (security group, launch template, Capacity
    # Rebalancing) must report no change.
    assert set(run.changed) <= {ASG_TASK}, sorted(run.changed)
    if run.changed:
        assert "Would have modified AutoScalingGroup" in run.changed[ASG_TASK]["msg"]


def test_check_mode_shows_a_template_change_without_making_it(ec2):
    before = ec2.describe_launch_template_versions(LaunchTemplateName=NAME)["LaunchTemplateVersions"]
    # An explicit, older AMI: check mode must report the new template version it would create...
    run = run_playbook("--check", "--diff", "--extra-vars", "aws_spot_capacity_ami_id=ami-0de1a12b0000000a1")
    assert run.returncode == 0, run.stderr
    assert "aws_spot_capacity : launch_template | Create or update the launch template" in run.changed
    # ...and leave the template as it was.
    after = ec2.describe_launch_template_versions(LaunchTemplateName=NAME)["LaunchTemplateVersions"]
    assert [v["VersionNumber"] for v in after] == [v["VersionNumber"] for v in before] == [1]
