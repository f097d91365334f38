"""The planned torch thread count against the alternatives, side by side in the real training loop.

Run: ./run bench threads [--episodes 8] [--repeats 2]
Profiles this machine (cold, so the thread choice is measured now), then trains the planned setting
(model, batch, parallel envs, replay ratio) on the bundled data at every candidate thread count
(1, half and all of the physical cores), repeats interleaved so a busy spell of a shared machine
hits every count alike. Prints transitions/s per thread count and marks the planned one; the plan
is right when its row is the fastest (or within noise of it).

Each count also runs with numpy's default BLAS pool (``--no-blas-pool`` skips those rows) instead of
the one BLAS thread the agent sets (``single_thread_blas``), to show what that setting buys: the
default pool spins beside torch's threads around every tiny acting matmul.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import nexlify.agent.dqn as dqn  # noqa: E402
from nexlify.data.market import prepare_market  # noqa: E402
from nexlify.hardware.cpu import thread_candidates  # noqa: E402
from nexlify.hardware.profiler import HardwareProfiler  # noqa: E402
from nexlify.training.trainer import Trainer  # noqa: E402


def transitions_per_second(config, splits) -> float:
    """Training speed of a short run (learning from the first batch, no validation inside)."""
    run = config.with_overrides({"learning_starts": config.effective_batch_size, "eval_interval": config.episodes,
                                 "save_interval": config.episodes})
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(run, splits, folder)
        started = time.perf_counter()
        trainer.train()
        return trainer.state.transitions / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8, help="episodes per timed run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-blas-pool", action="store_true",
                        help="skip the rows with numpy's default BLAS pool")
    args = parser.parse_args()
    # numpy's BLAS threads before any agent limits them, and the agent's own setting, swapped per row.
    default_pool = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    one_thread = dqn.single_thread_blas

    def default_blas() -> None:
        threadpool_limits(limits=default_pool, user_api="blas")

    profiler = HardwareProfiler(reprofile=True)
    planned = profiler.config
    print(f"Machine: {machine()}")
    print(f"Plan: {planned.model_size}, batch {planned.batch_size}, {planned.parallel_envs} parallel envs, "
          f"train every {planned.train_frequency} transitions, {planned.num_workers} torch thread(s)")
    print("  " + next(r for r in profiler.explain() if r.startswith("num_workers")) + "\n")
    splits = prepare_market(None, data_days=planned.data_days)
    counts = thread_candidates(profiler.hardware.cpu.compute_cores)
    pools = {"1 (the agent's)": one_thread} if args.no_blas_pool or default_pool == 1 else {
        "1 (the agent's)": one_thread, f"{default_pool} (numpy's default)": default_blas}
    rates: dict[tuple[int, str], list[float]] = {(n, pool): [] for pool in pools for n in counts}
    for _ in range(args.repeats):
        for n, pool in rates:
            dqn.single_thread_blas = pools[pool]
            config = planned.with_overrides({"num_workers": n, "episodes": args.episodes})
            rates[n, pool].append(transitions_per_second(config, splits))
    dqn.single_thread_blas = one_thread
    best = max(statistics.median(r) for (_, pool), r in rates.items() if pools[pool] is one_thread)
    rows = [[f"{n}{' (planned)' if n == planned.num_workers else ''}", pool, f"{statistics.median(r):,.0f}",
             ", ".join(f"{x:,.0f}" for x in r), f"{statistics.median(r) / best:.2f}"]
            for (n, pool), r in rates.items()]
    print(table(["torch threads", "numpy BLAS threads", "transitions/s (median)", "each run", "vs fastest"],
                rows))


if __name__ == "__main__":
    main()
