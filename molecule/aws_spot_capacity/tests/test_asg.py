"""The Auto Scaling group: mixed instances, Spot only, price-capacity-optimized, Capacity Rebalancing."""

from conftest import NAME, tag_dict


def test_mixed_instances_policy_buys_only_spot_price_capacity_optimized(group, inventory):
    distribution = group["MixedInstancesPolicy"]["InstancesDistribution"]
    assert distribution["SpotAllocationStrategy"] == "price-capacity-optimized"
    assert distribution["OnDemandBaseCapacity"] == 0
    assert distribution["OnDemandPercentageAboveBaseCapacity"] == 0
    # The inventory's cap (see its comment: a cap raises interruptions), on the group, not the template.
    assert distribution["SpotMaxPrice"] == str(inventory["aws_spot_capacity_max_price"])


def test_overrides_list_every_instance_type_in_preference_order(group, inventory):
    overrides = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"]
    assert [o["InstanceType"] for o in overrides] == inventory["aws_spot_capacity_instance_types"]
    assert len(overrides) >= 2, "price-capacity-optimized needs alternatives to choose from"


def test_group_uses_the_latest_template_version(group, template_versions):
    spec = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert spec["LaunchTemplateName"] == NAME
    assert spec["Version"] == str(max(v["VersionNumber"] for v in template_versions))


def test_capacity_rebalance_is_on(group):
    assert group["CapacityRebalance"] is True


def test_size_comes_from_the_inventory(group, inventory):
    assert group["MinSize"] == inventory["aws_spot_capacity_min_size"]
    assert group["MaxSize"] == inventory["aws_spot_capacity_max_size"]
    assert group["DesiredCapacity"] == inventory["aws_spot_capacity_desired_capacity"]
    assert len(group["Instances"]) == inventory["aws_spot_capacity_desired_capacity"]
    assert {i["LifecycleState"] for i in group["Instances"]} == {"InService"}


def test_group_spans_the_given_subnets(group, ec2):
    subnets = ec2.describe_subnets(Filters=[{"Name": "tag:Name", "Values": ["agency-os-molecule-*"]}])["Subnets"]
    assert sorted(group["VPCZoneIdentifier"].split(",")) == sorted(s["SubnetId"] for s in subnets)
    assert sorted(group["AvailabilityZones"]) == ["ap-southeast-2a", "ap-southeast-2b"]


def test_group_is_tagged_without_propagation(group, expected_tags):
    assert tag_dict(group["Tags"]) == expected_tags
    # Instances and volumes get their tags from the template's tag specifications instead.
    assert {t["PropagateAtLaunch"] for t in group["Tags"]} == {False}


def test_group_metrics_are_collected(group):
    assert {m["Metric"] for m in group["EnabledMetrics"]} >= {"GroupInServiceInstances", "GroupDesiredCapacity"}


def test_a_reclaimed_instance_is_replaced(autoscaling, group):
    # What a lone ec2_spot_instance could not do: terminate an instance (as a Spot
    # interruption would) and the group launches a replacement to keep the desired capacity.
    victim = group["Instances"][0]["InstanceId"]
    autoscaling.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=False)
    after = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[NAME])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in after["Instances"] if i["LifecycleState"] == "InService"]
    assert victim not in ids
    assert len(ids) == group["DesiredCapacity"]
