"""Training-data augmentation: each training market also played in reverse (``augment="mirror"``),
and optionally at half its volatility too (``augment="mirror_calm"``).

A 180-day training window has one drift: a bull window teaches "always hold", a bear window
"never hold", and the next test window may be either. The mirrored market turns every move around
(each price ``p`` becomes ``pivot**2 / p``, so every log return changes sign while volatility,
ranges and volume stay as they were). Trained on both, the agent sees each regime and its reverse
equally often, so what it can learn is when to hold, not the training window's drift.

Only the training split is augmented; validation and test stay the real candles. The mirrored
features are computed from the mirrored candles with the market's own scaler (fitted on the real
training rows), so the agent's inputs on validation and test are exactly those of an un-augmented
run. The mirror has no candles before the training window, so its first warm-up rows are dropped.

``mirror_calm`` adds both paths again with every log move halved (``p -> pivot * (p / pivot) ** 0.5``):
half the volatility and half the drift, while fees stay the same. Volatility regimes change by 2-3x
between years, and a calm market makes every trade cost more against the moves it catches, so the
agent sees the same patterns where trading pays less. Four paths at half the episodes cost what two
paths at the full count do.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from nexlify.config import AUGMENTS
from nexlify.data.features import FeatureScaler, compute_market_features, feature_set_of, warmup_bars
from nexlify.data.market import MarketSlice, MarketSplits, join_markets
from nexlify.errors import ConfigError, DataError

__all__ = ["AUGMENTS", "CALM_MOVES", "augment_splits", "calm_candles", "min_training_rows", "mirror_candles",
           "mirror_slice", "calm_slices", "transformed_slice"]

CALM_MOVES = 0.5  # ``mirror_calm``: each log move of the calm copies, as a fraction of the real one
Candles = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # open, high, low, close


def min_training_rows(augment: str, feature_set: str) -> int:
    """The fewest training candles ``augment`` can work with (0: no limit of its own). An augmented path
    has no candles before the window, so its features' warm-up is spent inside it and two rows must remain."""
    return warmup_bars(feature_set) + 2 if augment != "none" else 0


def mirror_candles(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                   pivot: float) -> Candles:
    """(open, high, low, close) reflected through ``pivot``: ``p -> pivot**2 / p``.

    Log prices are reflected around ``log(pivot)``, so every return changes sign; the reflected high
    is the reflection of the low (and the low of the high), so ``low <= open, close <= high`` holds.
    """
    square = float(pivot) ** 2
    return square / open_, square / low, square / high, square / close


def calm_candles(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, pivot: float,
                 moves: float = CALM_MOVES) -> Candles:
    """(open, high, low, close) with every log distance from ``pivot`` scaled by ``moves`` (0 < moves):
    ``p -> pivot * (p / pivot) ** moves``. Every log return is scaled by ``moves``; the order of prices
    is kept, so ``low <= open, close <= high`` holds."""
    if not moves > 0:
        raise ValueError(f"moves must be positive; got {moves}")
    pivot = float(pivot)
    return tuple(pivot * (p / pivot) ** moves for p in (open_, high, low, close))  # type: ignore[return-value]


def transformed_slice(market: MarketSlice, scaler: FeatureScaler, candles: Candles, augment: str) -> MarketSlice:
    """``market`` with its OHLC replaced by ``candles`` (volume kept), features recomputed from them and
    scaled by ``scaler``, the warm-up rows dropped (the new path has no candles before the window)."""
    feature_set = feature_set_of(scaler.feature_names)
    warmup = warmup_bars(feature_set)
    needed = min_training_rows(augment, feature_set)
    if len(market) < needed:
        raise DataError(f"augment {augment!r} needs at least {needed} training candles to compute the augmented "
                        f"features; this training window has {len(market)}. Use a longer training window "
                        "(nexlify train: --data-days; nexlify walkforward: --train-days) or augment 'none'.")
    open_, high, low, close = candles
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": market.volume})
    features = scaler.transform(compute_market_features(frame, feature_set)[warmup:])
    kept = slice(warmup, None)
    return MarketSlice(timestamps=market.timestamps[kept], open=open_[kept], high=high[kept], low=low[kept],
                       close=close[kept], volume=market.volume[kept].copy(),
                       features=np.ascontiguousarray(features, dtype=np.float32))


def mirror_slice(market: MarketSlice, scaler: FeatureScaler) -> MarketSlice:
    """``market`` with every move reversed (``mirror_candles`` around its first open), features
    recomputed from the reflected candles and scaled by ``scaler``, the warm-up rows dropped."""
    candles = mirror_candles(market.open, market.high, market.low, market.close, market.open[0])
    return transformed_slice(market, scaler, candles, "mirror")


def calm_slices(market: MarketSlice, scaler: FeatureScaler) -> list[MarketSlice]:
    """``market`` and its mirror with every move scaled by ``CALM_MOVES`` (around the first open)."""
    pivot = market.open[0]
    calm = calm_candles(market.open, market.high, market.low, market.close, pivot)
    calm_mirror = mirror_candles(*calm, pivot=pivot)
    return [transformed_slice(market, scaler, calm, "mirror_calm"),
            transformed_slice(market, scaler, calm_mirror, "mirror_calm")]


def augment_splits(splits: MarketSplits, augment: str) -> MarketSplits:
    """One market's splits with the training slice augmented per ``augment`` (see ``AUGMENTS``).

    Apply it to each market before markets are joined, so no mirrored feature reads across a join.
    """
    if augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}; got {augment!r}")
    if augment == "none":
        return splits
    paths = [splits.train, mirror_slice(splits.train, splits.scaler)]
    if augment == "mirror_calm":
        paths += calm_slices(splits.train, splits.scaler)
    return replace(splits, train=join_markets(paths))
