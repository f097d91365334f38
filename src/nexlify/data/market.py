"""Loading, validating, windowing and splitting OHLCV market data.

Every source (the bundled file, a user's CSV/Parquet, an exchange download, a DataFrame) goes
through ``load_ohlcv``, which returns a frame indexed by a UTC ``DatetimeIndex`` named ``timestamp``
with float64 columns ``open, high, low, close, volume``, sorted oldest first.

Accepted layouts
    * a header naming timestamp/open/high/low/close/volume in any case, or common aliases
      (date, time, datetime, open_time, ts; o/h/l/c; vol, v); extra columns are ignored;
    * Binance kline exports (12 columns, with or without header);
    * ccxt ``[ms, open, high, low, close, volume]`` rows without a header;
    * other exporters' layouts (``nexlify.data.csv_layout``): up to five banner lines above the
      header (CryptoDataDownload's URL), fields separated by ``;`` (with decimal commas), tabs or
      ``|``, ``Volume BTC``-style volume columns (the first is used), MetaTrader's ``<DATE>`` and
      ``<TIME>`` columns. An epoch ``unix`` column is preferred to a ``date`` column beside it.
    Timestamps may be epoch seconds, milliseconds, microseconds (newer Binance exports) or
    nanoseconds, told apart per value by magnitude, or ISO 8601 strings (naive ones are UTC).
    A file wholly in newest-first order is reversed; any other backwards step is refused.

Validation refuses, with a one-line ``DataError`` naming the file, the row (1-based file line, or
row number for a DataFrame, plus its timestamp) and how to fix it: missing columns, unparsable or
missing values, non-positive prices, high < low, open/close outside [low, high], negative volume,
duplicate or out-of-order timestamps, too few rows, missing/unreadable files, unknown extensions.

Gap policy
    The timeframe is the median spacing of the candles. A gap is any spacing longer than one
    timeframe; its ``missing_bars`` are the candles that would fit in it. **No candles are ever
    invented.** A gap of up to ``max_gap_bars`` (default 24) missing bars is kept as it is, logged as
    a warning and reported in ``frame.attrs["gaps"]`` (dicts with ``start``/``end`` = first/last
    missing candle time in ISO form and ``missing_bars``). Features treat the candles on either side
    as consecutive bars. A longer gap raises ``DataError``: choose a span without it (for example a
    smaller ``--data-days``) or fill it yourself. Spacings that are not whole multiples of the
    timeframe are refused. ``prepare_market`` applies the policy to the selected window only, so a
    long gap in old data does not block training on recent data.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from nexlify.data.csv_layout import (
    MAX_BANNER_LINES,
    column_key,
    decimal_points,
    joined_date_and_time,
    sniff_layout,
)
from nexlify.data.features import (
    FEATURE_SETS,
    WARMUP_BARS,
    FeatureScaler,
    compute_market_features,
    feature_names,
    feature_set_of,
    live_history_bars,
    warmup_bars,
)
from nexlify.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
DEFAULT_MAX_GAP_BARS = 24
# Epoch seconds below this (2001-09-09) predate every crypto market: such "timestamps" are row numbers.
ROW_NUMBER_LIMIT = 1e9
# Prices above this are no market's (and overflow equity arithmetic to infinity): a corrupted value.
MAX_PRICE = 1e15
# The fix named for a row whose value is wrong.
_CORRECT = "correct or remove that row"
# Each of train/validation/test must hold at least this many candles after the warm-up.
MIN_SPLIT_ROWS = 32
BUNDLED_FILE = "BTCUSDT_1h.csv.gz"

_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp",
        "unix",  # epoch numbers, preferred over a "date" column beside them (CryptoDataDownload)
        "time",
        "date",
        "datetime",
        "date_time",
        "open_time",
        "opentime",
        "open time",
        "ts",
        "time_utc",
        "timestamp_utc",
    ),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price"),
    "volume": ("volume", "vol", "v", "base_volume", "volume_base"),
}
_ALL_ALIASES = frozenset(a for names in _ALIASES.values() for a in names)
BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_base",
    "taker_quote",
    "ignore",
)
CCXT_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".txt", ".txt.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_MISSING_TOKENS = ("", "nan", "null", "none", "na", "n/a", "nat")
_HEADER_HINT = "timestamp,open,high,low,close,volume"
# Hostile-file limits: a candle row is < 300 bytes; 10 million rows are 19 years of 1-minute candles.
MAX_LINE_BYTES = 4096
MAX_ROWS = 10_000_000
_SCAN_CHUNK_BYTES = 1 << 20

T = TypeVar("T")


# ----------------------------------------------------------------------------- errors


class _Rows:
    """How to name row ``i`` of the raw data in messages (file line or DataFrame row)."""

    def __init__(self, label: str, first_number: int, unit: str) -> None:
        self.label, self.first_number, self.unit = label, first_number, unit

    def name(self, i: int, timestamp: pd.Timestamp | None = None) -> str:
        text = f"{self.unit} {self.first_number + int(i)}"
        if timestamp is not None and not pd.isna(timestamp):
            text += f" ({_fmt_ts(timestamp)})"
        return text

    def fail(
        self, positions: np.ndarray, problem: str, fix: str, stamps: pd.DatetimeIndex | None = None
    ) -> None:
        """Raise a one-line DataError for the first of ``positions`` (raw row numbers)."""
        first = int(positions[0])
        stamp = None if stamps is None else stamps[first]
        more = f" (and {len(positions) - 1} more rows)" if len(positions) > 1 else ""
        raise DataError(f"{self.label}: {self.name(first, stamp)}: {problem}{more}. Fix: {fix}")

    def reject(
        self, bad: np.ndarray, problem: str | Callable[[int], str], fix: str, stamps: pd.DatetimeIndex | None = None
    ) -> None:
        """``fail`` for the rows where the mask ``bad`` is True, if there are any; ``problem`` is the
        message, or a function of the first bad row's position that words it (to quote its value)."""
        if bad.any():
            positions = np.flatnonzero(bad)
            self.fail(positions, problem(int(positions[0])) if callable(problem) else problem, fix, stamps)


