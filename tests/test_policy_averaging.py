"""Policy averaging (config key ``policy_averaging``): the model that acts out of sample is a Polyak
average of the online weights; training acts and learns with the online network; the average is
saved, loaded and resumed with the agent."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers import LEARNING_STATE_SIZE, agent_weights, fill_random, learning_agent
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.config import TrainingConfig
from nexlify.errors import ConfigError
from nexlify.evaluation.backtest import agent_policy

DECAY = 0.9


def make_agent(**overrides) -> AdaptiveDQNAgent:
    return learning_agent(**overrides)


def fill(agent: AdaptiveDQNAgent, n: int = 300) -> None:
    fill_random(agent, n)


def averaged_weights(agent: AdaptiveDQNAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.averaged_network.parameters()]


def states(n: int = 64) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, LEARNING_STATE_SIZE)).astype(np.float32)


def test_the_average_follows_the_online_weights_with_the_warmed_up_decay() -> None:
    agent = make_agent(policy_averaging=DECAY)
    fill(agent)
    expected = agent_weights(agent)  # the average starts at the initial weights
    for step in range(1, 41):
        agent.learn()
        # By hand: decay min(0.9, (1 + n) / (10 + n)) after the n-th step: 2/11, 3/12, ... then 0.9 from n = 80.
        decay = min(DECAY, (1 + step) / (10 + step))
        expected = [decay * a + (1 - decay) * w for a, w in zip(expected, agent_weights(agent), strict=True)]
    for got, want in zip(averaged_weights(agent), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # It is an average, not a copy: the online weights moved on.
    assert any(not torch.allclose(a, w) for a, w in zip(averaged_weights(agent), agent_weights(agent), strict=True))


def test_the_average_acts_out_of_sample_and_the_online_network_in_training() -> None:
    agent = make_agent(policy_averaging=DECAY)
    fill(agent)
    for _ in range(30):
        agent.learn()
    batch = states()
    with torch.no_grad():
        online = agent.q_network(torch.as_tensor(batch)).numpy()
        averaged = agent.averaged_network(torch.as_tensor(batch)).numpy()
    assert not np.allclose(online, averaged)
    assert agent.policy_network is agent.averaged_network
    np.testing.assert_allclose(agent.host_q_function()(batch), averaged, rtol=1e-5, atol=1e-6)
    # Training's greedy actions come from the online network.
    np.testing.assert_array_equal(agent.act(batch, explore=False), online.argmax(axis=1))
    # A backtest's policy (validation, the walk-forward, live trading) acts on the average.
    flat = batch.copy()
    flat[:, -3:] = 0.0  # no position held, so every order is the action itself
    orders = agent_policy(agent)(flat, 0)
    with torch.no_grad():
        wanted = agent.averaged_network(torch.as_tensor(flat)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(orders, wanted)


def test_without_averaging_the_online_network_acts_everywhere() -> None:
    agent = make_agent()
    assert agent.averaged_network is None and agent.policy_network is agent.q_network
    fill(agent)
    for _ in range(5):
        agent.learn()
    with torch.no_grad():
        online = agent.q_network(torch.as_tensor(states())).numpy()
    np.testing.assert_allclose(agent.host_q_function()(states()), online, rtol=1e-5, atol=1e-6)
    assert agent.state_dict()["averaged_network"] is None


def test_the_average_is_saved_loaded_and_resumed(tmp_path) -> None:
    straight = make_agent(policy_averaging=DECAY)
    fill(straight)
    for _ in range(10):
        straight.learn()
    path = tmp_path / "model.pth"
    straight.save(path)
    loaded = AdaptiveDQNAgent.from_checkpoint(path)
    np.testing.assert_array_equal(loaded.host_q_function()(states()), straight.host_q_function()(states()))
    # Resuming from the state (replay included) carries the average on bit-exactly.
    state = copy.deepcopy(straight.state_dict(include_replay=True))
    resumed = make_agent(policy_averaging=DECAY)
    resumed.load_state_dict(state)
    for agent in (straight, resumed):
        for _ in range(6):
            agent.learn()
    for a, b in zip(averaged_weights(straight), averaged_weights(resumed), strict=True):
        assert torch.equal(a, b)


def test_a_model_saved_without_averaging_starts_its_average_at_its_weights(tmp_path) -> None:
    plain = make_agent()
    fill(plain)
    for _ in range(5):
        plain.learn()
    plain.save(tmp_path / "plain.pth")
    averaging = AdaptiveDQNAgent.from_checkpoint(tmp_path / "plain.pth", policy_averaging=DECAY)
    for a, w in zip(averaged_weights(averaging), agent_weights(plain), strict=True):
        assert torch.equal(a, w)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), "0.9", True])
def test_policy_averaging_is_validated(value) -> None:
    with pytest.raises(ConfigError, match="config key policy_averaging must be"):
        TrainingConfig(policy_averaging=value)


def test_configs_saved_before_policy_averaging_load_without_it() -> None:
    old = {k: v for k, v in TrainingConfig().to_dict().items() if k != "policy_averaging"}
    assert TrainingConfig.from_dict(old).policy_averaging == 0.0


def test_a_training_run_learns_the_same_network_and_saves_the_average(tmp_path) -> None:
    from helpers import synthetic_frame, tiny_config
    from nexlify.serialization import read_checkpoint
    from nexlify.training.pipeline import run_training

    data = synthetic_frame(420, seed=1)
    for name, averaging in (("plain", 0.0), ("averaged", DECAY)):
        run_training(tiny_config(episodes=2, policy_averaging=averaging), data=data, output_dir=tmp_path / name,
                     quiet=True)
    plain, averaged = (read_checkpoint(tmp_path / name / "final_model.pth").state for name in ("plain", "averaged"))
    # Training is unchanged: the same online network, bit for bit.
    for key, weights in plain["q_network"].items():
        assert torch.equal(weights, averaged["q_network"][key])
    assert plain["averaged_network"] is None
    assert any(not torch.equal(averaged["averaged_network"][k], w) for k, w in averaged["q_network"].items())
    # The saved model acts on the average.
    model = AdaptiveDQNAgent.from_checkpoint(tmp_path / "averaged" / "final_model.pth")
    batch = np.random.default_rng(3).standard_normal((64, model.state_size)).astype(np.float32)
    with torch.no_grad():
        model.q_network.load_state_dict(averaged["averaged_network"])
        expected = model.q_network(torch.as_tensor(batch)).numpy()
    np.testing.assert_allclose(model.host_q_function()(batch), expected, rtol=1e-5, atol=1e-6)
