#!/usr/bin/python
# Agency OS: the Capacity Rebalancing switch of an EC2 Auto Scaling group.
# amazon.aws.autoscaling_group has no capacity_rebalance option (amazon.aws issue 1711), so this
# small module reads the group and calls UpdateAutoScalingGroup only when the setting differs.

DOCUMENTATION = r"""
---
module: aws_asg_capacity_rebalance
short_description: Turn Capacity Rebalancing of an EC2 Auto Scaling group on or off
description:
  - Reads the Auto Scaling group with C(DescribeAutoScalingGroups) and, only when its
    C(CapacityRebalance) setting differs from O(capacity_rebalance), changes it with
    C(UpdateAutoScalingGroup). Nothing else of the group is touched.
  - With Capacity Rebalancing on, the group launches a replacement as soon as EC2 sends a
    rebalance recommendation for a Spot Instance (usually before the two-minute interruption
    notice), and terminates the old instance once the new one is in service.
  - Exists because M(amazon.aws.autoscaling_group) has no C(capacity_rebalance) option
    (U(https://github.com/ansible-collections/amazon.aws/issues/1711)).
author:
  - Agency OS
options:
  name:
    description:
      - Name of an existing Auto Scaling group.
    type: str
    required: true
    aliases: [group_name]
  capacity_rebalance:
    description:
      - Whether Capacity Rebalancing is on.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - In check mode a group that does not exist yet (one an earlier task would have created) is
    reported as changed instead of failing; outside check mode a missing group is an error.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Replace Spot Instances proactively on rebalance recommendations
  aws_asg_capacity_rebalance:
    name: agency-os-bulk-spot
    capacity_rebalance: true
    region: ap-southeast-2

- name: Same against a local moto_server
  aws_asg_capacity_rebalance:
    name: agency-os-bulk-spot
    region: ap-southeast-2
    endpoint_url: http://127.0.0.1:5055
"""

RETURN = r"""
auto_scaling_group_name:
  description: Name of the group.
  returned: always
  type: str
  sample: agency-os-bulk-spot
auto_scaling_group_arn:
  description: ARN of the group (absent in check mode when the group does not exist yet).
  returned: when the group exists
  type: str
  sample: arn:aws:autoscaling:ap-southeast-2:123456789012:autoScalingGroup:0e1f:autoScalingGroupName/agency-os-bulk-spot
capacity_rebalance:
  description: The setting after the run (the wanted value in check mode).
  returned: always
  type: bool
  sample: true
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # AnsibleAWSModule reports a missing botocore itself
    BotoCoreError = ClientError = Exception


def describe_group(module, client, name):
    """Return the group's description, or None when no group has that name."""
    try:
        groups = client.describe_auto_scaling_groups(AutoScalingGroupNames=[name], aws_retry=True)
    except (BotoCoreError, ClientError) as exc:
        module.fail_json_aws(exc, msg=f"Failed to describe Auto Scaling group {name}")
    found = groups.get("AutoScalingGroups", [])
    return found[0] if found else None


def main():
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True, "aliases": ["group_name"]},
            "capacity_rebalance": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    name = module.params["name"]
    wanted = module.params["capacity_rebalance"]
    client = module.client("autoscaling", retry_decorator=AWSRetry.jittered_backoff())

    group = describe_group(module, client, name)
    if group is None:
        if module.check_mode:
            module.exit_json(
                changed=True,
                auto_scaling_group_name=name,
                capacity_rebalance=wanted,
                msg=f"Auto Scaling group {name} does not exist yet; would set CapacityRebalance={wanted}",
            )
        module.fail_json(msg=f"Auto Scaling group {name} not found: create it before setting capacity_rebalance")

    current = bool(group.get("CapacityRebalance", False))
    changed = current != wanted
    if changed and not module.check_mode:
        try:
            client.update_auto_scaling_group(AutoScalingGroupName=name, CapacityRebalance=wanted, aws_retry=True)
        except (BotoCoreError, ClientError) as exc:
            module.fail_json_aws(exc, msg=f"Failed to set CapacityRebalance={wanted} on {name}")
        after = describe_group(module, client, name) or {}
        if bool(after.get("CapacityRebalance", False)) != wanted:
            module.warn(
                f"UpdateAutoScalingGroup accepted CapacityRebalance={wanted} for {name}, "
                "but DescribeAutoScalingGroups still reports the old value"
            )

    result = {
        "changed": changed,
        "auto_scaling_group_name": name,
        "auto_scaling_group_arn": group.get("AutoScalingGroupARN"),
        "capacity_rebalance": wanted if changed else current,
    }
    if module._diff:  # how an Ansible module knows it runs with --diff
        result["diff"] = {"before": {"capacity_rebalance": current}, "after": {"capacity_rebalance": wanted}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
