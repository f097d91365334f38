"""The ``vol_scaled`` reward: log growth (less the switching penalty) per unit of recent volatility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import random_walk_slice
from nexlify.config import TrainingConfig
from nexlify.env.accounts import Accounts
from nexlify.env.actions import BUY, HOLD, SELL
from nexlify.env.rewards import VOL_SCALE_BARS, volatility_reward_scale
from nexlify.env.trading import TradingEnvironment


def test_scale_by_hand_on_a_short_window() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0, 108.9])
    r = np.log(close[1:] / close[:-1])  # r1..r4: +ln1.1, -ln(110/99), 0, +ln1.1
    # window 2, at least 2 returns: sigma is defined from row 2 on, |a - b| / 2 for two returns a, b.
    sigma = np.array([np.nan, np.nan, abs(r[0] - r[1]) / 2, abs(r[1] - r[2]) / 2, abs(r[2] - r[3]) / 2])
    typical = np.median(sigma[2:])
    expected = np.concatenate([[1.0, 1.0], typical / np.maximum(sigma[2:], 0.25 * typical)])
    np.testing.assert_allclose(volatility_reward_scale(close, window=2, min_bars=2), expected, rtol=1e-12)


def test_scale_is_causal_and_floored() -> None:
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
    before = volatility_reward_scale(close, window=50, min_bars=10, floor=0.25)
    changed = close.copy()
    changed[400:] *= np.exp(np.cumsum(rng.normal(0, 0.05, 200)))  # a wild future
    after = volatility_reward_scale(changed, window=50, min_bars=10, floor=0.25)
    # Rows before the change differ only through the slice-wide constant (the median), by one factor.
    ratio = after[:400][10:] / before[:400][10:]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    assert np.all(before <= 4.0 + 1e-12) and np.all(before > 0)
    flat = volatility_reward_scale(np.full(100, 5.0))
    np.testing.assert_array_equal(flat, np.ones(100))  # prices that never move: scale 1


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_reward_is_the_penalised_log_return_times_the_scale_of_the_decision_row(backend: str) -> None:
    market = random_walk_slice(VOL_SCALE_BARS + 60, seed=5)
    scale = volatility_reward_scale(market.close)
    plain = Accounts(market, 2, trade_penalty=0.003, backend=backend)
    scaled = Accounts(market, 2, trade_penalty=0.003, backend=backend, reward_mode="vol_scaled")
    rng = np.random.default_rng(0)
    for t in range(len(market) - 2):
        actions = rng.choice([HOLD, BUY, SELL], size=2)
        if backend == "torch":
            import torch

            actions = torch.as_tensor(actions)
        a, b = plain.step(actions), scaled.step(actions)
        reward_a = np.asarray(a.reward.cpu() if backend == "torch" else a.reward, dtype=np.float64)
        reward_b = np.asarray(b.reward.cpu() if backend == "torch" else b.reward, dtype=np.float64)
        np.testing.assert_allclose(reward_b, reward_a * scale[t], rtol=1e-5, atol=1e-9)
        equity_a = np.asarray(a.info["equity"], dtype=np.float64)
        np.testing.assert_array_equal(equity_a, np.asarray(b.info["equity"], dtype=np.float64))


def test_single_env_matches_by_hand() -> None:
    market = random_walk_slice(VOL_SCALE_BARS + 10, seed=6)
    scale = volatility_reward_scale(market.close)
    env = TradingEnvironment(market, reward_mode="vol_scaled", trade_penalty=0.002)
    env.reset()
    t = 0
    equity = 10_000.0
    for action in [BUY, HOLD, HOLD, SELL, HOLD]:
        _, reward, _, _, info = env.step(action)
        traded = action in (BUY, SELL)
        expected = (math.log(info["equity"] / equity) - 0.002 * traded) * scale[t]
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
        equity, t = info["equity"], t + 1


def test_config_accepts_vol_scaled_and_rejects_unknown() -> None:
    assert TrainingConfig(reward_mode="vol_scaled").reward_mode == "vol_scaled"
    with pytest.raises(Exception, match="reward_mode"):
        TrainingConfig(reward_mode="volatility")
