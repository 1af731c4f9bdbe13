"""playbooks/migration_status.yml against a real Prefect server with a week of seeded flow runs.

The history (tests/prefect_history.py): runs driven through their states with the REST API, then
moved into the past. Two bulk flows miss their window (gmb_batch_scraping: p95 14 h against 12 h;
analytics_aggregation: a run still waiting 30 h after it was due, against 24 h), so the playbook
must fail and name both.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.prefect_harness import prefect_server
from tests.support.prefect_history import History, ansible_playbook, hours, minutes, steps
from tests.support.prefect_rest import prefect_http

pytestmark = pytest.mark.slow
SECONDS = dt.timedelta(seconds=1)


@pytest.fixture(scope="module")
def seeded() -> Iterator[dict[str, Any]]:
    with prefect_server() as api:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)

        def ago(days: float) -> dt.datetime:
            return now - dt.timedelta(days=days)

        h = History(api)
        h.pool("default")
        h.pool("bulk-processing")
        runs: dict[str, str] = {}

        abn = h.deployment("abn_bulk_ingestion", "abn_bulk_ingestion", "bulk-processing", "bulk")
        # Preempted once: the supervisor's SIGTERM reschedule (AwaitingRetry right after Running, no message).
        runs["preempted"] = h.run(
            abn,
            ago(6),
            steps(
                ("PENDING", minutes(1)),
                ("RUNNING", minutes(2)),
                ("SCHEDULED", hours(1), "AwaitingRetry"),
                ("PENDING", minutes(65)),
                ("RUNNING", minutes(70)),
                ("COMPLETED", hours(3)),
            ),
        )
        # Crashed (no notice), then rescheduled by the crash automation.
        h.run(
            abn,
            ago(5),
            steps(
                ("RUNNING", minutes(5)),
                ("CRASHED", minutes(30)),
                ("SCHEDULED", minutes(31), "AwaitingRetry"),
                ("RUNNING", minutes(40)),
                ("COMPLETED", hours(5)),
            ),
        )
        h.run(abn, ago(4), steps(("RUNNING", minutes(1)), ("COMPLETED", hours(2))))
        h.run(abn, ago(2), steps(("RUNNING", minutes(1)), ("FAILED", hours(1))))
        h.run(abn, ago(9), steps(("RUNNING", minutes(1)), ("COMPLETED", hours(4))))  # before the window

        gmb = h.deployment("gmb_batch_scraping", "nightly", "bulk-processing", "bulk")
        for days, duration in ((3, 2), (2, 3), (1, 14)):
            h.run(gmb, ago(days), steps(("RUNNING", minutes(1)), ("COMPLETED", hours(duration))))

        analytics = h.deployment("analytics_aggregation", "daily", "default")
        h.run(analytics, ago(3), steps(("RUNNING", minutes(1)), ("COMPLETED", hours(1))))
        runs["overdue"] = h.run(analytics, now - hours(30), [], name="waiting-for-capacity")

        email = h.deployment("batch_email_verification", "nightly", "default")
        for days in (3, 2, 1):
            h.run(email, ago(days), steps(("RUNNING", minutes(1)), ("COMPLETED", hours(1))))

        # Prefect's retry of a failed run: AwaitingRetry after Running, with the failure's message.
        intent = h.deployment("intent_signal_refresh", "daily", "bulk-processing", "bulk")
        h.run(
            intent,
            ago(2),
            steps(
                ("RUNNING", minutes(1)),
                ("SCHEDULED", minutes(20), "AwaitingRetry", "Flow run encountered an exception: TimeoutError()"),
                ("RUNNING", minutes(25)),
                ("COMPLETED", hours(2)),
            ),
        )

        # A family: flow webhook_handlers, one deployment per member.
        hooks = [h.deployment("webhook_handlers", name, "default") for name in ("stripe", "twilio")]
        for i in range(5):
            h.run(hooks[i % 2], ago(i + 0.5), steps(("RUNNING", SECONDS), ("COMPLETED", 3 * SECONDS)))
        # A realtime flow far over its SLA: reported, not gated.
        lead = h.deployment("lead_enrichment_realtime", "api", "default")
        h.run(lead, ago(1), steps(("RUNNING", SECONDS), ("COMPLETED", minutes(2))))
        # Not in the catalog.
        legacy = h.deployment("legacy_sync", "nightly", "default")
        h.run(legacy, ago(1), steps(("RUNNING", minutes(1)), ("COMPLETED", hours(1))))

        yield {"api": api, "now": now, "runs": runs}


def flows_by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["flows"]}


def test_seeded_times_read_back_through_rest(seeded: dict[str, Any]) -> None:
    http = prefect_http(seeded["api"])
    run = http.get(f"/flow_runs/{seeded['runs']['preempted']}").raise_for_status().json()
    due = seeded["now"] - dt.timedelta(days=6)

    def at(field: str) -> dt.datetime:
        return dt.datetime.fromisoformat(run[field].replace("Z", "+00:00"))

    assert at("expected_start_time") == due
    assert at("start_time") == due + minutes(2)  # the first Running
    assert at("end_time") == due + hours(3)
    assert run["run_count"] == 2 and run["state_name"] == "Completed"
    states = http.get("/flow_run_states/", params={"flow_run_id": run["id"]}).raise_for_status().json()
    names = [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]
    assert names == ["Scheduled", "Pending", "Running", "AwaitingRetry", "Pending", "Running", "Completed"]


def test_status_table_and_json_and_failure_on_missed_windows(seeded: dict[str, Any], tmp_path: Path) -> None:
    result = ansible_playbook("migration_status.yml", seeded["api"], migration_status_dir=str(tmp_path))
    assert result.returncode != 0, result.stdout
    assert "2 bulk flow(s) missed their tolerance window in the last 7 days" in result.stdout
    assert "- analytics_aggregation: 1 run(s) unfinished past the 24h window: waiting-for-capacity" in result.stdout
    assert "- gmb_batch_scraping: p95 duration 14h 00m > 12h window (3 completed runs)" in result.stdout

    report = json.loads((tmp_path / "migration_status.json").read_text())
    flows = flows_by_name(report)
    assert [f["name"] for f in report["flows"]][:2] == ["lead_enrichment_realtime", "webhook_handlers/*"]

    abn = flows["abn_bulk_ingestion"]
    assert abn["pools"] == ["bulk-processing"]
    assert abn["runs"] == 4  # the run of 9 days ago is outside the window
    assert abn["by_state"] == {"completed": 3, "failed": 1}
    assert (abn["rescheduled"], abn["crashed"], abn["failure_retries"]) == (2, 1, 0)
    assert abn["p95_seconds"] == 5 * 3600  # durations 3 h, 5 h, 2 h as seeded (scheduled start to end)
    assert abn["max_seconds"] == 5 * 3600
    assert abn["completed_seconds"] == [2 * 3600, 3 * 3600, 5 * 3600]
    assert sum(abn["preemptions_by_day"].values()) >= 2  # each rescheduled run was put back at least once
    assert (tmp_path / "migration_status.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert abn["window_held"] is True

    gmb = flows["gmb_batch_scraping"]
    assert gmb["p95_seconds"] == 14 * 3600 and gmb["tolerance_hours"] == 12 and gmb["window_held"] is False

    analytics = flows["analytics_aggregation"]
    assert analytics["pools"] == ["default"]
    assert analytics["by_state"] == {"completed": 1, "unfinished": 1}
    assert analytics["window_held"] is False and len(analytics["overdue_runs"]) == 1

    email = flows["batch_email_verification"]
    assert (email["pools"], email["p95_seconds"], email["window_held"]) == (["default"], 3600, True)

    intent = flows["intent_signal_refresh"]
    assert (intent["rescheduled"], intent["failure_retries"], intent["window_held"]) == (0, 1, True)

    hooks = flows["webhook_handlers/*"]
    assert hooks["prefect_flows"] == ["webhook_handlers"]
    assert [d["name"] for d in hooks["deployments"]] == ["webhook_handlers/stripe", "webhook_handlers/twilio"]
    assert (hooks["runs"], hooks["p95_seconds"], hooks["sla"], hooks["window_held"]) == (5, 3, "100% uptime", None)

    lead = flows["lead_enrichment_realtime"]
    assert (lead["p95_seconds"], lead["sla"], lead["window_held"]) == (120, "<5s response", None)

    assert flows["historical_backfill/*"]["runs"] == 0 and flows["historical_backfill/*"]["deployments"] == []
    assert report["unknown_flows"] == ["legacy_sync"]
    assert [m["name"] for m in report["missed_windows"]] == ["analytics_aggregation", "gmb_batch_scraping"]

    # The same table is printed and written as Markdown.
    row = "| `abn_bulk_ingestion` | bulk | bulk-processing | 4 | 3 completed, 1 failed | 2 | 1 | 5h 00m | 24h | yes |"
    assert row in result.stdout
    assert row in (tmp_path / "migration_status.md").read_text()
    assert (
        "| `lead_enrichment_realtime` | realtime | default | 1 | 1 completed | 0 | 0 | 2m 00s | SLA <5s response |"
        in (result.stdout)
    )


def test_window_length_is_configurable(seeded: dict[str, Any], tmp_path: Path) -> None:
    result = ansible_playbook(
        "migration_status.yml", seeded["api"], migration_status_dir=str(tmp_path), migration_status_days=1.5
    )
    report = json.loads((tmp_path / "migration_status.json").read_text())
    flows = flows_by_name(report)
    assert report["days"] == 1.5
    assert flows["abn_bulk_ingestion"]["runs"] == 0  # its runs are 2 to 6 days old
    assert flows["gmb_batch_scraping"]["runs"] == 1 and flows["gmb_batch_scraping"]["window_held"] is False
    # The overdue run was due 30 h ago, before the window: still reported, still a miss.
    assert flows["analytics_aggregation"]["runs"] == 1 and flows["analytics_aggregation"]["window_held"] is False
    assert result.returncode != 0


def test_check_mode_reads_but_writes_nothing(seeded: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "reports"
    result = ansible_playbook("migration_status.yml", seeded["api"], "--check", migration_status_dir=str(out))
    assert "| `gmb_batch_scraping` | bulk |" in result.stdout
    assert "missed their tolerance window" in result.stdout
    assert not out.exists()


def test_unreachable_api_and_bad_url_say_what_to_do(tmp_path: Path) -> None:
    down = ansible_playbook("migration_status.yml", "http://127.0.0.1:9/api", migration_status_dir=str(tmp_path))
    assert down.returncode != 0
    assert "cannot reach the Prefect API at http://127.0.0.1:9/api" in down.stdout
    bad = ansible_playbook("migration_status.yml", "localhost:4200", migration_status_dir=str(tmp_path))
    assert bad.returncode != 0
    assert "prefect_api_url must be the Prefect API URL" in bad.stdout
