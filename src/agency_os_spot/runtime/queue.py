"""A reliable job queue on Redis Streams with a consumer group.

Why Streams and not BLMOVE + a processing list: a consumer group already is the processing
list, kept per consumer by Redis (the pending entries list), and `XAUTOCLAIM` is the reaper:
an entry whose holder stopped touching it for `visibility_timeout_s` is handed to the next
consumer atomically, with no Lua and no scan of every worker's list. `BLPOP` (a plain list
queue) removes the job the moment it is read, so a worker SIGKILLed while holding it loses it.

Life of a job:

* `enqueue(job)` adds it once (a job id seen before is not added again, unless `force`);
* `claim()` returns a `Delivery`: first any entry abandoned by a dead consumer, else a new one;
  while the holder works, a heartbeat thread resets the entry's idle time (`XCLAIM ... JUSTID`);
* `ack()` when done; `release()` on drain (back to the queue at once, no attempt counted);
  `fail(error)` on an exception that retrying in place could not cure (back to the queue, or to
  the dead-letter list after `max_attempts` failures in a row without progress, with the error);
* a malformed payload goes to the dead-letter list with the reason, and the consumer goes on;
* a job whose holder keeps dying without making progress (`max_strikes` times: an OOM, a
  segfault) is dead-lettered too, so it cannot take the pool down forever. Progress, reported
  with `Delivery.progress(n)`, clears the strikes: preemptions of a job that advances are free.

The job's *effect* must be idempotent (the ledger's checkpoint in the output's transaction):
a job can be delivered more than once, it just never counts twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

log = logging.getLogger("agency_os.queue")


def connect(url: str) -> redis.Redis:
    """A Redis client that rides out a restart or a failover: each command is tried again on a
    connection error (or a Redis still loading its data) with exponential backoff and jitter,
    0.5 s doubling to 5 s, 15 times (about 40 s); TCP keepalive notices a peer that vanished.
    Retrying a write whose answer was lost can apply it twice: the queue's effects allow it (an
    entry added twice is one job in the ledger)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialWithJitterBackoff(cap=5.0, base=0.5), retries=15),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        socket_keepalive=True,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


DEFAULT_STREAM = "bulk:jobs"


def destination_stream(destination: str) -> str:
    """The stream of the jobs that write to one destination (a ledger's database)."""
    return f"{DEFAULT_STREAM}:{destination}"


DEFAULT_GROUP = "bulk-workers"

_ENQUEUE = """
-- KEYS[1] stream, KEYS[2] index hash; ARGV[1] job id, ARGV[2] payload, ARGV[3] force
if ARGV[3] ~= '1' and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return false
end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], entry)
return entry
"""


