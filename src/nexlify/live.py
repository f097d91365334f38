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
from nexlify.env.actions import ORDER_NAMES, TARGET_HALF_LEVELS, to_orders
from nexlify.errors import CheckpointError, ConfigError
from nexlify.evaluation.ensemble import check_members, greedy_actions


def position_level(is_long: bool = False, level: float | None = None) -> float:
    """The position level a state shows: ``level`` (0 flat, 0.5 half, 1 long) if given, else 1 or 0
    for ``is_long`` (an all-in position)."""
    if level is None:
        return float(bool(is_long))
    if level not in TARGET_HALF_LEVELS:
        raise ConfigError(f"level must be one of {', '.join(f'{v:g}' for v in TARGET_HALF_LEVELS)} "
                          f"(flat, half, long), got {level!r}")
    if is_long and level == 0.0:
        raise ConfigError("is_long=True with level=0 (flat) contradicts itself; give the level alone")
    return float(level)


def build_state(
    recent_candles: pd.DataFrame,
    scaler: FeatureScaler,
    is_long: bool = False,
    entry_price: float = 0.0,
    equity: float = 1.0,
    peak_equity: float = 1.0,
    *,
    level: float | None = None,
) -> np.ndarray:
    """The 12-number state for the last of ``recent_candles`` (OHLCV rows, oldest first).

    Account features come from the environment's own ``account_features``: position level
    (``position_level``: ``level``, or 1/0 for ``is_long``), return of the open position from its
    average fill price (0 when flat), and drawdown of equity from its peak.
    """
    position = position_level(is_long, level)
    if position > 0 and not entry_price > 0:
        raise ConfigError(f"an open position needs its fill price: entry_price must be > 0, got {entry_price!r}")
    if not peak_equity > 0:
        raise ConfigError(f"peak_equity must be > 0, got {peak_equity!r}")
    market = market_state_from_candles(recent_candles, scaler)
    price = float(recent_candles["close"].iloc[-1]) if "close" in recent_candles else float(
        recent_candles.iloc[-1, 4])
    account = account_features(position, price, entry_price, equity, peak_equity)
    return np.concatenate([market.astype(np.float32), np.array(account, dtype=np.float32)])


def shared_scaler(agents: tuple | list) -> FeatureScaler:
    """The feature scaler every model in ``agents`` was saved with; refused unless they all have one
    and it is the same (an ensemble's members must read the market the same way)."""
    if any("scaler" not in agent.checkpoint_metadata for agent in agents):
        raise CheckpointError("this model has no saved feature scaler; load a file written by nexlify train")
    scalers = [agent.checkpoint_metadata["scaler"] for agent in agents]
    if any(scaler != scalers[0] for scaler in scalers[1:]):
        raise ConfigError("the ensemble's models were trained on different data (their feature scalers "
                          "differ); combine models trained with the same --data and --data-days, "
                          "e.g. the same run with other seeds")
    return FeatureScaler.from_dict(scalers[0])


class LiveTrader:
    """A trained model, or a mean-Q ensemble of several (e.g. the best models of a few seeds), ready
    for live decisions: ``decide(candles, ...)`` returns the order to place ('hold', 'buy', 'sell', and
    for ``target_half`` models 'buy_half' and 'sell_half').

    An ensemble decides as the walk-forward's judged ensemble does (``nexlify.evaluation.ensemble``):
    the action with the highest Q-value averaged over the members. Its members must share the feature
    scaler (trained on the same data), the state and the actions; the first member's config (costs,
    action mode) is the session's.
    """

    def __init__(self, agent, *others) -> None:
        members = (agent, *others)
        self.scaler = shared_scaler(members)
        check_members(members)
        self.agent, self.members = agent, members
        # Host copies of the weights, made once: a decision per candle must not copy them again.
        self._q_functions = [member.host_q_function() for member in members]

    @classmethod
    def from_model(cls, path: str | Path, device: str = "cpu") -> LiveTrader:
        return cls.from_models([path], device)

    @classmethod
    def from_models(cls, paths: list[str | Path] | tuple[str | Path, ...], device: str = "cpu") -> LiveTrader:
        """One model, or the mean-Q ensemble of several model files."""
        from nexlify.agent.dqn import AdaptiveDQNAgent

        return cls(*(AdaptiveDQNAgent.from_checkpoint(path, device=device) for path in paths))

    def greedy_action(self, state: np.ndarray) -> int:
        """The model's (or the ensemble's) greedy action index for one state."""
        return int(greedy_actions(self._q_functions, state[None, :])[0])

    def decide(self, recent_candles: pd.DataFrame, is_long: bool = False, entry_price: float = 0.0,
               equity: float = 1.0, peak_equity: float = 1.0, *, level: float | None = None) -> str:
        """The greedy order for the latest candle, as a name (``ORDER_NAMES``: hold, buy, sell, and for
        ``target_half`` models buy_half and sell_half). The position is ``level`` (0 flat, 0.5 half,
        1 long), or without it ``is_long``; ``entry_price`` is its average fill price."""
        mode = self.agent.config.action_mode
        position = position_level(is_long, level)
        if position not in (0.0, 1.0) and mode != "target_half":
            raise ConfigError(f"level {position:g} is a half position, which only a model trained with "
                              f"action_mode target_half holds; this one trades all-in (action_mode {mode})")
        state = build_state(recent_candles, self.scaler, entry_price=entry_price, equity=equity,
                            peak_equity=peak_equity, level=position)
        return ORDER_NAMES[to_orders(self.greedy_action(state), position, mode)]
