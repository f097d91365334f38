"""Training-data augmentation: each training market also played in reverse (``augment="mirror"``).

A 180-day training window has one drift: a bull window teaches "always hold", a bear window
"never hold", and the next test window may be either. The mirrored market turns every move around
(each price ``p`` becomes ``pivot**2 / p``, so every log return changes sign while volatility,
ranges and volume stay as they were). Trained on both, the agent sees each regime and its reverse
equally often, so what it can learn is when to hold, not the training window's drift.

Only the training split is augmented; validation and test stay the real candles. The mirrored
features are computed from the mirrored candles with the market's own scaler (fitted on the real
training rows), so the agent's inputs on validation and test are exactly those of an un-augmented
run. The mirror has no candles before the training window, so its first warm-up rows are dropped.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from nexlify.config import AUGMENTS
from nexlify.data.features import FeatureScaler, compute_market_features, feature_set_of, warmup_bars
from nexlify.data.market import MarketSlice, MarketSplits, join_markets
from nexlify.errors import ConfigError, DataError

__all__ = ["AUGMENTS", "augment_splits", "min_training_rows", "mirror_candles", "mirror_slice"]


def min_training_rows(augment: str, feature_set: str) -> int:
    """The fewest training candles ``augment`` can work with (0: no limit of its own). The mirror has no
    candles before the window, so its features' warm-up is spent inside it and two rows must remain."""
    return warmup_bars(feature_set) + 2 if augment == "mirror" else 0


def mirror_candles(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                   pivot: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(open, high, low, close) reflected through ``pivot``: ``p -> pivot**2 / p``.

    Log prices are reflected around ``log(pivot)``, so every return changes sign; the reflected high
    is the reflection of the low (and the low of the high), so ``low <= open, close <= high`` holds.
    """
    square = float(pivot) ** 2
    return square / open_, square / low, square / high, square / close


def mirror_slice(market: MarketSlice, scaler: FeatureScaler) -> MarketSlice:
    """``market`` with every move reversed (``mirror_candles`` around its first open), features
    recomputed from the reflected candles and scaled by ``scaler``, the warm-up rows dropped."""
    feature_set = feature_set_of(scaler.feature_names)
    warmup = warmup_bars(feature_set)
    needed = min_training_rows("mirror", feature_set)
    if len(market) < needed:
        raise DataError(f"augment 'mirror' needs at least {needed} training candles to compute the mirrored "
                        f"features; this training window has {len(market)}. Use a longer training window "
                        "(nexlify train: --data-days; nexlify walkforward: --train-days) or augment 'none'.")
    open_, high, low, close = mirror_candles(market.open, market.high, market.low, market.close, market.open[0])
    frame = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": market.volume})
    features = scaler.transform(compute_market_features(frame, feature_set)[warmup:])
    kept = slice(warmup, None)
    return MarketSlice(timestamps=market.timestamps[kept], open=open_[kept], high=high[kept], low=low[kept],
                       close=close[kept], volume=market.volume[kept].copy(),
                       features=np.ascontiguousarray(features, dtype=np.float32))


def augment_splits(splits: MarketSplits, augment: str) -> MarketSplits:
    """One market's splits with the training slice augmented per ``augment`` (see ``AUGMENTS``).

    Apply it to each market before markets are joined, so no mirrored feature reads across a join.
    """
    if augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}; got {augment!r}")
    if augment == "none":
        return splits
    return replace(splits, train=join_markets([splits.train, mirror_slice(splits.train, splits.scaler)]))
