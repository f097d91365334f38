"""The feature names and the state size: plain constants, importable without numpy or pandas (the
hardware planner reads the state size on every profile, cached ones included)."""

from __future__ import annotations

MARKET_FEATURE_NAMES: tuple[str, ...] = (
    "log_return_1",
    "log_return_4",
    "log_return_24",
    "volatility_24",
    "rsi_14",
    "macd_hist",
    "volume_ratio_24",
    "zscore_48",
    "range_pct",
)
ACCOUNT_FEATURE_NAMES: tuple[str, ...] = ("position", "unrealized_pnl", "drawdown")
N_MARKET_FEATURES: int = len(MARKET_FEATURE_NAMES)
STATE_SIZE: int = N_MARKET_FEATURES + len(ACCOUNT_FEATURE_NAMES)
TREND_FEATURE_NAMES: tuple[str, ...] = (
    "log_return_168",
    "log_return_720",
    "ma_distance_168",
    "ma_distance_720",
    "drawdown_720",
    "volatility_regime",
)
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "basic": MARKET_FEATURE_NAMES,
    "trend": MARKET_FEATURE_NAMES + TREND_FEATURE_NAMES,
}

__all__ = ["ACCOUNT_FEATURE_NAMES", "FEATURE_SETS", "MARKET_FEATURE_NAMES", "N_MARKET_FEATURES", "STATE_SIZE",
           "TREND_FEATURE_NAMES"]
