"""TradingEnvironment: one account trading one market, as a Gymnasium ``Env``.

Timing (no look-ahead): the observation at row t holds features of the candle that closed at t.
The action chosen on it is filled at the open of candle t+1 and the account is marked at the close
of t+1, which is the next observation. An episode runs from the first to the last row of its
market slice: running out of data is truncation; equity falling to ``ruin_fraction`` of the
initial balance is termination.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from nexlify.config import REWARD_MODES
from nexlify.data.features import ACCOUNT_FEATURE_NAMES, FeatureScaler
from nexlify.data.market import MarketSlice
from nexlify.env.portfolio import Portfolio
from nexlify.env.rewards import differential_sharpe_step
from nexlify.errors import ConfigError

HOLD, BUY, SELL = 0, 1, 2
ACTION_NAMES = ("hold", "buy", "sell")


def resolve_market(
    data: MarketSlice | pd.DataFrame | str | Path | None, scaler: FeatureScaler | None = None
) -> tuple[MarketSlice, FeatureScaler | None]:
    """Turn a MarketSlice, a DataFrame, a file path or None (bundled data) into a MarketSlice.

    A MarketSlice is used as it is (its features are already normalised). Otherwise, without a
    ``scaler``, the feature scaler is fitted on this data itself; to run on held-out data pass the
    scaler fitted on the training data.
    """
    from nexlify.data.features import WARMUP_BARS, compute_market_features
    from nexlify.data.market import load_ohlcv, market_slice_from_frame

    if isinstance(data, MarketSlice):
        return data, scaler
    frame = load_ohlcv(data, min_rows=WARMUP_BARS + 2)
    if scaler is None:
        scaler = FeatureScaler().fit(compute_market_features(frame)[WARMUP_BARS:])
    return market_slice_from_frame(frame, scaler), scaler


class TradingEnvironment(gym.Env):
    """Long-only spot trading of one market with fees and slippage. Actions: 0 hold, 1 buy, 2 sell.

    Buy when already long and sell when flat are no-ops, counted in ``info['invalid_actions']``.
    Reward: per ``reward_mode`` (see ``nexlify.env.rewards``), net of all costs.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        data: MarketSlice | pd.DataFrame | str | Path | None = None,
        initial_balance: float = 10_000.0,
        fee: float = 0.001,
        slippage: float = 0.0005,
        reward_mode: str = "log_return",
        scaler: FeatureScaler | None = None,
        ruin_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be one of {', '.join(REWARD_MODES)}; got {reward_mode!r}")
        if not initial_balance > 0:
            raise ConfigError(f"initial_balance must be > 0, got {initial_balance!r}")
        self.market, self.scaler = resolve_market(data, scaler)
        if len(self.market) < 2:
            raise ConfigError("the market slice needs at least 2 rows to take one step")
        self.portfolio = Portfolio(initial_balance, fee, slippage)
        self.reward_mode = reward_mode
        self._log_return_reward = reward_mode == "log_return"
        n_features = self.market.features.shape[1] + len(ACCOUNT_FEATURE_NAMES)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(n_features,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(3)
        # Python floats index faster than numpy scalars; a zero-padded feature table lets an
        # observation be one row copy plus three account numbers.
        self._open = self.market.open.tolist()
        self._close = self.market.close.tolist()
        n_market = self.market.features.shape[1]
        self._obs_rows = np.zeros((len(self.market), n_features), dtype=np.float32)
        self._obs_rows[:, :n_market] = self.market.features
        self._n_market = n_market
        self._last_row = len(self.market) - 1
        self._ruin_equity = ruin_fraction * float(initial_balance)
        self._t = 0
        self._equity = float(initial_balance)
        self._peak = float(initial_balance)
        self._dsr_mean = 0.0
        self._dsr_mean_square = 0.0
        self._invalid_actions = 0

    @property
    def state_size(self) -> int:
        return int(self.observation_space.shape[0])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.portfolio.reset()
        self._t = 0
        self._equity = self._peak = float(self.portfolio.initial_balance)
        self._dsr_mean = self._dsr_mean_square = 0.0
        self._invalid_actions = 0
        return self._observation(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        t_next = self._t + 1
        if t_next > self._last_row:
            raise RuntimeError("episode is over: call reset() before step()")
        portfolio = self.portfolio
        if action == HOLD:
            pass
        elif action == BUY:
            if not portfolio.buy(self._open[t_next]):
                self._invalid_actions += 1
        elif action == SELL:
            if not portfolio.sell(self._open[t_next]):
                self._invalid_actions += 1
        else:
            raise ValueError(f"action must be 0 (hold), 1 (buy) or 2 (sell), got {action!r}")
        equity = portfolio.cash + portfolio.units * self._close[t_next]
        step_return = math.log(equity / self._equity)
        if self._log_return_reward:
            reward = step_return
        else:
            reward, self._dsr_mean, self._dsr_mean_square = differential_sharpe_step(
                step_return, self._dsr_mean, self._dsr_mean_square
            )
        self._equity = equity
        if equity > self._peak:
            self._peak = equity
        self._t = t_next
        terminated = equity <= self._ruin_equity
        truncated = not terminated and t_next == self._last_row
        info = {  # built inline: this is the hot path of single-env training
            "step": t_next, "equity": equity, "cash": portfolio.cash, "position": portfolio.units,
            "price": self._close[t_next], "fees_paid": portfolio.fees_paid,
            "slippage_paid": portfolio.slippage_paid, "trades": portfolio.trades,
            "invalid_actions": self._invalid_actions,
        }
        return self._observation(), reward, terminated, truncated, info

    def _observation(self) -> np.ndarray:
        """Market features of row t, then position flag, open-position return, drawdown."""
        t = self._t
        obs = self._obs_rows[t].copy()
        n = self._n_market
        portfolio = self.portfolio
        if portfolio.units > 0.0:
            obs[n] = 1.0
            obs[n + 1] = self._close[t] / portfolio.entry_price - 1.0
        obs[n + 2] = self._equity / self._peak - 1.0
        return obs

    def _info(self) -> dict[str, Any]:
        p = self.portfolio
        return {
            "step": self._t,
            "equity": self._equity,
            "cash": p.cash,
            "position": p.units,
            "price": self._close[self._t],
            "fees_paid": p.fees_paid,
            "slippage_paid": p.slippage_paid,
            "trades": p.trades,
            "invalid_actions": self._invalid_actions,
        }
