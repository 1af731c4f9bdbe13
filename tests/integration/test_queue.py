"""The reliable queue on a real Redis server, and the bulk_worker consumer loop around it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

import agency_os_spot.abn.handler  # noqa: F401  (registers the abn_file job type)
from agency_os_spot.abn.cli import open_database
from agency_os_spot.abn.fixture import generate
from agency_os_spot.abn.sources import plan
from agency_os_spot.runtime.consumer import (
    JobsStuck,
    attempted_key,
    make_context,
    make_queue,
    max_strikes_from_env,
    work_until_settled,
)
from agency_os_spot.runtime.queue import RELEASED, ReliableQueue
from agency_os_spot.settings import SettingError
from tests.support import ROOT
from tests.support.services import consumer_process, ledger_progress


def worker(redis_url: str, database_url: str, *extra: str) -> subprocess.Popen:
    return consumer_process(redis_url, database_url, *extra)


def test_enqueue_is_idempotent_and_ack_removes_the_job(redis_url):
    queue = ReliableQueue(redis_url, consumer="c1")
    assert queue.enqueue({"id": "j1", "type": "abn_file"}) is not None
    assert queue.enqueue({"id": "j1", "type": "abn_file"}) is None  # already queued
    delivery = queue.claim(block_s=1)
    assert delivery.job == {"id": "j1", "type": "abn_file"} and not delivery.reclaimed
    assert queue.depth() == {"entries": 1, "pending": 1}
    delivery.ack()
    assert queue.depth() == {"entries": 0, "pending": 0}
    assert queue.status("j1") == "done"
    assert queue.enqueue({"id": "j1", "type": "abn_file"}) is None  # done: not again
    assert queue.enqueue({"id": "j1", "type": "abn_file"}, force=True) is not None
    with pytest.raises(ValueError, match="non-empty 'id' and 'type'"):
        queue.enqueue({"type": "abn_file"})


def test_malformed_payloads_go_to_the_dead_letter_list_and_the_consumer_goes_on(redis_url):
    queue = ReliableQueue(redis_url, consumer="c1")
    queue.ensure_group()
    queue.redis.xadd(queue.stream, {"job": "{not json"})
    queue.redis.xadd(queue.stream, {"job": json.dumps({"type": "abn_file"})})
    queue.redis.xadd(queue.stream, {"something": "else"})
    queue.enqueue({"id": "good", "type": "abn_file"})
    delivery = queue.claim(block_s=1)
    assert delivery.job_id == "good"
    dead = queue.dead_letters()
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == [
        "malformed payload: need an object with 'id' and 'type'",
        "malformed payload: need an object with 'id' and 'type'",
        "malformed payload: not JSON",
    ]
    assert any(d["job"] == "{not json" for d in dead)
    assert queue.depth()["entries"] == 1  # only the good job is left


def test_a_job_held_by_a_dead_consumer_is_delivered_again(redis_url):
    dead_consumer = ReliableQueue(redis_url, consumer="dead", visibility_timeout_s=0.3)
    dead_consumer.enqueue({"id": "j", "type": "abn_file"})
    taken = dead_consumer.claim(block_s=1)  # no heartbeat: the holder "dies" here
    assert taken is not None
    survivor = ReliableQueue(redis_url, consumer="alive", visibility_timeout_s=0.3)
    assert survivor.claim(block_s=0.1) is None  # not yet idle long enough
    time.sleep(0.4)
    again = survivor.claim(block_s=1)
    assert again is not None and again.reclaimed and again.job_id == "j"
    assert not taken.heartbeat()  # the dead one finds out it lost the job
    again.ack()


def test_release_puts_the_job_back_first_without_counting_an_attempt(redis_url):
    queue = ReliableQueue(redis_url, consumer="c1", max_attempts=1, max_strikes=1)
    queue.enqueue({"id": "j", "type": "abn_file"})
    for _ in range(5):  # drained five times before any progress: never a strike, never dead-lettered
        delivery = queue.claim(block_s=1)
        assert delivery is not None and delivery.job_id == "j" and not delivery.reclaimed
        queue.enqueue({"id": f"new-{_}", "type": "abn_file"})  # jobs never started wait behind it
        delivery.release()
    assert queue.dead_letters() == []
    assert queue.claim(block_s=1).job_id == "j"
    other = ReliableQueue(redis_url, consumer="c2")
    assert other.claim(block_s=1).job_id == "new-0"


def test_failures_retry_then_dead_letter_with_the_error(redis_url):
    queue = ReliableQueue(redis_url, consumer="c1", max_attempts=3)
    queue.enqueue({"id": "j", "type": "abn_file"})
    outcomes = [queue.claim(block_s=1).fail(f"boom {n}") for n in range(3)]
    assert outcomes == [False, False, True]
    assert queue.claim(block_s=0.2) is None
    [dead] = queue.dead_letters()
    assert dead["reason"] == "failed 3 times" and dead["error"] == "boom 2" and dead["job"]["id"] == "j"
    assert queue.status("j") == "dead"


def test_a_holder_that_keeps_dying_without_progress_is_poison_but_progress_clears_strikes(redis_url):
    queue = ReliableQueue(redis_url, consumer="c", visibility_timeout_s=0.2, max_strikes=3)
    queue.enqueue({"id": "oom", "type": "abn_file"})
    queue.enqueue({"id": "slow", "type": "abn_file"})
    held = {d.job_id: d for d in (queue.claim(block_s=1), queue.claim(block_s=1))}
    for round_ in range(1, 4):
        time.sleep(0.25)
        held["slow"].progress(round_ * 100)  # this one advances before each death
        reclaimed = [queue.claim(block_s=0.1) for _ in range(2)]
        held = {d.job_id: d for d in reclaimed if d is not None}
    assert "oom" not in held and "slow" in held
    [dead] = queue.dead_letters()
    assert dead["job"]["id"] == "oom" and "died 3 times without progress" in dead["reason"]


def queue_for(redis_url: str, database_url: str, **options) -> ReliableQueue:
    """The queue of the jobs that write to `database_url` (its destination's stream)."""
    return ReliableQueue(redis_url, destination=open_database(database_url).destination, **options)


@pytest.fixture
def one_file_job(tmp_path):
    manifest = generate(20_000, 8, tmp_path, files=1, bad_every=250)
    [job] = plan([str(tmp_path / manifest["sources"][0])])
    return job, manifest


def _wait_progress(database_url: str, proc: subprocess.Popen, minimum: int) -> None:
    deadline = time.monotonic() + 60
    while ledger_progress(database_url, over="max") < minimum:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


def _rows(database_url: str) -> tuple[int, int]:
    ledger = open_database(database_url)
    with ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT abn) FROM abn_entity").one()
    ledger.engine.dispose()
    return tuple(rows)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_worker_preempted_while_holding_a_job_its_effect_appears_once(redis_url, database_url, one_file_job, how):
    job, manifest = one_file_job
    queue = queue_for(redis_url, database_url)
    queue.enqueue(job.to_job())
    first = worker(
        redis_url, database_url, "--checkpoint-every", "200", "--visibility-timeout", "2", "--idle-timeout", "1"
    )
    _wait_progress(database_url, first, 1_000)
    first.send_signal(getattr(signal, how))
    first.communicate(timeout=60)
    assert first.returncode == (143 if how == "SIGTERM" else -signal.SIGKILL)
    if how == "SIGTERM":
        # handed back at once (parked for the next consumer), not waiting for a visibility timeout
        [parked] = queue.redis.xpending_range(queue.stream, queue.group, "-", "+", 10)
        assert parked["consumer"] == RELEASED

    second = worker(
        redis_url, database_url, "--checkpoint-every", "200", "--visibility-timeout", "2", "--idle-timeout", "3"
    )
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["done"] == 1 and stats["reclaimed"] == (1 if how == "SIGKILL" else 0)
    assert _rows(database_url) == (manifest["valid"], manifest["valid"])
    lease = open_database(database_url).get(job.id)
    assert (
        lease.complete and lease.result["inserted"] == manifest["valid"] and lease.result["rejected"] == manifest["bad"]
    )
    assert queue.depth() == {"entries": 0, "pending": 0} and queue.dead_letters() == []
    attempted = redis.Redis.from_url(redis_url).hget(attempted_key(queue.destination), job.id)
    redone = int(attempted) - manifest["records"]
    assert redone == 0 if how == "SIGTERM" else 0 <= redone <= 200


