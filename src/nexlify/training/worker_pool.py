"""Training runs side by side in worker processes, stopped cleanly by Ctrl-C or SIGTERM.

Shared by the seeds of ``nexlify train --seeds N`` (``seed_runs``) and the jobs of ``nexlify
walkforward`` (``walkforward.local_executor``). The workers leave the terminal's process group, so
Ctrl-C reaches the parent alone, which passes it on exactly once to every worker (a second signal
would stop a run without its checkpoint); a closed terminal (SIGHUP) stops them as SIGTERM does.
A worker holds the stop signals blocked outside its training loop, which unblocks them when it can
save a checkpoint (``trainer.StopRequest``): a stop that arrives early waits for the loop. Runs
queued but not started never start. Every running run saves its checkpoint and returns; then
``RunsStopped`` is raised. A run that fails stops the others the same way before its error is raised.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

_SIGHUP = getattr(signal, "SIGHUP", None)
T = TypeVar("T")
R = TypeVar("R")
_STOP: Any = None  # in a worker: the parent's stop event


class RunsStopped(KeyboardInterrupt):
    """Runs side by side stopped on SIGINT or SIGTERM; each running one saved its checkpoint."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name}: the runs stopped")
        self.signal_name = signal_name


class _Interrupted:
    """What a worker returns for a run a stop signal ended, or never started (the trainer's own
    exception does not survive the trip back to the parent; the run's folder says what was saved)."""


def _call(function: Callable[[T], R], item: T) -> R | _Interrupted:
    from nexlify.training.trainer import TrainingInterrupted

    if _STOP is not None and _STOP.is_set():
        return _Interrupted()  # queued before the stop and picked up after it: never started
    try:
        return function(item)
    except TrainingInterrupted:
        return _Interrupted()


def _worker_start(stop: Any) -> None:
    global _STOP
    _STOP = stop
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])


def _signal_workers(number: int) -> None:
    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, number)  # type: ignore[arg-type]


@contextlib.contextmanager
def _stop_signals_passed_on(futures: dict[Future[Any], Any], stop: Any) -> Iterator[list[str]]:
    """SIGINT and SIGTERM to this process set ``stop``, cancel the runs not queued and go on to every
    worker; yields the names of the signals received."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(number: int, _frame: Any) -> None:
        received.append(signal.Signals(number).name)
        stop.set()
        for future in futures:
            future.cancel()
        # A closed terminal (SIGHUP) ends the runs as SIGTERM does: saved, then stopped.
        _signal_workers(signal.SIGTERM if number == _SIGHUP else number)

    numbers = [signal.SIGINT, signal.SIGTERM, *([_SIGHUP] if _SIGHUP is not None else [])]
    previous = {number: signal.getsignal(number) for number in numbers}
    for number in numbers:
        signal.signal(number, handle)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_side_by_side(function: Callable[[T], R], items: Iterable[T], at_once: int) -> Iterator[tuple[T, R]]:
    """``function(item)`` for every item in a pool of ``at_once`` worker processes (spawned: a forked
    child would inherit torch's threads and CUDA state); yields ``(item, result)`` as each finishes.
    ``function`` must be importable by name (a module-level function)."""
    context = get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(max_workers=at_once, mp_context=context, initializer=_worker_start, initargs=(stop,))
    futures: dict[Future[Any], T] = {}  # the handler cancels what is in it, so it is filled after it is in place
    try:
        with _stop_signals_passed_on(futures, stop) as received:
            for item in items:
                futures[pool.submit(_call, function, item)] = item
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BaseException:
                    stop.set()
                    for other in futures:
                        other.cancel()
                    _signal_workers(signal.SIGTERM)  # the other runs save their checkpoints and stop
                    raise
                if not isinstance(result, _Interrupted):
                    yield futures[future], result
        if received:
            raise RunsStopped(received[0])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
