"""Several seeds of one training run (``nexlify train --seeds N``): how many train at once, and running them.

On a CPU the seeds train side by side in their own processes, as many at once as finishes them
soonest at the measured loop speeds (``nexlify.hardware.side_by_side``) and the RAM holds with each
run's replay memory. A GPU plan is sized to fill its card, so on a GPU the seeds take turns unless
``--jobs`` says otherwise.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES, FEATURE_SETS
from nexlify.hardware.plan import bytes_per_transition
from nexlify.hardware.side_by_side import RUN_MEMORY_GB, runs_at_once

GB = float(1 << 30)


def run_memory_gb(config: TrainingConfig) -> float:
    """RAM one seed's run needs: the process, plus its replay memory when that lives in host RAM."""
    state_size = len(FEATURE_SETS[config.feature_set]) + len(ACCOUNT_FEATURE_NAMES)
    replay_in_ram = config.device == "cpu" or config.optimization_level == "gpu_conserve"
    replay = config.buffer_size * bytes_per_transition(state_size, config.replay_state_dtype) / GB
    return RUN_MEMORY_GB + (replay if replay_in_ram else 0.0)


def seeds_at_once(config: TrainingConfig, seeds: int, usable_cores: int, available_gb: float,
                  requested: int | None = None, rates: dict[int, float] | None = None) -> tuple[int, int, str]:
    """How many of ``seeds`` runs train at once, the torch threads of each, and why.

    CPU: the count that finishes every seed soonest at the measured loop speeds ``rates`` (by torch
    threads, of the planned setting; ``nexlify.hardware.side_by_side``), as many as ``available_gb``
    holds at ``run_memory_gb`` each; ``requested`` (``--jobs``) overrides. GPU: one at a time unless
    requested.
    """
    cores = max(1, usable_cores)
    if config.device != "cpu" and requested is None:
        return 1, config.num_workers, "one after another (a GPU plan fills its card)"
    if requested is not None:
        at_once = max(1, min(requested, seeds))
        threads, why = max(1, min(config.num_workers, cores // at_once)), "as asked"
    else:
        by_memory = max(1, int(available_gb / run_memory_gb(config)))
        at_once, threads, why = runs_at_once(seeds, cores, config.num_workers, by_memory, rates)
    if at_once == 1:
        return 1, config.num_workers, f"one after another ({why})"
    return at_once, threads, f"{at_once} at once ({why}), {threads} torch thread(s) each"


class SeedsStopped(KeyboardInterrupt):
    """Seeds trained side by side stopped on SIGINT or SIGTERM; each running one saved its checkpoint."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name}: the seeds' runs stopped")
        self.signal_name = signal_name


def train_one_seed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """One seed's run in its own process (``run_training`` without a live display); its run record,
    or ``{"interrupted": checkpoint}`` when a stop signal ended it (the trainer's own exception does
    not survive the trip back to the parent)."""
    from nexlify.training.pipeline import run_training
    from nexlify.training.trainer import TrainingInterrupted

    if _STOP is not None and _STOP.is_set():
        return {"interrupted": None}  # queued before the stop and picked up after it: never started
    try:
        return run_training(**kwargs, console=None, quiet=True)["run"]
    except TrainingInterrupted as stop:
        return {"interrupted": str(stop.checkpoint)}


_STOP: Any = None  # in a worker: the parent's stop event


def _worker_start(stop: Any) -> None:
    """Worker start-up: keep the parent's stop event; leave the terminal's process group, so Ctrl-C
    reaches the parent alone, which passes it on exactly once (a second signal stops a run without its
    checkpoint); and hold the stop signals blocked outside the training loop, which unblocks them when
    it can save a checkpoint (``StopRequest``), so one that arrives early waits for it."""
    global _STOP
    _STOP = stop
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])


def _signal_children(number: int) -> None:
    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, number)  # type: ignore[arg-type]


@contextlib.contextmanager
def _stop_signals_passed_on(futures: list[Future[Any]], stop: Any) -> Iterator[list[str]]:
    """While the seeds train: SIGINT and SIGTERM to this process set ``stop`` (runs queued but not
    started return at once), cancel the runs not queued and go on to every child (each saves a
    checkpoint and stops); yields the names of the signals received."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handle(number: int, _frame: Any) -> None:
        received.append(signal.Signals(number).name)
        stop.set()
        for future in futures:
            future.cancel()
        _signal_children(number)

    numbers = [signal.SIGINT, signal.SIGTERM]
    previous = {number: signal.getsignal(number) for number in numbers}
    for number in numbers:
        signal.signal(number, handle)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def train_seeds_side_by_side(runs: list[dict[str, Any]], at_once: int) -> Iterator[tuple[dict[str, Any],
                                                                                    dict[str, Any]]]:
    """Train each of ``runs`` (``run_training`` keyword arguments) in a pool of ``at_once`` processes;
    yields ``(kwargs, run record)`` as each finishes.

    Ctrl-C or SIGTERM: every running seed saves its checkpoint and stops, the others never start,
    then ``SeedsStopped`` is raised. A seed that fails stops the others the same way before its error
    is raised.
    """
    context = get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(max_workers=at_once, mp_context=context, initializer=_worker_start, initargs=(stop,))
    futures: dict[Future[dict[str, Any]], dict[str, Any]] = {}
    submitted: list[Future[Any]] = []  # the handler cancels what is in it, so it is filled after it is in place
    try:
        with _stop_signals_passed_on(submitted, stop) as received:
            for run in runs:
                future = pool.submit(train_one_seed, run)
                futures[future] = run
                submitted.append(future)
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    record = future.result()
                except BaseException:
                    stop.set()
                    for other in submitted:
                        other.cancel()
                    _signal_children(signal.SIGTERM)  # the other seeds save their checkpoints and stop
                    raise
                if "interrupted" not in record:
                    yield futures[future], record
        if received:
            raise SeedsStopped(received[0])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