def test_poison_job_is_dead_lettered_and_the_worker_carries_on(redis_url, sqlite_url, one_file_job):
    queue = queue_for(redis_url, sqlite_url)
    queue.enqueue(one_file_job[0].to_job())
    queue.enqueue(
        {"id": "abn:missing", "type": "abn_file", "source": "/nonexistent/x.xml", "member": None, "name": "x.xml"}
    )
    queue.enqueue({"id": "mystery", "type": "translate_everything"})
    proc = worker(redis_url, sqlite_url, "--max-attempts", "2", "--idle-timeout", "2")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["done"] == 1 and stats["dead_lettered"] == 2
    dead = {d["job"]["id"]: d for d in queue.dead_letters()}
    assert dead["abn:missing"]["reason"] == "failed 2 times"
    assert "no such file" in dead["abn:missing"]["error"]
    assert dead["mystery"]["reason"].startswith("unknown job type 'translate_everything'")


def test_the_strike_limit_comes_from_the_environment_and_is_checked(monkeypatch) -> None:
    monkeypatch.delenv("AGENCY_OS_QUEUE_MAX_STRIKES", raising=False)
    assert max_strikes_from_env() == 5
    monkeypatch.setenv("AGENCY_OS_QUEUE_MAX_STRIKES", "12")
    assert max_strikes_from_env() == 12
    monkeypatch.setenv("AGENCY_OS_QUEUE_MAX_STRIKES", "0")
    with pytest.raises(SettingError, match="AGENCY_OS_QUEUE_MAX_STRIKES: Input should be greater than or equal to 1"):
        max_strikes_from_env()