def _fmt_ts(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S UTC")


# ----------------------------------------------------------------------------- gaps


@dataclass(frozen=True)
class Gap:
    """Missing candles: ``start``/``end`` are the first and last missing candle times (UTC)."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing_bars: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form stored in ``frame.attrs["gaps"]``."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "missing_bars": self.missing_bars,
        }


@dataclass(frozen=True)
class GapReport:
    """The gap policy applied to one frame: which gaps exist and which are too long to accept."""

    timeframe: pd.Timedelta
    gaps: tuple[Gap, ...]
    max_gap_bars: int | None = DEFAULT_MAX_GAP_BARS

    @property
    def total_missing_bars(self) -> int:
        """Missing candles over all gaps."""
        return sum(g.missing_bars for g in self.gaps)

    @property
    def too_long(self) -> tuple[Gap, ...]:
        """Gaps longer than ``max_gap_bars`` (none when the limit is ``None``)."""
        if self.max_gap_bars is None:
            return ()
        return tuple(g for g in self.gaps if g.missing_bars > self.max_gap_bars)

    def summary(self) -> str:
        """One line for logs and reports."""
        if not self.gaps:
            return "no gaps"
        worst = max(self.gaps, key=lambda g: g.missing_bars)
        return (
            f"{len(self.gaps)} gap(s), {self.total_missing_bars} missing candle(s) in all; longest "
            f"{worst.missing_bars} bar(s) from {_fmt_ts(worst.start)}; kept as is, no candles invented"
        )

    def enforce(self, frame: pd.DataFrame, source: str, suggest_days: bool = True) -> None:
        """Raise DataError for a gap longer than the limit, suggesting a span without it
        (``--data-days N`` where a day count chooses the span, else a file that starts after it)."""
        if not self.too_long:
            return
        gap = self.too_long[-1]  # the most recent one decides which recent span is clean
        after = frame.index[frame.index > gap.end]
        days = int((after[-1] - after[0] + self.timeframe) / pd.Timedelta(days=1)) if len(after) else 0
        if not suggest_days:
            hint = f"data that starts after {_fmt_ts(gap.end)}"
        else:
            hint = f"--data-days {days} or less" if days >= 1 else "a span that ends before it"
        raise DataError(
            f"{source}: {gap.missing_bars} candles are missing from {_fmt_ts(gap.start)} "
            f"to {_fmt_ts(gap.end)}, "
            f"more than the {self.max_gap_bars} the gap policy accepts. Fix: choose a span without it "
            f"(e.g. {hint}) or fill the gap in the data."
        )


def detect_timeframe(frame: pd.DataFrame) -> pd.Timedelta:
    """The candle timeframe: the median spacing of the (sorted) timestamps."""
    index = _index_of(frame)
    if len(index) < 2:
        raise DataError("cannot detect the timeframe from fewer than 2 candles. Fix: provide more data.")
    spacing = np.diff(index.asi8)
    return pd.Timedelta(int(np.median(spacing)), unit="ns")


def find_gaps(frame: pd.DataFrame, timeframe: pd.Timedelta | None = None) -> list[Gap]:
    """All gaps (spacing longer than one timeframe), oldest first. Off-grid spacing is refused."""
    index = _index_of(frame)
    if len(index) < 2:
        return []
    tf = detect_timeframe(frame) if timeframe is None else pd.Timedelta(timeframe)
    tf_ns = tf.value
    spacing = np.diff(index.asi8)
    off_grid = np.flatnonzero(spacing % tf_ns != 0)
    if off_grid.size:
        i = int(off_grid[0]) + 1
        source = frame.attrs.get("source", "data")
        step = pd.Timedelta(int(spacing[i - 1]), unit="ns")
        raise DataError(
            f"{source}: candle at {_fmt_ts(index[i])} is {step} after the "
            f"previous one, not a whole number of {tf} bars. Fix: use candles of a single timeframe."
        )
    gaps = []
    for i in np.flatnonzero(spacing > tf_ns):
        missing = int(spacing[i] // tf_ns) - 1
        gaps.append(Gap(start=index[i] + tf, end=index[i + 1] - tf, missing_bars=missing))
    return gaps


def gap_report(frame: pd.DataFrame, max_gap_bars: int | None = DEFAULT_MAX_GAP_BARS) -> GapReport:
    """Apply ``find_gaps`` and wrap the result with the policy's limit (does not raise)."""
    tf = detect_timeframe(frame)
    return GapReport(timeframe=tf, gaps=tuple(find_gaps(frame, tf)), max_gap_bars=max_gap_bars)


def _index_of(frame: pd.DataFrame) -> pd.DatetimeIndex:
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError("expected a frame indexed by timestamps; load it with load_ohlcv first.")
    # asi8 counts in the index's own unit (pandas 3 parses to microseconds): work in nanoseconds.
    return frame.index.as_unit("ns")


# ----------------------------------------------------------------------------- reading


def _bundled_path() -> Path:
    return Path(str(resources.files("nexlify.data").joinpath("bundled", BUNDLED_FILE)))


def _scan_csv(path: Path, label: str) -> list[tuple[int, str]]:
    """The first few non-blank lines as ``(line_number, text)``, after one streaming pass (constant
    memory) that refuses a file with a line longer than ``MAX_LINE_BYTES`` or more than ``MAX_ROWS``
    lines before pandas reads it.

    Without it a 1 GB file with no newline is one "line" that the CSV reader holds several times over.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    too_long = DataError(f"{label}: a line is longer than {MAX_LINE_BYTES:,} bytes, which no candle row is; "
                         "this is not a CSV of candles. Fix: pass an OHLCV CSV file.")
    lines, current = 0, 0
    with opener(path, "rb") as handle:  # type: ignore[operator]
        if handle.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise DataError(f"{label}: the file is UTF-16 text (as MetaTrader exports it), not UTF-8. Fix: save it "
                            "as UTF-8, e.g. iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8.csv")
        handle.seek(0)
        while chunk := handle.read(_SCAN_CHUNK_BYTES):
            parts = chunk.split(b"\n")
            longest_inside = max(map(len, parts[1:-1]), default=0)
            if current + len(parts[0]) > MAX_LINE_BYTES or longest_inside > MAX_LINE_BYTES:
                raise too_long
            current = len(parts[-1]) + (current if len(parts) == 1 else 0)
            if current > MAX_LINE_BYTES:
                raise too_long
            lines += len(parts) - 1
            if lines > MAX_ROWS:
                raise DataError(f"{label}: more than {MAX_ROWS:,} lines, more candles than Nexlify trains on. "
                                "Fix: pass a shorter span of the data.")
        handle.seek(0)
        first: list[tuple[int, str]] = []
        for number, line in enumerate(handle, start=1):  # every line is short now
            if line.strip():
                first.append((number, line.decode("utf-8-sig", errors="replace").rstrip("\r\n")))
                if len(first) > MAX_BANNER_LINES:
                    break
    return first


def _read_file(path: Path) -> tuple[pd.DataFrame, _Rows]:
    label = str(path)
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{label}: file not found. Fix: check the path, or omit it to use the bundled data.")
    if not path.is_file():
        raise DataError(f"{label}: not a file. Fix: pass a CSV (.csv, .csv.gz) or Parquet file.")
    if path.stat().st_size == 0:
        raise DataError(f"{label}: the file is empty. Fix: pass a file with OHLCV candles.")
    if name.endswith(_PARQUET_SUFFIXES):
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise DataError(
                f"{label}: reading Parquet needs pyarrow. Fix: pip install nexlify[parquet]."
            ) from exc
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise DataError(f"{label}: unreadable Parquet file ({exc}). Fix: re-export the file.") from exc
        return frame, _Rows(label, 1, "row")
    if not name.endswith(_CSV_SUFFIXES):
        raise DataError(f"{label}: unsupported file type. Fix: use .csv, .csv.gz or .parquet.")
    try:
        layout = sniff_layout(_scan_csv(path, label), _ALL_ALIASES)
        has_header = layout.has_header
        # Strings in, our own parsing after: that is what lets errors name the exact line and value.
        frame = pd.read_csv(
            path,
            sep=layout.separator,
            skiprows=layout.skip_lines,
            header=0 if has_header else None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"{label}: unreadable file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})."
            " Fix: check it is a plain or gzip-compressed CSV."
        ) from exc
    if not has_header:
        if frame.shape[1] == len(CCXT_COLUMNS):
            frame.columns = list(CCXT_COLUMNS)
        elif frame.shape[1] == len(BINANCE_KLINE_COLUMNS):
            frame.columns = list(BINANCE_KLINE_COLUMNS)
        else:
            raise DataError(
                f"{label}: line {layout.first_data_line}: no header and {frame.shape[1]} columns. Fix: add a "
                f"header row '{_HEADER_HINT}', or use 6 columns (ccxt) or 12 (Binance klines)."
            )
    if layout.separator != ",":
        frame = decimal_points(frame)
    return frame, _Rows(label, layout.first_data_line, "line")


def _read_source(source: str | Path | pd.DataFrame | None) -> tuple[pd.DataFrame, _Rows, str]:
    if source is None:
        path = _bundled_path()
        frame, rows = _read_file(path)
        return frame, rows, f"bundled:{BUNDLED_FILE}"
    if isinstance(source, pd.DataFrame):
        # A frame that came from load_ohlcv/download_ohlcv keeps naming where it came from.
        label = str(source.attrs.get("source", "DataFrame"))
        return source.copy(), _Rows(label, 1, "row"), label
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        frame, rows = _read_file(path)
        return frame, rows, str(path)
    raise DataError(
        f"unsupported data source of type {type(source).__name__}. Fix: pass a file path or DataFrame."
    )


# ----------------------------------------------------------------------------- normalising


def _pick_columns(frame: pd.DataFrame, rows: _Rows) -> dict[str, Any]:
    lowered: dict[str, Any] = {}
    for col in frame.columns:
        lowered.setdefault(column_key(col), col)
    picked: dict[str, Any] = {}
    chosen: dict[str, str] = {}  # canonical name -> the alias that supplied it
    # Without a timestamp column, a datetime index (our own saved Parquet, a user's DataFrame) or an
    # index named like one counts as the timestamps.
    index_name = str(frame.index.name).strip().lower() if frame.index.name is not None else ""
    if not any(a in lowered for a in _ALIASES["timestamp"]) and (
        isinstance(frame.index, pd.DatetimeIndex) or index_name in _ALIASES["timestamp"]
    ):
        picked["timestamp"] = pd.Series(frame.index, index=frame.index)
    for canonical, aliases in _ALIASES.items():
        for alias in aliases if canonical not in picked else ():
            if alias in lowered:
                picked[canonical], chosen[canonical] = frame[lowered[alias]], alias
                break
    if "volume" not in picked:
        # "Volume BTC" / "Volume USDT" (CryptoDataDownload): the first, the base asset's, as ours is.
        named = [key for key in lowered if key.startswith("volume")]
        if named:
            picked["volume"] = frame[lowered[named[0]]]
    if chosen.get("timestamp") in ("time", "date") and "date" in lowered and "time" in lowered:
        joined = joined_date_and_time(frame[lowered["date"]], frame[lowered["time"]])
        if joined is not None:
            picked["timestamp"] = joined
    missing = [c for c in _ALIASES if c not in picked]
    if missing:
        found = ", ".join(str(c) for c in frame.columns) or "none"
        raise DataError(
            f"{rows.label}: missing column(s) {', '.join(missing)} (found: {found}). Fix: add a header "
            f"row '{_HEADER_HINT}' (aliases like date, open_time, vol are accepted)."
        )
    return picked


def _is_blank(series: pd.Series) -> np.ndarray:
    """True where a raw cell is missing: NaN/None/NaT, empty, or a token such as "NaN" or "null"."""
    blank = series.isna().to_numpy(dtype=bool, copy=True)
    if not pd.api.types.is_numeric_dtype(series):
        text = series.astype(str).str.strip().str.lower()
        blank |= text.isin(_MISSING_TOKENS).to_numpy(dtype=bool)
    return blank


def _parse_timestamps(series: pd.Series, rows: _Rows) -> pd.DatetimeIndex:
    fix = "use ISO 8601 (2024-01-31 13:00:00) or epoch seconds/milliseconds"
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
        index = pd.DatetimeIndex(series)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    else:
        rows.reject(_is_blank(series), "missing timestamp", "fill in or remove that row")
        numeric = (
            pd.to_numeric(series, errors="coerce") if not pd.api.types.is_numeric_dtype(series) else series
        )
        numeric_ok = numeric.notna().to_numpy()
        if numeric_ok.all():
            values = numeric.to_numpy(dtype=np.float64)
            if len(values) and np.nanmax(np.abs(values)) < ROW_NUMBER_LIMIT:
                rows.fail(np.arange(len(values)), f"timestamps {values[0]:g} .. {values[-1]:g} look like row "
                          "numbers, not times (as epoch seconds they fall in the 1970s-1990s, before any "
                          "crypto market)", fix)
            index = _epoch_to_index(numeric.to_numpy(), rows)
        elif numeric_ok.any():
            rows.reject(~numeric_ok, lambda i: f"unparsable timestamp {series.iloc[i]!r} among epoch numbers", fix)
            raise AssertionError  # unreachable; keeps type checkers happy
        else:
            parsed = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
            rows.reject(parsed.isna().to_numpy(), lambda i: f"unparsable timestamp {series.iloc[i]!r}", fix)
            index = pd.DatetimeIndex(parsed)
    rows.reject(np.asarray(index.isna()), "missing timestamp", "fill in or remove that row")
    return index.as_unit("ns").rename("timestamp")


def _epoch_to_index(values: np.ndarray, rows: _Rows) -> pd.DatetimeIndex:
    """Epoch numbers to UTC; the unit is chosen per value by magnitude (s < 1e11 <= ms < 1e14 <= us
    < 1e17 <= ns), so files that switch from ms to us (Binance, 2025) load correctly."""
    x = np.asarray(values)
    mag = np.abs(x.astype(np.float64))
    rows.reject(~np.isfinite(mag) | (mag >= 9.2e18), lambda i: f"unparsable timestamp {x[i].item()!r}",
                "use epoch seconds/milliseconds or ISO 8601")
    factor = np.where(mag < 1e11, 10**9, np.where(mag < 1e14, 10**6, np.where(mag < 1e17, 10**3, 1)))
    if np.issubdtype(x.dtype, np.integer):
        ns = x.astype(np.int64) * factor.astype(np.int64)
    else:
        ns = np.round(x.astype(np.float64) * factor).astype(np.int64)
    return pd.DatetimeIndex(pd.to_datetime(ns, unit="ns", utc=True))


def _parse_values(series: pd.Series, name: str, rows: _Rows, stamps: pd.DatetimeIndex) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        blank = np.isnan(values)
    else:
        blank = _is_blank(series)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        rows.reject(np.isnan(values) & ~blank, lambda i: f"unparsable {name} value {series.iloc[i]!r}",
                    "use plain numbers (no thousands separators or units)", stamps)
    rows.reject(blank, f"missing {name} value (NaN/empty)", "fill in or remove that row", stamps)
    rows.reject(~np.isfinite(values), f"{name} is not finite", _CORRECT, stamps)
    return values


def _check_within_range(col: str, values: np.ndarray, low: np.ndarray, high: np.ndarray, rows: _Rows,
                        stamps: pd.DatetimeIndex) -> None:
    rows.reject((values < low) | (values > high),
                lambda i: f"{col} {float(values[i])!r} is outside [low {float(low[i])!r}, high {float(high[i])!r}]",
                _CORRECT, stamps)


def _check_price(col: str, values: np.ndarray, rows: _Rows, stamps: pd.DatetimeIndex) -> None:
    rows.reject(values <= 0, lambda i: f"{col} price {float(values[i])!r} is not positive", _CORRECT, stamps)
    rows.reject(values > MAX_PRICE,
                lambda i: f"{col} price {float(values[i])!r} is implausibly large (over {MAX_PRICE:g})",
                _CORRECT, stamps)


def _normalise(raw: pd.DataFrame, rows: _Rows) -> pd.DataFrame:
    picked = _pick_columns(raw, rows)
    stamps = _parse_timestamps(picked["timestamp"].reset_index(drop=True), rows)
    data = {c: _parse_values(picked[c].reset_index(drop=True), c, rows, stamps) for c in OHLCV_COLUMNS}
    h, lo, v = data["high"], data["low"], data["volume"]
    for col in PRICE_COLUMNS:
        _check_price(col, data[col], rows, stamps)
    rows.reject(h < lo, lambda i: f"high {float(h[i])!r} is below low {float(lo[i])!r}", _CORRECT, stamps)
    for col in ("open", "close"):
        _check_within_range(col, data[col], lo, h, rows, stamps)
    rows.reject(v < 0, lambda i: f"volume {float(v[i])!r} is negative", _CORRECT, stamps)

    frame = pd.DataFrame(data, index=stamps)
    ns = stamps.asi8
    step = np.diff(ns)
    if len(step) and (step < 0).all():
        frame = frame.iloc[::-1]  # a wholly newest-first export is fine; mixed order is not
        step = -step[::-1]
        order = np.arange(len(ns))[::-1]
    else:
        order = np.arange(len(ns))
    dup = np.flatnonzero(step == 0)
    if dup.size:
        rows.fail(order[dup + 1], "duplicate timestamp", "remove the repeated candle", stamps)
    back = np.flatnonzero(step < 0)
    if back.size:
        rows.fail(
            order[back + 1],
            "timestamp goes backwards (earlier than the row before)",
            "sort the file by time and remove overlapping ranges",
            stamps,
        )
    frame.index.name = "timestamp"
    return frame


def load_ohlcv(
    source: str | Path | pd.DataFrame | None = None,
    *,
    min_rows: int = 2,
    max_gap_bars: int | None = DEFAULT_MAX_GAP_BARS,
    log_gaps: bool = True,
) -> pd.DataFrame:
    """Load, normalise and validate OHLCV candles (see the module docstring for layouts and policy).

    ``source`` is a CSV/CSV.gz/Parquet path, a DataFrame, or ``None`` for the bundled BTC/USDT 1h file.
    ``max_gap_bars=None`` reports gaps without refusing long ones; ``log_gaps=False`` skips the warning.
    Gaps land in ``frame.attrs["gaps"]``.
    """
    raw, rows, source_label = _read_source(source)
    frame = _normalise(raw, rows)
    if len(frame) < max(min_rows, 1):
        raise DataError(
            f"{rows.label}: too few rows ({len(frame)} candles, at least {max(min_rows, 1)} needed). "
            "Fix: provide a longer history."
        )
    frame.attrs["source"] = source_label
    frame.attrs["gaps"] = []
    if len(frame) >= 2:
        report = gap_report(frame, max_gap_bars)
        report.enforce(frame, source_label, suggest_days=False)  # a whole file: no day count chooses its span
        frame.attrs["gaps"] = [g.to_dict() for g in report.gaps]
        if report.gaps and log_gaps:
            logger.warning("%s: %s", source_label, report.summary())
    return frame


# ----------------------------------------------------------------------------- windows and splits


def select_recent_days(frame: pd.DataFrame, days: int | None) -> pd.DataFrame:
    """The candles of the last ``days`` days, counted back from the last candle; ``None`` = all."""
    if days is None:
        return frame
    if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or days < 1:
        raise DataError(
            f"data days must be a whole number >= 1, got {days!r}. "
            "Fix: pass e.g. --data-days 180, or omit it to use all data."
        )
    if len(frame) == 0:
        raise DataError("cannot select recent days from an empty frame.")
    index = _index_of(frame)
    window = frame.loc[index > index[-1] - pd.Timedelta(days=int(days))].copy()
    window.attrs = dict(frame.attrs)
    if len(window) >= 2:
        window.attrs["gaps"] = [g.to_dict() for g in find_gaps(window, detect_timeframe(frame))]
    else:
        window.attrs["gaps"] = []
    return window


def _split_sizes(n: int, train_fraction: float, validation_fraction: float) -> tuple[int, int, int]:
    for name, value in (("train_fraction", train_fraction), ("validation_fraction", validation_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
            raise ConfigError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}.")
    if train_fraction + validation_fraction >= 1.0:
        raise ConfigError(
            f"train_fraction + validation_fraction must be below 1 to leave a test part, got "
            f"{train_fraction} + {validation_fraction}."
        )
    # The epsilon keeps 100 * 0.15 (= 15.000000000000002 or 14.999999999999998) at 15.
    n_train = int(math.floor(n * train_fraction + 1e-9))
    n_val = int(math.floor(n * validation_fraction + 1e-9))
    return n_train, n_val, n - n_train - n_val


def split_chronological(
    data: T | int,
    train_fraction: float = 0.7,
    validation_fraction: float = 0.15,
) -> tuple[Any, Any, Any]:
    """Cut ``data`` into consecutive train / validation / test parts, oldest first.

    ``data`` is a DataFrame (split by position), any sliceable sequence/array, or an int length (then
    three ``slice`` objects are returned). Sizes are ``floor(n * fraction)``; test gets the rest.
    """
    n = int(data) if isinstance(data, (int, np.integer)) else len(data)  # type: ignore[arg-type]
    n_train, n_val, n_test = _split_sizes(n, train_fraction, validation_fraction)
    if min(n_train, n_val, n_test) < 1:
        raise DataError(
            f"cannot split {n} rows into non-empty train/validation/test parts "
            f"({n_train}/{n_val}/{n_test}). Fix: use more data."
        )
    cuts = (slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, n))
    if isinstance(data, (int, np.integer)):
        return cuts
    if isinstance(data, (pd.DataFrame, pd.Series)):
        return tuple(data.iloc[c] for c in cuts)  # type: ignore[return-value]
    return tuple(data[c] for c in cuts)  # type: ignore[index]


# ----------------------------------------------------------------------------- prepared market


@dataclass(frozen=True, eq=False)
class MarketSlice:
    """One contiguous stretch of candles as numpy arrays, ready for the environment.

    ``timestamps`` is ``datetime64[ns]`` holding UTC wall time without a timezone (numpy has none).
    Prices/volume are float64; ``features`` is float32 ``[T, n]`` (n = the feature set's width:
    9 basic, 15 trend), already normalised.
    """

    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        for name in OHLCV_COLUMNS:
            if getattr(self, name).shape != (n,):
                raise ValueError(f"MarketSlice.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        widths = sorted({len(names) for names in FEATURE_SETS.values()})
        if self.features.ndim != 2 or self.features.shape[0] != n or self.features.shape[1] not in widths:
            raise ValueError(
                f"MarketSlice.features has shape {self.features.shape}, expected ({n}, one of {widths})"
            )

    def __len__(self) -> int:
        return len(self.timestamps)

    def to_frame(self, include_features: bool = False) -> pd.DataFrame:
        """OHLCV frame with a UTC ``timestamp`` index (plus feature columns if asked)."""
        index = pd.DatetimeIndex(self.timestamps).tz_localize("UTC").rename("timestamp")
        data: dict[str, np.ndarray] = {c: getattr(self, c) for c in OHLCV_COLUMNS}
        if include_features:
            names = next(v for v in FEATURE_SETS.values() if len(v) == self.features.shape[1])
            data.update({name: self.features[:, i] for i, name in enumerate(names)})
        return pd.DataFrame(data, index=index)


@dataclass(frozen=True, eq=False)
class MarketSplits:
    """Chronological train/validation/test slices sharing one scaler fitted on train only."""

    train: MarketSlice
    validation: MarketSlice
    test: MarketSlice
    scaler: FeatureScaler
    timeframe: pd.Timedelta
    periods_per_year: float
    gaps: tuple[Gap, ...] = field(default_factory=tuple)
    source: str = ""
    # How to find the data again: "bundled", an absolute file path, or None (a DataFrame in memory).
    origin: str | None = None
    # First and last candle of the selected window (warm-up included), ISO 8601 UTC: with ``origin``
    # this rebuilds exactly these splits (``prepare_market(origin, window=...)``).
    window: tuple[str, str] = ("", "")
    window_sha256: str = ""  # of the window's timestamps and OHLCV values: any edited candle shows

    def record(self) -> dict[str, Any]:
        """JSON-safe description saved with a model: where the data is, its window and split sizes."""
        return {
            "data_source": self.source,
            "data_origin": self.origin,
            "data_window": list(self.window),
            "data_sha256": self.window_sha256,
            "split_rows": {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)},
            "test_window": [_iso(self.test.timestamps[0]), _iso(self.test.timestamps[-1])],
        }


def _iso(stamp: np.datetime64 | pd.Timestamp) -> str:
    ts = pd.Timestamp(stamp)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


def data_origin(source: str | Path | pd.DataFrame | None) -> str | None:
    """How to find ``source`` again: "bundled", an absolute file path, or None (in memory)."""
    if source is None:
        return "bundled"
    if isinstance(source, (str, Path)):
        return str(Path(source).expanduser().resolve())
    return None


def periods_per_year(timeframe: pd.Timedelta) -> float:
    """Candles per 365-day year (8760 for 1h), for annualising Sharpe ratios."""
    return pd.Timedelta(days=365) / pd.Timedelta(timeframe)


def _slice(frame: pd.DataFrame, features: np.ndarray) -> MarketSlice:
    return MarketSlice(
        timestamps=frame.index.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy(),
        features=np.ascontiguousarray(features, dtype=np.float32),
        **{c: frame[c].to_numpy(dtype=np.float64, copy=True) for c in OHLCV_COLUMNS},
    )


def join_markets(slices: list[MarketSlice] | tuple[MarketSlice, ...]) -> MarketSlice:
    """Several markets' slices end to end as one slice, for training one policy on all of them.

    Each market's prices are multiplied by one constant so that it opens where the previous one
    closed. Every return inside a market (and so every fill, fee and reward ratio) is unchanged, the
    features (scale-free, already normalised) are kept as they are, and no step jumps from one
    price level to another: the only foreign step is the one bar that crosses into the next market,
    which moves by that market's own first bar (open to close). Timestamps are kept per market, so
    they restart at each join.
    """
    if not slices:
        raise DataError("join_markets needs at least one market slice")
    widths = {s.features.shape[1] for s in slices}
    if len(widths) != 1:
        raise DataError(f"cannot join markets with different feature sets (widths {sorted(widths)})")
    factors = [1.0]
    for previous, current in zip(slices, slices[1:], strict=False):
        factors.append(factors[-1] * previous.close[-1] / current.open[0])
    return MarketSlice(
        timestamps=np.concatenate([s.timestamps for s in slices]),
        features=np.ascontiguousarray(np.concatenate([s.features for s in slices]), dtype=np.float32),
        **{c: np.concatenate([getattr(s, c) * (f if c in PRICE_COLUMNS else 1.0)
                              for s, f in zip(slices, factors, strict=True)]) for c in OHLCV_COLUMNS},
    )


def market_slice_from_frame(
    frame: pd.DataFrame, scaler: FeatureScaler, *, max_gap_bars: int | None = DEFAULT_MAX_GAP_BARS
) -> MarketSlice:
    """Evaluate-on-any-data helper: validate ``frame``, compute the scaler's feature set, drop the
    warm-up rows and normalise with a saved ``scaler``."""
    feature_set = feature_set_of(scaler.feature_names)
    warmup = warmup_bars(feature_set)
    # A frame that went through load_ohlcv already (it carries its gaps) has had its gaps logged.
    frame = load_ohlcv(frame, min_rows=warmup + 1, max_gap_bars=max_gap_bars, log_gaps="gaps" not in frame.attrs)
    features = compute_market_features(frame, feature_set)
    return _slice(frame.iloc[warmup:], scaler.transform(features[warmup:]))


def _rows_needed(train_fraction: float, validation_fraction: float) -> int:
    n = MIN_SPLIT_ROWS
    while min(_split_sizes(n, train_fraction, validation_fraction)) < MIN_SPLIT_ROWS:
        n += 1
    return n + WARMUP_BARS


def with_lead_in(frame: pd.DataFrame, window: pd.DataFrame, feature_set: str) -> pd.DataFrame:
    """``window`` preceded by the extra history a long-look-back ``feature_set`` needs, when ``frame``
    has it: with ``basic`` the window is returned as is (its first ``WARMUP_BARS`` rows are the
    warm-up); with ``trend`` up to ``warmup_bars("trend") - WARMUP_BARS`` earlier rows are prepended,
    so the same rows of the window stay usable."""
    extra = warmup_bars(feature_set) - WARMUP_BARS
    if extra <= 0 or len(window) == 0:
        return window
    start = int(frame.index.get_loc(window.index[0]))
    lead_in = frame.iloc[max(0, start - extra) : start]
    combined = pd.concat([lead_in, window])
    combined.attrs = dict(window.attrs)
    return combined


def prepare_market(
    source: str | Path | pd.DataFrame | None = None,
    data_days: int | None = 180,
    train_fraction: float = 0.7,
    validation_fraction: float = 0.15,
    *,
    max_gap_bars: int | None = DEFAULT_MAX_GAP_BARS,
    window: tuple[str, str] | list[str] | None = None,
    feature_set: str = "basic",
) -> MarketSplits:
    """Load, keep the last ``data_days`` (or exactly ``window``: first and last candle, ISO 8601),
    compute features once, drop warm-up, split, and scale.

    Features are causal, so computing them on the whole window leaks nothing forward; the scaler is
    fitted on the train part only and applied to all three. A ``feature_set`` with a longer warm-up
    reads it from history before the window where the data has it (``with_lead_in``).
    """
    rows = _split_rows(source, data_days, train_fraction, validation_fraction, max_gap_bars, window, feature_set)
    scaler = FeatureScaler(feature_names=feature_names(feature_set)).fit(rows.features[rows.parts[0]])
    return rows.splits(scaler)


def prepare_markets(
    sources: list[str | Path | pd.DataFrame | None] | tuple[str | Path | pd.DataFrame | None, ...],
    data_days: int | None = 180,
    train_fraction: float = 0.7,
    validation_fraction: float = 0.15,
    *,
    max_gap_bars: int | None = DEFAULT_MAX_GAP_BARS,
    feature_set: str = "basic",
    per_market: Callable[[MarketSplits], MarketSplits] | None = None,
) -> MarketSplits:
    """Several markets as one run: ``prepare_market`` on each, one scaler fitted on all their
    training rows together, and each split the markets' splits joined end to end (``pool_markets``).
    ``per_market`` (e.g. training-data augmentation) is applied to each market's splits before the join.

    One source gives exactly ``prepare_market`` (then ``per_market``). Several cannot be rebuilt from
    one origin, so the splits record none (``nexlify evaluate`` then needs ``--data``).
    """
    each_one = per_market or (lambda splits: splits)
    if len(sources) == 1:
        return each_one(prepare_market(sources[0], data_days, train_fraction, validation_fraction,
                                       max_gap_bars=max_gap_bars, feature_set=feature_set))
    markets = [_split_rows(s, data_days, train_fraction, validation_fraction, max_gap_bars, None, feature_set)
               for s in sources]
    timeframes = {m.report.timeframe for m in markets}
    if len(timeframes) != 1:
        raise DataError(f"the markets have different candle lengths ({', '.join(map(str, sorted(timeframes)))}); "
                        "pool files of one timeframe")
    train_rows = np.concatenate([m.features[m.parts[0]] for m in markets])
    scaler = FeatureScaler(feature_names=feature_names(feature_set)).fit(train_rows)
    return pool_markets([each_one(m.splits(scaler)) for m in markets])


def pool_markets(each: list[MarketSplits]) -> MarketSplits:
    """Markets' splits (one scaler, one timeframe) as one run: each split joined end to end; the
    pool records no origin (several files cannot be found again from one)."""
    return MarketSplits(
        train=join_markets([s.train for s in each]),
        validation=join_markets([s.validation for s in each]),
        test=join_markets([s.test for s in each]),
        scaler=each[0].scaler,
        timeframe=each[0].timeframe,
        periods_per_year=each[0].periods_per_year,
        gaps=tuple(g for s in each for g in s.gaps),
        source=" + ".join(s.source for s in each),
    )


@dataclass(frozen=True, eq=False)
class _SplitRows:
    """One market's usable candles, unscaled features and split positions, before any scaling."""

    usable: pd.DataFrame
    features: np.ndarray
    parts: tuple[slice, slice, slice]
    report: GapReport
    label: str
    origin: str | None
    window: tuple[str, str]
    sha256: str

    def splits(self, scaler: FeatureScaler) -> MarketSplits:
        scaled = scaler.transform(self.features)
        train, validation, test = (_slice(self.usable.iloc[p], scaled[p]) for p in self.parts)
        return MarketSplits(train=train, validation=validation, test=test, scaler=scaler,
                            timeframe=self.report.timeframe, periods_per_year=periods_per_year(self.report.timeframe),
                            gaps=self.report.gaps, source=self.label, origin=self.origin, window=self.window,
                            window_sha256=self.sha256)


def _split_rows(source: str | Path | pd.DataFrame | None, data_days: int | None, train_fraction: float,
                validation_fraction: float, max_gap_bars: int | None, window: tuple[str, str] | list[str] | None,
                feature_set: str) -> _SplitRows:
    needed = _rows_needed(train_fraction, validation_fraction)
    # The gap policy is applied to the selected window below, not to history the run never uses.
    frame = load_ohlcv(source, max_gap_bars=None, log_gaps=False)
    label = frame.attrs["source"]
    selected = select_recent_days(frame, data_days) if window is None else select_window(frame, window)
    if len(selected) < needed:
        tf = detect_timeframe(frame)
        days_needed = math.ceil(needed * tf / pd.Timedelta(days=1))
        if len(frame) >= needed:
            fix = f"use a larger --data-days (at least {days_needed})"
        else:
            fix = f"use a longer file (this one has {len(frame)} candles in all)"
        raise DataError(
            f"{label}: the selected window has {len(selected)} candles but at least {needed} are needed "
            f"({WARMUP_BARS} warm-up + {MIN_SPLIT_ROWS} or more per split). Fix: {fix}."
        )
    report = gap_report(selected, max_gap_bars)
    report.enforce(selected, label)
    if report.gaps:
        logger.warning("%s (selected window): %s", label, report.summary())

    history = with_lead_in(frame, selected, feature_set)
    warmup = warmup_bars(feature_set)
    if len(history) - warmup < needed - WARMUP_BARS:
        raise DataError(
            f"{label}: the {feature_set!r} features need {warmup} candles of warm-up and "
            f"{needed - WARMUP_BARS} more to split, but the selected window and the history before it "
            f"hold {len(history)}. Fix: use a longer file or feature_set 'basic'."
        )
    features = compute_market_features(history, feature_set)[warmup:]
    usable = history.iloc[warmup:]
    parts = split_chronological(len(usable), train_fraction, validation_fraction)
    return _SplitRows(usable, features, parts, report, label, data_origin(source),
                      (_iso(selected.index[0]), _iso(selected.index[-1])),
                      candles_sha256(history))  # the window and any lead-in the features read


def candles_sha256(frame: pd.DataFrame) -> str:
    """sha256 of a loaded frame's timestamps and OHLCV values (float64): the identity of its candles."""
    digest = hashlib.sha256(_index_of(frame).asi8.tobytes())
    digest.update(np.ascontiguousarray(frame[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def select_window(frame: pd.DataFrame, window: tuple[str, str] | list[str]) -> pd.DataFrame:
    """Exactly the candles from ``window[0]`` to ``window[1]`` (inclusive); DataError if the data no
    longer holds both ends (the file was cut or replaced)."""
    try:
        start, end = (pd.Timestamp(t) for t in window)
    except (TypeError, ValueError):
        raise DataError(f"invalid recorded data window {window!r}") from None
    index = _index_of(frame)
    if not (len(index) and start in index and end in index):
        span = f"{_fmt_ts(index[0])} .. {_fmt_ts(index[-1])}" if len(index) else "no candles"
        raise DataError(
            f"{frame.attrs.get('source', 'data')}: the recorded window {_fmt_ts(start)} .. {_fmt_ts(end)} "
            f"is no longer in the data (it holds {span}). Fix: use the data the model was trained on."
        )
    selected = frame.loc[start:end].copy()
    selected.attrs = dict(frame.attrs)
    return selected


def market_state_from_candles(recent: pd.DataFrame, scaler: FeatureScaler) -> np.ndarray:
    """Normalised market state of the last candle in ``recent`` (live use), in the scaler's feature set.

    ``recent`` goes through the loader's normalisation and validation and needs at least
    ``warmup_bars + 1`` rows; pass ``live_history_bars`` or more so MACD matches training closely.
    """
    feature_set = feature_set_of(scaler.feature_names)
    needed = warmup_bars(feature_set) + 1
    if len(recent) < needed:
        raise DataError(
            f"live market state needs at least {needed} recent candles, got {len(recent)}. "
            f"Fix: pass the last {live_history_bars(feature_set)} candles (at least {needed})."
        )
    frame = load_ohlcv(recent, min_rows=needed, max_gap_bars=None)
    features = compute_market_features(frame, feature_set)
    last = features[-1]
    if not np.isfinite(last).all():
        raise DataError("live market state is not finite; check the recent candles for bad values.")
    return scaler.transform(last)
