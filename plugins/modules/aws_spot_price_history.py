#!/usr/bin/python
# Agency OS: average EC2 Spot prices per instance type and availability zone, for the cost report.
# No amazon.aws module reads DescribeSpotPriceHistory, so this small read-only module does (boto3).

DOCUMENTATION = r"""
---
module: aws_spot_price_history
short_description: Average EC2 Spot prices per instance type and availability zone
description:
  - Reads C(DescribeSpotPriceHistory) for the given instance types over the last O(days) days and
    returns, per instance type and availability zone, the time-weighted average Spot price (each
    price counts for as long as it was in effect), with its minimum, maximum and latest value.
  - AWS also returns the last price change before the start of the window (the price in effect at
    its start); the average counts that price from the start of the window.
  - Read-only; runs the same in check mode.
author:
  - Agency OS
options:
  instance_types:
    description:
      - Instance types to read, e.g. V([t3.small, t3a.small]).
    type: list
    elements: str
    required: true
  availability_zones:
    description:
      - Availability zones to keep. Empty (the default) keeps every available zone of the region
        (C(DescribeAvailabilityZones)).
    type: list
    elements: str
    default: []
  days:
    description:
      - Length of the window, in days, ending now.
    type: int
    default: 30
  product_description:
    description:
      - Operating system product, as C(DescribeSpotPriceHistory) names it.
    type: str
    default: Linux/UNIX
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Read 30 days of Spot prices for the capacity's instance types
  aws_spot_price_history:
    instance_types: [t3.small, t3a.small, t2.small]
    region: ap-southeast-2
  register: spot_prices

- name: Same against a local moto_server
  aws_spot_price_history:
    instance_types: [t3.small]
    region: ap-southeast-2
    endpoint_url: http://127.0.0.1:5055
"""

RETURN = r"""
prices:
  description: One entry per instance type and availability zone that has a price in the window.
  returned: always
  type: list
  elements: dict
  sample:
    - instance_type: t3.small
      availability_zone: ap-southeast-2a
      average_usd_per_hour: 0.00791
      min_usd_per_hour: 0.0079
      max_usd_per_hour: 0.0081
      latest_usd_per_hour: 0.0079
      samples: 4
missing:
  description: C(<instance type>@<zone>) pairs without any price in the window (no Spot pool there).
  returned: always
  type: list
  elements: str
  sample: [t2.small@ap-southeast-2c]
availability_zones:
  description: The zones considered.
  returned: always
  type: list
  elements: str
  sample: [ap-southeast-2a, ap-southeast-2b, ap-southeast-2c]
window_days:
  description: Length of the window in days.
  returned: always
  type: int
  sample: 30
start:
  description: Start of the window (UTC, ISO 8601).
  returned: always
  type: str
  sample: "2026-10-29T12:00:00+00:00"
end:
  description: End of the window (UTC, ISO 8601).
  returned: always
  type: str
  sample: "2026-11-28T12:00:00+00:00"
"""

import datetime as dt

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # AnsibleAWSModule reports a missing botocore itself
    BotoCoreError = ClientError = Exception


def time_weighted(points, start, end):
    """Average, min, max and latest of [(timestamp, price)] over [start, end], each price weighted by
    how long it was in effect. None when no price is in effect inside the window."""
    points = sorted(points)
    before = [p for p in points if p[0] <= start]
    inside = [p for p in points if start < p[0] < end]
    seq = ([(start, before[-1][1])] if before else []) + inside
    if not seq:
        return None
    total = weight = 0.0
    for index, (when, price) in enumerate(seq):
        until = seq[index + 1][0] if index + 1 < len(seq) else end
        seconds = max(0.0, (until - when).total_seconds())
        total += price * seconds
        weight += seconds
    prices = [price for _, price in seq]
    average = total / weight if weight else prices[-1]
    return {"average": average, "min": min(prices), "max": max(prices), "latest": prices[-1], "samples": len(seq)}


@AWSRetry.jittered_backoff()
def _zones(client):
    found = client.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])
    return sorted(
        z["ZoneName"]
        for z in found["AvailabilityZones"]
        if z.get("ZoneType", "availability-zone") == "availability-zone"
    )


@AWSRetry.jittered_backoff()
def _history(client, instance_types, product, start, end):
    paginator = client.get_paginator("describe_spot_price_history")
    pages = paginator.paginate(
        InstanceTypes=instance_types, ProductDescriptions=[product], StartTime=start, EndTime=end
    )
    return pages.build_full_result().get("SpotPriceHistory", [])


def main():
    module = AnsibleAWSModule(
        argument_spec={
            "instance_types": {"type": "list", "elements": "str", "required": True},
            "availability_zones": {"type": "list", "elements": "str", "default": []},
            "days": {"type": "int", "default": 30},
            "product_description": {"type": "str", "default": "Linux/UNIX"},
        },
        supports_check_mode=True,
    )
    types = module.params["instance_types"]
    days = module.params["days"]
    if not types:
        module.fail_json(msg="instance_types is empty: name at least one instance type")
    if days < 1:
        module.fail_json(msg=f"days must be at least 1, got {days}")
    client = module.client("ec2")
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = end - dt.timedelta(days=days)
    try:
        zones = module.params["availability_zones"] or _zones(client)
        history = _history(client, types, module.params["product_description"], start, end)
    except (BotoCoreError, ClientError) as exc:
        module.fail_json_aws(exc, msg=f"Failed to read the Spot price history of {', '.join(types)}")

    points = {}
    for item in history:
        key = (item["InstanceType"], item["AvailabilityZone"])
        if item["AvailabilityZone"] not in zones or item["InstanceType"] not in types:
            continue
        when = item["Timestamp"]
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        points.setdefault(key, []).append((when, float(item["SpotPrice"])))

    prices, missing = [], []
    for instance_type in types:
        for zone in zones:
            stats = time_weighted(points.get((instance_type, zone), []), start, end)
            if stats is None:
                missing.append(f"{instance_type}@{zone}")
                continue
            prices.append(
                {
                    "instance_type": instance_type,
                    "availability_zone": zone,
                    "average_usd_per_hour": round(stats["average"], 6),
                    "min_usd_per_hour": stats["min"],
                    "max_usd_per_hour": stats["max"],
                    "latest_usd_per_hour": stats["latest"],
                    "samples": stats["samples"],
                }
            )
    module.exit_json(
        changed=False,
        prices=prices,
        missing=missing,
        availability_zones=list(zones),
        window_days=days,
        start=start.isoformat(),
        end=end.isoformat(),
    )


if __name__ == "__main__":
    main()
