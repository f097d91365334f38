"""Which runs make a fold's seed ensemble: how many seeds, and their best or last checkpoints.

Run after learning_levers.py, on its --out folder; nothing is trained. For one lever's finished jobs,
each member set (CHECKPOINTS:SEEDS, e.g. ``best:3`` = the best models of seeds 0-2, ``best+last:5`` =
the best and the final models of seeds 0-4) acts as one mean-Q ensemble per fold, backtested on
each market's validation and test windows. Printed: validation excess Sharpe over buy-and-hold per
set, each set paired per (market, fold) against the set of the same checkpoints with the fewest
seeds, and the test row as it fell (never used to choose). The best models were chosen on these
validation windows, so only sets of the same checkpoints compare on validation; the last ones were
never chosen on.

    PYTHONPATH=src python benchmarks/ensemble_members.py --lever pooled_penalty --folds 7 --seeds 5 \
        --out runs/screen --sets best:3 best:5 last:3 last:5 best+last:3 best+last:5
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402
from learning_levers import BUDGETS, LEVERS, MARKETS, SHARED_DATA, lever_jobs  # noqa: E402

CHECKPOINTS = {"best": "best_model.pth", "last": "final_model.pth"}


def parse_set(text: str) -> tuple[tuple[str, ...], int]:
    """``"best+last:5"`` -> (("best", "last"), 5); ValueError naming the problem."""
    kinds, _, seeds = text.partition(":")
    names = tuple(kinds.split("+"))
    if not seeds.isdigit() or int(seeds) < 1 or not names or any(n not in CHECKPOINTS for n in names):
        raise ValueError(f"member set {text!r}: write CHECKPOINTS:SEEDS, checkpoints from "
                         f"{'+'.join(CHECKPOINTS)}, e.g. best:3 or best+last:5")
    return names, int(seeds)


def fold_rows(members: dict[int, Any], sets: dict[str, tuple[tuple[str, ...], int]]) -> list[dict[str, Any]]:
    """Each set's ensemble on one fold: a row per (set, market) with validation and test metrics."""
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.ensemble import ensemble_policy
    from nexlify.evaluation.fold_markets import market_backtests, market_splits

    first = members[min(members)]
    config = TrainingConfig().with_overrides({**first.config_overrides, "data_days": None})
    markets = market_splits(first, config.feature_set)
    rows = []
    for name, (kinds, seeds) in sets.items():
        agents = [AdaptiveDQNAgent.from_checkpoint(Path(members[seed].output_dir) / CHECKPOINTS[kind], device="cpu")
                  for seed in sorted(members)[:seeds] for kind in kinds]
        policy = ensemble_policy(agents, "mean_q")
        for market, splits in markets.items():
            result = market_backtests(policy, splits, config)
            rows.append({"set": name, "market": market, "fold": first.fold,
                         "validation": result["validation_backtest"], "test": result["test"]})
    return rows


def report(rows: list[dict[str, Any]], sets: dict[str, tuple[tuple[str, ...], int]]) -> str:
    """The validation table (paired against the fewest seeds of the same checkpoints) and the test table."""
    from nexlify.evaluation.verdict import bootstrap_mean_ci

    def per_window(name: str, part: str, value: Any) -> dict[tuple[str, int], Any]:
        return {(r["market"], r["fold"]): value(r[part]) for r in rows if r["set"] == name}

    def excess(metrics: dict[str, Any]) -> float:
        return metrics["agent"]["sharpe"] - metrics["buy_and_hold"]["sharpe"]

    validation, test = [], []
    for name, (kinds, seeds) in sets.items():
        mine = per_window(name, "validation", excess)
        base = min((other for other, (k, _) in sets.items() if k == kinds), key=lambda other: sets[other][1])
        paired = ""
        if base != name:
            theirs = per_window(base, "validation", excess)
            diffs = [mine[key] - theirs[key] for key in mine]
            low, high = bootstrap_mean_ci(diffs, clusters=(fold for _, fold in mine))  # a fold's markets together
            better = sum(d > 0 for d in diffs)
            paired = f"{np.mean(diffs):+.2f} [{low:+.2f}, {high:+.2f}] vs {base}, {better}/{len(diffs)}"
        validation.append([name, len(kinds) * seeds, f"{np.mean(list(mine.values())):+.2f}", paired])
        outcome = per_window(name, "test", lambda m: m)
        n = len(outcome)
        test_excess = [excess(m) for m in outcome.values()]
        low, high = bootstrap_mean_ci(test_excess, clusters=(fold for _, fold in outcome))
        test.append([name, f"{sum(x > 0 for x in test_excess)}/{n}",
                     f"{sum(m['agent']['sharpe'] > m['ma_crossover']['sharpe'] for m in outcome.values())}/{n}",
                     f"{np.mean(test_excess):+.2f} [{low:+.2f}, {high:+.2f}]",
                     f"{sum(m['agent']['max_drawdown'] <= m['buy_and_hold']['max_drawdown'] for m in outcome.values())}"
                     f"/{n}"])
    return (table(["set", "members", "val excess Sharpe", "paired on validation [95% CI], better"], validation)
            + "\n\ntest, as it fell (never used to choose):\n"
            + table(["set", "beat B&H", "beat MA", "excess Sharpe [95% CI]", "DD<=B&H"], test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lever", required=True, help="the lever whose jobs learning_levers.py trained")
    parser.add_argument("--out", required=True, help="learning_levers.py's --out folder")
    parser.add_argument("--data", nargs="+", default=[str(SHARED_DATA / f"{m}.csv") for m in MARKETS])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="standard")
    parser.add_argument("--folds", type=int, default=None, help="the plan's last N folds (default: the budget's)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds trained per fold (default: the budget's)")
    parser.add_argument("--sets", nargs="+", default=["best:3", "best:5", "last:3", "last:5"],
                        help="member sets CHECKPOINTS:SEEDS (default: best:3 best:5 last:3 last:5)")
    args = parser.parse_args(argv)
    try:
        sets = {text: parse_set(text) for text in args.sets}
        if args.lever not in LEVERS:
            raise ValueError(f"unknown lever {args.lever!r}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    budget = BUDGETS[args.budget]
    budget = replace(budget, folds=args.folds or budget.folds, seeds=args.seeds or budget.seeds)
    if max(seeds for _, seeds in sets.values()) > budget.seeds:
        print(f"error: a member set uses more seeds than --seeds {budget.seeds}", file=sys.stderr)
        return 2
    from nexlify.errors import NexlifyError

    try:
        jobs = lever_jobs(args.lever, args.data, budget, Path(args.out).resolve())
    except NexlifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = [job for job in jobs if not (Path(job.output_dir) / CHECKPOINTS["last"]).is_file()]
    if missing:
        print(f"error: {len(missing)} of {len(jobs)} jobs have no models in {args.out}; run learning_levers.py "
              f"--levers {args.lever} --folds {budget.folds} --seeds {budget.seeds} --out {args.out} first",
              file=sys.stderr)
        return 2
    by_fold: dict[int, dict[int, Any]] = {}
    for job in jobs:
        by_fold.setdefault(job.fold, {})[job.seed] = job
    print(f"{args.lever}: {len(by_fold)} fold(s) x {budget.seeds} seed(s); {machine()}\n")
    rows = [row for members in by_fold.values() for row in fold_rows(members, sets)]
    print(report(rows, sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
