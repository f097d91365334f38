"""Mirrored training markets (``augment="mirror"``, and ``"mirror_calm"`` with calm copies): the reflection,
the halved moves, their causality, and what a run trains on."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import synthetic_frame, tiny_config
from nexlify.config import TrainingConfig
from nexlify.data.augment import CALM_MOVES, augment_splits, calm_candles, calm_slices, mirror_candles, mirror_slice
from nexlify.data.features import WARMUP_BARS, compute_market_features
from nexlify.data.market import MarketSlice, prepare_market
from nexlify.errors import ConfigError


@pytest.fixture(scope="module")
def splits():
    return prepare_market(synthetic_frame(500, seed=3, drift=0.002), data_days=None)


def test_mirror_candles_by_hand():
    open_, high, low, close = (np.array(v) for v in ([100.0, 110.0], [112.0, 125.0], [98.0, 100.0], [110.0, 120.0]))
    m_open, m_high, m_low, m_close = mirror_candles(open_, high, low, close, pivot=100.0)
    np.testing.assert_allclose(m_open, [100.0, 10_000 / 110])
    np.testing.assert_allclose(m_close, [10_000 / 110, 10_000 / 120])
    np.testing.assert_allclose(m_high, [10_000 / 98, 100.0])  # the reflected low
    np.testing.assert_allclose(m_low, [10_000 / 112, 80.0])  # the reflected high
    # Reflecting twice through the same pivot gives the candles back.
    back = mirror_candles(m_open, m_high, m_low, m_close, pivot=100.0)
    for original, again in zip((open_, high, low, close), back, strict=True):
        np.testing.assert_allclose(again, original)


def test_mirror_slice_reverses_every_move_and_rescales_with_the_markets_scaler(splits):
    train = splits.train
    mirrored = mirror_slice(train, splits.scaler)
    assert len(mirrored) == len(train) - WARMUP_BARS
    np.testing.assert_array_equal(mirrored.timestamps, train.timestamps[WARMUP_BARS:])
    np.testing.assert_array_equal(mirrored.volume, train.volume[WARMUP_BARS:])
    # Every log return (close to close, and open to close) changes sign, to rounding.
    np.testing.assert_allclose(np.diff(np.log(mirrored.close)), -np.diff(np.log(train.close[WARMUP_BARS:])),
                               atol=1e-12)
    np.testing.assert_allclose(np.log(mirrored.close / mirrored.open),
                               -np.log(train.close / train.open)[WARMUP_BARS:], atol=1e-12)
    assert (mirrored.low <= np.minimum(mirrored.open, mirrored.close)).all()
    assert (mirrored.high >= np.maximum(mirrored.open, mirrored.close)).all()
    # The features are the feature pipeline's on the reflected candles, scaled by the real rows' scaler.
    reflected = pd.DataFrame(dict(zip(("open", "high", "low", "close"),
                                      mirror_candles(train.open, train.high, train.low, train.close, train.open[0]),
                                      strict=True)), index=range(len(train)))
    reflected["volume"] = train.volume
    expected = splits.scaler.transform(compute_market_features(reflected)[WARMUP_BARS:])
    np.testing.assert_allclose(mirrored.features, expected, rtol=1e-6, atol=1e-6)
    # The drift is reversed: a rising training market becomes a falling one.
    assert train.close[-1] > train.close[0] and mirrored.close[-1] < mirrored.close[0]


def augmented_paths(market, scaler):
    return [mirror_slice(market, scaler), *calm_slices(market, scaler)]


@pytest.mark.parametrize("path", [0, 1, 2], ids=["mirror", "calm", "calm_mirror"])
def test_augmented_features_are_causal(splits, path):
    """Changing a later candle of the training window changes no earlier augmented feature."""
    train = splits.train
    cut = len(train) // 2
    close = train.close.copy()
    close[cut:] *= 1.3
    edited = MarketSlice(train.timestamps, train.open, np.maximum(train.high, close), train.low, close,
                         train.volume, train.features)
    before = augmented_paths(train, splits.scaler)[path].features
    after = augmented_paths(edited, splits.scaler)[path].features
    rows = cut - WARMUP_BARS  # the augmented row of candle `cut`
    np.testing.assert_array_equal(after[:rows], before[:rows])
    assert not np.array_equal(after[rows:], before[rows:])


def test_calm_candles_by_hand():
    open_, high, low, close = (np.array(v) for v in ([100.0, 121.0], [144.0, 169.0], [81.0, 100.0], [121.0, 64.0]))
    c_open, c_high, c_low, c_close = calm_candles(open_, high, low, close, pivot=100.0, moves=0.5)
    np.testing.assert_allclose(c_open, [100.0, 110.0])
    np.testing.assert_allclose(c_high, [120.0, 130.0])
    np.testing.assert_allclose(c_low, [90.0, 100.0])
    np.testing.assert_allclose(c_close, [110.0, 80.0])
    # moves 1 is the identity; moves 2 undoes moves 0.5.
    for original, same in zip((open_, high, low, close), calm_candles(open_, high, low, close, 100.0, 1.0),
                              strict=True):
        np.testing.assert_allclose(same, original)
    back = calm_candles(c_open, c_high, c_low, c_close, pivot=100.0, moves=2.0)
    for original, again in zip((open_, high, low, close), back, strict=True):
        np.testing.assert_allclose(again, original)
    with pytest.raises(ValueError, match="positive"):
        calm_candles(open_, high, low, close, pivot=100.0, moves=0.0)


def test_mirror_calm_trains_on_four_paths_with_halved_moves(splits):
    train, n = splits.train, len(splits.train)
    m = n - WARMUP_BARS
    augmented = augment_splits(splits, "mirror_calm")
    assert len(augmented.train) == n + 3 * m
    # real, mirror, calm, calm mirror; each path's moves against the real window's, to rounding.
    real_moves = np.diff(np.log(train.close[WARMUP_BARS:]))
    close = augmented.train.close
    for start, factor in ((n, -1.0), (n + m, CALM_MOVES), (n + 2 * m, -CALM_MOVES)):
        np.testing.assert_allclose(np.diff(np.log(close[start:start + m])), factor * real_moves, atol=1e-12)
    # The calm path's volatility is half the real one's; its features are the pipeline's on its candles,
    # scaled by the real rows' scaler.
    calm, calm_mirror = calm_slices(train, splits.scaler)
    assert np.std(np.diff(np.log(calm.close))) == pytest.approx(0.5 * np.std(real_moves))
    frame = pd.DataFrame(dict(zip(("open", "high", "low", "close"),
                                  calm_candles(train.open, train.high, train.low, train.close, train.open[0]),
                                  strict=True)), index=range(n))
    frame["volume"] = train.volume
    expected = splits.scaler.transform(compute_market_features(frame)[WARMUP_BARS:])
    np.testing.assert_allclose(calm.features, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(augmented.train.features[n + m:n + 2 * m], calm.features)
    np.testing.assert_array_equal(augmented.train.features[n + 2 * m:], calm_mirror.features)
    for path in (calm, calm_mirror):
        assert (path.low <= np.minimum(path.open, path.close)).all()
        assert (path.high >= np.maximum(path.open, path.close)).all()
    assert augmented.validation is splits.validation and augmented.test is splits.test


def test_augment_splits_adds_the_mirror_to_training_only(splits):
    assert augment_splits(splits, "none") is splits
    augmented = augment_splits(splits, "mirror")
    n = len(splits.train)
    assert len(augmented.train) == n + n - WARMUP_BARS
    np.testing.assert_array_equal(augmented.train.features[:n], splits.train.features)
    np.testing.assert_array_equal(augmented.train.close[:n], splits.train.close)
    # The mirror opens where the real window closed (join_markets), its moves reversed.
    mirror = mirror_slice(splits.train, splits.scaler)
    np.testing.assert_allclose(np.diff(np.log(augmented.train.close[n:])), np.diff(np.log(mirror.close)))
    assert augmented.validation is splits.validation and augmented.test is splits.test
    assert augmented.scaler is splits.scaler
    with pytest.raises(ConfigError, match="augment must be one of"):
        augment_splits(splits, "flip")


def test_config_accepts_only_known_augments():
    assert TrainingConfig().augment == "none"
    assert TrainingConfig().with_overrides({"augment": "mirror"}).augment == "mirror"
    assert TrainingConfig().with_overrides({"augment": "mirror_calm"}).augment == "mirror_calm"
    with pytest.raises(ConfigError, match="augment"):
        TrainingConfig().with_overrides({"augment": "reverse"})


def test_a_mirror_run_trains_on_both_paths_and_resumes_on_them(tmp_path):
    from nexlify.training.pipeline import run_training

    frame = synthetic_frame(420, seed=1)
    plain = prepare_market(frame, data_days=None)
    config = tiny_config(episodes=2, save_interval=1, eval_interval=1, augment="mirror")
    results = run_training(config, data=frame, output_dir=tmp_path / "run", quiet=True)
    rows = len(plain.train) * 2 - WARMUP_BARS
    assert results["run"]["rows"]["train"] == rows
    assert results["run"]["transitions"] == 2 * (rows - 1)
    # Validation and test are the real candles, as without augmentation.
    assert results["run"]["rows"]["test"] == len(plain.test)
    resumed = run_training(config.with_overrides({"episodes": 3}), data=frame, output_dir=tmp_path / "run",
                           resume_from=tmp_path / "run" / "checkpoint_ep2.pth", quiet=True)
    assert resumed["run"]["transitions"] == 3 * (rows - 1)
    saved = json.loads((tmp_path / "run" / "training_results.json").read_text())
    assert saved["config"]["augment"] == "mirror"


def test_pooled_markets_are_mirrored_one_by_one():
    from nexlify.data.market import prepare_markets
    from nexlify.training.pipeline import load_training_data

    frames = [synthetic_frame(400, seed=1), synthetic_frame(300, seed=2, drift=0.001)]
    each = []
    prepare_markets(frames, data_days=None, per_market=lambda market: each.append(market) or market)
    first, second = each
    pooled = load_training_data(frames, data_days=None, augment="mirror")
    # market 1, its mirror, market 2, its mirror: no mirrored feature reads across a join.
    n1, n2 = len(first.train), len(second.train)
    parts = np.split(pooled.train.features, np.cumsum([n1, n1 - WARMUP_BARS, n2]))
    np.testing.assert_array_equal(parts[0], first.train.features)
    np.testing.assert_array_equal(parts[1], mirror_slice(first.train, first.scaler).features)
    np.testing.assert_array_equal(parts[2], second.train.features)
    np.testing.assert_array_equal(parts[3], mirror_slice(second.train, second.scaler).features)
    assert len(pooled.validation) == len(first.validation) + len(second.validation)


def test_a_mirror_calm_run_trains_on_four_paths(tmp_path):
    from nexlify.training.pipeline import run_training

    frame = synthetic_frame(420, seed=1)
    plain = prepare_market(frame, data_days=None)
    config = tiny_config(episodes=1, save_interval=1, eval_interval=1, augment="mirror_calm")
    results = run_training(config, data=frame, output_dir=tmp_path / "run", quiet=True)
    rows = len(plain.train) + 3 * (len(plain.train) - WARMUP_BARS)
    assert results["run"]["rows"]["train"] == rows
    assert results["run"]["transitions"] == rows - 1
    assert results["run"]["rows"]["validation"] == len(plain.validation)
