"""Market features: computed once per dataset, vectorised, causal, float32.

Two feature sets (config key ``feature_set``); a checkpoint's scaler records the names it was
fitted on, so a model always gets the set it was trained with (``feature_set_of``).

* ``basic`` (default): the 9 market features below. The agent's state is then
  ``STATE_SIZE = 12`` numbers: these plus the 3 account features (``ACCOUNT_FEATURE_NAMES``) that
  the trading environment computes from its own position.
* ``trend``: the 9 basic features plus 6 trend and regime features that look back up to a month of
  hourly bars (``TREND_FEATURE_NAMES``, below); warm-up ``TREND_WARMUP_BARS``.

The 9 market features of candle ``t`` use only candles ``<= t`` (no look-ahead; a property test
checks this). With ``c`` = close, ``h`` = high, ``l`` = low, ``v`` = volume and
``r_t = ln(c_t / c_{t-1})``:

1. ``log_return_1``   ``ln(c_t / c_{t-1})``: the last bar's move.
2. ``log_return_4``   ``ln(c_t / c_{t-4})``: short-term momentum.
3. ``log_return_24``  ``ln(c_t / c_{t-24})``: a day's momentum on hourly bars.
4. ``volatility_24``  population standard deviation of ``r`` over the last 24 bars.
5. ``rsi_14``         RSI over the last 14 price changes (simple sums, Cutler's variant), rescaled
                      to [-1, 1]: ``(gains - losses) / (gains + losses)``; 0 when the price is flat.
6. ``macd_hist``      MACD histogram (EMA12 - EMA26 of close, minus its EMA9) divided by close, so it
                      is comparable across price levels. EMAs are recursive: see ``LIVE_HISTORY_BARS``.
7. ``volume_ratio_24`` ``ln((v_t + eps) / (mean_24(v) + eps))`` clipped to [-5, 5]: volume relative
                      to the last 24 bars (including ``t``); ``eps`` keeps zero volume finite.
8. ``zscore_48``      ``(c_t - mean_48(c)) / std_48(c)`` over the last 48 closes; 0 if they are all equal.
9. ``range_pct``      ``(h_t - l_t) / c_t``: the bar's range relative to its price.

The trend set adds, with ``SMA_k`` the mean of the last ``k`` closes (including ``c_t``):

10. ``log_return_168``   ``ln(c_t / c_{t-168})``: a week's move on hourly bars.
11. ``log_return_720``   ``ln(c_t / c_{t-720})``: a month's (30 days) move on hourly bars.
12. ``ma_distance_168``  ``ln(c_t / SMA_168)``: distance from the weekly moving average.
13. ``ma_distance_720``  ``ln(c_t / SMA_720)``: distance from the monthly moving average.
14. ``drawdown_720``     ``c_t / max(c_{t-719..t}) - 1``: fall from the month's highest close (<= 0).
15. ``volatility_regime`` ``ln(volatility_24 / volatility_720)`` clipped to [-5, 5]: today's
                         realised volatility against the month's (0 when both are zero).

The first ``warmup_bars(feature_set)`` rows are NaN (their windows are not yet full); every later row is finite for
validated data. Rows are treated as consecutive bars even across a reported data gap (the loader's
gap policy keeps short gaps as they are instead of inventing candles).

``FeatureScaler`` standardises features with statistics fitted on the training part only, and
serialises to plain JSON lists so a checkpoint can store it without pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

# The names and sizes live in a module without numpy or pandas, so the planner can read them cheaply;
# they stay importable from here.
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES as ACCOUNT_FEATURE_NAMES
from nexlify.data.feature_names import FEATURE_SETS as FEATURE_SETS
from nexlify.data.feature_names import MARKET_FEATURE_NAMES as MARKET_FEATURE_NAMES
from nexlify.data.feature_names import N_MARKET_FEATURES as N_MARKET_FEATURES
from nexlify.data.feature_names import STATE_SIZE as STATE_SIZE
from nexlify.data.feature_names import TREND_FEATURE_NAMES as TREND_FEATURE_NAMES
from nexlify.errors import DataError

# The longest window (z-score, 48 closes) first fills at row 47; one more bar of warm-up means a
# caller needs WARMUP_BARS + 1 candles for one valid row, and gives the EMAs a little burn-in.
WARMUP_BARS: int = 48
# MACD's EMAs are recursive, so their value depends (ever less) on how much history precedes them.
# With this many candles the live value matches a long-history value to ~1e-9 relative.
LIVE_HISTORY_BARS: int = 400
# The trend set's longest windows (720-bar return and volatility) first fill at row 720.
TREND_WARMUP_BARS: int = 720
_WARMUP = {"basic": WARMUP_BARS, "trend": TREND_WARMUP_BARS}

_VOLUME_EPS = 1e-8
_VOLUME_RATIO_CLIP = 5.0
_STD_FLOOR = 1e-8
DEFAULT_CLIP = 10.0


def _rolling(values: np.ndarray, window: int, func: str) -> np.ndarray:
    """Trailing-window reduction; each window is reduced on its own, so the result for row ``t``
    depends only on rows ``t-window+1..t`` (exactly, with no running-sum drift)."""
    out = np.full(values.shape[0], np.nan)
    if values.shape[0] >= window:
        windows = sliding_window_view(values, window)
        if func == "mean":
            out[window - 1 :] = windows.mean(axis=1)
        elif func == "std":
            out[window - 1 :] = windows.std(axis=1)
        else:  # "sum"
            out[window - 1 :] = windows.sum(axis=1)
    return out


def _shift_ratio_log(log_close: np.ndarray, lag: int) -> np.ndarray:
    out = np.full(log_close.shape[0], np.nan)
    if log_close.shape[0] > lag:
        out[lag:] = log_close[lag:] - log_close[:-lag]
    return out


def _check_feature_set(feature_set: str) -> None:
    if feature_set not in FEATURE_SETS:
        raise DataError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}.")


def feature_names(feature_set: str = "basic") -> tuple[str, ...]:
    """The market feature names of ``feature_set``, in column order."""
    _check_feature_set(feature_set)
    return FEATURE_SETS[feature_set]


def warmup_bars(feature_set: str = "basic") -> int:
    """Rows at the start of a dataset whose ``feature_set`` features are NaN (windows not yet full)."""
    _check_feature_set(feature_set)
    return _WARMUP[feature_set]


def live_history_bars(feature_set: str = "basic") -> int:
    """Candles to pass for a live state of ``feature_set`` (MACD burn-in, or the trend warm-up)."""
    return max(LIVE_HISTORY_BARS, warmup_bars(feature_set) + 1)


def feature_set_of(names: tuple[str, ...] | list[str]) -> str:
    """The feature set whose names are ``names`` (a scaler's), or DataError if none matches."""
    for name, columns in FEATURE_SETS.items():
        if tuple(names) == columns:
            return name
    raise DataError(f"the feature names {list(names)} match no known feature set "
                    f"({', '.join(FEATURE_SETS)}); the model was saved by another Nexlify version.")


def compute_market_features(frame: pd.DataFrame, feature_set: str = "basic") -> np.ndarray:
    """Return the ``[T, n]`` float32 market features of ``feature_set`` for a validated OHLCV frame.

    Rows before ``warmup_bars(feature_set)`` are NaN. The frame should come from ``load_ohlcv``
    (positive prices, non-negative volume); columns ``high``, ``low``, ``close``, ``volume`` are used.
    """
    _check_feature_set(feature_set)
    missing = [c for c in ("high", "low", "close", "volume") if c not in frame.columns]
    if missing:
        raise DataError(
            f"cannot compute features: missing column(s) {', '.join(missing)}. "
            "Fix: load the data with nexlify.data.market.load_ohlcv first."
        )
    close = frame["close"].to_numpy(dtype=np.float64)
    high = frame["high"].to_numpy(dtype=np.float64)
    low = frame["low"].to_numpy(dtype=np.float64)
    volume = frame["volume"].to_numpy(dtype=np.float64)
    n = close.shape[0]

    log_close = np.log(close)
    ret1 = _shift_ratio_log(log_close, 1)
    ret4 = _shift_ratio_log(log_close, 4)
    ret24 = _shift_ratio_log(log_close, 24)
    vol24 = _rolling(ret1, 24, "std")

    delta = np.full(n, np.nan)
    if n > 1:
        delta[1:] = np.diff(close)
    gains = _rolling(np.clip(delta, 0.0, None), 14, "sum")
    losses = _rolling(np.clip(-delta, 0.0, None), 14, "sum")
    total = gains + losses
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi = np.where(total > 0, (gains - losses) / np.where(total > 0, total, 1.0), 0.0)
    rsi = np.where(np.isnan(total), np.nan, np.clip(rsi, -1.0, 1.0))

    close_s = pd.Series(close)
    # adjust=False gives the recursive (causal) EMA: each value uses only earlier closes.
    macd = close_s.ewm(span=12, adjust=False).mean() - close_s.ewm(span=26, adjust=False).mean()
    hist = (macd - macd.ewm(span=9, adjust=False).mean()).to_numpy() / close

    mean_vol = _rolling(volume, 24, "mean")
    vol_ratio = np.clip(
        np.log((volume + _VOLUME_EPS) / (mean_vol + _VOLUME_EPS)), -_VOLUME_RATIO_CLIP, _VOLUME_RATIO_CLIP
    )

    mean48 = _rolling(close, 48, "mean")
    std48 = _rolling(close, 48, "std")
    # Relative floor: a flat window has std ~ rounding noise, which must read as "no deviation".
    flat = ~(std48 > _STD_FLOOR * np.abs(mean48))
    with np.errstate(invalid="ignore", divide="ignore"):
        zscore = np.where(flat, 0.0, (close - mean48) / np.where(flat, 1.0, std48))
    zscore = np.where(np.isnan(mean48), np.nan, zscore)

    range_pct = (high - low) / close

    columns = [ret1, ret4, ret24, vol24, rsi, hist, vol_ratio, zscore, range_pct]
    if feature_set == "trend":
        columns += _trend_features(log_close, ret1, vol24)
    features = np.column_stack(columns)
    features[: min(_WARMUP[feature_set], n)] = np.nan
    return features.astype(np.float32)


def _trend_features(log_close: np.ndarray, ret1: np.ndarray, vol24: np.ndarray) -> list[np.ndarray]:
    """The trend set's 6 columns (see the module docstring). Trailing pandas windows: the value of
    row ``t`` is computed from rows ``<= t`` only, so later rows never change it."""
    close = pd.Series(np.exp(log_close))
    columns = [_shift_ratio_log(log_close, 168), _shift_ratio_log(log_close, 720)]
    for window in (168, 720):
        sma = close.rolling(window, min_periods=window).mean().to_numpy()
        columns.append(log_close - np.log(sma))
    columns.append((close / close.rolling(720, min_periods=720).max()).to_numpy() - 1.0)
    vol720 = pd.Series(ret1).rolling(720, min_periods=720).std(ddof=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        regime = np.log((vol24 + _STD_FLOOR) / (vol720 + _STD_FLOOR))
    columns.append(np.clip(regime, -_VOLUME_RATIO_CLIP, _VOLUME_RATIO_CLIP))
    return columns


class FeatureScaler:
    """Per-feature standardisation ``(x - mean) / std``, clipped, fitted on training rows only.

    A feature whose training std is below ``1e-8`` gets std 1 (it is only centred) so a constant
    feature cannot turn into huge values on other data.
    """

    def __init__(
        self,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        clip: float = DEFAULT_CLIP,
        feature_names: tuple[str, ...] = MARKET_FEATURE_NAMES,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.clip = float(clip)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        if (self.mean is None) != (self.std is None):
            raise ValueError("FeatureScaler needs both mean and std, or neither")

    @property
    def fitted(self) -> bool:
        """True once ``fit`` ran (or statistics were given)."""
        return self.mean is not None

    def fit(self, features: np.ndarray) -> FeatureScaler:
        """Fit mean/std on ``features`` ``[T, n]`` (finite values only); returns ``self``."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names) or x.shape[0] == 0:
            raise DataError(
                f"cannot fit the feature scaler: expected shape [T>0, {len(self.feature_names)}], "
                f"got {list(x.shape)}."
            )
        if not np.isfinite(x).all():
            raise DataError(
                "cannot fit the feature scaler: features contain NaN/inf "
                "(drop the first WARMUP_BARS rows before fitting)."
            )
        std = x.std(axis=0)
        self.mean = x.mean(axis=0)
        self.std = np.where(std < _STD_FLOOR, 1.0, std)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Standardise ``features`` (``[T, n]`` or ``[n]``) to float32 in ``[-clip, clip]``."""
        if self.mean is None or self.std is None:
            raise RuntimeError("FeatureScaler.transform called before fit")
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1] != self.mean.shape[0]:
            raise DataError(f"feature scaler expects {self.mean.shape[0]} features, got {x.shape[-1]}.")
        return np.clip((x - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain-Python form (lists of floats), for checkpoints without pickle."""
        if self.mean is None or self.std is None:
            raise RuntimeError("cannot serialise an unfitted FeatureScaler")
        return {
            "feature_names": list(self.feature_names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureScaler:
        """Rebuild from ``to_dict`` output; refuses malformed or non-finite statistics."""
        try:
            names = tuple(str(n) for n in data["feature_names"])
            mean = [float(v) for v in data["mean"]]
            std = [float(v) for v in data["std"]]
            clip = float(data.get("clip", DEFAULT_CLIP))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"invalid feature scaler data: {exc!r}; expected keys feature_names, mean, std."
            ) from exc
        if not (len(names) == len(mean) == len(std)) or not names:
            raise DataError("invalid feature scaler data: feature_names, mean and std differ in length.")
        values = [*mean, *std, clip]
        if not all(math.isfinite(v) for v in values) or min(std) <= 0 or clip <= 0:
            raise DataError(
                "invalid feature scaler data: statistics must be finite with std > 0 and clip > 0."
            )
        return cls(np.array(mean), np.array(std), clip=clip, feature_names=names)

    def __repr__(self) -> str:
        return f"FeatureScaler(n={len(self.feature_names)}, fitted={self.fitted}, clip={self.clip})"
