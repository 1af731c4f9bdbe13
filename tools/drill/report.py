"""The drill's result: the checks, and the JSON object it prints as its last line.

Two verdicts, apart: the work (`work_ok`: every valid record in the database exactly once, the
rejects are the injected bad records, no job lost or dead-lettered, every run completed) and the
plan (`faults_missing`: planned faults that could not be made; the work may end before a slow
fault comes round). `passed` is both; the exit status is non-zero unless it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tools.drill.faults import FREEZE, HARD, NOTICE, POSTGRES_RESTART, REDIS_RESTART
from tools.drill.observer import Counts, Preemption

log = logging.getLogger(__name__)


def _max(values: list[float]) -> float | None:
    return round(max(values), 1) if values else None


def build(
    manifest: dict[str, Any],
    counts: Counts,
    preemptions: Sequence[Preemption],
    service_faults: Sequence[str],
    *,
    planned: int,
    checkpoint_every: int,
    seed: int,
    seconds: float,
) -> dict[str, Any]:
    committed = sum(int(r.get("records", 0)) for r in counts.results)
    inserted = sum(int(r.get("inserted", 0)) for r in counts.results)
    recoveries = [p.recovery_s for p in preemptions if p.recovery_s is not None]
    notice_recoveries = [p.recovery_s for p in preemptions if p.mode == NOTICE and p.recovery_s is not None]
    result: dict[str, Any] = {
        "records_source": manifest["records"],
        "records_valid": manifest["valid"],
        "records_db": counts.rows,
        # A record written twice would be a second row (impossible: abn is the key) or a second
        # insert counted by the ledger, or a file's records counted twice.
        "duplicates": (counts.rows - counts.distinct)
        + max(inserted - counts.rows, 0)
        + max(committed - manifest["records"], 0),
        "rejects": counts.rejects,
        "rejects_expected": manifest["bad"],
        "jobs": manifest["jobs"],
        "jobs_lost": manifest["jobs"] - len(counts.results) + counts.dead_letters,
        "runs_not_completed": sum(state != "COMPLETED" for state in counts.run_states),
        "dead_letters": counts.dead_letters,
        "preemptions_notice": sum(p.mode == NOTICE for p in preemptions),
        "preemptions_hard": sum(p.mode == HARD for p in preemptions),
        "freezes": sum(p.mode == FREEZE for p in preemptions),
        "postgres_restarts": list(service_faults).count(POSTGRES_RESTART),
        "redis_restarts": list(service_faults).count(REDIS_RESTART),
        "max_recovery_s": _max(recoveries),
        "max_recovery_after_notice_s": _max(notice_recoveries),
        "records_redone": counts.attempted - committed,
        "checkpoint_every": checkpoint_every,
        "runs": len(counts.run_states),
        "seconds": round(seconds, 1),
        "seed": seed,
        "faults_planned": planned,
    }
    result["work_ok"] = (
        result["records_db"] == result["records_valid"]
        and result["duplicates"] == 0
        and result["rejects"] == result["rejects_expected"]
        and result["jobs_lost"] == 0
        and result["dead_letters"] == 0
        and result["runs_not_completed"] == 0
    )
    result["faults_missing"] = max(planned - len(preemptions) - len(service_faults), 0)
    result["passed"] = result["work_ok"] and result["faults_missing"] == 0
    if not result["work_ok"]:
        log.info("FAILED: work was lost, done twice, dead-lettered or left unfinished")
    elif result["faults_missing"]:
        log.info(f"nothing was lost, but {result['faults_missing']} of {planned} planned faults could not be made")
    return result


def exit_status(result: dict[str, Any]) -> int:
    return 0 if result["passed"] else 1
