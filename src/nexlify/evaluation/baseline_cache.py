"""The baselines' backtests of one window, computed once per walk-forward fold folder.

Every seed's job of a fold and the fold's seed ensemble backtest the same baselines on the same
validation and test windows with the same costs: the results depend on the candles and the costs,
never on the agent. The first to need them writes them beside the fold's seed folders; the rest read
them back. The file's name and its stored key are a digest of the candles, the costs and the
baselines' settings, so a cache never answers for other data or costs, and an unreadable one is
recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from nexlify.data.market import OHLCV_COLUMNS, MarketSlice
from nexlify.evaluation.backtest import MA_FAST, MA_SLOW, RANDOM_SEEDS, BacktestResult, run_baselines
from nexlify.io import write_text_atomic

CACHE_VERSION = 1


def backtest_summary(result: BacktestResult) -> dict[str, Any]:
    """What a walk-forward keeps of a backtest: its metrics and the mean equity over its accounts
    (rounded to the cent to keep files small)."""
    return {"metrics": result.metrics, "equity": np.round(result.equity.mean(axis=0), 2).tolist()}


def baseline_key(market: MarketSlice, periods_per_year: float, costs: dict[str, float]) -> str:
    """A digest of everything a baseline's backtest of ``market`` depends on."""
    digest = hashlib.sha256()
    for name in ("timestamps", *OHLCV_COLUMNS):
        digest.update(np.ascontiguousarray(getattr(market, name)).tobytes())
    settings = {"version": CACHE_VERSION, "periods_per_year": float(periods_per_year),
                "costs": {k: float(v) for k, v in costs.items()},
                "random_seeds": RANDOM_SEEDS, "moving_average": [MA_FAST, MA_SLOW]}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def baseline_summaries(market: MarketSlice, periods_per_year: float, costs: dict[str, float],
                       cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every baseline's ``backtest_summary`` on ``market``: read from ``cache_dir`` when an earlier
    job wrote it there, else computed (and written there when ``cache_dir`` is given)."""
    if cache_dir is None:
        return _computed(market, periods_per_year, costs)
    key = baseline_key(market, periods_per_year, costs)
    path = Path(cache_dir) / f"baselines_{key}.json"
    stored = _read(path)
    if stored is not None and stored.get("key") == key and isinstance(stored.get("baselines"), dict):
        return stored["baselines"]
    summaries = _computed(market, periods_per_year, costs)
    # Plain json keeps NaN and infinities as they were computed, so a read-back equals a fresh run.
    write_text_atomic(path, json.dumps({"key": key, "baselines": summaries}))
    return summaries


def _computed(market: MarketSlice, periods_per_year: float, costs: dict[str, float]) -> dict[str, dict[str, Any]]:
    results = run_baselines(market, periods_per_year, **costs)
    return {name: backtest_summary(result) for name, result in results.items()}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable, or not JSON (a torn or edited file)
        return None
    return stored if isinstance(stored, dict) else None
