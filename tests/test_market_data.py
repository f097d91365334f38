"""Market loader: layouts, validation messages, gap policy, windows, splits and prepared data."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nexlify.data.exchange import frame_to_rows, save_ohlcv
from nexlify.data.features import WARMUP_BARS, compute_market_features
from nexlify.data.market import (
    MarketSlice,
    candles_sha256,
    detect_timeframe,
    find_gaps,
    load_ohlcv,
    market_slice_from_frame,
    prepare_market,
    select_recent_days,
    split_chronological,
)
from nexlify.errors import ConfigError, DataError

T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")
MS0 = T0.value // 1_000_000
ROWS = [  # open, high, low, close, volume
    (100.0, 101.5, 99.5, 101.0, 12.5),
    (101.0, 102.0, 100.25, 100.5, 0.0),
    (100.5, 100.75, 98.0, 99.0, 30.125),
    (99.0, 103.0, 99.0, 102.5, 7.0),
    (102.5, 102.5, 101.0, 101.5, 1.5),
    (101.5, 104.0, 101.5, 104.0, 22.0),
]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    index = pd.date_range(T0, periods=len(ROWS), freq="1h", name="timestamp").as_unit("ns")
    return pd.DataFrame(ROWS, columns=["open", "high", "low", "close", "volume"], index=index)


def _lines(stamps: list[str], sep: str = ",", extra: int = 0) -> list[str]:
    out = []
    for stamp, row in zip(stamps, ROWS, strict=True):
        fields = [stamp, *(repr(v) for v in row)]
        if extra:  # Binance's trailing columns
            close_time = str(int(stamp) + 3_599_999)
            fields += [close_time, "1234.5", "42", "1.0", "100.0", "0"][:extra]
        out.append(sep.join(fields))
    return out


def _iso(fmt: str = "%Y-%m-%d %H:%M:%S") -> list[str]:
    return [(T0 + pd.Timedelta(hours=i)).strftime(fmt) for i in range(len(ROWS))]


def _epoch(scale: int) -> list[str]:
    return [str((MS0 + i * 3_600_000) * scale // 1000) for i in range(len(ROWS))]


BINANCE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
CSV_LAYOUTS = {
    "header_iso": ["timestamp,open,high,low,close,volume", *_lines(_iso())],
    "aliases_mixed_case_iso_z": ["Date,Open,High,Low,Close,Vol", *_lines(_iso("%Y-%m-%dT%H:%M:%SZ"))],
    "header_epoch_ms": ["time,o,h,l,c,v", *_lines(_epoch(1000))],
    "header_epoch_s": ["datetime,open,high,low,close,volume", *_lines(_epoch(1))],
    "ccxt_no_header": _lines(_epoch(1000)),
    "binance_no_header_ms": _lines(_epoch(1000), extra=6),
    "binance_no_header_us": _lines(_epoch(1_000_000), extra=6),
    "binance_header": [BINANCE_HEADER, *_lines(_epoch(1000), extra=6)],
    "newest_first": ["timestamp,open,high,low,close,volume", *reversed(_lines(_iso()))],
}


def _cryptodatadownload() -> list[str]:
    """A URL banner, newest first, epoch ms beside a 12-hour date that is not ISO, two volumes."""
    rows = [
        f"{stamp},{(T0 + pd.Timedelta(hours=i)).strftime('%Y-%m-%d %I-%p')},BTC/USDT,{o!r},{h!r},{lo!r},{c!r},"
        f"{v!r},{v * c!r},17"
        for i, (stamp, (o, h, lo, c, v)) in enumerate(zip(_epoch(1000), ROWS, strict=True))
    ]
    return ["https://www.CryptoDataDownload.com",
            "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount", *reversed(rows)]


CSV_LAYOUTS.update({
    "cryptodatadownload": _cryptodatadownload(),
    "semicolon_decimal_comma": ["timestamp;open;high;low;close;volume",
                                *(";".join([stamp, *(repr(v).replace(".", ",") for v in row)])
                                  for stamp, row in zip(_iso(), ROWS, strict=True))],
    "tab_separated": ["timestamp\topen\thigh\tlow\tclose\tvolume", *_lines(_iso(), sep="\t")],
    "metatrader_date_and_time": ["<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>",
                                 *("\t".join([(T0 + pd.Timedelta(hours=i)).strftime("%Y.%m.%d\t%H:%M:%S"),
                                               *(repr(v) for v in row[:4]), "999", repr(row[4]), "2"])
                                   for i, row in enumerate(ROWS))],
})


@pytest.mark.parametrize("layout", sorted(CSV_LAYOUTS))
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_csv_layouts_load_to_the_same_frame(
    tmp_path: Path, reference: pd.DataFrame, layout: str, suffix: str
) -> None:
    text = "\n".join(CSV_LAYOUTS[layout]) + "\n"
    path = tmp_path / f"data{suffix}"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    frame = load_ohlcv(path)
    pd.testing.assert_frame_equal(frame, reference, check_freq=False)
    assert str(frame.index.tz) == "UTC" and frame.index.name == "timestamp"
    assert frame.attrs["gaps"] == [] and frame.attrs["source"] == str(path)


def test_parquet_dataframe_and_saved_layouts(tmp_path: Path, reference: pd.DataFrame) -> None:
    plain = reference.reset_index()
    plain.to_parquet(tmp_path / "cols.parquet")
    save_ohlcv(reference, tmp_path / "saved.parquet")
    save_ohlcv(reference, tmp_path / "saved.csv.gz")
    epoch_frame = plain.assign(timestamp=plain["timestamp"].astype("int64") // 1_000_000)
    naive_index = reference.tz_convert(None)
    unnamed_index = reference.rename_axis(None)
    sources = [tmp_path / "cols.parquet", tmp_path / "saved.parquet", tmp_path / "saved.csv.gz",
               epoch_frame, naive_index, unnamed_index, plain.rename(columns=str.upper)]
    for source in sources:
        pd.testing.assert_frame_equal(load_ohlcv(source), reference, check_freq=False)


def test_mixed_ms_and_us_epochs_in_one_file(tmp_path: Path, reference: pd.DataFrame) -> None:
    # Binance switched kline exports from ms to us in 2025; a concatenated file mixes both.
    stamps = _epoch(1000)[:3] + _epoch(1_000_000)[3:]
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(_lines(stamps)) + "\n")
    pd.testing.assert_frame_equal(load_ohlcv(path), reference, check_freq=False)


HEADER = "timestamp,open,high,low,close,volume"


def _with_line(line_no: int, new: str) -> str:
    """The header ISO file with file line ``line_no`` (1-based, header = 1) replaced."""
    lines = [HEADER, *_lines(_iso())]
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


BAD_FILES = {
    "missing_column": ("timestamp,open,high,low,close\n2024-01-01 00:00:00,1,2,0.5,1.5\n",
                       ["missing column(s) volume"]),
    "unparsable_value": (_with_line(3, "2024-01-01 01:00:00,101.0,102.0,100.25,abc,0.0"),
                         ["line 3", "2024-01-01 01:00:00", "unparsable close value 'abc'"]),
    "missing_value": (_with_line(4, "2024-01-01 02:00:00,100.5,100.75,98.0,,30.125"),
                      ["line 4", "missing close value"]),
    "nan_value": (_with_line(4, "2024-01-01 02:00:00,100.5,100.75,98.0,NaN,30.125"),
                  ["line 4", "missing close value"]),
    "non_positive": (_with_line(5, "2024-01-01 03:00:00,99.0,103.0,0,102.5,7.0"),
                     ["line 5", "low price 0.0 is not positive"]),
    "high_below_low": (_with_line(2, "2024-01-01 00:00:00,100.0,99.0,99.5,99.5,12.5"),
                       ["line 2", "high 99.0 is below low 99.5"]),
    "open_outside": (_with_line(6, "2024-01-01 04:00:00,110.0,102.5,101.0,101.5,1.5"),
                     ["line 6", "2024-01-01 04:00:00 UTC", "open 110.0 is outside [low 101.0, high 102.5]"]),
    "close_outside": (_with_line(6, "2024-01-01 04:00:00,102.5,102.5,101.0,90.0,1.5"),
                      ["line 6", "close 90.0 is outside"]),
    "negative_volume": (_with_line(7, "2024-01-01 05:00:00,101.5,104.0,101.5,104.0,-1"),
                        ["line 7", "volume -1.0 is negative"]),
    "duplicate": (_with_line(4, "2024-01-01 01:00:00,100.5,100.75,98.0,99.0,30.125"),
                  ["line 4", "duplicate timestamp"]),
    "backwards": (_with_line(5, "2023-12-31 00:00:00,99.0,103.0,99.0,102.5,7.0"),
                  ["line 5", "goes backwards"]),
    "bad_timestamp": (_with_line(3, "yesterday,101.0,102.0,100.25,100.5,0.0"),
                      ["line 3", "unparsable timestamp 'yesterday'"]),
    "headerless_wrong_width": ("1,2,3\n4,5,6\n", ["line 1", "no header and 3 columns"]),
    "below_a_banner": ("Hourly candles from an exporter\n" + _with_line(3, "2024-01-01 01:00:00,101.0,102.0,"
                                                                         "100.25,abc,0.0"),
                       ["line 4", "unparsable close value 'abc'"]),
    "thousands_and_decimal_comma": ("timestamp;open;high;low;close;volume\n"
                                    "2024-01-01 00:00:00;1.100,5;1.101,5;1.099,5;1.101,0;12,5\n",
                                    ["line 2", "unparsable open value '1.100,5'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_validation_errors_name_file_row_problem_and_fix(tmp_path: Path, case: str) -> None:
    text, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        load_ohlcv(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "Fix:" in message
    for part in expected:
        assert part in message


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_ohlcv(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_ohlcv(tmp_path / "data.xlsx")
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="unreadable file"):
        load_ohlcv(tmp_path / "broken.csv.gz")
    (tmp_path / "metatrader.csv").write_bytes("<DATE>\t<TIME>\t<OPEN>\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 .* Fix: save it as UTF-8"):
        load_ohlcv(tmp_path / "metatrader.csv")
    (tmp_path / "broken.parquet").write_bytes(b"nope")
    with pytest.raises(DataError, match="unreadable Parquet"):
        load_ohlcv(tmp_path / "broken.parquet")
    (tmp_path / "ok.csv").write_text("\n".join(CSV_LAYOUTS["header_iso"]) + "\n")
    with pytest.raises(DataError, match=r"too few rows \(6 candles, at least 10 needed\)"):
        load_ohlcv(tmp_path / "ok.csv", min_rows=10)


def test_dataframe_errors_name_the_row() -> None:
    frame = pd.DataFrame(ROWS, columns=["open", "high", "low", "close", "volume"])
    frame.insert(0, "timestamp", pd.date_range(T0, periods=len(ROWS), freq="1h"))
    frame.loc[2, "volume"] = np.nan
    with pytest.raises(DataError, match=r"DataFrame: row 3 \(2024-01-01 02:00:00 UTC\): missing volume"):
        load_ohlcv(frame)


def _hourly(n: int, drop: list[int] | None = None) -> pd.DataFrame:
    index = pd.date_range(T0, periods=n, freq="1h", name="timestamp")
    close = 100 + np.sin(np.arange(n) / 5.0)
    frame = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                          "volume": np.ones(n)}, index=index)
    return frame.drop(index[drop]) if drop else frame


def test_bundled_file_loads_with_its_one_gap() -> None:
    frame = load_ohlcv()
    assert len(frame) == 29_303
    assert frame.index[0] == pd.Timestamp("2022-01-01 00:00", tz="UTC")
    assert frame.index[-1] == pd.Timestamp("2025-05-05 23:00", tz="UTC")
    assert frame.index.is_monotonic_increasing and list(frame.dtypes) == [np.float64] * 5
    assert detect_timeframe(frame) == pd.Timedelta(hours=1)
    assert frame.attrs["gaps"] == [
        {"start": "2023-03-24T13:00:00+00:00", "end": "2023-03-24T13:00:00+00:00", "missing_bars": 1}
    ]


def test_short_gap_kept_reported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        frame = load_ohlcv(_hourly(100, drop=[10, 11, 12]))
    assert len(frame) == 97  # nothing invented
    assert frame.attrs["gaps"] == [
        {"start": "2024-01-01T10:00:00+00:00", "end": "2024-01-01T12:00:00+00:00", "missing_bars": 3}
    ]
    assert "no candles invented" in caplog.text
    gaps = find_gaps(frame)
    assert len(gaps) == 1 and gaps[0].missing_bars == 3


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_timestamps_in_any_unit_give_the_same_timeframe_gaps_identity_and_rows(unit: str) -> None:
    # pandas 3 parses timestamps to microseconds; index.asi8 counts in the index's own unit.
    ns = _hourly(10, drop=[4, 5])
    other = ns.set_axis(ns.index.as_unit(unit))
    assert detect_timeframe(other) == pd.Timedelta(hours=1)
    gaps = find_gaps(other)
    assert [(g.start, g.end, g.missing_bars) for g in gaps] == [
        (pd.Timestamp("2024-01-01 04:00", tz="UTC"), pd.Timestamp("2024-01-01 05:00", tz="UTC"), 2)
    ]
    assert candles_sha256(other) == candles_sha256(ns)
    rows = frame_to_rows(other)
    assert rows == frame_to_rows(ns)
    assert rows[0][0] == 1_704_067_200_000 and rows[1][0] - rows[0][0] == 3_600_000  # 2024-01-01 UTC, ms


def test_long_gap_refused_unless_window_avoids_it() -> None:
    frame = _hourly(24 * 10, drop=list(range(30, 60)))  # 30 missing bars > 24
    # A whole file has no day count to choose its span (evaluate has no --data-days flag).
    with pytest.raises(DataError, match=r"30 candles are missing.*data that starts after 2024-01-03 11:00") as info:
        load_ohlcv(frame)
    assert "--data-days" not in str(info.value)
    # A training window is chosen by --data-days, so that is what the message suggests there.
    with pytest.raises(DataError, match=r"30 candles are missing.*--data-days 17 or less"):
        prepare_market(_hourly(24 * 20, drop=list(range(30, 60))), data_days=None)
    loaded = load_ohlcv(frame, max_gap_bars=None)
    assert loaded.attrs["gaps"][0]["missing_bars"] == 30
    assert select_recent_days(loaded, 7).attrs["gaps"] == []
    assert load_ohlcv(frame, max_gap_bars=30).attrs["gaps"][0]["missing_bars"] == 30


def test_off_grid_spacing_refused() -> None:
    frame = _hourly(50)
    shifted = frame.index[20] + pd.Timedelta(minutes=30)
    frame.index = frame.index.where(frame.index != frame.index[20], shifted)
    with pytest.raises(DataError, match="not a whole number"):
        load_ohlcv(frame)


def test_select_recent_days() -> None:
    frame = load_ohlcv(_hourly(24 * 5))
    last_day = select_recent_days(frame, 1)
    assert len(last_day) == 24 and last_day.index[-1] == frame.index[-1]
    assert last_day.index[0] == frame.index[-1] - pd.Timedelta(hours=23)
    assert len(select_recent_days(frame, 3)) == 72
    assert len(select_recent_days(frame, 99)) == len(frame)
    assert select_recent_days(frame, None) is frame
    for bad in (0, -3, 1.5, True):
        with pytest.raises(DataError, match="whole number >= 1"):
            select_recent_days(frame, bad)  # type: ignore[arg-type]


def test_split_chronological_sizes_order_and_validation() -> None:
    train, val, test = split_chronological(np.arange(100))
    assert (len(train), len(val), len(test)) == (70, 15, 15)
    np.testing.assert_array_equal(np.concatenate([train, val, test]), np.arange(100))
    frame = _hourly(200)
    parts = split_chronological(frame, 0.6, 0.2)
    assert [len(p) for p in parts] == [120, 40, 40]
    assert parts[0].index[-1] < parts[1].index[0] and parts[1].index[-1] < parts[2].index[0]
    assert split_chronological(10) == (slice(0, 7), slice(7, 8), slice(8, 10))
    for fractions in ((0.0, 0.1), (1.2, 0.1), (0.7, 0.3), (0.9, 0.2), (0.5, -0.1)):
        with pytest.raises(ConfigError):
            split_chronological(100, *fractions)
    with pytest.raises(DataError, match="non-empty"):
        split_chronological(3)


@pytest.fixture(scope="module")
def splits():
    return prepare_market(data_days=180)


def test_prepare_market_splits_and_scaler_fitted_on_train_only(splits) -> None:
    n = 180 * 24 - WARMUP_BARS  # 180 days of 1h (no gap in that window) minus the warm-up
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2990, 640, n - 2990 - 640)
    assert splits.periods_per_year == 8760.0 and splits.timeframe == pd.Timedelta(hours=1)
    assert splits.gaps == () and splits.source == "bundled:BTCUSDT_1h.csv.gz"
    hour = np.timedelta64(1, "h")
    assert splits.validation.timestamps[0] - splits.train.timestamps[-1] == hour
    assert splits.test.timestamps[0] - splits.validation.timestamps[-1] == hour
    assert splits.test.timestamps[-1] == np.datetime64("2025-05-05T23:00", "ns")
    for part in (splits.train, splits.validation, splits.test):
        assert part.features.dtype == np.float32 and part.features.shape == (len(part), 9)
        assert part.timestamps.dtype == np.dtype("datetime64[ns]") and np.isfinite(part.features).all()

    # Hand check: the mean of 1-bar log returns over the train rows telescopes to
    # ln(last train close / close just before the first train row) / rows.
    window = select_recent_days(load_ohlcv(), 180)
    before_first = window["close"].iloc[WARMUP_BARS - 1]
    expected = np.log(splits.train.close[-1] / before_first) / len(splits.train)
    assert splits.scaler.mean[0] == pytest.approx(expected, rel=1e-4)
    # All statistics equal those of the train rows only (not of the whole window).
    raw = compute_market_features(window)[WARMUP_BARS:]
    np.testing.assert_allclose(splits.scaler.mean, raw[:2990].astype(np.float64).mean(axis=0), rtol=1e-5)
    assert not np.allclose(splits.scaler.mean, raw.astype(np.float64).mean(axis=0), rtol=1e-3)
    assert abs(float(splits.train.features[:, 0].mean())) < 1e-3


def test_market_slice_to_frame_and_from_frame(splits) -> None:
    frame = splits.test.to_frame()
    assert str(frame.index.tz) == "UTC" and len(frame) == len(splits.test)
    np.testing.assert_array_equal(frame["close"].to_numpy(), splits.test.close)
    assert list(splits.test.to_frame(include_features=True).columns)[5] == "log_return_1"
    # Re-deriving the test slice from raw candles with the saved scaler gives the same features
    # (MACD aside, whose EMA depends on how much history precedes it).
    history = select_recent_days(load_ohlcv(), 180).iloc[-(len(splits.test) + WARMUP_BARS) :]
    again = market_slice_from_frame(history, splits.scaler)
    assert isinstance(again, MarketSlice) and len(again) == len(splits.test)
    np.testing.assert_array_equal(again.timestamps, splits.test.timestamps)
    cols = [0, 1, 2, 3, 4, 6, 7, 8]
    np.testing.assert_allclose(again.features[:, cols], splits.test.features[:, cols], atol=1e-4)


def test_prepare_market_refuses_short_windows() -> None:
    with pytest.raises(DataError, match=r"has 48 candles but at least \d+ are needed.*larger --data-days"):
        prepare_market(data_days=2)
    with pytest.raises(DataError, match="whole number >= 1"):
        prepare_market(data_days=0)
    with pytest.raises(DataError, match="at least"):
        prepare_market(_hourly(120), data_days=None)


def test_trend_feature_set_reads_its_warm_up_before_the_window(splits) -> None:
    trend = prepare_market(data_days=180, feature_set="trend")
    # Same usable rows as the basic set: the extra 672 warm-up candles come from before the window.
    for basic_part, trend_part in zip((splits.train, splits.validation, splits.test),
                                      (trend.train, trend.validation, trend.test), strict=True):
        np.testing.assert_array_equal(trend_part.timestamps, basic_part.timestamps)
        assert trend_part.features.shape == (len(basic_part), 15) and np.isfinite(trend_part.features).all()
    assert trend.scaler.feature_names[9:] == ("log_return_168", "log_return_720", "ma_distance_168",
                                               "ma_distance_720", "drawdown_720", "volatility_regime")
    # The trend scaler is fitted on the train rows only, like the basic one.
    assert abs(float(trend.train.features[:, 10].mean())) < 1e-3
    assert list(trend.test.to_frame(include_features=True).columns)[-1] == "volatility_regime"
    # Without history before the window (all data), the warm-up is taken from inside it.
    frame = load_ohlcv().iloc[-1500:]
    whole = prepare_market(frame, data_days=None, feature_set="trend")
    assert len(whole.train) + len(whole.validation) + len(whole.test) == 1500 - 720
    with pytest.raises(DataError, match="'trend' features need 720 candles of warm-up"):
        prepare_market(frame.iloc[-800:], data_days=None, feature_set="trend")


def test_a_loaded_frame_logs_its_gaps_once(caplog: pytest.LogCaptureFixture) -> None:
    """Loading, then slicing for an environment or a backtest, warns about a gap once, not twice."""
    scaler = prepare_market(_hourly(24 * 20), data_days=None).scaler
    with caplog.at_level(logging.WARNING):
        frame = load_ohlcv(_hourly(24 * 20, drop=[100, 101]))
        market_slice_from_frame(frame, scaler)
    assert caplog.text.count("no candles invented") == 1


def test_join_markets_keeps_every_return_and_continues_the_price() -> None:
    from helpers import make_slice
    from nexlify.data.market import join_markets

    a = make_slice([100.0, 110.0, 121.0], [105.0, 115.0, 120.0], seed=1)
    b = make_slice([2.0, 1.0, 3.0, 4.0], [1.5, 2.0, 3.5, 5.0], seed=2)
    joined = join_markets([a, b])
    assert len(joined) == 7
    # b is scaled by 120 / 2 = 60 so its first open equals a's last close.
    np.testing.assert_allclose(joined.open, [100, 110, 121, 120, 60, 180, 240])
    np.testing.assert_allclose(joined.close, [105, 115, 120, 90, 120, 210, 300])
    np.testing.assert_allclose(joined.high[3:], b.high * 60)
    np.testing.assert_array_equal(joined.volume[3:], b.volume)
    np.testing.assert_array_equal(joined.features, np.concatenate([a.features, b.features]))
    np.testing.assert_array_equal(joined.timestamps[3:], b.timestamps)
    # Holding through both: growth is the product of each market's own open-to-close growth.
    assert joined.close[-1] / joined.open[0] == pytest.approx((120 / 100) * (5.0 / 2.0))
    with pytest.raises(DataError, match="different feature sets"):
        join_markets([a, MarketSlice(b.timestamps, b.open, b.high, b.low, b.close, b.volume,
                                     np.zeros((4, 15), dtype=np.float32))])


def test_prepare_markets_fits_one_scaler_on_every_markets_training_rows() -> None:
    from helpers import synthetic_frame
    from nexlify.data.market import prepare_markets

    frames = [synthetic_frame(400, seed=1), synthetic_frame(300, seed=2, drift=0.001)]
    pooled = prepare_markets(frames, data_days=None)
    alone = [prepare_market(f, data_days=None) for f in frames]
    assert len(pooled.train) == sum(len(s.train) for s in alone)
    assert len(pooled.test) == sum(len(s.test) for s in alone)
    raw = np.concatenate([compute_market_features(f)[WARMUP_BARS:][: len(s.train)] for f, s in
                          zip(frames, alone, strict=True)])
    np.testing.assert_allclose(pooled.scaler.mean, raw.astype(np.float64).mean(axis=0), rtol=1e-5)
    # Each market keeps its own returns: the second market's closes are a constant multiple of its own.
    second = pooled.train.close[len(alone[0].train):]
    ratio = second / alone[1].train.close
    np.testing.assert_allclose(ratio, ratio[0])
    assert pooled.origin is None and "+" in pooled.source
    one = prepare_markets([frames[0]], data_days=None)
    np.testing.assert_array_equal(one.train.features, alone[0].train.features)
