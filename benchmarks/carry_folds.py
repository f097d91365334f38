"""Keep the previous retrain's models in the ensemble: a fold's seeds together with the fold before's.

A walk-forward retrains every test-window length (90 days); the models of fold k-1 were trained on
a window that ended 90 days before fold k's, and nothing of fold k's validation or test window was
seen by them. Live, this is a trader who retrains each quarter and keeps last quarter's models in the
vote. It costs no training: the fold before's models are already there. Whether the staler members
add diversity worth more than their staleness is what this measures, on a finished `nexlify
walkforward --model-choice best` run (pooled; the default before session 25), nothing retrained:

* ``fold``: fold k's seeds, mean-Q ensemble (what the walk-forward judges; its validation numbers
  must equal the stored ``ensemble_mean_q.json``, checked);
* ``carry``: fold k's seeds and fold k-1's seeds, mean-Q ensemble;
* ``wide`` (with ``--other FOLDER``, the same configuration run with other seeds): fold k's seeds of
  both runs, the same member count as ``carry`` with no staleness.

Each member sees the market features scaled by its own fold's scaler (fitted on its own training
rows), as it did in training. Two lenses: ``best`` (each seed's model chosen on fold k's or, for
carried members, fold k-1's validation window) and ``last`` (the final models, never chosen on).
Fold k's best models were chosen on the window they are judged on here, the carried ones were not, so
on validation the ``best`` lens favours ``fold``; ``last`` is the fair one.

Printed: per lens, ``carry`` (and ``wide``) minus ``fold`` in excess Sharpe over buy-and-hold per
(market, window) on validation (t interval over calendar windows), then the same on test as it fell.

    PYTHONPATH=src python benchmarks/carry_folds.py runs/wf_s45 --other runs/wf_s48
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

SEED_FILE = "fold_outcome.json"
MODEL_FILES = {"best": "best_model.pth", "last": "final_model.pth"}


def fold_seed_dirs(folder: Path) -> dict[int, list[tuple[dict[str, Any], Path]]]:
    """Fold -> [(job dict, seed folder)] of a pooled walk-forward run, seeds in order."""
    folds: dict[int, list[tuple[dict[str, Any], Path]]] = {}
    for path in sorted(folder.glob(f"pooled/fold_*/seed_*/{SEED_FILE}")):
        job = json.loads(path.read_text())["job"]
        folds.setdefault(int(job["fold"]), []).append((job, path.parent))
    if not folds:
        raise ValueError(f"{folder}: no pooled fold outcomes (pooled/fold_*/seed_*/{SEED_FILE}); give the "
                         "--checkpoint-dir of a finished pooled `nexlify walkforward`")
    return {fold: sorted(members, key=lambda m: m[0]["seed"]) for fold, members in sorted(folds.items())}


def member_scaler(frame: Any, window: Any, feature_set: str, fallback: Any) -> Any:
    """The scaler a member's fold fitted on this market's training rows; ``fallback`` (the judged
    fold's) where the market's history does not reach back to that fold's training window."""
    from nexlify.errors import DataError
    from nexlify.evaluation.folds import fold_splits

    try:
        return fold_splits(frame, window, feature_set=feature_set).scaler
    except DataError:
        return fallback


def ensemble_backtest(agents: Sequence[Any], features: Sequence[np.ndarray], market: Any, splits: Any,
                      config: Any) -> dict[str, float]:
    """Mean-Q ensemble of ``agents``, member i seeing market features ``features[i]`` (rows of ``market``)."""
    from nexlify.env.actions import to_orders
    from nexlify.evaluation.backtest import position_levels, run_policy
    from nexlify.evaluation.ensemble import check_members, combine_q_values

    action_mode = check_members(agents)
    q_functions = [agent.host_q_function() for agent in agents]
    n_market = market.features.shape[1]

    def policy(obs: np.ndarray, t: int) -> np.ndarray:
        states = np.ascontiguousarray(obs, dtype=np.float32)
        q_values = []
        for q, rows in zip(q_functions, features, strict=True):
            own = states.copy()
            own[:, :n_market] = rows[t]
            q_values.append(q(own))
        return to_orders(combine_q_values(np.stack(q_values), "mean_q"), position_levels(states), action_mode,
                         np.where)

    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}
    return run_policy(market, policy, "agent", splits.periods_per_year, **costs).metrics


