"""Where a bulk flow run writes and which queue it uses: the node's configuration, checked first.

A flow run under a Prefect process worker runs in a temporary working directory that is deleted
when it ends. A database URL that silently defaults to a relative SQLite file would put a whole
ingestion there and lose it with a Completed state; a URL with a password passed as a flow-run
parameter is stored in Prefect's database and shown in the UI and API. So, inside a flow run:

* the database and Redis come from the node's environment (`AGENCY_OS_DATABASE_URL`,
  `AGENCY_OS_REDIS_URL`, set by the prefect_worker role on local, AWS and GCP nodes alike), or
  from a parameter that carries no password;
* a missing database setting, a relative (or in-memory) SQLite path, or a parameter that carries
  a password stop the run before any work, with a message naming the setting;
* `scratch=True` (the cutover canary) uses a fresh SQLite file under the system's temporary
  directory and no Redis: it exercises the whole code path and can never take, write or ack a
  production job.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agency_os_spot.settings_model import Settings

DATABASE_ENV = "AGENCY_OS_DATABASE_URL"
REDIS_ENV = "AGENCY_OS_REDIS_URL"


class SettingError(RuntimeError):
    """A flow run's configuration is missing or unsafe; nothing was done. Retrying cannot help."""


def in_flow_run() -> bool:
    try:
        from prefect.runtime import flow_run  # noqa: PLC0415  (Prefect is heavy; CLI paths skip it)
    except ImportError:  # pragma: no cover - Prefect is a dependency
        return False
    return bool(flow_run.get_id())


def has_password(url: str) -> bool:
    """True when `url` carries a password (scheme://user:password@host/...)."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    try:
        return bool(make_url(url).password)
    except Exception:  # not an SQLAlchemy URL: look for user:password@
        netloc = url.split("://", 1)[-1].split("/", 1)[0]
        return "@" in netloc and ":" in netloc.rsplit("@", 1)[0]


def _check_sqlite(url: str) -> None:
    if not url.startswith("sqlite"):
        return
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path in ("", ":memory:") or not Path(path).is_absolute():
        raise SettingError(
            f"database URL {url!r} is a relative or in-memory SQLite path: inside a flow run it would be created "
            "in the run's temporary working directory and deleted with it. Set "
            f"{DATABASE_ENV} on the node to PostgreSQL or to an absolute sqlite:////path. Nothing was done."
        )


def _refuse_password(name: str, env: str, url: str) -> None:
    if has_password(url):
        raise SettingError(
            f"parameter {name} carries a password: flow-run parameters are stored in Prefect's database and "
            f"shown in its UI and API. Leave {name} empty and set {env} in the node's configuration "
            "(the prefect_worker role's environment). Nothing was done."
        )


def database_url(explicit: str | None = None, *, scratch: bool = False) -> str:
    """The database this flow run writes to (see the module docstring)."""
    if scratch:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='agency-os-scratch-')) / 'scratch.db'}"
    flow_run = in_flow_run()
    if explicit and flow_run:
        _refuse_password("database_url", DATABASE_ENV, explicit)
    url = explicit or current().database_url or ""
    if not url:
        raise SettingError(
            f"{DATABASE_ENV} is not set on this node and no database_url was given: the flow has nowhere to "
            "keep its data. Set it in the node's configuration (inventories/<provider>: agency_os_database_url, "
            "passed to the worker by the prefect_worker role). Nothing was done."
        )
    if flow_run:
        _check_sqlite(url)
    return url


def redis_url(explicit: str | None = None, *, scratch: bool = False) -> str | None:
    """The queue's Redis for this flow run, or None (then the run works alone, without a queue)."""
    if scratch:
        return None
    if explicit and in_flow_run():
        _refuse_password("redis_url", REDIS_ENV, explicit)
    return explicit or current().redis_url or None


def _no_more_retries() -> None:
    """Make the current flow run's failure final: its retries (from the catalog) cannot help when
    the node's configuration is wrong, and would only delay the message by retry_delay each time."""
    from prefect import get_client  # noqa: PLC0415
    from prefect.runtime import flow_run  # noqa: PLC0415

    run_id = flow_run.get_id()
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        policy = run.empirical_policy.model_copy(update={"retries": 0, "retry_delay": 0})
        client.update_flow_run(run_id, empirical_policy=policy)


def resolve(
    database: str | None, redis: str | None, *, scratch: bool = False, redis_required: bool = False
) -> tuple[str, str | None]:
    """(database URL, Redis URL or None) for this run; a SettingError, final (no retry), otherwise."""
    try:
        db = database_url(database, scratch=scratch)
        queue = redis_url(redis, scratch=scratch)
        if redis_required and not queue:
            raise SettingError(
                f"{REDIS_ENV} is not set on this node and no redis_url was given: this flow consumes the bulk "
                "queue. Set it in the node's configuration (agency_os_redis_url). Nothing was done."
            )
    except SettingError:
        if in_flow_run():
            _no_more_retries()
        raise
    return db, queue


def current() -> Settings:
    """Every `AGENCY_OS_*` setting as the environment gives it now (`settings_model.Settings`);
    SettingError naming each bad variable. The model (pydantic) is imported on the first read, not
    with this module: the ABN parser processes import the runtime and must start fast."""
    from pydantic import ValidationError  # noqa: PLC0415

    from agency_os_spot.settings_model import Settings  # noqa: PLC0415

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"AGENCY_OS_{str(error['loc'][0]).upper()}: {error['msg']} (got {error.get('input')!r})"
            for error in exc.errors()
        )
        raise SettingError(f"invalid settings: {problems}") from None
