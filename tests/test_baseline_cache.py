"""The baselines' backtests kept once per walk-forward fold: a read-back equals a fresh run, and a
cache never answers for other candles or costs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpers import random_walk_slice
from nexlify.evaluation import baseline_cache
from nexlify.evaluation.backtest import run_baselines
from nexlify.evaluation.baseline_cache import baseline_key, baseline_summaries
from nexlify.evaluation.fold_markets import market_backtests

COSTS = {"initial_balance": 10_000.0, "fee": 0.001, "slippage": 0.0005}
PPY = 8760.0


def _same(a, b) -> bool:
    """Equal, with NaN equal to NaN (a flat account's Sharpe may be undefined)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _no_recompute(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the baselines were run again instead of read back")

    monkeypatch.setattr(baseline_cache, "run_baselines", refuse)


def test_a_read_back_equals_a_fresh_run_and_is_not_recomputed(tmp_path, monkeypatch):
    market = random_walk_slice(200, seed=3)
    fresh = baseline_summaries(market, PPY, COSTS)
    # The summaries are the backtests' own numbers: buy-and-hold's metrics and its mean equity.
    direct = run_baselines(market, PPY, **COSTS)
    assert fresh["buy_and_hold"]["metrics"] == direct["buy_and_hold"].metrics
    assert fresh["random"]["equity"] == np.round(direct["random"].equity.mean(axis=0), 2).tolist()
    written = baseline_summaries(market, PPY, COSTS, cache_dir=tmp_path)
    [path] = tmp_path.glob("baselines_*.json")
    assert _same(written, fresh)
    _no_recompute(monkeypatch)
    assert _same(baseline_summaries(market, PPY, COSTS, cache_dir=tmp_path), fresh)
    # The cash account's Sharpe is undefined or zero; whichever, it comes back as it was computed.
    assert _same(json.loads(path.read_text())["baselines"]["cash"], fresh["cash"])


def test_other_candles_or_costs_get_a_file_of_their_own(tmp_path):
    market = random_walk_slice(200, seed=3)
    baseline_summaries(market, PPY, COSTS, cache_dir=tmp_path)
    moved = random_walk_slice(200, seed=3)
    moved.close[100] *= 1.01  # one candle differs
    assert baseline_key(moved, PPY, COSTS) != baseline_key(market, PPY, COSTS)
    baseline_summaries(moved, PPY, COSTS, cache_dir=tmp_path)
    dearer = baseline_summaries(market, PPY, {**COSTS, "fee": 0.002}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("baselines_*.json"))) == 3
    # Buy-and-hold buys at the next candle's open with the whole balance less the fee, so after one
    # candle the dearer fee's equity is 10,000 x close/(open x (1 + slippage)) x (1/1.002 - 1/1.001) less.
    cheap = baseline_summaries(market, PPY, COSTS, cache_dir=tmp_path)
    held = 10_000 * market.close[1] / (market.open[1] * (1 + COSTS["slippage"]))
    assert cheap["buy_and_hold"]["equity"][1] == pytest.approx(held / 1.001, abs=0.005)
    assert dearer["buy_and_hold"]["equity"][1] == pytest.approx(held / 1.002, abs=0.005)


@pytest.mark.parametrize("damage", ["torn", "other_key", "not_a_dict"])
def test_an_unreadable_or_foreign_cache_file_is_recomputed_and_replaced(tmp_path, damage):
    market = random_walk_slice(150, seed=4)
    fresh = baseline_summaries(market, PPY, COSTS)
    path = tmp_path / f"baselines_{baseline_key(market, PPY, COSTS)}.json"
    wrong = {"buy_and_hold": {"metrics": {"sharpe": 99.0}, "equity": [1.0]}}
    path.write_text({"torn": '{"key": "ab', "other_key": json.dumps({"key": "ab", "baselines": wrong}),
                     "not_a_dict": "[1, 2]"}[damage])
    assert _same(baseline_summaries(market, PPY, COSTS, cache_dir=tmp_path), fresh)
    assert json.loads(path.read_text())["key"] == baseline_key(market, PPY, COSTS)


def test_market_backtests_are_the_same_with_and_without_the_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from helpers import tiny_config
    from nexlify.evaluation.backtest import buy_and_hold_policy

    # What market_backtests reads of a MarketSplits.
    splits = SimpleNamespace(train=random_walk_slice(120, seed=1), validation=random_walk_slice(80, seed=2),
                             test=random_walk_slice(90, seed=3), periods_per_year=PPY)
    config = tiny_config()
    plain = market_backtests(buy_and_hold_policy, splits, config)
    first = market_backtests(buy_and_hold_policy, splits, config, baseline_cache=tmp_path)
    assert len(list(tmp_path.glob("baselines_*.json"))) == 2  # the validation window and the test window
    _no_recompute(monkeypatch)
    again = market_backtests(buy_and_hold_policy, splits, config, baseline_cache=tmp_path)
    assert _same(first, plain) and _same(again, plain)
    # The agent here is buy-and-hold itself, so its backtest equals the cached baseline's.
    assert plain["test"]["agent"] == again["test"]["buy_and_hold"]
    assert plain["equity"]["agent"] == again["equity"]["buy_and_hold"]
