"""`agency-os-spot worker`: the queue's consumer without orchestration (what the `bulk_worker`
flow runs), for the job types this package defines. Prints its counts as one JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys

import agency_os_spot.abn.handler  # noqa: F401  (registers the abn_file job type)
from agency_os_spot.runtime.consumer import (
    consume,
    database_url_from_env,
    make_context,
    make_queue,
    redis_url_from_env,
    visibility_timeout_from_env,
)
from agency_os_spot.runtime.termination import termination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot worker", description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=redis_url_from_env(), help="default: AGENCY_OS_REDIS_URL")
    parser.add_argument("--database-url", default=database_url_from_env(), help="default: AGENCY_OS_DATABASE_URL")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="stop after this many seconds without a job")
    parser.add_argument(
        "--visibility-timeout",
        type=float,
        default=visibility_timeout_from_env(),
        help="seconds without a heartbeat before another consumer reclaims a job",
    )
    parser.add_argument("--checkpoint-every", type=int, default=None, help="records per checkpoint (handler default)")
    parser.add_argument("--max-attempts", type=int, default=5, help="failures before a job is dead-lettered")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("--redis-url (or AGENCY_OS_REDIS_URL) is required")
    if not args.database_url:
        parser.error("--database-url (or AGENCY_OS_DATABASE_URL) is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    termination.install()
    ctx = make_context(args.database_url, args.redis_url, args.checkpoint_every)
    queue = make_queue(ctx, args.visibility_timeout, max_attempts=args.max_attempts)
    stats = consume(queue, ctx, idle_timeout_s=args.idle_timeout)
    print(json.dumps(stats.as_dict()), file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
