"""moto_server (5.2.5) with two gaps filled, so that it answers these calls the way AWS documents them.

1. UpdateAutoScalingGroup: moto reads CapacityRebalance on CreateAutoScalingGroup only and silently
   drops it on update, which is how the repo module aws_asg_capacity_rebalance sets it (the amazon.aws
   module creates the group without it); and an update that does not carry MixedInstancesPolicy
   clears the group's policy. AWS documents CapacityRebalance as an UpdateAutoScalingGroup parameter
   and leaves parameters a request does not name unchanged; the fixture does both.
2. CreateLaunchTemplate: moto copies the request's TagSpecifications for the launch template itself
   (ResourceType launch-template) into version 1's LaunchTemplateData, where AWS keeps only what
   instances and volumes get. amazon.aws.ec2_launch_template then sees version 1 differ from what it
   asked for and creates a needless version 2 on the second run. The fixture keeps them apart.

Everything else is moto as shipped. Usage: python moto_server.py -H 127.0.0.1 -p 5055
"""

import sys

from moto.autoscaling.responses import AutoScalingResponse
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.server import main

_update_auto_scaling_group = AutoScalingResponse.update_auto_scaling_group
_create_launch_template = LaunchTemplates.create_launch_template


def _update_with_capacity_rebalance(self):
    group = self.autoscaling_backend.autoscaling_groups.get(self._get_param("AutoScalingGroupName"))
    policy_before = group.mixed_instances_policy if group else None
    result = _update_auto_scaling_group(self)
    if self._get_param("MixedInstancesPolicy") is None:
        group.mixed_instances_policy = policy_before
    value = self._get_bool_param("CapacityRebalance", None)
    if value is not None:
        group.capacity_rebalance = value
    return result


def _create_without_template_tags_in_data(self):
    result = _create_launch_template(self)
    template = self.ec2_backend.get_launch_template_by_name(self._get_param("LaunchTemplateName"))
    data = template.versions[0].data
    # "launch-template" is not a valid ResourceType inside LaunchTemplateData: only moto's copy has it.
    kept = [spec for spec in data.get("TagSpecifications", []) if spec.get("ResourceType") != "launch-template"]
    if kept:
        data["TagSpecifications"] = kept
    else:
        data.pop("TagSpecifications", None)
    return result


AutoScalingResponse.update_auto_scaling_group = _update_with_capacity_rebalance
LaunchTemplates.create_launch_template = _create_without_template_tags_in_data

if __name__ == "__main__":
    main(sys.argv[1:])
