"""Exchange downloads against a local fake ccxt exchange: paging, retries, cache, open candle."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from fake_exchange import HOUR, NOW, FakeExchange
from nexlify.data.exchange import (
    cache_path,
    default_cache_dir,
    download_ohlcv,
    save_ohlcv,
    timeframe_to_ms,
)
from nexlify.data.market import load_ohlcv
from nexlify.errors import DataError, ExchangeError

DAY = 24 * HOUR
END = NOW - NOW % HOUR  # open time of the open candle


def test_full_span_across_many_pages_with_pacing(tmp_path: Path) -> None:
    fake, sleeps = FakeExchange(), []
    frame = download_ohlcv(days=180, cache_dir=tmp_path, exchange=fake, now_ms=NOW, sleep=sleeps.append)
    assert len(frame) == 180 * 24 == 4320
    expected = pd.date_range(pd.Timestamp(END - 180 * DAY, unit="ms", tz="UTC"), periods=4320, freq="1h")
    np.testing.assert_array_equal(frame.index.asi8, expected.as_unit("ns").asi8)
    # Open candle (12:00, closes 13:00 > now) dropped; the last closed one is 11:00.
    assert frame.index[-1] == pd.Timestamp("2025-01-01 11:00", tz="UTC")
    assert len(fake.calls) == 9  # ceil(4320 / 500)
    assert [c[3] for c in fake.calls] == [1000] * 7 + [820, 320]  # never more than what is left
    assert sleeps == [0.05] * 8  # rateLimit between requests, none before the first
    row = FakeExchange.candle(END - HOUR)
    assert frame.iloc[-1].tolist() == row[1:]
    assert frame.attrs["short_span"] is False and frame.attrs["gaps"] == []


def test_rate_limit_is_retried_with_backoff(tmp_path: Path) -> None:
    fake = FakeExchange(errors=[ccxt.RateLimitExceeded("429 slow down")])
    sleeps: list[float] = []
    frame = download_ohlcv(days=30, cache_dir=tmp_path, exchange=fake, now_ms=NOW, sleep=sleeps.append)
    assert len(frame) == 720
    assert len(fake.calls) == 2 + 1  # two pages plus the failed attempt
    assert fake.calls[0][2] == fake.calls[1][2]  # the retry asks for the same page
    assert 1.0 in sleeps  # backoff sleep requested (>= 1 s)


def test_permanent_network_error_raises_not_synthetic(tmp_path: Path) -> None:
    fake = FakeExchange(permanent_error=ccxt.NetworkError("connection reset"))
    sleeps: list[float] = []
    with pytest.raises(ExchangeError, match="failed after 4 attempts.*no synthetic data"):
        download_ohlcv(days=5, cache_dir=tmp_path, exchange=fake, now_ms=NOW, sleep=sleeps.append,
                       max_retries=3)
    assert len(fake.calls) == 4
    assert [s for s in sleeps if s >= 1.0] == [1.0, 2.0, 4.0]  # exponential backoff
    assert not cache_path(tmp_path, "binance", "BTC/USDT", "1h").exists()


def test_other_exchange_errors_are_not_retried(tmp_path: Path) -> None:
    fake = FakeExchange(permanent_error=ccxt.BadSymbol("no such market"))
    with pytest.raises(ExchangeError, match="BadSymbol"):
        download_ohlcv(days=5, cache_dir=tmp_path, exchange=fake, now_ms=NOW, sleep=lambda s: None)
    assert len(fake.calls) == 1


def test_exchange_that_stops_early_is_detected(tmp_path: Path) -> None:
    fake = FakeExchange(data_end_ms=END - 3 * DAY)
    with pytest.raises(ExchangeError, match="stops at 2024-12-29 12:00 UTC"):
        download_ohlcv(days=10, cache_dir=tmp_path, exchange=fake, now_ms=NOW, sleep=lambda s: None)


def test_late_listing_reports_short_span(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeExchange(listed_ms=END - 2 * DAY)
    with caplog.at_level(logging.WARNING):
        frame = download_ohlcv(days=10, cache_dir=tmp_path, exchange=fake, now_ms=NOW, sleep=lambda s: None)
    assert len(frame) == 48 and frame.attrs["short_span"] is True
    assert "got 2.0 of the 10 days" in caplog.text


def test_cache_is_extended_incrementally_both_ways(tmp_path: Path) -> None:
    first = download_ohlcv(days=10, cache_dir=tmp_path, exchange=FakeExchange(), now_ms=NOW,
                           sleep=lambda s: None)
    path = cache_path(tmp_path, "binance", "BTC/USDT", "1h")
    assert path.name == "binance_BTC-USDT_1h.csv.gz" and len(load_ohlcv(path)) == 240

    later = NOW + 5 * HOUR
    fake = FakeExchange(now_ms=later)
    second = download_ohlcv(days=10, cache_dir=tmp_path, exchange=fake, now_ms=later, sleep=lambda s: None)
    assert len(fake.calls) == 1 and fake.calls[0][2] == END  # starts right after the cached last candle
    assert fake.rows_returned == 5  # only the 5 new closed candles are asked for
    assert len(second) == 240 and second.index[-1] == first.index[-1] + pd.Timedelta(hours=5)
    assert len(load_ohlcv(path)) == 245

    fake = FakeExchange(now_ms=later)
    third = download_ohlcv(days=20, cache_dir=tmp_path, exchange=fake, now_ms=later, sleep=lambda s: None)
    assert len(fake.calls) == 1 and fake.rows_returned == 235  # only the older candles
    assert len(third) == 480 and len(load_ohlcv(path)) == 480
    fresh = download_ohlcv(days=20, exchange=FakeExchange(now_ms=later), now_ms=later, sleep=lambda s: None,
                           use_cache=False)
    pd.testing.assert_frame_equal(third, fresh, check_freq=False)


def test_missing_ccxt_gives_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)
    with pytest.raises(ExchangeError, match=r"pip install nexlify\[exchange\]"):
        download_ohlcv(days=1, cache_dir=tmp_path, exchange=FakeExchange(), now_ms=NOW)


def test_helpers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert timeframe_to_ms("1h") == HOUR and timeframe_to_ms("15m") == 900_000
    assert timeframe_to_ms("1d") == DAY
    with pytest.raises(ExchangeError, match="unsupported timeframe"):
        timeframe_to_ms("1M")
    monkeypatch.setenv("NEXLIFY_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NEXLIFY_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "nexlify"
    with pytest.raises(ExchangeError, match="unknown exchange"):
        download_ohlcv("not-an-exchange", days=1, cache_dir=tmp_path, now_ms=NOW)


@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz", "c.parquet"])
def test_save_ohlcv_round_trip(tmp_path: Path, name: str) -> None:
    frame = load_ohlcv(pd.DataFrame([FakeExchange.candle(END - i * HOUR) for i in range(30, 0, -1)],
                                    columns=["timestamp", "open", "high", "low", "close", "volume"]))
    path = save_ohlcv(frame, tmp_path / name)
    pd.testing.assert_frame_equal(load_ohlcv(path), frame, check_freq=False)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(DataError, match="unsupported file type"):
        save_ohlcv(frame, tmp_path / "c.json")
