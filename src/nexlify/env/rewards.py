"""Reward functions shared by the single and vectorised environments (plain arithmetic).

- ``log_return``: log(equity_after / equity_before), net of every cost. Rewards of an episode add up
  to log(final equity / initial equity), so the agent maximises compound growth.
- ``differential_sharpe``: Moody & Saffell's differential Sharpe ratio of the step's log return,
  with exponential moving moments (rate ``eta``); rewards risk-adjusted improvement.
"""

from __future__ import annotations

from typing import Any

DSR_ETA = 0.01
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
