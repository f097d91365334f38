"""Walk-forward windows: where each fold trains, validates and tests, and the fold's prepared data.

Windows are half-open time ranges ``[start, end)`` in UTC. Test windows are laid back to back from
the last candle backwards, so they never overlap and together cover the tail of the history; each
fold's validation window ends where its test window starts and its training window ends where its
validation window starts. Rolling folds slide the training window; anchored folds train from the
first usable candle every time.

Features are causal, so they are computed from the feature set's warm-up candles before the training window
through the end of the test window; the scaler is fitted on the training rows only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nexlify.data.features import FEATURE_SETS, FeatureScaler, compute_market_features, warmup_bars
from nexlify.data.market import (
    MIN_SPLIT_ROWS,
    OHLCV_COLUMNS,
    MarketSlice,
    MarketSplits,
    detect_timeframe,
    find_gaps,
    gap_report,
    periods_per_year,
)
from nexlify.errors import ConfigError, DataError
from nexlify.evaluation.defaults import DEFAULT_TEST_DAYS, DEFAULT_TRAIN_DAYS, DEFAULT_VALIDATION_DAYS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldWindows:
    """The three consecutive windows of one fold, as ISO 8601 UTC timestamps (``[start, end)``)."""

    fold: int
    train_start: str
    train_end: str
    validation_start: str
    validation_end: str
    test_start: str
    test_end: str


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).tz_convert("UTC").isoformat()


def plan_folds(
    frame: pd.DataFrame,
    *,
    test_days: float | None = None,
    folds: int | None = None,
    train_days: float = DEFAULT_TRAIN_DAYS,
    validation_days: float = DEFAULT_VALIDATION_DAYS,
    anchored: bool = False,
    label: str = "data",
    feature_set: str = "basic",
    min_train_rows: int = MIN_SPLIT_ROWS,
) -> list[FoldWindows]:
    """The folds of ``frame`` (a ``load_ohlcv`` frame), oldest first.

    ``test_days``: length of each test window, as many folds as the history holds (default 90 days).
    ``folds``: that many equal test windows sharing the history after the first training and
    validation windows. Give one or neither.
    """
    if test_days is not None and folds is not None:
        raise ConfigError("give --folds or --test-days, not both")
    for name, value in (("train days", train_days), ("validation days", validation_days),
                        ("test days", test_days)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 1):
        raise ConfigError(f"folds must be a positive whole number, got {folds!r}")
    warmup = warmup_bars(feature_set)
    if len(frame) <= warmup + 3 * MIN_SPLIT_ROWS:
        raise DataError(f"{label}: {len(frame)} candles is too short for a walk-forward; use a longer history")
    timeframe = detect_timeframe(frame)
    first = frame.index[warmup]  # features need the warm-up candles before the first used row
    end = frame.index[-1] + timeframe
    train, validation = pd.Timedelta(days=train_days), pd.Timedelta(days=validation_days)
    room = end - first - train - validation  # time left for test windows
    if folds is None:
        test = pd.Timedelta(days=test_days if test_days is not None else DEFAULT_TEST_DAYS)
        count = int(room / test) if room > pd.Timedelta(0) else 0
    else:
        count = folds
        test = (room / folds).floor(timeframe) if room > pd.Timedelta(0) else pd.Timedelta(0)
    span_days = (end - frame.index[0]) / pd.Timedelta(days=1)
    if test < timeframe * MIN_SPLIT_ROWS <= room:
        # The history has room for a long enough test window; this one is too short to backtest, so
        # shrinking the windows helps nothing.
        shortest_days = math.ceil(timeframe * MIN_SPLIT_ROWS / pd.Timedelta(days=1))
        fix = (f"--test-days {shortest_days} or more" if folds is None else
               f"fewer --folds (at most {max(1, int(room / (timeframe * MIN_SPLIT_ROWS)))})")
        raise DataError(f"{label}: a {test / pd.Timedelta(days=1):g}-day test window holds "
                        f"{int(test / timeframe)} candles, fewer than the {MIN_SPLIT_ROWS} a backtest needs. "
                        f"Fix: {fix}")
    if count < 1 or test < timeframe * MIN_SPLIT_ROWS:
        wanted = f"{folds} test windows" if folds else f"one test window of {test_days or DEFAULT_TEST_DAYS:g} days"
        raise DataError(
            f"{label}: {span_days:.0f} days of candles cannot hold {train_days:g} training + "
            f"{validation_days:g} validation days and {wanted}. Fix: use a longer history or smaller "
            "--train-days / --validation-days / --test-days / --folds"
        )
    windows = []
    for k in range(count):
        test_end = end - (count - 1 - k) * test
        test_start = test_end - test
        validation_start = test_start - validation
        train_start = first if anchored else validation_start - train
        windows.append(FoldWindows(k + 1, _iso(train_start), _iso(validation_start), _iso(validation_start),
                                   _iso(test_start), _iso(test_start), _iso(test_end)))
    check_windows(frame, windows, label, min_train_rows)
    return windows


def check_windows(frame: pd.DataFrame, windows: list[FoldWindows], label: str = "data",
                  min_train_rows: int = MIN_SPLIT_ROWS) -> None:
    """DataError unless every window of every fold holds enough of ``frame``'s candles: ``MIN_SPLIT_ROWS``,
    and ``min_train_rows`` in training (more where the training data is augmented, ``min_training_rows``)."""
    for window in windows:
        for part in ("train", "validation", "test"):
            rows = _rows_between(frame, getattr(window, f"{part}_start"), getattr(window, f"{part}_end"))
            needed = max(MIN_SPLIT_ROWS, min_train_rows) if part == "train" else MIN_SPLIT_ROWS
            if rows < needed:
                why = " (to compute the augmented training paths' features)" if needed > MIN_SPLIT_ROWS else ""
                raise DataError(
                    f"{label}: fold {window.fold}'s {part} window ({getattr(window, f'{part}_start')} .. "
                    f"{getattr(window, f'{part}_end')}) holds {rows} candles, fewer than {needed}{why}. "
                    "Fix: longer windows or a history without holes"
                    + (", or augment 'none'" if why else "")
                )


def common_span(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The first market's candles inside the time every market of ``frames`` covers (name -> frame).

    Several markets share one set of fold windows laid out in this span, so fold k is the same
    period everywhere: the folds line up in the verdict, and a policy trained on all markets never
    trains on one market's bars from after another market's test window (crypto markets move together).
    """
    start = max(frame.index[0] for frame in frames.values())
    end = min(frame.index[-1] for frame in frames.values())
    if start >= end:
        spans = "; ".join(f"{name} {frame.index[0]:%Y-%m-%d} to {frame.index[-1]:%Y-%m-%d}"
                          for name, frame in frames.items())
        raise DataError(f"the markets share no common period ({spans}); give markets whose histories overlap")
    first = next(iter(frames.values()))
    return first.loc[(first.index >= start) & (first.index <= end)]