def test_a_job_is_only_written_to_its_own_destination(redis_url, tmp_path):
    """Two databases, one Redis: each consumer takes only its own database's jobs, and a job that
    reached the wrong queue is refused before any write."""
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db"))
    sources = []
    for seed, name in ((1, "a"), (2, "b")):
        manifest = generate(2_000, seed, tmp_path / name, files=1)
        sources.append((plan([str(tmp_path / name / manifest["sources"][0])])[0], manifest))
    (job_a, manifest_a), (job_b, _) = sources
    queue_a, queue_b = queue_for(redis_url, first), queue_for(redis_url, second)
    assert queue_a.stream != queue_b.stream and queue_a.destination != queue_b.destination
    # nothing shared: index (dedupe), dead letters and job state are per destination
    assert len({queue_a.index_key, queue_b.index_key, queue_a.dead_letter, queue_b.dead_letter}) == 4
    assert all(key.startswith(queue_a.stream) for key in (queue_a.index_key, queue_a.dead_letter))
    queue_a.enqueue(job_a.to_job())
    queue_b.enqueue(job_b.to_job())
    with pytest.raises(ValueError, match="is for destination"):
        queue_a.enqueue({**job_b.to_job(), "id": "other", "destination": queue_b.destination})
    # a misrouted job (written to the stream by hand) is refused, not written
    queue_a.redis.xadd(queue_a.stream, {"job": json.dumps({**job_b.to_job(), "id": "stray", "destination": "db-x"})})

    proc = worker(redis_url, first, "--idle-timeout", "2")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["done"] == 1 and stats["dead_lettered"] == 1
    assert _rows(first) == (manifest_a["valid"], manifest_a["valid"])  # only its own job
    assert open_database(first).get(job_b.id) is None and open_database(first).get("stray") is None
    [stray] = queue_a.dead_letters()
    assert "is for destination 'db-x'" in stray["reason"]
    assert queue_b.depth()["entries"] == 1  # the other database's job is still waiting for its consumer


