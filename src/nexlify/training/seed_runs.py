"""Several seeds of one training run (``nexlify train --seeds N``): how many train at once, and running them.

On a CPU the seeds train side by side in their own processes, as many at once as finishes them
soonest at the measured loop speeds (``nexlify.hardware.side_by_side``) and the RAM holds with each
run's replay memory. A GPU plan is sized to fill its card, so on a GPU the seeds take turns unless
``--jobs`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nexlify.config import TrainingConfig
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES, FEATURE_SETS
from nexlify.hardware.plan import bytes_per_transition
from nexlify.hardware.side_by_side import RUN_MEMORY_GB, runs_at_once
from nexlify.training.worker_pool import run_side_by_side

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


def train_one_seed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """One seed's run in a worker process (``run_training`` without a live display); its run record."""
    from nexlify.training.pipeline import run_training

    return run_training(**kwargs, console=None, quiet=True)["run"]


def train_seeds_side_by_side(runs: list[dict[str, Any]], at_once: int) -> Iterator[tuple[dict[str, Any],
                                                                                    dict[str, Any]]]:
    """Train each of ``runs`` (``run_training`` keyword arguments) in ``at_once`` worker processes;
    yields ``(kwargs, run record)`` as each finishes (stop signals: ``worker_pool``)."""
    return run_side_by_side(train_one_seed, runs, at_once)
