"""The termination API: SIGTERM, Prefect's TerminationSignal and explicit drains arrive the same
way, and stop() hands over to the wrapped handler (Prefect's) instead of replacing it."""

from __future__ import annotations

import os
import signal
import time

import pytest
from prefect.exceptions import TerminationSignal

from agency_os_spot.runtime.termination import EXIT_TERMINATED, Termination


class Wrapped(BaseException):
    pass


@pytest.fixture
def handler_calls():
    """A stand-in for Prefect's handler (raises like it does), restored after the test."""
    calls: list[int] = []

    def previous(signum, frame):
        calls.append(signum)
        raise Wrapped(signum)

    original = signal.signal(signal.SIGTERM, previous)
    yield calls
    signal.signal(signal.SIGTERM, original)


def test_sigterm_sets_the_flag_and_stop_hands_over_to_the_wrapped_handler(handler_calls):
    term = Termination()
    term.grace_s = 0
    term.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert term.requested and term.reason == "signal SIGTERM"
    assert handler_calls == []  # not yet: flow code first commits its checkpoint
    with pytest.raises(Wrapped):
        term.stop()
    assert handler_calls == [signal.SIGTERM]


def test_a_second_sigterm_hands_over_at_once(handler_calls):
    term = Termination()
    term.grace_s = 0
    term.install()
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Wrapped):
        os.kill(os.getpid(), signal.SIGTERM)
    assert handler_calls == [signal.SIGTERM]


def test_no_checkpoint_within_the_grace_period_interrupts_the_main_thread(handler_calls):
    term = Termination()
    term.grace_s = 0.3
    term.install()
    started = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Wrapped):
        while time.monotonic() - started < 5:  # flow code stuck, never checking the flag
            time.sleep(0.01)
    assert 0.3 <= time.monotonic() - started < 2


def test_explicit_drain_arrives_the_same_way_and_exits_143_outside_prefect():
    term = Termination()
    seen: list[str] = []
    term.on_request(seen.append)
    term.request("scale-in")
    assert term.requested and seen == ["drain: scale-in"]
    with pytest.raises(SystemExit) as exc:
        term.stop()
    assert exc.value.code == EXIT_TERMINATED == 143


def test_guard_turns_prefects_termination_signal_into_a_request():
    term = Termination()
    with pytest.raises(TerminationSignal), term.guard():
        raise TerminationSignal(signal=signal.SIGTERM)
    assert term.requested and term.reason == "prefect TerminationSignal"


def test_install_is_idempotent_and_uninstall_restores(handler_calls):
    previous = signal.getsignal(signal.SIGTERM)
    term = Termination()
    term.install()
    term.install()
    assert signal.getsignal(signal.SIGTERM) == term._handle_sigterm
    term.uninstall()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_default_disposition_exits_143():
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        term = Termination()
        term.grace_s = 0
        term.install()
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(SystemExit) as exc:
            term.stop()
        assert exc.value.code == 143
    finally:
        signal.signal(signal.SIGTERM, original)


def test_sigusr1_is_a_drain_request():
    term = Termination()
    term.grace_s = 0
    term.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert term.requested and term.reason == "drain: signal SIGUSR1"
    finally:
        term.uninstall()


def test_inside_a_flow_run_prefects_sigterm_handler_stays_installed():
    """Prefect's supervisor only acknowledges a reschedule with an engine whose SIGTERM handler is
    Prefect's own: install() must leave it alone and only add the SIGUSR1 drain request."""
    from prefect.utilities.engine import capture_sigterm, is_prefect_sigterm_handler_installed  # noqa: PLC0415

    term = Termination()
    with capture_sigterm():
        prefect_handler = signal.getsignal(signal.SIGTERM)
        term.install()
        try:
            assert term.mode == "prefect"
            assert signal.getsignal(signal.SIGTERM) is prefect_handler and is_prefect_sigterm_handler_installed()
            assert signal.getsignal(signal.SIGUSR1) == term._handle_drain
        finally:
            term.uninstall()
