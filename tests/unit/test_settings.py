"""A flow run's database and Redis settings: refused before any work when missing or unsafe."""

from __future__ import annotations

import pytest

from agency_os_spot import settings
from agency_os_spot.settings_model import Settings
from tests.support import ROOT


@pytest.fixture
def flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "in_flow_run", lambda: True)
    monkeypatch.setattr(settings, "_no_more_retries", lambda: None)


def test_outside_a_flow_run_a_relative_sqlite_path_is_the_caller_s_choice(monkeypatch):
    monkeypatch.delenv(settings.DATABASE_ENV, raising=False)
    assert settings.database_url("sqlite:///leads.db") == "sqlite:///leads.db"
    with pytest.raises(settings.SettingError, match="AGENCY_OS_DATABASE_URL is not set"):
        settings.database_url(None)


@pytest.mark.parametrize("url", ["sqlite:///leads.db", "sqlite://", "sqlite:///:memory:", "sqlite+pysqlite:///x.db"])
def test_inside_a_flow_run_a_relative_or_memory_sqlite_is_refused(flow_run, monkeypatch, url):
    monkeypatch.setenv(settings.DATABASE_ENV, url)
    with pytest.raises(settings.SettingError, match="relative or in-memory SQLite"):
        settings.resolve(None, None)


def test_inside_a_flow_run_the_node_setting_is_used_and_a_password_parameter_refused(flow_run, monkeypatch):
    monkeypatch.setenv(settings.DATABASE_ENV, "postgresql://app:s3cret@db/leads")
    monkeypatch.setenv(settings.REDIS_ENV, "redis://:s3cret@redis:6379/0")
    assert settings.resolve(None, None) == ("postgresql://app:s3cret@db/leads", "redis://:s3cret@redis:6379/0")
    assert settings.resolve("postgresql://app@db/other", None)[0] == "postgresql://app@db/other"
    with pytest.raises(settings.SettingError, match="parameter database_url carries a password"):
        settings.resolve("postgresql://app:s3cret@db/leads", None)
    with pytest.raises(settings.SettingError, match="parameter redis_url carries a password"):
        settings.resolve(None, "redis://:s3cret@redis:6379/0")


def test_a_consumer_needs_redis_and_scratch_never_touches_production(flow_run, monkeypatch):
    monkeypatch.setenv(settings.DATABASE_ENV, "postgresql://app@db/leads")
    monkeypatch.setenv(settings.REDIS_ENV, "")
    with pytest.raises(settings.SettingError, match="AGENCY_OS_REDIS_URL is not set"):
        settings.resolve(None, None, redis_required=True)
    monkeypatch.setenv(settings.REDIS_ENV, "redis://127.0.0.1:6379/0")
    database, queue = settings.resolve(None, None, scratch=True)
    assert queue is None and database.startswith("sqlite:////") and database.endswith("/scratch.db")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/d", True),
        ("postgresql://u@h/d", False),
        ("redis://:p@h:6379/0", True),
        ("redis://h:6379/0", False),
        ("sqlite:////tmp/x.db", False),
    ],
)
def test_has_password(url, expected):
    assert settings.has_password(url) is expected


def test_every_setting_is_in_the_docs_table_with_its_default():

    table = (ROOT / "docs" / "settings.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[2].strip()
        for line in table.splitlines()
        if "| `AGENCY_OS_" in line
    }
    fields = Settings.model_fields
    assert set(rows) == {f"AGENCY_OS_{name.upper()}" for name in fields}
    for name, field in fields.items():
        if field.default not in (None, ...) and not field.default_factory:
            assert rows[f"AGENCY_OS_{name.upper()}"] == f"{field.default:g}", name


def test_a_bad_setting_is_refused_at_start_naming_the_variable(monkeypatch):
    monkeypatch.setenv("AGENCY_OS_QUEUE_VISIBILITY_S", "0")
    monkeypatch.setenv("AGENCY_OS_TRANSIENT_RETRY_S", "soon")
    with pytest.raises(settings.SettingError) as refused:
        settings.current()
    assert "AGENCY_OS_QUEUE_VISIBILITY_S: Input should be greater than 0" in str(refused.value)
    assert "AGENCY_OS_TRANSIENT_RETRY_S: Input should be a valid number" in str(refused.value)
