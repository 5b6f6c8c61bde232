"""Signals as the gate handles them: SIGTERM and SIGHUP are Ctrl-C, and cleanup is not cut short.

A CI runner's time limit sends SIGTERM, a dropped SSH session SIGHUP: both raise
KeyboardInterrupt like Ctrl-C, so the same ``except``/``finally`` paths roll back, put
sequences back, stop the disposable server and write the record. While that cleanup
runs (``deferred_interrupts``), a second signal is noted and said, never obeyed: a
rollback half verified or a restore half replayed would be worse than either.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg.pq import TransactionStatus

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt (where nobody else handles them), like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _interrupt)


@contextmanager
def _on_stopping_signals(handle: Callable[[str], None]) -> Iterator[None]:
    """Within the block, ``handle(name)`` runs on each stopping signal; the handlers before are put back.

    Python delivers signals to the main thread only: elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        handle(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


@contextmanager
def deferred_interrupts(say: Callable[[str], None]) -> Iterator[list[str]]:
    """Within the block, stopping signals are only noted (their names, in the list yielded)."""
    noted: list[str] = []

    def note(name: str) -> None:
        noted.append(name)
        say(f"{name} received: finishing the clean-up first (rollback, verification)")

    with _on_stopping_signals(note):
        yield noted


@dataclass
class Cancellation:
    """Which stopping signal arrived while ``cancelling`` was in force (None: none).

    Also a hook of the runner's apply (``check`` before and after every statement): a
    cancel that reached the server between two statements cancels nothing, so the signal
    is acted on at the next statement's door instead of being lost.
    """

    signal: str | None = None

    def check(self) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt(self.signal)

    def before(self, conn: psycopg.Connection, migration: object) -> None:
        self.check()

    def after_statement(
        self, conn: psycopg.Connection, timing: object, started: float, hooks_so_far: float
    ) -> None:
        self.check()

    def after_commit(self, ended: float, hooks_total: float) -> None:
        """Nothing: the statement that ended last has been checked."""


@contextmanager
def cancelling(conn: psycopg.Connection) -> Iterator[Cancellation]:
    """Within the block a stopping signal cancels ``conn``'s running statement, server side.

    A KeyboardInterrupt raised wherever it lands can leave psycopg between sending a query
    and reading its answer ("another command is already in progress"). Instead the
    statement fails with PostgreSQL's own query_canceled error, the transaction rolls back
    the ordinary way, and the caller, seeing ``signal`` set, treats that error as the
    interruption. Between statements (no query running) the signal raises KeyboardInterrupt.
    """
    state = Cancellation()

    def cancel(name: str) -> None:
        state.signal = name
        if conn.pgconn.transaction_status == TransactionStatus.ACTIVE:
            conn.cancel_safe(timeout=10)
        else:
            raise KeyboardInterrupt(name)

    with _on_stopping_signals(cancel):
        yield state


@contextmanager
def named_interrupts() -> Iterator[list[str]]:
    """Within the block a stopping signal raises KeyboardInterrupt and its name is kept (the list yielded).

    For code that catches KeyboardInterrupt itself (pytest.main ends its session and
    returns): the caller can still tell which signal it was, and raise it again.
    """
    noted: list[str] = []

    def interrupt(name: str) -> None:
        noted.append(name)
        raise KeyboardInterrupt(name)

    with _on_stopping_signals(interrupt):
        yield noted
