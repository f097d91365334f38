"""Dropout (config key ``dropout``): only in the learning forward pass, seeded, saved with the agent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from helpers import agent_weights, assert_learning_resumes_bit_exactly
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.agent.networks import QNetwork
from nexlify.config import TrainingConfig
from nexlify.errors import ConfigError


def make_agent(**overrides) -> AdaptiveDQNAgent:
    values = {"model_size": "tiny", "learning_starts": 0, "batch_size": 16, "buffer_size": 1000, "seed": 7}
    values.update(overrides)
    return AdaptiveDQNAgent(6, 3, TrainingConfig().with_overrides(values))


def fill(agent: AdaptiveDQNAgent, n: int = 200) -> None:
    rng = np.random.default_rng(0)
    agent.remember_batch(rng.standard_normal((n, 6)).astype(np.float32), rng.integers(3, size=n),
                         rng.standard_normal(n).astype(np.float32),
                         rng.standard_normal((n, 6)).astype(np.float32), rng.random(n) < 0.1)


def test_forward_with_noise_is_inverted_dropout_computed_by_hand() -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 3, (8, 5), dropout=0.25)
    states = torch.randn(32, 4)
    noisy = net(states, torch.Generator().manual_seed(11))
    # By hand: each hidden layer's ReLU output times a Bernoulli(0.75) mask drawn in layer order
    # from the same seed, divided by 0.75; then the linear head.
    gen = torch.Generator().manual_seed(11)
    hidden = states
    dropped = 0
    for layer in net._hidden:
        hidden = torch.relu(F.linear(hidden, layer.weight, layer.bias))
        mask = torch.empty_like(hidden).bernoulli_(0.75, generator=gen)
        dropped += int((mask == 0).sum())
        hidden = hidden * mask / 0.75
    torch.testing.assert_close(noisy, F.linear(hidden, net.head.weight, net.head.bias))
    assert 0 < dropped < 32 * 13  # some units dropped, not all
    # Without a generator the network is the deterministic one, whatever its dropout.
    plain = QNetwork(4, 3, (8, 5))
    plain.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(states), plain(states))
    assert not torch.allclose(noisy, plain(states))


@pytest.mark.parametrize("overrides", [{}, {"dueling": True}, {"n_quantiles": 8}])
def test_acting_and_targets_never_see_dropout(overrides) -> None:
    agent = make_agent(dropout=0.5, **overrides)
    fill(agent)
    for _ in range(3):
        agent.learn()
    states = np.random.default_rng(1).standard_normal((40, 6)).astype(np.float32)
    tensor = torch.from_numpy(states)
    expected = agent.q_network(tensor).argmax(dim=1).numpy()
    # The same greedy actions twice (numpy fast path and torch path alike): no masks when acting.
    np.testing.assert_array_equal(agent.act(states, explore=False), expected)
    np.testing.assert_array_equal(agent.act(states, explore=False), expected)
    np.testing.assert_array_equal(agent.act(tensor, explore=False).numpy(), expected)
    rewards, dones = torch.zeros(40), torch.zeros(40)
    torch.testing.assert_close(agent.compute_td_targets(rewards, tensor, dones),
                               agent.compute_td_targets(rewards, tensor, dones))


def test_dropout_changes_learning_and_is_deterministic_for_a_seed() -> None:
    plain, first, second = make_agent(), make_agent(dropout=0.3), make_agent(dropout=0.3)
    assert plain._learning_noise is None  # no draws at all without dropout: the old arithmetic
    for agent in (plain, first, second):
        fill(agent)
        for _ in range(5):
            agent.learn()
    for a, b in zip(agent_weights(first), agent_weights(second), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(agent_weights(plain), agent_weights(first), strict=True))


def test_dropout_masks_resume_bit_exactly_from_the_state_dict() -> None:
    assert_learning_resumes_bit_exactly(lambda: make_agent(dropout=0.3), fill)


def test_dropout_checkpoint_round_trip(tmp_path) -> None:
    agent = make_agent(dropout=0.2)
    fill(agent)
    agent.learn()
    agent.save(tmp_path / "m.pth")
    loaded = AdaptiveDQNAgent.from_checkpoint(tmp_path / "m.pth")
    assert loaded.config.dropout == 0.2 and loaded.q_network.dropout == 0.2
    states = np.random.default_rng(2).standard_normal((10, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(states, explore=False), agent.act(states, explore=False))


@pytest.mark.parametrize("value", [-0.1, 0.95, float("nan"), "0.1", True])
def test_dropout_is_validated(value) -> None:
    with pytest.raises(ConfigError, match="config key dropout must be"):
        TrainingConfig(dropout=value)


def test_configs_saved_before_dropout_load_without_it() -> None:
    old = {k: v for k, v in TrainingConfig().to_dict().items() if k != "dropout"}
    assert TrainingConfig.from_dict(old).dropout == 0.0
