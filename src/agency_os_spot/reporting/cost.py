"""Monthly cost of the spot migration, computed (Current / Proposed / Savings per component, docs/migration-plan.md).

Nothing in the table is typed by hand. It comes from:

* the flow catalog (`src/agency_os_spot/catalog.yml`): which flows run on Railway today (`current_infra`) and
  which stay there (`target_infra`), tier by tier;
* the inventory's capacity settings (AWS: instance types, min/max/desired, on-demand mix, root
  volume; GCP: machine type, target size, boot disk, external IP);
* dated prices with their source: AWS on-demand, EBS and public IPv4 prices, GCP Spot prices and
  Railway's usage rates from configuration, AWS Spot prices from DescribeSpotPriceHistory
  (30-day time-weighted averages per instance type and availability zone, see the repo module
  `aws_spot_price_history`), and an AUD exchange rate.

Railway is modelled as it bills: usage (vCPU, memory, egress of each flow's services) with the
plan's subscription as a minimum that counts towards usage. Today every flow runs there; in the
proposal only the flows whose tier targets Railway do, and the bulk flows run on spot capacity.

Every price is an entry `{value: <number>, source: <url>, date: <YYYY-MM-DD>}`; a missing or bad
one stops the report with a message naming it, e.g. `no on-demand price for t3a.small in
pricing.yml (aws_on_demand_usd_per_hour)`.

    python -m agency_os_spot.reporting.cost INPUT.json [--out reports/] [--json]

INPUT is what the `cost_report` module receives: provider, region, capacity, pricing,
spot_price_history (AWS), hours_per_month, spot_basis.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import re
import statistics
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agency_os_spot.catalog import Catalog, load_catalog

PROVIDERS = ("aws", "gcp")
SPOT_BASES = ("mean", "max", "min")
# Where each setting lives, for error messages (inventory prices vs the shared Railway/FX file).
INVENTORY_PRICING = "pricing.yml"
SHARED_SETTINGS = "playbooks/vars/cost_report.yml"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class PricingError(ValueError):
    """A price or setting the report needs is missing or malformed; the message names it."""


def _home(var: str) -> str:
    return INVENTORY_PRICING if var.startswith(("aws_", "gcp_")) else SHARED_SETTINGS


@dataclass(frozen=True)
class Price:
    """One dated price (or rate) and where it comes from."""

    key: str  # e.g. aws_on_demand_usd_per_hour[t3.small]
    value: float
    unit: str
    source: str
    date: str


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


@dataclass
class CostReport:
    provider: str
    region: str
    generated_on: str
    hours_per_month: float
    aud_per_usd: float
    lines: list[Line]
    railway_flows: list[dict[str, Any]]
    spot_detail: dict[str, Any]
    notes: list[str]
    sources: list[Price] = field(default_factory=list)

    @property
    def current_usd(self) -> float:
        return sum(line.current_usd for line in self.lines)

    @property
    def proposed_usd(self) -> float:
        return sum(line.proposed_usd for line in self.lines)

    @property
    def savings_usd(self) -> float:
        return self.current_usd - self.proposed_usd

    def aud(self, usd: float) -> float:
        return usd * self.aud_per_usd

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (numbers per month, US$ and A$)."""

        def money(usd: float) -> dict[str, float]:
            return {"usd": round(usd, 4), "aud": round(self.aud(usd), 4)}

        return {
            "provider": self.provider,
            "region": self.region,
            "generated_on": self.generated_on,
            "hours_per_month": self.hours_per_month,
            "aud_per_usd": self.aud_per_usd,
            "lines": [
                {
                    "component": line.component,
                    "detail": line.detail,
                    "current": money(line.current_usd),
                    "proposed": money(line.proposed_usd),
                    "savings": money(line.savings_usd),
                }
                for line in self.lines
            ],
            "total": {
                "current": money(self.current_usd),
                "proposed": money(self.proposed_usd),
                "savings": money(self.savings_usd),
            },
            "railway_flows": self.railway_flows,
            "spot": self.spot_detail,
            "notes": self.notes,
            "sources": [asdict(p) for p in self.sources],
        }


