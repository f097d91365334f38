"""What keeping the baselines once per fold saves a walk-forward: a fold's backtests with and without
the fold folder's baseline cache, side by side in one run.

A walk-forward backtests, for every seed's job of a fold and again for the fold's seed ensemble, the
policy and every baseline on each market's validation and test windows. The baselines depend only on
the candles and the costs, so since session 21 the first of those backtests keeps them in the fold's
folder (``nexlify.evaluation.baseline_cache``) and the rest read them back. This plans the
walk-forward's own folds (the defaults: four markets pooled, 365/45/90 days) and, for each of the
first ``--folds``, times the ``--seeds`` + 1 calls of ``market_backtests`` a fold makes, once with no
cache and once into a fresh one, alternating which goes first. The agent's place is taken by
buy-and-hold (its own backtest is the same in both arms); nothing is trained.

    PYTHONPATH=src python benchmarks/baseline_cache.py --data BNB.csv LTC.csv XRP.csv BTC.csv --folds 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402


def fold_seconds(members: list, seeds: int, cached: bool) -> float:
    """Wall seconds of one fold's ``seeds`` + 1 backtests of every market (seeds' jobs and ensemble)."""
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.backtest import buy_and_hold_policy
    from nexlify.evaluation.fold_markets import market_backtests, market_splits

    config = TrainingConfig().with_overrides({**members[0].config_overrides, "data_days": None})
    markets = market_splits(members[0], config.feature_set)
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) if cached else None
        start = time.perf_counter()
        for _ in range(seeds + 1):
            for splits in markets.values():
                market_backtests(buy_and_hold_policy, splits, config, baseline_cache=cache)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from nexlify.evaluation.defaults import DEFAULT_SEEDS, WALKFORWARD_LEARNING
    from nexlify.evaluation.walkforward import plan_jobs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", required=True, help="market files, pooled as the walk-forward does")
    parser.add_argument("--folds", type=int, default=4, help="the first folds to time (default 4)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seed jobs a fold runs (default 3)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as out:
        jobs = plan_jobs(args.data, out, dict(WALKFORWARD_LEARNING), [0], pool=True)
    groups: dict[int, list] = {}
    for job in jobs:
        groups.setdefault(job.fold, []).append(job)
    rows, saved, ratios = [], [], []
    for index, fold in enumerate(sorted(groups)[: args.folds]):
        members = groups[fold]
        order = (False, True) if index % 2 == 0 else (True, False)
        seconds = {cached: fold_seconds(members, args.seeds, cached) for cached in order}
        saved.append(seconds[False] - seconds[True])
        ratios.append(seconds[True] / seconds[False])
        markets = ", ".join(name for name, _ in members[0].members)
        rows.append([fold, markets, f"{seconds[False]:.2f}", f"{seconds[True]:.2f}", f"{saved[-1]:.2f}",
                     f"{ratios[-1]:.2f}"])
    print(f"machine: {machine()}")
    print(f"{args.seeds} seed jobs + 1 ensemble a fold, each backtesting every market's validation and test "
          "windows (the agent's place taken by buy-and-hold)")
    print(table(["fold", "markets", "no cache s", "cache s", "saved s", "cache / none"], rows))
    print(f"median saved a fold: {np.median(saved):.2f} s; median ratio {np.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
