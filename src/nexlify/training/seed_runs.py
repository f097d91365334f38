"""Several seeds of one training run (``nexlify train --seeds N``): how many train at once, and running them.

On a CPU the planned torch threads rarely use every core (threads stop paying off after a few), so
seeds train side by side in their own processes, as many as the cores hold at the planned threads and
the RAM holds with each run's replay memory. A GPU plan is sized to fill its card, so on a GPU the
seeds take turns unless ``--jobs`` says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES, FEATURE_SETS
from nexlify.hardware.plan import bytes_per_transition

GB = float(1 << 30)
# Peak RSS of one training process besides its replay memory (docs/benchmarks.md: 544 MB in all).
RUN_MEMORY_GB = 0.6


def run_memory_gb(config: TrainingConfig) -> float:
    """RAM one seed's run needs: the process, plus its replay memory when that lives in host RAM."""
    state_size = len(FEATURE_SETS[config.feature_set]) + len(ACCOUNT_FEATURE_NAMES)
    replay_in_ram = config.device == "cpu" or config.optimization_level == "gpu_conserve"
    replay = config.buffer_size * bytes_per_transition(state_size, config.replay_state_dtype) / GB
    return RUN_MEMORY_GB + (replay if replay_in_ram else 0.0)


def seeds_at_once(config: TrainingConfig, seeds: int, usable_cores: int, available_gb: float,
                  requested: int | None = None, rates: dict[int, float] | None = None) -> tuple[int, int, str]:
    """How many of ``seeds`` runs train at once, the torch threads of each, and why.

    CPU: with ``rates`` (the profile's measured loop speed, transitions/s by torch threads, of the
    planned setting) the count that finishes every seed soonest: ``ceil(seeds / k)`` rounds at the
    speed of ``usable_cores // k`` threads each (a thread count not measured counts at the nearest
    measured below it). Without them, as many as ``usable_cores`` hold at the plan's threads. RAM
    caps either at ``run_memory_gb`` each; ``requested`` (``--jobs``) overrides. Each run gets at
    most the planned threads. GPU: one at a time unless requested.
    """
    cores = max(1, usable_cores)
    if config.device != "cpu" and requested is None:
        return 1, config.num_workers, "one after another (a GPU plan fills its card)"
    by_memory = max(1, int(available_gb / run_memory_gb(config)))
    limit = max(1, min(seeds, by_memory))

    def threads_each(k: int) -> int:
        return max(1, min(config.num_workers, cores // k))

    def speed(k: int) -> float | None:
        measured = [t for t in (rates or {}) if t <= threads_each(k)]
        return rates[max(measured)] if rates and measured else None

    if requested is not None:
        at_once, source = max(1, min(requested, seeds)), "as asked"
    elif rates and speed(1) is not None:
        candidates = [k for k in range(1, min(limit, cores) + 1) if speed(k)]
        at_once = min(candidates, key=lambda k: (math.ceil(seeds / k) / float(speed(k) or 1.0), k))
        source = "soonest done at the measured loop speeds: " + ", ".join(
            f"{k} x {speed(k):,.0f} tr/s at {threads_each(k)} thread(s)" for k in candidates[:4])
    else:
        at_once = max(1, min(cores // max(1, config.num_workers), limit))
        source = f"{cores} core(s) / {config.num_workers} planned thread(s)"
    if at_once >= by_memory and at_once > 1 and requested is None:
        source += f"; RAM holds {by_memory} ({available_gb:.1f} GB free / {run_memory_gb(config):.2f} GB a run)"
    if at_once == 1:
        return 1, config.num_workers, f"one after another ({source})"
    return at_once, threads_each(at_once), f"{at_once} at once ({source}), {threads_each(at_once)} torch thread(s) each"


def train_one_seed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """One seed's run in its own process (``run_training`` without a live display); its run record."""
    from nexlify.training.pipeline import run_training

    return run_training(**kwargs, console=None, quiet=True)["run"]


def train_seeds_side_by_side(runs: list[dict[str, Any]], at_once: int) -> Iterator[tuple[dict[str, Any],
                                                                                    dict[str, Any]]]:
    """Train each of ``runs`` (``run_training`` keyword arguments) in a pool of ``at_once`` processes;
    yields ``(kwargs, run record)`` as each finishes. A failure or Ctrl-C stops the runs not yet
    started and waits for the ones running (an interrupted trainer saves its checkpoint first)."""
    pool = ProcessPoolExecutor(max_workers=at_once, mp_context=get_context("spawn"))
    try:
        futures: dict[Future[dict[str, Any]], dict[str, Any]] = {pool.submit(train_one_seed, run): run
                                                                  for run in runs}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
