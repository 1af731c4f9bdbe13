"""The failover drill's pure parts: the fault plan and its pacing, the recovery measurement, the
report's verdicts, and the command line taking its defaults from Config."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from agency_os_spot.catalog import load_catalog
from tools.drill import report
from tools.drill.config import FAULT_SPAN, MIN_RECORDS, RECORDS_PER_FAULT, Config, placement
from tools.drill.drill import parser
from tools.drill.faults import due, plan
from tools.drill.observer import Counts, Preemption
from tools.drill.timeline import Timeline

URLS = {"api_url": "http://api", "database_url": "postgresql://db/drill", "redis_url": "redis://r"}


def config(**changes) -> Config:
    return Config(**URLS, **{"seed": 7, **changes})


# -- the plan ----------------------------------------------------------------------------------------


def test_the_plan_holds_every_fault_asked_for():
    faults = plan(config(preemptions=6, min_each=2, freezes=1, postgres_restarts=2, redis_restarts=3), random.Random(1))
    kinds = Counter(faults)
    assert len(faults) == 6 + 1 + 2 + 3
    assert kinds["notice"] + kinds["hard"] == 6 and kinds["notice"] >= 2 and kinds["hard"] >= 2
    assert kinds["freeze"] == 1 and kinds["postgres_restart"] == 2 and kinds["redis_restart"] == 3


def test_min_each_outnumbering_the_preemptions_still_gives_both_kinds():
    faults = plan(config(preemptions=1, min_each=2, freezes=0, postgres_restarts=0, redis_restarts=0), random.Random(1))
    assert Counter(faults) == {"notice": 2, "hard": 2}


@pytest.mark.parametrize(("ratio", "kind"), [(1.0, "notice"), (0.0, "hard")])
def test_the_notice_ratio_decides_the_preemptions_beyond_min_each(ratio, kind):
    faults = plan(
        config(preemptions=10, notice_ratio=ratio, freezes=0, postgres_restarts=0, redis_restarts=0), random.Random(3)
    )
    assert faults == [kind] * 10


def test_a_seed_replays_the_same_plan_and_another_seed_shuffles_it():
    c = config()
    first = plan(c, random.Random(c.seed))
    assert plan(c, random.Random(c.seed)) == first
    assert any(plan(c, random.Random(seed)) != first for seed in range(100, 105))


def test_faults_are_paced_over_the_first_fault_span_of_the_records():
    planned, records = 8, 1_000_000
    thresholds = [due(k, planned, records) for k in range(planned)]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == planned
    assert thresholds[0] == pytest.approx(records * FAULT_SPAN / planned)
    assert thresholds[-1] == pytest.approx(records * FAULT_SPAN)
    assert thresholds[-1] < records


def test_the_extract_is_sized_to_the_faults_unless_given():
    assert config().sized_records(26) == RECORDS_PER_FAULT * 26
    assert config().sized_records(1) == MIN_RECORDS
    assert config(records=1234).sized_records(26) == 1234


def test_a_seed_not_given_is_drawn_and_kept():
    drawn = Config(**URLS)
    assert isinstance(drawn.seed, int) and drawn.seed > 0


# -- recovery ------------------------------------------------------------------------------------------


def row(owner: str, progress: int, status: str = "running") -> dict:
    return {"owner": owner, "progress": progress, "status": status}


def test_a_held_job_recovers_when_it_progresses_under_another_owner_or_completes():
    event = Preemption(node="n1", mode="hard", at=100.0, held={"a": 10, "b": 5})
    event.note({"a": row("n1:123", 20), "b": row("n2:9", 5)}, 101.0)  # a: same node; b: no progress yet
    assert event.recovered_at == {} and event.recovery_s == float("inf")
    event.note({"a": row("n2:9", 11), "b": row("n2:9", 5)}, 104.0)
    event.note({"a": row("n2:9", 30), "b": row("", 5, status="complete")}, 109.0)
    assert event.recovered_at == {"a": 104.0, "b": 109.0}
    assert event.recovery_s == pytest.approx(9.0)


def test_a_node_holding_no_job_has_no_recovery_time():
    assert Preemption(node="n1", mode="notice", at=0.0, held={}).recovery_s is None


# -- the report ------------------------------------------------------------------------------------------

MANIFEST = {"records": 1000, "valid": 990, "bad": 10, "files": [{"name": "f1"}, {"name": "f2"}], "jobs": 2}


def counts(**changes) -> Counts:
    clean = {
        "rows": 990,
        "distinct": 990,
        "rejects": 10,
        "results": [{"records": 500, "inserted": 495}, {"records": 500, "inserted": 495}],
        "attempted": 1200,
        "dead_letters": 0,
        "run_states": ["COMPLETED"] * 3,
    }
    return Counts(**{**clean, **changes})


def result(c: Counts, preemptions=None, service_faults=(), planned=None) -> dict:
    preemptions = preemptions if preemptions is not None else [Preemption("n1", "hard", 0.0, {"j": 1}, {"j": 3.0})]
    planned = planned if planned is not None else len(preemptions) + len(service_faults)
    return report.build(
        MANIFEST, c, preemptions, list(service_faults), planned=planned, checkpoint_every=500, seed=7, seconds=12.34
    )


def test_a_clean_drill_passes():
    r = result(counts(), service_faults=["redis_restart"])
    assert r["work_ok"] and r["faults_missing"] == 0 and r["passed"]
    assert report.exit_status(r) == 0
    assert (r["duplicates"], r["jobs_lost"], r["records_redone"]) == (0, 0, 200)
    assert (r["preemptions_hard"], r["redis_restarts"], r["max_recovery_s"]) == (1, 1, 3.0)


@pytest.mark.parametrize(
    ("changes", "key", "value"),
    [
        ({"results": [{"records": 500, "inserted": 495}]}, "jobs_lost", 1),
        ({"dead_letters": 1}, "dead_letters", 1),
        ({"rows": 991, "distinct": 990}, "duplicates", 1),
        ({"results": [{"records": 500, "inserted": 500}, {"records": 500, "inserted": 495}]}, "duplicates", 5),
        ({"rejects": 9}, "rejects", 9),
        ({"rows": 989, "distinct": 989}, "records_db", 989),
        ({"run_states": ["COMPLETED", "CRASHED", "COMPLETED"]}, "runs_not_completed", 1),
    ],
)
def test_work_lost_or_done_twice_fails_the_drill(changes, key, value):
    r = result(counts(**changes))
    assert r[key] == value
    assert not r["work_ok"] and not r["passed"]
    assert report.exit_status(r) != 0


def test_a_planned_fault_not_made_fails_the_drill_though_the_work_is_whole():
    r = result(counts(), planned=3)
    assert r["work_ok"] and r["faults_missing"] == 2 and not r["passed"]
    assert report.exit_status(r) != 0


def test_the_result_keeps_the_keys_the_playbook_and_molecule_read():
    assert {
        "passed", "work_ok", "faults_missing", "faults_planned", "preemptions_notice", "preemptions_hard",
        "freezes", "postgres_restarts", "redis_restarts", "dead_letters", "records_db", "records_valid",
        "duplicates", "rejects", "rejects_expected", "jobs_lost", "runs_not_completed", "seed",
    } <= result(counts()).keys()  # fmt: skip


# -- the command line and the catalog -------------------------------------------------------------------


def test_options_not_given_take_the_config_defaults():
    args = vars(parser().parse_args(["--api-url", "http://api", "--database-url", "d", "--redis-url", "r"]))
    assert args == {"api_url": "http://api", "database_url": "d", "redis_url": "r"}
    given = vars(parser().parse_args(["--api-url", "a", "--database-url", "d", "--redis-url", "r", "--timeout", "9"]))
    assert Config(**given).timeout_s == 9.0


def test_the_drill_runs_where_the_catalog_places_its_flow():
    bulk = load_catalog().tiers["bulk"]
    spec = placement()
    assert (spec.work_pool, spec.work_queue) == (bulk.work_pool, bulk.work_queue)


def test_the_timeline_joins_samples_into_spans_and_draws_a_png(tmp_path):
    tl = Timeline(started=100.0)
    for t in range(100, 160, 2):  # node a alive throughout; b gone between 120 and 140 (replaced)
        tl.sample(committed=(t - 100) * 1000, nodes=["a"] + (["b"] if not 120 < t < 140 else []), now=float(t))
    assert tl.spans("a") == [(0.0, 58.0)]
    assert tl.spans("b") == [(0.0, 20.0), (40.0, 58.0)]
    hard = Preemption("b", "hard", 120.5, {"j": 10}, {"j": 131.0})
    notice = Preemption("a", "notice", 150.0, {}, {})
    path = tl.render(tmp_path / "drill.png", [hard, notice], [(110.0, "redis_restart")], "seed 7")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
