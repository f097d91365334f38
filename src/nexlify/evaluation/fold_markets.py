"""A walk-forward fold's markets: their candles, the fold's splits of each, and backtests on each.

Shared by the jobs that train (``walkforward.run_fold_job``) and the seed ensembles that judge
(``fold_ensemble``). A job is a ``walkforward.FoldJob`` (its ``members``: the (market, data file)
pairs it trains on, and its ``windows``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from nexlify.data.market import MarketSlice, MarketSplits, join_markets, load_ohlcv
from nexlify.evaluation.backtest import Policy, run_policy
from nexlify.evaluation.baseline_cache import backtest_summary, baseline_summaries
from nexlify.evaluation.folds import fold_splits


@lru_cache(maxsize=4)
def load_market(data: str | None) -> pd.DataFrame:
    # The gap policy is applied to the span the folds use (check_gaps), not to all of history.
    return load_ohlcv(data, max_gap_bars=None, log_gaps=False)


def market_splits(job: Any, feature_set: str) -> dict[str, MarketSplits]:
    """Each market's fold splits (name -> splits), each scaled by its own training rows."""
    splits = {}
    for name, data in job.members:
        frame = load_market(data)
        splits[name] = fold_splits(frame, job.windows, source=frame.attrs["source"], feature_set=feature_set)
    return splits


def joined_splits(splits: dict[str, MarketSplits]) -> MarketSplits:
    """Several markets' splits end to end (``join_markets``): one path to train and to validate on."""
    if len(splits) == 1:
        return next(iter(splits.values()))
    first = next(iter(splits.values()))
    parts = {part: join_markets([getattr(s, part) for s in splits.values()])
             for part in ("train", "validation", "test")}
    return replace(first, **parts, source="+".join(s.source for s in splits.values()),
                   gaps=tuple(g for s in splits.values() for g in s.gaps))


def market_backtests(policy: Policy, splits: MarketSplits, config: Any,
                     baseline_cache: str | Path | None = None) -> dict[str, Any]:
    """``policy`` and every baseline on one market's validation and test windows, with the config's costs.

    Validation metrics are what a choice between configurations may look at; test metrics and
    curves are the verdict's. ``baseline_cache``: the fold's folder, where the baselines' backtests
    are kept for the fold's other jobs (``baseline_cache.baseline_summaries``).
    """
    costs = {"initial_balance": config.initial_balance, "fee": config.fee, "slippage": config.slippage}

    def on(market: MarketSlice) -> dict[str, dict[str, Any]]:
        agent = run_policy(market, policy, "agent", splits.periods_per_year, **costs)
        return {"agent": backtest_summary(agent),
                **baseline_summaries(market, splits.periods_per_year, costs, baseline_cache)}

    validation, test = on(splits.validation), on(splits.test)
    return {
        "rows": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "validation_backtest": {name: summary["metrics"] for name, summary in validation.items()},
        "test": {name: summary["metrics"] for name, summary in test.items()},
        "equity": {name: summary["equity"] for name, summary in test.items()},
    }


def by_market(results: dict[str, dict[str, Any]], pooled: bool) -> dict[str, Any]:
    """What an outcome holds of its backtests: a pooled job's per market, one market's as they are."""
    return {"markets": results} if pooled else next(iter(results.values()))


