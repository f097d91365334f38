"""Live use of a trained model: turn the latest candles and the account into a state, then an action.

The state is built by the same feature pipeline as in training, normalised with the scaler saved in
the model file, so a model sees in live trading exactly what it saw in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nexlify.data.features import FeatureScaler
from nexlify.data.market import market_state_from_candles
from nexlify.env.accounts import account_features
from nexlify.env.actions import ACTION_NAMES, to_orders
from nexlify.errors import CheckpointError, ConfigError


def build_state(
    recent_candles: pd.DataFrame,
    scaler: FeatureScaler,
    is_long: bool = False,
    entry_price: float = 0.0,
    equity: float = 1.0,
    peak_equity: float = 1.0,
) -> np.ndarray:
    """The 12-number state for the last of ``recent_candles`` (OHLCV rows, oldest first).

    Account features come from the environment's own ``account_features``: position flag, return of
    the open position from its fill price (0 when flat), and drawdown of equity from its peak.
    """
    if is_long and not entry_price > 0:
        raise ConfigError(f"an open position needs its fill price: entry_price must be > 0, got {entry_price!r}")
    if not peak_equity > 0:
        raise ConfigError(f"peak_equity must be > 0, got {peak_equity!r}")
    market = market_state_from_candles(recent_candles, scaler)
    price = float(recent_candles["close"].iloc[-1]) if "close" in recent_candles else float(
        recent_candles.iloc[-1, 4])
    account = account_features(bool(is_long), price, entry_price, equity, peak_equity)
    return np.concatenate([market.astype(np.float32), np.array(account, dtype=np.float32)])


class LiveTrader:
    """A trained model ready for live decisions: ``decide(candles, ...)`` returns 'hold'/'buy'/'sell'."""

    def __init__(self, agent) -> None:
        if "scaler" not in agent.checkpoint_metadata:
            raise CheckpointError("this model has no saved feature scaler; load a file written by nexlify train")
        self.agent = agent
        self.scaler = FeatureScaler.from_dict(agent.checkpoint_metadata["scaler"])

    @classmethod
    def from_model(cls, path: str | Path, device: str = "cpu") -> LiveTrader:
        from nexlify.agent.dqn import AdaptiveDQNAgent

        return cls(AdaptiveDQNAgent.from_checkpoint(path, device=device))

    def decide(self, recent_candles: pd.DataFrame, is_long: bool = False, entry_price: float = 0.0,
               equity: float = 1.0, peak_equity: float = 1.0) -> str:
        """The greedy action for the latest candle, as a name."""
        state = build_state(recent_candles, self.scaler, is_long, entry_price, equity, peak_equity)
        action = self.agent.act(state, explore=False)
        return ACTION_NAMES[to_orders(action, is_long, self.agent.config.action_mode)]
