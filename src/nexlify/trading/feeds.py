"""Where candles come from: an exchange through ccxt, or a file replayed as if it were one.

A ``CandleFeed`` asks a ccxt-shaped exchange (``fetch_ohlcv``) for closed candles, retrying network
errors with exponential backoff for as long as they last (each retry is reported, never raised).
``ReplayExchange`` serves a CSV/Parquet file through the same ``fetch_ohlcv`` interface with a
``ReplayClock``, so a rehearsal runs the same code path as a live session, as fast as it can or at
``speed`` times real time.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from nexlify.errors import ExchangeError

PAGE_LIMIT = 500
MAX_BACKOFF_S = 60.0


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def sleep_until(self, ms: int) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def sleep_until(self, ms: int) -> None:
        delay = (ms - self.now_ms()) / 1000.0
        if delay > 0:
            time.sleep(delay)


class FeedEnded(Exception):  # noqa: N818 - a normal end, not an error
    """A replayed market has no candles left."""


class ReplayClock:
    """Virtual time: sleeping jumps ahead at once, or waits ``1/speed`` of the span in real time.

    Sleeping past ``end_ms`` means nothing more will ever arrive: it raises ``FeedEnded``.
    """

    def __init__(self, start_ms: int, end_ms: int | None = None, speed: float | None = None,
                 real_sleep: Callable[[float], Any] = time.sleep) -> None:
        self._now = int(start_ms)
        self.end_ms = end_ms
        self.speed = speed
        self._real_sleep = real_sleep

    def now_ms(self) -> int:
        return self._now

    def sleep_until(self, ms: int) -> None:
        if self.end_ms is not None and ms > self.end_ms:
            raise FeedEnded
        if ms > self._now:
            if self.speed:
                self._real_sleep((ms - self._now) / 1000.0 / self.speed)
            self._now = int(ms)


class ReplayExchange:
    """A file's candles behind ccxt's ``fetch_ohlcv``, with time given by a ``ReplayClock``.

    Like a real exchange it also returns the candle that is still forming; the feed drops it.
    """

    id = "replay"
    rateLimit = 0  # noqa: N815 - ccxt's attribute name
    has = {"fetchOHLCV": True}

    def __init__(self, rows: list[list[float]], clock: Clock) -> None:
        self.rows = rows
        self.clock = clock
        self._times = [int(r[0]) for r in rows]

    def milliseconds(self) -> int:
        return self.clock.now_ms()

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None) -> list[list[float]]:
        now = self.clock.now_ms()
        last = bisect.bisect_right(self._times, now - 1)  # candles that opened before now
        first = bisect.bisect_left(self._times, since) if since is not None else max(last - (limit or PAGE_LIMIT), 0)
        return [list(r) for r in self.rows[first:last][: limit or PAGE_LIMIT]]


def candle_problem(row: Any) -> str | None:
    """Why ``row`` is not a usable OHLCV candle, or None when it is."""
    try:
        ts, o, h, low, c, v = (float(x) for x in list(row)[:6])
    except (TypeError, ValueError):
        return f"not six numbers: {row!r}"
    if not all(math.isfinite(x) for x in (ts, o, h, low, c, v)):
        return "a value is missing or not finite"
    if min(o, h, low, c) <= 0 or v < 0:
        return "a price is not positive or the volume is negative"
    if h < max(o, c) or low > min(o, c):
        return "high/low do not bracket open and close"
    return None


class CandleFeed:
    """Closed candles of one market from a ccxt-shaped exchange, with retries on network errors.

    ``on_retry(message)`` is called before every backoff sleep, so the session can show and record
    it; the retries go on until the network comes back (a trading session must not crash on it).
    """

    def __init__(self, exchange: Any, symbol: str, timeframe_ms: int, timeframe: str, clock: Clock,
                 on_retry: Callable[[str], Any] = lambda message: None,
                 redact: Callable[[str], str] = lambda text: text) -> None:
        self.exchange, self.symbol = exchange, symbol
        self.timeframe_ms, self.timeframe = timeframe_ms, timeframe
        self.clock = clock
        self.on_retry = on_retry
        self.redact = redact

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)``, retrying ccxt network errors with backoff 1, 2, 4 ... 60 s."""
        try:
            import ccxt
        except ImportError:  # a replayed file needs no exchange library, and raises none of its errors
            return function(*args, **kwargs)
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except ccxt.NetworkError as exc:  # timeouts, resets, rate limits, exchange down
                attempt += 1
                delay = min(2.0 ** (attempt - 1), MAX_BACKOFF_S)
                self.on_retry(self.redact(f"network error while {what} ({type(exc).__name__}: {exc}); "
                                          f"retry {attempt} in {delay:.0f} s"))
                self.clock.sleep_until(self.clock.now_ms() + int(delay * 1000))
            except ccxt.BaseError as exc:
                raise ExchangeError(self.redact(
                    f"{getattr(self.exchange, 'id', 'exchange')}: {what} failed ({type(exc).__name__}: {exc}). "
                    "Fix: check the exchange, symbol, timeframe and API permissions")) from None

    def closed_since(self, since_ms: int) -> list[list[float]]:
        """Closed candles opened at or after ``since_ms``, in the order the exchange sent them."""
        out: list[list[float]] = []
        cursor = since_ms
        while True:
            now = self.clock.now_ms()
            page = self.call("fetching candles", self.exchange.fetch_ohlcv, self.symbol, self.timeframe,
                             cursor, PAGE_LIMIT) or []
            closed = [list(row) for row in page if _open_ms(row) + self.timeframe_ms <= now]
            out.extend(closed)
            if len(page) < PAGE_LIMIT or not closed:
                return out
            cursor = max(_open_ms(row) for row in closed) + self.timeframe_ms

    def history(self, count: int) -> list[list[float]]:
        """The last ``count`` closed candles (fewer if the market is younger), oldest first, deduplicated."""
        now = self.clock.now_ms()
        last_closed_open = (now // self.timeframe_ms - 1) * self.timeframe_ms
        rows = self.closed_since(last_closed_open - (count - 1) * self.timeframe_ms)
        unique = {_open_ms(r): r for r in rows if candle_problem(r) is None}
        return [unique[t] for t in sorted(unique)][-count:]


def _open_ms(row: Any) -> int:
    return int(row[0])


def load_replay_rows(path: str | Path) -> list[list[float]]:
    """A CSV/Parquet file's candles, validated by the loader, as ccxt rows."""
    from nexlify.data.exchange import frame_to_rows
    from nexlify.data.market import load_ohlcv

    return frame_to_rows(load_ohlcv(path, max_gap_bars=None, log_gaps=False))
