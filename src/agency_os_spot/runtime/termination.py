"""Termination: how flow code learns that its node is going away, whatever the cause.

Every cause ends up as `termination.requested` becoming true (or, at worst, as Prefect's
`TerminationSignal` propagating through `termination.guard()`, which records it too):

* a **drain request**: SIGUSR1 (what the worker unit's drain program sends first), or
  `termination.request("reason")` from code;
* **SIGTERM**: from systemd, from `kill`, from Prefect's `flow-run execute` supervisor;
* Prefect's **TerminationSignal**, raised by Prefect's own SIGTERM handler inside a flow run.

Flow code checks `termination.requested` at its batch boundaries; when set, it commits its
checkpoint and calls `termination.stop()`, which ends the run the way its environment expects.

**Inside a Prefect flow run, Prefect's SIGTERM handler stays installed** — we compose with it,
never replace it: Prefect's supervisor only acknowledges a graceful "reschedule" with an engine
whose SIGTERM handler is Prefect's own (`commit_control_intent_and_ack`); a wrapped handler makes
it fall back to SIGKILL. So inside a run:

* SIGUSR1 sets the flag; at the next boundary the flow commits, then `stop()` asks the
  `prefect flow-run execute` supervisor (its parent, run with
  `PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule`) to reschedule: the supervisor moves
  the run to AwaitingRetry and answers with SIGTERM, Prefect's handler raises TerminationSignal
  and the engine exits without touching the run's state. Nothing committed is redone.
* a bare SIGTERM reaches Prefect's handler directly: TerminationSignal interrupts the batch in
  flight (its transaction rolls back, the last checkpoint stands) and `guard()` records it.

**Outside Prefect** (the command-line entry points) SIGTERM is ours: it sets the flag, the code
commits at the next boundary and `stop()` exits with status 143.

If flow code does not reach a boundary within the grace period (`AGENCY_OS_TERMINATION_GRACE_S`,
default 15 s, inside GCP's 30 s notice), or a second SIGTERM arrives, waiting stops: the
interrupt goes through at once and the open transaction rolls back.
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

from agency_os_spot import settings

log = logging.getLogger("agency_os.termination")

EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
DRAIN_SIGNAL = signal.SIGUSR1
_SUPERVISOR_BEHAVIOURS = ("reschedule", "relinquish")


class Interrupted(Exception):
    """Termination was requested; the job stopped right after committing its checkpoint (and gave
    the job back: pending, its progress kept)."""

    def __init__(self, job_id: str, progress: int):
        super().__init__(f"job {job_id} interrupted after committing its checkpoint at record {progress}")
        self.job_id = job_id
        self.progress = progress


def _termination_signal_class() -> type[BaseException] | None:
    try:
        from prefect.exceptions import TerminationSignal  # noqa: PLC0415  (keep the runtime importable alone)
    except ImportError:  # pragma: no cover
        return None
    return TerminationSignal


def prefect_bridge_installed() -> bool:
    """True when Prefect's SIGTERM handler (the engine's bridge) is the current one."""
    try:
        from prefect.utilities.engine import is_prefect_sigterm_handler_installed  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    return is_prefect_sigterm_handler_installed()


def _in_prefect_flow_run() -> bool:
    try:
        from prefect.context import FlowRunContext  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    return FlowRunContext.get() is not None


def _supervised() -> bool:
    """Run by `prefect flow-run execute` with a reschedule/relinquish SIGTERM behaviour."""
    behaviour = os.environ.get("PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR", "").lower()
    return behaviour in _SUPERVISOR_BEHAVIOURS


class Termination:
    """Process-wide termination state. Use the module-level `termination` instance."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.signum: int | None = None
        self.requested_at: float | None = None
        self.mode: str | None = None  # "prefect" (Prefect's bridge in charge) or "standalone"
        self._previous: Any = None
        self._previous_drain: Any = None
        self._escalating = False
        self._timer: threading.Timer | None = None
        self._grace_s: float | None = None  # AGENCY_OS_TERMINATION_GRACE_S, read when first needed
        self._listeners: list[Callable[[str], None]] = []

    @property
    def grace_s(self) -> float:
        """How long flow code may take to reach its next checkpoint after a request. Read from the
        settings on first use, not when this module is imported (the parser processes import it)."""
        if self._grace_s is None:
            self._grace_s = settings.current().termination_grace_s
        return self._grace_s

    @grace_s.setter
    def grace_s(self, value: float) -> None:
        self._grace_s = value

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
            self._start_grace_timer()
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
        """Start listening (main thread; call it at the start of flow code). Idempotent.

        Always: SIGUSR1 is a drain request. SIGTERM: left to Prefect's handler when it is
        installed (inside a flow run), otherwise handled here, wrapping the current handler."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("termination.install() must run in the main thread (flow code, not a task thread)")
        if signal.getsignal(DRAIN_SIGNAL) != self._handle_drain:
            self._previous_drain = signal.signal(DRAIN_SIGNAL, self._handle_drain)
        current = signal.getsignal(signal.SIGTERM)
        if current == self._handle_sigterm:
            return self
        if prefect_bridge_installed():
            self.mode = "prefect"
            log.debug("Prefect's SIGTERM bridge stays in charge of SIGTERM; drain requests come as SIGUSR1")
            return self
        self.mode = "standalone"
        self._previous = current
        signal.signal(signal.SIGTERM, self._handle_sigterm)
        return self

    def uninstall(self) -> None:
        """Put back the handlers install() replaced."""
        if signal.getsignal(signal.SIGTERM) == self._handle_sigterm:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        if signal.getsignal(DRAIN_SIGNAL) == self._handle_drain:
            previous = self._previous_drain if self._previous_drain is not None else signal.SIG_DFL
            signal.signal(DRAIN_SIGNAL, previous)
        self.mode = None

    def request(self, reason: str) -> None:
        """Explicit drain: finish the batch, checkpoint, stop."""
        self._record(f"drain: {reason}")

    def _handle_drain(self, signum: int, frame: Any) -> None:
        self._record(f"drain: signal {signal.Signals(signum).name}")

    def _handle_sigterm(self, signum: int, frame: Any) -> None:
        if self._escalating or not self._record(f"signal {signal.Signals(signum).name}", signum):
            if not self._escalating:
                log.warning("another SIGTERM while terminating: stopping now, without waiting for a checkpoint")
            self._hand_over(signum, frame)

    def _start_grace_timer(self) -> None:
        if self.grace_s <= 0:
            return

        def expire() -> None:
            log.error("no checkpoint within %.0f s of the termination request: interrupting now", self.grace_s)
            self._escalating = True
            if self.mode == "prefect" and _supervised():
                os.kill(os.getppid(), signal.SIGTERM)  # the supervisor reschedules and SIGTERMs us
            elif self.mode == "standalone":
                _thread.interrupt_main(signal.SIGTERM)
            else:
                _thread.interrupt_main(DRAIN_SIGNAL)

        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.grace_s, expire)
                self._timer.daemon = True
                self._timer.start()

    @contextlib.contextmanager
    def guard(self) -> Iterator[Termination]:
        """Record Prefect's `TerminationSignal` (raised by its SIGTERM handler) as a termination
        request, then let it propagate: Prefect decides what happens to the run."""
        termination_signal = _termination_signal_class()
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
        if self.mode == "prefect" or (self.mode is None and _in_prefect_flow_run()):
            self._stop_prefect()
        self._hand_over(self.signum or signal.SIGTERM, None)
        raise SystemExit(EXIT_TERMINATED)

    def _stop_prefect(self) -> NoReturn:
        termination_signal = _termination_signal_class()
        if _supervised():
            # Ask the `flow-run execute` supervisor to reschedule the run. It acknowledges with
            # the engine over its control channel, moves the run to AwaitingRetry and answers
            # with SIGTERM: Prefect's handler raises TerminationSignal right here.
            log.warning("checkpoint committed; asking the flow-run supervisor (pid %d) to reschedule", os.getppid())
            os.kill(os.getppid(), signal.SIGTERM)
            deadline = time.monotonic() + max(self.grace_s, 10.0)
            while time.monotonic() < deadline:
                time.sleep(0.05)
            log.error("the supervisor did not answer within %.0f s", max(self.grace_s, 10.0))
        # No supervisor: end like a SIGTERM would (the run is Crashed; the crash-reschedule
        # automation of the bulk pool puts interruptible runs back in the queue).
        if termination_signal is not None:
            raise termination_signal(signal=signal.SIGTERM)
        raise SystemExit(EXIT_TERMINATED)

    def _hand_over(self, signum: int, frame: Any) -> None:
        previous = self._previous
        if callable(previous):
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
            previous(signum, frame)
            return
        raise SystemExit(EXIT_TERMINATED)


termination = Termination()
