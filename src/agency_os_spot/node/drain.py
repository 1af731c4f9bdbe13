"""Drain a Prefect process worker so its flow runs end *rescheduled*, not killed.

Run by the worker unit as `ExecStop=` (systemd runs it before it signals the main process)::

    python -m agency_os_spot.node.drain --main-pid $MAINPID --timeout 100

Why a program and not just SIGTERM: a Prefect 3.9 process worker that gets SIGTERM stops and
SIGKILLs its flow-run processes (they stay Running forever), and one that keeps polling takes a
rescheduled run straight back. The sequence:

1. SIGSTOP the worker: it stops polling and cannot kill its children;
2. for each flow run (a `prefect flow-run execute` supervisor and its engine process):
   * if the flow code listens for drain requests (SIGUSR1 caught, see agency_os_spot.runtime.termination),
     send it SIGUSR1: it finishes the batch in hand, commits its checkpoint, then asks its
     supervisor to reschedule (the supervisor moves the run to AwaitingRetry and ends it);
   * otherwise, or if it has not ended after `--request-grace` seconds, SIGTERM the supervisor
     (with PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule it reschedules the run and
     interrupts the engine; the batch in flight rolls back, the last checkpoint stands);
3. wait until every supervisor has exited (a zombie: its parent is stopped);
4. SIGTERM then SIGCONT the worker: with no children left it exits in about a second.

Prints one JSON line (to the journal) with what it did and how long it took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

SUPERVISOR_MARKER = "flow-run"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    result = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid:
                result.append(int(entry.name))
    return sorted(result)


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (SigCgt in /proc/PID/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie). `kill -0` is not enough: a zombie still answers."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def drain(main_pid: int, timeout: float, request_grace: float | None = None, poll: float = 0.1) -> dict:
    """Run the drain sequence on the worker `main_pid`; returns a report."""
    started = time.monotonic()
    request_grace = min(timeout / 2, 30.0) if request_grace is None else request_grace
    report: dict = {"main_pid": main_pid, "flow_runs": [], "stopped_worker": False}
    if not _alive(main_pid):
        report.update(result="worker not running", seconds=0.0)
        return report
    os.kill(main_pid, signal.SIGSTOP)
    report["stopped_worker"] = True
    try:
        supervisors = [pid for pid in children(main_pid) if SUPERVISOR_MARKER in _cmdline(pid)]
        requested, terminated = [], []
        for sup in supervisors:
            engines = [pid for pid in children(sup) if catches(pid, signal.SIGUSR1)]
            if engines:
                for engine in engines:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(engine, signal.SIGUSR1)
                requested.append(sup)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sup, signal.SIGTERM)
                terminated.append(sup)
        report.update(flow_runs=supervisors, drain_requested=requested, sigterm=terminated)
        deadline = started + timeout
        escalate_at = started + request_grace
        while any(_alive(pid) for pid in supervisors) and time.monotonic() < deadline:
            if requested and time.monotonic() >= escalate_at:
                late = [pid for pid in requested if _alive(pid)]
                for pid in late:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                report["escalated"] = late
                requested = []
            time.sleep(poll)
        left = [pid for pid in supervisors if _alive(pid)]
        report["result"] = "drained" if not left else f"timeout: {len(left)} flow run(s) still running"
        report["runs_ended_s"] = round(time.monotonic() - started, 3)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(main_pid, signal.SIGTERM)
            os.kill(main_pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while _alive(main_pid) and time.monotonic() < deadline:
        time.sleep(poll)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agency-os-spot drain", description=__doc__.splitlines()[0])
    parser.add_argument("--main-pid", default=os.environ.get("MAINPID", ""), help="the worker's PID ($MAINPID)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for flow runs to end")
    parser.add_argument(
        "--request-grace",
        type=float,
        default=None,
        help="seconds a drain-aware flow run gets to checkpoint before its supervisor is SIGTERMed "
        "(default: half the timeout, at most 30)",
    )
    args = parser.parse_args(argv)
    if not args.main_pid.strip():
        print(json.dumps({"result": "worker not running (no main PID)"}), flush=True)
        return 0
    report = drain(int(args.main_pid), args.timeout, args.request_grace)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
