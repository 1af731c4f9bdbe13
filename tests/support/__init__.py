"""What the tests share: real services (PostgreSQL, Redis, a Prefect server, a worker), the
recorded Prefect history, the fake GCP Compute API, and the repository root."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
