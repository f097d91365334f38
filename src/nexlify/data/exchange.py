"""Downloading candles from an exchange with ccxt, with an incremental on-disk cache.

ccxt is imported only when a download runs, so the rest of Nexlify works without the ``exchange``
extra. What this module promises:

* the whole requested span is fetched page by page (exchanges cap each request, e.g. 1000 candles),
  sleeping ``exchange.rateLimit`` milliseconds between requests;
* rate-limit and network errors are retried with exponential backoff a bounded number of times, then
  an ``ExchangeError`` is raised - there is never a fallback to synthetic prices;
* an exchange that stops returning data before the span's end raises ``ExchangeError``; one whose
  history starts later than asked is reported with a warning and ``frame.attrs["short_span"]``;
* the still-open last candle (close time in the future) is dropped;
* a CSV.gz cache per exchange/symbol/timeframe (``$NEXLIFY_CACHE_DIR`` or ``~/.cache/nexlify``) is
  written atomically; a later call fetches only candles after the cached last one, and before the
  cached first one when more days are asked for;
* everything goes through ``nexlify.data.market.load_ohlcv`` validation.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from nexlify.data.market import OHLCV_COLUMNS, load_ohlcv
from nexlify.errors import DataError, ExchangeError
from nexlify.io import default_cache_dir, write_bytes_atomic

logger = logging.getLogger(__name__)

DEFAULT_PAGE_LIMIT = 1000
DEFAULT_MAX_RETRIES = 5
_MAX_BACKOFF_S = 60.0
_DAY_MS = 86_400_000
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": _DAY_MS, "w": 7 * _DAY_MS}


def timeframe_to_ms(timeframe: str) -> int:
    """``"1h"`` -> 3600000. Supports s/m/h/d/w units (months have no fixed length)."""
    match = re.fullmatch(r"(\d+)([smhdw])", timeframe.strip())
    if not match or int(match.group(1)) < 1:
        raise ExchangeError(f"unsupported timeframe {timeframe!r}. Fix: use e.g. 1m, 15m, 1h, 4h, 1d or 1w.")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def cache_path(cache_dir: str | Path, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """The cache file for one exchange/symbol/timeframe, e.g. ``binance_BTC-USDT_1h.csv.gz``."""
    raw = f"{exchange_id}_{symbol.replace('/', '-').replace(':', '-')}_{timeframe}"
    return Path(cache_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", raw) + ".csv.gz")


SAVE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def check_save_path(path: str | Path) -> Path:
    """``path`` if candles can be saved there (a supported file type, not a folder); else DataError.
    Checked before a download, so a long fetch never ends in a refusal."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a folder. Fix: give a file name such as {path / 'candles.csv'}.")
    if not path.name.lower().endswith(SAVE_SUFFIXES):
        raise DataError(f"{path}: unsupported file type for saving. Fix: use .csv, .csv.gz or .parquet.")
    return path


