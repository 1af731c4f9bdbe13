"""The flow catalog: the packaged file is valid, and each kind of bad input fails with a precise message."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agency_os_spot.catalog import DEFAULT_PATH, CatalogError, load_catalog, parse_catalog
from tests.support import ROOT

SEED_REALTIME = {
    "lead_enrichment_realtime",
    "webhook_handlers/*",
    "campaign_triggers/*",
    "voice_ai_callbacks",
    "email_reply_processor",
}
SEED_BULK = {
    "abn_bulk_ingestion",
    "batch_email_verification",
    "historical_backfill/*",
    "analytics_aggregation",
    "gmb_batch_scraping",
    "intent_signal_refresh",
}


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(DEFAULT_PATH.read_text())


def _flow(raw: dict, name: str) -> dict:
    return next(f for f in raw["flows"] if f["name"] == name)


def test_packaged_catalog_holds_every_seed_flow_with_its_placement():
    catalog = load_catalog()
    assert {f.name for f in catalog.by_tier("realtime")} == SEED_REALTIME
    assert {f.name for f in catalog.by_tier("bulk")} >= SEED_BULK
    for spec in catalog.by_tier("realtime"):
        assert spec.tags == ("tier:realtime", "infra:railway")
        assert (spec.work_pool, spec.work_queue) == ("default", "default")
        assert spec.sla and spec.tolerance_hours is None
        assert spec.current_infra == spec.target_infra == "railway"
    for spec in catalog.by_tier("bulk"):
        assert spec.tags == ("tier:bulk", "infra:spot", "interruptible")
        assert (spec.work_pool, spec.work_queue) == ("bulk-processing", "bulk")
        assert (spec.retries, spec.retry_delay_seconds) == (3, 300)
        assert spec.tolerance_hours in (12, 24, 48)
        # every seed bulk flow starts on Railway; the queue consumer is new and born on spot
        expected = "spot" if spec.name == "bulk_worker" else "railway"
        assert (spec.current_infra, spec.target_infra) == (expected, "spot")


def test_tolerance_windows_match_the_seed():
    catalog = load_catalog()
    windows = {f.name: f.tolerance_hours for f in catalog.by_tier("bulk")}
    assert windows["abn_bulk_ingestion"] == 24
    assert windows["batch_email_verification"] == 12
    assert windows["historical_backfill/*"] == 48
    assert windows["gmb_batch_scraping"] == 12


def test_family_lookup_and_flow_options():
    catalog = load_catalog()
    assert catalog.get("webhook_handlers/stripe").name == "webhook_handlers/*"
    assert catalog.get("historical_backfill/2024_leads").tier == "bulk"
    with pytest.raises(KeyError, match="valid names: lead_enrichment_realtime"):
        catalog.get("webhook_handlers")
    with pytest.raises(KeyError):
        catalog.get("webhook_handlers/a/b")
    options = catalog.get("abn_bulk_ingestion").flow_options()
    assert options == {
        "name": "abn_bulk_ingestion",
        "description": options["description"],
        "retries": 3,
        "retry_delay_seconds": 300,
    }
    assert "retries" not in catalog.get("voice_ai_callbacks").flow_options()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: _flow(r, "voice_ai_callbacks").update(tier="urgent"),
            r"flow 'voice_ai_callbacks': unknown tier 'urgent' \(known tiers: bulk, realtime\)",
        ),
        (
            lambda r: r["flows"].append(copy.deepcopy(_flow(r, "gmb_batch_scraping"))),
            r"duplicate flow name 'gmb_batch_scraping' \(flows\[\d+\] and flows\[\d+\]\)",
        ),
        (
            lambda r: _flow(r, "lead_enrichment_realtime").update(work_pool="bulk-processing"),
            r"flow 'lead_enrichment_realtime': realtime flow mapped to the spot pool 'bulk-processing'",
        ),
        (
            lambda r: _flow(r, "email_reply_processor").update(extra_tags=["interruptible"]),
            r"flow 'email_reply_processor': realtime flow mapped to the spot pool .* or tagged interruptible",
        ),
        (
            lambda r: _flow(r, "analytics_aggregation").pop("tolerance_hours"),
            r"flow 'analytics_aggregation': bulk flow without tolerance_hours",
        ),
        (
            lambda r: _flow(r, "analytics_aggregation").update(tolerance_hours=-4),
            r"tolerance_hours must be a positive number of hours, got -4",
        ),
        (
            lambda r: _flow(r, "webhook_handlers/*").update(name="webhook*handlers"),
            r"malformed name 'webhook\*handlers': a wildcard must be the whole last segment",
        ),
        (
            lambda r: _flow(r, "webhook_handlers/*").update(name="webhook_handlers/*/x"),
            r"malformed name 'webhook_handlers/\*/x'",
        ),
        (lambda r: _flow(r, "webhook_handlers/*").update(name="*"), r"malformed name '\*'"),
        (
            lambda r: _flow(r, "webhook_handlers/*").update(name="webhook_handlers/stripe*"),
            r"malformed name 'webhook_handlers/stripe\*'",
        ),
        (
            lambda r: _flow(r, "voice_ai_callbacks").pop("sla"),
            r"flow 'voice_ai_callbacks': realtime flow without an sla",
        ),
        (
            lambda r: _flow(r, "voice_ai_callbacks").update(tolerence_hours=3),
            r"flow 'voice_ai_callbacks': unknown key\(s\) tolerence_hours",
        ),
        (
            lambda r: _flow(r, "voice_ai_callbacks").pop("reason"),
            r"flow 'voice_ai_callbacks': missing reason",
        ),
        (
            lambda r: _flow(r, "abn_bulk_ingestion").update(entrypoint="flows/abn.py"),
            r"entrypoint must look like 'flows.module:function'",
        ),
        (lambda r: r["tiers"].update(urgent=r["tiers"]["bulk"]), r"unknown tier 'urgent' defined"),
        (
            lambda r: r["tiers"]["realtime"].update(work_pool="bulk-processing"),
            r"tiers realtime and bulk must not share the work pool",
        ),
        (
            lambda r: r["tiers"]["bulk"].update(retries="three"),
            r"tier 'bulk': retries must be a whole number >= 0, got 'three'",
        ),
        (
            lambda r: _flow(r, "gmb_batch_scraping").update(current_infra="heroku"),
            r"flow 'gmb_batch_scraping': unknown current_infra 'heroku' \(known: railway, spot\)",
        ),
        (lambda r: r.update(flows=[]), r"flows must be a non-empty list"),
    ],
    ids=[
        "unknown-tier",
        "duplicate-name",
        "realtime-on-spot-pool",
        "realtime-interruptible",
        "bulk-without-tolerance",
        "negative-tolerance",
        "wildcard-mid-name",
        "wildcard-not-last",
        "bare-wildcard",
        "partial-wildcard",
        "realtime-without-sla",
        "unknown-key",
        "missing-reason",
        "bad-entrypoint",
        "unknown-tier-defined",
        "shared-pool",
        "bad-retries",
        "unknown-current-infra",
        "no-flows",
    ],
)
def test_bad_input_fails_with_a_precise_message(raw, mutate, message):
    mutate(raw)
    with pytest.raises(CatalogError, match=message):
        parse_catalog(raw, source="catalog.yml")


def test_unreadable_and_invalid_yaml(tmp_path: Path):
    with pytest.raises(CatalogError, match="cannot read the flow catalog"):
        load_catalog(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("flows: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)


def test_cli_validates_and_reports(tmp_path: Path, raw):
    out = subprocess.run(
        [sys.executable, "-m", "agency_os_spot.catalog", "--json"], check=False, capture_output=True, text=True
    )
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["spot_pool"] == "bulk-processing"
    _flow(raw, "voice_ai_callbacks")["tier"] = "urgent"
    bad = tmp_path / "catalog.yml"
    bad.write_text(yaml.safe_dump(raw))
    out = subprocess.run(
        [sys.executable, "-m", "agency_os_spot.catalog", "--file", str(bad)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "unknown tier 'urgent'" in out.stderr


def test_ansible_reads_the_same_catalog(tmp_path: Path, raw):
    """The lookup plugin returns what the Python loader returns, and refuses what it refuses."""
    ansible = Path(sys.executable).with_name("ansible")
    root = ROOT
    out = subprocess.run(
        [
            str(ansible),
            "localhost",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ lookup('flow_catalog') | to_json }}",
            "-o",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr
    payload = out.stdout.split("=>", 1)[1]
    assert json.loads(json.loads(payload)["msg"]) == json.loads(json.dumps(load_catalog().as_dict()))
    _flow(raw, "lead_enrichment_realtime")["work_pool"] = "bulk-processing"
    bad = tmp_path / "catalog.yml"
    bad.write_text(yaml.safe_dump(raw))
    out = subprocess.run(
        [
            str(ansible),
            "localhost",
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={{{{ lookup('flow_catalog', file='{bad}') }}}}",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert out.returncode != 0
    assert "realtime flow mapped to the spot pool" in out.stdout + out.stderr
