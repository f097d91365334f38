"""Layer norm (config key ``layer_norm``): Linear -> LayerNorm -> ReLU in every hidden layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from helpers import LEARNING_STATE_SIZE, agent_weights, assert_learning_resumes_bit_exactly, fill_random, learning_agent
from nexlify.agent.dqn import AdaptiveDQNAgent
from nexlify.agent.networks import HostQFunction, QNetwork, build_q_network
from nexlify.config import TrainingConfig
from nexlify.errors import ConfigError


def make_agent(**overrides) -> AdaptiveDQNAgent:
    return learning_agent(**overrides)


def fill(agent: AdaptiveDQNAgent) -> None:
    fill_random(agent, 200)


def randomise_norms(net: QNetwork, seed: int = 3) -> None:
    """Gains and shifts away from their initial 1 and 0, so a test sees them used."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.body:
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.5 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=gen))


def test_forward_is_layer_norm_before_each_relu_computed_by_hand() -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 3, (8, 5), layer_norm=True)
    randomise_norms(net)
    states = 10 * torch.randn(32, 4)
    hidden = states
    norms = [m for m in net.body if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2
    for layer, norm in zip(net._hidden, norms, strict=True):
        z = hidden @ layer.weight.T + layer.bias
        mean = z.mean(dim=1, keepdim=True)
        variance = ((z - mean) ** 2).mean(dim=1, keepdim=True)  # the biased variance, as LayerNorm uses
        hidden = torch.relu((z - mean) / torch.sqrt(variance + 1e-5) * norm.weight + norm.bias)
    torch.testing.assert_close(net(states), F.linear(hidden, net.head.weight, net.head.bias))
    # The same linear weights without the norms give another function.
    plain = QNetwork(4, 3, (8, 5))
    with torch.no_grad():
        for target, source in zip([*plain._hidden, plain.head], [*net._hidden, net.head], strict=True):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    assert not torch.allclose(plain(states), net(states))


def test_hidden_activations_do_not_grow_with_the_input_scale() -> None:
    torch.manual_seed(1)
    net = QNetwork(4, 2, (16,), layer_norm=True)
    states = torch.randn(8, 4)
    # LayerNorm removes a common scale of the first layer's output: scaling the weights and biases
    # by 100 leaves Q unchanged (up to eps), where a plain network's Q would grow 100-fold.
    before = net(states)
    with torch.no_grad():
        net._hidden[0].weight.mul_(100)
        net._hidden[0].bias.mul_(100)
    torch.testing.assert_close(net(states), before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"dueling": True}, {"n_quantiles": 4}, {"dueling": True, "n_quantiles": 4}])
def test_numpy_acting_path_equals_torch_with_layer_norm(kwargs) -> None:
    torch.manual_seed(2)
    net = QNetwork(6, 3, (16, 8), layer_norm=True, **kwargs)
    randomise_norms(net)
    states = torch.randn(50, 6)
    host = HostQFunction(net)
    np.testing.assert_allclose(host(states.numpy()), net(states).detach().numpy(), rtol=1e-5, atol=1e-5)
    # In-place changes to the norm's gain are seen at once (views, like the linear layers').
    with torch.no_grad():
        next(m for m in net.body if isinstance(m, torch.nn.LayerNorm)).weight.mul_(2)
    np.testing.assert_allclose(host(states.numpy()), net(states).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_build_reads_the_config_key_and_the_default_is_off() -> None:
    assert TrainingConfig().layer_norm is False
    plain = build_q_network(TrainingConfig(model_size="small"), 5, 3)
    normed = build_q_network(TrainingConfig(model_size="small", layer_norm=True), 5, 3)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in plain.modules())
    widths = [m.normalized_shape[0] for m in normed.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert widths == [128, 64]
    # A gain and a shift per hidden unit: 2 x (128 + 64) more parameters.
    assert sum(p.numel() for p in normed.parameters()) - sum(p.numel() for p in plain.parameters()) == 384


def test_layer_norm_changes_learning_and_is_deterministic_for_a_seed() -> None:
    def trained(**overrides) -> AdaptiveDQNAgent:
        agent = make_agent(**overrides)
        fill(agent)
        for _ in range(5):
            agent.learn()
        return agent

    plain, first, second = trained(), trained(layer_norm=True), trained(layer_norm=True)
    assert all(torch.equal(a, b) for a, b in zip(agent_weights(first), agent_weights(second), strict=True))
    states = np.random.default_rng(1).standard_normal((40, LEARNING_STATE_SIZE)).astype(np.float32)
    assert not np.allclose(plain.host_q_function()(states), first.host_q_function()(states))


def test_layer_norm_learning_resumes_bit_exactly_from_the_state_dict() -> None:
    assert_learning_resumes_bit_exactly(lambda: make_agent(layer_norm=True), fill)


def test_layer_norm_checkpoint_round_trip(tmp_path) -> None:
    agent = make_agent(layer_norm=True)
    fill(agent)
    agent.learn()
    agent.save(tmp_path / "m.pth")
    loaded = AdaptiveDQNAgent.from_checkpoint(tmp_path / "m.pth")
    assert loaded.config.layer_norm is True and loaded.q_network.layer_norm
    states = np.random.default_rng(2).standard_normal((10, LEARNING_STATE_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(loaded.host_q_function()(states), agent.host_q_function()(states))


@pytest.mark.parametrize("value", [1, "true", None, 0.0])
def test_layer_norm_is_validated(value) -> None:
    with pytest.raises(ConfigError, match="config key layer_norm must be"):
        TrainingConfig(layer_norm=value)


def test_configs_saved_before_layer_norm_load_without_it() -> None:
    old = {k: v for k, v in TrainingConfig().to_dict().items() if k != "layer_norm"}
    assert TrainingConfig.from_dict(old).layer_norm is False
