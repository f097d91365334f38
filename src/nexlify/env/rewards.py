"""Reward functions shared by the single and vectorised environments.

- ``log_return``: log(equity_after / equity_before), net of every cost. Rewards of an episode add up
  to log(final equity / initial equity), so the agent maximises compound growth.
- ``differential_sharpe`` (the ``TrainingConfig`` default): Moody & Saffell's differential Sharpe
  ratio of the step's log return less the switching penalty (and ``risk_aversion``'s charge), with
  exponential moving moments (rate ``eta``, the config key ``dsr_eta``); rewards risk-adjusted
  improvement, and a fill costs what a return that much lower would.
- ``vol_scaled``: the ``log_return`` reward (less the switching penalty) times ``volatility_reward_scale``
  of the row the action was chosen on: returns per unit of the market's recent volatility, so calm
  and wild stretches (and calm and wild markets pooled in one run) weigh alike in the loss, as they do
  in a Sharpe ratio. Equity, and so every backtest, is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nexlify.config import DSR_ETA

# Added to the variance so the first steps (zero variance) give 0 instead of dividing by zero;
# hourly log returns have variances near 1e-4, so this does not change the signal.
DSR_VARIANCE_FLOOR = 1e-8


def differential_sharpe_step(step_return: Any, mean: Any, mean_square: Any, eta: float = DSR_ETA):
    """One step of the differential Sharpe ratio; returns (reward, new_mean, new_mean_square)."""
    delta_mean = step_return - mean
    delta_square = step_return * step_return - mean_square
    variance = mean_square - mean * mean + DSR_VARIANCE_FLOOR
    reward = (mean_square * delta_mean - 0.5 * mean * delta_square) / variance**1.5
    return reward, mean + eta * delta_mean, mean_square + eta * delta_square


# vol_scaled: the volatility is that of the last week of hourly bars (in bars: the same count on any
# timeframe), once at least a day of them exist; below a quarter of the typical volatility the scale
# stops growing, so a dead-flat stretch cannot blow its rewards up more than fourfold.
VOL_SCALE_BARS = 168
VOL_SCALE_MIN_BARS = 24
VOL_SCALE_FLOOR = 0.25


def volatility_reward_scale(close: np.ndarray, window: int = VOL_SCALE_BARS, min_bars: int = VOL_SCALE_MIN_BARS,
                            floor: float = VOL_SCALE_FLOOR) -> np.ndarray:
    """Per row t: ``typical / max(sigma_t, floor * typical)``.

    ``sigma_t`` is the population standard deviation of the close-to-close log returns of the last
    ``window`` bars up to and including row t (causal: rows after t never change it), once at least
    ``min_bars`` returns exist; ``typical`` is the median of the defined ``sigma_t`` over the slice, a
    constant that keeps the scale near 1 so the rewards (and the switching penalty) stay on the scale
    of ``log_return``. Rows without enough history, and a slice whose prices never move, get 1.
    """
    returns = np.diff(np.log(np.asarray(close, dtype=np.float64)), prepend=np.nan)
    sigma = pd.Series(returns).rolling(window, min_periods=min_bars).std(ddof=0).to_numpy()
    defined = sigma[np.isfinite(sigma)]
    typical = float(np.median(defined)) if defined.size else 0.0
    if not typical > 0.0:
        return np.ones(len(returns))
    scale = typical / np.maximum(sigma, floor * typical)
    return np.where(np.isfinite(scale), scale, 1.0)
