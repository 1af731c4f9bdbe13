"""Termination: how flow code learns that its node is going away, whatever the cause.

Three causes arrive the same way, as `termination.requested` becoming true:

* SIGTERM (systemd stopping the worker unit on shutdown or drain, `prefect flow-run execute`
  passing on a preemption, or `kill` from a shell);
* Prefect's own `TerminationSignal`, when Prefect's handler ran before ours (caught by
  `termination.guard()`);
* an explicit drain request from code: `termination.request("reason")`.

Flow code checks `termination.requested` at its batch boundaries; when it is set, it commits its
checkpoint and calls `termination.stop()`, which ends the run the way its environment expects:

* inside a Prefect flow run, the signal goes on to Prefect's handler, which we **wrapped, not
  replaced**: it raises `TerminationSignal`, and under `prefect flow-run execute` with
  `PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule` the run ends AwaitingRetry (Scheduled),
  so any worker of the pool picks it up. An explicit drain inside such a run asks the supervisor
  to do exactly that (SIGTERM to the parent `flow-run execute` process);
* outside Prefect (the command-line entry points), the process exits with status 143.

If flow code does not reach a checkpoint within the grace period (default 20 s, inside GCP's
30 s notice; `AGENCY_OS_TERMINATION_GRACE_S`), or a second SIGTERM arrives, the handler stops
waiting and hands over at once: the open transaction rolls back and the last committed
checkpoint stands.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

log = logging.getLogger("agency_os.termination")

EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
_SUPERVISOR_BEHAVIOURS = ("reschedule", "relinquish")


def _prefect_termination_signal() -> type[BaseException] | None:
    try:
        from prefect.exceptions import TerminationSignal  # noqa: PLC0415  (optional at import time)
    except ImportError:  # pragma: no cover - prefect is a dependency, but keep the runtime usable alone
        return None
    return TerminationSignal


def _in_prefect_flow_run() -> bool:
    try:
        from prefect.context import FlowRunContext  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    return FlowRunContext.get() is not None


class Termination:
    """Process-wide termination state. Use the module-level `termination` instance."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.signum: int | None = None
        self.requested_at: float | None = None
        self._previous: Any = None
        self._installed = False
        self._escalating = False
        self._timer: threading.Timer | None = None
        self.grace_s = float(os.environ.get("AGENCY_OS_TERMINATION_GRACE_S", "20"))
        self._listeners: list[Callable[[str], None]] = []

    # -- state ---------------------------------------------------------------------------------

    @property
    def requested(self) -> bool:
        """True once the node is going away: checkpoint, then call `stop()`."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until termination is requested (or the timeout passes); returns `requested`."""
        return self._event.wait(timeout)

    def on_request(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` (from the requesting thread) when termination is requested."""
        self._listeners.append(listener)

    def _record(self, reason: str, signum: int | None = None) -> bool:
        with self._lock:
            first = not self._event.is_set()
            if first:
                self.reason, self.signum, self.requested_at = reason, signum, time.monotonic()
                self._event.set()
            elif signum is not None and self.signum is None:
                self.signum = signum
        if first:
            log.warning("termination requested (%s): finishing the current batch, then checkpoint", reason)
            for listener in list(self._listeners):
                with contextlib.suppress(Exception):
                    listener(reason)
        return first

    def reset(self) -> None:
        """Forget a request (tests, or a long-lived process that handled a drain and goes on)."""
        with self._lock:
            self._event.clear()
            self.reason = self.signum = self.requested_at = None
            self._escalating = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    # -- causes -------------------------------------------------------------------------------

    def install(self) -> Termination:
        """Install the SIGTERM handler (main thread), wrapping whatever handler is there now
        (Prefect's inside a flow run). Idempotent; call it at the start of flow code."""
        current = signal.getsignal(signal.SIGTERM)
        if current == self._handle_sigterm:
            return self
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("termination.install() must run in the main thread (flow code, not a task thread)")
        self._previous = current
        signal.signal(signal.SIGTERM, self._handle_sigterm)
        self._installed = True
        return self

    def uninstall(self) -> None:
        """Put the wrapped handler back."""
        if signal.getsignal(signal.SIGTERM) == self._handle_sigterm:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        self._installed = False

    def request(self, reason: str) -> None:
        """Explicit drain: same effect as SIGTERM (finish the batch, checkpoint, stop)."""
        self._record(f"drain: {reason}")

    def _handle_sigterm(self, signum: int, frame: Any) -> None:
        if self._escalating or not self._record(f"signal {signal.Signals(signum).name}", signum):
            # Second SIGTERM, or the grace period ran out: stop waiting for a checkpoint.
            if not self._escalating:
                log.warning("second SIGTERM: handing over without waiting for a checkpoint")
            self._hand_over(signum, frame)
            return
        self._start_grace_timer()

    def _start_grace_timer(self) -> None:
        if self.grace_s <= 0:
            return

        def expire() -> None:
            log.error("no checkpoint within %.0f s of termination: interrupting the main thread", self.grace_s)
            self._escalating = True
            _thread.interrupt_main(signal.SIGTERM)

        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.grace_s, expire)
                self._timer.daemon = True
                self._timer.start()

    @contextlib.contextmanager
    def guard(self) -> Iterator[Termination]:
        """Turn Prefect's `TerminationSignal` (raised by its handler before ours ran) into a
        termination request, then let it propagate so Prefect handles the run."""
        termination_signal = _prefect_termination_signal()
        try:
            yield self
        except BaseException as exc:
            if termination_signal is not None and isinstance(exc, termination_signal):
                self._record("prefect TerminationSignal", getattr(exc, "signal", signal.SIGTERM))
            raise

    # -- ending the run -----------------------------------------------------------------------

    def stop(self) -> NoReturn:
        """Call after the checkpoint is committed: end this run the way its environment expects."""
        if self._timer is not None:
            self._timer.cancel()
        if self.signum is None and _in_prefect_flow_run() and self._supervised():
            # An explicit drain inside `prefect flow-run execute --reschedule`: let the supervisor
            # reschedule the run; it answers with the SIGTERM that ends us below.
            log.warning("asking the flow-run supervisor (pid %d) to reschedule this run", os.getppid())
            os.kill(os.getppid(), signal.SIGTERM)
            deadline = time.monotonic() + max(self.grace_s, 5.0)
            while self.signum is None and time.monotonic() < deadline:
                time.sleep(0.05)
        self._hand_over(self.signum or signal.SIGTERM, None)
        raise SystemExit(EXIT_TERMINATED)  # the previous handler returned: exit like SIGTERM would

    @staticmethod
    def _supervised() -> bool:
        return os.environ.get("PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR", "").lower() in _SUPERVISOR_BEHAVIOURS

    def _hand_over(self, signum: int, frame: Any) -> None:
        previous = self._previous
        if callable(previous):
            # Prefect's handler (it raises TerminationSignal). Restore it first so any later
            # SIGTERM reaches Prefect directly.
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
            previous(signum, frame)
            return
        raise SystemExit(EXIT_TERMINATED)


termination = Termination()
