"""QNetwork shapes, exact guide widths and parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nexlify.agent.networks import HostQFunction, QNetwork, build_q_network, count_parameters
from nexlify.config import MODEL_WIDTHS, TrainingConfig


def expected_params(state: int, actions: int, widths: tuple[int, ...], dueling: bool = False) -> int:
    total, prev = 0, state
    for w in widths:
        total += prev * w + w
        prev = w
    head = prev * actions + actions
    return total + head + ((prev + 1) if dueling else 0)


@pytest.mark.parametrize("size", list(MODEL_WIDTHS))
def test_each_model_size_has_the_guide_widths_and_param_count(size: str) -> None:
    net = build_q_network(TrainingConfig(model_size=size), state_size=12, action_size=3)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert tuple(m.out_features for m in linears[:-1]) == MODEL_WIDTHS[size]
    assert linears[-1].out_features == 3 and linears[0].in_features == 12
    assert count_parameters(net) == expected_params(12, 3, MODEL_WIDTHS[size])
    out = net(torch.randn(7, 12))
    assert out.shape == (7, 3)


def test_param_counts_match_the_guide_table_order_of_magnitude() -> None:
    counts = {s: count_parameters(build_q_network(TrainingConfig(model_size=s), 12, 3)) for s in MODEL_WIDTHS}
    assert counts == {"tiny": 3011, "small": 10115, "medium": 26627, "large": 110467, "xlarge": 441987}


def test_no_dropout_so_train_and_eval_modes_agree() -> None:
    net = QNetwork(5, 4, (16, 8))
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm1d)) for m in net.modules())
    x = torch.randn(10, 5)
    net.train()
    a = net(x)
    net.eval()
    assert torch.equal(a, net(x))


def test_dueling_head_combines_value_and_centered_advantage() -> None:
    net = build_q_network(TrainingConfig(model_size="tiny", dueling=True), 6, 4)
    assert net.dueling
    assert count_parameters(net) == expected_params(6, 4, MODEL_WIDTHS["tiny"], dueling=True)
    x = torch.randn(9, 6)
    q = net(x)
    features = net.body(x)
    value, adv = net.value(features), net.advantage(features)
    torch.testing.assert_close(q, value + adv - adv.mean(1, keepdim=True))
    # The mean over actions of Q is exactly V: the identifiability constraint.
    torch.testing.assert_close(q.mean(1, keepdim=True), value)


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        QNetwork(0, 3, (8,))
    with pytest.raises(ValueError):
        QNetwork(4, 3, ())


@pytest.mark.parametrize("dueling", [False, True])
def test_host_q_function_computes_the_network_and_follows_its_weights(dueling: bool) -> None:
    torch.manual_seed(0)
    net = QNetwork(12, 3, (32, 16), dueling=dueling)
    host = HostQFunction(net)
    states = np.random.default_rng(0).normal(size=(9, 12)).astype(np.float32)

    def torch_q() -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(states)).numpy()

    np.testing.assert_allclose(host(states), torch_q(), rtol=1e-5, atol=1e-6)
    # An in-place optimizer step and a load_state_dict are seen without rebuilding anything.
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.from_numpy(states)).sum().backward()
    optimizer.step()
    np.testing.assert_allclose(host(states), torch_q(), rtol=1e-5, atol=1e-6)
    other = QNetwork(12, 3, (32, 16), dueling=dueling)
    net.load_state_dict(other.state_dict())
    np.testing.assert_allclose(host(states), torch_q(), rtol=1e-5, atol=1e-6)
    # Parameters replaced by new tensors are noticed too.
    for param in net.parameters():
        param.data = param.data.clone() * 2
    np.testing.assert_allclose(host(states), torch_q(), rtol=1e-5, atol=1e-6)
