"""Market features: hand-computed values, no look-ahead (property test), scaler, live state."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexlify.data.features import (
    ACCOUNT_FEATURE_NAMES,
    LIVE_HISTORY_BARS,
    MARKET_FEATURE_NAMES,
    STATE_SIZE,
    TREND_WARMUP_BARS,
    WARMUP_BARS,
    FeatureScaler,
    compute_market_features,
    feature_names,
    feature_set_of,
    live_history_bars,
    warmup_bars,
)
from nexlify.data.market import market_state_from_candles
from nexlify.errors import DataError

COL = {name: i for i, name in enumerate(MARKET_FEATURE_NAMES)}


def ohlcv(close: np.ndarray, volume: np.ndarray | None = None, spread: float = 0.01) -> pd.DataFrame:
    """Valid candles around ``close``: open = previous close, high/low widened by ``spread``."""
    close = np.asarray(close, dtype=np.float64)
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    vol = np.full(close.shape, 10.0) if volume is None else np.asarray(volume, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=len(close), freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": vol}, index=index)


def test_names_and_sizes() -> None:
    assert len(MARKET_FEATURE_NAMES) == 9 and len(set(MARKET_FEATURE_NAMES)) == 9
    assert ACCOUNT_FEATURE_NAMES == ("position", "unrealized_pnl", "drawdown")
    assert STATE_SIZE == 12


def test_shape_dtype_warmup_and_finite() -> None:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    feats = compute_market_features(ohlcv(close, rng.uniform(0, 5, 300)))
    assert feats.shape == (300, 9) and feats.dtype == np.float32
    assert np.isnan(feats[:WARMUP_BARS]).all()
    assert np.isfinite(feats[WARMUP_BARS:]).all()


def test_hand_computed_returns_range_volatility_and_volume() -> None:
    # Geometric path: every 1-bar log return is ln(1.01), so k-bar returns are k*ln(1.01), vol is 0.
    close = 100 * 1.01 ** np.arange(60)
    vol = np.full(60, 7.0)
    vol[-1] = 0.0  # zero volume must stay finite
    frame = ohlcv(close, vol)
    feats = compute_market_features(frame)
    last = feats[-1]
    assert last[COL["log_return_1"]] == pytest.approx(math.log(1.01), rel=1e-5)
    assert last[COL["log_return_4"]] == pytest.approx(4 * math.log(1.01), rel=1e-5)
    assert last[COL["log_return_24"]] == pytest.approx(24 * math.log(1.01), rel=1e-5)
    assert last[COL["volatility_24"]] == pytest.approx(0.0, abs=1e-6)
    # Rising every bar: all gains, no losses -> RSI 100 -> +1.
    assert last[COL["rsi_14"]] == pytest.approx(1.0)
    # range_pct = (h - l) / c with h = c*1.01, l = c_prev*0.99.
    expected_range = (close[-1] * 1.01 - close[-2] * 0.99) / close[-1]
    assert last[COL["range_pct"]] == pytest.approx(expected_range, rel=1e-5)
    # Constant volume 7: ratio 7/7 -> log 0 on the row before; zero volume clips at -5.
    assert feats[-2, COL["volume_ratio_24"]] == pytest.approx(0.0, abs=1e-6)
    assert last[COL["volume_ratio_24"]] == pytest.approx(-5.0)


def test_hand_computed_rsi_and_zscore() -> None:
    # Changes alternate +2, -1: over the last 14 changes gains 7*2 = 14, losses 7*1 = 7
    # -> (14 - 7) / (14 + 7) = 1/3.
    steps = np.tile([2.0, -1.0], 40)
    close = 1000 + np.concatenate([[0.0], np.cumsum(steps)])
    feats = compute_market_features(ohlcv(close))
    assert feats[-1, COL["rsi_14"]] == pytest.approx(1 / 3, rel=1e-6)
    # Linear ramp 1..n: the last 48 closes are 48 consecutive numbers, mean in the middle,
    # population std sqrt((48^2 - 1) / 12); the last is 23.5 above the mean.
    ramp = np.arange(1.0, 101.0) + 100
    z = compute_market_features(ohlcv(ramp))[-1, COL["zscore_48"]]
    assert z == pytest.approx(23.5 / math.sqrt((48**2 - 1) / 12), rel=1e-6)
    # A flat price: z-score 0 (no division by zero), RSI 0, MACD 0.
    flat = compute_market_features(ohlcv(np.full(80, 50.0)))[-1]
    assert flat[COL["zscore_48"]] == 0.0 and flat[COL["rsi_14"]] == 0.0
    assert flat[COL["macd_hist"]] == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(WARMUP_BARS + 5, 160),
    t_frac=st.floats(0.0, 1.0),
)
def test_no_look_ahead(seed: int, n: int, t_frac: float) -> None:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    volume = rng.uniform(0, 100, n)
    t = int(t_frac * (n - 2))
    before = compute_market_features(ohlcv(close, volume))
    # Replace everything after t with an unrelated path (and different volume).
    close2 = close.copy()
    close2[t + 1 :] = 100 * np.exp(np.cumsum(rng.normal(0.05, 0.1, n - t - 1)))
    volume2 = volume.copy()
    volume2[t + 1 :] = rng.uniform(0, 1000, n - t - 1)
    frame2 = ohlcv(close2, volume2)
    # High/low of row t depend only on closes t-1 and t in this helper, so they are unchanged too.
    after = compute_market_features(frame2)
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert not np.array_equal(before[t + 1 :], after[t + 1 :]) or t + 1 >= n


def test_scaler_fit_transform_clip_and_constant_feature() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(500, 9))
    x[:, 4] = 0.25  # constant feature: std floor -> only centred
    scaler = FeatureScaler().fit(x)
    np.testing.assert_allclose(scaler.mean, x.mean(axis=0))
    assert scaler.std[4] == 1.0
    out = scaler.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, [0, 1, 2]].std(axis=0), 1.0, atol=1e-4)
    assert (out[:, 4] == 0).all()
    extreme = scaler.transform(np.full(9, 1e9))
    assert extreme.shape == (9,) and (extreme == 10.0).all()
    with pytest.raises(DataError, match="NaN"):
        FeatureScaler().fit(np.full((5, 9), np.nan))
    with pytest.raises(RuntimeError):
        FeatureScaler().transform(x)


def test_scaler_json_round_trip_and_bad_input() -> None:
    scaler = FeatureScaler().fit(np.random.default_rng(2).normal(size=(50, 9)))
    restored = FeatureScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    probe = np.random.default_rng(3).normal(size=(4, 9))
    np.testing.assert_array_equal(restored.transform(probe), scaler.transform(probe))
    assert restored.feature_names == MARKET_FEATURE_NAMES
    bad = scaler.to_dict() | {"std": [0.0] * 9}
    with pytest.raises(DataError, match="std > 0"):
        FeatureScaler.from_dict(bad)
    with pytest.raises(DataError, match="differ in length"):
        FeatureScaler.from_dict(scaler.to_dict() | {"mean": [0.0]})
    with pytest.raises(DataError, match="expected keys"):
        FeatureScaler.from_dict({"mean": [1.0]})


def test_market_state_from_candles_matches_batch_features() -> None:
    rng = np.random.default_rng(4)
    n = 1000
    frame = ohlcv(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), rng.uniform(1, 9, n))
    full = compute_market_features(frame)
    scaler = FeatureScaler().fit(full[WARMUP_BARS:])
    live = market_state_from_candles(frame.iloc[-LIVE_HISTORY_BARS:], scaler)
    assert live.shape == (9,) and live.dtype == np.float32
    np.testing.assert_allclose(live, scaler.transform(full[-1]), atol=1e-5)
    # Minimum history: all finite-window features match exactly; MACD only approximately.
    short = market_state_from_candles(frame.iloc[-(WARMUP_BARS + 1) :], scaler)
    others = [i for i in range(9) if i != COL["macd_hist"]]
    np.testing.assert_allclose(short[others], scaler.transform(full[-1])[others], atol=1e-5)
    with pytest.raises(DataError, match=f"at least {WARMUP_BARS + 1}"):
        market_state_from_candles(frame.iloc[-WARMUP_BARS:], scaler)
    # Live input goes through loader validation.
    broken = frame.iloc[-LIVE_HISTORY_BARS:].copy()
    broken.iloc[-1, broken.columns.get_loc("high")] = 1e-3
    with pytest.raises(DataError, match="below low"):
        market_state_from_candles(broken, scaler)


# --- the trend feature set -------------------------------------------------------------------
TREND = {name: i for i, name in enumerate(feature_names("trend"))}


def test_feature_sets_names_warmup_and_lookup() -> None:
    assert feature_names("basic") == MARKET_FEATURE_NAMES
    assert feature_names("trend")[:9] == MARKET_FEATURE_NAMES and len(feature_names("trend")) == 15
    assert warmup_bars("basic") == WARMUP_BARS and warmup_bars("trend") == TREND_WARMUP_BARS == 720
    assert feature_set_of(list(feature_names("trend"))) == "trend"
    with pytest.raises(DataError, match="match no known feature set"):
        feature_set_of(["log_return_1"])
    with pytest.raises(DataError, match="unknown feature set 'fancy'"):
        compute_market_features(ohlcv(np.full(60, 1.0)), "fancy")


def test_trend_features_hand_computed() -> None:
    # Geometric path c_t = 100 * g^t: k-bar returns are k ln g; the k-bar SMA of g^(t-k+1..t) is a
    # geometric sum, so ln(c / SMA_k) = -ln(mean(g^-j, j=0..k-1)); a rising path has no drawdown;
    # vol is 0 on both horizons -> regime ln(floor / floor) = 0.
    g, n = 1.001, 900
    close = 100 * g ** np.arange(n)
    feats = compute_market_features(ohlcv(close), "trend")
    assert feats.shape == (n, 15)
    assert np.isnan(feats[:720]).all() and np.isfinite(feats[720:]).all()
    basic = compute_market_features(ohlcv(close))
    np.testing.assert_array_equal(feats[720:, :9], basic[720:])
    last = feats[-1]
    assert last[TREND["log_return_168"]] == pytest.approx(168 * math.log(g), rel=1e-4)
    assert last[TREND["log_return_720"]] == pytest.approx(720 * math.log(g), rel=1e-4)
    for k in (168, 720):
        expected = -math.log(np.mean(g ** -np.arange(k)))
        assert last[TREND[f"ma_distance_{k}"]] == pytest.approx(expected, rel=1e-4)
    assert last[TREND["drawdown_720"]] == pytest.approx(0.0, abs=1e-7)
    assert last[TREND["volatility_regime"]] == pytest.approx(0.0, abs=1e-3)


def test_trend_drawdown_and_volatility_regime_hand_computed() -> None:
    # Flat at 100 for 800 bars, then one drop to 80: drawdown from the month's high is -20%.
    close = np.full(801, 100.0)
    close[-1] = 80.0
    last = compute_market_features(ohlcv(close), "trend")[-1]
    assert last[TREND["drawdown_720"]] == pytest.approx(-0.2, rel=1e-6)
    # Returns: 696 quiet bars of +-0.001 then 24 of +-0.01 (alternating): vol24 = 0.01, vol720 is
    # the population std of all 720 -> regime = ln(0.01 / sqrt((696e-6 + 24e-4) / 720)).
    signs = np.tile([1.0, -1.0], 400)[:800]
    steps = np.concatenate([signs[:776] * 0.001, signs[776:] * 0.01])
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    last = compute_market_features(ohlcv(close), "trend")[-1]
    vol720 = math.sqrt((696 * 1e-6 + 24 * 1e-4) / 720 - (np.mean(steps[-720:])) ** 2)
    assert last[TREND["volatility_regime"]] == pytest.approx(math.log(0.01 / vol720), rel=1e-3)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(TREND_WARMUP_BARS + 5, 900), t_frac=st.floats(0.0, 1.0))
def test_trend_features_no_look_ahead(seed: int, n: int, t_frac: float) -> None:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    volume = rng.uniform(0, 100, n)
    t = int(t_frac * (n - 2))
    before = compute_market_features(ohlcv(close, volume), "trend")
    close2 = close.copy()
    close2[t + 1 :] = 100 * np.exp(np.cumsum(rng.normal(0.05, 0.1, n - t - 1)))
    volume2 = volume.copy()
    volume2[t + 1 :] = rng.uniform(0, 1000, n - t - 1)
    after = compute_market_features(ohlcv(close2, volume2), "trend")
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert not np.array_equal(before[t + 1 :], after[t + 1 :], equal_nan=True)


def test_live_state_uses_the_scalers_feature_set() -> None:
    rng = np.random.default_rng(3)
    frame = ohlcv(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 1000))), rng.uniform(1, 5, 1000))
    full = compute_market_features(frame, "trend")
    scaler = FeatureScaler(feature_names=feature_names("trend")).fit(full[720:])
    state = market_state_from_candles(frame.iloc[-live_history_bars("trend") :], scaler)
    assert state.shape == (15,)
    # Every column but the recursive MACD matches the long-history value exactly.
    expected = scaler.transform(full[-1])
    keep = [i for i, name in enumerate(feature_names("trend")) if name != "macd_hist"]
    np.testing.assert_allclose(state[keep], expected[keep], rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="at least 721"):
        market_state_from_candles(frame.iloc[-720:], scaler)
