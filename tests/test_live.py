"""Live use: a state built from fresh candles equals what the agent saw in training."""

import numpy as np
import pytest

from helpers import tiny_config
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.data.features import LIVE_HISTORY_BARS
from nexlify.data.market import load_ohlcv, prepare_market
from nexlify.errors import CheckpointError
from nexlify.live import LiveTrader, build_state


@pytest.fixture(scope="module")
def splits():
    return prepare_market(None, data_days=60)


def test_live_state_matches_the_training_observation(splits):
    candles = load_ohlcv(None, log_gaps=False)
    last = splits.test.to_frame().index[-1]
    recent = candles.loc[:last].iloc[-LIVE_HISTORY_BARS:]
    state = build_state(recent, splits.scaler)  # a flat account at its peak
    assert state.shape == (12,) and state.dtype == np.float32
    np.testing.assert_allclose(state[:9], splits.test.features[-1], atol=1e-4)
    np.testing.assert_array_equal(state[9:], [0.0, 0.0, 0.0])


def test_account_features_of_an_open_position(splits):
    candles = load_ohlcv(None, log_gaps=False).iloc[-LIVE_HISTORY_BARS:]
    price = float(candles["close"].iloc[-1])
    state = build_state(candles, splits.scaler, is_long=True, entry_price=price / 1.1, equity=90.0,
                        peak_equity=100.0)
    np.testing.assert_allclose(state[9:], [1.0, 0.1, -0.1], rtol=1e-6)


def test_live_trader_decides_with_the_saved_scaler(tmp_path, splits):
    agent = AdaptiveDQNAgent(12, 3, tiny_config())
    agent.save(tmp_path / "model.pth", extra_metadata={"scaler": splits.scaler.to_dict()})
    trader = LiveTrader.from_model(tmp_path / "model.pth")
    candles = load_ohlcv(None, log_gaps=False).iloc[-LIVE_HISTORY_BARS:]
    decision = trader.decide(candles)
    expected = agent.act(build_state(candles, splits.scaler), explore=False)
    assert decision == ("hold", "buy", "sell")[expected]


def test_a_model_without_a_scaler_is_refused(tmp_path):
    AdaptiveDQNAgent(12, 3, tiny_config()).save(tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="scaler"):
        LiveTrader.from_model(tmp_path / "bare.pth")


def test_an_ensemble_trader_takes_the_action_of_the_members_mean_q(tmp_path, splits):
    from nexlify.errors import ConfigError

    paths = []
    for seed in (1, 2, 3):
        agent = AdaptiveDQNAgent(12, 3, tiny_config(seed=seed))
        paths.append(tmp_path / f"seed{seed}.pth")
        agent.save(paths[-1], extra_metadata={"scaler": splits.scaler.to_dict()})
    trader = LiveTrader.from_models(paths)
    candles = load_ohlcv(None, log_gaps=False)
    states = [build_state(candles.iloc[end - LIVE_HISTORY_BARS:end], splits.scaler) for end in range(-400, 0, 40)]
    members = [AdaptiveDQNAgent.from_checkpoint(path) for path in paths]
    for state in states:
        q = np.stack([m.host_q_function()(state[None, :])[0] for m in members]).astype(np.float64)
        assert trader.greedy_action(state) == int(q.mean(axis=0).argmax())
    # The members disagree somewhere, so the mean is not any one member's choice by construction.
    choices = {tuple(int(m.host_q_function()(np.stack(states)).argmax(axis=1)[i]) for m in members)
               for i in range(len(states))}
    assert any(len(set(c)) > 1 for c in choices)
    # A member saved with another scaler (other data) is refused.
    other = splits.scaler.to_dict() | {"mean": [v + 1.0 for v in splits.scaler.to_dict()["mean"]]}
    AdaptiveDQNAgent(12, 3, tiny_config(seed=4)).save(tmp_path / "other.pth", extra_metadata={"scaler": other})
    with pytest.raises(ConfigError, match="trained on different data"):
        LiveTrader.from_models([paths[0], tmp_path / "other.pth"])
