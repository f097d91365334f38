"""Which runs make a fold's seed ensemble, and how they are combined.

Run after learning_levers.py, on its --out folder; nothing is trained. For one lever's finished jobs,
each member set (CHECKPOINTS:SEEDS, e.g. ``best:3`` = the best models of seeds 0-2, ``best+last:5`` =
the best and the final models of seeds 0-4) acts as one ensemble per fold, backtested on each
market's validation and test windows. Ways to combine the members (``--combine``, first is the
reference): ``mean_q`` and ``vote`` (``nexlify walkforward --ensemble``: one account, one decision),
and ``portfolio``: each member trades its own equal share of the capital, so the position is the
share of members that want to be long (a trade-off the single-account modes cannot express: mean Q
of agents that each need a margin to switch is stickier than any of them).

Printed: validation excess Sharpe over buy-and-hold per (set, combination), paired per (market, fold)
against the set of the same checkpoints with the fewest seeds, or, for another combination, against
the same set combined the reference way; then the test rows as they fell (never used to choose). The
best models were chosen on these validation windows, so only sets of the same checkpoints compare on
validation; the last ones were never chosen on.

    PYTHONPATH=src python benchmarks/ensemble_members.py --lever pooled_penalty --folds 7 --seeds 5 \
        --out runs/screen --sets best:3 best:5 last:3 last:5 best+last:3 best+last:5 --combine mean_q portfolio
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
COMBINES = ("mean_q", "vote", "portfolio")
MemberSet = tuple[tuple[str, ...], int, str]  # checkpoints, seeds, how they are combined


def parse_set(text: str) -> tuple[tuple[str, ...], int]:
    """``"best+last:5"`` -> (("best", "last"), 5); ValueError naming the problem."""
    kinds, _, seeds = text.partition(":")
    names = tuple(kinds.split("+"))
    if not seeds.isdigit() or int(seeds) < 1 or not names or any(n not in CHECKPOINTS for n in names):
        raise ValueError(f"member set {text!r}: write CHECKPOINTS:SEEDS, checkpoints from "
                         f"{'+'.join(CHECKPOINTS)}, e.g. best:3 or best+last:5")
    return names, int(seeds)


def portfolio_backtest(agents: list[Any], market: Any, periods_per_year: float, **costs: float) -> dict[str, Any]:
    """Every member trades its own account, an equal share of the capital; metrics of their sum.

    Fees and slippage are proportional, so N accounts of the full balance averaged are exactly N
    accounts of 1/N of it summed.
    """
    from nexlify.env.actions import to_orders
    from nexlify.evaluation.backtest import long_positions, run_policy
    from nexlify.evaluation.metrics import compute_metrics

    q_functions = [agent.host_q_function() for agent in agents]
    mode = agents[0].config.action_mode

    def policy(obs: np.ndarray, _t: int) -> np.ndarray:
        states = np.ascontiguousarray(obs, dtype=np.float32)
        chosen = np.array([q(states[i:i + 1]).argmax(axis=1)[0] for i, q in enumerate(q_functions)])
        return to_orders(chosen, long_positions(states), mode, np.where)

    result = run_policy(market, policy, "portfolio", periods_per_year, num_accounts=len(agents), **costs)
    equity = result.equity.mean(axis=0)
    fees = result.metrics["fees_paid"]  # the mean over the accounts: the shared portfolio's fees
    return compute_metrics(equity, (result.position.mean(axis=0) > 0).astype(np.int8), periods_per_year,
                           fees, int(round(result.metrics["trades"] * len(agents))))


def fold_rows(members: dict[int, Any], sets: dict[str, MemberSet]) -> list[dict[str, Any]]:
    """Each set's ensemble on one fold: a row per (set, market) with validation and test metrics."""
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.backtest import run_baselines
    from nexlify.evaluation.ensemble import ensemble_policy
    from nexlify.evaluation.fold_markets import market_backtests, market_splits

    first = members[min(members)]
    config = TrainingConfig().with_overrides({**first.config_overrides, "data_days": None})
    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}
    markets = market_splits(first, config.feature_set)
    rows = []
    for name, (kinds, seeds, combine) in sets.items():
        agents = [AdaptiveDQNAgent.from_checkpoint(Path(members[seed].output_dir) / CHECKPOINTS[kind], device="cpu")
                  for seed in sorted(members)[:seeds] for kind in kinds]
        for market, splits in markets.items():
            if combine == "portfolio":
                result = {part: {"agent": portfolio_backtest(agents, window, splits.periods_per_year, **costs),
                                 **{baseline: r.metrics for baseline, r in
                                    run_baselines(window, splits.periods_per_year, **costs).items()}}
                          for part, window in (("validation_backtest", splits.validation), ("test", splits.test))}
            else:
                result = market_backtests(ensemble_policy(agents, combine), splits, config)
            rows.append({"set": name, "market": market, "fold": first.fold,
                         "validation": result["validation_backtest"], "test": result["test"]})
    return rows


def paired_base(name: str, sets: dict[str, MemberSet]) -> str:
    """What ``name`` is paired against: the same members combined the reference way (the first
    ``--combine``), or, for that way, the set of the same checkpoints with the fewest seeds."""
    kinds, seeds, combine = sets[name]
    reference = next(iter(sets.values()))[2]
    if combine != reference:
        return next(other for other, s in sets.items() if s == (kinds, seeds, reference))
    return min((other for other, s in sets.items() if s[0] == kinds and s[2] == combine),
               key=lambda other: sets[other][1])


def report(rows: list[dict[str, Any]], sets: dict[str, MemberSet]) -> str:
    """The validation table (each set paired against ``paired_base``) and the test table."""
    from nexlify.evaluation.verdict import bootstrap_mean_ci

    def per_window(name: str, part: str, value: Any) -> dict[tuple[str, int], Any]:
        return {(r["market"], r["fold"]): value(r[part]) for r in rows if r["set"] == name}

    def excess(metrics: dict[str, Any]) -> float:
        return metrics["agent"]["sharpe"] - metrics["buy_and_hold"]["sharpe"]

    validation, test = [], []
    for name, (kinds, seeds, _) in sets.items():
        mine = per_window(name, "validation", excess)
        base = paired_base(name, sets)
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
    parser.add_argument("--combine", nargs="+", choices=COMBINES, default=["mean_q"],
                        help="ways to combine each set, the first the reference (default: mean_q)")
    args = parser.parse_args(argv)
    try:
        combines = list(dict.fromkeys(args.combine))
        # The reference combination keeps the set's own name; the others are named SET/COMBINE.
        sets = {text if combine == combines[0] else f"{text}/{combine}": (*parse_set(text), combine)
                for combine in combines for text in args.sets}
        if args.lever not in LEVERS:
            raise ValueError(f"unknown lever {args.lever!r}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    budget = BUDGETS[args.budget]
    budget = replace(budget, folds=args.folds or budget.folds, seeds=args.seeds or budget.seeds)
    if max(seeds for _, seeds, _ in sets.values()) > budget.seeds:
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
    print(f"{args.lever}: {len(by_fold)} fold(s) x {budget.seeds} seed(s), combined by {', '.join(combines)}; "
          f"{machine()}\n")
    rows = [row for members in by_fold.values() for row in fold_rows(members, sets)]
    print(report(rows, sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
