"""`bulk_worker`: a Prefect run of the queue's consumer, anywhere in the bulk pool.

The consumer is `agency_os_spot.runtime.consumer` (what it guarantees when a node is preempted is
said there); this flow resolves the node's settings, registers the job types this repository
defines, and consumes until the queue has been idle for `idle_timeout_s`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

import agency_os_spot.abn.handler  # noqa: F401  (registers the abn_file job type)
from agency_os_spot import settings
from agency_os_spot.catalog import flow_options
from agency_os_spot.runtime.consumer import consume, make_context, make_queue, visibility_timeout_from_env
from agency_os_spot.runtime.termination import termination


@flow(**flow_options("bulk_worker"))
def bulk_worker(
    redis_url: str | None = None,
    database_url: str | None = None,
    idle_timeout_s: float = 30.0,
    checkpoint_every: int | None = None,
    visibility_timeout_s: float | None = None,
) -> dict[str, int]:
    """Consume the jobs of this node's database until the queue has been idle for `idle_timeout_s`."""
    term = termination.install()
    logger = get_run_logger()
    database_url, redis_url = settings.resolve(database_url, redis_url, redis_required=True)
    with term.guard():
        ctx = make_context(database_url, redis_url, checkpoint_every)
        queue = make_queue(ctx, visibility_timeout_s or visibility_timeout_from_env())
        stats = consume(queue, ctx, idle_timeout_s=idle_timeout_s)
    logger.info("bulk_worker done: %s", stats.as_dict())
    return stats.as_dict()
