"""TradingEnvironment: one account trading one market, as a Gymnasium ``Env``.

A one-account view of ``nexlify.env.accounts.Accounts`` (its ``"python"`` backend), so it follows the
same trading step, timing and rewards as the vectorised accounts the trainer uses; see that module
for the timing (decide on the close of t, fill at the open of t+1, mark at the close of t+1).

Given a DataFrame or a file instead of a ready ``MarketSlice`` and no ``scaler``, the feature scaler is
fitted on a leading part of the data that the environment then does not trade
(``SCALER_FIT_FRACTION`` of the rows, at least ``MIN_SCALER_FIT_ROWS``): an observation at row t
never depends on rows after t.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd

from nexlify.data.features import WARMUP_BARS, FeatureScaler, compute_market_features
from nexlify.data.market import MarketSlice, load_ohlcv, market_slice_from_frame
from nexlify.env.accounts import Accounts
from nexlify.env.actions import BUY, HOLD, N_ACTIONS, SELL

SCALER_FIT_FRACTION = 0.2
MIN_SCALER_FIT_ROWS = 32


def _drop_leading_rows(market: MarketSlice, rows: int) -> MarketSlice:
    return MarketSlice(**{f.name: getattr(market, f.name)[rows:] for f in dataclasses.fields(market)})


def resolve_market(
    data: MarketSlice | pd.DataFrame | str | Path | None, scaler: FeatureScaler | None = None
) -> tuple[MarketSlice, FeatureScaler | None]:
    """Turn a MarketSlice, a DataFrame, a file path or None (bundled data) into a MarketSlice.

    A MarketSlice is used as it is (its features are already normalised). Otherwise the features are
    normalised with ``scaler`` (e.g. the one fitted on the training data, to run on held-out data)
    or, without one, with a scaler fitted on the leading ``SCALER_FIT_FRACTION`` of the usable rows,
    which are then left out: nothing the environment shows depends on a later row.
    """
    if isinstance(data, MarketSlice):
        return data, scaler
    # Loaded here without logging: market_slice_from_frame loads the frame again and reports gaps once.
    frame = load_ohlcv(data, min_rows=WARMUP_BARS + MIN_SCALER_FIT_ROWS + 2, log_gaps=False)
    if scaler is not None:
        return market_slice_from_frame(frame, scaler), scaler
    usable = len(frame) - WARMUP_BARS
    fit_rows = max(MIN_SCALER_FIT_ROWS, int(SCALER_FIT_FRACTION * usable))
    # Features are causal, so those of the leading rows do not depend on anything after them either.
    fit_features = compute_market_features(frame.iloc[: WARMUP_BARS + fit_rows])[WARMUP_BARS:]
    scaler = FeatureScaler().fit(fit_features)
    return _drop_leading_rows(market_slice_from_frame(frame, scaler), fit_rows), scaler


class TradingEnvironment(gym.Env):
    """Long-only spot trading of one market with fees and slippage. Actions: 0 hold, 1 buy, 2 sell.

    ``data`` and ``scaler``: see ``resolve_market``. ``account_options`` are those of ``Accounts``
    (``initial_balance`` 10,000, ``fee`` 0.001, ``slippage`` 0.0005, ``reward_mode`` "log_return",
    ``ruin_fraction`` 0.1, ``trade_penalty`` 0). Buy when already long and sell when flat are no-ops,
    counted in ``info['invalid_actions']``. Reward: per ``reward_mode`` (see ``nexlify.env.rewards``),
    net of all costs.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        data: MarketSlice | pd.DataFrame | str | Path | None = None,
        *,
        scaler: FeatureScaler | None = None,
        **account_options: Any,
    ) -> None:
        super().__init__()
        self.market, self.scaler = resolve_market(data, scaler)
        self.account = Accounts(self.market, 1, backend="python", **account_options)
        self.reward_mode = self.account.reward_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.account.observation_size,),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self._last_row = len(self.market) - 1

    @property
    def state_size(self) -> int:
        return self.account.observation_size

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.account.reset(), self.account.info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.account.t >= self._last_row:
            raise RuntimeError("episode is over: call reset() before step()")
        if action not in (HOLD, BUY, SELL):
            raise ValueError(f"action must be 0 (hold), 1 (buy) or 2 (sell), got {action!r}")
        reward, terminated, truncated = self.account.advance(action)
        return self.account.observe(), reward, terminated, truncated, self.account.info()
