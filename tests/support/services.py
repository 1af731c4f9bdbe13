"""Real services for the test suite: PostgreSQL and Redis servers on 127.0.0.1, started per session.

They come from the Debian packages `make setup` installs (postgresql, redis-server). PostgreSQL
refuses to run as root, so as root the cluster is created and run as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: run 'make setup' (installs the postgresql package)")
    return Path(candidates[-1]).parent


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres() -> tuple[str, Path]:
    """Start a throwaway PostgreSQL cluster under /tmp (the postgres user must reach it: root's
    home is not traversable). Returns the admin URL (database `postgres`) and its directory."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="agency-os-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
    (root / "options").write_text(options)
    _pg_start(root)
    wait_for_port(port)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", root


def _pg_start(root: Path) -> None:
    options = (root / "options").read_text()
    subprocess.run(
        _as_postgres(
            [str(_pg_bin() / "pg_ctl"), "-D", str(root / "data"), "-o", options, "-l", str(root / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )


def restart_postgres(root: Path, down_s: float, mode: str = "immediate") -> None:
    """Stop the cluster (`immediate`: like a crash, connections cut), keep it down `down_s`
    seconds, start it again on the same port with the same data."""
    subprocess.run(
        _as_postgres([str(_pg_bin() / "pg_ctl"), "-D", str(root / "data"), "-m", mode, "-w", "stop"]),
        check=True,
        capture_output=True,
    )
    time.sleep(down_s)
    _pg_start(root)


def stop_postgres(root: Path, mode: str = "immediate") -> None:
    subprocess.run(
        _as_postgres([str(_pg_bin() / "pg_ctl"), "-D", str(root / "data"), "-m", mode, "stop"]),
        check=False,
        capture_output=True,
    )
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for a test session; yields the admin URL."""
    url, root = start_postgres()
    try:
        yield url
    finally:
        stop_postgres(root)


_PROGRESS = {
    "sum": "SELECT COALESCE(SUM(progress), 0) FROM job_ledger",
    "max": "SELECT COALESCE(MAX(progress), 0) FROM job_ledger",
}


def ledger_progress(database_url: str, over: str = "sum") -> int:
    """Records committed so far according to the job ledger, summed over its jobs or the
    furthest one (0 before the ledger exists)."""
    import sqlalchemy as sa  # noqa: PLC0415

    from agency_os_spot.runtime.ledger import normalize_url  # noqa: PLC0415

    engine = sa.create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(_PROGRESS[over]).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


@contextlib.contextmanager
def redis_server(password: str = "") -> Iterator[str]:
    """A throwaway Redis server without persistence (with `password`: requirepass); yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server not found: run 'make setup' (installs the redis-server package)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + (["--requirepass", password] if password else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://{':' + password + '@' if password else ''}127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def consumer_process(
    redis_url: str, database_url: str, *options: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`agency-os-spot worker` (the queue's consumer) as a process of its own, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "agency_os_spot.worker", "--redis-url", redis_url, "--database-url", database_url,
         *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port in a thread; yields the server's base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