# --- reading settings ------------------------------------------------------------------------


class _Prices:
    """Reads dated price entries from the pricing settings and remembers which were used."""

    def __init__(self, pricing: dict[str, Any]):
        self.pricing = pricing
        self.used: dict[str, Price] = {}

    def _entry(self, var: str, item: str | None, what: str) -> tuple[Any, str]:
        for_item = f" for {item}" if item is not None else ""
        if var not in self.pricing or self.pricing[var] in (None, "", {}):
            raise PricingError(f"no {what}{for_item} in {_home(var)} ({var})")
        entry = self.pricing[var]
        key = var
        if item is not None:
            if not isinstance(entry, dict) or item not in entry or entry[item] in (None, ""):
                raise PricingError(f"no {what}{for_item} in {_home(var)} ({var})")
            entry = entry[item]
            key = f"{var}[{item}]"
        return entry, key

    def get(self, var: str, item: str | None = None, *, what: str, unit: str) -> float:
        entry, key = self._entry(var, item, what)
        where = f"{_home(var)} ({key})"
        if not isinstance(entry, dict):
            raise PricingError(
                f"{what} in {where} must be a mapping {{value: <number>, source: <url>, date: YYYY-MM-DD}}, got {entry!r}"
            )
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PricingError(f"{what} in {where} must be a number >= 0 ({unit}), got {value!r}")
        source = entry.get("source")
        if not isinstance(source, str) or not source.startswith(("http://", "https://")):
            raise PricingError(f"{what} in {where} needs its source URL (source: https://...), got {source!r}")
        date = str(entry.get("date", ""))
        if not _DATE.match(date):
            raise PricingError(f"{what} in {where} needs the date it was read (date: YYYY-MM-DD), got {date!r}")
        self.used[key] = Price(key=key, value=float(value), unit=unit, source=source, date=date)
        return float(value)


