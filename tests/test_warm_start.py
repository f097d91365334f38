"""The warm-start study (benchmarks/warm_start.py): a window carried in from the bars before it, by
hand, and its flat test scores are the walk-forward's own ensembles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_slice, synthetic_frame, tiny_config
from nexlify.env.actions import BUY, HOLD, SELL
from nexlify.evaluation.backtest import cash_policy, run_policy
from nexlify.evaluation.metrics import sharpe_ratio
from nexlify.evaluation.walkforward import plan_jobs, run_walkforward

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import warm_start  # noqa: E402

COSTS = {"initial_balance": 1_000.0, "fee": 0.001, "slippage": 0.0}


def test_joined_and_last_rows_keep_every_row_in_order():
    market = make_slice([100.0 + i for i in range(10)])
    before, window = warm_start.last_rows(make_slice([90.0, 91.0, 92.0]), 2), market
    both = warm_start.joined(before, window)
    assert list(both.close) == [91.0, 92.0, *market.close]
    assert (both.features[2:] == market.features).all() and len(both.timestamps) == 12


def test_a_position_bought_before_the_window_is_carried_into_it_without_a_fee():
    rng = np.random.default_rng(3)
    before = make_slice(100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 20))), seed=1)
    window = make_slice(100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 30))), seed=2)

    def buy_first(obs, t):
        return np.full(len(obs), BUY if t == 0 else HOLD)

    # Bought on the first candle before the window and held: the window's equity is the coin's value,
    # so its Sharpe is the closes' own (no fee inside the window).
    sharpe, level = warm_start.carried_sharpe(window, before, buy_first, 8760.0, **COSTS)
    assert level == 1.0
    assert sharpe == pytest.approx(sharpe_ratio(window.close, 8760.0))
    # Started in cash, holding pays the entry fee inside the window: a different curve.
    from_cash = run_policy(window, buy_first, "flat", 8760.0, **COSTS).metrics["sharpe"]
    assert from_cash != pytest.approx(sharpe)
    # Sold on the last candle before the window: it starts the window flat and stays there.
    def round_trip(obs, t):
        return np.full(len(obs), BUY if t == 0 else SELL if t == len(before) - 1 else HOLD)

    assert warm_start.carried_sharpe(window, before, round_trip, 8760.0, **COSTS) == (0.0, 0.0)
    assert warm_start.carried_sharpe(window, before, cash_policy, 8760.0, **COSTS) == (0.0, 0.0)


def test_the_studys_flat_test_scores_are_the_walkforwards_ensembles(tmp_path, capsys):
    data = tmp_path / "market.csv"
    synthetic_frame(24 * 12, seed=5).to_csv(data)
    overrides = tiny_config(episodes=2, eval_interval=1).to_dict()
    jobs = [job for job in plan_jobs([data], tmp_path / "run", overrides, [1, 2], test_days=2, train_days=5,
                                     validation_days=2) if job.fold == 1]
    run_walkforward(jobs, ensemble="mean_q", model_choice="all")  # trains keeping every snapshot
    best = run_walkforward(jobs, ensemble="mean_q", model_choice="best").folds[0]
    out = tmp_path / "warm.json"
    assert warm_start.main([str(tmp_path / "run"), "--jobs", "1", "--out", str(out)]) == 0
    assert "carried minus flat" in capsys.readouterr().out
    (record,) = json.loads(out.read_text())["records"]["run"]
    assert record["seeds"] == [1, 2]
    assert record["test"]["flat"] == pytest.approx(best["excess_sharpe"])
    for key in ("first_to_second", "second_to_first", "test"):
        assert record[key]["start_level"] in (0.0, 0.5, 1.0)
    assert warm_start.main(["--records", str(out)]) == 0
    assert "carried minus flat" in capsys.readouterr().out
    assert warm_start.main(["--records", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read records from")
    assert warm_start.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no finished jobs")