def test_jobs_redis_lost_are_enqueued_again_from_the_ledger(redis_url, sqlite_url, tmp_path):
    """The stream and its index deleted mid-run (a Redis that lost its data): the parent's wait
    re-enqueues from the ledger and every job completes, each record once."""
    manifest = generate(30_000, 5, tmp_path, files=3, bad_every=0)
    jobs = [job.to_job() for job in plan([str(tmp_path / name) for name in manifest["sources"]])]
    ctx = make_context(sqlite_url, redis_url, checkpoint_every=500)
    queue = make_queue(ctx, visibility_timeout_s=5)
    for job in jobs:
        queue.enqueue(job)

    def lose_everything() -> None:
        deadline = time.monotonic() + 60
        while ledger_progress(sqlite_url, over="max") < 1_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        queue.redis.delete(queue.stream, queue.index_key)

    thief = threading.Thread(target=lose_everything)
    thief.start()
    dead = work_until_settled(queue, ctx, jobs, deadline_s=180, reconcile_every_s=1)
    thief.join()
    assert dead == []
    assert all(ctx.ledger.get(job["id"]).complete for job in jobs)
    assert _rows(sqlite_url) == (manifest["valid"], manifest["valid"])


def test_the_wait_has_a_deadline_and_names_the_stuck_jobs(redis_url, sqlite_url):
    ctx = make_context(sqlite_url, redis_url, checkpoint_every=500)
    queue = make_queue(ctx, visibility_timeout_s=60)
    job = {"id": "abn:held", "type": "abn_file", "source": "/x.xml", "member": None, "name": "x.xml"}
    queue.enqueue(job)
    holder = ReliableQueue(redis_url, destination=queue.destination, consumer="frozen-node")
    held = holder.claim(block_s=1)
    with held, pytest.raises(JobsStuck, match=r"1 job\(s\) not complete after 2 s: abn:held \(never started; queue: "):
        work_until_settled(queue, ctx, [job], deadline_s=2, reconcile_every_s=1)


