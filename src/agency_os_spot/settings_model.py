"""The model of every `AGENCY_OS_*` setting (pydantic-settings), read through
`agency_os_spot.settings.current()`; docs/settings.md lists them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every `AGENCY_OS_*` setting of the library, read from the environment and validated at
    once (`current()`): the node's configuration (the prefect_worker role's environment file) or
    the shell. The table in docs/settings.md lists them."""

    model_config = SettingsConfigDict(env_prefix="AGENCY_OS_", extra="ignore")

    database_url: str | None = Field(None, description="the database flow runs write to (no default in a flow run)")
    redis_url: str | None = Field(None, description="the bulk queue's Redis")
    queue_visibility_s: float = Field(60, gt=0, description="seconds without a heartbeat before a job is reclaimed")
    queue_max_strikes: int = Field(5, ge=1, description="holders of a job that may die without progress")
    transient_retry_s: float = Field(180, ge=0, description="how long a job retries a transient error in place")
    termination_grace_s: float = Field(15, ge=0, description="how long flow code may take to its next checkpoint")
    pg_lock_timeout_s: float = Field(
        10, ge=1, description="PostgreSQL lock wait before a presumed-dead holder's sessions end"
    )
    pg_idle_in_transaction_s: float = Field(
        60, ge=1, description="PostgreSQL ends a session idle in a transaction this long"
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "agency-os-cache", description="downloaded sources"
    )
    parsers: int | None = Field(None, ge=1, description="parser processes per file (default: by file size)")
