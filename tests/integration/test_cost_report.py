"""playbooks/cost_report.yml, run with ansible-playbook against a moto_server (AWS) and on the GCP inventory.

The expected numbers are computed here from the same settings files the playbook reads (the
inventories' capacity and pricing, playbooks/vars/cost_report.yml, the catalog) and from moto's
Spot price history, which is a constant (US$0.00001/h for every type and zone).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from agency_os_spot.catalog import load_catalog
from tests.support import ROOT, load_plugin
from tests.support.services import free_port

BIN = Path(sys.executable).parent
# moto accepts any credentials; these keep boto3 from looking for real ones.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "ap-southeast-2",
}
MOTO_SPOT_PRICE = 0.00001  # moto 5.2.5 answers DescribeSpotPriceHistory with this for every pool
SETTINGS = yaml.safe_load((ROOT / "playbooks/vars/cost_report.yml").read_text())
AWS = {
    **yaml.safe_load((ROOT / "inventories/aws/group_vars/all/capacity.yml").read_text()),
    **yaml.safe_load((ROOT / "inventories/aws/group_vars/all/pricing.yml").read_text()),
}
GCP = {
    **yaml.safe_load((ROOT / "inventories/gcp/group_vars/all/capacity.yml").read_text()),
    **yaml.safe_load((ROOT / "inventories/gcp/group_vars/all/pricing.yml").read_text()),
}
# Given to the playbook as extra variables: a setting reaches the report through its capacity role.
AWS_ROOT_VOLUME_GB = 37
GCP_DISK_GB = 23

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/moto-api/", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def playbook(inventory: str, *args: str, extra: dict[str, Any] | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        **MOTO_CREDENTIALS,
    }
    cmd = [str(BIN / "ansible-playbook"), "-i", str(ROOT / inventory), str(ROOT / "playbooks/cost_report.yml"), *args]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)


def railway_usd() -> tuple[float, float]:
    """(all flows, flows that stay on Railway) per month, from the settings file and the catalog."""
    rate_cpu = SETTINGS["railway_usd_per_vcpu_month"]["value"]
    rate_mem = SETTINGS["railway_usd_per_gb_month"]["value"]
    rate_egress = SETTINGS["railway_usd_per_egress_gb"]["value"]
    usage = SETTINGS["railway_flow_usage"]["flows"]
    total = staying = 0.0
    for spec in load_catalog().flows:
        item = usage[spec.name]
        monthly = item["vcpu"] * rate_cpu + item["memory_gb"] * rate_mem + item.get("egress_gb", 0) * rate_egress
        total += monthly
        staying += monthly if spec.target_infra == "railway" else 0.0
    return total, staying


def line(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [x for x in report["lines"] if x["component"].startswith(prefix)]
    assert len(found) == 1, f"no single line starting with {prefix!r} in {[x['component'] for x in report['lines']]}"
    return found[0]


def test_aws_report_numbers_come_from_moto_prices_and_configuration(moto_url: str, tmp_path: Path) -> None:
    extra = {
        "cost_report_aws_endpoint_url": moto_url,
        "cost_report_dir": str(tmp_path),
        "aws_spot_capacity_root_volume_size": AWS_ROOT_VOLUME_GB,
    }
    result = playbook("inventories/aws", extra=extra)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "cost_report_aws.json").read_text())

    hours = SETTINGS["cost_report_hours_per_month"]
    aud = SETTINGS["aud_per_usd"]["value"]
    desired = AWS["aws_spot_capacity_desired_capacity"]
    railway_all, railway_staying = railway_usd()
    instances = desired * MOTO_SPOT_PRICE * hours
    ebs = desired * AWS_ROOT_VOLUME_GB * AWS["aws_ebs_usd_per_gb_month"]["gp3"]["value"]
    ipv4 = desired * AWS["aws_public_ipv4_usd_per_hour"]["value"] * hours
    assert railway_all == pytest.approx(80.0)  # the plan's bill, which the placeholder usage reproduces
    assert line(report, "Railway: realtime")["proposed"]["usd"] == pytest.approx(railway_staying)
    assert line(report, "Railway: bulk")["current"]["usd"] == pytest.approx(railway_all - railway_staying)
    assert line(report, "Railway: bulk")["proposed"]["usd"] == 0
    assert line(report, "AWS Spot: instances")["proposed"]["usd"] == pytest.approx(instances, abs=1e-4)
    assert line(report, "AWS Spot: EBS")["proposed"]["usd"] == pytest.approx(ebs, abs=1e-4)
    assert line(report, "AWS Spot: public IPv4")["proposed"]["usd"] == pytest.approx(ipv4, abs=1e-4)
    total = report["total"]
    assert total["current"]["usd"] == pytest.approx(railway_all)
    assert total["proposed"]["usd"] == pytest.approx(railway_staying + instances + ebs + ipv4, abs=1e-3)
    assert total["savings"]["aud"] == pytest.approx((railway_all - total["proposed"]["usd"]) * aud, abs=1e-3)

    # The Spot prices are per type and zone of the region, with their on-demand ceiling.
    pools = report["spot"]["pools"]
    assert {p["instance_type"] for p in pools} == set(AWS["aws_spot_capacity_instance_types"])
    assert {p["availability_zone"] for p in pools} == {"ap-southeast-2a", "ap-southeast-2b", "ap-southeast-2c"}
    assert all(p["average_usd_per_hour"] == MOTO_SPOT_PRICE for p in pools)
    assert {p["instance_type"]: p["on_demand_usd_per_hour"] for p in pools} == {
        t: v["value"] for t, v in AWS["aws_on_demand_usd_per_hour"].items()
    }
    # Every price used is listed with its source and date.
    used = {s["key"] for s in report["sources"]}
    assert "aws_on_demand_usd_per_hour[t3a.small]" in used and "aud_per_usd" in used
    assert all(s["source"].startswith("https://") and len(s["date"]) == 10 for s in report["sources"])

    # Markdown table (also printed), PNG chart.
    markdown = (tmp_path / "cost_report_aws.md").read_text()
    assert "| Component | Current | Proposed | Savings |" in markdown
    assert f"| **Total** | **A${railway_all * aud:,.2f} (US${railway_all:,.2f})** |" in markdown
    assert "| Component | Current | Proposed | Savings |" in result.stdout
    assert (tmp_path / "cost_report_aws.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # A second run the same day changes nothing.
    again = playbook("inventories/aws", extra=extra)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout


def test_known_subnets_decide_zones_and_public_ips(moto_url: str, tmp_path: Path) -> None:
    ec2 = boto3.client(
        "ec2",
        region_name="ap-southeast-2",
        endpoint_url=moto_url,
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="ap-southeast-2b")
    subnet_id = subnet["Subnet"]["SubnetId"]  # MapPublicIpOnLaunch false: egress through a NAT, no public IP
    result = playbook(
        "inventories/aws",
        extra={
            "cost_report_aws_endpoint_url": moto_url,
            "cost_report_dir": str(tmp_path),
            "aws_spot_capacity_subnet_ids": [subnet_id],
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "cost_report_aws.json").read_text())
    assert {p["availability_zone"] for p in report["spot"]["pools"]} == {"ap-southeast-2b"}
    assert not [x for x in report["lines"] if "public IPv4" in x["component"]]


def test_missing_on_demand_price_is_refused_with_its_name(moto_url: str, tmp_path: Path) -> None:
    prices = {k: v for k, v in AWS["aws_on_demand_usd_per_hour"].items() if k != "t3a.small"}
    result = playbook(
        "inventories/aws",
        extra={
            "cost_report_aws_endpoint_url": moto_url,
            "cost_report_dir": str(tmp_path),
            "aws_on_demand_usd_per_hour": prices,
        },
    )
    assert result.returncode != 0
    assert "no on-demand price for t3a.small in pricing.yml (aws_on_demand_usd_per_hour)" in result.stdout
    assert not list(tmp_path.iterdir())


def test_malformed_and_undated_prices_are_refused(moto_url: str, tmp_path: Path) -> None:
    base = {"cost_report_aws_endpoint_url": moto_url, "cost_report_dir": str(tmp_path)}
    bad = playbook("inventories/aws", extra={**base, "aws_public_ipv4_usd_per_hour": {"value": "five", "source": "x"}})
    assert bad.returncode != 0
    assert "public IPv4 address price in pricing.yml (aws_public_ipv4_usd_per_hour) must be a number" in bad.stdout
    undated = {"value": 1.5, "source": "https://www.rba.gov.au/"}
    result = playbook("inventories/aws", extra={**base, "aud_per_usd": undated})
    assert result.returncode != 0
    assert "AUD exchange rate in playbooks/vars/cost_report.yml (aud_per_usd) needs the date" in result.stdout


def test_spot_price_cap_below_every_pool_is_refused(moto_url: str, tmp_path: Path) -> None:
    result = playbook(
        "inventories/aws",
        extra={
            "cost_report_aws_endpoint_url": moto_url,
            "cost_report_dir": str(tmp_path),
            "aws_spot_capacity_max_price": "0.000001",
        },
    )
    assert result.returncode != 0
    assert "above aws_spot_capacity_max_price" in result.stdout


def test_gcp_report_from_configured_prices(tmp_path: Path) -> None:
    result = playbook(
        "inventories/gcp", extra={"cost_report_dir": str(tmp_path), "gcp_spot_capacity_disk_size_gb": GCP_DISK_GB}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "cost_report_gcp.json").read_text())
    hours = SETTINGS["cost_report_hours_per_month"]
    size = GCP["gcp_spot_capacity_target_size"]
    machine = GCP["gcp_spot_capacity_machine_type"]
    vms = size * GCP["gcp_spot_usd_per_hour"][machine]["value"] * hours
    disks = size * GCP_DISK_GB * GCP["gcp_disk_usd_per_gb_month"]["pd-balanced"]["value"]
    nat = size * GCP["gcp_cloud_nat_usd_per_vm_hour"]["value"] * hours  # external_ip false: Cloud NAT
    railway_all, railway_staying = railway_usd()
    assert line(report, "GCP Spot: VMs")["proposed"]["usd"] == pytest.approx(vms, abs=1e-4)
    assert line(report, "GCP Spot: boot disks")["proposed"]["usd"] == pytest.approx(disks, abs=1e-4)
    assert line(report, "GCP Spot: Cloud NAT")["proposed"]["usd"] == pytest.approx(nat, abs=1e-4)
    assert report["total"]["proposed"]["usd"] == pytest.approx(railway_staying + vms + disks + nat, abs=1e-3)
    assert report["total"]["current"]["usd"] == pytest.approx(railway_all)


def test_check_mode_computes_but_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = playbook("inventories/gcp", "--check", extra={"cost_report_dir": str(out)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| **Total** |" in result.stdout and "Would write:" in result.stdout
    assert not out.exists()


def test_local_inventory_is_refused_with_what_to_do(tmp_path: Path) -> None:
    result = playbook("inventories/local", extra={"cost_report_dir": str(tmp_path)})
    assert result.returncode != 0
    assert "run it with -i inventories/aws or -i inventories/gcp" in result.stdout


def test_time_weighted_average_weights_each_price_by_how_long_it_held() -> None:
    # moto's history is one constant point, so the averaging is checked here on a known series.
    module = load_plugin("spot_history", "plugins/modules/aws_spot_price_history.py")
    end = datetime(2026, 11, 30, tzinfo=UTC)
    start = end - timedelta(days=30)
    points = [
        (start - timedelta(days=3), 0.010),  # in effect when the window opens
        (start + timedelta(days=10), 0.004),
        (start + timedelta(days=25), 0.007),
    ]
    stats = module.time_weighted(points, start, end)
    assert stats["average"] == pytest.approx((10 * 0.010 + 15 * 0.004 + 5 * 0.007) / 30)
    assert (stats["min"], stats["max"], stats["latest"], stats["samples"]) == (0.004, 0.010, 0.007, 3)
    assert module.time_weighted([(end + timedelta(days=1), 0.01)], start, end) is None