def fold_rows(runs: dict[str, dict[int, list[tuple[dict[str, Any], Path]]]], fold: int,
              lens: str) -> list[dict[str, Any]]:
    """One row per market of ``fold``: validation and test excess Sharpe of each member set."""
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig
    from nexlify.evaluation.backtest import buy_and_hold_policy, run_policy
    from nexlify.evaluation.fold_markets import load_market
    from nexlify.evaluation.folds import fold_splits
    from nexlify.evaluation.walkforward import FoldJob

    main = next(iter(runs.values()))
    members = {"fold": main[fold]}
    if fold - 1 in main:
        members["carry"] = main[fold] + main[fold - 1]
    if len(runs) > 1:
        members["wide"] = [m for run in runs.values() for m in run.get(fold, [])]
    job = FoldJob.from_dict(main[fold][0][0])
    config = TrainingConfig().with_overrides({**job.config_overrides, "data_days": None})
    feature_set = config.feature_set
    agents = {path: AdaptiveDQNAgent.from_checkpoint(path / MODEL_FILES[lens], device="cpu")
              for ms in members.values() for _, path in ms}
    rows = []
    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}
    for name, data in job.members:
        frame = load_market(data)
        splits = fold_splits(frame, job.windows, source=name, feature_set=feature_set)
        # Every member sees this fold's rows scaled as its own fold's training taught it: one splitting
        # per member fold (its seeds share the scaler), not per member.
        by_fold = {fold: splits}
        for ms in members.values():
            for member_job, _ in ms:
                fold_of = int(member_job["fold"])
                if fold_of not in by_fold:
                    scaler = member_scaler(frame, FoldJob.from_dict(member_job).windows, feature_set, splits.scaler)
                    by_fold[fold_of] = fold_splits(frame, job.windows, source=name, feature_set=feature_set,
                                                   scaler=scaler)
        row: dict[str, Any] = {"market": name, "fold": fold, "window": job.validation_start}
        for part in ("validation", "test"):
            market = getattr(splits, part)
            hold = run_policy(market, buy_and_hold_policy, "buy_and_hold", splits.periods_per_year,
                              **costs).metrics["sharpe"]
            for set_name, ms in members.items():
                features = [getattr(by_fold[int(member_job["fold"])], part).features for member_job, _ in ms]
                metrics = ensemble_backtest([agents[path] for _, path in ms], features, market, splits, config)
                row[f"{set_name}_{part}"] = metrics["sharpe"] - hold
                row[f"{set_name}_{part}_trades"] = metrics["trades"]
        rows.append(row)
    return rows


def stored_validation(folder: Path, fold: int) -> dict[str, float]:
    """The walk-forward's own fold ensemble, validation excess Sharpe per market (the ``fold`` set's check)."""
    outcome = json.loads((folder / "pooled" / f"fold_{fold:02d}" / "ensemble_mean_q.json").read_text())
    scores = {market: view["validation_backtest"] for market, view in outcome["markets"].items()}
    return {market: s["agent"]["sharpe"] - s["buy_and_hold"]["sharpe"] for market, s in scores.items()}


def paired(rows: list[dict[str, Any]], lever: str, part: str) -> str:
    """``lever`` minus ``fold`` on ``part``: mean, t interval over calendar windows, windows better."""
    from nexlify.evaluation.verdict import cluster_t_interval

    pairs = [(row[f"{lever}_{part}"] - row[f"fold_{part}"], row["window"]) for row in rows if f"{lever}_{part}" in row]
    if not pairs:
        return "n/a"
    diffs = [d for d, _ in pairs]
    low, high = cluster_t_interval(diffs, [w for _, w in pairs])
    return f"{np.mean(diffs):+.2f} t [{low:+.2f}, {high:+.2f}] {sum(d > 0 for d in diffs)}/{len(diffs)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a finished pooled `nexlify walkforward` --checkpoint-dir")
    parser.add_argument("--other", type=Path, help="the same configuration run with other seeds (adds `wide`)")
    parser.add_argument("--lens", nargs="+", choices=tuple(MODEL_FILES), default=["last", "best"])
    parser.add_argument("--folds", type=int, nargs="+", help="only these folds (default: all)")
    parser.add_argument("--out", type=Path, help="write the per-window rows here as JSON")
    args = parser.parse_args(argv)
    try:
        runs = {str(args.folder): fold_seed_dirs(args.folder)}
        if args.other:
            runs[str(args.other)] = fold_seed_dirs(args.other)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"machine: {machine()}")
    results: dict[str, list[dict[str, Any]]] = {}
    folds = args.folds or sorted(next(iter(runs.values())))
    for lens in args.lens:
        rows: list[dict[str, Any]] = []
        for fold in folds:
            found = fold_rows(runs, fold, lens)
            if lens == "best":
                stored = stored_validation(args.folder, fold)
                for row in found:  # the rebuilt `fold` ensemble is the walk-forward's own
                    assert abs(row["fold_validation"] - stored[row["market"]]) < 1e-6, (row, stored)
            rows += found
            print(f"  {lens} fold {fold}: {len(found)} market(s)", flush=True)
        results[lens] = rows
        levers = ["carry"] + (["wide"] if args.other else [])
        table_rows = [[lever, paired(rows, lever, "validation"), paired(rows, lever, "test")] for lever in levers]
        print(f"== {lens} models: minus `fold` in excess Sharpe over buy-and-hold (mean, t interval, better)")
        print(table(["set", "validation", "test (as it fell)"], table_rows))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
