"""QR-DQN (``n_quantiles`` > 0): the head's shapes, the quantile Huber loss by hand, and what it learns."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.agent.networks import HostQFunction, QNetwork
from nexlify.agent.replay import ReplaySample
from nexlify.config import TrainingConfig


@pytest.mark.parametrize("dueling", [False, True])
def test_q_values_are_the_mean_of_the_quantiles_in_torch_and_numpy(dueling):
    torch.manual_seed(0)
    net = QNetwork(5, 3, (16, 8), dueling=dueling, n_quantiles=4)
    states = torch.randn(7, 5)
    quantiles = net.quantiles(states)
    assert quantiles.shape == (7, 3, 4)
    q = net(states)
    torch.testing.assert_close(q, quantiles.mean(dim=2))
    np.testing.assert_allclose(HostQFunction(net)(states.numpy()), q.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not quantiles"):
        QNetwork(5, 3, (16,)).quantiles(states)


def test_quantile_regression_loss_by_hand():
    config = TrainingConfig(model_size="tiny", n_quantiles=2, gamma=0.5, num_workers=1, buffer_size=16)
    agent = AdaptiveDQNAgent(2, 2, config)
    # Replace both networks' outputs with fixed quantiles so the loss can be computed by hand.
    fixed = {"online": torch.tensor([[[0.0, 1.0], [2.0, 4.0]]]), "target": torch.tensor([[[10.0, 20.0], [3.0, 5.0]]])}
    agent.q_network.quantiles = lambda s, noise=None: fixed["online"].expand(s.shape[0], -1, -1)
    agent.q_network.forward = lambda s, noise=None: fixed["online"].expand(s.shape[0], -1, -1).mean(dim=2)
    agent.target_network.quantiles = lambda s: fixed["target"].expand(s.shape[0], -1, -1)
    batch = ReplaySample(states=torch.zeros(1, 2), actions=torch.tensor([0]), rewards=torch.tensor([1.0]),
                         next_states=torch.zeros(1, 2), dones=torch.tensor([0.0]), horizons=None,
                         indices=torch.tensor([0]), weights=None)
    loss, td = agent._quantile_loss(batch)
    # The online net's best next action is 1 (means 0.5 and 3): targets 1 + 0.5 * (3, 5) = (2.5, 3.5).
    # Predicted quantiles of action 0: (0, 1) at tau (0.25, 0.75). delta_ij = target_j - theta_i:
    # i=0: (2.5, 3.5); i=1: (1.5, 2.5): all positive, so each pinball loss is tau_i * delta_ij.
    # Summed over i, averaged over j: 0.25 * (2.5 + 3.5) / 2 + 0.75 * (1.5 + 2.5) / 2 = 2.25.
    assert loss.item() == pytest.approx(2.25)
    # A target below the predicted quantile pays (1 - tau): action 1's quantiles (2, 4) against (2.5, 3.5)
    # give deltas i=0: (0.5, 1.5), i=1: (-1.5, -0.5); 0.25 * 1 + 0.25 * 1 = 0.5.
    assert agent._quantile_loss(replace(batch, actions=torch.tensor([1])))[0].item() == pytest.approx(0.5)
    assert td.item() == pytest.approx(np.mean([2.5, 3.5, 1.5, 2.5]))


def test_qr_dqn_learns_a_reward_distribution_and_acts_on_its_mean():
    """One state, gamma 0: action 0 pays 0 or 1 (a fair coin), action 1 always 0.4. Two quantiles
    (tau 0.25 and 0.75) of action 0 must approach 0 and 1; the agent prefers action 0 (mean 0.5)."""
    config = TrainingConfig(model_size="tiny", n_quantiles=2, gamma=0.0, learning_rate=5e-3, batch_size=64,
                            learning_starts=64, buffer_size=4_000, num_workers=1, seed=3)
    agent = AdaptiveDQNAgent(3, 2, config)
    rng = np.random.default_rng(0)
    state = np.array([1.0, 0.0, -1.0], dtype=np.float32)
    for i in range(4_000):
        action = i % 2
        reward = float(rng.integers(2)) if action == 0 else 0.4
        agent.remember(state, action, reward, state, True)
    for _ in range(1_500):
        agent.learn()
    with torch.no_grad():
        quantiles = agent.q_network.quantiles(torch.from_numpy(state[None]))[0].numpy()
    np.testing.assert_allclose(quantiles[0], [0.0, 1.0], atol=0.1)
    np.testing.assert_allclose(quantiles[1], [0.4, 0.4], atol=0.1)
    assert agent.act(state, explore=False) == 0


def test_a_quantile_agent_round_trips_through_a_checkpoint(tmp_path):
    config = TrainingConfig(model_size="tiny", n_quantiles=8, dueling=True, num_workers=1, buffer_size=64)
    agent = AdaptiveDQNAgent(4, 3, config)
    agent.save(tmp_path / "qr.pth")
    loaded = AdaptiveDQNAgent.from_checkpoint(tmp_path / "qr.pth")
    assert loaded.q_network.n_quantiles == 8 and loaded.config.n_quantiles == 8
    states = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.host_q_function()(states), agent.host_q_function()(states))