def save_ohlcv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write candles atomically as CSV (gzip when the name ends in .gz) or Parquet.

    CSV timestamps are written as ``YYYY-MM-DD HH:MM:SS`` UTC, the layout of the bundled file.
    """
    path = check_save_path(path)
    name = path.name.lower()
    data = frame[list(OHLCV_COLUMNS)].copy()
    index = pd.DatetimeIndex(frame.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    if name.endswith((".parquet", ".pq")):
        data.index = index.rename("timestamp")
        buffer = io.BytesIO()
        try:
            data.to_parquet(buffer)
        except ImportError as exc:
            raise DataError(
                f"{path}: writing Parquet needs pyarrow. Fix: pip install nexlify[parquet]."
            ) from exc
        payload = buffer.getvalue()
    else:  # .csv or .csv.gz: check_save_path refused anything else
        data.insert(0, "timestamp", index.strftime("%Y-%m-%d %H:%M:%S"))
        # repr-precision floats so a save/load round trip is exact.
        text = data.to_csv(index=False, float_format=None, lineterminator="\n")
        payload = text.encode("utf-8")
        if name.endswith(".gz"):
            payload = gzip.compress(payload, mtime=0)  # mtime=0: identical data gives identical bytes
    write_bytes_atomic(path, payload)
    return path


def _import_ccxt() -> Any:
    try:
        import ccxt
    except ImportError as exc:
        raise ExchangeError(
            "downloading market data needs ccxt. "
            "Fix: pip install nexlify[exchange] (or use a local CSV file)."
        ) from exc
    return ccxt


def _make_exchange(ccxt: Any, exchange_id: str) -> Any:
    factory = getattr(ccxt, exchange_id, None)
    if factory is None or not isinstance(factory, type):
        raise ExchangeError(
            f"unknown exchange {exchange_id!r}. Fix: use a ccxt exchange id such as binance or kraken."
        )
    # We pace requests ourselves (rateLimit between pages), so ccxt's own throttle would double it.
    return factory({"enableRateLimit": False})


class _Fetcher:
    """Pages one range of candles out of an exchange with pacing and bounded retries."""

    def __init__(
        self,
        ccxt: Any,
        exchange: Any,
        exchange_id: str,
        symbol: str,
        timeframe: str,
        page_limit: int,
        max_retries: int,
        sleep: Callable[[float], Any],
    ) -> None:
        self.ccxt, self.exchange, self.exchange_id = ccxt, exchange, exchange_id
        self.symbol, self.timeframe, self.page_limit = symbol, timeframe, page_limit
        self.max_retries, self.sleep = max_retries, sleep
        self.interval_s = max(float(getattr(exchange, "rateLimit", 0) or 0), 0.0) / 1000.0
        self.tf_ms = timeframe_to_ms(timeframe)
        self.requests = 0

    def _request(self, since: int, limit: int) -> list[list[float]]:
        attempt = 0
        while True:
            if self.requests and self.interval_s:
                self.sleep(self.interval_s)
            self.requests += 1
            try:
                return list(self.exchange.fetch_ohlcv(self.symbol, self.timeframe, since, limit) or [])
            except self.ccxt.NetworkError as exc:  # includes RateLimitExceeded and DDoSProtection
                attempt += 1
                if attempt > self.max_retries:
                    raise ExchangeError(
                        f"{self.exchange_id}: fetching {self.symbol} {self.timeframe} candles failed after "
                        f"{attempt} attempts ({type(exc).__name__}: {exc}). Fix: check your connection "
                        "and try again later; no synthetic data is used."
                    ) from exc
                delay = min(max(self.interval_s, 1.0) * 2 ** (attempt - 1), _MAX_BACKOFF_S)
                logger.warning(
                    "%s: %s, retry %d/%d in %.1f s",
                    self.exchange_id,
                    type(exc).__name__,
                    attempt,
                    self.max_retries,
                    delay,
                )
                self.sleep(delay)
            except self.ccxt.BaseError as exc:
                raise ExchangeError(
                    f"{self.exchange_id}: fetching {self.symbol} {self.timeframe} failed "
                    f"({type(exc).__name__}: {exc}). Fix: check the symbol and timeframe."
                ) from exc

    def fetch_range(self, since: int, until: int) -> list[list[float]]:
        """Candles with open time in ``[since, until)``, oldest first; stops when the exchange
        returns nothing more (the caller checks coverage)."""
        out: list[list[float]] = []
        cursor = since
        while cursor < until:
            # Ask only for the candles still missing: no over-fetching past ``until`` (e.g. the open one).
            limit = min(self.page_limit, -(-(until - cursor) // self.tf_ms))
            page = [row for row in self._request(cursor, limit) if cursor <= int(row[0]) < until]
            if not page:
                break
            out.extend(page)
            last = max(int(row[0]) for row in page)
            cursor = last + self.tf_ms  # the next candle after the last one received
        return out


def _rows_to_frame(rows: list[list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame([list(r[:6]) for r in rows], columns=["timestamp", *OHLCV_COLUMNS])
    # Later fetches win over older copies of the same candle (an earlier copy may have been partial).
    frame = frame.drop_duplicates(subset="timestamp", keep="last").sort_values("timestamp")
    return frame.reset_index(drop=True)


def frame_to_rows(frame: pd.DataFrame) -> list[list[float]]:
    """A ``load_ohlcv`` frame as ccxt OHLCV rows ``[open time ms, o, h, l, c, v]``."""
    # asi8 counts in the index's own unit (pandas 3 may parse to microseconds): go through ns.
    ms = (pd.DatetimeIndex(frame.index).as_unit("ns").asi8 // 1_000_000).tolist()
    values = frame[list(OHLCV_COLUMNS)].to_numpy().tolist()
    return [[t, *v] for t, v in zip(ms, values, strict=True)]


def _read_cache(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return load_ohlcv(path, min_rows=1, max_gap_bars=None, log_gaps=False)
    except DataError as exc:
        logger.warning("ignoring unreadable cache %s (%s); downloading afresh", path, exc)
        return None


def download_ohlcv(
    exchange_id: str = "binance",
    symbol: str = "BTC/USDT",
    timeframe: str = "1h",
    days: int = 180,
    cache_dir: str | Path | None = None,
    exchange: Any = None,
    now_ms: int | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    *,
    page_limit: int = DEFAULT_PAGE_LIMIT,
    max_retries: int = DEFAULT_MAX_RETRIES,
    use_cache: bool = True,
) -> pd.DataFrame:
    """Closed candles of the last ``days`` days, fetched page by page and cached incrementally.

    Returns a ``load_ohlcv``-style frame. ``exchange`` injects a ccxt-like object (tests); ``now_ms``
    fixes "now"; ``sleep`` is called for pacing and backoff. Raises ``ExchangeError`` on failure.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ExchangeError(f"days must be a whole number >= 1, got {days!r}.")
    if page_limit < 1 or max_retries < 0:
        raise ExchangeError("page_limit must be >= 1 and max_retries >= 0.")
    ccxt = _import_ccxt()
    if exchange is None:
        exchange = _make_exchange(ccxt, exchange_id)
    has = getattr(exchange, "has", None)
    if isinstance(has, dict) and has.get("fetchOHLCV") is False:
        raise ExchangeError(f"{exchange_id} does not offer OHLCV candles. Fix: choose another exchange.")

    tf_ms = timeframe_to_ms(timeframe)
    now = int(now_ms) if now_ms is not None else int(time.time() * 1000)
    end = (now // tf_ms) * tf_ms  # open time of the still-open candle: everything before it is closed
    start = end - days * _DAY_MS
    start -= start % tf_ms

    path = cache_path(
        cache_dir if cache_dir is not None else default_cache_dir(), exchange_id, symbol, timeframe
    )
    cached = _read_cache(path) if use_cache else None
    rows: list[list[float]] = [] if cached is None else frame_to_rows(cached)
    fetcher = _Fetcher(ccxt, exchange, exchange_id, symbol, timeframe, page_limit, max_retries, sleep)

    if cached is None or len(cached) == 0:
        rows += fetcher.fetch_range(start, end)
    else:
        first_ms = int(cached.index[0].value // 1_000_000)
        last_ms = int(cached.index[-1].value // 1_000_000)
        if start < first_ms:
            rows = fetcher.fetch_range(start, first_ms) + rows
        if last_ms + tf_ms < end:
            rows += fetcher.fetch_range(last_ms + tf_ms, end)
    if not rows:
        raise ExchangeError(
            f"{exchange_id}: no {symbol} {timeframe} candles returned for the last {days} days. "
            "Fix: check the symbol and timeframe; no synthetic data is used."
        )

    table = _rows_to_frame(rows)
    table = table[table["timestamp"] < end]  # drop the still-open candle should any slip through
    try:
        merged = load_ohlcv(table, min_rows=1, max_gap_bars=None, log_gaps=False)
    except DataError as exc:
        raise ExchangeError(
            f"{exchange_id}: downloaded {symbol} {timeframe} candles failed validation: {exc}"
        ) from exc

    last_ms = int(merged.index[-1].value // 1_000_000)
    if end - tf_ms - last_ms > tf_ms:
        # More than one closed candle missing at the end: the exchange stopped answering.
        raise ExchangeError(
            f"{exchange_id}: {symbol} {timeframe} data stops at {merged.index[-1]:%Y-%m-%d %H:%M} UTC "
            f"but the span runs to {pd.Timestamp(end - tf_ms, unit='ms'):%Y-%m-%d %H:%M} UTC. "
            "Fix: try again later or choose another exchange."
        )
    if use_cache:
        save_ohlcv(merged, path)

    window = merged.loc[merged.index >= pd.Timestamp(start, unit="ms", tz="UTC")].copy()
    window.attrs = {"source": f"{exchange_id}:{symbol}:{timeframe}", "short_span": False}
    if len(window) == 0:
        raise ExchangeError(f"{exchange_id}: no {symbol} {timeframe} candles in the last {days} days.")
    window = load_ohlcv(window, min_rows=1, max_gap_bars=None)  # gaps of the returned span, logged
    window.attrs["source"] = f"{exchange_id}:{symbol}:{timeframe}"
    first_ms = int(window.index[0].value // 1_000_000)
    window.attrs["short_span"] = first_ms - start >= tf_ms
    if window.attrs["short_span"]:
        got = (end - first_ms) / _DAY_MS
        logger.warning(
            "%s: %s %s history starts %s UTC; got %.1f of the %d days asked for",
            exchange_id,
            symbol,
            timeframe,
            f"{window.index[0]:%Y-%m-%d %H:%M}",
            got,
            days,
        )
    return window
