"""Observation noise (config key ``observation_noise``): Gaussian noise on the market features of each
learning batch only, seeded, resumable, and never on acting, the replay memory or the account features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import LEARNING_STATE_SIZE, agent_weights, assert_learning_resumes_bit_exactly, fill_random, learning_agent
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.data.feature_names import ACCOUNT_FEATURE_NAMES
from nexlify.errors import ConfigError


def make_agent(**overrides) -> AdaptiveDQNAgent:
    return learning_agent(**overrides)


def fill(agent: AdaptiveDQNAgent, n: int = 4000) -> None:
    fill_random(agent, n)


def test_noise_has_the_asked_size_on_the_market_columns_only() -> None:
    agent = make_agent(observation_noise=0.2)
    fill(agent)
    indices, _ = agent.replay.sample_indices(4000)
    batch = agent.replay.gather(indices, None)
    stored = batch.states.clone()
    noisy = agent.augmented(batch)
    market = 6
    assert market == LEARNING_STATE_SIZE - len(ACCOUNT_FEATURE_NAMES)
    for before, after in ((batch.states, noisy.states), (batch.next_states, noisy.next_states)):
        jitter = (after - before)[:, :market]
        assert float(jitter.mean()) == pytest.approx(0.0, abs=0.01)
        assert float(jitter.std()) == pytest.approx(0.2, rel=0.03)  # 24,000 draws: about 0.5% error
        torch.testing.assert_close(after[:, market:], before[:, market:], rtol=0, atol=0)
    # States and next states get independent draws, and the gathered batch is not changed in place.
    assert not torch.equal(noisy.states - batch.states, noisy.next_states - batch.next_states)
    torch.testing.assert_close(batch.states, stored, rtol=0, atol=0)
    torch.testing.assert_close(noisy.actions, batch.actions, rtol=0, atol=0)
    torch.testing.assert_close(noisy.rewards, batch.rewards, rtol=0, atol=0)


def test_no_noise_is_the_batch_itself() -> None:
    agent = make_agent()
    fill(agent, 100)
    batch = agent.replay.gather(agent.replay.sample_indices(16)[0], None)
    assert agent.augmented(batch) is batch


def test_noise_changes_learning_and_is_deterministic_for_a_seed() -> None:
    plain, first, second = make_agent(), make_agent(observation_noise=0.1), make_agent(observation_noise=0.1)
    for agent in (plain, first, second):
        fill(agent, 300)
        for _ in range(5):
            agent.learn()
    for a, b in zip(agent_weights(first), agent_weights(second), strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(agent_weights(plain), agent_weights(first), strict=True))
    # Acting reads the weights only: the noisy agent's greedy actions are those of its own network.
    states = np.random.default_rng(3).standard_normal((50, LEARNING_STATE_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = first.q_network(torch.as_tensor(states)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(first.act(states, explore=False), expected)


def test_noise_resumes_bit_exactly_from_the_state_dict() -> None:
    assert_learning_resumes_bit_exactly(lambda: make_agent(observation_noise=0.1), lambda agent: fill(agent, 300))


@pytest.mark.parametrize("value", [-0.1, 11.0, float("nan"), "0.1", True])
def test_observation_noise_is_validated(value) -> None:
    with pytest.raises(ConfigError, match="config key observation_noise must be"):
        TrainingConfig(observation_noise=value)


def test_configs_saved_before_observation_noise_load_without_it() -> None:
    old = {k: v for k, v in TrainingConfig().to_dict().items() if k != "observation_noise"}
    assert TrainingConfig.from_dict(old).observation_noise == 0.0