def calendar_span(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Every bar from the first candle of any market of ``frames`` to the last of any, as an index-only
    frame at the shortest of their timeframes; None when their histories leave a stretch that no
    market covers (one set of windows laid over it would put folds where there is no data).

    Several markets' folds are laid over this calendar, so fold k is the same period everywhere, and
    each market joins the folds its own history covers (``covers``): no market's years are left out
    because another market's history is shorter.
    """
    spans = sorted((frame.index[0], frame.index[-1]) for frame in frames.values())
    timeframe = min(detect_timeframe(frame) for frame in frames.values())
    reach = spans[0][1]
    for start, end in spans[1:]:
        if start > reach + timeframe:
            return None  # a hole between the histories
        reach = max(reach, end)
    return pd.DataFrame(index=pd.date_range(spans[0][0], reach, freq=timeframe, name="timestamp"))


def covers(frame: pd.DataFrame, window: FoldWindows, feature_set: str = "basic") -> bool:
    """Whether ``frame``'s candles hold the whole fold: its feature set's warm-up candles before the
    training window, and candles up to the end of the test window."""
    start, end = pd.Timestamp(window.train_start), pd.Timestamp(window.test_end)
    before = int((frame.index < start).sum())  # candles before the training window
    return before >= warmup_bars(feature_set) and frame.index[-1] + detect_timeframe(frame) >= end


def _mask(frame: pd.DataFrame, start: str, end: str) -> np.ndarray:
    index = frame.index
    return np.asarray((index >= pd.Timestamp(start)) & (index < pd.Timestamp(end)))


def _rows_between(frame: pd.DataFrame, start: str, end: str) -> int:
    return int(_mask(frame, start, end).sum())


def after_refused_gaps(frame: pd.DataFrame, label: str) -> tuple[pd.DataFrame, str]:
    """The candles after the newest gap longer than the gap policy accepts, and the label to plan them
    under (``frame`` and ``label`` unchanged when there is no such gap).

    Folds are laid in the stretch of history after it: years of an exchange's candles often hold one
    old outage, and refusing the whole walk-forward for it would make the user trim the file by hand.
    The cut is logged as a warning; a remainder too short for the windows is refused under the new label.
    """
    report = gap_report(frame)
    if not report.too_long:
        return frame, label
    gap = report.too_long[-1]
    after = frame.loc[frame.index > gap.end]
    ends = f"{gap.missing_bars} missing candles ending {gap.end:%Y-%m-%d %H:%M} UTC"
    if len(after):
        logger.warning("%s: %s (more than the %d the gap policy accepts); the folds use the history after "
                       "them, from %s UTC. Fill the gap in the data to use the history before it.",
                       label, ends, report.max_gap_bars, f"{after.index[0]:%Y-%m-%d %H:%M}")
    return after, f"{label} after its {ends} (fill them to use the history before)"


def used_span(frame: pd.DataFrame, windows: list[FoldWindows], feature_set: str = "basic") -> pd.DataFrame:
    """The candles any fold reads: from the warm-up before the first training row to the end."""
    first_row = int(np.argmax(np.asarray(frame.index >= pd.Timestamp(windows[0].train_start))))
    return frame.iloc[max(first_row - warmup_bars(feature_set), 0):]


def check_gaps(frame: pd.DataFrame, windows: list[FoldWindows], label: str, feature_set: str = "basic") -> None:
    """Apply the loader's gap policy to the span the folds use (old history outside it is not read)."""
    span = used_span(frame, windows, feature_set)
    gap_report(span).enforce(span, label)


def _market_slice(frame: pd.DataFrame, features: np.ndarray) -> MarketSlice:
    return MarketSlice(
        timestamps=frame.index.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy(),
        features=np.ascontiguousarray(features, dtype=np.float32),
        **{c: frame[c].to_numpy(dtype=np.float64, copy=True) for c in OHLCV_COLUMNS},
    )


def fold_splits(frame: pd.DataFrame, window: FoldWindows, source: str = "",
                feature_set: str = "basic", scaler: FeatureScaler | None = None) -> MarketSplits:
    """The fold's train / validation / test slices, features scaled by a scaler fitted on train rows only,
    or by ``scaler`` (already fitted: a model trained on another window sees these rows as it was taught)."""
    warmup = warmup_bars(feature_set)
    first_row = int(np.argmax(_mask(frame, window.train_start, window.test_end)))
    last_row = first_row + int(_mask(frame, window.train_start, window.test_end).sum())
    if first_row < warmup:
        raise DataError(f"{source or 'data'}: fold {window.fold} starts before {warmup} warm-up candles")
    span = frame.iloc[first_row - warmup:last_row]
    features = compute_market_features(span, feature_set)[warmup:]
    usable = span.iloc[warmup:]
    parts = [_mask(usable, getattr(window, f"{p}_start"), getattr(window, f"{p}_end"))
             for p in ("train", "validation", "test")]
    if scaler is None:
        scaler = FeatureScaler(feature_names=FEATURE_SETS[feature_set]).fit(features[parts[0]])
    scaled = scaler.transform(features)
    train, validation, test = (_market_slice(usable.loc[p], scaled[p]) for p in parts)
    timeframe = detect_timeframe(frame)
    return MarketSplits(train=train, validation=validation, test=test, scaler=scaler, timeframe=timeframe,
                        periods_per_year=periods_per_year(timeframe), gaps=tuple(find_gaps(span, timeframe)),
                        source=source)
