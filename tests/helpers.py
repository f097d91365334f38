"""Small builders and checks shared by tests: synthetic market slices with hand-chosen prices, and the
bit-exact resume check of a learning agent."""

from __future__ import annotations

import copy

import numpy as np
import torch

from nexlify.data.features import MARKET_FEATURE_NAMES
from nexlify.data.market import MarketSlice


def make_slice(open_prices, close_prices=None, seed: int = 0) -> MarketSlice:
    """A MarketSlice with the given opens (closes default to opens) and random normalised features."""
    open_prices = np.asarray(open_prices, dtype=np.float64)
    close_prices = open_prices.copy() if close_prices is None else np.asarray(close_prices, dtype=np.float64)
    n = len(open_prices)
    high = np.maximum(open_prices, close_prices) * 1.01
    low = np.minimum(open_prices, close_prices) * 0.99
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, len(MARKET_FEATURE_NAMES))).astype(np.float32)
    timestamps = np.datetime64("2024-01-01T00:00", "ns") + np.arange(n) * np.timedelta64(1, "h")
    return MarketSlice(timestamps, open_prices, high, low, close_prices, np.ones(n), features)


def random_walk_slice(n: int = 300, seed: int = 0) -> MarketSlice:
    """A geometric random walk of ``n`` candles."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_prices = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.001, n))
    return make_slice(open_prices, close, seed=seed)


def synthetic_frame(rows: int = 600, seed: int = 0, drift: float = 0.0):
    """An hourly OHLCV DataFrame (UTC index) following a random walk; valid for the loader."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(drift, 0.01, rows)))
    open_prices = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_prices, close) * (1 + rng.uniform(0, 0.005, rows))
    low = np.minimum(open_prices, close) * (1 - rng.uniform(0, 0.005, rows))
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": open_prices, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1, 10, rows)}, index=index)


def tiny_config(**overrides):
    """A fast training config for tests."""
    from nexlify.config import TrainingConfig

    values = dict(model_size="tiny", batch_size=32, buffer_size=5_000, learning_starts=64, train_frequency=8,
                  target_update_interval=20, parallel_envs=2, episodes=4, eval_interval=2, save_interval=2,
                  data_days=None, seed=7)
    values.update(overrides)
    return TrainingConfig(**values)


def agent_weights(agent) -> list:
    """Copies of the online network's parameters (they change in place as the agent learns)."""
    return [p.detach().clone() for p in agent.q_network.parameters()]


def assert_learning_resumes_bit_exactly(make_agent, fill, before: int = 3, after: int = 4) -> None:
    """Learn ``before`` steps, save the state dict, learn ``after`` more; a fresh agent loaded from the
    state and learning ``after`` steps must end with bit-identical weights (so every generator the
    learning step draws from is saved)."""
    straight = make_agent()
    fill(straight)
    for _ in range(before):
        straight.learn()
    # A deep copy: state_dict() holds the live parameter tensors, which the next steps change.
    state = copy.deepcopy(straight.state_dict(include_replay=True))
    for _ in range(after):
        straight.learn()
    resumed = make_agent()
    resumed.load_state_dict(state)
    for _ in range(after):
        resumed.learn()
    for a, b in zip(agent_weights(straight), agent_weights(resumed), strict=True):
        assert torch.equal(a, b)



LEARNING_STATE_SIZE = 9  # 6 market features + the 3 account features


def learning_agent(**overrides):
    """A tiny agent that learns from its first transition (for tests of the learning step's options)."""
    from nexlify.agent.dqn import AdaptiveDQNAgent
    from nexlify.config import TrainingConfig

    values = {"model_size": "tiny", "learning_starts": 0, "batch_size": 16, "buffer_size": 5000, "seed": 7}
    values.update(overrides)
    return AdaptiveDQNAgent(LEARNING_STATE_SIZE, 3, TrainingConfig().with_overrides(values))


def fill_random(agent, n: int) -> None:
    """``n`` random transitions (seeded) into ``agent``'s replay memory."""
    rng = np.random.default_rng(0)
    size = agent.state_size
    agent.remember_batch(rng.standard_normal((n, size)).astype(np.float32), rng.integers(3, size=n),
                         rng.standard_normal(n).astype(np.float32),
                         rng.standard_normal((n, size)).astype(np.float32), rng.random(n) < 0.1)
