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


def account_features(
    is_long: bool | np.ndarray, unrealized_return: Any, equity: Any, peak_equity: Any
) -> tuple[Any, Any, Any]:
    """The three account features: position flag, unrealised return, drawdown from peak (<= 0)."""
    return is_long, unrealized_return, equity / peak_equity - 1.0


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
        self.ruin_fraction = ruin_fraction
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
        action = int(action)
        if action not in (HOLD, BUY, SELL):
            raise ValueError(f"action must be 0 (hold), 1 (buy) or 2 (sell), got {action}")
        if self._t >= self._last_row:
            raise RuntimeError("episode is over: call reset() before step()")
        t_next = self._t + 1
        open_price = self._open[t_next]
        filled = True
        if action == BUY:
            filled = self.portfolio.buy(open_price)
        elif action == SELL:
            filled = self.portfolio.sell(open_price)
        if not filled:
            self._invalid_actions += 1
        equity = self.portfolio.equity(self._close[t_next])
        step_return = math.log(equity / self._equity)
        if self.reward_mode == "log_return":
            reward = step_return
        else:
            reward, self._dsr_mean, self._dsr_mean_square = differential_sharpe_step(
                step_return, self._dsr_mean, self._dsr_mean_square
            )
        self._equity = equity
        self._peak = max(self._peak, equity)
        self._t = t_next
        terminated = equity <= self.ruin_fraction * self.portfolio.initial_balance
        truncated = not terminated and t_next >= self._last_row
        return self._observation(), float(reward), terminated, truncated, self._info()

    def _observation(self) -> np.ndarray:
        obs = self._obs_rows[self._t].copy()
        n = self._n_market
        obs[n], obs[n + 1], obs[n + 2] = account_features(
            float(self.portfolio.is_long), self.portfolio.unrealized_return(self._close[self._t]),
            self._equity, self._peak,
        )
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
