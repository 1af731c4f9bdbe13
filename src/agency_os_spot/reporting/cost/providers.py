"""Monthly cost lines per provider: Railway as it bills, AWS Spot capacity and GCP Spot capacity.

Railway is modelled as it bills: usage (vCPU, memory, egress of each flow's services) with the
plan's subscription as a minimum that counts towards usage. Today every flow runs there; in the
proposal only the flows whose tier targets Railway do, and the bulk flows run on spot capacity:
an AWS Auto Scaling group priced from its Spot price history, or a GCP managed instance group.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from agency_os_spot.catalog import Catalog
from agency_os_spot.reporting.cost.inputs import SHARED_SETTINGS, Prices, PricingError, number


@dataclass
class Line:
    """One row of the table: a component's monthly cost today and in the proposal (US$)."""

    component: str
    current_usd: float
    proposed_usd: float
    detail: str = ""

    @property
    def savings_usd(self) -> float:
        return self.current_usd - self.proposed_usd


def railway(catalog: Catalog, prices: Prices) -> tuple[list[Line], list[dict[str, Any]], list[str]]:
    """Railway's lines (one per tier, plus the plan minimum not covered), its rows per flow, and notes."""
    per_vcpu = prices.get("railway_usd_per_vcpu_month", what="Railway vCPU rate", unit="US$ per vCPU-month")
    per_gb = prices.get("railway_usd_per_gb_month", what="Railway memory rate", unit="US$ per GB-month")
    per_egress = prices.get("railway_usd_per_egress_gb", what="Railway egress rate", unit="US$ per GB")
    subscription = prices.get(
        "railway_plan_usd_per_month", what="Railway plan subscription", unit="US$ per month (counts towards usage)"
    )

    usage_var = "railway_flow_usage"
    usage = prices.pricing.get(usage_var)
    if not isinstance(usage, dict) or not isinstance(usage.get("flows"), dict):
        raise PricingError(
            f"no Railway usage in {SHARED_SETTINGS} ({usage_var}): give "
            "{source, date, flows: {<catalog flow>: {vcpu, memory_gb, egress_gb}}}"
        )
    for key in ("source", "date"):
        if not usage.get(key):
            raise PricingError(f"{usage_var} in {SHARED_SETTINGS} needs its {key} (where and when it was measured)")
    flows_usage: dict[str, Any] = usage["flows"]
    unknown = sorted(set(flows_usage) - set(catalog.names()))
    if unknown:
        raise PricingError(
            f"{usage_var}.flows in {SHARED_SETTINGS} names flow(s) not in the catalog: {', '.join(unknown)} "
            f"(catalog flows: {', '.join(catalog.names())})"
        )

    rows: list[dict[str, Any]] = []
    for spec in catalog.flows:
        if spec.name not in flows_usage:
            raise PricingError(f"no Railway usage for flow {spec.name} in {SHARED_SETTINGS} ({usage_var}.flows)")
        item = flows_usage[spec.name]
        if not isinstance(item, dict):
            raise PricingError(f"{usage_var}.flows[{spec.name}] must be a mapping {{vcpu, memory_gb, egress_gb}}")
        where = f"{SHARED_SETTINGS} ({usage_var}.flows[{spec.name}])"
        vcpu = number(item, "vcpu", where)
        memory = number(item, "memory_gb", where)
        egress = number({"egress_gb": item.get("egress_gb", 0)}, "egress_gb", where)
        monthly = vcpu * per_vcpu + memory * per_gb + egress * per_egress
        rows.append(
            {
                "flow": spec.name,
                "tier": spec.tier,
                "vcpu": vcpu,
                "memory_gb": memory,
                "egress_gb": egress,
                "usage_usd": round(monthly, 4),
                "current_usd": round(monthly if spec.current_infra == "railway" else 0.0, 4),
                "proposed_usd": round(monthly if spec.target_infra == "railway" else 0.0, 4),
            }
        )

    lines: list[Line] = []
    for tier in catalog.tiers.values():
        members = [r for r in rows if r["tier"] == tier.name]
        where_now = "Railway" if tier.current_infra == "railway" else tier.current_infra
        where_then = "stays on Railway" if tier.target_infra == "railway" else f"moves to {tier.target_infra}"
        lines.append(
            Line(
                component=f"Railway: {tier.name} flows ({len(members)})",
                current_usd=sum(r["current_usd"] for r in members),
                proposed_usd=sum(r["proposed_usd"] for r in members),
                detail=f"{where_now} today; {where_then} (pool {tier.work_pool})",
            )
        )
    usage_now = sum(line.current_usd for line in lines)
    usage_then = sum(line.proposed_usd for line in lines)
    topup_now, topup_then = max(0.0, subscription - usage_now), max(0.0, subscription - usage_then)
    notes = [
        f"Railway bills usage (US${per_vcpu:g}/vCPU-month, US${per_gb:g}/GB-month of memory, US${per_egress:g}/GB "
        f"egress) with the plan's US${subscription:g}/month subscription as a minimum that counts towards usage.",
        f"Railway usage per flow: {usage['source']} ({usage['date']}).",
    ]
    if topup_now or topup_then:
        lines.append(
            Line(
                component="Railway: plan minimum not covered by usage",
                current_usd=topup_now,
                proposed_usd=topup_then,
                detail=f"subscription US${subscription:g}/month counts towards usage",
            )
        )
    return lines, rows, notes