def test_dead_letters_are_listed_shown_and_replayed_from_their_checkpoint(redis_url, sqlite_url, tmp_path):
    """A job dead-lettered after progress comes back with `dead-letters replay` (command line and
    playbook) and resumes from its checkpoint."""
    manifest = generate(6_000, 9, tmp_path, files=2, bad_every=0)
    jobs = plan([str(tmp_path / name) for name in manifest["sources"]])
    queue = queue_for(redis_url, sqlite_url)
    for job in jobs:
        queue.enqueue(job.to_job())
        delivery = queue.claim(block_s=1)
        delivery.dead_letter("given up for the test")
    env = {"AGENCY_OS_DATABASE_URL": sqlite_url, "AGENCY_OS_REDIS_URL": redis_url}
    cli = [str(ROOT / ".venv/bin/agency-os-spot"), "dead-letters"]
    listed = subprocess.run([*cli, "list"], env={**os.environ, **env}, capture_output=True, text=True, check=True)
    entries = [line.split("\t")[0] for line in listed.stdout.splitlines()]
    assert len(entries) == 2 and "given up for the test" in listed.stdout
    shown = subprocess.run(
        [*cli, "show", entries[0]], check=False, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert json.loads(shown.stdout)["entry_id"] == entries[0]
    missing = subprocess.run(
        [*cli, "replay", "1-0"], check=False, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert missing.returncode == 1 and json.loads(missing.stdout)["not_found"] == ["1-0"]

    # the playbook, against this machine as "the node", with the node's environment file
    env_file = tmp_path / "worker.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    out = subprocess.run(
        ["ansible-playbook", "playbooks/replay_dead_letters.yml", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", "dead_letters_hosts=localhost", "-e", f"dead_letters_venv={ROOT / '.venv'}",
         "-e", f"dead_letters_env_file={env_file}", "-e", "replay=all"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert queue.dead_letters() == [] and queue.depth()["entries"] == 2
    proc = worker(redis_url, sqlite_url, "--idle-timeout", "2")
    stdout, err = proc.communicate(timeout=120)
    assert json.loads(stdout.strip().splitlines()[-1])["done"] == 2, err
    assert _rows(sqlite_url) == (manifest["valid"], manifest["valid"])


def test_an_abandoned_job_behind_many_live_ones_is_reclaimed(redis_url):
    """XAUTOCLAIM looks at ten pending entries per COUNT: the reclaimer follows its cursor over the
    whole pending list, so a job abandoned behind more than ten live ones is still found."""
    live = ReliableQueue(redis_url, consumer="live", visibility_timeout_s=0.5)
    for i in range(12):
        live.enqueue({"id": f"live-{i}", "type": "abn_file"})
    live.enqueue({"id": "lost", "type": "abn_file"})
    held = [live.claim(block_s=1) for _ in range(12)]
    dead = ReliableQueue(redis_url, consumer="dead", visibility_timeout_s=0.5)
    assert dead.claim(block_s=1).job_id == "lost"  # its holder dies here: no heartbeat
    time.sleep(0.7)
    assert all(d.heartbeat() for d in held)  # the twelve others are alive and well
    survivor = ReliableQueue(redis_url, consumer="survivor", visibility_timeout_s=0.5)
    again = survivor.claim(block_s=0.5)
    assert again is not None and again.job_id == "lost" and again.reclaimed


def test_workers_share_the_byte_ranges_of_one_large_file(redis_url, postgres_url, tmp_path):
    """One file split into eight jobs: two worker processes and the parent's own consumer take its
    ranges side by side; each record is stored once and every range is complete."""
    manifest = generate(40_000, 8, tmp_path, files=1, bad_every=0, layout="published")
    source = tmp_path / manifest["sources"][0]
    jobs = [job.to_job() for job in plan([str(source)], chunk_mib=(source.stat().st_size / 8 + 1) / (1 << 20))]
    assert len(jobs) == 8 and {job["name"] for job in jobs} == {source.name}
    ctx = make_context(postgres_url, redis_url, checkpoint_every=1_000)
    queue = make_queue(ctx, visibility_timeout_s=30)
    procs = [worker(redis_url, postgres_url, "--idle-timeout", "5", "--checkpoint-every", "1000") for _ in range(2)]
    queue.ensure_group()
    deadline = time.monotonic() + 60  # both workers waiting for a job (blocked in XREADGROUP) before there is any
    while time.monotonic() < deadline:
        if sum(client.get("cmd") == "xreadgroup" for client in queue.redis.client_list()) >= 2:
            break
        time.sleep(0.1)
    for job in jobs:
        queue.enqueue(job)
    dead = work_until_settled(queue, ctx, jobs, deadline_s=240, reconcile_every_s=1)
    done = [json.loads(proc.communicate(timeout=120)[0].strip().splitlines()[-1])["done"] for proc in procs]
    assert dead == []
    assert all(ctx.ledger.get(job["id"]).complete for job in jobs)
    by_parent = len(jobs) - sum(done)
    assert sum(n > 0 for n in [*done, by_parent]) >= 2, done  # the file's ranges went to several consumers
    assert _rows(postgres_url) == (manifest["valid"], manifest["valid"])
    results = [ctx.ledger.get(job["id"]).result for job in jobs]
    assert sum(r["records"] for r in results) == manifest["records"]
