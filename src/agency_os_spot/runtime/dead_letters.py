"""`agency-os-spot dead-letters`: list, show and replay the jobs a queue gave up on.

A job is dead-lettered when it failed `max_attempts` times in a row without progress, when its
holders kept dying without progress (poison), when its payload is malformed, or when it reached a
queue of another destination. Once the cause is fixed, `replay` puts it back on its queue with a
fresh attempt count; its handler resumes from the ledger's checkpoint, so nothing is redone.

    agency-os-spot dead-letters list   [--database-url URL] [--redis-url URL]
    agency-os-spot dead-letters show   ENTRY_ID
    agency-os-spot dead-letters replay ENTRY_ID... | --all

The database (whose destination names the queue) and Redis default to the node's settings,
AGENCY_OS_DATABASE_URL and AGENCY_OS_REDIS_URL. Exit status: 0 done, 1 an entry was not found,
2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agency_os_spot import settings
from agency_os_spot.runtime.ledger import Ledger
from agency_os_spot.runtime.queue import ReliableQueue


def _queue(args: argparse.Namespace) -> ReliableQueue:
    ledger = Ledger(args.database_url)
    ledger.setup()
    return ReliableQueue(args.redis_url, destination=ledger.destination)


def replay(queue: ReliableQueue, record: dict[str, Any]) -> bool:
    """Put a dead-lettered job back on its queue (fresh failure and strike counts) and remove its
    dead letter; False for a record that holds no valid job (malformed payloads stay listed)."""
    job = record.get("job")
    if not isinstance(job, dict) or not job.get("id") or not job.get("type"):
        return False
    job = {**job, "destination": queue.destination}
    raw = json.dumps(record, default=str)
    with queue.redis.pipeline(transaction=True) as pipe:
        pipe.delete(queue.meta_key(str(job["id"])))
        pipe.lrem(queue.dead_letter, 1, raw)
        removed = pipe.execute()[1]
    if not removed:  # replayed meanwhile by someone else
        return False
    queue.enqueue(job, force=True)
    return True


def _find(queue: ReliableQueue, entry_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    records = {r.get("entry_id"): r for r in queue.dead_letters()}
    return [records[e] for e in entry_ids if e in records], [e for e in entry_ids if e not in records]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot dead-letters", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=settings.current().database_url, help="default: $AGENCY_OS_DATABASE_URL"
    )
    parser.add_argument("--redis-url", default=settings.current().redis_url, help="default: $AGENCY_OS_REDIS_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per dead letter: entry id, job id, reason")
    show = sub.add_parser("show", help="a dead letter in full (JSON)")
    show.add_argument("entry_id")
    again = sub.add_parser("replay", help="put jobs back on their queue; they resume from their checkpoint")
    again.add_argument("entry_ids", nargs="*", metavar="ENTRY_ID")
    again.add_argument("--all", action="store_true", help="every dead letter that holds a job")
    args = parser.parse_args(argv)
    if not args.database_url or not args.redis_url:
        parser.error("--database-url and --redis-url (or AGENCY_OS_DATABASE_URL, AGENCY_OS_REDIS_URL) are required")
    if args.command == "replay" and bool(args.entry_ids) == args.all:
        parser.error("replay: give ENTRY_ID... or --all (not both)")
    queue = _queue(args)

    if args.command == "list":
        for record in queue.dead_letters():
            job = record.get("job") if isinstance(record.get("job"), dict) else {}
            print(f"{record.get('entry_id')}\t{job.get('id', '?')}\t{record.get('at')}\t{record.get('reason')}")
        return 0
    if args.command == "show":
        found, missing = _find(queue, [args.entry_id])
        if missing:
            print(f"no dead letter {args.entry_id} in {queue.dead_letter}", file=sys.stderr)
            return 1
        print(json.dumps(found[0], indent=2, sort_keys=True))
        return 0
    records, missing = (queue.dead_letters(), []) if args.all else _find(queue, args.entry_ids)
    replayed = [r for r in records if replay(queue, r)]
    print(json.dumps({"replayed": [r["job"]["id"] for r in replayed], "not_found": missing, "queue": queue.stream}))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