def aws(
    capacity: dict[str, Any],
    prices: Prices,
    history: dict[str, Any] | None,
    region: str,
    hours: float,
    basis: str,
) -> tuple[list[Line], dict[str, Any], list[str]]:
    """AWS Spot lines (instances, EBS, public IPv4) of the proposal, the pools' detail, and notes."""
    where = "the inventory (aws_spot_capacity_*)"
    types = capacity.get("instance_types") or []
    if not isinstance(types, list) or not types:
        raise PricingError(f"no instance types in {where}: set aws_spot_capacity_instance_types")
    desired = number(capacity, "desired_capacity", where)
    max_size = number(capacity, "max_size", where)
    base = number(
        {"on_demand_base_capacity": capacity.get("on_demand_base_capacity", 0)}, "on_demand_base_capacity", where
    )
    pct = number(
        {"on_demand_percentage_above_base": capacity.get("on_demand_percentage_above_base", 0)},
        "on_demand_percentage_above_base",
        where,
    )
    volume_gb = number(capacity, "root_volume_size", where)
    volume_type = str(capacity.get("root_volume_type") or "gp3")
    public_ipv4 = number(
        {"public_ipv4_per_instance": capacity.get("public_ipv4_per_instance", 0)}, "public_ipv4_per_instance", where
    )
    cap_raw = capacity.get("max_price")
    cap = None if cap_raw in (None, "") else number({"max_price": cap_raw}, "max_price", where)

    on_demand = {
        t: prices.get("aws_on_demand_usd_per_hour", t, what="on-demand price", unit="US$ per instance-hour")
        for t in types
    }
    if not history or not isinstance(history.get("prices"), list):
        raise PricingError(
            f"no spot price history for {region}: the aws_spot_price_history module's result is missing "
            "(DescribeSpotPriceHistory)"
        )
    window = history.get("window_days", 30)
    # Dates only: the report stays the same all day (reruns change nothing).
    window_start, window_end = str(history.get("start", ""))[:10], str(history.get("end", ""))[:10]
    per_type: dict[str, dict[str, float]] = {t: {} for t in types}
    for row in history["prices"]:
        if row.get("instance_type") in per_type:
            per_type[row["instance_type"]][row["availability_zone"]] = float(row["average_usd_per_hour"])
    pools: list[dict[str, Any]] = []
    for t in types:
        if not per_type[t]:
            zones = ", ".join(history.get("availability_zones") or []) or "any zone"
            raise PricingError(
                f"no spot price for {t} in {region} over the last {window} days "
                f"(DescribeSpotPriceHistory returned nothing for {zones}): drop it from "
                "aws_spot_capacity_instance_types or check the region"
            )
        for zone, avg in sorted(per_type[t].items()):
            paid = min(avg, on_demand[t])  # a Spot price never exceeds on-demand
            pools.append(
                {
                    "instance_type": t,
                    "availability_zone": zone,
                    "average_usd_per_hour": round(avg, 6),
                    "on_demand_usd_per_hour": on_demand[t],
                    "discount_pct": round(100 * (1 - paid / on_demand[t]), 1) if on_demand[t] else None,
                    "under_cap": cap is None or avg <= cap,
                }
            )
    usable = [p for p in pools if p["under_cap"]]
    if not usable:
        raise PricingError(
            f"every spot pool's {window}-day average is above aws_spot_capacity_max_price {cap:g} US$/h: the group "
            'would launch nothing; raise the cap or clear it ("": pay the Spot price, never above on-demand)'
        )
    pool_prices = [min(p["average_usd_per_hour"], p["on_demand_usd_per_hour"]) for p in usable]
    spot_price = {"mean": statistics.fmean, "max": max, "min": min}[basis](pool_prices)

    # Auto Scaling mixed instances policy: the on-demand base, then a share of what is above it.
    on_demand_count = min(desired, base) + max(0.0, desired - base) * pct / 100
    spot_count = desired - on_demand_count
    od_price = on_demand[types[0]]  # on-demand allocation is "prioritized": the first type
    instances = spot_count * spot_price * hours + on_demand_count * od_price * hours

    ebs = prices.get("aws_ebs_usd_per_gb_month", volume_type, what=f"EBS {volume_type} price", unit="US$ per GB-month")
    lines = [
        Line(
            f"AWS Spot: instances ({desired:g} x {'/'.join(types)})",
            0.0,
            instances,
            f"{basis} of {len(usable)} pool {window}-day averages: US${spot_price:.5f}/h",
        ),
        Line(
            f"AWS Spot: EBS root volumes ({desired:g} x {volume_gb:g} GiB {volume_type})",
            0.0,
            desired * volume_gb * ebs,
        ),
    ]
    if public_ipv4:
        ipv4 = prices.get("aws_public_ipv4_usd_per_hour", what="public IPv4 address price", unit="US$ per address-hour")
        lines.append(
            Line(f"AWS Spot: public IPv4 ({desired * public_ipv4:g})", 0.0, desired * public_ipv4 * ipv4 * hours)
        )
    per_instance = (lines[0].proposed_usd / desired if desired else 0.0) + (
        sum(line.proposed_usd for line in lines[1:]) / desired if desired else 0.0
    )
    detail = {
        "instance_types": types,
        "desired_capacity": desired,
        "max_size": max_size,
        "spot_instances": spot_count,
        "on_demand_instances": on_demand_count,
        "spot_basis": basis,
        "spot_usd_per_hour": round(spot_price, 6),
        "price_window_days": window,
        "price_window": [window_start, window_end],
        "availability_zones": history.get("availability_zones", []),
        "pools": pools,
        "max_price": cap,
        "usd_per_month_at_max_size": round(per_instance * max_size, 4),
    }
    notes = [
        f"AWS Spot prices: time-weighted {window}-day averages from DescribeSpotPriceHistory "
        f"({window_start} to {window_end}), one per instance type and availability zone; "
        f"the estimate uses the {basis} of the pools the group may launch in"
        + (f" (pools above the {cap:g} US$/h cap left out)." if cap is not None else "."),
        f"The group keeps desired_capacity ({desired:g}) running; at max_size ({max_size:g}) the AWS lines would "
        f"come to US${per_instance * max_size:.2f}/month.",
    ]
    return lines, detail, notes