_HEARTBEAT = """
-- KEYS[1] stream; ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer.
-- Reset the entry's idle time only while this consumer still holds it: a plain XCLAIM would
-- take the entry back from the consumer that reclaimed it from us.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""


RELEASED = "__released__"  # pseudo-consumer holding entries handed back by a drain
_PARKED_IDLE_MS = 10**12


def default_consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Delivery:
    """A job handed to this consumer. Finish it with ack(), release() or fail()."""

    queue: ReliableQueue
    entry_id: str
    job: dict[str, Any]
    reclaimed: bool = False
    _done: bool = False
    _lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def job_id(self) -> str:
        return str(self.job["id"])

    @property
    def lost(self) -> bool:
        """True when another consumer took the entry over (this holder was presumed dead)."""
        return self._lost

    def heartbeat(self) -> bool:
        """Reset the entry's idle time; False if it is no longer ours."""
        if self._lost:
            return False
        q = self.queue
        try:
            held = q._heartbeat(keys=[q.stream], args=[q.group, self.entry_id, q.consumer])
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            q._group_ready = False  # the stream is gone (Redis lost it): so is our entry
            held = 0
        if not held:
            self._lost = True
            log.warning("job %s: entry %s was taken over by another consumer", self.job_id, self.entry_id)
        return not self._lost

    def progress(self, value: int) -> None:
        """Report progress (clears crash strikes: a job that advances is not poison)."""
        self.queue.redis.hset(self.queue.meta_key(self.job_id), "progress", value)

    def __enter__(self) -> Delivery:
        """Keep the entry alive with a heartbeat thread while the job runs."""
        interval = max(self.queue.visibility_timeout_s / 3, 0.5)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    if not self.heartbeat():
                        return
                except redis.RedisError as exc:  # a blip: the next beat retries
                    log.warning("heartbeat for job %s failed: %s", self.job_id, exc)

        self._thread = threading.Thread(target=beat, name=f"heartbeat-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _finish(self) -> bool:
        """Mark the delivery finished; False when the entry is no longer ours (then the new
        holder decides its fate and this one must not ack, requeue or dead-letter it)."""
        if self._done:
            raise RuntimeError(f"delivery of job {self.job_id} already finished")
        self._done = True
        self._stop.set()
        return self.heartbeat()

    def ack(self) -> None:
        """The job is done: remove it from the stream."""
        if not self._finish():
            return
        q = self.queue
        with q.redis.pipeline(transaction=True) as pipe:
            pipe.xack(q.stream, q.group, self.entry_id)
            pipe.xdel(q.stream, self.entry_id)
            pipe.hset(q.index_key, self.job_id, "done")
            pipe.delete(q.meta_key(self.job_id))
            pipe.execute()

    def release(self) -> None:
        """Drain: hand the job back at once, to be the next one any consumer takes (ahead of jobs
        never started: interrupted work resumes first); no attempt is counted."""
        if self._finish():
            self.queue._hand_back(self)

    def dead_letter(self, reason: str, error: str | None = None) -> None:
        """Give up on the job at once (e.g. no handler for its type)."""
        if self._finish():
            self.queue._dead_letter(self.entry_id, self.job, reason, error)

    def abandon(self) -> None:
        """Stop holding the entry without touching it: another consumer took it over."""
        self._done = True
        self._stop.set()

    def failures_without_progress(self) -> int:
        """Failed attempts of this job since it last made progress (0 when this one advanced)."""
        meta = self.queue.redis.hgetall(self.queue.meta_key(self.job_id))
        if meta.get("progress", "0") != meta.get("claimed_progress", "0"):
            return 0
        return int(meta.get("failures", "0"))

    def fail(self, error: str) -> bool:
        """A failed attempt: requeue, or dead-letter after max_attempts failures in a row without
        progress (an attempt that advanced the job starts the count again). True if dead-lettered."""
        if not self._finish():
            return False
        q = self.queue
        key = q.meta_key(self.job_id)
        with q.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "failures", self.failures_without_progress())
            pipe.hincrby(key, "failures", 1)
            failures = pipe.execute()[1]
        if failures >= q.max_attempts:
            q._dead_letter(self.entry_id, self.job, f"failed {failures} times", error)
            return True
        log.warning("job %s failed (attempt %d of %d): %s", self.job_id, failures, q.max_attempts, error)
        q._requeue(self)
        return False


