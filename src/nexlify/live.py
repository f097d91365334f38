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
from nexlify.env.trading import ACTION_NAMES
from nexlify.errors import CheckpointError


def build_state(
    recent_candles: pd.DataFrame,
    scaler: FeatureScaler,
    is_long: bool = False,
    entry_price: float = 0.0,
    equity: float = 1.0,
    peak_equity: float = 1.0,
) -> np.ndarray:
    """The 12-number state for the last of ``recent_candles`` (OHLCV rows, oldest first).

    Account features follow the environment: position flag, return of the open position from its
    fill price (0 when flat), and drawdown of equity from its peak.
    """
    market = market_state_from_candles(recent_candles, scaler)
    price = float(recent_candles["close"].iloc[-1]) if "close" in recent_candles else float(
        recent_candles.iloc[-1, 4])
    unrealized = price / entry_price - 1.0 if is_long and entry_price > 0 else 0.0
    account = np.array([float(is_long), unrealized, equity / peak_equity - 1.0], dtype=np.float32)
    return np.concatenate([market.astype(np.float32), account])


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
        return ACTION_NAMES[self.agent.act(state, explore=False)]