def _number(settings: dict[str, Any], key: str, where: str, *, minimum: float = 0) -> float:
    value = settings.get(key)
    if isinstance(value, str):  # Ansible may hand templated numbers over as strings
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise PricingError(f"{key} in {where} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


# --- Railway ---------------------------------------------------------------------------------


def _railway(catalog: Catalog, prices: _Prices) -> tuple[list[Line], list[dict[str, Any]], list[str]]:
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
        vcpu = _number(item, "vcpu", where)
        memory = _number(item, "memory_gb", where)
        egress = _number({"egress_gb": item.get("egress_gb", 0)}, "egress_gb", where)
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


# --- spot capacity -----------------------------------------------------------------------------


def _aws(
    capacity: dict[str, Any],
    prices: _Prices,
    history: dict[str, Any] | None,
    region: str,
    hours: float,
    basis: str,
) -> tuple[list[Line], dict[str, Any], list[str]]:
    where = "the inventory (aws_spot_capacity_*)"
    types = capacity.get("instance_types") or []
    if not isinstance(types, list) or not types:
        raise PricingError(f"no instance types in {where}: set aws_spot_capacity_instance_types")
    desired = _number(capacity, "desired_capacity", where)
    max_size = _number(capacity, "max_size", where)
    base = _number(
        {"on_demand_base_capacity": capacity.get("on_demand_base_capacity", 0)}, "on_demand_base_capacity", where
    )
    pct = _number(
        {"on_demand_percentage_above_base": capacity.get("on_demand_percentage_above_base", 0)},
        "on_demand_percentage_above_base",
        where,
    )
    volume_gb = _number(capacity, "root_volume_size", where)
    volume_type = str(capacity.get("root_volume_type") or "gp3")
    public_ipv4 = _number(
        {"public_ipv4_per_instance": capacity.get("public_ipv4_per_instance", 0)}, "public_ipv4_per_instance", where
    )
    cap_raw = capacity.get("max_price")
    cap = None if cap_raw in (None, "") else _number({"max_price": cap_raw}, "max_price", where)

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


def _gcp(capacity: dict[str, Any], prices: _Prices, hours: float) -> tuple[list[Line], dict[str, Any], list[str]]:
    where = "the inventory (gcp_spot_capacity_*)"
    machine = str(capacity.get("machine_type") or "")
    if not machine:
        raise PricingError(f"no machine type in {where}: set gcp_spot_capacity_machine_type")
    size = _number(capacity, "target_size", where)
    disk_gb = _number(capacity, "disk_size_gb", where)
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


# --- the report ----------------------------------------------------------------------------------


def compute_report(inputs: dict[str, Any], catalog: Catalog | None = None, today: dt.date | None = None) -> CostReport:
    """The cost table from the catalog, capacity, prices (and, for AWS, the spot price history)."""
    catalog = catalog or load_catalog()
    provider = inputs.get("provider")
    if provider not in PROVIDERS:
        raise PricingError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    basis = inputs.get("spot_basis", "mean")
    if basis not in SPOT_BASES:
        raise PricingError(f"cost_report_spot_basis must be one of {', '.join(SPOT_BASES)}, got {basis!r}")
    hours = _number(
        {"hours_per_month": inputs.get("hours_per_month", 730)}, "hours_per_month", SHARED_SETTINGS, minimum=1
    )
    prices = _Prices(inputs.get("pricing") or {})
    aud_per_usd = prices.get("aud_per_usd", what="AUD exchange rate", unit="A$ per US$")
    if aud_per_usd <= 0:
        raise PricingError(f"AUD exchange rate in {SHARED_SETTINGS} (aud_per_usd) must be > 0")
    region = str(inputs.get("region") or "")
    capacity = inputs.get("capacity") or {}

    lines, railway_rows, notes = _railway(catalog, prices)
    if provider == "aws":
        spot_lines, detail, spot_notes = _aws(capacity, prices, inputs.get("spot_price_history"), region, hours, basis)
    else:
        spot_lines, detail, spot_notes = _gcp(capacity, prices, hours)
    notes = [
        *notes,
        *spot_notes,
        f"{hours:g} hours per month; US$1 = A${aud_per_usd:g}. Not included: data transfer out of AWS/GCP, "
        "the control plane (Prefect server, Redis, PostgreSQL), taxes.",
    ]
    return CostReport(
        provider=provider,
        region=region,
        generated_on=(today or dt.datetime.now(dt.UTC).date()).isoformat(),
        hours_per_month=hours,
        aud_per_usd=aud_per_usd,
        lines=[*lines, *spot_lines],
        railway_flows=railway_rows,
        spot_detail=detail,
        notes=notes,
        sources=sorted(prices.used.values(), key=lambda p: p.key),
    )


def _money(report: CostReport, usd: float) -> str:
    sign = "-" if usd < -0.005 else ""
    return f"{sign}A${abs(report.aud(usd)):,.2f} ({sign}US${abs(usd):,.2f})"


def render_markdown(report: CostReport) -> str:
    """The Markdown report: the cost table, then how it was computed and the sources."""
    where = {"aws": "AWS", "gcp": "GCP"}[report.provider]
    out = [
        f"# Agency OS: monthly compute cost, current vs proposed ({where} {report.region})",
        "",
        f"Computed {report.generated_on} from src/agency_os_spot/catalog.yml, the inventory's capacity settings and the dated "
        "prices listed under Sources. Per month; A$ first, US$ in brackets.",
        "",
        "| Component | Current | Proposed | Savings |",
        "|---|---:|---:|---:|",
    ]
    out += [
        f"| {line.component} | {_money(report, line.current_usd)} | {_money(report, line.proposed_usd)} | "
        f"{_money(report, line.savings_usd)} |"
        for line in report.lines
    ]
    out.append(
        f"| **Total** | **{_money(report, report.current_usd)}** | **{_money(report, report.proposed_usd)}** | "
        f"**{_money(report, report.savings_usd)}** |"
    )
    share = 100 * report.savings_usd / report.current_usd if report.current_usd else 0.0
    out += ["", f"Savings: {_money(report, report.savings_usd)} per month ({share:.0f}% of today's cost).", ""]

    out += [
        "## Railway usage by flow",
        "",
        "| Flow | Tier | vCPU | Memory (GB) | Egress (GB) | Current | Proposed |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    out += [
        f"| `{r['flow']}` | {r['tier']} | {r['vcpu']:g} | {r['memory_gb']:g} | {r['egress_gb']:g} | "
        f"US${r['current_usd']:.2f} | US${r['proposed_usd']:.2f} |"
        for r in report.railway_flows
    ]
    out.append("")
    if report.provider == "aws":
        out += [
            "## AWS Spot pools",
            "",
            "| Instance type | Zone | Spot average (US$/h) | On-demand (US$/h) | Discount | Under cap |",
            "|---|---|---:|---:|---:|---|",
        ]
        out += [
            f"| {p['instance_type']} | {p['availability_zone']} | {p['average_usd_per_hour']:.5f} | "
            f"{p['on_demand_usd_per_hour']:.4f} | {p['discount_pct']}% | {'yes' if p['under_cap'] else 'no'} |"
            for p in report.spot_detail["pools"]
        ]
        out.append("")
    out += ["## How it was computed", ""]
    out += [f"- {note}" for note in report.notes]
    out += ["", "## Sources", "", "| Setting | Value | Unit | Source | Date |", "|---|---:|---|---|---|"]
    out += [f"| `{p.key}` | {p.value:g} | {p.unit} | {p.source} | {p.date} |" for p in report.sources]
    return "\n".join(out) + "\n"


def render_chart(report: CostReport) -> bytes:
    """A PNG bar chart: current vs proposed per component (A$ per month)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  (heavy import, only here)
    from matplotlib.figure import Figure  # noqa: PLC0415

    # Component names without their parenthesised detail (the Markdown table has it).
    labels = [textwrap.fill(line.component.split(" (")[0], 16) for line in report.lines] + ["Total"]
    current = [report.aud(line.current_usd) for line in report.lines] + [report.aud(report.current_usd)]
    proposed = [report.aud(line.proposed_usd) for line in report.lines] + [report.aud(report.proposed_usd)]
    fig = Figure(figsize=(max(8.0, 1.6 * len(labels)), 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = range(len(labels))
    width = 0.38
    bars_now = ax.bar([x - width / 2 for x in xs], current, width, label="Current", color="#8c8c8c")
    bars_then = ax.bar([x + width / 2 for x in xs], proposed, width, label="Proposed", color="#2b7bba")
    ax.bar_label(bars_now, fmt="%.2f", fontsize=7, padding=2)
    ax.bar_label(bars_then, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel(r"A\$ per month")
    where = {"aws": "AWS", "gcp": "GCP"}[report.provider]
    title = (
        f"Agency OS compute per month: current A${report.aud(report.current_usd):,.2f}, proposed "
        f"A${report.aud(report.proposed_usd):,.2f} ({where} {report.region}, {report.generated_on})"
    )
    ax.set_title(title.replace("$", r"\$"), fontsize=9)  # a bare $ starts matplotlib's math text
    ax.legend()
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render_files(report: CostReport) -> dict[str, bytes]:
    """File name -> content of everything the report writes."""
    stem = f"cost_report_{report.provider}"
    return {
        f"{stem}.md": render_markdown(report).encode(),
        f"{stem}.json": (json.dumps(report.as_dict(), indent=2) + "\n").encode(),
        f"{stem}.png": render_chart(report),
    }


def write_files(files: dict[str, bytes], dest: Path, check: bool = False) -> list[str]:
    """Write the files whose content differs; return their paths (what would change in check mode)."""
    changed = []
    for name, content in files.items():
        path = dest / name
        if path.exists() and path.read_bytes() == content:
            continue
        changed.append(str(path))
        if not check:
            dest.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot cost-report", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="JSON file: provider, region, capacity, pricing, spot_price_history, ...")
    parser.add_argument("--out", help="write the Markdown, JSON and PNG files into this folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        report = compute_report(json.loads(Path(args.input).read_text(encoding="utf-8")))
    except PricingError as exc:
        print(f"cost report: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else render_markdown(report))
    if args.out:
        write_files(render_files(report), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
