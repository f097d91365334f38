"""The signal probe (benchmarks/signal_probe.py): returns ahead, the ridge, the IC and the band policy
by hand, a planted signal found out of sample, and a run over synthetic markets."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_slice, synthetic_frame
from nexlify.evaluation.backtest import buy_and_hold_policy, run_policy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import signal_probe  # noqa: E402


def test_returns_ahead_are_the_log_growth_to_the_close_h_bars_later():
    ahead = signal_probe.forward_log_returns(np.array([1.0, 2.0, 4.0, 8.0]), 2)
    assert ahead[:2] == pytest.approx([math.log(4.0), math.log(4.0)])
    assert np.isnan(ahead[2:]).all()
    assert np.isnan(signal_probe.forward_log_returns(np.array([1.0, 2.0]), 5)).all()


def test_the_ridge_recovers_an_exact_linear_target_and_shrinks_with_alpha():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 2))
    y = 2.0 * x[:, 0] - x[:, 1] + 0.5
    y[::50] = np.nan  # rows without a known target are left out, not fitted as zeros
    coef, intercept = signal_probe.fit_ridge(x, y, alpha=1e-9)
    assert coef == pytest.approx([2.0, -1.0], abs=1e-6) and intercept == pytest.approx(0.5, abs=1e-6)
    shrunk, _ = signal_probe.fit_ridge(x, y, alpha=1.0)
    assert 0.0 < abs(shrunk[0]) < 2.0 * 0.6 and 0.0 < abs(shrunk[1]) < 0.6


def test_the_quadratic_reader_adds_every_product_of_two_features_once():
    features = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert (signal_probe.expand(features, "linear") == features).all()
    # x1, x2, then x1*x1, x1*x2, x2*x2
    assert signal_probe.expand(features, "quadratic").tolist() == [[1.0, 2.0, 1.0, 2.0, 4.0],
                                                                   [3.0, -1.0, 9.0, -3.0, 1.0]]


def test_market_context_is_the_other_markets_mean_at_the_same_hour():
    a = make_slice([1.0, 2.0, 3.0], seed=1)
    b = make_slice([1.0, 2.0, 3.0], seed=2)
    c = make_slice([1.0, 2.0, 3.0], seed=3)
    b = type(b)(**{**b.__dict__, "timestamps": b.timestamps + np.timedelta64(1, "h")})  # hours 1, 2, 3
    joined = signal_probe.with_context({"A": a, "B": b, "C": c})
    width = a.features.shape[1]
    assert (joined["A"][:, :width] == a.features).all()
    # A's hour 0: only C has it; hours 1 and 2: B's rows 0 and 1 with C's rows 1 and 2
    assert joined["A"][0, width:] == pytest.approx(c.features[0])
    assert joined["A"][1:, width:] == pytest.approx((b.features[:2] + c.features[1:]) / 2)
    # B's hour 3: nobody else has it
    assert (joined["B"][2, width:] == 0.0).all()
    alone = signal_probe.with_context({"A": a})
    assert alone["A"].shape == (3, 2 * width) and (alone["A"][:, width:] == 0.0).all()


def test_calendar_columns_are_the_hour_and_weekday_one_hot():
    stamps = np.datetime64("2024-01-01T00:00", "ns") + np.array([0, 5, 24 * 6 + 23]) * np.timedelta64(1, "h")
    columns = signal_probe.calendar_columns(stamps)  # 2024-01-01 was a Monday
    assert columns.shape == (3, 31) and (columns.sum(axis=1) == 2).all()
    assert columns[0, 0] == columns[0, 24] == 1.0  # 00:00, Monday
    assert columns[1, 5] == columns[1, 24] == 1.0  # 05:00, Monday
    assert columns[2, 23] == columns[2, 24 + 6] == 1.0  # 23:00, Sunday


def test_an_hour_of_day_effect_is_found_through_the_calendar_columns():
    rng = np.random.default_rng(3)
    n = 24 * 200
    stamps = np.datetime64("2024-01-01T00:00", "ns") + np.arange(n) * np.timedelta64(1, "h")
    hours = np.arange(n) % 24
    # the bar after every 05:00 close rises on average; every other hour is noise
    steps = rng.normal(0.0, 0.004, n - 1) + np.where(hours[:-1] == 5, 0.006, 0.0)
    target = signal_probe.forward_log_returns(np.exp(np.concatenate([[0.0], np.cumsum(steps)])), 1)
    inputs = np.concatenate([rng.standard_normal((n, 9)), signal_probe.calendar_columns(stamps)], axis=1)
    half = n // 2
    coef, intercept = signal_probe.fit_ridge(inputs[:half], target[:half], alpha=1e-3)
    prediction = inputs[half:] @ coef + intercept
    assert np.argmax(prediction[:24]) == 5  # the reader ranks 05:00 first out of sample
    assert signal_probe.rank_ic(prediction, target[half:]) > 0.05


def test_rank_ic_is_a_rank_correlation_over_known_outcomes():
    prediction = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert signal_probe.rank_ic(prediction, np.exp(prediction)) == pytest.approx(1.0)
    assert signal_probe.rank_ic(prediction, -prediction**3) == pytest.approx(-1.0)
    assert signal_probe.rank_ic(prediction, np.array([1.0, 2.0, 3.0, np.nan, np.nan])) == pytest.approx(1.0)
    assert signal_probe.rank_ic(np.ones(5), prediction) == 0.0  # a constant prediction ranks nothing


def test_the_band_enters_above_it_leaves_below_minus_it_and_holds_between():
    wanted = signal_probe.band_positions(np.array([0.0005, 0.002, 0.0, -0.0005, -0.002, 0.0009, 0.0011]), 0.001)
    assert wanted.tolist() == [0, 1, 1, 1, 0, 0, 1]


def test_the_probe_policy_trades_the_wanted_positions_through_the_backtester():
    market = make_slice([100.0, 101.0, 103.0, 102.0, 104.0, 105.0])
    always = run_policy(market, signal_probe.probe_policy(np.ones(6, dtype=np.int64)), "probe", 8760.0)
    hold = run_policy(market, buy_and_hold_policy, "buy_and_hold", 8760.0)
    assert always.equity == pytest.approx(hold.equity)  # always long is buy-and-hold, fills and all
    timed = run_policy(market, signal_probe.probe_policy(np.array([0, 1, 1, 0, 0, 0])), "probe", 8760.0)
    assert timed.metrics["trades"] == 2 and timed.position[0].tolist() == [0, 0, 1, 1, 0, 0]


def test_trailing_volatility_uses_only_the_returns_up_to_the_row():
    close = np.exp(np.cumsum([0.0, 0.01, -0.02, 0.03, 0.0]))
    vol = signal_probe.trailing_volatility(close, bars=2)
    assert np.isnan(vol[:2]).all()
    assert vol[2:] == pytest.approx([np.std([0.01, -0.02], ddof=1), np.std([-0.02, 0.03], ddof=1),
                                     np.std([0.03, 0.0], ddof=1)])


def test_exposure_rules_by_hand():
    train = np.array([np.nan, 1.0, 2.0, 3.0, 4.0, 5.0])  # median 3, 80th percentile 4.2
    vol = np.array([1.0, 4.0, 5.0, np.nan])
    assert signal_probe.exposure("vol_filter", vol, train).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert signal_probe.exposure("vol_half", vol, train).tolist() == [1.0, 0.5, 0.5, 1.0]
    assert signal_probe.exposure("vol_scaled", vol, train) == pytest.approx([1.0, 0.75, 0.6, 1.0])
    with pytest.raises(ValueError, match="unknown"):
        signal_probe.exposure("psychic", vol, train)


def test_exposure_equity_charges_the_cost_on_every_change_of_exposure():
    close = np.array([100.0, 110.0, 99.0])
    equity = signal_probe.exposure_equity(close, np.array([1.0, 0.5, 0.0]), cost=0.01)
    # bar 1: all in (+10%, 1.0 of exposure bought); bar 2: half in (-10%, 0.5 sold)
    assert equity == pytest.approx([1.0, 1.09, 1.09 * (1.0 - 0.05 - 0.005)])
    assert signal_probe.exposure_equity(close, np.ones(3), cost=0.0) == pytest.approx(close / 100.0)


def test_a_planted_signal_is_found_out_of_sample_and_a_shuffled_one_is_not():
    # Feature 0 at row t sets the return from close t to close t+1: exactly what H = 1 asks.
    rng = np.random.default_rng(1)
    n = 4_000
    features = rng.standard_normal((n, 9))
    log_close = np.concatenate([[0.0], np.cumsum(0.004 * features[:-1, 0] + rng.normal(0.0, 0.004, n - 1))])
    train, held_out = slice(0, n // 2), slice(n // 2, n)
    target = signal_probe.forward_log_returns(np.exp(log_close), 1)
    coef, intercept = signal_probe.fit_ridge(features[train], target[train])
    found = signal_probe.rank_ic(features[held_out] @ coef + intercept, target[held_out])
    assert found > 0.5
    shuffled = rng.permutation(features[train])
    coef, intercept = signal_probe.fit_ridge(shuffled, target[train])
    assert abs(signal_probe.rank_ic(features[held_out] @ coef + intercept, target[held_out])) < 0.1


def test_a_run_over_two_synthetic_markets_writes_every_window_split_and_horizon(tmp_path, capsys):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"SYN{seed}_1h.csv"
        synthetic_frame(rows=24 * 100, seed=seed).to_csv(path)
        paths.append(str(path))
    out = tmp_path / "probe.json"
    code = signal_probe.main(["--data", *paths, "--budget", "smoke", "--folds", "1", "--horizons", "1", "24",
                              "--feature-sets", "basic", "--reader", "quadratic", "--context", "--out", str(out)])
    assert code == 0
    records = json.loads(out.read_text())["records"]
    keys = {(r["market"], r["split"], r["horizon"]) for r in records}
    assert keys == {(m, s, h) for m in ("SYN1_1h", "SYN2_1h") for s in signal_probe.SPLITS for h in (1, 24)}
    assert all(-1.0 <= r["ic"] <= 1.0 and 0.0 <= r["exposure"] <= 1.0 and r["reader"] == "quadratic"
               and r["context"] for r in records)
    assert all(r["excess_sharpe"] == pytest.approx(r["sharpe"] - r["buy_and_hold_sharpe"]) for r in records)
    exposures = json.loads(out.read_text())["exposure_rules"]
    assert {(r["rule"], r["split"]) for r in exposures} == {(rule, split) for rule in signal_probe.EXPOSURE_RULES
                                                            for split in signal_probe.SPLITS}
    assert all(0.0 <= r["exposure"] <= 1.0 for r in exposures)
    printed = capsys.readouterr().out
    assert "IC [95% CI]" in printed and "vol_half" in printed
    assert signal_probe.main(["--horizons", "0"]) == 2
    assert signal_probe.main(["--alpha", "0"]) == 2
    assert signal_probe.main(["--data", *paths, "--budget", "smoke", "--folds", "99"]) == 2  # more than it holds
    assert "error: the markets' common period holds" in capsys.readouterr().err
