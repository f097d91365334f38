"""Reward functions shared by the single and vectorised environments.

- ``log_return``: log(equity_after / equity_before), net of every cost. Rewards of an episode add up
  to log(final equity / initial equity), so the agent maximises compound growth.
- ``differential_sharpe`` (the ``TrainingConfig`` default): Moody & Saffell's differential Sharpe
  ratio of the step's log return less the switching penalty (and ``risk_aversion``'s charge), with
  exponential moving moments (rate ``eta``, the config key ``dsr_eta``); rewards risk-adjusted
  improvement, and a fill costs what a return that much lower would.
- ``differential_sortino``: Moody & Saffell's differential downside deviation ratio of the same
  costed return: like ``differential_sharpe``, but its risk is the moving mean square of the losing
  steps only, so a large gain is never charged as risk while a loss (a fill's cost included) is.
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


def differential_sortino_step(step_return: Any, mean: Any, downside_square: Any, where: Any,
                              eta: float = DSR_ETA):
    """One step of the differential downside deviation ratio; returns (reward, new_mean,
    new_downside_square).

    With ``A`` the moving mean of the returns and ``D2`` the moving mean of ``min(return, 0)**2``, the
    ratio ``A / sqrt(D2)`` grows by ``eta`` times ``(D2 * (R - A/2) - A/2 * min(R, 0)**2) / D2**1.5``
    when return ``R`` arrives: ``(R - A/2) / sqrt(D2)`` for a gain. Until the account has had a losing
    step the ratio is undefined (no downside yet), so the reward is 0 there. ``where`` is the array
    type's select (numpy's, torch's, or a scalar one), so one function serves every backend.
    """
    downside = where(step_return < 0.0, step_return, 0.0)
    downside_sq = downside * downside
    numerator = downside_square * (step_return - 0.5 * mean) - 0.5 * mean * downside_sq
    ratio_step = numerator / (downside_square + DSR_VARIANCE_FLOOR) ** 1.5
    reward = where(downside_square > 0.0, ratio_step, 0.0)
    return reward, mean + eta * (step_return - mean), downside_square + eta * (downside_sq - downside_square)


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
