"""The `abn_file` job type: one XML file of the extract, ingested by any consumer of the queue.

Importing this module registers the type with the consumer (`agency_os_spot.runtime.consumer`).
"""

from __future__ import annotations

from typing import Any

from agency_os_spot.abn.pipeline import DEFAULT_CHECKPOINT_EVERY, ingest_file
from agency_os_spot.abn.sources import JOB_TYPE, FileJob
from agency_os_spot.abn.store import create_tables
from agency_os_spot.runtime.consumer import WorkContext, register
from agency_os_spot.runtime.ledger import Ledger
from agency_os_spot.runtime.queue import Delivery


def handle_abn_file(delivery: Delivery, ctx: WorkContext) -> dict[str, Any]:
    job = FileJob.from_job(delivery.job)
    return ingest_file(
        job,
        ctx.ledger,
        checkpoint_every=ctx.checkpoint_every or DEFAULT_CHECKPOINT_EVERY,
        owner=ctx.owner,
        term=ctx.term,
        on_batch=lambda job, batch: ctx.count_attempted(job.id, batch.records),
        after_commit=lambda _job, batch: delivery.progress(batch.end),
    )


def _setup(ledger: Ledger) -> None:
    create_tables(ledger.engine)


register(JOB_TYPE, handle_abn_file, setup=_setup)