class ReliableQueue:
    """A Redis Streams work queue shared by every worker of the bulk pool."""

    def __init__(
        self,
        client: redis.Redis | str,
        *,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        visibility_timeout_s: float = 60.0,
        max_attempts: int = 5,
        max_strikes: int = 5,
        dead_letter: str | None = None,
        destination: str | None = None,
    ):
        problems = [
            f"{name} must be {rule}, not {value!r}"
            for name, value, ok, rule in (
                ("visibility_timeout_s", visibility_timeout_s, visibility_timeout_s > 0, "> 0 seconds"),
                ("max_attempts", max_attempts, max_attempts >= 1, ">= 1"),
                ("max_strikes", max_strikes, max_strikes >= 1, ">= 1"),
            )
            if not ok
        ]
        if problems:
            raise ValueError("queue settings: " + "; ".join(problems))
        self.redis = connect(client) if isinstance(client, str) else client
        self.destination = destination
        self.stream = destination_stream(destination) if destination else stream
        self.group = group
        self.consumer = consumer or default_consumer()
        self.visibility_timeout_s = visibility_timeout_s
        self.max_attempts = max_attempts
        self.max_strikes = max_strikes
        self.dead_letter = dead_letter or f"{self.stream}:dead"
        self.index_key = f"{self.stream}:index"
        self._enqueue = self.redis.register_script(_ENQUEUE)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._group_ready = False

    def meta_key(self, job_id: str) -> str:
        return f"{self.stream}:meta:{job_id}"

    def ensure_group(self) -> None:
        """Create the stream and consumer group if missing (from the start of the stream)."""
        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- producing -----------------------------------------------------------------------------

    def enqueue(self, job: dict[str, Any], force: bool = False) -> str | None:
        """Add a job (a JSON object with "id" and "type"). Returns the entry id, or None when a
        job with that id was enqueued before (queued, running or done) and `force` is false."""
        if not isinstance(job, dict) or not job.get("id") or not job.get("type"):
            raise ValueError(f"a job is a JSON object with non-empty 'id' and 'type', got {job!r}")
        if self.destination and job.setdefault("destination", self.destination) != self.destination:
            raise ValueError(
                f"job {job['id']} is for destination {job['destination']}, not this queue's {self.destination}"
            )
        self.ensure_group()
        payload = json.dumps(job, sort_keys=True)
        return self._enqueue(keys=[self.stream, self.index_key], args=[str(job["id"]), payload, "1" if force else "0"])

    def ensure_queued(self, job: dict[str, Any]) -> bool:
        """Enqueue `job` again unless the queue still has it (an entry in the stream) or gave it
        up (dead). For a job the ledger says is not complete: Redis may have lost it (a crash
        losing its last second, a failover, a deleted stream). True when it was enqueued again.
        A second copy of a job that was in fact still queued is harmless: the ledger skips or
        fences it."""
        status = self.status(str(job["id"]))
        if status == "dead":
            return False
        if status not in (None, "done") and self.redis.xrange(self.stream, status, status, count=1):
            return False
        return self.enqueue(job, force=True) is not None

    def _hand_back(self, delivery: Delivery) -> None:
        # Park the entry with an idle time far past any visibility timeout: the next claim()
        # of any consumer reclaims it before reading new entries. JUSTID: no delivery counted.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.meta_key(delivery.job_id), "released", "1")
            pipe.xclaim(self.stream, self.group, RELEASED, 0, [delivery.entry_id], idle=_PARKED_IDLE_MS, justid=True)
            pipe.execute()

    def _requeue(self, delivery: Delivery) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.stream, {"job": json.dumps(delivery.job, sort_keys=True)})
            pipe.xack(self.stream, self.group, delivery.entry_id)
            pipe.xdel(self.stream, delivery.entry_id)
            new_id = pipe.execute()[0]
        self.redis.hset(self.index_key, delivery.job_id, new_id)

    def _dead_letter(self, entry_id: str, job: Any, reason: str, error: str | None = None) -> None:
        record = {
            "entry_id": entry_id,
            "job": job,
            "reason": reason,
            "error": error,
            "consumer": self.consumer,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        job_id = job.get("id") if isinstance(job, dict) else None
        log.error("dead-lettering entry %s (%s): %s", entry_id, reason, error or "")
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.dead_letter, json.dumps(record, default=str))
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            if job_id:
                pipe.hset(self.index_key, str(job_id), "dead")
                pipe.delete(self.meta_key(str(job_id)))
            pipe.execute()

    # -- consuming ----------------------------------------------------------------------------

    def claim(self, block_s: float = 5.0) -> Delivery | None:
        """The next job for this consumer: an abandoned one first, else a new one (waiting up to
        `block_s`). Malformed and poison entries are dead-lettered on the way."""
        try:
            return self._claim(block_s)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or its group vanished (a Redis that lost its data, a deleted key): create
            # them again; the producer's reconciliation re-enqueues what the ledger still needs.
            log.warning("queue %s: the stream or its consumer group was gone; created again", self.stream)
            self._group_ready = False
            return self._claim(block_s)

    def _claim(self, block_s: float) -> Delivery | None:
        self.ensure_group()
        deadline = time.monotonic() + block_s
        while True:
            delivery = self._reclaim_abandoned()
            if delivery is not None:
                return delivery
            remaining = deadline - time.monotonic()
            block_ms = int(min(max(remaining, 0), self.visibility_timeout_s / 2) * 1000)
            entries = self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=1, block=block_ms or None
            )
            if entries:
                entry_id, fields = entries[0][1][0]
                delivery = self._delivery(entry_id, fields, reclaimed=False)
                if delivery is not None:
                    return delivery
                continue
            if time.monotonic() >= deadline:
                return None

    def _reclaim_abandoned(self) -> Delivery | None:
        """The first abandoned entry of the whole pending list, claimed; None if there is none.
        XAUTOCLAIM examines a bounded number of pending entries per call (ten per COUNT), so the
        scan follows its cursor to the end: an abandoned entry behind many live ones is found."""
        min_idle_ms = int(self.visibility_timeout_s * 1000)
        cursor = "0-0"
        while True:
            cursor, claimed, _deleted = self.redis.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_ms, start_id=cursor, count=1
            )
            if not claimed:
                if cursor in ("0-0", b"0-0"):
                    return None
                continue
            entry_id, fields = claimed[0]
            if fields is None:  # deleted while pending
                self.redis.xack(self.stream, self.group, entry_id)
                continue
            delivery = self._delivery(entry_id, fields, reclaimed=True)
            if delivery is not None:
                return delivery

    def _delivery(self, entry_id: str, fields: dict[str, str], reclaimed: bool) -> Delivery | None:
        raw = fields.get("job")
        try:
            job = json.loads(raw) if raw is not None else None
        except (TypeError, ValueError) as exc:
            self._dead_letter(entry_id, raw, "malformed payload: not JSON", str(exc))
            return None
        if not isinstance(job, dict) or not job.get("id") or not job.get("type"):
            self._dead_letter(
                entry_id,
                job if job is not None else fields,
                "malformed payload: need an object with 'id' and 'type'",
            )
            return None
        meta_key = self.meta_key(str(job["id"]))
        if reclaimed and self.redis.hget(meta_key, "released") == "1":
            self.redis.hdel(meta_key, "released")  # handed back by a drain: not a crash
            reclaimed = False
        elif reclaimed:
            meta = self.redis.hgetall(meta_key)
            advanced = meta.get("progress", "0") != meta.get("claimed_progress", "0")
            strikes = 0 if advanced else int(meta.get("strikes", "0")) + 1
            if strikes >= self.max_strikes:
                self._dead_letter(entry_id, job, f"its holder died {strikes} times without progress (poison job?)")
                return None
            self.redis.hset(meta_key, mapping={"strikes": strikes})
            log.warning(
                "job %s: reclaimed entry %s from a consumer that stopped (strikes %d)",
                job["id"],
                entry_id,
                strikes,
            )
        self.redis.hset(meta_key, "claimed_progress", self.redis.hget(meta_key, "progress") or "0")
        return Delivery(self, entry_id, job, reclaimed=reclaimed)

    # -- inspection ---------------------------------------------------------------------------

    def dead_letters(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(self.dead_letter, 0, -1)]

    def status(self, job_id: str) -> str | None:
        """The index entry for a job: its stream entry id while queued, "done", "dead", or None."""
        return self.redis.hget(self.index_key, job_id)

    def depth(self) -> dict[str, int]:
        """Entries in the stream and how many are held by consumers right now."""
        self.ensure_group()
        pending = self.redis.xpending(self.stream, self.group)
        return {"entries": self.redis.xlen(self.stream), "pending": int(pending["pending"])}
