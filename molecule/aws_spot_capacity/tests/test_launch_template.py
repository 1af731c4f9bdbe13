"""The launch template the role built, read back from moto.

moto does not apply a template's metadata or credit options to the instances it launches, so these
tests check the template itself: that is what AWS applies to every instance the group launches.
"""

import pytest
from conftest import NAME, tag_dict

DEBIAN_OWNER = "136693071363"


def test_only_one_version_exists_after_converge_and_idempotence(template_versions):
    # A second run that changed nothing must not have added a version either.
    assert [v["VersionNumber"] for v in template_versions] == [1]


def test_image_is_the_newest_official_debian_12_amd64(ec2, template_data):
    images = ec2.describe_images(
        Owners=[DEBIAN_OWNER],
        Filters=[{"Name": "name", "Values": ["debian-12-amd64-*"]}, {"Name": "architecture", "Values": ["x86_64"]}],
    )["Images"]
    newest = max(images, key=lambda image: image["CreationDate"])
    assert template_data["ImageId"] == newest["ImageId"] == "ami-0de1a12b0000000b2"
    # Neither the newer arm64 image nor the newer look-alike of another owner was picked.
    assert template_data["ImageId"] not in {"ami-0de1a12b0000000c3", "ami-0de1a12b0000000d4"}


def test_first_instance_type_is_the_preferred_one(template_data, inventory):
    assert template_data["InstanceType"] == inventory["aws_spot_capacity_instance_types"][0] == "t3.small"


def test_spot_is_bought_by_the_group_not_requested_by_the_template(template_data, group):
    # AWS refuses a template with InstanceMarketOptions in a group with a mixed instances policy
    # ("Incompatible launch template"); moto does not, so the test guards it.
    assert "InstanceMarketOptions" not in template_data
    distribution = group["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["OnDemandBaseCapacity"] == 0
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0


def test_imdsv2_is_required(template_data):
    metadata = template_data["MetadataOptions"]
    assert metadata["HttpTokens"] == "required"
    assert metadata["HttpEndpoint"] == "enabled"
    assert metadata["HttpPutResponseHopLimit"] in (1, 2)


def test_cpu_credits_are_standard(template_data):
    assert template_data["CreditSpecification"] == {"CpuCredits": "standard"}


@pytest.mark.parametrize("resource_type", ["instance", "volume"])
def test_instances_and_volumes_are_tagged(template_data, expected_tags, resource_type):
    specs = {spec["ResourceType"]: tag_dict(spec["Tags"]) for spec in template_data["TagSpecifications"]}
    assert specs[resource_type] == expected_tags
    assert {"tier", "project", "environment"} <= specs[resource_type].keys()


def test_template_itself_is_tagged(ec2, expected_tags):
    template = ec2.describe_launch_templates(LaunchTemplateNames=[NAME])["LaunchTemplates"][0]
    assert tag_dict(template["Tags"]) == expected_tags


def test_root_volume_is_encrypted_gp3_and_goes_with_the_instance(template_data):
    (mapping,) = template_data["BlockDeviceMappings"]
    assert mapping["DeviceName"] == "/dev/xvda"
    assert mapping["Ebs"] == {"Encrypted": True, "DeleteOnTermination": True, "VolumeSize": 12, "VolumeType": "gp3"}


def test_instance_profile_is_attached(template_data):
    assert template_data["IamInstanceProfile"]["Arn"].endswith(":instance-profile/agency-os-bulk-node")


def test_self_shutdown_terminates(template_data):
    assert template_data["InstanceInitiatedShutdownBehavior"] == "terminate"


def test_security_group_lets_nothing_in_and_everything_out(ec2, template_data, expected_tags):
    (group_id,) = template_data["SecurityGroupIds"]
    (security_group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert security_group["GroupName"] == NAME
    assert security_group["IpPermissions"] == []
    (egress,) = security_group["IpPermissionsEgress"]
    assert egress["IpProtocol"] == "-1"
    assert [r["CidrIp"] for r in egress["IpRanges"]] == ["0.0.0.0/0"]
    assert tag_dict(security_group["Tags"]) == expected_tags
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    assert [r for r in rules["SecurityGroupRules"] if not r["IsEgress"]] == []


def test_launched_instances_carry_the_tags(ec2, group, expected_tags):
    instance_ids = [i["InstanceId"] for i in group["Instances"]]
    reservations = ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert instances
    for instance in instances:
        assert tag_dict(instance["Tags"]) == expected_tags
