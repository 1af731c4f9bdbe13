"""Command line of the fake Compute API (from the repository root: python -m tests.support.gcp_compute_fake).

serve     run in the foreground until SIGTERM/SIGINT
start     run `serve` in the background; pid, log and connection details go to --state-dir
          (fake-compute.pid, fake-compute.log, fake-compute.json); a healthy running server is
          left alone. Prints JSON with "changed".
stop      stop the server started with `start` (prints JSON with "changed")
make-key  write a service account key file whose token_uri points at the fake
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .keys import make_service_account_key
from .server import FakeCompute, FakeComputeServer, public_key_of

PID_FILE = "fake-compute.pid"
LOG_FILE = "fake-compute.log"
INFO_FILE = "fake-compute.json"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_fake/health", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def _our_pid(pid_file: Path) -> int | None:
    """The pid in pid_file when that process is alive and is this fake server."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"gcp_compute_fake" in cmdline else None


def serve(args: argparse.Namespace) -> int:
    keys = dict(public_key_of(Path(p)) for p in args.trust_key)
    server = FakeComputeServer(args.host, args.port, FakeCompute(trusted_keys=keys, op_delay=args.op_delay), True)
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    print(f"fake Compute API on {server.api_base_url}, token endpoint {server.token_uri}", flush=True)
    try:
        server.start_background()
        while server._thread and server._thread.is_alive():
            server._thread.join(timeout=0.5)
    except KeyboardInterrupt:
        server.shutdown()
    server.server_close()
    return 0


def start(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    url = f"http://{args.host}:{args.port}"
    info = {
        "url": url,
        "api_base_url": f"{url}/compute/v1",
        "token_uri": f"{url}/token",
        "port": args.port,
    }
    pid = _our_pid(state / PID_FILE)
    if pid and _healthy(url):
        print(json.dumps({"changed": False, "pid": pid, **info}))
        return 0
    if _healthy(url):
        print(json.dumps({"changed": False, "failed": True, "msg": f"{url} is served by another process"}))
        return 1
    command = [
        sys.executable,
        "-m",
        "tests.support.gcp_compute_fake",
        "serve",
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    command += ["--op-delay", str(args.op_delay)]
    for key in args.trust_key:
        command += ["--trust-key", str(Path(key).resolve())]
    with (state / LOG_FILE).open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=Path(__file__).resolve().parents[3],  # the repository root: python -m tests.support...
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state / PID_FILE).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 20
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            print(json.dumps({"changed": True, "failed": True, "msg": f"fake did not start; see {state / LOG_FILE}"}))
            return 1
        time.sleep(0.1)
    info["pid"] = process.pid
    (state / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({"changed": True, **info}))
    return 0


def stop(args: argparse.Namespace) -> int:
    pid_file = Path(args.state_dir) / PID_FILE
    pid = _our_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        print(json.dumps({"changed": False}))
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print(json.dumps({"changed": True, "pid": pid}))
    return 0


def make_key(args: argparse.Namespace) -> int:
    info = make_service_account_key(Path(args.out), args.token_uri, args.project_id)
    print(json.dumps({"changed": True, "path": args.out, "client_email": info["client_email"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.gcp_compute_fake", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "start"):
        sub = commands.add_parser(name)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8089)
        sub.add_argument("--trust-key", action="append", default=[], help="service account key file to trust")
        sub.add_argument("--op-delay", type=float, default=0.5, help="seconds before an unpolled op is DONE")
        if name == "start":
            sub.add_argument("--state-dir", required=True)
    sub = commands.add_parser("stop")
    sub.add_argument("--state-dir", required=True)
    sub = commands.add_parser("make-key")
    sub.add_argument("--out", required=True)
    sub.add_argument("--token-uri", required=True)
    sub.add_argument("--project-id", default="agency-os-test")
    args = parser.parse_args(argv)
    return {"serve": serve, "start": start, "stop": stop, "make-key": make_key}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
