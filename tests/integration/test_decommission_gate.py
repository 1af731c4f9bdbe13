"""playbooks/decommission_railway_bulk.yml against a real Prefect server, step by step through a cutover.

1. abn_bulk_ingestion has run on spot for over a week; batch_email_verification is still on the
   `default` pool (and has a run scheduled there): refused, naming what is missing.
2. batch_email_verification moved to `bulk-processing`, two days of runs there, the old scheduled
   run still waits in `default`: refused (too few days, stranded run).
3. The stranded run deleted: passes with `-e decommission_railway_bulk_days=1`, still refused at 7.
4. A week of runs on spot: passes at the default 7 days and prints the checklist.
The tests run in this order and share one server (one module, one Prefect server).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from agency_os_spot.catalog import load_catalog
from tests.support.prefect_harness import prefect_server
from tests.support.prefect_history import History, ansible_playbook, hours, minutes, steps

pytestmark = pytest.mark.slow
SPOT, RAILWAY = "bulk-processing", "default"


def completed(h: History, deployment: str, due: dt.datetime, duration: float = 2) -> str:
    return h.run(deployment, due, steps(("RUNNING", minutes(1)), ("COMPLETED", hours(duration))))


@pytest.fixture(scope="module")
def cutover() -> Iterator[dict[str, Any]]:
    with prefect_server() as api:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        h = History(api)
        h.pool(RAILWAY)
        h.pool(SPOT)
        abn = h.deployment("abn_bulk_ingestion", "abn_bulk_ingestion", SPOT, "bulk")
        for days in (8, 6, 4, 1):
            completed(h, abn, now - dt.timedelta(days=days))
        email = h.deployment("batch_email_verification", "nightly", RAILWAY)
        for days in (3, 2):
            completed(h, email, now - dt.timedelta(days=days), duration=1)
        stranded = h.run(email, now + hours(6), [], name="tonight-on-railway")
        # Realtime flows stay on the default pool: the gate does not look at them.
        hooks = h.deployment("webhook_handlers", "stripe", RAILWAY)
        completed(h, hooks, now - hours(3), duration=0.001)
        yield {"api": api, "now": now, "history": h, "email": email, "stranded": stranded}


def gate(state: dict[str, Any], *args: str, **extra: Any):
    return ansible_playbook("decommission_railway_bulk.yml", state["api"], *args, **extra)


def test_refuses_while_a_bulk_flow_is_still_on_default(cutover: dict[str, Any]) -> None:
    result = gate(cutover)
    assert result.returncode != 0
    out = result.stdout
    assert "Refused: Railway's bulk compute must stay" in out
    assert (
        "- batch_email_verification: not cut over: deployment(s) batch_email_verification/nightly (pool 'default') "
        "not in the bulk pool 'bulk-processing'"
    ) in out
    assert "- batch_email_verification: no completed run in 'bulk-processing' yet" in out
    assert "- abn_bulk_ingestion:" not in out  # over a week of completed runs on spot, no window missed
    assert "Checklist" not in out


def test_refuses_with_too_few_days_on_spot_and_a_stranded_run(cutover: dict[str, Any]) -> None:
    h, now = cutover["history"], cutover["now"]
    h.move(cutover["email"], SPOT, "bulk")
    for days in (2, 1):
        completed(h, cutover["email"], now - dt.timedelta(days=days) + hours(12), duration=1)
    result = gate(cutover)
    assert result.returncode != 0
    out = result.stdout
    assert "not cut over" not in out
    assert (
        "- batch_email_verification: only 1.0 days of on-spot success: its 2 completed run(s) in 'bulk-processing'"
        in out
    )
    assert "it needs 7 days" in out
    assert (
        "- batch_email_verification: 1 scheduled run(s) still wait in pool(s) default (created before the cutover: "
        "tonight-on-railway)"
    ) in out


def test_passes_with_fewer_days_when_configured(cutover: dict[str, Any]) -> None:
    cutover["history"].delete_run(cutover["stranded"])
    assert gate(cutover, decommission_railway_bulk_days=1).returncode == 0
    refused = gate(cutover)
    assert refused.returncode != 0 and "only 1.0 days of on-spot success" in refused.stdout


def test_passes_after_a_week_on_spot_and_prints_the_checklist(cutover: dict[str, Any]) -> None:
    h, now = cutover["history"], cutover["now"]
    for days in (7.5, 5, 3):
        completed(h, cutover["email"], now - dt.timedelta(days=days), duration=1)
    result = gate(cutover)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "Railway bulk compute can be decommissioned. Checklist (from src/agency_os_spot/catalog.yml):" in out
    catalog = load_catalog()
    for spec in catalog.by_tier("bulk"):  # every flow that leaves Railway is on the checklist
        assert (f"[ ] {spec.name}: " in out) == (spec.current_infra == "railway"), spec.name
    assert "[ ] bulk_worker: " not in out  # born on spot: nothing to stop on Railway
    assert (
        "[ ] abn_bulk_ingestion: stop running it on Railway; it runs on bulk-processing/bulk (4 completed runs" in out
    )
    assert "[ ] historical_backfill/*: not deployed on this Prefect server, so not checked" in out
    staying = ", ".join(spec.name for spec in catalog.by_tier("realtime"))
    assert f"[ ] Keep on Railway (work pool 'default'): {staying}" in out

    # And the migration status agrees: no bulk flow missed its window.
    status = ansible_playbook("migration_status.yml", cutover["api"], "--check")
    assert status.returncode == 0, status.stdout
    assert "Bulk flows that missed their window: none." in status.stdout