def gcp(capacity: dict[str, Any], prices: Prices, hours: float) -> tuple[list[Line], dict[str, Any], list[str]]:
    """GCP Spot lines (VMs, boot disks, external IPv4 or Cloud NAT) of the proposal, the detail, and notes."""
    where = "the inventory (gcp_spot_capacity_*)"
    machine = str(capacity.get("machine_type") or "")
    if not machine:
        raise PricingError(f"no machine type in {where}: set gcp_spot_capacity_machine_type")
    size = number(capacity, "target_size", where)
    disk_gb = number(capacity, "disk_size_gb", where)
    disk_type = str(capacity.get("disk_type") or "pd-balanced")
    external_ip = capacity.get("external_ip", False)
    if isinstance(external_ip, str):  # a templated boolean may arrive as text
        external_ip = external_ip.strip().lower() in ("true", "yes", "1")
    spot = prices.get("gcp_spot_usd_per_hour", machine, what="Spot price", unit="US$ per VM-hour")
    on_demand = prices.get("gcp_on_demand_usd_per_hour", machine, what="on-demand price", unit="US$ per VM-hour")
    disk = prices.get("gcp_disk_usd_per_gb_month", disk_type, what=f"{disk_type} disk price", unit="US$ per GB-month")
    lines = [
        Line(f"GCP Spot: VMs ({size:g} x {machine})", 0.0, size * spot * hours),
        Line(f"GCP Spot: boot disks ({size:g} x {disk_gb:g} GB {disk_type})", 0.0, size * disk_gb * disk),
    ]
    if external_ip:
        ip = prices.get(
            "gcp_external_ipv4_spot_usd_per_hour",
            what="external IPv4 price for Spot VMs",
            unit="US$ per address-hour",
        )
        lines.append(Line(f"GCP Spot: external IPv4 ({size:g})", 0.0, size * ip * hours))
    else:
        nat = prices.get("gcp_cloud_nat_usd_per_vm_hour", what="Cloud NAT price per VM", unit="US$ per VM-hour")
        lines.append(Line(f"GCP Spot: Cloud NAT ({size:g} VM)", 0.0, size * nat * hours))
    detail = {
        "machine_type": machine,
        "target_size": size,
        "provisioning_model": capacity.get("provisioning_model", "SPOT"),
        "spot_usd_per_hour": spot,
        "on_demand_usd_per_hour": on_demand,
        "discount_pct": round(100 * (1 - spot / on_demand), 1) if on_demand else None,
    }
    notes = [
        f"GCP Spot price of {machine}: US${spot:g}/h against US${on_demand:g}/h on demand "
        f"({detail['discount_pct']}% off); GCP may change Spot prices up to once a month."
    ]
    return lines, detail, notes
