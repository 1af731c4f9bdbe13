#!/usr/bin/env python3
"""Start/stop throwaway services on this host's loopback for molecule scenarios and drills.

    python scripts/host_services.py start --state DIR [--prefect] [--postgres] [--redis]
    python scripts/host_services.py stop --state DIR

`start` writes DIR/services.json with the URLs (prefect_api_url, postgres_url, redis_url) and
the PIDs; `stop` ends everything it started. Services come from the Debian packages and the
.venv that `make setup` installs. PostgreSQL runs as the `postgres` user when started as root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.services import free_port, start_postgres, stop_postgres, wait_for_port  # noqa: E402


def start_leads_postgres() -> dict:
    admin_url, root = start_postgres()
    subprocess.run(["psql", admin_url, "-c", "CREATE DATABASE leads"], check=True, capture_output=True)
    return {"postgres_url": admin_url.rsplit("/", 1)[0] + "/leads", "postgres_root": str(root)}


def start_redis(state: Path) -> dict:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    pidfile = state / "redis.pid"
    subprocess.run(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(state / "redis.log")],
        check=True,
    )  # fmt: skip
    wait_for_port(port)
    return {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_pidfile": str(pidfile)}


def start_prefect(state: Path) -> dict:
    port = free_port()
    home = state / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    venv_bin = Path(sys.executable).parent
    with (state / "prefect-server.log").open("w") as log:
        proc = subprocess.Popen(
            [str(venv_bin / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.load(urllib.request.urlopen(f"{api}/health", timeout=2)) is True:  # noqa: S310
                return {"prefect_api_url": api, "prefect_pid": proc.pid}
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not start: {(state / 'prefect-server.log').read_text()[-2000:]}")


def stop(state: Path) -> None:
    info_path = state / "services.json"
    if not info_path.exists():
        return
    info = json.loads(info_path.read_text())
    if "prefect_pid" in info:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info["prefect_pid"], signal.SIGTERM)
    if "redis_pidfile" in info and Path(info["redis_pidfile"]).exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(Path(info["redis_pidfile"]).read_text().strip()), signal.SIGTERM)
    if "postgres_root" in info:
        stop_postgres(Path(info["postgres_root"]), mode="fast")
    info_path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--prefect", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    state = args.state.resolve()
    if args.action == "stop":
        stop(state)
        return 0
    stop(state)  # a previous run's leftovers
    state.mkdir(parents=True, exist_ok=True)
    info: dict = {}
    try:
        if args.postgres:
            info.update(start_leads_postgres())
        if args.redis:
            info.update(start_redis(state))
        if args.prefect:
            info.update(start_prefect(state))
    finally:
        (state / "services.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
