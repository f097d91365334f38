"""Performance metrics of an equity curve, annualised for the data's timeframe. Pure functions.

Conventions: returns are simple per-step returns of equity; Sharpe and Sortino use a zero risk-free
rate; ``max_drawdown`` is a positive fraction (0.25 = the equity fell 25% below its peak); a round
trip's return runs from the equity before its buy fill to the equity after its sell fill.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _step_returns(equity: np.ndarray) -> np.ndarray:
    return equity[1:] / equity[:-1] - 1.0


def sharpe_ratio(equity: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe of per-step returns (0 when the returns do not vary)."""
    returns = _step_returns(np.asarray(equity, dtype=np.float64))
    if returns.size < 2:
        return 0.0
    std = returns.std(ddof=1)
    if std < 1e-12:
        return 0.0
    return float(returns.mean() / std * math.sqrt(periods_per_year))


def sortino_ratio(equity: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sortino: mean return over downside deviation (root mean square of losses)."""
    returns = _step_returns(np.asarray(equity, dtype=np.float64))
    if returns.size < 2:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    if downside < 1e-12:
        return 0.0
    return float(returns.mean() / downside * math.sqrt(periods_per_year))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a positive fraction."""
    equity = np.asarray(equity, dtype=np.float64)
    peaks = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peaks)) if equity.size else 0.0


def round_trip_returns(equity: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Return of each round trip; an open position at the end counts, marked at the last equity.

    ``position[k]`` is the position level after step k (0 flat, 0.5 half, 1 long; ``position[0]`` is
    the start, flat); ``equity[k]`` is the equity after step k. A round trip runs from flat to flat,
    whatever the level in between.
    """
    position = (np.asarray(position) > 0).astype(np.int8)
    changes = np.diff(position)
    opens = np.flatnonzero(changes == 1) + 1
    closes = np.flatnonzero(changes == -1) + 1
    if len(closes) < len(opens):
        closes = np.append(closes, len(position) - 1)
    return equity[closes] / equity[opens - 1] - 1.0


def compute_metrics(
    equity: np.ndarray,
    position: np.ndarray,
    periods_per_year: float,
    fees_paid: float = 0.0,
    trades: int | None = None,
) -> dict[str, Any]:
    """All the report's metrics for one equity curve (``equity[0]`` is the initial balance)."""
    equity = np.asarray(equity, dtype=np.float64)
    steps = max(len(equity) - 1, 1)
    growth = equity[-1] / equity[0]
    years = steps / periods_per_year
    annual_return = growth ** (1.0 / years) - 1.0 if growth > 0 else -1.0
    log_returns = np.diff(np.log(equity))
    volatility = float(log_returns.std(ddof=1) * math.sqrt(periods_per_year)) if steps > 1 else 0.0
    drawdown = max_drawdown(equity)
    trips = round_trip_returns(equity, position)
    return {
        "final_equity": float(equity[-1]),
        "total_return": float(growth - 1.0),
        "annualized_return": float(annual_return),
        "annualized_volatility": volatility,
        "sharpe": sharpe_ratio(equity, periods_per_year),
        "sortino": sortino_ratio(equity, periods_per_year),
        "max_drawdown": drawdown,
        "calmar": float(annual_return / drawdown) if drawdown > 1e-12 else 0.0,
        "trades": int(trades if trades is not None else np.count_nonzero(np.diff(np.asarray(position)))),
        "round_trips": int(len(trips)),
        "win_rate": float(np.mean(trips > 0)) if len(trips) else 0.0,
        # The mean position level: the share of steps long, when every position is all-in.
        "exposure": float(np.mean(np.asarray(position, dtype=np.float64)[1:])) if len(position) > 1 else 0.0,
        "fees_paid": float(fees_paid),
        "steps": int(steps),
    }
